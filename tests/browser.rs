//! The browser node (node-web/) in headless Chromium with WebGPU on SwiftShader, beside a
//! native CPU node, on an in-process coordinator: the page joins from the join URL, downloads
//! and verifies its shards, runs them with the WGSL kernels of shaders/, and the greedy output
//! equals the single-process CPU engine's (synthetic Llama and GPT-2, and SmolLM2 once with the
//! browser holding three layers); a reload rejoins with the shard from the browser's cache;
//! closing the tab mid-generation lets the generation finish on the native node. Every shader
//! family also runs alone in the page against the CPU reference ops. Chromium is driven by node-web/test/browser/open-node.mjs
//! (playwright-core); a missing Chromium fails the test loudly.

mod common;

use common::calibrate;
use common::cluster::Server;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use synapse::coordinator::events::Event;
use synapse::coordinator::http::status_json;
use synapse::coordinator::session::GenerateEvent;
use synapse::coordinator::wire::WireEncoding;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::engine::ShardExecutor;
use synapse::engine::cpu::CpuShard;
use synapse::model::ModelDir;
use synapse::sampling::SamplingParams;
use tokio::sync::watch;

const TOKEN: &str = "browser-test-token";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The page in Chromium: its status events arrive on `events`, commands go to `stdin`.
struct BrowserPage {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl BrowserPage {
    fn open(url: &str) -> BrowserPage {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the browser tests need Chromium (apt-get install chromium; \
             tests/run.sh installs it)"
        );
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(root.join("node-web/test/browser/open-node.mjs"))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting node (Node.js 20) for playwright-core");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("browser: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        BrowserPage {
            child,
            stdin,
            lines,
        }
    }

    fn command(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("the page is open");
        writeln!(stdin, "{cmd}").expect("writing to the page driver");
        stdin.flush().expect("flushing the page driver");
    }

    /// Waits for a line containing `text`; panics on a page error or after `timeout`.
    fn wait_containing(&self, text: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) if line.starts_with("pageerror") => panic!("the page failed: {line}"),
                Ok(_) => {}
                Err(_) => panic!("no line with `{text}` from the browser within {timeout:?}"),
            }
        }
    }

    /// Waits for a line starting with `prefix`; panics on a page error or after `timeout`.
    fn wait_for(&self, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) if line.starts_with("pageerror") => panic!("the page failed: {line}"),
                Ok(line) if line.contains(r#""state":"error""#) || line.contains("nogpu") => {
                    panic!("the browser node reported a problem: {line}")
                }
                Ok(_) => {}
                Err(_) => panic!("no `{prefix}` line from the browser within {timeout:?}"),
            }
        }
    }
}

impl Drop for BrowserPage {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    coord: Coordinator,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Cluster {
    async fn start(model_dir: &Path, encoding: WireEncoding) -> Cluster {
        let audit = CoordinatorConfig::new(model_dir.to_path_buf(), TOKEN.into()).audit;
        Cluster::start_with(model_dir, encoding, audit).await
    }

    /// [`start`](Self::start) with `audit` as the coordinator's audit settings.
    async fn start_with(
        model_dir: &Path,
        encoding: WireEncoding,
        audit: Option<synapse::coordinator::state::AuditConfig>,
    ) -> Cluster {
        let mut cfg = CoordinatorConfig::new(model_dir.to_path_buf(), TOKEN.into());
        cfg.encoding = encoding;
        cfg.audit = audit;
        cfg.step_timeout = Duration::from_secs(60);
        cfg.pipeline_timeout = Duration::from_secs(120);
        let Server { coord, addr, stop } = common::cluster::serve_coordinator(cfg).await;
        Cluster {
            coord,
            addr,
            _stop: stop,
        }
    }

    /// A native CPU node named `native` reading `dir`; it stops when the sender is dropped.
    fn native_node(&self, dir: &Path) -> watch::Sender<bool> {
        let url = format!("ws://{}/ws?token={TOKEN}", self.addr);
        common::cluster::cpu_node(url, "native", Some(dir), dir).stop
    }

    fn status(&self) -> serde_json::Value {
        status_json(&self.coord)
    }

    /// Waits until a node of `kind` is connected; returns its id.
    async fn wait_node(&self, kind: &str, timeout: Duration) -> u64 {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let s = self.status();
            if let Some(n) = s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["kind"] == kind)
            {
                return n["id"].as_u64().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {kind} node joined: {}", self.status());
    }

