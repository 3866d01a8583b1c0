//! `AtomicInt64` and `AtomicFlag`: one atomic 64-bit cell each, shared by threads and processes.

use super::errors::IntoPyResult;
use super::handle::{reduce, shared_class, Handle};
use super::lifetime::{Held, Open};
use crate::objects::cell::SharedAtomic;
use crate::segment::Kind;
use pyo3::exceptions::{PyTypeError, PyValueError, PyZeroDivisionError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

/// Attaches to the atomic cell a handle names (its type checked by the caller's `expect`).
fn attach(py: Python<'_>, h: &Handle, type_name: &str) -> PyResult<SharedAtomic> {
    h.expect(&[type_name], &[Kind::Arena, Kind::Atomic])?;
    py.detach(|| SharedAtomic::open(&h.segment, Some(h.offset))).py(py)
}

/// An int operand of an in-place operation, with a clear message for anything else.
fn int_operand<'py>(other: &Bound<'py, PyAny>, op: &str) -> PyResult<Bound<'py, PyInt>> {
    let as_int = if other.is_instance_of::<PyInt>() {
        other.clone()
    } else if other.hasattr("__index__")? {
        other.call_method0("__index__")?
    } else {
        return Err(PyTypeError::new_err(format!(
            "unsupported operand type for {op}: 'AtomicInt64' and '{}' (an AtomicInt64 holds an int)",
            other.get_type().name()?
        )));
    };
    Ok(as_int.cast_into::<PyInt>()?)
}

/// `n` as an i64 if it is in range.
fn exact_i64(n: &Bound<'_, PyInt>) -> Option<i64> {
    n.extract::<i64>().ok()
}

/// `n` modulo 2**64, as the i64 with those bits: an operand of `+= -= *= &= |= ^=`, whose results modulo 2**64
/// depend only on their operands modulo 2**64 (so `a += 2**64` leaves `a` as it is, as the wrap rule says).
fn wrapped_i64(n: &Bound<'_, PyInt>) -> PyResult<i64> {
    if let Some(v) = exact_i64(n) {
        return Ok(v);
    }
    Ok(n.bitand(u64::MAX)?.extract::<u64>()? as i64)
}

/// A Python int result reduced modulo 2**64 (the update of `//=`, `%=` or `**=` with an operand out of range).
fn wrap_result(r: Bound<'_, PyAny>) -> PyResult<i64> {
    Ok(r.bitand(u64::MAX)?.extract::<u64>()? as i64)
}

/// A 64-bit signed integer in shared memory, updated atomically from any thread or process.
///
/// In-place arithmetic (`+=`, `-=`, `*=`, ...) and `incr`/`decr`/`add` are single atomic updates and wrap
/// modulo 2**64 like a C `int64_t`. Binary operators (`a + 1`) return a plain `int` computed by Python.
#[pyclass(module = "pyconc._native", name = "AtomicInt64", frozen)]
pub struct PyAtomicInt64 {
    inner: Held<SharedAtomic>,
}

