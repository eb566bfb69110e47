//! The softmax family: `softmax`, `log_softmax`, `logsumexp` and their backward passes.
//!
//! All functions take row-major `[rows, cols]` data as a slice of `rows * cols` floats and the
//! row length `cols`; `rows = len / cols` (zero rows is valid and does nothing). Each exists as a
//! free function (using [`Kernels::active`]) and as a method on [`Kernels`] (a chosen tier).
//! The `_strided` forms take [`MatRef`] / [`MatMut`] views instead, rows `ld` floats apart
//! ([`crate::view`]), with the same bits as on the rows copied out (a NaN output may differ in
//! sign and payload: Rust leaves those of an arithmetic NaN unspecified).
//!
//! ## Paths
//!
//! The forward functions (`softmax`, `log_softmax`, `logsumexp`) pick a path from the row
//! length and the tier alone ([`Kernels::softmax_path`]), never from the row or thread count,
//! so results are bit-identical for any number of threads:
//!
//! | path | chosen when | what it does |
//! |---|---|---|
//! | `Short` | rows of at most 4 vectors (64 classes on AVX-512, 32 on AVX2) | each row in registers from load to store, no loops; from 4 dense rows (not a strided view), softmax rows whose first entry is in `[-16, 40]` are exponentiated without the maximum, as one dense array per 512-float chunk (10-class rows do not spend 16-lane exps on 10 lanes) |
//! | `Rows` | up to [`ONLINE_MIN_COLS`]` - 1` classes | three passes (the maximum; `exp(z - max)` stored and summed; one reciprocal or `ln` per row, then a scaling pass), the next row's maximum fused into this row's exp pass |
//! | `Online` | [`ONLINE_MIN_COLS`] classes and more | each [`ONLINE_CHUNK`]-float chunk gets its own `(max, sum)` while it is in L1, the states merge in f64, each chunk is rescaled once; a row's chunks spread across threads when there are fewer rows than threads |
//!
//! The unshifted `Short` try: when `sum exp(z)` lands in `[2^-26, 2^60]`, `p = exp(z) / sum`
//! meets the accuracy contract without the maximum (every argument is below 41.6, where the
//! exp is within 2 ULP; an entry whose exp is subnormal has `p < 2^-100`), else the row takes
//! the shifted way. The reference tier computes every row whole in f64 on every path.

use crate::arch::generic::softmax::{FwdArgs, FwdKind};
use crate::dispatch::Kernels;
#[allow(unused_imports)] // `Error` is named by the docs.
use crate::error::{check_len, rows_of, Error, Result};
use crate::parallel::{for_each_index, for_each_row_block, SyncPtr};
#[allow(unused_imports)] // `ONLINE_MIN_COLS` is named by the docs.
use crate::tuning::{ONLINE_CHUNK, ONLINE_MIN_COLS};
use crate::view::{nonzero_cols, same_shape, MatMut, MatRef, Raw};

/// What softmax and log_softmax return for a row whose logits are all `-inf` (a fully masked
/// row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MaskedRows {
    /// NaN in every output of the row, as PyTorch (`exp(-inf - -inf)`).
    #[default]
    Nan,
    /// Probabilities 0 (softmax) and log-probabilities `-inf` (log_softmax): the row takes no
    /// part in whatever follows.
    Zero,
}

/// Options of the forward softmax functions. `SoftmaxOptions::default()` is PyTorch's
/// behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SoftmaxOptions {
    /// The result for all `-inf` rows.
    pub masked_rows: MaskedRows,
}

impl SoftmaxOptions {
    /// Sets [`SoftmaxOptions::masked_rows`].
    pub fn masked_rows(mut self, m: MaskedRows) -> Self {
        self.masked_rows = m;
        self
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    Softmax,
    LogSoftmax,
}

impl Fwd {
    fn kind(self) -> FwdKind {
        match self {
            Fwd::Softmax => FwdKind::Softmax,
            Fwd::LogSoftmax => FwdKind::LogSoftmax,
        }
    }

    /// The kernels' arguments for rows `ldx` apart in the input and `ldy` in the output.
    fn args(self, opts: SoftmaxOptions, ldx: usize, ldy: usize) -> FwdArgs {
        FwdArgs {
            kind: self.kind(),
            masked_zero: opts.masked_rows == MaskedRows::Zero,
            ldx,
            ldy,
        }
    }
}

/// A forward path of the softmax family (the table in the module docs). Public only for
/// tests and reports that name it ([`Kernels::softmax_path`], [`Kernels::forward_on_path`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftmaxPath {
    Short,
    Rows,
    Online,
}

/// What [`Kernels::forward_on_path`] computes.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftmaxOp {
    Softmax,
    LogSoftmax,
    LogSumExp,
}

impl Kernels {
    /// The forward path of rows of `cols` classes on this tier: the only place that reads
    /// the tier's short-row width and the online threshold. Depends on `cols` alone, never on
    /// the row or thread count, so results are bit-identical for any number of threads.
    /// (The reference tier computes every row whole in f64, on any path.)
    #[doc(hidden)]
    pub fn softmax_path(&self, cols: usize) -> SoftmaxPath {
        if cols >= self.online_min_cols {
            SoftmaxPath::Online
        } else if cols <= self.short_cols {
            SoftmaxPath::Short
        } else {
            SoftmaxPath::Rows
        }
    }

