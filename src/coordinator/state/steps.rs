//! Steps in flight: a step runs hop by hop along the route of its epoch; every hop is sent
//! with a deadline that follows the work asked of its node (and the work queued ahead of it
//! there), every reply is checked against what the hop was asked ([`check_reply`]) before it
//! is relayed or handed to the session, and the node's learned speed is updated from its own
//! time on the step. A reply that fails its check, a `step_failed`, or a missed deadline is the
//! sending node's failure: it is removed and the session replays elsewhere.
//!
//! Seams for later work: a [`StepRequest`] is one session's rows today; batched steps carry
//! several sessions' rows (each with its own position) and `Step` keeps one entry per row.
//! Every hop's input and checked output pass through [`Core::on_frame`], which is where an
//! audit (recomputing a hop and comparing) would take its copies.

use std::time::Instant;

use super::{Core, Hop, Output, ShardState};
use crate::coordinator::auditor::Returned;
use crate::coordinator::check::{Checked, Expected, check_reply};
use crate::coordinator::events::Event;
use crate::coordinator::speed::step_work;
use crate::coordinator::wire::{CoordinatorMessage, StepOutputKind};
use crate::protocol::{self, Frame, MessageType, Tokens, TopLogits};

/// One step a session asks for: `tokens` at positions `pos..`, on the route of `epoch`; the
/// last node returns the `k` best logits of each of the last `logit_rows` rows (1, or one per
/// token of a speculative verification step).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRequest {
    pub session: u64,
    pub epoch: u64,
    pub pos: usize,
    pub tokens: Vec<u32>,
    pub k: usize,
    pub logit_rows: usize,
}

/// Why a step could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepRefused {
    #[error("the route changed (epoch {now}, the session's is {session})")]
    RouteChanged { now: u64, session: u64 },
    #[error("no complete route")]
    NoRoute,
    #[error("no session {0}")]
    UnknownSession(u64),
    #[error("a step has no tokens")]
    Empty,
}

/// How a step ended.
pub type StepOutcome = Result<TopLogits, HopFailure>;

/// A hop that failed: its node, why, and whether the node was blamed (removed) for it.
#[derive(Debug, Clone, PartialEq)]
pub struct HopFailure {
    pub node: u64,
    pub why: String,
    pub blamed: bool,
}

/// A step in flight.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) session: u64,
    pub(super) epoch: u64,
    pub(super) route: Vec<Hop>,
    pub(super) pos: usize,
    pub(super) rows: usize,
    pub(super) k: usize,
    pub(super) logit_rows: usize,
}

impl Step {
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// A hop waiting for its node's reply.
#[derive(Debug, Clone)]
pub(super) struct PendingHop {
    pub(super) step: u64,
    pub(super) hop: usize,
    pub(super) node: u64,
    pub(super) sent: Instant,
    pub(super) deadline: Instant,
    pub(super) work: f64,
    pub(super) rows: usize,
    pub(super) expected: Expected,
    pub(super) seq: u16,
    pub(super) sent_kind: &'static str,
    pub(super) sent_bytes: usize,
    /// Its session ended: the reply is expected and dropped.
    pub(super) abandoned: bool,
    /// The hop's input, kept for the auditor when the node is audited.
    pub(super) input: Option<Frame>,
}

fn kind_name(t: MessageType) -> &'static str {
    match t {
        MessageType::Tokens => "tokens",
        MessageType::Activation => "activation",
        MessageType::TopLogits => "top_logits",
        _ => "other",
    }
}

impl Core {
    /// Starts a step: sends its tokens to the route's first node. Returns the step's id; its
    /// end comes as an [`Output::StepDone`].
    pub fn begin_step(&mut self, now: Instant, req: StepRequest) -> Result<u64, StepRefused> {
        if req.tokens.is_empty() {
            return Err(StepRefused::Empty);
        }
        if req.epoch != self.epoch {
            return Err(StepRefused::RouteChanged {
                now: self.epoch,
                session: req.epoch,
            });
        }
        if !self.sessions.contains_key(&req.session) {
            return Err(StepRefused::UnknownSession(req.session));
        }
        let route = self.route().ok_or(StepRefused::NoRoute)?;
        let id = self.next_step;
        self.next_step += 1;
        let seq = protocol::seq_pos_for((req.pos + req.tokens.len()) as u64);
        let frame = Tokens { ids: req.tokens }
            .to_frame(seq, 0)
            .map_err(|_| StepRefused::Empty)?;
        self.steps.insert(
            id,
            Step {
                session: req.session,
                epoch: req.epoch,
                route,
                pos: req.pos,
                rows: frame.dim0 as usize,
                k: req.k.max(1),
                logit_rows: req.logit_rows.clamp(1, frame.dim0 as usize),
            },
        );
        self.send_hop(now, id, 0, frame);
        Ok(id)
    }

