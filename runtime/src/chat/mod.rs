//! Chat prompts: renders a model's Jinja chat template, or a built-in one, the way
//! Hugging Face transformers' `apply_chat_template` does (feature `chat`, on by
//! default; it brings in minijinja).
//!
//! Parity with transformers: the environment uses `trim_blocks` and
//! `lstrip_blocks`, drops a single trailing newline of the template
//! (`keep_trailing_newline = False`), enables `{% break %}` / `{% continue %}`,
//! provides `raise_exception(msg)` (an error, [`ChatError::Rejected`]),
//! `strftime_now(format)` (the date and time: [`render`] reads the clock in UTC,
//! [`render_at`] takes it), transformers' `tojson` filter (`json.dumps` with
//! `ensure_ascii=False`, `indent`, `separators`, `sort_keys`) and Python string
//! methods (`.strip()`, `.startswith()`, `.split()` ... via minijinja-contrib's
//! pycompat; `strip` and the `trim` filter strip Python's whitespace). It passes
//! what `apply_chat_template` passes by default: `messages`, `tools` and
//! `documents` (both none), `add_generation_prompt`, `bos_token` and `eos_token`.
//! Messages carry text content only (no tool calls, no content parts). Known
//! difference: dict literals written in a template (`{'b': 1, 'a': 2}`) iterate
//! and serialize in key order, not Python's insertion order.
//!
//! Templates come from model files anyone can write, so rendering is bounded
//! ([`limits`]): the expressions of a tag are measured before minijinja parses them,
//! rendering spends fuel that grows with the conversation, the output is capped,
//! macro and include recursion is limited, and templates are compiled and rendered
//! on a thread of their own whose stack does not depend on the caller's and whose
//! memory is limited (in programs that install
//! [`crate::memory_budget::BudgetAllocator`], as `ember` and `libember.a` do). Each
//! bound that trips is an error ([`ChatError::TooDeep`], [`ChatError::OutOfFuel`],
//! [`ChatError::OutputTooLarge`], [`ChatError::OutOfMemory`]), never a crash or a
//! hang. A render that runs out of memory leaves its thread asleep holding that
//! memory (Rust cannot unwind an allocation), once per template. Not bounded:
//! values nested deeper than the render stack holds ([`limits::RENDER_STACK`]).

pub mod limits;
mod python;

use minijinja::value::{from_args, Kwargs, Value};
use minijinja::{context, Environment, ErrorKind, State};
use serde::{Deserialize, Serialize};

use crate::memory_budget::{self, BudgetError};
use crate::tokenizer::{EncodeOptions, Tokenizer};

/// One chat message: a role (`system`, `user`, `assistant`, ...) and its text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template does not parse.
    #[error("chat template syntax error: {0:#}")]
    Syntax(minijinja::Error),
    /// The template called `raise_exception(message)` (e.g. roles not alternating).
    #[error("the chat template rejected the messages: {0}")]
    Rejected(String),
    /// Rendering failed (unknown function or filter, type error, recursion deeper
    /// than [`limits::MAX_RECURSION`], ...).
    #[error("chat template error: {0:#}")]
    Render(minijinja::Error),
    /// A tag holds more than [`limits::MAX_TAG_LINKS`] operators, filters, accesses
    /// and brackets, or brackets nested deeper than [`limits::MAX_BRACKET_DEPTH`]
    /// (checked before parsing). `found` says which, and how many.
    #[error("chat template: expression nested deeper than {limit} (line {line}: {found})")]
    TooDeep {
        line: usize,
        limit: usize,
        found: String,
    },
    /// Rendering spent all its fuel ([`limits::fuel`]): the number of steps it had.
    #[error("chat template: rendering exceeded its fuel of {0} steps (a loop that does not end?)")]
    OutOfFuel(u64),
    /// The output would be longer than [`limits::max_output`] allows: that many bytes.
    #[error("chat template output larger than {0} bytes")]
    OutputTooLarge(usize),
    /// Rendering needed more memory than [`limits::max_memory`] allows: that many bytes.
    #[error("chat template: rendering needed more than {0} bytes of memory (a value that keeps doubling?)")]
    OutOfMemory(usize),
    /// The thread templates render on could not be started.
    #[error("chat template: cannot start the rendering thread: {0}")]
    Thread(std::io::Error),
}

