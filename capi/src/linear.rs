//! The output-layer updates: rank-1 and rank-k updates, weight and bias gradients, the plain
//! SGD step, linear forward/backward (all with leading dimensions), and the `sk_sgd` optimizer
//! handle (momentum, dampening, weight decay, Nesterov).

use sk::{Kernels, MatrixLayout, Sgd, SgdOptions};

use crate::args::{
    arg, disjoint, one, one_arg, opt_arg, opt_one, opt_slice, opt_slice_mut, put, slice, slice_mut,
    Arg,
};
use crate::handle::{free, handle, into_handle, Tagged};
use crate::runtime::{in_pool, kernels, run};
use crate::status::{guard, CResult, SkStatus};

fn layout(rows: usize, cols: usize, ld: usize) -> MatrixLayout {
    MatrixLayout::new(rows, cols).with_ld(ld)
}

/// Rank-1 update `W += alpha x y^T` (`x`: `C` floats, `y`: `D` floats, `W`: `[C, D]` with
/// leading dimension `ld`).
///
/// # Safety
/// `x`, `y` readable and `w` readable and writable for their lengths (any may be NULL with
/// length 0).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_rank1_update(
    alpha: f32,
    x: *const f32,
    x_len: usize,
    y: *const f32,
    y_len: usize,
    w: *mut f32,
    w_len: usize,
    ld: usize,
) -> SkStatus {
    guard("sk_rank1_update", || {
        let (xa, ya) = (arg("x", x, x_len)?, arg("y", y, y_len)?);
        let wa = arg("w", w.cast_const(), w_len)?;
        disjoint(&[&wa], &[&xa, &ya])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (x, y, w) = unsafe { (slice(x, x_len), slice(y, y_len), slice_mut(w, w_len)) };
        // The C signature keeps the bare leading dimension; the layout is `[x_len, y_len]`.
        let layout = MatrixLayout::new(x_len, y_len).with_ld(ld);
        run(move |k: &'static Kernels| Ok(k.rank1_update(alpha, x, y, w, layout)?))
    })
}

/// Rank-k update `W += alpha delta^T A`.
///
/// # Safety
/// As [`sk_rank1_update`] for `delta`, `a` and `w`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_rank_k_update(
    alpha: f32,
    delta: *const f32,
    delta_len: usize,
    a: *const f32,
    a_len: usize,
    w: *mut f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> SkStatus {
    guard("sk_rank_k_update", || {
        let (da, aa) = (arg("delta", delta, delta_len)?, arg("a", a, a_len)?);
        let wa = arg("w", w.cast_const(), w_len)?;
        disjoint(&[&wa], &[&da, &aa])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (delta, a, w) = unsafe {
            (
                slice(delta, delta_len),
                slice(a, a_len),
                slice_mut(w, w_len),
            )
        };
        let l = layout(rows, cols, ld);
        run(move |k: &'static Kernels| Ok(k.rank_k_update(alpha, delta, a, w, l)?))
    })
}

/// Weight gradient `dW = beta dW + alpha delta^T A`.
///
/// # Safety
/// As [`sk_rank1_update`] for `delta`, `a` and `dw`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_weight_grad(
    alpha: f32,
    delta: *const f32,
    delta_len: usize,
    a: *const f32,
    a_len: usize,
    beta: f32,
    dw: *mut f32,
    dw_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> SkStatus {
    guard("sk_weight_grad", || {
        let (da, aa) = (arg("delta", delta, delta_len)?, arg("a", a, a_len)?);
        let wa = arg("dw", dw.cast_const(), dw_len)?;
        disjoint(&[&wa], &[&da, &aa])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (delta, a, dw) = unsafe {
            (
                slice(delta, delta_len),
                slice(a, a_len),
                slice_mut(dw, dw_len),
            )
        };
        let l = layout(rows, cols, ld);
        run(move |k: &'static Kernels| Ok(k.weight_grad(alpha, delta, a, beta, dw, l)?))
    })
}

/// Bias gradient `db = beta db + alpha sum_rows delta`.
///
/// # Safety
/// `delta` readable and `db` readable and writable for their lengths.
#[no_mangle]
pub unsafe extern "C" fn sk_bias_grad(
    alpha: f32,
    delta: *const f32,
    delta_len: usize,
    beta: f32,
    db: *mut f32,
    db_len: usize,
) -> SkStatus {
    guard("sk_bias_grad", || {
        let da = arg("delta", delta, delta_len)?;
        let ba = arg("db", db.cast_const(), db_len)?;
        disjoint(&[&ba], &[&da])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (delta, db) = unsafe { (slice(delta, delta_len), slice_mut(db, db_len)) };
        run(move |k: &'static Kernels| Ok(k.bias_grad(alpha, delta, beta, db)?))
    })
}

/// Plain SGD step `W -= (lr / B) delta^T A` (and the bias, if given).
///
/// # Safety
/// As [`sk_rank1_update`] for `delta`, `a`, `w`; `bias` NULL (with length 0) or readable and
/// writable for `bias_len` floats.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_sgd_step(
    lr: f32,
    delta: *const f32,
    delta_len: usize,
    a: *const f32,
    a_len: usize,
    w: *mut f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    bias: *mut f32,
    bias_len: usize,
) -> SkStatus {
    guard("sk_sgd_step", || {
        let (da, aa) = (arg("delta", delta, delta_len)?, arg("a", a, a_len)?);
        let wa = arg("w", w.cast_const(), w_len)?;
        let ba = opt_arg("bias", bias.cast_const(), bias_len)?;
        let outs: Vec<&Arg> = std::iter::once(&wa).chain(ba.iter()).collect();
        disjoint(&outs, &[&da, &aa])?;
        // SAFETY: checked by `arg`/`opt_arg` and `disjoint`; the caller's contract.
        let (delta, a, w, bias) = unsafe {
            (
                slice(delta, delta_len),
                slice(a, a_len),
                slice_mut(w, w_len),
                opt_slice_mut(ba, bias, bias_len),
            )
        };
        let l = layout(rows, cols, ld);
        run(move |k: &'static Kernels| Ok(k.sgd_step(lr, delta, a, w, l, bias)?))
    })
}

/// Linear forward `Z = A W^T + b`.
///
/// # Safety
/// `a`, `w`, `b` (NULL with length 0 for none) readable and `z` writable for their lengths.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_linear_forward(
    a: *const f32,
    a_len: usize,
    w: *const f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    b: *const f32,
    b_len: usize,
    z: *mut f32,
    z_len: usize,
) -> SkStatus {
    guard("sk_linear_forward", || {
        let (aa, wa) = (arg("a", a, a_len)?, arg("w", w, w_len)?);
        let ba = opt_arg("b", b, b_len)?;
        let za = arg("z", z.cast_const(), z_len)?;
        let ins: Vec<&Arg> = [&aa, &wa].into_iter().chain(ba.iter()).collect();
        disjoint(&[&za], &ins)?;
        // SAFETY: checked by `arg`/`opt_arg` and `disjoint`; the caller's contract.
        let (a, w, b, z) = unsafe {
            (
                slice(a, a_len),
                slice(w, w_len),
                opt_slice(ba, b, b_len),
                slice_mut(z, z_len),
            )
        };
        let l = layout(rows, cols, ld);
        run(move |k: &'static Kernels| Ok(k.linear_forward(a, w, l, b, z)?))
    })
}

/// Linear backward to the input `dA = delta W`.
///
/// # Safety
/// `delta`, `w` readable and `da` writable for their lengths.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_linear_backward_input(
    delta: *const f32,
    delta_len: usize,
    w: *const f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    da: *mut f32,
    da_len: usize,
) -> SkStatus {
    guard("sk_linear_backward_input", || {
        let (dla, wa) = (arg("delta", delta, delta_len)?, arg("w", w, w_len)?);
        let daa = arg("da", da.cast_const(), da_len)?;
        disjoint(&[&daa], &[&dla, &wa])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (delta, w, da) = unsafe {
            (
                slice(delta, delta_len),
                slice(w, w_len),
                slice_mut(da, da_len),
            )
        };
        let l = layout(rows, cols, ld);
        run(move |k: &'static Kernels| Ok(k.linear_backward_input(delta, w, l, da)?))
    })
}

/// `sk_sgd_options`: `torch.optim.SGD`'s options.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkSgdOptions {
    /// Learning rate `>= 0` (default 1e-3).
    pub lr: f32,
    /// Momentum `>= 0` (default 0: no velocity buffer).
    pub momentum: f32,
    /// Dampening (default 0).
    pub dampening: f32,
    /// L2 penalty `>= 0` (default 0).
    pub weight_decay: f32,
    /// Nonzero for Nesterov momentum (needs momentum > 0 and dampening 0). Default 0.
    pub nesterov: i32,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SkSgdOptions>() == 20);

impl From<SgdOptions> for SkSgdOptions {
    fn from(o: SgdOptions) -> Self {
        SkSgdOptions {
            lr: o.lr,
            momentum: o.momentum,
            dampening: o.dampening,
            weight_decay: o.weight_decay,
            nesterov: o.nesterov as i32,
        }
    }
}

impl From<SkSgdOptions> for SgdOptions {
    fn from(o: SkSgdOptions) -> Self {
        SgdOptions::new(o.lr)
            .momentum(o.momentum)
            .dampening(o.dampening)
            .weight_decay(o.weight_decay)
            .nesterov(o.nesterov != 0)
    }
}

/// The options behind `p`, or the defaults for NULL.
///
/// # Safety
/// `p` is NULL or points to a readable `sk_sgd_options`.
pub(crate) unsafe fn read_sgd_options(p: *const SkSgdOptions) -> CResult<SgdOptions> {
    if p.is_null() {
        return Ok(SgdOptions::default());
    }
    one("opts", p)?;
    // SAFETY: non-NULL and aligned (checked), readable by the caller's contract; every field is
    // valid for any bit pattern.
    Ok(unsafe { p.read() }.into())
}

/// Fills `opts` with PyTorch's defaults (`lr = 1e-3`, everything else off).
///
/// # Safety
/// `opts` is NULL (an error) or writable for one `sk_sgd_options`.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_options_default(opts: *mut SkSgdOptions) -> SkStatus {
    guard("sk_sgd_options_default", || {
        // SAFETY: the caller's contract.
        unsafe { crate::args::put_required("opts", opts, SgdOptions::default().into()) }
    })
}

/// The `sk_sgd_optimizer` handle: the tag (see [`crate::handle`]), then an [`Sgd`] optimizer
/// bound to the tier current at its creation.
#[repr(C)]
#[derive(Debug)]
pub struct SkSgdOptimizer {
    tag: u64,
    inner: Sgd,
}

// SAFETY: `#[repr(C)]` with the `u64` tag first; set to `LIVE` in `sk_sgd_optimizer_create` and
// written afterwards only by `handle::free`.
unsafe impl Tagged for SkSgdOptimizer {
    const LIVE: u64 = u64::from_be_bytes(*b"sk:sgdop");
    const C_NAME: &'static str = "sk_sgd_optimizer";
}

/// Creates an optimizer (`opts` NULL: the defaults) on the current tier; `*out` receives the
/// handle (NULL on failure).
///
/// # Safety
/// `opts` NULL or readable; `out` writable for one pointer.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_optimizer_create(
    opts: *const SkSgdOptions,
    out: *mut *mut SkSgdOptimizer,
) -> SkStatus {
    guard("sk_sgd_optimizer_create", || {
        let oa = one_arg("out", out.cast_const())?;
        disjoint(&[&oa], &opt_one("opts", opts)?.iter().collect::<Vec<_>>())?;
        // SAFETY: non-NULL, aligned, overlapping nothing, writable by the caller's contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller's contract.
        let o = unsafe { read_sgd_options(opts)? };
        let inner = kernels()?.sgd(o)?;
        let h = into_handle(SkSgdOptimizer {
            tag: SkSgdOptimizer::LIVE,
            inner,
        });
        // SAFETY: as above.
        unsafe { out.write(h) };
        Ok(())
    })
}

/// Frees an optimizer (NULL: nothing). A pointer that is not a live optimizer (freed already,
/// say) frees nothing and leaves an `SK_BAD_HANDLE` message (best effort: see
/// [`crate::handle`]).
///
/// # Safety
/// `sgd` is NULL or a live handle from [`sk_sgd_optimizer_create`], not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_optimizer_free(sgd: *mut SkSgdOptimizer) {
    if sgd.is_null() {
        return;
    }
    // SAFETY: the caller's contract.
    let _ = guard("sk_sgd_optimizer_free", || unsafe { free("sgd", sgd) });
}

