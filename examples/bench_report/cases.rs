//! The kernel families, their shapes and work/byte models, the plan, and running it.

use std::hint::black_box;

use softmax_kernels::{
    CrossEntropyOptions, Isa, Kernels, MatrixLayout, OutputLayer, SgdOptions, TokenGrads,
    TokenLogprobOptions, TokenLogprobOutputs,
};

use crate::data::{labels, AlignedBuf};
use crate::harness::{measure, Plan, Timing};
use crate::progress::Progress;
use crate::tier_name;

/// Shapes `(rows, cols)` of the softmax family and cross-entropy.
pub const ROW_SHAPES: &[(usize, usize)] = &[
    (1, 10),
    (64, 10),
    (256, 1000),
    (1024, 1000),
    (32, 32000),
    (8, 128_256),
    (4096, 32000),
];

/// Shapes `(C, D)` of the rank-1 update.
pub const RANK1_SHAPES: &[(usize, usize)] = &[(10, 784), (1000, 2048), (4096, 4096)];

/// Shapes `(B, C, D)` of `weight_grad` and `sgd_step`.
pub const GRAD_SHAPES: &[(usize, usize, usize)] =
    &[(64, 10, 784), (256, 1000, 2048), (512, 32000, 4096)];

/// Shapes `(B, D, C)` (batch, inputs -> classes) of `OutputLayer::train_step`.
pub const TRAIN_SHAPES: &[(usize, usize, usize)] = &[(64, 784, 10), (256, 2048, 1000)];

/// `--quick` leaves out shapes with more elements (row families) ...
const QUICK_MAX_ELEMS: usize = 4 << 20;
/// ... or more flops (GEMMs) than this.
const QUICK_MAX_FLOPS: usize = 4 << 30;

/// The reference tier (f64 oracle) runs row shapes up to this many elements ...
const REF_MAX_ELEMS: usize = 4 << 20;
/// ... and GEMM-like work up to this many flops (in `--quick`, [`REF_MAX_FLOPS_QUICK`]: one
/// f64 reference call of the 256x1000x2048 shapes takes about a second).
const REF_MAX_FLOPS: usize = 2 << 30;
const REF_MAX_FLOPS_QUICK: usize = 1 << 28;

/// Elements of every shape of the softmax row-length sweep (the roofline chart).
pub const SWEEP_ELEMS: usize = 1 << 20;

/// A kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Softmax,
    LogSoftmax,
    Logsumexp,
    CeLoss,
    CeFwdBwd,
    /// Token log-probs with the entropy, fused with the gradient of both.
    TokenFwdBwd,
    Rank1,
    WeightGrad,
    SgdStep,
    TrainStep,
    /// Softmax at a fixed `rows * cols`, one thread: the chart's data.
    SoftmaxSweep,
}

/// What a family's work counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Elem,
    Flop,
}

impl Unit {
    pub fn rate(self) -> &'static str {
        match self {
            Unit::Elem => "Gelem/s",
            Unit::Flop => "GFLOP/s",
        }
    }
}

/// Which memory limit bounds a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    /// Reads one array, writes another: copy bandwidth.
    Copy,
    /// Reads only: read bandwidth.
    Read,
    /// Updates an array in place: read-modify-write bandwidth.
    Rmw,
}

