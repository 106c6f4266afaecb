//! The coordinator's core as a sans-IO state machine ([`Core`]): nodes, shard placement and
//! loads, moves and pins, steps in flight with their deadlines, sessions' node caches, learned
//! speeds. Its fields are private; it changes only through methods that take plain values
//! (a node's hello, a decoded frame, the time now) and queue [`Output`]s saying what to send to
//! whom, which the caller drains with [`Core::drain`] and performs (mod.rs does, over the nodes'
//! sockets; the unit tests in state/tests.rs just look at them).
//!
//! Invariants: every route change bumps `epoch`, and a session whose caches were built under
//! another epoch replays before its next step; a shard that left a node in a move is unloaded
//! only once no step of an older route is still running (`retired`); a pinned shard (a user's
//! move) is never moved by automatic rebalancing; every step and every load has a deadline,
//! and a node that misses one is removed like a node that failed.

#[cfg(test)]
mod audit_tests;
mod audits;
pub mod bans;
#[cfg(test)]
mod churn_tests;
mod sessions;
mod shards;
mod status;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde::Serialize;

pub use self::audits::{AuditConfig, VERIFIED_EVERY};
pub use self::steps::{HopFailure, StepOutcome, StepRefused, StepRequest};
use super::events::Event;
use super::speed::{Deadlines, Speed, bounded_memory};
use super::wire::{CoordinatorMessage, NodeKind, WireEncoding};
use crate::protocol::Frame;

/// What placement and steps need to know of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    pub shards: Vec<ShardShape>,
    /// Width of the hidden states between shards.
    pub hidden: usize,
    pub vocab: usize,
}

/// One shard of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardShape {
    /// Size of the shard file (what a node must hold and download).
    pub bytes: u64,
    /// Weight bytes every row of a step reads (the layers'): what a step's work scales with.
    pub row_bytes: u64,
    /// Weight bytes a step reads once whatever its rows: the output head on the last shard
    /// (logits for the last row only). The embedding table is neither: a lookup reads a row.
    pub step_bytes: u64,
    pub layers: usize,
    /// File name, served at `/shards/FILE`.
    pub file: String,
    pub sha256: String,
}

impl ModelShape {
    /// The shape of a split model.
    pub fn of(m: &splitter::Manifest) -> ModelShape {
        ModelShape {
            shards: m
                .shards
                .iter()
                .map(|s| {
                    let (row_bytes, step_bytes) = work_bytes(s, m.config.vocab_size);
                    ShardShape {
                        bytes: s.bytes,
                        row_bytes,
                        step_bytes,
                        layers: s.layer_range().len(),
                        file: s.file.clone(),
                        sha256: s.sha256.clone(),
                    }
                })
                .collect(),
            hidden: m.config.hidden_size,
            vocab: m.config.vocab_size,
        }
    }
}

/// A shard's weight bytes read per row and per step, from its tensors' shapes and storage types
/// (so quantized shards count what they hold): the vocabulary tables (token embedding, output
/// head: `[vocab, hidden]` outside the layers) do not scale with rows; the head, where the
/// shard has one, is read once a step.
fn work_bytes(s: &splitter::ShardInfo, vocab: usize) -> (u64, u64) {
    let bytes = |t: &splitter::TensorInfo| t.dtype.bytes_for(&t.shape) as u64;
    let tables: Vec<u64> = s
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && t.shape[0] == vocab && vocab > 0)
        .map(bytes)
        .collect();
    let head = if s.has_head {
        // Tied heads read the embedding table (or its copy) as the head.
        tables.iter().copied().max().unwrap_or(0)
    } else {
        0
    };
    let all: u64 = s.tensors.iter().map(bytes).sum();
    (all - tables.iter().sum::<u64>(), head)
}

/// The core's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    pub deadlines: Deadlines,
    /// Encoding of hidden states between nodes.
    pub encoding: WireEncoding,
    /// Most sessions open at once.
    pub max_sessions: usize,
    /// Audits by recomputation (`None`: every well-formed reply is believed).
    pub audit: Option<audits::AuditConfig>,
}

