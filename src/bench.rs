//! `synapse bench`: prefill and decode speed of a pipeline of shards, and on the GPU the time
//! per op kind from timestamp queries. Runs a real model directory or synthetic random weights
//! with a real model's exact shapes (`--synthetic`), which is how it runs where no model file
//! can be carried.
//!
//! Decode is greedy through [`ShardExecutor::step_top_k`] with k = 1, so the GPU reads back one
//! (id, logit) pair per token, as a coordinator would.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use half::f16;
use serde::Serialize;
use splitter::manifest::names;
use splitter::{Architecture, ModelConfig, ShardInfo};

use crate::engine::weights::ShardTensors;
use crate::engine::{Activations, LogitsMode, SessionId, ShardExecutor, StepInput, StepOutput};

/// Models whose exact shapes `--synthetic` reproduces with random weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Synthetic {
    /// SmolLM2-135M: Llama, 30 layers, hidden 576, 9 heads / 3 KV heads, FFN 1536, vocab
    /// 49152, tied head.
    Smollm2,
    /// GPT-2 124M: 12 layers, hidden 768, 12 heads, FFN 3072, vocab 50257, tied head.
    Gpt2,
}

impl Synthetic {
    /// The architecture and hyper-parameters.
    pub fn config(self) -> (Architecture, ModelConfig) {
        match self {
            Synthetic::Smollm2 => (
                Architecture::Llama,
                ModelConfig {
                    vocab_size: 49152,
                    hidden_size: 576,
                    n_layers: 30,
                    n_heads: 9,
                    n_kv_heads: 3,
                    head_dim: 64,
                    ffn_size: 1536,
                    context_length: 8192,
                    norm_eps: 1e-5,
                    rope_theta: 100000.0,
                    tied_head: true,
                    bos_token_id: None,
                    eos_token_ids: vec![2],
                    add_bos_token: false,
                },
            ),
            Synthetic::Gpt2 => (
                Architecture::Gpt2,
                ModelConfig {
                    vocab_size: 50257,
                    hidden_size: 768,
                    n_layers: 12,
                    n_heads: 12,
                    n_kv_heads: 12,
                    head_dim: 64,
                    ffn_size: 3072,
                    context_length: 1024,
                    norm_eps: 1e-5,
                    rope_theta: 0.0,
                    tied_head: true,
                    bos_token_id: Some(50256),
                    eos_token_ids: vec![50256],
                    add_bos_token: false,
                },
            ),
        }
    }

    /// `n` shards of balanced layer ranges, each with its random f16 tensors (seeded).
    pub fn shards(self, n: usize) -> Result<Vec<(ShardInfo, ShardTensors)>> {
        let (arch, cfg) = self.config();
        if n == 0 || n > cfg.n_layers {
            bail!("--shards must be 1..={}", cfg.n_layers);
        }
        let mut out = Vec::new();
        for i in 0..n {
            let first = i * cfg.n_layers / n;
            let last = (i + 1) * cfg.n_layers / n - 1;
            let info = ShardInfo {
                index: i,
                layers: [first, last],
                file: format!("synthetic-{i}"),
                bytes: 0,
                sha256: String::new(),
                has_embedding: i == 0,
                has_head: i == n - 1,
                tensors: Vec::new(),
            };
            let tensors = synthetic_tensors(arch, &cfg, &info, 0x5eed + i as u64);
            out.push((info, tensors));
        }
        Ok(out)
    }
}

/// Uniform values in `[-scale, scale)` (a cheap generator: the values only need to be finite
/// and varied), or `scale` itself for norm weights.
fn fill(seed: &mut u64, n: usize, scale: f32) -> Vec<f16> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let unit = (*seed >> 40) as f32 / (1u64 << 24) as f32;
            f16::from_f32((unit * 2.0 - 1.0) * scale)
        })
        .collect()
}

