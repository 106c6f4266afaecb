//! Golden frames: each message type and each ACTIVATION encoding, built from hand-picked
//! values (powers of two, so every scale and value is exact) and pinned byte for byte.
//! The same bytes are tests/fixtures/syn1/NAME.bin, described in manifest.json (manifest.rs).

use serde_json::{Value, json};
use synapse::protocol::*;

use crate::{check_fixture, fixtures_dir};

/// requestId used by every golden frame.
const REQ: u32 = 7;

/// One golden frame and what it holds.
pub struct Golden {
    pub name: &'static str,
    pub contains: &'static str,
    pub frame: Frame,
    /// Extra decoded facts for the manifest (delta reference and reconstruction).
    pub extra: Value,
}

fn act(rows: u32, cols: u32, data: Vec<f32>) -> Activation {
    Activation::new(rows, cols, data).expect("shape")
}

/// The keyframe the delta golden continues from (same values as activation_int8_row).
fn delta_keyframe() -> Activation {
    act(1, 4, vec![63.5, -32.0, 1.5, 0.0])
}

fn delta_next() -> Activation {
    act(1, 4, vec![65.484375, -32.0, 0.5, 0.5])
}

/// The RICE golden's rows: each row's mean |x| times 0.25 is a power of two, so every value
/// is a multiple of its step and comes back exactly.
fn rice_golden() -> Activation {
    let mut data = vec![2.0, -1.0, 4.0, 1.0, 0.0, -2.0, 5.0, 1.0];
    data.extend([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 64.0]);
    act(2, 8, data)
}

/// Every golden frame, in manifest order.
pub fn goldens() -> Vec<Golden> {
    let none = Value::Null;
    let mut enc = DeltaEncoder::new(0);
    enc.encode(&delta_keyframe(), 6, REQ).expect("keyframe");
    let delta = enc.encode(&delta_next(), 7, REQ).expect("delta");
    let mut sparse = vec![0.0f32; 24];
    sparse[0] = 63.5;
    sparse[23] = -1.0;
    vec![
        Golden {
            name: "activation_f32",
            contains: "ACTIVATION, f32, 2 rows x 2 cols: [[1, -2], [0.5, 0.25]]",
            frame: act(2, 2, vec![1.0, -2.0, 0.5, 0.25])
                .to_frame(5, REQ, Encoding::F32, false)
                .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "activation_int8_row",
            contains: "ACTIVATION, int8 one-row layout (decode step), [63.5, -32, 1.5, 0], scale 0.5",
            frame: delta_keyframe()
                .to_frame(6, REQ, Encoding::Int8, false)
                .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "activation_int8_rows",
            contains: "ACTIVATION, int8 several-row layout (prefill), rows [63.5, -1, 0] (scale 0.5) and [31.75, -31.75, 2] (scale 0.25), u16 rows trailer",
            frame: act(2, 3, vec![63.5, -1.0, 0.0, 31.75, -31.75, 2.0])
                .to_frame(2, REQ, Encoding::Int8, false)
                .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "activation_int4",
            contains: "ACTIVATION, int4, 1 x 5 (odd count, padding nibble 0): [3.5, -3.5, 1, 0, -0.5], scale 0.5",
            frame: act(1, 5, vec![3.5, -3.5, 1.0, 0.0, -0.5])
                .to_frame(6, REQ, Encoding::Int4, false)
                .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "activation_int8_delta",
            contains: "ACTIVATION, int8 + DELTA: the difference [1.984375, 0, -1, 0.5] (scale 1/64) to the reference activation_int8_row reconstructs [65.484375, -32, 0.5, 0.5]",
            frame: delta,
            extra: json!({
                "reference": delta_keyframe().data,
                "reference_file": "activation_int8_row.bin",
                "reconstruction": delta_next().data,
            }),
        },
        Golden {
            name: "activation_int8_compressed",
            contains: "ACTIVATION, int8 one-row + COMPRESSED: 1 x 24, [63.5, 0 x 22, -1], scale 0.5; runs: literal 1, zeros 22, literal 5",
            frame: act(1, 24, sparse)
                .to_frame(6, REQ, Encoding::Int8, true)
                .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "activation_rice",
            contains: "ACTIVATION, RICE (quantization 3, extension), 2 x 8 at step ratio 0.25: row 0 [2, -1, 4, 1, 0, -2, 5, 1] (step 0.5, k 3), row 1 [0 x 7, 64] (step 2, k 0, exp-Golomb escape)",
            frame: rice_golden()
                .to_rice_frame(3, REQ, 0.25, false)
                .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "output",
            contains: "OUTPUT, token ids [11, 50256]",
            frame: Output {
                ids: vec![11, 50256],
            }
            .to_frame(4, REQ)
            .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "tokens",
            contains: "TOKENS (extension), token ids [15496, 995] into the first shard, seqPos 2",
            frame: Tokens {
                ids: vec![15496, 995],
            }
            .to_frame(2, REQ)
            .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "top_logits",
            contains: "TOP_LOGITS (extension), k = 2: (995, 12.5), (15496, -1.25)",
            frame: TopLogits {
                entries: vec![
                    TopLogit {
                        id: 995,
                        logit: 12.5,
                    },
                    TopLogit {
                        id: 15496,
                        logit: -1.25,
                    },
                ],
                rows: 1,
            }
            .to_frame(3, REQ)
            .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "top_logits_rows",
            contains: "TOP_LOGITS (extension), 2 rows (a verification step), k = 2: row 0 (995, 12.5), (15496, -1.25); row 1 (13, 2), (995, 0.5)",
            frame: TopLogits {
                entries: vec![
                    TopLogit {
                        id: 995,
                        logit: 12.5,
                    },
                    TopLogit {
                        id: 15496,
                        logit: -1.25,
                    },
                    TopLogit { id: 13, logit: 2.0 },
                    TopLogit {
                        id: 995,
                        logit: 0.5,
                    },
                ],
                rows: 2,
            }
            .to_frame(4, REQ)
            .expect("frame"),
            extra: none.clone(),
        },
        Golden {
            name: "control",
            contains: "CONTROL (extension), {\"op\":\"close\",\"reason\":\"done\"}",
            frame: Control::from_message(&ControlMessage::Close {
                reason: Some("done".into()),
            })
            .to_frame(0, REQ),
            extra: none,
        },
    ]
}