    /// Waits until every shard is held by the node the test chose and nothing is moving.
    async fn wait_placed(&self, want: &[u64], timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let s = self.status();
            let shards = s["shards"].as_array().unwrap();
            let placed = shards.iter().zip(want).all(|(x, &n)| {
                x["node"].as_u64() == Some(n) && x["moving_to"].is_null() && x["state"] == "ready"
            });
            if placed && s["complete"] == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("shards never placed as {want:?}: {}", self.status());
    }

    /// Waits until placement has settled (every shard ready on a node, nothing moving, the
    /// same for a second); returns each shard's node.
    async fn wait_settled(&self, timeout: Duration) -> Vec<u64> {
        let end = Instant::now() + timeout;
        let mut last: Option<(Vec<u64>, Instant)> = None;
        while Instant::now() < end {
            let s = self.status();
            let shards = s["shards"].as_array().unwrap();
            let ready = s["complete"] == true
                && shards
                    .iter()
                    .all(|x| x["moving_to"].is_null() && x["state"] == "ready");
            let now: Vec<u64> = shards.iter().filter_map(|x| x["node"].as_u64()).collect();
            match &last {
                Some((prev, since)) if ready && *prev == now => {
                    if since.elapsed() >= Duration::from_secs(1) {
                        return now;
                    }
                }
                _ => last = ready.then(|| (now, Instant::now())),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("placement never settled: {}", self.status());
    }

    async fn generate(&self, prompt: &str, max_tokens: usize) -> Vec<u32> {
        self.generate_with(prompt, max_tokens, &SamplingParams::default())
            .await
    }

    async fn generate_with(
        &self,
        prompt: &str,
        max_tokens: usize,
        sampling: &SamplingParams,
    ) -> Vec<u32> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut body = serde_json::to_value(sampling).unwrap();
        body["prompt"] = serde_json::json!(prompt);
        body["max_tokens"] = serde_json::json!(max_tokens);
        let req = serde_json::from_value(body).unwrap();
        let coord = self.coord.clone();
        tokio::spawn(async move { coord.generate(req, tx).await });
        while let Some(e) = rx.recv().await {
            match e {
                GenerateEvent::Done { ids, .. } => return ids,
                GenerateEvent::Error { message } => panic!("generation failed: {message}"),
                _ => {}
            }
        }
        panic!("no done event");
    }
}

/// Greedy ids of the single-process CPU engine on a model directory.
fn reference_ids(dir: &Path, prompt: &str, max_tokens: usize) -> Vec<u32> {
    common::cpu_engine_ids(dir, prompt, &SamplingParams::default(), max_tokens)
}

/// The synthetic Llama (3 layers) in 3 shards: one per layer.
fn tiny_llama(tmp: &Path) -> PathBuf {
    common::split(&common::fixtures().join("llama-hf"), tmp, 3)
}

/// A coordinator on `dir` (3 shards) with a native CPU node and the browser page, shards 0
/// (embedding) and 2 (head, top-k on the GPU) on the browser and shard 1 on the native node:
/// every kind of step the browser runs (tokens in, hidden in, hidden out, top-k out) and both
/// hops of the wire. Checks one greedy generation against `want`.
struct Mixed {
    cluster: Cluster,
    page: BrowserPage,
    native: u64,
    _native_stop: watch::Sender<bool>,
}

async fn mixed_cluster(dir: &Path, prompt: &str, want: &[u32]) -> Mixed {
    let started = Instant::now();
    let cluster = Cluster::start(dir, WireEncoding::F32).await;
    let native_stop = cluster.native_node(dir);
    let native = cluster.wait_node("native", Duration::from_secs(30)).await;
    cluster
        .wait_placed(&[native, native, native], Duration::from_secs(60))
        .await;
    // Both nodes claim the same speed, so the coordinator's rebalancing is predictable: it
    // moves the head (shard 2) to the browser; the test then moves the embedding (shard 0)
    // there too, which stays within the rebalancing slack.
    let page = BrowserPage::open(&format!(
        "http://{}/node/?token={TOKEN}&name=chromium&gflops=1",
        cluster.addr
    ));
    let browser = cluster.wait_node("browser", Duration::from_secs(120)).await;
    cluster
        .wait_placed(&[native, native, browser], Duration::from_secs(120))
        .await;
    cluster.coord.move_shard(0, browser).unwrap();
    cluster
        .wait_placed(&[browser, native, browser], Duration::from_secs(120))
        .await;
    eprintln!("browser node placed after {:?}", started.elapsed());
    let ids = cluster.generate(prompt, want.len()).await;
    assert_eq!(
        ids, want,
        "browser + native greedy output vs the CPU engine"
    );
    let s = cluster.status();
    let browser_tokens = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == browser)
        .unwrap()["tokens_processed"]
        .as_u64()
        .unwrap();
    assert!(browser_tokens > 0, "the browser node worked: {s}");
    Mixed {
        cluster,
        page,
        native,
        _native_stop: native_stop,
    }
}

/// The synthetic Llama with the browser on shards 0 and 2 (see [`mixed_cluster`]); then a
/// reload (shard from the cache), and the tab closes mid-generation: the native node finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_and_native_nodes_match_the_cpu_engine_and_survive_a_closed_tab() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path());
    let prompt = "hello world";
    let want = reference_ids(&dir, prompt, 12);
    let want_long = reference_ids(&dir, prompt, 32);
    // Every field is bound: the native node stops when its stop handle is dropped.
    let Mixed {
        cluster,
        mut page,
        native,
        _native_stop: _keep_native,
    } = mixed_cluster(&dir, prompt, &want).await;
    eprintln!("first generation done after {:?}", started.elapsed());

