//! Python wrapper of the channel primitive: `Channel` carrying Python objects.
//!
//! An operation that can complete at once runs with the GIL held (a push or a pop is
//! tens of nanoseconds). One that must wait releases the GIL and waits in slices of at
//! most `WAIT_SLICE`, re-attaching between slices to run the signal handlers, so Ctrl-C
//! raises `KeyboardInterrupt` in a blocked `send` or `recv`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::errors::{ChannelClosed, ChannelEmpty, ChannelFull, InvalidArgument, Timeout};
use crate::channel::{self, Patience, RecvError, SendError, MAX_CAPACITY};

/// Longest wait without the GIL before a blocked call checks for signals.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Timeouts above this many seconds (or `inf`) mean: wait without limit.
const FOREVER_SECONDS: f64 = 1e9;
/// Most items `send_many` pulls from its iterable before sending them.
const SEND_CHUNK: usize = 256;
/// `Channel()` holds this many items.
const DEFAULT_CAPACITY: usize = 1024;

type Item = Py<PyAny>;

/// An integer argument in `1..=max`, or `InvalidArgument` naming it.
fn count_arg(name: &str, value: &Bound<'_, PyAny>, max: u64) -> PyResult<u64> {
    let bad = || {
        let shown = value
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "?".into());
        let kind = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        (shown, kind)
    };
    match value.extract::<i128>() {
        Ok(n) if (1..=max as i128).contains(&n) => Ok(n as u64),
        Ok(n) => Err(InvalidArgument::new_err(format!(
            "{name} must be an integer in 1..{max}, got {n}"
        ))),
        Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => Err(InvalidArgument::new_err(
            format!("{name} must be an integer in 1..{max}, got {}", bad().0),
        )),
        Err(e) if e.is_instance_of::<PyTypeError>(value.py()) => {
            let (shown, kind) = bad();
            Err(InvalidArgument::new_err(format!(
                "{name} must be an integer >= 1, got {kind} {shown}"
            )))
        }
        Err(e) => Err(e),
    }
}

/// The deadline of `timeout` seconds from now; `None` for no limit.
fn deadline_arg(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Instant>> {
    let Some(timeout) = timeout else {
        return Ok(None);
    };
    let seconds = timeout.extract::<f64>().map_err(|e| {
        if e.is_instance_of::<PyTypeError>(timeout.py()) {
            let shown = timeout
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "?".into());
            let kind = timeout
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            InvalidArgument::new_err(format!(
                "timeout must be None or a number of seconds >= 0, got {kind} {shown}"
            ))
        } else {
            e
        }
    })?;
    if seconds.is_nan() || seconds < 0.0 {
        return Err(InvalidArgument::new_err(format!(
            "timeout must be None or a number of seconds >= 0, got {}",
            python_float(seconds)
        )));
    }
    if seconds > FOREVER_SECONDS {
        return Ok(None);
    }
    Ok(Instant::now().checked_add(Duration::from_secs_f64(seconds)))
}

/// `f64` spelled as Python's `repr(float)` does for the values a message shows.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// The end of the next wait slice: `WAIT_SLICE` from now, or the deadline if sooner.
fn slice_end(deadline: Option<Instant>) -> Instant {
    let end = Instant::now() + WAIT_SLICE;
    match deadline {
        Some(d) if d < end => d,
        _ => end,
    }
}

/// An argument that may be omitted; unlike `Option`, an explicit `None` is kept (and rejected).
struct Given(Option<Py<PyAny>>);

impl<'a, 'py> FromPyObject<'a, 'py> for Given {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Given(Some(obj.to_owned().unbind())))
    }
}

fn closed_send(while_blocked: bool) -> PyErr {
    ChannelClosed::new_err(if while_blocked {
        "channel closed while a send was blocked"
    } else {
        "send on a closed channel"
    })
}

fn closed_recv() -> PyErr {
    ChannelClosed::new_err("channel is closed and drained")
}

