//! `SpillLedger`: the Python face of [`crate::ledger::Ledger`]. Keys are Python `str`
//! passed to the ledger as UTF-8 bytes (lone surrogates pass through as in
//! `surrogatepass`), so a key never costs a Python object on the hot path.

use std::borrow::Cow;
use std::os::raw::c_char;

use pyo3::exceptions::PyOverflowError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::errors::{InvalidArgument, UnknownKey};
use crate::ledger::{Key, Ledger, MAX_BYTES};

unsafe extern "C" {
    // In every CPython 3 (part of the limited API since 3.10); returns the str's cached
    // UTF-8 form without allocating for ASCII strings.
    #[link_name = "PyUnicode_AsUTF8AndSize"]
    fn unicode_as_utf8_and_size(
        unicode: *mut ffi::PyObject,
        size: *mut ffi::Py_ssize_t,
    ) -> *const c_char;
}

const SURROGATEPASS: &std::ffi::CStr = c"surrogatepass";
const UTF8: &std::ffi::CStr = c"utf-8";

/// The bytes of a `str` key; `InvalidArgument` for any other type.
fn key_bytes<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if !key.is_instance_of::<PyString>() {
        return Err(InvalidArgument::new_err(format!(
            "ledger key must be a str, got {} {}",
            type_name(key),
            repr(key)
        )));
    }
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: `key` is a str; the returned buffer lives as long as the str.
    let data = unsafe { unicode_as_utf8_and_size(key.as_ptr(), &mut size) };
    if !data.is_null() {
        let len = usize::try_from(size).unwrap_or(0);
        // SAFETY: CPython returns `size` valid bytes at `data`, owned by `key`.
        return Ok(Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(data.cast::<u8>(), len)
        }));
    }
    // a lone surrogate: not UTF-8; encode it reversibly instead
    let _ = PyErr::take(key.py());
    let encoded = key.call_method1(
        pyo3::intern!(key.py(), "encode"),
        ("utf-8", "surrogatepass"),
    )?;
    let bytes: Vec<u8> = encoded.extract()?;
    Ok(Cow::Owned(bytes))
}

/// A key as a Python `str` (the inverse of [`key_bytes`]).
fn key_str<'py>(py: Python<'py>, key: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let len = ffi::Py_ssize_t::try_from(key.len())
        .map_err(|_| InvalidArgument::new_err("ledger key too long"))?;
    // SAFETY: valid pointer and length; returns a new reference or NULL with an error set.
    unsafe {
        let ptr = ffi::PyUnicode_Decode(
            key.as_ptr().cast::<c_char>(),
            len,
            UTF8.as_ptr(),
            SURROGATEPASS.as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, ptr)
    }
}

fn key_list<'py>(py: Python<'py>, keys: Vec<Key>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for key in keys {
        list.append(key_str(py, &key)?)?;
    }
    Ok(list)
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn repr(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".to_owned())
}

/// A byte count in `0..=MAX_BYTES` (any object with `__index__`), or `InvalidArgument`.
fn byte_count(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let out_of_range = || {
        InvalidArgument::new_err(format!(
            "{argument} must be in 0..{MAX_BYTES}, got {}",
            repr(value)
        ))
    };
    match value.extract::<i64>() {
        Ok(count) => u64::try_from(count).map_err(|_| out_of_range()),
        Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => Err(out_of_range()),
        Err(_) => Err(InvalidArgument::new_err(format!(
            "{argument} must be an int, got {} {}",
            type_name(value),
            repr(value)
        ))),
    }
}

/// A `u128` count as a Python int.
fn count<'py>(py: Python<'py>, value: u128) -> PyResult<Bound<'py, PyAny>> {
    match u64::try_from(value) {
        Ok(small) => Ok(small.into_pyobject(py)?.into_any()),
        Err(_) => Ok(value.into_pyobject(py)?.into_any()),
    }
}

/// Byte accounting in least-recently-used order, with per-child budgets under a parent.
#[pyclass(frozen, module = "phasekit._core", name = "SpillLedger")]
pub struct SpillLedger {
    ledger: Ledger,
}

impl SpillLedger {
    fn unknown(&self, key: &Bound<'_, PyAny>) -> PyErr {
        let name = self.ledger.name();
        let place = if name.is_empty() {
            "this ledger".to_owned()
        } else {
            format!("ledger {}", repr(&PyString::new(key.py(), name)))
        };
        UnknownKey::new_err(format!(
            "key {} is not tracked in {place} or its children",
            repr(key)
        ))
    }