    // Longer, the tiny model repeats itself (a run of one token): speculative drafts are
    // verified by the browser, which holds the head (a top-k for every drafted row) and the
    // embedding (truncated after rejected drafts), and the ids stay the CPU engine's.
    let ids = cluster.generate(prompt, want_long.len()).await;
    assert_eq!(ids, want_long, "speculative generation through the browser");
    let s = cluster.status()["speculation"].clone();
    eprintln!("speculation through the browser: {s}");
    let count = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert!(count(&s, "accepted") > 0, "drafts were accepted: {s}");
    // The run of one token ends: the drafts continuing it are rejected and cut from the caches.
    assert!(
        count(&s, "drafted") > count(&s, "accepted"),
        "drafts were rejected: {s}"
    );
    // Seeded sampling through the browser: the same tokens as the CPU engine's seeded run.
    let prompt_rep = "hello world hello world hello world hello world";
    let seeded = SamplingParams {
        temperature: 1.0,
        top_k: 20,
        seed: 7,
        ..SamplingParams::default()
    };
    let want_seeded = common::cpu_engine_ids(&dir, prompt_rep, &seeded, 40);
    let before = cluster.status()["speculation"].clone();
    let ids = cluster.generate_with(prompt_rep, 40, &seeded).await;
    assert_eq!(
        ids, want_seeded,
        "seeded speculative generation through the browser"
    );
    let after = cluster.status()["speculation"].clone();
    eprintln!(
        "seeded: {} tokens, speculation before {before}, after {after}",
        ids.len()
    );

    // Reload the tab: it leaves (failover puts its shards on the native node), joins again as
    // a new node, and the shard the coordinator gives it back comes from the browser's cache.
    page.command("eval location.reload()");
    page.wait_containing(r#""fromCache":true"#, Duration::from_secs(120));
    let placed = cluster.wait_settled(Duration::from_secs(120)).await;
    assert!(
        placed.iter().any(|&n| n != native),
        "the reloaded tab holds a shard again: {placed:?}"
    );
    let ids = cluster.generate(prompt, want.len()).await;
    assert_eq!(ids, want, "after the reload");
    eprintln!("reload checked after {:?}", started.elapsed());

    // Close the tab after the third token: the generation must finish, on the native node.
    let mut events = cluster.coord.subscribe();
    let generation = {
        let c = Cluster {
            coord: cluster.coord.clone(),
            addr: cluster.addr,
            _stop: tokio::sync::oneshot::channel().0,
        };
        tokio::spawn(async move { c.generate(prompt, 32).await })
    };
    let mut sampled = 0;
    while sampled < 3 {
        if let Ok(Event::TokenSampled { .. }) = events.recv().await {
            sampled += 1;
        }
    }
    page.command("close");
    page.wait_for("closed", Duration::from_secs(30));
    let ids = tokio::time::timeout(Duration::from_secs(120), generation)
        .await
        .expect("the generation finished after the tab closed")
        .unwrap();
    assert_eq!(ids, want_long, "output after the tab closed");
    let mut replayed = false;
    while let Ok(e) = events.try_recv() {
        replayed |= matches!(e, Event::SessionReplayed { .. });
    }
    assert!(
        replayed,
        "the session was replayed on the native node after the tab closed"
    );
    let s = cluster.status();
    let nodes = s["nodes"].as_array().unwrap();
    assert!(
        nodes.iter().all(|n| n["kind"] != "browser"),
        "the closed tab left: {s}"
    );
    assert!(
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["node"] == native),
        "every shard is on the native node now: {s}"
    );
    eprintln!("browser test took {:?}", started.elapsed());
}

