//! Models, tokenizer calls and chat templates.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Arc, OnceLock};

use ember_runtime::chat::{self, BuiltinTemplate, Message};
use ember_runtime::tokenizer::{EncodeOptions, StreamDecoder};
use ember_runtime::Model;

use crate::ptr::{self, Versioned};
use crate::{boundary, boundary_void, ember_status, try_vec, CError, CResult, EMBER_ERR_TEMPLATE};

/// `ember_model`: a shared, immutable model.
pub struct ember_model {
    pub(crate) model: Arc<Model>,
    storage: u32,
}

pub const EMBER_STORAGE_MAPPED: u32 = 0;
pub const EMBER_STORAGE_COPY: u32 = 1;
pub const EMBER_STORAGE_BORROWED: u32 = 2;
pub const EMBER_BUFFER_COPY: u32 = 1;
/// Alignment under which a caller's buffer is used in place.
const BORROW_ALIGNMENT: usize = 64;

/// `ember_token`.
pub type ember_token = u32;
pub const EMBER_TOKEN_NONE: ember_token = u32::MAX;

/// Resolves a model handle.
///
/// # Safety
/// `p` is NULL or a live handle from `ember_model_load` / `_from_buffer`.
pub(crate) unsafe fn model_ref<'a>(p: *const ember_model) -> CResult<&'a ember_model> {
    // SAFETY: forwarded contract.
    unsafe { ptr::as_ref(p, "the model handle") }
}

/// Stores a new handle in `*out` (which the caller checked is writable).
fn publish<T>(out: &mut *mut T, value: T) {
    *out = Box::into_raw(Box::new(value));
}

/// Clears a handle out-parameter up front so it is NULL on every failure.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn out_handle<'a, T>(out: *mut *mut T) -> CResult<&'a mut *mut T> {
    // SAFETY: forwarded contract.
    let out = unsafe { ptr::as_mut(out, "the output handle pointer")? };
    *out = std::ptr::null_mut();
    Ok(out)
}

/// Memory-maps and validates an `.ember` file.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to a writable handle slot.
#[no_mangle]
pub unsafe extern "C" fn ember_model_load(
    path: *const c_char,
    out: *mut *mut ember_model,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let out = unsafe { out_handle(out)? };
        // SAFETY: the function's contract.
        let path = unsafe { ptr::text(path, "the model path")? };
        let model = Model::load(path)?;
        let storage = if model.is_mapped() {
            EMBER_STORAGE_MAPPED
        } else {
            EMBER_STORAGE_COPY
        };
        publish(
            out,
            ember_model {
                model: Arc::new(model),
                storage,
            },
        );
        Ok(())
    })
}

/// Validates a file image in memory, in place when 64-byte aligned and not
/// `EMBER_BUFFER_COPY`.
///
/// # Safety
/// `data` points to `len` readable bytes; without a copy they must stay valid
/// and unchanged until the model and all its sessions are freed.
#[no_mangle]
pub unsafe extern "C" fn ember_model_from_buffer(
    data: *const c_void,
    len: usize,
    flags: u32,
    out: *mut *mut ember_model,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let out = unsafe { out_handle(out)? };
        if flags & !EMBER_BUFFER_COPY != 0 {
            return Err(CError::invalid(format!("unknown flags {flags:#x}")));
        }
        if len == 0 {
            return Err(CError::invalid("the model buffer is empty (len 0)"));
        }
        // SAFETY: the function's contract (`len` readable bytes).
        let bytes: &[u8] = unsafe { ptr::slice(data.cast::<u8>(), len, "the model buffer")? };
        let borrow =
            flags & EMBER_BUFFER_COPY == 0 && (data as usize).is_multiple_of(BORROW_ALIGNMENT);
        let (model, storage) = if borrow {
            // SAFETY: the caller keeps the buffer alive and unchanged for as long
            // as the model exists (the documented contract of this function);
            // 'static stands for that lifetime, which Rust cannot express here.
            let bytes: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &[u8]>(bytes) };
            (Model::from_static_bytes(bytes)?, EMBER_STORAGE_BORROWED)
        } else {
            (Model::from_bytes(bytes)?, EMBER_STORAGE_COPY)
        };
        publish(
            out,
            ember_model {
                model: Arc::new(model),
                storage,
            },
        );
        Ok(())
    })
}

/// Releases a model handle; NULL is a no-op.
///
/// # Safety
/// `model` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ember_model_free(model: *mut ember_model) {
    boundary_void(|| {
        if !model.is_null() {
            // SAFETY: a live handle made by `Box::into_raw` (the contract), freed once.
            drop(unsafe { Box::from_raw(model) });
        }
    })
}

/// `ember_model_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ember_model_info {
    pub struct_size: usize,
    pub vocab_size: u32,
    pub max_context: u32,
    pub n_layers: u32,
    pub dim: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub n_params: u64,
    pub storage: u32,
    pub has_chat_template: u32,
}

