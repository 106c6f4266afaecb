//! One generation as a session: tokenize, then step after step send the new tokens through the
//! route (node to node via the coordinator), sample from the last shard's top-k logits and
//! stream the text. When a node fails or the route changes, the session's caches are rebuilt by
//! replaying every token so far as one prefill, then generation goes on: no token is lost or
//! repeated, and greedy output equals an uninterrupted run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::Coordinator;
use super::events::Event;
use super::state::{Hop, Pending, SessionInfo};
use super::wire::{CoordinatorMessage, StepOutputKind};
use crate::protocol::{self, Frame, Limits, MessageType, Tokens, TopLogits};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::TextStream;

/// Failed hops tolerated in one generation before it gives up.
const MAX_FAILOVERS: usize = 8;

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
}

/// Why a hop failed.
enum HopError {
    /// The node failed or left: fail over.
    Node(u64, String),
}

impl Coordinator {
    /// Runs a generation, sending its events to `out`; returns when it ends, the client goes
    /// away (`out` closed), or it fails. The session's caches are freed on every node in all cases.
    pub async fn generate(&self, req: GenerateRequest, out: mpsc::Sender<GenerateEvent>) {
        if let Err(message) = self.generate_inner(req, &out).await {
            let _ = out.send(GenerateEvent::Error { message }).await;
        }
    }

    async fn generate_inner(
        &self,
        req: GenerateRequest,
        out: &mpsc::Sender<GenerateEvent>,
    ) -> Result<(), String> {
        req.sampling.validate()?;
        let tok = self.tokenizer();
        let prompt_ids = tok.encode(&req.prompt).map_err(|e| e.to_string())?;
        if prompt_ids.is_empty() {
            return Err("the prompt is empty".into());
        }
        let ctx = self.manifest().config.context_length;
        if prompt_ids.len() >= ctx {
            return Err(format!(
                "the prompt is {} tokens; the model's context is {ctx}",
                prompt_ids.len()
            ));
        }
        let session = {
            let mut st = self.state();
            if st.sessions.len() >= self.config().max_sessions {
                return Err(format!(
                    "{} generations are running; try again shortly",
                    st.sessions.len()
                ));
            }
            let id = st.next_session;
            st.next_session += 1;
            st.sessions.insert(
                id,
                SessionInfo {
                    id,
                    prompt_tokens: prompt_ids.len(),
                    generated: 0,
                },
            );
            id
        };
        self.emit(Event::SessionOpened {
            session,
            prompt_tokens: prompt_ids.len(),
        });
        let mut touched = BTreeSet::new();
        let result = self
            .run_session(session, &req, prompt_ids, out, &mut touched)
            .await;
        for node in touched {
            self.send_to(node, &CoordinatorMessage::Close { session });
        }
        self.state().sessions.remove(&session);
        let reason = match &result {
            Ok(r) => r.clone(),
            Err(e) => format!("error: {e}"),
        };
        self.emit(Event::SessionClosed { session, reason });
        result.map(|_| ())
    }

