//! Quantizing f32 values into GGML blocks, following ggml's reference quantizers
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`, `quantize_row_q4_1_ref` in ggml-quants.c)
//! operation for operation, in f32, so the bytes equal what llama.cpp writes for the same input.
//!
//! Rows must be whole blocks; [`quantize`] checks that and never panics on any input.

use half::f16;

use crate::tensor_type::TensorType;

/// Quantizes `x` (a whole number of blocks of `ty`) and appends the blocks to `out`.
/// `f32`/`f16` append the little-endian values. Errors say why `x` cannot be stored.
pub fn quantize(ty: TensorType, x: &[f32], out: &mut Vec<u8>) -> Result<(), String> {
    let block = ty.block_size();
    if !x.len().is_multiple_of(block) {
        return Err(format!(
            "{} values are not a whole number of {block}-element {ty} blocks",
            x.len()
        ));
    }
    out.reserve(x.len() / block * ty.block_bytes());
    match ty {
        TensorType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        TensorType::F16 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        TensorType::Q8_0 => x.chunks_exact(32).for_each(|b| block_q8_0(b, out)),
        TensorType::Q4_0 => x.chunks_exact(32).for_each(|b| block_q4_0(b, out)),
        TensorType::Q4_1 => x.chunks_exact(32).for_each(|b| block_q4_1(b, out)),
        TensorType::Q4_K | TensorType::Q6_K => {
            return Err(format!(
                "Synapse does not quantize to {ty}; it only keeps {ty} blocks from a GGUF"
            ));
        }
    }
    Ok(())
}

/// `d = amax / 127`, `q = roundf(x / d)` (C's `roundf`: halves away from zero, as Rust's
/// `f32::round`).
fn block_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    for v in x {
        out.push((v * id).round() as i8 as u8);
    }
}

/// `d = max / -8` where `max` is the value of largest magnitude (the first one on ties), and
/// `q = min(15, (int8_t)(x / d + 8.5))`; low nibbles hold elements 0-15, high nibbles 16-31.
fn block_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..16 {
        let lo = nibble(x[j] * id + 8.5);
        let hi = nibble(x[j + 16] * id + 8.5);
        out.push(lo | (hi << 4));
    }
}

/// `d = (max - min) / 15`, `m = min`, `q = min(15, (int8_t)((x - min) / d + 0.5))`.
fn block_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    for j in 0..16 {
        let lo = nibble((x[j] - min) * id + 0.5);
        let hi = nibble((x[j + 16] - min) * id + 0.5);
        out.push(lo | (hi << 4));
    }
}

/// C's `MIN(15, (int8_t)v)` stored in a `uint8_t`: truncation toward zero, then the nibble.
/// (For finite inputs `v` lies in `[0, 16)` up to rounding, so only the `MIN` matters; the
/// saturating cast keeps any other input from being undefined.)
fn nibble(v: f32) -> u8 {
    ((v as i8).min(15) as u8) & 0x0F
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;

    fn round_trip(ty: TensorType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let mut q = Vec::new();
        quantize(ty, x, &mut q).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize(ty.ggml(), &q, &mut y).unwrap();
        (q, y)
    }

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 61) as f32 - 30.0) / 7.0)
            .collect();
        // Q4_0 maps -max to 8 * (1 - 1/16) steps: its largest error is a whole step, there.
        for (ty, steps, half) in [
            (TensorType::Q8_0, 127.0, 0.5),
            (TensorType::Q4_0, 8.0, 1.0),
            (TensorType::Q4_1, 15.0, 0.5),
        ] {
            let (q, y) = round_trip(ty, &x);
            assert_eq!(q.len(), 3 * ty.block_bytes());
            for (b, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let range = if ty == TensorType::Q4_1 {
                    2.0 * amax
                } else {
                    amax
                };
                let step = range / steps;
                let (i, err) = xs
                    .iter()
                    .zip(ys)
                    .map(|(a, b)| (a - b).abs())
                    .enumerate()
                    .fold((0, 0f32), |m, (i, e)| if e > m.1 { (i, e) } else { m });
                // Half a step (Q4_0: one), plus the f16 rounding of the scale and minimum.
                assert!(
                    err <= half * step * 1.01 + amax * 2e-3,
                    "{ty} block {b} element {i}: error {err}, step {step}"
                );
            }
        }
    }

    #[test]
    fn hand_computed_q8_0_and_q4_1_blocks() {
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -63.5; // exactly -63.5 / 1.0: roundf goes away from zero
        x[2] = 0.49;
        let mut q = Vec::new();
        quantize(TensorType::Q8_0, &x, &mut q).unwrap();
        assert_eq!(&q[..2], &f16::from_f32(1.0).to_le_bytes());
        assert_eq!(q[2] as i8, 127);
        assert_eq!(q[3] as i8, -64);
        assert_eq!(q[4] as i8, 0);

        let x: Vec<f32> = (0..32).map(|i| (i % 16) as f32).collect();
        let mut q = Vec::new();
        quantize(TensorType::Q4_1, &x, &mut q).unwrap();
        assert_eq!(&q[..2], &f16::from_f32(1.0).to_le_bytes());
        assert_eq!(&q[2..4], &f16::from_f32(0.0).to_le_bytes());
        for j in 0..16 {
            assert_eq!(q[4 + j], (j as u8) | ((j as u8) << 4), "byte {j}");
        }
    }

    #[test]
    fn zero_blocks_and_partial_blocks() {
        let (q, y) = round_trip(TensorType::Q4_0, &[0.0; 32]);
        // ggml's `max / -8` of a zero block is -0.0, stored as f16 -0.0 (bits 0x8000).
        assert_eq!(&q[..2], &[0x00, 0x80]);
        assert!(
            q[2..].iter().all(|&b| b == 0x88),
            "zero maps to the middle nibble 8"
        );
        assert!(y.iter().all(|&v| v == 0.0));
        let err = quantize(TensorType::Q8_0, &[1.0; 48], &mut Vec::new()).unwrap_err();
        assert!(err.contains("48"), "{err}");
    }
}
