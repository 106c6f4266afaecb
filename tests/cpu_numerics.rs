//! The CPU engine against the independent numpy reference of tests/fixtures/make_fixtures.py,
//! for the tiny synthetic GPT-2 and Llama models (Hugging Face safetensors and quantized GGUF),
//! whole and split into 1, 2 and 3 shards.

mod common;

use synapse::engine::cpu::CpuShard;
use synapse::engine::{Activations, LogitsMode, ShardExecutor, StepInput, StepOutput};
use synapse::model::ModelDir;
use synapse::sampling::{Sampler, SamplingParams};

/// Logits and hidden states agree to this: weights are identical f16 values on both sides, so
/// only f32 summation order differs.
const ATOL: f32 = 2e-3;
const RTOL: f32 = 2e-3;

const MODELS: [&str; 3] = ["gpt2-hf", "llama-hf", "llama-gguf"];

fn input_of(model: &str) -> std::path::PathBuf {
    let dir = common::fixtures().join(model);
    if model.contains("gguf") {
        dir.join("model.gguf")
    } else {
        dir
    }
}

fn flat(rows: &[Vec<f32>]) -> Vec<f32> {
    rows.iter().flatten().copied().collect()
}

/// Prefill of the whole prompt, logits for every position, for every split.
#[test]
fn prefill_logits_match_reference_for_every_split() {
    for model in MODELS {
        let reference = common::reference(&common::fixtures().join(model));
        let tmp = tempfile::tempdir().unwrap();
        for n in 1..=3 {
            let dir = common::split(&input_of(model), tmp.path(), n);
            let mut pipe = ModelDir::open(&dir).unwrap().cpu_pipeline().unwrap();
            pipe.open(7).unwrap();
            let logits = pipe
                .forward(7, 0, &reference.tokens, LogitsMode::All)
                .unwrap();
            assert_eq!(logits.rows, reference.tokens.len());
            common::assert_close(
                &format!("{model} {n} shards: logits"),
                &logits.data,
                &flat(&reference.logits),
                ATOL,
                RTOL,
            );
        }
    }
}

/// Each shard run on its own, fed the reference's hidden states, gives the reference's hidden
/// states at its last layer: shards are independent layer ranges.
#[test]
fn every_shard_alone_matches_reference_hidden_states() {
    for model in MODELS {
        let reference = common::reference(&common::fixtures().join(model));
        let tmp = tempfile::tempdir().unwrap();
        let dir = common::split(&input_of(model), tmp.path(), 3);
        let m = ModelDir::open(&dir).unwrap();
        let t = reference.tokens.len();
        for (i, info) in m.manifest.shards.iter().enumerate() {
            let mut shard = CpuShard::load(&dir, &m.manifest, i).unwrap();
            shard.open_session(1).unwrap();
            let hidden_in = Activations::new(
                t,
                m.manifest.config.hidden_size,
                flat(&reference.hidden[info.layers[0]]),
            )
            .unwrap();
            let input = if info.has_embedding {
                StepInput::Tokens(&reference.tokens)
            } else {
                StepInput::Hidden(&hidden_in)
            };
            match shard.step(1, 0, input, LogitsMode::All).unwrap() {
                StepOutput::Hidden(h) => {
                    let want = flat(&reference.hidden[info.layers[1] + 1]);
                    common::assert_close(
                        &format!("{model} shard {i} (layers {:?})", info.layers),
                        &h.data,
                        &want,
                        ATOL,
                        RTOL,
                    );
                }
                StepOutput::Logits(l) => {
                    assert!(info.has_head);
                    common::assert_close(
                        &format!("{model} last shard alone: logits"),
                        &l.data,
                        &flat(&reference.logits),
                        ATOL,
                        RTOL,
                    );
                }
            }
            shard.close_session(1).unwrap();
            assert_eq!(shard.session_len(1), None, "closing frees the session");
        }
    }
}

/// Growing the KV cache one token at a time gives the same logits as the prefill.
#[test]
fn decode_one_token_at_a_time_matches_prefill() {
    for model in MODELS {
        let reference = common::reference(&common::fixtures().join(model));
        let tmp = tempfile::tempdir().unwrap();
        let dir = common::split(&input_of(model), tmp.path(), 2);
        let mut pipe = ModelDir::open(&dir).unwrap().cpu_pipeline().unwrap();
        pipe.open(3).unwrap();
        // Prefill two tokens, then one at a time.
        let first = pipe
            .forward(3, 0, &reference.tokens[..2], LogitsMode::Last)
            .unwrap();
        common::assert_close(
            &format!("{model} prefill of 2: last logits"),
            &first.data,
            &reference.logits[1],
            ATOL,
            RTOL,
        );
        for p in 2..reference.tokens.len() {
            let l = pipe
                .forward(3, p, &reference.tokens[p..p + 1], LogitsMode::Last)
                .unwrap();
            common::assert_close(
                &format!("{model} decode at {p}"),
                &l.data,
                &reference.logits[p],
                ATOL,
                RTOL,
            );
        }
        // A step at the wrong position is refused.
        assert!(pipe.forward(3, 1, &[1], LogitsMode::Last).is_err());
        pipe.close(3).unwrap();
    }
}

