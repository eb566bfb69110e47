//! The kernels as [candle](https://github.com/huggingface/candle) operations (feature
//! `candle`): custom ops with their backward passes, for `candle_core::Tensor`s on the CPU.
//!
//! | function | candle-nn counterpart | backward |
//! |---|---|---|
//! | [`softmax_last_dim`] | `candle_nn::ops::softmax_last_dim` | `softmax_backward` kernel |
//! | [`log_softmax_last_dim`] | `candle_nn::ops::log_softmax(x, D::Minus1)` | `log_softmax_backward` kernel |
//! | [`cross_entropy`] | `candle_nn::loss::cross_entropy` | the fused forward+backward kernel, scaled by the upstream gradient |
//! | [`cross_entropy_per_row`] | (`Reduction::None`) | as above, one upstream gradient per row |
//! | [`linear_cross_entropy`] | `cross_entropy(h.matmul(w.t()), t)` | the fused kernel: `dh`, `dW` without the `[N, C]` logits |
//! | [`softmax_last_dim_inplace`], [`log_softmax_last_dim_inplace`] | - | none (inference: no output allocation) |
//!
//! Inputs are `f32` (`bf16`/`f16` once the crate reads them). Any layout whose last axis is
//! contiguous and whose leading axes collapse into one row stride (a contiguous tensor, the
//! last position `x.i((.., t, ..))` of a `[B, T, V]` tensor, a `narrow` of the last axis) runs
//! in place on candle's storage with no copy; any other layout (a transposed tensor, a
//! `narrow` of a middle axis) is gathered into one contiguous copy first. Outputs are
//! contiguous. On a CUDA or Metal device the ops return candle's "no implementation" error.
//! The ops run on [`Kernels::active`].
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use softmax_kernels::candle as skc;
//! use softmax_kernels::CrossEntropyOptions;
//! # fn main() -> candle_core::Result<()> {
//! let logits = Var::new(&[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]], &Device::Cpu)?;
//! let targets = Tensor::new(&[2u32, 0], &Device::Cpu)?;
//! let loss = skc::cross_entropy(logits.as_tensor(), &targets, &CrossEntropyOptions::default())?;
//! let grads = loss.backward()?;
//! let g = grads.get(&logits).unwrap().to_vec2::<f32>()?;
//! // (softmax - onehot) / 2
//! assert!((g[1][0] - (1.0 / 3.0 - 1.0) / 2.0).abs() < 1e-6);
//! let p = skc::softmax_last_dim(logits.as_tensor())?.to_vec2::<f32>()?;
//! assert!((p[1][2] - 1.0 / 3.0).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, InplaceOp1, Layout, Shape, Tensor};

use crate::cross_entropy::{
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, Reduction, StridedLogits, StridedTargets,
};
use crate::dispatch::Kernels;
use crate::linear::MatrixLayout;
use crate::linear_ce::{LinearCeOptions, LinearCeOutputs};
use crate::softmax::SoftmaxOptions;
use crate::view::{MatMut, MatRef};

/// A crate error as a candle error.
fn wrap(e: crate::Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

fn kernels() -> candle_core::Result<&'static Kernels> {
    Kernels::active().map_err(wrap)
}

/// The f32 data of a storage, or an error naming the op and the dtype.
fn f32_data<'a>(op: &str, s: &'a CpuStorage) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        other => candle_core::bail!(
            "{op}: softmax-kernels reads f32 tensors only, got {:?}",
            other.dtype()
        ),
    }
}

/// Rows of a tensor: the data (borrowed from the storage, from the first row on, or a copy),
/// rows, columns, row stride, and the offset it came from.
type Rows<'a> = (Cow<'a, [f32]>, usize, usize, usize, usize);

