//! The vectorized exponential, written once over [`Simd`].
//!
//! Method (Cody-Waite range reduction with a two-part `ln 2`, degree-5 minimax polynomial,
//! reconstruction by building `2^n` in the exponent field). The constants are the published
//! minimax coefficients of XNNPACK's `rr2_p5` f32 exp (BSD licence); the code is ours.
//!
//! `x = n ln2 + t` with `n = round(x log2 e)` and `|t| <= ln2 / 2`; `exp(x) = 2^n (1 + t p(t))`.
//! `n ln2_hi` is exact (`ln2_hi` has 9 trailing zero bits and `|n| <= 150`), so `t` carries only
//! the rounding of `n ln2_lo`. The error bound (at most 2 ULP against the correctly rounded
//! result, on every f32 in `[-87.33654, 0]`) is checked exhaustively by
//! `tests/exp_exhaustive.rs` on every tier.

use crate::arch::vector::Simd;

pub(crate) const LOG2E: f32 = f32::from_bits(0x3FB8_AA3B); // 0x1.715476p+0
/// `1.5 * 2^23 + 127`: adding it rounds `x log2 e` to an integer and leaves `n + 127` in the low
/// mantissa bits, ready to be shifted into the exponent field.
pub(crate) const MAGIC_BIAS: f32 = f32::from_bits(0x4B40_007F); // 0x1.8000FEp23
pub(crate) const LN2_HI: f32 = f32::from_bits(0x3F31_7200); // 0x1.62E400p-1
pub(crate) const LN2_LO: f32 = f32::from_bits(0x35BF_BE8E); // 0x1.7F7D1Cp-20
pub(crate) const C1: f32 = f32::from_bits(0x3F7F_FFFB); // 0x1.FFFFF6p-1
pub(crate) const C2: f32 = f32::from_bits(0x3EFF_FEE3); // 0x1.FFFDC6p-2
pub(crate) const C3: f32 = f32::from_bits(0x3E2A_AD40); // 0x1.555A80p-3
pub(crate) const C4: f32 = f32::from_bits(0x3D2B_9D0D); // 0x1.573A1Ap-5
pub(crate) const C5: f32 = f32::from_bits(0x3C07_CFCE); // 0x1.0F9F9Cp-7
/// [`exp_nonpos`] raises its argument to at least this value. `round(-88 log2 e) = -127`, so the
/// rebuilt scale `2^(n + 127 - 127)` has a zero exponent field: the result is exactly 0 for
/// every `x <= -87.68` (including `-inf`), with no compare-and-select in the hot loop.
pub(crate) const NONPOS_FLOOR: f32 = -88.0;
/// [`exp_full`] clamps its argument to `[FULL_LO, FULL_HI]`: below, the result rounds to 0;
/// above, it overflows to `+inf`.
pub(crate) const FULL_LO: f32 = -104.0;
pub(crate) const FULL_HI: f32 = 89.0;

/// `exp(x)` for `x <= 0` (the arguments softmax produces after subtracting the row maximum).
///
/// * `x` in `[-87.33654, 0]`: within 2 ULP of the correctly rounded result (a normal number).
/// * `x` in `(-87.68, -87.33654)`: the subnormal result, within 2 ULP of the correctly rounded
///   one (`2^-126` times a scaled polynomial, rounded once by the final FMA).
/// * `x <= -87.68`, including `-inf`: exactly `0.0` (`exp(x) < 2^-126.5`). (The AVX-512 tier
///   overrides this function with `vscalefps`, which rounds subnormal results below this too.)
/// * NaN: NaN.
/// * `x` in `(0, 64]`: within 2 ULP (checked exhaustively too: the short softmax rows pass
///   unshifted logits, see `generic::softmax::exp_unshifted`); correct up to `x = 88.37`.
#[inline(always)]
pub(crate) fn exp_nonpos<S: Simd>(s: S, x: S::V) -> S::V {
    s.exp_nonpos(x)
}

