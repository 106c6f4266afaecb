//! Trust decided by audits, over plain values: what the core records and closes for the
//! auditor, what it holds back, and what a verdict does (the auditor itself is tested on a
//! real model in tests/audits.rs).

use std::time::Instant;

use super::tests::{
    HIDDEN, done, hello, hidden_reply, left, model, request, sent_frame, settle, top_reply,
};
use super::*;
use crate::coordinator::audit::Mismatch;
use crate::coordinator::auditor::{AuditJob, Finding, Returned, StreamKey, Verdict};
use crate::coordinator::speed::Deadlines;
use crate::coordinator::wire::NodeKind;

fn audited_core(rate: f64, probation_steps: u32) -> Core {
    Core::new(
        CoreConfig {
            deadlines: Deadlines::default(),
            encoding: WireEncoding::F32,
            max_sessions: 4,
            audit: Some(AuditConfig {
                rate,
                probation_steps,
            }),
        },
        model(2),
    )
}

/// Two nodes holding one shard each, and a session.
fn cluster(c: &mut Core, t: Instant) -> (u64, u64, u64) {
    let a = c.node_joined(t, hello("a", 8 << 30, 1.0));
    let b = c.node_joined(t, hello("b", 8 << 30, 1.0));
    settle(c, t);
    let s = c.open_session(1).unwrap();
    c.drain();
    (a, b, s)
}

/// Runs one step at `pos` through both nodes; returns everything the core asked for.
fn step(c: &mut Core, t: Instant, s: u64, pos: usize, a: u64, b: u64) -> Vec<Output> {
    c.begin_step(t, request(c, s, pos, vec![7])).unwrap();
    let mut outs = c.drain();
    let (rid, seq, _) = sent_frame(&outs, a).unwrap();
    c.on_frame(t, a, hidden_reply(rid, seq, 1, HIDDEN as u32))
        .unwrap();
    let o = c.drain();
    let (rid, seq, _) = sent_frame(&o, b).expect("relayed at once, audited or not");
    outs.extend(o);
    c.on_frame(t, b, top_reply(rid, seq, &[9, 8, 7, 6]))
        .unwrap();
    outs.extend(c.drain());
    outs
}

