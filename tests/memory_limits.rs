//! Under an address-space limit (`prlimit --as=4G`, as on a small board or in
//! a container), requests sized by a flag, a file or a model's declared
//! context end in a clear error, never in an abort by a signal.

#![cfg(unix)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

const LIMIT: &str = "--as=4294967296";

/// `ember args…` under the limit: its exit code and stderr.
fn limited(args: &[&str]) -> (std::process::ExitStatus, String) {
    let base = common::ember_command();
    let out = std::process::Command::new("prlimit")
        .arg(LIMIT)
        .arg(base.get_program())
        .args(base.get_args())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run prlimit");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn oversized_requests_are_errors_not_signals() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: prlimit (util-linux) not installed");
        return;
    }
    if common::emulated() || std::env::var_os(common::TEST_RUNNER_ENV).is_some() {
        eprintln!("skipping: an emulator reserves address space of its own");
        return;
    }
    let dir = common::scratch();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    // A tiny model that declares a 16M-token context (its KV cache alone would
    // take 4 GiB, its activations 8 GiB).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/llama");
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), hf.join(e.file_name())).unwrap();
    }
    let config = hf.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["max_position_embeddings"] = 16_777_216.into();
    std::fs::write(&config, c.to_string()).unwrap();
    let m = p("long.ember");
    let out = common::ember_command()
        .args(["convert", hf.to_str().unwrap(), "-o", &m, "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A chat template that doubles a string until memory runs out.
    let doubling = dir.path().join("doubling");
    std::fs::create_dir(&doubling).unwrap();
    for e in std::fs::read_dir(&hf).unwrap().flatten() {
        std::fs::copy(e.path(), doubling.join(e.file_name())).unwrap();
    }
    std::fs::write(
        doubling.join("chat_template.jinja"),
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
         {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    )
    .unwrap();

    // A 5 GiB text file (sparse: no disk used) and long training text.
    let big = p("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    // 200 MiB of text (NUL characters, sparse): readable, too long to tokenize.
    let mid = p("mid.txt");
    std::fs::File::create(&mid)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    let long = p("long.txt");
    std::fs::write(&long, "the cat sat on the mat ".repeat(40_000)).unwrap();

    let cases: &[&[&str]] = &[
        &["run", "-m", &m, "-p", "hi", "--ctx", "0", "-n", "1"],
        &[
            "run",
            "-m",
            &m,
            "-p",
            "hi",
            "--ctx",
            "16777216",
            "--kv-type",
            "q8_0",
        ],
        &["chat", "-m", &m, "--template", "chatml", "--ctx", "0"],
        &[
            "bench",
            "-m",
            &m,
            "-p",
            "1",
            "-n",
            "1",
            "-d",
            "16000000",
            "--no-bandwidth",
        ],
        &[
            "bench",
            "-m",
            &m,
            "--bandwidth-mib",
            "99999999",
            "-p",
            "1",
            "-n",
            "1",
        ],
        &["perplexity", "-m", &m, "-f", &big],
        &["perplexity", "-m", &m, "-f", &long, "--ctx", "16777216"],
        &["kld", "-m", &m, "--ref", &m, "-f", &big],
        &[
            "convert",
            hf.to_str().unwrap(),
            "-o",
            &p("c.ember"),
            "--calibrate",
            &big,
        ],
        &[
            "finetune",
            "-m",
            &m,
            "--data",
            &long,
            "--out",
            &p("ft"),
            "--seq-len",
            "16777216",
            "--steps",
            "1",
            "--val-split",
            "0",
        ],
        &[
            "finetune",
            "-m",
            &m,
            "--data",
            &long,
            "--out",
            &p("ft-batch"),
            "--batch",
            "1000000",
            "--seq-len",
            "64",
            "--steps",
            "1",
            "--val-split",
            "0",
        ],
        &["finetune", "-m", &m, "--data", &big, "--out", &p("ft-big")],
        &[
            "convert",
            doubling.to_str().unwrap(),
            "-o",
            &p("d.ember"),
            "-q",
        ],
        &["tokenize", "-m", &m, "-f", &big],
        &["tokenize", "-m", &m, "-f", &mid],
        &["perplexity", "-m", &m, "-f", &mid],
        &["kld", "-m", &m, "--ref", &m, "-f", &mid],
        &["chat-template", "-m", &m, "--messages", &big],
        &["inspect", &big],
        &["verify", &big],
        &["run", "-m", &big, "-p", "hi"],
    ];
    for args in cases {
        let (status, err) = limited(args);
        assert!(
            status.signal().is_none(),
            "{args:?} died by signal {:?}: {err}",
            status.signal()
        );
        assert!(!status.success(), "{args:?} succeeded under the limit");
        assert!(err.contains("error: "), "{args:?}: {err}");
    }
}
