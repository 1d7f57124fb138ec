//! `size_of(value)`: estimated bytes held by a Python value, by the rules of
//! docs/primitives.md ("size_of"); the result equals `phasekit._pure.size_of` exactly.
//!
//! Speed comes from not calling Python where the answer is known:
//! * exact builtin types are recognised by their type pointer; `float`, `complex`,
//!   `bool` and `None` have one size each, `int`, `bytes` and `tuple` sizes follow a
//!   formula in their length (all measured once with `sys.getsizeof` at first use, and
//!   checked; a formula that does not check out falls back to `sys.getsizeof`);
//! * `str`, `list`, `dict`, `set`, `frozenset`, `bytearray` and large `int` call their
//!   type's own `__sizeof__` descriptor plus the constant `sys.getsizeof` adds for that
//!   type (its GC header), measured and checked once: ten times cheaper than going
//!   through `sys.getsizeof`;
//! * for other types, the rule that applies is looked up once per type and cached;
//! * a large dict's sampled positions are reached directly (`PyDict_Next` positions are
//!   entry indexes, which equal iteration positions when the dict has no deleted
//!   entries; checked per dict and once at start-up), so sampling does not walk it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::raw::c_int;
use std::ptr::{addr_of_mut, null_mut};

use parking_lot::Mutex;
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::ledger::FxHasher;

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

/// Containers at this depth or deeper count `sys.getsizeof` only.
const MAX_DEPTH: u32 = 6;
/// Containers with more entries are measured on this many evenly spaced entries.
const SAMPLE: usize = 32;
/// At most this many types get their rule cached (each cached type is kept alive).
const MAX_CACHED_TYPES: usize = 4096;

/// What size_of does with values of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    GetSizeOf,
    MemoryView,
    Arrow,
    Numpy,
    Polars,
    Pandas,
    Mapping,
    Sequence,
    Set,
}

/// Sizes measured once with `sys.getsizeof`.
struct Sizes {
    getsizeof: Py<PyAny>,
    float: i128,
    complex: i128,
    none: i128,
    true_: i128,
    false_: i128,
    int: Option<IntSizes>,
    /// `sys.getsizeof(b"")`; a bytes object adds its length.
    bytes_base: Option<i128>,
    tuple: Option<TupleSizes>,
    dict_jump: bool,
    str_: Option<SizeOfMethod>,
    big_int: Option<SizeOfMethod>,
    list: Option<SizeOfMethod>,
    dict: Option<SizeOfMethod>,
    set: Option<SizeOfMethod>,
    frozenset: Option<SizeOfMethod>,
    bytearray: Option<SizeOfMethod>,
}

/// `sys.getsizeof(x)` of an exact builtin type: `T.__sizeof__(x) + extra`.
struct SizeOfMethod {
    descriptor: Py<PyAny>,
    extra: i128,
}

/// `sys.getsizeof(i)`: `zero` for 0, else `one + per_digit * (digits - 1)`.
struct IntSizes {
    zero: i128,
    one: i128,
    per_digit: i128,
    bits_per_digit: u32,
}

/// `sys.getsizeof(t)`: `empty` for `()`, else `base + per_item * len`.
struct TupleSizes {
    empty: i128,
    base: i128,
    per_item: i128,
}

static SIZES: PyOnceLock<Sizes> = PyOnceLock::new();
/// Types whose rule is cached, kept alive so that their addresses are never reused.
static CACHED_TYPES: Mutex<Vec<Py<PyType>>> = Mutex::new(Vec::new());

thread_local! {
    static RULES: RefCell<HashMap<usize, CachedRule, FxBuild>> = RefCell::new(HashMap::default());
}

fn type_ptr(obj: &Bound<'_, PyAny>) -> *mut ffi::PyTypeObject {
    // SAFETY: a live object has a type.
    unsafe { ffi::Py_TYPE(obj.as_ptr()) }
}

/// Whether `tp` is the builtin type `builtin` (compared by address).
macro_rules! is_type {
    ($tp:expr, $builtin:ident) => {
        $tp == addr_of_mut!(ffi::$builtin)
    };
}

