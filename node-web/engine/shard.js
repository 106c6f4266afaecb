// A shard on the browser's GPU (src/engine/gpu/shard.rs): its weights, per-session KV caches,
// scratch buffers sized for the largest step seen, and `run`, which records a whole step
// (embed, every block, then the head + top-k, the int8 quantize kernel or the raw hidden
// states) into ONE command buffer with one read-back at the end.
import * as ops from './ops.js';
import { Recorder, Runner } from './recorder.js';
import { checkTensorTypes, normKind, uploadShard } from './weights.js';

/** First KV cache capacity in rows; it doubles as needed (session.rs INITIAL_ROWS). */
const INITIAL_ROWS = 64;

const heads = (cfg) => ({ heads: cfg.n_heads, kvHeads: cfg.n_kv_heads, hd: cfg.head_dim });

export class ShardError extends Error {}

export class BrowserShard {
  /** Uploads shard `index` of `manifest` from parsed safetensors `tensors`. */
  constructor(ctx, manifest, index, tensors) {
    const info = manifest.shards[index];
    if (!info) throw new ShardError(`no shard ${index} (the model has ${manifest.shards.length})`);
    checkTensorTypes(info);
    this.ctx = ctx;
    this.info = info;
    this.arch = manifest.architecture;
    if (this.arch !== 'llama' && this.arch !== 'gpt2') throw new ShardError(`architecture ${this.arch} is not supported here`);
    this.cfg = manifest.config;
    const h = heads(this.cfg);
    if (h.hd > ctx.consts.attMaxHd || h.hd % 4 !== 0) {
      throw new ShardError(`head size ${h.hd} is not a multiple of 4 or above ATT_MAX_HD ${ctx.consts.attMaxHd}`);
    }
    this.weights = uploadShard(ctx, tensors, info, this.arch, this.cfg, info.file);
    this.ropeTable = this.arch === 'llama'
      ? ctx.storageInit('rope cos/sin', ops.ropeTable(this.cfg.rope_theta, this.cfg.head_dim, this.cfg.context_length))
      : null;
    this.fuseNorms = !ctx.isCpu() && this.arch === 'llama';
    this.runner = new Runner(ctx);
    this.sessions = new Map();
    this.scratch = null;
    this.readback = null;
    this.logits = null;
    this.topk = null;
    this.lastDispatches = 0;
  }

  hasHead() {
    return this.weights.head !== null;
  }

  openSession(id) {
    if (this.sessions.has(id)) throw new ShardError(`session ${id} is already open`);
    this.sessions.set(id, { len: 0, capacity: 0, layers: [] });
  }

  closeSession(id) {
    const s = this.sessions.get(id);
    if (!s) return false;
    for (const [k, v] of s.layers) {
      k.destroy();
      v.destroy();
    }
    this.sessions.delete(id);
    return true;
  }

  sessionLen(id) {
    return this.sessions.get(id)?.len ?? null;
  }

  /** Keeps the first `len` cached tokens (engine/mod.rs truncate_session). */
  truncateSession(id, len) {
    const s = this.sessions.get(id);
    if (!s) throw new ShardError(`session ${id} is not open`);
    if (!(Number.isInteger(len) && len >= 0 && len <= s.len)) throw new ShardError(`cannot truncate session ${id} to ${len} tokens: ${s.len} are cached`);
    // The buffers keep their rows; the next step overwrites from `len`.
    s.len = len;
  }

  destroy() {
    for (const id of [...this.sessions.keys()]) this.closeSession(id);
  }