    async fn run_session(
        &self,
        session: u64,
        req: &GenerateRequest,
        prompt_ids: Vec<u32>,
        out: &mpsc::Sender<GenerateEvent>,
        touched: &mut BTreeSet<u64>,
    ) -> Result<String, String> {
        let cfg = &self.manifest().config;
        let max_tokens = req.max_tokens.min(cfg.context_length - prompt_ids.len());
        if out
            .send(GenerateEvent::Start {
                session,
                prompt_ids: prompt_ids.clone(),
            })
            .await
            .is_err()
        {
            return Ok("client left".into());
        }
        let mut sampler = Sampler::new(req.sampling.clone());
        let mut stream = TextStream::default();
        let mut seq = prompt_ids.clone();
        let mut ids: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut cached = 0usize; // tokens in the session's caches
        let mut built_epoch: Option<u64> = None;
        let mut failovers = 0usize;
        let k = self
            .config()
            .top_k
            .max(req.sampling.top_k)
            .min(cfg.vocab_size);
        let start = Instant::now();
        let reason = loop {
            if ids.len() >= max_tokens {
                break "max_tokens".to_string();
            }
            let (route, epoch) = self.wait_route().await?;
            if built_epoch != Some(epoch) {
                // Nodes may hold this session's caches, complete or left by a step that failed
                // part-way: free them all and replay the whole sequence on the new route.
                if !touched.is_empty() {
                    for node in touched.iter() {
                        self.send_to(*node, &CoordinatorMessage::Close { session });
                    }
                    touched.clear();
                    self.emit(Event::SessionReplayed {
                        session,
                        tokens: seq.len(),
                    });
                }
                cached = 0;
                built_epoch = Some(epoch);
            }
            let step = {
                let _running = InFlight::new(self, epoch);
                self.run_step(session, &route, cached, &seq[cached..], k, touched)
                    .await
            };
            self.unload_retired();
            let logits = match step {
                Ok(l) => l,
                Err(HopError::Node(node, why)) => {
                    failovers += 1;
                    if failovers > MAX_FAILOVERS {
                        return Err(format!(
                            "giving up after {MAX_FAILOVERS} failed steps; last: node {node}: {why}"
                        ));
                    }
                    if self.state().epoch != epoch {
                        // The route changed under this step (a move or a node leaving): the
                        // node is not to blame. Replay on the new route.
                        tracing::info!(
                            session,
                            node,
                            "step failed on a route that changed ({why}); replaying"
                        );
                    } else {
                        tracing::warn!(session, node, "step failed ({why}); failing over");
                        self.remove_node(node, &format!("failed a step: {why}"));
                    }
                    built_epoch = None;
                    continue;
                }
            };
            cached = seq.len();
            let mut cands: Vec<(u32, f32)> =
                logits.entries.iter().map(|e| (e.id, e.logit)).collect();
            let next = sampler.sample(&mut cands, &seq);
            if cfg.eos_token_ids.contains(&next) {
                break "eos".to_string();
            }
            seq.push(next);
            ids.push(next);
            let piece = stream
                .push(self.tokenizer(), next)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            text.push_str(&piece);
            if let Some(s) = self.state().sessions.get_mut(&session) {
                s.generated = ids.len();
            }
            self.emit(Event::TokenSampled {
                session,
                id: next,
                text: piece.clone(),
            });
            if out
                .send(GenerateEvent::Token {
                    id: next,
                    text: piece,
                })
                .await
                .is_err()
            {
                return Ok("client left".into());
            }
        };
        if let Some(rest) = stream.finish(self.tokenizer()).map_err(|e| e.to_string())? {
            text.push_str(&rest);
            let _ = out
                .send(GenerateEvent::Token {
                    id: u32::MAX,
                    text: rest,
                })
                .await;
        }
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let _ = out
            .send(GenerateEvent::Done {
                ids: ids.clone(),
                text,
                reason: reason.clone(),
                tokens_per_second: ids.len() as f64 / secs,
            })
            .await;
        Ok(reason)
    }

