//! `ember eval mc`: multiple-choice accuracy of a model on a JSONL task file,
//! scored by `ember_runtime::eval::choice` as lm-evaluation-harness scores
//! HellaSwag-style tasks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ember_progress::{Progress, Unit};
use ember_runtime::eval::choice::{
    accuracy, score_choices, Accuracy, ChoiceItem, ChoiceScore, DEFAULT_DELIMITER,
};
use ember_runtime::{KvType, Session, SessionConfig};
use serde_json::{json, Value};

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct McArgs {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// Tasks: JSONL, one item per line:
    /// {"context": "...", "endings": ["...", ...], "label": 0} (blank lines skipped).
    #[arg(short, long)]
    file: PathBuf,
    /// Text put between the context and each ending (lm-evaluation-harness's
    /// target_delimiter).
    #[arg(long, default_value = DEFAULT_DELIMITER)]
    delimiter: String,
    /// Session context in tokens (the model's limit caps it); a context plus
    /// an ending must fit.
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    /// KV cache type: f16 (default), f32 or q8_0.
    #[arg(long, default_value = "f16", value_parser = crate::commands::run::parse_kv_type)]
    kv_type: KvType,
    /// Worker threads (results do not depend on it): a count, or 0 / auto for
    /// every CPU [default: one per physical core].
    #[arg(short = 't', long, value_parser = crate::commands::args::parse_threads,
          default_value_t = crate::commands::args::default_threads(), hide_default_value = true)]
    threads: usize,
    /// Print JSON: the accuracies and every item's log-likelihoods and choices.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lora: crate::commands::merge::LoraArgs,
    #[command(flatten)]
    quiet: crate::commands::args::QuietArg,
}

/// A task file's items with their 1-based line numbers. Errors name the file
/// and line: unreadable file, invalid UTF-8 or JSON, a field missing or of the
/// wrong type, no endings, an empty ending, a label out of range, no item.
pub fn read_choice_items(path: &Path) -> Result<Vec<(usize, ChoiceItem)>, String> {
    let mut items = Vec::new();
    for (line, v) in super::json_lines(path)? {
        let at = |msg: String| format!("{}:{line}: {msg}", path.display());
        let item = choice_item(&v).map_err(at)?;
        item.validate().map_err(|e| at(e.to_string()))?;
        items.push((line, item));
    }
    if items.is_empty() {
        return Err(format!("{} holds no item", path.display()));
    }
    Ok(items)
}

/// The item of one JSON line (fields checked for presence and type only).
fn choice_item(v: &Value) -> Result<ChoiceItem, String> {
    let obj = v
        .as_object()
        .ok_or("expected a JSON object {\"context\", \"endings\", \"label\"}")?;
    let context = obj
        .get("context")
        .and_then(Value::as_str)
        .ok_or("\"context\" must be a string")?;
    let endings = obj
        .get("endings")
        .and_then(Value::as_array)
        .ok_or("\"endings\" must be an array of strings")?
        .iter()
        .map(|e| e.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or("\"endings\" must be an array of strings")?;
    let label = obj
        .get("label")
        .and_then(Value::as_u64)
        .ok_or("\"label\" must be a whole number >= 0 (the index of the right ending)")?;
    Ok(ChoiceItem {
        context: context.to_string(),
        endings,
        label: usize::try_from(label).unwrap_or(usize::MAX),
    })
}

fn accuracy_json(a: &Accuracy) -> Value {
    json!({
        "value": a.value,
        "stderr": a.stderr,
        "ci95": [a.ci95_low, a.ci95_high],
        "correct": a.correct,
        "total": a.total,
    })
}

pub fn run(args: McArgs) -> CliResult {
    let numbered = read_choice_items(&args.file)?;
    let model = Arc::new(crate::commands::args::load_model(&args.model)?);
    let ctx = args.ctx.min(model.hparams().max_context as usize);
    let mut session = Session::new(
        model.clone(),
        SessionConfig {
            threads: args.threads,
            kv_type: args.kv_type,
            ..SessionConfig::new(ctx)
        },
    )?;
    args.lora.attach(&mut session)?;
    let progress = Progress::new(
        "eval mc",
        numbered.len() as u64,
        Unit::Items("items"),
        args.quiet.quiet,
    );
    let t0 = Instant::now();
    let mut scores: Vec<ChoiceScore> = Vec::with_capacity(numbered.len());
    for (line, item) in &numbered {
        let s = score_choices(&mut session, item, &args.delimiter)
            .map_err(|e| format!("{}:{line}: {e}", args.file.display()))?;
        scores.push(s);
        progress.inc(1);
    }
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    let items: Vec<ChoiceItem> = numbered.iter().map(|(_, i)| i.clone()).collect();
    let acc = accuracy(&items, &scores);
    let mut out = std::io::stdout().lock();
    if args.json {
        let per_item: Vec<Value> = numbered
            .iter()
            .zip(&scores)
            .map(|((line, item), s)| {
                json!({
                    "line": line,
                    "label": item.label,
                    "pred": s.pred,
                    "pred_norm": s.pred_norm,
                    "pred_bytes": s.pred_bytes,
                    "loglikelihoods": s.loglikelihoods,
                    "tokens": s.tokens,
                    "context_tokens": s.context_tokens,
                })
            })
            .collect();
        let v = json!({
            "items": items.len(),
            "acc": accuracy_json(&acc.acc),
            "acc_norm": accuracy_json(&acc.acc_norm),
            "acc_bytes": accuracy_json(&acc.acc_bytes),
            "interval": "normal: value ± 1.96 stderr, stderr as lm-evaluation-harness (sample std / sqrt(n))",
            "delimiter": args.delimiter,
            "seconds": secs,
            "per_item": per_item,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "multiple choice: {} items ({} endings), continuation = {:?} + ending",
            items.len(),
            items.iter().map(|i| i.endings.len()).sum::<usize>(),
            args.delimiter
        )?;
        writeln!(
            out,
            "{:<10} {:>7} {:>8} {:>17} {:>9}",
            "measure", "value", "stderr", "95% CI (normal)", "correct"
        )?;
        for (name, a) in [
            ("acc", acc.acc),
            ("acc_norm", acc.acc_norm),
            ("acc_bytes", acc.acc_bytes),
        ] {
            writeln!(
                out,
                "{name:<10} {:>7.4} {:>8.4}   [{:.4}, {:.4}] {:>5}/{}",
                a.value, a.stderr, a.ci95_low, a.ci95_high, a.correct, a.total
            )?;
        }
        eprintln!("[{secs:.1} s]");
    }
    Ok(())
}
