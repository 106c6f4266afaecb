//! One Llama decoder layer on the CPU, as in Hugging Face's `LlamaDecoderLayer`: RMSNorm,
//! rotate-half RoPE on q and k, grouped-query causal attention, SwiGLU MLP.

use half::f16;
use splitter::ModelConfig;
use splitter::manifest::names::llama as n;

use super::kv::LayerCache;
use super::matmul::matmul;
use super::ops;
use crate::engine::EngineError;
use crate::engine::weights::{Matrix, ShardTensors};

/// The weights of layer `i`; matrices are `[out, in]`.
pub struct Block {
    attn_norm: Vec<f16>, // (C)
    q_proj: Matrix,      // (H*hd, C)
    k_proj: Matrix,      // (KV*hd, C)
    v_proj: Matrix,      // (KV*hd, C)
    o_proj: Matrix,      // (C, H*hd)
    mlp_norm: Vec<f16>,  // (C)
    gate_proj: Matrix,   // (F, C)
    up_proj: Matrix,     // (F, C)
    down_proj: Matrix,   // (C, F)
}

impl Block {
    /// Takes layer `i`'s tensors out of a shard file.
    pub fn load(t: &mut ShardTensors, i: usize, cfg: &ModelConfig) -> Result<Self, EngineError> {
        let (c, f) = (cfg.hidden_size, cfg.ffn_size);
        let (qd, kvd) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
        let name = |suffix: &str| n::layer(i, suffix);
        Ok(Block {
            attn_norm: t.take(&name("input_layernorm.weight"), &[c])?,
            q_proj: t.take_matrix(&name("self_attn.q_proj.weight"), qd, c)?,
            k_proj: t.take_matrix(&name("self_attn.k_proj.weight"), kvd, c)?,
            v_proj: t.take_matrix(&name("self_attn.v_proj.weight"), kvd, c)?,
            o_proj: t.take_matrix(&name("self_attn.o_proj.weight"), c, qd)?,
            mlp_norm: t.take(&name("post_attention_layernorm.weight"), &[c])?,
            gate_proj: t.take_matrix(&name("mlp.gate_proj.weight"), f, c)?,
            up_proj: t.take_matrix(&name("mlp.up_proj.weight"), f, c)?,
            down_proj: t.take_matrix(&name("mlp.down_proj.weight"), c, f)?,
        })
    }

    /// Runs the layer on `x (T, C)` in place; the tokens sit at positions `pos..pos + T` and
    /// their (rotated) keys and values are appended to `cache`.
    pub fn forward(&self, x: &mut [f32], cache: &mut LayerCache, pos: usize, cfg: &ModelConfig) {
        let (c, f, hd) = (cfg.hidden_size, cfg.ffn_size, cfg.head_dim);
        let (h, kvh) = (cfg.n_heads, cfg.n_kv_heads);
        let t = x.len() / c;
        // Attention.
        let mut a = x.to_vec(); // (T, C)
        ops::rmsnorm(&mut a, &self.attn_norm, c, cfg.norm_eps);
        let mut q = vec![0f32; t * h * hd]; // (T, H*hd)
        let mut k = vec![0f32; t * kvh * hd]; // (T, KV*hd)
        let mut v = vec![0f32; t * kvh * hd]; // (T, KV*hd)
        matmul(&mut q, &a, &self.q_proj, None, t);
        matmul(&mut k, &a, &self.k_proj, None, t);
        matmul(&mut v, &a, &self.v_proj, None, t);
        ops::rope(&mut q, h, hd, pos, cfg.rope_theta);
        ops::rope(&mut k, kvh, hd, pos, cfg.rope_theta);
        cache.append(&k, &v);
        let att = ops::attention(&q, &cache.k, &cache.v, pos, h, kvh, hd); // (T, H*hd)
        let mut y = vec![0f32; t * c]; // (T, C)
        matmul(&mut y, &att, &self.o_proj, None, t);
        ops::add_inplace(x, &y);
        // SwiGLU MLP.
        let mut m = x.to_vec(); // (T, C)
        ops::rmsnorm(&mut m, &self.mlp_norm, c, cfg.norm_eps);
        let mut gate = vec![0f32; t * f]; // (T, F)
        let mut up = vec![0f32; t * f]; // (T, F)
        matmul(&mut gate, &m, &self.gate_proj, None, t);
        matmul(&mut up, &m, &self.up_proj, None, t);
        ops::silu_mul(&mut gate, &up);
        matmul(&mut y, &gate, &self.down_proj, None, t);
        ops::add_inplace(x, &y);
    }
}
