//! proptest fuzzing of the decoder: arbitrary bytes, valid frames, and mutated valid frames.
//!
//! The properties: `decode` never panics; whatever it accepts re-encodes to the same bytes
//! and passes its type's reader; every frame the typed builders make round-trips. Case
//! counts are modest (CI has 2 cores); failing seeds are kept in the corpus folder.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::json;
use synapse::protocol::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/fixtures/syn1/corpus/proptest-regressions.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// Mostly moderate values, some exact zeros so the run-length stage gets used.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![3 => -100.0f32..100.0, 2 => Just(0.0f32), 1 => -1e-3f32..1e-3]
}

fn activation_input() -> impl Strategy<Value = (Activation, Encoding, bool)> {
    (1u32..5, 1u32..24)
        .prop_flat_map(|(rows, cols)| {
            let enc = prop::sample::select(vec![
                Encoding::F32,
                Encoding::Int8,
                Encoding::Int4,
                Encoding::Rice,
            ]);
            (
                Just((rows, cols)),
                vec(value(), (rows * cols) as usize),
                enc,
                any::<bool>(),
            )
        })
        .prop_map(|((rows, cols), data, enc, compress)| {
            (
                Activation::new(rows, cols, data).expect("shape"),
                enc,
                compress,
            )
        })
}

fn activation_frame() -> impl Strategy<Value = Frame> {
    (activation_input(), any::<u16>(), any::<u32>()).prop_map(|((act, enc, compress), s, r)| {
        act.to_frame(s, r, enc, compress).expect("valid activation")
    })
}

fn delta_frame() -> impl Strategy<Value = Frame> {
    (1usize..24)
        .prop_flat_map(|cols| (vec(value(), cols), vec(value(), cols), any::<bool>()))
        .prop_map(|(a, b, compress)| {
            let mut enc = DeltaEncoder::new(0).with_compression(compress);
            let row = |v: Vec<f32>| Activation::new(1, v.len() as u32, v).expect("shape");
            enc.encode(&row(a), 1, 1).expect("keyframe");
            enc.encode(&row(b), 2, 1).expect("delta")
        })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(|v| json!(v)),
        any::<bool>().prop_map(|v| json!(v)),
        "[ -~é€]{0,8}".prop_map(|v| json!(v)),
        Just(json!(null)),
    ]
}

fn valid_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => activation_frame(),
        1 => delta_frame(),
        1 => (vec(any::<u32>(), 1..8), any::<u16>())
            .prop_map(|(ids, s)| Tokens { ids }.to_frame(s, 3).expect("tokens")),
        1 => (vec(any::<u32>(), 1..8), any::<u16>())
            .prop_map(|(ids, s)| Output { ids }.to_frame(s, 4).expect("output")),
        1 => (vec((any::<u32>(), -1e6f32..1e6), 1..8), 1usize..4).prop_map(|(e, rows)| {
            let k = e.len();
            let entries = (0..rows)
                .flat_map(|_| e.iter().map(|&(id, logit)| TopLogit { id, logit }))
                .collect::<Vec<_>>();
            debug_assert_eq!(entries.len(), rows * k);
            TopLogits { entries, rows }.to_frame(9, 5).expect("top")
        }),
        1 => btree_map("[a-z_]{1,6}", json_value(), 0..4).prop_map(|m| {
            let object = m.into_iter().collect();
            Control { object }.to_frame(0, 6)
        }),
    ]
}

