//! Strided rows ([`MatRef`] / [`MatMut`]): every strided entry point against the contiguous
//! function of the same tier on the rows copied out, bit for bit.
//!
//! An input picks a tier (any available one, the scalar tier included: the property holds per
//! tier), an operation ([`Op`]), a shape ([`crate::shape`]) and, per matrix, a leading dimension
//! ([`ld`]: `cols + 0..=17` or `2 cols`, each matrix its own) and a slice length (with or
//! without the last row's padding). The padding of the input matrices holds NaN, `+inf`, a free
//! bit pattern or data words ([`StridedHeader::pad`]), so a kernel that read it would change a
//! row; every output (strided and contiguous alike) starts as [`UNWRITTEN`].
//!
//! Checks: the same `Ok`/`Err` and the same error value; on `Ok` the same bits in every output
//! row and per-row output and the same loss, `loss_f64` and stats (bits); the floats between
//! rows and after the last row never written; read-only matrices unchanged; on `Err` nothing
//! written. "The same bits" takes any NaN for any other ([`key`]): Rust leaves the sign and
//! payload of an arithmetic NaN unspecified, and the two calls' NaN bits did differ (a row with
//! NaNs of both signs, `[avx2]` softmax, 5 rows of 17: `0xffff7f7f` strided, `0x7fff7f7f`
//! contiguous, in a build without AddressSanitizer only), so the crate cannot promise them.
//!
//! With [`StridedHeader::mismatch`] the second view (output, `dx`, gradient or probability
//! targets) gets one row or column more: the strided call alone must then fail with
//! `ShapeMismatch` for it (`ZeroDim` first when `cols == 0`) and write nothing.

use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Error, Isa, Kernels, Logits,
    MaskedRows, MatMut, MatRef, Reduction, SoftmaxOptions, StridedLogits, StridedTargets, Targets,
};

use crate::cross_entropy::{ignore_index, label_value, CeHeader, FromWide, OptionBits};
use crate::input::{exact, perturb, split, Fill, Win, Words};
use crate::{shape, unchanged, UNWRITTEN};

crate::header! {
    /// The strided target's header.
    pub struct StridedHeader {
        /// The tier ([`any_tier`]).
        pub tier: u8,
        /// The operation ([`Op::of`]).
        pub op: u8,
        /// Rows selector ([`crate::shape`]).
        pub rows: u8,
        /// Columns selector.
        pub cols: u16,
        /// [`ld`] of the input (`x`, the backward passes' `y`, the logits).
        pub ld_in: u8,
        /// [`ld`] of the output (`y`, `dx`, the gradient).
        pub ld_out: u8,
        /// [`ld`] of the second input (`dy`, the probability targets).
        pub ld_aux: u8,
        /// Bits 0, 1, 2: the input's, output's, second input's slice keeps the last row's
        /// padding (`rows * ld` floats), else it ends with the last row.
        pub full: u8,
        /// The input padding, `% 4`: NaN, `+inf`, `pad_bits`, data words.
        pub pad: u8,
        /// See `pad`.
        pub pad_bits: u32,
        /// Bit 0: `MaskedRows::Zero`.
        pub masked: u8,
        /// `% 16`: 15 the second view has one row more, 14 one column more.
        pub mismatch: u8,
        /// Length perturbation of logsumexp's output.
        pub out_len: u8,
        /// See `out_len`.
        pub out_delta: i8,
        /// Backward passes' `y`, `% 4`: raw data, its softmax, its log_softmax, raw through
        /// `dywin`.
        pub y_src: u8,
        /// The window of the input's rows.
        pub xwin: Win,
        /// The window of `dy`.
        pub dywin: Win,
        /// The cross-entropy options, outputs and targets, decoded as the `cross_entropy` target
        /// does (its `tier`, `rows`, `cols`, `logits_*`, `grad_*`, `xwin` and `fill` are unused).
        pub ce: CeHeader,
        /// Words past the input.
        pub fill: Fill,
    }
}

