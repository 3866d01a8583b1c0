//! The one error type of the Rust core.
//!
//! Each variant corresponds to the Python exception the PyO3 layer raises for it, so the mapping lives in one
//! place (`python/errors.rs`) and the core stays free of Python.

use std::fmt;
use std::io;

/// What can go wrong in the core. Messages are written for the Python user who will read them.
#[derive(Debug)]
pub enum Error {
    /// No segment of that name exists (Python: `FileNotFoundError`).
    NotFound(String),
    /// The bytes are not what a pyconc structure should hold: bad magic, version, size, offset or encoding
    /// (Python: `ValueError`).
    Corrupt(String),
    /// The caller passed something unusable (Python: `ValueError`).
    Invalid(String),
    /// A value of a type the operation cannot take (Python: `TypeError`).
    Type(String),
    /// The segment or structure has no room left (Python: `MemoryError`).
    Full(String),
    /// /dev/shm has no room for pages being reserved (Python: `MemoryError`). Unlike [`Error::Full`], waiting for
    /// other processes to take items out of a structure does not help, so queues raise it instead of waiting.
    NoSpace(String),
    /// A wait ran out of time (mapped by callers to `False`, `queue.Empty`, ...).
    Timeout,
    /// A lock that pyconc only ever holds briefly stayed held by a live process for longer than
    /// `platform::limits::lock_timeout` (a stopped process, or a corrupt segment); the message names the holder
    /// (Python: `TimeoutError`).
    Stuck(String),
    /// A blocking wait was interrupted by a signal the caller must look at (Python: run signal handlers).
    Interrupted,
    /// An operating-system call failed (Python: `OSError` with the errno).
    Os(io::Error),
}

/// Result alias of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(m)
            | Error::Corrupt(m)
            | Error::Invalid(m)
            | Error::Type(m)
            | Error::Full(m)
            | Error::NoSpace(m)
            | Error::Stuck(m) => f.write_str(m),
            Error::Timeout => f.write_str("timed out"),
            Error::Interrupted => f.write_str("interrupted by a signal"),
            Error::Os(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Os(e)
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Os(io::Error::from_raw_os_error(e as i32))
    }
}

/// Shorthand for `Err(Error::Corrupt(..))` with a formatted message.
macro_rules! corrupt {
    ($($arg:tt)*) => { $crate::error::Error::Corrupt(format!($($arg)*)) };
}
pub(crate) use corrupt;
