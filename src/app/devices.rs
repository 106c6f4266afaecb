//! Devices: one entity per node (browser, native, local) with what it reported on joining and
//! what the coordinator measured since (tokens processed, time per hop, link traffic).
//! Spawned on `NodeJoined`, despawned on `NodeLeft` (its packets go with it).

use std::collections::HashMap;

use bevy::prelude::*;

use super::bridge::{CoreMessage, FromCore};
use super::{AppStage, Notices};
use crate::coordinator::events::Event;
use crate::coordinator::wire::NodeKind;

/// One node.
#[derive(Component, Debug, Clone)]
pub struct Device {
    pub node: u64,
    pub name: String,
    pub kind: NodeKind,
    pub adapter: String,
    /// Memory it offers for weights and caches.
    pub memory_bytes: u64,
    /// GFLOP/s it measured when joining.
    pub gflops: f64,
    pub tokens_processed: u64,
    pub health: Health,
}

/// Whether a device is doing its job.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Joined, nothing wrong seen.
    Ok,
    /// It failed to load a shard (cleared when one becomes ready there).
    Failed(String),
}

/// The link between the coordinator and a device, as measured from the frames relayed on it.
#[derive(Component, Debug, Clone, Default)]
pub struct Link {
    pub frames: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Round trip of the last hop (send, compute, reply), in milliseconds.
    pub last_ms: f64,
    /// Tokens per second through this device, smoothed over recent hops.
    pub tokens_per_second: f64,
    /// Activation bytes as f32 divided by bytes on the wire, for the last activation sent.
    pub compression: Option<f64>,
}

/// Node id to device entity.
#[derive(Resource, Debug, Default)]
pub struct Nodes(pub HashMap<u64, Entity>);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<Nodes>()
        .add_systems(Update, join_and_leave.in_set(AppStage::Nodes));
}

fn join_and_leave(
    mut commands: Commands,
    mut msgs: MessageReader<FromCore>,
    mut nodes: ResMut<Nodes>,
    mut notices: ResMut<Notices>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    for FromCore(m) in msgs.read() {
        let CoreMessage::Event(e) = m else { continue };
        match e {
            Event::NodeJoined {
                node,
                name,
                kind,
                adapter,
                memory_bytes,
                gflops,
            } => {
                let device = Device {
                    node: *node,
                    name: name.clone(),
                    kind: *kind,
                    adapter: adapter.clone(),
                    memory_bytes: *memory_bytes,
                    gflops: *gflops,
                    tokens_processed: 0,
                    health: Health::Ok,
                };
                let id = commands
                    .spawn((Name::new(format!("device {name}")), device, Link::default()))
                    .id();
                if let Some(old) = nodes.0.insert(*node, id) {
                    commands.entity(old).despawn();
                }
                notices.post(now, false, format!("{name} joined ({adapter})"));
            }
            Event::NodeLeft { node, reason } => {
                if let Some(id) = nodes.0.remove(node) {
                    commands.entity(id).despawn();
                    notices.post(now, true, format!("node {node} left: {reason}"));
                }
            }
            Event::NodeRefused { name, reason } => {
                notices.post(now, true, format!("{name} was not let in: {reason}"));
            }
            _ => {}
        }
    }
}
