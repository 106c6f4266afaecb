//! Measures activation encodings on real hidden states: a text is run through a split model
//! with every hop's hidden states encoded and decoded row by row (as decode steps send them),
//! and the final tokens' top-1 predictions are compared with an f32 wire (teacher forcing).
//! Reports bytes per token per hop, the ratio to raw f32 frames, and the top-1 agreement.

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::engine::cpu::CpuShard;
use crate::engine::{Activations, LogitsMode, ShardExecutor, StepInput, StepOutput};
use crate::model::ModelDir;
use crate::protocol::{self, Activation, DeltaDecoder, DeltaEncoder, Encoding, Limits};

/// One encoding's measurement.
#[derive(Debug, Clone, Serialize)]
pub struct WireResult {
    pub encoding: String,
    /// Mean SYN1 frame bytes (header included) for one token's hidden state on one hop.
    pub bytes_per_token: f64,
    /// Raw f32 frame bytes over `bytes_per_token`.
    pub ratio_vs_f32: f64,
    /// Share of positions whose top-1 token equals the f32 wire's.
    pub top1_agreement: f64,
    /// Mean KL divergence (nats) of the next-token distribution from the f32 wire's: a smooth
    /// quality measure (top-1 agreement moves in steps of 1/tokens and hinges on near-ties).
    pub mean_kl: f64,
    /// True for the coordinator's default encoding.
    pub default: bool,
    pub tokens: usize,
    pub hops: usize,
}

/// Something that carries one row of hidden states across a hop: returns the bytes it sent
/// and the values the receiver reconstructs. One instance serves one hop of one stream.
pub trait RowCodec {
    fn round_trip(&mut self, row: &[f32], seq: u16) -> Result<(usize, Vec<f32>)>;
}

/// An encoder/decoder pair for one hop, used one row at a time.
enum Codec {
    Plain(Encoding),
    Delta(Box<DeltaEncoder>, DeltaDecoder),
    /// RICE at a chosen step ratio (`Plain(Encoding::Rice)` uses the default one).
    Rice(f32),
}

impl RowCodec for Codec {
    fn round_trip(&mut self, row: &[f32], seq: u16) -> Result<(usize, Vec<f32>)> {
        Codec::round_trip(self, row, seq)
    }
}

impl Codec {
    fn new(encoding: Encoding) -> Codec {
        match encoding {
            Encoding::Int8Delta => {
                Codec::Delta(Box::new(DeltaEncoder::new(0)), DeltaDecoder::new())
            }
            e => Codec::Plain(e),
        }
    }

    /// Encodes and decodes one row; returns the frame's size and the receiver's values.
    fn round_trip(&mut self, row: &[f32], seq: u16) -> Result<(usize, Vec<f32>)> {
        let act = Activation::new(1, row.len() as u32, row.to_vec())?;
        let limits = Limits::default();
        let (bytes, back) = match self {
            Codec::Plain(e) => {
                let bytes = protocol::encode(&act.to_frame(seq, 1, *e, false)?);
                let frame = protocol::decode(&bytes, &limits)?;
                (bytes.len(), Activation::from_frame(&frame, &limits)?)
            }
            Codec::Rice(ratio) => {
                let bytes = protocol::encode(&act.to_rice_frame(seq, 1, *ratio, false)?);
                let frame = protocol::decode(&bytes, &limits)?;
                (bytes.len(), Activation::from_frame(&frame, &limits)?)
            }
            Codec::Delta(enc, dec) => {
                let bytes = protocol::encode(&enc.encode(&act, seq, 1)?);
                let frame = protocol::decode(&bytes, &limits)?;
                (bytes.len(), dec.decode(&frame, &limits)?)
            }
        };
        Ok((bytes, back.data))
    }
}

/// The encodings measured, and the one the coordinator uses by default.
pub const ENCODINGS: [Encoding; 5] = [
    Encoding::F32,
    Encoding::Int8,
    Encoding::Int8Delta,
    Encoding::Int4,
    Encoding::Rice,
];

/// Name of the RICE frames sent at `protocol::RICE_COMPACT_RATIO` (same format as "rice",
/// coarser steps), measured after [`ENCODINGS`].
pub const RICE_COMPACT_NAME: &str = "rice-compact";

/// A codec factory for RICE frames at step ratio `ratio` (for sweeps).
pub fn rice_codec(ratio: f32) -> CodecFactory {
    Box::new(move || Box::new(Codec::Rice(ratio)) as Box<dyn RowCodec>)
}

/// Makes a fresh codec for a hop.
pub type CodecFactory = Box<dyn Fn() -> Box<dyn RowCodec>>;

