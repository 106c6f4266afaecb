//! The coordinator bridge: the only door between the ECS and the coordinator core.
//!
//! The core (coordinator, HTTP/WebSocket server, local nodes) runs on its own thread and tokio
//! runtime. It talks to the ECS through two crossbeam channels held in the [`Bridge`] resource:
//! [`CoreMessage`]s flow in (coordinator events, generation output, the join address) and
//! [`CoreCommand`]s flow out (generate, cancel, move a shard, shut down). The ingest system
//! drains at most [`MAX_MESSAGES_PER_FRAME`] messages a frame with `try_recv`, so a frame never
//! waits; a closed channel becomes a [`CoreStopped`] state, not a panic.

use std::collections::HashMap;
use std::net::SocketAddr;

use bevy::prelude::*;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio::sync::mpsc;

use super::AppStage;
use crate::coordinator::Coordinator;
use crate::coordinator::events::Event;
use crate::coordinator::session::{GenerateEvent, GenerateRequest};

/// Most core messages handled in one frame; the rest wait for the next frame.
pub const MAX_MESSAGES_PER_FRAME: usize = 4096;

/// What the model looks like, sent once when the core is up.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub name: String,
    pub hidden_size: usize,
    /// Per shard: first and last layer (inclusive) and size in bytes.
    pub shards: Vec<(usize, usize, u64)>,
    /// Its shapes, for the simulator (`None` when the manifest's weight type is unknown to it).
    pub shape: Option<crate::sim::ModelShape>,
}

/// Everything the core tells the ECS.
#[derive(Debug, Clone, PartialEq)]
pub enum CoreMessage {
    /// The server listens: the join addresses, and the model it serves.
    Ready {
        addr: SocketAddr,
        token: String,
        /// The host name or IP that other devices should use (the LAN address when listening on
        /// all interfaces).
        host: String,
        model: ModelSummary,
    },
    /// One coordinator event.
    Event(Event),
    /// Output of a generation the app started (`request` is the app's id for it).
    Generation { request: u64, event: GenerateEvent },
    /// The core could not start or stopped with an error.
    Failed(String),
}

/// Everything the ECS asks of the core.
#[derive(Debug, Clone)]
pub enum CoreCommand {
    Generate {
        request: u64,
        req: GenerateRequest,
    },
    /// Stops a generation (its session is closed and its caches freed).
    Cancel {
        request: u64,
    },
    MoveShard {
        shard: usize,
        node: u64,
    },
    /// Lets automatic placement move the shard again (the person's pin is lifted).
    UnpinShard {
        shard: usize,
    },
    Shutdown,
}

/// The ECS's ends of the two channels.
#[derive(Resource)]
pub struct Bridge {
    pub from_core: Receiver<CoreMessage>,
    pub to_core: Sender<CoreCommand>,
}

impl Bridge {
    /// Sends a command; false when the core is gone.
    pub fn send(&self, cmd: CoreCommand) -> bool {
        self.to_core.send(cmd).is_ok()
    }
}

/// Set once the core's channel closed: nothing more will arrive, commands go nowhere.
#[derive(Resource, Debug, Default)]
pub struct CoreStopped(pub Option<String>);

/// A core message, re-published inside the ECS for the systems of each area.
#[derive(Message, Debug, Clone)]
pub struct FromCore(pub CoreMessage);

pub(super) fn plugin(app: &mut App) {
    app.add_message::<FromCore>()
        .init_resource::<CoreStopped>()
        .add_systems(Update, ingest.in_set(AppStage::Ingest));
}

/// Drains the core's channel without blocking.
fn ingest(
    bridge: Option<Res<Bridge>>,
    mut stopped: ResMut<CoreStopped>,
    mut out: MessageWriter<FromCore>,
) {
    let Some(bridge) = bridge else { return };
    for _ in 0..MAX_MESSAGES_PER_FRAME {
        match bridge.from_core.try_recv() {
            Ok(CoreMessage::Failed(e)) => {
                stopped.0 = Some(e.clone());
                out.write(FromCore(CoreMessage::Failed(e)));
            }
            Ok(m) => {
                out.write(FromCore(m));
            }
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                if stopped.0.is_none() {
                    stopped.0 = Some("the coordinator stopped".into());
                }
                break;
            }
        }
    }
}

/// Runs inside the core's tokio runtime until a `Shutdown` command (or the ECS side goes away):
/// forwards coordinator `events` (subscribe before nodes can join, to miss none) and
/// generation output to the ECS, and carries out its commands.
pub async fn pump(
    coord: Coordinator,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    to_app: Sender<CoreMessage>,
    commands: Receiver<CoreCommand>,
) {
    // Crossbeam receives block, so a plain thread waits on them and hands them to tokio.
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("synapse-app-commands".into())
        .spawn(move || {
            for c in commands.iter() {
                let last = matches!(c, CoreCommand::Shutdown);
                if cmd_tx.send(c).is_err() || last {
                    break;
                }
            }
            let _ = cmd_tx.send(CoreCommand::Shutdown);
        })
        .expect("spawning a thread");
    let mut running: HashMap<u64, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) => {
                    if to_app.send(CoreMessage::Event(e)).is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("the app fell {n} coordinator events behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            c = cmd_rx.recv() => match c {
                None | Some(CoreCommand::Shutdown) => break,
                Some(CoreCommand::Generate { request, req }) => {
                    running.retain(|_, h| !h.is_finished());
                    let (tx, mut rx) = mpsc::channel(64);
                    let c = coord.clone();
                    tokio::spawn(async move { c.generate(req, tx).await });
                    let to_app = to_app.clone();
                    let h = tokio::spawn(async move {
                        while let Some(event) = rx.recv().await {
                            if to_app.send(CoreMessage::Generation { request, event }).is_err() {
                                break;
                            }
                        }
                    });
                    running.insert(request, h);
                }
                Some(CoreCommand::Cancel { request }) => {
                    // Dropping the receiver makes the session see its client gone and close.
                    if let Some(h) = running.remove(&request) {
                        h.abort();
                    }
                    let _ = to_app.send(CoreMessage::Generation {
                        request,
                        event: GenerateEvent::Error { message: "stopped".into() },
                    });
                }
                Some(CoreCommand::UnpinShard { shard }) => {
                    // Unpinning an unknown or unpinned shard changes nothing; say why in the log.
                    if let Err(reason) = coord.unpin_shard(shard) {
                        tracing::info!(shard, "unpin refused: {reason}");
                    }
                }
                Some(CoreCommand::MoveShard { shard, node }) => {
                    // Refusals the coordinator can name arrive as `MoveRefused` events; a shard
                    // index it does not know is refused here with the same event.
                    if let Err(reason) = coord.move_shard(shard, node)
                        && shard >= coord.manifest().shards.len()
                    {
                        let _ = to_app.send(CoreMessage::Event(Event::MoveRefused {
                            shard,
                            node,
                            reason,
                        }));
                    }
                }
            },
        }
    }
    for (_, h) in running {
        h.abort();
    }
}

/// The model summary the app needs from the coordinator's manifest.
pub fn model_summary(coord: &Coordinator) -> ModelSummary {
    let m = coord.manifest();
    ModelSummary {
        name: m.source.name.clone(),
        hidden_size: m.config.hidden_size,
        shards: m
            .shards
            .iter()
            .map(|s| (s.layers[0], s.layers[1], s.bytes))
            .collect(),
        shape: crate::sim::ModelShape::from_manifest(m).ok(),
    }
}
