// Embedding lookup: out (T, C) = tokens' rows of the table (+ GPT-2's learned positions at
// pos..pos + T). The table may be split over several bindings (row chunks) when it is larger
// than the device's largest storage binding: each dispatch covers one chunk and writes only the
// tokens whose id falls in it, so running every chunk fills every row exactly once.
// Tables are f16 packed two per u32, rows padded to `stride` halves.

const EMBED_WG: u32 = 256u;

struct Params {
    t: u32,
    c: u32,
    row0: u32,        // first table row in this chunk
    rows: u32,        // table rows in this chunk
    stride: u32,      // halves between table rows
    pos: u32,         // position of the first token
    pos_stride: u32,  // halves between position rows
    has_pos: u32,     // 1: add positions
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn table_at(i: u32) -> f32 {
    let pair = unpack2x16float(table[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

fn position_at(i: u32) -> f32 {
    let pair = unpack2x16float(positions[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

@compute @workgroup_size(EMBED_WG)
fn embed(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let idx = (wg.x + wg.y * nwg.x) * EMBED_WG + li;
    if (idx >= p.t * p.c) {
        return;
    }
    let t = idx / p.c;
    let c = idx % p.c;
    let id = tokens[t];
    if (id < p.row0 || id >= p.row0 + p.rows) {
        return;
    }
    var v = table_at((id - p.row0) * p.stride + c);
    if (p.has_pos == 1u) {
        v += position_at((p.pos + t) * p.pos_stride + c);
    }
    out[idx] = v;
}
