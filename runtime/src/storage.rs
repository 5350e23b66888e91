//! Where a model's bytes live: a read-only memory map of the file (the normal
//! case: zero copies, pages shared between processes), an owned, 64-byte
//! aligned copy (models handed over as a buffer), or a caller's buffer that
//! lives for the rest of the program (a model in flash or in a mapping the
//! caller owns: zero copies).

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Alignment of owned buffers; matches the format's minimum tensor alignment.
const OWNED_ALIGNMENT: usize = 64;

pub(crate) enum Storage {
    Mapped(memmap2::Mmap),
    Owned {
        buf: Vec<u8>,
        start: usize,
        len: usize,
    },
    /// A caller's 64-byte aligned file image, used in place.
    Borrowed(&'static [u8]),
}

impl Storage {
    /// Maps `path` read-only.
    pub fn map(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        // Opening a FIFO or a device would block or read forever: only regular
        // files are models.
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            // mmap of an empty file fails on some systems; report it as what it is.
            return Self::copy_aligned(&[]);
        }
        // SAFETY: the map is read-only and private to this process. Ember never writes
        // to model files it has open; the contract documented on `Model::load` is that
        // the file must not be truncated or modified by another process while loaded
        // (the same contract as every mmap-based runtime). All reads go through the
        // bounds validated at load.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Self::Mapped(map))
    }

    /// Copies `bytes` into a fresh buffer whose start is 64-byte aligned.
    /// Errors: the buffer cannot be allocated ([`Error::OutOfMemory`]): the
    /// size comes from the caller.
    pub fn copy_aligned(bytes: &[u8]) -> Result<Self> {
        let size = bytes.len().saturating_add(OWNED_ALIGNMENT);
        let mut buf = Vec::new();
        buf.try_reserve_exact(size)
            .map_err(|_| Error::out_of_memory("a copy of the model image", size as u64, ""))?;
        buf.resize(size, 0);
        let start = buf
            .as_ptr()
            .align_offset(OWNED_ALIGNMENT)
            .min(OWNED_ALIGNMENT);
        buf[start..start + bytes.len()].copy_from_slice(bytes);
        Ok(Self::Owned {
            buf,
            start,
            len: bytes.len(),
        })
    }

    /// Uses `bytes` in place when its start is 64-byte aligned (the alignment the
    /// format guarantees for tensors relative to the file start), otherwise copies
    /// it like [`copy_aligned`](Self::copy_aligned).
    pub fn borrowed_or_copied(bytes: &'static [u8]) -> Result<Self> {
        if (bytes.as_ptr() as usize).is_multiple_of(OWNED_ALIGNMENT) {
            Ok(Self::Borrowed(bytes))
        } else {
            Self::copy_aligned(bytes)
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned { buf, start, len } => &buf[*start..*start + *len],
            Self::Borrowed(b) => b,
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped(_))
    }
}
