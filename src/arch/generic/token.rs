//! Token log-probabilities and entropy (`crate::token`), written once over [`Simd`] and
//! stamped per tier by [`stamp_tok!`]: one entry per path ([`TokKernels`]), each taking a run
//! of rows ([`TokRows`]) and writing their per-row outputs and gradient rows.
//!
//! One row `x` of `n` logits, temperature `T` (`inv_t = 1 / T`), soft-cap `c` (optional), token
//! `t`: `z = c tanh(x / c)` (or `x`), `z' = z / T`, `m = max z`, `d = (z - m) / T` (so
//! `z' - max z' = d`), `e = exp(d)`, `s = sum e`, `ls = ln s`, and
//!
//! ```text
//! lse' = m / T + ls                 (logsumexp of z')
//! logp = d_t - ls                   (log p_t)
//! H    = ls - sum(d e) / s          (entropy, -sum p log p)
//! dlogp / dz'_k = [k = t] - p_k
//! dH    / dz'_k = -p_k (log p_k + H)
//! ```
//!
//! and `dz_k = dz'_k / T`, times `1 - (z_k / c)^2` with a cap.
//!
//! | path | what a row costs |
//! |---|---|
//! | `TokPath::Forward` | pass 1 (max), pass 2 (exp, sum, `sum d e` when the entropy is needed); with a gradient (upstream known up front) pass 3 writes it from pass 2's stored exps |
//! | `TokPath::Backward` | one pass from the saved `lse'` (and `H`): `p = exp(z' - lse')`, then the gradient |
//!
//! `d` is floored at [`D_FLOOR`] before it meets `e` (a masked `-inf` logit has `e = 0` and
//! must add `0`, not `0 * -inf`, to the entropy and its gradient).

use super::ce::row::max_argmax;
use super::ce::{load_z, load_z_part, IGNORED};
use super::exp::{exp_nonpos, FULL_LO};
use super::mem::{load_upto, store_upto};
use super::rows::{scale, scale_then_max, SUM_BLOCK_VECS};
use crate::arch::vector::Simd;
use crate::shard::RowState;
use crate::token::MAX_TOP_K;

/// The floor of `d = (z - m) / T` where it multiplies `exp(d)`: `exp(FULL_LO)` is exactly 0 on
/// every tier, so the product is 0 for every masked logit, and finite.
pub(crate) const D_FLOOR: f32 = FULL_LO;

/// What every row of a call shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokCall {
    /// Classes per row.
    pub cols: usize,
    /// `1 / T`, rounded to f32 once: every tier scales by this value.
    pub inv_t: f32,
    /// The soft-cap, or 0 for none.
    pub cap: f32,
    /// Forward: whether rows compute the entropy (asked for, or needed by the gradient).
    /// Backward: whether the entropy's upstream gradient is given.
    pub entropy: bool,
    /// Forward of a vocabulary shard: write [`TokRows::states`], and keep in the gradient
    /// rows what the shard backward's last pass needs ([`TokArgs::keep`]).
    pub keep: bool,
}

/// A run of consecutive rows of one call: every pointer starts at the run's first row; every
/// optional pointer is null or holds `rows` entries (`rows` rows for `x` and `grad`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokRows<'a> {
    pub call: &'a TokCall,
    /// `rows` rows of `cols` logits, `ldx` floats apart.
    pub x: *const f32,
    pub ldx: usize,
    /// `rows` gradient rows, `ldg` apart (equal to `x` with `ldg == ldx` in place), or null.
    pub grad: *mut f32,
    pub ldg: usize,
    pub rows: usize,
    /// One token per row, `< cols` or [`IGNORED`].
    pub tokens: *const u32,
    /// Forward outputs.
    pub logp: *mut f32,
    pub entropy: *mut f32,
    pub lse: *mut f32,
    /// Upstream gradients of `logp` and of the entropy (null: zero).
    pub g_logp: *const f32,
    pub g_entropy: *const f32,
    /// Backward: the forward's `lse'` and entropy.
    pub saved_lse: *const f32,
    pub saved_entropy: *const f32,
    /// A vocabulary shard's states: written by the forward path (with [`TokCall::keep`]),
    /// read by the shard backward path (this shard's own, for its maxima).
    pub states: *mut RowState,
    /// Forward: the top `top_k` classes of each row (0: none), `top_k` log-probabilities and
    /// class indices per row.
    pub top_k: usize,
    pub top_val: *mut f32,
    pub top_idx: *mut u32,
}

impl<'a> TokRows<'a> {
    /// Rows `r0 .. r0 + n` of this run, their tokens at `tokens`. Pointer arithmetic only
    /// (wrapping): what the result may touch is the caller's contract.
    pub(crate) fn run(&self, r0: usize, n: usize, tokens: *const u32) -> TokRows<'a> {
        fn at<T>(p: *mut T, k: usize) -> *mut T {
            if p.is_null() {
                p
            } else {
                p.wrapping_add(k)
            }
        }
        TokRows {
            x: self.x.wrapping_add(r0 * self.ldx),
            grad: at(self.grad, r0 * self.ldg),
            rows: n,
            tokens,
            logp: at(self.logp, r0),
            entropy: at(self.entropy, r0),
            lse: at(self.lse, r0),
            g_logp: at(self.g_logp.cast_mut(), r0),
            g_entropy: at(self.g_entropy.cast_mut(), r0),
            saved_lse: at(self.saved_lse.cast_mut(), r0),
            saved_entropy: at(self.saved_entropy.cast_mut(), r0),
            states: at(self.states, r0),
            top_val: at(self.top_val, r0 * self.top_k),
            top_idx: at(self.top_idx, r0 * self.top_k),
            ..*self
        }
    }

    /// Entry `r` of an optional per-row input, or 0 for a null one.
    ///
    /// # Safety
    /// `p` null or valid for `rows` reads; `r < rows`.
    #[inline(always)]
    unsafe fn get(p: *const f32, r: usize) -> f32 {
        if p.is_null() {
            0.0
        } else {
            // SAFETY: the contract above.
            unsafe { *p.add(r) }
        }
    }

    /// Writes `v` to entry `r` of an optional per-row output.
    ///
    /// # Safety
    /// `p` null or valid for `rows` writes; `r < rows`.
    #[inline(always)]
    unsafe fn put(p: *mut f32, r: usize, v: f64) {
        if !p.is_null() {
            // SAFETY: the contract above.
            unsafe { *p.add(r) = v as f32 };
        }
    }
}