    fn request_id(&mut self) -> u32 {
        loop {
            let id = self.next_request;
            self.next_request = self.next_request.wrapping_add(1).max(1);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sends hop `hop` of step `id` with `frame` as its input.
    fn send_hop(&mut self, now: Instant, id: u64, hop: usize, mut frame: Frame) {
        let step = &self.steps[&id];
        let h = step.route[hop];
        if !self.nodes.contains_key(&h.node) {
            // The step's route lost this node while an earlier hop ran.
            self.fail_step(id, h.node, "left during the step".into(), false);
            return;
        }
        let last = hop + 1 == step.route.len();
        let (rows, pos, session) = (step.rows, step.pos, step.session);
        let output = if last {
            StepOutputKind::TopK {
                k: step.k,
                rows: step.logit_rows,
            }
        } else {
            StepOutputKind::Hidden {
                encoding: self.cfg.encoding,
            }
        };
        let expected = if last {
            Expected::TopK {
                k: step.k,
                rows: step.logit_rows,
                vocab: self.model.vocab,
            }
        } else {
            Expected::Hidden {
                rows: rows as u32,
                cols: self.model.hidden as u32,
                encoding: self.cfg.encoding,
            }
        };
        let shards = &self.model.shards[h.first..=h.last];
        let work = step_work(
            rows,
            pos,
            shards.iter().map(|s| s.row_bytes).sum(),
            shards.iter().map(|s| s.step_bytes).sum(),
            shards.iter().map(|s| s.layers).sum(),
            self.model.hidden,
        );
        let queued: f64 = self
            .pending
            .values()
            .filter(|p| p.node == h.node)
            .map(|p| p.work)
            .sum();
        let speed = self
            .nodes
            .get(&h.node)
            .map_or(crate::coordinator::speed::MIN_GFLOPS, |n| {
                n.speed.for_deadlines()
            });
        let deadline = now + self.cfg.deadlines.step(work, queued, speed);
        let rid = self.request_id();
        frame.request_id = rid;
        let input = self.audited(h.node).then(|| frame.clone());
        self.pending.insert(
            rid,
            PendingHop {
                step: id,
                hop,
                node: h.node,
                sent: now,
                deadline,
                work,
                rows,
                expected,
                seq: frame.seq_pos,
                sent_kind: kind_name(frame.msg_type),
                sent_bytes: frame.encoded_len(),
                abandoned: false,
                input,
            },
        );
        if let Some(s) = self.sessions.get_mut(&session) {
            s.touched.insert(h.node);
        }
        self.send(
            h.node,
            CoordinatorMessage::Step {
                step: rid,
                session,
                pos,
                first: h.first,
                last: h.last,
                output,
            },
        );
        self.out.push(Output::Frame {
            node: h.node,
            frame,
        });
    }

    /// Takes the pending hop `request` of `node`; a reply nobody asked `node` for is a
    /// protocol violation (the caller closes the connection).
    fn take_pending(&mut self, node: u64, request: u32, what: &str) -> Result<PendingHop, String> {
        match self.pending.get(&request) {
            Some(p) if p.node == node => Ok(self.pending.remove(&request).expect("present")),
            Some(_) => Err(format!(
                "{what} for request {request} which this node was not asked for"
            )),
            None => Err(format!("{what} for request {request} which is not pending")),
        }
    }

    /// A node returned a frame (decoded under the SYN1 limits). `Err`: it answers nothing this
    /// node was asked, a protocol violation. A frame that answers a hop but not what the hop
    /// asked for removes the node (its failed step).
    pub fn on_frame(&mut self, now: Instant, node: u64, frame: Frame) -> Result<(), String> {
        let p = self.take_pending(node, frame.request_id, "frame")?;
        let started = self
            .nodes
            .get(&node)
            .and_then(|n| n.last_done)
            .map_or(p.sent, |d| d.max(p.sent));
        if let Some(n) = self.nodes.get_mut(&node) {
            n.last_done = Some(now);
            n.tokens_processed += p.rows as u64;
        }
        if p.abandoned {
            return Ok(());
        }
        let received_kind = kind_name(frame.msg_type);
        let received_bytes = frame.encoded_len();
        let last_shard = self.steps[&p.step].route[p.hop].last;
        let checked = check_reply(frame, p.expected, p.seq).and_then(|c| match c {
            // The hop's hidden states keep to the scale it has produced so far.
            Checked::Hidden(f) => self.scales[last_shard]
                .check(&f)
                .map(|()| Checked::Hidden(f)),
            top => Ok(top),
        });
        let checked = match checked {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(node, "a reply failed its check: {why}");
                self.fail_step(p.step, node, why.clone(), true);
                self.ban(now, node, &why);
                self.remove_node(now, node, &format!("failed a step: {why}"));
                return Ok(());
            }
        };
        // One-row steps teach the node's speed: its own time on this step. Placement looks
        // again when it moved, once every node holding shards has a learned speed (a learned
        // speed against another node's claim compares two different measures).
        let moved = p.rows == 1
            && self.nodes.get_mut(&node).is_some_and(|n| {
                n.speed
                    .observe(p.work, now.saturating_duration_since(started))
            })
            && self.nodes.values().all(|n| {
                n.speed.learned().is_some() || self.shards.iter().all(|s| s.node != Some(n.info.id))
            });
        if let Some(input) = p.input {
            let returned = match &checked {
                Checked::Hidden(f) => Returned::Hidden(f.clone()),
                Checked::TopK(t) => Returned::Top(t.clone()),
            };
            self.audit_hop(p.step, p.hop, node, input, returned);
        }
        let step = &self.steps[&p.step];
        let h = step.route[p.hop];
        self.emit(Event::FrameRelayed {
            session: step.session,
            node,
            first_shard: h.first,
            last_shard: h.last,
            sent_kind: p.sent_kind,
            sent_bytes: p.sent_bytes,
            received_kind,
            received_bytes,
            tokens: p.rows,
            micros: now.saturating_duration_since(p.sent).as_micros() as u64,
        });
        match checked {
            Checked::Hidden(frame) => self.send_hop(now, p.step, p.hop + 1, frame),
            Checked::TopK(top) => {
                // A step some audit still holds stays until its verdict (audits.rs).
                if let Some(top) = self.audit_outcome(p.step, top) {
                    self.steps.remove(&p.step);
                    self.out.push(Output::StepDone {
                        step: p.step,
                        outcome: Ok(top),
                    });
                    self.unload_retired();
                }
            }
        }
        if moved {
            tracing::info!(
                node,
                "speed learned from its steps moved: placement looks again"
            );
            self.rebalance(now);
        }
        Ok(())
    }

    /// A node says it could not run hop `request`. It is blamed (removed) unless the route
    /// changed since the step began (a move finished or a node left: replayed, no blame).
    pub fn on_step_failed(
        &mut self,
        now: Instant,
        node: u64,
        request: u32,
        error: String,
    ) -> Result<(), String> {
        let p = self.take_pending(node, request, "`step_failed`")?;
        if p.abandoned {
            return Ok(());
        }
        let blamed = self.steps.get(&p.step).map(|s| s.epoch) == Some(self.epoch);
        self.fail_step(p.step, node, error.clone(), blamed);
        if blamed {
            self.remove_node(now, node, &format!("failed a step: {error}"));
        } else {
            tracing::info!(
                node,
                "step failed on a route that changed ({error}); replaying"
            );
        }
        Ok(())
    }

    /// Ends step `id` with a failure of `node`.
    pub(super) fn fail_step(&mut self, id: u64, node: u64, why: String, blamed: bool) {
        self.audit_forget_step(id);
        if self.steps.remove(&id).is_none() {
            return;
        }
        // Later hops may already be running (an audit fails a held step after the pipeline
        // went on): their replies are expected and dropped, not a protocol violation.
        for p in self.pending.values_mut().filter(|p| p.step == id) {
            p.abandoned = true;
        }
        self.out.push(Output::StepDone {
            step: id,
            outcome: Err(HopFailure { node, why, blamed }),
        });
        self.unload_retired();
    }

    /// Fails every step waiting on `node`, which is being removed for `reason`.
    pub(super) fn fail_node_steps(&mut self, node: u64, reason: &str) {
        let ids: Vec<(u32, u64, bool)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.node == node)
            .map(|(r, p)| (*r, p.step, p.abandoned))
            .collect();
        for (rid, step, abandoned) in ids {
            self.pending.remove(&rid);
            if !abandoned {
                self.fail_step(step, node, format!("node left: {reason}"), true);
            }
        }
    }

