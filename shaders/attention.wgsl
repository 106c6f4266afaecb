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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q4: array<vec4<f32>>;       // (T, H * hd)
@group(0) @binding(2) var<storage, read> k4: array<vec4<f32>>;       // (rows, KV * hd)
@group(0) @binding(3) var<storage, read> v4: array<vec4<f32>>;       // (rows, KV * hd)
@group(0) @binding(4) var<storage, read_write> part_ml: array<vec2<f32>>;   // (T, H, S)
@group(0) @binding(5) var<storage, read_write> part_acc4: array<vec4<f32>>; // (T, H, S, hd)
@group(0) @binding(6) var<storage, read_write> out: array<f32>;             // (T, H * hd)
// The partial outputs again, one float at a time, for the combine.
@group(0) @binding(7) var<storage, read> part_acc: array<f32>;

var<workgroup> qs: array<vec4<f32>, ATT_MAX_HD / 4u>;
// The block's scores, then its probabilities, four keys per vec4.
var<workgroup> sc: array<vec4<f32>, ATT_WG / 4u>;
// Per-thread partial outputs, summed over key groups at the end.
var<workgroup> part: array<vec4<f32>, ATT_WG>;

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

    if (li < h4) {
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
            sj = score(j * kv4 + kvh * h4, h4) * p.scale;
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
                let x0 = v4[vb + i * kv4];
                let x1 = v4[vb + (i + groups) * kv4];
                let x2 = v4[vb + (i + 2u * groups) * kv4];
                let x3 = v4[vb + (i + 3u * groups) * kv4];
                v0 += prob(i) * x0;
                v1 += prob(i + groups) * x1;
                v2 += prob(i + 2u * groups) * x2;
                v3 += prob(i + 3u * groups) * x3;
            }
            for (; i < n; i += groups) {
                v0 += prob(i) * v4[vb + i * kv4];
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
