//! Turning C arguments into Rust values: NULL, alignment, UTF-8 and size
//! checks, and the two struct conventions of `ember.h` (input structs and
//! output structs that start with their own `struct_size`).
//!
//! Contract shared by every `unsafe fn` here: a non-NULL pointer from C points
//! to what the header says it does (a live object of the type, or `n`
//! elements) for the duration of the call. That cannot be checked; NULL,
//! misalignment, bad sizes and bad text are.

use std::ffi::{c_char, CStr};
use std::mem::size_of;

use crate::{CError, CResult, EMBER_ERR_BUFFER_TOO_SMALL, EMBER_ERR_UNSUPPORTED};

fn null(what: &str) -> CError {
    CError::invalid(format!("{what} is NULL"))
}

fn misaligned(what: &str) -> CError {
    CError::invalid(format!("{what} is not aligned for its type"))
}

/// `&T` from a non-NULL, aligned pointer.
///
/// # Safety
/// See the module contract; the object must not be mutated during the call.
pub unsafe fn as_ref<'a, T>(p: *const T, what: &str) -> CResult<&'a T> {
    if p.is_null() {
        return Err(null(what));
    }
    if !p.is_aligned() {
        return Err(misaligned(what));
    }
    // SAFETY: non-NULL and aligned (checked); valid per the module contract.
    Ok(unsafe { &*p })
}

/// `&mut T` for an out-parameter.
///
/// # Safety
/// See the module contract; nothing else may access the object during the call.
pub unsafe fn as_mut<'a, T>(p: *mut T, what: &str) -> CResult<&'a mut T> {
    if p.is_null() {
        return Err(null(what));
    }
    if !p.is_aligned() {
        return Err(misaligned(what));
    }
    // SAFETY: non-NULL and aligned (checked); valid and unaliased per the contract.
    Ok(unsafe { &mut *p })
}

/// A slice of `n` elements; `p` may be NULL when `n` is 0.
///
/// # Safety
/// See the module contract (`n` initialised elements at `p`).
pub unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> CResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null(what));
    }
    if !p.is_aligned() {
        return Err(misaligned(what));
    }
    if n.checked_mul(size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(CError::invalid(format!("{what}: {n} elements is too many")));
    }
    // SAFETY: non-NULL, aligned, size within isize::MAX (checked); `n` valid
    // elements per the contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// See the module contract (`p` points to a NUL-terminated string).
pub unsafe fn text<'a>(p: *const c_char, what: &str) -> CResult<&'a str> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL; NUL-terminated per the contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|e| CError::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// Writes `bytes` (+ a NUL when `nul`) to `buf` of `capacity` bytes and the
/// length without NUL to `*len` (if `len` is not NULL). Too small: reports the
/// length and fails with `EMBER_ERR_BUFFER_TOO_SMALL` without writing `buf`.
///
/// # Safety
/// See the module contract (`buf` has `capacity` writable bytes).
pub unsafe fn write_bytes(
    bytes: &[u8],
    nul: bool,
    buf: *mut u8,
    capacity: usize,
    len: *mut usize,
    what: &str,
) -> CResult {
    // SAFETY: forwarded contract.
    let mut out = unsafe { out_text(bytes.len(), nul, buf, capacity, len, what)? };
    out.push(bytes);
    out.finish();
    Ok(())
}

/// A caller's text buffer checked for `size` bytes of text (+ a NUL when
/// `nul`), to be filled piece by piece: the text of the buffer convention
/// produced without a copy of it on the Rust side.
pub struct OutText {
    buf: *mut u8,
    /// Bytes written so far, at most `size`.
    at: usize,
    size: usize,
    nul: bool,
}

impl OutText {
    /// Appends `piece`. Panics (a bug: the size was measured wrong) past `size`.
    pub fn push(&mut self, piece: &[u8]) {
        assert!(
            piece.len() <= self.size - self.at,
            "text longer than measured"
        );
        // SAFETY: `buf` has `size + nul` writable bytes (checked by `out_text`),
        // of which `at..at + piece.len()` are in bounds (asserted); a caller
        // buffer cannot overlap the Rust-owned `piece`.
        unsafe {
            std::ptr::copy_nonoverlapping(piece.as_ptr(), self.buf.add(self.at), piece.len())
        };
        self.at += piece.len();
    }

