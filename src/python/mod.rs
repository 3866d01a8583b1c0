//! The PyO3 layer: `pyconc._native`. Thin wrappers over the core; each file registers its own classes.

use pyo3::prelude::*;

mod atomics;
mod block;
mod codec;
mod dict;
mod errors;
mod queue;
mod segments;
mod sync;

/// `pyconc._native`: the compiled core of pyconc. Use the `pyconc` package, not this module.
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Read this process's start time now (a /proc read) rather than inside the first attach.
    crate::platform::process::current();
    segments::register(m)?;
    atomics::register(m)?;
    block::register(m)?;
    codec::register(m)?;
    queue::register(m)?;
    sync::register(m)?;
    dict::register(m)?;
    Ok(())
}
