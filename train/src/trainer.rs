//! The training loop: mini-batches with gradient accumulation, threads,
//! clipping, AdamW, the schedule, validation, progress and checkpoints.
//!
//! **Determinism.** The order of training sequences is a seeded shuffle per
//! epoch; each sequence's dropout seed is drawn from a checkpointed
//! [`Rng`]. Each sequence's gradient is computed on its own (by whichever worker
//! thread) and the per-sequence gradients are summed in batch order, so the
//! result does not depend on the thread count, and a run resumed from a
//! checkpoint takes exactly the steps of an uninterrupted run.
//!
//! **Resuming.** A checkpoint continues its own run or a longer or shorter one:
//! every setting but the length (`epochs`, `steps`) must match, and the run must
//! end after the checkpoint's step. The learning rate of step `s` is always the
//! schedule over the run's current total at `s`: warmup already done stays done,
//! and after a change of length the remaining steps follow the curve of a run of
//! the new length (with the constant schedule an extended run therefore equals
//! one started with the new length; with cosine the rate moves to the new curve
//! at the resume step). Parameters, optimizer moments, dropout RNG and data
//! position continue exactly.
//!
//! **Loss.** The loss of an optimizer step is the mean cross-entropy over every
//! counted prediction of its `batch * grad_accum` sequences (token-weighted);
//! its gradient is clipped to global norm `clip`, then AdamW updates the
//! parameters.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ember_progress::{Progress, Unit};
use ember_runtime::format::HyperParams;
use ember_runtime::lora::peft::ModuleLayout;
use ember_runtime::lora::{LoraAdapter, LoraTarget};
use ember_runtime::Model;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, StateTensors, TrainerState};
use crate::data::Prepared;
use crate::error::{Result, TrainError};
use crate::grad::{sequence_loss, Base, Dropout, Example, SeqLoss, Workspace};
use crate::optim::{clip_global_norm, AdamW, AdamWConfig};
use crate::params::{init_peft_default, Layout};
use crate::schedule::{Schedule, ScheduleKind};
use ember_runtime::sampler::{mix64, Rng};

/// Everything that defines a run (stored in checkpoints). A resume must match in
/// every field but the length (`epochs`, `steps`); see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f32,
    pub targets: Vec<String>,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup: u64,
    pub schedule: ScheduleKind,
    /// Passes over the training data (used when `steps` is `None`).
    pub epochs: u64,
    /// Optimizer steps (overrides `epochs`).
    pub steps: Option<u64>,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub seq_len: usize,
    pub seed: u64,
    /// Global gradient-norm limit (0 = no clipping).
    pub clip: f64,
}

impl TrainConfig {
    /// The parsed target list.
    pub fn lora_targets(&self) -> Result<Vec<LoraTarget>> {
        let mut v = Vec::new();
        for s in &self.targets {
            let t = LoraTarget::parse(s).ok_or_else(|| {
                TrainError::Config(format!(
                    "unknown LoRA target {s:?} (use q,k,v,o,gate,up,down)"
                ))
            })?;
            if !v.contains(&t) {
                v.push(t);
            }
        }
        v.sort();
        Ok(v)
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        if self.batch == 0 || self.grad_accum == 0 {
            return bad("--batch and --grad-accum must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("--dropout must be in [0, 1)");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be positive");
        }
        if self.weight_decay.is_nan()
            || self.weight_decay < 0.0
            || self.clip.is_nan()
            || self.clip < 0.0
        {
            return bad("--weight-decay and --clip must be non-negative");
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad("--alpha must be positive");
        }
        if self.steps == Some(0) || (self.steps.is_none() && self.epochs == 0) {
            return bad("nothing to do: --steps or --epochs is 0");
        }
        Ok(())
    }

