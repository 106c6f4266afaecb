//! Nodes caught returning impossible results (a reply that failed its checks, check.rs) are
//! refused when they come back for [`BAN_FOR`]: a tab or process that reconnects by itself would
//! otherwise be handed shards again at once. A ban is on the name the node asked for and the
//! address it connected from, so an honest device beside it (another name, or another address)
//! is not refused; `/api/status` lists the bans with their reasons.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Core;

/// How long a caught node is refused.
pub const BAN_FOR: Duration = Duration::from_secs(600);
/// Bans kept at most (the oldest goes first), so a flood of caught nodes cannot grow memory.
pub const MAX_BANS: usize = 256;

/// One refused node.
#[derive(Debug, Clone, PartialEq)]
pub struct Ban {
    pub name: String,
    pub address: Option<IpAddr>,
    pub reason: String,
    pub until: Instant,
}

impl Core {
    /// Bans node `id` (caught returning `reason`) before it is removed.
    pub(super) fn ban(&mut self, now: Instant, id: u64, reason: &str) {
        let Some(n) = self.nodes.get(&id) else {
            return;
        };
        let ban = Ban {
            name: n.asked_name.clone(),
            address: n.address,
            reason: reason.to_string(),
            until: now + BAN_FOR,
        };
        tracing::warn!(node = id, name = %ban.name, "banned for {:?}: {reason}", BAN_FOR);
        self.bans
            .retain(|b| b.until > now && !(b.name == ban.name && b.address == ban.address));
        if self.bans.len() >= MAX_BANS {
            self.bans.remove(0);
        }
        self.bans.push(ban);
    }

    /// Why a node asking to join as `name` from `address` is refused now, if it is.
    pub fn refusal(&self, now: Instant, name: &str, address: Option<IpAddr>) -> Option<String> {
        let name = super::clean(name, super::NAME_MAX);
        self.bans
            .iter()
            .find(|b| b.until > now && b.name == name && b.address == address)
            .map(|b| {
                format!(
                    "refused for {} more s: this node was caught returning a bad result ({})",
                    b.until.saturating_duration_since(now).as_secs().max(1),
                    b.reason
                )
            })
    }

    /// Refuses a node asking to join as `name` from `address` if it is banned: returns why, and
    /// tells the event stream (the app shows it).
    pub fn refuse(&mut self, now: Instant, name: &str, address: Option<IpAddr>) -> Option<String> {
        let why = self.refusal(now, name, address)?;
        self.emit(crate::coordinator::events::Event::NodeRefused {
            name: super::clean(name, super::NAME_MAX),
            reason: why.clone(),
        });
        Some(why)
    }

    /// The bans in force, for `/api/status`.
    pub(super) fn bans_json(&self, now: Instant) -> serde_json::Value {
        self.bans
            .iter()
            .filter(|b| b.until > now)
            .map(|b| {
                json!({
                    "name": b.name,
                    "address": b.address.map(|a| a.to_string()),
                    "reason": b.reason,
                    "seconds_left": b.until.saturating_duration_since(now).as_secs(),
                })
            })
            .collect()
    }
}
