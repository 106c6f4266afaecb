//! The cost model: how long one step takes on one hop (a device running its consecutive
//! shards), split into compute and network, and how many bytes cross the hop.
//!
//! A step of `t` tokens at position `pos` on a device costs, per layer it holds: a fixed
//! overhead, reading the layer's weights once (`bytes / bandwidth`, or the matrix-vector
//! compute if that is slower), the extra tokens at matrix-matrix speed, and attention over the
//! `pos + t` cached positions. The last shard adds the head for the last row only. The hop's
//! network is one round trip plus both frames at the link's bandwidth; the frames' sizes come
//! from SYN1 (`protocol::encoded_size`) and, for RICE, from the bytes per row measured in
//! docs/PERF.md.

use serde::Serialize;

use super::model::{ModelShape, PartCost, ShardShape};
use super::profile::DeviceProfile;
use crate::coordinator::wire::WireEncoding;
use crate::protocol::{self, Encoding, HEADER_SIZE, TOKEN_ID_SIZE, TOP_LOGIT_ENTRY_SIZE};

/// RICE bytes per hidden value, measured on SmolLM2's hidden states at the default ratio
/// (docs/PERF.md, "Wire encodings": 554.7 bytes a 576-wide row, 24 of them the header).
pub const RICE_BYTES_PER_VALUE: f64 = (554.7 - 24.0) / 576.0;
/// The coordinator's own work per hop: the `step` message, relaying the frame, the event.
pub const COORDINATOR_HOP_MS: f64 = 0.15;
/// The coordinator's work per step: sampling from the top-k, detokenizing, streaming.
pub const COORDINATOR_STEP_MS: f64 = 0.3;

/// Bytes of a hidden-state frame of `rows` rows of `cols` values.
pub fn activation_bytes(encoding: WireEncoding, rows: usize, cols: usize) -> u64 {
    let exact = |e: Encoding| protocol::encoded_size(e, rows as u32, cols as u32);
    match encoding {
        WireEncoding::F32 => exact(Encoding::F32),
        WireEncoding::Int8 => exact(Encoding::Int8),
        WireEncoding::Rice => None,
    }
    .unwrap_or_else(|| {
        HEADER_SIZE as u64 + rows as u64 * (RICE_BYTES_PER_VALUE * cols as f64).ceil() as u64
    })
}

/// Bytes of a token-id frame.
pub fn tokens_bytes(n: usize) -> u64 {
    (HEADER_SIZE + n * TOKEN_ID_SIZE) as u64
}

/// Bytes of a top-logits frame of `k` entries.
pub fn top_logits_bytes(k: usize) -> u64 {
    (HEADER_SIZE + k * TOP_LOGIT_ENTRY_SIZE) as u64
}

/// One hop of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HopTime {
    /// On the device: its layers, head, fixed costs.
    pub compute_s: f64,
    /// Round trip, both frames on the link, the coordinator's relay.
    pub network_s: f64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

impl HopTime {
    pub fn total_s(&self) -> f64 {
        self.compute_s + self.network_s
    }
}

/// The weights of one part for a step of `t` tokens.
fn weights_s(c: PartCost, p: &DeviceProfile, t: usize) -> f64 {
    let flops = 2.0 * c.macs as f64;
    let first = (c.bytes as f64 / (p.bandwidth_gbs * 1e9)).max(flops / (p.matvec_gflops * 1e9));
    first + (t.saturating_sub(1)) as f64 * flops / (p.matmul_gflops * 1e9)
}

/// Causal attention of one layer for `t` new tokens after `pos` cached ones.
fn attention_s(m: &ModelShape, p: &DeviceProfile, t: usize, pos: usize) -> f64 {
    let q_dim = (m.config.n_heads * m.config.head_dim) as f64;
    let (t, pos) = (t as f64, pos as f64);
    // Scores and weighted values: 2 products of q_dim per (query, key) pair, 2 flops each.
    let flops = 4.0 * q_dim * (t * pos + t * (t + 1.0) / 2.0);
    let cache = m.kv_bytes_per_position(p.kv_bytes_per_value) as f64 * (pos + t);
    let read = cache / (p.bandwidth_gbs * 1e9);
    if t <= 1.0 {
        read.max(flops / (p.matvec_gflops * 1e9))
    } else {
        read + flops / (p.matmul_gflops * 1e9)
    }
}

