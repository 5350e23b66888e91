//! LoRA adapters: a PEFT adapter directory loaded once for a model and attached
//! to any number of that model's sessions.

use std::ffi::c_char;
use std::sync::Arc;

use ember_runtime::format::HyperParams;
use ember_runtime::lora::peft::load_peft;
use ember_runtime::lora::LoraAdapter;

use crate::model::{ember_model, model_ref, out_handle};
use crate::ptr;
use crate::session::{ember_session, with_session};
use crate::{boundary, boundary_void, ember_status, CError};

/// `ember_lora`: an immutable adapter in the row order of the model it was
/// loaded for (whose hyperparameters it keeps, to refuse other models).
pub struct ember_lora {
    adapter: Arc<LoraAdapter>,
    hparams: HyperParams,
}

/// Loads the PEFT adapter directory `dir` (`adapter_model.safetensors` +
/// `adapter_config.json`) for `model`.
///
/// # Safety
/// `model` is a live handle; `dir` NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn ember_lora_load(
    model: *const ember_model,
    dir: *const c_char,
    out: *mut *mut ember_lora,
) -> ember_status {
    boundary(|| {
        // SAFETY: the function's contract.
        let out = unsafe { out_handle(out)? };
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model)? };
        // SAFETY: the function's contract.
        let dir = unsafe { ptr::text(dir, "the adapter directory")? };
        let hparams = *m.model.hparams();
        let adapter = Arc::new(load_peft(dir.as_ref(), &hparams)?);
        *out = Box::into_raw(Box::new(ember_lora { adapter, hparams }));
        Ok(())
    })
}

/// Releases an adapter; sessions it is attached to keep it alive. NULL: no-op.
///
/// # Safety
/// `lora` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ember_lora_free(lora: *mut ember_lora) {
    boundary_void(|| {
        if !lora.is_null() {
            // SAFETY: a live handle made by `Box::into_raw` (the contract), freed once.
            drop(unsafe { Box::from_raw(lora) });
        }
    })
}

/// Attaches `lora` to `session` with `scale` (1 = as trained), or detaches the
/// adapter when `lora` is NULL. The session is reset (its cache was computed
/// without this adapter). On error the session is unchanged.
///
/// # Safety
/// `session` is a live handle; `lora` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn ember_session_set_lora(
    session: *mut ember_session,
    lora: *const ember_lora,
    scale: f32,
) -> ember_status {
    // SAFETY: the function's contract.
    unsafe {
        with_session(session, |s| {
            if lora.is_null() {
                s.set_lora(None, 1.0)?;
                return Ok(());
            }
            // SAFETY: non-NULL, so a live handle (the contract).
            let l = ptr::as_ref(lora, "the LoRA adapter handle")?;
            if *s.model().hparams() != l.hparams {
                return Err(CError::invalid(
                    "the LoRA adapter was loaded for another model (ember_lora_load with this \
                     session's model)",
                ));
            }
            s.set_lora(Some(l.adapter.clone()), scale)?;
            Ok(())
        })
    }
}
