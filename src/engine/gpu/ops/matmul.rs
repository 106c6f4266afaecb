//! Matrix products against f16 weights with their fused prologues and epilogues (matmul.wgsl).

use bytemuck::{Pod, Zeroable};

use super::super::buffers::{GpuMatrix, GpuVector};
use super::super::context::GpuContext;
use super::super::kernels::Kernel;
use super::super::recorder::Recorder;
use super::NormKind;
use super::{grid, u};

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
    lanes: u32,
    heads: u32,
    splits: u32,
    _pad: [u32; 2],
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
const FLAG_ATT_COMBINE: u32 = 64;

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
    /// x is attention's split partials (decode): the input is their merge
    /// ([`super::attention_partial`] says when this is allowed).
    pub combine: Option<super::AttnPartials<'a>>,
    pub out: &'a wgpu::Buffer,
    pub out_stride: usize,
    pub out_col: usize,
}

impl<'a> MatmulIo<'a> {
    /// `t` rows of `x` from row 0, un-normalised and not gated, into `out` rows `width` wide.
    pub fn plain(x: &'a wgpu::Buffer, out: &'a wgpu::Buffer, t: usize, width: usize) -> Self {
        MatmulIo {
            x,
            x_row: 0,
            t,
            gated: false,
            norm: None,
            combine: None,
            out,
            out_stride: width,
            out_col: 0,
        }
    }
}

/// `out (T, N) [+]= x (T, K) @ w (N, K)^T [+ bias] [gelu]`, one dispatch per weight chunk.
#[allow(clippy::too_many_arguments)]
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
        }
        | if io.combine.is_some() {
            FLAG_ATT_COMBINE
        } else {
            0
        };
    // Where the device has fixed-size subgroups, wide products (N >= 2K: gate/up, GPT-2's qkv,
    // the head) sum with them instead (matvec_subgroup.wgsl): one subgroup a feature, `lanes` =
    // the subgroup size. Narrow ones keep the workgroup matvec: its 64 lanes a row and shared
    // norm statistics were faster there on the H200 (docs/PERF.md).
    let subgroup = ctx.subgroup_matvec_size().filter(|_| w.rows >= 2 * k);
    let kernel = match (kernel, io.combine.is_some(), subgroup) {
        (Kernel::Matvec, true, _) => Kernel::MatvecMerged,
        (Kernel::Matvec, false, Some(_)) => Kernel::MatvecSubgroup,
        (k, _, _) => k,
    };
    let lanes = match (kernel, subgroup) {
        (Kernel::MatvecSubgroup, Some(sg)) => sg,
        _ => ctx.matvec_lanes(),
    };
    if let Some(c) = &io.combine {
        assert!(
            kernel == Kernel::MatvecMerged && io.t == 1 && io.norm.is_none() && !io.gated,
            "attention's merge feeds a plain one-token matvec"
        );
        assert_eq!(c.heads * c.hd, k, "merged attention width");
    }
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
            lanes,
            heads: io.combine.map_or(0, |c| u(c.heads)),
            splits: io.combine.map_or(0, |c| u(c.splits)),
            _pad: [0; 2],
        };
        let groups = match kernel {
            Kernel::Matvec | Kernel::MatvecMerged | Kernel::MatvecSubgroup => grid(
                ctx,
                u(chunk.rows.div_ceil((ctx.consts.matvec_wg / lanes) as usize)),
            ),
            _ => {
                let tile = ctx.consts.mm_tile as usize;
                [u(chunk.rows.div_ceil(tile)), u(io.t.div_ceil(tile)), 1]
            }
        };
        // Each entry point's derived layout holds only the bindings it uses.
        let bindings = match (kernel, io.combine) {
            (Kernel::MatvecMerged, Some(c)) => vec![
                (2, &chunk.buffer),
                (3, bias_buf),
                (4, io.out),
                (5, io.x),
                (8, c.ml),
            ],
            _ => {
                let mut b = vec![
                    (1, io.x),
                    (2, &chunk.buffer),
                    (3, bias_buf),
                    (4, io.out),
                    (6, norm_w),
                    (7, norm_b),
                ];
                if matches!(kernel, Kernel::Matvec | Kernel::MatvecSubgroup) {
                    b.push((5, io.x));
                }
                b
            }
        };
        rec.dispatch(kernel, kind, &params, &bindings, groups);
    }
}
