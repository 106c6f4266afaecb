//! Audits by recomputation, part one: comparing what a node returned for a hop with the
//! coordinator's own recomputation of that hop (plain functions, no engine, no IO).
//!
//! The tolerance follows the wire encoding without hand-set constants per encoding: our own
//! row is encoded the way the node's was and decoded again, and the error that round trip
//! makes (what the encoding alone costs) is allowed twice, plus a small relative allowance
//! for engines that compute in another precision (f16 weights on a GPU, another summation
//! order). Top logits are checked against our full logits: every returned value near ours,
//! and no id left out that beats the returned ones by more than the tolerance (near-ties
//! between engines stay allowed).
//!
//! Not built yet (docs/plans/audits.md): the auditor thread that recomputes hops with the CPU
//! engine, probation and trust in the core, rollback of sessions.

use crate::coordinator::wire::WireEncoding;
use crate::protocol::{Activation, Limits, TopLogits};

/// Relative error of a hidden row allowed beyond the encoding's own (engines computing in
/// other precisions).
pub const HIDDEN_COMPUTE_TOL: f32 = 0.02;
/// Absolute and relative error of a logit allowed.
pub const LOGIT_ABS_TOL: f32 = 0.05;
pub const LOGIT_REL_TOL: f32 = 0.01;

/// Why a node's output is not what the hop computes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("the audit has {ours} rows of {cols} values, the node returned {theirs} values")]
    Shape {
        ours: usize,
        cols: usize,
        theirs: usize,
    },
    #[error(
        "row {row}: the node's hidden state is {err:.4} away from the recomputed one (L2), more than the {tol:.4} allowed; largest difference {worst:.4} at column {col}"
    )]
    Hidden {
        row: usize,
        err: f32,
        tol: f32,
        worst: f32,
        col: usize,
    },
    #[error("row {row}: token id {id} is outside the vocabulary of {vocab}")]
    Id { row: usize, id: u32, vocab: usize },
    #[error(
        "row {row}: the node gave token {id} the logit {theirs}, the recomputation {ours} (allowed {tol:.4})"
    )]
    Logit {
        row: usize,
        id: u32,
        theirs: f32,
        ours: f32,
        tol: f32,
    },
    #[error(
        "row {row}: token {id} (recomputed logit {ours}) beats every logit the node returned (lowest {lowest}) and was left out"
    )]
    Omitted {
        row: usize,
        id: u32,
        ours: f32,
        lowest: f32,
    },
}

/// `ours` (rows of `cols` values) encoded with `encoding` and decoded again: what the wire
/// alone does to it (every encoding quantizes row by row, so one frame serves all rows).
fn round_trip(ours: &[f32], cols: usize, encoding: WireEncoding) -> Option<Vec<f32>> {
    let act = Activation::new((ours.len() / cols) as u32, cols as u32, ours.to_vec()).ok()?;
    let frame = act.to_frame(0, 0, encoding.protocol(), false).ok()?;
    Activation::from_frame(&frame, &Limits::default())
        .ok()
        .map(|a| a.data)
}