/// Which compute limit bounds a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute {
    /// One exp per element: the tier's exp throughput.
    Exp,
    /// One FMA per element: half the FMA peak in elements.
    FmaPerElem,
    /// GEMM flops: the FMA peak of the code that runs.
    Gemm,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Softmax,
        Family::LogSoftmax,
        Family::Logsumexp,
        Family::CeLoss,
        Family::CeFwdBwd,
        Family::TokenFwdBwd,
        Family::Rank1,
        Family::WeightGrad,
        Family::SgdStep,
        Family::TrainStep,
        Family::SoftmaxSweep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Softmax => "softmax",
            Family::LogSoftmax => "log_softmax",
            Family::Logsumexp => "logsumexp",
            Family::CeLoss => "cross_entropy_loss",
            Family::CeFwdBwd => "cross_entropy_fwd_bwd",
            Family::TokenFwdBwd => "token_logprobs_fwd_bwd",
            Family::Rank1 => "rank1_update",
            Family::WeightGrad => "weight_grad",
            Family::SgdStep => "sgd_step",
            Family::TrainStep => "train_step",
            Family::SoftmaxSweep => "softmax_sweep",
        }
    }

    /// What is called.
    pub fn call(self) -> &'static str {
        match self {
            Family::Softmax | Family::SoftmaxSweep => "Kernels::softmax(x, y, cols)",
            Family::LogSoftmax => "Kernels::log_softmax(x, y, cols)",
            Family::Logsumexp => "Kernels::logsumexp(x, out[rows], cols)",
            Family::CeLoss => "Kernels::cross_entropy(logits, labels, cols, defaults): loss only",
            Family::CeFwdBwd => {
                "Kernels::cross_entropy_fwd_bwd(logits, labels, grad, cols, defaults)"
            }
            Family::TokenFwdBwd => {
                "Kernels::token_logprobs_fwd_bwd(logits, tokens, cols, T = 1, \
                 g_logp[rows], g_entropy[rows], logp + entropy out, grad)"
            }
            Family::Rank1 => "Kernels::rank1_update(alpha, x[C], y[D], W[C,D], [C,D])",
            Family::WeightGrad => "Kernels::weight_grad(1, delta[B,C], a[B,D], beta = 0, dW[C,D])",
            Family::SgdStep => "Kernels::sgd_step(lr, delta[B,C], a[B,D], W[C,D], no bias)",
            Family::TrainStep => {
                "OutputLayer::train_step(a[B,D], labels[B], lr): forward sgemm + fused CE + SGD"
            }
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Family::WeightGrad | Family::SgdStep | Family::TrainStep => Unit::Flop,
            _ => Unit::Elem,
        }
    }

    pub fn mem(self) -> Mem {
        match self {
            Family::Logsumexp | Family::CeLoss => Mem::Read,
            Family::Rank1 | Family::SgdStep => Mem::Rmw,
            _ => Mem::Copy,
        }
    }

    pub fn compute(self) -> Compute {
        match self {
            Family::Rank1 => Compute::FmaPerElem,
            Family::WeightGrad | Family::SgdStep | Family::TrainStep => Compute::Gemm,
            _ => Compute::Exp,
        }
    }

    /// The byte model, as printed.
    pub fn byte_model(self) -> &'static str {
        match self {
            Family::Softmax | Family::LogSoftmax | Family::SoftmaxSweep => {
                "8 B/elem (read x 4 + write y 4)"
            }
            Family::Logsumexp => "4 B/elem (read x; one output per row ignored)",
            Family::CeLoss => "4 B/elem (read logits; labels ignored)",
            Family::CeFwdBwd => "8 B/elem (read logits 4 + write grad 4; labels ignored)",
            Family::TokenFwdBwd => {
                "8 B/elem (read logits 4 + write grad 4; per-row arrays ignored)"
            }
            Family::Rank1 => "8 B per W element (read 4 + write 4; x, y ignored)",
            Family::WeightGrad => "4(BC + BD) read + 4CD written (beta = 0)",
            Family::SgdStep => "4(BC + BD) read + 8CD (W read + written)",
            Family::TrainStep => {
                "12CD + 8BD + 20BC (W read twice + written, A twice, Z written/read 5 times)"
            }
        }
    }

    /// The work model, as printed.
    pub fn work_model(self) -> &'static str {
        match self {
            Family::Rank1 => "C*D elements",
            Family::WeightGrad | Family::SgdStep => "2BCD flops",
            Family::TrainStep => "4BCD flops (forward GEMM + update GEMM)",
            _ => "rows*cols elements",
        }
    }

    /// Work per call in units of [`Family::unit`].
    pub fn work(self, s: Shape) -> f64 {
        let (b, c, d) = (s.b as f64, s.c as f64, s.d as f64);
        match self {
            Family::Rank1 => c * d,
            Family::WeightGrad | Family::SgdStep => 2.0 * b * c * d,
            Family::TrainStep => 4.0 * b * c * d,
            _ => b * c,
        }
    }

    /// Bytes per call by the byte model.
    pub fn bytes(self, s: Shape) -> f64 {
        let (b, c, d) = (s.b as f64, s.c as f64, s.d as f64);
        match self {
            Family::Softmax
            | Family::LogSoftmax
            | Family::SoftmaxSweep
            | Family::CeFwdBwd
            | Family::TokenFwdBwd => 8.0 * b * c,
            Family::Logsumexp | Family::CeLoss => 4.0 * b * c,
            Family::Rank1 => 8.0 * c * d,
            Family::WeightGrad => 4.0 * (b * c + b * d + c * d),
            Family::SgdStep => 4.0 * (b * c + b * d) + 8.0 * c * d,
            Family::TrainStep => 12.0 * c * d + 8.0 * b * d + 20.0 * b * c,
        }
    }

    /// Bytes of the arrays a call touches (what must stay cached between calls).
    pub fn footprint(self, s: Shape) -> usize {
        let (b, c, d) = (s.b, s.c, s.d);
        match self {
            Family::Softmax
            | Family::LogSoftmax
            | Family::SoftmaxSweep
            | Family::CeFwdBwd
            | Family::TokenFwdBwd => 8 * b * c,
            Family::Logsumexp | Family::CeLoss => 4 * b * c,
            Family::Rank1 => 4 * c * d,
            Family::WeightGrad | Family::SgdStep => 4 * (b * c + b * d + c * d),
            Family::TrainStep => 4 * (2 * b * c + b * d + c * d),
        }
    }

    fn is_rows(self) -> bool {
        matches!(
            self,
            Family::Softmax
                | Family::LogSoftmax
                | Family::Logsumexp
                | Family::CeLoss
                | Family::CeFwdBwd
                | Family::TokenFwdBwd
                | Family::SoftmaxSweep
        )
    }
}

