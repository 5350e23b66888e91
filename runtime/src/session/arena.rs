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
    /// A zeroed buffer of `n` elements. On the heap a refused allocation (or
    /// a size past `isize::MAX`) is `Error::OutOfMemory` naming "a session
    /// buffer" (callers relabel it), never an abort; in an arena, too little
    /// room is `Error::InvalidArgument`.
    pub fn zeroed<T: Pod>(&mut self, n: usize) -> Result<Slab<'a, T>> {
        match self {
            Self::Heap => try_zeroed_vec(n).map(Slab::Heap),
            Self::Arena(a) => a.take(n).map(Slab::Arena),
        }
    }
}

/// `n` zeroed elements on the heap, or `Error::OutOfMemory`. The memory comes
/// from `alloc_zeroed` (calloc) as with `vec![0; n]`, so large buffers are
/// committed lazily as they are written, not at creation.
pub fn try_zeroed_vec<T: Pod>(n: usize) -> Result<Vec<T>> {
    bytemuck::allocation::try_zeroed_slice_box(n)
        .map(Vec::from)
        .map_err(|()| {
            let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
            Error::out_of_memory("a session buffer", bytes, "")
        })
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
/// Saturates at `usize::MAX` (a size no arena has) instead of wrapping.
pub fn arena_size(sizes: &[usize]) -> usize {
    sizes
        .iter()
        .map(|s| s.div_ceil(ARENA_ALIGN).saturating_mul(ARENA_ALIGN))
        .fold(ARENA_ALIGN - 1, usize::saturating_add)
}

impl<'a> Arena<'a> {
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next `n` elements of `T`, zeroed, starting at an `ARENA_ALIGN` boundary;
    /// the buffer's end is padded to the next boundary too.
    pub fn take<T: Pod>(&mut self, n: usize) -> Result<&'a mut [T]> {
        debug_assert!(std::mem::align_of::<T>() <= ARENA_ALIGN);
        let rest = std::mem::take(&mut self.rest);
        let pad = rest.as_ptr().align_offset(ARENA_ALIGN);
        // Saturating: a size past the address space is "too small", not a wrap.
        let bytes = n.saturating_mul(std::mem::size_of::<T>());
        let need = pad.saturating_add(bytes.div_ceil(ARENA_ALIGN).saturating_mul(ARENA_ALIGN));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap buffer past what the allocator can give is an error, not an
    /// abort: `isize::MAX` bytes and more fail before any allocation is tried.
    #[test]
    fn an_impossible_heap_buffer_is_out_of_memory() {
        for n in [usize::MAX, usize::MAX / 4, isize::MAX as usize / 4 + 1] {
            match Alloc::Heap.zeroed::<f32>(n) {
                Err(Error::OutOfMemory { bytes, .. }) => {
                    assert_eq!(bytes, (n as u64).saturating_mul(4), "n {n}")
                }
                Err(e) => panic!("n {n}: {e}"),
                Ok(_) => panic!("n {n}: allocated"),
            }
        }
        let ok: Slab<'_, f32> = Alloc::Heap.zeroed(1000).unwrap();
        assert!(ok.len() == 1000 && ok.iter().all(|&x| x == 0.0));
        let empty: Slab<'_, u64> = Alloc::Heap.zeroed(0).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn impossible_arena_sizes_saturate() {
        assert_eq!(arena_size(&[usize::MAX - 10, 100]), usize::MAX);
        let mut bytes = [0u8; 256];
        let mut arena = Arena::new(&mut bytes);
        assert!(matches!(
            arena.take::<f32>(usize::MAX / 2),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(arena.take::<f32>(8).unwrap().len(), 8);
    }
}
