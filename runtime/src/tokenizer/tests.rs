//! Unit tests on small hand-built vocabularies.

use super::*;

/// Deterministic xorshift64 for property-style loops.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SP_PIECES: &[(&str, f32)] = &[
    ("▁", -1.0),
    ("a", -2.0),
    ("b", -3.0),
    ("c", -4.0),
    ("é", -5.0),
    ("ab", -6.0),
    ("▁a", -7.0),
    ("bc", -7.0), // ties with ▁a: leftmost wins
    ("▁ab", -8.0),
    ("abc", -9.0),
    ("▁▁", -10.0),
    ("cc", -2.0),
    ("ccc", -20.0),
    ("<0x", MIN_MERGE_SCORE), // never a merge result
];

/// llama2.c-style vocabulary: <unk>, <s>, </s>, 256 byte tokens, then `SP_PIECES`.
fn sp_spec() -> TokenizerSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    let mut scores = vec![0.0; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
        scores.push(0.0);
    }
    for &(p, s) in SP_PIECES {
        tokens.push(p.to_string());
        types.push(TokenType::Normal);
        scores.push(s);
    }
    TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::SentencePieceBpe,
        pre_split: PreSplit::None,
        tokens,
        scores,
        token_types: types,
        merges: vec![],
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        pad: None,
        eog: vec![],
        add_bos: true,
        add_eos: false,
        add_space_prefix: true,
        byte_fallback: true,
    }
}

fn sp() -> Tokenizer {
    Tokenizer::new(sp_spec(), 512).unwrap()
}

fn id_of(t: &Tokenizer, piece: &str) -> u32 {
    t.spec().tokens.iter().position(|p| p == piece).unwrap() as u32
}

/// Byte-level vocabulary: the 256 alphabet characters, a few merges, three specials.
fn bl_spec() -> TokenizerSpec {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
        "<tool>".into(),
    ];
    let mut types = vec![
        TokenType::Control,
        TokenType::Control,
        TokenType::Control,
        TokenType::UserDefined,
    ];
    tokens.extend(byte_level::BYTE_TO_CHAR.iter().map(|c| c.to_string()));
    types.resize(tokens.len(), TokenType::Normal);
    let merges_text = [
        ("Ġ", "t"),
        ("h", "e"),
        ("Ġt", "he"),
        ("Ġ", "Ġ"),
        ("i", "n"),
        ("Ġ", "in"),
        ("'", "t"),
    ];
    let mut merges = vec![];
    for (a, b) in merges_text {
        let find = |s: &str| tokens.iter().position(|p| p == s).unwrap() as u32;
        let (ia, ib) = (find(a), find(b));
        let m = format!("{a}{b}");
        if !tokens.contains(&m) {
            tokens.push(m);
            types.push(TokenType::Normal);
        }
        merges.push((ia, ib));
    }
    TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::ByteLevelBpe,
        pre_split: PreSplit::Gpt2,
        tokens,
        scores: vec![],
        token_types: types,
        merges,
        bos: Some(1),
        eos: Some(2),
        unk: None,
        pad: None,
        eog: vec![0],
        add_bos: false,
        add_eos: false,
        add_space_prefix: false,
        byte_fallback: false,
    }
}

fn bl() -> Tokenizer {
    Tokenizer::new(bl_spec(), 300).unwrap()
}

const PLAIN: EncodeOptions = EncodeOptions {
    add_bos: false,
    parse_special: false,
};
const SPECIAL: EncodeOptions = EncodeOptions {
    add_bos: false,
    parse_special: true,
};

fn pieces(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| t.spec().tokens[i as usize].clone())
        .collect()
}

/// llama2.c's quadratic `encode` over piece strings: the reference for SentencePiece.
fn llama2c_reference(t: &Tokenizer, text: &str) -> Vec<u32> {
    let spec = t.spec();
    let lookup = |s: &str| spec.tokens.iter().position(|p| p == s).map(|i| i as u32);
    let mut ids = vec![];
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
        let (mut best, mut best_i, mut best_id) = (-1e10f32, None, 0);
        for i in 0..ids.len().saturating_sub(1) {
            let cat = format!(
                "{}{}",
                spec.tokens[ids[i] as usize],
                spec.tokens[ids[i + 1] as usize]
            );
            if let Some(id) = lookup(&cat) {
                if spec.scores[id as usize] > best {
                    (best, best_i, best_id) = (spec.scores[id as usize], Some(i), id);
                }
            }
        }
        let Some(i) = best_i else { return ids };
        ids[i] = best_id;
        ids.remove(i + 1);
    }
}