/// A shape: `(rows, cols)` of the row families as `(b, c)`; `(C, D)` of the rank-1 update as
/// `(c, d)` with `b = 1`; `(B, C, D)` of the GEMMs and the train step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub b: usize,
    pub c: usize,
    pub d: usize,
}

/// One measurement to make.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub family: Family,
    pub shape: Shape,
    pub tier: Isa,
    pub threads: usize,
}

impl Case {
    /// The shape as printed.
    pub fn shape_label(&self) -> String {
        let Shape { b, c, d } = self.shape;
        match self.family {
            Family::Rank1 => format!("{c}x{d}"),
            Family::WeightGrad | Family::SgdStep => format!("{b}x{c}x{d}"),
            Family::TrainStep => format!("{b}x{d}->{c}"),
            _ => format!("{b}x{c}"),
        }
    }

    /// `family/tier/shape`, what `--filter` matches.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.family.name(),
            tier_name(self.tier),
            self.shape_label()
        )
    }
}

/// The shapes of `family` in this mode.
fn shapes(family: Family, quick: bool) -> Vec<Shape> {
    let rows = |(b, c): (usize, usize)| Shape { b, c, d: 0 };
    let mut v: Vec<Shape> = match family {
        Family::Rank1 => RANK1_SHAPES
            .iter()
            .map(|&(c, d)| Shape { b: 1, c, d })
            .collect(),
        Family::WeightGrad | Family::SgdStep => GRAD_SHAPES
            .iter()
            .map(|&(b, c, d)| Shape { b, c, d })
            .collect(),
        Family::TrainStep => TRAIN_SHAPES
            .iter()
            .map(|&(b, d, c)| Shape { b, c, d })
            .collect(),
        Family::SoftmaxSweep => {
            // Row lengths 8 .. 131072: every power of two, or every fourth in --quick.
            let step = if quick { 2 } else { 1 };
            (3..=17)
                .step_by(step)
                .map(|e| rows((SWEEP_ELEMS >> e, 1 << e)))
                .collect()
        }
        _ => ROW_SHAPES.iter().copied().map(rows).collect(),
    };
    if quick {
        v.retain(|&s| {
            if family.is_rows() {
                s.b * s.c <= QUICK_MAX_ELEMS
            } else {
                family.work(s) <= QUICK_MAX_FLOPS as f64
            }
        });
    }
    v
}

/// Whether the reference tier runs `family` at `s` (it is skipped where one call would take
/// seconds, or in `--quick` most of a second).
fn reference_runs(family: Family, s: Shape, quick: bool) -> bool {
    let max_flops = if quick {
        REF_MAX_FLOPS_QUICK
    } else {
        REF_MAX_FLOPS
    };
    match family.unit() {
        Unit::Flop => family.work(s) <= max_flops as f64,
        Unit::Elem if family.is_rows() => s.b * s.c <= REF_MAX_ELEMS,
        Unit::Elem => true,
    }
}

/// Every case, grouped by family and shape, then threads, then tier (slowest first).
pub fn plan(
    tiers: &[Isa],
    thread_counts: &[usize],
    quick: bool,
    filter: Option<&str>,
) -> Vec<Case> {
    let mut out = Vec::new();
    for family in Family::ALL {
        for shape in shapes(family, quick) {
            let threads: &[usize] = if family == Family::SoftmaxSweep {
                &[1]
            } else {
                thread_counts
            };
            for &t in threads {
                for &tier in tiers {
                    if tier == Isa::Scalar && !reference_runs(family, shape, quick) {
                        continue;
                    }
                    let case = Case {
                        family,
                        shape,
                        tier,
                        threads: t,
                    };
                    if filter.is_none_or(|f| case.id().contains(f)) {
                        out.push(case);
                    }
                }
            }
        }
    }
    out
}

