//! Recording one transformer block for `T` tokens at positions `pos..pos + T`: the same
//! sequence as the CPU blocks (engine/cpu/gpt2.rs, llama.rs) with the fusions the kernels offer.
//! The pre-norms ride on the products that read them, bias, gelu and the residual add on their
//! epilogue, SwiGLU's gate on the down product's input; the q/k/v split, RoPE and the KV-cache
//! append are one kernel. At decode (one token) that kernel's work rides on attention's partial
//! pass instead, and attention's split merge on the o product's input, so a decoding block is
//! five dispatches and a prefill block seven (two more with norms on their own, which is
//! faster where workgroup barriers are dear: lavapipe).

use splitter::{Architecture, ModelConfig};

use super::context::GpuContext;
use super::load::{Layer, ShardWeights};
use super::ops::{self, AttnScratch, Epilogue, Heads, InputNorm, MatmulIo, MatmulKernel};
use super::recorder::Recorder;

/// The step's activation buffers, each sized for the largest `T` seen.
pub struct Activ<'a> {
    pub x: &'a wgpu::Buffer,   // (T, C) residual stream
    pub a: &'a wgpu::Buffer,   // (T, C) normalised, when norms run on their own
    pub qkv: &'a wgpu::Buffer, // (T, q_dim + 2 kv_dim)
    pub q: &'a wgpu::Buffer,   // (T, q_dim)
    pub att: &'a wgpu::Buffer, // (T, q_dim)
    pub h: &'a wgpu::Buffer,   // (T, F) GPT-2 / (T, 2F) Llama [gate | up]
    pub ml: &'a wgpu::Buffer,  // attention partials
    pub acc: &'a wgpu::Buffer,
}

/// Which optional fusions a step records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fusions {
    /// Each pre-norm inside the product that reads it.
    pub norms: bool,
    /// At decode, attention's split merge inside the o product's input.
    pub combine: bool,
    /// At decode, the q/k/v split, RoPE and cache append inside attention's partial pass.
    pub qkv_in_attention: bool,
}

/// The input of a product that starts with `norm`: x read through the norm (fused), or the
/// norm recorded as its own dispatch into `a` first.
#[allow(clippy::too_many_arguments)]
fn normed<'b>(
    rec: &mut Recorder,
    ctx: &GpuContext,
    buf: &Activ<'b>,
    norm: InputNorm<'b>,
    fuse: bool,
    out: &'b wgpu::Buffer,
    t: usize,
    width: usize,
) -> MatmulIo<'b> {
    if fuse {
        MatmulIo {
            norm: Some(norm),
            ..MatmulIo::plain(buf.x, out, t, width)
        }
    } else {
        ops::norm(
            rec, ctx, norm.kind, buf.x, 0, t, norm.w, norm.b, norm.eps, buf.a,
        );
        MatmulIo::plain(buf.a, out, t, width)
    }
}

/// Records block `layer` on `x` in place, appending keys and values to `k_cache`, `v_cache`.
#[allow(clippy::too_many_arguments)]
pub fn record_layer(
    rec: &mut Recorder,
    ctx: &GpuContext,
    arch: Architecture,
    cfg: &ModelConfig,
    layer: &Layer,
    buf: &Activ<'_>,
    kv: (&wgpu::Buffer, &wgpu::Buffer),
    rope_table: Option<&wgpu::Buffer>,
    t: usize,
    pos: usize,
    which: MatmulKernel,
    fuse: Fusions,
) {
    let (c, f) = (cfg.hidden_size, cfg.ffn_size);
    let heads = Heads {
        heads: cfg.n_heads,
        kv_heads: cfg.n_kv_heads,
        hd: cfg.head_dim,
    };
    let q_dim = heads.heads * heads.hd;
    let qkv_dim = q_dim + 2 * heads.kv_heads * heads.hd;
    let kind = ShardWeights::norm_kind(arch);
    let norm1 = InputNorm {
        kind,
        w: &layer.norm1_w,
        b: layer.norm1_b.as_ref(),
        eps: cfg.norm_eps,
    };
    let norm2 = InputNorm {
        w: &layer.norm2_w,
        b: layer.norm2_b.as_ref(),
        ..norm1
    };
    let plain = Epilogue::default();
    let residual = Epilogue {
        gelu: false,
        accumulate: true,
    };
    // Attention: qkv = norm1(x) Wqkv^T (+ b); q, cache <- split (+ RoPE).
    let input = normed(rec, ctx, buf, norm1, fuse.norms, buf.qkv, t, qkv_dim);
    ops::matmul(
        rec,
        ctx,
        "matmul.qkv",
        &input,
        &layer.qkv,
        layer.qkv_b.as_ref(),
        plain,
        which,
    );
    let table = match arch {
        Architecture::Llama => rope_table,
        Architecture::Gpt2 => None,
    };
    let from_qkv = if fuse.qkv_in_attention && t == 1 {
        Some(ops::FromQkv {
            qkv: buf.qkv,
            rope_table: table,
        })
    } else {
        ops::qkv_rope(rec, ctx, buf.qkv, buf.q, kv.0, kv.1, table, t, pos, heads);
        None
    };
    // att = attention(q, cache); x += att Wo^T (+ b).
    let scratch = AttnScratch {
        ml: buf.ml,
        acc: buf.acc,
    };
    let parts = ops::attention_partial(
        rec, ctx, from_qkv, buf.q, kv.0, kv.1, &scratch, t, pos, heads, None,
    );
    let o_input = if fuse.combine && parts.mergeable_by_matvec(ctx) && which != MatmulKernel::Tiled
    {
        MatmulIo {
            combine: Some(parts),
            ..MatmulIo::plain(buf.acc, buf.x, t, c)
        }
    } else {
        ops::attention_combine(rec, ctx, &parts, buf.att);
        MatmulIo::plain(buf.att, buf.x, t, c)
    };
    ops::matmul(
        rec,
        ctx,
        "matmul.o",
        &o_input,
        &layer.o,
        layer.o_b.as_ref(),
        residual,
        which,
    );
    // MLP. GPT-2: x += gelu(norm2(x) Wfc^T + b) Wproj^T + b.
    // Llama: h = norm2(x) [Wgate; Wup]^T (T, 2F); x += (silu(gate) * up) Wdown^T.
    let (width, gelu) = match arch {
        Architecture::Gpt2 => (f, true),
        Architecture::Llama => (2 * f, false),
    };
    let input = normed(rec, ctx, buf, norm2, fuse.norms, buf.h, t, width);
    ops::matmul(
        rec,
        ctx,
        "matmul.up",
        &input,
        &layer.up,
        layer.up_b.as_ref(),
        Epilogue {
            gelu,
            accumulate: false,
        },
        which,
    );
    ops::matmul(
        rec,
        ctx,
        "matmul.down",
        &MatmulIo {
            gated: arch == Architecture::Llama,
            ..MatmulIo::plain(buf.h, buf.x, t, c)
        },
        &layer.down,
        layer.down_b.as_ref(),
        residual,
        which,
    );
}
