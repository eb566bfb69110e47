//! The training code of the `train_digits` example, as a module that prints nothing: data
//! preparation (the embedded UCI digits, a stratified seeded split, standardization), the
//! deterministic generator, and [`train`], which trains softmax regression or a one-hidden-layer
//! ReLU network with the crate's kernels and returns a [`Report`].
//!
//! `tests/train_digits.rs` includes this file with `#[path]`, so it depends only on the crate,
//! `flate2` and `std`.

use std::io::Read;
use std::time::{Duration, Instant};

use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, Isa, Kernels, MatrixLayout, OutputLayer, Sgd,
    SgdOptions,
};

/// The UCI handwritten digits (1,797 rows of 64 pixel counts 0..16 and the label 0..9), gzip
/// CSV; CC BY 4.0, see `data/README.md`.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// SplitMix64 (Steele, Lea, Flood 2014): the example's only source of randomness, so that
/// results depend on the seed alone, never on a crate's RNG algorithm.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose first output is a function of `seed` only.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform f64 in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift with rejection, so
    /// it is exactly uniform.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The independent random streams derived from the one `--seed`.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// The train/test split.
    Split = 1,
    /// The output layer's Xavier initialization.
    InitOutput = 2,
    /// The hidden layer's Xavier initialization.
    InitHidden = 3,
    /// The per-epoch shuffles of the training set.
    Shuffle = 4,
}

/// The seed of one stream of `seed`.
pub fn stream_seed(seed: u64, stream: Stream) -> u64 {
    SplitMix64::new(seed ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// A classification data set, split, with standardized features.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// What it is, for the report.
    pub name: String,
    /// Features per sample `D`.
    pub features: usize,
    /// Classes `C` (labels are `0..C`).
    pub classes: usize,
    /// Training samples, `[N, D]` row-major.
    pub train_x: Vec<f32>,
    /// Training labels.
    pub train_y: Vec<u32>,
    /// Test samples, `[M, D]`.
    pub test_x: Vec<f32>,
    /// Test labels.
    pub test_y: Vec<u32>,
}

impl Dataset {
    /// A data set from raw features, standardized with the training set's statistics
    /// ([`standardize`]).
    ///
    /// # Errors
    /// A message if the shapes disagree, a set is empty or a label is `>= classes`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_raw(
        name: impl Into<String>,
        features: usize,
        classes: usize,
        mut train_x: Vec<f32>,
        train_y: Vec<u32>,
        mut test_x: Vec<f32>,
        test_y: Vec<u32>,
    ) -> Result<Dataset, String> {
        if features == 0 || classes == 0 {
            return Err("a data set needs at least one feature and one class".into());
        }
        for (what, x, y) in [("train", &train_x, &train_y), ("test", &test_x, &test_y)] {
            if y.is_empty() {
                return Err(format!("the {what} set is empty"));
            }
            if x.len() != y.len() * features {
                return Err(format!(
                    "the {what} set has {} floats for {} samples of {features} features",
                    x.len(),
                    y.len()
                ));
            }
            if let Some((i, &l)) = y.iter().enumerate().find(|&(_, &l)| l as usize >= classes) {
                return Err(format!(
                    "{what} sample {i} has label {l}, not in 0..{classes}"
                ));
            }
        }
        standardize(&mut train_x, &mut test_x, features);
        Ok(Dataset {
            name: name.into(),
            features,
            classes,
            train_x,
            train_y,
            test_x,
            test_y,
        })
    }

    /// Training samples.
    pub fn train_len(&self) -> usize {
        self.train_y.len()
    }

    /// Test samples.
    pub fn test_len(&self) -> usize {
        self.test_y.len()
    }
}

