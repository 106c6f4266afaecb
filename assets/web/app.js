// Synapse prompt page logic: polls /api/status for the pipeline, streams answers from
// /v1/chat/completions (instruct models, the server applies the model's chat template) or
// /v1/completions (base models) as server-sent events, and shows tokens/s. All model and
// server text is written with textContent, never as HTML. The API key, when the server wants
// one, is kept in localStorage and sent as a bearer token (also to /api/status, which shows
// devices only to holders of the key). Every POST sends `Content-Type: application/json`, which
// the server requires of state-changing requests.
"use strict";

const $ = (id) => document.getElementById(id);
let status = null;
let history = []; // chat turns so far: {role, content}
let controller = null;

$("api-key").value = localStorage.getItem("synapse-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("synapse-api-key", $("api-key").value);
  poll(); // the key may show the devices the status hides from strangers
});

function setState(text) { $("state").textContent = text; }

function renderPipeline(s) {
  const box = $("pipeline");
  const nodes = $("nodes");
  nodes.replaceChildren();
  // Without the API key (when the server wants one) the status names no devices.
  const devices = s.nodes || [];
  for (const n of devices) {
    const li = document.createElement("li");
    li.textContent = `${n.name} (${n.kind}, ${n.adapter}): shards ${n.shards.join(", ") || "none"}`;
    nodes.append(li);
  }
  if (s.complete) {
    box.classList.remove("incomplete");
    $("pipeline-state").textContent = s.restricted
      ? `Pipeline complete: ${s.shards.length} shards.`
      : `Pipeline complete: ${s.shards.length} shards on ${devices.length} device(s).`;
  } else {
    box.classList.add("incomplete");
    const missing = s.shards.filter((x) => x.state !== "ready").map((x) => `shard ${x.index} is ${x.state}`);
    $("pipeline-state").textContent =
      `No complete pipeline: ${missing.join(", ")}. ${s.restricted ? "" : `${devices.length} device(s) connected. `}` +
      "Answers will fail until more nodes join (open /node/ in a browser or start `synapse node`).";
  }
  $("model").textContent = `${s.model.source} (${s.model.chat ? "chat" : "base model: plain continuation"})`;
  $("key-label").hidden = !s.api_key_required;
}

async function poll() {
  try {
    const key = $("api-key").value;
    const r = await fetch("/api/status", key ? { headers: { authorization: `Bearer ${key}` } } : {});
    status = await r.json();
    renderPipeline(status);
  } catch (e) {
    $("pipeline").classList.add("incomplete");
    $("pipeline-state").textContent = `The coordinator does not answer: ${e}`;
  }
}

function addTurn(kind, text) {
  const div = document.createElement("div");
  div.className = `turn ${kind}`;
  div.textContent = text;
  $("transcript").append(div);
  return div;
}

function numberOf(id, fallback) {
  const v = Number($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

// Reads an SSE body, calling onData with each `data:` payload until [DONE].
async function readEvents(resp, onData) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) onData(JSON.parse(data));
    }
  }
}

async function send(ev) {
  ev.preventDefault();
  const prompt = $("prompt").value;
  if (!prompt.trim() || controller) return;
  const chat = !status || status.model.chat;
  addTurn("user", prompt);
  const answer = addTurn("assistant", "");
  answer.id = "answer";
  for (const old of document.querySelectorAll(".turn.assistant")) if (old !== answer) old.removeAttribute("id");
  const body = {
    model: "synapse",
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberOf("temperature", 0.7),
    top_p: numberOf("top-p", 1),
    max_tokens: Math.max(1, Math.floor(numberOf("max-tokens", 128))),
    seed: Math.floor(numberOf("seed", 0)),
    speculate: $("speculate").checked,
  };
  let url;
  if (chat) {
    const system = $("system").value.trim();
    const messages = (system ? [{ role: "system", content: system }] : []).concat(history, [{ role: "user", content: prompt }]);
    Object.assign(body, { messages });
    url = "/v1/chat/completions";
  } else {
    Object.assign(body, { prompt });
    url = "/v1/completions";
  }
  const headers = { "content-type": "application/json" };
  if ($("api-key").value) headers.authorization = `Bearer ${$("api-key").value}`;
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("prompt").value = "";
  setState("waiting for the first token…");
  let text = "";
  let chunks = 0;
  let first = 0;
  try {
    const resp = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({ error: { message: resp.statusText } }));
      throw new Error(`${resp.status}: ${err.error ? err.error.message : resp.statusText}`);
    }
    setState("streaming");
    await readEvents(resp, (msg) => {
      if (msg.error) throw new Error(msg.error.message);
      if (msg.usage) {
        const secs = (performance.now() - first) / 1000;
        const d = msg.usage.completion_tokens_details || {};
        const drafts = d.accepted_prediction_tokens ? `, ${d.accepted_prediction_tokens} from accepted drafts` : "";
        $("tps").textContent = `${msg.usage.completion_tokens} tokens, ${(msg.usage.completion_tokens / Math.max(secs, 1e-3)).toFixed(1)} tok/s${drafts}`;
      }
      const c = msg.choices && msg.choices[0];
      if (!c) return;
      const piece = chat ? (c.delta && c.delta.content) || "" : c.text || "";
      if (piece) {
        if (!first) first = performance.now();
        chunks += 1;
        text += piece;
        answer.textContent = text;
        const secs = (performance.now() - first) / 1000;
        if (secs > 0) $("tps").textContent = `${(chunks / secs).toFixed(1)} tok/s`;
      }
      if (c.finish_reason) setState(`done (${c.finish_reason})`);
    });
    if (chat) history.push({ role: "user", content: prompt }, { role: "assistant", content: text });
    if (!$("state").textContent.startsWith("done")) setState("done");
  } catch (e) {
    if (e.name === "AbortError") {
      setState("stopped");
    } else {
      answer.classList.add("error");
      answer.textContent = text ? `${text}\n\n[error: ${e.message}]` : `Error: ${e.message}`;
      setState("error");
    }
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("ask").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => { history = []; $("transcript").replaceChildren(); $("tps").textContent = ""; setState("idle"); });
poll();
setInterval(poll, 2000);
