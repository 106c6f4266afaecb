//! One generation as a plain state machine ([`SessionMachine`]): which tokens the next step
//! carries (the prompt in chunks of at most `chunk` tokens, so other sessions' steps run
//! between them; then one token at a time), what to do with a step's outcome (sample, or count
//! a failure and replay), and when to rebuild the caches: a session built under another epoch
//! replays every token so far, in chunks, before its next step, so no token is lost or
//! repeated and greedy output equals an uninterrupted run. The async loop that drives it
//! against the core lives in driver.rs.
//!
//! Seams for later work: [`SessionMachine::rollback`] truncates the sequence to a position
//! (speculative decoding rejects drafts, an audit rejects a node's tokens); today the caches
//! are then rebuilt by replay, and a node message truncating a cache in place will make it
//! cheap. A multi-token verification step is a `StepRequest` whose last hop returns logits
//! for several rows.

use serde::{Deserialize, Serialize};

use super::state::{StepOutcome, StepRequest};
use crate::sampling::{Sampler, SamplingParams};

/// Failed steps tolerated in one generation before it gives up.
pub const MAX_FAILOVERS: usize = 8;

/// A generation request (`POST /api/generate`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GenerateRequest {
    pub prompt: String,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(flatten)]
    pub sampling: SamplingParams,
}

fn default_max_tokens() -> usize {
    128
}

/// What a generation streams out, one JSON line each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GenerateEvent {
    /// The session started: its id and the prompt's token ids.
    Start { session: u64, prompt_ids: Vec<u32> },
    /// A sampled token and the text it completed (possibly empty while a character is split).
    Token { id: u32, text: String },
    /// The generation ended normally.
    Done {
        ids: Vec<u32>,
        text: String,
        reason: String,
        tokens_per_second: f64,
    },
    /// The generation failed.
    Error { message: String },
    /// No complete pipeline of nodes: these shards had no node (or never finished loading)
    /// for the configured time. The HTTP API answers 503.
    Unavailable {
        message: String,
        missing_shards: Vec<usize>,
    },
}

/// Why a generation ended without finishing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The request cannot run (empty prompt, too long, bad sampling parameters).
    #[error("{0}")]
    Invalid(String),
    /// `max_sessions` generations are running.
    #[error("{running} generations are running; try again shortly")]
    Busy { running: usize },
    /// No complete pipeline for the configured time.
    #[error("no complete pipeline: {detail}")]
    Unavailable {
        /// Shards without a ready node.
        missing: Vec<usize>,
        detail: String,
    },
    /// The cluster kept failing, or a tokenizer error.
    #[error("{0}")]
    Failed(String),
}

impl SessionError {
    /// The event a client receives for this error.
    pub fn event(&self) -> GenerateEvent {
        match self {
            SessionError::Unavailable { missing, .. } => GenerateEvent::Unavailable {
                message: self.to_string(),
                missing_shards: missing.clone(),
            },
            other => GenerateEvent::Error {
                message: other.to_string(),
            },
        }
    }
}

/// What the session does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Run this step; with `reset`, free the session's caches on every node first (a replay).
    Step { req: StepRequest, reset: bool },
    /// The generation is complete.
    Done(&'static str),
}

/// What a step's outcome did to the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Advance {
    /// A chunk of the prompt (or of a replay) is in the caches; more follow.
    Prefilled,
    /// A token was sampled.
    Token(u32),
    /// The model ended the text.
    Eos,
    /// A hop failed: the session replays on the next route.
    Retry,
    /// Too many failed steps.
    GiveUp(String),
}

/// One generation. See the module docs.
pub struct SessionMachine {
    id: u64,
    seq: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    /// Tokens in the session's caches on the nodes.
    cached: usize,
    built_epoch: Option<u64>,
    /// End of the tokens the step in flight carries.
    in_flight: Option<usize>,
    failovers: usize,
    k: usize,
    chunk: usize,
    sampler: Sampler,
    eos: Vec<u32>,
}