/// Standardizes every feature with the training set's mean and (population) standard deviation,
/// computed in f64: `x <- (x - mean) / std` in both sets. A feature that is constant on the
/// training set (std 0) is centered, which makes it 0 in the training set; it is set to 0 in
/// the test set too, so that a value never seen in training cannot reach weights that never
/// received a gradient.
pub fn standardize(train_x: &mut [f32], test_x: &mut [f32], d: usize) {
    let n = train_x.len() / d;
    if n == 0 {
        return;
    }
    let mut mean = vec![0.0f64; d];
    for row in train_x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0f64; d];
    for row in train_x.chunks_exact(d) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            let c = f64::from(v) - m;
            *s += c * c;
        }
    }
    // 1 / std, or 0 for a constant feature.
    let inv: Vec<f64> = var
        .iter()
        .map(|&s| {
            let sd = (s / n as f64).sqrt();
            if sd > 0.0 {
                1.0 / sd
            } else {
                0.0
            }
        })
        .collect();
    for x in [train_x, test_x] {
        for row in x.chunks_exact_mut(d) {
            for ((v, &m), &r) in row.iter_mut().zip(&mean).zip(&inv) {
                *v = ((f64::from(*v) - m) * r) as f32;
            }
        }
    }
}

/// A stratified split: per class, the samples (in file order) are shuffled with `seed` and the
/// first `round(train_frac * n_class)` go to training. Returns `(train, test)` indices, each in
/// ascending order.
pub fn stratified_split(
    y: &[u32],
    classes: usize,
    train_frac: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] as usize == c).collect();
        rng.shuffle(&mut idx);
        let k = (train_frac * idx.len() as f64).round() as usize;
        train.extend_from_slice(&idx[..k]);
        test.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Parses the digits CSV: rows of 64 integer features `0..=16` and a label `0..=9`.
///
/// # Errors
/// A message naming the line and the problem.
pub fn parse_digits_csv(text: &str) -> Result<(Vec<f32>, Vec<u32>), String> {
    const D: usize = 64;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = 0;
        for (j, f) in line.split(',').enumerate() {
            let v: u32 = f.trim().parse().map_err(|_| {
                format!(
                    "digits.csv line {}: field {} is not an integer: {f:?}",
                    ln + 1,
                    j + 1
                )
            })?;
            match j {
                0..D if v <= 16 => x.push(v as f32),
                D if v <= 9 => y.push(v),
                0..=D => {
                    return Err(format!(
                        "digits.csv line {}: field {} = {v} is out of range",
                        ln + 1,
                        j + 1
                    ))
                }
                _ => {}
            }
            fields += 1;
        }
        if fields != D + 1 {
            return Err(format!(
                "digits.csv line {}: {fields} fields, expected {}",
                ln + 1,
                D + 1
            ));
        }
    }
    Ok((x, y))
}

/// The embedded digits: decompressed, parsed, split 80/20 per class with `seed`
/// ([`stratified_split`]) and standardized with the training set's statistics.
///
/// # Errors
/// A message if the embedded file is corrupt (it is not).
pub fn load_digits(seed: u64) -> Result<Dataset, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| format!("embedded digits.csv.gz: {e}"))?;
    let (x, y) = parse_digits_csv(&text)?;
    let (d, c) = (64, 10);
    let (tr, te) = stratified_split(&y, c, 0.8, stream_seed(seed, Stream::Split));
    let gather = |idx: &[usize]| {
        let xs: Vec<f32> = idx
            .iter()
            .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
            .collect();
        let ys: Vec<u32> = idx.iter().map(|&i| y[i]).collect();
        (xs, ys)
    };
    let (train_x, train_y) = gather(&tr);
    let (test_x, test_y) = gather(&te);
    Dataset::from_raw(
        "UCI digits 8x8 (embedded)",
        d,
        c,
        train_x,
        train_y,
        test_x,
        test_y,
    )
}

