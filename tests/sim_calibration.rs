//! The simulator against reality: real local clusters of 1, 2 and 3 CPU nodes on the default
//! model (SmolLM2-135M, 3 shards) run a greedy generation through the coordinator, and the
//! simulator, given the same devices as their nodes reported themselves (memory, measured
//! speed) and the placement the coordinator really made, predicts decode tokens/s and the
//! time to first token. Predictions must be within 25% (decode) and 35% (prefill) of what was
//! measured: a test of the model's quality.
//!
//! The nodes' speed is measured in this run, right before each cluster starts and again after
//! its generation (this machine is shared and its load moves): a run whose two measurements
//! differ by more than a third measured a machine that changed under it and is run again
//! (at most three times); the prediction uses the mean of the two.

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
use synapse::sim::profile::{DeviceProfile, LOOPBACK, measure_cpu};
use synapse::sim::{ModelShape, simulate, simulate_with};
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "calibration-token";
/// About 60 prompt tokens, and a continuation greedy decoding keeps going with.
const PROMPT: &str = "Here is a list of the countries of Europe with their capital cities, one \
                      per line, in alphabetical order by country: Albania: Tirana. Andorra: \
                      Andorra la Vella. Austria: Vienna. Belarus: Minsk. Belgium: Brussels.";
const GEN_TOKENS: usize = 24;

/// What one cluster run measured.
struct Measured {
    prompt_tokens: usize,
    generated: usize,
    decode_tps: f64,
    prefill_s: f64,
    /// Matvec and matmul GFLOP/s before and after.
    before: (f64, f64),
    after: (f64, f64),
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
    let before = measure_cpu();
    let mut cfg = CoordinatorConfig::new(model.to_path_buf(), TOKEN.into());
    cfg.step_timeout = Duration::from_secs(60);
    let Server { coord, addr, stop } = serve_coordinator(cfg).await;
    let url = format!("ws://{addr}/ws?token={TOKEN}");
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        // Every node reports the same measured speed, as equal machines would.
        let cfg = node_config(url.clone(), &format!("cpu-{i}"), model, before.0);
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
    let end = Instant::now() + Duration::from_secs(240);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(Event::SessionOpened { prompt_tokens: p, .. }) => {
                    opened = Some(Instant::now());
                    prompt_tokens = p;
                }
                Ok(Event::TokenSampled { .. }) => token_times.push(Instant::now()),
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
    let after = measure_cpu();
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
        before,
        after,
        placement,
        nodes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_match_real_cpu_clusters() {
    let model = common::default_model();
    let manifest = ModelDir::open(&model).unwrap().manifest;
    let shape = ModelShape::from_manifest(&manifest).unwrap();
    let shards = ModelShape::shards_of(&manifest);
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for n in 1..=3 {
        let mut attempt = 0;
        let m = loop {
            attempt += 1;
            let m = run_cluster(&model, n).await;
            let drift = (m.before.0 / m.after.0).max(m.after.0 / m.before.0);
            eprintln!(
                "{n} nodes, attempt {attempt}: matvec {:.2} -> {:.2} GFLOP/s, matmul {:.1} -> {:.1}",
                m.before.0, m.after.0, m.before.1, m.after.1
            );
            if drift <= 1.33 || attempt == 3 {
                break m;
            }
        };
        let matvec = (m.before.0 + m.after.0) / 2.0;
        let matmul = (m.before.1 + m.after.1) / 2.0;
        // The devices as their hello described them; this machine's measured speeds.
        let devices: Vec<SimDevice> = m
            .nodes
            .iter()
            .map(|(id, name, mem, _gflops)| {
                let mut p = DeviceProfile::from_hello(name, NodeKind::Local, "CPU", *mem, matvec);
                p.matmul_gflops = matmul;
                (p.rtt_ms, p.link_mbps) = LOOPBACK;
                SimDevice {
                    id: *id,
                    name: name.clone(),
                    profile: p,
                    real: true,
                }
            })
            .collect();
        let opts = SimOptions {
            prompt_tokens: m.prompt_tokens,
            gen_tokens: m.generated,
            ..SimOptions::default()
        };
        // With equal nodes the coordinator's placement is deterministic: the simulator's own
        // (fresh) placement must be the one the cluster settled on.
        let fresh = simulate(&shape, &shards, &devices, &opts).unwrap();
        assert_eq!(fresh.placement, m.placement, "{n} nodes: placement");
        let r = simulate_with(&shape, &shards, &devices, &opts, m.placement.clone()).unwrap();
        let decode_err = r.decode_tokens_per_second / m.decode_tps - 1.0;
        let prefill_err = r.time_to_first_token_s / m.prefill_s - 1.0;
        let line = format!(
            "| {n} CPU node{} | {} | decode {:.1} predicted / {:.1} measured tok/s ({:+.0}%) | \
             first token after {} tokens: {:.2} / {:.2} s ({:+.0}%) | matvec {matvec:.1}, \
             matmul {matmul:.1} GFLOP/s |",
            if n > 1 { "s" } else { "" },
            r.hops.len(),
            r.decode_tokens_per_second,
            m.decode_tps,
            decode_err * 100.0,
            m.prompt_tokens,
            r.time_to_first_token_s,
            m.prefill_s,
            prefill_err * 100.0
        );
        eprintln!("PERF {line}");
        lines.push(line);
        if decode_err.abs() > 0.25 {
            failures.push(format!(
                "{n} nodes: decode off by {:+.0}%",
                decode_err * 100.0
            ));
        }
        if prefill_err.abs() > 0.35 {
            failures.push(format!(
                "{n} nodes: prefill off by {:+.0}%",
                prefill_err * 100.0
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:?}\n{}", lines.join("\n"));
}
