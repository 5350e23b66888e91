//! A decoding session: the per-conversation state over a shared model.
//!
//! Every buffer (activations, KV cache, token history, RoPE tables, logits) is
//! sized from the hyperparameters and the [`SessionConfig`] at creation, on the
//! heap ([`Session::new`]) or inside a caller's byte arena ([`Session::new_in`]).
//! After that, `step`, `prefill`, `truncate`, context shifts and snapshot writes
//! never touch the allocator.

pub(crate) mod arena;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::format::HyperParams;
use crate::forward::{forward, forward_rows, Activations};
use crate::kv_cache::KvCache;
pub use crate::kv_cache::KvType;
use crate::lora::{ActiveLora, InputObserver, LoraAdapter};
use crate::model::Model;
use crate::pool::Pool;
use crate::rope::inverse_frequencies;
use arena::{arena_size, Alloc, Arena, Slab};

/// Upper bound on [`SessionConfig::threads`] (a sanity limit for bad input).
pub const MAX_THREADS: usize = 1024;

/// What a session does when a token arrives and the context is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextPolicy {
    /// Refuse the token with `Error::ContextFull` (the default).
    #[default]
    Error,
    /// Keep the first `keep` tokens, drop the oldest half of the rest, move the
    /// remainder down and re-rotate its keys (RoPE) to the new positions, then go
    /// on. Needs `keep + 2 <= context`.
    Shift { keep: usize },
}

impl ContextPolicy {
    /// `error` or `shift`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Shift { .. } => "shift",
        }
    }
}

/// Session settings fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Maximum number of positions (tokens) held in the KV cache; 1..=the model's
    /// `max_context`.
    pub context: usize,
    /// Element type of the KV cache (default f16).
    pub kv_type: KvType,
    /// Threads for the forward pass, 1..=[`MAX_THREADS`]: the caller plus
    /// `threads - 1` workers started at creation (`crate::pool`), which split the
    /// rows of large matrix-vector products. Results do not depend on it (rows are
    /// split on 4-row boundaries; each row's reduction order is fixed).
    pub threads: usize,
    /// Tokens per prefill batch, >= 1: `prefill` runs up to
    /// `min(batch, forward::MAX_BATCH)` tokens through each layer together
    /// (the buffers for them are part of the session); 1 feeds token by token.
    /// Results do not depend on it.
    pub batch: usize,
    /// What to do when the context is full.
    pub context_policy: ContextPolicy,
}

impl Default for SessionConfig {
    /// 512 positions, f16 KV, one thread, batches of 512, error when full.
    fn default() -> Self {
        Self {
            context: 512,
            kv_type: KvType::F16,
            threads: 1,
            batch: 512,
            context_policy: ContextPolicy::Error,
        }
    }
}

impl SessionConfig {
    /// The default config with `context` positions.
    pub fn new(context: usize) -> Self {
        Self {
            context,
            ..Self::default()
        }
    }

    /// Checks the config against a model: context in 1..=max_context, threads in
    /// 1..=MAX_THREADS, batch >= 1, a shift policy that leaves room to shift.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.context == 0 || self.context > cfg.max_context {
            return bad(format!(
                "context {} must be in 1..={} (the model's maximum)",
                self.context, cfg.max_context
            ));
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return bad(format!(
                "threads {} must be in 1..={MAX_THREADS}",
                self.threads
            ));
        }
        if self.batch == 0 {
            return bad("prefill batch size must be at least 1".into());
        }
        validate_policy(self.context_policy, self.context)
    }
}

fn validate_policy(policy: ContextPolicy, context: usize) -> Result<()> {
    match policy {
        ContextPolicy::Shift { keep } if keep + 2 > context => Err(Error::InvalidArgument(
            format!("context shift keeps {keep} tokens but needs keep + 2 <= context ({context})"),
        )),
        _ => Ok(()),
    }
}

/// Per-conversation state: position, token history, KV cache and activation
/// buffers. Borrows the arena it was created in for `'a` (`'static` on the heap).
/// `Send`; many sessions can share one `Arc<Model>`.
pub struct Session<'a> {
    model: Arc<Model>,
    config: SessionConfig,
    /// Next position to be written = number of tokens in the cache.
    pos: usize,
    /// `[context]` tokens at positions `0..pos`.
    tokens: Slab<'a, u32>,
    /// `[kinds * rope_dim / 2]` negated inverse frequencies of each RoPE kind
    /// (a context shift rotates keys back).
    neg_inv_freq: Slab<'a, f32>,
    /// Activation buffers for `Activations::capacity(config.batch)` tokens
    /// and the logits (from the same allocator as the rest).
    buffers: Activations<'a>,
    /// `config.threads - 1` workers for the large matrix-vector products,
    /// started here so that decoding allocates nothing.
    pool: Pool,
    kv: KvCache<'a>,
    /// True when `logits()` belongs to the token at `pos - 1`.
    has_logits: bool,
    /// Context shifts performed since creation.
    shifts: usize,
}

