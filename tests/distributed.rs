//! The coordinator with native nodes on loopback (ports chosen by the OS), on the real default
//! model: greedy output identical to the single-process CPU engine for 2 and 3 shards, failover
//! when a node dies mid-generation, a shard moved mid-generation without losing or repeating a
//! token, concurrent generations over the default (RICE) wire with every cache freed, and
//! hostile node connections refused without disturbing the others.

mod common;

use common::cluster::{CpuNode, Server, cpu_node};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use synapse::coordinator::events::Event;
use synapse::coordinator::session::GenerateEvent;
use synapse::coordinator::wire::WireEncoding;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::sampling::SamplingParams;
use tokio_tungstenite::tungstenite::Message;

const PROMPT: &str = "The capital of France is";
const TOKEN: &str = "test-join-token";

/// A coordinator serving on an OS-chosen port.
struct Cluster {
    coord: Coordinator,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Cluster {
    /// With the coordinator's default wire encoding (RICE).
    async fn start(model_dir: &Path) -> Cluster {
        let default = CoordinatorConfig::new(model_dir.to_path_buf(), TOKEN.into()).encoding;
        Self::start_with(model_dir, default).await
    }

    async fn start_with(model_dir: &Path, encoding: WireEncoding) -> Cluster {
        let mut cfg = CoordinatorConfig::new(model_dir.to_path_buf(), TOKEN.into());
        cfg.encoding = encoding;
        cfg.step_timeout = Duration::from_secs(30);
        cfg.pipeline_timeout = Duration::from_secs(60);
        let Server { coord, addr, stop } = common::cluster::serve_coordinator(cfg).await;
        Cluster {
            coord,
            addr,
            _stop: stop,
        }
    }

    fn url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    /// Starts a CPU node; `model_dir` lets it skip downloads, `None` makes it download.
    fn node(&self, name: &str, model_dir: Option<&Path>, cache: &Path) -> CpuNode {
        cpu_node(self.url(TOKEN), name, model_dir, cache)
    }

    /// Waits until `nodes` nodes are connected, each holding a shard, and the pipeline is complete.
    async fn wait_complete(&self, nodes: usize) {
        common::cluster::wait_complete(&self.coord, nodes).await
    }

    async fn generate(&self, prompt: &str, max_tokens: usize) -> (Vec<u32>, String) {
        let body =
            serde_json::json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0});
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/generate", self.addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let text = resp.text().await.unwrap();
        for line in text.lines() {
            match serde_json::from_str::<GenerateEvent>(line).unwrap() {
                GenerateEvent::Done { ids, text, .. } => return (ids, text),
                GenerateEvent::Error { message } => panic!("generation failed: {message}"),
                _ => {}
            }
        }
        panic!("no `done` line in {text}");
    }
}

fn status_sessions_closed(cluster: &Cluster) -> bool {
    synapse::coordinator::http::status_json(&cluster.coord)["sessions"]
        .as_array()
        .unwrap()
        .is_empty()
}

/// Greedy ids of the single-process CPU engine on the default model.
fn reference_ids(max_tokens: usize) -> Vec<u32> {
    let model = common::default_model();
    common::cpu_engine_ids(&model, PROMPT, &SamplingParams::default(), max_tokens)
}

fn split_default(tmp: &Path, n: usize) -> PathBuf {
    common::default_model();
    common::split(&synapse::fetch::default_gguf_path(), tmp, n)
}

