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
    from_qkv: u32,
    has_rope: u32,
    _pad: [u32; 2],
}

/// Decode's fusion of qkv_rope into attention (attention.wgsl `from_qkv`): q and the new key
/// and value come straight from the qkv product's one row, rotated by `rope_table` when there
/// is one, and the partial pass appends the new row to the caches itself.
#[derive(Clone, Copy)]
pub struct FromQkv<'a> {
    /// `(1, q_dim + 2 kv_dim)` the qkv product's output.
    pub qkv: &'a wgpu::Buffer,
    pub rope_table: Option<&'a wgpu::Buffer>,
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

/// Attention's per-split partial outputs, as [`attention_partial`] left them: what the combine,
/// or a one-token product that merges them itself, reads.
#[derive(Clone, Copy)]
pub struct AttnPartials<'a> {
    /// `(T, H, S)` running (max, sum) pairs.
    pub ml: &'a wgpu::Buffer,
    /// `(T, H, S, hd)` unnormalised outputs.
    pub acc: &'a wgpu::Buffer,
    pub t: usize,
    pub heads: usize,
    pub hd: usize,
    pub splits: usize,
    params: AttnParams,
}

impl AttnPartials<'_> {
    /// Whether a one-token matvec can merge these partials as its input
    /// ([`super::MatmulIo::combine`]): one row, and the merged row and its split factors fit
    /// the kernel's workgroup memory.
    pub fn mergeable_by_matvec(&self, ctx: &GpuContext) -> bool {
        let c = &ctx.consts;
        let k = self.heads * self.hd;
        self.t == 1
            && k.is_multiple_of(8)
            && k <= c.matvec_combine_max_k as usize
            && self.heads * self.splits <= c.matvec_combine_max_slots as usize
    }
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
    let parts = attention_partial(
        rec, ctx, None, q, k_cache, v_cache, scratch, t, pos, h, splits,
    );
    attention_combine(rec, ctx, &parts, out);
}

/// Attention's first pass: each (row, head, key split)'s partial output into `scratch`. With
/// `from_qkv` (one row only), `q` is not read: see [`FromQkv`].
#[allow(clippy::too_many_arguments)]
pub fn attention_partial<'a>(
    rec: &mut Recorder,
    ctx: &GpuContext,
    from_qkv: Option<FromQkv<'_>>,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    scratch: &AttnScratch<'a>,
    t: usize,
    pos: usize,
    h: Heads,
    splits: Option<usize>,
) -> AttnPartials<'a> {
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
        from_qkv: u32::from(from_qkv.is_some()),
        has_rope: u32::from(from_qkv.is_some_and(|f| f.rope_table.is_some())),
        _pad: [0; 2],
    };
    if from_qkv.is_some() {
        assert_eq!(t, 1, "attention reads q from qkv at decode only");
    }
    let (q, qkv, table) = match from_qkv {
        Some(f) => (f.qkv, f.qkv, f.rope_table.unwrap_or(&ctx.dummy)),
        None => (q, &ctx.dummy, &ctx.dummy),
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
            (8, qkv),
            (9, table),
        ],
        grid(ctx, u(t * h.heads * splits)),
    );
    AttnPartials {
        ml: scratch.ml,
        acc: scratch.acc,
        t,
        heads: h.heads,
        hd: h.hd,
        splits,
        params,
    }
}

/// Attention's second pass: the splits merged into `out (T, H * hd)`.
pub fn attention_combine(
    rec: &mut Recorder,
    ctx: &GpuContext,
    parts: &AttnPartials<'_>,
    out: &wgpu::Buffer,
) {
    rec.dispatch(
        Kernel::AttnCombine,
        "attention",
        &parts.params,
        &[(4, parts.ml), (7, parts.acc), (6, out)],
        grid(
            ctx,
            u((parts.t * parts.heads * parts.hd).div_ceil(ctx.consts.combine_wg as usize)),
        ),
    );
}
