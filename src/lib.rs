//! Synapse: a language model split across ordinary devices' GPUs.
//!
//! This crate holds the engines, the tokenizer and sampling, and the command-line front end's
//! building blocks; `splitter` (its own crate) imports checkpoints and writes shards.

#[cfg(feature = "gui")]
pub mod app;
pub mod bench;
pub mod bench_distributed;
pub mod coordinator;
pub mod cpus;
pub mod engine;
pub mod fetch;
pub mod generate;
pub mod model;
pub mod node;
pub mod protocol;
pub mod sampling;
pub mod sim;
pub mod tokenizer;
pub mod wire_eval;
