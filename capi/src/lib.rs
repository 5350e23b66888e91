//! Ember's C API: `libember.a` / `libember.so` behind `include/ember.h`.
//!
//! Every exported function goes through [`boundary`]: arguments are checked,
//! failures become an `ember_status` plus a thread-local message
//! (`ember_last_error`), and panics are caught so none unwinds into C. The
//! header is written by hand; `tests/header_sync.rs` keeps it and this crate in
//! step (function names, constants, struct layouts).
//!
//! Unsafe code: this crate is one of the places the house rules allow it (the
//! C boundary). It is confined to turning C pointers into references and
//! slices ([`ptr`]) and to the handle constructors/destructors; each block
//! states its contract.

#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod lora;
mod model;
mod ptr;
mod session;

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Bounds the memory of chat-template rendering (`ember_runtime::memory_budget`):
/// a template from a model file must not exhaust the host's memory.
#[global_allocator]
static ALLOCATOR: ember_runtime::memory_budget::BudgetAllocator =
    ember_runtime::memory_budget::BudgetAllocator;

pub use lora::*;
pub use model::*;
pub use session::*;

/// `ember_status`: 0 on success, a positive code naming the kind of failure.
pub type ember_status = i32;

pub const EMBER_OK: ember_status = 0;
pub const EMBER_ERR_INVALID_ARGUMENT: ember_status = 1;
pub const EMBER_ERR_BUFFER_TOO_SMALL: ember_status = 2;
pub const EMBER_ERR_IO: ember_status = 3;
pub const EMBER_ERR_FORMAT: ember_status = 4;
pub const EMBER_ERR_TOKEN_OUT_OF_RANGE: ember_status = 5;
pub const EMBER_ERR_CONTEXT_FULL: ember_status = 6;
pub const EMBER_ERR_TEMPLATE: ember_status = 7;
pub const EMBER_ERR_STATE: ember_status = 8;
pub const EMBER_ERR_UNSUPPORTED: ember_status = 9;
pub const EMBER_ERR_INTERNAL: ember_status = 10;
pub const EMBER_ERR_OUT_OF_MEMORY: ember_status = 11;

/// `EMBER_ABI_VERSION` in the header.
pub const ABI_VERSION: u32 = 1;

/// A failure on its way to C: the status and the message for `ember_last_error`.
#[derive(Debug)]
pub(crate) struct CError {
    pub status: ember_status,
    pub message: String,
}

pub(crate) type CResult<T = ()> = Result<T, CError>;

impl CError {
    pub fn new(status: ember_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(EMBER_ERR_INVALID_ARGUMENT, message)
    }
}

/// `EMBER_ERR_OUT_OF_MEMORY` for `n` elements of `T` of `what`.
fn out_of_memory<T>(n: usize, what: &str) -> CError {
    let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    ember_runtime::Error::out_of_memory(what, bytes, "").into()
}

/// An empty vector with room for `n` elements, or `EMBER_ERR_OUT_OF_MEMORY`
/// naming `what`: for copies whose size the caller decides.
pub(crate) fn try_vec<T>(n: usize, what: &str) -> CResult<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| out_of_memory::<T>(n, what))?;
    Ok(v)
}

/// A copy of the caller's `text`, or `EMBER_ERR_OUT_OF_MEMORY` naming `what`.
pub(crate) fn try_string(text: &str, what: &str) -> CResult<String> {
    let mut s = String::new();
    s.try_reserve_exact(text.len())
        .map_err(|_| out_of_memory::<u8>(text.len(), what))?;
    s.push_str(text);
    Ok(s)
}

impl From<ember_runtime::Error> for CError {
    fn from(e: ember_runtime::Error) -> Self {
        use ember_runtime::Error as E;
        let status = match &e {
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::OutOfMemory => {
                EMBER_ERR_OUT_OF_MEMORY
            }
            E::Io { .. } => EMBER_ERR_IO,
            E::TokenOutOfRange { .. } => EMBER_ERR_TOKEN_OUT_OF_RANGE,
            E::ContextFull { .. } => EMBER_ERR_CONTEXT_FULL,
            E::InvalidArgument(_) => EMBER_ERR_INVALID_ARGUMENT,
            E::BigEndianHost => EMBER_ERR_UNSUPPORTED,
            E::OutOfMemory { .. } => EMBER_ERR_OUT_OF_MEMORY,
            // Everything else describes a bad or unsupported file.
            _ => EMBER_ERR_FORMAT,
        };
        Self::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with an interior NUL is cut there (C would stop reading anyway).
    let bytes = message.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let c = CString::new(&bytes[..end]).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; drop the message.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// Runs one entry point: maps its error to a status and records the message,
/// and turns a panic into `EMBER_ERR_INTERNAL`.
pub(crate) fn boundary(f: impl FnOnce() -> CResult) -> ember_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => EMBER_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error in Ember (please report): {what}"));
            EMBER_ERR_INTERNAL
        }
    }
}

