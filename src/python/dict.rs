//! `ConcurrentDict`: the Python face of [`crate::dict::SharedDict`].
//!
//! Keys are stored as canonical key encodings (`codec::key`), values as codec encodings. Every Python-level
//! conversion (encoding, decoding, pickling) happens outside the shard locks, except in the read-modify-write
//! methods (`add`, `update_with`) whose whole point is to run under the lock.

use super::blocking::block_on;
use super::codec::{decode_bytes, encode_into, encode_key_into, with_scratch};
use super::errors::IntoPyResult;
use super::handle::{reduce, shared_class, Handle};
use super::lifetime::{Held, Open};
use crate::base::atomic::local::{AtomicU32, Ordering};
use crate::codec::stable_hash;
use crate::dict::{records, Read, ShardGuard, SharedDict, DEFAULT_HEAP_BYTES};
use crate::platform::futex::Deadline;
use crate::segment::Kind;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

thread_local! {
    /// Value buffer (the key goes in the codec's scratch buffer).
    static VAL: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's value buffer (re-entrant calls get a fresh one).
fn with_val<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = VAL.with(|c| c.take());
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= 4 << 20 {
        VAL.with(|c| c.set(buf));
    }
    r
}

/// Encodes `key` into `kb`: canonical bytes first, then (if they decode to another type) the as-inserted
/// encoding. Returns the length of the canonical part.
fn encode_key(key: &Bound<'_, PyAny>, kb: &mut Vec<u8>) -> PyResult<usize> {
    let same = encode_key_into(key, kb)?;
    let klen = kb.len();
    if !same {
        encode_into(key, kb)?;
    }
    Ok(klen)
}

/// A dict in shared memory, usable from every thread and process that holds it (it pickles as a handle).
///
/// Keys must be None, bool, int, float, str, bytes or tuples of those (`1`, `1.0` and `True` are one key);
/// values may be anything the pyconc codec encodes (other objects are pickled). Single operations are atomic;
/// `len()`, iteration, `keys()`/`values()`/`items()`, `as_dict()` and `==` look at one shard at a time and are
/// not a snapshot while other threads or processes write.
#[pyclass(module = "pyconc._native", name = "ConcurrentDict", frozen)]
pub struct PyConcurrentDict {
    inner: Held<SharedDict>,
    /// Where `popitem` starts looking (rotates so repeated popitems do not rescan empty shards).
    pop_from: AtomicU32,
}

/// A call's borrow of an open dict.
struct Dict<'a> {
    inner: Open<'a, SharedDict>,
}

/// `<name>(d)`: the view classes live in Python (subclasses of the `collections.abc` views, registered by
/// `pyconc.dicts`).
fn view<'py>(d: &Bound<'py, PyConcurrentDict>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    super::helper(d.py(), name)?.call1((d,))
}

impl PyConcurrentDict {
    /// This call's view of the open dict (see `super::lifetime`); the helpers below work on it.
    fn d(&self) -> PyResult<Dict<'_>> {
        Ok(Dict { inner: self.inner.open()? })
    }
}

