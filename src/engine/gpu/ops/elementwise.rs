//! Residual add, bias add, gelu and the SwiGLU gated product (elementwise.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::buffers::GpuVector;
use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::{grid, u};

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
