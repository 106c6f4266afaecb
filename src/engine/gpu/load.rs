//! A shard's tensors on the GPU, in f16, arranged for the kernels: Llama's q/k/v projections
//! are stacked into one `(q_dim + 2 kv_dim, C)` matrix and gate/up into one `(2F, C)`, so each
//! takes one matrix product (GPT-2's checkpoint already fuses q/k/v as `c_attn`).
//!
//! Block tensors (q8_0, q4_0, q4_1, q4_k, q6_k) are expanded to f16 as they load ([`ShardTensors::take`]):
//! an interim until the shaders compute on blocks, so a quantized shard costs the GPU as much
//! memory as an f16 one (`memory()` reports what is really held).

use half::f16;
use splitter::manifest::names;
use splitter::{Architecture, ModelConfig, ShardInfo};

use super::super::EngineError;
use super::super::weights::ShardTensors;
use super::buffers::{GpuMatrix, GpuVector};
use super::context::GpuContext;
use super::ops::NormKind;

/// Token (and GPT-2 position) embeddings.
pub struct Embedding {
    pub tokens: GpuMatrix,            // (V, C)
    pub positions: Option<GpuMatrix>, // (P, C)
}

/// One transformer block. Biases are GPT-2's; Llama has none.
pub struct Layer {
    pub norm1_w: GpuVector,         // (C)
    pub norm1_b: Option<GpuVector>, // (C)
    pub qkv: GpuMatrix,             // (q_dim + 2 kv_dim, C)
    pub qkv_b: Option<GpuVector>,
    pub o: GpuMatrix, // (C, q_dim)
    pub o_b: Option<GpuVector>,
    pub norm2_w: GpuVector,
    pub norm2_b: Option<GpuVector>,
    /// GPT-2: c_fc (F, C); Llama: gate and up stacked, (2F, C).
    pub up: GpuMatrix,
    pub up_b: Option<GpuVector>,
    pub down: GpuMatrix, // (C, F)
    pub down_b: Option<GpuVector>,
}

/// Final norm and output head.
pub struct Head {
    pub norm_w: GpuVector,
    pub norm_b: Option<GpuVector>,
    /// `None` when the head is tied to this shard's embedding.
    pub weight: Option<GpuMatrix>, // (V, C)
}

/// Everything a shard holds on the GPU.
pub struct ShardWeights {
    pub embedding: Option<Embedding>,
    pub layers: Vec<Layer>,
    pub head: Option<Head>,
    /// Bytes of weights on the GPU.
    pub bytes: u64,
}

impl ShardWeights {
    /// The norm every block and the head use.
    pub fn norm_kind(arch: Architecture) -> NormKind {
        match arch {
            Architecture::Gpt2 => NormKind::Layer,
            Architecture::Llama => NormKind::Rms,
        }
    }