/// With f32 on the wire the hops are exact, so the output is the CPU engine's to the bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_match_the_cpu_engine_for_2_and_3_shards() {
    let want = reference_ids(10);
    let tmp = tempfile::tempdir().unwrap();
    for n in [2, 3] {
        let dir = split_default(tmp.path(), n);
        let cluster = Cluster::start_with(&dir, WireEncoding::F32).await;
        // One node reads the coordinator's directory; the other downloads its shards over HTTP.
        let a = cluster.node("a", Some(&dir), tmp.path());
        let b = cluster.node("b", None, &tmp.path().join(format!("cache-{n}")));
        cluster.wait_complete(2).await;
        let status = synapse::coordinator::http::status_json(&cluster.coord);
        let holders: std::collections::BTreeSet<u64> = status["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["node"].as_u64().unwrap())
            .collect();
        assert_eq!(holders.len(), 2, "both nodes hold shards: {status}");
        let (ids, text) = cluster.generate(PROMPT, 10).await;
        assert_eq!(ids, want, "{n} shards: {text:?}");
        assert!(text.starts_with(" Paris."), "{text:?}");
        let done = status_sessions_closed(&cluster);
        assert!(done, "no session left open");
        for h in [a, b] {
            let _ = h.stop.send(true);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_mid_generation_fails_over_without_losing_a_token() {
    let want = reference_ids(16);
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 2);
    // int8 hops: the failover also exercises the node's engine-quantized int8 output.
    let cluster = Cluster::start_with(&dir, WireEncoding::Int8).await;
    let _a = cluster.node("a", Some(&dir), tmp.path());
    let b = cluster.node("b", Some(&dir), tmp.path());
    cluster.wait_complete(2).await;
    let mut events = cluster.coord.subscribe();
    let generation = {
        let coord = cluster.coord.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let req = serde_json::from_value(
                serde_json::json!({"prompt": PROMPT, "max_tokens": 16, "temperature": 0.0}),
            )
            .unwrap();
            tokio::spawn(async move { coord.generate(req, tx).await });
            let mut done = None;
            while let Some(e) = rx.recv().await {
                match e {
                    GenerateEvent::Done { ids, text, .. } => done = Some((ids, text)),
                    GenerateEvent::Error { message } => panic!("generation failed: {message}"),
                    _ => {}
                }
            }
            done.expect("a done event")
        })
    };
    // Kill node b after the fourth token.
    let mut sampled = 0;
    while sampled < 4 {
        if let Ok(Event::TokenSampled { .. }) = events.recv().await {
            sampled += 1;
        }
    }
    b.task.abort();
    let (ids, text) = tokio::time::timeout(Duration::from_secs(180), generation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids, want, "text after failover: {text:?}");
    let mut replayed = false;
    while let Ok(e) = events.try_recv() {
        replayed |= matches!(e, Event::SessionReplayed { .. });
    }
    assert!(replayed, "the session was replayed after the node died");
}

/// Long enough that the moved shard is loaded (a second on this machine) well before the end.
const MOVE_TOKENS: usize = 40;

