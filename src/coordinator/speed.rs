//! What a node claims against what it does: plausibility bounds on the memory and speed a
//! node reports, the work a step asks of a node, the deadlines that follow from that work, and
//! the speed the coordinator learns from step times. Plain functions and values, so the rules
//! are unit-tested without sockets.
//!
//! Work is counted in the unit nodes measure their speed in (`measure_cpu_gflops`, the GPU
//! probe: a matrix-vector product over f16 weights, two flops per weight = one flop per weight
//! byte): a step of `rows` tokens through shards holding `bytes` of layer weights is about
//! `rows * bytes` flops, plus the output head once (logits for the last row), plus attention,
//! `4 * rows * (pos + rows) * hidden` per layer; an embedding lookup reads one row of its table
//! and counts nothing. Counting the tables as every row's work made a prefill on the head's
//! node look 50x faster than its decode, and learned speeds moved shards mid-generation.

use std::time::Duration;

/// Most memory a node may claim (2 TiB, the largest servers); more is clamped to this.
pub const MAX_CLAIMED_MEMORY: u64 = 2 << 40;
/// Fastest speed a node may claim, in GFLOP/s (20x an H200's matrix-vector rate); more is
/// clamped to this.
pub const MAX_CLAIMED_GFLOPS: f64 = 100_000.0;
/// Slowest speed assumed for a node (a claim below it, zero, or not finite becomes this).
pub const MIN_GFLOPS: f64 = 0.001;
/// Steps with less work than this (flops) teach nothing about speed: their time is the
/// network's round trip, not compute (the tiny test models).
pub const MIN_LEARN_WORK: f64 = 1e7;
/// Weight of a new sample in the learned speed (exponential moving average).
pub const LEARN_ALPHA: f64 = 0.25;
/// Samples before the learned speed replaces the claimed one.
pub const LEARN_MIN_SAMPLES: u32 = 3;
/// A speed that moved by this factor from the one placement last used triggers a rebalance.
pub const REPLACE_FACTOR: f64 = 1.5;

/// A claimed memory size made plausible.
pub fn bounded_memory(claimed: u64) -> u64 {
    claimed.min(MAX_CLAIMED_MEMORY)
}

/// A claimed speed made plausible: finite, at least [`MIN_GFLOPS`], at most
/// [`MAX_CLAIMED_GFLOPS`].
pub fn bounded_gflops(claimed: f64) -> f64 {
    if claimed.is_finite() {
        claimed.clamp(MIN_GFLOPS, MAX_CLAIMED_GFLOPS)
    } else {
        MIN_GFLOPS
    }
}

/// Estimated flops of a step of `rows` tokens at position `pos` through `layers` layers whose
/// shards hold `row_bytes` of weights every row reads and `step_bytes` read once a step (the
/// output head, logits for the last row), for a model of width `hidden`.
pub fn step_work(
    rows: usize,
    pos: usize,
    row_bytes: u64,
    step_bytes: u64,
    layers: usize,
    hidden: usize,
) -> f64 {
    let rows = rows as f64;
    let attention = 4.0 * rows * (pos as f64 + rows) * hidden as f64 * layers as f64;
    rows * row_bytes as f64 + step_bytes as f64 + attention
}

/// How long steps and loads may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Deadlines {
    /// Every step deadline is at least this (network, scheduling, a first step compiling
    /// shaders).
    pub step_floor: Duration,
    /// Expected compute time is multiplied by this (speed measured once, machines shared).
    pub step_margin: f64,
    /// Every load deadline is at least this.
    pub load_floor: Duration,
    /// Slowest download (and load) rate a working node is expected to reach, bytes/s; a load
    /// of `b` bytes may take `load_floor + b / load_bandwidth`.
    pub load_bandwidth: f64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            step_floor: Duration::from_secs(10),
            step_margin: 4.0,
            load_floor: Duration::from_secs(30),
            // 1 MB/s: a poor Wi-Fi link; a 100 MB shard gets 130 s.
            load_bandwidth: 1e6,
        }
    }
}

