//! One function per op: shape checks, the uniform parameters (mirroring the WGSL structs), the
//! dispatch size, and the bindings. Each appends to a [`Recorder`]; nothing runs until the step
//! is encoded. Offsets and strides are in elements, so ops read and write parts of the step's
//! scratch buffers without sub-bindings.

use bytemuck::{Pod, Zeroable};

use super::buffers::{GpuMatrix, GpuVector};
use super::context::GpuContext;
use super::kernels::Kernel;
use super::recorder::Recorder;

/// Workgroup grid for `n` workgroups, folded into y when x would exceed the device's limit
/// (the kernels compute `wg.x + wg.y * num_workgroups.x`).
pub fn grid(ctx: &GpuContext, n: u32) -> [u32; 3] {
    let max = ctx.limits().max_compute_workgroups_per_dimension.max(1);
    if n <= max {
        [n.max(1), 1, 1]
    } else {
        [max, n.div_ceil(max), 1]
    }
}

fn u(v: usize) -> u32 {
    u32::try_from(v).expect("sizes fit in u32")
}

// ---- embed.wgsl ----------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EmbedParams {
    t: u32,
    c: u32,
    row0: u32,
    rows: u32,
    stride: u32,
    pos: u32,
    pos_stride: u32,
    has_pos: u32,
}

/// `out (T, C) = table[tokens] (+ positions[pos..pos + T])`; token ids must be < table rows.
pub fn embed(
    rec: &mut Recorder,
    ctx: &GpuContext,
    tokens: &wgpu::Buffer,
    t: usize,
    table: &GpuMatrix,
    positions: Option<&GpuMatrix>,
    pos: usize,
    out: &wgpu::Buffer,
) {
    let c = table.cols;
    if let Some(p) = positions {
        assert_eq!(p.cols, c, "positions are not (P, {c})");
        assert!(pos + t <= p.rows, "positions end at {}", p.rows);
        assert_eq!(p.chunks.len(), 1, "position table split across bindings");
    }
    let groups = grid(ctx, u((t * c).div_ceil(ctx.consts.embed_wg as usize)));
    for chunk in &table.chunks {
        let params = EmbedParams {
            t: u(t),
            c: u(c),
            row0: u(chunk.row0),
            rows: u(chunk.rows),
            stride: u(table.stride),
            pos: u(pos),
            pos_stride: positions.map_or(0, |p| u(p.stride)),
            has_pos: positions.is_some() as u32,
        };
        let pos_buf = positions.map_or(&ctx.dummy, |p| &p.chunks[0].buffer);
        rec.dispatch(
            Kernel::Embed,
            "embed",
            &params,
            &[(1, tokens), (2, &chunk.buffer), (3, pos_buf), (4, out)],
            groups,
        );
    }
}

// ---- norm.wgsl -----------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NormParams {
    rows: u32,
    c: u32,
    x_off: u32,
    x_stride: u32,
    out_off: u32,
    out_stride: u32,
    kind: u32,
    eps: f32,
}

/// Which normalisation (the WGSL's KIND_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// GPT-2's LayerNorm, with a bias.
    Layer = 0,
    /// Llama's RMSNorm.
    Rms = 1,
}

/// `out[rows] = norm(x[rows])` over `C = w.len` columns; `x` rows start at row `x_row`.
#[allow(clippy::too_many_arguments)]
pub fn norm(
    rec: &mut Recorder,
    ctx: &GpuContext,
    kind: NormKind,
    x: &wgpu::Buffer,
    x_row: usize,
    rows: usize,
    w: &GpuVector,
    b: Option<&GpuVector>,
    eps: f32,
    out: &wgpu::Buffer,
) {
    let c = w.len;
    assert_eq!(
        kind == NormKind::Layer,
        b.is_some(),
        "LayerNorm needs a bias"
    );
    let params = NormParams {
        rows: u(rows),
        c: u(c),
        x_off: u(x_row * c),
        x_stride: u(c),
        out_off: 0,
        out_stride: u(c),
        kind: kind as u32,
        eps,
    };
    let b = b.map_or(&ctx.dummy, |b| &b.buffer);
    rec.dispatch(
        Kernel::Norm,
        "norm",
        &params,
        &[(1, x), (2, &w.buffer), (3, b), (4, out)],
        grid(ctx, u(rows)),
    );
}

// ---- matmul.wgsl ---------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    t: u32,
    n: u32,
    k: u32,
    k_vec: u32,
    x_off: u32,
    x_stride: u32,
    out_off: u32,
    out_stride: u32,
    bias_off: u32,
    flags: u32,
    eps: f32,
    _pad: u32,
}

