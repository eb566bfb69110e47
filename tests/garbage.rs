//! "No panic reaches a caller": every public function, driven with random garbage.
//!
//! Each public function (the free functions, the `Kernels` methods on every available tier,
//! the `reference` functions, `OutputLayer`, `Sgd`, `SgdOptions`, `MatrixLayout`, `Isa`, the
//! option builders) is called at least [`CALLS`] times with random lengths, leading dimensions,
//! shapes and option values: `usize::MAX`-sized claims, products of dimensions that overflow,
//! `ld < cols`, mismatched slices, NaN / infinite / negative / huge options, out-of-range
//! labels of every label type. Each call runs inside `std::panic::catch_unwind`; the test fails
//! if any call panics (an abort would kill the test process, which fails it too). Results are
//! not checked beyond "returned": `Ok` or a typed `Err` (the fuzz targets and the other tests
//! check the values).
//!
//! Real allocations stay small: every slice has at most [`MAX_LEN`] floats, so a claim like
//! `rows * cols = usize::MAX` comes from the shape arguments (`cols`, `MatrixLayout`, `ld`,
//! `OutputLayer::new`'s sizes), never from a slice. `OutputLayer::new` allocates what its
//! shape says, so its shapes are either small (at most 4096 floats), or at least 2^50 floats
//! (4 PiB, beyond any x86-64 address space: the allocation fails at once and must come back as
//! an `Err`, not abort; `tests/fuzz_regressions.rs`, `output_layer_new_huge_shape_returns_an_error`),
//! or overflowing; a shape in between would allocate real memory, legitimately.
//!
//! Deterministic (fixed seeds); prints the call count of every function. Run it in release
//! (`cargo test --release --test garbage`): a few seconds; debug builds run a tenth of it.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once};

use softmax_kernels::{
    reference, AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, Isa, Kernels, Label,
    LinearCeOptions, LinearCeOutputs, Logits, MaskedRows, MatrixLayout, OutputLayer, Reduction,
    Sgd, SgdOptions, SoftmaxOptions, Targets,
};

/// Calls per public function (release builds).
const CALLS: u64 = if cfg!(debug_assertions) {
    10_000
} else {
    100_000
};

/// The longest slice any call gets.
const MAX_LEN: usize = 64;

// ---------------------------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------------------------

/// SplitMix64, and the garbage made from it.
struct G(u64);

const EDGE: [usize; 10] = [
    usize::MAX,
    usize::MAX - 1,
    usize::MAX / 2,
    usize::MAX / 3,
    isize::MAX as usize,
    isize::MAX as usize + 1,
    1 << 32,
    (1 << 32) + 1,
    1 << 62,
    (usize::MAX / 4) + 1,
];

const FLOATS: [f32; 16] = [
    f32::NAN,
    -f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    -f32::MAX,
    f32::MIN_POSITIVE,
    1e-45,
    -0.0,
    0.0,
    1.0,
    -1.0,
    0.5,
    1e30,
    -1e30,
    2.0,
];

impl G {
    fn new(seed: u64) -> G {
        G(seed ^ 0x5DEE_CE66_D1CE_F00D)
    }

    fn u(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.u() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.u() % 100 < percent
    }

    fn bool(&mut self) -> bool {
        self.u() & 1 == 1
    }

    /// A dimension claim: mostly small, sometimes 0, sometimes an edge value near `usize::MAX`.
    fn dim(&mut self) -> usize {
        match self.below(20) {
            0..=11 => 1 + self.below(8),
            12..=13 => 0,
            14..=16 => 9 + self.below(56),
            _ => EDGE[self.below(EDGE.len())],
        }
    }

    /// A slice length: `want` (when it fits) most of the time, `want ± 1`, or anything.
    fn len(&mut self, want: Option<usize>) -> usize {
        match want {
            Some(w) if w <= MAX_LEN && self.chance(75) => w,
            Some(w) if w < MAX_LEN && self.chance(50) => {
                if self.bool() {
                    w + 1
                } else {
                    w.saturating_sub(1)
                }
            }
            _ => self.below(MAX_LEN + 1),
        }
    }

    /// `rows * cols` if it exists and fits.
    fn len_of(&mut self, rows: usize, cols: usize) -> usize {
        self.len(rows.checked_mul(cols))
    }

    fn f(&mut self) -> f32 {
        match self.below(10) {
            0..=5 => (self.u() as i32) as f32 / (1u32 << 28) as f32,
            6..=7 => FLOATS[self.below(FLOATS.len())],
            _ => f32::from_bits(self.u() as u32),
        }
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }

    /// An option value: a plausible one or garbage.
    fn opt(&mut self, plausible: &[f32]) -> f32 {
        if self.chance(60) {
            plausible[self.below(plausible.len())]
        } else {
            self.f()
        }
    }

