//! The reference backtest kernel: SMA crossover signals, the next-open-fill portfolio
//! simulation, its position events and the summary of its equity curve.
//!
//! It computes exactly what `phasekit/backtest/strategies.py` and
//! `phasekit/backtest/portfolio.py` compute (same operations in the same order, so the
//! same bits): a target position decided on the close of bar `t` fills at the open of
//! bar `t + 1`, adjusted by slippage against the trader and charged a commission, both
//! in basis points; size is `fraction` of cash at the fill (whole units optionally);
//! equity is marked to market at every bar close.

use std::fmt;

/// Event kinds of `phasekit.events.EventType`.
pub const FILL: u16 = 4;
pub const POSITION_OPEN: u16 = 5;
pub const POSITION_CLOSE: u16 = 6;

#[derive(Debug, Clone, PartialEq)]
pub enum BacktestError {
    /// A setting out of its range: (name, value, what is allowed).
    Setting(&'static str, f64, &'static str),
    /// SMA windows that are not `1 <= fast < slow`.
    Windows(i64, i64),
    /// A target value other than -1, 0 or 1 at this bar.
    Target(usize, i64),
    /// Columns of unequal lengths: (what, its length, bars).
    Length(&'static str, usize, usize),
    /// `start..stop` not inside the bars.
    Span(usize, usize, usize),
}

impl fmt::Display for BacktestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BacktestError::Setting(name, value, allowed) => {
                write!(f, "portfolio.{name}: {value} must be {allowed}")
            }
            BacktestError::Windows(fast, slow) if *fast < 1 || *slow < 1 => {
                write!(
                    f,
                    "strategy: fast={fast} and slow={slow} must be at least 1"
                )
            }
            BacktestError::Windows(fast, slow) => {
                write!(
                    f,
                    "strategy: fast ({fast}) must be smaller than slow ({slow})"
                )
            }
            BacktestError::Target(bar, value) => write!(
                f,
                "strategy returned target {value} at bar {bar}; allowed: -1, 0, 1"
            ),
            BacktestError::Length(what, len, bars) => {
                write!(f, "strategy returned {len} {what} for {bars} bars")
            }
            BacktestError::Span(start, stop, bars) => write!(
                f,
                "window {start}..{stop} is not inside the {bars} bars (need start < stop <= bars)"
            ),
        }
    }
}

impl std::error::Error for BacktestError {}

/// Portfolio settings (`phasekit.backtest.portfolio.PortfolioSettings`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub initial_capital: f64,
    pub fraction: f64,
    pub whole_units: bool,
    pub commission_bps: f64,
    pub slippage_bps: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            initial_capital: 100_000.0,
            fraction: 1.0,
            whole_units: false,
            commission_bps: 0.0,
            slippage_bps: 0.0,
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), BacktestError> {
        if self.initial_capital.is_nan() || self.initial_capital <= 0.0 {
            return Err(BacktestError::Setting(
                "initial_capital",
                self.initial_capital,
                "> 0",
            ));
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(BacktestError::Setting(
                "fraction",
                self.fraction,
                "in (0, 1]",
            ));
        }
        if self.commission_bps.is_nan() || self.commission_bps < 0.0 {
            return Err(BacktestError::Setting(
                "commission_bps",
                self.commission_bps,
                ">= 0",
            ));
        }
        if self.slippage_bps.is_nan() || self.slippage_bps < 0.0 {
            return Err(BacktestError::Setting(
                "slippage_bps",
                self.slippage_bps,
                ">= 0",
            ));
        }
        Ok(())
    }
}

/// Simple moving average; NaN for the first `window - 1` values. Differences of one
/// running sum, as numpy's `cumsum` computes it.
pub fn sma(values: &[f64], window: usize) -> Vec<f64> {
    sma_of_sums(&running_sum(values), window)
}

