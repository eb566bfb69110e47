//! The fused linear cross-entropy: the loss of `softmax(A W^T + b)` against class labels
//! (`int64_t`) or probability targets, and any of `dA`, `dW`, `db` and the per-row outputs,
//! computed in chunks without the `[B, C]` logits. The cross-entropy options are the
//! `sk_ce_options` of the cross-entropy functions; the chunking and accumulation are a small
//! struct of their own.

use sk::tuning::DEFAULT_CHUNK_BYTES;
use sk::{
    CrossEntropyOptions, CrossEntropyOutputs, Kernels, LinearCeOptions, LinearCeOutputs,
    MatrixLayout, Targets,
};

use crate::args::{
    arg, disjoint, one, opt_arg, opt_one, opt_slice, opt_slice_mut, put, slice, Arg,
};
use crate::cross_entropy::{read_options, read_outputs, SkCeOptions, SkCeOutputs, SkCeStats};
use crate::runtime::run;
use crate::status::{guard, CResult, SkStatus};

/// `sk_linear_ce_options`: the chunking of [`sk_linear_cross_entropy`] and whether `dW` and
/// `db` accumulate. All zeros (what [`sk_linear_ce_options_default`] writes, and what NULL
/// means) is the default: automatic chunks, gradients overwritten.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SkLinearCeOptions {
    /// Rows per chunk; 0: automatic (from `chunk_bytes`).
    pub chunk_rows: usize,
    /// Classes per block (below the class count: the two-pass class-chunked mode, class
    /// labels only); 0: automatic (`LinearCeOptions::chunk_classes` `None`: whole rows if
    /// `chunk_rows` is given or the budget holds `min(B, ROW_MODE_MIN_ROWS)` rows, and always
    /// for probability targets; else class blocks).
    pub chunk_classes: usize,
    /// The budget in bytes for one chunk of logits; 0: the default (16 MiB).
    pub chunk_bytes: usize,
    /// Nonzero: `dW` and `db` are added to (as PyTorch accumulates `.grad`); 0 (default):
    /// overwritten. `dA` is always overwritten.
    pub accumulate: i32,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SkLinearCeOptions>() == 32);

impl SkLinearCeOptions {
    /// The crate's options: the cross-entropy options `ce` with this chunking (0 meaning
    /// automatic or the default budget, so a zero chunk size never reaches the crate's own
    /// `>= 1` check).
    fn with_ce<'a>(&self, ce: CrossEntropyOptions<'a>) -> LinearCeOptions<'a> {
        let mut o = LinearCeOptions::new(ce);
        o.chunk_rows = (self.chunk_rows != 0).then_some(self.chunk_rows);
        o.chunk_classes = (self.chunk_classes != 0).then_some(self.chunk_classes);
        o.chunk_bytes = if self.chunk_bytes == 0 {
            DEFAULT_CHUNK_BYTES
        } else {
            self.chunk_bytes
        };
        o.accumulate = self.accumulate != 0;
        o
    }
}

/// The options behind `p`, or the defaults for NULL.
///
/// # Safety
/// `p` is NULL or points to a readable `sk_linear_ce_options`.
unsafe fn read_lce_options(p: *const SkLinearCeOptions) -> CResult<SkLinearCeOptions> {
    if p.is_null() {
        return Ok(SkLinearCeOptions::default());
    }
    one("lce_opts", p)?;
    // SAFETY: non-NULL and aligned (checked), readable by the caller's contract; every field
    // is valid for any bit pattern.
    Ok(unsafe { p.read() })
}

/// Fills `opts` with the defaults (automatic chunks, no accumulation: all zeros).
///
/// # Safety
/// `opts` is NULL (an error) or writable for one `sk_linear_ce_options`.
#[no_mangle]
pub unsafe extern "C" fn sk_linear_ce_options_default(opts: *mut SkLinearCeOptions) -> SkStatus {
    guard("sk_linear_ce_options_default", || {
        // SAFETY: the caller's contract.
        unsafe { crate::args::put_required("opts", opts, SkLinearCeOptions::default()) }
    })
}