fn golden(name: &str) -> Frame {
    goldens()
        .into_iter()
        .find(|g| g.name == name)
        .expect("known golden")
        .frame
}

/// Asserts the exact bytes, the fixture file, and that decoding gives the frame back.
fn check(name: &str, expected: &[u8]) -> Frame {
    let frame = golden(name);
    let bytes = encode(&frame);
    assert_eq!(bytes, expected, "{name}: encoding changed");
    check_fixture(&fixtures_dir().join(format!("{name}.bin")), &bytes);
    let decoded = decode(&bytes, &Limits::default()).expect("golden decodes");
    assert_eq!(decoded, frame);
    decoded
}

fn values(frame: &Frame) -> Vec<f32> {
    Activation::from_frame(frame, &Limits::default())
        .expect("activation")
        .data
}

#[test]
fn activation_f32() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 40] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1", big-endian
        0x01,                   // type ACTIVATION
        0x00,                   // flags: quantization none (f32)
        0x05, 0x00,             // seqPos 5 (u16 LE)
        0x07, 0x00, 0x00, 0x00, // requestId 7 (u32 LE)
        0x10, 0x00, 0x00, 0x00, // payload size 16
        0x02, 0x00, 0x00, 0x00, // dim0: 2 rows
        0x02, 0x00, 0x00, 0x00, // dim1: 2 cols
        0x00, 0x00, 0x80, 0x3F, // 1.0   (f32 LE)
        0x00, 0x00, 0x00, 0xC0, // -2.0
        0x00, 0x00, 0x00, 0x3F, // 0.5
        0x00, 0x00, 0x80, 0x3E, // 0.25
    ];
    let f = check("activation_f32", &EXPECTED);
    assert_eq!(values(&f), [1.0, -2.0, 0.5, 0.25]);
}

