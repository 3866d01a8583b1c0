//! The one reading of a Python `timeout=` argument, shared by every blocking call.
//!
//! multiprocessing (and threading's `Event`/`Condition`/`Barrier`) treat a negative timeout as 0: try once,
//! then report failure at once. `queue.Queue` raises `ValueError` instead, and threading's `Lock.acquire`
//! reads `-1` as "forever". `None` waits forever; so does a timeout too large to be a deadline (the stdlib
//! raises `OverflowError` for some of those). NaN is a `ValueError` when the call has to wait (multiprocessing
//! raises `OSError` or `ValueError` depending on the call).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::time::Duration;

/// What a negative timeout means for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negative {
    /// multiprocessing: the same as 0.
    Zero,
    /// threading's `Lock.acquire(blocking=..., timeout=-1)`: `-1` waits forever, other negatives are 0.
    MinusOneForever,
    /// `queue.Queue`: `ValueError`.
    Error,
}

/// `timeout` as a duration (`None`: no limit), read the way `negative` says.
pub fn timeout(t: Option<f64>, negative: Negative) -> PyResult<Option<Duration>> {
    let Some(t) = t else { return Ok(None) };
    if t.is_nan() {
        return Err(PyValueError::new_err("'timeout' must be a number, not NaN"));
    }
    if t < 0.0 {
        return match negative {
            Negative::Zero => Ok(Some(Duration::ZERO)),
            Negative::MinusOneForever if t == -1.0 => Ok(None),
            Negative::MinusOneForever => Ok(Some(Duration::ZERO)),
            Negative::Error => Err(PyValueError::new_err("'timeout' must be a non-negative number")),
        };
    }
    // Beyond what an Instant can hold (or +inf): no deadline, as good as forever.
    Ok(Duration::try_from_secs_f64(t).ok().filter(|d| std::time::Instant::now().checked_add(*d).is_some()))
}
