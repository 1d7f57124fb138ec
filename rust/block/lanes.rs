//! The equity folds of a group of [`LANES`] sets, one vector operation per state for all
//! of them: each lane takes the IEEE operations of the per-set fold in the same order,
//! so its bits are the per-set fold's; only the vector width differs between the
//! implementations of [`Lanes`] (plain arrays, SSE2, AVX).

/// Sets whose folds step together.
pub(super) const LANES: usize = 8;

/// One f64 per lane; a condition is a lane of all ones (true) or all zeros.
///
/// # Safety
/// Every method needs the CPU to run the instruction set of the implementation.
pub(super) trait Lanes: Copy {
    unsafe fn load(a: &[f64; LANES]) -> Self;
    unsafe fn store(self, a: &mut [f64; LANES]);
    unsafe fn splat(x: f64) -> Self;
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `self` where `self < o`, else `o` (`o` when either is NaN).
    unsafe fn lt_or(self, o: Self) -> Self;
    /// `self == o` (false when either is NaN).
    unsafe fn eq(self, o: Self) -> Self;
    /// `self >= o` (false when either is NaN).
    unsafe fn ge(self, o: Self) -> Self;
    /// `self < o` (false when either is NaN).
    unsafe fn lt(self, o: Self) -> Self;
    /// `o` and not `self`.
    unsafe fn and_not(self, o: Self) -> Self;
    /// `a` where the condition `self` holds, else `b`.
    unsafe fn pick(self, a: Self, b: Self) -> Self;
    /// Bit `l` set where lane `l`'s condition holds.
    unsafe fn bits(self) -> u32;
}

/// The states of a group's folds that change at every bar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hot {
    pub(super) last: [f64; LANES],
    pub(super) sum: [f64; LANES],
    pub(super) sum_sq: [f64; LANES],
    pub(super) down_sq: [f64; LANES],
    pub(super) peak: [f64; LANES],
    pub(super) floor: [f64; LANES],
}

/// The states of a group's lanes that change only on a rare bar (a fill, a new low).
#[derive(Debug, Clone, Copy)]
pub(super) struct Cold {
    pub(super) cash: [f64; LANES],
    pub(super) qty: [f64; LANES],
    /// flat with finite closes: the equity is the cash
    pub(super) flat: [bool; LANES],
    pub(super) shift: [f64; LANES],
    /// `Fold::floor`'s factor of the lane's drawdown: a new peak's floor is peak x scale
    pub(super) scale: [f64; LANES],
}

/// [`Hot`] in registers.
#[derive(Clone, Copy)]
struct Regs<T> {
    last: T,
    sum: T,
    sum_sq: T,
    down_sq: T,
    peak: T,
    floor: T,
}

/// [`Cold`] in registers, with the constants of a bar.
#[derive(Clone, Copy)]
struct Consts<T> {
    cash: T,
    qty: T,
    /// the cash of a flat lane, NaN (equal to nothing) for the others
    flat_cash: T,
    shift: T,
    scale: T,
    one: T,
    zero: T,
}

