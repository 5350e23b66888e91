use std::path::PathBuf;

use ember_converter::writer::Rotation;
use ember_converter::{ConvertOptions, DTypeChoice};
use ember_runtime::format::DType;

use crate::report::{human_bytes, CliResult};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// llama2.c .bin checkpoint, .gguf file, or Hugging Face model directory.
    input: PathBuf,
    /// Output .ember file (written atomically: never left partial).
    #[arg(short, long)]
    output: PathBuf,
    /// Storage type of the weight matrices: auto keeps f32/f16/bf16 sources and
    /// stores dequantized GGUF blocks as f32; q8_0/q4_0/iq4_nl quantize (GGUF
    /// blocks of the same type are copied bit for bit). iq4_nl is the better
    /// 4-bit type (same size and speed class as q4_0, lower error). Norms and
    /// biases are always f32; matrices whose rows are not a multiple of 32 stay
    /// f32 under the block types.
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "f16", "bf16", "q8_0", "q4_0", "iq4_nl"])]
    dtype: String,
    /// Storage type of the token embeddings and output matrix (default: q8_0
    /// with --dtype q4_0 or iq4_nl, else the --dtype).
    #[arg(long, value_parser = ["f32", "f16", "bf16", "q8_0", "q4_0", "iq4_nl"])]
    embed_dtype: Option<String>,
    /// Tokenizer file for checkpoints without one (llama2.c tokenizer.bin).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Calibrate the quantization on this UTF-8 text: run the model over it,
    /// rescale input channels with large activations into the weights
    /// (smoothing; the function is unchanged) and choose block scales that
    /// minimise the error weighted by the activations. Only block types
    /// (q8_0, q4_0, iq4_nl) change; GGUF blocks of the stored type are still
    /// copied as they are unless smoothing rescaled them.
    #[arg(long, value_name = "TEXTFILE")]
    calibrate: Option<PathBuf>,
    /// Tokens of the calibration text to run (windows of 512).
    #[arg(long, default_value_t = 2048, requires = "calibrate")]
    calibrate_tokens: usize,
    /// Smoothing strength in 0..=1 (0: importance weighting only).
    #[arg(long, default_value_t = 0.5, requires = "calibrate")]
    smooth_alpha: f32,
    /// Store quantized matrices unrotated, copying GGUF Q8_0 / Q4_0 / IQ4_NL
    /// blocks of the stored type bit for bit. By default each 32-value block
    /// of their rows is rotated by a Hadamard transform (and their inputs with
    /// it at run time), which makes the 8-bit activations far more precise
    /// (FORMAT.md, "Rotated matrices"); GGUF blocks are then re-quantized.
    #[arg(long)]
    no_rotate: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: super::args::QuietArg,
}

pub fn run(args: Args) -> CliResult {
    let dtype = match args.dtype.as_str() {
        "auto" => DTypeChoice::Auto,
        other => DTypeChoice::Fixed(DType::parse(other).ok_or("unknown dtype")?),
    };
    let interrupt = super::signals::interrupt_flag();
    let calibrate = match &args.calibrate {
        Some(path) => {
            let bytes = ember_runtime::read_file::read_file(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|e| format!("{}: not UTF-8 text ({e})", path.display()))?;
            Some(ember_converter::calibrate::CalibrateOptions {
                max_tokens: args.calibrate_tokens,
                alpha: args.smooth_alpha,
                ..ember_converter::calibrate::CalibrateOptions::new(text)
            })
        }
        None => None,
    };
    let opts = ConvertOptions {
        dtype,
        embed_dtype: args.embed_dtype.as_deref().and_then(DType::parse),
        tokenizer: args.tokenizer,
        progress: !args.quiet.quiet,
        interrupt: Some(&interrupt),
        calibrate,
        rotation: if args.no_rotate {
            Rotation::None
        } else {
            Rotation::All
        },
    };
    let s = ember_converter::convert(&args.input, &args.output, &opts)?;
    let w = &s.write;
    if args.json {
        let v = serde_json::json!({
            "input": args.input,
            "input_kind": s.input_kind.name(),
            "output": w.path,
            "file_bytes": w.file_bytes,
            "tensors": w.tensors,
            "params": w.params,
            "dtypes": w.dtype_counts.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "source_dtypes": w.source_dtype_counts.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "raw_copies": w.raw_copies,
            "rotated": w.rotated,
            "calibration_tokens": s.calibration.map(|c| c.0),
            "smoothed_matrices": s.calibration.map(|c| c.1),
            "seconds": w.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let list = |v: &[(String, usize)]| {
            v.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "converted {} checkpoint {}",
            s.input_kind.name(),
            args.input.display()
        );
        eprintln!("  source tensors: {}", list(&w.source_dtype_counts));
        eprintln!("  stored tensors: {}", list(&w.dtype_counts));
        if let Some((tokens, smoothed)) = s.calibration {
            eprintln!("  calibrated on {tokens} tokens; {smoothed} matrices smoothed");
        }
        if w.raw_copies > 0 {
            eprintln!("  {} quantized tensors copied bit for bit", w.raw_copies);
        }
        if w.rotated > 0 {
            eprintln!("  {} quantized matrices stored rotated", w.rotated);
        }
        eprintln!(
            "  {} tensors, {:.1} M parameters, {} written to {} in {:.1} s",
            w.tensors,
            w.params as f64 / 1e6,
            human_bytes(w.file_bytes),
            w.path.display(),
            w.elapsed.as_secs_f64()
        );
    }
    Ok(())
}