#[test]
fn sentencepiece_merges_by_score_leftmost_on_ties() {
    let t = sp();
    // "▁abc": ab (-6) first, then ▁ab (-8) beats abc (-9).
    assert_eq!(pieces(&t, &t.encode("abc", PLAIN)), ["▁ab", "c"]);
    // "▁a", "bc" tie at -7 in "▁ . a . b . c"? ab (-6) wins first anyway; check
    // a case where the tie decides: "▁" "a" "b" "c" with ab removed is covered by
    // the reference comparison below.
    assert_eq!(pieces(&t, &t.encode("cc c", PLAIN)), ["▁", "cc", "▁", "c"]);
    assert_eq!(pieces(&t, &t.encode("ccc", PLAIN)), ["▁", "ccc"]);
    assert_eq!(t.encode("", t.default_encode_options()), [1]);
    assert_eq!(t.encode("", PLAIN), Vec::<u32>::new());
    // Unknown characters fall back to bytes; "<0x" + "41>" is never merged.
    let ids = t.encode("ü", PLAIN);
    assert_eq!(pieces(&t, &ids), ["▁", "<0xC3>", "<0xBC>"]);
    assert_eq!(t.decode(&ids), "ü");
}

#[test]
fn sentencepiece_matches_llama2c_reference_on_random_text() {
    let t = sp();
    let alphabet = ['a', 'b', 'c', ' ', 'é', 'x', '你', '<', '0'];
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for _ in 0..3000 {
        let len = rng.below(14);
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let ids = t.encode(&text, PLAIN);
        assert_eq!(ids, llama2c_reference(&t, &text), "text {text:?}");
        assert_eq!(t.decode(&ids), text, "round trip of {text:?}");
        let with_bos = t.encode(&text, t.default_encode_options());
        assert_eq!(t.decode(&with_bos), text);
    }
}

#[test]
fn sentencepiece_tie_goes_to_the_leftmost_pair() {
    // Pieces x, y, xy, yx with equal scores: "xyx" must merge the left pair first.
    let mut spec = sp_spec();
    for p in ["x", "y", "xy", "yx"] {
        spec.tokens.push(p.into());
        spec.token_types.push(TokenType::Normal);
        spec.scores.push(-3.0);
    }
    spec.add_space_prefix = false;
    let t = Tokenizer::new(spec, 600).unwrap();
    assert_eq!(pieces(&t, &t.encode("xyx", PLAIN)), ["xy", "x"]);
    assert_eq!(pieces(&t, &t.encode("yxy", PLAIN)), ["yx", "y"]);
}

#[test]
fn sentencepiece_decode_strips_dummy_prefix_only_at_start_or_after_bos() {
    let t = sp();
    let a = id_of(&t, "▁a");
    assert_eq!(t.decode(&[a, a]), "a a");
    assert_eq!(t.decode(&[1, a, a, 2]), "a a");
    // A space byte token keeps its space.
    assert_eq!(t.decode(&[3 + 0x20, a]), "  a");
    assert_eq!(t.token_bytes(a), b" a");
    assert_eq!(t.token_bytes(1), b"");
    assert_eq!(t.token_bytes(3 + 0x41), b"A");
    assert_eq!(t.token_bytes(100_000), b"");
}

#[test]
fn byte_level_encodes_with_gpt2_split_and_ranks() {
    let t = bl();
    let ids = t.encode("the  in't", PLAIN);
    assert_eq!(pieces(&t, &ids), ["t", "he", "Ġ", "Ġin", "'t"]);
    assert_eq!(t.decode(&ids), "the  in't");
    let ids = t.encode(" the\n", PLAIN);
    assert_eq!(pieces(&t, &ids), ["Ġthe", "Ċ"]);
    let ids = t.encode("é", PLAIN);
    assert_eq!(pieces(&t, &ids), ["Ã", "©"]);
    assert_eq!(t.decode(&ids), "é");
}

#[test]
fn special_tokens_match_only_when_asked() {
    let t = bl();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let ids = t.encode(text, SPECIAL);
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    assert_eq!(pieces(&t, &ids[1..ids.len() - 1]).concat(), "userĊHi");
    // Control tokens decode to nothing; UserDefined verbatim.
    assert_eq!(t.decode(&ids), "user\nHi");
    let plain = t.encode(text, PLAIN);
    assert!(!plain.contains(&1) && !plain.contains(&2));
    assert_eq!(t.decode(&plain), text);
    let tool = t.encode("a<tool>b", SPECIAL);
    assert_eq!(pieces(&t, &tool), ["a", "<tool>", "b"]);
    assert_eq!(t.decode(&tool), "a<tool>b");
    // Partial or broken specials are plain text.
    assert!(!t.encode("<|im_start|", SPECIAL).contains(&1));
    assert!(t.is_end_of_generation(2) && t.is_end_of_generation(0) && !t.is_end_of_generation(1));
}

