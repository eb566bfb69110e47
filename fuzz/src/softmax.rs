//! The softmax family: `softmax`, `log_softmax` (out of place and in place, with and without
//! `SoftmaxOptions`), `logsumexp`, `softmax_backward`, `log_softmax_backward`, one tier against
//! the scalar reference.
//!
//! Forward functions: the shared oracle's contract checks, with the reference's outputs (f32,
//! promoted) as the expected values and `REF_SLACK` for their rounding; the reference itself
//! is checked against the oracle's exact f64 values. These hold for every input, huge and
//! special values included (the contract covers them).
//!
//! Backward functions: "plain products and sums ... NaN and infinities propagate by IEEE
//! rules", computed in f32. A row whose finite intermediates all stay below `2^125` (no f32
//! overflow; a finite `y > 88` in log_softmax_backward overflows `exp(y)`, and a `y < -87`
//! may underflow it to 0 in f32, which matters next to an infinite `sum(dy)`) is checked against
//! the oracle's exact values and per-element bounds (NaN/infinity pattern exact), with one term
//! added to the oracle's bound: `|y_i| cols 2^-149` for products `y_j dy_j` that underflow to
//! subnormals in f32 (the oracle's `1e-37` absolute term does not scale with `|y_i|`).
//! Other rows are checked for what IEEE arithmetic decides in any order: a NaN in `dy` (or,
//! for softmax_backward, in `y`) makes the whole row NaN; a NaN `y_i` makes `dx_i` NaN.

use softmax_kernels::{Kernels, MaskedRows, SoftmaxOptions};

use crate::input::{perturb, split, Fill, Win, Words};
use crate::oracle;
use crate::{
    has_unwritten, pow2, reference, same_outcome, shape, tier, unchanged, Report, UNWRITTEN,
};

crate::header! {
    /// The softmax target's header.
    pub struct SoftmaxHeader {
        /// The tier (see [`crate::tier`]).
        pub tier: u8,
        /// The function, `% 11` (see [`Op`]).
        pub op: u8,
        /// Bit 1: `MaskedRows::Zero`.
        pub masked: u8,
        /// Rows selector.
        pub rows: u8,
        /// Columns selector (see [`crate::shape`]).
        pub cols: u16,
        /// Length perturbation of `x` (or `y` of the backward passes): selector and delta.
        pub x_len: u8,
        /// See `x_len`.
        pub x_delta: i8,
        /// Length perturbation of the output.
        pub out_len: u8,
        /// See `out_len`.
        pub out_delta: i8,
        /// Length perturbation of `dy`.
        pub dy_len: u8,
        /// See `dy_len`.
        pub dy_delta: i8,
        /// Backward passes' `y`, `% 4`: 0 raw data, 1 softmax of the data, 2 log_softmax of
        /// the data, 3 raw data through `dywin`.
        pub y_src: u8,
        /// The window of the logits (and `y`).
        pub xwin: Win,
        /// The window of `dy`.
        pub dywin: Win,
        /// Words past the input.
        pub fill: Fill,
    }
}

/// The functions, by `op % 11`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `softmax`
    Softmax,
    /// `softmax_with`
    SoftmaxWith,
    /// `softmax_inplace`
    SoftmaxInplace,
    /// `softmax_inplace_with`
    SoftmaxInplaceWith,
    /// `log_softmax`
    LogSoftmax,
    /// `log_softmax_with`
    LogSoftmaxWith,
    /// `log_softmax_inplace`
    LogSoftmaxInplace,
    /// `log_softmax_inplace_with`
    LogSoftmaxInplaceWith,
    /// `logsumexp`
    Logsumexp,
    /// `softmax_backward`
    SoftmaxBackward,
    /// `log_softmax_backward`
    LogSoftmaxBackward,
}

