//! A small persistent worker pool for splitting the rows of one matrix-vector
//! product (or any slice whose elements can be produced independently, such
//! as the Q8_0 blocks of a batch's quantized inputs) over threads, owned by a
//! session.
//!
//! The workers are started once, when the session is created; handing them a
//! job allocates nothing and takes no lock. A job is cut into `CHUNKS_PER_THREAD
//! x threads` chunks of rows that the caller and the workers claim from one
//! atomic word, `claim = epoch:32 | chunks:16 | next:16`:
//! ```text
//! caller: write job -> done = 0 -> claim = (epoch + 1, n, 0), wake parked workers
//!         -> claim and run chunks until none is left -> wait until done == n
//! worker: wait for a new epoch (spin, yield, then park) -> claim and run chunks
//!         (compare-exchange on `claim`, only while it still holds that epoch)
//!         -> done += 1 per chunk
//! ```
//! Claiming rather than fixed shares matters on a loaded machine: a worker that
//! is not scheduled in time simply claims nothing and the caller does its rows,
//! instead of the caller waiting a whole time slice for it.
//!
//! The job is a closure on the caller's stack, published as a thin pointer.
//! A worker reads it only after claiming a chunk of the current epoch, and
//! `Pool::split` returns (or unwinds, if the caller's own chunk panics)
//! only after every chunk is done: the pointer never outlives the data. This
//! scope guarantee is the reason this module needs `unsafe`; it is the only
//! module of the runtime besides the memory map that does.
//!
//! A pool of 1 thread has no workers, allocates nothing and runs every job on
//! the calling thread.

#![allow(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// The job type: called with the index of a chunk's first element and the
/// chunk's elements.
pub type Job<'a, T> = dyn Fn(usize, &mut [T]) + Sync + 'a;
/// A job over rows of f32 results.
pub type RowJob<'a> = Job<'a, f32>;