    fn i64(&mut self) -> i64 {
        match self.below(6) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -100,
            3 => -1,
            4 => self.u() as i64,
            _ => self.below(70) as i64,
        }
    }

    fn tier(&mut self) -> &'static Kernels {
        let av = Isa::available();
        Kernels::for_isa(av[self.below(av.len())]).unwrap()
    }

    fn layout(&mut self) -> MatrixLayout {
        let (rows, cols) = (self.dim(), self.dim());
        let ld = match self.below(6) {
            0..=2 => cols,
            3 => cols.saturating_add(self.below(4)),
            4 => cols.saturating_sub(1),
            _ => self.dim(),
        };
        MatrixLayout::new(rows, cols).with_ld(ld)
    }

    /// A slice length for a `[rows, cols]` matrix with leading dimension `ld`.
    fn len_layout(&mut self, l: MatrixLayout) -> usize {
        let full = l.rows.checked_mul(l.ld);
        let trimmed = if l.rows == 0 {
            Some(0)
        } else {
            (l.rows - 1)
                .checked_mul(l.ld)
                .and_then(|v| v.checked_add(l.cols))
        };
        let want = if self.bool() { full } else { trimmed };
        self.len(want)
    }

    fn softmax_opts(&mut self) -> SoftmaxOptions {
        SoftmaxOptions::default().masked_rows(if self.bool() {
            MaskedRows::Zero
        } else {
            MaskedRows::Nan
        })
    }

    fn sgd_opts(&mut self) -> SgdOptions {
        let mut o = SgdOptions::new(self.opt(&[0.1, 0.0, 1.0]));
        if self.bool() {
            o = o.momentum(self.opt(&[0.0, 0.9, 0.5]));
        }
        if self.chance(30) {
            o = o.dampening(self.opt(&[0.0, 0.1]));
        }
        if self.chance(30) {
            o = o.weight_decay(self.opt(&[0.0, 1e-4]));
        }
        if self.chance(30) {
            o = o.nesterov(self.bool());
        }
        o
    }
}

/// Labels of some type, mostly in `0..cols`.
fn labels<L: From<u8> + Copy>(g: &mut G, n: usize, cols: usize, wrap: fn(i64) -> L) -> Vec<L> {
    (0..n)
        .map(|_| {
            if g.chance(80) && cols > 0 {
                wrap((g.below(cols.min(1 << 20))) as i64)
            } else {
                wrap(g.i64())
            }
        })
        .collect()
}

/// Runs `$body` with `$l` bound to a `Vec` of labels of a random `Label` type.
macro_rules! with_labels {
    ($g:expr, $n:expr, $cols:expr, |$l:ident| $body:expr) => {{
        let (n, cols) = ($n, $cols);
        match $g.below(8) {
            0 => {
                let $l = labels::<i64>($g, n, cols, |v| v);
                $body
            }
            1 => {
                let $l = labels::<i32>($g, n, cols, |v| v as i32);
                $body
            }
            2 => {
                let $l = labels::<i16>($g, n, cols, |v| v as i16);
                $body
            }
            3 => {
                let $l = labels::<u64>($g, n, cols, |v| v as u64);
                $body
            }
            4 => {
                let $l = labels::<u32>($g, n, cols, |v| v as u32);
                $body
            }
            5 => {
                let $l = labels::<u16>($g, n, cols, |v| v as u16);
                $body
            }
            6 => {
                let $l = labels::<u8>($g, n, cols, |v| v as u8);
                $body
            }
            _ => {
                let $l = labels::<usize>($g, n, cols, |v| v as usize);
                $body
            }
        }
    }};
}

/// Garbage cross-entropy options over the given weight and row-scale buffers.
fn ce_opts<'a>(g: &mut G, w: &'a [f32], rs: &'a [f32], cols: usize) -> CrossEntropyOptions<'a> {
    let mut o = CrossEntropyOptions::default()
        .reduction([Reduction::Mean, Reduction::Sum, Reduction::None][g.below(3)]);
    if g.chance(30) {
        o = o.weight(w);
    }
    o = o.ignore_index(match g.below(4) {
        0 => None,
        1 => Some(-100),
        2 => Some(g.below(cols.clamp(1, 1 << 20)) as i64),
        _ => Some(g.i64()),
    });
    if g.chance(40) {
        o = o.label_smoothing(g.opt(&[0.0, 0.1, 1.0]));
    }
    if g.chance(30) {
        o = o.z_loss(g.opt(&[0.0, 1e-4]));
    }
    if g.chance(30) {
        o = o.softcap(g.opt(&[30.0, 5.0]));
    }
    if g.bool() {
        o = o.all_ignored(AllIgnored::Zero);
    }
    if g.chance(30) {
        o = o.scale(g.opt(&[1.0, 0.5]));
    }
    if g.chance(30) {
        o = o.row_scale(rs);
    }
    o
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

/// Where the panic hook records panic locations (the payload only has the message).
static LOCATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn quiet_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let loc = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut v) = LOCATIONS.lock() {
                if v.len() < 100 {
                    v.push(loc);
                }
            }
        }));
    });
}

fn message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string payload)".into())
}

/// What a call returned, for the `Ok` counts (a call that returns no `Result` counts as `Ok`).
trait Outcome {
    fn ok(&self) -> bool {
        true
    }
}

impl<T, E> Outcome for Result<T, E> {
    fn ok(&self) -> bool {
        self.is_ok()
    }
}

