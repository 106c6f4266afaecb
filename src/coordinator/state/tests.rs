//! The core over plain values: placement, failover, moves and pins, steps relayed and checked,
//! deadlines, learned speeds. No sockets, no runtime: time is an `Instant` the test advances.

use std::time::{Duration, Instant};

use super::*;
use crate::coordinator::events::Event;
use crate::coordinator::wire::StepOutputKind;
use crate::protocol::{Activation, Encoding, TopLogit, TopLogits};

const MB: u64 = 1_000_000;
pub(super) const HIDDEN: usize = 16;
const VOCAB: usize = 1000;

pub(super) fn model(shards: usize) -> ModelShape {
    ModelShape {
        shards: (0..shards)
            .map(|i| ShardShape {
                bytes: 100 * MB,
                row_bytes: 100 * MB,
                step_bytes: 0,
                layers: 10,
                file: format!("shard-{i}.safetensors"),
                sha256: "00".repeat(32),
            })
            .collect(),
        hidden: HIDDEN,
        vocab: VOCAB,
    }
}

fn core(shards: usize) -> Core {
    Core::new(
        CoreConfig {
            deadlines: Deadlines::default(),
            encoding: WireEncoding::F32,
            max_sessions: 4,
            audit: None,
        },
        model(shards),
    )
}

pub(super) fn hello(name: &str, memory: u64, gflops: f64) -> Hello {
    Hello {
        name: name.into(),
        kind: NodeKind::Native,
        backend: "cpu".into(),
        adapter: "test".into(),
        memory_bytes: memory,
        gflops,
        address: None,
    }
}

/// The shards `outs` tell `node` to load.
fn loads(outs: &[Output], node: u64) -> Vec<usize> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                node: n,
                msg: CoordinatorMessage::Load { shard, .. },
            } if *n == node => Some(*shard),
            _ => None,
        })
        .collect()
}

fn unloads(outs: &[Output], node: u64) -> Vec<usize> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                node: n,
                msg: CoordinatorMessage::Unload { shard },
            } if *n == node => Some(*shard),
            _ => None,
        })
        .collect()
}

pub(super) fn left(outs: &[Output]) -> Vec<u64> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(Event::NodeLeft { node, .. }) => Some(*node),
            _ => None,
        })
        .collect()
}

/// The frame `outs` sent to `node` (request id, seqPos, rows).
pub(super) fn sent_frame(outs: &[Output], node: u64) -> Option<(u32, u16, u32)> {
    outs.iter().find_map(|o| match o {
        Output::Frame { node: n, frame } if *n == node => {
            Some((frame.request_id, frame.seq_pos, frame.dim0))
        }
        _ => None,
    })
}

