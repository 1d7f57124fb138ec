//! The PyO3 module `phasekit._core`: thin wrappers over the plain Rust modules.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

mod aead;
pub mod arrow;
mod backtest;
mod block;
mod channel;
mod errors;
mod ipc;
mod ledger;
mod ring;
mod sizeof;
mod util;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    register_build(m)?;
    arrow::register(m)?;
    ring::register(m)?;
    channel::register(m)?;
    ledger::register(m)?;
    sizeof::register(m)?;
    ipc::register(m)?;
    util::register(m)?;
    backtest::register(m)?;
    block::register(m)?;
    aead::register(m)?;
    Ok(())
}

/// The version (Cargo.toml's, the package's one version) and how this core was built;
/// the Python layer refuses a core of another version and `phasekit --version` shows
/// the rest.
fn register_build(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    m.add("BUILD_PROFILE", profile)?;
    let features: Vec<&str> = env!("PHASEKIT_BUILD_FEATURES")
        .split(',')
        .filter(|name| !name.is_empty())
        .collect();
    m.add("BUILD_FEATURES", PyTuple::new(m.py(), features)?)?;
    m.add("BUILD_TARGET", env!("PHASEKIT_BUILD_TARGET"))?;
    m.add("BUILD_RUSTC", env!("PHASEKIT_BUILD_RUSTC"))?;
    Ok(())
}