macro_rules! plain_outcome {
    ($($t:ty),*) => {$(impl Outcome for $t {})*};
}
plain_outcome!(
    (),
    bool,
    u64,
    usize,
    f32,
    &'static str,
    String,
    Isa,
    Vec<Isa>,
    Option<Isa>,
    Option<usize>,
    (usize, usize),
    MatrixLayout,
    SgdOptions,
    SoftmaxOptions
);
impl Outcome for CrossEntropyOptions<'_> {}
impl Outcome for LinearCeOptions<'_> {}

/// Counts calls (and `Ok` results) and collects panics.
#[derive(Default)]
struct Driver {
    calls: BTreeMap<&'static str, u64>,
    oks: BTreeMap<&'static str, u64>,
    panics: Vec<String>,
}

impl Driver {
    /// One call of `name`, inside `catch_unwind`.
    fn call<R: Outcome>(&mut self, name: &'static str, f: impl FnOnce() -> R) -> Option<R> {
        *self.calls.entry(name).or_default() += 1;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => {
                *self.oks.entry(name).or_default() += r.ok() as u64;
                Some(r)
            }
            Err(p) => {
                if self.panics.len() < 20 {
                    let loc = LOCATIONS
                        .lock()
                        .map(|v| v.last().cloned().unwrap_or_default())
                        .unwrap_or_default();
                    self.panics
                        .push(format!("{name}: panicked at {loc}: {}", message(&*p)));
                } else {
                    self.panics.push(String::new());
                }
                None
            }
        }
    }

    /// Runs `body` until every function it calls has been called [`CALLS`] times (it must
    /// call each of them at least once per round).
    fn rounds(&mut self, mut body: impl FnMut(&mut Driver)) {
        loop {
            body(self);
            if self.calls.values().all(|&n| n >= CALLS) {
                break;
            }
        }
    }

    fn finish(self, family: &str) {
        let total: u64 = self.calls.values().sum();
        println!(
            "{family}: {} functions, {total} calls (calls, of which Ok, function):",
            self.calls.len()
        );
        for (name, n) in &self.calls {
            let ok = self.oks.get(name).copied().unwrap_or(0);
            println!("  {n:>9} {ok:>9}  {name}");
        }
        let n = self.panics.len();
        let shown: Vec<&String> = self.panics.iter().filter(|s| !s.is_empty()).collect();
        assert!(
            n == 0,
            "{family}: {n} call(s) panicked; the first ones:\n{}",
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The families
// ---------------------------------------------------------------------------------------------

/// Garbage for a softmax-family call: `(x, out, cols)`, `out` sized for rows or elements.
fn sm_args(g: &mut G, per_row: bool) -> (Vec<f32>, Vec<f32>, usize) {
    let cols = g.dim();
    let rows = g.below(9);
    let n = g.len_of(rows, cols);
    let x = g.vec(n);
    let want = if per_row {
        n.checked_div(cols)
    } else {
        Some(n)
    };
    let m = g.len(want);
    (x, g.vec(m), cols)
}

#[test]
fn softmax_family_never_panics() {
    quiet_hook();
    let mut g = G::new(1);
    let mut d = Driver::default();
    d.rounds(|d| {
        // Free functions (the active tier).
        let (x, mut y, c) = sm_args(&mut g, false);
        d.call("softmax", || softmax_kernels::softmax(&x, &mut y, c));
        let o = g.softmax_opts();
        d.call("softmax_with", || {
            softmax_kernels::softmax_with(&x, &mut y, c, o)
        });
        let (mut x, _, c) = sm_args(&mut g, false);
        d.call("softmax_inplace", || {
            softmax_kernels::softmax_inplace(&mut x, c)
        });
        d.call("softmax_inplace_with", || {
            softmax_kernels::softmax_inplace_with(&mut x, c, o)
        });
        let (x, mut y, c) = sm_args(&mut g, false);
        d.call("log_softmax", || {
            softmax_kernels::log_softmax(&x, &mut y, c)
        });
        d.call("log_softmax_with", || {
            softmax_kernels::log_softmax_with(&x, &mut y, c, o)
        });
        let (mut x, _, c) = sm_args(&mut g, false);
        d.call("log_softmax_inplace", || {
            softmax_kernels::log_softmax_inplace(&mut x, c)
        });
        d.call("log_softmax_inplace_with", || {
            softmax_kernels::log_softmax_inplace_with(&mut x, c, o)
        });
        let (x, mut y, c) = sm_args(&mut g, true);
        d.call("logsumexp", || softmax_kernels::logsumexp(&x, &mut y, c));
        let (y, mut dx, c) = sm_args(&mut g, false);
        let dy = {
            let n = g.len(Some(y.len()));
            g.vec(n)
        };
        d.call("softmax_backward", || {
            softmax_kernels::softmax_backward(&y, &dy, &mut dx, c)
        });
        d.call("log_softmax_backward", || {
            softmax_kernels::log_softmax_backward(&y, &dy, &mut dx, c)
        });

        // Kernels methods on a random tier.
        let k = g.tier();
        let (x, mut y, c) = sm_args(&mut g, false);
        let o = g.softmax_opts();
        d.call("Kernels::softmax", || k.softmax(&x, &mut y, c));
        d.call("Kernels::softmax_with", || k.softmax_with(&x, &mut y, c, o));
        d.call("Kernels::log_softmax", || k.log_softmax(&x, &mut y, c));
        d.call("Kernels::log_softmax_with", || {
            k.log_softmax_with(&x, &mut y, c, o)
        });
        let (mut x, _, c) = sm_args(&mut g, false);
        d.call("Kernels::softmax_inplace", || k.softmax_inplace(&mut x, c));
        d.call("Kernels::softmax_inplace_with", || {
            k.softmax_inplace_with(&mut x, c, o)
        });
        d.call("Kernels::log_softmax_inplace", || {
            k.log_softmax_inplace(&mut x, c)
        });
        d.call("Kernels::log_softmax_inplace_with", || {
            k.log_softmax_inplace_with(&mut x, c, o)
        });
        let (x, mut y, c) = sm_args(&mut g, true);
        d.call("Kernels::logsumexp", || k.logsumexp(&x, &mut y, c));
        let (y, mut dx, c) = sm_args(&mut g, false);
        let dy = {
            let n = g.len(Some(y.len()));
            g.vec(n)
        };
        d.call("Kernels::softmax_backward", || {
            k.softmax_backward(&y, &dy, &mut dx, c)
        });
        d.call("Kernels::log_softmax_backward", || {
            k.log_softmax_backward(&y, &dy, &mut dx, c)
        });
        let x = {
            let n = g.len(None);
            g.vec(n)
        };
        let mut y = vec![0.0; g.len(Some(x.len()))];
        d.call("Kernels::exp", || k.exp(&x, &mut y));
        d.call("Kernels::exp_nonpos", || k.exp_nonpos(&x, &mut y));

        // The reference.
        let (x, mut y, c) = sm_args(&mut g, false);
        d.call("reference::softmax", || reference::softmax(&x, &mut y, c));
        d.call("reference::softmax_with", || {
            reference::softmax_with(&x, &mut y, c, o)
        });
        d.call("reference::log_softmax", || {
            reference::log_softmax(&x, &mut y, c)
        });
        d.call("reference::log_softmax_with", || {
            reference::log_softmax_with(&x, &mut y, c, o)
        });
        let (x, mut y, c) = sm_args(&mut g, true);
        d.call("reference::logsumexp", || {
            reference::logsumexp(&x, &mut y, c)
        });
        let (y, mut dx, c) = sm_args(&mut g, false);
        let dy = {
            let n = g.len(Some(y.len()));
            g.vec(n)
        };
        d.call("reference::softmax_backward", || {
            reference::softmax_backward(&y, &dy, &mut dx, c)
        });
        d.call("reference::log_softmax_backward", || {
            reference::log_softmax_backward(&y, &dy, &mut dx, c)
        });
        let v = g.f();
        d.call("reference::exp", || reference::exp(v));
    });
    d.finish("softmax family");
}

/// One garbage cross-entropy call of `name` through `f`.
fn ce_round(g: &mut G, d: &mut Driver, k: &'static Kernels, free: bool) {
    let cols = g.dim();
    let rows = g.below(9);
    let n = g.len_of(rows, cols);
    let x = g.vec(n);
    let rows_seen = n.checked_div(cols).unwrap_or(rows);
    let wl = g.len(Some(cols));
    let w = g.vec(wl);
    let rl = g.len(Some(rows_seen));
    let rs = g.vec(rl);
    let o = ce_opts(g, &w, &rs, cols);
    let gl = g.len(Some(n));
    let mut grad = vec![0.0f32; gl];
    let pl = g.len(Some(n));
    let probs = g.vec(pl);
    let tl = g.len(Some(rows_seen));
    with_labels!(g, tl, cols, |t| {
        let mut xi = x.clone();
        if free {
            d.call("cross_entropy", || {
                softmax_kernels::cross_entropy(&x, &t, cols, &o)
            });
            d.call("cross_entropy_fwd_bwd", || {
                softmax_kernels::cross_entropy_fwd_bwd(&x, &t, &mut grad, cols, &o)
            });
            d.call("cross_entropy_fwd_bwd_inplace", || {
                softmax_kernels::cross_entropy_fwd_bwd_inplace(&mut xi, &t, cols, &o)
            });
        } else {
            d.call("Kernels::cross_entropy", || {
                k.cross_entropy(&x, &t, cols, &o)
            });
            d.call("Kernels::cross_entropy_fwd_bwd", || {
                k.cross_entropy_fwd_bwd(&x, &t, &mut grad, cols, &o)
            });
            d.call("Kernels::cross_entropy_fwd_bwd_inplace", || {
                k.cross_entropy_fwd_bwd_inplace(&mut xi, &t, cols, &o)
            });
        }
        ext_call(g, d, k, free, &x, Targets::Classes(&t), cols, &o, rows_seen);
    });
    let mut xi = x.clone();
    if free {
        d.call("cross_entropy_probs", || {
            softmax_kernels::cross_entropy_probs(&x, &probs, cols, &o)
        });
        d.call("cross_entropy_probs_fwd_bwd", || {
            softmax_kernels::cross_entropy_probs_fwd_bwd(&x, &probs, &mut grad, cols, &o)
        });
    } else {
        d.call("Kernels::cross_entropy_probs", || {
            k.cross_entropy_probs(&x, &probs, cols, &o)
        });
        d.call("Kernels::cross_entropy_probs_fwd_bwd", || {
            k.cross_entropy_probs_fwd_bwd(&x, &probs, &mut grad, cols, &o)
        });
        d.call("Kernels::cross_entropy_probs_fwd_bwd_inplace", || {
            k.cross_entropy_probs_fwd_bwd_inplace(&mut xi, &probs, cols, &o)
        });
    }
    ext_call(
        g,
        d,
        k,
        free,
        &x,
        Targets::<i64>::Probs(&probs),
        cols,
        &o,
        rows_seen,
    );
}

/// `cross_entropy_with` with garbage outputs and a random `Logits` kind.
#[allow(clippy::too_many_arguments)]
fn ext_call<L: Label>(
    g: &mut G,
    d: &mut Driver,
    k: &'static Kernels,
    free: bool,
    x: &[f32],
    t: Targets<'_, L>,
    cols: usize,
    o: &CrossEntropyOptions<'_>,
    rows: usize,
) {
    let mut rl = vec![0.0f32; g.len(Some(rows))];
    let mut ls = vec![0.0f32; g.len(Some(rows))];
    let mut am = vec![0u32; g.len(Some(rows))];
    let mut out = CrossEntropyOutputs {
        row_loss: g.chance(60).then_some(&mut rl[..]),
        lse: g.chance(40).then_some(&mut ls[..]),
        argmax: g.chance(40).then_some(&mut am[..]),
    };
    let mut xi = x.to_vec();
    let mut grad = vec![0.0f32; g.len(Some(x.len()))];
    let logits = match g.below(3) {
        0 => Logits::Read(x),
        1 => Logits::Grad(x, &mut grad),
        _ => Logits::InPlace(&mut xi),
    };
    if free {
        d.call("cross_entropy_with", || {
            softmax_kernels::cross_entropy_with(logits, t, cols, o, &mut out)
        });
    } else {
        d.call("Kernels::cross_entropy_with", || {
            k.cross_entropy_with(logits, t, cols, o, &mut out)
        });
    }
}

#[test]
fn cross_entropy_family_never_panics() {
    quiet_hook();
    let mut g = G::new(2);
    let mut d = Driver::default();
    d.rounds(|d| {
        let k = g.tier();
        ce_round(&mut g, d, k, true);
        ce_round(&mut g, d, k, false);
        // The option builders.
        let v = g.f();
        d.call("CrossEntropyOptions builders", || {
            CrossEntropyOptions::default()
                .reduction(Reduction::Sum)
                .label_smoothing(v)
                .z_loss(v)
                .softcap(v)
                .scale(v)
                .all_ignored(AllIgnored::Nan)
                .ignore_index(None)
        });
    });
    d.finish("cross-entropy family");
}

/// Garbage for the batch operands of `layout` (`[B, C]` and `[B, D]`).
fn batch(g: &mut G, l: MatrixLayout) -> (Vec<f32>, Vec<f32>) {
    let b = g.below(12);
    let n1 = g.len_of(b, l.rows);
    let n2 = g.len_of(b, l.cols);
    (g.vec(n1), g.vec(n2))
}

fn linear_round(g: &mut G, d: &mut Driver, k: &'static Kernels, free: bool) {
    macro_rules! call {
        ($name:literal, $free:expr, $method:expr) => {
            if free {
                d.call($name, || $free);
            } else {
                d.call(concat!("Kernels::", $name), || $method);
            }
        };
    }
    let alpha = g.opt(&[1.0, 0.0, -0.5]);
    let beta = g.opt(&[0.0, 1.0, 0.5]);
    // rank1_update: C, D from x, y; ld garbage.
    let (c, dd) = (g.len(None), g.len(None));
    let (x, y) = (g.vec(c.min(16)), g.vec(dd.min(16)));
    let ld = match g.below(4) {
        0 => y.len(),
        1 => g.dim(),
        2 => y.len().saturating_sub(1),
        _ => y.len() + g.below(3),
    };
    let wl = g.len_layout(MatrixLayout::new(x.len(), y.len()).with_ld(ld));
    let mut w = g.vec(wl);
    call!(
        "rank1_update",
        softmax_kernels::rank1_update(
            alpha,
            &x,
            &y,
            &mut w,
            MatrixLayout::new(x.len(), y.len()).with_ld(ld)
        ),
        k.rank1_update(
            alpha,
            &x,
            &y,
            &mut w,
            MatrixLayout::new(x.len(), y.len()).with_ld(ld)
        )
    );
    let l = g.layout();
    let (delta, a) = batch(g, l);
    let wl = g.len_layout(l);
    let mut w = g.vec(wl);
    call!(
        "rank_k_update",
        softmax_kernels::rank_k_update(alpha, &delta, &a, &mut w, l),
        k.rank_k_update(alpha, &delta, &a, &mut w, l)
    );
    call!(
        "weight_grad",
        softmax_kernels::weight_grad(alpha, &delta, &a, beta, &mut w, l),
        k.weight_grad(alpha, &delta, &a, beta, &mut w, l)
    );
    let mut db = {
        let n = g.len(Some(l.rows));
        g.vec(n)
    };
    call!(
        "bias_grad",
        softmax_kernels::bias_grad(alpha, &delta, beta, &mut db),
        k.bias_grad(alpha, &delta, beta, &mut db)
    );
    let mut bias = {
        let n = g.len(Some(l.rows));
        g.vec(n)
    };
    let with_bias = g.bool();
    let lr = g.opt(&[0.1, 0.0, 1.0]);
    call!(
        "sgd_step",
        softmax_kernels::sgd_step(
            lr,
            &delta,
            &a,
            &mut w,
            l,
            with_bias.then_some(&mut bias[..])
        ),
        k.sgd_step(
            lr,
            &delta,
            &a,
            &mut w,
            l,
            with_bias.then_some(&mut bias[..])
        )
    );
    // Forward: a [B, D], z [B, C].
    let b = g.below(8);
    let an = g.len_of(b, l.cols);
    let a = g.vec(an);
    let mut z = {
        let n = g.len_of(b, l.rows);
        g.vec(n)
    };
    let bv = {
        let n = g.len(Some(l.rows));
        g.vec(n)
    };
    let with_b = g.bool();
    call!(
        "linear_forward",
        softmax_kernels::linear_forward(&a, &w, l, with_b.then_some(&bv[..]), &mut z),
        k.linear_forward(&a, &w, l, with_b.then_some(&bv[..]), &mut z)
    );
    let mut da = {
        let n = g.len_of(b, l.cols);
        g.vec(n)
    };
    call!(
        "linear_backward_input",
        softmax_kernels::linear_backward_input(&z, &w, l, &mut da),
        k.linear_backward_input(&z, &w, l, &mut da)
    );
}

#[test]
fn linear_family_never_panics() {
    quiet_hook();
    let mut g = G::new(3);
    let mut d = Driver::default();
    d.rounds(|d| {
        let k = g.tier();
        linear_round(&mut g, d, k, true);
        linear_round(&mut g, d, k, false);
        d.call("Kernels::rank_k_max", || k.rank_k_max());
        let (r, c, ld) = (g.dim(), g.dim(), g.dim());
        d.call("MatrixLayout::new / with_ld", || {
            MatrixLayout::new(r, c).with_ld(ld)
        });
    });
    d.finish("linear family");
}

/// A chunk size (`chunk_rows`, `chunk_classes`, `chunk_bytes`): 0, small, or at least 2^50
/// (a chunk that size cannot be allocated: an `Err`, not an abort); never in between, which
/// would allocate real memory (a chunk of logits is what the caller asked for).
fn chunk_size(g: &mut G) -> usize {
    match g.below(10) {
        0 => 0,
        1..=6 => 1 + g.below(70),
        _ => loop {
            let v = EDGE[g.below(EDGE.len())];
            if v >= 1 << 50 {
                break v;
            }
        },
    }
}

/// A `W` layout for the fused linear cross-entropy. Its work is `B * C * D`, so `C` stays
/// below 4096 (`g.dim()` without the edge values; `D` and `ld` may be anything, their
/// slices are at most [`MAX_LEN`] floats). `C` beyond any real size (`D = 0`, no rows) is
/// `tests/linear_ce.rs`'s `huge_class_count_returns`.
fn lce_layout(g: &mut G) -> MatrixLayout {
    loop {
        let l = g.layout();
        if l.rows <= 4096 {
            return l;
        }
    }
}

/// Garbage chunking and accumulation on top of `ce`.
fn lce_opts<'a>(g: &mut G, ce: CrossEntropyOptions<'a>) -> LinearCeOptions<'a> {
    let mut o = LinearCeOptions::new(ce);
    if g.chance(40) {
        o = o.chunk_rows(chunk_size(g));
    }
    if g.chance(40) {
        o = o.chunk_classes(chunk_size(g));
    }
    if g.chance(40) {
        o = o.chunk_bytes(chunk_size(g));
    }
    if g.chance(30) {
        o = o.accumulate(true);
    }
    o
}

