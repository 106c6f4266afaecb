//! One Llama decoder layer on the CPU, as in Hugging Face's `LlamaDecoderLayer`: RMSNorm,
//! rotate-half RoPE on q and k, grouped-query causal attention, SwiGLU MLP.

use half::f16;
use splitter::ModelConfig;
use splitter::manifest::names::llama as n;

use super::kv::LayerCache;
use super::ops;
use crate::engine::EngineError;
use crate::engine::weights::ShardTensors;

/// The weights of layer `i`; matrices are `[out, in]`.
pub struct Block {
    attn_norm: Vec<f16>, // (C)
    q_proj: Vec<f16>,    // (H*hd, C)
    k_proj: Vec<f16>,    // (KV*hd, C)
    v_proj: Vec<f16>,    // (KV*hd, C)
    o_proj: Vec<f16>,    // (C, H*hd)
    mlp_norm: Vec<f16>,  // (C)
    gate_proj: Vec<f16>, // (F, C)
    up_proj: Vec<f16>,   // (F, C)
    down_proj: Vec<f16>, // (C, F)
}

impl Block {
    /// Takes layer `i`'s tensors out of a shard file.
    pub fn load(t: &mut ShardTensors, i: usize, cfg: &ModelConfig) -> Result<Self, EngineError> {
        let (c, f) = (cfg.hidden_size, cfg.ffn_size);
        let (qd, kvd) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
        let mut get = |suffix: &str, shape: &[usize]| t.take(&n::layer(i, suffix), shape);
        Ok(Block {
            attn_norm: get("input_layernorm.weight", &[c])?,
            q_proj: get("self_attn.q_proj.weight", &[qd, c])?,
            k_proj: get("self_attn.k_proj.weight", &[kvd, c])?,
            v_proj: get("self_attn.v_proj.weight", &[kvd, c])?,
            o_proj: get("self_attn.o_proj.weight", &[c, qd])?,
            mlp_norm: get("post_attention_layernorm.weight", &[c])?,
            gate_proj: get("mlp.gate_proj.weight", &[f, c])?,
            up_proj: get("mlp.up_proj.weight", &[f, c])?,
            down_proj: get("mlp.down_proj.weight", &[c, f])?,
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
        ops::matmul(&mut q, &a, &self.q_proj, None, t, c);
        ops::matmul(&mut k, &a, &self.k_proj, None, t, c);
        ops::matmul(&mut v, &a, &self.v_proj, None, t, c);
        ops::rope(&mut q, h, hd, pos, cfg.rope_theta);
        ops::rope(&mut k, kvh, hd, pos, cfg.rope_theta);
        cache.append(&k, &v);
        let att = ops::attention(&q, &cache.k, &cache.v, pos, h, kvh, hd); // (T, H*hd)
        let mut y = vec![0f32; t * c]; // (T, C)
        ops::matmul(&mut y, &att, &self.o_proj, None, t, h * hd);
        ops::add_inplace(x, &y);
        // SwiGLU MLP.
        let mut m = x.to_vec(); // (T, C)
        ops::rmsnorm(&mut m, &self.mlp_norm, c, cfg.norm_eps);
        let mut gate = vec![0f32; t * f]; // (T, F)
        let mut up = vec![0f32; t * f]; // (T, F)
        ops::matmul(&mut gate, &m, &self.gate_proj, None, t, c);
        ops::matmul(&mut up, &m, &self.up_proj, None, t, c);
        ops::silu_mul(&mut gate, &up);
        ops::matmul(&mut y, &gate, &self.down_proj, None, t, f);
        ops::add_inplace(x, &y);
    }
}