    /// The settings other than the run's length (`epochs`, `steps`) in which
    /// `now` differs from `self` (a checkpoint's), one `--flag: checkpoint A,
    /// now B` line each, in the order of the fields, values written as they are
    /// typed on the command line. Targets compare as sets (`q,v` is `v,q`).
    fn resume_mismatches(&self, now: &TrainConfig) -> Vec<String> {
        // Destructured so that a new field has to be classified here.
        let TrainConfig {
            rank,
            alpha,
            dropout,
            targets,
            lr,
            weight_decay,
            warmup,
            schedule,
            epochs: _,
            steps: _,
            batch,
            grad_accum,
            seq_len,
            seed,
            clip,
        } = now;
        let was = self;
        let mut lines = Vec::new();
        differ(&mut lines, "--rank", was.rank, *rank);
        differ(&mut lines, "--alpha", was.alpha, *alpha);
        differ(&mut lines, "--dropout", was.dropout, *dropout);
        let target_set = |c: &TrainConfig| c.lora_targets().map_err(|_| c.targets.clone());
        if target_set(was) != target_set(now) {
            let list = |t: &[String]| match t.join(",") {
                s if s.is_empty() => "none".to_string(),
                s => s,
            };
            let (t0, t1) = (list(&was.targets), list(targets));
            lines.push(format!("--targets: checkpoint {t0}, now {t1}"));
        }
        differ(&mut lines, "--lr", was.lr, *lr);
        differ(
            &mut lines,
            "--weight-decay",
            was.weight_decay,
            *weight_decay,
        );
        differ(&mut lines, "--warmup", was.warmup, *warmup);
        let sched = |k: ScheduleKind| match k {
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Constant => "constant",
        };
        differ(
            &mut lines,
            "--schedule",
            sched(was.schedule),
            sched(*schedule),
        );
        differ(&mut lines, "--batch", was.batch, *batch);
        differ(&mut lines, "--grad-accum", was.grad_accum, *grad_accum);
        differ(&mut lines, "--seq-len", was.seq_len, *seq_len);
        differ(&mut lines, "--seed", was.seed, *seed);
        differ(&mut lines, "--clip", was.clip, *clip);
        lines
    }

    /// The flag that sets the run's length, as typed: `--steps N` or `--epochs N`.
    fn length_flag(&self) -> String {
        match self.steps {
            Some(n) => format!("--steps {n}"),
            None => format!("--epochs {}", self.epochs),
        }
    }
}

/// Adds `flag: checkpoint was, now is` to `lines` when the values differ.
fn differ<T: PartialEq + std::fmt::Display>(lines: &mut Vec<String>, flag: &str, was: T, is: T) {
    if was != is {
        lines.push(format!("{flag}: checkpoint {was}, now {is}"));
    }
}

/// How the run is carried out (not part of its identity).
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Worker threads (results do not depend on it).
    pub threads: usize,
    /// Write a checkpoint every N optimizer steps and after the last one, so a
    /// finished run can be extended (0 = none).
    pub save_every: u64,
    /// Validate every N steps (0 = at the end of each epoch).
    pub eval_every: u64,
    /// Resume from this checkpoint (or the newest one in this directory).
    pub resume: Option<PathBuf>,
    /// No progress output.
    pub quiet: bool,
    /// Name recorded as the PEFT `base_model_name_or_path`.
    pub base_name: String,
}

/// One validation result.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EvalPoint {
    pub step: u64,
    pub loss: f64,
    pub perplexity: f64,
}

/// What a finished run reports (`ember finetune --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub resumed_from_step: u64,
    pub trainable_params: usize,
    pub train_sequences: usize,
    pub val_sequences: usize,
    pub first_train_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
    pub val_loss_before: Option<f64>,
    pub val_loss_after: Option<f64>,
    pub val_perplexity_after: Option<f64>,
    pub evals: Vec<EvalPoint>,
    /// Positions (tokens) run through forward + backward per second.
    pub tokens_per_second: f64,
    pub train_seconds: f64,
    /// Activation memory of one worker (see `grad`), bytes.
    pub workspace_bytes_per_thread: usize,
    /// Peak resident set size (VmHWM), KiB, when the OS reports it.
    pub peak_rss_kib: Option<u64>,
    pub adapter_dir: PathBuf,
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One sequence of a batch: its index, where its loss and gradient go.
type Job<'a> = (usize, &'a mut SeqLoss, Option<&'a mut Vec<f32>>);

