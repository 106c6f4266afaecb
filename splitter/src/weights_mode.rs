//! `--weights`: which storage type each tensor of a split gets, and the one-line notes that say
//! when the source's type could not be kept.
//!
//! Vectors (norms, biases) are always f16. Matrices follow the mode:
//! - `keep`: a GGUF tensor of a kept type (F32, F16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) is copied
//!   block for block; another type is converted to the nearest kept one ([`nearest_kept`]) and
//!   noted (also a K-quant whose rows are not whole 256-weight super-blocks). A
//!   Hugging Face folder has no blocks to keep, so its matrices are f16.
//! - `f16`: every matrix is f16 (the engines' native type).
//! - `q8_0`, `q4_0`, `q4_1`: every matrix is quantized with ggml's reference rounding, except
//!   that a GGUF tensor already in that type is copied; re-quantizing another block type is
//!   allowed but noted, since it compounds two roundings.

use std::collections::BTreeMap;

use crate::error::{Result, SplitError};
use crate::quant::GgmlType;
use crate::tensor_type::TensorType;

/// What `synapse split --weights` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsMode {
    /// Keep the source's GGML blocks where shards can hold them.
    Keep,
    /// Every matrix f16.
    #[default]
    F16,
    /// Every matrix in this block type.
    Quantize(TensorType),
}

impl WeightsMode {
    /// Every mode, as the CLI names them.
    pub const NAMES: [&str; 5] = ["keep", "f16", "q8_0", "q4_0", "q4_1"];

    /// The mode named `s`.
    pub fn parse(s: &str) -> Result<WeightsMode> {
        match s.to_ascii_lowercase().as_str() {
            "keep" => Ok(WeightsMode::Keep),
            "f16" => Ok(WeightsMode::F16),
            other => match TensorType::parse(other) {
                Some(t) if TensorType::QUANTIZABLE.contains(&t) => Ok(WeightsMode::Quantize(t)),
                _ => Err(SplitError::Invalid(format!(
                    "unknown --weights `{s}`: choose one of {}",
                    Self::NAMES.join(", ")
                ))),
            },
        }
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            WeightsMode::Keep => "keep",
            WeightsMode::F16 => "f16",
            WeightsMode::Quantize(t) => t.name(),
        }
    }
}

/// How the writer produces one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Storage type in the shard.
    pub ty: TensorType,
    /// True when the source's bytes are copied as they are (rows reordered at most).
    pub copy: bool,
}

/// The kept type closest to GGML type `g` that a matrix of `cols` columns can use: 4-bit
/// types become Q4_1, 5- to 8-bit ones Q8_0, BF16 and F64 become f16 and f32; a block type
/// whose rows would not be whole blocks falls back to f16.
pub fn nearest_kept(g: GgmlType, cols: usize) -> TensorType {
    use GgmlType as G;
    let t = match g {
        G::F32 | G::F64 => TensorType::F32,
        G::F16 | G::BF16 | G::I8 | G::I16 | G::I32 | G::I64 => TensorType::F16,
        G::Q8_0 | G::Q8_1 | G::Q8_K | G::Q5_0 | G::Q5_1 | G::Q5_K | G::Q6_K => TensorType::Q8_0,
        G::Q4_0 => TensorType::Q4_0,
        _ => TensorType::Q4_1,
    };
    if t.check_shape(&[1, cols]).is_ok() {
        t
    } else {
        TensorType::F16
    }
}

