//! Sessions, samplers and generation.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ember_runtime::generate::{GenerateConfig, Generator, PrefillOptions, StopReason};
use ember_runtime::{ContextPolicy, KvType, Sampler, SamplerConfig, Session, SessionConfig};

use crate::model::{ember_model, ember_token, model_ref, out_handle, EMBER_TOKEN_NONE};
use crate::ptr::{self, Versioned};
use crate::{
    boundary, boundary_void, ember_status, try_string, try_vec, CError, CResult,
    EMBER_ERR_BUFFER_TOO_SMALL, EMBER_ERR_CONTEXT_FULL, EMBER_ERR_FORMAT, EMBER_ERR_STATE,
};

// ------------------------------------------------------------------ config

pub const EMBER_KV_F32: u32 = 0;
pub const EMBER_KV_F16: u32 = 1;
pub const EMBER_KV_Q8_0: u32 = 2;
pub const EMBER_CONTEXT_ERROR: u32 = 0;
pub const EMBER_CONTEXT_SHIFT: u32 = 1;

/// `ember_session_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ember_session_config {
    pub struct_size: usize,
    pub context: u32,
    pub kv_type: u32,
    pub threads: u32,
    pub batch: u32,
    pub context_policy: u32,
    pub keep: u32,
}

// SAFETY: repr(C), starts with struct_size, integers only.
unsafe impl Versioned for ember_session_config {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
}

impl Default for ember_session_config {
    /// The header's defaults: the model's full context, f16 KV, threads 0
    /// (one per physical core), batches of 512, error when full.
    fn default() -> Self {
        let d = SessionConfig::default();
        Self {
            struct_size: std::mem::size_of::<Self>(),
            context: 0,
            kv_type: EMBER_KV_F16,
            threads: 0,
            batch: d.batch as u32,
            context_policy: EMBER_CONTEXT_ERROR,
            keep: 0,
        }
    }
}

impl ember_session_config {
    /// The runtime config for a model, validated.
    fn to_runtime(self, model: &ember_model) -> CResult<SessionConfig> {
        let hp = model.model.hparams();
        let kv_type = match self.kv_type {
            EMBER_KV_F32 => KvType::F32,
            EMBER_KV_F16 => KvType::F16,
            EMBER_KV_Q8_0 => KvType::Q8_0,
            k => return Err(CError::invalid(format!("unknown kv_type {k}"))),
        };
        let context_policy = match self.context_policy {
            EMBER_CONTEXT_ERROR => ContextPolicy::Error,
            EMBER_CONTEXT_SHIFT => ContextPolicy::Shift {
                keep: self.keep as usize,
            },
            p => return Err(CError::invalid(format!("unknown context_policy {p}"))),
        };
        let config = SessionConfig {
            context: if self.context == 0 {
                hp.max_context as usize
            } else {
                self.context as usize
            },
            kv_type,
            threads: match self.threads {
                0 => ember_runtime::cpus::default_threads(),
                n => n as usize,
            },
            batch: self.batch as usize,
            context_policy,
        };
        config.validate(model.model.config())?;
        Ok(config)
    }
}

/// Reads an optional config (NULL = defaults).
///
/// # Safety
/// `p` is NULL or points to `p->struct_size` readable bytes.
unsafe fn session_config(p: *const ember_session_config) -> CResult<ember_session_config> {
    if p.is_null() {
        return Ok(ember_session_config::default());
    }
    // SAFETY: forwarded contract.
    unsafe { ptr::read_versioned(p, ember_session_config::default(), "the session config") }
}

/// Writes the default session config.
///
/// # Safety
/// `config` points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_session_config_default(
    config: *mut ember_session_config,
    struct_size: usize,
) -> ember_status {
    boundary(|| {
        ptr::check_size::<ember_session_config>(struct_size, "the session config")?;
        // SAFETY: the function's contract; the size field is set first so that
        // write_versioned sees the caller's size.
        unsafe {
            *ptr::as_mut(config.cast::<usize>(), "the session config")? = struct_size;
            ptr::write_versioned(
                config,
                ember_session_config::default(),
                "the session config",
            )
        }
    })
}

