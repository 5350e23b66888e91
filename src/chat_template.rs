//! Renders a model's Jinja chat template (minijinja) for `ember run --chat`.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

/// One chat message.
#[derive(Serialize, Clone, Debug)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Renders `template` with `messages`, `add_generation_prompt`, and the
/// `bos_token` / `eos_token` variables Hugging Face templates expect.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, Error> {
    let mut env = Environment::new();
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)?;
    env.get_template("chat")?.render(context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders() {
        let t = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render(
            t,
            &[Message {
                role: "user".into(),
                content: "Hi".into(),
            }],
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
    fn template_errors_are_reported() {
        assert!(render("{% if %}", &[], true, "", "").is_err());
        assert!(render("{{ raise_exception('no system role') }}", &[], true, "", "").is_err());
    }
}