/// Runs the job `job` (a `*const &Job<T>`) on elements `r0..r1` of the slice at
/// `base`: the one place that knows the job's element type, published to the
/// workers as a plain function pointer with the job.
///
/// # Safety
/// `job` points to a live `&Job<'_, T>` and `base` to a live `[T]` of at
/// least `r1` elements, of which `r0..r1` are borrowed by no one else.
unsafe fn call_job<T>(job: *const (), base: *mut (), r0: usize, r1: usize) {
    // SAFETY: the caller's contract.
    let (f, items) = unsafe {
        (
            &**(job as *const &Job<'_, T>),
            std::slice::from_raw_parts_mut((base as *mut T).add(r0), r1 - r0),
        )
    };
    f(r0, items)
}

/// `call_job` for the current job's element type.
type CallJob = unsafe fn(*const (), *mut (), usize, usize);

/// Chunks per thread: more than one so that a late or slow thread costs at
/// most a fraction of a share; few, so that claiming stays negligible.
const CHUNKS_PER_THREAD: usize = 4;
/// Spin iterations a waiting thread polls before it starts yielding. Decode
/// runs the next matrix-vector product within microseconds of the last, so a
/// worker rarely sleeps within a token; between tokens it parks.
const SPIN: u32 = 4096;
/// `yield_now` rounds a worker tries after spinning, before it parks.
const YIELDS: u32 = 64;

/// Stack size of each worker thread (ember.h documents it): the kernels a
/// worker runs need well under 1 MiB.
pub const WORKER_STACK: usize = 2 << 20;

/// `claim` word layout.
const NEXT_BITS: u32 = 16;
const MASK: u64 = (1 << NEXT_BITS) - 1;

fn pack(epoch: u64, chunks: u64, next: u64) -> u64 {
    (epoch << (2 * NEXT_BITS)) | (chunks << NEXT_BITS) | next
}
fn epoch_of(c: u64) -> u64 {
    c >> (2 * NEXT_BITS)
}

/// State shared by the caller and the workers: all atomics.
struct Shared {
    /// `epoch:32 | chunks:16 | next:16`: the current job's epoch, its chunk
    /// count and the next unclaimed chunk.
    claim: AtomicU64,
    /// Chunks of the current job finished (by anyone).
    done: AtomicUsize,
    /// A worker's chunk of the current job panicked.
    panicked: AtomicBool,
    /// Set (with an epoch increment) when the pool is dropped.
    shutdown: AtomicBool,
    /// The current job: a pointer to the caller's `&Job<T>` (valid while a
    /// claimed chunk is not done) and `call_job::<T>` as a pointer.
    job: AtomicPtr<()>,
    call: AtomicPtr<()>,
    /// The current job's output: base pointer, length and elements per chunk.
    out: AtomicPtr<()>,
    len: AtomicUsize,
    chunk: AtomicUsize,
}

impl Shared {
    /// Claims the next chunk of the job of `epoch`: its index, or `None` when
    /// every chunk is claimed or the job is no longer current.
    fn claim(&self, epoch: u64) -> Option<usize> {
        let mut c = self.claim.load(Ordering::Acquire);
        loop {
            let (n, next) = ((c >> NEXT_BITS) & MASK, c & MASK);
            if epoch_of(c) != epoch || next >= n {
                return None;
            }
            match self
                .claim
                .compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(next as usize),
                Err(now) => c = now,
            }
        }
    }

    /// Runs chunk `i` of the current job.
    ///
    /// # Safety
    /// `i` must have been claimed (`Shared::claim`) for the current job and
    /// not yet be counted in `done`.
    unsafe fn run_chunk(&self, i: usize) {
        let chunk = self.chunk.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed);
        let r0 = i * chunk;
        let r1 = (r0 + chunk).min(len);
        let base = self.out.load(Ordering::Relaxed);
        let job = self.job.load(Ordering::Relaxed) as *const ();
        // SAFETY: `call` holds `call_job::<T>` for the job's `T`, stored by
        // `Pool::split` from that function item (same signature).
        let call =
            unsafe { std::mem::transmute::<*mut (), CallJob>(self.call.load(Ordering::Relaxed)) };
        // SAFETY (for `call`): the claim (acquire) of a chunk of the current
        // epoch makes the job fields the caller wrote before publishing it
        // visible; the caller keeps `job` and `out` alive until `done` counts
        // this chunk, which happens after the job returns. Chunk `i` (elements
        // `r0..r1`, in bounds: `i < chunks = ceil(len / chunk)`) is claimed by
        // one thread.
        if catch_unwind(AssertUnwindSafe(|| unsafe { call(job, base, r0, r1) })).is_err() {
            self.panicked.store(true, Ordering::Relaxed);
        }
        // Release: the rows are written before the caller sees the count.
        self.done.fetch_add(1, Ordering::Release);
    }
}

/// One worker: its thread and whether it is (about to be) parked.
struct Worker {
    handle: Option<JoinHandle<()>>,
    parked: Arc<AtomicBool>,
}

/// A persistent pool of `threads - 1` workers plus the calling thread.
pub struct Pool {
    shared: Option<Arc<Shared>>,
    workers: Vec<Worker>,
    /// Epoch of the last job (the low 32 bits are used).
    epoch: u64,
}

