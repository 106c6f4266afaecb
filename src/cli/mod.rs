//! Command-line interface: one file per subcommand. The `///` comments are the help text.

#[cfg(feature = "gui")]
mod app;
mod bench;
mod fetch;
mod generate;
mod node;
mod serve;
mod simulate;
mod split;

use clap::{Parser, Subcommand};

/// Synapse runs a language model split across ordinary devices' GPUs. With no subcommand it
/// opens the desktop app (`synapse app`).
#[derive(Debug, Parser)]
#[command(name = "synapse", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download, verify and split the default model (SmolLM2-135M-Instruct); prints its
    /// directory as the last line.
    Fetch(fetch::Args),
    /// Cut a GGUF file or Hugging Face model folder into shards (layer ranges).
    Split(split::Args),
    /// Generate text from a prompt.
    Generate(generate::Args),
    /// Run the coordinator headless: nodes join it, generations run through it.
    Serve(serve::Args),
    /// Join a coordinator as a native compute node.
    Node(node::Args),
    /// Measure prefill and decode speed, and the GPU time per op kind.
    Bench(bench::Args),
    /// Predict what the coordinator would do with a mix of devices (scenario files or
    /// --add PROFILE=N) and how fast it would run, without the devices.
    Simulate(simulate::Args),
    /// Open the coordinator as a desktop app: every device, its shards and each activation
    /// travelling between them; type prompts, drag shards between devices. Takes `serve`'s
    /// flags.
    #[cfg(feature = "gui")]
    App(app::Args),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        return no_subcommand();
    };
    match command {
        Command::Fetch(a) => fetch::run(a),
        Command::Split(a) => split::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Node(a) => node::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Simulate(a) => simulate::run(a),
        #[cfg(feature = "gui")]
        Command::App(a) => app::run(a),
    }
}

#[cfg(feature = "gui")]
fn no_subcommand() -> anyhow::Result<()> {
    app::run(app::Args::default())
}

#[cfg(not(feature = "gui"))]
fn no_subcommand() -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut help = Cli::command();
    help.print_help()?;
    anyhow::bail!(
        "this synapse was built without the desktop app (cargo feature `gui`); pick a subcommand \
         above, or rebuild with default features"
    )
}
