//! The GPU engine against the CPU engine on whole models: the tiny synthetic GPT-2 and Llama
//! fixtures (prefill and decode, split into 1, 2 and 3 shards, KV cache grown one token at a
//! time, int8 boundaries and GPU top-k), and SmolLM2 generating through `synapse generate
//! --backend gpu`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use synapse::engine::cpu::CpuShard;
use synapse::engine::gpu::{GpuContext, GpuOptions, GpuShard};
use synapse::engine::{Activations, LogitsMode, ShardExecutor, StepInput, StepOutput};
use synapse::model::ModelDir;

/// GPU vs CPU on identical f16 weights: f32 arithmetic in a different order.
const ATOL: f32 = 1e-3;
const RTOL: f32 = 1e-3;

const MODELS: [&str; 3] = ["gpt2-hf", "llama-hf", "llama-gguf"];

fn context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = GpuContext::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe on CI)");
        eprintln!("{}", ctx.describe());
        ctx
    })
    .clone()
}

fn input_of(model: &str) -> PathBuf {
    let dir = common::fixtures().join(model);
    if model.contains("gguf") {
        dir.join("model.gguf")
    } else {
        dir
    }
}

fn logits_of(out: StepOutput) -> Activations {
    match out {
        StepOutput::Logits(l) => l,
        StepOutput::Hidden(_) => panic!("expected logits"),
    }
}

/// Prefill logits for every position, GPU vs CPU, for 1, 2 and 3 shards.
#[test]
fn prefill_logits_match_cpu_for_every_split() {
    for model in MODELS {
        let reference = common::reference(&common::fixtures().join(model));
        let tmp = tempfile::tempdir().unwrap();
        for n in 1..=3 {
            let dir = common::split(&input_of(model), tmp.path(), n);
            let m = ModelDir::open(&dir).unwrap();
            let mut cpu = m.cpu_pipeline().unwrap();
            let mut gpu = m.gpu_pipeline(&context()).unwrap();
            cpu.open(1).unwrap();
            gpu.open(1).unwrap();
            let want = cpu
                .forward(1, 0, &reference.tokens, LogitsMode::All)
                .unwrap();
            let got = gpu
                .forward(1, 0, &reference.tokens, LogitsMode::All)
                .unwrap();
            assert_eq!((got.rows, got.cols), (want.rows, want.cols));
            common::assert_close(
                &format!("{model} {n} shards: prefill logits"),
                &got.data,
                &want.data,
                ATOL,
                RTOL,
            );
            gpu.close(1).unwrap();
        }
    }
}

/// Prefill of two tokens then one token per step gives the CPU's prefill logits at every
/// position; the Llama fixtures run past 64 tokens, where the GPU KV cache first grows.
#[test]
fn decode_one_token_at_a_time_matches_cpu_prefill() {
    for model in MODELS {
        let reference = common::reference(&common::fixtures().join(model));
        let tmp = tempfile::tempdir().unwrap();
        let dir = common::split(&input_of(model), tmp.path(), 2);
        let m = ModelDir::open(&dir).unwrap();
        let context_len = m.manifest.config.context_length;
        let len = (context_len - 8).min(90);
        let tokens: Vec<u32> = (0..len)
            .map(|i| reference.tokens[i % reference.tokens.len()] + (i / 8) as u32)
            .collect();
        let mut cpu = m.cpu_pipeline().unwrap();
        cpu.open(1).unwrap();
        let want = cpu.forward(1, 0, &tokens, LogitsMode::All).unwrap();
        let mut gpu = m.gpu_pipeline(&context()).unwrap();
        gpu.open(2).unwrap();
        let first = gpu.forward(2, 0, &tokens[..2], LogitsMode::Last).unwrap();
        common::assert_close(
            &format!("{model} prefill of 2"),
            &first.data,
            want.row(1),
            ATOL,
            RTOL,
        );
        let mut worst = 0f32;
        for p in 2..len {
            let l = gpu
                .forward(2, p, &tokens[p..p + 1], LogitsMode::Last)
                .unwrap();
            let e = common::assert_close(
                &format!("{model} decode at {p}"),
                &l.data,
                want.row(p),
                ATOL,
                RTOL,
            );
            worst = worst.max(e);
        }
        eprintln!("{model}: {len} positions decoded one at a time, max |err| {worst:.2e}");
        assert!(
            gpu.forward(2, 1, &[1], LogitsMode::Last).is_err(),
            "wrong position"
        );
        gpu.close(2).unwrap();
    }
}