impl Pool {
    /// A pool that runs jobs on `threads` threads (the caller and
    /// `threads - 1` workers started now, [`WORKER_STACK`] bytes of stack
    /// each). `threads <= 1`: no workers, no allocation. A thread the system
    /// cannot start (memory or thread limits) is the spawn's error, and the
    /// workers started so far are stopped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let n = threads.saturating_sub(1);
        let mut pool = Self {
            shared: None,
            workers: Vec::new(),
            epoch: 0,
        };
        if n == 0 {
            return Ok(pool);
        }
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            job: AtomicPtr::new(std::ptr::null_mut()),
            call: AtomicPtr::new(std::ptr::null_mut()),
            out: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
            chunk: AtomicUsize::new(0),
        });
        pool.shared = Some(shared.clone());
        pool.workers
            .try_reserve_exact(n)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        for index in 0..n {
            let parked = Arc::new(AtomicBool::new(false));
            let (s, p) = (shared.clone(), parked.clone());
            // On error, dropping `pool` stops the workers started so far.
            let handle = thread::Builder::new()
                .name(format!("ember-pool-{}", index + 1))
                .stack_size(WORKER_STACK)
                .spawn(move || worker_loop(&s, &p))?;
            pool.workers.push(Worker {
                handle: Some(handle),
                parked,
            });
        }
        Ok(pool)
    }

    /// Threads a job runs on, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(first_row, rows)` over `out` cut into consecutive chunks whose
    /// length is a multiple of `align` (but the last), on the calling thread
    /// and the workers. Returns when every chunk is done. A chunk that panics
    /// makes this call panic (after every chunk finished).
    pub fn split_rows(&mut self, out: &mut [f32], align: usize, f: &RowJob<'_>) {
        self.split(out, align, f)
    }

    /// `split_rows` over a slice of any element type that can be sent to
    /// another thread.
    pub fn split<T: Send>(&mut self, out: &mut [T], align: usize, f: &Job<'_, T>) {
        let len = out.len();
        let align = align.max(1);
        let pieces = self.threads() * CHUNKS_PER_THREAD;
        let chunk = len.div_ceil(pieces).div_ceil(align) * align;
        let Some(shared) = self.shared.as_deref() else {
            return f(0, out);
        };
        if chunk == 0 || chunk >= len {
            return f(0, out);
        }
        let chunks = len.div_ceil(chunk);
        debug_assert!((chunks as u64) <= MASK);
        self.epoch = (self.epoch + 1) & 0xffff_ffff;
        let epoch = self.epoch;
        // The pointer to `f` that workers read: a thin pointer to the fat one.
        let job: &Job<'_, T> = f;
        shared
            .job
            .store(&job as *const &Job<'_, T> as *mut (), Ordering::Relaxed);
        shared
            .call
            .store(call_job::<T> as CallJob as *mut (), Ordering::Relaxed);
        shared
            .out
            .store(out.as_mut_ptr() as *mut (), Ordering::Relaxed);
        shared.len.store(len, Ordering::Relaxed);
        shared.chunk.store(chunk, Ordering::Relaxed);
        shared.done.store(0, Ordering::Relaxed);
        // Publishes the job (release). SeqCst pairs with the worker's `parked`
        // store then `claim` load: either it sees the new epoch or we see it
        // parked and wake it.
        shared
            .claim
            .store(pack(epoch, chunks as u64, 0), Ordering::SeqCst);
        for w in &self.workers {
            if w.parked.load(Ordering::SeqCst) {
                if let Some(h) = &w.handle {
                    h.thread().unpark();
                }
            }
        }
        // Waits for every chunk even if one of the caller's panics.
        let guard = WaitGuard(shared, chunks);
        while let Some(i) = shared.claim(epoch) {
            // SAFETY: `i` was just claimed for the current job.
            unsafe { shared.run_chunk(i) };
        }
        drop(guard);
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a chunk of a pooled job panicked");
        }
    }
}

/// Blocks until every chunk of the current job is done. Unclaimed chunks
/// cannot remain: the caller claims until none is left, and its own chunks
/// catch panics.
struct WaitGuard<'a>(&'a Shared, usize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        // Acquire: the workers' rows are written before this returns.
        while self.0.done.load(Ordering::Acquire) < self.1 {
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
    }
}