/// An int-like result (`operator.index` semantics) as i128.
fn index(obj: &Bound<'_, PyAny>) -> PyResult<i128> {
    match obj.extract::<i64>() {
        Ok(v) => Ok(i128::from(v)),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => obj.extract::<i128>(),
        Err(e) => Err(e),
    }
}

/// `function(arg)`.
fn call1<'py>(function: &Py<PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: a callable and one argument, NULL-terminated; returns a new reference or
    // NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            arg.py(),
            ffi::PyObject_CallFunctionObjArgs(
                function.as_ptr(),
                arg.as_ptr(),
                null_mut::<ffi::PyObject>(),
            ),
        )
    }
}

fn getsizeof(sizes: &Sizes, obj: &Bound<'_, PyAny>) -> PyResult<i128> {
    index(&call1(&sizes.getsizeof, obj)?)
}

/// `sys.getsizeof(obj)` of an exact builtin type, through `method` when it checked out.
fn getsizeof_by(
    sizes: &Sizes,
    method: &Option<SizeOfMethod>,
    obj: &Bound<'_, PyAny>,
) -> PyResult<i128> {
    match method {
        Some(m) => Ok(index(&call1(&m.descriptor, obj)?)? + m.extra),
        None => getsizeof(sizes, obj),
    }
}

impl SizeOfMethod {
    /// The `__sizeof__` of `type_name` and its constant offset to `sys.getsizeof`, if the
    /// offset is the same for every sample.
    fn calibrate(
        py: Python<'_>,
        getsizeof_fn: &Bound<'_, PyAny>,
        type_name: &str,
        samples: &[&str],
    ) -> PyResult<Option<SizeOfMethod>> {
        let builtins = py.import("builtins")?;
        let descriptor = builtins.getattr(type_name)?.getattr("__sizeof__")?.unbind();
        let mut extra: Option<i128> = None;
        for sample in samples {
            let code = std::ffi::CString::new(*sample)?;
            let value = py.eval(&code, None, None)?;
            let offset =
                index(&getsizeof_fn.call1((&value,))?)? - index(&call1(&descriptor, &value)?)?;
            if extra.is_some_and(|e| e != offset) {
                return Ok(None);
            }
            extra = Some(offset);
        }
        Ok(extra.map(|extra| SizeOfMethod { descriptor, extra }))
    }
}

impl IntSizes {
    fn of_magnitude(&self, magnitude: u64) -> i128 {
        if magnitude == 0 {
            return self.zero;
        }
        let bits = 64 - magnitude.leading_zeros();
        let digits = bits.div_ceil(self.bits_per_digit);
        self.one + self.per_digit * i128::from(digits - 1)
    }

    /// The size of an exact int that fits 64 bits, without calling Python.
    fn of(&self, obj: &Bound<'_, PyAny>) -> Option<i128> {
        let mut overflow: c_int = 0;
        // SAFETY: `obj` is an exact int; overflow is reported through the flag.
        let value = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow) };
        if overflow != 0 {
            return None;
        }
        if value == -1 && PyErr::occurred(obj.py()) {
            let _ = PyErr::take(obj.py());
            return None;
        }
        Some(self.of_magnitude(value.unsigned_abs()))
    }
}

impl TupleSizes {
    fn of_len(&self, len: usize) -> i128 {
        if len == 0 {
            self.empty
        } else {
            self.base + self.per_item * len as i128
        }
    }
}

// ------------------------------------------------------------------ calibration