/// One garbage round of `linear_cross_entropy` (free or on `k`) and, on `k`,
/// `linear_cross_entropy_step`.
fn lce_round(g: &mut G, d: &mut Driver, k: &'static Kernels, free: bool) {
    let l = lce_layout(g);
    let wl = g.len_layout(l);
    let w = g.vec(wl);
    let b = g.below(9);
    let a = {
        let n = g.len_of(b, l.cols);
        g.vec(n)
    };
    // Half the rounds give every per-class and per-row slice its right length (when that is
    // at most MAX_LEN), so that more calls get past the checks.
    let exact = g.bool();
    let n_of = |g: &mut G, want: usize| {
        if exact && want <= MAX_LEN {
            want
        } else {
            g.len(Some(want))
        }
    };
    let bias = {
        let n = n_of(g, l.rows);
        g.vec(n)
    };
    let with_bias = g.bool();
    let cw = {
        let n = n_of(g, l.rows);
        g.vec(n)
    };
    let rs = {
        let n = n_of(g, b);
        g.vec(n)
    };
    let ce = ce_opts(g, &cw, &rs, l.rows);
    let lo = lce_opts(g, ce);
    let mut da = vec![0.0f32; n_of(g, a.len())];
    let mut dw = vec![0.0f32; if exact { wl } else { g.len_layout(l) }];
    let mut db = vec![0.0f32; n_of(g, l.rows)];
    let mut rl = vec![0.0f32; n_of(g, b)];
    let mut ls = vec![0.0f32; n_of(g, b)];
    let mut am = vec![0u32; n_of(g, b)];
    let want = [
        g.bool(),
        g.bool(),
        g.bool(),
        g.chance(60),
        g.chance(40),
        g.chance(40),
    ];
    let probs = {
        let n = g.len_of(b, l.rows);
        g.vec(n)
    };
    let use_probs = g.chance(25);
    let tl = n_of(g, b);
    with_labels!(g, tl, l.rows, |t| {
        let mut out = LinearCeOutputs {
            da: want[0].then_some(&mut da[..]),
            dw: want[1].then_some(&mut dw[..]),
            db: want[2].then_some(&mut db[..]),
            ce: CrossEntropyOutputs {
                row_loss: want[3].then_some(&mut rl[..]),
                lse: want[4].then_some(&mut ls[..]),
                argmax: want[5].then_some(&mut am[..]),
            },
        };
        let targets = if use_probs {
            Targets::Probs(&probs)
        } else {
            Targets::Classes(&t)
        };
        let bv = with_bias.then_some(&bias[..]);
        if free {
            d.call("linear_cross_entropy", || {
                softmax_kernels::linear_cross_entropy(&a, &w, l, bv, targets, &lo, &mut out)
            });
        } else {
            d.call("Kernels::linear_cross_entropy", || {
                k.linear_cross_entropy(&a, &w, l, bv, targets, &lo, &mut out)
            });
        }
    });
    if free {
        return;
    }
    // The step, with an optimizer on this tier (a valid one when the garbage options fail).
    let so = g.sgd_opts();
    let mut opt = k
        .sgd(so)
        .unwrap_or_else(|_| k.sgd(SgdOptions::new(0.1).momentum(0.9)).unwrap());
    let mut w = w;
    let mut bias = bias;
    let with_da = g.bool();
    let tl = g.len(Some(b));
    with_labels!(g, tl, l.rows, |t| {
        for _ in 0..2 {
            d.call("Kernels::linear_cross_entropy_step", || {
                k.linear_cross_entropy_step(
                    &a,
                    &mut w,
                    l,
                    with_bias.then_some(&mut bias[..]),
                    Targets::Classes(&t),
                    &lo,
                    &mut opt,
                    with_da.then_some(&mut da[..]),
                )
            });
        }
    });
}

