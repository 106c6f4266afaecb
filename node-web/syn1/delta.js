// DELTA (int8 one row, flags 0x21): the receiver's reconstruction r_t = fround(r_(t-1) + q * s),
// and the sender that mirrors it (docs/PROTOCOL.md "DELTA"): the encoder decodes every frame it
// sends, so its reference is bit for bit the receiver's and errors never accumulate.
import * as C from './constants.js';
import { Syn1Error } from './errors.js';
import { decode } from './decode.js';
import { encodeActivation, finishActivation, int8Payload, quantizeInto } from './encode.js';

/** Receiver side: keeps the last reconstructed row; `apply(frame)` returns the full values. */
export class DeltaDecoder {
  constructor() {
    this.reference = null;
  }

  /** `frame` is a decoded ACTIVATION frame; returns Float32Array (rows x cols). */
  apply(frame) {
    const a = frame.activation;
    if (a.encoding !== 'int8-delta') {
      this.reference = a.values.slice(a.values.length - a.cols);
      return a.values;
    }
    if (!this.reference) {
      throw new Syn1Error('DeltaWithoutReference', 'DELTA frame without a reference: a keyframe must come first');
    }
    if (this.reference.length !== a.cols) {
      throw new Syn1Error('DeltaWidthMismatch', `DELTA frame has ${a.cols} columns, the reference row has ${this.reference.length}`);
    }
    const scale = a.scales[0];
    const out = new Float32Array(a.cols);
    for (let i = 0; i < a.cols; i++) {
      out[i] = Math.fround(this.reference[i] + a.q[i] * scale);
      if (!Number.isFinite(out[i])) throw new Syn1Error('NonFiniteValue', `value ${i} is not finite`);
    }
    this.reference = out;
    return out;
  }
}

/** Sender side: int8 keyframes, then deltas against the receiver's reconstruction. */
export class DeltaEncoder {
  constructor(keyframeInterval = 32) {
    this.mirror = new DeltaDecoder();
    this.keyframeInterval = keyframeInterval;
    this.sinceKey = 0;
    this.forceKey = true;
  }

  forceKeyframe() {
    this.forceKey = true;
  }

  /** Encodes rows x cols values; returns the frame bytes. */
  encode(data, rows, cols, { seqPos = 0, requestId = 0, compress = false } = {}) {
    const ref = this.mirror.reference;
    const due = this.keyframeInterval !== 0 && this.sinceKey + 1 >= this.keyframeInterval;
    const key = this.forceKey || due || rows !== 1 || !ref || ref.length !== cols;
    let bytes;
    if (key) {
      bytes = encodeActivation(data, rows, cols, 'int8', { seqPos, requestId, compress });
      this.sinceKey = 0;
      this.forceKey = false;
    } else {
      const diff = new Float32Array(cols); // f32 subtraction, as the Rust encoder does
      for (let i = 0; i < cols; i++) diff[i] = data[i] - ref[i];
      const q = new Int8Array(cols);
      const scale = quantizeInto(diff, C.INT8_MAX_Q, q);
      const raw = int8Payload(q, [scale], 1);
      bytes = finishActivation(raw, C.QUANT_INT8 | C.FLAG_DELTA, compress, { seqPos, requestId, rows, cols });
      this.sinceKey++;
    }
    this.mirror.apply(decode(bytes, { maxFrameBytes: Infinity, maxRows: Infinity, maxCols: Infinity }));
    return bytes;
  }
}