/// [`sma`] of the values whose [`running_sum`] is `csum` (so averages of several windows
/// share one running sum).
pub(crate) fn sma_of_sums(csum: &[f64], window: usize) -> Vec<f64> {
    let n = csum.len().saturating_sub(1);
    let mut out = vec![f64::NAN; n];
    if window == 0 || window > n {
        return out;
    }
    let w = window as f64;
    for (o, (hi, lo)) in out[window - 1..]
        .iter_mut()
        .zip(csum[window..].iter().zip(csum.iter()))
    {
        *o = (hi - lo) / w;
    }
    out
}

/// 0 and the running sums of `values` (numpy's `cumsum` with a leading 0).
pub(crate) fn running_sum(values: &[f64]) -> Vec<f64> {
    let mut csum = Vec::with_capacity(values.len() + 1);
    let mut acc = 0.0;
    csum.push(acc);
    for v in values {
        acc += v;
        csum.push(acc);
    }
    csum
}

/// Targets of the SMA crossover (the averages of [`sma`]): +1 from a cross above (the
/// fast SMA strictly below the slow one on the previous bar and strictly above on this
/// one), 0 or -1 (`long_short`) from a cross below, else the previous state (initially 0).
pub fn sma_crossover(
    close: &[f64],
    fast: i64,
    slow: i64,
    long_short: bool,
) -> Result<Vec<i8>, BacktestError> {
    let mut cross = Crossover::new(fast, slow, long_short)?;
    Ok(close.iter().map(|c| cross.push(*c)).collect())
}

/// [`sma_crossover`] one close at a time, in O(slow) memory: the running sum's last
/// `slow + 1` values sit in a ring, so both averages are the ones [`sma`] computes.
#[derive(Debug, Clone)]
pub struct Crossover {
    fast: usize,
    slow: usize,
    down: i8,
    sums: Vec<f64>,
    head: usize,
    acc: f64,
    seen: usize,
    prev: (f64, f64),
    state: i8,
}

impl Crossover {
    pub fn new(fast: i64, slow: i64, long_short: bool) -> Result<Self, BacktestError> {
        if fast < 1 || slow < 1 || fast >= slow {
            return Err(BacktestError::Windows(fast, slow));
        }
        let slow_n = slow as usize;
        Ok(Crossover {
            fast: fast as usize,
            slow: slow_n,
            down: if long_short { -1 } else { 0 },
            sums: vec![0.0; slow_n + 1],
            head: 0,
            acc: 0.0,
            seen: 0,
            prev: (f64::NAN, f64::NAN),
            state: 0,
        })
    }

    /// The target decided on the close of the next bar.
    pub fn push(&mut self, close: f64) -> i8 {
        let ring = self.sums.len();
        self.acc += close;
        self.seen += 1;
        // the running sum over the first `seen` closes sits at index seen % ring
        self.head += 1;
        if self.head == ring {
            self.head = 0;
        }
        self.sums[self.head] = self.acc;
        if self.seen >= self.slow {
            let back = |w: usize| {
                let at = self.head + ring - w;
                self.sums[if at >= ring { at - ring } else { at }]
            };
            let f = (self.acc - back(self.fast)) / self.fast as f64;
            let s = (self.acc - back(self.slow)) / self.slow as f64;
            let (f_prev, s_prev) = self.prev;
            // NaN (no previous averages yet) compares false, as in numpy
            if f_prev < s_prev && f > s {
                self.state = 1;
            } else if f_prev > s_prev && f < s {
                self.state = self.down;
            }
            self.prev = (f, s);
        }
        self.state
    }
}

/// Checks that every target is -1, 0 or 1.
pub fn check_targets<T: Copy + Into<i64>>(target: &[T]) -> Result<(), BacktestError> {
    for (bar, v) in target.iter().enumerate() {
        let v: i64 = (*v).into();
        if !(-1..=1).contains(&v) {
            return Err(BacktestError::Target(bar, v));
        }
    }
    Ok(())
}