/// Bounded multi-producer multi-consumer channel of Python objects.
#[pyclass(module = "phasekit._core", name = "Channel", frozen)]
pub struct PyChannel {
    inner: channel::Channel<Item>,
}

impl PyChannel {
    /// Wait without the GIL for one slice (at most `WAIT_SLICE`) until the channel has room
    /// (`sending`) or an item, or is closed; then run the signal handlers. `Timeout` once
    /// `deadline` has passed. The caller retries its operation with the GIL held, so an
    /// item never waits for the GIL outside the channel.
    fn wait(&self, py: Python<'_>, sending: bool, deadline: Option<Instant>) -> PyResult<()> {
        let until = slice_end(deadline);
        let ready = py.detach(|| {
            if sending {
                self.inner
                    .wait_for_room(Some(until), Patience::Brief)
                    .is_ok()
            } else {
                self.inner
                    .wait_for_item(Some(until), Patience::Brief)
                    .is_ok()
            }
        });
        if !ready {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(if sending {
                    Timeout::new_err(format!(
                        "send timed out: the channel stayed full (capacity {})",
                        self.inner.capacity()
                    ))
                } else {
                    Timeout::new_err("recv timed out: the channel stayed empty")
                });
            }
            py.check_signals()?;
        }
        Ok(())
    }

    /// Send, releasing the GIL only while the channel is full.
    fn send_item(&self, py: Python<'_>, item: Item, deadline: Option<Instant>) -> PyResult<()> {
        let mut item = item;
        let mut waited = false;
        loop {
            match self.inner.try_send(item) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(back)) => item = back,
                Err(_) => return Err(closed_send(waited)),
            }
            self.wait(py, true, deadline)?;
            waited = true;
        }
    }

    /// Send every item of `pending` in order (runs of slots at a time), releasing the GIL
    /// only while the channel is full. On an error the items not sent are dropped.
    fn send_pending(
        &self,
        py: Python<'_>,
        pending: &mut VecDeque<Item>,
        deadline: Option<Instant>,
    ) -> PyResult<()> {
        let mut waited = false;
        while !pending.is_empty() {
            match self.inner.try_send_batch(pending) {
                Ok(_) => continue,
                Err(SendError::Full(())) => {}
                Err(_) => return Err(closed_send(waited)),
            }
            self.wait(py, true, deadline)?;
            waited = true;
        }
        Ok(())
    }

    /// Receive, releasing the GIL only while the channel is empty and open.
    fn recv_item(&self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<Item> {
        loop {
            match self.inner.try_recv() {
                Ok(item) => return Ok(item),
                Err(RecvError::Closed) => return Err(closed_recv()),
                Err(_) => {}
            }
            self.wait(py, false, deadline)?;
        }
    }
}