impl Session<'static> {
    /// Creates a session with every buffer allocated on the heap up front
    /// ([`Session::memory_required`] bytes).
    pub fn new(model: Arc<Model>, config: SessionConfig) -> Result<Self> {
        Session::create(model, config, &mut Alloc::Heap)
    }
}

impl<'a> Session<'a> {
    /// Creates a session whose buffers (KV cache, token history, RoPE tables,
    /// activations, logits) all live in `arena` (at least
    /// [`Session::arena_bytes_required`] bytes, any alignment). With one thread
    /// nothing is taken from the heap; with more, only the worker threads
    /// ([`Session::arena_heap_bytes`]). Afterwards nothing is allocated.
    pub fn new_in(model: Arc<Model>, config: SessionConfig, arena: &'a mut [u8]) -> Result<Self> {
        config.validate(model.config())?;
        let need = Self::arena_bytes_required(model.config(), &config);
        if arena.len() < need {
            return Err(Error::InvalidArgument(format!(
                "session arena has {} bytes but {need} are required",
                arena.len()
            )));
        }
        let mut arena = Arena::new(arena);
        Session::create(model, config, &mut Alloc::Arena(&mut arena))
    }

    /// Allocates every buffer. A heap allocation the system refuses is
    /// `Error::OutOfMemory` naming the buffer and the setting to lower; a
    /// heap session larger than the address space is refused before anything
    /// is allocated.
    fn create(model: Arc<Model>, config: SessionConfig, alloc: &mut Alloc<'_, 'a>) -> Result<Self> {
        let cfg = model.config();
        config.validate(cfg)?;
        let context = config.context;
        if matches!(alloc, Alloc::Heap) {
            Self::check_addressable(cfg, &config)?;
        }
        let window_rows = Self::window_rows(cfg, &config);
        let kv_bytes = KvCache::bytes_required(cfg, context, window_rows, config.kv_type);
        let kv_hint = if config.kv_type == KvType::Q8_0 {
            "lower the context"
        } else {
            "lower the context or use a smaller KV type (q8_0)"
        };
        let kv = KvCache::new_with(cfg, context, window_rows, config.kv_type, alloc).map_err(
            relabel_oom(
                format!("the KV cache (context {context})"),
                kv_bytes,
                kv_hint,
            ),
        )?;
        let mut tokens: Slab<'a, u32> = alloc.zeroed(context).map_err(relabel_oom(
            format!("the token history (context {context})"),
            context.saturating_mul(4),
            "lower the context",
        ))?;
        tokens.fill(0);
        let inv = inverse_frequencies(&model);
        let mut neg_inv_freq: Slab<'a, f32> = alloc.zeroed(cfg.ropes.len() * cfg.rope_pairs())?;
        for (d, s) in neg_inv_freq.iter_mut().zip(inv.iter().flatten()) {
            *d = -s;
        }
        let cap = Activations::capacity(config.batch);
        let act_bytes = Activations::buffer_sizes(cfg, cap, context)
            .into_iter()
            .fold(0, usize::saturating_add);
        let buffers =
            Activations::new_with(cfg, cap, context, &inv, alloc).map_err(relabel_oom(
                format!("the activations (context {context}, batch {cap})"),
                act_bytes,
                "lower the context or the batch",
            ))?;
        drop(inv);
        let pool = Pool::new(config.threads).map_err(|e| pool_error(config.threads, e))?;
        Ok(Self {
            config,
            pos: 0,
            tokens,
            neg_inv_freq,
            buffers,
            pool,
            kv,
            has_logits: false,
            shifts: 0,
            model,
        })
    }

    /// Refuses a heap session whose buffers add up to more than `isize::MAX`
    /// bytes (the most one allocation, and in practice one process, can
    /// address), before anything is allocated.
    fn check_addressable(cfg: &ModelConfig, config: &SessionConfig) -> Result<()> {
        let total = Self::memory_required(cfg, config);
        if total > isize::MAX as usize {
            return Err(Error::out_of_memory(
                format!("a session (context {})", config.context),
                saturated_u64(total),
                "lower the context",
            ));
        }
        Ok(())
    }

    /// Rows the KV cache keeps for each sliding-window layer: its window and a
    /// pass (`kv_cache::window_rows`), or the whole context for a session that
    /// may shift its context (a shift re-positions every row).
    fn window_rows(cfg: &ModelConfig, config: &SessionConfig) -> usize {
        let shift = matches!(config.context_policy, ContextPolicy::Shift { .. });
        crate::kv_cache::window_rows(
            cfg,
            config.context,
            Activations::capacity(config.batch),
            shift,
        )
    }

    /// Sizes in bytes of the buffers `create` takes from its allocator, in
    /// order (each saturating at `usize::MAX`).
    fn own_buffer_sizes(cfg: &ModelConfig, config: &SessionConfig) -> Vec<usize> {
        let mut sizes = KvCache::buffer_sizes(
            cfg,
            config.context,
            Self::window_rows(cfg, config),
            config.kv_type,
        )
        .to_vec();
        sizes.push(config.context.saturating_mul(4));
        sizes.push(4 * cfg.ropes.len() * cfg.rope_pairs());
        sizes.extend(Activations::buffer_sizes(
            cfg,
            Activations::capacity(config.batch),
            config.context,
        ));
        sizes
    }

    /// Bytes a heap session ([`Session::new`]) for `hp` and `config` keeps
    /// allocated: exactly the sum of its buffers (KV cache, token history, RoPE
    /// tables, activations, logits); `usize::MAX` when that does not fit a
    /// `usize` (such a session cannot be created). Does not validate `config`.
    pub fn memory_required(cfg: &ModelConfig, config: &SessionConfig) -> usize {
        Self::own_buffer_sizes(cfg, config)
            .into_iter()
            .fold(0, usize::saturating_add)
    }

    /// Bytes [`Session::new_in`] needs in its arena: every buffer of
    /// [`Session::memory_required`], each padded to 64 bytes, plus 63 for
    /// aligning the start (saturating at `usize::MAX`).
    pub fn arena_bytes_required(cfg: &ModelConfig, config: &SessionConfig) -> usize {
        arena_size(&Self::own_buffer_sizes(cfg, config))
    }

    /// Bytes [`Session::new_in`] takes from the heap besides the arena: 0 (every
    /// buffer is in the arena; worker threads for `threads > 1` are not counted).
    pub fn arena_heap_bytes(_cfg: &ModelConfig, _config: &SessionConfig) -> usize {
        0
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
    /// Number of tokens in the cache (= the position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// The tokens in the cache, positions `0..pos`.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens[..self.pos]
    }
    /// Logits predicting the token after position `pos - 1`: valid after `step`,
    /// `prefill` or a `load_state` that carried them; see [`has_logits`](Self::has_logits).
    pub fn logits(&self) -> &[f32] {
        self.buffers.logits()
    }
    /// True when [`logits`](Self::logits) belongs to the last token in the cache
    /// (false after `reset`, `truncate`, or before the first token).
    pub fn has_logits(&self) -> bool {
        self.has_logits
    }
    /// Number of context shifts performed so far.
    pub fn context_shifts(&self) -> usize {
        self.shifts
    }

    /// Changes what happens when the context is full (e.g. `keep` = the length of
    /// a system prompt once it is known).
    pub fn set_context_policy(&mut self, policy: ContextPolicy) -> Result<()> {
        validate_policy(policy, self.config.context)?;
        if matches!(policy, ContextPolicy::Shift { .. }) && self.kv.windowed() {
            return Err(Error::InvalidArgument(
                "a context shift needs the whole context in every layer, but this session's \
                 sliding-window layers keep only their window: create it with the shift policy"
                    .into(),
            ));
        }
        self.config.context_policy = policy;
        Ok(())
    }

    /// Attaches a LoRA adapter (`None` detaches it): from now on every targeted
    /// matrix product adds `adapter.scale() * scale * B (A x)`, as PEFT does.
    /// Validates the adapter against the model (layers, ranks, shapes) and
    /// allocates its scratch (`rank` floats, on the heap also for arena
    /// sessions) here, so decoding still allocates nothing. The
    /// session is reset: its cached keys and values were computed without this
    /// adapter. On error the session is unchanged.
    pub fn set_lora(&mut self, adapter: Option<Arc<LoraAdapter>>, scale: f32) -> Result<()> {
        self.buffers.hooks.adapter = match adapter {
            Some(a) => Some(ActiveLora::new(a, scale, self.model.hparams())?),
            None => None,
        };
        self.reset();
        Ok(())
    }

    /// The attached LoRA adapter, if any.
    pub fn lora(&self) -> Option<&ActiveLora> {
        self.buffers.hooks.adapter.as_ref()
    }

    /// Attaches (or with `None` detaches) an observer that sees the input of
    /// every per-layer matrix product of later tokens (`lora::InputObserver`),
    /// returning the previous one. Results are unchanged.
    pub fn set_observer(
        &mut self,
        observer: Option<Box<dyn InputObserver>>,
    ) -> Option<Box<dyn InputObserver>> {
        std::mem::replace(&mut self.buffers.hooks.observer, observer)
    }

    /// Forgets every token (the cache is overwritten lazily).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.has_logits = false;
        self.kv.clear();
    }

    /// Whether [`truncate`](Self::truncate) to `len` tokens is possible: always,
    /// unless the sliding-window layers keep only their window and no longer
    /// hold what position `len` attends to (then reset and feed the tokens).
    pub fn can_rewind_to(&self, len: usize) -> bool {
        len >= self.pos || self.kv.can_rewind_to(len)
    }

    /// Rewinds to `len` tokens (`len <= pos`): later positions are forgotten.
    /// The logits are stale afterwards; feed a token to get fresh ones.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.pos {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {len} tokens: the session holds {}",
                self.pos
            )));
        }
        if len < self.pos && !self.kv.can_rewind_to(len) {
            return Err(Error::InvalidArgument(format!(
                "cannot rewind to {len} tokens: the sliding-window layers no longer hold the \
                 positions its next token attends to (reset and feed the tokens again)"
            )));
        }
        if len == 0 {
            self.kv.clear();
        }
        if len < self.pos {
            self.pos = len;
            self.has_logits = false;
        }
        Ok(())
    }

    fn check_token(&self, token: u32) -> Result<()> {
        let vocab = self.model.hparams().vocab_size;
        if token >= vocab {
            return Err(Error::TokenOutOfRange { id: token, vocab });
        }
        Ok(())
    }

    /// Makes room for one token per the context policy (the caller checked that
    /// the shift policy is in force when the context is full).
    fn make_room(&mut self) -> Result<()> {
        if self.pos < self.config.context {
            return Ok(());
        }
        match self.config.context_policy {
            ContextPolicy::Error => Err(Error::ContextFull {
                needed: self.pos + 1,
                capacity: self.config.context,
            }),
            ContextPolicy::Shift { keep } => {
                self.shift(keep);
                Ok(())
            }
        }
    }

    /// Drops the oldest half of the tokens after the first `keep` (at least one
    /// token), moving the rest down and re-rotating their keys.
    fn shift(&mut self, keep: usize) {
        let keep = keep.min(self.pos);
        let left = self.pos - keep;
        let discard = (left / 2).max(1).min(left);
        if discard == 0 {
            return;
        }
        let moved = left - discard;
        if moved > 0 {
            let cfg = self.model.config();
            self.kv.shift(
                keep + discard,
                keep,
                moved,
                &self.neg_inv_freq,
                cfg.rope_pairs(),
                &cfg.layers,
                cfg.rope_layout(),
            );
        }
        self.tokens.copy_within(keep + discard..self.pos, keep);
        self.pos -= discard;
        self.shifts += 1;
    }

    /// Runs one validated token (room already made).
    fn run(&mut self, token: u32) {
        forward(
            &self.model,
            &mut self.buffers,
            &mut self.kv,
            &mut self.pool,
            token,
            self.pos,
        );
        self.tokens[self.pos] = token;
        self.pos += 1;
        self.has_logits = true;
    }

    /// Feeds `token` at the next position and returns the logits predicting the
    /// token after it. Errors (without changing state) if the token id is out of
    /// range, or if the context is full under `ContextPolicy::Error`; under
    /// `Shift`, a full context is shifted first.
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.check_token(token)?;
        self.make_room()?;
        self.run(token);
        Ok(self.buffers.logits())
    }

    /// Same as [`step`](Self::step) (the name the evaluation code uses).
    pub fn forward(&mut self, token: u32) -> Result<&[f32]> {
        self.step(token)
    }

    /// Feeds `tokens` (non-empty) in batches of `config.batch` and returns the
    /// logits after the last. Validates every token and, under the error policy,
    /// the capacity before changing any state.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.prefill_passes(tokens, None)?;
        Ok(self.buffers.logits())
    }

    /// [`prefill`](Self::prefill), also passing the logits after every token to
    /// `on_logits(i, logits)` in order (`i` indexes `tokens`), as evaluation
    /// needs (perplexity, KL divergence): the same passes, with the output
    /// matrix applied to every row by matrix-matrix products. Allocates a
    /// scratch of `forward::LOGIT_ROWS` rows of the vocabulary per call.
    pub fn prefill_with_logits(
        &mut self,
        tokens: &[u32],
        on_logits: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let rows = crate::forward::LOGIT_ROWS.min(tokens.len());
        let mut scratch = Vec::new();
        let len = rows * self.model.config().vocab_size;
        scratch
            .try_reserve_exact(len)
            .map_err(|_| Error::out_of_memory("the logits of a pass", (len * 4) as u64, ""))?;
        scratch.resize(len, 0.0);
        self.prefill_passes(tokens, Some((&mut scratch, on_logits)))
    }

    /// The passes of [`prefill`](Self::prefill); with `all_logits`, every
    /// token's logits go to its callback (indexes into `tokens`).
    #[allow(clippy::type_complexity)] // a scratch and a callback, used once
    fn prefill_passes(
        &mut self,
        tokens: &[u32],
        mut all_logits: Option<(&mut [f32], &mut dyn FnMut(usize, &[f32]))>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument(
                "prefill needs at least one token".into(),
            ));
        }
        for &t in tokens {
            self.check_token(t)?;
        }
        if self.config.context_policy == ContextPolicy::Error
            && self.pos + tokens.len() > self.config.context
        {
            return Err(Error::ContextFull {
                needed: self.pos + tokens.len(),
                capacity: self.config.context,
            });
        }
        // Batches of up to `batch.cap()` tokens that fit the context; a full
        // context is shifted (per the policy) exactly when token-by-token
        // feeding would shift it.
        let mut rest = tokens;
        while !rest.is_empty() {
            self.make_room()?;
            let n = rest
                .len()
                .min(self.buffers.cap())
                .min(self.config.context - self.pos);
            let (now, later) = rest.split_at(n);
            let done = tokens.len() - rest.len();
            match &mut all_logits {
                None => forward_rows(
                    &self.model,
                    &mut self.buffers,
                    &mut self.kv,
                    &mut self.pool,
                    now,
                    self.pos,
                ),
                Some((scratch, on_logits)) => crate::forward::forward_rows_with_logits(
                    &self.model,
                    &mut self.buffers,
                    &mut self.kv,
                    &mut self.pool,
                    now,
                    self.pos,
                    scratch,
                    &mut |i, row| on_logits(done + i, row),
                ),
            }
            self.tokens[self.pos..self.pos + n].copy_from_slice(now);
            self.pos += n;
            self.has_logits = true;
            rest = later;
        }
        Ok(())
    }

    /// Writes the state (tokens, last logits, KV rows `0..pos`) and `app_data`
    /// (opaque bytes the application wants back, e.g. a chat history) to `path`
    /// in the prompt-cache format; see [`write_state`](Self::write_state).
    pub fn save_state(&self, path: &Path, app_data: &[u8]) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        self.write_state(&mut w, app_data).map_err(io)?;
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)
    }

    /// Restores a state written by [`save_state`](Self::save_state) and returns
    /// its application data. The file must come from the same model file (header
    /// checksum and hyperparameters) and KV type, and hold at most `context`
    /// tokens; anything else, a truncated or a corrupt file (CRC) is a clear
    /// error, after which the session is reset.
    pub fn load_state(&mut self, path: &Path) -> Result<Vec<u8>> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.read_state(std::io::BufReader::new(file))
            .map_err(|e| match e {
                Error::InvalidArgument(m) => {
                    Error::InvalidArgument(format!("prompt cache {}: {m}", path.display()))
                }
                e => e,
            })
    }

    /// Writes the prompt-cache format (little-endian):
    /// a 208-byte header (magic `89 45 4D 42 4B 56 0D 0A`, version, the model's
    /// header checksum and hyperparameters, KV type id, flags (bit 0: logits
    /// present; bit 1: the sliding-window layers' rows before their window are
    /// zeros), context, pos, app-data length), then `pos` u32 tokens, the
    /// logits (`vocab_size` f32) if present, for each layer the key then the
    /// value rows `0..pos` in the KV type's layout, the app data, and a CRC-32
    /// (IEEE) of everything before it.
    pub fn write_state<W: Write>(&self, w: W, app_data: &[u8]) -> std::io::Result<()> {
        let model = &self.model;
        let header = StateHeader {
            magic: STATE_MAGIC,
            version: STATE_VERSION,
            model_checksum: model.file().header.header_checksum,
            hparams: *model.hparams(),
            kv_type: self.config.kv_type.id(),
            flags: (if self.has_logits { STATE_HAS_LOGITS } else { 0 })
                | (if self.kv.trimmed() { STATE_TRIMMED } else { 0 }),
            context: self.config.context as u64,
            pos: self.pos as u64,
            app_data_len: app_data.len() as u64,
            reserved: [0; 4],
        };
        let mut w = CrcWriter {
            inner: w,
            crc: crc32fast::Hasher::new(),
        };
        w.write_all(bytemuck::bytes_of(&header))?;
        w.write_all(bytemuck::cast_slice(self.tokens()))?;
        if self.has_logits {
            w.write_all(bytemuck::cast_slice(self.logits()))?;
        }
        // Positions a sliding layer no longer holds (never attended to again)
        // are written as zeros, so the layout stays rows 0..pos per layer.
        let zeros = [0u8; 4096];
        let write_zeros = |w: &mut CrcWriter<W>, mut n: usize| -> std::io::Result<()> {
            while n > 0 {
                let k = n.min(zeros.len());
                w.write_all(&zeros[..k])?;
                n -= k;
            }
            Ok(())
        };
        let row = self.kv.row_bytes();
        for l in 0..model.hparams().n_layers as usize {
            let from = self.kv.first_held(l).min(self.pos);
            let (k, v) = self.kv.layer_bytes(l, from, self.pos);
            write_zeros(&mut w, from * row)?;
            w.write_all(k)?;
            write_zeros(&mut w, from * row)?;
            w.write_all(v)?;
        }
        w.write_all(app_data)?;
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        w.inner.flush()
    }

    /// Reads the format of [`write_state`](Self::write_state); see
    /// [`load_state`](Self::load_state) for the checks. On error the session is reset.
    pub fn read_state<R: Read>(&mut self, r: R) -> Result<Vec<u8>> {
        let result = self.read_state_inner(r);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn read_state_inner<R: Read>(&mut self, r: R) -> Result<Vec<u8>> {
        let bad = |m: String| Error::InvalidArgument(m);
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bad("the prompt cache is truncated".into())
            } else {
                bad(format!("cannot read the prompt cache: {e}"))
            }
        };
        let mut r = CrcReader {
            inner: r,
            crc: crc32fast::Hasher::new(),
        };
        let mut hb = [0u8; std::mem::size_of::<StateHeader>()];
        r.read_exact(&mut hb).map_err(io)?;
        let h: StateHeader = bytemuck::pod_read_unaligned(&hb);
        if h.magic != STATE_MAGIC {
            return Err(bad("not an Ember prompt cache (bad magic bytes)".into()));
        }
        if h.version != STATE_VERSION {
            return Err(bad(format!(
                "prompt cache version {} is not the supported {STATE_VERSION}",
                h.version
            )));
        }
        let hp = *self.model.hparams();
        if h.model_checksum != self.model.file().header.header_checksum || h.hparams != hp {
            return Err(bad(
                "the prompt cache was saved for a different model file".into()
            ));
        }
        let kv_type = KvType::from_id(h.kv_type)
            .ok_or_else(|| bad(format!("unknown KV type id {}", h.kv_type)))?;
        if kv_type != self.config.kv_type {
            return Err(bad(format!(
                "the prompt cache holds a {} KV cache but this session uses {}",
                kv_type.name(),
                self.config.kv_type.name()
            )));
        }
        if h.flags & !(STATE_HAS_LOGITS | STATE_TRIMMED) != 0 {
            return Err(bad(format!("unknown flags {:#x}", h.flags)));
        }
        if h.flags & STATE_TRIMMED != 0
            && matches!(self.config.context_policy, ContextPolicy::Shift { .. })
        {
            return Err(bad(
                "the prompt cache holds only the sliding windows of its sliding-window layers; \
                 a session with the shift context policy needs every position"
                    .into(),
            ));
        }
        if h.pos > self.config.context as u64 {
            return Err(bad(format!(
                "the prompt cache holds {} tokens but the session context is {}",
                h.pos, self.config.context
            )));
        }
        if h.app_data_len > MAX_APP_DATA {
            return Err(bad(format!(
                "application data of {} bytes exceeds the {MAX_APP_DATA}-byte limit",
                h.app_data_len
            )));
        }
        let pos = h.pos as usize;
        self.pos = 0;
        self.has_logits = false;
        r.read_exact(bytemuck::cast_slice_mut(&mut self.tokens[..pos]))
            .map_err(io)?;
        let has_logits = h.flags & STATE_HAS_LOGITS != 0;
        if has_logits {
            r.read_exact(bytemuck::cast_slice_mut(&mut self.buffers.logits))
                .map_err(io)?;
        }
        self.kv.restored_base(pos);
        let row = self.kv.row_bytes() as u64;
        for l in 0..hp.n_layers as usize {
            let from = self.kv.first_held(l).min(pos);
            let skip = from as u64 * row;
            let discard = |r: &mut CrcReader<R>| -> Result<()> {
                let copied =
                    std::io::copy(&mut r.by_ref().take(skip), &mut std::io::sink()).map_err(io)?;
                if copied != skip {
                    return Err(bad("the prompt cache is truncated".into()));
                }
                Ok(())
            };
            discard(&mut r)?;
            let (k, _) = self.kv.layer_bytes_mut(l, from, pos);
            r.read_exact(k).map_err(io)?;
            discard(&mut r)?;
            let (_, v) = self.kv.layer_bytes_mut(l, from, pos);
            r.read_exact(v).map_err(io)?;
        }
        // Reserved fallibly: the length comes from the file (bounded above).
        let mut app = Vec::new();
        app.try_reserve_exact(h.app_data_len as usize)
            .map_err(|_| {
                Error::out_of_memory("the application data of a prompt cache", h.app_data_len, "")
            })?;
        let got = r
            .by_ref()
            .take(h.app_data_len)
            .read_to_end(&mut app)
            .map_err(io)?;
        if got as u64 != h.app_data_len {
            return Err(bad("the prompt cache is truncated".into()));
        }
        let computed = r.crc.clone().finalize();
        let mut stored = [0u8; 4];
        r.inner.read_exact(&mut stored).map_err(io)?;
        if u32::from_le_bytes(stored) != computed {
            return Err(bad("checksum mismatch: the prompt cache is corrupt".into()));
        }
        let mut extra = [0u8; 1];
        if r.inner.read(&mut extra).map_err(io)? != 0 {
            return Err(bad("trailing bytes after the prompt cache".into()));
        }
        if let Some(&t) = self.tokens[..pos].iter().find(|&&t| t >= hp.vocab_size) {
            return Err(bad(format!("token id {t} is out of range")));
        }
        self.pos = pos;
        self.has_logits = has_logits;
        Ok(app)
    }
}

