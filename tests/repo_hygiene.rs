//! The repository holds no absolute paths of the machines it was written on:
//! scripts and docs must work from any checkout (`../shared`, `~/.cache`,
//! `target/` are the portable forms).

use std::path::{Path, PathBuf};

/// Prefixes that only ever name one machine's directories (split with
/// `concat!` so this file does not match itself).
const MACHINE_PATHS: [&str; 5] = [
    concat!("/", "work/"),
    concat!("/", "home/"),
    concat!("/", "root/"),
    concat!("/", "Users/"),
    concat!("C:", "\\Users\\"),
];

/// Text files of the checkout, outside build output and version control.
fn repo_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !(name.starts_with('.') && name != ".ci"
                || name == "target"
                || name == "__pycache__")
            {
                repo_files(&path, out);
            }
        } else if name != "Cargo.lock" {
            out.push(path);
        }
    }
}

#[test]
fn no_absolute_machine_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    repo_files(root, &mut files);
    assert!(files.len() > 50, "walked only {} files", files.len());
    let mut found = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue; // binary fixtures
        };
        for (i, line) in text.lines().enumerate() {
            if MACHINE_PATHS.iter().any(|p| line.contains(p)) {
                let rel = f.strip_prefix(root).unwrap_or(f);
                found.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "absolute machine paths:\n{}",
        found.join("\n")
    );
}
