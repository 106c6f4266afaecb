//! ACTIVATION payload layouts: their sizes, writing them, and parsing them with every check.
//!
//! | encoding | rows | layout |
//! |---|---|---|
//! | f32 | any | `[f32 x rows*cols]` |
//! | int8 (or delta) | 1 | `[i8 x cols][f32 scale]` |
//! | int8 | > 1 | `[i8 x rows*cols][f32 scale x rows][u16 rows]` |
//! | int4 | any | `[ceil(n/2) bytes][f32 scale][u32 n]`, n = rows*cols |
//! | rice | any | per row `[f32 step][u8 k][Rice bits, zero-padded]` (size depends on the data) |
//!
//! The one-row int8 layout has no row count, so the layout is chosen by dim0 == 1 versus
//! dim0 > 1, as the prototype did; the several-row layout can hold at most 65535 rows.

use super::error::ProtocolError;
use super::quant::{dequantize, unpack_int4};
use super::rice::{self, RiceValues};
use super::types::Encoding;

/// Bytes of one f32 scale.
pub const SCALE_SIZE: usize = 4;
/// Bytes of the int8 several-row trailer (u16 rows).
pub const INT8_ROWS_TRAILER_SIZE: usize = 2;
/// Bytes of the int4 count trailer (u32 n).
pub const INT4_COUNT_SIZE: usize = 4;
/// Bytes of one f32 value.
pub const F32_SIZE: usize = 4;
/// Most rows the int8 several-row layout can carry (u16 trailer).
pub const INT8_MAX_ROWS: u32 = u16::MAX as u32;

/// The values of an ACTIVATION payload as they travel, before dequantization.
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadValues {
    /// f32 values, row-major.
    F32(Vec<f32>),
    /// int8 values, row-major, with one scale per row (for DELTA: the quantized difference).
    Int8 {
        /// Quantized values in [-127, 127].
        q: Vec<i8>,
        /// One scale per row.
        scales: Vec<f32>,
    },
    /// int4 values in [-7, 7] with one scale.
    Int4 {
        /// Quantized values.
        q: Vec<i8>,
        /// The scale.
        scale: f32,
    },
    /// RICE q values with one step and Rice parameter per row.
    Rice(RiceValues),
}

impl PayloadValues {
    /// The f32 values the receiver sees (for DELTA: the difference, not the reconstruction).
    pub fn dequantize(&self, cols: u32) -> Vec<f32> {
        match self {
            PayloadValues::F32(v) => v.clone(),
            PayloadValues::Int8 { q, scales } => q
                .chunks(cols.max(1) as usize)
                .zip(scales)
                .flat_map(|(row, &s)| row.iter().map(move |&v| dequantize(v, s)))
                .collect(),
            PayloadValues::Int4 { q, scale } => q.iter().map(|&v| dequantize(v, *scale)).collect(),
            PayloadValues::Rice(v) => v.dequantize(cols),
        }
    }
}

/// Uncompressed payload size of an activation, or `None` when the shape cannot be expressed
/// (a zero dim, int8 with more than 65535 rows, DELTA with several rows, overflow) or the
/// size depends on the values (RICE; see [`rice_shape_ok`]).
pub fn payload_size(encoding: Encoding, rows: u32, cols: u32) -> Option<u64> {
    if rows == 0 || cols == 0 {
        return None;
    }
    let n = u64::from(rows) * u64::from(cols);
    let size = match encoding {
        Encoding::F32 => n * F32_SIZE as u64,
        Encoding::Int8 | Encoding::Int8Delta if rows == 1 => n + SCALE_SIZE as u64,
        Encoding::Int8Delta => return None,
        Encoding::Int8 if rows > INT8_MAX_ROWS => return None,
        Encoding::Int8 => n + u64::from(rows) * SCALE_SIZE as u64 + INT8_ROWS_TRAILER_SIZE as u64,
        Encoding::Int4 if n > u64::from(u32::MAX) => return None,
        Encoding::Int4 => n.div_ceil(2) + (SCALE_SIZE + INT4_COUNT_SIZE) as u64,
        Encoding::Rice => return None,
    };
    u32::try_from(size).ok().map(u64::from)
}

/// Whether a RICE frame can have this shape: nonzero dims, at most 2^32 - 1 values.
pub fn rice_shape_ok(rows: u32, cols: u32) -> bool {
    rows != 0 && cols != 0 && u64::from(rows) * u64::from(cols) <= u64::from(u32::MAX)
}

/// Writes the payload bytes for values already quantized for `rows` x `cols`.
pub fn write_payload(values: &PayloadValues, rows: u32) -> Vec<u8> {
    let mut out = Vec::new();
    match values {
        PayloadValues::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        PayloadValues::Int8 { q, scales } => {
            out.extend(q.iter().map(|&v| v as u8));
            scales
                .iter()
                .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
            if rows > 1 {
                out.extend_from_slice(&(rows as u16).to_le_bytes());
            }
        }
        PayloadValues::Int4 { q, scale } => {
            out.extend(super::quant::pack_int4(q));
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend_from_slice(&(q.len() as u32).to_le_bytes());
        }
        PayloadValues::Rice(v) => {
            let cols = v.q.len() / v.steps.len().max(1);
            out = rice::write(v, cols as u32);
        }
    }
    out
}

