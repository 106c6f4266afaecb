//! The visual app's world without a window: recorded coordinator events go in through the
//! bridge's channel, `App::update` runs the real systems under `MinimalPlugins`, and the tests
//! assert on the entities and relationships that come out.
#![cfg(feature = "gui")]

use std::net::SocketAddr;
use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use crossbeam_channel::{Receiver, Sender};
use synapse::app::bridge::{Bridge, CoreCommand, CoreMessage, CoreStopped, ModelSummary};
use synapse::app::devices::{Device, Link, Nodes};
use synapse::app::drag::{DropShard, PendingDrop, Refused, UnpinShard};
use synapse::app::packets::{Direction, OnLink, Packet, PacketKind};
use synapse::app::sessions::Session;
use synapse::app::shards::{HeldBy, HeldShards, MovingTo, Pinned, Shard, ShardStatus, Shards};
use synapse::app::simulate::{SimCommand, SimModel, SimState, Simulated, VirtualDevice};
use synapse::app::{Notices, headless_plugin};
use synapse::coordinator::events::Event;
use synapse::coordinator::wire::NodeKind;
use synapse::sim::profile::DeviceProfile;
use synapse::sim::scenario::ShardCount;
use synapse::sim::{ModelShape, WeightType};

/// Each update advances app time by this much.
const TICK: Duration = Duration::from_millis(50);

struct Harness {
    app: App,
    to_app: Sender<CoreMessage>,
    commands: Receiver<CoreCommand>,
}

impl Harness {
    fn new() -> Harness {
        let (to_app, from_core) = crossbeam_channel::unbounded();
        let (to_core, commands) = crossbeam_channel::unbounded();
        let mut app = App::new();
        app.add_plugins(MinimalPlugins)
            .insert_resource(TimeUpdateStrategy::ManualDuration(TICK))
            .insert_resource(Bridge { from_core, to_core })
            .add_plugins(headless_plugin);
        app.update();
        Harness {
            app,
            to_app,
            commands,
        }
    }

    /// Sends the messages through the bridge and runs one frame.
    fn feed(&mut self, msgs: impl IntoIterator<Item = CoreMessage>) {
        for m in msgs {
            self.to_app.send(m).expect("the app holds the receiver");
        }
        self.app.update();
    }

    fn events(&mut self, events: impl IntoIterator<Item = Event>) {
        self.feed(events.into_iter().map(CoreMessage::Event));
    }

    fn world(&mut self) -> &mut World {
        self.app.world_mut()
    }

    fn device(&mut self, node: u64) -> Entity {
        *self
            .world()
            .resource::<Nodes>()
            .0
            .get(&node)
            .expect("device spawned")
    }

    fn shard(&mut self, i: usize) -> Entity {
        self.world().resource::<Shards>().0[i]
    }

    fn holder(&mut self, i: usize) -> Option<Entity> {
        let s = self.shard(i);
        self.world().get::<HeldBy>(s).map(|h| h.0)
    }