/// What a node said about itself in `hello` (the version already checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub name: String,
    pub kind: NodeKind,
    pub backend: String,
    pub adapter: String,
    pub memory_bytes: u64,
    pub gflops: f64,
    /// Where its connection came from (`None` when unknown, as in tests without sockets).
    pub address: Option<std::net::IpAddr>,
}

/// A node as the coordinator shows it: its claims, made plausible.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub id: u64,
    pub name: String,
    pub kind: NodeKind,
    pub adapter: String,
    pub backend: String,
    /// Memory offered (bounded to a plausible size).
    pub memory_bytes: u64,
    /// Claimed speed (bounded); the learned one is in the status.
    pub gflops: f64,
}

/// Memory a node reports it really holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    pub weights_bytes: u64,
    pub kv_bytes: u64,
}

/// A connected node.
#[derive(Debug, Clone)]
struct Node {
    info: NodeInfo,
    /// The name it asked for (before it was made unique) and its address: what a ban is on.
    asked_name: String,
    address: Option<std::net::IpAddr>,
    speed: Speed,
    held: Option<MemoryReport>,
    tokens_processed: u64,
    joined: Instant,
    /// When its last reply arrived: the node runs steps in order, so a step sent before that
    /// started then.
    last_done: Option<Instant>,
}

/// Load state of a shard, as `/api/status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    Unassigned,
    Loading,
    Ready,
}

/// A move in progress: the target loads while the current node keeps serving.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Move {
    node: u64,
    progress: f32,
    deadline: Instant,
}

/// One shard's placement.
#[derive(Debug, Clone, PartialEq)]
struct ShardEntry {
    /// The node that serves the shard (or is loading it, when not yet ready).
    node: Option<u64>,
    state: ShardState,
    progress: f32,
    /// When `node` must have finished loading (while `Loading`).
    deadline: Option<Instant>,
    moving_to: Option<Move>,
    /// A user's move: automatic rebalancing leaves the shard on this node.
    pinned: Option<u64>,
}

impl ShardEntry {
    const FREE: ShardEntry = ShardEntry {
        node: None,
        state: ShardState::Unassigned,
        progress: 0.0,
        deadline: None,
        moving_to: None,
        pinned: None,
    };
}

/// A shard left `node` when the route of `epoch` took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retired {
    node: u64,
    shard: usize,
    epoch: u64,
}

/// One hop of a route: a node and the consecutive shards it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub node: u64,
    pub first: usize,
    pub last: usize,
}

/// Whether generations can run.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteState {
    /// Every shard is ready: steps run on the route of this epoch.
    Ready { epoch: u64 },
    /// Every shard has a node, some are still loading.
    Loading,
    /// These shards have no node at all.
    Missing { shards: Vec<usize> },
}

/// What the core asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send the `welcome` message (with the manifest) to a node that just joined.
    Welcome { node: u64 },
    /// Send a control message.
    Send { node: u64, msg: CoordinatorMessage },
    /// Send a SYN1 frame.
    Frame { node: u64, frame: Frame },
    /// Close the node's connection with this reason (it was removed).
    Disconnect { node: u64, reason: String },
    /// Publish an event.
    Event(Event),
    /// A step ended; its session is waiting for this.
    StepDone { step: u64, outcome: StepOutcome },
    /// Work for the auditor thread.
    Audit(super::auditor::AuditJob),
    /// Placement or readiness changed: wake sessions waiting for a route.
    Changed,
}

/// A generation's node-side footprint.
#[derive(Debug, Clone)]
struct SessionEntry {
    prompt_tokens: usize,
    generated: usize,
    drafted: usize,
    accepted: usize,
    /// Nodes that may hold this session's caches.
    touched: BTreeSet<u64>,
}