#[test]
fn activation_int8_row() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 32] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x01,                   // type ACTIVATION
        0x01,                   // flags: quantization int8
        0x06, 0x00,             // seqPos 6
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x08, 0x00, 0x00, 0x00, // payload size 8 = 4 values + f32 scale
        0x01, 0x00, 0x00, 0x00, // dim0: 1 row -> one-row layout, no trailer
        0x04, 0x00, 0x00, 0x00, // dim1: 4 cols
        0x7F, 0xC0, 0x03, 0x00, // q = 127, -64, 3, 0
        0x00, 0x00, 0x00, 0x3F, // scale 0.5 = 63.5 / 127
    ];
    let f = check("activation_int8_row", &EXPECTED);
    assert_eq!(values(&f), [63.5, -32.0, 1.5, 0.0]);
}

#[test]
fn activation_int8_rows() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 40] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x01,                   // type ACTIVATION
        0x01,                   // flags: quantization int8
        0x02, 0x00,             // seqPos 2 (prefill of 2 tokens)
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x10, 0x00, 0x00, 0x00, // payload size 16 = 6 + 2 * 4 + 2
        0x02, 0x00, 0x00, 0x00, // dim0: 2 rows -> several-row layout
        0x03, 0x00, 0x00, 0x00, // dim1: 3 cols
        0x7F, 0xFE, 0x00,       // row 0 q = 127, -2, 0
        0x7F, 0x81, 0x08,       // row 1 q = 127, -127, 8
        0x00, 0x00, 0x00, 0x3F, // row 0 scale 0.5
        0x00, 0x00, 0x80, 0x3E, // row 1 scale 0.25
        0x02, 0x00,             // u16 rows trailer = dim0
    ];
    let f = check("activation_int8_rows", &EXPECTED);
    assert_eq!(values(&f), [63.5, -1.0, 0.0, 31.75, -31.75, 2.0]);
}

#[test]
fn activation_int4() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 35] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x01,                   // type ACTIVATION
        0x02,                   // flags: quantization int4
        0x06, 0x00,             // seqPos 6
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x0B, 0x00, 0x00, 0x00, // payload size 11 = ceil(5/2) + 4 + 4
        0x01, 0x00, 0x00, 0x00, // dim0: 1
        0x05, 0x00, 0x00, 0x00, // dim1: 5
        0x1F,                   // q0 = 7 (low, stored 15), q1 = -7 (high, stored 1)
        0x8A,                   // q2 = 2 (stored 10), q3 = 0 (stored 8)
        0x07,                   // q4 = -1 (stored 7), padding nibble 0
        0x00, 0x00, 0x00, 0x3F, // scale 0.5 = 3.5 / 7
        0x05, 0x00, 0x00, 0x00, // u32 n = 5
    ];
    let f = check("activation_int4", &EXPECTED);
    assert_eq!(values(&f), [3.5, -3.5, 1.0, 0.0, -0.5]);
}

#[test]
fn activation_int8_delta() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 32] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x01,                   // type ACTIVATION
        0x21,                   // flags: int8 (0x01) | DELTA (0x20)
        0x07, 0x00,             // seqPos 7 (the step after the keyframe's 6)
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x08, 0x00, 0x00, 0x00, // payload size 8: one-row int8 layout
        0x01, 0x00, 0x00, 0x00, // dim0: 1 (DELTA needs one row)
        0x04, 0x00, 0x00, 0x00, // dim1: 4
        0x7F, 0x00, 0xC0, 0x20, // difference q = 127, 0, -64, 32
        0x00, 0x00, 0x80, 0x3C, // scale 1/64 = 1.984375 / 127
    ];
    let f = check("activation_int8_delta", &EXPECTED);
    let l = Limits::default();
    assert_eq!(
        Activation::from_frame(&f, &l),
        Err(ProtocolError::DeltaWithoutReference)
    );
    let mut dec = DeltaDecoder::new();
    dec.decode(&golden("activation_int8_row"), &l)
        .expect("keyframe");
    assert_eq!(dec.decode(&f, &l).expect("delta").data, delta_next().data);
}

