//! `ember finetune`: train a LoRA adapter on a frozen base model (see
//! `ember_train`): plain text or JSONL chat data, AdamW, checkpoints, resume.

use std::path::PathBuf;

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

pub fn run(args: Args) -> CliResult {
    let model = super::args::load_model(&args.model)?;
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
    let s = trainer::train(&model, &prepared, &config, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
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
