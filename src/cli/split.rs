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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let ckpt = splitter::open(&args.input)?;
    let opts = splitter::SplitOptions {
        shards: args.shards,
        force: args.force,
        progress: true,
    };
    let manifest = splitter::split(&ckpt, &args.out, &opts)?;
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
    eprintln!("split in {:.2} s", start.elapsed().as_secs_f64());
    println!("{}", args.out.display());
    Ok(())
}
