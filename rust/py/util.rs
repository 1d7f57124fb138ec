//! Small module-level functions shared by the wrappers.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::checksum;

use super::errors::WriterError;

/// `file_checksum(path)`: `"crc32:xxxxxxxx"` of a file's bytes.
#[pyfunction]
fn file_checksum(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let crc = py
        .detach(|| checksum::file_crc32(&path))
        .map_err(|e| WriterError::new_err(format!("cannot checksum {}: {e}", path.display())))?;
    Ok(checksum::format_crc32(crc))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(file_checksum, m)?)?;
    Ok(())
}
