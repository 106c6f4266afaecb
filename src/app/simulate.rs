//! Simulation mode: virtual devices from profiles beside the real ones ("what if I add 5 phones
//! to my 2 laptops?"), the placement the coordinator's own code would pick for all of them, and
//! the predicted pipeline running through the same entities as a live one: virtual devices are
//! [`Device`]s, the simulated placement is [`Shard`] entities [`HeldBy`] their device, and each
//! predicted hop is a pair of [`Packet`]s on the device's link that travel for the predicted
//! time. Everything simulated carries [`Simulated`]; the live systems and the view keep the two
//! worlds apart, and a simulated device never receives real work (drops on it are refused
//! before anything reaches the coordinator).
//!
//! Virtual entities exist only while the mode is on; the device mix is kept in [`SimState`]
//! and comes back when it is turned on again. Predictions come from `crate::sim`, recomputed
//! whenever a device joins or leaves, the mix changes or the model does.

use bevy::prelude::*;

use super::bridge::{CoreMessage, FromCore};
use super::devices::{Device, Health, Link};
use super::packets::{Direction, OnLink, Packet, PacketKind, travel_seconds};
use super::shards::{HeldBy, Shard, ShardStatus};
use super::{AppStage, CoreInfo, Notices};
use crate::coordinator::wire::NodeKind;
use crate::sim::predict::{Report, SimDevice, SimOptions, VIRTUAL_ID_BASE, best_split};
use crate::sim::profile::{DeviceProfile, Runtime};
use crate::sim::scenario::ShardCount;
use crate::sim::{ModelShape, ShardShape, WeightType, simulate};

/// On every simulated entity: virtual devices, the simulated placement's shards, predicted
/// packets.
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Simulated;

/// A virtual device's profile.
#[derive(Component, Debug, Clone, PartialEq)]
pub struct VirtualDevice {
    pub profile: DeviceProfile,
}

/// Which model the simulation runs.
#[derive(Debug, Clone, PartialEq)]
pub enum SimModel {
    /// The model the coordinator serves, in its shards as split.
    Served,
    /// A preset shape (`crate::sim::model::PRESETS`), cut as `shards` says.
    Shape {
        name: String,
        weights: WeightType,
        shards: ShardCount,
    },
}

/// Asks the simulation to change (written by the panel, `--simulate` and tests).
#[derive(Message, Debug, Clone, PartialEq)]
pub enum SimCommand {
    /// Turn simulation mode on or off.
    Enable(bool),
    /// Add `count` virtual devices of a profile (a built-in name, or a full profile).
    Add {
        profile: DeviceProfile,
        count: usize,
    },
    /// Remove up to `count` virtual devices of the profile named `profile`.
    Remove {
        profile: String,
        count: usize,
    },
    /// Remove every virtual device.
    Clear,
    Model(SimModel),
    /// Prompt length, tokens generated, generations at once.
    Options(SimOptions),
}

/// The simulation's state: the mix, the model, the last prediction.
#[derive(Resource, Debug)]
pub struct SimState {
    pub enabled: bool,
    /// The virtual devices, in the order they were added.
    pub mix: Vec<DeviceProfile>,
    pub model: SimModel,
    pub opts: SimOptions,
    /// The last prediction (`None` until the model is known).
    pub report: Option<Report>,
    /// Why there is no prediction, or what went wrong computing it.
    pub status: String,
    dirty: bool,
    clock: Clock,
}

impl Default for SimState {
    fn default() -> Self {
        SimState {
            enabled: false,
            mix: Vec::new(),
            model: SimModel::Served,
            opts: SimOptions::default(),
            report: None,
            status: "turn simulation on to see a prediction".into(),
            dirty: true,
            clock: Clock::default(),
        }
    }
}

/// Where the animated pipeline is: which hop of which token, and when its packet arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Clock {
    hop: usize,
    /// App time the current hop's reply arrives (the next hop leaves then).
    next_at: f64,
    tokens: u64,
}

