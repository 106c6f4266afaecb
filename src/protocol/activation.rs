//! ACTIVATION frames: hidden states `[rows, cols]` between shards, in any `Encoding`, with the
//! optional run-length stage.
//!
//! seqPos of an ACTIVATION is the sequence length after the step (prefill: the prompt length;
//! a decode step at position p sends p + 1), modulo 2^16. Delta frames need state on both
//! ends and are built and read by `DeltaEncoder` / `DeltaDecoder` (delta.rs); this file builds
//! and reads everything else.

use super::error::ProtocolError;
use super::frame::{Frame, Limits};
use super::header::HEADER_SIZE;
use super::payload::{PayloadValues, parse_payload, payload_size, rice_shape_ok, write_payload};
use super::quant::{INT4_MAX_Q, INT8_MAX_Q, quantize_into};
use super::rice::{self, RICE_DEFAULT_RATIO};
use super::rle;
use super::types::{Encoding, MessageType};

/// A block of hidden states, row-major: `data.len() == rows * cols`.
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    /// Rows (tokens), dim0.
    pub rows: u32,
    /// Columns (hidden size), dim1.
    pub cols: u32,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// An ACTIVATION payload as read from a frame, before any delta is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationPayload {
    /// How it was encoded.
    pub encoding: Encoding,
    /// Whether the run-length stage was used.
    pub compressed: bool,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// The values as they travelled (quantized or f32).
    pub values: PayloadValues,
}

impl Activation {
    /// An activation, checking that `data` holds `rows * cols` values.
    pub fn new(rows: u32, cols: u32, data: Vec<f32>) -> Result<Activation, ProtocolError> {
        let expected = u64::from(rows) * u64::from(cols);
        if data.len() as u64 != expected {
            return Err(ProtocolError::DataLengthMismatch {
                rows,
                cols,
                expected,
                len: data.len(),
            });
        }
        Ok(Activation { rows, cols, data })
    }

    /// The last row (the reference a delta stream continues from).
    pub fn last_row(&self) -> &[f32] {
        let start = self.data.len().saturating_sub(self.cols as usize);
        &self.data[start..]
    }

    /// Builds a frame. `Encoding::Int8Delta` is refused: use a `DeltaEncoder`. With `compress`,
    /// the run-length stage is applied when it makes the payload smaller.
    pub fn to_frame(
        &self,
        seq_pos: u16,
        request_id: u32,
        encoding: Encoding,
        compress: bool,
    ) -> Result<Frame, ProtocolError> {
        if encoding == Encoding::Int8Delta {
            return Err(ProtocolError::DeltaNeedsEncoder);
        }
        let values = self.quantize(encoding)?;
        Ok(build_frame(
            seq_pos, request_id, self.rows, self.cols, encoding, &values, compress,
        ))
    }

    /// Builds a RICE frame whose steps are `ratio` times each row's trimmed mean magnitude
    /// (`to_frame(.., Encoding::Rice, ..)` uses `RICE_DEFAULT_RATIO`). A larger ratio gives a
    /// smaller frame and a larger error (at most half a step a value).
    pub fn to_rice_frame(
        &self,
        seq_pos: u16,
        request_id: u32,
        ratio: f32,
        compress: bool,
    ) -> Result<Frame, ProtocolError> {
        self.check_shape(Encoding::Rice)?;
        let values = PayloadValues::Rice(rice::quantize(&self.data, self.cols as usize, ratio)?);
        Ok(build_frame(
            seq_pos,
            request_id,
            self.rows,
            self.cols,
            Encoding::Rice,
            &values,
            compress,
        ))
    }

    /// Reads a non-delta ACTIVATION frame; a DELTA frame is an error (it needs the reference
    /// a `DeltaDecoder` holds).
    pub fn from_frame(frame: &Frame, limits: &Limits) -> Result<Activation, ProtocolError> {
        let p = read_activation(frame, limits)?;
        if p.encoding == Encoding::Int8Delta {
            return Err(ProtocolError::DeltaWithoutReference);
        }
        Ok(Activation {
            rows: p.rows,
            cols: p.cols,
            data: p.values.dequantize(p.cols),
        })
    }

    /// Quantizes (or copies) the values for `encoding`; Int8Delta quantizes like Int8.
    pub fn quantize(&self, encoding: Encoding) -> Result<PayloadValues, ProtocolError> {
        self.check_shape(encoding)?;
        match encoding {
            Encoding::F32 => {
                super::payload::check_finite(&self.data)?;
                Ok(PayloadValues::F32(self.data.clone()))
            }
            Encoding::Int8 | Encoding::Int8Delta => {
                let mut q = Vec::with_capacity(self.data.len());
                let scales = self
                    .data
                    .chunks(self.cols as usize)
                    .enumerate()
                    .map(|(r, row)| quantize_into(row, INT8_MAX_Q, r * self.cols as usize, &mut q))
                    .collect::<Result<Vec<f32>, _>>()?;
                Ok(PayloadValues::Int8 { q, scales })
            }
            Encoding::Int4 => {
                let mut q = Vec::with_capacity(self.data.len());
                let scale = quantize_into(&self.data, INT4_MAX_Q, 0, &mut q)?;
                Ok(PayloadValues::Int4 { q, scale })
            }
            Encoding::Rice => Ok(PayloadValues::Rice(rice::quantize(
                &self.data,
                self.cols as usize,
                RICE_DEFAULT_RATIO,
            )?)),
        }
    }

