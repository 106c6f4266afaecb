//! Engines run a shard (a contiguous layer range) for one step of one session.
//!
//! A step takes token ids (first shard) or hidden states `(T, C)` (any other shard) at positions
//! `pos..pos + T`, appends to the session's KV cache, and returns hidden states `(T, C)` or, on
//! the last shard, logits. The CPU engine ([`cpu`]) is the numerical oracle; later backends
//! implement the same [`ShardExecutor`] trait and are tested against it.

pub mod cpu;
pub mod error;
pub mod weights;

pub use error::EngineError;

/// Identifies a generation's state (its KV caches) on every shard.
pub type SessionId = u64;

/// A row-major `(rows, cols)` block of f32 activations: one row per token.
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Activations {
    /// Wraps `data`, checking that it holds `rows * cols` values.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, EngineError> {
        if data.len() != rows * cols {
            return Err(EngineError::Shape(format!(
                "activation data has {} values, expected {rows} x {cols}",
                data.len()
            )));
        }
        Ok(Activations { rows, cols, data })
    }

    /// Row `i` as a slice.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// What a step consumes.
#[derive(Debug, Clone, Copy)]
pub enum StepInput<'a> {
    /// Token ids, for the shard holding the embedding.
    Tokens(&'a [u32]),
    /// Hidden states `(T, C)` from the previous shard.
    Hidden(&'a Activations),
}

impl StepInput<'_> {
    /// Number of tokens in the step.
    pub fn len(&self) -> usize {
        match self {
            StepInput::Tokens(t) => t.len(),
            StepInput::Hidden(h) => h.rows,
        }
    }

    /// True when the step carries no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which rows of logits the last shard computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token's row: what generation needs.
    Last,
    /// Every token's row: what tests and teacher-forced measurements need.
    All,
}

/// What a step produces.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutput {
    /// Hidden states `(T, C)` for the next shard.
    Hidden(Activations),
    /// Logits `(1 or T, V)`, from the shard holding the output head.
    Logits(Activations),
}

/// A loaded shard that runs steps for any number of sessions.
pub trait ShardExecutor: Send {
    /// The shard's manifest entry.
    fn shard(&self) -> &splitter::ShardInfo;
    /// Creates an empty KV cache for `session`.
    fn open_session(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// Frees `session`'s KV cache; unknown sessions are an error.
    fn close_session(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// Tokens already in `session`'s cache, or `None` for an unknown session.
    fn session_len(&self, session: SessionId) -> Option<usize>;
    /// Runs the shard's layers for tokens at positions `pos..pos + input.len()`, where `pos`
    /// must equal the session's cached length.
    fn step(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        logits: LogitsMode,
    ) -> Result<StepOutput, EngineError>;
}
