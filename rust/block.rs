//! A block of parameter sets over one window of bars in one call.
//!
//! Every distinct indicator of the block (an SMA of one length, a momentum lookback, the
//! z-score of one mean-reversion window) is computed once and shared by the sets that use
//! it. Each set then folds its signals, next-open fills, costs, positions, the equity
//! summary and the metrics of `phasekit/backtest/metrics.py` in one pass over the bars,
//! keeping its equity curve only when it is traced. The arithmetic is the one of
//! [`crate::backtest::run`] (same operations in the same order), so a set's trades and
//! equity summary are the bits the per-set kernel gives.
//!
//! [`run_block_signals`] folds targets computed elsewhere (a user strategy's signals, one
//! row per set) through the same per-set state: only where a bar's target comes from
//! differs.
//!
//! Sets are handed to worker threads (scoped threads, no pool) in groups; inside a
//! group the bars are walked in tiles so the prices and indicators of a tile stay in
//! cache while every set of the group steps over it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::backtest::{check_targets, sma, Account, BacktestError, Settings, Trades};

/// One parameter set of a built-in strategy (`phasekit/backtest/strategies.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamSet {
    /// Long on the fast SMA crossing above the slow one; flat or short on the cross below.
    Sma {
        fast: i64,
        slow: i64,
        long_short: bool,
    },
    /// Long when the return over `lookback` bars exceeds `threshold`; short (or flat)
    /// below `-threshold`; otherwise flat.
    Momentum {
        lookback: i64,
        threshold: f64,
        long_short: bool,
    },
    /// z-score of the close against its SMA and rolling std: long below `-entry_z`,
    /// short above `entry_z` (long_short), flat when `|z| <= exit_z`, else hold.
    MeanReversion {
        window: i64,
        entry_z: f64,
        exit_z: f64,
        long_short: bool,
    },
}

/// A shared indicator: its kind and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Indicator {
    Sma(usize),
    Momentum(usize),
    ZScore(usize),
}

impl ParamSet {
    fn check(&self) -> Result<(), String> {
        match *self {
            ParamSet::Sma { fast, slow, .. } => {
                if fast < 1 || slow < 1 || fast >= slow {
                    return Err(BacktestError::Windows(fast, slow).to_string());
                }
            }
            ParamSet::Momentum { lookback, .. } => {
                if lookback < 1 {
                    return Err(format!("strategy.lookback: {lookback} must be at least 1"));
                }
            }
            ParamSet::MeanReversion { window, .. } => {
                if window < 2 {
                    return Err(format!("strategy.window: {window} must be at least 2"));
                }
            }
        }
        Ok(())
    }

    /// The indicators of this set (valid sets only: lengths are positive).
    fn indicators(&self) -> [Option<Indicator>; 2] {
        match *self {
            ParamSet::Sma { fast, slow, .. } => [
                Some(Indicator::Sma(fast as usize)),
                Some(Indicator::Sma(slow as usize)),
            ],
            ParamSet::Momentum { lookback, .. } => {
                [Some(Indicator::Momentum(lookback as usize)), None]
            }
            ParamSet::MeanReversion { window, .. } => {
                [Some(Indicator::ZScore(window as usize)), None]
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BlockError {
    /// A problem of the whole block (settings, columns, window).
    Block(BacktestError),
    /// A parameter set that cannot run: (its index in the block, why).
    Set(usize, String),
    /// `threads` of 0.
    Threads,
    /// Traced flags that are not one per set: (flags, sets).
    Traced(usize, usize),
    /// Given targets that are not one row of `bars` per set: (targets, sets, bars).
    Targets(usize, usize, usize),
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Block(err) => write!(f, "{err}"),
            BlockError::Set(set, why) => write!(f, "parameter set {set}: {why}"),
            BlockError::Threads => write!(f, "threads: 0 must be at least 1"),
            BlockError::Traced(flags, sets) => write!(
                f,
                "traced: {flags} flags for {sets} parameter sets (give one per set or none)"
            ),
            BlockError::Targets(len, sets, bars) => write!(
                f,
                "signals: {len} targets for {sets} parameter sets of {bars} bars \
                 (expected one row of {bars} targets per set)"
            ),
        }
    }
}

impl std::error::Error for BlockError {}

impl From<BacktestError> for BlockError {
    fn from(err: BacktestError) -> Self {
        BlockError::Block(err)
    }
}

/// The metrics of `StreamingMetrics.result()` for one set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub total_return: f64,
    pub sharpe_ratio: f64,
    pub sortino_ratio: f64,
    pub max_drawdown: f64,
    pub exposure: f64,
    pub final_equity: f64,
    pub win_rate: f64,
    pub trade_count: usize,
    /// None when no trade lost.
    pub profit_factor: Option<f64>,
    /// Bars in the window.
    pub bars: usize,
}

/// What one set produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetResult {
    pub metrics: Option<Metrics>,
    pub trades: Trades,
    /// Equity and position at each bar close of the window; empty unless traced.
    pub equity: Vec<f64>,
    pub position: Vec<f64>,
}

/// What [`run_block`] returns: one result per set, in the order of the sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockResult {
    pub sets: Vec<SetResult>,
    /// Distinct indicators computed (each once).
    pub indicators: usize,
    /// Threads that ran sets.
    pub threads: usize,
}