/// Summed losses and gradients of `examples` with parameters `params`: per
/// sequence on `workspaces.len()` threads, gradients written to `slots[i]`
/// (zeroed first) when `slots` is given. Returns the per-sequence losses.
pub fn batch_loss(
    base: &Base,
    layout: &Layout,
    params: &[f32],
    examples: &[&Example],
    dropouts: &[Option<Dropout>],
    workspaces: &mut [Workspace<f32>],
    slots: Option<&mut [Vec<f32>]>,
) -> Vec<SeqLoss> {
    let n = examples.len();
    let threads = workspaces.len().min(n).max(1);
    let mut losses = vec![SeqLoss::default(); n];
    let mut slot_refs: Vec<Option<&mut Vec<f32>>> = match slots {
        Some(s) => s.iter_mut().take(n).map(Some).collect(),
        None => (0..n).map(|_| None).collect(),
    };
    // Round-robin assignment: job i goes to worker i % threads.
    let mut jobs: Vec<Vec<Job>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, (l, s)) in losses.iter_mut().zip(slot_refs.iter_mut()).enumerate() {
        jobs[i % threads].push((i, l, s.take()));
    }
    let run = |ws: &mut Workspace<f32>, list: Vec<Job>| {
        for (i, loss, slot) in list {
            let g = slot.map(|g| {
                g.fill(0.0);
                g.as_mut_slice()
            });
            *loss = sequence_loss(
                base,
                layout,
                params,
                examples[i],
                dropouts[i].as_ref(),
                g,
                ws,
            );
        }
    };
    if threads == 1 {
        let list = jobs.pop().unwrap_or_default();
        run(&mut workspaces[0], list);
    } else {
        std::thread::scope(|s| {
            for (ws, list) in workspaces.iter_mut().zip(jobs) {
                s.spawn(|| run(ws, list));
            }
        });
    }
    losses
}

/// Mean loss over `examples` (no dropout, no gradients).
pub fn evaluate(
    base: &Base,
    layout: &Layout,
    params: &[f32],
    examples: &[Example],
    workspaces: &mut [Workspace<f32>],
) -> Option<f64> {
    let refs: Vec<&Example> = examples.iter().collect();
    let none = vec![None; refs.len()];
    let losses = batch_loss(base, layout, params, &refs, &none, workspaces, None);
    let (sum, count) = losses
        .iter()
        .fold((0.0, 0usize), |(s, c), l| (s + l.sum, c + l.count));
    (count > 0).then(|| sum / count as f64)
}

/// The training sequence at stream position `pos`: epoch `pos / n`, shuffled
/// with a seed derived from `seed` and the epoch.
fn stream_index(pos: u64, n: usize, seed: u64, cache: &mut (u64, Vec<usize>)) -> usize {
    let epoch = pos / n as u64;
    if cache.1.len() != n || cache.0 != epoch {
        let mut perm: Vec<usize> = (0..n).collect();
        Rng::seed(mix64(seed ^ mix64(epoch.wrapping_add(0xE70C)))).shuffle(&mut perm);
        *cache = (epoch, perm);
    }
    cache.1[(pos % n as u64) as usize]
}

/// Trains an adapter on `data`, writing checkpoints and the final adapter (PEFT
/// layout) into `opts.out`.
pub fn train(
    model: &Model,
    data: &Prepared,
    config: &TrainConfig,
    opts: &RunOptions,
) -> Result<Summary> {
    train_with_eval(model, data, config, opts, &mut |_, _| Ok(None))
}

/// A caller's evaluation of the adapter at every validation point:
/// `on_eval(step, adapter)` returns a line to report (or `None`); an error
/// stops the run.
pub type EvalHook<'h> = dyn FnMut(u64, &LoraAdapter) -> ember_runtime::Result<Option<String>> + 'h;