fn calibrate(py: Python<'_>) -> PyResult<Sizes> {
    let sys = py.import("sys")?;
    let getsizeof_fn = sys.getattr("getsizeof")?;
    let measure =
        |value: Bound<'_, PyAny>| -> PyResult<i128> { index(&getsizeof_fn.call1((value,))?) };
    let int = calibrate_int(py, &sys, &measure)?;
    let bytes_base = {
        let base = measure(pyo3::types::PyBytes::new(py, b"").into_any())?;
        let ok = [1usize, 3, 100, 4096].iter().try_fold(true, |ok, &n| {
            let b = pyo3::types::PyBytes::new(py, &vec![b'x'; n]).into_any();
            Ok::<bool, PyErr>(ok && measure(b)? == base + n as i128)
        })?;
        ok.then_some(base)
    };
    let tuple = {
        let empty = measure(PyTuple::empty(py).into_any())?;
        let one = measure(PyTuple::new(py, [py.None()])?.into_any())?;
        let two = measure(PyTuple::new(py, [py.None(), py.None()])?.into_any())?;
        let sizes = TupleSizes {
            empty,
            base: one - (two - one),
            per_item: two - one,
        };
        let ok = [3usize, 10, 100, 1000].iter().try_fold(true, |ok, &n| {
            let t = PyTuple::new(py, (0..n).map(|_| py.None()))?.into_any();
            Ok::<bool, PyErr>(ok && measure(t)? == sizes.of_len(n))
        })?;
        ok.then_some(sizes)
    };
    let method =
        |name: &str, samples: &[&str]| SizeOfMethod::calibrate(py, &getsizeof_fn, name, samples);
    let sizes = Sizes {
        str_: method("str", &["''", "'abc'", "'é' * 9", "'€' * 99", "'😀' * 7"])?,
        big_int: method("int", &["2 ** 64", "10 ** 30", "-(2 ** 200)", "3 ** 999"])?,
        list: method("list", &["[]", "[1, 2, 3]", "list(range(100))"])?,
        dict: method("dict", &["{}", "{1: 2}", "{i: i for i in range(100)}"])?,
        set: method("set", &["set()", "{1, 2}", "set(range(100))"])?,
        frozenset: method("frozenset", &["frozenset()", "frozenset(range(100))"])?,
        bytearray: method("bytearray", &["bytearray()", "bytearray(100)"])?,
        getsizeof: getsizeof_fn.clone().unbind(),
        float: measure(1.0f64.into_pyobject(py)?.into_any())?,
        complex: measure(pyo3::types::PyComplex::from_doubles(py, 1.0, 2.0).into_any())?,
        none: measure(py.None().into_bound(py))?,
        true_: measure(true.into_pyobject(py)?.to_owned().into_any())?,
        false_: measure(false.into_pyobject(py)?.to_owned().into_any())?,
        int,
        bytes_base,
        tuple,
        dict_jump: false,
    };
    let dict_jump = check_dict_jump(py)?;
    Ok(Sizes { dict_jump, ..sizes })
}