/// How the block is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockOptions {
    pub periods_per_year: f64,
    /// Worker threads (at least 1); fewer run when there are fewer groups of sets.
    pub threads: usize,
}

const GROUP: usize = 8;
const TILE: usize = 2048;

/// Runs every set of `sets` over the bars `[start, stop)` (signals over `[0, stop)`),
/// `traced[i]` keeping set `i`'s equity curve. Sets are validated before any runs: the
/// first bad one fails the block, named by its index.
#[allow(clippy::too_many_arguments)]
pub fn run_block(
    ts: &[i64],
    open: &[f64],
    close: &[f64],
    start: usize,
    stop: usize,
    sets: &[ParamSet],
    traced: &[bool],
    settings: &Settings,
    options: &BlockOptions,
) -> Result<BlockResult, BlockError> {
    check_block(sets.len(), traced, settings, options)?;
    let bars = Bars::check(ts, open, close, start, stop)?;
    for (i, set) in sets.iter().enumerate() {
        set.check().map_err(|why| BlockError::Set(i, why))?;
    }
    let table = Indicators::compute(bars.close, sets);
    let source = Source::Params {
        sets,
        table: &table,
    };
    let (out, threads) = Env::new(&bars, source, traced, settings, options).run(options.threads);
    Ok(BlockResult {
        sets: out,
        indicators: table.values.len(),
        threads,
    })
}

/// Runs `sets` sets whose targets are given: `targets` holds one row of `stop` targets
/// (-1, 0 or 1, decided on each close of bars `[0, stop)`) per set, set after set. The
/// fills, costs, positions, equity and metrics are those of [`run_block`] for the same
/// targets. The first row with a target outside -1..=1 fails the block, named by its set.
#[allow(clippy::too_many_arguments)]
pub fn run_block_signals(
    ts: &[i64],
    open: &[f64],
    close: &[f64],
    start: usize,
    stop: usize,
    targets: &[i8],
    sets: usize,
    traced: &[bool],
    settings: &Settings,
    options: &BlockOptions,
) -> Result<BlockResult, BlockError> {
    check_block(sets, traced, settings, options)?;
    let bars = Bars::check(ts, open, close, start, stop)?;
    if sets.checked_mul(stop) != Some(targets.len()) {
        return Err(BlockError::Targets(targets.len(), sets, stop));
    }
    for (i, row) in targets.chunks_exact(stop).enumerate() {
        if !all_targets(row) {
            check_targets(row).map_err(|e| BlockError::Set(i, e.to_string()))?;
        }
    }
    let source = Source::Targets { targets, row: stop };
    let (out, threads) = Env::new(&bars, source, traced, settings, options).run(options.threads);
    Ok(BlockResult {
        sets: out,
        indicators: 0,
        threads,
    })
}

/// Every target of `row` is -1, 0 or 1 (a branch-free pass the compiler vectorises).
fn all_targets(row: &[i8]) -> bool {
    row.chunks(256).all(|chunk| {
        chunk
            .iter()
            .fold(true, |ok, t| ok & ((t.wrapping_add(1) as u8) <= 2))
    })
}

/// The checks every block makes of its settings, threads and traced flags.
fn check_block(
    sets: usize,
    traced: &[bool],
    settings: &Settings,
    options: &BlockOptions,
) -> Result<(), BlockError> {
    settings.validate()?;
    if options.threads == 0 {
        return Err(BlockError::Threads);
    }
    if !traced.is_empty() && traced.len() != sets {
        return Err(BlockError::Traced(traced.len(), sets));
    }
    Ok(())
}

/// The bars of a block, checked: the columns up to `stop` and the window's timestamps.
struct Bars<'a> {
    ts: &'a [i64],
    open: &'a [f64],
    close: &'a [f64],
    start: usize,
}

impl<'a> Bars<'a> {
    fn check(
        ts: &'a [i64],
        open: &'a [f64],
        close: &'a [f64],
        start: usize,
        stop: usize,
    ) -> Result<Self, BlockError> {
        let n = close.len();
        if ts.len() != n {
            return Err(BacktestError::Length("timestamps", ts.len(), n).into());
        }
        if open.len() != n {
            return Err(BacktestError::Length("opens", open.len(), n).into());
        }
        if start >= stop || stop > n {
            return Err(BacktestError::Span(start, stop, n).into());
        }
        Ok(Bars {
            ts: &ts[start..stop],
            open: &open[..stop],
            close: &close[..stop],
            start,
        })
    }
}

/// The distinct indicators of a block, each computed once over the closes.
struct Indicators {
    index: BTreeMap<Indicator, usize>,
    values: Vec<Vec<f64>>,
}

impl Indicators {
    fn compute(close: &[f64], sets: &[ParamSet]) -> Self {
        let mut index = BTreeMap::new();
        for set in sets {
            for ind in set.indicators().into_iter().flatten() {
                let k = index.len();
                index.entry(ind).or_insert(k);
            }
        }
        let mut values = vec![Vec::new(); index.len()];
        let mut squares: Option<Vec<f64>> = None;
        for (ind, k) in &index {
            values[*k] = match *ind {
                Indicator::Sma(w) => sma(close, w),
                Indicator::Momentum(lb) => momentum(close, lb),
                Indicator::ZScore(w) => {
                    let sq = squares.get_or_insert_with(|| close.iter().map(|c| c * c).collect());
                    zscore(close, sq, w)
                }
            };
        }
        Indicators { index, values }
    }

