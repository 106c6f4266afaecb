//! `synapse serve`: the coordinator, headless. [`start`] (the coordinator, its HTTP and
//! WebSocket server and the local nodes) is shared with `synapse app`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use synapse::coordinator::http::{StaticDirs, serve};
use synapse::coordinator::wire::NodeKind;
use synapse::coordinator::{Coordinator, CoordinatorConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

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
    /// Another site whose pages may call this coordinator's API from a browser (e.g.
    /// https://chat.example.com); repeat for more. None by default: only the coordinator's own
    /// pages may send state-changing requests, and no CORS headers are sent.
    #[arg(long = "cors", value_name = "ORIGIN", value_parser = synapse::coordinator::guard::parse_origin)]
    pub cors: Vec<String>,
    /// API requests that may wait for a free generation slot; more get 429 with Retry-After.
    #[arg(long, default_value_t = 32)]
    pub max_queued: usize,
    /// Generations running at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// Audit settings, shared by `serve` and `app`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Audits: the coordinator recomputes what nodes return on its own CPU (at the lowest
    /// priority) and evicts and bans a node whose results are wrong. Off believes every
    /// well-formed reply.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub audits: Switch,
    /// Fraction of a trusted node's steps that end an audit window (each window checks every
    /// row since the last, so a lie is found at the next window whenever it was told).
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    pub audit_rate: f64,
    /// Audits a node must pass, one per step, before it is trusted (until then each of its
    /// steps waits for its audit); a node given new shards starts again.
    #[arg(long, default_value_t = 16)]
    pub probation_steps: u32,
    /// CPUs the auditor runs on, a thread each (e.g. `2-3` or `0,2`), to keep it off cores
    /// that nodes on this machine use; by default a thread per core, at the lowest priority.
    #[arg(long, value_parser = cpu_list)]
    pub audit_cpus: Option<CpuList>,
}

/// A parsed `--audit-cpus` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// `--audit-cpus`: a CPU list of this machine.
pub fn cpu_list(s: &str) -> Result<CpuList, String> {
    synapse::cpus::parse_list(s).map(CpuList)
}

impl Default for AuditArgs {
    fn default() -> Self {
        AuditArgs {
            audits: Switch::On,
            audit_rate: 0.1,
            probation_steps: 16,
            audit_cpus: None,
        }
    }
}

impl AuditArgs {
    /// The coordinator's settings (`None`: audits off).
    pub fn config(&self) -> Option<synapse::coordinator::state::AuditConfig> {
        (self.audits == Switch::On).then_some(synapse::coordinator::state::AuditConfig {
            rate: self.audit_rate,
            probation_steps: self.probation_steps,
        })
    }

    /// The auditor's CPUs (empty: anywhere).
    pub fn cpus(&self) -> Vec<usize> {
        self.audit_cpus.clone().map(|c| c.0).unwrap_or_default()
    }
}

/// A number from 0 to 1.
fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Speculative decoding settings, shared by `serve` and `app`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpeculateArgs {
    /// Speculative decoding: draft tokens by prompt lookup and verify them in one trip through
    /// the pipeline (output unchanged; a request can turn it off with "speculate": false).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub speculate: Switch,
    /// Most tokens drafted in one step (the session drafts fewer, or none, when its drafts are
    /// rejected or the extra rows cost more than they save).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub draft_max: u64,
}

impl Default for SpeculateArgs {
    fn default() -> Self {
        SpeculateArgs {
            speculate: Switch::On,
            draft_max: 8,
        }
    }
}