    fn held(&mut self, device: Entity) -> Vec<Entity> {
        let mut v = self
            .world()
            .get::<HeldShards>(device)
            .map(|h| h.shards().to_vec())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn ready() -> CoreMessage {
    CoreMessage::Ready {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        token: "t".into(),
        host: "127.0.0.1".into(),
        model: ModelSummary {
            name: "tiny".into(),
            hidden_size: 64,
            shards: vec![(0, 0, 1000), (1, 1, 2000), (2, 3, 3000)],
            shape: Some(ModelShape::preset("SmolLM2-135M", WeightType::F16).unwrap()),
        },
    }
}

fn joined(node: u64, name: &str) -> Event {
    Event::NodeJoined {
        node,
        name: name.into(),
        kind: NodeKind::Local,
        adapter: "test adapter".into(),
        memory_bytes: 1 << 30,
        gflops: 10.0,
    }
}

/// The events a coordinator emits when one node joins and loads every shard, in the order
/// `Coordinator::add_node`, `place`, `shard_progress` and `shard_ready` emit them (progress
/// events thinned to one per shard).
fn first_node_loads_everything() -> Vec<Event> {
    let mut v = vec![joined(1, "local-0")];
    for shard in 0..3 {
        v.push(Event::ShardPlaced { shard, node: 1 });
    }
    for shard in 0..3 {
        v.push(Event::ShardLoading {
            shard,
            node: 1,
            fraction: 0.5,
        });
        v.push(Event::ShardReady { shard, node: 1 });
    }
    v
}

/// Two devices, every shard ready on the first.
fn two_devices() -> Harness {
    let mut h = Harness::new();
    h.feed([ready()]);
    h.events(first_node_loads_everything());
    h.events([joined(2, "phone")]);
    h
}

#[test]
fn devices_and_shards_are_spawned_and_related() {
    let mut h = Harness::new();
    h.feed([ready()]);
    assert_eq!(h.world().resource::<Shards>().0.len(), 3);
    let s1 = h.shard(1);
    let shard = h.world().get::<Shard>(s1).unwrap().clone();
    assert_eq!(
        (shard.layers, shard.bytes, shard.state),
        ([1, 1], 2000, ShardStatus::Unassigned)
    );

    // Placed and half loaded, in one frame.
    h.events([
        joined(1, "local-0"),
        Event::ShardPlaced { shard: 1, node: 1 },
        Event::ShardLoading {
            shard: 1,
            node: 1,
            fraction: 0.5,
        },
    ]);
    let d1 = h.device(1);
    let dev = h.world().get::<Device>(d1).unwrap().clone();
    assert_eq!((dev.name.as_str(), dev.kind), ("local-0", NodeKind::Local));
    assert_eq!(h.holder(1), Some(d1));
    let shard = h.world().get::<Shard>(s1).unwrap().clone();
    assert_eq!((shard.state, shard.progress), (ShardStatus::Loading, 0.5));

    h.events(first_node_loads_everything().into_iter().skip(1));
    let all: Vec<Entity> = {
        let mut v = h.world().resource::<Shards>().0.clone();
        v.sort();
        v
    };
    assert_eq!(h.held(d1), all, "the device's HeldShards lists every shard");
    for i in 0..3 {
        let s = h.shard(i);
        assert_eq!(h.world().get::<Shard>(s).unwrap().state, ShardStatus::Ready);
    }
    h.events([joined(2, "phone")]);
    let mut q = h.world().query::<&Device>();
    let mut names: Vec<String> = q.iter(h.world()).map(|d| d.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["local-0", "phone"]);
}

#[test]
fn a_moved_shard_switches_device_when_the_target_is_ready() {
    let mut h = two_devices();
    let (d1, d2) = (h.device(1), h.device(2));
    h.events([Event::ShardPlaced { shard: 2, node: 2 }]);
    // The source keeps serving while the target loads.
    assert_eq!(h.holder(2), Some(d1));
    let s2 = h.shard(2);
    assert_eq!(h.world().get::<MovingTo>(s2).map(|m| m.device), Some(d2));
    h.events([Event::ShardLoading {
        shard: 2,
        node: 2,
        fraction: 0.25,
    }]);
    assert_eq!(h.world().get::<MovingTo>(s2).unwrap().progress, 0.25);
    h.events([Event::ShardReady { shard: 2, node: 2 }]);
    assert_eq!(h.holder(2), Some(d2));
    assert!(h.world().get::<MovingTo>(s2).is_none());
    let (a, b) = (h.shard(0), h.shard(1));
    let mut expect = vec![a, b];
    expect.sort();
    assert_eq!(h.held(d1), expect);
    assert_eq!(h.held(d2), vec![s2]);
}

#[test]
fn a_pin_is_shown_until_the_coordinator_lifts_it_and_unpin_asks_it_to() {
    let mut h = two_devices();
    let s2 = h.shard(2);
    // A move the person asked for: the coordinator pins the shard to the target.
    h.events([
        Event::ShardPlaced { shard: 2, node: 2 },
        Event::ShardPinned {
            shard: 2,
            node: Some(2),
        },
    ]);
    assert!(h.world().get::<Pinned>(s2).is_some(), "the pin is shown");
    let s1 = h.shard(1);
    assert!(h.world().get::<Pinned>(s1).is_none());
    // The unpin button asks the coordinator; the mark stays until it answers.
    h.world().write_message(UnpinShard { shard: s2 });
    h.app.update();
    let sent: Vec<CoreCommand> = h.commands.try_iter().collect();
    assert!(
        sent.iter()
            .any(|c| matches!(c, CoreCommand::UnpinShard { shard: 2 })),
        "unpin sent for shard 2: {sent:?}"
    );
    assert!(h.world().get::<Pinned>(s2).is_some());
    h.events([Event::ShardPinned {
        shard: 2,
        node: None,
    }]);
    assert!(h.world().get::<Pinned>(s2).is_none(), "the pin is lifted");
}

#[test]
fn a_drop_is_sent_and_a_refused_one_is_restored() {
    let mut h = two_devices();
    let (d1, d2) = (h.device(1), h.device(2));
    let s0 = h.shard(0);
    h.world().write_message(DropShard {
        shard: s0,
        device: d2,
    });
    h.app.update();
    match h.commands.try_recv() {
        Ok(CoreCommand::MoveShard { shard: 0, node: 2 }) => {}
        other => panic!("expected MoveShard {{ shard: 0, node: 2 }}, got {other:?}"),
    }
    assert_eq!(
        h.world().get::<PendingDrop>(s0),
        Some(&PendingDrop { device: d2 })
    );

    h.events([Event::MoveRefused {
        shard: 0,
        node: 2,
        reason: "node 2 (phone) has room for 0 MB more".into(),
    }]);
    assert!(h.world().get::<PendingDrop>(s0).is_none());
    let refused = h
        .world()
        .get::<Refused>(s0)
        .expect("marked refused")
        .clone();
    assert!(refused.reason.contains("room"), "{refused:?}");
    assert_eq!(h.holder(0), Some(d1), "the shard snaps back to its holder");
    assert!(h.held(d2).is_empty());
    let notices = &h.world().resource::<Notices>().0;
    assert!(
        notices
            .iter()
            .any(|n| n.warning && n.text.contains("not moved")),
        "{notices:?}"
    );
}

#[test]
fn a_drop_on_a_device_that_left_is_refused_locally() {
    let mut h = two_devices();
    let d2 = h.device(2);
    let s1 = h.shard(1);
    h.events([Event::NodeLeft {
        node: 2,
        reason: "closed the tab".into(),
    }]);
    assert!(h.world().get_entity(d2).is_err(), "the device is despawned");
    h.world().write_message(DropShard {
        shard: s1,
        device: d2,
    });
    h.app.update();
    assert!(
        h.commands.try_recv().is_err(),
        "nothing sent to the coordinator"
    );
    let r = h.world().get::<Refused>(s1).expect("refused").clone();
    assert!(r.reason.contains("gone"), "{r:?}");
}

/// A caught node that tries to come back is not shown as a device; a notice says why.
#[test]
fn a_refused_node_gets_a_notice_not_a_card() {
    let mut h = two_devices();
    h.events([Event::NodeRefused {
        name: "liar".into(),
        reason: "refused for 599 more s: this node was caught returning a bad result (scale)"
            .into(),
    }]);
    let notices = &h.world().resource::<Notices>().0;
    assert!(
        notices
            .iter()
            .any(|n| n.warning && n.text.contains("liar") && n.text.contains("caught")),
        "{notices:?}"
    );
    assert_eq!(h.world().resource::<Nodes>().0.len(), 2, "no card for it");
}

fn frame(node: u64, micros: u64) -> Event {
    Event::FrameRelayed {
        session: 1,
        node,
        first_shard: 0,
        last_shard: 2,
        sent_kind: "activation",
        sent_bytes: 100,
        received_kind: "top_logits",
        received_bytes: 520,
        tokens: 2,
        micros,
    }
}

#[test]
fn packets_travel_their_link_and_vanish_on_arrival() {
    let mut h = two_devices();
    let d1 = h.device(1);
    // 0.6 s round trip: 0.3 s out, 0.3 s back.
    h.events([frame(1, 600_000)]);
    let mut q = h.world().query::<(&Packet, &OnLink)>();
    let mut ps: Vec<(Packet, Entity)> = q.iter(h.world()).map(|(p, l)| (p.clone(), l.0)).collect();
    ps.sort_by(|a, b| a.0.start.total_cmp(&b.0.start));
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|(_, link)| *link == d1));
    assert_eq!(
        (ps[0].0.kind, ps[0].0.direction, ps[0].0.bytes),
        (PacketKind::Activation, Direction::Out, 100)
    );
    assert_eq!(
        (ps[1].0.kind, ps[1].0.direction, ps[1].0.bytes),
        (PacketKind::TopLogits, Direction::Back, 520)
    );
    assert!(
        (ps[0].0.duration - 0.3).abs() < 1e-9,
        "duration from the measured time"
    );