/// The rows of a tensor's layout when they can be read in place: (rows, cols, row stride,
/// offset), when the last axis is contiguous and the leading axes collapse into one row
/// stride (each of more than one element steps over the next whole axis) of at least `cols`.
fn strided_rows(layout: &Layout) -> candle_core::Result<Option<(usize, usize, usize, usize)>> {
    let dims = layout.dims();
    let strides = layout.stride();
    let Some((&cols, lead)) = dims.split_last() else {
        candle_core::bail!("softmax-kernels: a scalar tensor has no rows")
    };
    let rows: usize = lead.iter().product();
    let n = dims.len();
    if cols > 1 && strides[n - 1] != 1 {
        return Ok(None);
    }
    let mut ld = cols;
    let mut expected: Option<usize> = None;
    for i in (0..n - 1).rev() {
        if dims[i] <= 1 {
            continue;
        }
        match expected {
            None => {
                ld = strides[i];
                expected = Some(strides[i] * dims[i]);
            }
            Some(e) if strides[i] == e => expected = Some(e * dims[i]),
            Some(_) => return Ok(None),
        }
    }
    Ok((ld >= cols).then_some((rows, cols, ld, layout.start_offset())))
}

/// The rows of a tensor of rank >= 1 (the last axis is the row) as a strided view of its
/// storage when the layout allows it ([`strided_rows`]), else as a contiguous copy.
fn rows<'a>(data: &'a [f32], layout: &Layout) -> candle_core::Result<Rows<'a>> {
    if let Some((rows, cols, ld, off)) = strided_rows(layout)? {
        let span = if rows == 0 { 0 } else { (rows - 1) * ld + cols };
        if let Some(view) = data.get(off..off + span) {
            return Ok((Cow::Borrowed(view), rows, cols, ld, off));
        }
    }
    // One contiguous copy, element by element in logical order.
    let (dims, strides, off) = (layout.dims(), layout.stride(), layout.start_offset());
    let cols = *dims.last().unwrap_or(&1);
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..total {
        let at: usize = off + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        let Some(&v) = data.get(at) else {
            candle_core::bail!("softmax-kernels: a layout outside its storage")
        };
        out.push(v);
        for a in (0..dims.len()).rev() {
            idx[a] += 1;
            if idx[a] < dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Ok((Cow::Owned(out), total / cols.max(1), cols, cols, 0))
}

fn view<'a>(rows_: &'a Rows<'a>) -> candle_core::Result<MatRef<'a>> {
    MatRef::new(&rows_.0, rows_.1, rows_.2, rows_.3).map_err(wrap)
}

/// softmax or log_softmax over the last axis.
struct SoftmaxLastDim {
    log: bool,
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        if self.log {
            "softmax-kernels-log-softmax"
        } else {
            "softmax-kernels-softmax"
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = f32_data(self.name(), storage)?;
        let r = rows(data, layout)?;
        let x = view(&r)?;
        let mut out = vec![0.0f32; r.1 * r.2];
        if r.1 > 0 {
            let y = MatMut::new(&mut out, r.1, r.2, r.2).map_err(wrap)?;
            let k = kernels()?;
            if self.log {
                k.log_softmax_strided(x, y, SoftmaxOptions::default())
            } else {
                k.softmax_strided(x, y, SoftmaxOptions::default())
            }
            .map_err(wrap)?;
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(
            grad_res,
            &SoftmaxBackward { log: self.log },
        )?))
    }
}