    fn get(&self, ind: Indicator) -> &[f64] {
        match self.index.get(&ind) {
            Some(k) => &self.values[*k],
            None => &[],
        }
    }
}

/// `close[i] / close[i - lookback] - 1` from bar `lookback` on, 0 before (strategies.py).
pub fn momentum(close: &[f64], lookback: usize) -> Vec<f64> {
    let n = close.len();
    let mut out = vec![0.0; n];
    if lookback < n {
        for i in lookback..n {
            out[i] = close[i] / close[i - lookback] - 1.0;
        }
    }
    out
}

/// `(close - SMA) / std` over `window` (std from the SMA of the squares, clipped at 0),
/// NaN where the std is not positive (strategies.py's `MeanReversion`).
pub fn zscore(close: &[f64], squares: &[f64], window: usize) -> Vec<f64> {
    let mean = sma(close, window);
    let sq = sma(squares, window);
    close
        .iter()
        .zip(mean.iter().zip(sq.iter()))
        .map(|(c, (m, s))| {
            let var = s - m * m;
            // np.maximum keeps NaN, f64::max would drop it
            let std = if var.is_nan() {
                f64::NAN
            } else {
                var.max(0.0).sqrt()
            };
            if std > 0.0 {
                (c - m) / std
            } else {
                f64::NAN
            }
        })
        .collect()
}

/// Where the sets of a block take their targets from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Parameter sets of built-in strategies and the block's indicators.
    Params {
        sets: &'a [ParamSet],
        table: &'a Indicators,
    },
    /// Given targets, one row of `row` bars per set, set after set.
    Targets { targets: &'a [i8], row: usize },
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Params { sets, .. } => sets.len(),
            Source::Targets { targets, row } => targets.len() / (*row).max(1),
        }
    }
}

/// What every set of a block reads.
struct Env<'a> {
    /// The window's timestamps.
    ts: &'a [i64],
    open: &'a [f64],
    close: &'a [f64],
    start: usize,
    settings: &'a Settings,
    source: Source<'a>,
    traced: &'a [bool],
    ppy: f64,
    /// every close is finite (a flat bar's equity is then its cash)
    finite: bool,
}

impl<'a> Env<'a> {
    fn new(
        bars: &Bars<'a>,
        source: Source<'a>,
        traced: &'a [bool],
        settings: &'a Settings,
        options: &BlockOptions,
    ) -> Self {
        Env {
            ts: bars.ts,
            open: bars.open,
            close: bars.close,
            start: bars.start,
            settings,
            source,
            traced,
            ppy: options.periods_per_year,
            finite: bars.close.iter().all(|c| c.is_finite()),
        }
    }

    /// Every set, in groups handed to at most `threads` threads; the results in the
    /// order of the sets and the threads that ran.
    fn run(&self, threads: usize) -> (Vec<SetResult>, usize) {
        let sets = self.source.len();
        let groups = sets.div_ceil(GROUP);
        let threads = threads.min(groups).max(1);
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, Vec<SetResult>)>> = Mutex::new(Vec::with_capacity(groups));
        let work = || loop {
            let g = next.fetch_add(1, Ordering::Relaxed);
            if g >= groups {
                break;
            }
            let lo = g * GROUP;
            let hi = (lo + GROUP).min(sets);
            let out = self.run_group(lo, hi);
            let mut guard = match done.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.push((g, out));
        };
        if threads == 1 {
            work();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(work);
                }
            });
        }
        let mut parts = match done.into_inner() {
            Ok(parts) => parts,
            Err(poisoned) => poisoned.into_inner(),
        };
        parts.sort_by_key(|(g, _)| *g);
        let mut out = Vec::with_capacity(sets);
        for (_, part) in parts {
            out.extend(part);
        }
        (out, threads)
    }

    fn run_group(&self, lo: usize, hi: usize) -> Vec<SetResult> {
        let mut states: Vec<SetState<'_>> = (lo..hi).map(|i| self.state(i)).collect();
        let n = self.close.len();
        // given targets need no bar before the window; indicators' states do
        let mut t0 = match self.source {
            Source::Params { .. } => 0,
            Source::Targets { .. } => self.start,
        };
        while t0 < n {
            let t1 = (t0 + TILE).min(n);
            for s in states.iter_mut() {
                s.advance(self, t0, t1);
            }
            t0 = t1;
        }
        states.into_iter().map(|s| s.finish(self)).collect()
    }

    fn state(&self, i: usize) -> SetState<'a> {
        let signal = match self.source {
            Source::Params { sets, table } => Self::param_signal(sets[i], table),
            Source::Targets { targets, row } => Signal::Given {
                t: &targets[i * row..(i + 1) * row],
            },
        };
        let traced = self.traced.get(i).copied().unwrap_or(false);
        SetState {
            signal,
            state: 0,
            tick: Tick::new(self.settings),
            book: Book::new(self.settings, traced, self.ts.len()),
        }
    }

    fn param_signal(set: ParamSet, table: &'a Indicators) -> Signal<'a> {
        match set {
            ParamSet::Sma {
                fast,
                slow,
                long_short,
            } => Signal::Sma {
                f: table.get(Indicator::Sma(fast as usize)),
                s: table.get(Indicator::Sma(slow as usize)),
                down: if long_short { -1 } else { 0 },
                prev_lt: false,
                prev_gt: false,
            },
            ParamSet::Momentum {
                lookback,
                threshold,
                long_short,
            } => Signal::Momentum {
                r: table.get(Indicator::Momentum(lookback as usize)),
                threshold,
                long_short,
            },
            ParamSet::MeanReversion {
                window,
                entry_z,
                exit_z,
                long_short,
            } => Signal::MeanReversion {
                z: table.get(Indicator::ZScore(window as usize)),
                entry: entry_z,
                exit: exit_z,
                long_short,
            },
        }
    }
}

