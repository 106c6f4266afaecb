//! GGML block kernels of the CPU engine: decoding one row of Q8_0/Q4_0/Q4_1 blocks (and Q4_K,
//! Q6_K super-blocks, see [`kquants`]), and the dot product of such a row with an f32 vector
//! that decodes each 32-value block in registers and never writes the decoded weights anywhere
//! (K-quants: one 256-value super-block at a time through a stack buffer).
//!
//! Layouts (ggml-common.h), all little-endian:
//! - Q8_0, 34 bytes: f16 `d`, 32 × i8 `q`; `w = q * d`.
//! - Q4_0, 18 bytes: f16 `d`, 16 bytes whose low nibbles are elements 0-15 and high nibbles
//!   16-31; `w = (q - 8) * d`.
//! - Q4_1, 20 bytes: f16 `d`, f16 `m`, nibbles as Q4_0; `w = q * d + m`.
//!
//! The dot products accumulate in f32 over eight lanes per block, written so the compiler can
//! vectorise them; on x86-64 with AVX2, FMA and F16C, intrinsics kernels are chosen at run
//! time ([`dot_row`], [`has_avx2`]). Row lengths are validated when
//! the shard loads (whole blocks), so the kernels only walk `chunks_exact`.

use half::f16;
use splitter::TensorType;

use super::kquants::{self, QK_K};

/// Elements per block of every type here.
pub const BLOCK: usize = 32;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Decodes one row of blocks (`bytes`, whole blocks) into `out` (32 values per block). f16 and
/// f32 rows are converted as they are.
pub fn decode_row(ty: TensorType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        TensorType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        TensorType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        TensorType::Q8_0 => {
            for (b, y) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(BLOCK)) {
                let d = f16_at(b, 0);
                for (y, &q) in y.iter_mut().zip(&b[2..34]) {
                    *y = f32::from(q as i8) * d;
                }
            }
        }
        TensorType::Q4_0 => {
            for (b, y) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(BLOCK)) {
                let d = f16_at(b, 0);
                for (j, &q) in b[2..18].iter().enumerate() {
                    y[j] = f32::from((q & 0x0F) as i8 - 8) * d;
                    y[j + 16] = f32::from((q >> 4) as i8 - 8) * d;
                }
            }
        }
        TensorType::Q4_K => {
            for (b, y) in bytes.chunks_exact(144).zip(out.chunks_exact_mut(QK_K)) {
                kquants::decode_q4_k(b, y);
            }
        }
        TensorType::Q6_K => {
            for (b, y) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(QK_K)) {
                kquants::decode_q6_k(b, y);
            }
        }
        TensorType::Q4_1 => {
            for (b, y) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(BLOCK)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                for (j, &q) in b[4..20].iter().enumerate() {
                    y[j] = f32::from(q & 0x0F) * d + m;
                    y[j + 16] = f32::from(q >> 4) * d + m;
                }
            }
        }
    }
}

/// The sum of each 32-value block of `x`: Q4_0 and Q4_1 rows use them for their offset term
/// (`w = q d + m` gives `d (q · x) + m sum(x)`), the same for every row of a product.
pub fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(BLOCK).map(|c| c.iter().sum()).collect()
}