#[test]
fn linear_cross_entropy_never_panics() {
    quiet_hook();
    let mut g = G::new(6);
    let mut d = Driver::default();
    d.rounds(|d| {
        let k = g.tier();
        lce_round(&mut g, d, k, true);
        lce_round(&mut g, d, k, false);
        let (r, c, n) = (chunk_size(&mut g), chunk_size(&mut g), chunk_size(&mut g));
        let acc = g.bool();
        d.call("LinearCeOptions builders", || {
            LinearCeOptions::default()
                .chunk_rows(r)
                .chunk_classes(c)
                .chunk_bytes(n)
                .accumulate(acc)
        });
    });
    d.finish("fused linear cross-entropy");
}

/// `OutputLayer` sizes: small, or too large for any address space (2^50 floats and up, or
/// overflowing); never in between (see the module docs).
fn layer_dims(g: &mut G) -> (usize, usize) {
    loop {
        let (i, c) = match g.below(20) {
            0..=16 => (g.below(7), g.below(7)),
            17 => (1 << (25 + g.below(8)), 1 << (25 + g.below(8))),
            _ => (g.dim(), g.dim()),
        };
        match i.checked_mul(c) {
            Some(n) if n > 4096 && n < 1 << 50 => continue,
            _ => return (i, c),
        }
    }
}

