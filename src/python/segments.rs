//! Segment tools for Python: listing, collection, fork hooks.

use super::errors::IntoPyResult;
use crate::segment::{gc, shm, Segment};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::time::Duration;

fn scope(all: bool) -> gc::Scope {
    if all {
        gc::Scope::All
    } else {
        gc::Scope::Namespace
    }
}

/// Lists pyconc segments in /dev/shm as dicts (name, kind, size, creator_pid, users, problem, objects: the live
/// objects of an arena, else None): those of this
/// process's namespace (`PYCONC_NAMESPACE`), or every one with `all=True`.
#[pyfunction]
#[pyo3(signature = (all=false))]
fn list_segments(py: Python<'_>, all: bool) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let rows = py.detach(|| gc::list(scope(all)));
    rows.into_iter()
        .map(|r| {
            let d = PyDict::new(py);
            d.set_item("name", r.name)?;
            d.set_item("kind", r.kind.map(|k| k.name()))?;
            d.set_item("size", r.size)?;
            d.set_item("creator_pid", r.creator_pid)?;
            d.set_item("users", r.users.iter().map(|u| u.pid).collect::<Vec<_>>())?;
            d.set_item("problem", r.problem)?;
            d.set_item("objects", r.objects)?;
            Ok(d)
        })
        .collect()
}

/// `(removed, removed_invalid, kept, problems)`.
type GcResult = (Vec<String>, Vec<String>, usize, Vec<(String, String)>);

/// Removes segments whose users all died (or that are marked unlinked); invalid ones older than `grace` seconds
/// too. This namespace's, or every one with `all=True`. Returns `(removed, removed_invalid, kept, problems)`,
/// `problems` listing `(name, reason)` for kept segments whose user table could not be read.
#[pyfunction]
#[pyo3(signature = (grace=60.0, all=false))]
fn collect_segments(py: Python<'_>, grace: f64, all: bool) -> GcResult {
    let grace = Duration::try_from_secs_f64(grace.max(0.0)).unwrap_or(Duration::MAX);
    let r = py.detach(|| gc::collect(grace, scope(all)));
    (r.removed, r.removed_invalid, r.kept, r.corrupt)
}

/// One bounded pass of the automatic reaping over this namespace (at import): removes segments whose users
/// all died, for at most `budget` seconds. Returns how many it removed.
#[pyfunction]
#[pyo3(signature = (budget=0.01))]
fn _reap_dead_segments(py: Python<'_>, budget: f64) -> usize {
    let budget = Duration::try_from_secs_f64(budget).unwrap_or(Duration::ZERO);
    let r = py.detach(|| gc::reap(budget));
    r.removed.len() + r.removed_invalid.len()
}

/// This process's segment namespace ("" for none): `PYCONC_NAMESPACE`, read once.
#[pyfunction]
fn namespace(py: Python<'_>) -> PyResult<&'static str> {
    crate::segment::namespace::current().py(py)
}

/// Unlinks the named segment now (processes that have it mapped keep it).
#[pyfunction]
fn unlink_segment(py: Python<'_>, name: &str) -> PyResult<()> {
    let seg = Segment::open(name).py(py)?;
    seg.unlink().py(py)
}

/// Live user pids of a segment.
#[pyfunction]
fn segment_users(py: Python<'_>, name: &str) -> PyResult<Vec<u32>> {
    let seg = Segment::inspect(name).py(py)?;
    Ok(seg.live_users().py(py)?.iter().map(|u| u.pid).collect())
}

/// Removes this process's spare arenas (the empty arena it keeps per cell size for its next small objects);
/// see `segment::arena::trim`.
#[pyfunction]
fn _arena_trim(py: Python<'_>) {
    py.detach(crate::segment::arena::trim);
}

/// Leaves every segment's user table (at process exit); see `segment::shm::release_all`.
#[pyfunction]
fn _release_all(py: Python<'_>) {
    py.detach(shm::release_all);
}

#[pyfunction]
fn _before_fork() {
    shm::before_fork();
}

#[pyfunction]
fn _after_fork_parent() {
    shm::after_fork_parent();
}

#[pyfunction]
fn _after_fork_child() {
    shm::after_fork_child();
}

/// This process's owner word (pid and start time in one u64), as every owner table records a process: for
/// tables kept by the Python layer (the pool's workers) that other processes read.
#[pyfunction]
fn _owner_word() -> u64 {
    crate::segment::owners::Owner::me().0
}

/// Whether the process an owner word names is alive (a reused pid is not mistaken for it). 0 is nobody.
#[pyfunction]
fn _owner_alive(word: u64) -> bool {
    crate::segment::owners::Owner(word).is_alive()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_owner_word, m)?)?;
    m.add_function(wrap_pyfunction!(_owner_alive, m)?)?;
    m.add_function(wrap_pyfunction!(list_segments, m)?)?;
    m.add_function(wrap_pyfunction!(collect_segments, m)?)?;
    m.add_function(wrap_pyfunction!(_reap_dead_segments, m)?)?;
    m.add_function(wrap_pyfunction!(namespace, m)?)?;
    m.add_function(wrap_pyfunction!(unlink_segment, m)?)?;
    m.add_function(wrap_pyfunction!(segment_users, m)?)?;
    m.add_function(wrap_pyfunction!(_release_all, m)?)?;
    m.add_function(wrap_pyfunction!(_arena_trim, m)?)?;
    m.add_function(wrap_pyfunction!(_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_parent, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_child, m)?)?;
    m.add("LAYOUT_VERSION", crate::segment::LAYOUT_VERSION)?;
    Ok(())
}