/// The operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `softmax_strided` / `softmax_with`
    Softmax,
    /// `log_softmax_strided` / `log_softmax_with`
    LogSoftmax,
    /// `softmax_strided_inplace` / `softmax_inplace_with`
    SoftmaxInplace,
    /// `log_softmax_strided_inplace` / `log_softmax_inplace_with`
    LogSoftmaxInplace,
    /// `logsumexp_strided` / `logsumexp`
    Logsumexp,
    /// `softmax_backward_strided` / `softmax_backward`
    SoftmaxBackward,
    /// `log_softmax_backward_strided` / `log_softmax_backward`
    LogSoftmaxBackward,
    /// `cross_entropy_strided` / `cross_entropy_with`
    CrossEntropy,
}

impl Op {
    /// `sel % 12`: 0..=6 the softmax family in declaration order, 7..=11 cross-entropy (the
    /// most options).
    pub fn of(sel: u8) -> Op {
        match sel % 12 {
            0 => Op::Softmax,
            1 => Op::LogSoftmax,
            2 => Op::SoftmaxInplace,
            3 => Op::LogSoftmaxInplace,
            4 => Op::Logsumexp,
            5 => Op::SoftmaxBackward,
            6 => Op::LogSoftmaxBackward,
            _ => Op::CrossEntropy,
        }
    }
}

/// The tier: `sel` modulo the available tiers, the SIMD ones first, then the scalar one.
pub fn any_tier(sel: u8) -> &'static Kernels {
    let mut av: Vec<Isa> = Isa::available();
    av.sort_by_key(|&i| i == Isa::Scalar);
    Kernels::for_isa(av[sel as usize % av.len()]).expect("an available tier has a table")
}

/// A leading dimension: `sel % 19` is 0..=17 for `cols + sel`, 18 for `2 cols`.
pub fn ld(sel: u8, cols: usize) -> usize {
    match sel as usize % 19 {
        18 => 2 * cols,
        s => cols + s,
    }
}

const UNW: f32 = f32::from_bits(UNWRITTEN);

/// A strided matrix's layout in its slice.
#[derive(Clone, Copy, Debug)]
struct Lay {
    rows: usize,
    cols: usize,
    ld: usize,
    full: bool,
}

impl Lay {
    /// `rows * ld`, or without the last row's padding.
    fn len(self) -> usize {
        if self.full || self.rows == 0 {
            self.rows * self.ld
        } else {
            (self.rows - 1) * self.ld + self.cols
        }
    }

    /// The slice: the rows of `dense` (`rows * cols`), the padding from `pad`, in order.
    fn scatter(self, dense: &[f32], pad: &[f32]) -> Vec<f32> {
        let (len, gap) = (self.len(), self.ld - self.cols);
        let mut v = Vec::with_capacity(len);
        for (r, row) in dense.chunks(self.cols.max(1)).enumerate() {
            v.extend_from_slice(row);
            let n = gap.min(len - v.len());
            v.extend_from_slice(&pad[r * gap..r * gap + n]);
        }
        if self.cols == 0 {
            v.extend_from_slice(&pad[..len]);
        }
        v
    }

    /// An output slice: [`UNWRITTEN`] everywhere.
    fn blank(self) -> Vec<f32> {
        exact(&vec![UNW; self.len()])
    }

    fn view(self, v: &[f32]) -> Result<MatRef<'_>, String> {
        MatRef::new(v, self.rows, self.cols, self.ld).map_err(|e| format!("harness view: {e}"))
    }

    fn view_mut(self, v: &mut [f32]) -> Result<MatMut<'_>, String> {
        MatMut::new(v, self.rows, self.cols, self.ld).map_err(|e| format!("harness view: {e}"))
    }
}

/// What one input decodes to, besides the header.
struct Ctx<'a> {
    h: &'a StridedHeader,
    k: &'static Kernels,
    rows: usize,
    cols: usize,
}

