//! The ground floor: what every other layer may use and which uses nothing of the crate.
//!
//! * [`atomic`]: the one place atomic types come from. Code that touches shared memory takes them from here,
//!   never from `core::sync::atomic` (clippy's `disallowed-types` in `clippy.toml` enforces it), so that
//!   `cfg(loom)` can swap in loom's model-checked atomics for the lock-free algorithms.
//! * [`spin`]: a process-local spin mutex for short critical sections that must be handled around `fork()`.
//! * `child` (hidden): the test binary re-run as a child process, for tests of several processes.
//! * The loom hooks: [`yield_now`], [`yield_now_in_model`] and (tests under `cfg(loom)`) `loom_model`.

pub mod atomic;
#[doc(hidden)]
pub mod child;
pub mod spin;

/// Yields the thread (loom's yield under `cfg(loom)`, so model-checked retry loops stay finite).
#[inline]
pub fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Nothing outside loom; loom's yield under `cfg(loom)`, for short retry loops that need no yield in real life
/// but must yield in a model (a loop that cannot see other threads progress would never end there).
#[inline]
pub fn yield_now_in_model() {
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// The loom builder with the bounds the models of this crate use (models run through `platform::loom_model`,
/// which also resets the futex and process stand-ins): up to `preemptions` preemptions (most
/// concurrency bugs need few) and room for the retry loops of waiting threads.
#[cfg(all(test, loom))]
pub(crate) fn loom_model<F: Fn() + Sync + Send + 'static>(preemptions: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(f);
}
