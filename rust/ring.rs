//! Columnar retention of traced events under a policy (`sliding_window`, `keep_all`,
//! `trade_complete`, `minimal`); the behaviour is specified in docs/primitives.md.
//!
//! Events are stored column by column in native vectors. `sliding_window` and
//! `keep_all` use a ring buffer; `trade_complete` and `minimal` use an arrival-order
//! log with a per-key index, so closing a position does not scan the log: each log
//! row carries the id of its position, a close flips one flag, and closed rows are
//! compacted away once they outnumber the live ones.
//!
//! Every policy keeps a position book from FILL events ([`book`]): a lot per symbol,
//! a trade per closing fill. Under `trade_complete`/`minimal` a lot's fills are
//! retained while it is open and dropped, with the events of the keyed positions its
//! fills touched, once it is flat.

pub mod batches;
pub mod book;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use book::{moves, Closed, Lot, Outcome, Realized, Step};

/// Column names of an exported event batch, in order.
pub const EVENT_FIELDS: [&str; 7] = ["ts", "kind", "key", "symbol", "price", "quantity", "value"];
/// Bytes of one retained event: i64 + u16 + i64 + i32 + 3 x f64.
pub const EVENT_BYTES: usize = 46;
/// Column names of a closed-trade summary, in order.
pub const TRADE_FIELDS: [&str; 9] = [
    "key",
    "symbol",
    "open_ts",
    "close_ts",
    "entry_price",
    "exit_price",
    "quantity",
    "pnl",
    "n_events",
];
/// Bytes of one closed-trade summary: 4 x i64 + i32 + 4 x f64.
pub const TRADE_BYTES: usize = 68;
/// `EventType.POSITION_OPEN`.
pub const POSITION_OPEN: u16 = 5;
/// `EventType.POSITION_CLOSE`.
pub const POSITION_CLOSE: u16 = 6;
/// `EventType.FILL`.
pub const FILL: u16 = 4;

/// Closed rows are compacted out of the position log once there are at least this
/// many of them and at least `COMPACT_RATIO` times as many as live rows (the log then
/// holds at most `COMPACT_RATIO + 1` times the retained rows, plus this minimum).
const COMPACT_MIN_DEAD: usize = 4096;
const COMPACT_RATIO: usize = 2;
/// Rows reserved up front for a ring buffer (it grows up to its capacity on demand).
const INITIAL_ROWS: usize = 1024;

/// An invalid argument; the message names it, its value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingError(pub String);

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RingError {}

/// A retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    SlidingWindow,
    TradeComplete,
    Minimal,
    KeepAll,
}

impl Policy {
    /// Every policy, in the order of `POLICIES`.
    pub const ALL: [Policy; 4] = [
        Policy::SlidingWindow,
        Policy::TradeComplete,
        Policy::Minimal,
        Policy::KeepAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::SlidingWindow => "sliding_window",
            Policy::TradeComplete => "trade_complete",
            Policy::Minimal => "minimal",
            Policy::KeepAll => "keep_all",
        }
    }

    pub fn parse(name: &str) -> Result<Policy, RingError> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                RingError(format!(
                    "policy must be one of sliding_window, trade_complete, minimal, keep_all; \
                     got '{name}'"
                ))
            })
    }
}

/// One event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub ts: i64,
    pub kind: u16,
    pub key: i64,
    pub symbol: i32,
    pub price: f64,
    pub quantity: f64,
    pub value: f64,
}

impl Event {
    /// An event with the defaults of `append`: key -1, symbol 0, floats 0.0.
    pub fn new(ts: i64, kind: u16) -> Event {
        Event {
            ts,
            kind,
            key: -1,
            symbol: 0,
            price: 0.0,
            quantity: 0.0,
            value: 0.0,
        }
    }
}

/// Events stored column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventColumns {
    pub ts: Vec<i64>,
    pub kind: Vec<u16>,
    pub key: Vec<i64>,
    pub symbol: Vec<i32>,
    pub price: Vec<f64>,
    pub quantity: Vec<f64>,
    pub value: Vec<f64>,
}

