//! Files and directories Ember creates get the mode any new file gets
//! (0666 or 0777 masked by the umask), so another account, e.g. a service user
//! on a Pi, can read a model or adapter that this one made.

#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

/// `ember args…` with the process umask set to `umask` (through `sh`, as a
/// shell user would have it).
fn ember_with_umask(umask: &str, args: &[&str]) -> Output {
    let base = common::ember_command();
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg(base.get_program())
        .args(base.get_args())
        .args(args);
    let out = c.output().expect("run sh");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn convert_merge_and_finetune_outputs_follow_the_umask() {
    let dir = common::scratch();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let llama = fixture("tests/fixtures/hf-tiny/llama");
    let adapter = fixture("tests/fixtures/lora/peft-tiny");

    for (umask, file) in [("022", 0o644), ("027", 0o640)] {
        let model = p(&format!("m{umask}.ember"));
        ember_with_umask(umask, &["convert", &llama, "-o", &model]);
        assert_eq!(mode(Path::new(&model)), file, "convert, umask {umask}");

        let merged = p(&format!("merged{umask}.ember"));
        ember_with_umask(
            umask,
            &["merge", "-m", &model, "--lora", &adapter, "-o", &merged],
        );
        assert_eq!(mode(Path::new(&merged)), file, "merge, umask {umask}");
    }

    // Fine-tuning: the adapter directory, its files and the checkpoints.
    let model = p("m022.ember");
    let data = p("data.txt");
    std::fs::write(&data, "the cat sat on the mat. ".repeat(40)).unwrap();
    let out = p("adapter");
    ember_with_umask(
        "027",
        &[
            "finetune",
            "-m",
            &model,
            "--data",
            &data,
            "--out",
            &out,
            "--steps",
            "2",
            "--seq-len",
            "16",
            "--batch",
            "1",
            "--save-every",
            "1",
            "--val-split",
            "0",
            "--quiet",
        ],
    );
    let out = Path::new(&out);
    assert_eq!(mode(out), 0o750, "adapter directory");
    let mut checked = 0;
    for entry in walk(out) {
        let want = if entry.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode(&entry), want, "{}", entry.display());
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the adapter files and a checkpoint, found {checked} entries"
    );
}

/// Every file and directory below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}
