use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_runtime::chat::{self, Message};
use ember_runtime::generate::{
    GenerateConfig, GenerationStats, Generator, PrefillOptions, StopReason,
};
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::tokenizer::EncodeOptions;
use ember_runtime::{ContextPolicy, KvType, Model, Session, SessionConfig};

use crate::report::{peak_rss_bytes, CliResult};
use ember_progress::{Progress, Unit};

/// Sampling and session flags shared by `run` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 or below = greedy (the default: no randomness).
    #[arg(long = "temp", default_value_t = 0.0, value_parser = super::args::parse_temperature)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0 = off; applies with --temp > 0).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold in (0, 1] (1 = off; applies with --temp > 0).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the best one (0 = off; with --temp > 0).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens, > 0 (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of the penalties in tokens (0 = off; -1 or more than the context
    /// = the whole context).
    #[arg(long, default_value_t = 64, value_parser = super::args::parse_count_or_all)]
    pub repeat_last_n: usize,
    /// Subtracted from the logit of every token in the window (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtracted once per occurrence in the window (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed (default or -1: from the clock; printed with --verbose / --json).
    #[arg(long, value_parser = super::args::parse_seed)]
    pub seed: Option<u64>,
    /// Stop when the output contains this text (repeatable; not printed).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// KV cache type: f16 (default), f32 or q8_0.
    #[arg(long, default_value = "f16", value_parser = parse_kv_type)]
    pub kv_type: KvType,
    /// When the context is full: stop (error) or drop the oldest half of the
    /// tokens after --keep and go on (shift).
    #[arg(long, value_parser = ["error", "shift"])]
    pub context_policy: Option<String>,
    /// Tokens at the start that a context shift keeps, less than the context
    /// minus 1 (default: the BOS token or the system prompt; -1 = the whole
    /// prompt).
    #[arg(long, value_parser = super::args::parse_count_or_all)]
    pub keep: Option<usize>,
    /// Worker threads (results do not depend on it): a count, or 0 / auto for
    /// every CPU [default: one per physical core].
    #[arg(short = 't', long, value_parser = super::args::parse_threads,
          default_value_t = super::args::default_threads(), hide_default_value = true)]
    pub threads: usize,
    /// Prompt tokens per prefill batch.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
}

pub(crate) fn parse_kv_type(s: &str) -> Result<KvType, String> {
    KvType::from_name(s).map_err(|e| e.to_string())
}