impl EventColumns {
    pub fn with_capacity(n: usize) -> EventColumns {
        EventColumns {
            ts: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            key: Vec::with_capacity(n),
            symbol: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            quantity: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    #[inline]
    pub fn push(&mut self, e: &Event) {
        self.ts.push(e.ts);
        self.kind.push(e.kind);
        self.key.push(e.key);
        self.symbol.push(e.symbol);
        self.price.push(e.price);
        self.quantity.push(e.quantity);
        self.value.push(e.value);
    }

    #[inline]
    fn set(&mut self, i: usize, e: &Event) {
        self.ts[i] = e.ts;
        self.kind[i] = e.kind;
        self.key[i] = e.key;
        self.symbol[i] = e.symbol;
        self.price[i] = e.price;
        self.quantity[i] = e.quantity;
        self.value[i] = e.value;
    }

    pub fn get(&self, i: usize) -> Event {
        Event {
            ts: self.ts[i],
            kind: self.kind[i],
            key: self.key[i],
            symbol: self.symbol[i],
            price: self.price[i],
            quantity: self.quantity[i],
            value: self.value[i],
        }
    }

    /// Keeps rows `rows` (increasing) and drops the others.
    fn gather_in_place(&mut self, rows: &[usize]) {
        fn keep<T: Copy>(v: &mut Vec<T>, rows: &[usize]) {
            for (w, &r) in rows.iter().enumerate() {
                v[w] = v[r];
            }
            v.truncate(rows.len());
        }
        keep(&mut self.ts, rows);
        keep(&mut self.kind, rows);
        keep(&mut self.key, rows);
        keep(&mut self.symbol, rows);
        keep(&mut self.price, rows);
        keep(&mut self.quantity, rows);
        keep(&mut self.value, rows);
    }

    /// A copy of rows `rows`.
    fn gather(&self, rows: &[usize]) -> EventColumns {
        fn pick<T: Copy>(v: &[T], rows: &[usize]) -> Vec<T> {
            rows.iter().map(|&r| v[r]).collect()
        }
        EventColumns {
            ts: pick(&self.ts, rows),
            kind: pick(&self.kind, rows),
            key: pick(&self.key, rows),
            symbol: pick(&self.symbol, rows),
            price: pick(&self.price, rows),
            quantity: pick(&self.quantity, rows),
            value: pick(&self.value, rows),
        }
    }

    fn truncate(&mut self, n: usize) {
        self.ts.truncate(n);
        self.kind.truncate(n);
        self.key.truncate(n);
        self.symbol.truncate(n);
        self.price.truncate(n);
        self.quantity.truncate(n);
        self.value.truncate(n);
    }

    fn clear(&mut self) {
        self.truncate(0);
    }

    /// Appends rows `range` of `other`.
    fn extend_from(&mut self, other: &EventColumns, range: std::ops::Range<usize>) {
        self.ts.extend_from_slice(&other.ts[range.clone()]);
        self.kind.extend_from_slice(&other.kind[range.clone()]);
        self.key.extend_from_slice(&other.key[range.clone()]);
        self.symbol.extend_from_slice(&other.symbol[range.clone()]);
        self.price.extend_from_slice(&other.price[range.clone()]);
        self.quantity
            .extend_from_slice(&other.quantity[range.clone()]);
        self.value.extend_from_slice(&other.value[range]);
    }
}

/// Closed-trade summaries stored column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TradeColumns {
    pub key: Vec<i64>,
    pub symbol: Vec<i32>,
    pub open_ts: Vec<i64>,
    pub close_ts: Vec<i64>,
    pub entry_price: Vec<f64>,
    pub exit_price: Vec<f64>,
    pub quantity: Vec<f64>,
    pub pnl: Vec<f64>,
    pub n_events: Vec<i64>,
}

impl TradeColumns {
    pub fn len(&self) -> usize {
        self.key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    fn clear(&mut self) {
        *self = TradeColumns::default();
    }
}

/// One column of an incoming batch: borrowed or converted values, or a constant default.
#[derive(Debug, Clone)]
pub enum Col<'a, T: Clone> {
    Values(Cow<'a, [T]>),
    Const(T),
}

impl<T: Copy> Col<'_, T> {
    #[inline(always)]
    fn get(&self, i: usize) -> T {
        match self {
            Col::Values(v) => v[i],
            Col::Const(c) => *c,
        }
    }

    /// Appends rows `start..start + n` to `dst`.
    fn append_to(&self, dst: &mut Vec<T>, start: usize, n: usize) {
        match self {
            Col::Values(v) => dst.extend_from_slice(&v[start..start + n]),
            Col::Const(c) => dst.resize(dst.len() + n, *c),
        }
    }

    /// Overwrites `dst` with rows `start..start + dst.len()`.
    fn copy_into(&self, dst: &mut [T], start: usize) {
        match self {
            Col::Values(v) => dst.copy_from_slice(&v[start..start + dst.len()]),
            Col::Const(c) => dst.fill(*c),
        }
    }

    fn len(&self) -> Option<usize> {
        match self {
            Col::Values(v) => Some(v.len()),
            Col::Const(_) => None,
        }
    }
}

/// Many events to apply in row order; build it with [`EventBatch::new`].
#[derive(Debug, Clone)]
pub struct EventBatch<'a> {
    len: usize,
    pub ts: Col<'a, i64>,
    pub kind: Col<'a, u16>,
    pub key: Col<'a, i64>,
    pub symbol: Col<'a, i32>,
    pub price: Col<'a, f64>,
    pub quantity: Col<'a, f64>,
    pub value: Col<'a, f64>,
}

