//! The key/value cache of one session: per layer, rows of `kv_dim` keys and
//! values in the session's KV type (f32, f16 or q8_0), plus attention over the
//! cached positions and the row moves a context shift needs. Sized once.
//!
//! A global layer holds every position of the context. A sliding-window layer
//! may hold only `window_rows` positions (its window, a pass and as much
//! again): positions `base..` in rows `0..`; when a pass would run past the
//! last row, the rows the next queries still see (the last `window - 1`
//! positions) move to the front (`make_room`: `window - 1` row copies once
//! every `window_rows - window + 1` tokens).
//!
//! Writing protocol (the forward pass): `rows_mut(layer, pos)` hands out f32 rows
//! to fill (the storage itself for f32; a staging pair otherwise); the next
//! `attend` on that layer first stores the staged row in the cache's type, so the
//! current position is attended to with the same rounding as every earlier one.

use ember_kernels::arch::Kernels;
pub use ember_kernels::blocks::BlockQ8_0;
use ember_kernels::blocks::QK;
use ember_kernels::scalar::{self as k, RopeLayout};
use half::f16;

use crate::config::{Attention, LayerKind, ModelConfig};
use crate::error::{Error, Result};
use crate::session::arena::{Alloc, Slab};

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvType {
    /// IEEE binary32: exact, 4 bytes per element.
    F32,
    /// IEEE binary16 (the default): 2 bytes per element.
    #[default]
    F16,
    /// Blocks of 32 int8 values in -127..=127 with one f16 scale (ggml's q8_0):
    /// 34 bytes per 32 elements. Rows are padded with zeros to whole blocks.
    Q8_0,
}

impl KvType {
    /// Every KV type.
    pub const ALL: [KvType; 3] = [Self::F32, Self::F16, Self::Q8_0];

    /// The name used in configs and on the command line: `f32`, `f16`, `q8_0`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
        }
    }

    /// The type called `name`, or `Error::InvalidArgument` listing the valid names.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown KV cache type {name:?} (expected f32, f16 or q8_0)"
                ))
            })
    }

    /// Stable id used in prompt-cache files (never reused).
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 8,
        }
    }

    /// The type with [`id`](Self::id) `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// Bytes one cached row of `kv_dim` elements occupies.
    pub fn row_bytes(self, kv_dim: usize) -> usize {
        match self {
            Self::F32 => 4 * kv_dim,
            Self::F16 => 2 * kv_dim,
            Self::Q8_0 => kv_dim.div_ceil(Q8_0_BLOCK) * std::mem::size_of::<BlockQ8_0>(),
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s)
    }
}

/// Elements per q8_0 block.
pub const Q8_0_BLOCK: usize = QK;

/// Quantizes `x` (any length) into `ceil(len / 32)` q8_0 blocks with the
/// kernels' reference quantizer (`max |x| / 127` scales, quants in -127..=127);
/// the tail of a partial last block is zero.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(out.len(), x.len().div_ceil(QK), "q8_0: block count");
    let full = x.len() / QK;
    k::quantize_row_q8_0(&x[..full * QK], &mut out[..full]);
    if full < out.len() {
        let mut padded = [0.0f32; QK];
        padded[..x.len() - full * QK].copy_from_slice(&x[full * QK..]);
        k::quantize_row_q8_0(&padded, &mut out[full..]);
    }
}

/// Widens elements `start..start + out.len()` of a q8_0 row: `d * q` per
/// element, each block's scale converted once (attention widens every cached
/// row on every step, so a conversion per element would cost more than the
/// products).
pub fn dequantize_q8_0(row: &[BlockQ8_0], start: usize, out: &mut [f32]) {
    let (mut i, mut out) = (start, out);
    while !out.is_empty() {
        let (b, j) = (&row[i / QK], i % QK);
        let n = (QK - j).min(out.len());
        let d = b.scale();
        let (head, rest) = out.split_at_mut(n);
        for (o, &q) in head.iter_mut().zip(&b.qs[j..j + n]) {
            *o = d * q as i8 as f32;
        }
        (i, out) = (i + n, rest);
    }
}