impl SessionMachine {
    /// A session `id` continuing `prompt` by at most `max_tokens` tokens, asking the last node
    /// for `k` candidates and running prefills in chunks of at most `chunk` tokens.
    pub fn new(
        id: u64,
        prompt: Vec<u32>,
        max_tokens: usize,
        sampling: SamplingParams,
        k: usize,
        chunk: usize,
        eos: Vec<u32>,
    ) -> SessionMachine {
        SessionMachine {
            id,
            prompt_len: prompt.len(),
            seq: prompt,
            max_tokens,
            cached: 0,
            built_epoch: None,
            in_flight: None,
            failovers: 0,
            k: k.max(1),
            chunk: chunk.max(1),
            sampler: Sampler::new(sampling),
            eos,
        }
    }

    /// The session's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Prompt and generated tokens so far.
    pub fn tokens(&self) -> &[u32] {
        &self.seq
    }

    /// Generated tokens so far.
    pub fn generated(&self) -> &[u32] {
        &self.seq[self.prompt_len..]
    }

    /// Failed steps so far.
    pub fn failovers(&self) -> usize {
        self.failovers
    }

    /// The next step on the route of `epoch`.
    pub fn next(&mut self, epoch: u64) -> Next {
        if self.generated().len() >= self.max_tokens {
            return Next::Done("max_tokens");
        }
        let reset = self.built_epoch != Some(epoch);
        if reset {
            // Nodes may hold caches built on another route, complete or left by a step that
            // failed part-way: free them and replay everything on this route.
            self.cached = 0;
            self.built_epoch = Some(epoch);
        }
        let end = (self.cached + self.chunk).min(self.seq.len());
        self.in_flight = Some(end);
        Next::Step {
            req: StepRequest {
                session: self.id,
                epoch,
                pos: self.cached,
                tokens: self.seq[self.cached..end].to_vec(),
                k: self.k,
            },
            reset,
        }
    }

    /// The step from the last [`next`](Self::next) ended with `outcome`.
    pub fn step_done(&mut self, outcome: StepOutcome) -> Advance {
        let Some(end) = self.in_flight.take() else {
            return Advance::Retry;
        };
        let top = match outcome {
            Ok(top) => top,
            Err(f) => {
                self.failovers += 1;
                self.built_epoch = None;
                if self.failovers > MAX_FAILOVERS {
                    return Advance::GiveUp(format!(
                        "giving up after {MAX_FAILOVERS} failed steps; last: node {}: {}",
                        f.node, f.why
                    ));
                }
                return Advance::Retry;
            }
        };
        self.cached = end;
        if end < self.seq.len() {
            return Advance::Prefilled;
        }
        let mut cands: Vec<(u32, f32)> = top.entries.iter().map(|e| (e.id, e.logit)).collect();
        let next = self.sampler.sample(&mut cands, &self.seq);
        if self.eos.contains(&next) {
            return Advance::Eos;
        }
        self.seq.push(next);
        Advance::Token(next)
    }