impl Op {
    /// Every op, in selector order.
    pub const ALL: [Op; 11] = [
        Op::Softmax,
        Op::SoftmaxWith,
        Op::SoftmaxInplace,
        Op::SoftmaxInplaceWith,
        Op::LogSoftmax,
        Op::LogSoftmaxWith,
        Op::LogSoftmaxInplace,
        Op::LogSoftmaxInplaceWith,
        Op::Logsumexp,
        Op::SoftmaxBackward,
        Op::LogSoftmaxBackward,
    ];

    fn is_log(self) -> bool {
        matches!(
            self,
            Op::LogSoftmax | Op::LogSoftmaxWith | Op::LogSoftmaxInplace | Op::LogSoftmaxInplaceWith
        )
    }

    fn has_opts(self) -> bool {
        matches!(
            self,
            Op::SoftmaxWith
                | Op::SoftmaxInplaceWith
                | Op::LogSoftmaxWith
                | Op::LogSoftmaxInplaceWith
        )
    }

    fn in_place(self) -> bool {
        matches!(
            self,
            Op::SoftmaxInplace
                | Op::SoftmaxInplaceWith
                | Op::LogSoftmaxInplace
                | Op::LogSoftmaxInplaceWith
        )
    }
}

/// Runs one forward op; in place ops work on `x`, the others write `y`.
fn forward(
    k: &Kernels,
    op: Op,
    x: &mut [f32],
    y: &mut [f32],
    cols: usize,
    o: SoftmaxOptions,
) -> softmax_kernels::Result<()> {
    match op {
        Op::Softmax => k.softmax(x, y, cols),
        Op::SoftmaxWith => k.softmax_with(x, y, cols, o),
        Op::SoftmaxInplace => k.softmax_inplace(x, cols),
        Op::SoftmaxInplaceWith => k.softmax_inplace_with(x, cols, o),
        Op::LogSoftmax => k.log_softmax(x, y, cols),
        Op::LogSoftmaxWith => k.log_softmax_with(x, y, cols, o),
        Op::LogSoftmaxInplace => k.log_softmax_inplace(x, cols),
        Op::LogSoftmaxInplaceWith => k.log_softmax_inplace_with(x, cols, o),
        Op::Logsumexp => k.logsumexp(x, y, cols),
        Op::SoftmaxBackward | Op::LogSoftmaxBackward => unreachable!(),
    }
}

/// The checker (see the module docs).
pub fn check(data: &[u8]) -> Result<(), String> {
    let (h, rest) = split::<SoftmaxHeader>(data);
    let mut words = Words::new(rest, h.fill);
    let k = tier(h.tier);
    let r = reference();
    let (rows, cols) = shape(h.rows, h.cols, 40, true);
    let op = Op::ALL[h.op as usize % Op::ALL.len()];
    let n = rows * cols;
    let xl = perturb(n, h.x_len, h.x_delta);
    let ctx = move || format!("[{}] {op:?} rows {rows} cols {cols} x.len {xl}", k.isa());
    match op {
        Op::SoftmaxBackward | Op::LogSoftmaxBackward => {
            backward(&h, &mut words, op, xl, cols, k, r).map_err(|e| format!("{}\n{e}", ctx()))
        }
        _ => {
            let x = words.floats(xl, h.xwin);
            forward_case(&h, op, &x, cols, k, r).map_err(|e| format!("{}\n{e}", ctx()))
        }
    }
}

