//! `OutputLayer`: a softmax classifier's output layer with its optimizer and workspace, trained
//! by one call per batch.
//!
//! [`OutputLayer::train_step`] runs `Z = A W^T + b` (sgemm), the fused cross-entropy with the
//! gradient written in place over `Z`, optionally `dA = G W` for the layer below, then the SGD
//! update of `W` and `b` (one GEMM with `beta = 1` for plain SGD). After the first call with
//! the largest batch, no step allocates.

use crate::cross_entropy::{
    CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Label, Logits, Targets,
    MAX_CLASSES,
};
use crate::dispatch::Kernels;
use crate::error::{check_len, rows_of, Error, Result};
use crate::linear::{MatrixLayout, Sgd, SgdOptions};

/// A dense output layer `z = W a + b` (`W`: `[classes, inputs]`, row-major) trained with
/// softmax cross-entropy and SGD.
///
/// ```
/// use softmax_kernels::{OutputLayer, SgdOptions};
/// // Two classes separated by the sign of the one feature.
/// let mut layer = OutputLayer::new(1, 2, SgdOptions::new(0.5))?;
/// let a = [1.0f32, -1.0, 2.0, -2.0];
/// let labels = [0i64, 1, 0, 1];
/// let first = layer.train_step(&a, &labels, 0.5)?;
/// let mut last = first;
/// for _ in 0..50 {
///     last = layer.train_step(&a, &labels, 0.5)?;
/// }
/// assert!(last < first / 10.0);
/// # Ok::<(), softmax_kernels::Error>(())
/// ```
#[derive(Debug)]
pub struct OutputLayer {
    kernels: &'static Kernels,
    layout: MatrixLayout,
    /// The weights, `[classes, inputs]` row-major.
    pub weight: Vec<f32>,
    /// The bias, `classes` floats.
    pub bias: Vec<f32>,
    opt: Sgd,
    logits: Vec<f32>,
}

/// SplitMix64: a tiny, well-mixed generator for the deterministic initialization.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` zeros, or `Error::SizeOverflow` if the allocation fails (never an abort).
fn zeros(arg: &'static str, n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::SizeOverflow { arg })?;
    v.resize(n, 0.0);
    Ok(v)
}

impl OutputLayer {
    /// A layer with zero weights and bias on the active tier ([`Kernels::active`]).
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `inputs` or `classes` is 0, [`Error::TooManyClasses`] above
    /// [`MAX_CLASSES`], [`Error::SizeOverflow`],
    /// [`Error::InvalidOption`] from the optimizer options, [`Error::BadIsaEnv`].
    pub fn new(inputs: usize, classes: usize, opt: SgdOptions) -> Result<Self> {
        Self::with_kernels(Kernels::active()?, inputs, classes, opt)
    }

    /// A layer with zero weights and bias on a chosen tier.
    ///
    /// # Errors
    /// As [`OutputLayer::new`].
    pub fn with_kernels(
        kernels: &'static Kernels,
        inputs: usize,
        classes: usize,
        opt: SgdOptions,
    ) -> Result<Self> {
        if inputs == 0 {
            return Err(Error::ZeroDim { arg: "inputs" });
        }
        if classes == 0 {
            return Err(Error::ZeroDim { arg: "classes" });
        }
        if classes > MAX_CLASSES {
            return Err(Error::TooManyClasses {
                classes,
                max: MAX_CLASSES,
            });
        }
        let n = classes
            .checked_mul(inputs)
            .filter(|&n| n <= isize::MAX as usize / 4)
            .ok_or(Error::SizeOverflow { arg: "weight" })?;
        Ok(OutputLayer {
            kernels,
            layout: MatrixLayout::new(classes, inputs),
            weight: zeros("weight", n)?,
            bias: zeros("bias", classes)?,
            opt: kernels.sgd(opt)?,
            logits: Vec::new(),
        })
    }

    /// Fills the weights with Xavier/Glorot-uniform values `U(-r, r)`, `r = sqrt(6 / (inputs +
    /// classes))`, from `seed` (deterministic), and zeroes the bias.
    pub fn init_xavier(&mut self, seed: u64) {
        let r = (6.0 / (self.layout.rows + self.layout.cols) as f64).sqrt();
        let mut st = seed;
        for w in &mut self.weight {
            let u = (splitmix(&mut st) >> 11) as f64 / (1u64 << 53) as f64;
            *w = ((2.0 * u - 1.0) * r) as f32;
        }
        self.bias.fill(0.0);
    }

