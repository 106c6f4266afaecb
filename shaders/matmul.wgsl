// Matrix products against f16 weights with f32 accumulation:
//   out (T, N) = x (T, K) @ W (N, K)^T  [+ bias (N)] [-> gelu] [+= out]
// where x may instead be SwiGLU's silu(gate) * up of rows [gate | up] (FLAG_SILU_GATE), or
// each row of x normalised first (FLAG_NORM: LayerNorm, or RMSNorm with FLAG_RMS), so a block's
// norm rides on the product that reads it instead of taking its own dispatch.
//
// Weights are f16 packed two per u32 (low half first) and every row is padded with zeros to a
// multiple of 8 halves, so a row is a whole number of vec4<u32> (`k_vec` of them). Core WGSL
// only: no shader-f16, no subgroups, so the browser loads this file unchanged.
//
// Three entry points share the bindings and the epilogue:
//   matvec: few tokens (T <= MATVEC_MAX_T), one group of `lanes` threads per output feature,
//           the weight row read once for all T tokens; what decoding runs.
//   matvec_merged: matvec of one token whose input is attention's split partials, merged in
//           workgroup memory first (FLAG_ATT_COMBINE): decode's o product.
//   matmul: any T, MM_TILE x MM_TILE output tiles staged through workgroup memory; what prefill
//           runs.
// Element offsets and strides come from the uniform, so callers can read a row range of x and
// write a column range of a wider output (a head split over several weight chunks).

const MATVEC_WG: u32 = 256u;
// Lanes per output feature: a power of two from MATVEC_PART to MATVEC_WG, chosen by the host
// per dispatch (`lanes`): many on a GPU, where they hide memory latency; few on a CPU
// adapter, where each lane is a SIMD slot.
const MATVEC_MAX_LANES: u32 = 64u;
const MATVEC_PART: u32 = 8u; // lanes whose partials one reducer adds
const MATVEC_MAX_T: u32 = 8u;

const MM_TILE: u32 = 64u;
const MM_TILE_K: u32 = 16u;
const MM_THREAD_TILE: u32 = 4u;
const MM_SIDE: u32 = MM_TILE / MM_THREAD_TILE;
const MM_WG: u32 = MM_SIDE * MM_SIDE;

const FLAG_BIAS: u32 = 1u;
const FLAG_GELU: u32 = 2u;
const FLAG_ACCUMULATE: u32 = 4u;
// x rows are [gate | up], 2K wide, and the product's input is silu(gate) * up (SwiGLU),
// so the gated product never needs its own dispatch.
const FLAG_SILU_GATE: u32 = 8u;
const FLAG_NORM: u32 = 16u;
const FLAG_RMS: u32 = 32u;
// Decode only (matvec, T = 1): x is attention's per-split partial outputs (attention.wgsl's
// part_acc, (heads, splits, hd)) and part_ml their (max, sum); the product's input is their
// merge, computed as attn_combine does, so the combine never needs its own dispatch.
const FLAG_ATT_COMBINE: u32 = 64u;
// Largest K the merged input may have (it is staged in workgroup memory), and the most
// heads * splits it merges.
const MATVEC_COMBINE_MAX_K: u32 = 2048u;
const MATVEC_COMBINE_MAX_SLOTS: u32 = 1024u;
// Stands in for -infinity, as in attention.wgsl.
const COMBINE_NEG: f32 = -3.0e38;