    fn check_shape(&self, encoding: Encoding) -> Result<(), ProtocolError> {
        let (rows, cols) = (self.rows, self.cols);
        let expected = u64::from(rows) * u64::from(cols);
        if self.data.len() as u64 != expected {
            return Err(ProtocolError::DataLengthMismatch {
                rows,
                cols,
                expected,
                len: self.data.len(),
            });
        }
        check_dims(encoding, rows, cols)
    }
}

/// Builds an INT8 ACTIVATION frame from values already quantized per row (an engine that
/// quantizes on the GPU): `q` is `rows * cols` values in [-127, 127], one finite, positive
/// scale a row. Nothing is quantized again.
pub fn int8_frame(
    seq_pos: u16,
    request_id: u32,
    rows: u32,
    cols: u32,
    q: Vec<i8>,
    scales: Vec<f32>,
) -> Result<Frame, ProtocolError> {
    check_dims(Encoding::Int8, rows, cols)?;
    let expected = u64::from(rows) * u64::from(cols);
    if q.len() as u64 != expected {
        return Err(ProtocolError::DataLengthMismatch {
            rows,
            cols,
            expected,
            len: q.len(),
        });
    }
    if scales.len() != rows as usize {
        return Err(ProtocolError::DataLengthMismatch {
            rows,
            cols: 1,
            expected: u64::from(rows),
            len: scales.len(),
        });
    }
    if q.contains(&i8::MIN) {
        return Err(ProtocolError::BadShape {
            msg_type: MessageType::Activation,
            dim0: rows,
            dim1: cols,
            reason: "int8 values must be in [-127, 127]",
        });
    }
    if let Some((index, &value)) = scales
        .iter()
        .enumerate()
        .find(|(_, s)| !s.is_finite() || **s <= 0.0)
    {
        return Err(ProtocolError::NonFiniteValue { index, value });
    }
    let values = PayloadValues::Int8 { q, scales };
    Ok(build_frame(
        seq_pos,
        request_id,
        rows,
        cols,
        Encoding::Int8,
        &values,
        false,
    ))
}

/// Shape rules shared by building and reading: nonzero dims, DELTA one row, int8 at most
/// 65535 rows, payload within u32.
fn check_dims(encoding: Encoding, rows: u32, cols: u32) -> Result<(), ProtocolError> {
    let bad = |reason| ProtocolError::BadShape {
        msg_type: MessageType::Activation,
        dim0: rows,
        dim1: cols,
        reason,
    };
    if rows == 0 || cols == 0 {
        return Err(bad("both dims must be nonzero"));
    }
    if encoding == Encoding::Int8Delta && rows != 1 {
        return Err(ProtocolError::DeltaNeedsOneRow { rows });
    }
    if encoding == Encoding::Rice {
        if !rice_shape_ok(rows, cols) {
            return Err(bad("rice frames hold at most 2^32 - 1 values"));
        }
        return Ok(());
    }
    if payload_size(encoding, rows, cols).is_none() {
        return Err(bad(
            "shape cannot be expressed in this encoding (int8: at most 65535 rows; payload within u32)",
        ));
    }
    Ok(())
}

/// Builds an ACTIVATION frame from values already quantized for `encoding` (shape checked).
pub(crate) fn build_frame(
    seq_pos: u16,
    request_id: u32,
    rows: u32,
    cols: u32,
    encoding: Encoding,
    values: &PayloadValues,
    compress: bool,
) -> Frame {
    let raw = write_payload(values, rows);
    let packed = if compress { rle::compress(&raw) } else { None };
    let compressed = packed.is_some();
    Frame {
        msg_type: MessageType::Activation,
        flags: encoding.flags(compressed),
        seq_pos,
        request_id,
        dim0: rows,
        dim1: cols,
        payload: packed.unwrap_or(raw),
    }
}

