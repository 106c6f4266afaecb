//! Speculative decoding through real native nodes on loopback, on the default model: a prompt
//! that asks for a paragraph to be repeated gets most of its tokens from accepted drafts, and
//! the ids are those of plain decoding and of the single-process CPU engine, greedy and seeded;
//! a node killed and a shard moved in the middle of a speculative generation change nothing;
//! `/api/status` and the OpenAI API's usage report the drafts; a node that ignores `truncate`
//! is caught by the step that follows, not by a wrong answer.

mod common;

use common::cluster::{CpuNode, Server, cpu_node};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use synapse::coordinator::events::Event;
use synapse::coordinator::session::{GenerateEvent, GenerateRequest};
use synapse::coordinator::wire::CoordinatorMessage;
use synapse::coordinator::wire::WireEncoding;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::sampling::SamplingParams;

const TOKEN: &str = "spec-token";

/// The benchmark's repeat-this-paragraph prompt: its answer is mostly a copy of the prompt.
fn repeat_prompt() -> &'static str {
    synapse::bench_distributed::TASKS
        .iter()
        .find(|(name, _)| *name == "repeat")
        .expect("the repeat task")
        .1
}

struct Cluster {
    coord: Coordinator,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// What a generation returned.
#[derive(Debug, Clone)]
struct Done {
    ids: Vec<u32>,
    text: String,
    drafted: usize,
    accepted: usize,
}

impl Cluster {
    /// f32 on the wire: exact hops, so every setup must give the CPU engine's ids.
    async fn start(dir: &Path) -> Cluster {
        let mut cfg = CoordinatorConfig::new(dir.to_path_buf(), TOKEN.into());
        cfg.encoding = WireEncoding::F32;
        cfg.step_timeout = Duration::from_secs(30);
        cfg.pipeline_timeout = Duration::from_secs(60);
        let Server { coord, addr, stop } = common::cluster::serve_coordinator(cfg).await;
        Cluster {
            coord,
            addr,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws?token={TOKEN}", self.addr)
    }

    fn node(&self, name: &str, dir: &Path) -> CpuNode {
        cpu_node(self.url(), name, Some(dir), dir)
    }

    fn status(&self) -> serde_json::Value {
        synapse::coordinator::http::status_json(&self.coord)
    }

    /// Waits until `nodes` nodes each hold a shard and the pipeline is complete and still.
    async fn wait_complete(&self, nodes: usize) {
        common::cluster::wait_complete(&self.coord, nodes).await
    }

    /// Starts a generation of the repeat prompt; its result comes from the returned task.
    fn spawn(
        &self,
        max_tokens: usize,
        sampling: SamplingParams,
        speculate: bool,
    ) -> tokio::task::JoinHandle<Done> {
        self.spawn_prompt(repeat_prompt(), max_tokens, sampling, speculate)
    }

    fn spawn_prompt(
        &self,
        prompt: &str,
        max_tokens: usize,
        sampling: SamplingParams,
        speculate: bool,
    ) -> tokio::task::JoinHandle<Done> {
        let coord = self.coord.clone();
        let req = GenerateRequest {
            stream: true,
            prompt: prompt.into(),
            max_tokens,
            sampling,
            speculate: Some(speculate),
        };
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(256);
            tokio::spawn(async move { coord.generate(req, tx).await });
            while let Some(e) = rx.recv().await {
                match e {
                    GenerateEvent::Done {
                        ids,
                        text,
                        drafted,
                        accepted,
                        ..
                    } => {
                        return Done {
                            ids,
                            text,
                            drafted,
                            accepted,
                        };
                    }
                    GenerateEvent::Error { message } => panic!("generation failed: {message}"),
                    _ => {}
                }
            }
            panic!("no done event")
        })
    }

