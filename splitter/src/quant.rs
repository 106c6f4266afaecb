//! GGML tensor types and their dequantization to f32.
//!
//! [`GgmlType`] lists every type id ggml has assigned, so an error can name what a file uses even
//! when Synapse cannot read it. [`dequantize`] turns the bytes of one tensor into f32 for the
//! supported types ([`SUPPORTED`]); each block decoder below documents its byte layout and
//! follows ggml's reference `dequantize_row_*` (ggml-quants.c) operation for operation, so the
//! results are bit-identical to ggml's on the same input.
//!
//! Everything here is a pure function over byte slices: lengths are checked up front and the
//! decoders only walk whole blocks with `chunks_exact`, so no input can make them panic.

use half::{bf16, f16};

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $block:literal, $bytes:literal;)*) => {
        /// A GGML tensor type, with ggml's numeric id (`enum ggml_type` in ggml.h).
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum GgmlType {
            $(
                #[doc = concat!("ggml type id ", $id, ": ", $block, " elements in ", $bytes, " bytes.")]
                $variant = $id,
            )*
        }

        impl GgmlType {
            /// Every type ggml has assigned an id to (retired ids excluded).
            pub const ALL: &[GgmlType] = &[$(GgmlType::$variant),*];

            /// The type with ggml id `id`, or `None` for an id ggml never assigned or retired.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// ggml's name of the type, e.g. `Q4_K`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(GgmlType::$variant => stringify!($variant),)*
                }
            }

            /// Elements per block (1 for plain scalar types).
            pub fn block_size(&self) -> usize {
                match self {
                    $(GgmlType::$variant => $block,)*
                }
            }

            /// Bytes per block.
            pub fn type_size(&self) -> usize {
                match self {
                    $(GgmlType::$variant => $bytes,)*
                }
            }
        }
    };
}

// Sizes from ggml-common.h. (The Python `gguf` package still says 40 bytes for Q8_1, the size of
// its old float-scaled layout; ggml's block_q8_1 is two f16 and 32 i8.)
ggml_types! {
    F32 = 0, 1, 4;
    F16 = 1, 1, 2;
    Q4_0 = 2, 32, 18;
    Q4_1 = 3, 32, 20;
    Q5_0 = 6, 32, 22;
    Q5_1 = 7, 32, 24;
    Q8_0 = 8, 32, 34;
    Q8_1 = 9, 32, 36;
    Q2_K = 10, 256, 84;
    Q3_K = 11, 256, 110;
    Q4_K = 12, 256, 144;
    Q5_K = 13, 256, 176;
    Q6_K = 14, 256, 210;
    Q8_K = 15, 256, 292;
    IQ2_XXS = 16, 256, 66;
    IQ2_XS = 17, 256, 74;
    IQ3_XXS = 18, 256, 98;
    IQ1_S = 19, 256, 50;
    IQ4_NL = 20, 32, 18;
    IQ3_S = 21, 256, 110;
    IQ2_S = 22, 256, 82;
    IQ4_XS = 23, 256, 136;
    I8 = 24, 1, 1;
    I16 = 25, 1, 2;
    I32 = 26, 1, 4;
    I64 = 27, 1, 8;
    F64 = 28, 1, 8;
    IQ1_M = 29, 256, 56;
    BF16 = 30, 1, 2;
    TQ1_0 = 34, 256, 54;
    TQ2_0 = 35, 256, 66;
    MXFP4 = 39, 32, 17;
    NVFP4 = 40, 64, 36;
    Q1_0 = 41, 128, 18;
}

/// The types [`dequantize`] can decode.
pub const SUPPORTED: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

impl GgmlType {
    /// Whether [`dequantize`] can decode this type.
    pub fn is_supported(&self) -> bool {
        SUPPORTED.contains(self)
    }