impl<T: Lanes> Regs<T> {
    /// One bar's close for every lane past the window's first: `Fold::push` of the
    /// lane's equity (its cash when flat), or, for a flat lane whose cash is the last
    /// equity, nothing (as `Fold::push_flat`). Branch-free; returns the lanes whose
    /// equity fell below their floor (bit `l` for lane `l`): their drawdown may be a
    /// new low, which the caller divides out.
    ///
    /// `PLAIN`: every lane's cash is finite and not 0 and its shift is +0, so the push
    /// of a flat lane whose cash is the last equity changes no bit (its return is
    /// cash / cash - 1 = +0, and a sum that starts at +0 is never -0, so adding +0 keeps
    /// it; its peak and floor are rewritten with themselves): the selects that skip it
    /// are left out, except for the floor test.
    #[inline(always)]
    unsafe fn bar<const PLAIN: bool>(&mut self, c: &Consts<T>, close: f64) -> u32 {
        // a flat lane's quantity is +0 and its cash never -0 (an exact zero sum is +0),
        // so with finite closes cash + 0 x close is its cash
        let equity = c.cash.add(c.qty.mul(T::splat(close)));
        let keep = c.flat_cash.eq(self.last);
        let r = equity.div(self.last).sub(c.one);
        // r - (+0) is r, bit for bit
        let d = if PLAIN { r } else { r.sub(c.shift) };
        let neg = r.lt_or(c.zero);
        let ge = equity.ge(self.peak);
        let below = ge.and_not(keep.and_not(equity.lt(self.floor)));
        if PLAIN {
            self.sum = self.sum.add(d);
            self.sum_sq = self.sum_sq.add(d.mul(d));
            self.down_sq = self.down_sq.add(neg.mul(neg));
            self.peak = ge.pick(equity, self.peak);
            self.floor = ge.pick(equity.mul(c.scale), self.floor);
            self.last = equity;
        } else {
            self.sum = keep.pick(self.sum, self.sum.add(d));
            self.sum_sq = keep.pick(self.sum_sq, self.sum_sq.add(d.mul(d)));
            self.down_sq = keep.pick(self.down_sq, self.down_sq.add(neg.mul(neg)));
            let top = keep.and_not(ge);
            self.peak = top.pick(equity, self.peak);
            self.floor = top.pick(equity.mul(c.scale), self.floor);
            self.last = keep.pick(self.last, equity);
        }
        below.bits()
    }

    /// Folds `close[k]`, k = 0, 1, ..., until a bar after which `rare[k]` is not 0, a
    /// lane is below its floor, or the last; returns that bar and its lanes below.
    #[inline(always)]
    unsafe fn run<const PLAIN: bool, const TRACED: bool>(
        &mut self,
        c: &Consts<T>,
        close: &[f64],
        rare: &[u8],
        qty: &[f64; LANES],
        mut trace: impl FnMut(&[f64; LANES], &[f64; LANES]),
    ) -> (usize, u32) {
        let end = close.len() - 1;
        let mut k = 0;
        let mut last = [0.0; LANES];
        loop {
            let low = self.bar::<PLAIN>(c, close[k]);
            if TRACED {
                self.last.store(&mut last);
                trace(&last, qty);
            }
            if low != 0 || rare[k] != 0 || k == end {
                return (k, low);
            }
            k += 1;
        }
    }
}

/// Folds the closes `close[k]`, k = 0, 1, ..., into `hot` until the bar after which
/// `rare[k]` is not 0, a lane's equity fell below its floor, or the last; returns that
/// bar and its lanes below the floor. `trace(last, qty)` after every bar when `TRACED`.
///
/// # Safety
/// The CPU runs the instruction set of `T`. `close` and `rare` are not empty and
/// `rare` is at least as long as `close`.
#[inline(always)]
pub(super) unsafe fn fold<T: Lanes, const TRACED: bool>(
    hot: &mut Hot,
    cold: &Cold,
    close: &[f64],
    rare: &[u8],
    trace: impl FnMut(&[f64; LANES], &[f64; LANES]),
) -> (usize, u32) {
    let mut flat_cash = [f64::NAN; LANES];
    for (m, (f, cash)) in flat_cash
        .iter_mut()
        .zip(cold.flat.iter().zip(cold.cash.iter()))
    {
        if *f {
            *m = *cash;
        }
    }
    let plain = cold
        .cash
        .iter()
        .zip(cold.shift.iter())
        .all(|(cash, shift)| cash.is_finite() && *cash != 0.0 && shift.to_bits() == 0);
    let c = Consts {
        cash: T::load(&cold.cash),
        qty: T::load(&cold.qty),
        flat_cash: T::load(&flat_cash),
        shift: T::load(&cold.shift),
        scale: T::load(&cold.scale),
        one: T::splat(1.0),
        zero: T::splat(0.0),
    };
    let mut r = Regs {
        last: T::load(&hot.last),
        sum: T::load(&hot.sum),
        sum_sq: T::load(&hot.sum_sq),
        down_sq: T::load(&hot.down_sq),
        peak: T::load(&hot.peak),
        floor: T::load(&hot.floor),
    };
    let out = if plain {
        r.run::<true, TRACED>(&c, close, rare, &cold.qty, trace)
    } else {
        r.run::<false, TRACED>(&c, close, rare, &cold.qty, trace)
    };
    r.last.store(&mut hot.last);
    r.sum.store(&mut hot.sum);
    r.sum_sq.store(&mut hot.sum_sq);
    r.down_sq.store(&mut hot.down_sq);
    r.peak.store(&mut hot.peak);
    r.floor.store(&mut hot.floor);
    out
}

