//! Sessions: one entity per generation in progress (from any client: this app, the HTTP API,
//! another tool), with its tokens so far. Closed sessions are despawned.

use std::collections::HashMap;

use bevy::prelude::*;

use super::AppStage;
use super::bridge::{CoreMessage, FromCore};
use crate::coordinator::events::Event;

/// A generation in progress.
#[derive(Component, Debug, Clone, PartialEq)]
pub struct Session {
    pub id: u64,
    pub prompt_tokens: usize,
    pub generated: usize,
    pub text: String,
    /// Times its caches were rebuilt by replaying (failover or a shard move).
    pub replays: usize,
    /// App time it opened, in seconds.
    pub opened: f64,
}

/// Session id to entity.
#[derive(Resource, Debug, Default)]
pub struct Sessions(pub HashMap<u64, Entity>);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<Sessions>()
        .add_systems(Update, track_sessions.in_set(AppStage::Traffic));
}

fn track_sessions(
    mut commands: Commands,
    mut msgs: MessageReader<FromCore>,
    mut index: ResMut<Sessions>,
    mut sessions: Query<&mut Session>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    // Sessions opened this frame are not in the query yet: keep them here until spawned.
    let mut fresh: HashMap<u64, Session> = HashMap::new();
    for FromCore(m) in msgs.read() {
        let CoreMessage::Event(e) = m else { continue };
        match e {
            Event::SessionOpened {
                session,
                prompt_tokens,
            } => {
                fresh.insert(
                    *session,
                    Session {
                        id: *session,
                        prompt_tokens: *prompt_tokens,
                        generated: 0,
                        text: String::new(),
                        replays: 0,
                        opened: now,
                    },
                );
            }
            Event::TokenSampled { session, text, .. } => {
                with_session(*session, &mut fresh, &index, &mut sessions, |s| {
                    s.generated += 1;
                    s.text.push_str(text);
                });
            }
            Event::SessionReplayed { session, .. } => {
                with_session(*session, &mut fresh, &index, &mut sessions, |s| {
                    s.replays += 1
                });
            }
            Event::SessionClosed { session, .. } => {
                fresh.remove(session);
                if let Some(e) = index.0.remove(session) {
                    commands.entity(e).despawn();
                }
            }
            _ => {}
        }
    }
    for (id, s) in fresh {
        let e = commands.spawn((Name::new(format!("session {id}")), s)).id();
        index.0.insert(id, e);
    }
}

fn with_session(
    id: u64,
    fresh: &mut HashMap<u64, Session>,
    index: &Sessions,
    sessions: &mut Query<&mut Session>,
    f: impl FnOnce(&mut Session),
) {
    if let Some(s) = fresh.get_mut(&id) {
        f(s);
    } else if let Some(mut s) = index.0.get(&id).and_then(|&e| sessions.get_mut(e).ok()) {
        f(&mut s);
    }
}
