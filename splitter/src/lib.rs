//! Model import and sharding for Synapse.
//!
//! Reads a GGUF file (arch llama) or a Hugging Face model folder (gpt2 or llama), brings every
//! tensor into the canonical layout described in [`manifest`], stores matrices as f16 or as
//! GGML blocks ([`TensorType`], chosen by [`write::WeightsMode`]) and vectors as f16, and writes
//! a model directory:
//! `manifest.json`, `tokenizer.json` and one safetensors file per shard (a contiguous layer range).

pub mod checkpoint;
pub mod error;
pub mod gguf;
pub mod gguf_import;
pub mod hf;
pub mod manifest;
pub mod plan;
pub mod quant;
pub mod quantize;
pub mod tensor_type;
pub mod tokenizer_build;
pub mod weights_mode;
pub mod write;

use std::path::Path;

pub use checkpoint::Checkpoint;
pub use error::{Result, SplitError};
pub use manifest::{Architecture, Manifest, ModelConfig, ShardInfo, TensorInfo};
pub use tensor_type::TensorType;
pub use write::{SplitOptions, SplitOutcome, WeightsMode, split, split_with_notes};

/// Opens a checkpoint: a `.gguf` file or a Hugging Face model folder.
pub fn open(input: &Path) -> Result<Checkpoint> {
    let meta = std::fs::metadata(input).map_err(|e| SplitError::io(input, e))?;
    if meta.is_dir() {
        hf::open(input)
    } else {
        gguf_import::open(input)
    }
}