impl SpeculateArgs {
    /// The coordinator's settings.
    pub fn config(&self) -> synapse::coordinator::speculate::SpeculateConfig {
        synapse::coordinator::speculate::SpeculateConfig {
            enabled: self.speculate == Switch::On,
            max_draft: self.draft_max as usize,
            ..Default::default()
        }
    }
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

/// A running coordinator with its server and local nodes.
pub struct Host {
    /// Read by `synapse app` (feature `gui`).
    #[cfg_attr(not(feature = "gui"), allow(dead_code))]
    pub coord: Coordinator,
    pub addr: SocketAddr,
    pub token: String,
    pub server: JoinHandle<Result<()>>,
    stop_server: oneshot::Sender<()>,
    stop_nodes: watch::Sender<bool>,
    nodes: Vec<JoinHandle<()>>,
    dir: PathBuf,
}

/// Starts the coordinator on `args.model` and its server on `args.addr`; returns once the server
/// listens. Local nodes start with [`Host::start_local_nodes`], so that a caller can subscribe
/// to the coordinator's events first and miss none.
pub async fn start(args: &Args) -> Result<Host> {
    let dir = synapse::fetch::resolve_model(args.model.as_deref())?;
    let token = args.token.clone().unwrap_or_else(random_token);
    let mut cfg = CoordinatorConfig::new(dir.clone(), token.clone());
    cfg.api_key = args.api_key.clone().filter(|k| !k.is_empty());
    cfg.max_queued = args.max_queued;
    cfg.cors_origins = args.cors.clone();
    cfg.max_sessions = args.max_sessions as usize;
    cfg.speculate = args.speculate.config();
    cfg.audit = args.audit.config();
    cfg.audit_cpus = args.audit.cpus();
    let coord = Coordinator::new(cfg)?;
    let (bound_tx, bound_rx) = oneshot::channel();
    let (stop_server, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        coord.clone(),
        StaticDirs::default(),
        args.addr,
        bound_tx,
        async move {
            let _ = stopped.await;
        },
    ));
    let addr = match bound_rx.await {
        Ok(a) => a,
        Err(_) => {
            server.await??;
            anyhow::bail!("the server stopped before listening on {}", args.addr);
        }
    };
    let (stop_nodes, _) = watch::channel(false);
    Ok(Host {
        coord,
        addr,
        token,
        server,
        stop_server,
        stop_nodes,
        nodes: Vec::new(),
        dir,
    })
}

impl Host {
    /// Starts `args.local_nodes` nodes in this process, sharing the machine's memory.
    pub fn start_local_nodes(&mut self, args: &Args) -> Result<()> {
        let (addr, token) = (self.addr, &self.token);
        for i in 0..args.local_nodes {
            let mut cfg = node_config(
                format!("ws://{addr}/ws?token={token}"),
                format!("local-{i}"),
                args.backend,
            )?;
            cfg.kind = NodeKind::Local;
            cfg.model_dir = Some(self.dir.clone());
            cfg.memory_bytes /= args.local_nodes.max(1) as u64;
            let stop = self.stop_nodes.subscribe();
            self.nodes.push(tokio::spawn(async move {
                if let Err(e) = synapse::node::run(cfg, stop).await {
                    tracing::error!("local node {i}: {e:#}");
                }
            }));
        }
        Ok(())
    }

    /// Stops the local nodes, then the server; returns the server's result.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop_nodes.send(true);
        for n in self.nodes {
            let _ = n.await;
        }
        let _ = self.stop_server.send(());
        self.server.await?
    }
}

pub fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut host = start(&args).await?;
        host.start_local_nodes(&args)?;
        let (addr, token) = (host.addr, host.token.clone());
        println!("Synapse coordinator on http://{addr}");
        println!("Prompt page:         http://{addr}/");
        println!(
            "OpenAI-compatible:   http://{addr}/v1 ({})",
            if host.coord.config().api_key.is_some() {
                "bearer key required"
            } else {
                "no key"
            }
        );
        println!("Join from a browser: http://{addr}/node/?token={token}");
        println!("Join a native node:  synapse node --url 'ws://{addr}/ws?token={token}'");
        let ended = tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            r = &mut host.server => Some(r),
        };
        match ended {
            None => host.shutdown().await,
            // The server stopped by itself (an error): its result says why.
            Some(r) => r?,
        }
    })
}
