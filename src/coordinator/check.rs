//! Every frame a node returns is checked against the step the coordinator asked for, before it
//! is relayed to the next node or sampled: message type, rows, width (the model's hidden
//! size), the encoding and flags requested, seqPos, and for top logits the count, ids within
//! the vocabulary, no id twice, best first. The SYN1 decoder has already checked everything a
//! frame says about itself (layout, finite values); this checks what it says about the step.
//!
//! A mismatch is the sender's failed step: relayed, the next (honest) node would refuse the
//! frame and be blamed for it; sampled, an id beyond the vocabulary would be fed to the first
//! node, which would refuse it and be blamed.
//!
//! Beyond the shape, cheap plausibility checks on every frame: a logit beyond ±[`MAX_ABS_LOGIT`]
//! is absurd, and each hop's hidden states keep to the scale that hop has produced so far
//! ([`ScaleRange`]: the root mean square of every row within [`SCALE_SLACK`] times the range
//! seen, once [`SCALE_WARMUP_ROWS`] rows are known). They catch a node whose output is wildly
//! wrong (a lost GPU, garbage memory, a crude edit), not one that lies subtly: that takes
//! recomputing its work.

use super::wire::WireEncoding;
use crate::protocol::{Activation, Encoding, Frame, Limits, MessageType, ProtocolError, TopLogits};

/// Largest |logit| a node may return: real models' logits stay within a few hundred.
pub const MAX_ABS_LOGIT: f32 = 1e4;
/// Rows of hidden states a hop must have produced before their scale is checked.
pub const SCALE_WARMUP_ROWS: u32 = 4;
/// How far outside the range of row RMS a hop has produced a new row may fall, as a factor.
/// Generous: the first position's hidden states of Llama-family models are often tens of
/// times larger than the rest.
pub const SCALE_SLACK: f32 = 64.0;

/// What a hop was asked to return.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expected {
    /// Hidden states of every row of the step, `(rows, cols)`, in `encoding`.
    Hidden {
        rows: u32,
        cols: u32,
        encoding: WireEncoding,
    },
    /// The `k` best logits of each of the step's last `rows` rows over a vocabulary of
    /// `vocab` tokens.
    TopK { k: usize, rows: usize, vocab: usize },
}

/// A reply that passed its checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// An ACTIVATION frame to relay as is.
    Hidden(Frame),
    /// Top logits to sample from.
    TopK(TopLogits),
}

/// Why a node's reply does not answer the step it was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplyError {
    #[error("returned a {got} frame where the step asked for {want}")]
    Kind {
        got: &'static str,
        want: &'static str,
    },
    #[error("returned {got} rows of hidden states, the step sent {want}")]
    Rows { got: u32, want: u32 },
    #[error("returned hidden states of width {got}, the model's width is {want}")]
    Width { got: u32, want: u32 },
    #[error("returned {got} hidden states, the step asked for {want}")]
    Encoding {
        got: &'static str,
        want: &'static str,
    },
    #[error("returned flags the step did not ask for ({0})")]
    Flags(&'static str),
    #[error("returned seqPos {got}, the step's is {want}")]
    SeqPos { got: u16, want: u16 },
    #[error("returned {got} top logits a row, the step asked for {want}")]
    TopKCount { got: usize, want: usize },
    #[error("returned top logits for {got} rows, the step asked for {want}")]
    TopKRows { got: usize, want: usize },
    #[error("returned token id {id} (row {row}, entry {index}); the vocabulary has {vocab} tokens")]
    IdBeyondVocabulary {
        id: u32,
        row: usize,
        index: usize,
        vocab: usize,
    },
    #[error("returned token id {id} twice in row {row} (entries {first} and {second})")]
    DuplicateId {
        id: u32,
        row: usize,
        first: usize,
        second: usize,
    },
    #[error(
        "returned top logits out of order in row {row}: entry {index} ({logit}) is above entry {above}"
    )]
    Order {
        row: usize,
        index: usize,
        logit: f32,
        above: usize,
    },
    #[error(
        "returned an absurd logit {logit} (row {row}, entry {index}); at most ±{MAX_ABS_LOGIT}"
    )]
    AbsurdLogit {
        logit: f32,
        row: usize,
        index: usize,
    },
    #[error(
        "returned hidden states of an implausible scale: row {row} has RMS {rms:e}, this hop has produced {lo:e} to {hi:e}"
    )]
    Scale {
        row: usize,
        rms: f32,
        lo: f32,
        hi: f32,
    },
    #[error("returned a frame that does not read as its type: {0}")]
    Unreadable(#[from] ProtocolError),
}

