//! `ember`: convert checkpoints to `.ember` files and run them.

#![forbid(unsafe_code)]

mod commands;
mod report;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Bounds the memory of chat-template rendering (`ember_runtime::memory_budget`):
/// a template from a model file must not exhaust the host's memory.
#[global_allocator]
static ALLOCATOR: ember_runtime::memory_budget::BudgetAllocator =
    ember_runtime::memory_budget::BudgetAllocator;

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
    /// Generate text from a prompt (greedy by default; sampling flags available).
    Run(commands::run::Args),
    /// Chat interactively with a model (or run a script of turns from stdin).
    Chat(commands::chat::Args),
    /// Show a model file's header, hyperparameters, tensors and tokenizer.
    Inspect(commands::inspect::Args),
    /// Check a model file completely, including every tensor checksum.
    Verify(commands::verify::Args),
    /// Measure perplexity of a model on a text file.
    Perplexity(commands::perplexity::Args),
    /// Mean KL divergence, top-1 agreement and perplexity of a model against a reference.
    Kld(commands::kld::Args),
    /// Prefill/decode speed and peak RSS (optionally of a random-weight model).
    Bench(commands::bench::Args),
    /// Print the token ids (and pieces) of a text.
    Tokenize(commands::tokenize::Args),
    /// Print the text a sequence of token ids decodes to.
    Detokenize(commands::detokenize::Args),
    /// Train a LoRA adapter on text or chat data (the base model stays frozen).
    Finetune(commands::finetune::Args),
    /// Render a conversation (JSON) with the model's chat template.
    ChatTemplate(commands::chat_template::Args),
    /// Bake a LoRA adapter (PEFT directory) into a new model file.
    Merge(commands::merge::Args),
    /// Evaluate: BLEU (sacreBLEU) and ROUGE (rouge-score) of texts, multiple-choice accuracy and generation benchmarks of a model.
    Eval(commands::eval::Args),
}

fn main() -> ExitCode {
    let cli = parse_command_line();
    let result = match cli.command {
        Command::Convert(a) => commands::convert::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Kld(a) => commands::kld::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Detokenize(a) => commands::detokenize::run(a),
        Command::ChatTemplate(a) => commands::chat_template::run(a),
        Command::Finetune(a) => commands::finetune::run(a),
        Command::Merge(a) => commands::merge::run(a),
        Command::Eval(a) => commands::eval::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report::print_error(e.as_ref());
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line. Every flag value may be a negative number
/// (`-n -1`, `--temp -1`, `--top-p -1`): clap would otherwise take it for a
/// flag, and the value's own check gives the clearer message.
fn parse_command_line() -> Cli {
    let command = Cli::command().mut_subcommands(|sub| {
        sub.mut_args(|arg| {
            if arg.get_action().takes_values() {
                arg.allow_negative_numbers(true)
            } else {
                arg
            }
        })
    });
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}
