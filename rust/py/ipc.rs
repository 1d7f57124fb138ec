//! `IpcWriter`: the Python face of [`crate::ipc::IpcWriter`].
//!
//! Batches are imported without copies and queued. Whatever may block (a full queue,
//! joining the background thread) runs with the GIL released: the thread may need the
//! GIL to release pyarrow buffers it has written (numpy-backed ones).

use std::path::PathBuf;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};

use super::arrow::{import_batches, import_schema};
use super::errors::{InvalidArgument, WriterError};
use crate::ipc::{self as core, Compression, Format, IpcError, Options, Summary};

/// How long a blocked `write` waits before checking for Ctrl-C.
const WAIT_SLICE: Duration = Duration::from_millis(50);

fn to_py(err: IpcError) -> PyErr {
    match err {
        IpcError::InvalidArgument(m) => InvalidArgument::new_err(m),
        IpcError::Writer(m) => WriterError::new_err(m),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn parse_compression(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Compression>> {
    let name = match obj {
        None => None,
        Some(o) if o.is_none() => None,
        Some(o) => match o.cast::<PyString>() {
            Ok(s) => Some(s.to_cow()?.into_owned()),
            Err(_) => {
                return Err(InvalidArgument::new_err(format!(
                    "compression must be one of None, 'lz4', 'zstd', got {}",
                    o.repr()?
                )))
            }
        },
    };
    Compression::parse(name.as_deref()).map_err(to_py)
}

fn parse_format(obj: &Bound<'_, PyAny>) -> PyResult<Format> {
    match obj.cast::<PyString>() {
        Ok(s) => Format::parse(&s.to_cow()?).map_err(to_py),
        Err(_) => Err(InvalidArgument::new_err(format!(
            "format must be 'file' or 'stream', got {}",
            obj.repr()?
        ))),
    }
}

fn parse_queue_size(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    let size = if obj.is_instance_of::<PyBool>() {
        None
    } else {
        obj.extract::<u64>()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
    };
    match size {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(InvalidArgument::new_err(format!(
            "queue_size must be an integer >= 1, got {}",
            obj.repr()?
        ))),
    }
}

fn parse_path(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    obj.extract::<PathBuf>().map_err(|_| {
        InvalidArgument::new_err(format!(
            "path must be a str or os.PathLike, got {}",
            type_name(obj)
        ))
    })
}

fn summary_dict<'py>(py: Python<'py>, path: &str, s: &Summary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", path)?;
    d.set_item("size_bytes", s.size_bytes)?;
    d.set_item("checksum", s.checksum())?;
    d.set_item("rows", s.rows)?;
    d.set_item("batches", s.batches)?;
    Ok(d)
}

/// Locks the writer; waits for another thread's call with the GIL released.
fn lock<'a>(py: Python<'_>, m: &'a Mutex<core::IpcWriter>) -> MutexGuard<'a, core::IpcWriter> {
    loop {
        if let Some(guard) = m.try_lock() {
            return guard;
        }
        py.detach(|| drop(m.lock()));
    }
}

/// Writes Arrow record batches to an Arrow IPC file (or stream) on a background thread.
#[pyclass(module = "phasekit._core", name = "IpcWriter", frozen)]
pub struct IpcWriter {
    inner: Mutex<core::IpcWriter>,
    path: String,
}

#[pymethods]
impl IpcWriter {
    #[new]
    #[pyo3(
        signature = (path, schema=None, compression=None, format=None, queue_size=None, overwrite=None),
        text_signature = "(path, schema=None, compression=None, format='file', queue_size=8, overwrite=True)"
    )]
    fn new(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        schema: Option<&Bound<'_, PyAny>>,
        compression: Option<&Bound<'_, PyAny>>,
        format: Option<&Bound<'_, PyAny>>,
        queue_size: Option<&Bound<'_, PyAny>>,
        overwrite: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let final_path = parse_path(path)?;
        let defaults = Options::default();
        let options = Options {
            compression: parse_compression(compression)?,
            format: format.map_or(Ok(defaults.format), parse_format)?,
            queue_size: queue_size.map_or(Ok(defaults.queue_size), parse_queue_size)?,
            overwrite: overwrite.map_or(Ok(defaults.overwrite), |o| o.is_truthy())?,
        };
        let schema = match schema {
            Some(s) if !s.is_none() => Some(import_schema(s)?),
            _ => None,
        };
        let writer = py
            .detach(|| core::IpcWriter::create(&final_path, schema, options))
            .map_err(to_py)?;
        Ok(IpcWriter {
            inner: Mutex::new(writer),
            path: final_path.to_string_lossy().into_owned(),
        })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        lock(py, &self.inner).is_closed()
    }

    #[getter]
    fn rows_written(&self, py: Python<'_>) -> u64 {
        lock(py, &self.inner).rows_written()
    }

    /// Queues a record batch or table; blocks (GIL released) only while the queue is full.
    fn write(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut guard = lock(py, &self.inner);
        guard.check_open().map_err(to_py)?;
        let (schema, batches) = import_batches(batch)?;
        guard.accept(&schema).map_err(to_py)?;
        let writer: &mut core::IpcWriter = &mut guard;
        for b in batches {
            let Some(mut pending) = writer.try_send(b).map_err(to_py)? else {
                continue;
            };
            loop {
                match py.detach(|| writer.send_timeout(pending, WAIT_SLICE)) {
                    Ok(None) => break,
                    Ok(Some(back)) => {
                        pending = back;
                        py.check_signals()?;
                    }
                    Err(e) => return Err(to_py(e)),
                }
            }
        }
        Ok(())
    }

    /// Finishes the file, renames it to `path` and returns its description.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut guard = lock(py, &self.inner);
        let writer: &mut core::IpcWriter = &mut guard;
        let summary = py.detach(|| writer.finish()).map_err(to_py)?;
        summary_dict(py, &self.path, &summary)
    }

    /// Stops writing and deletes the temporary file; no file appears at `path`.
    fn abort(&self, py: Python<'_>) {
        let mut guard = lock(py, &self.inner);
        let writer: &mut core::IpcWriter = &mut guard;
        py.detach(|| writer.abort());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let _ = (exc, tb);
        if exc_type.is_none() {
            self.close(py)?;
        } else {
            self.abort(py);
        }
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let guard = lock(py, &self.inner);
        let state = if guard.is_closed() { "closed" } else { "open" };
        format!(
            "IpcWriter('{}', {state}, rows_written={})",
            self.path,
            guard.rows_written()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<IpcWriter>()?;
    let names: Vec<Option<&str>> = core::COMPRESSIONS.to_vec();
    m.add("COMPRESSIONS", PyTuple::new(py, names)?)?;
    m.add("TMP_SUFFIX", core::TMP_SUFFIX)?;
    Ok(())
}