/// Chat templates built into Ember, for models that carry none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (Qwen, SmolLM, many fine-tunes).
    ChatMl,
    /// Llama 2 chat: `<s>[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] answer </s>`;
    /// roles must alternate user/assistant after an optional system message.
    Llama2,
    /// Llama 3: `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`
    /// after the BOS token; contents are trimmed.
    Llama3,
    /// Gemma 3's own template (that of the `google/gemma-3-*-it` checkpoints):
    /// `<start_of_turn>user|model\ncontent<end_of_turn>\n` after BOS, contents
    /// trimmed; a system message (untrimmed) plus a blank line opens the first user
    /// turn; roles must alternate.
    Gemma,
}

impl BuiltinTemplate {
    /// Every built-in template.
    pub const ALL: [BuiltinTemplate; 4] = [Self::ChatMl, Self::Llama2, Self::Llama3, Self::Gemma];

    /// The name used on the command line: `chatml`, `llama2`, `llama3`, `gemma`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatMl => "chatml",
            Self::Llama2 => "llama2",
            Self::Llama3 => "llama3",
            Self::Gemma => "gemma",
        }
    }

    /// The template with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Jinja source (also read by `scripts/make_chat_template_goldens.py`).
    pub fn source(self) -> &'static str {
        match self {
            Self::ChatMl => include_str!("chatml.jinja"),
            Self::Llama2 => include_str!("llama2.jinja"),
            Self::Llama3 => include_str!("llama3.jinja"),
            Self::Gemma => include_str!("gemma.jinja"),
        }
    }
}

/// A calendar date and time of day (proleptic Gregorian, no time zone): what a
/// template's `strftime_now(format)` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl DateTime {
    /// The date and time with these fields; None unless they name one that exists
    /// (year 1..=9999 as in Python, month 1..=12, a day of that month, hour < 24,
    /// minute < 60, second < 60).
    pub fn new(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> Option<Self> {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days_in_month = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            1..=12 => 31,
            _ => return None,
        };
        let valid = (1..=9999).contains(&year)
            && (1..=days_in_month).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then_some(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// The current time in UTC, from the system clock (transformers uses the local
    /// time; the two agree on machines whose time zone is UTC).
    pub fn now_utc() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400) as u32;
        Self {
            year,
            month,
            day,
            hour: s / 3600,
            minute: s / 60 % 60,
            second: s % 60,
        }
    }

    /// Days since 1970-01-01.
    fn days(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// 0 = Monday ... 6 = Sunday.
    fn weekday(&self) -> u32 {
        (self.days() + 3).rem_euclid(7) as u32 // 1970-01-01 was a Thursday
    }

    /// 1 = January 1st.
    fn day_of_year(&self) -> u32 {
        (self.days() - days_from_civil(self.year, 1, 1) + 1) as u32
    }

    /// ISO 8601 year and week (weeks start on Monday; week 1 holds the year's
    /// first Thursday).
    fn iso_week(&self) -> (i32, u32) {
        let thursday = self.days() - i64::from(self.weekday()) + 3;
        let (year, _, _) = civil_from_days(thursday);
        let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
        (year, week as u32)
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01: (year, month, day).
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// The message of a template's `raise_exception(message)`, the source of the
/// render error it causes (so it is told apart from every other error).
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// Python's `str.strip` / `lstrip` / `rstrip` (whitespace as Python defines it),
/// then minijinja-contrib's other Python methods.
fn python_methods(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    if let Some(s) = value.as_str() {
        let ends = match method {
            "strip" => Some(python::Ends::Both),
            "lstrip" => Some(python::Ends::Start),
            "rstrip" => Some(python::Ends::End),
            _ => None,
        };
        if let Some(ends) = ends {
            let (chars,): (Option<&str>,) = from_args(args)?;
            return Ok(Value::from(python::strip(s, chars, ends)));
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// The environment transformers compiles chat templates in (see the module
/// documentation), with `strftime_now` reading `now`, `fuel` to spend and
/// `tojson` writing at most `max_output` bytes.
fn environment(now: DateTime, fuel: u64, max_output: usize) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(fuel));
    env.set_recursion_limit(limits::MAX_RECURSION);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(python_methods);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(
                minijinja::Error::new(ErrorKind::InvalidOperation, "raise_exception")
                    .with_source(Raised(msg)),
            )
        },
    );
    env.add_function("strftime_now", move |format: &str| {
        python::strftime(&now, format)
    });
    env.add_filter("tojson", move |value: &Value, kwargs: Kwargs| {
        python::tojson(value, kwargs, max_output)
    });
    env.add_filter("trim", |s: &str, chars: Option<&str>| {
        python::strip(s, chars, python::Ends::Both)
    });
    env
}

/// The texts a template sees as `bos_token` / `eos_token`: the pieces of the
/// tokenizer's BOS / EOS tokens (empty when it has none).
pub fn special_texts(tok: &Tokenizer) -> (String, String) {
    let text = |id: Option<u32>| {
        id.and_then(|i| tok.spec().tokens.get(i as usize))
            .cloned()
            .unwrap_or_default()
    };
    (text(tok.bos()), text(tok.eos()))
}

/// How a rendered conversation becomes token ids, as transformers'
/// `apply_chat_template(tokenize=True)` encodes it: no BOS is added (a template
/// that wants one writes `bos_token` itself) and special-token texts are tokens.
pub const RENDERED_ENCODE_OPTIONS: EncodeOptions = EncodeOptions {
    add_bos: false,
    parse_special: true,
};

/// Renders `template` for `messages` as transformers' `apply_chat_template` does
/// (see the module documentation), with `bos_token` / `eos_token` as the texts of
/// the model's BOS / EOS tokens (empty when it has none) and `strftime_now`
/// reading the current time in UTC.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, ChatError> {
    render_at(
        template,
        messages,
        add_generation_prompt,
        bos_token,
        eos_token,
        DateTime::now_utc(),
    )
}