/// A case and its timing.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub case: Case,
    pub timing: Timing,
}

/// Input buffers, reused across families (the largest row shape needs 2 x 512 MiB).
#[derive(Default)]
struct Workspace {
    logits: Option<AlignedBuf>,
    out: Option<AlignedBuf>,
}

impl Workspace {
    /// Logits uniform in `[-5, 5]` (always the same prefix) and an output buffer, `n` each.
    fn get(&mut self, n: usize) -> (&[f32], &mut [f32]) {
        if self.logits.as_ref().is_none_or(|x| x.len() < n) {
            self.logits = None;
            self.logits = Some(AlignedBuf::uniform(n, -5.0, 5.0, 0x5EED));
        }
        if self.out.as_ref().is_none_or(|y| y.len() < n) {
            self.out = None;
            self.out = Some(AlignedBuf::zeros(n));
        }
        let x = self.logits.as_deref().expect("allocated above");
        let y = self.out.as_deref_mut().expect("allocated above");
        (&x[..n], &mut y[..n])
    }
}

/// Runs every case; `pool_for(threads)` gives the pool of a thread count.
pub fn run<'p>(
    cases: &[Case],
    pool_for: impl Fn(usize) -> &'p rayon::ThreadPool,
    plan: &Plan,
    progress: &Progress,
) -> Vec<Measured> {
    let mut ws = Workspace::default();
    let mut out = Vec::with_capacity(cases.len());
    let mut i = 0;
    while i < cases.len() {
        let (family, shape) = (cases[i].family, cases[i].shape);
        let mut j = i;
        while j < cases.len() && cases[j].family == family && cases[j].shape == shape {
            j += 1;
        }
        let group = &cases[i..j];
        if !family.is_rows() {
            // Free the (up to 1 GiB) row buffers before the GEMMs allocate theirs.
            ws = Workspace::default();
        }
        progress.start(&format!(
            "{} {}: preparing",
            family.name(),
            group[0].shape_label()
        ));
        let timings = run_group(family, shape, group, &pool_for, plan, progress, &mut ws);
        out.extend(
            group
                .iter()
                .zip(timings)
                .map(|(&case, timing)| Measured { case, timing }),
        );
        i = j;
    }
    out
}