/// The optimizer's own memory (the handle's struct and the velocity buffers, written by every
/// step), which no argument may overlap.
fn sgd_buffers(h: &SkSgdOptimizer) -> Vec<Arg> {
    let s = &h.inner;
    let mut v = vec![Arg::of_ref("the optimizer's handle", h)];
    if let Some(b) = s.velocity() {
        v.push(Arg::of_slice("velocity", b));
    }
    if let Some(b) = s.bias_velocity() {
        v.push(Arg::of_slice("bias velocity", b));
    }
    v
}

/// One optimizer step from the batch error: `grad = (1/B) delta^T A` for `W`, `(1/B) sum_rows
/// delta` for the bias (if given), then the SGD update.
///
/// # Safety
/// `sgd` a live handle; arrays as [`sk_sgd_step`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_sgd_optimizer_step(
    sgd: *mut SkSgdOptimizer,
    delta: *const f32,
    delta_len: usize,
    a: *const f32,
    a_len: usize,
    w: *mut f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    bias: *mut f32,
    bias_len: usize,
) -> SkStatus {
    guard("sk_sgd_optimizer_step", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle("sgd", sgd)? };
        let (da, aa) = (arg("delta", delta, delta_len)?, arg("a", a, a_len)?);
        let wa = arg("w", w.cast_const(), w_len)?;
        let ba = opt_arg("bias", bias.cast_const(), bias_len)?;
        // The optimizer writes its handle and velocity buffers: they count as outputs.
        let bufs = sgd_buffers(s);
        let outs: Vec<&Arg> = std::iter::once(&wa).chain(&ba).chain(&bufs).collect();
        disjoint(&outs, &[&da, &aa])?;
        // SAFETY: checked by `arg`/`opt_arg` and `disjoint`; the caller's contract.
        let (delta, a, w, bias) = unsafe {
            (
                slice(delta, delta_len),
                slice(a, a_len),
                slice_mut(w, w_len),
                opt_slice_mut(ba, bias, bias_len),
            )
        };
        let l = layout(rows, cols, ld);
        let inner = &mut s.inner;
        in_pool(move || Ok(inner.step(delta, a, w, l, bias)?))
    })
}