/// Counts conversions by (source type, storage type), for one note per pair.
#[derive(Debug, Default)]
pub struct Notes {
    converted: BTreeMap<(String, &'static str), (usize, bool)>,
}

impl Notes {
    /// The notes, one line per (source type, storage type) pair.
    pub fn lines(&self) -> Vec<String> {
        self.converted
            .iter()
            .map(|((from, to), (n, requant))| {
                let s = if *n == 1 { "" } else { "s" };
                if *requant {
                    format!(
                        "re-quantized {n} {from} tensor{s} to {to} (two roundings; \
                         --weights keep keeps the file's own blocks)"
                    )
                } else {
                    format!("converted {n} {from} tensor{s} to {to} (shards do not keep {from})")
                }
            })
            .collect()
    }
}

/// Chooses how tensor `name` of `shape` is stored under `mode`; `source` is its GGML type in a
/// GGUF (`None` for a Hugging Face folder). Conversions are counted in `notes`.
pub fn choose(
    mode: WeightsMode,
    name: &str,
    shape: &[usize],
    source: Option<GgmlType>,
    notes: &mut Notes,
) -> Result<Choice> {
    if shape.len() != 2 {
        return Ok(Choice {
            ty: TensorType::F16,
            copy: source == Some(GgmlType::F16),
        });
    }
    let cols = shape[1];
    let kept = source.and_then(TensorType::from_ggml);
    let choice = match mode {
        WeightsMode::F16 => Choice {
            ty: TensorType::F16,
            copy: source == Some(GgmlType::F16),
        },
        WeightsMode::Keep => match (source, kept) {
            (None, _) => Choice {
                ty: TensorType::F16,
                copy: false,
            },
            (Some(_), Some(t)) if t.check_shape(shape).is_ok() => Choice { ty: t, copy: true },
            (Some(g), _) => {
                let ty = nearest_kept(g, cols);
                let e = notes
                    .converted
                    .entry((g.name().to_string(), ty.name()))
                    .or_insert((0, false));
                e.0 += 1;
                Choice { ty, copy: false }
            }
        },
        WeightsMode::Quantize(t) => {
            t.check_shape(shape).map_err(|what| {
                SplitError::Invalid(format!(
                    "--weights {t}: tensor `{name}` {shape:?} cannot be stored: {what}; \
                     use --weights f16 (or keep) for this model"
                ))
            })?;
            match source {
                Some(g) if g == t.ggml() => Choice { ty: t, copy: true },
                Some(g) if !matches!(g, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) => {
                    let e = notes
                        .converted
                        .entry((g.name().to_string(), t.name()))
                        .or_insert((0, true));
                    e.0 += 1;
                    Choice { ty: t, copy: false }
                }
                _ => Choice { ty: t, copy: false },
            }
        }
    };
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_copies_kept_types_and_notes_the_rest_once_per_type() {
        let mut notes = Notes::default();
        let m = WeightsMode::Keep;
        let c = choose(m, "a", &[4, 64], Some(GgmlType::Q4_1), &mut notes).unwrap();
        assert_eq!(
            c,
            Choice {
                ty: TensorType::Q4_1,
                copy: true
            }
        );
        for _ in 0..3 {
            let c = choose(m, "b", &[4, 64], Some(GgmlType::Q6_K), &mut notes).unwrap();
            assert_eq!(
                c,
                Choice {
                    ty: TensorType::Q8_0,
                    copy: false
                }
            );
        }
        let c = choose(m, "c", &[4, 64], Some(GgmlType::BF16), &mut notes).unwrap();
        assert_eq!(c.ty, TensorType::F16);
        let c = choose(m, "n", &[64], Some(GgmlType::F32), &mut notes).unwrap();
        assert_eq!(c.ty, TensorType::F16, "vectors stay f16");
        assert_eq!(notes.lines().len(), 2, "{:?}", notes.lines());
        assert!(
            notes
                .lines()
                .iter()
                .any(|l| l.starts_with("converted 3 Q6_K tensors to q8_0"))
        );
        let c = choose(m, "h", &[4, 64], None, &mut notes).unwrap();
        assert_eq!(
            c.ty,
            TensorType::F16,
            "a Hugging Face folder has no blocks to keep"
        );
    }

    #[test]
    fn quantize_refuses_rows_that_are_not_whole_blocks() {
        let mut notes = Notes::default();
        let m = WeightsMode::parse("Q8_0").unwrap();
        let err = choose(m, "h.0.attn.c_proj.weight", &[48, 48], None, &mut notes).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("h.0.attn.c_proj.weight") && msg.contains("48"),
            "{msg}"
        );
        let c = choose(m, "x", &[48, 64], Some(GgmlType::Q4_1), &mut notes).unwrap();
        assert_eq!(
            c,
            Choice {
                ty: TensorType::Q8_0,
                copy: false
            }
        );
        assert!(notes.lines()[0].starts_with("re-quantized 1 Q4_1 tensor to q8_0"));
        assert!(
            WeightsMode::parse("q4_k").is_err(),
            "K-quants are kept, not made"
        );
        let c = choose(
            WeightsMode::Keep,
            "k",
            &[4, 256],
            Some(GgmlType::Q4_K),
            &mut notes,
        );
        assert_eq!(
            c.unwrap(),
            Choice {
                ty: TensorType::Q4_K,
                copy: true
            }
        );
        let c = choose(
            WeightsMode::Keep,
            "k",
            &[4, 64],
            Some(GgmlType::Q6_K),
            &mut notes,
        );
        assert_eq!(
            c.unwrap(),
            Choice {
                ty: TensorType::Q8_0,
                copy: false
            }
        );
        assert!(WeightsMode::parse("f32").is_err());
    }
}
