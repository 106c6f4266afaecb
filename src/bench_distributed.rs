//! `synapse bench --distributed`: decode speed through the real coordinator with 1, 2 and 3
//! in-process CPU nodes on this machine, against the single-process engine, and the latency each
//! relayed hop adds; each setup runs a free-prose and a repeat-this-paragraph prompt with and
//! without speculative decoding, and says whether both gave the same ids. `--net-delay-ms`
//! adds a simulated network delay at every node.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::sync::watch;

use crate::coordinator::events::Event;
use crate::coordinator::http::{StaticDirs, serve};
use crate::coordinator::session::{GenerateEvent, GenerateRequest};
use crate::coordinator::wire::NodeKind;
use crate::coordinator::{Coordinator, CoordinatorConfig};
use crate::engine::ShardExecutor;
use crate::engine::cpu::CpuShard;
use crate::model::ModelDir;
use crate::node::NodeConfig;
use crate::sampling::SamplingParams;

/// One configuration's result.
#[derive(Debug, Clone, Serialize)]
pub struct DistributedResult {
    /// `local` for the single-process engine, else `N nodes`.
    pub setup: String,
    pub nodes: usize,
    /// Network hops per token (nodes actually holding shards).
    pub hops: usize,
    /// Which prompt: `prose` (free continuation) or `repeat` (asked to repeat a paragraph).
    pub task: &'static str,
    /// Speculative decoding on for this run.
    pub speculate: bool,
    /// The audit rate of the coordinator (`None`: audits off). The nodes count as strangers'
    /// devices (not the coordinator's own), so they are audited.
    pub audit_rate: Option<f64>,
    /// Audit windows that passed during this setup's runs (all its tasks), and that failed.
    pub audits_passed: u64,
    pub audits_failed: u64,
    /// Median over the runs.
    pub decode_tokens_per_second: f64,
    /// Slowest and fastest run.
    pub decode_range: (f64, f64),
    /// Decode speed relative to the single-process engine.
    pub relative_to_local: f64,
    /// Decode speed relative to the same setup and task without speculation (1 for those).
    pub relative_to_plain: f64,
    /// Extra time per token over the single-process engine, divided by the hops.
    pub added_ms_per_hop: f64,
    /// Mean time the coordinator waited for one single-token hop (send, compute, reply).
    pub mean_hop_ms: f64,
    /// Draft tokens sent and kept.
    pub drafted: usize,
    pub accepted: usize,
    /// The generated ids equal those of the same setup and task without speculation.
    pub same_ids_as_plain: bool,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct DistributedBench {
    /// Node counts, each a fresh cluster.
    pub node_counts: Vec<usize>,
    pub gen_tokens: usize,
    /// Simulated network delay each way, at every node.
    pub net_delay: Duration,
    /// Also run each task with speculative decoding and compare.
    pub speculate: bool,
    /// Generations of each (task, speculation) pair, interleaved; the median speed is reported.
    pub runs: usize,
    /// Audit settings to measure, each a fresh cluster (`None`: audits off).
    pub audits: Vec<Option<crate::coordinator::state::AuditConfig>>,
    /// The auditor's CPUs (empty: anywhere). The caller keeps the nodes off them (they inherit
    /// the calling thread's CPUs), as if the nodes were other devices.
    pub audit_cpus: Vec<usize>,
}

const PROSE: &str = "The history of the printing press begins";
const REPEAT: &str = "Repeat the paragraph below exactly, twice.\n\nParagraph: The printing press \
was invented by Johannes Gutenberg around 1440 in Mainz. It made books cheap and quick to \
produce, and within fifty years printing shops had opened in more than two hundred cities \
across Europe, spreading literacy and new ideas.\n\nFirst copy: The printing press was \
invented by Johannes Gutenberg around 1440 in Mainz. It made books cheap and quick to \
produce, and within fifty years printing shops had opened in more than two hundred cities \
across Europe, spreading literacy and new ideas.\n\nSecond copy:";

/// The prompts, by task name.
pub const TASKS: [(&str, &str); 2] = [("prose", PROSE), ("repeat", REPEAT)];

/// Runs the benchmark on the model in `dir`.
pub fn run(dir: &Path, bench: &DistributedBench) -> Result<Vec<DistributedResult>> {
    let model = ModelDir::open(dir)?;
    let tok = model.tokenizer()?;
    let ids = tok.encode(PROSE)?;
    let gen_tokens = bench.gen_tokens;
    // Single process: the reference speed.
    let mut pipe = model.cpu_pipeline()?;
    let g = crate::generate::generate(
        &mut pipe,
        &tok,
        &ids,
        &SamplingParams::default(),
        gen_tokens,
        &[],
        |_| {},
    )?;
    drop(pipe);
    let local_tps = g.ids.len() as f64 / g.decode_time.as_secs_f64().max(1e-9);
    let mut out = vec![DistributedResult {
        setup: "local".into(),
        nodes: 0,
        hops: 0,
        task: "prose",
        speculate: false,
        audit_rate: None,
        audits_passed: 0,
        audits_failed: 0,
        decode_tokens_per_second: local_tps,
        decode_range: (local_tps, local_tps),
        relative_to_local: 1.0,
        relative_to_plain: 1.0,
        added_ms_per_hop: 0.0,
        mean_hop_ms: 0.0,
        drafted: 0,
        accepted: 0,
        same_ids_as_plain: true,
    }];
    let rt = tokio::runtime::Runtime::new()?;
    for &n in &bench.node_counts {
        for &audit in &bench.audits {
            let r = rt
                .block_on(one(dir, n, bench, audit, local_tps))
                .with_context(|| format!("{n} nodes"))?;
            out.extend(r);
        }
    }
    Ok(out)
}

async fn one(
    dir: &Path,
    n: usize,
    bench: &DistributedBench,
    audit: Option<crate::coordinator::state::AuditConfig>,
    local_tps: f64,
) -> Result<Vec<DistributedResult>> {
    // The coordinator's default activation encoding.
    let mut cfg = CoordinatorConfig::new(dir.to_path_buf(), "bench".into());
    cfg.audit = audit;
    cfg.audit_cpus = bench.audit_cpus.clone();
    let coord = Coordinator::new(cfg)?;
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_server, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        coord.clone(),
        StaticDirs::default(),
        "127.0.0.1:0".parse()?,
        bound_tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let addr = bound_rx.await?;
    let (stop_nodes, stop) = watch::channel(false);
    for i in 0..n {
        let cfg = NodeConfig {
            url: format!("ws://{addr}/ws?token=bench"),
            name: format!("bench-{i}"),
            // Other people's devices, as far as audits go.
            kind: NodeKind::Native,
            backend: "cpu".into(),
            adapter: "CPU".into(),
            memory_bytes: 8 << 30,
            cache_dir: std::env::temp_dir(),
            model_dir: Some(dir.to_path_buf()),
            loader: Arc::new(|d: &Path, m: &splitter::Manifest, i: usize| {
                Ok(Box::new(CpuShard::load(d, m, i)?) as Box<dyn ShardExecutor>)
            }),
            gflops: 1.0,
            stats: Default::default(),
            remeasure: None,
            net_delay: bench.net_delay,
        };
        tokio::spawn(crate::node::run(cfg, stop.clone()));
    }
    let hops = wait_placed(&coord, n).await?;
    let setup = format!("{n} node{}", if n == 1 { "" } else { "s" });
    let mut out = Vec::new();
    for (task, prompt) in TASKS {
        // Plain and speculative runs alternate, so a change in the machine's load falls on both.
        let modes: &[bool] = if bench.speculate {
            &[false, true]
        } else {
            &[false]
        };
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); modes.len()];
        for _ in 0..bench.runs.max(1) {
            for (i, &speculate) in modes.iter().enumerate() {
                runs[i].push(generation(&coord, prompt, bench.gen_tokens, speculate).await?);
            }
        }
        let plain_ids = runs[0][0].ids.clone();
        let plain_tps = median(runs[0].iter().map(|r| r.tps).collect());
        for (&speculate, rs) in modes.iter().zip(&runs) {
            let tps = median(rs.iter().map(|r| r.tps).collect());
            let lo = rs.iter().map(|r| r.tps).fold(f64::INFINITY, f64::min);
            let hi = rs.iter().map(|r| r.tps).fold(0.0, f64::max);
            let last = rs.last().expect("at least one run");
            out.push(DistributedResult {
                setup: setup.clone(),
                nodes: n,
                hops,
                task,
                speculate,
                audit_rate: audit.map(|a| a.rate),
                audits_passed: 0,
                audits_failed: 0,
                decode_tokens_per_second: tps,
                decode_range: (lo, hi),
                relative_to_local: tps / local_tps,
                relative_to_plain: tps / plain_tps,
                added_ms_per_hop: (1000.0 / tps - 1000.0 / local_tps) / hops.max(1) as f64,
                mean_hop_ms: rs.iter().map(|r| r.mean_hop_ms).sum::<f64>() / rs.len() as f64,
                drafted: last.drafted,
                accepted: last.accepted,
                same_ids_as_plain: rs.iter().all(|r| r.ids == plain_ids),
            });
        }
    }
    let a = crate::coordinator::http::status_json(&coord)["audits"].clone();
    for r in &mut out {
        r.audits_passed = a["windows_passed"].as_u64().unwrap_or(0);
        r.audits_failed = a["failed"].as_u64().unwrap_or(0);
    }
    let _ = stop_nodes.send(true);
    let _ = stop_server.send(());
    Ok(out)
}

