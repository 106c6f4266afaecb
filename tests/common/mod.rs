//! Shared helpers of the integration tests: the synthetic fixtures (generated once per build
//! directory by tests/fixtures/make_fixtures.py), the default model, and numeric comparison
//! that reports the largest error and where it is.
#![allow(dead_code)]

pub mod calibrate;
pub mod cluster;
pub mod liar;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory of the synthetic checkpoints and their numpy references, generating it on first use.
pub fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("synthetic-fixtures-v4");
    if !dir.join("weights").join("llama-gguf-k-keep.json").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_fixtures.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{} failed (install its packages with tests/run.sh):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// The synthetic Llama (3 layers, tests/fixtures/llama-hf) split in `n` shards under `tmp`.
pub fn tiny_llama(tmp: &Path, n: usize) -> PathBuf {
    split(&fixtures().join("llama-hf"), tmp, n)
}

/// Resident memory (VmRSS, kB) of the process whose `/proc/.../status` is at `path`.
pub fn rss_kb(path: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {path}"))
}

/// Sends the crate's `tracing` output (info and up, or `SYNAPSE_LOG`) to the test's captured
/// output, so a failing test shows what the coordinator and nodes said.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNAPSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The default model (SmolLM2-135M-Instruct), fetched on first use.
pub fn default_model() -> PathBuf {
    synapse::fetch::ensure_default_model().expect("fetching the default model")
}

/// The ids the single-process CPU engine generates for `prompt` on the model in `dir` (up to
/// `max_tokens`, stopping at the model's end-of-sequence tokens): what every cluster test
/// compares its output with.
pub fn cpu_engine_ids(
    dir: &Path,
    prompt: &str,
    sampling: &synapse::sampling::SamplingParams,
    max_tokens: usize,
) -> Vec<u32> {
    let m = synapse::model::ModelDir::open(dir).unwrap();
    let tok = m.tokenizer().unwrap();
    let mut pipe = m.cpu_pipeline().unwrap();
    let ids = tok.encode(prompt).unwrap();
    synapse::generate::generate(
        &mut pipe,
        &tok,
        &ids,
        sampling,
        max_tokens,
        &m.manifest.config.eos_token_ids,
        |_| {},
    )
    .unwrap()
    .ids
}

/// What speculative decoding needs of an engine, on a loaded shard holding the whole model
/// (`vocab` tokens): a verification step (a prompt, then four drafts with top-k for every row)
/// gives each row what decoding the drafts one at a time gives, and truncating the cache to keep
/// two drafts then stepping on gives what a session that never held the others gives. `same`
/// compares two top-k lists (exactly, or within an engine's rounding). Bad requests are errors.
pub fn check_verification_and_truncation(
    ex: &mut dyn synapse::engine::ShardExecutor,
    vocab: u32,
    k: usize,
    same: impl Fn(&str, &[(u32, f32)], &[(u32, f32)]),
) {
    use synapse::engine::{LogitsMode, StepInput};
    let prompt: Vec<u32> = (0..5).map(|i| (i * 7 + 3) % vocab).collect();
    let drafts: Vec<u32> = (0..4).map(|i| (i * 11 + 1) % vocab).collect();
    let l = prompt.len();
    ex.open_session(1).unwrap();
    ex.step(1, 0, StepInput::Tokens(&prompt), LogitsMode::Last)
        .unwrap();
    let rows = ex
        .step_top_k_rows(1, l, StepInput::Tokens(&drafts), k, drafts.len())
        .unwrap();
    assert_eq!(rows.len(), drafts.len());
    ex.open_session(2).unwrap();
    ex.step(2, 0, StepInput::Tokens(&prompt), LogitsMode::Last)
        .unwrap();
    for (i, &d) in drafts.iter().enumerate() {
        let one = ex.step_top_k(2, l + i, StepInput::Tokens(&[d]), k).unwrap();
        same(&format!("row {i} of the verification step"), &rows[i], &one);
    }
    ex.truncate_session(1, l + 2).unwrap();
    assert_eq!(ex.session_len(1), Some(l + 2));
    let next = (drafts[3] + 5) % vocab;
    let cut = ex
        .step_top_k(1, l + 2, StepInput::Tokens(&[next]), k)
        .unwrap();
    ex.open_session(3).unwrap();
    let mut seq = prompt.clone();
    seq.extend_from_slice(&drafts[..2]);
    ex.step(3, 0, StepInput::Tokens(&seq), LogitsMode::Last)
        .unwrap();
    let fresh = ex
        .step_top_k(3, l + 2, StepInput::Tokens(&[next]), k)
        .unwrap();
    same("after truncation", &cut, &fresh);
    assert!(ex.truncate_session(1, l + 10).is_err(), "past the cache");
    assert!(ex.truncate_session(99, 0).is_err(), "unknown session");
    let two = [1, 2];
    assert!(
        ex.step_top_k_rows(3, l + 3, StepInput::Tokens(&two), k, 3)
            .is_err(),
        "more rows than tokens"
    );
    assert!(
        ex.step_top_k_rows(3, l + 3, StepInput::Tokens(&two), k, 0)
            .is_err(),
        "no rows"
    );
}

