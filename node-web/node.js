// The browser node's protocol loop (mirrors src/node/mod.rs and worker.rs): hello, welcome,
// load (download, verify, upload), unload, step (the next binary frame is its input; the reply
// is one binary frame with the step id, or `step_failed`), close, truncate. Steps run one at a time, in
// order. Reconnects with backoff when the connection drops; a lost GPU device ends the node.
import * as syn1 from './syn1/index.js';
import { fetchShard } from './engine/download.js';
import { parseSafetensors } from './engine/safetensors.js';
import { checkTensorTypes } from './engine/weights.js';
import { BrowserShard } from './engine/shard.js';

const CONTROL_VERSION = 1;

export class BrowserNode {
  /** `events` receives status updates: { state, text, ... } (see app.js). */
  constructor({ ctx, wsUrl, name, gflops, memoryBytes, onEvent, corrupt = false }) {
    this.ctx = ctx;
    this.wsUrl = wsUrl;
    this.base = new URL(wsUrl.replace(/^ws/, 'http')).origin;
    // The join token also unlocks the shard files.
    this.token = new URL(wsUrl).searchParams.get('token');
    this.name = name;
    this.gflops = gflops;
    this.memoryBytes = memoryBytes;
    this.emit = onEvent;
    this.shards = new Map();
    this.manifest = null;
    this.pendingStep = null;
    this.queue = Promise.resolve();
    this.tokens = 0;
    this.stepSeconds = 0;
    // Decode steps (one token) alone: the speed docs/PERF.md reports.
    this.decodeSteps = 0;
    this.decodeSeconds = 0;
    this.stopped = false;
    this.backoff = 500;
    // Test-only (`?corrupt=1`): this node lies about every result it returns, well-formed but
    // wrong, so the tests can check that the coordinator's audits catch a browser liar.
    this.corrupt = corrupt;
  }

  start() {
    this.connect();
  }

  stop(reason) {
    this.stopped = true;
    this.ws?.close(1000, reason);
    this.dropShards();
  }

  dropShards() {
    for (const s of this.shards.values()) s.destroy();
    this.shards.clear();
  }

  connect() {
    if (this.stopped) return;
    this.emit({ state: 'connecting' });
    const ws = new WebSocket(this.wsUrl);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.send({
        type: 'hello', version: CONTROL_VERSION, name: this.name, kind: 'browser', backend: 'webgpu',
        adapter: this.ctx.adapterName(), memory_bytes: this.memoryBytes, gflops: this.gflops,
      });
      this.emit({ state: 'joined' });
    };
    ws.onmessage = (e) => {
      try {
        if (typeof e.data === 'string') this.onText(e.data);
        else this.onBinary(new Uint8Array(e.data));
      } catch (err) {
        this.emit({ state: 'error', text: String(err.message ?? err) });
        ws.close(1008, String(err.message ?? err).slice(0, 120));
      }
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      // The coordinator re-assigns shards on reconnection; what was held is dropped (as the
      // native node's Job::Reset does).
      this.dropShards();
      this.pendingStep = null;
      if (this.stopped) return;
      if (e.code === 1008 || e.code === 4001) this.emit({ state: 'error', text: `the coordinator refused this node: ${e.reason || 'policy violation'}` });
      this.emit({ state: 'lost' });
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(typeof msg === 'string' || msg instanceof Uint8Array ? msg : JSON.stringify(msg));
  }

