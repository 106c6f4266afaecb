//! Any bytes through the SYN1 decoder and every typed reader: nothing panics, and a frame the
//! decoder accepts re-encodes to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synapse::protocol::*;

fuzz_target!(|bytes: &[u8]| {
    let limits = Limits::default();
    let Ok(frame) = decode(bytes, &limits) else {
        return;
    };
    assert_eq!(encode(&frame), bytes, "an accepted frame re-encodes to its bytes");
    let _ = read_activation(&frame, &limits);
    let _ = Activation::from_frame(&frame, &limits);
    let _ = Tokens::from_frame(&frame, &limits);
    let _ = TopLogits::from_frame(&frame, &limits);
    let _ = Control::from_frame(&frame, &limits);
    // A delta frame against a fresh decoder (no reference yet), then the same frame again
    // once it may have become the reference.
    let mut delta = DeltaDecoder::default();
    let _ = delta.decode(&frame, &limits);
    let _ = delta.decode(&frame, &limits);
});
