//! The model's tokenizer (Hugging Face `tokenizers`, from the model directory's tokenizer.json)
//! and an incremental detokenizer that never splits a multi-byte character.

use std::path::Path;

use splitter::ModelConfig;

/// Errors of loading the tokenizer or converting text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer {path}: {what}")]
    Load { path: String, what: String },
    #[error("tokenizing failed: {0}")]
    Encode(String),
    #[error("detokenizing failed: {0}")]
    Decode(String),
}

/// A model's tokenizer plus the BOS convention from its manifest.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
}

impl Tokenizer {
    /// Loads `path` (tokenizer.json); `config` says whether prompts start with BOS.
    pub fn load(path: &Path, config: &ModelConfig) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.display().to_string(),
            what: e.to_string(),
        })?;
        let bos = if config.add_bos_token {
            config.bos_token_id
        } else {
            None
        };
        Ok(Tokenizer { inner, bos })
    }

    /// Token ids of `text`, with BOS first when the model wants it. Special-token strings in
    /// the text (such as `<|im_start|>`) become their special ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(self
            .bos
            .into_iter()
            .chain(enc.get_ids().iter().copied())
            .collect())
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Turns generated ids into text piece by piece, holding back bytes until they form whole
/// characters. It owns its state, so it can live beside a session rather than borrow the
/// tokenizer.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
    all: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// Adds one id; returns the text it completes, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>, TokenizerError> {
        self.all.push(id);
        let piece = tokenizers::step_decode_stream(
            &tok.inner,
            vec![id],
            false,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(|e| TokenizerError::Decode(e.to_string()))?;
        if let Some(p) = &piece {
            self.emitted += p.len();
        }
        Ok(piece)
    }

    /// At the end of generation: whatever text is still held back (an incomplete character
    /// becomes U+FFFD rather than being lost).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<Option<String>, TokenizerError> {
        let full = tok.decode(&self.all)?;
        let rest = full.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = full.len();
        Ok((!rest.is_empty()).then_some(rest))
    }
}
