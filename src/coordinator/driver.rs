//! The async loop of one generation: it runs a [`SessionMachine`] against the core, waiting
//! for a complete route, for each step's end, and for the client, whichever comes first. A
//! client that goes away (the receiver of the session's events dropped) ends the session at
//! once, even in the middle of a prefill: the step in flight is abandoned and the caches are
//! closed on every node. The session's caches are freed in every case.

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::Coordinator;
use super::session::{Advance, GenerateEvent, GenerateRequest, Next, SessionError, SessionMachine};
use super::state::{HopFailure, RouteState, StepRefused};
use crate::tokenizer::TextStream;

/// How often a session waiting for a route looks again (besides being woken by changes).
const ROUTE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Cuts `machine` back to `len` tokens after a failed audit; an error when the client was
/// already sent a token past the cut (`sent` generated tokens were sent).
fn rolled_back(machine: &mut SessionMachine, len: usize, sent: usize) -> Result<(), SessionError> {
    let prompt = machine.tokens().len() - machine.generated().len();
    // The prompt is never taken back: a bad row in it only means its logits are recomputed.
    let len = len.max(prompt);
    if len < prompt + sent {
        return Err(SessionError::Failed(format!(
            "a node failed verification at position {}: {} tokens already sent were computed through it (ask again, or without streaming to get only verified tokens)",
            len.saturating_sub(1),
            prompt + sent - len
        )));
    }
    machine.rollback(len);
    Ok(())
}

/// How a session loop ended without an error.
enum End {
    /// `max_tokens` or `eos`.
    Finished(&'static str),
    ClientLeft,
}

impl Coordinator {
    /// Runs a generation, sending its events to `out`; returns when it ends, the client goes
    /// away (`out` closed), or it fails (then the last event is `Error` or `Unavailable`).
    /// The session's caches are freed on every node in all cases.
    pub async fn generate(&self, req: GenerateRequest, out: mpsc::Sender<GenerateEvent>) {
        if let Err(e) = self.run_generation(req, &out).await {
            let _ = out.send(e.event()).await;
        }
    }

    /// [`generate`](Self::generate) returning its error instead of sending it.
    pub async fn run_generation(
        &self,
        req: GenerateRequest,
        out: &mpsc::Sender<GenerateEvent>,
    ) -> Result<(), SessionError> {
        req.sampling.validate().map_err(SessionError::Invalid)?;
        let prompt_ids = self
            .tokenizer()
            .encode(&req.prompt)
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        if prompt_ids.is_empty() {
            return Err(SessionError::Invalid("the prompt is empty".into()));
        }
        let ctx = self.manifest().config.context_length;
        if prompt_ids.len() >= ctx {
            return Err(SessionError::Invalid(format!(
                "the prompt is {} tokens; the model's context is {ctx}",
                prompt_ids.len()
            )));
        }
        let session = self
            .act(|hub, _| hub.core.open_session(prompt_ids.len()))
            .map_err(|running| SessionError::Busy { running })?;
        let result = self.drive(session, &req, prompt_ids, out).await;
        let reason = match &result {
            Ok(End::Finished(r)) => r.to_string(),
            Ok(End::ClientLeft) => "client left".to_string(),
            Err(e) => format!("error: {e}"),
        };
        self.act(|hub, _| hub.core.end_session(session, &reason));
        result.map(|_| ())
    }

