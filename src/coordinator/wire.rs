//! The JSON control messages between the coordinator and its nodes (WebSocket text frames).
//! Activations, token ids and top logits travel as SYN1 binary frames (`crate::protocol`);
//! a `step` control message announces each binary frame that follows it, with the same
//! request id. Documented in docs/PROTOCOL.md ("Node control messages").

use serde::{Deserialize, Serialize};

/// Version of this control vocabulary; a node speaking another is refused.
pub const CONTROL_VERSION: u32 = 1;
/// Largest control message accepted, in bytes.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;

/// What kind of device a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A browser tab (WebGPU).
    Browser,
    /// A `synapse node` process.
    Native,
    /// A node started inside the coordinator's process (`--local-nodes`).
    Local,
}

/// How a node's hidden-state output is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireEncoding {
    F32,
    Int8,
    /// SYN1 RICE (quantization 3): entropy-coded, one step a row (docs/PROTOCOL.md).
    Rice,
}

impl WireEncoding {
    /// The SYN1 encoding this names.
    pub fn protocol(self) -> crate::protocol::Encoding {
        match self {
            WireEncoding::F32 => crate::protocol::Encoding::F32,
            WireEncoding::Int8 => crate::protocol::Encoding::Int8,
            WireEncoding::Rice => crate::protocol::Encoding::Rice,
        }
    }
}

/// What the last shard of a step returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutputKind {
    /// Hidden states of the last row(s), for the next node.
    Hidden { encoding: WireEncoding },
    /// The top `k` logits of each of the step's last `rows` positions (1 unless the step
    /// verifies speculative drafts: then a row per drafted token).
    TopK {
        k: usize,
        #[serde(default = "one_row")]
        rows: usize,
    },
}

/// Messages a node sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMessage {
    /// First message after connecting: who the node is and what it can hold.
    Hello {
        version: u32,
        name: String,
        kind: NodeKind,
        /// `cpu` or `gpu`.
        backend: String,
        /// The adapter (GPU name, or the CPU).
        adapter: String,
        /// Memory the node offers for weights and caches.
        memory_bytes: u64,
        /// Measured speed of a quick matrix-vector benchmark.
        gflops: f64,
    },
    /// Download/load progress of a shard, 0 to 1 (a number beyond f32's range is refused: it
    /// would not even serialise back).
    ShardProgress {
        shard: usize,
        #[serde(deserialize_with = "finite_f32")]
        fraction: f32,
    },
    /// The shard is loaded and can run steps.
    ShardReady { shard: usize },
    /// The shard could not be loaded.
    ShardFailed { shard: usize, error: String },
    /// A step could not run; the coordinator treats the session's route as broken.
    StepFailed { step: u32, error: String },
    /// What the node really holds: weights of its loaded shards and KV caches of open
    /// sessions, in bytes; sent when it changes (at most about once a second). `gflops`: a new
    /// measure of its speed, taken while idle (optional).
    Report {
        weights_bytes: u64,
        kv_bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gflops: Option<f64>,
    },
}

/// Messages the coordinator sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoordinatorMessage {
    /// Reply to `hello`: the node's id and the model it will serve.
    Welcome {
        node_id: u64,
        manifest: Box<splitter::Manifest>,
    },
    /// Download (from `url`, relative to the coordinator) and load shard `shard`.
    Load {
        shard: usize,
        url: String,
        sha256: String,
        bytes: u64,
    },
    /// Drop shard `shard` and its caches.
    Unload { shard: usize },
    /// Run shards `first..=last` for `session` at position `pos`; the binary frame with
    /// request id `step` follows. The session's caches are created on first use.
    Step {
        step: u32,
        session: u64,
        pos: usize,
        first: usize,
        last: usize,
        output: StepOutputKind,
    },
    /// Free `session`'s caches on every shard of the node.
    Close { session: u64 },
    /// Keep only the first `len` tokens of `session`'s caches on every shard of the node (the
    /// rest held rejected speculative drafts); the session's next step is at position `len`.
    /// No reply: a `len` beyond what a shard holds makes that next step fail.
    Truncate { session: u64, len: usize },
}

fn one_row() -> usize {
    1
}

/// An f32 field that must be finite as an f32 (JSON numbers beyond its range would become
/// infinity, which JSON cannot write back).
fn finite_f32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = f64::deserialize(d)?;
    let f = v as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(serde::de::Error::custom(format!(
            "{v:e} is not a finite 32-bit number"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the node_messages fuzz target (tests/fixtures/fuzz/artifacts/node_messages/):
    /// a fraction beyond f32's range parsed as infinity and serialised as `null`.
    #[test]
    fn a_progress_fraction_beyond_f32_is_refused_with_its_value() {
        let text = r#"{"type":"shard_progress","shard":1,"fraction":8.9e123}"#;
        let err = serde_json::from_str::<NodeMessage>(text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("8.9e123 is not a finite 32-bit number"),
            "{err}"
        );
        let ok: NodeMessage =
            serde_json::from_str(r#"{"type":"shard_progress","shard":1,"fraction":0.5}"#).unwrap();
        assert_eq!(
            ok,
            NodeMessage::ShardProgress {
                shard: 1,
                fraction: 0.5
            }
        );
        let crash = include_str!(
            "../../tests/fixtures/fuzz/artifacts/node_messages/crash-7b5ddc6f566ca65c1ab7acade4a68c4a3d6b51be"
        );
        assert!(serde_json::from_str::<NodeMessage>(crash).is_err());
    }
}
