//! The coordinator's open doors (issue 15, failures 4, 5, 7 and 8), over HTTP on the tiny
//! synthetic Llama: cross-site requests are refused unless `--cors` allows their origin (CSRF);
//! shard files need the join token, and native nodes present it; with an API key a stranger
//! sees only the model and readiness at `/api/status`; the bearer scheme is case-insensitive
//! and the key compared exactly; pages carry a CSP they can live with; `/api/generate` waits in
//! the same queue as `/v1` and reports errors with status codes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{Server, cpu_node};
use common::liar::{Msg, Rewrite, lying_node};
use common::tiny_llama;
use reqwest::StatusCode;
use synapse::coordinator::CoordinatorConfig;
use synapse::coordinator::http::status_json;
use synapse::coordinator::wire::WireEncoding;

const TOKEN: &str = "security-join-token";
const KEY: &str = "security-api-key";
const EVIL: &str = "http://evil.example";

fn config(dir: &Path) -> CoordinatorConfig {
    let mut cfg = CoordinatorConfig::new(dir.to_path_buf(), TOKEN.into());
    cfg.encoding = WireEncoding::F32;
    cfg.step_timeout = Duration::from_secs(10);
    cfg
}

fn url(server: &Server) -> String {
    format!("ws://{}/ws?token={TOKEN}", server.addr)
}

