//! One generation as a plain state machine ([`SessionMachine`]): which tokens the next step
//! carries (the prompt in chunks of at most `chunk` tokens, so other sessions' steps run
//! between them; then one token at a time), what to do with a step's outcome (sample, or count
//! a failure and replay), and when to rebuild the caches: a session built under another epoch
//! replays every token so far, in chunks, before its next step, so no token is lost or
//! repeated and greedy output equals an uninterrupted run. The async loop that drives it
//! against the core lives in driver.rs.
//!
//! Speculative decoding (speculate.rs decides what and how much): a decode step carries the
//! last token and the drafted tokens after it, the last node returns top logits for each of
//! those positions, and the machine keeps the longest prefix of drafts its own sampler agrees
//! with plus the sampler's token at the first disagreement. The caches then hold rejected
//! drafts: the next step first truncates them on every node ([`Next::Step`]'s `truncate`), which
//! costs no replay. [`SessionMachine::rollback`] (an audit rejecting a node's tokens) truncates
//! the same way.

use serde::{Deserialize, Serialize};

use super::speculate::{DraftControl, SpeculateConfig, prompt_lookup};
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
    /// Speculative decoding for this request; unset follows the coordinator (`--speculate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculate: Option<bool>,
    /// Tokens are sent as they are sampled (the default). `false`: the answer is sent at the
    /// end and holds only tokens whose every hop was audited (a node caught lying cannot
    /// change it); a streamed answer that already carried a token a caught node computed
    /// ends with an error instead.
    #[serde(default = "default_stream")]
    pub stream: bool,
}