/// Memory a session needs (each output optional).
///
/// # Safety
/// `model` is a live handle; `config` NULL or valid; outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_session_memory_required(
    model: *const ember_model,
    config: *const ember_session_config,
    heap_bytes: *mut usize,
    arena_bytes: *mut usize,
    arena_heap_bytes: *mut usize,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let cfg = unsafe { session_config(config)? }.to_runtime(m)?;
        let mc = m.model.config();
        let values = [
            (heap_bytes, Session::memory_required(mc, &cfg)),
            (arena_bytes, Session::arena_bytes_required(mc, &cfg)),
            (arena_heap_bytes, Session::arena_heap_bytes(mc, &cfg)),
        ];
        for (p, v) in values {
            if !p.is_null() {
                // SAFETY: the function's contract (non-NULL outputs are writable).
                unsafe { *ptr::as_mut(p, "a size output")? = v };
            }
        }
        Ok(())
    })
}

// ------------------------------------------------------------------ session

/// `ember_session`: a session behind a lock (calls from one thread at a time
/// by contract; the lock makes a violation serialise instead of corrupt), the
/// cancel flag, which other threads may set without the lock, and the thread
/// holding the lock, so that a call from inside that thread's own
/// `ember_generate` callback fails instead of deadlocking on the lock.
pub struct ember_session {
    cancel: AtomicBool,
    /// [`thread_token`] of the thread holding `inner`, 0 when none. Only the
    /// holder writes its own token, so a thread reads its own token exactly
    /// when it holds the lock (Relaxed suffices: it is its own write).
    owner: AtomicUsize,
    inner: Mutex<Session<'static>>,
}

/// A number for the calling thread, unique among the running threads and never
/// 0: the address of a thread-local.
fn thread_token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

/// The locked session; clears the owner before the lock is released.
pub(crate) struct SessionGuard<'a> {
    owner: &'a AtomicUsize,
    session: MutexGuard<'a, Session<'static>>,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.owner.store(0, Ordering::Relaxed);
    }
}

impl std::ops::Deref for SessionGuard<'_> {
    type Target = Session<'static>;
    fn deref(&self) -> &Session<'static> {
        &self.session
    }
}

impl std::ops::DerefMut for SessionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Session<'static> {
        &mut self.session
    }
}

impl ember_session {
    /// Whether the calling thread is inside a call on this session (its
    /// `ember_generate` callback is running).
    fn held_by_this_thread(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == thread_token()
    }

    /// Locks the session; `EMBER_ERR_STATE` on a call from inside this
    /// thread's own call on it (the lock is not reentrant) and after a panic.
    fn lock(&self) -> CResult<SessionGuard<'_>> {
        if self.held_by_this_thread() {
            return Err(CError::new(
                EMBER_ERR_STATE,
                "the session is busy: this call came from inside its own ember_generate \
                 callback (only ember_session_cancel may be called there; return from the \
                 callback first)",
            ));
        }
        let session = self.inner.lock().map_err(|_| {
            CError::new(
                EMBER_ERR_STATE,
                "the session is unusable after an internal error; free it",
            )
        })?;
        self.owner.store(thread_token(), Ordering::Relaxed);
        Ok(SessionGuard {
            owner: &self.owner,
            session,
        })
    }
}

/// Resolves a session handle.
///
/// # Safety
/// `p` is NULL or a live session handle.
unsafe fn session_ref<'a>(p: *const ember_session) -> CResult<&'a ember_session> {
    // SAFETY: forwarded contract.
    unsafe { ptr::as_ref(p, "the session handle") }
}

fn publish_session(out: &mut *mut ember_session, session: Session<'static>) {
    *out = Box::into_raw(Box::new(ember_session {
        cancel: AtomicBool::new(false),
        owner: AtomicUsize::new(0),
        inner: Mutex::new(session),
    }));
}

/// Creates a heap session.
///
/// # Safety
/// `model` is a live handle; `config` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn ember_session_new(
    model: *const ember_model,
    config: *const ember_session_config,
    out: *mut *mut ember_session,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let out = unsafe { out_handle(out)? };
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let cfg = unsafe { session_config(config)? }.to_runtime(m)?;
        publish_session(out, Session::new(m.model.clone(), cfg)?);
        Ok(())
    })
}