/// Training hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Passes over the training set.
    pub epochs: usize,
    /// Mini-batch size (the last batch of an epoch may be smaller).
    pub batch: usize,
    /// SGD learning rate (constant).
    pub lr: f32,
    /// SGD momentum (PyTorch's formulation, no dampening).
    pub momentum: f32,
    /// L2 weight decay (PyTorch's `weight_decay`, on weights and biases).
    pub weight_decay: f32,
    /// Hidden ReLU units; 0 trains softmax regression.
    pub hidden: usize,
    /// The seed of the initialization and of the shuffles (the split takes its own stream of
    /// it in [`load_digits`]).
    pub seed: u64,
    /// The kernel tier, or `None` for [`Kernels::active`].
    pub isa: Option<Isa>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            epochs: 20,
            batch: 32,
            lr: 0.03,
            momentum: 0.9,
            weight_decay: 3e-3,
            hidden: 0,
            seed: 0,
            isa: None,
        }
    }
}

/// One epoch's numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples (each batch's loss before its update).
    pub loss: f64,
    /// Training accuracy over the epoch (each batch's argmax before its update).
    pub train_acc: f64,
    /// Test accuracy after the epoch.
    pub test_acc: f64,
}

/// Receives progress while [`train`] runs; every method does nothing by default (`()` is the
/// silent observer).
pub trait Observer {
    /// Training starts: `batches` train steps in all.
    fn start(&mut self, batches: u64) {
        let _ = batches;
    }
    /// A train step finished with the batch's mean loss.
    fn batch(&mut self, epoch: usize, loss: f32) {
        let _ = (epoch, loss);
    }
    /// An epoch finished.
    fn epoch(&mut self, stats: &EpochStats) {
        let _ = stats;
    }
}

impl Observer for () {}

/// What [`train`] returns.
#[derive(Clone, Debug)]
pub struct Report {
    /// The tier that ran.
    pub isa: Isa,
    /// Per-epoch numbers.
    pub epochs: Vec<EpochStats>,
    /// Correct test predictions after the last epoch.
    pub test_correct: usize,
    /// Test samples.
    pub test_len: usize,
    /// Classes `C`.
    pub classes: usize,
    /// `[C, C]` counts: row = true class, column = predicted class.
    pub confusion: Vec<u64>,
    /// Time spent in train steps (hidden forward, ReLU, the output layer's step, the hidden
    /// update); batch gathering and evaluation are not counted.
    pub train_time: Duration,
    /// Train steps run.
    pub batches: u64,
    /// Samples trained on (epochs times training samples).
    pub samples: u64,
    /// GEMM flops of the train steps: `2 B D C` each for every forward, weight gradient and
    /// input gradient.
    pub flops: f64,
    /// Every parameter after training, in the order `W1, b1` (hidden layer, if any), `W, b`.
    pub params: Vec<f32>,
}

impl Report {
    /// Test accuracy after the last epoch.
    pub fn test_acc(&self) -> f64 {
        self.test_correct as f64 / self.test_len as f64
    }

    /// The sum of the parameters in f64, in order.
    pub fn checksum(&self) -> f64 {
        self.params.iter().map(|&v| f64::from(v)).sum()
    }

