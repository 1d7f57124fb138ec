//! Arrow IPC files written on a background thread and finished atomically.
//!
//! Batches go through a bounded channel to a thread that encodes them with
//! `arrow_ipc` into `.<name>.<random hex>.phasekit-tmp` next to the final path,
//! computing the CRC-32 of the bytes as they are written. [`IpcWriter::finish`]
//! joins the thread, fsyncs the file, renames it to the final path and fsyncs the
//! folder. A writer dropped or aborted before `finish` removes its temporary file.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use crate::checksum::format_crc32;

/// Suffix of in-progress files.
pub const TMP_SUFFIX: &str = ".phasekit-tmp";
/// Compression names accepted by [`Compression::parse`] (`None` = uncompressed).
pub const COMPRESSIONS: [Option<&str>; 3] = [None, Some("lz4"), Some("zstd")];
/// Capacity of the buffer between the IPC encoder and the file.
const BUF_CAPACITY: usize = 1 << 20;
/// zstd level (pyarrow's default).
const ZSTD_LEVEL: i32 = 1;

/// Errors of the writer, mapped to `InvalidArgument` / `WriterError` by the wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpcError {
    InvalidArgument(String),
    Writer(String),
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::InvalidArgument(m) | IpcError::Writer(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for IpcError {}

/// Batch compression (lz4 is LZ4_FRAME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Lz4,
    Zstd,
}

impl Compression {
    /// `None`, `"lz4"` or `"zstd"`.
    pub fn parse(name: Option<&str>) -> Result<Option<Self>, IpcError> {
        match name {
            None => Ok(None),
            Some("lz4") => Ok(Some(Compression::Lz4)),
            Some("zstd") => Ok(Some(Compression::Zstd)),
            Some(other) => Err(IpcError::InvalidArgument(format!(
                "compression must be one of None, 'lz4', 'zstd', got '{other}'"
            ))),
        }
    }

    fn ipc(self) -> CompressionType {
        match self {
            Compression::Lz4 => CompressionType::LZ4_FRAME,
            Compression::Zstd => CompressionType::ZSTD,
        }
    }
}

/// Arrow IPC file (with footer) or IPC stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    File,
    Stream,
}

impl Format {
    /// `"file"` or `"stream"`.
    pub fn parse(name: &str) -> Result<Self, IpcError> {
        match name {
            "file" => Ok(Format::File),
            "stream" => Ok(Format::Stream),
            other => Err(IpcError::InvalidArgument(format!(
                "format must be 'file' or 'stream', got '{other}'"
            ))),
        }
    }
}

/// How a writer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub compression: Option<Compression>,
    pub format: Format,
    pub queue_size: usize,
    pub overwrite: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compression: None,
            format: Format::File,
            queue_size: 8,
            overwrite: true,
        }
    }
}

/// What a finished file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub crc32: u32,
    pub rows: u64,
    pub batches: u64,
}

impl Summary {
    /// `"crc32:xxxxxxxx"`.
    pub fn checksum(&self) -> String {
        format_crc32(self.crc32)
    }
}

/// State shared with the background thread.
#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    aborted: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, msg: String) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(msg);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn stopped(&self) -> bool {
        self.aborted.load(Ordering::Acquire) || self.failed.load(Ordering::Acquire)
    }

    fn error(&self) -> String {
        self.error
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .unwrap_or_else(|| "the background writer stopped".to_string())
    }
}

/// Writes at least this long get their CRC-32 computed on a helper thread while the
/// writing thread copies them to the file (the CRC costs ~10% of a page-cache write).
const PARALLEL_CRC_MIN: usize = 256 << 10;

/// A thread that computes the CRC-32 of a slice the caller keeps borrowed until the
/// result is back.
struct CrcHelper {
    jobs: Sender<(usize, usize)>,
    results: Receiver<crc32fast::Hasher>,
}

