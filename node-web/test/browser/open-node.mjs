// Opens the browser node page in headless Chromium (WebGPU on SwiftShader) for the Rust
// browser tests (tests/browser.rs): `node open-node.mjs JOIN_URL`. Prints the page's status
// events as `event {json}` lines on stdout; reads commands on stdin, one per line:
//   close       closes the tab (as a person would, mid-generation)
//   eval EXPR   evaluates EXPR in the page and prints `result {json}`
//   ops FILE    runs node-web/test/ops.js on the cases in FILE (JSON), prints `result {json}`
// Exits when stdin ends. Fails loudly when Chromium is missing.
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.SYNAPSE_CHROMIUM || '/usr/bin/chromium';
const url = process.argv[2];
if (!url) {
  console.error('usage: node open-node.mjs JOIN_URL');
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.error(`Chromium is missing at ${CHROMIUM}: install it (apt-get install chromium; tests/run.sh does)`);
  process.exit(3);
}
const out = (kind, value) => process.stdout.write(`${kind} ${JSON.stringify(value)}\n`);

// The flags /work/shared/ENVIRONMENT.md lists for WebGPU on SwiftShader, headless, as root.
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic', '--enable-unsafe-webgpu'],
});
const context = await browser.newContext();
let page = await context.newPage();
page.on('console', (m) => {
  const t = m.text();
  if (t.startsWith('[synapse] ')) out('event', JSON.parse(t.slice(10)));
  else if (m.type() === 'error' || m.type() === 'warning') out('console', t);
});
page.on('pageerror', (e) => out('pageerror', String(e)));
await page.goto(url);
out('opened', url);

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const [cmd, ...rest] = line.trim().split(' ');
  try {
    if (cmd === 'close') {
      await page.close({ runBeforeUnload: false });
      page = null;
      out('closed', true);
    } else if (cmd === 'ops') {
      const cases = JSON.parse(readFileSync(rest.join(' '), 'utf8'));
      const result = await page.evaluate(async (c) => (await import('/node/test/ops.js')).runOps(c), cases);
      out('result', result);
    } else if (cmd === 'eval') {
      out('result', await page.evaluate(rest.join(' ')));
    }
  } catch (e) {
    out('failed', String(e.message ?? e));
  }
}
await browser.close();
