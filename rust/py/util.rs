//! Small module-level functions shared by the wrappers.

use std::path::PathBuf;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use crate::checksum;

use super::errors::{InvalidArgument, WriterError};

/// `file_checksum(path)`: `"crc32:xxxxxxxx"` of a file's bytes.
#[pyfunction]
fn file_checksum(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let crc = py
        .detach(|| checksum::file_crc32(&path))
        .map_err(|e| WriterError::new_err(format!("cannot checksum {}: {e}", path.display())))?;
    Ok(checksum::format_crc32(crc))
}

/// `crc32(data, value=0)`: zlib's CRC-32 of a bytes-like object, continuing from
/// `value`; the GIL is released for buffers over 64 KiB.
#[pyfunction]
#[pyo3(signature = (data, value=0))]
fn crc32(py: Python<'_>, data: &Bound<'_, PyAny>, value: u32) -> PyResult<u32> {
    let buffer = byte_buffer(py, data, "crc32")?;
    // SAFETY: the buffer is C-contiguous, of u8 items, and held for the whole call.
    let bytes =
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) };
    let run = || {
        let mut hasher = crc32fast::Hasher::new_with_initial(value);
        hasher.update(bytes);
        hasher.finalize()
    };
    Ok(if bytes.len() > 64 * 1024 {
        py.detach(run)
    } else {
        run()
    })
}

/// A contiguous byte view of any buffer-protocol object (bytes, memoryview, numpy,
/// pyarrow.Buffer); other item formats are viewed as bytes through `memoryview.cast`.
/// `what` names the argument in the error.
pub(super) fn byte_buffer(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<PyBuffer<u8>> {
    let not_bytes = || {
        InvalidArgument::new_err(format!(
            "{what} needs a contiguous bytes-like object (bytes, bytearray, memoryview, numpy \
             array, pyarrow.Buffer), got {}",
            data.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    };
    let buffer = match PyBuffer::<u8>::get(data) {
        Ok(buffer) => buffer,
        Err(_) => {
            let view = py
                .import("builtins")?
                .getattr("memoryview")?
                .call1((data,))
                .map_err(|_| not_bytes())?;
            let bytes = view.call_method1("cast", ("B",)).map_err(|_| not_bytes())?;
            PyBuffer::<u8>::get(&bytes).map_err(|_| not_bytes())?
        }
    };
    if !buffer.is_c_contiguous() {
        return Err(not_bytes());
    }
    Ok(buffer)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(file_checksum, m)?)?;
    m.add_function(wrap_pyfunction!(crc32, m)?)?;
    Ok(())
}
