//! Symmetric quantization (int8 and int4) and the exact arithmetic both ends must share.
//!
//! Rules (SYN1): scale = max|x| / qmax as f32 (1 when every value is zero, or when the
//! division underflows to 0), q = clamp(round(x / scale), -qmax, qmax) with qmax 127 for int8
//! and 7 for int4. `round` is JavaScript's `Math.round` (ties toward +infinity), evaluated in
//! f64 with the stored f32 scale, so the Rust and browser encoders produce the same bytes.
//! Dequantization is `q * scale` rounded to f32; a delta reconstruction is
//! `f32(reference + q * scale)` evaluated in f64 (what `Math.fround(ref + q * scale)` gives),
//! so a sender mirroring a browser receiver reproduces its reconstruction bit for bit.

use super::error::ProtocolError;

/// Largest int8 magnitude (symmetric, -128 is never produced).
pub const INT8_MAX_Q: i8 = 127;
/// Largest int4 magnitude.
pub const INT4_MAX_Q: i8 = 7;
/// int4 values are stored as q + 8 in a nibble, so 1..=15 are valid.
pub const INT4_BIAS: u8 = 8;

/// JavaScript's `Math.round`: nearest integer, ties toward +infinity.
pub fn js_round(v: f64) -> f64 {
    let f = v.floor();
    if v - f >= 0.5 { f + 1.0 } else { f }
}

/// The scale for values whose largest magnitude is `max_abs`.
pub fn scale_for(max_abs: f32, qmax: i8) -> f32 {
    let s = max_abs / f32::from(qmax);
    if s > 0.0 && s.is_finite() { s } else { 1.0 }
}

/// Quantizes `values` with one shared scale, appending the q values to `out`; returns the
/// scale. `base` is added to element indices in errors. Non-finite input is an error.
pub fn quantize_into(
    values: &[f32],
    qmax: i8,
    base: usize,
    out: &mut Vec<i8>,
) -> Result<f32, ProtocolError> {
    let mut max_abs = 0.0f32;
    for (i, &x) in values.iter().enumerate() {
        if !x.is_finite() {
            return Err(ProtocolError::NonFiniteValue {
                index: base + i,
                value: x,
            });
        }
        max_abs = max_abs.max(x.abs());
    }
    let scale = scale_for(max_abs, qmax);
    let (lo, hi) = (-f64::from(qmax), f64::from(qmax));
    let s = f64::from(scale);
    out.extend(
        values
            .iter()
            .map(|&x| js_round(f64::from(x) / s).clamp(lo, hi) as i8),
    );
    Ok(scale)
}

/// `q * scale` as f32.
pub fn dequantize(q: i8, scale: f32) -> f32 {
    f32::from(q) * scale
}

/// A delta reconstruction: `reference + q * scale`, computed in f64 and rounded once to f32.
pub fn delta_reconstruct(reference: f32, q: i8, scale: f32) -> f32 {
    (f64::from(reference) + f64::from(q) * f64::from(scale)) as f32
}

/// Packs int4 values (each in [-7, 7]) two per byte, stored q + 8, low nibble = even index;
/// an odd count leaves the last high nibble 0.
pub fn pack_int4(q: &[i8]) -> Vec<u8> {
    q.chunks(2)
        .map(|pair| {
            let nib = |v: i8| (v + INT4_BIAS as i8) as u8 & 0x0F;
            let lo = nib(pair[0]);
            let hi = pair.get(1).map_or(0, |&v| nib(v));
            lo | (hi << 4)
        })
        .collect()
}

/// Unpacks `n` int4 values; nibble 0 (q = -8) and a nonzero padding nibble are errors.
pub fn unpack_int4(bytes: &[u8], n: usize) -> Result<Vec<i8>, ProtocolError> {
    let mut out = Vec::with_capacity(n);
    for (i, &b) in bytes.iter().enumerate() {
        for (j, nibble) in [b & 0x0F, b >> 4].into_iter().enumerate() {
            let index = 2 * i + j;
            if index >= n {
                if nibble != 0 {
                    return Err(ProtocolError::Int4Padding { nibble });
                }
                continue;
            }
            if nibble == 0 {
                return Err(ProtocolError::Int4OutOfRange { index });
            }
            out.push(nibble as i8 - INT4_BIAS as i8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_round_ties_go_up() {
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(-2.6), -3.0);
        assert_eq!(js_round(0.49999999999999994), 0.0);
    }

    #[test]
    fn int8_rule_matches_syn1() {
        let mut q = Vec::new();
        let s = quantize_into(&[63.5, -32.0, 1.5, 0.0], INT8_MAX_Q, 0, &mut q).unwrap();
        assert_eq!((s, q), (0.5, vec![127, -64, 3, 0]));
        let mut q = Vec::new();
        assert_eq!(
            quantize_into(&[0.0; 3], INT8_MAX_Q, 0, &mut q).unwrap(),
            1.0
        );
        let err = quantize_into(&[1.0, f32::NAN], INT8_MAX_Q, 5, &mut q);
        assert!(matches!(
            err,
            Err(ProtocolError::NonFiniteValue { index: 6, .. })
        ));
    }

    #[test]
    fn quantization_error_is_at_most_half_a_step() {
        let xs: Vec<f32> = (0..200)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut q = Vec::new();
        let s = quantize_into(&xs, INT8_MAX_Q, 0, &mut q).unwrap();
        for (x, &v) in xs.iter().zip(&q) {
            assert!((x - dequantize(v, s)).abs() <= s * 0.5 + 1e-6);
        }
    }

    #[test]
    fn int4_packs_low_nibble_first_and_rejects_bad_nibbles() {
        let packed = pack_int4(&[7, -7, 2, 0, -1]);
        assert_eq!(packed, vec![0x1F, 0x8A, 0x07]);
        assert_eq!(unpack_int4(&packed, 5).unwrap(), vec![7, -7, 2, 0, -1]);
        assert!(matches!(
            unpack_int4(&[0x10], 2),
            Err(ProtocolError::Int4OutOfRange { index: 0 })
        ));
        assert!(matches!(
            unpack_int4(&[0x88], 1),
            Err(ProtocolError::Int4Padding { nibble: 8 })
        ));
    }
}