/// Bytes with a plausible header, so fuzzing reaches the payload checks.
fn header_shaped() -> impl Strategy<Value = Vec<u8>> {
    let types = prop::sample::select(vec![1u8, 2, 3, 4, 5, 0x10, 0x11, 0x12, 0x7F]);
    let flags = prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![0u8, 1, 2, 3, 4, 5, 6, 7, 0x21, 0x25])
    ];
    (
        types,
        flags,
        any::<u16>(),
        0u32..40,
        0u32..40,
        vec(any::<u8>(), 0..160),
    )
        .prop_map(|(t, f, seq, d0, d1, payload)| {
            let h = RawHeader {
                magic: MAGIC,
                msg_type: t,
                flags: f,
                seq_pos: seq,
                request_id: 1,
                payload_size: payload.len() as u32,
                dim0: d0,
                dim1: d1,
            };
            [&h.to_bytes()[..], &payload].concat()
        })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    HeaderField(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        vec(any::<u8>(), 1..8).prop_map(Mutation::Extend),
        (0usize..4, prop_oneof![0u32..64, any::<u32>()])
            .prop_map(|(f, v)| Mutation::HeaderField(f, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip(i, b) if !bytes.is_empty() => bytes[i % n] ^= 1 << b,
        Mutation::Set(i, v) if !bytes.is_empty() => bytes[i % n] = *v,
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::Extend(extra) => bytes.extend_from_slice(extra),
        Mutation::HeaderField(f, v) if bytes.len() >= HEADER_SIZE => {
            let at = [
                OFFSET_REQUEST_ID,
                OFFSET_PAYLOAD_SIZE,
                OFFSET_DIM0,
                OFFSET_DIM1,
            ][*f];
            bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => {}
    }
}

/// What must hold for any input: no panic, and acceptance implies a canonical, readable frame.
fn check_any(bytes: &[u8]) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    if let Ok(frame) = decode(bytes, &limits) {
        prop_assert_eq!(encode(&frame), bytes);
        prop_assert!(frame.validate(&limits).is_ok());
        if frame.msg_type == MessageType::Activation {
            prop_assert!(read_activation(&frame, &limits).is_ok());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        check_any(&bytes)?;
    }

    #[test]
    fn header_shaped_bytes_never_panic(bytes in header_shaped()) {
        check_any(&bytes)?;
    }

    #[test]
    fn mutated_frames_never_panic(frame in valid_frame(), muts in vec(mutation(), 1..4)) {
        let mut bytes = encode(&frame);
        for m in &muts {
            apply(&mut bytes, m);
        }
        check_any(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rice_bytes_never_panic(rows in 1u32..4, cols in 1u32..40, payload in vec(any::<u8>(), 0..200)) {
        let h = RawHeader {
            magic: MAGIC,
            msg_type: TYPE_ACTIVATION,
            flags: QUANT_RICE,
            seq_pos: 1,
            request_id: 1,
            payload_size: payload.len() as u32,
            dim0: rows,
            dim1: cols,
        };
        check_any(&[&h.to_bytes()[..], &payload].concat())?;
    }

    #[test]
    fn rice_round_trips_heavy_tailed_rows(
        rows in vec(vec(prop_oneof![8 => -3.0f32..3.0, 1 => -700.0f32..700.0, 1 => Just(0.0f32)], 64), 1..4),
        ratio in 0.01f32..2.0,
    ) {
        let cols = 64u32;
        let act = Activation::new(rows.len() as u32, cols, rows.concat()).expect("shape");
        let frame = act.to_rice_frame(1, 1, ratio, false).expect("valid");
        let decoded = decode(&encode(&frame), &Limits::default())?;
        prop_assert_eq!(&decoded, &frame);
        let PayloadValues::Rice(v) = read_activation(&decoded, &Limits::default())?.values else {
            return Err(TestCaseError::fail("not rice"));
        };
        let back = Activation::from_frame(&decoded, &Limits::default())?;
        for (i, (x, y)) in act.data.iter().zip(&back.data).enumerate() {
            let step = v.steps[i / cols as usize];
            let tol = step * 0.5 * 1.0001 + x.abs() * f32::EPSILON;
            prop_assert!((x - y).abs() <= tol, "{}: {} vs {}", i, x, y);
        }
    }

    #[test]
    fn valid_frames_round_trip(frame in valid_frame()) {
        let bytes = encode(&frame);
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        let decoded = decode(&bytes, &Limits::default());
        prop_assert_eq!(decoded.as_ref(), Ok(&frame));
        check_any(&bytes)?;
    }

    #[test]
    fn activations_round_trip_within_half_a_step((act, enc, compress) in activation_input()) {
        let frame = act.to_frame(1, 1, enc, compress).expect("valid");
        // RICE sizes depend on the values (encoded_size is None); the rest are fixed.
        if let Some(size) = encoded_size(enc, act.rows, act.cols) {
            if frame.flags.compressed {
                prop_assert!((frame.encoded_len() as u64) < size);
            } else {
                prop_assert_eq!(size, frame.encoded_len() as u64);
            }
        }
        let decoded = decode(&encode(&frame), &Limits::default())?;
        let rice_steps = match read_activation(&decoded, &Limits::default())?.values {
            PayloadValues::Rice(v) => v.steps,
            _ => Vec::new(),
        };
        let back = Activation::from_frame(&decoded, &Limits::default())?;
        let cols = act.cols as usize;
        for (r, (a, b)) in act.data.chunks(cols).zip(back.data.chunks(cols)).enumerate() {
            // int8: per-row scale; int4: one scale for the tensor; f32: exact.
            let max_abs = |v: &[f32]| v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let step = match enc {
                Encoding::F32 => 0.0,
                Encoding::Rice => rice_steps[r],
                Encoding::Int4 => max_abs(&act.data) / 7.0,
                _ => max_abs(a) / 127.0,
            };
            for (x, y) in a.iter().zip(b) {
                // plus the f32 rounding of q * step (it matters for RICE's finest steps)
                let tol = step * 0.5 * 1.0001 + x.abs() * f32::EPSILON + 1e-30;
                prop_assert!((x - y).abs() <= tol, "row {}: {} vs {}", r, x, y);
            }
        }
    }
}
