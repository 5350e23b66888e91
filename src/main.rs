//! `ember`: convert checkpoints to `.ember` files and run them.

#![forbid(unsafe_code)]

mod chat_template;
mod commands;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ember: an embedded-friendly inference runtime for transformer language models.
#[derive(Parser, Debug)]
#[command(name = "ember", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a llama2.c, GGUF or Hugging Face checkpoint into an .ember file.
    Convert(commands::convert::Args),
    /// Generate text from a prompt (greedy decoding).
    Run(commands::run::Args),
    /// Show a model file's header, hyperparameters, tensors and tokenizer.
    Inspect(commands::inspect::Args),
    /// Check a model file completely, including every tensor checksum.
    Verify(commands::verify::Args),
    /// Measure perplexity of a model on a text file.
    Perplexity(commands::perplexity::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(a) => commands::convert::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report::print_error(e.as_ref());
            ExitCode::FAILURE
        }
    }
}