/// The cache storage in its element type; index `(layer * context + pos) * row`.
enum Store<'a> {
    F32 {
        k: Slab<'a, f32>,
        v: Slab<'a, f32>,
    },
    F16 {
        k: Slab<'a, f16>,
        v: Slab<'a, f16>,
    },
    Q8_0 {
        k: Slab<'a, BlockQ8_0>,
        v: Slab<'a, BlockQ8_0>,
    },
}

/// Keys and values for every layer and position of one session.
pub struct KvCache<'a> {
    kv_type: KvType,
    n_layers: usize,
    context: usize,
    /// Attention window of the sliding layers (0 without any).
    window: usize,
    /// Rows a sliding layer holds (`context` when they hold everything).
    window_rows: usize,
    /// First position held by the sliding layers (0 for the others).
    base: usize,
    /// `[n_layers + 1]` first row of each layer (the storage is layer after
    /// layer, `row` elements per row); layer `l` holds `first_row[l + 1] -
    /// first_row[l]` rows.
    first_row: Slab<'a, u64>,
    kv_dim: usize,
    head_dim: usize,
    /// Elements per stored row: `kv_dim`, or blocks per row for q8_0.
    row: usize,
    store: Store<'a>,
    /// `[kv_dim]` f32 key/value rows handed out by `rows_mut` for non-f32 types.
    stage_k: Slab<'a, f32>,
    stage_v: Slab<'a, f32>,
    /// `(layer, pos)` of a staged row not yet stored.
    pending: Option<(usize, usize)>,
    /// `[head_dim]` widened key or value of one head (q8_0 attention); the
    /// RoPE cos/sin table (`[rope_dim / 2]` each) during a context shift.
    scratch: Slab<'a, f32>,
}

/// Rows a sliding-window layer keeps for a session of `context` positions
/// whose passes hold up to `cap` tokens: `2 * window + cap - 1` (so a pass
/// always fits beside the `window - 1` positions its first query sees, and
/// compaction is rare), or the whole context when that is not smaller or the
/// model has no sliding layer. `full` (a context-shift session) keeps
/// everything: a shift re-positions every row.
pub fn window_rows(cfg: &ModelConfig, context: usize, cap: usize, full: bool) -> usize {
    match cfg.sliding_window() {
        Some(w) if !full => (2 * w + cap - 1).min(context),
        _ => context,
    }
}

/// Rows of every layer, in order, for a context of `context` positions and
/// sliding layers of `window_rows`.
fn layer_rows(
    cfg: &ModelConfig,
    context: usize,
    window_rows: usize,
) -> impl Iterator<Item = usize> + '_ {
    cfg.layers.iter().map(move |l| match l.attention {
        Attention::Sliding { .. } => window_rows,
        Attention::Global => context,
    })
}

impl<'a> KvCache<'a> {
    /// Buffer sizes in bytes, in allocation order (for exact memory accounting).
    /// A size past `usize::MAX` (a context no machine holds) saturates there.
    pub(crate) fn buffer_sizes(
        cfg: &ModelConfig,
        context: usize,
        window_rows: usize,
        kv_type: KvType,
    ) -> [usize; 6] {
        let kv_dim = cfg.kv_dim();
        let rows = layer_rows(cfg, context, window_rows).fold(0, usize::saturating_add);
        let store = rows.saturating_mul(kv_type.row_bytes(kv_dim));
        let stage = if kv_type == KvType::F32 {
            0
        } else {
            4 * kv_dim
        };
        [
            8 * (cfg.n_layers + 1),
            store,
            store,
            stage,
            stage,
            4 * cfg.head_dim,
        ]
    }

    /// Bytes a heap-allocated cache of `context` positions needs (sliding
    /// layers holding `window_rows`, see [`window_rows`]); saturates at
    /// `usize::MAX`.
    pub fn bytes_required(
        cfg: &ModelConfig,
        context: usize,
        window_rows: usize,
        kv_type: KvType,
    ) -> usize {
        Self::buffer_sizes(cfg, context, window_rows, kv_type)
            .into_iter()
            .fold(0, usize::saturating_add)
    }

