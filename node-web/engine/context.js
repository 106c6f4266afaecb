// The WebGPU device and what every op needs from it: the WGSL files of shaders/ (fetched from
// the coordinator's /shaders/, the very files wgpu compiles; no copy lives here), workgroup
// constants read from their text (as src/engine/gpu/kernels.rs does), a pipeline per entry
// point with the layout derived from the shader, and a dummy buffer for unused bindings.

/** Entry point -> shader file, as `Kernel::file` in src/engine/gpu/kernels.rs. */
export const KERNELS = {
  embed: 'embed.wgsl',
  norm: 'norm.wgsl',
  matvec: 'matmul.wgsl',
  matvec_merged: 'matmul.wgsl',
  matmul: 'matmul.wgsl',
  add: 'elementwise.wgsl',
  bias_add: 'elementwise.wgsl',
  gelu: 'elementwise.wgsl',
  silu_mul: 'elementwise.wgsl',
  rope: 'rope.wgsl',
  qkv_rope: 'rope.wgsl',
  attn_partial: 'attention.wgsl',
  attn_combine: 'attention.wgsl',
  topk: 'topk.wgsl',
  row_scales: 'quant.wgsl',
  quantize: 'quant.wgsl',
  dequantize: 'quant.wgsl',
};

/** The limits the kernels need (src/engine/gpu/context.rs NEEDS). */
const NEEDS = {
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupStorageSize: 16384,
  maxStorageBuffersPerShaderStage: 6,
};

/** Thrown when this browser or adapter cannot run the node; `message` says what to do. */
export class GpuUnavailable extends Error {}

/** The value of `const NAME: u32 = EXPR;` in WGSL source (literals and earlier consts). */
export function wgslConst(source, name) {
  const prefix = `const ${name}: u32 =`;
  const line = source.split('\n').map((l) => l.trim()).find((l) => l.startsWith(prefix));
  if (!line) return null;
  const tokens = line.slice(prefix.length).split(';')[0].trim().split(/\s+/);
  const operand = (t) => {
    const s = t.replace(/u$/, '');
    if (/^0x[0-9a-f]+$/i.test(s)) return parseInt(s, 16);
    if (/^\d+$/.test(s)) return Number(s);
    return wgslConst(source, t);
  };
  let value = operand(tokens[0]);
  for (let i = 1; i + 1 < tokens.length && value !== null; i += 2) {
    const rhs = operand(tokens[i + 1]);
    if (rhs === null) return null;
    value = { '*': value * rhs, '/': Math.floor(value / rhs), '+': value + rhs, '-': value - rhs }[tokens[i]];
  }
  return value ?? null;
}

/** Reads every constant the host needs from the shader sources (kernels.rs `Consts`). */
export function readConsts(sources) {
  const get = (file, name) => {
    const v = wgslConst(sources[file], name);
    if (v === null) throw new Error(`shaders/${file}: no \`const ${name}: u32 = ...;\` the host can read`);
    return v;
  };
  return {
    embedWg: get('embed.wgsl', 'EMBED_WG'),
    elemWg: get('elementwise.wgsl', 'ELEM_WG'),
    ropeWg: get('rope.wgsl', 'ROPE_WG'),
    quantWg: get('quant.wgsl', 'QUANT_WG'),
    matvecWg: get('matmul.wgsl', 'MATVEC_WG'),
    matvecMaxLanes: get('matmul.wgsl', 'MATVEC_MAX_LANES'),
    matvecMinLanes: get('matmul.wgsl', 'MATVEC_PART'),
    matvecMaxT: get('matmul.wgsl', 'MATVEC_MAX_T'),
    matvecCombineMaxK: get('matmul.wgsl', 'MATVEC_COMBINE_MAX_K'),
    matvecCombineMaxSlots: get('matmul.wgsl', 'MATVEC_COMBINE_MAX_SLOTS'),
    mmTile: get('matmul.wgsl', 'MM_TILE'),
    attWg: get('attention.wgsl', 'ATT_WG'),
    attMaxHd: get('attention.wgsl', 'ATT_MAX_HD'),
    combineWg: get('attention.wgsl', 'COMBINE_WG'),
    topkChunk: get('topk.wgsl', 'TOPK_CHUNK'),
  };
}

/** How to turn WebGPU on, for the page to show when it is missing. */
export const ENABLE_WEBGPU_HELP =
  'This browser has no WebGPU. Use a recent Chrome or Edge (version 113 or newer) on a computer or Android ' +
  'phone, or Safari 18+ with WebGPU turned on (Settings > Safari > Advanced > Feature Flags > WebGPU). ' +
  'On Linux Chrome, open chrome://flags, enable "Unsafe WebGPU Support", and restart. ' +
  'The page must be opened over https or from localhost.';

