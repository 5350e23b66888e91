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

/// `-n/--max-tokens`: a count, or `-1` for no limit (until the end of text, a
/// stop string or a full context), as in llama.cpp.
pub fn parse_max_tokens(s: &str) -> Result<usize, String> {
    match s.trim() {
        "-1" => Ok(usize::MAX),
        t => t
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not a token count (a number >= 0, or -1 for no limit)")),
    }
}

/// `--temp`: a finite number; 0 or below means greedy, as in llama.cpp.
pub fn parse_temperature(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(t) if t.is_finite() => Ok(t.max(0.0)),
        _ => Err(format!(
            "{s:?} is not a temperature (a finite number; 0 or below = greedy)"
        )),
    }
}

/// `--seed`: a number, or `-1` for a seed from the clock (the default).
pub fn parse_seed(s: &str) -> Result<u64, String> {
    match s.trim() {
        "-1" => Ok(clock_seed()),
        t => t
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a seed (a number >= 0, or -1 for a random one)")),
    }
}

/// A seed from the clock.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A token count where `-1` means "all" (`--repeat-last-n -1`: the whole
/// context; `--keep -1`: the whole prompt), as in llama.cpp. `-1` parses to
/// `usize::MAX`, which the command resolves.
pub fn parse_count_or_all(s: &str) -> Result<usize, String> {
    match s.trim() {
        "-1" => Ok(usize::MAX),
        t => t
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not a token count (a number >= 0, or -1 for all)")),
    }
}

/// `-q/--quiet`: no progress on stderr (commands that can run for more than a
/// second report it: a bar on a terminal, a line every few seconds otherwise).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct QuietArg {
    /// No progress output on stderr (otherwise: a bar on a terminal, a line
    /// every few seconds in a log).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--ctx` of `perplexity` and `kld`: a window reads one token to predict the
/// next, so it holds at least 2.
pub fn check_window(ctx: usize) -> Result<(), String> {
    if ctx < 2 {
        return Err(format!(
            "--ctx {ctx}: a window must hold at least 2 tokens (one read, one predicted)"
        ));
    }
    Ok(())
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
    fn negative_values_mean_what_they_mean_in_llama_cpp() {
        assert_eq!(parse_max_tokens("-1"), Ok(usize::MAX));
        assert_eq!(parse_max_tokens("7"), Ok(7));
        assert!(parse_max_tokens("-2").is_err());
        assert_eq!(parse_temperature("-1"), Ok(0.0));
        assert_eq!(parse_temperature("0.7"), Ok(0.7));
        assert!(parse_temperature("nan").is_err());
        assert!(parse_temperature("inf").is_err());
        assert_eq!(parse_seed("42"), Ok(42));
        assert!(parse_seed("-1").is_ok());
        assert!(parse_seed("-2").is_err());
        assert_eq!(parse_count_or_all("-1"), Ok(usize::MAX));
        assert_eq!(parse_count_or_all("64"), Ok(64));
        assert!(parse_count_or_all("-3").is_err());
    }

    #[test]
    fn commands_in_hints_are_shell_words() {
        assert_eq!(shell_word("dir/m-1.gguf"), "dir/m-1.gguf");
        assert_eq!(shell_word("my model.gguf"), "'my model.gguf'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