    /// Waits until every shard is ready; returns the route and the epoch it belongs to.
    async fn wait_route(&self) -> Result<(Vec<Hop>, u64), String> {
        let deadline = Instant::now() + self.config().pipeline_timeout;
        loop {
            let notified = self.changed();
            {
                let st = self.state();
                if let Some(r) = st.route() {
                    return Ok((r, st.epoch));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let st = self.state();
                let missing: Vec<String> = st
                    .shards
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.state != super::state::ShardState::Ready)
                    .map(|(i, s)| format!("shard {i} is {:?}", s.state).to_lowercase())
                    .collect();
                return Err(format!(
                    "no complete pipeline: {} ({} nodes connected)",
                    missing.join(", "),
                    st.nodes.len()
                ));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }

    /// Runs one step (`tokens` at position `pos`) along `route`; returns the top logits.
    async fn run_step(
        &self,
        session: u64,
        route: &[Hop],
        pos: usize,
        tokens: &[u32],
        k: usize,
        touched: &mut BTreeSet<u64>,
    ) -> Result<TopLogits, HopError> {
        let seq = protocol::seq_pos_for((pos + tokens.len()) as u64);
        let mut frame = Tokens {
            ids: tokens.to_vec(),
        }
        .to_frame(seq, 0)
        .expect("non-empty token list");
        let limits = Limits::default();
        for (h, hop) in route.iter().enumerate() {
            let last = h + 1 == route.len();
            let output = if last {
                StepOutputKind::TopK { k }
            } else {
                StepOutputKind::Hidden {
                    encoding: self.config().encoding,
                }
            };
            touched.insert(hop.node);
            let started = Instant::now();
            let sent_kind = kind_name(frame.msg_type);
            let sent_bytes = frame.encoded_len();
            let reply = self.hop(session, *hop, pos, output, frame).await?;
            let want = if last {
                MessageType::TopLogits
            } else {
                MessageType::Activation
            };
            if reply.msg_type != want {
                return Err(HopError::Node(
                    hop.node,
                    format!("returned a {:?} frame, expected {want:?}", reply.msg_type),
                ));
            }
            self.emit(Event::FrameRelayed {
                session,
                node: hop.node,
                first_shard: hop.first,
                last_shard: hop.last,
                sent_kind,
                sent_bytes,
                received_kind: kind_name(reply.msg_type),
                received_bytes: reply.encoded_len(),
                tokens: tokens.len(),
                micros: started.elapsed().as_micros() as u64,
            });
            if last {
                return TopLogits::from_frame(&reply, &limits)
                    .map_err(|e| HopError::Node(hop.node, e.to_string()));
            }
            frame = reply;
        }
        unreachable!("a route has at least one hop")
    }

    /// Sends `frame` to `hop.node` with a `step` message and waits for its reply frame.
    async fn hop(
        &self,
        session: u64,
        hop: Hop,
        pos: usize,
        output: StepOutputKind,
        mut frame: Frame,
    ) -> Result<Frame, HopError> {
        let (tx, rx) = oneshot::channel();
        let step = {
            let mut st = self.state();
            if !st.nodes.contains_key(&hop.node) {
                return Err(HopError::Node(hop.node, "left".into()));
            }
            let step = st.step_id();
            st.pending.insert(
                step,
                Pending {
                    node: hop.node,
                    reply: tx,
                },
            );
            step
        };
        frame.request_id = step;
        let msg = CoordinatorMessage::Step {
            step,
            session,
            pos,
            first: hop.first,
            last: hop.last,
            output,
        };
        {
            let st = self.state();
            let Some(n) = st.nodes.get(&hop.node) else {
                return Err(HopError::Node(hop.node, "left".into()));
            };
            let text = serde_json::to_string(&msg).expect("serialises");
            let _ = n.tx.send(axum::extract::ws::Message::Text(text.into()));
            let _ = n.tx.send(axum::extract::ws::Message::Binary(
                protocol::encode(&frame).into(),
            ));
        }
        match tokio::time::timeout(self.config().step_timeout, rx).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(why))) => Err(HopError::Node(hop.node, why)),
            Ok(Err(_)) => Err(HopError::Node(hop.node, "left during the step".into())),
            Err(_) => {
                self.state().pending.remove(&step);
                Err(HopError::Node(
                    hop.node,
                    format!("did not answer within {:?}", self.config().step_timeout),
                ))
            }
        }
    }
}

/// Counts a step as running on the route of its epoch while it lives.
struct InFlight<'a> {
    coord: &'a Coordinator,
    epoch: u64,
}

impl<'a> InFlight<'a> {
    fn new(coord: &'a Coordinator, epoch: u64) -> Self {
        *coord.state().inflight.entry(epoch).or_insert(0) += 1;
        InFlight { coord, epoch }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.coord.state();
        if let Some(n) = st.inflight.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                st.inflight.remove(&self.epoch);
            }
        }
    }
}

fn kind_name(t: MessageType) -> &'static str {
    match t {
        MessageType::Tokens => "tokens",
        MessageType::Activation => "activation",
        MessageType::TopLogits => "top_logits",
        _ => "other",
    }
}