    /// Moves the tensors of `t` (shard `info` of a model with `cfg`) onto the GPU.
    pub fn upload(
        ctx: &GpuContext,
        t: &mut ShardTensors,
        info: &ShardInfo,
        arch: Architecture,
        cfg: &ModelConfig,
    ) -> Result<Self, EngineError> {
        let (v, c) = (cfg.vocab_size, cfg.hidden_size);
        let mut bytes = 0u64;
        let mut mat = |name: &str, data: &[f16], rows: usize, cols: usize| {
            let m = GpuMatrix::upload(ctx, name, data, rows, cols)?;
            bytes += m.bytes();
            Ok::<_, EngineError>(m)
        };
        let vec = |name: &str, data: &[f16]| GpuVector::upload(ctx, name, data);
        let embedding = if info.has_embedding {
            Some(match arch {
                Architecture::Gpt2 => Embedding {
                    tokens: mat(names::gpt2::WTE, &t.take(names::gpt2::WTE, &[v, c])?, v, c)?,
                    positions: Some(mat(
                        names::gpt2::WPE,
                        &t.take(names::gpt2::WPE, &[cfg.context_length, c])?,
                        cfg.context_length,
                        c,
                    )?),
                },
                Architecture::Llama => Embedding {
                    tokens: mat(
                        names::llama::EMBED,
                        &t.take(names::llama::EMBED, &[v, c])?,
                        v,
                        c,
                    )?,
                    positions: None,
                },
            })
        } else {
            None
        };
        let (f, hd) = (cfg.ffn_size, cfg.head_dim);
        let (qd, kvd) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        let mut layers = Vec::new();
        for i in info.layer_range() {
            let layer = match arch {
                Architecture::Gpt2 => {
                    let n = |s: &str| names::gpt2::layer(i, s);
                    let mut get = |s: &str, shape: &[usize]| t.take(&n(s), shape);
                    let ln1_w = get("ln_1.weight", &[c])?;
                    let ln1_b = get("ln_1.bias", &[c])?;
                    let qkv = get("attn.c_attn.weight", &[3 * c, c])?;
                    let qkv_b = get("attn.c_attn.bias", &[3 * c])?;
                    let o = get("attn.c_proj.weight", &[c, c])?;
                    let o_b = get("attn.c_proj.bias", &[c])?;
                    let ln2_w = get("ln_2.weight", &[c])?;
                    let ln2_b = get("ln_2.bias", &[c])?;
                    let fc = get("mlp.c_fc.weight", &[f, c])?;
                    let fc_b = get("mlp.c_fc.bias", &[f])?;
                    let proj = get("mlp.c_proj.weight", &[c, f])?;
                    let proj_b = get("mlp.c_proj.bias", &[c])?;
                    Layer {
                        norm1_w: vec(&n("ln_1.weight"), &ln1_w),
                        norm1_b: Some(vec(&n("ln_1.bias"), &ln1_b)),
                        qkv: mat(&n("attn.c_attn.weight"), &qkv, 3 * c, c)?,
                        qkv_b: Some(vec(&n("attn.c_attn.bias"), &qkv_b)),
                        o: mat(&n("attn.c_proj.weight"), &o, c, c)?,
                        o_b: Some(vec(&n("attn.c_proj.bias"), &o_b)),
                        norm2_w: vec(&n("ln_2.weight"), &ln2_w),
                        norm2_b: Some(vec(&n("ln_2.bias"), &ln2_b)),
                        up: mat(&n("mlp.c_fc.weight"), &fc, f, c)?,
                        up_b: Some(vec(&n("mlp.c_fc.bias"), &fc_b)),
                        down: mat(&n("mlp.c_proj.weight"), &proj, c, f)?,
                        down_b: Some(vec(&n("mlp.c_proj.bias"), &proj_b)),
                    }
                }
                Architecture::Llama => {
                    let n = |s: &str| names::llama::layer(i, s);
                    let mut get = |s: &str, shape: &[usize]| t.take(&n(s), shape);
                    let attn_norm = get("input_layernorm.weight", &[c])?;
                    let mut qkv = get("self_attn.q_proj.weight", &[qd, c])?;
                    qkv.extend(get("self_attn.k_proj.weight", &[kvd, c])?);
                    qkv.extend(get("self_attn.v_proj.weight", &[kvd, c])?);
                    let o = get("self_attn.o_proj.weight", &[c, qd])?;
                    let mlp_norm = get("post_attention_layernorm.weight", &[c])?;
                    let mut gate_up = get("mlp.gate_proj.weight", &[f, c])?;
                    gate_up.extend(get("mlp.up_proj.weight", &[f, c])?);
                    let down = get("mlp.down_proj.weight", &[c, f])?;
                    Layer {
                        norm1_w: vec(&n("input_layernorm.weight"), &attn_norm),
                        norm1_b: None,
                        qkv: mat(&n("self_attn.qkv (stacked)"), &qkv, qd + 2 * kvd, c)?,
                        qkv_b: None,
                        o: mat(&n("self_attn.o_proj.weight"), &o, c, qd)?,
                        o_b: None,
                        norm2_w: vec(&n("post_attention_layernorm.weight"), &mlp_norm),
                        norm2_b: None,
                        up: mat(&n("mlp.gate_up (stacked)"), &gate_up, 2 * f, c)?,
                        up_b: None,
                        down: mat(&n("mlp.down_proj.weight"), &down, c, f)?,
                        down_b: None,
                    }
                }
            };
            layers.push(layer);
        }
        let head = if info.has_head {
            let (norm_w, norm_b, head_name) = match arch {
                Architecture::Gpt2 => (
                    vec(names::gpt2::LN_F_W, &t.take(names::gpt2::LN_F_W, &[c])?),
                    Some(vec(
                        names::gpt2::LN_F_B,
                        &t.take(names::gpt2::LN_F_B, &[c])?,
                    )),
                    names::gpt2::HEAD,
                ),
                Architecture::Llama => (
                    vec(names::llama::NORM, &t.take(names::llama::NORM, &[c])?),
                    None,
                    names::llama::HEAD,
                ),
            };
            let weight = if cfg.tied_head && info.has_embedding {
                None
            } else {
                Some(mat(head_name, &t.take(head_name, &[v, c])?, v, c)?)
            };
            Some(Head {
                norm_w,
                norm_b,
                weight,
            })
        } else {
            None
        };
        Ok(ShardWeights {
            embedding,
            layers,
            head,
            bytes,
        })
    }
}