impl<'a> EventBatch<'a> {
    /// A batch with `ts` and `kind` given and every other column at its default.
    pub fn new(ts: Cow<'a, [i64]>, kind: Cow<'a, [u16]>) -> Result<EventBatch<'a>, RingError> {
        if ts.len() != kind.len() {
            return Err(RingError(format!(
                "columns have unequal lengths: ts has {} rows, kind has {}",
                ts.len(),
                kind.len()
            )));
        }
        Ok(EventBatch {
            len: ts.len(),
            ts: Col::Values(ts),
            kind: Col::Values(kind),
            key: Col::Const(-1),
            symbol: Col::Const(0),
            price: Col::Const(0.0),
            quantity: Col::Const(0.0),
            value: Col::Const(0.0),
        })
    }

    /// Checks that every given column has the length of `ts`.
    pub fn check_lengths(&self) -> Result<(), RingError> {
        let lengths = [
            ("kind", self.kind.len()),
            ("key", self.key.len()),
            ("symbol", self.symbol.len()),
            ("price", self.price.len()),
            ("quantity", self.quantity.len()),
            ("value", self.value.len()),
        ];
        for (name, n) in lengths {
            if let Some(n) = n {
                if n != self.len {
                    return Err(RingError(format!(
                        "columns have unequal lengths: ts has {} rows, {name} has {n}",
                        self.len
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn row(&self, i: usize) -> Event {
        Event {
            ts: self.ts.get(i),
            kind: self.kind.get(i),
            key: self.key.get(i),
            symbol: self.symbol.get(i),
            price: self.price.get(i),
            quantity: self.quantity.get(i),
            value: self.value.get(i),
        }
    }
}

/// Where the rows of one `extend` land in a ring buffer.
struct WindowPlan {
    /// First source row written (earlier rows are evicted at once).
    src: usize,
    /// Rows appended while the buffer is not yet full.
    push: usize,
    /// Slot where overwriting starts, and rows overwritten before/after wrapping.
    head: usize,
    first: usize,
    second: usize,
}

fn apply_plan<T: Copy>(dst: &mut Vec<T>, src: &Col<'_, T>, plan: &WindowPlan) {
    let mut at = plan.src;
    src.append_to(dst, at, plan.push);
    at += plan.push;
    src.copy_into(&mut dst[plan.head..plan.head + plan.first], at);
    at += plan.first;
    src.copy_into(&mut dst[..plan.second], at);
}

/// A ring buffer of at most `cap` events (sliding_window, keep_all).
#[derive(Debug, Clone)]
struct Window {
    cols: EventColumns,
    cap: usize,
    /// Slot of the oldest event once the buffer is full (0 before).
    head: usize,
}

impl Window {
    fn new(cap: usize) -> Window {
        Window {
            cols: EventColumns::with_capacity(cap.min(INITIAL_ROWS)),
            cap,
            head: 0,
        }
    }

    fn len(&self) -> usize {
        self.cols.len()
    }

    #[inline]
    fn push(&mut self, e: &Event) {
        if self.cols.len() < self.cap {
            self.cols.push(e);
        } else {
            self.cols.set(self.head, e);
            self.head += 1;
            if self.head == self.cap {
                self.head = 0;
            }
        }
    }

    fn extend(&mut self, b: &EventBatch<'_>) {
        let n = b.len();
        let keep = n.min(self.cap);
        let push = keep.min(self.cap - self.cols.len());
        let rest = keep - push;
        let first = rest.min(self.cap - self.head);
        let plan = WindowPlan {
            src: n - keep,
            push,
            head: self.head,
            first,
            second: rest - first,
        };
        let c = &mut self.cols;
        apply_plan(&mut c.ts, &b.ts, &plan);
        apply_plan(&mut c.kind, &b.kind, &plan);
        apply_plan(&mut c.key, &b.key, &plan);
        apply_plan(&mut c.symbol, &b.symbol, &plan);
        apply_plan(&mut c.price, &b.price, &plan);
        apply_plan(&mut c.quantity, &b.quantity, &plan);
        apply_plan(&mut c.value, &b.value, &plan);
        if rest > 0 {
            self.head = (self.head + rest) % self.cap;
        }
    }

    /// The retained events, oldest first.
    fn export(&self) -> EventColumns {
        let n = self.cols.len();
        let mut out = EventColumns::with_capacity(n);
        out.extend_from(&self.cols, self.head..n);
        out.extend_from(&self.cols, 0..self.head);
        out
    }

    fn clear(&mut self) {
        self.cols.clear();
        self.head = 0;
    }
}

/// Multiplicative hashing of i64 position keys (not DoS-resistant; keys are not adversarial).
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

const HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        let m = u128::from(self.0 ^ x) * u128::from(HASH_MUL);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }

    #[inline]
    fn write_i64(&mut self, x: i64) {
        self.write_u64(x as u64);
    }
}

type KeyMap<V> = HashMap<i64, V, BuildHasherDefault<KeyHasher>>;

/// An open position under trade_complete/minimal.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// Index into `Positions::open`, renumbered by compaction.
    id: u32,
    open_ts: i64,
    /// Price and quantity of the position's first POSITION_OPEN (NaN/None before one).
    entry_price: f64,
    open_quantity: Option<f64>,
    /// Retained events of the position.
    n_events: u64,
    /// Whether a fill tied the position to a lot of the book (it closes with the lot).
    linked: bool,
}

/// The arrival-order log of trade_complete/minimal with its per-key index.
#[derive(Debug, Clone, Default)]
struct Positions {
    log: EventColumns,
    /// Position id of each log row.
    pos_of: Vec<u32>,
    /// Whether position id `i` is still open (its rows are live).
    open: Vec<bool>,
    by_key: KeyMap<Position>,
    live: usize,
}

impl Positions {
    /// Retains `e` (key >= 0, not a close) in its position.
    #[inline]
    fn retain(&mut self, e: &Event) {
        let next_id = self.open.len() as u32;
        let pos = self.by_key.entry(e.key).or_insert(Position {
            id: next_id,
            open_ts: e.ts,
            entry_price: f64::NAN,
            open_quantity: None,
            n_events: 0,
            linked: false,
        });
        if pos.id == next_id {
            self.open.push(true);
        }
        if e.kind == POSITION_OPEN && pos.open_quantity.is_none() {
            pos.entry_price = e.price;
            pos.open_quantity = Some(e.quantity);
        }
        pos.n_events += 1;
        self.pos_of.push(pos.id);
        self.log.push(e);
        self.live += 1;
    }

    /// A new position id (for a lot of the book).
    fn new_id(&mut self) -> u32 {
        self.open.push(true);
        (self.open.len() - 1) as u32
    }

    /// Retains `e` as a row of position `id`.
    fn push_row(&mut self, e: &Event, id: u32) {
        self.pos_of.push(id);
        self.log.push(e);
        self.live += 1;
    }

    /// Marks position `id` (with `rows` retained rows) closed.
    fn close_id(&mut self, id: u32, rows: u64) {
        if let Some(flag) = self.open.get_mut(id as usize) {
            *flag = false;
        }
        self.live -= rows as usize;
    }

    /// Closes the keyed position of `e.key` (>= 0): how it opened and its retained rows.
    #[inline]
    fn close(&mut self, e: &Event) -> Opened {
        match self.by_key.remove(&e.key) {
            Some(p) => {
                self.close_id(p.id, p.n_events);
                Opened {
                    ts: p.open_ts,
                    entry_price: p.entry_price,
                    quantity: p.open_quantity,
                    events: p.n_events + 1,
                }
            }
            None => Opened::lone(e),
        }
    }

    /// Whether closed rows should be compacted away (or position ids run out).
    fn should_compact(&self) -> bool {
        let dead = self.log.len() - self.live;
        (dead >= COMPACT_MIN_DEAD && dead >= COMPACT_RATIO * self.live)
            || self.open.len() >= (u32::MAX - 1) as usize
    }

    /// Indices of the live log rows (rows of open positions), in order.
    fn live_rows(&self) -> Vec<usize> {
        let mut rows = Vec::with_capacity(self.live);
        for (r, &id) in self.pos_of.iter().enumerate() {
            if self.open[id as usize] {
                rows.push(r);
            }
        }
        rows
    }

    /// Drops the rows of closed positions and renumbers the open ones; returns the new
    /// id of each old one (`u32::MAX`: closed).
    fn compact(&mut self) -> Vec<u32> {
        let rows = self.live_rows();
        self.log.gather_in_place(&rows);
        let mut remap = vec![u32::MAX; self.open.len()];
        let mut next = 0u32;
        for (w, &r) in rows.iter().enumerate() {
            let id = self.pos_of[r] as usize;
            if remap[id] == u32::MAX {
                remap[id] = next;
                next += 1;
            }
            self.pos_of[w] = remap[id];
        }
        self.pos_of.truncate(rows.len());
        self.open.clear();
        self.open.resize(next as usize, true);
        for p in self.by_key.values_mut() {
            p.id = remap[p.id as usize];
        }
        remap
    }

    /// The retained events in arrival order.
    fn export(&self) -> EventColumns {
        if self.live == self.log.len() {
            let mut out = EventColumns::with_capacity(self.live);
            out.extend_from(&self.log, 0..self.live);
            return out;
        }
        self.log.gather(&self.live_rows())
    }

    fn clear(&mut self) {
        self.log.clear();
        self.pos_of.clear();
        self.open.clear();
        self.by_key.clear();
        self.live = 0;
    }
}

/// How a keyed position opened (for the summary of its POSITION_CLOSE).
#[derive(Debug, Clone, Copy)]
struct Opened {
    ts: i64,
    entry_price: f64,
    quantity: Option<f64>,
    /// Events of the position including its close.
    events: u64,
}

impl Opened {
    /// A close without retained events: a one-event position.
    fn lone(e: &Event) -> Opened {
        Opened {
            ts: e.ts,
            entry_price: f64::NAN,
            quantity: None,
            events: 1,
        }
    }
}

/// A lot of the book and, under trade_complete/minimal, its retention.
#[derive(Debug, Clone, Default)]
struct BookLot {
    lot: Lot,
    /// Position id of the lot's retained fills (valid while `retained > 0`).
    id: u32,
    retained: u64,
    /// Keyed positions (key, id) tied to the lot by its fills.
    keys: Vec<(i64, u32)>,
}

impl BookLot {
    /// Drops the lot's retained fills and its keyed positions that are still open.
    fn drop_events(&mut self, p: &mut Positions) {
        if self.retained > 0 {
            p.close_id(self.id, self.retained);
            self.retained = 0;
        }
        for (key, id) in self.keys.drain(..) {
            if p.by_key.get(&key).map(|k| k.id) == Some(id) {
                if let Some(k) = p.by_key.remove(&key) {
                    p.close_id(k.id, k.n_events);
                }
            }
        }
    }

    fn retain(&mut self, e: &Event, p: &mut Positions) {
        if self.retained == 0 {
            self.id = p.new_id();
        }
        p.push_row(e, self.id);
        self.retained += 1;
    }

    /// Applies a moving fill; `p` is the retention under trade_complete/minimal.
    fn fill(&mut self, e: &Event, mut p: Option<&mut Positions>) -> Option<Closed> {
        if let Some(p) = p.as_deref_mut() {
            if e.key >= 0 {
                if let Some(k) = p.by_key.get_mut(&e.key) {
                    if !k.linked {
                        k.linked = true;
                        self.keys.push((e.key, k.id));
                    }
                }
            }
        }
        let outcome = self.lot.apply(e.ts, e.quantity, e.price, e.value);
        let Some(p) = p else {
            return match outcome {
                Outcome::Closed(c) => Some(c),
                Outcome::Added => None,
            };
        };
        match outcome {
            Outcome::Added => {
                self.retain(e, p);
                None
            }
            Outcome::Closed(c) => {
                match c.step {
                    Step::Partial => self.retain(e, p),
                    Step::Flat => self.drop_events(p),
                    Step::Reversed => {
                        self.drop_events(p);
                        self.retain(e, p);
                    }
                }
                Some(c)
            }
        }
    }

    /// New ids after a compaction.
    fn remap(&mut self, remap: &[u32]) {
        let new_id = |id: u32| remap.get(id as usize).copied().unwrap_or(u32::MAX);
        if self.retained > 0 {
            self.id = new_id(self.id);
        }
        self.keys.retain_mut(|(_, id)| {
            *id = new_id(*id);
            *id != u32::MAX
        });
    }
}

/// One open lot of the book (`EventRing::positions`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookPosition {
    pub symbol: i32,
    pub quantity: f64,
    pub avg_price: f64,
    pub open_ts: i64,
    pub n_events: u64,
}

/// One closed-trade summary row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trade {
    pub key: i64,
    pub symbol: i32,
    pub open_ts: i64,
    pub close_ts: i64,
    pub entry_price: f64,
    pub exit_price: f64,
    pub quantity: f64,
    pub pnl: f64,
    pub n_events: i64,
}

#[derive(Debug, Clone)]
enum Store {
    Window(Window),
    Positions(Positions),
}

/// Counters of `EventRing::stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub seen: u64,
    pub retained: u64,
    pub evicted: u64,
    pub retained_bytes: u64,
    pub open_positions: u64,
    pub trades: u64,
}

