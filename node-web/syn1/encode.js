// SYN1 encoding of what a node sends: ACTIVATION in every encoding (with the optional
// COMPRESSED stage), TOP_LOGITS, and TOKENS / OUTPUT / CONTROL for tests. Quantization follows
// src/protocol/quant.rs exactly (scale = max|x| / qmax as f32, Math.round in f64), so a browser
// node's frames are byte-identical to a native node's for the same values.
import * as C from './constants.js';
import { Syn1Error, rustFloat } from './errors.js';
import { compress } from './rle.js';
import { quantizeRice, writeRice } from './rice.js';

/** Writes a header + payload into one Uint8Array. */
export function writeFrame({ type, flags = 0, seqPos = 0, requestId, dim0, dim1 }, payload) {
  const out = new Uint8Array(C.HEADER_SIZE + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(C.OFFSET_MAGIC, C.MAGIC, false);
  out[C.OFFSET_TYPE] = type;
  out[C.OFFSET_FLAGS] = flags;
  dv.setUint16(C.OFFSET_SEQ_POS, seqPos & 0xffff, true);
  dv.setUint32(C.OFFSET_REQUEST_ID, requestId >>> 0, true);
  dv.setUint32(C.OFFSET_PAYLOAD_SIZE, payload.length, true);
  dv.setUint32(C.OFFSET_DIM0, dim0, true);
  dv.setUint32(C.OFFSET_DIM1, dim1, true);
  out.set(payload, C.HEADER_SIZE);
  return out;
}

/** The f32 scale for values whose largest magnitude is `maxAbs` (1 when 0 or underflowing). */
export function scaleFor(maxAbs, qmax) {
  const s = Math.fround(maxAbs / qmax);
  return s > 0 && Number.isFinite(s) ? s : 1;
}

/** Quantizes `values` with one scale into `out` (Int8Array) at `offset`; returns the scale. */
export function quantizeInto(values, qmax, out, offset = 0) {
  let maxAbs = 0;
  for (const x of values) maxAbs = Math.max(maxAbs, Math.abs(x));
  const scale = scaleFor(maxAbs, qmax);
  for (let i = 0; i < values.length; i++) {
    out[offset + i] = Math.min(Math.max(Math.round(values[i] / scale), -qmax), qmax);
  }
  return scale;
}

function checkFinite(data) {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new Syn1Error('NonFiniteValue', `value ${i} is not finite (${rustFloat(data[i])})`);
  }
}

/** The uncompressed payload of int8 values (one scale per row; trailer when rows > 1). */
export function int8Payload(q, scales, rows) {
  const n = q.length;
  const out = new Uint8Array(n + rows * C.SCALE_SIZE + (rows > 1 ? C.INT8_ROWS_TRAILER_SIZE : 0));
  const dv = new DataView(out.buffer);
  out.set(new Uint8Array(q.buffer, q.byteOffset, n));
  for (let r = 0; r < rows; r++) dv.setFloat32(n + r * C.SCALE_SIZE, scales[r], true);
  if (rows > 1) dv.setUint16(n + rows * C.SCALE_SIZE, rows, true);
  return out;
}

/**
 * Encodes hidden states (Float32Array, rows x cols) as an ACTIVATION frame. `encoding` is one
 * of f32, int8, int4, rice (int8-delta needs a DeltaEncoder). Returns a Uint8Array.
 */
