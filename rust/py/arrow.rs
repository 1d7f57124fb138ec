//! Arrow data across the Python boundary through the Arrow PyCapsule interface
//! (`__arrow_c_schema__`, `__arrow_c_array__`, `__arrow_c_stream__`), without copies.

#![allow(dead_code)]

use std::ffi::CStr;
use std::sync::Arc;

use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{Array, RecordBatch, RecordBatchIterator, RecordBatchReader, StructArray};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};

use super::errors::InvalidArgument;

const SCHEMA_NAME: &CStr = c"arrow_schema";
const ARRAY_NAME: &CStr = c"arrow_array";
const STREAM_NAME: &CStr = c"arrow_array_stream";

fn arrow_err(what: &str, err: ArrowError) -> PyErr {
    InvalidArgument::new_err(format!("{what}: {err}"))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// True when `obj` implements the Arrow stream or array PyCapsule protocol.
pub fn is_arrow(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.hasattr("__arrow_c_stream__")? || obj.hasattr("__arrow_c_array__")?)
}

/// Imports a record batch or table (any PyCapsule producer) as its schema and batches.
/// An object with `__arrow_c_array__` must export a struct array (a record batch).
/// Buffers are shared with the producer, not copied.
pub fn import_batches(obj: &Bound<'_, PyAny>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    // A single batch exports through __arrow_c_array__ about 3x faster than through
    // __arrow_c_stream__ (pyarrow), so that protocol goes first when both exist.
    if obj.hasattr("__arrow_c_array__")? {
        let pair = obj.call_method0("__arrow_c_array__")?;
        let pair = pair.cast::<PyTuple>()?;
        let schema_capsule = pair.get_item(0)?;
        let array_capsule = pair.get_item(1)?;
        let schema_ptr = schema_capsule
            .cast::<PyCapsule>()?
            .pointer_checked(Some(SCHEMA_NAME))?;
        let array_ptr = array_capsule
            .cast::<PyCapsule>()?
            .pointer_checked(Some(ARRAY_NAME))?;
        // SAFETY: capsule names were checked; the schema is borrowed, the array moved out.
        let ffi_schema: &FFI_ArrowSchema = unsafe { &*schema_ptr.as_ptr().cast() };
        let ffi_array = unsafe { FFI_ArrowArray::from_raw(array_ptr.as_ptr().cast()) };
        let data = unsafe { from_ffi(ffi_array, ffi_schema) }
            .map_err(|e| arrow_err("cannot import the Arrow array", e))?;
        let schema = Schema::try_from(ffi_schema)
            .map_err(|e| arrow_err("cannot import the Arrow schema", e))?;
        let struct_array = StructArray::from(data);
        if struct_array.null_count() > 0 {
            return Err(InvalidArgument::new_err(
                "expected a record batch, got a struct array with top-level nulls",
            ));
        }
        let schema = Arc::new(schema);
        let batch = RecordBatch::try_new(schema.clone(), struct_array.columns().to_vec())
            .map_err(|e| arrow_err("not a record batch", e))?;
        return Ok((schema, vec![batch]));
    }
    if obj.hasattr("__arrow_c_stream__")? {
        let capsule = obj.call_method0("__arrow_c_stream__")?;
        let capsule = capsule.cast::<PyCapsule>()?;
        let ptr = capsule.pointer_checked(Some(STREAM_NAME))?;
        // SAFETY: the capsule named "arrow_array_stream" holds an FFI_ArrowArrayStream;
        // from_raw moves it out and marks the producer's copy released.
        let stream = unsafe { FFI_ArrowArrayStream::from_raw(ptr.as_ptr().cast()) };
        let reader = RecordBatchStreamReader::try_new(stream)
            .map_err(|e| arrow_err("cannot read the Arrow stream", e))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| arrow_err("cannot read the Arrow stream", e))?;
        return Ok((schema, batches));
    }
    Err(InvalidArgument::new_err(format!(
        "expected an Arrow record batch or table (an object with __arrow_c_stream__ or \
         __arrow_c_array__, e.g. pyarrow or polars), got {}",
        type_name(obj)
    )))
}

/// Imports a schema from any object with `__arrow_c_schema__`.
pub fn import_schema(obj: &Bound<'_, PyAny>) -> PyResult<SchemaRef> {
    if !obj.hasattr("__arrow_c_schema__")? {
        return Err(InvalidArgument::new_err(format!(
            "schema must be an Arrow schema (an object with __arrow_c_schema__), got {}",
            type_name(obj)
        )));
    }
    let capsule = obj.call_method0("__arrow_c_schema__")?;
    let ptr = capsule
        .cast::<PyCapsule>()?
        .pointer_checked(Some(SCHEMA_NAME))?;
    // SAFETY: the capsule is named "arrow_schema"; the schema is only borrowed.
    let ffi_schema: &FFI_ArrowSchema = unsafe { &*ptr.as_ptr().cast() };
    let schema =
        Schema::try_from(ffi_schema).map_err(|e| arrow_err("cannot import the schema", e))?;
    Ok(Arc::new(schema))
}

/// `__arrow_c_schema__` for a schema.
pub fn schema_capsule<'py>(py: Python<'py>, schema: &Schema) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi =
        FFI_ArrowSchema::try_from(schema).map_err(|e| arrow_err("cannot export the schema", e))?;
    PyCapsule::new_with_value(py, ffi, SCHEMA_NAME)
}

/// `__arrow_c_array__` for a record batch: (schema capsule, struct array capsule).
pub fn array_capsules<'py>(py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyTuple>> {
    let schema = schema_capsule(py, batch.schema().as_ref())?;
    let data = StructArray::from(batch.clone()).into_data();
    let array = PyCapsule::new_with_value(py, FFI_ArrowArray::new(&data), ARRAY_NAME)?;
    PyTuple::new(py, [schema.into_any(), array.into_any()])
}

/// `__arrow_c_stream__` for a sequence of batches sharing one schema.
pub fn stream_capsule<'py>(
    py: Python<'py>,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> PyResult<Bound<'py, PyCapsule>> {
    let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
    let stream = FFI_ArrowArrayStream::new(Box::new(reader));
    PyCapsule::new_with_value(py, stream, STREAM_NAME)
}

/// A record batch held by Rust that Python consumers import through the PyCapsule protocol.
#[pyclass(module = "phasekit._core", name = "ArrowBatch", frozen)]
pub struct ArrowBatch {
    batch: RecordBatch,
}

#[pymethods]
impl ArrowBatch {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        array_capsules(py, &self.batch)
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        stream_capsule(py, self.batch.schema(), vec![self.batch.clone()])
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, self.batch.schema().as_ref())
    }

    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }
}

/// Converts a Rust record batch to a `pyarrow.RecordBatch` (zero-copy).
pub fn to_pyarrow<'py>(py: Python<'py>, batch: RecordBatch) -> PyResult<Bound<'py, PyAny>> {
    let holder = Bound::new(py, ArrowBatch { batch })?;
    py.import("pyarrow")?
        .call_method1("record_batch", (holder,))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ArrowBatch>()?;
    Ok(())
}
