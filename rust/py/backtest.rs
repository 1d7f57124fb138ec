//! `backtest` and `sma_crossover_signals`: the Python face of [`crate::backtest`].
//!
//! Bars arrive as an Arrow record batch (columns `ts`, `open`, `close`, and `target` when
//! no SMA is asked for), imported without copies; results leave as pyarrow record
//! batches built from the kernel's vectors, also without copies. The kernel runs with
//! the GIL released.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::types::{Float64Type, Int64Type, Int8Type, TimestampNanosecondType};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, Float64Array, Int32Array, Int64Array, Int8Array,
    PrimitiveArray, RecordBatch, UInt16Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::arrow::{import_batches, to_pyarrow};
use super::errors::{ConfigError, InvalidArgument};
use crate::backtest::{
    position_events, run, sma_crossover, BacktestError, Settings, Signal, Trades,
};

pub(super) fn to_py(err: BacktestError) -> PyErr {
    match err {
        BacktestError::Span(..) => InvalidArgument::new_err(err.to_string()),
        _ => ConfigError::new_err(err.to_string()),
    }
}

/// One column of the batches as a slice (borrowed when there is one batch).
pub(super) fn column<'a, T: ArrowPrimitiveType>(
    batches: &'a [RecordBatch],
    what: &str,
    name: &str,
    accept: fn(&DataType) -> bool,
    expected: &str,
) -> PyResult<Cow<'a, [T::Native]>> {
    let mut parts: Vec<&'a [T::Native]> = Vec::with_capacity(batches.len());
    for b in batches {
        let col = b.column_by_name(name).ok_or_else(|| {
            InvalidArgument::new_err(format!(
                "{what}: no column '{name}'; columns are {:?}",
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect::<Vec<_>>()
            ))
        })?;
        if !accept(col.data_type()) {
            return Err(InvalidArgument::new_err(format!(
                "{what}: column '{name}' is {}, expected {expected}",
                col.data_type()
            )));
        }
        if col.null_count() > 0 {
            return Err(InvalidArgument::new_err(format!(
                "{what}: column '{name}' has {} nulls",
                col.null_count()
            )));
        }
        let values: &'a [T::Native] = match col.as_any().downcast_ref::<PrimitiveArray<T>>() {
            Some(a) => a.values().as_ref(),
            None => timestamp_values::<T>(col.as_ref())?,
        };
        parts.push(values);
    }
    Ok(if parts.len() == 1 {
        Cow::Borrowed(parts[0])
    } else {
        Cow::Owned(parts.concat())
    })
}

/// The int64 values of a nanosecond timestamp column (when `T` is Int64).
fn timestamp_values<T: ArrowPrimitiveType>(col: &dyn Array) -> PyResult<&[T::Native]> {
    let ts = col
        .as_any()
        .downcast_ref::<PrimitiveArray<TimestampNanosecondType>>()
        .filter(|_| T::DATA_TYPE == DataType::Int64)
        .ok_or_else(|| InvalidArgument::new_err("bars: unsupported column type"))?;
    let values: &[i64] = ts.values().as_ref();
    // SAFETY: T::Native is i64 (checked above), so the slice keeps its layout.
    Ok(unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) })
}

pub(super) fn is_ts(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int64 | DataType::Timestamp(TimeUnit::Nanosecond, _)
    )
}

pub(super) fn is_f64(t: &DataType) -> bool {
    *t == DataType::Float64
}

pub(super) fn is_i8(t: &DataType) -> bool {
    *t == DataType::Int8
}

fn batch(fields: Vec<(&str, ArrayRef)>) -> PyResult<RecordBatch> {
    let schema = Schema::new(
        fields
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), false))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        fields.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|e| InvalidArgument::new_err(format!("cannot build the result batch: {e}")))
}

/// The columns of closed trades (`TRADE_COLUMNS` of portfolio.py).
pub(super) fn trade_columns(t: Trades) -> Vec<(&'static str, ArrayRef)> {
    vec![
        ("entry_ts", Arc::new(Int64Array::from(t.entry_ts))),
        ("exit_ts", Arc::new(Int64Array::from(t.exit_ts))),
        ("entry_price", Arc::new(Float64Array::from(t.entry_price))),
        ("exit_price", Arc::new(Float64Array::from(t.exit_price))),
        ("direction", Arc::new(Int8Array::from(t.direction))),
        ("quantity", Arc::new(Float64Array::from(t.quantity))),
        ("pnl", Arc::new(Float64Array::from(t.pnl))),
        ("return", Arc::new(Float64Array::from(t.ret))),
        ("bars_held", Arc::new(Int64Array::from(t.bars_held))),
    ]
}

fn window(start: usize, stop: Option<usize>, n: usize) -> Result<(usize, usize), BacktestError> {
    let stop = stop.unwrap_or(n);
    if start >= stop || stop > n {
        return Err(BacktestError::Span(start, stop, n));
    }
    Ok((start, stop))
}

/// `sma_crossover_signals(bars, fast, slow, long_short=False)`: the int8 targets of an
/// SMA crossover over the `close` column, as a record batch with one column `target`.
#[pyfunction]
#[pyo3(signature = (bars, fast, slow, long_short=false))]
fn sma_crossover_signals<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    fast: i64,
    slow: i64,
    long_short: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (_, batches) = import_batches(bars)?;
    let close = column::<Float64Type>(&batches, "bars", "close", is_f64, "float64")?;
    let target = py
        .detach(|| sma_crossover(&close, fast, slow, long_short))
        .map_err(to_py)?;
    to_pyarrow(
        py,
        batch(vec![(
            "target",
            Arc::new(Int8Array::from(target)) as ArrayRef,
        )])?,
    )
}