struct Params {
    t: u32,          // tokens (rows of x and out)
    n: u32,          // output features (weight rows in this binding)
    k: u32,          // input features
    k_vec: u32,      // weight row stride in vec4<u32> (8 halves)
    x_off: u32,      // element offset of x's first row
    x_stride: u32,   // elements between rows of x
    out_off: u32,    // element offset of out (0, 0)
    out_stride: u32, // elements between rows of out
    bias_off: u32,   // index of this chunk's first bias value
    flags: u32,      // FLAG_*
    eps: f32,        // of the norm (FLAG_NORM)
    lanes: u32,      // matvec lanes per output feature
    heads: u32,      // attention heads of the merged input (FLAG_ATT_COMBINE)
    splits: u32,     // key splits per head of the merged input (FLAG_ATT_COMBINE)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// The same buffer as x, read four floats at a time where rows are aligned (matvec only).
@group(0) @binding(5) var<storage, read> xv: array<vec4<f32>>;
// The norm's weight and bias (FLAG_NORM), f16 packed two per u32.
@group(0) @binding(6) var<storage, read> norm_w: array<u32>;
@group(0) @binding(7) var<storage, read> norm_b: array<u32>;
// Attention's per-split (max, sum) (FLAG_ATT_COMBINE, matvec only).
@group(0) @binding(8) var<storage, read> part_ml: array<vec2<f32>>;

fn bias_at(i: u32) -> f32 {
    let pair = unpack2x16float(bias[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// GPT-2's gelu, tanh form; the argument is clamped because tanh(15) is already 1 in f32 and
// some drivers compute tanh through exp, which overflows.
fn gelu(v: f32) -> f32 {
    let u = clamp(0.7978846 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    return 0.5 * v * (1.0 + tanh(u));
}

fn epilogue(row: u32, col: u32, acc: f32) {
    var v = acc;
    if ((p.flags & FLAG_BIAS) != 0u) {
        v = v + bias_at(p.bias_off + col);
    }
    if ((p.flags & FLAG_GELU) != 0u) {
        v = gelu(v);
    }
    let i = p.out_off + row * p.out_stride + col;
    if ((p.flags & FLAG_ACCUMULATE) != 0u) {
        v = out[i] + v;
    }
    out[i] = v;
}

fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Eight weights (one vec4<u32>) dotted with eight inputs.
fn dot8(q: vec4<u32>, a: vec4<f32>, b: vec4<f32>) -> f32 {
    let lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    return dot(lo, a) + dot(hi, b);
}

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

fn silu4(g: vec4<f32>) -> vec4<f32> {
    return g / (vec4<f32>(1.0) + exp(-g));
}

fn gated() -> bool {
    return (p.flags & FLAG_SILU_GATE) != 0u;
}

fn normed() -> bool {
    return (p.flags & FLAG_NORM) != 0u;
}

fn rms() -> bool {
    return (p.flags & FLAG_RMS) != 0u;
}

fn half_of(words: u32, i: u32) -> f32 {
    let pair = unpack2x16float(words);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// The norm applied to value v of column k, as the CPU computes it:
// (v - mean) * rstd * w + b, or v * rstd * w for RMSNorm.
fn norm1(v: f32, k: u32, mean: f32, rstd: f32) -> f32 {
    let wk = half_of(norm_w[k >> 1u], k);
    if (rms()) {
        return v * rstd * wk;
    }
    return (v - mean) * rstd * wk + half_of(norm_b[k >> 1u], k);
}

fn norm4(v: vec4<f32>, k: u32, mean: f32, rstd: f32) -> vec4<f32> {
    let w4 = vec4<f32>(unpack2x16float(norm_w[k >> 1u]), unpack2x16float(norm_w[(k >> 1u) + 1u]));
    if (rms()) {
        return v * rstd * w4;
    }
    let b4 = vec4<f32>(unpack2x16float(norm_b[k >> 1u]), unpack2x16float(norm_b[(k >> 1u) + 1u]));
    return (v - vec4<f32>(mean)) * rstd * w4 + b4;
}

// Input k of the row starting at `base` (0 past K): gated when FLAG_SILU_GATE is set,
// normalised with the row's (mean, rstd) when FLAG_NORM is set.
fn x_at(base: u32, k: u32, mean: f32, rstd: f32) -> f32 {
    if (k >= p.k) {
        return 0.0;
    }
    if (gated()) {
        return silu(x[base + k]) * x[base + p.k + k];
    }
    if (normed()) {
        return norm1(x[base + k], k, mean, rstd);
    }
    return x[base + k];
}

// Inputs 4 i4 .. 4 i4 + 4 of an aligned row, as x_at.
fn x4_at(base4: u32, i4: u32, mean: f32, rstd: f32) -> vec4<f32> {
    if (gated()) {
        return silu4(xv[base4 + i4]) * xv[base4 + p.k / 4u + i4];
    }
    if (normed()) {
        return norm4(xv[base4 + i4], 4u * i4, mean, rstd);
    }
    return xv[base4 + i4];
}

var<workgroup> red: array<f32, MATVEC_WG>;
var<workgroup> red2: array<f32, MATVEC_WG>;
// FLAG_ATT_COMBINE: the merged input row.
var<workgroup> comb_x: array<vec4<f32>, MATVEC_COMBINE_MAX_K / 4u>;

// The merged attention output (FLAG_ATT_COMBINE) into comb_x, element by element with
// attn_combine's arithmetic: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M). One pass
// and one barrier: every invocation reads its head's (m, l) pairs itself (they are in cache).
fn matvec_combine(li: u32) {
    let s_n = p.splits;
    let h4 = p.k / (4u * p.heads);
    for (var i = li; i < p.k / 4u; i += MATVEC_WG) {
        let h = i / h4;
        let d4 = i % h4;
        var big = COMBINE_NEG;
        for (var s = 0u; s < s_n; s++) {
            big = max(big, part_ml[h * s_n + s].x);
        }
        var l = 0.0;
        var o = vec4<f32>(0.0);
        for (var s = 0u; s < s_n; s++) {
            let ml = part_ml[h * s_n + s];
            let f = exp(ml.x - big);
            l += ml.y * f;
            o += xv[(h * s_n + s) * h4 + d4] * f;
        }
        comb_x[i] = o / l;
    }
    workgroupBarrier();
}

// Sum of v over the matvec workgroup; every invocation gets it.
fn matvec_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    if (li < MATVEC_WG / MATVEC_PART) {
        var s = 0.0;
        for (var i = 0u; i < MATVEC_PART; i++) {
            s += red[li * MATVEC_PART + i];
        }
        red2[li] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < MATVEC_WG / MATVEC_PART; i++) {
        total += red2[i];
    }
    workgroupBarrier();
    return total;
}

// (mean, rstd) of the row at `base`: LayerNorm's two passes, or RMSNorm's mean square.
fn matvec_stats(li: u32, base: u32) -> vec2<f32> {
    let kf = f32(p.k);
    if (rms()) {
        var s = 0.0;
        for (var k = li; k < p.k; k += MATVEC_WG) {
            let v = x[base + k];
            s += v * v;
        }
        return vec2<f32>(0.0, 1.0 / sqrt(matvec_sum(li, s) / kf + p.eps));
    }
    var s = 0.0;
    for (var k = li; k < p.k; k += MATVEC_WG) {
        s += x[base + k];
    }
    let mean = matvec_sum(li, s) / kf;
    var v = 0.0;
    for (var k = li; k < p.k; k += MATVEC_WG) {
        let d = x[base + k] - mean;
        v += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(matvec_sum(li, v) / kf + p.eps));
}

// Sum of each lane group's partials, in lane 0 of the group: lanes / MATVEC_PART reducers add
// MATVEC_PART partials each, then lane 0 adds theirs.
fn matvec_reduce(li: u32, lane: u32, lanes: u32, acc: f32) -> f32 {
    red[li] = acc;
    workgroupBarrier();
    if (lane < lanes / MATVEC_PART) {
        var s = 0.0;
        for (var i = 0u; i < MATVEC_PART; i++) {
            s += red[li + lane * (MATVEC_PART - 1u) + i];
        }
        red2[li] = s;
    }
    workgroupBarrier();
    var s = 0.0;
    if (lane == 0u) {
        for (var i = 0u; i < lanes / MATVEC_PART; i++) {
            s += red2[li + i];
        }
    }
    workgroupBarrier();
    return s;
}

// One group of `lanes` threads per output feature; the lanes stride over the row in
// vec4<u32> steps (coalesced), then lane 0 sums the group's partials. Tokens run one after
// another: each re-reads the weight row, which is in cache by then. Each lane's first weight
// load is issued before the norm's statistics, so it is in flight during their barriers.
@compute @workgroup_size(MATVEC_WG)
fn matvec(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lanes = p.lanes;
    let r = li / lanes;
    let lane = li % lanes;
    let n = linear_group(wg, nwg) * (MATVEC_WG / lanes) + r;
    let valid = n < p.n;
    let row = min(n, p.n - 1u) * p.k_vec;
    let first = valid && lane < p.k_vec;
    var w_first = vec4<u32>(0u);
    if (first) {
        w_first = w[row + lane];
    }
    // Whole vec4 reads of x need K a multiple of 8 and rows starting on a vec4.
    let aligned = (p.k % 8u) == 0u && (p.x_off % 4u) == 0u && (p.x_stride % 4u) == 0u;
    for (var t = 0u; t < p.t; t++) {
        let xb = p.x_off + t * p.x_stride;
        var st = vec2<f32>(0.0, 1.0);
        if (normed()) {
            st = matvec_stats(li, xb);
        }
        var acc = 0.0;
        if (first && aligned) {
            let xb4 = xb / 4u;
            acc = dot8(w_first, x4_at(xb4, 2u * lane, st.x, st.y), x4_at(xb4, 2u * lane + 1u, st.x, st.y));
            for (var c = lane + lanes; c < p.k_vec; c += lanes) {
                acc += dot8(w[row + c], x4_at(xb4, 2u * c, st.x, st.y), x4_at(xb4, 2u * c + 1u, st.x, st.y));
            }
        } else if (first) {
            for (var c = lane; c < p.k_vec; c += lanes) {
                let k0 = c * 8u;
                let a = vec4<f32>(
                    x_at(xb, k0, st.x, st.y),
                    x_at(xb, k0 + 1u, st.x, st.y),
                    x_at(xb, k0 + 2u, st.x, st.y),
                    x_at(xb, k0 + 3u, st.x, st.y),
                );
                let b = vec4<f32>(
                    x_at(xb, k0 + 4u, st.x, st.y),
                    x_at(xb, k0 + 5u, st.x, st.y),
                    x_at(xb, k0 + 6u, st.x, st.y),
                    x_at(xb, k0 + 7u, st.x, st.y),
                );
                acc += dot8(w[row + c], a, b);
            }
        }
        let s = matvec_reduce(li, lane, lanes, acc);
        if (lane == 0u && valid) {
            epilogue(t, n, s);
        }
    }
}

// matvec for one token whose input is attention's split partials (FLAG_ATT_COMBINE): the
// merged row is staged in workgroup memory first. Its own entry point, so the plain matvec
// does not carry that workgroup memory (which costs it occupancy).
@compute @workgroup_size(MATVEC_WG)
fn matvec_merged(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lanes = p.lanes;
    let r = li / lanes;
    let lane = li % lanes;
    let n = linear_group(wg, nwg) * (MATVEC_WG / lanes) + r;
    let valid = n < p.n;
    let row = min(n, p.n - 1u) * p.k_vec;
    let first = valid && lane < p.k_vec;
    var w_first = vec4<u32>(0u);
    if (first) {
        w_first = w[row + lane];
    }
    matvec_combine(li);
    var acc = 0.0;
    if (first) {
        acc = dot8(w_first, comb_x[2u * lane], comb_x[2u * lane + 1u]);
        for (var c = lane + lanes; c < p.k_vec; c += lanes) {
            acc += dot8(w[row + c], comb_x[2u * c], comb_x[2u * c + 1u]);
        }
    }
    let s = matvec_reduce(li, lane, lanes, acc);
    if (lane == 0u && valid) {
        epilogue(0u, n, s);
    }
}

// Tiles in workgroup memory, four tokens or features per vec4: xs[k][token / 4],
// ws[k][feature / 4].
var<workgroup> xs: array<vec4<f32>, MM_TILE_K * MM_TILE / 4u>;
var<workgroup> ws: array<vec4<f32>, MM_TILE_K * MM_TILE / 4u>;
var<workgroup> tile_red: array<f32, MM_WG>;
var<workgroup> tile_stats: array<vec2<f32>, MM_TILE>;

// Sum over the MM_WG / MM_TILE invocations that share a tile row.
fn tile_row_sum(li: u32, v: f32) -> f32 {
    let per = MM_WG / MM_TILE;
    tile_red[li] = v;
    workgroupBarrier();
    let r = li / per;
    var s = 0.0;
    for (var i = 0u; i < per; i++) {
        s += tile_red[r * per + i];
    }
    workgroupBarrier();
    return s;
}

// (mean, rstd) of the tile's rows into tile_stats, MM_WG / MM_TILE invocations per row.
fn tile_norm_stats(li: u32, m0: u32) {
    let per = MM_WG / MM_TILE;
    let r = li / per;
    let j = li % per;
    let base = p.x_off + min(m0 + r, p.t - 1u) * p.x_stride;
    let kf = f32(p.k);
    var st = vec2<f32>(0.0, 1.0);
    if (rms()) {
        var s = 0.0;
        for (var k = j; k < p.k; k += per) {
            let v = x[base + k];
            s += v * v;
        }
        st = vec2<f32>(0.0, 1.0 / sqrt(tile_row_sum(li, s) / kf + p.eps));
    } else {
        var s = 0.0;
        for (var k = j; k < p.k; k += per) {
            s += x[base + k];
        }
        let mean = tile_row_sum(li, s) / kf;
        var v = 0.0;
        for (var k = j; k < p.k; k += per) {
            let d = x[base + k] - mean;
            v += d * d;
        }
        st = vec2<f32>(mean, 1.0 / sqrt(tile_row_sum(li, v) / kf + p.eps));
    }
    if (j == 0u) {
        tile_stats[r] = st;
    }
    workgroupBarrier();
}

// Each thread owns a 4 x 4 block of the output tile, held in four vec4 registers (no arrays,
// which some compilers leave in memory when indexed in loops).
@compute @workgroup_size(MM_WG)
fn matmul(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tx = li % MM_SIDE; // feature direction
    let ty = li / MM_SIDE; // token direction
    let n0 = wg.x * MM_TILE;
    let m0 = wg.y * MM_TILE;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let q4 = MM_TILE / 4u;
    if (normed()) {
        tile_norm_stats(li, m0);
    }
    for (var k0 = 0u; k0 < p.k; k0 += MM_TILE_K) {
        // x tile: MM_TILE tokens x MM_TILE_K inputs, one (4 tokens, 1 input) vec4 per step.
        for (var e = li; e < MM_TILE_K * q4; e += MM_WG) {
            let kk = e / q4;
            let r4 = e % q4;
            let gk = k0 + kk;
            var v = vec4<f32>(0.0);
            for (var i = 0u; i < 4u; i++) {
                let gm = m0 + r4 * 4u + i;
                if (gm < p.t) {
                    let st = tile_stats[r4 * 4u + i];
                    v[i] = x_at(p.x_off + gm * p.x_stride, gk, st.x, st.y);
                }
            }
            xs[kk * q4 + r4] = v;
        }
        // w tile: MM_TILE features x MM_TILE_K halves, 8 halves (one vec4<u32>) per load.
        for (var e = li; e < MM_TILE * (MM_TILE_K / 8u); e += MM_WG) {
            let row = e / (MM_TILE_K / 8u);
            let part = e % (MM_TILE_K / 8u);
            let gn = n0 + row;
            let cv = k0 / 8u + part;
            var q = vec4<u32>(0u);
            if (gn < p.n && cv < p.k_vec) {
                q = w[gn * p.k_vec + cv];
            }
            let lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
            let hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
            let kb = part * 8u;
            let c = row / 4u;
            let j = row % 4u;
            ws[(kb + 0u) * q4 + c][j] = lo.x;
            ws[(kb + 1u) * q4 + c][j] = lo.y;
            ws[(kb + 2u) * q4 + c][j] = lo.z;
            ws[(kb + 3u) * q4 + c][j] = lo.w;
            ws[(kb + 4u) * q4 + c][j] = hi.x;
            ws[(kb + 5u) * q4 + c][j] = hi.y;
            ws[(kb + 6u) * q4 + c][j] = hi.z;
            ws[(kb + 7u) * q4 + c][j] = hi.w;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < MM_TILE_K; kk++) {
            let a = xs[kk * q4 + ty];
            let b = ws[kk * q4 + tx];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    let row0 = m0 + ty * 4u;
    let col0 = n0 + tx * 4u;
    store4(row0, col0, acc0);
    store4(row0 + 1u, col0, acc1);
    store4(row0 + 2u, col0, acc2);
    store4(row0 + 3u, col0, acc3);
}

fn store4(row: u32, col0: u32, v: vec4<f32>) {
    if (row >= p.t) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (col0 + j < p.n) {
            epilogue(row, col0 + j, v[j]);
        }
    }
}