impl PyAtomicInt64 {
    #[inline]
    fn a(&self) -> PyResult<Open<'_, SharedAtomic>> {
        self.inner.open()
    }

    fn value_obj<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.a()?.get().into_pyobject(py)?.into_any())
    }

    /// `int(self) <op> other` through Python's number protocol (so `a + 1.5` is a float).
    fn binop<'py>(
        &self,
        py: Python<'py>,
        other: &Bound<'py, PyAny>,
        op: impl FnOnce(&Bound<'py, PyAny>, Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let other = unwrap_atomic(py, other)?;
        op(&self.value_obj(py)?, other)
    }

    /// `other <op> int(self)`.
    fn rbinop<'py>(
        &self,
        py: Python<'py>,
        other: &Bound<'py, PyAny>,
        op: impl FnOnce(&Bound<'py, PyAny>, Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        op(other, self.value_obj(py)?)
    }

    fn cas_update(&self, f: impl Fn(i64) -> PyResult<i64>) -> PyResult<()> {
        let a = self.a()?;
        let mut err = None;
        a.update(|v| match f(v) {
            Ok(n) => Some(n),
            Err(e) => {
                err = Some(e);
                None
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl PyAtomicInt64 {
    #[new]
    #[pyo3(signature = (value=0, *, _handle=None))]
    fn new(py: Python<'_>, value: i64, _handle: Option<Handle>) -> PyResult<Self> {
        let inner = match _handle {
            Some(h) => attach(py, &h, "AtomicInt64")?,
            None => SharedAtomic::create(value).py(py)?,
        };
        Ok(PyAtomicInt64 { inner: Held::new("AtomicInt64", inner) })
    }

    /// The current value.
    fn get(&self) -> PyResult<i64> {
        Ok(self.a()?.get())
    }

    /// Stores `value`.
    fn set(&self, value: i64) -> PyResult<()> {
        self.a()?.set(value);
        Ok(())
    }

    /// Adds one; returns the new value.
    fn incr(&self) -> PyResult<i64> {
        Ok(self.a()?.add(1))
    }

    /// Subtracts one; returns the new value.
    fn decr(&self) -> PyResult<i64> {
        Ok(self.a()?.add(-1))
    }

    /// Adds `n`; returns the new value.
    fn add(&self, n: i64) -> PyResult<i64> {
        Ok(self.a()?.add(n))
    }

    /// Adds `n`; returns the previous value.
    fn fetch_add(&self, n: i64) -> PyResult<i64> {
        Ok(self.a()?.fetch_add(n))
    }

    /// Stores `value`; returns the previous value.
    fn exchange(&self, value: i64) -> PyResult<i64> {
        Ok(self.a()?.exchange(value))
    }

    /// Stores `new` if the value equals `expected`; returns whether it did.
    fn compare_exchange(&self, expected: i64, new: i64) -> PyResult<bool> {
        Ok(self.a()?.compare_exchange(expected, new))
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

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.inner.segment_name()
    }

    /// (type, segment name, offset, kind, layout version): what a pickle carries.
    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let a = self.a()?;
        Ok(Handle::new("AtomicInt64", a.segment(), a.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        reduce(slf.as_any(), slf.get()._handle()?)
    }

    fn __repr__(&self) -> String {
        match self.a() {
            Ok(a) => format!("AtomicInt64({})", a.get()),
            Err(_) => "AtomicInt64(<closed>)".into(),
        }
    }

    fn __int__(&self) -> PyResult<i64> {
        self.get()
    }

    fn __index__(&self) -> PyResult<i64> {
        self.get()
    }

    fn __float__(&self) -> PyResult<f64> {
        Ok(self.get()? as f64)
    }

    fn __bool__(&self) -> PyResult<bool> {
        Ok(self.get()? != 0)
    }

    fn __format__(&self, py: Python<'_>, spec: &str) -> PyResult<Py<PyAny>> {
        Ok(self.value_obj(py)?.call_method1("__format__", (spec,))?.unbind())
    }

    fn __richcmp__<'py>(
        &self,
        py: Python<'py>,
        other: &Bound<'py, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Bound<'py, PyAny>> {
        let other = match other.cast::<PyAtomicInt64>() {
            Ok(o) => o.get().value_obj(py)?,
            Err(_) => other.clone(),
        };
        self.value_obj(py)?.rich_compare(other, op)
    }

    fn __neg__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.value_obj(py)?.neg()?.unbind())
    }

    fn __pos__(&self) -> PyResult<i64> {
        self.get()
    }

    fn __abs__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.value_obj(py)?.abs()?.unbind())
    }

    fn __invert__(&self) -> PyResult<i64> {
        Ok(!self.get()?)
    }

    // In-place operators: one atomic update each.

    fn __iadd__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = wrapped_i64(&int_operand(other, "+=")?)?;
        self.a()?.add(n);
        Ok(())
    }

    fn __isub__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = wrapped_i64(&int_operand(other, "-=")?)?;
        self.a()?.add(n.wrapping_neg());
        Ok(())
    }

    fn __imul__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = wrapped_i64(&int_operand(other, "*=")?)?;
        self.cas_update(|v| Ok(v.wrapping_mul(n)))
    }

    fn __ifloordiv__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let big = int_operand(other, "//=")?;
        let Some(n) = exact_i64(&big) else {
            // |operand| >= 2**63: Python's exact quotient (0 or -1), wrapped.
            return self.cas_update(|v| wrap_result(v.into_pyobject(py)?.floor_div(&big)?));
        };
        if n == 0 {
            return Err(PyZeroDivisionError::new_err("integer division by zero"));
        }
        self.cas_update(|v| Ok(floor_div(v, n)))
    }

    fn __imod__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let big = int_operand(other, "%=")?;
        let Some(n) = exact_i64(&big) else {
            return self.cas_update(|v| wrap_result(v.into_pyobject(py)?.rem(&big)?));
        };
        if n == 0 {
            return Err(PyZeroDivisionError::new_err("integer modulo by zero"));
        }
        self.cas_update(|v| Ok(v.wrapping_sub(floor_div(v, n).wrapping_mul(n))))
    }

    fn __ipow__(&self, py: Python<'_>, other: &Bound<'_, PyAny>, _modulo: &Bound<'_, PyAny>) -> PyResult<()> {
        let big = int_operand(other, "**=")?;
        match exact_i64(&big).map(u32::try_from) {
            Some(Ok(e)) => self.cas_update(|v| Ok(v.wrapping_pow(e))),
            Some(Err(_)) | None if big.lt(0)? => Err(PyValueError::new_err(
                "AtomicInt64 **= needs a non-negative exponent (the result would not be an int)",
            )),
            _ => {
                // A huge exponent: pow(v, e, 2**64) is the wrapped result.
                let pow = py.import("builtins")?.getattr("pow")?;
                let m = 1u128 << 64;
                self.cas_update(|v| wrap_result(pow.call1((v, &big, m))?))
            }
        }
    }

    fn __itruediv__(&self, _other: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyTypeError::new_err("an AtomicInt64 holds an int: use //= instead of /="))
    }

    fn __ilshift__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = shift_amount(&int_operand(other, "<<=")?)?;
        self.cas_update(|v| Ok(if n >= 64 { 0 } else { v << n }))
    }

    fn __irshift__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = shift_amount(&int_operand(other, ">>=")?)?;
        self.cas_update(|v| Ok(v >> n.min(63)))
    }

    fn __iand__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = wrapped_i64(&int_operand(other, "&=")?)?;
        self.cas_update(|v| Ok(v & n))
    }

    fn __ior__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = wrapped_i64(&int_operand(other, "|=")?)?;
        self.cas_update(|v| Ok(v | n))
    }

    fn __ixor__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = wrapped_i64(&int_operand(other, "^=")?)?;
        self.cas_update(|v| Ok(v ^ n))
    }

    // Binary operators: computed by Python on the current value, so `a + 1.5` and `a * big` behave like ints.

    fn __add__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.add(b))
    }

    fn __radd__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.add(b))
    }

    fn __sub__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.sub(b))
    }

    fn __rsub__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.sub(b))
    }

    fn __mul__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.mul(b))
    }

    fn __rmul__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.mul(b))
    }

    fn __floordiv__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.floor_div(b))
    }

    fn __rfloordiv__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.floor_div(b))
    }

    fn __truediv__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.div(b))
    }

    fn __rtruediv__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.div(b))
    }

    fn __mod__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.rem(b))
    }

    fn __rmod__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.rem(b))
    }

    fn __lshift__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.lshift(b))
    }

    fn __rlshift__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.lshift(b))
    }

    fn __rshift__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.rshift(b))
    }

    fn __rrshift__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.rshift(b))
    }

    fn __and__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.bitand(b))
    }

    fn __rand__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.bitand(b))
    }

    fn __or__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.bitor(b))
    }

    fn __ror__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.bitor(b))
    }

    fn __xor__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.binop(py, other, |a, b| a.bitxor(b))
    }

    fn __rxor__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.rbinop(py, other, |a, b| a.bitxor(b))
    }

    fn __pow__<'py>(
        &self,
        py: Python<'py>,
        other: &Bound<'py, PyAny>,
        modulo: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let other = unwrap_atomic(py, other)?;
        py.import("builtins")?.getattr("pow")?.call1((self.value_obj(py)?, other, modulo))
    }

    fn __rpow__<'py>(
        &self,
        py: Python<'py>,
        other: &Bound<'py, PyAny>,
        modulo: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        py.import("builtins")?.getattr("pow")?.call1((other, self.value_obj(py)?, modulo))
    }
}