/// A path's entry: computes the rows of the run.
///
/// # Safety
/// The tier's CPU features (the table proves them). `x` valid for the run's rows; `grad` null
/// (forward only) or valid for the rows' writes, equal to `x` (same stride) or not overlapping
/// it; `tokens` valid for `rows` reads, each `< cols` or [`IGNORED`]; every other pointer null
/// or valid for `rows` entries (`saved_lse` non-null on the backward path, `saved_entropy`
/// non-null there when `call.entropy`).
pub(crate) type TokPathFn = unsafe fn(&TokRows<'_>);

/// One tier's table of token log-prob kernels: one entry per path, of one signature.
pub(crate) struct TokKernels {
    pub(crate) forward: TokPathFn,
    pub(crate) backward: TokPathFn,
    pub(crate) shard_backward: TokPathFn,
}

/// The paths of a token log-prob call (`crate::token` chooses one per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokPath {
    /// Logp (entropy, lse) of each row, and with a gradient buffer the gradient from upstream
    /// gradients known up front.
    Forward,
    /// The gradient from the saved `lse'` (and entropy) and the upstream gradients.
    Backward,
    /// A vocabulary shard's gradient from the global `lse'` (and entropy), its own states and
    /// what its forward kept in the gradient rows: the last pass alone.
    ShardBackward,
}

impl TokKernels {
    /// The entry of path `p`.
    pub(crate) fn entry(&self, p: TokPath) -> TokPathFn {
        match p {
            TokPath::Forward => self.forward,
            TokPath::Backward => self.backward,
            TokPath::ShardBackward => self.shard_backward,
        }
    }
}

/// Per-row arguments of the forward row kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokArgs {
    /// The token, `< n`, or [`NO_TOKEN`] (a vocabulary shard without the row's token).
    pub t: usize,
    pub inv_t: f32,
    pub cap: f32,
    /// Whether to compute `sum d e` (the entropy).
    pub entropy: bool,
    /// With a gradient: the upstream gradients of logp and of the entropy.
    pub g_logp: f32,
    pub g_entropy: f32,
    /// The next row's logits (`n` floats, not overlapping the gradient) or null: without a
    /// cap, the row's last sweep also computes their maximum ([`TokRowOut::next_max`]).
    pub next: *const f32,
    /// This row's maximum from the previous row's last sweep (without a cap), if computed.
    pub known_max: Option<f32>,
    /// Stop after pass 2, leaving in the gradient row what [`tok_last_pass`] needs (each `e`,
    /// or with a cap each capped logit): a vocabulary shard's state pass, whose last pass
    /// waits for the global logsumexp.
    pub keep: bool,
}

/// [`TokArgs::t`] of a row whose token is in another vocabulary shard (or none).
pub(crate) const NO_TOKEN: usize = usize::MAX;

/// A [`TokRows::tokens`] entry of a row whose token is in another vocabulary shard.
pub(crate) const ELSEWHERE: u32 = u32::MAX - 1;

/// What the forward row kernel reports.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokRowOut {
    /// The maximum of the (capped) logits `z` (not divided by `T`). Not finite: the row holds
    /// NaN, `+inf` or is all `-inf`; nothing else is meaningful (the gradient was NaN-filled).
    pub m: f64,
    /// `ln sum exp(d)`.
    pub ls: f64,
    /// The (capped) token logit `z_t`.
    pub zt: f64,
    /// `sum d e / s` (when the entropy was asked for; else 0).
    pub hd: f64,
    /// `s = sum e` and `sum d e` themselves (a vocabulary shard's state).
    pub total: f64,
    pub dot: f64,
    /// The next row's maximum ([`TokArgs::next`]), when the last sweep computed it.
    pub next_max: Option<f32>,
}

impl TokRowOut {
    /// `lse' = m / T + ls` (NaN for a non-finite maximum).
    pub(crate) fn lse(&self, inv_t: f32) -> f64 {
        if self.m.is_finite() {
            self.m * inv_t as f64 + self.ls
        } else {
            f64::NAN
        }
    }

    /// `log p_t = (z_t - m) / T - ls` (NaN for a non-finite maximum; `-inf` for a `-inf`
    /// token logit).
    pub(crate) fn logp(&self, inv_t: f32) -> f64 {
        if self.m.is_finite() {
            (self.zt - self.m) * inv_t as f64 - self.ls
        } else {
            f64::NAN
        }
    }

    /// `H = ls - sum d e / s` (NaN for a non-finite maximum).
    pub(crate) fn entropy(&self) -> f64 {
        if self.m.is_finite() {
            self.ls - self.hd
        } else {
            f64::NAN
        }
    }
}

/// Per-row arguments of the backward row kernel: `grad_k = p_k (a + b u_k)` (times the cap's
/// chain factor) with `u_k = z_k / T - lse'` and `p_k = exp(u_k)`, then `grad_t += fix`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokBwdArgs {
    pub t: usize,
    pub inv_t: f32,
    pub cap: f32,
    pub lse: f32,
    pub a: f32,
    pub b: f32,
    pub fix: f32,
    /// The inputs `a`, `b` and `fix` come from (the reference computes from these): the
    /// saved entropy and the upstream gradients.
    pub h: f32,
    pub g_logp: f32,
    pub g_entropy: f32,
}

impl TokBwdArgs {
    /// The backward coefficients of a row from its saved `lse'` and entropy `h` and upstream
    /// gradients: `dz'_k = g_l [k = t] - p_k (g_l + g_h (u_k + h))`, each divided by `T`.
    pub(crate) fn new(c: &TokCall, t: usize, lse: f32, h: f32, g_l: f32, g_h: f32) -> TokBwdArgs {
        let it = c.inv_t as f64;
        let (gl, gh) = (g_l as f64, g_h as f64);
        // Without an entropy gradient `h` plays no part (a NaN entropy must not leak in).
        let head = if gh == 0.0 { gl } else { gl + gh * h as f64 };
        TokBwdArgs {
            t,
            inv_t: c.inv_t,
            cap: c.cap,
            lse,
            a: (-head * it) as f32,
            b: (-gh * it) as f32,
            fix: (gl * it) as f32,
            h,
            g_logp: g_l,
            g_entropy: g_h,
        }
    }
}

/// The one-row kernels the row loops ([`forward_path`], [`backward_path`]) call: every SIMD
/// tier's through its [`Simd`] type, and the scalar reference's (f64 rows).
pub(crate) trait TokRowKernels: Copy {
    /// One forward row ([`tok_row`]).
    ///
    /// # Safety
    /// The contract of [`tok_row`] (and the implementor's CPU features).
    unsafe fn fwd_row(self, x: *const f32, grad: *mut f32, n: usize, a: &TokArgs) -> TokRowOut;
    /// One backward row ([`tok_bwd_row`]).
    ///
    /// # Safety
    /// The contract of [`tok_bwd_row`] (and the implementor's CPU features).
    unsafe fn bwd_row(self, x: *const f32, grad: *mut f32, n: usize, a: &TokBwdArgs);
    /// The `k <= MAX_TOP_K` largest (capped) logits of the row, largest first (ties: the
    /// smaller index first), into `z[..]` and `idx[..]`; returns how many (`min(k, n)`, fewer
    /// when NaN logits leave too few comparable values).
    ///
    /// # Safety
    /// `x .. x + n` valid for reads (and the implementor's CPU features).
    unsafe fn top_k_row(
        self,
        x: *const f32,
        n: usize,
        cap: f32,
        k: usize,
        z: &mut [f64; MAX_TOP_K],
        idx: &mut [u32; MAX_TOP_K],
    ) -> usize;
    /// One row of a vocabulary shard's backward: the SIMD tiers run [`tok_last_pass`] on
    /// what the shard's forward kept (`p`); the reference recomputes the row from `x` and
    /// `b` (the same gradient as [`TokRowKernels::bwd_row`]).
    ///
    /// # Safety
    /// The contract of [`tok_last_pass`] (`grad` holds what the forward kept) and of
    /// [`tok_bwd_row`] (and the implementor's CPU features).
    unsafe fn shard_row(
        self,
        x: *const f32,
        grad: *mut f32,
        n: usize,
        p: &LastPass,
        b: &TokBwdArgs,
    );
}

