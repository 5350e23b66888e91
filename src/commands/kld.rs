//! `ember kld`: how far a (quantized) model's next-token distributions are from a
//! reference model's on the same text.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

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

pub fn run(args: Args) -> CliResult {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
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
    let ids = tok.encode(text, opts);
    let ctx = args.ctx.min(model.hparams().max_context as usize).max(2);
    let config = SessionConfig {
        threads: args.threads,
        ..SessionConfig::new(ctx)
    };
    let mut sm = Session::new(model.clone(), config)?;
    let mut sr = Session::new(reference.clone(), config)?;
    let vocab = model.hparams().vocab_size as usize;
    let (mut lp, mut lq) = (vec![0.0f64; vocab], vec![0.0f64; vocab]);
    let (mut kl_sum, mut kl_max, mut nll, mut same, mut n) =
        (0.0f64, 0.0f64, 0.0f64, 0usize, 0usize);
    let t0 = Instant::now();
    for chunk in ids.chunks(ctx) {
        if chunk.len() < 2 {
            continue;
        }
        sm.reset();
        sr.reset();
        for (i, &t) in chunk[..chunk.len() - 1].iter().enumerate() {
            log_softmax(sr.forward(t)?, &mut lp);
            log_softmax(sm.forward(t)?, &mut lq);
            // KL(P_ref || Q_model) = sum p (log p - log q).
            let kl: f64 = lp
                .iter()
                .zip(&lq)
                .map(|(&a, &b)| if a > -745.0 { a.exp() * (a - b) } else { 0.0 })
                .sum();
            kl_sum += kl;
            kl_max = kl_max.max(kl);
            nll -= lq[chunk[i + 1] as usize];
            same += usize::from(argmax(&lp) == argmax(&lq));
            n += 1;
        }
    }
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
