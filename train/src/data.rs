//! Training data: plain text packed into fixed-length sequences, or JSONL chat
//! records rendered with the model's chat template with the loss on assistant
//! tokens only. Also UTF-8 validation (errors name the line), optional Unicode
//! NFC normalisation and exact-duplicate removal, and a seeded train/validation
//! split.
//!
//! **Plain text.** A document is a run of lines separated by one or more blank
//! lines. Each document is tokenized on its own (BOS first when the tokenizer
//! adds one), documents are concatenated in file order and the stream is cut
//! into windows of `seq_len + 1` tokens overlapping by one (each window predicts
//! `seq_len` tokens; a shorter final window is kept). Every prediction counts.
//!
//! **JSONL chat.** One JSON object per non-empty line with a `messages` array of
//! `{"role", "content"}` objects. Assistant spans are found by rendering
//! prefixes: for assistant message `i`, the template's text for `messages[..i]`
//! with the generation prompt and for `messages[..=i]` without it; the
//! difference is what the model must generate (the reply and its end-of-turn
//! marker). The whole rendering is tokenized once (as `ember chat` does); a span
//! edge falls after the tokens that the text before it tokenizes to (as far as
//! they agree with the whole text's tokens, so a token merging across an edge
//! counts as after it). Predictions of tokens inside assistant spans count. A
//! template that does not render conversations incrementally (a prefix's text
//! not being a prefix of the whole) is an error. Records longer than
//! `seq_len + 1` tokens are truncated.
//!
//! **Split.** Duplicates are removed (with `dedup`) before splitting, so no
//! document or record is in both sets. With `val_split = f`, `ceil(f n)`
//! documents/records chosen by a shuffle seeded with `seed` go to validation.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ember_runtime::chat::{self, BuiltinTemplate, Message};
use ember_runtime::Model;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Result, TrainError};
use crate::grad::Example;
use ember_runtime::sampler::{mix64, Rng};

/// The kind of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// Plain text, packed.
    Text,
    /// JSONL chat records.
    Jsonl,
}

impl DataFormat {
    /// `.jsonl` files are chat records, everything else plain text.
    pub fn detect(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Self::Jsonl,
            _ => Self::Text,
        }
    }
}

/// What to read and how.
#[derive(Clone, Debug)]
pub struct DataOptions {
    pub train: PathBuf,
    /// A separate validation file (same format); else `val_split` of `train`.
    pub val: Option<PathBuf>,
    /// Fraction of documents/records held out for validation (0 = none).
    pub val_split: f64,
    /// Predictions per sequence.
    pub seq_len: usize,
    /// Normalise text to Unicode NFC before tokenizing.
    pub nfc: bool,
    /// Drop exact duplicate documents/records (after normalisation).
    pub dedup: bool,
    /// Seed of the train/validation split.
    pub seed: u64,
    /// A built-in chat template name instead of the model's own.
    pub template: Option<String>,
    /// Forced format; else detected from the extension.
    pub format: Option<DataFormat>,
}

/// Counts describing the prepared data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataReport {
    pub documents: usize,
    pub duplicates_removed: usize,
    pub truncated: usize,
    pub train_tokens: usize,
    pub val_tokens: usize,
}

/// Training and validation sequences.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub report: DataReport,
}

impl Prepared {
    /// A 64-bit fingerprint of the training sequences (tokens and masks), stored
    /// in checkpoints so a resume with other data is refused.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.train)
    }
}

/// FNV-1a over the sequences, finished with a mix.
pub fn fingerprint(examples: &[Example]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: u64| {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    for e in examples {
        eat(e.tokens.len() as u64);
        for (i, &t) in e.tokens.iter().enumerate() {
            let m = i > 0 && e.loss_mask[i - 1];
            eat(((t as u64) << 1) | m as u64);
        }
    }
    mix64(h)
}

/// Reads `path` and checks it is non-empty UTF-8; returns its lines (without
/// terminators). Errors name the file and the 1-based line.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = ember_runtime::read_file::read_file(path).map_err(|e| TrainError::io(path, e))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(TrainError::Data(format!(
            "{}: the file is empty (nothing to train on)",
            path.display()
        )));
    }
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match std::str::from_utf8(raw) {
            Ok(s) => lines.push(s.to_string()),
            Err(e) => {
                return Err(TrainError::Data(format!(
                    "{}:{}: invalid UTF-8 at byte {} of the line",
                    path.display(),
                    i + 1,
                    e.valid_up_to() + 1
                )))
            }
        }
    }
    if bytes.ends_with(b"\n") {
        lines.pop();
    }
    Ok(lines)
}