/// The range of row RMS one hop's hidden states have shown (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScaleRange {
    rows: u32,
    lo: f32,
    hi: f32,
}

impl ScaleRange {
    /// Checks every row of `frame` (an ACTIVATION that passed [`check_reply`]) against the
    /// range, then widens the range by them; a frame that fails teaches nothing.
    pub fn check(&mut self, frame: &Frame) -> Result<(), ReplyError> {
        let act = Activation::from_frame(frame, &Limits::default())?;
        let cols = act.cols.max(1) as usize;
        let rms: Vec<f32> = act
            .data
            .chunks(cols)
            .map(|r| (r.iter().map(|x| x * x).sum::<f32>() / cols as f32).sqrt())
            .collect();
        if self.rows >= SCALE_WARMUP_ROWS {
            let (lo, hi) = (self.lo / SCALE_SLACK, self.hi * SCALE_SLACK);
            if let Some((row, &r)) = rms
                .iter()
                .enumerate()
                .find(|&(_, &r)| !(lo..=hi).contains(&r))
            {
                return Err(ReplyError::Scale {
                    row,
                    rms: r,
                    lo: self.lo,
                    hi: self.hi,
                });
            }
        }
        for &r in &rms {
            if self.rows == 0 {
                (self.lo, self.hi) = (r, r);
            }
            self.lo = self.lo.min(r);
            self.hi = self.hi.max(r);
            self.rows = self.rows.saturating_add(1);
        }
        Ok(())
    }
}

