//! Packets: one entity per frame relayed between the coordinator and a device, spawned from
//! `FrameRelayed` events and related to the device's link by [`OnLink`]. Each hop gives two:
//! the frame sent (token ids or an activation) and the one returned (an activation or top
//! logits). They travel one after the other within the hop's measured round trip, and are
//! despawned on arrival. No frame, no packet.

use bevy::prelude::*;

use super::AppStage;
use super::CoreInfo;
use super::bridge::{CoreMessage, FromCore};
use super::devices::{Device, Link, Nodes};
use crate::coordinator::events::Event;

/// Shortest time a packet is on screen, in seconds, so that a fast local hop stays visible.
pub const MIN_TRAVEL_S: f64 = 0.15;
/// Longest time a packet is on screen: a slow hop is sped up rather than piling up.
pub const MAX_TRAVEL_S: f64 = 3.0;
/// Most packets alive at once; the oldest arrive early beyond that.
pub const MAX_PACKETS: usize = 512;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Tokens,
    Activation,
    TopLogits,
}

impl PacketKind {
    fn from_event(kind: &str) -> PacketKind {
        match kind {
            "tokens" => PacketKind::Tokens,
            "top_logits" => PacketKind::TopLogits,
            _ => PacketKind::Activation,
        }
    }
}

/// Which way a packet goes on its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Coordinator to device.
    Out,
    /// Device back to the coordinator.
    Back,
}

/// A frame in flight.
#[derive(Component, Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketKind,
    pub bytes: usize,
    pub direction: Direction,
    /// App time it leaves, and how long it travels, in seconds.
    pub start: f64,
    pub duration: f64,
    /// 0 at the start of the link, 1 at its end; negative while waiting to leave.
    pub progress: f32,
}

/// The link (device) a packet travels on.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
#[relationship(relationship_target = LinkPackets)]
pub struct OnLink(pub Entity);

/// The packets on a device's link; they go when the device goes.
#[derive(Component, Debug, Default)]
#[relationship_target(relationship = OnLink, linked_spawn)]
pub struct LinkPackets(Vec<Entity>);

pub(super) fn plugin(app: &mut App) {
    app.add_systems(Update, spawn_packets.in_set(AppStage::Traffic))
        .add_systems(Update, move_packets.in_set(AppStage::Animate));
}

/// How long each half of a hop is shown: half the measured round trip, kept visible.
pub fn travel_seconds(micros: u64) -> f64 {
    (micros as f64 / 2e6).clamp(MIN_TRAVEL_S, MAX_TRAVEL_S)
}

fn spawn_packets(
    mut commands: Commands,
    mut msgs: MessageReader<FromCore>,
    nodes: Res<Nodes>,
    info: Res<CoreInfo>,
    mut devices: Query<(&mut Device, &mut Link)>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    for FromCore(m) in msgs.read() {
        let CoreMessage::Event(Event::FrameRelayed {
            node,
            sent_kind,
            sent_bytes,
            received_kind,
            received_bytes,
            tokens,
            micros,
            ..
        }) = m
        else {
            continue;
        };
        let Some(&device) = nodes.0.get(node) else {
            continue;
        };
        if let Ok((mut d, mut link)) = devices.get_mut(device) {
            d.tokens_processed += *tokens as u64;
            link.frames += 1;
            link.bytes_sent += *sent_bytes as u64;
            link.bytes_received += *received_bytes as u64;
            link.last_ms = *micros as f64 / 1000.0;
            let tps = *tokens as f64 * 1e6 / (*micros).max(1) as f64;
            link.tokens_per_second = if link.frames == 1 {
                tps
            } else {
                0.8 * link.tokens_per_second + 0.2 * tps
            };
            if *sent_kind == "activation"
                && *sent_bytes > 0
                && let Some(h) = info.model.as_ref().map(|m| m.hidden_size)
            {
                link.compression = Some((*tokens * h * 4) as f64 / *sent_bytes as f64);
            }
        }
        let half = travel_seconds(*micros);
        for (i, (kind, bytes, direction)) in [
            (sent_kind, sent_bytes, Direction::Out),
            (received_kind, received_bytes, Direction::Back),
        ]
        .into_iter()
        .enumerate()
        {
            commands.spawn((
                Packet {
                    kind: PacketKind::from_event(kind),
                    bytes: *bytes,
                    direction,
                    start: now + half * i as f64,
                    duration: half,
                    progress: if i == 0 { 0.0 } else { -1.0 },
                },
                OnLink(device),
            ));
        }
    }
}

fn move_packets(
    mut commands: Commands,
    mut packets: Query<(Entity, &mut Packet)>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    let alive = packets.iter().count();
    let mut excess = alive.saturating_sub(MAX_PACKETS);
    for (e, mut p) in &mut packets {
        let t = ((now - p.start) / p.duration) as f32;
        if t >= 1.0 || excess > 0 {
            excess = excess.saturating_sub(1);
            commands.entity(e).despawn();
        } else {
            p.progress = if t < 0.0 { -1.0 } else { t };
        }
    }
}