    /// Bytes taken by `n_elements` of this type, or `None` when `n_elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn bytes_for(&self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Names of the [`SUPPORTED`] types, comma-separated, for error messages.
pub fn supported_names() -> String {
    SUPPORTED
        .iter()
        .map(GgmlType::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Describes a type id for an error message: its name if known, or that ggml retired it.
pub fn describe_id(id: u32) -> String {
    match (GgmlType::from_id(id), id) {
        (Some(ty), _) => format!("{ty} (id {id})"),
        (None, 4) => "Q4_2 (id 4, retired by ggml)".into(),
        (None, 5) => "Q4_3 (id 5, retired by ggml)".into(),
        (None, 31..=33 | 36..=38) => format!("id {id} (an interleaved type retired by ggml)"),
        (None, _) => format!("unknown type id {id}"),
    }
}

/// Why a buffer could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    /// The type has no decoder here.
    #[error("type {0} cannot be dequantized (supported: {list})", list = supported_names())]
    Unsupported(GgmlType),
    /// The element count is not a whole number of blocks.
    #[error("{n_elements} elements of {ty} is not a whole number of {block}-element blocks")]
    PartialBlock {
        ty: GgmlType,
        n_elements: usize,
        block: usize,
    },
    /// The byte count does not match the element count.
    #[error("{n_elements} elements of {ty} take {expected} bytes, got {got}")]
    Length {
        ty: GgmlType,
        n_elements: usize,
        expected: usize,
        got: usize,
    },
}

/// Decodes `bytes` of type `ty` into `out`; `out.len()` is the element count.
///
/// `bytes.len()` must be exactly the size of `out.len()` elements, which must be a whole number
/// of blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    if !ty.is_supported() {
        return Err(DequantError::Unsupported(ty));
    }
    let n_elements = out.len();
    let block = ty.block_size();
    if !n_elements.is_multiple_of(block) {
        return Err(DequantError::PartialBlock {
            ty,
            n_elements,
            block,
        });
    }
    let expected = (n_elements / block)
        .checked_mul(ty.type_size())
        .filter(|&e| e == bytes.len());
    if expected.is_none() {
        return Err(DequantError::Length {
            ty,
            n_elements,
            expected: (n_elements / block).saturating_mul(ty.type_size()),
            got: bytes.len(),
        });
    }
    let decode: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16_at(b, 0),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_bits(u16_at(b, 0)).to_f32(),
        GgmlType::Q8_0 => block_q8_0,
        GgmlType::Q4_0 => block_q4_0,
        GgmlType::Q4_1 => block_q4_1,
        GgmlType::Q5_0 => block_q5_0,
        GgmlType::Q5_1 => block_q5_1,
        GgmlType::Q4_K => block_q4_k,
        GgmlType::Q5_K => block_q5_k,
        GgmlType::Q6_K => block_q6_k,
        _ => return Err(DequantError::Unsupported(ty)),
    };
    for (b, y) in bytes
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(block))
    {
        decode(b, y);
    }
    Ok(())
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16_at(b, i)).to_f32()
}

/// Q8_0, 34 bytes per 32 elements: f16 `d`, then 32 × i8 `q`; `y = q * d`.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = f32::from(q as i8) * d;
    }
}

/// Q4_0, 18 bytes per 32 elements: f16 `d`, then 16 bytes whose low nibbles are elements 0-15
/// and high nibbles elements 16-31; `y = (q - 8) * d`.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = f32::from((q & 0x0F) as i8 - 8) * d;
        y[j + 16] = f32::from((q >> 4) as i8 - 8) * d;
    }
}

/// Q4_1, 20 bytes per 32 elements: f16 `d`, f16 `m`, then nibbles as in Q4_0; `y = q * d + m`.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = f32::from(q & 0x0F) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block: nibbles as in Q4_0, plus bit `j` of the
/// little-endian u32 `qh` as bit 4 of element `j`.
fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut v = [0u8; 32];
    for (j, &q) in qs.iter().enumerate().take(16) {
        v[j] = (q & 0x0F) | ((((qh >> j) << 4) & 0x10) as u8);
        v[j + 16] = (q >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
    }
    v
}