impl Ctx<'_> {
    /// The layout of a view of the call's shape: [`ld`] from `sel`, full if `full & bit`.
    fn lay(&self, sel: u8, bit: u8) -> Lay {
        self.lay_of(self.rows, self.cols, sel, bit)
    }

    fn lay_of(&self, rows: usize, cols: usize, sel: u8, bit: u8) -> Lay {
        let (ld, full) = (ld(sel, self.cols).max(cols), self.h.full & bit != 0);
        Lay {
            rows,
            cols,
            ld,
            full,
        }
    }

    /// The layout of the view `mismatch` may change, and the error the strided call must
    /// return when it does (naming the view `arg`).
    fn second(&self, sel: u8, bit: u8, arg: &'static str) -> (Lay, Option<Error>) {
        let m = self.h.mismatch % 16;
        let (r, c) = (
            self.rows + (m == 15) as usize,
            self.cols + (m == 14) as usize,
        );
        let err = (m >= 14).then_some(match self.cols {
            0 => Error::ZeroDim { arg: "cols" },
            _ => Error::ShapeMismatch {
                arg,
                expected: (self.rows, self.cols),
                actual: (r, c),
            },
        });
        (self.lay_of(r, c, sel, bit), err)
    }

    /// The slice of `dense`'s rows in `lay`, its padding as [`StridedHeader::pad`] says.
    fn padded(&self, lay: Lay, dense: &[f32], words: &mut Words) -> Vec<f32> {
        let n = lay.len() - dense.len().min(lay.len());
        let pad = match self.h.pad % 4 {
            0 => vec![f32::from_bits(0x7FC0_0BAD); n],
            1 => vec![f32::INFINITY; n],
            2 => vec![f32::from_bits(self.h.pad_bits); n],
            _ => words.floats(n, Win::RAW),
        };
        lay.scatter(dense, &pad)
    }
}

/// The outcomes: `Ok(true)` both `Ok`, `Ok(false)` the same error, else the report.
fn outcome<T>(s: &Result<T, Error>, c: &Result<T, Error>) -> Result<bool, String> {
    match (s, c) {
        (Ok(_), Ok(_)) => Ok(true),
        (Err(a), Err(b)) if a == b => Ok(false),
        _ => Err(format!(
            "outcomes differ: strided {:?}, contiguous {:?}",
            s.as_ref().map(|_| ()),
            c.as_ref().map(|_| ())
        )),
    }
}

/// What "the same bits" compares: the bits, but every NaN other than [`UNWRITTEN`] as one (see
/// the module docs).
fn key(v: f32) -> u32 {
    match v.to_bits() {
        b if v.is_nan() && b != UNWRITTEN => 0x7FC0_0000,
        b => b,
    }
}

fn key64(v: f64) -> u64 {
    if v.is_nan() {
        0x7FF8 << 48
    } else {
        v.to_bits()
    }
}

fn bits_msg(v: f32) -> String {
    format!("{v:e} ({:#010x})", v.to_bits())
}

/// A strided output: with `want` (both calls `Ok`) its rows bit for bit as `want` and its
/// padding as `before`; without (the same error) all of it as `before`.
fn check_out(
    what: &str,
    lay: Lay,
    got: &[f32],
    before: &[f32],
    want: Option<&[f32]>,
) -> Result<(), String> {
    let Some(want) = want else {
        return unchanged(&format!("{what} (on error)"), before, got);
    };
    let (ld, cols) = (lay.ld.max(1), lay.cols);
    for (r, (g, b)) in got.chunks(ld).zip(before.chunks(ld)).enumerate() {
        let n = cols.min(g.len());
        if let Some(c) = (n..g.len()).find(|&c| g[c].to_bits() != b[c].to_bits()) {
            let (b, g) = (bits_msg(b[c]), bits_msg(g[c]));
            return Err(format!(
                "{what}: padding float [{r}][{c}] written: {b} -> {g}"
            ));
        }
        let w = &want[r * cols..r * cols + n];
        if let Some(c) = (0..n).find(|&c| key(g[c]) != key(w[c])) {
            let (g, w) = (bits_msg(g[c]), bits_msg(w[c]));
            return Err(format!("{what}[{r}][{c}]: strided {g}, contiguous {w}"));
        }
    }
    Ok(())
}

fn same_bits(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    match (0..got.len()).find(|&i| key(got[i]) != key(want[i])) {
        Some(i) => Err(format!(
            "{what}[{i}]: strided {}, contiguous {}",
            bits_msg(got[i]),
            bits_msg(want[i])
        )),
        None => Ok(()),
    }
}

