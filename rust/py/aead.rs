//! `AeadChunks`: the chunks of one encrypted file under one data key
//! ([`crate::aead::Chunks`]); `seal` and `open` take a run of chunks into a buffer the
//! caller gives, with the GIL released (the chunks spread over threads).

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use super::errors::InvalidArgument;
use super::util::byte_buffer;
use crate::aead::{AeadError, Chunks};

fn to_py(err: AeadError) -> PyErr {
    InvalidArgument::new_err(err.to_string())
}

/// A writable buffer for the output (refused when read-only).
fn output_buffer(py: Python<'_>, out: &Bound<'_, PyAny>) -> PyResult<PyBuffer<u8>> {
    let buffer = byte_buffer(py, out, "out")?;
    if buffer.readonly() {
        return Err(InvalidArgument::new_err(
            "out must be a writable buffer (bytearray, pyarrow.allocate_buffer, a writable \
             memoryview), got a read-only one",
        ));
    }
    Ok(buffer)
}

/// Runs `f` over the bytes of `input` and `out` with the GIL released.
fn with_buffers<T: Send>(
    py: Python<'_>,
    input: &Bound<'_, PyAny>,
    input_name: &str,
    out: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8], &mut [u8]) -> Result<T, AeadError> + Send,
) -> PyResult<Result<T, AeadError>> {
    let input = byte_buffer(py, input, input_name)?;
    let out = output_buffer(py, out)?;
    let (src, src_len) = (input.buf_ptr() as usize, input.len_bytes());
    let (dst, dst_len) = (out.buf_ptr() as usize, out.len_bytes());
    Ok(py.detach(|| {
        // SAFETY: both buffers are C-contiguous u8 buffers held (so kept alive and
        // unresized) for the whole call, `out` writable; `Chunks` refuses overlapping ones.
        let (input, out) = unsafe {
            (
                std::slice::from_raw_parts(src as *const u8, src_len),
                std::slice::from_raw_parts_mut(dst as *mut u8, dst_len),
            )
        };
        f(input, out)
    }))
}

/// `AeadChunks(key, nonce_prefix, ad_prefix, chunk_bytes)`: AES-GCM over the chunks of
/// one encrypted file: chunk `i` under the nonce `nonce_prefix || i` (4 bytes) with the
/// associated data `ad_prefix || i (8 bytes) || final flag`.
#[pyclass(module = "phasekit._core", name = "AeadChunks", frozen)]
pub struct PyAeadChunks {
    inner: Chunks,
}

#[pymethods]
impl PyAeadChunks {
    #[new]
    fn new(
        key: &[u8],
        nonce_prefix: &[u8],
        ad_prefix: &[u8],
        chunk_bytes: usize,
    ) -> PyResult<Self> {
        let inner = Chunks::new(key, nonce_prefix, ad_prefix, chunk_bytes).map_err(to_py)?;
        Ok(Self { inner })
    }

    /// Seal `plain` as chunks `first, first + 1, ...` (the last one final when `last`)
    /// into `out` (exactly the sealed size); returns the number of chunks.
    fn seal(
        &self,
        py: Python<'_>,
        first: u64,
        last: bool,
        plain: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        with_buffers(py, plain, "plain", out, |plain, out| {
            self.inner.seal(first, last, plain, out)
        })?
        .map_err(to_py)
    }

    /// Open the encrypted chunks `first, first + 1, ...` in `body` (the last one final
    /// when `last`) into `out` (exactly the plaintext size). None when every chunk is
    /// authentic, else the index of the first that is not (`out` is then zeroed).
    fn open(
        &self,
        py: Python<'_>,
        first: u64,
        last: bool,
        body: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<Option<u64>> {
        match with_buffers(py, body, "body", out, |body, out| {
            self.inner.open(first, last, body, out)
        })? {
            Ok(()) => Ok(None),
            Err(AeadError::Chunk(index)) => Ok(Some(index)),
            Err(err) => Err(to_py(err)),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyAeadChunks>()?;
    Ok(())
}