/// The backward pass of [`SoftmaxLastDim`]: `(y, dy) -> dx`.
struct SoftmaxBackward {
    log: bool,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax-kernels-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, dy) = (f32_data(self.name(), s1)?, f32_data(self.name(), s2)?);
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "{}: y {:?} and dy {:?} differ",
                self.name(),
                l1.dims(),
                l2.dims()
            )
        }
        let (ry, rdy) = (rows(y, l1)?, rows(dy, l2)?);
        let mut out = vec![0.0f32; ry.1 * ry.2];
        if ry.1 > 0 {
            let dx = MatMut::new(&mut out, ry.1, ry.2, ry.2).map_err(wrap)?;
            let k = kernels()?;
            if self.log {
                k.log_softmax_backward_strided(view(&ry)?, view(&rdy)?, dx)
            } else {
                k.softmax_backward_strided(view(&ry)?, view(&rdy)?, dx)
            }
            .map_err(wrap)?;
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// softmax or log_softmax over the last axis, in place on the tensor's storage.
struct SoftmaxInplace {
    log: bool,
}

impl InplaceOp1 for SoftmaxInplace {
    fn name(&self) -> &'static str {
        "softmax-kernels-softmax-inplace"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!(
                "{}: softmax-kernels reads f32 tensors only, got {:?}",
                self.name(),
                storage.dtype()
            )
        };
        let Some((rows, cols, ld, off)) = strided_rows(layout)? else {
            candle_core::bail!(
                "{}: in place needs rows that are contiguous and equally spaced (got dims {:?}, \
                 strides {:?}); use softmax_last_dim",
                self.name(),
                layout.dims(),
                layout.stride()
            )
        };
        if rows == 0 {
            return Ok(());
        }
        let span = (rows - 1) * ld + cols;
        let Some(buf) = data.get_mut(off..off + span) else {
            candle_core::bail!("{}: a layout outside its storage", self.name())
        };
        let x = MatMut::new(buf, rows, cols, ld).map_err(wrap)?;
        let k = kernels()?;
        if self.log {
            k.log_softmax_strided_inplace(x, SoftmaxOptions::default())
        } else {
            k.softmax_strided_inplace(x, SoftmaxOptions::default())
        }
        .map_err(wrap)
    }
}

/// `softmax(x)` over the last axis written over `x` (no autograd: for inference, where the
/// logits are not needed again). Needs rows that are contiguous and equally spaced (a
/// contiguous tensor, or the last position of a `[B, T, V]` tensor); the rest of the storage
/// is not touched.
///
/// # Errors
/// A candle error for a non-f32 tensor, a scalar, another layout, or another device.
pub fn softmax_last_dim_inplace(x: &Tensor) -> candle_core::Result<()> {
    x.inplace_op1(&SoftmaxInplace { log: false })
}

/// [`softmax_last_dim_inplace`] for log_softmax.
///
/// # Errors
/// As [`softmax_last_dim_inplace`].
pub fn log_softmax_last_dim_inplace(x: &Tensor) -> candle_core::Result<()> {
    x.inplace_op1(&SoftmaxInplace { log: true })
}

/// `softmax(x)` over the last axis, with its backward pass.
///
/// # Errors
/// A candle error for a non-f32 tensor, a scalar, or a tensor on another device.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(SoftmaxLastDim { log: false })
}

/// `log_softmax(x)` over the last axis, with its backward pass.
///
/// # Errors
/// As [`softmax_last_dim`].
pub fn log_softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(SoftmaxLastDim { log: true })
}

/// The options of a cross-entropy op, owned (an op outlives the call that made it).
#[derive(Clone, Debug)]
struct OwnedCeOptions {
    reduction: Reduction,
    weight: Option<Vec<f32>>,
    ignore_index: Option<i64>,
    label_smoothing: f32,
    z_loss: f32,
    softcap: Option<f32>,
    all_ignored: AllIgnored,
    scale: f32,
}

impl OwnedCeOptions {
    fn of(o: &CrossEntropyOptions<'_>) -> candle_core::Result<Self> {
        if o.row_scale.is_some() {
            candle_core::bail!(
                "softmax-kernels cross_entropy: row_scale comes from the upstream gradient in \
                 candle; leave it None"
            )
        }
        Ok(OwnedCeOptions {
            reduction: o.reduction,
            weight: o.weight.map(<[f32]>::to_vec),
            ignore_index: o.ignore_index,
            label_smoothing: o.label_smoothing,
            z_loss: o.z_loss,
            softcap: o.softcap,
            all_ignored: o.all_ignored,
            scale: o.scale,
        })
    }