/// The reference a fixture's numpy script computed.
#[derive(Debug, serde::Deserialize)]
pub struct Reference {
    pub tokens: Vec<u32>,
    /// `(T, V)` logits of the prefill.
    pub logits: Vec<Vec<f32>>,
    /// Input to each layer and the output of the last: `n_layers + 1` entries of `(T, C)`.
    pub hidden: Vec<Vec<Vec<f32>>>,
    pub greedy: Vec<u32>,
}

/// Loads `dir/reference.json`.
pub fn reference(dir: &Path) -> Reference {
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reading reference.json");
    serde_json::from_str(&text).expect("parsing reference.json")
}

/// Asserts `|got - want| <= atol + rtol * |want|` everywhere; the message gives the largest
/// error, its index and both values. Returns the largest absolute error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0f32, 0f32); // (index, excess over tolerance, abs error)
    let mut max_err = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(g.is_finite(), "{what}: value {i} is {g}");
        max_err = max_err.max(err);
        let excess = err - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess, err);
        }
    }
    let (i, excess, err) = worst;
    assert!(
        excess <= 0.0,
        "{what}: largest error over tolerance at index {i}: got {} want {} (|err| {err}, atol {atol}, rtol {rtol}); max |err| {max_err}",
        got[i],
        want[i]
    );
    eprintln!("{what}: max |err| {max_err:.3e} (atol {atol}, rtol {rtol})");
    max_err
}

/// Splits `input` into `n` shards in a fresh directory under `parent`.
pub fn split(input: &Path, parent: &Path, n: usize) -> PathBuf {
    split_weights(input, parent, n, "f16").0
}

/// Splits `input` into `n` shards with `--weights MODE` in a fresh directory under `parent`;
/// returns the directory and the splitter's notes.
pub fn split_weights(input: &Path, parent: &Path, n: usize, mode: &str) -> (PathBuf, Vec<String>) {
    let out = parent.join(format!("shards-{n}-{mode}"));
    let ckpt = splitter::open(input).unwrap_or_else(|e| panic!("opening {}: {e}", input.display()));
    let weights = splitter::WeightsMode::parse(mode).expect("a --weights mode");
    let outcome = splitter::split_with_notes(
        &ckpt,
        &out,
        &splitter::SplitOptions {
            shards: n,
            force: false,
            progress: false,
            weights,
        },
    )
    .unwrap_or_else(|e| panic!("splitting {} with --weights {mode}: {e}", input.display()));
    (out, outcome.notes)
}

/// What make_fixtures.py says `--weights MODE` must give for fixture `model`:
/// `weights/MODEL-MODE.json`.
#[derive(Debug, serde::Deserialize)]
pub struct WeightsReference {
    /// The prompt's ids.
    pub tokens: Vec<u32>,
    /// Storage type of every canonical tensor.
    pub types: std::collections::BTreeMap<String, String>,
    /// `(T, V)` logits of the prefill, computed on exactly those weights.
    pub logits: Vec<Vec<f32>>,
    pub greedy: Vec<u32>,
}

/// Loads `weights/MODEL-MODE.json` of the fixtures.
pub fn weights_reference(model: &str, mode: &str) -> WeightsReference {
    let path = weights_reference_path(model, mode, "json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `weights/MODEL-MODE.EXT` of the fixtures (`safetensors`: the tensors themselves).
pub fn weights_reference_path(model: &str, mode: &str, ext: &str) -> PathBuf {
    fixtures()
        .join("weights")
        .join(format!("{model}-{mode}.{ext}"))
}

/// `(model folder, --weights mode)` pairs make_fixtures.py writes a `weights/MODEL-MODE`
/// reference for (tests/splitter.rs checks the bytes, tests/cpu_numerics.rs the logits).
pub const WEIGHTS_CASES: [(&str, &str); 6] = [
    ("llama-hf", "q8_0"),
    ("llama-hf", "q4_0"),
    ("llama-hf", "q4_1"),
    ("llama-gguf", "keep"),
    ("llama-gguf", "q4_1"),
    ("llama-gguf-k", "keep"),
];
