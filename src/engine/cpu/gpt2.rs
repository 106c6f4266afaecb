//! One GPT-2 transformer block on the CPU, as in the paper and Hugging Face's `GPT2Block`:
//! pre-LayerNorm, fused QKV with biases, causal multi-head attention, gelu (tanh) MLP.

use half::f16;
use splitter::ModelConfig;
use splitter::manifest::names::gpt2 as n;

use super::kv::LayerCache;
use super::matmul::matmul;
use super::ops;
use crate::engine::EngineError;
use crate::engine::weights::{Matrix, ShardTensors};

/// The weights of block `i`; matrices are `[out, in]` (the importer transposed Conv1D).
pub struct Block {
    ln_1_w: Vec<f16>,     // (C)
    ln_1_b: Vec<f16>,     // (C)
    c_attn_w: Matrix,     // (3C, C)
    c_attn_b: Vec<f16>,   // (3C)
    c_proj_w: Matrix,     // (C, C)
    c_proj_b: Vec<f16>,   // (C)
    ln_2_w: Vec<f16>,     // (C)
    ln_2_b: Vec<f16>,     // (C)
    c_fc_w: Matrix,       // (4C, C)
    c_fc_b: Vec<f16>,     // (4C)
    mlp_proj_w: Matrix,   // (C, 4C)
    mlp_proj_b: Vec<f16>, // (C)
}

impl Block {
    /// Takes block `i`'s tensors out of a shard file.
    pub fn load(t: &mut ShardTensors, i: usize, cfg: &ModelConfig) -> Result<Self, EngineError> {
        let (c, f) = (cfg.hidden_size, cfg.ffn_size);
        let mut mat = |suffix: &str, rows: usize, cols: usize| {
            t.take_matrix(&n::layer(i, suffix), rows, cols)
        };
        let c_attn_w = mat("attn.c_attn.weight", 3 * c, c)?;
        let c_proj_w = mat("attn.c_proj.weight", c, c)?;
        let c_fc_w = mat("mlp.c_fc.weight", f, c)?;
        let mlp_proj_w = mat("mlp.c_proj.weight", c, f)?;
        let mut get = |suffix: &str, shape: &[usize]| t.take(&n::layer(i, suffix), shape);
        Ok(Block {
            ln_1_w: get("ln_1.weight", &[c])?,
            ln_1_b: get("ln_1.bias", &[c])?,
            c_attn_w,
            c_attn_b: get("attn.c_attn.bias", &[3 * c])?,
            c_proj_w,
            c_proj_b: get("attn.c_proj.bias", &[c])?,
            ln_2_w: get("ln_2.weight", &[c])?,
            ln_2_b: get("ln_2.bias", &[c])?,
            c_fc_w,
            c_fc_b: get("mlp.c_fc.bias", &[f])?,
            mlp_proj_w,
            mlp_proj_b: get("mlp.c_proj.bias", &[c])?,
        })
    }

    /// Runs the block on `x (T, C)` in place; the tokens sit at positions `pos..pos + T` and
    /// their keys and values are appended to `cache`.
    pub fn forward(&self, x: &mut [f32], cache: &mut LayerCache, pos: usize, cfg: &ModelConfig) {
        let c = cfg.hidden_size;
        let t = x.len() / c;
        // Attention.
        let mut a = x.to_vec(); // (T, C)
        ops::layernorm(&mut a, &self.ln_1_w, &self.ln_1_b, c, cfg.norm_eps);
        let mut qkv = vec![0f32; t * 3 * c]; // (T, 3C)
        matmul(&mut qkv, &a, &self.c_attn_w, Some(&self.c_attn_b), t);
        let mut q = Vec::with_capacity(t * c); // (T, C)
        for row in qkv.chunks_exact(3 * c) {
            q.extend_from_slice(&row[..c]);
            cache.append(&row[c..2 * c], &row[2 * c..]);
        }
        let att = ops::attention(
            &q,
            &cache.k,
            &cache.v,
            pos,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.head_dim,
        ); // (T, C)
        let mut y = vec![0f32; t * c]; // (T, C)
        matmul(&mut y, &att, &self.c_proj_w, Some(&self.c_proj_b), t);
        ops::add_inplace(x, &y);
        // MLP.
        let mut m = x.to_vec(); // (T, C)
        ops::layernorm(&mut m, &self.ln_2_w, &self.ln_2_b, c, cfg.norm_eps);
        let mut h = vec![0f32; t * cfg.ffn_size]; // (T, 4C)
        matmul(&mut h, &m, &self.c_fc_w, Some(&self.c_fc_b), t);
        ops::gelu_tanh(&mut h);
        matmul(&mut y, &h, &self.mlp_proj_w, Some(&self.mlp_proj_b), t);
        ops::add_inplace(x, &y);
    }
}
