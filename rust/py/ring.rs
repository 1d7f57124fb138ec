//! `EventRing`: the Python face of [`crate::ring::EventRing`].
//!
//! `append` takes positional arguments converted by small typed extractors (no
//! keyword parsing on the positional path, no Python objects allocated). `extend`
//! imports Arrow data through the PyCapsule interface (a mapping is first turned into
//! a `pyarrow.RecordBatch`), validates every batch, then applies them.

use pyo3::exceptions::PyOverflowError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyTuple};
use pyo3::{intern, Borrowed};

use super::arrow;
use super::errors::InvalidArgument;
use crate::ring::batches::{event_schema, events_batch, import, trades_batch};
use crate::ring::book::{FLAT_TOLERANCE, POSITION_FIELDS, REALIZED_FIELDS};
use crate::ring::{
    Event, EventRing as Ring, Policy, RingError, EVENT_BYTES, EVENT_FIELDS, TRADE_BYTES,
    TRADE_FIELDS,
};

fn invalid(e: RingError) -> PyErr {
    InvalidArgument::new_err(e.0)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn text(obj: &Bound<'_, PyAny>) -> String {
    obj.str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// The value of an exact `int` that fits in i64 (no error is left set).
#[inline(always)]
fn exact_int(obj: Borrowed<'_, '_, PyAny>) -> Option<i64> {
    let o = obj.as_ptr();
    // SAFETY: `o` is a live object borrowed for this call.
    unsafe {
        if ffi::PyLong_CheckExact(o) == 0 {
            return None;
        }
        let v = ffi::PyLong_AsLongLong(o);
        if v == -1 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        Some(v)
    }
}

/// The value of an exact `float` (or exact `int` within float range).
#[inline(always)]
fn exact_float(obj: Borrowed<'_, '_, PyAny>) -> Option<f64> {
    let o = obj.as_ptr();
    // SAFETY: `o` is a live object borrowed for this call.
    unsafe {
        if ffi::PyFloat_CheckExact(o) == 0 && ffi::PyLong_CheckExact(o) == 0 {
            return None;
        }
        let v = ffi::PyFloat_AsDouble(o);
        if v == -1.0 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        Some(v)
    }
}

/// An int argument in `lo..=hi`; `name` and `range` are for the message.
#[cold]
#[inline(never)]
fn int_arg(
    obj: Borrowed<'_, '_, PyAny>,
    name: &str,
    lo: i64,
    hi: i64,
    range: &str,
) -> PyResult<i64> {
    match obj.extract::<i64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        Ok(v) => Err(InvalidArgument::new_err(format!(
            "{name} must be in {range}, got {v}"
        ))),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => Err(InvalidArgument::new_err(
            format!("{name} must be in {range}, got {}", text(&obj)),
        )),
        Err(_) => Err(InvalidArgument::new_err(format!(
            "{name} must be an int, got {}",
            type_name(&obj)
        ))),
    }
}

/// An int64 argument of `append` (field `F` of EVENT_FIELDS: ts or key).
struct I64Arg<const F: usize>(i64);

impl<'a, 'py, const F: usize> FromPyObject<'a, 'py> for I64Arg<F> {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Some(v) = exact_int(obj) {
            return Ok(I64Arg(v));
        }
        int_arg(obj, EVENT_FIELDS[F], i64::MIN, i64::MAX, "int64 range").map(I64Arg)
    }
}

/// The `kind` argument: 0..65535.
struct KindArg(u16);

impl<'a, 'py> FromPyObject<'a, 'py> for KindArg {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Some(v) = exact_int(obj).and_then(|v| u16::try_from(v).ok()) {
            return Ok(KindArg(v));
        }
        let v = int_arg(obj, "kind", 0, i64::from(u16::MAX), "0..65535")?;
        Ok(KindArg(v as u16))
    }
}

/// The `symbol` argument: int32.
struct SymbolArg(i32);

impl<'a, 'py> FromPyObject<'a, 'py> for SymbolArg {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Some(v) = exact_int(obj).and_then(|v| i32::try_from(v).ok()) {
            return Ok(SymbolArg(v));
        }
        let range = "int32 range";
        let v = int_arg(obj, "symbol", i32::MIN.into(), i32::MAX.into(), range)?;
        Ok(SymbolArg(v as i32))
    }
}