/// The coordinator's state. See the module docs.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    model: ModelShape,
    nodes: BTreeMap<u64, Node>,
    shards: Vec<ShardEntry>,
    sessions: BTreeMap<u64, SessionEntry>,
    steps: HashMap<u64, steps::Step>,
    pending: HashMap<u32, steps::PendingHop>,
    next_node: u64,
    next_request: u32,
    next_step: u64,
    next_session: u64,
    /// Bumped whenever a route changes; sessions built under another epoch replay.
    epoch: u64,
    retired: Vec<Retired>,
    out: Vec<Output>,
    /// Speculative draft tokens sent and kept, over all sessions.
    drafted_total: u64,
    accepted_total: u64,
    /// The scale of the hidden states each shard's output has shown (by the hop's last shard).
    scales: Vec<crate::coordinator::check::ScaleRange>,
    /// Nodes caught returning impossible results, refused when they come back (bans.rs).
    bans: Vec<bans::Ban>,
    /// What is audited, what waits for audits, who is trusted (audits.rs).
    audits: audits::Audits,
}

/// A rebalance happens only when it makes the slowest node's time per token at most this
/// fraction of what it is.
pub const REBALANCE_GAIN: f64 = 0.8;

impl Core {
    /// An empty cluster for `model`.
    pub fn new(cfg: CoreConfig, model: ModelShape) -> Core {
        Core {
            shards: vec![ShardEntry::FREE; model.shards.len()],
            scales: vec![Default::default(); model.shards.len()],
            bans: Vec::new(),
            audits: audits::Audits::new(cfg.audit),
            cfg,
            model,
            nodes: BTreeMap::new(),
            sessions: BTreeMap::new(),
            steps: HashMap::new(),
            pending: HashMap::new(),
            next_node: 1,
            next_request: 1,
            next_step: 1,
            next_session: 1,
            epoch: 0,
            retired: Vec::new(),
            out: Vec::new(),
            drafted_total: 0,
            accepted_total: 0,
        }
    }

    /// Takes what the core asked to do since the last call, in order.
    pub fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// The core's settings.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The id the next node to join will get.
    pub fn next_node_id(&self) -> u64 {
        self.next_node
    }