    /// A zeroed cache for `context` positions of a model with `cfg`, its
    /// sliding layers holding `window_rows` positions (see [`window_rows`]).
    /// A heap allocation that fails (or would not fit the address space) is
    /// `Error::OutOfMemory`; the caller names the setting to lower.
    pub(crate) fn new_with(
        cfg: &ModelConfig,
        context: usize,
        window_rows: usize,
        kv_type: KvType,
        alloc: &mut Alloc<'_, 'a>,
    ) -> Result<Self> {
        let kv_dim = cfg.kv_dim();
        let n_layers = cfg.n_layers;
        let mut first_row: Slab<'a, u64> = alloc.zeroed(n_layers + 1)?;
        let mut total = 0u64;
        for (f, rows) in first_row
            .iter_mut()
            .zip(layer_rows(cfg, context, window_rows))
        {
            *f = total;
            total = total.saturating_add(rows as u64);
        }
        first_row[n_layers] = total;
        // Saturating: an element count past `usize::MAX` fails to allocate.
        let rows = usize::try_from(total).unwrap_or(usize::MAX);
        let (row, store) = match kv_type {
            KvType::F32 => {
                let n = rows.saturating_mul(kv_dim);
                let (k, v) = (alloc.zeroed(n)?, alloc.zeroed(n)?);
                (kv_dim, Store::F32 { k, v })
            }
            KvType::F16 => {
                let n = rows.saturating_mul(kv_dim);
                let (k, v) = (alloc.zeroed(n)?, alloc.zeroed(n)?);
                (kv_dim, Store::F16 { k, v })
            }
            KvType::Q8_0 => {
                let row = kv_dim.div_ceil(Q8_0_BLOCK);
                let n = rows.saturating_mul(row);
                let (k, v) = (alloc.zeroed(n)?, alloc.zeroed(n)?);
                (row, Store::Q8_0 { k, v })
            }
        };
        let stage = if kv_type == KvType::F32 { 0 } else { kv_dim };
        let window = cfg.sliding_window().unwrap_or(0);
        Ok(Self {
            kv_type,
            n_layers,
            context,
            window,
            window_rows,
            base: 0,
            first_row,
            kv_dim,
            head_dim: cfg.head_dim,
            row,
            store,
            stage_k: alloc.zeroed(stage)?,
            stage_v: alloc.zeroed(stage)?,
            pending: None,
            scratch: alloc.zeroed(cfg.head_dim)?,
        })
    }

    /// Number of positions it holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Whether the sliding layers hold fewer rows than the context.
    pub fn windowed(&self) -> bool {
        self.window_rows < self.context
    }

    /// First position layer `layer` still holds.
    fn layer_base(&self, layer: usize) -> usize {
        if self.is_window_layer(layer) {
            self.base
        } else {
            0
        }
    }

    /// Index of the first element of `layer`'s row for position `pos`.
    fn at(&self, layer: usize, pos: usize) -> usize {
        let base = self.layer_base(layer);
        let rows = (self.first_row[layer + 1] - self.first_row[layer]) as usize;
        assert!(
            pos >= base && pos - base < rows,
            "kv position {pos} not held by layer {layer} (positions {base}..{})",
            base + rows
        );
        (self.first_row[layer] as usize + pos - base) * self.row
    }

    /// Makes room for a pass writing positions `pos..pos + n` (`n` at most the
    /// pass capacity the cache was sized for): when the sliding layers would
    /// run out of rows, the positions the pass's first query sees (from `pos
    /// + 1 - window`) move to their first rows. Allocates nothing.
    pub(crate) fn make_room(&mut self, pos: usize, n: usize) {
        if !self.windowed() || pos + n <= self.base + self.window_rows {
            return;
        }
        self.commit();
        let new_base = (pos + 1).saturating_sub(self.window).max(self.base);
        let keep = pos - new_base;
        assert!(
            keep + n <= self.window_rows,
            "a pass of {n} tokens does not fit the sliding layers' {} rows",
            self.window_rows
        );
        let (r, shift) = (self.row, new_base - self.base);
        for l in 0..self.n_layers {
            if !self.is_window_layer(l) {
                continue;
            }
            let first = self.first_row[l] as usize * r;
            let (src, len) = (first + shift * r, keep * r);
            match &mut self.store {
                Store::F32 { k, v } => {
                    k.copy_within(src..src + len, first);
                    v.copy_within(src..src + len, first);
                }
                Store::F16 { k, v } => {
                    k.copy_within(src..src + len, first);
                    v.copy_within(src..src + len, first);
                }
                Store::Q8_0 { k, v } => {
                    k.copy_within(src..src + len, first);
                    v.copy_within(src..src + len, first);
                }
            }
        }
        self.base = new_base;
    }