    /// FNV-1a (64 bit) of the parameters' f32 bits, little-endian.
    pub fn fnv1a(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in &self.params {
            for byte in v.to_bits().to_le_bytes() {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    /// Training samples per second of train-step time.
    pub fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.train_time.as_secs_f64().max(1e-12)
    }

    /// GEMM GFLOP/s over the train-step time.
    pub fn gflops(&self) -> f64 {
        self.flops / self.train_time.as_secs_f64().max(1e-12) / 1e9
    }
}

/// The hidden layer: `H = relu(A W1^T + b1)`.
struct Hidden {
    w: Vec<f32>,
    b: Vec<f32>,
    layout: MatrixLayout,
    opt: Sgd,
}

fn kerr(e: softmax_kernels::Error) -> String {
    format!("kernel error: {e}")
}

/// The kernel table for `isa` (`None`: [`Kernels::active`]).
///
/// # Errors
/// A message naming the tier and the tiers this CPU can run.
pub fn kernels_for(isa: Option<Isa>) -> Result<&'static Kernels, String> {
    match isa {
        None => Kernels::active().map_err(|e| e.to_string()),
        Some(isa) => Kernels::for_isa(isa).ok_or_else(|| {
            let avail: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
            format!(
                "this CPU cannot run the {isa} tier (available: {})",
                avail.join(", ")
            )
        }),
    }
}

/// Predicted classes of every sample of `x` (`[M, D]`) into `out`; `pre` is scratch.
fn predict_all(
    kernels: &Kernels,
    hidden: Option<&Hidden>,
    layer: &mut OutputLayer,
    x: &[f32],
    pre: &mut Vec<f32>,
    out: &mut [u32],
) -> Result<(), String> {
    match hidden {
        None => layer.predict(x, out).map_err(kerr),
        Some(h) => {
            pre.resize(out.len() * h.layout.rows, 0.0);
            kernels
                .linear_forward(x, &h.w, h.layout, Some(&h.b), pre)
                .map_err(kerr)?;
            pre.iter_mut().for_each(|v| *v = v.max(0.0));
            layer.predict(pre, out).map_err(kerr)
        }
    }
}

/// Trains on `data` with `cfg` in the current rayon pool, reporting progress to `obs`.
/// Deterministic: the same `cfg` and data give bit-identical results for any pool size.
///
/// # Errors
/// A message for a bad configuration, an unavailable tier, or a kernel error.
pub fn train(cfg: &Config, data: &Dataset, obs: &mut dyn Observer) -> Result<Report, String> {
    if cfg.epochs == 0 || cfg.batch == 0 {
        return Err("epochs and batch must be at least 1".into());
    }
    let kernels = kernels_for(cfg.isa)?;
    let (d, c) = (data.features, data.classes);
    let n = data.train_len();
    let sgd = SgdOptions::new(cfg.lr)
        .momentum(cfg.momentum)
        .weight_decay(cfg.weight_decay);
    // The output layer's inputs: the features, or the hidden units.
    let d_out = if cfg.hidden > 0 { cfg.hidden } else { d };
    let mut layer = OutputLayer::with_kernels(kernels, d_out, c, sgd).map_err(kerr)?;
    layer.init_xavier(stream_seed(cfg.seed, Stream::InitOutput));
    let mut hidden = if cfg.hidden > 0 {
        let h = cfg.hidden;
        let r = (6.0 / (d + h) as f64).sqrt();
        let mut rng = SplitMix64::new(stream_seed(cfg.seed, Stream::InitHidden));
        let w = (0..h * d)
            .map(|_| ((2.0 * rng.next_f64() - 1.0) * r) as f32)
            .collect();
        Some(Hidden {
            w,
            b: vec![0.0; h],
            layout: MatrixLayout::new(h, d),
            opt: kernels.sgd(sgd).map_err(kerr)?,
        })
    } else {
        None
    };

    let bmax = cfg.batch.min(n);
    let hw = cfg.hidden;
    let mut xb = vec![0.0f32; bmax * d];
    let mut yb = vec![0u32; bmax];
    let mut argmax = vec![0u32; bmax];
    let (mut pre, mut act, mut dh) = (
        vec![0.0f32; bmax * hw],
        vec![0.0f32; bmax * hw],
        vec![0.0f32; bmax * hw],
    );
    let mut eval_pre = Vec::new();
    let mut pred = vec![0u32; data.test_len()];
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(stream_seed(cfg.seed, Stream::Shuffle));
    let ce = CrossEntropyOptions::default();
    let batches_per_epoch = n.div_ceil(bmax);
    obs.start((batches_per_epoch * cfg.epochs) as u64);

    let mut epochs = Vec::with_capacity(cfg.epochs);
    let mut train_time = Duration::ZERO;
    let mut flops = 0.0f64;
    let mut test_correct = 0;
    for epoch in 1..=cfg.epochs {
        rng.shuffle(&mut order);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (batch, idx) in order.chunks(bmax).enumerate() {
            let b = idx.len();
            for (k, &i) in idx.iter().enumerate() {
                xb[k * d..(k + 1) * d].copy_from_slice(&data.train_x[i * d..(i + 1) * d]);
                yb[k] = data.train_y[i];
            }
            let (xb, yb) = (&xb[..b * d], &yb[..b]);
            let mut outs = CrossEntropyOutputs {
                argmax: Some(&mut argmax[..b]),
                ..Default::default()
            };
            let t0 = Instant::now();
            let stats = match hidden.as_mut() {
                None => layer
                    .train_step_with(xb, yb, cfg.lr, &ce, &mut outs, None)
                    .map_err(kerr)?,
                Some(h) => {
                    let (pre, act, dh) =
                        (&mut pre[..b * hw], &mut act[..b * hw], &mut dh[..b * hw]);
                    kernels
                        .linear_forward(xb, &h.w, h.layout, Some(&h.b), pre)
                        .map_err(kerr)?;
                    for (a, &p) in act.iter_mut().zip(pre.iter()) {
                        *a = p.max(0.0);
                    }
                    let stats = layer
                        .train_step_with(act, yb, cfg.lr, &ce, &mut outs, Some(dh))
                        .map_err(kerr)?;
                    // dh = dL/dh of the mean loss; Sgd::step takes per-sample errors and
                    // divides by B itself: pass B * dL/dpre, with ReLU's mask.
                    let scale = b as f32;
                    for (g, &p) in dh.iter_mut().zip(pre.iter()) {
                        *g = if p > 0.0 { *g * scale } else { 0.0 };
                    }
                    h.opt
                        .step(dh, xb, &mut h.w, h.layout, Some(&mut h.b))
                        .map_err(kerr)?;
                    stats
                }
            };
            train_time += t0.elapsed();
            let gemm = 2.0 * b as f64 * d_out as f64 * c as f64;
            flops += if hw > 0 {
                3.0 * gemm + 2.0 * (2.0 * b as f64 * d as f64 * hw as f64)
            } else {
                2.0 * gemm
            };
            if !stats.loss.is_finite() {
                // The step has already applied a non-finite gradient: every later number
                // would be NaN, so stop here rather than report a meaningless accuracy.
                return Err(format!(
                    "training diverged: the loss of batch {} of epoch {epoch} is {} (SGD lr {}, \
                     momentum {}); the weights or logits are no longer finite. Try a smaller --lr \
                     (the default is {})",
                    batch + 1,
                    stats.loss,
                    cfg.lr,
                    cfg.momentum,
                    Config::default().lr
                ));
            }
            loss_sum += stats.loss_f64 * b as f64;
            correct += stats.correct.unwrap_or(0);
            obs.batch(epoch, stats.loss);
        }
        predict_all(
            kernels,
            hidden.as_ref(),
            &mut layer,
            &data.test_x,
            &mut eval_pre,
            &mut pred,
        )?;
        test_correct = pred
            .iter()
            .zip(&data.test_y)
            .filter(|(p, t)| p == t)
            .count();
        let st = EpochStats {
            epoch,
            loss: loss_sum / n as f64,
            train_acc: correct as f64 / n as f64,
            test_acc: test_correct as f64 / data.test_len() as f64,
        };
        obs.epoch(&st);
        epochs.push(st);
    }

    let mut confusion = vec![0u64; c * c];
    for (&p, &t) in pred.iter().zip(&data.test_y) {
        confusion[t as usize * c + p as usize] += 1;
    }
    let mut params = Vec::new();
    if let Some(h) = &hidden {
        params.extend_from_slice(&h.w);
        params.extend_from_slice(&h.b);
    }
    params.extend_from_slice(&layer.weight);
    params.extend_from_slice(&layer.bias);
    Ok(Report {
        isa: kernels.isa(),
        epochs,
        test_correct,
        test_len: data.test_len(),
        classes: c,
        confusion,
        train_time,
        batches: (batches_per_epoch * cfg.epochs) as u64,
        samples: (n * cfg.epochs) as u64,
        flops,
        params,
    })
}
