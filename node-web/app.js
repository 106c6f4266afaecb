// Entry point of the browser node page: read the join token from the URL, set up WebGPU
// (or explain how to enable it), measure a quick speed, and join the coordinator that served
// this page. `window.synapse` exposes the live status to tests.
import { GpuContext, GpuUnavailable } from './engine/context.js';
import { measureGflops } from './engine/bench.js';
import { BrowserNode } from './node.js';
import { StatusView } from './status.js';

const view = new StatusView(document);
const status = { state: 'starting', errors: [] };
window.synapse = { status };
const report = (ev) => {
  Object.assign(status, ev);
  if (ev.state === 'error' && ev.text) status.errors.push(ev.text);
  view.update(ev);
  console.log(`[synapse] ${JSON.stringify(ev)}`);
};

async function main() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  if (!token) {
    report({ state: 'error', text: 'this link has no join token; open the exact URL the coordinator printed', help: null });
    return;
  }
  let ctx;
  let node;
  try {
    ctx = await GpuContext.create(new URL('../shaders/', location.href).href, {
      onLost: (info) => {
        node?.stop('GPU device lost');
        report({ state: 'gpulost', text: `${info.reason}: ${info.message}` });
      },
    });
  } catch (e) {
    if (e instanceof GpuUnavailable) report({ state: 'nogpu', help: e.message });
    else report({ state: 'error', text: `could not start WebGPU: ${e.message}` });
    return;
  }
  report({ adapter: `${ctx.adapterName()} (shader-f16: ${ctx.features.includes('shader-f16') ? 'yes' : 'no'}, max binding ${Math.round(ctx.maxBinding / 2 ** 20)} MiB)` });
  // `?gflops=N` pins the speed the coordinator places shards by (an operator's choice, and
  // what the tests use for a deterministic placement); otherwise it is measured.
  const pinned = Number(params.get('gflops'));
  const gflops = pinned > 0 && Number.isFinite(pinned) ? pinned : await measureGflops(ctx);
  report({ gflops });
  const wsUrl = new URL(`../ws?token=${encodeURIComponent(token)}`, location.href.replace(/^http/, 'ws')).href;
  const name = params.get('name') || `browser-${Math.random().toString(36).slice(2, 8)}`;
  // What the tab offers for weights and caches: the GPU's largest buffer, at most 2 GiB.
  const memoryBytes = Math.min(ctx.limits.maxBufferSize, 2 ** 31);
  // `?corrupt=1` (tests only): the node returns wrong results, to be caught by audits.
  const corrupt = params.get('corrupt') === '1';
  node = new BrowserNode({ ctx, wsUrl, name, gflops, memoryBytes, onEvent: report, corrupt });
  window.synapse.node = node;
  addEventListener('pagehide', () => node.stop('tab closed'));
  node.start();
}

main().catch((e) => report({ state: 'error', text: String(e.message ?? e) }));
