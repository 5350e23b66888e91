//! `ember chat-template`: render a conversation with the model's chat template (or a
//! built-in one) and print the prompt exactly as the model would be given it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ember_runtime::chat::{self, BuiltinTemplate, Message};
use serde_json::Value;

use crate::report::CliResult;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// JSON file with the conversation: `[{"role": "user", "content": "Hi"}, ...]`
    /// or `{"messages": [...]}`; `-` reads standard input.
    #[arg(long)]
    messages: PathBuf,
    /// Do not end with the assistant-turn opener (add_generation_prompt = false).
    #[arg(long)]
    no_generation_prompt: bool,
    /// Use a built-in template instead of the model's.
    #[arg(long, value_parser = ["chatml", "llama2", "llama3", "gemma"])]
    template: Option<String>,
    /// Print the token ids `ember chat` feeds for this prompt (JSON list)
    /// instead of the text: no BOS added, as transformers' apply_chat_template.
    #[arg(long)]
    ids: bool,
}

/// Reads and checks the messages file; errors name the file and the message.
fn read_messages(path: &Path) -> Result<Vec<Message>, String> {
    let name = path.display();
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the messages from standard input: {e}"))?;
    } else {
        text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    }
    let json: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: bad JSON: {e}"))?;
    let list = match &json {
        Value::Array(a) => a,
        Value::Object(o) => o.get("messages").and_then(Value::as_array).ok_or_else(|| {
            format!("{name}: expected a list of messages or an object with a \"messages\" list")
        })?,
        _ => return Err(format!("{name}: expected a list of messages")),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |key: &str| {
                m.get(key).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
                    format!("{name}: message {i} has no {key:?} string (each message needs \"role\" and \"content\")")
                })
            };
            Ok(Message::new(field("role")?, field("content")?))
        })
        .collect()
}

pub fn run(args: Args) -> CliResult {
    let messages = read_messages(&args.messages)?;
    let model = super::args::load_model(&args.model)?;
    let tok = model.tokenizer();
    let template = match &args.template {
        Some(name) => BuiltinTemplate::from_name(name)
            .ok_or_else(|| format!("unknown template {name:?}"))?
            .source(),
        None => model.chat_template().ok_or(
            "this model has no chat template: choose one with --template chatml|llama2|llama3|gemma",
        )?,
    };
    let (bos, eos) = chat::special_texts(tok);
    let prompt = chat::render(template, &messages, !args.no_generation_prompt, &bos, &eos)?;
    let mut out = std::io::stdout().lock();
    if args.ids {
        let ids = tok.encode(&prompt, chat::RENDERED_ENCODE_OPTIONS);
        writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    } else {
        out.write_all(prompt.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
