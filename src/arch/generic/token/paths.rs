//! The path entries of the token table: the row loops over [`TokRows`].

use super::*;

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
                // A NaN row: a NaN or `+inf` logit, or only `-inf` (a non-finite maximum), or a
                // NaN beside finite logits (the lanes' maximum skips it; the sum does not).
                // Every value is NaN then, also where the scan, which may skip a block holding
                // the NaN, found fewer than `k` candidates.
                let nan_row = !out.m.is_finite() || out.ls.is_nan();
                for q in 0..b.top_k {
                    let (v, i) = if q < len {
                        let lp = if nan_row {
                            f64::NAN
                        } else {
                            (z[q] - out.m) * c.inv_t as f64 - out.ls
                        };
                        (lp as f32, idx[q])
                    } else if nan_row {
                        (f32::NAN, u32::MAX)
                    } else {
                        (f32::NEG_INFINITY, u32::MAX)
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
