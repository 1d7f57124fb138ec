//! The position book of an event ring: per symbol, a lot built from FILL events.
//!
//! A fill's quantity is signed (buy > 0, sell < 0). A fill on the side of the lot (or
//! on a flat lot) opens or adds to it at the quantity-weighted average price; a fill
//! against it closes `min(|fill|, |lot|)` at the average entry price: a partial close
//! keeps the rest at that average, a full close leaves the lot flat, a larger fill
//! reverses it (the rest opens at the fill's price). Each closing fill makes one
//! trade. The `value` of a fill is cash (a commission as a negative value); the
//! opening fills' value is carried by the lot and assigned to its trades in
//! proportion to the quantity closed. The formulas are those of the pure backend
//! (`phasekit._pure.ring`), operation for operation.

/// A fill within this fraction of the lot's size closes the lot exactly.
pub const FLAT_TOLERANCE: f64 = 1e-9;
/// Keys of a position row (`EventRing.positions()`).
pub const POSITION_FIELDS: [&str; 5] = ["symbol", "quantity", "avg_price", "open_ts", "n_events"];
/// Keys of the realized counters (`EventRing.realized()`).
pub const REALIZED_FIELDS: [&str; 6] = [
    "trades",
    "winning",
    "losing",
    "pnl",
    "gross_profit",
    "gross_loss",
];

/// Whether a FILL of this quantity moves the book (non-zero and finite).
#[inline]
pub fn moves(quantity: f64) -> bool {
    quantity != 0.0 && quantity.is_finite()
}

/// The book's position in one symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lot {
    /// Signed quantity; 0.0 when flat.
    pub qty: f64,
    /// Average entry price.
    pub avg: f64,
    /// Time of the fill that opened the lot.
    pub open_ts: i64,
    /// Value of the opening fills not yet assigned to a trade.
    pub cost: f64,
    /// Fills of the lot so far.
    pub n_events: u64,
}

impl Default for Lot {
    fn default() -> Lot {
        Lot {
            qty: 0.0,
            avg: 0.0,
            open_ts: 0,
            cost: 0.0,
            n_events: 0,
        }
    }
}

/// What a closing fill did to its lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Part of the lot closed; the rest keeps its average entry.
    Partial,
    /// The lot is flat.
    Flat,
    /// The lot closed and the rest of the fill opened the other side.
    Reversed,
}

/// One closed trade of the book (`quantity` signed: > 0 a long, < 0 a short).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Closed {
    pub open_ts: i64,
    pub entry_price: f64,
    pub quantity: f64,
    pub pnl: f64,
    /// Events of the lot including the closing fill.
    pub n_events: u64,
    pub step: Step,
}

/// What a fill did to its lot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Opened a flat lot or added to it.
    Added,
    Closed(Closed),
}

impl Lot {
    fn open(&mut self, ts: i64, q: f64, p: f64, v: f64) {
        self.qty = q;
        self.avg = p;
        self.open_ts = ts;
        self.cost = v;
        self.n_events = 0;
    }

    /// Applies a fill of quantity `q` (moving: see [`moves`]) at price `p` with cash `v`.
    pub fn apply(&mut self, ts: i64, q: f64, p: f64, v: f64) -> Outcome {
        let qty = self.qty;
        if qty == 0.0 {
            self.open(ts, q, p, v);
        } else if (q > 0.0) == (qty > 0.0) {
            let a = qty.abs();
            let b = q.abs();
            self.avg = (a * self.avg + b * p) / (a + b);
            self.qty = qty + q;
            self.cost += v;
        } else {
            return Outcome::Closed(self.reduce(ts, q, p, v));
        }
        self.n_events += 1;
        Outcome::Added
    }

