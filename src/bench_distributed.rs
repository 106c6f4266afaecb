//! `synapse bench --distributed`: decode speed through the real coordinator with 1, 2 and 3
//! in-process CPU nodes on this machine, against the single-process engine, and the latency each
//! relayed hop adds.

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
    pub decode_tokens_per_second: f64,
    /// Decode speed relative to the single-process engine.
    pub relative_to_local: f64,
    /// Extra time per token over the single-process engine, divided by the hops.
    pub added_ms_per_hop: f64,
    /// Mean time the coordinator waited for one hop (send, compute, reply).
    pub mean_hop_ms: f64,
}

const PROMPT: &str = "The history of the printing press begins";

/// Runs the benchmark for each node count in `node_counts` on the model in `dir`.
pub fn run(dir: &Path, node_counts: &[usize], gen_tokens: usize) -> Result<Vec<DistributedResult>> {
    let model = ModelDir::open(dir)?;
    let tok = model.tokenizer()?;
    let ids = tok.encode(PROMPT)?;
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
        decode_tokens_per_second: local_tps,
        relative_to_local: 1.0,
        added_ms_per_hop: 0.0,
        mean_hop_ms: 0.0,
    }];
    let rt = tokio::runtime::Runtime::new()?;
    for &n in node_counts {
        let r = rt
            .block_on(one(dir, n, gen_tokens, local_tps))
            .with_context(|| format!("{n} nodes"))?;
        out.push(r);
    }
    Ok(out)
}

async fn one(dir: &Path, n: usize, gen_tokens: usize, local_tps: f64) -> Result<DistributedResult> {
    // The coordinator's default activation encoding.
    let coord = Coordinator::new(CoordinatorConfig::new(dir.to_path_buf(), "bench".into()))?;
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
            kind: NodeKind::Local,
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
        };
        tokio::spawn(crate::node::run(cfg, stop.clone()));
    }
    // Wait for every node to hold shards (or all shards to be placed when there are fewer).
    let deadline = Instant::now() + Duration::from_secs(120);
    let hops = loop {
        if Instant::now() > deadline {
            bail!("the pipeline did not become complete");
        }
        let s = crate::coordinator::http::status_json(&coord);
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
            break busy;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut events = coord.subscribe();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let req = GenerateRequest {
        prompt: PROMPT.into(),
        max_tokens: gen_tokens,
        sampling: SamplingParams::default(),
    };
    let c2 = coord.clone();
    tokio::spawn(async move { c2.generate(req, tx).await });
    let mut first_token: Option<Instant> = None;
    let mut last_token = Instant::now();
    let mut tokens = 0usize;
    while let Some(e) = rx.recv().await {
        match e {
            GenerateEvent::Token { .. } => {
                tokens += 1;
                last_token = Instant::now();
                first_token.get_or_insert(last_token);
            }
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
    let _ = stop_nodes.send(true);
    let _ = stop_server.send(());
    let first = first_token.context("no token generated")?;
    let tps = (tokens.saturating_sub(1)) as f64
        / last_token.duration_since(first).as_secs_f64().max(1e-9);
    let per_token_ms = 1000.0 / tps;
    let local_ms = 1000.0 / local_tps;
    Ok(DistributedResult {
        setup: format!("{n} node{}", if n == 1 { "" } else { "s" }),
        nodes: n,
        hops,
        decode_tokens_per_second: tps,
        relative_to_local: tps / local_tps,
        added_ms_per_hop: (per_token_ms - local_ms) / hops.max(1) as f64,
        mean_hop_ms: hop_micros.iter().sum::<u64>() as f64
            / hop_micros.len().max(1) as f64
            / 1000.0,
    })
}