fn default_stream() -> bool {
    true
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
    /// The generation ended normally. `drafted`/`accepted`: speculative draft tokens sent
    /// and kept (0 when speculation was off).
    Done {
        ids: Vec<u32>,
        text: String,
        reason: String,
        tokens_per_second: f64,
        #[serde(default)]
        drafted: usize,
        #[serde(default)]
        accepted: usize,
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
    /// Run this step; with `reset`, free the session's caches on every node first (a replay);
    /// with `truncate`, first drop what the caches hold beyond that many tokens (rejected
    /// drafts).
    Step {
        req: StepRequest,
        reset: bool,
        truncate: Option<usize>,
    },
    /// The generation is complete.
    Done(&'static str),
}

/// What a step's outcome did to the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Advance {
    /// A chunk of the prompt (or of a replay) is in the caches; more follow.
    Prefilled,
    /// Tokens were sampled (one, or several when drafts were accepted); with `eos`, the
    /// model then ended the text (`ids` may be empty).
    Tokens { ids: Vec<u32>, eos: bool },
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
    /// Tokens of `seq` in the session's caches on the nodes.
    cached: usize,
    /// Tokens the caches hold, rejected drafts included (>= `cached`).
    held: usize,
    built_epoch: Option<u64>,
    /// End of the tokens of `seq` the step in flight carries.
    in_flight: Option<usize>,
    /// Drafted tokens the step in flight carries after them.
    draft: Vec<u32>,
    /// Speculation: its settings and what it learned; `None` when off.
    spec: Option<(SpeculateConfig, DraftControl)>,
    /// Wall time of the decode step in flight, once the driver has told it.
    pending_secs: Option<f64>,
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
            held: 0,
            built_epoch: None,
            in_flight: None,
            draft: Vec::new(),
            spec: None,
            pending_secs: None,
            failovers: 0,
            k: k.max(1),
            chunk: chunk.max(1),
            sampler: Sampler::new(sampling),
            eos,
        }
    }

    /// Turns speculative decoding on with `cfg` (off by default).
    pub fn speculate(mut self, cfg: SpeculateConfig) -> SessionMachine {
        self.spec =
            (cfg.enabled && cfg.max_draft > 0).then(|| (cfg, DraftControl::new(cfg.max_draft)));
        self
    }

    /// Draft tokens sent and accepted so far.
    pub fn drafts(&self) -> (usize, usize) {
        self.spec
            .as_ref()
            .map_or((0, 0), |(_, c)| (c.drafted_total, c.accepted_total))
    }

    /// Tokens drafted in the step in flight.
    pub fn drafting(&self) -> usize {
        self.draft.len()
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
            self.held = 0;
            self.built_epoch = Some(epoch);
        }
        let truncate = (self.held > self.cached).then_some(self.cached);
        self.held = self.cached;
        let end = (self.cached + self.chunk).min(self.seq.len());
        self.in_flight = Some(end);
        let mut tokens = self.seq[self.cached..end].to_vec();
        self.draft = self.draft_for(end, tokens.len());
        tokens.extend_from_slice(&self.draft);
        Next::Step {
            req: StepRequest {
                session: self.id,
                epoch,
                pos: self.cached,
                tokens,
                k: self.k,
                logit_rows: 1 + self.draft.len(),
            },
            reset,
            truncate,
        }
    }

    /// The drafts to send after a step of `carried` tokens ending at `end`: only for a decode
    /// step (the one token not yet cached), never beyond `max_tokens` or the chunk.
    fn draft_for(&mut self, end: usize, carried: usize) -> Vec<u32> {
        let Some((cfg, control)) = self.spec.as_mut() else {
            return Vec::new();
        };
        if end != self.seq.len() || carried != 1 {
            return Vec::new();
        }
        // A step that accepts every draft yields drafts + 1 tokens.
        let room = self
            .max_tokens
            .saturating_sub(self.seq.len() - self.prompt_len)
            .saturating_sub(1)
            .min(self.chunk - 1);
        let mut d = prompt_lookup(
            &self.seq,
            cfg.ngram_min,
            cfg.ngram_max,
            cfg.max_draft.min(room),
        );
        d.truncate(control.draft_len(d.len()));
        d
    }

    /// The step in flight took `secs` (its wall time, for the speculation's cost model; only
    /// decode steps count). Call before [`step_done`](Self::step_done).
    pub fn step_time(&mut self, secs: f64) {
        self.pending_secs = Some(secs);
    }

    /// The step from the last [`next`](Self::next) ended with `outcome`.
    pub fn step_done(&mut self, outcome: StepOutcome) -> Advance {
        let Some(end) = self.in_flight.take() else {
            return Advance::Retry;
        };
        let draft = std::mem::take(&mut self.draft);
        let secs = self.pending_secs.take();
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
        // A decode step carried the one token not yet cached (and drafts after it).
        let decode = self.cached + 1 == end;
        self.cached = end;
        self.held = end + draft.len();
        if end < self.seq.len() {
            return Advance::Prefilled;
        }
        // Row i predicts the token after the step's i-th draft; it counts only while every
        // draft before it was the sampler's own choice.
        let rows = top.rows.min(draft.len() + 1);
        let mut ids = Vec::with_capacity(rows);
        let mut eos = false;
        let mut accepted = 0;
        for (i, row) in (0..rows).map(|i| (i, top.row(i))) {
            let mut cands: Vec<(u32, f32)> = row.iter().map(|e| (e.id, e.logit)).collect();
            let next = self.sampler.sample(&mut cands, &self.seq);
            if self.eos.contains(&next) {
                eos = true;
                break;
            }
            self.seq.push(next);
            ids.push(next);
            if self.generated().len() >= self.max_tokens || draft.get(i) != Some(&next) {
                break;
            }
            // The draft at this position is in the caches and now part of the sequence.
            accepted += 1;
            self.cached += 1;
        }
        if let Some((_, control)) = self.spec.as_mut() {
            control.observe(draft.len(), accepted, secs.filter(|_| decode));
        }
        Advance::Tokens { ids, eos }
    }

    /// Forgets the tokens after the first `len` (never into the prompt). The caches keep
    /// what they hold before the last kept token (whose logits must be computed again) and
    /// are truncated to it before the next step.
    pub fn rollback(&mut self, len: usize) {
        let len = len.clamp(self.prompt_len, self.seq.len());
        self.seq.truncate(len);
        self.cached = self.cached.min(len.saturating_sub(1));
        self.in_flight = None;
        self.draft.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::state::HopFailure;
    use crate::protocol::{TopLogit, TopLogits};

    fn top(id: u32) -> StepOutcome {
        rows(&[id])
    }

    /// A reply whose row i has `ids[i]` best.
    fn rows(ids: &[u32]) -> StepOutcome {
        Ok(TopLogits {
            entries: ids
                .iter()
                .flat_map(|&id| [TopLogit { id, logit: 2.0 }, TopLogit { id: 99, logit: 1.0 }])
                .collect(),
            rows: ids.len(),
        })
    }

    fn one(id: u32) -> Advance {
        Advance::Tokens {
            ids: vec![id],
            eos: false,
        }
    }

    fn step(n: Next) -> (StepRequest, bool) {
        match n {
            Next::Step { req, reset, .. } => (req, reset),
            Next::Done(r) => panic!("done: {r}"),
        }
    }

    fn step3(n: Next) -> (StepRequest, bool, Option<usize>) {
        match n {
            Next::Step {
                req,
                reset,
                truncate,
            } => (req, reset, truncate),
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
            one(42),
            "sampled after the last chunk"
        );
        let (r, _) = step(s.next(5));
        assert_eq!((r.pos, r.tokens.clone(), r.logit_rows), (10, vec![42], 1));
        assert_eq!(s.step_done(top(43)), one(43));
        assert_eq!(s.next(5), Next::Done("max_tokens"));
        assert_eq!(s.generated(), &[42, 43]);
    }

    #[test]
    fn a_new_epoch_or_a_failure_replays_everything() {
        let mut s = SessionMachine::new(1, vec![5, 6, 7], 10, Default::default(), 8, 64, vec![0]);
        step(s.next(1));
        assert_eq!(s.step_done(top(8)), one(8));
        step(s.next(1));
        assert_eq!(s.step_done(top(9)), one(9));
        // The route changed: the whole sequence again from position 0, after a reset.
        let (r, reset) = step(s.next(2));
        assert!(reset);
        assert_eq!((r.pos, r.tokens.clone()), (0, vec![5, 6, 7, 8, 9]));
        assert_eq!(s.step_done(failed()), Advance::Retry);
        // A failure replays even on the same epoch.
        let (r, reset) = step(s.next(2));
        assert!(reset);
        assert_eq!(r.pos, 0);
        assert_eq!(s.step_done(top(1)), one(1));
        assert_eq!(s.failovers(), 1);
    }

    #[test]
    fn eos_ends_and_too_many_failures_give_up() {
        let mut s = SessionMachine::new(1, vec![5], 10, Default::default(), 8, 64, vec![0]);
        step(s.next(1));
        assert_eq!(
            s.step_done(top(0)),
            Advance::Tokens {
                ids: vec![],
                eos: true
            }
        );
        let mut s = SessionMachine::new(2, vec![5], 10, Default::default(), 8, 64, vec![0]);
        for _ in 0..MAX_FAILOVERS {
            step(s.next(1));
            assert_eq!(s.step_done(failed()), Advance::Retry);
        }
        step(s.next(1));
        assert!(matches!(s.step_done(failed()), Advance::GiveUp(m) if m.contains("node 3")));
    }

    #[test]
    fn rollback_truncates_to_the_position_and_keeps_the_prompt() {
        let mut s = SessionMachine::new(1, vec![5, 6], 10, Default::default(), 8, 64, vec![0]);
        for id in [10, 11, 12] {
            step(s.next(1));
            assert_eq!(s.step_done(top(id)), one(id));
        }
        s.rollback(3);
        assert_eq!(s.tokens(), &[5, 6, 10]);
        let (r, reset, truncate) = step3(s.next(1));
        assert!(!reset, "no replay: the caches are cut");
        assert_eq!(truncate, Some(2), "the last kept token is computed again");
        assert_eq!((r.pos, r.tokens.clone()), (2, vec![10]));
        s.rollback(0);
        assert_eq!(s.tokens(), &[5, 6], "never into the prompt");
    }

    /// A machine that speculates, with a prompt that repeats itself.
    fn speculating(max_tokens: usize) -> SessionMachine {
        let prompt = vec![1, 2, 3, 4, 1, 2];
        SessionMachine::new(7, prompt, max_tokens, Default::default(), 2, 64, vec![0])
            .speculate(SpeculateConfig::default())
    }

    #[test]
    fn a_verification_step_keeps_the_agreeing_drafts_and_the_samplers_token() {
        let mut s = speculating(20);
        let (r, _, _) = step3(s.next(1));
        assert_eq!(r.tokens.len(), 6, "the prompt, no drafts in a prefill");
        assert_eq!(s.step_done(top(3)), one(3));
        // [1, 2, 3] occurred before: drafts from [4, 1, 2, 3, 4, ...] (the copy repeating
        // with its period) after the last token 3, as many as the controller's prior finds
        // worth it.
        let (r, _, truncate) = step3(s.next(1));
        assert_eq!(truncate, None);
        let n = s.drafting();
        assert!((2..=8).contains(&n), "{n} drafts");
        assert_eq!((r.pos, r.tokens[0]), (6, 3));
        assert_eq!(r.tokens[1..], [4, 1, 2, 3, 4, 1, 2, 3][..n]);
        assert_eq!(r.logit_rows, n + 1);
        // The model agrees with 4 and 1, then says 9: three tokens from one step.
        assert_eq!(
            s.step_done(rows(&[4, 1, 9, 5, 5, 5, 5, 5, 5][..n + 1])),
            Advance::Tokens {
                ids: vec![4, 1, 9],
                eos: false
            }
        );
        assert_eq!(s.tokens(), &[1, 2, 3, 4, 1, 2, 3, 4, 1, 9]);
        assert_eq!(s.drafts(), (n, 2));
        // The caches hold 7 + n tokens (the prompt, 3, and the drafts); 9 are good.
        let (r, reset, truncate) = step3(s.next(1));
        assert!(!reset);
        assert_eq!(truncate, Some(9));
        assert_eq!((r.pos, r.tokens[0]), (9, 9));
        assert_eq!(r.logit_rows, r.tokens.len());
    }

    #[test]
    fn drafts_never_run_past_max_tokens_or_eos() {
        let mut s = speculating(3);
        step(s.next(1));
        assert_eq!(s.step_done(top(3)), one(3));
        let (r, _) = step(s.next(1));
        assert_eq!(
            r.tokens,
            vec![3, 4],
            "room for 2 more tokens: one draft and its successor"
        );
        assert_eq!(
            s.step_done(rows(&[4, 1])),
            Advance::Tokens {
                ids: vec![4, 1],
                eos: false
            }
        );
        assert_eq!(s.generated(), &[3, 4, 1]);
        assert_eq!(s.next(1), Next::Done("max_tokens"));

        let mut s = speculating(20);
        step(s.next(1));
        s.step_done(top(3));
        step(s.next(1));
        assert!(s.drafting() >= 2);
        // The model agrees with 4, then ends the text.
        let n = s.drafting();
        assert_eq!(
            s.step_done(rows(&[4, 0, 2, 3, 3, 3, 3, 3, 3][..n + 1])),
            Advance::Tokens {
                ids: vec![4],
                eos: true
            }
        );
    }

    #[test]
    fn a_failed_verification_step_replays_without_losing_a_token() {
        let mut s = speculating(20);
        step(s.next(1));
        s.step_done(top(3));
        step(s.next(1));
        assert_eq!(s.step_done(failed()), Advance::Retry);
        let (r, reset, truncate) = step3(s.next(2));
        assert!(reset);
        assert_eq!(truncate, None, "a reset frees everything anyway");
        assert_eq!((r.pos, r.tokens.clone()), (0, vec![1, 2, 3, 4, 1, 2, 3]));
        assert_eq!(s.step_done(top(4)), one(4));
    }
}
