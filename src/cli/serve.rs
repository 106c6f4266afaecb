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
        let coord = Coordinator::new(CoordinatorConfig::new(dir.clone(), token.clone()))?;
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
