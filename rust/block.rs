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
//! Sets are handed to worker threads (scoped threads, no pool) in units of a few per
//! thread; a unit walks the bars in tiles, every set of the unit stepping over a tile
//! before the next, so each indicator is read from memory once per unit. A tile first
//! finds each set's decisions (an SMA crossover only changes at a crossing, found
//! eight bars at a time), then the portfolios of eight sets step together, one
//! vector operation per state for all of them (`lanes.rs`: AVX2 chosen at run time,
//! SSE2 otherwise), from one rare bar (a fill, a new drawdown low) to the next; the
//! rare bars are handled set by set. A lane takes the per-set fold's IEEE operations in
//! the same order, so its bits do not depend on the lanes beside it nor on the
//! instruction set.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::backtest::{
    check_targets, running_sum, sma_of_sums, Account, BacktestError, Closed, Settings, Trades,
};

mod lanes;

use lanes::{Cold, Hot, Lanes, LANES};

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
    run_block_on(
        Isa::detect(),
        ts,
        open,
        close,
        start,
        stop,
        sets,
        traced,
        settings,
        options,
    )
}

/// [`run_block`] with the portfolio lanes on `isa`.
#[allow(clippy::too_many_arguments)]
fn run_block_on(
    isa: Isa,
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
    let table = Indicators::compute(bars.close, sets, options.threads);
    let source = Source::Params {
        sets,
        table: &table,
    };
    let (out, threads) =
        Env::new(&bars, source, traced, settings, options, isa).run(options.threads);
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
    let env = Env::new(&bars, source, traced, settings, options, Isa::detect());
    let (out, threads) = env.run(options.threads);
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
    /// Every distinct indicator of `sets` over `close`, on at most `threads` threads.
    fn compute(close: &[f64], sets: &[ParamSet], threads: usize) -> Self {
        let mut index = BTreeMap::new();
        for set in sets {
            for ind in set.indicators().into_iter().flatten() {
                let k = index.len();
                index.entry(ind).or_insert(k);
            }
        }
        let kinds: Vec<(Indicator, usize)> = index.iter().map(|(i, k)| (*i, *k)).collect();
        // the running sums every SMA (and z-score) of the block takes differences of
        let sums = running_sum(close);
        let squares = kinds
            .iter()
            .any(|(i, _)| matches!(i, Indicator::ZScore(_)))
            .then(|| {
                let sq: Vec<f64> = close.iter().map(|c| c * c).collect();
                running_sum(&sq)
            });
        let one = |ind: Indicator| match ind {
            Indicator::Sma(w) => sma_of_sums(&sums, w),
            Indicator::Momentum(lb) => momentum(close, lb),
            Indicator::ZScore(w) => {
                zscore_of_sums(close, &sums, squares.as_deref().unwrap_or(&[]), w)
            }
        };
        let mut values = vec![Vec::new(); kinds.len()];
        let threads = threads.min(kinds.len()).max(1);
        if threads == 1 {
            for (ind, k) in &kinds {
                values[*k] = one(*ind);
            }
        } else {
            let next = AtomicUsize::new(0);
            let done = Mutex::new(Vec::with_capacity(kinds.len()));
            let work = || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((ind, k)) = kinds.get(i) else {
                    break;
                };
                let v = one(*ind);
                match done.lock() {
                    Ok(mut guard) => guard.push((*k, v)),
                    Err(poisoned) => poisoned.into_inner().push((*k, v)),
                }
            };
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(work);
                }
            });
            let done = match done.into_inner() {
                Ok(done) => done,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (k, v) in done {
                values[k] = v;
            }
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
    zscore_of_sums(close, &running_sum(close), &running_sum(squares), window)
}

/// [`zscore`] from the running sums of the closes and of their squares.
fn zscore_of_sums(close: &[f64], sums: &[f64], squares: &[f64], window: usize) -> Vec<f64> {
    let mean = sma_of_sums(sums, window);
    let sq = sma_of_sums(squares, window);
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

/// The instruction set the lanes of the portfolio pass are compiled for: the same
/// arithmetic (one IEEE operation per lane, in the same order), only the vector width
/// differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// Plain arrays (targets other than x86-64).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    Scalar,
    /// The x86-64 baseline.
    #[cfg(target_arch = "x86_64")]
    Sse2,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The widest this CPU runs.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
            Isa::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Scalar
    }

    /// Every instruction set this CPU runs (tests compare them).
    #[cfg(test)]
    fn available() -> Vec<Self> {
        let mut out = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            out.push(Isa::Sse2);
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(Isa::Avx2);
            }
        }
        out
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
    isa: Isa,
}

