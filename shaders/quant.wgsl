// int8 activations in SYN1's layout (shared/SYN1.md): one scale per row,
// scale = max|x| / 127 (1 when the row is all zero), q = clamp(round(x / scale), -127, 127)
// with round = JavaScript's Math.round (ties toward +infinity). The q bytes are packed four
// per u32, little-endian, row after row, so the buffer's bytes are SYN1's `[i8 x rows*cols]`.
//
//   row_scales: one workgroup per row, writes scales.
//   quantize:   one invocation per packed u32 (four values; a word may straddle two rows).
//   dequantize: one invocation per value, x = q * scale.

const QUANT_WG: u32 = 256u;
const QMAX: f32 = 127.0;

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> q: array<u32>;

var<workgroup> red: array<f32, QUANT_WG>;

@compute @workgroup_size(QUANT_WG)
fn row_scales(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    var m = 0.0;
    for (var i = li; i < p.cols; i += QUANT_WG) {
        m = max(m, abs(x[row * p.cols + i]));
    }
    red[li] = m;
    workgroupBarrier();
    for (var s = QUANT_WG / 2u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let s = red[0] / QMAX;
        // 1 when the row is zero or the division underflows (as the CPU encoder does).
        scales[row] = select(1.0, s, s > 0.0 && s <= 3.4e38);
    }
}

@compute @workgroup_size(QUANT_WG)
fn quantize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let word = (wg.x + wg.y * nwg.x) * QUANT_WG + li;
    let total = p.rows * p.cols;
    if (word * 4u >= total) {
        return;
    }
    var packed = 0u;
    for (var b = 0u; b < 4u; b++) {
        let e = word * 4u + b;
        if (e < total) {
            let v = x[e] / scales[e / p.cols];
            let f = floor(v);
            let r = clamp(f + select(0.0, 1.0, v - f >= 0.5), -QMAX, QMAX);
            packed = packed | ((u32(i32(r)) & 0xffu) << (8u * b));
        }
    }
    q[word] = packed;
}

@compute @workgroup_size(QUANT_WG)
fn dequantize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = (wg.x + wg.y * nwg.x) * QUANT_WG + li;
    if (e >= p.rows * p.cols) {
        return;
    }
    let byte = (q[e / 4u] >> (8u * (e % 4u))) & 0xffu;
    let v = bitcast<i32>(byte << 24u) >> 24u; // sign-extend
    x[e] = f32(v) * scales[e / p.cols];
}