    /// A forward function of the family on a chosen path instead of the planned one, for
    /// tests that compare the paths: `y` holds `x.len()` floats, or one per row for
    /// `LogSumExp`. Every path takes every shape.
    ///
    /// # Errors
    /// As [`Kernels::softmax`] and [`Kernels::logsumexp`].
    #[doc(hidden)]
    pub fn forward_on_path(
        &self,
        path: SoftmaxPath,
        op: SoftmaxOp,
        x: &[f32],
        y: &mut [f32],
        cols: usize,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        let rows = rows_of("x", x.len(), cols)?;
        let mz = opts.masked_rows == MaskedRows::Zero;
        let fwd = match op {
            SoftmaxOp::Softmax => Fwd::Softmax,
            SoftmaxOp::LogSoftmax => Fwd::LogSoftmax,
            SoftmaxOp::LogSumExp => {
                check_len("out", y.len(), rows)?;
                if path == SoftmaxPath::Online {
                    // SAFETY: `x` holds `rows * cols` floats, `y` one per row.
                    unsafe { self.logsumexp_online(x.as_ptr(), y, cols, cols) };
                } else {
                    let a = FwdArgs {
                        kind: FwdKind::LogSumExp,
                        masked_zero: mz,
                        ldx: cols,
                        ldy: 1,
                    };
                    // SAFETY: `x` holds `rows * cols` floats, `y` one per row.
                    unsafe { self.fwd_blocks(path, x.as_ptr(), y.as_mut_ptr(), rows, cols, a) };
                }
                return Ok(());
            }
        };
        check_len("y", y.len(), x.len())?;
        let a = FwdArgs {
            kind: fwd.kind(),
            masked_zero: mz,
            ldx: cols,
            ldy: cols,
        };
        // SAFETY: `x` and `y` are distinct slices of `rows * cols` floats.
        unsafe { self.forward_path(path, x.as_ptr(), y.as_mut_ptr(), rows, cols, a) };
        Ok(())
    }

    /// Runs the `Short` or `Rows` forward entry over the row blocks of `rows x cols`.
    ///
    /// # Safety
    /// `x` valid for reading `rows` rows of `cols` floats `a.ldx` apart; `y` for writing as
    /// many `a.ldy` apart (one float per row, `a.ldy == 1`, for `LogSumExp`), equal to `x`
    /// with the same stride or not overlapping it.
    unsafe fn fwd_blocks(
        &self,
        path: SoftmaxPath,
        x: *const f32,
        y: *mut f32,
        rows: usize,
        cols: usize,
        a: FwdArgs,
    ) {
        let f = match path {
            SoftmaxPath::Short => self.fwd_short,
            _ => self.fwd_rows,
        };
        let (xp, yp) = (SyncPtr(x as *mut f32), SyncPtr(y));
        for_each_row_block(rows, cols, move |r| {
            // SAFETY: the rows `r` lie inside the caller's ranges and blocks are disjoint; the
            // table's existence proves the CPU features.
            unsafe {
                f(
                    xp.get().add(r.start * a.ldx),
                    yp.get().add(r.start * a.ldy),
                    r.len(),
                    cols,
                    a,
                )
            }
        });
    }

    /// Runs softmax or log_softmax (`a.kind`) over `rows x cols` on `path`.
    ///
    /// # Safety
    /// As [`Kernels::forward`].
    unsafe fn forward_path(
        &self,
        path: SoftmaxPath,
        x: *const f32,
        y: *mut f32,
        rows: usize,
        cols: usize,
        a: FwdArgs,
    ) {
        debug_assert!(a.kind != FwdKind::LogSumExp);
        // SAFETY: forwarded.
        unsafe {
            match path {
                SoftmaxPath::Online => self.forward_online(x, y, rows, cols, a),
                _ => self.fwd_blocks(path, x, y, rows, cols, a),
            }
        }
    }

    /// Runs a forward kernel over `rows x cols` on the planned path.
    ///
    /// # Safety
    /// `x` valid for reading `rows` rows of `cols` floats `a.ldx` apart, `y` for writing as
    /// many `a.ldy` apart, equal to `x` with the same stride or not overlapping it.
    unsafe fn forward(&self, x: *const f32, y: *mut f32, rows: usize, cols: usize, a: FwdArgs) {
        // SAFETY: forwarded.
        unsafe { self.forward_path(self.softmax_path(cols), x, y, rows, cols, a) };
    }

