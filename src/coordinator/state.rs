//! The coordinator's shared state: nodes, shard assignments, pending step replies, sessions.
//! It sits behind one std mutex that is never held across an await; every change that alters
//! routes bumps `epoch`, which tells sessions their caches must be rebuilt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use axum::extract::ws::Message;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::wire::NodeKind;
use crate::protocol::Frame;

/// What a node reported when it joined.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub id: u64,
    pub name: String,
    pub kind: NodeKind,
    pub adapter: String,
    pub backend: String,
    pub memory_bytes: u64,
    pub gflops: f64,
}

/// A connected node.
pub struct NodeEntry {
    pub info: NodeInfo,
    /// Messages to the node's socket task.
    pub tx: mpsc::UnboundedSender<Message>,
    pub tokens_processed: u64,
    pub joined: Instant,
}

/// Load state of a shard, as `/api/status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    Unassigned,
    Loading,
    Ready,
}

/// One shard's placement.
#[derive(Debug, Clone)]
pub struct ShardEntry {
    /// The node that serves the shard (or is loading it, when not yet ready).
    pub node: Option<u64>,
    pub state: ShardState,
    pub progress: f32,
    /// A move in progress: the target loads while `node` keeps serving.
    pub moving_to: Option<(u64, f32)>,
}

/// A step waiting for its node's reply.
pub struct Pending {
    pub node: u64,
    pub reply: oneshot::Sender<Result<Frame, String>>,
}

/// A generation in progress.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: u64,
    pub prompt_tokens: usize,
    pub generated: usize,
}

/// Everything behind the coordinator's mutex.
pub struct State {
    pub nodes: BTreeMap<u64, NodeEntry>,
    pub shards: Vec<ShardEntry>,
    pub pending: HashMap<u32, Pending>,
    pub sessions: BTreeMap<u64, SessionInfo>,
    pub next_node: u64,
    pub next_step: u32,
    pub next_session: u64,
    /// Bumped whenever a route changes; sessions built under another epoch replay.
    pub epoch: u64,
    /// Steps running now, by the epoch of the route they use.
    pub inflight: BTreeMap<u64, usize>,
    /// Shards a node no longer serves after a move, unloaded once no step of an older route is
    /// still running (so a step in flight never meets a shard that just left).
    pub retired: Vec<Retired>,
}

/// A shard left `node` when the route of `epoch` took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub node: u64,
    pub shard: usize,
    pub epoch: u64,
}

/// One hop of a route: a node and the consecutive shards it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub node: u64,
    pub first: usize,
    pub last: usize,
}

impl State {
    /// Empty state for a model with `n_shards` shards.
    pub fn new(n_shards: usize) -> State {
        State {
            nodes: BTreeMap::new(),
            shards: vec![
                ShardEntry {
                    node: None,
                    state: ShardState::Unassigned,
                    progress: 0.0,
                    moving_to: None
                };
                n_shards
            ],
            pending: HashMap::new(),
            sessions: BTreeMap::new(),
            next_node: 1,
            next_step: 1,
            next_session: 1,
            epoch: 0,
            inflight: BTreeMap::new(),
            retired: Vec::new(),
        }
    }

    /// Retired shards that no running step can still need, removed from the list; those the
    /// node has not been given back since.
    pub fn take_unloadable(&mut self) -> Vec<Retired> {
        let oldest = self.inflight.keys().next().copied().unwrap_or(u64::MAX);
        let (done, wait): (Vec<Retired>, Vec<Retired>) =
            self.retired.iter().partition(|r| oldest >= r.epoch);
        self.retired = wait;
        done.into_iter()
            .filter(|r| {
                let s = &self.shards[r.shard];
                s.node != Some(r.node) && s.moving_to.map(|m| m.0) != Some(r.node)
            })
            .collect()
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

    /// Shards assigned to (or moving to) `node`.
    pub fn shards_of(&self, node: u64) -> BTreeSet<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node == Some(node) || s.moving_to.map(|m| m.0) == Some(node))
            .map(|(i, _)| i)
            .collect()
    }

    /// A fresh step id (never 0, wrapping).
    pub fn step_id(&mut self) -> u32 {
        let id = self.next_step;
        self.next_step = self.next_step.wrapping_add(1).max(1);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(st: &mut State, shard: usize, from: u64, to: u64) {
        st.shards[shard].node = Some(to);
        st.epoch += 1;
        st.retired.push(Retired {
            node: from,
            shard,
            epoch: st.epoch,
        });
    }

    #[test]
    fn a_retired_shard_waits_for_steps_on_older_routes() {
        let mut st = State::new(2);
        st.inflight.insert(0, 1); // a step on the route before the move
        moved(&mut st, 1, 7, 8);
        assert!(st.take_unloadable().is_empty(), "a step still uses node 7");
        assert_eq!(st.retired.len(), 1);
        st.inflight.clear();
        st.inflight.insert(1, 2); // steps on the new route do not hold it back
        let done = st.take_unloadable();
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].node, done[0].shard), (7, 1));
        assert!(st.retired.is_empty());
    }

    #[test]
    fn a_shard_moved_back_is_not_unloaded() {
        let mut st = State::new(2);
        st.inflight.insert(0, 1);
        moved(&mut st, 0, 7, 8);
        moved(&mut st, 0, 8, 7); // dragged back before the old route drained
        st.inflight.clear();
        let done = st.take_unloadable();
        assert_eq!(done.len(), 1, "only node 8 frees shard 0: {done:?}");
        assert_eq!(done[0].node, 8);
    }
}
