//! The simulator against reality: real local clusters of 1, 2 and 3 CPU nodes on the default
//! model (SmolLM2-135M, 3 shards) run a greedy generation through the coordinator, and the
//! simulator, given the same devices and the placement the coordinator really made, predicts
//! decode tokens/s and the time to first token. Predictions must be within 25% (decode) and
//! 35% (prefill) of what was measured: a test of the model's quality. How speeds are taken from
//! the run itself, and why, is in tests/common/calibrate.rs; the browser node's calibration is
//! in tests/browser.rs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::calibrate::{self, Measured};
use common::cluster::{Server, serve_coordinator};
use synapse::coordinator::http::status_json;
use synapse::coordinator::wire::NodeKind;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::engine::ShardExecutor;
use synapse::engine::cpu::CpuShard;
use synapse::model::ModelDir;
use synapse::node::NodeConfig;
use synapse::node::worker::NodeStats;
use synapse::sim::{ModelShape, simulate};
use tokio::sync::watch;

const TOKEN: &str = "calibration-token";
/// About 60 prompt tokens, and a continuation greedy decoding keeps going with.
const PROMPT: &str = "Here is a list of the countries of Europe with their capital cities, one \
                      per line, in alphabetical order by country: Albania: Tirana. Andorra: \
                      Andorra la Vella. Austria: Vienna. Belarus: Minsk. Belgium: Brussels.";
const GEN_TOKENS: usize = 24;
/// Runs of one cluster size before a miss counts.
const ATTEMPTS: usize = 3;

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
        net_delay: std::time::Duration::ZERO,
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
    settled(&coord, n).await;
    let m = calibrate::measure(&coord, PROMPT, GEN_TOKENS, Duration::from_secs(240)).await;
    for s in stops {
        let _ = s.send(true);
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(stop);
    m
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
        // With equal nodes the coordinator's placement is deterministic: the simulator's own
        // (fresh) placement must be the one the cluster settled on.
        let bytes = shards.iter().map(|s| s.bytes).sum();
        let equal = calibrate::devices(&m.nodes, bytes, &|_| 5.0);
        let opts = synapse::sim::predict::SimOptions {
            prompt_tokens: m.prompt_tokens,
            gen_tokens: m.generated,
            ..Default::default()
        };
        let fresh = simulate(&shape, &shards, &equal, &opts).unwrap();
        assert_eq!(fresh.placement, m.placement, "{n} nodes: placement");
        eprintln!("placement {:?} times {:?}", m.placement, m.node_times);
        let label = format!("{n} CPU node{}", if n > 1 { "s" } else { "" });
        let c = calibrate::compare(&shape, &shards, &m, &label);
        eprintln!("PERF attempt {attempt} {}", c.line);
        let ok = c.decode_err.abs() <= 0.25 && c.prefill_err.abs() <= 0.35;
        lines.push((n, ok, format!("attempt {attempt}: {}", c.line)));
        if !ok && attempt == ATTEMPTS {
            failures.push(format!(
                "{n} nodes: decode off by {:+.0}%, prefill by {:+.0}% (bounds 25% and 35%)",
                c.decode_err * 100.0,
                c.prefill_err * 100.0
            ));
        }
    }
    let all: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    assert!(failures.is_empty(), "{failures:?}\n{}", all.join("\n"));
}
