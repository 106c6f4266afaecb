//! Building `tokenizer.json` (Hugging Face tokenizers format) for a model directory: from the
//! vocabulary and merges stored in a GGUF, from GPT-2 style vocab.json + merges.txt, or by
//! checking and copying an existing tokenizer.json. The result is always loaded back with the
//! `tokenizers` crate before it is written, so a model directory never holds one it cannot read.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Result, SplitError};

/// How text is split before BPE, by the name llama.cpp stores in `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's byte-level regex.
    Gpt2,
    /// SmolLM: every digit alone, then GPT-2's byte-level regex.
    SmolLm,
}

impl PreTokenizer {
    /// Maps a `tokenizer.ggml.pre` value; `None` for names Synapse does not implement.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "default" | "gpt2" | "gpt-2" => Some(PreTokenizer::Gpt2),
            "smollm" => Some(PreTokenizer::SmolLm),
            _ => None,
        }
    }
}

/// A byte-level BPE tokenizer from its parts; `special` lists tokens matched whole in text and
/// marked special (GGUF control tokens, `<|endoftext|>`).
pub fn byte_level_bpe(
    path: &Path,
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    special: &[String],
    pre: PreTokenizer,
) -> Result<String> {
    let vocab: tokenizers::models::bpe::Vocab = vocab.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| SplitError::corrupt(path, format!("tokenizer vocabulary or merges: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre: PreTokenizerWrapper = match pre {
        PreTokenizer::Gpt2 => byte_level.into(),
        PreTokenizer::SmolLm => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
    };
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.add_special_tokens(special.iter().map(|s| AddedToken::from(s.clone(), true)))
        .map_err(|e| SplitError::corrupt(path, format!("special tokens: {e}")))?;
    let json = tok
        .to_string(false)
        .map_err(|e| SplitError::corrupt(path, format!("cannot serialise the tokenizer: {e}")))?;
    check(path, &json)?;
    Ok(json)
}

/// A GPT-2 style tokenizer from `vocab.json` and `merges.txt` in `dir`.
pub fn from_vocab_merges(dir: &Path, special: &[String]) -> Result<String> {
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    let text = std::fs::read_to_string(&vocab_path).map_err(|e| SplitError::io(&vocab_path, e))?;
    let vocab: HashMap<String, u32> = serde_json::from_str(&text).map_err(|e| {
        SplitError::corrupt(&vocab_path, format!("not a JSON object of token ids: {e}"))
    })?;
    let text =
        std::fs::read_to_string(&merges_path).map_err(|e| SplitError::io(&merges_path, e))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let (a, b) = line.split_once(' ').ok_or_else(|| {
            SplitError::corrupt(&merges_path, format!("line {}: expected two tokens", i + 1))
        })?;
        merges.push((a.to_string(), b.to_string()));
    }
    let special: Vec<String> = special
        .iter()
        .filter(|s| vocab.contains_key(*s))
        .cloned()
        .collect();
    byte_level_bpe(&merges_path, vocab, merges, &special, PreTokenizer::Gpt2)
}

/// Checks that `json` loads as a tokenizer; `path` names where it came from.
pub fn check(path: &Path, json: &str) -> Result<()> {
    Tokenizer::from_bytes(json.as_bytes())
        .map(|_| ())
        .map_err(|e| SplitError::corrupt(path, format!("not a loadable tokenizer: {e}")))
}