/// The checker (see the module docs).
pub fn check(data: &[u8]) -> Result<(), String> {
    let (h, rest) = split::<StridedHeader>(data);
    let mut words = Words::new(rest, h.fill);
    let op = Op::of(h.op);
    let max_rows = if op == Op::CrossEntropy { 24 } else { 40 };
    let (rows, cols) = shape(h.rows, h.cols, max_rows, true);
    let c = Ctx {
        h: &h,
        k: any_tier(h.tier),
        rows,
        cols,
    };
    let r = match op {
        Op::SoftmaxBackward | Op::LogSoftmaxBackward => backward(&c, op, &mut words),
        Op::CrossEntropy => match h.ce.target % 9 {
            0 | 8 => ce::<i64>(&c, &mut words),
            1 => ce::<i32>(&c, &mut words),
            2 => ce::<i16>(&c, &mut words),
            3 => ce::<u64>(&c, &mut words),
            4 => ce::<u32>(&c, &mut words),
            5 => ce::<u16>(&c, &mut words),
            6 => ce::<u8>(&c, &mut words),
            _ => ce::<usize>(&c, &mut words),
        },
        _ => forward(&c, op, &mut words),
    };
    r.map_err(|e| {
        let l = |s| ld(s, cols);
        format!(
            "[{}] {op:?} rows {rows} cols {cols} ld in/out/aux {}/{}/{} full {:03b} pad {} \
             mismatch {}\n{e}",
            c.k.isa(),
            l(h.ld_in),
            l(h.ld_out),
            l(h.ld_aux),
            h.full & 7,
            h.pad % 4,
            h.mismatch % 16
        )
    })
}

fn forward(c: &Ctx, op: Op, words: &mut Words) -> Result<(), String> {
    let (k, h) = (c.k, c.h);
    let lx = c.lay(c.h.ld_in, 1);
    let x = words.floats(c.rows * c.cols, h.xwin);
    let xs = c.padded(lx, &x, words);
    let keep = xs.clone();
    let m = if h.masked & 1 != 0 {
        MaskedRows::Zero
    } else {
        MaskedRows::Nan
    };
    let o = SoftmaxOptions::default().masked_rows(m);
    let log = matches!(op, Op::LogSoftmax | Op::LogSoftmaxInplace);
    match op {
        Op::SoftmaxInplace | Op::LogSoftmaxInplace => {
            let mut xc = exact(&x);
            let mut zs = exact(&xs);
            let (rc, rs) = if log {
                let rs = k.log_softmax_strided_inplace(lx.view_mut(&mut zs)?, o);
                (k.log_softmax_inplace_with(&mut xc, c.cols, o), rs)
            } else {
                let rs = k.softmax_strided_inplace(lx.view_mut(&mut zs)?, o);
                (k.softmax_inplace_with(&mut xc, c.cols, o), rs)
            };
            let ok = outcome(&rs, &rc)?;
            check_out("x (in place)", lx, &zs, &xs, ok.then_some(&xc))
        }
        Op::Logsumexp => {
            let n = perturb(c.rows, h.out_len, h.out_delta);
            let (mut oc, mut os) = (exact(&vec![UNW; n]), exact(&vec![UNW; n]));
            let rc = k.logsumexp(&x, &mut oc, c.cols);
            let rs = k.logsumexp_strided(lx.view(&xs)?, &mut os);
            unchanged("x (read only)", &keep, &xs)?;
            if outcome(&rs, &rc)? {
                same_bits("lse", &os, &oc)
            } else {
                unchanged("out (on error)", &vec![UNW; n], &os)
            }
        }
        _ => {
            let (ly, err) = c.second(h.ld_out, 2, "y");
            let mut yc = exact(&vec![UNW; x.len()]);
            let mut ys = ly.blank();
            let rc = match err {
                Some(e) => Err(e),
                None if log => k.log_softmax_with(&x, &mut yc, c.cols, o),
                None => k.softmax_with(&x, &mut yc, c.cols, o),
            };
            let (xv, yv) = (lx.view(&xs)?, ly.view_mut(&mut ys)?);
            let rs = if log {
                k.log_softmax_strided(xv, yv, o)
            } else {
                k.softmax_strided(xv, yv, o)
            };
            unchanged("x (read only)", &keep, &xs)?;
            let ok = outcome(&rs, &rc)?;
            check_out("y", ly, &ys, &ly.blank(), ok.then_some(&yc))
        }
    }
}