/// Whether this CPU runs the AVX2/FMA/F16C kernels.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `sum_j w[j] * x[j]` for one row of blocks of `ty` (Q8_0, Q4_0 or Q4_1) and `x` of the
/// row's length; `sums` is [`block_sums`] of `x`. `avx2` is [`has_avx2`] (asked once per
/// product, not per row).
pub fn dot_row(ty: TensorType, row: &[u8], x: &[f32], sums: &[f32], avx2: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` says the CPU has the features `dot_row_avx2` is compiled for.
        return unsafe { dot_row_avx2(ty, row, x, sums) };
    }
    let _ = avx2;
    dot_row_portable(ty, row, x, sums)
}

/// [`dot_row_portable`]'s results with AVX2 and FMA intrinsics: eight lanes per register, one
/// register of products per eight weights, the block's scale applied once per block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_row_avx2(ty: TensorType, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    match ty {
        TensorType::Q8_0 => avx2::q8_0(row, x),
        TensorType::Q4_0 => avx2::q4(row, x, sums, 2, false),
        TensorType::Q4_1 => avx2::q4(row, x, sums, 4, true),
        _ => dot_row_portable(ty, row, x, sums),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// The f16 at bytes 0-1 and 2-3 of `b` as f32 lanes 0 and 1 (F16C).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn halves(b: &[u8]) -> __m128 {
        let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
    }

    /// Sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Q8_0 row · x.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn q8_0(row: &[u8], x: &[f32]) -> f32 {
        let mut total = _mm256_setzero_ps();
        for (b, x) in row.chunks_exact(34).zip(x.chunks_exact(BLOCK)) {
            let (q, x): (&[u8; 34], &[f32; 32]) = (
                b.try_into().expect("chunks_exact(34)"),
                x.try_into().expect("chunks_exact(32)"),
            );
            let mut s = _mm256_setzero_ps();
            for g in 0..4 {
                // SAFETY: bytes 2 + 8g .. 10 + 8g and floats 8g .. 8g + 8 lie inside the
                // fixed-size arrays; unaligned loads.
                let (qi, xv) = unsafe {
                    (
                        _mm_loadl_epi64(q.as_ptr().add(2 + 8 * g).cast()),
                        _mm256_loadu_ps(x.as_ptr().add(8 * g)),
                    )
                };
                let qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qi));
                s = _mm256_fmadd_ps(qf, xv, s);
            }
            total = _mm256_fmadd_ps(_mm256_broadcastss_ps(halves(q)), s, total);
        }
        hsum(total)
    }

    /// Q4_0 (`min = false`: `w = (q - 8) d`, nibbles at byte 2) or Q4_1 (`min = true`:
    /// `w = q d + m`, nibbles at byte 4) row · x, as `d (q · x) + (m or -8 d) sum(x)` with the
    /// block sums of x given.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn q4(row: &[u8], x: &[f32], sums: &[f32], at: usize, min: bool) -> f32 {
        let size = at + 16;
        let mask = _mm_set1_epi8(0x0F);
        let mut tq = _mm256_setzero_ps();
        let mut tm = 0f32;
        for ((b, x), sx) in row.chunks_exact(size).zip(x.chunks_exact(BLOCK)).zip(sums) {
            let (q, x): (&[u8; 16], &[f32; 32]) = (
                b[at..].try_into().expect("16 bytes of nibbles"),
                x.try_into().expect("chunks_exact(32)"),
            );
            // SAFETY: 16 bytes and 4 × 8 floats, inside the fixed-size arrays; unaligned loads.
            let (raw, x0, x1, x2, x3) = unsafe {
                let p = x.as_ptr();
                (
                    _mm_loadu_si128(q.as_ptr().cast()),
                    _mm256_loadu_ps(p),
                    _mm256_loadu_ps(p.add(8)),
                    _mm256_loadu_ps(p.add(16)),
                    _mm256_loadu_ps(p.add(24)),
                )
            };
            let lo = _mm_and_si128(raw, mask); // elements 0-15
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask); // elements 16-31
            let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
            let mut s = _mm256_mul_ps(f(lo), x0);
            s = _mm256_fmadd_ps(f(_mm_srli_si128(lo, 8)), x1, s);
            s = _mm256_fmadd_ps(f(hi), x2, s);
            s = _mm256_fmadd_ps(f(_mm_srli_si128(hi, 8)), x3, s);
            let dm = halves(b); // (d, m) for Q4_1; d and the first nibbles for Q4_0
            let d = _mm_cvtss_f32(dm);
            let m = if min {
                _mm_cvtss_f32(_mm_movehdup_ps(dm))
            } else {
                -8.0 * d
            };
            tq = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), s, tq);
            tm += m * sx;
        }
        hsum(tq) + tm
    }
}

fn dot_row_portable(ty: TensorType, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    match ty {
        TensorType::Q8_0 => row
            .chunks_exact(34)
            .zip(x.chunks_exact(BLOCK))
            .map(|(b, x)| f16_at(b, 0) * dot_q8(&b[2..34], x))
            .sum(),
        TensorType::Q4_0 => row
            .chunks_exact(18)
            .zip(x.chunks_exact(BLOCK))
            .zip(sums)
            .map(|((b, x), sx)| f16_at(b, 0) * (dot_q4(&b[2..18], x) - 8.0 * sx))
            .sum(),
        TensorType::Q4_1 => row
            .chunks_exact(20)
            .zip(x.chunks_exact(BLOCK))
            .zip(sums)
            .map(|((b, x), sx)| f16_at(b, 0) * dot_q4(&b[4..20], x) + f16_at(b, 2) * sx)
            .sum(),
        TensorType::Q4_K | TensorType::Q6_K => {
            // One super-block at a time through a stack buffer.
            let size = ty.block_bytes();
            let mut w = [0f32; QK_K];
            row.chunks_exact(size)
                .zip(x.chunks_exact(QK_K))
                .map(|(b, x)| {
                    decode_row(ty, b, &mut w);
                    super::ops::dot(&w, x)
                })
                .sum()
        }
        TensorType::F16 | TensorType::F32 => {
            let mut w = vec![0f32; x.len()];
            decode_row(ty, row, &mut w);
            super::ops::dot(&w, x)
        }
    }
}

/// `sum q[j] * x[j]` over one block of 32 signed bytes, eight lanes.
#[inline(always)]
fn dot_q8(q: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (qc, xc) in q.chunks_exact(8).zip(x.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += f32::from(qc[l] as i8) * xc[l];
        }
    }
    acc.iter().sum()
}

/// `sum q[j] * x[j]` over one block of 32 nibbles (16 bytes: low nibbles are elements 0-15,
/// high nibbles 16-31), eight lanes.
#[inline(always)]
fn dot_q4(q: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (lo_x, hi_x) = x.split_at(16);
    for ((qc, lx), hx) in q
        .chunks_exact(8)
        .zip(lo_x.chunks_exact(8))
        .zip(hi_x.chunks_exact(8))
    {
        for l in 0..8 {
            acc[l] += f32::from(qc[l] & 0x0F) * lx[l] + f32::from(qc[l] >> 4) * hx[l];
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitter::quantize::quantize;

    fn sample(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn decode_matches_the_splitter_dequantizer_and_dot_matches_decode() {
        let k = 4 * BLOCK;
        let w = sample(k, 7);
        let x = sample(k, 99);
        for ty in [TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1] {
            let mut q = Vec::new();
            quantize(ty, &w, &mut q).unwrap();
            let mut reference = vec![0f32; k];
            splitter::quant::dequantize(ty.ggml(), &q, &mut reference).unwrap();
            let mut got = vec![0f32; k];
            decode_row(ty, &q, &mut got);
            assert_eq!(
                got, reference,
                "{ty}: decode_row differs from splitter::quant"
            );
            let want: f64 = reference
                .iter()
                .zip(&x)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let sums = block_sums(&x);
            for (name, d) in [
                ("dispatch", dot_row(ty, &q, &x, &sums, has_avx2())),
                ("portable", dot_row(ty, &q, &x, &sums, false)),
            ] {
                let err = (d as f64 - want).abs();
                assert!(err < 1e-4, "{ty} {name}: dot {d} vs {want} (error {err:e})");
            }
        }
    }
}
