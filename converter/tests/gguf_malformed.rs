//! Malformed and unsupported GGUF input: every case must give
//! `ConvertError::Gguf` or `ConvertError::Unsupported` naming the problem, never a
//! panic, an overflow or a huge allocation.
//!
//! Cases are made two ways: by patching the bytes of the tiny fixture
//! (`tests/fixtures/gguf/tiny-llama.gguf`), and by a minimal GGUF builder below for
//! mapping-level cases (architectures, tensor sets, shapes) that need a file gguf-py
//! would not write.

use ember_converter::gguf::{self, GgufFile};
use ember_converter::ConvertError;

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/gguf/tiny-llama.gguf"
);

fn tiny() -> Vec<u8> {
    std::fs::read(TINY).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in fixture", String::from_utf8_lossy(needle)))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offset just past a length-prefixed string `s` in the file (it must be unique).
fn after_string(b: &[u8], s: &str) -> usize {
    let mut pat = (s.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(s.as_bytes());
    find(b, &pat) + pat.len()
}

/// Parses, then (if that succeeds) maps and decodes every tensor: the whole
/// pipeline except the tokenizer.
fn full(bytes: Vec<u8>) -> Result<(), ConvertError> {
    let f = GgufFile::from_bytes(bytes)?;
    for t in &f.tensors {
        f.tensor_f32(t)?;
    }
    gguf::map_weights(&f, None)?;
    Ok(())
}

#[track_caller]
fn expect_gguf(bytes: Vec<u8>, needle: &str) {
    match full(bytes) {
        Err(ConvertError::Gguf(m)) if m.contains(needle) => {}
        other => panic!("expected Gguf error mentioning {needle:?}, got {other:?}"),
    }
}

#[track_caller]
fn expect_unsupported(bytes: Vec<u8>, needle: &str) {
    match full(bytes) {
        Err(ConvertError::Unsupported(m)) if m.contains(needle) => {}
        other => panic!("expected Unsupported error mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn fixture_is_valid() {
    full(tiny()).unwrap();
}

#[test]
fn bad_magic() {
    let mut b = tiny();
    b[0..4].copy_from_slice(b"GGML");
    expect_gguf(b, "magic");
    expect_gguf(Vec::new(), "truncated");
}

#[test]
fn versions() {
    let mut b = tiny();
    put_u32(&mut b, 4, 1);
    expect_unsupported(b.clone(), "version 1");
    put_u32(&mut b, 4, 99);
    expect_gguf(b.clone(), "version 99");
    put_u32(&mut b, 4, 2);
    full(b).unwrap(); // v2 has the same layout as v3 (v3 only adds big-endian files)
}

#[test]
fn absurd_counts() {
    for v in [u64::MAX, 1 << 40, 1 << 20] {
        let mut b = tiny();
        put_u64(&mut b, 8, v);
        expect_gguf(b, "tensor count");
        let mut b = tiny();
        put_u64(&mut b, 16, v);
        expect_gguf(b, "key/value count");
    }
    // Off by one: parsing runs into the tensor infos and fails there.
    let mut b = tiny();
    let kv = u64::from_le_bytes(b[16..24].try_into().unwrap());
    put_u64(&mut b, 16, kv + 1);
    assert!(matches!(full(b), Err(ConvertError::Gguf(_))));
}

#[test]
fn string_lengths_past_eof() {
    let len = tiny().len() as u64;
    for v in [u64::MAX, len, len - 24, 1 << 33] {
        let mut b = tiny();
        put_u64(&mut b, 24, v); // first key's length
        expect_gguf(b, "past the end of the file");
    }
    // A string value.
    let mut b = tiny();
    let at = after_string(&b, "general.name") + 4;
    put_u64(&mut b, at, u64::MAX - 3);
    expect_gguf(b, "past the end of the file");
}

#[test]
fn bad_metadata_values() {
    // Unknown value type.
    let mut b = tiny();
    let at = after_string(&b, "general.architecture");
    put_u32(&mut b, at, 13);
    expect_gguf(b, "unknown value type id 13");
    // Array with an unknown element type, and with an absurd count.
    let mut b = tiny();
    let at = after_string(&b, "tokenizer.ggml.tokens");
    put_u32(&mut b, at + 4, 77);
    expect_gguf(b, "unknown element type id 77");
    for count in [u64::MAX, u64::MAX / 8, 1 << 30] {
        let mut b = tiny();
        put_u64(&mut b, at + 8, count);
        expect_gguf(b, "cannot fit");
    }
    // Bool that is neither 0 nor 1.
    let mut b = tiny();
    let at = after_string(&b, "tokenizer.ggml.add_bos_token");
    b[at + 4] = 2;
    expect_gguf(b, "bool");
    // Invalid UTF-8.
    let mut b = tiny();
    let at = after_string(&b, "general.name") + 12;
    b[at] = 0xFF;
    expect_gguf(b, "UTF-8");
    // Duplicate key (same length: bos -> eos).
    let mut b = tiny();
    let at = find(&b, b"tokenizer.ggml.bos_token_id");
    b[at + 15..at + 18].copy_from_slice(b"eos");
    expect_gguf(b, "appears twice");
}

#[test]
fn bad_alignment() {
    // `llama.block_count` and `general.alignment` have the same length: rename the key,
    // keeping its u32 value, then give it bad values.
    for v in [0u32, 3, 48, 1 << 30] {
        let mut b = tiny();
        let at = find(&b, b"llama.block_count");
        b[at..at + 17].copy_from_slice(b"general.alignment");
        put_u32(&mut b, at + 17 + 4, v);
        expect_gguf(b, "general.alignment");
    }
}

/// Offset of the tensor info fields (n_dims) following tensor name `name`.
fn tensor_info(b: &[u8], name: &str) -> usize {
    after_string(b, name)
}

#[test]
fn bad_tensor_infos() {
    // n_dims out of range.
    for n in [0u32, 5, u32::MAX] {
        let mut b = tiny();
        let at = tensor_info(&b, "output_norm.weight");
        put_u32(&mut b, at, n);
        expect_gguf(b, "n_dims");
    }
    // Unknown and retired type ids (output_norm: 1 dim, so type is at +4+8).
    let mut b = tiny();
    let at = tensor_info(&b, "output_norm.weight") + 12;
    put_u32(&mut b, at, 1000);
    expect_gguf(b, "unknown ggml type id 1000");
    let mut b = tiny();
    put_u32(&mut b, at, 4);
    expect_unsupported(b, "retired");
    // Offset out of bounds, misaligned, and overflowing.
    for (off, what) in [
        (1u64 << 32, "outside the file"),
        (u64::MAX - 31, "outside the file"),
        (7, "alignment"),
    ] {
        let mut b = tiny();
        let at = tensor_info(&b, "output_norm.weight") + 16;
        put_u64(&mut b, at, off);
        expect_gguf(b, what);
    }
    // Row length not a multiple of the block size (token_embd is q8_0: ne0 = 64 -> 63).
    let mut b = tiny();
    let at = tensor_info(&b, "token_embd.weight");
    put_u64(&mut b, at + 4, 63);
    expect_gguf(b, "block size");
    // Element count overflow.
    let mut b = tiny();
    put_u64(&mut b, at + 4 + 8, u64::MAX / 2);
    expect_gguf(b, "overflows");
    // A huge but representable size: range check.
    let mut b = tiny();
    put_u64(&mut b, at + 4 + 8, 1 << 40);
    expect_gguf(b, "outside the file");
    // Duplicate tensor name (same length).
    let mut b = tiny();
    let at = find(&b, b"blk.1.ffn_up.weight");
    b[at + 4] = b'0';
    expect_gguf(b, "appears twice");
}

#[test]
fn truncation_anywhere_is_an_error() {
    let b = tiny();
    let data_offset = GgufFile::from_bytes(b.clone()).unwrap().data_offset as usize;
    let mut cuts: Vec<usize> = (0..=32).collect();
    cuts.extend((0..data_offset).step_by(7));
    cuts.extend((data_offset.saturating_sub(40)..=data_offset + 40).filter(|&c| c < b.len()));
    cuts.extend((data_offset..b.len()).step_by(1021));
    cuts.push(b.len() - 1);
    for cut in cuts {
        match full(b[..cut].to_vec()) {
            Err(ConvertError::Gguf(_)) => {}
            // Only the tail padding after the last tensor may be cut harmlessly.
            Ok(()) => assert!(cut > data_offset, "truncation at {cut} accepted"),
            Err(e) => panic!("truncation at {cut}: unexpected error kind {e:?}"),
        }
    }
}

#[test]
fn random_byte_corruption_never_panics() {
    // Deterministic xorshift; flips bytes in the header/metadata/infos region.
    let b = tiny();
    let data_offset = GgufFile::from_bytes(b.clone()).unwrap().data_offset as usize;
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..3000 {
        let mut c = b.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % data_offset as u64) as usize;
            c[at] = next() as u8;
        }
        // Any outcome but a panic is acceptable (a flipped byte may be harmless).
        let _ = full(c);
    }
}

// ---------------------------------------------------------------------------
// A minimal GGUF builder for mapping-level cases.

struct Builder {
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn s(v: &str) -> Vec<u8> {
    let mut o = (v.len() as u64).to_le_bytes().to_vec();
    o.extend_from_slice(v.as_bytes());
    o
}

impl Builder {
    fn u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.kv.retain(|(n, ..)| n != k);
        self.kv.push((k.into(), 4, v.to_le_bytes().to_vec()));
        self
    }
    fn f32(&mut self, k: &str, v: f32) -> &mut Self {
        self.kv.retain(|(n, ..)| n != k);
        self.kv.push((k.into(), 6, v.to_le_bytes().to_vec()));
        self
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.kv.retain(|(n, ..)| n != k);
        self.kv.push((k.into(), 8, s(v)));
        self
    }
    fn remove(&mut self, k: &str) -> &mut Self {
        self.kv.retain(|(n, ..)| n != k);
        self.tensors.retain(|(n, ..)| n != k);
        self
    }
    /// An f32 tensor of zeros with GGUF dims `ne` (innermost first).
    fn tensor(&mut self, name: &str, ne: &[u64]) -> &mut Self {
        let n: u64 = ne.iter().product();
        self.tensors.retain(|(t, ..)| t != name);
        self.tensors
            .push((name.into(), ne.to_vec(), 0, vec![0; 4 * n as usize]));
        self
    }
    fn build(&self) -> Vec<u8> {
        let mut o = b"GGUF".to_vec();
        o.extend_from_slice(&3u32.to_le_bytes());
        o.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        o.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, t, v) in &self.kv {
            o.extend(s(k));
            o.extend_from_slice(&t.to_le_bytes());
            o.extend_from_slice(v);
        }
        let mut rel = 0u64;
        for (name, ne, ty, data) in &self.tensors {
            o.extend(s(name));
            o.extend_from_slice(&(ne.len() as u32).to_le_bytes());
            for d in ne {
                o.extend_from_slice(&d.to_le_bytes());
            }
            o.extend_from_slice(&ty.to_le_bytes());
            o.extend_from_slice(&rel.to_le_bytes());
            rel += (data.len() as u64).div_ceil(32) * 32;
        }
        o.resize(o.len().div_ceil(32) * 32, 0);
        for (.., data) in &self.tensors {
            o.extend_from_slice(data);
            o.resize(o.len().div_ceil(32) * 32, 0);
        }
        o
    }
}

/// A valid 1-layer model: dim 32, 2 heads of 16, 1 KV head, FFN 64, vocab 40.
fn model(arch: &str) -> Builder {
    let mut b = Builder {
        kv: Vec::new(),
        tensors: Vec::new(),
    };
    b.str("general.architecture", arch)
        .u32(&format!("{arch}.block_count"), 1)
        .u32(&format!("{arch}.embedding_length"), 32)
        .u32(&format!("{arch}.attention.head_count"), 2)
        .u32(&format!("{arch}.attention.head_count_kv"), 1)
        .u32(&format!("{arch}.feed_forward_length"), 64)
        .u32(&format!("{arch}.context_length"), 128)
        .f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-6);
    b.tensor("token_embd.weight", &[32, 40])
        .tensor("blk.0.attn_norm.weight", &[32])
        .tensor("blk.0.attn_q.weight", &[32, 32])
        .tensor("blk.0.attn_k.weight", &[32, 16])
        .tensor("blk.0.attn_v.weight", &[32, 16])
        .tensor("blk.0.attn_output.weight", &[32, 32])
        .tensor("blk.0.ffn_norm.weight", &[32])
        .tensor("blk.0.ffn_gate.weight", &[32, 64])
        .tensor("blk.0.ffn_up.weight", &[32, 64])
        .tensor("blk.0.ffn_down.weight", &[64, 32])
        .tensor("output_norm.weight", &[32]);
    if arch == "qwen2" {
        b.tensor("blk.0.attn_q.bias", &[32])
            .tensor("blk.0.attn_k.bias", &[16])
            .tensor("blk.0.attn_v.bias", &[16]);
    }
    b
}