    /// The borrowed options, with an extra gradient scale (`row_scale` for per-row losses).
    fn borrowed<'a>(&'a self, scale: f32, row_scale: Option<&'a [f32]>) -> CrossEntropyOptions<'a> {
        let mut o = CrossEntropyOptions::default()
            .reduction(self.reduction)
            .ignore_index(self.ignore_index)
            .label_smoothing(self.label_smoothing)
            .z_loss(self.z_loss)
            .all_ignored(self.all_ignored)
            .scale(self.scale * scale);
        if let Some(w) = &self.weight {
            o = o.weight(w);
        }
        if let Some(c) = self.softcap {
            o = o.softcap(c);
        }
        if let Some(g) = row_scale {
            o = o.row_scale(g);
        }
        o
    }
}

/// Cross-entropy of `[N, C]` logits against `[N]` labels (`u32` or `i64`): the loss (a
/// scalar, or `[N]` per-row losses with `Reduction::None`), and in backward the gradient of
/// the logits from the fused kernel.
struct CrossEntropyOp {
    opts: OwnedCeOptions,
}

/// Runs the cross-entropy on checked storages: the loss output (one value, or one per row)
/// and, when `grad` is given, the gradient into it (rows of `C`), scaled by `scale` or by
/// `row_scale`.
fn ce_run(
    opts: &OwnedCeOptions,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    grad: Option<&mut [f32]>,
    (scale, row_scale): (f32, Option<&[f32]>),
) -> candle_core::Result<Vec<f32>> {
    let name = "softmax-kernels cross_entropy";
    let logits = f32_data(name, s1)?;
    if l1.dims().len() != 2 || l2.dims().len() != 1 || l1.dims()[0] != l2.dims()[0] {
        candle_core::bail!(
            "{name}: expects logits [N, C] and targets [N], got {:?} and {:?}",
            l1.dims(),
            l2.dims()
        )
    }
    let r = rows(logits, l1)?;
    let x = view(&r)?;
    let n = r.1;
    let o = opts.borrowed(scale, row_scale);
    let mut row_loss = vec![0.0f32; n];
    let mut out = CrossEntropyOutputs::default();
    let per_row = opts.reduction == Reduction::None;
    if per_row {
        out.row_loss = Some(&mut row_loss);
    }
    let k = kernels()?;
    let logits = match grad {
        Some(g) => StridedLogits::Grad(x, MatMut::new(g, n, r.2, r.2).map_err(wrap)?),
        None => StridedLogits::Read(x),
    };
    macro_rules! run {
        ($t:expr) => {{
            let labels = labels_of($t, l2)?;
            k.cross_entropy_strided(logits, StridedTargets::Classes(&labels), &o, &mut out)
        }};
    }
    let st = match s2 {
        CpuStorage::U32(t) => run!(t),
        CpuStorage::I64(t) => run!(t),
        other => candle_core::bail!(
            "{name}: targets must be u32 or i64, got {:?}",
            other.dtype()
        ),
    }
    .map_err(wrap)?;
    Ok(if per_row { row_loss } else { vec![st.loss] })
}

/// The labels of a 1-D tensor, in logical order (borrowed when contiguous).
fn labels_of<'a, T: Copy>(data: &'a [T], l: &Layout) -> candle_core::Result<Cow<'a, [T]>> {
    let (n, s, off) = (l.dims()[0], l.stride()[0], l.start_offset());
    if n <= 1 || s == 1 {
        if let Some(v) = data.get(off..off + n) {
            return Ok(Cow::Borrowed(v));
        }
    }
    (0..n)
        .map(|i| data.get(off + i * s).copied())
        .collect::<Option<Vec<T>>>()
        .map(Cow::Owned)
        .ok_or_else(|| candle_core::Error::Msg("targets: layout outside its storage".into()))
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "softmax-kernels-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let loss = ce_run(&self.opts, (s1, l1), (s2, l2), None, (1.0, None))?;
        let shape = if self.opts.reduction == Reduction::None {
            Shape::from(loss.len())
        } else {
            Shape::from(())
        };
        Ok((CpuStorage::F32(loss), shape))
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let grad = arg1.apply_op2_no_bwd(
            arg2,
            &CrossEntropyGrad {
                opts: self.opts.clone(),
                upstream: g,
            },
        )?;
        Ok((Some(grad), None))
    }
}

