// Causal attention of q (T, H * hd) over a session's key/value cache (rows 0..pos + T, each
// KV * hd wide). Query row t sits at position pos + t and sees keys 0..=pos + t; query head h
// reads cache head h / (H / KV) (grouped-query attention; GPT-2 has KV = H). All heads and
// rows run in one dispatch.
//
// The head size must be a multiple of 4 (every model's is): rows are read as vec4s.
//
// Two passes, so decoding (one row, few heads) still spreads over the whole GPU:
//   attn_partial: one workgroup per (row, head, split); a split is a range of `split_len`
//                 keys, walked in blocks of ATT_WG with an online softmax. Writes the block's
//                 running max m, sum l and unnormalised output acc.
//   attn_combine: one invocation per (row, head, d): merges the splits,
//                 out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
//                 (At decode the o product merges them itself: matmul.wgsl FLAG_ATT_COMBINE.)
//
// Decoding (T = 1) with `from_qkv` set, attn_partial also does qkv_rope's work (rope.wgsl), so
// a block needs no dispatch for it: it reads q and the new key and value (row pos) straight from
// the qkv product (rotating q and k by the RoPE table when has_rope is 1), keeps the new row in
// workgroup memory instead of reading it back from the cache, and one workgroup per kv head
// appends it to the cache for later steps. No workgroup of the dispatch reads cache row pos, so
// the append races with nothing.

const ATT_WG: u32 = 64u;
const ATT_MAX_HD: u32 = 256u;
const COMBINE_WG: u32 = 64u;
// Stands in for -infinity: exp(NEG - m) is 0 for any finite m, and NEG - NEG is not NaN.
const NEG: f32 = -3.0e38;

