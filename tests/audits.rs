//! Audits by recomputation (issue 12) with real CPU nodes on the tiny synthetic Llama: the
//! coordinator recomputes hops on its own CPU engine and compares them with what nodes
//! returned, so a node whose outputs are wrong but well-formed (nothing a cheap check sees)
//! cannot change an answer.
//!
//! - A liar from its first step, as the first, middle or last hop: every answer equals the
//!   CPU engine's, the liar is evicted, banned, and holds nothing.
//! - A node that behaves through its probation, then lies on one step in ten: evicted within
//!   100 generated tokens at the default audit rate.
//! - Honest pipelines of CPU and of GPU (lavapipe) nodes, every step audited, with each wire
//!   encoding: never accused in 500 audited steps of each node (the browser's: tests/browser.rs).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::cluster::{CpuNode, Server, audits_passed, audits_settled, cpu_node, node_id};
use common::liar::{Liar, Rewrite, edit_activation, edit_top_logits, frames, lying_node};
use common::tiny_llama;
use synapse::coordinator::events::Event;
use synapse::coordinator::http::status_json;
use synapse::coordinator::session::GenerateEvent;
use synapse::coordinator::state::AuditConfig;
use synapse::coordinator::wire::WireEncoding;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::engine::ShardExecutor;
use synapse::engine::gpu::{GpuContext, GpuOptions, GpuShard};
use synapse::protocol::Frame;
use synapse::sampling::SamplingParams;

const TOKEN: &str = "audits-join-token";
const PROMPT: &str = "hello world";
const TOKENS: usize = 24;

fn config(dir: &Path, encoding: WireEncoding, audit: AuditConfig) -> CoordinatorConfig {
    let mut cfg = CoordinatorConfig::new(dir.to_path_buf(), TOKEN.into());
    cfg.encoding = encoding;
    cfg.step_timeout = Duration::from_secs(10);
    cfg.pipeline_timeout = Duration::from_secs(30);
    cfg.audit = Some(audit);
    cfg
}

fn url(server: &Server) -> String {
    format!("ws://{}/ws?token={TOKEN}", server.addr)
}