/// Dragging a shard to another node while a generation runs (the app's gesture, through the
/// HTTP API): the target loads it, the route switches between two tokens, the source frees it,
/// and the text is the one without a move. A move to a node that does not exist is refused and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_shard_mid_generation_loses_and_repeats_no_token() {
    let want = reference_ids(MOVE_TOKENS);
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 3);
    // f32 on the wire: exact hops, so any lost, repeated or mis-cached token changes the text.
    let cluster = Cluster::start_with(&dir, WireEncoding::F32).await;
    let a = cluster.node("a", Some(&dir), tmp.path());
    let b = cluster.node("b", Some(&dir), tmp.path());
    cluster.wait_complete(2).await;
    let status = synapse::coordinator::http::status_json(&cluster.coord);
    let holder = |s: &serde_json::Value, i: usize| s["shards"][i]["node"].as_u64().unwrap();
    let nodes: Vec<u64> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    let from = holder(&status, 1);
    let to = *nodes.iter().find(|&&n| n != from).unwrap();
    let http = reqwest::Client::new();
    let move_to = |node: u64| {
        http.post(format!("http://{}/api/shards/1/move", cluster.addr))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "node": node }).to_string())
            .send()
    };

    let refused = move_to(999).await.unwrap();
    assert_eq!(refused.status(), 409, "a move to a missing node is refused");
    let why = refused.text().await.unwrap();
    assert!(why.contains("no node 999"), "{why}");
    let after = synapse::coordinator::http::status_json(&cluster.coord);
    assert_eq!(
        holder(&after, 1),
        from,
        "a refused move leaves the shard where it was"
    );

    let mut events = cluster.coord.subscribe();
    let generation = {
        let coord = cluster.coord.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let req = serde_json::from_value(
                serde_json::json!({"prompt": PROMPT, "max_tokens": MOVE_TOKENS, "temperature": 0.0}),
            )
            .unwrap();
            tokio::spawn(async move { coord.generate(req, tx).await });
            let mut done = None;
            while let Some(e) = rx.recv().await {
                match e {
                    GenerateEvent::Done { ids, text, .. } => done = Some((ids, text)),
                    GenerateEvent::Error { message } => panic!("generation failed: {message}"),
                    _ => {}
                }
            }
            done.expect("a done event")
        })
    };
    // Move shard 1 after the third token, while the generation goes on.
    let mut sampled = 0;
    while sampled < 3 {
        if let Ok(Event::TokenSampled { .. }) = events.recv().await {
            sampled += 1;
        }
    }
    let accepted = move_to(to).await.unwrap();
    assert_eq!(accepted.status(), 202, "{}", accepted.text().await.unwrap());
    let (ids, text) = tokio::time::timeout(Duration::from_secs(180), generation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids, want, "text with a move in the middle: {text:?}");
    // The move completed: shard 1 is ready on the target, and frames went through it after.
    for _ in 0..600 {
        let s = synapse::coordinator::http::status_json(&cluster.coord);
        if holder(&s, 1) == to && s["shards"][1]["moving_to"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = synapse::coordinator::http::status_json(&cluster.coord);
    assert_eq!(holder(&s, 1), to, "shard 1 moved: {s}");
    assert_eq!(s["shards"][1]["state"], "ready", "{s}");
    let mut ready_on_target = false;
    let mut relayed_by_target_after = false;
    while let Ok(e) = events.try_recv() {
        match e {
            Event::ShardReady { shard: 1, node } if node == to => ready_on_target = true,
            Event::FrameRelayed {
                node, first_shard, ..
            } if ready_on_target && node == to && first_shard <= 1 => {
                relayed_by_target_after = true
            }
            _ => {}
        }
    }
    assert!(ready_on_target, "the target reported shard 1 ready");
    // The source freed it: each node holds exactly the shards the coordinator routes to it.
    let name_of = |id: u64| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n["name"].as_str().unwrap().to_string())
            .unwrap()
    };
    let source = if name_of(from) == "a" { &a } else { &b };
    let held_by_source = (0..3).filter(|&i| holder(&s, i) == from).count();
    for _ in 0..100 {
        if source.stats.shards.load(Ordering::Relaxed) == held_by_source {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        source.stats.shards.load(Ordering::Relaxed),
        held_by_source,
        "the source node freed the moved shard"
    );
    assert!(
        relayed_by_target_after,
        "the route switched to node {to} before the {MOVE_TOKENS} tokens were done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_generations_complete_and_free_every_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 3);
    // The default encoding (RICE) end to end: solo and concurrent runs must agree exactly.
    let cluster = Arc::new(Cluster::start(&dir).await);
    let a = cluster.node("a", Some(&dir), tmp.path());
    let b = cluster.node("b", Some(&dir), tmp.path());
    cluster.wait_complete(2).await;
    let prompts = [
        "The capital of France is",
        "One, two, three,",
        "Water boils at",
        "The largest planet is",
    ];
    // Each prompt alone first, then all four at once: the texts must be the same.
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(cluster.generate(p, 6).await);
    }
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let c = cluster.clone();
            let p = p.to_string();
            tokio::spawn(async move { c.generate(&p, 6).await })
        })
        .collect();
    for (t, want) in tasks.into_iter().zip(&alone) {
        assert_eq!(&t.await.unwrap(), want);
    }
    assert_ne!(alone[0], alone[1]);
    assert!(
        alone[0].1.starts_with(" Paris"),
        "RICE hops keep the answer: {:?}",
        alone[0].1
    );
    // Caches are freed once the sessions close.
    for _ in 0..100 {
        if a.stats.open_sessions.load(Ordering::Relaxed)
            + b.stats.open_sessions.load(Ordering::Relaxed)
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        a.stats.open_sessions.load(Ordering::Relaxed),
        0,
        "node a still holds caches"
    );
    assert_eq!(
        b.stats.open_sessions.load(Ordering::Relaxed),
        0,
        "node b still holds caches"
    );
    assert!(a.stats.steps.load(Ordering::Relaxed) > 0 && b.stats.steps.load(Ordering::Relaxed) > 0);
}

/// Connects a raw WebSocket client with the right token.
async fn raw_client(
    cluster: &Cluster,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(cluster.url(TOKEN))
        .await
        .unwrap()
        .0
}