fn worker_loop(s: &Shared, parked: &AtomicBool) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin, yield, then park.
        let mut spins = 0u32;
        loop {
            let e = epoch_of(s.claim.load(Ordering::Acquire));
            if e != seen {
                seen = e;
                break;
            }
            if spins < SPIN {
                std::hint::spin_loop();
            } else if spins < SPIN + YIELDS {
                thread::yield_now();
            } else {
                parked.store(true, Ordering::SeqCst);
                if epoch_of(s.claim.load(Ordering::SeqCst)) == seen {
                    thread::park();
                }
                parked.store(false, Ordering::SeqCst);
            }
            spins = spins.saturating_add(1);
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        while let Some(i) = s.claim(seen) {
            // SAFETY: `i` was just claimed for the current job.
            unsafe { s.run_chunk(i) };
        }
    }
}

impl Drop for Pool {
    /// Stops and joins the workers.
    fn drop(&mut self) {
        let Some(shared) = self.shared.as_deref() else {
            return;
        };
        shared.shutdown.store(true, Ordering::SeqCst);
        // A new epoch with no chunks wakes every worker, which then sees
        // `shutdown`.
        let epoch = (self.epoch + 1) & 0xffff_ffff;
        shared.claim.store(pack(epoch, 0, 0), Ordering::SeqCst);
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                h.thread().unpark();
                let _ = h.join();
            }
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_for_any_length_and_thread_count() {
        for threads in 1..=4 {
            let mut pool = Pool::new(threads).unwrap();
            for len in [0usize, 1, 3, 4, 5, 8, 9, 17, 64, 1001] {
                let mut out = vec![0.0f32; len];
                pool.split_rows(&mut out, 4, &|r0, rows| {
                    assert!(r0 % 4 == 0);
                    for (i, v) in rows.iter_mut().enumerate() {
                        *v += (r0 + i) as f32 + 1.0;
                    }
                });
                for (i, v) in out.iter().enumerate() {
                    assert_eq!(*v, i as f32 + 1.0, "threads {threads} len {len} row {i}");
                }
            }
        }
    }

    #[test]
    fn split_covers_every_element_of_other_types_once() {
        // A 34-byte element (a Q8_0 block's size), so a wrong element size in
        // the type-erased call would misplace the chunks.
        #[derive(Clone, Copy, PartialEq, Debug)]
        struct Block([u8; 34]);
        for threads in 1..=3 {
            let mut pool = Pool::new(threads).unwrap();
            for len in [0usize, 1, 7, 8, 9, 100, 1000] {
                let mut out = vec![Block([0; 34]); len];
                pool.split(&mut out, 1, &|b0, part| {
                    for (i, b) in part.iter_mut().enumerate() {
                        assert_eq!(b.0[0], 0, "element {} visited twice", b0 + i);
                        b.0 = [((b0 + i) % 251) as u8 + 1; 34];
                    }
                });
                for (i, b) in out.iter().enumerate() {
                    assert_eq!(
                        *b,
                        Block([(i % 251) as u8 + 1; 34]),
                        "threads {threads} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let mut pool = Pool::new(2).unwrap();
        let mut out = vec![0.0f32; 64];
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.split_rows(&mut out, 4, &|r0, _| assert!(r0 != 0, "boom"))
        }));
        assert!(r.is_err());
        pool.split_rows(&mut out, 4, &|_, rows| rows.fill(1.0));
        assert!(out.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn pool_is_send() {
        fn send<T: Send>() {}
        send::<Pool>();
    }
}

/// The cost of one hand-off (a tiny job on 2 threads, worker spinning):
/// `cargo test --release -p ember-runtime overhead -- --ignored --nocapture`.
#[cfg(test)]
mod overhead {
    use super::*;
    #[test]
    #[ignore = "a measurement, not a check"]
    fn handoff_overhead() {
        let mut pool = Pool::new(2).unwrap();
        let mut out = vec![0.0f32; 64];
        for _ in 0..1000 {
            pool.split_rows(&mut out, 4, &|_, r| r.fill(1.0));
        }
        let t = std::time::Instant::now();
        let n = 200_000;
        for _ in 0..n {
            pool.split_rows(&mut out, 4, &|_, r| r.fill(1.0));
        }
        eprintln!("split_rows round trip: {:?}", t.elapsed() / n);
    }
}