/// [`render`] with `strftime_now` formatting `now` instead of the current time
/// (reproducible prompts, tests).
pub fn render_at(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
    now: DateTime,
) -> Result<String, ChatError> {
    check_expressions(template)?;
    let input_bytes = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .fold(bos_token.len() + eos_token.len(), usize::saturating_add);
    let max_output = limits::max_output(input_bytes);
    let fuel = limits::fuel(messages.len());
    let memory = limits::max_memory(max_output);
    if limits::known_over_memory(template) {
        return Err(ChatError::OutOfMemory(memory));
    }
    // Compiling recurses per nesting level and rendering per value level: both run
    // on a stack of known size, whatever thread (a small one, from C) calls. The
    // thread owns its inputs: one that exceeds its memory is left behind.
    let source = template;
    let template = template.to_owned();
    let context = context! {
        messages => messages,
        tools => (),
        documents => (),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    let rendered = memory_budget::run_with_budget(memory, limits::RENDER_STACK, move || {
        let mut env = environment(now, fuel, max_output);
        env.add_template("chat", &template)
            .map_err(ChatError::Syntax)?;
        let tmpl = env.get_template("chat").map_err(ChatError::Syntax)?;
        let mut out = limits::CappedOutput::new(max_output);
        let rendered = tmpl.render_captured_to(context, &mut out).map(drop);
        match rendered {
            Ok(()) => String::from_utf8(out.bytes).map_err(|_| {
                ChatError::Render(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "the output is not UTF-8",
                ))
            }),
            Err(e) => Err(render_error(e, fuel, &out)),
        }
    });
    match rendered {
        Ok(result) => result,
        Err(BudgetError::Exceeded(n)) => {
            limits::remember_over_memory(source);
            Err(ChatError::OutOfMemory(n))
        }
        Err(BudgetError::Thread(e)) => Err(ChatError::Thread(e)),
    }
}

/// Errors unless every tag of `template` is within [`limits::MAX_TAG_LINKS`] and
/// [`limits::MAX_BRACKET_DEPTH`].
fn check_expressions(template: &str) -> Result<(), ChatError> {
    let worst = limits::measure(template);
    let (links, at) = worst.links;
    if links > limits::MAX_TAG_LINKS {
        return Err(ChatError::TooDeep {
            line: limits::line_of(template, at),
            limit: limits::MAX_TAG_LINKS,
            found: format!("{links} operators, filters, accesses and brackets in one tag"),
        });
    }
    let (depth, at) = worst.depth;
    if depth > limits::MAX_BRACKET_DEPTH {
        return Err(ChatError::TooDeep {
            line: limits::line_of(template, at),
            limit: limits::MAX_BRACKET_DEPTH,
            found: format!("brackets nested {depth} deep"),
        });
    }
    Ok(())
}

