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

/// Negative flag values reach their own checks (clap would take `-1` for a
/// flag) and mean what they mean in llama.cpp: `-n -1` no limit, `--temp -1`
/// greedy, `--seed -1` random, `--repeat-last-n -1` the whole context.
#[test]
fn negative_numbers_are_flag_values() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let json = |extra: &[&str]| -> serde_json::Value {
        let out = ember(&[&["run", "-m", &m, "-p", "he", "--json"], extra].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{extra:?}: {err}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // No limit: generation runs to the end of text or the full context.
    let v = json(&["-n", "-1", "--ctx", "24"]);
    let generated = v["generated_tokens"].as_u64().unwrap();
    assert!(v["stop"] == "context_full" || v["stop"] == "eos", "{v}");
    assert!(v["stop"] == "eos" || generated + v["prompt_tokens"].as_u64().unwrap() >= 23);
    let greedy = json(&["-n", "8"])["text"].clone();
    assert_eq!(json(&["-n", "8", "--temp", "-1"])["text"], greedy);
    assert_eq!(
        json(&["-n", "8", "--temp", "-0.5", "--seed", "-1"])["text"],
        greedy
    );
    json(&[
        "-n",
        "8",
        "--repeat-last-n",
        "-1",
        "--repeat-penalty",
        "1.3",
    ]);
    json(&[
        "-n",
        "8",
        "--presence-penalty",
        "-0.5",
        "--frequency-penalty",
        "-0.25",
    ]);
    for (flag, value, want) in [
        ("-n", "-2", "not a token count"),
        ("--seed", "-2", "not a seed"),
        ("--repeat-last-n", "-2", "not a token count"),
        ("--temp", "nan", "not a temperature"),
    ] {
        let out = ember(&["run", "-m", &m, "-p", "he", flag, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{flag} {value}: {err}"
        );
        assert!(
            !err.contains("unexpected argument"),
            "{flag} {value}: {err}"
        );
    }
}

/// Every sampling flag is range-checked, used by the chain or not (greedy
/// runs ignore top-p, but top-p 2 is still a mistake), in run and chat.
#[test]
fn sampling_flags_are_range_checked() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let cases: &[(&[&str], &str)] = &[
        (&["--top-p", "2"], "top-p 2 must be in (0, 1]"),
        (&["--top-p", "nan"], "top-p NaN"),
        (&["--top-p", "-1"], "top-p -1"),
        (&["--top-p", "0"], "top-p 0"),
        (&["--min-p", "nan"], "min-p NaN"),
        (&["--min-p", "-1"], "min-p -1"),
        (&["--min-p", "1.5"], "min-p 1.5"),
        (&["--repeat-penalty", "0"], "repeat penalty 0"),
        (&["--repeat-penalty", "-1"], "repeat penalty -1"),
        (&["--presence-penalty", "inf"], "presence penalty inf"),
        (&["--frequency-penalty", "nan"], "frequency penalty NaN"),
        (&["--top-k", "-1"], "--top-k"),
        (&["--batch", "0"], "batch"),
        (
            &["--keep", "4294967295", "--context-policy", "shift"],
            "--keep 4294967295 leaves nothing to shift",
        ),
    ];
    let run = ["run", "-m", &m, "-p", "he", "-n", "2"];
    let chat = [
        "chat",
        "-m",
        &m,
        "--template",
        "chatml",
        "-n",
        "2",
        "--ctx",
        "64",
    ];
    for (flags, want) in cases {
        for base in [&run[..], &chat[..]] {
            let out = common::ember_command()
                .args(base)
                .args(*flags)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{} {flags:?} was accepted", base[0]);
            assert!(err.contains(want), "{} {flags:?}: {err}", base[0]);
        }
    }
    // The window is capped by the context, so a huge one costs nothing.
    let out = ember(&[
        "run",
        "-m",
        &m,
        "-p",
        "he",
        "-n",
        "2",
        "--repeat-last-n",
        "4294967295",
        "--repeat-penalty",
        "1.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An I/O error names its cause once.
#[test]
fn io_errors_print_their_cause_once() {
    let dir = common::scratch();
    let missing = dir.path().join("missing.bin");
    let out_path = dir.path().join("o.ember");
    let m = missing.to_str().unwrap();
    for cmd in [
        &["convert", m, "-o", out_path.to_str().unwrap()][..],
        &["run", "-m", m, "-p", "hi"],
        &["perplexity", "-m", m, "-f", m],
    ] {
        let out = ember(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd:?}");
        assert_eq!(err.matches("No such file").count(), 1, "{cmd:?}: {err}");
    }
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

/// Commands that can run for long report progress on stderr: plain lines when
/// stderr is not a terminal (every EMBER_PROGRESS_INTERVAL seconds, here
/// every update), nothing with --quiet; stdout keeps only the result.
#[test]
fn long_commands_report_progress_unless_quiet() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "he said she said. ".repeat(50)).unwrap();
    let t = text.to_str().unwrap();
    let out_path = dir.path().join("c.ember");
    let hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/llama");
    let adapter = dir.path().join("adapter").to_string_lossy().into_owned();
    let prompt = "he said she said ".repeat(3);
    let commands: Vec<(&str, Vec<&str>)> = vec![
        (
            "prefill",
            vec!["run", "-m", &m, "-p", &prompt, "-n", "1", "--batch", "2"],
        ),
        (
            "perplexity",
            vec!["perplexity", "-m", &m, "-f", t, "--ctx", "16"],
        ),
        (
            "kld",
            vec!["kld", "-m", &m, "--ref", &m, "-f", t, "--ctx", "16"],
        ),
        ("verify", vec!["verify", &m]),
        (
            "convert",
            vec![
                "convert",
                hf.to_str().unwrap(),
                "-o",
                out_path.to_str().unwrap(),
            ],
        ),
        (
            "bench",
            vec![
                "bench",
                "-m",
                &m,
                "-p",
                "4",
                "-n",
                "4",
                "-r",
                "2",
                "--no-bandwidth",
            ],
        ),
        (
            "finetune",
            vec![
                "finetune",
                "-m",
                out_path.to_str().unwrap(),
                "--data",
                t,
                "--out",
                &adapter,
                "--steps",
                "3",
                "--seq-len",
                "8",
                "--batch",
                "1",
                "--val-split",
                "0",
            ],
        ),
    ];
    for (label, args) in &commands {
        for quiet in [false, true] {
            let mut c = common::ember_command();
            c.args(args).env("EMBER_PROGRESS_INTERVAL", "0.000001");
            if quiet {
                c.arg("--quiet");
            }
            let out = c.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{args:?}: {err}");
            let lines = err
                .lines()
                .filter(|l| l.starts_with(&format!("{label}: ")))
                .count();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!stdout.contains(" % ("), "{label}: progress on stdout");
            if quiet {
                assert_eq!(lines, 0, "{label} --quiet: {err}");
            } else {
                assert!(lines >= 1, "{label}: no progress line in {err}");
                assert!(err.contains(" % ("), "{label}: {err}");
            }
        }
    }
}

/// The temporary files in `dir` (`.ember-convert-*.tmp`).
fn temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".ember-convert-")
        })
        .collect()
}

