//! phasekit's Rust core: the four hot-path primitives as plain Rust modules.
//!
//! * [`ring`]: columnar event retention under a policy.
//! * [`channel`]: a bounded MPMC channel with statistics.
//! * [`ledger`]: byte accounting in LRU order with budgets in a tree.
//! * [`ipc`]: Arrow IPC files written atomically on a background thread.
//! * [`aead`]: AES-GCM over the chunks of the encrypted file format.
//!
//! The PyO3 wrappers live in `py/` and are compiled only with the `python` feature.

pub mod aead;
pub mod backtest;
pub mod block;
pub mod channel;
pub mod checksum;
pub mod ipc;
pub mod ledger;
pub mod ring;

#[cfg(feature = "python")]
mod py;