/// One executed order: bar index (in the simulated window), signed quantity, price,
/// commission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fill {
    pub bar: usize,
    pub quantity: f64,
    pub price: f64,
    pub commission: f64,
}

/// Closed trades as columns (`TRADE_COLUMNS` of portfolio.py).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trades {
    pub entry_ts: Vec<i64>,
    pub exit_ts: Vec<i64>,
    pub entry_price: Vec<f64>,
    pub exit_price: Vec<f64>,
    pub direction: Vec<i8>,
    pub quantity: Vec<f64>,
    pub pnl: Vec<f64>,
    pub ret: Vec<f64>,
    pub bars_held: Vec<i64>,
}

impl Trades {
    pub fn len(&self) -> usize {
        self.pnl.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pnl.is_empty()
    }
}

/// What a simulation produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Simulation {
    /// Equity at each bar close.
    pub equity: Vec<f64>,
    /// Signed quantity held at each bar close.
    pub position: Vec<f64>,
    pub fills: Vec<Fill>,
    pub trades: Trades,
}

/// Runs `target` (one value in {-1, 0, 1} per bar) over the bars `ts`, `open`, `close`.
/// A position still open after the last bar counts in equity but not among trades.
pub fn simulate(
    ts: &[i64],
    open: &[f64],
    close: &[f64],
    target: &[i8],
    settings: &Settings,
) -> Result<Simulation, BacktestError> {
    let n = close.len();
    if target.len() != n {
        return Err(BacktestError::Length("signals", target.len(), n));
    }
    run(
        ts,
        open,
        close,
        0,
        n,
        Signal::Targets(target),
        settings,
        true,
    )
    .map(|(sim, _)| sim)
}

/// Where the targets of [`run`] come from.
#[derive(Debug, Clone, Copy)]
pub enum Signal<'a> {
    /// An SMA crossover (fast, slow, long_short) over the closes.
    Sma(i64, i64, bool),
    /// Given targets, one per bar.
    Targets(&'a [i8]),
}

/// Signals over bars `[0, stop)`, positions inside `[start, stop)` (the window's first
/// bar only decides: its position starts flat); returns the window's simulation (equity
/// and position per bar only with `curves`) and the summary of its equity.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ts: &[i64],
    open: &[f64],
    close: &[f64],
    start: usize,
    stop: usize,
    signal: Signal<'_>,
    settings: &Settings,
    curves: bool,
) -> Result<(Simulation, EquitySummary), BacktestError> {
    settings.validate()?;
    let n = close.len();
    if ts.len() != n {
        return Err(BacktestError::Length("timestamps", ts.len(), n));
    }
    if open.len() != n {
        return Err(BacktestError::Length("opens", open.len(), n));
    }
    if start >= stop || stop > n {
        return Err(BacktestError::Span(start, stop, n));
    }
    let window = &ts[start..stop];
    let mut sim = Simulator::new(window, settings, curves);
    let mut step = |i: usize, decided: i8| {
        if i >= start {
            sim.bar(i - start, open[i], close[i]);
            sim.decide(decided);
        }
    };
    match signal {
        Signal::Sma(fast, slow, short) => {
            let mut cross = Crossover::new(fast, slow, short)?;
            for (i, c) in close[..stop].iter().enumerate() {
                let decided = cross.push(*c);
                step(i, decided);
            }
        }
        Signal::Targets(target) => {
            if target.len() < stop {
                return Err(BacktestError::Length("signals", target.len(), n));
            }
            check_targets(&target[..stop])?;
            for (i, t) in target[..stop].iter().enumerate().skip(start) {
                step(i, *t);
            }
        }
    }
    Ok(sim.finish())
}

/// Cash and position of one portfolio: [`Account::fill`] turns a change of target into
/// its fills (a close, then an open), with the arithmetic of portfolio.py.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Account {
    slip: f64,
    comm: f64,
    fraction: f64,
    whole_units: bool,
    pub(crate) cash: f64,
    pub(crate) qty: f64,
    /// bar, price, signed quantity, commission of the open position
    entry: Option<(usize, f64, f64, f64)>,
}

