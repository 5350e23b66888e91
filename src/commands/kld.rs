//! `ember kld`: how far a (quantized) model's next-token distributions are from a
//! reference model's on the same text.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ember_progress::{Progress, Unit};
use ember_runtime::{Session, SessionConfig};

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model under test (.ember), e.g. a q8_0 conversion.
    #[arg(short, long)]
    model: PathBuf,
    /// Reference model (.ember), e.g. the f32 conversion of the same checkpoint.
    #[arg(long = "ref")]
    reference: PathBuf,
    /// UTF-8 text file.
    #[arg(short, long)]
    file: PathBuf,
    /// Window length in tokens: the text is cut into consecutive windows, each
    /// evaluated from an empty cache; every position but the last of a window
    /// is scored.
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    /// Use only the first N characters of the file.
    #[arg(long)]
    max_chars: Option<usize>,
    /// Worker threads (results do not depend on it): a count, or 0 / auto for
    /// every CPU [default: one per physical core].
    #[arg(short = 't', long, value_parser = super::args::parse_threads,
          default_value_t = super::args::default_threads(), hide_default_value = true)]
    threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    // --lora applies to the model under test, not the reference.
    #[command(flatten)]
    lora: super::merge::LoraArgs,
    #[command(flatten)]
    quiet: super::args::QuietArg,
}

/// `log_softmax(logits)` into `out`, computed in f64.
fn log_softmax(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = v as f64 - lse;
    }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Positions per batched prefill of each model (the reference's logits of a
/// slice are kept while the model runs it).
const SLICE: usize = 64;

/// Running totals over the scored positions.
struct Sums {
    lp: Vec<f64>,
    lq: Vec<f64>,
    kl_sum: f64,
    kl_max: f64,
    /// The model's negative log-likelihood of the text.
    nll: f64,
    /// Positions where both models rank the same token first.
    same: usize,
    n: usize,
}

impl Sums {
    fn new(vocab: usize) -> Self {
        Self {
            lp: vec![0.0; vocab],
            lq: vec![0.0; vocab],
            kl_sum: 0.0,
            kl_max: 0.0,
            nll: 0.0,
            same: 0,
            n: 0,
        }
    }

    /// Scores one position: the reference's and the model's logits, and the
    /// token that follows.
    fn add(&mut self, reference: &[f32], model: &[f32], next: u32) {
        log_softmax(reference, &mut self.lp);
        log_softmax(model, &mut self.lq);
        // KL(P_ref || Q_model) = sum p (log p - log q).
        let kl: f64 = self
            .lp
            .iter()
            .zip(&self.lq)
            .map(|(&a, &b)| if a > -745.0 { a.exp() * (a - b) } else { 0.0 })
            .sum();
        self.kl_sum += kl;
        self.kl_max = self.kl_max.max(kl);
        self.nll -= self.lq[next as usize];
        self.same += usize::from(argmax(&self.lp) == argmax(&self.lq));
        self.n += 1;
    }

    fn mean_kld(&self) -> f64 {
        self.kl_sum / self.n.max(1) as f64
    }
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
    let reference = Arc::new(super::args::load_model(&args.reference)?);
    if model.hparams().vocab_size != reference.hparams().vocab_size {
        return Err("the two models have different vocabularies".into());
    }
    let tok = reference.tokenizer();
    let mut opts = tok.default_encode_options();
    opts.add_bos = false;
    opts.parse_special = false;
    let ids = tok.try_encode(text, opts)?;
    let ctx = args.ctx.min(model.hparams().max_context as usize);
    let config = SessionConfig {
        threads: args.threads,
        ..SessionConfig::new(ctx)
    };
    let mut sm = Session::new(model.clone(), config)?;
    args.lora.attach(&mut sm)?;
    let mut sr = Session::new(reference.clone(), config)?;
    let vocab = model.hparams().vocab_size as usize;
    let mut sums = Sums::new(vocab);
    let t0 = Instant::now();
    let progress = Progress::new(
        "kld",
        ids.len() as u64,
        Unit::Items("tokens"),
        args.quiet.quiet,
    );
    // The reference's logits of one slice of a window, then the model's, so
    // both run as batched prefills.
    let mut ref_logits = vec![0.0f32; SLICE.min(ctx) * vocab];
    for chunk in ids.chunks(ctx) {
        if chunk.len() >= 2 {
            sm.reset();
            sr.reset();
            let inputs = &chunk[..chunk.len() - 1];
            for (s, slice) in inputs.chunks(SLICE).enumerate() {
                sr.prefill_with_logits(slice, &mut |i, l| {
                    ref_logits[i * vocab..(i + 1) * vocab].copy_from_slice(l)
                })?;
                sm.prefill_with_logits(slice, &mut |i, l| {
                    let r = &ref_logits[i * vocab..(i + 1) * vocab];
                    sums.add(r, l, chunk[s * SLICE + i + 1]);
                    progress.inc(1);
                })?;
            }
            progress.set_message(format!("mean KLD {:.6}", sums.mean_kld()));
        }
        // A window's last token predicts nothing; it is done with the window.
        progress.inc(if chunk.len() >= 2 {
            1
        } else {
            chunk.len() as u64
        });
    }
    progress.finish();
    let Sums {
        kl_sum,
        kl_max,
        nll,
        same,
        n,
        ..
    } = sums;
    if n == 0 {
        return Err("need at least 2 tokens of text".into());
    }
    let secs = t0.elapsed().as_secs_f64();
    let (mean_kld, top1, ppl) = (
        kl_sum / n as f64,
        same as f64 / n as f64,
        (nll / n as f64).exp(),
    );
    if args.json {
        let v = serde_json::json!({
            "predictions": n,
            "window": ctx,
            "mean_kld": mean_kld,
            "max_kld": kl_max,
            "same_top1": top1,
            "perplexity": ppl,
            "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "mean KLD {mean_kld:.6} (max {kl_max:.4}), same top token {:.2} %, perplexity {ppl:.4} \
             over {n} predictions (window {ctx})",
            top1 * 100.0
        );
        eprintln!("[{secs:.1} s]");
    }
    Ok(())
}