/// Where the targets are.
enum Tgt {
    Classes(*const i64, usize),
    Probs(*const f32, usize),
}

/// The gradients' buffers: `(pointer, length)` each, NULL with length 0 for "not wanted".
struct Grads {
    da: (*mut f32, usize),
    dw: (*mut f32, usize),
    db: (*mut f32, usize),
}

/// The one implementation behind both entry points.
///
/// # Safety
/// Every pointer is NULL (with length 0 for arrays) or valid for its documented access and
/// length: `a`, `w`, `bias`, the targets and the options' arrays readable; the gradients and
/// the outputs' arrays writable; `stats` writable.
#[allow(clippy::too_many_arguments)]
unsafe fn lce(
    a: *const f32,
    a_len: usize,
    w: *const f32,
    w_len: usize,
    layout: MatrixLayout,
    bias: *const f32,
    bias_len: usize,
    targets: Tgt,
    opts: *const SkCeOptions,
    lce_opts: *const SkLinearCeOptions,
    grads: Grads,
    outputs: *const SkCeOutputs,
    stats: *mut SkCeStats,
) -> CResult<()> {
    let statsa = opt_one("stats", stats.cast_const())?;
    let opta = opt_one("opts", opts)?;
    let lopta = opt_one("lce_opts", lce_opts)?;
    let outa = opt_one("outputs", outputs)?;
    let aa = arg("a", a, a_len)?;
    let wa = arg("w", w, w_len)?;
    let ba = opt_arg("bias", bias, bias_len)?;
    let ta = match targets {
        Tgt::Classes(p, n) => arg("targets", p, n)?,
        Tgt::Probs(p, n) => arg("targets", p, n)?,
    };
    // SAFETY: the caller's contract for `opts` and its arrays.
    let (ce, wga, rsa) = unsafe { read_options(opts)? };
    // SAFETY: the caller's contract for `lce_opts`.
    let lo = unsafe { read_lce_options(lce_opts)? };
    // SAFETY: the caller's contract for `outputs`.
    let (o, [rla, lsa, ama]) = unsafe { read_outputs(outputs)? };
    let Grads { da, dw, db } = grads;
    let daa = opt_arg("da", da.0.cast_const(), da.1)?;
    let dwa = opt_arg("dw", dw.0.cast_const(), dw.1)?;
    let dba = opt_arg("db", db.0.cast_const(), db.1)?;
    let outs: Vec<&Arg> = daa
        .iter()
        .chain(&dwa)
        .chain(&dba)
        .chain(&rla)
        .chain(&lsa)
        .chain(&ama)
        .chain(&statsa)
        .collect();
    // The options and outputs structs are inputs (read before anything is written, but
    // arguments all the same).
    let ins: Vec<&Arg> = [&aa, &wa, &ta]
        .into_iter()
        .chain(&ba)
        .chain(&wga)
        .chain(&rsa)
        .chain(&opta)
        .chain(&lopta)
        .chain(&outa)
        .collect();
    disjoint(&outs, &ins)?;
    // SAFETY: every range was checked by `arg`/`opt_arg`, the outputs overlap nothing
    // (`disjoint`); validity is the caller's contract.
    let (a, w, bias, tg, mut out) = unsafe {
        let tg = match targets {
            Tgt::Classes(p, n) => Targets::Classes(slice(p, n)),
            Tgt::Probs(p, n) => Targets::Probs(slice(p, n)),
        };
        let out = LinearCeOutputs {
            da: opt_slice_mut(daa, da.0, da.1),
            dw: opt_slice_mut(dwa, dw.0, dw.1),
            db: opt_slice_mut(dba, db.0, db.1),
            ce: CrossEntropyOutputs {
                row_loss: opt_slice_mut(rla, o.row_loss, o.row_loss_len),
                lse: opt_slice_mut(lsa, o.lse, o.lse_len),
                argmax: opt_slice_mut(ama, o.argmax, o.argmax_len),
            },
        };
        (
            slice(a, a_len),
            slice(w, w_len),
            opt_slice(ba, bias, bias_len),
            tg,
            out,
        )
    };
    let lopts = lo.with_ce(ce);
    let st = run(move |k: &'static Kernels| {
        Ok(k.linear_cross_entropy(a, w, layout, bias, tg, &lopts, &mut out)?)
    })?;
    // SAFETY: NULL or checked above (aligned, overlapping nothing); writable by the caller's
    // contract.
    unsafe { put("stats", stats, SkCeStats::from(st)) }
}