/// The gradient of [`CrossEntropyOp`] for an upstream gradient (one value, or one per row).
struct CrossEntropyGrad {
    opts: OwnedCeOptions,
    upstream: Vec<f32>,
}

impl CustomOp2 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "softmax-kernels-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n: usize = l1.dims().iter().product();
        let mut grad = vec![0.0f32; n];
        let (scale, row_scale) = if self.opts.reduction == Reduction::None {
            (1.0, Some(self.upstream.as_slice()))
        } else {
            (self.upstream.first().copied().unwrap_or(0.0), None)
        };
        ce_run(
            &self.opts,
            (s1, l1),
            (s2, l2),
            Some(&mut grad),
            (scale, row_scale),
        )?;
        Ok((CpuStorage::F32(grad), l1.shape().clone()))
    }
}

/// Cross-entropy of `logits` (`[N, C]`, f32) against `targets` (`[N]`, u32 or i64), reduced
/// as `opts.reduction` says (`Mean` by default; `Reduction::None` is
/// [`cross_entropy_per_row`]), with its backward pass. Every option of
/// [`CrossEntropyOptions`] but `row_scale` (the upstream gradient plays its part) applies.
///
/// # Errors
/// A candle error for other shapes or dtypes, bad options, or a bad label.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions<'_>,
) -> candle_core::Result<Tensor> {
    let mut o = OwnedCeOptions::of(opts)?;
    if o.reduction == Reduction::None {
        o.reduction = Reduction::Mean;
    }
    logits.apply_op2(targets, CrossEntropyOp { opts: o })
}

/// [`cross_entropy`] with `Reduction::None`: the `[N]` per-row losses, with a backward pass
/// that takes one upstream gradient per row.
///
/// # Errors
/// As [`cross_entropy`].
pub fn cross_entropy_per_row(
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions<'_>,
) -> candle_core::Result<Tensor> {
    let mut o = OwnedCeOptions::of(opts)?;
    o.reduction = Reduction::None;
    logits.apply_op2(targets, CrossEntropyOp { opts: o })
}

/// The fused linear cross-entropy of `h` (`[N, D]`) and `w` (`[C, D]`) against `[N]` labels.
/// Forward: the loss alone. Backward: `dh` and `dW` in one fused pass, concatenated in one
/// storage (`[N * D + C * D]`) that [`linear_cross_entropy`]'s backward splits into views.
struct LinearCeOp {
    opts: OwnedCeOptions,
    /// The upstream gradient (backward only).
    upstream: Option<f32>,
}

/// `h` as a dense `[N, D]` slice (borrowed when it is one) and `w`'s rows with their layout.
type LinearArgs<'a> = (Cow<'a, [f32]>, usize, usize, Rows<'a>);

fn linear_args<'a>(
    name: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
) -> candle_core::Result<LinearArgs<'a>> {
    let (h, w) = (f32_data(name, s1)?, f32_data(name, s2)?);
    match (l1.dims(), l2.dims()) {
        (&[_, d1], &[_, d2]) if d1 == d2 => {}
        (a, b) => candle_core::bail!("{name}: expects h [N, D] and w [C, D], got {a:?} and {b:?}"),
    }
    let rh = rows(h, l1)?;
    let (n, d) = (rh.1, rh.2);
    // The kernels take `h` dense: copy strided rows out.
    let h = if rh.3 == d {
        match rh.0 {
            Cow::Borrowed(v) => Cow::Borrowed(&v[..n * d]),
            Cow::Owned(v) => Cow::Owned(v),
        }
    } else {
        Cow::Owned(
            (0..n)
                .flat_map(|r| rh.0[r * rh.3..r * rh.3 + d].iter().copied())
                .collect(),
        )
    };
    Ok((h, n, d, rows(w, l2)?))
}

