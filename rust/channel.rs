//! A bounded multi-producer multi-consumer channel with statistics and an explicit close.
//!
//! The queue is Dmitry Vyukov's bounded MPMC array: every slot carries a stamp that
//! says whether it is free for the sender at a position or full for the receiver at
//! that position, so a send or a receive is one compare-and-swap on the tail or the head
//! plus one slot write or read. Positions are packed as `lap | mark | index`; the mark
//! bit in the tail means closed, which makes "closed" and "sent" one atomic decision:
//! a send either got its slot before the close (and will be received) or fails.
//!
//! `sent`, `received` and the depth are read off the positions (no extra counters on
//! the hot path). Blocked callers spin briefly, then park on a condition variable; the
//! other side only touches the lock when its waiter count says someone is parked.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Largest capacity a channel accepts (its slots are allocated up front).
pub const MAX_CAPACITY: usize = 1 << 24;

/// A value on its own cache line(s), so the head and the tail do not share one.
#[repr(align(128))]
struct Padded<T>(T);

struct Slot<T> {
    stamp: AtomicU64,
    msg: UnsafeCell<MaybeUninit<T>>,
}

/// Threads parked on one side of the channel (senders or receivers).
struct Waiters {
    count: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Waiters {
    fn new() -> Self {
        Waiters {
            count: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    /// Park until notified or `until`, unless `ready()` holds once registered.
    fn park(&self, until: Option<Instant>, ready: impl Fn() -> bool) {
        let mut guard = self.lock.lock();
        self.count.fetch_add(1, Ordering::SeqCst);
        if !ready() {
            match until {
                Some(t) => {
                    self.cond.wait_until(&mut guard, t);
                }
                None => self.cond.wait(&mut guard),
            }
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
    }

    fn notify_one(&self) {
        if self.count.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.cond.notify_one();
        }
    }

    fn notify_all(&self) {
        if self.count.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.cond.notify_all();
        }
    }
}

/// Spin, then yield, before a caller parks.
struct Backoff(u32);

impl Backoff {
    const SPIN_LIMIT: u32 = 6;
    const YIELD_LIMIT: u32 = 10;

    fn spin(&mut self) {
        for _ in 0..1u32 << self.0.min(Self::SPIN_LIMIT) {
            std::hint::spin_loop();
        }
        if self.0 <= Self::SPIN_LIMIT {
            self.0 += 1;
        }
    }

    fn snooze(&mut self) {
        if self.0 <= Self::SPIN_LIMIT {
            self.spin();
        } else {
            std::thread::yield_now();
            if self.0 <= Self::YIELD_LIMIT {
                self.0 += 1;
            }
        }
    }

    fn is_completed(&self) -> bool {
        self.0 > Self::YIELD_LIMIT
    }

    /// Whether a caller waiting with `patience` should stop spinning and park.
    fn done_waiting(&self, patience: Patience) -> bool {
        match patience {
            Patience::Spin => self.is_completed(),
            Patience::Brief => self.0 > Self::SPIN_LIMIT,
        }
    }
}

/// How a blocked caller waits before it parks on a condition variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Spin, then yield the CPU a few times, then park: lowest latency when the threads
    /// on both sides of the channel each have a CPU.
    Spin,
    /// Spin for well under a microsecond, then park: for callers that compete with the
    /// other side for a CPU or a lock (Python threads and the GIL), where yielding and
    /// spinning only delay the thread that would make room.
    Brief,
}

/// Why a value could not be sent; the value comes back.
#[derive(PartialEq, Eq)]
pub enum SendError<T> {
    /// The channel is at capacity (only from `try_send`).
    Full(T),
    /// The channel is closed.
    Closed(T),
    /// The deadline passed while the channel stayed full.
    Timeout(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(v) | SendError::Closed(v) | SendError::Timeout(v) => v,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Closed(_) => "Closed(..)",
            SendError::Timeout(_) => "Timeout(..)",
        })
    }
}

/// Why nothing was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The channel is open and empty (only from `try_recv`).
    Empty,
    /// The channel is closed and drained.
    Closed,
    /// The deadline passed while the channel stayed empty and open.
    Timeout,
}

/// A capacity outside `1..=MAX_CAPACITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError(pub usize);

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "capacity must be an integer in 1..{MAX_CAPACITY}, got {}",
            self.0
        )
    }
}

