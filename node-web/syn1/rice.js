// RICE payloads (quantization 3, src/protocol/rice.rs): per row `[f32 step][u8 k][bits]`, each
// q zigzag-mapped and Rice-coded with parameter k, escaping to exp-Golomb after 16 ones. The
// reader never reads past the payload and bounds every escape; the writer and `quantize` emit
// the Rust encoder's exact bytes (Math.round in f64 with the f32 step).
import * as C from './constants.js';
import { fail, rustFloat } from './errors.js';

const zigzag = (q) => (q >= 0 ? 2 * q : -2 * q - 1);
const unzigzag = (u) => (u % 2 === 0 ? u / 2 : -(u + 1) / 2);

/** Parses `rows` x `cols` RICE values: `{ q: Int32Array, steps: Float32Array, ks: Uint8Array }`. */
export function parseRice(bytes, rows, cols) {
  const min = rows * (C.RICE_ROW_HEADER_SIZE + Math.ceil(cols / 8));
  if (min > bytes.length) {
    fail('RiceTooShort', `rice payload for shape [${rows}, ${cols}] needs at least ${min} bytes, got ${bytes.length}`);
  }
  const q = new Int32Array(rows * cols);
  const steps = new Float32Array(rows);
  const ks = new Uint8Array(rows);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  for (let row = 0; row < rows; row++) {
    // Like the Rust reader: the whole payload's length for a missing row header, the row's
    // remaining bytes for a code that runs past them.
    if (at + C.RICE_ROW_HEADER_SIZE > bytes.length) {
      fail('RiceTruncated', `rice row ${row} is truncated (${bytes.length} payload bytes)`);
    }
    const step = dv.getFloat32(at, true);
    if (!(Number.isFinite(step) && step > 0)) {
      fail('BadScale', `scale ${row} is ${rustFloat(step)}, must be finite and positive`);
    }
    const k = bytes[at + 4];
    if (k > C.RICE_MAX_K) fail('RiceBadK', `rice row ${row} has parameter k = ${k}, at most 15`);
    at += C.RICE_ROW_HEADER_SIZE;
    const rowStart = at;
    const truncated = () => fail('RiceTruncated', `rice row ${row} is truncated (${bytes.length - rowStart} payload bytes)`);
    const base = at * 8;
    let pos = base;
    const bit = () => {
      const byte = pos >> 3;
      if (byte >= bytes.length) truncated();
      const b = (bytes[byte] >> (7 - (pos & 7))) & 1;
      pos++;
      return b;
    };
    const bits = (n) => {
      let v = 0;
      for (let i = 0; i < n; i++) v = v * 2 + bit();
      return v;
    };
    for (let col = 0; col < cols; col++) {
      const tooLarge = () => fail('RiceValueTooLarge', `rice value at row ${row}, column ${col} exceeds |q| <= 2^20`);
      let unary = 0;
      while (unary < C.RICE_ESCAPE_UNARY && bit() === 1) unary++;
      let u;
      if (unary < C.RICE_ESCAPE_UNARY) {
        u = unary * 2 ** k + bits(k);
      } else {
        let zeros = 0;
        while (bit() === 0) {
          zeros++;
          if (zeros > C.RICE_MAX_ESCAPE_ZEROS) tooLarge();
        }
        const n = zeros + k;
        const w = 2 ** n + bits(n);
        u = w - 2 ** k + C.RICE_ESCAPE_UNARY * 2 ** k;
      }
      if (u > 0xffffffff) tooLarge();
      const v = unzigzag(u);
      if (Math.abs(v) > C.RICE_MAX_Q) tooLarge();
      const x = Math.fround(v * step);
      if (!Number.isFinite(x)) {
        fail('NonFiniteValue', `value ${row * cols + col} is not finite (${rustFloat(x)})`);
      }
      q[row * cols + col] = v;
    }
    const used = Math.ceil((pos - base) / 8);
    if ((pos - base) % 8 !== 0 && bits(8 - ((pos - base) % 8)) !== 0) {
      fail('RicePadding', `rice row ${row} has nonzero padding bits`);
    }
    at += used;
    steps[row] = step;
    ks[row] = k;
  }
  if (at !== bytes.length) fail('RiceTrailingBytes', `${bytes.length - at} bytes follow the last rice row`);
  return { q, steps, ks };
}

