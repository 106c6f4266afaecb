//! `synapse node`: a native compute node joining a coordinator.

use std::sync::Arc;

use anyhow::Result;
use synapse::coordinator::wire::NodeKind;
use synapse::engine::ShardExecutor;
use synapse::engine::cpu::CpuShard;
use synapse::engine::gpu::{GpuContext, GpuOps, GpuOptions, GpuShard};
use synapse::node::NodeConfig;

/// Which engine a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The plain-Rust reference engine.
    Cpu,
    /// WGSL compute shaders through wgpu (Vulkan, Metal, DX12; lavapipe without a GPU).
    Gpu,
    /// The GPU engine on a hardware GPU; the CPU engine when the only adapter is a CPU
    /// emulation (lavapipe, SwiftShader, WARP), which is far slower than the CPU engine, or when
    /// no adapter opens.
    Auto,
}

/// Arguments of `synapse node`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The coordinator's node URL with the join token, as `synapse serve` prints it.
    #[arg(long)]
    url: String,
    /// Engine that runs the shards.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Name shown by the coordinator (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Memory offered for weights and caches, in MB (default: what the machine has available).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// For tests and benchmarks: delay everything this node sends by twice this many
    /// milliseconds, as a network this far away each way would (a home network adds 1-5).
    #[arg(long, default_value_t = 0.0, value_parser = parse_delay_ms)]
    net_delay_ms: f64,
}

fn parse_delay_ms(s: &str) -> Result<f64, String> {
    let ms: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
    if !(0.0..=10_000.0).contains(&ms) {
        return Err(format!("{ms} ms is outside 0..=10000"));
    }
    Ok(ms)
}

/// A node configuration for `backend`, measuring its speed.
pub fn node_config(url: String, name: String, backend: Backend) -> Result<NodeConfig> {
    // The GPU device the node runs on, opened once; `None` runs the CPU engine.
    let gpu = match backend {
        Backend::Cpu => None,
        Backend::Gpu => Some(GpuContext::new(&GpuOptions::default())?),
        Backend::Auto => auto_gpu(),
    };
    let mut gflops = None;
    let (loader, adapter): (synapse::node::worker::ShardLoader, String) = match gpu.clone() {
        None => (
            Arc::new(|dir: &std::path::Path, m: &splitter::Manifest, i: usize| {
                Ok(Box::new(CpuShard::load(dir, m, i)?) as Box<dyn ShardExecutor>)
            }),
            format!("CPU ({} threads)", rayon::current_num_threads()),
        ),
        Some(ctx) => {
            let adapter = ctx.adapter_name().to_string();
            match GpuOps::new(ctx.clone()).measure_gflops() {
                Ok(g) => {
                    tracing::info!("{adapter}: {g:.1} GFLOP/s on a matrix-vector product");
                    gflops = Some(g);
                }
                Err(e) => {
                    tracing::warn!("measuring {adapter}'s speed failed ({e}); reporting the CPU's")
                }
            }
            (
                Arc::new(
                    move |dir: &std::path::Path, m: &splitter::Manifest, i: usize| {
                        Ok(Box::new(GpuShard::load(ctx.clone(), dir, m, i)?)
                            as Box<dyn ShardExecutor>)
                    },
                ),
                adapter,
            )
        }
    };
    Ok(NodeConfig {
        url,
        name,
        kind: NodeKind::Native,
        backend: if gpu.is_some() { "gpu" } else { "cpu" }.into(),
        adapter,
        memory_bytes: synapse::node::available_memory(),
        cache_dir: synapse::fetch::synapse_home().join("node-cache"),
        model_dir: None,
        loader,
        gflops: gflops.unwrap_or_else(synapse::node::measure_cpu_gflops),
        stats: Default::default(),
        // The GPU probe is the GPU's speed; only the CPU's is measured again when idle.
        remeasure: gpu.is_none().then_some(std::time::Duration::from_secs(30)),
        net_delay: std::time::Duration::ZERO,
    })
}

/// The device `Backend::Auto` runs on: a hardware GPU, or `None` (the CPU engine) when the only
/// adapter is a CPU emulation or none opens. Says which and why in the log.
fn auto_gpu() -> Option<Arc<GpuContext>> {
    match GpuContext::new(&GpuOptions::default()) {
        Ok(ctx) if ctx.adapter_info().device_type != wgpu::DeviceType::Cpu => {
            tracing::info!("local node on the GPU: {}", ctx.adapter_name());
            Some(ctx)
        }
        Ok(ctx) => {
            tracing::info!(
                "the only GPU adapter is a CPU emulation ({}): the local node runs the CPU engine, \
                 which is faster there (--backend gpu forces the GPU engine)",
                ctx.adapter_name()
            );
            None
        }
        Err(e) => {
            tracing::info!("no GPU adapter ({e}): the local node runs the CPU engine");
            None
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "native".into())
    });
    let mut cfg = node_config(args.url.clone(), name, args.backend)?;
    if let Some(mb) = args.memory_mb {
        cfg.memory_bytes = mb * 1_000_000;
    }
    cfg.net_delay = std::time::Duration::from_secs_f64(args.net_delay_ms / 1000.0);
    synapse::node::http_base(&cfg.url)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop_tx.send(true);
        });
        synapse::node::run(cfg, stop_rx).await
    })
}
