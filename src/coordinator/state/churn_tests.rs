//! The core under churn: node names stay unique among connected nodes, and thousands of nodes
//! joining, loading, running steps and leaving leave nothing behind (issue 15: the
//! coordinator's memory grew with every join and leave).

use std::time::{Duration, Instant};

use super::*;

fn core() -> Core {
    Core::new(
        CoreConfig {
            deadlines: Deadlines::default(),
            encoding: WireEncoding::F32,
            max_sessions: 4,
            audit: None,
        },
        ModelShape {
            shards: (0..2)
                .map(|i| ShardShape {
                    bytes: 1_000_000,
                    row_bytes: 1_000_000,
                    step_bytes: 0,
                    layers: 2,
                    file: format!("shard-{i}.safetensors"),
                    sha256: "00".repeat(32),
                })
                .collect(),
            hidden: 8,
            vocab: 100,
        },
    )
}

fn hello(name: &str) -> Hello {
    Hello {
        name: name.into(),
        kind: NodeKind::Browser,
        backend: "webgpu".into(),
        adapter: "test".into(),
        memory_bytes: 1 << 30,
        gflops: 1.0,
        address: None,
    }
}

/// Answers every load the core asked for with ready.
fn ready_all(c: &mut Core, now: Instant) {
    loop {
        let loads: Vec<(u64, usize)> = c
            .drain()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send {
                    node,
                    msg: CoordinatorMessage::Load { shard, .. },
                } => Some((node, shard)),
                _ => None,
            })
            .collect();
        if loads.is_empty() {
            return;
        }
        for (n, s) in loads {
            c.shard_ready(now, n, s);
        }
    }
}

fn name(c: &Core, id: u64) -> &str {
    &c.nodes[&id].info.name
}

#[test]
fn names_are_unique_among_connected_nodes_and_stay_short() {
    let t = Instant::now();
    let mut c = core();
    let a = c.node_joined(t, hello("laptop"));
    let b = c.node_joined(t, hello("laptop"));
    let d = c.node_joined(t, hello("lap\u{202E}top\u{0}"));
    assert_eq!(
        [name(&c, a), name(&c, b), name(&c, d)],
        ["laptop", "laptop (2)", "laptop (3)"]
    );
    // A name already cut to the limit keeps the suffix within it.
    let long = "x".repeat(200);
    let l1 = c.node_joined(t, hello(&long));
    let l2 = c.node_joined(t, hello(&long));
    assert_eq!(name(&c, l1).chars().count(), NAME_MAX);
    assert_eq!(name(&c, l2).chars().count(), NAME_MAX);
    assert!(name(&c, l2).ends_with(" (2)"), "{}", name(&c, l2));
    // A name is free again once its node left.
    c.remove_node(t, b, "gone");
    let e = c.node_joined(t, hello("laptop"));
    assert_eq!(name(&c, e), "laptop (2)");
    // A name that only looks like a suffixed one is taken as it is.
    let f = c.node_joined(t, hello("laptop (2)"));
    assert_eq!(name(&c, f), "laptop (2) (2)");
}

#[test]
fn ten_thousand_joins_and_leaves_leave_the_core_bounded() {
    let mut t = Instant::now();
    let mut c = core();
    // One node stays throughout, so the others take and give back shards.
    let stay = c.node_joined(t, hello("stay"));
    ready_all(&mut c, t);
    for i in 0..10_000u32 {
        let n = c.node_joined(t, hello("churn"));
        ready_all(&mut c, t);
        // Some leave in the middle of a session's step, some after a load deadline passed.
        if i % 3 == 0
            && let Ok(s) = c.open_session(1)
        {
            let req = StepRequest {
                session: s,
                epoch: c.epoch(),
                pos: 0,
                tokens: vec![1],
                k: 4,
                logit_rows: 1,
            };
            let _ = c.begin_step(t, req);
            c.remove_node(t, n, "left mid-step");
            c.end_session(s, "client left");
        } else if i % 3 == 1 {
            t += Duration::from_secs(3600);
            c.tick(t);
            c.remove_node(t, n, "left");
        } else {
            c.remove_node(t, n, "left");
        }
        ready_all(&mut c, t);
        c.drain();
    }
    assert_eq!(c.nodes.len(), 1, "only the node that stayed");
    assert!(c.nodes.contains_key(&stay));
    assert!(c.sessions.is_empty(), "{} sessions kept", c.sessions.len());
    assert!(c.steps.is_empty(), "{} steps kept", c.steps.len());
    // At most the abandoned hop of the last session, until a tick forgets it.
    assert!(
        c.pending.len() <= 1,
        "{} pending hops kept",
        c.pending.len()
    );
    assert!(
        c.retired.is_empty(),
        "{} retired shards kept",
        c.retired.len()
    );
    assert!(c.out.is_empty());
    for s in &c.shards {
        assert!(
            s.node.is_none_or(|n| c.nodes.contains_key(&n)),
            "a shard points at a departed node: {s:?}"
        );
    }
}
