//! The decoder corpus: crafted malformed (and a few odd but valid) frames, one per validation
//! rule, kept under tests/fixtures/syn1/corpus/ with expected.json naming the error each one
//! must produce. Any other .bin dropped there (e.g. a fuzzing find) only has to not panic.
//! proptest's own failure seeds are persisted to corpus/proptest-regressions.txt.

use serde_json::json;
use synapse::protocol::*;

use crate::{check_fixture, check_json_fixture, fixtures_dir};

fn raw_sized(t: u8, flags: u8, declared: u32, d0: u32, d1: u32, payload: &[u8]) -> Vec<u8> {
    let h = RawHeader {
        magic: MAGIC,
        msg_type: t,
        flags,
        seq_pos: 1,
        request_id: 1,
        payload_size: declared,
        dim0: d0,
        dim1: d1,
    };
    [&h.to_bytes()[..], payload].concat()
}

fn raw(t: u8, flags: u8, d0: u32, d1: u32, payload: &[u8]) -> Vec<u8> {
    raw_sized(t, flags, payload.len() as u32, d0, d1, payload)
}

const A: u8 = TYPE_ACTIVATION;
const I8: u8 = QUANT_INT8;
const HALF: [u8; 4] = [0x00, 0x00, 0x00, 0x3F]; // f32 0.5

fn int8_row(q: &[u8], scale: [u8; 4]) -> Vec<u8> {
    [q, &scale[..]].concat()
}

const QR: u8 = QUANT_RICE;

fn rice_row(step: [u8; 4], k: u8, bits: &[u8]) -> Vec<u8> {
    [&step[..], &[k], bits].concat()
}

fn rle(original: u32, runs: u16, body: &[u8]) -> Vec<u8> {
    [&original.to_le_bytes()[..], &runs.to_le_bytes(), body].concat()
}