/// One step of `W` with a dense `[C, D]` gradient you computed.
///
/// # Safety
/// `sgd` a live handle; `w` readable and writable, `grad` readable, for their lengths.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_sgd_optimizer_apply_grad(
    sgd: *mut SkSgdOptimizer,
    w: *mut f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    grad: *const f32,
    grad_len: usize,
) -> SkStatus {
    guard("sk_sgd_optimizer_apply_grad", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle("sgd", sgd)? };
        let wa = arg("w", w.cast_const(), w_len)?;
        let ga = arg("grad", grad, grad_len)?;
        let bufs = sgd_buffers(s);
        let outs: Vec<&Arg> = std::iter::once(&wa).chain(&bufs).collect();
        disjoint(&outs, &[&ga])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (w, grad) = unsafe { (slice_mut(w, w_len), slice(grad, grad_len)) };
        let l = layout(rows, cols, ld);
        let inner = &mut s.inner;
        in_pool(move || Ok(inner.apply_grad(w, l, grad)?))
    })
}

/// One step of a bias with a gradient you computed (`grad_len == bias_len`).
///
/// # Safety
/// `sgd` a live handle; `bias` readable and writable, `grad` readable, for their lengths.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_optimizer_apply_bias_grad(
    sgd: *mut SkSgdOptimizer,
    bias: *mut f32,
    bias_len: usize,
    grad: *const f32,
    grad_len: usize,
) -> SkStatus {
    guard("sk_sgd_optimizer_apply_bias_grad", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle("sgd", sgd)? };
        let ba = arg("bias", bias.cast_const(), bias_len)?;
        let ga = arg("grad", grad, grad_len)?;
        let bufs = sgd_buffers(s);
        let outs: Vec<&Arg> = std::iter::once(&ba).chain(&bufs).collect();
        disjoint(&outs, &[&ga])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (bias, grad) = unsafe { (slice_mut(bias, bias_len), slice(grad, grad_len)) };
        let inner = &mut s.inner;
        in_pool(move || Ok(inner.apply_bias_grad(bias, grad)?))
    })
}