/// [`train`], also calling `on_eval` with the current adapter before the
/// first step and at every validation point (`RunOptions::eval_every`, each
/// epoch's end when 0, the last step), whether or not there is validation
/// data: e.g. multiple-choice accuracy with an inference session.
pub fn train_with_eval(
    model: &Model,
    data: &Prepared,
    config: &TrainConfig,
    opts: &RunOptions,
    on_eval: &mut EvalHook<'_>,
) -> Result<Summary> {
    let (ctx, mut adapter) = RunContext::new(model, data, config, opts)?;
    let (mut state, checkpoint_total) = ctx.initial_state()?;
    let resumed_from = state.step;
    let mut buffers = Buffers::new(&ctx)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| TrainError::io(&opts.out, e))?;
    let progress = Progress::new("finetune", ctx.total, Unit::Items("steps"), opts.quiet)
        .starting_at(state.step);
    if let Some(was) = checkpoint_total.filter(|&t| t != ctx.total) {
        progress.println(format!(
            "step {}: the run now ends at step {} instead of {was}; from here the \
             learning rate follows the schedule over {} steps",
            state.step, ctx.total, ctx.total
        ));
    }

    if state.val_before.is_none() && !data.val.is_empty() {
        state.val_before = ctx.validate(&state.params, &mut buffers);
        if let Some(v) = state.val_before {
            progress.println(format!(
                "step {}: val loss {v:.4}, perplexity {:.3}",
                state.step,
                v.exp()
            ));
        }
    }

    let mut hook = |step: u64, params: &[f32], adapter: &mut LoraAdapter| -> Result<()> {
        ctx.layout.unflatten(params, adapter);
        if let Some(line) = on_eval(step, adapter)? {
            progress.println(format!("step {step}: {line}"));
        }
        Ok(())
    };
    hook(state.step, &state.params, &mut adapter)?;

    let mut log = TrainLog::default();
    let started = Instant::now();
    while state.step < ctx.total {
        let (loss, lr) = ctx.optimizer_step(&mut state, &mut buffers, &mut log.tokens_done)?;
        log.last_train_loss = Some(loss);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_second = log.tokens_done as f64 / secs;
        progress.set_message(format!(
            "loss {loss:.4}  lr {lr:.2e}  {tokens_per_second:.0} tok/s"
        ));
        progress.set_position(state.step);
        let eval_due = ctx.eval_due(state.step, state.position);
        if eval_due {
            hook(state.step, &state.params, &mut adapter)?;
        }
        if eval_due && !data.val.is_empty() {
            if let Some(v) = ctx.validate(&state.params, &mut buffers) {
                let step = state.step;
                log.evals.push(EvalPoint {
                    step,
                    loss: v,
                    perplexity: v.exp(),
                });
                progress.println(format!(
                    "step {step}: train loss {loss:.4}, val loss {v:.4}, perplexity {:.3}",
                    v.exp()
                ));
            }
        }
        if opts.save_every > 0
            && (state.step.is_multiple_of(opts.save_every) || state.step == ctx.total)
        {
            ctx.save_checkpoint(&state, &mut adapter)?;
        }
    }
    progress.finish();
    let train_seconds = started.elapsed().as_secs_f64();

    ctx.layout.unflatten(&state.params, &mut adapter);
    crate::peft::save_peft(
        &opts.out,
        &adapter,
        &ctx.hp,
        ctx.peft_layout,
        &opts.base_name,
    )?;
    Ok(ctx.summary(&state, log, resumed_from, train_seconds, buffers.ws_bytes))
}

