//! `backtest_block`: a block of parameter sets over one window in one call
//! ([`crate::block::run_block`]), results and trades as Arrow record batches; and
//! `backtest_block_signals`, the same for targets computed elsewhere (a user strategy's,
//! [`crate::block::run_block_signals`]). The GIL is released while the block runs.

use std::sync::Arc;

use arrow_array::types::{Float64Type, Int64Type, Int8Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::arrow::{import_batches, to_pyarrow};
use super::backtest::{column, is_f64, is_i8, is_ts, to_py, trade_columns};
use super::errors::{ConfigError, InvalidArgument};
use crate::backtest::{Settings, Trades};
use crate::block::{run_block, run_block_signals, BlockError, BlockOptions, BlockResult, ParamSet};

/// The strategy kinds a block runs and the parameter columns each reads.
const KINDS: &str = "sma_crossover (fast, slow, long_short), momentum (lookback, threshold, \
                     long_short), mean_reversion (window, entry_z, exit_z, long_short)";

fn block_err(py: Python<'_>, err: BlockError) -> PyErr {
    match err {
        BlockError::Block(e) => to_py(e),
        BlockError::Threads | BlockError::Traced(..) | BlockError::Targets(..) => {
            InvalidArgument::new_err(err.to_string())
        }
        BlockError::Set(set, _) => {
            let e = ConfigError::new_err(err.to_string());
            // the Python layer names the container from the set's index
            if e.value(py).setattr("set_index", set).is_err() {
                return ConfigError::new_err(err.to_string());
            }
            e
        }
    }
}

fn is_i64(t: &DataType) -> bool {
    *t == DataType::Int64
}

/// The parameter sets of `kind` from the columns of `params`.
fn param_sets(kind: &str, params: &Bound<'_, PyAny>) -> PyResult<Vec<ParamSet>> {
    let (_, batches) = import_batches(params)?;
    let int = |name: &str| column::<Int64Type>(&batches, "params", name, is_i64, "int64");
    let float = |name: &str| column::<Float64Type>(&batches, "params", name, is_f64, "float64");
    let short = column::<Int8Type>(&batches, "params", "long_short", is_i8, "int8")?;
    let flag = |i: usize| short[i] != 0;
    let sets = match kind {
        "sma_crossover" => {
            let (fast, slow) = (int("fast")?, int("slow")?);
            (0..short.len())
                .map(|i| ParamSet::Sma {
                    fast: fast[i],
                    slow: slow[i],
                    long_short: flag(i),
                })
                .collect()
        }
        "momentum" => {
            let (lookback, threshold) = (int("lookback")?, float("threshold")?);
            (0..short.len())
                .map(|i| ParamSet::Momentum {
                    lookback: lookback[i],
                    threshold: threshold[i],
                    long_short: flag(i),
                })
                .collect()
        }
        "mean_reversion" => {
            let (window, entry, exit) = (int("window")?, float("entry_z")?, float("exit_z")?);
            (0..short.len())
                .map(|i| ParamSet::MeanReversion {
                    window: window[i],
                    entry_z: entry[i],
                    exit_z: exit[i],
                    long_short: flag(i),
                })
                .collect()
        }
        other => {
            return Err(ConfigError::new_err(format!(
                "strategy.type: {other:?} has no block kernel; allowed: {KINDS}"
            )))
        }
    };
    Ok(sets)
}

fn record_batch(fields: Vec<(&str, ArrayRef, bool)>) -> PyResult<RecordBatch> {
    let schema = Schema::new(
        fields
            .iter()
            .map(|(name, a, nullable)| Field::new(*name, a.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        fields.into_iter().map(|(_, a, _)| a).collect(),
    )
    .map_err(|e| InvalidArgument::new_err(format!("cannot build the block's batch: {e}")))
}

fn f64_col<F: Fn(&crate::block::Metrics) -> f64>(out: &BlockResult, f: F) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(
        out.sets
            .iter()
            .map(|s| s.metrics.as_ref().map(&f).unwrap_or(f64::NAN)),
    ))
}

fn results_batch(out: &BlockResult) -> PyResult<RecordBatch> {
    let n = out.sets.len() as i64;
    let int = |f: fn(&crate::block::Metrics) -> usize| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            out.sets
                .iter()
                .map(|s| s.metrics.as_ref().map(f).unwrap_or(0) as i64),
        ))
    };
    record_batch(vec![
        ("set", Arc::new(Int64Array::from_iter_values(0..n)), false),
        ("bars", int(|m| m.bars), false),
        ("total_return", f64_col(out, |m| m.total_return), false),
        ("sharpe_ratio", f64_col(out, |m| m.sharpe_ratio), false),
        ("sortino_ratio", f64_col(out, |m| m.sortino_ratio), false),
        ("max_drawdown", f64_col(out, |m| m.max_drawdown), false),
        ("exposure", f64_col(out, |m| m.exposure), false),
        ("final_equity", f64_col(out, |m| m.final_equity), false),
        ("win_rate", f64_col(out, |m| m.win_rate), false),
        ("trade_count", int(|m| m.trade_count), false),
        (
            "profit_factor",
            Arc::new(Float64Array::from_iter(
                out.sets
                    .iter()
                    .map(|s| s.metrics.as_ref().and_then(|m| m.profit_factor)),
            )),
            true,
        ),
    ])
}

