//! Engine errors: what a step or a shard load can refuse, naming the shard, tensor or session.

/// Errors of loading shards and running steps.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading or checking a shard file failed.
    #[error("shard file {path}: {what}")]
    Load { path: String, what: String },
    /// A tensor the shard needs is missing or mis-shaped.
    #[error("shard file {path}: tensor `{tensor}`: {what}")]
    Tensor {
        path: String,
        tensor: String,
        what: String,
    },
    /// An input of the wrong shape or kind reached a step.
    #[error("bad step input: {0}")]
    Shape(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    Token { id: u32, vocab: usize },
    /// The sequence would exceed the model's context length.
    #[error("position {pos} exceeds the model's context length {context}")]
    Context { pos: usize, context: usize },
    /// Session bookkeeping: unknown, duplicate, or stepped at the wrong position.
    #[error("session {session}: {what}")]
    Session { session: u64, what: String },
    /// A failure of a GPU backend.
    #[error("gpu: {0}")]
    Gpu(String),
}