impl CustomOp3 for LinearCeOp {
    fn name(&self) -> &'static str {
        "softmax-kernels-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (h, n, d, rw) = linear_args(name, (s1, l1), (s2, l2))?;
        let c = rw.1;
        if l3.dims() != [n] {
            candle_core::bail!("{name}: expects targets [{n}], got {:?}", l3.dims())
        }
        let layout = MatrixLayout::new(c, d).with_ld(rw.3);
        let wdata: &[f32] = &rw.0;
        let span = if c == 0 { 0 } else { (c - 1) * rw.3 + d };
        let wdata = &wdata[..span.min(wdata.len())];
        let scale = self.upstream.unwrap_or(1.0);
        let o = LinearCeOptions::new(self.opts.borrowed(scale, None));
        let mut grads = vec![
            0.0f32;
            if self.upstream.is_some() {
                (n + c) * d
            } else {
                0
            }
        ];
        let (da, dw) = grads.split_at_mut(if self.upstream.is_some() { n * d } else { 0 });
        let mut out = LinearCeOutputs::default();
        if self.upstream.is_some() {
            out.da = Some(da);
            out.dw = Some(dw);
        }
        let k = kernels()?;
        macro_rules! run {
            ($t:expr) => {{
                let labels = labels_of($t, l3)?;
                k.linear_cross_entropy(
                    &h,
                    wdata,
                    layout,
                    None,
                    crate::Targets::Classes(&labels),
                    &o,
                    &mut out,
                )
            }};
        }
        let st = match s3 {
            CpuStorage::U32(t) => run!(t),
            CpuStorage::I64(t) => run!(t),
            other => {
                candle_core::bail!(
                    "{name}: targets must be u32 or i64, got {:?}",
                    other.dtype()
                )
            }
        }
        .map_err(wrap)?;
        Ok(if self.upstream.is_some() {
            let len = grads.len();
            (CpuStorage::F32(grads), Shape::from(len))
        } else {
            (CpuStorage::F32(vec![st.loss]), Shape::from(()))
        })
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad_res
            .to_dtype(candle_core::DType::F32)?
            .to_scalar::<f32>()?;
        let both = h.apply_op3_no_bwd(
            w,
            t,
            &LinearCeOp {
                opts: self.opts.clone(),
                upstream: Some(g),
            },
        )?;
        let (n, d) = h.dims2()?;
        let c = w.dims2()?.0;
        let dh = both.narrow(0, 0, n * d)?.reshape((n, d))?;
        let dw = both.narrow(0, n * d, c * d)?.reshape((c, d))?;
        Ok((Some(dh), Some(dw), None))
    }
}

/// The mean (or as `opts.reduction` says, but not `None`) cross-entropy of the logits
/// `h w^T` (`h`: `[N, D]`, `w`: `[C, D]`, f32) against `targets` (`[N]`, u32 or i64), fused:
/// the `[N, C]` logits are never materialized, forward or backward
/// ([`Kernels::linear_cross_entropy`]). Backward gives `dh` and `dW` from one fused pass.
/// No bias: append a column of ones to `h` and the bias to `w` for one.
///
/// # Errors
/// A candle error for other shapes or dtypes, bad options, or a bad label.
pub fn linear_cross_entropy(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions<'_>,
) -> candle_core::Result<Tensor> {
    let o = OwnedCeOptions::of(opts)?;
    if o.reduction == Reduction::None {
        candle_core::bail!(
            "softmax-kernels linear_cross_entropy: Reduction::None is not supported here"
        )
    }
    h.apply_op3(
        w,
        targets,
        LinearCeOp {
            opts: o,
            upstream: None,
        },
    )
}