export class GpuContext {
  /** Requests an adapter and device and compiles every kernel; `shaderBase` is a URL prefix. */
  static async create(shaderBase, { onLost } = {}) {
    if (!globalThis.isSecureContext) {
      throw new GpuUnavailable('This page is not a secure context: open it over https or from localhost. ' + ENABLE_WEBGPU_HELP);
    }
    if (!navigator.gpu) throw new GpuUnavailable(ENABLE_WEBGPU_HELP);
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new GpuUnavailable('WebGPU is present but offered no adapter (the GPU may be blocklisted). ' + ENABLE_WEBGPU_HELP);
    const missing = Object.entries(NEEDS)
      .filter(([k, need]) => adapter.limits[k] < need)
      .map(([k, need]) => `${k} ${adapter.limits[k]} < ${need}`);
    if (missing.length) throw new GpuUnavailable(`This GPU lacks what the kernels need: ${missing.join(', ')}`);
    const requiredLimits = {};
    for (const k of ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize',
      'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxStorageBuffersPerShaderStage',
      'maxComputeWorkgroupsPerDimension']) {
      requiredLimits[k] = adapter.limits[k];
    }
    const device = await adapter.requestDevice({ label: 'synapse', requiredLimits });
    const ctx = new GpuContext(adapter, device);
    device.lost.then((info) => {
      ctx.lost = info;
      if (onLost && info.reason !== 'destroyed') onLost(info);
    });
    device.addEventListener?.('uncapturederror', (e) => ctx.errors.push(e.error.message));
    await ctx.loadShaders(shaderBase);
    return ctx;
  }

  constructor(adapter, device) {
    this.adapter = adapter;
    this.device = device;
    this.info = adapter.info ?? {};
    this.features = [...adapter.features].sort();
    this.limits = device.limits;
    this.errors = [];
    this.lost = null;
    this.pipelines = new Map();
    this.maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    this.dummy = device.createBuffer({ label: 'dummy', size: 16, usage: GPUBufferUsage.STORAGE });
  }

  /** Adapter description for `hello` and the status line. */
  adapterName() {
    const i = this.info;
    return [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ') || 'WebGPU adapter';
  }

  /** A CPU adapter (SwiftShader): fewer matvec lanes, norms on their own (context.rs). */
  isCpu() {
    const i = this.info;
    return Boolean(i.isFallbackAdapter) || /swiftshader|llvmpipe|lavapipe|cpu/i.test(`${i.architecture} ${i.description} ${i.device}`);
  }

  matvecLanes() {
    return this.isCpu() ? this.consts.matvecMinLanes : this.consts.matvecMaxLanes;
  }

  async loadShaders(base) {
    const files = [...new Set(Object.values(KERNELS))];
    this.sources = {};
    await Promise.all(files.map(async (f) => {
      const r = await fetch(`${base}${f}`);
      if (!r.ok) throw new Error(`fetching shader ${base}${f}: HTTP ${r.status}`);
      this.sources[f] = await r.text();
    }));
    this.consts = readConsts(this.sources);
    this.modules = {};
    for (const f of files) {
      this.device.pushErrorScope('validation');
      this.modules[f] = this.device.createShaderModule({ label: f, code: this.sources[f] });
      const info = await this.modules[f].getCompilationInfo();
      const err = await this.device.popErrorScope();
      const bad = info.messages.filter((m) => m.type === 'error');
      if (bad.length || err) {
        throw new Error(`shaders/${f} does not compile here: ${bad.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; ') || err.message}`);
      }
    }
    this.device.pushErrorScope('validation');
    for (const entry of Object.keys(KERNELS)) this.pipeline(entry);
    const err = await this.device.popErrorScope();
    if (err) throw new Error(`creating the compute pipelines: ${err.message}`);
  }

  /** The compute pipeline of an entry point (layout derived from the shader). */
  pipeline(entry) {
    let p = this.pipelines.get(entry);
    if (!p) {
      p = this.device.createComputePipeline({
        label: entry,
        layout: 'auto',
        compute: { module: this.modules[KERNELS[entry]], entryPoint: entry },
      });
      this.pipelines.set(entry, p);
    }
    return p;
  }

  /** Workgroup grid for n groups, folded into y past the per-dimension limit (ops/mod.rs). */
  grid(n) {
    const max = Math.max(this.limits.maxComputeWorkgroupsPerDimension, 1);
    return n <= max ? [Math.max(n, 1), 1, 1] : [max, Math.ceil(n / max), 1];
  }

  /** A storage buffer (STORAGE | COPY_DST | COPY_SRC), sized up to a multiple of 16 bytes. */
  storage(label, bytes) {
    return this.device.createBuffer({
      label,
      size: Math.max(Math.ceil(bytes / 16), 1) * 16,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
  }

  /** A storage buffer holding `data` (a typed array), padded to 16 bytes. */
  storageInit(label, data, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC) {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const size = Math.max(Math.ceil(bytes.length / 16), 1) * 16;
    const buf = this.device.createBuffer({ label, size, usage, mappedAtCreation: true });
    new Uint8Array(buf.getMappedRange()).set(bytes);
    buf.unmap();
    return buf;
  }
}