/// Waits until every shard is ready on a node of `holders` (in shard order), nothing moving.
async fn wait_holders(coord: &Coordinator, holders: &[u64]) {
    for _ in 0..600 {
        let s = status_json(coord);
        let shards = s["shards"].as_array().unwrap();
        let now: Vec<Option<u64>> = shards.iter().map(|x| x["node"].as_u64()).collect();
        let settled = shards
            .iter()
            .all(|x| x["state"] == "ready" && x["moving_to"].is_null());
        if settled && now.iter().copied().eq(holders.iter().map(|h| Some(*h))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("shards never placed on {holders:?}: {}", status_json(coord));
}

/// What one generation returned: its ids (the `Done` event's), the ids streamed as `Token`
/// events, or the error that ended it.
#[derive(Debug)]
struct Answer {
    done: Result<Vec<u32>, String>,
    streamed: Vec<u32>,
}

async fn generate(coord: &Coordinator, max_tokens: usize, stream: bool) -> Answer {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let req = serde_json::from_value(serde_json::json!({
        "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0, "stream": stream,
    }))
    .unwrap();
    let c = coord.clone();
    tokio::spawn(async move { c.generate(req, tx).await });
    let mut streamed = Vec::new();
    while let Some(e) = rx.recv().await {
        match e {
            GenerateEvent::Token { id, .. } if id != u32::MAX => streamed.push(id),
            GenerateEvent::Done { ids, .. } => {
                return Answer {
                    done: Ok(ids),
                    streamed,
                };
            }
            GenerateEvent::Error { message } | GenerateEvent::Unavailable { message, .. } => {
                return Answer {
                    done: Err(message),
                    streamed,
                };
            }
            _ => {}
        }
    }
    Answer {
        done: Err("no done event".into()),
        streamed,
    }
}

/// Hidden states nudged by 20% of each row's size in a few columns: well-formed, finite, of
/// the hop's usual scale (no cheap check sees it), and wrong.
fn nudge(f: &Frame) -> Option<Vec<u8>> {
    edit_activation(f, |a| {
        let c = a.cols as usize;
        for row in a.data.chunks_mut(c) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            for x in row.iter_mut().step_by(5) {
                *x += 0.2 * norm / (c as f32 / 5.0).sqrt();
            }
        }
    })
}

fn nudge_hidden() -> Rewrite {
    frames(|_, f| nudge(f))
}

/// Top logits whose best entry claims the id of the worst one returned (and the reverse):
/// ordered, in the vocabulary, plausible values, a different greedy token.
fn swap_top() -> Rewrite {
    frames(|_, f| {
        edit_top_logits(f, |t| {
            let k = t.entries.len() / t.rows;
            for row in t.entries.chunks_mut(k) {
                let last = row[k - 1].id;
                row[k - 1].id = row[0].id;
                row[0].id = last;
            }
        })
    })
}

/// A cluster of one node per shard in placement order; `liar` is the index of the lying one.
struct Cluster {
    server: Server,
    liar: Liar,
    liar_id: u64,
    honest: Vec<(CpuNode, u64)>,
}

async fn cluster(dir: &Path, cfg: CoordinatorConfig, shards: usize, liar_at: usize) -> Cluster {
    let server = common::cluster::serve_coordinator(cfg).await;
    let coord = server.coord.clone();
    let mut ids = Vec::new();
    let mut honest = Vec::new();
    let mut liar = None;
    // Placement gives the first shards to the node that joined first.
    for i in 0..shards {
        let name = format!("node-{i}");
        if i == liar_at {
            liar = Some(lying_node(server.addr, TOKEN, &name, dir, None, false, |_| {}).await);
        } else {
            honest.push(cpu_node(url(&server), &name, Some(dir), dir));
        }
        let id = node_id(&coord, &name).await;
        ids.push(id);
        // The next node joins only once this one holds its share, so the order is placement's.
        wait_holders_prefix(&coord, id).await;
    }
    wait_holders(&coord, &ids).await;
    let liar_id = ids[liar_at];
    let honest = honest
        .into_iter()
        .zip(ids.iter().copied().filter(|&i| i != liar_id))
        .collect();
    Cluster {
        server,
        liar: liar.unwrap(),
        liar_id,
        honest,
    }
}

/// Waits until node `id` holds some ready shard and nothing loads.
async fn wait_holders_prefix(coord: &Coordinator, id: u64) {
    for _ in 0..600 {
        let s = status_json(coord);
        let shards = s["shards"].as_array().unwrap();
        let loading = shards
            .iter()
            .any(|x| x["state"] == "loading" || !x["moving_to"].is_null());
        if !loading && shards.iter().any(|x| x["node"] == id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node {id} never got a shard: {}", status_json(coord));
}

fn nodes_left(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<(u64, String)> {
    let mut left = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::NodeLeft { node, reason } = e {
            left.push((node, reason));
        }
    }
    left
}

/// Runs `runs` fresh clusters with a liar from the first step at `liar_at` of `shards` hops;
/// each answer (streamed on even runs, verified on odd ones) must be the CPU engine's.
async fn always_lying(
    case: &str,
    shards: usize,
    liar_at: usize,
    rewrite: fn() -> Rewrite,
    runs: usize,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), shards);
    let want = common::cpu_engine_ids(&dir, PROMPT, &SamplingParams::default(), TOKENS);
    for run in 0..runs {
        let c = cluster(
            &dir,
            config(&dir, WireEncoding::F32, AuditConfig::default()),
            shards,
            liar_at,
        )
        .await;
        let coord = c.server.coord.clone();
        let mut events = coord.subscribe();
        c.liar.set(Some(rewrite()));
        let stream = run % 2 == 0;
        let got = generate(&coord, TOKENS, stream).await;
        let left = nodes_left(&mut events);
        assert_eq!(
            got.done.as_ref(),
            Ok(&want),
            "{case} run {run}: {got:?}, left {left:?}"
        );
        assert_eq!(got.streamed, want, "{case} run {run}: the streamed tokens");
        let reason = left
            .iter()
            .find(|(n, _)| *n == c.liar_id)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{case} run {run}: the liar stayed: {left:?}"));
        assert!(
            reason.contains("failed an audit"),
            "{case} run {run}: {reason}"
        );
        assert!(
            left.iter().all(|(n, _)| *n == c.liar_id),
            "{case} run {run}: an honest node was evicted: {left:?}"
        );
        let s = status_json(&coord);
        let holders: BTreeSet<u64> = s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["node"].as_u64())
            .collect();
        assert!(
            !holders.contains(&c.liar_id),
            "{case} run {run}: the liar holds a shard: {s}"
        );
        assert!(
            s["banned"].to_string().contains(&format!("node-{liar_at}")),
            "{case} run {run}: the ban is listed: {}",
            s["banned"]
        );
        assert!(s["audits"]["failed"].as_u64().unwrap() >= 1);
        eprintln!(
            "{case} run {run}: equal, liar evicted ({} lies told): {reason}",
            c.liar.lies.load(Ordering::SeqCst)
        );
        let _ = c.liar.node.stop.send(true);
        for (n, _) in &c.honest {
            let _ = n.stop.send(true);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_from_the_first_step_as_first_hop_cannot_change_the_answer() {
    always_lying("first hop", 2, 0, nudge_hidden, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_from_the_first_step_as_middle_hop_cannot_change_the_answer() {
    always_lying("middle hop", 3, 1, nudge_hidden, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_from_the_first_step_as_last_hop_cannot_change_the_answer() {
    always_lying("last hop", 2, 1, swap_top, 20).await;
}

/// Behaves for `honest_frames` replies, then nudges one reply in ten.
fn sometimes(honest_frames: usize, lies: Arc<AtomicUsize>) -> Rewrite {
    frames(move |seen, f| {
        let n = seen.frames_before;
        if n < honest_frames || n % 10 != 9 {
            return None;
        }
        lies.fetch_add(1, Ordering::SeqCst);
        nudge(f)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lies_once_in_ten_steps_after_probation_is_caught_within_100_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let cfg = AuditConfig::default();
    let runs = 20;
    let mut caught = 0;
    let mut report = Vec::new();
    for run in 0..runs {
        let c = cluster(&dir, config(&dir, WireEncoding::F32, cfg), 2, 0).await;
        let coord = c.server.coord.clone();
        let lies = Arc::new(AtomicUsize::new(0));
        // Honest through probation (one reply per step) and a little more.
        c.liar.set(Some(sometimes(
            cfg.probation_steps as usize + 4,
            lies.clone(),
        )));
        let mut events = coord.subscribe();
        let mut after_first_lie = 0usize;
        let mut evicted = false;
        while after_first_lie < 100 {
            let lies_before = lies.load(Ordering::SeqCst);
            let got = generate(&coord, TOKENS, true).await;
            if lies_before > 0 || lies.load(Ordering::SeqCst) > 0 {
                after_first_lie += got.streamed.len();
            }
            if nodes_left(&mut events).iter().any(|(n, _)| *n == c.liar_id) {
                evicted = true;
                break;
            }
            if let Err(e) = &got.done {
                assert!(e.contains("failed verification"), "run {run}: {e}");
            }
        }
        report.push((evicted, after_first_lie, lies.load(Ordering::SeqCst)));
        caught += evicted as usize;
        let _ = c.liar.node.stop.send(true);
        for (n, _) in &c.honest {
            let _ = n.stop.send(true);
        }
    }
    eprintln!("(evicted, tokens after the first lie, lies told) per run: {report:?}");
    assert!(
        caught >= 19,
        "caught in {caught} of {runs} runs: {report:?}"
    );
}

/// Generations (streamed and not, alternating) until each of `nodes` has passed `steps`
/// audits; then nobody has failed one, none was skipped, no node left. Returns the generations.
async fn never_accused(
    coord: &Coordinator,
    encoding: WireEncoding,
    nodes: &[u64],
    steps: u64,
) -> usize {
    let mut events = coord.subscribe();
    let mut runs = 0;
    while !nodes.iter().all(|&n| audits_passed(coord, n) >= steps) {
        assert!(
            runs < 200,
            "{encoding:?}: audits never reached {steps} per node: {}",
            status_json(coord)["audits"]
        );
        let got = generate(coord, 32, runs % 2 == 0).await;
        assert!(got.done.is_ok(), "{encoding:?}: {got:?}");
        runs += 1;
    }
    let s = audits_settled(coord).await;
    assert_eq!(
        s["audits"]["in_progress"], 0,
        "{encoding:?}: {}",
        s["audits"]
    );
    let left = nodes_left(&mut events);
    assert!(left.is_empty(), "{encoding:?}: nodes left: {left:?}");
    assert_eq!(s["audits"]["failed"], 0, "{encoding:?}: {}", s["audits"]);
    assert_eq!(s["audits"]["skipped"], 0, "{encoding:?}: {}", s["audits"]);
    eprintln!("{encoding:?}: {runs} generations, audits {}", s["audits"]);
    runs
}

const EVERY_STEP: AuditConfig = AuditConfig {
    rate: 1.0,
    probation_steps: 16,
};

/// Honest CPU nodes (one behind the proxy, relaying untouched), every step audited, each wire
/// encoding, a prompt that repeats itself (so speculative drafts are verified and rejected
/// drafts truncated): 500 audited steps of each node, none accused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_pipeline_is_never_accused_in_500_audited_steps_per_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    for encoding in [WireEncoding::F32, WireEncoding::Int8, WireEncoding::Rice] {
        let c = cluster(&dir, config(&dir, encoding, EVERY_STEP), 2, 1).await;
        let mut nodes: Vec<u64> = c.honest.iter().map(|(_, id)| *id).collect();
        nodes.push(c.liar_id);
        never_accused(&c.server.coord, encoding, &nodes, 500).await;
        let _ = c.liar.node.stop.send(true);
        for (n, _) in &c.honest {
            let _ = n.stop.send(true);
        }
    }
}

/// A node running the WGSL engine (lavapipe here) for `dir`'s shards.
fn gpu_node(url: String, name: &str, dir: &Path, ctx: Arc<GpuContext>) -> CpuNode {
    common::cluster::cpu_node_with(url, name, Some(dir), dir, move |c| {
        c.backend = "gpu".into();
        c.adapter = ctx.describe();
        c.loader = Arc::new(move |d: &Path, m: &splitter::Manifest, i: usize| {
            Ok(Box::new(GpuShard::load(ctx.clone(), d, m, i)?) as Box<dyn ShardExecutor>)
        });
    })
}

/// The same with two GPU nodes (the WGSL engine on lavapipe): the hidden states they send and
/// the top logits they pick, against the coordinator's CPU engine, stay within each encoding's
/// tolerance for 500 audited steps of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_gpu_pipeline_is_never_accused_in_500_audited_steps_per_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_llama(tmp.path(), 2);
    let ctx = GpuContext::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe on CI)");
    for encoding in [WireEncoding::F32, WireEncoding::Int8, WireEncoding::Rice] {
        let server = common::cluster::serve_coordinator(config(&dir, encoding, EVERY_STEP)).await;
        let coord = server.coord.clone();
        let mut nodes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..2 {
            let name = format!("gpu-{i}");
            nodes.push(gpu_node(url(&server), &name, &dir, ctx.clone()));
            let id = node_id(&coord, &name).await;
            wait_holders_prefix(&coord, id).await;
            ids.push(id);
        }
        wait_holders(&coord, &ids).await;
        never_accused(&coord, encoding, &ids, 500).await;
        for n in &nodes {
            let _ = n.stop.send(true);
        }
    }
}
