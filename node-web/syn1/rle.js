// The COMPRESSED run-length stage (src/protocol/rle.rs): `[u32 original][u16 runs]` then runs of
// `{u8 kind, u16 length}` (+ literal bytes). The decoder bounds the original length before
// allocating and checks every run; the encoder emits exactly the Rust encoder's bytes.
import * as C from './constants.js';
import { fail } from './errors.js';

/** Decompresses a payload whose original length may be at most `maxLen` bytes. */
export function decompress(data, maxLen) {
  if (data.length < C.RLE_HEADER_SIZE) fail('RleTruncated', `compressed payload truncated at byte ${data.length}`);
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const original = dv.getUint32(0, true);
  const runs = dv.getUint16(4, true);
  if (original > maxLen) {
    fail('RleTooLarge', `compressed payload declares ${original} original bytes, limit is ${maxLen}`);
  }
  const out = new Uint8Array(original);
  let len = 0;
  let pos = C.RLE_HEADER_SIZE;
  for (let run = 0; run < runs; run++) {
    if (pos + C.RLE_RUN_HEADER_SIZE > data.length) fail('RleTruncated', `compressed payload truncated at byte ${pos}`);
    const kind = data[pos];
    const n = dv.getUint16(pos + 1, true);
    pos += C.RLE_RUN_HEADER_SIZE;
    if (n === 0) fail('RleEmptyRun', `compressed run ${run} has length 0`);
    if (len + n > original) {
      fail('RleLengthMismatch', `compressed runs produce ${len + n} bytes, original length is ${original}`);
    }
    if (kind === C.RLE_KIND_ZERO) {
      len += n;
    } else if (kind === C.RLE_KIND_LITERAL) {
      if (pos + n > data.length) fail('RleTruncated', `compressed payload truncated at byte ${pos}`);
      out.set(data.subarray(pos, pos + n), len);
      len += n;
      pos += n;
    } else {
      fail('RleBadKind', `compressed run ${run} has kind ${kind}, must be 0 (zeros) or 1 (literal)`);
    }
  }
  if (pos !== data.length) fail('RleTrailingBytes', `${data.length - pos} bytes follow the last compressed run`);
  if (len !== original) fail('RleLengthMismatch', `compressed runs produce ${len} bytes, original length is ${original}`);
  return out;
}

/** Compresses `data`; null when the result would not be strictly smaller or cannot be written. */
export function compress(data) {
  if (data.length > 0xffffffff) return null;
  const runs = [];
  const push = (kind, start, n) => {
    for (let at = start; at < start + n; at += C.RLE_MAX_RUN) {
      runs.push([kind, at, Math.min(C.RLE_MAX_RUN, start + n - at)]);
    }
  };
  let litStart = 0;
  let i = 0;
  while (i < data.length) {
    if (data[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < data.length && data[j] === 0) j++;
    const edge = i === 0 || j === data.length;
    const min = edge ? C.RLE_MIN_ZERO_RUN_EDGE : C.RLE_MIN_ZERO_RUN_INNER;
    if (j - i >= min) {
      push(C.RLE_KIND_LITERAL, litStart, i - litStart);
      push(C.RLE_KIND_ZERO, i, j - i);
      litStart = j;
    }
    i = j;
  }
  push(C.RLE_KIND_LITERAL, litStart, data.length - litStart);
  if (runs.length > C.RLE_MAX_RUNS) return null;
  let size = C.RLE_HEADER_SIZE;
  for (const [k, , n] of runs) size += C.RLE_RUN_HEADER_SIZE + (k === C.RLE_KIND_LITERAL ? n : 0);
  if (size >= data.length) return null;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length, true);
  dv.setUint16(4, runs.length, true);
  let pos = C.RLE_HEADER_SIZE;
  for (const [kind, start, n] of runs) {
    out[pos] = kind;
    dv.setUint16(pos + 1, n, true);
    pos += C.RLE_RUN_HEADER_SIZE;
    if (kind === C.RLE_KIND_LITERAL) {
      out.set(data.subarray(start, start + n), pos);
      pos += n;
    }
  }
  return out;
}