impl<'a> Env<'a> {
    fn new(
        bars: &Bars<'a>,
        source: Source<'a>,
        traced: &'a [bool],
        settings: &'a Settings,
        options: &BlockOptions,
        isa: Isa,
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
            isa,
        }
    }

    /// Every set, in units of whole lane groups handed to at most `threads` threads;
    /// the results in the order of the sets and the threads that ran.
    fn run(&self, threads: usize) -> (Vec<SetResult>, usize) {
        let sets = self.source.len();
        let groups = sets.div_ceil(LANES);
        // a few units per thread (so the threads even out), as large as that allows:
        // a unit reads each of its indicators from memory once, tile by tile
        let per_unit = groups.div_ceil(threads.max(1) * UNITS_PER_THREAD).max(1);
        let units = groups.div_ceil(per_unit);
        let threads = threads.min(units).max(1);
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, Vec<SetResult>)>> = Mutex::new(Vec::with_capacity(units));
        let work = || loop {
            let u = next.fetch_add(1, Ordering::Relaxed);
            if u >= units {
                break;
            }
            let lo = u * per_unit * LANES;
            let hi = (lo + per_unit * LANES).min(sets);
            let out = self.run_unit(lo, hi);
            let mut guard = match done.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.push((u, out));
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
        parts.sort_by_key(|(u, _)| *u);
        let mut out = Vec::with_capacity(sets);
        for (_, part) in parts {
            out.extend(part);
        }
        (out, threads)
    }

    /// Sets `[lo, hi)` in lane groups, tile by tile: every group steps over a tile
    /// before the next tile, so the tile's indicators are read from memory once.
    fn run_unit(&self, lo: usize, hi: usize) -> Vec<SetResult> {
        let mut groups: Vec<Group<'_>> = (lo..hi)
            .step_by(LANES)
            .map(|g| Group::new(self, g, (g + LANES).min(hi)))
            .collect();
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::detect chose Avx2 only on a CPU with AVX2
            Isa::Avx2 => unsafe { self.tiles_avx2(&mut groups) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of x86-64
            Isa::Sse2 => unsafe { self.tiles::<lanes::Sse2>(&mut groups) },
            // SAFETY: plain arrays run anywhere
            Isa::Scalar => unsafe { self.tiles::<lanes::Scalar>(&mut groups) },
        }
        groups.into_iter().flat_map(|g| g.finish(self)).collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn tiles_avx2(&self, groups: &mut [Group<'_>]) {
        self.tiles::<lanes::Avx>(groups)
    }

    /// The bars tile by tile, every group stepping over a tile before the next.
    ///
    /// # Safety
    /// The CPU runs the instruction set of `T`.
    #[inline(always)]
    unsafe fn tiles<T: Lanes>(&self, groups: &mut [Group<'_>]) {
        let n = self.close.len();
        let mut fills = vec![0u8; TILE];
        // given targets need no bar before the window; indicators' states do
        let mut t0 = match self.source {
            Source::Params { .. } => 0,
            Source::Targets { .. } => self.start,
        };
        while t0 < n {
            let t1 = (t0 + TILE).min(n);
            for g in groups.iter_mut() {
                g.advance::<T>(self, t0, t1, &mut fills[..t1 - t0]);
            }
            t0 = t1;
        }
    }

    fn lane(&self, i: usize) -> Lane<'a> {
        let signal = match self.source {
            Source::Params { sets, table } => Self::param_signal(sets[i], table),
            Source::Targets { targets, row } => Signal::Given {
                t: &targets[i * row..(i + 1) * row],
            },
        };
        let traced = self.traced.get(i).copied().unwrap_or(false);
        let cap = if traced { self.ts.len() } else { 0 };
        Lane {
            signal,
            state: 0,
            decided: 0,
            account: Account::new(self.settings),
            events: Vec::new(),
            next: 0,
            closed: Vec::new(),
            traced,
            out: SetResult {
                equity: Vec::with_capacity(cap),
                position: Vec::with_capacity(cap),
                ..SetResult::default()
            },
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

impl Signal<'_> {
    /// The targets decided on the closes of bars `[t0, t1)`, from `state` (the target of
    /// bar `t0 - 1`): `each(bar, target)` for every bar; returns the last target.
    #[inline(always)]
    fn walk(&mut self, t0: usize, t1: usize, mut state: i8, mut each: impl FnMut(usize, i8)) -> i8 {
        match self {
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
                    each(t0 + k, state);
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
                    each(t0 + k, state);
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
                    each(t0 + k, state);
                }
            }
            Signal::Given { t } => {
                for (k, tv) in t[t0..t1].iter().enumerate() {
                    state = *tv;
                    each(t0 + k, state);
                }
            }
        }
        state
    }
}

/// One set of a lane group: its signal, its account and what it produces. The equity
/// fold of the set is lane `l` of its group's [`Pack`].
struct Lane<'a> {
    signal: Signal<'a>,
    /// the target decided on the last close walked
    state: i8,
    /// the last decision inside the window (0 before its first bar, which starts flat)
    decided: i8,
    account: Account,
    /// this tile's changes of decision inside the window: (bar, new target), in bar order
    events: Vec<(usize, i8)>,
    /// the next event to fill
    next: usize,
    /// the positions closed, in order (made trade columns at the end)
    closed: Vec<Closed>,
    traced: bool,
    out: SetResult,
}

