// The quick speed measurement sent in `hello` (GFLOP/s of the matvec kernel on a 1024 x 1024
// f16 matrix, what a decode step spends its time on); the coordinator places shards by it.
import * as ops from './ops.js';
import { Recorder, Runner } from './recorder.js';
import { uploadMatrix } from './weights.js';

export async function measureGflops(ctx, n = 1024, iters = 4) {
  const w = new Uint16Array(n * n).fill(0x3c00); // f16 1.0
  const m = uploadMatrix(ctx, 'bench matrix', w, n, n);
  const x = ctx.storageInit('bench x', new Float32Array(n).fill(0.5));
  const out = ctx.storage('bench out', n * 4);
  const runner = new Runner(ctx);
  const once = async () => {
    const rec = new Recorder();
    ops.matmul(rec, ctx, 'bench', { x, xRow: 0, t: 1, gated: false, norm: null, out, outStride: n, outCol: 0 }, m, null);
    const enc = ctx.device.createCommandEncoder({ label: 'bench' });
    ctx.device.queue.submit([runner.encode(enc, rec).finish()]);
    await ctx.device.queue.onSubmittedWorkDone();
  };
  await once(); // warm-up: pipeline and bind groups
  const start = performance.now();
  for (let i = 0; i < iters; i++) await once();
  const seconds = Math.max((performance.now() - start) / 1000, 1e-6);
  m.chunks.forEach((c) => c.buffer.destroy());
  x.destroy();
  out.destroy();
  return (2 * n * n * iters) / seconds / 1e9;
}
