//! `ember finetune`: train a LoRA adapter on a frozen base model (see
//! `ember_train`): plain text or JSONL chat data, AdamW, checkpoints, resume.

use std::path::PathBuf;
use std::sync::Arc;

use ember_runtime::eval::choice::{accuracy, score_choices, ChoiceItem, DEFAULT_DELIMITER};
use ember_runtime::lora::LoraAdapter;
use ember_runtime::{Model, Session, SessionConfig};
use serde_json::{json, Value};

use ember_train::data::{self, DataFormat, DataOptions};
use ember_train::schedule::ScheduleKind;
use ember_train::trainer::{self, RunOptions, TrainConfig};

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model file (.ember); stays frozen in its stored type.
    #[arg(short, long)]
    model: PathBuf,
    /// Training data: plain text (packed) or .jsonl chat records
    /// ({"messages":[{"role":…,"content":…}]}; loss on assistant tokens only).
    #[arg(long)]
    data: PathBuf,
    /// Validation data (same format as --data).
    #[arg(long, conflicts_with = "val_split")]
    val: Option<PathBuf>,
    /// Fraction of the documents/records held out for validation (seeded).
    #[arg(long, default_value_t = 0.1)]
    val_split: f64,
    /// Output directory: the adapter (PEFT layout) and checkpoints.
    #[arg(long)]
    out: PathBuf,
    /// Data format (default: .jsonl files are chat, others text).
    #[arg(long, value_parser = ["text", "jsonl"])]
    format: Option<String>,
    /// Built-in chat template (chatml|llama2|llama3|gemma) instead of the model's.
    #[arg(long)]
    template: Option<String>,
    /// Normalise the data to Unicode NFC.
    #[arg(long)]
    nfc: bool,
    /// Drop exact duplicate documents/records.
    #[arg(long)]
    dedup: bool,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (scale = alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// Dropout on the LoRA input.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Adapted matrices, comma-separated: q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,v")]
    targets: String,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Learning-rate schedule after warmup.
    #[arg(long, default_value = "cosine", value_parser = ["cosine", "constant"])]
    schedule: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1, conflicts_with = "steps")]
    epochs: u64,
    /// Optimizer steps (instead of --epochs).
    #[arg(long)]
    steps: Option<u64>,
    /// Sequences per micro-batch (processed in parallel by --threads).
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Tokens predicted per sequence.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Seed of the initialisation, data order, split and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (the result does not depend on it).
    /// A count, or 0 / auto for every CPU [default: one per physical core].
    #[arg(short = 't', long, value_parser = super::args::parse_threads,
          default_value_t = super::args::default_threads(), hide_default_value = true)]
    threads: usize,
    /// Checkpoint every N optimizer steps and after the last one (0 = none).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Validate every N steps (0 = after each epoch and at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Multiple-choice tasks (the JSONL of `ember eval mc`): the adapter's
    /// accuracy (acc, acc_norm) on them before training and at every
    /// validation point (--eval-every), reported with the validation loss.
    #[arg(long, value_name = "FILE")]
    eval_mc: Option<PathBuf>,
    /// Resume from a checkpoint directory (or the newest checkpoint in an --out directory).
    /// Every setting must match the checkpoint's but --steps / --epochs, which may
    /// extend the run (the learning rate then follows the new length's schedule).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Multiple-choice accuracy of each adapter the trainer hands over, with the
/// points measured so far (`--eval-mc`).
struct McEval {
    items: Vec<ChoiceItem>,
    session: Session<'static>,
    points: Vec<Value>,
}

impl McEval {
    fn new(
        model: &Arc<Model>,
        path: &std::path::Path,
        threads: usize,
    ) -> Result<McEval, Box<dyn std::error::Error + Send + Sync>> {
        let items = super::eval::mc::read_choice_items(path)?
            .into_iter()
            .map(|(_, item)| item)
            .collect();
        let ctx = 2048.min(model.hparams().max_context as usize);
        let session = Session::new(
            model.clone(),
            SessionConfig {
                threads,
                ..SessionConfig::new(ctx)
            },
        )?;
        Ok(McEval {
            items,
            session,
            points: Vec::new(),
        })
    }

