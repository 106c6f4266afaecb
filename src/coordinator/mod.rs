//! The coordinator: nodes join over WebSocket, shards are placed on them, and generations
//! run as sessions whose steps are relayed node to node through here (browsers cannot accept
//! connections). The same core runs headless (`synapse serve`) and inside the visual app.
//!
//! Shape (sans-IO, like quinn-proto): every decision is made by [`state::Core`], a plain state
//! machine that takes plain values and returns what to send to whom; each generation is a
//! [`session::SessionMachine`], also plain. This module holds the thin driver around them: the
//! `Core` behind one std mutex (never held across an await) with each node's outgoing channel
//! and each waiting step's reply slot, a ticker that hands the core the time for its deadlines,
//! and [`Coordinator::generate`] (driver.rs) which runs a session machine against the core.
//! The sockets belong to `link.rs` (one task per node) and `http.rs`.

pub mod audit;
pub mod auditor;
pub mod auth;
pub mod check;
mod driver;
pub mod events;
mod generate_api;
pub mod guard;
pub mod http;
pub mod link;
pub mod openai;
pub mod placement;
pub mod session;
pub mod speculate;
pub mod speed;
pub mod state;
pub mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::extract::ws::{CloseFrame, Message};
use splitter::Manifest;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use self::events::Event;
use self::speed::Deadlines;
use self::state::{Core, CoreConfig, ModelShape, Output, StepOutcome};
use self::wire::{CoordinatorMessage, WireEncoding};
use crate::model::ModelDir;
use crate::tokenizer::Tokenizer;

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub model_dir: PathBuf,
    /// Join token nodes must present.
    pub token: String,
    /// The shortest deadline of a step on a node; the deadline grows with the work the step
    /// asks of the node over its speed (`step_margin` times the expected time), so a long
    /// prompt gets the time it needs and a stalled node is found after this much.
    pub step_timeout: Duration,
    /// Expected step time is multiplied by this for its deadline.
    pub step_margin: f64,
    /// The shortest deadline of a shard load; it grows with the shard's size over
    /// `load_bandwidth`.
    pub load_timeout: Duration,
    /// Slowest download rate (bytes/s) a working node is expected to reach.
    pub load_bandwidth: f64,
    /// How long a generation waits for a complete pipeline while shards are loading.
    pub pipeline_timeout: Duration,
    /// How long a generation waits when some shard has no node at all (every node holding
    /// it left) before failing with [`session::SessionError::Unavailable`] (HTTP 503).
    pub reroute_timeout: Duration,
    /// Longest run of prompt tokens in one step: longer prompts (and replays) are computed in
    /// chunks, so other sessions' steps run in between and deadlines stay short.
    pub prefill_chunk: usize,
    /// Candidates the last shard returns for sampling (per position).
    pub top_k: usize,
    /// Speculative decoding (prompt-lookup drafts verified in one step); on by default.
    pub speculate: speculate::SpeculateConfig,
    /// Encoding of activations between nodes.
    pub encoding: WireEncoding,
    /// Most generations running at once.
    pub max_sessions: usize,
    /// Requests of the OpenAI-compatible API that may wait for a free generation slot; more
    /// are refused with 429.
    pub max_queued: usize,
    /// Bearer token the HTTP API (`/v1/*`, `POST /api/*`) requires; `None` leaves it open.
    /// Separate from `token`, which only nodes use.
    pub api_key: Option<String>,
    /// Origins besides the coordinator's own whose pages may call the API (`--cors`), as
    /// [`guard::parse_origin`] normalises them; none by default (no CORS headers at all).
    pub cors_origins: Vec<String>,
    /// Audits by recomputation of what nodes return (state/audits.rs); `None` believes
    /// every well-formed reply.
    pub audit: Option<state::AuditConfig>,
    /// CPUs the auditor's threads run on, one thread each (`--audit-cpus`); empty: a thread
    /// per core, anywhere. Always at the lowest priority.
    pub audit_cpus: Vec<usize>,
}

impl CoordinatorConfig {
    /// Defaults for `model_dir` and `token`.
    pub fn new(model_dir: PathBuf, token: String) -> Self {
        let d = Deadlines::default();
        CoordinatorConfig {
            model_dir,
            token,
            step_timeout: d.step_floor,
            step_margin: d.step_margin,
            load_timeout: d.load_floor,
            load_bandwidth: d.load_bandwidth,
            pipeline_timeout: Duration::from_secs(120),
            reroute_timeout: Duration::from_secs(15),
            prefill_chunk: 128,
            top_k: 64,
            speculate: speculate::SpeculateConfig::default(),
            encoding: WireEncoding::Rice,
            max_sessions: 16,
            max_queued: 32,
            api_key: None,
            cors_origins: Vec::new(),
            audit: Some(state::AuditConfig::default()),
            audit_cpus: Vec::new(),
        }
    }