/// A position closed by [`Account::fill`]: its entry (bar, price, signed quantity,
/// commission) and its exit fill.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed {
    pub(crate) entry: (usize, f64, f64, f64),
    pub(crate) exit: Fill,
    pub(crate) pnl: f64,
}

impl Account {
    pub(crate) fn new(settings: &Settings) -> Self {
        Account {
            slip: settings.slippage_bps / 1e4,
            comm: settings.commission_bps / 1e4,
            fraction: settings.fraction,
            whole_units: settings.whole_units,
            cash: settings.initial_capital,
            qty: 0.0,
            entry: None,
        }
    }

    /// Fills the target `want` at `open_px` on `bar`: closes the open position (if any),
    /// then opens `want` (if not flat and cash buys some).
    pub(crate) fn fill(
        &mut self,
        bar: usize,
        want: i8,
        open_px: f64,
    ) -> (Option<Closed>, Option<Fill>) {
        let (slip, comm) = (self.slip, self.comm);
        let mut closed = None;
        if self.qty != 0.0 {
            if let Some(entry) = self.entry.take() {
                let (_, e_px, e_qty, e_fee) = entry;
                let qty = self.qty;
                let side = if qty > 0.0 { 1.0 } else { -1.0 };
                let px = open_px * (1.0 - side * slip);
                let fee = qty.abs() * px * comm;
                self.cash += qty * px - fee;
                let pnl = e_qty * (px - e_px) - e_fee - fee;
                let exit = Fill {
                    bar,
                    quantity: -qty,
                    price: px,
                    commission: fee,
                };
                closed = Some(Closed { entry, exit, pnl });
                self.qty = 0.0;
            }
        }
        let mut opened = None;
        if want != 0 {
            let w = f64::from(want);
            let px = open_px * (1.0 + w * slip);
            let mut size = self.fraction * self.cash / (px * (1.0 + comm));
            if self.whole_units {
                size = size.floor();
            }
            if size > 0.0 {
                let q = w * size;
                let fee = size * px * comm;
                self.cash -= q * px + fee;
                self.qty = q;
                self.entry = Some((bar, px, q, fee));
                opened = Some(Fill {
                    bar,
                    quantity: q,
                    price: px,
                    commission: fee,
                });
            }
        }
        (closed, opened)
    }
}

impl Trades {
    /// Appends the trades of `other`.
    pub fn append(&mut self, other: &Trades) {
        self.entry_ts.extend_from_slice(&other.entry_ts);
        self.exit_ts.extend_from_slice(&other.exit_ts);
        self.entry_price.extend_from_slice(&other.entry_price);
        self.exit_price.extend_from_slice(&other.exit_price);
        self.direction.extend_from_slice(&other.direction);
        self.quantity.extend_from_slice(&other.quantity);
        self.pnl.extend_from_slice(&other.pnl);
        self.ret.extend_from_slice(&other.ret);
        self.bars_held.extend_from_slice(&other.bars_held);
    }

    /// Appends a closed position (`ts`: the window's timestamps).
    pub(crate) fn push(&mut self, ts: &[i64], c: &Closed) {
        let (e_bar, e_px, e_qty, _) = c.entry;
        let side = if c.exit.quantity < 0.0 { 1i8 } else { -1i8 };
        self.entry_ts.push(ts[e_bar]);
        self.exit_ts.push(ts[c.exit.bar]);
        self.entry_price.push(e_px);
        self.exit_price.push(c.exit.price);
        self.direction.push(side);
        self.quantity.push(e_qty.abs());
        self.pnl.push(c.pnl);
        self.ret.push(c.pnl / (e_qty.abs() * e_px));
        self.bars_held.push((c.exit.bar - e_bar) as i64);
    }
}

