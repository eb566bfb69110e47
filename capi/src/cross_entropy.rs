//! Cross-entropy: class targets (`int64_t` or `int32_t`) and probability targets; loss only,
//! gradient into a separate buffer, or gradient in place; options as a plain C struct; optional
//! per-row outputs and a stats out-struct.

use sk::{
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Error, Kernels, Label,
    Logits, Reduction, Targets,
};

use crate::args::{
    arg, disjoint, one, opt_arg, opt_one, opt_slice, opt_slice_mut, put, slice, slice_mut, Arg,
};
use crate::runtime::run;
use crate::status::{guard, CError, CResult, SkStatus};

/// `sk_ce_options`: the options of every cross-entropy function. Fill it with
/// [`sk_ce_options_default`] and change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkCeOptions {
    /// `SK_REDUCTION_MEAN` (0, default), `SK_REDUCTION_SUM` (1) or `SK_REDUCTION_NONE` (2).
    pub reduction: i32,
    /// `SK_ALL_IGNORED_NAN` (0, default) or `SK_ALL_IGNORED_ZERO` (1).
    pub all_ignored: i32,
    /// Nonzero (default 1): labels equal to `ignore_index` mark rows to skip.
    pub has_ignore_index: i32,
    /// Label smoothing in `[0, 1]` (default 0).
    pub label_smoothing: f32,
    /// The ignored label (default -100).
    pub ignore_index: i64,
    /// z-loss coefficient `>= 0` (default 0).
    pub z_loss: f32,
    /// Logit soft-capping `cap > 0`, or 0 for none (default).
    pub softcap: f32,
    /// Upstream gradient scalar (default 1).
    pub scale: f32,
    /// Per-class weights (`cols` floats), or NULL.
    pub weight: *const f32,
    /// The length of `weight`.
    pub weight_len: usize,
    /// Per-row upstream gradient (`rows` floats, `SK_REDUCTION_NONE` only), or NULL.
    pub row_scale: *const f32,
    /// The length of `row_scale`.
    pub row_scale_len: usize,
}

/// `sk_ce_outputs`: optional per-row outputs; each pointer may be NULL (with length 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkCeOutputs {
    /// Each row's loss (`rows` floats). Required by `SK_REDUCTION_NONE`.
    pub row_loss: *mut f32,
    /// The length of `row_loss`.
    pub row_loss_len: usize,
    /// Each row's logsumexp (`rows` floats).
    pub lse: *mut f32,
    /// The length of `lse`.
    pub lse_len: usize,
    /// Each row's first argmax (`rows` entries).
    pub argmax: *mut u32,
    /// The length of `argmax`.
    pub argmax_len: usize,
}

/// `sk_ce_stats`: what a call reports beyond the loss.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkCeStats {
    /// The reduced loss in f64.
    pub loss_f64: f64,
    /// `Mean`'s denominator.
    pub denominator: f64,
    /// The rows not ignored.
    pub rows_used: usize,
    /// Rows whose argmax equals their label (valid when `has_correct`).
    pub correct: usize,
    /// The reduced loss.
    pub loss: f32,
    /// 1 when `correct` is valid (class targets with an `argmax` output), else 0.
    pub has_correct: i32,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<SkCeOptions>() == 72);
    assert!(std::mem::size_of::<SkCeOutputs>() == 48);
    assert!(std::mem::size_of::<SkCeStats>() == 40);
};

impl Default for SkCeOptions {
    fn default() -> Self {
        SkCeOptions {
            reduction: 0,
            all_ignored: 0,
            has_ignore_index: 1,
            label_smoothing: 0.0,
            ignore_index: -100,
            z_loss: 0.0,
            softcap: 0.0,
            scale: 1.0,
            weight: std::ptr::null(),
            weight_len: 0,
            row_scale: std::ptr::null(),
            row_scale_len: 0,
        }
    }
}