// SAFETY: repr(C), starts with struct_size, plain integers only.
unsafe impl Versioned for ember_model_info {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
}

/// Fills `info` (its `struct_size` set by the caller).
///
/// # Safety
/// `model` is a live handle; `info` points to `info->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ember_model_info_get(
    model: *const ember_model,
    info: *mut ember_model_info,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        let hp = m.model.hparams();
        let value = ember_model_info {
            struct_size: 0,
            vocab_size: hp.vocab_size,
            max_context: hp.max_context,
            n_layers: hp.n_layers,
            dim: hp.dim,
            n_heads: hp.n_heads,
            n_kv_heads: hp.n_kv_heads,
            n_params: m.model.n_params(),
            storage: m.storage,
            has_chat_template: u32::from(m.model.chat_template().is_some()),
        };
        // SAFETY: the function's contract.
        unsafe { ptr::write_versioned(info, value, "the model info") }
    })
}

pub const EMBER_TOKENIZE_NO_BOS: u32 = 1;
pub const EMBER_TOKENIZE_NO_SPECIAL: u32 = 2;

/// Encodes `text` into `tokens`; reports the count (or the count needed).
///
/// # Safety
/// `model` is a live handle, `text` NUL-terminated, `tokens` has `capacity`
/// writable elements (or is NULL with capacity 0), `n_tokens` writable.
#[no_mangle]
pub unsafe extern "C" fn ember_tokenize(
    model: *const ember_model,
    text: *const c_char,
    flags: u32,
    tokens: *mut ember_token,
    capacity: usize,
    n_tokens: *mut usize,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let n_out = unsafe { ptr::as_mut(n_tokens, "n_tokens")? };
        // SAFETY: the function's contract.
        let text = unsafe { ptr::text(text, "the text")? };
        if flags & !(EMBER_TOKENIZE_NO_BOS | EMBER_TOKENIZE_NO_SPECIAL) != 0 {
            return Err(CError::invalid(format!("unknown flags {flags:#x}")));
        }
        let tok = m.model.tokenizer();
        let defaults = tok.default_encode_options();
        let opts = EncodeOptions {
            add_bos: defaults.add_bos && flags & EMBER_TOKENIZE_NO_BOS == 0,
            parse_special: flags & EMBER_TOKENIZE_NO_SPECIAL == 0,
        };
        let ids = tok.try_encode(text, opts)?;
        *n_out = ids.len();
        if ids.len() > capacity {
            return Err(CError::new(
                crate::EMBER_ERR_BUFFER_TOO_SMALL,
                format!(
                    "the token buffer holds {capacity} tokens but the text needs {}",
                    ids.len()
                ),
            ));
        }
        if ids.is_empty() {
            return Ok(());
        }
        if tokens.is_null() {
            return Err(CError::invalid("the token buffer is NULL"));
        }
        if !tokens.is_aligned() {
            return Err(CError::invalid("the token buffer is misaligned"));
        }
        // SAFETY: `tokens` is non-NULL and aligned with `capacity >= ids.len()`
        // writable elements (the contract).
        unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), tokens, ids.len()) };
        Ok(())
    })
}

fn check_ids(m: &ember_model, ids: &[u32]) -> CResult {
    let vocab = m.model.hparams().vocab_size;
    match ids.iter().find(|&&t| t >= vocab) {
        Some(&t) => Err(ember_runtime::Error::TokenOutOfRange { id: t, vocab }.into()),
        None => Ok(()),
    }
}

/// Decodes tokens into text.
///
/// # Safety
/// `model` is a live handle; `tokens` has `n` elements; `buf` has `capacity`
/// writable bytes; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_detokenize(
    model: *const ember_model,
    tokens: *const ember_token,
    n: usize,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let ids = unsafe { ptr::slice(tokens, n, "the tokens")? };
        check_ids(m, ids)?;
        // Two passes of the streaming decoder (its text equals `decode`'s):
        // the length, then the text straight into `buf`, so nothing the size
        // of the caller's `n` tokens is allocated.
        let tok = m.model.tokenizer();
        let mut dec = StreamDecoder::for_tokenizer(tok);
        let mut size = 0usize;
        for &id in ids {
            size = size.saturating_add(dec.push(tok, id).len());
        }
        size = size.saturating_add(dec.finish().len());
        // SAFETY: the function's contract.
        let mut out =
            unsafe { ptr::out_text(size, true, buf.cast(), capacity, len, "the text buffer")? };
        dec.reset();
        for &id in ids {
            out.push(dec.push(tok, id).as_bytes());
        }
        out.push(dec.finish().as_bytes());
        out.finish();
        Ok(())
    })
}

