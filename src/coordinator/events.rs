//! The coordinator's one event stream: everything the visual app shows and the logs record
//! (nodes joining and leaving, shards placed and loading, frames relayed with their bytes and
//! timing, tokens sampled, sessions opened and closed) is published here, once.

use serde::Serialize;

use super::wire::NodeKind;

/// One thing that happened in the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    NodeJoined {
        node: u64,
        name: String,
        kind: NodeKind,
        adapter: String,
        memory_bytes: u64,
        gflops: f64,
    },
    NodeLeft {
        node: u64,
        reason: String,
    },
    /// A node asking to join was refused: it was caught returning bad results (state/bans.rs).
    NodeRefused {
        name: String,
        reason: String,
    },
    /// A shard was given to a node, which starts loading it.
    ShardPlaced {
        shard: usize,
        node: u64,
    },
    ShardLoading {
        shard: usize,
        node: u64,
        fraction: f32,
    },
    ShardReady {
        shard: usize,
        node: u64,
    },
    /// No node holds the shard any more.
    ShardUnassigned {
        shard: usize,
    },
    /// A node could not load a shard.
    ShardFailed {
        shard: usize,
        node: u64,
        error: String,
    },
    /// A shard was pinned to a node by a user's move (automatic rebalancing leaves it
    /// there), or unpinned (`node: None`: by the user, or because the node left or could not
    /// load it).
    ShardPinned {
        shard: usize,
        node: Option<u64>,
    },
    /// A move was refused (not enough memory, unknown node...).
    MoveRefused {
        shard: usize,
        node: u64,
        reason: String,
    },
    /// One hop of a step: the frame sent to `node` and the one it returned.
    FrameRelayed {
        session: u64,
        node: u64,
        first_shard: usize,
        last_shard: usize,
        /// `tokens` or `activation`.
        sent_kind: &'static str,
        sent_bytes: usize,
        /// `activation` or `top_logits`.
        received_kind: &'static str,
        received_bytes: usize,
        tokens: usize,
        micros: u64,
    },
    TokenSampled {
        session: u64,
        id: u32,
        text: String,
    },
    SessionOpened {
        session: u64,
        prompt_tokens: usize,
    },
    /// A session's caches were rebuilt by replaying its tokens (failover or a move).
    SessionReplayed {
        session: u64,
        tokens: usize,
    },
    SessionClosed {
        session: u64,
        reason: String,
    },
}