impl Dict<'_> {
    /// Locks shard `i`, releasing the GIL while waiting (the holder may be a thread of this process that needs
    /// the GIL to finish an `update_with`).
    fn locked(&self, py: Python<'_>, i: u32) -> PyResult<ShardGuard<'_>> {
        if self.inner.take_reclaim_pending() {
            // A shard was repaired after a writer died: free what it leaked if no shard is busy now (else the
            // next writes try again, a few dozen times; `reclaim()` does it whenever called).
            let _ = self.inner.reclaim(None);
        }
        if let Some(g) = self.inner.try_lock(i).py(py)? {
            return Ok(g);
        }
        if self.inner.held_by_me(i) {
            return Err(PyRuntimeError::new_err(
                "ConcurrentDict: this thread already holds the lock of that shard (an update_with/add callback \
                 must not use the same dict)",
            ));
        }
        let d: &SharedDict = &self.inner;
        // Bounded: a holder that keeps a shard longer than the lock timeout is reported (TimeoutError); one
        // deadline for the whole wait, across retries after signal handlers.
        let patience = Deadline::after(Some(crate::platform::limits::lock_timeout()));
        block_on(py, || d.lock_patiently(i, &patience))?.py(py)
    }

    fn lookup<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        with_scratch(|kb| {
            encode_key_into(key, kb)?;
            let h = stable_hash(kb);
            with_val(|vb| {
                let found = match self.inner.get_into(kb, h, vb).py(py)? {
                    Read::Found => true,
                    Read::Missing => false,
                    Read::Busy => self.locked(py, self.inner.shard_index(h))?.get_into(kb, h, vb).py(py)?,
                };
                if found {
                    decode_bytes(py, vb).map(Some)
                } else {
                    Ok(None)
                }
            })
        })
    }

    fn store(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        with_scratch(|kb| {
            let klen = encode_key(key, kb)?;
            with_val(|vb| {
                encode_into(value, vb)?;
                let h = stable_hash(&kb[..klen]);
                if self.inner.try_overwrite(&kb[..klen], h, vb).py(py)? {
                    return Ok(());
                }
                let mut g = self.locked(py, self.inner.shard_index(h))?;
                g.set(&kb[..klen], h, &kb[klen..], vb).py(py)?;
                Ok(())
            })
        })
    }

    /// Copies every shard's records (lock-free when possible) and calls `f(key, value_bytes)` for each.
    fn each<'py>(&self, py: Python<'py>, mut f: impl FnMut(Bound<'py, PyAny>, &[u8]) -> PyResult<()>) -> PyResult<()> {
        let mut buf = Vec::new();
        for i in 0..self.inner.nshards() {
            if self.inner.dump_shard(i, &mut buf).py(py)?.is_none() {
                self.locked(py, i)?.dump(&mut buf).py(py)?;
            }
            for r in records(&buf) {
                let (k, o, v) = r.py(py)?;
                let key = decode_bytes(py, if o.is_empty() { k } else { o })?;
                f(key, v)?;
            }
        }
        Ok(())
    }

    /// Runs `f(current value or None)` under the key's shard lock; `f` returns the new value to store (or None
    /// to leave the entry as it is) and the result to return.
    fn rmw<'py, R>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        f: impl FnOnce(Option<Bound<'py, PyAny>>) -> PyResult<(Option<Bound<'py, PyAny>>, R)>,
    ) -> PyResult<R> {
        with_scratch(|kb| {
            let klen = encode_key(key, kb)?;
            let h = stable_hash(&kb[..klen]);
            with_val(|vb| {
                let mut g = self.locked(py, self.inner.shard_index(h))?;
                let cur = if g.get_into(&kb[..klen], h, vb).py(py)? { Some(decode_bytes(py, vb)?) } else { None };
                let (new, r) = f(cur)?;
                if let Some(new) = new {
                    vb.clear();
                    encode_into(&new, vb)?;
                    g.set(&kb[..klen], h, &kb[klen..], vb).py(py)?;
                }
                Ok(r)
            })
        })
    }

    fn as_dict_obj<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        self.each(py, |k, v| out.set_item(k, decode_bytes(py, v)?))?;
        Ok(out)
    }
}

