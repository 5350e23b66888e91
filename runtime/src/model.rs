//! A loaded model: the file's bytes (memory-mapped or owned), its validated
//! description, the tokenizer, and zero-copy typed views of the weights.
//!
//! `Model` is immutable after loading and `Send + Sync`: many sessions share one
//! through an `Arc`.

use std::path::Path;

use bytemuck::Zeroable;
use ember_kernels::arch::Kernels;
use ember_kernels::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ8_0, QK};
use half::{bf16, f16};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::format::{names, DType, HyperParams, Metadata};
use crate::loader::{self, ParsedFile, TensorInfo};
use crate::pool::Pool;
use crate::storage::Storage;
use crate::tokenizer::Tokenizer;

/// A typed, zero-copy view of a tensor's elements (block types: its blocks,
/// row-major, `cols / QK` blocks per row).
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    Q8_0(&'a [BlockQ8_0]),
    Q4_0(&'a [BlockQ4_0]),
    /// Q8_0 blocks in the row-interleaved layout (`blocks::TILE_ROWS`).
    Q8_0X4(&'a [BlockQ8_0]),
    /// Q4_0 blocks in the row-interleaved layout.
    Q4_0X4(&'a [BlockQ4_0]),
    /// IQ4_NL blocks (plain and row-interleaved layouts).
    Iq4Nl(&'a [BlockIq4Nl]),
    Iq4NlX4(&'a [BlockIq4Nl]),
}

/// A matrix-vector input: the f32 vector and, when the model has quantized
/// matrices, the same vector quantized to Q8_0 blocks (quantized once, used by
/// every matrix that reads this input). `q8` is empty when not prepared.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub x: &'a [f32],
    pub q8: &'a [BlockQ8_0],
}

impl<'a> Input<'a> {
    /// An input for float weights only.
    pub fn f32(x: &'a [f32]) -> Self {
        Self { x, q8: &[] }
    }
    /// Quantizes `x` into `buf` (`buf.len() >= x.len() / QK`, `x.len()` a
    /// multiple of `QK`) and returns the input with both forms.
    /// Uses the process-wide kernel table's quantizer (every tier's is
    /// bit-identical to the scalar reference).
    pub fn quantized(x: &'a [f32], buf: &'a mut [BlockQ8_0]) -> Self {
        Self::quantized_for(&ember_kernels::arch::kernels(), x, buf, false)
    }
    /// `quantized` with the kernels `k`, for matrices stored rotated when
    /// `rotate` (the Q8_0 form then holds the rotated input; `x` is unchanged).
    pub fn quantized_for(
        k: &Kernels,
        x: &'a [f32],
        buf: &'a mut [BlockQ8_0],
        rotate: bool,
    ) -> Self {
        let q8 = &mut buf[..x.len() / QK];
        quantize_input(k, x, q8, rotate);
        Self { x, q8 }
    }
}

/// Quantizes a matrix input `x` to Q8_0 (`x.len() == out.len() * QK`), each
/// block rotated first when `rotate` (`format::tensor_flags::ROTATED`). The
/// rotation works on one block at a time on the stack: nothing is allocated.
pub(crate) fn quantize_input(k: &Kernels, x: &[f32], out: &mut [BlockQ8_0], rotate: bool) {
    if !rotate {
        return (k.quantize_row_q8_0)(x, out);
    }
    for (xs, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(1)) {
        let mut block: [f32; QK] = xs.try_into().expect("a whole block");
        ember_kernels::scalar::hadamard32_block(&mut block);
        (k.quantize_row_q8_0)(&block, b);
    }
}

impl Weights<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(w) => w.len(),
            Self::F16(w) => w.len(),
            Self::BF16(w) => w.len(),
            Self::Q8_0(w) | Self::Q8_0X4(w) => w.len() * QK,
            Self::Q4_0(w) | Self::Q4_0X4(w) => w.len() * QK,
            Self::Iq4Nl(w) | Self::Iq4NlX4(w) => w.len() * QK,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The stored dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Self::F32(_) => DType::F32,
            Self::F16(_) => DType::F16,
            Self::BF16(_) => DType::BF16,
            Self::Q8_0(_) => DType::Q8_0,
            Self::Q4_0(_) => DType::Q4_0,
            Self::Q8_0X4(_) => DType::Q8_0X4,
            Self::Q4_0X4(_) => DType::Q4_0X4,
            Self::Iq4Nl(_) => DType::Iq4Nl,
            Self::Iq4NlX4(_) => DType::Iq4NlX4,
        }
    }
    /// Copies row `r` of a `[rows, cols]` matrix into `out` (`out.len() == cols`),
    /// widening or dequantizing to f32.
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        let c = out.len();
        match self {
            Self::F32(w) => out.copy_from_slice(&w[r * c..(r + 1) * c]),
            Self::F16(w) => ember_kernels::scalar::f16_to_f32(&w[r * c..(r + 1) * c], out),
            Self::BF16(w) => ember_kernels::scalar::bf16_to_f32(&w[r * c..(r + 1) * c], out),
            Self::Q8_0(w) => {
                let nb = c / QK;
                ember_kernels::scalar::dequantize_row_q8_0(&w[r * nb..(r + 1) * nb], out)
            }
            Self::Q4_0(w) => {
                let nb = c / QK;
                ember_kernels::scalar::dequantize_row_q4_0(&w[r * nb..(r + 1) * nb], out)
            }
            Self::Q8_0X4(w) => ember_kernels::scalar::dequantize_tiled_row_q8_0(w, r, out),
            Self::Q4_0X4(w) => ember_kernels::scalar::dequantize_tiled_row_q4_0(w, r, out),
            Self::Iq4Nl(w) => {
                let nb = c / QK;
                ember_kernels::scalar::dequantize_row_iq4_nl(&w[r * nb..(r + 1) * nb], out)
            }
            Self::Iq4NlX4(w) => ember_kernels::scalar::dequantize_tiled_row_iq4_nl(w, r, out),
        }
    }
    /// `out = W x` for `W: [out.len(), x.len()]` with the process-wide kernels,
    /// as stored: for a matrix flagged rotated (`TensorInfo::rotated`) this is
    /// the product with the rotated rows, so `x` must be rotated by the caller
    /// (`ember_kernels::scalar::hadamard32`); the forward pass does this itself.
    /// Quantized matrices quantize `x` into a temporary (allocates); the forward
    /// pass uses `matvec_input` with a preallocated quantized input instead.
    pub fn matvec(&self, x: &[f32], out: &mut [f32]) {
        let k = ember_kernels::arch::kernels();
        match self {
            Self::Q8_0(_)
            | Self::Q4_0(_)
            | Self::Q8_0X4(_)
            | Self::Q4_0X4(_)
            | Self::Iq4Nl(_)
            | Self::Iq4NlX4(_) => {
                let mut buf = vec![BlockQ8_0::zeroed(); x.len() / QK];
                self.matvec_input(&k, &Input::quantized(x, &mut buf), out)
            }
            _ => self.matvec_input(&k, &Input::f32(x), out),
        }
    }
    /// Rows `r0..r1` of a matrix with `cols` columns, as a view of the same type
    /// (row-interleaved types: `r0` and `r1` multiples of `TILE_ROWS`, so the
    /// range is whole tiles, which are contiguous).
    fn rows(&self, cols: usize, r0: usize, r1: usize) -> Self {
        match self {
            Self::F32(w) => Self::F32(&w[r0 * cols..r1 * cols]),
            Self::F16(w) => Self::F16(&w[r0 * cols..r1 * cols]),
            Self::BF16(w) => Self::BF16(&w[r0 * cols..r1 * cols]),
            Self::Q8_0(w) => Self::Q8_0(&w[r0 * cols / QK..r1 * cols / QK]),
            Self::Q4_0(w) => Self::Q4_0(&w[r0 * cols / QK..r1 * cols / QK]),
            Self::Q8_0X4(w) => Self::Q8_0X4(&w[r0 * cols / QK..r1 * cols / QK]),
            Self::Q4_0X4(w) => Self::Q4_0X4(&w[r0 * cols / QK..r1 * cols / QK]),
            Self::Iq4Nl(w) => Self::Iq4Nl(&w[r0 * cols / QK..r1 * cols / QK]),
            Self::Iq4NlX4(w) => Self::Iq4NlX4(&w[r0 * cols / QK..r1 * cols / QK]),
        }
    }

    /// `matvec_input` with the output rows split over the threads of `pool`
    /// (chunks claimed by the caller and the workers, `Pool::split_rows`).
    /// Matrices smaller than `PARALLEL_MIN_BYTES` run on the calling thread
    /// alone: for them the hand-off costs more than the rows save. Chunks are
    /// multiples of 4 rows,
    /// so every row is computed by the same kernel path as on one thread: the
    /// results are identical for every thread count. Allocates nothing.
    pub fn matvec_input_threaded(
        &self,
        k: &Kernels,
        input: &Input,
        out: &mut [f32],
        pool: &mut Pool,
    ) {
        let rows = out.len();
        let bytes = self.dtype().bytes_for(self.len() as u64).unwrap_or(0);
        if pool.threads() <= 1 || rows < 8 || bytes < PARALLEL_MIN_BYTES {
            return self.matvec_input(k, input, out);
        }
        let cols = input.x.len();
        pool.split_rows(out, 4, &|r0, part| {
            self.rows(cols, r0, r0 + part.len())
                .matvec_input(k, input, part)
        });
    }

    /// The products of several matrices that read the same input, as one
    /// pooled job: `out` is their outputs concatenated (`mats[i]` has
    /// `mats[i].len() / cols` rows; the row counts must add up to
    /// `out.len()`). One hand-off instead of one per matrix, and matrices too
    /// small to split alone (a key or value projection) share the threads too.
    /// Each row is computed exactly as by [`matvec_input`] on one thread (chunk
    /// bounds are multiples of 4 rows within every matrix), so the results do
    /// not depend on the thread count. When a matrix's row count is not a
    /// multiple of 4, or all of them together are below `PARALLEL_MIN_BYTES`,
    /// the products run one after another. Allocates nothing.
    ///
    /// [`matvec_input`]: Self::matvec_input
    pub fn matvec_many_input_threaded(
        mats: &[Weights<'_>],
        k: &Kernels,
        input: &Input,
        out: &mut [f32],
        pool: &mut Pool,
    ) {
        let cols = input.x.len();
        let rows = |w: &Weights<'_>| w.len() / cols.max(1);
        assert_eq!(
            mats.iter().map(rows).sum::<usize>(),
            out.len(),
            "matvec_many: output length"
        );
        let bytes: u64 = mats
            .iter()
            .map(|w| w.dtype().bytes_for(w.len() as u64).unwrap_or(0))
            .sum();
        let aligned = mats.iter().all(|w| rows(w) % 4 == 0);
        if !aligned || pool.threads() <= 1 || bytes < PARALLEL_MIN_BYTES {
            let mut rest = &mut out[..];
            for w in mats {
                let (o, tail) = rest.split_at_mut(rows(w));
                w.matvec_input_threaded(k, input, o, pool);
                rest = tail;
            }
            return;
        }
        pool.split_rows(out, 4, &|r0, part| {
            let (r1, mut base) = (r0 + part.len(), 0);
            for w in mats {
                let n = rows(w);
                let (a, b) = (r0.max(base), r1.min(base + n));
                if a < b {
                    w.rows(cols, a - base, b - base).matvec_input(
                        k,
                        input,
                        &mut part[a - r0..b - r0],
                    );
                }
                base += n;
            }
        });
    }

    /// `out[t] = W a[t]` for `n` Q8_0-quantized input vectors (`a: [n, cols / QK]`,
    /// `out: [n, rows]`, token-major) with the matrix-matrix kernels, split over
    /// the threads of `pool` by tokens, one contiguous share per thread. Returns
    /// false (and does nothing) for types without a matrix-matrix kernel (all but
    /// the row-interleaved ones); the caller then runs one product per token.
    /// Each token's results equal `matvec_input`'s for that token.
    pub fn matmul_input_threaded(
        &self,
        k: &Kernels,
        a: &[BlockQ8_0],
        n: usize,
        out: &mut [f32],
        pool: &mut Pool,
    ) -> bool {
        if !matches!(self, Self::Q8_0X4(_) | Self::Q4_0X4(_) | Self::Iq4NlX4(_)) || n == 0 {
            return false;
        }
        let (nb, rows) = (a.len() / n, out.len() / n);
        let run = |t0: usize, part: &mut [f32]| {
            let nt = part.len() / rows;
            let at = &a[t0 * nb..(t0 + nt) * nb];
            match self {
                Self::Q8_0X4(w) => (k.matmul_q8_0x4_q8_0)(w, at, nt, part),
                Self::Q4_0X4(w) => (k.matmul_q4_0x4_q8_0)(w, at, nt, part),
                Self::Iq4NlX4(w) => (k.matmul_iq4_nlx4_q8_0)(w, at, nt, part),
                _ => unreachable!("checked above"),
            }
        };
        if pool.threads() <= 1 || n < 2 {
            run(0, out);
        } else {
            // One contiguous share of tokens per thread: each thread reads the
            // matrix once per call and prepares each tile for all its tokens
            // (finer chunks re-read it, from L3 or memory, once per chunk).
            let share = n.div_ceil(pool.threads()) * rows;
            pool.split_rows(out, share, &|r0, part| run(r0 / rows, part));
        }
        true
    }

    /// `out[t] = W x[t]` for `n` f32 input vectors (`x: [n, cols]`, `out: [n,
    /// rows]`, token-major) with the float matrix-matrix kernel, split over the
    /// threads of `pool` by tokens: one contiguous share per thread, so each
    /// thread reads the matrix once per call. Returns false (and does nothing)
    /// for types without such a kernel (all but f16); the caller then tries the
    /// quantized path or one product per token. Each token's results equal
    /// `matvec_input`'s for that token. Allocates nothing.
    pub fn matmul_f32_input_threaded(
        &self,
        k: &Kernels,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        pool: &mut Pool,
    ) -> bool {
        let Self::F16(w) = self else {
            return false;
        };
        if n == 0 || out.is_empty() {
            return n != 0;
        }
        let (cols, rows) = (x.len() / n, out.len() / n);
        let run = |t0: usize, part: &mut [f32]| {
            let nt = part.len() / rows;
            (k.matmul_f16_f32)(w, &x[t0 * cols..(t0 + nt) * cols], nt, part)
        };
        if pool.threads() <= 1 || n < 2 {
            run(0, out);
        } else {
            let share = n.div_ceil(pool.threads()) * rows;
            pool.split_rows(out, share, &|r0, part| run(r0 / rows, part));
        }
        true
    }

    /// `out = W x` with the kernels of `k`. Quantized matrices read `input.q8`,
    /// which must hold `input.x` quantized (see `Input::quantized`).
    pub fn matvec_input(&self, k: &Kernels, input: &Input, out: &mut [f32]) {
        match self {
            Self::F32(w) => (k.matvec_f32_f32)(w, input.x, out),
            Self::F16(w) => (k.matvec_f16_f32)(w, input.x, out),
            Self::BF16(w) => ember_kernels::scalar::matvec_bf16_f32(w, input.x, out),
            Self::Q8_0(w) => {
                assert_eq!(input.q8.len() * QK, input.x.len(), "input not quantized");
                (k.matvec_q8_0_q8_0)(w, input.q8, out)
            }
            Self::Q4_0(w) => {
                assert_eq!(input.q8.len() * QK, input.x.len(), "input not quantized");
                (k.matvec_q4_0_q8_0)(w, input.q8, out)
            }
            Self::Q8_0X4(w) => {
                assert_eq!(input.q8.len() * QK, input.x.len(), "input not quantized");
                (k.matvec_q8_0x4_q8_0)(w, input.q8, out)
            }
            Self::Q4_0X4(w) => {
                assert_eq!(input.q8.len() * QK, input.x.len(), "input not quantized");
                (k.matvec_q4_0x4_q8_0)(w, input.q8, out)
            }
            Self::Iq4Nl(w) => {
                assert_eq!(input.q8.len() * QK, input.x.len(), "input not quantized");
                (k.matvec_iq4_nl_q8_0)(w, input.q8, out)
            }
            Self::Iq4NlX4(w) => {
                assert_eq!(input.q8.len() * QK, input.x.len(), "input not quantized");
                (k.matvec_iq4_nlx4_q8_0)(w, input.q8, out)
            }
        }
    }
}

/// Whether the block-quantized members of `group` (matrices reading one input)
/// are rotated; they must agree, since they share one quantized input.
fn group_rotation(tensors: &[TensorInfo], group: &[usize]) -> Result<bool> {
    let mut blocks = group
        .iter()
        .map(|&i| &tensors[i])
        .filter(|t| t.dtype.is_quantized());
    let Some(first) = blocks.next() else {
        return Ok(false);
    };
    match blocks.find(|t| t.rotated != first.rotated) {
        None => Ok(first.rotated),
        Some(other) => Err(Error::BadTensor {
            name: other.name.clone(),
            reason: format!(
                "rotated is {} but {} (same input) has {}",
                other.rotated, first.name, first.rotated
            ),
        }),
    }
}

/// Smallest matrix (in stored bytes) whose matrix-vector product is split over
/// the session's threads. A hand-off to a spinning worker is cheap (the
/// `pool::overhead` test measures it), so even SmolLM-135M's attention
/// projections pay (0.35 MiB at Q8_0); its 0.12 MiB key/value projections stay
/// on the calling thread. Measurements: `benches/RESULTS.md`, "Worker pool".
pub const PARALLEL_MIN_BYTES: u64 = 256 << 10;

/// Indices (into the tensor table) of a norm's weight and, for LayerNorm, its
/// bias.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormIndex {
    pub weight: usize,
    pub bias: Option<usize>,
}