pub(super) fn plugin(app: &mut App) {
    app.add_message::<SimCommand>()
        .init_resource::<SimState>()
        .add_systems(
            Update,
            (apply_commands, sync_devices)
                .chain()
                .in_set(AppStage::Nodes),
        )
        .add_systems(
            Update,
            (notice_changes, recompute)
                .chain()
                .in_set(AppStage::Placement),
        )
        .add_systems(Update, drive.in_set(AppStage::Traffic));
}

fn apply_commands(mut cmds: MessageReader<SimCommand>, mut state: ResMut<SimState>) {
    for c in cmds.read() {
        match c {
            SimCommand::Enable(on) => state.enabled = *on,
            SimCommand::Add { profile, count } => {
                let room = crate::sim::scenario::MAX_DEVICES.saturating_sub(state.mix.len());
                let n = (*count).min(room);
                state.mix.extend(std::iter::repeat_n(profile.clone(), n));
            }
            SimCommand::Remove { profile, count } => {
                for _ in 0..*count {
                    if let Some(i) = state.mix.iter().rposition(|p| p.name == *profile) {
                        state.mix.remove(i);
                    }
                }
            }
            SimCommand::Clear => state.mix.clear(),
            SimCommand::Model(m) => state.model = m.clone(),
            SimCommand::Options(o) => {
                state.opts = SimOptions {
                    prompt_tokens: o.prompt_tokens.max(1),
                    gen_tokens: o.gen_tokens.max(1),
                    sessions: o.sessions.max(1),
                    ..o.clone()
                }
            }
        }
        state.dirty = true;
    }
}

/// Makes the virtual device entities match the mix (none while the mode is off).
fn sync_devices(
    mut commands: Commands,
    state: Res<SimState>,
    virtuals: Query<(Entity, &Device), With<Simulated>>,
) {
    if !state.is_changed() {
        return;
    }
    let want: Vec<(u64, &DeviceProfile)> = if state.enabled {
        state
            .mix
            .iter()
            .enumerate()
            .map(|(i, p)| (VIRTUAL_ID_BASE + i as u64, p))
            .collect()
    } else {
        Vec::new()
    };
    let mut have: Vec<(Entity, u64, String)> = virtuals
        .iter()
        .map(|(e, d)| (e, d.node, d.adapter.clone()))
        .collect();
    // Keep an entity whose id and profile still match; respawn the rest.
    have.retain(|(e, node, label)| {
        let keep = want.iter().any(|(id, p)| id == node && p.label == *label);
        if !keep {
            commands.entity(*e).despawn();
        }
        keep
    });
    for (id, p) in want {
        if have.iter().any(|(_, node, _)| *node == id) {
            continue;
        }
        let n = id - VIRTUAL_ID_BASE + 1;
        let device = Device {
            node: id,
            name: format!("{}-{n:02}", p.name),
            kind: match p.runtime {
                Runtime::Browser => NodeKind::Browser,
                Runtime::Native => NodeKind::Native,
            },
            adapter: p.label.clone(),
            memory_bytes: p.memory_bytes,
            gflops: p.hello_gflops(),
            tokens_processed: 0,
            health: Health::Ok,
        };
        commands.spawn((
            Name::new(format!("simulated {}", device.name)),
            device,
            Link::default(),
            Simulated,
            VirtualDevice { profile: p.clone() },
        ));
    }
}

/// Real devices joining or leaving, or the model arriving, change the prediction.
fn notice_changes(
    mut msgs: MessageReader<FromCore>,
    mut state: ResMut<SimState>,
    added: Query<(), (Added<Device>, With<VirtualDevice>)>,
) {
    let real = msgs.read().any(|FromCore(m)| {
        matches!(
            m,
            CoreMessage::Ready { .. }
                | CoreMessage::Event(
                    crate::coordinator::events::Event::NodeJoined { .. }
                        | crate::coordinator::events::Event::NodeLeft { .. }
                )
        )
    });
    if real || !added.is_empty() {
        state.dirty = true;
    }
}