impl Lane<'_> {
    /// Walks the signal over `[t0, t1)`; from the window's first bar on, a decision that
    /// differs from the previous one (the position held) is an event: filled at the next
    /// bar's open, flagged by `bit` in `fills` (one byte per bar of the tile).
    #[inline(always)]
    fn signal(&mut self, start: usize, t0: usize, t1: usize, bit: u8, fills: &mut [u8]) {
        self.events.clear();
        self.next = 0;
        let mut emit = Emit {
            start,
            t0,
            bit,
            decided: self.decided,
            pending: (t0..t1).contains(&start),
            events: &mut self.events,
            fills,
        };
        match &mut self.signal {
            Signal::Sma {
                f,
                s,
                down,
                prev_lt,
                prev_gt,
            } => {
                let (f, s) = (&f[t0..t1], &s[t0..t1]);
                let mut was = u8::from(*prev_lt) | (u8::from(*prev_gt) << 1);
                let (mut state, down) = (self.state, *down);
                // a cross flips the code between 1 (below) and 2 (above); the target only
                // changes there, or on the window's first bar
                crossings(f, s, &mut was, |k, code| {
                    emit.before(t0 + k, state);
                    state = if code == 2 { 1 } else { down };
                    emit.at(t0 + k, state);
                });
                (*prev_lt, *prev_gt) = (was == 1, was == 2);
                emit.before(usize::MAX, state);
                self.state = state;
            }
            Signal::Given { t } => {
                let mut state = self.state;
                changes(&t[t0..t1], state, |k, target| {
                    emit.before(t0 + k, state);
                    state = target;
                    emit.at(t0 + k, state);
                });
                emit.before(usize::MAX, state);
                self.state = state;
            }
            signal => {
                let mid = start.clamp(t0, t1);
                let mut state = self.state;
                if t0 < mid {
                    state = signal.walk(t0, mid, state, |_, _| {});
                }
                if mid < t1 {
                    state = signal.walk(mid, t1, state, |i, want| emit.at(i, want));
                }
                self.state = state;
            }
        }
        self.decided = emit.decided;
    }
}

/// The decisions of a lane over one tile, as events: a bar inside the window whose
/// target differs from the last decision.
struct Emit<'e> {
    start: usize,
    t0: usize,
    bit: u8,
    /// the last decision (0 before the window's first bar)
    decided: i8,
    /// the window's first bar is in the tile and not yet decided
    pending: bool,
    events: &'e mut Vec<(usize, i8)>,
    fills: &'e mut [u8],
}

impl Emit<'_> {
    /// The target of bar `j` is `state`.
    #[inline(always)]
    fn at(&mut self, j: usize, state: i8) {
        if j >= self.start {
            self.pending = false;
            if state != self.decided {
                self.decided = state;
                self.events.push((j, state));
                self.fills[j - self.t0] |= self.bit;
            }
        }
    }

    /// The target holds `state` on every bar before `j` since the last call: decides
    /// the window's first bar if it is among them.
    #[inline(always)]
    fn before(&mut self, j: usize, state: i8) {
        if self.pending && self.start < j {
            self.at(self.start, state);
        }
    }
}