/// The generic body of [`exp_nonpos`] (the [`Simd::exp_nonpos`] default).
#[inline(always)]
pub(crate) fn exp_nonpos_generic<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.floor_at(x, s.splat(NONPOS_FLOOR));
    let magic = s.splat(MAGIC_BIAS);
    let biased = s.fma(x, s.splat(LOG2E), magic);
    let scale = s.shl23(biased);
    let n = s.sub(biased, magic);
    let t = s.fma(n, s.splat(-LN2_HI), x);
    let t = s.fma(n, s.splat(-LN2_LO), t);
    let p = poly(s, t);
    let ts = s.mul(t, scale);
    s.fma(ts, p, scale)
}

/// `exp(x)` for every f32: the same polynomial, with `2^n` applied in two normal factors so
/// that results down to the smallest subnormal are rounded correctly and large arguments
/// overflow to `+inf`. `-inf` gives 0, `+inf` gives `+inf`, NaN gives NaN.
#[inline(always)]
pub(crate) fn exp_full<S: Simd>(s: S, x: S::V) -> S::V {
    let xc = s.clamp(x, s.splat(FULL_LO), s.splat(FULL_HI));
    let n = s.round(s.mul(xc, s.splat(LOG2E)));
    let t = s.fma(n, s.splat(-LN2_HI), xc);
    let t = s.fma(n, s.splat(-LN2_LO), t);
    let p = poly(s, t);
    let one = s.splat(1.0);
    let f = s.fma(t, p, one);
    // n is in [-150, 129]; split it into n1 in [-126, 127] and n2 = n - n1 in [-24, 2].
    let n1 = s.clamp(n, s.splat(-126.0), s.splat(127.0));
    let n2 = s.sub(n, n1);
    s.mul(s.mul(f, s.pow2i(n1)), s.pow2i(n2))
}

/// `p(t) = c1 + c2 t + c3 t^2 + c4 t^3 + c5 t^4`, so that `exp(t) ~ 1 + t p(t)`.
#[inline(always)]
fn poly<S: Simd>(s: S, t: S::V) -> S::V {
    let p = s.fma(s.splat(C5), t, s.splat(C4));
    let p = s.fma(p, t, s.splat(C3));
    let p = s.fma(p, t, s.splat(C2));
    s.fma(p, t, s.splat(C1))
}

/// Applies [`exp_nonpos`] (`FULL == false`) or [`exp_full`] to `n` floats.
///
/// # Safety
/// `x .. x + n` must be valid for reads and `y .. y + n` for writes; they may be the same range
/// but must not overlap otherwise. The caller's token proves the tier's CPU features.
#[inline(always)]
pub(crate) unsafe fn exp_map<S: Simd, const FULL: bool>(
    s: S,
    x: *const f32,
    y: *mut f32,
    n: usize,
) {
    let w = S::LANES;
    let mut i = 0;
    // SAFETY: every access below is within `0..n` (`i + w <= n` for full vectors, a partial
    // access of `n - i < w` lanes for the tail), which the caller guarantees is valid.
    unsafe {
        while i + w <= n {
            let v = s.load(x.add(i));
            let e = if FULL {
                exp_full(s, v)
            } else {
                exp_nonpos(s, v)
            };
            s.store(y.add(i), e);
            i += w;
        }
        if i < n {
            let v = s.load_partial(x.add(i), n - i, 0.0);
            let e = if FULL {
                exp_full(s, v)
            } else {
                exp_nonpos(s, v)
            };
            s.store_partial(y.add(i), n - i, e);
        }
    }
}

/// `cap * tanh(x / cap)` (logit soft-capping), through `tanh(u) = sign(u) (1 - 2 / (exp(2|u|) + 1))`.
/// The absolute error is a few ULP of `cap` (the formula cancels for tiny `|u|`, where the
/// result's relative error grows but its absolute error stays below `cap * 2^-22`). NaN gives
/// NaN; `±inf` gives `±cap`.
#[inline(always)]
pub(crate) fn softcap<S: Simd>(s: S, x: S::V, cap: S::V, inv_cap: S::V) -> S::V {
    let u = s.mul(x, inv_cap);
    let e = exp_full(s, s.add(s.abs(u), s.abs(u)));
    let one = s.splat(1.0);
    let t = s.sub(one, s.div(s.splat(2.0), s.add(e, one)));
    s.mul(cap, s.copysign(t, u))
}