    async fn drive(
        &self,
        session: u64,
        req: &GenerateRequest,
        prompt_ids: Vec<u32>,
        out: &mpsc::Sender<GenerateEvent>,
    ) -> Result<End, SessionError> {
        let cfg = &self.manifest().config;
        let max_tokens = req.max_tokens.min(cfg.context_length - prompt_ids.len());
        let start = GenerateEvent::Start {
            session,
            prompt_ids: prompt_ids.clone(),
        };
        if out.send(start).await.is_err() {
            return Ok(End::ClientLeft);
        }
        let k = self
            .config()
            .top_k
            .max(req.sampling.top_k)
            .min(cfg.vocab_size);
        let mut spec = self.config().speculate;
        spec.enabled &= req.speculate.unwrap_or(true);
        let mut machine = SessionMachine::new(
            session,
            prompt_ids,
            max_tokens,
            req.sampling.clone(),
            k,
            self.config().prefill_chunk,
            cfg.eos_token_ids.clone(),
        )
        .speculate(spec);
        let tok = self.tokenizer();
        let mut stream = TextStream::default();
        let mut text = String::new();
        let started = Instant::now();
        // A verified answer (not streamed) is sent at the end, once every token is audited.
        let verified = !req.stream;
        if verified {
            self.act(|hub, _| hub.core.verify_session(session));
        }
        // Generated tokens already sent to the client.
        let mut sent = 0usize;
        let reason = 'answer: loop {
            let reason = loop {
                if let Some(len) = self.act(|hub, _| hub.core.take_rollback(session)) {
                    rolled_back(&mut machine, len, sent)?;
                }
                let Some(epoch) = self.wait_route(out).await? else {
                    return Ok(End::ClientLeft);
                };
                let (req, reset, truncate) = match machine.next(epoch) {
                    Next::Done(r) => break r,
                    Next::Step {
                        req,
                        reset,
                        truncate,
                    } => (req, reset, truncate),
                };
                let (tx, rx) = oneshot::channel();
                let replay = machine.tokens().len();
                let began_at = Instant::now();
                let begun = self.act(|hub, now| {
                    if reset {
                        hub.core.reset_session(session, replay);
                    } else if let Some(len) = truncate {
                        hub.core.truncate_session(session, len);
                    }
                    let r = hub.core.begin_step(now, req);
                    if let Ok(id) = r {
                        hub.waiters.insert(id, tx);
                    }
                    r
                });
                let step = match begun {
                    Ok(id) => id,
                    // The route changed between looking and starting: look again.
                    Err(StepRefused::RouteChanged { .. } | StepRefused::NoRoute) => continue,
                    Err(e) => return Err(SessionError::Failed(e.to_string())),
                };
                let outcome = tokio::select! {
                    r = rx => r.unwrap_or_else(|_| Err(HopFailure {
                        node: 0,
                        why: "the coordinator dropped the step".into(),
                        blamed: false,
                    })),
                    _ = out.closed() => {
                        // Nobody will wait for this step's end: the core abandons it when the
                        // session ends, without a `StepDone`, so its slot would stay forever.
                        self.act(|hub, _| hub.waiters.remove(&step));
                        return Ok(End::ClientLeft);
                    }
                };
                machine.step_time(began_at.elapsed().as_secs_f64());
                match machine.step_done(outcome) {
                    Advance::Prefilled | Advance::Retry => continue,
                    Advance::GiveUp(why) => return Err(SessionError::Failed(why)),
                    Advance::Tokens { ids, eos } => {
                        // An audit may have failed while the step ran: its tokens may be the
                        // caught node's.
                        if let Some(len) = self.act(|hub, _| hub.core.take_rollback(session)) {
                            rolled_back(&mut machine, len, sent)?;
                            continue;
                        }
                        let before = machine.generated().len() - ids.len();
                        for (i, id) in ids.into_iter().enumerate() {
                            let n = before + i + 1;
                            if verified {
                                self.act(|hub, _| hub.core.token_sampled(session, n, id, ""));
                                continue;
                            }
                            let piece = stream
                                .push(tok, id)
                                .map_err(|e| SessionError::Failed(e.to_string()))?
                                .unwrap_or_default();
                            text.push_str(&piece);
                            self.act(|hub, _| hub.core.token_sampled(session, n, id, &piece));
                            sent = n;
                            if out
                                .send(GenerateEvent::Token { id, text: piece })
                                .await
                                .is_err()
                            {
                                return Ok(End::ClientLeft);
                            }
                        }
                        let (drafted, accepted) = machine.drafts();
                        self.act(|hub, _| hub.core.drafts_counted(session, drafted, accepted));
                        if eos {
                            break "eos";
                        }
                    }
                }
            };
            if !verified {
                break reason;
            }
            match self.flush_audits(session, out).await? {
                None => return Ok(End::ClientLeft),
                Some(None) => break 'answer reason,
                Some(Some(len)) => machine.rollback(len),
            }
        };
        if verified {
            // Every token is audited: the answer goes out now.
            for &id in machine.generated() {
                let piece = stream
                    .push(tok, id)
                    .map_err(|e| SessionError::Failed(e.to_string()))?
                    .unwrap_or_default();
                text.push_str(&piece);
                if out
                    .send(GenerateEvent::Token { id, text: piece })
                    .await
                    .is_err()
                {
                    return Ok(End::ClientLeft);
                }
            }
        }
        if let Some(rest) = stream
            .finish(tok)
            .map_err(|e| SessionError::Failed(e.to_string()))?
        {
            text.push_str(&rest);
            let _ = out
                .send(GenerateEvent::Token {
                    id: u32::MAX,
                    text: rest,
                })
                .await;
        }
        let ids = machine.generated().to_vec();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let (drafted, accepted) = machine.drafts();
        let _ = out
            .send(GenerateEvent::Done {
                tokens_per_second: ids.len() as f64 / secs,
                ids,
                text,
                reason: reason.to_string(),
                drafted,
                accepted,
            })
            .await;
        Ok(End::Finished(reason))
    }