  onText(text) {
    const m = JSON.parse(text);
    switch (m.type) {
      case 'welcome':
        this.manifest = m.manifest;
        this.nodeId = m.node_id;
        this.emit({ state: 'ready', nodeId: m.node_id, model: `${m.manifest.architecture}, ${m.manifest.shards.length} shards` });
        break;
      case 'load':
        this.enqueue(() => this.load(m));
        break;
      case 'unload':
        this.enqueue(async () => {
          this.shards.get(m.shard)?.destroy();
          this.shards.delete(m.shard);
          this.emitShards();
        });
        break;
      case 'close':
        this.enqueue(async () => {
          for (const s of this.shards.values()) s.closeSession(m.session);
        });
        break;
      case 'truncate':
        // Rejected speculative drafts (wire.rs Truncate): no reply; a shard that cannot is
        // left alone and its next step fails with the position it expected.
        this.enqueue(async () => {
          for (const s of this.shards.values()) {
            try {
              s.truncateSession(m.session, m.len);
            } catch {
              // Not held here, or shorter: left alone (see above).
            }
          }
        });
        break;
      case 'step':
        if (this.pendingStep) throw new Error('two `step` messages without a frame between them');
        this.pendingStep = m;
        break;
      default:
        throw new Error(`unknown control message type ${JSON.stringify(String(m.type)).slice(0, 40)}`);
    }
  }

  onBinary(bytes) {
    const step = this.pendingStep;
    this.pendingStep = null;
    if (!step) throw new Error('a binary frame arrived without a `step` message');
    const frame = syn1.decode(bytes);
    if (frame.requestId !== step.step) throw new Error(`frame for request ${frame.requestId} after \`step\` ${step.step}`);
    let input;
    if (frame.type === syn1.TYPE_TOKENS) input = { tokens: frame.ids };
    else if (frame.type === syn1.TYPE_ACTIVATION && frame.activation.encoding !== 'int8-delta') {
      const c = this.manifest?.config?.hidden_size;
      if (frame.dim1 !== c) throw new Error(`hidden states of width ${frame.dim1}, the model's is ${c}`);
      input = { hidden: frame.activation.values };
    }
    else throw new Error(`a step cannot take a ${frame.typeName} frame`);
    this.enqueue(() => this.runStep(step, input));
  }

  /** Runs jobs one at a time, in arrival order (the native node's compute thread). */
  enqueue(job) {
    this.queue = this.queue.then(job).catch((e) => this.emit({ state: 'error', text: String(e.message ?? e) }));
  }

  emitShards() {
    this.emit({ shards: [...this.shards.keys()].sort((a, b) => a - b) });
  }

  async load({ shard, url, sha256, bytes }) {
    try {
      const info = this.manifest?.shards?.[shard];
      if (!info) throw new Error(`the model has no shard ${shard}`);
      if (info.sha256 !== sha256 || info.bytes !== bytes) throw new Error(`\`load\` for shard ${shard} disagrees with the manifest's size or sha256`);
      if (!url.startsWith('/')) throw new Error(`shard URL ${url.slice(0, 80)} is not on the coordinator`);
      checkTensorTypes(info); // before downloading what could not be run
      let last = 0;
      const { bytes: file, fromCache } = await fetchShard(this.base + url, sha256, bytes, (f) => {
        this.emit({ state: 'loading', fraction: f * 0.9, shard });
        if (f - last >= 0.05 || f === 1) {
          last = f;
          this.send({ type: 'shard_progress', shard, fraction: f * 0.9 });
        }
      }, this.token);
      const tensors = parseSafetensors(file, info.file);
      this.shards.get(shard)?.destroy();
      this.shards.set(shard, new BrowserShard(this.ctx, this.manifest, shard, tensors));
      this.send({ type: 'shard_ready', shard });
      this.emit({ state: 'ready', fromCache, shard });
      this.emitShards();
    } catch (e) {
      this.send({ type: 'shard_failed', shard, error: String(e.message ?? e) });
      this.emit({ state: 'error', text: `shard ${shard} failed: ${e.message ?? e}` });
    }
  }