/// `backtest(bars, start=0, stop=None, *, sma=None, initial_capital=..., ...)`: signals
/// over `bars[:stop]` (an SMA crossover `(fast, slow, long_short)` or the `target`
/// column), positions inside `[start, stop)`. Returns a dict of `bars` (equity and
/// position per bar; None unless `curves`), `trades`, `fills`, `events` (record batches)
/// and `summary` (the equity fold).
#[pyfunction]
#[pyo3(signature = (
    bars,
    start=0,
    stop=None,
    *,
    sma=None,
    initial_capital=100_000.0,
    fraction=1.0,
    whole_units=false,
    commission_bps=0.0,
    slippage_bps=0.0,
    symbol=0,
    curves=true,
))]
#[allow(clippy::too_many_arguments)]
fn backtest<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    start: usize,
    stop: Option<usize>,
    sma: Option<(i64, i64, bool)>,
    initial_capital: f64,
    fraction: f64,
    whole_units: bool,
    commission_bps: f64,
    slippage_bps: f64,
    symbol: i32,
    curves: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let settings = Settings {
        initial_capital,
        fraction,
        whole_units,
        commission_bps,
        slippage_bps,
    };
    let (_, batches) = import_batches(bars)?;
    let ts = column::<Int64Type>(&batches, "bars", "ts", is_ts, "int64 or timestamp[ns]")?;
    let open = column::<Float64Type>(&batches, "bars", "open", is_f64, "float64")?;
    let close = column::<Float64Type>(&batches, "bars", "close", is_f64, "float64")?;
    let given = match sma {
        None => Some(column::<Int8Type>(
            &batches, "bars", "target", is_i8, "int8",
        )?),
        Some(_) => None,
    };
    let (start, stop) = window(start, stop, close.len()).map_err(to_py)?;
    let (sim, summary, events) = py
        .detach(|| {
            let signal = match (&given, sma) {
                (Some(t), _) => Signal::Targets(t),
                (None, Some((fast, slow, short))) => Signal::Sma(fast, slow, short),
                (None, None) => Signal::Targets(&[]),
            };
            let (sim, summary) = run(&ts, &open, &close, start, stop, signal, &settings, curves)?;
            let events = position_events(&ts[start..stop], &sim);
            Ok::<_, BacktestError>((sim, summary, events))
        })
        .map_err(to_py)?;

    let out = PyDict::new(py);
    let t = sim.trades;
    let n_ev = events.len();
    if curves {
        let per_bar = batch(vec![
            (
                "equity",
                Arc::new(Float64Array::from(sim.equity)) as ArrayRef,
            ),
            ("position", Arc::new(Float64Array::from(sim.position))),
        ])?;
        out.set_item("bars", to_pyarrow(py, per_bar)?)?;
    } else {
        out.set_item("bars", py.None())?;
    }
    out.set_item("trades", to_pyarrow(py, batch(trade_columns(t))?)?)?;
    let fills = &sim.fills;
    out.set_item(
        "fills",
        to_pyarrow(
            py,
            batch(vec![
                (
                    "bar",
                    Arc::new(Int64Array::from_iter_values(
                        fills.iter().map(|f| f.bar as i64),
                    )) as ArrayRef,
                ),
                (
                    "quantity",
                    Arc::new(Float64Array::from_iter_values(
                        fills.iter().map(|f| f.quantity),
                    )),
                ),
                (
                    "price",
                    Arc::new(Float64Array::from_iter_values(
                        fills.iter().map(|f| f.price),
                    )),
                ),
                (
                    "commission",
                    Arc::new(Float64Array::from_iter_values(
                        fills.iter().map(|f| f.commission),
                    )),
                ),
            ])?,
        )?,
    )?;
    out.set_item(
        "events",
        to_pyarrow(
            py,
            batch(vec![
                ("ts", Arc::new(Int64Array::from(events.ts)) as ArrayRef),
                ("kind", Arc::new(UInt16Array::from(events.kind))),
                ("key", Arc::new(Int64Array::from(events.key))),
                ("symbol", Arc::new(Int32Array::from(vec![symbol; n_ev]))),
                ("price", Arc::new(Float64Array::from(events.price))),
                ("quantity", Arc::new(Float64Array::from(events.quantity))),
                ("value", Arc::new(Float64Array::from(events.value))),
            ])?,
        )?,
    )?;
    let s = PyDict::new(py);
    s.set_item("n", summary.n)?;
    s.set_item("mean", summary.mean)?;
    s.set_item("m2", summary.m2)?;
    s.set_item("down_sq", summary.down_sq)?;
    s.set_item("peak", summary.peak)?;
    s.set_item("max_drawdown", summary.max_drawdown)?;
    s.set_item("last", summary.last)?;
    s.set_item("bars_in_market", summary.bars_in_market)?;
    out.set_item("summary", s)?;
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(backtest, m)?)?;
    m.add_function(wrap_pyfunction!(sma_crossover_signals, m)?)?;
    Ok(())
}