struct Params {
    t: u32,
    pos: u32,
    heads: u32,
    kv_heads: u32,
    hd: u32,
    splits: u32,
    split_len: u32,  // keys per split, a multiple of ATT_WG
    scale: f32,      // 1 / sqrt(hd)
    from_qkv: u32,   // 1: T = 1, q and cache row pos come from qkv (see above)
    has_rope: u32,   // with from_qkv: rotate q and k
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q4: array<vec4<f32>>;       // (T, H * hd)
@group(0) @binding(2) var<storage, read_write> k4: array<vec4<f32>>; // (rows, KV * hd)
@group(0) @binding(3) var<storage, read_write> v4: array<vec4<f32>>; // (rows, KV * hd)
@group(0) @binding(4) var<storage, read_write> part_ml: array<vec2<f32>>;   // (T, H, S)
@group(0) @binding(5) var<storage, read_write> part_acc4: array<vec4<f32>>; // (T, H, S, hd)
@group(0) @binding(6) var<storage, read_write> out: array<f32>;             // (T, H * hd)
// The partial outputs again, one float at a time, for the combine.
@group(0) @binding(7) var<storage, read> part_acc: array<f32>;
// from_qkv: the qkv product's row (q_dim + 2 kv_dim) and the RoPE table (P, hd/2) of
// vec2(cos, sin), as rope.wgsl reads them.
@group(0) @binding(8) var<storage, read> qkv: array<f32>;
@group(0) @binding(9) var<storage, read> rope_table: array<vec2<f32>>;

var<workgroup> qs: array<vec4<f32>, ATT_MAX_HD / 4u>;
// The block's scores, then its probabilities, four keys per vec4.
var<workgroup> sc: array<vec4<f32>, ATT_WG / 4u>;
// Per-thread partial outputs, summed over key groups at the end.
var<workgroup> part: array<vec4<f32>, ATT_WG>;
// from_qkv: the new key and value (cache row pos) of this workgroup's kv head.
var<workgroup> new_k: array<vec4<f32>, ATT_MAX_HD / 4u>;
var<workgroup> new_v: array<vec4<f32>, ATT_MAX_HD / 4u>;

// Values 4 d4 .. 4 d4 + 4 of the head starting at qkv[base], rotated as rope.wgsl's qkv_rope
// does when has_rope is 1.
fn qkv_head4(base: u32, d4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    let half = p.hd / 2u;
    for (var c = 0u; c < 4u; c++) {
        let e = 4u * d4 + c;
        var v = qkv[base + e];
        if (p.has_rope == 1u) {
            let cs = rope_table[p.pos * half + e % half];
            if (e < half) {
                v = qkv[base + e] * cs.x - qkv[base + e + half] * cs.y;
            } else {
                v = qkv[base + e] * cs.x + qkv[base + e - half] * cs.y;
            }
        }
        r[c] = v;
    }
    return r;
}

// score() for the new key in new_k, with the same order of additions.
fn score_new(h4: u32) -> f32 {
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var d = 0u;
    for (; d + 8u <= h4; d += 8u) {
        a0 += qs[d] * new_k[d] + qs[d + 1u] * new_k[d + 1u] + qs[d + 2u] * new_k[d + 2u] + qs[d + 3u] * new_k[d + 3u];
        a1 += qs[d + 4u] * new_k[d + 4u] + qs[d + 5u] * new_k[d + 5u] + qs[d + 6u] * new_k[d + 6u] + qs[d + 7u] * new_k[d + 7u];
    }
    for (; d < h4; d++) {
        a0 += qs[d] * new_k[d];
    }
    let a = a0 + a1;
    return (a.x + a.y) + (a.z + a.w);
}

// Value row of key j at vec4 `at`, the new row from workgroup memory under from_qkv.
fn value(j: u32, at: u32, d4: u32) -> vec4<f32> {
    if (p.from_qkv == 1u && j == p.pos) {
        return new_v[d4];
    }
    return v4[at];
}

// q . k for the key row starting at vec4 `kb4` (h4 vec4s); eight loads per step, so a thread
// keeps several in flight (decode is bound by their latency, not by bandwidth).
fn score(kb4: u32, h4: u32) -> f32 {
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var d = 0u;
    for (; d + 8u <= h4; d += 8u) {
        let k0 = k4[kb4 + d];
        let k1 = k4[kb4 + d + 1u];
        let k2 = k4[kb4 + d + 2u];
        let k3 = k4[kb4 + d + 3u];
        let k5 = k4[kb4 + d + 4u];
        let k6 = k4[kb4 + d + 5u];
        let k7 = k4[kb4 + d + 6u];
        let k8 = k4[kb4 + d + 7u];
        a0 += qs[d] * k0 + qs[d + 1u] * k1 + qs[d + 2u] * k2 + qs[d + 3u] * k3;
        a1 += qs[d + 4u] * k5 + qs[d + 5u] * k6 + qs[d + 6u] * k7 + qs[d + 7u] * k8;
    }
    for (; d < h4; d++) {
        a0 += qs[d] * k4[kb4 + d];
    }
    let a = a0 + a1;
    return (a.x + a.y) + (a.z + a.w);
}

fn prob(i: u32) -> f32 {
    return sc[i / 4u][i % 4u];
}

// One workgroup per (row, head, split). Scores: one key per thread. Values: thread
// (kg, d4) sums keys kg, kg + groups, ... of the block into output dims 4 d4..4 d4 + 4, so
// each thread issues a few vec4 loads at once; the key groups are added at the end.
@compute @workgroup_size(ATT_WG)
fn attn_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let gid = wg.x + wg.y * nwg.x;
    if (gid >= p.t * p.heads * p.splits) {
        return;
    }
    let s = gid % p.splits;
    let th = gid / p.splits; // t * heads + h
    let h = th % p.heads;
    let t = th / p.heads;
    let kvh = h / (p.heads / p.kv_heads);
    let h4 = p.hd / 4u;
    let kv4 = p.kv_heads * h4; // vec4s per cache row
    let n_keys = p.pos + t + 1u;
    let k_begin = s * p.split_len;
    let k_end = min(k_begin + p.split_len, n_keys);
    let groups = ATT_WG / h4;
    let kg = li / h4;
    let d4 = li % h4;

