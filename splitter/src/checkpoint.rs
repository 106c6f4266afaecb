//! An opened checkpoint in canonical form: architecture, hyper-parameters, tokenizer, and a
//! reader that yields every tensor by its canonical name in the canonical `[out, in]` layout,
//! whatever the source format. The writer only ever sees this.

use std::path::{Path, PathBuf};

use crate::error::{Result, SplitError};
use crate::manifest::{Architecture, ModelConfig, Source, names};
use crate::quant::GgmlType;

/// Produces canonical tensors as f32, converting layout and type from the source.
pub trait TensorReader {
    /// Tensor `name` (a canonical name), row-major with shape `shape` (the shape the config
    /// implies); a source tensor of another shape is an error naming both.
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// The GGML type tensor `name` is stored in, when the source stores GGML types (GGUF);
    /// `None` for sources of plain floats (Hugging Face), whose values come from [`read`].
    ///
    /// [`read`]: TensorReader::read
    fn source_type(&self, _name: &str) -> Option<GgmlType> {
        None
    }

    /// The tensor's bytes in its source GGML type, rows in canonical order (a row
    /// permutation such as GGUF's Q/K one is undone on whole rows of blocks). Only called
    /// when [`source_type`](TensorReader::source_type) is `Some`.
    fn read_raw(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let _ = shape;
        Err(SplitError::Invalid(format!(
            "tensor `{name}`: this source has no GGML blocks"
        )))
    }
}

/// A checkpoint ready to be sharded.
pub struct Checkpoint {
    pub path: PathBuf,
    pub arch: Architecture,
    pub config: ModelConfig,
    /// tokenizer.json contents (Hugging Face tokenizers format).
    pub tokenizer_json: String,
    pub chat_template: Option<String>,
    pub source: Source,
    pub reader: Box<dyn TensorReader>,
}

/// Which part of the model a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Embedding,
    Layer(usize),
    Head,
}

/// The canonical tensors of a model with their shapes, grouped by part. The head part lists
/// `lm_head.weight` even for a tied head: the writer decides whether the last shard needs it.
pub fn canonical_tensors(arch: Architecture, c: &ModelConfig) -> Vec<(Part, String, Vec<usize>)> {
    let (v, h, f) = (c.vocab_size, c.hidden_size, c.ffn_size);
    let mut out = Vec::new();
    match arch {
        Architecture::Gpt2 => {
            use names::gpt2 as n;
            out.push((Part::Embedding, n::WTE.to_string(), vec![v, h]));
            out.push((
                Part::Embedding,
                n::WPE.to_string(),
                vec![c.context_length, h],
            ));
            for i in 0..c.n_layers {
                let shapes: [Vec<usize>; 12] = [
                    vec![h],
                    vec![h],
                    vec![3 * h, h],
                    vec![3 * h],
                    vec![h, h],
                    vec![h],
                    vec![h],
                    vec![h],
                    vec![f, h],
                    vec![f],
                    vec![h, f],
                    vec![h],
                ];
                for (suffix, shape) in n::LAYER.iter().zip(shapes) {
                    out.push((Part::Layer(i), n::layer(i, suffix), shape));
                }
            }
            out.push((Part::Head, n::LN_F_W.to_string(), vec![h]));
            out.push((Part::Head, n::LN_F_B.to_string(), vec![h]));
            out.push((Part::Head, n::HEAD.to_string(), vec![v, h]));
        }
        Architecture::Llama => {
            use names::llama as n;
            let (qd, kvd) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
            out.push((Part::Embedding, n::EMBED.to_string(), vec![v, h]));
            for i in 0..c.n_layers {
                let shapes: [Vec<usize>; 9] = [
                    vec![h],
                    vec![qd, h],
                    vec![kvd, h],
                    vec![kvd, h],
                    vec![h, qd],
                    vec![h],
                    vec![f, h],
                    vec![f, h],
                    vec![h, f],
                ];
                for (suffix, shape) in n::LAYER.iter().zip(shapes) {
                    out.push((Part::Layer(i), n::layer(i, suffix), shape));
                }
            }
            out.push((Part::Head, n::NORM.to_string(), vec![h]));
            out.push((Part::Head, n::HEAD.to_string(), vec![v, h]));
        }
    }
    out
}

/// Canonical name of the output head of `arch`.
pub fn head_name(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Gpt2 => names::gpt2::HEAD,
        Architecture::Llama => names::llama::HEAD,
    }
}

/// Canonical name of the token embedding of `arch`.
pub fn embedding_name(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Gpt2 => names::gpt2::WTE,
        Architecture::Llama => names::llama::EMBED,
    }
}

/// Checks that `found` equals `expected`, naming the tensor and file otherwise.
pub fn check_shape(path: &Path, tensor: &str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found != expected {
        return Err(SplitError::Shape {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            found: found.to_vec(),
            expected: expected.to_vec(),
        });
    }
    Ok(())
}

/// Transposes a row-major `(rows, cols)` matrix.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}
