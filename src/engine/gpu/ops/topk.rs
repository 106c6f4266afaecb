//! Top-k selection over logits (topk.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::{grid, u};

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