/// What the matrix product does after the dot products (the WGSL's FLAG_*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Epilogue {
    /// Apply gelu (tanh) after the bias.
    pub gelu: bool,
    /// Add the result onto `out` (the residual connection) instead of overwriting it.
    pub accumulate: bool,
}

const FLAG_BIAS: u32 = 1;
const FLAG_GELU: u32 = 2;
const FLAG_ACCUMULATE: u32 = 4;
const FLAG_SILU_GATE: u32 = 8;
const FLAG_NORM: u32 = 16;
const FLAG_RMS: u32 = 32;

/// A norm applied to each row of a matrix product's input as it is read.
#[derive(Clone, Copy)]
pub struct InputNorm<'a> {
    pub kind: NormKind,
    pub w: &'a GpuVector,
    pub b: Option<&'a GpuVector>,
    pub eps: f32,
}

/// Which matrix-product kernel to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKernel {
    /// matvec up to MATVEC_MAX_T tokens, tiled matmul beyond.
    Auto,
    /// Force the matrix-vector kernel (T <= MATVEC_MAX_T).
    Vec,
    /// Force the tiled kernel.
    Tiled,
}

/// Where a matrix product reads and writes: rows `x_row..x_row + t` of `x (.., K)` and
/// `out (t, out_stride)` starting at column `out_col`. With `gated`, x rows are
/// `[gate | up]` (2K wide) and the input is `silu(gate) * up`.
pub struct MatmulIo<'a> {
    pub x: &'a wgpu::Buffer,
    pub x_row: usize,
    pub t: usize,
    pub gated: bool,
    /// Normalise each x row first (a block's pre-norm fused into its first product).
    pub norm: Option<InputNorm<'a>>,
    pub out: &'a wgpu::Buffer,
    pub out_stride: usize,
    pub out_col: usize,
}

/// `out (T, N) [+]= x (T, K) @ w (N, K)^T [+ bias] [gelu]`, one dispatch per weight chunk.
pub fn matmul(
    rec: &mut Recorder,
    ctx: &GpuContext,
    kind: &'static str,
    io: &MatmulIo<'_>,
    w: &GpuMatrix,
    bias: Option<&GpuVector>,
    epilogue: Epilogue,
    which: MatmulKernel,
) {
    let k = w.cols;
    if let Some(b) = bias {
        assert_eq!(b.len, w.rows, "bias length");
    }
    let max_t = ctx.consts.matvec_max_t as usize;
    let kernel = match which {
        MatmulKernel::Auto if io.t <= max_t => Kernel::Matvec,
        MatmulKernel::Vec => {
            assert!(io.t <= max_t, "matvec takes at most {max_t} tokens");
            Kernel::Matvec
        }
        _ => Kernel::Matmul,
    };
    let flags = bias.map_or(0, |_| FLAG_BIAS)
        | if epilogue.gelu { FLAG_GELU } else { 0 }
        | if epilogue.accumulate {
            FLAG_ACCUMULATE
        } else {
            0
        }
        | if io.gated { FLAG_SILU_GATE } else { 0 }
        | match io.norm.map(|n| n.kind) {
            None => 0,
            Some(NormKind::Layer) => FLAG_NORM,
            Some(NormKind::Rms) => FLAG_NORM | FLAG_RMS,
        };
    if let Some(n) = &io.norm {
        assert!(!io.gated, "a gated input is not normalised");
        assert_eq!(n.w.len, k, "norm weight length");
        assert_eq!(
            n.kind == NormKind::Layer,
            n.b.is_some(),
            "LayerNorm needs a bias"
        );
    }
    let norm_w = io.norm.map_or(&ctx.dummy, |n| &n.w.buffer);
    let norm_b = io.norm.and_then(|n| n.b).map_or(&ctx.dummy, |b| &b.buffer);
    let x_stride = if io.gated { 2 * k } else { k };
    let bias_buf = bias.map_or(&ctx.dummy, |b| &b.buffer);
    for chunk in &w.chunks {
        let params = MatmulParams {
            t: u(io.t),
            n: u(chunk.rows),
            k: u(k),
            k_vec: u(w.stride / 8),
            x_off: u(io.x_row * x_stride),
            x_stride: u(x_stride),
            out_off: u(io.out_col + chunk.row0),
            out_stride: u(io.out_stride),
            bias_off: u(chunk.row0),
            flags,
            eps: io.norm.map_or(0.0, |n| n.eps),
            _pad: 0,
        };
        let groups = match kernel {
            Kernel::Matvec => grid(ctx, u(chunk.rows.div_ceil(ctx.consts.matvec_rows as usize))),
            _ => {
                let tile = ctx.consts.mm_tile as usize;
                [u(chunk.rows.div_ceil(tile)), u(io.t.div_ceil(tile)), 1]
            }
        };
        let mut bindings = vec![
            (1, io.x),
            (2, &chunk.buffer),
            (3, bias_buf),
            (4, io.out),
            (6, norm_w),
            (7, norm_b),
        ];
        if kernel == Kernel::Matvec {
            bindings.push((5, io.x));
        }
        rec.dispatch(kernel, kind, &params, &bindings, groups);
    }
}