    /// The chunked online variant for long rows.
    ///
    /// # Safety
    /// As [`Kernels::forward`].
    unsafe fn forward_online(
        &self,
        x: *const f32,
        y: *mut f32,
        rows: usize,
        cols: usize,
        a: FwdArgs,
    ) {
        let (kind, mz) = match a.kind {
            FwdKind::LogSoftmax => (Fwd::LogSoftmax, a.masked_zero),
            _ => (Fwd::Softmax, a.masked_zero),
        };
        let nch = cols.div_ceil(ONLINE_CHUNK);
        let (xp, yp) = (SyncPtr(x as *mut f32), SyncPtr(y));
        let store = kind == Fwd::Softmax;
        // One row: phase A (chunk states, in parallel when `par`), merge, phase C.
        let row = |r: usize, par: bool| {
            let (bx, by) = (r * a.ldx, r * a.ldy);
            // Chunk `c` of the row: its offsets in `x` and `y`, and its length.
            let span = move |c: usize| {
                let lo = c * ONLINE_CHUNK;
                (bx + lo, by + lo, ONLINE_CHUNK.min(cols - lo))
            };
            let mut states = vec![(0.0f32, 0.0f64); nch];
            let sp = SyncPtr(states.as_mut_ptr());
            let phase_a = move |c: usize| {
                let (ox, oy, len) = span(c);
                // SAFETY: chunk `c` of row `r` lies inside the caller's ranges; chunks are
                // disjoint, and each task writes only its own state slot `c < nch`.
                unsafe {
                    let out = if store {
                        yp.get().add(oy)
                    } else {
                        std::ptr::null_mut()
                    };
                    *sp.get().add(c) = (self.chunk_stats)(xp.get().add(ox), out, len);
                }
            };
            if par {
                for_each_index(nch, cols, phase_a);
            } else {
                (0..nch).for_each(phase_a);
            }
            let merged = merge(&states, mz, kind);
            let phase_c = move |c: usize| {
                let (ox, oy, len) = span(c);
                // SAFETY: as in phase A.
                unsafe {
                    match merged {
                        Merged::Fill(v) => crate::arch::special::fill(yp.get().add(oy), len, v),
                        Merged::Finite { m, s } => match kind {
                            Fwd::Softmax => {
                                let (mc, _) = *sp.get().add(c);
                                let f = ((mc as f64 - m as f64).exp() / s) as f32;
                                (self.scale)(yp.get().add(oy), len, f)
                            }
                            Fwd::LogSoftmax => (self.sub2)(
                                xp.get().add(ox),
                                yp.get().add(oy),
                                len,
                                m,
                                s.ln() as f32,
                            ),
                        },
                    }
                }
            };
            if par {
                for_each_index(nch, cols, phase_c);
            } else {
                (0..nch).for_each(phase_c);
            }
        };
        if rows >= rayon::current_num_threads() {
            for_each_index(rows, rows.saturating_mul(cols), |r| row(r, false));
        } else {
            (0..rows).for_each(|r| row(r, true));
        }
    }

    /// Softmax of each row: `y[r, k] = exp(x[r, k] - lse(x[r, ..]))`.
    ///
    /// `x` holds `rows * cols` floats, `y` the same number. See the crate docs for the
    /// numerical contract and special values.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `cols == 0`, [`Error::NotMultiple`] if `x.len() % cols != 0`,
    /// [`Error::LengthMismatch`] if `y.len() != x.len()`.
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::best();
    /// let mut p = [0.0f32; 4];
    /// k.softmax(&[1.0, 1.0, 5.0, 5.0], &mut p, 2).unwrap();
    /// assert_eq!(p, [0.5; 4]);
    /// ```
    pub fn softmax(&self, x: &[f32], y: &mut [f32], cols: usize) -> Result<()> {
        self.softmax_with(x, y, cols, SoftmaxOptions::default())
    }

    /// [`Kernels::softmax`] with options (the result for fully masked rows).
    pub fn softmax_with(
        &self,
        x: &[f32],
        y: &mut [f32],
        cols: usize,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        let rows = rows_of("x", x.len(), cols)?;
        check_len("y", y.len(), x.len())?;
        let a = Fwd::Softmax.args(opts, cols, cols);
        // SAFETY: `x` and `y` are distinct slices of `rows * cols` floats.
        unsafe { self.forward(x.as_ptr(), y.as_mut_ptr(), rows, cols, a) };
        Ok(())
    }

    /// Softmax in place over `x`.
    ///
    /// # Errors
    /// As [`Kernels::softmax`], for `x`.
    pub fn softmax_inplace(&self, x: &mut [f32], cols: usize) -> Result<()> {
        self.softmax_inplace_with(x, cols, SoftmaxOptions::default())
    }

    /// Softmax in place, with options.
    pub fn softmax_inplace_with(
        &self,
        x: &mut [f32],
        cols: usize,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        let rows = rows_of("x", x.len(), cols)?;
        let p = x.as_mut_ptr();
        let a = Fwd::Softmax.args(opts, cols, cols);
        // SAFETY: source and destination are the same `rows * cols` floats, which the kernels
        // allow (each element is read before it is written).
        unsafe { self.forward(p, p, rows, cols, a) };
        Ok(())
    }

    /// Log-softmax of each row: `y[r, k] = (x[r, k] - m) - ln(sum_j exp(x[r, j] - m))`, with
    /// one exp per element and no second exp.
    ///
    /// # Errors
    /// As [`Kernels::softmax`].
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::best();
    /// let mut y = [0.0f32; 2];
    /// k.log_softmax(&[3.0, 3.0], &mut y, 2).unwrap();
    /// assert!((y[0] + 2f32.ln()).abs() < 1e-6);
    /// ```
    pub fn log_softmax(&self, x: &[f32], y: &mut [f32], cols: usize) -> Result<()> {
        self.log_softmax_with(x, y, cols, SoftmaxOptions::default())
    }

