//! Embedding lookup (embed.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::buffers::GpuMatrix;
use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::{grid, u};

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
#[allow(clippy::too_many_arguments)]
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
