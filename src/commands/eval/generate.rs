//! `ember eval generate`: runs every prompt of a JSONL file, writes the
//! outputs, and scores them against the items' references with
//! `ember_metrics::outputs::score_outputs` (BLEU, ROUGE, exact match).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ember_metrics::outputs::{score_outputs, OutputScores};
use ember_progress::{Progress, Unit};
use ember_runtime::chat::{self, Message};
use ember_runtime::generate::{GenerateConfig, Generator, PrefillOptions};
use ember_runtime::sampler::Sampler;
use ember_runtime::{ContextPolicy, Model, Session};
use serde_json::{json, Value};

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// Prompts: JSONL, one item per line: {"id": any (optional), "prompt":
    /// "...", "reference": "..." or ["...", ...] (optional)}; blank lines skipped.
    #[arg(short, long)]
    file: PathBuf,
    /// Output JSONL, one line per prompt: {"id", "prompt", "output"}; written
    /// to a temporary file beside it and renamed when complete.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Tokens to generate at most per prompt.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    max_tokens: usize,
    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Session context in tokens (the model's limit caps it): a prompt plus
    /// its output must fit; generation stops when it is full.
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    /// Print the scores (and counts) as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sampling: crate::commands::run::SamplingArgs,
    #[command(flatten)]
    lora: crate::commands::merge::LoraArgs,
    #[command(flatten)]
    quiet: crate::commands::args::QuietArg,
}

/// One prompt of the file.
struct PromptItem {
    /// The item's "id", or its 1-based line number.
    id: Value,
    line: usize,
    prompt: String,
    /// Empty when the item has no reference.
    references: Vec<String>,
}

/// The items of a prompts file; errors name the file and line.
fn read_prompts(path: &Path) -> Result<Vec<PromptItem>, String> {
    let mut items = Vec::new();
    for (line, v) in super::json_lines(path)? {
        let at = |msg: &str| format!("{}:{line}: {msg}", path.display());
        let obj = v
            .as_object()
            .ok_or_else(|| at("expected a JSON object {\"prompt\", ...}"))?;
        let prompt = obj
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| at("\"prompt\" must be a string"))?;
        let references = match obj.get("reference") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|r| r.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| at("\"reference\" must be a string or an array of strings"))?,
            Some(_) => {
                return Err(at(
                    "\"reference\" must be a string or a non-empty array of strings",
                ))
            }
        };
        items.push(PromptItem {
            id: obj.get("id").cloned().unwrap_or(json!(line)),
            line,
            prompt: prompt.to_string(),
            references,
        });
    }
    if items.is_empty() {
        return Err(format!("{} holds no prompt", path.display()));
    }
    Ok(items)
}

/// The token ids of one prompt, as `ember run` encodes `--prompt`.
fn encode_prompt(args: &GenerateArgs, model: &Model, prompt: &str) -> Result<Vec<u32>, String> {
    let tok = model.tokenizer();
    let (text, opts) = if args.chat {
        let template = model.chat_template().ok_or(
            "this model has no chat template; run without --chat and format the prompts yourself",
        )?;
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::new("system", s.clone()));
        }
        messages.push(Message::new("user", prompt.to_string()));
        let (bos, eos) = chat::special_texts(tok);
        let text =
            chat::render(template, &messages, true, &bos, &eos).map_err(|e| e.to_string())?;
        (text, chat::RENDERED_ENCODE_OPTIONS)
    } else {
        (prompt.to_string(), tok.default_encode_options())
    };
    let mut ids = tok.try_encode(&text, opts).map_err(|e| e.to_string())?;
    if ids.is_empty() {
        ids.push(
            tok.bos()
                .ok_or("an empty prompt and the model has no BOS token")?,
        );
    }
    Ok(ids)
}