impl CrcHelper {
    fn spawn() -> Option<Self> {
        let (jobs, job_rx) = crossbeam_channel::bounded::<(usize, usize)>(1);
        let (result_tx, results) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("phasekit-ipc-crc".to_string())
            .spawn(move || {
                for (ptr, len) in job_rx.iter() {
                    // SAFETY: `CrcWriter::write_parallel` keeps the slice borrowed until it
                    // has received this result (or learned that this thread is gone).
                    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
                    let mut hasher = crc32fast::Hasher::new();
                    hasher.update(bytes);
                    if result_tx.send(hasher).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(CrcHelper { jobs, results })
    }
}

/// Every this many bytes written, the file's dirty pages are flushed to disk in the
/// background, so the fsync of `finish` has little left to wait for.
const SYNC_EVERY: u64 = 32 << 20;

/// A thread that fsyncs (fdatasync) the file when kicked, while writing goes on.
struct Syncer {
    kicks: Option<Sender<()>>,
    thread: Option<JoinHandle<Option<io::Error>>>,
}

impl Syncer {
    fn spawn(file: &File) -> Option<Self> {
        let file = file.try_clone().ok()?;
        let (kicks, kick_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("phasekit-ipc-sync".to_string())
            .spawn(move || {
                for () in kick_rx.iter() {
                    if let Err(e) = file.sync_data() {
                        return Some(e);
                    }
                }
                None
            })
            .ok()?;
        Some(Syncer {
            kicks: Some(kicks),
            thread: Some(thread),
        })
    }

    /// Asks for a flush unless one is pending.
    fn kick(&self) {
        if let Some(kicks) = &self.kicks {
            let _ = kicks.try_send(());
        }
    }

    /// Stops the thread; the error of a background flush, if any (the same
    /// open file's later fsync may not report it again).
    fn stop(&mut self) -> io::Result<()> {
        self.kicks = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Some(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other("the fsync thread panicked")),
            _ => Ok(()),
        }
    }
}

/// Counts the bytes written and their CRC-32 as they pass to the file.
struct CrcWriter {
    file: File,
    hasher: crc32fast::Hasher,
    bytes: u64,
    helper: Option<CrcHelper>,
    helper_failed: bool,
    syncer: Option<Syncer>,
    unsynced: u64,
}

impl CrcWriter {
    fn new(file: File) -> Self {
        CrcWriter {
            file,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
            helper: None,
            helper_failed: false,
            syncer: None,
            unsynced: 0,
        }
    }

    /// Counts `n` written bytes; starts a background flush every [`SYNC_EVERY`].
    fn wrote(&mut self, n: usize) {
        self.bytes += n as u64;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            if self.syncer.is_none() {
                self.syncer = Syncer::spawn(&self.file);
            }
            if let Some(syncer) = &self.syncer {
                syncer.kick();
            }
        }
    }

    /// Makes the file durable: waits for the background flushes, then fsyncs.
    fn sync(&mut self) -> io::Result<()> {
        if let Some(mut syncer) = self.syncer.take() {
            syncer.stop()?;
        }
        self.file.sync_all()
    }

    /// Writes all of `buf` while the helper computes its CRC-32.
    fn write_parallel(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        if self.helper.is_none() && !self.helper_failed {
            self.helper = CrcHelper::spawn();
            self.helper_failed = self.helper.is_none();
        }
        let helper = self.helper.as_ref()?;
        if helper
            .jobs
            .send((buf.as_ptr() as usize, buf.len()))
            .is_err()
        {
            self.helper = None;
            self.helper_failed = true;
            return None;
        }
        let written = self.file.write_all(buf);
        // Wait for the helper before `buf` may go away. An Err means the thread has
        // ended, so it no longer reads `buf`.
        match helper.results.recv() {
            Ok(crc) => self.hasher.combine(&crc),
            Err(_) => {
                self.hasher.update(buf);
                self.helper = None;
                self.helper_failed = true;
            }
        }
        Some(written.map(|()| {
            self.wrote(buf.len());
            buf.len()
        }))
    }
}

impl Write for CrcWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() >= PARALLEL_CRC_MIN {
            if let Some(result) = self.write_parallel(buf) {
                return result;
            }
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Encoder {
    File(FileWriter<BufWriter<CrcWriter>>),
    Stream(StreamWriter<BufWriter<CrcWriter>>),
}

/// The IPC options of `options`: metadata V5, 64-byte alignment, and zstd at level 1
/// (the level pyarrow uses, so both backends compress alike).
fn ipc_options(options: &Options) -> Result<IpcWriteOptions, ArrowError> {
    let level = match options.compression {
        Some(Compression::Zstd) => Some(ZSTD_LEVEL),
        _ => None,
    };
    IpcWriteOptions::default()
        .try_with_compression(options.compression.map(Compression::ipc))?
        .try_with_compression_level(level)
}

fn file_sink(file: File) -> BufWriter<CrcWriter> {
    BufWriter::with_capacity(BUF_CAPACITY, CrcWriter::new(file))
}

impl Encoder {
    fn new(file: File, schema: &Schema, options: &Options) -> Result<Self, ArrowError> {
        let sink = file_sink(file);
        let ipc_options = ipc_options(options)?;
        Ok(match options.format {
            Format::File => {
                Encoder::File(FileWriter::try_new_with_options(sink, schema, ipc_options)?)
            }
            Format::Stream => Encoder::Stream(StreamWriter::try_new_with_options(
                sink,
                schema,
                ipc_options,
            )?),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        match self {
            Encoder::File(w) => w.write(batch),
            Encoder::Stream(w) => w.write(batch),
        }
    }

    fn finish(self) -> Result<CrcWriter, ArrowError> {
        let buffered = match self {
            Encoder::File(w) => w.into_inner()?,
            Encoder::Stream(w) => w.into_inner()?,
        };
        buffered
            .into_inner()
            .map_err(|e| ArrowError::IoError(e.to_string(), e.into_error()))
    }
}

/// What the background thread hands back after finishing the file.
struct Written {
    crc32: u32,
    size_bytes: u64,
}

/// The background thread: write until the channel closes, then finish and fsync.
fn run(
    file: File,
    schema: SchemaRef,
    options: Options,
    rx: Receiver<RecordBatch>,
    shared: Arc<Shared>,
    tmp_path: PathBuf,
) -> Option<Written> {
    let at = tmp_path.display().to_string();
    // `rx` lives until the error is recorded: writers that find the channel closed
    // then report the cause.
    let written =
        write_batches(file, &schema, &options, &rx, &shared, &at).and_then(|sink| match sink {
            None => Ok(None),
            Some(mut sink) => {
                sink.sync().map_err(|e| format!("cannot fsync {at}: {e}"))?;
                Ok(Some(Written {
                    crc32: sink.hasher.finalize(),
                    size_bytes: sink.bytes,
                }))
            }
        });
    match written {
        Ok(written) => written,
        Err(msg) => {
            shared.fail(msg);
            None
        }
    }
}

/// Encodes and writes each batch on this thread (uncompressed buffers go to the file
/// without copies). `Ok(None)` when aborted.
fn write_batches(
    file: File,
    schema: &Schema,
    options: &Options,
    rx: &Receiver<RecordBatch>,
    shared: &Shared,
    at: &str,
) -> Result<Option<CrcWriter>, String> {
    let mut encoder = Encoder::new(file, schema, options)
        .map_err(|e| format!("cannot start the IPC writer on {at}: {e}"))?;
    for batch in rx.iter() {
        if shared.stopped() {
            return Ok(None);
        }
        encoder
            .write(&batch)
            .map_err(|e| format!("cannot write a batch to {at}: {e}"))?;
    }
    if shared.stopped() {
        return Ok(None);
    }
    encoder
        .finish()
        .map(Some)
        .map_err(|e| format!("cannot finish {at}: {e}"))
}

/// `.<name>.<16 random hex digits>.phasekit-tmp` in the folder of `path`.
fn tmp_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(t) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(t.as_nanos());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{:016x}{TMP_SUFFIX}", hasher.finish()))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_path(path: &Path, options: &Options) -> Result<(), IpcError> {
    let shown = path.display();
    if path.file_name().is_none() {
        return Err(IpcError::InvalidArgument(format!(
            "path: '{shown}' does not name a file"
        )));
    }
    let folder = parent_of(path);
    if !folder.is_dir() {
        return Err(IpcError::InvalidArgument(format!(
            "path: the parent folder '{}' of '{shown}' does not exist",
            folder.display()
        )));
    }
    if path.is_dir() {
        return Err(IpcError::InvalidArgument(format!(
            "path: '{shown}' is a folder, expected a file path"
        )));
    }
    if !options.overwrite && path.symlink_metadata().is_ok() {
        return Err(IpcError::InvalidArgument(format!(
            "path: '{shown}' exists and overwrite=False"
        )));
    }
    if options.queue_size < 1 {
        return Err(IpcError::InvalidArgument(format!(
            "queue_size must be an integer >= 1, got {}",
            options.queue_size
        )));
    }
    Ok(())
}

/// True when batches of `got` can be written under `want` (names, types and
/// nullability equal; metadata ignored).
pub fn schemas_match(want: &SchemaRef, got: &SchemaRef) -> bool {
    if Arc::ptr_eq(want, got) {
        return true;
    }
    let (a, b) = (want.fields(), got.fields());
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|(x, y)| {
            x.name() == y.name()
                && x.is_nullable() == y.is_nullable()
                && x.data_type() == y.data_type()
        })
}

fn fsync_dir(folder: &Path) {
    // Best effort: not every platform can open a folder for fsync.
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
}

enum State {
    Open,
    Closed(Summary),
    Aborted,
    Failed(IpcError),
}

/// Writes record batches to an Arrow IPC file on a background thread.
pub struct IpcWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    options: Options,
    schema: Option<SchemaRef>,
    /// The temporary file until the thread starts (it starts once the schema is known).
    file: Option<File>,
    tx: Option<Sender<RecordBatch>>,
    worker: Option<JoinHandle<Option<Written>>>,
    shared: Arc<Shared>,
    rows: u64,
    batches: u64,
    state: State,
}

impl IpcWriter {
    /// Checks the arguments and creates the temporary file.
    pub fn create(
        path: &Path,
        schema: Option<SchemaRef>,
        options: Options,
    ) -> Result<Self, IpcError> {
        check_path(path, &options)?;
        let tmp_path = tmp_name(path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| {
                IpcError::Writer(format!(
                    "cannot create the temporary file '{}': {e}",
                    tmp_path.display()
                ))
            })?;
        let mut writer = IpcWriter {
            path: path.to_path_buf(),
            tmp_path,
            options,
            schema: None,
            file: Some(file),
            tx: None,
            worker: None,
            shared: Arc::new(Shared::default()),
            rows: 0,
            batches: 0,
            state: State::Open,
        };
        if let Some(schema) = schema {
            writer.start(schema)?;
        }
        Ok(writer)
    }

    fn start(&mut self, schema: SchemaRef) -> Result<(), IpcError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let (tx, rx) = crossbeam_channel::bounded(self.options.queue_size);
        let (shared, options, tmp) = (self.shared.clone(), self.options, self.tmp_path.clone());
        let thread_schema = schema.clone();
        let worker = std::thread::Builder::new()
            .name("phasekit-ipc-writer".to_string())
            .spawn(move || run(file, thread_schema, options, rx, shared, tmp))
            .map_err(|e| IpcError::Writer(format!("cannot start the writer thread: {e}")))?;
        self.schema = Some(schema);
        self.tx = Some(tx);
        self.worker = Some(worker);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// True once finished, aborted or failed.
    pub fn is_closed(&self) -> bool {
        !matches!(self.state, State::Open)
    }

    /// Rows accepted by `write` so far.
    pub fn rows_written(&self) -> u64 {
        self.rows
    }

    fn failure(&self) -> IpcError {
        IpcError::Writer(format!(
            "writing '{}' failed: {}",
            self.path.display(),
            self.shared.error()
        ))
    }

    /// Err when the writer is closed or its background thread failed.
    pub fn check_open(&self) -> Result<(), IpcError> {
        match &self.state {
            State::Open if self.shared.failed.load(Ordering::Acquire) => Err(self.failure()),
            State::Open => Ok(()),
            State::Failed(e) => Err(e.clone()),
            _ => Err(IpcError::Writer(format!(
                "write on a closed writer ('{}')",
                self.path.display()
            ))),
        }
    }

    /// Checks that the writer is open and that batches with `schema` fit it; the
    /// first schema seen fixes the writer's schema (and starts the thread).
    pub fn accept(&mut self, schema: &SchemaRef) -> Result<(), IpcError> {
        self.check_open()?;
        match &self.schema {
            None => self.start(schema.clone()),
            Some(want) if schemas_match(want, schema) => Ok(()),
            Some(want) => Err(IpcError::InvalidArgument(format!(
                "batch schema does not match the writer's schema:\n{schema}\nexpected:\n{want}"
            ))),
        }
    }

    fn sender(&self) -> Result<&Sender<RecordBatch>, IpcError> {
        self.tx.as_ref().ok_or_else(|| {
            IpcError::Writer(format!(
                "write on a closed writer ('{}')",
                self.path.display()
            ))
        })
    }

    fn queued(&mut self, rows: usize) {
        self.rows += rows as u64;
        self.batches += 1;
    }

    /// Queues `batch` if there is room; gives it back when the queue is full.
    /// Call [`accept`](Self::accept) with its schema first.
    /// Batches without rows are skipped (some producers never export them).
    pub fn try_send(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>, IpcError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(None);
        }
        match self.sender()?.try_send(batch) {
            Ok(()) => {
                self.queued(rows);
                Ok(None)
            }
            Err(TrySendError::Full(batch)) => Ok(Some(batch)),
            Err(TrySendError::Disconnected(_)) => Err(self.failure()),
        }
    }

    /// Queues `batch`, waiting up to `timeout` for room; gives it back on timeout.
    pub fn send_timeout(
        &mut self,
        batch: RecordBatch,
        timeout: Duration,
    ) -> Result<Option<RecordBatch>, IpcError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(None);
        }
        match self.sender()?.send_timeout(batch, timeout) {
            Ok(()) => {
                self.queued(rows);
                Ok(None)
            }
            Err(SendTimeoutError::Timeout(batch)) => Ok(Some(batch)),
            Err(SendTimeoutError::Disconnected(_)) => Err(self.failure()),
        }
    }

    /// Checks and queues `batch`, blocking while the queue is full.
    pub fn write(&mut self, batch: RecordBatch) -> Result<(), IpcError> {
        self.accept(&batch.schema())?;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        match self.sender()?.send(batch) {
            Ok(()) => {
                self.queued(rows);
                Ok(())
            }
            Err(_) => Err(self.failure()),
        }
    }

    /// Waits for the thread, renames the finished file to the final path, fsyncs the
    /// folder. A second call returns the same summary.
    pub fn finish(&mut self) -> Result<Summary, IpcError> {
        match &self.state {
            State::Open => {}
            State::Closed(summary) => return Ok(summary.clone()),
            State::Failed(e) => return Err(e.clone()),
            State::Aborted => {
                return Err(IpcError::Writer(format!(
                    "close on an aborted writer ('{}')",
                    self.path.display()
                )))
            }
        }
        if self.schema.is_none() {
            self.abort();
            return Err(IpcError::InvalidArgument(format!(
                "nothing to write to '{}': no batch was written and no schema given",
                self.path.display()
            )));
        }
        match self.finish_file() {
            Ok(summary) => {
                self.state = State::Closed(summary.clone());
                Ok(summary)
            }
            Err(e) => {
                self.remove_tmp();
                self.state = State::Failed(e.clone());
                Err(e)
            }
        }
    }

    fn finish_file(&mut self) -> Result<Summary, IpcError> {
        self.tx = None; // closes the channel: the thread finishes the file
        let written = match self.worker.take().map(JoinHandle::join) {
            Some(Ok(Some(written))) => written,
            Some(Err(_)) => {
                self.shared.fail("the writer thread panicked".to_string());
                return Err(self.failure());
            }
            _ => return Err(self.failure()),
        };
        let shown = self.path.display();
        if !self.options.overwrite && self.path.symlink_metadata().is_ok() {
            return Err(IpcError::Writer(format!(
                "'{shown}' appeared while writing and overwrite=False"
            )));
        }
        std::fs::rename(&self.tmp_path, &self.path).map_err(|e| {
            IpcError::Writer(format!(
                "cannot rename the temporary file to '{shown}': {e}"
            ))
        })?;
        fsync_dir(&parent_of(&self.path));
        Ok(Summary {
            path: self.path.clone(),
            size_bytes: written.size_bytes,
            crc32: written.crc32,
            rows: self.rows,
            batches: self.batches,
        })
    }

    fn remove_tmp(&self) {
        let _ = std::fs::remove_file(&self.tmp_path);
    }

    /// Stops the thread without waiting for it and removes the temporary file.
    fn stop(&mut self) {
        self.shared.aborted.store(true, Ordering::Release);
        self.tx = None;
        self.file = None;
        self.remove_tmp();
    }

    /// Stops writing, waits for the thread and deletes the temporary file. No-op
    /// after `finish`.
    pub fn abort(&mut self) {
        if !matches!(self.state, State::Open) {
            return;
        }
        self.stop();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        self.state = State::Aborted;
    }
}