impl Deadlines {
    /// Time a node running at `gflops` may take for `work` flops, `queued` flops of earlier
    /// steps being ahead of it on the same node (nodes run steps one at a time, in order).
    pub fn step(&self, work: f64, queued: f64, gflops: f64) -> Duration {
        let secs = self.step_margin * (work + queued) / (gflops.max(MIN_GFLOPS) * 1e9);
        self.step_floor + Duration::from_secs_f64(secs.clamp(0.0, 1e7))
    }

    /// Time a node may take to download and load `bytes`.
    pub fn load(&self, bytes: u64) -> Duration {
        let secs = bytes as f64 / self.load_bandwidth.max(1.0);
        self.load_floor + Duration::from_secs_f64(secs.clamp(0.0, 1e7))
    }
}

/// A node's speed: what it claimed and what its steps showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Speed {
    /// The node's claim, bounded.
    claimed: f64,
    /// Smoothed work / time of its steps, GFLOP/s.
    learned: f64,
    samples: u32,
    /// The speed placement last used for this node.
    placed_with: f64,
}

impl Speed {
    /// A node that claims `gflops`.
    pub fn new(gflops: f64) -> Speed {
        let claimed = bounded_gflops(gflops);
        Speed {
            claimed,
            learned: 0.0,
            samples: 0,
            placed_with: claimed,
        }
    }

    /// The node's claim, bounded.
    pub fn claimed(&self) -> f64 {
        self.claimed
    }

    /// The learned speed once enough steps were seen.
    pub fn learned(&self) -> Option<f64> {
        (self.samples >= LEARN_MIN_SAMPLES).then_some(self.learned)
    }

    /// Samples learned from.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// The speed placement uses: learned once known, else the claim.
    pub fn effective(&self) -> f64 {
        self.learned().unwrap_or(self.claimed)
    }

    /// The speed deadlines assume: the slower of claim and evidence, so a node that claims
    /// more than it does gets no longer than its evidence allows, and one that does more than
    /// it claims is not cut short.
    pub fn for_deadlines(&self) -> f64 {
        match self.learned() {
            Some(l) => l.min(self.claimed).max(MIN_GFLOPS),
            None => self.claimed,
        }
    }

    /// A new claim (the node measured itself again).
    pub fn reclaim(&mut self, gflops: f64) {
        self.claimed = bounded_gflops(gflops);
    }

    /// A step of `work` flops took `time` of the node's own time. Returns true when the
    /// speed placement should use moved by [`REPLACE_FACTOR`] or more since placement last
    /// looked (then placement should look again; [`Speed::placed`] records that it did).
    pub fn observe(&mut self, work: f64, time: Duration) -> bool {
        let secs = time.as_secs_f64();
        if work < MIN_LEARN_WORK || secs <= 0.0 {
            return self.moved();
        }
        let g = (work / secs / 1e9).clamp(MIN_GFLOPS, MAX_CLAIMED_GFLOPS);
        self.learned = if self.samples == 0 {
            g
        } else {
            LEARN_ALPHA * g + (1.0 - LEARN_ALPHA) * self.learned
        };
        self.samples = self.samples.saturating_add(1);
        self.moved()
    }

    /// Whether the effective speed moved enough from what placement last used.
    pub fn moved(&self) -> bool {
        let (now, then) = (self.effective(), self.placed_with.max(MIN_GFLOPS));
        now / then >= REPLACE_FACTOR || then / now >= REPLACE_FACTOR
    }