impl<S: Simd> TokRowKernels for S {
    #[inline(always)]
    unsafe fn fwd_row(self, x: *const f32, grad: *mut f32, n: usize, a: &TokArgs) -> TokRowOut {
        let ent = a.entropy || (!grad.is_null() && a.g_entropy != 0.0);
        // SAFETY: forwarded.
        unsafe {
            match (a.cap != 0.0, ent) {
                (false, false) => tok_row::<S, false, false>(self, x, grad, n, a),
                (false, true) => tok_row::<S, false, true>(self, x, grad, n, a),
                (true, false) => tok_row::<S, true, false>(self, x, grad, n, a),
                (true, true) => tok_row::<S, true, true>(self, x, grad, n, a),
            }
        }
    }

    #[inline(always)]
    unsafe fn bwd_row(self, x: *const f32, grad: *mut f32, n: usize, a: &TokBwdArgs) {
        // SAFETY: forwarded.
        unsafe {
            match (a.cap != 0.0, a.b != 0.0) {
                (false, false) => tok_bwd_row::<S, false, false>(self, x, grad, n, a),
                (false, true) => tok_bwd_row::<S, false, true>(self, x, grad, n, a),
                (true, false) => tok_bwd_row::<S, true, false>(self, x, grad, n, a),
                (true, true) => tok_bwd_row::<S, true, true>(self, x, grad, n, a),
            }
        }
    }

    #[inline(always)]
    unsafe fn top_k_row(
        self,
        x: *const f32,
        n: usize,
        cap: f32,
        k: usize,
        z: &mut [f64; MAX_TOP_K],
        idx: &mut [u32; MAX_TOP_K],
    ) -> usize {
        // SAFETY: forwarded.
        unsafe {
            if cap != 0.0 {
                top_k_row::<S, true>(self, x, n, cap, k, z, idx)
            } else {
                top_k_row::<S, false>(self, x, n, cap, k, z, idx)
            }
        }
    }

    #[inline(always)]
    unsafe fn shard_row(
        self,
        x: *const f32,
        grad: *mut f32,
        n: usize,
        p: &LastPass,
        _b: &TokBwdArgs,
    ) {
        // SAFETY: forwarded.
        unsafe {
            if p.cap != 0.0 {
                tok_last_pass::<S, true>(self, x, grad, n, p, std::ptr::null());
            } else {
                tok_last_pass::<S, false>(self, x, grad, n, p, std::ptr::null());
            }
        }
    }
}

/// The soft-cap vectors (`cap`, `1 / cap`) of a row.
#[inline(always)]
fn cap_vecs<S: Simd, const CAP: bool>(s: S, cap: f32) -> (S::V, S::V) {
    (s.splat(cap), s.splat(if CAP { 1.0 / cap } else { 0.0 }))
}

/// The (capped) logit `z_t`, capped by the same vector code as the row.
///
/// # Safety
/// `x + t` valid for reads.
#[inline(always)]
unsafe fn token_logit<S: Simd, const CAP: bool>(s: S, x: *const f32, t: usize, cap: f32) -> f32 {
    if !CAP {
        // SAFETY: the contract above.
        return unsafe { *x.add(t) };
    }
    let (vc, vi) = cap_vecs::<S, CAP>(s, cap);
    // SAFETY: one float at `x + t`; a stack buffer of at least LANES floats.
    unsafe {
        let v = load_z_part::<S, CAP>(s, x.add(t), 1, 0.0, vc, vi);
        let mut b = [0.0f32; 64];
        s.store(b.as_mut_ptr(), v);
        b[0]
    }
}

/// Vectors per step of pass 2 (four exps in flight).
const SWEEP_VECS: usize = 4;

/// Pass 2 of [`tok_row`]: `(sum e, sum d e, max of next)` (the second 0 without `ENT`, the
/// third `-inf` without `NEXT`), storing to `grad` (when non-null) each `e` or, with `store_z`,
/// each (capped) logit `z`. [`SWEEP_VECS`] vectors per step, each with its own accumulators; with `NEXT`
/// the maximum of the row `next[0..n]` rides along (the next row's pass 1).
///
/// # Safety
/// As [`tok_row`]; with `NEXT`, `next .. next + n` valid for reads and not overlapping `grad`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tok_sweep<S: Simd, const CAP: bool, const ENT: bool, const NEXT: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    m: f32,
    a: &TokArgs,
    store_z: bool,
    next: *const f32,
) -> (f64, f64, f32) {
    const U: usize = SWEEP_VECS;
    let w = S::LANES;
    let (cap, icap) = cap_vecs::<S, CAP>(s, a.cap);
    let vm = s.splat(m);
    let it = s.splat(a.inv_t);
    let floor = s.splat(D_FLOOR);
    let zero = s.splat(0.0);
    let ninf = s.splat(f32::NEG_INFINITY);
    let store = !grad.is_null();
    let (mut total, mut dot) = (0.0f64, 0.0f64);
    let mut nm = [ninf; U];
    let mut i = 0;
    let block = U * w * SUM_BLOCK_VECS;
    /// One vector: (e, floored d, the value to store). (A function, not a closure: a closure
    /// is not compiled with the tier's target features unless it is inlined.)
    #[inline(always)]
    fn step<S: Simd, const ENT: bool>(
        s: S,
        z: S::V,
        vm: S::V,
        it: S::V,
        floor: S::V,
        store_z: bool,
    ) -> [S::V; 3] {
        // (The exp floors its argument itself; `d` meets `e` only for the entropy.)
        let d = s.mul(s.sub(z, vm), it);
        let d = if ENT { s.floor_at(d, floor) } else { d };
        let e = exp_nonpos(s, d);
        [e, d, if store_z { z } else { e }]
    }
    // SAFETY: every access is inside `0..n` of `x`, `grad` and `next` (whole steps while the
    // bound allows, then single vectors and one partial access for the tail); each element of
    // `x` is read before the same element of `grad` is written.
    unsafe {
        loop {
            let end = if i + block <= n { i + block } else { n };
            let (mut sa, mut ha) = ([zero; U], [zero; U]);
            while i + U * w <= end {
                for j in 0..U {
                    let p = i + j * w;
                    if NEXT {
                        nm[j] = s.max(nm[j], s.load(next.add(p)));
                    }
                    let z = load_z::<S, CAP>(s, x.add(p), cap, icap);
                    let [e, d, o] = step::<S, ENT>(s, z, vm, it, floor, store_z);
                    if store {
                        s.store(grad.add(p), o);
                    }
                    sa[j] = s.add(sa[j], e);
                    if ENT {
                        ha[j] = s.fma(d, e, ha[j]);
                    }
                }
                i += U * w;
            }
            if end == n {
                while i < n {
                    let k = (n - i).min(w);
                    let z = if k == w {
                        load_z::<S, CAP>(s, x.add(i), cap, icap)
                    } else {
                        load_z_part::<S, CAP>(s, x.add(i), k, f32::NEG_INFINITY, cap, icap)
                    };
                    if NEXT {
                        let v = if k == w {
                            s.load(next.add(i))
                        } else {
                            s.load_partial(next.add(i), k, f32::NEG_INFINITY)
                        };
                        nm[0] = s.max(nm[0], v);
                    }
                    let [e, d, o] = step::<S, ENT>(s, z, vm, it, floor, store_z);
                    if store {
                        store_upto(s, grad.add(i), k, o);
                    }
                    sa[0] = s.add(sa[0], e);
                    if ENT {
                        // Lanes past `k` hold e = 0 and d = D_FLOOR: they add 0.
                        ha[0] = s.fma(d, e, ha[0]);
                    }
                    i += k;
                }
            }
            let mut sv = sa[0];
            let mut hv = ha[0];
            for j in 1..U {
                sv = s.add(sv, sa[j]);
                hv = s.add(hv, ha[j]);
            }
            total += s.reduce_sum(sv) as f64;
            if ENT {
                dot += s.reduce_sum(hv) as f64;
            }
            if i >= n {
                break;
            }
        }
    }
    let mut mv = nm[0];
    for v in &nm[1..] {
        mv = s.max(mv, *v);
    }
    (
        total,
        dot,
        if NEXT {
            s.reduce_max(mv)
        } else {
            f32::NEG_INFINITY
        },
    )
}

