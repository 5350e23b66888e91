//! llama2.c checkpoints (`run.c`'s format): a header of 7 little-endian i32
//! (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a
//! negative vocab_size means the classifier is *not* shared with the embedding),
//! then f32 arrays:
//! ```text
//! token_embedding [vocab, dim]
//! rms_att [L, dim]  wq [L, n_heads*hs, dim]  wk [L, n_kv*hs, dim]  wv [L, n_kv*hs, dim]
//! wo [L, dim, n_heads*hs]  rms_ffn [L, dim]  w1 [L, hidden, dim]  w2 [L, dim, hidden]
//! w3 [L, hidden, dim]  rms_final [dim]  freq_cis_real/imag [seq_len, hs/2] (unused)
//! wcls [vocab, dim] (only when not shared)
//! ```
//! with `hs = dim / n_heads`. RoPE pairs adjacent elements, theta 10000,
//! RMSNorm eps 1e-5, SwiGLU with gate = w1, up = w3, down = w2.

use std::path::Path;

use ember_runtime::format::{
    flags, names, Activation, Architecture, HyperParams, NormKind, RopePairing, RopeScaling,
};

use crate::error::{ConvertError, Result};
use crate::ir::{F32Source, IrTensor, ModelIr};
use crate::tokenizer_import;

const HEADER_BYTES: usize = 7 * 4;

/// llama2.c's fixed RMSNorm epsilon.
const NORM_EPS: f32 = 1e-5;
/// llama2.c's fixed RoPE base.
const ROPE_THETA: f32 = 10000.0;

/// The header fields, validated.
#[derive(Clone, Copy, Debug)]
struct Config {
    dim: usize,
    hidden: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    vocab: usize,
    seq_len: usize,
    shared_classifier: bool,
}

impl Config {
    fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_BYTES {
            return Err(ConvertError::Llama2c(format!(
                "file is {} bytes, shorter than the 28-byte header",
                bytes.len()
            )));
        }
        let f = |i: usize| i32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let (dim, hidden, layers, heads, kv_heads, vocab, seq) =
            (f(0), f(1), f(2), f(3), f(4), f(5), f(6));
        let bad = |m: String| Err(ConvertError::Llama2c(m));
        for (name, v) in [
            ("dim", dim),
            ("hidden_dim", hidden),
            ("n_layers", layers),
            ("n_heads", heads),
            ("n_kv_heads", kv_heads),
            ("seq_len", seq),
        ] {
            if v <= 0 || v > (1 << 24) {
                return bad(format!("header field {name} = {v} is out of range"));
            }
        }
        if vocab == 0 || vocab.unsigned_abs() > (1 << 24) {
            return bad(format!("header field vocab_size = {vocab} is out of range"));
        }
        if dim % heads != 0 {
            return bad(format!("dim {dim} is not divisible by n_heads {heads}"));
        }
        if heads % kv_heads != 0 {
            return bad(format!(
                "n_heads {heads} is not divisible by n_kv_heads {kv_heads}"
            ));
        }
        Ok(Config {
            dim: dim as usize,
            hidden: hidden as usize,
            n_layers: layers as usize,
            n_heads: heads as usize,
            n_kv_heads: kv_heads as usize,
            vocab: vocab.unsigned_abs() as usize,
            seq_len: seq as usize,
            shared_classifier: vocab > 0,
        })
    }

    fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Expected file size in bytes, or `None` on overflow.
    fn file_size(&self) -> Option<u64> {
        let (d, h, l) = (self.dim as u64, self.hidden as u64, self.n_layers as u64);
        let hs = self.head_size() as u64;
        let q = self.n_heads as u64 * hs;
        let kv = self.n_kv_heads as u64 * hs;
        let per_layer = d + q * d + 2 * kv * d + d * q + d + 3 * h * d;
        let mut floats = (self.vocab as u64).checked_mul(d)?;
        floats = floats.checked_add(l.checked_mul(per_layer)?)?;
        floats = floats.checked_add(d)?;
        floats = floats.checked_add((self.seq_len as u64).checked_mul(hs)?)?;
        if !self.shared_classifier {
            floats = floats.checked_add(self.vocab as u64 * d)?;
        }
        floats.checked_mul(4)?.checked_add(HEADER_BYTES as u64)
    }
}

