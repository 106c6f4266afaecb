//! The simulator against reality: real local clusters of 1, 2 and 3 CPU nodes on the default
//! model (SmolLM2-135M, 3 shards) run a greedy generation through the coordinator, and the
//! simulator, given the same devices and the placement the coordinator really made, predicts
//! decode tokens/s and the time to first token. Predictions must be within 25% (decode) and
//! 35% (prefill) of what was measured: a test of the model's quality.
//!
//! This machine is shared and its load moves by 3x from one second to the next, so a speed
//! probed before the run says little about the run. Each node's speed is therefore taken from
//! the same run, and each phase is predicted from the other: the decode prediction uses the
//! speeds the nodes showed on the prompt's step (their prefill hop times), the prefill
//! prediction uses the speeds they showed on decode steps. What is tested is the model itself:
//! how one token's cost relates to a prompt's (the engine's matrix-matrix gain), the fixed costs,
//! attention, and how hops, the network and the coordinator add up.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{Server, serve_coordinator};
use synapse::coordinator::events::Event;
use synapse::coordinator::http::status_json;
use synapse::coordinator::session::{GenerateEvent, GenerateRequest};
use synapse::coordinator::wire::NodeKind;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::engine::ShardExecutor;
use synapse::engine::cpu::CpuShard;
use synapse::model::ModelDir;
use synapse::node::NodeConfig;
use synapse::node::worker::NodeStats;
use synapse::sampling::SamplingParams;
use synapse::sim::predict::{SimDevice, SimOptions};
use synapse::sim::profile::{DeviceProfile, LOOPBACK};
use synapse::sim::timing::compute_s;
use synapse::sim::{ModelShape, ShardShape, simulate, simulate_with};
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "calibration-token";
/// About 60 prompt tokens, and a continuation greedy decoding keeps going with.
const PROMPT: &str = "Here is a list of the countries of Europe with their capital cities, one \
                      per line, in alphabetical order by country: Albania: Tirana. Andorra: \
                      Andorra la Vella. Austria: Vienna. Belarus: Minsk. Belgium: Brussels.";
const GEN_TOKENS: usize = 24;
/// Runs of one cluster size before a miss counts.
const ATTEMPTS: usize = 3;

/// What one cluster run measured.
struct Measured {
    prompt_tokens: usize,
    generated: usize,
    decode_tps: f64,
    prefill_s: f64,
    /// Per node: its prefill hop and its median decode hop, seconds (the coordinator's wait).
    hops: Vec<(u64, f64, f64)>,
    placement: Vec<Option<u64>>,
    nodes: Vec<(u64, String, u64, f64)>,
}

fn node_config(url: String, name: &str, model: &std::path::Path, gflops: f64) -> NodeConfig {
    NodeConfig {
        url,
        name: name.into(),
        kind: NodeKind::Local,
        backend: "cpu".into(),
        adapter: format!("CPU ({} threads)", rayon::current_num_threads()),
        memory_bytes: 4 << 30,
        cache_dir: model.join("unused-cache"),
        model_dir: Some(model.to_path_buf()),
        remeasure: None,
        loader: Arc::new(|dir: &std::path::Path, m: &splitter::Manifest, i: usize| {
            Ok(Box::new(CpuShard::load(dir, m, i)?) as Box<dyn ShardExecutor>)
        }),
        gflops,
        stats: Arc::new(NodeStats::default()),
    }
}

