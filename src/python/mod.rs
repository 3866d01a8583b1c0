//! The PyO3 layer: `pyconc._native`. Thin wrappers over the core; each file registers its own classes.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

mod aio;
mod block;
mod blocking;
mod cell;
mod codec;
mod deque;
mod dict;
mod errors;
mod handle;
mod identity;
mod lifetime;
mod queue;
mod segments;
mod sync;
mod timeouts;

/// What the native side uses of the Python package (reprs, asyncio forms, the dict views), registered by the
/// package's modules when they are imported (`_native._register(name, obj)`), so the native module never imports
/// the package by name: dependencies point down, and the package decides where its helpers live.
static HELPERS: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn helpers(py: Python<'_>) -> &Bound<'_, PyDict> {
    HELPERS.get_or_init(py, || PyDict::new(py).unbind()).bind(py)
}

/// `_native._register(name, obj)`: makes `obj` the helper `name`.
#[pyfunction]
fn _register(py: Python<'_>, name: &str, obj: Bound<'_, PyAny>) -> PyResult<()> {
    helpers(py).set_item(name, obj)
}

/// The registered helper `name`.
pub(crate) fn helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    helpers(py).get_item(name)?.ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err(format!(
            "pyconc helper {name} is not registered: use pyconc through its package (import pyconc)"
        ))
    })
}

/// `pyconc._native`: the compiled core of pyconc. Use the `pyconc` package, not this module.
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(_register, m)?)?;
    // Read this process's start time now (a /proc read) rather than inside the first attach.
    crate::platform::process::current();
    lifetime::init(m.py())?;
    handle::register(m)?;
    segments::register(m)?;
    cell::register(m)?;
    block::register(m)?;
    codec::register(m)?;
    queue::register(m)?;
    sync::register(m)?;
    dict::register(m)?;
    deque::register(m)?;
    aio::register(m)?;
    Ok(())
}