/// A set's signal: the indicators it reads and its state.
enum Signal<'a> {
    Sma {
        f: &'a [f64],
        s: &'a [f64],
        down: i8,
        /// fast < slow and fast > slow on the previous bar (both false while NaN)
        prev_lt: bool,
        prev_gt: bool,
    },
    Momentum {
        r: &'a [f64],
        threshold: f64,
        long_short: bool,
    },
    MeanReversion {
        z: &'a [f64],
        entry: f64,
        exit: f64,
        long_short: bool,
    },
    /// Targets given for every bar of `[0, stop)`.
    Given { t: &'a [i8] },
}

struct SetState<'a> {
    signal: Signal<'a>,
    /// the target decided on the last close
    state: i8,
    tick: Tick,
    book: Book,
}

impl SetState<'_> {
    /// Steps over bars `[t0, t1)`: the target of each close, and the portfolio inside the
    /// window. The states that change every bar are copied to locals for the tile, so
    /// they stay in registers.
    fn advance(&mut self, env: &Env<'_>, t0: usize, t1: usize) {
        let start = env.start;
        let mut state = self.state;
        let mut tick = self.tick;
        let book = &mut self.book;
        let mut step = |i: usize, state: i8, tick: &mut Tick| {
            if i >= start {
                book.step(tick, env, i - start, state);
            }
        };
        match &mut self.signal {
            Signal::Sma {
                f,
                s,
                down,
                prev_lt,
                prev_gt,
            } => {
                let (mut was_lt, mut was_gt, down) = (*prev_lt, *prev_gt, *down);
                let (f, s) = (&f[t0..t1], &s[t0..t1]);
                for (k, (fv, sv)) in f.iter().zip(s.iter()).enumerate() {
                    let (lt, gt) = (fv < sv, fv > sv);
                    if was_lt && gt {
                        state = 1;
                    } else if was_gt && lt {
                        state = down;
                    }
                    (was_lt, was_gt) = (lt, gt);
                    step(t0 + k, state, &mut tick);
                }
                (*prev_lt, *prev_gt) = (was_lt, was_gt);
            }
            Signal::Momentum {
                r,
                threshold,
                long_short,
            } => {
                let (threshold, long_short) = (*threshold, *long_short);
                for (k, rv) in r[t0..t1].iter().enumerate() {
                    state = if long_short && *rv < -threshold {
                        -1
                    } else if *rv > threshold {
                        1
                    } else {
                        0
                    };
                    step(t0 + k, state, &mut tick);
                }
            }
            Signal::MeanReversion {
                z,
                entry,
                exit,
                long_short,
            } => {
                let (entry, exit, long_short) = (*entry, *exit, *long_short);
                for (k, zv) in z[t0..t1].iter().enumerate() {
                    // later rules win, as the assignments of strategies.py
                    if long_short && *zv > entry {
                        state = -1;
                    } else if *zv < -entry {
                        state = 1;
                    } else if zv.abs() <= exit {
                        state = 0;
                    }
                    step(t0 + k, state, &mut tick);
                }
            }
            Signal::Given { t } => {
                for (k, tv) in t[t0..t1].iter().enumerate() {
                    state = *tv;
                    step(t0 + k, state, &mut tick);
                }
            }
        }
        self.state = state;
        self.tick = tick;
    }

    fn finish(self, env: &Env<'_>) -> SetResult {
        self.book.finish(&self.tick, env)
    }
}

/// What a set's portfolio changes at every bar: the equity fold and the decisions.
#[derive(Debug, Clone, Copy)]
struct Tick {
    fold: Fold,
    /// the decision of the previous bar (None before the window's first)
    decided: Option<i8>,
    held: i8,
}

impl Tick {
    fn new(settings: &Settings) -> Self {
        Tick {
            fold: Fold::new(settings.initial_capital),
            decided: None,
            held: 0,
        }
    }
}

/// A set's portfolio over the window: `Simulator` of backtest.rs without fills or events.
struct Book {
    account: Account,
    initial: f64,
    traced: bool,
    out: SetResult,
}

impl Book {
    fn new(settings: &Settings, traced: bool, bars: usize) -> Self {
        let cap = if traced { bars } else { 0 };
        Book {
            account: Account::new(settings),
            initial: settings.initial_capital,
            traced,
            out: SetResult {
                equity: Vec::with_capacity(cap),
                position: Vec::with_capacity(cap),
                ..SetResult::default()
            },
        }
    }

    /// Window bar `bar`: fill the previous decision at its open, mark its close, record
    /// the decision `want` taken on that close.
    #[inline(always)]
    fn step(&mut self, t: &mut Tick, env: &Env<'_>, bar: usize, want: i8) {
        let i = bar + env.start;
        if let Some(prev) = t.decided {
            if prev != t.held {
                self.fill(env, bar, prev, env.open[i]);
            }
            t.held = prev;
        }
        let (cash, qty) = (self.account.cash, self.account.qty);
        if qty == 0.0 && env.finite {
            // flat: equity is the cash, which is the last equity (return 0)
            t.fold.push_flat(cash);
        } else {
            t.fold.push(cash + qty * env.close[i], qty);
        }
        if self.traced {
            self.out.equity.push(t.fold.last);
            self.out.position.push(qty);
        }
        t.decided = Some(want);
    }

