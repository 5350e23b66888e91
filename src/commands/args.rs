//! Flag values shared by several commands.

/// `-t/--threads`: a thread count, or `0` / `auto` for every logical CPU this
/// process may use. The default (see [`default_threads`]) is one per physical core.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n = match s.trim() {
        "auto" | "0" => ember_runtime::cpus::logical_cpus(),
        t => t.parse::<usize>().map_err(|_| {
            format!("{s:?} is not a thread count (a number, or 0 / auto for all CPUs)")
        })?,
    };
    let max = ember_runtime::session::MAX_THREADS;
    if n > max {
        return Err(format!("{n} threads is more than the limit of {max}"));
    }
    Ok(n)
}

/// The default thread count: one per physical core this process may run on.
pub fn default_threads() -> usize {
    ember_runtime::cpus::default_threads()
}

/// Loads an `.ember` model. A file of another kind (a GGUF file, a Hugging
/// Face directory, a llama2.c checkpoint) is an error naming the `ember
/// convert` command that makes the `.ember` file.
pub fn load_model(path: &std::path::Path) -> Result<ember_runtime::Model, String> {
    match ember_runtime::Model::load(path) {
        Ok(m) => Ok(m),
        Err(ember_runtime::Error::BadMagic) => Err(not_ember_hint(path)),
        Err(e) => Err(e.to_string()),
    }
}

/// The error for a path that is not an `.ember` file, with the command to run.
fn not_ember_hint(path: &std::path::Path) -> String {
    let mut magic = [0u8; 4];
    let read_magic = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok();
    let kind = if read_magic && &magic == b"GGUF" {
        "a GGUF file"
    } else {
        "not an .ember file (bad magic bytes)"
    };
    let out = path.with_extension("ember");
    format!(
        "{} is {kind}; convert it first: ember convert {} -o {}",
        path.display(),
        shell_word(&path.display().to_string()),
        shell_word(&out.display().to_string())
    )
}

/// `s` quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:=@".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_parse() {
        assert_eq!(parse_threads("3"), Ok(3));
        let all = ember_runtime::cpus::logical_cpus();
        assert_eq!(parse_threads("auto"), Ok(all));
        assert_eq!(parse_threads("0"), Ok(all));
        assert!(parse_threads("-1").is_err());
        assert!(parse_threads("many").is_err());
        assert!(parse_threads("100000").unwrap_err().contains("limit"));
        assert!(default_threads() >= 1 && default_threads() <= all);
    }

    #[test]
    fn commands_in_hints_are_shell_words() {
        assert_eq!(shell_word("dir/m-1.gguf"), "dir/m-1.gguf");
        assert_eq!(shell_word("my model.gguf"), "'my model.gguf'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