#[test]
fn longest_special_wins() {
    let mut spec = bl_spec();
    for s in ["<a>", "<a>b", "<a"] {
        spec.tokens.push(s.into());
        spec.token_types.push(TokenType::Control);
    }
    let t = Tokenizer::new(spec, 400).unwrap();
    let long = id_of(&t, "<a>b");
    let short = id_of(&t, "<a>");
    let ids = t.encode("x<a>bc<a>", SPECIAL);
    assert_eq!(ids[1], long);
    assert_eq!(*ids.last().unwrap(), short);
}

#[test]
fn sentencepiece_specials_get_their_own_dummy_prefix() {
    let t = sp();
    let ids = t.encode("a</s>a", SPECIAL);
    assert_eq!(pieces(&t, &ids), ["▁a", "</s>", "▁a"]);
    let ids = t.encode("a</s>a", PLAIN);
    assert!(!ids.contains(&2));
}

#[test]
fn validation_rejects_bad_specs() {
    fn rejects(spec: TokenizerSpec, vocab: u32, needle: &str) {
        match Tokenizer::new(spec, vocab) {
            Err(crate::Error::Tokenizer(msg)) => {
                assert!(msg.contains(needle), "{msg:?} lacks {needle:?}")
            }
            other => panic!("expected a tokenizer error containing {needle:?}, got {other:?}"),
        }
    }
    rejects(
        TokenizerSpec {
            schema: 99,
            ..sp_spec()
        },
        512,
        "schema",
    );
    rejects(sp_spec(), 100, "vocabulary size");
    rejects(
        TokenizerSpec {
            tokens: vec![],
            token_types: vec![],
            scores: vec![],
            ..sp_spec()
        },
        512,
        "empty",
    );
    let mut s = sp_spec();
    s.token_types.pop();
    rejects(s, 512, "token types");
    let mut s = sp_spec();
    s.scores.pop();
    rejects(s, 512, "scores");
    rejects(
        TokenizerSpec {
            bos: Some(9999),
            ..sp_spec()
        },
        512,
        "bos id 9999",
    );
    rejects(
        TokenizerSpec {
            eog: vec![600],
            ..sp_spec()
        },
        512,
        "end-of-generation",
    );
    rejects(
        TokenizerSpec {
            bos: None,
            ..sp_spec()
        },
        512,
        "add_bos",
    );
    rejects(
        TokenizerSpec {
            pre_split: PreSplit::Gpt2,
            ..sp_spec()
        },
        512,
        "pre-split",
    );
    let mut s = sp_spec();
    s.tokens[3] = "<0xZZ>".into();
    rejects(s, 512, "byte token 3");
    let mut s = bl_spec();
    s.merges.push((5, 6));
    rejects(s, 400, "not a token");
    let mut s = bl_spec();
    s.merges.push((5, 6000));
    rejects(s, 400, "out of range");
}

#[test]
fn stream_decoder_buffers_split_characters() {
    let t = sp();
    // 你 = E4 BD A0 as three byte tokens, then an invalid lone continuation byte.
    let ids = [
        1,
        3 + 0xE4,
        3 + 0xBD,
        3 + 0xA0,
        id_of(&t, "▁a"),
        3 + 0xBD,
        3 + 0xE4,
    ];
    let mut d = StreamDecoder::for_tokenizer(&t);
    let outs: Vec<String> = ids.iter().map(|&id| d.push(&t, id).to_string()).collect();
    assert_eq!(outs, ["", "", "", "你", " a", "\u{FFFD}", ""]);
    assert_eq!(d.finish(), "\u{FFFD}");
    assert_eq!(t.decode(&ids), "你 a\u{FFFD}\u{FFFD}");
    d.reset();
    assert_eq!(d.push(&t, id_of(&t, "▁a")), "a");
}

#[test]
fn stream_decoder_equals_whole_decode_on_random_ids() {
    for t in [sp(), bl()] {
        let n = t.n_tokens() as u64 + 3; // a few out-of-range ids too
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        let mut d = StreamDecoder::new();
        for _ in 0..2000 {
            let len = rng.below(10);
            let ids: Vec<u32> = (0..len)
                .map(|_| {
                    if rng.below(2) == 0 {
                        3 + (0x80 + rng.below(0x80)) as u32
                    } else {
                        (rng.next() % n) as u32
                    }
                })
                .collect();
            d.reset();
            let mut streamed = String::new();
            for &id in &ids {
                streamed.push_str(d.push(&t, id));
            }
            streamed.push_str(d.finish());
            assert_eq!(streamed, t.decode(&ids), "ids {ids:?}");
        }
    }
}

