//! Message types and flag bits: their wire codes and the rules for which flags a type may carry.
//!
//! Codes 0x01-0x05 come from the prototype (0x03-0x05 were reserved and never sent, so they
//! decode as errors). Codes from 0x10 up are Synapse extensions. A [`Flags`] value can only
//! hold combinations that Synapse sends: reserved bits and the prototype's unused PREDICTED and
//! EARLY_EXIT bits are rejected when parsing. Quantization value 3 (RICE) is a Synapse
//! extension (rice.rs).

use super::error::ProtocolError;

/// ACTIVATION: hidden states between shards, shape [rows, cols] (prototype).
pub const TYPE_ACTIVATION: u8 = 0x01;
/// OUTPUT: sampled token ids, u32 LE, shape [n, 1] (prototype).
pub const TYPE_OUTPUT: u8 = 0x02;
/// KV_APPEND: reserved by the prototype, never sent.
pub const TYPE_KV_APPEND: u8 = 0x03;
/// PREDICT: reserved by the prototype, never sent.
pub const TYPE_PREDICT: u8 = 0x04;
/// EARLY_EXIT: reserved by the prototype, never sent.
pub const TYPE_EARLY_EXIT: u8 = 0x05;
/// TOKENS (extension): token ids into the first shard, u32 LE, shape [n, 1].
pub const TYPE_TOKENS: u8 = 0x10;
/// TOP_LOGITS (extension): the last shard's top-k (u32 id, f32 logit) pairs, shape [1, k].
pub const TYPE_TOP_LOGITS: u8 = 0x11;
/// CONTROL (extension): one UTF-8 JSON object, shape [byte length, 1].
pub const TYPE_CONTROL: u8 = 0x12;

/// Mask of the two quantization bits (bits 0-1).
pub const FLAG_QUANT_MASK: u8 = 0b0000_0011;
/// Quantization value: none, payload is f32 LE.
pub const QUANT_NONE: u8 = 0;
/// Quantization value: int8 with one f32 scale per row.
pub const QUANT_INT8: u8 = 1;
/// Quantization value: int4 with one f32 scale for the whole tensor.
pub const QUANT_INT4: u8 = 2;
/// Quantization value (extension): RICE, entropy-coded uniform quantization, one step a row.
pub const QUANT_RICE: u8 = 3;
/// Bit 2: the payload went through the run-length stage.
pub const FLAG_COMPRESSED: u8 = 1 << 2;
/// Bit 3: PREDICTED (prototype, for the reserved PREDICT type); rejected by Synapse.
pub const FLAG_PREDICTED: u8 = 1 << 3;
/// Bit 4: EARLY_EXIT (prototype, for the reserved EARLY_EXIT type); rejected by Synapse.
pub const FLAG_EARLY_EXIT: u8 = 1 << 4;
/// Bit 5: the int8 one-row payload is a difference to the previous reconstruction.
pub const FLAG_DELTA: u8 = 1 << 5;
/// Bits 6-7: reserved, must be zero.
pub const FLAG_RESERVED_MASK: u8 = 0b1100_0000;

/// A message type Synapse sends or accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 0x01, hidden states between shards.
    Activation,
    /// 0x02, sampled token ids.
    Output,
    /// 0x10 (extension), token ids into the first shard.
    Tokens,
    /// 0x11 (extension), the last shard's top-k logits.
    TopLogits,
    /// 0x12 (extension), a JSON control object.
    Control,
}

impl MessageType {
    /// Every type, in code order.
    pub const ALL: [MessageType; 5] = [
        MessageType::Activation,
        MessageType::Output,
        MessageType::Tokens,
        MessageType::TopLogits,
        MessageType::Control,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Activation => TYPE_ACTIVATION,
            MessageType::Output => TYPE_OUTPUT,
            MessageType::Tokens => TYPE_TOKENS,
            MessageType::TopLogits => TYPE_TOP_LOGITS,
            MessageType::Control => TYPE_CONTROL,
        }
    }

    /// The name used in docs/PROTOCOL.md and the fixtures' manifest.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Activation => "ACTIVATION",
            MessageType::Output => "OUTPUT",
            MessageType::Tokens => "TOKENS",
            MessageType::TopLogits => "TOP_LOGITS",
            MessageType::Control => "CONTROL",
        }
    }

    /// Parses a wire code; reserved prototype codes and unknown codes are errors.
    pub fn from_code(code: u8) -> Result<MessageType, ProtocolError> {
        match code {
            TYPE_ACTIVATION => Ok(MessageType::Activation),
            TYPE_OUTPUT => Ok(MessageType::Output),
            TYPE_TOKENS => Ok(MessageType::Tokens),
            TYPE_TOP_LOGITS => Ok(MessageType::TopLogits),
            TYPE_CONTROL => Ok(MessageType::Control),
            TYPE_KV_APPEND => Err(ProtocolError::ReservedType {
                code,
                name: "KV_APPEND",
            }),
            TYPE_PREDICT => Err(ProtocolError::ReservedType {
                code,
                name: "PREDICT",
            }),
            TYPE_EARLY_EXIT => Err(ProtocolError::ReservedType {
                code,
                name: "EARLY_EXIT",
            }),
            _ => Err(ProtocolError::UnknownType { code }),
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), self.code())
    }
}

/// The quantization carried in flag bits 0-1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// 0: f32 LE.
    #[default]
    None,
    /// 1: int8, symmetric, one scale per row.
    Int8,
    /// 2: int4, symmetric, one scale for the tensor.
    Int4,
    /// 3 (extension): RICE, uniform step per row, Rice/exp-Golomb coded.
    Rice,
}