    // The link's statistics.
    let link = h.world().get::<Link>(d1).unwrap().clone();
    assert_eq!(
        (link.frames, link.bytes_sent, link.bytes_received),
        (1, 100, 520)
    );
    assert!((link.last_ms - 600.0).abs() < 1e-9);
    // 2 rows of 64 f32 = 512 bytes sent as 100.
    assert!((link.compression.unwrap() - 5.12).abs() < 1e-9, "{link:?}");
    assert_eq!(h.world().get::<Device>(d1).unwrap().tokens_processed, 2);

    // After 0.35 s the first has arrived (despawned), the second is on its way.
    for _ in 0..7 {
        h.app.update();
    }
    let mut q = h.world().query::<&Packet>();
    let left: Vec<Packet> = q.iter(h.world()).cloned().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].direction, Direction::Back);
    assert!(left[0].progress > 0.0 && left[0].progress < 1.0, "{left:?}");
    for _ in 0..6 {
        h.app.update();
    }
    assert_eq!(h.world().query::<&Packet>().iter(h.world()).count(), 0);
    // Nothing moves without frames.
    for _ in 0..10 {
        h.app.update();
    }
    assert_eq!(h.world().query::<&Packet>().iter(h.world()).count(), 0);
}

#[test]
fn a_device_that_leaves_takes_its_packets_and_frees_its_shards() {
    let mut h = two_devices();
    h.events([frame(1, 2_000_000)]);
    assert_eq!(h.world().query::<&Packet>().iter(h.world()).count(), 2);
    let d1 = h.device(1);
    let mut leave = vec![Event::NodeLeft {
        node: 1,
        reason: "socket closed".into(),
    }];
    leave.extend((0..3).map(|shard| Event::ShardUnassigned { shard }));
    h.events(leave);
    assert!(h.world().get_entity(d1).is_err());
    assert_eq!(h.world().query::<&Packet>().iter(h.world()).count(), 0);
    for i in 0..3 {
        assert_eq!(h.holder(i), None);
        let s = h.shard(i);
        assert_eq!(
            h.world().get::<Shard>(s).unwrap().state,
            ShardStatus::Unassigned
        );
    }
}

