//! Progress of long work on stderr, the same way in every command:
//! - stderr is a terminal: a bar, drawn once the work has taken a second (so
//!   short commands do not flash one);
//! - otherwise (a log, a pipe, CI): one plain line every few seconds
//!   ([`interval`], `EMBER_PROGRESS_INTERVAL` seconds to change it);
//! - quiet: nothing.
//!
//! Messages printed through [`Progress::println`] go above the bar, or to
//! stderr as plain lines, and are silenced by quiet as well.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between plain progress lines unless `EMBER_PROGRESS_INTERVAL` says
/// otherwise.
pub const DEFAULT_INTERVAL_SECS: f64 = 5.0;

/// Environment variable overriding [`DEFAULT_INTERVAL_SECS`] (seconds, > 0).
pub const INTERVAL_ENV: &str = "EMBER_PROGRESS_INTERVAL";

/// How long work runs before a terminal bar appears.
const BAR_DELAY: Duration = Duration::from_secs(1);

/// The interval between plain progress lines.
pub fn interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs_f64(DEFAULT_INTERVAL_SECS), |s| {
            Duration::from_secs_f64(s.min(1e6))
        })
}

/// What the amounts count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown as KiB/MiB/GiB.
    Bytes,
    /// Items of the named kind ("tokens", "steps", "tensors").
    Items(&'static str),
}

/// Where the report goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Quiet,
    Bar,
    Lines,
}

/// A progress report over `total` units of work. Cheap to update often; safe
/// to share between threads.
pub struct Progress {
    label: String,
    unit: Unit,
    mode: Mode,
    bar: ProgressBar,
    start: Instant,
    /// Units already done when the report started (a resumed run): not
    /// counted in the rate.
    base: u64,
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the last plain line was printed (the start before the first).
    last_line: Instant,
    /// Whether the bar is drawn yet.
    shown: bool,
}

impl Progress {
    /// A report labelled `label` over `total` units; nothing at all when
    /// `quiet`, a bar when stderr is a terminal, plain lines otherwise.
    pub fn new(label: &str, total: u64, unit: Unit, quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Self::with_mode(label, total, unit, mode)
    }

    /// A report that prints nothing (for callers that were not asked for one).
    pub fn hidden() -> Self {
        Self::with_mode("", 0, Unit::Items(""), Mode::Quiet)
    }

    fn with_mode(label: &str, total: u64, unit: Unit, mode: Mode) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let amounts = match unit {
            Unit::Bytes => "{bytes}/{total_bytes}",
            Unit::Items(_) => "{human_pos}/{human_len}",
        };
        let template = format!(
            "{label} {{wide_bar}} {amounts} {{msg}} [{{elapsed_precise}} < {{eta_precise}}]"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        let now = Instant::now();
        Self {
            label: label.to_string(),
            unit,
            mode,
            bar,
            start: now,
            base: 0,
            interval: interval(),
            state: Mutex::new(State {
                last_line: now,
                shown: false,
            }),
        }
    }

    /// The same report for work resumed with `pos` units already done.
    pub fn starting_at(mut self, pos: u64) -> Self {
        self.bar.set_position(pos);
        self.base = pos;
        self
    }

    /// Whether anything is printed.
    pub fn is_quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// Moves to `pos` units done.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.tick();
    }

    /// Adds `n` units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.tick();
    }

    /// A short status shown after the amounts (e.g. the loss so far).
    pub fn set_message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// Prints `line` on stderr: above the bar when there is one; nothing when quiet.
    pub fn println(&self, line: impl AsRef<str>) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                if self.lock().shown {
                    self.bar.println(line.as_ref());
                } else {
                    eprintln!("{}", line.as_ref());
                }
            }
            Mode::Lines => eprintln!("{}", line.as_ref()),
        }
    }

    /// Removes the bar; the work is over.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Draws the bar once the work has run for a second, or prints a plain
    /// line when the interval has passed.
    fn tick(&self) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                let mut st = self.lock();
                if !st.shown && self.start.elapsed() >= BAR_DELAY {
                    st.shown = true;
                    self.bar.set_draw_target(ProgressDrawTarget::stderr());
                }
            }
            Mode::Lines => {
                let now = Instant::now();
                let mut st = self.lock();
                if now.duration_since(st.last_line) >= self.interval {
                    st.last_line = now;
                    eprintln!("{}", self.line());
                }
            }
        }
    }

    /// `label: 42 % (1.2 MiB of 2.9 MiB), 3.1 MiB/s, about 1 s left msg`.
    pub fn line(&self) -> String {
        let (pos, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = pos.saturating_sub(self.base) as f64 / secs;
        let pct = if total > 0 {
            100.0 * pos as f64 / total as f64
        } else {
            0.0
        };
        let mut s = format!(
            "{}: {pct:.0} % ({} of {}), {}/s",
            self.label,
            self.amount(pos),
            self.amount(total),
            self.amount(rate.round() as u64)
        );
        if rate > 0.0 && total > pos {
            let left = (total - pos) as f64 / rate;
            s.push_str(&format!(", about {} left", human_seconds(left)));
        }
        let msg = self.bar.message();
        if !msg.is_empty() {
            s.push_str(&format!("  {msg}"));
        }
        s
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Bytes => human_bytes(n),
            Unit::Items(what) => format!("{n} {what}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// `1.5 MiB`-style size.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `42 s`, `3 min 5 s`, `2 h 4 min`.
fn human_seconds(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_reports_amounts_rate_and_message() {
        let p = Progress::with_mode("perplexity", 200, Unit::Items("tokens"), Mode::Lines);
        p.set_position(50);
        p.set_message("ppl 12.5");
        let line = p.line();
        assert!(
            line.starts_with("perplexity: 25 % (50 tokens of 200 tokens), "),
            "{line}"
        );
        assert!(
            line.contains(" left") && line.ends_with("  ppl 12.5"),
            "{line}"
        );
        let r = Progress::with_mode("train", 10, Unit::Items("steps"), Mode::Lines).starting_at(8);
        assert!(
            r.line().contains("(8 steps of 10 steps), 0 steps/s"),
            "{}",
            r.line()
        );
        let b = Progress::with_mode("convert", 4 << 20, Unit::Bytes, Mode::Lines);
        b.set_position(1 << 20);
        assert!(b.line().contains("(1.0 MiB of 4.0 MiB)"), "{}", b.line());
    }

    #[test]
    fn quiet_and_hidden_print_nothing() {
        assert!(Progress::new("x", 1, Unit::Bytes, true).is_quiet());
        assert!(Progress::hidden().is_quiet());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_seconds(42.4), "42 s");
        assert_eq!(human_seconds(185.0), "3 min 5 s");
        assert_eq!(human_seconds(7440.0), "2 h 4 min");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
