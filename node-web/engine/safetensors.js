// Reading a shard file (safetensors: u64 LE header length, JSON header, data) without trusting
// it: the header length, every tensor's dtype, shape and byte range are checked before use.
// Shards hold F16 tensors only (src/engine/weights.rs).

/** Largest JSON header accepted (safetensors' own limit is 100 MB). */
const MAX_HEADER = 100 * 1024 * 1024;

export class ShardFileError extends Error {}

/** Parses `bytes` (Uint8Array of a whole shard file): Map name -> { shape, data: Uint16Array }. */
export function parseSafetensors(bytes, label = 'shard') {
  if (bytes.length < 8) throw new ShardFileError(`${label}: ${bytes.length} bytes, too short for a safetensors header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n > MAX_HEADER || 8 + n > bytes.length) throw new ShardFileError(`${label}: header length ${n} does not fit the file (${bytes.length} bytes)`);
  let header;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw new ShardFileError(`${label}: the header is not valid JSON: ${e.message}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new ShardFileError(`${label}: the header is not a JSON object`);
  const data = bytes.subarray(8 + n);
  const tensors = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (!t || t.dtype !== 'F16') throw new ShardFileError(`${label}: tensor ${name} has dtype ${t?.dtype}, expected F16`);
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new ShardFileError(`${label}: tensor ${name} has a bad shape`);
    const [start, end] = t.data_offsets ?? [];
    const count = shape.reduce((a, b) => a * b, 1);
    if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && end <= data.length && end - start === 2 * count)) {
      throw new ShardFileError(`${label}: tensor ${name} ${JSON.stringify(shape)} has byte range ${start}..${end}, outside the data or the wrong size`);
    }
    const view = data.subarray(start, end);
    // Typed arrays need an aligned offset; copy when the file's layout does not give one.
    const halves = view.byteOffset % 2 === 0
      ? new Uint16Array(view.buffer, view.byteOffset, count)
      : new Uint16Array(view.slice().buffer);
    tensors.set(name, { shape, data: halves });
  }
  return tensors;
}

/** Takes tensor `name` with `shape` out of `tensors` (so leftovers can be reported). */
export function take(tensors, name, shape, label = 'shard') {
  const t = tensors.get(name);
  if (!t) throw new ShardFileError(`${label}: tensor ${name} is missing`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new ShardFileError(`${label}: tensor ${name} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}`);
  }
  tensors.delete(name);
  return t.data;
}