    fn make(
        budget_bytes: &Bound<'_, PyAny>,
        parent: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let budget = byte_count("budget_bytes", budget_bytes)?;
        let name: String = match name {
            None => String::new(),
            Some(n) if n.is_instance_of::<PyString>() => n.extract()?,
            Some(n) => {
                return Err(InvalidArgument::new_err(format!(
                    "name must be a str, got {} {}",
                    type_name(n),
                    repr(n)
                )))
            }
        };
        let ledger = match parent {
            None => Ledger::new(budget, &name),
            Some(p) if p.is_none() => Ledger::new(budget, &name),
            Some(p) => match p.cast::<SpillLedger>() {
                Ok(parent) => parent.get().ledger.child(budget, &name),
                Err(_) => {
                    let tp = p.get_type();
                    let module = tp
                        .module()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|_| "?".to_owned());
                    return Err(InvalidArgument::new_err(format!(
                        "parent must be a SpillLedger of the same backend or None, got {module}.{}",
                        type_name(p)
                    )));
                }
            },
        };
        Ok(SpillLedger { ledger })
    }
}

#[pymethods]
impl SpillLedger {
    #[new]
    #[pyo3(signature = (budget_bytes, parent=None, name=None), text_signature = "(budget_bytes, parent=None, name='')")]
    fn new(
        budget_bytes: &Bound<'_, PyAny>,
        parent: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Self::make(budget_bytes, parent, name)
    }

    #[getter]
    fn budget(&self) -> u64 {
        self.ledger.budget()
    }

    #[getter]
    fn name(&self) -> &str {
        self.ledger.name()
    }

    #[getter]
    fn used<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        count(py, self.ledger.used())
    }

    #[getter]
    fn peak<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        count(py, self.ledger.peak())
    }

    /// Record (or re-size) ``key`` in this ledger and mark it most recently used.
    fn track(&self, key: &Bound<'_, PyAny>, nbytes: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = key_bytes(key)?;
        let nbytes = byte_count("nbytes", nbytes)?;
        self.ledger.track(&bytes, nbytes);
        Ok(())
    }

    /// Mark ``key`` most recently used; ``UnknownKey`` if not in this ledger's subtree.
    fn touch(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.ledger
            .touch(&key_bytes(key)?)
            .map_err(|_| self.unknown(key))
    }

    /// Stop tracking ``key`` (anywhere in this ledger's subtree); returns its bytes.
    fn forget(&self, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        self.ledger
            .forget(&key_bytes(key)?)
            .map_err(|_| self.unknown(key))
    }

    fn over_budget(&self) -> bool {
        self.ledger.over_budget()
    }

    /// Least recently used keys of this subtree, oldest first, whose release brings
    /// ``used`` to at most ``budget``; empty when within budget.
    fn spill_candidates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        key_list(py, self.ledger.spill_candidates())
    }

    #[pyo3(signature = (budget_bytes, name=None), text_signature = "($self, budget_bytes, name='')")]
    fn child(
        slf: &Bound<'_, Self>,
        budget_bytes: &Bound<'_, PyAny>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Self::make(budget_bytes, Some(slf.as_any()), name)
    }

    fn nbytes(&self, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        self.ledger
            .nbytes(&key_bytes(key)?)
            .map_err(|_| self.unknown(key))
    }

    /// Keys of this ledger's subtree, least recently used first.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        key_list(py, self.ledger.keys())
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        if !key.is_instance_of::<PyString>() {
            return Ok(false);
        }
        Ok(self.ledger.contains(&key_bytes(key)?))
    }

    fn __len__(&self) -> usize {
        self.ledger.len()
    }

    /// Keys: name, budget, used, peak, items, over_budget.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.ledger.stats();
        let d = PyDict::new(py);
        d.set_item("name", &*s.name)?;
        d.set_item("budget", s.budget)?;
        d.set_item("used", count(py, s.used)?)?;
        d.set_item("peak", count(py, s.peak)?)?;
        d.set_item("items", s.items)?;
        d.set_item("over_budget", s.over_budget)?;
        Ok(d)
    }

    fn __repr__(&self) -> PyResult<String> {
        Python::attach(|py| {
            let name = PyString::new(py, self.ledger.name());
            Ok(format!(
                "SpillLedger(name={}, budget={}, used={})",
                repr(name.as_any()),
                self.ledger.budget(),
                self.ledger.used()
            ))
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SpillLedger>()?;
    Ok(())
}
