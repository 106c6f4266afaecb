//! Trust, decided by audits (the auditor thread recomputes, auditor.rs; this file decides what
//! it audits and what a verdict does). Every hop a node that is not the coordinator's own
//! returns is recorded for the auditor ([`Output::Audit`]), so that it can follow the
//! hop's stream from position 0; windows close:
//!
//! - on every step of a node on **probation** (new, or given a shard since its last
//!   probation): the step's outcome is held back from its session until the audits of all of
//!   its probation hops passed (the next hop is relayed at once: the pipeline does not wait);
//! - on a random fraction of steps (`rate`) of a **trusted** node (one that passed
//!   `probation_steps` audits): a window covers every row since the last, so a lie is found
//!   at the next window whenever it happened;
//! - every `VERIFIED_EVERY` steps and at the end ([`Core::flush_audits`]) for a session that
//!   must be answered with verified tokens only (non-streaming requests).
//!
//! A failed audit bans the node, fails its held steps (blamed), removes it (the route
//! changes: sessions replay elsewhere), and rolls back every session whose tokens it may have
//! influenced to the last position audited on its stream ([`Core::take_rollback`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Core, Output};
use crate::coordinator::auditor::{AuditJob, Finding, Returned, StreamKey, Verdict};
use crate::coordinator::wire::NodeKind;
use crate::protocol::{Frame, TopLogits};

/// Steps between forced windows of a session answered only with verified tokens.
pub const VERIFIED_EVERY: usize = 8;

/// How much the coordinator audits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuditConfig {
    /// Fraction of a trusted node's steps that close an audit window.
    pub rate: f64,
    /// Audits a node must pass (one per step) before it is trusted.
    pub probation_steps: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            rate: 0.1,
            probation_steps: 16,
        }
    }
}

/// What the core knows of one stream.
#[derive(Debug, Clone)]
struct StreamTrust {
    node: u64,
    /// Rows recorded / audited (passed).
    recorded: usize,
    audited: usize,
    steps_since_window: usize,
}

/// A window the auditor is working on.
#[derive(Debug, Clone)]
struct Window {
    key: StreamKey,
    /// Steps whose outcome waits for it.
    steps: Vec<u64>,
}

/// A step whose outcome waits for audits.
#[derive(Debug, Clone, Default)]
struct Held {
    waiting: BTreeSet<u64>,
    outcome: Option<TopLogits>,
}

/// The audit state of the core.
#[derive(Debug)]
pub(super) struct Audits {
    cfg: Option<AuditConfig>,
    streams: HashMap<StreamKey, StreamTrust>,
    windows: HashMap<u64, Window>,
    held: HashMap<u64, Held>,
    /// Per session, the length its tokens must be cut back to.
    rollbacks: HashMap<u64, usize>,
    /// Sessions answered with verified tokens only, and the windows each waits for.
    verified: HashMap<u64, BTreeSet<u64>>,
    /// Audits passed per node since its probation began.
    passed: HashMap<u64, u32>,
    next_audit: u64,
    rng: rand_chacha::ChaCha8Rng,
    checked: u64,
    rows_checked: u64,
    failed: u64,
    skipped: u64,
}

impl Audits {
    pub(super) fn new(cfg: Option<AuditConfig>) -> Audits {
        Audits {
            cfg,
            streams: HashMap::new(),
            windows: HashMap::new(),
            held: HashMap::new(),
            rollbacks: HashMap::new(),
            verified: HashMap::new(),
            passed: HashMap::new(),
            next_audit: 1,
            rng: rand_chacha::ChaCha8Rng::from_os_rng(),
            checked: 0,
            rows_checked: 0,
            failed: 0,
            skipped: 0,
        }
    }
}

impl Core {
    /// Whether `node`'s hops are audited (auditing is on and the node is not the
    /// coordinator's own).
    pub(super) fn audited(&self, node: u64) -> bool {
        self.audits.cfg.is_some()
            && self
                .nodes
                .get(&node)
                .is_some_and(|n| n.info.kind != NodeKind::Local)
    }

    fn on_probation(&self, node: u64) -> bool {
        self.audits.cfg.is_some_and(|c| {
            self.audits.passed.get(&node).copied().unwrap_or(0) < c.probation_steps
        })
    }

    /// `node` was given a shard: it is on probation again.
    pub(super) fn audit_probation(&mut self, node: u64) {
        self.audits.passed.remove(&node);
    }

    /// Answers `session` only with audited tokens: windows close on its streams every few
    /// steps, and [`flush_audits`](Self::flush_audits) audits the rest before it ends.
    pub fn verify_session(&mut self, session: u64) {
        if self.audits.cfg.is_some() {
            self.audits.verified.entry(session).or_default();
        }
    }

