//! The coordinator core: nodes join over WebSocket, shards are placed on them, and generations
//! run as sessions whose steps are relayed node to node through here (browsers cannot accept
//! connections). The same core runs headless (`synapse serve`) and inside the visual app.
//!
//! Invariants: the state mutex is never held across an await; every route change bumps the
//! epoch, and a session whose caches were built under an older epoch replays its tokens before
//! the next step, which is how failover and shard moves lose or repeat no token.

pub mod events;
pub mod http;
pub mod link;
pub mod openai;
pub mod placement;
pub mod session;
pub mod state;
pub mod wire;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::extract::ws::Message;
use splitter::Manifest;
use tokio::sync::{Notify, broadcast, mpsc};

use self::events::Event;
use self::state::{NodeEntry, NodeInfo, ShardState, State};
use self::wire::{CoordinatorMessage, WireEncoding};
use crate::model::ModelDir;
use crate::tokenizer::Tokenizer;

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub model_dir: PathBuf,
    /// Join token nodes must present.
    pub token: String,
    /// A node that has not answered a step within this is declared gone.
    pub step_timeout: Duration,
    /// How long a generation waits for a complete pipeline.
    pub pipeline_timeout: Duration,
    /// Candidates the last shard returns for sampling.
    pub top_k: usize,
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
}

impl CoordinatorConfig {
    /// Defaults for `model_dir` and `token`.
    pub fn new(model_dir: PathBuf, token: String) -> Self {
        CoordinatorConfig {
            model_dir,
            token,
            step_timeout: Duration::from_secs(60),
            pipeline_timeout: Duration::from_secs(120),
            top_k: 64,
            encoding: WireEncoding::Rice,
            max_sessions: 16,
            max_queued: 32,
            api_key: None,
        }
    }
}

/// A rebalance happens only when it makes the slowest node's time per token at most this
/// fraction of what it is.
pub const REBALANCE_GAIN: f64 = 0.8;

/// A cheap-to-clone handle on the running coordinator.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CoordinatorConfig,
    manifest: Arc<Manifest>,
    tokenizer: Tokenizer,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Woken whenever placement or readiness changes.
    changed: Notify,
}