fn jobs(outs: &[Output]) -> Vec<AuditJob> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Audit(j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

/// The windows closed in `outs`: (stream, audit id).
fn closes(outs: &[Output]) -> Vec<(StreamKey, u64)> {
    jobs(outs)
        .into_iter()
        .filter_map(|j| match j {
            AuditJob::Close { key, audit } => Some((key, audit)),
            _ => None,
        })
        .collect()
}

fn verdict(key: StreamKey, audit: u64, node: u64, end: usize, finding: Finding) -> Verdict {
    Verdict {
        audit,
        key,
        node,
        end,
        finding,
    }
}

#[test]
fn probation_holds_a_steps_outcome_until_each_hop_passed_then_trust_lets_it_through() {
    let t = Instant::now();
    let mut c = audited_core(0.0, 2);
    let (a, b, s) = cluster(&mut c, t);
    for pos in 0..2 {
        let outs = step(&mut c, t, s, pos, a, b);
        let recs: Vec<(u64, usize, bool)> = jobs(&outs)
            .into_iter()
            .filter_map(|j| match j {
                AuditJob::Record {
                    node, pos, output, ..
                } => Some((node, pos, matches!(output, Returned::Top(_)))),
                _ => None,
            })
            .collect();
        assert_eq!(
            recs,
            vec![(a, pos, false), (b, pos, true)],
            "both hops recorded with their input"
        );
        let w = closes(&outs);
        assert_eq!(w.len(), 2, "a node on probation is audited on every step");
        assert_eq!(done(&outs), None, "held while its audits run");
        c.audit_done(t, verdict(w[1].0, w[1].1, b, pos + 1, Finding::Passed));
        assert_eq!(done(&c.drain()), None, "hop a's audit still runs");
        c.audit_done(t, verdict(w[0].0, w[0].1, a, pos + 1, Finding::Passed));
        assert!(matches!(done(&c.drain()), Some(Ok(top)) if top.entries[0].id == 9));
    }
    // Both passed two audits: trusted, and at rate 0 never audited again, but still recorded
    // (a later window must be able to recompute every row).
    let outs = step(&mut c, t, s, 2, a, b);
    assert!(matches!(done(&outs), Some(Ok(_))), "not held");
    assert!(closes(&outs).is_empty());
    assert_eq!(jobs(&outs).len(), 2);
    assert_eq!(
        c.status(t)["audits"]["trusted_nodes"],
        serde_json::json!([a, b])
    );
}

#[test]
fn a_failed_audit_of_a_held_step_blames_the_liar_and_bans_it() {
    let t = Instant::now();
    let mut c = audited_core(0.0, 16);
    let (a, b, s) = cluster(&mut c, t);
    let w = closes(&step(&mut c, t, s, 0, a, b));
    let mismatch = Mismatch::Shape {
        ours: 1,
        cols: HIDDEN,
        theirs: 3,
    };
    c.audit_done(
        t,
        verdict(w[0].0, w[0].1, a, 1, Finding::Failed { pos: 0, mismatch }),
    );
    let outs = c.drain();
    match done(&outs) {
        Some(Err(f)) => {
            assert_eq!(f.node, a);
            assert!(f.blamed);
            assert!(f.why.contains("failed an audit at position 0"), "{}", f.why);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(left(&outs), vec![a]);
    assert!(
        c.refusal(t, "a", None).is_some(),
        "refused when it comes back"
    );
    assert_eq!(
        c.take_rollback(s),
        Some(1),
        "the session keeps only the prompt token"
    );
    // b's verdict on the failed step's window arrives late: it changes nothing.
    c.audit_done(t, verdict(w[1].0, w[1].1, b, 1, Finding::Passed));
    assert_eq!(done(&c.drain()), None);
    assert_eq!(c.status(t)["audits"]["failed"], 1);
}

#[test]
fn a_trusted_liar_caught_later_rolls_the_session_back_to_the_bad_position() {
    let t = Instant::now();
    // No probation; every step closes a window but none is held.
    let mut c = audited_core(1.0, 0);
    let (a, b, s) = cluster(&mut c, t);
    let mut windows = Vec::new();
    for pos in 0..4 {
        let outs = step(&mut c, t, s, pos, a, b);
        assert!(
            matches!(done(&outs), Some(Ok(_))),
            "trusted steps are not held"
        );
        windows.extend(closes(&outs));
    }
    // a's first two windows pass, the third finds a lie at position 2.
    let of_a: Vec<_> = windows.iter().filter(|(k, _)| k.first == 0).collect();
    c.audit_done(t, verdict(of_a[0].0, of_a[0].1, a, 1, Finding::Passed));
    c.audit_done(t, verdict(of_a[1].0, of_a[1].1, a, 2, Finding::Passed));
    let mismatch = Mismatch::Shape {
        ours: 1,
        cols: HIDDEN,
        theirs: 3,
    };
    c.audit_done(
        t,
        verdict(
            of_a[2].0,
            of_a[2].1,
            a,
            3,
            Finding::Failed { pos: 2, mismatch },
        ),
    );
    assert_eq!(left(&c.drain()), vec![a]);
    assert_eq!(
        c.take_rollback(s),
        Some(3),
        "tokens after the one row 2 predicted are gone"
    );
    assert_eq!(c.take_rollback(s), None, "taken once");
}

#[test]
fn a_verified_session_flushes_every_stream_and_waits_for_the_verdicts() {
    let t = Instant::now();
    let mut c = audited_core(0.0, 0);
    let (a, b, s) = cluster(&mut c, t);
    c.verify_session(s);
    let mut forced = Vec::new();
    for pos in 0..VERIFIED_EVERY + 2 {
        forced.extend(closes(&step(&mut c, t, s, pos, a, b)));
    }
    assert_eq!(
        forced.len(),
        2,
        "one window per stream every {VERIFIED_EVERY} steps"
    );
    assert_eq!(c.audits_pending(s), 2);
    assert_eq!(c.flush_audits(s), 4, "the last two steps of each stream");
    let flushed = closes(&c.drain());
    assert_eq!(flushed.len(), 2);
    assert_eq!(c.flush_audits(s), 4, "nothing new to close");
    assert!(closes(&c.drain()).is_empty());
    for (i, (key, audit)) in forced.iter().chain(&flushed).enumerate() {
        let node = if key.first == 0 { a } else { b };
        c.audit_done(t, verdict(*key, *audit, node, 10, Finding::Passed));
        assert_eq!(c.audits_pending(s), 3 - i);
    }
    assert_eq!(c.take_rollback(s), None);
}

#[test]
fn the_coordinators_own_node_is_not_audited() {
    let t = Instant::now();
    let mut c = audited_core(1.0, 16);
    let mut h = hello("here", 8 << 30, 1.0);
    h.kind = NodeKind::Local;
    let a = c.node_joined(t, h);
    settle(&mut c, t);
    let s = c.open_session(1).unwrap();
    c.drain();
    c.begin_step(t, request(&c, s, 0, vec![7])).unwrap();
    // One hop: the node holds both shards.
    let (rid, seq, _) = sent_frame(&c.drain(), a).unwrap();
    c.on_frame(t, a, top_reply(rid, seq, &[9, 8, 7, 6]))
        .unwrap();
    let outs = c.drain();
    assert!(jobs(&outs).is_empty());
    assert!(matches!(done(&outs), Some(Ok(_))));
}

#[test]
fn the_next_hop_of_a_step_failed_by_an_audit_is_not_blamed_for_its_late_reply() {
    let t = Instant::now();
    let mut c = audited_core(0.0, 16);
    let (a, b, s) = cluster(&mut c, t);
    c.begin_step(t, request(&c, s, 0, vec![7])).unwrap();
    let (rid, seq, _) = sent_frame(&c.drain(), a).unwrap();
    c.on_frame(t, a, hidden_reply(rid, seq, 1, HIDDEN as u32))
        .unwrap();
    let outs = c.drain();
    let (rid_b, seq_b, _) = sent_frame(&outs, b).unwrap();
    let (key, audit) = closes(&outs)[0];
    let mismatch = Mismatch::Shape {
        ours: 1,
        cols: HIDDEN,
        theirs: 3,
    };
    // a's audit fails while b still computes the step.
    c.audit_done(
        t,
        verdict(key, audit, a, 1, Finding::Failed { pos: 0, mismatch }),
    );
    assert!(matches!(done(&c.drain()), Some(Err(f)) if f.node == a && f.blamed));
    assert_eq!(c.pending_hops(), 0, "nobody waits for b's reply");
    c.on_frame(t, b, top_reply(rid_b, seq_b, &[9, 8, 7, 6]))
        .expect("b's reply was asked for: it is dropped, not a violation");
    let outs = c.drain();
    assert!(left(&outs).is_empty());
    assert_eq!(done(&outs), None);
}
