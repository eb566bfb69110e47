//! The bit-for-bit record of the row kernels' outputs (issue 17's "same bits" constraint).
//!
//! For every tier this CPU runs, a sweep over shapes (1..=200 columns, every width around the
//! lane counts, and 1000, 32000 and 128256; 1 to 70 rows), option sets, in place and not,
//! hashes every output the softmax family and the cross-entropy produce (values, losses in f32
//! and f64, logsumexp, argmax, counts) into one FNV-1a hash per family. The hashes are
//! compared with `tests/data/bits_sweep.txt`, keyed by target architecture and tier: a
//! restructuring of the kernels must leave them unchanged, and a change that moves a bit on
//! purpose must say which hashes changed and why (in its commit), then record the new ones
//! with `SOFTMAX_KERNELS_BLESS=1 cargo test --release --test bits_sweep`.
//!
//! A tier with no recorded hashes for this architecture (the AVX-512 tier when the file was
//! written on an AVX2 machine, say) is reported and skipped, not failed: run the bless command
//! on a machine that has it and commit the new lines. The scalar tier's bits depend on the
//! platform's libm (it computes in f64 through `exp`/`ln`).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, Kernels, Logits, MaskedRows, Reduction,
    SoftmaxOptions, Targets,
};

const FILE: &str = "tests/data/bits_sweep.txt";

/// FNV-1a over 32-bit words.
struct Hash(u64);

impl Hash {
    fn new() -> Self {
        Hash(0xcbf2_9ce4_8422_2325)
    }
    fn word(&mut self, w: u32) {
        for b in w.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
    fn f32s(&mut self, v: &[f32]) {
        for &x in v {
            self.word(x.to_bits());
        }
    }
    fn u64(&mut self, v: u64) {
        self.word(v as u32);
        self.word((v >> 32) as u32);
    }
}

/// SplitMix64, for reproducible inputs on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// Logits of `rows x cols`: scaled noise, with a `-inf` and a large value in some rows.
fn logits(seed: u64, rows: usize, cols: usize, scale: f32) -> Vec<f32> {
    let mut r = Rng(seed);
    let mut x: Vec<f32> = (0..rows * cols).map(|_| scale * r.unit()).collect();
    for row in 0..rows {
        let k = (r.next() % cols as u64) as usize;
        match row % 5 {
            1 if cols > 1 => x[row * cols + k] = f32::NEG_INFINITY,
            3 => x[row * cols + k] = 60.0,
            _ => {}
        }
    }
    x
}

fn shapes() -> Vec<(usize, usize)> {
    let rows = [1usize, 2, 3, 5, 8, 16, 17, 31, 64, 65, 70];
    let mut v = Vec::new();
    for cols in 1..=200 {
        for &r in &rows {
            // Every width with a few batch sizes, all batch sizes at a few widths.
            if r <= 3 || cols % 8 == 1 || matches!(cols, 10 | 16 | 32 | 33 | 64 | 65 | 128) {
                v.push((r, cols));
            }
        }
    }
    for (r, c) in [
        (1, 1000),
        (7, 1000),
        (64, 1000),
        (1, 32000),
        (3, 32000),
        (1, 128256),
        (2, 128256),
    ] {
        v.push((r, c));
    }
    v
}

fn softmax_family(k: &Kernels, h: &mut BTreeMap<&'static str, Hash>) {
    for (i, &(rows, cols)) in shapes().iter().enumerate() {
        let x = logits(i as u64, rows, cols, 8.0);
        let n = x.len();
        let mut y = vec![0.0f32; n];
        // softmax: out of place, in place, masked rows as zeros (with an all -inf row).
        k.softmax(&x, &mut y, cols).unwrap();
        h.get_mut("softmax").unwrap().f32s(&y);
        let mut z = x.clone();
        k.softmax_inplace(&mut z, cols).unwrap();
        h.get_mut("softmax").unwrap().f32s(&z);
        let mut xm = x.clone();
        xm[..cols].fill(f32::NEG_INFINITY);
        let masked = SoftmaxOptions::default().masked_rows(MaskedRows::Zero);
        k.softmax_with(&xm, &mut y, cols, masked).unwrap();
        h.get_mut("softmax").unwrap().f32s(&y);
        let p = z;
        // log_softmax, the same three ways.
        k.log_softmax(&x, &mut y, cols).unwrap();
        h.get_mut("log_softmax").unwrap().f32s(&y);
        let mut z = x.clone();
        k.log_softmax_inplace(&mut z, cols).unwrap();
        h.get_mut("log_softmax").unwrap().f32s(&z);
        k.log_softmax_with(&xm, &mut y, cols, masked).unwrap();
        h.get_mut("log_softmax").unwrap().f32s(&y);
        let lp = z;
        // logsumexp.
        let mut out = vec![0.0f32; rows];
        k.logsumexp(&x, &mut out, cols).unwrap();
        h.get_mut("logsumexp").unwrap().f32s(&out);
        // Backward passes from the forward outputs.
        let dy = logits(1000 + i as u64, rows, cols, 1.0);
        k.softmax_backward(&p, &dy, &mut y, cols).unwrap();
        h.get_mut("softmax_backward").unwrap().f32s(&y);
        k.log_softmax_backward(&lp, &dy, &mut y, cols).unwrap();
        h.get_mut("log_softmax_backward").unwrap().f32s(&y);
    }
}

/// The option sets of the class-target sweep (and whether they want per-row outputs).
fn class_options<'a>(
    set: usize,
    weight: &'a [f32],
    row_scale: &'a [f32],
) -> (CrossEntropyOptions<'a>, bool) {
    let d = CrossEntropyOptions::default();
    match set {
        0 => (d, false),
        1 => (d.reduction(Reduction::Sum), false),
        2 => (d.reduction(Reduction::None).row_scale(row_scale), true),
        3 => (d.weight(weight), false),
        4 => (d.label_smoothing(0.1), false),
        5 => (d.z_loss(1e-3), false),
        6 => (d.softcap(30.0), false),
        7 => (d.scale(0.5), false),
        8 => (d, true),
        _ => (
            d.weight(weight)
                .label_smoothing(0.05)
                .z_loss(1e-4)
                .softcap(20.0),
            true,
        ),
    }
}

