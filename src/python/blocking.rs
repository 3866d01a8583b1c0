//! The one blocking path of the PyO3 layer: every call that may wait goes through [`block_on`].
//!
//! A blocking core call runs with the GIL released and with [`wait::poll_signals`] on, so it comes back with an
//! "interrupted" error at the end of every sleep slice (at most [`wait::SLICE`] for the locks, the queue's
//! `WaitPolicy::slice` for queues, both well under 100 ms) and on EINTR. `block_on` then runs Python's signal
//! handlers with the GIL: an exception they raise (KeyboardInterrupt from Ctrl-C) propagates; if they return,
//! the call is made again with the same deadline (PEP 475), so a handled signal is never an `InterruptedError`
//! and never extends or cuts short the timeout. The caller builds the deadline once, before the first call,
//! with the timeout reading of the API it implements (`multiprocessing`'s in `sync.rs`, `queue`'s in
//! `queue.rs`).

use crate::sync::barrier::BarrierError;
use crate::sync::rwlock::RwError;
use crate::sync::wait::{self, WaitError};
use pyo3::prelude::*;

/// Errors of a blocking core call that mean "a signal may be pending, or a slice ended: check, then call again".
pub(crate) trait Interruptible {
    /// Whether this is the retry case.
    fn interrupted(&self) -> bool;
}

impl Interruptible for WaitError {
    fn interrupted(&self) -> bool {
        *self == WaitError::Interrupted
    }
}

impl Interruptible for crate::Error {
    fn interrupted(&self) -> bool {
        matches!(self, crate::Error::Interrupted)
    }
}

impl Interruptible for RwError {
    fn interrupted(&self) -> bool {
        *self == RwError::Wait(WaitError::Interrupted)
    }
}

impl Interruptible for BarrierError {
    fn interrupted(&self) -> bool {
        *self == BarrierError::Interrupted
    }
}

/// Runs `f` with the GIL released until it returns anything but an interruption; between calls runs the signal
/// handlers (their exception is returned as the `Err` of the outer result). The inner result is `f`'s.
pub(crate) fn block_on<T: Send, E: Interruptible + Send>(
    py: Python<'_>,
    mut f: impl FnMut() -> Result<T, E> + Send,
) -> PyResult<Result<T, E>> {
    loop {
        let r = py.detach(|| {
            let _poll = wait::poll_signals();
            f()
        });
        match r {
            Err(e) if e.interrupted() => py.check_signals()?,
            other => return Ok(other),
        }
    }
}

/// [`block_on`] for calls whose only failures are a timeout and an interruption: `Ok(None)` on timeout.
pub(crate) fn block_until<T: Send>(
    py: Python<'_>,
    f: impl FnMut() -> Result<T, WaitError> + Send,
) -> PyResult<Option<T>> {
    match block_on(py, f)? {
        Ok(v) => Ok(Some(v)),
        Err(_) => Ok(None),
    }
}
