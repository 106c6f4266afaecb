//! `synapse bench`: prefill and decode tokens/s, and GPU time per op kind.

use std::path::PathBuf;

use anyhow::{Result, bail};
use synapse::bench::{self, BenchReport, Synthetic};
use synapse::engine::ShardExecutor;
use synapse::engine::cpu::CpuShard;
use synapse::engine::gpu::{GpuContext, GpuOptions, GpuShard, Profile};
use synapse::model::ModelDir;

use super::generate::Backend;

/// Arguments of `synapse bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory made by `synapse split`; the default model (fetched on first use) when
    /// neither this nor --synthetic is given.
    #[arg(long, conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// Random weights with this model's exact shapes instead of a model directory (GPU only).
    #[arg(long, value_enum)]
    synthetic: Option<Synthetic>,
    /// Shards to split --synthetic weights into (layers divided evenly).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Engine that runs the shards.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Tokens in the prompt (prefill).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens generated after it (decode, greedy).
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Run each block's norms as their own dispatches instead of fusing them into the products
    /// (fused is the default for Llama on GPUs).
    #[arg(long)]
    separate_norms: bool,
    /// Fuse each block's norms into the products that read them, whatever the default.
    #[arg(long, conflicts_with = "separate_norms")]
    fused_norms: bool,
    /// Skip the extra run that times each op with GPU timestamps.
    #[arg(long)]
    no_profile: bool,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure every activation encoding on the model's real hidden states instead: bytes per
    /// token per hop, ratio to raw f32 and teacher-forced top-1 agreement (CPU).
    #[arg(long, conflicts_with = "distributed")]
    wire: bool,
    /// Measure decode through the coordinator with 1, 2 and 3 in-process CPU nodes instead,
    /// on a prose and a repetitive prompt, with and without speculative decoding.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: the node counts to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,3",
        requires = "distributed"
    )]
    nodes: Vec<usize>,
    /// With --distributed: a simulated network delay each way at every node, in ms (a home
    /// network adds a few).
    #[arg(long, default_value_t = 0.0, requires = "distributed")]
    net_delay_ms: f64,
    /// With --distributed: skip the runs with speculative decoding.
    #[arg(long, requires = "distributed")]
    no_speculate: bool,
    /// With --distributed: generations of each prompt with and without speculation,
    /// alternating; the median speed is reported with the range.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50), requires = "distributed")]
    runs: u64,
    /// With --distributed: audit the nodes (on, the coordinator's default), not (off), or
    /// measure both, each on a fresh cluster, to see what audits cost.
    #[arg(long, value_enum, default_value_t = AuditMode::On, requires = "distributed")]
    audits: AuditMode,
    /// With --distributed: the audit rate of trusted nodes.
    #[arg(long, default_value_t = 0.1, requires = "distributed")]
    audit_rate: f64,
    /// With --distributed: the auditor runs on these CPUs (e.g. `1` or `12-15`) and the nodes
    /// and everything else on the others, as when the nodes are other devices; by default
    /// all share every core (the auditor at the lowest priority).
    #[arg(long, value_parser = super::serve::cpu_list, requires = "distributed")]
    audit_cpus: Option<super::serve::CpuList>,
}

/// Which audit settings `--distributed` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuditMode {
    On,
    Off,
    Both,
}

enum Loaded {
    Cpu(Vec<CpuShard>),
    Gpu(Vec<GpuShard>),
}