    /// Whether `layer` holds fewer rows than the context (a sliding layer of
    /// a windowed cache).
    fn is_window_layer(&self, layer: usize) -> bool {
        ((self.first_row[layer + 1] - self.first_row[layer]) as usize) < self.context
    }

    /// Whether the cache can go back to holding the first `len` positions and
    /// continue from there: the sliding layers must still hold the positions
    /// the next query sees (`len + 1 - window ..`). Position 0 always works.
    pub fn can_rewind_to(&self, len: usize) -> bool {
        len == 0 || !self.windowed() || (len + 1).saturating_sub(self.window) >= self.base
    }

    /// Forgets every position (after a reset or a rewind to 0).
    pub(crate) fn clear(&mut self) {
        self.pending = None;
        self.base = 0;
    }

    /// Prepares to restore `pos` positions from a saved state: the sliding
    /// layers will hold positions from the returned base (the window of the
    /// next query); the others from 0.
    pub(crate) fn restored_base(&mut self, pos: usize) -> usize {
        self.pending = None;
        self.base = if self.windowed() {
            (pos + 1).saturating_sub(self.window)
        } else {
            0
        };
        self.base
    }

    /// The element type.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// The key and value rows (`[kv_dim]` f32 each) of `layer` at `pos`, for
    /// writing. They reach the cache (in its type) at the next [`attend`] on
    /// `layer`; the forward pass always attends after writing.
    ///
    /// [`attend`]: Self::attend
    pub fn rows_mut(&mut self, layer: usize, pos: usize) -> (&mut [f32], &mut [f32]) {
        assert!(
            layer < self.n_layers && pos < self.context,
            "kv row out of range"
        );
        self.commit();
        let at = self.at(layer, pos);
        match &mut self.store {
            Store::F32 { k, v } => (&mut k[at..at + self.row], &mut v[at..at + self.row]),
            _ => {
                self.pending = Some((layer, pos));
                (&mut self.stage_k[..], &mut self.stage_v[..])
            }
        }
    }

    /// Stores a staged row in the cache's type.
    fn commit(&mut self) {
        let Some((layer, pos)) = self.pending.take() else {
            return;
        };
        let at = self.at(layer, pos);
        let r = self.row;
        match &mut self.store {
            Store::F32 { .. } => {}
            Store::F16 { k, v } => {
                for (d, s) in k[at..at + r].iter_mut().zip(self.stage_k.iter()) {
                    *d = f16::from_f32(*s);
                }
                for (d, s) in v[at..at + r].iter_mut().zip(self.stage_v.iter()) {
                    *d = f16::from_f32(*s);
                }
            }
            Store::Q8_0 { k, v } => {
                quantize_row_q8_0(&self.stage_k, &mut k[at..at + r]);
                quantize_row_q8_0(&self.stage_v, &mut v[at..at + r]);
            }
        }
    }

    /// Stores the row staged by the last [`rows_mut`], so that shared
    /// ([`attend_shared`]) readers see it. [`attend`] does this itself.
    ///
    /// [`rows_mut`]: Self::rows_mut
    /// [`attend_shared`]: Self::attend_shared
    /// [`attend`]: Self::attend
    pub fn flush(&mut self) {
        self.commit();
    }