impl std::error::Error for CapacityError {}

/// A snapshot of a channel's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub depth: usize,
    pub capacity: usize,
    pub high_water: usize,
    pub sent: u64,
    pub received: u64,
    pub blocked_send: Duration,
    pub closed: bool,
}

/// A slot reserved by a sender or a receiver, or the reason there is none.
enum Reserve<'a, T> {
    Slot(&'a Slot<T>, u64),
    /// A run of consecutive slots: the first position and how many.
    Run(u64, usize),
    NotReady,
    Closed,
}

/// Bounded MPMC channel; share it by reference or in an `Arc`.
pub struct Channel<T> {
    head: Padded<AtomicU64>,
    tail: Padded<AtomicU64>,
    high_water: Padded<AtomicUsize>,
    blocked_send_nanos: Padded<AtomicU64>,
    buffer: Box<[Slot<T>]>,
    cap: usize,
    /// Stamp `{lap: 1, mark: 0, index: 0}`; a power of two.
    one_lap: u64,
    /// Set in the tail once the channel is closed; `mark_bit - 1` masks the index.
    mark_bit: u64,
    lap_shift: u32,
    senders: Waiters,
    receivers: Waiters,
}

// SAFETY: slots are handed to exactly one thread at a time by the stamp protocol, so the
// channel moves `T` values between threads but never shares a `&T`.
unsafe impl<T: Send> Send for Channel<T> {}
unsafe impl<T: Send> Sync for Channel<T> {}