impl Quantization {
    /// The 2-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Quantization::None => QUANT_NONE,
            Quantization::Int8 => QUANT_INT8,
            Quantization::Int4 => QUANT_INT4,
            Quantization::Rice => QUANT_RICE,
        }
    }

    /// Name used in errors and the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
            Quantization::Int4 => "int4",
            Quantization::Rice => "rice",
        }
    }
}

/// The flags byte, restricted to the combinations Synapse understands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// Bits 0-1.
    pub quantization: Quantization,
    /// Bit 2: payload is run-length compressed.
    pub compressed: bool,
    /// Bit 5: payload is a delta (int8, one row, ACTIVATION only).
    pub delta: bool,
}

impl Flags {
    /// The flags byte.
    pub fn to_byte(self) -> u8 {
        let mut b = self.quantization.bits();
        if self.compressed {
            b |= FLAG_COMPRESSED;
        }
        if self.delta {
            b |= FLAG_DELTA;
        }
        b
    }

    /// Parses a flags byte on its own (the per-type rules are checked by [`Flags::check_for`]).
    pub fn from_byte(flags: u8) -> Result<Flags, ProtocolError> {
        if flags & FLAG_RESERVED_MASK != 0 {
            return Err(ProtocolError::ReservedFlagBits { flags });
        }
        if flags & FLAG_PREDICTED != 0 {
            return Err(ProtocolError::UnsupportedFlag {
                flag: "PREDICTED",
                flags,
            });
        }
        if flags & FLAG_EARLY_EXIT != 0 {
            return Err(ProtocolError::UnsupportedFlag {
                flag: "EARLY_EXIT",
                flags,
            });
        }
        let quantization = match flags & FLAG_QUANT_MASK {
            QUANT_NONE => Quantization::None,
            QUANT_INT8 => Quantization::Int8,
            QUANT_INT4 => Quantization::Int4,
            _ => Quantization::Rice,
        };
        Ok(Flags {
            quantization,
            compressed: flags & FLAG_COMPRESSED != 0,
            delta: flags & FLAG_DELTA != 0,
        })
    }

    /// Checks that `msg_type` may carry these flags: only ACTIVATION takes any flag, and DELTA
    /// needs int8 (the one-row shape is checked with the payload).
    pub fn check_for(self, msg_type: MessageType) -> Result<(), ProtocolError> {
        if msg_type != MessageType::Activation && self != Flags::default() {
            return Err(ProtocolError::FlagsNotAllowed {
                msg_type,
                flags: self.to_byte(),
            });
        }
        if self.delta && self.quantization != Quantization::Int8 {
            return Err(ProtocolError::DeltaNeedsInt8 {
                quantization: self.quantization.name(),
            });
        }
        Ok(())
    }
}

/// How an ACTIVATION payload is encoded (the quantization bits plus DELTA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// f32 LE, 4 bytes a value.
    F32,
    /// int8, one f32 scale per row.
    Int8,
    /// int8 difference to the previous reconstruction, one row only (see `DeltaEncoder`).
    Int8Delta,
    /// int4, one f32 scale for the whole tensor.
    Int4,
    /// RICE (extension): one f32 step per row, q values Rice/exp-Golomb coded (rice.rs).
    Rice,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Encoding; 5] = [
        Encoding::F32,
        Encoding::Int8,
        Encoding::Int8Delta,
        Encoding::Int4,
        Encoding::Rice,
    ];

    /// The flags for this encoding, with or without compression.
    pub fn flags(self, compressed: bool) -> Flags {
        let (quantization, delta) = match self {
            Encoding::F32 => (Quantization::None, false),
            Encoding::Int8 => (Quantization::Int8, false),
            Encoding::Int8Delta => (Quantization::Int8, true),
            Encoding::Int4 => (Quantization::Int4, false),
            Encoding::Rice => (Quantization::Rice, false),
        };
        Flags {
            quantization,
            compressed,
            delta,
        }
    }

    /// The encoding named by flags (already checked by [`Flags::check_for`]).
    pub fn from_flags(flags: Flags) -> Encoding {
        match (flags.quantization, flags.delta) {
            (Quantization::None, _) => Encoding::F32,
            (Quantization::Int8, false) => Encoding::Int8,
            (Quantization::Int8, true) => Encoding::Int8Delta,
            (Quantization::Int4, _) => Encoding::Int4,
            (Quantization::Rice, _) => Encoding::Rice,
        }
    }

    /// Name used in reports and the manifest: "f32", "int8", "int8-delta", "int4", "rice".
    pub fn name(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::Int8 => "int8",
            Encoding::Int8Delta => "int8-delta",
            Encoding::Int4 => "int4",
            Encoding::Rice => "rice",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_byte_parses_or_errors_and_valid_ones_round_trip() {
        for b in 0..=u8::MAX {
            if let Ok(f) = Flags::from_byte(b) {
                assert_eq!(f.to_byte(), b);
            }
        }
        assert_eq!(
            Flags::from_byte(QUANT_RICE).map(Encoding::from_flags),
            Ok(Encoding::Rice)
        );
        assert!(matches!(
            Flags::from_byte(QUANT_RICE | FLAG_DELTA)
                .and_then(|f| f.check_for(MessageType::Activation)),
            Err(ProtocolError::DeltaNeedsInt8 { .. })
        ));
        assert!(matches!(
            Flags::from_byte(0x40),
            Err(ProtocolError::ReservedFlagBits { .. })
        ));
    }

    #[test]
    fn types_round_trip_and_reserved_codes_error() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_code(t.code()).ok(), Some(t));
        }
        for code in 3..=5 {
            assert!(matches!(
                MessageType::from_code(code),
                Err(ProtocolError::ReservedType { .. })
            ));
        }
    }
}
