//! `ember chat`: an interactive, multi-turn chat with the model's chat template.
//!
//! Each turn renders the whole conversation, reuses the session's cached tokens
//! up to the first difference and prefills only the rest. Lines starting with `/`
//! are commands (`/reset`, `/save FILE`, `/load FILE`, `/help`, `/quit`). When
//! standard input is not a terminal it is read as a script: one user turn or
//! command per line, replies printed one per turn. Ctrl-C stops the current
//! reply; at the prompt it exits.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ember_runtime::chat::{self, BuiltinTemplate, Message};
use ember_runtime::generate::{GenerateConfig, Generator, PrefillOptions, StopReason};
use ember_runtime::sampler::Sampler;
use ember_runtime::{ContextPolicy, Model, Session};

use super::run::SamplingArgs;
use crate::report::CliResult;

/// The default context: room for a long conversation without sizing the KV
/// cache for a 128k-token model.
pub const DEFAULT_CONTEXT: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (.ember).
    #[arg(short, long)]
    model: PathBuf,
    /// System message opening the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Use a built-in template instead of the model's (required for models
    /// without one).
    #[arg(long, value_parser = ["chatml", "llama2", "llama3", "gemma"])]
    template: Option<String>,
    /// Maximum tokens per reply (-1 = no limit: until the end of the reply or
    /// a full context).
    #[arg(short = 'n', long, default_value_t = 512, value_parser = super::args::parse_max_tokens)]
    max_tokens: usize,
    /// Context length [default: the model's maximum, at most 4096; 0 = the
    /// model's maximum].
    #[arg(long)]
    ctx: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    lora: super::merge::LoraArgs,
}

/// Set by the Ctrl-C handler while a reply is being generated.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// True while a reply is being generated (Ctrl-C then stops the reply only).
static GENERATING: AtomicBool = AtomicBool::new(false);

const HELP: &str = "commands: /reset (forget the conversation), /save FILE, /load FILE, /quit";

struct Chat {
    model: Arc<Model>,
    template: String,
    bos: String,
    eos: String,
    system: Option<String>,
    messages: Vec<Message>,
    session: Session<'static>,
    generator: Generator,
    /// Tokens a reply may use, kept free when old turns are dropped.
    reserve: usize,
}

impl Chat {
    fn reset(&mut self) {
        self.messages.clear();
        if let Some(s) = &self.system {
            self.messages.push(Message::new("system", s.clone()));
        }
        self.session.reset();
        self.generator.sampler_mut().reset();
    }

    fn encode(&self) -> Result<Vec<u32>, Box<dyn std::error::Error + Send + Sync>> {
        let text = chat::render(&self.template, &self.messages, true, &self.bos, &self.eos)?;
        Ok(self
            .model
            .tokenizer()
            .encode(&text, chat::RENDERED_ENCODE_OPTIONS))
    }

    /// Runs one user turn: streams the reply to `out`.
    fn turn(&mut self, user: &str, out: &mut impl Write) -> CliResult {
        self.messages.push(Message::new("user", user));
        let ctx = self.session.config().context;
        let first = usize::from(self.system.is_some());
        let mut ids = self.encode()?;
        // Drop the oldest exchanges (a user message and the replies after it)
        // until the prompt and a reply fit; the history keeps starting with a
        // user message, as templates that check role alternation require.
        while ids.len() + self.reserve > ctx && self.messages.len() > first + 1 {
            self.messages.remove(first);
            while self.messages.len() > first + 1 && self.messages[first].role != "user" {
                self.messages.remove(first);
            }
            ids = self.encode()?;
        }
        let shift = matches!(
            self.session.config().context_policy,
            ContextPolicy::Shift { .. }
        );
        if ids.len() >= ctx && !shift {
            self.messages.pop();
            return Err(format!(
                "the message needs {} tokens but the context holds {ctx}; \
                 use a larger --ctx or --context-policy shift",
                ids.len()
            )
            .into());
        }
        let mut reply = String::new();
        INTERRUPTED.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let mut write_err = None;
        // The conversation is the whole context: the generator keeps the cached
        // tokens up to the first difference and feeds the rest.
        let opts = PrefillOptions {
            reuse_cached: true,
            cancel: Some(&INTERRUPTED),
            ..Default::default()
        };
        let result = self
            .generator
            .prefill(&mut self.session, &ids, &opts)
            .and_then(|prefill| {
                self.generator
                    .decode(&mut self.session, &prefill, |_, piece| {
                        reply.push_str(piece);
                        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                            write_err = Some(e);
                            return false;
                        }
                        !INTERRUPTED.load(Ordering::SeqCst)
                    })
            });
        GENERATING.store(false, Ordering::SeqCst);
        let stats = result?;
        writeln!(out)?;
        out.flush()?;
        if let Some(e) = write_err {
            return Err(e.into());
        }
        match stats.stop {
            StopReason::Cancelled => eprintln!("[interrupted]"),
            StopReason::ContextFull => eprintln!(
                "[context full ({ctx} tokens): reply cut; /reset to start over, or use \
                 --context-policy shift]"
            ),
            _ => {}
        }
        self.messages
            .push(Message::new("assistant", reply.trim().to_string()));
        Ok(())
    }

    fn save(&self, path: &Path) -> CliResult {
        let app = serde_json::to_vec(&self.messages)?;
        self.session.save_state(path, &app)?;
        eprintln!(
            "[saved {} tokens and {} messages to {}]",
            self.session.pos(),
            self.messages.len(),
            path.display()
        );
        Ok(())
    }

    fn load(&mut self, path: &Path) -> CliResult {
        let app = self.session.load_state(path)?;
        let messages: Vec<Message> = serde_json::from_slice(&app).map_err(|e| {
            format!(
                "{} holds no chat history ({e}); it may be a prompt cache of `ember run`",
                path.display()
            )
        })?;
        self.messages = messages;
        eprintln!(
            "[loaded {} tokens and {} messages from {}]",
            self.session.pos(),
            self.messages.len(),
            path.display()
        );
        Ok(())
    }

    /// Handles one input line; returns false to quit.
    fn line(&mut self, line: &str, out: &mut impl Write) -> Result<bool, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(true);
        }
        let Some(cmd) = line.strip_prefix('/') else {
            self.turn(line, out).map_err(|e| e.to_string())?;
            return Ok(true);
        };
        let (name, arg) = match cmd.split_once(' ') {
            Some((n, a)) => (n, a.trim()),
            None => (cmd, ""),
        };
        let need_file = || {
            if arg.is_empty() {
                Err(format!("/{name} needs a file name"))
            } else {
                Ok(Path::new(arg))
            }
        };
        match name {
            "quit" | "exit" => return Ok(false),
            "reset" => {
                self.reset();
                eprintln!("[conversation reset]");
            }
            "save" => self.save(need_file()?).map_err(|e| e.to_string())?,
            "load" => self.load(need_file()?).map_err(|e| e.to_string())?,
            "help" => eprintln!("{HELP}"),
            _ => return Err(format!("unknown command /{name}; {HELP}")),
        }
        Ok(true)
    }
}