/// The splatted constants of the entropy-gradient pass ([`ent_grad`]).
#[derive(Clone, Copy)]
struct EntConsts<V> {
    vm: V,
    vit: V,
    floor: V,
    va: V,
    vb: V,
}

/// Pass 3 with the entropy's gradient, on the `k` floats at offset `i` (`k == LANES` or the
/// partial tail): `grad = e (a + b d)` with `e` read from `grad` and `d = (x - m) / T`
/// (floored) from `x`.
///
/// # Safety
/// `x + i .. x + i + k` valid for reads, `grad + i .. grad + i + k` for reads and writes, not
/// overlapping `x`.
#[inline(always)]
unsafe fn ent_grad<S: Simd>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    i: usize,
    k: usize,
    c: &EntConsts<S::V>,
) {
    // SAFETY: the contract above.
    unsafe {
        let full = k == S::LANES;
        let (e, xv) = if full {
            (s.load(grad.add(i)), s.load(x.add(i)))
        } else {
            (
                s.load_partial(grad.add(i), k, 0.0),
                s.load_partial(x.add(i), k, 0.0),
            )
        };
        let d = s.floor_at(s.mul(s.sub(xv, c.vm), c.vit), c.floor);
        let g = s.mul(e, s.fma(c.vb, d, c.va));
        if full {
            s.store(grad.add(i), g);
        } else {
            s.store_partial(grad.add(i), k, g);
        }
    }
}

/// Pass 3 with the entropy's gradient over the row ([`ent_grad`] on every vector), with
/// `NEXT` fused with the maximum of the next row `next[0..n]` (returned; `-inf` without).
///
/// # Safety
/// As [`ent_grad`] for `0..n`; with `NEXT`, `next .. next + n` valid for reads and not
/// overlapping `grad`.
#[inline(always)]
unsafe fn ent_pass<S: Simd, const NEXT: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    c: &EntConsts<S::V>,
    next: *const f32,
) -> f32 {
    let w = S::LANES;
    let ninf = s.splat(f32::NEG_INFINITY);
    let (mut b0, mut b1) = (ninf, ninf);
    let mut i = 0;
    // SAFETY: every access is inside `0..n` (whole vectors while `i + w <= n`, then one
    // partial access), the caller's contract.
    unsafe {
        while i + 2 * w <= n {
            if NEXT {
                b0 = s.max(b0, s.load(next.add(i)));
                b1 = s.max(b1, s.load(next.add(i + w)));
            }
            ent_grad(s, x, grad, i, w, c);
            ent_grad(s, x, grad, i + w, w, c);
            i += 2 * w;
        }
        while i < n {
            let k = (n - i).min(w);
            if NEXT {
                let v = if k == w {
                    s.load(next.add(i))
                } else {
                    s.load_partial(next.add(i), k, f32::NEG_INFINITY)
                };
                b0 = s.max(b0, v);
            }
            ent_grad(s, x, grad, i, k, c);
            i += k;
        }
    }
    s.reduce_max(s.max(b0, b1))
}