fn calibrate_int(
    py: Python<'_>,
    sys: &Bound<'_, PyModule>,
    measure: &dyn Fn(Bound<'_, PyAny>) -> PyResult<i128>,
) -> PyResult<Option<IntSizes>> {
    let info = sys.getattr("int_info")?;
    let bits_per_digit: u32 = info.getattr("bits_per_digit")?.extract()?;
    if bits_per_digit == 0 {
        return Ok(None);
    }
    let one = measure(1i64.into_pyobject(py)?.into_any())?;
    let big = 1i64 << bits_per_digit.min(62);
    let sizes = IntSizes {
        zero: measure(0i64.into_pyobject(py)?.into_any())?,
        one,
        per_digit: measure(big.into_pyobject(py)?.into_any())? - one,
        bits_per_digit,
    };
    let mut probes: Vec<i64> = vec![0, 1, -1, 255, 256, 123_456_789, i64::MAX, i64::MIN];
    for shift in 1..63 {
        probes.extend([(1i64 << shift) - 1, 1i64 << shift, -(1i64 << shift)]);
    }
    for v in probes {
        let obj = v.into_pyobject(py)?.into_any();
        if sizes.of(&obj) != Some(measure(obj)?) {
            return Ok(None);
        }
    }
    Ok(Some(sizes))
}

/// Whether `PyDict_Next` positions are entry indexes (see [`dict_jump_sample`]) in this
/// interpreter: compared with a full walk on dicts with and without deleted entries.
fn check_dict_jump(py: Python<'_>) -> PyResult<bool> {
    let code = c"\
class _Slots:
    def __init__(self):
        for i in range(40):
            setattr(self, f'a{i}', i)
compact = {str(i): i for i in range(100)}
holes = dict(compact)
for i in range(0, 100, 3):
    del holes[str(i)]
ints = {i * 7: i for i in range(5000)}
split = _Slots().__dict__
";
    let globals = PyDict::new(py);
    py.run(code, Some(&globals), None)?;
    for name in ["compact", "holes", "ints", "split"] {
        let Some(d) = globals.get_item(name)? else {
            return Ok(false);
        };
        let n = d.len()?;
        let walked = dict_walk_sample(&d, n);
        match dict_jump_sample(&d, n) {
            Some(jumped) => {
                let same = jumped.len() == walked.len()
                    && jumped
                        .iter()
                        .zip(&walked)
                        .all(|(a, b)| a.0.is(&b.0) && a.1.is(&b.1));
                if !same {
                    return Ok(false);
                }
            }
            None if name == "holes" => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

// ------------------------------------------------------------------ sampling

/// Sampled positions `i * n // SAMPLE`, i = 0..SAMPLE, of a container of `n > SAMPLE`.
fn sample_position(i: usize, n: usize) -> usize {
    (i as u128 * n as u128 / SAMPLE as u128) as usize
}

/// `sum * n // SAMPLE` (Python floor division, saturating).
fn scale(sum: i128, n: usize) -> i128 {
    sum.saturating_mul(n as i128).div_euclid(SAMPLE as i128)
}

type Pair<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// The (key, value) pairs at the sampled positions of an exact dict, by walking it.
fn dict_walk_sample<'py>(d: &Bound<'py, PyAny>, n: usize) -> Vec<Pair<'py>> {
    let py = d.py();
    let mut out = Vec::with_capacity(SAMPLE.min(n));
    let (mut pos, mut position, mut next) = (0 as ffi::Py_ssize_t, 0usize, 0usize);
    let (mut key, mut value) = (null_mut(), null_mut());
    // SAFETY: `d` is an exact dict kept alive by the caller; keys and values are borrowed
    // and turned into owned references at once.
    while unsafe { ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut key, &mut value) } != 0 {
        let wanted = if n <= SAMPLE {
            true
        } else {
            next < SAMPLE && position == sample_position(next, n)
        };
        if wanted {
            unsafe {
                out.push((
                    Bound::from_borrowed_ptr(py, key),
                    Bound::from_borrowed_ptr(py, value),
                ));
            }
            next += 1;
            if n > SAMPLE && next == SAMPLE {
                break;
            }
        }
        position += 1;
    }
    out
}

/// The (key, value) pairs at the sampled positions of an exact dict with `n > SAMPLE`
/// entries, reached directly; `None` when the dict has deleted entries (then positions
/// and entry indexes differ) or a position does not land where expected.
fn dict_jump_sample<'py>(d: &Bound<'py, PyAny>, n: usize) -> Option<Vec<Pair<'py>>> {
    let py = d.py();
    let (mut key, mut value) = (null_mut(), null_mut());
    // No live entry at index >= n: the n entries are exactly indexes 0..n.
    let mut pos = ffi::Py_ssize_t::try_from(n).ok()?;
    // SAFETY: as in dict_walk_sample.
    if unsafe { ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut key, &mut value) } != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(SAMPLE);
    for i in 0..SAMPLE {
        let target = ffi::Py_ssize_t::try_from(sample_position(i, n)).ok()?;
        let mut pos = target;
        // SAFETY: as in dict_walk_sample.
        if unsafe { ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut key, &mut value) } == 0
            || pos != target + 1
        {
            return None;
        }
        unsafe {
            out.push((
                Bound::from_borrowed_ptr(py, key),
                Bound::from_borrowed_ptr(py, value),
            ));
        }
    }
    Some(out)
}