    /// Attention of the query heads in `q` (whole heads of `head_dim`; those
    /// of one grouped-query group share KV head `kv_head`) over positions
    /// `first..=last` of `layer`: per head `h`,
    /// `out_h = sum_j softmax_j(q_h . K_j * scale) V_j`. `scores` is scratch of
    /// at least `heads * (last - first + 1)` elements; `out` has `q.len()`.
    /// The scores, softmax and weighted sum run on `kern`'s kernels (f32 and
    /// f16 rows are read in place by the fused `attend_f32` and `attend_f16`,
    /// the latter widening as it goes, once for all heads of the call).
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        kern: &Kernels,
        layer: usize,
        kv_head: usize,
        q: &[f32],
        first: usize,
        last: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        self.commit();
        let mut widened = std::mem::take(&mut self.scratch);
        self.attend_shared(
            kern,
            layer,
            kv_head,
            q,
            first,
            last,
            scale,
            scores,
            &mut widened,
            out,
        );
        self.scratch = widened;
    }

    /// [`attend`] on a shared cache, for several threads at once: the rows
    /// read must have been stored ([`flush`] after the last [`rows_mut`]).
    /// `widened` is scratch of at least `head_dim` elements (used by q8_0
    /// caches). Same arithmetic in the same order as [`attend`].
    ///
    /// [`attend`]: Self::attend
    /// [`flush`]: Self::flush
    /// [`rows_mut`]: Self::rows_mut
    #[allow(clippy::too_many_arguments)]
    pub fn attend_shared(
        &self,
        kern: &Kernels,
        layer: usize,
        kv_head: usize,
        q: &[f32],
        first: usize,
        last: usize,
        scale: f32,
        scores: &mut [f32],
        widened: &mut [f32],
        out: &mut [f32],
    ) {
        debug_assert!(
            self.pending.is_none_or(|(l, p)| l != layer || p > last),
            "attending over a staged row"
        );
        let hd = self.head_dim;
        let heads = q.len() / hd;
        assert!(
            heads >= 1 && q.len() == heads * hd && out.len() == q.len(),
            "attend: q ({}) and out ({}) are not the same whole heads of {hd}",
            q.len(),
            out.len()
        );
        // Row `j` of this layer starts at `at0 + (j - first) * row`.
        let at0 = self.at(layer, first);
        let off = kv_head * hd;
        let n = last - first + 1;
        let scores = &mut scores[..heads * n];
        out.fill(0.0);
        // Rows first..=last of this head, `row` elements apart.
        let (start, len) = (at0 + off, (last - first) * self.row + hd);
        match &self.store {
            Store::F32 { k, v } => {
                let (k, v) = (&k[start..start + len], &v[start..start + len]);
                (kern.attend_f32)(heads, q, k, v, self.row, scale, scores, out);
            }
            Store::F16 { k, v } => {
                let (k, v) = (&k[start..start + len], &v[start..start + len]);
                (kern.attend_f16)(heads, q, k, v, self.row, scale, scores, out);
            }
            Store::Q8_0 { k, v } => {
                // Each row is dequantized once for all heads; every head's
                // dot products, softmax and axpys run in the order of a call
                // for that head alone.
                let r = self.row;
                let row = |j: usize| at0 + (j - first) * r;
                let tmp = &mut widened[..hd];
                for (i, j) in (first..=last).enumerate() {
                    dequantize_q8_0(&k[row(j)..row(j) + r], off, tmp);
                    for (h, qh) in q.chunks_exact(hd).enumerate() {
                        scores[h * n + i] = (kern.dot_f32)(qh, tmp) * scale;
                    }
                }
                for s in scores.chunks_exact_mut(n) {
                    (kern.softmax_f32)(s);
                }
                for (i, j) in (first..=last).enumerate() {
                    dequantize_q8_0(&v[row(j)..row(j) + r], off, tmp);
                    for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
                        (kern.axpy_f32)(oh, scores[h * n + i], tmp);
                    }
                }
            }
        }
    }

    /// Moves positions `from..from + n` of every layer to `to..to + n` (`to < from`)
    /// and rotates the moved keys by `delta` positions backwards: RoPE rotations
    /// compose, so rotating a key stored for position `p` by the angles of its
    /// layer's negated inverse frequencies at position `delta` re-positions it
    /// at `p - delta`. `neg_inv_freq` holds one vector of `pairs` per RoPE kind
    /// and `layers[layer].rope` picks a layer's. f16 and q8_0 keys are widened,
    /// rotated and stored again (one extra rounding per shift).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn shift(
        &mut self,
        from: usize,
        to: usize,
        n: usize,
        neg_inv_freq: &[f32],
        pairs: usize,
        layers: &[LayerKind],
        layout: RopeLayout,
    ) {
        self.commit();
        assert!(
            to < from && from + n <= self.context,
            "kv shift out of range"
        );
        assert!(
            !self.windowed(),
            "a context shift needs every position held"
        );
        assert_eq!(layers.len(), self.n_layers, "kv shift: one kind per layer");
        let delta = from - to;
        let (r, hd, kv_dim) = (self.row, self.head_dim, self.kv_dim);
        let stage = &mut self.stage_k[..];
        let (cos, rest) = self.scratch.split_at_mut(pairs);
        let sin = &mut rest[..pairs];
        let kern = ember_kernels::arch::kernels();
        for l in 0..self.n_layers {
            let src = (self.first_row[l] as usize + from) * r;
            let dst = (self.first_row[l] as usize + to) * r;
            k::rope_angles_f32(
                delta,
                &neg_inv_freq[layers[l].rope * pairs..][..pairs],
                cos,
                sin,
            );
            let (cos, sin) = (&*cos, &*sin);
            match &mut self.store {
                Store::F32 { k, v } => {
                    k.copy_within(src..src + n * r, dst);
                    v.copy_within(src..src + n * r, dst);
                    for row in k[dst..dst + n * r].chunks_exact_mut(r) {
                        (kern.rope_f32)(row, hd, cos, sin, layout);
                    }
                }
                Store::F16 { k, v } => {
                    v.copy_within(src..src + n * r, dst);
                    for i in 0..n {
                        let (s, d) = (src + i * r, dst + i * r);
                        (kern.f16_to_f32)(&k[s..s + r], stage);
                        (kern.rope_f32)(stage, hd, cos, sin, layout);
                        for (o, x) in k[d..d + r].iter_mut().zip(stage.iter()) {
                            *o = f16::from_f32(*x);
                        }
                    }
                }
                Store::Q8_0 { k, v } => {
                    v.copy_within(src..src + n * r, dst);
                    for i in 0..n {
                        let (s, d) = (src + i * r, dst + i * r);
                        dequantize_q8_0(&k[s..s + r], 0, &mut stage[..kv_dim]);
                        (kern.rope_f32)(stage, hd, cos, sin, layout);
                        quantize_row_q8_0(stage, &mut k[d..d + r]);
                    }
                }
            }
        }
    }

    /// Whether the sliding layers no longer hold some early positions.
    pub(crate) fn trimmed(&self) -> bool {
        self.windowed() && self.base > 0
    }

    /// First position `layer` holds (0, or the sliding layers' base).
    pub(crate) fn first_held(&self, layer: usize) -> usize {
        self.layer_base(layer)
    }

    /// Bytes one stored row takes.
    pub(crate) fn row_bytes(&self) -> usize {
        self.kv_type.row_bytes(self.kv_dim)
    }

    /// Key and value bytes of positions `from..to` of `layer` (held by it;
    /// contiguous in the store).
    pub(crate) fn layer_bytes(&self, layer: usize, from: usize, to: usize) -> (&[u8], &[u8]) {
        if from == to {
            return (&[], &[]);
        }
        let at = self.at(layer, from);
        let range = at..at + (to - from) * self.row;
        match &self.store {
            Store::F32 { k, v } => (
                bytemuck::cast_slice(&k[range.clone()]),
                bytemuck::cast_slice(&v[range]),
            ),
            Store::F16 { k, v } => (
                bytemuck::cast_slice(&k[range.clone()]),
                bytemuck::cast_slice(&v[range]),
            ),
            Store::Q8_0 { k, v } => (
                bytemuck::cast_slice(&k[range.clone()]),
                bytemuck::cast_slice(&v[range]),
            ),
        }
    }

    /// Mutable key and value bytes of positions `from..to` of `layer`, for
    /// restoring a state that holds `to` positions: the sliding layers then
    /// hold positions from `to + 1 - window` (`from` must not be below that
    /// for them; see [`KvCache::restored_base`]).
    pub(crate) fn layer_bytes_mut(
        &mut self,
        layer: usize,
        from: usize,
        to: usize,
    ) -> (&mut [u8], &mut [u8]) {
        self.pending = None;
        if from == to {
            return (&mut [], &mut []);
        }
        let at = self.at(layer, from);
        let range = at..at + (to - from) * self.row;
        match &mut self.store {
            Store::F32 { k, v } => (
                bytemuck::cast_slice_mut(&mut k[range.clone()]),
                bytemuck::cast_slice_mut(&mut v[range]),
            ),
            Store::F16 { k, v } => (
                bytemuck::cast_slice_mut(&mut k[range.clone()]),
                bytemuck::cast_slice_mut(&mut v[range]),
            ),
            Store::Q8_0 { k, v } => (
                bytemuck::cast_slice_mut(&mut k[range.clone()]),
                bytemuck::cast_slice_mut(&mut v[range]),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// q8_0 error bound per element: half a quantization step of the block, plus
    /// the f16 rounding of the scale (relative 2^-11 of |x| ≤ amax).
    fn q8_bound(amax: f32) -> f32 {
        amax / 127.0 * 0.5 + amax * 1e-3
    }

    /// Every window of a row widens to `d * q` of its own elements, whatever
    /// block it starts and ends in.
    #[test]
    fn dequantize_any_window_is_scale_times_quant() {
        let x: Vec<f32> = (0..3 * QK)
            .map(|i| ((i * 29 % 31) as f32 - 15.0) * (1.0 + (i / QK) as f32))
            .collect();
        let mut b = vec![bytemuck::Zeroable::zeroed(); 3];
        quantize_row_q8_0(&x, &mut b);
        for start in 0..3 * QK {
            for len in 0..=3 * QK - start {
                let mut y = vec![f32::NAN; len];
                dequantize_q8_0(&b, start, &mut y);
                for (k, &got) in y.iter().enumerate() {
                    let (blk, i) = (&b[(start + k) / QK], (start + k) % QK);
                    let want = blk.scale() * blk.q(i) as f32;
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "start {start} len {len} at {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn q8_0_round_trip_within_half_a_step() {
        for len in [1usize, 2, 3, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 67, 129] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37)
                .collect();
            let mut b = vec![bytemuck::Zeroable::zeroed(); len.div_ceil(Q8_0_BLOCK)];
            quantize_row_q8_0(&x, &mut b);
            let mut y = vec![0.0; len];
            dequantize_q8_0(&b, 0, &mut y);
            for (c, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (a, b) in xs.iter().zip(ys) {
                    assert!(
                        (a - b).abs() <= q8_bound(amax),
                        "len {len} block {c}: {a} vs {b}"
                    );
                }
            }
            assert!(b.iter().all(|b| (0..QK).all(|j| b.q(j) != -128)));
        }
    }

    #[test]
    fn q8_0_edge_values() {
        let mut b: [BlockQ8_0; 1] = [bytemuck::Zeroable::zeroed()];
        quantize_row_q8_0(&[0.0; 32], &mut b);
        assert_eq!(b[0].qs, [0; 32]);
        assert_eq!(b[0].scale(), 0.0);
        let mut x = [0.0f32; 32];
        x[0] = -5.0;
        x[1] = 5.0;
        quantize_row_q8_0(&x, &mut b);
        assert_eq!((b[0].q(0), b[0].q(1)), (-127, 127));
    }

    /// One `attend` call for the query heads of a grouped-query group gives
    /// each head the bits of a call for that head alone, for every cache type,
    /// groups of 2 and 3, both key/value heads, short and long spans; on a
    /// q8_0 cache both equal the tier's dot/softmax/axpy composition over the
    /// dequantized rows.
    #[test]
    fn grouped_attend_equals_one_call_per_head() {
        use crate::session::arena::Alloc;
        let (hd, n_kv, context) = (40, 2, 23);
        let hp = ModelConfig::decode(&crate::format::HyperParams {
            architecture: 1,
            activation: 1,
            dim: 64,
            n_layers: 2,
            n_heads: 6,
            n_kv_heads: n_kv as u32,
            head_dim: hd as u32,
            ffn_dim: 64,
            vocab_size: 8,
            max_context: 64,
            rope_pairing: 1,
            rope_dim: 8,
            rope_theta: 10000.0,
            norm: 1,
            ..Default::default()
        })
        .unwrap();
        let kern = &ember_kernels::arch::kernels();
        let wave = |i: usize, f: f32| ((i as f32 * f).sin() * 1.7).clamp(-2.0, 2.0);
        for kv_type in KvType::ALL {
            let mut kv =
                KvCache::new_with(&hp, context, context, kv_type, &mut Alloc::Heap).unwrap();
            for layer in 0..2 {
                for pos in 0..context {
                    let (k, v) = kv.rows_mut(layer, pos);
                    let at = (layer * context + pos) * k.len();
                    k.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = wave(at + i, 0.37));
                    v.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = wave(at + i, 0.91));
                }
                kv.flush();
            }
            for (heads, kv_head, first, last) in [(2, 0, 0, 22), (3, 1, 5, 9), (3, 0, 3, 3)] {
                let span = last - first + 1;
                let q: Vec<f32> = (0..heads * hd).map(|i| wave(i, 1.3)).collect();
                let mut scores = vec![0.0; heads * context];
                let mut grouped = vec![0.0; heads * hd];
                kv.attend(
                    kern,
                    1,
                    kv_head,
                    &q,
                    first,
                    last,
                    0.2,
                    &mut scores,
                    &mut grouped,
                );
                let what = format!("{kv_type:?} heads {heads} kv_head {kv_head} {first}..={last}");
                for h in 0..heads {
                    let qh = &q[h * hd..][..hd];
                    let mut alone = vec![0.0; hd];
                    kv.attend(
                        kern,
                        1,
                        kv_head,
                        qh,
                        first,
                        last,
                        0.2,
                        &mut scores,
                        &mut alone,
                    );
                    let got = &grouped[h * hd..][..hd];
                    assert!(
                        got.iter()
                            .zip(&alone)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: head {h}"
                    );
                    if kv_type != KvType::Q8_0 {
                        continue;
                    }
                    // The composition over the dequantized rows of this head.
                    let Store::Q8_0 { k, v } = &kv.store else {
                        unreachable!()
                    };
                    let deq = |rows: &[BlockQ8_0]| -> Vec<f32> {
                        let mut all = vec![0.0; span * hd];
                        for (i, j) in (first..=last).enumerate() {
                            let r = (context + j) * kv.row;
                            let dst = &mut all[i * hd..][..hd];
                            dequantize_q8_0(&rows[r..r + kv.row], kv_head * hd, dst);
                        }
                        all
                    };
                    let (kd, vd) = (deq(k), deq(v));
                    let mut want = vec![0.0; hd];
                    ember_kernels::scalar::attend_with(
                        (kern.dot_f32, kern.softmax_f32, kern.axpy_f32),
                        1,
                        (qh, &kd, &vd, hd, 0.2),
                        &mut vec![0.0; span],
                        &mut want,
                    );
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: head {h} against the composition"
                    );
                }
            }
        }
    }

    /// A cache too large for the address space is `Error::OutOfMemory`
    /// (checked before any allocation is tried), for every KV type; its
    /// size saturates instead of wrapping to something small.
    #[test]
    fn an_impossible_context_is_out_of_memory() {
        use crate::session::arena::Alloc;
        let cfg = ModelConfig::decode(&crate::format::HyperParams {
            architecture: 1,
            activation: 1,
            dim: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            ffn_dim: 64,
            vocab_size: 8,
            max_context: 64,
            rope_pairing: 1,
            rope_dim: 16,
            rope_theta: 10000.0,
            norm: 1,
            ..Default::default()
        })
        .unwrap();
        for kv_type in KvType::ALL {
            for context in [usize::MAX / 8, usize::MAX] {
                let r = KvCache::new_with(&cfg, context, context, kv_type, &mut Alloc::Heap);
                assert!(
                    matches!(r, Err(Error::OutOfMemory { .. })),
                    "{kv_type:?} context {context}"
                );
                assert_eq!(
                    KvCache::bytes_required(&cfg, context, context, kv_type),
                    usize::MAX
                );
            }
        }
    }

    #[test]
    fn kv_type_names_round_trip() {
        for t in KvType::ALL {
            assert_eq!(KvType::from_name(t.name()).unwrap(), t);
            assert_eq!(KvType::from_id(t.id()), Some(t));
        }
        assert!(KvType::from_name("q4_0").is_err());
    }
}