/// Runs the cases of one family and shape (inputs made once).
fn run_group<'p>(
    family: Family,
    shape: Shape,
    group: &[Case],
    pool_for: &impl Fn(usize) -> &'p rayon::ThreadPool,
    plan: &Plan,
    progress: &Progress,
    ws: &mut Workspace,
) -> Vec<Timing> {
    let Shape { b, c, d } = shape;
    let ce = CrossEntropyOptions::default();
    // Per-family inputs.
    let lab = if family.is_rows() || family == Family::TrainStep {
        labels(b, c, 0x1AB)
    } else {
        Vec::new()
    };
    let (mut delta, mut act, mut w) = (
        AlignedBuf::zeros(0),
        AlignedBuf::zeros(0),
        AlignedBuf::zeros(0),
    );
    match family {
        Family::Rank1 => {
            delta = AlignedBuf::uniform(c, -1.0, 1.0, 1);
            act = AlignedBuf::uniform(d, -1.0, 1.0, 2);
            w = AlignedBuf::uniform(c * d, -1.0, 1.0, 3);
        }
        Family::WeightGrad | Family::SgdStep => {
            delta = AlignedBuf::uniform(b * c, -1.0, 1.0, 8);
            act = AlignedBuf::uniform(b * d, -1.0, 1.0, 9);
            w = AlignedBuf::uniform(c * d, -1.0, 1.0, 10);
        }
        Family::TrainStep => act = AlignedBuf::uniform(b * d, -1.0, 1.0, 11),
        _ => {}
    }
    let n = b * c;
    let lay = MatrixLayout::new(c, d);
    let mut out = Vec::with_capacity(group.len());
    for case in group {
        let k: &'static Kernels = Kernels::for_isa(case.tier).expect("listed as available");
        let pool = pool_for(case.threads);
        progress.start(&case.id());
        let t = match family {
            Family::Softmax | Family::SoftmaxSweep => {
                let (x, y) = ws.get(n);
                pool.install(|| {
                    measure(plan, || {
                        k.softmax(black_box(x), black_box(&mut *y), c).unwrap()
                    })
                })
            }
            Family::LogSoftmax => {
                let (x, y) = ws.get(n);
                pool.install(|| {
                    measure(plan, || {
                        k.log_softmax(black_box(x), black_box(&mut *y), c).unwrap()
                    })
                })
            }
            Family::Logsumexp => {
                let (x, y) = ws.get(n);
                let y = &mut y[..b];
                pool.install(|| {
                    measure(plan, || {
                        k.logsumexp(black_box(x), black_box(&mut *y), c).unwrap()
                    })
                })
            }
            Family::CeLoss => {
                let (x, _) = ws.get(n);
                pool.install(|| {
                    measure(plan, || {
                        black_box(k.cross_entropy(black_box(x), &lab, c, &ce).unwrap());
                    })
                })
            }
            Family::CeFwdBwd => {
                let (x, y) = ws.get(n);
                pool.install(|| {
                    measure(plan, || {
                        black_box(
                            k.cross_entropy_fwd_bwd(black_box(x), &lab, black_box(&mut *y), c, &ce)
                                .unwrap(),
                        );
                    })
                })
            }
            Family::TokenFwdBwd => {
                let (x, y) = ws.get(n);
                let tok = TokenLogprobOptions::default();
                let (gl, gh) = (vec![1.0f32; b], vec![0.01f32; b]);
                let (mut lp, mut h) = (vec![0.0f32; b], vec![0.0f32; b]);
                let grads = TokenGrads {
                    logp: Some(&gl),
                    entropy: Some(&gh),
                };
                pool.install(|| {
                    measure(plan, || {
                        k.token_logprobs_fwd_bwd(
                            black_box(x),
                            &lab,
                            c,
                            &tok,
                            grads,
                            TokenLogprobOutputs::new(&mut lp).entropy(&mut h),
                            black_box(&mut *y),
                        )
                        .unwrap()
                    })
                })
            }
            Family::Rank1 => {
                let (x, y, w) = (&*delta, &*act, &mut *w);
                // A tiny alpha keeps W bounded however many calls run.
                pool.install(|| {
                    measure(plan, || {
                        k.rank1_update(
                            1e-9,
                            black_box(x),
                            black_box(y),
                            black_box(&mut *w),
                            MatrixLayout::new(x.len(), d),
                        )
                        .unwrap()
                    })
                })
            }
            Family::WeightGrad => {
                let (dl, a, w) = (&*delta, &*act, &mut *w);
                pool.install(|| {
                    measure(plan, || {
                        k.weight_grad(
                            1.0,
                            black_box(dl),
                            black_box(a),
                            0.0,
                            black_box(&mut *w),
                            lay,
                        )
                        .unwrap()
                    })
                })
            }
            Family::SgdStep => {
                let (dl, a, w) = (&*delta, &*act, &mut *w);
                pool.install(|| {
                    measure(plan, || {
                        k.sgd_step(
                            1e-9,
                            black_box(dl),
                            black_box(a),
                            black_box(&mut *w),
                            lay,
                            None,
                        )
                        .unwrap()
                    })
                })
            }
            Family::TrainStep => {
                let mut layer =
                    OutputLayer::with_kernels(k, d, c, SgdOptions::new(1e-3)).expect("valid layer");
                layer.init_xavier(1);
                let a = &*act;
                let lab = &lab;
                pool.install(|| {
                    measure(plan, || {
                        black_box(layer.train_step(black_box(a), lab, 1e-3).unwrap());
                    })
                })
            }
        };
        let work = family.work(shape);
        progress.done(&format!(
            "{:<44} {:>2}t  {:>10}  {:>8.3} {} ±{:.0}%",
            case.id(),
            case.threads,
            crate::report::fmt_time(t.median),
            work / t.median / 1e9,
            family.unit().rate(),
            100.0 * t.spread()
        ));
        out.push(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_filters_and_skips() {
        let tiers = [Isa::Scalar, Isa::Portable];
        let all = plan(&tiers, &[1, 2], false, None);
        // The reference skips 4096x32000 and the largest GEMM.
        assert!(!all.iter().any(|c| c.tier == Isa::Scalar
            && c.shape.b * c.shape.c > REF_MAX_ELEMS
            && c.family == Family::Softmax));
        let quick = plan(&tiers, &[1, 2], true, None);
        assert!(quick.len() < all.len());
        assert!(!quick.iter().any(|c| c.shape.c == 32000 && c.shape.b == 512));
        let f = plan(&tiers, &[1], false, Some("rank1"));
        assert_eq!(f.len(), RANK1_SHAPES.len() * tiers.len());
        let sweep = shapes(Family::SoftmaxSweep, true);
        assert!(sweep.iter().all(|s| s.b * s.c == SWEEP_ELEMS));
    }
}
