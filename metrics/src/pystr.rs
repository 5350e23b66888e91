//! The few Python `str` behaviours the reference tools rely on, where Rust's
//! standard library differs.

/// Python's `str.isspace()`: Rust's `char::is_whitespace` (Unicode
/// `White_Space`) plus the ASCII separators U+001C..=U+001F, which Python
/// counts as whitespace through their bidirectional class.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` without arguments: the non-empty runs between
/// whitespace.
pub fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|t| !t.is_empty())
}

/// Python's `str.rstrip()` without arguments.
pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `' '.join(s.split())`: whitespace runs collapsed to one space, none at
/// either end.
pub fn collapse_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for t in split(s) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_pythons() {
        // The full list of `c.isspace()` in CPython 3.11.
        let python: Vec<u32> = [0x9..=0xd, 0x1c..=0x20]
            .into_iter()
            .flatten()
            .chain([0x85, 0xa0, 0x1680])
            .chain(0x2000..=0x200a)
            .chain([0x2028, 0x2029, 0x202f, 0x205f, 0x3000])
            .collect();
        let ours: Vec<u32> = (0..=0x10ffffu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_space(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, python);
    }

    #[test]
    fn split_and_strip() {
        assert_eq!(
            split(" a\u{3000}b\u{1f}c  ").collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(rstrip(" a b \u{a0}\r"), " a b");
        assert_eq!(collapse_spaces("  a \t b "), "a b");
        assert_eq!(collapse_spaces(" \u{2003} "), "");
    }
}