fn normalise(s: &str, nfc: bool) -> String {
    if nfc {
        s.nfc().collect()
    } else {
        s.to_string()
    }
}

/// Plain-text documents (blank-line separated), with their first line number.
fn text_documents(lines: &[String], nfc: bool) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            docs.extend(cur.take());
            continue;
        }
        match &mut cur {
            Some((_, d)) => {
                d.push('\n');
                d.push_str(line);
            }
            None => cur = Some((i + 1, line.clone())),
        }
    }
    docs.extend(cur);
    docs.into_iter()
        .map(|(l, d)| (l, normalise(&d, nfc)))
        .collect()
}

/// One JSONL chat record.
#[derive(Clone, Debug)]
struct Record {
    line: usize,
    messages: Vec<Message>,
}

fn jsonl_records(path: &Path, lines: &[String], nfc: bool) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let at = |i: usize| format!("{}:{}", path.display(), i + 1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TrainError::Data(format!("{}: not valid JSON: {e}", at(i))))?;
        let msgs = v
            .get("messages")
            .and_then(|m| m.as_array())
            .ok_or_else(|| {
                TrainError::Data(format!(
                    "{}: a chat record needs a \"messages\" array ({{\"messages\": [{{\"role\": ..., \"content\": ...}}]}})",
                    at(i)
                ))
            })?;
        let mut messages = Vec::with_capacity(msgs.len());
        for (k, m) in msgs.iter().enumerate() {
            let field = |f: &str| {
                m.get(f).and_then(|x| x.as_str()).ok_or_else(|| {
                    TrainError::Data(format!(
                        "{}: message {} has no string \"{f}\"",
                        at(i),
                        k + 1
                    ))
                })
            };
            messages.push(Message::new(
                normalise(field("role")?, nfc),
                normalise(field("content")?, nfc),
            ));
        }
        if !messages.iter().any(|m| m.role == "assistant") {
            return Err(TrainError::Data(format!(
                "{}: the record has no \"assistant\" message to learn from",
                at(i)
            )));
        }
        out.push(Record {
            line: i + 1,
            messages,
        });
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no chat records",
            path.display()
        )));
    }
    Ok(out)
}

/// Renders and tokenizes chat records with assistant-only loss masks.
struct ChatRenderer<'a> {
    model: &'a Model,
    template: String,
    bos: String,
    eos: String,
}

impl<'a> ChatRenderer<'a> {
    fn new(model: &'a Model, builtin: Option<&str>) -> Result<Self> {
        let template = match builtin {
            Some(name) => BuiltinTemplate::from_name(name)
                .ok_or_else(|| TrainError::Config(format!("unknown chat template {name:?}")))?
                .source()
                .to_string(),
            None => model
                .chat_template()
                .ok_or_else(|| {
                    TrainError::Config(
                        "this model has no chat template; choose one with --template".into(),
                    )
                })?
                .to_string(),
        };
        let (bos, eos) = chat::special_texts(model.tokenizer());
        Ok(Self {
            model,
            bos,
            eos,
            template,
        })
    }

    fn render(&self, m: &[Message], gen: bool, at: &str) -> Result<String> {
        chat::render(&self.template, m, gen, &self.bos, &self.eos)
            .map_err(|e| TrainError::Data(format!("{at}: {e}")))
    }