/// Reads until the server closes; returns the close reason.
async fn close_reason(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return f.reason.to_string(),
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => {
                return String::new();
            }
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the coordinator did not close the connection"),
        }
    }
}

fn hello() -> Message {
    Message::text(
        serde_json::json!({"type": "hello", "version": 1, "name": "evil", "kind": "native", "backend": "cpu",
            "adapter": "x", "memory_bytes": 0, "gflops": 1.0})
        .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_nodes_are_refused_and_others_keep_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 2);
    let cluster = Cluster::start(&dir).await;
    let _good = cluster.node("good", Some(&dir), tmp.path());
    cluster.wait_complete(1).await;

    // Wrong and missing token: HTTP 401; a node with a bad token stops with an error.
    for url in [cluster.url("wrong"), format!("ws://{}/ws", cluster.addr)] {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    let bad = cpu_node(cluster.url("wrong"), "bad", Some(&dir), tmp.path());
    let err = tokio::time::timeout(Duration::from_secs(10), bad.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");

    // A frame before hello.
    let mut ws = raw_client(&cluster).await;
    ws.send(Message::binary(vec![0u8; 30])).await.unwrap();
    assert!(close_reason(&mut ws).await.contains("hello"));
    // A malformed frame after hello.
    let mut ws = raw_client(&cluster).await;
    ws.send(hello()).await.unwrap();
    ws.send(Message::binary(b"SYN1 but not really".to_vec()))
        .await
        .unwrap();
    assert!(close_reason(&mut ws).await.contains("bad frame"));
    // A well-formed frame nobody asked for (wrong order).
    let mut ws = raw_client(&cluster).await;
    ws.send(hello()).await.unwrap();
    let frame = synapse::protocol::Tokens { ids: vec![1, 2] }
        .to_frame(2, 4242)
        .unwrap();
    ws.send(Message::binary(synapse::protocol::encode(&frame)))
        .await
        .unwrap();
    assert!(close_reason(&mut ws).await.contains("not pending"));
    // A bad control message.
    let mut ws = raw_client(&cluster).await;
    ws.send(hello()).await.unwrap();
    ws.send(Message::text("{\"type\": \"shard_ready\", \"shard\": 99}"))
        .await
        .unwrap();
    assert!(close_reason(&mut ws).await.contains("no shard 99"));
    // An oversized frame: the connection is dropped.
    let mut ws = raw_client(&cluster).await;
    ws.send(hello()).await.unwrap();
    let _ = ws.send(Message::binary(vec![0u8; 40 << 20])).await;
    let _ = close_reason(&mut ws).await;

    // The coordinator still serves.
    let (_, text) = cluster.generate(PROMPT, 3).await;
    assert!(text.starts_with(" Paris"), "{text:?}");
}

/// A move the user asked for sticks, even to a slower node, until it is unpinned; then
/// automatic rebalancing takes the shard back (tiny Llama, nodes claiming different speeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_move_to_a_slower_node_sticks_until_unpinned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::split(&common::fixtures().join("llama-hf"), tmp.path(), 3);
    let cluster = Cluster::start_with(&dir, WireEncoding::F32).await;
    let fast_node =
        common::cluster::cpu_node_with(cluster.url(TOKEN), "fast", Some(&dir), tmp.path(), |c| {
            c.gflops = 10.0
        });
    cluster.wait_complete(1).await;
    let slow_node =
        common::cluster::cpu_node_with(cluster.url(TOKEN), "slow", Some(&dir), tmp.path(), |c| {
            c.gflops = 1.0
        });
    let status = || synapse::coordinator::http::status_json(&cluster.coord);
    let id_of = |name: &str| {
        status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["id"].as_u64())
    };
    let mut slow = None;
    for _ in 0..100 {
        slow = id_of("slow");
        if slow.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (fast, slow) = (id_of("fast").unwrap(), slow.expect("the slow node joined"));
    let holders = || -> Vec<Option<u64>> {
        status()["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["node"].as_u64())
            .collect()
    };
    // Ten times faster: the fast node keeps everything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(holders(), vec![Some(fast); 3]);
    let mut events = cluster.coord.subscribe();
    let http = reqwest::Client::new();
    let post = |path: String, body: String| {
        http.post(format!("http://{}{path}", cluster.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post("/api/shards/2/move".into(), format!("{{\"node\": {slow}}}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let settled = |want: Vec<Option<u64>>| {
        let status = &status;
        async move {
            for _ in 0..100 {
                let s = status();
                let done = s["shards"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(&want)
                    .all(|(x, w)| {
                        x["node"].as_u64() == *w
                            && x["state"] == "ready"
                            && x["moving_to"].is_null()
                    });
                if done {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("never placed as {want:?}: {}", status());
        }
    };
    let s = settled(vec![Some(fast), Some(fast), Some(slow)]).await;
    assert_eq!(s["shards"][2]["pinned"].as_u64(), Some(slow), "{s}");
    // It stays: readiness ran the rebalancer, a generation runs through it, time passes.
    let (ids, _) = cluster.generate("hello world", 8).await;
    assert!(!ids.is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        holders(),
        vec![Some(fast), Some(fast), Some(slow)],
        "the pin held"
    );
    let mut pinned_event = false;
    while let Ok(e) = events.try_recv() {
        pinned_event |= e
            == Event::ShardPinned {
                shard: 2,
                node: Some(slow),
            };
    }
    assert!(pinned_event, "the app is told about the pin");
    // Memory the nodes really hold: each reports the weights of what it serves, and no cache
    // once the session closed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status();
    let m = synapse::model::ModelDir::open(&dir).unwrap().manifest;
    for n in s["nodes"].as_array().unwrap() {
        let want: u64 = n["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| m.shards[i.as_u64().unwrap() as usize].bytes)
            .sum();
        assert_eq!(n["held"]["weights_bytes"].as_u64(), Some(want), "{n}");
        assert_eq!(n["held"]["kv_bytes"].as_u64(), Some(0), "{n}");
    }
    // Unpinned, the shard goes back to the fast node.
    let r = post("/api/shards/2/unpin".into(), String::new())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = settled(vec![Some(fast); 3]).await;
    assert!(s["shards"][2]["pinned"].is_null());
    let r = post("/api/shards/9/unpin".into(), String::new())
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    for n in [fast_node, slow_node] {
        let _ = n.stop.send(true);
    }
}

/// Node b measured itself at under half of a's speed (as a node does when it measures while
/// another loads), so placement gives it one shard of four; but a is really the slow one (every
/// frame it returns waits 300 ms, a slow link). The step times show it: b gets more shards
/// while the generation goes on, and the answer is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_measured_itself_under_load_gets_its_share_once_it_proves_faster() {
    let want = reference_ids(24);
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 4);
    let cluster = Cluster::start_with(&dir, WireEncoding::F32).await;
    let slow_link: common::liar::Rewrite = Arc::new(|_, m| match m {
        common::liar::Msg::Binary(b) => vec![
            common::liar::Msg::Sleep(Duration::from_millis(300)),
            common::liar::Msg::Binary(b),
        ],
        other => vec![other],
    });
    let _a = common::liar::lying_node(cluster.addr, TOKEN, "a", &dir, None, false, |_| {}).await;
    cluster.wait_complete(1).await;
    let _b = common::cluster::cpu_node_with(cluster.url(TOKEN), "b", Some(&dir), tmp.path(), |c| {
        c.gflops = 0.4
    });
    cluster.wait_complete(2).await;
    _a.set(Some(slow_link));
    let s = synapse::coordinator::http::status_json(&cluster.coord);
    let b = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "b")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let on_b = |s: &serde_json::Value| {
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["node"] == b)
            .count()
    };
    assert_eq!(on_b(&s), 1, "the modest claim gets one shard: {s}");
    let (ids, text) = cluster.generate(PROMPT, 24).await;
    assert_eq!(ids, want, "{text:?}");
    let mut s = synapse::coordinator::http::status_json(&cluster.coord);
    for _ in 0..100 {
        let settled = s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["moving_to"].is_null() && x["state"] == "ready");
        if on_b(&s) >= 2 && settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        s = synapse::coordinator::http::status_json(&cluster.coord);
    }
    eprintln!(
        "speeds: {}",
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| format!(
                "{} claimed {} learned {} holds {}",
                n["name"], n["gflops"], n["learned_gflops"], n["shards"]
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(
        on_b(&s) >= 2,
        "b got more once its steps showed its speed: {s}"
    );
}
