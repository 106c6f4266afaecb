//! Causal attention over the KV cache (attention.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::Heads;
use super::{grid, u};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttnParams {
    t: u32,
    pos: u32,
    heads: u32,
    kv_heads: u32,
    hd: u32,
    splits: u32,
    split_len: u32,
    scale: f32,
}

/// Workgroups attention aims for when it splits the keys of few rows (decode): enough to
/// occupy a large GPU.
pub const ATTENTION_TARGET_GROUPS: usize = 512;

/// How many key splits attention uses for `t` rows at `pos`: one when the rows and heads
/// already fill the GPU, more for decoding.
pub fn attention_splits(ctx: &GpuContext, t: usize, pos: usize, heads: usize) -> usize {
    let blocks = (pos + t).div_ceil(ctx.consts.att_wg as usize);
    let rows = t * heads;
    if rows >= ATTENTION_TARGET_GROUPS {
        1
    } else {
        blocks.min(ATTENTION_TARGET_GROUPS.div_ceil(rows)).max(1)
    }
}

/// Floats of the partial buffers attention needs for `t` rows: `(ml pairs, acc values)`.
pub fn attention_scratch(t: usize, h: Heads) -> (usize, usize) {
    let slots = t * h.heads + ATTENTION_TARGET_GROUPS;
    (slots * 2, slots * h.hd)
}

/// The partial-result buffers of attention.
pub struct AttnScratch<'a> {
    pub ml: &'a wgpu::Buffer,
    pub acc: &'a wgpu::Buffer,
}

/// `out (T, H * hd) = causal_attention(q (T, H * hd), caches rows 0..pos + T)` in two
/// dispatches; `splits` overrides the key split count (tests), else [`attention_splits`].
#[allow(clippy::too_many_arguments)]
pub fn attention(
    rec: &mut Recorder,
    ctx: &GpuContext,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    scratch: &AttnScratch<'_>,
    out: &wgpu::Buffer,
    t: usize,
    pos: usize,
    h: Heads,
    splits: Option<usize>,
) {
    let c = &ctx.consts;
    assert!(
        h.hd <= c.att_max_hd as usize,
        "head size {} > ATT_MAX_HD",
        h.hd
    );
    assert!(
        h.heads.is_multiple_of(h.kv_heads),
        "heads not a multiple of kv heads"
    );
    let blocks = (pos + t).div_ceil(c.att_wg as usize);
    let splits = splits
        .unwrap_or_else(|| attention_splits(ctx, t, pos, h.heads))
        .clamp(1, blocks.max(1));
    let split_len = blocks.div_ceil(splits) * c.att_wg as usize;
    let splits = (pos + t).div_ceil(split_len);
    let params = AttnParams {
        t: u(t),
        pos: u(pos),
        heads: u(h.heads),
        kv_heads: u(h.kv_heads),
        hd: u(h.hd),
        splits: u(splits),
        split_len: u(split_len),
        scale: 1.0 / (h.hd as f32).sqrt(),
    };
    rec.dispatch(
        Kernel::AttnPartial,
        "attention",
        &params,
        &[
            (1, q),
            (2, k_cache),
            (3, v_cache),
            (4, scratch.ml),
            (5, scratch.acc),
        ],
        grid(ctx, u(t * h.heads * splits)),
    );
    rec.dispatch(
        Kernel::AttnCombine,
        "attention",
        &params,
        &[(4, scratch.ml), (7, scratch.acc), (6, out)],
        grid(ctx, u((t * h.heads * h.hd).div_ceil(c.combine_wg as usize))),
    );
}