/// Q5_0, 22 bytes per 32 elements: f16 `d`, u32 `qh` (high bits), 16 bytes of nibbles;
/// `y = (q - 16) * d`.
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, q) in y.iter_mut().zip(q5_values(&b[2..6], &b[6..22])) {
        *y = f32::from(q as i8 - 16) * d;
    }
}

/// Q5_1, 24 bytes per 32 elements: f16 `d`, f16 `m`, u32 `qh`, 16 bytes of nibbles;
/// `y = q * d + m`.
fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (y, q) in y.iter_mut().zip(q5_values(&b[4..8], &b[8..24])) {
        *y = f32::from(q) * d + m;
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) packed in the 12
/// `scales` bytes of a Q4_K/Q5_K super-block. Sub-blocks 0-3 use the low 6 bits of bytes j and
/// j+4; sub-blocks 4-7 take 4 bits from byte j+4 and their top 2 bits from the spare high bits
/// of bytes j-4 and j.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K, 144 bytes per 256 elements: f16 `d`, f16 `dmin`, 12 bytes of packed 6-bit scales and
/// mins ([`scale_min_k4`]), 128 bytes of nibbles. Each 64-element chunk reads 32 bytes: low
/// nibbles are its first 32 elements (sub-block 2c), high nibbles the next 32 (sub-block 2c+1);
/// `y = d * sc * q - dmin * m`.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for (c, (qs, y)) in b[16..144]
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(64))
        .enumerate()
    {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        for (l, &q) in qs.iter().enumerate() {
            y[l] = d1 * f32::from(q & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// Q5_K, 176 bytes per 256 elements: f16 `d`, f16 `dmin`, 12 bytes of scales and mins as in
/// Q4_K, 32 bytes `qh`, 128 bytes of nibbles as in Q4_K. Bit 4 of element `l` of chunk `c`
/// is bit 2c of `qh[l]` (first 32 elements) or bit 2c+1 (next 32); `y = d * sc * q - dmin * m`.
fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for (c, (qs, y)) in b[48..176]
        .chunks_exact(32)
        .zip(y.chunks_exact_mut(64))
        .enumerate()
    {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for (l, (&q, &h)) in qs.iter().zip(qh).enumerate() {
            let hi1 = if h & u1 != 0 { 16 } else { 0 };
            let hi2 = if h & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((q & 0x0F) + hi1) - m1;
            y[l + 32] = d2 * f32::from((q >> 4) + hi2) - m2;
        }
    }
}

/// Q6_K, 210 bytes per 256 elements: 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits),
/// 16 × i8 `scales` (one per 16 elements), f16 `d`; `y = d * scale * (q - 32)`. Each 128-element
/// half reads 64 bytes of `ql` and 32 of `qh`: element l (l < 32) of its quarters 0/1/2/3 takes
/// the low nibble of `ql[l]`/`ql[l+32]`, the high nibble of `ql[l]`/`ql[l+32]`, and bits
/// 0-1/2-3/4-5/6-7 of `qh[l]`.
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    let halves = b[0..128]
        .chunks_exact(64)
        .zip(b[128..192].chunks_exact(32))
        .zip(b[192..208].chunks_exact(8))
        .zip(y.chunks_exact_mut(128));
    for (((ql, qh), sc), y) in halves {
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            let s = |k: usize| d * f32::from(sc[k] as i8);
            y[l] = s(is) * f32::from(q1);
            y[l + 32] = s(is + 2) * f32::from(q2);
            y[l + 64] = s(is + 4) * f32::from(q3);
            y[l + 96] = s(is + 6) * f32::from(q4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elements per K-quant super-block (ggml's `QK_K`).
    const QK_K: usize = 256;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    fn deq(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        dequantize(ty, bytes, &mut out).expect("dequantize");
        out
    }

    #[test]
    fn ids_names_and_sizes() {
        for &ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(ty as u32), Some(ty));
        }
        assert_eq!(GgmlType::from_id(14).map(|t| t.name()), Some("Q6_K"));
        assert_eq!(GgmlType::from_id(30), Some(GgmlType::BF16));
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(1000), None);
        assert_eq!(
            (GgmlType::Q4_1.block_size(), GgmlType::Q4_1.type_size()),
            (32, 20)
        );
        assert_eq!(GgmlType::Q4_K.type_size(), 2 + 2 + 12 + QK_K / 2);
        assert_eq!(GgmlType::Q5_K.type_size(), 2 + 2 + 12 + QK_K / 8 + QK_K / 2);
        assert_eq!(
            GgmlType::Q6_K.type_size(),
            QK_K / 2 + QK_K / 4 + QK_K / 16 + 2
        );
        assert!(describe_id(99).contains("unknown type id 99"));
        assert!(describe_id(10).contains("Q2_K"));
    }

    #[test]
    fn rejects_bad_lengths_and_types() {
        let mut out = [0.0f32; 32];
        let e = dequantize(GgmlType::Q8_0, &[0; 33], &mut out).unwrap_err();
        assert!(
            matches!(
                e,
                DequantError::Length {
                    expected: 34,
                    got: 33,
                    ..
                }
            ),
            "{e}"
        );
        let e = dequantize(GgmlType::Q8_0, &[0; 34], &mut out[..31]).unwrap_err();
        assert!(matches!(e, DequantError::PartialBlock { .. }), "{e}");
        let e = dequantize(GgmlType::Q2_K, &[0; 84], &mut [0.0; 256]).unwrap_err();
        assert!(
            e.to_string().contains("Q2_K") && e.to_string().contains("Q6_K"),
            "{e}"
        );
        dequantize(GgmlType::Q8_0, &[], &mut []).expect("zero blocks is fine");
    }

    #[test]
    fn q5_0_and_q5_1_blocks() {
        // qh sets bit 4 on every third element; nibbles count 0..15 (low) and 15..0 (high).
        let mut qh = 0u32;
        for j in (0..32).step_by(3) {
            qh |= 1 << j;
        }
        let qs: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let value = |j: usize| {
            let nib = if j < 16 { j } else { 15 - (j - 16) } as f32;
            nib + if j.is_multiple_of(3) { 16.0 } else { 0.0 }
        };
        let mut b0 = f16b(0.25).to_vec();
        b0.extend(qh.to_le_bytes());
        b0.extend(&qs);
        let y = deq(GgmlType::Q5_0, &b0, 32);
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, (value(j) - 16.0) * 0.25, "Q5_0 element {j}");
        }
        let mut b1 = [f16b(0.5), f16b(-3.0)].concat();
        b1.extend(qh.to_le_bytes());
        b1.extend(&qs);
        let y = deq(GgmlType::Q5_1, &b1, 32);
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, value(j) * 0.5 - 3.0, "Q5_1 element {j}");
        }
    }

    /// Logical content of one Q4_K/Q5_K super-block: 8 sub-block scales and mins (6-bit) and
    /// 256 quants; packed below the way ggml's quantize_row_q4_K_ref / q5_K_ref pack them.
    struct KBlock {
        d: f32,
        dmin: f32,
        sc: [u8; 8],
        m: [u8; 8],
        q: Vec<u8>,
    }

    impl KBlock {
        fn sample(bits: u32) -> KBlock {
            KBlock {
                d: 0.5,
                dmin: 0.25,
                // Scales and mins above 15 exercise the 2 high bits stored apart for j >= 4.
                sc: [1, 63, 17, 5, 48, 33, 2, 63],
                m: [0, 7, 63, 40, 21, 63, 16, 3],
                q: (0..QK_K as u32)
                    .map(|i| ((i * 7 + i / 5) % (1 << bits)) as u8)
                    .collect(),
            }
        }

        fn packed_scales(&self) -> [u8; 12] {
            let mut s = [0u8; 12];
            for j in 0..8 {
                let (ls, lm) = (self.sc[j], self.m[j]);
                if j < 4 {
                    s[j] = ls;
                    s[j + 4] = lm;
                } else {
                    s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                    s[j - 4] |= (ls >> 4) << 6;
                    s[j] |= (lm >> 4) << 6;
                }
            }
            s
        }

        /// Element i = d * sc[i / 32] * q[i] - dmin * m[i / 32].
        fn expected(&self) -> Vec<f32> {
            (0..QK_K)
                .map(|i| {
                    let s = i / 32;
                    self.d * f32::from(self.sc[s]) * f32::from(self.q[i])
                        - self.dmin * f32::from(self.m[s])
                })
                .collect()
        }

        /// 128 bytes: chunk c of 64 elements holds elements 64c+l (low nibble) and 64c+32+l
        /// (high nibble) in byte 32c+l.
        fn nibbles(&self) -> Vec<u8> {
            (0..128)
                .map(|k| {
                    let (c, l) = (k / 32, k % 32);
                    (self.q[64 * c + l] & 0xF) | ((self.q[64 * c + 32 + l] & 0xF) << 4)
                })
                .collect()
        }
    }

    #[test]
    fn q4_k_super_block() {
        let kb = KBlock::sample(4);
        let mut b = [f16b(kb.d), f16b(kb.dmin)].concat();
        b.extend(kb.packed_scales());
        b.extend(kb.nibbles());
        assert_eq!(deq(GgmlType::Q4_K, &b, QK_K), kb.expected());
        // Hand-worked: element 255 is in sub-block 7 (sc 63, m 3) with q = (255*7 + 51) % 16 = 12.
        assert_eq!(
            deq(GgmlType::Q4_K, &b, QK_K)[255],
            0.5 * 63.0 * 12.0 - 0.25 * 3.0
        );
    }

    #[test]
    fn q5_k_super_block() {
        let kb = KBlock::sample(5);
        let mut qh = [0u8; 32];
        for (i, &q) in kb.q.iter().enumerate() {
            // Element i lives in chunk c = i / 64; its first 32 use bit 2c, the next 32 bit 2c+1.
            let (c, r) = (i / 64, i % 64);
            qh[r % 32] |= (q >> 4) << (2 * c + r / 32);
        }
        let mut b = [f16b(kb.d), f16b(kb.dmin)].concat();
        b.extend(kb.packed_scales());
        b.extend(qh);
        b.extend(kb.nibbles());
        assert_eq!(deq(GgmlType::Q5_K, &b, QK_K), kb.expected());
    }

    #[test]
    fn q6_k_super_blocks() {
        // Two super-blocks, the second with other scales, to check the block stride.
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for blk in 0..2i32 {
            let d = if blk == 0 { 0.125 } else { -2.0 };
            let sc: Vec<i8> = (0..16).map(|k| (k * 9 - 60 + blk) as i8).collect();
            let q: Vec<u8> = (0..QK_K).map(|i| ((i * 13 + 5) % 64) as u8).collect();
            let (mut ql, mut qh) = (vec![0u8; 128], vec![0u8; 64]);
            for (i, &qi) in q.iter().enumerate() {
                // Half h = i / 128, quarter k and position l inside it.
                let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
                let byte = 64 * h + l + if k % 2 == 1 { 32 } else { 0 };
                ql[byte] |= (qi & 0xF) << if k >= 2 { 4 } else { 0 };
                qh[32 * h + l] |= (qi >> 4) << (2 * k);
            }
            bytes.extend(&ql);
            bytes.extend(&qh);
            bytes.extend(sc.iter().map(|&s| s as u8));
            bytes.extend(f16b(d));
            expected.extend((0..QK_K).map(|i| d * f32::from(sc[i / 16]) * (q[i] as f32 - 32.0)));
        }
        assert_eq!(deq(GgmlType::Q6_K, &bytes, 2 * QK_K), expected);
        // Hand-worked: element 0 has q = 5, scale -60, d = 1/8: 0.125 * -60 * (5 - 32) = 202.5.
        assert_eq!(expected[0], 202.5);
    }
}