/// One forward row (see the module docs): logp's and the entropy's ingredients, and with
/// `grad` non-null the gradient of `g_logp logp + g_entropy H` with respect to the logits.
/// `grad` may equal `x` (in place). Without a cap, the row's maximum may come in
/// ([`TokArgs::known_max`]) and the next row's goes out ([`TokRowOut::next_max`]) when
/// [`TokArgs::next`] is given: its pass 1 rides along this row's last sweep.
///
/// # Safety
/// `x .. x + n` valid for reads; `grad` null or valid for `n` writes and equal to `x` or not
/// overlapping it; `a.t < n`; `a.next` null or valid for `n` reads and not overlapping `grad`.
#[inline(always)]
pub(crate) unsafe fn tok_row<S: Simd, const CAP: bool, const ENT: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    a: &TokArgs,
) -> TokRowOut {
    let (cap, icap) = cap_vecs::<S, CAP>(s, a.cap);
    let store = !grad.is_null();
    // SAFETY: every access is inside `0..n` of `x`, `grad` and `next` (the caller's contract),
    // `t < n`.
    unsafe {
        let mut m = match a.known_max {
            Some(km) if !CAP => km,
            _ => max_argmax::<S, CAP>(s, x, n, false, cap, icap).0,
        };
        if m == f32::NEG_INFINITY && (0..n).any(|i| (*x.add(i)).is_nan()) {
            // The lanes' maxima may drop a NaN: a row of NaN and -inf alone is NaN, not a row
            // of no finite logit (a vocabulary shard's state tells the two apart). Rare, so a
            // scalar scan.
            m = f32::NAN;
        }
        let zt = if a.t < n {
            token_logit::<S, CAP>(s, x, a.t, a.cap)
        } else {
            0.0
        };
        if !m.is_finite() {
            if store {
                crate::arch::special::fill(grad, n, f32::NAN);
            }
            return TokRowOut {
                m: m as f64,
                ls: f64::NAN,
                zt: zt as f64,
                hd: f64::NAN,
                total: f64::NAN,
                dot: f64::NAN,
                next_max: None,
            };
        }
        // Pass 3 needs `d` next to `e`: from `x` when pass 2 keeps `x` (not in place), else
        // from the stored logit (a second exp, as with a cap).
        let need_d = ENT && store && !a.keep && a.g_entropy != 0.0;
        let in_place = grad.cast_const() == x;
        let store_z = CAP || (need_d && in_place);
        // The next row's max rides along the last sweep: pass 2 without a gradient, else
        // pass 3 (unless it recomputes exps from stored logits).
        let next = if CAP { std::ptr::null() } else { a.next };
        let next2 = if store && !a.keep {
            std::ptr::null()
        } else {
            next
        };
        let (total, dot, nm2) = if next2.is_null() {
            tok_sweep::<S, CAP, ENT, false>(s, x, grad, n, m, a, store_z, next2)
        } else {
            tok_sweep::<S, CAP, ENT, true>(s, x, grad, n, m, a, store_z, next2)
        };
        let mut out = TokRowOut {
            m: m as f64,
            ls: total.ln(),
            zt: zt as f64,
            hd: if ENT { dot / total } else { 0.0 },
            total,
            dot,
            next_max: (!next2.is_null()).then_some(nm2),
        };
        if !store || a.keep {
            return out;
        }
        // Pass 3: grad_k = e_k (fa + fb d_k) (times the chain factor), then + fix at t.
        let it = a.inv_t as f64;
        let (gl, gh) = (a.g_logp as f64, a.g_entropy as f64);
        let fa = if ENT { gh * out.hd - gl } else { -gl } * it / total;
        let fb = -gh * it / total;
        let p = LastPass {
            m,
            inv_t: a.inv_t,
            cap: a.cap,
            fa: fa as f32,
            fb: fb as f32,
            need_d,
            store_z,
            t: a.t,
            zt,
            fix: (gl * it) as f32,
        };
        let nm = tok_last_pass::<S, CAP>(s, x, grad, n, &p, next);
        if nm.is_some() {
            out.next_max = nm;
        }
        out
    }
}

/// What the last pass of a row needs: `grad_k = e_k (fa + fb d_k)` (times the cap's chain
/// factor; `fb` only when `need_d`) with `e_k` in the gradient row (or, with `store_z`, the
/// (capped) logit there to recompute it from), `d_k = (z_k - m) / T`, then `grad_t += fix`
/// (times its chain factor) when `t < n`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LastPass {
    pub m: f32,
    pub inv_t: f32,
    pub cap: f32,
    pub fa: f32,
    pub fb: f32,
    pub need_d: bool,
    pub store_z: bool,
    pub t: usize,
    pub zt: f32,
    pub fix: f32,
}

/// The last pass of a row ([`LastPass`]); with `next` non-null (and neither `store_z` nor a
/// cap) the next row's maximum rides along and is returned.
///
/// # Safety
/// `x .. x + n` valid for reads, `grad .. grad + n` for reads and writes (holding what pass 2
/// stored), equal to `x` only with `store_z` or without `need_d`; `p.t < n` or [`NO_TOKEN`];
/// `next` null or valid for `n` reads and not overlapping `grad`.
#[inline(always)]
pub(crate) unsafe fn tok_last_pass<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    p: &LastPass,
    next: *const f32,
) -> Option<f32> {
    let w = S::LANES;
    let (_, icap) = cap_vecs::<S, CAP>(s, p.cap);
    // SAFETY: every access is inside `0..n` of `x`, `grad` and `next` (the caller's contract).
    unsafe {
        let mut next_max = None;
        if !p.store_z && !CAP {
            if p.need_d {
                let c = EntConsts {
                    vm: s.splat(p.m),
                    vit: s.splat(p.inv_t),
                    floor: s.splat(D_FLOOR),
                    va: s.splat(p.fa),
                    vb: s.splat(p.fb),
                };
                if next.is_null() {
                    ent_pass::<S, false>(s, x, grad, n, &c, next);
                } else {
                    next_max = Some(ent_pass::<S, true>(s, x, grad, n, &c, next));
                }
            } else if next.is_null() {
                scale(s, grad, n, p.fa);
            } else {
                next_max = Some(scale_then_max(s, grad, p.fa, next, n));
            }
            if p.t < n {
                *grad.add(p.t) += p.fix;
            }
            return next_max;
        }
        let (va, vb) = (s.splat(p.fa), s.splat(p.fb));
        let vm = s.splat(p.m);
        let vit = s.splat(p.inv_t);
        let floor = s.splat(D_FLOOR);
        let one = s.splat(1.0);
        let mut i = 0;
        while i < n {
            let k = (n - i).min(w);
            // The stored (capped) logits: recompute `e` from them.
            let v = load_upto(s, grad.add(i), k);
            let d = s.floor_at(s.mul(s.sub(v, vm), vit), floor);
            let e = exp_nonpos(s, d);
            let mut gv = if p.need_d {
                s.mul(e, s.fma(vb, d, va))
            } else {
                s.mul(e, va)
            };
            if CAP {
                let q = s.mul(v, icap);
                gv = s.mul(gv, s.sub(one, s.mul(q, q)));
            }
            store_upto(s, grad.add(i), k, gv);
            i += k;
        }
        if p.t < n {
            *grad.add(p.t) += p.fix * chain(CAP, p.zt, p.cap);
        }
        None
    }
}

/// The top-k candidates of a row: a min-heap of at most `k` entries whose root is the entry to
/// displace first (the smallest value; indices arrive in increasing order, so an equal value
/// never displaces it: the smaller index wins ties). NaN never enters.
pub(crate) struct TopK<'a> {
    z: &'a mut [f64; MAX_TOP_K],
    idx: &'a mut [u32; MAX_TOP_K],
    len: usize,
    k: usize,
}

impl<'a> TopK<'a> {
    pub(crate) fn new(
        z: &'a mut [f64; MAX_TOP_K],
        idx: &'a mut [u32; MAX_TOP_K],
        k: usize,
    ) -> Self {
        TopK { z, idx, len: 0, k }
    }

    /// The value a candidate must exceed once `k` are held (`-inf` before).
    #[inline(always)]
    pub(crate) fn threshold(&self) -> f64 {
        if self.len < self.k {
            f64::NEG_INFINITY
        } else {
            self.z[0]
        }
    }

    /// Whether `a` is to be displaced before `b` (heap order).
    #[inline(always)]
    fn worse(&self, a: usize, b: usize) -> bool {
        self.z[a] < self.z[b] || (self.z[a] == self.z[b] && self.idx[a] > self.idx[b])
    }

