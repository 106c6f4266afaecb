//! `synapse app` (and `synapse` alone): the coordinator as a desktop app. The core (the same
//! coordinator, server and local nodes as `synapse serve`) runs on its own thread and tokio
//! runtime; the window runs on the main thread and talks to it through the bridge's channels.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;

use anyhow::Result;
use crossbeam_channel::{Receiver, Sender};
use synapse::app::bridge::{Bridge, CoreCommand, CoreMessage, model_summary, pump};
use synapse::app::window::{self, WindowOptions};

use super::node::Backend;
use super::serve;

/// Arguments of `synapse app`: those of `synapse serve`, plus the window's.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Model directory made by `synapse split`; the default model (fetched on first use) when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Address to listen on; 0.0.0.0 lets phones and laptops on this network join (port 0
    /// picks a free port).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Join token nodes must present; a random one is generated when omitted.
    #[arg(long)]
    pub token: Option<String>,
    /// Native nodes to start inside this process (on this machine's GPU by default; on the CPU
    /// engine when the only adapter is a CPU emulation such as lavapipe).
    #[arg(long, default_value_t = 1)]
    pub local_nodes: usize,
    /// Engine of the local nodes.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
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
    /// Start generating this prompt as soon as every shard is loaded.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Most tokens a generation started from the app produces (the panel's slider starts here).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Save a PNG of the window to FILE (after --exit-after seconds, or 5), then exit.
    #[arg(long, value_name = "FILE")]
    pub screenshot: Option<PathBuf>,
    /// Close the app after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<f64>,
    /// Start in simulation mode with this scenario's virtual devices (and its first model
    /// shape, if it names one): a .toml or .json file like those in assets/scenarios/.
    #[arg(long, value_name = "SCENARIO")]
    pub simulate: Option<PathBuf>,
    #[command(flatten)]
    pub speculate: serve::SpeculateArgs,
    #[command(flatten)]
    pub audit: serve::AuditArgs,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            model: None,
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            token: None,
            local_nodes: 1,
            backend: Backend::Auto,
            api_key: None,
            cors: Vec::new(),
            max_queued: 32,
            max_sessions: 16,
            prompt: None,
            max_tokens: 64,
            screenshot: None,
            exit_after: None,
            simulate: None,
            speculate: Default::default(),
            audit: Default::default(),
        }
    }
}

/// The address other devices should use to reach `addr`: this machine's LAN address when
/// listening on every interface (found by routing a UDP socket, which sends nothing).
fn public_host(addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.ip().to_string();
    }
    let lan = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip: &IpAddr| !ip.is_unspecified());
    lan.map_or_else(|| "127.0.0.1".into(), |ip| ip.to_string())
}

pub fn run(args: Args) -> Result<()> {
    if let Some(s) = args.exit_after {
        anyhow::ensure!(
            s.is_finite() && s >= 0.0,
            "--exit-after must be a number of seconds ≥ 0, not {s}"
        );
    }
    if let Some(p) = &args.screenshot {
        anyhow::ensure!(
            p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")),
            "--screenshot {}: the file name must end in .png",
            p.display()
        );
    }
    let simulate = match &args.simulate {
        Some(p) => Some(synapse::sim::scenario::Scenario::load(p)?),
        None => None,
    };
    #[cfg(all(unix, not(target_os = "macos")))]
    anyhow::ensure!(
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some(),
        "no display to open the app on (neither DISPLAY nor WAYLAND_DISPLAY is set): run it in a \
         desktop session, under Xvfb, or use `synapse serve` for the headless coordinator"
    );
    let (to_app, from_core) = crossbeam_channel::unbounded();
    let (to_core, commands) = crossbeam_channel::unbounded();
    let serve_args = serve::Args {
        model: args.model.clone(),
        addr: args.addr,
        token: args.token.clone(),
        local_nodes: args.local_nodes,
        backend: args.backend,
        api_key: args.api_key.clone(),
        cors: args.cors.clone(),
        max_queued: args.max_queued,
        max_sessions: args.max_sessions,
        speculate: args.speculate.clone(),
        audit: args.audit.clone(),
    };
    let core = std::thread::Builder::new()
        .name("synapse-core".into())
        .spawn(move || core_thread(serve_args, to_app, commands))?;
    let exit = window::run(
        Bridge {
            from_core,
            to_core: to_core.clone(),
        },
        WindowOptions {
            screenshot: args.screenshot.clone(),
            exit_after: args.exit_after,
            prompt: args.prompt.clone(),
            max_tokens: args.max_tokens,
            simulate,
        },
    );
    // The window is closed: stop sessions, nodes and the server, and wait for them.
    let _ = to_core.send(CoreCommand::Shutdown);
    let core_result = core
        .join()
        .map_err(|_| anyhow::anyhow!("the coordinator thread panicked"))?;
    core_result?;
    anyhow::ensure!(exit.is_success(), "the app ended with an error: {exit:?}");
    Ok(())
}

fn core_thread(
    args: serve::Args,
    to_app: Sender<CoreMessage>,
    commands: Receiver<CoreCommand>,
) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut host = match serve::start(&args).await {
            Ok(h) => h,
            Err(e) => {
                let _ = to_app.send(CoreMessage::Failed(format!("{e:#}")));
                return Err(e);
            }
        };
        tracing::info!("Synapse coordinator on http://{}", host.addr);
        let _ = to_app.send(CoreMessage::Ready {
            addr: host.addr,
            token: host.token.clone(),
            host: public_host(host.addr),
            model: model_summary(&host.coord),
        });
        // Subscribed before any node starts: the app sees every event from the first join.
        let events = host.coord.subscribe();
        if let Err(e) = host.start_local_nodes(&args) {
            let _ = to_app.send(CoreMessage::Failed(format!("starting local nodes: {e:#}")));
        }
        pump(host.coord.clone(), events, to_app, commands).await;
        host.shutdown().await
    })
}