/// Creates a session in a caller arena.
///
/// # Safety
/// As [`ember_session_new`]; `arena` has `arena_len` writable bytes that stay
/// valid and untouched until the session is freed.
#[no_mangle]
pub unsafe extern "C" fn ember_session_new_in(
    model: *const ember_model,
    config: *const ember_session_config,
    arena: *mut c_void,
    arena_len: usize,
    out: *mut *mut ember_session,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let out = unsafe { out_handle(out)? };
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let cfg = unsafe { session_config(config)? }.to_runtime(m)?;
        if arena.is_null() {
            return Err(CError::invalid("the arena is NULL"));
        }
        let need = Session::arena_bytes_required(m.model.config(), &cfg);
        if arena_len < need {
            return Err(CError::invalid(format!(
                "the arena has {arena_len} bytes but {need} are required"
            )));
        }
        if arena_len > isize::MAX as usize {
            return Err(CError::invalid("the arena length is too large"));
        }
        // SAFETY: `arena` is non-NULL with `arena_len <= isize::MAX` writable
        // bytes, exclusively ours until ember_session_free (the contract); the
        // 'static lifetime stands for that period.
        let bytes: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(arena.cast::<u8>(), arena_len) };
        publish_session(out, Session::new_in(m.model.clone(), cfg, bytes)?);
        Ok(())
    })
}

/// Frees a session; NULL is a no-op. From inside the session's own
/// `ember_generate` callback it is ignored (with a message): the running call
/// still uses the session.
///
/// # Safety
/// `session` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ember_session_free(session: *mut ember_session) {
    let _ = boundary(|| {
        if session.is_null() {
            return Ok(());
        }
        // SAFETY: a live handle (the contract); only the owner atomic is read.
        if unsafe { session_ref(session)? }.held_by_this_thread() {
            return Err(CError::new(
                EMBER_ERR_STATE,
                "ember_session_free was called from inside the session's own ember_generate \
                 callback and was ignored; free the session after ember_generate returns",
            ));
        }
        // SAFETY: a live handle made by `Box::into_raw` (the contract), freed once.
        drop(unsafe { Box::from_raw(session) });
        Ok(())
    });
}

/// Runs `f` on the locked session.
///
/// # Safety
/// `session` is NULL or a live handle.
pub(crate) unsafe fn with_session(
    session: *const ember_session,
    f: impl FnOnce(&mut Session<'static>) -> CResult,
) -> ember_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let s = unsafe { session_ref(session)? };
        f(&mut *s.lock()?)
    })
}

/// Forgets every token.
///
/// # Safety
/// `session` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ember_session_reset(session: *mut ember_session) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            s.reset();
            Ok(())
        })
    }
}

/// Feeds tokens.
///
/// # Safety
/// `session` is a live handle; `tokens` has `n` elements.
#[no_mangle]
pub unsafe extern "C" fn ember_session_eval(
    session: *mut ember_session,
    tokens: *const ember_token,
    n: usize,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            if n == 0 {
                return Err(CError::invalid("no tokens to evaluate (n is 0)"));
            }
            let ids = ptr::slice(tokens, n, "the tokens")?;
            s.prefill(ids)?;
            Ok(())
        })
    }
}

/// The current logits.
///
/// # Safety
/// `session` is a live handle; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn ember_session_logits(
    session: *mut ember_session,
    logits: *mut *const f32,
    n_vocab: *mut usize,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            let out = ptr::as_mut(logits, "the logits pointer")?;
            let n = ptr::as_mut(n_vocab, "n_vocab")?;
            if !s.has_logits() {
                return Err(CError::new(
                    EMBER_ERR_STATE,
                    "the session has no logits: evaluate a token first",
                ));
            }
            let l = s.logits();
            *out = l.as_ptr();
            *n = l.len();
            Ok(())
        })
    }
}

/// The tokens in the context.
///
/// # Safety
/// `session` is a live handle; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn ember_session_tokens(
    session: *mut ember_session,
    tokens: *mut *const ember_token,
    n: *mut usize,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            let out = ptr::as_mut(tokens, "the tokens pointer")?;
            let n = ptr::as_mut(n, "n")?;
            *out = s.tokens().as_ptr();
            *n = s.tokens().len();
            Ok(())
        })
    }
}

/// Keeps the first `n` tokens.
///
/// # Safety
/// `session` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ember_session_truncate(
    session: *mut ember_session,
    n: usize,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe { with_session(session, |s| Ok(s.truncate(n)?)) }
}

/// A bad state file is a format error (the runtime reports it as an argument).
fn state_error(e: ember_runtime::Error) -> CError {
    match e {
        ember_runtime::Error::InvalidArgument(m) => CError::new(EMBER_ERR_FORMAT, m),
        e => e.into(),
    }
}