    fn deadlines(&self) -> Deadlines {
        Deadlines {
            step_floor: self.step_timeout,
            step_margin: self.step_margin,
            load_floor: self.load_timeout,
            load_bandwidth: self.load_bandwidth,
        }
    }
}

pub use self::state::REBALANCE_GAIN;

/// How often the core is handed the time, for its deadlines.
const TICK: Duration = Duration::from_millis(100);

/// A cheap-to-clone handle on the running coordinator.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CoordinatorConfig,
    manifest: Arc<Manifest>,
    tokenizer: Tokenizer,
    hub: Mutex<Hub>,
    events: broadcast::Sender<Event>,
    /// Woken whenever placement or readiness changes.
    changed: Notify,
    ticking: AtomicBool,
    /// Recomputes hops to audit nodes (`None` when audits are off).
    auditor: Option<auditor::Auditor>,
}

/// The core and the IO handles its outputs go to.
pub(crate) struct Hub {
    pub(crate) core: Core,
    /// Each node's outgoing messages (its link task owns the socket).
    links: HashMap<u64, mpsc::UnboundedSender<Message>>,
    /// Sessions waiting for their step's end.
    waiters: HashMap<u64, oneshot::Sender<StepOutcome>>,
}

/// Counts of [`Coordinator::held_handles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Outgoing channels of nodes.
    pub links: usize,
    /// Sessions' slots waiting for a step's end.
    pub waiters: usize,
}

/// WebSocket close code for a policy violation (RFC 6455).
pub(crate) const CLOSE_POLICY: u16 = 1008;

/// A close frame with `reason`, cut to the 123 bytes a close reason may hold.
pub(crate) fn close_message(reason: &str) -> Message {
    let mut r = reason.to_string();
    while r.len() > 120 {
        r.pop();
    }
    Message::Close(Some(CloseFrame {
        code: CLOSE_POLICY,
        reason: r.into(),
    }))
}

impl Coordinator {
    /// Opens the model directory and starts with no nodes.
    pub fn new(cfg: CoordinatorConfig) -> Result<Coordinator> {
        let model = ModelDir::open(&cfg.model_dir)?;
        let tokenizer = model.tokenizer()?;
        let (events, _) = broadcast::channel(4096);
        let core = Core::new(
            CoreConfig {
                deadlines: cfg.deadlines(),
                encoding: cfg.encoding,
                max_sessions: cfg.max_sessions,
                audit: cfg.audit,
            },
            ModelShape::of(&model.manifest),
        );
        let manifest = Arc::new(model.manifest);
        Ok(Coordinator {
            inner: Arc::new_cyclic(|weak: &Weak<Inner>| {
                let auditor = cfg.audit.map(|_| {
                    let weak = weak.clone();
                    auditor::Auditor::start(
                        cfg.model_dir.clone(),
                        manifest.clone(),
                        cfg.audit_cpus.clone(),
                        Box::new(move |v| {
                            if let Some(inner) = weak.upgrade() {
                                Coordinator { inner }.act(|hub, now| hub.core.audit_done(now, v));
                            }
                        }),
                    )
                });
                Inner {
                    cfg,
                    manifest,
                    tokenizer,
                    hub: Mutex::new(Hub {
                        core,
                        links: HashMap::new(),
                        waiters: HashMap::new(),
                    }),
                    events,
                    changed: Notify::new(),
                    ticking: AtomicBool::new(false),
                    auditor,
                }
            }),
        })
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.cfg
    }

    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.inner.manifest
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// Subscribes to the event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock would poison it; the state stays usable.
        self.inner.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the core (and the IO handles), then performs what the core asked for, in
    /// order, before the lock is released (so messages to a node leave in the core's order).
    pub(crate) fn act<R>(&self, f: impl FnOnce(&mut Hub, Instant) -> R) -> R {
        let mut hub = self.hub();
        let r = f(&mut hub, Instant::now());
        let outs = hub.core.drain();
        for o in outs {
            self.perform(&mut hub, o);
        }
        r
    }