/// A float64 argument of `append` (field `F`: price, quantity or value).
struct F64Arg<const F: usize>(f64);

impl<'a, 'py, const F: usize> FromPyObject<'a, 'py> for F64Arg<F> {
    type Error = PyErr;

    #[inline]
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Some(v) = exact_float(obj) {
            return Ok(F64Arg(v));
        }
        float_arg(obj, EVENT_FIELDS[F]).map(F64Arg)
    }
}

/// A float argument (any object with `__float__` or `__index__`).
#[cold]
#[inline(never)]
fn float_arg(obj: Borrowed<'_, '_, PyAny>, name: &str) -> PyResult<f64> {
    match obj.extract::<f64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => Err(InvalidArgument::new_err(
            format!("{name} must be in float64 range, got {}", text(&obj)),
        )),
        Err(_) => Err(InvalidArgument::new_err(format!(
            "{name} must be a float, got {}",
            type_name(&obj)
        ))),
    }
}

/// The `policy` argument: one of POLICIES.
struct PolicyArg(Policy);

impl<'a, 'py> FromPyObject<'a, 'py> for PolicyArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<String>() {
            Ok(s) => Policy::parse(&s).map(PolicyArg).map_err(invalid),
            Err(_) => Err(InvalidArgument::new_err(format!(
                "policy must be one of sliding_window, trade_complete, minimal, keep_all; \
                 got {}",
                type_name(&obj)
            ))),
        }
    }
}

/// `capacity` / `max_events`: an int >= 1.
struct CountArg<const C: usize>(usize);

const COUNT_NAMES: [&str; 2] = ["capacity", "max_events"];

impl<'a, 'py, const C: usize> FromPyObject<'a, 'py> for CountArg<C> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let name = COUNT_NAMES[C];
        let v = match obj.extract::<i64>() {
            Ok(v) => v,
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                return Err(InvalidArgument::new_err(format!(
                    "{name} must be in 1..{}, got {}",
                    i64::MAX,
                    text(&obj)
                )))
            }
            Err(_) => {
                return Err(InvalidArgument::new_err(format!(
                    "{name} must be an int, got {}",
                    type_name(&obj)
                )))
            }
        };
        match usize::try_from(v) {
            Ok(n) if n >= 1 => Ok(CountArg(n)),
            _ => Err(InvalidArgument::new_err(format!(
                "{name} must be >= 1, got {v}"
            ))),
        }
    }
}

/// `keep_trades`: None (the policy's default) or a bool.
struct KeepTradesArg(Option<bool>);

impl<'a, 'py> FromPyObject<'a, 'py> for KeepTradesArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            return Ok(KeepTradesArg(None));
        }
        if obj.is_exact_instance_of::<pyo3::types::PyBool>() {
            return Ok(KeepTradesArg(Some(obj.is_truthy()?)));
        }
        Err(InvalidArgument::new_err(format!(
            "keep_trades must be True, False or None, got {}",
            type_name(&obj)
        )))
    }
}

/// Columnar retention of traced events under a policy (see docs/primitives.md).
#[pyclass(module = "phasekit._core", name = "EventRing")]
pub struct EventRing {
    ring: Ring,
}

/// The Arrow data of `batch` (a PyCapsule producer or a mapping of columns).
fn batch_source<'py>(batch: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if arrow::is_arrow(batch)? {
        return Ok(batch.clone());
    }
    let py = batch.py();
    let mapping = py
        .import(intern!(py, "collections.abc"))?
        .getattr(intern!(py, "Mapping"))?;
    if !batch.is_instance(&mapping)? {
        return Err(InvalidArgument::new_err(format!(
            "batch must be an Arrow record batch or table (an object with \
             __arrow_c_stream__ or __arrow_c_array__) or a mapping of column name to \
             array, got {}",
            type_name(batch)
        )));
    }
    mapping_to_batch(batch)
}

