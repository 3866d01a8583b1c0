//! Linux-specific pieces, isolated behind small interfaces (one file per concern).
//!
//! Under `cfg(loom)` both have model stand-ins: a futex that really blocks loom threads ([`futex::model`]) and a
//! process table in which a model can declare a pid dead ([`process::model`]). [`loom_model`] runs a model with
//! both reset for every execution.

pub mod futex;
pub mod limits;
pub mod process;

#[cfg(all(test, loom))]
mod loom_tests;

/// Runs a loom model (the bounds of `base::loom_model`) with a fresh futex model in the given time regime and
/// every process alive, for every execution. Every model of the crate runs through here.
#[cfg(all(test, loom))]
pub(crate) fn loom_model<F: Fn() + Sync + Send + 'static>(time: futex::model::Time, preemptions: usize, f: F) {
    crate::base::loom_model(preemptions, move || {
        futex::model::reset(time);
        process::model::reset();
        f()
    });
}
