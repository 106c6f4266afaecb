//! Model import and sharding for Synapse.
//!
//! Reads a GGUF file (arch llama) or a Hugging Face model folder (gpt2 or llama), converts every
//! tensor to f16 in the canonical layout described in [`manifest`], and writes a model directory:
//! `manifest.json`, `tokenizer.json` and one safetensors file per shard (a contiguous layer range).

pub mod checkpoint;
pub mod error;
pub mod gguf;
pub mod gguf_import;
pub mod hf;
pub mod manifest;
pub mod plan;
pub mod quant;
pub mod tokenizer_build;
pub mod write;

use std::path::Path;

pub use checkpoint::Checkpoint;
pub use error::{Result, SplitError};
pub use manifest::{Architecture, Manifest, ModelConfig, ShardInfo, TensorInfo};
pub use write::{SplitOptions, split};

/// Opens a checkpoint: a `.gguf` file or a Hugging Face model folder.
pub fn open(input: &Path) -> Result<Checkpoint> {
    let meta = std::fs::metadata(input).map_err(|e| SplitError::io(input, e))?;
    if meta.is_dir() {
        hf::open(input)
    } else {
        gguf_import::open(input)
    }
}