    /// Records hop `hop` of step `step` (its input and what `node` returned) for the auditor,
    /// closing a window when the node's trust or the session asks for one; a probation node's
    /// window holds the step's outcome.
    pub(super) fn audit_hop(
        &mut self,
        step: u64,
        hop: usize,
        node: u64,
        input: Frame,
        output: Returned,
    ) {
        let Some(cfg) = self.audits.cfg else {
            return;
        };
        let s = &self.steps[&step];
        let h = s.route[hop];
        let key = StreamKey {
            session: s.session,
            epoch: s.epoch,
            first: h.first,
            last: h.last,
        };
        let (pos, rows) = (s.pos, s.rows);
        let t = self.audits.streams.entry(key).or_insert(StreamTrust {
            node,
            recorded: 0,
            audited: 0,
            steps_since_window: 0,
        });
        t.node = node;
        if pos < t.recorded {
            t.recorded = pos;
            t.audited = t.audited.min(pos);
        }
        t.recorded = pos + rows;
        t.steps_since_window += 1;
        let since = t.steps_since_window;
        self.out.push(Output::Audit(AuditJob::Record {
            key,
            node,
            pos,
            input,
            output,
            encoding: self.cfg.encoding,
        }));
        let probation = self.on_probation(node);
        let verified = self.audits.verified.contains_key(&key.session);
        let close = probation
            || (verified && since >= VERIFIED_EVERY)
            || self.audits.rng.random_bool(cfg.rate.clamp(0.0, 1.0));
        if !close {
            return;
        }
        let audit = self.close_window(key);
        if probation {
            self.audits
                .windows
                .get_mut(&audit)
                .expect("just opened")
                .steps
                .push(step);
            self.audits
                .held
                .entry(step)
                .or_default()
                .waiting
                .insert(audit);
        }
    }

    fn close_window(&mut self, key: StreamKey) -> u64 {
        let audit = self.audits.next_audit;
        self.audits.next_audit += 1;
        if let Some(t) = self.audits.streams.get_mut(&key) {
            t.steps_since_window = 0;
        }
        self.audits.windows.insert(
            audit,
            Window {
                key,
                steps: Vec::new(),
            },
        );
        if let Some(w) = self.audits.verified.get_mut(&key.session) {
            w.insert(audit);
        }
        self.out.push(Output::Audit(AuditJob::Close { key, audit }));
        audit
    }

    /// A step's top logits arrived; `Some` gives them back when nothing holds them.
    pub(super) fn audit_outcome(&mut self, step: u64, top: TopLogits) -> Option<TopLogits> {
        match self.audits.held.get_mut(&step) {
            Some(h) if !h.waiting.is_empty() => {
                h.outcome = Some(top);
                None
            }
            _ => {
                self.audits.held.remove(&step);
                Some(top)
            }
        }
    }

