//! Token-id and logit messages: OUTPUT (prototype), TOKENS and TOP_LOGITS (extensions).
//!
//! None of them takes flags. OUTPUT and TOKENS carry `n >= 1` u32 LE ids with shape [n, 1]
//! (n bounded by `Limits::max_rows`); TOKENS' seqPos follows ACTIVATION's rule (sequence
//! length after the step). TOP_LOGITS carries, for each of the step's last `r >= 1` positions
//! (earliest first), k >= 1 `(u32 id, f32 logit)` LE pairs with shape [r, k] (r bounded by
//! `Limits::max_rows`, k by `Limits::max_cols`); r is 1 except for a speculative verification
//! step, which asks for a row per drafted token. Logits must be finite.

use super::error::ProtocolError;
use super::frame::{Frame, Limits};
use super::types::{Flags, MessageType};

/// Bytes of one token id.
pub const TOKEN_ID_SIZE: usize = 4;
/// Bytes of one TOP_LOGITS entry: u32 id then f32 logit.
pub const TOP_LOGIT_ENTRY_SIZE: usize = 8;

/// TOKENS (0x10): token ids fed into the first shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids (at least one).
    pub ids: Vec<u32>,
}

/// OUTPUT (0x02): sampled token ids (the prototype's last-node reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Token ids (at least one).
    pub ids: Vec<u32>,
}

/// One entry of a TOP_LOGITS frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopLogit {
    /// Token id.
    pub id: u32,
    /// Its logit (finite).
    pub logit: f32,
}

/// TOP_LOGITS (0x11): the last shard's top-k for each of the step's last `rows` positions,
/// each row sent best first.
#[derive(Clone, Debug, PartialEq)]
pub struct TopLogits {
    /// `rows` runs of `k` entries (at least one row of at least one entry), earliest row first.
    pub entries: Vec<TopLogit>,
    /// Rows (positions) the entries cover.
    pub rows: usize,
}

impl TopLogits {
    /// One row of entries: what a normal step returns.
    pub fn one(entries: Vec<TopLogit>) -> TopLogits {
        TopLogits { entries, rows: 1 }
    }

    /// Entries per row.
    pub fn k(&self) -> usize {
        self.entries.len() / self.rows.max(1)
    }

    /// Row `i`'s entries (0 = the earliest position asked for).
    pub fn row(&self, i: usize) -> &[TopLogit] {
        let k = self.k();
        &self.entries[i * k..(i + 1) * k]
    }
}

macro_rules! id_message {
    ($ty:ident, $msg:expr) => {
        impl $ty {
            /// Builds the frame; an empty id list is an error.
            pub fn to_frame(&self, seq_pos: u16, request_id: u32) -> Result<Frame, ProtocolError> {
                ids_frame($msg, &self.ids, seq_pos, request_id)
            }

            /// Reads and validates a frame of this type.
            pub fn from_frame(frame: &Frame, limits: &Limits) -> Result<$ty, ProtocolError> {
                Ok($ty {
                    ids: read_ids(frame, $msg, limits)?,
                })
            }
        }
    };
}
id_message!(Tokens, MessageType::Tokens);
id_message!(Output, MessageType::Output);

fn bad_shape(msg_type: MessageType, dim0: u32, dim1: u32, reason: &'static str) -> ProtocolError {
    ProtocolError::BadShape {
        msg_type,
        dim0,
        dim1,
        reason,
    }
}

fn ids_frame(
    msg_type: MessageType,
    ids: &[u32],
    seq_pos: u16,
    request_id: u32,
) -> Result<Frame, ProtocolError> {
    let n =
        u32::try_from(ids.len()).map_err(|_| bad_shape(msg_type, u32::MAX, 1, "too many ids"))?;
    if n == 0 {
        return Err(bad_shape(msg_type, 0, 1, "at least one token id"));
    }
    Ok(Frame {
        msg_type,
        flags: Flags::default(),
        seq_pos,
        request_id,
        dim0: n,
        dim1: 1,
        payload: ids.iter().flat_map(|id| id.to_le_bytes()).collect(),
    })
}

fn check_type(frame: &Frame, expected: MessageType) -> Result<(), ProtocolError> {
    if frame.msg_type != expected {
        return Err(ProtocolError::WrongType {
            expected,
            got: frame.msg_type,
        });
    }
    frame.flags.check_for(expected)
}