/// (name, bytes, expected error variant or None for "decodes").
fn crafted() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let good = raw(A, I8, 1, 4, &int8_row(&[1, 2, 3, 4], HALF));
    let mut le_magic = good.clone();
    le_magic[..4].reverse();
    let z = |n: usize| vec![0u8; n];
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(300), "]".repeat(300));
    vec![
        ("bad_empty", vec![], Some("Truncated")),
        ("bad_short_header", good[..23].to_vec(), Some("Truncated")),
        (
            "bad_magic",
            [b"SYN2", &good[4..]].concat(),
            Some("BadMagic"),
        ),
        ("bad_magic_little_endian", le_magic, Some("BadMagic")),
        (
            "bad_type_zero",
            raw(0x00, 0, 1, 1, &[]),
            Some("UnknownType"),
        ),
        (
            "bad_type_kv_append",
            raw(TYPE_KV_APPEND, 0, 1, 1, &[]),
            Some("ReservedType"),
        ),
        (
            "bad_type_predict",
            raw(TYPE_PREDICT, 0, 1, 1, &[]),
            Some("ReservedType"),
        ),
        (
            "bad_type_early_exit",
            raw(TYPE_EARLY_EXIT, 0, 1, 1, &[]),
            Some("ReservedType"),
        ),
        (
            "bad_type_unknown",
            raw(0x7F, 0, 1, 1, &[]),
            Some("UnknownType"),
        ),
        (
            "bad_flags_reserved_bits",
            raw(A, 0x81, 1, 4, &int8_row(&[1; 4], HALF)),
            Some("ReservedFlagBits"),
        ),
        // RICE (quantization 3): one row is [f32 step][u8 k][bits].
        (
            "bad_rice_delta",
            raw(A, QUANT_RICE | FLAG_DELTA, 1, 4, &z(8)),
            Some("DeltaNeedsInt8"),
        ),
        (
            "bad_rice_too_short",
            raw(A, QR, 1, 8, &rice_row(HALF, 0, &[])),
            Some("RiceTooShort"),
        ),
        (
            "bad_rice_k",
            raw(A, QR, 1, 8, &rice_row(HALF, 16, &[0])),
            Some("RiceBadK"),
        ),
        (
            "bad_rice_step_zero",
            raw(A, QR, 1, 8, &rice_row([0; 4], 0, &[0])),
            Some("BadScale"),
        ),
        (
            "bad_rice_truncated",
            raw(A, QR, 1, 8, &rice_row(HALF, 0, &[0xFF])),
            Some("RiceTruncated"),
        ),
        (
            "bad_rice_padding",
            raw(A, QR, 1, 1, &rice_row(HALF, 0, &[0x01])),
            Some("RicePadding"),
        ),
        (
            "bad_rice_trailing",
            raw(A, QR, 1, 1, &rice_row(HALF, 0, &[0x00, 0x00])),
            Some("RiceTrailingBytes"),
        ),
        (
            "bad_rice_escape_bomb",
            raw(A, QR, 1, 1, &rice_row(HALF, 0, &[0xFF, 0xFF, 0, 0, 0, 0])),
            Some("RiceValueTooLarge"),
        ),
        (
            // escape for u = 2^21 + 15, i.e. q = -(2^20 + 8): beyond |q| <= 2^20
            "bad_rice_q_too_large",
            raw(
                A,
                QR,
                1,
                1,
                &rice_row(HALF, 0, &[0xFF, 0xFF, 0, 0, 0x04, 0, 0, 0]),
            ),
            Some("RiceValueTooLarge"),
        ),
        (
            // q = 2 times f32::MAX overflows
            "bad_rice_overflow",
            raw(A, QR, 1, 1, &rice_row([0xFF, 0xFF, 0x7F, 0x7F], 0, &[0xF0])),
            Some("NonFiniteValue"),
        ),
        (
            // k = 15 is never the best k for q = 0, but any k <= 15 is accepted
            "ok_rice_unusual_k",
            raw(A, QR, 1, 1, &rice_row(HALF, 15, &[0x00, 0x00])),
            None,
        ),
        (
            "bad_flags_predicted",
            raw(A, FLAG_PREDICTED, 1, 1, &z(4)),
            Some("UnsupportedFlag"),
        ),
        (
            "bad_flags_early_exit",
            raw(A, FLAG_EARLY_EXIT, 1, 1, &z(4)),
            Some("UnsupportedFlag"),
        ),
        (
            "bad_delta_f32",
            raw(A, FLAG_DELTA, 1, 1, &z(4)),
            Some("DeltaNeedsInt8"),
        ),
        (
            "bad_delta_int4",
            raw(
                A,
                FLAG_DELTA | QUANT_INT4,
                1,
                1,
                &[8, 0, 0, 0, 0x3F, 1, 0, 0, 0],
            ),
            Some("DeltaNeedsInt8"),
        ),
        (
            "bad_delta_two_rows",
            raw(
                A,
                FLAG_DELTA | I8,
                2,
                1,
                &[1, 1, 0, 0, 0, 0x3F, 0, 0, 0, 0x3F, 2, 0],
            ),
            Some("DeltaNeedsOneRow"),
        ),
        (
            "bad_flags_on_tokens",
            raw(TYPE_TOKENS, I8, 1, 1, &z(4)),
            Some("FlagsNotAllowed"),
        ),
        (
            "bad_compressed_control",
            raw(TYPE_CONTROL, FLAG_COMPRESSED, 2, 1, b"{}"),
            Some("FlagsNotAllowed"),
        ),
        (
            "bad_payload_short",
            raw_sized(A, I8, 8, 1, 4, &[1, 2, 3, 4, 0, 0, 0]),
            Some("PayloadSizeMismatch"),
        ),
        (
            "bad_payload_long",
            raw_sized(A, I8, 8, 1, 4, &[1, 2, 3, 4, 0, 0, 0, 0x3F, 9]),
            Some("PayloadSizeMismatch"),
        ),
        (
            "bad_frame_too_large",
            raw_sized(A, 0, u32::MAX, 1, 1, &z(4)),
            Some("FrameTooLarge"),
        ),
        ("bad_zero_rows", raw(A, 0, 0, 4, &[]), Some("BadShape")),
        ("bad_zero_cols", raw(A, I8, 1, 0, &HALF), Some("BadShape")),
        (
            "bad_too_many_cols",
            raw(A, 0, 1, 100_000, &z(4)),
            Some("TooManyCols"),
        ),
        (
            "bad_f32_size",
            raw(A, 0, 1, 4, &z(12)),
            Some("LayoutSizeMismatch"),
        ),
        (
            "bad_f32_nan",
            raw(A, 0, 1, 1, &f32::NAN.to_le_bytes()),
            Some("NonFiniteValue"),
        ),
        (
            "bad_int8_rows_trailer",
            raw(A, I8, 2, 1, &[1, 1, 0, 0, 0, 0x3F, 0, 0, 0, 0x3F, 3, 0]),
            Some("RowsTrailerMismatch"),
        ),
        (
            "bad_int8_scale_zero",
            raw(A, I8, 1, 4, &int8_row(&[1; 4], [0; 4])),
            Some("BadScale"),
        ),
        (
            "bad_int8_scale_negative",
            raw(A, I8, 1, 4, &int8_row(&[1; 4], [0, 0, 0, 0xBF])),
            Some("BadScale"),
        ),
        (
            "bad_int8_scale_nan",
            raw(A, I8, 1, 4, &int8_row(&[1; 4], f32::NAN.to_le_bytes())),
            Some("BadScale"),
        ),
        (
            "bad_int8_minus_128",
            raw(A, I8, 1, 4, &int8_row(&[1, 0x80, 3, 4], HALF)),
            Some("Int8OutOfRange"),
        ),
        (
            "bad_int4_count_trailer",
            raw(A, QUANT_INT4, 1, 2, &[0x88, 0, 0, 0, 0x3F, 3, 0, 0, 0]),
            Some("CountTrailerMismatch"),
        ),
        (
            "bad_int4_nibble_zero",
            raw(A, QUANT_INT4, 1, 2, &[0x80, 0, 0, 0, 0x3F, 2, 0, 0, 0]),
            Some("Int4OutOfRange"),
        ),
        (
            "bad_int4_padding",
            raw(A, QUANT_INT4, 1, 1, &[0x88, 0, 0, 0, 0x3F, 1, 0, 0, 0]),
            Some("Int4Padding"),
        ),
        (
            "bad_rle_bomb",
            raw(
                A,
                I8 | FLAG_COMPRESSED,
                1,
                4,
                &rle(u32::MAX, 1, &[0, 0xFF, 0xFF]),
            ),
            Some("RleTooLarge"),
        ),
        (
            "bad_rle_truncated",
            raw(A, I8 | FLAG_COMPRESSED, 1, 4, &rle(8, 5, &[0, 8, 0])),
            Some("RleTruncated"),
        ),
        (
            "bad_rle_kind",
            raw(A, I8 | FLAG_COMPRESSED, 1, 4, &rle(8, 1, &[2, 8, 0])),
            Some("RleBadKind"),
        ),
        (
            "bad_rle_empty_run",
            raw(
                A,
                I8 | FLAG_COMPRESSED,
                1,
                4,
                &rle(8, 2, &[0, 0, 0, 0, 8, 0]),
            ),
            Some("RleEmptyRun"),
        ),
        (
            "bad_rle_overflow",
            raw(
                A,
                I8 | FLAG_COMPRESSED,
                1,
                4,
                &rle(8, 2, &[0, 7, 0, 0, 7, 0]),
            ),
            Some("RleLengthMismatch"),
        ),
        (
            "bad_rle_short",
            raw(A, I8 | FLAG_COMPRESSED, 1, 4, &rle(8, 1, &[0, 7, 0])),
            Some("RleLengthMismatch"),
        ),
        (
            "bad_rle_trailing",
            raw(
                A,
                I8 | FLAG_COMPRESSED,
                1,
                4,
                &rle(8, 1, &[1, 8, 0, 1, 2, 3, 4, 0, 0, 0, 0x3F, 0xAA]),
            ),
            Some("RleTrailingBytes"),
        ),
        (
            "bad_rle_wrong_layout",
            raw(A, I8 | FLAG_COMPRESSED, 1, 4, &rle(7, 1, &[0, 7, 0])),
            Some("LayoutSizeMismatch"),
        ),
        (
            "bad_tokens_count",
            raw(TYPE_TOKENS, 0, 3, 1, &z(8)),
            Some("TokenCountMismatch"),
        ),
        (
            "bad_tokens_shape",
            raw(TYPE_TOKENS, 0, 1, 2, &z(4)),
            Some("BadShape"),
        ),
        (
            "bad_tokens_empty",
            raw(TYPE_TOKENS, 0, 0, 1, &[]),
            Some("BadShape"),
        ),
        (
            "bad_tokens_too_many",
            raw(TYPE_TOKENS, 0, 20_000, 1, &z(4)),
            Some("TooManyRows"),
        ),
        (
            "bad_output_misaligned",
            raw(TYPE_OUTPUT, 0, 1, 1, &z(5)),
            Some("LayoutSizeMismatch"),
        ),
        (
            "bad_top_logits_shape",
            raw(TYPE_TOP_LOGITS, 0, 0, 1, &z(8)),
            Some("BadShape"),
        ),
        (
            "bad_top_logits_rows_short",
            raw(TYPE_TOP_LOGITS, 0, 2, 1, &z(8)),
            Some("LayoutSizeMismatch"),
        ),
        (
            "bad_top_logits_inf",
            raw(TYPE_TOP_LOGITS, 0, 1, 1, &[1, 0, 0, 0, 0, 0, 0x80, 0x7F]),
            Some("NonFiniteValue"),
        ),
        (
            "bad_top_logits_too_many",
            raw(TYPE_TOP_LOGITS, 0, 1, 100_000, &z(8)),
            Some("TooManyCols"),
        ),
        (
            "bad_control_not_utf8",
            raw(TYPE_CONTROL, 0, 3, 1, &[b'"', 0xFF, b'"']),
            Some("InvalidUtf8"),
        ),
        (
            "bad_control_not_json",
            raw(TYPE_CONTROL, 0, 3, 1, b"{a}"),
            Some("InvalidJson"),
        ),
        (
            "bad_control_array",
            raw(TYPE_CONTROL, 0, 2, 1, b"[]"),
            Some("JsonNotObject"),
        ),
        (
            "bad_control_dim0",
            raw(TYPE_CONTROL, 0, 3, 1, b"{}"),
            Some("BadShape"),
        ),
        (
            "bad_control_deep_nesting",
            raw(TYPE_CONTROL, 0, deep.len() as u32, 1, deep.as_bytes()),
            Some("InvalidJson"),
        ),
        // Valid oddities, accepted on purpose (see docs/PROTOCOL.md).
        (
            "ok_control_unknown_op",
            raw(TYPE_CONTROL, 0, 14, 1, br#"{"op":"dance"}"#),
            None,
        ),
        (
            "ok_rle_not_smaller",
            raw(
                A,
                I8 | FLAG_COMPRESSED,
                1,
                1,
                &rle(5, 1, &[1, 5, 0, 9, 0, 0, 0, 0x3F]),
            ),
            None,
        ),
        (
            "ok_seq_pos_wrapped",
            {
                let mut b = good.clone();
                b[6..8].copy_from_slice(&[0xFF, 0xFF]);
                b
            },
            None,
        ),
        (
            "ok_int8_all_zero_scale_one",
            raw(A, I8, 1, 2, &[0, 0, 0, 0, 0x80, 0x3F]),
            None,
        ),
    ]
}