/// Saves the state to a file.
///
/// # Safety
/// `session` is a live handle; `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ember_session_save(
    session: *mut ember_session,
    path: *const c_char,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            let path = ptr::text(path, "the path")?;
            Ok(s.save_state(path.as_ref(), &[])?)
        })
    }
}

/// Restores the state from a file.
///
/// # Safety
/// `session` is a live handle; `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ember_session_load(
    session: *mut ember_session,
    path: *const c_char,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            let path = ptr::text(path, "the path")?;
            s.load_state(path.as_ref()).map_err(state_error)?;
            Ok(())
        })
    }
}

/// Counts the bytes written through it.
struct Counter(usize);
impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the state to a caller buffer.
///
/// # Safety
/// `session` is a live handle; `buf` has `capacity` writable bytes; `len`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_session_state_write(
    session: *mut ember_session,
    buf: *mut c_void,
    capacity: usize,
    len: *mut usize,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            let io = |e: std::io::Error| CError::new(crate::EMBER_ERR_IO, e.to_string());
            let mut count = Counter(0);
            s.write_state(&mut count, &[]).map_err(io)?;
            let need = count.0;
            if !len.is_null() {
                *ptr::as_mut(len, "the length pointer")? = need;
            }
            if capacity < need {
                return Err(CError::new(
                    EMBER_ERR_BUFFER_TOO_SMALL,
                    format!("the state buffer holds {capacity} bytes but {need} are needed"),
                ));
            }
            if buf.is_null() {
                return Err(CError::invalid("the state buffer is NULL"));
            }
            // SAFETY: non-NULL with `capacity >= need` writable bytes (contract).
            let dst: &mut [u8] = std::slice::from_raw_parts_mut(buf.cast::<u8>(), need);
            s.write_state(dst, &[]).map_err(io)?;
            Ok(())
        })
    }
}

/// Restores the state from a caller buffer.
///
/// # Safety
/// `session` is a live handle; `buf` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_session_state_read(
    session: *mut ember_session,
    buf: *const c_void,
    len: usize,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            if len == 0 {
                return Err(CError::invalid("the state buffer is empty (len 0)"));
            }
            let bytes = ptr::slice(buf.cast::<u8>(), len, "the state buffer")?;
            s.read_state(bytes).map_err(state_error)?;
            Ok(())
        })
    }
}

/// Asks a running generation to stop. Takes no lock: callable from any thread.
///
/// # Safety
/// `session` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ember_session_cancel(session: *mut ember_session) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract; only the atomic is touched, so this
        // may run while another thread holds the session's lock.
        let s = unsafe { session_ref(session)? };
        s.cancel.store(true, Ordering::SeqCst);
        Ok(())
    })
}

// ------------------------------------------------------------------ sampler

/// `ember_logit_bias`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ember_logit_bias {
    pub token: ember_token,
    pub bias: f32,
}

/// `ember_sampler_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ember_sampler_config {
    pub struct_size: usize,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: u32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: u64,
    pub logit_bias: *const ember_logit_bias,
    pub n_logit_bias: usize,
}

// SAFETY: repr(C), starts with struct_size; integers, floats and a raw pointer.
unsafe impl Versioned for ember_sampler_config {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
}

impl Default for ember_sampler_config {
    /// The runtime's defaults (greedy).
    fn default() -> Self {
        let d = SamplerConfig::default();
        Self {
            struct_size: std::mem::size_of::<Self>(),
            temperature: d.temperature,
            top_k: d.top_k as u32,
            top_p: d.top_p,
            min_p: d.min_p,
            repeat_penalty: d.repeat_penalty,
            repeat_last_n: d.repeat_last_n as u32,
            presence_penalty: d.presence_penalty,
            frequency_penalty: d.frequency_penalty,
            seed: d.seed,
            logit_bias: std::ptr::null(),
            n_logit_bias: 0,
        }
    }
}