    /// [`Kernels::log_softmax`] with options.
    pub fn log_softmax_with(
        &self,
        x: &[f32],
        y: &mut [f32],
        cols: usize,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        let rows = rows_of("x", x.len(), cols)?;
        check_len("y", y.len(), x.len())?;
        let a = Fwd::LogSoftmax.args(opts, cols, cols);
        // SAFETY: distinct slices of `rows * cols` floats.
        unsafe { self.forward(x.as_ptr(), y.as_mut_ptr(), rows, cols, a) };
        Ok(())
    }

    /// Log-softmax in place over `x`.
    ///
    /// # Errors
    /// As [`Kernels::softmax`], for `x`.
    pub fn log_softmax_inplace(&self, x: &mut [f32], cols: usize) -> Result<()> {
        self.log_softmax_inplace_with(x, cols, SoftmaxOptions::default())
    }

    /// Log-softmax in place, with options.
    pub fn log_softmax_inplace_with(
        &self,
        x: &mut [f32],
        cols: usize,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        let rows = rows_of("x", x.len(), cols)?;
        let p = x.as_mut_ptr();
        let a = Fwd::LogSoftmax.args(opts, cols, cols);
        // SAFETY: in place, which the kernels allow.
        unsafe { self.forward(p, p, rows, cols, a) };
        Ok(())
    }

    /// `out[r] = ln(sum_k exp(x[r, k]))`, one value per row, computed as `m + ln(sum exp(x - m))`
    /// with no stores but the results.
    ///
    /// # Errors
    /// [`Error::ZeroDim`], [`Error::NotMultiple`] as [`Kernels::softmax`];
    /// [`Error::LengthMismatch`] if `out.len() != rows`.
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::best();
    /// let mut lse = [0.0f32; 1];
    /// k.logsumexp(&[0.0, 0.0, 0.0, 0.0], &mut lse, 4).unwrap();
    /// assert!((lse[0] - 4f32.ln()).abs() < 1e-6);
    /// ```
    pub fn logsumexp(&self, x: &[f32], out: &mut [f32], cols: usize) -> Result<()> {
        let rows = rows_of("x", x.len(), cols)?;
        check_len("out", out.len(), rows)?;
        // SAFETY: `x` holds `rows * cols` floats and `out` one per row.
        unsafe { self.logsumexp_rows(x.as_ptr(), out, cols, cols) };
        Ok(())
    }

    /// `out[r]` = the logsumexp of row `r` of `x`, on the planned path.
    ///
    /// # Safety
    /// `x` valid for reading `out.len()` rows of `cols` floats `ldx` apart.
    unsafe fn logsumexp_rows(&self, x: *const f32, out: &mut [f32], cols: usize, ldx: usize) {
        let rows = out.len();
        match self.softmax_path(cols) {
            // SAFETY: forwarded.
            SoftmaxPath::Online => unsafe { self.logsumexp_online(x, out, cols, ldx) },
            path => {
                let a = FwdArgs {
                    kind: FwdKind::LogSumExp,
                    masked_zero: false,
                    ldx,
                    ldy: 1,
                };
                // SAFETY: forwarded; `out` holds one float per row.
                unsafe { self.fwd_blocks(path, x, out.as_mut_ptr(), rows, cols, a) }
            }
        }
    }

    /// Long-row logsumexp: chunk states, merged in f64.
    ///
    /// # Safety
    /// As [`Kernels::logsumexp_rows`].
    unsafe fn logsumexp_online(&self, x: *const f32, out: &mut [f32], cols: usize, ldx: usize) {
        let nch = cols.div_ceil(ONLINE_CHUNK);
        let rows = out.len();
        let x = SyncPtr(x.cast_mut());
        let one = |r: usize, par: bool, dst: &mut f32| {
            let mut states = vec![(0.0f32, 0.0f64); nch];
            let sp = SyncPtr(states.as_mut_ptr());
            let phase_a = move |c: usize| {
                let lo = r * ldx + c * ONLINE_CHUNK;
                let len = ONLINE_CHUNK.min(cols - c * ONLINE_CHUNK);
                // SAFETY: chunk `c` of row `r` lies inside the caller's range.
                let chunk = unsafe { std::slice::from_raw_parts(x.get().add(lo), len) };
                // SAFETY: `chunk` is a valid slice; null asks for no stores; each task writes
                // its own slot `c < nch`.
                unsafe {
                    *sp.get().add(c) = (self.chunk_stats)(chunk.as_ptr(), std::ptr::null_mut(), len)
                };
            };
            if par {
                for_each_index(nch, cols, phase_a);
            } else {
                (0..nch).for_each(phase_a);
            }
            *dst = match merge_lse(&states) {
                Merged::Fill(v) => v,
                Merged::Finite { m, s } => (m as f64 + s.ln()) as f32,
            };
        };
        if rows >= rayon::current_num_threads()
            && !crate::parallel::run_inline(rows.saturating_mul(cols))
        {
            use rayon::prelude::*;
            out.par_iter_mut()
                .enumerate()
                .for_each(|(r, d)| one(r, false, d));
        } else {
            for (r, d) in out.iter_mut().enumerate() {
                one(r, true, d);
            }
        }
    }

