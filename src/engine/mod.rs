//! Engines run a shard (a contiguous layer range) for one step of one session.
//!
//! A step takes token ids (first shard) or hidden states `(T, C)` (any other shard) at positions
//! `pos..pos + T`, appends to the session's KV cache, and returns hidden states `(T, C)` or, on
//! the last shard, logits. The CPU engine ([`cpu`]) is the numerical oracle; later backends
//! implement the same [`ShardExecutor`] trait and are tested against it.

pub mod cpu;
pub mod error;
pub mod gpu;
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

    /// Checks a step before any work, the same way in every engine: the session is open
    /// (`cached` is its length, `None` when it is not), the step starts where its cache ends,
    /// it has at least one token and stays within the context, and the input suits the shard
    /// (token ids within the vocabulary for the shard holding the embedding, hidden states
    /// `hidden_size` wide for any other).
    pub fn check(
        &self,
        session: SessionId,
        cached: Option<usize>,
        pos: usize,
        shard: &splitter::ShardInfo,
        cfg: &splitter::ModelConfig,
    ) -> Result<(), EngineError> {
        let len = cached.ok_or(EngineError::Session {
            session,
            what: "not open".into(),
        })?;
        if pos != len {
            return Err(EngineError::Session {
                session,
                what: format!("step at position {pos}, but {len} tokens are cached"),
            });
        }
        let t = self.len();
        if t == 0 {
            return Err(EngineError::Shape("a step needs at least one token".into()));
        }
        if pos + t > cfg.context_length {
            return Err(EngineError::Context {
                pos: pos + t,
                context: cfg.context_length,
            });
        }
        let (vocab, hidden) = (cfg.vocab_size, cfg.hidden_size);
        match (self, shard.has_embedding) {
            (StepInput::Tokens(ids), true) => match ids.iter().find(|&&id| id as usize >= vocab) {
                Some(&id) => Err(EngineError::Token { id, vocab }),
                None => Ok(()),
            },
            (StepInput::Hidden(h), false) if h.cols == hidden => Ok(()),
            (StepInput::Hidden(h), false) => Err(EngineError::Shape(format!(
                "hidden states have {} columns, expected {hidden}",
                h.cols
            ))),
            (StepInput::Tokens(_), false) => Err(EngineError::Shape(format!(
                "shard {} takes hidden states, not token ids",
                shard.index
            ))),
            (StepInput::Hidden(_), true) => Err(EngineError::Shape(
                "the first shard takes token ids, not hidden states".into(),
            )),
        }
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

/// Memory a loaded shard holds, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Its weights (as the engine holds them).
    pub weights: u64,
    /// KV caches of its open sessions.
    pub kv: u64,
}

