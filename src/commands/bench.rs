//! `ember bench`: prefill and decode speed (tokens/s, mean and spread over
//! repetitions, like llama-bench's pp/tg), peak RSS, and how close decode comes
//! to the memory-bandwidth bound (weight bytes read per token x tokens/s against
//! a measured read bandwidth); and a generator for random-weight models of the
//! benchmark shapes (weights do not change speed).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use ember_converter::ir::{IrTensor, ModelIr, TensorSource};
use ember_converter::writer::{write_model, WriteOptions};
use ember_converter::DTypeChoice;
use ember_progress::{Progress, Unit};
use ember_runtime::format::{
    expected_tensors, flags, Activation, Architecture, DType, HyperParams, NormKind, RopePairing,
};
use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, TOKENIZER_SCHEMA,
};
use ember_runtime::{KvType, Model, Session, SessionConfig};

use crate::report::{peak_rss_bytes, CliResult};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember). With --shape: where the random-weight model is
    /// cached (default `~/.cache/ember/bench/<shape>-<dtype>.ember`).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Generate (once) and benchmark a random-weight model of this shape:
    /// `135m` (SmolLM-135M) or `1.1b` (TinyLlama-1.1B).
    #[arg(long, value_parser = ["135m", "1.1b"])]
    shape: Option<String>,
    /// Matrix dtype of the generated model.
    #[arg(long, default_value = "q8_0", value_parser = ["f32", "f16", "q8_0", "q4_0", "iq4_nl"])]
    dtype: String,
    /// Thread counts to measure, comma-separated (one session each); 0 / auto
    /// = every CPU [default: one per physical core].
    #[arg(short = 't', long, value_delimiter = ',', value_parser = super::args::parse_threads,
          default_values_t = [super::args::default_threads()], hide_default_value = true)]
    threads: Vec<usize>,
    /// Prompt tokens for the prefill measurement (0 = skip).
    #[arg(short, long, default_value_t = 512)]
    prompt: usize,
    /// Generated tokens for the decode measurement (0 = skip).
    #[arg(short = 'n', long, default_value_t = 128)]
    gen: usize,
    /// Tokens already in the context when each measurement starts (prefilled
    /// untimed, like llama-bench's -d): attention cost grows with it.
    #[arg(short, long, default_value_t = 0)]
    depth: usize,
    /// KV cache element type: f32, f16 or q8_0 (about half of f16's memory).
    #[arg(long, default_value = "f16", value_parser = super::run::parse_kv_type)]
    kv_type: KvType,
    /// Repetitions per measurement.
    #[arg(short, long, default_value_t = 3)]
    reps: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Skip the read-bandwidth measurement behind the decode rows' "% of
    /// bound" (it allocates and reads a large buffer: a few seconds).
    #[arg(long)]
    no_bandwidth: bool,
    /// Buffer size for the read-bandwidth measurement [default: 8x the L3
    /// cache, within 256..=1024 MiB]. Smaller than the L3 measures the cache.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    bandwidth_mib: Option<u64>,
    #[command(flatten)]
    quiet: super::args::QuietArg,
}

/// The error type of [`CliResult`].
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Repetitions of the read-bandwidth measurement per thread count (best kept).
const BANDWIDTH_REPS: usize = 8;

/// Bytes in a GB, as bandwidths are quoted (STREAM, llama.cpp, BASELINES.md).
const GB: f64 = 1e9;

/// Size in bytes of the last-level (L3) data cache of CPU 0, from Linux sysfs.
fn l3_cache_bytes() -> Option<u64> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.flatten()
        .filter(|e| {
            let level = std::fs::read_to_string(e.path().join("level"));
            level.is_ok_and(|l| l.trim() == "3")
        })
        .find_map(|e| {
            let size = std::fs::read_to_string(e.path().join("size")).ok()?;
            let size = size.trim();
            let (num, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
            let shift = match unit {
                "K" => 10,
                "M" => 20,
                _ => return None,
            };
            Some(num.parse::<u64>().ok()? << shift)
        })
}

