// Rotary position embedding, Hugging Face "rotate half": within each head of hd values,
// element i pairs with i + hd/2 and both turn by angle(pos, i) = pos * theta^(-2i/hd).
// cos and sin come from a table (P, hd/2) of vec2(cos, sin) that the host computes once per
// model with the CPU reference's formula, so every backend rotates by identical factors and no
// GPU evaluates sin of a large angle.
//
//   rope:     in place on x (T, heads * hd), row t at position pos + t.
//   qkv_rope: splits a fused projection qkv (T, q_dim + 2 kv_dim) into q (T, q_dim) and the
//             session's key/value caches (rows pos..pos + T), rotating q and k when has_rope
//             is 1 (Llama) and copying them unchanged when 0 (GPT-2).

const ROPE_WG: u32 = 256u;

struct Params {
    t: u32,
    pos: u32,
    heads: u32,    // query heads (rope: heads of x)
    kv_heads: u32,
    hd: u32,
    has_rope: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@group(0) @binding(3) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * ROPE_WG + li;
}

@compute @workgroup_size(ROPE_WG)
fn rope(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let half = p.hd / 2u;
    let idx = index(wg, nwg, li);
    if (idx >= p.t * p.heads * half) {
        return;
    }
    let i = idx % half;
    let th = idx / half; // t * heads + head
    let t = th / p.heads;
    let base = th * p.hd;
    let cs = table[(p.pos + t) * half + i];
    let a = x[base + i];
    let b = x[base + i + half];
    x[base + i] = a * cs.x - b * cs.y;
    x[base + i + half] = b * cs.x + a * cs.y;
}

fn rotated(src: u32, local: u32, t: u32) -> f32 {
    let half = p.hd / 2u;
    let in_head = local % p.hd;
    let i = in_head % half;
    let cs = table[(p.pos + t) * half + i];
    if (in_head < half) {
        return qkv[src] * cs.x - qkv[src + half] * cs.y;
    }
    return qkv[src] * cs.x + qkv[src - half] * cs.y;
}

@compute @workgroup_size(ROPE_WG)
fn qkv_rope(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let q_dim = p.heads * p.hd;
    let kv_dim = p.kv_heads * p.hd;
    let width = q_dim + 2u * kv_dim;
    let idx = index(wg, nwg, li);
    if (idx >= p.t * width) {
        return;
    }
    let t = idx / width;
    let j = idx % width;
    let row = p.pos + t;
    if (j < q_dim) {
        var v = qkv[idx];
        if (p.has_rope == 1u) {
            v = rotated(idx, j, t);
        }
        x[t * q_dim + j] = v;
    } else if (j < q_dim + kv_dim) {
        var v = qkv[idx];
        if (p.has_rope == 1u) {
            v = rotated(idx, j - q_dim, t);
        }
        k_cache[row * kv_dim + j - q_dim] = v;
    } else {
        v_cache[row * kv_dim + j - q_dim - kv_dim] = qkv[idx];
    }
}
