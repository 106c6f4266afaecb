//! `synapse serve`: the coordinator, headless.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use synapse::coordinator::http::{StaticDirs, serve};
use synapse::coordinator::wire::NodeKind;
use synapse::coordinator::{Coordinator, CoordinatorConfig};

use super::node::{Backend, node_config};

/// Arguments of `synapse serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory made by `synapse split`; the default model (fetched on first use) when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Join token nodes must present; a random one is generated and printed when omitted.
    #[arg(long)]
    pub token: Option<String>,
    /// Native nodes to start inside this process.
    #[arg(long, default_value_t = 0)]
    pub local_nodes: usize,
    /// Engine of the local nodes.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Bearer token the HTTP API (/v1/*, POST /api/*) requires; open when omitted. Separate
    /// from the nodes' join token.
    #[arg(long, env = "SYNAPSE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// API requests that may wait for a free generation slot; more get 429 with Retry-After.
    #[arg(long, default_value_t = 32)]
    pub max_queued: usize,
    /// Generations running at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,
}

/// A random 128-bit join token in hex.
pub fn random_token() -> String {
    use rand::TryRngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .expect("the OS random generator works");
    splitter::write::hex(&b)
}

pub fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let dir = synapse::fetch::resolve_model(args.model.as_deref())?;
        let token = args.token.clone().unwrap_or_else(random_token);
        let mut cfg = CoordinatorConfig::new(dir.clone(), token.clone());
        cfg.api_key = args.api_key.clone().filter(|k| !k.is_empty());
        cfg.max_queued = args.max_queued;
        cfg.max_sessions = args.max_sessions as usize;
        let coord = Coordinator::new(cfg)?;
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(
            coord.clone(),
            StaticDirs::default(),
            args.addr,
            bound_tx,
            async move {
                let _ = tokio::signal::ctrl_c().await;
            },
        ));
        let addr = match bound_rx.await {
            Ok(a) => a,
            Err(_) => return server.await?,
        };
        println!("Synapse coordinator on http://{addr}");
        println!("Prompt page:         http://{addr}/");
        println!(
            "OpenAI-compatible:   http://{addr}/v1 ({})",
            if args.api_key.is_some() {
                "bearer key required"
            } else {
                "no key"
            }
        );
        println!("Join from a browser: http://{addr}/node/?token={token}");
        println!("Join a native node:  synapse node --url 'ws://{addr}/ws?token={token}'");
        for i in 0..args.local_nodes {
            let mut cfg = node_config(
                format!("ws://{addr}/ws?token={token}"),
                format!("local-{i}"),
                args.backend,
            )?;
            cfg.kind = NodeKind::Local;
            cfg.model_dir = Some(dir.clone());
            cfg.memory_bytes /= args.local_nodes.max(1) as u64;
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                if let Err(e) = synapse::node::run(cfg, stop).await {
                    tracing::error!("local node {i}: {e:#}");
                }
            });
        }
        let result = server.await?;
        let _ = stop_tx.send(true);
        let _ = stop_rx.changed().await;
        result
    })
}
