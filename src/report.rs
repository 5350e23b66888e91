//! Shared output helpers: error chains, human-readable sizes.

use std::error::Error;

/// Result type of the CLI commands: any error, printed with its chain.
pub type CliResult = Result<(), Box<dyn Error + Send + Sync>>;

/// Prints `error: …` followed by each `caused by: …` on stderr.
pub fn print_error(e: &(dyn Error + 'static)) {
    for (i, line) in error_lines(e).iter().enumerate() {
        if i == 0 {
            eprintln!("error: {line}");
        } else {
            eprintln!("  caused by: {line}");
        }
    }
}

/// The messages of `e` and its sources, leaving out a cause whose text the
/// message before it already contains (errors that embed their source in
/// their own message would otherwise print it twice).
fn error_lines(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut lines = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !lines.last().is_some_and(|prev| prev.contains(&text)) {
            lines.push(text);
        }
        source = s.source();
    }
    lines
}

pub use ember_progress::human_bytes;

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    /// An error with a cause, embedding the cause's text in its own or not.
    struct Wrapped(std::io::Error, bool);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            if self.1 {
                write!(f, "m.ember: {}", self.0)
            } else {
                write!(f, "cannot convert m.ember")
            }
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_is_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        // Embedded in the message: one line.
        assert_eq!(error_lines(&Wrapped(io(), true)), ["m.ember: no such file"]);
        // Not embedded: its own line.
        assert_eq!(
            error_lines(&Wrapped(io(), false)),
            ["cannot convert m.ember", "no such file"]
        );
    }
}
