//! An in-process coordinator serving on an OS-chosen loopback port, and native CPU nodes
//! joining it: what the distributed, browser and API tests start from.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use synapse::coordinator::http::{StaticDirs, serve};
use synapse::coordinator::wire::NodeKind;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use synapse::engine::ShardExecutor;
use synapse::engine::cpu::CpuShard;
use synapse::node::NodeConfig;
use synapse::node::worker::NodeStats;
use tokio::sync::{oneshot, watch};

/// A coordinator and its HTTP/WebSocket server; the server stops when `stop` is dropped.
pub struct Server {
    pub coord: Coordinator,
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
}

/// Starts `cfg`'s coordinator and serves it on 127.0.0.1 (port chosen by the OS), with the
/// crate's logs going to the test's captured output.
pub async fn serve_coordinator(cfg: CoordinatorConfig) -> Server {
    super::init_logging();
    let coord = Coordinator::new(cfg).unwrap();
    let (bound_tx, bound_rx) = oneshot::channel();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    tokio::spawn(serve(
        coord.clone(),
        StaticDirs::default(),
        addr,
        bound_tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let addr = bound_rx.await.unwrap();
    Server { coord, addr, stop }
}

/// Waits until `nodes` nodes are connected, each holding a shard, and the pipeline is complete
/// with no shard moving; panics with the status after three minutes.
pub async fn wait_complete(coord: &Coordinator, nodes: usize) {
    for _ in 0..1800 {
        let s = synapse::coordinator::http::status_json(coord);
        let all_busy = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| !n["shards"].as_array().unwrap().is_empty());
        let moving = s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| !x["moving_to"].is_null());
        let n = s["nodes"].as_array().unwrap().len();
        if s["complete"] == true && all_busy && !moving && n == nodes {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "pipeline never complete: {}",
        synapse::coordinator::http::status_json(coord)
    );
}

/// The id of the node named `name` once it is connected; panics with the status after 30 s.
pub async fn node_id(coord: &Coordinator, name: &str) -> u64 {
    for _ in 0..300 {
        let s = synapse::coordinator::http::status_json(coord);
        if let Some(n) = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
        {
            return n["id"].as_u64().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "node {name} never joined: {}",
        synapse::coordinator::http::status_json(coord)
    );
}

/// A native CPU node running in this process.
pub struct CpuNode {
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub stats: Arc<NodeStats>,
}

/// Starts a CPU node joining `url` (`ws://.../ws?token=T`) as `name`: `model_dir` lets it skip
/// downloads, `None` makes it download into `cache`. An error that stops it is logged.
pub fn cpu_node(url: String, name: &str, model_dir: Option<&Path>, cache: &Path) -> CpuNode {
    cpu_node_with(url, name, model_dir, cache, |_| {})
}

/// [`cpu_node`] with `configure` changing the node's settings (claimed speed or memory,
/// re-measuring) before it starts.
pub fn cpu_node_with(
    url: String,
    name: &str,
    model_dir: Option<&Path>,
    cache: &Path,
    configure: impl FnOnce(&mut NodeConfig),
) -> CpuNode {
    let stats = Arc::new(NodeStats::default());
    let mut cfg = NodeConfig {
        url,
        name: name.into(),
        kind: NodeKind::Native,
        backend: "cpu".into(),
        adapter: "test CPU".into(),
        memory_bytes: 4 << 30,
        cache_dir: cache.to_path_buf(),
        model_dir: model_dir.map(Path::to_path_buf),
        loader: Arc::new(|dir: &Path, m: &splitter::Manifest, i: usize| {
            Ok(Box::new(CpuShard::load(dir, m, i)?) as Box<dyn ShardExecutor>)
        }),
        gflops: 1.0,
        stats: stats.clone(),
        remeasure: None,
        net_delay: std::time::Duration::ZERO,
    };
    configure(&mut cfg);
    let stats = cfg.stats.clone();
    let (stop, stop_rx) = watch::channel(false);
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let result = synapse::node::run(cfg, stop_rx).await;
        if let Err(e) = &result {
            tracing::error!("node {name} stopped: {e:#}");
        }
        result
    });
    CpuNode { stop, task, stats }
}

/// Runs the generation `request` (a `GenerateRequest` as JSON) through the coordinator: its
/// ids, or the message of its error (or of its `Unavailable`).
pub async fn generate_ids(
    coord: &Coordinator,
    request: serde_json::Value,
) -> Result<Vec<u32>, String> {
    use synapse::coordinator::session::GenerateEvent;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let req = serde_json::from_value(request).unwrap();
    let c = coord.clone();
    tokio::spawn(async move { c.generate(req, tx).await });
    while let Some(e) = rx.recv().await {
        match e {
            GenerateEvent::Done { ids, .. } => return Ok(ids),
            GenerateEvent::Error { message } | GenerateEvent::Unavailable { message, .. } => {
                return Err(message);
            }
            _ => {}
        }
    }
    Err("no done event".into())
}

/// One greedy generation of `max_tokens` after `prompt`: its ids, or the error.
pub async fn greedy(
    coord: &Coordinator,
    prompt: &str,
    max_tokens: usize,
) -> Result<Vec<u32>, String> {
    generate_ids(
        coord,
        serde_json::json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}),
    )
    .await
}

/// Audits node `node` has passed since its probation last began (`/api/status`).
pub fn audits_passed(coord: &Coordinator, node: u64) -> u64 {
    synapse::coordinator::http::status_json(coord)["audits"]["passed_by_node"][node.to_string()]
        .as_u64()
        .unwrap_or(0)
}

/// Waits (up to 30 s) until no audit is in progress: they run beside generations, so the last
/// verdicts may still be on their way when the generations end. Returns the status then.
pub async fn audits_settled(coord: &Coordinator) -> serde_json::Value {
    for _ in 0..600 {
        let s = synapse::coordinator::http::status_json(coord);
        if s["audits"]["in_progress"] == 0 {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    synapse::coordinator::http::status_json(coord)
}