impl From<CrossEntropyStats> for SkCeStats {
    fn from(s: CrossEntropyStats) -> Self {
        SkCeStats {
            loss_f64: s.loss_f64,
            denominator: s.denominator,
            rows_used: s.rows_used,
            correct: s.correct.unwrap_or(0),
            loss: s.loss,
            has_correct: s.correct.is_some() as i32,
        }
    }
}

fn invalid(name: &'static str, v: i32, expected: &'static str) -> CError {
    CError::Kernel(Error::InvalidOption {
        name,
        value: v.to_string(),
        expected,
    })
}

/// The options behind `p` (NULL: the defaults), with the ranges of their arrays.
///
/// # Safety
/// `p` is NULL or points to a readable `sk_ce_options` whose arrays are readable for their
/// lengths (or NULL with length 0).
pub(crate) unsafe fn read_options<'a>(
    p: *const SkCeOptions,
) -> CResult<(CrossEntropyOptions<'a>, Option<Arg>, Option<Arg>)> {
    let o = if p.is_null() {
        SkCeOptions::default()
    } else {
        one("opts", p)?;
        // SAFETY: non-NULL and aligned (checked), readable by the caller's contract; every
        // field is valid for any bit pattern.
        unsafe { p.read() }
    };
    let reduction = match o.reduction {
        0 => Reduction::Mean,
        1 => Reduction::Sum,
        2 => Reduction::None,
        v => {
            return Err(invalid(
                "reduction",
                v,
                "SK_REDUCTION_MEAN (0), SK_REDUCTION_SUM (1) or SK_REDUCTION_NONE (2)",
            ))
        }
    };
    let all_ignored = match o.all_ignored {
        0 => AllIgnored::Nan,
        1 => AllIgnored::Zero,
        v => {
            return Err(invalid(
                "all_ignored",
                v,
                "SK_ALL_IGNORED_NAN (0) or SK_ALL_IGNORED_ZERO (1)",
            ))
        }
    };
    let wa = opt_arg("weight", o.weight, o.weight_len)?;
    let ra = opt_arg("row_scale", o.row_scale, o.row_scale_len)?;
    // The options struct is `#[non_exhaustive]`: start from the defaults and set every field
    // the C struct carries.
    let mut opts = CrossEntropyOptions::default();
    opts.reduction = reduction;
    // SAFETY: checked by `opt_arg`; readable by the caller's contract. Options are inputs:
    // `disjoint` later checks that no output overlaps them.
    opts.weight = unsafe { opt_slice(wa, o.weight, o.weight_len) };
    opts.ignore_index = (o.has_ignore_index != 0).then_some(o.ignore_index);
    opts.label_smoothing = o.label_smoothing;
    opts.z_loss = o.z_loss;
    // 0 means none; anything else is validated by the crate (finite and > 0).
    opts.softcap = (o.softcap != 0.0).then_some(o.softcap);
    opts.all_ignored = all_ignored;
    opts.scale = o.scale;
    // SAFETY: as for `weight`.
    opts.row_scale = unsafe { opt_slice(ra, o.row_scale, o.row_scale_len) };
    Ok((opts, wa, ra))
}

/// The optional outputs behind `p` (NULL: none) and their ranges.
///
/// # Safety
/// `p` is NULL or points to a readable `sk_ce_outputs` whose arrays are writable for their
/// lengths (or NULL with length 0); the slices are only used after `disjoint` accepted the
/// ranges.
pub(crate) unsafe fn read_outputs(
    p: *const SkCeOutputs,
) -> CResult<(SkCeOutputs, [Option<Arg>; 3])> {
    if p.is_null() {
        let none = SkCeOutputs {
            row_loss: std::ptr::null_mut(),
            row_loss_len: 0,
            lse: std::ptr::null_mut(),
            lse_len: 0,
            argmax: std::ptr::null_mut(),
            argmax_len: 0,
        };
        return Ok((none, [None, None, None]));
    }
    one("outputs", p)?;
    // SAFETY: non-NULL and aligned (checked), readable by the caller's contract; every field
    // is valid for any bit pattern.
    let o = unsafe { p.read() };
    let ranges = [
        opt_arg("row_loss", o.row_loss.cast_const(), o.row_loss_len)?,
        opt_arg("lse", o.lse.cast_const(), o.lse_len)?,
        opt_arg("argmax", o.argmax.cast_const(), o.argmax_len)?,
    ];
    Ok((o, ranges))
}

