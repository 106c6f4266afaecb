//! Delta encoding that cannot drift: the sender mirrors the receiver's reconstruction.
//!
//! The prototype's sender kept the exact previous activation while its receiver kept the
//! dequantized one, so each step's quantization error was never corrected and the two sides
//! walked apart. Here the `DeltaEncoder` owns a `DeltaDecoder` and feeds it every frame it
//! sends, so its reference is, bit for bit, what the receiver holds. Each delta is taken
//! against that reference, which folds the previous step's error into the next delta: the
//! error stays within half a quantization step instead of accumulating.
//!
//! Any non-DELTA ACTIVATION frame is a keyframe: it replaces the reference with its last row
//! (dequantized). One encoder/decoder pair serves one request on one hop.

use super::activation::{Activation, build_frame, read_activation};
use super::error::ProtocolError;
use super::frame::{Frame, Limits};
use super::payload::PayloadValues;
use super::quant::{INT8_MAX_Q, delta_reconstruct, quantize_into};
use super::types::Encoding;

/// Receiver side: applies DELTA frames to its reconstruction of the previous row.
#[derive(Clone, Debug, Default)]
pub struct DeltaDecoder {
    reference: Option<Vec<f32>>,
}

impl DeltaDecoder {
    /// A decoder with no reference: the first frame must be a keyframe.
    pub fn new() -> DeltaDecoder {
        DeltaDecoder::default()
    }

    /// The current reconstruction (the last row received), if any.
    pub fn reference(&self) -> Option<&[f32]> {
        self.reference.as_deref()
    }

    /// Forgets the reference (e.g. when the session restarts).
    pub fn reset(&mut self) {
        self.reference = None;
    }

    /// Decodes any ACTIVATION frame. Keyframes set the reference to their last row; DELTA
    /// frames are added to it. On error the reference is left unchanged.
    pub fn decode(&mut self, frame: &Frame, limits: &Limits) -> Result<Activation, ProtocolError> {
        let p = read_activation(frame, limits)?;
        if p.encoding != Encoding::Int8Delta {
            let act = Activation {
                rows: p.rows,
                cols: p.cols,
                data: p.values.dequantize(p.cols),
            };
            self.reference = Some(act.last_row().to_vec());
            return Ok(act);
        }
        let reference = self
            .reference
            .as_ref()
            .ok_or(ProtocolError::DeltaWithoutReference)?;
        if reference.len() != p.cols as usize {
            return Err(ProtocolError::DeltaWidthMismatch {
                expected: reference.len(),
                got: p.cols,
            });
        }
        let PayloadValues::Int8 { q, scales } = &p.values else {
            return Err(ProtocolError::DeltaNeedsInt8 {
                quantization: "other",
            });
        };
        let scale = scales.first().copied().unwrap_or(1.0);
        let data: Vec<f32> = reference
            .iter()
            .zip(q)
            .map(|(&r, &v)| delta_reconstruct(r, v, scale))
            .collect();
        super::payload::check_finite(&data)?;
        self.reference = Some(data.clone());
        Ok(Activation {
            rows: 1,
            cols: p.cols,
            data,
        })
    }
}

/// Sender side: emits keyframes and DELTA frames, tracking the receiver's reconstruction.
#[derive(Clone, Debug)]
pub struct DeltaEncoder {
    mirror: DeltaDecoder,
    keyframe_interval: u32,
    deltas_since_keyframe: u32,
    keyframe_encoding: Encoding,
    compress: bool,
    force_keyframe: bool,
}

impl DeltaEncoder {
    /// An encoder sending a keyframe every `keyframe_interval` frames (0: only the first
    /// frame, width changes, several-row frames and `force_keyframe` send keyframes).
    /// Keyframes are int8, deltas are not compressed, until changed by the `with_` methods.
    pub fn new(keyframe_interval: u32) -> DeltaEncoder {
        DeltaEncoder {
            mirror: DeltaDecoder::new(),
            keyframe_interval,
            deltas_since_keyframe: 0,
            keyframe_encoding: Encoding::Int8,
            compress: false,
            force_keyframe: false,
        }
    }

    /// Encoding of keyframes (`Int8Delta` means `Int8`).
    pub fn with_keyframe_encoding(mut self, encoding: Encoding) -> DeltaEncoder {
        self.keyframe_encoding = if encoding == Encoding::Int8Delta {
            Encoding::Int8
        } else {
            encoding
        };
        self
    }