  async runStep(step, input) {
    const started = performance.now();
    this.emit({ state: 'working' });
    let reply;
    try {
      reply = await this.computeStep(step, input);
    } catch (e) {
      this.send({ type: 'step_failed', step: step.step, error: String(e.message ?? e) });
      this.emit({ state: 'ready' });
      return;
    }
    this.send(reply);
    const t = input.tokens ? input.tokens.length : input.hidden.length / this.manifest.config.hidden_size;
    const seconds = (performance.now() - started) / 1000;
    this.tokens += t;
    this.stepSeconds += seconds;
    if (t === 1) {
      this.decodeSteps += 1;
      this.decodeSeconds += seconds;
    }
    this.emit({
      state: 'ready',
      tokens: this.tokens,
      tokensPerSecond: this.tokens / Math.max(this.stepSeconds, 1e-6),
      decodeSteps: this.decodeSteps,
      decodeMsPerToken: this.decodeSteps ? (1000 * this.decodeSeconds) / this.decodeSteps : null,
    });
  }

  /** Runs shards first..=last (worker.rs run_step) and returns the reply frame's bytes. */
  async computeStep({ step, session, pos, first, last, output }, input) {
    if (!(first <= last)) throw new Error(`step ${step}: empty shard range ${first}..=${last}`);
    const t = input.tokens ? input.tokens.length : input.hidden.length / this.manifest.config.hidden_size;
    const seqPos = (pos + t) & 0xffff;
    let cur = input;
    for (let index = first; index <= last; index++) {
      const ex = this.shards.get(index);
      if (!ex) throw new Error(`shard ${index} is not loaded on this node`);
      const len = ex.sessionLen(session);
      if (len === null) {
        if (pos !== 0) throw new Error(`session ${session} is unknown to shard ${index} at position ${pos}`);
        ex.openSession(session);
      }
      if (index < last) {
        cur = await ex.run(session, pos, cur, 'hidden');
        continue;
      }
      if (output.kind === 'top_k') {
        const rows = output.rows ?? 1;
        const { top } = await ex.run(session, pos, cur, { topK: output.k, rows });
        if (this.corrupt) swapTop(top, rows);
        return syn1.encodeTopLogits(top, { seqPos, requestId: step, rows });
      }
      if (output.kind !== 'hidden') throw new Error(`unknown step output ${JSON.stringify(output).slice(0, 80)}`);
      if (output.encoding === 'int8') {
        // The GPU's int8 quantize kernel (quant.wgsl) already produced SYN1's q and scales.
        const { q, scales, rows, cols } = await ex.run(session, pos, cur, 'int8');
        const data = new Float32Array(rows * cols);
        for (let i = 0; i < data.length; i++) data[i] = Math.fround(q[i] * scales[Math.floor(i / cols)]);
        if (this.corrupt) nudge(data, cols);
        return syn1.encodeActivation(data, rows, cols, 'int8', { seqPos, requestId: step });
      }
      if (output.encoding !== 'f32' && output.encoding !== 'rice') throw new Error(`unknown wire encoding ${String(output.encoding).slice(0, 20)}`);
      const { hidden } = await ex.run(session, pos, cur, 'hidden');
      if (this.corrupt) nudge(hidden, this.manifest.config.hidden_size);
      return syn1.encodeActivation(hidden, t, this.manifest.config.hidden_size, output.encoding, { seqPos, requestId: step });
    }
    throw new Error('unreachable: empty range');
  }
}

/** `?corrupt=1`: every fifth value of each row moved by 20% of the row's size (tests/audits.rs
 * does the same to a native node's frames). */
function nudge(data, cols) {
  for (let r = 0; r * cols < data.length; r++) {
    let norm = 0;
    for (let c = 0; c < cols; c++) norm += data[r * cols + c] ** 2;
    const by = (0.2 * Math.sqrt(norm)) / Math.sqrt(cols / 5);
    for (let c = 0; c < cols; c += 5) data[r * cols + c] += by;
  }
}

/** `?corrupt=1`: each row's best entry claims the id of its worst, and the reverse. */
function swapTop(entries, rows) {
  const k = entries.length / rows;
  for (let r = 0; r < rows; r++) {
    const a = entries[r * k];
    const b = entries[r * k + k - 1];
    [a.id, b.id] = [b.id, a.id];
  }
}