/// Default buffer for the bandwidth measurement: 8x the L3 (so at most an
/// eighth of any pass can hit the cache), at least 256 MiB (when the L3 size is
/// unknown or small) and at most 1 GiB.
fn default_bandwidth_buffer() -> u64 {
    (8 * l3_cache_bytes().unwrap_or(32 << 20)).clamp(256 << 20, 1 << 30)
}

/// Wrapping sum of `words` in sixteen independent lanes (two cache lines per
/// step), which the compiler turns into vector loads and adds with no long
/// dependency chain, so the loop is bound by memory, not by arithmetic.
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 16];
    let chunks = words.chunks_exact(acc.len());
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(w);
        }
    }
    acc.iter().chain(tail).fold(0, |s, &w| s.wrapping_add(w))
}

/// Read bandwidth in bytes/s of `threads` threads each summing its contiguous
/// share of `buf` (as decode splits a matrix's rows over the session's
/// threads), best of `reps`. Each pass is timed from the first thread's start
/// to the last thread's end, after a barrier, so thread start-up is excluded.
fn read_bandwidth(buf: &[u64], threads: usize, reps: usize) -> f64 {
    let parts: Vec<&[u64]> = buf.chunks(buf.len().div_ceil(threads.max(1))).collect();
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let barrier = Barrier::new(parts.len());
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|&part| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        black_box(sum_words(black_box(part)));
                        (start, Instant::now())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("bandwidth thread panicked"))
                .collect()
        });
        let start = spans.iter().map(|s| s.0).min().expect("at least one part");
        let end = spans.iter().map(|s| s.1).max().expect("at least one part");
        best = best.min((end - start).as_secs_f64());
    }
    std::mem::size_of_val(buf) as f64 / best.max(f64::MIN_POSITIVE)
}