    /// Forgets the tokens after the first `len` (never into the prompt): the caches are
    /// rebuilt to `len` by replay before the next step.
    pub fn rollback(&mut self, len: usize) {
        let len = len.clamp(self.prompt_len, self.seq.len());
        self.seq.truncate(len);
        if self.cached >= len {
            // The caches hold the last kept token (or more): its logits must be computed
            // again, so they are rebuilt.
            self.built_epoch = None;
        }
        self.in_flight = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::state::HopFailure;
    use crate::protocol::{TopLogit, TopLogits};

    fn top(id: u32) -> StepOutcome {
        Ok(TopLogits {
            entries: vec![TopLogit { id, logit: 2.0 }, TopLogit { id: 99, logit: 1.0 }],
        })
    }

    fn step(n: Next) -> (StepRequest, bool) {
        match n {
            Next::Step { req, reset } => (req, reset),
            Next::Done(r) => panic!("done: {r}"),
        }
    }

    fn failed() -> StepOutcome {
        Err(HopFailure {
            node: 3,
            why: "left".into(),
            blamed: false,
        })
    }

    #[test]
    fn a_long_prompt_runs_in_chunks_then_one_token_a_step() {
        let mut s = SessionMachine::new(1, (0..10).collect(), 2, Default::default(), 8, 4, vec![0]);
        let (r, reset) = step(s.next(5));
        assert!(reset, "a new session starts clean");
        assert_eq!((r.pos, r.tokens.clone(), r.epoch), (0, vec![0, 1, 2, 3], 5));
        assert_eq!(s.step_done(top(7)), Advance::Prefilled);
        let (r, reset) = step(s.next(5));
        assert!(!reset);
        assert_eq!((r.pos, r.tokens.len()), (4, 4));
        assert_eq!(s.step_done(top(7)), Advance::Prefilled);
        let (r, _) = step(s.next(5));
        assert_eq!((r.pos, r.tokens.clone()), (8, vec![8, 9]));
        assert_eq!(
            s.step_done(top(42)),
            Advance::Token(42),
            "sampled after the last chunk"
        );
        let (r, _) = step(s.next(5));
        assert_eq!((r.pos, r.tokens.clone()), (10, vec![42]));
        assert_eq!(s.step_done(top(43)), Advance::Token(43));
        assert_eq!(s.next(5), Next::Done("max_tokens"));
        assert_eq!(s.generated(), &[42, 43]);
    }

    #[test]
    fn a_new_epoch_or_a_failure_replays_everything() {
        let mut s = SessionMachine::new(1, vec![5, 6, 7], 10, Default::default(), 8, 64, vec![0]);
        step(s.next(1));
        assert_eq!(s.step_done(top(8)), Advance::Token(8));
        step(s.next(1));
        assert_eq!(s.step_done(top(9)), Advance::Token(9));
        // The route changed: the whole sequence again from position 0, after a reset.
        let (r, reset) = step(s.next(2));
        assert!(reset);
        assert_eq!((r.pos, r.tokens.clone()), (0, vec![5, 6, 7, 8, 9]));
        assert_eq!(s.step_done(failed()), Advance::Retry);
        // A failure replays even on the same epoch.
        let (r, reset) = step(s.next(2));
        assert!(reset);
        assert_eq!(r.pos, 0);
        assert_eq!(s.step_done(top(1)), Advance::Token(1));
        assert_eq!(s.failovers(), 1);
    }

    #[test]
    fn eos_ends_and_too_many_failures_give_up() {
        let mut s = SessionMachine::new(1, vec![5], 10, Default::default(), 8, 64, vec![0]);
        step(s.next(1));
        assert_eq!(s.step_done(top(0)), Advance::Eos);
        let mut s = SessionMachine::new(2, vec![5], 10, Default::default(), 8, 64, vec![0]);
        for _ in 0..MAX_FAILOVERS {
            step(s.next(1));
            assert_eq!(s.step_done(failed()), Advance::Retry);
        }
        step(s.next(1));
        assert!(matches!(s.step_done(failed()), Advance::GiveUp(m) if m.contains("node 3")));
    }

    #[test]
    fn rollback_replays_to_the_position_and_keeps_the_prompt() {
        let mut s = SessionMachine::new(1, vec![5, 6], 10, Default::default(), 8, 64, vec![0]);
        for id in [10, 11, 12] {
            step(s.next(1));
            assert_eq!(s.step_done(top(id)), Advance::Token(id));
        }
        s.rollback(3);
        assert_eq!(s.tokens(), &[5, 6, 10]);
        let (r, reset) = step(s.next(1));
        assert!(reset, "the caches held more than the sequence: rebuilt");
        assert_eq!((r.pos, r.tokens.clone()), (0, vec![5, 6, 10]));
        s.rollback(0);
        assert_eq!(s.tokens(), &[5, 6], "never into the prompt");
    }
}
