// Drives the coordinator's prompt page in headless Chromium (playwright-core from node-web/).
// Usage: node prompt_page.mjs BASE_URL MODE OUT_DIR [API_KEY]
//   MODE "incomplete": the page must say plainly that no pipeline is complete, and a prompt
//   must end in a visible error rather than hang.
//   MODE "chat": types a prompt with temperature 0, waits for the streamed answer to finish,
//   screenshots the page to OUT_DIR/prompt_page.png and prints {"answer", "tps", "pipeline",
//   "states"} as JSON (states: the #state texts seen while streaming).
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(repo, "node-web", "package.json"));
const { chromium } = require("playwright-core");

const [base, mode, outDir, key] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/");
  const state = page.locator("#pipeline-state");
  if (mode === "incomplete") {
    await page.waitForFunction(() => document.getElementById("pipeline-state").textContent.startsWith("No complete pipeline"), null, { timeout: 30000 });
    if (key) await page.fill("#api-key", key);
    await page.fill("#prompt", "Hello?");
    await page.click("#send");
    await page.waitForFunction(() => document.getElementById("state").textContent === "error", null, { timeout: 30000 });
    const answer = await page.locator("#answer").textContent();
    console.log(JSON.stringify({ pipeline: await state.textContent(), answer, errors }));
  } else {
    await page.waitForFunction(() => document.getElementById("pipeline-state").textContent.startsWith("Pipeline complete"), null, { timeout: 60000 });
    if (key) await page.fill("#api-key", key);
    await page.fill("#temperature", "0");
    await page.fill("#max-tokens", "12");
    await page.fill("#prompt", "What is the capital of France?");
    // Record every state the page shows, to prove the answer streamed in.
    await page.evaluate(() => {
      window.seenStates = [];
      new MutationObserver(() => window.seenStates.push(document.getElementById("state").textContent))
        .observe(document.getElementById("state"), { childList: true, characterData: true, subtree: true });
    });
    await page.click("#send");
    await page.waitForFunction(() => document.getElementById("state").textContent.startsWith("done"), null, { timeout: 120000 });
    await page.waitForFunction(() => /tok\/s/.test(document.getElementById("tps").textContent), null, { timeout: 10000 });
    const shot = path.join(outDir, "prompt_page.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(JSON.stringify({
      answer: await page.locator("#answer").textContent(),
      tps: await page.locator("#tps").textContent(),
      pipeline: await state.textContent(),
      states: await page.evaluate(() => window.seenStates),
      errors,
    }));
  }
} finally {
  await browser.close();
}