    /// Softmax backward: `dx = y * (dy - <dy, y>)` per row, where `y` is softmax's output and
    /// `dy` the gradient with respect to it.
    ///
    /// # Errors
    /// As [`Kernels::softmax`] for `y`; [`Error::LengthMismatch`] if `dy` or `dx` differ in
    /// length from `y`.
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::best();
    /// let mut dx = [0.0f32; 2];
    /// // y = [0.5, 0.5], dy = [1, 0]: <dy, y> = 0.5, dx = [0.25, -0.25]
    /// k.softmax_backward(&[0.5, 0.5], &[1.0, 0.0], &mut dx, 2).unwrap();
    /// assert_eq!(dx, [0.25, -0.25]);
    /// ```
    pub fn softmax_backward(
        &self,
        y: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        cols: usize,
    ) -> Result<()> {
        self.backward(self.softmax_backward_rows, y, dy, dx, cols)
    }

    /// Log-softmax backward: `dx = dy - exp(y) * sum(dy)` per row, where `y` is log_softmax's
    /// output and `dy` the gradient with respect to it.
    ///
    /// # Errors
    /// As [`Kernels::softmax_backward`].
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::best();
    /// let mut dx = [0.0f32; 2];
    /// let ln_half = 0.5f32.ln();
    /// k.log_softmax_backward(&[ln_half, ln_half], &[1.0, 0.0], &mut dx, 2).unwrap();
    /// assert!((dx[0] - 0.5).abs() < 1e-6 && (dx[1] + 0.5).abs() < 1e-6);
    /// ```
    pub fn log_softmax_backward(
        &self,
        y: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        cols: usize,
    ) -> Result<()> {
        self.backward(self.log_softmax_backward_rows, y, dy, dx, cols)
    }

    fn backward(
        &self,
        f: crate::dispatch::BackwardFn,
        y: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        cols: usize,
    ) -> Result<()> {
        let rows = rows_of("y", y.len(), cols)?;
        check_len("dy", dy.len(), y.len())?;
        check_len("dx", dx.len(), y.len())?;
        let m = |p: *const f32| Raw {
            ptr: p.cast_mut(),
            rows,
            cols,
            ld: cols,
        };
        // SAFETY: three slices of `rows * cols` floats; `dx` is a distinct `&mut` slice.
        unsafe { self.backward_raw(f, m(y.as_ptr()), m(dy.as_ptr()), m(dx.as_mut_ptr())) };
        Ok(())
    }

    /// The backward pass `f` over checked matrices of one shape.
    ///
    /// # Safety
    /// `y` and `dy` valid for reading their rows, `dx` for writing its rows, not overlapping
    /// them unless `dx` is `dy` with the same stride.
    unsafe fn backward_raw(&self, f: crate::dispatch::BackwardFn, y: Raw, dy: Raw, dx: Raw) {
        let ld = [y.ld, dy.ld, dx.ld];
        let (yp, dyp, dxp) = (SyncPtr(y.ptr), SyncPtr(dy.ptr), SyncPtr(dx.ptr));
        let cols = y.cols;
        for_each_row_block(y.rows, cols, move |r| {
            let at = |p: SyncPtr<f32>, ld: usize| p.get().wrapping_add(r.start * ld);
            // SAFETY: rows `r` of all three matrices are in bounds; blocks are disjoint.
            unsafe {
                f(
                    at(yp, ld[0]),
                    at(dyp, ld[1]),
                    at(dxp, ld[2]),
                    r.len(),
                    cols,
                    ld,
                )
            }
        });
    }

    /// Softmax of each row of the strided view `x` into the strided view `y` (see
    /// [`crate::view`]): the same bits as [`Kernels::softmax_with`] on the rows copied out (a
    /// NaN's sign and payload aside). The
    /// floats between rows are neither read nor written.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `cols == 0`, [`Error::ShapeMismatch`] if `y` has other rows or
    /// columns than `x`.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, MatMut, MatRef};
    /// // Two rows of 2 in a buffer with ld = 3; the padding (9.0) is never read or written.
    /// let x = [0.0f32, 0.0, 9.0, 1.0, 1.0];
    /// let mut y = [9.0f32; 5];
    /// Kernels::best()
    ///     .softmax_strided(
    ///         MatRef::new(&x, 2, 2, 3).unwrap(),
    ///         MatMut::new(&mut y, 2, 2, 3).unwrap(),
    ///         Default::default(),
    ///     )
    ///     .unwrap();
    /// assert_eq!(y, [0.5, 0.5, 9.0, 0.5, 0.5]);
    /// ```
    pub fn softmax_strided(
        &self,
        x: MatRef<'_>,
        y: MatMut<'_>,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        self.forward_strided(Fwd::Softmax, x, y, opts)
    }

    /// Log-softmax of each row of the strided view `x` into `y` ([`Kernels::softmax_strided`]).
    ///
    /// # Errors
    /// As [`Kernels::softmax_strided`].
    pub fn log_softmax_strided(
        &self,
        x: MatRef<'_>,
        y: MatMut<'_>,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        self.forward_strided(Fwd::LogSoftmax, x, y, opts)
    }

    /// Softmax in place over the rows of the strided view `x`.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `cols == 0`.
    pub fn softmax_strided_inplace(&self, x: MatMut<'_>, opts: SoftmaxOptions) -> Result<()> {
        self.forward_strided_inplace(Fwd::Softmax, x, opts)
    }

