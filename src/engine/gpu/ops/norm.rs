//! LayerNorm and RMSNorm as their own dispatch (norm.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::buffers::GpuVector;
use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::{grid, u};

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