    /// Offers `(v, i)`.
    #[inline(always)]
    pub(crate) fn offer(&mut self, v: f64, i: u32) {
        if v.is_nan() {
            return;
        }
        if self.len < self.k {
            // Sift up.
            let mut p = self.len;
            self.z[p] = v;
            self.idx[p] = i;
            self.len += 1;
            while p > 0 {
                let q = (p - 1) / 2;
                if !self.worse(p, q) {
                    break;
                }
                self.z.swap(p, q);
                self.idx.swap(p, q);
                p = q;
            }
            return;
        }
        if v <= self.z[0] {
            return;
        }
        // Replace the root, sift down.
        self.z[0] = v;
        self.idx[0] = i;
        let mut p = 0;
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut m = p;
            if l < self.len && self.worse(l, m) {
                m = l;
            }
            if r < self.len && self.worse(r, m) {
                m = r;
            }
            if m == p {
                break;
            }
            self.z.swap(p, m);
            self.idx.swap(p, m);
            p = m;
        }
    }

    /// Sorts the held entries, largest first (the smaller index first on ties); returns how
    /// many.
    pub(crate) fn finish(self) -> usize {
        let n = self.len;
        let mut pairs: [(f64, u32); MAX_TOP_K] = [(0.0, 0); MAX_TOP_K];
        for (q, p) in pairs[..n].iter_mut().enumerate() {
            *p = (self.z[q], self.idx[q]);
        }
        pairs[..n].sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (q, p) in pairs[..n].iter().enumerate() {
            self.z[q] = p.0;
            self.idx[q] = p.1;
        }
        n
    }
}

/// [`TokRowKernels::top_k_row`] over [`Simd`]: blocks of [`TOP_K_BLOCK`] vectors whose maximum
/// does not beat the current `k`-th value (once `k` are held) are skipped with one compare;
/// in the others each vector is compared the same way, and a vector that beats it offers its
/// lanes to the heap ([`TopK`]).
///
/// # Safety
/// `x .. x + n` valid for reads; `1 <= k <= MAX_TOP_K`.
#[inline(always)]
pub(crate) unsafe fn top_k_row<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    n: usize,
    cap: f32,
    k: usize,
    z: &mut [f64; MAX_TOP_K],
    idx: &mut [u32; MAX_TOP_K],
) -> usize {
    let w = S::LANES;
    let (vc, vi) = cap_vecs::<S, CAP>(s, cap);
    let mut top = TopK::new(z, idx, k);
    let mut buf = [0.0f32; 64];
    let mut i = 0;
    // SAFETY: every access is inside `0..n` (the prefilter reads whole vectors of `0..n`; then
    // whole blocks of `TOP_K_BLOCK` vectors while they fit, then single vectors, one partial
    // load); `buf` holds 64 >= LANES floats.
    unsafe {
        let floor = top_k_floor::<S, CAP>(s, x, n, k, vc, vi);
        while i < n {
            let step = if i + TOP_K_BLOCK * w <= n {
                TOP_K_BLOCK * w
            } else {
                (n - i).min(w)
            };
            // Until `k` are held, a candidate must reach the floor; then beat the `k`-th.
            let thr = top.threshold();
            let beats = |v: f32| {
                if thr == f64::NEG_INFINITY {
                    v as f64 >= floor
                } else {
                    v as f64 > thr
                }
            };
            let mut pass = thr == f64::NEG_INFINITY && floor == f64::NEG_INFINITY;
            if !pass {
                let mut m = s.splat(f32::NEG_INFINITY);
                if step == TOP_K_BLOCK * w {
                    // A whole block: two independent maxima over its vectors.
                    let mut m2 = m;
                    for jj in 0..TOP_K_BLOCK / 2 {
                        let p = x.add(i + 2 * jj * w);
                        m = s.max(m, load_z::<S, CAP>(s, p, vc, vi));
                        m2 = s.max(m2, load_z::<S, CAP>(s, p.add(w), vc, vi));
                    }
                    m = s.max(m, m2);
                } else if step == w {
                    m = load_z::<S, CAP>(s, x.add(i), vc, vi);
                } else {
                    m = load_z_part::<S, CAP>(s, x.add(i), step, f32::NEG_INFINITY, vc, vi);
                }
                // (A block holding a NaN may be skipped, with its other values: that row's
                // log-probabilities are all NaN anyway.)
                pass = beats(s.reduce_max(m));
            }
            if pass {
                let mut j = 0;
                while j < step {
                    let kk = (step - j).min(w);
                    let v = if kk == w {
                        load_z::<S, CAP>(s, x.add(i + j), vc, vi)
                    } else {
                        load_z_part::<S, CAP>(s, x.add(i + j), kk, f32::NEG_INFINITY, vc, vi)
                    };
                    // Then vector by vector against the rising threshold.
                    let t = top.threshold();
                    let hit = if t == f64::NEG_INFINITY {
                        floor == f64::NEG_INFINITY || s.reduce_max(v) as f64 >= floor
                    } else {
                        s.reduce_max(v) as f64 > t
                    };
                    if hit {
                        s.store(buf.as_mut_ptr(), v);
                        for (q, &b) in buf[..kk].iter().enumerate() {
                            // (Below the floor a lane cannot be among the top `k`.)
                            if b as f64 >= floor {
                                top.offer(b as f64, (i + j + q) as u32);
                            }
                        }
                    }
                    j += w;
                }
            }
            i += step;
        }
    }
    top.finish()
}

/// Vectors per block of the top-k scan: a block whose maximum does not beat the current `k`-th
/// value costs its loads, maxima and one horizontal maximum.
const TOP_K_BLOCK: usize = 8;

/// The most groups [`top_k_floor`] takes maxima of.
const TOP_K_GROUPS: usize = 256;

/// A lower bound of the `k`-th largest (capped) logit of the row, so that the scan offers
/// the heap only candidates from the start instead of everything until `k` good ones are
/// held: the whole vectors of the row are cut into at most [`TOP_K_GROUPS`] groups, and the
/// `k`-th largest of the groups' maxima is returned. Each group maximum is an element of the
/// row, so `k` elements are at least that large. `-inf` when there are fewer than `k` groups
/// (NaN maxima are left out: such a row's outputs are NaN anyway).
///
/// # Safety
/// `x .. x + n` valid for reads; `1 <= k <= MAX_TOP_K`.
#[inline(always)]
unsafe fn top_k_floor<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    n: usize,
    k: usize,
    vc: S::V,
    vi: S::V,
) -> f64 {
    let w = S::LANES;
    let vecs = n / w;
    if vecs < k {
        return f64::NEG_INFINITY;
    }
    let groups = vecs.min(TOP_K_GROUPS);
    let per = vecs / groups;
    let mut maxima = [f32::NEG_INFINITY; TOP_K_GROUPS];
    // SAFETY: `groups * per <= vecs` whole vectors, inside `0..n`.
    unsafe {
        for (g, slot) in maxima[..groups].iter_mut().enumerate() {
            let p = x.add(g * per * w);
            let mut m = load_z::<S, CAP>(s, p, vc, vi);
            for v in 1..per {
                m = s.max(m, load_z::<S, CAP>(s, p.add(v * w), vc, vi));
            }
            let r = s.reduce_max(m);
            *slot = if r.is_nan() { f32::NEG_INFINITY } else { r };
        }
    }
    let (_, kth, _) = maxima[..groups].select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth as f64
}

