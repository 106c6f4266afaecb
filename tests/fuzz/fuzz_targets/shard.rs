//! Any bytes as a shard file: the engine's shard reader answers with an error or tensors that
//! match the manifest's types and shapes, never a panic. The manifests the file is checked
//! against are real ones (`SYNAPSE_FUZZ_MANIFESTS`: paths of manifest.json files, separated by
//! `:`, written by tests/fuzz/run.sh: an f16 split and a q4_1 split of the synthetic llama),
//! with each shard's size set to the input's, so every input reaches the safetensors parser.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;
use splitter::{Manifest, ShardInfo};

fn shards() -> &'static [ShardInfo] {
    static SHARDS: OnceLock<Vec<ShardInfo>> = OnceLock::new();
    SHARDS.get_or_init(|| {
        let paths = std::env::var("SYNAPSE_FUZZ_MANIFESTS")
            .expect("SYNAPSE_FUZZ_MANIFESTS names the manifests (tests/fuzz/run.sh sets it)");
        paths
            .split(':')
            .flat_map(|p| {
                let dir = std::path::Path::new(p).parent().expect("a manifest.json path");
                Manifest::load(dir).expect("a valid seed manifest").shards
            })
            .collect()
    })
}

fuzz_target!(|bytes: &[u8]| {
    let path = scratch::file("shard", "shard.safetensors");
    std::fs::write(path, bytes).expect("writing the input");
    for info in shards() {
        let info = ShardInfo {
            bytes: bytes.len() as u64,
            ..info.clone()
        };
        let _ = synapse::engine::weights::ShardTensors::load(path, &info);
    }
});
