//! The CPU engine's matrix product over a [`Matrix`] in any storage type:
//! `out (T, N) = x (T, K) @ w (N, K)^T + bias (N)`.
//!
//! f16 matrices go to [`ops::matmul`]. Block matrices are read as blocks: rayon splits the
//! output rows into tasks; for a few tokens (decode, and speculative verification steps of up
//! to [`FUSED_MAX_T`] tokens) each row is a fused block dot product ([`blocks::dot_row`]) per
//! token that decodes the weights in registers, so a token's result is bit for bit the same
//! whether it came alone or with drafts; for more tokens (prefill) each row is decoded once
//! into a `K`-long scratch row and used for every token. No copy of the matrix is ever made in
//! another type.

use half::f16;
use rayon::prelude::*;

use super::blocks;
use super::ops;
use crate::engine::weights::{Matrix, Stored};

/// Weight rows per rayon task.
const ROWS_PER_TASK: usize = 32;
/// Most tokens of a step that take the fused per-token path.
pub const FUSED_MAX_T: usize = 16;

/// `out (T, N) = x (T, K) @ w (N, K)^T + bias (N)` with `N = w.rows`, `K = w.cols`.
pub fn matmul(out: &mut [f32], x: &[f32], w: &Matrix, bias: Option<&[f16]>, t: usize) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), t * k, "input is not (T, K)");
    assert_eq!(out.len(), t * n, "output is not (T, N)");
    let (ty, bytes): (_, &[u8]) = match &w.data {
        Stored::F16(v) => return ops::matmul(out, x, v, bias, t, k),
        Stored::F32(v) => (splitter::TensorType::F32, bytemuck_f32(v)),
        Stored::Blocks { ty, bytes } => (*ty, bytes.as_slice()),
    };
    let rb = ty.row_bytes(k);
    assert_eq!(bytes.len(), n * rb, "weight is not (N, K) of {ty}");
    // Block sums of each token's x for the Q4 offset terms, used by the fused path: T x (K / 32).
    let fused = t <= FUSED_MAX_T && ty.is_block();
    let sums: Vec<Vec<f32>> = if fused {
        x.chunks_exact(k).map(blocks::block_sums).collect()
    } else {
        Vec::new()
    };
    let avx2 = blocks::has_avx2();
    // One task's results: (rows, T).
    let parts: Vec<Vec<f32>> = bytes
        .par_chunks(ROWS_PER_TASK * rb)
        .map(|rows| {
            let nrows = rows.len() / rb;
            let mut acc = vec![0f32; nrows * t]; // (rows, T)
            if fused {
                for (r, row) in rows.chunks_exact(rb).enumerate() {
                    for (ti, s) in sums.iter().enumerate() {
                        let xt = &x[ti * k..(ti + 1) * k];
                        acc[r * t + ti] = blocks::dot_row(ty, row, xt, s, avx2);
                    }
                }
            } else {
                let mut wrow = vec![0f32; k]; // (K)
                for (r, row) in rows.chunks_exact(rb).enumerate() {
                    blocks::decode_row(ty, row, &mut wrow);
                    for ti in 0..t {
                        acc[r * t + ti] = ops::dot(&wrow, &x[ti * k..(ti + 1) * k]);
                    }
                }
            }
            acc
        })
        .collect();
    ops::scatter_rows(out, &parts, bias, t, n, ROWS_PER_TASK);
}

/// The little-endian bytes of f32 values (x86-64 and aarch64 are little-endian; the f32 path
/// decodes with `from_le_bytes`).
fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: any f32 slice is a valid byte slice of four times its length, same lifetime.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitter::TensorType;
    use splitter::quantize::quantize;

    /// Max |a - b| and where.
    fn max_err(a: &[f32], b: &[f32]) -> (f32, usize) {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .enumerate()
            .fold((0.0, 0), |m, (i, e)| if e > m.0 { (e, i) } else { m })
    }

    #[test]
    fn block_products_match_the_dequantized_reference_for_one_and_many_tokens() {
        let (n, k) = (70, 96);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.3)
            .collect();
        let bias: Vec<f16> = (0..n).map(|i| f16::from_f32(i as f32 / 64.0)).collect();
        for t in [1, 5] {
            let x: Vec<f32> = (0..t * k)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
                .collect();
            for ty in [
                TensorType::Q8_0,
                TensorType::Q4_0,
                TensorType::Q4_1,
                TensorType::F32,
            ] {
                let mut q = Vec::new();
                quantize(ty, &w, &mut q).unwrap();
                let mut deq = vec![0f32; n * k];
                splitter::quant::dequantize(ty.ggml(), &q, &mut deq).unwrap();
                let m = match ty {
                    TensorType::F32 => Matrix {
                        rows: n,
                        cols: k,
                        data: Stored::F32(w.clone()),
                    },
                    _ => Matrix {
                        rows: n,
                        cols: k,
                        data: Stored::Blocks { ty, bytes: q },
                    },
                };
                let mut got = vec![0f32; t * n];
                matmul(&mut got, &x, &m, Some(&bias), t);
                let mut want = vec![0f32; t * n];
                for ti in 0..t {
                    for r in 0..n {
                        let s: f64 = (0..k)
                            .map(|j| deq[r * k + j] as f64 * x[ti * k + j] as f64)
                            .sum();
                        want[ti * n + r] = s as f32 + bias[r].to_f32();
                    }
                }
                let (e, at) = max_err(&got, &want);
                assert!(
                    e < 1e-4,
                    "{ty} T={t}: max error {e:e} at token {}, row {}",
                    at / n,
                    at % n
                );
            }
        }
    }
}

#[cfg(test)]
mod kquant_tests {
    use super::*;
    use splitter::TensorType;

    /// Deterministic super-blocks with small finite f16 scales at `halves`.
    fn blocks(n: usize, size: usize, halves: &[usize]) -> Vec<u8> {
        let mut s = 7u32;
        let mut out: Vec<u8> = (0..n * size)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 24) as u8
            })
            .collect();
        for (i, b) in out.chunks_exact_mut(size).enumerate() {
            for &at in halves {
                let v = f16::from_f32(0.002 + 0.0005 * (i % 7) as f32);
                b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn k_quant_products_match_the_dequantized_reference() {
        let (n, k) = (40, 512);
        for (ty, halves) in [
            (TensorType::Q4_K, &[0usize, 2][..]),
            (TensorType::Q6_K, &[208][..]),
        ] {
            let bytes = blocks(n * k / 256, ty.block_bytes(), halves);
            let mut deq = vec![0f32; n * k];
            splitter::quant::dequantize(ty.ggml(), &bytes, &mut deq).unwrap();
            let m = Matrix {
                rows: n,
                cols: k,
                data: Stored::Blocks { ty, bytes },
            };
            for t in [1, 3] {
                let x: Vec<f32> = (0..t * k)
                    .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
                    .collect();
                let mut got = vec![0f32; t * n];
                matmul(&mut got, &x, &m, None, t);
                let (mut worst, mut at) = (0f32, 0);
                for (i, g) in got.iter().enumerate() {
                    let (ti, r) = (i / n, i % n);
                    let want: f64 = (0..k)
                        .map(|j| deq[r * k + j] as f64 * x[ti * k + j] as f64)
                        .sum();
                    let e = (*g as f64 - want).abs() as f32;
                    if e > worst {
                        (worst, at) = (e, i);
                    }
                }
                assert!(
                    worst < 1e-3,
                    "{ty} T={t}: max error {worst:e} at token {}, row {}",
                    at / n,
                    at % n
                );
            }
        }
    }
}