/// Indices (into the tensor table) of one layer's weights; the optional ones
/// are present exactly when the model's [`ModelConfig`] says so.
#[derive(Clone, Debug)]
pub(crate) struct LayerIndex {
    pub attn_norm: NormIndex,
    pub wq: usize,
    pub wk: usize,
    pub wv: usize,
    pub wo: usize,
    pub bq: Option<usize>,
    pub bk: Option<usize>,
    pub bv: Option<usize>,
    pub bo: Option<usize>,
    pub q_norm: Option<NormIndex>,
    pub k_norm: Option<NormIndex>,
    pub post_attn_norm: Option<NormIndex>,
    pub ffn_norm: NormIndex,
    /// Absent for a plain (ungated) MLP.
    pub w_gate: Option<usize>,
    pub w_up: usize,
    pub w_down: usize,
    pub b_gate: Option<usize>,
    pub b_up: Option<usize>,
    pub b_down: Option<usize>,
    pub post_ffn_norm: Option<NormIndex>,
    /// Whether the block-quantized matrices reading each input are stored
    /// rotated (`format::tensor_flags::ROTATED`), so that input must be rotated
    /// before it is quantized: `wq`/`wk`/`wv`, `wo`, `w_gate`/`w_up`, `w_down`.
    pub rotate_qkv: bool,
    pub rotate_wo: bool,
    pub rotate_gate_up: bool,
    pub rotate_down: bool,
}