    /// Token ids and, per token, whether it lies in an assistant span.
    fn tokens(&self, rec: &Record, at: &str) -> Result<(Vec<u32>, Vec<bool>)> {
        let not_incremental = || {
            TrainError::Data(format!(
                "{at}: the chat template does not render conversations incrementally, \
                 so assistant turns cannot be located"
            ))
        };
        // Byte offsets (start, end) of the assistant spans in the whole rendering.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut done = String::new();
        for i in 0..rec.messages.len() {
            if rec.messages[i].role != "assistant" {
                continue;
            }
            let pre = self.render(&rec.messages[..i], true, at)?;
            let full = self.render(&rec.messages[..=i], false, at)?;
            if !pre.starts_with(&done) || !full.starts_with(&pre) {
                return Err(not_incremental());
            }
            spans.push((pre.len(), full.len()));
            done = full;
        }
        let all = self.render(&rec.messages, false, at)?;
        if !all.starts_with(&done) {
            return Err(not_incremental());
        }
        // Token index of a span edge: the tokens of the text before it, as far as
        // they agree with the tokens of the whole text (a token merging across the
        // edge counts as after it).
        let tok = self.model.tokenizer();
        let opts = chat::RENDERED_ENCODE_OPTIONS;
        let ids = tok.encode(&all, opts);
        let edge = |b: usize| -> usize {
            let before = tok.encode(&all[..b], opts);
            before.iter().zip(&ids).take_while(|(a, b)| a == b).count()
        };
        let mut mask = vec![false; ids.len()];
        for (s, e) in spans {
            let (ts, te) = (edge(s), if e == all.len() { ids.len() } else { edge(e) });
            mask[ts..te.max(ts)].fill(true);
        }
        Ok((ids, mask))
    }
}

/// Removes exact duplicates (keeping the first); returns how many went.
fn dedup_by_key<T>(items: &mut Vec<T>, key: impl Fn(&T) -> String) -> usize {
    let mut seen = HashSet::new();
    let before = items.len();
    items.retain(|x| seen.insert(key(x)));
    before - items.len()
}

/// Indices `0..n` split into (train, validation) by a seeded shuffle.
pub fn split_indices(n: usize, frac: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    if frac <= 0.0 || n < 2 {
        return (idx, Vec::new());
    }
    let n_val = ((frac * n as f64).ceil() as usize).clamp(1, n - 1);
    Rng::seed(mix64(seed ^ 0x5157_4c49_5400_0000)).shuffle(&mut idx);
    let mut val = idx[..n_val].to_vec();
    let mut train = idx[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

/// Packs documents' token streams into `seq_len + 1` windows.
fn pack(docs: &[Vec<u32>], seq_len: usize) -> Vec<Example> {
    let stream: Vec<u32> = docs.iter().flatten().copied().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < stream.len() {
        let end = (start + seq_len + 1).min(stream.len());
        let tokens = stream[start..end].to_vec();
        out.push(Example {
            loss_mask: vec![true; tokens.len() - 1],
            tokens,
        });
        start = end - 1;
    }
    out
}

/// Items of one file, tokenized, before packing.
enum Items {
    Text(Vec<Vec<u32>>),
    Chat(Vec<Example>),
}

fn load_items(
    model: &Model,
    path: &Path,
    opts: &DataOptions,
    report: &mut DataReport,
) -> Result<Items> {
    let lines = read_lines(path)?;
    let format = opts.format.unwrap_or_else(|| DataFormat::detect(path));
    let tok = model.tokenizer();
    let vocab = model.hparams().vocab_size;
    let check = |ids: &[u32], line: usize| -> Result<()> {
        match ids.iter().find(|&&t| t >= vocab) {
            Some(t) => Err(TrainError::Data(format!(
                "{}:{line}: token {t} outside the vocabulary",
                path.display()
            ))),
            None => Ok(()),
        }
    };
    match format {
        DataFormat::Text => {
            let mut docs = text_documents(&lines, opts.nfc);
            if docs.is_empty() {
                return Err(TrainError::Data(format!(
                    "{}: the file has no text",
                    path.display()
                )));
            }
            if opts.dedup {
                report.duplicates_removed += dedup_by_key(&mut docs, |(_, d)| d.clone());
            }
            report.documents += docs.len();
            let mut out = Vec::with_capacity(docs.len());
            for (line, d) in &docs {
                let ids = tok.try_encode(d, tok.default_encode_options())?;
                check(&ids, *line)?;
                out.push(ids);
            }
            Ok(Items::Text(out))
        }
        DataFormat::Jsonl => {
            let mut recs = jsonl_records(path, &lines, opts.nfc)?;
            if opts.dedup {
                report.duplicates_removed += dedup_by_key(&mut recs, |r| {
                    serde_json::to_string(&r.messages).unwrap_or_default()
                });
            }
            report.documents += recs.len();
            let renderer = ChatRenderer::new(model, opts.template.as_deref())?;
            let mut out = Vec::with_capacity(recs.len());
            for r in &recs {
                let at = format!("{}:{}", path.display(), r.line);
                let (mut ids, mut mask) = renderer.tokens(r, &at)?;
                check(&ids, r.line)?;
                if ids.len() > opts.seq_len + 1 {
                    ids.truncate(opts.seq_len + 1);
                    mask.truncate(opts.seq_len + 1);
                    report.truncated += 1;
                }
                let ex = Example {
                    loss_mask: mask[1..].to_vec(),
                    tokens: ids,
                };
                if ex.loss_tokens() == 0 {
                    return Err(TrainError::Data(format!(
                        "{at}: no assistant tokens within --seq-len {} (the record is too long)",
                        opts.seq_len
                    )));
                }
                out.push(ex);
            }
            Ok(Items::Chat(out))
        }
    }
}

fn select<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| v[i].clone()).collect()
}

