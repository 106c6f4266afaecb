//! The shard manifest (`manifest.json`): what a split model directory holds and how the model is
//! shaped. It is the contract between the splitter, the engines and the coordinator, so its
//! field names are stable; `version` changes when they do.
//!
//! Tensor names inside shard files follow the Hugging Face checkpoint names of each architecture
//! (see [`names`]). Every matrix is stored row-major as `[out, in]`, so a matrix-vector product
//! reads contiguous rows: GPT-2's Conv1D `[in, out]` weights are transposed on import.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SplitError};

/// Format name written into every manifest.
pub const FORMAT_NAME: &str = "synapse-shards";
/// Format version written into every manifest; readers refuse other versions. Version 2 added
/// each tensor's storage type ([`TensorType`]) and quantized blocks in shard files.
pub const FORMAT_VERSION: u32 = 2;
/// File name of the manifest inside a model directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the tokenizer inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The model families Synapse runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// GPT-2: learned positions, LayerNorm, gelu (tanh), fused QKV with biases.
    Gpt2,
    /// Llama: RMSNorm, rotate-half RoPE, SwiGLU, grouped-query attention.
    Llama,
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Architecture::Gpt2 => "gpt2",
            Architecture::Llama => "llama",
        })
    }
}

/// Hyper-parameters shared by both architectures (fields one of them does not use are set to
/// the value that makes them neutral).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads; equals `n_heads` without grouped-query attention.
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Width of the feed-forward block's hidden layer.
    pub ffn_size: usize,
    /// Longest sequence the model was trained for (GPT-2: rows of `wpe`).
    pub context_length: usize,
    /// Epsilon of LayerNorm (GPT-2) or RMSNorm (Llama).
    pub norm_eps: f32,
    /// RoPE base frequency (Llama only; 0 for GPT-2).
    pub rope_theta: f32,
    /// True when the checkpoint reuses the embedding as output head.
    pub tied_head: bool,
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Whether a BOS token is prepended to prompts.
    pub add_bos_token: bool,
}

impl ModelConfig {
    /// Checks the relations between hyper-parameters that the engines rely on.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, what: String| SplitError::Config {
            path: path.to_path_buf(),
            key: key.into(),
            what,
        };
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn_size", self.ffn_size),
            ("context_length", self.context_length),
        ] {
            if v == 0 {
                return Err(bad(key, "must be positive".into()));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(bad(
                "n_kv_heads",
                format!(
                    "{} does not divide n_heads {}",
                    self.n_kv_heads, self.n_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(bad("head_dim", format!("{} is odd", self.head_dim)));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(bad(
                "norm_eps",
                format!("{} is not a positive number", self.norm_eps),
            ));
        }
        Ok(())
    }
}

pub use crate::tensor_type::TensorType;

/// One tensor stored in a shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    /// Logical row-major shape, outermost dimension first (`[out, in]` for a matrix), whatever
    /// the storage type.
    pub shape: Vec<usize>,
    /// How the values are stored. A block type's tensor is a safetensors `U8` tensor of shape
    /// `[rows, bytes per row]` holding GGML blocks bit for bit (see [`TensorType`]).
    pub dtype: TensorType,
}

/// One shard: a contiguous range of layers and the file holding its tensors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: usize,
    /// First and last layer, inclusive.
    pub layers: [usize; 2],
    /// File name relative to the model directory.
    pub file: String,
    pub bytes: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// True for the first shard: it turns token ids into hidden states.
    pub has_embedding: bool,
    /// True for the last shard: it holds the final norm and the output head.
    pub has_head: bool,
    pub tensors: Vec<TensorInfo>,
}

impl ShardInfo {
    /// The shard's layers as a half-open range.
    pub fn layer_range(&self) -> std::ops::Range<usize> {
        self.layers[0]..self.layers[1] + 1
    }
}

/// Where the shards came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The input path as given to the splitter (file name only for a file).
    pub name: String,
    /// `gguf` or `huggingface`.
    pub format: String,
}

/// The whole `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub architecture: Architecture,
    pub config: ModelConfig,
    /// Tokenizer file name relative to the model directory (Hugging Face tokenizers format).
    pub tokenizer: String,
    /// Jinja chat template, when the model has one.
    pub chat_template: Option<String>,
    /// The storage type holding most of the matrices' bytes (`f16`, `q8_0`, `q4_0`, `q4_1`...),
    /// a summary for people and for `synapse simulate`; each tensor's own type is in
    /// `shards[].tensors[].dtype`.
    pub dtype: String,
    pub source: Source,
    pub shards: Vec<ShardInfo>,
}