#[test]
fn activation_int8_compressed() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 45] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x01,                   // type ACTIVATION
        0x05,                   // flags: int8 (0x01) | COMPRESSED (0x04)
        0x06, 0x00,             // seqPos 6
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x15, 0x00, 0x00, 0x00, // payload size 21 (28 before compression)
        0x01, 0x00, 0x00, 0x00, // dim0: 1
        0x18, 0x00, 0x00, 0x00, // dim1: 24
        0x1C, 0x00, 0x00, 0x00, // RLE original length 28
        0x03, 0x00,             // RLE runs 3
        0x01, 0x01, 0x00, 0x7F, // literal run of 1: q0 = 127
        0x00, 0x16, 0x00,       // zero run of 22: q1..q22 = 0
        0x01, 0x05, 0x00,       // literal run of 5:
        0xFE,                   //   q23 = -2
        0x00, 0x00, 0x00, 0x3F, //   scale 0.5 (its zero bytes are too short a run to cut)
    ];
    let f = check("activation_int8_compressed", &EXPECTED);
    let v = values(&f);
    assert_eq!(
        (v[0], v[23], v[1..23].iter().all(|&x| x == 0.0)),
        (63.5, -1.0, true)
    );
}

#[test]
fn activation_rice() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 44] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x01,                   // type ACTIVATION
        0x03,                   // flags: quantization 3 = RICE (extension)
        0x03, 0x00,             // seqPos 3
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x14, 0x00, 0x00, 0x00, // payload size 20 (depends on the values)
        0x02, 0x00, 0x00, 0x00, // dim0: 2 rows
        0x08, 0x00, 0x00, 0x00, // dim1: 8 cols
        // row 0: step 0.5 = 0.25 * mean|x| (2); q = 4 -2 8 2 0 -4 10 2,
        // zigzag u = 8 3 16 4 0 7 20 4, k = 3: (u >> 3) ones, a zero, 3 low bits
        0x00, 0x00, 0x00, 0x3F, // f32 step 0.5
        0x03,                   // k = 3
        0x81, 0xE0, 0x80, 0xFA, // 10000 0011 110000 0100 0000 0111 110100 0100
        0x20,                   // (37 bits) + 3 zero padding bits
        // row 1: step 2 = 0.25 * 8; q = 0 x 7, 32 -> u = 0 x 7, 64; k = 0
        0x00, 0x00, 0x00, 0x40, // f32 step 2.0
        0x00,                   // k = 0
        0x01, 0xFF, 0xFE,       // seven 0s (u = 0), then 16 ones: escape for u = 64
        0x0C, 0x40,             // exp-Golomb(0) of 64 - 16 = 48: 00000 110001, 6 pad bits
    ];
    let f = check("activation_rice", &EXPECTED);
    assert_eq!(values(&f), rice_golden().data);
}

#[test]
fn output() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 32] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x02,                   // type OUTPUT
        0x00,                   // flags: none allowed
        0x04, 0x00,             // seqPos 4
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x08, 0x00, 0x00, 0x00, // payload size 8 = 2 ids
        0x02, 0x00, 0x00, 0x00, // dim0: 2 ids
        0x01, 0x00, 0x00, 0x00, // dim1: 1
        0x0B, 0x00, 0x00, 0x00, // id 11 (u32 LE)
        0x50, 0xC4, 0x00, 0x00, // id 50256
    ];
    let f = check("output", &EXPECTED);
    assert_eq!(
        Output::from_frame(&f, &Limits::default()).expect("ids").ids,
        [11, 50256]
    );
}