/// Where the targets are.
enum Tgt<L> {
    Classes(*const L, usize),
    Probs(*const f32, usize),
}

/// What the caller asked for the gradient.
enum Grad {
    /// Loss only.
    None,
    /// Into `grad` (in place when it is the logits' range).
    Into(*mut f32, usize),
}

/// The one implementation behind every cross-entropy entry point.
///
/// # Safety
/// Every pointer is NULL (with length 0 for arrays) or valid for its documented access and
/// length: `logits`, the targets and the options' arrays readable, `grad` and the outputs'
/// arrays writable, `stats` and `loss` writable.
#[allow(clippy::too_many_arguments)]
unsafe fn ce<L: Label>(
    logits: *const f32,
    logits_len: usize,
    targets: Tgt<L>,
    grad: Grad,
    cols: usize,
    opts: *const SkCeOptions,
    outputs: *const SkCeOutputs,
    stats: *mut SkCeStats,
    loss: *mut f32,
) -> CResult<()> {
    let lossa = opt_one("loss", loss.cast_const())?;
    let statsa = opt_one("stats", stats.cast_const())?;
    let opta = opt_one("opts", opts)?;
    let outa = opt_one("outputs", outputs)?;
    let la = arg("logits", logits, logits_len)?;
    let ta = match targets {
        Tgt::Classes(p, n) => arg("targets", p, n)?,
        Tgt::Probs(p, n) => arg("targets", p, n)?,
    };
    // SAFETY: the caller's contract for `opts` and its arrays.
    let (opts, wa, ra) = unsafe { read_options(opts)? };
    // SAFETY: the caller's contract for `outputs`.
    let (o, [rla, lsa, ama]) = unsafe { read_outputs(outputs)? };
    let (ga, in_place) = match grad {
        Grad::None => (None, false),
        Grad::Into(g, n) => {
            let ga = arg("grad", g.cast_const(), n)?;
            let same = n > 0 && g.cast_const() == logits && n == logits_len;
            (Some(ga), same)
        }
    };
    let mut outs: Vec<&Arg> = Vec::with_capacity(6);
    let mut ins: Vec<&Arg> = vec![&ta];
    if !in_place {
        ins.push(&la);
    }
    if let Some(ga) = &ga {
        outs.push(ga);
    }
    // The out-values `loss` and `stats` are outputs like the arrays; the options and outputs
    // structs are inputs (read before anything is written, but arguments all the same).
    outs.extend(
        rla.iter()
            .chain(&lsa)
            .chain(&ama)
            .chain(&lossa)
            .chain(&statsa),
    );
    ins.extend(wa.iter().chain(&ra).chain(&opta).chain(&outa));
    disjoint(&outs, &ins)?;
    // SAFETY: every range was checked by `arg`/`opt_arg`, the outputs overlap nothing
    // (`disjoint`; in place, `grad` is the logits' range and the logits get no shared slice);
    // validity is the caller's contract.
    let (lg, tg, mut co) = unsafe {
        let lg = match grad {
            Grad::None => Logits::Read(slice(logits, logits_len)),
            Grad::Into(g, n) if in_place => Logits::InPlace(slice_mut(g, n)),
            Grad::Into(g, n) => Logits::Grad(slice(logits, logits_len), slice_mut(g, n)),
        };
        let tg = match targets {
            Tgt::Classes(p, n) => Targets::Classes(slice(p, n)),
            Tgt::Probs(p, n) => Targets::Probs(slice(p, n)),
        };
        let co = CrossEntropyOutputs {
            row_loss: opt_slice_mut(rla, o.row_loss, o.row_loss_len),
            lse: opt_slice_mut(lsa, o.lse, o.lse_len),
            argmax: opt_slice_mut(ama, o.argmax, o.argmax_len),
        };
        (lg, tg, co)
    };
    let st =
        run(move |k: &'static Kernels| Ok(k.cross_entropy_with(lg, tg, cols, &opts, &mut co)?))?;
    // SAFETY: NULL or checked above (aligned, overlapping nothing); writable by the caller's
    // contract.
    unsafe {
        put("loss", loss, st.loss)?;
        put("stats", stats, SkCeStats::from(st))?;
    }
    Ok(())
}

/// Fills `opts` with the defaults (PyTorch's `F.cross_entropy`: mean, ignore_index -100, no
/// weights, no smoothing, no z-loss, no soft-capping, scale 1).
///
/// # Safety
/// `opts` is NULL (an error) or writable for one `sk_ce_options`.
#[no_mangle]
pub unsafe extern "C" fn sk_ce_options_default(opts: *mut SkCeOptions) -> SkStatus {
    guard("sk_ce_options_default", || {
        // SAFETY: the caller's contract.
        unsafe { crate::args::put_required("opts", opts, SkCeOptions::default()) }
    })
}

macro_rules! class_fns {
    ($label:ty, $loss:ident, $fb:ident, $fbi:ident, $ext:ident) => {
        /// Cross-entropy against class labels, loss only.
        ///
        /// # Safety
        /// `logits` and `targets` readable for their lengths, `opts` NULL or a readable
        /// options struct (whose arrays are readable), `loss` NULL or writable.
        #[no_mangle]
        pub unsafe extern "C" fn $loss(
            logits: *const f32,
            logits_len: usize,
            targets: *const $label,
            targets_len: usize,
            cols: usize,
            opts: *const SkCeOptions,
            loss: *mut f32,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($loss), || unsafe {
                ce(
                    logits,
                    logits_len,
                    Tgt::Classes(targets, targets_len),
                    Grad::None,
                    cols,
                    opts,
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    loss,
                )
            })
        }

        /// Cross-entropy against class labels, loss and gradient into `grad` (in place if
        /// `grad == logits`).
        ///
        /// # Safety
        /// As the loss-only form, and `grad` writable for `grad_len` floats.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $fb(
            logits: *const f32,
            logits_len: usize,
            targets: *const $label,
            targets_len: usize,
            grad: *mut f32,
            grad_len: usize,
            cols: usize,
            opts: *const SkCeOptions,
            loss: *mut f32,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($fb), || unsafe {
                ce(
                    logits,
                    logits_len,
                    Tgt::Classes(targets, targets_len),
                    Grad::Into(grad, grad_len),
                    cols,
                    opts,
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    loss,
                )
            })
        }

        /// Cross-entropy against class labels, the gradient written over the logits.
        ///
        /// # Safety
        /// As the loss-only form, and `logits` also writable.
        #[no_mangle]
        pub unsafe extern "C" fn $fbi(
            logits: *mut f32,
            logits_len: usize,
            targets: *const $label,
            targets_len: usize,
            cols: usize,
            opts: *const SkCeOptions,
            loss: *mut f32,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($fbi), || unsafe {
                ce(
                    logits,
                    logits_len,
                    Tgt::Classes(targets, targets_len),
                    Grad::Into(logits, logits_len),
                    cols,
                    opts,
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    loss,
                )
            })
        }

        /// The general form: `grad` NULL (loss only), a separate buffer, or `logits` (in
        /// place); optional per-row outputs and stats.
        ///
        /// # Safety
        /// As the other forms; `outputs` NULL or a readable struct whose arrays are writable;
        /// `stats` NULL or writable.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $ext(
            logits: *const f32,
            logits_len: usize,
            targets: *const $label,
            targets_len: usize,
            grad: *mut f32,
            grad_len: usize,
            cols: usize,
            opts: *const SkCeOptions,
            outputs: *const SkCeOutputs,
            stats: *mut SkCeStats,
        ) -> SkStatus {
            let g = if grad.is_null() && grad_len == 0 {
                Grad::None
            } else {
                Grad::Into(grad, grad_len)
            };
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($ext), || unsafe {
                ce(
                    logits,
                    logits_len,
                    Tgt::Classes(targets, targets_len),
                    g,
                    cols,
                    opts,
                    outputs,
                    stats,
                    std::ptr::null_mut(),
                )
            })
        }
    };
}