/// The portfolio of one window, bar by bar: [`Simulator::bar`] fills the previous
/// decision at the bar's open and marks equity at its close; [`Simulator::decide`]
/// records the decision taken on that close.
struct Simulator<'a> {
    ts: &'a [i64],
    account: Account,
    /// the decision of the previous bar (None before the first)
    decided: Option<i8>,
    held: i8,
    curves: bool,
    sim: Simulation,
    fold: Fold,
}

impl<'a> Simulator<'a> {
    fn new(ts: &'a [i64], settings: &Settings, curves: bool) -> Self {
        let cap = if curves { ts.len() } else { 0 };
        Simulator {
            ts,
            account: Account::new(settings),
            decided: None,
            held: 0,
            curves,
            sim: Simulation {
                equity: Vec::with_capacity(cap),
                position: Vec::with_capacity(cap),
                ..Simulation::default()
            },
            fold: Fold::new(settings.initial_capital, settings.initial_capital),
        }
    }

    fn bar(&mut self, bar: usize, open: f64, close: f64) {
        if let Some(want) = self.decided {
            if want != self.held {
                let (closed, opened) = self.account.fill(bar, want, open);
                if let Some(c) = closed {
                    self.sim.trades.push(self.ts, &c);
                    self.sim.fills.push(c.exit);
                }
                if let Some(f) = opened {
                    self.sim.fills.push(f);
                }
            }
            self.held = want;
        }
        let qty = self.account.qty;
        let equity = self.account.cash + qty * close;
        self.fold.push(equity, qty);
        if self.curves {
            self.sim.position.push(qty);
            self.sim.equity.push(equity);
        }
    }

    fn decide(&mut self, want: i8) {
        self.decided = Some(want);
    }

    fn finish(self) -> (Simulation, EquitySummary) {
        (self.sim, self.fold.finish())
    }
}

/// Event columns (`phasekit.events` layout without the symbol column).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    pub ts: Vec<i64>,
    pub kind: Vec<u16>,
    pub key: Vec<i64>,
    pub price: Vec<f64>,
    pub quantity: Vec<f64>,
    pub value: Vec<f64>,
}

impl Events {
    fn push(&mut self, ts: i64, kind: u16, key: i64, price: f64, quantity: f64, value: f64) {
        self.ts.push(ts);
        self.kind.push(kind);
        self.key.push(key);
        self.price.push(price);
        self.quantity.push(quantity);
        self.value.push(value);
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// FILL, POSITION_OPEN and POSITION_CLOSE events of a simulation in time order. `key`
/// numbers the positions (the index of the trade); a close carries the trade's pnl in
/// `value`, a fill its commission as a negative `value`.
pub fn position_events(ts: &[i64], sim: &Simulation) -> Events {
    let mut ev = Events::default();
    let mut open_key: Option<i64> = None;
    let mut next_key = 0i64;
    for f in &sim.fills {
        let t = ts[f.bar];
        match open_key {
            None => {
                let key = next_key;
                next_key += 1;
                open_key = Some(key);
                ev.push(t, FILL, key, f.price, f.quantity, -f.commission);
                ev.push(t, POSITION_OPEN, key, f.price, f.quantity, 0.0);
            }
            Some(key) => {
                let pnl = sim
                    .trades
                    .pnl
                    .get(key as usize)
                    .copied()
                    .unwrap_or(f64::NAN);
                ev.push(t, FILL, key, f.price, f.quantity, -f.commission);
                ev.push(t, POSITION_CLOSE, key, f.price, -f.quantity, pnl);
                open_key = None;
            }
        }
    }
    ev
}

/// What a streaming metrics tracer folds from a run of equity values: the count, mean and
/// sum of squared deviations of the simple returns, the sum of squared negative returns,
/// the running peak, the worst drawdown, the last equity and the bars with a position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EquitySummary {
    pub n: usize,
    pub mean: f64,
    pub m2: f64,
    pub down_sq: f64,
    pub peak: f64,
    pub max_drawdown: f64,
    pub last: f64,
    pub bars_in_market: usize,
}

/// The summary of `equity` continuing from a previous equity `last` and running `peak`.
pub fn equity_summary(equity: &[f64], position: &[f64], last: f64, peak: f64) -> EquitySummary {
    let mut fold = Fold::new(last, peak);
    for (i, e) in equity.iter().enumerate() {
        fold.push(*e, position.get(i).copied().unwrap_or(0.0));
    }
    fold.finish()
}

/// [`EquitySummary`] in one pass: the squared deviations come from sums shifted by the
/// first return, which keeps them exact for constant returns and accurate otherwise.
#[derive(Debug, Clone, Copy)]
struct Fold {
    n: usize,
    last: f64,
    shift: f64,
    sum: f64,
    sum_sq: f64,
    down_sq: f64,
    peak: f64,
    mdd: f64,
    in_market: usize,
}

impl Fold {
    fn new(last: f64, peak: f64) -> Self {
        Fold {
            n: 0,
            last,
            shift: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            down_sq: 0.0,
            peak,
            mdd: 0.0,
            in_market: 0,
        }
    }