impl<T> Channel<T> {
    /// A channel holding at most `capacity` values, `1 <= capacity <= MAX_CAPACITY`.
    pub fn new(capacity: usize) -> Result<Self, CapacityError> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(CapacityError(capacity));
        }
        let mark_bit = (capacity as u64 + 1).next_power_of_two();
        let one_lap = mark_bit * 2;
        let buffer = (0..capacity as u64)
            .map(|i| Slot {
                stamp: AtomicU64::new(i),
                msg: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ok(Channel {
            head: Padded(AtomicU64::new(0)),
            tail: Padded(AtomicU64::new(0)),
            high_water: Padded(AtomicUsize::new(0)),
            blocked_send_nanos: Padded(AtomicU64::new(0)),
            buffer,
            cap: capacity,
            one_lap,
            mark_bit,
            lap_shift: one_lap.trailing_zeros(),
            senders: Waiters::new(),
            receivers: Waiters::new(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn is_closed(&self) -> bool {
        self.tail.0.load(Ordering::SeqCst) & self.mark_bit != 0
    }

    /// Values sent before this position (a head or an unmarked tail).
    fn count(&self, position: u64) -> u64 {
        (position >> self.lap_shift) * self.cap as u64 + (position & (self.mark_bit - 1))
    }

    /// The position after `position`.
    fn next(&self, position: u64) -> u64 {
        if (position & (self.mark_bit - 1)) + 1 < self.cap as u64 {
            position + 1
        } else {
            (position & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    fn slot(&self, position: u64) -> &Slot<T> {
        &self.buffer[(position & (self.mark_bit - 1)) as usize]
    }

    /// A consistent (sent, received) pair.
    fn counts(&self) -> (u64, u64) {
        loop {
            let tail = self.tail.0.load(Ordering::SeqCst);
            let head = self.head.0.load(Ordering::SeqCst);
            if self.tail.0.load(Ordering::SeqCst) == tail {
                return (self.count(tail & !self.mark_bit), self.count(head));
            }
        }
    }

    /// Values in the channel, `0..=capacity`.
    pub fn len(&self) -> usize {
        let (sent, received) = self.counts();
        (sent - received) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_full(&self) -> bool {
        self.len() >= self.cap
    }

    pub fn stats(&self) -> Stats {
        let (sent, received) = self.counts();
        Stats {
            depth: (sent - received) as usize,
            capacity: self.cap,
            high_water: self.high_water.0.load(Ordering::Relaxed),
            sent,
            received,
            blocked_send: Duration::from_nanos(self.blocked_send_nanos.0.load(Ordering::Relaxed)),
            closed: self.is_closed(),
        }
    }

    /// Close the channel: later sends fail, receivers drain what is left. Wakes every
    /// parked caller. Returns whether this call closed it (false if it already was).
    pub fn close(&self) -> bool {
        let before = self.tail.0.fetch_or(self.mark_bit, Ordering::SeqCst);
        self.senders.notify_all();
        self.receivers.notify_all();
        before & self.mark_bit == 0
    }

    // ------------------------------------------------------------ claiming slots

    /// Claim one slot for a sender (Vyukov's push).
    fn reserve_send(&self) -> Reserve<'_, T> {
        let mut backoff = Backoff(0);
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        loop {
            if tail & self.mark_bit != 0 {
                return Reserve::Closed;
            }
            let slot = self.slot(tail);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                let new_tail = self.next(tail);
                match self.tail.0.compare_exchange_weak(
                    tail,
                    new_tail,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Reserve::Slot(slot, tail),
                    Err(current) => {
                        tail = current;
                        backoff.spin();
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                // The slot still holds the value of the previous lap: full, unless a
                // receiver has just taken it.
                std::sync::atomic::fence(Ordering::SeqCst);
                let head = self.head.0.load(Ordering::Relaxed);
                if head.wrapping_add(self.one_lap) == tail {
                    return Reserve::NotReady;
                }
                backoff.spin();
                tail = self.tail.0.load(Ordering::Relaxed);
            } else {
                // Another sender moved on; reload.
                backoff.snooze();
                tail = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Claim one slot for a receiver (Vyukov's pop).
    fn reserve_recv(&self) -> Reserve<'_, T> {
        let mut backoff = Backoff(0);
        let mut head = self.head.0.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(head);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head + 1 {
                let new_head = self.next(head);
                match self.head.0.compare_exchange_weak(
                    head,
                    new_head,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Reserve::Slot(slot, head),
                    Err(current) => {
                        head = current;
                        backoff.spin();
                    }
                }
            } else if stamp == head {
                // The slot is free for this lap: empty, unless a sender has just taken it.
                std::sync::atomic::fence(Ordering::SeqCst);
                let tail = self.tail.0.load(Ordering::Relaxed);
                if tail & !self.mark_bit == head {
                    return if tail & self.mark_bit != 0 {
                        Reserve::Closed
                    } else {
                        Reserve::NotReady
                    };
                }
                backoff.spin();
                head = self.head.0.load(Ordering::Relaxed);
            } else {
                backoff.snooze();
                head = self.head.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Claim up to `max` consecutive ready slots of one lap with one CAS on `end` (the
    /// tail for senders, the head for receivers). A slot at position `p` is ready when
    /// its stamp is `p + ready_offset` (0: free for a sender, 1: full for a receiver).
    /// Falls back to the one-slot claim when the first slot is not ready.
    fn reserve_run(&self, sending: bool, max: usize) -> Reserve<'_, T> {
        let (end, ready_offset) = if sending {
            (&self.tail.0, 0)
        } else {
            (&self.head.0, 1)
        };
        let mut backoff = Backoff(0);
        let mut position = end.load(Ordering::Relaxed);
        loop {
            if position & self.mark_bit != 0 {
                return Reserve::Closed;
            }
            let index = (position & (self.mark_bit - 1)) as usize;
            let limit = max.min(self.cap - index);
            let mut run = 0;
            while run < limit
                && self.buffer[index + run].stamp.load(Ordering::Acquire)
                    == position + run as u64 + ready_offset
            {
                run += 1;
            }
            if run == 0 {
                return match if sending {
                    self.reserve_send()
                } else {
                    self.reserve_recv()
                } {
                    Reserve::Slot(_, p) => Reserve::Run(p, 1),
                    other => other,
                };
            }
            let new_position = if index + run < self.cap {
                position + run as u64
            } else {
                (position & !(self.one_lap - 1)).wrapping_add(self.one_lap)
            };
            match end.compare_exchange_weak(
                position,
                new_position,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Reserve::Run(position, run),
                Err(current) => {
                    position = current;
                    backoff.spin();
                }
            }
        }
    }

    // ------------------------------------------------------------ sending

    fn write(&self, slot: &Slot<T>, tail: u64, msg: T) {
        // SAFETY: the tail CAS gave this thread the slot exclusively until the stamp store.
        unsafe { (*slot.msg.get()).write(msg) };
        slot.stamp.store(tail + 1, Ordering::Release);
    }

    /// Raise the high-water mark to the depth right after the send at `tail`.
    fn record_depth(&self, tail: u64) {
        let high = self.high_water.0.load(Ordering::Relaxed);
        if high < self.cap {
            let head = self.head.0.load(Ordering::Relaxed);
            let depth = (self.count(tail) + 1).saturating_sub(self.count(head)) as usize;
            if depth > high {
                self.high_water
                    .0
                    .fetch_max(depth.min(self.cap), Ordering::Relaxed);
            }
        }
    }

    /// Send without blocking.
    pub fn try_send(&self, msg: T) -> Result<(), SendError<T>> {
        match self.reserve_send() {
            Reserve::Slot(slot, tail) => {
                self.write(slot, tail, msg);
                self.record_depth(tail);
                self.receivers.notify_one();
                Ok(())
            }
            Reserve::NotReady | Reserve::Run(..) => Err(SendError::Full(msg)),
            Reserve::Closed => Err(SendError::Closed(msg)),
        }
    }

    /// Send values from the front of `items` into the slots free now, claiming runs of
    /// slots with one CAS each, without blocking. Returns how many were sent (they are
    /// taken off `items`); `Full` when none fit, `Closed` when the channel is closed.
    pub fn try_send_batch(&self, items: &mut VecDeque<T>) -> Result<usize, SendError<()>> {
        let mut sent = 0;
        while !items.is_empty() {
            match self.reserve_run(true, items.len()) {
                Reserve::Run(tail, run) => {
                    let index = (tail & (self.mark_bit - 1)) as usize;
                    for (i, msg) in items.drain(..run).enumerate() {
                        self.write(&self.buffer[index + i], tail + i as u64, msg);
                    }
                    self.record_depth(tail + run as u64 - 1);
                    if run == 1 {
                        self.receivers.notify_one();
                    } else {
                        self.receivers.notify_all();
                    }
                    sent += run;
                }
                Reserve::Closed if sent == 0 => return Err(SendError::Closed(())),
                Reserve::NotReady if sent == 0 => return Err(SendError::Full(())),
                _ => break,
            }
        }
        Ok(sent)
    }

    /// Wait while the channel is full and open, until `deadline`; counts as blocked-send
    /// time. `Ok` once there is room or the channel is closed (the caller retries).
    pub fn wait_for_room(
        &self,
        deadline: Option<Instant>,
        patience: Patience,
    ) -> Result<(), SendError<()>> {
        let started = Instant::now();
        let mut result = Ok(());
        let mut backoff = Backoff(0);
        while self.is_full() && !self.is_closed() {
            if !backoff.done_waiting(patience) {
                backoff.snooze();
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                result = Err(SendError::Timeout(()));
                break;
            }
            self.senders
                .park(deadline, || !self.is_full() || self.is_closed());
        }
        let waited = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.blocked_send_nanos
            .0
            .fetch_add(waited, Ordering::Relaxed);
        result
    }

    /// Send, waiting while the channel is full until `deadline` (`None`: no limit).
    /// Time spent waiting counts as blocked-send time.
    pub fn send_deadline(&self, msg: T, deadline: Option<Instant>) -> Result<(), SendError<T>> {
        let mut msg = msg;
        loop {
            match self.try_send(msg) {
                Err(SendError::Full(back)) => msg = back,
                done => return done,
            }
            if self.wait_for_room(deadline, Patience::Spin).is_err() {
                // A wake-up this sender took is passed on to another parked sender.
                if !self.is_full() {
                    self.senders.notify_one();
                }
                return Err(SendError::Timeout(msg));
            }
        }
    }

    /// Send every value of `items` in order, waiting while the channel is full until
    /// `deadline`. On `Timeout` or `Closed` the values not sent are left in `items`.
    pub fn send_batch_deadline(
        &self,
        items: &mut VecDeque<T>,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<()>> {
        while !items.is_empty() {
            match self.try_send_batch(items) {
                Ok(_) => continue,
                Err(SendError::Full(())) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.wait_for_room(deadline, Patience::Spin) {
                if !self.is_full() {
                    self.senders.notify_one();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Send, waiting without limit while the channel is full.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.send_deadline(msg, None)
    }

    /// Send, waiting at most `timeout` while the channel is full.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_deadline(msg, Instant::now().checked_add(timeout))
    }

    // ------------------------------------------------------------ receiving

    fn read(&self, slot: &Slot<T>, head: u64) -> T {
        // SAFETY: the head CAS gave this thread the slot, whose stamp says it was written.
        let msg = unsafe { (*slot.msg.get()).assume_init_read() };
        slot.stamp
            .store(head.wrapping_add(self.one_lap), Ordering::Release);
        msg
    }

    /// Receive without blocking: `Empty` when open and empty, `Closed` when closed and drained.
    pub fn try_recv(&self) -> Result<T, RecvError> {
        match self.reserve_recv() {
            Reserve::Slot(slot, head) => {
                let msg = self.read(slot, head);
                self.senders.notify_one();
                Ok(msg)
            }
            Reserve::NotReady | Reserve::Run(..) => Err(RecvError::Empty),
            Reserve::Closed => Err(RecvError::Closed),
        }
    }

    /// Move up to `max` values that are there now into `out`, claiming runs of slots
    /// with one CAS each, without blocking; returns how many. `Closed` when closed and
    /// drained, `Empty` when open and nothing is there.
    pub fn try_recv_into(&self, out: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        let mut taken = 0;
        while taken < max {
            match self.reserve_run(false, max - taken) {
                Reserve::Run(head, run) => {
                    let index = (head & (self.mark_bit - 1)) as usize;
                    out.reserve(run);
                    for i in 0..run {
                        out.push(self.read(&self.buffer[index + i], head + i as u64));
                    }
                    if run == 1 {
                        self.senders.notify_one();
                    } else {
                        self.senders.notify_all();
                    }
                    taken += run;
                }
                Reserve::Closed if taken == 0 => return Err(RecvError::Closed),
                Reserve::NotReady if taken == 0 => return Err(RecvError::Empty),
                _ => break,
            }
        }
        Ok(taken)
    }

    /// Wait while the channel is empty and open, until `deadline`. `Ok` once there is a
    /// value or the channel is closed (the caller retries).
    pub fn wait_for_item(
        &self,
        deadline: Option<Instant>,
        patience: Patience,
    ) -> Result<(), RecvError> {
        let mut backoff = Backoff(0);
        while self.is_empty() && !self.is_closed() {
            if !backoff.done_waiting(patience) {
                backoff.snooze();
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RecvError::Timeout);
            }
            self.receivers
                .park(deadline, || !self.is_empty() || self.is_closed());
        }
        Ok(())
    }

    /// Give up waiting with `error`, passing on a wake-up this receiver may have taken.
    fn give_up_recv<V>(&self, error: RecvError) -> Result<V, RecvError> {
        if !self.is_empty() {
            self.receivers.notify_one();
        }
        Err(error)
    }

    /// Receive, waiting while the channel is empty and open until `deadline`.
    pub fn recv_deadline(&self, deadline: Option<Instant>) -> Result<T, RecvError> {
        loop {
            match self.try_recv() {
                Err(RecvError::Empty) => {}
                done => return done,
            }
            if let Err(e) = self.wait_for_item(deadline, Patience::Spin) {
                return self.give_up_recv(e);
            }
        }
    }

    /// Receive, waiting without limit while the channel is empty and open.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_deadline(None)
    }

    /// Receive, waiting at most `timeout` while the channel is empty and open.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_deadline(Instant::now().checked_add(timeout))
    }

    /// Wait (as `recv_deadline`) for at least one value, then move up to `max` into `out`.
    pub fn recv_into(
        &self,
        out: &mut Vec<T>,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        loop {
            match self.try_recv_into(out, max) {
                Err(RecvError::Empty) => {}
                done => return done,
            }
            if let Err(e) = self.wait_for_item(deadline, Patience::Spin) {
                return self.give_up_recv(e);
            }
        }
    }
}

/// Time for one thread to pass `n_messages` integers to another through a channel of
/// `capacity`, one by one (`batch` = 1) or in runs of `batch` (`send_batch_deadline` /
/// `recv_into`). Errors when the capacity is out of range or a message was lost.
pub fn measure_throughput(
    n_messages: u64,
    capacity: usize,
    batch: usize,
) -> Result<Duration, String> {
    let ch = std::sync::Arc::new(Channel::<u64>::new(capacity).map_err(|e| e.to_string())?);
    let batch = batch.max(1);
    let started = Instant::now();
    let consumer = {
        let ch = std::sync::Arc::clone(&ch);
        std::thread::spawn(move || {
            let mut sum = 0u64;
            if batch == 1 {
                while let Ok(v) = ch.recv() {
                    sum = sum.wrapping_add(v);
                }
            } else {
                let mut buf = Vec::with_capacity(batch);
                while ch.recv_into(&mut buf, batch, None).is_ok() {
                    sum = buf.drain(..).fold(sum, u64::wrapping_add);
                }
            }
            sum
        })
    };
    if batch == 1 {
        for i in 0..n_messages {
            if ch.send(i).is_err() {
                break;
            }
        }
    } else {
        let mut pending = VecDeque::with_capacity(batch);
        let mut next = 0;
        while next < n_messages {
            let end = (next + batch as u64).min(n_messages);
            pending.extend(next..end);
            next = end;
            if ch.send_batch_deadline(&mut pending, None).is_err() {
                break;
            }
        }
    }
    ch.close();
    let sum = consumer
        .join()
        .map_err(|_| "the consumer thread panicked".to_string())?;
    let took = started.elapsed();
    let expected = (n_messages as u128 * n_messages.saturating_sub(1) as u128 / 2) as u64;
    if sum != expected {
        return Err("the consumer did not receive every message".into());
    }
    Ok(took)
}

impl<T> Drop for Channel<T> {
    fn drop(&mut self) {
        while self.try_recv().is_ok() {}
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("capacity", &self.cap)
            .field("depth", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    /// Join the producers, close the channel, join the consumers: every value received, sorted.
    fn join_sorted(
        ch: &Channel<u64>,
        producers: Vec<thread::JoinHandle<()>>,
        consumers: Vec<thread::JoinHandle<Vec<u64>>>,
    ) -> Vec<u64> {
        for p in producers {
            p.join().unwrap();
        }
        ch.close();
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn fifo_capacity_and_counts() {
        let ch = Channel::new(3).unwrap();
        for i in 0..3 {
            ch.try_send(i).unwrap();
        }
        assert_eq!(ch.try_send(9), Err(SendError::Full(9)));
        assert_eq!(ch.len(), 3);
        assert_eq!(ch.try_recv(), Ok(0));
        ch.try_send(3).unwrap();
        let got: Vec<i32> = (0..3).map(|_| ch.try_recv().unwrap()).collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(ch.try_recv(), Err(RecvError::Empty));
        let s = ch.stats();
        assert_eq!(
            (s.depth, s.capacity, s.high_water, s.sent, s.received),
            (0, 3, 3, 4, 4)
        );
        assert!(!s.closed && s.blocked_send == Duration::ZERO);
    }

    #[test]
    fn capacity_bounds() {
        assert_eq!(Channel::<u8>::new(0).unwrap_err(), CapacityError(0));
        assert!(Channel::<u8>::new(MAX_CAPACITY + 1).is_err());
        assert!(Channel::<u8>::new(1).is_ok());
        assert!(CapacityError(0).to_string().contains("capacity"));
    }

    #[test]
    fn counts_survive_many_laps() {
        for cap in [1usize, 2, 3, 5, 8] {
            let ch = Channel::new(cap).unwrap();
            let mut next_out = 0u64;
            for i in 0..1000u64 {
                ch.try_send(i).unwrap();
                assert!(ch.len() <= cap);
                if ch.len() == cap.min(2) {
                    while let Ok(v) = ch.try_recv() {
                        assert_eq!(v, next_out);
                        next_out += 1;
                    }
                }
            }
            let s = ch.stats();
            assert_eq!((s.sent, s.received + s.depth as u64), (1000, 1000));
            assert_eq!(s.high_water, 2.min(cap));
        }
    }

    #[test]
    fn close_then_drain() {
        let ch = Channel::new(4).unwrap();
        ch.send(1).unwrap();
        ch.send(2).unwrap();
        assert!(ch.close());
        assert!(!ch.close());
        assert_eq!(ch.try_send(3), Err(SendError::Closed(3)));
        assert_eq!(ch.send(3), Err(SendError::Closed(3)));
        assert_eq!(ch.recv(), Ok(1));
        assert_eq!(ch.recv_timeout(Duration::ZERO), Ok(2));
        assert_eq!(ch.recv(), Err(RecvError::Closed));
        assert_eq!(ch.try_recv(), Err(RecvError::Closed));
        assert!(ch.stats().closed);
    }

    #[test]
    fn closed_wins_over_full() {
        let ch = Channel::new(1).unwrap();
        ch.send(1).unwrap();
        ch.close();
        assert_eq!(ch.try_send(2), Err(SendError::Closed(2)));
    }

    #[test]
    fn timeouts() {
        let ch = Channel::new(1).unwrap();
        assert_eq!(
            ch.recv_timeout(Duration::from_millis(5)),
            Err(RecvError::Timeout)
        );
        ch.send(1).unwrap();
        assert_eq!(
            ch.send_timeout(2, Duration::from_millis(5)),
            Err(SendError::Timeout(2))
        );
        assert_eq!(
            ch.send_timeout(2, Duration::ZERO),
            Err(SendError::Timeout(2))
        );
        assert!(ch.stats().blocked_send >= Duration::from_millis(5));
        assert_eq!(ch.recv_timeout(Duration::MAX), Ok(1));
    }

    #[test]
    fn batches() {
        let ch = Channel::new(8).unwrap();
        for i in 0..5 {
            ch.send(i).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(ch.recv_into(&mut out, 3, None), Ok(3));
        assert_eq!(ch.try_recv_into(&mut out, 10), Ok(2));
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
        assert_eq!(ch.try_recv_into(&mut out, 10), Err(RecvError::Empty));
        assert_eq!(ch.recv_into(&mut out, 0, None), Ok(0));
        ch.close();
        assert_eq!(ch.recv_into(&mut out, 3, None), Err(RecvError::Closed));
    }

    #[test]
    fn batch_send_claims_runs_across_laps() {
        for cap in [1usize, 3, 4, 7] {
            let ch = Channel::new(cap).unwrap();
            let mut expected = 0u64;
            let mut next = 0u64;
            for round in 0..200usize {
                let mut items: VecDeque<u64> = (next..next + (round % 5) as u64 + 1).collect();
                let offered = items.len();
                let sent = ch.try_send_batch(&mut items).unwrap_or(0);
                assert_eq!(sent + items.len(), offered);
                assert_eq!(
                    items.front().copied(),
                    (sent < offered).then_some(next + sent as u64)
                );
                next += sent as u64;
                assert!(ch.len() <= cap);
                let mut out = Vec::new();
                let _ = ch.try_recv_into(&mut out, round % 4 + 1);
                for v in out {
                    assert_eq!(v, expected);
                    expected += 1;
                }
                let s = ch.stats();
                assert_eq!((s.sent, s.received), (next, expected));
            }
            assert!(ch.stats().high_water <= cap);
        }
    }

    #[test]
    fn batch_send_reports_full_closed_and_timeout() {
        let ch = Channel::new(2).unwrap();
        let mut items: VecDeque<i32> = (0..5).collect();
        assert_eq!(ch.try_send_batch(&mut items), Ok(2));
        assert_eq!(ch.try_send_batch(&mut items), Err(SendError::Full(())));
        let timeout = Instant::now() + Duration::from_millis(5);
        assert_eq!(
            ch.send_batch_deadline(&mut items, Some(timeout)),
            Err(SendError::Timeout(()))
        );
        assert_eq!(items, VecDeque::from(vec![2, 3, 4]));
        ch.close();
        assert_eq!(ch.try_send_batch(&mut items), Err(SendError::Closed(())));
        assert_eq!(
            ch.send_batch_deadline(&mut items, None),
            Err(SendError::Closed(()))
        );
        let mut out = Vec::new();
        assert_eq!(ch.recv_into(&mut out, 10, None), Ok(2));
        assert_eq!(out, vec![0, 1]);
    }

    #[test]
    fn batches_between_threads_keep_order() {
        const N: u64 = 200_000;
        let ch = Arc::new(Channel::new(100).unwrap());
        let producer = {
            let ch = ch.clone();
            thread::spawn(move || {
                let mut i = 0;
                while i < N {
                    let mut items: VecDeque<u64> = (i..(i + 37).min(N)).collect();
                    i += items.len() as u64;
                    ch.send_batch_deadline(&mut items, None).unwrap();
                }
                ch.close();
            })
        };
        let mut out = Vec::new();
        while ch.recv_into(&mut out, 64, None).is_ok() {
            assert!(ch.len() <= 100);
        }
        producer.join().unwrap();
        assert_eq!(out, (0..N).collect::<Vec<_>>());
    }

    #[test]
    fn batches_many_producers_many_consumers_exactly_once() {
        const PER: u64 = 100_000;
        let ch = Arc::new(Channel::new(50).unwrap());
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let ch = ch.clone();
                thread::spawn(move || {
                    let mut i = p * PER;
                    while i < (p + 1) * PER {
                        let end = (i + 1 + i % 29).min((p + 1) * PER);
                        let mut items: VecDeque<u64> = (i..end).collect();
                        ch.send_batch_deadline(&mut items, None).unwrap();
                        i = end;
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..3usize)
            .map(|c| {
                let ch = ch.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut round = 0;
                    loop {
                        round += 1;
                        let r = if round % 3 == c {
                            ch.recv().map(|v| got.push(v))
                        } else {
                            ch.recv_into(&mut got, 1 + round % 17, None).map(|_| ())
                        };
                        if r.is_err() {
                            return got;
                        }
                    }
                })
            })
            .collect();
        assert_eq!(
            join_sorted(&ch, producers, consumers),
            (0..3 * PER).collect::<Vec<_>>()
        );
    }

    #[test]
    fn measured_throughput_checks_every_message() {
        for batch in [1, 7, 64] {
            assert!(measure_throughput(10_000, 16, batch).is_ok());
        }
        assert!(measure_throughput(10, 0, 1).is_err());
    }

    #[test]
    fn drop_releases_values() {
        let item = Arc::new(());
        let ch = Channel::new(4).unwrap();
        ch.send(item.clone()).unwrap();
        ch.send(item.clone()).unwrap();
        drop(ch.recv());
        assert_eq!(Arc::strong_count(&item), 2);
        drop(ch);
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn close_wakes_parked_senders_and_receivers() {
        let full = Arc::new(Channel::new(1).unwrap());
        full.send(0).unwrap();
        let empty = Arc::new(Channel::<i32>::new(1).unwrap());
        let senders: Vec<_> = (0..3)
            .map(|i| {
                let ch = full.clone();
                thread::spawn(move || ch.send(i))
            })
            .collect();
        let receivers: Vec<_> = (0..3)
            .map(|_| {
                let ch = empty.clone();
                thread::spawn(move || ch.recv())
            })
            .collect();
        thread::sleep(Duration::from_millis(50));
        full.close();
        empty.close();
        for (i, h) in senders.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), Err(SendError::Closed(i as i32)));
        }
        for h in receivers {
            assert_eq!(h.join().unwrap(), Err(RecvError::Closed));
        }
        assert_eq!(full.recv(), Ok(0));
        assert!(full.stats().blocked_send > Duration::ZERO);
    }

    #[test]
    fn backpressure_wakes_a_parked_sender() {
        let ch = Arc::new(Channel::new(1).unwrap());
        ch.send(0).unwrap();
        let sender = {
            let ch = ch.clone();
            thread::spawn(move || ch.send(1))
        };
        thread::sleep(Duration::from_millis(30));
        assert_eq!(ch.recv(), Ok(0));
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(ch.recv(), Ok(1));
    }

    #[test]
    fn many_producers_many_consumers_exactly_once() {
        const PER: u64 = 250_000;
        let ch = Arc::new(Channel::new(64).unwrap());
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let ch = ch.clone();
                thread::spawn(move || {
                    for i in p * PER..(p + 1) * PER {
                        ch.send(i).unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let ch = ch.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Ok(v) = ch.recv() {
                        assert!(ch.len() <= 64);
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        assert_eq!(
            join_sorted(&ch, producers, consumers),
            (0..4 * PER).collect::<Vec<_>>()
        );
        let s = ch.stats();
        assert_eq!((s.sent, s.received, s.depth), (4 * PER, 4 * PER, 0));
        assert!(s.high_water <= 64);
    }

    #[test]
    fn close_races_with_senders_without_losing_values() {
        let ch = Arc::new(Channel::new(8).unwrap());
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let ch = ch.clone();
                thread::spawn(move || {
                    let mut accepted = 0u64;
                    while ch.send((p, accepted)).is_ok() {
                        accepted += 1;
                    }
                    accepted
                })
            })
            .collect();
        let consumer = {
            let ch = ch.clone();
            thread::spawn(move || {
                let mut got = 0u64;
                while ch.recv().is_ok() {
                    got += 1;
                }
                got
            })
        };
        thread::sleep(Duration::from_millis(30));
        ch.close();
        let accepted: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        assert_eq!(consumer.join().unwrap(), accepted);
        assert_eq!(ch.stats().sent, accepted);
    }
}