/// The soft-cap's chain factor `1 - (z / cap)^2` at a capped logit `z` (1 without a cap).
#[inline(always)]
pub(crate) fn chain(capped: bool, z: f32, cap: f32) -> f32 {
    if capped {
        let q = z / cap;
        1.0 - q * q
    } else {
        1.0
    }
}

/// One backward row: `grad_k = p_k (a + b u_k)` with `u_k = z_k / T - lse'`, `p_k = exp(u_k)`
/// (times the cap's chain factor), then `grad_t += fix` (times its chain factor). `ENT` says
/// `b != 0`. `grad` may equal `x` (in place).
///
/// # Safety
/// `x .. x + n` valid for reads; `grad` valid for `n` writes and equal to `x` or not
/// overlapping it; `a.t < n`.
#[inline(always)]
pub(crate) unsafe fn tok_bwd_row<S: Simd, const CAP: bool, const ENT: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    a: &TokBwdArgs,
) {
    let w = S::LANES;
    let (cap, icap) = cap_vecs::<S, CAP>(s, a.cap);
    let (va, vb) = (s.splat(a.a), s.splat(a.b));
    let vit = s.splat(a.inv_t);
    let nl = s.splat(-a.lse);
    let floor = s.splat(D_FLOOR);
    let one = s.splat(1.0);
    // SAFETY: every access is inside `0..n` of `x` and `grad`, `t < n`; each element of `x` is
    // read before the same element of `grad` is written.
    unsafe {
        let zt = if a.t < n {
            token_logit::<S, CAP>(s, x, a.t, a.cap)
        } else {
            0.0
        };
        let c = BwdConsts {
            va,
            vb,
            vit,
            nl,
            floor,
            one,
            icap,
        };
        let mut i = 0;
        while i + 2 * w <= n {
            let g0 = bwd_elem::<S, CAP, ENT>(s, &c, load_z::<S, CAP>(s, x.add(i), cap, icap));
            let g1 = bwd_elem::<S, CAP, ENT>(s, &c, load_z::<S, CAP>(s, x.add(i + w), cap, icap));
            s.store(grad.add(i), g0);
            s.store(grad.add(i + w), g1);
            i += 2 * w;
        }
        while i < n {
            let k = (n - i).min(w);
            let z = if k == w {
                load_z::<S, CAP>(s, x.add(i), cap, icap)
            } else {
                load_z_part::<S, CAP>(s, x.add(i), k, 0.0, cap, icap)
            };
            store_upto(s, grad.add(i), k, bwd_elem::<S, CAP, ENT>(s, &c, z));
            i += k;
        }
        if a.t < n {
            *grad.add(a.t) += a.fix * chain(CAP, zt, a.cap);
        }
    }
}

/// The splatted constants of [`tok_bwd_row`].
struct BwdConsts<V> {
    va: V,
    vb: V,
    vit: V,
    nl: V,
    floor: V,
    one: V,
    icap: V,
}

/// One vector of [`tok_bwd_row`] from its (capped) logits `z`.
#[inline(always)]
fn bwd_elem<S: Simd, const CAP: bool, const ENT: bool>(s: S, c: &BwdConsts<S::V>, z: S::V) -> S::V {
    let u = s.floor_at(s.fma(z, c.vit, c.nl), c.floor);
    let p = exp_nonpos(s, u);
    let mut g = if ENT {
        s.mul(p, s.fma(c.vb, u, c.va))
    } else {
        s.mul(p, c.va)
    };
    if CAP {
        let q = s.mul(z, c.icap);
        g = s.mul(g, s.sub(c.one, s.mul(q, q)));
    }
    g
}

/// The `TokPath::Forward` entry: every row's outputs, and its gradient when `grad` is given.
///
/// # Safety
/// The contract of [`TokPathFn`].
#[inline(always)]
pub(crate) unsafe fn forward_path<R: TokRowKernels>(k: R, b: &TokRows<'_>) {
    let (b, c) = (*b, *b.call);
    let cols = c.cols;
    // The next row's max, when the kernel computed it in this row's last sweep.
    let mut pending_max: Option<f32> = None;
    for r in 0..b.rows {
        // SAFETY: row `r < rows` lies inside `x` (and `grad`); its token is `< cols` unless
        // ignored; the per-row pointers hold `rows` entries (the contract of `TokPathFn`).
        unsafe {
            let xr = b.x.wrapping_add(r * b.ldx);
            let gr = if b.grad.is_null() {
                b.grad
            } else {
                b.grad.wrapping_add(r * b.ldg)
            };
            let tok = *b.tokens.add(r);
            let mut args = TokArgs {
                t: tok as usize,
                inv_t: c.inv_t,
                cap: c.cap,
                entropy: c.entropy,
                g_logp: TokRows::get(b.g_logp, r),
                g_entropy: TokRows::get(b.g_entropy, r),
                next: std::ptr::null(),
                known_max: pending_max.take(),
                keep: c.keep,
            };
            if tok == ELSEWHERE {
                args.t = NO_TOKEN;
            }
            if tok == IGNORED && b.top_k > 0 {
                // No top-k for an ignored row: every entry empty.
                for q in 0..b.top_k {
                    *b.top_val.add(r * b.top_k + q) = f32::NEG_INFINITY;
                    *b.top_idx.add(r * b.top_k + q) = u32::MAX;
                }
            }
            if tok == IGNORED {
                if !b.states.is_null() {
                    // A shard's ignored row: no state to reduce (finalize reports 0).
                    *b.states.add(r) = RowState::EMPTY;
                    continue;
                }
                // Ignored row: logp 0, entropy 0, gradient 0; lse still reported if asked.
                if !b.lse.is_null() {
                    args.t = 0;
                    args.entropy = false;
                    let out = k.fwd_row(xr, std::ptr::null_mut(), cols, &args);
                    TokRows::put(b.lse, r, out.lse(c.inv_t));
                }
                if !gr.is_null() {
                    crate::arch::special::fill(gr, cols, 0.0);
                }
                TokRows::put(b.logp, r, 0.0);
                TokRows::put(b.entropy, r, 0.0);
                continue;
            }
            // The next row of this run, unless it is ignored: its max rides along this row's
            // last sweep.
            if r + 1 < b.rows && *b.tokens.add(r + 1) != IGNORED {
                args.next = b.x.wrapping_add((r + 1) * b.ldx);
            }
            // The top k first (in place, the forward row overwrites the logits): its first
            // entry is the row's maximum, so the row's own max pass is skipped.
            let (mut z, mut idx) = ([0.0f64; MAX_TOP_K], [u32::MAX; MAX_TOP_K]);
            let len = if b.top_k > 0 {
                let len = k.top_k_row(xr, cols, c.cap, b.top_k, &mut z, &mut idx);
                args.next = std::ptr::null();
                args.known_max = (len > 0).then_some(z[0] as f32);
                len
            } else {
                0
            };
            let out = k.fwd_row(xr, gr, cols, &args);
            pending_max = out.next_max;
            if !b.states.is_null() {
                *b.states.add(r) = RowState::of_row(&out, c.inv_t, args.t != NO_TOKEN);
                continue;
            }
            TokRows::put(b.logp, r, out.logp(c.inv_t));
            TokRows::put(b.entropy, r, out.entropy());
            TokRows::put(b.lse, r, out.lse(c.inv_t));
            if b.top_k > 0 {
                for q in 0..b.top_k {
                    let (v, i) = if q < len {
                        let lp = if out.m.is_finite() {
                            (z[q] - out.m) * c.inv_t as f64 - out.ls
                        } else {
                            f64::NAN
                        };
                        (lp as f32, idx[q])
                    } else if out.m.is_finite() {
                        (f32::NEG_INFINITY, u32::MAX)
                    } else {
                        (f32::NAN, u32::MAX)
                    };
                    *b.top_val.add(r * b.top_k + q) = v;
                    *b.top_idx.add(r * b.top_k + q) = i;
                }
            }
        }
    }
}

