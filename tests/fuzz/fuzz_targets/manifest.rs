//! Any bytes as a model directory's manifest.json: loading answers with an error or a manifest
//! that passed validation (shards tile the layers, config sane), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let dir = std::env::temp_dir().join(format!("synapse-fuzz-manifest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join("manifest.json"), bytes).expect("writing the input");
    if let Ok(m) = splitter::Manifest::load(&dir) {
        for s in &m.shards {
            let _ = s.layer_range();
        }
    }
});