    /// Reads the core.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Core) -> R) -> R {
        f(&self.hub().core)
    }

    fn perform(&self, hub: &mut Hub, o: Output) {
        let text = |m: &CoordinatorMessage| {
            Message::Text(
                serde_json::to_string(m)
                    .expect("control messages serialise")
                    .into(),
            )
        };
        match o {
            Output::Welcome { node } => {
                let msg = CoordinatorMessage::Welcome {
                    node_id: node,
                    manifest: Box::new((*self.inner.manifest).clone()),
                };
                if let Some(tx) = hub.links.get(&node) {
                    let _ = tx.send(text(&msg));
                }
            }
            Output::Send { node, msg } => {
                if let Some(tx) = hub.links.get(&node) {
                    let _ = tx.send(text(&msg));
                }
            }
            Output::Frame { node, frame } => {
                if let Some(tx) = hub.links.get(&node) {
                    let _ = tx.send(Message::Binary(crate::protocol::encode(&frame).into()));
                }
            }
            Output::Disconnect { node, reason } => {
                if let Some(tx) = hub.links.remove(&node) {
                    let _ = tx.send(close_message(&reason));
                }
            }
            Output::Event(e) => {
                tracing::debug!(?e, "event");
                let _ = self.inner.events.send(e);
            }
            Output::StepDone { step, outcome } => {
                if let Some(w) = hub.waiters.remove(&step) {
                    let _ = w.send(outcome);
                }
            }
            Output::Changed => self.inner.changed.notify_waiters(),
            Output::Audit(job) => {
                if let Some(a) = &self.inner.auditor {
                    a.send(job);
                }
            }
        }
    }

    /// Resolves the next time placement or readiness changes (created before checking, so a
    /// change in between is not missed).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.changed.notified()
    }

    /// Registers a node that said hello (its outgoing channel is `tx`); returns its id, or why
    /// it is refused (it was caught returning bad results, see `state::bans`). The welcome and
    /// its first loads are queued on `tx`.
    pub(crate) fn add_node(
        &self,
        hello: state::Hello,
        tx: mpsc::UnboundedSender<Message>,
    ) -> Result<u64, String> {
        self.start_ticking();
        self.act(|hub, now| {
            if let Some(why) = hub.core.refuse(now, &hello.name, hello.address) {
                return Err(why);
            }
            // The id the core will give: registered first so its first messages reach it.
            let id = hub.core.next_node_id();
            hub.links.insert(id, tx);
            let got = hub.core.node_joined(now, hello);
            debug_assert_eq!(got, id);
            Ok(got)
        })
    }

    /// Removes a node (disconnected, or declared gone): fails its pending steps, frees its
    /// shards and places them on the remaining nodes.
    pub fn remove_node(&self, id: u64, reason: &str) {
        self.act(|hub, now| {
            hub.core.remove_node(now, id, reason);
            hub.links.remove(&id);
        });
    }

    /// Moves `shard` to `node` as a user asked (the app's drag, `POST /api/shards/{i}/move`):
    /// the target loads it while the current node keeps serving, the route switches when it is
    /// ready, and the shard stays pinned there until moved again, unpinned or the node leaves.
    /// Refused (with the reason) when the node is unknown or lacks room.
    pub fn move_shard(&self, shard: usize, node: u64) -> Result<(), String> {
        self.act(|hub, now| hub.core.move_shard(now, shard, node))
    }

    /// Lets automatic placement move `shard` again (`POST /api/shards/{i}/unpin`).
    pub fn unpin_shard(&self, shard: usize) -> Result<(), String> {
        self.act(|hub, now| hub.core.unpin(now, shard))
    }

    /// Why no generation can run now, or `None` when the pipeline is complete.
    pub fn pipeline_problem(&self) -> Option<String> {
        self.read(|c| c.pipeline_problem())
    }

    /// What the driver holds besides the core: node channels and sessions waiting for a step.
    /// Both must follow the connected nodes and the running sessions (tests check that nodes
    /// and clients that leave leave nothing here).
    pub fn held_handles(&self) -> Held {
        let hub = self.hub();
        Held {
            links: hub.links.len(),
            waiters: hub.waiters.len(),
        }
    }

    /// The core's part of `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        self.read(|c| c.status(Instant::now()))
    }

    /// Starts the ticker that hands the core the time (once, from inside the runtime). It
    /// stops when the coordinator is dropped.
    fn start_ticking(&self) {
        if self.inner.ticking.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Coordinator { inner }.act(|hub, now| hub.core.tick(now));
            }
        });
    }
}