/// Waits for every node to hold shards (or all shards to be placed when there are fewer);
/// returns the hops a token makes.
async fn wait_placed(coord: &Coordinator, n: usize) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() > deadline {
            bail!("the pipeline did not become complete");
        }
        let s = crate::coordinator::http::status_json(coord);
        let busy = s["nodes"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|x| x["shards"].as_array().is_some_and(|v| !v.is_empty()))
                .count()
        });
        let moving = s["shards"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| !x["moving_to"].is_null()));
        let shards = s["shards"].as_array().map_or(0, |a| a.len());
        if s["complete"] == true
            && !moving
            && s["nodes"].as_array().map_or(0, |a| a.len()) == n
            && busy == n.min(shards)
        {
            return Ok(busy);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One greedy generation's measurements.
#[derive(Clone)]
struct Run {
    ids: Vec<u32>,
    /// Tokens after the first over the time after the first.
    tps: f64,
    mean_hop_ms: f64,
    drafted: usize,
    accepted: usize,
}

async fn generation(
    coord: &Coordinator,
    prompt: &str,
    max_tokens: usize,
    speculate: bool,
) -> Result<Run> {
    let mut events = coord.subscribe();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let req = GenerateRequest {
        stream: true,
        prompt: prompt.into(),
        max_tokens,
        sampling: SamplingParams::default(),
        speculate: Some(speculate),
    };
    let c2 = coord.clone();
    tokio::spawn(async move { c2.generate(req, tx).await });
    let mut first_token: Option<Instant> = None;
    let mut last_token = Instant::now();
    let mut tokens = 0usize;
    let mut done = None;
    while let Some(e) = rx.recv().await {
        match e {
            GenerateEvent::Token { id, .. } if id != u32::MAX => {
                tokens += 1;
                last_token = Instant::now();
                first_token.get_or_insert(last_token);
            }
            GenerateEvent::Done {
                ids,
                drafted,
                accepted,
                ..
            } => done = Some((ids, drafted, accepted)),
            GenerateEvent::Error { message } | GenerateEvent::Unavailable { message, .. } => {
                bail!(message)
            }
            _ => {}
        }
    }
    let mut hop_micros = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::FrameRelayed {
            micros, tokens: 1, ..
        } = e
        {
            hop_micros.push(micros);
        }
    }
    let (ids, drafted, accepted) = done.context("the generation did not finish")?;
    let first = first_token.context("no token generated")?;
    Ok(Run {
        ids,
        tps: (tokens.saturating_sub(1)) as f64
            / last_token.duration_since(first).as_secs_f64().max(1e-9),
        mean_hop_ms: hop_micros.iter().sum::<u64>() as f64
            / hop_micros.len().max(1) as f64
            / 1000.0,
        drafted,
        accepted,
    })
}