// ---- elementwise.wgsl ----------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElemParams {
    rows: u32,
    n: u32,
    _pad: [u32; 2],
}

fn elem_groups(ctx: &GpuContext, count: usize) -> [u32; 3] {
    grid(ctx, u(count.div_ceil(ctx.consts.elem_wg as usize)))
}

/// `x (rows, n) += y (rows, n)`.
pub fn add(
    rec: &mut Recorder,
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    rows: usize,
    n: usize,
) {
    let params = ElemParams {
        rows: u(rows),
        n: u(n),
        _pad: [0; 2],
    };
    rec.dispatch(
        Kernel::Add,
        "add",
        &params,
        &[(1, x), (2, y)],
        elem_groups(ctx, rows * n),
    );
}

/// `x (rows, n) += bias (n)`.
pub fn bias_add(
    rec: &mut Recorder,
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    bias: &GpuVector,
    rows: usize,
) {
    let n = bias.len;
    let params = ElemParams {
        rows: u(rows),
        n: u(n),
        _pad: [0; 2],
    };
    rec.dispatch(
        Kernel::BiasAdd,
        "bias_add",
        &params,
        &[(1, x), (3, &bias.buffer)],
        elem_groups(ctx, rows * n),
    );
}

/// `x = gelu_tanh(x)` on `count` values.
pub fn gelu(rec: &mut Recorder, ctx: &GpuContext, x: &wgpu::Buffer, count: usize) {
    let params = ElemParams {
        rows: 1,
        n: u(count),
        _pad: [0; 2],
    };
    rec.dispatch(
        Kernel::Gelu,
        "gelu",
        &params,
        &[(1, x)],
        elem_groups(ctx, count),
    );
}

/// `out (rows, n) = silu(gate_up[:, :n]) * gate_up[:, n:]` with `gate_up (rows, 2n)`.
pub fn silu_mul(
    rec: &mut Recorder,
    ctx: &GpuContext,
    gate_up: &wgpu::Buffer,
    out: &wgpu::Buffer,
    rows: usize,
    n: usize,
) {
    let params = ElemParams {
        rows: u(rows),
        n: u(n),
        _pad: [0; 2],
    };
    rec.dispatch(
        Kernel::SiluMul,
        "silu_mul",
        &params,
        &[(1, out), (2, gate_up)],
        elem_groups(ctx, rows * n),
    );
}

// ---- rope.wgsl -----------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RopeParams {
    t: u32,
    pos: u32,
    heads: u32,
    kv_heads: u32,
    hd: u32,
    has_rope: u32,
    _pad: [u32; 2],
}

/// The cos/sin table the RoPE kernels read: `(positions, hd/2)` pairs `(cos, sin)` of
/// `p * theta^(-2i/hd)`, computed exactly as the CPU reference computes them.
pub fn rope_table(theta: f32, hd: usize, positions: usize) -> Vec<f32> {
    let half = hd / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32))
        .collect();
    let mut out = Vec::with_capacity(positions * half * 2);
    for p in 0..positions {
        for f in &inv_freq {
            let (sin, cos) = (p as f32 * f).sin_cos();
            out.push(cos);
            out.push(sin);
        }
    }
    out
}

/// Rotates `x (T, heads * hd)` in place, row t at position `pos + t`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    rec: &mut Recorder,
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    table: &wgpu::Buffer,
    t: usize,
    heads: usize,
    hd: usize,
    pos: usize,
) {
    assert!(hd % 2 == 0, "RoPE needs an even head size");
    let params = RopeParams {
        t: u(t),
        pos: u(pos),
        heads: u(heads),
        kv_heads: 0,
        hd: u(hd),
        has_rope: 1,
        _pad: [0; 2],
    };
    let groups = grid(
        ctx,
        u((t * heads * hd / 2).div_ceil(ctx.consts.rope_wg as usize)),
    );
    rec.dispatch(Kernel::Rope, "rope", &params, &[(1, table), (2, x)], groups);
}

/// Shapes of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
}

