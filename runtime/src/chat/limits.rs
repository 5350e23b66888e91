//! The bounds that keep a chat template from a model file (written by anyone) from
//! crashing or hanging its host: expression size, checked on the source before
//! minijinja parses it; fuel; output size; macro / include recursion; the memory
//! the rendering thread holds; and the stack rendering runs on, which is the same
//! whatever thread the caller is on.
//!
//! Every limit was chosen against the real templates of about 80 model families
//! (the goldens' and llama.cpp's `models/templates`): each is several times what the
//! most demanding of them needs.

use std::hash::{Hash, Hasher};
use std::io;
use std::sync::{Mutex, PoisonError};

/// Most links one tag (`{{ ... }}` or `{% ... %}`) may hold: operators (`+`, `-`,
/// `not`, `and`, `if`, `is`, `in`, ...), filters, attribute and item accesses,
/// calls and brackets. minijinja's parser, compiler and AST recurse once per link of
/// a chain (`- - x`, `a + b + c`, `x | f | g`, `a.b.c`, `not not x`) with no limit
/// of their own, so an unbounded chain overflows any stack. The busiest tag of the
/// real templates holds 26.
pub const MAX_TAG_LINKS: usize = 256;

/// Deepest nesting of brackets (`(`, `[`, `{`) inside one tag; real templates reach 4.
pub const MAX_BRACKET_DEPTH: usize = 32;

/// How deep macro calls, `caller()`, recursive loops and includes may nest
/// (`Environment::set_recursion_limit`): about what Jinja under Python's default
/// recursion limit allows, and far beyond the schema-rendering macros of real
/// templates.
pub const MAX_RECURSION: usize = 100;

/// Deepest value the `tojson` filter writes: Python's `json.dumps` fails near
/// its default recursion limit of 1000 too.
pub const MAX_JSON_DEPTH: usize = 1000;

/// Fuel of a render with no messages: minijinja spends one unit per instruction
/// (a lookup, an attribute access, an emitted piece, a loop step, ...). The most
/// any real template spends on a one-message conversation is about 550.
pub const FUEL_BASE: u64 = 100_000;

/// Fuel added per message: real templates spend at most about 160 per message.
pub const FUEL_PER_MESSAGE: u64 = 1_000;

/// Fuel added per message squared: some templates look back over the conversation
/// at every message (Gemma 4's spends about 3.7 n^2 units on n messages).
pub const FUEL_PER_MESSAGE_PAIR: u64 = 32;

/// The fuel a conversation of `n_messages` messages may spend:
/// `FUEL_BASE + FUEL_PER_MESSAGE * n + FUEL_PER_MESSAGE_PAIR * n^2` (saturating).
/// A template that runs out (a loop that does not end) fails instead of hanging.
pub fn fuel(n_messages: usize) -> u64 {
    let n = n_messages as u64;
    FUEL_BASE
        .saturating_add(FUEL_PER_MESSAGE.saturating_mul(n))
        .saturating_add(FUEL_PER_MESSAGE_PAIR.saturating_mul(n.saturating_mul(n)))
}

/// Output allowed on top of [`OUTPUT_PER_INPUT_BYTE`] times the input: real
/// templates add at most a few KiB of their own text (tool instructions, dates).
pub const OUTPUT_BASE: usize = 1 << 20;

/// Output allowed per byte of input (message roles and contents, BOS and EOS
/// texts): a template may print a message more than once.
pub const OUTPUT_PER_INPUT_BYTE: usize = 8;

/// The most bytes a render whose input (roles, contents, BOS and EOS texts) is
/// `input_bytes` long may produce: `OUTPUT_BASE + OUTPUT_PER_INPUT_BYTE * input`.
pub fn max_output(input_bytes: usize) -> usize {
    OUTPUT_BASE.saturating_add(OUTPUT_PER_INPUT_BYTE.saturating_mul(input_bytes))
}

/// Stack of the thread templates are compiled and rendered on (reserved address
/// space; only the pages used are committed). The expression bounds keep parsing
/// and compiling within a few MiB even unoptimized; the rest holds template values
/// nested deep (printing, comparing and dropping one recurses per level): as deep
/// as the fuel of a few dozen messages lets a template nest lists. A template built
/// to nest deeper, given the fuel of a longer conversation, can still overflow it.
pub const RENDER_STACK: usize = 64 << 20;

/// Memory a render may hold on top of [`MEMORY_PER_OUTPUT_BYTE`] times its
/// output limit: the environment, the compiled template and its values. Real
/// templates hold well under 1 MiB.
pub const MEMORY_BASE: usize = 16 << 20;

/// Memory allowed per byte of the output limit: a template may build its
/// output in pieces, copy messages and keep strings it does not print.
pub const MEMORY_PER_OUTPUT_BYTE: usize = 16;

