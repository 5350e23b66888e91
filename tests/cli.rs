//! The `ember` binary as a user runs it: exit codes, stdout/stderr contract,
//! JSON outputs, and that failed conversions leave no output file.

mod common;

use std::path::Path;
use std::process::Output;

fn ember(args: &[&str]) -> Output {
    common::ember_command()
        .args(args)
        .output()
        .expect("run ember")
}

fn write_tiny(dir: &Path) -> String {
    let path = dir.join("tiny.ember");
    std::fs::write(&path, common::tiny_model_bytes()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn inspect_and_verify_json() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let out = ember(&["inspect", &m, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hparams"]["dim"], 32);
    assert_eq!(v["hparams"]["rope_pairing"], "half");
    // Embeddings, final norm, untied output + 12 tensors per layer (with q/k/v biases).
    assert_eq!(v["tensors"].as_array().unwrap().len(), 3 + 2 * 12);
    let out = ember(&["verify", &m, "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
}

#[test]
fn verify_fails_on_corrupt_tensor_data() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let mut bytes = std::fs::read(&m).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    std::fs::write(&m, &bytes).unwrap();
    let out = ember(&["verify", &m]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn run_prints_only_text_on_stdout() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let out = ember(&["run", "-m", &m, "-p", "he", "-n", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tok/s"), "statistics go to stderr: {err}");
    let out = ember(&["run", "-m", &m, "-p", "he", "-n", "5", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["generated_tokens"].as_u64().unwrap() <= 5);
    assert!(v["text"].is_string());
    assert!(v["decode_tokens_per_second"].is_number());
}

/// `-t/--threads` on run (as on bench and finetune): a count, `auto` / `0`
/// for every CPU, one per physical core by default; `--json` reports it.
#[test]
fn run_threads_flag_and_default() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let threads = |extra: &[&str]| -> u64 {
        let out = ember(&[&["run", "-m", &m, "-p", "he", "-n", "2", "--json"], extra].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["threads"].as_u64().expect("threads in --json")
    };
    assert_eq!(threads(&["-t", "2"]), 2);
    assert_eq!(threads(&["--threads", "1"]), 1);
    let all = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(threads(&["-t", "auto"]), all);
    assert_eq!(threads(&["-t", "0"]), all);
    let default = threads(&[]);
    assert!(
        default >= 1 && default <= all,
        "default {default} of {all} CPUs"
    );
    let out = ember(&["run", "-m", &m, "-p", "he", "-t", "many"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("thread count"));

    // --ctx 0 is the model's maximum.
    let info: serde_json::Value =
        serde_json::from_slice(&ember(&["inspect", &m, "--json"]).stdout).unwrap();
    let max = &info["hparams"]["max_context"];
    assert!(max.as_u64().unwrap() > 0);
    let out = ember(&[
        "run", "-m", &m, "-p", "he", "-n", "1", "--ctx", "0", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&v["context"], max);
}

/// A GGUF file given to run / chat / inspect: the error names the exact
/// `ember convert` command.
#[test]
fn gguf_model_names_the_convert_command() {
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/tiny-llama.gguf");
    let g = gguf.to_str().unwrap();
    for cmd in [
        &["run", "-m", g, "-p", "hi"][..],
        &["chat", "-m", g],
        &["inspect", g],
    ] {
        let out = ember(cmd);
        assert!(!out.status.success(), "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("is a GGUF file; convert it first: ember convert {g} -o ");
        assert!(err.contains(&want), "{cmd:?}: {err}");
        assert!(err.contains("tiny-llama.ember"), "{cmd:?}: {err}");
    }
}

#[test]
fn run_rejects_prompt_longer_than_context() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let long = "he ".repeat(200);
    let out = ember(&["run", "-m", &m, "-p", &long, "-n", "5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("context"));
}

#[test]
fn perplexity_json_and_bad_utf8() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "hehe he heh ehe".repeat(10)).unwrap();
    let out = ember(&[
        "perplexity",
        "-m",
        &m,
        "-f",
        text.to_str().unwrap(),
        "--ctx",
        "32",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["perplexity"].as_f64().unwrap() > 1.0);
    std::fs::write(&text, b"ok \xff\xfe bad").unwrap();
    let out = ember(&["perplexity", "-m", &m, "-f", text.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid UTF-8"));
}

#[test]
fn failed_conversion_leaves_no_output() {
    let dir = common::scratch();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, vec![7u8; 1000]).unwrap();
    let out_path = dir.path().join("out.ember");
    let out = ember(&[
        "convert",
        junk.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot tell what kind"));
    assert!(!out_path.exists());

    // A truncated GGUF fails while reading: no output, no temporary file left.
    let gguf = dir.path().join("trunc.gguf");
    std::fs::write(&gguf, b"GGUF\x03\x00\x00\x00\x05\x00").unwrap();
    let out = ember(&[
        "convert",
        gguf.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!out_path.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn llama2c_without_tokenizer_is_a_clear_error() {
    let Some(bin) = common::shared_file("models/stories260K/stories260K.bin") else {
        return;
    };
    let dir = common::scratch();
    let out_path = dir.path().join("s.ember");
    let out = ember(&[
        "convert",
        bin.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokenizer"));
    assert!(!out_path.exists());
}

#[test]
fn stories260k_via_cli_matches_reference() {
    let Some(bin) = common::shared_file("models/stories260K/stories260K.bin") else {
        return;
    };
    let Some(tok) = common::shared_file("models/stories260K/tok512.bin") else {
        return;
    };
    let Some(expected) = common::shared_file("models/stories260K/expected_greedy_t0_n200.txt")
    else {
        return;
    };
    let dir = common::scratch();
    let m = dir.path().join("s.ember");
    let out = ember(&[
        "convert",
        bin.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "-o",
        m.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ember(&["run", "-m", m.to_str().unwrap(), "-n", "200"]);
    assert!(out.status.success());
    let expected = std::fs::read_to_string(expected).unwrap();
    // run prints a final newline after the generated text, as llama2.c does.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{expected}\n")
    );
}

/// Weight bytes one decoded token reads, from `ember inspect --json`'s tensor
/// directory: every tensor once, except the embeddings, of which one row is
/// gathered (and which are read whole as the output when tied). Also returns
/// whether the output is tied.
fn expected_decode_bytes(model: &str) -> (u64, bool) {
    let out = ember(&["inspect", model, "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vocab = v["hparams"]["vocab_size"].as_u64().unwrap();
    let tied = v["hparams"]["tied_output"].as_bool().unwrap();
    let mut total = 0;
    for t in v["tensors"].as_array().unwrap() {
        let bytes = t["bytes"].as_u64().unwrap();
        total += bytes;
        if t["name"] == "tok_embeddings" {
            total += bytes / vocab;
            if !tied {
                total -= bytes;
            }
        }
    }
    (total, tied)
}

/// A bandwidth buffer that cannot be allocated is a clear error, not an abort.
#[test]
fn bench_rejects_an_unallocatable_bandwidth_buffer() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let args = ["bench", "-m", &m, "-p", "0", "-n", "1", "-r", "1"];
    let out = ember(&[&args[..], &["--bandwidth-mib", "1000000000000"]].concat());
    assert!(!out.status.success(), "an exabyte buffer was accepted");
    assert_eq!(out.status.code(), Some(1), "not a clean error exit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot allocate"), "{err}");
}

/// `ember bench --json`: the bandwidth-bound fields exist and agree with the
/// tensor directory (no timing thresholds: only signs and identities).
#[test]
fn bench_json_reports_decode_bandwidth() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let (expected, tied) = expected_decode_bytes(&m);
    assert!(!tied);

    // A 4 MiB buffer keeps the test fast (it measures a cache, which is fine here).
    let args = [
        "bench", "-m", &m, "-t", "1,2", "-p", "4", "-n", "4", "-r", "2",
    ];
    let out = ember(&[&args[..], &["--json", "--bandwidth-mib", "4"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decode_weight_bytes"], expected);
    assert_eq!(v["bandwidth_buffer_bytes"], 4 << 20);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let tok_s = r["decode_tok_s"].as_f64().unwrap();
        let eff = r["decode_weight_gb_s"].as_f64().unwrap();
        let bw = r["read_bandwidth_gb_s"].as_f64().unwrap();
        let pct = r["decode_pct_of_bound"].as_f64().unwrap();
        let bound = r["decode_bound_tok_s"].as_f64().unwrap();
        assert!(tok_s > 0.0 && eff > 0.0 && bw > 0.0 && pct > 0.0 && bound > 0.0);
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        // Identities between the reported fields (rounding only).
        const FIELD_TOLERANCE: f64 = 1e-9;
        assert!(rel(eff, tok_s * expected as f64 / 1e9) < FIELD_TOLERANCE);
        assert!(rel(pct, 100.0 * eff / bw) < FIELD_TOLERANCE);
        assert!(rel(bound, bw * 1e9 / expected as f64) < FIELD_TOLERANCE);
    }

    // --no-bandwidth: the decode rate in GB/s stays, the bound is absent.
    let out = ember(&[&args[..], &["--json", "--no-bandwidth"]].concat());
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["bandwidth_buffer_bytes"].is_null());
    let r = &v["results"][0];
    assert!(r["decode_weight_gb_s"].as_f64().unwrap() > 0.0);
    assert!(r["read_bandwidth_gb_s"].is_null() && r["decode_pct_of_bound"].is_null());

    // The text table carries the same columns.
    let out = ember(&[&args[..], &["--bandwidth-mib", "4"]].concat());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("% of bound"), "{text}");
    assert!(text.contains("of weights per token"), "{text}");
}

/// `ember bench --depth D --kv-type T`: measurements start with D tokens in a
/// cache of type T, named as llama-bench names them; a depth that does not fit
/// the model's context is a clear error.
#[test]
fn bench_depth_and_kv_type() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let args = [
        "bench",
        "-m",
        &m,
        "-p",
        "3",
        "-n",
        "3",
        "-r",
        "1",
        "--no-bandwidth",
    ];
    let run = |extra: &[&str]| ember(&[&args[..], extra].concat());
    let out = run(&["--depth", "6", "--kv-type", "q8_0", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kv_type"], "q8_0");
    let r = &v["results"][0];
    assert_eq!(r["depth"], 6);
    assert_eq!(r["end_position"], 6 + 3, "the depth is in the cache");
    assert!(r["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert!(r["decode_tok_s"].as_f64().unwrap() > 0.0);

    let out = run(&["--depth", "6", "--kv-type", "f32"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["KV cache f32", "| pp3 @ d6 |", "| tg3 @ d6 |"] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }

    let max = common::tiny_hparams().max_context;
    let out = run(&["--depth", &max.to_string()]);
    assert_eq!(out.status.code(), Some(1), "a depth past the context");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeds the model's context"), "{err}");
    let out = run(&["--kv-type", "q4_0"]);
    assert!(!out.status.success(), "an unknown KV type was accepted");
}

/// Tied output, quantized matrices: the embedding matrix counts whole (it is
/// the output) plus the gathered row.
#[test]
fn bench_decode_bytes_tied_q8_0() {
    use ember_converter::writer::{write_model, WriteOptions};
    use ember_converter::DTypeChoice;
    use ember_runtime::format::{flags, DType};

    let dir = common::scratch();
    let mut ir = common::tiny_ir();
    ir.hparams.flags |= flags::TIED_OUTPUT;
    ir.tensors.retain(|t| t.name != "output");
    let path = dir.path().join("tied.ember");
    let options = WriteOptions {
        dtype: DTypeChoice::Fixed(DType::Q8_0),
        ..Default::default()
    };
    write_model(&ir, &path, &options).unwrap();
    let m = path.to_string_lossy().into_owned();
    let (expected, tied) = expected_decode_bytes(&m);
    assert!(tied);
    let out = ember(&[
        "bench",
        "-m",
        &m,
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "--json",
        "--no-bandwidth",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decode_weight_bytes"], expected);
    assert!(v["results"][0]["decode_weight_gb_s"].as_f64().unwrap() > 0.0);
}