const CLASS_SETS: usize = 10;

fn cross_entropy(k: &Kernels, h: &mut BTreeMap<&'static str, Hash>) {
    for (i, &(rows, cols)) in shapes().iter().enumerate() {
        let x = logits(5000 + i as u64, rows, cols, 6.0);
        let n = x.len();
        let mut r = Rng(9000 + i as u64);
        // Labels, with every fourth row ignored (-100).
        let labels: Vec<i64> = (0..rows)
            .map(|row| {
                if row % 4 == 2 {
                    -100
                } else {
                    (r.next() % cols as u64) as i64
                }
            })
            .collect();
        let weight: Vec<f32> = (0..cols).map(|_| 1.0 + 0.5 * r.unit()).collect();
        let row_scale: Vec<f32> = (0..rows).map(|_| r.unit()).collect();
        for set in 0..CLASS_SETS {
            let (opts, per_row) = class_options(set, &weight, &row_scale);
            for mode in 0..3 {
                let (mut rl, mut lse, mut am) =
                    (vec![0.0f32; rows], vec![0.0f32; rows], vec![0u32; rows]);
                let mut out = if per_row {
                    CrossEntropyOutputs {
                        row_loss: Some(&mut rl),
                        lse: Some(&mut lse),
                        argmax: Some(&mut am),
                    }
                } else {
                    CrossEntropyOutputs::default()
                };
                let mut g = vec![0.0f32; n];
                let mut z = x.clone();
                let logits = match mode {
                    0 => Logits::Read(&x),
                    1 => Logits::Grad(&x, &mut g),
                    _ => Logits::InPlace(&mut z),
                };
                let st = k
                    .cross_entropy_with(logits, Targets::Classes(&labels), cols, &opts, &mut out)
                    .unwrap();
                let hh = h.get_mut("cross_entropy_classes").unwrap();
                hh.word(st.loss.to_bits());
                hh.u64(st.loss_f64.to_bits());
                hh.u64(st.correct.map_or(u64::MAX, |c| c as u64));
                match mode {
                    1 => hh.f32s(&g),
                    2 => hh.f32s(&z),
                    _ => {}
                }
                if per_row {
                    hh.f32s(&rl);
                    hh.f32s(&lse);
                    for &a in &am {
                        hh.word(a);
                    }
                }
            }
        }
        // Probability targets: softmax of other noise, default and smoothed, grad and in place.
        let mut y = logits(7000 + i as u64, rows, cols, 2.0);
        for v in y.iter_mut() {
            if *v == f32::NEG_INFINITY || *v == 60.0 {
                *v = 0.0;
            }
        }
        k.softmax_inplace(&mut y, cols).unwrap();
        for opts in [
            CrossEntropyOptions::default(),
            CrossEntropyOptions::default()
                .label_smoothing(0.1)
                .weight(&weight),
        ] {
            let mut g = vec![0.0f32; n];
            let loss = k
                .cross_entropy_probs_fwd_bwd(&x, &y, &mut g, cols, &opts)
                .unwrap();
            let hh = h.get_mut("cross_entropy_probs").unwrap();
            hh.word(loss.to_bits());
            hh.f32s(&g);
            let mut z = x.clone();
            let loss = k
                .cross_entropy_probs_fwd_bwd_inplace(&mut z, &y, cols, &opts)
                .unwrap();
            hh.word(loss.to_bits());
            hh.f32s(&z);
        }
    }
}

