//! Helpers shared by the C API test files.

use std::ffi::CStr;

use ember::{ember_last_error, ember_status, EMBER_OK};

/// This thread's last error message.
pub fn last_error() -> String {
    // SAFETY: ember_last_error never returns NULL and the string is NUL-terminated.
    unsafe { CStr::from_ptr(ember_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts `st` is `EMBER_OK`, showing the message otherwise.
pub fn check(st: ember_status) {
    assert_eq!(st, EMBER_OK, "{}", last_error());
}