fn into_examples(items: Items, seq_len: usize) -> Vec<Example> {
    match items {
        Items::Text(docs) => pack(&docs, seq_len),
        Items::Chat(ex) => ex,
    }
}

/// Reads, validates, normalises, deduplicates, splits and tokenizes the data.
pub fn prepare(model: &Model, opts: &DataOptions) -> Result<Prepared> {
    if opts.seq_len < 1 {
        return Err(TrainError::Config("--seq-len must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&opts.val_split) {
        return Err(TrainError::Config("--val-split must be in [0, 1)".into()));
    }
    let mut report = DataReport::default();
    let items = load_items(model, &opts.train, opts, &mut report)?;
    let (train, val) = match &opts.val {
        Some(vpath) => {
            let mut vr = DataReport::default();
            let v = load_items(model, vpath, opts, &mut vr)?;
            (
                into_examples(items, opts.seq_len),
                into_examples(v, opts.seq_len),
            )
        }
        None => {
            let n = match &items {
                Items::Text(d) => d.len(),
                Items::Chat(e) => e.len(),
            };
            let (ti, vi) = split_indices(n, opts.val_split, opts.seed);
            match items {
                Items::Text(d) => (
                    pack(&select(&d, &ti), opts.seq_len),
                    pack(&select(&d, &vi), opts.seq_len),
                ),
                Items::Chat(e) => (select(&e, &ti), select(&e, &vi)),
            }
        }
    };
    if train.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no training sequences (the text has fewer than 2 tokens)",
            opts.train.display()
        )));
    }
    report.train_tokens = train.iter().map(Example::loss_tokens).sum();
    report.val_tokens = val.iter().map(Example::loss_tokens).sum();
    Ok(Prepared { train, val, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_on_blank_lines() {
        let lines: Vec<String> = ["a", "b", "", "", "c", " ", "d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let docs = text_documents(&lines, false);
        assert_eq!(
            docs,
            vec![(1, "a\nb".into()), (5, "c".into()), (7, "d".into())]
        );
    }

    #[test]
    fn packing_overlaps_by_one_and_keeps_the_tail() {
        let ex = pack(&[vec![1, 2, 3], vec![4, 5, 6, 7]], 3);
        assert_eq!(ex[0].tokens, vec![1, 2, 3, 4]);
        assert_eq!(ex[1].tokens, vec![4, 5, 6, 7]);
        assert_eq!(ex.len(), 2);
        let ex = pack(&[vec![1, 2, 3, 4, 5, 6]], 3);
        assert_eq!(ex[1].tokens, vec![4, 5, 6]);
        assert_eq!(ex[1].loss_mask, vec![true, true]);
    }

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (t, v) = split_indices(20, 0.1, 3);
        assert_eq!(v.len(), 2);
        assert_eq!(split_indices(20, 0.1, 3), (t.clone(), v.clone()));
        assert_ne!(split_indices(20, 0.1, 4).1, v);
        let mut all = [t, v].concat();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn nfc_and_dedup() {
        let mut v = vec!["e\u{301}".to_string(), "\u{e9}".to_string()];
        v.iter_mut().for_each(|s| *s = normalise(s, true));
        assert_eq!(dedup_by_key(&mut v, |s| s.clone()), 1);
    }
}