#[test]
fn sessions_follow_their_tokens_and_close() {
    let mut h = two_devices();
    h.events([
        Event::SessionOpened {
            session: 7,
            prompt_tokens: 5,
        },
        Event::TokenSampled {
            session: 7,
            id: 10,
            text: " Paris".into(),
        },
    ]);
    h.events([
        Event::SessionReplayed {
            session: 7,
            tokens: 6,
        },
        Event::TokenSampled {
            session: 7,
            id: 11,
            text: ".".into(),
        },
    ]);
    let mut q = h.world().query::<&Session>();
    let s: Vec<Session> = q.iter(h.world()).cloned().collect();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].id, s[0].prompt_tokens, s[0].generated, s[0].replays),
        (7, 5, 2, 1)
    );
    assert_eq!(s[0].text, " Paris.");
    h.events([Event::SessionClosed {
        session: 7,
        reason: "done".into(),
    }]);
    assert_eq!(h.world().query::<&Session>().iter(h.world()).count(), 0);
}

#[test]
fn a_closed_core_channel_is_reported_not_a_panic() {
    let mut h = Harness::new();
    h.feed([ready()]);
    let Harness {
        mut app, to_app, ..
    } = h;
    drop(to_app);
    app.update();
    let stopped = app.world().resource::<CoreStopped>();
    assert!(
        stopped.0.as_deref().is_some_and(|s| s.contains("stopped")),
        "{stopped:?}"
    );
}

