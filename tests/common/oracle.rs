//! The f64 oracle for the softmax family and the checks of the documented numerical contract.
//!
//! Everything here is computed straight from the formulas of the crate docs, in f64, without
//! calling the crate:
//!
//! ```text
//! m = max_j z_j,   s = sum_j exp(z_j - m),   lse = m + ln s
//! softmax_k = exp(z_k - m) / s,   log_softmax_k = (z_k - m) - ln s
//! softmax backward      dx = y * (dy - <dy, y>)
//! log_softmax backward  dx = dy - exp(y) * sum(dy)
//! ```
//!
//! plus the special-value semantics (PyTorch's): NaN anywhere in a row makes the row NaN, a
//! `+inf` logit makes softmax/log_softmax NaN and logsumexp `+inf`, an all `-inf` row gives NaN
//! (or 0 / `-inf` when masked rows are zeroed) and logsumexp `-inf`.
//!
//! This file depends on `std` only, so a fuzz target can include it with
//! `#[path = "../../tests/common/oracle.rs"] mod oracle;`.

#![allow(dead_code)]

use std::fmt::Write as _;

/// `2^-23`: the coefficient of `|z - max|` in the softmax tolerance (the rounding of `z - max`
/// to f32).
pub const Z_ROUND: f64 = 1.0 / 8_388_608.0;
/// `2^-24`: the per-class allowance of the row-sum check, and the unit roundoff of f32.
pub const U32: f64 = 1.0 / 16_777_216.0;
/// Relative tolerance of a softmax output (plus `Z_ROUND * |z - max|`).
pub const SOFTMAX_REL: f64 = 1e-6;
/// Below this (f64) value a softmax output is checked with an absolute tolerance of the same
/// size.
pub const SOFTMAX_TINY: f64 = 1e-30;
/// log_softmax: `|got - v| <= LOG_SOFTMAX_REL * max(1, |v|)`.
pub const LOG_SOFTMAX_REL: f64 = 2e-6;
/// logsumexp: `|got - lse| <= LSE_REL * max(1, |lse|)`.
pub const LSE_REL: f64 = 1e-6;
/// The coefficient of the backward-pass tolerance (see [`softmax_backward`]).
pub const BACKWARD_REL: f64 = 1e-5;
/// Extra relative slack when the expected values are an f32 result (the scalar reference)
/// rather than the exact f64 value: the reference rounds the f64 result to f32 once (at most
/// `2^-24` relative) and its f64 arithmetic adds ~1e-15; `2^-23` covers both.
pub const REF_SLACK: f64 = 2.0 * U32;

/// What a row's logits say about its results.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Row {
    /// A NaN somewhere.
    Nan,
    /// A `+inf` and no NaN.
    PosInf,
    /// Every logit is `-inf`.
    AllNegInf,
    /// Finite maximum `m` and `s = sum_j exp(z_j - m)`.
    Finite { m: f64, s: f64 },
}

/// Classifies a row and, for a finite row, computes `(m, s)` in f64.
pub fn classify(row: &[f32]) -> Row {
    if row.iter().any(|v| v.is_nan()) {
        return Row::Nan;
    }
    if row.contains(&f32::INFINITY) {
        return Row::PosInf;
    }
    if row.iter().all(|&v| v == f32::NEG_INFINITY) {
        return Row::AllNegInf;
    }
    let m = row
        .iter()
        .map(|&v| v as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let s = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    Row::Finite { m, s }
}

/// Oracle softmax of one row.
pub fn softmax_row(row: &[f32], masked_zero: bool) -> Vec<f64> {
    match classify(row) {
        Row::Nan | Row::PosInf => vec![f64::NAN; row.len()],
        Row::AllNegInf => vec![if masked_zero { 0.0 } else { f64::NAN }; row.len()],
        Row::Finite { m, s } => row.iter().map(|&v| (v as f64 - m).exp() / s).collect(),
    }
}

/// Oracle log_softmax of one row.
pub fn log_softmax_row(row: &[f32], masked_zero: bool) -> Vec<f64> {
    match classify(row) {
        Row::Nan | Row::PosInf => vec![f64::NAN; row.len()],
        Row::AllNegInf => vec![
            if masked_zero {
                f64::NEG_INFINITY
            } else {
                f64::NAN
            };
            row.len()
        ],
        Row::Finite { m, s } => {
            let ls = s.ln();
            row.iter().map(|&v| (v as f64 - m) - ls).collect()
        }
    }
}

/// Oracle logsumexp of one row.
pub fn logsumexp_row(row: &[f32]) -> f64 {
    match classify(row) {
        Row::Nan => f64::NAN,
        Row::PosInf => f64::INFINITY,
        Row::AllNegInf => f64::NEG_INFINITY,
        Row::Finite { m, s } => m + s.ln(),
    }
}

/// Oracle softmax of a `[rows, cols]` matrix.
pub fn softmax(x: &[f32], cols: usize, masked_zero: bool) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|r| softmax_row(r, masked_zero))
        .collect()
}