impl Coordinator {
    /// Opens the model directory and starts with no nodes.
    pub fn new(cfg: CoordinatorConfig) -> Result<Coordinator> {
        let model = ModelDir::open(&cfg.model_dir)?;
        let tokenizer = model.tokenizer()?;
        let (events, _) = broadcast::channel(4096);
        let n = model.manifest.shards.len();
        Ok(Coordinator {
            inner: Arc::new(Inner {
                cfg,
                manifest: Arc::new(model.manifest),
                tokenizer,
                state: Mutex::new(State::new(n)),
                events,
                changed: Notify::new(),
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

    pub(crate) fn emit(&self, e: Event) {
        tracing::debug!(?e, "event");
        let _ = self.inner.events.send(e);
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would poison it; the state stays usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn notify(&self) {
        self.inner.changed.notify_waiters();
    }

    pub(crate) async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// Registers a node that said hello; returns its id. Placement runs right after.
    pub(crate) fn add_node(&self, mut info: NodeInfo, tx: mpsc::UnboundedSender<Message>) -> u64 {
        let id = {
            let mut st = self.state();
            let id = st.next_node;
            st.next_node += 1;
            info.id = id;
            st.nodes.insert(
                id,
                NodeEntry {
                    info: info.clone(),
                    tx,
                    tokens_processed: 0,
                    joined: Instant::now(),
                },
            );
            id
        };
        self.emit(Event::NodeJoined {
            node: id,
            name: info.name,
            kind: info.kind,
            adapter: info.adapter,
            memory_bytes: info.memory_bytes,
            gflops: info.gflops,
        });
        id
    }

    /// Removes a node (disconnected, or declared gone): fails its pending steps, frees its
    /// shards and places them on the remaining nodes.
    pub fn remove_node(&self, id: u64, reason: &str) {
        let freed = {
            let mut st = self.state();
            let Some(entry) = st.nodes.remove(&id) else {
                return;
            };
            let _ = entry.tx.send(Message::Close(None));
            st.pending.retain(|_, p| p.node != id);
            let mut freed = Vec::new();
            for (i, s) in st.shards.iter_mut().enumerate() {
                if s.moving_to.map(|m| m.0) == Some(id) {
                    s.moving_to = None;
                }
                if s.node == Some(id) {
                    *s = state::ShardEntry {
                        node: None,
                        state: ShardState::Unassigned,
                        progress: 0.0,
                        moving_to: None,
                    };
                    freed.push(i);
                }
            }
            st.epoch += 1;
            freed
        };
        tracing::info!(node = id, "node left: {reason}");
        self.emit(Event::NodeLeft {
            node: id,
            reason: reason.to_string(),
        });
        for shard in freed {
            self.emit(Event::ShardUnassigned { shard });
        }
        self.place();
        self.notify();
    }

    /// Gives every unassigned shard a node, if one has room, and tells the nodes to load.
    pub fn place(&self) {
        let loads = {
            let mut st = self.state();
            let bytes: Vec<u64> = self.inner.manifest.shards.iter().map(|s| s.bytes).collect();
            let current: Vec<Option<u64>> = st.shards.iter().map(|s| s.node).collect();
            let caps: Vec<placement::NodeCapacity> = st
                .nodes
                .values()
                .map(|n| placement::NodeCapacity {
                    id: n.info.id,
                    memory_bytes: n.info.memory_bytes,
                    gflops: n.info.gflops,
                })
                .collect();
            let placed = placement::place(&bytes, &current, &caps);
            let mut loads = Vec::new();
            for (i, (old, new)) in current.iter().zip(&placed).enumerate() {
                if old.is_none()
                    && let Some(n) = new
                {
                    st.shards[i].node = Some(*n);
                    st.shards[i].state = ShardState::Loading;
                    st.shards[i].progress = 0.0;
                    loads.push((i, *n));
                }
            }
            loads
        };
        for (shard, node) in loads {
            self.emit(Event::ShardPlaced { shard, node });
            self.send_load(shard, node);
        }
    }

    /// After a node joins: if the best contiguous placement over all nodes would make the
    /// slowest node at least [`REBALANCE_GAIN`] faster than the current one, move the shards that
    /// differ. Moves keep the old node serving until the new one is ready.
    pub fn rebalance(&self) {
        let moves = {
            let st = self.state();
            if st
                .shards
                .iter()
                .any(|s| s.state != ShardState::Ready || s.moving_to.is_some())
            {
                return;
            }
            let bytes: Vec<u64> = self.inner.manifest.shards.iter().map(|s| s.bytes).collect();
            let caps: Vec<placement::NodeCapacity> = st
                .nodes
                .values()
                .map(|n| placement::NodeCapacity {
                    id: n.info.id,
                    memory_bytes: n.info.memory_bytes,
                    gflops: n.info.gflops,
                })
                .collect();
            let Some(best) = placement::contiguous(&bytes, &caps) else {
                return;
            };
            let current: Vec<Option<u64>> = st.shards.iter().map(|s| s.node).collect();
            let (now, then) = (
                placement::slowest(&bytes, &current, &caps),
                placement::slowest(&bytes, &best, &caps),
            );
            if then > now * REBALANCE_GAIN {
                return;
            }
            current
                .iter()
                .zip(&best)
                .enumerate()
                .filter_map(|(i, (c, b))| {
                    (c != b).then_some((i, b.expect("contiguous places every shard")))
                })
                .collect::<Vec<_>>()
        };
        for (shard, node) in moves {
            let _ = self.move_shard(shard, node);
        }
    }

    fn send_load(&self, shard: usize, node: u64) {
        let info = &self.inner.manifest.shards[shard];
        let msg = CoordinatorMessage::Load {
            shard,
            url: format!("/shards/{}", info.file),
            sha256: info.sha256.clone(),
            bytes: info.bytes,
        };
        self.send_to(node, &msg);
    }

    /// Sends a control message to a node (dropped silently if it is gone).
    pub(crate) fn send_to(&self, node: u64, msg: &CoordinatorMessage) {
        let text = serde_json::to_string(msg).expect("control messages serialise");
        if let Some(n) = self.state().nodes.get(&node) {
            let _ = n.tx.send(Message::Text(text.into()));
        }
    }

    /// Moves `shard` to `node`: the target loads it while the current node keeps serving; the
    /// route switches when the target is ready. Refused (with the reason) when the node is
    /// unknown or lacks room.
    pub fn move_shard(&self, shard: usize, node: u64) -> Result<(), String> {
        let refuse = |reason: String| {
            self.emit(Event::MoveRefused {
                shard,
                node,
                reason: reason.clone(),
            });
            Err(reason)
        };
        let bytes = match self.inner.manifest.shards.get(shard) {
            Some(s) => s.bytes,
            None => {
                return Err(format!(
                    "no shard {shard}: the model has {}",
                    self.inner.manifest.shards.len()
                ));
            }
        };
        {
            let mut st = self.state();
            let Some(target) = st.nodes.get(&node) else {
                drop(st);
                return refuse(format!("no node {node}"));
            };
            let cap = placement::usable(&placement::NodeCapacity {
                id: node,
                memory_bytes: target.info.memory_bytes,
                gflops: target.info.gflops,
            });
            let held: u64 = st
                .shards_of(node)
                .iter()
                .map(|&i| self.inner.manifest.shards[i].bytes)
                .sum();
            let entry = &st.shards[shard];
            if entry.node == Some(node) {
                return Ok(());
            }
            if held + bytes > cap {
                let name = target.info.name.clone();
                drop(st);
                return refuse(format!(
                    "node {node} ({name}) has room for {} MB more, shard {shard} needs {} MB",
                    cap.saturating_sub(held) / 1_000_000,
                    bytes / 1_000_000
                ));
            }
            if entry.node.is_none() {
                st.shards[shard].node = Some(node);
                st.shards[shard].state = ShardState::Loading;
            } else {
                st.shards[shard].moving_to = Some((node, 0.0));
            }
        }
        self.emit(Event::ShardPlaced { shard, node });
        self.send_load(shard, node);
        Ok(())
    }

    /// Tells nodes to free the shards they gave up in a move, once no running step still uses
    /// a route through them.
    pub(crate) fn unload_retired(&self) {
        let done = self.state().take_unloadable();
        for r in done {
            self.send_to(r.node, &CoordinatorMessage::Unload { shard: r.shard });
        }
    }

    /// A node finished loading `shard`: it becomes (or stays) the shard's server.
    pub(crate) fn shard_ready(&self, node: u64, shard: usize) {
        let unload_from = {
            let mut st = self.state();
            let Some(s) = st.shards.get_mut(shard) else {
                return;
            };
            let mut unload = None;
            if s.moving_to.map(|m| m.0) == Some(node) {
                unload = s.node;
                s.node = Some(node);
                s.moving_to = None;
            } else if s.node != Some(node) {
                drop(st);
                // Not ours (any more): tell the node to drop it.
                self.send_to(node, &CoordinatorMessage::Unload { shard });
                return;
            }
            s.state = ShardState::Ready;
            s.progress = 1.0;
            st.epoch += 1;
            if let Some(old) = unload {
                let epoch = st.epoch;
                st.retired.push(state::Retired {
                    node: old,
                    shard,
                    epoch,
                });
            }
            unload
        };
        self.emit(Event::ShardReady { shard, node });
        if unload_from.is_some() {
            self.unload_retired();
        }
        self.notify();
        // Nodes that joined while shards were loading may now deserve some.
        self.rebalance();
    }

    pub(crate) fn shard_progress(&self, node: u64, shard: usize, fraction: f32) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        {
            let mut st = self.state();
            let Some(s) = st.shards.get_mut(shard) else {
                return;
            };
            if s.node == Some(node) && s.state == ShardState::Loading {
                s.progress = fraction;
            } else if let Some((n, _)) = s.moving_to {
                if n == node {
                    s.moving_to = Some((n, fraction));
                }
            } else {
                return;
            }
        }
        self.emit(Event::ShardLoading {
            shard,
            node,
            fraction,
        });
    }

    pub(crate) fn shard_failed(&self, node: u64, shard: usize, error: String) {
        {
            let mut st = self.state();
            let Some(s) = st.shards.get_mut(shard) else {
                return;
            };
            if s.moving_to.map(|m| m.0) == Some(node) {
                s.moving_to = None;
            } else if s.node == Some(node) {
                *s = state::ShardEntry {
                    node: None,
                    state: ShardState::Unassigned,
                    progress: 0.0,
                    moving_to: None,
                };
            }
        }
        tracing::warn!(node, shard, "shard failed to load: {error}");
        self.emit(Event::ShardFailed { shard, node, error });
        self.notify();
    }
}
