// The browser ops test's page side: runs each shader family of shaders/ through the same host
// code the browser node uses (engine/ops.js) on inputs from tests/browser.rs, and returns the
// outputs; the Rust test compares them with src/engine/cpu/ops.rs and reports the max error.
// Loaded into the node page by the test driver: `import('/node/test/ops.js')`.
import { GpuContext } from '../engine/context.js';
import * as ops from '../engine/ops.js';
import { Recorder, Runner } from '../engine/recorder.js';
import { uploadMatrix, uploadVector } from '../engine/weights.js';

/** Records ops with `record(rec)`, which returns the outputs to read: [{buffer, offset?, bytes, u32?}]. */
async function run(ctx, record) {
  const rec = new Recorder();
  const outputs = record(rec);
  const total = outputs.reduce((n, o) => n + o.bytes, 0);
  const rb = ctx.device.createBuffer({ label: 'ops read-back', size: Math.ceil(total / 16) * 16 + 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let at = 0;
  for (const o of outputs) {
    rec.copy(o.buffer, o.offset ?? 0, rb, at, o.bytes);
    o.at = at;
    at += o.bytes;
  }
  const enc = ctx.device.createCommandEncoder({ label: 'ops test' });
  ctx.device.pushErrorScope('validation');
  ctx.device.queue.submit([new Runner(ctx).encode(enc, rec).finish()]);
  const err = await ctx.device.popErrorScope();
  if (err) throw new Error(err.message);
  await rb.mapAsync(GPUMapMode.READ);
  const bytes = rb.getMappedRange().slice(0);
  rb.unmap();
  rb.destroy();
  return outputs.map((o) => (o.u32 ? Array.from(new Uint32Array(bytes, o.at, o.bytes / 4)) : Array.from(new Float32Array(bytes, o.at, o.bytes / 4))));
}

const f32 = (ctx, label, v) => ctx.storageInit(label, Float32Array.from(v));
const half = (v) => Uint16Array.from(v);

/** Runs every case of `cases` (see tests/browser.rs OpsCases); returns { name: outputs }. */
export async function runOps(cases) {
  const ctx = await GpuContext.create(new URL('/shaders/', location.href).href);
  const out = {};
  for (const c of cases.matmul) {
    const w = uploadMatrix(ctx, 'w', half(c.w), c.n, c.k);
    const bias = c.bias ? uploadVector(ctx, 'bias', half(c.bias)) : null;
    const x = f32(ctx, 'x', c.x);
    const o = ctx.storage('out', c.t * c.n * 4);
    [out[c.name]] = await run(ctx, (rec) => {
      ops.matmul(rec, ctx, c.name,
      { x, xRow: 0, t: c.t, gated: false, norm: null, out: o, outStride: c.n, outCol: 0 }, w, bias, { gelu: c.gelu }, c.kernel);
      return [{ buffer: o, bytes: c.t * c.n * 4 }];
    });
  }
  for (const c of cases.norm) {
    const x = f32(ctx, 'x', c.x);
    const o = ctx.storage('out', c.x.length * 4);
    const w = uploadVector(ctx, 'w', half(c.w));
    const b = c.b ? uploadVector(ctx, 'b', half(c.b)) : null;
    const rows = c.x.length / c.w.length;
    [out[c.name]] = await run(ctx, (rec) => {
      ops.norm(rec, ctx, c.b ? ops.NORM_LAYER : ops.NORM_RMS, x, 0, rows, w, b, c.eps, o);
      return [{ buffer: o, bytes: c.x.length * 4 }];
    });
  }
  {
    const c = cases.qkv_rope;
    const h = { heads: c.heads, kvHeads: c.kv_heads, hd: c.hd };
    const qd = c.heads * c.hd;
    const kvd = c.kv_heads * c.hd;
    const qkv = f32(ctx, 'qkv', c.qkv);
    const q = ctx.storage('q', c.t * qd * 4);
    const k = ctx.storage('k', (c.pos + c.t) * kvd * 4);
    const v = ctx.storage('v', (c.pos + c.t) * kvd * 4);
    const table = ctx.storageInit('rope', ops.ropeTable(c.theta, c.hd, c.pos + c.t));
    const [oq, ok, ov] = await run(ctx, (rec) => {
      ops.qkvRope(rec, ctx, qkv, q, k, v, table, c.t, c.pos, h);
      return [{ buffer: q, bytes: c.t * qd * 4 }, { buffer: k, offset: c.pos * kvd * 4, bytes: c.t * kvd * 4 }, { buffer: v, offset: c.pos * kvd * 4, bytes: c.t * kvd * 4 }];
    });
    out.qkv_rope = { q: oq, k: ok, v: ov };
  }
  {
    const c = cases.attention;
    const h = { heads: c.heads, kvHeads: c.kv_heads, hd: c.hd };
    const q = f32(ctx, 'q', c.q);
    const k = f32(ctx, 'k', c.k);
    const v = f32(ctx, 'v', c.v);
    const [ml, acc] = ops.attentionScratch(c.t, h);
    const scratch = { ml: ctx.storage('ml', ml * 4), acc: ctx.storage('acc', acc * 4) };
    const o = ctx.storage('out', c.q.length * 4);
    [out.attention] = await run(ctx, (rec) => {
      ops.attention(rec, ctx, q, k, v, scratch, o, c.t, c.pos, h);
      return [{ buffer: o, bytes: c.q.length * 4 }];
    });
  }
  {
    const c = cases.embed;
    const table = uploadMatrix(ctx, 'table', half(c.table), c.vocab, c.c);
    const tokens = ctx.storageInit('tokens', Uint32Array.from(c.tokens));
    const o = ctx.storage('out', c.tokens.length * c.c * 4);
    [out.embed] = await run(ctx, (rec) => {
      ops.embed(rec, ctx, tokens, c.tokens.length, table, null, 0, o);
      return [{ buffer: o, bytes: c.tokens.length * c.c * 4 }];
    });
  }
  {
    const c = cases.topk;
    const vals = f32(ctx, 'logits', c.logits);
    const n = ops.topkScratch(ctx, c.logits.length, c.k) * 4;
    const b = [0, 1, 2, 3].map((i) => ctx.storage(`cand ${i}`, n));
    const [vv, ii] = await run(ctx, (rec) => {
      const [rv, ri] = ops.topK(rec, ctx, vals, c.logits.length, c.k, [[b[0], b[1]], [b[2], b[3]]]);
      return [{ buffer: rv, bytes: c.k * 4 }, { buffer: ri, bytes: c.k * 4, u32: true }];
    });
    out.topk = { values: vv, ids: ii };
  }
  {
    const c = cases.quantize;
    const x = f32(ctx, 'x', c.x);
    const scales = ctx.storage('scales', c.rows * 4);
    const q = ctx.storage('q', Math.ceil(c.x.length / 4) * 4);
    const [s, words] = await run(ctx, (rec) => {
      ops.quantizeInt8(rec, ctx, x, c.rows, c.x.length / c.rows, scales, q);
      return [{ buffer: scales, bytes: c.rows * 4 }, { buffer: q, bytes: Math.ceil(c.x.length / 4) * 4, u32: true }];
    });
    const bytes = new Int8Array(Uint32Array.from(words).buffer).slice(0, c.x.length);
    out.quantize = { scales: s, q: Array.from(bytes) };
  }
  ctx.device.destroy();
  return out;
}