/// The most live bytes the rendering thread may allocate for an output limit
/// of `max_output` bytes (counted when the program installs
/// [`crate::memory_budget::BudgetAllocator`], as `ember` and `libember.a` do):
/// a template that doubles a string in a loop fails instead of exhausting memory.
pub fn max_memory(max_output: usize) -> usize {
    MEMORY_BASE.saturating_add(MEMORY_PER_OUTPUT_BYTE.saturating_mul(max_output))
}

/// Hashes of the templates whose render ran out of memory: each left its
/// rendering thread asleep holding up to its limit
/// ([`crate::memory_budget::run_with_budget`]), so they are refused at once
/// afterwards and a host that renders such a template again and again loses
/// that memory once per template, not once per call.
static OVER_MEMORY: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn template_hash(template: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    template.hash(&mut h);
    h.finish()
}

/// Whether a render of `template` has run out of memory before.
pub(super) fn known_over_memory(template: &str) -> bool {
    let hash = template_hash(template);
    OVER_MEMORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&hash)
}

/// Records that a render of `template` ran out of memory.
pub(super) fn remember_over_memory(template: &str) {
    let hash = template_hash(template);
    let mut known = OVER_MEMORY.lock().unwrap_or_else(PoisonError::into_inner);
    if !known.contains(&hash) {
        known.push(hash);
    }
}

/// The source of an error a filter returns when its result would be longer than
/// the output limit (that many bytes).
#[derive(Debug)]
pub(super) struct OutputLimit(pub usize);

impl std::fmt::Display for OutputLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "output larger than {} bytes", self.0)
    }
}

impl std::error::Error for OutputLimit {}

/// An `io::Write` into memory that refuses to grow past `limit` bytes.
pub(super) struct CappedOutput {
    pub bytes: Vec<u8>,
    pub limit: usize,
    /// Set when a write was refused for the limit.
    pub exceeded: bool,
}

impl CappedOutput {
    /// An empty output that holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            exceeded: false,
        }
    }
}

