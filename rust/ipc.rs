//! placeholder: filled in by the ipc work
