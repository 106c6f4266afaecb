//! SYN1 integration tests: golden bytes, the fixture manifest, the malformed-input corpus,
//! delta drift, and proptest fuzzing of the decoder.
//!
//! Fixtures live in tests/fixtures/syn1/ (node-web's decoder is tested against the same
//! files). To regenerate them after a deliberate format change, run
//! `SYN1_BLESS=1 cargo test --test protocol`, then review the diff: every golden test also
//! pins its bytes inline, so blessing cannot silently change them.

// The crate root resolves modules beside itself, so the parts under tests/protocol/ are named
// by path (Cargo does not build files in that folder as tests of their own).
#[path = "protocol/corpus.rs"]
mod corpus;
#[path = "protocol/delta.rs"]
mod delta;
#[path = "protocol/fuzz.rs"]
mod fuzz;
#[path = "protocol/golden.rs"]
mod golden;
#[path = "protocol/manifest.rs"]
mod manifest;

use std::path::PathBuf;

/// tests/fixtures/syn1/.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syn1")
}

/// Whether SYN1_BLESS=1 asks the tests to rewrite the fixtures.
pub fn bless() -> bool {
    std::env::var("SYN1_BLESS").is_ok_and(|v| v == "1")
}

/// Checks that the fixture at `path` holds `bytes` (or writes it when blessing).
pub fn check_fixture(path: &std::path::Path, bytes: &[u8]) {
    if bless() {
        std::fs::create_dir_all(path.parent().expect("fixture has a parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write fixture");
        return;
    }
    let on_disk = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run SYN1_BLESS=1 cargo test --test protocol",
            path.display()
        )
    });
    assert_eq!(
        on_disk,
        bytes,
        "{} differs from the encoding; bless if intended",
        path.display()
    );
}

/// Checks that the JSON fixture at `path` parses to `value` (or writes it when blessing).
pub fn check_json_fixture(path: &std::path::Path, value: &serde_json::Value) {
    if bless() {
        let text = serde_json::to_string_pretty(value).expect("json") + "\n";
        check_fixture(path, text.as_bytes());
        return;
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run SYN1_BLESS=1 cargo test --test protocol",
            path.display()
        )
    });
    let on_disk: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    assert_eq!(
        &on_disk,
        value,
        "{} is stale; bless if intended",
        path.display()
    );
}