impl io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.limit - self.bytes.len() {
            self.exceeded = true;
            return Err(io::Error::other("chat template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The tag of a template with the most links, and the one with the deepest
/// brackets: `(count, byte offset of the tag)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Extremes {
    pub links: (usize, usize),
    pub depth: (usize, usize),
}

/// Measures every tag of `source` as minijinja 2's lexer splits it (default
/// delimiters): comments and `{% raw %}` blocks are skipped, strings inside tags
/// are skipped, and a tag ends at its closing delimiter outside brackets. Where
/// the lexer would fail (an unterminated string, comment or raw block) nothing
/// after it is parsed, so the scan stops there; an unterminated tag is measured to
/// the end. Anything the scan cannot tokenize counts as text, never as less, so a
/// tag minijinja parses is never measured smaller than it is.
pub(super) fn measure(source: &str) -> Extremes {
    let s = source.as_bytes();
    let mut worst = Extremes::default();
    let mut at = 0;
    while let Some((start, marker, body)) = next_marker(s, at) {
        let raw = (marker == b'%')
            .then(|| basic_tag(&s[body..], b"raw", false))
            .flatten();
        let end = match (marker, raw) {
            (b'#', _) => find(s, body, b"#}").map(|e| e + 2),
            (_, Some(n)) => end_of_raw(s, body + n),
            _ => {
                let close: &[u8; 2] = if marker == b'%' { b"%}" } else { b"}}" };
                let (end, links, depth) = scan_tag(s, body, close);
                if links > worst.links.0 {
                    worst.links = (links, start);
                }
                if depth > worst.depth.0 {
                    worst.depth = (depth, start);
                }
                end
            }
        };
        match end {
            Some(e) => at = e,
            None => break,
        }
    }
    worst
}

/// 1-based line of byte `offset` of `source`.
pub(super) fn line_of(source: &str, offset: usize) -> usize {
    1 + source.as_bytes()[..offset.min(source.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The next `{{`, `{%` or `{#` at or after `from`: (its offset, the marker's
/// second byte, the offset after it and its `-` / `+`).
fn next_marker(s: &[u8], from: usize) -> Option<(usize, u8, usize)> {
    let mut i = from;
    while i + 1 < s.len() {
        if s[i] == b'{' && matches!(s[i + 1], b'{' | b'%' | b'#') {
            let ws = usize::from(matches!(s.get(i + 2), Some(b'-' | b'+')));
            return Some((i, s[i + 1], i + 2 + ws));
        }
        i += 1;
    }
    None
}

/// Offset of the first `needle` in `s` at or after `from`.
fn find(s: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    s.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// minijinja's `skip_basic_tag`: `s` starts with ` name %}` (ASCII whitespace
/// around `name`, optional `-` / `+` before `%}`, and before the whitespace too
/// when `ws_control`); the length of that.
fn basic_tag(s: &[u8], name: &[u8], ws_control: bool) -> Option<usize> {
    let mut i = 0;
    if ws_control && matches!(s.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if !s.get(i..)?.starts_with(name) {
        return None;
    }
    i += name.len();
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if matches!(s.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    s.get(i..)?.starts_with(b"%}").then_some(i + 2)
}

/// The offset after the `{% endraw %}` closing a raw block whose body starts at
/// `from`.
fn end_of_raw(s: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let open = find(s, at, b"{%")? + 2;
        if let Some(n) = basic_tag(&s[open..], b"endraw", true) {
            return Some(open + n);
        }
        at = open;
    }
}

/// Scans one tag whose body starts at `from` and which `close` (`%}` or `}}`,
/// optionally after `-` / `+`) ends outside brackets: (the offset after it, None
/// at the end of the source or an unterminated string; its links; its deepest
/// bracket nesting).
fn scan_tag(s: &[u8], from: usize, close: &[u8; 2]) -> (Option<usize>, usize, usize) {
    let (mut links, mut depth, mut balance) = (0usize, 0usize, 0isize);
    let mut i = from;
    loop {
        while s.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let Some(&c) = s.get(i) else {
            return (None, links, depth);
        };
        let rest = &s[i..];
        if balance == 0 {
            if matches!(c, b'-' | b'+') && rest[1..].starts_with(close) {
                return (Some(i + 3), links, depth);
            }
            if rest.starts_with(close) {
                return (Some(i + 2), links, depth);
            }
        }
        let two = rest.get(..2).unwrap_or(&[]);
        if matches!(two, b"//" | b"**" | b"==" | b"!=" | b">=" | b"<=") {
            links += 1;
            i += 2;
            continue;
        }
        i += match c {
            b'+' | b'-' | b'*' | b'/' | b'%' | b'.' | b'~' | b'|' | b'>' | b'<' => {
                links += 1;
                1
            }
            b'(' | b'[' | b'{' => {
                links += 1;
                balance += 1;
                depth = depth.max(balance.unsigned_abs());
                1
            }
            b')' | b']' | b'}' => {
                balance -= 1;
                1
            }
            b'\'' | b'"' => match string_len(rest) {
                Some(n) => n,
                None => return (None, links, depth),
            },
            b'0'..=b'9' => rest
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b'_')
                .count(),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let n = rest
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                let word = &rest[..n];
                if matches!(
                    word,
                    b"not" | b"and" | b"or" | b"if" | b"else" | b"is" | b"in"
                ) {
                    links += 1;
                }
                n
            }
            _ => 1,
        };
    }
}

/// Length of the string literal `s` starts with (its quote, a backslash escapes
/// the next byte), or None if it does not end.
fn string_len(s: &[u8]) -> Option<usize> {
    let quote = s[0];
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'\\' => i += 2,
            _ if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(src: &str) -> usize {
        measure(src).links.0
    }

    #[test]
    fn counts_links_and_brackets_per_tag() {
        assert_eq!(links("{{ a + b | f(c.d, not e) }}"), 5);
        assert_eq!(measure("{{ f([(1, {'a': 2})]) }}").depth.0, 4);
        // The worst tag counts, not the total.
        assert_eq!(links("{{ a+b }}{% if a+b+c %}{% endif %}"), 3);
        // Text, comments, raw blocks and strings hold no links.
        let quiet = "a - b . c {# -- }} #}{% raw %}{{ -------- }}{%- endraw +%}\
                     {{ '}} - - \\' - -' ~ \"-\" }}";
        assert_eq!(links(quiet), 1);
        // `}}` inside brackets does not close the tag.
        assert_eq!(links("{{ {'a': {'b': 1}} }} - - - -"), 2);
        assert_eq!(links("{{ x -}}{%+ if y -%}{%- endif +%}"), 1);
    }

    #[test]
    fn unterminated_tags_count_to_the_end() {
        let src = format!("{{{{ {}1", "-".repeat(1000));
        assert_eq!(links(&src), 1000);
        let src = format!("{{{{ ({}1", "-".repeat(1000));
        assert_eq!(measure(&src).links.0, 1001);
        // After an unterminated string the lexer fails: nothing more is parsed.
        assert_eq!(links("{{ - 'abc }} - - }}"), 1);
    }

    #[test]
    fn offsets_name_the_line() {
        let src = "a\n{{ b }}\n{{ -c }}\n";
        let worst = measure(src);
        assert_eq!(line_of(src, worst.links.1), 3);
    }

    #[test]
    fn fuel_and_output_grow_with_the_conversation() {
        assert_eq!(fuel(0), FUEL_BASE);
        assert_eq!(
            fuel(10),
            FUEL_BASE + 10 * FUEL_PER_MESSAGE + 100 * FUEL_PER_MESSAGE_PAIR
        );
        assert_eq!(fuel(usize::MAX), u64::MAX);
        assert_eq!(max_output(1), OUTPUT_BASE + OUTPUT_PER_INPUT_BYTE);
        assert_eq!(max_output(usize::MAX), usize::MAX);
    }
}
