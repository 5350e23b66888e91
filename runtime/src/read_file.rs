//! Reading a whole input file (a text corpus, training data) without aborting
//! when it does not fit: the buffer is reserved fallibly, so a file larger
//! than the memory the process may use is an error naming it.

use std::io::Read;
use std::path::Path;

/// The bytes of `path`. Errors: the open/read error, or `OutOfMemory` when a
/// regular file's size cannot be allocated. A pipe (`-f <(…)`) is read to its
/// end as it comes.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!(
                "{:.1} GiB does not fit in the memory available",
                meta.len() as f64 / (1u64 << 30) as f64
            ),
        )
    })?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_refuses_directories() {
        let dir = std::env::temp_dir().join(format!("ember-read-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.txt");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_file(&f).unwrap(), b"hello");
        let e = read_file(&dir).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory, "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
