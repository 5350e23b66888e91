//! What the targets hold fixed while the fuzzer varies the rest: the repository's
//! fixtures, models built once per process, a scratch directory per thread, and
//! the bounded "use it like a front end would" checks run on whatever loaded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::writer::{write_model, WriteOptions};
use ember_converter::ConvertError;
use ember_runtime::format::{
    expected_tensors, flags, Activation, Architecture, HyperParams, NormKind, RopePairing,
    RopeScaling,
};
use ember_runtime::tokenizer::{
    EncodeOptions, PreSplit, StreamDecoder, TokenType, Tokenizer, TokenizerKind, TokenizerSpec,
    TOKENIZER_SCHEMA,
};
use ember_runtime::{argmax, Error, Model, Session, SessionConfig};

/// The repository root: the nearest ancestor of the compiling crate's manifest
/// directory that holds `tests/fixtures` (the root package or `fuzz/`).
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .find(|p| p.join("tests/fixtures").is_dir())
            .expect("tests/fixtures above the manifest directory")
            .to_path_buf()
    })
}

/// A file or directory under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// A file under `../shared` next to the repository, if present (real models the
/// repository does not hold: read at run time, never copied into it).
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = repo_root().join("../shared").join(rel);
    p.exists().then_some(p)
}

/// A file of the downloaded-model cache (`$EMBER_MODELS`, default
/// `~/.cache/ember/models`, filled by `scripts/fetch_*.sh`), if present.
pub fn cached_model(rel: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("EMBER_MODELS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ember/models"),
    };
    let p = dir.join(rel);
    p.exists().then_some(p)
}

thread_local! {
    /// This thread's scratch directory (in `$TMPDIR`), reused by every input.
    static SCRATCH: tempfile::TempDir = tempfile::Builder::new()
        .prefix("ember-fuzz-")
        .tempdir()
        .expect("create a scratch directory");
}

/// Runs `f` in this thread's scratch directory after writing `files` into it:
/// `(name, Some(bytes))` is written, `(name, None)` removed, other files are
/// left as they are (targets always name the same files).
pub fn with_files<R>(files: &[(&str, Option<&[u8]>)], f: impl FnOnce(&Path) -> R) -> R {
    SCRATCH.with(|dir| {
        let dir = dir.path();
        for (name, bytes) in files {
            let path = dir.join(name);
            match bytes {
                Some(b) => std::fs::write(&path, b).expect("write a scratch file"),
                None => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("remove {}: {e}", path.display()),
                },
            }
        }
        f(dir)
    })
}

/// `Some(part)` for a non-empty part, `None` (the file is absent) for an empty one.
pub fn present(part: &[u8]) -> Option<&[u8]> {
    (!part.is_empty()).then_some(part)
}

/// Writes `ir` with `opts` and reads the file back into memory (the temporary
/// file is removed).
pub fn ember_bytes(ir: &ModelIr, opts: &WriteOptions) -> ember_converter::Result<Vec<u8>> {
    let dir = tempfile::Builder::new()
        .prefix("ember-fuzz-")
        .tempdir()
        .map_err(|e| ConvertError::io(std::env::temp_dir(), e))?;
    let path = dir.path().join("model.ember");
    write_model(ir, &path, opts)?;
    std::fs::read(&path).map_err(|e| ConvertError::io(&path, e))
}

/// The converter's whole path for an accepted input: writes `ir` as `.ember`
/// (default options) and, when the writer accepts it, loads and runs the
/// file. Contract checked: a file the writer wrote, the loader accepts.
pub fn write_and_run(ir: &ModelIr) {
    with_files(&[], |dir| {
        let path = dir.join("out.ember");
        if write_model(ir, &path, &WriteOptions::default()).is_err() {
            return;
        }
        let model = Model::load(&path)
            .unwrap_or_else(|e| panic!("the loader rejects a file the writer wrote: {e}"));
        run_model(Arc::new(model));
    })
}

/// Hyperparameters of a small llama-style model: `dim` wide (`dim / 2`-wide
/// heads, 2 query heads, 1 KV head), `layers` layers, biases on q/k/v, tied
/// output, 264 tokens (see [`tiny_tokenizer`]), 16 positions.
pub fn tiny_hparams(dim: u32, layers: u32) -> HyperParams {
    HyperParams {
        architecture: Architecture::Llama as u32,
        activation: Activation::Silu as u32,
        dim,
        n_layers: layers,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: dim / 2,
        ffn_dim: dim,
        vocab_size: 264,
        max_context: 16,
        sliding_window: 0,
        rope_pairing: RopePairing::Half as u32,
        rope_dim: dim / 2,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None as u32,
        rope_scaling_factor: 1.0,
        norm: NormKind::RmsNorm as u32,
        norm_eps: 1e-5,
        flags: flags::QKV_BIAS | flags::TIED_OUTPUT,
        ..Default::default()
    }
}

/// A SentencePiece-style tokenizer of 264 tokens: `<unk> <s> </s>`, 256 byte
/// tokens and five pieces.
pub fn tiny_tokenizer() -> TokenizerSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
    }
    for p in ["▁", "e", "h", "▁h", "▁he"] {
        tokens.push(p.to_string());
        types.push(TokenType::Normal);
    }
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
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

/// Deterministic values in [-0.5, 0.5) (xorshift64*), norm weights near 1.
fn tiny_values(name: &str, n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let offset = if name.ends_with("norm") { 1.0 } else { 0.0 };
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            r - 0.5 + offset
        })
        .collect()
}

