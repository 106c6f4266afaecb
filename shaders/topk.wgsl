// Top-k selection over logits, on the GPU, so only k (id, logit) pairs are read back.
// One workgroup takes a chunk of TOPK_CHUNK candidates and writes its k best, most likely
// first, ties broken by the lower id (the sampler's order). The host runs it again on those
// survivors until a single workgroup remains: 49152 logits -> 48 * k -> k.
// NaN counts as -infinity; when a chunk holds fewer than k candidates the rest of its output
// is (-inf, 0xffffffff), which never wins a later round.

const TOPK_WG: u32 = 256u;
const TOPK_PER_THREAD: u32 = 4u;
const TOPK_CHUNK: u32 = TOPK_WG * TOPK_PER_THREAD;
const NO_ID: u32 = 0xffffffffu;

struct Params {
    n: u32,       // candidates in the input
    k: u32,       // survivors per chunk (k <= TOPK_CHUNK)
    has_ids: u32, // 0: the candidate's id is its index (raw logits); 1: read ids
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in_vals: array<f32>;
@group(0) @binding(2) var<storage, read> in_ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_vals: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_ids: array<u32>;

var<workgroup> vals: array<f32, TOPK_CHUNK>;
var<workgroup> ids: array<u32, TOPK_CHUNK>;
var<workgroup> best_v: array<f32, TOPK_WG>;
var<workgroup> best_i: array<u32, TOPK_WG>;
var<workgroup> best_at: array<u32, TOPK_WG>;

fn beats(v: f32, id: u32, w: f32, wid: u32) -> bool {
    return v > w || (v == w && id < wid);
}

@compute @workgroup_size(TOPK_WG)
fn topk(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let chunk = wg.x + wg.y * nwg.x;
    let base = chunk * TOPK_CHUNK;
    if (base >= p.n) {
        return;
    }
    // -infinity built at run time: as a constant expression, Chromium's WGSL compiler (Tint)
    // refuses a non-finite f32 ("value -inf cannot be represented"). p.n & 0u is always 0.
    let neg_inf = bitcast<f32>(0xff800000u | (p.n & 0u));
    for (var e = li; e < TOPK_CHUNK; e += TOPK_WG) {
        let g = base + e;
        var v = neg_inf;
        var id = NO_ID;
        if (g < p.n) {
            v = in_vals[g];
            id = select(g, in_ids[g], p.has_ids == 1u);
            if (v != v) {
                v = neg_inf;
            }
        }
        vals[e] = v;
        ids[e] = id;
    }
    workgroupBarrier();
    for (var r = 0u; r < p.k; r++) {
        var bv = neg_inf;
        var bi = NO_ID;
        var ba = 0u;
        for (var e = li; e < TOPK_CHUNK; e += TOPK_WG) {
            if (beats(vals[e], ids[e], bv, bi)) {
                bv = vals[e];
                bi = ids[e];
                ba = e;
            }
        }
        best_v[li] = bv;
        best_i[li] = bi;
        best_at[li] = ba;
        workgroupBarrier();
        for (var s = TOPK_WG / 2u; s > 0u; s = s >> 1u) {
            if (li < s && beats(best_v[li + s], best_i[li + s], best_v[li], best_i[li])) {
                best_v[li] = best_v[li + s];
                best_i[li] = best_i[li + s];
                best_at[li] = best_at[li + s];
            }
            workgroupBarrier();
        }
        if (li == 0u) {
            out_vals[chunk * p.k + r] = best_v[0];
            out_ids[chunk * p.k + r] = best_i[0];
            if (best_i[0] != NO_ID) {
                vals[best_at[0]] = neg_inf;
                ids[best_at[0]] = NO_ID;
            }
        }
        workgroupBarrier();
    }
}