/// The fixed inputs of one run, derived once from the model, data and configuration.
struct RunContext<'a> {
    config: &'a TrainConfig,
    opts: &'a RunOptions,
    data: &'a Prepared,
    hp: HyperParams,
    base: Base<'a>,
    layout: Layout,
    /// The base model's PEFT module names (Phi-3's are fused).
    peft_layout: ModuleLayout,
    base_fp: String,
    data_fp: String,
    /// Training sequences per optimizer step (`batch * grad_accum`).
    per_step: usize,
    /// Optimizer steps of the whole run.
    total: u64,
    schedule: Schedule,
}

/// Everything a checkpoint restores: parameters, optimizer state, the dropout RNG,
/// the step and data-stream position, and the losses the summary reports from
/// before the resume.
struct TrainState {
    params: Vec<f32>,
    adam: AdamW,
    rng: Rng,
    step: u64,
    position: u64,
    val_before: Option<f64>,
    first_train_loss: Option<f64>,
}

/// Worker workspaces and gradient buffers, allocated once for the run.
struct Buffers {
    workspaces: Vec<Workspace<f32>>,
    /// Activation memory of one workspace, bytes.
    ws_bytes: usize,
    /// One gradient per sequence of a micro-batch.
    slots: Vec<Vec<f32>>,
    /// The summed gradient of an optimizer step.
    grads: Vec<f32>,
    /// The current epoch's shuffle (see [`stream_index`]).
    order_cache: (u64, Vec<usize>),
}

/// Running sums over the sequences of one optimizer step, in batch order.
#[derive(Default)]
struct StepTotals {
    loss_sum: f64,
    /// Counted predictions.
    count: usize,
    /// Positions run through forward + backward.
    tokens: usize,
}

/// What the run has reported since it (re)started.
#[derive(Default)]
struct TrainLog {
    evals: Vec<EvalPoint>,
    last_train_loss: Option<f64>,
    /// Positions run through forward + backward.
    tokens_done: usize,
}

impl<'a> RunContext<'a> {
    /// Validates the configuration against the model and derives the run's plan;
    /// also returns the zero adapter the parameters unflatten into.
    fn new(
        model: &'a Model,
        data: &'a Prepared,
        config: &'a TrainConfig,
        opts: &'a RunOptions,
    ) -> Result<(Self, LoraAdapter)> {
        config.check()?;
        let hp = *model.hparams();
        if config.seq_len > hp.max_context as usize {
            return Err(TrainError::Config(format!(
                "--seq-len {} exceeds the model's context of {}",
                config.seq_len, hp.max_context
            )));
        }
        let targets = config.lora_targets()?;
        let adapter = LoraAdapter::zeros(&hp, config.rank, config.alpha, &targets)?;
        let layout = Layout::of(&adapter, &hp)?;
        let base = Base::new(model)?;
        let base_fp = checkpoint::base_fingerprint(model);
        let data_fp = format!("{:016x}", data.fingerprint());
        let per_step = config.batch * config.grad_accum;
        let steps_per_epoch = data.train.len().div_ceil(per_step) as u64;
        let total = config.steps.unwrap_or(config.epochs * steps_per_epoch);
        let schedule = Schedule {
            kind: config.schedule,
            lr: config.lr,
            warmup: config.warmup,
            total,
        };
        let ctx = Self {
            config,
            opts,
            data,
            hp,
            base,
            layout,
            peft_layout: ModuleLayout::of(model.metadata()),
            base_fp,
            data_fp,
            per_step,
            total,
            schedule,
        };
        Ok((ctx, adapter))
    }