/// Plain arrays: any target.
#[derive(Clone, Copy)]
pub(super) struct Scalar([f64; LANES]);

impl Scalar {
    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(f64, f64) -> f64) -> Self {
        let mut out = [0.0; LANES];
        for (x, (a, b)) in out.iter_mut().zip(self.0.iter().zip(o.0.iter())) {
            *x = f(*a, *b);
        }
        Scalar(out)
    }

    #[inline(always)]
    fn test(self, o: Self, f: impl Fn(f64, f64) -> bool) -> Self {
        self.zip(o, |a, b| f64::from_bits(if f(a, b) { u64::MAX } else { 0 }))
    }

    #[inline(always)]
    fn bitwise(self, o: Self, f: impl Fn(u64, u64) -> u64) -> Self {
        self.zip(o, |a, b| f64::from_bits(f(a.to_bits(), b.to_bits())))
    }
}

impl Lanes for Scalar {
    #[inline(always)]
    unsafe fn load(a: &[f64; LANES]) -> Self {
        Scalar(*a)
    }
    #[inline(always)]
    unsafe fn store(self, a: &mut [f64; LANES]) {
        *a = self.0;
    }
    #[inline(always)]
    unsafe fn splat(x: f64) -> Self {
        Scalar([x; LANES])
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| a + b)
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| a - b)
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        self.zip(o, |a, b| a * b)
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        self.zip(o, |a, b| a / b)
    }
    #[inline(always)]
    unsafe fn lt_or(self, o: Self) -> Self {
        self.zip(o, |a, b| if a < b { a } else { b })
    }
    #[inline(always)]
    unsafe fn eq(self, o: Self) -> Self {
        self.test(o, |a, b| a == b)
    }
    #[inline(always)]
    unsafe fn ge(self, o: Self) -> Self {
        self.test(o, |a, b| a >= b)
    }
    #[inline(always)]
    unsafe fn lt(self, o: Self) -> Self {
        self.test(o, |a, b| a < b)
    }
    #[inline(always)]
    unsafe fn and_not(self, o: Self) -> Self {
        self.bitwise(o, |a, b| !a & b)
    }
    #[inline(always)]
    unsafe fn pick(self, a: Self, b: Self) -> Self {
        let mut out = [0.0; LANES];
        for (x, (m, (p, q))) in out
            .iter_mut()
            .zip(self.0.iter().zip(a.0.iter().zip(b.0.iter())))
        {
            *x = if m.to_bits() != 0 { *p } else { *q };
        }
        Scalar(out)
    }
    #[inline(always)]
    unsafe fn bits(self) -> u32 {
        let mut out = 0;
        for (l, m) in self.0.iter().enumerate() {
            out |= ((m.to_bits() >> 63) as u32) << l;
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx, Sse2};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, LANES};
    use std::arch::x86_64::*;

    /// Four SSE2 registers of two lanes (the x86-64 baseline).
    #[derive(Clone, Copy)]
    pub(in crate::block) struct Sse2([__m128d; LANES / 2]);

    /// Two AVX registers of four lanes.
    #[derive(Clone, Copy)]
    pub(in crate::block) struct Avx([__m256d; LANES / 4]);

    macro_rules! each {
        ($t:ident, $n:expr, $a:expr, $b:expr, $f:expr) => {{
            let (a, b) = ($a, $b);
            let mut out = a;
            for i in 0..$n {
                out[i] = $f(a[i], b[i]);
            }
            $t(out)
        }};
    }

    impl Lanes for Sse2 {
        #[inline(always)]
        unsafe fn load(a: &[f64; LANES]) -> Self {
            let p = a.as_ptr();
            let mut out = [_mm_setzero_pd(); LANES / 2];
            for (i, x) in out.iter_mut().enumerate() {
                *x = _mm_loadu_pd(p.add(2 * i));
            }
            Sse2(out)
        }
        #[inline(always)]
        unsafe fn store(self, a: &mut [f64; LANES]) {
            let p = a.as_mut_ptr();
            for (i, x) in self.0.iter().enumerate() {
                _mm_storeu_pd(p.add(2 * i), *x);
            }
        }
        #[inline(always)]
        unsafe fn splat(x: f64) -> Self {
            Sse2([_mm_set1_pd(x); LANES / 2])
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_add_pd(a, b))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_sub_pd(a, b))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_mul_pd(a, b))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_div_pd(a, b))
        }
        #[inline(always)]
        unsafe fn lt_or(self, o: Self) -> Self {
            // minpd: the first operand where it is less, else the second
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_min_pd(a, b))
        }
        #[inline(always)]
        unsafe fn eq(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_cmpeq_pd(a, b))
        }
        #[inline(always)]
        unsafe fn ge(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_cmpge_pd(a, b))
        }
        #[inline(always)]
        unsafe fn lt(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_cmplt_pd(a, b))
        }
        #[inline(always)]
        unsafe fn and_not(self, o: Self) -> Self {
            each!(Sse2, LANES / 2, self.0, o.0, |a, b| _mm_andnot_pd(a, b))
        }
        #[inline(always)]
        unsafe fn pick(self, a: Self, b: Self) -> Self {
            let mut out = a.0;
            for (i, x) in out.iter_mut().enumerate() {
                let m = self.0[i];
                *x = _mm_or_pd(_mm_and_pd(m, a.0[i]), _mm_andnot_pd(m, b.0[i]));
            }
            Sse2(out)
        }
        #[inline(always)]
        unsafe fn bits(self) -> u32 {
            let mut out = 0;
            for (i, m) in self.0.iter().enumerate() {
                out |= (_mm_movemask_pd(*m) as u32) << (2 * i);
            }
            out
        }
    }

    impl Lanes for Avx {
        #[inline(always)]
        unsafe fn load(a: &[f64; LANES]) -> Self {
            let p = a.as_ptr();
            let mut out = [_mm256_setzero_pd(); LANES / 4];
            for (i, x) in out.iter_mut().enumerate() {
                *x = _mm256_loadu_pd(p.add(4 * i));
            }
            Avx(out)
        }
        #[inline(always)]
        unsafe fn store(self, a: &mut [f64; LANES]) {
            let p = a.as_mut_ptr();
            for (i, x) in self.0.iter().enumerate() {
                _mm256_storeu_pd(p.add(4 * i), *x);
            }
        }
        #[inline(always)]
        unsafe fn splat(x: f64) -> Self {
            Avx([_mm256_set1_pd(x); LANES / 4])
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_add_pd(a, b))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_sub_pd(a, b))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_mul_pd(a, b))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_div_pd(a, b))
        }
        #[inline(always)]
        unsafe fn lt_or(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_min_pd(a, b))
        }
        #[inline(always)]
        unsafe fn eq(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_cmp_pd::<
                _CMP_EQ_OQ,
            >(a, b))
        }
        #[inline(always)]
        unsafe fn ge(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_cmp_pd::<
                _CMP_GE_OQ,
            >(a, b))
        }
        #[inline(always)]
        unsafe fn lt(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_cmp_pd::<
                _CMP_LT_OQ,
            >(a, b))
        }
        #[inline(always)]
        unsafe fn and_not(self, o: Self) -> Self {
            each!(Avx, LANES / 4, self.0, o.0, |a, b| _mm256_andnot_pd(a, b))
        }
        #[inline(always)]
        unsafe fn pick(self, a: Self, b: Self) -> Self {
            let mut out = a.0;
            for (i, x) in out.iter_mut().enumerate() {
                *x = _mm256_blendv_pd(b.0[i], a.0[i], self.0[i]);
            }
            Avx(out)
        }
        #[inline(always)]
        unsafe fn bits(self) -> u32 {
            let mut out = 0;
            for (i, m) in self.0.iter().enumerate() {
                out |= (_mm256_movemask_pd(*m) as u32) << (4 * i);
            }
            out
        }
    }
}