/// Waits until `n` nodes each hold a shard, every shard is ready and nothing moves.
async fn settled(coord: &Coordinator, n: usize) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status_json(coord);
        let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
        let busy = nodes
            .iter()
            .all(|x| x["shards"].as_array().is_some_and(|a| !a.is_empty()));
        let moving = s["shards"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| !x["moving_to"].is_null()));
        if s["complete"] == true && nodes.len() == n && busy && !moving {
            return s;
        }
        assert!(Instant::now() < end, "the cluster did not settle: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_cluster(model: &std::path::Path, n: usize) -> Measured {
    let mut cfg = CoordinatorConfig::new(model.to_path_buf(), TOKEN.into());
    cfg.step_timeout = Duration::from_secs(60);
    let Server { coord, addr, stop } = serve_coordinator(cfg).await;
    let url = format!("ws://{addr}/ws?token={TOKEN}");
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        // Every node reports the same measured speed, as equal machines would.
        let cfg = node_config(url.clone(), &format!("cpu-{i}"), model, 5.0);
        let (tx, rx) = watch::channel(false);
        stops.push(tx);
        tasks.push(tokio::spawn(synapse::node::run(cfg, rx)));
        // Join in order, so node ids follow the names.
        let end = Instant::now() + Duration::from_secs(30);
        while status_json(&coord)["nodes"].as_array().map_or(0, Vec::len) < i + 1 {
            assert!(Instant::now() < end, "node {i} did not join");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let status = settled(&coord, n).await;
    let placement: Vec<Option<u64>> = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_u64())
        .collect();
    let nodes = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_u64().unwrap(),
                x["name"].as_str().unwrap().to_string(),
                x["memory_bytes"].as_u64().unwrap(),
                x["gflops"].as_f64().unwrap(),
            )
        })
        .collect();

    let mut events = coord.subscribe();
    let (tx, mut rx) = mpsc::channel(256);
    let req = GenerateRequest {
        prompt: PROMPT.into(),
        max_tokens: GEN_TOKENS,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
    };
    let c = coord.clone();
    let gen_task = tokio::spawn(async move { c.generate(req, tx).await });
    let mut opened = None;
    let mut prompt_tokens = 0;
    let mut token_times = Vec::new();
    let mut relayed: Vec<(u64, usize, u64)> = Vec::new();
    let end = Instant::now() + Duration::from_secs(240);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(Event::SessionOpened { prompt_tokens: p, .. }) => {
                    opened = Some(Instant::now());
                    prompt_tokens = p;
                }
                Ok(Event::TokenSampled { .. }) => token_times.push(Instant::now()),
                Ok(Event::FrameRelayed { node, tokens, micros, .. }) => {
                    relayed.push((node, tokens, micros))
                }
                Ok(Event::SessionClosed { .. }) => break,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            },
            g = rx.recv() => if let Some(GenerateEvent::Error { message }) = g {
                panic!("generation failed: {message}");
            },
        }
        assert!(Instant::now() < end, "the generation took too long");
    }
    let _ = gen_task.await;
    for s in stops {
        let _ = s.send(true);
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(stop);
    let opened = opened.expect("the session opened");
    assert!(token_times.len() >= 8, "only {} tokens", token_times.len());
    let decode_s = (*token_times.last().unwrap() - token_times[0]).as_secs_f64();
    Measured {
        prompt_tokens,
        generated: token_times.len(),
        decode_tps: (token_times.len() - 1) as f64 / decode_s,
        prefill_s: (token_times[0] - opened).as_secs_f64(),
        hops: nodes_hops(&relayed, prompt_tokens),
        placement,
        nodes,
    }
}

/// Per node: its prefill hop (the step of `prompt` tokens) and its median one-token hop.
fn nodes_hops(relayed: &[(u64, usize, u64)], prompt: usize) -> Vec<(u64, f64, f64)> {
    let mut nodes: Vec<u64> = relayed.iter().map(|r| r.0).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
        .into_iter()
        .map(|n| {
            let pre = relayed
                .iter()
                .find(|r| r.0 == n && r.1 == prompt)
                .map_or(f64::NAN, |r| r.2 as f64 / 1e6);
            let mut dec: Vec<f64> = relayed
                .iter()
                .filter(|r| r.0 == n && r.1 == 1)
                .map(|r| r.2 as f64 / 1e6)
                .collect();
            dec.sort_by(f64::total_cmp);
            (n, pre, dec.get(dec.len() / 2).copied().unwrap_or(f64::NAN))
        })
        .collect()
}