/// Waits for a complete pipeline.
async fn wait_complete(server: &Server) {
    for _ in 0..600 {
        if status_json(&server.coord)["complete"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pipeline never complete: {}", status_json(&server.coord));
}

/// The state-changing routes, each with a body it accepts.
const POSTS: [(&str, &str); 5] = [
    ("/v1/completions", r#"{"prompt":"hello","max_tokens":2}"#),
    (
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
    ),
    ("/api/generate", r#"{"prompt":"hello","max_tokens":2}"#),
    ("/api/shards/0/move", r#"{"node":999}"#),
    ("/api/shards/0/unpin", r#"{}"#),
];

async fn post(
    base: &str,
    path: &str,
    content_type: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_string());
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.send().await.unwrap()
}

/// Checks status and that the OpenAI-shaped error message mentions `needle`.
async fn refused(resp: reqwest::Response, status: u16, needle: &str, what: &str) {
    let got = resp.status().as_u16();
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "{what}: no CORS header by default"
    );
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "{what}: {msg:?} should mention {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_and_the_coordinators_own_pages_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let server = common::cluster::serve_coordinator(config(&dir)).await;
    let base = format!("http://{}", server.addr);
    let own = base.clone();
    for (path, body) in POSTS {
        let r = post(&base, path, Some("text/plain"), None, body).await;
        refused(r, 415, "Content-Type: application/json", path).await;
        let r = post(&base, path, None, None, body).await;
        refused(r, 415, "Content-Type: application/json", path).await;
        let r = post(
            &base,
            path,
            Some("application/x-www-form-urlencoded"),
            None,
            body,
        )
        .await;
        refused(r, 415, "Content-Type: application/json", path).await;
        let r = post(&base, path, Some("application/json"), Some(EVIL), body).await;
        refused(r, 403, "--cors http://evil.example", path).await;
        let r = post(&base, path, Some("application/json"), Some("null"), body).await;
        refused(r, 403, "Origin", path).await;
        // The coordinator's own page (same origin), and a client that sends no Origin, pass
        // the guard: what they get is the route's own answer (no nodes yet).
        for origin in [Some(own.as_str()), None] {
            let r = post(
                &base,
                path,
                Some("application/json; charset=utf-8"),
                origin,
                body,
            )
            .await;
            let s = r.status().as_u16();
            assert!(
                ![403, 415].contains(&s),
                "{path} from {origin:?}: {s} {}",
                r.text().await.unwrap()
            );
        }
    }
    // A preflight from another site gets no CORS headers, so the browser sends nothing.
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/completions"))
        .header("origin", EVIL)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_the_named_origin_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let app = "http://app.example:3000";
    let mut cfg = config(&dir);
    cfg.cors_origins = vec![app.into()];
    let server = common::cluster::serve_coordinator(cfg).await;
    let base = format!("http://{}", server.addr);
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("{base}/v1/chat/completions"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let r = preflight(app).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], app);
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("content-type") && allowed.contains("authorization"));
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let r = preflight(EVIL).await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let r = post(
        &base,
        "/api/shards/0/unpin",
        Some("application/json"),
        Some(app),
        "{}",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], app);
    let r = post(
        &base,
        "/api/shards/0/unpin",
        Some("application/json"),
        Some(EVIL),
        "{}",
    )
    .await;
    refused(r, 403, "Origin", "evil with --cors for another origin").await;
    // Allowed or not, the body must still be JSON.
    let r = post(
        &base,
        "/api/shards/0/unpin",
        Some("text/plain"),
        Some(app),
        "{}",
    )
    .await;
    assert_eq!(r.status().as_u16(), 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_files_need_the_join_token_which_native_nodes_send() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let mut cfg = config(&dir);
    cfg.api_key = Some(KEY.into());
    let server = common::cluster::serve_coordinator(cfg).await;
    let file = server.coord.manifest().shards[0].file.clone();
    let shard = format!("http://{}/shards/{file}", server.addr);
    let get = |auth: Option<&'static str>| {
        let mut r = reqwest::Client::new().get(&shard);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer security-api-key"),
        Some("Bearer  security-join-token"),
        Some("Bearer security-join-token x"),
        Some("Basic security-join-token"),
    ] {
        let r = get(auth).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert!(r.text().await.unwrap().contains("join token"));
    }
    for auth in ["Bearer security-join-token", "bearer security-join-token"] {
        let r = get(Some(auth)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{auth}");
        assert!(r.headers().contains_key("x-sha256"));
        let bytes = r.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, server.coord.manifest().shards[0].bytes);
    }
    // A native node without the model downloads its shards, presenting the token.
    let cache = tempfile::tempdir().unwrap();
    let _node = cpu_node(url(&server), "downloader", None, cache.path());
    wait_complete(&server).await;
    let downloaded = std::fs::read_dir(cache.path())
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".safetensors")
        })
        .count();
    assert_eq!(
        downloaded, 2,
        "both shards downloaded into the node's cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_strangers_see_the_model_and_readiness_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let mut cfg = config(&dir);
    cfg.api_key = Some(KEY.into());
    let server = common::cluster::serve_coordinator(cfg).await;
    let _node = cpu_node(url(&server), "secret-laptop", Some(&dir), tmp.path());
    wait_complete(&server).await;
    let status = |auth: Option<String>| {
        let mut r = reqwest::Client::new().get(format!("http://{}/api/status", server.addr));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move {
            let text = r.send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        }
    };
    for auth in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer  {KEY}")),
    ] {
        let s = status(auth.clone()).await;
        assert_eq!(s["complete"], true, "{s}");
        assert_eq!(s["restricted"], true, "{s}");
        assert_eq!(s["api_key_required"], true);
        assert!(s["model"]["architecture"].is_string(), "{s}");
        assert_eq!(s["shards"].as_array().unwrap().len(), 2);
        assert_eq!(s["shards"][0]["state"], "ready");
        let text = s.to_string();
        let source = s["model"]["source"].as_str().unwrap();
        assert!(
            source == "llama-hf",
            "the model's name, not its path on disk: {text}"
        );
        for hidden in [
            "secret-laptop",
            "nodes",
            "sessions",
            "adapter",
            "pinned",
            "test CPU",
        ] {
            assert!(!text.contains(hidden), "{auth:?} sees {hidden}: {text}");
        }
    }
    for auth in [format!("Bearer {KEY}"), format!("bearer {TOKEN}")] {
        let s = status(Some(auth.clone())).await;
        assert_eq!(s["nodes"][0]["name"], "secret-laptop", "{auth}: {s}");
        assert!(s["sessions"].is_array());
        assert!(s.get("restricted").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_the_key_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let mut cfg = config(&dir);
    cfg.api_key = Some(KEY.into());
    let server = common::cluster::serve_coordinator(cfg).await;
    let models = format!("http://{}/v1/models", server.addr);
    for (auth, want) in [
        (format!("Bearer {KEY}"), 200),
        (format!("bearer {KEY}"), 200),
        (format!("BEARER {KEY}"), 200),
        // Whitespace at the end of a header value is not part of it (RFC 9110, 5.5): HTTP
        // parsers drop it before the server sees the value, so `Bearer KEY ` arrives as
        // `Bearer KEY`. Inside the value, every character counts.
        (format!("Bearer {KEY} "), 200),
        (format!("Bearer {KEY} x"), 401),
        (format!("Bearer \t{KEY}"), 401),
        (format!("Bearer  {KEY}"), 401),
        (format!("Bearer {KEY}x"), 401),
        (format!("Basic {KEY}"), 401),
        (KEY.to_string(), 401),
        (format!("Bearer {TOKEN}"), 401),
    ] {
        let r = reqwest::Client::new()
            .get(&models)
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{auth:?}");
    }
}

/// Every `<script>` of a page loads a file, and nothing is inline (attributes such as
/// `onclick=` or `style=`, `<style>` blocks): what the CSP forbids.
fn assert_no_inline_code(page: &str, html: &str) {
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "{page}: inline script {tag}");
    }
    assert!(!lower.contains("<style"), "{page}: inline <style>");
    assert!(!lower.contains(" style="), "{page}: a style attribute");
    for attr in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " oninput=",
        " onchange=",
    ] {
        assert!(!lower.contains(attr), "{page}: inline handler {attr}");
    }
    assert!(!lower.contains("javascript:"), "{page}: javascript: URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_content_security_policy_they_can_live_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let server = common::cluster::serve_coordinator(config(&dir)).await;
    for path in [
        "/",
        "/web/app.js",
        "/node/",
        "/node/app.js",
        "/api/status",
        "/v1/models",
    ] {
        let r = reqwest::get(format!("http://{}{path}", server.addr))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "connect-src 'self' ws: wss:",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp} lacks {part}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        if path == "/" || path == "/node/" {
            assert_no_inline_code(path, &r.text().await.unwrap());
        }
    }
}

