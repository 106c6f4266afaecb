//! Shards: placement of free shards, rebalancing (pins kept), moves (the old node serves
//! until the target is ready; it unloads once no step of an older route runs), loads with
//! their deadlines, and the nodes' reports of progress, readiness and failure.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Core, Move, Output, REBALANCE_GAIN, Retired, ShardEntry, ShardState};
use crate::coordinator::events::Event;
use crate::coordinator::placement;
use crate::coordinator::wire::CoordinatorMessage;

impl Core {
    /// Shards assigned to (or moving to) `node`.
    pub(super) fn shards_of(&self, node: u64) -> BTreeSet<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node == Some(node) || s.moving_to.map(|m| m.node) == Some(node))
            .map(|(i, _)| i)
            .collect()
    }

    fn capacities(&self) -> Vec<placement::NodeCapacity> {
        self.nodes
            .values()
            .map(|n| placement::NodeCapacity {
                id: n.info.id,
                memory_bytes: n.info.memory_bytes,
                gflops: n.speed.effective(),
            })
            .collect()
    }

    fn shard_bytes(&self) -> Vec<u64> {
        self.model.shards.iter().map(|s| s.bytes).collect()
    }

    /// Gives every unassigned shard a node, if one has room, and tells the nodes to load.
    pub fn place(&mut self, now: Instant) {
        let bytes = self.shard_bytes();
        let current: Vec<Option<u64>> = self.shards.iter().map(|s| s.node).collect();
        let placed = placement::place(&bytes, &current, &self.capacities());
        for (i, (old, new)) in current.iter().zip(&placed).enumerate() {
            if old.is_none()
                && let Some(n) = *new
            {
                let deadline = now + self.cfg.deadlines.load(bytes[i]);
                self.shards[i] = ShardEntry {
                    node: Some(n),
                    state: ShardState::Loading,
                    progress: 0.0,
                    deadline: Some(deadline),
                    moving_to: None,
                    pinned: None,
                };
                self.emit(Event::ShardPlaced { shard: i, node: n });
                self.send_load(i, n);
            }
        }
    }

    /// If the best contiguous placement over all nodes (pinned shards kept where they are)
    /// would make the slowest node at least [`REBALANCE_GAIN`] faster than now, moves the
    /// shards that differ. Only when every shard is ready and none is moving. Moves keep the
    /// old node serving until the new one is ready.
    pub fn rebalance(&mut self, now: Instant) {
        if self
            .shards
            .iter()
            .any(|s| s.state != ShardState::Ready || s.moving_to.is_some())
        {
            return;
        }
        for n in self.nodes.values_mut() {
            n.speed.placed();
        }
        let bytes = self.shard_bytes();
        let caps = self.capacities();
        let pins: Vec<Option<u64>> = self.shards.iter().map(|s| s.pinned).collect();
        let Some(best) = placement::contiguous_pinned(&bytes, &caps, &pins) else {
            return;
        };
        let current: Vec<Option<u64>> = self.shards.iter().map(|s| s.node).collect();
        let (now_cost, then_cost) = (
            placement::slowest(&bytes, &current, &caps),
            placement::slowest(&bytes, &best, &caps),
        );
        if then_cost > now_cost * REBALANCE_GAIN {
            return;
        }
        for (i, (c, b)) in current.iter().zip(&best).enumerate() {
            if c != b
                && let Some(target) = *b
            {
                let _ = self.start_move(now, i, target);
            }
        }
    }

    fn send_load(&mut self, shard: usize, node: u64) {
        let s = &self.model.shards[shard];
        let msg = CoordinatorMessage::Load {
            shard,
            url: format!("/shards/{}", s.file),
            sha256: s.sha256.clone(),
            bytes: s.bytes,
        };
        self.send(node, msg);
    }

    /// A user's move (`POST /api/shards/{i}/move`, the app's drag): `shard` goes to `node`
    /// and stays pinned there until moved again, unpinned, or the node leaves. Refused (with
    /// the reason, also as a `MoveRefused` event) when the shard or node is unknown or the node
    /// lacks room.
    pub fn move_shard(&mut self, now: Instant, shard: usize, node: u64) -> Result<(), String> {
        if shard >= self.shards.len() {
            return Err(format!(
                "no shard {shard}: the model has {}",
                self.shards.len()
            ));
        }
        if let Err(reason) = self.start_move(now, shard, node) {
            self.emit(Event::MoveRefused {
                shard,
                node,
                reason: reason.clone(),
            });
            return Err(reason);
        }
        if self.shards[shard].pinned != Some(node) {
            self.shards[shard].pinned = Some(node);
            self.emit(Event::ShardPinned {
                shard,
                node: Some(node),
            });
        }
        Ok(())
    }

    /// Lets automatic placement move `shard` again. Refused for an unknown shard.
    pub fn unpin(&mut self, now: Instant, shard: usize) -> Result<(), String> {
        let Some(s) = self.shards.get_mut(shard) else {
            return Err(format!(
                "no shard {shard}: the model has {}",
                self.shards.len()
            ));
        };
        if s.pinned.take().is_some() {
            self.emit(Event::ShardPinned { shard, node: None });
            self.rebalance(now);
        }
        Ok(())
    }

    /// Starts loading `shard` on `node` (the current node keeps serving until it is ready).
    fn start_move(&mut self, now: Instant, shard: usize, node: u64) -> Result<(), String> {
        let bytes = self.model.shards[shard].bytes;
        let Some(target) = self.nodes.get(&node) else {
            return Err(format!("no node {node}"));
        };
        let cap = placement::usable(&placement::NodeCapacity {
            id: node,
            memory_bytes: target.info.memory_bytes,
            gflops: target.speed.effective(),
        });
        let name = target.info.name.clone();
        let entry = &self.shards[shard];
        if entry.node == Some(node) {
            // Already there; a move elsewhere in progress is called off.
            self.shards[shard].moving_to = None;
            return Ok(());
        }
        if entry.moving_to.map(|m| m.node) == Some(node) {
            return Ok(());
        }
        let held: u64 = self
            .shards_of(node)
            .iter()
            .map(|&i| self.model.shards[i].bytes)
            .sum();
        if held + bytes > cap {
            return Err(format!(
                "node {node} ({name}) has room for {} MB more, shard {shard} needs {} MB",
                cap.saturating_sub(held) / 1_000_000,
                bytes / 1_000_000
            ));
        }
        let deadline = now + self.cfg.deadlines.load(bytes);
        let s = &mut self.shards[shard];
        if s.node.is_none() {
            s.node = Some(node);
            s.state = ShardState::Loading;
            s.progress = 0.0;
            s.deadline = Some(deadline);
        } else {
            s.moving_to = Some(Move {
                node,
                progress: 0.0,
                deadline,
            });
        }
        self.emit(Event::ShardPlaced { shard, node });
        self.send_load(shard, node);
        Ok(())
    }

    /// A node finished loading `shard`: it becomes (or stays) the shard's server.
    pub fn shard_ready(&mut self, now: Instant, node: u64, shard: usize) {
        let Some(s) = self.shards.get_mut(shard) else {
            return;
        };
        let mut unload = None;
        if s.moving_to.map(|m| m.node) == Some(node) {
            unload = s.node;
            s.node = Some(node);
            s.moving_to = None;
        } else if s.node != Some(node) {
            // Not ours (any more): tell the node to drop it.
            self.send(node, CoordinatorMessage::Unload { shard });
            return;
        }
        s.state = ShardState::Ready;
        s.progress = 1.0;
        s.deadline = None;
        self.epoch += 1;
        // New layers on this node: its trust was earned on others.
        self.audit_probation(node);
        if let Some(old) = unload {
            self.retired.push(Retired {
                node: old,
                shard,
                epoch: self.epoch,
            });
        }
        self.emit(Event::ShardReady { shard, node });
        self.unload_retired();
        self.out.push(Output::Changed);
        // Nodes that joined while shards were loading may now deserve some.
        self.rebalance(now);
    }

    /// Download/load progress of a shard on a node.
    pub fn shard_progress(&mut self, node: u64, shard: usize, fraction: f32) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let Some(s) = self.shards.get_mut(shard) else {
            return;
        };
        if s.node == Some(node) && s.state == ShardState::Loading {
            s.progress = fraction;
        } else if let Some(m) = s.moving_to.as_mut()
            && m.node == node
        {
            m.progress = fraction;
        } else {
            return;
        }
        self.emit(Event::ShardLoading {
            shard,
            node,
            fraction,
        });
    }

    /// A node could not load `shard`: a move is called off (the old node keeps serving), a
    /// first load leaves the shard unassigned (placed again when a node has room).
    pub fn shard_failed(&mut self, node: u64, shard: usize, error: String) {
        let Some(s) = self.shards.get_mut(shard) else {
            return;
        };
        let mut unpinned = false;
        if s.moving_to.map(|m| m.node) == Some(node) {
            s.moving_to = None;
            unpinned = s.pinned == Some(node);
        } else if s.node == Some(node) {
            unpinned = s.pinned.is_some();
            *s = ShardEntry::FREE;
        }
        if unpinned {
            self.shards[shard].pinned = None;
        }
        tracing::warn!(node, shard, "shard failed to load: {error}");
        self.emit(Event::ShardFailed { shard, node, error });
        if unpinned {
            self.emit(Event::ShardPinned { shard, node: None });
        }
        self.out.push(Output::Changed);
    }

    /// Tells nodes to free the shards they gave up in a move, once no running step still uses
    /// a route through them.
    pub(super) fn unload_retired(&mut self) {
        let oldest = self
            .steps
            .values()
            .map(|s| s.epoch())
            .min()
            .unwrap_or(u64::MAX);
        let (done, wait): (Vec<Retired>, Vec<Retired>) =
            self.retired.iter().partition(|r| oldest >= r.epoch);
        self.retired = wait;
        for r in done {
            let s = &self.shards[r.shard];
            if s.node != Some(r.node) && s.moving_to.map(|m| m.node) != Some(r.node) {
                self.send(r.node, CoordinatorMessage::Unload { shard: r.shard });
            }
        }
    }

    /// Checks the deadlines: steps not answered in time and loads not finished in time remove
    /// their node. Call it regularly (mod.rs does, every 100 ms).
    pub fn tick(&mut self, now: Instant) {
        self.tick_steps(now);
        let mut late: Vec<(u64, String)> = Vec::new();
        for (i, s) in self.shards.iter().enumerate() {
            if let (Some(n), Some(d)) = (s.node, s.deadline)
                && s.state == ShardState::Loading
                && now > d
            {
                late.push((n, format!("did not finish loading shard {i} in time")));
            }
            if let Some(m) = s.moving_to
                && now > m.deadline
            {
                late.push((m.node, format!("did not finish loading shard {i} in time")));
            }
        }
        for (node, why) in late {
            self.remove_node(now, node, &why);
        }
    }
}