/// What a failed render of a template that had `fuel` and wrote `out` means:
/// `raise_exception`, a limit, or any other error.
fn render_error(e: minijinja::Error, fuel: u64, out: &limits::CappedOutput) -> ChatError {
    if out.exceeded {
        return ChatError::OutputTooLarge(out.limit);
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = src {
        if let Some(Raised(msg)) = err.downcast_ref::<Raised>() {
            return ChatError::Rejected(msg.clone());
        }
        if let Some(&limits::OutputLimit(n)) = err.downcast_ref::<limits::OutputLimit>() {
            return ChatError::OutputTooLarge(n);
        }
        if err
            .downcast_ref::<minijinja::Error>()
            .is_some_and(|m| m.kind() == ErrorKind::OutOfFuel)
        {
            return ChatError::OutOfFuel(fuel);
        }
        src = err.source();
    }
    ChatError::Render(e)
}

/// Checks that `template` is usable, as the converter does before storing one:
/// it renders, under the limits of [`render`], a one-message conversation, a
/// system + user + assistant + user one and a user + assistant one. A conversation
/// the template rejects with `raise_exception` (a role it does not support) is
/// fine if another renders. Errors: the first failure other than a rejection, or
/// the one-message conversation's rejection when none renders.
pub fn check(template: &str, bos_token: &str, eos_token: &str) -> Result<(), ChatError> {
    let samples: [(&[Message], bool); 3] = [
        (&[Message::new("user", "Hello.")], true),
        (
            &[
                Message::new("system", "You are a helpful assistant."),
                Message::new("user", "Hello."),
                Message::new("assistant", "Hi! How can I help?"),
                Message::new("user", "Tell me a joke."),
            ],
            true,
        ),
        (
            &[
                Message::new("user", "Hello."),
                Message::new("assistant", "Hi! How can I help?"),
            ],
            false,
        ),
    ];
    let mut first_rejection = None;
    let mut rendered = false;
    for (messages, gen) in samples {
        match render(template, messages, gen, bos_token, eos_token) {
            Ok(_) => rendered = true,
            Err(ChatError::Rejected(msg)) => {
                first_rejection.get_or_insert(ChatError::Rejected(msg));
            }
            Err(e) => return Err(e),
        }
    }
    match first_rejection {
        Some(e) if !rendered => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Message {
        Message::new("user", s)
    }

    #[test]
    fn chatml_renders() {
        let out = render(
            BuiltinTemplate::ChatMl.source(),
            &[user("Hi")],
            true,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn names_round_trip() {
        for t in BuiltinTemplate::ALL {
            assert_eq!(BuiltinTemplate::from_name(t.name()), Some(t));
        }
        assert_eq!(BuiltinTemplate::from_name("vicuna"), None);
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            render("{% if %}", &[], true, "", ""),
            Err(ChatError::Syntax(_))
        ));
        match render("{{ raise_exception('no system role') }}", &[], true, "", "") {
            Err(ChatError::Rejected(m)) => assert_eq!(m, "no system role"),
            other => panic!("{other:?}"),
        }
        let two_users = [user("a"), user("b")];
        assert!(matches!(
            render(BuiltinTemplate::Llama2.source(), &two_users, true, "<s>", "</s>"),
            Err(ChatError::Rejected(m)) if m.contains("alternate")
        ));
        // Other failures, minijinja's or the Python helpers', are render errors.
        for t in [
            "{{ nope() }}",
            "{{ [1][::0] }}",
            "{{ strftime_now('%Q') }}",
            "{{ x | tojson }}",
        ] {
            assert!(
                matches!(render(t, &[], true, "", ""), Err(ChatError::Render(_))),
                "{t}"
            );
        }
    }

    #[test]
    fn transformers_globals() {
        let now = DateTime::new(2024, 2, 29, 23, 59, 58).unwrap();
        let t = "{{ strftime_now('%d %b %Y') }}|{{ tools is none }}|{{ documents is none }}|\
                 {{ {'a': '<\\u00e9>\\n', 'b': [1, 2.5, none, true]} | tojson }}|\
                 {{ [] | tojson(indent=2) }}{{ {'k': [1]} | tojson(indent=2) }}|\
                 {{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=[',', ':']) }}";
        let out = render_at(t, &[], false, "", "", now).unwrap();
        assert_eq!(
            out,
            "29 Feb 2024|True|True|{\"a\": \"<\u{e9}>\\n\", \"b\": [1, 2.5, null, true]}|\
             []{\n  \"k\": [\n    1\n  ]\n}|{\"a\":2,\"b\":1}"
        );
        // A message's keys in Python's order (the fields' order).
        let m = render_at(
            "{{ messages[0] | tojson }}",
            &[user("x")],
            false,
            "",
            "",
            now,
        );
        assert_eq!(m.unwrap(), r#"{"role": "user", "content": "x"}"#);
        assert!(DateTime::new(2023, 2, 29, 0, 0, 0).is_none());
        assert!(DateTime::new(2024, 13, 1, 0, 0, 0).is_none());
        let today = DateTime::now_utc();
        assert!(
            today.year >= 2024
                && DateTime::new(
                    today.year,
                    today.month,
                    today.day,
                    today.hour,
                    today.minute,
                    today.second
                ) == Some(today)
        );
    }

    #[test]
    fn limits_end_rendering_with_an_error() {
        let loops =
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(matches!(
            render(loops, &[user("x")], true, "", ""),
            Err(ChatError::OutOfFuel(f)) if f == limits::fuel(1)
        ));
        let limit = limits::max_output(0);
        for t in [
            "{{ 'x' * 10000000 }}",
            "{% for i in range(100) %}{{ 'x' * 100000 }}{% endfor %}",
            "{{ [1] | tojson(indent=100000000) }}",
            "{{ [[[1]]] | tojson(indent=' ' * 300000) }}",
        ] {
            assert!(
                matches!(render(t, &[], true, "", ""), Err(ChatError::OutputTooLarge(n)) if n == limit),
                "{t}"
            );
        }
        // The output limit grows with the input: a long message may be printed twice.
        let long = "y".repeat(limits::OUTPUT_BASE);
        let twice = "{{ messages[0].content }}{{ messages[0].content | upper }}";
        assert_eq!(
            render(twice, &[user(&long)], false, "", "").unwrap().len(),
            2 * long.len()
        );
        // Values that double are bounded by the memory limit, printed or not.
        let memory = limits::max_memory(limit);
        for t in [
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
             {% set ns.s = ns.s + ns.s %}{% endfor %}",
            "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}\
             {{ f('x' * 1000, 40) | length }}",
            "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}\
             {% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | list | length }}",
            "{% set ns = namespace(s='x' * 1000) %}{% for i in range(30) %}\
             {% set ns.s = ns.s | replace('x', 'xx') %}{% endfor %}",
        ] {
            // The second time the template is refused without rendering.
            for _ in 0..2 {
                assert!(
                    matches!(render(t, &[], true, "", ""), Err(ChatError::OutOfMemory(n)) if n == memory),
                    "{t}"
                );
            }
        }
        let recurse = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert!(matches!(
            render(recurse, &[], true, "", ""),
            Err(ChatError::Render(e)) if e.to_string().contains("recursion limit")
        ));
        let deep_json = "{% set ns = namespace(v=1) %}{% for i in range(1001) %}\
                         {% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | tojson }}";
        assert!(matches!(
            render(deep_json, &[], true, "", ""),
            Err(ChatError::Render(e)) if e.to_string().contains("nested deeper than 1000")
        ));
    }

    #[test]
    fn expressions_are_measured_before_parsing() {
        let chain = format!("a\n{{{{ x{} }}}}", " + x".repeat(limits::MAX_TAG_LINKS + 1));
        match render(&chain, &[], true, "", "") {
            Err(e @ ChatError::TooDeep { line: 2, .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "chat template: expression nested deeper than {} (line 2: {} operators, \
                     filters, accesses and brackets in one tag)",
                    limits::MAX_TAG_LINKS,
                    limits::MAX_TAG_LINKS + 1
                )
            ),
            other => panic!("{other:?}"),
        }
        let n = limits::MAX_BRACKET_DEPTH + 1;
        let nested = format!("{{{{ {}1{} }}}}", "[".repeat(n), "]".repeat(n));
        assert!(matches!(
            render(&nested, &[], true, "", ""),
            Err(ChatError::TooDeep { line: 1, found, .. }) if found == format!("brackets nested {n} deep")
        ));
        // At the limits, minijinja parses and renders.
        let chain = format!("{{{{ 1{} }}}}", " + 1".repeat(limits::MAX_TAG_LINKS));
        assert_eq!(render(&chain, &[], true, "", "").unwrap(), "257");
    }

    #[test]
    fn check_wants_a_template_that_renders() {
        for t in BuiltinTemplate::ALL {
            check(t.source(), "<s>", "</s>").unwrap();
        }
        // Rejecting some conversations is fine; rejecting all of them is not.
        let no_system =
            "{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}ok";
        check(no_system, "", "").unwrap();
        assert!(matches!(
            check("{{ raise_exception('never') }}", "", ""),
            Err(ChatError::Rejected(m)) if m == "never"
        ));
        assert!(matches!(
            check("{% if %}", "", ""),
            Err(ChatError::Syntax(_))
        ));
        assert!(matches!(
            check("{{ nope() }}", "", ""),
            Err(ChatError::Render(_))
        ));
        let endless =
            "{% for m in range(100000) %}{% for n in range(100000) %}{% endfor %}{% endfor %}";
        assert!(matches!(
            check(endless, "", ""),
            Err(ChatError::OutOfFuel(_))
        ));
    }

    #[test]
    fn python_string_methods_and_block_trimming() {
        let t = "{% for m in messages %}\n  {{ m.content.strip() | upper }}\n{% endfor %}\n";
        let out = render(t, &[user("  hi  ")], false, "", "").unwrap();
        assert_eq!(out, "  HI\n");
    }
}