    /// Fresh parameters (PEFT's default init) and optimizer, or the state of the
    /// checkpoint `opts.resume` names, which must be able to continue this run
    /// ([`Self::check_resume`]); with it, the total steps of the checkpoint's run.
    fn initial_state(&self) -> Result<(TrainState, Option<u64>)> {
        let n = self.layout.len;
        let adam_cfg = AdamWConfig {
            weight_decay: self.config.weight_decay,
            ..Default::default()
        };
        let mut adam = AdamW::new(adam_cfg, n);
        let Some(dir) = &self.opts.resume else {
            let mut params = vec![0.0f32; n];
            let mut init = Rng::seed(mix64(self.config.seed ^ 0x1A17));
            init_peft_default(&self.layout, &mut params, &mut init);
            let fresh = TrainState {
                params,
                adam,
                rng: Rng::seed(self.config.seed),
                step: 0,
                position: 0,
                val_before: None,
                first_train_loss: None,
            };
            return Ok((fresh, None));
        };
        let ck = checkpoint::resolve(dir)?;
        let (state, tensors) = checkpoint::load(&ck)?;
        self.check_resume(&state, &tensors, &ck)?;
        adam.m = tensors.adam_m;
        adam.v = tensors.adam_v;
        adam.step = state.step;
        let restored = TrainState {
            params: tensors.params,
            adam,
            rng: state.rng,
            step: state.step,
            position: state.position,
            val_before: state.val_loss_before,
            first_train_loss: state.first_train_loss,
        };
        Ok((restored, Some(state.total_steps)))
    }

    /// Whether the checkpoint `state` (read from `dir`) can continue this run:
    /// the same base model, configuration (but for the length), data and
    /// parameter count, and a step before this run's end.
    fn check_resume(&self, state: &TrainerState, tensors: &StateTensors, dir: &Path) -> Result<()> {
        let bad = |m: String| {
            Err(TrainError::Checkpoint(format!(
                "--resume {}: {m}",
                dir.display()
            )))
        };
        if state.base_fingerprint != self.base_fp {
            return bad("the checkpoint was made with another base model".into());
        }
        let mismatches = state.config.resume_mismatches(self.config);
        if !mismatches.is_empty() {
            return bad(format!(
                "the checkpoint was made with another configuration:\n  {}",
                mismatches.join("\n  ")
            ));
        }
        if state.data_fingerprint != self.data_fp {
            return bad("the checkpoint was made with other training data".into());
        }
        if tensors.params.len() != self.layout.len {
            return bad(format!(
                "{} parameters in the checkpoint, {} expected",
                tensors.params.len(),
                self.layout.len
            ));
        }
        if state.step >= self.total {
            return bad(format!(
                "the checkpoint is at step {}, and {} ends the run at step {}: nothing to do \
                 (a larger --steps or --epochs extends the run)",
                state.step,
                self.config.length_flag(),
                self.total
            ));
        }
        Ok(())
    }

    /// One optimizer step: the mean gradient of `batch * grad_accum` sequences,
    /// clipped, applied by AdamW. Returns the step's loss and learning rate; fails
    /// when the step had no tokens or the loss or gradient is not finite.
    fn optimizer_step(
        &self,
        state: &mut TrainState,
        buffers: &mut Buffers,
        tokens_done: &mut usize,
    ) -> Result<(f64, f64)> {
        buffers.grads.fill(0.0);
        let mut totals = StepTotals::default();
        for _ in 0..self.config.grad_accum {
            self.accumulate_micro_batch(state, buffers, &mut totals);
        }
        *tokens_done += totals.tokens;
        let StepTotals {
            loss_sum, count, ..
        } = totals;
        if count == 0 {
            return Err(TrainError::Data(
                "a training step had no tokens to learn from".into(),
            ));
        }
        let grads = &mut buffers.grads;
        let inv = (1.0 / count as f64) as f32;
        grads.iter_mut().for_each(|g| *g *= inv);
        let loss = loss_sum / count as f64;
        let norm = clip_global_norm(grads, self.config.clip);
        if !loss.is_finite() || !norm.is_finite() {
            return Err(TrainError::Diverged(format!(
                "step {}: the loss or gradient is not finite (loss {loss}, gradient norm {norm}); \
                 try a smaller --lr",
                state.step + 1
            )));
        }
        let lr = self.schedule.lr(state.step);
        state.adam.update(&mut state.params, grads, lr);
        state.step += 1;
        state.first_train_loss.get_or_insert(loss);
        Ok((loss, lr))
    }