/// Two real laptops with every shard on the first, then simulation mode with `phones` phones.
fn laptops_and_phones(phones: usize) -> Harness {
    let mut h = two_devices();
    let phone = DeviceProfile::built_in("phone").unwrap();
    h.world().write_message(SimCommand::Add {
        profile: phone,
        count: phones,
    });
    h.world().write_message(SimCommand::Enable(true));
    h.app.update();
    h.app.update();
    h
}

fn simulated_devices(h: &mut Harness) -> Vec<(Entity, Device)> {
    let mut q = h
        .world()
        .query_filtered::<(Entity, &Device), (With<Simulated>, With<VirtualDevice>)>();
    let mut v: Vec<(Entity, Device)> = q.iter(h.world()).map(|(e, d)| (e, d.clone())).collect();
    v.sort_by_key(|(_, d)| d.node);
    v
}

#[test]
fn virtual_devices_join_the_real_ones_and_get_the_coordinators_placement() {
    let mut h = laptops_and_phones(5);
    let virt = simulated_devices(&mut h);
    assert_eq!(virt.len(), 5, "five virtual phones");
    assert!(
        virt.iter()
            .all(|(_, d)| d.kind == NodeKind::Browser && d.name.starts_with("phone-"))
    );
    // The real devices are still there, unmarked, and the real shards did not move.
    let (d1, d2) = (h.device(1), h.device(2));
    assert!(h.world().get::<Simulated>(d1).is_none() && h.world().get::<Simulated>(d2).is_none());
    for i in 0..3 {
        assert_eq!(
            h.holder(i),
            Some(d1),
            "real shard {i} stays on its real device"
        );
    }
    // The prediction places the served model's 3 shards with the coordinator's placement, and
    // the simulated shard entities are held exactly as it says.
    let report = h
        .world()
        .resource::<SimState>()
        .report
        .clone()
        .expect("a prediction");
    assert_eq!(report.devices.len(), 7, "2 real + 5 virtual");
    assert!(report.complete, "{:?}", report.problems);
    let mut q = h
        .world()
        .query_filtered::<(&Shard, Option<&HeldBy>), With<Simulated>>();
    let sim_shards: Vec<(Shard, Option<Entity>)> = q
        .iter(h.world())
        .map(|(s, b)| (s.clone(), b.map(|b| b.0)))
        .collect();
    assert_eq!(sim_shards.len(), 3);
    for (s, holder) in sim_shards {
        let node = report.placement[s.index].expect("placed");
        let holder = holder.expect("held");
        assert_eq!(
            h.world().get::<Device>(holder).unwrap().node,
            node,
            "shard {}",
            s.index
        );
    }
    // Turning the mode off removes every simulated entity and leaves the live world alone.
    h.world().write_message(SimCommand::Enable(false));
    h.app.update();
    h.app.update();
    let mut q = h.world().query_filtered::<Entity, With<Simulated>>();
    assert_eq!(q.iter(h.world()).count(), 0);
    assert_eq!(h.world().resource::<Shards>().0.len(), 3);
    assert_eq!(h.holder(0), Some(d1));
}