/// The crossings of `f` over `s`: `on(k, code)` for every bar `k` whose code (1 for
/// `f < s`, 2 for `f > s`, else 0) is 1 after 2 or 2 after 1; `was` is the code of the
/// bar before the first, then of the last. The codes are computed a block at a time
/// (compares the compiler vectorises) and searched eight bars at a time.
#[inline(always)]
fn crossings(f: &[f64], s: &[f64], was: &mut u8, mut on: impl FnMut(usize, u8)) {
    const LOW: u64 = 0x0101_0101_0101_0101;
    let mut codes = [0u8; TILE + 8];
    let n = f.len().min(s.len()).min(TILE);
    codes[0] = *was;
    for ((c, a), b) in codes[1..=n].iter_mut().zip(f).zip(s) {
        *c = u8::from(a < b) | (u8::from(a > b) << 1);
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&codes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut k = 0;
    while k < n {
        // byte i: the code of bar k + i - 1 xor that of bar k + i; 3 only at a crossing
        let w = word(k) ^ word(k + 1);
        let mut hits = w & (w >> 1) & LOW;
        // bytes past the last bar compare codes of 0
        while hits != 0 {
            let i = k + (hits.trailing_zeros() / 8) as usize;
            if i < n {
                on(i, codes[i + 1]);
            }
            hits &= hits - 1;
        }
        k += 8;
    }
    *was = codes[n];
}

/// The changes of a row of targets: `on(k, target)` for every `k` whose target differs
/// from the previous one (`prev` before the first), eight at a time.
#[inline(always)]
fn changes(t: &[i8], prev: i8, mut on: impl FnMut(usize, i8)) {
    let mut last = prev;
    let mut chunks = t.chunks_exact(8);
    let mut k = 0;
    for chunk in chunks.by_ref() {
        let mut b = [0u8; 8];
        for (x, v) in b.iter_mut().zip(chunk) {
            *x = *v as u8;
        }
        let w = u64::from_le_bytes(b);
        // each byte against the one before it (the previous chunk's last for the first)
        let shifted = (w << 8) | u64::from(last as u8);
        if w != shifted {
            for (i, v) in chunk.iter().enumerate() {
                if *v != last {
                    on(k + i, *v);
                }
                last = *v;
            }
        }
        last = chunk[7];
        k += 8;
    }
    for (i, v) in chunks.remainder().iter().enumerate() {
        if *v != last {
            on(k + i, *v);
        }
        last = *v;
    }
}

/// Units of work per thread: a unit's sets step over a tile of bars before the next.
const UNITS_PER_THREAD: usize = 2;
/// Bars of a tile: one tile of a unit's indicators stays in cache while its groups step.
const TILE: usize = 1024;

/// The equity folds of a group's lanes ([`Fold`] per lane, structure of arrays), with
/// each lane's cash and quantity. Lanes past the group's sets fold a flat portfolio
/// that is never read.
#[derive(Debug, Clone, Copy)]
struct Pack {
    hot: Hot,
    cold: Cold,
    mdd: [f64; LANES],
    /// bars in the market before the current position's first bar
    in_market: [usize; LANES],
    /// the first bar of the current position (window bars)
    since: [usize; LANES],
    /// bars folded (the same for every lane)
    n: usize,
}

impl Pack {
    fn new(initial: f64, finite: bool) -> Self {
        let scale = Fold::scale(0.0);
        Pack {
            hot: Hot {
                last: [initial; LANES],
                sum: [0.0; LANES],
                sum_sq: [0.0; LANES],
                down_sq: [0.0; LANES],
                peak: [initial; LANES],
                floor: [initial * scale; LANES],
            },
            cold: Cold {
                cash: [initial; LANES],
                qty: [0.0; LANES],
                flat: [finite; LANES],
                shift: [0.0; LANES],
                scale: [scale; LANES],
            },
            mdd: [0.0; LANES],
            in_market: [0; LANES],
            since: [0; LANES],
            n: 0,
        }
    }

    /// The window's first bar, lane by lane: `Fold::push` of the first equity (its
    /// return is the shift of the sums).
    fn first(&mut self, close: f64) {
        for l in 0..LANES {
            let (h, c) = (&mut self.hot, &mut self.cold);
            let (cash, qty) = (c.cash[l], c.qty[l]);
            let equity = if c.flat[l] { cash } else { cash + qty * close };
            let r = equity / h.last[l] - 1.0;
            c.shift[l] = r;
            let d = r - c.shift[l];
            h.sum[l] += d;
            h.sum_sq[l] += d * d;
            let neg = if r < 0.0 { r } else { 0.0 };
            h.down_sq[l] += neg * neg;
            h.last[l] = equity;
            if equity >= h.peak[l] {
                h.peak[l] = equity;
                h.floor[l] = equity * c.scale[l];
            } else if equity < h.floor[l] {
                self.low(l);
            }
        }
        self.n += 1;
    }

    /// Lane `l`'s equity is below its floor: its drawdown may be a new low.
    fn low(&mut self, l: usize) {
        let peak = self.hot.peak[l];
        let dd = self.hot.last[l] / peak - 1.0;
        if dd < self.mdd[l] {
            self.mdd[l] = dd;
            self.cold.scale[l] = Fold::scale(dd);
            self.hot.floor[l] = peak * self.cold.scale[l];
        }
    }

    /// The lanes of `low` (bit `l` for lane `l`).
    #[cold]
    #[inline(never)]
    fn lows(&mut self, low: u32) {
        for l in 0..LANES {
            if low & (1 << l) != 0 {
                self.low(l);
            }
        }
    }

    /// Lane `l`'s position changes from window bar `bar` on: its new cash and quantity.
    fn set_position(&mut self, l: usize, bar: usize, cash: f64, qty: f64, finite: bool) {
        if self.cold.qty[l] != 0.0 {
            self.in_market[l] += bar - self.since[l];
        }
        self.since[l] = bar;
        self.cold.cash[l] = cash;
        self.cold.qty[l] = qty;
        self.cold.flat[l] = qty == 0.0 && finite;
    }

    /// Lane `l`'s fold.
    fn fold(&self, l: usize) -> Fold {
        let h = &self.hot;
        let mut in_market = self.in_market[l];
        if self.cold.qty[l] != 0.0 {
            in_market += self.n - self.since[l];
        }
        Fold {
            n: self.n,
            last: h.last[l],
            shift: self.cold.shift[l],
            sum: h.sum[l],
            sum_sq: h.sum_sq[l],
            down_sq: h.down_sq[l],
            mdd: self.mdd[l],
            in_market,
        }
    }
}

/// Up to [`LANES`] sets stepping together.
struct Group<'a> {
    lanes: Vec<Lane<'a>>,
    pack: Pack,
    traced: bool,
}