    let fused = p.from_qkv == 1u;
    if (fused) {
        // T = 1: q from qkv, and this workgroup's kv head of row pos if its split holds it.
        let kv_dim = p.kv_heads * p.hd;
        let q_dim = p.heads * p.hd;
        let has_new = k_end == n_keys;
        let writer = has_new && (h % (p.heads / p.kv_heads)) == 0u;
        for (var d = li; d < h4; d += ATT_WG) {
            qs[d] = qkv_head4(h * p.hd, d);
            if (has_new) {
                let kn = qkv_head4(q_dim + kvh * p.hd, d);
                let vb0 = q_dim + kv_dim + kvh * p.hd + 4u * d;
                let vn = vec4<f32>(qkv[vb0], qkv[vb0 + 1u], qkv[vb0 + 2u], qkv[vb0 + 3u]);
                new_k[d] = kn;
                new_v[d] = vn;
                if (writer) {
                    k4[p.pos * kv4 + kvh * h4 + d] = kn;
                    v4[p.pos * kv4 + kvh * h4 + d] = vn;
                }
            }
        }
    } else if (li < h4) {
        qs[li] = q4[th * h4 + li];
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var j0 = k_begin; j0 < k_end; j0 += ATT_WG) {
        let j = j0 + li;
        var sj = NEG;
        if (j < k_end) {
            if (fused && j == p.pos) {
                sj = score_new(h4) * p.scale;
            } else {
                sj = score(j * kv4 + kvh * h4, h4) * p.scale;
            }
        }
        sc[li / 4u][li % 4u] = sj;
        workgroupBarrier();
        var bm4 = vec4<f32>(m);
        for (var i = 0u; i < ATT_WG / 4u; i++) {
            bm4 = max(bm4, sc[i]);
        }
        let bm = max(max(bm4.x, bm4.y), max(bm4.z, bm4.w));
        workgroupBarrier();
        sc[li / 4u][li % 4u] = exp(sj - bm);
        workgroupBarrier();
        let corr = exp(m - bm);
        var bl4 = vec4<f32>(0.0);
        for (var i = 0u; i < ATT_WG / 4u; i++) {
            bl4 += sc[i];
        }
        l = l * corr + ((bl4.x + bl4.y) + (bl4.z + bl4.w));
        m = bm;
        let n = min(ATT_WG, k_end - j0);
        if (kg < groups) {
            let vb = j0 * kv4 + kvh * h4 + d4;
            var v0 = vec4<f32>(0.0);
            var v1 = vec4<f32>(0.0);
            var v2 = vec4<f32>(0.0);
            var v3 = vec4<f32>(0.0);
            var i = kg;
            for (; i + 3u * groups < n; i += 4u * groups) {
                let x0 = value(j0 + i, vb + i * kv4, d4);
                let x1 = value(j0 + i + groups, vb + (i + groups) * kv4, d4);
                let x2 = value(j0 + i + 2u * groups, vb + (i + 2u * groups) * kv4, d4);
                let x3 = value(j0 + i + 3u * groups, vb + (i + 3u * groups) * kv4, d4);
                v0 += prob(i) * x0;
                v1 += prob(i + groups) * x1;
                v2 += prob(i + 2u * groups) * x2;
                v3 += prob(i + 3u * groups) * x3;
            }
            for (; i < n; i += groups) {
                v0 += prob(i) * value(j0 + i, vb + i * kv4, d4);
            }
            acc = acc * corr + ((v0 + v1) + (v2 + v3));
        }
        workgroupBarrier();
    }
    part[li] = acc;
    workgroupBarrier();
    let slot = th * p.splits + s;
    if (li == 0u) {
        part_ml[slot] = vec2<f32>(m, l);
    }
    if (li < h4) {
        var o = vec4<f32>(0.0);
        for (var g = 0u; g < groups; g++) {
            o += part[g * h4 + li];
        }
        part_acc4[slot * h4 + li] = o;
    }
}

@compute @workgroup_size(COMBINE_WG)
fn attn_combine(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let idx = (wg.x + wg.y * nwg.x) * COMBINE_WG + li;
    if (idx >= p.t * p.heads * p.hd) {
        return;
    }
    let th = idx / p.hd;
    let d = idx % p.hd;
    var big = NEG;
    for (var s = 0u; s < p.splits; s++) {
        big = max(big, part_ml[th * p.splits + s].x);
    }
    var l = 0.0;
    var o = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        let ml = part_ml[th * p.splits + s];
        let f = exp(ml.x - big);
        l += ml.y * f;
        o += part_acc[(th * p.splits + s) * p.hd + d] * f;
    }
    out[idx] = o / l;
}