impl Drop for IpcWriter {
    /// Without `finish`: the thread is told to stop (not joined: it may need a lock
    /// the dropping thread holds to release batches) and the temporary file removed.
    fn drop(&mut self) {
        if matches!(self.state, State::Open) {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int64Array, StringArray};
    use arrow_ipc::reader::{FileReader, StreamReader};
    use arrow_schema::{DataType, Field};
    use std::io::Read;

    fn batch(n: i64, start: i64) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(start..start + n));
        let xs: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (start..start + n).map(|i| i as f64 * 0.5),
        ));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (start..start + n).map(|i| format!("n{i}")),
        ));
        RecordBatch::try_from_iter([("id", ids), ("x", xs), ("name", names)]).unwrap()
    }

    fn read_all(path: &Path, format: Format) -> Vec<RecordBatch> {
        let file = File::open(path).unwrap();
        match format {
            Format::File => FileReader::try_new(file, None)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            Format::Stream => StreamReader::try_new(file, None)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_every_format_and_compression() {
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::File, Format::Stream] {
            for compression in [None, Some(Compression::Lz4), Some(Compression::Zstd)] {
                let path = dir.path().join(format!("{format:?}-{compression:?}.arrow"));
                let options = Options {
                    compression,
                    format,
                    queue_size: 2,
                    overwrite: true,
                };
                let mut w = IpcWriter::create(&path, None, options).unwrap();
                let batches: Vec<_> = (0..10).map(|i| batch(1000, i * 1000)).collect();
                for b in &batches {
                    w.write(b.clone()).unwrap();
                }
                let summary = w.finish().unwrap();
                assert_eq!(summary.rows, 10_000);
                assert_eq!(summary.batches, 10);
                assert_eq!(read_all(&path, format), batches);
                let mut bytes = Vec::new();
                File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
                assert_eq!(summary.size_bytes, bytes.len() as u64);
                assert_eq!(summary.crc32, crc32fast::hash(&bytes));
                assert_eq!(w.finish().unwrap(), summary);
            }
        }
        assert_eq!(names_in(dir.path()).len(), 6);
    }

    #[test]
    fn compression_shrinks_repetitive_data() {
        let dir = tempfile::tempdir().unwrap();
        let zeros: ArrayRef = Arc::new(Int64Array::from(vec![0i64; 100_000]));
        let b = RecordBatch::try_from_iter([("z", zeros)]).unwrap();
        let mut sizes = Vec::new();
        for compression in [None, Some(Compression::Lz4), Some(Compression::Zstd)] {
            let path = dir.path().join(format!("{compression:?}"));
            let options = Options {
                compression,
                ..Options::default()
            };
            let mut w = IpcWriter::create(&path, None, options).unwrap();
            w.write(b.clone()).unwrap();
            sizes.push(w.finish().unwrap().size_bytes);
            assert_eq!(read_all(&path, Format::File), vec![b.clone()]);
        }
        assert!(
            sizes[1] * 20 < sizes[0] && sizes[2] * 20 < sizes[0],
            "{sizes:?}"
        );
    }

    #[test]
    fn schema_up_front_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.arrow");
        let schema = batch(1, 0).schema();
        let mut w = IpcWriter::create(&path, Some(schema.clone()), Options::default()).unwrap();
        let other = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)]));
        assert!(matches!(
            w.accept(&other),
            Err(IpcError::InvalidArgument(_))
        ));
        let summary = w.finish().unwrap();
        assert_eq!((summary.rows, summary.batches), (0, 0));
        let reader = FileReader::try_new(File::open(&path).unwrap(), None).unwrap();
        assert_eq!(reader.schema(), schema);
    }

    #[test]
    fn first_batch_fixes_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = IpcWriter::create(&dir.path().join("a"), None, Options::default()).unwrap();
        w.write(batch(3, 0)).unwrap();
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let other = RecordBatch::try_from_iter([("other", ids)]).unwrap();
        assert!(matches!(
            w.write(other),
            Err(IpcError::InvalidArgument(m)) if m.contains("schema")
        ));
        assert_eq!(w.finish().unwrap().rows, 3);
    }

    #[test]
    fn abort_and_drop_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.arrow");
        let mut w = IpcWriter::create(&path, None, Options::default()).unwrap();
        assert!(names_in(dir.path())[0].ends_with(TMP_SUFFIX));
        w.write(batch(100, 0)).unwrap();
        w.abort();
        assert!(w.is_closed());
        assert!(names_in(dir.path()).is_empty());
        assert!(matches!(w.write(batch(1, 0)), Err(IpcError::Writer(_))));
        assert!(matches!(w.finish(), Err(IpcError::Writer(_))));

        let mut w = IpcWriter::create(&path, None, Options::default()).unwrap();
        for i in 0..20 {
            w.write(batch(1000, i)).unwrap();
        }
        drop(w);
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn nothing_to_write_is_an_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = IpcWriter::create(&dir.path().join("a"), None, Options::default()).unwrap();
        assert!(matches!(w.finish(), Err(IpcError::InvalidArgument(_))));
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn bad_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing").join("a");
        let err = IpcWriter::create(&missing, None, Options::default()).err();
        assert!(matches!(err, Some(IpcError::InvalidArgument(m)) if m.starts_with("path")));
        let existing = dir.path().join("e");
        std::fs::write(&existing, b"x").unwrap();
        let options = Options {
            overwrite: false,
            ..Options::default()
        };
        let err = IpcWriter::create(&existing, None, options).err();
        assert!(matches!(err, Some(IpcError::InvalidArgument(m)) if m.contains("overwrite")));
        let options = Options {
            queue_size: 0,
            ..Options::default()
        };
        let err = IpcWriter::create(&dir.path().join("q"), None, options).err();
        assert!(matches!(err, Some(IpcError::InvalidArgument(m)) if m.contains("queue_size")));
        assert!(Compression::parse(Some("gzip")).is_err());
        assert!(Format::parse("csv").is_err());
        assert_eq!(names_in(dir.path()), vec!["e".to_string()]);
    }

    #[test]
    fn folder_removed_mid_write_fails_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let mut w = IpcWriter::create(&sub.join("a"), None, Options::default()).unwrap();
        w.write(batch(10, 0)).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        w.write(batch(10, 10)).unwrap();
        assert!(matches!(w.finish(), Err(IpcError::Writer(_))));
        assert!(matches!(w.finish(), Err(IpcError::Writer(_))));
        assert!(!sub.exists());
    }

    fn dict_batch(values: &[&str]) -> RecordBatch {
        let dict: DictionaryArray<Int32Type> = values.iter().copied().collect();
        RecordBatch::try_from_iter([("d", Arc::new(dict) as ArrayRef)]).unwrap()
    }

    #[test]
    fn background_error_surfaces_at_next_write() {
        // The IPC file format allows one dictionary per field: a batch with another
        // dictionary fails in the background thread, and a later write reports it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let mut w = IpcWriter::create(&path, None, Options::default()).unwrap();
        w.write(dict_batch(&["a", "b"])).unwrap();
        w.write(dict_batch(&["c", "d"])).unwrap();
        let mut surfaced = None;
        for _ in 0..1000 {
            if let Err(e) = w.write(dict_batch(&["a", "b"])) {
                surfaced = Some(e);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            matches!(&surfaced, Some(IpcError::Writer(m)) if m.contains("failed")),
            "{surfaced:?}"
        );
        assert!(matches!(w.finish(), Err(IpcError::Writer(_))));
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn crc_of_large_and_small_writes_matches_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut w = CrcWriter::new(File::create(&path).unwrap());
        let big: Vec<u8> = (0..(3 * PARALLEL_CRC_MIN)).map(|i| (i * 7) as u8).collect();
        w.write_all(b"head").unwrap();
        w.write_all(&big).unwrap();
        w.write_all(&big[..100]).unwrap();
        w.write_all(&big[5..]).unwrap();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&big[..100]);
        expected.extend_from_slice(&big[5..]);
        assert_eq!(w.hasher.clone().finalize(), crc32fast::hash(&expected));
        assert_eq!(w.bytes, expected.len() as u64);
        drop(w);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn background_flushes_then_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut w = CrcWriter::new(File::create(&path).unwrap());
        let chunk = vec![3u8; 4 << 20];
        let n = (SYNC_EVERY as usize / chunk.len()) * 2 + 1;
        for _ in 0..n {
            w.write_all(&chunk).unwrap();
        }
        assert!(w.syncer.is_some());
        w.sync().unwrap();
        assert!(w.syncer.is_none());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (n * chunk.len()) as u64
        );
    }

    #[test]
    fn compressed_batches_of_mixed_sizes_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::File, Format::Stream] {
            let path = dir.path().join(format!("{format:?}"));
            let options = Options {
                compression: Some(Compression::Zstd),
                format,
                queue_size: 3,
                overwrite: true,
            };
            let mut w = IpcWriter::create(&path, None, options).unwrap();
            let sizes = (0..200).map(|i| [1, 5000, 20, 70_000, 300][i % 5]);
            let batches: Vec<_> = sizes.enumerate().map(|(i, n)| batch(n, i as i64)).collect();
            for b in &batches {
                w.write(b.clone()).unwrap();
            }
            let summary = w.finish().unwrap();
            assert_eq!(summary.batches, 200);
            assert_eq!(read_all(&path, format), batches);
            assert_eq!(
                summary.crc32,
                crc32fast::hash(&std::fs::read(&path).unwrap())
            );
        }
    }

    #[test]
    fn compressed_dictionaries_are_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let options = Options {
            compression: Some(Compression::Lz4),
            format: Format::Stream,
            ..Options::default()
        };
        let mut w = IpcWriter::create(&path, None, options).unwrap();
        let batches = vec![
            dict_batch(&["a", "b"]),
            dict_batch(&["c"]),
            dict_batch(&["a"]),
        ];
        for b in &batches {
            w.write(b.clone()).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(read_all(&path, Format::Stream), batches);
    }

    #[test]
    fn tmp_names_differ() {
        let p = Path::new("/x/y.arrow");
        let (a, b) = (tmp_name(p), tmp_name(p));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".y.arrow.") && name.ends_with(TMP_SUFFIX),
            "{name}"
        );
        assert_eq!(a.parent(), p.parent());
    }
}