fn variant(e: &ProtocolError) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect()
}

#[test]
fn corpus_files_match_and_give_their_expected_errors() {
    let dir = fixtures_dir().join("corpus");
    let mut expected = Vec::new();
    for (name, bytes, want) in crafted() {
        check_fixture(&dir.join(format!("{name}.bin")), &bytes);
        let got = decode(&bytes, &Limits::default());
        match (want, &got) {
            (Some(w), Err(e)) => assert_eq!(variant(e), w, "{name}: {e}"),
            (None, Ok(f)) => assert_eq!(encode(f), bytes, "{name} re-encodes identically"),
            _ => panic!("{name}: expected {want:?}, got {got:?}"),
        }
        let message = got.as_ref().err().map(|e| e.to_string());
        expected.push(json!({ "file": format!("{name}.bin"), "error": want, "message": message }));
    }
    let manifest = json!({
        "limits": { "max_frame_bytes": Limits::DEFAULT_MAX_FRAME_BYTES,
                    "max_rows": Limits::DEFAULT_MAX_ROWS, "max_cols": Limits::DEFAULT_MAX_COLS },
        "cases": expected,
    });
    check_json_fixture(&dir.join("expected.json"), &manifest);
}

#[test]
fn every_corpus_file_decodes_without_panicking() {
    let dir = fixtures_dir().join("corpus");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes = std::fs::read(&path).expect("readable");
            if let Ok(frame) = decode(&bytes, &Limits::default()) {
                assert_eq!(encode(&frame), bytes, "{}", path.display());
            }
            // Every prefix too: truncation anywhere must be an error, not a panic.
            for n in 0..bytes.len().min(64) {
                let _ = decode(&bytes[..n], &Limits::default());
            }
        }
    }
}