/// Measured read bandwidth (bytes/s) for each thread count, with one buffer of
/// `buffer_bytes` written once (every page really allocated: untouched pages
/// would all read the kernel's shared zero page).
/// An error (not an abort) when the buffer cannot be allocated.
fn measure_bandwidth(buffer_bytes: u64, threads: &[usize]) -> Result<Vec<f64>, String> {
    let words = usize::try_from(buffer_bytes / 8)
        .unwrap_or(usize::MAX)
        .max(1);
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words).map_err(|_| {
        format!(
            "cannot allocate {} MiB for the bandwidth measurement (--bandwidth-mib, or --no-bandwidth)",
            buffer_bytes >> 20
        )
    })?;
    buf.resize(words, 0x0101_0101_0101_0101);
    Ok(threads
        .iter()
        .map(|&t| read_bandwidth(&buf, t, BANDWIDTH_REPS))
        .collect())
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Measures prefill and decode speed per thread count (and decode's bandwidth
/// bound) and prints them as a table or, with `--json`, as JSON.
pub fn run(args: Args) -> CliResult {
    let path = model_path(&args)?;
    let model = Arc::new(super::args::load_model(&path)?);
    let hp = *model.hparams();
    let ctx = context_needed(&args, hp.max_context as usize)?;
    // Deterministic pseudo-random tokens (content does not change speed): the
    // depth's, then the prompt's.
    let tokens: Vec<u32> = (0..(args.depth + args.prompt.max(1)) as u64)
        .map(|i| ((i * 2_654_435_761 + 12_345) % hp.vocab_size as u64) as u32)
        .collect();
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let phases = usize::from(args.prompt > 0) + usize::from(args.gen > 0);
    let runs = args.threads.len() * args.reps.max(1) * phases;
    let progress = Progress::new("bench", runs as u64, Unit::Items("runs"), args.quiet.quiet);
    let mut rows = Vec::new();
    for &threads in &args.threads {
        rows.push(measure_speed(
            &model, &args, ctx, threads, &tokens, &progress,
        )?);
    }
    progress.finish();
    // Before the bandwidth buffer exists: the peak is the model's.
    let rss = peak_rss_bytes();
    let weight_bytes = model.decode_weight_bytes();
    let bw_buffer = args
        .bandwidth_mib
        .map(|m| m.saturating_mul(1 << 20))
        .unwrap_or_else(default_bandwidth_buffer);
    let bandwidth: Option<Vec<f64>> = if !args.no_bandwidth && args.gen > 0 {
        Some(measure_bandwidth(bw_buffer, &args.threads)?)
    } else {
        None
    };
    let report = Report {
        args: &args,
        path: &path,
        file_bytes,
        kernel_tier: model.kernel_tier().name(),
        rss,
        weight_bytes,
        bw_buffer,
        bandwidth,
        rows,
    };
    if args.json {
        report.print_json()
    } else {
        report.print_table();
        Ok(())
    }
}

/// The model to measure: `--model`, or with `--shape` the cached random-weight
/// model (generated first when missing).
fn model_path(args: &Args) -> Result<PathBuf, BoxError> {
    match (&args.shape, &args.model) {
        (Some(shape), model) => {
            let dtype = DType::parse(&args.dtype).ok_or("unknown dtype")?;
            let path = model.clone().unwrap_or_else(|| {
                let home = std::env::var_os("HOME").unwrap_or_default();
                PathBuf::from(home)
                    .join(".cache/ember/bench")
                    .join(format!("{shape}-{}.ember", dtype.name()))
            });
            if !path.is_file() {
                generate(shape, dtype, &path, args.quiet.quiet)?;
            }
            Ok(path)
        }
        (None, Some(m)) => Ok(m.clone()),
        (None, None) => Err("give --model or --shape".into()),
    }
}

/// Context the sessions need (depth plus the longer of prompt and generation, at
/// least 1); an error when it exceeds the model's `max_context`.
fn context_needed(args: &Args, max_context: usize) -> Result<usize, BoxError> {
    let ctx = args.depth.saturating_add(args.prompt.max(args.gen)).max(1);
    if ctx > max_context {
        let depth = match args.depth {
            0 => String::new(),
            d => format!("--depth {d} plus "),
        };
        return Err(format!(
            "{depth}the longer of -p {} and -n {} exceeds the model's context ({max_context})",
            args.prompt, args.gen
        )
        .into());
    }
    Ok(ctx)
}

/// The measurements of one thread count.
struct Row {
    threads: usize,
    /// Prefill tokens/s, one per repetition (empty when skipped).
    pp: Vec<f64>,
    /// Decode tokens/s, one per repetition (empty when skipped).
    tg: Vec<f64>,
    /// Tokens in the cache after the last measurement (depth plus its tokens).
    end_pos: usize,
}

/// Prefill and decode speed on one session of `threads` threads, `args.reps`
/// times each; `tokens` holds the depth's tokens, then the prompt's.
fn measure_speed(
    model: &Arc<Model>,
    args: &Args,
    ctx: usize,
    threads: usize,
    tokens: &[u32],
    progress: &Progress,
) -> Result<Row, BoxError> {
    let (depth, tokens) = tokens.split_at(args.depth);
    let config = SessionConfig {
        threads,
        kv_type: args.kv_type,
        ..SessionConfig::new(ctx)
    };
    let mut session = Session::new(model.clone(), config)?;
    // Empties the session, then fills the untimed depth.
    let start = |session: &mut Session| -> CliResult {
        session.reset();
        if !depth.is_empty() {
            session.prefill(depth)?;
        }
        Ok(())
    };
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..args.reps.max(1) {
        if args.prompt > 0 {
            start(&mut session)?;
            let t = Instant::now();
            session.prefill(&tokens[..args.prompt])?;
            pp.push(args.prompt as f64 / t.elapsed().as_secs_f64());
            progress.inc(1);
        }
        if args.gen > 0 {
            start(&mut session)?;
            let mut tok = tokens[0];
            let t = Instant::now();
            for _ in 0..args.gen {
                let logits = session.forward(tok)?;
                tok = ember_runtime::argmax(logits);
            }
            tg.push(args.gen as f64 / t.elapsed().as_secs_f64());
            progress.inc(1);
        }
    }
    Ok(Row {
        threads,
        pp,
        tg,
        end_pos: session.pos(),
    })
}

/// Everything `ember bench` prints.
struct Report<'a> {
    args: &'a Args,
    path: &'a Path,
    file_bytes: u64,
    kernel_tier: &'static str,
    rss: Option<u64>,
    /// Weight bytes decode reads per token.
    weight_bytes: u64,
    /// Size of the bandwidth measurement's buffer, bytes.
    bw_buffer: u64,
    /// Read bandwidth (bytes/s) per thread count, when measured.
    bandwidth: Option<Vec<f64>>,
    /// One per thread count, in `args.threads` order.
    rows: Vec<Row>,
}