#[pymethods]
impl PyConcurrentDict {
    #[new]
    /// `ConcurrentDict(scaling=17, dictionary=None)`: `dictionary` (or its alias `initial`) is a mapping or an
    /// iterable of pairs to start with.
    #[pyo3(signature = (scaling=17, dictionary=None, *, initial=None, _handle=None))]
    fn new(
        py: Python<'_>,
        scaling: i128,
        dictionary: Option<&Bound<'_, PyAny>>,
        initial: Option<&Bound<'_, PyAny>>,
        _handle: Option<Handle>,
    ) -> PyResult<Self> {
        if let Some(h) = _handle {
            h.expect(&["ConcurrentDict"], &[Kind::Dict])?;
            let inner = py.detach(|| SharedDict::open(&h.segment)).py(py)?;
            h.expect_whole(inner.segment())?;
            return Ok(PyConcurrentDict { inner: Held::new("ConcurrentDict", inner), pop_from: AtomicU32::new(0) });
        }
        let scaling = u32::try_from(scaling)
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| PyValueError::new_err(format!("scaling must be a positive int, got {scaling}")))?;
        if dictionary.is_some() && initial.is_some() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "ConcurrentDict() takes the initial contents once: `dictionary` or its alias `initial`",
            ));
        }
        let inner = py.detach(|| SharedDict::create(scaling, DEFAULT_HEAP_BYTES)).py(py)?;
        let d = PyConcurrentDict { inner: Held::new("ConcurrentDict", inner), pop_from: AtomicU32::new(0) };
        if let Some(init) = dictionary.or(initial) {
            d.update(py, Some(init), None)?;
        }
        Ok(d)
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        this.lookup(py, key)?.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = self.d()?;
        this.store(py, key, value)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = self.d()?;
        let found = with_scratch(|kb| {
            encode_key_into(key, kb)?;
            let h = stable_hash(kb);
            this.locked(py, this.inner.shard_index(h))?.remove(kb, h, None).py(py)
        })?;
        if found {
            Ok(())
        } else {
            Err(PyKeyError::new_err(key.clone().unbind()))
        }
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let this = self.d()?;
        with_scratch(|kb| {
            encode_key_into(key, kb)?;
            let h = stable_hash(kb);
            match this.inner.contains(kb, h).py(py)? {
                Read::Found => Ok(true),
                Read::Missing => Ok(false),
                Read::Busy => Ok(this.locked(py, this.inner.shard_index(h))?.find(kb, h).py(py)?.is_some()),
            }
        })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let this = self.d()?;
        Ok(this.inner.len().py(py)? as usize)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self._keys_list(py)?.try_iter()?.into_any())
    }

    /// `d[key]` if present, else `default`.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        Ok(match this.lookup(py, key)? {
            Some(v) => v,
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    /// Atomically: `d[key]` if present, else stores `default` and returns it.
    #[pyo3(signature = (key, default=None))]
    fn setdefault<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        with_scratch(|kb| {
            let klen = encode_key(key, kb)?;
            let h = stable_hash(&kb[..klen]);
            with_val(|vb| {
                encode_into(&default, vb)?;
                let mut cur = Vec::new();
                let mut g = this.locked(py, this.inner.shard_index(h))?;
                if g.get_into(&kb[..klen], h, &mut cur).py(py)? {
                    drop(g);
                    return decode_bytes(py, &cur);
                }
                g.set(&kb[..klen], h, &kb[klen..], vb).py(py)?;
                Ok(default.clone())
            })
        })
    }

    /// Atomically removes `key` and returns its value; `default` (or `KeyError`) when absent.
    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        if default.len() > 1 {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "pop expected at most 2 arguments, got {}",
                default.len() + 1
            )));
        }
        let found = with_scratch(|kb| {
            encode_key_into(key, kb)?;
            let h = stable_hash(kb);
            with_val(|vb| {
                let found = this.locked(py, this.inner.shard_index(h))?.remove(kb, h, Some(vb)).py(py)?;
                if found {
                    decode_bytes(py, vb).map(Some)
                } else {
                    Ok(None)
                }
            })
        })?;
        match found {
            Some(v) => Ok(v),
            None if default.len() == 1 => default.get_item(0),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// Removes and returns some `(key, value)` pair; `KeyError` when empty.
    fn popitem<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let this = self.d()?;
        let n = this.inner.nshards();
        let start = self.pop_from.load(Ordering::Relaxed);
        let mut buf = Vec::new();
        for j in 0..n {
            let i = (start + j) % n;
            if this.locked(py, i)?.pop_any(&mut buf).py(py)? {
                self.pop_from.store(i, Ordering::Relaxed);
                if let Some(r) = records(&buf).next() {
                    let (k, o, v) = r.py(py)?;
                    let key = decode_bytes(py, if o.is_empty() { k } else { o })?;
                    return PyTuple::new(py, [key, decode_bytes(py, v)?]);
                }
            }
        }
        Err(PyKeyError::new_err("popitem(): dictionary is empty"))
    }

    /// `update(mapping_or_pairs=(), **kwargs)`, like `dict.update`.
    #[pyo3(signature = (other=None, **kwargs))]
    fn update(
        &self,
        py: Python<'_>,
        other: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let this = self.d()?;
        if let Some(other) = other {
            if let Ok(d) = other.cast::<PyDict>() {
                for (k, v) in d.iter() {
                    this.store(py, &k, &v)?;
                }
            } else if other.hasattr("keys")? {
                for k in other.call_method0("keys")?.try_iter()? {
                    let k = k?;
                    this.store(py, &k, &other.get_item(&k)?)?;
                }
            } else {
                for item in other.try_iter()? {
                    let item = item?;
                    let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| {
                        pyo3::exceptions::PyTypeError::new_err(
                            "ConcurrentDict.update() needs a mapping or an iterable of (key, value) pairs",
                        )
                    })?;
                    this.store(py, &k, &v)?;
                }
            }
        }
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                this.store(py, &k, &v)?;
            }
        }
        Ok(())
    }

    /// Removes every key (shard by shard: not atomic with respect to concurrent writers).
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let this = self.d()?;
        for i in 0..this.inner.nshards() {
            this.locked(py, i)?.clear().py(py)?;
        }
        Ok(())
    }

    /// A live view of the keys (`collections.abc.KeysView`); iterating it copies one shard at a time.
    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        view(slf, "_KeysView")
    }

    /// A live view of the values.
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        view(slf, "_ValuesView")
    }

    /// A live view of the `(key, value)` pairs.
    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        view(slf, "_ItemsView")
    }

    /// A list of the keys (not a snapshot under concurrent writes): what the views iterate.
    fn _keys_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let this = self.d()?;
        let out = PyList::empty(py);
        this.each(py, |k, _| out.append(k))?;
        Ok(out)
    }

    /// A list of the values.
    fn _values_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let this = self.d()?;
        let out = PyList::empty(py);
        this.each(py, |_, v| out.append(decode_bytes(py, v)?))?;
        Ok(out)
    }

    /// A list of `(key, value)` pairs.
    fn _items_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let this = self.d()?;
        let out = PyList::empty(py);
        this.each(py, |k, v| out.append(PyTuple::new(py, [k, decode_bytes(py, v)?])?))?;
        Ok(out)
    }

    /// Frees the shared memory that writers killed in the middle of a write leaked; returns the bytes freed.
    /// Holds every shard lock while it walks the heaps (run automatically, when no shard is busy, after a
    /// process finds that a writer died).
    fn reclaim(&self, py: Python<'_>) -> PyResult<u64> {
        let d = self.inner.open()?;
        let d: &SharedDict = &d;
        let forever = Deadline::after(None);
        Ok(block_on(py, || d.reclaim(Some(&forever)))?.py(py)?.unwrap_or(0))
    }

    /// A plain `dict` copy.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let this = self.d()?;
        this.as_dict_obj(py)
    }

    fn __eq__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let this = self.d()?;
        let mine = this.as_dict_obj(py)?;
        if let Ok(o) = other.cast::<PyConcurrentDict>() {
            let theirs = o.get().d()?.as_dict_obj(py)?;
            return Ok(mine.eq(theirs)?.into_pyobject(py)?.to_owned().into_any().unbind());
        }
        if other.is_instance_of::<PyDict>() || other.hasattr("keys")? && other.hasattr("__getitem__")? {
            return Ok(mine.as_any().eq(other)?.into_pyobject(py)?.to_owned().into_any().unbind());
        }
        Ok(py.NotImplemented())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let Ok(this) = self.d() else { return Ok("ConcurrentDict(<closed>)".into()) };
        Ok(format!("ConcurrentDict({})", this.as_dict_obj(py)?.repr()?))
    }

    /// Atomically `d[key] = d.get(key, default) + delta`; returns the new value.
    #[pyo3(signature = (key, delta=None, default=None), text_signature = "(self, key, delta=1, default=0)")]
    fn add<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        delta: Option<Bound<'py, PyAny>>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        let delta = match delta {
            Some(d) => d,
            None => 1i64.into_pyobject(py)?.into_any(),
        };
        let default = match default {
            Some(d) => d,
            None => 0i64.into_pyobject(py)?.into_any(),
        };
        this.rmw(py, key, |cur| {
            let new = cur.unwrap_or(default).add(&delta)?;
            Ok((Some(new.clone()), new))
        })
    }

    /// Atomically: if `d[key]` encodes to the same bytes as `expected`, stores `new` and returns True.
    fn compare_and_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: &Bound<'_, PyAny>,
        new: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let this = self.d()?;
        let mut exp = Vec::new();
        encode_into(expected, &mut exp)?;
        let mut newb = Vec::new();
        encode_into(new, &mut newb)?;
        with_scratch(|kb| {
            let klen = encode_key(key, kb)?;
            let h = stable_hash(&kb[..klen]);
            with_val(|vb| {
                let mut g = this.locked(py, this.inner.shard_index(h))?;
                if !g.get_into(&kb[..klen], h, vb).py(py)? || *vb != exp {
                    return Ok(false);
                }
                g.set(&kb[..klen], h, &kb[klen..], &newb).py(py)?;
                Ok(true)
            })
        })
    }

    /// Atomically `d[key] = fn(d.get(key, default))`; returns the new value. `fn` runs in the calling process
    /// while the key's shard is locked: keep it short and do not use this dict inside it. If `fn` raises, the
    /// exception propagates and the dict is unchanged.
    #[pyo3(signature = (key, r#fn, default=None))]
    fn update_with<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        r#fn: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        this.rmw(py, key, |cur| {
            let arg = cur.or(default).unwrap_or_else(|| py.None().into_bound(py));
            let new = r#fn.call1((arg,))?;
            Ok((Some(new.clone()), new))
        })
    }

    /// Number of shards.
    #[getter]
    fn scaling(&self) -> PyResult<u32> {
        let this = self.d()?;
        Ok(this.inner.nshards())
    }

    /// Whether `other` is a handle of this very dict (not just equal contents); False if either is closed.
    fn _same_object(&self, other: &Bound<'_, PyAny>) -> bool {
        let Ok(o) = other.cast::<PyConcurrentDict>() else { return false };
        let (Some(a), Some(b)) = (self.inner.try_open(), o.get().inner.try_open()) else { return false };
        a.segment().same_mapping(b.segment())
    }

    /// A hash of the dict's identity (for wrappers that compare by identity, like `AtomicReference`); kept after
    /// close() once computed.
    fn _identity_hash(&self) -> PyResult<u64> {
        self.inner.memo_hash(|d| super::identity::hash((d.segment(), 0)))
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory (idempotent).
    fn close(&self) {
        self.inner.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.unlink(py)
    }

    /// The name of the main shared-memory segment.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.inner.segment_name()
    }

    /// What a pickle carries (see `pyconc._native._rebuild`).
    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let d = self.inner.open()?;
        Ok(Handle::new("ConcurrentDict", d.segment(), d.segment().info().data_offset))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        reduce(slf.as_any(), slf.get()._handle()?)
    }
}

/// Test hook: the calling process `_exit`s at crash point `n` of its next dict write (0 disarms). See
/// `dict::CRASH_POINT`.
#[pyfunction]
fn _dict_crash_point(n: u32) {
    crate::dict::CRASH_POINT.store(n, Ordering::Relaxed);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyConcurrentDict>()?;
    m.add_function(wrap_pyfunction!(_dict_crash_point, m)?)?;
    shared_class::<PyConcurrentDict>(m)?;
    Ok(())
}