/// Shards alone, with the norms fused into the products: hidden states (f32 and int8
/// quantized on the GPU) and the GPU top-k equal the CPU's; sessions are independent; closing
/// frees the cache.
#[test]
fn shard_outputs_int8_top_k_and_sessions() {
    for model in MODELS {
        let reference = common::reference(&common::fixtures().join(model));
        let tmp = tempfile::tempdir().unwrap();
        let dir = common::split(&input_of(model), tmp.path(), 2);
        let m = ModelDir::open(&dir).unwrap();
        let mut c0 = CpuShard::load(&dir, &m.manifest, 0).unwrap();
        let mut c1 = CpuShard::load(&dir, &m.manifest, 1).unwrap();
        let mut g0 = GpuShard::load(context(), &dir, &m.manifest, 0).unwrap();
        let mut g1 = GpuShard::load(context(), &dir, &m.manifest, 1).unwrap();
        // The pipelines above run what the adapter prefers (norms on their own on lavapipe);
        // these shards run the norms fused into the products.
        g0.set_fuse_norms(true);
        g1.set_fuse_norms(true);
        for s in [1, 2] {
            c0.open_session(s).unwrap();
            c1.open_session(s).unwrap();
            g0.open_session(s).unwrap();
            g1.open_session(s).unwrap();
        }
        let toks = &reference.tokens;
        let StepOutput::Hidden(want_h) = c0
            .step(1, 0, StepInput::Tokens(toks), LogitsMode::Last)
            .unwrap()
        else {
            panic!("shard 0 has no head")
        };
        // Session 2 gets a different prompt first: sessions must not share caches.
        g0.step(2, 0, StepInput::Tokens(&toks[..3]), LogitsMode::Last)
            .unwrap();
        let q = g0.step_int8(1, 0, StepInput::Tokens(toks)).unwrap();
        let cpu_q = synapse::engine::Int8Rows::quantize(&want_h).unwrap();
        common::assert_close(
            &format!("{model} int8 scales"),
            &q.scales,
            &cpu_q.scales,
            0.0,
            1e-3,
        );
        // The GPU's q equal the CPU's quantization of the CPU's hidden states, except where
        // the two hidden states straddle a rounding boundary; either way within one step.
        let differ = q.q.iter().zip(&cpu_q.q).filter(|(a, b)| a != b).count();
        assert!(
            q.q.iter()
                .zip(&cpu_q.q)
                .all(|(a, b)| (*a as i32 - *b as i32).abs() <= 1),
            "{model}: int8 values differ by more than one step"
        );
        assert!(
            differ * 100 <= q.q.len(),
            "{model}: {differ} int8 values differ"
        );
        let half_step = q.scales.iter().fold(0f32, |m, s| m.max(*s)) * 0.5;
        common::assert_close(
            &format!("{model} int8 boundary, dequantized, vs f32"),
            &q.dequantize().data,
            &want_h.data,
            half_step + ATOL,
            0.0,
        );
        let logits = logits_of(
            c1.step(1, 0, StepInput::Hidden(&want_h), LogitsMode::Last)
                .unwrap(),
        );
        let got = g1.step_top_k(1, 0, StepInput::Hidden(&want_h), 10).unwrap();
        let want = synapse::engine::top_k(&logits.data, 10);
        assert_eq!(
            got.iter().map(|p| p.0).collect::<Vec<_>>()[..3],
            want.iter().map(|p| p.0).collect::<Vec<_>>()[..3],
            "{model}: top-3 ids"
        );
        let (gv, wv): (Vec<f32>, Vec<f32>) = got.iter().zip(&want).map(|(a, b)| (a.1, b.1)).unzip();
        common::assert_close(&format!("{model} top-10 logits"), &gv, &wv, ATOL, RTOL);
        assert_eq!(g0.session_len(1), Some(toks.len()));
        assert_eq!(g0.session_len(2), Some(3));
        let held = g0.session_bytes();
        g0.close_session(2).unwrap();
        assert!(
            g0.session_bytes() < held,
            "closing a session frees its cache"
        );
        assert_eq!(g0.session_len(2), None);
        assert!(g0.close_session(2).is_err());
    }
}

