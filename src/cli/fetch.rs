//! `synapse fetch`: make the default model ready and print its directory.

/// Arguments of `synapse fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also check every shard file's sha256 against the manifest.
    #[arg(long)]
    verify: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = synapse::fetch::ensure_default_model()?;
    if args.verify {
        synapse::model::ModelDir::open(&dir)?.verify()?;
        eprintln!("synapse: every shard matches its sha256");
    }
    println!("{}", dir.display());
    Ok(())
}