/// Writes `lines` to `path` through a temporary file in the same directory,
/// renamed over `path` once complete and synced.
fn write_atomically(path: &Path, lines: &[Value]) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("--out {} is not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for l in lines {
            serde_json::to_writer(&mut f, l)?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

fn scores_json(s: &OutputScores, nrefs: usize) -> Value {
    json!({
        "items": s.items,
        "bleu": s.bleu.score,
        "bleu_signature": ember_metrics::bleu::BleuConfig::default().signature(nrefs),
        "rouge1_f1": s.rouge.rouge1.fmeasure,
        "rouge2_f1": s.rouge.rouge2.fmeasure,
        "rougeL_f1": s.rouge.rouge_l.fmeasure,
        "rougeLsum_f1": s.rouge.rouge_lsum.fmeasure,
        "exact_match": s.exact_match,
    })
}

pub fn run(args: GenerateArgs) -> CliResult {
    let items = read_prompts(&args.file)?;
    let model = Arc::new(crate::commands::args::load_model(&args.model)?);
    let ctx = args.ctx.min(model.hparams().max_context as usize);
    let s = &args.sampling;
    let session_config = s.session_config(ctx, ContextPolicy::Error);
    session_config.validate(model.config())?;
    let mut session = Session::new(model.clone(), session_config)?;
    args.lora.attach(&mut session)?;
    let sampler_config = s.sampler_config(ctx)?;
    let sampler = Sampler::new(model.hparams().vocab_size as usize, &sampler_config)?;
    let mut generator = Generator::new(
        model.tokenizer(),
        sampler,
        GenerateConfig {
            max_tokens: args.max_tokens,
            stop: s.stop.clone(),
            ignore_eos: false,
        },
    )?;
    let progress = Progress::new(
        "eval generate",
        items.len() as u64,
        Unit::Items("prompts"),
        args.quiet.quiet,
    );
    let t0 = Instant::now();
    let mut lines = Vec::with_capacity(items.len());
    let mut outputs = Vec::with_capacity(items.len());
    let mut generated = 0usize;
    for item in &items {
        let at = |e: &dyn std::fmt::Display| format!("{}:{}: {e}", args.file.display(), item.line);
        let prompt = encode_prompt(&args, &model, &item.prompt).map_err(|e| at(&e))?;
        if prompt.len() >= ctx {
            return Err(at(&format!(
                "the prompt is {} tokens but the context is {ctx}; use a larger --ctx",
                prompt.len()
            ))
            .into());
        }
        // Each prompt starts from an empty cache and a fresh penalty history.
        session.reset();
        let prefilled = generator
            .prefill(
                &mut session,
                &prompt,
                &PrefillOptions {
                    reuse_cached: true,
                    ..Default::default()
                },
            )
            .map_err(|e| at(&e))?;
        let mut text = String::new();
        let stats = generator
            .decode(&mut session, &prefilled, |_, piece| {
                text.push_str(piece);
                true
            })
            .map_err(|e| at(&e))?;
        generated += stats.generated_tokens;
        lines.push(json!({ "id": item.id, "prompt": item.prompt, "output": text }));
        outputs.push(text);
        progress.inc(1);
    }
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    write_atomically(&args.out, &lines)?;

    let (hyps, refs): (Vec<&str>, Vec<Vec<String>>) = items
        .iter()
        .zip(&outputs)
        .filter(|(i, _)| !i.references.is_empty())
        .map(|(i, o)| (o.as_str(), i.references.clone()))
        .unzip();
    // The signature's nrefs: the most references any item has.
    let nrefs = refs.iter().map(Vec::len).max().unwrap_or(0);
    let scores = if hyps.is_empty() {
        None
    } else {
        Some(score_outputs(&hyps, &refs)?)
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = json!({
            "prompts": items.len(),
            "generated_tokens": generated,
            "out": args.out.display().to_string(),
            "seconds": secs,
            "scores": scores.as_ref().map(|s| scores_json(s, nrefs)),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "{} outputs written to {} ({generated} tokens)",
            items.len(),
            args.out.display()
        )?;
        match &scores {
            None => writeln!(out, "no item has a \"reference\": nothing to score")?,
            Some(sc) => {
                writeln!(
                    out,
                    "scored {} of {} outputs against their references",
                    sc.items,
                    items.len()
                )?;
                writeln!(
                    out,
                    "BLEU        {:>8.4}  ({})",
                    sc.bleu.score,
                    ember_metrics::bleu::BleuConfig::default().signature(nrefs)
                )?;
                for (name, v) in [
                    ("ROUGE-1 F1", sc.rouge.rouge1.fmeasure),
                    ("ROUGE-2 F1", sc.rouge.rouge2.fmeasure),
                    ("ROUGE-L F1", sc.rouge.rouge_l.fmeasure),
                    ("exact match", sc.exact_match),
                ] {
                    writeln!(out, "{name:<11} {v:>8.4}")?;
                }
            }
        }
        eprintln!("[{secs:.1} s]");
    }
    Ok(())
}