/// Checks `frame` (already decoded under the limits) against what the hop was asked for, and
/// its seqPos against `seq_pos`.
pub fn check_reply(frame: Frame, want: Expected, seq_pos: u16) -> Result<Checked, ReplyError> {
    let kind = |t: MessageType| match t {
        MessageType::Activation => "hidden-state (ACTIVATION)",
        MessageType::TopLogits => "TOP_LOGITS",
        MessageType::Tokens => "TOKENS",
        MessageType::Output => "OUTPUT",
        MessageType::Control => "CONTROL",
    };
    let want_type = match want {
        Expected::Hidden { .. } => MessageType::Activation,
        Expected::TopK { .. } => MessageType::TopLogits,
    };
    if frame.msg_type != want_type {
        return Err(ReplyError::Kind {
            got: kind(frame.msg_type),
            want: kind(want_type),
        });
    }
    if frame.seq_pos != seq_pos {
        return Err(ReplyError::SeqPos {
            got: frame.seq_pos,
            want: seq_pos,
        });
    }
    match want {
        Expected::Hidden {
            rows,
            cols,
            encoding,
        } => {
            if frame.dim0 != rows {
                return Err(ReplyError::Rows {
                    got: frame.dim0,
                    want: rows,
                });
            }
            if frame.dim1 != cols {
                return Err(ReplyError::Width {
                    got: frame.dim1,
                    want: cols,
                });
            }
            if frame.flags.delta {
                // The next node holds no reference for this hop: it could not read it.
                return Err(ReplyError::Flags("DELTA"));
            }
            // COMPRESSED is allowed: a lossless stage the decoder has fully verified.
            let got = Encoding::from_flags(frame.flags);
            if got != encoding.protocol() {
                return Err(ReplyError::Encoding {
                    got: got.name(),
                    want: encoding.protocol().name(),
                });
            }
            Ok(Checked::Hidden(frame))
        }
        Expected::TopK { k, rows, vocab } => {
            let top = TopLogits::from_frame(&frame, &Limits::default())?;
            if top.rows != rows {
                return Err(ReplyError::TopKRows {
                    got: top.rows,
                    want: rows,
                });
            }
            let want_k = k.min(vocab);
            if top.k() != want_k {
                return Err(ReplyError::TopKCount {
                    got: top.k(),
                    want: want_k,
                });
            }
            let mut seen = std::collections::HashMap::with_capacity(want_k);
            for row in 0..top.rows {
                seen.clear();
                let entries = top.row(row);
                for (index, e) in entries.iter().enumerate() {
                    if e.id as usize >= vocab {
                        return Err(ReplyError::IdBeyondVocabulary {
                            id: e.id,
                            row,
                            index,
                            vocab,
                        });
                    }
                    if let Some(first) = seen.insert(e.id, index) {
                        return Err(ReplyError::DuplicateId {
                            id: e.id,
                            row,
                            first,
                            second: index,
                        });
                    }
                    if e.logit.abs() > MAX_ABS_LOGIT {
                        return Err(ReplyError::AbsurdLogit {
                            logit: e.logit,
                            row,
                            index,
                        });
                    }
                    if index > 0 && e.logit > entries[index - 1].logit {
                        return Err(ReplyError::Order {
                            row,
                            index,
                            logit: e.logit,
                            above: index - 1,
                        });
                    }
                }
            }
            Ok(Checked::TopK(top))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Activation, TopLogit};

    const SEQ: u16 = 7;

    fn hidden(rows: u32, cols: u32, enc: Encoding) -> Frame {
        let data = (0..rows * cols).map(|i| (i % 5) as f32 - 2.0).collect();
        Activation::new(rows, cols, data)
            .unwrap()
            .to_frame(SEQ, 3, enc, false)
            .unwrap()
    }

    fn top(entries: &[(u32, f32)]) -> Frame {
        top_rows(entries, 1)
    }

    fn top_rows(entries: &[(u32, f32)], rows: usize) -> Frame {
        TopLogits {
            entries: entries
                .iter()
                .map(|&(id, logit)| TopLogit { id, logit })
                .collect(),
            rows,
        }
        .to_frame(SEQ, 3)
        .unwrap()
    }

    const H: Expected = Expected::Hidden {
        rows: 2,
        cols: 8,
        encoding: WireEncoding::Rice,
    };
    const K: Expected = Expected::TopK {
        k: 3,
        rows: 1,
        vocab: 100,
    };

    #[test]
    fn honest_replies_pass() {
        assert!(matches!(
            check_reply(hidden(2, 8, Encoding::Rice), H, SEQ),
            Ok(Checked::Hidden(_))
        ));
        let ok = check_reply(top(&[(5, 3.0), (9, 2.0), (1, 2.0)]), K, SEQ).unwrap();
        assert!(matches!(ok, Checked::TopK(t) if t.entries.len() == 3));
        // A vocabulary smaller than k: all of it.
        let small = Expected::TopK {
            k: 64,
            rows: 1,
            vocab: 2,
        };
        assert!(check_reply(top(&[(1, 1.0), (0, 0.5)]), small, SEQ).is_ok());
        // A compressed frame of the right encoding is fine (lossless).
        let c = Activation::new(2, 8, vec![0.0; 16])
            .unwrap()
            .to_frame(SEQ, 3, Encoding::F32, true)
            .unwrap();
        assert!(c.flags.compressed, "zeros compress");
        let f32_rows = Expected::Hidden {
            rows: 2,
            cols: 8,
            encoding: WireEncoding::F32,
        };
        assert!(check_reply(c, f32_rows, SEQ).is_ok());
    }

    #[test]
    fn shape_encoding_flags_and_position_must_match_the_step() {
        let e = |f: Frame, w: Expected| check_reply(f, w, SEQ).unwrap_err();
        assert_eq!(
            e(hidden(3, 8, Encoding::Rice), H),
            ReplyError::Rows { got: 3, want: 2 }
        );
        assert_eq!(
            e(hidden(2, 7, Encoding::Rice), H),
            ReplyError::Width { got: 7, want: 8 }
        );
        assert_eq!(
            e(hidden(2, 8, Encoding::F32), H),
            ReplyError::Encoding {
                got: "f32",
                want: "rice"
            }
        );
        let one = Expected::Hidden {
            rows: 1,
            cols: 8,
            encoding: WireEncoding::Int8,
        };
        let mut delta = hidden(1, 8, Encoding::Int8);
        delta.flags.delta = true;
        assert_eq!(e(delta, one), ReplyError::Flags("DELTA"));
        let mut late = hidden(2, 8, Encoding::Rice);
        late.seq_pos = 6;
        assert_eq!(e(late, H), ReplyError::SeqPos { got: 6, want: 7 });
        assert!(matches!(e(top(&[(1, 1.0)]), H), ReplyError::Kind { .. }));
        assert!(matches!(
            e(hidden(1, 3, Encoding::F32), K),
            ReplyError::Kind { .. }
        ));
    }

    #[test]
    fn top_logits_must_be_possible() {
        let e = |entries: &[(u32, f32)]| check_reply(top(entries), K, SEQ).unwrap_err();
        assert_eq!(
            e(&[(5, 3.0), (9, 2.0)]),
            ReplyError::TopKCount { got: 2, want: 3 }
        );
        for id in [100, 60_000, u32::MAX] {
            assert_eq!(
                e(&[(5, 3.0), (id, 2.0), (1, 1.0)]),
                ReplyError::IdBeyondVocabulary {
                    id,
                    row: 0,
                    index: 1,
                    vocab: 100
                }
            );
        }
        assert_eq!(
            e(&[(5, 3.0), (9, 2.0), (5, 1.0)]),
            ReplyError::DuplicateId {
                id: 5,
                row: 0,
                first: 0,
                second: 2
            }
        );
        assert_eq!(
            e(&[(5, 1.0), (9, 2.0), (4, 0.0)]),
            ReplyError::Order {
                row: 0,
                index: 1,
                logit: 2.0,
                above: 0
            }
        );
    }

    #[test]
    fn absurd_logits_and_hidden_states_far_off_their_hops_scale_are_refused() {
        assert!(matches!(
            check_reply(top(&[(5, 3e5), (9, 2.0), (1, 1.0)]), K, SEQ).unwrap_err(),
            ReplyError::AbsurdLogit {
                row: 0,
                index: 0,
                ..
            }
        ));
        let scaled = |rows: u32, s: f32| {
            let data = (0..rows * 8).map(|i| ((i % 5) as f32 - 2.0) * s).collect();
            Activation::new(rows, 8, data)
                .unwrap()
                .to_frame(SEQ, 3, Encoding::F32, false)
                .unwrap()
        };
        let mut range = ScaleRange::default();
        // Warm-up: anything goes, and is learned (scales 1 to 10).
        range.check(&scaled(2, 1.0)).unwrap();
        range.check(&scaled(2, 10.0)).unwrap();
        // Within 64x of the range: fine, even the odd large first position.
        range.check(&scaled(1, 300.0)).unwrap();
        range.check(&scaled(2, 0.05)).unwrap();
        // Far outside: refused, and not learned.
        let e = range.check(&scaled(2, 1e6)).unwrap_err();
        assert!(matches!(e, ReplyError::Scale { row: 0, .. }), "{e}");
        assert!(
            range.check(&scaled(1, 1e6)).is_err(),
            "a refused frame teaches nothing"
        );
        assert!(
            range.check(&scaled(1, 1e-7)).is_err(),
            "too small is as wrong"
        );
        range.check(&scaled(1, 2.0)).unwrap();
    }

    #[test]
    fn a_verification_step_gets_a_row_per_draft_each_checked() {
        let three = Expected::TopK {
            k: 2,
            rows: 3,
            vocab: 100,
        };
        let good = [(1, 2.0), (2, 1.0), (3, 2.0), (1, 1.0), (7, 0.5), (8, 0.5)];
        let ok = check_reply(top_rows(&good, 3), three, SEQ).unwrap();
        assert!(matches!(ok, Checked::TopK(t) if t.rows == 3 && t.row(2)[0].id == 7));
        // The same id in two rows is fine; twice in one row is not.
        let mut dup = good;
        dup[5] = (7, 0.1);
        assert_eq!(
            check_reply(top_rows(&dup, 3), three, SEQ).unwrap_err(),
            ReplyError::DuplicateId {
                id: 7,
                row: 2,
                first: 0,
                second: 1
            }
        );
        let mut far = good;
        far[3] = (100, 0.5);
        assert!(matches!(
            check_reply(top_rows(&far, 3), three, SEQ).unwrap_err(),
            ReplyError::IdBeyondVocabulary {
                row: 1,
                index: 1,
                ..
            }
        ));
        // Fewer rows than drafted: the node skipped positions.
        assert_eq!(
            check_reply(top_rows(&good[..4], 2), three, SEQ).unwrap_err(),
            ReplyError::TopKRows { got: 2, want: 3 }
        );
        assert_eq!(
            check_reply(top(&[(1, 2.0), (2, 1.0)]), three, SEQ).unwrap_err(),
            ReplyError::TopKRows { got: 1, want: 3 }
        );
    }
}