fn trades_batch(out: &BlockResult) -> PyResult<RecordBatch> {
    let total: usize = out.sets.iter().map(|s| s.trades.len()).sum();
    let mut set = Vec::with_capacity(total);
    let mut all = Trades::default();
    for (i, s) in out.sets.iter().enumerate() {
        set.extend(std::iter::repeat_n(i as i64, s.trades.len()));
        all.append(&s.trades);
    }
    let mut fields = vec![("set", Arc::new(Int64Array::from(set)) as ArrayRef, false)];
    fields.extend(trade_columns(all).into_iter().map(|(n, a)| (n, a, false)));
    record_batch(fields)
}

fn curves_batch(out: &BlockResult) -> PyResult<RecordBatch> {
    let (mut set, mut bar, mut equity, mut position) = (vec![], vec![], vec![], vec![]);
    for (i, s) in out.sets.iter().enumerate() {
        set.extend(std::iter::repeat_n(i as i64, s.equity.len()));
        bar.extend(0..s.equity.len() as i64);
        equity.extend_from_slice(&s.equity);
        position.extend_from_slice(&s.position);
    }
    record_batch(vec![
        ("set", Arc::new(Int64Array::from(set)), false),
        ("bar", Arc::new(Int64Array::from(bar)), false),
        ("equity", Arc::new(Float64Array::from(equity)), false),
        ("position", Arc::new(Float64Array::from(position)), false),
    ])
}

/// The bars' columns the block kernel reads.
struct Columns<'a> {
    ts: std::borrow::Cow<'a, [i64]>,
    open: std::borrow::Cow<'a, [f64]>,
    close: std::borrow::Cow<'a, [f64]>,
}

fn bar_columns(batches: &[RecordBatch]) -> PyResult<Columns<'_>> {
    Ok(Columns {
        ts: column::<Int64Type>(batches, "bars", "ts", is_ts, "int64 or timestamp[ns]")?,
        open: column::<Float64Type>(batches, "bars", "open", is_f64, "float64")?,
        close: column::<Float64Type>(batches, "bars", "close", is_f64, "float64")?,
    })
}

/// The keyword arguments both block calls take, as the kernel's settings and options.
struct Knobs {
    settings: Settings,
    options: BlockOptions,
    traced: Vec<bool>,
}

#[allow(clippy::too_many_arguments)]
fn knobs(
    traced: Option<Vec<bool>>,
    initial_capital: f64,
    fraction: f64,
    whole_units: bool,
    commission_bps: f64,
    slippage_bps: f64,
    periods_per_year: f64,
    threads: Option<usize>,
) -> Knobs {
    let threads = match threads {
        Some(t) => t,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    Knobs {
        settings: Settings {
            initial_capital,
            fraction,
            whole_units,
            commission_bps,
            slippage_bps,
        },
        options: BlockOptions {
            periods_per_year,
            threads,
        },
        traced: traced.unwrap_or_default(),
    }
}

fn block_dict<'py>(py: Python<'py>, out: &BlockResult) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("results", to_pyarrow(py, results_batch(out)?)?)?;
    dict.set_item("trades", to_pyarrow(py, trades_batch(out)?)?)?;
    dict.set_item("curves", to_pyarrow(py, curves_batch(out)?)?)?;
    dict.set_item("indicators", out.indicators)?;
    dict.set_item("threads", out.threads)?;
    Ok(dict)
}