/// The model to simulate and its shards.
fn model_and_shards(
    state: &SimState,
    info: &CoreInfo,
    devices: &[SimDevice],
) -> Result<(ModelShape, Vec<ShardShape>), String> {
    match &state.model {
        SimModel::Served => {
            let m = info
                .model
                .as_ref()
                .ok_or("waiting for the coordinator's model")?;
            let shape = m
                .shape
                .clone()
                .ok_or("the served model's shapes are not known")?;
            let last = m.shards.len().saturating_sub(1);
            let shards = m
                .shards
                .iter()
                .enumerate()
                .map(|(i, &(a, b, bytes))| ShardShape {
                    index: i,
                    layers: [a, b],
                    bytes,
                    has_embedding: i == 0,
                    has_head: i == last,
                })
                .collect();
            Ok((shape, shards))
        }
        SimModel::Shape {
            name,
            weights,
            shards,
        } => {
            let shape = ModelShape::preset(name, *weights).map_err(|e| e.to_string())?;
            let shards = match shards {
                ShardCount::Exactly(n) => shape.plan(*n).map_err(|e| e.to_string())?,
                ShardCount::Auto => match best_split(&shape, devices, &state.opts) {
                    Ok(Some((n, _))) => shape.plan(n).map_err(|e| e.to_string())?,
                    Ok(None) => shape
                        .plan(shape.config.n_layers)
                        .map_err(|e| e.to_string())?,
                    Err(e) => return Err(e.to_string()),
                },
            };
            Ok((shape, shards))
        }
    }
}

/// Recomputes the prediction and the simulated placement's shard entities when needed.
#[allow(clippy::type_complexity)]
fn recompute(
    mut commands: Commands,
    mut state: ResMut<SimState>,
    info: Res<CoreInfo>,
    real: Query<(Entity, &Device), Without<Simulated>>,
    virtuals: Query<(Entity, &Device, &VirtualDevice)>,
    old: Query<Entity, (With<Simulated>, Or<(With<Shard>, With<Packet>)>)>,
    time: Res<Time>,
) {
    if !state.dirty {
        return;
    }
    // Virtual entities spawned this frame are not queryable yet: wait for them.
    if state.enabled && virtuals.iter().count() != state.mix.len() {
        return;
    }
    state.dirty = false;
    for e in &old {
        commands.entity(e).despawn();
    }
    state.clock = Clock {
        next_at: time.elapsed_secs_f64(),
        ..Clock::default()
    };
    if !state.enabled {
        state.report = None;
        state.status = "turn simulation on to see a prediction".into();
        return;
    }
    let mut devices: Vec<(Entity, SimDevice)> = real
        .iter()
        .map(|(e, d)| {
            let profile =
                DeviceProfile::from_hello(&d.name, d.kind, &d.adapter, d.memory_bytes, d.gflops);
            (
                e,
                SimDevice {
                    id: d.node,
                    name: d.name.clone(),
                    profile,
                    real: true,
                },
            )
        })
        .collect();
    devices.extend(virtuals.iter().map(|(e, d, v)| {
        (
            e,
            SimDevice {
                id: d.node,
                name: d.name.clone(),
                profile: v.profile.clone(),
                real: false,
            },
        )
    }));
    devices.sort_by_key(|(_, d)| d.id);
    let sim: Vec<SimDevice> = devices.iter().map(|(_, d)| d.clone()).collect();
    let (shape, shards) = match model_and_shards(&state, &info, &sim) {
        Ok(x) => x,
        Err(e) => {
            state.report = None;
            state.status = e;
            return;
        }
    };
    let report = match simulate(&shape, &shards, &sim, &state.opts) {
        Ok(r) => r,
        Err(e) => {
            state.report = None;
            state.status = e.to_string();
            return;
        }
    };
    for (i, s) in report.shards.iter().enumerate() {
        let holder = report.placement[i]
            .and_then(|id| devices.iter().find(|(_, d)| d.id == id))
            .map(|(e, _)| *e);
        let mut ec = commands.spawn((
            Name::new(format!("simulated shard {i}")),
            Shard {
                index: i,
                layers: s.layers,
                bytes: s.bytes,
                state: if holder.is_some() {
                    ShardStatus::Ready
                } else {
                    ShardStatus::Unassigned
                },
                progress: if holder.is_some() { 1.0 } else { 0.0 },
            },
            Simulated,
        ));
        if let Some(h) = holder {
            ec.insert(HeldBy(h));
        }
    }
    state.status = if report.complete && report.options.sessions > 1 {
        format!(
            "{}: {:.2} tok/s predicted ({:.1} in all for {} at once), first token in {:.2} s",
            report.model,
            report.decode_tokens_per_second,
            report.aggregate_tokens_per_second,
            report.options.sessions,
            report.time_to_first_token_s
        )
    } else if report.complete {
        format!(
            "{}: {:.2} tok/s predicted, first token in {:.2} s",
            report.model, report.decode_tokens_per_second, report.time_to_first_token_s
        )
    } else {
        format!("{}: does not fit these devices", report.model)
    };
    state.report = Some(report);
}