/// Reads an optional sampler config (NULL = greedy) and builds the sampler.
///
/// # Safety
/// `p` is NULL or valid, with `n_logit_bias` readable entries at `logit_bias`.
unsafe fn make_sampler(p: *const ember_sampler_config, vocab: u32) -> CResult<Sampler> {
    let c = if p.is_null() {
        ember_sampler_config::default()
    } else {
        // SAFETY: forwarded contract.
        unsafe { ptr::read_versioned(p, ember_sampler_config::default(), "the sampler config")? }
    };
    // SAFETY: forwarded contract.
    let bias = unsafe { ptr::slice(c.logit_bias, c.n_logit_bias, "the logit bias")? };
    let mut logit_bias = try_vec(bias.len(), "the logit bias")?;
    logit_bias.extend(bias.iter().map(|b| (b.token, b.bias)));
    let config = SamplerConfig {
        temperature: c.temperature,
        top_k: c.top_k as usize,
        top_p: c.top_p,
        min_p: c.min_p,
        repeat_penalty: c.repeat_penalty,
        repeat_last_n: c.repeat_last_n as usize,
        presence_penalty: c.presence_penalty,
        frequency_penalty: c.frequency_penalty,
        logit_bias,
        seed: c.seed,
    };
    Ok(Sampler::new(vocab as usize, &config)?)
}

/// Writes the default sampler config.
///
/// # Safety
/// `config` points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_config_default(
    config: *mut ember_sampler_config,
    struct_size: usize,
) -> ember_status {
    boundary(|| {
        ptr::check_size::<ember_sampler_config>(struct_size, "the sampler config")?;
        // SAFETY: the function's contract; the size field is set first.
        unsafe {
            *ptr::as_mut(config.cast::<usize>(), "the sampler config")? = struct_size;
            ptr::write_versioned(
                config,
                ember_sampler_config::default(),
                "the sampler config",
            )
        }
    })
}

/// `ember_sampler`: a stand-alone sampler chain.
pub struct ember_sampler {
    sampler: Sampler,
}

/// Creates a sampler.
///
/// # Safety
/// `model` is a live handle; `config` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_new(
    model: *const ember_model,
    config: *const ember_sampler_config,
    out: *mut *mut ember_sampler,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let out = unsafe { out_handle(out)? };
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let sampler = unsafe { make_sampler(config, m.model.hparams().vocab_size)? };
        *out = Box::into_raw(Box::new(ember_sampler { sampler }));
        Ok(())
    })
}

/// Frees a sampler; NULL is a no-op.
///
/// # Safety
/// `sampler` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_free(sampler: *mut ember_sampler) {
    boundary_void(|| {
        if !sampler.is_null() {
            // SAFETY: a live handle made by `Box::into_raw` (the contract), freed once.
            drop(unsafe { Box::from_raw(sampler) });
        }
    })
}

/// Picks a token.
///
/// # Safety
/// `sampler` is a live handle; `logits` has `n` elements; `token` writable.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_sample(
    sampler: *mut ember_sampler,
    logits: *const f32,
    n: usize,
    token: *mut ember_token,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let s = unsafe { ptr::as_mut(sampler, "the sampler handle")? };
        // SAFETY: the function's contract.
        let out = unsafe { ptr::as_mut(token, "the token pointer")? };
        // SAFETY: the function's contract.
        let logits = unsafe { ptr::slice(logits, n, "the logits")? };
        if n != s.sampler.vocab() {
            return Err(CError::invalid(format!(
                "{n} logits given but the vocabulary has {}",
                s.sampler.vocab()
            )));
        }
        *out = s.sampler.sample(logits);
        Ok(())
    })
}

/// Records a token for the penalties.
///
/// # Safety
/// `sampler` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_accept(
    sampler: *mut ember_sampler,
    token: ember_token,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let s = unsafe { ptr::as_mut(sampler, "the sampler handle")? };
        let vocab = s.sampler.vocab();
        if token as usize >= vocab {
            return Err(ember_runtime::Error::TokenOutOfRange {
                id: token,
                vocab: vocab as u32,
            }
            .into());
        }
        s.sampler.accept(token);
        Ok(())
    })
}

/// Resets the sampler's history and random sequence.
///
/// # Safety
/// `sampler` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn ember_sampler_reset(sampler: *mut ember_sampler) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let s = unsafe { ptr::as_mut(sampler, "the sampler handle")? };
        s.sampler.reset();
        Ok(())
    })
}

// ------------------------------------------------------------------ generation

/// `ember_token_callback`.
pub type ember_token_callback =
    Option<unsafe extern "C" fn(*mut c_void, ember_token, *const c_char, usize) -> c_int>;

