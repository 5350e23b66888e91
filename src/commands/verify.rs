use std::path::PathBuf;
use std::time::Instant;

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    model: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: super::args::QuietArg,
}

/// Loads (which validates the header, directory and checksum) and then checks
/// every tensor's CRC-32.
pub fn run(args: Args) -> CliResult {
    let t0 = Instant::now();
    let model = super::args::load_model(&args.model)?;
    let progress = ember_progress::Progress::new(
        "verify",
        model.tensor_data_bytes(),
        ember_progress::Unit::Bytes,
        args.quiet.quiet,
    );
    model.verify_checksums_with_progress(&mut |done| progress.set_position(done))?;
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    if args.json {
        let v = serde_json::json!({
            "model": args.model,
            "ok": true,
            "tensors": model.tensors().len(),
            "bytes": model.bytes().len(),
            "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: OK (header, directory and {} tensor checksums verified in {:.2} s)",
            args.model.display(),
            model.tensors().len(),
            secs
        );
    }
    Ok(())
}