    /// Runs the next `batch` sequences of the stream (advancing the position and
    /// drawing one dropout seed each), adds their gradients to `buffers.grads` and
    /// their losses, predictions and positions to `totals`.
    fn accumulate_micro_batch(
        &self,
        state: &mut TrainState,
        buffers: &mut Buffers,
        totals: &mut StepTotals,
    ) {
        let (config, train) = (self.config, &self.data.train);
        let idx: Vec<usize> = (0..config.batch as u64)
            .map(|k| {
                let pos = state.position + k;
                stream_index(pos, train.len(), config.seed, &mut buffers.order_cache)
            })
            .collect();
        state.position += config.batch as u64;
        let batch: Vec<&Example> = idx.iter().map(|&i| &train[i]).collect();
        let drops: Vec<Option<Dropout>> = batch
            .iter()
            .map(|_| {
                let seed = state.rng.next_u64();
                (config.dropout > 0.0).then_some(Dropout {
                    p: config.dropout,
                    seed,
                })
            })
            .collect();
        let losses = batch_loss(
            &self.base,
            &self.layout,
            &state.params,
            &batch,
            &drops,
            &mut buffers.workspaces,
            Some(&mut buffers.slots),
        );
        for (l, g) in losses.iter().zip(&buffers.slots) {
            totals.loss_sum += l.sum;
            totals.count += l.count;
            for (a, &b) in buffers.grads.iter_mut().zip(g) {
                *a += b;
            }
        }
        totals.tokens += batch.iter().map(|e| e.len()).sum::<usize>();
    }

    /// Whether to validate after `step` (stream at `position`): every `eval_every`
    /// steps, or at each epoch's end when it is 0; always after the last step.
    fn eval_due(&self, step: u64, position: u64) -> bool {
        let n_train = self.data.train.len() as u64;
        let epoch_end = (position / n_train) > ((position - self.per_step as u64) / n_train);
        if self.opts.eval_every > 0 {
            step.is_multiple_of(self.opts.eval_every) || step == self.total
        } else {
            epoch_end || step == self.total
        }
    }

    /// Mean loss over the validation set with `params`.
    fn validate(&self, params: &[f32], buffers: &mut Buffers) -> Option<f64> {
        evaluate(
            &self.base,
            &self.layout,
            params,
            &self.data.val,
            &mut buffers.workspaces,
        )
    }

    /// Writes a checkpoint of `state` (and its adapter) into `opts.out`.
    fn save_checkpoint(&self, state: &TrainState, adapter: &mut LoraAdapter) -> Result<()> {
        self.layout.unflatten(&state.params, adapter);
        let trainer_state = TrainerState {
            format: checkpoint::FORMAT_VERSION,
            base_fingerprint: self.base_fp.clone(),
            data_fingerprint: self.data_fp.clone(),
            config: self.config.clone(),
            step: state.step,
            total_steps: self.total,
            position: state.position,
            rng: state.rng.clone(),
            val_loss_before: state.val_before,
            first_train_loss: state.first_train_loss,
        };
        let tensors = StateTensors {
            params: state.params.clone(),
            adam_m: state.adam.m.clone(),
            adam_v: state.adam.v.clone(),
        };
        let opts = self.opts;
        checkpoint::save(
            &opts.out,
            &trainer_state,
            &tensors,
            adapter,
            &self.hp,
            self.peft_layout,
            &opts.base_name,
        )?;
        Ok(())
    }

    /// The report of a finished run.
    fn summary(
        &self,
        state: &TrainState,
        log: TrainLog,
        resumed_from: u64,
        train_seconds: f64,
        ws_bytes: usize,
    ) -> Summary {
        let val_after = log.evals.last().map(|e| e.loss);
        Summary {
            steps: state.step,
            resumed_from_step: resumed_from,
            trainable_params: self.layout.len,
            train_sequences: self.data.train.len(),
            val_sequences: self.data.val.len(),
            first_train_loss: state.first_train_loss,
            last_train_loss: log.last_train_loss,
            val_loss_before: state.val_before,
            val_loss_after: val_after,
            val_perplexity_after: val_after.map(f64::exp),
            evals: log.evals,
            tokens_per_second: log.tokens_done as f64 / train_seconds.max(1e-9),
            train_seconds,
            workspace_bytes_per_thread: ws_bytes,
            peak_rss_kib: peak_rss_kib(),
            adapter_dir: self.opts.out.clone(),
        }
    }
}