fn map(b: &Builder) -> Result<gguf::GgufWeights, ConvertError> {
    let f = GgufFile::from_bytes(b.build())?;
    gguf::map_weights(&f, None)
}

#[test]
fn builder_models_map() {
    use ember_runtime::format::{RopePairing, RopeScaling};
    let w = map(&model("llama")).unwrap();
    assert_eq!(w.hparams.head_dim, 16);
    assert_eq!(w.hparams.rope_dim, 16);
    assert_eq!(w.hparams.rope_theta, gguf::DEFAULT_ROPE_THETA);
    assert_eq!(w.hparams.rope_pairing, RopePairing::Interleaved as u32);
    assert!(w.hparams.tied_output());

    let mut b = model("llama");
    b.tensor("output.weight", &[32, 40]);
    let w = map(&b).unwrap();
    assert!(!w.hparams.tied_output());
    assert!(w
        .tensors
        .iter()
        .any(|t| t.name == "output" && t.shape == [40, 32]));

    let w = map(&model("qwen2")).unwrap();
    assert_eq!(w.hparams.rope_pairing, RopePairing::Half as u32);
    assert!(w.hparams.qkv_bias());
    assert!(w
        .tensors
        .iter()
        .any(|t| t.name == "layers.0.bk" && t.shape == [16]));

    let mut b = model("llama");
    b.str("llama.rope.scaling.type", "linear")
        .f32("llama.rope.scaling.factor", 4.0);
    let w = map(&b).unwrap();
    assert_eq!(w.hparams.rope_scaling, RopeScaling::Linear as u32);
    assert_eq!(w.hparams.rope_scaling_factor, 4.0);

    // llama.cpp's Llama 3.1 frequency factors become the rope_freqs tensor.
    let mut b = model("llama");
    b.tensor("rope_freqs.weight", &[8]);
    let w = map(&b).unwrap();
    assert_ne!(
        w.hparams.flags & ember_runtime::format::flags::ROPE_FREQ_FACTORS,
        0
    );
    assert!(w
        .tensors
        .iter()
        .any(|t| t.name == "rope_freqs" && t.shape == [8]));

    // YaRN: the correction range and attention factor as transformers derives them.
    let mut b = model("llama");
    b.str("llama.rope.scaling.type", "yarn")
        .f32("llama.rope.scaling.factor", 4.0)
        .u32("llama.rope.scaling.original_context_length", 1024);
    let w = map(&b).unwrap();
    assert_eq!(w.hparams.rope_scaling, RopeScaling::Yarn as u32);
    assert!((w.hparams.rope_attn_factor - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);

    // Redundant precomputed rotary tables are skipped and noted.
    let mut b = model("llama");
    b.tensor("blk.0.attn_rot_embd", &[8]);
    let w = map(&b).unwrap();
    assert!(w
        .metadata
        .iter()
        .any(|(k, v)| k == "gguf.skipped_tensors" && v == "blk.0.attn_rot_embd"));
}

#[test]
fn unsupported_models() {
    expect_map_unsupported(&model("gpt2"), "\"gpt2\"");
    let mut b = model("llama");
    b.tensor("blk.0.ffn_gate_exps.weight", &[16]);
    expect_map_unsupported(&b, "ffn_gate_exps");
    let mut b = model("llama");
    b.u32("llama.expert_count", 8);
    expect_map_unsupported(&b, "mixture-of-experts");
    let mut b = model("llama");
    b.str("llama.rope.scaling.type", "longrope");
    expect_map_unsupported(&b, "longrope");
    let mut b = model("llama");
    b.f32("llama.attn_logit_softcapping", 50.0);
    expect_map_unsupported(&b, "soft-capping");
    let mut b = model("llama");
    b.u32("llama.attention.value_length", 8);
    expect_map_unsupported(&b, "value_length");
}

#[test]
fn inconsistent_models() {
    // A QK norm in a family without one (llama) is an unexpected tensor.
    let mut b = model("llama");
    b.tensor("blk.0.attn_q_norm.weight", &[16]);
    expect_map_gguf(&b, "blk.0.attn_q_norm.weight");
    // YaRN needs its factor.
    let mut b = model("llama");
    b.str("llama.rope.scaling.type", "yarn");
    expect_map_gguf(&b, "rope.scaling.factor");
    let mut b = model("llama");
    b.remove("blk.0.ffn_up.weight");
    expect_map_gguf(&b, "blk.0.ffn_up.weight");
    let mut b = model("llama");
    b.tensor("blk.0.attn_k.weight", &[32, 32]);
    expect_map_gguf(&b, "blk.0.attn_k.weight");
    let mut b = model("llama");
    b.tensor("blk.1.attn_norm.weight", &[32]);
    expect_map_gguf(&b, "block_count");
    let mut b = model("llama");
    b.remove("llama.embedding_length");
    expect_map_gguf(&b, "llama.embedding_length");
    let mut b = model("llama");
    b.str("llama.block_count", "two");
    expect_map_gguf(&b, "llama.block_count");
    let mut b = model("llama");
    b.remove("general.architecture");
    expect_map_gguf(&b, "general.architecture");
    let mut b = model("llama");
    b.u32("llama.vocab_size", 41);
    expect_map_gguf(&b, "vocab_size");
    // Qwen2 without its biases.
    let mut b = model("qwen2");
    b.remove("blk.0.attn_v.bias");
    expect_map_gguf(&b, "blk.0.attn_v.bias");
    // Heads that do not divide: rejected by HyperParams::validate.
    let mut b = model("llama");
    b.u32("llama.attention.head_count_kv", 3);
    assert!(matches!(
        map(&b),
        Err(ConvertError::Runtime(_)) | Err(ConvertError::Gguf(_))
    ));
}

#[track_caller]
fn expect_map_unsupported(b: &Builder, needle: &str) {
    match map(b) {
        Err(ConvertError::Unsupported(m)) if m.contains(needle) => {}
        other => panic!(
            "expected Unsupported mentioning {needle:?}, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[track_caller]
fn expect_map_gguf(b: &Builder, needle: &str) {
    match map(b) {
        Err(ConvertError::Gguf(m)) if m.contains(needle) => {}
        other => panic!(
            "expected Gguf error mentioning {needle:?}, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn chat_template_that_cannot_render_is_refused() {
    // The fixture with its template replaced by one of the same length (so every
    // offset after it stays put) that never finishes.
    let mut b = tiny();
    let at = after_string(&b, "tokenizer.chat_template");
    assert_eq!(
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()),
        8,
        "a string"
    );
    let len = u64::from_le_bytes(b[at + 4..at + 12].try_into().unwrap()) as usize;
    let endless =
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let template = format!("{endless:len$}");
    assert_eq!(template.len(), len, "the fixture's template is long enough");
    b[at + 12..at + 12 + len].copy_from_slice(template.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endless.gguf");
    std::fs::write(&path, &b).unwrap();
    match gguf::load(&path) {
        Err(e @ ConvertError::ChatTemplate { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(
                    "endless.gguf: tokenizer.chat_template: the chat template cannot be used: \
                              chat template: rendering exceeded its fuel"
                ),
                "{msg}"
            );
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("the endless template was accepted"),
    }
}
