// SYN1 decoding (src/protocol/frame.rs `decode` and the typed readers): a frame is accepted only
// if every rule of docs/PROTOCOL.md holds, checked in the same order as the Rust decoder, so the
// same bad frame gives the same error code on both sides. Never throws anything but Syn1Error.
import * as C from './constants.js';
import { fail, hex2, rustFloat } from './errors.js';
import { decompress } from './rle.js';
import { parseRice } from './rice.js';
import { checkControlText } from './json.js';

const typeLabel = (t) => `${C.TYPE_NAMES[t]} (0x${hex2(t)})`;

/**
 * Decodes and validates one frame. Returns `{ type, typeName, flags, seqPos, requestId, dim0,
 * dim1, payload, ... }` plus, by type: `activation` (see readActivation), `ids`, `entries`
 * (TOP_LOGITS) or `json` (CONTROL).
 */
export function decode(input, limits = C.DEFAULT_LIMITS) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (bytes.length < C.HEADER_SIZE) {
    fail('Truncated', `frame truncated: ${bytes.length} bytes, the header alone needs ${C.HEADER_SIZE}`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint32(C.OFFSET_MAGIC, false);
  if (magic !== C.MAGIC) {
    fail('BadMagic', `bad magic 0x${magic.toString(16).toUpperCase().padStart(8, '0')}, expected 0x53594E31 ("SYN1")`);
  }
  const payloadSize = dv.getUint32(C.OFFSET_PAYLOAD_SIZE, true);
  const size = Math.max(C.HEADER_SIZE + payloadSize, bytes.length);
  if (size > limits.maxFrameBytes) {
    fail('FrameTooLarge', `frame of ${size} bytes exceeds the limit of ${limits.maxFrameBytes}`);
  }
  const payload = bytes.subarray(C.HEADER_SIZE);
  if (payloadSize !== payload.length) {
    fail('PayloadSizeMismatch', `header says ${payloadSize} payload bytes, ${payload.length} follow the header`);
  }
  const type = bytes[C.OFFSET_TYPE];
  if (C.RESERVED_TYPES[type]) {
    fail('ReservedType', `message type 0x${hex2(type)} (${C.RESERVED_TYPES[type]}) is a reserved type, never sent`);
  }
  if (!C.TYPE_NAMES[type]) fail('UnknownType', `unknown message type 0x${hex2(type)}`);
  const flags = bytes[C.OFFSET_FLAGS];
  checkFlags(flags, type);
  const frame = {
    type,
    typeName: C.TYPE_NAMES[type],
    flags,
    seqPos: dv.getUint16(C.OFFSET_SEQ_POS, true),
    requestId: dv.getUint32(C.OFFSET_REQUEST_ID, true),
    dim0: dv.getUint32(C.OFFSET_DIM0, true),
    dim1: dv.getUint32(C.OFFSET_DIM1, true),
    payload,
  };
  if (type === C.TYPE_ACTIVATION) frame.activation = readActivation(frame, limits);
  else if (type === C.TYPE_TOKENS || type === C.TYPE_OUTPUT) frame.ids = readIds(frame, limits);
  else if (type === C.TYPE_TOP_LOGITS) {
    frame.entries = readTopLogits(frame, limits);
    frame.rows = frame.dim0;
  }
  else frame.json = readControl(frame, limits);
  return frame;
}

function checkFlags(flags, type) {
  if (flags & C.FLAG_RESERVED_MASK) fail('ReservedFlagBits', `flags 0x${hex2(flags)} set reserved bits 6-7`);
  if (flags & C.FLAG_PREDICTED) fail('UnsupportedFlag', `flag PREDICTED (in flags 0x${hex2(flags)}) is not supported`);
  if (flags & C.FLAG_EARLY_EXIT) fail('UnsupportedFlag', `flag EARLY_EXIT (in flags 0x${hex2(flags)}) is not supported`);
  if (type !== C.TYPE_ACTIVATION && flags !== 0) {
    fail('FlagsNotAllowed', `${typeLabel(type)} takes no flags, got 0x${hex2(flags)}`);
  }
  const quant = flags & C.FLAG_QUANT_MASK;
  if (flags & C.FLAG_DELTA && quant !== C.QUANT_INT8) {
    fail('DeltaNeedsInt8', `DELTA needs int8 quantization, got ${C.QUANT_NAMES[quant]}`);
  }
}

/** The encoding name of an ACTIVATION flags byte: f32, int8, int8-delta, int4 or rice. */
export function encodingOf(flags) {
  const quant = flags & C.FLAG_QUANT_MASK;
  if (quant === C.QUANT_INT8) return flags & C.FLAG_DELTA ? 'int8-delta' : 'int8';
  return ['f32', 'int8', 'int4', 'rice'][quant];
}

function payloadSize(encoding, rows, cols) {
  const n = rows * cols;
  let size;
  if (encoding === 'f32') size = 4 * n;
  else if ((encoding === 'int8' || encoding === 'int8-delta') && rows === 1) size = n + C.SCALE_SIZE;
  else if (encoding === 'int8-delta') return null;
  else if (encoding === 'int8' && rows > C.INT8_MAX_ROWS) return null;
  else if (encoding === 'int8') size = n + rows * C.SCALE_SIZE + C.INT8_ROWS_TRAILER_SIZE;
  else if (n > 0xffffffff) return null;
  else size = Math.ceil(n / 2) + C.SCALE_SIZE + C.INT4_COUNT_SIZE;
  return size > 0xffffffff ? null : size;
}

/** Bytes of an uncompressed ACTIVATION payload (null: not expressible; RICE depends on data). */
export function activationPayloadSize(encoding, rows, cols) {
  if (rows === 0 || cols === 0 || encoding === 'rice') return null;
  return payloadSize(encoding, rows, cols);
}

/**
 * Reads an ACTIVATION frame: `{ encoding, compressed, rows, cols, q?, scales?, steps?, ks?,
 * values }` where `values` (Float32Array) is the dequantized payload (for int8-delta: the
 * difference; apply it with a DeltaDecoder).
 */
function readActivation(frame, limits) {
  const encoding = encodingOf(frame.flags);
  const rows = frame.dim0;
  const cols = frame.dim1;
  if (rows > limits.maxRows) fail('TooManyRows', `${rows} rows exceed the limit of ${limits.maxRows}`);
  if (cols > limits.maxCols) fail('TooManyCols', `${cols} columns exceed the limit of ${limits.maxCols}`);
  const badShape = (reason) =>
    fail('BadShape', `${typeLabel(C.TYPE_ACTIVATION)}: bad shape [${rows}, ${cols}]: ${reason}`);
  if (rows === 0 || cols === 0) badShape('both dims must be nonzero');
  if (encoding === 'int8-delta' && rows !== 1) fail('DeltaNeedsOneRow', `DELTA needs exactly one row, got ${rows}`);
  if (encoding === 'rice') {
    if (rows * cols > 0xffffffff) badShape('rice frames hold at most 2^32 - 1 values');
  } else if (payloadSize(encoding, rows, cols) === null) {
    badShape('shape cannot be expressed in this encoding (int8: at most 65535 rows; payload within u32)');
  }
  const compressed = (frame.flags & C.FLAG_COMPRESSED) !== 0;
  const raw = compressed ? decompress(frame.payload, limits.maxFrameBytes - C.HEADER_SIZE) : frame.payload;
  return { encoding, compressed, rows, cols, ...parsePayload(encoding, rows, cols, raw) };
}

function parsePayload(encoding, rows, cols, bytes) {
  const n = rows * cols;
  if (encoding === 'rice') {
    const v = parseRice(bytes, rows, cols);
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = Math.fround(v.q[i] * v.steps[Math.floor(i / cols)]);
    return { ...v, values };
  }
  const layout = {
    f32: 'f32',
    int8: rows === 1 ? 'int8 one-row' : 'int8 several-row',
    'int8-delta': 'int8 delta',
    int4: 'int4',
  }[encoding];
  const expected = payloadSize(encoding, rows, cols);
  if (bytes.length !== expected) {
    fail('LayoutSizeMismatch', `${layout} payload for shape [${rows}, ${cols}] must be ${expected} bytes, got ${bytes.length}`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = new Float32Array(n);
  if (encoding === 'f32') {
    for (let i = 0; i < n; i++) {
      values[i] = dv.getFloat32(4 * i, true);
      if (!Number.isFinite(values[i])) fail('NonFiniteValue', `value ${i} is not finite (${rustFloat(values[i])})`);
    }
    return { values };
  }
  if (encoding === 'int4') {
    const packed = Math.ceil(n / 2);
    const trailer = dv.getUint32(packed + C.SCALE_SIZE, true);
    if (trailer !== n) fail('CountTrailerMismatch', `int4 count trailer says ${trailer}, shape holds ${n} values`);
    const scale = dv.getFloat32(packed, true);
    checkScale(0, scale);
    const q = new Int8Array(n);
    for (let i = 0; i < packed; i++) {
      const nibbles = [bytes[i] & 0x0f, bytes[i] >> 4];
      for (let j = 0; j < 2; j++) {
        const index = 2 * i + j;
        if (index >= n) {
          if (nibbles[j] !== 0) fail('Int4Padding', `int4 padding nibble is ${nibbles[j]}, must be 0`);
          continue;
        }
        if (nibbles[j] === 0) {
          fail('Int4OutOfRange', `int4 value ${index} is stored as nibble 0 (q = -8), outside [-7, 7]`);
        }
        q[index] = nibbles[j] - C.INT4_BIAS;
        values[index] = Math.fround(q[index] * scale);
      }
    }
    return { q, scale, values };
  }
  if (rows > 1) {
    const trailer = dv.getUint16(bytes.length - C.INT8_ROWS_TRAILER_SIZE, true);
    if (trailer !== rows) fail('RowsTrailerMismatch', `int8 rows trailer says ${trailer}, dim0 is ${rows}`);
  }
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    scales[r] = dv.getFloat32(n + r * C.SCALE_SIZE, true);
    checkScale(r, scales[r]);
  }
  const q = new Int8Array(bytes.buffer, bytes.byteOffset, n).slice();
  const bad = q.indexOf(-128);
  if (bad >= 0) fail('Int8OutOfRange', `int8 value ${bad} is -128, outside [-127, 127]`);
  for (let i = 0; i < n; i++) values[i] = Math.fround(q[i] * scales[Math.floor(i / cols)]);
  return { q, scales, values };
}

function checkScale(index, scale) {
  if (!(Number.isFinite(scale) && scale > 0)) {
    fail('BadScale', `scale ${index} is ${rustFloat(scale)}, must be finite and positive`);
  }
}

function readIds(frame, limits) {
  const { dim0, dim1, payload } = frame;
  if (dim1 !== 1 || dim0 === 0) {
    fail('BadShape', `${typeLabel(frame.type)}: bad shape [${dim0}, ${dim1}]: must be [n, 1] with n >= 1`);
  }
  if (dim0 > limits.maxRows) fail('TooManyRows', `${dim0} rows exceed the limit of ${limits.maxRows}`);
  if (payload.length % C.TOKEN_ID_SIZE !== 0) {
    fail('LayoutSizeMismatch', `u32 token ids payload for shape [${dim0}, ${dim1}] must be ${dim0 * C.TOKEN_ID_SIZE} bytes, got ${payload.length}`);
  }
  const count = payload.length / C.TOKEN_ID_SIZE;
  if (count !== dim0) {
    fail('TokenCountMismatch', `${typeLabel(frame.type)}: ${count} token ids in the payload, dim0 is ${dim0}`);
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return Uint32Array.from({ length: count }, (_, i) => dv.getUint32(4 * i, true));
}

function readTopLogits(frame, limits) {
  const { dim0, dim1, payload } = frame;
  if (dim0 === 0 || dim1 === 0) {
    fail('BadShape', `${typeLabel(frame.type)}: bad shape [${dim0}, ${dim1}]: must be [r, k] with r, k >= 1`);
  }
  if (dim0 > limits.maxRows) fail('TooManyRows', `${dim0} rows exceed the limit of ${limits.maxRows}`);
  if (dim1 > limits.maxCols) fail('TooManyCols', `${dim1} columns exceed the limit of ${limits.maxCols}`);
  const expected = dim0 * dim1 * C.TOP_LOGIT_ENTRY_SIZE;
  if (payload.length !== expected) {
    fail('LayoutSizeMismatch', `top-k (u32 id, f32 logit) payload for shape [${dim0}, ${dim1}] must be ${expected} bytes, got ${payload.length}`);
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const entries = [];
  for (let i = 0; i < dim0 * dim1; i++) {
    const logit = dv.getFloat32(8 * i + 4, true);
    if (!Number.isFinite(logit)) fail('NonFiniteValue', `value ${i} is not finite (${rustFloat(logit)})`);
    entries.push({ id: dv.getUint32(8 * i, true), logit });
  }
  return entries;
}

function readControl(frame, limits) {
  const { dim0, dim1, payload } = frame;
  if (dim1 !== 1 || dim0 !== payload.length) {
    fail('BadShape', `${typeLabel(frame.type)}: bad shape [${dim0}, ${dim1}]: must be [payload byte length, 1]`);
  }
  if (payload.length > limits.maxFrameBytes - C.HEADER_SIZE) {
    fail('FrameTooLarge', `frame of ${payload.length} bytes exceeds the limit of ${limits.maxFrameBytes - C.HEADER_SIZE}`);
  }
  return checkControlText(payload);
}
