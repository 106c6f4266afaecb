//! One function per op: shape checks, the uniform parameters (mirroring the WGSL structs), the
//! dispatch size, and the bindings; one file per shader file. Each appends to a
//! [`Recorder`](super::recorder::Recorder); nothing runs until the step is encoded. Offsets and
//! strides are in elements, so ops read and write parts of the step's scratch buffers without
//! sub-bindings.

use super::context::GpuContext;

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

pub(crate) fn u(v: usize) -> u32 {
    u32::try_from(v).expect("sizes fit in u32")
}

mod attention;
mod elementwise;
mod embed;
mod matmul;
mod norm;
mod quant;
mod rope;
mod topk;

pub use attention::*;
pub use elementwise::*;
pub use embed::*;
pub use matmul::*;
pub use norm::*;
pub use quant::*;
pub use rope::*;
pub use topk::*;