/// Sum of `measure` over the items of an iterable of length `n` (sampled and scaled
/// past SAMPLE items), in iteration order.
fn iter_items(
    iterable: &Bound<'_, PyAny>,
    n: usize,
    mut measure: impl FnMut(&Bound<'_, PyAny>) -> PyResult<i128>,
) -> PyResult<i128> {
    let mut sum: i128 = 0;
    if n <= SAMPLE {
        for item in iterable.try_iter()? {
            sum = sum.saturating_add(measure(&item?)?);
        }
        return Ok(sum);
    }
    let mut next = 0usize;
    for (position, item) in iterable.try_iter()?.enumerate() {
        let item = item?;
        if position == sample_position(next, n) {
            sum = sum.saturating_add(measure(&item)?);
            next += 1;
            if next == SAMPLE {
                return Ok(scale(sum, n));
            }
        }
    }
    Err(PyRuntimeError::new_err(format!(
        "size_of: a container of len() {n} ended after fewer items while being sampled"
    )))
}

// ------------------------------------------------------------------ rules

/// The rule of a type (first matching rule of docs/primitives.md wins).
fn rule_of(tp: &Bound<'_, PyType>) -> PyResult<Rule> {
    let py = tp.py();
    let builtins = py.import("builtins")?;
    let is_sub = |names: &[&str]| -> PyResult<bool> {
        for name in names {
            if tp.is_subclass(&builtins.getattr(*name)?)? {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if is_sub(&[
        "bytes",
        "bytearray",
        "str",
        "int",
        "float",
        "bool",
        "complex",
    ])? || tp.is(py.None().into_bound(py).get_type())
    {
        return Ok(Rule::GetSizeOf);
    }
    if is_sub(&["memoryview"])? {
        return Ok(Rule::MemoryView);
    }
    let module = match tp.getattr(intern!(py, "__module__")) {
        Ok(m) => m.extract::<String>().ok(),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => None,
        Err(e) => return Err(e),
    };
    if let Some(module) = module {
        let library = [
            ("pyarrow", "get_total_buffer_size", Rule::Arrow),
            ("numpy", "nbytes", Rule::Numpy),
            ("polars", "estimated_size", Rule::Polars),
            ("pandas", "memory_usage", Rule::Pandas),
        ];
        for (prefix, attribute, rule) in library {
            if module.starts_with(prefix) && tp.hasattr(attribute)? {
                return Ok(rule);
            }
        }
    }
    if is_sub(&["dict"])? {
        return Ok(Rule::Mapping);
    }
    if is_sub(&["list", "tuple"])? {
        return Ok(Rule::Sequence);
    }
    if is_sub(&["set", "frozenset"])? {
        return Ok(Rule::Set);
    }
    Ok(Rule::GetSizeOf)
}

/// A type's rule and, for a rule that calls a method, the method as found on the type
/// when calling it with the value as its one argument is the same as calling it bound.
struct CachedRule {
    rule: Rule,
    method: Option<Py<PyAny>>,
}

/// The method name that `rule` calls.
fn method_name(rule: Rule) -> Option<&'static str> {
    match rule {
        Rule::Arrow => Some("get_total_buffer_size"),
        Rule::Polars => Some("estimated_size"),
        _ => None,
    }
}

/// `tp.<name>` when it is a plain function or method descriptor (then `f(value)` is
/// `value.<name>()`); otherwise the method is called bound.
fn plain_method(tp: &Bound<'_, PyType>, name: &str) -> PyResult<Option<Py<PyAny>>> {
    let attribute = tp.getattr(name)?;
    let kind = attribute.get_type().name()?;
    let plain = ["function", "method_descriptor", "cython_function_or_method"]
        .iter()
        .any(|k| kind == *k);
    Ok(plain.then(|| attribute.unbind()))
}

/// The rule of `obj`'s type (and its unbound method), from the per-type cache.
fn cached_rule(obj: &Bound<'_, PyAny>) -> PyResult<(Rule, Option<Py<PyAny>>)> {
    let py = obj.py();
    let address = type_ptr(obj) as usize;
    let hit = RULES.with(|rules| {
        rules
            .borrow()
            .get(&address)
            .map(|c| (c.rule, c.method.as_ref().map(|m| m.clone_ref(py))))
    });
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let tp = obj.get_type();
    let rule = rule_of(&tp)?;
    let method = match method_name(rule) {
        Some(name) => plain_method(&tp, name)?,
        None => None,
    };
    let mut kept = CACHED_TYPES.lock();
    if kept.len() < MAX_CACHED_TYPES {
        if !kept.iter().any(|t| t.bind(py).is(&tp)) {
            kept.push(tp.unbind());
        }
        drop(kept);
        let cached = CachedRule {
            rule,
            method: method.as_ref().map(|m| m.clone_ref(py)),
        };
        RULES.with(|rules| rules.borrow_mut().insert(address, cached));
    }
    Ok((rule, method))
}

/// Calls the method of a rule: through the cached unbound method when there is one.
fn call_rule_method(
    obj: &Bound<'_, PyAny>,
    rule: Rule,
    method: Option<Py<PyAny>>,
) -> PyResult<i128> {
    match (method, method_name(rule)) {
        (Some(m), _) => index(&call1(&m, obj)?),
        (None, Some(name)) => index(&obj.call_method0(name)?),
        (None, None) => Err(PyRuntimeError::new_err("size_of: rule without a method")),
    }
}

fn pandas_size(obj: &Bound<'_, PyAny>) -> PyResult<i128> {
    let py = obj.py();
    let memory_usage = intern!(py, "memory_usage");
    let kwargs = PyDict::new(py);
    kwargs.set_item("index", true)?;
    kwargs.set_item("deep", false)?;
    let usage = match obj.call_method(memory_usage, (), Some(&kwargs)) {
        Ok(usage) => usage,
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            // pandas.Index.memory_usage has no `index` argument
            let kwargs = PyDict::new(py);
            kwargs.set_item("deep", false)?;
            obj.call_method(memory_usage, (), Some(&kwargs))?
        }
        Err(e) => return Err(e),
    };
    if usage.is_instance_of::<pyo3::types::PyInt>() {
        return index(&usage);
    }
    let sum = intern!(py, "sum");
    if usage.hasattr(sum)? {
        return index(&usage.call_method0(sum)?);
    }
    index(&usage)
}

// ------------------------------------------------------------------ measuring

fn size(sizes: &Sizes, obj: &Bound<'_, PyAny>, depth: u32) -> PyResult<i128> {
    let tp = type_ptr(obj);
    if is_type!(tp, PyUnicode_Type) {
        return getsizeof_by(sizes, &sizes.str_, obj);
    }
    if is_type!(tp, PyLong_Type) {
        return match sizes.int.as_ref().map(|int| int.of(obj)) {
            Some(Some(size)) => Ok(size),
            Some(None) => getsizeof_by(sizes, &sizes.big_int, obj), // past 64 bits
            None => getsizeof(sizes, obj),
        };
    }
    if is_type!(tp, PyFloat_Type) {
        return Ok(sizes.float);
    }
    if obj.is_none() {
        return Ok(sizes.none);
    }
    if is_type!(tp, PyBool_Type) {
        return Ok(if obj.is_truthy()? {
            sizes.true_
        } else {
            sizes.false_
        });
    }
    if is_type!(tp, PyBytes_Type) {
        if let Some(base) = sizes.bytes_base {
            // SAFETY: `obj` is an exact bytes object.
            let len = unsafe { ffi::PyBytes_Size(obj.as_ptr()) };
            return Ok(base + len as i128);
        }
        return getsizeof(sizes, obj);
    }
    if is_type!(tp, PyComplex_Type) {
        return Ok(sizes.complex);
    }
    if is_type!(tp, PyDict_Type) {
        return exact_dict(sizes, obj, depth);
    }
    if is_type!(tp, PyList_Type) || is_type!(tp, PyTuple_Type) {
        return exact_sequence(sizes, obj, depth);
    }
    if is_type!(tp, PySet_Type) {
        return generic_container(sizes, obj, Rule::Set, depth, &sizes.set);
    }
    if is_type!(tp, PyFrozenSet_Type) {
        return generic_container(sizes, obj, Rule::Set, depth, &sizes.frozenset);
    }
    if is_type!(tp, PyByteArray_Type) {
        return getsizeof_by(sizes, &sizes.bytearray, obj);
    }
    let py = obj.py();
    match cached_rule(obj)? {
        (Rule::GetSizeOf, _) => getsizeof(sizes, obj),
        (Rule::MemoryView | Rule::Numpy, _) => index(&obj.getattr(intern!(py, "nbytes"))?),
        (rule @ (Rule::Arrow | Rule::Polars), method) => call_rule_method(obj, rule, method),
        (Rule::Pandas, _) => pandas_size(obj),
        (rule @ (Rule::Mapping | Rule::Sequence | Rule::Set), _) => {
            generic_container(sizes, obj, rule, depth, &None)
        }
    }
}

fn exact_dict(sizes: &Sizes, d: &Bound<'_, PyAny>, depth: u32) -> PyResult<i128> {
    let own = getsizeof_by(sizes, &sizes.dict, d)?;
    if depth >= MAX_DEPTH {
        return Ok(own);
    }
    let n = d.len()?;
    let pairs = if n > SAMPLE && sizes.dict_jump {
        dict_jump_sample(d, n).unwrap_or_else(|| dict_walk_sample(d, n))
    } else {
        dict_walk_sample(d, n)
    };
    let mut sum: i128 = 0;
    for (key, value) in &pairs {
        sum = sum
            .saturating_add(size(sizes, key, depth + 1)?)
            .saturating_add(size(sizes, value, depth + 1)?);
    }
    Ok(own.saturating_add(if n > SAMPLE { scale(sum, n) } else { sum }))
}

/// An exact list or tuple: sampled entries are read by index.
fn exact_sequence(sizes: &Sizes, seq: &Bound<'_, PyAny>, depth: u32) -> PyResult<i128> {
    // SAFETY (both branches below): `seq` is an exact list or tuple.
    let is_tuple = unsafe { ffi::PyTuple_CheckExact(seq.as_ptr()) } != 0;
    let n = seq.len()?;
    let own = match (&sizes.tuple, is_tuple) {
        (Some(tuple), true) => tuple.of_len(n),
        _ => getsizeof_by(sizes, if is_tuple { &None } else { &sizes.list }, seq)?,
    };
    if depth >= MAX_DEPTH {
        return Ok(own);
    }
    let item = |i: usize| -> PyResult<Bound<'_, PyAny>> {
        let i = ffi::Py_ssize_t::try_from(i)?;
        // SAFETY: borrowed item (or NULL with IndexError), turned into an owned reference.
        unsafe {
            let ptr = if is_tuple {
                ffi::PyTuple_GetItem(seq.as_ptr(), i)
            } else {
                ffi::PyList_GetItem(seq.as_ptr(), i)
            };
            Bound::from_borrowed_ptr_or_err(seq.py(), ptr)
        }
    };
    let mut sum: i128 = 0;
    if n <= SAMPLE {
        for i in 0..n {
            sum = sum.saturating_add(size(sizes, &item(i)?, depth + 1)?);
        }
        return Ok(own.saturating_add(sum));
    }
    for i in 0..SAMPLE {
        sum = sum.saturating_add(size(sizes, &item(sample_position(i, n))?, depth + 1)?);
    }
    Ok(own.saturating_add(scale(sum, n)))
}

/// Sets and subclasses of dict, list, tuple and set: measured through iteration.
/// `method` measures the container itself (`None`: `sys.getsizeof`).
fn generic_container(
    sizes: &Sizes,
    obj: &Bound<'_, PyAny>,
    rule: Rule,
    depth: u32,
    method: &Option<SizeOfMethod>,
) -> PyResult<i128> {
    let own = getsizeof_by(sizes, method, obj)?;
    if depth >= MAX_DEPTH {
        return Ok(own);
    }
    let n = obj.len()?;
    let inner = depth + 1;
    let items = if rule == Rule::Mapping {
        iter_items(&obj.call_method0(intern!(obj.py(), "items"))?, n, |kv| {
            Ok(size(sizes, &kv.get_item(0)?, inner)?.saturating_add(size(
                sizes,
                &kv.get_item(1)?,
                inner,
            )?))
        })?
    } else {
        iter_items(obj, n, |item| size(sizes, item, inner))?
    };
    Ok(own.saturating_add(items))
}

/// Estimated bytes held by ``value`` (the rules are in docs/primitives.md).
#[pyfunction]
#[pyo3(name = "size_of")]
fn size_of_value<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = value.py();
    let sizes = SIZES.get_or_try_init(py, || calibrate(py))?;
    let total = size(sizes, value, 0)?;
    match i64::try_from(total) {
        Ok(small) => Ok(small.into_pyobject(py)?.into_any()),
        Err(_) => Ok(total.into_pyobject(py)?.into_any()),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(size_of_value, m)?)?;
    Ok(())
}