    /// Scores every item with `adapter` applied; the line to report.
    fn evaluate(&mut self, step: u64, adapter: &LoraAdapter) -> ember_runtime::Result<String> {
        self.session
            .set_lora(Some(Arc::new(adapter.clone())), 1.0)?;
        let scores = self
            .items
            .iter()
            .map(|item| score_choices(&mut self.session, item, DEFAULT_DELIMITER))
            .collect::<ember_runtime::Result<Vec<_>>>()?;
        let acc = accuracy(&self.items, &scores);
        self.points.push(json!({
            "step": step,
            "acc": acc.acc.value,
            "acc_stderr": acc.acc.stderr,
            "acc_norm": acc.acc_norm.value,
            "acc_norm_stderr": acc.acc_norm.stderr,
        }));
        Ok(format!(
            "multiple choice acc {:.4} ± {:.4}, acc_norm {:.4} ± {:.4} ({} items)",
            acc.acc.value,
            acc.acc.stderr,
            acc.acc_norm.value,
            acc.acc_norm.stderr,
            self.items.len()
        ))
    }
}

pub fn run(args: Args) -> CliResult {
    let model = Arc::new(super::args::load_model(&args.model)?);
    let mut mc = match &args.eval_mc {
        Some(path) => Some(McEval::new(&model, path, args.threads)?),
        None => None,
    };
    let format = match args.format.as_deref() {
        Some("jsonl") => Some(DataFormat::Jsonl),
        Some(_) => Some(DataFormat::Text),
        None => None,
    };
    let config = TrainConfig {
        rank: args.rank,
        alpha: args.alpha,
        dropout: args.dropout,
        targets: args
            .targets
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup: args.warmup,
        schedule: ScheduleKind::parse(&args.schedule).ok_or("--schedule: cosine or constant")?,
        epochs: args.epochs,
        steps: args.steps,
        batch: args.batch,
        grad_accum: args.grad_accum,
        seq_len: args.seq_len,
        seed: args.seed,
        clip: args.clip,
    };
    // Checked before anything is written: targets, rank against the layers.
    let targets = config.lora_targets()?;
    ember_runtime::lora::LoraAdapter::zeros(model.hparams(), config.rank, config.alpha, &targets)?;
    if args.resume.is_none() && !ember_train::checkpoint::list(&args.out)?.is_empty() {
        return Err(format!(
            "{} already holds checkpoints: continue with --resume {0}, or choose another --out",
            args.out.display()
        )
        .into());
    }
    let data_opts = DataOptions {
        train: args.data.clone(),
        val: args.val.clone(),
        val_split: if args.val.is_some() {
            0.0
        } else {
            args.val_split
        },
        seq_len: args.seq_len,
        nfc: args.nfc,
        dedup: args.dedup,
        seed: args.seed,
        template: args.template.clone(),
        format,
    };
    let prepared = data::prepare(&model, &data_opts)?;
    let r = &prepared.report;
    if !args.quiet {
        eprintln!(
            "data: {} documents ({} duplicates removed, {} truncated); {} training sequences \
             ({} tokens to learn), {} validation sequences ({} tokens)",
            r.documents,
            r.duplicates_removed,
            r.truncated,
            prepared.train.len(),
            r.train_tokens,
            prepared.val.len(),
            r.val_tokens
        );
    }
    let base_name = args
        .model
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let opts = RunOptions {
        out: args.out.clone(),
        threads: args.threads,
        save_every: args.save_every,
        eval_every: args.eval_every,
        resume: args.resume.clone(),
        quiet: args.quiet,
        base_name,
    };
    let s = trainer::train_with_eval(&model, &prepared, &config, &opts, &mut |step, adapter| {
        mc.as_mut().map(|m| m.evaluate(step, adapter)).transpose()
    })?;
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(m) = &mc {
            v["mc_evals"] = Value::Array(m.points.clone());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!(
            "trained {} steps ({} parameters): train loss {} -> {}, val loss {} -> {}; \
             {:.0} tokens/s; adapter in {}",
            s.steps,
            s.trainable_params,
            f(s.first_train_loss),
            f(s.last_train_loss),
            f(s.val_loss_before),
            f(s.val_loss_after),
            s.tokens_per_second,
            s.adapter_dir.display()
        );
    }
    Ok(())
}