impl Report<'_> {
    /// Row `i`'s decode as (weight GB/s, read bandwidth GB/s, % of bound); all
    /// `None` when decode was skipped.
    fn decode_bw(&self, i: usize, tg: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
        if tg.is_empty() {
            return (None, None, None);
        }
        let eff = self.weight_bytes as f64 * mean_sd(tg).0 / GB;
        let bound = self.bandwidth.as_ref().map(|b| b[i] / GB);
        (Some(eff), bound, bound.map(|b| 100.0 * eff / b))
    }

    /// Prints the report as one pretty JSON object.
    fn print_json(&self) -> CliResult {
        let args = self.args;
        let mean_sd_or_zero = |v: &[f64]| if v.is_empty() { (0.0, 0.0) } else { mean_sd(v) };
        let results: Vec<_> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let (pm, ps) = mean_sd_or_zero(&row.pp);
                let (tm, ts) = mean_sd_or_zero(&row.tg);
                let (eff, bw, pct) = self.decode_bw(i, &row.tg);
                serde_json::json!({
                    "threads": row.threads,
                    "depth": args.depth,
                    "end_position": row.end_pos,
                    "prefill_tokens": args.prompt, "prefill_tok_s": pm, "prefill_sd": ps,
                    "decode_tokens": args.gen, "decode_tok_s": tm, "decode_sd": ts,
                    "decode_weight_gb_s": eff,
                    "read_bandwidth_gb_s": bw,
                    "decode_bound_tok_s": bw.map(|b| b * GB / self.weight_bytes as f64),
                    "decode_pct_of_bound": pct,
                })
            })
            .collect();
        let v = serde_json::json!({
            "model": self.path,
            "file_bytes": self.file_bytes,
            "kernel_tier": self.kernel_tier,
            "kv_type": args.kv_type.name(),
            "reps": args.reps,
            "peak_rss_bytes": self.rss,
            "decode_weight_bytes": self.weight_bytes,
            "bandwidth_buffer_bytes": self.bandwidth.as_ref().map(|_| self.bw_buffer),
            "bandwidth_reps": self.bandwidth.as_ref().map(|_| BANDWIDTH_REPS),
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }

    /// Prints the report as a Markdown table with a heading line and notes.
    fn print_table(&self) {
        let args = self.args;
        println!(
            "{} ({:.1} MiB, kernels {}, KV cache {})",
            self.path.display(),
            self.file_bytes as f64 / 1048576.0,
            self.kernel_tier,
            args.kv_type.name()
        );
        // llama-bench's test names: "pp512", "tg128 @ d1024".
        let at = if args.depth > 0 {
            format!(" @ d{}", args.depth)
        } else {
            String::new()
        };
        println!("| threads | test | tok/s | weights GB/s | read GB/s | % of bound |");
        println!("|---:|---|---:|---:|---:|---:|");
        for (i, row) in self.rows.iter().enumerate() {
            let t = row.threads;
            if !row.pp.is_empty() {
                let (m, s) = mean_sd(&row.pp);
                println!("| {t} | pp{}{at} | {m:.2} ± {s:.2} | | | |", args.prompt);
            }
            if !row.tg.is_empty() {
                let (m, s) = mean_sd(&row.tg);
                let (eff, bw, pct) = self.decode_bw(i, &row.tg);
                let cell = |v: Option<f64>, prec: usize| {
                    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
                };
                println!(
                    "| {t} | tg{}{at} | {m:.2} ± {s:.2} | {} | {} | {} |",
                    args.gen,
                    cell(eff, 2),
                    cell(bw, 2),
                    cell(pct, 1)
                );
            }
        }
        self.print_notes();
    }

    /// The lines under the table: weight bytes per token, the bandwidth buffer, peak RSS.
    fn print_notes(&self) {
        if self.args.gen > 0 {
            print!(
                "decode reads {:.2} MiB of weights per token",
                self.weight_bytes as f64 / 1048576.0
            );
            match &self.bandwidth {
                Some(_) => println!(
                    "; read bandwidth: best of {BANDWIDTH_REPS} passes over {} MiB",
                    self.bw_buffer >> 20
                ),
                None => println!(),
            }
        }
        if let Some(r) = self.rss {
            println!("peak RSS {:.1} MiB", r as f64 / 1048576.0);
        }
    }
}