/// The speed (GFLOP/s, as a node's matvec probe would report it) at which `profile` computes
/// `shards` in `seconds` for a step of `t` tokens at `pos`: compute time is a fixed part plus a
/// part inversely proportional to the speed.
fn speed_for(
    shape: &ModelShape,
    shards: &[&ShardShape],
    profile: &DeviceProfile,
    t: usize,
    pos: usize,
    seconds: f64,
) -> f64 {
    let at = |g: f64| {
        let mut p = profile.clone();
        let gain = p.matmul_gflops / p.matvec_gflops;
        (p.matvec_gflops, p.bandwidth_gbs, p.matmul_gflops) = (g, g, g * gain);
        compute_s(shape, shards, &p, t, pos)
    };
    let fixed = at(1e12);
    let variable = at(1.0) - fixed;
    variable / (seconds - fixed).max(1e-6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_match_real_cpu_clusters() {
    let model = common::default_model();
    let manifest = ModelDir::open(&model).unwrap().manifest;
    let shape = ModelShape::from_manifest(&manifest).unwrap();
    let shards = ModelShape::shards_of(&manifest);
    let mut failures = Vec::new();
    let mut lines: Vec<(usize, bool, String)> = Vec::new();
    // A run whose node speeds changed under it (a build started elsewhere) is run again, at
    // most three times; a model that is wrong fails every attempt.
    for (n, attempt) in (1..=3).flat_map(|n| (1..=ATTEMPTS).map(move |a| (n, a))) {
        if lines
            .iter()
            .any(|l: &(usize, bool, String)| l.0 == n && l.1)
        {
            continue;
        }
        let m = run_cluster(&model, n).await;
        let devices_at = |speeds: &dyn Fn(u64) -> f64| -> Vec<SimDevice> {
            m.nodes
                .iter()
                .map(|(id, name, mem, _)| {
                    let mut p =
                        DeviceProfile::from_hello(name, NodeKind::Local, "CPU", *mem, speeds(*id));
                    (p.rtt_ms, p.link_mbps) = LOOPBACK;
                    SimDevice {
                        id: *id,
                        name: name.clone(),
                        profile: p,
                        real: true,
                    }
                })
                .collect()
        };
        // Each node's speed on each phase, from its own hop times in this run (the hop's
        // network on loopback is well under a millisecond; the fixed costs are the model's).
        let base = devices_at(&|_| 1.0);
        let held = |id: u64| -> Vec<&ShardShape> {
            shards
                .iter()
                .filter(|s| m.placement[s.index] == Some(id))
                .collect()
        };
        let mut from_prefill = Vec::new();
        let mut from_decode = Vec::new();
        for (id, pre, dec) in &m.hops {
            let p = &base.iter().find(|d| d.id == *id).unwrap().profile;
            let pos = m.prompt_tokens + m.generated / 2;
            from_prefill.push((
                *id,
                speed_for(&shape, &held(*id), p, m.prompt_tokens, 0, *pre),
            ));
            from_decode.push((*id, speed_for(&shape, &held(*id), p, 1, pos, *dec)));
        }
        let lookup = |v: &[(u64, f64)], id: u64| v.iter().find(|x| x.0 == id).map_or(1.0, |x| x.1);
        let for_decode = devices_at(&|id| lookup(&from_prefill, id));
        let for_prefill = devices_at(&|id| lookup(&from_decode, id));
        let speeds: Vec<String> = from_prefill
            .iter()
            .zip(&from_decode)
            .map(|(a, b)| format!("{:.1}/{:.1}", a.1, b.1))
            .collect();
        let devices = &for_decode;
        let opts = SimOptions {
            prompt_tokens: m.prompt_tokens,
            gen_tokens: m.generated,
            ..SimOptions::default()
        };
        // With equal nodes the coordinator's placement is deterministic: the simulator's own
        // (fresh) placement must be the one the cluster settled on.
        let equal = devices_at(&|_| 5.0);
        let fresh = simulate(&shape, &shards, &equal, &opts).unwrap();
        assert_eq!(fresh.placement, m.placement, "{n} nodes: placement");
        let r = simulate_with(&shape, &shards, devices, &opts, m.placement.clone()).unwrap();
        let rp = simulate_with(&shape, &shards, &for_prefill, &opts, m.placement.clone()).unwrap();
        let decode_err = r.decode_tokens_per_second / m.decode_tps - 1.0;
        let prefill_err = rp.time_to_first_token_s / m.prefill_s - 1.0;
        let line = format!(
            "| {n} CPU node{} | {} | decode {:.1} predicted / {:.1} measured tok/s ({:+.0}%) | \
             first token after {} tokens: {:.2} / {:.2} s ({:+.0}%) | node speeds on prefill / \
             decode hops {} GFLOP/s |",
            if n > 1 { "s" } else { "" },
            r.hops.len(),
            r.decode_tokens_per_second,
            m.decode_tps,
            decode_err * 100.0,
            m.prompt_tokens,
            rp.time_to_first_token_s,
            m.prefill_s,
            prefill_err * 100.0,
            speeds.join(", ")
        );
        eprintln!("PERF attempt {attempt} {line}");
        let ok = decode_err.abs() <= 0.25 && prefill_err.abs() <= 0.35;
        lines.push((n, ok, format!("attempt {attempt}: {line}")));
        if !ok && attempt == ATTEMPTS {
            failures.push(format!(
                "{n} nodes: decode off by {:+.0}%, prefill by {:+.0}% (bounds 25% and 35%)",
                decode_err * 100.0,
                prefill_err * 100.0
            ));
        }
    }
    let all: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    assert!(failures.is_empty(), "{failures:?}\n{}", all.join("\n"));
}
