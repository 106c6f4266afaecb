//! Any text as a node's control message (what the coordinator reads) and as the coordinator's
//! (what a node reads): parsing never panics, and what parses serialises back to a message
//! that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synapse::coordinator::wire::{CoordinatorMessage, MAX_CONTROL_BYTES, NodeMessage};

fuzz_target!(|bytes: &[u8]| {
    if bytes.len() > MAX_CONTROL_BYTES {
        return;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(m) = serde_json::from_str::<NodeMessage>(text) {
        let again = serde_json::to_string(&m).expect("a parsed message serialises");
        let back: NodeMessage = serde_json::from_str(&again).expect("and parses again");
        assert_eq!(m, back);
    }
    if let Ok(m) = serde_json::from_str::<CoordinatorMessage>(text) {
        let again = serde_json::to_string(&m).expect("a parsed message serialises");
        let back: CoordinatorMessage = serde_json::from_str(&again).expect("and parses again");
        assert_eq!(m, back);
    }
});