impl<'a> Group<'a> {
    fn new(env: &Env<'a>, lo: usize, hi: usize) -> Self {
        let lanes: Vec<Lane<'a>> = (lo..hi).map(|i| env.lane(i)).collect();
        Group {
            traced: lanes.iter().any(|l| l.traced),
            lanes,
            pack: Pack::new(env.settings.initial_capital, env.finite),
        }
    }

    /// Bars `[t0, t1)`: every lane's signal, then the portfolios inside the window.
    ///
    /// # Safety
    /// The CPU runs the instruction set of `T`.
    #[inline(always)]
    unsafe fn advance<T: Lanes>(&mut self, env: &Env<'_>, t0: usize, t1: usize, fills: &mut [u8]) {
        fills.fill(0);
        for (l, lane) in self.lanes.iter_mut().enumerate() {
            lane.signal(env.start, t0, t1, 1 << l, fills);
        }
        let mut j0 = t0.max(env.start);
        if j0 == env.start && j0 < t1 {
            self.pack.first(env.close[j0]);
            if self.traced {
                trace(&mut self.lanes, &self.pack.hot.last, &self.pack.cold.qty);
            }
            self.after(env, j0, t0, fills);
            j0 += 1;
        }
        if j0 < t1 {
            if self.traced {
                self.book::<T, true>(env, j0, t1, t0, fills);
            } else {
                self.book::<T, false>(env, j0, t1, t0, fills);
            }
        }
    }

    /// The portfolios over window bars `[j0, j1)` (past the window's first) of the tile
    /// starting at `t0`: the lanes' folds run in registers from one rare bar to the next
    /// (a drawdown low, a fill), which is then handled lane by lane.
    ///
    /// # Safety
    /// The CPU runs the instruction set of `T`.
    #[inline(always)]
    unsafe fn book<T: Lanes, const TRACED: bool>(
        &mut self,
        env: &Env<'_>,
        j0: usize,
        j1: usize,
        t0: usize,
        fills: &[u8],
    ) {
        let mut j = j0;
        while j < j1 {
            let lanes = &mut self.lanes;
            let (k, low) = lanes::fold::<T, TRACED>(
                &mut self.pack.hot,
                &self.pack.cold,
                &env.close[j..j1],
                &fills[j - t0..j1 - t0],
                |last, qty| trace(lanes, last, qty),
            );
            j += k;
            self.pack.n += k + 1;
            if low != 0 {
                self.pack.lows(low);
            }
            self.after(env, j, t0, fills);
            j += 1;
        }
    }

