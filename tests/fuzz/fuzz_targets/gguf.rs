//! Any bytes as a GGUF file: the reader and the importer (config from metadata, tokenizer,
//! tensor shapes) answer with an error or a checkpoint, never a panic; a checkpoint's tensors
//! read back within their declared sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|bytes: &[u8]| {
    // A file per process: the importer maps a path, as `synapse split` does.
    let path = scratch::file("gguf", "model.gguf");
    std::fs::write(path, bytes).expect("writing the input");
    if let Ok(file) = splitter::gguf::GgufFile::open(path) {
        let _ = format!("{file:?}");
    }
    let _ = splitter::open(path);
});
