//! Publishing an output file safely: where it really goes (through symlinks),
//! never over one of the inputs, via a temporary file beside it that a killed
//! run's successor sweeps away, renamed into place and made durable with a
//! sync of the directory.

use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{ConvertError, Result};

/// Prefix of the temporary files; the writer's process id follows, so a later
/// run can tell a dead run's leftovers from a live one's.
const TEMP_PREFIX: &str = ".ember-convert-";

/// Symlinks followed before giving up (as the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// The path `out` names after following symlinks (also dangling ones: writing
/// through a link replaces its target, not the link). A path that is not a
/// link is returned as given. Errors: `Io` on a link loop.
pub fn resolve_symlinks(out: &Path) -> Result<PathBuf> {
    let mut path = out.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&path).map_err(|e| ConvertError::io(&path, e))?;
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(ConvertError::io(
        out,
        std::io::Error::other("too many levels of symbolic links"),
    ))
}

/// Refuses an output that would replace an input: `out` (already resolved)
/// being the same file as one of `inputs`, or an existing non-`.ember` file
/// inside an input directory (a Hugging Face checkpoint's own files).
pub fn check_not_an_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(out_meta) = std::fs::metadata(out) else {
        return Ok(()); // a new file replaces nothing
    };
    for input in inputs {
        let Ok(in_meta) = std::fs::metadata(input) else {
            continue;
        };
        let replaces = if in_meta.is_dir() {
            let inside = out
                .parent()
                .zip(std::fs::canonicalize(input).ok())
                .and_then(|(dir, input)| Some(std::fs::canonicalize(dir).ok()? == input))
                .unwrap_or(false);
            inside && out.extension().is_none_or(|e| e != "ember")
        } else {
            same_file(&out_meta, &in_meta)
        };
        if replaces {
            return Err(ConvertError::Unsupported(format!(
                "the output {} would replace the input {}: choose another -o",
                out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

/// The directory `out` is written in.
fn parent_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A new temporary file in `out`'s directory, deleted unless persisted, named
/// with this process's id and created with the mode any new file gets (0666 &
/// ~umask; `tempfile` alone makes it 0600, which other accounts, e.g. a service
/// user, could not read). Leftovers of dead runs in that directory are removed
/// first. Errors: `Io`.
pub fn temp_file_beside(out: &Path) -> Result<NamedTempFile> {
    let dir = parent_dir(out);
    sweep_dead_runs(&dir);
    let mut builder = tempfile::Builder::new();
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder
        .tempfile_in(&dir)
        .map_err(|e| ConvertError::io(&dir, e))
}

/// Removes `.ember-convert-<pid>-*.tmp` files in `dir` whose process is gone
/// (a run killed by SIGKILL, or a crash, cannot remove its own). Best effort:
/// a file that cannot be removed stays. Only where process ids can be checked
/// (`/proc`).
pub fn sweep_dead_runs(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .filter(|n| n.ends_with(".tmp"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Renames `tmp` to `out` and syncs the directory, so the new name survives a
/// power loss as the data (synced before) does. Errors: `Io`.
pub fn publish(tmp: NamedTempFile, out: &Path) -> Result<()> {
    tmp.persist(out)
        .map_err(|e| ConvertError::io(out, e.error))?;
    sync_dir(&parent_dir(out))
}

/// `fsync` of a directory (its entries). Errors: `Io`.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ConvertError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_followed_to_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.ember");
        let link = dir.path().join("link.ember");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("real.ember", &link).unwrap();
            // Dangling: the target is created through the link.
            assert_eq!(resolve_symlinks(&link).unwrap(), target);
            let looped = dir.path().join("loop");
            std::os::unix::fs::symlink("loop", &looped).unwrap();
            assert!(resolve_symlinks(&looped).is_err());
        }
        assert_eq!(resolve_symlinks(&target).unwrap(), target);
    }

    #[test]
    fn an_input_is_never_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("model.gguf");
        std::fs::write(&input, b"x").unwrap();
        assert!(check_not_an_input(&input, &[&input]).is_err());
        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        let weights = hf.join("model.safetensors");
        std::fs::write(&weights, b"x").unwrap();
        let e = check_not_an_input(&weights, &[&hf]).unwrap_err();
        assert!(e.to_string().contains("would replace the input"), "{e}");
        let old = hf.join("old.ember");
        std::fs::write(&old, b"x").unwrap();
        check_not_an_input(&old, &[&hf]).unwrap();
        check_not_an_input(&dir.path().join("new.ember"), &[&input, &hf]).unwrap();
    }

    #[test]
    fn only_dead_runs_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mine = temp_file_beside(&dir.path().join("a.ember")).unwrap();
        // A pid that cannot be running (above the kernel's pid_max limit).
        let dead = dir.path().join(format!("{TEMP_PREFIX}4294967295-abc.tmp"));
        std::fs::write(&dead, b"x").unwrap();
        let other = dir.path().join(".ember-convert-notes.txt");
        std::fs::write(&other, b"x").unwrap();
        sweep_dead_runs(dir.path());
        assert!(mine.path().exists(), "a live run's file is kept");
        assert!(other.exists());
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists(), "a dead run's file is removed");
        }
    }
}