    /// Writes the NUL (when asked for). Panics unless exactly `size` bytes
    /// were pushed.
    pub fn finish(self) {
        assert_eq!(self.at, self.size, "text shorter than measured");
        if self.nul {
            // SAFETY: `buf` has `size + 1` writable bytes (checked by `out_text`).
            unsafe { *self.buf.add(self.size) = 0 };
        }
    }
}

/// Checks `buf` of `capacity` bytes for `size` bytes of text + a NUL (when
/// `nul`) and reports `size` in `*len` (if `len` is not NULL). Too small:
/// `EMBER_ERR_BUFFER_TOO_SMALL` (with `*len` set); nothing is written to `buf`
/// until the returned [`OutText`] is filled.
///
/// # Safety
/// See the module contract (`buf` has `capacity` writable bytes, not used
/// otherwise until the `OutText` is finished).
pub unsafe fn out_text(
    size: usize,
    nul: bool,
    buf: *mut u8,
    capacity: usize,
    len: *mut usize,
    what: &str,
) -> CResult<OutText> {
    if capacity > 0 && buf.is_null() {
        return Err(null(what));
    }
    let len = if len.is_null() {
        None
    } else {
        // SAFETY: per the module contract.
        Some(unsafe { as_mut(len, "the length pointer")? })
    };
    if let Some(l) = len {
        *l = size;
    }
    let need = size.saturating_add(usize::from(nul));
    if capacity < need {
        return Err(CError::new(
            EMBER_ERR_BUFFER_TOO_SMALL,
            format!("{what} holds {capacity} bytes but {need} are needed"),
        ));
    }
    // `buf` is non-NULL whenever a byte is written: need > 0 implies capacity > 0.
    Ok(OutText {
        buf,
        at: 0,
        size,
        nul,
    })
}

/// A `#[repr(C)]` struct of plain data (integers, floats, raw pointers: every
/// bit pattern valid) whose first field is `struct_size: usize`.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, start with a `usize` size field and
/// accept any bit pattern in every field.
pub unsafe trait Versioned: Copy {
    /// Size of the first published version of the struct: smaller is an error.
    const MIN_SIZE: usize;
}

/// Reads an input struct: `struct_size` in `MIN_SIZE..=size_of::<T>()`; fields
/// past the caller's size keep the values of `defaults`.
///
/// # Safety
/// See the module contract (`p` points to `struct_size` readable bytes).
pub unsafe fn read_versioned<T: Versioned>(p: *const T, defaults: T, what: &str) -> CResult<T> {
    // SAFETY: per the module contract; `T` starts with a usize.
    let size = unsafe { *as_ref(p.cast::<usize>(), what)? };
    check_size::<T>(size, what)?;
    let mut v = defaults;
    // SAFETY: `size <= size_of::<T>()` bytes are readable at `p` (contract) and
    // writable in `v`; any bit pattern is a valid `T` (Versioned).
    unsafe {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&raw mut v).cast::<u8>(), size);
    }
    Ok(v)
}

/// Writes an output struct: the first `struct_size` bytes (as set by the
/// caller, at least `MIN_SIZE`) of `value`, keeping the caller's size field.
///
/// # Safety
/// See the module contract (`p` points to `struct_size` writable bytes).
pub unsafe fn write_versioned<T: Versioned>(p: *mut T, value: T, what: &str) -> CResult {
    // SAFETY: per the module contract; `T` starts with a usize.
    let size = unsafe { *as_ref(p.cast::<usize>().cast_const(), what)? };
    if size < T::MIN_SIZE {
        return Err(CError::invalid(format!(
            "{what}: struct_size {size} is below the minimum {} (set it to sizeof)",
            T::MIN_SIZE
        )));
    }
    let n = size.min(size_of::<T>());
    // SAFETY: `n` bytes are writable at `p` (contract: struct_size bytes) and
    // readable in `value`; the first usize is rewritten with the caller's size.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), p.cast::<u8>(), n);
        *p.cast::<usize>() = size;
    }
    Ok(())
}

/// Checks an input struct's size against what this build knows.
pub fn check_size<T: Versioned>(size: usize, what: &str) -> CResult {
    if size < T::MIN_SIZE {
        return Err(CError::invalid(format!(
            "{what}: struct_size {size} is below the minimum {} (initialise it with its \
             *_default function and sizeof)",
            T::MIN_SIZE
        )));
    }
    if size > size_of::<T>() {
        return Err(CError::new(
            EMBER_ERR_UNSUPPORTED,
            format!(
                "{what}: struct_size {size} is larger than this library's {} (ember.h is \
                 newer than libember)",
                size_of::<T>()
            ),
        ));
    }
    Ok(())
}