/// The model of [`tiny_hparams`] with deterministic random weights and a
/// template that concatenates the messages.
pub fn tiny_ir(dim: u32, layers: u32) -> ModelIr {
    let hp = tiny_hparams(dim, layers);
    let tensors = expected_tensors(&hp)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product::<u64>() as usize;
            let values = tiny_values(&name, n, i as u64 + 1);
            IrTensor {
                name,
                shape,
                source: Box::new(F32Source(values)),
            }
        })
        .collect();
    ModelIr {
        hparams: hp,
        tensors,
        tokenizer: tiny_tokenizer(),
        chat_template: Some("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
        metadata: vec![("source.kind".into(), "fuzz".into())],
    }
}

/// Fixed models by name, built once per process: `tiny` ([`tiny_ir`] at width
/// 32, 2 layers, f32) or a `tests/fixtures/hf-tiny/<name>` checkpoint
/// converted with default options.
pub fn model(name: &str) -> Arc<Model> {
    static MODELS: OnceLock<Mutex<HashMap<String, Arc<Model>>>> = OnceLock::new();
    let mut models = MODELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let m = models.entry(name.to_string()).or_insert_with(|| {
        let bytes = if name == "tiny" {
            ember_bytes(&tiny_ir(32, 2), &WriteOptions::default())
        } else {
            ember_converter::hf::load(&fixture(&format!("hf-tiny/{name}")))
                .and_then(|ir| ember_bytes(&ir, &WriteOptions::default()))
        }
        .unwrap_or_else(|e| panic!("build the fixed model {name}: {e}"));
        Arc::new(Model::from_bytes(&bytes).expect("load a fixed model"))
    });
    Arc::clone(m)
}

thread_local! {
    /// Sessions of fixed models by (model, configuration), kept across inputs.
    static SESSIONS: RefCell<HashMap<(String, SessionConfigKey), Session<'static>>> =
        RefCell::new(HashMap::new());
}

/// The fields of a `SessionConfig` the targets vary, as a map key.
type SessionConfigKey = (usize, u32, Option<usize>);

fn config_key(c: &SessionConfig) -> SessionConfigKey {
    let keep = match c.context_policy {
        ember_runtime::ContextPolicy::Error => None,
        ember_runtime::ContextPolicy::Shift { keep } => Some(keep),
    };
    (c.context, c.kv_type.id(), keep)
}

/// Runs `f` on this thread's session of the fixed model `name` with `config`
/// (created on first use, then reused: `f` must not rely on its state).
pub fn with_session<R>(name: &str, config: SessionConfig, f: impl FnOnce(&mut Session) -> R) -> R {
    SESSIONS.with(|sessions| {
        let mut sessions = sessions.borrow_mut();
        let s = sessions
            .entry((name.to_string(), config_key(&config)))
            .or_insert_with(|| Session::new(model(name), config).expect("a fixed session"));
        f(s)
    })
}

/// A short text a front end would encode: words, special tokens' texts of
/// several families, non-ASCII text.
const PROBE_TEXT: &str = "<s>Hello <|im_start|>world</s> naïve 日本 👋🏽";

/// Encodes and decodes [`PROBE_TEXT`] with `tok` (with and without special
/// tokens), streams the ids, decodes out-of-range ids. Contracts checked:
/// every id is in range, and the streaming decoder gives the whole-sequence
/// decode.
pub fn run_tokenizer(tok: &Tokenizer) {
    for parse_special in [false, true] {
        let opts = EncodeOptions {
            add_bos: true,
            parse_special,
        };
        let ids = tok.encode(PROBE_TEXT, opts);
        check_ids(tok, &ids);
        assert_eq!(stream(tok, &ids), tok.decode(&ids), "stream of {ids:?}");
    }
    let n = tok.n_tokens() as u32;
    let ids = [0, n.saturating_sub(1), n, u32::MAX];
    assert_eq!(stream(tok, &ids), tok.decode(&ids));
}

/// Asserts that every id of an encoding is a token of `tok`.
pub fn check_ids(tok: &Tokenizer, ids: &[u32]) {
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= tok.n_tokens()) {
        panic!("encode produced id {id} of {} tokens", tok.n_tokens());
    }
}

/// `ids` decoded token by token with a [`StreamDecoder`].
pub fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut d = StreamDecoder::for_tokenizer(tok);
    let mut s = String::new();
    for &id in ids {
        s.push_str(d.push(tok, id));
    }
    s.push_str(d.finish());
    s
}

/// Uses a loaded model as a front end does, in bounded work: its tokenizer
/// ([`run_tokenizer`]), a session of at most 4 positions, a prefill of up to 3
/// prompt tokens and one decode step. Contract checked: a model the loader
/// accepted runs (all validation happens at load), so session creation fails
/// only for lack of memory, and prefill and step do not fail.
pub fn run_model(model: Arc<Model>) {
    run_tokenizer(model.tokenizer());
    let cfg = model.config();
    let context = cfg.max_context.min(4);
    let vocab = cfg.vocab_size;
    let config = SessionConfig {
        batch: 2,
        ..SessionConfig::new(context)
    };
    let tok = model.tokenizer();
    let mut prompt = tok.encode("Hi there", tok.default_encode_options());
    prompt.truncate(context - 1);
    if prompt.is_empty() {
        prompt.push(0);
    }
    let mut session = match Session::new(Arc::clone(&model), config) {
        Ok(s) => s,
        Err(Error::OutOfMemory { .. }) => return,
        Err(e) => panic!("a loaded model refuses a session of {context} positions: {e}"),
    };
    let logits = session
        .prefill(&prompt)
        .unwrap_or_else(|e| panic!("prefill of {prompt:?} failed: {e}"));
    assert_eq!(logits.len(), vocab);
    let next = argmax(logits);
    assert!((next as usize) < vocab);
    if prompt.len() < context {
        session
            .step(next)
            .unwrap_or_else(|e| panic!("decode step failed: {e}"));
    }
}