/// GPT-2 (the synthetic fixture: LayerNorm, biases, gelu, tied head) with a browser node
/// beside a native one, placed by the coordinator's own rebalancing (both claim the same
/// speed): greedy output equals the CPU engine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpt2_with_a_browser_node_matches_the_cpu_engine() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::split(&common::fixtures().join("gpt2-hf"), tmp.path(), 3);
    let prompt = "Hello world";
    let want = reference_ids(&dir, prompt, 10);
    let cluster = Cluster::start(&dir, WireEncoding::F32).await;
    let _native_stop = cluster.native_node(&dir);
    let native = cluster.wait_node("native", Duration::from_secs(30)).await;
    cluster
        .wait_placed(&[native, native, native], Duration::from_secs(60))
        .await;
    let _page = BrowserPage::open(&format!(
        "http://{}/node/?token={TOKEN}&name=chromium&gflops=1",
        cluster.addr
    ));
    let browser = cluster.wait_node("browser", Duration::from_secs(120)).await;
    let end = Instant::now() + Duration::from_secs(180);
    let placed = loop {
        let p = cluster.wait_settled(Duration::from_secs(120)).await;
        if p.contains(&browser) {
            break p;
        }
        assert!(Instant::now() < end, "no shard moved to the browser: {p:?}");
    };
    assert!(
        placed.contains(&native),
        "both nodes hold shards: {placed:?}"
    );
    let ids = cluster.generate(prompt, want.len()).await;
    assert_eq!(
        ids, want,
        "GPT-2 with shards {placed:?} (browser {browser})"
    );
    eprintln!("GPT-2 browser test took {:?}", started.elapsed());
}

/// A deterministic generator of test values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }

    fn halves(&mut self, n: usize) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(self.next())).collect()
    }
}

use half::f16;
use synapse::engine::cpu::ops as cpu;