    /// Log-softmax in place over the rows of the strided view `x`.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `cols == 0`.
    pub fn log_softmax_strided_inplace(&self, x: MatMut<'_>, opts: SoftmaxOptions) -> Result<()> {
        self.forward_strided_inplace(Fwd::LogSoftmax, x, opts)
    }

    /// The logsumexp of each row of the strided view `x`, one value per row into `out`.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `cols == 0`, [`Error::LengthMismatch`] if `out.len()` is not the
    /// row count.
    pub fn logsumexp_strided(&self, x: MatRef<'_>, out: &mut [f32]) -> Result<()> {
        // SAFETY: a checked view.
        unsafe { self.logsumexp_raw(x.raw(), out) }
    }

    /// [`Kernels::logsumexp_strided`] on raw rows.
    ///
    /// # Safety
    /// `x.ptr` valid for reading `x.rows` rows of `x.cols` floats `x.ld` apart.
    pub(crate) unsafe fn logsumexp_raw(&self, x: Raw, out: &mut [f32]) -> Result<()> {
        nonzero_cols(x)?;
        check_len("out", out.len(), x.rows)?;
        // SAFETY: forwarded; `out` holds one float per row.
        unsafe { self.logsumexp_rows(x.ptr, out, x.cols, x.ld) };
        Ok(())
    }

    /// Softmax backward over strided views ([`Kernels::softmax_backward`]).
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `cols == 0`, [`Error::ShapeMismatch`] if `dy` or `dx` has another
    /// shape than `y`.
    pub fn softmax_backward_strided(
        &self,
        y: MatRef<'_>,
        dy: MatRef<'_>,
        dx: MatMut<'_>,
    ) -> Result<()> {
        self.backward_strided(false, y, dy, dx)
    }

    /// Log-softmax backward over strided views ([`Kernels::log_softmax_backward`]).
    ///
    /// # Errors
    /// As [`Kernels::softmax_backward_strided`].
    pub fn log_softmax_backward_strided(
        &self,
        y: MatRef<'_>,
        dy: MatRef<'_>,
        dx: MatMut<'_>,
    ) -> Result<()> {
        self.backward_strided(true, y, dy, dx)
    }

    fn forward_strided(
        &self,
        kind: Fwd,
        x: MatRef<'_>,
        mut y: MatMut<'_>,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        // SAFETY: checked views of distinct borrows.
        unsafe { self.forward_raw(kind, x.raw(), y.raw(), opts) }
    }

    fn forward_strided_inplace(
        &self,
        kind: Fwd,
        mut x: MatMut<'_>,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        let x = x.raw();
        // SAFETY: a checked view, in place with one stride, which the kernels allow.
        unsafe { self.forward_raw(kind, x, x, opts) }
    }

    fn backward_strided(
        &self,
        log: bool,
        y: MatRef<'_>,
        dy: MatRef<'_>,
        mut dx: MatMut<'_>,
    ) -> Result<()> {
        // SAFETY: checked views; `dx` is a distinct mutable borrow.
        unsafe { self.backward_checked(log, y.raw(), dy.raw(), dx.raw()) }
    }

    /// Softmax or log_softmax over raw rows, after the shape checks.
    ///
    /// # Safety
    /// `x.ptr` valid for reading `x.rows` rows of `x.cols` floats `x.ld` apart; `y.ptr` for
    /// writing its rows, equal to `x.ptr` with the same stride or overlapping none of `x`'s
    /// floats. (The floats between rows are never touched.)
    pub(crate) unsafe fn forward_raw(
        &self,
        kind: Fwd,
        x: Raw,
        y: Raw,
        opts: SoftmaxOptions,
    ) -> Result<()> {
        nonzero_cols(x)?;
        same_shape("y", x, y)?;
        // SAFETY: forwarded.
        unsafe { self.forward(x.ptr, y.ptr, x.rows, x.cols, kind.args(opts, x.ld, y.ld)) };
        Ok(())
    }

    /// A backward pass (log_softmax's with `log`) over raw rows, after the shape checks.
    ///
    /// # Safety
    /// `y.ptr`, `dy.ptr` valid for reading their rows; `dx.ptr` for writing its rows, not
    /// overlapping the other two.
    pub(crate) unsafe fn backward_checked(
        &self,
        log: bool,
        y: Raw,
        dy: Raw,
        dx: Raw,
    ) -> Result<()> {
        nonzero_cols(y)?;
        same_shape("dy", y, dy)?;
        same_shape("dx", y, dx)?;
        let f = if log {
            self.log_softmax_backward_rows
        } else {
            self.softmax_backward_rows
        };
        // SAFETY: forwarded.
        unsafe { self.backward_raw(f, y, dy, dx) };
        Ok(())
    }