    fn push(&mut self, equity: f64, position: f64) {
        let r = equity / self.last - 1.0;
        if self.n == 0 {
            self.shift = r;
        }
        self.n += 1;
        let d = r - self.shift;
        self.sum += d;
        self.sum_sq += d * d;
        let neg = r.min(0.0);
        self.down_sq += neg * neg;
        self.peak = self.peak.max(equity);
        self.mdd = self.mdd.min(equity / self.peak - 1.0);
        self.last = equity;
        if position != 0.0 {
            self.in_market += 1;
        }
    }

    fn finish(&self) -> EquitySummary {
        let n = self.n as f64;
        let (mean, m2) = if self.n > 0 {
            (
                self.shift + self.sum / n,
                (self.sum_sq - self.sum * self.sum / n).max(0.0),
            )
        } else {
            (0.0, 0.0)
        };
        EquitySummary {
            n: self.n,
            mean,
            m2,
            down_sq: self.down_sq,
            peak: self.peak,
            max_drawdown: self.mdd,
            last: self.last,
            bars_in_market: self.in_market,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(close: &[f64]) -> (Vec<i64>, Vec<f64>) {
        let ts = (0..close.len() as i64).map(|i| i * 60).collect();
        // opens: the previous close (first: the first close)
        let mut open = vec![close[0]];
        open.extend_from_slice(&close[..close.len() - 1]);
        (ts, open)
    }

    #[test]
    fn sma_matches_definition() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        let s = sma(&v, 3);
        assert!(s[0].is_nan() && s[1].is_nan());
        assert_eq!(&s[2..], &[2.0, 3.0, 4.0]);
        assert!(sma(&v, 6).iter().all(|x| x.is_nan()));
    }

    #[test]
    fn crossover_needs_strict_cross() {
        // fast(1) vs slow(2): up-cross at 2, down-cross at 5
        let close = [5.0, 4.0, 6.0, 7.0, 8.0, 3.0, 3.0];
        let long = sma_crossover(&close, 1, 2, false).unwrap();
        assert_eq!(long, vec![0, 0, 1, 1, 1, 0, 0]);
        let short = sma_crossover(&close, 1, 2, true).unwrap();
        assert_eq!(short, vec![0, 0, 1, 1, 1, -1, -1]);
        // touching (7 == sma 7) is not crossing: the long position stays
        let touch = [5.0, 4.0, 6.0, 7.0, 7.0, 3.0, 3.0];
        let held = sma_crossover(&touch, 1, 2, true).unwrap();
        assert_eq!(held, vec![0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(
            sma_crossover(&close, 2, 2, true),
            Err(BacktestError::Windows(2, 2))
        );
        assert_eq!(
            sma_crossover(&close, 0, 2, true),
            Err(BacktestError::Windows(0, 2))
        );
    }

    #[test]
    fn crossover_equals_the_averages_compared_bar_by_bar() {
        let mut x = 7u64;
        let mut price = 100.0;
        let close: Vec<f64> = (0..3000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                price *= 1.0 + ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.02;
                price
            })
            .collect();
        for (fast, slow) in [(1, 2), (2, 60), (13, 14), (50, 2999), (5, 3001)] {
            let (f, s) = (sma(&close, fast), sma(&close, slow));
            let mut state = 0i8;
            let mut want = vec![0i8; close.len()];
            for i in 1..close.len() {
                if f[i - 1] < s[i - 1] && f[i] > s[i] {
                    state = 1;
                } else if f[i - 1] > s[i - 1] && f[i] < s[i] {
                    state = -1;
                }
                want[i] = state;
            }
            let got = sma_crossover(&close, fast as i64, slow as i64, true).unwrap();
            assert_eq!(got, want, "fast {fast} slow {slow}");
        }
    }

    #[test]
    fn run_over_a_window_equals_simulate_of_its_slice() {
        let close: Vec<f64> = (0..400)
            .map(|i| 100.0 + (i as f64 * 0.07).sin() * 5.0 + (i as f64 * 0.013).cos())
            .collect();
        let (ts, open) = bars(&close);
        let s = Settings {
            commission_bps: 3.0,
            slippage_bps: 1.0,
            ..Settings::default()
        };
        let target = sma_crossover(&close, 3, 17, true).unwrap();
        let (start, stop) = (120, 350);
        let want = simulate(
            &ts[start..stop],
            &open[start..stop],
            &close[start..stop],
            &target[start..stop],
            &s,
        )
        .unwrap();
        let (got, summary) = run(
            &ts,
            &open,
            &close,
            start,
            stop,
            Signal::Sma(3, 17, true),
            &s,
            true,
        )
        .unwrap();
        assert_eq!(got, want);
        assert!(!want.trades.is_empty());
        let (lean, lean_summary) = run(
            &ts,
            &open,
            &close,
            start,
            stop,
            Signal::Targets(&target),
            &s,
            false,
        )
        .unwrap();
        assert!(lean.equity.is_empty() && lean.position.is_empty());
        assert_eq!((lean.fills, lean.trades), (want.fills, want.trades));
        assert_eq!(lean_summary, summary);
        let reference = equity_summary(&want.equity, &want.position, 1e5, 1e5);
        assert_eq!(summary, reference);
        assert_eq!(
            run(
                &ts,
                &open,
                &close,
                5,
                5,
                Signal::Targets(&target),
                &s,
                false
            ),
            Err(BacktestError::Span(5, 5, 400))
        );
    }

    #[test]
    fn hand_computed_round_trip() {
        let close = [10.0, 11.0, 12.0, 13.0, 12.0];
        let open = [10.0, 10.5, 11.5, 12.5, 12.5];
        let ts = [0, 1, 2, 3, 4];
        let target = [1, 1, 0, 0, 0];
        let s = Settings {
            initial_capital: 1000.0,
            ..Settings::default()
        };
        let sim = simulate(&ts, &open, &close, &target, &s).unwrap();
        // buys at open[1] = 10.5, all cash: qty = 1000 / 10.5; sells at open[3] = 12.5
        let q = 1000.0 / 10.5;
        assert_eq!(sim.fills.len(), 2);
        assert_eq!(
            sim.fills[0],
            Fill {
                bar: 1,
                quantity: q,
                price: 10.5,
                commission: 0.0
            }
        );
        assert_eq!(sim.trades.len(), 1);
        assert_eq!(sim.trades.bars_held, vec![2]);
        assert_eq!(sim.trades.pnl[0], q * (12.5 - 10.5));
        assert_eq!(sim.position, vec![0.0, q, q, 0.0, 0.0]);
        assert_eq!(sim.equity[0], 1000.0);
        assert_eq!(sim.equity[2], (1000.0 - q * 10.5) + q * 12.0);
        let ev = position_events(&ts, &sim);
        assert_eq!(ev.kind, vec![FILL, POSITION_OPEN, FILL, POSITION_CLOSE]);
        assert_eq!(ev.key, vec![0, 0, 0, 0]);
        assert_eq!(ev.value[3], sim.trades.pnl[0]);
    }

    #[test]
    fn reversal_closes_then_opens_with_costs() {
        let close = [10.0, 10.0, 10.0, 10.0, 10.0];
        let (ts, open) = bars(&close);
        let s = Settings {
            initial_capital: 1000.0,
            commission_bps: 10.0,
            slippage_bps: 5.0,
            ..Settings::default()
        };
        let sim = simulate(&ts, &open, &close, &[1, -1, -1, 0, 0], &s).unwrap();
        assert_eq!(sim.fills.len(), 4);
        assert_eq!(sim.trades.direction, vec![1, -1]);
        assert!(sim.trades.pnl.iter().all(|p| *p < 0.0)); // costs only
        let ev = position_events(&ts, &sim);
        assert_eq!(ev.key, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(*sim.position.last().unwrap(), 0.0);
    }

    #[test]
    fn whole_units_and_open_position_at_end() {
        let close = [10.0, 30.0, 30.0];
        let (ts, open) = bars(&close);
        let s = Settings {
            initial_capital: 100.0,
            whole_units: true,
            ..Settings::default()
        };
        let sim = simulate(&ts, &open, &close, &[1, 1, 1], &s).unwrap();
        assert_eq!(sim.fills[0].quantity, 10.0);
        assert!(sim.trades.is_empty());
        assert_eq!(sim.equity, vec![100.0, 300.0, 300.0]);
        // too little cash for one unit: no fill at all
        let poor = Settings {
            initial_capital: 5.0,
            ..s
        };
        let sim = simulate(&ts, &open, &close, &[1, 1, 1], &poor).unwrap();
        assert!(sim.fills.is_empty());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let s = Settings::default();
        let r = simulate(&[0, 1], &[1.0, 1.0], &[1.0, 1.0], &[0, 2], &s);
        assert_eq!(r, Err(BacktestError::Target(1, 2)));
        let r = simulate(&[0, 1], &[1.0, 1.0], &[1.0, 1.0], &[0], &s);
        assert_eq!(r, Err(BacktestError::Length("signals", 1, 2)));
        let bad = Settings { fraction: 1.5, ..s };
        assert!(matches!(
            simulate(&[0], &[1.0], &[1.0], &[0], &bad),
            Err(BacktestError::Setting("fraction", _, _))
        ));
        assert!(BacktestError::Windows(5, 3).to_string().contains("smaller"));
    }

    #[test]
    fn summary_folds_returns_and_drawdown() {
        let eq = [110.0, 99.0, 121.0];
        let s = equity_summary(&eq, &[1.0, 0.0, 2.0], 100.0, 100.0);
        let rets = [0.1f64, 99.0 / 110.0 - 1.0, 121.0 / 99.0 - 1.0];
        let mean = rets.iter().sum::<f64>() / 3.0;
        assert_eq!(s.n, 3);
        assert!((s.mean - mean).abs() < 1e-15);
        let m2: f64 = rets.iter().map(|r| (r - mean) * (r - mean)).sum();
        assert!((s.m2 - m2).abs() < 1e-15);
        assert!((s.max_drawdown - (99.0 / 110.0 - 1.0)).abs() < 1e-15);
        assert_eq!(s.peak, 121.0);
        assert_eq!(s.last, 121.0);
        assert_eq!(s.bars_in_market, 2);
        let empty = equity_summary(&[], &[], 50.0, 60.0);
        assert_eq!((empty.n, empty.last, empty.peak), (0, 50.0, 60.0));
    }
}
