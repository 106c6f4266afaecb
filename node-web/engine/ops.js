// One function per op, mirroring src/engine/gpu/ops/*.rs: the same uniform structs (field for
// field), the same bindings and the same dispatch sizes, appended to a Recorder. Offsets and
// strides are in elements.
import { params } from './recorder.js';

const FLAG_BIAS = 1;
const FLAG_GELU = 2;
const FLAG_ACCUMULATE = 4;
const FLAG_SILU_GATE = 8;
const FLAG_NORM = 16;
const FLAG_RMS = 32;
const FLAG_ATT_COMBINE = 64;

/** Norm kinds (norm.wgsl KIND_*). */
export const NORM_LAYER = 0;
export const NORM_RMS = 1;

/** Workgroups attention aims for when it splits the keys of few rows (attention.rs). */
export const ATTENTION_TARGET_GROUPS = 512;

/** Embedding lookup (+ learned positions) for t tokens at positions pos.. (embed.rs). */
export function embed(rec, ctx, tokens, t, table, positions, pos, out) {
  const c = table.cols;
  if (positions && pos + t > positions.rows) throw new Error(`positions end at ${positions.rows}`);
  const groups = ctx.grid(Math.ceil((t * c) / ctx.consts.embedWg));
  for (const chunk of table.chunks) {
    const p = params([t, c, chunk.row0, chunk.rows, table.stride, pos, positions ? positions.stride : 0, positions ? 1 : 0]);
    const posBuf = positions ? positions.chunks[0].buffer : ctx.dummy;
    rec.dispatch('embed', 'embed', p, [[1, tokens], [2, chunk.buffer], [3, posBuf], [4, out]], groups);
  }
}

/** out[rows] = norm(x[x_row..]) over w.len columns (norm.rs). */
export function norm(rec, ctx, kind, x, xRow, rows, w, b, eps, out) {
  const c = w.len;
  const p = params([rows, c, xRow * c, c, 0, c, kind], { 7: eps });
  rec.dispatch('norm', 'norm', p, [[1, x], [2, w.buffer], [3, b ? b.buffer : ctx.dummy], [4, out]], ctx.grid(rows));
}

/**
 * out (T, N) [+]= x (T, K) @ w (N, K)^T [+ bias] [gelu] (matmul.rs). `io` = { x, xRow, t, gated,
 * norm: {kind, w, b, eps} | null, out, outStride, outCol, combine }; `combine` (optional) is
 * attentionPartial's result, merged inside a one-token matvec's input (x is then its acc).
 */
export function matmul(rec, ctx, kind, io, w, bias, { gelu = false, accumulate = false } = {}, which = 'auto') {
  const k = w.cols;
  if (bias && bias.len !== w.rows) throw new Error(`${kind}: bias length ${bias.len} != ${w.rows}`);
  const maxT = ctx.consts.matvecMaxT;
  let entry = which === 'vec' || (which === 'auto' && io.t <= maxT) ? 'matvec' : 'matmul';
  if (io.combine && entry === 'matvec') entry = 'matvec_merged';
  const flags = (bias ? FLAG_BIAS : 0) | (gelu ? FLAG_GELU : 0) | (accumulate ? FLAG_ACCUMULATE : 0)
    | (io.gated ? FLAG_SILU_GATE : 0)
    | (io.norm ? (io.norm.kind === NORM_RMS ? FLAG_NORM | FLAG_RMS : FLAG_NORM) : 0)
    | (io.combine ? FLAG_ATT_COMBINE : 0);
  if (io.combine && (entry !== 'matvec_merged' || io.t !== 1 || io.norm || io.gated || io.combine.heads * io.combine.hd !== k)) {
    throw new Error(`${kind}: attention's merge feeds a plain one-token matvec`);
  }
  const xStride = io.gated ? 2 * k : k;
  const lanes = ctx.matvecLanes();
  for (const chunk of w.chunks) {
    const p = params(
      [io.t, chunk.rows, k, w.stride / 8, io.xRow * xStride, xStride, io.outCol + chunk.row0, io.outStride, chunk.row0, flags, 0, lanes,
        io.combine ? io.combine.heads : 0, io.combine ? io.combine.splits : 0, 0, 0],
      { 10: io.norm ? io.norm.eps : 0 },
    );
    const groups = entry !== 'matmul'
      ? ctx.grid(Math.ceil(chunk.rows / (ctx.consts.matvecWg / lanes)))
      : [Math.ceil(chunk.rows / ctx.consts.mmTile), Math.ceil(io.t / ctx.consts.mmTile), 1];
    // Each entry point's derived layout holds only the bindings it uses (matmul.rs).
    const biasBuf = bias ? bias.buffer : ctx.dummy;
    const bindings = entry === 'matvec_merged'
      ? [[2, chunk.buffer], [3, biasBuf], [4, io.out], [5, io.x], [8, io.combine.ml]]
      : [
        [1, io.x], [2, chunk.buffer], [3, biasBuf], [4, io.out],
        [6, io.norm ? io.norm.w.buffer : ctx.dummy], [7, io.norm?.b ? io.norm.b.buffer : ctx.dummy],
      ];
    if (entry === 'matvec') bindings.push([5, io.x]);
    rec.dispatch(entry, kind, p, bindings, groups);
  }
}

