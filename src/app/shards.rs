//! Shards: one entity per shard of the model, related to the device that serves it by
//! [`HeldBy`] (a Bevy relationship; the device's [`HeldShards`] lists them). A move shows as
//! [`MovingTo`] on the shard while the target loads and the source keeps serving; when the
//! target is ready the relationship switches to it.

use std::collections::HashMap;

use bevy::prelude::*;

use super::bridge::{CoreMessage, FromCore};
use super::devices::{Device, Health, Nodes};
use super::{AppStage, Notices};
use crate::coordinator::events::Event;

/// One shard: a consecutive range of layers, stored in one file.
#[derive(Component, Debug, Clone, PartialEq)]
pub struct Shard {
    pub index: usize,
    /// First and last layer, inclusive.
    pub layers: [usize; 2],
    pub bytes: u64,
    pub state: ShardStatus,
    /// Load progress of the holder, 0 to 1.
    pub progress: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStatus {
    Unassigned,
    Loading,
    Ready,
}

/// The device that serves (or is loading) this shard.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
#[relationship(relationship_target = HeldShards)]
pub struct HeldBy(pub Entity);

/// The shards a device serves or loads.
#[derive(Component, Debug, Default)]
#[relationship_target(relationship = HeldBy)]
pub struct HeldShards(Vec<Entity>);

impl HeldShards {
    pub fn shards(&self) -> &[Entity] {
        &self.0
    }
}

/// A move in progress: `device` loads the shard while the holder keeps serving it.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct MovingTo {
    pub device: Entity,
    pub progress: f32,
}

/// The person pinned this shard to its device: automatic rebalancing leaves it there until it
/// is moved again, unpinned, or the device leaves. The view marks it and offers to unpin.
/// The coordinator's `ShardPinned` event sets and clears it ([`apply_pins`]).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned;

/// Shard index to entity, in order.
#[derive(Resource, Debug, Default)]
pub struct Shards(pub Vec<Entity>);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<Shards>()
        .add_systems(Update, spawn_shards.in_set(AppStage::Nodes))
        .add_systems(
            Update,
            (apply_placement, apply_pins).in_set(AppStage::Placement),
        );
}

/// Marks shards the person pinned (a move they asked for) and clears the mark when the
/// coordinator lifts the pin (unpinned, moved by failover after the device left).
fn apply_pins(mut commands: Commands, mut msgs: MessageReader<FromCore>, index: Res<Shards>) {
    for FromCore(m) in msgs.read() {
        let CoreMessage::Event(Event::ShardPinned { shard, node }) = m else {
            continue;
        };
        let Some(&entity) = index.0.get(*shard) else {
            warn!("pin event for unknown shard {shard}");
            continue;
        };
        match node {
            Some(_) => commands.entity(entity).insert(Pinned),
            None => commands.entity(entity).remove::<Pinned>(),
        };
    }
}

/// Spawns the model's shards when the core reports it (once; they live as long as the app).
fn spawn_shards(
    mut commands: Commands,
    mut msgs: MessageReader<FromCore>,
    mut index: ResMut<Shards>,
) {
    for FromCore(m) in msgs.read() {
        let CoreMessage::Ready { model, .. } = m else {
            continue;
        };
        if !index.0.is_empty() {
            continue;
        }
        for (i, &(first, last, bytes)) in model.shards.iter().enumerate() {
            let id = commands
                .spawn((
                    Name::new(format!("shard {i}")),
                    Shard {
                        index: i,
                        layers: [first, last],
                        bytes,
                        state: ShardStatus::Unassigned,
                        progress: 0.0,
                    },
                ))
                .id();
            index.0.push(id);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_placement(
    mut commands: Commands,
    mut msgs: MessageReader<FromCore>,
    index: Res<Shards>,
    nodes: Res<Nodes>,
    mut shards: Query<(&mut Shard, Option<&HeldBy>, Option<&MovingTo>)>,
    mut devices: Query<&mut Device>,
    mut notices: ResMut<Notices>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    let mut overlay: HashMap<Entity, (Option<Entity>, Option<MovingTo>)> = HashMap::new();
    for FromCore(m) in msgs.read() {
        let e = match m {
            CoreMessage::Event(e) => e,
            _ => continue,
        };
        let (shard, node) = match e {
            Event::ShardPlaced { shard, node }
            | Event::ShardLoading { shard, node, .. }
            | Event::ShardReady { shard, node }
            | Event::ShardFailed { shard, node, .. } => (*shard, Some(*node)),
            Event::ShardUnassigned { shard } => (*shard, None),
            _ => continue,
        };
        let Some(&entity) = index.0.get(shard) else {
            warn!("event for unknown shard {shard}");
            continue;
        };
        let device = node.and_then(|n| nodes.0.get(&n).copied());
        if node.is_some() && device.is_none() {
            // The node left in the meantime; its own event handles the rest.
            continue;
        }
        let Ok((mut s, held, moving)) = shards.get_mut(entity) else {
            continue;
        };
        // Commands are deferred to the end of the system, so changes made by earlier events of
        // this frame are read from `overlay`, not from the (stale) components.
        let (holder, mut moving) = *overlay
            .entry(entity)
            .or_insert((held.map(|h| h.0), moving.copied()));
        let mut new_holder = holder;
        match e {
            Event::ShardPlaced { .. } => {
                let d = device.expect("checked above");
                if holder.is_some() && holder != Some(d) && s.state == ShardStatus::Ready {
                    moving = Some(MovingTo {
                        device: d,
                        progress: 0.0,
                    });
                } else {
                    new_holder = Some(d);
                    moving = None;
                    s.state = ShardStatus::Loading;
                    s.progress = 0.0;
                }
            }
            Event::ShardLoading { fraction, .. } => {
                let d = device.expect("checked above");
                match moving.as_mut() {
                    Some(mv) if mv.device == d => mv.progress = *fraction,
                    _ if holder == Some(d) => s.progress = *fraction,
                    _ => {}
                }
            }
            Event::ShardReady { .. } => {
                let d = device.expect("checked above");
                new_holder = Some(d);
                moving = None;
                s.state = ShardStatus::Ready;
                s.progress = 1.0;
                if let Ok(mut dev) = devices.get_mut(d) {
                    dev.health = Health::Ok;
                }
            }
            Event::ShardUnassigned { .. } => {
                new_holder = None;
                moving = None;
                s.state = ShardStatus::Unassigned;
                s.progress = 0.0;
            }
            Event::ShardFailed { error, .. } => {
                let d = device.expect("checked above");
                if moving.is_some_and(|mv| mv.device == d) {
                    moving = None;
                } else if holder == Some(d) {
                    new_holder = None;
                    s.state = ShardStatus::Unassigned;
                    s.progress = 0.0;
                }
                if let Ok(mut dev) = devices.get_mut(d) {
                    notices.post(
                        now,
                        true,
                        format!("{} could not load shard {shard}: {error}", dev.name),
                    );
                    dev.health = Health::Failed(error.clone());
                }
            }
            _ => {}
        }
        overlay.insert(entity, (new_holder, moving));
        let mut ec = commands.entity(entity);
        match new_holder {
            Some(d) if new_holder != holder => {
                ec.insert(HeldBy(d));
            }
            None if holder.is_some() => {
                ec.remove::<HeldBy>();
            }
            _ => {}
        }
        match moving {
            Some(mv) => {
                ec.insert(mv);
            }
            None => {
                ec.remove::<MovingTo>();
            }
        }
    }
}