/// Splits `qkv (T, q_dim + 2 kv_dim)` into `q (T, q_dim)` and cache rows `pos..pos + T`,
/// rotating q and k when `table` is given.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope(
    rec: &mut Recorder,
    ctx: &GpuContext,
    qkv: &wgpu::Buffer,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    table: Option<&wgpu::Buffer>,
    t: usize,
    pos: usize,
    h: Heads,
) {
    let params = RopeParams {
        t: u(t),
        pos: u(pos),
        heads: u(h.heads),
        kv_heads: u(h.kv_heads),
        hd: u(h.hd),
        has_rope: table.is_some() as u32,
        _pad: [0; 2],
    };
    let width = (h.heads + 2 * h.kv_heads) * h.hd;
    let groups = grid(ctx, u((t * width).div_ceil(ctx.consts.rope_wg as usize)));
    rec.dispatch(
        Kernel::QkvRope,
        "qkv_rope",
        &params,
        &[
            (1, table.unwrap_or(&ctx.dummy)),
            (2, q),
            (3, qkv),
            (4, k_cache),
            (5, v_cache),
        ],
        groups,
    );
}

// ---- attention.wgsl ------------------------------------------------------------------------

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
        h.heads % h.kv_heads == 0,
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
        &[(4, scratch.ml), (5, scratch.acc), (6, out)],
        grid(ctx, u((t * h.heads * h.hd).div_ceil(c.combine_wg as usize))),
    );
}

// ---- topk.wgsl -----------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TopKParams {
    n: u32,
    k: u32,
    has_ids: u32,
    _pad: u32,
}

/// Elements each ping-pong candidate buffer needs for `n` values and `k` survivors.
pub fn topk_scratch(ctx: &GpuContext, n: usize, k: usize) -> usize {
    n.div_ceil(ctx.consts.topk_chunk as usize) * k
}

/// Reduces `vals (n)` (ids = indices) to its `k` best; returns which of the two candidate
/// buffer pairs holds the result (`k` values and ids, best first).
#[allow(clippy::too_many_arguments)]
pub fn top_k<'a>(
    rec: &mut Recorder,
    ctx: &GpuContext,
    vals: &'a wgpu::Buffer,
    n: usize,
    k: usize,
    cand: [(&'a wgpu::Buffer, &'a wgpu::Buffer); 2],
) -> (&'a wgpu::Buffer, &'a wgpu::Buffer) {
    let chunk = ctx.consts.topk_chunk as usize;
    assert!(
        k >= 1 && k <= chunk && k <= n,
        "top-k needs 1 <= k <= min(n, {chunk})"
    );
    let mut input: (&wgpu::Buffer, Option<&wgpu::Buffer>) = (vals, None);
    let mut count = n;
    let mut which = 0;
    loop {
        let groups = count.div_ceil(chunk);
        let (ov, oi) = cand[which];
        let params = TopKParams {
            n: u(count),
            k: u(k),
            has_ids: input.1.is_some() as u32,
            _pad: 0,
        };
        rec.dispatch(
            Kernel::TopK,
            "topk",
            &params,
            &[
                (1, input.0),
                (2, input.1.unwrap_or(&ctx.dummy)),
                (3, ov),
                (4, oi),
            ],
            grid(ctx, u(groups)),
        );
        if groups == 1 {
            return (ov, oi);
        }
        input = (ov, Some(oi));
        count = groups * k;
        which = 1 - which;
    }
}

// ---- quant.wgsl ----------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct QuantParams {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

/// SYN1 int8: `scales (rows)` and `q` (rows * cols bytes, packed four per u32) from
/// `x (rows, cols)`.
pub fn quantize_int8(
    rec: &mut Recorder,
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    rows: usize,
    cols: usize,
    scales: &wgpu::Buffer,
    q: &wgpu::Buffer,
) {
    let params = QuantParams {
        rows: u(rows),
        cols: u(cols),
        _pad: [0; 2],
    };
    rec.dispatch(
        Kernel::RowScales,
        "quantize",
        &params,
        &[(1, x), (2, scales)],
        grid(ctx, u(rows)),
    );
    let words = (rows * cols).div_ceil(4);
    rec.dispatch(
        Kernel::Quantize,
        "quantize",
        &params,
        &[(1, x), (2, scales), (3, q)],
        grid(ctx, u(words.div_ceil(ctx.consts.quant_wg as usize))),
    );
}

/// `x (rows, cols) = q * scale` of its row.
pub fn dequantize_int8(
    rec: &mut Recorder,
    ctx: &GpuContext,
    q: &wgpu::Buffer,
    scales: &wgpu::Buffer,
    rows: usize,
    cols: usize,
    x: &wgpu::Buffer,
) {
    let params = QuantParams {
        rows: u(rows),
        cols: u(cols),
        _pad: [0; 2],
    };
    rec.dispatch(
        Kernel::Dequantize,
        "dequantize",
        &params,
        &[(1, x), (2, scales), (3, q)],
        grid(ctx, u((rows * cols).div_ceil(ctx.consts.quant_wg as usize))),
    );
}