    /// Nodes connected.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn emit(&mut self, e: Event) {
        self.out.push(Output::Event(e));
    }

    fn send(&mut self, node: u64, msg: CoordinatorMessage) {
        self.out.push(Output::Send { node, msg });
    }

    /// A node said hello: registers it (claims bounded, name cleaned and made unique among the
    /// connected nodes) and places shards.
    pub fn node_joined(&mut self, now: Instant, hello: Hello) -> u64 {
        let id = self.next_node;
        self.next_node += 1;
        let info = NodeInfo {
            id,
            name: self.unique_name(clean(&hello.name, NAME_MAX)),
            kind: hello.kind,
            adapter: clean(&hello.adapter, 128),
            backend: clean(&hello.backend, 16),
            memory_bytes: bounded_memory(hello.memory_bytes),
            gflops: super::speed::bounded_gflops(hello.gflops),
        };
        self.nodes.insert(
            id,
            Node {
                speed: Speed::new(info.gflops),
                info: info.clone(),
                asked_name: clean(&hello.name, NAME_MAX),
                address: hello.address,
                held: None,
                tokens_processed: 0,
                joined: now,
                last_done: None,
            },
        );
        self.emit(Event::NodeJoined {
            node: id,
            name: info.name,
            kind: info.kind,
            adapter: info.adapter,
            memory_bytes: info.memory_bytes,
            gflops: info.gflops,
        });
        self.out.push(Output::Welcome { node: id });
        self.place(now);
        self.rebalance(now);
        id
    }

    /// `name`, or `name (2)`, `name (3)`... the first that no connected node has, cut so that
    /// it stays within [`NAME_MAX`] characters.
    fn unique_name(&self, name: String) -> String {
        let taken = |n: &str| self.nodes.values().any(|x| x.info.name == n);
        if !taken(&name) {
            return name;
        }
        (2..)
            .map(|k| {
                let suffix = format!(" ({k})");
                let stem: String = name
                    .chars()
                    .take(NAME_MAX.saturating_sub(suffix.len()))
                    .collect();
                format!("{}{suffix}", stem.trim_end())
            })
            .find(|n| !taken(n))
            .expect("finitely many nodes take finitely many names")
    }

    /// A node reported what it holds, and maybe a new measure of its speed.
    pub fn node_report(
        &mut self,
        now: Instant,
        node: u64,
        held: MemoryReport,
        gflops: Option<f64>,
    ) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        n.held = Some(held);
        if let Some(g) = gflops {
            n.speed.reclaim(g);
            n.info.gflops = n.speed.claimed();
            if n.speed.moved() {
                self.rebalance(now);
            }
        }
    }

    /// Removes a node (it disconnected, failed a step, or missed a deadline): fails its steps,
    /// frees its shards and pins and places the shards on the others.
    pub fn remove_node(&mut self, now: Instant, id: u64, reason: &str) {
        if self.nodes.remove(&id).is_none() {
            return;
        }
        self.out.push(Output::Disconnect {
            node: id,
            reason: reason.to_string(),
        });
        self.fail_node_steps(id, reason);
        let mut freed = Vec::new();
        let mut unpinned = Vec::new();
        for (i, s) in self.shards.iter_mut().enumerate() {
            if s.moving_to.map(|m| m.node) == Some(id) {
                s.moving_to = None;
            }
            if s.pinned == Some(id) {
                s.pinned = None;
                unpinned.push(i);
            }
            if s.node == Some(id) {
                match s.moving_to.take() {
                    // A move was under way: its target, still loading, takes over.
                    Some(m) => {
                        *s = ShardEntry {
                            node: Some(m.node),
                            state: ShardState::Loading,
                            progress: m.progress,
                            deadline: Some(m.deadline),
                            moving_to: None,
                            pinned: s.pinned,
                        };
                    }
                    None => {
                        *s = ShardEntry::FREE;
                        freed.push(i);
                    }
                }
            }
        }
        self.retired.retain(|r| r.node != id);
        for s in self.sessions.values_mut() {
            s.touched.remove(&id);
        }
        self.epoch += 1;
        tracing::info!(node = id, "node left: {reason}");
        self.emit(Event::NodeLeft {
            node: id,
            reason: reason.to_string(),
        });
        for shard in unpinned {
            self.emit(Event::ShardPinned { shard, node: None });
        }
        for shard in freed {
            self.emit(Event::ShardUnassigned { shard });
        }
        self.place(now);
        self.out.push(Output::Changed);
    }

    /// The route through ready shards, grouping consecutive shards of one node into one hop;
    /// `None` while any shard is not ready.
    pub fn route(&self) -> Option<Vec<Hop>> {
        let mut hops: Vec<Hop> = Vec::new();
        for (i, s) in self.shards.iter().enumerate() {
            let node = match (s.state, s.node) {
                (ShardState::Ready, Some(n)) if self.nodes.contains_key(&n) => n,
                _ => return None,
            };
            match hops.last_mut() {
                Some(h) if h.node == node => h.last = i,
                _ => hops.push(Hop {
                    node,
                    first: i,
                    last: i,
                }),
            }
        }
        Some(hops)
    }

    /// Whether generations can run now, and if not, why.
    pub fn route_state(&self) -> RouteState {
        if self.route().is_some() {
            return RouteState::Ready { epoch: self.epoch };
        }
        let missing: Vec<usize> = (0..self.shards.len())
            .filter(|&i| self.shards[i].node.is_none())
            .collect();
        if missing.is_empty() {
            RouteState::Loading
        } else {
            RouteState::Missing { shards: missing }
        }
    }

    /// Shards that are not ready.
    pub fn not_ready(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| self.shards[i].state != ShardState::Ready)
            .collect()
    }

    /// Why no generation can run now (each shard that is not ready, and how many nodes are
    /// connected), or `None` when the pipeline is complete.
    pub fn pipeline_problem(&self) -> Option<String> {
        if self.route().is_some() {
            return None;
        }
        let missing: Vec<String> = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state != ShardState::Ready)
            .map(|(i, s)| format!("shard {i} is {:?}", s.state).to_lowercase())
            .collect();
        Some(format!(
            "{} ({} nodes connected)",
            missing.join(", "),
            self.nodes.len()
        ))
    }
}

/// Longest node name shown (characters).
pub const NAME_MAX: usize = 64;

/// A name from a node, made safe to show: control characters and bidirectional overrides
/// removed, at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
    let out: String = s
        .chars()
        .filter(|&c| !c.is_control() && !bidi(c))
        .take(max)
        .collect();
    let out = out.trim().to_string();
    if out.is_empty() {
        "unnamed".into()
    } else {
        out
    }
}