/// Runs `synapse generate --backend gpu` greedily on `model`.
fn generate_gpu(model: &Path, max_tokens: usize) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_synapse"))
        .args([
            "generate",
            "--backend",
            "gpu",
            "--temperature",
            "0",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
        ])
        .arg(max_tokens.to_string())
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "synapse generate failed: {stderr}");
    eprintln!("{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// SmolLM2-135M (the default model, three shards) on the GPU backend continues greedily with
/// " Paris.".
#[test]
fn smollm2_on_the_gpu_says_paris() {
    let dir = common::default_model();
    let text = generate_gpu(&dir, 3);
    assert!(text.starts_with(" Paris."), "{text:?}");
}

/// Shards split with block weights (`--weights q8_0`, `q4_1`, `keep` of Q4_0/Q4_1/Q8_0 and of
/// Q4_K/Q6_K) load on the GPU, which
/// expands their blocks to f16 for now: prefill logits match the CPU engine computing on the
/// blocks themselves, up to the f16 rounding of the dequantized weights (the CPU engine keeps
/// them exact), and the GPU reports the f16 bytes it really holds.
#[test]
fn block_weight_splits_load_expanded_to_f16() {
    /// The GPU holds `f16(q * d + m)`, the CPU `q * d + m` in f32: relative 2^-11 per weight,
    /// up to 1.6e-2 on the logits of the 256-wide K-quant fixture (8e-3 on the 64-wide ones).
    const TOL: f32 = 2e-2;
    for (model, mode) in [
        ("llama-hf", "q8_0"),
        ("llama-hf", "q4_1"),
        ("llama-gguf", "keep"),
        ("llama-gguf-k", "keep"),
    ] {
        let tokens = common::weights_reference(model, mode).tokens;
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = common::split_weights(&input_of(model), tmp.path(), 2, mode);
        let m = ModelDir::open(&dir).unwrap();
        let mut cpu = m.cpu_pipeline().unwrap();
        let mut gpu = m.gpu_pipeline(&context()).unwrap();
        cpu.open(1).unwrap();
        gpu.open(1).unwrap();
        let want = cpu.forward(1, 0, &tokens, LogitsMode::All).unwrap();
        let got = gpu.forward(1, 0, &tokens, LogitsMode::All).unwrap();
        common::assert_close(
            &format!("{model} --weights {mode}: GPU (f16-expanded) vs CPU (blocks) prefill logits"),
            &got.data,
            &want.data,
            TOL,
            TOL,
        );
        for (i, info) in m.manifest.shards.iter().enumerate() {
            let shard = GpuShard::load(context(), &dir, &m.manifest, i).unwrap();
            let held = shard.memory().weights;
            assert!(
                held > info.bytes,
                "{model} --weights {mode} shard {i}: the GPU holds {held} bytes, the file {}",
                info.bytes
            );
        }
    }
}

/// Speculative decoding on the GPU engine: a verification step's rows (the head and top-k a
/// row at a time on the GPU, as the browser engine does) hold the same top-k as decoding the
/// tokens one at a time, with logits within the kernels' rounding; truncating the cache and
/// stepping on gives what a session that never held the rejected tokens gives.
#[test]
fn verification_rows_and_truncation_match_one_token_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::split(&input_of("llama-hf"), tmp.path(), 1);
    let m = ModelDir::open(&dir).unwrap();
    let mut ex = GpuShard::load(context(), &dir, &m.manifest, 0).unwrap();
    let vocab = m.manifest.config.vocab_size as u32;
    common::check_verification_and_truncation(&mut ex, vocab, 4, |what, a, b| {
        let ids = |v: &[(u32, f32)]| v.iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(ids(a), ids(b), "{what}: top-k ids");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x.1 - y.1).abs())
            .fold(0.0, f32::max);
        assert!(worst < ATOL, "{what}: logits differ by {worst}");
    });
}
