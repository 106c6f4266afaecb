//! Dropping a shard on a device: the drop becomes a `MoveShard` command to the coordinator and a
//! [`PendingDrop`] on the shard until the coordinator answers (`ShardPlaced` to that device, or
//! `MoveRefused`). A refused drop leaves the shard where it was and says why; the view shows
//! it snapping back ([`Refused`]). A drop that involves a simulated device or shard is refused
//! here, before anything reaches the coordinator: simulated devices never receive real work.
//! A move the person asked for pins the shard; the view's unpin button becomes `UnpinShard`.

use bevy::prelude::*;

use super::bridge::{Bridge, CoreCommand, CoreMessage, FromCore};
use super::devices::Device;
use super::shards::{HeldBy, Shard, Shards};
use super::simulate::Simulated;
use super::{AppStage, Notices};
use crate::coordinator::events::Event;

/// The person dropped `shard` on `device` (written by the view, or by tests).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropShard {
    pub shard: Entity,
    pub device: Entity,
}

/// The person asked to unpin `shard` (the view's pin button, or tests).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpinShard {
    pub shard: Entity,
}

/// A drop sent to the coordinator and not yet answered.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingDrop {
    pub device: Entity,
}

/// The last drop of this shard was refused: when (app seconds) and why. The view animates the
/// shard back to its holder for a moment.
#[derive(Component, Debug, Clone, PartialEq)]
pub struct Refused {
    pub at: f64,
    pub reason: String,
}

pub(super) fn plugin(app: &mut App) {
    app.add_message::<DropShard>()
        .add_message::<UnpinShard>()
        .add_systems(
            Update,
            (send_drops, answer_drops, send_unpins)
                .chain()
                .in_set(AppStage::Placement),
        );
}

fn send_drops(
    mut commands: Commands,
    mut drops: MessageReader<DropShard>,
    bridge: Option<Res<Bridge>>,
    shards: Query<(&Shard, Option<&HeldBy>, Has<Simulated>)>,
    devices: Query<(&Device, Has<Simulated>)>,
    mut notices: ResMut<Notices>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    for d in drops.read() {
        let Ok((shard, held, sim_shard)) = shards.get(d.shard) else {
            continue;
        };
        let refuse = |commands: &mut Commands, notices: &mut Notices, reason: String| {
            notices.post(
                now,
                true,
                format!("shard {} not moved: {reason}", shard.index),
            );
            commands
                .entity(d.shard)
                .remove::<PendingDrop>()
                .insert(Refused { at: now, reason });
        };
        let Ok((device, sim_device)) = devices.get(d.device) else {
            refuse(&mut commands, &mut notices, "that device is gone".into());
            continue;
        };
        if sim_device {
            let why = format!("{} is simulated: it never receives real work", device.name);
            refuse(&mut commands, &mut notices, why);
            continue;
        }
        if sim_shard {
            let why = "a simulated shard goes where the coordinator's placement puts it; add or \
                       remove devices to change it"
                .to_string();
            refuse(&mut commands, &mut notices, why);
            continue;
        }
        if held.map(|h| h.0) == Some(d.device) {
            continue;
        }
        let sent = bridge.as_ref().is_some_and(|b| {
            b.send(CoreCommand::MoveShard {
                shard: shard.index,
                node: device.node,
            })
        });
        if sent {
            commands
                .entity(d.shard)
                .insert(PendingDrop { device: d.device })
                .remove::<Refused>();
        } else {
            refuse(
                &mut commands,
                &mut notices,
                "the coordinator is not running".into(),
            );
        }
    }
}

fn answer_drops(
    mut commands: Commands,
    mut msgs: MessageReader<FromCore>,
    index: Res<Shards>,
    mut notices: ResMut<Notices>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    for FromCore(m) in msgs.read() {
        let CoreMessage::Event(e) = m else { continue };
        match e {
            Event::ShardPlaced { shard, .. } => {
                if let Some(&s) = index.0.get(*shard) {
                    commands.entity(s).remove::<(PendingDrop, Refused)>();
                }
            }
            Event::MoveRefused {
                shard,
                node,
                reason,
            } => {
                notices.post(
                    now,
                    true,
                    format!("shard {shard} not moved to node {node}: {reason}"),
                );
                if let Some(&s) = index.0.get(*shard) {
                    commands.entity(s).remove::<PendingDrop>().insert(Refused {
                        at: now,
                        reason: reason.clone(),
                    });
                }
            }
            _ => {}
        }
    }
}

/// The view's unpin button: the coordinator lifts the pin and answers with `ShardPinned`
/// (node `None`), which clears the mark; nothing changes here until it does.
fn send_unpins(
    mut unpins: MessageReader<UnpinShard>,
    shards: Query<&Shard>,
    bridge: Option<Res<Bridge>>,
    mut notices: ResMut<Notices>,
    time: Res<Time>,
) {
    for u in unpins.read() {
        let Ok(shard) = shards.get(u.shard) else {
            continue;
        };
        let sent = bridge
            .as_ref()
            .is_some_and(|b| b.send(CoreCommand::UnpinShard { shard: shard.index }));
        if !sent {
            notices.post(
                time.elapsed_secs_f64(),
                true,
                "the coordinator is not running",
            );
        }
    }
}
