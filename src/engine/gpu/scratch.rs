//! The scratch buffers a step works in, sized for the largest number of tokens seen and
//! replaced (never grown in place) when a longer step comes.

use splitter::{Architecture, ModelConfig};

use super::buffers::storage;
use super::context::GpuContext;
use super::forward::Activ;
use super::ops::{self, Heads};

/// Scratch buffers of a step, sized for `cap` tokens.
pub struct Scratch {
    pub cap: usize,
    pub tokens: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub a: wgpu::Buffer,
    pub qkv: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub att: wgpu::Buffer,
    pub h: wgpu::Buffer,
    pub ml: wgpu::Buffer,
    pub acc: wgpu::Buffer,
    pub scales: wgpu::Buffer,
    pub q8: wgpu::Buffer,
}

impl Scratch {
    /// Allocates every buffer for `cap` tokens.
    pub fn new(ctx: &GpuContext, cfg: &ModelConfig, arch: Architecture, cap: usize) -> Self {
        let f4 = |n: usize| (n * 4) as u64;
        let (c, f) = (cfg.hidden_size, cfg.ffn_size);
        let h = heads(cfg);
        let qd = h.heads * h.hd;
        let (ml, acc) = ops::attention_scratch(cap, h);
        let hidden = match arch {
            Architecture::Gpt2 => f,
            Architecture::Llama => 2 * f,
        };
        Scratch {
            cap,
            tokens: storage(ctx, "tokens", f4(cap)),
            x: storage(ctx, "x", f4(cap * c)),
            a: storage(ctx, "a", f4(cap * c)),
            qkv: storage(ctx, "qkv", f4(cap * (qd + 2 * h.kv_heads * h.hd))),
            q: storage(ctx, "q", f4(cap * qd)),
            att: storage(ctx, "att", f4(cap * qd)),
            h: storage(ctx, "h", f4(cap * hidden)),
            ml: storage(ctx, "attention m, l", f4(ml)),
            acc: storage(ctx, "attention acc", f4(acc)),
            scales: storage(ctx, "int8 scales", f4(cap)),
            q8: storage(ctx, "int8 values", (cap * c).div_ceil(4) as u64 * 4),
        }
    }

    /// The buffers the blocks use.
    pub fn activ(&self) -> Activ<'_> {
        Activ {
            x: &self.x,
            a: &self.a,
            qkv: &self.qkv,
            q: &self.q,
            att: &self.att,
            h: &self.h,
            ml: &self.ml,
            acc: &self.acc,
        }
    }
}

/// The attention shapes of `cfg`.
pub fn heads(cfg: &ModelConfig) -> Heads {
    Heads {
        heads: cfg.n_heads,
        kv_heads: cfg.n_kv_heads,
        hd: cfg.head_dim,
    }
}