  ensureScratch(t) {
    if (this.scratch && this.scratch.cap >= t) return;
    const { ctx, cfg } = this;
    const cap = Math.min(Math.max(2 ** Math.ceil(Math.log2(t)), 8), Math.max(cfg.context_length, t));
    const h = heads(cfg);
    const qd = h.heads * h.hd;
    const [ml, acc] = ops.attentionScratch(cap, h);
    const hidden = this.arch === 'gpt2' ? cfg.ffn_size : 2 * cfg.ffn_size;
    const f4 = (n) => n * 4;
    const c = cfg.hidden_size;
    this.scratch = {
      cap,
      tokens: ctx.storage('tokens', f4(cap)),
      x: ctx.storage('x', f4(cap * c)),
      a: ctx.storage('a', f4(cap * c)),
      qkv: ctx.storage('qkv', f4(cap * (qd + 2 * h.kvHeads * h.hd))),
      q: ctx.storage('q', f4(cap * qd)),
      att: ctx.storage('att', f4(cap * qd)),
      h: ctx.storage('h', f4(cap * hidden)),
      ml: ctx.storage('attention m, l', f4(ml)),
      acc: ctx.storage('attention acc', f4(acc)),
      scales: ctx.storage('int8 scales', f4(cap)),
      q8: ctx.storage('int8 values', Math.ceil((cap * c) / 4) * 4),
    };
  }

  /** Grows the session's KV caches to hold `rows`, copying old rows in `encoder`. */
  reserve(sess, encoder, rows) {
    const { ctx, cfg } = this;
    const nLayers = this.weights.layers.length;
    if (rows <= sess.capacity && sess.layers.length === nLayers) return [];
    const rowBytes = cfg.n_kv_heads * cfg.head_dim * 4;
    const most = Math.min(Math.floor(ctx.maxBinding / rowBytes), cfg.context_length);
    if (rows > most) throw new ShardError(`a KV cache of ${rows} rows exceeds the largest storage binding`);
    const capacity = Math.min(2 ** Math.ceil(Math.log2(Math.max(rows, INITIAL_ROWS, sess.capacity * 2))), most);
    const layers = [];
    for (let l = 0; l < nLayers; l++) {
      const k = ctx.storage(`k cache layer ${l}`, capacity * rowBytes);
      const v = ctx.storage(`v cache layer ${l}`, capacity * rowBytes);
      const old = sess.layers[l];
      if (old && sess.len > 0) {
        encoder.copyBufferToBuffer(old[0], 0, k, 0, sess.len * rowBytes);
        encoder.copyBufferToBuffer(old[1], 0, v, 0, sess.len * rowBytes);
      }
      layers.push([k, v]);
    }
    const old = sess.layers.flat();
    sess.layers = layers;
    sess.capacity = capacity;
    return old;
  }