impl Manifest {
    /// Reads and validates `DIR/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| SplitError::io(&path, e))?;
        // Format and version first, so an older directory gets "re-split" rather than a
        // complaint about a field its version did not have.
        let head: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| SplitError::corrupt(&path, format!("not valid JSON: {e}")))?;
        if head.get("format").and_then(|f| f.as_str()) == Some(FORMAT_NAME) {
            check_version(&path, head.get("version").and_then(|v| v.as_u64()))?;
        }
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| SplitError::corrupt(&path, format!("not a valid manifest: {e}")))?;
        m.validate(&path)?;
        Ok(m)
    }

    /// Checks format, version, config and that the shards tile the layers in order.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.format != FORMAT_NAME {
            return Err(SplitError::corrupt(
                path,
                format!("format is `{}`, expected `{FORMAT_NAME}`", self.format),
            ));
        }
        check_version(path, Some(self.version as u64))?;
        self.config.validate(path)?;
        if self.shards.is_empty() {
            return Err(SplitError::corrupt(path, "no shards"));
        }
        let mut next = 0;
        for (i, s) in self.shards.iter().enumerate() {
            let ok = s.index == i
                && s.layers[0] == next
                && s.layers[1] >= s.layers[0]
                && s.has_embedding == (i == 0)
                && s.has_head == (i + 1 == self.shards.len())
                && !s.file.contains('/')
                && !s.file.contains('\\')
                && !s.file.starts_with('.');
            if !ok {
                return Err(SplitError::corrupt(
                    path,
                    format!(
                        "shard {i} (layers {:?}, file `{}`) does not follow shard {}",
                        s.layers,
                        s.file,
                        i.wrapping_sub(1) as isize
                    ),
                ));
            }
            next = s.layers[1] + 1;
            for t in &s.tensors {
                t.dtype.check_shape(&t.shape).map_err(|what| {
                    SplitError::corrupt(path, format!("shard {i} tensor `{}`: {what}", t.name))
                })?;
            }
        }
        if next != self.config.n_layers {
            return Err(SplitError::corrupt(
                path,
                format!(
                    "shards cover {next} layers, the model has {}",
                    self.config.n_layers
                ),
            ));
        }
        Ok(())
    }
}

/// Refuses a manifest of another version; an older one is told to re-split.
fn check_version(path: &Path, version: Option<u64>) -> Result<()> {
    match version {
        Some(v) if v == FORMAT_VERSION as u64 => Ok(()),
        Some(v) if v < FORMAT_VERSION as u64 => Err(SplitError::unsupported(
            path,
            format!(
                "manifest version {v} was written by an older Synapse (this one reads version \
                 {FORMAT_VERSION}, which records each tensor's type); re-split the model: \
                 `synapse split MODEL.gguf --out DIR --force`"
            ),
        )),
        Some(v) => Err(SplitError::unsupported(
            path,
            format!("manifest version {v} (this Synapse reads {FORMAT_VERSION}); update Synapse"),
        )),
        None => Err(SplitError::corrupt(path, "no numeric `version`")),
    }
}

/// Canonical tensor names inside shard files, per architecture.
pub mod names {
    /// Llama (Hugging Face `LlamaForCausalLM` names).
    pub mod llama {
        pub const EMBED: &str = "model.embed_tokens.weight";
        pub const NORM: &str = "model.norm.weight";
        pub const HEAD: &str = "lm_head.weight";
        /// Per-layer tensor suffixes, after `model.layers.{i}.`.
        pub const LAYER: [&str; 9] = [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
        ];
        /// Full name of a layer tensor.
        pub fn layer(i: usize, suffix: &str) -> String {
            format!("model.layers.{i}.{suffix}")
        }
    }
    /// GPT-2 (Hugging Face `GPT2Model` names, without the `transformer.` prefix).
    pub mod gpt2 {
        pub const WTE: &str = "wte.weight";
        pub const WPE: &str = "wpe.weight";
        pub const LN_F_W: &str = "ln_f.weight";
        pub const LN_F_B: &str = "ln_f.bias";
        pub const HEAD: &str = "lm_head.weight";
        /// Per-layer tensor suffixes, after `h.{i}.`.
        pub const LAYER: [&str; 12] = [
            "ln_1.weight",
            "ln_1.bias",
            "attn.c_attn.weight",
            "attn.c_attn.bias",
            "attn.c_proj.weight",
            "attn.c_proj.bias",
            "ln_2.weight",
            "ln_2.bias",
            "mlp.c_fc.weight",
            "mlp.c_fc.bias",
            "mlp.c_proj.weight",
            "mlp.c_proj.bias",
        ];
        /// Full name of a layer tensor.
        pub fn layer(i: usize, suffix: &str) -> String {
            format!("h.{i}.{suffix}")
        }
    }
}