    /// `POST /v1/completions` with `body`; the response's JSON.
    async fn completion(&self, body: &serde_json::Value) -> serde_json::Value {
        let text = reqwest::Client::new()
            .post(format!("http://{}/v1/completions", self.addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    async fn generate(&self, max_tokens: usize, sampling: SamplingParams, speculate: bool) -> Done {
        tokio::time::timeout(
            Duration::from_secs(300),
            self.spawn(max_tokens, sampling, speculate),
        )
        .await
        .expect("the generation finished in time")
        .unwrap()
    }
}

/// The default model in `n` shards.
fn split_default(tmp: &Path, n: usize) -> PathBuf {
    common::default_model();
    common::split(&synapse::fetch::default_gguf_path(), tmp, n)
}

/// Ids of the single-process CPU engine for the repeat prompt.
fn reference_ids(dir: &Path, sampling: &SamplingParams, max_tokens: usize) -> Vec<u32> {
    common::cpu_engine_ids(dir, repeat_prompt(), sampling, max_tokens)
}

const TOKENS: usize = 32;

fn seeded() -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        top_k: 40,
        seed: 1234,
        ..SamplingParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_accepted_and_the_output_is_the_plain_one_greedy_and_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 2);
    let want = reference_ids(&dir, &SamplingParams::default(), TOKENS);
    let cluster = Cluster::start(&dir).await;
    let _a = cluster.node("a", &dir);
    let _b = cluster.node("b", &dir);
    cluster.wait_complete(2).await;

    let plain = cluster
        .generate(TOKENS, SamplingParams::default(), false)
        .await;
    assert_eq!(plain.ids, want, "plain decoding vs the CPU engine");
    assert_eq!((plain.drafted, plain.accepted), (0, 0), "speculation off");
    let spec = cluster
        .generate(TOKENS, SamplingParams::default(), true)
        .await;
    assert_eq!(
        spec.ids, want,
        "speculative greedy ids vs plain: {:?} vs {:?}",
        spec.text, plain.text
    );
    assert!(
        spec.accepted * 2 >= TOKENS,
        "most of a repeated paragraph comes from accepted drafts: {} of {} drafted, {} tokens \
         ({:?})",
        spec.accepted,
        spec.drafted,
        spec.ids.len(),
        spec.text
    );
    assert!(spec.drafted >= spec.accepted);

    // Seeded sampling: the token at each position is drawn from the seed and the position
    // alone, so drafts verified by sampling give the very same text.
    let want_seeded = reference_ids(&dir, &seeded(), TOKENS);
    let plain = cluster.generate(TOKENS, seeded(), false).await;
    assert_eq!(plain.ids, want_seeded, "seeded plain vs the CPU engine");
    let spec = cluster.generate(TOKENS, seeded(), true).await;
    assert_eq!(spec.ids, want_seeded, "seeded speculative vs plain");

    // The status counts every session's drafts.
    let s = cluster.status();
    let drafted = s["speculation"]["drafted"].as_u64().unwrap();
    let accepted = s["speculation"]["accepted"].as_u64().unwrap();
    assert!(
        accepted >= spec.accepted as u64 && drafted >= accepted,
        "{s}"
    );
    assert_eq!(s["speculation"]["enabled"], true);

    // The OpenAI API reports them as predicted-output tokens ...
    let body = serde_json::json!({
        "prompt": repeat_prompt(),
        "max_tokens": 16,
        "temperature": 0,
    });
    let details = cluster.completion(&body).await["usage"]["completion_tokens_details"].clone();
    assert!(
        details["accepted_prediction_tokens"].as_u64().unwrap() > 0,
        "{details}"
    );
    assert!(
        details["rejected_prediction_tokens"].as_u64().is_some(),
        "{details}"
    );
    // ... and a request can turn it off.
    let mut off = body.clone();
    off["speculate"] = serde_json::json!(false);
    let details = cluster.completion(&off).await["usage"]["completion_tokens_details"].clone();
    assert_eq!(details["accepted_prediction_tokens"], 0, "{details}");
}

/// Waits for the `n`-th sampled token of any session.
async fn after_tokens(events: &mut tokio::sync::broadcast::Receiver<Event>, n: usize) {
    let mut sampled = 0;
    while sampled < n {
        if let Ok(Event::TokenSampled { .. }) = events.recv().await {
            sampled += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_and_a_move_during_speculation_lose_and_repeat_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 3);
    let want = reference_ids(&dir, &SamplingParams::default(), TOKENS);
    let cluster = Cluster::start(&dir).await;
    let _a = cluster.node("a", &dir);
    let b = cluster.node("b", &dir);
    cluster.wait_complete(2).await;

    // Kill b after the sixth token: the session replays on a alone, drafts and all.
    let mut events = cluster.coord.subscribe();
    let generation = cluster.spawn(TOKENS, SamplingParams::default(), true);
    after_tokens(&mut events, 6).await;
    b.task.abort();
    let done = tokio::time::timeout(Duration::from_secs(300), generation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.ids, want, "after a failover: {:?}", done.text);
    assert!(done.accepted > 0, "it speculated: {done:?}");
    let mut replayed = false;
    while let Ok(e) = events.try_recv() {
        replayed |= matches!(e, Event::SessionReplayed { .. });
    }
    assert!(replayed, "the session was replayed");

    // A new node joins and takes shards; then move shard 1 while a generation speculates.
    let _c = cluster.node("c", &dir);
    cluster.wait_complete(2).await;
    let s = cluster.status();
    let from = s["shards"][1]["node"].as_u64().unwrap();
    let to = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .find(|&n| n != from)
        .unwrap();
    let mut events = cluster.coord.subscribe();
    let generation = cluster.spawn(TOKENS, SamplingParams::default(), true);
    after_tokens(&mut events, 4).await;
    cluster.coord.move_shard(1, to).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(300), generation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.ids, want, "with a move in the middle: {:?}", done.text);
    let mut moved = false;
    while let Ok(e) = events.try_recv() {
        moved |= matches!(e, Event::ShardReady { shard: 1, node } if node == to);
    }
    assert!(
        moved,
        "shard 1 was loaded on node {to} during the generation"
    );
}

/// A node that ignores `truncate` (a stale cache) is caught: its next step fails on the
/// position, the session replays, and the text is still right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_keeps_rejected_drafts_cannot_change_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = split_default(tmp.path(), 2);
    // A list whose pattern breaks: the lookup drafts "3, 1, 2, 4" after "1, 2," and the model
    // disagrees, so drafts are rejected and the caches must be cut.
    let prompt = "Counting: 1, 2, 3, 1, 2, 4, 1, 2, 5, 1, 2,";
    let want = common::cpu_engine_ids(&dir, prompt, &SamplingParams::default(), 24);
    let cluster = Cluster::start(&dir).await;
    let _a = cluster.node("a", &dir);
    let liar =
        common::liar::lying_node(cluster.addr, TOKEN, "no-truncate", &dir, None, true, |_| {})
            .await;
    liar.drop_down(Some(Arc::new(|m: &CoordinatorMessage| {
        matches!(m, CoordinatorMessage::Truncate { .. })
    })));
    cluster.wait_complete(2).await;
    let mut events = cluster.coord.subscribe();
    let done = tokio::time::timeout(
        Duration::from_secs(300),
        cluster.spawn_prompt(prompt, 24, SamplingParams::default(), true),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.ids, want, "{:?}", done.text);
    let mut failed = 0;
    while let Ok(e) = events.try_recv() {
        failed += usize::from(matches!(e, Event::SessionReplayed { .. }));
    }
    assert!(
        done.drafted > done.accepted,
        "a draft was rejected, so a truncate was sent: {done:?}"
    );
    assert!(
        failed > 0,
        "the stale cache made a step fail and the session replay"
    );
}