/// True if `bytes` (a file's start) and `file_len` look like a llama2.c checkpoint.
pub fn sniff(bytes: &[u8], file_len: u64) -> bool {
    Config::parse(bytes).ok().and_then(|c| c.file_size()) == Some(file_len)
}

/// Reads a llama2.c checkpoint and its tokenizer file.
pub fn load(path: &Path, tokenizer: &Path) -> Result<ModelIr> {
    let bytes = std::fs::read(path).map_err(|e| ConvertError::io(path, e))?;
    let cfg = Config::parse(&bytes)?;
    let expected = cfg
        .file_size()
        .ok_or_else(|| ConvertError::Llama2c("header sizes overflow".into()))?;
    if bytes.len() as u64 != expected {
        return Err(ConvertError::Llama2c(format!(
            "file is {} bytes but its header describes {expected} bytes (truncated or not a llama2.c checkpoint)",
            bytes.len()
        )));
    }
    let floats: Vec<f32> = bytes[HEADER_BYTES..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    drop(bytes);

    let (d, h, l) = (cfg.dim, cfg.hidden, cfg.n_layers);
    let hs = cfg.head_size();
    let (q, kv) = (cfg.n_heads * hs, cfg.n_kv_heads * hs);
    let u = |v: usize| v as u64;
    let mut reader = Reader {
        floats: &floats,
        at: 0,
        tensors: Vec::new(),
    };
    reader.tensor(names::TOK_EMBEDDINGS.into(), vec![u(cfg.vocab), u(d)]);
    // Each kind of weight holds all layers back to back.
    for (suffix, shape) in [
        (names::ATTN_NORM, vec![u(d)]),
        (names::WQ, vec![u(q), u(d)]),
        (names::WK, vec![u(kv), u(d)]),
        (names::WV, vec![u(kv), u(d)]),
        (names::WO, vec![u(d), u(q)]),
        (names::FFN_NORM, vec![u(d)]),
        (names::W_GATE, vec![u(h), u(d)]),
        (names::W_DOWN, vec![u(d), u(h)]),
        (names::W_UP, vec![u(h), u(d)]),
    ] {
        for layer in 0..l {
            reader.tensor(names::layer(layer, suffix), shape.clone());
        }
    }
    reader.tensor(names::NORM.into(), vec![u(d)]);
    reader.at += cfg.seq_len * hs; // freq_cis_real and _imag: recomputed at run time.
    if !cfg.shared_classifier {
        reader.tensor(names::OUTPUT.into(), vec![u(cfg.vocab), u(d)]);
    }
    let tensors = reader.tensors;

    let hparams = HyperParams {
        architecture: Architecture::Llama as u32,
        activation: Activation::Silu as u32,
        dim: d as u32,
        n_layers: l as u32,
        n_heads: cfg.n_heads as u32,
        n_kv_heads: cfg.n_kv_heads as u32,
        head_dim: hs as u32,
        ffn_dim: h as u32,
        vocab_size: cfg.vocab as u32,
        max_context: cfg.seq_len as u32,
        sliding_window: 0,
        rope_pairing: RopePairing::Interleaved as u32,
        rope_dim: hs as u32,
        rope_theta: ROPE_THETA,
        rope_scaling: RopeScaling::None as u32,
        rope_scaling_factor: 1.0,
        norm: NormKind::RmsNorm as u32,
        norm_eps: NORM_EPS,
        flags: if cfg.shared_classifier {
            flags::TIED_OUTPUT
        } else {
            0
        },
        ..Default::default()
    };
    let tokenizer = tokenizer_import::llama2c::from_llama2c_bin(tokenizer, cfg.vocab as u32)?;
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ModelIr {
        hparams,
        tensors,
        tokenizer,
        chat_template: None,
        metadata: vec![
            ("source.kind".into(), "llama2c".into()),
            ("source.file".into(), file_name),
        ],
    })
}

/// Sequential reader over the checkpoint's floats (sizes were validated against
/// the file length, so slicing cannot go out of bounds).
struct Reader<'a> {
    floats: &'a [f32],
    at: usize,
    tensors: Vec<IrTensor>,
}

impl Reader<'_> {
    fn tensor(&mut self, name: String, shape: Vec<u64>) {
        let n = shape.iter().product::<u64>() as usize;
        let data = self.floats[self.at..self.at + n].to_vec();
        self.at += n;
        self.tensors.push(IrTensor {
            name,
            shape,
            source: Box::new(F32Source(data)),
        });
    }
}
