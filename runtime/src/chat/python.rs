//! The Python behaviours chat templates see under transformers and minijinja does
//! not give by itself: `str.strip()` whitespace, `json.dumps` (transformers'
//! `tojson` filter) and `datetime.strftime` (its `strftime_now` global).

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

use super::limits::{OutputLimit, MAX_JSON_DEPTH};
use super::DateTime;

/// Python's `str.isspace()` for one character: Unicode White_Space plus the
/// information separators U+001C..=U+001F, which Python also strips.
pub(super) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Which ends [`strip`] trims.
#[derive(Clone, Copy)]
pub(super) enum Ends {
    Both,
    Start,
    End,
}

/// Python's `s.strip(chars)` / `lstrip` / `rstrip`: `chars` None strips
/// whitespace ([`is_space`]), else any of its characters.
pub(super) fn strip(s: &str, chars: Option<&str>, ends: Ends) -> String {
    let f = |c: char| match chars {
        Some(set) => set.contains(c),
        None => is_space(c),
    };
    match ends {
        Ends::Both => s.trim_matches(f),
        Ends::Start => s.trim_start_matches(f),
        Ends::End => s.trim_end_matches(f),
    }
    .to_string()
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// Layout options of `json.dumps` (the keywords transformers' `tojson` accepts).
struct JsonStyle {
    /// Text of one indentation level; None: everything on one line.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
    /// Longest output allowed, in bytes.
    max_len: usize,
}

/// transformers' `tojson` filter: `json.dumps(value, ensure_ascii=False,
/// indent=None, separators=None, sort_keys=False)` with those keywords accepted.
/// Unlike minijinja's own filter it escapes no HTML characters, puts a space after
/// `,` and `:` and writes floats as Python's `repr` does. Errors past
/// [`MAX_JSON_DEPTH`] levels (Python's recursion limit) or `max_len` bytes.
pub(super) fn tojson(value: &Value, kwargs: Kwargs, max_len: usize) -> Result<String, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => {
                let n = v
                    .as_i64()
                    .ok_or_else(|| invalid("tojson: indent must be an int or a string"))?;
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                if n > max_len {
                    return Err(too_long(max_len));
                }
                " ".repeat(n)
            }
        }),
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => return Err(invalid("tojson: separators must be two strings")),
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        max_len,
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(out)
}

/// The error of a `tojson` result longer than `max_len` bytes.
fn too_long(max_len: usize) -> Error {
    invalid(format!("tojson: output larger than {max_len} bytes")).with_source(OutputLimit(max_len))
}

/// A line break and `level` indents, if the style has them.
fn newline(out: &mut String, style: &JsonStyle, level: usize) -> Result<(), Error> {
    if let Some(ind) = &style.indent {
        let len = ind.len().saturating_mul(level).saturating_add(1);
        if len > style.max_len.saturating_sub(out.len()) {
            return Err(too_long(style.max_len));
        }
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
    Ok(())
}

fn write_json(out: &mut String, v: &Value, style: &JsonStyle, level: usize) -> Result<(), Error> {
    if level > MAX_JSON_DEPTH {
        return Err(invalid(format!(
            "tojson: value nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    if out.len() > style.max_len {
        return Err(too_long(style.max_len));
    }
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number(v)?),
        ValueKind::String => write_str(out, v.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Map => {
            let mut items = Vec::new();
            for k in v.try_iter()? {
                let val = v.get_item(&k)?;
                items.push((key(&k)?, val));
            }
            if style.sort_keys {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if items.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, val)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, level + 1)?;
                write_str(out, k, style.ensure_ascii);
                out.push_str(&style.key_sep);
                write_json(out, val, style, level + 1)?;
            }
            newline(out, style, level)?;
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, level + 1)?;
                write_json(out, item, style, level + 1)?;
            }
            newline(out, style, level)?;
            out.push(']');
        }
        kind => {
            return Err(invalid(format!(
                "tojson: a value of type {kind} is not JSON serializable"
            )))
        }
    }
    Ok(())
}