/// Compute time of a step of `t` tokens at `pos` on `p`, for the consecutive `shards` it runs.
pub fn compute_s(
    m: &ModelShape,
    shards: &[&ShardShape],
    p: &DeviceProfile,
    t: usize,
    pos: usize,
) -> f64 {
    let mut s = p.step_overhead_ms / 1e3;
    for sh in shards {
        for l in sh.layer_range() {
            s +=
                p.layer_overhead_us / 1e6 + weights_s(m.layer(l), p, t) + attention_s(m, p, t, pos);
        }
        if sh.has_embedding {
            // A lookup: t rows of the table.
            let row = m.embedding().bytes as f64 / m.config.vocab_size as f64;
            s += t as f64 * row / (p.bandwidth_gbs * 1e9);
        }
        if sh.has_head {
            // Logits for the last row only, then the top-k; the head matrix is read whether it
            // is a copy of a tied embedding or the embedding itself.
            s += p.layer_overhead_us / 1e6 + weights_s(m.head(true), p, 1);
        }
    }
    s
}

/// One hop of a step: `first`/`last` say whether it receives token ids and returns logits.
#[allow(clippy::too_many_arguments)]
pub fn hop(
    m: &ModelShape,
    shards: &[&ShardShape],
    p: &DeviceProfile,
    t: usize,
    pos: usize,
    first: bool,
    last: bool,
    encoding: WireEncoding,
    top_k: usize,
) -> HopTime {
    let hidden = m.config.hidden_size;
    let bytes_out = if first {
        tokens_bytes(t)
    } else {
        activation_bytes(encoding, t, hidden)
    };
    let bytes_in = if last {
        top_logits_bytes(top_k)
    } else {
        activation_bytes(encoding, t, hidden)
    };
    let wire = (bytes_out + bytes_in) as f64 * 8.0 / (p.link_mbps * 1e6);
    HopTime {
        compute_s: compute_s(m, shards, p, t, pos),
        network_s: p.rtt_ms / 1e3 + wire + COORDINATOR_HOP_MS / 1e3,
        bytes_out,
        bytes_in,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::WeightType;
    use crate::sim::profile::{CPU_LAYER_OVERHEAD_US, CPU_STEP_OVERHEAD_MS};

    fn cpu(gflops: f64) -> DeviceProfile {
        DeviceProfile::from_hello(
            "cpu",
            crate::coordinator::wire::NodeKind::Local,
            "CPU",
            1 << 34,
            gflops,
        )
    }

    #[test]
    fn rice_rows_are_the_measured_size() {
        assert_eq!(activation_bytes(WireEncoding::Rice, 1, 576), 24 + 531);
        assert_eq!(activation_bytes(WireEncoding::F32, 1, 576), 2328);
        assert_eq!(activation_bytes(WireEncoding::Int8, 1, 576), 604);
        assert_eq!(tokens_bytes(5), 44);
        assert_eq!(top_logits_bytes(64), 24 + 512);
    }

    #[test]
    fn decode_on_a_cpu_reads_every_weight_once() {
        // SmolLM2 on a 6 GFLOP/s CPU node: 2 x 134.5 M multiply-adds = ~45 ms a token, the
        // measured 22 tok/s of docs/PERF.md.
        let m = ModelShape::preset("SmolLM2-135M", WeightType::F16).unwrap();
        let shards = m.plan(1).unwrap();
        let p = cpu(6.0);
        let s = compute_s(&m, &[&shards[0]], &p, 1, 10);
        let fixed = CPU_STEP_OVERHEAD_MS / 1e3 + 31.0 * CPU_LAYER_OVERHEAD_US / 1e6;
        assert!((0.043..0.048).contains(&(s - fixed)), "{s}");
        // Prefill costs more in total and less per token.
        let pre = compute_s(&m, &[&shards[0]], &p, 128, 0);
        assert!(pre > 10.0 * s && pre < 128.0 * s, "{pre} vs {s}");
    }

    #[test]
    fn split_compute_adds_up_and_the_network_is_per_hop() {
        let m = ModelShape::preset("SmolLM2-135M", WeightType::F16).unwrap();
        let one = m.plan(1).unwrap();
        let three = m.plan(3).unwrap();
        let p = cpu(6.0);
        let whole = compute_s(&m, &[&one[0]], &p, 1, 0);
        let parts: f64 = three.iter().map(|s| compute_s(&m, &[s], &p, 1, 0)).sum();
        // Three shards pay the step overhead three times and the tied head's copy is the same
        // work: within a millisecond.
        assert!((parts - whole).abs() < 1.5e-3, "{parts} vs {whole}");
        let h = hop(
            &m,
            &[&three[1]],
            &p,
            1,
            0,
            false,
            false,
            WireEncoding::Rice,
            64,
        );
        assert_eq!(h.bytes_out, h.bytes_in);
        assert!(h.network_s > p.rtt_ms / 1e3);
    }
}
