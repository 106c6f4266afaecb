//! Model import and sharding for Synapse.
//!
//! Reads a GGUF file (arch llama) or a Hugging Face model folder (gpt2 or llama), converts every
//! tensor to f16 in the canonical layout described in [`manifest`], and writes a model directory:
//! `manifest.json`, `tokenizer.json` and one safetensors file per shard (a contiguous layer range).

pub mod error;
pub mod gguf;
pub mod manifest;
pub mod quant;

pub use error::{Result, SplitError};
pub use manifest::{Architecture, Manifest, ModelConfig, ShardInfo, TensorInfo};
