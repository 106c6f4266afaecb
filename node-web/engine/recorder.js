// A step's work in order (src/engine/gpu/recorder.rs): ops append dispatches (entry point,
// uniform parameters, storage bindings, workgroups) and copies; `encode` writes every
// dispatch's parameters into one uniform buffer (one aligned slot each), then records them,
// submitting the encoder every SUBMIT_EVERY dispatches so the GPU starts on a step while the
// rest is still encoded (as the native engine does; docs/PERF.md).

/** Dispatches per command buffer (recorder.rs SUBMIT_EVERY). */
export const SUBMIT_EVERY = 24;

/** Largest uniform parameter block of any kernel, in bytes (recorder.rs MAX_PARAMS). */
const MAX_PARAMS = 64;

/** Packs a uniform struct of 32-bit fields: `u32s` in order, with `floats` (index -> value). */
export function params(u32s, floats = {}) {
  const n = Math.ceil(u32s.length / 4) * 4;
  const buf = new ArrayBuffer(n * 4);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  u32s.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`uniform field ${i} = ${v} is not a u32`);
    u[i] = v;
  });
  for (const [i, v] of Object.entries(floats)) f[i] = v;
  return new Uint8Array(buf);
}

export class Recorder {
  constructor() {
    this.items = [];
  }

  dispatch(entry, kind, p, bindings, groups) {
    this.items.push({ entry, kind, params: p, bindings, groups });
  }

  copy(src, srcOffset, dst, dstOffset, size) {
    this.items.push({ copy: [src, srcOffset, dst, dstOffset, size] });
  }

  dispatches() {
    return this.items.filter((i) => !i.copy).length;
  }
}

/** Encodes recorded steps, keeping the uniform buffer between them. */
export class Runner {
  constructor(ctx) {
    this.ctx = ctx;
    const align = ctx.limits.minUniformBufferOffsetAlignment;
    this.slotBytes = Math.ceil(MAX_PARAMS / align) * align;
    this.uniform = null;
    this.slots = 0;
  }

  /**
   * Encodes `rec` after what `encoder` already holds; every SUBMIT_EVERY dispatches the encoder
   * so far is submitted and a fresh one continues. Returns the encoder the caller finishes and
   * submits (submissions run in order, so the step's dependencies hold across them).
   */
  encode(encoder, rec) {
    const { device } = this.ctx;
    const n = rec.dispatches();
    if (n > this.slots) {
      this.uniform?.destroy();
      this.slots = Math.max(n, 2 * this.slots, 64);
      this.uniform = device.createBuffer({
        label: 'op parameters',
        size: this.slots * this.slotBytes,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
    }
    // Every parameter is written before the first part is submitted.
    const staging = new Uint8Array(n * this.slotBytes);
    let slot = 0;
    for (const item of rec.items) {
      if (item.copy) continue;
      staging.set(item.params, slot * this.slotBytes);
      slot++;
    }
    if (n) device.queue.writeBuffer(this.uniform, 0, staging);
    slot = 0;
    let pass = null;
    for (const item of rec.items) {
      if (item.copy) {
        pass?.end();
        pass = null;
        encoder.copyBufferToBuffer(...item.copy);
        continue;
      }
      if (slot > 0 && slot % SUBMIT_EVERY === 0) {
        pass?.end();
        pass = null;
        device.queue.submit([encoder.finish()]);
        encoder = device.createCommandEncoder({ label: 'step part' });
      }
      const pipeline = this.ctx.pipeline(item.entry);
      const entries = [{ binding: 0, resource: { buffer: this.uniform, offset: slot * this.slotBytes, size: item.params.length } }];
      for (const [binding, buffer] of item.bindings) entries.push({ binding, resource: { buffer } });
      const group = device.createBindGroup({ label: item.kind, layout: pipeline.getBindGroupLayout(0), entries });
      pass ??= encoder.beginComputePass({ label: 'step' });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...item.groups);
      slot++;
    }
    pass?.end();
    return encoder;
  }
}