/// Reads any ACTIVATION frame, checking type, flags, limits, shape and the payload layout.
pub fn read_activation(frame: &Frame, limits: &Limits) -> Result<ActivationPayload, ProtocolError> {
    if frame.msg_type != MessageType::Activation {
        return Err(ProtocolError::WrongType {
            expected: MessageType::Activation,
            got: frame.msg_type,
        });
    }
    frame.flags.check_for(MessageType::Activation)?;
    let encoding = Encoding::from_flags(frame.flags);
    let (rows, cols) = (frame.dim0, frame.dim1);
    limits.check_rows(rows)?;
    limits.check_cols(cols)?;
    check_dims(encoding, rows, cols)?;
    let values = if frame.flags.compressed {
        let raw = rle::decompress(&frame.payload, limits.max_payload_bytes())?;
        parse_payload(encoding, rows, cols, &raw)?
    } else {
        parse_payload(encoding, rows, cols, &frame.payload)?
    };
    Ok(ActivationPayload {
        encoding,
        compressed: frame.flags.compressed,
        rows,
        cols,
        values,
    })
}

/// Size in bytes of an encoded ACTIVATION frame (header included, no compression), or `None`
/// when the shape cannot be expressed or the size depends on the values (RICE: use the
/// frame's `encoded_len`). Divide by `rows` for bytes per token per hop.
pub fn encoded_size(encoding: Encoding, rows: u32, cols: u32) -> Option<u64> {
    payload_size(encoding, rows, cols).map(|p| p + HEADER_SIZE as u64)
}

/// How many times smaller than an f32 frame of the same shape a frame of `frame_bytes` is
/// (the ratio the issue reports: whole frames, headers included).
pub fn ratio_vs_f32(frame_bytes: u64, rows: u32, cols: u32) -> Option<f64> {
    let f32_bytes = encoded_size(Encoding::F32, rows, cols)?;
    (frame_bytes > 0).then(|| f32_bytes as f64 / frame_bytes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prototype_ratio_for_a_768_row() {
        assert_eq!(encoded_size(Encoding::Int8, 1, 768), Some(796));
        assert_eq!(encoded_size(Encoding::F32, 1, 768), Some(3096));
        let r = ratio_vs_f32(796, 1, 768).unwrap();
        assert!((r - 3.889).abs() < 1e-3);
    }

    #[test]
    fn every_encoding_round_trips_within_its_step() {
        let data: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let act = Activation::new(3, 8, data).unwrap();
        for (enc, tol) in [
            (Encoding::F32, 0.0),
            (Encoding::Int8, 3.0 / 254.0),
            (Encoding::Int4, 3.0 / 14.0),
        ] {
            for compress in [false, true] {
                let frame = act.to_frame(3, 9, enc, compress).unwrap();
                let back = Activation::from_frame(&frame, &Limits::default()).unwrap();
                let err = act
                    .data
                    .iter()
                    .zip(&back.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(err <= tol + 1e-6, "{enc:?}: max error {err}");
            }
        }
        assert_eq!(
            act.to_frame(3, 9, Encoding::Int8Delta, false),
            Err(ProtocolError::DeltaNeedsEncoder)
        );
    }
}

#[cfg(test)]
mod int8_frame_tests {
    use super::*;
    use crate::protocol::{Limits, decode, encode};

    #[test]
    fn prequantized_rows_make_the_frame_quantizing_would() {
        let data: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.37).collect();
        let act = Activation::new(2, 6, data).unwrap();
        let want = act.to_frame(9, 4, Encoding::Int8, false).unwrap();
        let PayloadValues::Int8 { q, scales } = act.quantize(Encoding::Int8).unwrap() else {
            panic!("int8 values");
        };
        let got = int8_frame(9, 4, 2, 6, q, scales).unwrap();
        assert_eq!(encode(&got), encode(&want));
        let back = Activation::from_frame(
            &decode(&encode(&got), &Limits::default()).unwrap(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!((back.rows, back.cols), (2, 6));
    }

    #[test]
    fn bad_prequantized_rows_are_refused() {
        let ok = || (vec![1i8; 6], vec![0.5f32; 2]);
        let (q, s) = ok();
        assert!(
            int8_frame(0, 1, 2, 3, q[..5].to_vec(), s).is_err(),
            "short q"
        );
        let (q, _) = ok();
        assert!(
            int8_frame(0, 1, 2, 3, q, vec![0.5]).is_err(),
            "one scale for two rows"
        );
        let (mut q, s) = ok();
        q[3] = i8::MIN;
        assert!(int8_frame(0, 1, 2, 3, q, s).is_err(), "-128");
        let (q, _) = ok();
        assert!(
            int8_frame(0, 1, 2, 3, q, vec![0.5, 0.0]).is_err(),
            "zero scale"
        );
        let (q, _) = ok();
        assert!(
            int8_frame(0, 1, 2, 3, q, vec![f32::NAN, 1.0]).is_err(),
            "NaN scale"
        );
        let (q, s) = ok();
        assert!(int8_frame(0, 1, 0, 3, q, s).is_err(), "zero rows");
        let (q, s) = ok();
        assert!(int8_frame(0, 1, 2, 3, q, s).is_ok());
    }
}