/// A JSON object key as `json.dumps` writes it: strings as they are, and
/// numbers, booleans and None converted to their JSON text.
fn key(k: &Value) -> Result<String, Error> {
    match k.kind() {
        ValueKind::String => Ok(k.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if k.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number => number(k),
        kind => Err(invalid(format!(
            "tojson: keys must be str, int, float, bool or None, not {kind}"
        ))),
    }
}

/// An int in decimal, a float as Python's `repr` (and NaN / Infinity as `json.dumps`).
fn number(v: &Value) -> Result<String, Error> {
    if v.is_integer() {
        return Ok(v.to_string());
    }
    let f = f64::try_from(v.clone())?;
    Ok(float_repr(f))
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional for
/// decimal exponents in -4..16, else `d.ddde+XX`.
pub(super) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// A JSON string literal as `json.dumps` writes it.
fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `t.strftime(format)` as Python gives it for a naive datetime in the C locale:
/// `%a %A %b %h %B %c %C %d %D %e %F %H %I %j %m %M %n %p %r %R %S %t %T %u %w %x
/// %X %y %Y %G %g %V %U %W %f %z %Z %%`, with glibc's `-` (no padding) and `_`
/// (pad with spaces) flags on the numeric ones. Other directives are an error.
pub(super) fn strftime(t: &DateTime, format: &str) -> Result<String, Error> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let flag = match spec {
            Some(f @ ('-' | '_' | '0')) => {
                spec = chars.next();
                Some(f)
            }
            _ => None,
        };
        let Some(spec) = spec else {
            out.push('%');
            if let Some(f) = flag {
                out.push(f);
            }
            break;
        };
        // A number padded to `width` with `pad` unless a flag says otherwise.
        let num = |out: &mut String, n: i64, width: usize, pad: char| {
            let (width, pad) = match flag {
                Some('-') => (0, pad),
                Some('_') => (width, ' '),
                Some('0') => (width, '0'),
                _ => (width, pad),
            };
            let s = n.to_string();
            for _ in s.len()..width {
                out.push(pad);
            }
            out.push_str(&s);
        };
        let hour12 = match t.hour % 12 {
            0 => 12,
            h => h,
        };
        let weekday = t.weekday(); // 0 = Monday
        let yday = t.day_of_year(); // 1-based
        match spec {
            'a' => out.push_str(&WEEKDAYS[weekday as usize][..3]),
            'A' => out.push_str(WEEKDAYS[weekday as usize]),
            'b' | 'h' => out.push_str(&MONTHS[t.month as usize - 1][..3]),
            'B' => out.push_str(MONTHS[t.month as usize - 1]),
            'c' => out.push_str(&strftime(t, "%a %b %e %H:%M:%S %Y")?),
            'C' => num(&mut out, i64::from(t.year).div_euclid(100), 2, '0'),
            'd' => num(&mut out, t.day.into(), 2, '0'),
            'D' | 'x' => out.push_str(&strftime(t, "%m/%d/%y")?),
            'e' => num(&mut out, t.day.into(), 2, ' '),
            'F' => out.push_str(&strftime(t, "%Y-%m-%d")?),
            'H' => num(&mut out, t.hour.into(), 2, '0'),
            'I' => num(&mut out, hour12.into(), 2, '0'),
            'j' => num(&mut out, yday.into(), 3, '0'),
            'm' => num(&mut out, t.month.into(), 2, '0'),
            'M' => num(&mut out, t.minute.into(), 2, '0'),
            'n' => out.push('\n'),
            'p' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            'r' => out.push_str(&strftime(t, "%I:%M:%S %p")?),
            'R' => out.push_str(&strftime(t, "%H:%M")?),
            'S' => num(&mut out, t.second.into(), 2, '0'),
            't' => out.push('\t'),
            'T' | 'X' => out.push_str(&strftime(t, "%H:%M:%S")?),
            'u' => num(&mut out, (weekday + 1).into(), 1, '0'),
            'w' => num(&mut out, ((weekday + 1) % 7).into(), 1, '0'),
            'y' => num(&mut out, i64::from(t.year).rem_euclid(100), 2, '0'),
            'Y' => num(&mut out, t.year.into(), 1, '0'),
            'G' => num(&mut out, t.iso_week().0.into(), 1, '0'),
            'g' => num(&mut out, i64::from(t.iso_week().0).rem_euclid(100), 2, '0'),
            'V' => num(&mut out, t.iso_week().1.into(), 2, '0'),
            // Weeks starting on Sunday / Monday; days before the first are week 0.
            'U' => num(
                &mut out,
                ((yday + 6 - (weekday + 1) % 7) / 7).into(),
                2,
                '0',
            ),
            'W' => num(&mut out, ((yday + 6 - weekday) / 7).into(), 2, '0'),
            'f' => out.push_str("000000"),
            // A naive datetime has no zone: Python prints nothing.
            'z' | 'Z' => {}
            '%' => out.push('%'),
            other => {
                return Err(invalid(format!(
                    "strftime_now: unsupported directive %{other} in {format:?}"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        // (value, Python's repr)
        let cases = [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.5, "0.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.6, "123456789012345.6"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e300, "1e+300"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    fn strip_is_pythons() {
        let s = "\u{1f}\u{3000} hi \u{a0}\u{1c}";
        assert_eq!(strip(s, None, Ends::Both), "hi");
        assert_eq!(strip(s, None, Ends::Start), "hi \u{a0}\u{1c}");
        assert_eq!(strip("\n\nx\n", Some("\n"), Ends::End), "\n\nx");
    }

    #[test]
    fn strftime_directives() {
        // Sunday 2025-03-09 14:05:06 (day 68 of the year, ISO week 10).
        let t = DateTime::new(2025, 3, 9, 14, 5, 6).unwrap();
        let f = |s: &str| strftime(&t, s).unwrap();
        assert_eq!(f("%d %b %Y"), "09 Mar 2025");
        assert_eq!(f("%A, %B %-d, %Y"), "Sunday, March 9, 2025");
        assert_eq!(f("%Y-%m-%d %H:%M:%S"), "2025-03-09 14:05:06");
        assert_eq!(
            f("%I:%M %p %e|%_d|%j|%u|%w|%y"),
            "02:05 PM  9| 9|068|7|0|25"
        );
        assert_eq!(
            f("%G-W%V %U %W %c"),
            "2025-W10 10 09 Sun Mar  9 14:05:06 2025"
        );
        assert_eq!(f("100%% %F%Z%z"), "100% 2025-03-09");
        assert!(strftime(&t, "%Q").is_err());
        // ISO years and weeks around new year: (date, "%G %V %U %W %a %j") from Python.
        let edges = [
            ((2024, 1, 1), "2024 01 00 01 Mon 001"),
            ((2021, 1, 1), "2020 53 00 00 Fri 001"),
            ((2020, 12, 31), "2020 53 52 52 Thu 366"),
            ((2027, 1, 3), "2026 53 01 00 Sun 003"),
        ];
        for ((y, m, d), want) in edges {
            let t = DateTime::new(y, m, d, 0, 0, 0).unwrap();
            assert_eq!(
                strftime(&t, "%G %V %U %W %a %j").unwrap(),
                want,
                "{y}-{m}-{d}"
            );
        }
    }
}