/// Parses an uncompressed payload for `rows` x `cols` (both already checked nonzero).
pub fn parse_payload(
    encoding: Encoding,
    rows: u32,
    cols: u32,
    bytes: &[u8],
) -> Result<PayloadValues, ProtocolError> {
    if encoding == Encoding::Rice {
        // Its size depends on the values: the reader checks it row by row.
        return rice::parse(bytes, rows, cols).map(PayloadValues::Rice);
    }
    let layout = match (encoding, rows) {
        (Encoding::F32, _) => "f32",
        (Encoding::Int8, 1) => "int8 one-row",
        (Encoding::Int8Delta, _) => "int8 delta",
        (Encoding::Int8, _) => "int8 several-row",
        (Encoding::Int4, _) => "int4",
        (Encoding::Rice, _) => "rice",
    };
    let mismatch = |expected: u64| ProtocolError::LayoutSizeMismatch {
        layout,
        rows,
        cols,
        expected,
        actual: bytes.len(),
    };
    let expected = payload_size(encoding, rows, cols).ok_or_else(|| mismatch(u64::MAX))?;
    if bytes.len() as u64 != expected {
        return Err(mismatch(expected));
    }
    let n = rows as usize * cols as usize;
    match encoding {
        Encoding::F32 => {
            let v = read_f32s(bytes);
            check_finite(&v)?;
            Ok(PayloadValues::F32(v))
        }
        Encoding::Int8 | Encoding::Int8Delta => {
            if rows > 1 {
                let t = &bytes[bytes.len() - INT8_ROWS_TRAILER_SIZE..];
                let trailer = u16::from_le_bytes([t[0], t[1]]);
                if u32::from(trailer) != rows {
                    return Err(ProtocolError::RowsTrailerMismatch {
                        trailer,
                        dim0: rows,
                    });
                }
            }
            let scales = read_f32s(&bytes[n..n + rows as usize * SCALE_SIZE]);
            check_scales(&scales)?;
            let q: Vec<i8> = bytes[..n].iter().map(|&b| b as i8).collect();
            if let Some(index) = q.iter().position(|&v| v == i8::MIN) {
                return Err(ProtocolError::Int8OutOfRange { index });
            }
            Ok(PayloadValues::Int8 { q, scales })
        }
        Encoding::Int4 => {
            let packed = n.div_ceil(2);
            let t = &bytes[packed + SCALE_SIZE..];
            let trailer = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            if trailer as usize != n {
                let expected = n as u64;
                return Err(ProtocolError::CountTrailerMismatch { trailer, expected });
            }
            let scales = read_f32s(&bytes[packed..packed + SCALE_SIZE]);
            check_scales(&scales)?;
            let q = unpack_int4(&bytes[..packed], n)?;
            Ok(PayloadValues::Int4 {
                q,
                scale: scales[0],
            })
        }
        Encoding::Rice => rice::parse(bytes, rows, cols).map(PayloadValues::Rice),
    }
}

fn read_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(F32_SIZE)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Errors on the first NaN or infinite value.
pub(crate) fn check_finite(values: &[f32]) -> Result<(), ProtocolError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(ProtocolError::NonFiniteValue {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

fn check_scales(scales: &[f32]) -> Result<(), ProtocolError> {
    match scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        Some(index) => Err(ProtocolError::BadScale {
            index,
            scale: scales[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_prototype() {
        // 768-wide decode row: 796-byte frame with the 24-byte header, 3096 for f32.
        assert_eq!(payload_size(Encoding::Int8, 1, 768), Some(772));
        assert_eq!(payload_size(Encoding::F32, 1, 768), Some(3072));
        assert_eq!(payload_size(Encoding::Int8, 2, 3), Some(6 + 8 + 2));
        assert_eq!(payload_size(Encoding::Int4, 1, 5), Some(3 + 8));
        assert_eq!(payload_size(Encoding::Int8Delta, 2, 3), None);
        assert_eq!(payload_size(Encoding::Int8, 70_000, 1), None);
        assert_eq!(payload_size(Encoding::F32, 0, 3), None);
    }

    #[test]
    fn int8_rows_layout_checks_trailer_scale_and_range() {
        let good = PayloadValues::Int8 {
            q: vec![1, 2, 3, 4],
            scales: vec![0.5, 0.25],
        };
        let mut bytes = write_payload(&good, 2);
        assert_eq!(parse_payload(Encoding::Int8, 2, 2, &bytes).unwrap(), good);
        bytes[12] = 3;
        assert!(matches!(
            parse_payload(Encoding::Int8, 2, 2, &bytes),
            Err(ProtocolError::RowsTrailerMismatch {
                trailer: 3,
                dim0: 2
            })
        ));
        bytes[12] = 2;
        bytes[0] = 0x80;
        assert!(matches!(
            parse_payload(Encoding::Int8, 2, 2, &bytes),
            Err(ProtocolError::Int8OutOfRange { index: 0 })
        ));
        bytes[0] = 1;
        bytes[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(matches!(
            parse_payload(Encoding::Int8, 2, 2, &bytes),
            Err(ProtocolError::BadScale { index: 0, .. })
        ));
    }
}
