//! `ember tokenize`: print the token ids (and pieces) a model's tokenizer gives a text.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use ember_runtime::tokenizer::{EncodeOptions, Tokenizer};

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// Text to tokenize (or use --file).
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,
    /// Read the text from this file (UTF-8).
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Print JSON: {"ids": [...]} (and "pieces" with --pieces; a list per line with --lines).
    #[arg(long)]
    json: bool,
    /// Also print each token's piece (one `id<TAB>piece` per line without --json).
    #[arg(long)]
    pieces: bool,
    /// Treat special-token text (e.g. `<|im_start|>`) as plain text.
    #[arg(long)]
    no_special: bool,
    /// Tokenize each line of the text separately (line ends are not included).
    #[arg(long)]
    lines: bool,
    /// Time N encodings of the whole input (or of every line with --lines) and
    /// print the throughput on stderr instead of the ids.
    #[arg(long, value_name = "N")]
    bench: Option<u32>,
}

pub fn run(args: Args) -> CliResult {
    let model = super::args::load_model(&args.model)?;
    let tok = model.tokenizer();
    let text = match (&args.text, &args.file) {
        (_, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read {} as UTF-8 text: {e}", f.display()))?,
        (Some(t), None) => t.clone(),
        (None, None) => return Err("give a TEXT or --file".into()),
    };
    let opts = EncodeOptions {
        parse_special: !args.no_special,
        ..tok.default_encode_options()
    };
    let inputs: Vec<&str> = if args.lines {
        text.lines().collect()
    } else {
        vec![text.as_str()]
    };
    if let Some(n) = args.bench {
        return bench(tok, &inputs, opts, n.max(1));
    }
    let encoded = inputs
        .iter()
        .map(|t| tok.try_encode(t, opts))
        .collect::<Result<Vec<_>, _>>()?;
    let piece = |id: u32| {
        tok.spec()
            .tokens
            .get(id as usize)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let one = |ids: &Vec<u32>| {
            let mut v = serde_json::json!({ "ids": ids });
            if args.pieces {
                v["pieces"] = ids.iter().map(|&i| piece(i)).collect();
            }
            v
        };
        let v = if args.lines {
            serde_json::Value::Array(encoded.iter().map(one).collect())
        } else {
            one(&encoded[0])
        };
        writeln!(out, "{v}")?;
    } else if args.pieces {
        for ids in &encoded {
            for &id in ids {
                writeln!(out, "{id}\t{}", piece(id).escape_debug())?;
            }
            if args.lines {
                writeln!(out)?;
            }
        }
    } else {
        for ids in &encoded {
            let line: Vec<String> = ids.iter().map(u32::to_string).collect();
            writeln!(out, "{}", line.join(" "))?;
        }
    }
    Ok(())
}

/// Encodes `inputs` `n` times and reports the best round's throughput.
fn bench(tok: &Tokenizer, inputs: &[&str], opts: EncodeOptions, n: u32) -> CliResult {
    let bytes: usize = inputs.iter().map(|t| t.len()).sum();
    let mut best = f64::INFINITY;
    let mut tokens = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        tokens = inputs
            .iter()
            .map(|t| tok.encode(t, opts).len())
            .sum::<usize>();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    eprintln!(
        "encode: {bytes} bytes in {} input(s) -> {tokens} tokens; best of {n}: {:.3} ms = {:.2} MB/s",
        inputs.len(),
        best * 1e3,
        bytes as f64 / best / 1e6
    );
    Ok(())
}
