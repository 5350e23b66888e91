use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ember_progress::{Progress, Unit};
use ember_runtime::eval::perplexity_with_progress;
use ember_runtime::{Session, SessionConfig};

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// UTF-8 text file.
    #[arg(short, long)]
    file: PathBuf,
    /// Window length in tokens: the text is cut into consecutive windows of this
    /// many tokens, each evaluated from an empty cache.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use only the first N characters of the file.
    #[arg(long)]
    max_chars: Option<usize>,
    /// Worker threads (results do not depend on it): a count, or 0 / auto for
    /// every CPU [default: one per physical core].
    #[arg(short = 't', long, value_parser = super::args::parse_threads,
          default_value_t = super::args::default_threads(), hide_default_value = true)]
    threads: usize,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Prepend the BOS token to the text (as the model's tokenizer asks by default
    /// for prompts; perplexity conventionally runs without).
    #[arg(long)]
    add_bos: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lora: super::merge::LoraArgs,
    #[command(flatten)]
    quiet: super::args::QuietArg,
}

pub fn run(args: Args) -> CliResult {
    super::args::check_window(args.ctx)?;
    let bytes = ember_runtime::read_file::read_file(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{} is not valid UTF-8 (first bad byte at offset {})",
            args.file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let text: &str = match args.max_chars {
        Some(n) => text
            .char_indices()
            .nth(n)
            .map_or(text.as_str(), |(i, _)| &text[..i]),
        None => &text,
    };
    let model = Arc::new(super::args::load_model(&args.model)?);
    let tok = model.tokenizer();
    let mut opts = tok.default_encode_options();
    opts.add_bos = args.add_bos;
    opts.parse_special = false;
    let mut ids = tok.try_encode(text, opts)?;
    if let Some(n) = args.max_tokens {
        ids.truncate(n);
    }
    let ctx = args.ctx.min(model.hparams().max_context as usize);
    let mut session = Session::new(
        model.clone(),
        SessionConfig {
            threads: args.threads,
            ..SessionConfig::new(ctx)
        },
    )?;
    args.lora.attach(&mut session)?;
    let t0 = Instant::now();
    let progress = Progress::new(
        "perplexity",
        ids.len() as u64,
        Unit::Items("tokens"),
        args.quiet.quiet,
    );
    let r = perplexity_with_progress(&mut session, &ids, ctx, &mut |done| {
        progress.set_position(done as u64)
    })?;
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    if args.json {
        let v = serde_json::json!({
            "tokens": ids.len(),
            "predictions": r.predictions,
            "window": ctx,
            "mean_nll": r.mean_nll,
            "perplexity": r.perplexity,
            "seconds": secs,
            "tokens_per_second": r.predictions as f64 / secs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "perplexity {:.4} over {} predictions ({} tokens, window {ctx})",
            r.perplexity,
            r.predictions,
            ids.len()
        );
        eprintln!("[{:.1} s, {:.1} tok/s]", secs, r.predictions as f64 / secs);
    }
    Ok(())
}
