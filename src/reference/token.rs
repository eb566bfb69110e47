//! The scalar reference's token log-prob kernels: f64 arithmetic straight from the formulas of
//! `crate::arch::generic::token`, one row at a time, driven by the same row loops as the SIMD
//! tiers.

use crate::arch::generic::token::{
    backward_path, forward_path, shard_backward_path, LastPass, TokArgs, TokBwdArgs, TokKernels,
    TokRowKernels, TokRowOut, TokRows,
};
use crate::token::MAX_TOP_K;

/// The scalar tier's token log-prob kernels.
pub(crate) static TOK: TokKernels = TokKernels {
    forward,
    backward,
    shard_backward,
};

/// The reference's one-row kernels, for the row loops the SIMD tiers run too.
#[derive(Clone, Copy)]
struct Reference;

/// The (capped) row in f64, its maximum (ignoring NaN), and whether it holds a NaN.
///
/// # Safety
/// `x .. x + n` valid for reads.
unsafe fn capped_row(x: *const f32, n: usize, cap: f32) -> (Vec<f64>, f64, bool) {
    let z: Vec<f64> = (0..n)
        .map(|i| {
            // SAFETY: `i < n`.
            let v = unsafe { *x.add(i) } as f64;
            if cap != 0.0 {
                cap as f64 * (v / cap as f64).tanh()
            } else {
                v
            }
        })
        .collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let nan = z.iter().any(|v| v.is_nan());
    (z, m, nan)
}

/// The chain factor of the cap at `z`, in f64.
fn chain64(cap: f32, z: f64) -> f64 {
    if cap != 0.0 {
        let q = z / cap as f64;
        1.0 - q * q
    } else {
        1.0
    }
}

/// `p (g_l + g_h (u + h))`, with `p = 0` giving 0 whatever `u` is (a masked logit).
fn minus_term(p: f64, u: f64, h: f64, gl: f64, gh: f64) -> f64 {
    if p == 0.0 {
        0.0
    } else if gh == 0.0 {
        p * gl
    } else {
        p * (gl + gh * (u + h))
    }
}

impl TokRowKernels for Reference {
    unsafe fn fwd_row(self, x: *const f32, grad: *mut f32, n: usize, a: &TokArgs) -> TokRowOut {
        // SAFETY: the caller's contract: `n` logits at `x`, `n` gradient floats at `grad` if
        // non-null, `a.t < n`.
        unsafe {
            let (z, m, nan) = capped_row(x, n, a.cap);
            // (A vocabulary shard without the row's token: `t` is past the row.)
            let zt = z.get(a.t).copied().unwrap_or(0.0);
            if !m.is_finite() || nan {
                if !grad.is_null() {
                    crate::arch::special::fill(grad, n, f32::NAN);
                }
                let m = if nan { f64::NAN } else { m };
                return TokRowOut {
                    m,
                    ls: f64::NAN,
                    zt,
                    hd: f64::NAN,
                    total: f64::NAN,
                    dot: f64::NAN,
                    next_max: None,
                };
            }
            let it = a.inv_t as f64;
            let d: Vec<f64> = z.iter().map(|&v| (v - m) * it).collect();
            let e: Vec<f64> = d.iter().map(|&v| v.exp()).collect();
            let s: f64 = e.iter().sum();
            let dot = d
                .iter()
                .zip(&e)
                .map(|(&dk, &ek)| if ek == 0.0 { 0.0 } else { dk * ek })
                .sum::<f64>();
            let hd = dot / s;
            let ls = s.ln();
            // (With `keep`, a shard's forward: its backward recomputes from `x`.)
            if !grad.is_null() && !a.keep {
                let (gl, gh) = (a.g_logp as f64, a.g_entropy as f64);
                let h = ls - hd;
                for k in 0..n {
                    let p = e[k] / s;
                    let mut g = -minus_term(p, d[k] - ls, h, gl, gh);
                    if k == a.t {
                        g += gl;
                    }
                    *grad.add(k) = (g * it * chain64(a.cap, z[k])) as f32;
                }
            }
            TokRowOut {
                m,
                ls,
                zt,
                hd: if a.entropy { hd } else { 0.0 },
                total: s,
                dot,
                next_max: None,
            }
        }
    }

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
        let (row, _, _) = unsafe { capped_row(x, n, cap) };
        // Every comparable value, sorted: largest first, the smaller index first on ties.
        let mut all: Vec<(f64, u32)> = row
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &v)| (v, i as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let len = all.len().min(k);
        for (q, &(v, i)) in all[..len].iter().enumerate() {
            z[q] = v;
            idx[q] = i;
        }
        len
    }

    unsafe fn shard_row(
        self,
        x: *const f32,
        grad: *mut f32,
        n: usize,
        _p: &LastPass,
        b: &TokBwdArgs,
    ) {
        // SAFETY: forwarded.
        unsafe { self.bwd_row(x, grad, n, b) }
    }

    unsafe fn bwd_row(self, x: *const f32, grad: *mut f32, n: usize, a: &TokBwdArgs) {
        // SAFETY: the caller's contract, as above.
        unsafe {
            let (z, _, _) = capped_row(x, n, a.cap);
            let it = a.inv_t as f64;
            let (gl, gh) = (a.g_logp as f64, a.g_entropy as f64);
            for (k, &zk) in z.iter().enumerate() {
                let u = zk * it - a.lse as f64;
                let p = u.exp();
                // A NaN logit or lse makes `p` NaN, which `minus_term` passes on.
                let mut g = -minus_term(p, u, a.h as f64, gl, gh);
                if k == a.t {
                    g += gl;
                }
                *grad.add(k) = (g * it * chain64(a.cap, zk)) as f32;
            }
        }
    }
}

/// The `TokPath::ShardBackward` entry: the SIMD tiers' loop, each row recomputed from the
/// logits and the global `lse'` by the backward row (the kept values are not read).
///
/// # Safety
/// The contract of `generic::token::TokPathFn`.
unsafe fn shard_backward(b: &TokRows<'_>) {
    // SAFETY: forwarded.
    unsafe { shard_backward_path(Reference, b) }
}

/// The `TokPath::Forward` entry: the SIMD tiers' loop over the f64 row.
///
/// # Safety
/// The contract of `generic::token::TokPathFn`.
unsafe fn forward(b: &TokRows<'_>) {
    // SAFETY: forwarded.
    unsafe { forward_path(Reference, b) }
}

/// The `TokPath::Backward` entry: the SIMD tiers' loop over the f64 row.
///
/// # Safety
/// The contract of `generic::token::TokPathFn`.
unsafe fn backward(b: &TokRows<'_>) {
    // SAFETY: forwarded.
    unsafe { backward_path(Reference, b) }
}
