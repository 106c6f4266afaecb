//! The `synapse` command: parses the command line and hands each subcommand to its module
//! under `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synapse: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