#[test]
fn tokens() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 32] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x10,                   // type TOKENS (extension)
        0x00,                   // flags: none allowed
        0x02, 0x00,             // seqPos 2 (sequence length after this step)
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x08, 0x00, 0x00, 0x00, // payload size 8 = 2 ids
        0x02, 0x00, 0x00, 0x00, // dim0: 2 ids
        0x01, 0x00, 0x00, 0x00, // dim1: 1
        0x88, 0x3C, 0x00, 0x00, // id 15496
        0xE3, 0x03, 0x00, 0x00, // id 995
    ];
    let f = check("tokens", &EXPECTED);
    assert_eq!(
        Tokens::from_frame(&f, &Limits::default()).expect("ids").ids,
        [15496, 995]
    );
}

#[test]
fn top_logits() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 40] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x11,                   // type TOP_LOGITS (extension)
        0x00,                   // flags: none allowed
        0x03, 0x00,             // seqPos 3
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x10, 0x00, 0x00, 0x00, // payload size 16 = 2 entries of 8
        0x01, 0x00, 0x00, 0x00, // dim0: 1 (last position)
        0x02, 0x00, 0x00, 0x00, // dim1: k = 2
        0xE3, 0x03, 0x00, 0x00, // id 995
        0x00, 0x00, 0x48, 0x41, // logit 12.5
        0x88, 0x3C, 0x00, 0x00, // id 15496
        0x00, 0x00, 0xA0, 0xBF, // logit -1.25
    ];
    let f = check("top_logits", &EXPECTED);
    let e = TopLogits::from_frame(&f, &Limits::default())
        .expect("top-k")
        .entries;
    assert_eq!(
        (e[0].id, e[0].logit, e[1].id, e[1].logit),
        (995, 12.5, 15496, -1.25)
    );
}

#[test]
fn top_logits_rows() {
    #[rustfmt::skip]
    const EXPECTED: [u8; 56] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x11,                   // type TOP_LOGITS (extension)
        0x00,                   // flags: none allowed
        0x04, 0x00,             // seqPos 4
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x20, 0x00, 0x00, 0x00, // payload size 32 = 2 rows x 2 entries of 8
        0x02, 0x00, 0x00, 0x00, // dim0: 2 rows (the step's last two positions)
        0x02, 0x00, 0x00, 0x00, // dim1: k = 2
        0xE3, 0x03, 0x00, 0x00, // row 0: id 995
        0x00, 0x00, 0x48, 0x41, //        logit 12.5
        0x88, 0x3C, 0x00, 0x00, //        id 15496
        0x00, 0x00, 0xA0, 0xBF, //        logit -1.25
        0x0D, 0x00, 0x00, 0x00, // row 1: id 13
        0x00, 0x00, 0x00, 0x40, //        logit 2
        0xE3, 0x03, 0x00, 0x00, //        id 995
        0x00, 0x00, 0x00, 0x3F, //        logit 0.5
    ];
    let f = check("top_logits_rows", &EXPECTED);
    let t = TopLogits::from_frame(&f, &Limits::default()).expect("top-k");
    assert_eq!((t.rows, t.k()), (2, 2));
    assert_eq!((t.row(1)[0].id, t.row(1)[0].logit), (13, 2.0));
    assert_eq!(t.row(1)[1].id, 995);
}

#[test]
fn control() {
    #[rustfmt::skip]
    const HEADER: [u8; 24] = [
        0x53, 0x59, 0x4E, 0x31, // magic "SYN1"
        0x12,                   // type CONTROL (extension)
        0x00,                   // flags: none allowed
        0x00, 0x00,             // seqPos 0
        0x07, 0x00, 0x00, 0x00, // requestId 7
        0x1E, 0x00, 0x00, 0x00, // payload size 30
        0x1E, 0x00, 0x00, 0x00, // dim0: 30 = payload byte length
        0x01, 0x00, 0x00, 0x00, // dim1: 1
    ];
    let json = br#"{"op":"close","reason":"done"}"#; // compact UTF-8 JSON object
    let f = check("control", &[&HEADER[..], &json[..]].concat());
    let msg = Control::from_frame(&f, &Limits::default())
        .expect("json")
        .message();
    assert_eq!(
        msg,
        Ok(ControlMessage::Close {
            reason: Some("done".into())
        })
    );
}