/// A validated model, ready for sessions.
pub struct Model {
    storage: Storage,
    parsed: ParsedFile,
    /// The typed architecture, decoded once from the header.
    config: ModelConfig,
    tokenizer: Tokenizer,
    pub(crate) tok_embeddings: usize,
    pub(crate) norm: NormIndex,
    /// Output projection; the embeddings when tied.
    pub(crate) output: usize,
    pub(crate) layers: Vec<LayerIndex>,
    /// Whether the output matrix is stored rotated (its input is rotated).
    pub(crate) rotate_output: bool,
    /// Kernel table chosen at load (`ember_kernels::arch::kernels`).
    pub(crate) kernels: Kernels,
    /// Whether any matrix is stored in a quantized block type (the forward pass
    /// then quantizes its matrix inputs).
    pub(crate) has_quantized: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hparams", &self.parsed.hparams)
            .field("tensors", &self.parsed.tensors.len())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Memory-maps and validates an `.ember` file. The weights stay in the page
    /// cache: nothing is copied.
    ///
    /// Contract: the file must not be truncated or modified while the model is
    /// loaded (as for every memory-mapped runtime); replace model files by
    /// renaming a new file over the old one, which is what `ember convert` does.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_storage(Storage::map(path.as_ref())?)
    }

    /// Validates a complete file image held in memory (copied once into an
    /// aligned buffer).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_storage(Storage::copy_aligned(bytes)?)
    }

    fn from_storage(storage: Storage) -> Result<Self> {
        let parsed = loader::parse(storage.bytes())?;
        let hp = parsed.hparams;
        let tokenizer = Tokenizer::new(parsed.tokenizer.clone(), hp.vocab_size)?;
        let idx = |name: &str| -> Result<usize> {
            parsed
                .by_name
                .get(name)
                .copied()
                .ok_or_else(|| Error::MissingTensor(name.into()))
        };
        let opt = |name: String| parsed.by_name.get(&name).copied();
        let config = ModelConfig::decode(&hp)?;
        let norm = |name: String| -> Result<NormIndex> {
            Ok(NormIndex {
                weight: idx(&name)?,
                bias: opt(names::norm_bias(&name)),
            })
        };
        let rotation = |group: &[usize]| group_rotation(&parsed.tensors, group);
        let mut layers = Vec::with_capacity(hp.n_layers as usize);
        for l in 0..hp.n_layers as usize {
            let n = |s: &str| names::layer(l, s);
            let (wq, wk, wv) = (
                idx(&n(names::WQ))?,
                idx(&n(names::WK))?,
                idx(&n(names::WV))?,
            );
            let (wo, w_down) = (idx(&n(names::WO))?, idx(&n(names::W_DOWN))?);
            let (w_gate, w_up) = (opt(n(names::W_GATE)), idx(&n(names::W_UP))?);
            let optional_norm = |present: bool, s: &str| present.then(|| norm(n(s))).transpose();
            let gate_up: Vec<usize> = w_gate.into_iter().chain([w_up]).collect();
            layers.push(LayerIndex {
                attn_norm: norm(n(names::ATTN_NORM))?,
                wq,
                wk,
                wv,
                wo,
                bq: opt(n(names::BQ)),
                bk: opt(n(names::BK)),
                bv: opt(n(names::BV)),
                bo: opt(n(names::BO)),
                q_norm: optional_norm(config.qk_norm, names::Q_NORM)?,
                k_norm: optional_norm(config.qk_norm, names::K_NORM)?,
                post_attn_norm: optional_norm(config.post_attn_norm, names::POST_ATTN_NORM)?,
                ffn_norm: norm(n(names::FFN_NORM))?,
                w_gate,
                w_up,
                w_down,
                b_gate: opt(n(names::B_GATE)),
                b_up: opt(n(names::B_UP)),
                b_down: opt(n(names::B_DOWN)),
                post_ffn_norm: optional_norm(config.post_ffn_norm, names::POST_FFN_NORM)?,
                rotate_qkv: rotation(&[wq, wk, wv])?,
                rotate_wo: rotation(&[wo])?,
                rotate_gate_up: rotation(&gate_up)?,
                rotate_down: rotation(&[w_down])?,
            });
        }
        let tok_embeddings = idx(names::TOK_EMBEDDINGS)?;
        let output = if hp.tied_output() {
            tok_embeddings
        } else {
            idx(names::OUTPUT)?
        };
        let norm = norm(names::NORM.to_string())?;
        let has_quantized = parsed.tensors.iter().any(|t| t.dtype.is_quantized());
        let rotate_output = parsed.tensors[output].rotated;
        let model = Model {
            storage,
            parsed,
            config,
            tokenizer,
            tok_embeddings,
            norm,
            output,
            layers,
            rotate_output,
            kernels: ember_kernels::arch::kernels(),
            has_quantized,
        };
        // Create every view once so that a misaligned buffer fails here, not later.
        for i in 0..model.parsed.tensors.len() {
            model.try_weights(i)?;
        }
        Ok(model)
    }

    /// The on-disk hyperparameters (file identity, sizes).
    pub fn hparams(&self) -> &HyperParams {
        &self.parsed.hparams
    }
    /// The typed architecture description every forward path runs.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    /// The model with the kernel table `kernels` instead of the one chosen at
    /// load, e.g. a lower tier (`ember_kernels::arch::kernels_for`) for tests
    /// and benchmarks that compare every tier in one process.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }
    /// The kernel tier chosen at load (best supported, capped by
    /// `EMBER_KERNEL_TIER`).
    pub fn kernel_tier(&self) -> ember_kernels::arch::Tier {
        self.kernels.tier
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.parsed.chat_template.as_deref()
    }
    pub fn metadata(&self) -> &Metadata {
        &self.parsed.metadata
    }
    /// The validated file description (header, directory).
    pub fn file(&self) -> &ParsedFile {
        &self.parsed
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.parsed.tensors
    }
    /// The whole file image.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
    /// Whether the weights are memory-mapped (as opposed to an owned copy).
    pub fn is_mapped(&self) -> bool {
        self.storage.is_mapped()
    }

    /// Recomputes every tensor checksum (reads the whole file).
    pub fn verify_checksums(&self) -> Result<()> {
        loader::verify_tensor_checksums(self.storage.bytes(), &self.parsed)
    }

    /// [`Model::verify_checksums`], calling `progress(bytes_checked)` after
    /// each tensor (out of [`Model::tensor_data_bytes`]).
    pub fn verify_checksums_with_progress(&self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        loader::verify_tensor_checksums_with_progress(self.storage.bytes(), &self.parsed, progress)
    }

    /// Bytes of tensor data (the sum of every tensor's size).
    pub fn tensor_data_bytes(&self) -> u64 {
        self.parsed.tensors.iter().map(|t| t.nbytes).sum()
    }

    /// Raw bytes of tensor `i`.
    pub fn tensor_bytes(&self, i: usize) -> &[u8] {
        let t = &self.parsed.tensors[i];
        &self.storage.bytes()[t.offset as usize..(t.offset + t.nbytes) as usize]
    }

    fn try_weights(&self, i: usize) -> Result<Weights<'_>> {
        let t = &self.parsed.tensors[i];
        let bytes = self.tensor_bytes(i);
        let misaligned = || Error::Misaligned {
            name: t.name.clone(),
            offset: t.offset,
            align: 4,
        };
        Ok(match t.dtype {
            DType::F32 => Weights::F32(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?),
            DType::F16 => Weights::F16(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?),
            DType::BF16 => {
                Weights::BF16(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
            // Blocks have alignment 1: any offset works.
            DType::Q8_0 => {
                Weights::Q8_0(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
            DType::Q4_0 => {
                Weights::Q4_0(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
            DType::Q8_0X4 => {
                Weights::Q8_0X4(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
            DType::Q4_0X4 => {
                Weights::Q4_0X4(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
            DType::Iq4Nl => {
                Weights::Iq4Nl(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
            DType::Iq4NlX4 => {
                Weights::Iq4NlX4(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?)
            }
        })
    }

    /// Typed view of tensor `i`. Infallible: every view was checked at load.
    pub fn weights(&self, i: usize) -> Weights<'_> {
        self.try_weights(i).expect("views are validated at load")
    }

    /// Row `r` of tensor `i` as f32 in the model's true basis: `row_to_f32`,
    /// then rotated back when the tensor is stored rotated. Every reader of
    /// weight values outside the matrix products (embedding lookup, training,
    /// merging) goes through this.
    pub fn row_to_f32(&self, i: usize, r: usize, out: &mut [f32]) {
        self.weights(i).row_to_f32(r, out);
        if self.parsed.tensors[i].rotated {
            ember_kernels::scalar::hadamard32(out);
        }
    }

    /// The embedding of `token` into `out` (`out.len() == dim`), times the
    /// model's embedding scale when it has one.
    pub(crate) fn embed(&self, token: usize, out: &mut [f32]) {
        self.row_to_f32(self.tok_embeddings, token, out);
        if let Some(s) = self.config.embed_scale {
            out.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// Typed view of an f32 vector tensor (norm weights, biases; f32 by contract).
    pub(crate) fn vector(&self, i: usize) -> &[f32] {
        match self.weights(i) {
            Weights::F32(v) => v,
            _ => unreachable!("the loader requires vectors to be f32"),
        }
    }

    /// Typed view of a tensor by name.
    pub fn weights_by_name(&self, name: &str) -> Option<Weights<'_>> {
        self.parsed.by_name.get(name).map(|&i| self.weights(i))
    }

    /// Number of parameters (elements over all tensors).
    pub fn n_params(&self) -> u64 {
        self.parsed
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .sum()
    }

    /// Bytes of the file's tensors that decoding one token reads: every tensor
    /// once (each layer's matrices, norms and biases; the final norm; the output
    /// matrix), except the token embeddings, of which it gathers one row. With a
    /// tied output the embedding matrix is also read whole, as the output.
    /// Decode speed is bounded by read bandwidth / this (the KV cache and
    /// activations come on top).
    pub fn decode_weight_bytes(&self) -> u64 {
        let tensors = &self.parsed.tensors;
        let emb = &tensors[self.tok_embeddings];
        let emb_row = emb.nbytes / u64::from(self.parsed.hparams.vocab_size).max(1);
        let read_whole: u64 = tensors
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != self.tok_embeddings || self.output == self.tok_embeddings)
            .map(|(_, t)| t.nbytes)
            .sum();
        read_whole + emb_row
    }

    /// Validates a complete file image that outlives the model (`include_bytes!`,
    /// flash, a mapping the caller owns) and uses it in place when its start is
    /// 64-byte aligned; an unaligned image is copied, as by [`Model::from_bytes`].
    pub fn from_static_bytes(bytes: &'static [u8]) -> Result<Self> {
        Self::from_storage(Storage::borrowed_or_copied(bytes)?)
    }
}
