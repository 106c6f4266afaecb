//! Q4_K and Q6_K super-blocks (256 weights) for the CPU engine, decoded as ggml's
//! `dequantize_row_q4_K` / `dequantize_row_q6_K` do (ggml-quants.c). Products decode one
//! super-block at a time into a 256-value buffer on the stack and take its dot product with x,
//! so no decoded copy of a matrix exists.
//!
//! - Q4_K, 144 bytes: f16 `d`, f16 `dmin`, 12 bytes packing eight 6-bit (scale, min) pairs, 128
//!   bytes of nibbles. Each 64-weight chunk `j` reads 32 bytes: low nibbles are its first 32
//!   weights (pair `2j`), high nibbles the next 32 (pair `2j + 1`); `w = d sc q - dmin m`.
//! - Q6_K, 210 bytes: 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits), 16 × i8 scales
//!   (one per 16 weights), f16 `d`; `w = d scale (q - 32)`.

use half::f16;

/// Weights per super-block.
pub const QK_K: usize = 256;

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// ggml's `get_scale_min_k4`: pair `j` of the 12 packed bytes `q`.
fn scale_min(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// One Q4_K super-block (144 bytes) into `y` (256 values).
pub fn decode_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..4 {
        let (sc1, m1) = scale_min(2 * j, scales);
        let (sc2, m2) = scale_min(2 * j + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let q = &qs[32 * j..32 * j + 32];
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            out[l] = d1 * f32::from(q[l] & 0xF) - m1;
            out[32 + l] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// One Q6_K super-block (210 bytes) into `y` (256 values).
pub fn decode_q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let sc = &b[192 + 8 * h..192 + 8 * h + 8];
        let out = &mut y[128 * h..128 * h + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, q) in q.into_iter().enumerate() {
                let scale = d * f32::from(sc[is + 2 * k] as i8);
                out[32 * k + l] = scale * f32::from(q as i8 - 32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitter::quant::{GgmlType, dequantize};

    /// Deterministic bytes with finite f16 scales at the given offsets.
    fn blocks(n: usize, size: usize, halves: &[usize], seed: u32) -> Vec<u8> {
        let mut s = seed;
        let mut out: Vec<u8> = (0..n * size)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 24) as u8
            })
            .collect();
        for (i, b) in out.chunks_exact_mut(size).enumerate() {
            for (k, &at) in halves.iter().enumerate() {
                let v = f16::from_f32(0.01 + 0.003 * (i + k) as f32);
                b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn super_blocks_decode_as_the_splitter_dequantizer_does() {
        for (ty, size, halves, decode) in [
            (
                GgmlType::Q4_K,
                144,
                &[0usize, 2][..],
                decode_q4_k as fn(&[u8], &mut [f32]),
            ),
            (GgmlType::Q6_K, 210, &[208][..], decode_q6_k),
        ] {
            let bytes = blocks(3, size, halves, 11);
            let mut want = vec![0f32; 3 * QK_K];
            dequantize(ty, &bytes, &mut want).unwrap();
            let mut got = vec![0f32; 3 * QK_K];
            for (b, y) in bytes.chunks_exact(size).zip(got.chunks_exact_mut(QK_K)) {
                decode(b, y);
            }
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            assert_eq!(first, None, "{ty}: first differing weight");
        }
    }
}
