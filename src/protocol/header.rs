//! The 24-byte SYN1 header: offsets, sizes and the raw read/write of its fields.
//!
//! Byte order is fixed by the prototype and must never change: the magic is big-endian (so the
//! first four bytes spell "SYN1"), every other multi-byte field is little-endian. This file
//! only moves bytes; what the type and flag values mean is checked in `types.rs` and
//! `frame.rs`.

/// The magic number, read big-endian from the first four bytes ("SYN1").
pub const MAGIC: u32 = 0x5359_4E31;
/// The magic as it appears on the wire.
pub const MAGIC_BYTES: [u8; 4] = MAGIC.to_be_bytes();
/// Size of the fixed header in bytes; the payload starts right after it.
pub const HEADER_SIZE: usize = 24;

/// Offset of the big-endian magic (4 bytes).
pub const OFFSET_MAGIC: usize = 0;
/// Offset of the message type (1 byte).
pub const OFFSET_TYPE: usize = 4;
/// Offset of the flags (1 byte).
pub const OFFSET_FLAGS: usize = 5;
/// Offset of seqPos (u16 LE).
pub const OFFSET_SEQ_POS: usize = 6;
/// Offset of requestId (u32 LE).
pub const OFFSET_REQUEST_ID: usize = 8;
/// Offset of the payload size in bytes (u32 LE), counting the bytes after the header.
pub const OFFSET_PAYLOAD_SIZE: usize = 12;
/// Offset of shape dim0 (u32 LE): rows, i.e. tokens, for activations.
pub const OFFSET_DIM0: usize = 16;
/// Offset of shape dim1 (u32 LE): columns, i.e. the hidden size, for activations.
pub const OFFSET_DIM1: usize = 20;

/// The header fields exactly as they sit on the wire, before any meaning is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// Magic as read (big-endian); valid frames carry [`MAGIC`].
    pub magic: u32,
    /// Message type byte.
    pub msg_type: u8,
    /// Flags byte.
    pub flags: u8,
    /// seqPos (u16; see docs/PROTOCOL.md for the modulo-2^16 rule).
    pub seq_pos: u16,
    /// requestId: the session this frame belongs to.
    pub request_id: u32,
    /// Number of payload bytes after the header.
    pub payload_size: u32,
    /// Shape dim0.
    pub dim0: u32,
    /// Shape dim1.
    pub dim1: u32,
}

impl RawHeader {
    /// Reads the header from the first [`HEADER_SIZE`] bytes; `None` when fewer are given.
    pub fn read(bytes: &[u8]) -> Option<RawHeader> {
        let h: &[u8; HEADER_SIZE] = bytes.get(..HEADER_SIZE)?.try_into().ok()?;
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        Some(RawHeader {
            magic: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            msg_type: h[OFFSET_TYPE],
            flags: h[OFFSET_FLAGS],
            seq_pos: u16_at(OFFSET_SEQ_POS),
            request_id: u32_at(OFFSET_REQUEST_ID),
            payload_size: u32_at(OFFSET_PAYLOAD_SIZE),
            dim0: u32_at(OFFSET_DIM0),
            dim1: u32_at(OFFSET_DIM1),
        })
    }

    /// The 24 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        h[OFFSET_MAGIC..OFFSET_MAGIC + 4].copy_from_slice(&self.magic.to_be_bytes());
        h[OFFSET_TYPE] = self.msg_type;
        h[OFFSET_FLAGS] = self.flags;
        h[OFFSET_SEQ_POS..OFFSET_SEQ_POS + 2].copy_from_slice(&self.seq_pos.to_le_bytes());
        h[OFFSET_REQUEST_ID..OFFSET_REQUEST_ID + 4].copy_from_slice(&self.request_id.to_le_bytes());
        h[OFFSET_PAYLOAD_SIZE..OFFSET_PAYLOAD_SIZE + 4]
            .copy_from_slice(&self.payload_size.to_le_bytes());
        h[OFFSET_DIM0..OFFSET_DIM0 + 4].copy_from_slice(&self.dim0.to_le_bytes());
        h[OFFSET_DIM1..OFFSET_DIM1 + 4].copy_from_slice(&self.dim1.to_le_bytes());
        h
    }
}

/// seqPos as written on the wire for a sequence length: the low 16 bits.
///
/// The session state carries the real position; seqPos is only a check, compared modulo 2^16
/// (see [`seq_pos_matches`]), so sessions longer than 65535 tokens still work.
pub fn seq_pos_for(position: u64) -> u16 {
    (position & 0xFFFF) as u16
}

/// Whether a received seqPos agrees with the session's real position (compared modulo 2^16).
pub fn seq_pos_matches(seq_pos: u16, position: u64) -> bool {
    seq_pos == seq_pos_for(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_magic_spells_syn1() {
        let h = RawHeader {
            magic: MAGIC,
            msg_type: 1,
            flags: 0x21,
            seq_pos: 0x0102,
            request_id: 0x0A0B_0C0D,
            payload_size: 7,
            dim0: 1,
            dim1: 768,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], b"SYN1");
        assert_eq!(&b[6..8], &[0x02, 0x01]);
        assert_eq!(RawHeader::read(&b), Some(h));
        assert_eq!(RawHeader::read(&b[..23]), None);
    }

    #[test]
    fn seq_pos_wraps_modulo_2_16() {
        assert_eq!(seq_pos_for(65_535), 65_535);
        assert_eq!(seq_pos_for(65_536), 0);
        assert!(seq_pos_matches(4, 65_540));
        assert!(!seq_pos_matches(4, 65_541));
    }
}