fn backward(c: &Ctx, op: Op, words: &mut Words) -> Result<(), String> {
    let (k, h, cols) = (c.k, c.h, c.cols);
    let log = op == Op::LogSoftmaxBackward;
    let raw = words.floats(c.rows * cols, h.xwin);
    let y = match h.y_src % 4 {
        src @ (1 | 2) if cols > 0 => {
            let mut y = exact(&raw);
            let r = if src == 1 {
                k.softmax(&raw, &mut y, cols)
            } else {
                k.log_softmax(&raw, &mut y, cols)
            };
            r.map_err(|e| format!("harness y: {e}"))?;
            y
        }
        3 => raw.iter().map(|v| h.dywin.apply(v.to_bits())).collect(),
        _ => raw,
    };
    let dy = words.floats(c.rows * cols, h.dywin);
    let (ly, ldy) = (c.lay(c.h.ld_in, 1), c.lay(c.h.ld_aux, 4));
    let (ys, dys) = (c.padded(ly, &y, words), c.padded(ldy, &dy, words));
    let (ykeep, dykeep) = (ys.clone(), dys.clone());
    let (lx, err) = c.second(h.ld_out, 2, "dx");
    let mut dxc = exact(&vec![UNW; y.len()]);
    let mut dxs = lx.blank();
    let rc = match err {
        Some(e) => Err(e),
        None if log => k.log_softmax_backward(&y, &dy, &mut dxc, cols),
        None => k.softmax_backward(&y, &dy, &mut dxc, cols),
    };
    let (yv, dyv, dxv) = (ly.view(&ys)?, ldy.view(&dys)?, lx.view_mut(&mut dxs)?);
    let rs = if log {
        k.log_softmax_backward_strided(yv, dyv, dxv)
    } else {
        k.softmax_backward_strided(yv, dyv, dxv)
    };
    unchanged("y (read only)", &ykeep, &ys)?;
    unchanged("dy (read only)", &dykeep, &dys)?;
    let ok = outcome(&rs, &rc)?;
    check_out("dx", lx, &dxs, &lx.blank(), ok.then_some(&dxc))
}

/// The optional per-row outputs of one cross-entropy call: `row_loss`, `lse`, `argmax`.
struct Outs(Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<u32>>);

impl Outs {
    fn new(lens: [Option<usize>; 3]) -> Outs {
        let f = |n: Option<usize>| n.map(|n| exact(&vec![UNW; n]));
        Outs(
            f(lens[0]),
            f(lens[1]),
            lens[2].map(|n| exact(&vec![u32::MAX; n])),
        )
    }

    fn view(&mut self) -> CrossEntropyOutputs<'_> {
        let (row_loss, lse) = (self.0.as_deref_mut(), self.1.as_deref_mut());
        CrossEntropyOutputs {
            row_loss,
            lse,
            argmax: self.2.as_deref_mut(),
        }
    }

    /// The outputs' [`key`]s, by name.
    fn bits(&self) -> [(&'static str, Vec<u32>); 3] {
        let f = |v: &Option<Vec<f32>>| v.iter().flatten().map(|&x| key(x)).collect();
        [
            ("row_loss", f(&self.0)),
            ("lse", f(&self.1)),
            ("argmax", self.2.clone().unwrap_or_default()),
        ]
    }

    /// The same bits as `want` (the contiguous call's, or the initial values after an error).
    fn same(&self, want: &Outs) -> Result<(), String> {
        for ((name, g), (_, w)) in self.bits().into_iter().zip(want.bits()) {
            if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
                return Err(format!(
                    "{name}[{i}]: strided {:#010x}, contiguous {:#010x}",
                    g[i], w[i]
                ));
            }
        }
        Ok(())
    }
}

fn same_stats(s: &CrossEntropyStats, c: &CrossEntropyStats) -> Result<(), String> {
    let key = |t: &CrossEntropyStats| {
        let b = (key(t.loss), key64(t.loss_f64), key64(t.denominator));
        (b, t.rows_used, t.correct)
    };
    if key(s) == key(c) {
        Ok(())
    } else {
        Err(format!(
            "stats: strided {:?} {s:?}, contiguous {:?} {c:?}",
            key(s).0,
            key(c).0
        ))
    }
}