class_fns!(
    i64,
    sk_cross_entropy,
    sk_cross_entropy_fwd_bwd,
    sk_cross_entropy_fwd_bwd_inplace,
    sk_cross_entropy_ext
);
class_fns!(
    i32,
    sk_cross_entropy_i32,
    sk_cross_entropy_fwd_bwd_i32,
    sk_cross_entropy_fwd_bwd_inplace_i32,
    sk_cross_entropy_ext_i32
);

/// Cross-entropy against probability targets (`[rows, cols]`), loss only.
///
/// # Safety
/// `logits` and `probs` readable for their lengths, `opts` NULL or readable, `loss` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sk_cross_entropy_probs(
    logits: *const f32,
    logits_len: usize,
    probs: *const f32,
    probs_len: usize,
    cols: usize,
    opts: *const SkCeOptions,
    loss: *mut f32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_cross_entropy_probs", || unsafe {
        ce::<i64>(
            logits,
            logits_len,
            Tgt::Probs(probs, probs_len),
            Grad::None,
            cols,
            opts,
            std::ptr::null(),
            std::ptr::null_mut(),
            loss,
        )
    })
}

/// Cross-entropy against probability targets, loss and gradient into `grad` (in place if
/// `grad == logits`).
///
/// # Safety
/// As [`sk_cross_entropy_probs`], and `grad` writable for `grad_len` floats.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_cross_entropy_probs_fwd_bwd(
    logits: *const f32,
    logits_len: usize,
    probs: *const f32,
    probs_len: usize,
    grad: *mut f32,
    grad_len: usize,
    cols: usize,
    opts: *const SkCeOptions,
    loss: *mut f32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_cross_entropy_probs_fwd_bwd", || unsafe {
        ce::<i64>(
            logits,
            logits_len,
            Tgt::Probs(probs, probs_len),
            Grad::Into(grad, grad_len),
            cols,
            opts,
            std::ptr::null(),
            std::ptr::null_mut(),
            loss,
        )
    })
}

