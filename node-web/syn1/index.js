// SYN1 for the browser node and its Node tests: decode (validating every rule), encode what a
// node sends, and the DELTA reference on both ends. Plain ES module, no dependencies.
export * from './constants.js';
export { Syn1Error } from './errors.js';
export { decode, encodingOf, activationPayloadSize } from './decode.js';
export { encodeActivation, encodeTopLogits, encodeIds, encodeControl, writeFrame, scaleFor } from './encode.js';
export { DeltaDecoder, DeltaEncoder } from './delta.js';
export { compress, decompress } from './rle.js';
export { parseRice, writeRice, quantizeRice, bestK, stepFor } from './rice.js';