pub fn run(args: Args) -> Result<()> {
    if args.wire || args.distributed {
        return network(&args);
    }
    if args.prompt_tokens == 0 {
        bail!("--prompt-tokens must be at least 1");
    }
    let gpu = match args.backend {
        Backend::Gpu => Some(GpuContext::new(&GpuOptions::default())?),
        Backend::Cpu => None,
    };
    if let Some(g) = &gpu {
        eprintln!("{}", g.describe());
    }
    let (label, cfg, mut loaded, weight_bytes) = match (args.synthetic, &gpu) {
        (Some(which), Some(ctx)) => {
            let (arch, cfg) = which.config();
            let mut shards = Vec::new();
            for (info, mut t) in which.shards(args.shards)? {
                shards.push(GpuShard::from_tensors(
                    ctx.clone(),
                    &mut t,
                    &info,
                    arch,
                    &cfg,
                )?);
            }
            if args.separate_norms || args.fused_norms {
                shards
                    .iter_mut()
                    .for_each(|s| s.set_fuse_norms(args.fused_norms));
            }
            let bytes = shards.iter().map(GpuShard::weight_bytes).sum();
            (
                format!("synthetic {which:?}"),
                cfg,
                Loaded::Gpu(shards),
                bytes,
            )
        }
        (Some(_), None) => bail!("--synthetic runs on the GPU backend only (--backend gpu)"),
        (None, _) => {
            let dir = synapse::fetch::resolve_model(args.model.as_deref())?;
            let m = ModelDir::open(&dir)?;
            let n = m.manifest.shards.len();
            // Bytes a decode step reads: on the CPU the matrices as stored (blocks included);
            // on the GPU what it holds (block tensors expanded to f16 at load).
            let mut bytes = bench::decode_weight_bytes(&m.manifest);
            let loaded = match &gpu {
                Some(ctx) => {
                    let mut shards = (0..n)
                        .map(|i| GpuShard::load(ctx.clone(), &dir, &m.manifest, i))
                        .collect::<Result<Vec<_>, _>>()?;
                    if args.separate_norms || args.fused_norms {
                        shards
                            .iter_mut()
                            .for_each(|s| s.set_fuse_norms(args.fused_norms));
                    }
                    bytes = shards.iter().map(GpuShard::weight_bytes).sum();
                    Loaded::Gpu(shards)
                }
                None => Loaded::Cpu(
                    (0..n)
                        .map(|i| CpuShard::load(&dir, &m.manifest, i))
                        .collect::<Result<_, _>>()?,
                ),
            };
            (
                format!("{} (weights {})", dir.display(), m.manifest.dtype),
                m.manifest.config.clone(),
                loaded,
                bytes,
            )
        }
    };
    if args.prompt_tokens + args.gen_tokens > cfg.context_length {
        bail!(
            "--prompt-tokens + --gen-tokens exceed the context length {}",
            cfg.context_length
        );
    }
    let prompt = bench::prompt_ids(args.prompt_tokens, cfg.vocab_size);
    let gen_tokens = args.gen_tokens;

    let (timing, shards) = {
        let mut refs: Vec<&mut dyn ShardExecutor> = match &mut loaded {
            Loaded::Cpu(v) => v.iter_mut().map(|s| s as &mut dyn ShardExecutor).collect(),
            Loaded::Gpu(v) => v.iter_mut().map(|s| s as &mut dyn ShardExecutor).collect(),
        };
        // Warm-up: pipelines, scratch buffers and bind groups for both step shapes.
        bench::time_generation(&mut refs, 1000, &prompt, gen_tokens.min(3))?;
        let timing = bench::time_generation(&mut refs, 1, &prompt, gen_tokens)?;
        (timing, refs.len())
    };

    let mut report = BenchReport {
        adapter: gpu
            .as_ref()
            .map_or_else(cpu_name, |g| g.adapter_name().to_string()),
        backend: format!("{:?}", args.backend).to_lowercase(),
        model: label,
        shards,
        prompt_tokens: prompt.len(),
        gen_tokens,
        prefill_ms: timing.prefill_s * 1e3,
        prefill_tok_s: prompt.len() as f64 / timing.prefill_s,
        decode_ms_per_token: timing.decode_s * 1e3 / gen_tokens.max(1) as f64,
        decode_tok_s: gen_tokens as f64 / timing.decode_s.max(1e-12),
        weight_bytes,
        decode_weight_gb_s: weight_bytes as f64 * gen_tokens as f64
            / timing.decode_s.max(1e-12)
            / 1e9,
        dispatches_per_decode_step: None,
        decode_encode_ms: None,
        decode_wait_ms: None,
        profile_note: None,
        prefill_ops: Vec::new(),
        decode_ops: Vec::new(),
    };
    match &mut loaded {
        Loaded::Cpu(_) => {
            report.profile_note =
                Some("the CPU backend has no per-op timer; use --backend gpu".into())
        }
        Loaded::Gpu(v) => {
            report.dispatches_per_decode_step = Some(v.iter().map(GpuShard::last_dispatches).sum());
            let (encode, wait) = host_times(v, &prompt, gen_tokens)?;
            report.decode_encode_ms = Some(encode * 1e3);
            report.decode_wait_ms = Some(wait * 1e3);
            let ctx = gpu.as_ref().expect("gpu backend");
            if args.no_profile {
                report.profile_note = Some("skipped (--no-profile)".into());
            } else if !ctx.has_timestamps() {
                report.profile_note = Some(format!(
                    "adapter {} has no TIMESTAMP_QUERY: no GPU times per op",
                    ctx.adapter_name()
                ));
            } else {
                let (prefill, decode, n) = profile(v, &prompt, gen_tokens)?;
                report.prefill_ops = bench::op_times(&prefill, 1.0);
                report.decode_ops = bench::op_times(&decode, n.max(1) as f64);
                report.profile_note = Some(
                    "GPU timestamps around each dispatch (one pass per dispatch), a separate run"
                        .into(),
                );
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", bench::table(&report));
    }
    Ok(())
}

/// A run with timestamps on: the prefill's profile, and the decode's summed over the returned
/// number of tokens.
fn profile(
    shards: &mut [GpuShard],
    prompt: &[u32],
    gen_tokens: usize,
) -> Result<(Profile, Profile, usize)> {
    let session = 2;
    let n = gen_tokens.min(16);
    for s in shards.iter_mut() {
        s.set_profiling(true)?;
        s.take_profile();
        s.open_session(session)?;
    }
    let take = |shards: &mut [GpuShard]| {
        let mut p = Profile::default();
        for s in shards.iter_mut() {
            p.add(&s.take_profile());
        }
        p
    };
    let mut next = bench::step_all(&mut dyn_refs(shards), session, 0, prompt)?;
    let prefill = take(shards);
    for i in 0..n {
        next = bench::step_all(&mut dyn_refs(shards), session, prompt.len() + i, &[next])?;
    }
    let decode = take(shards);
    for s in shards.iter_mut() {
        s.close_session(session)?;
        s.set_profiling(false)?;
    }
    Ok((prefill, decode, n))
}

/// Host seconds per decode step (all shards): recording + encoding, and submit to result.
fn host_times(shards: &mut [GpuShard], prompt: &[u32], gen_tokens: usize) -> Result<(f64, f64)> {
    let session = 4;
    let n = gen_tokens.clamp(1, 32);
    for s in shards.iter_mut() {
        s.open_session(session)?;
    }
    let mut next = bench::step_all(&mut dyn_refs(shards), session, 0, prompt)?;
    for s in shards.iter_mut() {
        s.take_host_times();
    }
    for i in 0..n {
        next = bench::step_all(&mut dyn_refs(shards), session, prompt.len() + i, &[next])?;
    }
    let (mut encode, mut wait) = (0.0, 0.0);
    for s in shards.iter_mut() {
        let h = s.take_host_times();
        encode += h.encode_s;
        wait += h.wait_s;
        s.close_session(session)?;
    }
    Ok((encode / n as f64, wait / n as f64))
}

fn dyn_refs(shards: &mut [GpuShard]) -> Vec<&mut dyn ShardExecutor> {
    shards
        .iter_mut()
        .map(|s| s as &mut dyn ShardExecutor)
        .collect()
}

fn cpu_name() -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "CPU".into());
    format!("{model} ({threads} threads)")
}