#[test]
fn simulated_packets_travel_for_their_predicted_time() {
    let mut h = laptops_and_phones(2);
    let report = h.world().resource::<SimState>().report.clone().unwrap();
    let first = &report.hops[0];
    // The first hop's packets: token ids out, then the reply, each half the predicted hop.
    let mut q = h
        .world()
        .query_filtered::<(&Packet, &OnLink), With<Simulated>>();
    let ps: Vec<(Packet, Entity)> = q.iter(h.world()).map(|(p, l)| (p.clone(), l.0)).collect();
    assert_eq!(ps.len(), 2, "{ps:?}");
    let holder = ps[0].1;
    assert_eq!(h.world().get::<Device>(holder).unwrap().node, first.device);
    let want = synapse::app::packets::travel_seconds((first.decode.total_s() * 1e6) as u64);
    for (p, _) in &ps {
        assert!((p.duration - want).abs() < 1e-9, "{p:?} vs {want}");
    }
    assert!(
        ps.iter()
            .any(|(p, _)| p.kind == PacketKind::Tokens && p.direction == Direction::Out)
    );
    // Nothing real was asked of the coordinator.
    assert!(h.commands.try_recv().is_err());
    // Packets keep coming, hop after hop, while the mode is on.
    let mut seen = 0;
    for _ in 0..200 {
        h.app.update();
        let mut q = h.world().query_filtered::<&Packet, With<Simulated>>();
        seen = seen.max(q.iter(h.world()).count());
    }
    assert!(seen >= 1);
    let mut q = h.world().query_filtered::<&Packet, With<Simulated>>();
    assert!(
        q.iter(h.world()).count() >= 1,
        "the simulated pipeline keeps running"
    );
}

#[test]
fn a_simulated_device_never_receives_real_work() {
    let mut h = laptops_and_phones(1);
    let (phone, _) = simulated_devices(&mut h).remove(0);
    let s0 = h.shard(0);
    h.world().write_message(DropShard {
        shard: s0,
        device: phone,
    });
    h.app.update();
    assert!(
        h.commands.try_recv().is_err(),
        "nothing sent to the coordinator"
    );
    let r = h.world().get::<Refused>(s0).expect("refused").clone();
    assert!(r.reason.contains("simulated"), "{r:?}");
    assert_eq!(h.holder(0), Some(h.device(1)));
}

#[test]
fn a_preset_shape_is_split_for_the_devices_and_reasons_are_given() {
    let mut h = two_devices();
    let chromebook = DeviceProfile::built_in("chromebook").unwrap();
    h.world().write_message(SimCommand::Add {
        profile: chromebook,
        count: 30,
    });
    h.world().write_message(SimCommand::Model(SimModel::Shape {
        name: "Llama-3.2-1B".into(),
        weights: WeightType::Q4KM,
        shards: ShardCount::Auto,
    }));
    h.world().write_message(SimCommand::Enable(true));
    h.app.update();
    h.app.update();
    let state = h.world().resource::<SimState>();
    let r = state.report.clone().expect("a prediction");
    assert_eq!(r.model, "Llama-3.2-1B");
    assert!(r.complete, "{:?}", r.problems);
    let held: usize = r.devices.iter().map(|d| d.shards.len()).sum();
    assert_eq!(held, r.shards.len(), "every shard on one device");
    assert!(r.decode_tokens_per_second > 0.0);
    assert_eq!(r.devices.len(), 32);
    let idle = r.devices.iter().filter(|d| d.shards.is_empty()).count();
    assert_eq!(r.unused.len(), idle, "every idle device is named");
    assert!(r.unused.iter().all(|u| !u.reason.is_empty()));
    // Removing devices recomputes.
    h.world().write_message(SimCommand::Remove {
        profile: "chromebook".into(),
        count: 30,
    });
    h.app.update();
    h.app.update();
    assert_eq!(simulated_devices(&mut h).len(), 0);
    let r = h.world().resource::<SimState>().report.clone().unwrap();
    assert_eq!(r.devices.len(), 2);
}