/// A mapping of event columns as a `pyarrow.RecordBatch` (numeric numpy columns are
/// not copied). Keys other than EVENT_FIELDS are ignored.
fn mapping_to_batch<'py>(mapping: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = mapping.py();
    let columns = PyDict::new(py);
    let mut first: Option<(&str, usize)> = None;
    for name in EVENT_FIELDS {
        if !mapping.contains(name)? {
            continue;
        }
        let column = mapping.get_item(name)?;
        if let Ok(n) = column.len() {
            match first {
                None => first = Some((name, n)),
                Some((first_name, m)) if m != n => {
                    return Err(InvalidArgument::new_err(format!(
                        "columns have unequal lengths: {first_name} has {m} rows, \
                         {name} has {n}"
                    )))
                }
                Some(_) => {}
            }
        }
        columns.set_item(name, column)?;
    }
    let pyarrow = py.import(intern!(py, "pyarrow"))?;
    pyarrow
        .call_method1(intern!(py, "record_batch"), (columns,))
        .map_err(|e| {
            InvalidArgument::new_err(format!(
                "cannot convert the mapping to Arrow columns: {}",
                e.value(py)
            ))
        })
}

#[pymethods]
impl EventRing {
    #[new]
    #[pyo3(signature = (
        policy=PolicyArg(Policy::SlidingWindow),
        capacity=CountArg(1000),
        max_events=CountArg(1_000_000),
        keep_trades=KeepTradesArg(None),
    ))]
    #[pyo3(
        text_signature = "(policy='sliding_window', capacity=1000, max_events=1000000, \
                          keep_trades=None)"
    )]
    fn new(
        policy: PolicyArg,
        capacity: CountArg<0>,
        max_events: CountArg<1>,
        keep_trades: KeepTradesArg,
    ) -> PyResult<Self> {
        let mut ring = Ring::new(policy.0, capacity.0, max_events.0).map_err(invalid)?;
        if let Some(keep) = keep_trades.0 {
            ring = ring.with_keep_trades(keep);
        }
        Ok(EventRing { ring })
    }

    #[getter]
    fn keep_trades(&self) -> bool {
        self.ring.keep_trades()
    }

    /// The book's open positions, by symbol.
    fn positions<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let mut out = Vec::new();
        for p in self.ring.positions() {
            let d = PyDict::new(py);
            d.set_item(intern!(py, "symbol"), p.symbol)?;
            d.set_item(intern!(py, "quantity"), p.quantity)?;
            d.set_item(intern!(py, "avg_price"), p.avg_price)?;
            d.set_item(intern!(py, "open_ts"), p.open_ts)?;
            d.set_item(intern!(py, "n_events"), p.n_events)?;
            out.push(d);
        }
        Ok(out)
    }

    /// Counters of every closed trade.
    fn realized<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.ring.realized();
        let d = PyDict::new(py);
        d.set_item(intern!(py, "trades"), r.trades)?;
        d.set_item(intern!(py, "winning"), r.winning)?;
        d.set_item(intern!(py, "losing"), r.losing)?;
        d.set_item(intern!(py, "pnl"), r.pnl)?;
        d.set_item(intern!(py, "gross_profit"), r.gross_profit)?;
        d.set_item(intern!(py, "gross_loss"), r.gross_loss)?;
        Ok(d)
    }

    #[getter]
    fn policy(&self) -> &'static str {
        self.ring.policy().name()
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    #[getter]
    fn max_events(&self) -> usize {
        self.ring.max_events()
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        ts,
        kind,
        key=I64Arg(-1),
        symbol=SymbolArg(0),
        price=F64Arg(0.0),
        quantity=F64Arg(0.0),
        value=F64Arg(0.0),
    ))]
    #[pyo3(
        text_signature = "($self, ts, kind, key=-1, symbol=0, price=0.0, quantity=0.0, \
                             value=0.0)"
    )]
    fn append(
        &mut self,
        ts: I64Arg<0>,
        kind: KindArg,
        key: I64Arg<2>,
        symbol: SymbolArg,
        price: F64Arg<4>,
        quantity: F64Arg<5>,
        value: F64Arg<6>,
    ) {
        self.ring.append(&Event {
            ts: ts.0,
            kind: kind.0,
            key: key.0,
            symbol: symbol.0,
            price: price.0,
            quantity: quantity.0,
            value: value.0,
        });
    }

    /// Appends every row of an Arrow batch/table or a mapping of columns; returns the
    /// rows read. Nothing is applied when any batch is invalid.
    fn extend(slf: &Bound<'_, Self>, batch: &Bound<'_, PyAny>) -> PyResult<usize> {
        // import before borrowing: the source may be this very ring
        let source = batch_source(batch)?;
        let (schema, mut batches) = arrow::import_batches(&source)?;
        if batches.is_empty() {
            // an empty stream: its schema is still checked
            batches.push(arrow_array::RecordBatch::new_empty(schema));
        }
        let mut events = Vec::with_capacity(batches.len());
        let mut rows = 0;
        for b in &batches {
            events.push(import(b, rows).map_err(invalid)?);
            rows += b.num_rows();
        }
        let mut this = slf.borrow_mut();
        for e in &events {
            this.ring.extend(e);
        }
        Ok(rows)
    }

    fn __len__(&self) -> usize {
        self.ring.len()
    }

    fn clear(&mut self) {
        self.ring.clear();
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.ring.stats();
        let d = PyDict::new(py);
        d.set_item(intern!(py, "seen"), s.seen)?;
        d.set_item(intern!(py, "retained"), s.retained)?;
        d.set_item(intern!(py, "evicted"), s.evicted)?;
        d.set_item(intern!(py, "retained_bytes"), s.retained_bytes)?;
        d.set_item(intern!(py, "open_positions"), s.open_positions)?;
        d.set_item(intern!(py, "trades"), s.trades)?;
        Ok(d)
    }

    /// The retained events as a `pyarrow.RecordBatch`.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        arrow::to_pyarrow(py, self.events_batch()?)
    }

    /// Closed-trade summaries from row `start` on (0: all) as a `pyarrow.RecordBatch`.
    #[pyo3(signature = (start=0))]
    fn trades<'py>(&self, py: Python<'py>, start: i64) -> PyResult<Bound<'py, PyAny>> {
        let n = self.ring.trades().len();
        let from = usize::try_from(start)
            .map_err(|_| InvalidArgument::new_err(format!("start must be >= 0, got {start}")))?;
        let batch = trades_batch(self.ring.trades()).map_err(export_error)?;
        let from = from.min(n);
        arrow::to_pyarrow(py, batch.slice(from, n - from))
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        arrow::schema_capsule(py, event_schema().as_ref())
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        arrow::array_capsules(py, &self.events_batch()?)
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        arrow::stream_capsule(py, event_schema(), vec![self.events_batch()?])
    }

    fn __repr__(&self) -> String {
        format!(
            "EventRing(policy='{}', capacity={}, max_events={}, len={})",
            self.ring.policy().name(),
            self.ring.capacity(),
            self.ring.max_events(),
            self.ring.len()
        )
    }
}

fn export_error(e: arrow_schema::ArrowError) -> PyErr {
    InvalidArgument::new_err(format!("cannot export the ring as Arrow: {e}"))
}

impl EventRing {
    fn events_batch(&self) -> PyResult<arrow_array::RecordBatch> {
        events_batch(self.ring.events()).map_err(export_error)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<EventRing>()?;
    m.add("EVENT_FIELDS", PyTuple::new(py, EVENT_FIELDS)?)?;
    m.add("EVENT_BYTES", EVENT_BYTES)?;
    m.add("TRADE_FIELDS", PyTuple::new(py, TRADE_FIELDS)?)?;
    m.add("TRADE_BYTES", TRADE_BYTES)?;
    m.add("POSITION_FIELDS", PyTuple::new(py, POSITION_FIELDS)?)?;
    m.add("REALIZED_FIELDS", PyTuple::new(py, REALIZED_FIELDS)?)?;
    m.add("FLAT_TOLERANCE", FLAT_TOLERANCE)?;
    let policies: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
    m.add("POLICIES", PyTuple::new(py, policies)?)?;
    Ok(())
}