/// Hyperparameters of the benchmark shapes (BASELINES.md).
fn shape_hparams(shape: &str) -> HyperParams {
    let (dim, layers, heads, kv, ffn, vocab, tied) = match shape {
        "1.1b" => (2048, 22, 32, 4, 5632, 32000, false),
        _ => (576, 30, 9, 3, 1536, 49152, true),
    };
    HyperParams {
        architecture: Architecture::Llama as u32,
        activation: Activation::Silu as u32,
        dim,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: kv,
        head_dim: dim / heads,
        ffn_dim: ffn,
        vocab_size: vocab,
        max_context: 2048,
        rope_pairing: RopePairing::Interleaved as u32,
        rope_dim: dim / heads,
        rope_theta: 10000.0,
        rope_scaling_factor: 1.0,
        norm: NormKind::RmsNorm as u32,
        norm_eps: 1e-5,
        flags: if tied { flags::TIED_OUTPUT } else { 0 },
        ..Default::default()
    }
}

/// Uniform values in `[-scale, scale)` from a seeded xorshift, made on demand
/// (so generating a 1.1B model never holds more than one tensor in memory).
struct RandomSource {
    n: usize,
    seed: u64,
    scale: f32,
    offset: f32,
}

impl TensorSource for RandomSource {
    fn source_dtype(&self) -> String {
        "random".into()
    }
    fn native_dtype(&self) -> Option<DType> {
        None
    }
    fn to_f32(&self) -> ember_converter::Result<Vec<f32>> {
        let mut s = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Ok((0..self.n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                self.offset + (2.0 * u - 1.0) * self.scale
            })
            .collect())
    }
}

/// Writes a random-weight model of `shape` with matrices in `dtype` to `path`
/// (never committed: it lives in a cache directory), with progress on stderr
/// unless `quiet`.
fn generate(shape: &str, dtype: DType, path: &Path, quiet: bool) -> CliResult {
    let hp = shape_hparams(shape);
    let tensors = expected_tensors(&hp)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product::<u64>() as usize;
            let norm = shape.len() == 1;
            IrTensor {
                name,
                shape,
                source: Box::new(RandomSource {
                    n,
                    seed: i as u64 + 1,
                    scale: if norm { 0.1 } else { 0.05 },
                    offset: if norm { 1.0 } else { 0.0 },
                }),
            }
        })
        .collect();
    let vocab = hp.vocab_size as usize;
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut token_types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for i in 3..vocab {
        tokens.push(format!("t{i}"));
        token_types.push(TokenType::Normal);
    }
    let ir = ModelIr {
        hparams: hp,
        tensors,
        tokenizer: TokenizerSpec {
            schema: TOKENIZER_SCHEMA,
            kind: TokenizerKind::SentencePieceBpe,
            pre_split: PreSplit::None,
            scores: vec![0.0; vocab],
            tokens,
            token_types,
            merges: vec![],
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            pad: None,
            eog: vec![],
            add_bos: true,
            add_eos: false,
            add_space_prefix: false,
            byte_fallback: false,
        },
        chat_template: None,
        metadata: vec![("general.name".into(), format!("random {shape}"))],
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    eprintln!(
        "generating random-weight {shape} model ({}) at {}",
        dtype.name(),
        path.display()
    );
    write_model(
        &ir,
        path,
        &WriteOptions {
            dtype: DTypeChoice::Fixed(dtype),
            progress: !quiet,
            ..Default::default()
        },
    )?;
    Ok(())
}