/// Oracle log_softmax of a `[rows, cols]` matrix.
pub fn log_softmax(x: &[f32], cols: usize, masked_zero: bool) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|r| log_softmax_row(r, masked_zero))
        .collect()
}

/// Oracle logsumexp of each row of a `[rows, cols]` matrix.
pub fn logsumexp(x: &[f32], cols: usize) -> Vec<f64> {
    x.chunks(cols).map(logsumexp_row).collect()
}

/// Oracle softmax backward, `dx = y * (dy - <dy, y>)`, with a per-element error bound.
///
/// The bound: an f32 kernel computes the dot product with f32 products and sums over short
/// blocks (the crate accumulates at most a few dozen terms per f32 lane, then in f64), so its
/// absolute error is at most about `(terms per lane + log2(lanes)) * 2^-24 * sum_j |y_j dy_j|`
/// (~14 * 2^-24 ~ 1e-6 of that sum); rounding the dot to f32, `dy_i - dot` and the final
/// product add `2^-24` each relative to `|dy_i|`, `|dot| <= sum_j |y_j dy_j|` and the result.
/// So `|err_i| <= ~1.1e-6 * |y_i| * (|dy_i| + sum_j |y_j dy_j|)`; we allow
/// `BACKWARD_REL = 1e-5` times that (a 9x margin for a different but still blocked reduction
/// order), plus `1e-37` absolute for results in the subnormal range. A kernel that summed a
/// 128k-class row sequentially in f32 (error ~ n * 2^-24 ~ 8e-3) fails it.
pub fn softmax_backward(y: &[f32], dy: &[f32], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut dx = Vec::with_capacity(y.len());
    let mut tol = Vec::with_capacity(y.len());
    for (yr, dyr) in y.chunks(cols).zip(dy.chunks(cols)) {
        let dot: f64 = yr.iter().zip(dyr).map(|(&a, &b)| a as f64 * b as f64).sum();
        let abs: f64 = yr
            .iter()
            .zip(dyr)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum();
        for (&a, &b) in yr.iter().zip(dyr) {
            dx.push(a as f64 * (b as f64 - dot));
            tol.push(BACKWARD_REL * (a as f64).abs() * ((b as f64).abs() + abs) + 1e-37);
        }
    }
    (dx, tol)
}

/// Oracle log_softmax backward, `dx = dy - exp(y) * sum(dy)`, with a per-element error bound.
///
/// The bound: the f32 sum of `dy` errs by at most ~1e-6 of `sum_j |dy_j|` (blocked as above);
/// the vectorized `exp` is within 2 ULP (~2.4e-7 relative); rounding the sum, the product and
/// the difference add `2^-24` relative each. So
/// `|err_i| <= ~1.5e-6 * (|dy_i| + e_i * (|S| + sum_j |dy_j|))` with `e_i = exp(y_i)`,
/// `S = sum(dy)`; we allow `BACKWARD_REL = 1e-5` times that, plus an absolute
/// `1e-37 * (1 + sum_j |dy_j|)` for `exp(y_i)` in the subnormal range (where it has fewer
/// significant bits).
pub fn log_softmax_backward(y: &[f32], dy: &[f32], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut dx = Vec::with_capacity(y.len());
    let mut tol = Vec::with_capacity(y.len());
    for (yr, dyr) in y.chunks(cols).zip(dy.chunks(cols)) {
        let sum: f64 = dyr.iter().map(|&b| b as f64).sum();
        let abs: f64 = dyr.iter().map(|&b| (b as f64).abs()).sum();
        for (&a, &b) in yr.iter().zip(dyr) {
            let e = (a as f64).exp();
            dx.push(b as f64 - e * sum);
            tol.push(
                BACKWARD_REL * ((b as f64).abs() + e * (sum.abs() + abs)) + 1e-37 * (1.0 + abs),
            );
        }
    }
    (dx, tol)
}

