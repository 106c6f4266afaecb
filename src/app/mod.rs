//! The visual coordinator: a Bevy ECS app that shows every device, the shards it holds and
//! each frame travelling between them, and lets a person steer it (prompt, sampling, dragging
//! shards between devices).
//!
//! The world: [`devices::Device`] entities (one per node), [`shards::Shard`] entities related
//! to their device by [`shards::HeldBy`], [`packets::Packet`] entities on a device's link (one
//! per frame relayed, animated for its measured time and despawned on arrival) and
//! [`sessions::Session`] entities. All of it is built from the coordinator's real events,
//! which arrive through the [`bridge`]; nothing is invented. Simulation mode ([`simulate`]) adds
//! virtual devices, a predicted placement and predicted packets, all marked
//! [`simulate::Simulated`] and kept apart from the live ones.
//!
//! Everything except drawing works under `MinimalPlugins` ([`headless_plugin`]), which is how
//! the tests drive it; [`window::run`] adds the window, egui panels and screenshots.

pub mod bridge;
pub mod devices;
pub mod drag;
pub mod health;
pub mod layout;
pub mod packets;
pub mod sessions;
pub mod shards;
pub mod simulate;

mod join;
mod plots;
mod prompt;
mod screenshot;
mod simulate_panel;
mod view;
pub mod window;

use bevy::prelude::*;

use bridge::{CoreMessage, FromCore, ModelSummary};

/// The stages of a frame, in order. Named once here; every system of the app is in one of them
/// (the egui panels run afterwards, in bevy_egui's own pass).
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppStage {
    /// Drain the core's channel into [`FromCore`] messages.
    Ingest,
    /// Devices join and leave.
    Nodes,
    /// Shards are placed, load, move; drops are sent or refused.
    Placement,
    /// Frames, tokens and sessions; statistics.
    Traffic,
    /// Packets move along their links and vanish on arrival.
    Animate,
}

/// What the core told us when it came up: where devices join and what model it serves.
#[derive(Resource, Debug, Default, Clone)]
pub struct CoreInfo {
    pub addr: Option<std::net::SocketAddr>,
    pub token: String,
    pub host: String,
    pub model: Option<ModelSummary>,
}

/// Messages for the person at the screen (refused drops, failed loads, devices leaving).
#[derive(Resource, Debug, Default)]
pub struct Notices(pub Vec<Notice>);

#[derive(Debug, Clone)]
pub struct Notice {
    pub text: String,
    /// When it was posted, in app seconds.
    pub at: f64,
    pub warning: bool,
}

impl Notices {
    pub fn post(&mut self, at: f64, warning: bool, text: impl Into<String>) {
        self.0.push(Notice {
            text: text.into(),
            at,
            warning,
        });
        // Old ones scroll away.
        let n = self.0.len();
        if n > 50 {
            self.0.drain(..n - 50);
        }
    }
}

/// The simulation: every system except drawing. Runs under `MinimalPlugins`.
pub fn headless_plugin(app: &mut App) {
    app.configure_sets(
        Update,
        (
            AppStage::Ingest,
            AppStage::Nodes,
            AppStage::Placement,
            AppStage::Traffic,
            AppStage::Animate,
        )
            .chain(),
    )
    .init_resource::<CoreInfo>()
    .init_resource::<Notices>()
    .add_plugins((
        bridge::plugin,
        devices::plugin,
        shards::plugin,
        drag::plugin,
        packets::plugin,
        sessions::plugin,
        health::plugin,
        simulate::plugin,
    ))
    .add_systems(Update, record_ready.in_set(AppStage::Nodes));
}

fn record_ready(
    mut msgs: MessageReader<FromCore>,
    mut info: ResMut<CoreInfo>,
    time: Res<Time>,
    mut notices: ResMut<Notices>,
) {
    for FromCore(m) in msgs.read() {
        match m {
            CoreMessage::Ready {
                addr,
                token,
                host,
                model,
            } => {
                *info = CoreInfo {
                    addr: Some(*addr),
                    token: token.clone(),
                    host: host.clone(),
                    model: Some(model.clone()),
                };
            }
            CoreMessage::Failed(e) => {
                notices.post(time.elapsed_secs_f64(), true, format!("coordinator: {e}"))
            }
            _ => {}
        }
    }
}
