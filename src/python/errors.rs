//! Mapping core errors to the Python exceptions users expect.

use crate::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyMemoryError, PyOSError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Converts a core error into a Python exception. `Interrupted` runs the signal handlers (so Ctrl-C becomes
/// `KeyboardInterrupt`); if none raised, it becomes an `InterruptedError`.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::NotFound(m) => PyFileNotFoundError::new_err(m),
        Error::Corrupt(m) | Error::Invalid(m) => PyValueError::new_err(m),
        Error::Type(m) => PyTypeError::new_err(m),
        Error::Full(m) | Error::NoSpace(m) => PyMemoryError::new_err(m),
        Error::Timeout => PyTimeoutError::new_err("timed out"),
        Error::Stuck(m) => PyTimeoutError::new_err(m),
        Error::Interrupted => match py.check_signals() {
            Err(err) => err,
            Ok(()) => pyo3::exceptions::PyInterruptedError::new_err("interrupted by a signal"),
        },
        Error::Os(io) => match io.raw_os_error() {
            Some(errno) => PyOSError::new_err((errno, io.to_string())),
            None => PyOSError::new_err(io.to_string()),
        },
    }
}

/// `result.map_err(..)` shorthand.
pub trait IntoPyResult<T> {
    /// Converts the error with [`to_py`].
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for crate::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

/// The `ValueError` raised when an object is used after `close()`.
pub fn closed(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what} is closed; create a new one or unpickle a handle to reopen it"))
}