/// A loaded shard that runs steps for any number of sessions.
pub trait ShardExecutor: Send {
    /// The shard's manifest entry.
    fn shard(&self) -> &splitter::ShardInfo;
    /// What the shard holds now. The default counts the shard file's bytes as weights and no
    /// cache; engines report what they really hold.
    fn memory(&self) -> MemoryUse {
        MemoryUse {
            weights: self.shard().bytes,
            kv: 0,
        }
    }
    /// Creates an empty KV cache for `session`.
    fn open_session(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// Frees `session`'s KV cache; unknown sessions are an error.
    fn close_session(&mut self, session: SessionId) -> Result<(), EngineError>;
    /// Tokens already in `session`'s cache, or `None` for an unknown session.
    fn session_len(&self, session: SessionId) -> Option<usize>;
    /// Drops the cache of `session` beyond its first `len` tokens (rejected speculative
    /// drafts, an audit's rollback), so the next step runs at position `len`. A `len` past
    /// the cached length, or an unknown session, is an error.
    fn truncate_session(&mut self, session: SessionId, len: usize) -> Result<(), EngineError>;
    /// Runs the shard's layers for tokens at positions `pos..pos + input.len()`, where `pos`
    /// must equal the session's cached length.
    fn step(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        logits: LogitsMode,
    ) -> Result<StepOutput, EngineError>;

    /// Like [`step`](Self::step) on the shard holding the output head, returning only the `k`
    /// largest logits of the last token as `(id, logit)`, most likely first (ties: lower id).
    /// The default computes the full logits and selects on the CPU; the GPU engine selects on
    /// the GPU and reads back only the `k` pairs.
    fn step_top_k(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        k: usize,
    ) -> Result<Vec<(u32, f32)>, EngineError> {
        if !self.shard().has_head {
            return Err(EngineError::Shape(format!(
                "shard {} has no output head",
                self.shard().index
            )));
        }
        match self.step(session, pos, input, LogitsMode::Last)? {
            StepOutput::Logits(l) => Ok(top_k(&l.data, k)),
            StepOutput::Hidden(_) => unreachable!("a shard with the head returns logits"),
        }
    }

    /// Like [`step_top_k`](Self::step_top_k) for the last `rows` tokens of the step (a
    /// speculative verification step needs a row for every drafted token): one list of `k`
    /// pairs per row, the earliest row first. `rows` must be between 1 and the step's length.
    /// The default computes every row's logits and selects on the CPU.
    fn step_top_k_rows(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        k: usize,
        rows: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, EngineError> {
        let t = input.len();
        check_logit_rows(rows, t)?;
        if rows == 1 {
            return Ok(vec![self.step_top_k(session, pos, input, k)?]);
        }
        if !self.shard().has_head {
            return Err(EngineError::Shape(format!(
                "shard {} has no output head",
                self.shard().index
            )));
        }
        match self.step(session, pos, input, LogitsMode::All)? {
            StepOutput::Logits(l) => Ok((t - rows..t).map(|r| top_k(l.row(r), k)).collect()),
            StepOutput::Hidden(_) => unreachable!("a shard with the head returns logits"),
        }
    }

    /// Like [`step`](Self::step) on a shard without the head, returning its hidden states
    /// quantized to int8 in SYN1's layout (one scale per row). The default quantizes on the
    /// CPU; the GPU engine quantizes on the GPU and reads back bytes, not floats.
    fn step_int8(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
    ) -> Result<Int8Rows, EngineError> {
        if self.shard().has_head {
            return Err(EngineError::Shape(format!(
                "shard {} ends in the output head: it returns logits",
                self.shard().index
            )));
        }
        match self.step(session, pos, input, LogitsMode::Last)? {
            StepOutput::Hidden(h) => Int8Rows::quantize(&h),
            StepOutput::Logits(_) => unreachable!("a shard without the head returns hidden states"),
        }
    }
}

/// Hidden states quantized for the wire (SYN1 int8, several rows): `q (rows, cols)` and one
/// scale per row, `scale = max|x| / 127` (1 for an all-zero row).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Rows {
    pub rows: usize,
    pub cols: usize,
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
}

impl Int8Rows {
    /// Quantizes `h` on the CPU with the protocol's exact rules.
    pub fn quantize(h: &Activations) -> Result<Self, EngineError> {
        use crate::protocol::{INT8_MAX_Q, quantize_into};
        let mut q = Vec::with_capacity(h.rows * h.cols);
        let mut scales = Vec::with_capacity(h.rows);
        for r in 0..h.rows {
            let s = quantize_into(h.row(r), INT8_MAX_Q, r * h.cols, &mut q)
                .map_err(|e| EngineError::Shape(format!("quantizing hidden states: {e}")))?;
            scales.push(s);
        }
        Ok(Int8Rows {
            rows: h.rows,
            cols: h.cols,
            q,
            scales,
        })
    }

    /// `q * scale` per row, as f32 activations.
    pub fn dequantize(&self) -> Activations {
        let data = self
            .q
            .iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * self.scales[i / self.cols])
            .collect();
        Activations {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
}

/// The check every engine's `step_top_k_rows` makes: between 1 and the step's `t` rows.
pub fn check_logit_rows(rows: usize, t: usize) -> Result<(), EngineError> {
    if rows == 0 || rows > t {
        return Err(EngineError::Shape(format!(
            "asked for the logits of {rows} rows of a {t}-token step"
        )));
    }
    Ok(())
}

/// The check every engine's `truncate_session` makes: the session is open and holds at least
/// `len` tokens.
pub fn check_truncate(
    session: SessionId,
    cached: Option<usize>,
    len: usize,
) -> Result<(), EngineError> {
    let have = cached.ok_or(EngineError::Session {
        session,
        what: "not open".into(),
    })?;
    if len > have {
        return Err(EngineError::Session {
            session,
            what: format!("cannot truncate to {len} tokens: {have} are cached"),
        });
    }
    Ok(())
}

/// The `k` largest of `logits` as `(id, logit)`, most likely first, ties to the lower id: the
/// CPU reference of the GPU's top-k.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut c: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, if l.is_nan() { f32::NEG_INFINITY } else { l }))
        .collect();
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    c.truncate(k);
    c
}
