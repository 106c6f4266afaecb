//! The core's part of `/api/status`: nodes (claims, learned speed, memory really held),
//! shards (holder, load state, move, pin), sessions. docs/API.md lists the fields.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Core, ShardState};

impl Core {
    /// Nodes, shards and sessions as JSON (`model` and the API fields are added by http.rs).
    pub fn status(&self, now: Instant) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .values()
            .map(|n| {
                json!({
                    "id": n.info.id,
                    "name": n.info.name,
                    "kind": n.info.kind,
                    "adapter": n.info.adapter,
                    "backend": n.info.backend,
                    "memory_bytes": n.info.memory_bytes,
                    "gflops": n.info.gflops,
                    "learned_gflops": n.speed.learned(),
                    "speed_samples": n.speed.samples(),
                    "held": n.held,
                    "shards": self.shards_of(n.info.id),
                    "tokens_processed": n.tokens_processed,
                    "connected_seconds": now.saturating_duration_since(n.joined).as_secs(),
                })
            })
            .collect();
        let shards: Vec<Value> = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "index": i,
                    "bytes": self.model.shards[i].bytes,
                    "node": s.node,
                    "state": s.state,
                    "progress": s.progress,
                    "moving_to": s.moving_to.map(|m| json!({"node": m.node, "progress": m.progress})),
                    "pinned": s.pinned,
                })
            })
            .collect();
        json!({
            "complete": self.route().is_some(),
            "epoch": self.epoch,
            "nodes": nodes,
            "shards": shards,
            "sessions": self.sessions(),
            "speculation": {
                "drafted": self.drafted_total,
                "accepted": self.accepted_total,
            },
            "banned": self.bans_json(now),
            "audits": self.audits_json(),
            "unassigned": self.shards.iter().filter(|s| s.state == ShardState::Unassigned).count(),
        })
    }
}