/// `n` as a byte count for `Error::OutOfMemory`: `usize::MAX` is a saturated
/// size, shown as "more than the address space".
fn saturated_u64(n: usize) -> u64 {
    if n == usize::MAX {
        u64::MAX
    } else {
        n as u64
    }
}

/// Renames the "a session buffer" of an allocation failure (`arena::Alloc`)
/// to `what`, the whole component of `bytes`, with `hint`; other errors pass.
fn relabel_oom(what: String, bytes: usize, hint: &'static str) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::OutOfMemory { .. } => Error::out_of_memory(what, saturated_u64(bytes), hint),
        e => e,
    }
}

/// The error of a worker pool that could not start: a thread the system had
/// no memory (or thread quota, which reports the same EAGAIN) for is
/// `Error::OutOfMemory` for its stack.
fn pool_error(threads: usize, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    let workers = threads.saturating_sub(1);
    match e.kind() {
        ErrorKind::OutOfMemory | ErrorKind::WouldBlock => Error::out_of_memory(
            format!("the stacks of {workers} worker threads (threads {threads})"),
            (workers as u64).saturating_mul(crate::pool::WORKER_STACK as u64),
            format!("lower the threads ({e})"),
        ),
        _ => Error::InvalidArgument(format!("cannot start {threads} threads: {e}")),
    }
}