/// `err <= tol`, false when either is NaN (a non-finite output never passes).
fn within(err: f32, tol: f32) -> bool {
    err <= tol
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Checks the hidden states a node returned (`theirs`, decoded, row-major) against our
/// recomputation (`ours`, `cols` wide), row by row, for a hop whose output travelled in
/// `encoding`. Non-finite values never pass.
pub fn compare_hidden(
    theirs: &[f32],
    ours: &[f32],
    cols: usize,
    encoding: WireEncoding,
) -> Result<(), Mismatch> {
    if cols == 0 || theirs.len() != ours.len() || !ours.len().is_multiple_of(cols) {
        return Err(Mismatch::Shape {
            ours: ours.len().checked_div(cols).unwrap_or(0),
            cols,
            theirs: theirs.len(),
        });
    }
    // Rows our own values cannot be encoded for (non-finite) get no allowance for the wire.
    let wire = round_trip(ours, cols, encoding).unwrap_or_else(|| ours.to_vec());
    for (row, ((t, o), w)) in theirs
        .chunks(cols)
        .zip(ours.chunks(cols))
        .zip(wire.chunks(cols))
        .enumerate()
    {
        let norm = o.iter().map(|x| x * x).sum::<f32>().sqrt();
        let tol = HIDDEN_COMPUTE_TOL * norm + 2.0 * l2(w, o) + 1e-6;
        let err = l2(t, o);
        if !within(err, tol) {
            let (col, worst) = t
                .iter()
                .zip(o)
                .map(|(x, y)| (x - y).abs())
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .expect("rows are not empty");
            return Err(Mismatch::Hidden {
                row,
                err,
                tol,
                worst,
                col,
            });
        }
    }
    Ok(())
}

/// Checks a node's top logits against our logits (`ours`: one row of `vocab` values per row
/// of `top`, in the same order).
pub fn compare_top(top: &TopLogits, ours: &[f32], vocab: usize) -> Result<(), Mismatch> {
    if vocab == 0 || ours.len() != top.rows * vocab {
        return Err(Mismatch::Shape {
            ours: ours.len().checked_div(vocab).unwrap_or(0),
            cols: vocab,
            theirs: top.rows * vocab,
        });
    }
    let tol = |v: f32| LOGIT_ABS_TOL + LOGIT_REL_TOL * v.abs();
    for row in 0..top.rows {
        let logits = &ours[row * vocab..(row + 1) * vocab];
        let entries = top.row(row);
        let mut lowest = f32::INFINITY;
        for e in entries {
            let Some(&o) = logits.get(e.id as usize) else {
                return Err(Mismatch::Id {
                    row,
                    id: e.id,
                    vocab,
                });
            };
            if !within((e.logit - o).abs(), tol(o)) {
                return Err(Mismatch::Logit {
                    row,
                    id: e.id,
                    theirs: e.logit,
                    ours: o,
                    tol: tol(o),
                });
            }
            lowest = lowest.min(e.logit);
        }
        for (id, &o) in logits.iter().enumerate() {
            if o > lowest + tol(o) && !entries.iter().any(|e| e.id as usize == id) {
                return Err(Mismatch::Omitted {
                    row,
                    id: id as u32,
                    ours: o,
                    lowest,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TopLogit;

    /// Hidden-state-like rows: mostly small values and an outlier channel.
    fn rows(n: usize, cols: usize) -> Vec<f32> {
        (0..n * cols)
            .map(|i| {
                let x = ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0;
                if i % cols == 7 { 40.0 * x } else { x }
            })
            .collect()
    }

    #[test]
    fn an_honest_row_passes_in_every_encoding_and_a_changed_one_is_caught_with_its_row() {
        let cols = 64;
        let ours = rows(3, cols);
        for enc in [WireEncoding::F32, WireEncoding::Int8, WireEncoding::Rice] {
            // An honest node: the same values (within 1e-3 relative), sent in `enc`.
            let near: Vec<f32> = ours.iter().map(|x| x * (1.0 + 1e-3)).collect();
            compare_hidden(&round_trip(&near, cols, enc).unwrap(), &ours, cols, enc)
                .unwrap_or_else(|e| panic!("{enc:?}: an honest row failed: {e}"));
            // A liar: row 1 scaled by 1.3 (the answer changes; the encoding's error does not
            // explain it).
            let mut lie = ours.clone();
            lie[cols..2 * cols].iter_mut().for_each(|x| *x *= 1.3);
            match compare_hidden(&round_trip(&lie, cols, enc).unwrap(), &ours, cols, enc) {
                Err(Mismatch::Hidden { row: 1, col: 7, .. }) => {}
                other => panic!("{enc:?}: a scaled row gave {other:?}"),
            }
        }
        let nan = vec![f32::NAN; ours.len()];
        assert!(compare_hidden(&nan, &ours, cols, WireEncoding::F32).is_err());
        assert!(matches!(
            compare_hidden(&ours[..cols], &ours, cols, WireEncoding::F32),
            Err(Mismatch::Shape { ours: 3, .. })
        ));
    }

    fn top(rows: &[&[(u32, f32)]]) -> TopLogits {
        TopLogits {
            entries: rows
                .iter()
                .flat_map(|r| r.iter().map(|&(id, logit)| TopLogit { id, logit }))
                .collect(),
            rows: rows.len(),
        }
    }

    #[test]
    fn top_logits_must_be_ours_and_leave_out_nothing_better() {
        let vocab = 6;
        let ours = [
            0.0, 5.0, 1.0, 4.99, -2.0, 0.5, // row 0: 1 and 3 nearly tie
            3.0, 0.0, 0.0, 0.0, 0.0, 7.0, // row 1
        ];
        let honest = top(&[&[(1, 5.0), (3, 4.99)], &[(5, 7.0), (0, 3.0)]]);
        compare_top(&honest, &ours, vocab).unwrap();
        // A near-tie swapped by another engine's rounding still passes.
        let tie = top(&[&[(3, 5.0), (1, 4.99)], &[(5, 7.0), (0, 3.0)]]);
        compare_top(&tie, &ours, vocab).unwrap();
        let wrong_value = top(&[&[(1, 5.0), (3, 4.99)], &[(5, 9.0), (0, 3.0)]]);
        assert!(matches!(
            compare_top(&wrong_value, &ours, vocab),
            Err(Mismatch::Logit { row: 1, id: 5, .. })
        ));
        // Promoting token 2 (logit 1.0) over 3 (4.99) with its true value: 3 was left out.
        let promoted = top(&[&[(1, 5.0), (2, 1.0)], &[(5, 7.0), (0, 3.0)]]);
        assert!(matches!(
            compare_top(&promoted, &ours, vocab),
            Err(Mismatch::Omitted { row: 0, id: 3, .. })
        ));
        let outside = top(&[&[(1, 5.0), (60000, 4.99)], &[(5, 7.0), (0, 3.0)]]);
        assert!(matches!(
            compare_top(&outside, &ours, vocab),
            Err(Mismatch::Id { id: 60000, .. })
        ));
        assert!(matches!(
            compare_top(&honest, &ours[..vocab], vocab),
            Err(Mismatch::Shape { .. })
        ));
    }
}
