//! SYN1, the binary wire protocol between the coordinator and the nodes (docs/PROTOCOL.md).
//!
//! Every frame is a 24-byte header (`header`) and a payload whose layout depends on the message
//! type and flags (`types`). The header and the int8 layouts are byte-compatible with the
//! JavaScript prototype; TOKENS, TOP_LOGITS, CONTROL and the RICE quantization (`rice`) are
//! Synapse extensions.
//!
//! Invariants: [`decode`] never panics, validates everything it returns (so every typed
//! `from_frame` succeeds on a decoded frame) and [`encode`] of a decoded frame gives back the
//! same bytes. Delta streams never drift because the sender mirrors the receiver (`delta`).
//! Golden bytes for every message live in tests/fixtures/syn1/ and are checked by
//! tests/protocol.rs.

mod activation;
mod control;
mod delta;
mod error;
mod frame;
mod header;
mod messages;
mod payload;
mod quant;
mod rice;
mod rle;
mod types;

pub use activation::{
    Activation, ActivationPayload, encoded_size, int8_frame, ratio_vs_f32, read_activation,
};
pub use control::{Control, ControlMessage};
pub use delta::{DeltaDecoder, DeltaEncoder};
pub use error::ProtocolError;
pub use frame::{Frame, Limits, decode, encode};
pub use header::{
    HEADER_SIZE, MAGIC, MAGIC_BYTES, OFFSET_DIM0, OFFSET_DIM1, OFFSET_FLAGS, OFFSET_MAGIC,
    OFFSET_PAYLOAD_SIZE, OFFSET_REQUEST_ID, OFFSET_SEQ_POS, OFFSET_TYPE, RawHeader, seq_pos_for,
    seq_pos_matches,
};
pub use messages::{Output, TOKEN_ID_SIZE, TOP_LOGIT_ENTRY_SIZE, Tokens, TopLogit, TopLogits};
pub use payload::{
    F32_SIZE, INT4_COUNT_SIZE, INT8_MAX_ROWS, INT8_ROWS_TRAILER_SIZE, PayloadValues, SCALE_SIZE,
    payload_size,
};
pub use quant::{
    INT4_BIAS, INT4_MAX_Q, INT8_MAX_Q, delta_reconstruct, dequantize, js_round, pack_int4,
    quantize_into, scale_for, unpack_int4,
};
pub use rice::{
    RICE_COMPACT_RATIO, RICE_DEFAULT_RATIO, RICE_ESCAPE_UNARY, RICE_MAX_K, RICE_MAX_Q,
    RICE_ROW_HEADER_SIZE, RICE_TRIM, RiceValues,
};
pub use rle::{
    RLE_HEADER_SIZE, RLE_KIND_LITERAL, RLE_KIND_ZERO, RLE_MAX_RUN, RLE_MAX_RUNS,
    RLE_MIN_ZERO_RUN_EDGE, RLE_MIN_ZERO_RUN_INNER, RLE_RUN_HEADER_SIZE, compress, decompress,
};
pub use types::{
    Encoding, FLAG_COMPRESSED, FLAG_DELTA, FLAG_EARLY_EXIT, FLAG_PREDICTED, FLAG_QUANT_MASK,
    FLAG_RESERVED_MASK, Flags, MessageType, QUANT_INT4, QUANT_INT8, QUANT_NONE, QUANT_RICE,
    Quantization, TYPE_ACTIVATION, TYPE_CONTROL, TYPE_EARLY_EXIT, TYPE_KV_APPEND, TYPE_OUTPUT,
    TYPE_PREDICT, TYPE_TOKENS, TYPE_TOP_LOGITS,
};