    #[cold]
    #[inline(never)]
    fn fill(&mut self, env: &Env<'_>, bar: usize, want: i8, open_px: f64) {
        if let (Some(closed), _) = self.account.fill(bar, want, open_px) {
            self.out.trades.push(env.ts, &closed);
        }
    }

    fn finish(mut self, t: &Tick, env: &Env<'_>) -> SetResult {
        self.out.metrics = Some(t.fold.metrics(self.initial, env.ppy, &self.out.trades.pnl));
        self.out
    }
}

/// The equity fold of backtest.rs (`Fold`), started from the initial capital. A window's
/// first bar is always flat, so its return (the shift of the sums) is 0.
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
    /// equity at or above which `equity / peak - 1` cannot be below `mdd` ([`Fold::floor`]),
    /// so the drawdown is divided out only near a new low
    floor: f64,
    in_market: usize,
}

/// The margin of [`Fold::floor`], far above the rounding of `equity / peak - 1`.
const FLOOR_MARGIN: f64 = 1e-9;

impl Fold {
    /// A little above `peak * (1 + mdd)` (relatively and absolutely): an equity at or
    /// above it has `equity / peak - 1 > mdd` whatever the rounding.
    fn floor(peak: f64, mdd: f64) -> f64 {
        peak * ((1.0 + mdd) * (1.0 + FLOOR_MARGIN) + FLOOR_MARGIN)
    }

    fn new(initial: f64) -> Self {
        Fold {
            n: 0,
            last: initial,
            shift: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            down_sq: 0.0,
            peak: initial,
            mdd: 0.0,
            floor: Fold::floor(initial, 0.0),
            in_market: 0,
        }
    }

    /// A flat bar whose equity (`cash`) is the previous one: [`Fold::push`] of a
    /// return of 0 (the first bar of a window is flat, so the shift is 0 too).
    #[inline(always)]
    fn push_flat(&mut self, cash: f64) {
        if self.n == 0 || cash != self.last {
            self.push(cash, 0.0);
        } else {
            // r = 0, d = 0 - shift = 0: the sums, the peak and the drawdown stay
            self.n += 1;
        }
    }

