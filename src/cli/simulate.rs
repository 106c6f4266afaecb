//! `synapse simulate`: what the coordinator would do with a mix of devices, and how fast it
//! would run, without the devices. Reads scenario files and/or `--add PROFILE=N`, simulates
//! each model (a model directory, a preset shape, or the scenario's list) and prints a table
//! per model, or one JSON document with `--json`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use synapse::coordinator::wire::WireEncoding;
use synapse::model::ModelDir;
use synapse::sim::predict::{Report, SimDevice, SimOptions, VIRTUAL_ID_BASE, best_split, mb};
use synapse::sim::profile::BUILT_IN;
use synapse::sim::scenario::{DeviceGroup, ModelChoice, Scenario, ShardCount};
use synapse::sim::{ModelShape, WeightType, simulate};

/// Arguments of `synapse simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files (.toml or .json) describing device mixes and models; the project's are
    /// in assets/scenarios/.
    scenarios: Vec<PathBuf>,
    /// Add virtual devices: PROFILE or PROFILE=COUNT (repeatable). Profiles: phone, chromebook,
    /// laptop-igpu, desktop-gpu, this-cpu (measured now).
    #[arg(long, value_name = "PROFILE[=COUNT]")]
    add: Vec<String>,
    /// Simulate this model directory (its shards as split) instead of the scenarios' models.
    #[arg(long, conflicts_with = "shape")]
    model: Option<PathBuf>,
    /// Simulate a model by its shapes alone: SmolLM2-135M, Llama-3.2-1B, Llama-3.2-3B,
    /// Llama-3.1-8B.
    #[arg(long)]
    shape: Option<String>,
    /// Weight type of --shape: f16, q8_0, q4_0, q4_1, q4_k_m.
    #[arg(long, default_value = "f16")]
    weights: String,
    /// Shards to cut --shape into: a number, or auto (the split the coordinator places
    /// fastest on these devices).
    #[arg(long, default_value = "auto")]
    shards: String,
    /// Prompt length for the time to first token.
    #[arg(long)]
    prompt_tokens: Option<usize>,
    /// Tokens generated (decode speed is taken halfway through).
    #[arg(long)]
    gen_tokens: Option<usize>,
    /// Generations running at once (the scenario's, or 1).
    #[arg(long)]
    sessions: Option<usize>,
    /// Hidden-state encoding between nodes.
    #[arg(long, value_enum, default_value_t = Wire::Rice)]
    encoding: Wire,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Wire {
    Rice,
    Int8,
    F32,
}

/// One model on one device mix.
#[derive(Debug, Serialize)]
struct Run {
    scenario: String,
    report: Report,
    /// For a fixed split: the shard count the coordinator would place fastest, and its report.
    #[serde(skip_serializing_if = "Option::is_none")]
    better_split: Option<(usize, Report)>,
}

/// A device mix with its name and models.
struct Mix {
    name: String,
    devices: Vec<SimDevice>,
    models: Vec<ModelChoice>,
    prompt_tokens: usize,
    gen_tokens: usize,
    sessions: usize,
}

fn parse_add(spec: &str) -> Result<DeviceGroup> {
    let (profile, count) = match spec.split_once('=') {
        Some((p, n)) => (
            p,
            n.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("--add {spec}: the count must be a positive number"))?,
        ),
        None => (spec, 1),
    };
    if !BUILT_IN.iter().any(|b| b.eq_ignore_ascii_case(profile)) {
        bail!(
            "--add {spec}: unknown profile `{profile}`: choose one of {}",
            BUILT_IN.join(", ")
        );
    }
    Ok(DeviceGroup {
        profile: profile.to_ascii_lowercase(),
        count,
        name: None,
        memory_gb: None,
        matvec_gflops: None,
        matmul_gflops: None,
        bandwidth_gbs: None,
        layer_overhead_us: None,
        step_overhead_ms: None,
        rtt_ms: None,
        link_mbps: None,
    })
}

