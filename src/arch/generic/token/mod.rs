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
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the call's types, the table, the one-row kernel trait, the stamping macro |
//! | `paths.rs` | the path entries: the row loops of the forward, the backward and a shard's backward |
//! | `row.rs` | one row: the forward sweeps, the last pass, the backward row |
//! | `topk.rs` | the top-k scan of a row and its heap |

use super::ce::row::max_argmax;
use super::ce::{load_z, load_z_part, IGNORED};
use super::exp::{exp_nonpos, FULL_LO};
use super::mem::{load_upto, store_upto};
use super::rows::{scale, scale_then_max, SUM_BLOCK_VECS};
use crate::arch::vector::Simd;
use crate::shard::RowState;
use crate::token::MAX_TOP_K;

mod paths;
mod row;
mod topk;

pub(crate) use paths::{backward_path, forward_path, shard_backward_path};
pub(crate) use row::{tok_bwd_row, tok_last_pass, tok_row, LastPass};
pub(crate) use topk::top_k_row;

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