/// One token's raw bytes.
///
/// # Safety
/// As [`ember_detokenize`].
#[no_mangle]
pub unsafe extern "C" fn ember_token_text(
    model: *const ember_model,
    token: ember_token,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        check_ids(m, &[token])?;
        let bytes = m.model.tokenizer().token_bytes(token);
        // SAFETY: the function's contract.
        unsafe { ptr::write_bytes(bytes, true, buf.cast(), capacity, len, "the text buffer") }
    })
}

pub const EMBER_SPECIAL_BOS: c_int = 0;
pub const EMBER_SPECIAL_EOS: c_int = 1;
pub const EMBER_SPECIAL_UNK: c_int = 2;
pub const EMBER_SPECIAL_PAD: c_int = 3;

/// A special token id or `EMBER_TOKEN_NONE`.
///
/// # Safety
/// `model` is a live handle; `token` writable.
#[no_mangle]
pub unsafe extern "C" fn ember_model_special_token(
    model: *const ember_model,
    which: c_int,
    token: *mut ember_token,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let out = unsafe { ptr::as_mut(token, "the token pointer")? };
        let spec = m.model.tokenizer().spec();
        let id = match which {
            EMBER_SPECIAL_BOS => spec.bos,
            EMBER_SPECIAL_EOS => spec.eos,
            EMBER_SPECIAL_UNK => spec.unk,
            EMBER_SPECIAL_PAD => spec.pad,
            _ => {
                return Err(CError::invalid(format!(
                    "unknown special token kind {which}"
                )))
            }
        };
        *out = id.unwrap_or(EMBER_TOKEN_NONE);
        Ok(())
    })
}

/// Whether `token` ends generation.
///
/// # Safety
/// `model` is a live handle; `is_eog` writable.
#[no_mangle]
pub unsafe extern "C" fn ember_token_is_end_of_generation(
    model: *const ember_model,
    token: ember_token,
    is_eog: *mut c_int,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let out = unsafe { ptr::as_mut(is_eog, "is_eog")? };
        check_ids(m, &[token])?;
        *out = c_int::from(m.model.tokenizer().is_end_of_generation(token));
        Ok(())
    })
}

/// `ember_chat_message`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ember_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Renders a chat template.
///
/// # Safety
/// `model` is a live handle; `template_source` NULL or NUL-terminated;
/// `messages` has `n_messages` elements whose strings are NUL-terminated;
/// `buf` has `capacity` writable bytes; `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_render(
    model: *const ember_model,
    template_source: *const c_char,
    messages: *const ember_chat_message,
    n_messages: usize,
    add_generation_prompt: c_int,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        let template = if template_source.is_null() {
            m.model.chat_template().ok_or_else(|| {
                CError::new(
                    EMBER_ERR_TEMPLATE,
                    "the model has no chat template; pass one (e.g. \
                     ember_chat_builtin_template(\"chatml\"))",
                )
            })?
        } else {
            // SAFETY: the function's contract.
            unsafe { ptr::text(template_source, "the template")? }
        };
        // SAFETY: the function's contract.
        let raw = unsafe { ptr::slice(messages, n_messages, "the messages")? };
        let mut msgs = try_vec(raw.len(), "the messages")?;
        for (i, msg) in raw.iter().enumerate() {
            // SAFETY: the function's contract.
            let role = unsafe { ptr::text(msg.role, &format!("messages[{i}].role"))? };
            // SAFETY: the function's contract.
            let content = unsafe { ptr::text(msg.content, &format!("messages[{i}].content"))? };
            msgs.push(Message::new(role, content));
        }
        let (bos, eos) = chat::special_texts(m.model.tokenizer());
        let text = chat::render(template, &msgs, add_generation_prompt != 0, &bos, &eos)
            .map_err(|e| CError::new(EMBER_ERR_TEMPLATE, e.to_string()))?;
        // SAFETY: the function's contract.
        unsafe {
            ptr::write_bytes(
                text.as_bytes(),
                true,
                buf.cast(),
                capacity,
                len,
                "the text buffer",
            )
        }
    })
}

/// A built-in template's source, or NULL.
///
/// # Safety
/// `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ember_chat_builtin_template(name: *const c_char) -> *const c_char {
    static SOURCES: OnceLock<Vec<(BuiltinTemplate, CString)>> = OnceLock::new();
    let mut found = std::ptr::null();
    let _ = boundary(|| {
        // SAFETY: the function's contract.
        let name = unsafe { ptr::text(name, "the template name")? };
        let t = BuiltinTemplate::from_name(name)
            .ok_or_else(|| CError::invalid(format!("unknown built-in template {name:?}")))?;
        let sources = SOURCES.get_or_init(|| {
            BuiltinTemplate::ALL
                .iter()
                .map(|&t| (t, CString::new(t.source()).unwrap_or_default()))
                .collect()
        });
        if let Some((_, s)) = sources.iter().find(|(u, _)| *u == t) {
            found = s.as_ptr();
        }
        Ok(())
    });
    found
}