#[pymethods]
impl PyChannel {
    #[new]
    #[pyo3(signature = (capacity = Given(None)))]
    fn new(py: Python<'_>, capacity: Given) -> PyResult<Self> {
        let capacity = match capacity.0 {
            Some(c) => count_arg("capacity", c.bind(py), MAX_CAPACITY as u64)? as usize,
            None => DEFAULT_CAPACITY,
        };
        let inner =
            channel::Channel::new(capacity).map_err(|e| InvalidArgument::new_err(e.to_string()))?;
        Ok(PyChannel { inner })
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    #[pyo3(signature = (item, timeout = None))]
    fn send(&self, py: Python<'_>, item: Item, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let deadline = deadline_arg(timeout)?;
        self.send_item(py, item, deadline)
    }

    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Item> {
        let deadline = deadline_arg(timeout)?;
        self.recv_item(py, deadline)
    }

    fn try_send(&self, item: Item) -> PyResult<()> {
        match self.inner.try_send(item) {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => Err(ChannelFull::new_err(format!(
                "channel is full (capacity {})",
                self.inner.capacity()
            ))),
            Err(_) => Err(closed_send(false)),
        }
    }

    fn try_recv(&self) -> PyResult<Item> {
        match self.inner.try_recv() {
            Ok(item) => Ok(item),
            Err(RecvError::Empty) => Err(ChannelEmpty::new_err("channel is empty")),
            Err(_) => Err(closed_recv()),
        }
    }

    /// Send every item in order; `timeout` bounds the whole call. On `Timeout` or
    /// `ChannelClosed` the items before the failing one were sent.
    #[pyo3(signature = (items, timeout = None))]
    fn send_many(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let deadline = deadline_arg(timeout)?;
        let iterator = items.try_iter().map_err(|e| {
            if e.is_instance_of::<PyTypeError>(py) {
                let kind = items
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                InvalidArgument::new_err(format!("items must be an iterable, got {kind}"))
            } else {
                e
            }
        })?;
        // Pull only as many items as fit now (at least one), so a generator is not
        // advanced past what can be sent, then send them as runs of slots.
        let mut iterator = iterator;
        let mut pending = VecDeque::new();
        let mut count = 0;
        loop {
            let room = if self.inner.is_closed() {
                1
            } else {
                (self.inner.capacity() - self.inner.len()).clamp(1, SEND_CHUNK)
            };
            let mut pulled = None;
            while pending.len() < room {
                match iterator.next() {
                    Some(Ok(item)) => pending.push_back(item.unbind()),
                    Some(Err(e)) => {
                        pulled = Some(Err(e));
                        break;
                    }
                    None => {
                        pulled = Some(Ok(()));
                        break;
                    }
                }
            }
            count += pending.len();
            self.send_pending(py, &mut pending, deadline)?;
            match pulled {
                Some(Ok(())) => return Ok(count),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }

    /// Wait for at least one item, then return up to `max_items` without further waiting.
    #[pyo3(signature = (max_items, timeout = None))]
    fn recv_many<'py>(
        &self,
        py: Python<'py>,
        max_items: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let limit = count_arg("max_items", max_items, i64::MAX as u64)?;
        let deadline = deadline_arg(timeout)?;
        let limit = limit as usize;
        let mut items = Vec::new();
        loop {
            match self.inner.try_recv_into(&mut items, limit) {
                Ok(_) => return PyList::new(py, items),
                Err(RecvError::Closed) => return Err(closed_recv()),
                Err(_) => {}
            }
            self.wait(py, false, deadline)?;
        }
    }

    /// Idempotent; wakes every blocked sender (they raise `ChannelClosed`) and receiver.
    fn close(&self) {
        self.inner.close();
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Item>> {
        match self.recv_item(py, None) {
            Ok(item) => Ok(Some(item)),
            Err(e) if e.is_instance_of::<ChannelClosed>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let dict = PyDict::new(py);
        dict.set_item("depth", s.depth)?;
        dict.set_item("capacity", s.capacity)?;
        dict.set_item("high_water", s.high_water)?;
        dict.set_item("sent", s.sent)?;
        dict.set_item("received", s.received)?;
        dict.set_item("blocked_send_seconds", s.blocked_send.as_secs_f64())?;
        dict.set_item("closed", s.closed)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let closed = if self.inner.is_closed() {
            "True"
        } else {
            "False"
        };
        format!(
            "Channel(capacity={}, depth={}, closed={closed})",
            self.inner.capacity(),
            self.inner.len()
        )
    }
}

/// Seconds for one Rust thread to send `n_messages` integers to another through a
/// channel of `capacity`, one by one or in runs of `batch` (the GIL is released
/// meanwhile). For benchmarks.
#[pyfunction]
#[pyo3(signature = (n_messages, capacity, batch = 1))]
fn _bench_rust_channel(
    py: Python<'_>,
    n_messages: u64,
    capacity: usize,
    batch: usize,
) -> PyResult<f64> {
    py.detach(|| channel::measure_throughput(n_messages, capacity, batch))
        .map(|took| took.as_secs_f64())
        .map_err(|e| InvalidArgument::new_err(format!("channel benchmark: {e}")))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyChannel>()?;
    m.add_function(wrap_pyfunction!(_bench_rust_channel, m)?)?;
    Ok(())
}
