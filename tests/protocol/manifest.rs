//! tests/fixtures/syn1/manifest.json: what a decoder must find in each golden file, in plain
//! JSON (header fields, flags, shape, decoded values), so node-web's decoder can be tested
//! against the same files without reimplementing our test values.

use serde_json::{Value, json};
use synapse::protocol::*;

use crate::golden::{Golden, goldens};
use crate::{check_json_fixture, fixtures_dir};

/// What a decoder should find in a frame, in plain JSON, for node-web's tests.
fn describe(g: &Golden) -> Value {
    let f = &g.frame;
    let bytes = encode(f);
    let l = Limits::default();
    let decoded = match f.msg_type {
        MessageType::Activation => {
            let p = read_activation(f, &l).expect("activation");
            let mut d = match &p.values {
                PayloadValues::F32(v) => json!({ "values": v }),
                PayloadValues::Int8 { q, scales } => {
                    json!({ "q": q, "scales": scales, "values": p.values.dequantize(p.cols) })
                }
                PayloadValues::Int4 { q, scale } => {
                    json!({ "q": q, "scale": scale, "values": p.values.dequantize(p.cols) })
                }
                PayloadValues::Rice(v) => json!({
                    "q": v.q, "steps": v.steps, "ks": v.ks, "values": p.values.dequantize(p.cols)
                }),
            };
            d["encoding"] = json!(p.encoding.name());
            d["layout"] = json!(match (p.encoding, p.rows) {
                (Encoding::F32, _) => "[f32 x rows*cols]",
                (Encoding::Int4, _) => "[ceil(n/2) bytes][f32 scale][u32 n]",
                (Encoding::Rice, _) =>
                    "rows x [f32 step][u8 k][Rice/exp-Golomb bits, MSB first, zero-padded to a byte]",
                (_, 1) => "[i8 x cols][f32 scale]",
                _ => "[i8 x rows*cols][f32 scale x rows][u16 rows]",
            });
            if p.encoding == Encoding::Int8Delta {
                d["values_are"] = json!("difference to the reference (add q * scale to it)");
            }
            if p.compressed {
                let raw = decompress(&f.payload, u64::MAX).expect("rle");
                d["decompressed_payload_size"] = json!(raw.len());
            }
            if let (Value::Object(d), Value::Object(extra)) = (&mut d, &g.extra) {
                d.extend(extra.clone());
            }
            d
        }
        MessageType::Output => json!({ "ids": Output::from_frame(f, &l).expect("ids").ids }),
        MessageType::Tokens => json!({ "ids": Tokens::from_frame(f, &l).expect("ids").ids }),
        MessageType::TopLogits => {
            let t = TopLogits::from_frame(f, &l).expect("top-k");
            let e = &t.entries;
            json!({
                "rows": t.rows,
                "entries": e.iter().map(|e| json!({"id": e.id, "logit": e.logit})).collect::<Vec<_>>(),
            })
        }
        MessageType::Control => {
            json!({ "json": Control::from_frame(f, &l).expect("json").object })
        }
    };
    json!({
        "name": g.name,
        "file": format!("{}.bin", g.name),
        "size": bytes.len(),
        "contains": g.contains,
        "message_type": f.msg_type.name(),
        "header": {
            "magic": "SYN1",
            "type": f.msg_type.code(),
            "flags": f.flags.to_byte(),
            "seq_pos": f.seq_pos,
            "request_id": f.request_id,
            "payload_size": f.payload.len(),
            "dim0": f.dim0,
            "dim1": f.dim1,
        },
        "flags": {
            "quantization": f.flags.quantization.name(),
            "compressed": f.flags.compressed,
            "delta": f.flags.delta,
        },
        "shape": [f.dim0, f.dim1],
        "decoded": decoded,
    })
}

#[test]
fn manifest_describes_every_golden() {
    let frames: Vec<Value> = goldens().iter().map(describe).collect();
    let manifest = json!({
        "format": "SYN1 golden frames; see docs/PROTOCOL.md",
        "regenerate": "SYN1_BLESS=1 cargo test --test protocol",
        "frames": frames,
    });
    check_json_fixture(&fixtures_dir().join("manifest.json"), &manifest);
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    on_disk.sort();
    let mut named: Vec<String> = goldens()
        .iter()
        .map(|g| format!("{}.bin", g.name))
        .collect();
    named.sort();
    if !crate::bless() {
        assert_eq!(
            on_disk, named,
            "every fixture .bin has a golden test and vice versa"
        );
    }
    let types: std::collections::HashSet<_> = goldens().iter().map(|g| g.frame.msg_type).collect();
    assert_eq!(
        types.len(),
        MessageType::ALL.len(),
        "a golden for every message type"
    );
}