/// `backtest_block(bars, kind, params, start=0, stop=None, *, traced=None, ...)`: every
/// parameter set (a row of `params`) of the strategy `kind` over `bars[start:stop]`
/// (signals over `bars[:stop]`). Returns a dict of `results` (one row per set: `set`,
/// `bars` and the metrics), `trades` (with `set`), `curves` (`set`, `bar`, `equity`,
/// `position` of the traced sets) as record batches, `indicators` (distinct
/// indicators computed) and `threads` (threads that ran sets).
#[pyfunction]
#[pyo3(signature = (
    bars,
    kind,
    params,
    start=0,
    stop=None,
    *,
    traced=None,
    initial_capital=100_000.0,
    fraction=1.0,
    whole_units=false,
    commission_bps=0.0,
    slippage_bps=0.0,
    periods_per_year=252.0,
    threads=None,
))]
#[allow(clippy::too_many_arguments)]
fn backtest_block<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    kind: &str,
    params: &Bound<'py, PyAny>,
    start: usize,
    stop: Option<usize>,
    traced: Option<Vec<bool>>,
    initial_capital: f64,
    fraction: f64,
    whole_units: bool,
    commission_bps: f64,
    slippage_bps: f64,
    periods_per_year: f64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let k = knobs(
        traced,
        initial_capital,
        fraction,
        whole_units,
        commission_bps,
        slippage_bps,
        periods_per_year,
        threads,
    );
    let sets = param_sets(kind, params)?;
    let (_, batches) = import_batches(bars)?;
    let c = bar_columns(&batches)?;
    let stop = stop.unwrap_or(c.close.len());
    let out = py
        .detach(|| {
            run_block(
                &c.ts,
                &c.open,
                &c.close,
                start,
                stop,
                &sets,
                &k.traced,
                &k.settings,
                &k.options,
            )
        })
        .map_err(|e| block_err(py, e))?;
    block_dict(py, &out)
}

/// `backtest_block_signals(bars, signals, sets, start=0, stop=None, *, traced=None,
/// ...)`: `sets` sets whose targets are given in the int8 column `target` of `signals`,
/// one row of `stop` targets (bars `[0, stop)`) per set, set after set, over
/// `bars[start:stop]`. Returns what `backtest_block` returns (`indicators` 0).
#[pyfunction]
#[pyo3(signature = (
    bars,
    signals,
    sets,
    start=0,
    stop=None,
    *,
    traced=None,
    initial_capital=100_000.0,
    fraction=1.0,
    whole_units=false,
    commission_bps=0.0,
    slippage_bps=0.0,
    periods_per_year=252.0,
    threads=None,
))]
#[allow(clippy::too_many_arguments)]
fn backtest_block_signals<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    signals: &Bound<'py, PyAny>,
    sets: usize,
    start: usize,
    stop: Option<usize>,
    traced: Option<Vec<bool>>,
    initial_capital: f64,
    fraction: f64,
    whole_units: bool,
    commission_bps: f64,
    slippage_bps: f64,
    periods_per_year: f64,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let k = knobs(
        traced,
        initial_capital,
        fraction,
        whole_units,
        commission_bps,
        slippage_bps,
        periods_per_year,
        threads,
    );
    let (_, batches) = import_batches(bars)?;
    let c = bar_columns(&batches)?;
    let (_, signal_batches) = import_batches(signals)?;
    let targets = column::<Int8Type>(&signal_batches, "signals", "target", is_i8, "int8")?;
    let stop = stop.unwrap_or(c.close.len());
    let out = py
        .detach(|| {
            run_block_signals(
                &c.ts,
                &c.open,
                &c.close,
                start,
                stop,
                &targets,
                sets,
                &k.traced,
                &k.settings,
                &k.options,
            )
        })
        .map_err(|e| block_err(py, e))?;
    block_dict(py, &out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(backtest_block, m)?)?;
    m.add_function(wrap_pyfunction!(backtest_block_signals, m)?)?;
    Ok(())
}