fn bits(v: &[f16]) -> Vec<u16> {
    v.iter().map(|h| h.to_bits()).collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Every shader family run in Chromium (WebGPU on SwiftShader) through node-web's host code
/// (engine/ops.js), against the Rust CPU reference ops, with the max error of each reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shader_family_in_the_browser_matches_the_cpu_reference() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path());
    let cluster = Cluster::start(&dir, WireEncoding::F32).await;
    let mut r = Lcg(7);
    let mut cases = serde_json::json!({"matmul": [], "norm": []});
    let mut want: Vec<(String, Vec<f32>, f32, f32)> = Vec::new();
    // Matrix products: the matvec kernel (few tokens, gelu epilogue) and the tiled one.
    for (name, t, kernel, gelu) in [("matvec", 3, "vec", true), ("tiled", 20, "tiled", false)] {
        let (k, n) = (40, 70);
        let (x, w, b) = (r.vec(t * k), r.halves(n * k), r.halves(n));
        let mut out = vec![0f32; t * n];
        cpu::matmul(&mut out, &x, &w, Some(&b), t, k);
        if gelu {
            cpu::gelu_tanh(&mut out);
        }
        cases["matmul"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": name, "t": t, "k": k, "n": n, "x": x, "w": bits(&w), "bias": bits(&b),
                "gelu": gelu, "kernel": kernel,
            }));
        want.push((name.into(), out, 1e-4, 1e-4));
    }
    // Norms: RMSNorm (Llama) and LayerNorm (GPT-2).
    for (name, layer) in [("rmsnorm", false), ("layernorm", true)] {
        let c = 64;
        let (x, w, b) = (r.vec(3 * c), r.halves(c), r.halves(c));
        let mut out = x.clone();
        if layer {
            cpu::layernorm(&mut out, &w, &b, c, 1e-5);
        } else {
            cpu::rmsnorm(&mut out, &w, c, 1e-5);
        }
        cases["norm"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": name, "x": x, "w": bits(&w), "b": if layer { Some(bits(&b)) } else { None },
                "eps": 1e-5,
            }));
        want.push((name.into(), out, 1e-5, 1e-4));
    }
    // q/k/v split with RoPE into the cache, at positions 2..5.
    let (t, pos, heads, kv_heads, hd, theta) = (3, 2, 4, 2, 16, 10_000.0f32);
    let (qd, kvd) = (heads * hd, kv_heads * hd);
    let qkv = r.vec(t * (qd + 2 * kvd));
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for row in qkv.chunks(qd + 2 * kvd) {
        q.extend_from_slice(&row[..qd]);
        k.extend_from_slice(&row[qd..qd + kvd]);
        v.extend_from_slice(&row[qd + kvd..]);
    }
    cpu::rope(&mut q, heads, hd, pos, theta);
    cpu::rope(&mut k, kv_heads, hd, pos, theta);
    cases["qkv_rope"] = serde_json::json!({"t": t, "pos": pos, "heads": heads,
        "kv_heads": kv_heads, "hd": hd, "theta": theta, "qkv": qkv});
    // Causal grouped-query attention of 3 rows at position 5 over 8 cached keys.
    let (at, apos) = (3, 5);
    let (aq, ak, av) = (
        r.vec(at * qd),
        r.vec((apos + at) * kvd),
        r.vec((apos + at) * kvd),
    );
    let att = cpu::attention(&aq, &ak, &av, apos, heads, kv_heads, hd);
    cases["attention"] = serde_json::json!({"t": at, "pos": apos, "heads": heads,
        "kv_heads": kv_heads, "hd": hd, "q": aq, "k": ak, "v": av});
    want.push(("attention".into(), att, 1e-5, 1e-4));
    // Embedding rows (f16 -> f32, exact).
    let (vocab, c) = (50, 24);
    let table = r.halves(vocab * c);
    let tokens = [3u32, 0, 49, 7];
    let emb: Vec<f32> = tokens
        .iter()
        .flat_map(|&id| cpu::to_f32(&table[id as usize * c..][..c]))
        .collect();
    cases["embed"] = serde_json::json!({"vocab": vocab, "c": c, "table": bits(&table),
        "tokens": tokens});
    want.push(("embed".into(), emb, 0.0, 0.0));
    // Top-k of 3000 logits.
    let logits = r.vec(3000);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    cases["topk"] = serde_json::json!({"logits": logits, "k": 5});
    // SYN1 int8 quantization of 2 rows of 37 (the same bytes as the Rust encoder).
    let qx: Vec<f32> = r.vec(74).iter().map(|x| x * 3.0).collect();
    let act = synapse::protocol::Activation::new(2, 37, qx.clone()).unwrap();
    let synapse::protocol::PayloadValues::Int8 { q: want_q, scales } =
        act.quantize(synapse::protocol::Encoding::Int8).unwrap()
    else {
        panic!("int8 quantization gives int8 values")
    };
    cases["quantize"] = serde_json::json!({"rows": 2, "x": qx});

    let path = tmp.path().join("ops-cases.json");
    std::fs::write(&path, cases.to_string()).unwrap();
    let mut page = BrowserPage::open(&format!("http://{}/node/test/ops.html", cluster.addr));
    page.wait_for("opened", Duration::from_secs(60));
    page.command(&format!("ops {}", path.display()));
    let line = page.wait_for("result", Duration::from_secs(300));
    let got: serde_json::Value = serde_json::from_str(line.trim_start_matches("result ")).unwrap();
    for (name, expected, atol, rtol) in &want {
        common::assert_close(
            &format!("browser {name}"),
            &floats(&got[name]),
            expected,
            *atol,
            *rtol,
        );
    }
    let rq = &got["qkv_rope"];
    common::assert_close("browser qkv_rope q", &floats(&rq["q"]), &q, 1e-5, 1e-4);
    common::assert_close("browser qkv_rope k", &floats(&rq["k"]), &k, 1e-5, 1e-4);
    common::assert_close("browser qkv_rope v", &floats(&rq["v"]), &v, 0.0, 0.0);
    let ids: Vec<u64> = got["topk"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let want_ids: Vec<u64> = order[..5].iter().map(|&i| i as u64).collect();
    assert_eq!(ids, want_ids, "browser top-k ids");
    let want_vals: Vec<f32> = order[..5].iter().map(|&i| logits[i]).collect();
    common::assert_close(
        "browser top-k values",
        &floats(&got["topk"]["values"]),
        &want_vals,
        0.0,
        0.0,
    );
    let got_q: Vec<i8> = got["quantize"]["q"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i8)
        .collect();
    common::assert_close(
        "browser int8 scales",
        &floats(&got["quantize"]["scales"]),
        &scales,
        0.0,
        0.0,
    );
    let q_diff = got_q.iter().zip(&want_q).filter(|(a, b)| a != b).count();
    assert_eq!(
        q_diff, 0,
        "browser int8 q differs from the Rust encoder at {q_diff} places"
    );
    eprintln!("browser ops test took {:?}", started.elapsed());
}

