//! One row of the token kernels: the forward's sweeps (pass 2 with the entropy's `sum d e`,
//! the last pass that writes the gradient), and the backward row from a saved `lse'`.

use super::*;

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
