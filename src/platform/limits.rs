//! How long pyconc waits for a lock whose holders only keep it for short critical sections (a segment's user
//! table, a barrier's internal mutex, a dict shard) before it reports the holder as stuck instead of waiting on.
//!
//! A holder that died is taken over at once; this bound is for a holder that is alive but does not let go: a
//! process stopped (SIGSTOP, a debugger) inside a critical section, a dict `update_with` callback that runs very
//! long, or a lock word that a corrupt or hostile segment makes name some live process. The default is generous
//! ([`DEFAULT_LOCK_TIMEOUT`]); the environment variable `PYCONC_LOCK_TIMEOUT` (seconds, read once) changes it.

use crate::base::atomic::local::{AtomicU64, Ordering};
use std::time::Duration;

/// The bound when `PYCONC_LOCK_TIMEOUT` is not set.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that sets the bound, in seconds (a float; at least 1 ms).
pub const LOCK_TIMEOUT_ENV: &str = "PYCONC_LOCK_TIMEOUT";

/// The bound in nanoseconds; 0 until first read.
static LOCK_TIMEOUT_NS: AtomicU64 = AtomicU64::new(0);

fn from_env() -> Duration {
    std::env::var(LOCK_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(|d| d.clamp(Duration::from_millis(1), Duration::from_secs(86_400 * 365)))
        .unwrap_or(DEFAULT_LOCK_TIMEOUT)
}

/// How long to wait for a briefly-held internal lock whose holder is alive before giving up with an error that
/// names the holder.
pub fn lock_timeout() -> Duration {
    match LOCK_TIMEOUT_NS.load(Ordering::Relaxed) {
        0 => {
            let d = from_env();
            let ns = (d.as_nanos() as u64).max(1);
            // A concurrent first call computes the same value.
            LOCK_TIMEOUT_NS.store(ns, Ordering::Relaxed);
            d
        }
        ns => Duration::from_nanos(ns),
    }
}

/// Sets the bound for this process (`None`: back to the environment's or the default).
pub fn set_lock_timeout(d: Option<Duration>) {
    let ns = match d {
        Some(d) => (d.as_nanos().min(u64::MAX as u128) as u64).max(1),
        None => (from_env().as_nanos() as u64).max(1),
    };
    LOCK_TIMEOUT_NS.store(ns, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_is_positive() {
        assert!(lock_timeout() >= Duration::from_millis(1));
    }
}
