// Row normalisations, one workgroup per row of x (rows, C):
//   layernorm: (x - mean) / sqrt(var + eps) * w + b, biased variance (GPT-2)
//   rmsnorm:   x / sqrt(mean(x^2) + eps) * w (Llama)
// w and b are f16 packed two per u32 (low half first). Offsets and strides come from the
// uniform so a caller can normalise only the last row of a step.

const NORM_WG: u32 = 256u;

const KIND_LAYERNORM: u32 = 0u;
const KIND_RMSNORM: u32 = 1u;

struct Params {
    rows: u32,
    c: u32,
    x_off: u32,      // element offset of x's first row
    x_stride: u32,
    out_off: u32,
    out_stride: u32,
    kind: u32,       // KIND_*
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> b: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn half_w(i: u32) -> f32 {
    let pair = unpack2x16float(w[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

fn half_b(i: u32) -> f32 {
    let pair = unpack2x16float(b[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

var<workgroup> red: array<f32, NORM_WG>;

// Sum of `v` over the workgroup; every invocation gets the result.
fn workgroup_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = NORM_WG / 2u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(NORM_WG)
fn norm(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let xb = p.x_off + row * p.x_stride;
    let ob = p.out_off + row * p.out_stride;
    let cf = f32(p.c);
    if (p.kind == KIND_LAYERNORM) {
        var s = 0.0;
        for (var i = li; i < p.c; i += NORM_WG) {
            s += x[xb + i];
        }
        let mean = workgroup_sum(li, s) / cf;
        var v = 0.0;
        for (var i = li; i < p.c; i += NORM_WG) {
            let d = x[xb + i] - mean;
            v += d * d;
        }
        let inv = 1.0 / sqrt(workgroup_sum(li, v) / cf + p.eps);
        for (var i = li; i < p.c; i += NORM_WG) {
            out[ob + i] = (x[xb + i] - mean) * inv * half_w(i) + half_b(i);
        }
    } else {
        var s = 0.0;
        for (var i = li; i < p.c; i += NORM_WG) {
            let v = x[xb + i];
            s += v * v;
        }
        let inv = 1.0 / sqrt(workgroup_sum(li, s) / cf + p.eps);
        for (var i = li; i < p.c; i += NORM_WG) {
            out[ob + i] = x[xb + i] * inv * half_w(i);
        }
        // Keep `b` statically used so both kinds share one bind group layout.
        if (p.c == 0u) {
            out[ob] = half_b(0u);
        }
    }
}