impl SamplingArgs {
    /// The sampler settings for a context of `ctx` tokens and the seed actually
    /// used, checked (every range, whether the chain uses the setting or not).
    pub fn sampler_config(&self, ctx: usize) -> Result<SamplerConfig, ember_runtime::Error> {
        let seed = self.seed.unwrap_or_else(super::args::clock_seed);
        let config = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            // The window holds at most the context (and -1 means all of it).
            repeat_last_n: self.repeat_last_n.min(ctx),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: Vec::new(),
            seed,
        };
        config.validate()?;
        Ok(config)
    }

    /// The context policy, `default_shift` unless given. A shift keeps
    /// `default_keep` tokens (clamped so the shift stays possible) unless
    /// --keep says how many (-1: `whole_prompt`); an explicit count that
    /// leaves nothing to shift is an error.
    pub fn policy(
        &self,
        default_shift: bool,
        default_keep: usize,
        whole_prompt: usize,
        ctx: usize,
    ) -> Result<ContextPolicy, String> {
        let shift = match self.context_policy.as_deref() {
            Some("shift") => true,
            Some(_) => false,
            None => default_shift,
        };
        if !shift {
            return Ok(ContextPolicy::Error);
        }
        let most = ctx.saturating_sub(2);
        let keep = match self.keep {
            None => default_keep.min(most),
            Some(usize::MAX) if whole_prompt <= most => whole_prompt,
            Some(usize::MAX) => {
                return Err(format!(
                    "--keep -1 keeps the whole prompt ({whole_prompt} tokens), but a shift \
                     in a context of {ctx} can keep at most {most}"
                ))
            }
            Some(k) if k <= most => k,
            Some(k) => {
                return Err(format!(
                    "--keep {k} leaves nothing to shift: a context of {ctx} can keep at most {most}"
                ))
            }
        };
        Ok(ContextPolicy::Shift { keep })
    }

    /// The session config for `ctx` positions and `policy`.
    pub fn session_config(&self, ctx: usize, policy: ContextPolicy) -> SessionConfig {
        SessionConfig {
            context: ctx,
            kv_type: self.kv_type,
            threads: self.threads,
            batch: self.batch,
            context_policy: policy,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt text. Special tokens written in it (e.g. `<|im_start|>`) are
    /// recognised unless --no-special is given.
    #[arg(short, long, default_value = "")]
    prompt: String,
    /// Maximum number of tokens to generate (-1 = no limit: until the end of
    /// text, a stop string or a full context).
    #[arg(short = 'n', long, default_value_t = 256, value_parser = super::args::parse_max_tokens)]
    max_tokens: usize,
    /// Context length (KV cache size) [default: prompt + max tokens, capped at
    /// the model's maximum and, with -n -1, at 4096; 0 = the model's maximum].
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
    /// Reuse (and save) the processed prompt in FILE: a later run whose prompt
    /// starts with the cached tokens skips them.
    #[arg(long)]
    prompt_cache: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    lora: super::merge::LoraArgs,
    /// Print details (load time, token counts) on stderr.
    #[arg(short, long)]
    verbose: bool,
    /// Print the text and statistics as one JSON object instead of streaming.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: super::args::QuietArg,
}

pub fn run(args: Args) -> CliResult {
    let t0 = Instant::now();
    let model = Arc::new(super::args::load_model(&args.model)?);
    let load = t0.elapsed();
    let tok = model.tokenizer();

    let prompt = prompt_tokens(&args, &model)?;
    let max_ctx = model.hparams().max_context as usize;
    let ctx = match args.ctx {
        None if args.max_tokens == usize::MAX => {
            max_ctx.min(super::chat::DEFAULT_CONTEXT.max(prompt.len()))
        }
        None => prompt.len().saturating_add(args.max_tokens).min(max_ctx),
        Some(0) => max_ctx,
        Some(n) => n,
    };
    let bos_keep = usize::from(tok.bos().is_some() && tok.bos() == prompt.first().copied());
    let s = &args.sampling;
    let policy = s.policy(false, bos_keep, prompt.len(), ctx)?;
    let session_config = s.session_config(ctx, policy);
    session_config.validate(model.config())?;
    if prompt.len() > ctx && policy == ContextPolicy::Error {
        return Err(format!(
            "the prompt is {} tokens but the context is {ctx} (the model allows {max_ctx}); \
             use a larger --ctx or --context-policy shift",
            prompt.len()
        )
        .into());
    }
    if args.lora.lora.is_some() && args.prompt_cache.is_some() {
        // A prompt cache records the model file, not the adapter its state was
        // computed with.
        return Err("--prompt-cache cannot be combined with --lora".into());
    }
    let mut session = Session::new(model.clone(), session_config)?;
    args.lora.attach(&mut session)?;
    let sampler_config = s.sampler_config(ctx)?;
    let sampler = Sampler::new(model.hparams().vocab_size as usize, &sampler_config)?;
    let mut generator = Generator::new(
        tok,
        sampler,
        GenerateConfig {
            max_tokens: args.max_tokens,
            stop: s.stop.clone(),
            ignore_eos: false,
        },
    )?;

    // Prompt cache: the generator reuses the longest cached prefix of the
    // prompt. Reading it counts as prefill time.
    let t_prefill = Instant::now();
    let cached = args.prompt_cache.as_deref().filter(|p| p.exists());
    if let Some(path) = cached {
        session.load_state(path)?;
    }
    if args.verbose {
        print_setup(
            &args,
            &model,
            &session,
            load,
            prompt.len(),
            policy,
            sampler_config.seed,
        );
    }

    // Prefill apart from decoding so the prompt cache can hold the state right
    // after the prompt, logits included: a full hit then needs no forward pass.
    let progress = Progress::new(
        "prefill",
        prompt.len() as u64,
        Unit::Items("tokens"),
        args.quiet.quiet,
    );
    let prefilled = generator.prefill(
        &mut session,
        &prompt,
        &PrefillOptions {
            reuse_cached: cached.is_some(),
            progress: Some(&|fed, total| {
                progress.set_position((prompt.len() - total + fed) as u64)
            }),
            ..Default::default()
        },
    )?;
    progress.finish();
    let reused = prefilled.reused_tokens;
    let prefill = t_prefill.elapsed();
    let mut snapshot = Vec::new();
    if args.prompt_cache.is_some() && reused < prompt.len() && session.tokens() == prompt {
        session.write_state(&mut snapshot, &[])?;
    }

    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let stats = generator.decode(&mut session, &prefilled, |_, piece| {
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
    if let (Some(path), false) = (&args.prompt_cache, snapshot.is_empty()) {
        std::fs::write(path, &snapshot)
            .map_err(|e| format!("cannot write the prompt cache {}: {e}", path.display()))?;
    }
    let timings = Timings {
        load,
        prefill,
        seed: sampler_config.seed,
    };
    report(&args, &model, &session, &prompt, &stats, &text, timings);
    Ok(())
}

/// The prompt's token ids: `--prompt`, or under `--chat` the conversation
/// rendered with the model's chat template and encoded as transformers does
/// (no BOS added: the template writes its own); an empty prompt is BOS alone
/// (as llama2.c).
fn prompt_tokens(
    args: &Args,
    model: &Model,
) -> Result<Vec<u32>, Box<dyn std::error::Error + Send + Sync>> {
    let tok = model.tokenizer();
    let mut opts: EncodeOptions = tok.default_encode_options();
    let prompt_text = if args.chat {
        let template = model.chat_template().ok_or(
            "this model has no chat template; run without --chat and format the prompt yourself",
        )?;
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::new("system", s.clone()));
        }
        messages.push(Message::new("user", args.prompt.clone()));
        let (bos, eos) = chat::special_texts(tok);
        opts = chat::RENDERED_ENCODE_OPTIONS;
        chat::render(template, &messages, true, &bos, &eos)?
    } else {
        args.prompt.clone()
    };
    opts.parse_special = !args.no_special;
    let mut prompt = tok.try_encode(&prompt_text, opts)?;
    if prompt.is_empty() {
        prompt.push(
            tok.bos()
                .ok_or("empty prompt and the model has no BOS token")?,
        );
    }
    Ok(prompt)
}

/// `--verbose`: what was loaded and how the session is set up.
fn print_setup(
    args: &Args,
    model: &Model,
    session: &Session,
    load: Duration,
    prompt_len: usize,
    policy: ContextPolicy,
    seed: u64,
) {
    let (held, ctx) = (session.tokens().len(), session.config().context);
    eprintln!(
        "loaded {} in {:.1} ms ({}); prompt {prompt_len} tokens ({held} held by the prompt \
         cache); context {ctx}, KV {}, policy {}, seed {seed}",
        args.model.display(),
        load.as_secs_f64() * 1e3,
        if model.is_mapped() {
            "memory-mapped"
        } else {
            "in memory"
        },
        args.sampling.kv_type.name(),
        policy.name(),
    );
    eprintln!(
        "kernels: {} (set EMBER_KERNEL_TIER=scalar|avx2|avx512 to cap the tier)",
        model.kernel_tier().name()
    );
}

/// Wall-clock phases of one `run` before decoding, and the seed it drew with.
struct Timings {
    load: Duration,
    prefill: Duration,
    seed: u64,
}

/// The closing report: JSON on stdout under `--json`, else a summary on stderr.
fn report(
    args: &Args,
    model: &Model,
    session: &Session,
    prompt: &[u32],
    stats: &GenerationStats,
    text: &str,
    Timings {
        load,
        prefill,
        seed,
    }: Timings,
) {
    let reused = stats.reused_tokens;
    let ctx = session.config().context;
    let first_token_ms = (load + prefill).as_secs_f64() * 1e3;
    let prefill_tps = (prompt.len() - reused) as f64 / prefill.as_secs_f64().max(1e-9);
    if args.json {
        let v = serde_json::json!({
            "text": text,
            "prompt_tokens": prompt.len(),
            "prompt_cache_tokens": reused,
            "generated_tokens": stats.generated_tokens,
            "stop": stats.stop.name(),
            "seed": seed,
            "context": ctx,
            "threads": session.config().threads,
            "kv_type": args.sampling.kv_type.name(),
            "context_shifts": stats.context_shifts,
            "load_ms": load.as_secs_f64() * 1e3,
            "prefill_ms": prefill.as_secs_f64() * 1e3,
            "first_token_ms": first_token_ms,
            "prefill_tokens_per_second": prefill_tps,
            "decode_tokens_per_second": stats.decode_tokens_per_second(),
            "session_bytes": Session::memory_required(model.config(), session.config()),
            "peak_rss_bytes": peak_rss_bytes(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!();
    if stats.stop == StopReason::ContextFull {
        eprintln!(
            "context full ({ctx} tokens): generation stopped; use a larger --ctx or \
             --context-policy shift"
        );
    }
    eprintln!(
        "[{} prompt tokens ({reused} cached), {} generated ({}); prefill {:.1} tok/s, decode {:.1} tok/s, first token after {:.0} ms]",
        prompt.len(),
        stats.generated_tokens,
        stats.stop.name(),
        prefill_tps,
        stats.decode_tokens_per_second(),
        first_token_ms
    );
}