    fn reduce(&mut self, ts: i64, q: f64, p: f64, v: f64) -> Closed {
        let a = self.qty.abs();
        let b = q.abs();
        let side = if self.qty > 0.0 { 1.0 } else { -1.0 };
        let (closed, pos_share, fill_share, step) = if (b - a).abs() <= FLAT_TOLERANCE * a {
            (a, 1.0, 1.0, Step::Flat)
        } else if b < a {
            (b, b / a, 1.0, Step::Partial)
        } else {
            (a, 1.0, a / b, Step::Reversed)
        };
        let pnl = side * (p - self.avg) * closed + self.cost * pos_share + v * fill_share;
        let out = Closed {
            open_ts: self.open_ts,
            entry_price: self.avg,
            quantity: side * closed,
            pnl,
            n_events: self.n_events + 1,
            step,
        };
        match step {
            Step::Partial => {
                self.qty += q;
                self.cost -= self.cost * pos_share;
                self.n_events = out.n_events;
            }
            Step::Flat => *self = Lot::default(),
            Step::Reversed => {
                let rest = b - a;
                self.open(
                    ts,
                    if q > 0.0 { rest } else { -rest },
                    p,
                    v - v * fill_share,
                );
                self.n_events = 1;
            }
        }
        out
    }
}

/// Counters of every closed trade.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Realized {
    pub trades: u64,
    pub winning: u64,
    pub losing: u64,
    pub pnl: f64,
    pub gross_profit: f64,
    pub gross_loss: f64,
}

impl Realized {
    pub fn record(&mut self, pnl: f64) {
        self.trades += 1;
        self.pnl += pnl;
        if pnl > 0.0 {
            self.winning += 1;
            self.gross_profit += pnl;
        } else if pnl < 0.0 {
            self.losing += 1;
            self.gross_loss -= pnl;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(o: Outcome) -> Closed {
        match o {
            Outcome::Closed(c) => c,
            Outcome::Added => panic!("expected a close"),
        }
    }

    #[test]
    fn open_add_partial_and_full_close() {
        let mut lot = Lot::default();
        assert_eq!(lot.apply(1, 100.0, 10.0, -1.0), Outcome::Added);
        assert_eq!(lot.apply(2, 100.0, 12.0, -1.0), Outcome::Added);
        assert_eq!(
            (lot.qty, lot.avg, lot.cost, lot.n_events),
            (200.0, 11.0, -2.0, 2)
        );
        let c = closed(lot.apply(3, -50.0, 15.0, -0.5));
        // 4 x 50 at average 11, a quarter of the opening cost, all the closing cost
        assert_eq!(
            (c.quantity, c.entry_price, c.pnl),
            (50.0, 11.0, 200.0 - 0.5 - 0.5)
        );
        assert_eq!((c.step, c.n_events, c.open_ts), (Step::Partial, 3, 1));
        assert_eq!((lot.qty, lot.avg, lot.cost), (150.0, 11.0, -1.5));
        let c = closed(lot.apply(4, -150.0, 9.0, 0.0));
        assert_eq!(
            (c.quantity, c.pnl, c.step, c.n_events),
            (150.0, -300.0 - 1.5, Step::Flat, 4)
        );
        assert_eq!(lot, Lot::default());
    }

    #[test]
    fn short_and_reversal() {
        let mut lot = Lot::default();
        lot.apply(1, -10.0, 50.0, 0.0);
        let c = closed(lot.apply(2, 30.0, 40.0, -3.0));
        // covers 10 short at 50 for 40: +100, a third of the fill's cost
        assert_eq!(
            (c.quantity, c.entry_price, c.pnl),
            (-10.0, 50.0, 100.0 - 1.0)
        );
        assert_eq!(c.step, Step::Reversed);
        assert_eq!(
            (lot.qty, lot.avg, lot.open_ts, lot.cost, lot.n_events),
            (20.0, 40.0, 2, -2.0, 1)
        );
    }

    #[test]
    fn near_equal_size_closes_flat() {
        let mut lot = Lot::default();
        lot.apply(1, 0.1, 1.0, 0.0);
        lot.apply(2, 0.2, 1.0, 0.0);
        let c = closed(lot.apply(3, -0.3, 2.0, 0.0));
        assert_eq!(c.step, Step::Flat);
        assert_eq!(lot.qty, 0.0);
    }

    #[test]
    fn realized_counts_wins_and_losses() {
        let mut r = Realized::default();
        for pnl in [5.0, -2.0, 0.0, 1.0] {
            r.record(pnl);
        }
        assert_eq!((r.trades, r.winning, r.losing), (4, 2, 1));
        assert_eq!((r.pnl, r.gross_profit, r.gross_loss), (4.0, 6.0, 2.0));
        assert!(moves(1.0) && !moves(0.0) && !moves(f64::NAN) && !moves(f64::INFINITY));
    }
}