fn synthetic_tensors(
    arch: Architecture,
    cfg: &ModelConfig,
    info: &ShardInfo,
    seed: u64,
) -> ShardTensors {
    let mut s = seed.max(1);
    let (v, c, f) = (cfg.vocab_size, cfg.hidden_size, cfg.ffn_size);
    let (qd, kvd) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let mut t: HashMap<String, (Vec<usize>, Vec<f16>)> = HashMap::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, ones: bool| {
        let n = shape.iter().product();
        let data = if ones {
            vec![f16::ONE; n]
        } else {
            fill(&mut s, n, scale)
        };
        t.insert(name, (shape, data));
    };
    let w = 0.05; // keeps activations O(1) through 30 layers
    match arch {
        Architecture::Gpt2 => {
            if info.has_embedding {
                add(names::gpt2::WTE.into(), vec![v, c], w, false);
                add(
                    names::gpt2::WPE.into(),
                    vec![cfg.context_length, c],
                    w,
                    false,
                );
            }
            for i in info.layer_range() {
                let n = |s: &str| names::gpt2::layer(i, s);
                add(n("ln_1.weight"), vec![c], 1.0, true);
                add(n("ln_1.bias"), vec![c], w, false);
                add(n("attn.c_attn.weight"), vec![3 * c, c], w, false);
                add(n("attn.c_attn.bias"), vec![3 * c], w, false);
                add(n("attn.c_proj.weight"), vec![c, c], w, false);
                add(n("attn.c_proj.bias"), vec![c], w, false);
                add(n("ln_2.weight"), vec![c], 1.0, true);
                add(n("ln_2.bias"), vec![c], w, false);
                add(n("mlp.c_fc.weight"), vec![f, c], w, false);
                add(n("mlp.c_fc.bias"), vec![f], w, false);
                add(n("mlp.c_proj.weight"), vec![c, f], w, false);
                add(n("mlp.c_proj.bias"), vec![c], w, false);
            }
            if info.has_head {
                add(names::gpt2::LN_F_W.into(), vec![c], 1.0, true);
                add(names::gpt2::LN_F_B.into(), vec![c], w, false);
                if !info.has_embedding {
                    add(names::gpt2::HEAD.into(), vec![v, c], w, false);
                }
            }
        }
        Architecture::Llama => {
            if info.has_embedding {
                add(names::llama::EMBED.into(), vec![v, c], w, false);
            }
            for i in info.layer_range() {
                let n = |s: &str| names::llama::layer(i, s);
                add(n("input_layernorm.weight"), vec![c], 1.0, true);
                add(n("self_attn.q_proj.weight"), vec![qd, c], w, false);
                add(n("self_attn.k_proj.weight"), vec![kvd, c], w, false);
                add(n("self_attn.v_proj.weight"), vec![kvd, c], w, false);
                add(n("self_attn.o_proj.weight"), vec![c, qd], w, false);
                add(n("post_attention_layernorm.weight"), vec![c], 1.0, true);
                add(n("mlp.gate_proj.weight"), vec![f, c], w, false);
                add(n("mlp.up_proj.weight"), vec![f, c], w, false);
                add(n("mlp.down_proj.weight"), vec![c, f], w, false);
            }
            if info.has_head {
                add(names::llama::NORM.into(), vec![c], 1.0, true);
                if !info.has_embedding {
                    add(names::llama::HEAD.into(), vec![v, c], w, false);
                }
            }
        }
    }
    ShardTensors::from_memory(&info.file, t)
}

/// GPU time of one op kind.
#[derive(Debug, Clone, Serialize)]
pub struct OpTime {
    pub kind: String,
    /// Dispatches of this kind (per token for decode).
    pub dispatches: f64,
    /// Milliseconds (the whole prefill, or per decoded token).
    pub ms: f64,
    /// Share of the phase's summed kernel time.
    pub share: f64,
}

/// What `synapse bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    pub model: String,
    pub shards: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tok_s: f64,
    pub decode_ms_per_token: f64,
    pub decode_tok_s: f64,
    /// Bytes of weights a decode step reads (all matrices, the head included).
    pub weight_bytes: u64,
    /// `weight_bytes * decode_tok_s`: the weight bandwidth decode achieves.
    pub decode_weight_gb_s: f64,
    /// Dispatches in one decode step, all shards together (GPU only).
    pub dispatches_per_decode_step: Option<usize>,
    /// Per decode step, all shards together (GPU only): host time recording and encoding the
    /// command buffer, and from submission to the result being read back.
    pub decode_encode_ms: Option<f64>,
    pub decode_wait_ms: Option<f64>,
    /// Why there are no per-op times, when there are none.
    pub profile_note: Option<String>,
    pub prefill_ops: Vec<OpTime>,
    pub decode_ops: Vec<OpTime>,
}

/// Bytes of weights one decode step reads on the CPU from a split model: every tensor as
/// stored (f16, or Q8_0/Q4_0/Q4_1 blocks), except that an embedding contributes one row, not
/// its whole matrix, unless the same shard also uses it as the tied head.
pub fn decode_weight_bytes(m: &splitter::Manifest) -> u64 {
    let embeddings = [names::llama::EMBED, names::gpt2::WTE, names::gpt2::WPE];
    m.shards
        .iter()
        .flat_map(|s| s.tensors.iter().map(move |t| (s, t)))
        .map(|(s, t)| {
            let all = t.dtype.bytes_for(&t.shape) as u64;
            let reused_as_head = m.config.tied_head && s.has_head && t.name != names::gpt2::WPE;
            if embeddings.contains(&t.name.as_str()) && !reused_as_head {
                all / t.shape[0].max(1) as u64
            } else {
                all
            }
        })
        .sum()
}