fn forward_case(
    h: &SoftmaxHeader,
    op: Op,
    x: &[f32],
    cols: usize,
    k: &Kernels,
    r: &Kernels,
) -> Result<(), String> {
    let mz = op.has_opts() && h.masked & 2 != 0;
    let o = SoftmaxOptions::default().masked_rows(if mz {
        MaskedRows::Zero
    } else {
        MaskedRows::Nan
    });
    let out_n = if op == Op::Logsumexp {
        x.len().checked_div(cols).unwrap_or(0)
    } else {
        x.len()
    };
    let out_len = if op.in_place() {
        0
    } else {
        perturb(out_n, h.out_len, h.out_delta)
    };
    let init = vec![f32::from_bits(UNWRITTEN); out_len];
    let (mut xt, mut yt) = (crate::input::exact(x), crate::input::exact(&init));
    let (mut xr, mut yr) = (crate::input::exact(x), crate::input::exact(&init));
    let rt = forward(k, op, &mut xt, &mut yt, cols, o);
    let rr = forward(r, op, &mut xr, &mut yr, cols, o);
    if !same_outcome("result", &rt, &rr)? {
        unchanged("tier x", x, &xt)?;
        unchanged("reference x", x, &xr)?;
        unchanged("tier output", &init, &yt)?;
        return unchanged("reference output", &init, &yr);
    }
    if !op.in_place() {
        unchanged("tier x (read only)", x, &xt)?;
    }
    let (got, want) = if op.in_place() {
        (&xt, &xr)
    } else {
        (&yt, &yr)
    };
    if !has_unwritten(x) {
        if let Some(i) = got.iter().position(|v| v.to_bits() == UNWRITTEN) {
            return Err(format!("tier output {i} was never written"));
        }
    }
    let slack = oracle::REF_SLACK;
    if op == Op::Logsumexp {
        oracle::check_logsumexp(got, &oracle::widen(want), slack)
            .map_err(|e| format!("tier vs reference: {e}"))?;
        oracle::check_logsumexp(want, &oracle::logsumexp(x, cols), 0.0)
            .map_err(|e| format!("reference vs oracle: {e}"))?;
    } else if op.is_log() {
        oracle::check_log_softmax(x, cols, got, &oracle::widen(want), slack)
            .map_err(|e| format!("tier vs reference: {e}"))?;
        oracle::check_log_softmax(x, cols, want, &oracle::log_softmax(x, cols, mz), 0.0)
            .map_err(|e| format!("reference vs oracle: {e}"))?;
    } else {
        oracle::check_softmax(x, cols, got, &oracle::widen(want), slack)
            .map_err(|e| format!("tier vs reference: {e}"))?;
        oracle::check_softmax(x, cols, want, &oracle::softmax(x, cols, mz), 0.0)
            .map_err(|e| format!("reference vs oracle: {e}"))?;
    }
    Ok(())
}

/// Finite intermediates below this never overflow an f32.
const BIG: f64 = 4.253_529_586_511_731e37; // 2^125

/// softmax_backward: whether every finite intermediate of the row stays below [`BIG`].
fn sm_bwd_domain(y: &[f32], dy: &[f32]) -> bool {
    let fin = |v: f32| v.is_finite();
    let s: f64 = y
        .iter()
        .zip(dy)
        .filter(|(a, b)| fin(**a) && fin(**b))
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    s <= BIG
        && y.iter().zip(dy).all(|(&a, &b)| {
            let d = if fin(b) { (b as f64).abs() } else { 0.0 };
            let a = if fin(a) { (a as f64).abs() } else { 0.0 };
            d + s <= BIG && a * (d + s) <= BIG
        })
}

/// log_softmax_backward: the same, with `exp(y)` below `2^125` too; and, when `dy` holds an
/// infinity (so `sum(dy)` is infinite), no finite `y < -87`, whose f32 `exp` may be 0 (the
/// correctly rounded f32 of `e^-104` is 0) where the f64 value is not: `0 * inf` is NaN in
/// f32, `inf` in f64.
fn lsm_bwd_domain(y: &[f32], dy: &[f32]) -> bool {
    if dy.iter().any(|v| v.is_infinite()) && y.iter().any(|&v| v.is_finite() && v < -87.0) {
        return false;
    }
    let s: f64 = dy
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v as f64).abs())
        .sum();
    s <= BIG
        && y.iter().zip(dy).all(|(&a, &b)| {
            if a.is_finite() && a > 88.0 {
                return false;
            }
            let e = if a.is_finite() { (a as f64).exp() } else { 0.0 };
            let d = if b.is_finite() { (b as f64).abs() } else { 0.0 };
            e * s <= BIG && d + e * s <= BIG
        })
}