#[test]
fn output_layer_and_sgd_never_panic() {
    quiet_hook();
    let mut g = G::new(4);
    let mut d = Driver::default();
    d.rounds(|d| {
        let k = g.tier();
        let (inputs, classes) = layer_dims(&mut g);
        let so = g.sgd_opts();
        d.call("OutputLayer::new", || OutputLayer::new(inputs, classes, so));
        let (inputs, classes) = layer_dims(&mut g);
        let so = g.sgd_opts();
        let layer = d
            .call("OutputLayer::with_kernels", || {
                OutputLayer::with_kernels(k, inputs, classes, so)
            })
            .and_then(|r| r.ok());
        // The methods need a layer; make a small valid one when the garbage one failed.
        let mut layer = layer.unwrap_or_else(|| {
            OutputLayer::with_kernels(k, 1 + g.below(5), 1 + g.below(5), SgdOptions::new(0.1))
                .unwrap()
        });
        let seed = g.u();
        d.call("OutputLayer::init_xavier", || layer.init_xavier(seed));
        d.call("OutputLayer::shape", || layer.shape());
        d.call("OutputLayer::layout", || layer.layout());
        d.call("OutputLayer::optimizer", || layer.optimizer().steps());
        let (inp, cls) = layer.shape();
        let b = g.below(6);
        let a = {
            let n = g.len_of(b, inp);
            g.vec(n)
        };
        let mut z = vec![0.0; g.len_of(b, cls)];
        d.call("OutputLayer::forward", || layer.forward(&a, &mut z));
        let mut out = vec![0u32; g.len(Some(b))];
        d.call("OutputLayer::predict", || layer.predict(&a, &mut out));
        let lr = g.opt(&[0.1, 0.0, 1.0]);
        let tl = g.len(Some(b));
        with_labels!(&mut g, tl, cls, |t| {
            d.call("OutputLayer::train_step", || layer.train_step(&a, &t, lr));
        });
        let w = {
            let n = g.len(Some(cls));
            g.vec(n)
        };
        let rs = {
            let n = g.len(Some(b));
            g.vec(n)
        };
        let o = ce_opts(&mut g, &w, &rs, cls);
        let mut da = vec![0.0; g.len(Some(a.len()))];
        let with_da = g.bool();
        let mut rl = vec![0.0f32; g.len(Some(b))];
        let mut am = vec![0u32; g.len(Some(b))];
        let mut outs = CrossEntropyOutputs {
            row_loss: g.bool().then_some(&mut rl[..]),
            lse: None,
            argmax: g.bool().then_some(&mut am[..]),
        };
        let tl = g.len(Some(b));
        with_labels!(&mut g, tl, cls, |t| {
            d.call("OutputLayer::train_step_with", || {
                layer.train_step_with(&a, &t, lr, &o, &mut outs, with_da.then_some(&mut da[..]))
            });
        });

        // Sgd: a fresh optimizer (on the active tier or a chosen one), then garbage steps.
        let so = g.sgd_opts();
        d.call("SgdOptions::validate", || so.validate());
        let v = g.f();
        d.call("SgdOptions builders", || {
            SgdOptions::default()
                .lr(v)
                .momentum(v)
                .dampening(v)
                .weight_decay(v)
                .nesterov(true)
        });
        let made = if g.bool() {
            d.call("Sgd::new", || Sgd::new(so))
        } else {
            d.call("Kernels::sgd", || k.sgd(so))
        };
        let mut opt = match made.and_then(|r| r.ok()) {
            Some(o) => o,
            None => {
                // Make sure both constructors count every round.
                let so2 = SgdOptions::new(0.1).momentum(if g.bool() { 0.9 } else { 0.0 });
                d.call("Sgd::new", || Sgd::new(so2));
                d.call("Kernels::sgd", || k.sgd(so2)).unwrap().unwrap()
            }
        };
        for _ in 0..1 + g.below(3) {
            let l = if g.chance(70) {
                let (r, c) = (g.below(6), g.below(6));
                MatrixLayout::new(r, c).with_ld(c + g.below(2))
            } else {
                g.layout()
            };
            let wl = g.len_layout(l);
            let mut w = g.vec(wl);
            let (delta, a) = batch(&mut g, l);
            let mut bias = {
                let n = g.len(Some(l.rows));
                g.vec(n)
            };
            let with_bias = g.bool();
            d.call("Sgd::step", || {
                opt.step(&delta, &a, &mut w, l, with_bias.then_some(&mut bias[..]))
            });
            let grad = {
                let n = g.len_of(l.rows, l.cols);
                g.vec(n)
            };
            d.call("Sgd::apply_grad", || opt.apply_grad(&mut w, l, &grad));
            let bg = {
                let n = g.len(Some(bias.len()));
                g.vec(n)
            };
            d.call("Sgd::apply_bias_grad", || {
                opt.apply_bias_grad(&mut bias, &bg)
            });
            let lr = g.f();
            d.call("Sgd::set_lr", || opt.set_lr(lr));
            d.call("Sgd::options", || *opt.options());
            d.call("Sgd::steps", || opt.steps());
            d.call("Sgd::velocity", || opt.velocity().map(|v| v.len()));
            d.call("Sgd::bias_velocity", || {
                opt.bias_velocity().map(|v| v.len())
            });
            if g.chance(20) {
                d.call("Sgd::reset", || opt.reset());
            }
        }
        d.call("Sgd::reset", || opt.reset());
    });
    d.finish("OutputLayer and Sgd");
}

