// A shard's tensors on the GPU in f16 packed two per u32, arranged as src/engine/gpu/load.rs
// does: Llama's q/k/v stacked into one (q_dim + 2 kv_dim, C) matrix and gate/up into (2F, C);
// rows padded to a multiple of 8 halves; matrices split across bindings larger than allowed.
import { NORM_LAYER, NORM_RMS } from './ops.js';
import { take } from './safetensors.js';

/**
 * Refuses a shard whose manifest lists a tensor stored in a GGML block type (q8_0, q4_0,
 * q4_1, q4_k, q6_k: manifest version 2): the browser's kernels read f16 only for now. The message names
 * the tensor and its type; the node reports it as the shard's load failure.
 */
export function checkTensorTypes(info) {
  for (const t of info?.tensors ?? []) {
    if (t.dtype !== 'f16') {
      throw new Error(`${info.file}: tensor ${t.name} is stored as ${t.dtype}; the browser node computes on f16 weights only (split the model with \`synapse split --weights f16\`)`);
    }
  }
}

/** Row padding in halves (buffers.rs ROW_ALIGN). */
export const ROW_ALIGN = 8;

/** Uploads an f16 matrix (Uint16Array, rows x cols) as padded rows in binding-sized chunks. */
export function uploadMatrix(ctx, label, data, rows, cols) {
  if (data.length !== rows * cols) throw new Error(`${label}: data is not (${rows}, ${cols})`);
  const stride = Math.ceil(cols / ROW_ALIGN) * ROW_ALIGN;
  const rowBytes = stride * 2;
  const perChunk = Math.floor(ctx.maxBinding / rowBytes);
  if (perChunk === 0) throw new Error(`${label}: one row of ${cols} halves exceeds the largest storage binding`);
  const chunks = [];
  for (let row0 = 0; row0 < rows; row0 += perChunk) {
    const n = Math.min(perChunk, rows - row0);
    const packed = new Uint16Array(n * stride);
    if (stride === cols) packed.set(data.subarray(row0 * cols, (row0 + n) * cols));
    else for (let r = 0; r < n; r++) packed.set(data.subarray((row0 + r) * cols, (row0 + r + 1) * cols), r * stride);
    chunks.push({ buffer: ctx.storageInit(`${label} rows ${row0}..${row0 + n}`, packed, GPUBufferUsage.STORAGE), row0, rows: n });
  }
  return { rows, cols, stride, chunks, bytes: rows * stride * 2 };
}

/** Uploads an f16 vector. */
export function uploadVector(ctx, label, data) {
  return { buffer: ctx.storageInit(label, data, GPUBufferUsage.STORAGE), len: data.length };
}

const concat = (...parts) => {
  const out = new Uint16Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

export const normKind = (arch) => (arch === 'gpt2' ? NORM_LAYER : NORM_RMS);

/** Uploads shard `info` of a model (`arch`, `cfg` from the manifest) from parsed tensors. */
export function uploadShard(ctx, tensors, info, arch, cfg, label) {
  const { vocab_size: v, hidden_size: c, ffn_size: f, head_dim: hd } = cfg;
  const qd = cfg.n_heads * hd;
  const kvd = cfg.n_kv_heads * hd;
  let bytes = 0;
  const get = (name, shape) => take(tensors, name, shape, label);
  const mat = (name, data, rows, cols) => {
    const m = uploadMatrix(ctx, name, data, rows, cols);
    bytes += m.bytes;
    return m;
  };
  const vec = (name, data) => uploadVector(ctx, name, data);
  let embedding = null;
  if (info.has_embedding) {
    embedding = arch === 'gpt2'
      ? { tokens: mat('wte.weight', get('wte.weight', [v, c]), v, c), positions: mat('wpe.weight', get('wpe.weight', [cfg.context_length, c]), cfg.context_length, c) }
      : { tokens: mat('model.embed_tokens.weight', get('model.embed_tokens.weight', [v, c]), v, c), positions: null };
  }
  const layers = [];
  for (let i = info.layers[0]; i <= info.layers[1]; i++) {
    if (arch === 'gpt2') {
      const n = (s) => `h.${i}.${s}`;
      const g = (s, shape) => get(n(s), shape);
      layers.push({
        norm1W: vec(n('ln_1.weight'), g('ln_1.weight', [c])),
        norm1B: vec(n('ln_1.bias'), g('ln_1.bias', [c])),
        qkv: mat(n('attn.c_attn.weight'), g('attn.c_attn.weight', [3 * c, c]), 3 * c, c),
        qkvB: vec(n('attn.c_attn.bias'), g('attn.c_attn.bias', [3 * c])),
        o: mat(n('attn.c_proj.weight'), g('attn.c_proj.weight', [c, c]), c, c),
        oB: vec(n('attn.c_proj.bias'), g('attn.c_proj.bias', [c])),
        norm2W: vec(n('ln_2.weight'), g('ln_2.weight', [c])),
        norm2B: vec(n('ln_2.bias'), g('ln_2.bias', [c])),
        up: mat(n('mlp.c_fc.weight'), g('mlp.c_fc.weight', [f, c]), f, c),
        upB: vec(n('mlp.c_fc.bias'), g('mlp.c_fc.bias', [f])),
        down: mat(n('mlp.c_proj.weight'), g('mlp.c_proj.weight', [c, f]), c, f),
        downB: vec(n('mlp.c_proj.bias'), g('mlp.c_proj.bias', [c])),
      });
    } else {
      const n = (s) => `model.layers.${i}.${s}`;
      const g = (s, shape) => get(n(s), shape);
      const qkv = concat(g('self_attn.q_proj.weight', [qd, c]), g('self_attn.k_proj.weight', [kvd, c]), g('self_attn.v_proj.weight', [kvd, c]));
      const gateUp = concat(g('mlp.gate_proj.weight', [f, c]), g('mlp.up_proj.weight', [f, c]));
      layers.push({
        norm1W: vec(n('input_layernorm.weight'), g('input_layernorm.weight', [c])),
        norm1B: null,
        qkv: mat(n('self_attn.qkv (stacked)'), qkv, qd + 2 * kvd, c),
        qkvB: null,
        o: mat(n('self_attn.o_proj.weight'), g('self_attn.o_proj.weight', [c, qd]), c, qd),
        oB: null,
        norm2W: vec(n('post_attention_layernorm.weight'), g('post_attention_layernorm.weight', [c])),
        norm2B: null,
        up: mat(n('mlp.gate_up (stacked)'), gateUp, 2 * f, c),
        upB: null,
        down: mat(n('mlp.down_proj.weight'), g('mlp.down_proj.weight', [c, f]), c, f),
        downB: null,
      });
    }
  }
  let head = null;
  if (info.has_head) {
    const [normW, normB, headName] = arch === 'gpt2'
      ? [vec('ln_f.weight', get('ln_f.weight', [c])), vec('ln_f.bias', get('ln_f.bias', [c])), 'lm_head.weight']
      : [vec('model.norm.weight', get('model.norm.weight', [c])), null, 'lm_head.weight'];
    const weight = cfg.tied_head && info.has_embedding ? null : mat(headName, get(headName, [v, c]), v, c);
    head = { normW, normB, weight };
  }
  const left = [...tensors.keys()];
  if (left.length) throw new Error(`${label}: tensor ${left[0]} is unexpected in this shard`);
  return { embedding, layers, head, bytes };
}