/// Retained events under one policy, plus closed-trade summaries under trade_complete.
#[derive(Debug, Clone)]
pub struct EventRing {
    policy: Policy,
    capacity: usize,
    max_events: usize,
    store: Store,
    trades: TradeColumns,
    keep_trades: bool,
    book: HashMap<i32, BookLot>,
    realized: Realized,
    seen: u64,
}

impl EventRing {
    /// `capacity` bounds sliding_window, `max_events` bounds keep_all; both must be >= 1.
    pub fn new(policy: Policy, capacity: usize, max_events: usize) -> Result<EventRing, RingError> {
        if capacity < 1 {
            return Err(RingError(format!("capacity must be >= 1, got {capacity}")));
        }
        if max_events < 1 {
            return Err(RingError(format!(
                "max_events must be >= 1, got {max_events}"
            )));
        }
        Ok(EventRing {
            policy,
            capacity,
            max_events,
            store: Self::empty_store(policy, capacity, max_events),
            trades: TradeColumns::default(),
            keep_trades: policy == Policy::TradeComplete,
            book: HashMap::new(),
            realized: Realized::default(),
            seen: 0,
        })
    }

    /// Whether closed-trade summaries are kept (by default under trade_complete only).
    pub fn with_keep_trades(mut self, keep: bool) -> EventRing {
        self.keep_trades = keep;
        self
    }