/// The `TokPath::Backward` entry: every row's gradient from its saved `lse'` and entropy.
///
/// # Safety
/// The contract of [`TokPathFn`].
#[inline(always)]
pub(crate) unsafe fn backward_path<R: TokRowKernels>(k: R, b: &TokRows<'_>) {
    let (b, c) = (*b, *b.call);
    let cols = c.cols;
    for r in 0..b.rows {
        // SAFETY: as in `forward_path`; `saved_lse` (and with `entropy` `saved_entropy`) hold
        // `rows` entries.
        unsafe {
            let xr = b.x.wrapping_add(r * b.ldx);
            let gr = b.grad.wrapping_add(r * b.ldg);
            let tok = *b.tokens.add(r);
            if tok == IGNORED {
                crate::arch::special::fill(gr, cols, 0.0);
                continue;
            }
            let t = if tok == ELSEWHERE {
                NO_TOKEN
            } else {
                tok as usize
            };
            let args = TokBwdArgs::new(
                &c,
                t,
                *b.saved_lse.add(r),
                TokRows::get(b.saved_entropy, r),
                TokRows::get(b.g_logp, r),
                TokRows::get(b.g_entropy, r),
            );
            k.bwd_row(xr, gr, cols, &args);
        }
    }
}

/// The `TokPath::ShardBackward` entry: each row's last pass from the shard's state (its
/// maximum and sum), the global `lse'` and entropy, and the upstream gradients:
/// `p_k = e_k exp(max - lse')` with `e_k` the kept `exp(z'_k - max)`, `u_k = ln p_k`, and the
/// gradient of [`TokBwdArgs::new`].
///
/// # Safety
/// The contract of [`TokPathFn`]; `grad` holds what this shard's forward kept, `states` its
/// states, `saved_lse` (and with `entropy` `saved_entropy`) `rows` entries.
#[inline(always)]
pub(crate) unsafe fn shard_backward_path<R: TokRowKernels>(k: R, b: &TokRows<'_>) {
    let (b, c) = (*b, *b.call);
    let cols = c.cols;
    let it = c.inv_t as f64;
    for r in 0..b.rows {
        // SAFETY: as in `backward_path`; `states` holds `rows` entries.
        unsafe {
            let xr = b.x.wrapping_add(r * b.ldx);
            let gr = b.grad.wrapping_add(r * b.ldg);
            let tok = *b.tokens.add(r);
            if tok == IGNORED {
                crate::arch::special::fill(gr, cols, 0.0);
                continue;
            }
            let t = if tok == ELSEWHERE {
                NO_TOKEN
            } else {
                tok as usize
            };
            let (lse, h) = (*b.saved_lse.add(r), TokRows::get(b.saved_entropy, r));
            let (gl, gh) = (TokRows::get(b.g_logp, r), TokRows::get(b.g_entropy, r));
            let bw = TokBwdArgs::new(&c, t, lse, h, gl, gh);
            let st = *b.states.add(r);
            if st.max == f64::NEG_INFINITY {
                // Every logit of this shard is -inf (no cap): p = 0 here and the token's own
                // term remains, unless the whole row is (a NaN lse), which is NaN as
                // unsharded.
                if lse.is_nan() {
                    crate::arch::special::fill(gr, cols, f32::NAN);
                    continue;
                }
                crate::arch::special::fill(gr, cols, 0.0);
                if t < cols {
                    *gr.add(t) = bw.fix;
                }
                continue;
            }
            // exp(max - lse') and the coefficients of `e_k` and `e_k d_k`.
            let (gl, gh) = (gl as f64, gh as f64);
            let rr = (st.max - lse as f64).exp();
            let head = if gh == 0.0 {
                gl
            } else {
                gl + gh * (h as f64 + st.max - lse as f64)
            };
            let p = LastPass {
                // The shard's maximum of the capped logits, as its forward used it
                // (`max = m / T` is an exact product, so the quotient is `m` exactly).
                m: (st.max / it) as f32,
                inv_t: c.inv_t,
                cap: c.cap,
                fa: (-rr * it * head) as f32,
                fb: (-rr * it * gh) as f32,
                need_d: gh != 0.0,
                store_z: c.cap != 0.0,
                t,
                zt: (st.target / it) as f32,
                fix: bw.fix,
            };
            k.shard_row(xr, gr, cols, &p, &bw);
        }
    }
}

/// Stamps the token log-prob kernels out for one tier (called by `stamp_tier!`) and defines
/// its `TOK` table.
macro_rules! stamp_tok {
    ([$(#[$attr:meta])*], $token:ty) => {
        $crate::arch::generic::token::stamp_tok!(@path [$(#[$attr])*], $token, tok_forward, forward_path);
        $crate::arch::generic::token::stamp_tok!(@path [$(#[$attr])*], $token, tok_backward, backward_path);
        $crate::arch::generic::token::stamp_tok!(@path [$(#[$attr])*], $token, tok_shard_backward, shard_backward_path);

        /// This tier's token log-prob kernels.
        pub(crate) static TOK: $crate::arch::generic::token::TokKernels =
            $crate::arch::generic::token::TokKernels {
                forward: tok_forward,
                backward: tok_backward,
                shard_backward: tok_shard_backward,
            };
    };
    (@path [$(#[$attr:meta])*], $token:ty, $name:ident, $f:ident) => {
        /// # Safety
        /// The tier's CPU features; the pointer contract of `generic::token::TokPathFn`.
        $(#[$attr])*
        unsafe fn $name(b: &$crate::arch::generic::token::TokRows<'_>) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { $crate::arch::generic::token::$f(<$token>::new_unchecked(), b) }
        }
    };
}
pub(crate) use stamp_tok;
