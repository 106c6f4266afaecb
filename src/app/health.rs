//! The pipeline's health over time, for the plots: tokens sampled per second (all sessions),
//! and each link's round-trip time per hop. Built from `TokenSampled` and `FrameRelayed`.

use std::collections::{BTreeMap, VecDeque};

use bevy::prelude::*;

use super::AppStage;
use super::bridge::{CoreMessage, FromCore};
use crate::coordinator::events::Event;

/// Points kept per series (at one a second for throughput: ten minutes).
pub const HISTORY: usize = 600;

/// Time series as `[app seconds, value]` points.
#[derive(Resource, Debug, Default)]
pub struct History {
    /// Tokens sampled per second, one point per elapsed second.
    pub tokens_per_second: VecDeque<[f64; 2]>,
    /// Per node: round trip of each hop, in milliseconds.
    pub hop_ms: BTreeMap<u64, VecDeque<[f64; 2]>>,
    /// Tokens counted in the current second, and which second that is.
    counting: (u64, i64),
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<History>()
        .add_systems(Update, record.in_set(AppStage::Traffic));
}

fn push(q: &mut VecDeque<[f64; 2]>, p: [f64; 2]) {
    q.push_back(p);
    while q.len() > HISTORY {
        q.pop_front();
    }
}

fn record(mut msgs: MessageReader<FromCore>, mut h: ResMut<History>, time: Res<Time>) {
    let now = time.elapsed_secs_f64();
    let second = now.floor() as i64;
    // Close the seconds that ended (empty ones count as zero).
    let (mut count, mut current) = h.counting;
    while current < second {
        push(
            &mut h.tokens_per_second,
            [current as f64 + 1.0, count as f64],
        );
        count = 0;
        current = if second - current > HISTORY as i64 {
            second
        } else {
            current + 1
        };
    }
    for FromCore(m) in msgs.read() {
        match m {
            CoreMessage::Event(Event::TokenSampled { .. }) => count += 1,
            CoreMessage::Event(Event::FrameRelayed { node, micros, .. }) => {
                let q = h.hop_ms.entry(*node).or_default();
                push(q, [now, *micros as f64 / 1000.0]);
            }
            CoreMessage::Event(Event::NodeLeft { node, .. }) => {
                h.hop_ms.remove(node);
            }
            _ => {}
        }
    }
    h.counting = (count, current);
}
