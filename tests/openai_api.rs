//! The OpenAI-compatible API and the prompt page against a coordinator with native CPU nodes on
//! the real default model (SmolLM2-135M-Instruct), ports chosen by the OS: the official `openai`
//! Python client (plain and streamed, ten concurrent streams) gets the CPU engine's greedy text;
//! bad requests get OpenAI's error shapes while the server keeps serving; a full queue answers
//! 429; a client that disconnects frees its session; and the page streams an answer in
//! headless Chromium.

mod common;

use common::cluster::Server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use synapse::coordinator::events::Event;
use synapse::coordinator::http::status_json;
use synapse::coordinator::openai::template::{ChatTemplate, TemplateMessage};
use synapse::coordinator::wire::WireEncoding;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::model::ModelDir;
use synapse::node::worker::NodeStats;
use synapse::sampling::SamplingParams;
use tokio::sync::watch;

const JOIN: &str = "test-join-token";
const KEY: &str = "test-api-key";
const CHAT_QUESTION: &str = "What is the capital of France?";

struct Cluster {
    coord: Coordinator,
    addr: SocketAddr,
    nodes: Vec<(watch::Sender<bool>, Arc<NodeStats>)>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Cluster {
    /// A coordinator (f32 activations, so output is the CPU engine's to the bit) with the API key.
    async fn start(max_sessions: usize, max_queued: usize) -> Cluster {
        let mut cfg = CoordinatorConfig::new(common::default_model(), JOIN.into());
        cfg.encoding = WireEncoding::F32;
        cfg.step_timeout = Duration::from_secs(60);
        cfg.api_key = Some(KEY.into());
        cfg.max_sessions = max_sessions;
        cfg.max_queued = max_queued;
        let Server { coord, addr, stop } = common::cluster::serve_coordinator(cfg).await;
        Cluster {
            coord,
            addr,
            nodes: Vec::new(),
            _stop: stop,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts `n` CPU nodes reading the model directory and waits for the complete pipeline.
    async fn add_nodes(&mut self, n: usize) {
        let mut events = self.coord.subscribe();
        let dir = common::default_model();
        for i in 0..n {
            let url = format!("ws://{}/ws?token={JOIN}", self.addr);
            let node = common::cluster::cpu_node(url, &format!("cpu-{i}"), Some(&dir), &dir);
            let (stop, stats) = (node.stop, node.stats);
            self.nodes.push((stop, stats));
        }
        for _ in 0..1200 {
            let s = status_json(&self.coord);
            let moving = s["shards"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| !x["moving_to"].is_null());
            if s["complete"] == true && !moving && s["nodes"].as_array().unwrap().len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut left = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Event::NodeLeft { node, reason } = e {
                left.push(format!("node {node}: {reason}"));
            }
        }
        panic!(
            "pipeline never complete: {}; nodes that left: {left:?}",
            status_json(&self.coord)
        );
    }

    fn open_caches(&self) -> usize {
        self.nodes
            .iter()
            .map(|(_, s)| s.open_sessions.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

/// Greedy text and token count of the single-process CPU engine (what `synapse generate` prints).
fn reference(prompt: &str, max_tokens: usize) -> (String, usize, usize) {
    let m = ModelDir::open(&common::default_model()).unwrap();
    let tok = m.tokenizer().unwrap();
    let mut pipe = m.cpu_pipeline().unwrap();
    let ids = tok.encode(prompt).unwrap();
    let g = synapse::generate::generate(
        &mut pipe,
        &tok,
        &ids,
        &SamplingParams::default(),
        max_tokens,
        &m.manifest.config.eos_token_ids,
        |_| {},
    )
    .unwrap();
    (g.text, ids.len(), g.ids.len())
}

/// The chat prompt the server should build for one user question.
fn chat_prompt(question: &str) -> String {
    let m = ModelDir::open(&common::default_model()).unwrap();
    let t = ChatTemplate::new(
        m.manifest
            .chat_template
            .as_deref()
            .expect("SmolLM2 has a chat template"),
        "<|im_start|>",
        "<|im_end|>",
    )
    .unwrap();
    t.render(
        &[TemplateMessage {
            role: "user".into(),
            content: question.into(),
        }],
        true,
    )
    .unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a helper script off the async runtime; returns its stdout, panicking with its output on failure.
async fn run_script(program: &str, args: Vec<String>) -> String {
    let program = program.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn last_json_line(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {stdout}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_client_gets_the_cpu_engines_greedy_text() {
    let mut cluster = Cluster::start(16, 32).await;
    cluster.add_nodes(2).await;
    let prompts: Vec<String> = [
        "The capital of France is",
        "One, two, three,",
        "Water boils at",
        "The largest planet is",
        "My favourite colour is",
        "The sun rises in the",
        "Cats and dogs are",
        "The first month of the year is",
        "A triangle has",
        "Rust is a programming language that",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let script = repo().join("tests/openai_client/check_client.py");
    let out = run_script(
        "python3",
        vec![
            script.display().to_string(),
            cluster.base(),
            KEY.into(),
            serde_json::to_string(&prompts).unwrap(),
        ],
    )
    .await;
    let got = last_json_line(&out);
    assert_eq!(got["model"], "SmolLM2-135M-Instruct");

    let (want, prompt_tokens, completion_tokens) = reference("The capital of France is", 10);
    assert_eq!(got["completion"]["text"], want.as_str(), "plain completion");
    assert_eq!(got["completion"]["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(
        got["completion"]["usage"]["completion_tokens"],
        completion_tokens
    );
    assert_eq!(
        got["completion"]["usage"]["total_tokens"],
        prompt_tokens + completion_tokens
    );

    let (want, prompt_tokens, completion_tokens) = reference(&chat_prompt(CHAT_QUESTION), 12);
    assert!(want.contains("Paris"), "the reference answer: {want:?}");
    assert_eq!(
        got["chat"]["text"],
        want.as_str(),
        "streamed chat completion"
    );
    assert_eq!(got["chat"]["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(got["chat"]["usage"]["completion_tokens"], completion_tokens);
    // ...and the same as `synapse generate --chat` prints.
    let cli = run_script(
        env!("CARGO_BIN_EXE_synapse"),
        [
            "generate",
            "--chat",
            "--prompt",
            CHAT_QUESTION,
            "--max-tokens",
            "12",
            "--json",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(
        last_json_line(&cli)["text"],
        got["chat"]["text"],
        "synapse generate --chat"
    );
    let finish = if completion_tokens == 12 {
        "length"
    } else {
        "stop"
    };
    assert_eq!(got["chat"]["finish_reason"], finish);

    let texts = got["concurrent"].as_array().unwrap();
    assert_eq!(texts.len(), prompts.len());
    let mut distinct = std::collections::BTreeSet::new();
    for (p, t) in prompts.iter().zip(texts) {
        let (want, _, _) = reference(p, 6);
        assert_eq!(t, want.as_str(), "concurrent stream for {p:?}");
        distinct.insert(want);
    }
    assert!(
        distinct.len() >= 8,
        "the ten prompts should give different texts: {distinct:?}"
    );
    assert_eq!(
        cluster.open_caches(),
        0,
        "every session's caches were freed"
    );
}

async fn post(
    base: &str,
    path: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

async fn body_json(r: reqwest::Response) -> serde_json::Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Checks an OpenAI-shaped error: status, `type`, `code` and that the message mentions `needle`.
async fn expect_error(
    resp: reqwest::Response,
    status: u16,
    kind: &str,
    code: Option<&str>,
    needle: &str,
) {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let e = &v["error"];
    assert_eq!(e["type"], kind, "{v}");
    assert_eq!(e["code"].as_str(), code, "{v}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_full_queue_and_disconnects_are_handled_and_the_server_keeps_serving() {
    let mut cluster = Cluster::start(1, 1).await;
    let base = cluster.base();
    let ok_body =
        r#"{"model":"m","prompt":"The capital of France is","max_tokens":4,"temperature":0}"#;

    // Without nodes: a plain 503 that says why.
    let r = post(&base, "/v1/completions", Some(KEY), ok_body).await;
    expect_error(
        r,
        503,
        "server_error",
        Some("no_complete_pipeline"),
        "No complete pipeline",
    )
    .await;
    cluster.add_nodes(1).await;

    let r = post(&base, "/v1/completions", None, ok_body).await;
    assert!(r.headers().contains_key("www-authenticate"));
    expect_error(
        r,
        401,
        "invalid_request_error",
        Some("invalid_api_key"),
        "API key",
    )
    .await;
    let r = post(&base, "/v1/completions", Some("wrong"), ok_body).await;
    expect_error(
        r,
        401,
        "invalid_request_error",
        Some("invalid_api_key"),
        "API key",
    )
    .await;
    let r = post(&base, "/api/generate", Some("wrong"), r#"{"prompt":"x"}"#).await;
    assert_eq!(
        r.status().as_u16(),
        401,
        "the key also guards /api/generate"
    );
    let r = reqwest::get(format!("{base}/v1/models")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let r = post(&base, "/v1/completions", Some(KEY), r#"{"prompt": "x", "#).await;
    expect_error(r, 400, "invalid_request_error", None, "parse the JSON body").await;
    let r = post(
        &base,
        "/v1/chat/completions",
        Some(KEY),
        r#"{"messages": "hi"}"#,
    )
    .await;
    expect_error(r, 400, "invalid_request_error", None, "parse the JSON body").await;
    let long = serde_json::json!({"prompt": "hello ".repeat(9000), "max_tokens": 4}).to_string();
    let r = post(&base, "/v1/completions", Some(KEY), long).await;
    expect_error(
        r,
        400,
        "invalid_request_error",
        Some("context_length_exceeded"),
        "maximum context length is 8192",
    )
    .await;
    let r = post(
        &base,
        "/v1/completions",
        Some(KEY),
        r#"{"prompt":"x","max_tokens":8192}"#,
    )
    .await;
    expect_error(
        r,
        400,
        "invalid_request_error",
        Some("context_length_exceeded"),
        "8192 for the completion",
    )
    .await;
    let r = post(
        &base,
        "/v1/completions",
        Some(KEY),
        r#"{"prompt":"x","n":2}"#,
    )
    .await;
    expect_error(r, 400, "invalid_request_error", None, "n: only 1").await;
    let r = post(
        &base,
        "/v1/completions",
        Some(KEY),
        r#"{"prompt":"x","logprobs":3}"#,
    )
    .await;
    expect_error(r, 400, "invalid_request_error", None, "logprobs").await;
    let r = post(
        &base,
        "/v1/completions",
        Some(KEY),
        r#"{"prompt":"x","temperature":7}"#,
    )
    .await;
    expect_error(r, 400, "invalid_request_error", None, "temperature").await;
    let r = post(
        &base,
        "/v1/completions",
        Some(KEY),
        r#"{"prompt":"x","stop":["a","b","c","d","e"]}"#,
    )
    .await;
    expect_error(r, 400, "invalid_request_error", None, "stop").await;
    let r = post(
        &base,
        "/v1/chat/completions",
        Some(KEY),
        r#"{"messages":[{"role":"tool","content":"x"}]}"#,
    )
    .await;
    expect_error(r, 400, "invalid_request_error", None, "role").await;
    let r = post(&base, "/v1/completions", Some(KEY), vec![b' '; 2 << 20]).await;
    expect_error(
        r,
        413,
        "invalid_request_error",
        Some("request_too_large"),
        "larger than",
    )
    .await;
    let r = post(&base, "/v1/embeddings", Some(KEY), "{}").await;
    expect_error(
        r,
        404,
        "invalid_request_error",
        Some("unknown_url"),
        "/v1/embeddings",
    )
    .await;

    // A stop string cuts the text (and ends the session) even when it spans tokens.
    let (full, _, _) = reference("The capital of France is", 8);
    let cut = full.find(".\n").expect("the reference has a '.\\n'");
    let body =
        r#"{"prompt":"The capital of France is","max_tokens":8,"temperature":0,"stop":".\n"}"#;
    let v: serde_json::Value =
        body_json(post(&base, "/v1/completions", Some(KEY), body).await).await;
    assert_eq!(v["choices"][0]["text"], &full[..cut], "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // One slot, one waiting place: A runs, then of B and C one waits and the other gets 429.
    let mut events = cluster.coord.subscribe();
    let long_stream =
        r#"{"prompt":"Once upon a time","max_tokens":400,"temperature":0,"stream":true}"#;
    let a = post(&base, "/v1/completions", Some(KEY), long_stream).await;
    assert_eq!(a.status().as_u16(), 200);
    let mut a_body = a.bytes_stream();
    let first = a_body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    let spawn_post = |delay: u64| {
        let base = base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            post(&base, "/v1/completions", Some(KEY), ok_body).await
        })
    };
    let (mut b, mut c) = (spawn_post(0), spawn_post(300));
    let (busy, waiting) = tokio::select! {
        r = &mut b => (r.unwrap(), c),
        r = &mut c => (r.unwrap(), b),
    };
    assert_eq!(
        busy.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    expect_error(
        busy,
        429,
        "rate_limit_exceeded",
        Some("rate_limit_exceeded"),
        "busy",
    )
    .await;
    // A's client goes away: its slot passes to the waiting request.
    drop(a_body);
    let served = waiting.await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    let v: serde_json::Value = body_json(served).await;
    assert_eq!(
        v["choices"][0]["text"],
        reference("The capital of France is", 4).0.as_str()
    );

    // A's session closed as "client left", long before its 400 tokens.
    let mut a_session = None;
    let mut a_tokens = 0;
    let mut a_reason = None;
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
        match e {
            Event::SessionOpened { session, .. } if a_session.is_none() => {
                a_session = Some(session)
            }
            Event::TokenSampled { session, .. } if Some(session) == a_session => a_tokens += 1,
            Event::SessionClosed { session, reason } if Some(session) == a_session => {
                a_reason = Some(reason);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(a_reason.as_deref(), Some("client left"));
    assert!(a_tokens < 400, "A stopped early ({a_tokens} tokens)");
    for _ in 0..100 {
        if cluster.open_caches() == 0
            && status_json(&cluster.coord)["sessions"]
                .as_array()
                .unwrap()
                .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.open_caches(), 0, "the nodes freed every cache");

    // Still serving.
    let v: serde_json::Value =
        body_json(post(&base, "/v1/completions", Some(KEY), ok_body).await).await;
    assert_eq!(
        v["choices"][0]["text"],
        reference("The capital of France is", 4).0.as_str()
    );
}

/// Standard deviation of a PNG's grey levels (ImageMagick): 0 for a blank image.
fn png_spread(path: &Path) -> f64 {
    let out = Command::new("convert")
        .arg(path)
        .args([
            "-colorspace",
            "Gray",
            "-format",
            "%[fx:standard_deviation]",
            "info:",
        ])
        .output()
        .expect("running ImageMagick's convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_page_streams_an_answer_in_chromium() {
    let mut cluster = Cluster::start(16, 32).await;
    let script = repo()
        .join("tests/web/prompt_page.mjs")
        .display()
        .to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().display().to_string();

    // No nodes yet: the page says so plainly and a prompt ends in a visible error.
    let args = vec![
        script.clone(),
        cluster.base(),
        "incomplete".into(),
        out_dir.clone(),
        KEY.into(),
    ];
    let got = last_json_line(&run_script("node", args).await);
    // Without the key (not yet typed) the status names no devices, only what is missing.
    let pipeline = got["pipeline"].as_str().unwrap();
    assert!(
        pipeline.starts_with("No complete pipeline: shard 0 is unassigned"),
        "{got}"
    );
    let answer = got["answer"].as_str().unwrap();
    assert!(
        answer.contains("503") && answer.contains("No complete pipeline"),
        "{answer:?}"
    );

    cluster.add_nodes(2).await;
    let args = vec![script, cluster.base(), "chat".into(), out_dir, KEY.into()];
    let got = last_json_line(&run_script("node", args).await);
    let (want, _, _) = reference(&chat_prompt(CHAT_QUESTION), 12);
    assert_eq!(
        got["answer"],
        want.as_str(),
        "the page shows the greedy answer: {got}"
    );
    assert_eq!(
        got["errors"].as_array().unwrap().len(),
        0,
        "page errors: {got}"
    );
    let states: Vec<&str> = got["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        states.contains(&"streaming"),
        "the answer streamed: {states:?}"
    );
    assert!(got["tps"].as_str().unwrap().contains("tok/s"), "{got}");
    assert!(
        got["pipeline"]
            .as_str()
            .unwrap()
            .starts_with("Pipeline complete"),
        "{got}"
    );

    let shot = tmp.path().join("prompt_page.png");
    let bytes = std::fs::read(&shot).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let spread = png_spread(&shot);
    assert!(
        spread > 0.02,
        "the screenshot is blank (grey-level spread {spread})"
    );
    let keep = std::env::var_os("SYNAPSE_KEEP_SCREENSHOT");
    if let Some(dest) = keep {
        std::fs::copy(&shot, dest).unwrap();
    }
}