  readbackBuffer(bytes) {
    if (!this.readback || this.readback.size < bytes) {
      this.readback?.destroy();
      this.readback = this.ctx.device.createBuffer({
        label: 'read-back',
        size: Math.ceil(Math.max(bytes, 16) / 16) * 16,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
    }
    return this.readback;
  }

  /**
   * Runs one step. `input` is { tokens: Uint32Array } or { hidden: Float32Array (t x C) };
   * `want` is 'hidden' | 'int8' | { topK: k, rows = 1 }. Returns { hidden } | { q, scales } |
   * { top } (rows x k entries, the earliest of the step's last `rows` positions first).
   */
  async run(session, pos, input, want) {
    const { ctx, cfg, weights } = this;
    const sess = this.sessions.get(session);
    if (!sess) throw new ShardError(`session ${session} is not open`);
    if (pos !== sess.len) throw new ShardError(`session ${session}: step at position ${pos}, but ${sess.len} tokens are cached`);
    const c = cfg.hidden_size;
    const v = cfg.vocab_size;
    const t = input.tokens ? input.tokens.length : input.hidden.length / c;
    if (!(t >= 1 && Number.isInteger(t))) throw new ShardError('a step needs at least one whole token');
    if (pos + t > cfg.context_length) throw new ShardError(`position ${pos + t} exceeds the context length ${cfg.context_length}`);
    if (input.tokens && !weights.embedding) throw new ShardError(`shard ${this.info.index} takes hidden states, not token ids`);
    if (input.hidden && weights.embedding) throw new ShardError(`shard ${this.info.index} takes token ids, not hidden states`);
    if (input.tokens) {
      const bad = input.tokens.findIndex((id) => id >= v);
      if (bad >= 0) throw new ShardError(`token id ${input.tokens[bad]} is outside the vocabulary (${v})`);
    }
    const headWanted = typeof want === 'object';
    if (headWanted && !weights.head) throw new ShardError(`shard ${this.info.index} has no output head`);
    if (!headWanted && weights.head) throw new ShardError(`shard ${this.info.index} ends in the output head: it returns logits`);
    this.ensureScratch(t);
    const s = this.scratch;
    const { device } = ctx;
    const rowBytes = cfg.n_kv_heads * cfg.head_dim * 4;
    if (pos + t > Math.floor(ctx.maxBinding / rowBytes)) throw new ShardError(`a KV cache of ${pos + t} rows exceeds the largest storage binding`);
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    const encoder = device.createCommandEncoder({ label: 'step' });
    const old = this.reserve(sess, encoder, pos + t);
    if (input.tokens) device.queue.writeBuffer(s.tokens, 0, Uint32Array.from(input.tokens));
    else device.queue.writeBuffer(s.x, 0, input.hidden);
    const rec = new Recorder();
    if (weights.embedding) ops.embed(rec, ctx, s.tokens, t, weights.embedding.tokens, weights.embedding.positions, pos, s.x);
    weights.layers.forEach((layer, i) => this.recordLayer(rec, layer, sess.layers[i], t, pos));
    let readBytes;
    let rb;
    if (want === 'hidden') {
      readBytes = t * c * 4;
      rb = this.readbackBuffer(readBytes);
      rec.copy(s.x, 0, rb, 0, readBytes);
    } else if (want === 'int8') {
      ops.quantizeInt8(rec, ctx, s.x, t, c, s.scales, s.q8);
      const qbytes = Math.ceil((t * c) / 4) * 4;
      readBytes = qbytes + t * 4;
      rb = this.readbackBuffer(readBytes);
      rec.copy(s.q8, 0, rb, 0, qbytes);
      rec.copy(s.scales, 0, rb, qbytes, t * 4);
    } else {
      const k = want.topK;
      const rows = want.rows ?? 1;
      if (!(Number.isInteger(rows) && rows >= 1 && rows <= t)) throw new ShardError(`asked for the logits of ${rows} rows of a ${t}-token step`);
      const head = weights.head;
      const weight = head.weight ?? weights.embedding.tokens;
      ops.norm(rec, ctx, normKind(this.arch), s.x, t - rows, rows, head.normW, head.normB, cfg.norm_eps, s.a);
      this.logits ??= ctx.storage('logits', v * 4);
      if (!this.topk || this.topk.k < k) {
        const n = ops.topkScratch(ctx, v, k) * 4;
        this.topk = { k, b: [0, 1, 2, 3].map((i) => ctx.storage(`top-k ${i}`, n)) };
      }
      readBytes = rows * k * 8;
      rb = this.readbackBuffer(readBytes);
      const b = this.topk.b;
      // A row at a time through the one logits buffer: values of row r at r*k*8, ids after.
      for (let r = 0; r < rows; r++) {
        ops.matmul(rec, ctx, 'matmul.head', { x: s.a, xRow: r, t: 1, gated: false, norm: null, out: this.logits, outStride: v, outCol: 0 }, weight, null);
        const [ov, oi] = ops.topK(rec, ctx, this.logits, v, k, [[b[0], b[1]], [b[2], b[3]]]);
        rec.copy(ov, 0, rb, r * k * 8, k * 4);
        rec.copy(oi, 0, rb, r * k * 8 + k * 4, k * 4);
      }
    }
    this.lastDispatches = rec.dispatches();
    device.queue.submit([this.runner.encode(encoder, rec).finish()]);
    const validation = await device.popErrorScope();
    const oom = await device.popErrorScope();
    if (validation || oom) throw new ShardError(`GPU error in the step: ${(validation ?? oom).message}`);
    await rb.mapAsync(GPUMapMode.READ, 0, Math.ceil(readBytes / 4) * 4);
    const bytes = new Uint8Array(rb.getMappedRange(0, Math.ceil(readBytes / 4) * 4).slice(0));
    rb.unmap();
    for (const b of old) b.destroy();
    sess.len = pos + t;
    if (want === 'hidden') return { hidden: new Float32Array(bytes.buffer, 0, t * c) };
    if (want === 'int8') {
      const qbytes = Math.ceil((t * c) / 4) * 4;
      return { q: new Int8Array(bytes.buffer, 0, t * c), scales: new Float32Array(bytes.buffer, qbytes, t), rows: t, cols: c };
    }
    const k = want.topK;
    const top = [];
    for (let r = 0; r < (want.rows ?? 1); r++) {
      const vals = new Float32Array(bytes.buffer, r * k * 8, k);
      const ids = new Uint32Array(bytes.buffer, r * k * 8 + k * 4, k);
      ids.forEach((id, i) => top.push({ id, logit: vals[i] }));
    }
    return { top };
  }

  /** One transformer block (forward.rs record_layer). */
  recordLayer(rec, layer, kv, t, pos) {
    const { ctx, cfg, arch } = this;
    const s = this.scratch;
    const c = cfg.hidden_size;
    const f = cfg.ffn_size;
    const h = heads(cfg);
    const qkvDim = h.heads * h.hd + 2 * h.kvHeads * h.hd;
    const kind = normKind(arch);
    const norm1 = { kind, w: layer.norm1W, b: layer.norm1B, eps: cfg.norm_eps };
    const norm2 = { kind, w: layer.norm2W, b: layer.norm2B, eps: cfg.norm_eps };
    const io = (x, out, width) => ({ x, xRow: 0, t, gated: false, norm: null, out, outStride: width, outCol: 0 });
    const normed = (n, out, width) => {
      if (this.fuseNorms) return { ...io(s.x, out, width), norm: n };
      ops.norm(rec, ctx, n.kind, s.x, 0, t, n.w, n.b, n.eps, s.a);
      return io(s.a, out, width);
    };
    ops.matmul(rec, ctx, 'matmul.qkv', normed(norm1, s.qkv, qkvDim), layer.qkv, layer.qkvB);
    const table = arch === 'llama' ? this.ropeTable : null;
    // At decode attention's partial pass does qkv_rope's work and the o product merges the key
    // splits itself (forward.rs).
    let fromQkv = null;
    if (t === 1) fromQkv = { qkv: s.qkv, ropeTable: table };
    else ops.qkvRope(rec, ctx, s.qkv, s.q, kv[0], kv[1], table, t, pos, h);
    const parts = ops.attentionPartial(rec, ctx, fromQkv, s.q, kv[0], kv[1], { ml: s.ml, acc: s.acc }, t, pos, h);
    let oInput;
    if (ops.mergeableByMatvec(ctx, parts)) {
      oInput = { ...io(s.acc, s.x, c), combine: parts };
    } else {
      ops.attentionCombine(rec, ctx, parts, s.att);
      oInput = io(s.att, s.x, c);
    }
    ops.matmul(rec, ctx, 'matmul.o', oInput, layer.o, layer.oB, { accumulate: true });
    const width = arch === 'gpt2' ? f : 2 * f;
    ops.matmul(rec, ctx, 'matmul.up', normed(norm2, s.h, width), layer.up, layer.upB, { gelu: arch === 'gpt2' });
    ops.matmul(rec, ctx, 'matmul.down', { ...io(s.h, s.x, c), gated: arch === 'llama' }, layer.down, layer.downB, { accumulate: true });
  }
}