/// Holds every binary frame of the node back by `d` (a slow node).
fn slow(d: Duration) -> Rewrite {
    std::sync::Arc::new(move |_, m| match m {
        Msg::Binary(b) => vec![Msg::Sleep(d), Msg::Binary(b)],
        other => vec![other],
    })
}

async fn error_code(r: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, retry, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_generate_waits_in_the_v1_queue_and_answers_errors_with_status_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let mut cfg = config(&dir);
    cfg.max_sessions = 1;
    cfg.max_queued = 1;
    let server = common::cluster::serve_coordinator(cfg).await;
    let base = format!("http://{}", server.addr);
    let json = Some("application/json");

    // No nodes: 503 naming the problem, not a 200 with an error line.
    let (s, _, v) =
        error_code(post(&base, "/api/generate", json, None, r#"{"prompt":"hello"}"#).await).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "no_complete_pipeline");
    let node = lying_node(server.addr, TOKEN, "slow", &dir, None, false, |_| {}).await;
    wait_complete(&server).await;
    for (body, needle) in [
        (r#"{"prompt": "#, "parse"),
        (r#"{"prompt":"hello","temperature":-1}"#, "temperature"),
        (r#"{"prompt":""}"#, "empty"),
        (r#"{"max_tokens":3}"#, "prompt"),
    ] {
        let (s, _, v) = error_code(post(&base, "/api/generate", json, None, body).await).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let long = "hello world ".repeat(200);
    let body = serde_json::json!({ "prompt": long }).to_string();
    let (s, _, v) = error_code(post(&base, "/api/generate", json, None, &body).await).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");

    // One slot, one place in the queue. A slow /api/generate takes the slot...
    node.set(Some(slow(Duration::from_millis(150))));
    let holder = post(
        &base,
        "/api/generate",
        json,
        None,
        r#"{"prompt":"hello world","max_tokens":60,"temperature":0}"#,
    )
    .await;
    assert_eq!(holder.status(), StatusCode::OK);
    // ... a /v1 request waits for it ...
    let waiting = tokio::spawn({
        let base = base.clone();
        async move {
            post(
                &base,
                "/v1/completions",
                json,
                None,
                r#"{"prompt":"hello","max_tokens":2,"temperature":0}"#,
            )
            .await
            .status()
            .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the /v1 request waits for the slot");
    assert_eq!(
        status_json(&server.coord)["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // ... and with the queue full, both APIs answer 429 with Retry-After at once.
    for path in ["/api/generate", "/v1/completions"] {
        let r = post(
            &base,
            path,
            json,
            None,
            r#"{"prompt":"hello","max_tokens":2}"#,
        );
        let (s, retry, v) =
            tokio::time::timeout(Duration::from_secs(5), async { error_code(r.await).await })
                .await
                .expect("refused at once");
        assert_eq!(s, 429, "{path}: {v}");
        assert!(!retry.is_empty(), "{path}: Retry-After");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{path}");
    }
    // The holder leaves: the waiting request gets the slot and its answer.
    drop(holder);
    node.set(None);
    let s = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, 200);
    // And /api/generate runs again, streaming its lines with a 200.
    let r = post(
        &base,
        "/api/generate",
        json,
        None,
        r#"{"prompt":"hello","max_tokens":3,"temperature":0}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.lines().last().unwrap().contains("\"done\""), "{text}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw node that says hello as `name`, offering no memory (it gets no shards).
async fn raw_node(server: &Server, name: &str) -> Ws {
    use futures_util::SinkExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(url(server)).await.unwrap();
    let hello = serde_json::json!({"type": "hello", "version": 1, "name": name, "kind": "native",
        "backend": "cpu", "adapter": "x", "memory_bytes": 0, "gflops": 1.0});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        hello.to_string(),
    ))
    .await
    .unwrap();
    ws
}

/// Names of the connected nodes, once there are `n`.
async fn names(server: &Server, n: usize) -> Vec<String> {
    for _ in 0..300 {
        let s = status_json(&server.coord);
        let nodes = s["nodes"].as_array().unwrap();
        if nodes.len() == n {
            return nodes
                .iter()
                .map(|x| x["name"].as_str().unwrap().to_string())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never {n} nodes: {}", status_json(&server.coord));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_and_nodes_and_clients_that_leave_leave_nothing_behind() {
    use futures_util::StreamExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let server = common::cluster::serve_coordinator(config(&dir)).await;
    let base = format!("http://{}", server.addr);
    let node = lying_node(server.addr, TOKEN, "slow", &dir, None, false, |_| {}).await;
    wait_complete(&server).await;

    // Nodes that claim a name already taken get it numbered; control and bidi characters go.
    let a = raw_node(&server, "slow").await;
    let b = raw_node(&server, "sl\u{202E}ow\u{0}").await;
    let mut got = names(&server, 3).await;
    got.sort();
    assert_eq!(got, ["slow", "slow (2)", "slow (3)"]);
    drop((a, b));
    names(&server, 1).await;

    // 200 nodes join and leave over the WebSocket: nothing stays per departed connection.
    for i in 0..200 {
        let mut ws = raw_node(&server, "laptop").await;
        // The welcome says it was registered.
        let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap();
        assert!(first.is_some(), "node {i} got no welcome");
        drop(ws);
    }
    names(&server, 1).await;
    let held = server.coord.held_handles();
    assert_eq!(held.links, 1, "one channel per connected node: {held:?}");

    // Clients that hang up while a step is in flight leave no slot waiting for it.
    node.set(Some(slow(Duration::from_millis(100))));
    for _ in 0..5 {
        let r = post(
            &base,
            "/api/generate",
            Some("application/json"),
            None,
            r#"{"prompt":"hello world","max_tokens":50,"temperature":0}"#,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let mut body = r.bytes_stream();
        let mut seen = String::new();
        while !seen.contains("\"token\"") {
            seen.push_str(&String::from_utf8_lossy(
                &body.next().await.unwrap().unwrap(),
            ));
        }
        drop(body);
        for _ in 0..200 {
            if status_json(&server.coord)["sessions"]
                .as_array()
                .unwrap()
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            status_json(&server.coord)["sessions"]
                .as_array()
                .unwrap()
                .is_empty(),
            "the session ended"
        );
    }
    let held = server.coord.held_handles();
    assert_eq!(
        held.waiters, 0,
        "no session waits, so no step slot is held: {held:?}"
    );
}

/// The figure of docs/RELIABILITY.md (ignored: it takes a while and measures, not checks, in
/// CI's terms): this process's memory, coordinator included, over 3,200 nodes joining and
/// leaving over the WebSocket in rounds of 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn join_churn_memory_figure() {
    use futures_util::StreamExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let server = common::cluster::serve_coordinator(config(&dir)).await;
    let mut levels = Vec::new();
    for round in 0..16 {
        for i in 0..200 {
            let mut ws = raw_node(&server, &format!("node-{round}-{i}")).await;
            tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap();
            drop(ws);
        }
        names(&server, 0).await;
        levels.push(common::rss_kb("/proc/self/status"));
    }
    eprintln!("RSS (kB) after each round of 200 joins and leaves: {levels:?}");
    let held = server.coord.held_handles();
    assert_eq!(held.links, 0, "{held:?}");
    let (first, last) = (levels[1] as f64, *levels.last().unwrap() as f64);
    assert!(
        last <= first * 1.05,
        "memory grew from {first} kB (after 400 joins) to {last} kB: {levels:?}"
    );
}