impl Buffers {
    /// Workspaces for `min(threads, batch)` workers sized for the longest training
    /// or validation sequence, and zeroed gradient buffers.
    /// Errors: `Config` when the workspaces (sized by the longest sequence and
    /// the threads) or the gradient buffers cannot be allocated.
    fn new(ctx: &RunContext) -> Result<Self> {
        let (config, data, len) = (ctx.config, ctx.data, ctx.layout.len);
        let threads = ctx.opts.threads.max(1).min(config.batch.max(1));
        let t_max = data
            .train
            .iter()
            .chain(&data.val)
            .map(Example::len)
            .max()
            .unwrap_or(1)
            .max(1);
        let too_big = |bytes: usize| {
            TrainError::Config(format!(
                "cannot allocate {:.1} GiB of activations per thread for sequences of {t_max} \
                 tokens ({threads} threads): lower --seq-len or --threads",
                bytes as f64 / (1u64 << 30) as f64
            ))
        };
        let workspaces = (0..threads)
            .map(|_| Workspace::try_new(&ctx.base, &ctx.layout, t_max).map_err(too_big))
            .collect::<Result<Vec<Workspace<f32>>>>()?;
        let ws_bytes = workspaces[0].bytes();
        let gradient = || -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| {
                TrainError::Config(format!("cannot allocate gradients of {len} parameters"))
            })?;
            v.resize(len, 0.0);
            Ok(v)
        };
        Ok(Self {
            workspaces,
            ws_bytes,
            slots: (0..config.batch)
                .map(|_| gradient())
                .collect::<Result<_>>()?,
            grads: gradient()?,
            order_cache: (u64::MAX, Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrainConfig {
        TrainConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec!["q".into(), "v".into()],
            lr: 1e-3,
            weight_decay: 0.0,
            warmup: 0,
            schedule: ScheduleKind::Cosine,
            epochs: 1,
            steps: Some(40),
            batch: 4,
            grad_accum: 1,
            seq_len: 256,
            seed: 0,
            clip: 1.0,
        }
    }

    #[test]
    fn the_length_of_a_run_may_change_on_resume() {
        let was = config();
        for now in [
            TrainConfig {
                steps: Some(80),
                ..config()
            },
            TrainConfig {
                steps: None,
                epochs: 3,
                ..config()
            },
            TrainConfig {
                targets: vec!["v".into(), "q".into(), "q".into()],
                ..config()
            },
        ] {
            assert_eq!(was.resume_mismatches(&now), Vec::<String>::new(), "{now:?}");
        }
    }

    #[test]
    fn mismatches_name_each_flag_with_both_values() {
        let was = config();
        let now = TrainConfig {
            rank: 16,
            lr: 3e-3,
            targets: vec!["q".into(), "k".into(), "v".into()],
            schedule: ScheduleKind::Constant,
            grad_accum: 2,
            steps: Some(80),
            ..config()
        };
        assert_eq!(
            was.resume_mismatches(&now),
            [
                "--rank: checkpoint 8, now 16",
                "--targets: checkpoint q,v, now q,k,v",
                "--lr: checkpoint 0.001, now 0.003",
                "--schedule: checkpoint cosine, now constant",
                "--grad-accum: checkpoint 1, now 2",
            ]
        );
    }

    #[test]
    fn length_flag_is_the_one_that_was_typed() {
        assert_eq!(config().length_flag(), "--steps 40");
        let epochs = TrainConfig {
            steps: None,
            epochs: 2,
            ..config()
        };
        assert_eq!(epochs.length_flag(), "--epochs 2");
    }
}
