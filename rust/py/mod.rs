//! The PyO3 module `phasekit._core`: thin wrappers over the plain Rust modules.

use pyo3::prelude::*;

pub mod arrow;
mod backtest;
mod channel;
mod errors;
mod ipc;
mod ledger;
mod ring;
mod sizeof;
mod util;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    arrow::register(m)?;
    ring::register(m)?;
    channel::register(m)?;
    ledger::register(m)?;
    sizeof::register(m)?;
    ipc::register(m)?;
    util::register(m)?;
    backtest::register(m)?;
    Ok(())
}