/// Changes the learning rate; the state is kept.
///
/// # Safety
/// `sgd` a live handle.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_optimizer_set_lr(sgd: *mut SkSgdOptimizer, lr: f32) -> SkStatus {
    guard("sk_sgd_optimizer_set_lr", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle("sgd", sgd)? };
        Ok(s.inner.set_lr(lr)?)
    })
}

/// Forgets the state (velocities, shape, step count).
///
/// # Safety
/// `sgd` a live handle.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_optimizer_reset(sgd: *mut SkSgdOptimizer) -> SkStatus {
    guard("sk_sgd_optimizer_reset", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle("sgd", sgd)? };
        s.inner.reset();
        Ok(())
    })
}

/// The steps taken since creation or the last reset, into `*steps`.
///
/// # Safety
/// `sgd` a live handle; `steps` writable.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_optimizer_steps(
    sgd: *mut SkSgdOptimizer,
    steps: *mut u64,
) -> SkStatus {
    guard("sk_sgd_optimizer_steps", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle("sgd", sgd)? };
        let sa = one_arg("steps", steps.cast_const())?;
        disjoint(&[&sa], &sgd_buffers(s).iter().collect::<Vec<_>>())?;
        // SAFETY: checked (aligned, overlapping nothing); the caller's contract.
        unsafe { crate::args::put_required("steps", steps, s.inner.steps()) }
    })
}

/// The velocity of `W` (dense `[C, D]`), once a momentum step has run: `*velocity` and `*len`
/// receive the library-owned buffer (valid until the next call with this handle) or NULL and 0.
///
/// # Safety
/// `sgd` a live handle; `velocity` and `len` writable.
#[no_mangle]
pub unsafe extern "C" fn sk_sgd_optimizer_velocity(
    sgd: *mut SkSgdOptimizer,
    velocity: *mut *const f32,
    len: *mut usize,
) -> SkStatus {
    guard("sk_sgd_optimizer_velocity", || {
        // SAFETY: the caller's contract.
        let s = unsafe { handle("sgd", sgd)? };
        let outs = [
            one_arg("velocity", velocity.cast_const())?,
            one_arg("len", len.cast_const())?,
        ];
        disjoint(
            &[&outs[0], &outs[1]],
            &sgd_buffers(s).iter().collect::<Vec<_>>(),
        )?;
        let (p, n) = s
            .inner
            .velocity()
            .map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len()));
        // SAFETY: checked non-NULL, aligned and overlapping nothing; writable by the caller's
        // contract.
        unsafe {
            put("velocity", velocity, p)?;
            put("len", len, n)?;
        }
        Ok(())
    })
}