fn ce<L: FromWide>(c: &Ctx, words: &mut Words) -> Result<(), String> {
    let (k, h, f, rows, cols) = (c.k, c.h, &c.h.ce, c.rows, c.cols);
    let (mode, probs) = (f.mode % 3, f.target % 9 == 8);
    let lx = c.lay(c.h.ld_in, 1);
    let x = words.floats(rows * cols, h.xwin);
    let xs = c.padded(lx, &x, words);
    let ignore = ignore_index(f.ignore, f.ignore_val, cols);
    let labels: Vec<L> = if probs {
        Vec::new()
    } else {
        let n = perturb(rows, f.targets_len, f.targets_delta);
        let l: Vec<L> = words
            .raw(n)
            .into_iter()
            .map(|w| L::from_wide(label_value(w, cols, ignore)))
            .collect();
        exact(&l)
    };
    // The view `mismatch` changes: the gradient, else the probability targets.
    let (lg, gerr) = c.second(h.ld_out, 2, "grad");
    let (lp, perr) = if mode == 1 {
        (c.lay(c.h.ld_aux, 4), None)
    } else {
        c.second(h.ld_aux, 4, "targets")
    };
    let y = words.floats(if probs { lp.rows * lp.cols } else { 0 }, f.ywin);
    let ys = if probs {
        c.padded(lp, &y, words)
    } else {
        Vec::new()
    };
    let ykeep = ys.clone();
    let err = if mode == 1 {
        gerr
    } else {
        perr.filter(|_| probs)
    };
    let weight = (f.weight & 1 != 0)
        .then(|| words.floats(perturb(cols, f.weight >> 1, f.weight_delta), f.wwin));
    let rs_len = |s: u8| {
        if s % 4 == 2 {
            perturb(rows, 6, f.row_scale_delta)
        } else {
            rows
        }
    };
    let row_scale = (f.row_scale % 4 >= 2).then(|| words.floats(rs_len(f.row_scale), f.rswin));
    let bits = OptionBits {
        smoothing: (f.smoothing, f.smoothing_bits),
        z_loss: (f.z_loss, f.z_loss_bits),
        softcap: (f.softcap, f.softcap_bits),
        all_ignored: f.all_ignored,
        scale: (f.scale, f.scale_bits),
    };
    let reduction = [Reduction::Mean, Reduction::Sum, Reduction::None][f.reduction as usize % 3];
    let opts: CrossEntropyOptions<'_> =
        bits.options(reduction, weight.as_deref(), ignore, row_scale.as_deref());
    let which = (f.out_len >> 3) % 3;
    let lens: [Option<usize>; 3] = std::array::from_fn(|i| {
        let n = if i == which as usize {
            perturb(rows, f.out_len, f.out_delta)
        } else {
            rows
        };
        (f.outputs >> i & 1 != 0).then_some(n)
    });

    // The contiguous call.
    let (mut xc, mut gc) = (
        exact(&x),
        exact(&vec![UNW; if mode == 1 { x.len() } else { 0 }]),
    );
    let mut oc = Outs::new(lens);
    let rc = match err.clone() {
        Some(e) => Err(e),
        None => {
            let t = if probs {
                Targets::Probs(&y)
            } else {
                Targets::Classes(&labels)
            };
            let lg = match mode {
                0 => Logits::Read(&xc),
                1 => Logits::Grad(&x, &mut gc),
                _ => Logits::InPlace(&mut xc),
            };
            k.cross_entropy_with(lg, t, cols, &opts, &mut oc.view())
        }
    };

    // The strided call.
    let (mut zs, mut gs) = (exact(&xs), if mode == 1 { lg.blank() } else { Vec::new() });
    let mut os = Outs::new(lens);
    let t = if probs {
        StridedTargets::Probs(lp.view(&ys)?)
    } else {
        StridedTargets::Classes(&labels)
    };
    let sl = match mode {
        0 => StridedLogits::Read(lx.view(&zs)?),
        1 => StridedLogits::Grad(lx.view(&zs)?, lg.view_mut(&mut gs)?),
        _ => StridedLogits::InPlace(lx.view_mut(&mut zs)?),
    };
    let rs = k.cross_entropy_strided(sl, t, &opts, &mut os.view());

    unchanged("targets (read only)", &ykeep, &ys)?;
    let ok = outcome(&rs, &rc)?;
    match mode {
        2 => check_out("logits (in place)", lx, &zs, &xs, ok.then_some(&xc))?,
        _ => unchanged("logits (read only)", &xs, &zs)?,
    }
    if mode == 1 {
        check_out("grad", lg, &gs, &lg.blank(), ok.then_some(&gc))?;
    }
    if let (Ok(st), Ok(ct)) = (&rs, &rc) {
        same_stats(st, ct)?;
    }
    os.same(&if ok { oc } else { Outs::new(lens) })
}
