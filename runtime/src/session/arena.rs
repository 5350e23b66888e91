//! Buffer storage for sessions: either owned heap vectors or slices carved from a
//! caller-provided byte arena. Both are sized once, at session creation.

use bytemuck::Pod;

use crate::error::{Error, Result};

/// A fixed-size buffer of `T`: owned (`Vec`, heap mode) or borrowed from an
/// [`Arena`]. It never grows; `Deref` gives the slice.
pub enum Slab<'a, T> {
    Heap(Vec<T>),
    Arena(&'a mut [T]),
}

impl<T> std::ops::Deref for Slab<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Self::Heap(v) => v,
            Self::Arena(s) => s,
        }
    }
}

/// An empty slab (allocates nothing): what `std::mem::take` leaves behind
/// while a buffer is lent out.
impl<T> Default for Slab<'_, T> {
    fn default() -> Self {
        Self::Arena(&mut [])
    }
}

impl<T> std::ops::DerefMut for Slab<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Self::Heap(v) => v,
            Self::Arena(s) => s,
        }
    }
}

/// Where a session's buffers come from.
pub enum Alloc<'r, 'a> {
    /// `Vec`s of exactly the requested length.
    Heap,
    /// Slices of the caller's arena.
    Arena(&'r mut Arena<'a>),
}

impl<'a> Alloc<'_, 'a> {
    /// A zeroed buffer of `n` elements.
    pub fn zeroed<T: Pod>(&mut self, n: usize) -> Result<Slab<'a, T>> {
        match self {
            Self::Heap => Ok(Slab::Heap(vec![T::zeroed(); n])),
            Self::Arena(a) => a.take(n).map(Slab::Arena),
        }
    }
}

/// A bump allocator over a caller's byte slice: each `take` returns the next
/// suitably aligned, zeroed run of elements. Nothing is ever freed individually;
/// the slices live as long as the borrow of the bytes.
pub struct Arena<'a> {
    rest: &'a mut [u8],
}

/// Alignment every arena buffer starts at: a cache line, so buffers do not share
/// lines and the bound in [`arena_size`] is simple.
pub const ARENA_ALIGN: usize = 64;

/// Bytes an arena needs for buffers of the given byte sizes taken in order:
/// each rounded up to [`ARENA_ALIGN`], plus `ARENA_ALIGN - 1` for aligning the
/// start of an arbitrary slice.
pub fn arena_size(sizes: &[usize]) -> usize {
    sizes
        .iter()
        .map(|s| s.div_ceil(ARENA_ALIGN) * ARENA_ALIGN)
        .sum::<usize>()
        + ARENA_ALIGN
        - 1
}

impl<'a> Arena<'a> {
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next `n` elements of `T`, zeroed, starting at an `ARENA_ALIGN` boundary;
    /// the buffer's end is padded to the next boundary too.
    pub fn take<T: Pod>(&mut self, n: usize) -> Result<&'a mut [T]> {
        debug_assert!(std::mem::align_of::<T>() <= ARENA_ALIGN);
        let bytes = n * std::mem::size_of::<T>();
        let rest = std::mem::take(&mut self.rest);
        let pad = rest.as_ptr().align_offset(ARENA_ALIGN);
        let need = pad + bytes.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        if pad == usize::MAX || need > rest.len() {
            let available = rest.len();
            self.rest = rest;
            return Err(Error::InvalidArgument(format!(
                "session arena too small: {need} more bytes needed, {available} left"
            )));
        }
        let (_, rest) = rest.split_at_mut(pad);
        let (buf, rest) = rest.split_at_mut(need - pad);
        self.rest = rest;
        let buf = &mut buf[..bytes];
        buf.fill(0);
        Ok(bytemuck::cast_slice_mut(buf))
    }
}
