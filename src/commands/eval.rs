//! `ember eval bleu|rouge`: score hypotheses against references, one segment per
//! line, with the measures of `ember-metrics` (sacreBLEU's corpus BLEU,
//! rouge-score's ROUGE); `ember eval mc` ([`mc`]): multiple-choice accuracy;
//! `ember eval generate` ([`generate`]): outputs of a prompt file, scored.

pub mod generate;
pub mod mc;

use std::io::Write;
use std::path::{Path, PathBuf};

use ember_metrics::bleu::{self, BleuConfig, Tokenize};
use ember_metrics::rouge::{RougeScorer, RougeScores, Score};
use serde_json::{json, Value};

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    metric: Metric,
}

#[derive(clap::Subcommand, Debug)]
enum Metric {
    /// Corpus BLEU as sacreBLEU 2.x computes it by default, with its signature.
    Bleu(BleuArgs),
    /// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum (precision, recall, F1) as
    /// Google's rouge-score computes them: the mean over lines.
    Rouge(RougeArgs),
    /// Multiple-choice accuracy (acc, acc_norm, acc_bytes) as lm-evaluation-harness
    /// scores HellaSwag-style tasks: each ending's summed log-likelihood given the context.
    Mc(mc::McArgs),
    /// Generate an output for every prompt of a JSONL file, write them, and score
    /// them against the items' references (BLEU, ROUGE F1, exact match).
    Generate(generate::GenerateArgs),
}

#[derive(clap::Args, Debug)]
struct BleuArgs {
    /// Hypotheses: a UTF-8 text file, one segment per line.
    #[arg(long, value_name = "FILE")]
    hyp: PathBuf,
    /// References, one segment per line, as many lines as --hyp. Repeat for
    /// several references per segment.
    #[arg(long = "ref", value_name = "FILE", required = true)]
    refs: Vec<PathBuf>,
    /// Tokenizer, as sacreBLEU names them.
    #[arg(long, value_parser = ["none", "13a", "intl", "char"], default_value = "13a")]
    tokenize: String,
    /// Lowercase hypotheses and references first (case-insensitive BLEU).
    #[arg(long)]
    lowercase: bool,
    /// Print JSON: the score at full precision, its parts and the signature.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RougeArgs {
    /// Predictions: a UTF-8 text file, one segment per line.
    #[arg(long, value_name = "FILE")]
    hyp: PathBuf,
    /// Targets, one segment per line, as many lines as --hyp. Repeat for
    /// several targets per segment: each measure then takes the target with
    /// the highest F1 (rouge-score's score_multi).
    #[arg(long = "ref", value_name = "FILE", required = true)]
    refs: Vec<PathBuf>,
    /// Porter-stem tokens longer than 3 characters (rouge-score's use_stemmer).
    #[arg(long)]
    stem: bool,
    /// Text that separates sentences within a line (e.g. "<n>"): replaced by a
    /// newline before scoring, so ROUGE-Lsum sees multi-sentence summaries.
    #[arg(long, value_name = "TEXT")]
    sentence_sep: Option<String>,
    /// Print JSON: the means and every line's scores.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> CliResult {
    match args.metric {
        Metric::Bleu(a) => run_bleu(a),
        Metric::Rouge(a) => run_rouge(a),
        Metric::Mc(a) => mc::run(a),
        Metric::Generate(a) => generate::run(a),
    }
}

/// A UTF-8 text file; errors name the file (and the line of a bad byte).
fn read_text(path: &Path) -> Result<String, String> {
    let bytes = ember_runtime::read_file::read_file(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        format!(
            "{} is not valid UTF-8 (line {line}, first bad byte at offset {at})",
            path.display()
        )
    })
}

/// The JSON values of a JSONL file with their 1-based line numbers (blank
/// lines skipped). Errors name the file and line.
fn json_lines(path: &Path) -> Result<Vec<(usize, Value)>, String> {
    let text = read_text(path)?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: not valid JSON: {e}", path.display(), i + 1))?;
        values.push((i + 1, v));
    }
    Ok(values)
}

/// The segments of a text file: its lines split at `\n` only (a final `\n`
/// ends the last line; it does not start an empty one), as sacreBLEU reads them.
fn read_segments(path: &Path) -> Result<Vec<String>, String> {
    let text = read_text(path)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let body = text.strip_suffix('\n').unwrap_or(&text);
    Ok(body.split('\n').map(str::to_string).collect())
}