    /// After bar `j`'s close (of the tile from `t0`): the lanes that decided a new target
    /// on it are filled at the next bar's open.
    #[inline(always)]
    fn after(&mut self, env: &Env<'_>, j: usize, t0: usize, fills: &[u8]) {
        let due = fills[j - t0];
        if due != 0 && j + 1 < env.close.len() {
            self.fill(env, j, due);
        }
    }

    /// The lanes of `due` changed their decision on bar `j`'s close: fill each at the
    /// open of bar `j + 1`.
    #[cold]
    #[inline(never)]
    fn fill(&mut self, env: &Env<'_>, j: usize, due: u8) {
        let (bar, open_px) = (j + 1 - env.start, env.open[j + 1]);
        let mut due = due;
        while due != 0 {
            let l = due.trailing_zeros() as usize;
            due &= due - 1;
            let Some(lane) = self.lanes.get_mut(l) else {
                continue;
            };
            let Some(&(at, want)) = lane.events.get(lane.next) else {
                continue;
            };
            debug_assert_eq!(at, j);
            lane.next += 1;
            lane.account.cash = self.pack.cold.cash[l];
            lane.account.qty = self.pack.cold.qty[l];
            if let (Some(closed), _) = lane.account.fill(bar, want, open_px) {
                lane.closed.push(closed);
            }
            let (cash, qty) = (lane.account.cash, lane.account.qty);
            self.pack.set_position(l, bar, cash, qty, env.finite);
        }
    }

    fn finish(self, env: &Env<'_>) -> Vec<SetResult> {
        let initial = env.settings.initial_capital;
        let pack = self.pack;
        self.lanes
            .into_iter()
            .enumerate()
            .map(|(l, lane)| {
                let mut out = lane.out;
                for closed in &lane.closed {
                    out.trades.push(env.ts, closed);
                }
                out.metrics = Some(pack.fold(l).metrics(initial, env.ppy, &out.trades.pnl));
                out
            })
            .collect()
    }
}

/// The traced lanes' equity and position at a bar's close.
#[inline(always)]
fn trace(lanes: &mut [Lane<'_>], last: &[f64; LANES], qty: &[f64; LANES]) {
    for (l, lane) in lanes.iter_mut().enumerate() {
        if lane.traced {
            lane.out.equity.push(last[l]);
            lane.out.position.push(qty[l]);
        }
    }
}

/// The summary of a set's equity fold (that of backtest.rs), started from the initial
/// capital: lane `l` of a group's [`Pack`] at the end. A window's first bar is always
/// flat, so its return (the shift of the sums) is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fold {
    n: usize,
    last: f64,
    shift: f64,
    sum: f64,
    sum_sq: f64,
    down_sq: f64,
    mdd: f64,
    in_market: usize,
}

/// The margin of the floor of a drawdown (peak x [`Fold::scale`]), far above the rounding
/// of `equity / peak - 1`.
const FLOOR_MARGIN: f64 = 1e-9;