/// Prompt ids for a benchmark: deterministic and spread over the vocabulary.
pub fn prompt_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i as u64 * 7919 + 13) % vocab as u64) as u32)
        .collect()
}

/// Runs `tokens` at `pos` through every shard; returns the greedy next token.
pub fn step_all(
    shards: &mut [&mut dyn ShardExecutor],
    session: SessionId,
    pos: usize,
    tokens: &[u32],
) -> Result<u32> {
    let last = shards.len() - 1;
    let mut hidden: Option<Activations> = None;
    for (i, s) in shards.iter_mut().enumerate() {
        let input = match &hidden {
            None => StepInput::Tokens(tokens),
            Some(h) => StepInput::Hidden(h),
        };
        if i == last {
            let top = s.step_top_k(session, pos, input, 1)?;
            return Ok(top[0].0);
        }
        match s.step(session, pos, input, LogitsMode::Last)? {
            StepOutput::Hidden(h) => hidden = Some(h),
            StepOutput::Logits(_) => bail!("shard {i} returned logits before the last shard"),
        }
    }
    unreachable!("the loop returns at the last shard")
}

/// Wall-clock prefill of `prompt` and decode of `gen` tokens in a fresh session.
pub struct Timing {
    pub prefill_s: f64,
    pub decode_s: f64,
}

/// Times one generation (prefill, then `gen` greedy tokens) in session `session`.
pub fn time_generation(
    shards: &mut [&mut dyn ShardExecutor],
    session: SessionId,
    prompt: &[u32],
    gen_tokens: usize,
) -> Result<Timing> {
    for s in shards.iter_mut() {
        s.open_session(session)?;
    }
    let start = Instant::now();
    let mut next = step_all(shards, session, 0, prompt).context("prefill")?;
    let prefill_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..gen_tokens {
        let pos = prompt.len() + i;
        next =
            step_all(shards, session, pos, &[next]).with_context(|| format!("decode at {pos}"))?;
    }
    let decode_s = start.elapsed().as_secs_f64();
    for s in shards.iter_mut() {
        s.close_session(session)?;
    }
    Ok(Timing {
        prefill_s,
        decode_s,
    })
}

/// Per-kind times from summed profiles: `ms` and dispatches divided by `per`.
pub fn op_times(profile: &crate::engine::gpu::Profile, per: f64) -> Vec<OpTime> {
    let total = profile.total_ns().max(1.0);
    let mut v: Vec<OpTime> = profile
        .kinds
        .iter()
        .map(|(k, n, ns)| OpTime {
            kind: k.to_string(),
            dispatches: *n as f64 / per,
            ms: ns / 1e6 / per,
            share: ns / total,
        })
        .collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    v
}

/// The report as a table.
pub fn table(r: &BenchReport) -> String {
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("adapter:   {}", r.adapter));
    line(format!(
        "model:     {} ({} shard{}), backend {}",
        r.model,
        r.shards,
        if r.shards == 1 { "" } else { "s" },
        r.backend
    ));
    line(format!(
        "prefill:   {} tokens in {:.2} ms = {:.1} tok/s",
        r.prompt_tokens, r.prefill_ms, r.prefill_tok_s
    ));
    line(format!(
        "decode:    {} tokens, {:.3} ms/token = {:.1} tok/s (weights {:.1} MB -> {:.1} GB/s)",
        r.gen_tokens,
        r.decode_ms_per_token,
        r.decode_tok_s,
        r.weight_bytes as f64 / 1e6,
        r.decode_weight_gb_s
    ));
    if let Some(d) = r.dispatches_per_decode_step {
        line(format!("dispatches per decode step: {d}"));
    }
    if let (Some(e), Some(w)) = (r.decode_encode_ms, r.decode_wait_ms) {
        line(format!(
            "decode step on the host: {e:.3} ms recording + encoding, {w:.3} ms from submit to result"
        ));
    }
    if let Some(n) = &r.profile_note {
        line(format!("per-op times: {n}"));
    }
    for (phase, ops, unit) in [
        ("prefill", &r.prefill_ops, "ms"),
        ("decode", &r.decode_ops, "ms/token"),
    ] {
        if ops.is_empty() {
            continue;
        }
        let sum: f64 = ops.iter().map(|o| o.ms).sum();
        line(format!(
            "{phase} GPU time by op kind ({unit}; kernels sum to {sum:.3}):"
        ));
        line(format!(
            "  {:<14} {:>10} {:>8} {:>11}",
            "kind", unit, "share", "dispatches"
        ));
        for o in ops {
            line(format!(
                "  {:<14} {:>10.4} {:>7.1}% {:>11.1}",
                o.kind,
                o.ms,
                o.share * 100.0,
                o.dispatches
            ));
        }
    }
    s
}