/// Like [`boundary`] for functions that return nothing (the `*_free`s).
pub(crate) fn boundary_void(f: impl FnOnce()) {
    let _ = boundary(|| {
        f();
        Ok(())
    });
}

/// The library version, e.g. `"0.1.0"`.
#[no_mangle]
pub extern "C" fn ember_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version the library was built with.
#[no_mangle]
pub extern "C" fn ember_abi_version() -> u32 {
    ABI_VERSION
}

/// The last error message of this thread (`""` if none); valid until the next
/// failing call on this thread.
#[no_mangle]
pub extern "C" fn ember_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// A static name for a status code.
#[no_mangle]
pub extern "C" fn ember_status_name(status: ember_status) -> *const c_char {
    let name: &'static CStr = match status {
        EMBER_OK => c"EMBER_OK",
        EMBER_ERR_INVALID_ARGUMENT => c"EMBER_ERR_INVALID_ARGUMENT",
        EMBER_ERR_BUFFER_TOO_SMALL => c"EMBER_ERR_BUFFER_TOO_SMALL",
        EMBER_ERR_IO => c"EMBER_ERR_IO",
        EMBER_ERR_FORMAT => c"EMBER_ERR_FORMAT",
        EMBER_ERR_TOKEN_OUT_OF_RANGE => c"EMBER_ERR_TOKEN_OUT_OF_RANGE",
        EMBER_ERR_CONTEXT_FULL => c"EMBER_ERR_CONTEXT_FULL",
        EMBER_ERR_TEMPLATE => c"EMBER_ERR_TEMPLATE",
        EMBER_ERR_STATE => c"EMBER_ERR_STATE",
        EMBER_ERR_UNSUPPORTED => c"EMBER_ERR_UNSUPPORTED",
        EMBER_ERR_INTERNAL => c"EMBER_ERR_INTERNAL",
        EMBER_ERR_OUT_OF_MEMORY => c"EMBER_ERR_OUT_OF_MEMORY",
        _ => c"unknown status",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: ember_last_error returns a NUL-terminated string, never NULL.
        unsafe { CStr::from_ptr(ember_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let st = boundary(|| panic!("kaboom {}", 42));
        assert_eq!(st, EMBER_ERR_INTERNAL);
        assert!(last().contains("kaboom 42"), "{}", last());
    }

    #[test]
    fn allocation_failures_map_to_out_of_memory() {
        let e = CError::from(ember_runtime::Error::out_of_memory("x", 1, ""));
        assert_eq!(e.status, EMBER_ERR_OUT_OF_MEMORY);
        let io = ember_runtime::Error::Io {
            path: "adapter_model.safetensors".into(),
            source: std::io::ErrorKind::OutOfMemory.into(),
        };
        assert_eq!(CError::from(io).status, EMBER_ERR_OUT_OF_MEMORY);
        let io = ember_runtime::Error::Io {
            path: "x".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(CError::from(io).status, EMBER_ERR_IO);
        let e = try_vec::<u64>(usize::MAX / 4, "the stop strings").unwrap_err();
        assert_eq!(e.status, EMBER_ERR_OUT_OF_MEMORY);
        assert!(
            e.message.starts_with("cannot allocate") && e.message.contains("the stop strings"),
            "{}",
            e.message
        );
        assert_eq!(try_vec::<u8>(10, "x").unwrap().capacity(), 10);
    }

    #[test]
    fn errors_set_the_message_and_success_keeps_it() {
        assert_eq!(
            boundary(|| Err(CError::invalid("bad\0tail"))),
            EMBER_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last(), "bad");
        assert_eq!(boundary(|| Ok(())), EMBER_OK);
        assert_eq!(last(), "bad");
    }
}