/// Cross-entropy against probability targets, the gradient written over the logits.
///
/// # Safety
/// As [`sk_cross_entropy_probs`], and `logits` also writable.
#[no_mangle]
pub unsafe extern "C" fn sk_cross_entropy_probs_fwd_bwd_inplace(
    logits: *mut f32,
    logits_len: usize,
    probs: *const f32,
    probs_len: usize,
    cols: usize,
    opts: *const SkCeOptions,
    loss: *mut f32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_cross_entropy_probs_fwd_bwd_inplace", || unsafe {
        ce::<i64>(
            logits,
            logits_len,
            Tgt::Probs(probs, probs_len),
            Grad::Into(logits, logits_len),
            cols,
            opts,
            std::ptr::null(),
            std::ptr::null_mut(),
            loss,
        )
    })
}

/// The general form against probability targets.
///
/// # Safety
/// As [`sk_cross_entropy_probs_fwd_bwd`]; `outputs` NULL or a readable struct whose arrays
/// are writable; `stats` NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_cross_entropy_probs_ext(
    logits: *const f32,
    logits_len: usize,
    probs: *const f32,
    probs_len: usize,
    grad: *mut f32,
    grad_len: usize,
    cols: usize,
    opts: *const SkCeOptions,
    outputs: *const SkCeOutputs,
    stats: *mut SkCeStats,
) -> SkStatus {
    let g = if grad.is_null() && grad_len == 0 {
        Grad::None
    } else {
        Grad::Into(grad, grad_len)
    };
    // SAFETY: the caller's contract, forwarded.
    guard("sk_cross_entropy_probs_ext", || unsafe {
        ce::<i64>(
            logits,
            logits_len,
            Tgt::Probs(probs, probs_len),
            g,
            cols,
            opts,
            outputs,
            stats,
            std::ptr::null_mut(),
        )
    })
}