fn truthy(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    v.is_truthy()
}

fn unwrap_atomic<'py>(py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    match other.cast::<PyAtomicInt64>() {
        Ok(o) => o.get().value_obj(py),
        Err(_) => Ok(other.clone()),
    }
}

fn floor_div(a: i64, b: i64) -> i64 {
    let q = a.wrapping_div(b);
    if (a % b != 0) && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

/// A shift count, capped at 64 (shifting further gives the same result).
fn shift_amount(n: &Bound<'_, PyInt>) -> PyResult<u32> {
    if n.lt(0)? {
        return Err(PyValueError::new_err("negative shift count"));
    }
    Ok(exact_i64(n).map_or(64, |n| n.min(64) as u32))
}

/// A boolean flag in shared memory.
#[pyclass(module = "pyconc._native", name = "AtomicFlag", frozen)]
pub struct PyAtomicFlag {
    inner: Held<SharedAtomic>,
}

impl PyAtomicFlag {
    #[inline]
    fn a(&self) -> PyResult<Open<'_, SharedAtomic>> {
        self.inner.open()
    }
}

#[pymethods]
impl PyAtomicFlag {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (value=false, *, _handle=None))]
    fn new(py: Python<'_>, #[pyo3(from_py_with = truthy)] value: bool, _handle: Option<Handle>) -> PyResult<Self> {
        let inner = match _handle {
            Some(h) => attach(py, &h, "AtomicFlag")?,
            None => SharedAtomic::create(value as i64).py(py)?,
        };
        Ok(PyAtomicFlag { inner: Held::new("AtomicFlag", inner) })
    }

    /// Sets the flag to `bool(value)`.
    fn set(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = value.is_truthy()?;
        self.a()?.set(v as i64);
        Ok(())
    }

    fn __bool__(&self) -> PyResult<bool> {
        Ok(self.a()?.get() != 0)
    }

    fn __repr__(&self) -> String {
        match self.a() {
            Ok(a) => format!("AtomicFlag({})", if a.get() != 0 { "True" } else { "False" }),
            Err(_) => "AtomicFlag(<closed>)".into(),
        }
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

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.inner.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let a = self.a()?;
        Ok(Handle::new("AtomicFlag", a.segment(), a.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        reduce(slf.as_any(), slf.get()._handle()?)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyAtomicInt64>()?;
    m.add_class::<PyAtomicFlag>()?;
    shared_class::<PyAtomicInt64>(m)?;
    shared_class::<PyAtomicFlag>(m)?;
    Ok(())
}

super::identity::identity_of!(PyAtomicFlag, inner, |s| s.segment(), s.offset());