/// The value an f32 result should have when the exact value `e` rounds to an f32 infinity (or
/// is infinite): `Some(±inf)`; else `None`.
fn f32_infinity(e: f64) -> Option<f32> {
    let f = e as f32;
    f.is_infinite().then_some(f)
}

/// NaN and infinity pattern: NaN exactly where `e` is NaN; an infinity exactly where `e` is (or
/// rounds to) an infinity of the same sign. Returns `Some(verdict)` when the special-value rule
/// decides the element, `None` when both are finite and the tolerance must decide.
fn special(got: f32, e: f64) -> Option<Result<(), String>> {
    if e.is_nan() || got.is_nan() {
        return Some(if e.is_nan() && got.is_nan() {
            Ok(())
        } else {
            Err(format!("NaN pattern: got {got:e}, expected {e:e}"))
        });
    }
    if let Some(inf) = f32_infinity(e) {
        return Some(if got == inf {
            Ok(())
        } else {
            Err(format!("infinity: got {got:e}, expected {inf}"))
        });
    }
    if got.is_infinite() {
        return Some(Err(format!("got {got}, expected the finite {e:e}")));
    }
    None
}

/// Collects up to a few failure messages and a count.
#[derive(Default)]
struct Failures {
    count: usize,
    text: String,
}

impl Failures {
    fn add(&mut self, msg: impl FnOnce() -> String) {
        self.count += 1;
        if self.count <= 8 {
            let _ = writeln!(self.text, "  {}", msg());
        }
    }

    fn finish(self, what: &str) -> Result<(), String> {
        if self.count == 0 {
            Ok(())
        } else {
            Err(format!(
                "{what}: {} failure(s), the first ones:\n{}",
                self.count, self.text
            ))
        }
    }
}

fn check_shapes(x: usize, got: usize, expected: usize, cols: usize) -> Result<(), String> {
    if cols == 0 || !x.is_multiple_of(cols) || got != x || expected != x {
        return Err(format!(
            "shape: x {x}, got {got}, expected {expected}, cols {cols}"
        ));
    }
    Ok(())
}

/// The softmax contract. `x` are the logits, `got` the f32 outputs, `expected` the values to
/// compare with (the oracle, or another implementation's outputs promoted to f64 with
/// `slack = REF_SLACK`).
///
/// * NaN exactly where `expected` is NaN; no infinities.
/// * A `-inf` logit in a row that is not NaN gives exactly 0 (and a fully masked row zeroed
///   under `MaskedRows::Zero` gives exactly 0, which the oracle says as `0.0` with `-inf`
///   logits).
/// * `expected >= 1e-30`: `|got - e| <= (1e-6 + slack + 2^-23 |z - max|) * e`.
/// * `expected < 1e-30`: `|got - e| <= 1e-30`.
/// * Each row with a finite maximum sums to 1 within `cols * 2^-24` (summed in f64).
pub fn check_softmax(
    x: &[f32],
    cols: usize,
    got: &[f32],
    expected: &[f64],
    slack: f64,
) -> Result<(), String> {
    check_shapes(x.len(), got.len(), expected.len(), cols)?;
    let mut f = Failures::default();
    for (r, ((xr, gr), er)) in x
        .chunks(cols)
        .zip(got.chunks(cols))
        .zip(expected.chunks(cols))
        .enumerate()
    {
        let row = classify(xr);
        let m = match row {
            Row::Finite { m, .. } => m,
            _ => f64::NAN,
        };
        for (k, ((&z, &g), &e)) in xr.iter().zip(gr).zip(er).enumerate() {
            let at = |msg: String| format!("row {r} col {k} (z = {z:e}): {msg}");
            if let Some(v) = special(g, e) {
                if let Err(msg) = v {
                    f.add(|| at(msg));
                }
                continue;
            }
            if z == f32::NEG_INFINITY {
                if g != 0.0 {
                    f.add(|| at(format!("a -inf logit must give exactly 0, got {g:e}")));
                }
                continue;
            }
            if g < 0.0 {
                f.add(|| at(format!("negative probability {g:e}")));
                continue;
            }
            let err = (g as f64 - e).abs();
            let tol = if e >= SOFTMAX_TINY {
                (SOFTMAX_REL + slack + Z_ROUND * (z as f64 - m).abs()) * e
            } else {
                SOFTMAX_TINY
            };
            if err.is_nan() || err > tol {
                f.add(|| {
                    at(format!(
                        "got {g:e}, expected {e:e}, |err| {err:e} > tol {tol:e}"
                    ))
                });
            }
        }
        if matches!(row, Row::Finite { .. }) {
            let sum: f64 = gr.iter().map(|&g| g as f64).sum();
            let tol = cols as f64 * U32;
            if (sum - 1.0).abs() > tol {
                f.add(|| {
                    format!(
                        "row {r}: sums to {sum:.17} (1 {:+e}), allowed cols * 2^-24 = {tol:e}",
                        sum - 1.0
                    )
                });
            }
        }
    }
    f.finish("softmax")
}