/// Milliseconds per decode step of `shard` on a native engine: a 4-token prefill, then 8 timed
/// one-token steps on hidden states.
fn native_decode_ms(ex: &mut dyn ShardExecutor, c: usize) -> f64 {
    use synapse::engine::{Activations, LogitsMode, StepInput};
    let mut r = Lcg(3);
    ex.open_session(1).unwrap();
    let prefill = Activations::new(4, c, r.vec(4 * c)).unwrap();
    ex.step(1, 0, StepInput::Hidden(&prefill), LogitsMode::Last)
        .unwrap();
    let row = Activations::new(1, c, r.vec(c)).unwrap();
    ex.step(1, 4, StepInput::Hidden(&row), LogitsMode::Last)
        .unwrap(); // warm-up
    let start = Instant::now();
    for p in 5..13 {
        ex.step(1, p, StepInput::Hidden(&row), LogitsMode::Last)
            .unwrap();
    }
    start.elapsed().as_secs_f64() * 1000.0 / 8.0
}

/// The real model once: SmolLM2-135M in 10 shards of 3 layers, the browser holding shard 4
/// (layers 12-14) between native shards; greedy output equals the CPU engine's. Prints the
/// decode time of that shard in the browser (SwiftShader) beside the native engines on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_with_three_layers_in_the_browser_matches_the_cpu_engine() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let model = common::default_model();
    let dir = common::split(&synapse::fetch::default_gguf_path(), tmp.path(), 10);
    let prompt = "The capital of France is";
    let m = ModelDir::open(&model).unwrap();
    let tok = m.tokenizer().unwrap();
    let want = reference_ids(&model, prompt, 8);
    let cluster = Cluster::start(&dir, WireEncoding::F32).await;
    let _native = cluster.native_node(&dir);
    let native = cluster.wait_node("native", Duration::from_secs(60)).await;
    cluster
        .wait_placed(&[native; 10], Duration::from_secs(120))
        .await;
    // A fifth of the native node's claimed speed: the coordinator keeps the model on the
    // native node until the test moves shard 4 over, and leaves it there.
    let mut page = BrowserPage::open(&format!(
        "http://{}/node/?token={TOKEN}&name=chromium&gflops=0.2",
        cluster.addr
    ));
    let browser = cluster.wait_node("browser", Duration::from_secs(120)).await;
    cluster.coord.move_shard(4, browser).unwrap();
    let mut placement = [native; 10];
    placement[4] = browser;
    cluster
        .wait_placed(&placement, Duration::from_secs(180))
        .await;
    eprintln!(
        "SmolLM2 shard 4 on the browser after {:?}",
        started.elapsed()
    );
    let ids = cluster.generate(prompt, 8).await;
    assert_eq!(
        ids,
        want,
        "SmolLM2 with a browser node: {:?} vs the CPU engine's {:?}",
        tok.decode(&ids),
        tok.decode(&want)
    );
    // The browser's own decode time for its shard, from its last status event.
    page.command("eval JSON.stringify(window.synapse.status)");
    let line = page.wait_for("result", Duration::from_secs(30));
    let status: serde_json::Value =
        serde_json::from_str(serde_json::from_str::<String>(&line[7..]).unwrap().as_str()).unwrap();
    let browser_ms = status["decodeMsPerToken"].as_f64().unwrap();
    drop(page);
    let manifest = ModelDir::open(&dir).unwrap().manifest;
    let c = manifest.config.hidden_size;
    let mut cpu_shard = CpuShard::load(&dir, &manifest, 4).unwrap();
    let cpu_ms = native_decode_ms(&mut cpu_shard, c);
    let gpu_ms = synapse::engine::gpu::GpuContext::new(&Default::default())
        .ok()
        .map(|ctx| {
            let mut s = synapse::engine::gpu::GpuShard::load(ctx, &dir, &manifest, 4).unwrap();
            native_decode_ms(&mut s, c)
        });
    eprintln!(
        "PERF SmolLM2 shard 4 (layers 12-14) decode: browser WebGPU (SwiftShader) {browser_ms:.1} ms/token \
         ({} steps, SYN1 encoding included); native CPU engine {cpu_ms:.1} ms/token; native GPU \
         engine (lavapipe) {} ms/token",
        status["decodeSteps"],
        gpu_ms.map_or("n/a".into(), |g| format!("{g:.1}"))
    );
    eprintln!("SmolLM2 browser test took {:?}", started.elapsed());
}

/// A user's move to the browser node sticks (issue 16): the browser claims a hundredth of the
/// native node's speed, so automatic rebalancing would put the shard straight back on the
/// native node once the browser reported it ready; pinned, it stays, a generation runs through
/// the browser, and `/api/status` shows the pin. Unpinned, the shard goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_moved_to_a_slow_browser_node_stays_there_until_unpinned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path());
    let want = reference_ids(&dir, "hello world", 6);
    let (cluster, native, browser, _page, _native_stop) =
        browser_beside_native(&dir, "name=chromium&gflops=0.01", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = cluster.status();
    assert_eq!(
        s["shards"][2]["node"].as_u64(),
        Some(browser),
        "it stayed: {s}"
    );
    assert_eq!(s["shards"][2]["pinned"].as_u64(), Some(browser), "{s}");
    assert_eq!(cluster.generate("hello world", 6).await, want);
    cluster.coord.unpin_shard(2).unwrap();
    cluster
        .wait_placed(&[native; 3], Duration::from_secs(60))
        .await;
}