/// Starts `ember convert` of the SmolLM2 GGUF to f32 (about 0.5 GB: long
/// enough to be signalled mid-write) and waits until its temporary file exists.
fn start_long_conversion(dir: &Path, gguf: &Path) -> std::process::Child {
    let out = dir.join("big.ember");
    let child = common::ember_command()
        .args([
            "convert",
            gguf.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .args(["--dtype", "f32", "--no-rotate", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while temp_files(dir).is_empty() {
        assert!(t0.elapsed().as_secs() < 120, "no temporary file appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

fn kill(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGTERM / SIGHUP during `convert`: the writer stops, removes its temporary
/// file and exits with an error; after SIGKILL (which nothing can catch) the
/// next conversion in that directory sweeps the dead run's file.
#[test]
fn signals_during_convert_leave_no_temporary_files() {
    let Some(gguf) = common::smollm2_gguf() else {
        return;
    };
    let dir = common::scratch();
    for signal in ["-TERM", "-HUP"] {
        let child = start_long_conversion(dir.path(), &gguf);
        kill(&child, signal);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{signal}: {err}");
        assert!(err.contains("interrupted"), "{signal}: {err}");
        assert!(
            temp_files(dir.path()).is_empty(),
            "{signal}: temporary file left"
        );
        assert!(!dir.path().join("big.ember").exists());
    }
    let mut child = start_long_conversion(dir.path(), &gguf);
    kill(&child, "-KILL");
    child.wait().unwrap();
    assert_eq!(temp_files(dir.path()).len(), 1, "SIGKILL leaves the file");
    let small = dir.path().join("small.ember");
    let hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/llama");
    let out = ember(&[
        "convert",
        hf.to_str().unwrap(),
        "-o",
        small.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        temp_files(dir.path()).is_empty(),
        "the dead run's file was not swept"
    );
}

/// `-o` never replaces an input (the checkpoint, its tokenizer, a Hugging Face
/// directory's files, merge's base model or adapter), and writes through a
/// symlink: the link stays, its target gets the new file.
#[test]
fn convert_output_is_never_an_input_and_follows_symlinks() {
    let dir = common::scratch();
    let hf_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/llama");
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for e in std::fs::read_dir(&hf_src).unwrap().flatten() {
        std::fs::copy(e.path(), hf.join(e.file_name())).unwrap();
    }
    let h = hf.to_str().unwrap();
    let weights = hf.join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let model = dir.path().join("m.ember");
    let m = model.to_str().unwrap();
    let adapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora/peft-tiny");
    let link = dir.path().join("link.ember");
    std::os::unix::fs::symlink("m.ember", &link).unwrap();
    let l = link.to_str().unwrap();
    assert!(ember(&["convert", h, "-o", m, "-q"]).status.success());
    for cmd in [
        &["convert", h, "-o", weights.to_str().unwrap()][..],
        &["convert", m, "-o", l],
        &[
            "merge",
            "-m",
            m,
            "--lora",
            adapter.to_str().unwrap(),
            "-o",
            l,
        ],
    ] {
        let out = ember(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd:?} was accepted");
        assert!(err.contains("would replace the input"), "{cmd:?}: {err}");
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);

    // Through a symlink: the link is kept and its target replaced.
    std::fs::remove_file(&model).unwrap();
    let out = ember(&["convert", h, "-o", l, "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(model.is_file());
    assert!(ember(&["verify", l]).status.success());
}

/// A FIFO (or any non-regular file) as a model or checkpoint is refused at
/// once instead of blocking on open.
#[test]
fn a_fifo_is_not_a_model() {
    let dir = common::scratch();
    let fifo = dir.path().join("model.ember");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("skipping: mkfifo unavailable");
        return;
    }
    let f = fifo.to_str().unwrap();
    let out_path = dir.path().join("o.ember");
    for cmd in [
        &["run", "-m", f, "-p", "hi"][..],
        &["inspect", f],
        &["convert", f, "-o", out_path.to_str().unwrap()],
    ] {
        let mut child = common::ember_command()
            .args(cmd)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed().as_secs() > 60 {
                let _ = child.kill();
                panic!("{cmd:?} blocked on a FIFO");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{cmd:?}");
        assert!(err.contains("not a regular file"), "{cmd:?}: {err}");
    }
}

/// `perplexity` and `kld` take an adapter (`--lora`, on the model under test
/// for `kld`): scale 0 is the base model exactly, the adapter changes the score.
#[test]
fn perplexity_and_kld_apply_an_adapter() {
    let dir = common::scratch();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = dir.path().join("m.ember");
    let hf = root.join("tests/fixtures/hf-tiny/llama");
    let out = ember(&[
        "convert",
        hf.to_str().unwrap(),
        "-o",
        m.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = m.to_str().unwrap();
    let adapter = root.join("tests/fixtures/lora/peft-tiny");
    let a = adapter.to_str().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(
        &text,
        "the cat sat on the mat and the dog sat on the log. ".repeat(8),
    )
    .unwrap();
    let t = text.to_str().unwrap();
    let value = |args: &[&str], key: &str| -> f64 {
        let out = ember(&[args, &["--json", "-q"]].concat());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[key].as_f64().unwrap()
    };
    let ppl = |extra: &[&str]| {
        value(
            &[&["perplexity", "-m", m, "-f", t, "--ctx", "32"], extra].concat(),
            "perplexity",
        )
    };
    let base = ppl(&[]);
    assert_eq!(ppl(&["--lora", a, "--lora-scale", "0"]), base);
    assert_ne!(ppl(&["--lora", a]), base);
    let kld = |extra: &[&str]| {
        value(
            &[&["kld", "-m", m, "--ref", m, "-f", t, "--ctx", "32"], extra].concat(),
            "mean_kld",
        )
    };
    assert_eq!(kld(&[]), 0.0);
    assert!(kld(&["--lora", a]) > 0.0);
}