/** Splits qkv (T, q_dim + 2 kv_dim) into q and cache rows pos..pos+T, with RoPE when `table`. */
export function qkvRope(rec, ctx, qkv, q, kCache, vCache, table, t, pos, h) {
  const p = params([t, pos, h.heads, h.kvHeads, h.hd, table ? 1 : 0, 0, 0]);
  const width = (h.heads + 2 * h.kvHeads) * h.hd;
  const groups = ctx.grid(Math.ceil((t * width) / ctx.consts.ropeWg));
  rec.dispatch('qkv_rope', 'qkv_rope', p, [[1, table ?? ctx.dummy], [2, q], [3, qkv], [4, kCache], [5, vCache]], groups);
}

/** Key splits for t rows at pos (attention.rs attention_splits). */
export function attentionSplits(ctx, t, pos, heads) {
  const blocks = Math.ceil((pos + t) / ctx.consts.attWg);
  const rows = t * heads;
  return rows >= ATTENTION_TARGET_GROUPS ? 1 : Math.max(Math.min(blocks, Math.ceil(ATTENTION_TARGET_GROUPS / rows)), 1);
}

/** Floats of attention's partial buffers for t rows: [ml, acc]. */
export function attentionScratch(t, h) {
  const slots = t * h.heads + ATTENTION_TARGET_GROUPS;
  return [slots * 2, slots * h.hd];
}

/** out (T, H*hd) = causal attention of q over cache rows 0..pos+T, two dispatches. */
export function attention(rec, ctx, q, kCache, vCache, scratch, out, t, pos, h, splitsOverride = null) {
  attentionCombine(rec, ctx, attentionPartial(rec, ctx, null, q, kCache, vCache, scratch, t, pos, h, splitsOverride), out);
}

/**
 * Attention's first pass into `scratch`; returns what the combine (or a merging matvec) reads.
 * `fromQkv` = { qkv, ropeTable | null } (one row only): q and the new cache row come from the
 * qkv product and the pass appends that row itself (attention.rs FromQkv).
 */