#[test]
fn dispatch_never_panics() {
    quiet_hook();
    let mut g = G::new(5);
    let mut d = Driver::default();
    let names = [
        "scalar", "PORTABLE", " avx2 ", "avx512", "", "avx", "neon", "Scalar\0",
    ];
    d.rounds(|d| {
        let s = if g.bool() {
            names[g.below(names.len())].to_string()
        } else {
            let n = g.below(12);
            let bytes: Vec<u8> = (0..n).map(|_| g.u() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        d.call("Isa::from_str", || s.parse::<Isa>());
        let isa = Isa::ALL[g.below(4)];
        d.call("Isa::name", || isa.name());
        d.call("Isa::is_available", || isa.is_available());
        d.call("Isa::available", Isa::available);
        d.call("Isa::best", Isa::best);
        d.call("Isa Display", || isa.to_string());
        d.call("Kernels::for_isa", || {
            Kernels::for_isa(isa).map(|k| k.isa())
        });
        d.call("Kernels::best", || Kernels::best().isa());
        d.call("Kernels::active", || Kernels::active().map(|k| k.isa()));
        d.call("Kernels::isa", || g.tier().isa());
        let o = g.softmax_opts();
        d.call("SoftmaxOptions::masked_rows", || {
            o.masked_rows(MaskedRows::Zero)
        });
    });
    d.finish("dispatch and options");
}
