// SYN1 wire constants (docs/PROTOCOL.md, src/protocol/{header,types,payload,rle,rice}.rs).
// Every offset, code and bit has one name here; nothing else in node-web repeats a literal.

export const MAGIC = 0x53594e31;
export const HEADER_SIZE = 24;
export const OFFSET_MAGIC = 0;
export const OFFSET_TYPE = 4;
export const OFFSET_FLAGS = 5;
export const OFFSET_SEQ_POS = 6;
export const OFFSET_REQUEST_ID = 8;
export const OFFSET_PAYLOAD_SIZE = 12;
export const OFFSET_DIM0 = 16;
export const OFFSET_DIM1 = 20;

export const TYPE_ACTIVATION = 0x01;
export const TYPE_OUTPUT = 0x02;
export const TYPE_KV_APPEND = 0x03;
export const TYPE_PREDICT = 0x04;
export const TYPE_EARLY_EXIT = 0x05;
export const TYPE_TOKENS = 0x10;
export const TYPE_TOP_LOGITS = 0x11;
export const TYPE_CONTROL = 0x12;

export const TYPE_NAMES = {
  [TYPE_ACTIVATION]: 'ACTIVATION',
  [TYPE_OUTPUT]: 'OUTPUT',
  [TYPE_TOKENS]: 'TOKENS',
  [TYPE_TOP_LOGITS]: 'TOP_LOGITS',
  [TYPE_CONTROL]: 'CONTROL',
};
export const RESERVED_TYPES = {
  [TYPE_KV_APPEND]: 'KV_APPEND',
  [TYPE_PREDICT]: 'PREDICT',
  [TYPE_EARLY_EXIT]: 'EARLY_EXIT',
};

export const FLAG_QUANT_MASK = 0b11;
export const QUANT_NONE = 0;
export const QUANT_INT8 = 1;
export const QUANT_INT4 = 2;
export const QUANT_RICE = 3;
export const QUANT_NAMES = ['none', 'int8', 'int4', 'rice'];
export const FLAG_COMPRESSED = 1 << 2;
export const FLAG_PREDICTED = 1 << 3;
export const FLAG_EARLY_EXIT = 1 << 4;
export const FLAG_DELTA = 1 << 5;
export const FLAG_RESERVED_MASK = 0b1100_0000;

export const SCALE_SIZE = 4;
export const INT8_ROWS_TRAILER_SIZE = 2;
export const INT4_COUNT_SIZE = 4;
export const INT8_MAX_Q = 127;
export const INT4_MAX_Q = 7;
export const INT4_BIAS = 8;
export const INT8_MAX_ROWS = 0xffff;
export const TOKEN_ID_SIZE = 4;
export const TOP_LOGIT_ENTRY_SIZE = 8;

export const RLE_HEADER_SIZE = 6;
export const RLE_RUN_HEADER_SIZE = 3;
export const RLE_KIND_ZERO = 0;
export const RLE_KIND_LITERAL = 1;
export const RLE_MAX_RUN = 0xffff;
export const RLE_MAX_RUNS = 0xffff;
export const RLE_MIN_ZERO_RUN_INNER = 7;
export const RLE_MIN_ZERO_RUN_EDGE = 4;

export const RICE_ROW_HEADER_SIZE = 5;
export const RICE_MAX_K = 15;
export const RICE_ESCAPE_UNARY = 16;
export const RICE_MAX_Q = 1 << 20;
export const RICE_MAX_ESCAPE_ZEROS = 22;
export const RICE_TRIM = 8;
export const RICE_DEFAULT_RATIO = 0.04;

/** Deepest JSON nesting a CONTROL payload may have (serde_json's recursion limit). */
export const CONTROL_MAX_DEPTH = 128;

/** Receiver limits (src/protocol/frame.rs `Limits::default`). */
export const DEFAULT_LIMITS = Object.freeze({
  maxFrameBytes: 32 * 1024 * 1024,
  maxRows: 16384,
  maxCols: 65536,
});

/** Activation encodings by name, as the coordinator's `step` message names them. */
export const ENCODINGS = ['f32', 'int8', 'int8-delta', 'int4', 'rice'];