/// `ember_generate_options`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ember_generate_options {
    pub struct_size: usize,
    pub max_tokens: u32,
    pub ignore_eos: c_int,
    pub stop: *const *const c_char,
    pub n_stop: usize,
}

// SAFETY: repr(C), starts with struct_size; integers and raw pointers.
unsafe impl Versioned for ember_generate_options {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
}

impl Default for ember_generate_options {
    fn default() -> Self {
        Self {
            struct_size: std::mem::size_of::<Self>(),
            max_tokens: GenerateConfig::default().max_tokens as u32,
            ignore_eos: 0,
            stop: std::ptr::null(),
            n_stop: 0,
        }
    }
}

/// Writes the default generation options.
///
/// # Safety
/// `options` points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_generate_options_default(
    options: *mut ember_generate_options,
    struct_size: usize,
) -> ember_status {
    boundary(|| {
        ptr::check_size::<ember_generate_options>(struct_size, "the generate options")?;
        // SAFETY: the function's contract; the size field is set first.
        unsafe {
            *ptr::as_mut(options.cast::<usize>(), "the generate options")? = struct_size;
            ptr::write_versioned(
                options,
                ember_generate_options::default(),
                "the generate options",
            )
        }
    })
}

pub const EMBER_STOP_MAX_TOKENS: u32 = 0;
pub const EMBER_STOP_END_OF_GENERATION: u32 = 1;
pub const EMBER_STOP_STOP_SEQUENCE: u32 = 2;
pub const EMBER_STOP_CONTEXT_FULL: u32 = 3;
pub const EMBER_STOP_CALLBACK: u32 = 4;
pub const EMBER_STOP_CANCELLED: u32 = 5;

/// `ember_generate_result`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ember_generate_result {
    pub struct_size: usize,
    pub stop_reason: u32,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

// SAFETY: repr(C), starts with struct_size; integers and floats.
unsafe impl Versioned for ember_generate_result {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
}

/// The generation settings of `options` (NULL: defaults), stop strings copied.
///
/// # Safety
/// `options` is NULL or valid (struct conventions of the header), its `stop`
/// array holds `n_stop` NUL-terminated strings.
unsafe fn generate_config(options: *const ember_generate_options) -> CResult<GenerateConfig> {
    let opts = if options.is_null() {
        ember_generate_options::default()
    } else {
        // SAFETY: the function's contract.
        unsafe { ptr::read_versioned(options, ember_generate_options::default(), "the options")? }
    };
    // SAFETY: the function's contract.
    let stop_ptrs = unsafe { ptr::slice(opts.stop, opts.n_stop, "the stop strings")? };
    let mut stop = try_vec(stop_ptrs.len(), "the stop strings")?;
    for (i, &p) in stop_ptrs.iter().enumerate() {
        let what = format!("stop[{i}]");
        // SAFETY: the function's contract.
        let text = unsafe { ptr::text(p, &what)? };
        stop.push(try_string(text, &what)?);
    }
    Ok(GenerateConfig {
        max_tokens: opts.max_tokens as usize,
        stop,
        ignore_eos: opts.ignore_eos != 0,
    })
}

/// Checks a result struct's declared size before anything changes.
///
/// # Safety
/// `result` is NULL or starts with a readable `struct_size`.
unsafe fn check_result_size(result: *const ember_generate_result) -> CResult {
    if result.is_null() {
        return Ok(());
    }
    // SAFETY: the function's contract.
    let size = unsafe { *ptr::as_ref(result.cast::<usize>(), "the result")? };
    if size < ember_generate_result::MIN_SIZE {
        return Err(CError::invalid(format!(
            "the result's struct_size {size} is below {}",
            ember_generate_result::MIN_SIZE
        )));
    }
    Ok(())
}

/// Checks that `prompt` can be fed to `s`: ids in the vocabulary, something to
/// continue from, and room under `EMBER_CONTEXT_ERROR`.
fn check_prompt(s: &Session, prompt: &[ember_token]) -> CResult {
    let hp = *s.model().hparams();
    if let Some(&t) = prompt.iter().find(|&&t| t >= hp.vocab_size) {
        return Err(ember_runtime::Error::TokenOutOfRange {
            id: t,
            vocab: hp.vocab_size,
        }
        .into());
    }
    if prompt.is_empty() && !s.has_logits() {
        return Err(CError::new(
            EMBER_ERR_STATE,
            "the prompt is empty and the session has no logits to continue from",
        ));
    }
    let cfg = *s.config();
    if cfg.context_policy == ContextPolicy::Error && s.pos() + prompt.len() > cfg.context {
        return Err(CError::new(
            EMBER_ERR_CONTEXT_FULL,
            format!(
                "the prompt needs {} positions but the context holds {} ({} in use)",
                s.pos() + prompt.len(),
                cfg.context,
                s.pos()
            ),
        ));
    }

    Ok(())
}