    pub fn keep_trades(&self) -> bool {
        self.keep_trades
    }

    fn empty_store(policy: Policy, capacity: usize, max_events: usize) -> Store {
        match policy {
            Policy::SlidingWindow => Store::Window(Window::new(capacity)),
            Policy::KeepAll => Store::Window(Window::new(max_events)),
            Policy::TradeComplete | Policy::Minimal => Store::Positions(Positions::default()),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// Retained events.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Window(w) => w.len(),
            Store::Positions(p) => p.live,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one event under the ring's policy.
    #[inline]
    pub fn append(&mut self, e: &Event) {
        self.seen += 1;
        if let Store::Window(w) = &mut self.store {
            w.push(e);
        }
        self.apply(e);
    }

    /// Applies an event (already counted and, under a window policy, stored) to the
    /// book and the keyed positions.
    #[inline]
    fn apply(&mut self, e: &Event) {
        let positions = match &mut self.store {
            Store::Positions(p) => Some(p),
            Store::Window(_) => None,
        };
        if e.kind == FILL && moves(e.quantity) {
            let lot = self.book.entry(e.symbol).or_default();
            if let Some(c) = lot.fill(e, positions) {
                self.realized.record(c.pnl);
                if self.keep_trades {
                    self.push_trade(&Trade {
                        key: e.key,
                        symbol: e.symbol,
                        open_ts: c.open_ts,
                        close_ts: e.ts,
                        entry_price: c.entry_price,
                        exit_price: e.price,
                        quantity: c.quantity,
                        pnl: c.pnl,
                        n_events: c.n_events as i64,
                    });
                }
            }
            self.maybe_compact();
            return;
        }
        if e.key < 0 {
            return;
        }
        let opened = match positions {
            None if e.kind == POSITION_CLOSE => Opened::lone(e),
            None => return,
            Some(p) if e.kind != POSITION_CLOSE => {
                p.retain(e);
                self.maybe_compact();
                return;
            }
            Some(p) => p.close(e),
        };
        // a symbol the book trades counts its trades from its fills
        if !self.book.contains_key(&e.symbol) {
            self.record_close(e, &opened);
        }
        self.maybe_compact();
    }

    fn record_close(&mut self, e: &Event, o: &Opened) {
        self.realized.record(e.value);
        if self.keep_trades {
            self.push_trade(&Trade {
                key: e.key,
                symbol: e.symbol,
                open_ts: o.ts,
                close_ts: e.ts,
                entry_price: o.entry_price,
                exit_price: e.price,
                quantity: o.quantity.unwrap_or(e.quantity),
                pnl: e.value,
                n_events: o.events as i64,
            });
        }
    }

    fn maybe_compact(&mut self) {
        if let Store::Positions(p) = &mut self.store {
            if p.should_compact() {
                let remap = p.compact();
                for lot in self.book.values_mut() {
                    lot.remap(&remap);
                }
            }
        }
    }

    /// Appends every row of `batch` in order, exactly as `append` one by one would.
    pub fn extend(&mut self, batch: &EventBatch<'_>) {
        if let Store::Window(w) = &mut self.store {
            w.extend(batch);
            self.seen += batch.len() as u64;
            for i in 0..batch.len() {
                let kind = batch.kind.get(i);
                if kind == FILL || kind == POSITION_CLOSE {
                    self.apply(&batch.row(i));
                }
            }
            return;
        }
        for i in 0..batch.len() {
            self.append(&batch.row(i));
        }
    }

    /// The book's open lots, by symbol.
    pub fn positions(&self) -> Vec<BookPosition> {
        let mut out: Vec<BookPosition> = self
            .book
            .iter()
            .filter(|(_, b)| b.lot.qty != 0.0)
            .map(|(&symbol, b)| BookPosition {
                symbol,
                quantity: b.lot.qty,
                avg_price: b.lot.avg,
                open_ts: b.lot.open_ts,
                n_events: b.lot.n_events,
            })
            .collect();
        out.sort_by_key(|p| p.symbol);
        out
    }

    /// Counters of every closed trade.
    pub fn realized(&self) -> Realized {
        self.realized
    }

    fn push_trade(&mut self, t: &Trade) {
        let c = &mut self.trades;
        c.key.push(t.key);
        c.symbol.push(t.symbol);
        c.open_ts.push(t.open_ts);
        c.close_ts.push(t.close_ts);
        c.entry_price.push(t.entry_price);
        c.exit_price.push(t.exit_price);
        c.quantity.push(t.quantity);
        c.pnl.push(t.pnl);
        c.n_events.push(t.n_events);
    }

    /// Drops retained events and summaries and resets the counters.
    pub fn clear(&mut self) {
        match &mut self.store {
            Store::Window(w) => w.clear(),
            Store::Positions(p) => p.clear(),
        }
        self.trades.clear();
        self.book.clear();
        self.realized = Realized::default();
        self.seen = 0;
    }

    pub fn stats(&self) -> Stats {
        let retained = self.len() as u64;
        let trades = self.trades.len() as u64;
        let open_positions = match &self.store {
            Store::Window(_) => 0,
            Store::Positions(p) => p.by_key.len() as u64,
        };
        Stats {
            seen: self.seen,
            retained,
            evicted: self.seen - retained,
            retained_bytes: EVENT_BYTES as u64 * retained + TRADE_BYTES as u64 * trades,
            open_positions,
            trades,
        }
    }

    /// A copy of the retained events in arrival order.
    pub fn events(&self) -> EventColumns {
        match &self.store {
            Store::Window(w) => w.export(),
            Store::Positions(p) => p.export(),
        }
    }

    /// The closed-trade summaries (empty unless the policy is trade_complete).
    pub fn trades(&self) -> &TradeColumns {
        &self.trades
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, kind: u16, key: i64) -> Event {
        Event {
            ts,
            kind,
            key,
            symbol: 7,
            price: ts as f64 * 0.5,
            quantity: 2.0,
            value: ts as f64,
        }
    }

    fn ring(policy: &str, capacity: usize, max_events: usize) -> EventRing {
        EventRing::new(Policy::parse(policy).unwrap(), capacity, max_events).unwrap()
    }

    fn ts_of(r: &EventRing) -> Vec<i64> {
        r.events().ts
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(Policy::parse("fifo").unwrap_err().0.contains("'fifo'"));
        let e = EventRing::new(Policy::SlidingWindow, 0, 1).unwrap_err();
        assert!(e.0.contains("capacity"));
        let e = EventRing::new(Policy::KeepAll, 1, 0).unwrap_err();
        assert!(e.0.contains("max_events"));
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()).unwrap(), p);
        }
    }

    #[test]
    fn sliding_window_keeps_the_last_capacity_events() {
        let mut r = ring("sliding_window", 3, 1);
        for t in 0..5 {
            r.append(&ev(t, 1, -1));
        }
        assert_eq!(ts_of(&r), vec![2, 3, 4]);
        let s = r.stats();
        assert_eq!((s.seen, s.retained, s.evicted), (5, 3, 2));
        assert_eq!(s.retained_bytes, 3 * 46);
        assert_eq!((s.open_positions, s.trades), (0, 0));
        assert_eq!(r.events().get(0), ev(2, 1, -1));
    }

    #[test]
    fn keep_all_evicts_the_oldest_past_max_events() {
        let mut r = ring("keep_all", 1, 4);
        for t in 0..6 {
            r.append(&ev(t, 2, 3));
        }
        assert_eq!(ts_of(&r), vec![2, 3, 4, 5]);
        assert_eq!(r.stats().evicted, 2);
    }

    fn batch(ts: &[i64], kind: &[u16]) -> EventBatch<'static> {
        EventBatch::new(Cow::Owned(ts.to_vec()), Cow::Owned(kind.to_vec())).unwrap()
    }

    #[test]
    fn window_extend_matches_appends() {
        for cap in [1usize, 2, 3, 5, 8, 13] {
            for pre in 0..7i64 {
                for n in 0..12i64 {
                    let mut a = ring("sliding_window", cap, 1);
                    let mut b = ring("sliding_window", cap, 1);
                    for t in 0..pre {
                        a.append(&Event::new(t, 1));
                        b.append(&Event::new(t, 1));
                    }
                    let ts: Vec<i64> = (100..100 + n).collect();
                    let kinds: Vec<u16> = (0..n as u16).collect();
                    let mut bt = batch(&ts, &kinds);
                    bt.price = Col::Const(1.5);
                    bt.check_lengths().unwrap();
                    for (t, k) in ts.iter().zip(&kinds) {
                        let mut e = Event::new(*t, *k);
                        e.price = 1.5;
                        a.append(&e);
                    }
                    b.extend(&bt);
                    assert_eq!(a.events(), b.events(), "cap {cap} pre {pre} n {n}");
                    assert_eq!(a.stats(), b.stats());
                }
            }
        }
    }

    #[test]
    fn batch_lengths_are_checked() {
        assert!(EventBatch::new(Cow::Owned(vec![1, 2]), Cow::Owned(vec![1])).is_err());
        let mut b = batch(&[1, 2], &[1, 1]);
        b.key = Col::Values(Cow::Owned(vec![1, 2, 3]));
        let e = b.check_lengths().unwrap_err();
        assert!(e.0.contains("key has 3"), "{e}");
    }

    #[test]
    fn trade_complete_summarises_a_closed_position() {
        let mut r = ring("trade_complete", 1, 1);
        r.append(&ev(1, 1, -1)); // not retained
        r.append(&ev(2, 2, 10)); // signal for key 10: position starts here
        r.append(&Event {
            price: 100.0,
            quantity: 3.0,
            ..ev(3, POSITION_OPEN, 10)
        });
        r.append(&ev(4, 3, 11));
        r.append(&ev(5, 3, 10));
        assert_eq!(ts_of(&r), vec![2, 3, 4, 5]);
        assert_eq!(r.stats().open_positions, 2);
        r.append(&Event {
            symbol: 9,
            price: 110.0,
            quantity: 1.0,
            value: 30.0,
            ..ev(6, POSITION_CLOSE, 10)
        });
        assert_eq!(ts_of(&r), vec![4]);
        let t = r.trades();
        assert_eq!(t.key, vec![10]);
        assert_eq!(t.symbol, vec![9]);
        assert_eq!((t.open_ts[0], t.close_ts[0]), (2, 6));
        assert_eq!((t.entry_price[0], t.exit_price[0]), (100.0, 110.0));
        assert_eq!((t.quantity[0], t.pnl[0], t.n_events[0]), (3.0, 30.0, 4));
        let s = r.stats();
        assert_eq!((s.seen, s.retained, s.evicted), (6, 1, 5));
        assert_eq!((s.open_positions, s.trades), (1, 1));
        assert_eq!(s.retained_bytes, 46 + 68);
    }

    #[test]
    fn close_without_open_has_nan_entry_and_close_quantity() {
        let mut r = ring("trade_complete", 1, 1);
        r.append(&ev(1, 3, 3));
        r.append(&Event {
            quantity: 8.0,
            ..ev(2, POSITION_CLOSE, 3)
        });
        // a lone close is a one-event position
        r.append(&ev(5, POSITION_CLOSE, 4));
        let t = r.trades();
        assert!(t.entry_price[0].is_nan());
        assert_eq!(t.quantity, vec![8.0, 2.0]);
        assert_eq!(t.n_events, vec![2, 1]);
        assert_eq!(t.open_ts, vec![1, 5]);
        // a close with a negative key is only evicted
        r.append(&ev(6, POSITION_CLOSE, -1));
        assert_eq!(r.trades().len(), 2);
        assert_eq!(r.stats().evicted, 4);
    }

    #[test]
    fn a_key_reopens_after_its_close() {
        let mut r = ring("trade_complete", 1, 1);
        r.append(&ev(1, POSITION_OPEN, 1));
        r.append(&ev(2, POSITION_CLOSE, 1));
        r.append(&ev(3, 3, 1));
        r.append(&ev(4, POSITION_CLOSE, 1));
        let t = r.trades();
        assert_eq!(t.open_ts, vec![1, 3]);
        assert!(t.entry_price[1].is_nan());
        assert_eq!(t.n_events, vec![2, 2]);
    }

    #[test]
    fn minimal_keeps_no_summary() {
        let mut r = ring("minimal", 1, 1);
        r.append(&ev(1, POSITION_OPEN, 1));
        r.append(&ev(2, POSITION_OPEN, 2));
        r.append(&ev(3, POSITION_CLOSE, 1));
        assert_eq!(ts_of(&r), vec![2]);
        let s = r.stats();
        assert_eq!((s.trades, s.open_positions, s.evicted), (0, 1, 2));
        assert!(r.trades().is_empty());
    }

    #[test]
    fn compaction_keeps_arrival_order_and_positions() {
        let mut r = ring("trade_complete", 1, 1);
        let mut expect: Vec<i64> = Vec::new();
        let mut t = 0i64;
        // a long-lived position interleaved with many short ones
        for round in 0..3000i64 {
            r.append(&ev(t, 1, 1_000_000));
            expect.push(t);
            t += 1;
            for _ in 0..3 {
                r.append(&ev(t, 3, round));
                t += 1;
            }
            r.append(&ev(t, POSITION_CLOSE, round));
            t += 1;
        }
        assert_eq!(ts_of(&r), expect);
        r.append(&ev(t, POSITION_CLOSE, 1_000_000));
        assert!(r.is_empty());
        let tr = r.trades();
        assert_eq!(tr.len(), 3001);
        assert_eq!(tr.n_events[3000], 3001);
        assert_eq!(tr.open_ts[3000], 0);
        assert_eq!(r.stats().open_positions, 0);
    }

    #[test]
    fn extend_matches_appends_under_positions() {
        let ts: Vec<i64> = (0..500).collect();
        let kinds: Vec<u16> = (0..500).map(|i| [1, 5, 4, 6][i % 4]).collect();
        let keys: Vec<i64> = (0..500).map(|i| (i as i64 / 3) % 7 - 1).collect();
        for policy in ["trade_complete", "minimal", "keep_all"] {
            let mut a = ring(policy, 1, 64);
            let mut b = ring(policy, 1, 64);
            let mut bt = batch(&ts, &kinds);
            bt.key = Col::Values(Cow::Borrowed(&keys));
            b.extend(&bt);
            for i in 0..500 {
                let mut e = Event::new(ts[i], kinds[i]);
                e.key = keys[i];
                a.append(&e);
            }
            assert_eq!(a.events(), b.events());
            // NaN entry prices: compare the printed form
            assert_eq!(format!("{:?}", a.trades()), format!("{:?}", b.trades()));
            assert_eq!(a.stats(), b.stats());
        }
    }

    #[test]
    fn clear_resets_everything() {
        for p in Policy::ALL {
            let mut r = EventRing::new(p, 2, 2).unwrap();
            r.append(&ev(1, POSITION_OPEN, 1));
            r.append(&ev(2, POSITION_CLOSE, 1));
            r.append(&ev(3, 1, 2));
            r.clear();
            assert_eq!(r.stats(), Stats::default());
            assert!(r.events().is_empty());
            r.append(&ev(4, 1, 2));
            assert_eq!(ts_of(&r), vec![4]);
        }
    }

    fn fill(ts: i64, key: i64, symbol: i32, price: f64, quantity: f64) -> Event {
        Event {
            ts,
            kind: FILL,
            key,
            symbol,
            price,
            quantity,
            value: 0.0,
        }
    }

    #[test]
    fn fills_close_trades_and_flat_lots_drop_their_events() {
        let mut r = ring("trade_complete", 1, 1);
        r.append(&ev(1, 3, 20)); // an order of key 20
        r.append(&fill(2, 20, 1, 10.0, 100.0)); // opens 100 long, ties key 20 to the lot
        r.append(&fill(3, 21, 1, 12.0, 100.0)); // adds: average 11
        r.append(&fill(4, -1, 2, 50.0, -10.0)); // a short in symbol 2
        assert_eq!(ts_of(&r), vec![1, 2, 3, 4]);
        r.append(&fill(5, 22, 1, 15.0, -50.0)); // partial close at the average entry
        assert_eq!(ts_of(&r), vec![1, 2, 3, 4, 5]);
        r.append(&fill(6, 23, 1, 9.0, -150.0)); // flat: the lot's events and key 20 go
        assert_eq!(ts_of(&r), vec![4]);
        let t = r.trades();
        assert_eq!(t.quantity, vec![50.0, 150.0]);
        assert_eq!(t.entry_price, vec![11.0, 11.0]);
        assert_eq!(t.pnl, vec![200.0, -300.0]);
        assert_eq!(t.n_events, vec![3, 4]);
        assert_eq!((t.open_ts[1], t.close_ts[1], t.key[1]), (2, 6, 23));
        let pos = r.positions();
        assert_eq!(pos.len(), 1);
        assert_eq!(
            (pos[0].symbol, pos[0].quantity, pos[0].avg_price),
            (2, -10.0, 50.0)
        );
        let real = r.realized();
        assert_eq!((real.trades, real.winning, real.losing), (2, 1, 1));
        assert_eq!(
            (real.pnl, real.gross_profit, real.gross_loss),
            (-100.0, 200.0, 300.0)
        );
    }

    #[test]
    fn a_reversal_keeps_only_the_new_lot() {
        let mut r = ring("minimal", 1, 1);
        r.append(&fill(1, 0, 5, 50.0, -10.0));
        r.append(&fill(2, 1, 5, 40.0, 30.0));
        assert_eq!(ts_of(&r), vec![2]);
        assert!(r.trades().is_empty());
        let pos = r.positions();
        assert_eq!(
            (pos[0].quantity, pos[0].avg_price, pos[0].open_ts),
            (20.0, 40.0, 2)
        );
        assert_eq!(r.realized().pnl, 100.0);
    }

    #[test]
    fn a_close_of_a_traded_symbol_is_not_a_second_trade() {
        for policy in ["trade_complete", "sliding_window"] {
            let mut r = ring(policy, 10, 1).with_keep_trades(true);
            r.append(&fill(1, 7, 3, 10.0, 1.0));
            r.append(&Event {
                price: 10.0,
                quantity: 1.0,
                ..ev(1, POSITION_OPEN, 7)
            });
            r.append(&fill(2, 7, 3, 11.0, -1.0));
            r.append(&Event {
                symbol: 3,
                value: 1.0,
                ..ev(2, POSITION_CLOSE, 7)
            });
            // another symbol without fills: its close is a trade
            r.append(&Event {
                symbol: 4,
                value: -2.0,
                ..ev(3, POSITION_CLOSE, 8)
            });
            assert_eq!(r.trades().pnl, vec![1.0, -2.0], "{policy}");
            assert_eq!(r.realized().trades, 2);
            if policy == "trade_complete" {
                assert!(r.is_empty());
            }
        }
    }

    #[test]
    fn many_round_trips_stay_bounded() {
        let mut r = ring("trade_complete", 1, 1);
        let mut t = 0;
        for k in 0..5000i64 {
            let sym = (k % 3) as i32;
            let side = if k % 2 == 0 { 1.0 } else { -1.0 };
            r.append(&ev(t, 3, k));
            r.append(&fill(t + 1, k, sym, 100.0, side * 5.0));
            r.append(&fill(t + 2, k, sym, 101.0, -side * 5.0));
            t += 3;
        }
        r.append(&fill(t, 9999, 1, 1.0, 2.0)); // one open position
        assert_eq!(ts_of(&r), vec![t]);
        let s = r.stats();
        assert_eq!((s.seen, s.retained, s.trades), (15001, 1, 5000));
        assert_eq!(r.realized().winning, 2500);
    }
}