function codeBits(u, k) {
  if (Math.floor(u / 2 ** k) < C.RICE_ESCAPE_UNARY) return Math.floor(u / 2 ** k) + 1 + k;
  const w = u - C.RICE_ESCAPE_UNARY * 2 ** k + 2 ** k;
  const n = Math.floor(Math.log2(w));
  return C.RICE_ESCAPE_UNARY + 2 * n - k + 1;
}

/** The k with the fewest bits for one row's q values (the smallest on ties). */
export function bestK(q) {
  let best = 0;
  let bestBits = Infinity;
  for (let k = 0; k <= C.RICE_MAX_K; k++) {
    let total = 0;
    for (const v of q) total += codeBits(zigzag(v), k);
    if (total < bestBits) {
      best = k;
      bestBits = total;
    }
  }
  return best;
}

/** The step for one row at `ratio`: ratio x mean |x| without the RICE_TRIM largest values. */
export function stepFor(row, ratio) {
  const mags = Array.from(row, Math.abs).sort((a, b) => b - a);
  const max = mags.length ? mags[0] : 0;
  const trim = mags.length > 2 * C.RICE_TRIM ? C.RICE_TRIM : 0;
  let sum = 0;
  for (let i = trim; i < mags.length; i++) sum += mags[i];
  const mean = Math.fround(sum / Math.max(mags.length - trim, 1));
  const step = Math.max(Math.fround(Math.fround(ratio) * mean), Math.fround(max / (C.RICE_MAX_Q / 2)));
  return step > 0 && Number.isFinite(step) ? step : 1;
}

/** Quantizes rows of `cols` values (finite, already checked) at `ratio`. */
export function quantizeRice(data, cols, ratio) {
  const rows = data.length / cols;
  const q = new Int32Array(data.length);
  const steps = new Float32Array(rows);
  const ks = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = data.subarray(r * cols, (r + 1) * cols);
    const step = stepFor(row, ratio);
    for (let c = 0; c < cols; c++) {
      const v = Math.round(row[c] / step);
      q[r * cols + c] = Math.min(Math.max(v, -C.RICE_MAX_Q), C.RICE_MAX_Q);
    }
    steps[r] = step;
    ks[r] = bestK(q.subarray(r * cols, (r + 1) * cols));
  }
  return { q, steps, ks };
}

/** Writes RICE values (`{q, steps, ks}`) for rows of `cols` values. */
export function writeRice({ q, steps, ks }, cols) {
  const out = [];
  let acc = 0;
  let n = 0;
  const put = (value, count) => {
    for (let i = count - 1; i >= 0; i--) {
      acc = (acc << 1) | (Math.floor(value / 2 ** i) % 2);
      if (++n === 8) {
        out.push(acc & 0xff);
        acc = 0;
        n = 0;
      }
    }
  };
  const f = new DataView(new ArrayBuffer(4));
  for (let r = 0; r < steps.length; r++) {
    f.setFloat32(0, steps[r], true);
    out.push(f.getUint8(0), f.getUint8(1), f.getUint8(2), f.getUint8(3), ks[r]);
    const k = ks[r];
    for (let c = 0; c < cols; c++) {
      const u = zigzag(q[r * cols + c]);
      const hi = Math.floor(u / 2 ** k);
      if (hi < C.RICE_ESCAPE_UNARY) {
        put(2 ** hi - 1, hi);
        put(0, 1);
        put(u, k);
      } else {
        put(2 ** C.RICE_ESCAPE_UNARY - 1, C.RICE_ESCAPE_UNARY);
        const w = u - C.RICE_ESCAPE_UNARY * 2 ** k + 2 ** k;
        const nb = Math.floor(Math.log2(w));
        put(0, nb - k);
        put(w, nb + 1);
      }
    }
    if (n > 0) {
      out.push((acc << (8 - n)) & 0xff);
      acc = 0;
      n = 0;
    }
  }
  return Uint8Array.from(out);
}
