//! Chat prompts: renders a model's Jinja chat template, or a built-in one, the way
//! Hugging Face transformers' `apply_chat_template` does (feature `chat`, on by
//! default; it brings in minijinja).
//!
//! Parity with transformers: the environment uses `trim_blocks` and
//! `lstrip_blocks`, drops a single trailing newline of the template
//! (`keep_trailing_newline = False`), enables `{% break %}` / `{% continue %}`,
//! provides `raise_exception(msg)` (an error) and Python string methods
//! (`.strip()`, `.startswith()` ... via minijinja-contrib's pycompat), and passes
//! `messages`, `add_generation_prompt`, `bos_token` and `eos_token`. Not provided:
//! `tools`, `documents`, `strftime_now`, the `tojson` filter; templates using them
//! fail with an error naming the problem.

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

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
    /// Rendering failed (unknown function or filter, type error, ...).
    #[error("chat template error: {0:#}")]
    Render(minijinja::Error),
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
    /// Gemma: `<start_of_turn>user|model\ncontent<end_of_turn>\n` after BOS; a system
    /// message is prepended to the first user turn; roles must alternate.
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

/// Renders `template` for `messages` as transformers' `apply_chat_template` does
/// (see the module documentation), with `bos_token` / `eos_token` as the texts of
/// the model's BOS / EOS tokens (empty when it has none).
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, ChatError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_template("chat", template)
        .map_err(ChatError::Syntax)?;
    let tmpl = env.get_template("chat").map_err(ChatError::Syntax)?;
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| {
        // raise_exception's message is the innermost error's detail.
        let mut inner: &dyn std::error::Error = &e;
        while let Some(src) = inner.source() {
            inner = src;
        }
        match inner.downcast_ref::<minijinja::Error>() {
            Some(m) if m.kind() == ErrorKind::InvalidOperation && m.detail().is_some() => {
                ChatError::Rejected(m.detail().unwrap_or_default().to_string())
            }
            _ if e.kind() == ErrorKind::InvalidOperation && e.detail().is_some() => {
                ChatError::Rejected(e.detail().unwrap_or_default().to_string())
            }
            _ => ChatError::Render(e),
        }
    })
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
        assert!(matches!(
            render("{{ nope() }}", &[], true, "", ""),
            Err(ChatError::Render(_))
        ));
    }

    #[test]
    fn python_string_methods_and_block_trimming() {
        let t = "{% for m in messages %}\n  {{ m.content.strip() | upper }}\n{% endfor %}\n";
        let out = render(t, &[user("  hi  ")], false, "", "").unwrap();
        assert_eq!(out, "  HI\n");
    }
}