fn read_ids(
    frame: &Frame,
    msg_type: MessageType,
    limits: &Limits,
) -> Result<Vec<u32>, ProtocolError> {
    check_type(frame, msg_type)?;
    let (dim0, dim1) = (frame.dim0, frame.dim1);
    if dim1 != 1 || dim0 == 0 {
        return Err(bad_shape(
            msg_type,
            dim0,
            dim1,
            "must be [n, 1] with n >= 1",
        ));
    }
    limits.check_rows(dim0)?;
    let p = &frame.payload;
    if !p.len().is_multiple_of(TOKEN_ID_SIZE) {
        let expected = u64::from(dim0) * TOKEN_ID_SIZE as u64;
        let layout = "u32 token ids";
        return Err(ProtocolError::LayoutSizeMismatch {
            layout,
            rows: dim0,
            cols: dim1,
            expected,
            actual: p.len(),
        });
    }
    let count = p.len() / TOKEN_ID_SIZE;
    if count != dim0 as usize {
        return Err(ProtocolError::TokenCountMismatch {
            msg_type,
            count,
            dim0,
        });
    }
    Ok(p.chunks_exact(TOKEN_ID_SIZE)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl TopLogits {
    /// Builds the frame; no entries, or a non-finite logit, is an error.
    pub fn to_frame(&self, seq_pos: u16, request_id: u32) -> Result<Frame, ProtocolError> {
        let t = MessageType::TopLogits;
        let rows =
            u32::try_from(self.rows).map_err(|_| bad_shape(t, u32::MAX, 0, "too many rows"))?;
        let n = self.entries.len();
        if rows == 0 || n == 0 || !n.is_multiple_of(self.rows) {
            return Err(bad_shape(
                t,
                rows,
                n as u32,
                "at least one row of at least one entry, every row of the same k",
            ));
        }
        let k = u32::try_from(n / self.rows)
            .map_err(|_| bad_shape(t, rows, u32::MAX, "too many entries"))?;
        if let Some(index) = self.entries.iter().position(|e| !e.logit.is_finite()) {
            return Err(ProtocolError::NonFiniteValue {
                index,
                value: self.entries[index].logit,
            });
        }
        let payload = self
            .entries
            .iter()
            .flat_map(|e| e.id.to_le_bytes().into_iter().chain(e.logit.to_le_bytes()))
            .collect();
        Ok(Frame {
            msg_type: t,
            flags: Flags::default(),
            seq_pos,
            request_id,
            dim0: rows,
            dim1: k,
            payload,
        })
    }

    /// Reads and validates a TOP_LOGITS frame.
    pub fn from_frame(frame: &Frame, limits: &Limits) -> Result<TopLogits, ProtocolError> {
        let t = MessageType::TopLogits;
        check_type(frame, t)?;
        let (dim0, dim1) = (frame.dim0, frame.dim1);
        if dim0 == 0 || dim1 == 0 {
            return Err(bad_shape(t, dim0, dim1, "must be [r, k] with r, k >= 1"));
        }
        limits.check_rows(dim0)?;
        limits.check_cols(dim1)?;
        let expected = u64::from(dim0) * u64::from(dim1) * TOP_LOGIT_ENTRY_SIZE as u64;
        if frame.payload.len() as u64 != expected {
            let layout = "top-k (u32 id, f32 logit)";
            let actual = frame.payload.len();
            return Err(ProtocolError::LayoutSizeMismatch {
                layout,
                rows: dim0,
                cols: dim1,
                expected,
                actual,
            });
        }
        let mut entries = Vec::with_capacity(dim0 as usize * dim1 as usize);
        for (index, c) in frame.payload.chunks_exact(TOP_LOGIT_ENTRY_SIZE).enumerate() {
            let id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let logit = f32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            if !logit.is_finite() {
                return Err(ProtocolError::NonFiniteValue {
                    index,
                    value: logit,
                });
            }
            entries.push(TopLogit { id, logit });
        }
        Ok(TopLogits {
            entries,
            rows: dim0 as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_logits_round_trip_and_count_is_checked() {
        let l = Limits::default();
        let f = Tokens { ids: vec![1, 2, 3] }.to_frame(3, 1).unwrap();
        assert_eq!(Tokens::from_frame(&f, &l).unwrap().ids, vec![1, 2, 3]);
        assert!(matches!(
            Output::from_frame(&f, &l),
            Err(ProtocolError::WrongType { .. })
        ));
        let mut bad = f.clone();
        bad.dim0 = 2;
        assert!(matches!(
            Tokens::from_frame(&bad, &l),
            Err(ProtocolError::TokenCountMismatch { count: 3, .. })
        ));
        let top = TopLogits::one(vec![TopLogit { id: 7, logit: 1.5 }]);
        let f = top.to_frame(4, 1).unwrap();
        assert_eq!(TopLogits::from_frame(&f, &l).unwrap(), top);
        let two = TopLogits {
            entries: (0..6).map(|id| TopLogit { id, logit: 0.5 }).collect(),
            rows: 2,
        };
        let f = two.to_frame(9, 1).unwrap();
        assert_eq!((f.dim0, f.dim1), (2, 3));
        let back = TopLogits::from_frame(&f, &l).unwrap();
        assert_eq!((back.k(), back.row(1)[0].id, back.row(1)[2].id), (3, 3, 5));
        let ragged = TopLogits {
            entries: two.entries[..5].to_vec(),
            rows: 2,
        };
        assert!(ragged.to_frame(9, 1).is_err(), "rows of unequal k");
        assert!(Tokens { ids: vec![] }.to_frame(0, 0).is_err());
    }
}