fn backward(
    h: &SoftmaxHeader,
    words: &mut Words,
    op: Op,
    yl: usize,
    cols: usize,
    k: &Kernels,
    r: &Kernels,
) -> Result<(), String> {
    let raw = words.floats(yl, h.xwin);
    let y = match h.y_src % 4 {
        src @ (1 | 2) if cols > 0 && yl.is_multiple_of(cols) => {
            let mut y = crate::input::exact(&raw);
            if src == 1 {
                r.softmax(&raw, &mut y, cols).map_err(|e| e.to_string())?;
            } else {
                r.log_softmax(&raw, &mut y, cols)
                    .map_err(|e| e.to_string())?;
            }
            y
        }
        3 => {
            // The same words again, through the other window.
            raw.iter()
                .map(|v| h.dywin.apply(v.to_bits()))
                .collect::<Vec<f32>>()
        }
        _ => raw,
    };
    let y = crate::input::exact(&y);
    let dy = words.floats(perturb(yl, h.dy_len, h.dy_delta), h.dywin);
    let init = vec![f32::from_bits(UNWRITTEN); perturb(yl, h.out_len, h.out_delta)];
    let (mut dxt, mut dxr) = (crate::input::exact(&init), crate::input::exact(&init));
    let f = |kk: &Kernels, dx: &mut [f32]| {
        if op == Op::SoftmaxBackward {
            kk.softmax_backward(&y, &dy, dx, cols)
        } else {
            kk.log_softmax_backward(&y, &dy, dx, cols)
        }
    };
    let rt = f(k, &mut dxt);
    let rr = f(r, &mut dxr);
    if !same_outcome("result", &rt, &rr)? {
        unchanged("tier dx", &init, &dxt)?;
        return unchanged("reference dx", &init, &dxr);
    }
    let mut rep = Report::default();
    let sm = op == Op::SoftmaxBackward;
    for (row, ((yr, dyr), (gt, gr))) in y
        .chunks(cols)
        .zip(dy.chunks(cols))
        .zip(dxt.chunks(cols).zip(dxr.chunks(cols)))
        .enumerate()
    {
        let dom = if sm {
            sm_bwd_domain(yr, dyr)
        } else {
            lsm_bwd_domain(yr, dyr)
        };
        if dom {
            let (e, mut tol) = if sm {
                oracle::softmax_backward(yr, dyr, cols)
            } else {
                oracle::log_softmax_backward(yr, dyr, cols)
            };
            if sm {
                for (t, &a) in tol.iter_mut().zip(yr) {
                    *t += (a as f64).abs() * cols as f64 * pow2(-149) + pow2(-149);
                }
            }
            rep.check(
                || format!("row {row} tier"),
                oracle::check_backward("tier", cols, gt, &e, &tol),
            );
            rep.check(
                || format!("row {row} reference"),
                oracle::check_backward("reference", cols, gr, &e, &tol),
            );
        } else {
            // What IEEE arithmetic decides in any order.
            let row_nan = dyr.iter().any(|v| v.is_nan()) || (sm && yr.iter().any(|v| v.is_nan()));
            for (i, (&a, (&t, &rv))) in yr.iter().zip(gt.iter().zip(gr)).enumerate() {
                if row_nan || a.is_nan() {
                    rep.check(
                        || format!("row {row} col {i} (out of the f32 range domain)"),
                        if t.is_nan() && rv.is_nan() {
                            Ok(())
                        } else {
                            Err(format!(
                                "NaN input must give NaN: tier {t:e}, reference {rv:e}"
                            ))
                        },
                    );
                }
            }
        }
        if !has_unwritten(yr) && !has_unwritten(dyr) {
            if let Some(i) = gt.iter().position(|v| v.to_bits() == UNWRITTEN) {
                rep.check(
                    || format!("row {row}"),
                    Err(format!("dx[{i}] never written")),
                );
            }
        }
    }
    rep.finish(|| "backward".into())
}
