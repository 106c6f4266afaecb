//! `synapse split`: cut a checkpoint into shards.

use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `synapse split`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A GGUF file (arch llama) or a Hugging Face model folder (gpt2 or llama).
    input: PathBuf,
    /// The model directory to write (manifest.json, tokenizer.json, one file per shard).
    #[arg(long)]
    out: PathBuf,
    /// Number of shards, from 1 to the model's number of layers.
    #[arg(long, default_value_t = 3)]
    shards: usize,
    /// Replace OUT if it already exists.
    #[arg(long)]
    force: bool,
    /// Storage of the weight matrices: `keep` copies a GGUF's Q8_0/Q4_0/Q4_1/Q4_K/Q6_K/F16/F32
    /// blocks as they are (other types become the nearest of these, and split says so); `f16` converts
    /// every matrix to f16; `q8_0`, `q4_0`, `q4_1` quantize with ggml's reference rounding.
    /// Norms and biases are f16 in every mode. f16 is the default while only the CPU engine
    /// computes on blocks (the GPU engine expands them to f16 at load; the browser refuses them).
    #[arg(long, default_value = "f16", value_parser = parse_weights)]
    weights: splitter::WeightsMode,
}

fn parse_weights(s: &str) -> Result<splitter::WeightsMode, String> {
    splitter::WeightsMode::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let ckpt = splitter::open(&args.input)?;
    let opts = splitter::SplitOptions {
        shards: args.shards,
        force: args.force,
        progress: true,
        weights: args.weights,
    };
    let outcome = splitter::split_with_notes(&ckpt, &args.out, &opts)?;
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    let manifest = outcome.manifest;
    let c = &manifest.config;
    eprintln!(
        "{} {}: {} layers, hidden {}, vocab {}",
        manifest.architecture, manifest.source.name, c.n_layers, c.hidden_size, c.vocab_size
    );
    for s in &manifest.shards {
        eprintln!(
            "  shard {}: layers {:>2}-{:<2} {:>8.1} MB  {}{}",
            s.index,
            s.layers[0],
            s.layers[1],
            s.bytes as f64 / 1e6,
            s.file,
            match (s.has_embedding, s.has_head) {
                (true, true) => "  (embedding, head)",
                (true, false) => "  (embedding)",
                (false, true) => "  (head)",
                _ => "",
            }
        );
    }
    let total: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    eprintln!(
        "weights {} ({}): {:.1} MB of shards",
        args.weights.name(),
        manifest.dtype,
        total as f64 / 1e6
    );
    eprintln!("split in {:.2} s", start.elapsed().as_secs_f64());
    println!("{}", args.out.display());
    Ok(())
}