    /// `y[i] = exp(x[i])` with this tier's vectorized exp, for every f32 (subnormal results
    /// rounded, overflow to `+inf`). Within 2 ULP of the correctly rounded result on
    /// `[-87.33, 88.7]` (checked exhaustively on `[-104, 0]` by the test suite).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `y.len() != x.len()`.
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::best();
    /// let mut y = [0.0f32; 3];
    /// k.exp(&[0.0, f32::NEG_INFINITY, 1.0], &mut y).unwrap();
    /// assert_eq!(y[..2], [1.0, 0.0]);
    /// assert!((y[2] - std::f32::consts::E).abs() <= 2.0 * f32::EPSILON * 3.0);
    /// ```
    pub fn exp(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("y", y.len(), x.len())?;
        // SAFETY: `x` and `y` are valid for `x.len()` floats; the table proves the features.
        unsafe { (self.exp_full)(x.as_ptr(), y.as_mut_ptr(), x.len()) };
        Ok(())
    }

    /// `y[i] = exp(x[i])` for `x[i] <= 0`: the exp the softmax kernels use. Within 2 ULP of the
    /// correctly rounded result on `[-87.33654, 0]`; below, where `exp` is subnormal, the
    /// tiers differ (the crate docs' numerical contract has the details): portable and avx2
    /// give the subnormal result down to `-87.68311` and exactly 0 from `-87.68312` on,
    /// avx512 rounds subnormal results with `vscalefps` down to about `-103.97` (by its code;
    /// not yet measured on an AVX-512 machine), the scalar
    /// tier is correctly rounded everywhere; `-inf` gives 0 and NaN gives NaN on every tier. For `x > 0` the result is only defined up to
    /// `88.37` (the reference tier computes the exact exp everywhere).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `y.len() != x.len()`.
    pub fn exp_nonpos(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_len("y", y.len(), x.len())?;
        // SAFETY: as in `exp`.
        unsafe { (self.exp_nonpos)(x.as_ptr(), y.as_mut_ptr(), x.len()) };
        Ok(())
    }
}

/// A merged long row: its `(max, sum)` or the value all its outputs take.
#[derive(Clone, Copy)]
enum Merged {
    Finite { m: f32, s: f64 },
    Fill(f32),
}

/// What a long row's chunk states say about the row.
enum RowState {
    /// A NaN somewhere in the row.
    Nan,
    /// A `+inf` logit and no NaN.
    PosInf,
    /// Every logit is `-inf`.
    AllNegInf,
    /// Finite maximum `m` and `s = sum exp(x - m)`, merged in chunk order (so the result does
    /// not depend on scheduling).
    Finite { m: f32, s: f64 },
}

fn merge_states(states: &[(f32, f64)]) -> RowState {
    // A chunk state is (finite max, finite sum), (-inf, 0) for an all -inf chunk, (+inf, NaN)
    // for a chunk with +inf and no NaN, and (max, NaN) with a non-+inf max when it holds NaN.
    if states
        .iter()
        .any(|&(mc, sc)| mc.is_nan() || (mc != f32::INFINITY && sc.is_nan()))
    {
        return RowState::Nan;
    }
    if states.iter().any(|&(mc, _)| mc == f32::INFINITY) {
        return RowState::PosInf;
    }
    let m = states
        .iter()
        .fold(f32::NEG_INFINITY, |a, &(mc, _)| a.max(mc));
    if m == f32::NEG_INFINITY {
        return RowState::AllNegInf;
    }
    let s = states
        .iter()
        .filter(|&&(mc, _)| mc != f32::NEG_INFINITY)
        .map(|&(mc, sc)| sc * (mc as f64 - m as f64).exp())
        .sum();
    RowState::Finite { m, s }
}

fn merge(states: &[(f32, f64)], mz: bool, kind: Fwd) -> Merged {
    match merge_states(states) {
        RowState::Nan | RowState::PosInf => Merged::Fill(f32::NAN),
        RowState::AllNegInf => Merged::Fill(match (mz, kind) {
            (false, _) => f32::NAN,
            (true, Fwd::Softmax) => 0.0,
            (true, Fwd::LogSoftmax) => f32::NEG_INFINITY,
        }),
        RowState::Finite { m, s } => Merged::Finite { m, s },
    }
}

fn merge_lse(states: &[(f32, f64)]) -> Merged {
    match merge_states(states) {
        RowState::Nan => Merged::Fill(f32::NAN),
        RowState::PosInf => Merged::Fill(f32::INFINITY),
        RowState::AllNegInf => Merged::Fill(f32::NEG_INFINITY),
        RowState::Finite { m, s } => Merged::Finite { m, s },
    }
}

macro_rules! free_fn {
    ($(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* )) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> Result<()> {
            Kernels::active()?.$name($($arg),*)
        }
    };
}