    /// Marks `session`'s steps ended: their replies will be dropped.
    pub(super) fn abandon_steps(&mut self, session: u64) {
        let ids: Vec<u64> = self
            .steps
            .iter()
            .filter(|(_, s)| s.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.steps.remove(&id);
            self.audit_forget_step(id);
            for p in self.pending.values_mut().filter(|p| p.step == id) {
                p.abandoned = true;
            }
        }
        self.unload_retired();
    }

    /// Removes nodes whose hops missed their deadline; forgets abandoned hops long overdue.
    pub(super) fn tick_steps(&mut self, now: Instant) {
        let mut late: Vec<(u64, String)> = Vec::new();
        self.pending.retain(|_, p| {
            if now <= p.deadline {
                return true;
            }
            if p.abandoned {
                // Nobody waits for it; keep it a while so that a late reply is not a
                // protocol violation, then forget it.
                return now <= p.deadline + (p.deadline - p.sent);
            }
            late.push((
                p.node,
                format!(
                    "did not answer a step within its deadline ({:.1} s for {} rows)",
                    (p.deadline - p.sent).as_secs_f64(),
                    p.rows
                ),
            ));
            true
        });
        for (node, why) in late {
            if self.nodes.contains_key(&node) {
                tracing::warn!(node, "{why}");
                self.remove_node(now, node, &why);
            } else {
                // Cannot happen (a node's hops go when it does), but a step must never wait
                // forever.
                self.fail_node_steps(node, &why);
            }
        }
    }

    /// Hops waiting for replies (for tests and status).
    pub fn pending_hops(&self) -> usize {
        self.pending.values().filter(|p| !p.abandoned).count()
    }

    /// Whether `shard` is ready on `node`.
    pub fn serves(&self, node: u64, shard: usize) -> bool {
        self.shards
            .get(shard)
            .is_some_and(|s| s.node == Some(node) && s.state == ShardState::Ready)
    }
}