/// `\x89EMBKV\r\n`: the prompt-cache magic.
pub const STATE_MAGIC: [u8; 8] = *b"\x89EMBKV\r\n";
/// Prompt-cache format version.
pub const STATE_VERSION: u32 = 1;
const STATE_HAS_LOGITS: u32 = 1;
/// Flag: the sliding-window layers' rows before their window are zeros (the
/// saving session no longer held them).
const STATE_TRIMMED: u32 = 2;
/// Largest application-data section accepted (bounds memory for hostile files).
pub const MAX_APP_DATA: u64 = 64 << 20;

/// The prompt-cache header (208 bytes, little-endian).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StateHeader {
    magic: [u8; 8],
    version: u32,
    /// `header_checksum` of the model file the state was computed with.
    model_checksum: u32,
    hparams: HyperParams,
    /// `KvType::id`.
    kv_type: u32,
    flags: u32,
    /// Context of the saving session (informational).
    context: u64,
    /// Number of tokens.
    pos: u64,
    app_data_len: u64,
    reserved: [u64; 4],
}
const _: () = assert!(std::mem::size_of::<StateHeader>() == 208);

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}
impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}
impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Index of the largest logit (the first one on ties); 0 for an empty slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest model sizes a file may declare (`config.rs` limits): at
    /// its largest context an f32 KV cache needs 2^63 bytes, past what a
    /// 64-bit process can address.
    fn widest() -> ModelConfig {
        ModelConfig::decode(&HyperParams {
            architecture: 1,
            activation: 1,
            dim: 64,
            n_layers: 4096,
            n_heads: 4096,
            n_kv_heads: 4096,
            head_dim: 4096,
            ffn_dim: 64,
            vocab_size: 8,
            max_context: 1 << 24,
            rope_pairing: 1,
            rope_dim: 64,
            rope_theta: 10000.0,
            norm: 1,
            ..Default::default()
        })
        .unwrap()
    }

    /// Sizes saturate instead of wrapping, and a heap session that large is
    /// `Error::OutOfMemory` naming the context, before any allocation.
    #[test]
    fn an_unaddressable_session_is_out_of_memory() {
        let cfg = widest();
        let config = SessionConfig {
            kv_type: KvType::F32,
            ..SessionConfig::new(1 << 24)
        };
        config.validate(&cfg).unwrap();
        let total = Session::memory_required(&cfg, &config);
        assert!(total > isize::MAX as usize, "{total}");
        assert!(Session::arena_bytes_required(&cfg, &config) >= total);
        match Session::check_addressable(&cfg, &config) {
            Err(e @ Error::OutOfMemory { .. }) => assert_eq!(
                e.to_string(),
                "cannot allocate 8.0 EiB for a session (context 16777216): lower the context"
            ),
            r => panic!("{r:?}"),
        }
        let small = SessionConfig::new(64);
        Session::check_addressable(&cfg, &small).unwrap();
    }

    /// A worker thread the system has no memory (or quota) for is
    /// `Error::OutOfMemory` for the stacks; other spawn errors stay arguments.
    #[test]
    fn a_pool_that_cannot_start_names_its_stacks() {
        use std::io::{Error as IoError, ErrorKind};
        for kind in [ErrorKind::WouldBlock, ErrorKind::OutOfMemory] {
            match pool_error(4, IoError::from(kind)) {
                Error::OutOfMemory { what, bytes, hint } => {
                    assert_eq!(what, "the stacks of 3 worker threads (threads 4)");
                    assert_eq!(bytes, 3 * crate::pool::WORKER_STACK as u64);
                    assert!(hint.starts_with("lower the threads"), "{hint}");
                }
                e => panic!("{kind:?}: {e}"),
            }
        }
        assert!(matches!(
            pool_error(2, IoError::from(ErrorKind::InvalidInput)),
            Error::InvalidArgument(_)
        ));
    }

    /// `relabel_oom` names the component and keeps other errors.
    #[test]
    fn allocation_failures_are_relabelled_with_the_setting_to_lower() {
        let e = relabel_oom(
            "the KV cache (context 9)".into(),
            1 << 30,
            "lower the context",
        )(Error::out_of_memory("a session buffer", 4, ""));
        assert_eq!(
            e.to_string(),
            "cannot allocate 1.0 GiB for the KV cache (context 9): lower the context"
        );
        let e = relabel_oom("x".into(), 1, "y")(Error::BigEndianHost);
        assert!(matches!(e, Error::BigEndianHost));
    }
}