free_fn!(
    /// Softmax of each row of `x` into `y` (see [`Kernels::softmax`]), on the active tier.
    ///
    /// ```
    /// let mut p = [0.0f32; 2];
    /// softmax_kernels::softmax(&[0.0, 2f32.ln()], &mut p, 2).unwrap();
    /// assert!((p[0] - 1.0 / 3.0).abs() < 1e-7 && (p[1] - 2.0 / 3.0).abs() < 1e-7);
    /// ```
    softmax(x: &[f32], y: &mut [f32], cols: usize)
);
free_fn!(
    /// [`softmax`] with options ([`Kernels::softmax_with`]).
    ///
    /// ```
    /// use softmax_kernels::{MaskedRows, SoftmaxOptions};
    /// let ninf = f32::NEG_INFINITY;
    /// let mut p = [1.0f32; 2];
    /// let opts = SoftmaxOptions::default().masked_rows(MaskedRows::Zero);
    /// softmax_kernels::softmax_with(&[ninf, ninf], &mut p, 2, opts).unwrap();
    /// assert_eq!(p, [0.0, 0.0]);
    /// ```
    softmax_with(x: &[f32], y: &mut [f32], cols: usize, opts: SoftmaxOptions)
);
free_fn!(
    /// Softmax in place ([`Kernels::softmax_inplace`]).
    ///
    /// ```
    /// let mut z = [5.0f32, 5.0, 5.0, 5.0];
    /// softmax_kernels::softmax_inplace(&mut z, 4).unwrap();
    /// assert_eq!(z, [0.25; 4]);
    /// ```
    softmax_inplace(x: &mut [f32], cols: usize)
);
free_fn!(
    /// Softmax in place with options ([`Kernels::softmax_inplace_with`]).
    softmax_inplace_with(x: &mut [f32], cols: usize, opts: SoftmaxOptions)
);
free_fn!(
    /// Log-softmax of each row ([`Kernels::log_softmax`]).
    ///
    /// ```
    /// let mut y = [0.0f32; 2];
    /// softmax_kernels::log_softmax(&[0.0, 2f32.ln()], &mut y, 2).unwrap();
    /// assert!((y[0] - (1.0f32 / 3.0).ln()).abs() < 1e-6);
    /// ```
    log_softmax(x: &[f32], y: &mut [f32], cols: usize)
);
free_fn!(
    /// Log-softmax with options ([`Kernels::log_softmax_with`]).
    log_softmax_with(x: &[f32], y: &mut [f32], cols: usize, opts: SoftmaxOptions)
);
free_fn!(
    /// Log-softmax in place ([`Kernels::log_softmax_inplace`]).
    ///
    /// ```
    /// let mut z = [1.0f32, 1.0];
    /// softmax_kernels::log_softmax_inplace(&mut z, 2).unwrap();
    /// assert!((z[0] + 2f32.ln()).abs() < 1e-6);
    /// ```
    log_softmax_inplace(x: &mut [f32], cols: usize)
);
free_fn!(
    /// Log-softmax in place with options ([`Kernels::log_softmax_inplace_with`]).
    log_softmax_inplace_with(x: &mut [f32], cols: usize, opts: SoftmaxOptions)
);
free_fn!(
    /// Logsumexp of each row into `out` ([`Kernels::logsumexp`]).
    ///
    /// ```
    /// let mut lse = [0.0f32; 2];
    /// softmax_kernels::logsumexp(&[0.0, 0.0, 1e30, 1e30], &mut lse, 2).unwrap();
    /// assert!((lse[0] - 2f32.ln()).abs() < 1e-6 && lse[1] == 1e30);
    /// ```
    logsumexp(x: &[f32], out: &mut [f32], cols: usize)
);
free_fn!(
    /// Softmax backward ([`Kernels::softmax_backward`]).
    ///
    /// ```
    /// let mut dx = [0.0f32; 2];
    /// softmax_kernels::softmax_backward(&[0.5, 0.5], &[1.0, 0.0], &mut dx, 2).unwrap();
    /// assert_eq!(dx, [0.25, -0.25]);
    /// ```
    softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], cols: usize)
);
free_fn!(
    /// Log-softmax backward ([`Kernels::log_softmax_backward`]).
    ///
    /// ```
    /// let mut dx = [0.0f32; 2];
    /// let h = 0.5f32.ln();
    /// softmax_kernels::log_softmax_backward(&[h, h], &[1.0, 1.0], &mut dx, 2).unwrap();
    /// assert!(dx.iter().all(|d| d.abs() < 1e-6));
    /// ```
    log_softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], cols: usize)
);
free_fn!(
    /// Softmax over strided views ([`Kernels::softmax_strided`]), on the active tier.
    softmax_strided(x: MatRef<'_>, y: MatMut<'_>, opts: SoftmaxOptions)
);
free_fn!(
    /// Log-softmax over strided views ([`Kernels::log_softmax_strided`]).
    log_softmax_strided(x: MatRef<'_>, y: MatMut<'_>, opts: SoftmaxOptions)
);
free_fn!(
    /// Softmax in place over a strided view ([`Kernels::softmax_strided_inplace`]).
    softmax_strided_inplace(x: MatMut<'_>, opts: SoftmaxOptions)
);
free_fn!(
    /// Log-softmax in place over a strided view ([`Kernels::log_softmax_strided_inplace`]).
    log_softmax_strided_inplace(x: MatMut<'_>, opts: SoftmaxOptions)
);
free_fn!(
    /// Logsumexp of each row of a strided view ([`Kernels::logsumexp_strided`]).
    logsumexp_strided(x: MatRef<'_>, out: &mut [f32])
);
free_fn!(
    /// Softmax backward over strided views ([`Kernels::softmax_backward_strided`]).
    softmax_backward_strided(y: MatRef<'_>, dy: MatRef<'_>, dx: MatMut<'_>)
);
free_fn!(
    /// Log-softmax backward over strided views ([`Kernels::log_softmax_backward_strided`]).
    log_softmax_backward_strided(y: MatRef<'_>, dy: MatRef<'_>, dx: MatMut<'_>)
);
