use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ember_runtime::generate::generate_greedy;
use ember_runtime::tokenizer::EncodeOptions;
use ember_runtime::{Model, Session, SessionConfig};

use crate::chat_template::{self, Message};
use crate::report::{peak_rss_bytes, CliResult};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt text. Special tokens written in it (e.g. `<|im_start|>`) are
    /// recognised unless --no-special is given.
    #[arg(short, long, default_value = "")]
    prompt: String,
    /// Maximum number of tokens to generate.
    #[arg(short = 'n', long, default_value_t = 256)]
    max_tokens: usize,
    /// Context length (KV cache size); default: prompt + max tokens, capped at
    /// the model's maximum.
    #[arg(long)]
    ctx: Option<usize>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Treat special-token text in the prompt as plain text.
    #[arg(long)]
    no_special: bool,
    /// Print details (load time, token counts) on stderr.
    #[arg(short, long)]
    verbose: bool,
    /// Print the text and statistics as one JSON object instead of streaming.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> CliResult {
    let t0 = Instant::now();
    let model = Arc::new(Model::load(&args.model)?);
    let load = t0.elapsed();
    let tok = model.tokenizer();

    let prompt_text = if args.chat {
        let template = model.chat_template().ok_or(
            "this model has no chat template; run without --chat and format the prompt yourself",
        )?;
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message {
                role: "system".into(),
                content: s.clone(),
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: args.prompt.clone(),
        });
        let name = |id: Option<u32>| {
            id.and_then(|i| tok.spec().tokens.get(i as usize))
                .cloned()
                .unwrap_or_default()
        };
        chat_template::render(
            template,
            &messages,
            true,
            &name(tok.bos()),
            &name(tok.eos()),
        )?
    } else {
        args.prompt.clone()
    };
    let mut opts: EncodeOptions = tok.default_encode_options();
    opts.parse_special = !args.no_special;
    let mut prompt = tok.encode(&prompt_text, opts);
    if prompt.is_empty() {
        // An empty prompt starts from BOS, as llama2.c does.
        prompt.push(
            tok.bos()
                .ok_or("empty prompt and the model has no BOS token")?,
        );
    }
    let max_ctx = model.hparams().max_context as usize;
    let ctx = args
        .ctx
        .unwrap_or((prompt.len() + args.max_tokens).min(max_ctx));
    if prompt.len() > ctx {
        return Err(format!(
            "the prompt is {} tokens but the context is {ctx} (the model allows {max_ctx})",
            prompt.len()
        )
        .into());
    }
    let mut session = Session::new(model.clone(), SessionConfig { context: ctx })?;
    if args.verbose {
        eprintln!(
            "loaded {} in {:.1} ms ({}); prompt {} tokens; context {ctx}",
            args.model.display(),
            load.as_secs_f64() * 1e3,
            if model.is_mapped() {
                "memory-mapped"
            } else {
                "in memory"
            },
            prompt.len()
        );
    }

    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let stats = generate_greedy(&mut session, &prompt, args.max_tokens, |_, piece| {
        if args.json {
            text.push_str(piece);
            return true;
        }
        match stdout
            .write_all(piece.as_bytes())
            .and_then(|_| stdout.flush())
        {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    let first_token_ms = (load + stats.prefill).as_secs_f64() * 1e3;
    if args.json {
        let v = serde_json::json!({
            "text": text,
            "prompt_tokens": stats.prompt_tokens,
            "generated_tokens": stats.generated_tokens,
            "stop": stats.stop.name(),
            "load_ms": load.as_secs_f64() * 1e3,
            "first_token_ms": first_token_ms,
            "prefill_tokens_per_second": stats.prefill_tokens_per_second(),
            "decode_tokens_per_second": stats.decode_tokens_per_second(),
            "peak_rss_bytes": peak_rss_bytes(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens, {} generated ({}); prefill {:.1} tok/s, decode {:.1} tok/s, first token after {:.0} ms]",
            stats.prompt_tokens,
            stats.generated_tokens,
            stats.stop.name(),
            stats.prefill_tokens_per_second(),
            stats.decode_tokens_per_second(),
            first_token_ms
        );
    }
    Ok(())
}
