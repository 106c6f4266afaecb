//! Any bytes as a GGUF file: the reader and the importer (config from metadata, tokenizer,
//! tensor shapes) answer with an error or a checkpoint, never a panic; a checkpoint's tensors
//! read back within their declared sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // A file per process: the importer maps a path, as `synapse split` does.
    let dir = std::env::temp_dir().join(format!("synapse-fuzz-gguf-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).expect("writing the input");
    if let Ok(file) = splitter::gguf::GgufFile::open(&path) {
        let _ = format!("{file:?}");
    }
    let _ = splitter::open(&path);
});