    /// Placement looked at the current speed.
    pub fn placed(&mut self) {
        self.placed_with = self.effective();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_claims_are_bounded() {
        assert_eq!(bounded_memory(1 << 63), MAX_CLAIMED_MEMORY);
        assert_eq!(bounded_memory(8 << 30), 8 << 30);
        assert_eq!(bounded_gflops(1e30), MAX_CLAIMED_GFLOPS);
        assert_eq!(bounded_gflops(f64::NAN), MIN_GFLOPS);
        assert_eq!(bounded_gflops(-3.0), MIN_GFLOPS);
        assert_eq!(bounded_gflops(6.5), 6.5);
    }

    #[test]
    fn step_deadlines_grow_with_work_and_queue() {
        let d = Deadlines::default();
        // SmolLM2-like hop: 90 MB of weights, 15 layers, width 576, a node at 5 GFLOP/s.
        let decode = step_work(1, 100, 90_000_000, 0, 15, 576);
        let prefill = step_work(5000, 0, 90_000_000, 0, 15, 576);
        assert!(prefill > 4000.0 * decode, "{prefill} vs {decode}");
        let short = d.step(decode, 0.0, 5.0);
        let long = d.step(prefill, 0.0, 5.0);
        assert!(
            short < d.step_floor + Duration::from_millis(100),
            "{short:?}"
        );
        // 5000 tokens: 4.5e11 (weights) + 8.6e11 (attention) flops, ~260 s at 5 GFLOP/s,
        // times the margin.
        assert!(long > Duration::from_secs(400), "{long:?}");
        let behind = d.step(decode, prefill, 5.0);
        assert!(
            behind > long,
            "a step queued behind a prefill gets its time too"
        );
        // A liar's 1e30 is bounded, so its deadline is the floor: it cannot stall for longer.
        assert_eq!(d.step(prefill, 0.0, bounded_gflops(1e30)).as_secs(), 10);
    }

    #[test]
    fn load_deadlines_follow_size() {
        let d = Deadlines::default();
        assert_eq!(d.load(0), d.load_floor);
        assert_eq!(d.load(100_000_000), d.load_floor + Duration::from_secs(100));
    }

    #[test]
    fn learned_speed_replaces_the_claim_after_a_few_steps() {
        // A node that measured itself at 1.7 GFLOP/s while others loaded, really at 6.
        let mut s = Speed::new(1.7);
        let work = 6e9 * 0.015; // 15 ms steps at 6 GFLOP/s
        assert!(!s.observe(work, Duration::from_millis(15)));
        assert!(!s.observe(work, Duration::from_millis(15)));
        assert_eq!(s.effective(), 1.7, "two samples are not enough");
        assert!(
            s.observe(work, Duration::from_millis(15)),
            "3.5x faster: re-place"
        );
        assert!((s.effective() - 6.0).abs() < 1e-6, "{}", s.effective());
        s.placed();
        assert!(!s.moved());
        // Noise does not trigger re-placement; a lasting change does.
        assert!(!s.observe(work, Duration::from_millis(20)));
        for _ in 0..20 {
            s.observe(work, Duration::from_millis(60));
        }
        assert!(s.moved(), "now 4x slower: {}", s.effective());
        assert!((s.effective() - 1.5).abs() < 0.1, "{}", s.effective());
    }

    #[test]
    fn tiny_steps_teach_nothing_and_deadlines_take_the_slower_speed() {
        let mut s = Speed::new(1e30);
        for _ in 0..10 {
            s.observe(1e5, Duration::from_millis(1));
        }
        assert_eq!(s.samples(), 0);
        for _ in 0..3 {
            s.observe(2e8, Duration::from_millis(100)); // 2 GFLOP/s
        }
        assert!((s.effective() - 2.0).abs() < 1e-9);
        assert!(
            (s.for_deadlines() - 2.0).abs() < 1e-9,
            "the claim is not believed"
        );
        let mut modest = Speed::new(1.0);
        for _ in 0..3 {
            modest.observe(2e8, Duration::from_millis(100));
        }
        assert_eq!(
            modest.for_deadlines(),
            1.0,
            "a node faster than it claims keeps its claim's time"
        );
    }
}