export function encodeActivation(data, rows, cols, encoding, { seqPos = 0, requestId = 0, compress: rle = false, ratio = C.RICE_DEFAULT_RATIO } = {}) {
  if (!(rows > 0 && cols > 0) || data.length !== rows * cols) {
    throw new Syn1Error('DataLengthMismatch', `data has ${data.length} values, shape [${rows}, ${cols}] needs ${rows * cols}`);
  }
  checkFinite(data);
  let payload;
  let quant;
  if (encoding === 'f32') {
    quant = C.QUANT_NONE;
    payload = new Uint8Array(Float32Array.from(data).buffer);
  } else if (encoding === 'int8') {
    if (rows > C.INT8_MAX_ROWS) throw new Syn1Error('BadShape', `int8 frames hold at most 65535 rows, got ${rows}`);
    quant = C.QUANT_INT8;
    const q = new Int8Array(rows * cols);
    const scales = new Float32Array(rows);
    for (let r = 0; r < rows; r++) scales[r] = quantizeInto(data.subarray(r * cols, (r + 1) * cols), C.INT8_MAX_Q, q, r * cols);
    payload = int8Payload(q, scales, rows);
  } else if (encoding === 'int4') {
    quant = C.QUANT_INT4;
    const n = rows * cols;
    const q = new Int8Array(n);
    const scale = quantizeInto(data, C.INT4_MAX_Q, q);
    const packed = Math.ceil(n / 2);
    payload = new Uint8Array(packed + C.SCALE_SIZE + C.INT4_COUNT_SIZE);
    for (let i = 0; i < n; i++) payload[i >> 1] |= ((q[i] + C.INT4_BIAS) & 0x0f) << (4 * (i & 1));
    const dv = new DataView(payload.buffer);
    dv.setFloat32(packed, scale, true);
    dv.setUint32(packed + C.SCALE_SIZE, n, true);
  } else if (encoding === 'rice') {
    quant = C.QUANT_RICE;
    payload = writeRice(quantizeRice(Float32Array.from(data), cols, ratio), cols);
  } else {
    throw new Syn1Error('UnknownEncoding', `unknown activation encoding ${JSON.stringify(String(encoding))}`);
  }
  return finishActivation(payload, quant, rle, { seqPos, requestId, rows, cols });
}

/** Applies the optional run-length stage and writes the ACTIVATION header. */
export function finishActivation(raw, flags, rle, { seqPos, requestId, rows, cols }) {
  const packed = rle ? compress(raw) : null;
  const f = packed ? flags | C.FLAG_COMPRESSED : flags;
  return writeFrame({ type: C.TYPE_ACTIVATION, flags: f, seqPos, requestId, dim0: rows, dim1: cols }, packed ?? raw);
}

/**
 * TOP_LOGITS: `entries` = [{id, logit}], `rows` runs of k (each best first, the earliest
 * position first; k >= 1, logits finite). rows is 1 but for a speculative verification step.
 */
export function encodeTopLogits(entries, { seqPos = 0, requestId = 0, rows = 1 } = {}) {
  if (entries.length === 0 || rows < 1 || entries.length % rows !== 0) {
    throw new Syn1Error('BadShape', 'TOP_LOGITS (0x11): at least one row of at least one entry, every row of the same k');
  }
  const payload = new Uint8Array(entries.length * C.TOP_LOGIT_ENTRY_SIZE);
  const dv = new DataView(payload.buffer);
  entries.forEach(({ id, logit }, i) => {
    if (!Number.isFinite(logit)) throw new Syn1Error('NonFiniteValue', `value ${i} is not finite (${rustFloat(logit)})`);
    dv.setUint32(8 * i, id, true);
    dv.setFloat32(8 * i + 4, logit, true);
  });
  return writeFrame({ type: C.TYPE_TOP_LOGITS, seqPos, requestId, dim0: rows, dim1: entries.length / rows }, payload);
}

/** TOKENS (or OUTPUT with `type`): u32 ids, shape [n, 1]. */
export function encodeIds(ids, { seqPos = 0, requestId = 0, type = C.TYPE_TOKENS } = {}) {
  if (ids.length === 0) throw new Syn1Error('BadShape', 'at least one token id');
  const payload = new Uint8Array(4 * ids.length);
  const dv = new DataView(payload.buffer);
  ids.forEach((id, i) => dv.setUint32(4 * i, id, true));
  return writeFrame({ type, seqPos, requestId, dim0: ids.length, dim1: 1 }, payload);
}

/** CONTROL: one JSON object, compact, shape [byte length, 1]. */
export function encodeControl(object, { seqPos = 0, requestId = 0 } = {}) {
  const payload = new TextEncoder().encode(JSON.stringify(object));
  return writeFrame({ type: C.TYPE_CONTROL, seqPos, requestId, dim0: payload.length, dim1: 1 }, payload);
}
