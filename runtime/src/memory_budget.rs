//! A memory budget for one thread, for work whose memory an input decides and
//! nothing else bounds: a chat template from a model file can double a string a
//! few dozen times in a few hundred bytes of source, and Rust's infallible
//! allocation would abort the process when memory runs out.
//!
//! [`BudgetAllocator`] wraps the system allocator; a program installs it with
//! `#[global_allocator]` (the `ember` binary and `libember.a` do). A thread that
//! [`Budget::enter`]s a budget has its live allocations counted; a large
//! allocation ([`SMALLEST_REFUSED`]) that would cross the limit is never made:
//! the budget is marked exceeded and
//! the thread sleeps forever, holding what it had (at most the limit), while the
//! thread that waits for it sees [`Budget::exceeded`] and returns an error
//! ([`run_with_budget`]). Without the allocator installed budgets count nothing.
//!
//! Threads without a budget pay one thread-local read per allocation; the
//! decoding path allocates nothing.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The system allocator, counting the live bytes of threads inside a [`Budget`].
pub struct BudgetAllocator;

thread_local! {
    /// The budget the current thread is inside (null: none). Const-initialized
    /// without a destructor, so reading it never allocates.
    static CURRENT: Cell<*const Budget> = const { Cell::new(ptr::null()) };
}

/// The budget of the calling thread, if any (null while thread-locals are
/// being torn down).
fn current() -> *const Budget {
    CURRENT.try_with(Cell::get).unwrap_or(ptr::null())
}

/// Smallest request a budget refuses: smaller ones are counted but always
/// granted, so that the thread never stops inside a small allocation made under
/// a process-wide lock (printing a panic, reading the environment). Memory that
/// grows without end reaches the limit through large requests: a buffer that
/// doubles, a collection that grows.
pub const SMALLEST_REFUSED: usize = 64 << 10;

/// Counts `size` more bytes against `budget`, or, when a request of at least
/// [`SMALLEST_REFUSED`] bytes would cross its limit, marks it exceeded and
/// never returns.
fn charge(budget: &Budget, size: usize) {
    let used = budget.used.load(Ordering::Relaxed);
    if size >= SMALLEST_REFUSED && size > budget.limit.saturating_sub(used) {
        budget.exceeded.store(true, Ordering::Release);
        // Sleeping neither allocates nor unwinds (an allocator must do neither);
        // the waiting thread has given up on this one.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    budget
        .used
        .store(used.saturating_add(size), Ordering::Relaxed);
}

/// Takes `size` bytes off `budget`'s count (memory this thread frees).
fn refund(budget: &Budget, size: usize) {
    let used = budget.used.load(Ordering::Relaxed);
    budget
        .used
        .store(used.saturating_sub(size), Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the budget bookkeeping
// neither allocates nor unwinds.
unsafe impl GlobalAlloc for BudgetAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the pointer is null or a `Budget` kept alive by its thread
        // (`Budget::enter`).
        if let Some(budget) = unsafe { current().as_ref() } {
            charge(budget, layout.size());
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        if let Some(budget) = unsafe { current().as_ref() } {
            charge(budget, layout.size());
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`.
        if let Some(budget) = unsafe { current().as_ref() } {
            refund(budget, layout.size());
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `alloc`.
        if let Some(budget) = unsafe { current().as_ref() } {
            if new_size > layout.size() {
                charge(budget, new_size - layout.size());
            } else {
                refund(budget, layout.size() - new_size);
            }
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A limit on the live bytes the threads inside it allocate (counted by
/// [`BudgetAllocator`]).
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    exceeded: AtomicBool,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            exceeded: AtomicBool::new(false),
        })
    }

    /// Whether an allocation was refused for the limit (its thread sleeps for ever).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts the calling thread's allocations against this budget until the
    /// guard drops. Contract: one thread at a time (the count is not shared).
    pub fn enter(self: &Arc<Self>) -> BudgetGuard {
        let budget = Arc::clone(self);
        CURRENT.with(|c| c.set(Arc::as_ptr(&budget)));
        BudgetGuard { _budget: budget }
    }
}

/// Keeps a thread inside a [`Budget`] until dropped.
pub struct BudgetGuard {
    /// Keeps the budget the thread-local points to alive; dropped after `drop`
    /// has cleared the pointer.
    _budget: Arc<Budget>,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(ptr::null()));
    }
}

/// Why [`run_with_budget`] returned no result.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The work needed more than the budget's limit (bytes).
    #[error("needed more than {0} bytes of memory")]
    Exceeded(usize),
    /// The thread could not be started (out of memory or threads).
    #[error("cannot start a thread: {0}")]
    Thread(#[from] io::Error),
}

/// How often the waiting thread looks whether the worker's budget is exceeded.
const POLL: Duration = Duration::from_millis(5);

/// Runs `f` on a new thread with a `stack`-byte stack inside a budget of
/// `limit` bytes and returns its result (a panic in `f` resumes on the
/// caller). When `f` needs more, the error comes back at once and the thread
/// stays asleep, holding at most `limit` bytes, until the process ends.
pub fn run_with_budget<T: Send + 'static>(
    limit: usize,
    stack: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BudgetError> {
    let budget = Budget::new(limit);
    let (tx, rx) = mpsc::sync_channel(1);
    let inside = Arc::clone(&budget);
    let handle = std::thread::Builder::new()
        .name("ember-budgeted".into())
        .stack_size(stack)
        .spawn(move || {
            let guard = inside.enter();
            let result = f();
            drop(guard);
            // The receiver is gone only when the caller gave up, never here.
            let _ = tx.send(result);
        })?;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(result) => {
                let _ = handle.join();
                return Ok(result);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if budget.exceeded() {
                    return Err(BudgetError::Exceeded(limit));
                }
            }
            // The thread ended without sending: only a panic does that.
            Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the budgeted thread sends before it ends"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_within_its_budget_returns_its_result() {
        let got = run_with_budget(1 << 20, 1 << 20, || vec![7u8; 1000]).unwrap();
        assert_eq!(got, vec![7u8; 1000]);
        // Memory freed inside the budget is counted back: 100 x 100 KiB in 1 MiB.
        let total = run_with_budget(1 << 20, 1 << 20, || {
            (0..100).map(|_| vec![1u8; 100 << 10].len()).sum::<usize>()
        })
        .unwrap();
        assert_eq!(total, 100 * (100 << 10));
    }

    #[test]
    fn work_over_its_budget_is_an_error() {
        let doubling = || {
            let mut s = String::from("x");
            for _ in 0..40 {
                s = s.repeat(2);
            }
            s.len()
        };
        match run_with_budget(4 << 20, 1 << 20, doubling) {
            Err(BudgetError::Exceeded(n)) => assert_eq!(n, 4 << 20),
            other => panic!("{other:?}"),
        }
        // The calling thread is not limited.
        assert_eq!(vec![0u8; 8 << 20].len(), 8 << 20);
    }

    #[test]
    fn a_panic_resumes_on_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            // Room for the panic hook's backtrace.
            let _ = run_with_budget(256 << 20, 1 << 20, || -> u32 { panic!("inside") });
        });
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside"));
    }
}