impl Fold {
    /// The factor of the floor of a drawdown `mdd`: an equity at or above
    /// `peak * scale(mdd)`, a little above `peak * (1 + mdd)` (relatively and
    /// absolutely), has `equity / peak - 1 > mdd` whatever the rounding, so the drawdown
    /// is divided out only near a new low.
    #[inline(always)]
    fn scale(mdd: f64) -> f64 {
        (1.0 + mdd) * (1.0 + FLOOR_MARGIN) + FLOOR_MARGIN
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

    /// The per-set fold of backtest.rs, bar by bar: what the lanes of a [`Pack`] replicate.
    struct Reference {
        fold: Fold,
        peak: f64,
        floor: f64,
    }

    impl Reference {
        fn floor(peak: f64, mdd: f64) -> f64 {
            peak * ((1.0 + mdd) * (1.0 + FLOOR_MARGIN) + FLOOR_MARGIN)
        }

        fn new(initial: f64) -> Self {
            Reference {
                fold: Fold {
                    n: 0,
                    last: initial,
                    shift: 0.0,
                    sum: 0.0,
                    sum_sq: 0.0,
                    down_sq: 0.0,
                    mdd: 0.0,
                    in_market: 0,
                },
                peak: initial,
                floor: Reference::floor(initial, 0.0),
            }
        }

        fn push_flat(&mut self, cash: f64) {
            if self.fold.n == 0 || cash != self.fold.last {
                self.push(cash, 0.0);
            } else {
                self.fold.n += 1;
            }
        }

        fn push(&mut self, equity: f64, position: f64) {
            let f = &mut self.fold;
            let r = equity / f.last - 1.0;
            if f.n == 0 {
                f.shift = r;
            }
            f.n += 1;
            let d = r - f.shift;
            f.sum += d;
            f.sum_sq += d * d;
            let neg = r.min(0.0);
            f.down_sq += neg * neg;
            if equity >= self.peak {
                self.peak = equity;
                self.floor = Reference::floor(equity, f.mdd);
            } else if equity < self.floor {
                let dd = equity / self.peak - 1.0;
                if dd < f.mdd {
                    f.mdd = dd;
                    self.floor = Reference::floor(self.peak, dd);
                }
            }
            f.last = equity;
            if position != 0.0 {
                f.in_market += 1;
            }
        }
    }

    /// The bits of `v`, every NaN as one: Rust leaves a NaN's sign and payload to the
    /// compiler (which may swap the operands of an addition), so only NaN-ness is a result.
    fn bit(v: f64) -> u64 {
        if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        }
    }

