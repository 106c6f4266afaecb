//! Any bytes as a model directory's manifest.json: loading answers with an error or a manifest
//! that passed validation (shards tile the layers, config sane), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|bytes: &[u8]| {
    let path = scratch::file("manifest", "manifest.json");
    std::fs::write(path, bytes).expect("writing the input");
    if let Ok(m) = splitter::Manifest::load(path.parent().expect("a directory")) {
        for s in &m.shards {
            let _ = s.layer_range();
        }
    }
});