    /// `(inputs, classes)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.layout.cols, self.layout.rows)
    }

    /// The weights' layout (`[classes, inputs]`, dense).
    pub fn layout(&self) -> MatrixLayout {
        self.layout
    }

    /// The optimizer (its options, step count and velocity).
    pub fn optimizer(&self) -> &Sgd {
        &self.opt
    }

    /// `z = a W^T + b` for a batch `a` (`[B, inputs]`) into `z` (`[B, classes]`).
    ///
    /// # Errors
    /// As [`Kernels::linear_forward`].
    pub fn forward(&self, a: &[f32], z: &mut [f32]) -> Result<()> {
        self.kernels
            .linear_forward(a, &self.weight, self.layout, Some(&self.bias), z)
    }

    /// The predicted class (first argmax of the logits, ignoring NaN as the cross-entropy's
    /// argmax output does) of each sample of `a` into `out`.
    /// Uses the layer's workspace.
    ///
    /// # Errors
    /// As [`OutputLayer::forward`]; [`Error::LengthMismatch`] if `out` does not have one
    /// entry per sample.
    pub fn predict(&mut self, a: &[f32], out: &mut [u32]) -> Result<()> {
        let b = rows_of("a", a.len(), self.layout.cols)?;
        check_len("out", out.len(), b)?;
        let c = self.layout.rows;
        self.ensure_workspace(b)?;
        let z = &mut self.logits[..b * c];
        self.kernels
            .linear_forward(a, &self.weight, self.layout, Some(&self.bias), z)?;
        for (o, row) in out.iter_mut().zip(z.chunks_exact(c)) {
            // The first index of the largest non-NaN logit (0 if all are NaN), as the
            // cross-entropy's argmax output.
            let (mut best, mut bv) = (0, f32::NEG_INFINITY);
            for (j, &v) in row.iter().enumerate() {
                if v > bv {
                    best = j;
                    bv = v;
                }
            }
            *o = best as u32;
        }
        Ok(())
    }

    fn ensure_workspace(&mut self, b: usize) -> Result<()> {
        let n = b
            .checked_mul(self.layout.rows)
            .ok_or(Error::SizeOverflow { arg: "logits" })?;
        if self.logits.len() < n {
            self.logits
                .try_reserve_exact(n - self.logits.len())
                .map_err(|_| Error::SizeOverflow { arg: "logits" })?;
            self.logits.resize(n, 0.0);
        }
        Ok(())
    }

    /// One training step on a batch (`a`: `[B, inputs]`, one label per sample) with learning
    /// rate `lr` and PyTorch's default cross-entropy (mean, `ignore_index = -100`). Returns the
    /// batch's mean loss before the update.
    ///
    /// # Errors
    /// Shape errors for `a` and `targets`, [`Error::BadLabel`], [`Error::InvalidOption`] for a
    /// bad `lr`. On an error the layer is unchanged.
    pub fn train_step<L: Label>(&mut self, a: &[f32], targets: &[L], lr: f32) -> Result<f32> {
        self.train_step_with(
            a,
            targets,
            lr,
            &CrossEntropyOptions::default(),
            &mut CrossEntropyOutputs::default(),
            None,
        )
        .map(|s| s.loss)
    }

    /// [`OutputLayer::train_step`] with cross-entropy options (a `Mean` or `Sum` reduction,
    /// weights, smoothing, ...), per-row outputs (loss, logsumexp, argmax: the argmax gives
    /// the batch's training accuracy at no extra sweep), and `da` (`[B, inputs]`), which
    /// receives `dL/da = G W` (computed with the weights before the update) for training the
    /// layers below.
    ///
    /// # Errors
    /// As [`OutputLayer::train_step`]; [`Error::InvalidOption`] for `Reduction::None` (the
    /// step needs one scalar loss).
    pub fn train_step_with<L: Label>(
        &mut self,
        a: &[f32],
        targets: &[L],
        lr: f32,
        ce: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
        da: Option<&mut [f32]>,
    ) -> Result<CrossEntropyStats> {
        if ce.reduction == crate::cross_entropy::Reduction::None {
            return Err(Error::InvalidOption {
                name: "reduction",
                value: "None".into(),
                expected: "Mean or Sum for a training step",
            });
        }
        let (c, d) = (self.layout.rows, self.layout.cols);
        let b = rows_of("a", a.len(), d)?;
        check_len("targets", targets.len(), b)?;
        if let Some(da) = da.as_deref() {
            check_len("da", da.len(), a.len())?;
        }
        // Everything that can fail is checked before anything changes: the learning rate, the
        // labels, options and outputs (the cross-entropy call below then cannot fail), and the
        // gradient's scale times B.
        Sgd::check_lr(lr)?;
        self.kernels
            .ce_plan(Targets::Classes(targets), b, c, ce, outputs)?;
        // The optimizer divides the summed per-sample errors by B; scale the loss's gradient
        // by B so that the step follows the gradient of the reduced loss exactly.
        let passed = ce.scale;
        let mut ce = *ce;
        ce.scale *= b as f32;
        if !ce.scale.is_finite() {
            return Err(Error::InvalidOption {
                name: "scale",
                value: passed.to_string(),
                expected: "finite also when multiplied by the batch size (a training step \
                           scales the loss's gradient by B and the optimizer divides by B)",
            });
        }
        self.ensure_workspace(b)?;
        let z = &mut self.logits[..b * c];
        self.kernels
            .linear_forward(a, &self.weight, self.layout, Some(&self.bias), z)?;
        let stats = self.kernels.cross_entropy_with(
            Logits::InPlace(z),
            Targets::Classes(targets),
            c,
            &ce,
            outputs,
        )?;
        self.opt.set_lr(lr)?;
        if let Some(da) = da {
            // dL/da = G W / B: G carries the factor B for the optimizer.
            self.kernels
                .linear_backward_input(z, &self.weight, self.layout, da)?;
            if b > 1 {
                let inv = 1.0 / b as f32;
                da.iter_mut().for_each(|v| *v *= inv);
            }
        }
        self.opt
            .step(z, a, &mut self.weight, self.layout, Some(&mut self.bias))?;
        Ok(stats)
    }

    /// The old name of [`OutputLayer::train_step_with`].
    #[deprecated(since = "0.2.0", note = "renamed to `train_step_with`")]
    pub fn train_step_ext<L: Label>(
        &mut self,
        a: &[f32],
        targets: &[L],
        lr: f32,
        ce: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
        da: Option<&mut [f32]>,
    ) -> Result<CrossEntropyStats> {
        self.train_step_with(a, targets, lr, ce, outputs, da)
    }
}