/// A native node holding every shard of `dir`, then a browser page opened with `query` after
/// the join token, and shard `shard` moved (pinned) to it; returns the cluster, both node ids
/// and what keeps the page and the native node running.
async fn browser_beside_native(
    dir: &Path,
    query: &str,
    shard: usize,
) -> (Cluster, u64, u64, BrowserPage, watch::Sender<bool>) {
    let cluster = Cluster::start(dir, WireEncoding::F32).await;
    beside_native(cluster, dir, query, shard).await
}

/// [`browser_beside_native`] on a cluster already started.
async fn beside_native(
    cluster: Cluster,
    dir: &Path,
    query: &str,
    shard: usize,
) -> (Cluster, u64, u64, BrowserPage, watch::Sender<bool>) {
    let native_stop = cluster.native_node(dir);
    let native = cluster.wait_node("native", Duration::from_secs(30)).await;
    cluster
        .wait_placed(&[native; 3], Duration::from_secs(60))
        .await;
    let page = BrowserPage::open(&format!(
        "http://{}/node/?token={TOKEN}&{query}",
        cluster.addr
    ));
    let browser = cluster.wait_node("browser", Duration::from_secs(120)).await;
    cluster.coord.move_shard(shard, browser).unwrap();
    let mut want = [native; 3];
    want[shard] = browser;
    cluster.wait_placed(&want, Duration::from_secs(120)).await;
    (cluster, native, browser, page, native_stop)
}

/// A browser node that lies (the page's test-only `?corrupt=1`: every hidden state it returns
/// is nudged, well-formed and of the usual scale) is caught by the coordinator's audit of its
/// first step: the answer, asked without streaming, equals the CPU engine's, the tab is
/// evicted and banned, and the native node serves everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_browser_node_is_caught_by_the_audit_and_cannot_change_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path());
    let want = reference_ids(&dir, "hello world", 12);
    let (cluster, native, browser, _page, _native_stop) =
        browser_beside_native(&dir, "name=liar-tab&gflops=0.01&corrupt=1", 1).await;
    let mut events = cluster.coord.subscribe();
    let got = common::cluster::generate_ids(
        &cluster.coord,
        serde_json::json!({
            "prompt": "hello world", "max_tokens": 12, "temperature": 0.0, "stream": false,
        }),
    )
    .await;
    assert_eq!(got, Ok(want), "the honest answer");
    let mut reason = None;
    while let Ok(e) = events.try_recv() {
        if let synapse::coordinator::events::Event::NodeLeft { node, reason: r } = e {
            assert_eq!(node, browser, "only the liar leaves: {r}");
            reason = Some(r);
        }
    }
    let reason = reason.expect("the lying tab was evicted");
    assert!(reason.contains("failed an audit"), "{reason}");
    let s = cluster.status();
    assert!(s["banned"].to_string().contains("liar-tab"), "{s}");
    assert!(
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["node"] == native),
        "{s}"
    );
}

/// An honest browser node is never accused: the tab holds shard 0 (its hidden states go out in
/// the wire encoding under test), the native node the rest, every step of both audited (rate
/// 1), until the tab has passed 500 audits, for each encoding: no audit fails or is skipped and
/// no node leaves. The tolerance each encoding allows covers SwiftShader's arithmetic too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_browser_node_is_never_accused_in_500_audited_steps_per_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path());
    let every = synapse::coordinator::state::AuditConfig {
        rate: 1.0,
        probation_steps: 16,
    };
    for encoding in [WireEncoding::F32, WireEncoding::Int8, WireEncoding::Rice] {
        let cluster = Cluster::start_with(&dir, encoding, Some(every)).await;
        let (cluster, native, browser, _page, _native_stop) =
            beside_native(cluster, &dir, "name=honest-tab&gflops=0.01", 0).await;
        let mut events = cluster.coord.subscribe();
        let passed = |n: u64| common::cluster::audits_passed(&cluster.coord, n);
        let mut generations = 0;
        while passed(browser) < 500 || passed(native) < 500 {
            assert!(generations < 100, "{encoding:?}: {}", cluster.status());
            let got = common::cluster::generate_ids(
                &cluster.coord,
                serde_json::json!({
                    "prompt": "hello world", "max_tokens": 32, "temperature": 0.0,
                    "stream": generations % 2 == 0,
                }),
            )
            .await;
            assert!(got.is_ok(), "{encoding:?}: generation failed: {got:?}");
            generations += 1;
        }
        let s = common::cluster::audits_settled(&cluster.coord).await;
        assert_eq!(
            s["audits"]["in_progress"], 0,
            "{encoding:?}: {}",
            s["audits"]
        );
        while let Ok(e) = events.try_recv() {
            if let Event::NodeLeft { node, reason } = e {
                panic!("{encoding:?}: node {node} left: {reason}");
            }
        }
        assert_eq!(s["audits"]["failed"], 0, "{encoding:?}: {}", s["audits"]);
        assert_eq!(s["audits"]["skipped"], 0, "{encoding:?}: {}", s["audits"]);
        assert_eq!(s["shards"][0]["node"].as_u64(), Some(browser), "{s}");
        eprintln!(
            "{encoding:?}: {generations} generations, audits {}",
            s["audits"]
        );
    }
}