    /// Whether frames may use the run-length stage (applied only when smaller).
    pub fn with_compression(mut self, compress: bool) -> DeltaEncoder {
        self.compress = compress;
        self
    }

    /// Makes the next frame a keyframe (e.g. after the receiver was replaced).
    pub fn force_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// The receiver's reconstruction of the last row, as this encoder mirrors it.
    pub fn reference(&self) -> Option<&[f32]> {
        self.mirror.reference()
    }

    /// Encodes the next activation of the stream. On error nothing changes.
    pub fn encode(
        &mut self,
        act: &Activation,
        seq_pos: u16,
        request_id: u32,
    ) -> Result<Frame, ProtocolError> {
        let expected = u64::from(act.rows) * u64::from(act.cols);
        if act.data.len() as u64 != expected {
            let (rows, cols, len) = (act.rows, act.cols, act.data.len());
            return Err(ProtocolError::DataLengthMismatch {
                rows,
                cols,
                expected,
                len,
            });
        }
        let due =
            self.keyframe_interval != 0 && self.deltas_since_keyframe + 1 >= self.keyframe_interval;
        let reference = match self.mirror.reference() {
            Some(r) if act.rows == 1 && r.len() == act.cols as usize && !due => Some(r),
            _ => None,
        };
        let (frame, is_delta) = match reference {
            Some(r) if !self.force_keyframe => {
                let diff = Activation::new(
                    1,
                    act.cols,
                    act.data.iter().zip(r).map(|(x, r)| x - r).collect(),
                )?;
                let mut q = Vec::with_capacity(diff.data.len());
                let scale = quantize_into(&diff.data, INT8_MAX_Q, 0, &mut q)?;
                let values = PayloadValues::Int8 {
                    q,
                    scales: vec![scale],
                };
                let enc = Encoding::Int8Delta;
                (
                    build_frame(
                        seq_pos,
                        request_id,
                        1,
                        act.cols,
                        enc,
                        &values,
                        self.compress,
                    ),
                    true,
                )
            }
            _ => (
                act.to_frame(seq_pos, request_id, self.keyframe_encoding, self.compress)?,
                false,
            ),
        };
        self.mirror.decode(&frame, &Limits::unlimited())?;
        self.force_keyframe = false;
        self.deltas_since_keyframe = if is_delta {
            self.deltas_since_keyframe + 1
        } else {
            0
        };
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_come_on_schedule_and_reset_the_reference() {
        let mut enc = DeltaEncoder::new(3);
        let mut dec = DeltaDecoder::new();
        let mut kinds = Vec::new();
        for step in 0..7 {
            let act = Activation::new(1, 4, vec![step as f32, 1.0, -2.0, 0.5]).unwrap();
            let frame = enc.encode(&act, step as u16 + 1, 1).unwrap();
            kinds.push(frame.flags.delta);
            let got = dec.decode(&frame, &Limits::default()).unwrap();
            assert_eq!(Some(got.data.as_slice()), enc.reference());
        }
        assert_eq!(kinds, [false, true, true, false, true, true, false]);
        enc.force_keyframe();
        let act = Activation::new(1, 4, vec![0.0; 4]).unwrap();
        assert!(!enc.encode(&act, 8, 1).unwrap().flags.delta);
    }

    #[test]
    fn delta_before_keyframe_or_with_wrong_width_is_an_error() {
        let mut enc = DeltaEncoder::new(0);
        let act = Activation::new(1, 4, vec![1.0; 4]).unwrap();
        enc.encode(&act, 1, 1).unwrap();
        let delta = enc.encode(&act, 2, 1).unwrap();
        let mut fresh = DeltaDecoder::new();
        assert_eq!(
            fresh.decode(&delta, &Limits::default()),
            Err(ProtocolError::DeltaWithoutReference)
        );
        let wide = Activation::new(1, 5, vec![1.0; 5]).unwrap();
        fresh
            .decode(
                &wide.to_frame(1, 1, Encoding::F32, false).unwrap(),
                &Limits::default(),
            )
            .unwrap();
        assert!(matches!(
            fresh.decode(&delta, &Limits::default()),
            Err(ProtocolError::DeltaWidthMismatch {
                expected: 5,
                got: 4
            })
        ));
    }
}
