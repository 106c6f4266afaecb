//! Everything that can be wrong with a SYN1 frame, or with a message that cannot be encoded.
//!
//! Each variant names the field, offset or value at fault, because the coordinator closes a
//! connection with this text as the reason.

use super::types::MessageType;

/// A malformed frame, or a message that cannot be expressed in SYN1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// Fewer bytes than the 24-byte header.
    #[error("frame truncated: {got} bytes, the header alone needs {needed}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The first four bytes are not "SYN1".
    #[error("bad magic 0x{found:08X}, expected 0x53594E31 (\"SYN1\")")]
    BadMagic {
        /// Magic read, big-endian.
        found: u32,
    },
    /// 0x03-0x05: reserved by the prototype and never sent.
    #[error("message type 0x{code:02X} ({name}) is a reserved type, never sent")]
    ReservedType {
        /// Type byte.
        code: u8,
        /// Prototype name of the reserved type.
        name: &'static str,
    },
    /// A type byte nobody defined.
    #[error("unknown message type 0x{code:02X}")]
    UnknownType {
        /// Type byte.
        code: u8,
    },
    /// Bits 6-7 set.
    #[error("flags 0x{flags:02X} set reserved bits 6-7")]
    ReservedFlagBits {
        /// Flags byte.
        flags: u8,
    },
    /// PREDICTED or EARLY_EXIT set: defined by the prototype for types that were never sent.
    #[error("flag {flag} (in flags 0x{flags:02X}) is not supported")]
    UnsupportedFlag {
        /// Flag name.
        flag: &'static str,
        /// Flags byte.
        flags: u8,
    },
    /// A non-ACTIVATION frame with flags set.
    #[error("{msg_type} takes no flags, got 0x{flags:02X}")]
    FlagsNotAllowed {
        /// Frame type.
        msg_type: MessageType,
        /// Flags byte.
        flags: u8,
    },
    /// DELTA with a quantization other than int8.
    #[error("DELTA needs int8 quantization, got {quantization}")]
    DeltaNeedsInt8 {
        /// Quantization found.
        quantization: &'static str,
    },
    /// DELTA on a frame with more than one row.
    #[error("DELTA needs exactly one row, got {rows}")]
    DeltaNeedsOneRow {
        /// dim0.
        rows: u32,
    },
    /// The frame is bigger than [`super::Limits::max_frame_bytes`].
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Size in bytes (whole frame, or the decompressed payload plus header).
        size: u64,
        /// Limit.
        max: u64,
    },
    /// The header's payload size differs from the bytes after the header.
    #[error("header says {declared} payload bytes, {actual} follow the header")]
    PayloadSizeMismatch {
        /// From the header.
        declared: u32,
        /// Actually present.
        actual: usize,
    },
    /// A shape that this type does not allow (zero dims, wrong fixed dim).
    #[error("{msg_type}: bad shape [{dim0}, {dim1}]: {reason}")]
    BadShape {
        /// Frame type.
        msg_type: MessageType,
        /// dim0.
        dim0: u32,
        /// dim1.
        dim1: u32,
        /// What rule was broken.
        reason: &'static str,
    },
    /// dim0 (rows, tokens) above [`super::Limits::max_rows`].
    #[error("{rows} rows exceed the limit of {max}")]
    TooManyRows {
        /// Rows.
        rows: u32,
        /// Limit.
        max: u32,
    },
    /// dim1 (cols, k) above [`super::Limits::max_cols`].
    #[error("{cols} columns exceed the limit of {max}")]
    TooManyCols {
        /// Columns.
        cols: u32,
        /// Limit.
        max: u32,
    },
    /// The (decompressed) payload size does not match the layout for the frame's shape.
    #[error("{layout} payload for shape [{rows}, {cols}] must be {expected} bytes, got {actual}")]
    LayoutSizeMismatch {
        /// Layout name.
        layout: &'static str,
        /// dim0.
        rows: u32,
        /// dim1.
        cols: u32,
        /// Expected byte count.
        expected: u64,
        /// Actual byte count.
        actual: usize,
    },
    /// The int8 several-row trailer differs from dim0.
    #[error("int8 rows trailer says {trailer}, dim0 is {dim0}")]
    RowsTrailerMismatch {
        /// u16 trailer.
        trailer: u16,
        /// dim0.
        dim0: u32,
    },
    /// The int4 count trailer differs from dim0 * dim1.
    #[error("int4 count trailer says {trailer}, shape holds {expected} values")]
    CountTrailerMismatch {
        /// u32 trailer.
        trailer: u32,
        /// dim0 * dim1.
        expected: u64,
    },
    /// A scale that is not finite and positive.
    #[error("scale {index} is {scale}, must be finite and positive")]
    BadScale {
        /// Scale index (row for int8, 0 for int4).
        index: usize,
        /// Value read.
        scale: f32,
    },
    /// A NaN or infinite value (f32 payload, logit, input to quantize, or a reconstruction).
    #[error("value {index} is not finite ({value})")]
    NonFiniteValue {
        /// Element index.
        index: usize,
        /// Value.
        value: f32,
    },
    /// int8 value -128: symmetric quantization only produces [-127, 127].
    #[error("int8 value {index} is -128, outside [-127, 127]")]
    Int8OutOfRange {
        /// Element index.
        index: usize,
    },
    /// int4 stored nibble 0 (q = -8): outside [-7, 7].
    #[error("int4 value {index} is stored as nibble 0 (q = -8), outside [-7, 7]")]
    Int4OutOfRange {
        /// Element index.
        index: usize,
    },
    /// An odd int4 count whose unused high nibble is not 0.
    #[error("int4 padding nibble is {nibble}, must be 0")]
    Int4Padding {
        /// Nibble found.
        nibble: u8,
    },
    /// RICE: the payload is shorter than `rows` row headers plus one bit a value.
    #[error("rice payload for shape [{rows}, {cols}] needs at least {min} bytes, got {actual}")]
    RiceTooShort {
        /// dim0.
        rows: u32,
        /// dim1.
        cols: u32,
        /// Smallest possible payload.
        min: u64,
        /// Actual byte count.
        actual: usize,
    },
    /// RICE: a row's codes run past the end of the payload.
    #[error("rice row {row} is truncated ({at} payload bytes)")]
    RiceTruncated {
        /// Row.
        row: u32,
        /// Payload size.
        at: usize,
    },
    /// RICE: a Rice parameter above 15.
    #[error("rice row {row} has parameter k = {k}, at most 15")]
    RiceBadK {
        /// Row.
        row: u32,
        /// k read.
        k: u8,
    },
    /// RICE: a code for |q| above 2^20 (or an unbounded escape prefix).
    #[error("rice value at row {row}, column {col} exceeds |q| <= 2^20")]
    RiceValueTooLarge {
        /// Row.
        row: u32,
        /// Column.
        col: u32,
    },
    /// RICE: a row's padding bits are not zero.
    #[error("rice row {row} has nonzero padding bits")]
    RicePadding {
        /// Row.
        row: u32,
    },
    /// RICE: bytes after the last row.
    #[error("{count} bytes follow the last rice row")]
    RiceTrailingBytes {
        /// Extra bytes.
        count: usize,
    },
    /// Run-length stage: fewer bytes than a header or run needs.
    #[error("compressed payload truncated at byte {at}")]
    RleTruncated {
        /// Offset inside the payload.
        at: usize,
    },
    /// Run-length stage: the declared original length is above the limit.
    #[error("compressed payload declares {len} original bytes, limit is {max}")]
    RleTooLarge {
        /// Declared original length.
        len: u32,
        /// Limit.
        max: u64,
    },
    /// Run-length stage: a run kind other than 0 or 1.
    #[error("compressed run {run} has kind {kind}, must be 0 (zeros) or 1 (literal)")]
    RleBadKind {
        /// Run index.
        run: usize,
        /// Kind byte.
        kind: u8,
    },
    /// Run-length stage: a run of length 0.
    #[error("compressed run {run} has length 0")]
    RleEmptyRun {
        /// Run index.
        run: usize,
    },
    /// Run-length stage: the runs produce more or fewer bytes than declared.
    #[error("compressed runs produce {produced} bytes, original length is {original}")]
    RleLengthMismatch {
        /// Bytes produced (so far, when it overflowed).
        produced: u64,
        /// Declared original length.
        original: u32,
    },
    /// Run-length stage: bytes left after the declared number of runs.
    #[error("{count} bytes follow the last compressed run")]
    RleTrailingBytes {
        /// Extra bytes.
        count: usize,
    },
    /// Token id count differs from dim0 (TOKENS, OUTPUT).
    #[error("{msg_type}: {count} token ids in the payload, dim0 is {dim0}")]
    TokenCountMismatch {
        /// Frame type.
        msg_type: MessageType,
        /// Ids present.
        count: usize,
        /// dim0.
        dim0: u32,
    },
    /// CONTROL payload is not UTF-8.
    #[error("CONTROL payload is not UTF-8 (at byte {at})")]
    InvalidUtf8 {
        /// First invalid byte.
        at: usize,
    },
    /// CONTROL payload is not JSON.
    #[error("CONTROL payload is not valid JSON: {reason}")]
    InvalidJson {
        /// serde_json's message.
        reason: String,
    },
    /// CONTROL payload is JSON but not an object.
    #[error("CONTROL payload must be a JSON object, got {kind}")]
    JsonNotObject {
        /// JSON kind found.
        kind: &'static str,
    },
    /// A well-formed CONTROL object that is not a known control message.
    #[error("CONTROL object is not a known control message: {reason}")]
    UnknownControl {
        /// serde_json's message.
        reason: String,
    },
    /// The frame is of another type than the reader expects.
    #[error("expected a {expected} frame, got {got}")]
    WrongType {
        /// Expected type.
        expected: MessageType,
        /// Actual type.
        got: MessageType,
    },
    /// A DELTA frame arrived with no reference (no keyframe yet).
    #[error("DELTA frame without a reference: a keyframe must come first")]
    DeltaWithoutReference,
    /// A DELTA frame whose width differs from the reference row.
    #[error("DELTA frame has {got} columns, the reference row has {expected}")]
    DeltaWidthMismatch {
        /// Reference width.
        expected: usize,
        /// Frame width.
        got: u32,
    },
    /// `Activation::to_frame` asked for Int8Delta: deltas come from a `DeltaEncoder`.
    #[error("Int8Delta frames are produced by a DeltaEncoder, which holds the reference")]
    DeltaNeedsEncoder,
    /// Building a message whose data length differs from its shape.
    #[error("data has {len} values, shape [{rows}, {cols}] needs {expected}")]
    DataLengthMismatch {
        /// Rows.
        rows: u32,
        /// Columns.
        cols: u32,
        /// Values needed.
        expected: u64,
        /// Values given.
        len: usize,
    },
}