const FAMILIES: [&str; 7] = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_backward",
    "log_softmax_backward",
    "cross_entropy_classes",
    "cross_entropy_probs",
];

fn sweep(k: &Kernels) -> BTreeMap<&'static str, u64> {
    let mut h: BTreeMap<&'static str, Hash> = FAMILIES.iter().map(|&f| (f, Hash::new())).collect();
    softmax_family(k, &mut h);
    cross_entropy(k, &mut h);
    h.into_iter().map(|(f, v)| (f, v.0)).collect()
}

/// `(arch, tier, family) -> hash` from the record.
fn recorded() -> BTreeMap<(String, String, String), u64> {
    let text = std::fs::read_to_string(FILE).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "{FILE}: bad line {l:?}");
            let h = u64::from_str_radix(f[3], 16).expect("hex hash");
            ((f[0].into(), f[1].into(), f[2].into()), h)
        })
        .collect()
}

#[test]
fn row_kernels_keep_their_bits() {
    let arch = std::env::consts::ARCH;
    let bless = std::env::var_os("SOFTMAX_KERNELS_BLESS").is_some();
    let mut record = recorded();
    let mut failures = Vec::new();
    for k in common::tiers() {
        let tier = k.isa().name();
        let got = sweep(k);
        let known = FAMILIES
            .iter()
            .any(|f| record.contains_key(&(arch.into(), tier.into(), (*f).into())));
        for (f, v) in &got {
            let key = (arch.to_string(), tier.to_string(), f.to_string());
            match record.get(&key) {
                Some(&want) if want == *v => {}
                Some(&want) if !bless => {
                    failures.push(format!("{arch} {tier} {f}: {v:016x}, recorded {want:016x}"))
                }
                None if !bless => {}
                _ => {
                    record.insert(key, *v);
                }
            }
        }
        if !known && !bless {
            eprintln!(
                "bits_sweep: no recorded hashes for {arch} {tier}; record them with \
                 SOFTMAX_KERNELS_BLESS=1 cargo test --release --test bits_sweep"
            );
        }
    }
    if bless {
        let mut out = String::from(
            "# arch tier family fnv1a: tests/bits_sweep.rs (SOFTMAX_KERNELS_BLESS=1 rewrites)\n",
        );
        for ((a, t, f), v) in &record {
            writeln!(out, "{a} {t} {f} {v:016x}").unwrap();
        }
        std::fs::write(FILE, out).unwrap();
    }
    assert!(
        failures.is_empty(),
        "output bits changed:\n{}",
        failures.join("\n")
    );
}