    /// Audits whatever `session` computed that is not audited yet and waits for the verdicts:
    /// `Some(None)` when all passed, `Some(Some(len))` when the session must be cut back to
    /// `len` tokens (a node failed), `None` when the client left.
    async fn flush_audits(
        &self,
        session: u64,
        out: &mpsc::Sender<GenerateEvent>,
    ) -> Result<Option<Option<usize>>, SessionError> {
        let mut pending = self.act(|hub, _| hub.core.flush_audits(session));
        loop {
            if let Some(len) = self.act(|hub, _| hub.core.take_rollback(session)) {
                return Ok(Some(Some(len)));
            }
            if pending == 0 {
                return Ok(Some(None));
            }
            let changed = self.changed();
            tokio::select! {
                _ = tokio::time::timeout(ROUTE_POLL, changed) => {}
                _ = out.closed() => return Ok(None),
            }
            pending = self.read(|c| c.audits_pending(session));
        }
    }

    /// Waits until every shard is ready; returns the epoch of the route, or `None` when the
    /// client left. Fails with `Unavailable` when some shard has had no node at all for
    /// `reroute_timeout`, or the pipeline stayed incomplete for `pipeline_timeout`.
    async fn wait_route(
        &self,
        out: &mpsc::Sender<GenerateEvent>,
    ) -> Result<Option<u64>, SessionError> {
        let began = Instant::now();
        loop {
            let changed = self.changed();
            let state = self.read(|c| c.route_state());
            let waited = began.elapsed();
            let limit = match &state {
                RouteState::Ready { epoch } => return Ok(Some(*epoch)),
                RouteState::Loading => self.config().pipeline_timeout,
                RouteState::Missing { .. } => self.config().reroute_timeout,
            };
            if waited >= limit {
                let (missing, problem) = self.read(|c| (c.not_ready(), c.pipeline_problem()));
                return Err(SessionError::Unavailable {
                    missing,
                    detail: format!(
                        "{} for {:.1} s",
                        problem.unwrap_or_default(),
                        waited.as_secs_f64()
                    ),
                });
            }
            tokio::select! {
                _ = tokio::time::timeout(ROUTE_POLL.min(limit - waited), changed) => {}
                _ = out.closed() => return Ok(None),
            }
        }
    }
}
