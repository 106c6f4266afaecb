//! Sessions as the core sees them: which nodes may hold their caches (so that a replay or the
//! end frees them everywhere), how far they got (for `/api/status`), and the limit on how
//! many run at once. What a session does next (chunks, sampling, replays) is the session
//! machine's business (session.rs).

use super::{Core, SessionEntry};
use crate::coordinator::events::Event;
use crate::coordinator::wire::CoordinatorMessage;

/// A session as `/api/status` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub id: u64,
    pub prompt_tokens: usize,
    pub generated: usize,
    /// Speculative draft tokens sent and kept so far.
    pub drafted: usize,
    pub accepted: usize,
}

impl Core {
    /// Opens a session for a prompt of `prompt_tokens`; `Err(running)` when
    /// `max_sessions` are running.
    pub fn open_session(&mut self, prompt_tokens: usize) -> Result<u64, usize> {
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(self.sessions.len());
        }
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            id,
            SessionEntry {
                prompt_tokens,
                generated: 0,
                drafted: 0,
                accepted: 0,
                touched: Default::default(),
            },
        );
        self.emit(Event::SessionOpened {
            session: id,
            prompt_tokens,
        });
        Ok(id)
    }

    /// A session sampled token `id` (its `generated`-th), which completed `text`.
    pub fn token_sampled(&mut self, session: u64, generated: usize, id: u32, text: &str) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.generated = generated;
        }
        self.emit(Event::TokenSampled {
            session,
            id,
            text: text.to_string(),
        });
    }

    /// A session's speculative drafts so far: `drafted` sent, `accepted` kept. Also counted
    /// in the coordinator's totals (`/api/status`).
    pub fn drafts_counted(&mut self, session: u64, drafted: usize, accepted: usize) {
        if let Some(s) = self.sessions.get_mut(&session) {
            self.drafted_total += drafted.saturating_sub(s.drafted) as u64;
            self.accepted_total += accepted.saturating_sub(s.accepted) as u64;
            s.drafted = drafted;
            s.accepted = accepted;
        }
    }

    /// Speculative draft tokens sent and kept over every session since the start.
    pub fn draft_totals(&self) -> (u64, u64) {
        (self.drafted_total, self.accepted_total)
    }

    /// Frees `session`'s caches on every node that may hold them, before it replays
    /// `tokens` on a new route. Returns whether any node held them (then a
    /// `SessionReplayed` event says so).
    pub fn reset_session(&mut self, session: u64, tokens: usize) -> bool {
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let touched = std::mem::take(&mut s.touched);
        if touched.is_empty() {
            return false;
        }
        for node in touched {
            self.send(node, CoordinatorMessage::Close { session });
        }
        self.emit(Event::SessionReplayed { session, tokens });
        true
    }

    /// Drops `session`'s cached tokens after the first `len` on every node that may hold them
    /// (rejected speculative drafts), so its next step runs at position `len` without a replay.
    pub fn truncate_session(&mut self, session: u64, len: usize) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        for node in s.touched.clone() {
            self.send(node, CoordinatorMessage::Truncate { session, len });
        }
    }

    /// Ends `session` however it ended (`reason`): its steps' replies will be dropped and its
    /// caches are freed on every node.
    pub fn end_session(&mut self, session: u64, reason: &str) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.abandon_steps(session);
        self.audit_session_ended(session);
        for node in s.touched {
            self.send(node, CoordinatorMessage::Close { session });
        }
        self.emit(Event::SessionClosed {
            session,
            reason: reason.to_string(),
        });
    }

    /// Sessions running now.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .map(|(id, s)| SessionInfo {
                id: *id,
                prompt_tokens: s.prompt_tokens,
                generated: s.generated,
                drafted: s.drafted,
                accepted: s.accepted,
            })
            .collect()
    }
}