    #[inline(always)]
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
        if equity >= self.peak {
            // a new peak: equity / peak - 1 is 0, which leaves the drawdown as it is
            self.peak = equity;
            self.floor = Fold::floor(equity, self.mdd);
        } else if equity < self.floor {
            let dd = equity / self.peak - 1.0;
            if dd < self.mdd {
                self.mdd = dd;
                self.floor = Fold::floor(self.peak, dd);
            }
        }
        self.last = equity;
        if position != 0.0 {
            self.in_market += 1;
        }
    }

    /// `StreamingMetrics(initial, ppy)` folded once with this summary, then `result()`.
    fn metrics(&self, initial: f64, ppy: f64, pnl: &[f64]) -> Metrics {
        let n = self.n as f64;
        let (mean_b, m2_b) = if self.n > 0 {
            (
                self.shift + self.sum / n,
                (self.sum_sq - self.sum * self.sum / n).max(0.0),
            )
        } else {
            (0.0, 0.0)
        };
        // StreamingMetrics.fold from its initial state (mean 0, m2 0, n 0)
        let (mean, m2) = if self.n > 0 {
            let delta = mean_b - 0.0;
            (
                0.0 + delta * n / n,
                0.0 + (m2_b + delta * delta * 0.0 * n / n),
            )
        } else {
            (0.0, 0.0)
        };
        let ann = ppy.sqrt();
        let sd = if self.n > 1 {
            (m2 / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let down = if self.n > 0 {
            (self.down_sq / n).sqrt()
        } else {
            0.0
        };
        let count = pnl.len();
        let (mut wins, mut won, mut losses) = (0.0, 0usize, 0.0);
        for p in pnl {
            if *p > 0.0 {
                wins += p;
                won += 1;
            } else if *p < 0.0 {
                losses -= p;
            }
        }
        Metrics {
            total_return: self.last / initial - 1.0,
            sharpe_ratio: if sd > 0.0 { mean / sd * ann } else { 0.0 },
            sortino_ratio: if down > 0.0 { mean / down * ann } else { 0.0 },
            max_drawdown: self.mdd.min(0.0),
            exposure: if self.n > 0 {
                self.in_market as f64 / n
            } else {
                0.0
            },
            final_equity: self.last,
            win_rate: if count > 0 {
                won as f64 / count as f64
            } else {
                0.0
            },
            trade_count: count,
            profit_factor: if losses > 0.0 {
                Some(wins / losses)
            } else {
                None
            },
            bars: self.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::{equity_summary, run, Signal as One, Simulation};

    fn prices(n: usize, seed: u64) -> (Vec<i64>, Vec<f64>, Vec<f64>) {
        let mut x = seed;
        let mut price = 100.0;
        let mut open = Vec::with_capacity(n);
        let mut close = Vec::with_capacity(n);
        for _ in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            open.push(price * (1.0 + u * 0.001));
            price *= 1.0 + u * 0.02;
            close.push(price);
        }
        let ts = (0..n as i64).map(|i| i * 60_000_000_000).collect();
        (ts, open, close)
    }

    fn costs() -> Settings {
        Settings {
            commission_bps: 2.0,
            slippage_bps: 1.5,
            ..Settings::default()
        }
    }

    fn options(threads: usize) -> BlockOptions {
        BlockOptions {
            periods_per_year: 252.0 * 390.0,
            threads,
        }
    }

    /// The per-set targets of strategies.py, computed the direct way.
    fn targets(close: &[f64], set: &ParamSet) -> Vec<i8> {
        let n = close.len();
        match *set {
            ParamSet::Sma {
                fast,
                slow,
                long_short,
            } => crate::backtest::sma_crossover(close, fast, slow, long_short).unwrap(),
            ParamSet::Momentum {
                lookback,
                threshold,
                long_short,
            } => momentum(close, lookback as usize)
                .iter()
                .map(|r| {
                    let mut t = 0;
                    if *r > threshold {
                        t = 1;
                    }
                    if long_short && *r < -threshold {
                        t = -1;
                    }
                    t
                })
                .collect(),
            ParamSet::MeanReversion {
                window,
                entry_z,
                exit_z,
                long_short,
            } => {
                let sq: Vec<f64> = close.iter().map(|c| c * c).collect();
                let z = zscore(close, &sq, window as usize);
                let mut out = vec![0i8; n];
                let mut state = 0;
                for i in 0..n {
                    let mut d = None;
                    if z[i].abs() <= exit_z {
                        d = Some(0);
                    }
                    if z[i] < -entry_z {
                        d = Some(1);
                    }
                    if long_short && z[i] > entry_z {
                        d = Some(-1);
                    }
                    if let Some(d) = d {
                        state = d;
                    }
                    out[i] = state;
                }
                out
            }
        }
    }

    fn sets() -> Vec<ParamSet> {
        let mut sets = Vec::new();
        for (fast, slow) in [(2, 9), (5, 40), (9, 40), (13, 14), (1, 300)] {
            for long_short in [false, true] {
                sets.push(ParamSet::Sma {
                    fast,
                    slow,
                    long_short,
                });
            }
        }
        for (lookback, threshold) in [(1, 0.0), (20, 0.002), (60, -0.001)] {
            for long_short in [false, true] {
                sets.push(ParamSet::Momentum {
                    lookback,
                    threshold,
                    long_short,
                });
            }
        }
        for (window, entry_z, exit_z) in [(2, 0.5, 0.1), (20, 1.0, 0.0), (50, 1.5, 0.5)] {
            for long_short in [false, true] {
                sets.push(ParamSet::MeanReversion {
                    window,
                    entry_z,
                    exit_z,
                    long_short,
                });
            }
        }
        sets
    }

    #[test]
    fn every_set_equals_the_per_set_kernel() {
        let (ts, open, close) = prices(5000, 11);
        let sets = sets();
        let traced: Vec<bool> = (0..sets.len()).map(|i| i % 3 == 0).collect();
        let s = costs();
        for (start, stop) in [(0, 5000), (700, 4100)] {
            for threads in [1, 3] {
                let block = run_block(
                    &ts,
                    &open,
                    &close,
                    start,
                    stop,
                    &sets,
                    &traced,
                    &s,
                    &options(threads),
                )
                .unwrap();
                assert_eq!(block.sets.len(), sets.len());
                for (k, set) in sets.iter().enumerate() {
                    let target = targets(&close[..stop], set);
                    let (sim, summary): (Simulation, _) = run(
                        &ts,
                        &open,
                        &close,
                        start,
                        stop,
                        One::Targets(&target),
                        &s,
                        true,
                    )
                    .unwrap();
                    let got = &block.sets[k];
                    assert_eq!(got.trades, sim.trades, "set {k} {set:?}");
                    if traced[k] {
                        assert_eq!(got.equity, sim.equity);
                        assert_eq!(got.position, sim.position);
                    } else {
                        assert!(got.equity.is_empty() && got.position.is_empty());
                    }
                    let m = got.metrics.unwrap();
                    let want = equity_summary(&sim.equity, &sim.position, 1e5, 1e5);
                    assert_eq!(want, summary);
                    assert_eq!(m.final_equity, want.last);
                    assert_eq!(m.max_drawdown, want.max_drawdown);
                    assert_eq!(m.bars, stop - start);
                    assert_eq!(m.trade_count, sim.trades.len());
                    let ann = (252.0f64 * 390.0).sqrt();
                    let n = want.n as f64;
                    let sd = (want.m2 / (n - 1.0)).sqrt();
                    let sharpe = if sd > 0.0 { want.mean / sd * ann } else { 0.0 };
                    assert!((m.sharpe_ratio - sharpe).abs() <= 1e-12 * sharpe.abs().max(1.0));
                    assert_eq!(m.exposure, want.bars_in_market as f64 / n);
                }
            }
        }
    }

    /// Block against the per-set kernel: trades, curves and the equity summary's fields.
    fn assert_matches_kernel(ts: &[i64], open: &[f64], close: &[f64], sets: &[ParamSet]) {
        let s = costs();
        let n = close.len();
        let traced = vec![true; sets.len()];
        let block = run_block(ts, open, close, 0, n, sets, &traced, &s, &options(2)).unwrap();
        for (k, set) in sets.iter().enumerate() {
            let target = targets(close, set);
            let (sim, summary) =
                run(ts, open, close, 0, n, One::Targets(&target), &s, true).unwrap();
            let got = &block.sets[k];
            assert_eq!(got.trades, sim.trades, "set {k}");
            let same = |a: &[f64], b: &[f64]| {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
            };
            assert!(same(&got.equity, &sim.equity), "set {k}");
            let m = got.metrics.unwrap();
            assert!(m.max_drawdown == summary.max_drawdown.min(0.0), "set {k}");
            assert!(same(&[m.final_equity], &[summary.last]), "set {k}");
        }
    }

    #[test]
    fn crashes_and_non_finite_prices_match_the_per_set_kernel() {
        // a fall of 99.9999% and back, then a NaN and an infinite close
        let mut close: Vec<f64> = (0..400)
            .map(|i| 100.0 * (1.0 - 0.999_999 * ((i as f64) / 40.0).sin().abs()) + 1e-6)
            .collect();
        let (ts, mut open) = {
            let (ts, open, _) = prices(400, 2);
            (ts, open)
        };
        for i in 0..400 {
            open[i] = if i == 0 { close[0] } else { close[i - 1] };
        }
        let sets: Vec<ParamSet> = [(1, 3), (2, 7), (3, 30)]
            .into_iter()
            .flat_map(|(fast, slow)| {
                [false, true].map(|long_short| ParamSet::Sma {
                    fast,
                    slow,
                    long_short,
                })
            })
            .collect();
        assert_matches_kernel(&ts, &open, &close, &sets);
        close[250] = f64::NAN;
        close[300] = f64::INFINITY;
        assert_matches_kernel(&ts, &open, &close, &sets);
    }

    #[test]
    fn indicators_are_shared() {
        let (ts, open, close) = prices(300, 3);
        let sets = [
            ParamSet::Sma {
                fast: 5,
                slow: 20,
                long_short: false,
            },
            ParamSet::Sma {
                fast: 5,
                slow: 30,
                long_short: true,
            },
            ParamSet::Sma {
                fast: 20,
                slow: 30,
                long_short: false,
            },
            ParamSet::Momentum {
                lookback: 5,
                threshold: 0.0,
                long_short: false,
            },
        ];
        let block = run_block(
            &ts,
            &open,
            &close,
            0,
            300,
            &sets,
            &[],
            &costs(),
            &options(2),
        )
        .unwrap();
        // sma 5, 20, 30 and momentum 5
        assert_eq!(block.indicators, 4);
        assert_eq!(block.threads, 1); // one group of sets
    }

    #[test]
    fn a_bad_set_fails_the_block_by_its_index() {
        let (ts, open, close) = prices(100, 5);
        let mut sets = sets();
        sets.insert(
            4,
            ParamSet::Sma {
                fast: 7,
                slow: 7,
                long_short: false,
            },
        );
        let err = run_block(
            &ts,
            &open,
            &close,
            0,
            100,
            &sets,
            &[],
            &costs(),
            &options(1),
        )
        .unwrap_err();
        assert_eq!(
            err,
            BlockError::Set(4, BacktestError::Windows(7, 7).to_string())
        );
        assert!(err.to_string().starts_with("parameter set 4: "));
        let bad = [ParamSet::MeanReversion {
            window: 1,
            entry_z: 1.0,
            exit_z: 0.0,
            long_short: false,
        }];
        let err = run_block(&ts, &open, &close, 0, 100, &bad, &[], &costs(), &options(1));
        assert!(matches!(err, Err(BlockError::Set(0, ref why)) if why.contains("window")));
        let bad = [ParamSet::Momentum {
            lookback: 0,
            threshold: 0.0,
            long_short: false,
        }];
        let err = run_block(&ts, &open, &close, 0, 100, &bad, &[], &costs(), &options(1));
        assert!(matches!(err, Err(BlockError::Set(0, ref why)) if why.contains("lookback")));
        let sets = sets[..2].to_vec();
        assert_eq!(
            run_block(
                &ts,
                &open,
                &close,
                0,
                100,
                &sets,
                &[],
                &costs(),
                &options(0)
            ),
            Err(BlockError::Threads)
        );
        assert_eq!(
            run_block(
                &ts,
                &open,
                &close,
                50,
                50,
                &sets,
                &[],
                &costs(),
                &options(1)
            ),
            Err(BlockError::Block(BacktestError::Span(50, 50, 100)))
        );
        let flags = [true];
        assert_eq!(
            run_block(
                &ts,
                &open,
                &close,
                0,
                100,
                &sets,
                &flags,
                &costs(),
                &options(1)
            ),
            Err(BlockError::Traced(1, 2))
        );
        let broke = Settings {
            fraction: 0.0,
            ..costs()
        };
        assert!(matches!(
            run_block(&ts, &open, &close, 0, 100, &sets, &[], &broke, &options(1)),
            Err(BlockError::Block(BacktestError::Setting("fraction", ..)))
        ));
    }

    #[test]
    fn metrics_by_hand() {
        // one long round trip, no costs: bought at 10.5, sold at 12.5
        let close = [10.0, 11.0, 12.0, 13.0, 12.0, 12.0];
        let open = [10.0, 10.5, 11.5, 12.5, 12.5, 12.0];
        let ts = [0, 1, 2, 3, 4, 5];
        let set = [ParamSet::Momentum {
            lookback: 1,
            threshold: 0.05,
            long_short: false,
        }];
        // momentum: 0, .1, .0909, .0833, -.077, 0 -> targets 0 1 1 1 0 0: bought at the
        // open of bar 2 (11.5), sold at the open of bar 5 (12.0)
        let s = Settings {
            initial_capital: 1000.0,
            ..Settings::default()
        };
        let b = run_block(&ts, &open, &close, 0, 6, &set, &[true], &s, &options(1)).unwrap();
        let r = &b.sets[0];
        let q = 1000.0 / 11.5;
        assert_eq!(r.trades.pnl, vec![q * (12.0 - 11.5)]);
        assert_eq!(r.trades.bars_held, vec![3]);
        assert_eq!(r.position, vec![0.0, 0.0, q, q, q, 0.0]);
        let m = r.metrics.unwrap();
        assert_eq!(m.trade_count, 1);
        assert_eq!(m.win_rate, 1.0);
        assert_eq!(m.profit_factor, None);
        assert_eq!(m.exposure, 3.0 / 6.0);
        let cash = 1000.0 - q * 11.5;
        let last = cash + q * 12.0 + q * 0.0;
        assert_eq!(m.final_equity, r.equity[5]);
        assert!((m.final_equity - last).abs() < 1e-9);
        let peak = cash + q * 13.0;
        assert!((m.max_drawdown - ((cash + q * 12.0) / peak - 1.0)).abs() < 1e-15);
        assert!((m.total_return - (last / 1000.0 - 1.0)).abs() < 1e-15);
    }

    /// The built-in targets of `sets` over `close`, one row per set.
    fn target_rows(close: &[f64], sets: &[ParamSet]) -> Vec<i8> {
        sets.iter().flat_map(|set| targets(close, set)).collect()
    }

    #[test]
    fn given_targets_fold_as_the_built_in_block() {
        let (ts, open, close) = prices(5000, 17);
        let sets = sets();
        let traced: Vec<bool> = (0..sets.len()).map(|i| i % 4 == 1).collect();
        let s = costs();
        for (start, stop) in [(0, 5000), (900, 3100)] {
            let rows = target_rows(&close[..stop], &sets);
            for threads in [1, 2, 3] {
                let want = run_block(
                    &ts,
                    &open,
                    &close,
                    start,
                    stop,
                    &sets,
                    &traced,
                    &s,
                    &options(threads),
                )
                .unwrap();
                let got = run_block_signals(
                    &ts[..stop],
                    &open[..stop],
                    &close[..stop],
                    start,
                    stop,
                    &rows,
                    sets.len(),
                    &traced,
                    &s,
                    &options(threads),
                )
                .unwrap();
                assert_eq!(got.sets, want.sets, "{start}..{stop}, {threads} threads");
                assert_eq!(got.indicators, 0);
                assert_eq!(got.threads, want.threads);
                assert!(got.sets.iter().any(|r| !r.trades.is_empty()));
            }
        }
    }

    #[test]
    fn given_targets_are_checked_by_set() {
        let (ts, open, close) = prices(200, 23);
        let sets = sets();
        let mut rows = target_rows(&close, &sets);
        let run = |rows: &[i8], n: usize| {
            run_block_signals(
                &ts,
                &open,
                &close,
                10,
                200,
                rows,
                n,
                &[],
                &costs(),
                &options(2),
            )
        };
        assert!(run(&rows, sets.len()).is_ok());
        // a bad target before the window still fails its set, as in the per-set kernel
        rows[3 * 200 + 5] = 2;
        rows[7 * 200 + 1] = -128;
        let err = run(&rows, sets.len()).unwrap_err();
        assert_eq!(
            err,
            BlockError::Set(3, BacktestError::Target(5, 2).to_string())
        );
        assert_eq!(
            err.to_string(),
            "parameter set 3: strategy returned target 2 at bar 5; allowed: -1, 0, 1"
        );
        rows[3 * 200 + 5] = 1;
        assert_eq!(
            run(&rows, sets.len()),
            Err(BlockError::Set(
                7,
                BacktestError::Target(1, -128).to_string()
            ))
        );
        rows[7 * 200 + 1] = 0;
        assert_eq!(
            run(&rows[..rows.len() - 1], sets.len()),
            Err(BlockError::Targets(rows.len() - 1, sets.len(), 200))
        );
        assert!(run(&rows, sets.len() + 1)
            .unwrap_err()
            .to_string()
            .contains("expected one row of 200 targets per set"));
        assert_eq!(run(&[], 0).map(|b| b.sets.len()), Ok(0));
        assert_eq!(
            run_block_signals(
                &ts,
                &open,
                &close,
                0,
                200,
                &rows,
                sets.len(),
                &[true],
                &costs(),
                &options(1)
            ),
            Err(BlockError::Traced(1, sets.len()))
        );
    }

    #[test]
    fn all_targets_agrees_with_the_per_bar_check() {
        for v in i8::MIN..=i8::MAX {
            for at in [0, 255, 256, 700] {
                let mut row = vec![1i8; 701];
                row[at] = v;
                assert_eq!(
                    all_targets(&row),
                    check_targets(&row).is_ok(),
                    "{v} at {at}"
                );
            }
        }
    }
}