/// Fused linear cross-entropy against `int64_t` class labels: the loss of `Z = A W^T + b`
/// (`a`: `[B, cols]`, `w`: `[rows, cols]` with leading dimension `ld`, `bias`: `rows` floats or
/// NULL) and, for each of `da` (`[B, cols]`), `dw` (`w`'s layout) and `db` (`rows` floats) that
/// is not NULL, its gradient; the per-row outputs of `outputs`; `*stats`.
///
/// # Safety
/// `a`, `w`, `bias`, `targets` readable for their lengths; `opts` and `lce_opts` NULL or
/// readable (`opts`' arrays readable); `da`, `dw`, `db` NULL or writable for their lengths;
/// `outputs` NULL or a readable struct whose arrays are writable; `stats` NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_linear_cross_entropy(
    a: *const f32,
    a_len: usize,
    w: *const f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    bias: *const f32,
    bias_len: usize,
    targets: *const i64,
    targets_len: usize,
    opts: *const SkCeOptions,
    lce_opts: *const SkLinearCeOptions,
    da: *mut f32,
    da_len: usize,
    dw: *mut f32,
    dw_len: usize,
    db: *mut f32,
    db_len: usize,
    outputs: *const SkCeOutputs,
    stats: *mut SkCeStats,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_linear_cross_entropy", || unsafe {
        lce(
            a,
            a_len,
            w,
            w_len,
            MatrixLayout::new(rows, cols).with_ld(ld),
            bias,
            bias_len,
            Tgt::Classes(targets, targets_len),
            opts,
            lce_opts,
            Grads {
                da: (da, da_len),
                dw: (dw, dw_len),
                db: (db, db_len),
            },
            outputs,
            stats,
        )
    })
}

/// [`sk_linear_cross_entropy`] against probability targets (`probs`: `[B, rows]`).
///
/// # Safety
/// As [`sk_linear_cross_entropy`], with `probs` readable for `probs_len` floats.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_linear_cross_entropy_probs(
    a: *const f32,
    a_len: usize,
    w: *const f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    bias: *const f32,
    bias_len: usize,
    probs: *const f32,
    probs_len: usize,
    opts: *const SkCeOptions,
    lce_opts: *const SkLinearCeOptions,
    da: *mut f32,
    da_len: usize,
    dw: *mut f32,
    dw_len: usize,
    db: *mut f32,
    db_len: usize,
    outputs: *const SkCeOutputs,
    stats: *mut SkCeStats,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_linear_cross_entropy_probs", || unsafe {
        lce(
            a,
            a_len,
            w,
            w_len,
            MatrixLayout::new(rows, cols).with_ld(ld),
            bias,
            bias_len,
            Tgt::Probs(probs, probs_len),
            opts,
            lce_opts,
            Grads {
                da: (da, da_len),
                dw: (dw, dw_len),
                db: (db, db_len),
            },
            outputs,
            stats,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_automatic() {
        let o = SkLinearCeOptions::default().with_ce(CrossEntropyOptions::default());
        assert_eq!(o, LinearCeOptions::default());
        let o = SkLinearCeOptions {
            chunk_rows: 3,
            chunk_classes: 5,
            chunk_bytes: 64,
            accumulate: 7,
        }
        .with_ce(CrossEntropyOptions::default());
        assert_eq!(
            (o.chunk_rows, o.chunk_classes, o.chunk_bytes, o.accumulate),
            (Some(3), Some(5), 64, true)
        );
    }
}
