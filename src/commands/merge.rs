//! `ember merge`: bake a PEFT LoRA adapter into a model file; and the
//! `--lora DIR --lora-scale S` flags `run` and `chat` share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_converter::writer::{Rotation, WriteOptions};
use ember_converter::DTypeChoice;
use ember_runtime::format::DType;
use ember_runtime::lora::LoraAdapter;
use ember_runtime::{Model, Session};

use crate::report::{human_bytes, CliResult};

/// Applying a LoRA adapter at inference (`run`, `chat`, `perplexity`, and the
/// model under test of `kld`).
#[derive(clap::Args, Debug, Clone)]
pub struct LoraArgs {
    /// LoRA adapter directory in PEFT layout (adapter_model.safetensors +
    /// adapter_config.json), applied on top of the model; the model file is
    /// not changed.
    #[arg(long, value_name = "DIR")]
    pub lora: Option<PathBuf>,
    /// Multiplies the adapter's own scale (lora_alpha / r): 1 applies it as
    /// trained, 0 turns it off.
    #[arg(long, default_value_t = 1.0, requires = "lora")]
    pub lora_scale: f32,
}

/// Loads the PEFT adapter in `dir` for `model`, naming the directory on error.
pub fn load_adapter(
    dir: &Path,
    model: &Model,
) -> Result<LoraAdapter, Box<dyn std::error::Error + Send + Sync>> {
    Ok(ember_runtime::lora::peft::load_peft(dir, model.hparams())?)
}

impl LoraArgs {
    /// Attaches the adapter (if `--lora` was given) to `session`.
    pub fn attach(&self, session: &mut Session) -> CliResult {
        if let Some(dir) = &self.lora {
            let adapter = load_adapter(dir, session.model())?;
            session.set_lora(Some(Arc::new(adapter)), self.lora_scale)?;
        }
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// LoRA adapter directory in PEFT layout.
    #[arg(long, value_name = "DIR")]
    lora: PathBuf,
    /// Multiplies the adapter's own scale (lora_alpha / r).
    #[arg(long, default_value_t = 1.0)]
    lora_scale: f32,
    /// Output .ember file (written atomically: never left partial).
    #[arg(short, long)]
    output: PathBuf,
    /// Storage type of the matrices: auto keeps each tensor's stored type
    /// (adapted q8_0/q4_0 matrices are re-quantized, everything else is copied
    /// bit for bit); the others convert every matrix as `ember convert --dtype`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "f16", "bf16", "q8_0", "q4_0", "iq4_nl"])]
    dtype: String,
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
    let target = ember_converter::output::resolve_symlinks(&args.output)?;
    ember_converter::output::check_not_an_input(&target, &[&args.model, &args.lora])?;
    let model = Arc::new(super::args::load_model(&args.model)?);
    let adapter = Arc::new(load_adapter(&args.lora, &model)?);
    let interrupt = super::signals::interrupt_flag();
    let opts = WriteOptions {
        dtype,
        embed_dtype: None,
        progress: !args.quiet.quiet,
        interrupt: Some(&interrupt),
        importance: None,
        rotation: Rotation::FollowCopies,
    };
    let note = args.lora.display().to_string();
    let w = ember_train::merge::merge(
        &model,
        &adapter,
        args.lora_scale,
        &args.output,
        &opts,
        &note,
    )?;
    let adapted = adapter
        .layers
        .iter()
        .map(|l| l.pairs.iter().flatten().count())
        .sum::<usize>();
    if args.json {
        let v = serde_json::json!({
            "model": args.model,
            "lora": args.lora,
            "output": w.path,
            "rank": adapter.rank,
            "alpha": adapter.alpha,
            "lora_scale": args.lora_scale,
            "factor": adapter.scale() * args.lora_scale,
            "merged_matrices": adapted,
            "file_bytes": w.file_bytes,
            "tensors": w.tensors,
            "raw_copies": w.raw_copies,
            "seconds": w.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "merged {} (rank {}, alpha {}, factor {}) into {} matrices of {}",
            args.lora.display(),
            adapter.rank,
            adapter.alpha,
            adapter.scale() * args.lora_scale,
            adapted,
            args.model.display()
        );
        eprintln!(
            "  {} tensors ({} copied bit for bit), {} written to {} in {:.1} s",
            w.tensors,
            w.raw_copies,
            human_bytes(w.file_bytes),
            w.path.display(),
            w.elapsed.as_secs_f64()
        );
    }
    Ok(())
}