pub fn run(args: Args) -> CliResult {
    let model = Arc::new(super::args::load_model(&args.model)?);
    let tok = model.tokenizer();
    let template = match &args.template {
        Some(name) => BuiltinTemplate::from_name(name)
            .ok_or_else(|| format!("unknown template {name}"))?
            .source()
            .to_string(),
        None => model
            .chat_template()
            .ok_or("this model has no chat template; choose one with --template")?
            .to_string(),
    };
    let (bos, eos) = chat::special_texts(tok);
    let max_ctx = model.hparams().max_context as usize;
    let ctx = match args.ctx {
        None => max_ctx.min(DEFAULT_CONTEXT),
        Some(0) => max_ctx,
        Some(n) => n,
    };
    // A shift keeps the system prompt (or the BOS the template writes): the
    // tokens of the conversation with only the system message, without the
    // assistant opener.
    let keep = match &args.system {
        Some(s) => {
            let text = chat::render(
                &template,
                &[Message::new("system", s.clone())],
                false,
                &bos,
                &eos,
            )?;
            tok.encode(&text, chat::RENDERED_ENCODE_OPTIONS).len()
        }
        None => usize::from(!bos.is_empty() && template_writes_bos(&template, &bos, &eos)),
    };
    let s = &args.sampling;
    let policy = s.policy(true, keep, keep, ctx)?;
    let mut session = Session::new(model.clone(), s.session_config(ctx, policy))?;
    args.lora.attach(&mut session)?;
    let sampler = Sampler::new(model.hparams().vocab_size as usize, &s.sampler_config(ctx)?)?;
    let generator = Generator::new(
        tok,
        sampler,
        GenerateConfig {
            max_tokens: args.max_tokens,
            stop: s.stop.clone(),
            ignore_eos: false,
        },
    )?;
    let mut chat = Chat {
        template,
        bos,
        eos,
        system: args.system.clone(),
        messages: Vec::new(),
        session,
        generator,
        reserve: args.max_tokens.min(ctx / 4),
        model,
    };
    chat.reset();

    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            INTERRUPTED.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    })?;
    if interactive {
        eprintln!("ember chat: type a message; {HELP}; Ctrl-C stops a reply");
    }
    let mut input = stdin.lock();
    let mut stdout = std::io::stdout();
    let mut buf = Vec::new();
    loop {
        if interactive {
            print!("> ");
            stdout.flush()?;
        }
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            eprintln!("error: the input line is not valid UTF-8; skipped");
            continue;
        };
        match chat.line(line, &mut stdout) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}

/// Whether `template`'s rendering of a one-message conversation starts with the
/// BOS text (the token a context shift should keep).
fn template_writes_bos(template: &str, bos: &str, eos: &str) -> bool {
    chat::render(template, &[Message::new("user", "x")], false, bos, eos)
        .is_ok_and(|text| text.starts_with(bos))
}
