// Causal attention of q (T, H * hd) over a session's key/value cache (rows 0..pos + T, each
// KV * hd wide). Query row t sits at position pos + t and sees keys 0..=pos + t; query head h
// reads cache head h / (H / KV) (grouped-query attention; GPT-2 has KV = H). All heads and
// rows run in one dispatch.
//
// Two passes, so decoding (one row, few heads) still spreads over the whole GPU:
//   attn_partial: one workgroup per (row, head, split); a split is a range of `split_len`
//                 keys, walked in blocks of ATT_WG with an online softmax. Writes the block's
//                 running max m, sum l and unnormalised output acc.
//   attn_combine: one invocation per (row, head, d): merges the splits,
//                 out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).

const ATT_WG: u32 = 64u;
const ATT_MAX_HD: u32 = 256u;
const ATT_PER_THREAD: u32 = ATT_MAX_HD / ATT_WG;
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
@group(0) @binding(1) var<storage, read> q: array<f32>;        // (T, H * hd)
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;  // (rows, KV * hd)
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;  // (rows, KV * hd)
@group(0) @binding(4) var<storage, read_write> part_ml: array<vec2<f32>>; // (T, H, S)
@group(0) @binding(5) var<storage, read_write> part_acc: array<f32>;      // (T, H, S, hd)
@group(0) @binding(6) var<storage, read_write> out: array<f32>;           // (T, H * hd)

var<workgroup> qs: array<f32, ATT_MAX_HD>;
var<workgroup> sc: array<f32, ATT_WG>;

// q . k[j] over hd values, four independent partial sums so the loads overlap.
fn score(kb: u32) -> f32 {
    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    var d = 0u;
    for (; d + 4u <= p.hd; d += 4u) {
        s0 += qs[d] * k_cache[kb + d];
        s1 += qs[d + 1u] * k_cache[kb + d + 1u];
        s2 += qs[d + 2u] * k_cache[kb + d + 2u];
        s3 += qs[d + 3u] * k_cache[kb + d + 3u];
    }
    for (; d < p.hd; d++) {
        s0 += qs[d] * k_cache[kb + d];
    }
    return (s0 + s1) + (s2 + s3);
}

// sum_i sc[i] * v[j0 + i][d] over n keys, four keys per step so the loads overlap.
fn weighted_v(vb: u32, stride: u32, n: u32) -> f32 {
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    var i = 0u;
    for (; i + 4u <= n; i += 4u) {
        a0 += sc[i] * v_cache[vb + i * stride];
        a1 += sc[i + 1u] * v_cache[vb + (i + 1u) * stride];
        a2 += sc[i + 2u] * v_cache[vb + (i + 2u) * stride];
        a3 += sc[i + 3u] * v_cache[vb + (i + 3u) * stride];
    }
    for (; i < n; i++) {
        a0 += sc[i] * v_cache[vb + i * stride];
    }
    return (a0 + a1) + (a2 + a3);
}

// Thread li owns output dims li + r * ATT_WG for r < ATT_PER_THREAD (ATT_PER_THREAD = 4, kept
// in four scalars rather than an array some compilers would leave in memory).
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
    let kv_dim = p.kv_heads * p.hd;
    let n_keys = p.pos + t + 1u;
    let k_begin = s * p.split_len;
    let k_end = min(k_begin + p.split_len, n_keys);

    for (var d = li; d < p.hd; d += ATT_WG) {
        qs[d] = q[th * p.hd + d];
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    var acc0 = 0.0;
    var acc1 = 0.0;
    var acc2 = 0.0;
    var acc3 = 0.0;
    for (var j0 = k_begin; j0 < k_end; j0 += ATT_WG) {
        let j = j0 + li;
        var sj = NEG;
        if (j < k_end) {
            sj = score(j * kv_dim + kvh * p.hd) * p.scale;
        }
        sc[li] = sj;
        workgroupBarrier();
        var bm = m;
        for (var i = 0u; i < ATT_WG; i++) {
            bm = max(bm, sc[i]);
        }
        workgroupBarrier();
        let pj = exp(sj - bm);
        sc[li] = pj;
        workgroupBarrier();
        let corr = exp(m - bm);
        var bl = 0.0;
        for (var i = 0u; i < ATT_WG; i++) {
            bl += sc[i];
        }
        l = l * corr + bl;
        let n = min(ATT_WG, k_end - j0);
        let vb = j0 * kv_dim + kvh * p.hd + li;
        acc0 *= corr;
        acc1 *= corr;
        acc2 *= corr;
        acc3 *= corr;
        if (li < p.hd) {
            acc0 += weighted_v(vb, kv_dim, n);
        }
        if (li + ATT_WG < p.hd) {
            acc1 += weighted_v(vb + ATT_WG, kv_dim, n);
        }
        if (li + 2u * ATT_WG < p.hd) {
            acc2 += weighted_v(vb + 2u * ATT_WG, kv_dim, n);
        }
        if (li + 3u * ATT_WG < p.hd) {
            acc3 += weighted_v(vb + 3u * ATT_WG, kv_dim, n);
        }
        m = bm;
        workgroupBarrier();
    }
    let slot = th * p.splits + s;
    if (li == 0u) {
        part_ml[slot] = vec2<f32>(m, l);
    }
    let ab = slot * p.hd + li;
    if (li < p.hd) {
        part_acc[ab] = acc0;
    }
    if (li + ATT_WG < p.hd) {
        part_acc[ab + ATT_WG] = acc1;
    }
    if (li + 2u * ATT_WG < p.hd) {
        part_acc[ab + 2u * ATT_WG] = acc2;
    }
    if (li + 3u * ATT_WG < p.hd) {
        part_acc[ab + 3u * ATT_WG] = acc3;
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
