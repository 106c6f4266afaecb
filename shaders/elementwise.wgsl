// Element-wise ops over f32 activations, one invocation per element:
//   add:       x += y              (the residual connection)
//   bias_add:  x (rows, n) += b (n), b f16 packed two per u32
//   gelu:      x = gelu_tanh(x)    (GPT-2's MLP)
//   silu_mul:  x (rows, n) = silu(y[:, :n]) * y[:, n:]   with y (rows, 2n) = [gate | up]
// The matrix products fuse bias and gelu into their epilogue; these entry points exist for the
// unfused path and for callers (the browser) that compose ops one by one.

const ELEM_WG: u32 = 256u;

struct Params {
    rows: u32,
    n: u32,   // columns of x
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * ELEM_WG + li;
}

@compute @workgroup_size(ELEM_WG)
fn add(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wg, nwg, li);
    if (i < p.rows * p.n) {
        x[i] = x[i] + y[i];
    }
}

@compute @workgroup_size(ELEM_WG)
fn bias_add(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wg, nwg, li);
    if (i < p.rows * p.n) {
        let j = i % p.n;
        let pair = unpack2x16float(bias[j >> 1u]);
        x[i] = x[i] + select(pair.x, pair.y, (j & 1u) == 1u);
    }
}

@compute @workgroup_size(ELEM_WG)
fn gelu(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wg, nwg, li);
    if (i < p.rows * p.n) {
        let v = x[i];
        // tanh(15) is 1 in f32; clamping keeps drivers that build tanh from exp finite.
        let u = clamp(0.7978846 * (v + 0.044715 * v * v * v), -15.0, 15.0);
        x[i] = 0.5 * v * (1.0 + tanh(u));
    }
}

@compute @workgroup_size(ELEM_WG)
fn silu_mul(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = index(wg, nwg, li);
    if (i < p.rows * p.n) {
        let r = i / p.n;
        let j = i % p.n;
        let g = y[r * 2u * p.n + j];
        let u = y[r * 2u * p.n + p.n + j];
        x[i] = g / (1.0 + exp(-g)) * u;
    }
}