    fn metric_bits(m: &Metrics) -> Vec<u64> {
        [
            m.total_return,
            m.sharpe_ratio,
            m.sortino_ratio,
            m.max_drawdown,
            m.exposure,
            m.final_equity,
            m.win_rate,
            m.profit_factor.unwrap_or(-1.0),
        ]
        .iter()
        .map(|v| bit(*v))
        .chain([
            m.trade_count as u64,
            m.bars as u64,
            u64::from(m.profit_factor.is_some()),
        ])
        .collect()
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| bit(*x)).collect()
    }

    /// Every bit of two blocks' results.
    fn assert_same_bits(a: &BlockResult, b: &BlockResult, what: &str) {
        assert_eq!(a.sets.len(), b.sets.len(), "{what}");
        for (k, (x, y)) in a.sets.iter().zip(&b.sets).enumerate() {
            let (mx, my) = (x.metrics.unwrap(), y.metrics.unwrap());
            assert_eq!(metric_bits(&mx), metric_bits(&my), "{what}: set {k}");
            assert_eq!(bits(&x.equity), bits(&y.equity), "{what}: set {k}");
            assert_eq!(bits(&x.position), bits(&y.position), "{what}: set {k}");
            let (tx, ty) = (&x.trades, &y.trades);
            assert_eq!(bits(&tx.pnl), bits(&ty.pnl), "{what}: set {k}");
            assert_eq!(bits(&tx.ret), bits(&ty.ret), "{what}: set {k}");
            assert_eq!(
                bits(&tx.entry_price),
                bits(&ty.entry_price),
                "{what}: set {k}"
            );
            assert_eq!(
                bits(&tx.exit_price),
                bits(&ty.exit_price),
                "{what}: set {k}"
            );
            assert_eq!(bits(&tx.quantity), bits(&ty.quantity), "{what}: set {k}");
            assert_eq!(
                (&tx.entry_ts, &tx.exit_ts, &tx.direction, &tx.bars_held),
                (&ty.entry_ts, &ty.exit_ts, &ty.direction, &ty.bars_held),
                "{what}: set {k}"
            );
        }
    }

    /// Prices that fall 99.9999% and come back, with a NaN, an infinite and a zero close.
    fn crash_prices(n: usize) -> (Vec<i64>, Vec<f64>, Vec<f64>) {
        let (ts, mut open, _) = prices(n, 2);
        let mut close: Vec<f64> = (0..n)
            .map(|i| 100.0 * (1.0 - 0.999_999 * ((i as f64) / 40.0).sin().abs()) + 1e-6)
            .collect();
        for i in 0..n {
            open[i] = if i == 0 { close[0] } else { close[i - 1] };
        }
        close[n / 2] = f64::NAN;
        close[n / 2 + 50] = f64::INFINITY;
        close[n / 2 + 51] = 0.0;
        (ts, open, close)
    }

    /// The results of every set, traced, with its metrics recomputed by the per-set fold
    /// from its curves: the lanes give the per-set fold's bits.
    fn assert_per_set_fold(ts: &[i64], open: &[f64], close: &[f64], start: usize, s: &Settings) {
        let sets = sets();
        let stop = close.len();
        let traced = vec![true; sets.len()];
        let finite = close.iter().all(|c| c.is_finite());
        for isa in Isa::available() {
            let block = run_block_on(
                isa,
                ts,
                open,
                close,
                start,
                stop,
                &sets,
                &traced,
                s,
                &options(2),
            )
            .unwrap();
            for (k, got) in block.sets.iter().enumerate() {
                let mut reference = Reference::new(s.initial_capital);
                for (eq, pos) in got.equity.iter().zip(&got.position) {
                    if *pos == 0.0 && finite {
                        reference.push_flat(*eq);
                    } else {
                        reference.push(*eq, *pos);
                    }
                }
                let want =
                    reference
                        .fold
                        .metrics(s.initial_capital, 252.0 * 390.0, &got.trades.pnl);
                let m = got.metrics.unwrap();
                assert_eq!(metric_bits(&m), metric_bits(&want), "{isa:?}: set {k}");
            }
        }
    }

    #[test]
    fn the_lanes_give_the_per_set_fold_bits() {
        let (ts, open, close) = prices(3000, 29);
        let whole = Settings {
            whole_units: true,
            fraction: 0.5,
            ..costs()
        };
        for s in [costs(), whole, Settings::default()] {
            for start in [0, 1234, 2999] {
                assert_per_set_fold(&ts, &open, &close, start, &s);
            }
        }
        let (ts, open, close) = crash_prices(700);
        for start in [0, 300, 350, 351, 400] {
            assert_per_set_fold(&ts, &open, &close, start, &costs());
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let isas = Isa::available();
        assert!(isas.contains(&Isa::detect()));
        let sets = sets();
        let traced: Vec<bool> = (0..sets.len()).map(|i| i % 5 == 2).collect();
        let mut trades = 0;
        for (ts, open, close) in [prices(5000, 31), crash_prices(2500)] {
            for (start, stop) in [(0, close.len()), (1100, 2400), (2047, 2049)] {
                for threads in [1, 2] {
                    let run = |isa| {
                        run_block_on(
                            isa,
                            &ts,
                            &open,
                            &close,
                            start,
                            stop,
                            &sets,
                            &traced,
                            &costs(),
                            &options(threads),
                        )
                        .unwrap()
                    };
                    let want = run(Isa::Scalar);
                    trades += want.sets.iter().map(|r| r.trades.len()).sum::<usize>();
                    for isa in &isas {
                        assert_same_bits(&run(*isa), &want, &format!("{isa:?} {start}..{stop}"));
                    }
                }
            }
        }
        assert!(trades > 100);
    }

    #[test]
    fn crossings_and_changes_find_every_bar() {
        // codes 0 (equal or NaN), 1 (below), 2 (above) in every order, past a chunk of 8
        let f: Vec<f64> = (0..203).map(|i| ((i * 7919) % 13) as f64).collect();
        let mut s: Vec<f64> = (0..203).map(|i| ((i * 104_729) % 11) as f64).collect();
        s[17] = f64::NAN;
        for was in 0..3u8 {
            for len in [0, 1, 7, 8, 9, 64, 203] {
                let code = |k: usize| u8::from(f[k] < s[k]) | (u8::from(f[k] > s[k]) << 1);
                let mut prev = was;
                let mut want = Vec::new();
                for k in 0..len {
                    if prev ^ code(k) == 3 {
                        want.push((k, code(k)));
                    }
                    prev = code(k);
                }
                let mut got = Vec::new();
                let mut w = was;
                crossings(&f[..len], &s[..len], &mut w, |k, c| got.push((k, c)));
                assert_eq!(got, want, "was {was}, {len} bars");
                assert_eq!(w, prev);
            }
        }
        let t: Vec<i8> = (0..203).map(|i| ((i * 37 / 5) % 3) as i8 - 1).collect();
        for prev in [-1i8, 0, 1] {
            for len in [0, 1, 7, 8, 9, 203] {
                let mut want = Vec::new();
                let mut last = prev;
                for (k, v) in t[..len].iter().enumerate() {
                    if *v != last {
                        want.push((k, *v));
                    }
                    last = *v;
                }
                let mut got = Vec::new();
                changes(&t[..len], prev, |k, v| got.push((k, v)));
                assert_eq!(got, want, "prev {prev}, {len} targets");
            }
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
