//! RoPE and the q/k/v split into the KV cache (rope.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::{grid, u};

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
    assert!(hd.is_multiple_of(2), "RoPE needs an even head size");
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