/// `--wire` and `--distributed`: the network-facing measurements.
fn network(args: &Args) -> Result<()> {
    let dir = synapse::fetch::resolve_model(args.model.as_deref())?;
    let model = ModelDir::open(&dir)?;
    if args.wire {
        let text = include_str!("../../assets/wire-eval.txt");
        let default =
            synapse::coordinator::CoordinatorConfig::new(dir.clone(), String::new()).encoding;
        let results = synapse::wire_eval::evaluate(&model, text, 300, default.protocol())?;
        if args.json {
            for r in &results {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            println!(
                "{:<14} {:>16} {:>12} {:>14}",
                "encoding", "bytes/token/hop", "vs f32", "top-1 agree"
            );
            for r in &results {
                let mark = if r.default { "  (default)" } else { "" };
                println!(
                    "{:<14} {:>16.1} {:>11.2}x {:>13.2}%{mark}",
                    r.encoding,
                    r.bytes_per_token,
                    r.ratio_vs_f32,
                    r.top1_agreement * 100.0
                );
            }
        }
        return Ok(());
    }
    if args.nodes.is_empty() || args.nodes.iter().any(|&n| n == 0 || n > 16) {
        bail!(
            "--nodes: each count must be between 1 and 16, got {:?}",
            args.nodes
        );
    }
    if !(args.net_delay_ms.is_finite() && (0.0..=10_000.0).contains(&args.net_delay_ms)) {
        bail!(
            "--net-delay-ms must be between 0 and 10000, got {}",
            args.net_delay_ms
        );
    }
    if !(0.0..=1.0).contains(&args.audit_rate) {
        bail!(
            "--audit-rate must be between 0 and 1, got {}",
            args.audit_rate
        );
    }
    let on = Some(synapse::coordinator::state::AuditConfig {
        rate: args.audit_rate,
        ..Default::default()
    });
    let audits = match args.audits {
        AuditMode::On => vec![on],
        AuditMode::Off => vec![None],
        AuditMode::Both => vec![None, on],
    };
    let audit_cpus = args.audit_cpus.clone().map(|c| c.0).unwrap_or_default();
    if !audit_cpus.is_empty() {
        let rest = synapse::cpus::others(&audit_cpus);
        if rest.is_empty() {
            bail!(
                "--audit-cpus {audit_cpus:?} leaves no CPU for the nodes: this machine has {}",
                synapse::cpus::count()
            );
        }
        // Threads inherit their creator's CPUs: the runtime, the nodes and their rayon pool
        // all start after this.
        synapse::cpus::pin_current(&rest)
            .map_err(|e| anyhow::anyhow!("pinning the nodes to CPUs {rest:?}: {e}"))?;
        eprintln!("auditor on CPUs {audit_cpus:?}, nodes on CPUs {rest:?}");
    }
    let bench = synapse::bench_distributed::DistributedBench {
        audit_cpus,
        audits,
        node_counts: args.nodes.clone(),
        gen_tokens: args.gen_tokens.max(8),
        net_delay: std::time::Duration::from_secs_f64(args.net_delay_ms / 1000.0),
        speculate: !args.no_speculate,
        runs: args.runs as usize,
    };
    let results = synapse::bench_distributed::run(&dir, &bench)?;
    if args.json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!(
            "net delay {} ms each way, {} tokens a run, median of {} runs (range)",
            args.net_delay_ms, bench.gen_tokens, bench.runs
        );
        println!(
            "{:<10} {:>5} {:<7} {:<5} {:<6} {:>12} {:>13} {:>9} {:>9} {:>12} {:>11} {:>10} {:>9}",
            "setup",
            "hops",
            "task",
            "spec",
            "audit",
            "decode tok/s",
            "range",
            "vs local",
            "vs plain",
            "added ms/hop",
            "ms per hop",
            "accepted",
            "same ids"
        );
        for r in &results {
            println!(
                "{:<10} {:>5} {:<7} {:<5} {:<6} {:>12.2} {:>13} {:>8.0}% {:>8.2}x {:>12.2} {:>11.2} {:>10} {:>9}",
                r.setup,
                r.hops,
                r.task,
                if r.speculate { "on" } else { "off" },
                r.audit_rate
                    .map_or_else(|| "off".to_string(), |a| format!("{a}")),
                r.decode_tokens_per_second,
                format!("{:.1}-{:.1}", r.decode_range.0, r.decode_range.1),
                r.relative_to_local * 100.0,
                r.relative_to_plain,
                r.added_ms_per_hop,
                r.mean_hop_ms,
                format!("{}/{}", r.accepted, r.drafted),
                if r.same_ids_as_plain { "yes" } else { "NO" }
            );
        }
    }
    Ok(())
}
