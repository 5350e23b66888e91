//! Stopping long writes cleanly: SIGINT, SIGTERM and SIGHUP set a flag the
//! writer checks between tensors, so it removes its temporary file and exits
//! with "interrupted" instead of leaving the file behind; a second signal ends
//! the process at once.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// A flag set by the first SIGINT, SIGTERM or SIGHUP; the next one exits with
/// status 1. Registration failures (none on Linux) leave the default action.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // Order matters: the shutdown hook must see the flag before this
        // signal sets it, so only a second signal exits.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}