    /// Closes a window on every stream of `session` with rows not yet audited; returns how
    /// many windows the session still waits for ([`audits_pending`](Self::audits_pending)).
    pub fn flush_audits(&mut self, session: u64) -> usize {
        // Every window covers all rows recorded before it closed, so a stream needs one more
        // only if steps were recorded since its last.
        let keys: Vec<StreamKey> = self
            .audits
            .streams
            .iter()
            .filter(|(k, t)| k.session == session && t.steps_since_window > 0)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.close_window(key);
        }
        self.audits_pending(session)
    }

    /// Windows of `session` the auditor has not answered yet.
    pub fn audits_pending(&self, session: u64) -> usize {
        self.audits.verified.get(&session).map_or(0, |w| w.len())
    }

    /// Whether `session` lost tokens to a failed audit: the length to cut it back to.
    pub fn take_rollback(&mut self, session: u64) -> Option<usize> {
        self.audits.rollbacks.remove(&session)
    }

    /// The session ended: the auditor forgets its streams.
    pub(super) fn audit_session_ended(&mut self, session: u64) {
        if self.audits.cfg.is_none() {
            return;
        }
        self.audits.streams.retain(|k, _| k.session != session);
        self.audits.verified.remove(&session);
        self.audits.rollbacks.remove(&session);
        self.out.push(Output::Audit(AuditJob::End { session }));
    }

    /// A step ended another way (failed, abandoned): nothing holds it any more.
    pub(super) fn audit_forget_step(&mut self, step: u64) {
        self.audits.held.remove(&step);
    }

    /// The auditor's verdict on a window.
    pub fn audit_done(&mut self, now: Instant, v: Verdict) {
        let Some(w) = self.audits.windows.remove(&v.audit) else {
            return;
        };
        if let Some(pending) = self.audits.verified.get_mut(&v.key.session) {
            pending.remove(&v.audit);
        }
        self.out.push(Output::Changed);
        match v.finding {
            Finding::Passed => {
                self.audits.checked += 1;
                if let Some(t) = self.audits.streams.get_mut(&v.key) {
                    let end = v.end.min(t.recorded);
                    self.audits.rows_checked += end.saturating_sub(t.audited) as u64;
                    t.audited = t.audited.max(end);
                }
                *self.audits.passed.entry(v.node).or_default() += 1;
                for step in w.steps {
                    self.release(step, v.audit);
                }
            }
            Finding::Skipped(why) => {
                self.audits.skipped += 1;
                tracing::warn!(node = v.node, "an audit could not run: {why}");
                // What the held steps computed is unknown: they fail without blame and replay.
                for step in w.steps {
                    self.audits.held.remove(&step);
                    self.fail_step(
                        step,
                        v.node,
                        format!("its audit could not run: {why}"),
                        false,
                    );
                }
            }
            Finding::Failed { pos, mismatch } => {
                self.audits.failed += 1;
                let why = format!("failed an audit at position {pos}: {mismatch}");
                tracing::warn!(node = v.node, "{why}");
                // Every session whose stream through this node was not audited to its end
                // may hold tokens the node influenced: back to the last audited position.
                let tainted: Vec<(u64, usize)> = self
                    .audits
                    .streams
                    .iter()
                    .filter(|(_, t)| t.node == v.node && t.recorded > t.audited)
                    .map(|(k, t)| {
                        let bad = if *k == v.key { pos } else { t.audited };
                        (k.session, bad + 1)
                    })
                    .collect();
                for (session, keep) in tainted {
                    self.rollback(session, keep);
                }
                let held: Vec<u64> = self
                    .audits
                    .held
                    .iter()
                    .filter(|(_, h)| {
                        h.waiting.iter().any(|a| {
                            *a == v.audit
                                || self
                                    .audits
                                    .windows
                                    .get(a)
                                    .and_then(|w| self.audits.streams.get(&w.key))
                                    .is_some_and(|t| t.node == v.node)
                        })
                    })
                    .map(|(s, _)| *s)
                    .collect();
                for step in held {
                    self.fail_step(step, v.node, why.clone(), true);
                }
                self.ban(now, v.node, &why);
                self.remove_node(now, v.node, &why);
                // Its open windows will not count: the sessions waiting for them are already
                // rolled back.
                let gone: Vec<u64> = self
                    .audits
                    .windows
                    .iter()
                    .filter(|(_, w)| {
                        self.audits
                            .streams
                            .get(&w.key)
                            .is_some_and(|t| t.node == v.node)
                    })
                    .map(|(a, _)| *a)
                    .collect();
                for a in gone {
                    self.audits.windows.remove(&a);
                    for p in self.audits.verified.values_mut() {
                        p.remove(&a);
                    }
                }
                self.audits.passed.remove(&v.node);
                self.audits.streams.retain(|_, t| t.node != v.node);
            }
        }
    }

    fn rollback(&mut self, session: u64, keep: usize) {
        if !self.sessions.contains_key(&session) {
            return;
        }
        let r = self.audits.rollbacks.entry(session).or_insert(keep);
        *r = (*r).min(keep);
    }

    /// Audit `audit` of `step` passed: the step's outcome goes to its session once nothing
    /// else holds it.
    fn release(&mut self, step: u64, audit: u64) {
        let Some(h) = self.audits.held.get_mut(&step) else {
            return;
        };
        h.waiting.remove(&audit);
        if !h.waiting.is_empty() || h.outcome.is_none() {
            return;
        }
        let top = self
            .audits
            .held
            .remove(&step)
            .and_then(|h| h.outcome)
            .expect("checked");
        if self.steps.remove(&step).is_some() {
            self.out.push(Output::StepDone {
                step,
                outcome: Ok(top),
            });
            self.unload_retired();
        }
    }

    /// `/api/status`'s `audits`.
    pub(super) fn audits_json(&self) -> Value {
        let Some(cfg) = self.audits.cfg else {
            return json!({"enabled": false});
        };
        let trusted: Vec<u64> = self
            .nodes
            .keys()
            .filter(|n| self.audited(**n) && !self.on_probation(**n))
            .copied()
            .collect();
        json!({
            "enabled": true,
            "rate": cfg.rate,
            "probation_steps": cfg.probation_steps,
            "windows_passed": self.audits.checked,
            "rows_passed": self.audits.rows_checked,
            "failed": self.audits.failed,
            "skipped": self.audits.skipped,
            "in_progress": self.audits.windows.len(),
            "trusted_nodes": trusted,
            "passed_by_node": self
                .nodes
                .keys()
                .map(|n| (n.to_string(), json!(self.audits.passed.get(n).copied().unwrap_or(0))))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}