#[test]
fn random_text_never_panics_and_round_trips() {
    let alphabet: Vec<char> =
        "ab e'stTl\n\t  \r\u{a0}0123<|>_im_startend你好👋🏽\u{200d}🧑\u{301}ﷺ\u{10FFFF}\0é"
            .chars()
            .collect();
    let (s, b) = (sp(), bl());
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let len = rng.below(24);
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        for t in [&s, &b] {
            let plain = t.encode(&text, PLAIN);
            assert_eq!(t.decode(&plain), text);
            let special = t.encode(&text, t.default_encode_options());
            assert!(special.iter().all(|&id| (id as usize) < t.n_tokens()));
            let _ = t.decode(&special);
        }
    }
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<StreamDecoder>();
}

/// A BERT-style WordPiece vocabulary: specials, words, `##` continuations, punctuation.
fn wp_spec() -> TokenizerSpec {
    let pieces = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "un", "##aff", "##able", ",", ".",
        "!", "'", "s", "cafe", "你",
    ];
    let mut types = vec![TokenType::Normal; pieces.len()];
    types[0] = TokenType::Control;
    types[1] = TokenType::Unknown;
    types[2] = TokenType::Control;
    types[3] = TokenType::Control;
    TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::WordPiece(WordPieceOptions {
            clean_text: true,
            handle_chinese_chars: true,
            strip_accents: true,
            lowercase: true,
            max_input_chars_per_word: 10,
            cleanup: true,
        }),
        pre_split: PreSplit::Bert,
        tokens: pieces.iter().map(|p| p.to_string()).collect(),
        scores: vec![],
        token_types: types,
        merges: vec![],
        bos: Some(2),
        eos: Some(3),
        unk: Some(1),
        pad: Some(0),
        eog: vec![],
        add_bos: true,
        add_eos: true,
        add_space_prefix: false,
        byte_fallback: false,
    }
}

#[test]
fn wordpiece_encodes_and_decodes_like_bert() {
    let t = Tokenizer::new(wp_spec(), 16).unwrap();
    let opts = t.default_encode_options();
    // [CLS] hello , world ! [SEP]; accents stripped, case folded, CJK isolated.
    assert_eq!(t.encode("Hello,WORLD!", opts), [2, 4, 9, 5, 11, 3]);
    assert_eq!(t.encode("Unaffable CAFÉ你", opts), [2, 6, 7, 8, 14, 15, 3]);
    // No segmentation, or too long: the whole word is [UNK]; [UNK] in text is matched.
    assert_eq!(t.encode("unx helloworldhello", opts), [2, 1, 1, 3]);
    assert_eq!(t.encode("[UNK]x", opts)[1], 1);
    // Decoding joins words with spaces, glues ## pieces and (cleanup) punctuation,
    // and skips specials and [UNK] without leaving a leading space.
    assert_eq!(t.decode(&[2, 4, 9, 5, 11, 3]), "hello, world!");
    assert_eq!(t.decode(&[2, 1, 6, 7, 8, 12, 13]), "unaffable ' s");
    let ids = [2, 1, 4, 1, 5, 10, 3];
    let mut d = StreamDecoder::for_tokenizer(&t);
    let streamed: String = ids.iter().map(|&i| d.push(&t, i).to_string()).collect();
    assert_eq!(streamed, t.decode(&ids));
    assert_eq!(streamed, "hello world.");
}

#[test]
fn wordpiece_validation() {
    let mut s = wp_spec();
    s.pre_split = PreSplit::Gpt2;
    assert!(Tokenizer::new(s, 16).is_err());
    let mut s = wp_spec();
    s.merges = vec![(4, 5)];
    assert!(Tokenizer::new(s, 16).is_err());
    let mut s = bl_spec();
    s.pre_split = PreSplit::Bert;
    assert!(Tokenizer::new(s, 1000).is_err());
}

#[test]
fn llama3_takes_whole_words_that_are_tokens() {
    // "Ġthe" merges to Ġt + he (no merge joins them); "Ġthin" is a token no merge makes.
    let mut spec = bl_spec();
    spec.tokens.push("Ġthin".into());
    spec.token_types.push(TokenType::Normal);
    let n = spec.tokens.len() as u32;
    let gpt2 = Tokenizer::new(spec.clone(), n).unwrap();
    assert_eq!(
        pieces(&gpt2, &gpt2.encode(" thin", PLAIN)),
        ["Ġt", "h", "in"]
    );
    for (split, whole) in [(PreSplit::Llama3, true), (PreSplit::Qwen2, false)] {
        spec.pre_split = split;
        let t = Tokenizer::new(spec.clone(), n).unwrap();
        let got = pieces(&t, &t.encode("x thin", PLAIN));
        if whole {
            assert_eq!(got, ["x", "Ġthin"]);
        } else {
            assert_eq!(got, ["x", "Ġt", "h", "in"]);
        }
    }
}