pub(super) fn done(outs: &[Output]) -> Option<StepOutcome> {
    outs.iter().find_map(|o| match o {
        Output::StepDone { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
}

pub(super) fn hidden_reply(rid: u32, seq: u16, rows: u32, cols: u32) -> Frame {
    let data = (0..rows * cols).map(|i| (i % 7) as f32 * 0.25).collect();
    Activation::new(rows, cols, data)
        .unwrap()
        .to_frame(seq, rid, Encoding::F32, false)
        .unwrap()
}

pub(super) fn top_reply(rid: u32, seq: u16, ids: &[u32]) -> Frame {
    TopLogits {
        entries: ids
            .iter()
            .enumerate()
            .map(|(i, &id)| TopLogit {
                id,
                logit: 10.0 - i as f32,
            })
            .collect(),
        rows: 1,
    }
    .to_frame(seq, rid)
    .unwrap()
}

/// A node joins and reports every shard it is told to load ready.
fn join_ready(c: &mut Core, now: Instant, name: &str, gflops: f64) -> u64 {
    let id = c.node_joined(now, hello(name, 8 << 30, gflops));
    settle(c, now);
    id
}

/// Reports every load in flight ready, repeatedly, until nothing loads.
pub(super) fn settle(c: &mut Core, now: Instant) -> Vec<Output> {
    let mut all = Vec::new();
    loop {
        let outs = c.drain();
        let mut any = false;
        for o in &outs {
            if let Output::Send {
                node,
                msg: CoordinatorMessage::Load { shard, .. },
            } = o
            {
                c.shard_ready(now, *node, *shard);
                any = true;
            }
        }
        all.extend(outs);
        if !any {
            return all;
        }
    }
}

fn holders(c: &Core) -> Vec<Option<u64>> {
    c.shards.iter().map(|s| s.node).collect()
}

const K: usize = 4;

pub(super) fn request(c: &Core, session: u64, pos: usize, tokens: Vec<u32>) -> StepRequest {
    StepRequest {
        session,
        epoch: c.epoch(),
        pos,
        tokens,
        k: K,
        logit_rows: 1,
    }
}

#[test]
fn first_nodes_take_contiguous_runs_and_a_late_joiner_gets_a_share() {
    let t = Instant::now();
    let mut c = core(4);
    let a = c.node_joined(t, hello("a", 8 << 30, 1.0));
    let outs = c.drain();
    assert!(
        matches!(outs[1], Output::Welcome { node } if node == a),
        "welcome before loads"
    );
    assert_eq!(loads(&outs, a), vec![0, 1, 2, 3]);
    for i in 0..4 {
        c.shard_ready(t, a, i);
    }
    assert_eq!(c.route_state(), RouteState::Ready { epoch: c.epoch() });
    c.drain();
    let b = c.node_joined(t, hello("b", 8 << 30, 1.0));
    let outs = c.drain();
    assert_eq!(
        loads(&outs, b),
        vec![2, 3],
        "the second half moves to the late joiner"
    );
    assert!(c.route().is_some(), "a keeps serving while b loads");
    let epoch = c.epoch();
    c.shard_ready(t, b, 2);
    c.shard_ready(t, b, 3);
    let outs = c.drain();
    assert_eq!(
        unloads(&outs, a),
        vec![2, 3],
        "no step runs: a frees them at once"
    );
    assert!(c.epoch() > epoch);
    assert_eq!(holders(&c), vec![Some(a), Some(a), Some(b), Some(b)]);
}

#[test]
fn a_retired_shard_waits_for_steps_on_older_routes() {
    let t = Instant::now();
    let mut c = core(2);
    let a = join_ready(&mut c, t, "a", 1.0);
    let s = c.open_session(3).unwrap();
    let step = c.begin_step(t, request(&c, s, 0, vec![1, 2, 3])).unwrap();
    let (rid, seq, _) = sent_frame(&c.drain(), a).unwrap();
    let b = c.node_joined(t, hello("b", 8 << 30, 1.0));
    c.move_shard(t, 1, b).unwrap();
    settle(&mut c, t);
    assert_eq!(c.shards[1].node, Some(b));
    // The step on the old route still runs through a: shard 1 stays loaded there.
    assert!(c.retired.iter().any(|r| r.node == a && r.shard == 1));
    c.on_frame(t, a, top_reply(rid, seq, &[5, 6, 7, 8]))
        .unwrap();
    let outs = c.drain();
    assert!(matches!(done(&outs), Some(Ok(_))), "step {step} finished");
    assert_eq!(
        unloads(&outs, a),
        vec![1],
        "freed once the old route drained"
    );
}

#[test]
fn a_step_is_relayed_hop_by_hop_and_sampled_from_the_last() {
    let t = Instant::now();
    let mut c = core(2);
    let a = c.node_joined(t, hello("a", 8 << 30, 1.0));
    let b = c.node_joined(t, hello("b", 8 << 30, 1.0));
    settle(&mut c, t);
    assert_eq!(holders(&c), vec![Some(a), Some(b)]);
    let s = c.open_session(3).unwrap();
    c.drain();
    c.begin_step(t, request(&c, s, 0, vec![1, 2, 3])).unwrap();
    let outs = c.drain();
    assert!(
        matches!(&outs[0], Output::Send { node, msg: CoordinatorMessage::Step { pos: 0, first: 0, last: 0, .. } } if *node == a)
    );
    let (rid, seq, rows) = sent_frame(&outs, a).unwrap();
    assert_eq!((seq, rows), (3, 3));
    c.on_frame(t, a, hidden_reply(rid, seq, 3, HIDDEN as u32))
        .unwrap();
    let outs = c.drain();
    assert!(outs.iter().any(
        |o| matches!(o, Output::Event(Event::FrameRelayed { node, tokens: 3, .. }) if *node == a)
    ));
    let (rid2, seq2, rows2) = sent_frame(&outs, b).expect("relayed to b");
    assert_ne!(rid2, rid, "each hop has its own request id");
    assert_eq!((seq2, rows2), (3, 3));
    c.on_frame(t, b, top_reply(rid2, seq2, &[9, 8, 7, 6]))
        .unwrap();
    match done(&c.drain()) {
        Some(Ok(top)) => assert_eq!(top.entries[0].id, 9),
        other => panic!("{other:?}"),
    }
    // Nothing is pending any more: a frame now is a protocol violation.
    let again = c.on_frame(t, b, top_reply(rid2, seq2, &[9, 8, 7, 6]));
    assert!(again.unwrap_err().contains("not pending"));
}

/// A two-node cluster with a step waiting on a's reply; returns (core, a, b, rid, seq).
fn two_hop_step(shards: usize) -> (Core, u64, u64, u32, u16, Instant) {
    let t = Instant::now();
    let mut c = core(shards);
    let a = c.node_joined(t, hello("a", 8 << 30, 1.0));
    let b = c.node_joined(t, hello("b", 8 << 30, 1.0));
    settle(&mut c, t);
    let s = c.open_session(1).unwrap();
    c.begin_step(t, request(&c, s, 0, vec![1])).unwrap();
    let (rid, seq, _) = sent_frame(&c.drain(), a).unwrap();
    (c, a, b, rid, seq, t)
}

#[test]
fn a_malformed_hidden_state_is_its_senders_failure_not_the_next_nodes() {
    for (what, frame) in [
        ("width", hidden_reply(0, 1, 1, HIDDEN as u32 - 1)),
        ("rows", hidden_reply(0, 1, 2, HIDDEN as u32)),
        ("seqPos", hidden_reply(0, 9, 1, HIDDEN as u32)),
    ] {
        let (mut c, a, b, rid, _, t) = two_hop_step(2);
        let mut frame = frame;
        frame.request_id = rid;
        c.on_frame(t, a, frame).unwrap();
        let outs = c.drain();
        assert_eq!(
            left(&outs),
            vec![a],
            "{what}: the sender is removed, nobody else"
        );
        assert!(
            sent_frame(&outs, b).is_none(),
            "{what}: nothing was relayed to b"
        );
        match done(&outs) {
            Some(Err(f)) => {
                assert!(f.blamed && f.node == a, "{what}: {f:?}");
                assert!(f.why.contains(what), "{what}: {}", f.why);
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(loads(&outs, b), vec![0], "{what}: a's shard goes to b");
    }
}

#[test]
fn top_logits_beyond_the_vocabulary_are_the_last_nodes_failure() {
    let (mut c, a, b, rid, seq, t) = two_hop_step(2);
    c.on_frame(t, a, hidden_reply(rid, seq, 1, HIDDEN as u32))
        .unwrap();
    let (rid, seq, _) = sent_frame(&c.drain(), b).unwrap();
    c.on_frame(t, b, top_reply(rid, seq, &[1, 60_000, 2, 3]))
        .unwrap();
    let outs = c.drain();
    assert_eq!(left(&outs), vec![b]);
    assert!(matches!(done(&outs), Some(Err(f)) if f.node == b && f.why.contains("vocabulary")));
}

#[test]
fn a_node_caught_with_a_bad_reply_is_refused_for_a_while_and_others_are_not() {
    let (mut c, a, _b, rid, seq, t) = two_hop_step(2);
    let here: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    c.nodes.get_mut(&a).unwrap().address = Some(here);
    c.on_frame(t, a, hidden_reply(rid, seq, 1, HIDDEN as u32 - 1))
        .unwrap();
    assert_eq!(left(&c.drain()), vec![a]);
    let why = c.refusal(t, "a", Some(here)).expect("a is refused");
    assert!(why.contains("width"), "the reason is given: {why}");
    assert!(
        c.status(t)["banned"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("width")
    );
    // Another name or another address is someone else; the ban ends after BAN_FOR.
    assert!(c.refusal(t, "b", Some(here)).is_none());
    assert!(
        c.refusal(t, "a", Some("192.0.2.8".parse().unwrap()))
            .is_none()
    );
    let later = t + super::bans::BAN_FOR + Duration::from_secs(1);
    assert!(c.refusal(later, "a", Some(here)).is_none());
    assert_eq!(c.status(later)["banned"], serde_json::json!([]));
    // A node that failed honestly (`step_failed`) or left is not banned.
    let (mut c, a, _b, rid, _, t) = two_hop_step(2);
    c.on_step_failed(t, a, rid, "out of memory".into()).unwrap();
    assert!(c.refusal(t, "a", None).is_none());
}

#[test]
fn a_step_failed_on_a_changed_route_blames_nobody() {
    let (mut c, a, _b, rid, _, t) = two_hop_step(2);
    // A third node joins meanwhile: the epoch moves on (it gets nothing, but routes could
    // have changed).
    c.epoch += 1;
    c.on_step_failed(t, a, rid, "shard 0 is not loaded".into())
        .unwrap();
    let outs = c.drain();
    assert!(left(&outs).is_empty());
    assert!(matches!(done(&outs), Some(Err(f)) if !f.blamed));
    // A step_failed for nothing pending is a protocol violation.
    assert!(c.on_step_failed(t, a, rid, "again".into()).is_err());
}

#[test]
fn deadlines_follow_the_work_and_a_stalled_node_is_removed() {
    let t = Instant::now();
    let mut c = core(2);
    let a = c.node_joined(t, hello("a", 8 << 30, 1.0));
    settle(&mut c, t);
    let s = c.open_session(2000).unwrap();
    // 2000 tokens through 200 MB of weights at 1 GFLOP/s: minutes of work, not the floor.
    c.begin_step(t, request(&c, s, 0, vec![1; 2000])).unwrap();
    c.drain();
    c.tick(t + Duration::from_secs(60));
    assert!(left(&c.drain()).is_empty(), "a long prefill is not a stall");
    let deadline = c.pending.values().next().unwrap().deadline;
    assert!(
        deadline - t > Duration::from_secs(600),
        "{:?}",
        deadline - t
    );
    c.tick(deadline + Duration::from_millis(1));
    let outs = c.drain();
    assert_eq!(left(&outs), vec![a]);
    assert!(matches!(done(&outs), Some(Err(f)) if f.why.contains("deadline")));
    assert!(matches!(c.route_state(), RouteState::Missing { .. }));

    // A one-token step has the floor (10 s) plus a few ms.
    let mut c = core(2);
    let a = c.node_joined(t, hello("a", 8 << 30, 1.0));
    settle(&mut c, t);
    let s = c.open_session(1).unwrap();
    c.begin_step(t, request(&c, s, 0, vec![1])).unwrap();
    c.drain();
    c.tick(t + Duration::from_secs(9));
    assert!(left(&c.drain()).is_empty());
    c.tick(t + Duration::from_secs(11));
    assert_eq!(left(&c.drain()), vec![a]);
}

#[test]
fn a_node_that_lies_about_itself_and_never_loads_is_dropped_at_its_deadline() {
    let t = Instant::now();
    let mut c = core(3);
    let liar = c.node_joined(t, hello("liar", 1 << 63, 1e30));
    let outs = c.drain();
    assert_eq!(loads(&outs, liar), vec![0, 1, 2]);
    assert!(
        matches!(outs[0], Output::Event(Event::NodeJoined { memory_bytes, gflops, .. })
        if memory_bytes == crate::coordinator::speed::MAX_CLAIMED_MEMORY
            && gflops == crate::coordinator::speed::MAX_CLAIMED_GFLOPS)
    );
    let honest = c.node_joined(t, hello("honest", 8 << 30, 2.0));
    assert!(
        loads(&c.drain(), honest).is_empty(),
        "nothing is ready to rebalance"
    );
    // 100 MB at 1 MB/s + 30 s: 130 s.
    c.tick(t + Duration::from_secs(129));
    assert!(left(&c.drain()).is_empty());
    c.tick(t + Duration::from_secs(131));
    let outs = c.drain();
    assert_eq!(left(&outs), vec![liar]);
    assert_eq!(
        loads(&outs, honest),
        vec![0, 1, 2],
        "the honest node gets every shard"
    );
    for i in 0..3 {
        c.shard_ready(t, honest, i);
    }
    assert!(c.route().is_some());
}

#[test]
fn a_users_move_to_a_slower_node_sticks_until_unpinned() {
    let t = Instant::now();
    let mut c = core(3);
    let fast = join_ready(&mut c, t, "fast", 10.0);
    let slow = join_ready(&mut c, t, "slow", 1.0);
    assert_eq!(
        holders(&c),
        vec![Some(fast); 3],
        "the fast node holds everything"
    );
    c.move_shard(t, 2, slow).unwrap();
    let outs = settle(&mut c, t);
    assert!(outs.contains(&Output::Event(Event::ShardPinned {
        shard: 2,
        node: Some(slow)
    })));
    assert_eq!(holders(&c), vec![Some(fast), Some(fast), Some(slow)]);
    // Readiness ran a rebalance, which would have moved it back; so does a late joiner.
    join_ready(&mut c, t, "another", 1.0);
    assert_eq!(c.shards[2].node, Some(slow), "the pin holds");
    c.unpin(t, 2).unwrap();
    let outs = settle(&mut c, t);
    assert!(outs.contains(&Output::Event(Event::ShardPinned {
        shard: 2,
        node: None
    })));
    assert_ne!(
        c.shards[2].node,
        Some(slow),
        "unpinned, it goes back to a faster place"
    );
    assert!(c.unpin(t, 7).is_err());
}

#[test]
fn a_pin_ends_when_its_node_leaves() {
    let t = Instant::now();
    let mut c = core(2);
    let a = join_ready(&mut c, t, "a", 1.0);
    let b = join_ready(&mut c, t, "b", 1.0);
    c.move_shard(t, 0, b).unwrap();
    settle(&mut c, t);
    assert_eq!(c.shards[0].pinned, Some(b));
    c.remove_node(t, b, "closed");
    let outs = c.drain();
    assert!(outs.contains(&Output::Event(Event::ShardPinned {
        shard: 0,
        node: None
    })));
    assert_eq!(
        loads(&outs, a),
        vec![0, 1],
        "failover may place it anywhere"
    );
    assert!(c.move_shard(t, 0, 99).unwrap_err().contains("no node 99"));
}

/// Runs one-token steps through the route, each hop answering after `time(core, node)`.
fn decode_steps(c: &mut Core, t: &mut Instant, n: usize, time: impl Fn(&Core, u64) -> Duration) {
    let s = c.open_session(1).unwrap();
    for pos in 0..n {
        c.begin_step(*t, request(c, s, pos, vec![1])).unwrap();
        loop {
            let outs = settle(c, *t);
            if done(&outs).is_some() {
                break;
            }
            let (node, rid, seq) = outs
                .iter()
                .find_map(|o| match o {
                    Output::Frame { node, frame } => Some((*node, frame.request_id, frame.seq_pos)),
                    _ => None,
                })
                .expect("a hop was sent");
            let last = outs.iter().any(|o| {
                matches!(
                    o,
                    Output::Send {
                        msg: CoordinatorMessage::Step {
                            output: StepOutputKind::TopK { .. },
                            ..
                        },
                        ..
                    }
                )
            });
            *t += time(c, node);
            let reply = if last {
                top_reply(rid, seq, &[1, 2, 3, 4])
            } else {
                hidden_reply(rid, seq, 1, HIDDEN as u32)
            };
            c.on_frame(*t, node, reply).unwrap();
        }
    }
    c.end_session(s, "done");
    c.drain();
}

#[test]
fn a_node_that_measured_itself_under_load_gets_its_share_once_it_proves_faster() {
    let mut t = Instant::now();
    let mut c = core(4);
    let a = join_ready(&mut c, t, "a", 1.0);
    // b measured itself while a loaded: it claims a third of a's speed.
    let b = join_ready(&mut c, t, "b", 0.33);
    let on_b = |c: &Core| holders(c).iter().filter(|h| **h == Some(b)).count();
    assert_eq!(on_b(&c), 1, "{:?}", holders(&c));
    // Both really run 100 MB of weights in 50 ms (2 GFLOP/s).
    decode_steps(&mut c, &mut t, 6, |c, node| {
        let shards = holders(c).iter().filter(|h| **h == Some(node)).count() as u32;
        Duration::from_millis(50) * shards
    });
    assert!(c.nodes[&b].speed.learned().is_some());
    assert_eq!(on_b(&c), 2, "b got its share: {:?}", holders(&c));
    assert_eq!(holders(&c)[0], Some(a));
}

#[test]
fn a_session_that_ends_mid_step_drops_the_late_reply_and_frees_its_caches() {
    let (mut c, a, _b, rid, seq, t) = two_hop_step(2);
    let session = *c.sessions.keys().next().unwrap();
    c.end_session(session, "client left");
    let outs = c.drain();
    assert!(outs.contains(&Output::Send {
        node: a,
        msg: CoordinatorMessage::Close { session }
    }));
    assert_eq!(c.pending_hops(), 0);
    // The node finishes the step it had started: no violation, nothing relayed.
    c.on_frame(t, a, hidden_reply(rid, seq, 1, HIDDEN as u32))
        .unwrap();
    let outs = c.drain();
    assert!(outs.is_empty(), "{outs:?}");
}

#[test]
fn sessions_are_limited_and_every_node_touched_is_closed_on_replay() {
    let (mut c, a, b, rid, seq, t) = two_hop_step(2);
    for _ in 0..3 {
        c.open_session(1).unwrap();
    }
    assert_eq!(c.open_session(1), Err(4));
    c.on_frame(t, a, hidden_reply(rid, seq, 1, HIDDEN as u32))
        .unwrap();
    c.drain();
    let session = 1;
    assert!(c.reset_session(session, 1));
    let outs = c.drain();
    for n in [a, b] {
        assert!(outs.contains(&Output::Send {
            node: n,
            msg: CoordinatorMessage::Close { session }
        }));
    }
    assert!(!c.reset_session(session, 1), "nothing held any more");
}

#[test]
fn names_are_cleaned_and_routes_report_what_is_missing() {
    let t = Instant::now();
    let mut c = core(2);
    let id = c.node_joined(t, hello("ev\u{0}il\u{202E}gpj.exe", 1 << 30, 1.0));
    assert_eq!(c.nodes[&id].info.name, "evilgpj.exe");
    assert_eq!(c.route_state(), RouteState::Loading);
    c.remove_node(t, id, "gone");
    assert_eq!(c.route_state(), RouteState::Missing { shards: vec![0, 1] });
    assert!(c.pipeline_problem().unwrap().contains("0 nodes"));
}

#[test]
fn a_node_lost_between_two_hops_fails_the_step_instead_of_hanging_it() {
    let (mut c, a, b, rid, seq, t) = two_hop_step(2);
    c.remove_node(t, b, "gone");
    c.drain();
    // a answers hop 0; hop 1's node is gone: the step fails at once, nobody blamed.
    c.on_frame(t, a, hidden_reply(rid, seq, 1, HIDDEN as u32))
        .unwrap();
    let outs = c.drain();
    assert!(
        matches!(done(&outs), Some(Err(f)) if f.node == b && !f.blamed),
        "{outs:?}"
    );
    assert!(left(&outs).is_empty());
    assert_eq!(c.pending_hops(), 0);
}

#[test]
fn a_move_under_way_takes_over_when_the_source_leaves() {
    let t = Instant::now();
    let mut c = core(2);
    let a = join_ready(&mut c, t, "a", 1.0);
    let b = c.node_joined(t, hello("b", 8 << 30, 1.0));
    let outs = c.drain();
    assert_eq!(loads(&outs, b), vec![1], "shard 1 moves to b");
    c.remove_node(t, a, "gone");
    let outs = c.drain();
    assert_eq!(
        loads(&outs, b),
        vec![0],
        "only shard 0 needs a new load: b loads 1 already"
    );
    assert_eq!(c.shards[1].node, Some(b));
    assert_eq!(c.shards[1].state, ShardState::Loading);
    c.shard_ready(t, b, 1);
    c.shard_ready(t, b, 0);
    assert!(c.route().is_some());
}

#[test]
fn a_steps_work_counts_the_head_once_and_no_embedding_table() {
    let tensor = |name: &str, shape: &[usize]| splitter::TensorInfo {
        name: name.into(),
        shape: shape.to_vec(),
        dtype: splitter::TensorType::F16,
    };
    // f16: two bytes a value. A one-shard tied model: the embedding is also the head.
    let shard = |embedding: bool, head: bool| splitter::ShardInfo {
        index: 0,
        layers: [0, 0],
        file: "s.safetensors".into(),
        bytes: 2 * (1000 * 16 + 16 * 64),
        sha256: "00".repeat(32),
        has_embedding: embedding,
        has_head: head,
        tensors: vec![
            tensor("model.embed_tokens.weight", &[1000, 16]),
            tensor("model.layers.0.mlp.up_proj.weight", &[64, 16]),
        ],
    };
    let layer = 2 * 16 * 64;
    assert_eq!(super::work_bytes(&shard(true, true), 1000), (layer, 32_000));
    assert_eq!(super::work_bytes(&shard(true, false), 1000), (layer, 0));
}
