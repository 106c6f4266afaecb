//! `Frame`, `Limits`, and the top-level `encode` / `decode`.
//!
//! `decode` accepts a frame only if every typed reader would accept it: header, type, flags,
//! exact payload size, and the payload layout for the frame's type (decompressing it when
//! COMPRESSED). So a frame that decodes can always be read with its type's `from_frame`, and
//! `encode(&decode(bytes)?) == bytes`. Nothing here panics on any input.

use super::activation::read_activation;
use super::control::Control;
use super::error::ProtocolError;
use super::header::{HEADER_SIZE, MAGIC, RawHeader};
use super::messages::{Output, Tokens, TopLogits};
use super::types::{Flags, MessageType};

/// Size limits a receiver enforces before allocating anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, header included; also bounds a decompressed payload plus header.
    pub max_frame_bytes: u64,
    /// Largest dim0 of ACTIVATION, TOKENS and OUTPUT frames (tokens per frame).
    pub max_rows: u32,
    /// Largest dim1 of ACTIVATION (hidden size) and TOP_LOGITS (k) frames.
    pub max_cols: u32,
}

impl Limits {
    /// Default largest frame: 32 MiB (a 2048-token f32 prefill of width 4096).
    pub const DEFAULT_MAX_FRAME_BYTES: u64 = 32 << 20;
    /// Default largest dim0.
    pub const DEFAULT_MAX_ROWS: u32 = 16_384;
    /// Default largest dim1.
    pub const DEFAULT_MAX_COLS: u32 = 65_536;

    /// No limits at all: for frames this process built itself (a sender's mirror).
    pub const fn unlimited() -> Limits {
        Limits {
            max_frame_bytes: u64::MAX,
            max_rows: u32::MAX,
            max_cols: u32::MAX,
        }
    }

    /// Largest payload: `max_frame_bytes` less the header.
    pub fn max_payload_bytes(&self) -> u64 {
        self.max_frame_bytes.saturating_sub(HEADER_SIZE as u64)
    }

    /// Checks dim0 against `max_rows`.
    pub fn check_rows(&self, rows: u32) -> Result<(), ProtocolError> {
        if rows > self.max_rows {
            return Err(ProtocolError::TooManyRows {
                rows,
                max: self.max_rows,
            });
        }
        Ok(())
    }

    /// Checks dim1 against `max_cols`.
    pub fn check_cols(&self, cols: u32) -> Result<(), ProtocolError> {
        if cols > self.max_cols {
            return Err(ProtocolError::TooManyCols {
                cols,
                max: self.max_cols,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_rows: Self::DEFAULT_MAX_ROWS,
            max_cols: Self::DEFAULT_MAX_COLS,
        }
    }
}

/// One SYN1 frame: the header fields and the payload bytes exactly as on the wire (still
/// compressed when `flags.compressed`). The payload size field is `payload.len()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Message type.
    pub msg_type: MessageType,
    /// Flags.
    pub flags: Flags,
    /// seqPos: the session position modulo 2^16 (see `seq_pos_for`).
    pub seq_pos: u16,
    /// requestId: the session.
    pub request_id: u32,
    /// Shape dim0.
    pub dim0: u32,
    /// Shape dim1.
    pub dim1: u32,
    /// Payload bytes after the header.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Size of the encoded frame in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_SIZE + self.payload.len()
    }

    /// The header of this frame.
    pub fn header(&self) -> RawHeader {
        RawHeader {
            magic: MAGIC,
            msg_type: self.msg_type.code(),
            flags: self.flags.to_byte(),
            seq_pos: self.seq_pos,
            request_id: self.request_id,
            // The typed builders never exceed u32; a hand-built larger payload gets a size
            // that cannot match, so the receiver rejects it instead of misreading it.
            payload_size: u32::try_from(self.payload.len()).unwrap_or(u32::MAX),
            dim0: self.dim0,
            dim1: self.dim1,
        }
    }

    /// Checks the flags and the payload against this frame's type and shape.
    pub fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        self.flags.check_for(self.msg_type)?;
        match self.msg_type {
            MessageType::Activation => read_activation(self, limits).map(drop),
            MessageType::Output => Output::from_frame(self, limits).map(drop),
            MessageType::Tokens => Tokens::from_frame(self, limits).map(drop),
            MessageType::TopLogits => TopLogits::from_frame(self, limits).map(drop),
            MessageType::Control => Control::from_frame(self, limits).map(drop),
        }
    }
}

/// Encodes a frame: the 24-byte header followed by the payload.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.encoded_len());
    out.extend_from_slice(&frame.header().to_bytes());
    out.extend_from_slice(&frame.payload);
    out
}

/// Decodes and fully validates one frame (`bytes` must hold exactly one frame).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, ProtocolError> {
    let h = RawHeader::read(bytes).ok_or(ProtocolError::Truncated {
        needed: HEADER_SIZE,
        got: bytes.len(),
    })?;
    if h.magic != MAGIC {
        return Err(ProtocolError::BadMagic { found: h.magic });
    }
    let declared = HEADER_SIZE as u64 + u64::from(h.payload_size);
    let size = declared.max(bytes.len() as u64);
    if size > limits.max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge {
            size,
            max: limits.max_frame_bytes,
        });
    }
    let payload = &bytes[HEADER_SIZE..];
    if h.payload_size as usize != payload.len() {
        let (declared, actual) = (h.payload_size, payload.len());
        return Err(ProtocolError::PayloadSizeMismatch { declared, actual });
    }
    let msg_type = MessageType::from_code(h.msg_type)?;
    let flags = Flags::from_byte(h.flags)?;
    let frame = Frame {
        msg_type,
        flags,
        seq_pos: h.seq_pos,
        request_id: h.request_id,
        dim0: h.dim0,
        dim1: h.dim1,
        payload: payload.to_vec(),
    };
    frame.validate(limits)?;
    Ok(frame)
}