/// The hypotheses and, per reference file, its segments; every file must have
/// as many lines as the hypotheses, and there must be at least one.
fn read_corpus(hyp: &Path, refs: &[PathBuf]) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let hyps = read_segments(hyp)?;
    if hyps.is_empty() {
        return Err(format!("{} is empty: no segment to score", hyp.display()));
    }
    let mut streams = Vec::with_capacity(refs.len());
    for r in refs {
        let lines = read_segments(r)?;
        if lines.len() != hyps.len() {
            return Err(format!(
                "{} has {} lines but {} has {}: the files must hold one segment per line, \
                 the same number of lines",
                r.display(),
                lines.len(),
                hyp.display(),
                hyps.len()
            ));
        }
        streams.push(lines);
    }
    Ok((hyps, streams))
}

fn run_bleu(args: BleuArgs) -> CliResult {
    let (hyps, refs) = read_corpus(&args.hyp, &args.refs)?;
    let config = BleuConfig {
        tokenize: Tokenize::from_name(&args.tokenize).expect("clap checks the tokenizer name"),
        lowercase: args.lowercase,
    };
    let s = bleu::corpus_bleu(&config, &hyps, &refs)?;
    let signature = config.signature(refs.len());
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = json!({
            "name": "BLEU",
            "score": s.score,
            "signature": signature,
            "verbose_score": format!("{} {}", s.precisions_str(), s.verbose_tail()),
            "precisions": s.precisions,
            "counts": s.stats.correct,
            "totals": s.stats.total,
            "bp": s.bp,
            "ratio": s.ratio,
            "hyp_len": s.stats.hyp_len,
            "ref_len": s.stats.ref_len,
            "nrefs": refs.len(),
            "case": if config.lowercase { "lc" } else { "mixed" },
            "tok": config.tokenize.name(),
            "smooth": "exp",
            "version": bleu::SACREBLEU_VERSION,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "{}", s.format(&signature))?;
    }
    Ok(())
}

fn score_json(s: Score) -> Value {
    json!({ "precision": s.precision, "recall": s.recall, "fmeasure": s.fmeasure })
}

fn scores_json(s: &RougeScores) -> Value {
    Value::Object(
        s.named()
            .into_iter()
            .map(|(name, sc)| (name.to_string(), score_json(sc)))
            .collect(),
    )
}

fn run_rouge(args: RougeArgs) -> CliResult {
    let (mut hyps, mut refs) = read_corpus(&args.hyp, &args.refs)?;
    if let Some(sep) = args.sentence_sep.as_deref() {
        if sep.is_empty() {
            return Err("--sentence-sep must not be empty".into());
        }
        for line in hyps.iter_mut().chain(refs.iter_mut().flatten()) {
            *line = line.replace(sep, "\n");
        }
    }
    let scorer = RougeScorer::new(args.stem);
    let mut targets: Vec<&str> = Vec::with_capacity(refs.len());
    let per_line: Vec<RougeScores> = hyps
        .iter()
        .enumerate()
        .map(|(i, h)| {
            targets.clear();
            targets.extend(refs.iter().map(|r| r[i].as_str()));
            scorer.score_multi(&targets, h)
        })
        .collect();
    let mean = RougeScores::mean(&per_line);
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = json!({
            "segments": hyps.len(),
            "nrefs": refs.len(),
            "stem": args.stem,
            "mean": scores_json(&mean),
            "per_line": per_line.iter().map(scores_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "ROUGE (rouge-score tokenizer, stemming {}): mean of {} segments, {} reference{}",
            if args.stem { "on" } else { "off" },
            hyps.len(),
            refs.len(),
            if refs.len() == 1 {
                ""
            } else {
                "s (best F1 per measure)"
            }
        )?;
        writeln!(
            out,
            "{:<10} {:>9} {:>9} {:>9}",
            "measure", "precision", "recall", "f1"
        )?;
        for (name, s) in mean.named() {
            writeln!(
                out,
                "{name:<10} {:>9.4} {:>9.4} {:>9.4}",
                s.precision, s.recall, s.fmeasure
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_at_newlines_only() {
        let dir = std::env::temp_dir().join(format!("ember-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.txt");
        let read = |bytes: &[u8]| {
            std::fs::write(&f, bytes).unwrap();
            read_segments(&f)
        };
        assert_eq!(read(b"").unwrap(), Vec::<String>::new());
        assert_eq!(read(b"\n").unwrap(), [""]);
        assert_eq!(read(b"a\r\n\nb").unwrap(), ["a\r", "", "b"]);
        assert_eq!(read("a\u{2028}b\n".as_bytes()).unwrap(), ["a\u{2028}b"]);
        let e = read(b"ok\nbad \xff\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("offset 7"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
