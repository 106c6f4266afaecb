//! SYN1 int8 quantization of activations (quant.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::{grid, u};

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