/// The log_softmax contract: NaN and infinity patterns exact (the expected value is rounded to
/// f32 to decide whether it is an infinity), otherwise
/// `|got - v| <= (2e-6 + slack) * max(1, |v|)`.
pub fn check_log_softmax(
    x: &[f32],
    cols: usize,
    got: &[f32],
    expected: &[f64],
    slack: f64,
) -> Result<(), String> {
    check_shapes(x.len(), got.len(), expected.len(), cols)?;
    let mut f = Failures::default();
    for (i, ((&z, &g), &e)) in x.iter().zip(got).zip(expected).enumerate() {
        let at = |msg: String| format!("row {} col {} (z = {z:e}): {msg}", i / cols, i % cols);
        if let Some(v) = special(g, e) {
            if let Err(msg) = v {
                f.add(|| at(msg));
            }
            continue;
        }
        let err = (g as f64 - e).abs();
        let tol = (LOG_SOFTMAX_REL + slack) * e.abs().max(1.0);
        if err > tol {
            f.add(|| {
                at(format!(
                    "got {g:e}, expected {e:e}, |err| {err:e} > tol {tol:e}"
                ))
            });
        }
    }
    f.finish("log_softmax")
}

/// The logsumexp contract: NaN and infinity patterns exact, otherwise
/// `|got - lse| <= (1e-6 + slack) * max(1, |lse|)`.
pub fn check_logsumexp(got: &[f32], expected: &[f64], slack: f64) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!(
            "logsumexp: {} results for {} rows",
            got.len(),
            expected.len()
        ));
    }
    let mut f = Failures::default();
    for (r, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let at = |msg: String| format!("row {r}: {msg}");
        if let Some(v) = special(g, e) {
            if let Err(msg) = v {
                f.add(|| at(msg));
            }
            continue;
        }
        let err = (g as f64 - e).abs();
        let tol = (LSE_REL + slack) * e.abs().max(1.0);
        if err > tol {
            f.add(|| {
                at(format!(
                    "got {g:e}, expected {e:e}, |err| {err:e} > tol {tol:e}"
                ))
            });
        }
    }
    f.finish("logsumexp")
}

/// A backward pass against expected values with per-element tolerances (see
/// [`softmax_backward`]); NaN and infinity patterns exact.
pub fn check_backward(
    what: &str,
    cols: usize,
    got: &[f32],
    expected: &[f64],
    tol: &[f64],
) -> Result<(), String> {
    if got.len() != expected.len() || tol.len() != expected.len() {
        return Err(format!("{what}: length mismatch"));
    }
    let mut f = Failures::default();
    for (i, ((&g, &e), &t)) in got.iter().zip(expected).zip(tol).enumerate() {
        let at = |msg: String| format!("row {} col {}: {msg}", i / cols, i % cols);
        if let Some(v) = special(g, e) {
            if let Err(msg) = v {
                f.add(|| at(msg));
            }
            continue;
        }
        let err = (g as f64 - e).abs();
        if err > t {
            f.add(|| {
                at(format!(
                    "got {g:e}, expected {e:e}, |err| {err:e} > tol {t:e}"
                ))
            });
        }
    }
    f.finish(what)
}

/// Promotes f32 results to f64 (to use another implementation's outputs as `expected`).
pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Bit-for-bit equality of two f32 slices (NaN payloads included); reports the first
/// differences.
pub fn check_bits(what: &str, a: &[f32], b: &[f32]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{what}: lengths {} and {}", a.len(), b.len()));
    }
    let mut f = Failures::default();
    for (i, (&p, &q)) in a.iter().zip(b).enumerate() {
        if p.to_bits() != q.to_bits() {
            f.add(|| {
                format!(
                    "index {i}: {p:e} ({:#010x}) vs {q:e} ({:#010x})",
                    p.to_bits(),
                    q.to_bits()
                )
            });
        }
    }
    f.finish(what)
}