/// Runs the predicted pipeline: each hop of a decode step is a packet out (token ids or an
/// activation) and one back, together taking the hop's predicted time, one hop after the other,
/// token after token.
fn drive(
    mut commands: Commands,
    mut state: ResMut<SimState>,
    devices: Query<(Entity, &Device)>,
    mut notices: ResMut<Notices>,
    time: Res<Time>,
) {
    let now = time.elapsed_secs_f64();
    if !state.enabled || now < state.clock.next_at {
        return;
    }
    let Some(report) = state
        .report
        .as_ref()
        .filter(|r| r.complete && !r.hops.is_empty())
    else {
        return;
    };
    let n_hops = report.hops.len();
    let hop_i = state.clock.hop % n_hops;
    let hop = report.hops[hop_i].clone();
    let coordinator_ms = report.decode.coordinator_ms;
    let Some((entity, _)) = devices.iter().find(|(_, d)| d.node == hop.device) else {
        notices.post(now, true, format!("simulated device {} is gone", hop.name));
        state.dirty = true;
        return;
    };
    let micros = (hop.decode.total_s() * 1e6) as u64;
    let half = travel_seconds(micros);
    let last = hop_i + 1 == n_hops;
    let kinds = [
        (
            if hop_i == 0 {
                PacketKind::Tokens
            } else {
                PacketKind::Activation
            },
            hop.decode.bytes_out,
            Direction::Out,
        ),
        (
            if last {
                PacketKind::TopLogits
            } else {
                PacketKind::Activation
            },
            hop.decode.bytes_in,
            Direction::Back,
        ),
    ];
    for (i, (kind, bytes, direction)) in kinds.into_iter().enumerate() {
        commands.spawn((
            Packet {
                kind,
                bytes: bytes as usize,
                direction,
                start: now + half * i as f64,
                duration: half,
                progress: if i == 0 { 0.0 } else { -1.0 },
            },
            OnLink(entity),
            Simulated,
        ));
    }
    let coordinator = if last { coordinator_ms / 1e3 } else { 0.0 };
    state.clock.hop += 1;
    if last {
        state.clock.tokens += 1;
    }
    state.clock.next_at = now + 2.0 * half + coordinator;
}

/// The commands that load a scenario: its devices (profiles with their overrides), its first
/// model if that is a shape, and simulation mode on.
pub fn scenario_commands(s: &crate::sim::scenario::Scenario) -> Vec<SimCommand> {
    let mut out = vec![
        SimCommand::Clear,
        SimCommand::Options(SimOptions {
            prompt_tokens: s.prompt_tokens,
            gen_tokens: s.gen_tokens,
            sessions: s.sessions,
            ..SimOptions::default()
        }),
    ];
    match s.devices(0) {
        Ok(devices) => out.extend(devices.into_iter().map(|d| SimCommand::Add {
            profile: d.profile,
            count: 1,
        })),
        Err(e) => warn!("scenario {}: {e}", s.name),
    }
    if let Some(m) = s.models.first()
        && let Some(name) = &m.shape
    {
        let weights = m
            .weights
            .as_deref()
            .and_then(|w| WeightType::parse(w).ok())
            .unwrap_or(WeightType::F16);
        out.push(SimCommand::Model(SimModel::Shape {
            name: name.clone(),
            weights,
            shards: m.shards.unwrap_or(ShardCount::Auto),
        }));
    }
    out.push(SimCommand::Enable(true));
    out
}