/// Runs `text` (at most `max_tokens` of it) through the model in `model` once per encoding.
pub fn evaluate(
    model: &ModelDir,
    text: &str,
    max_tokens: usize,
    default: Encoding,
) -> Result<Vec<WireResult>> {
    let mut codecs: Vec<(String, bool, CodecFactory)> = ENCODINGS
        .iter()
        .map(|&e| {
            let f: CodecFactory = Box::new(move || Box::new(Codec::new(e)) as Box<dyn RowCodec>);
            (encoding_name(e).to_string(), e == default, f)
        })
        .collect();
    codecs.push((
        RICE_COMPACT_NAME.to_string(),
        false,
        rice_codec(protocol::RICE_COMPACT_RATIO),
    ));
    evaluate_codecs(model, text, max_tokens, codecs)
}

/// Like [`evaluate`] for any codecs; the first must be lossless (it is the reference).
pub fn evaluate_codecs(
    model: &ModelDir,
    text: &str,
    max_tokens: usize,
    codecs: Vec<(String, bool, CodecFactory)>,
) -> Result<Vec<WireResult>> {
    let m = &model.manifest;
    if m.shards.len() < 2 {
        bail!("the wire is measured between shards: split the model into at least 2 (it has 1)");
    }
    let tok = model.tokenizer()?;
    let mut ids = tok.encode(text)?;
    ids.truncate(max_tokens);
    if ids.len() < 2 {
        bail!("the evaluation text is too short");
    }
    let t = ids.len();
    let mut shards: Vec<CpuShard> = (0..m.shards.len())
        .map(|i| CpuShard::load(&model.dir, m, i).with_context(|| format!("loading shard {i}")))
        .collect::<Result<_>>()?;
    // Shard 0's output is the same for every encoding.
    shards[0].open_session(1)?;
    let first = match shards[0].step(1, 0, StepInput::Tokens(&ids), LogitsMode::All)? {
        StepOutput::Hidden(h) => h,
        StepOutput::Logits(_) => bail!("shard 0 returned logits"),
    };
    shards[0].close_session(1)?;
    let mut reference: Option<(Vec<u32>, f64, Vec<Vec<f64>>)> = None;
    let mut out = Vec::new();
    for (n, (name, is_default, factory)) in codecs.iter().enumerate() {
        let session = n as u64 + 10;
        let mut hidden = first.clone();
        let mut frame_bytes = 0usize;
        let mut hops = 0;
        let mut top1 = Vec::new();
        let mut log_probs = Vec::new();
        for shard in shards.iter_mut().skip(1) {
            // The hop into this shard: every row through the codec, in order.
            let mut codec = factory();
            let mut data = Vec::with_capacity(hidden.data.len());
            for r in 0..t {
                let (b, back) =
                    codec.round_trip(hidden.row(r), protocol::seq_pos_for(r as u64 + 1))?;
                frame_bytes += b;
                data.extend(back);
            }
            hops += 1;
            let received = Activations::new(t, hidden.cols, data)?;
            shard.open_session(session)?;
            let res = shard.step(session, 0, StepInput::Hidden(&received), LogitsMode::All);
            shard.close_session(session)?;
            match res? {
                StepOutput::Hidden(h) => hidden = h,
                StepOutput::Logits(l) => {
                    top1 = (0..l.rows)
                        .map(|r| crate::engine::top_k(l.row(r), 1)[0].0)
                        .collect();
                    log_probs = (0..l.rows).map(|r| log_softmax(l.row(r))).collect();
                }
            }
        }
        let bytes_per_token = frame_bytes as f64 / (t * hops) as f64;
        let (want, f32_bytes, want_lp) =
            reference.get_or_insert_with(|| (top1.clone(), bytes_per_token, log_probs.clone()));
        let agree = top1.iter().zip(want.iter()).filter(|(a, b)| a == b).count();
        let kl: f64 = want_lp
            .iter()
            .zip(&log_probs)
            .map(|(p, q)| p.iter().zip(q).map(|(a, b)| a.exp() * (a - b)).sum::<f64>())
            .sum();
        let f32_bytes = *f32_bytes;
        out.push(WireResult {
            encoding: name.clone(),
            bytes_per_token,
            ratio_vs_f32: f32_bytes / bytes_per_token,
            top1_agreement: agree as f64 / t as f64,
            mean_kl: kl / t as f64,
            default: *is_default,
            tokens: t,
            hops,
        });
    }
    Ok(out)
}

/// Natural-log softmax of one row of logits, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let sum: f64 = logits.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&v| f64::from(v) - log_z).collect()
}

/// The name an encoding has in reports and flags.
pub fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::F32 => "f32",
        Encoding::Int8 => "int8",
        Encoding::Int8Delta => "int8-delta",
        Encoding::Int4 => "int4",
        Encoding::Rice => "rice",
    }
}