/// The simulator against a cluster with a browser node (issue 16's calibration): SmolLM2-135M in
/// 10 shards, a native CPU node holding all but shard 4 (layers 12-14), which runs in Chromium
/// (WebGPU on SwiftShader), on the coordinator's default wire encoding. The simulator, given the
/// two devices and this placement, predicts decode tokens/s within 25% and the time to first
/// token within 35% of what the run measured, each phase from the speeds the other phase showed
/// (tests/common/calibrate.rs says why); the table row goes to docs/PERF.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_predicts_a_cluster_with_a_browser_node() {
    use synapse::sim::ModelShape;
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::split(&synapse::fetch::default_gguf_path(), tmp.path(), 10);
    let manifest = ModelDir::open(&dir).unwrap().manifest;
    let shape = ModelShape::from_manifest(&manifest).unwrap();
    let shards = ModelShape::shards_of(&manifest);
    // The simulator models the devices, not the coordinator's own CPU: its audits (which
    // recompute on this same machine, and hold a new node's first steps) are off here.
    let cluster = Cluster::start_with(&dir, WireEncoding::Rice, None).await;
    let _native = cluster.native_node(&dir);
    let native = cluster.wait_node("native", Duration::from_secs(60)).await;
    cluster
        .wait_placed(&[native; 10], Duration::from_secs(120))
        .await;
    // The page measures its own speed (no gflops pin); a user's move puts shard 4 on it and
    // the pin keeps it there whatever the measured speed says.
    let _page = BrowserPage::open(&format!(
        "http://{}/node/?token={TOKEN}&name=chromium",
        cluster.addr
    ));
    let browser = cluster.wait_node("browser", Duration::from_secs(120)).await;
    cluster.wait_settled(Duration::from_secs(180)).await;
    cluster.coord.move_shard(4, browser).unwrap();
    let end = Instant::now() + Duration::from_secs(180);
    // Shards the coordinator itself gave the measured browser may move back and forth; the
    // comparison uses whatever placement holds when the generation starts.
    while cluster.status()["shards"][4]["node"].as_u64() != Some(browser)
        || cluster.status()["shards"][4]["state"] != "ready"
    {
        assert!(Instant::now() < end, "shard 4 never loaded in the browser");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_settled(Duration::from_secs(180)).await;
    let prompt = "Here is a list of the countries of Europe with their capital cities, one per \
                  line, in alphabetical order by country: Albania: Tirana. Andorra: Andorra la \
                  Vella. Austria: Vienna. Belarus: Minsk. Belgium: Brussels.";
    let mut rows = Vec::new();
    let mut last = None;
    // Two attempts: a run whose speeds changed under it (this shared machine) is run again; a
    // model that is wrong misses both.
    for attempt in 1..=2 {
        let m = calibrate::measure(&cluster.coord, prompt, 16, Duration::from_secs(300)).await;
        let c = calibrate::compare(&shape, &shards, &m, "CPU node + browser node (SwiftShader)");
        eprintln!("PERF attempt {attempt} {}", c.line);
        rows.push(c.line.clone());
        let ok = c.decode_err.abs() <= 0.25 && c.prefill_err.abs() <= 0.35;
        last = Some((c.decode_err, c.prefill_err));
        if ok {
            return;
        }
    }
    let (d, p) = last.unwrap();
    panic!(
        "the simulator missed the browser cluster: decode off by {:+.0}%, prefill by {:+.0}% \
         (bounds 25% and 35%)\n{}",
        d * 100.0,
        p * 100.0,
        rows.join("\n")
    );
}