pub fn run(args: Args) -> Result<()> {
    let mut mixes = Vec::new();
    let mut extra = Vec::new();
    for a in &args.add {
        extra.push(parse_add(a)?);
    }
    for path in &args.scenarios {
        let mut s = Scenario::load(path)?;
        s.devices.extend(extra.iter().cloned());
        mixes.push(Mix {
            name: s.name.clone(),
            devices: s.devices(VIRTUAL_ID_BASE)?,
            models: s.models.clone(),
            prompt_tokens: s.prompt_tokens,
            gen_tokens: s.gen_tokens,
            sessions: s.sessions,
        });
    }
    if mixes.is_empty() {
        if extra.is_empty() {
            bail!(
                "nothing to simulate: give a scenario file (see assets/scenarios/) or devices \
                 with --add PROFILE=COUNT (profiles: {})",
                BUILT_IN.join(", ")
            );
        }
        let s = Scenario {
            name: args.add.join(" + "),
            description: None,
            prompt_tokens: 128,
            gen_tokens: 128,
            sessions: 1,
            devices: extra,
            models: Vec::new(),
        };
        s.validate()?;
        mixes.push(Mix {
            name: s.name.clone(),
            devices: s.devices(VIRTUAL_ID_BASE)?,
            models: Vec::new(),
            prompt_tokens: 128,
            gen_tokens: 128,
            sessions: 1,
        });
    }
    let encoding = match args.encoding {
        Wire::Rice => WireEncoding::Rice,
        Wire::Int8 => WireEncoding::Int8,
        Wire::F32 => WireEncoding::F32,
    };
    let cli_model = if let Some(dir) = &args.model {
        Some(ModelChoice {
            shape: None,
            dir: Some(dir.clone()),
            weights: None,
            shards: None,
        })
    } else {
        args.shape.as_ref().map(|s| ModelChoice {
            shape: Some(s.clone()),
            dir: None,
            weights: Some(args.weights.clone()),
            shards: Some(ShardCount::Auto),
        })
    };
    let cli_shards = ShardCount::parse(&args.shards)?;
    let mut runs = Vec::new();
    for mix in &mixes {
        let opts = SimOptions {
            prompt_tokens: args.prompt_tokens.unwrap_or(mix.prompt_tokens),
            gen_tokens: args.gen_tokens.unwrap_or(mix.gen_tokens),
            sessions: args.sessions.unwrap_or(mix.sessions),
            encoding,
            ..SimOptions::default()
        };
        let models = match &cli_model {
            Some(m) => {
                let mut m = m.clone();
                if m.shape.is_some() {
                    m.shards = Some(cli_shards);
                }
                vec![m]
            }
            // The default model as `synapse fetch` splits it.
            None if mix.models.is_empty() => vec![ModelChoice {
                shape: Some("SmolLM2-135M".into()),
                dir: None,
                weights: Some("f16".into()),
                shards: Some(ShardCount::Exactly(3)),
            }],
            None => mix.models.clone(),
        };
        for m in &models {
            runs.push(run_one(&mix.name, m, &mix.devices, &opts)?);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        for r in &runs {
            print_run(r);
        }
    }
    Ok(())
}

fn run_one(
    scenario: &str,
    m: &ModelChoice,
    devices: &[SimDevice],
    opts: &SimOptions,
) -> Result<Run> {
    let (shape, shards) = match (&m.shape, &m.dir) {
        (_, Some(dir)) => {
            let md = ModelDir::open(dir)?;
            let shape = ModelShape::from_manifest(&md.manifest)?;
            (shape, Some(ModelShape::shards_of(&md.manifest)))
        }
        (Some(name), None) => {
            let w = WeightType::parse(m.weights.as_deref().unwrap_or("f16"))?;
            (ModelShape::preset(name, w)?, None)
        }
        (None, None) => bail!("a model needs a shape or a directory"),
    };
    let fixed = match (shards, m.shards.unwrap_or(ShardCount::Auto)) {
        (Some(s), _) => Some(s),
        (None, ShardCount::Exactly(n)) => Some(shape.plan(n)?),
        (None, ShardCount::Auto) => None,
    };
    match fixed {
        Some(shards) => {
            let score = |r: &Report| {
                if opts.sessions > 1 {
                    r.aggregate_tokens_per_second
                } else {
                    r.decode_tokens_per_second
                }
            };
            let report = simulate(&shape, &shards, devices, opts)?;
            let idle = report.unused.len();
            let better_split = match best_split(&shape, devices, opts)? {
                Some((n, b))
                    if n != shards.len()
                        && (idle > 0 || !report.complete)
                        && score(&b) > score(&report) * 1.05 =>
                {
                    Some((n, b))
                }
                _ => None,
            };
            Ok(Run {
                scenario: scenario.into(),
                report,
                better_split,
            })
        }
        None => match best_split(&shape, devices, opts)? {
            Some((_, report)) => Ok(Run {
                scenario: scenario.into(),
                report,
                better_split: None,
            }),
            None => {
                // Nothing fits whatever the split: show the finest one and why.
                let shards = shape.plan(shape.config.n_layers)?;
                Ok(Run {
                    scenario: scenario.into(),
                    report: simulate(&shape, &shards, devices, opts)?,
                    better_split: None,
                })
            }
        },
    }
}

fn print_run(run: &Run) {
    let r = &run.report;
    let total: u64 = r.shards.iter().map(|s| s.bytes).sum();
    println!(
        "== {} · {} ({}, {} shards, {})",
        run.scenario,
        r.model,
        r.weights,
        r.shards.len(),
        mb(total)
    );
    let used: Vec<_> = r.devices.iter().filter(|d| !d.shards.is_empty()).collect();
    println!(
        "{:<18} {:<12} {:>8} {:>9} {:>19} {:>11} {:>11}",
        "device", "profile", "shards", "layers", "memory used / lent", "decode ms", "prefill ms"
    );
    for d in &used {
        let shards = match (d.shards.first(), d.shards.last()) {
            (Some(a), Some(b)) if a != b => format!("{a}-{b}"),
            (Some(a), _) => a.to_string(),
            _ => "-".into(),
        };
        let layers = d.layers.map_or("-".into(), |[a, b]| format!("{a}-{b}"));
        println!(
            "{:<18} {:<12} {:>8} {:>9} {:>19} {:>11.1} {:>11.0}",
            clip(&d.name, 18),
            clip(&d.profile, 12),
            shards,
            layers,
            format!(
                "{} / {}",
                mb(d.weight_bytes + d.kv_bytes),
                mb(d.memory_bytes)
            ),
            d.decode_compute_ms,
            d.prefill_compute_ms
        );
    }
    if r.complete {
        println!(
            "decode: {:.2} tok/s ({:.1} ms a token: compute {:.1}, network {:.1} over {} hops, \
             coordinator {:.1})",
            r.decode_tokens_per_second,
            r.decode_ms_per_token,
            r.decode.compute_ms,
            r.decode.network_ms,
            r.hops.len(),
            r.decode.coordinator_ms
        );
        if r.options.sessions > 1 {
            println!(
                "{} generations at once: {:.1} tok/s in all, {:.2} each",
                r.options.sessions,
                r.aggregate_tokens_per_second,
                r.aggregate_tokens_per_second / r.options.sessions as f64
            );
        }
        println!(
            "first token after a {}-token prompt: {:.2} s (compute {:.2} s, network {:.2} s)",
            r.options.prompt_tokens,
            r.time_to_first_token_s,
            r.prefill.compute_ms / 1e3,
            r.prefill.network_ms / 1e3
        );
        if let (Some(first), Some(mid)) = (r.hops.first(), r.hops.get(1).or(r.hops.first())) {
            println!(
                "bytes per decode hop: {} out to {}, {} between devices, {} of logits back",
                first.decode.bytes_out,
                first.name,
                mid.decode.bytes_out,
                r.hops.last().map_or(0, |h| h.decode.bytes_in)
            );
        }
    } else {
        println!("does not run: not every shard has a device");
    }
    for p in &r.problems {
        println!("  ! {p}");
    }
    for s in &r.slowing {
        println!("  ! {}: {}", s.name, s.reason);
    }
    print_unused(r);
    if let Some((n, b)) = &run.better_split {
        println!(
            "  hint: split into {n} shard{} (`synapse split --shards {n}`) and the coordinator \
             would use {} device{}: {:.2} tok/s{}, first token in {:.2} s",
            if *n == 1 { "" } else { "s" },
            b.devices.iter().filter(|d| !d.shards.is_empty()).count(),
            if b.devices.iter().filter(|d| !d.shards.is_empty()).count() == 1 {
                ""
            } else {
                "s"
            },
            b.decode_tokens_per_second,
            if b.options.sessions > 1 {
                format!(
                    " ({:.1} in all for {} generations)",
                    b.aggregate_tokens_per_second, b.options.sessions
                )
            } else {
                String::new()
            },
            b.time_to_first_token_s
        );
    }
    println!();
}

/// Unused devices, grouped by reason so 27 idle Chromebooks are one line.
fn print_unused(r: &Report) {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for u in &r.unused {
        match groups.iter_mut().find(|(reason, _)| *reason == u.reason) {
            Some((_, names)) => names.push(&u.name),
            None => groups.push((&u.reason, vec![&u.name])),
        }
    }
    for (reason, names) in groups {
        let who = if names.len() > 3 {
            format!(
                "{}, ... {} ({} devices)",
                names[0],
                names[names.len() - 1],
                names.len()
            )
        } else {
            names.join(", ")
        };
        println!("  - {who}: {reason}");
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}~", s.chars().take(n - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_specs_parse_or_say_why() {
        assert_eq!(parse_add("phone=5").unwrap().count, 5);
        assert_eq!(parse_add("Chromebook").unwrap().profile, "chromebook");
        assert!(parse_add("phone=0").is_err());
        let e = parse_add("fridge=2").unwrap_err().to_string();
        assert!(e.contains("desktop-gpu"), "{e}");
    }
}