/// The header's stop code for `stop` (`by_callback`: the callback returned non-zero).
fn stop_code(stop: StopReason, by_callback: bool) -> u32 {
    match stop {
        StopReason::MaxTokens => EMBER_STOP_MAX_TOKENS,
        StopReason::EndOfGeneration => EMBER_STOP_END_OF_GENERATION,
        StopReason::StopSequence => EMBER_STOP_STOP_SEQUENCE,
        StopReason::ContextFull => EMBER_STOP_CONTEXT_FULL,
        StopReason::Cancelled if by_callback => EMBER_STOP_CALLBACK,
        StopReason::Cancelled => EMBER_STOP_CANCELLED,
    }
}

/// Feeds a prompt and generates with streaming.
///
/// # Safety
/// `session` is a live handle; `prompt` has `n_prompt` elements; `sampler`,
/// `options`, `result` NULL or valid (struct conventions of the header);
/// `callback` NULL or a function that does not unwind or longjmp out.
#[no_mangle]
pub unsafe extern "C" fn ember_generate(
    session: *mut ember_session,
    prompt: *const ember_token,
    n_prompt: usize,
    sampler: *const ember_sampler_config,
    options: *const ember_generate_options,
    callback: ember_token_callback,
    user_data: *mut c_void,
    result: *mut ember_generate_result,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let handle = unsafe { session_ref(session)? };
        // Locked first: a refused call (e.g. from this session's own callback)
        // must not clear the running generation's cancel request.
        let mut guard = handle.lock()?;
        handle.cancel.store(false, Ordering::SeqCst);
        let cancelled = || handle.cancel.load(Ordering::SeqCst);
        let s: &mut Session<'static> = &mut guard;
        let model = s.model().clone();
        let hp = *model.hparams();
        let tok = model.tokenizer();

        // Every argument is checked before the session changes.
        // SAFETY: the function's contract.
        let prompt = unsafe { ptr::slice(prompt, n_prompt, "the prompt")? };
        // SAFETY: the function's contract.
        let sampler = unsafe { make_sampler(sampler, hp.vocab_size)? };
        // SAFETY: the function's contract.
        let config = unsafe { generate_config(options)? };
        // SAFETY: the function's contract.
        unsafe { check_result_size(result)? };
        check_prompt(s, prompt)?;
        let mut generator = Generator::new(tok, sampler, config)?;

        let mut out = ember_generate_result {
            prompt_tokens: prompt.len() as u32,
            ..Default::default()
        };
        let prefill = generator.prefill(
            s,
            prompt,
            &PrefillOptions {
                reuse_cached: false,
                cancel: Some(&handle.cancel),
                ..Default::default()
            },
        )?;
        // The text handed to C: the piece plus a NUL, in a buffer reused per token.
        let mut text = Vec::with_capacity((tok.max_token_bytes() + 4) * 3 + 64);
        let mut by_callback = false;
        let stats = generator.decode(s, &prefill, |id, piece| {
            if let Some(cb) = callback {
                text.clear();
                text.extend_from_slice(piece.as_bytes());
                text.push(0);
                // SAFETY: the caller's function with the header's signature;
                // `text` is NUL-terminated and outlives the call.
                let r = unsafe { cb(user_data, id, text.as_ptr().cast(), piece.len()) };
                if r != 0 && id != EMBER_TOKEN_NONE {
                    by_callback = true;
                    return false;
                }
            }
            !cancelled()
        })?;
        out.prefill_seconds = stats.prefill.as_secs_f64();
        out.generated_tokens = stats.generated_tokens as u32;
        out.decode_seconds = stats.decode.as_secs_f64();
        out.stop_reason = stop_code(stats.stop, by_callback);
        if !result.is_null() {
            // SAFETY: the function's contract (checked non-NULL and sized above).
            unsafe { ptr::write_versioned(result, out, "the result")? };
        }
        Ok(())
    })
}