/// Greedy decoding reproduces the reference's continuation.
#[test]
fn greedy_continuation_matches_reference() {
    for model in MODELS {
        let reference = common::reference(&common::fixtures().join(model));
        let tmp = tempfile::tempdir().unwrap();
        let dir = common::split(&input_of(model), tmp.path(), 3);
        let mut pipe = ModelDir::open(&dir).unwrap().cpu_pipeline().unwrap();
        let mut sampler = Sampler::new(SamplingParams::default());
        pipe.open(9).unwrap();
        let mut seq = reference.tokens.clone();
        let mut logits = pipe.forward(9, 0, &seq, LogitsMode::Last).unwrap();
        let mut got = Vec::new();
        for _ in 0..reference.greedy.len() {
            let next = sampler.sample_logits(&logits.data, &[]);
            got.push(next);
            seq.push(next);
            logits = pipe
                .forward(9, seq.len() - 1, &[next], LogitsMode::Last)
                .unwrap();
        }
        assert_eq!(got, reference.greedy, "{model}: greedy continuation");
    }
}

/// Logits of the block-weight runs agree to this: both sides hold exactly the same weights
/// (the numpy side dequantized, the engine decoding in its inner loop), so only f32 summation
/// order differs (about 1e-5 measured).
const BLOCK_TOL: f32 = 1e-4;

/// The CPU engine computing on Q8_0/Q4_0/Q4_1 blocks (as split with each `--weights` mode)
/// matches the numpy forward pass on those blocks dequantized: prefill logits within
/// [`BLOCK_TOL`], and the greedy continuation
/// decoded one token at a time is identical, for one and three shards.
#[test]
fn block_weights_match_the_dequantized_reference() {
    for (model, mode) in common::WEIGHTS_CASES {
        let reference = common::weights_reference(model, mode);
        let tokens = reference.tokens.clone();
        let tmp = tempfile::tempdir().unwrap();
        for n in [1, 3] {
            let at = format!("{model} --weights {mode}, {n} shards");
            let (dir, _) = common::split_weights(&input_of(model), tmp.path(), n, mode);
            let mut pipe = ModelDir::open(&dir).unwrap().cpu_pipeline().unwrap();
            pipe.open(5).unwrap();
            let logits = pipe.forward(5, 0, &tokens, LogitsMode::All).unwrap();
            common::assert_close(
                &format!("{at}: logits"),
                &logits.data,
                &flat(&reference.logits),
                BLOCK_TOL,
                BLOCK_TOL,
            );
            let mut sampler = Sampler::new(SamplingParams::default());
            let v = logits.cols;
            let mut last = logits.data[(tokens.len() - 1) * v..].to_vec();
            let mut got = Vec::new();
            for i in 0..reference.greedy.len() {
                let next = sampler.sample_logits(&last, &[]);
                got.push(next);
                last = pipe
                    .forward(5, tokens.len() + i, &[next], LogitsMode::Last)
                    .unwrap()
                    .data;
            }
            assert_eq!(got, reference.greedy, "{at}: greedy continuation");
        }
    }
}

/// What speculative decoding needs of the engine, checked bit for bit: a verification step
/// (the last token and drafts, top-k for every row) gives each row exactly what decoding the
/// tokens one at a time gives, and truncating the cache to a position then stepping equals a
/// session that never held the rejected tokens. For f16 and for block weights (whose
/// few-token products take the same fused path as one token).
#[test]
fn verification_rows_and_truncation_equal_plain_decoding() {
    let cases = [
        ("llama-hf", "f16"),
        ("gpt2-hf", "f16"),
        ("llama-hf", "q4_0"),
        ("llama-gguf-k", "keep"),
    ];
    for (model, mode) in cases {
        let at = format!("{model} --weights {mode}");
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = common::split_weights(&input_of(model), tmp.path(), 1, mode);
        let m = ModelDir::open(&dir).unwrap();
        let mut ex = CpuShard::load(&dir, &m.manifest, 0).unwrap();
        let vocab = m.manifest.config.vocab_size as u32;
        common::check_verification_and_truncation(&mut ex, vocab, 6, |what, a, b| {
            assert_eq!(a, b, "{at}: {what}")
        });
    }
}