export function attentionPartial(rec, ctx, fromQkv, q, kCache, vCache, scratch, t, pos, h, splitsOverride = null) {
  if (fromQkv && t !== 1) throw new Error('attention reads q from qkv at decode only');
  const c = ctx.consts;
  if (h.hd > c.attMaxHd) throw new Error(`head size ${h.hd} > ATT_MAX_HD ${c.attMaxHd}`);
  if (h.heads % h.kvHeads !== 0) throw new Error('heads not a multiple of kv heads');
  const blocks = Math.ceil((pos + t) / c.attWg);
  let splits = Math.min(Math.max(splitsOverride ?? attentionSplits(ctx, t, pos, h.heads), 1), Math.max(blocks, 1));
  const splitLen = Math.ceil(blocks / splits) * c.attWg;
  splits = Math.ceil((pos + t) / splitLen);
  const p = params([t, pos, h.heads, h.kvHeads, h.hd, splits, splitLen, 0, fromQkv ? 1 : 0, fromQkv?.ropeTable ? 1 : 0, 0, 0],
    { 7: 1 / Math.sqrt(h.hd) });
  const qb = fromQkv ? fromQkv.qkv : q;
  rec.dispatch('attn_partial', 'attention', p,
    [[1, qb], [2, kCache], [3, vCache], [4, scratch.ml], [5, scratch.acc],
      [8, fromQkv ? fromQkv.qkv : ctx.dummy], [9, fromQkv?.ropeTable ?? ctx.dummy]], ctx.grid(t * h.heads * splits));
  return { ml: scratch.ml, acc: scratch.acc, t, heads: h.heads, hd: h.hd, splits, params: p };
}

/** Whether a one-token matvec can merge these partials itself (attention.rs mergeable_by_matvec). */
export function mergeableByMatvec(ctx, parts) {
  const k = parts.heads * parts.hd;
  return parts.t === 1 && k % 8 === 0 && k <= ctx.consts.matvecCombineMaxK
    && parts.heads * parts.splits <= ctx.consts.matvecCombineMaxSlots;
}

/** Attention's second pass: the splits merged into out (T, H*hd). */
export function attentionCombine(rec, ctx, parts, out) {
  rec.dispatch('attn_combine', 'attention', parts.params,
    [[4, parts.ml], [7, parts.acc], [6, out]], ctx.grid(Math.ceil((parts.t * parts.heads * parts.hd) / ctx.consts.combineWg)));
}

/** Candidates each ping-pong buffer of top-k needs (topk.rs). */
export function topkScratch(ctx, n, k) {
  return Math.ceil(n / ctx.consts.topkChunk) * k;
}

/** Reduces vals (n) to its k best; returns the [values, ids] buffers holding them, best first. */
export function topK(rec, ctx, vals, n, k, cand) {
  const chunk = ctx.consts.topkChunk;
  if (!(k >= 1 && k <= chunk && k <= n)) throw new Error(`top-k needs 1 <= k <= min(n, ${chunk})`);
  let input = [vals, null];
  let count = n;
  let which = 0;
  for (;;) {
    const groups = Math.ceil(count / chunk);
    const [ov, oi] = cand[which];
    const p = params([count, k, input[1] ? 1 : 0, 0]);
    rec.dispatch('topk', 'topk', p, [[1, input[0]], [2, input[1] ?? ctx.dummy], [3, ov], [4, oi]], ctx.grid(groups));
    if (groups === 1) return [ov, oi];
    input = [ov, oi];
    count = groups * k;
    which = 1 - which;
  }
}

/** SYN1 int8: per-row scales and q (four per u32) from x (rows, cols) (quant.rs). */
export function quantizeInt8(rec, ctx, x, rows, cols, scales, q) {
  const p = params([rows, cols, 0, 0]);
  rec.dispatch('row_scales', 'quantize', p, [[1, x], [2, scales]], ctx.grid(rows));
  const words = Math.ceil((rows * cols) / 4);
  rec.dispatch('quantize', 'quantize', p, [[1, x], [2, scales], [3, q]], ctx.grid(Math.ceil(words / ctx.consts.quantWg)));
}

/** The RoPE cos/sin table (positions, hd/2) pairs, computed in f32 as ops/rope.rs does. */
export function ropeTable(theta, hd, positions) {
  const half = hd / 2;
  const f = Math.fround;
  const inv = Float32Array.from({ length: half }, (_, i) => f(1 / f(Math.pow(f(theta), f(f(2 * i) / f(hd))))));
  const out = new Float32Array(positions * half * 2);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const a = f(f(p) * inv[i]);
      out[(p * half + i) * 2] = Math.cos(a);
      out[(p * half + i) * 2 + 1] = Math.sin(a);
    }
  }
  return out;
}
