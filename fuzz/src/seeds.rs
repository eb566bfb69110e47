//! The seed corpus: hand-chosen nasty inputs, serialized into each target's byte format.
//! `cargo run --example gen_corpus` (in `fuzz/`) writes them to `fuzz/corpus/<target>/`;
//! `fuzz/tests/corpus.rs` checks that they decode to the inputs meant and pass.

use crate::cross_entropy::CeHeader;
use crate::input::{encode, encode_words, Fill, Win};
use crate::linear::LinHeader;
use crate::shard::ShardHeader;
use crate::softmax::SoftmaxHeader;
use crate::strided::StridedHeader;
use crate::token::TokHeader;

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;
const NINF: f32 = f32::NEG_INFINITY;
const MAX: f32 = f32::MAX;
/// A NaN with a payload and the sign bit set.
const NAN_PAYLOAD: f32 = f32::from_bits(0xFFC1_2345);
/// The smallest subnormal.
const SUB: f32 = 1e-45;

/// One seed: the target, a file name, the bytes.
pub struct Seed {
    /// `softmax`, `cross_entropy`, `linear`, `strided`, `token` or `shard`.
    pub target: &'static str,
    /// File name in the corpus directory.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// The columns selector for `cols` in `1..=2100` (see [`crate::shape`]).
pub fn cols_sel(cols: usize) -> u16 {
    assert!((1..=2100).contains(&cols));
    if cols <= 70 {
        (cols - 1) as u16
    } else {
        0x8000 | (cols - 1) as u16
    }
}

/// The columns selector for `LONG_COLS[i]`.
pub fn long_sel(i: usize) -> u16 {
    0xFF00 | i as u16
}

/// The columns selector for `VERY_LONG_COLS[i]`.
pub fn very_long_sel(i: usize) -> u16 {
    0xFFF0 | i as u16
}

/// The sparse fill: `v` everywhere but at up to `pairs` overrides per buffer.
fn sparse(v: f32, pairs: u16) -> Fill {
    Fill {
        mode: 4,
        konst: v.to_bits(),
        seed: 0,
        period: pairs - 1,
        place: 0,
    }
}

/// The data words of sparse overrides `(position, value)`.
fn overrides(pairs: &[(usize, f32)]) -> Vec<u32> {
    pairs
        .iter()
        .flat_map(|&(p, v)| [p as u32, v.to_bits()])
        .collect()
}

fn konst(v: f32) -> Fill {
    Fill {
        mode: 1,
        konst: v.to_bits(),
        seed: 0,
        period: 0,
        place: 0,
    }
}

/// Every seed.
pub fn all() -> Vec<Seed> {
    let mut v = Vec::new();
    softmax_seeds(&mut v);
    ce_seeds(&mut v);
    linear_seeds(&mut v);
    strided_seeds(&mut v);
    token_seeds(&mut v);
    shard_seeds(&mut v);
    v
}

fn sm_header(op: u8, rows: u8, cols: u16) -> SoftmaxHeader {
    SoftmaxHeader {
        op,
        rows,
        cols,
        xwin: Win::RAW,
        dywin: Win::RAW,
        fill: konst(0.0),
        ..Default::default()
    }
}

fn softmax_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: &str, h: SoftmaxHeader, data: &[f32]| {
        // One seed per tier selector 0..3 would triple the corpus; the tier byte is cheap for
        // the fuzzer to mutate, so each seed runs the first SIMD tier and the next one.
        for t in 0..2u8 {
            let h = SoftmaxHeader { tier: t, ..h };
            out.push(Seed {
                target: "softmax",
                name: format!("{name}-t{t}"),
                bytes: encode(&h, data),
            });
        }
    };
    // Each forward op on each nasty row; op 1/3/5/7 take options (masked 2: Zero).
    let rows: Vec<(&str, usize, Vec<f32>)> = vec![
        ("nan-tail-17", 17, {
            let mut r = vec![0.5f32; 17];
            r[16] = NAN;
            r
        }),
        ("nan-tail-33", 33, {
            let mut r: Vec<f32> = (0..33).map(|i| i as f32 * 0.1).collect();
            r[32] = NAN_PAYLOAD;
            r
        }),
        ("all-neginf-16", 16, vec![NINF; 16]),
        ("all-neginf-9", 9, vec![NINF; 9]),
        (
            "posinf-mid",
            8,
            vec![0.0, 1.0, INF, 2.0, NINF, 3.0, 4.0, 5.0],
        ),
        ("two-posinf", 5, vec![INF, 0.0, INF, -1.0, 2.0]),
        (
            "huge-1e30",
            7,
            vec![1e30, -1e30, 0.0, 1e30, 3.0, -3.0, 1e30],
        ),
        ("max-mix", 6, vec![MAX, -MAX, MAX, 0.0, -MAX, 1.0]),
        ("max-all", 3, vec![MAX, MAX, MAX]),
        (
            "subnormals",
            10,
            vec![SUB, -SUB, 0.0, -0.0, 1e-40, -1e-40, 1e-38, SUB, 0.0, 2e-45],
        ),
        ("neg-zero", 4, vec![-0.0, 0.0, -0.0, 0.0]),
        ("one-class", 1, vec![3.5]),
        ("one-class-neginf", 1, vec![NINF]),
        ("one-class-nan", 1, vec![NAN]),
        (
            "wide-range",
            12,
            vec![
                80.0, -80.0, 88.0, -88.0, 87.3, -87.4, 0.0, 100.0, -100.0, 1e4, -1e4, 50.0,
            ],
        ),
        ("cutoff", 4, vec![0.0, -87.336_54, -87.336_55, -103.9]),
        ("neginf-and-finite", 16, {
            let mut r = vec![NINF; 16];
            r[15] = -5.0;
            r
        }),
    ];
    for (name, cols, row) in &rows {
        let data: Vec<f32> = row.iter().chain(row.iter()).copied().collect();
        for op in 0..9u8 {
            let mut h = sm_header(op, 2, cols_sel(*cols));
            h.masked = if op % 2 == 1 { 2 } else { 0 };
            add(&format!("{name}-op{op}"), h, &data);
        }
    }
    // Zero rows, zero columns, bad lengths.
    add("zero-rows", sm_header(0, 0, cols_sel(5)), &[]);
    add("zero-rows-lse", sm_header(8, 0, cols_sel(5)), &[]);
    add("cols-zero", sm_header(0, 2, 0), &[1.0, 2.0]);
    let mut h = sm_header(0, 2, cols_sel(3));
    h.x_len = 6;
    h.x_delta = 1;
    add("x-not-multiple", h, &[1.0; 7]);
    let mut h = sm_header(4, 2, cols_sel(3));
    h.out_len = 6;
    h.out_delta = -1;
    add("y-short", h, &[1.0; 6]);
    let mut h = sm_header(8, 3, cols_sel(3));
    h.out_len = 7;
    h.out_delta = 2;
    add("lse-out-len", h, &[1.0; 9]);
    // Long rows (the online path): NaN in the last lane, all -inf, +inf, a huge spike.
    let mut h = sm_header(0, 1, long_sel(1));
    h.fill = Fill {
        mode: 2,
        seed: 7,
        ..konst(0.0)
    };
    h.xwin = Win {
        center: 2,
        spread: 3,
    };
    add("long-65536-random", h, &[]);
    let mut h = sm_header(4, 2, long_sel(2));
    h.fill = Fill {
        place: 1,
        ..konst(1.0)
    };
    add("long-65537-nan-last", h, &[NAN]);
    let mut h = sm_header(1, 1, long_sel(8));
    h.masked = 2;
    h.fill = konst(NINF);
    add("long-all-neginf-zero", h, &[]);
    let mut h = sm_header(5, 3, long_sel(0));
    h.masked = 2;
    h.fill = konst(NINF);
    add("long-65535-all-neginf", h, &[]);
    let mut h = sm_header(8, 2, long_sel(15));
    h.fill = Fill {
        mode: 3,
        konst: INF.to_bits(),
        seed: 5,
        period: 40_000,
        place: 0,
    };
    h.xwin = Win {
        center: 0,
        spread: 4,
    };
    add("long-lse-posinf", h, &[]);
    let mut h = sm_header(2, 1, long_sel(6));
    h.fill = konst(-1e30);
    add("long-inplace-spike", h, &[1e30]);
    // Very long rows of one value with a few overrides (the sparse fill) around the argmax
    // scan's 2^20-element blocks: ties of the maximum in two blocks, +inf far away.
    const M: usize = 1 << 20;
    let mut h = sm_header(0, 1, very_long_sel(7));
    h.fill = sparse(0.0, 2);
    add(
        "sparse-ties-2^20+17",
        h,
        &f32s(&overrides(&[(M + 16, 50.0), (3, 50.0)])),
    );
    let mut h = sm_header(8, 2, very_long_sel(13));
    h.fill = sparse(-1.0, 3);
    let n = (1 << 21) + 1;
    add(
        "sparse-lse-posinf-2^21+1",
        h,
        &f32s(&overrides(&[(n + M + 1, INF), (n - 1, 7.0), (5, -INF)])),
    );
    // Backward: y from the forward pass, and raw.
    for (op, src) in [(9u8, 1u8), (10, 2), (9, 0), (10, 0)] {
        let mut h = sm_header(op, 3, cols_sel(19));
        h.y_src = src;
        h.xwin = Win {
            center: 0,
            spread: 3,
        };
        h.dywin = h.xwin;
        h.fill = Fill {
            mode: 2,
            seed: op as u32 * 31 + src as u32,
            ..konst(0.0)
        };
        add(&format!("backward-op{op}-src{src}"), h, &[]);
    }
    let mut h = sm_header(9, 1, cols_sel(4));
    h.fill = konst(0.0);
    add(
        "backward-special",
        h,
        &[0.5, INF, 0.0, NAN, 1.0, 1.0, 1.0, 1.0],
    );
    let mut h = sm_header(10, 1, cols_sel(4));
    add(
        "lsm-backward-special",
        h,
        &[0.0, NINF, -1.0, 100.0, 1.0, -1.0, 2.0, 0.0],
    );
    h.dy_len = 6;
    h.dy_delta = 1;
    add("backward-dy-len", h, &[0.0; 9]);
    one_tier_for_very_long(out);
}

/// Data words as floats by bits (for `encode`).
fn f32s(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

fn ce_header(rows: u8, cols: u16, target: u8) -> CeHeader {
    CeHeader {
        rows,
        cols,
        mode: 1,
        target,
        outputs: 7,
        xwin: Win::RAW,
        wwin: Win::RAW,
        ywin: Win::RAW,
        rswin: Win::RAW,
        fill: konst(0.0),
        ..Default::default()
    }
}

/// A label word for class `c` (see `cross_entropy::label_value`).
fn cls(c: u32) -> u32 {
    c
}
/// A special label word: 0 ignore index, 1 `cols`, 2 -1, 3 i64::MIN, 5 u64::MAX, 6 -100,
/// 7 i64::MAX.
fn special_label(k: u32) -> u32 {
    0xC000_0000 | (k << 24)
}

fn ce_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: &str, h: CeHeader, logits: &[f32], rest: &[u32]| {
        let mut words: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
        words.extend_from_slice(rest);
        for t in 0..2u8 {
            let h = CeHeader { tier: t, ..h };
            out.push(Seed {
                target: "cross_entropy",
                name: format!("{name}-t{t}"),
                bytes: encode_words(&h, &words),
            });
        }
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    // Plain rows with every label type and mode.
    let logits: Vec<f32> = (0..3 * 17)
        .map(|i| ((i * 37) % 23) as f32 * 0.3 - 3.0)
        .collect();
    for target in 0..8u8 {
        for mode in 0..3u8 {
            let mut h = ce_header(3, cols_sel(17), target);
            h.mode = mode;
            add(
                &format!("plain-type{target}-mode{mode}"),
                h,
                &logits,
                &[cls(0), cls(16), cls(5)],
            );
        }
    }
    // Special rows: NaN at the tail lane, +inf, all -inf, -inf at the target, huge logits.
    let mut x = vec![0.25f32; 4 * 17];
    x[16] = NAN;
    x[17 + 3] = INF;
    for v in &mut x[34..51] {
        *v = NINF;
    }
    x[51 + 2] = NINF;
    add(
        "specials",
        ce_header(4, cols_sel(17), 0),
        &x,
        &[cls(1), cls(2), cls(3), cls(2)],
    );
    let mut h = ce_header(4, cols_sel(17), 0);
    h.softcap = 4; // Some(30)
    add("specials-softcap", h, &x, &[cls(1), cls(2), cls(3), cls(2)]);
    let huge = [1e30f32, -1e30, MAX, -MAX, 0.0, 1e30, 3.0, -MAX];
    add("huge", ce_header(1, cols_sel(8), 0), &huge, &[cls(1)]);
    let mut h = ce_header(1, cols_sel(8), 0);
    h.smoothing = 2; // 0.1
    add("huge-smoothing", h, &huge, &[cls(2)]);
    // Labels: out of range, negative, ignore index, wrapped by small types.
    for (i, lab) in [1u32, 2, 3, 4, 5, 7].into_iter().enumerate() {
        for target in [0u8, 6] {
            add(
                &format!("bad-label{i}-type{target}"),
                ce_header(2, cols_sel(5), target),
                &[0.0; 10],
                &[cls(1), special_label(lab)],
            );
        }
    }
    let mut h = ce_header(2, cols_sel(5), 0);
    h.reduction = 2; // None
    add(
        "ignored-none",
        h,
        &[NAN; 10],
        &[special_label(0), special_label(6)],
    );
    let mut h = ce_header(2, cols_sel(5), 0);
    h.all_ignored = 1;
    add(
        "all-ignored-zero",
        h,
        &[1.0; 10],
        &[special_label(6), special_label(6)],
    );
    add(
        "all-ignored-nan",
        ce_header(2, cols_sel(5), 0),
        &[1.0; 10],
        &[special_label(6); 2],
    );
    let mut h = ce_header(2, cols_sel(5), 0);
    h.ignore = 7; // ignore_index = cols - 1: a real class
    add("ignore-a-class", h, &[0.5; 10], &[cls(4), cls(3)]);
    // Every option at once: weights, smoothing, z-loss, cap, None with row_scale.
    let mut h = ce_header(3, cols_sel(33), 0);
    h.weight = 1;
    h.smoothing = 2;
    h.z_loss = 3;
    h.softcap = 4;
    h.reduction = 2;
    h.row_scale = 3;
    h.wwin = Win {
        center: 0,
        spread: 1,
    };
    h.rswin = h.wwin;
    let x: Vec<f32> = (0..99).map(|i| ((i * 13) % 29) as f32 - 14.0).collect();
    let mut rest = vec![cls(0), cls(32), cls(17)];
    rest.extend(bits(&[1.0; 33]));
    rest.extend(bits(&[1.0, -0.5, 2.0]));
    add("all-options", h, &x, &rest);
    // Tiny and huge caps; zero / NaN weights.
    for (name, sel, b) in [
        ("cap-1e-45", 7u8, 5u32),
        ("cap-1e-3", 7, 7),
        ("cap-max", 7, 6),
        ("cap-2^-10", 5, 0),
    ] {
        let mut h = ce_header(2, cols_sel(9), 0);
        h.softcap = sel;
        h.softcap_bits = b;
        let x: Vec<f32> = (0..18).map(|i| i as f32 - 9.0).collect();
        add(name, h, &x, &[cls(0), cls(8)]);
    }
    let mut h = ce_header(2, cols_sel(4), 0);
    h.weight = 1;
    let mut rest = vec![cls(1), cls(2)];
    rest.extend(bits(&[0.0, 0.0, 0.0, 0.0]));
    add(
        "zero-weights-mean",
        h,
        &[1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0],
        &rest,
    );
    // Probability targets: one-hot, unnormalized, with -inf logits and zero targets.
    let mut h = ce_header(2, cols_sel(5), 8);
    h.smoothing = 2;
    let mut rest = bits(&[0.0, 1.0, 0.0, 0.0, 0.0]);
    rest.extend(bits(&[0.5, 0.5, 0.0, 2.0, -1.0]));
    add(
        "probs",
        h,
        &[0.0, 1.0, 2.0, NINF, 4.0, 1e30, 0.0, 0.0, 0.0, 0.0],
        &rest,
    );
    let mut h = ce_header(1, cols_sel(3), 8);
    h.mode = 2;
    add(
        "probs-neginf-zero-target",
        h,
        &[NINF, 0.0, 1.0],
        &bits(&[0.0, 0.5, 0.5]),
    );
    // Bad options and lengths.
    for (name, f) in [("smoothing-nan", 6u8), ("smoothing-raw", 5)] {
        let mut h = ce_header(1, cols_sel(2), 0);
        h.smoothing = f;
        add(name, h, &[0.0, 1.0], &[cls(0)]);
    }
    let mut h = ce_header(1, cols_sel(2), 0);
    h.z_loss = 6;
    h.z_loss_bits = 2; // +inf
    add("z-loss-inf", h, &[0.0, 1.0], &[cls(0)]);
    let mut h = ce_header(1, cols_sel(2), 0);
    h.scale = 6;
    h.scale_bits = 2; // NaN
    add("scale-nan", h, &[0.0, 1.0], &[cls(0)]);
    let mut h = ce_header(2, cols_sel(2), 0);
    h.row_scale = 3; // with Mean: invalid
    add("row-scale-mean", h, &[0.0; 4], &[cls(0), cls(1), 0, 0]);
    let mut h = ce_header(2, cols_sel(2), 0);
    h.reduction = 2;
    h.outputs = 6; // None without row_loss
    add("none-without-row-loss", h, &[0.0; 4], &[cls(0), cls(1)]);
    let mut h = ce_header(2, cols_sel(2), 0);
    h.grad_len = 6;
    h.grad_delta = -1;
    add("grad-short", h, &[0.0; 4], &[cls(0), cls(1)]);
    let mut h = ce_header(2, cols_sel(2), 0);
    h.targets_len = 6;
    h.targets_delta = 1;
    add("targets-long", h, &[0.0; 4], &[cls(0), cls(1), cls(1)]);
    add("cols-zero", ce_header(2, 0, 0), &[], &[cls(0), cls(0)]);
    add("zero-rows", ce_header(0, cols_sel(7), 0), &[], &[]);
    add(
        "one-class",
        ce_header(3, cols_sel(1), 0),
        &[5.0, NINF, -1.0],
        &[cls(0); 3],
    );
    // A long row (the kernels have no online path, but the sweeps' blocking changes).
    let mut h = ce_header(1, long_sel(2), 0);
    h.smoothing = 2;
    h.fill = Fill {
        mode: 2,
        seed: 3,
        ..konst(0.0)
    };
    h.xwin = Win {
        center: 3,
        spread: 2,
    };
    h.fill.place = 0;
    add("long-smoothing", h, &[], &[]);
    // Very long rows of one value with the maximum, ties of it, a NaN or the only finite value
    // at far indices (the sparse fill: the logits' overrides, then one per label), around the
    // argmax scan's 2^20-element blocks; argmax requested (`outputs` 7), no cap.
    const M: usize = 1 << 20;
    let sparse_ce = |rows: u8, i: usize, mode: u8, v: f32, logits: &[(usize, f32)]| {
        let mut h = ce_header(rows, very_long_sel(i), 0);
        h.mode = mode;
        h.fill = sparse(v, logits.len() as u16);
        h
    };
    let lab = |pairs: &[(usize, u32)]| -> Vec<u32> {
        pairs
            .iter()
            .flat_map(|&(r, c)| [r as u32, cls(c)])
            .collect()
    };
    let x = [(100, 5.0), (M + 100, 5.0), (2 * M, 5.0)];
    add(
        "sparse-argmax-ties-3-blocks",
        sparse_ce(1, 13, 0, 1.0, &x),
        &[],
        &[overrides(&x), lab(&[(0, M as u32 + 100)])].concat(),
    );
    let x = [(M - 1, 9.0), (M, 9.0)];
    add(
        "sparse-argmax-tie-block-edge",
        sparse_ce(1, 4, 0, 0.0, &x),
        &[],
        &[overrides(&x), lab(&[(0, M as u32)])].concat(),
    );
    let n = M + 17;
    let x = [
        (M + 5, 3.0),
        (M + 9, 3.0),
        (n + M + 16, 4.0),
        (n + 7, 3.999),
    ];
    add(
        "sparse-argmax-second-block",
        sparse_ce(2, 7, 1, -2.0, &x),
        &[],
        &[overrides(&x), lab(&[(0, M as u32 + 5), (1, 3)])].concat(),
    );
    let x = [(5, 1.0), (M + 3, NAN)];
    add(
        "sparse-argmax-nan-block",
        sparse_ce(1, 12, 1, 0.0, &x),
        &[],
        &[overrides(&x), lab(&[(0, 5)])].concat(),
    );
    let x = [(M + 4096, -1e30)];
    add(
        "sparse-neginf-far-finite",
        sparse_ce(1, 9, 0, NINF, &x),
        &[],
        &[overrides(&x), lab(&[(0, M as u32 + 4096)])].concat(),
    );
    // Probability targets: one-hot far from the logits' maximum (both buffers sparse).
    let mut h = sparse_ce(1, 1, 1, 0.0, &[(40_000, 2.0)]);
    h.target = 8;
    add(
        "sparse-probs-40961",
        h,
        &[],
        &overrides(&[(40_000, 2.0), (40_960, 1.0)]),
    );
    one_tier_for_very_long(out);
}

/// The very long rows cost about a second a run under AddressSanitizer (a tenth in release),
/// and libFuzzer mutates every corpus entry about equally often: their seeds keep the first
/// tier only (the fuzzer flips the tier byte cheaply).
fn one_tier_for_very_long(out: &mut Vec<Seed>) {
    out.retain(|s| !(s.name.starts_with("sparse-") && s.name.ends_with("-t1")));
}

fn lin_header(op: u8, c: u8, d: u16, b: u8) -> LinHeader {
    LinHeader {
        op,
        c,
        d,
        b,
        win1: Win {
            center: 0,
            spread: 2,
        },
        win2: Win {
            center: 0,
            spread: 2,
        },
        winw: Win {
            center: 0,
            spread: 2,
        },
        fill: Fill {
            mode: 2,
            seed: 11,
            ..konst(0.0)
        },
        ..Default::default()
    }
}

fn linear_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: &str, h: LinHeader, data: &[f32]| {
        for t in 0..2u8 {
            let h = LinHeader { tier: t, ..h };
            out.push(Seed {
                target: "linear",
                name: format!("{name}-t{t}"),
                bytes: encode(&h, data),
            });
        }
    };
    // Every op on odd shapes, both sides of the rank-k crossover (B = 1, 2, 3, 8, 9, 23).
    for op in 0..7u8 {
        for (c, d, b) in [
            (7u8, 9u16, 1u8),
            (17, 33, 2),
            (9, 15, 3),
            (16, 16, 8),
            (33, 17, 9),
            (5, 69, 23),
        ] {
            add(
                &format!("op{op}-{c}x{d}-b{b}"),
                lin_header(op, c, d, b),
                &[],
            );
        }
    }
    // Strided W: padded, trimmed, ld < D, huge ld.
    for (name, ld, trim) in [
        ("ld-pad", 8u8, 0u8),
        ("ld-pad-trim", 9, 1),
        ("ld-small", 13, 0),
        ("ld-isize-max", 14, 1),
        ("ld-usize-max", 15, 0),
    ] {
        for op in [0u8, 1, 2, 4, 5, 6] {
            let mut h = lin_header(op, 3, 9, 4);
            h.ld = ld;
            h.trim = trim;
            add(&format!("{name}-op{op}"), h, &[]);
        }
    }
    for op in [0u8, 1, 2, 4, 5, 6] {
        let mut h = lin_header(op, 1, 9, 2);
        h.ld = 14; // isize::MAX with one row: allowed
        h.trim = 1;
        add(&format!("ld-isize-max-one-row-op{op}"), h, &[]);
    }
    // BLAS conventions: beta = 0 over NaN, alpha = 0 with NaN inputs, empty batch / W.
    let mut h = lin_header(2, 2, 3, 2);
    h.beta = 0; // 0.0
    h.fill = konst(NAN);
    add(
        "beta0-over-nan",
        h,
        &[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    let mut h = lin_header(2, 2, 3, 2);
    h.alpha = 3; // 0.0
    h.beta = 2; // 0.5
    add("alpha0-nan-inputs", h, &[NAN; 10]);
    let mut h = lin_header(3, 3, 0, 2);
    h.beta = 0;
    h.fill = konst(NAN);
    add("bias-grad-beta0-nan", h, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    for op in 0..7u8 {
        add(&format!("empty-batch-op{op}"), lin_header(op, 4, 5, 0), &[]);
        add(&format!("empty-c-op{op}"), lin_header(op, 0, 5, 3), &[]);
        add(&format!("empty-d-op{op}"), lin_header(op, 4, 0, 3), &[]);
    }
    // Special values in range terms: inf and NaN mixed with ordinary data.
    let mut h = lin_header(5, 2, 3, 2);
    h.bias = 1;
    add(
        "forward-specials",
        h,
        &[
            1.0, INF, 0.0, NAN, 2.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, -0.5,
        ],
    );
    let mut h = lin_header(0, 2, 3, 0);
    h.alpha = 6;
    h.alpha_bits = 4; // 1e30
    add("rank1-huge-alpha", h, &[1e30, -1e-30, 1.0, 2.0, 3.0]);
    let mut h = lin_header(4, 3, 4, 5);
    h.alpha = 4; // lr = -0.5: invalid
    add("sgd-negative-lr", h, &[]);
    let mut h = lin_header(4, 3, 4, 5);
    h.bias = 1;
    add("sgd-with-bias", h, &[]);
    // The sgemm tiling (C, D up to 300, B up to 40) and a long D.
    let mut h = lin_header(2, 0x80 | 200, 0x8000 | 250, 40);
    h.beta = 2;
    add("gemm-tiles-wgrad", h, &[]);
    let h = lin_header(5, 0x80 | 150, 0x8000 | 299, 40);
    add("gemm-tiles-forward", h, &[]);
    let h = lin_header(6, 0xFF, 0x8000 | 150, 40);
    add("gemm-tiles-backward", h, &[]);
    add("long-d-rank1", lin_header(0, 2, 0xFF01, 0), &[]);
    add("long-d-wgrad", lin_header(2, 2, 0xFF02, 2), &[]);
}

fn st_header(op: u8, rows: u8, cols: u16) -> StridedHeader {
    StridedHeader {
        op,
        rows,
        cols,
        xwin: Win::RAW,
        dywin: Win::RAW,
        ce: ce_header(0, 0, 0),
        fill: konst(0.0),
        ..Default::default()
    }
}

/// Seeds of the `strided` target: every operation (`op` 0..=6 the softmax family, 7 cross-
/// entropy) on nasty rows under several stride sets, the dense short-row paths against their
/// strided forms, errors (the same as the contiguous call's, and the strided shape checks), and
/// long rows.
fn strided_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: &str, h: StridedHeader, words: &[u32]| {
        for t in 0..2u8 {
            out.push(Seed {
                target: "strided",
                name: format!("{name}-t{t}"),
                bytes: encode_words(&StridedHeader { tier: t, ..h }, words),
            });
        }
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    // Five rows of 17: plain, NaN in the tail lane, all -inf, +inf and huge, subnormals and -0.
    let mut x: Vec<f32> = (0..85)
        .map(|i| ((i * 37) % 23) as f32 * 0.3 - 3.0)
        .collect();
    x[16] = NAN_PAYLOAD;
    x[34..51].fill(NINF);
    (x[54], x[58], x[59]) = (INF, MAX, -MAX);
    for (j, v) in x[68..].iter_mut().enumerate() {
        *v = if j % 2 == 0 { SUB } else { -0.0 };
    }
    let dy: Vec<f32> = (0..85).map(|i| (i % 7) as f32 - 3.0).collect();
    let labels = [cls(0), cls(16), cls(3), special_label(6), cls(9)];
    let probs: Vec<f32> = (0..85).map(|i| [0.0, 0.125, 0.5][i % 3]).collect();
    // (name, ld_in / ld_out / ld_aux selectors, full bits, pad): dense and full; `cols + 1`,
    // `2 cols`, `cols + 17` trimmed; and mixed.
    let lds = [
        ("dense", [0u8, 0, 0], 7u8, 0u8),
        ("plus1", [1, 18, 17], 0, 1),
        ("twice", [18, 17, 1], 5, 2),
        ("plus17", [17, 1, 18], 2, 0),
    ];
    for op in 0..8u8 {
        for (lname, [a, b, c], full, pad) in lds {
            let mut h = st_header(op, 5, cols_sel(17));
            (h.ld_in, h.ld_out, h.ld_aux, h.full, h.pad) = (a, b, c, full, pad);
            (h.y_src, h.masked, h.pad_bits) = (op % 3, op % 2, 0xFF80_0001);
            let mut w = bits(&x);
            match op {
                5 | 6 => w.extend(bits(&dy)),
                7 => w.extend(labels),
                _ => {}
            }
            add(&format!("specials-op{op}-{lname}"), h, &w);
        }
    }
    // Cross-entropy: each logits mode with labels (i64, u8) and probability targets.
    for mode in 0..3u8 {
        for target in [0u8, 6, 8] {
            let mut h = st_header(7, 5, cols_sel(17));
            (h.ld_in, h.ld_out, h.ld_aux, h.full) = (1, 18, 2, 2);
            (h.ce.mode, h.ce.target) = (mode, target);
            let t = if target == 8 {
                bits(&probs)
            } else {
                labels.to_vec()
            };
            add(
                &format!("ce-mode{mode}-target{target}"),
                h,
                &[bits(&x), t].concat(),
            );
        }
    }
    // Every option at once: weights, smoothing, z-loss, cap, None with row_scale.
    let mut h = st_header(7, 5, cols_sel(17));
    (h.ld_in, h.ld_out, h.full) = (3, 18, 1);
    (h.ce.weight, h.ce.smoothing, h.ce.z_loss, h.ce.softcap) = (1, 2, 3, 4);
    (h.ce.reduction, h.ce.row_scale) = (2, 3);
    let w = [0.5f32, 1.0, 2.0, 0.0, 1.5].repeat(4);
    let rest = [
        bits(&x),
        labels.to_vec(),
        bits(&w[..17]),
        bits(&[1.0, -0.5, 2.0, 0.25, 3.0]),
    ];
    add("ce-all-options", h, &rest.concat());
    // Errors as the contiguous call's: a bad label, a bad option, label and output lengths.
    for (i, name) in ["bad-label", "smoothing-nan", "targets-short", "lse-long"]
        .into_iter()
        .enumerate()
    {
        let mut h = st_header(7, 2, cols_sel(5));
        (h.ld_in, h.ld_out) = (2, 1);
        match i {
            1 => (h.ce.smoothing, h.ce.smoothing_bits) = (6, 0), // NaN
            2 => (h.ce.targets_len, h.ce.targets_delta) = (6, -1), // one label short
            3 => (h.ce.out_len, h.ce.out_delta) = (14, 1),       // `lse` one longer
            _ => {}
        }
        // Label `cols` (out of range) in the first.
        let lab = if i == 0 { special_label(1) } else { cls(1) };
        let w = [bits(&[0.5; 10]), vec![cls(0), lab]].concat();
        add(&format!("ce-{name}"), h, &w);
    }
    let mut h = st_header(4, 3, cols_sel(5));
    (h.ld_in, h.out_len, h.out_delta) = (2, 6, -1);
    add("lse-out-short", h, &bits(&[1.0; 15]));
    // The strided shape checks: one more row or column in the second view; zero columns.
    for (op, mode, target, mis) in [
        (0u8, 1u8, 0u8, 15u8),
        (1, 1, 0, 14),
        (5, 1, 0, 15),
        (6, 1, 0, 14),
        (7, 1, 0, 15),
        (7, 0, 8, 14),
        (7, 2, 8, 15),
    ] {
        let mut h = st_header(op, 3, cols_sel(6));
        (h.ld_in, h.ld_out, h.ld_aux, h.mismatch) = (1, 2, 3, mis);
        (h.ce.mode, h.ce.target) = (mode, target);
        add(
            &format!("mismatch{mis}-op{op}-mode{mode}-target{target}"),
            h,
            &[],
        );
    }
    for op in [0u8, 2, 4, 5, 7] {
        let mut h = st_header(op, 3, 0);
        (h.ld_in, h.ld_out, h.mismatch) = (2, 1, 14 * (op % 2));
        add(&format!("cols-zero-op{op}"), h, &[cls(0); 3]);
        add(
            &format!("rows-zero-op{op}"),
            st_header(op, 0, cols_sel(7)),
            &[],
        );
    }
    // Short rows: the dense softmax chunks (4+ rows, first entries in [-16, 40]) and the dense
    // cross-entropy path against their strided forms (a different path, the same bits).
    let xs: Vec<f32> = (0..160)
        .map(|i| ((i * 11) % 17) as f32 * 0.25 - 2.0)
        .collect();
    // (op, cross-entropy mode): softmax, log_softmax, in place, logsumexp, cross-entropy.
    for (op, mode) in [(0u8, 0u8), (1, 0), (2, 0), (4, 0), (7, 0), (7, 1), (7, 2)] {
        for (lname, ldx, ldy) in [("dense", 0u8, 0u8), ("plus1", 1, 0), ("out2", 0, 2)] {
            let mut h = st_header(op, 16, cols_sel(10));
            (h.ld_in, h.ld_out, h.full, h.ce.mode) = (ldx, ldy, 3, mode);
            let labs: Vec<u32> = (0..16).map(|r| cls(r % 10)).collect();
            let name = format!("short10-op{op}-mode{mode}-{lname}");
            add(&name, h, &[bits(&xs), labs].concat());
        }
    }
    // Long rows (the online softmax, the cross-entropy sweeps' blocks), random data.
    for (op, sel) in [
        (0u8, long_sel(2)),
        (1, long_sel(8)),
        (4, long_sel(2)),
        (5, long_sel(0)),
        (7, long_sel(2)),
        (7, very_long_sel(4)),
    ] {
        let mut h = st_header(op, 2, sel);
        (h.ld_in, h.ld_out, h.ld_aux, h.full) = (1, 18, 17, 2);
        h.fill = Fill {
            mode: 2,
            seed: 7,
            ..konst(0.0)
        };
        h.xwin = Win {
            center: 2,
            spread: 3,
        };
        add(&format!("long-op{op}-cols{:#06x}", sel), h, &[]);
    }
}

fn tok_header(mode: u8, rows: u8, cols: usize, label: u8) -> TokHeader {
    TokHeader {
        mode,
        rows,
        cols: crate::token::cols_sel(cols),
        label,
        outputs: 0b1111, // entropy and lse outputs, both upstream gradients
        xwin: Win::RAW,
        gwin: Win::RAW,
        fill: konst(0.0),
        ..Default::default()
    }
}

/// Seeds of the `token` target: every mode (`mode` 0 forward, 1 backward, 2 backward in place,
/// 3 fwd_bwd, 4 fwd_bwd in place) and label type on plain rows; rows of special values with and
/// without a cap; temperatures and caps at the edges of their domains and outside; masks and
/// offsets; bad tokens; every length check; long rows. The data words are the logits, then the
/// tokens, then `grads.logp` and `grads.entropy` (when the header has them).
fn token_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: &str, h: TokHeader, words: &[u32]| {
        for t in 0..2u8 {
            out.push(Seed {
                target: "token",
                name: format!("{name}-t{t}"),
                bytes: encode_words(&TokHeader { tier: t, ..h }, words),
            });
        }
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let words = |x: &[f32], toks: &[u32], gl: &[f32], gh: &[f32]| {
        [bits(x), toks.to_vec(), bits(gl), bits(gh)].concat()
    };
    // Plain rows: every mode with i64 and u8 tokens, every other type in two modes.
    let x: Vec<f32> = (0..3 * 17)
        .map(|i| ((i * 37) % 23) as f32 * 0.3 - 3.0)
        .collect();
    let plain = words(
        &x,
        &[cls(0), cls(16), cls(5)],
        &[1.0, -0.5, 2.0],
        &[0.3, 1.0, -0.7],
    );
    let mut pairs: Vec<(u8, u8)> = (0..5u8).flat_map(|m| [(m, 0u8), (m, 6)]).collect();
    for l in [1u8, 2, 3, 4, 5, 7] {
        pairs.extend([(l % 5, l), ((l + 3) % 5, l)]);
    }
    for (mode, label) in pairs {
        add(
            &format!("plain-mode{mode}-type{label}"),
            tok_header(mode, 3, 17, label),
            &plain,
        );
    }
    // Subsets of the outputs and upstream gradients (bit 0 entropy, 1 lse, 2 grads.logp,
    // 3 grads.entropy).
    for (outputs, mode) in [(0u8, 3u8), (0, 1), (0b0001, 4), (0b0110, 2), (0b1101, 3)] {
        let mut h = tok_header(mode, 3, 17, 0);
        h.outputs = outputs;
        let gl: &[f32] = if outputs & 4 != 0 {
            &[1.0, -0.5, 2.0]
        } else {
            &[]
        };
        let gh: &[f32] = if outputs & 8 != 0 {
            &[0.3, 1.0, -0.7]
        } else {
            &[]
        };
        add(
            &format!("outputs{outputs}-mode{mode}"),
            h,
            &words(&x, &[cls(0), cls(16), cls(5)], gl, gh),
        );
    }
    // Special rows: a NaN in the tail lane, +inf, all -inf, -inf at the token and two masked,
    // +-1e29, an ignored row of NaN, +-f32::MAX, subnormals and -0.
    let mut x = vec![0.25f32; 8 * 17];
    x[16] = NAN_PAYLOAD;
    x[17 + 3] = INF;
    x[34..51].fill(NINF);
    for j in [2, 5, 9] {
        x[51 + j] = NINF;
    }
    for (j, v) in x[68..85].iter_mut().enumerate() {
        *v = [1e29, -1e29, 0.0, 3.0][j % 4];
    }
    x[85..102].fill(NAN);
    for (j, v) in x[102..119].iter_mut().enumerate() {
        *v = [MAX, -MAX, 0.0][j % 3];
    }
    for (j, v) in x[119..].iter_mut().enumerate() {
        *v = [SUB, -0.0, 1e-40, 0.0][j % 4];
    }
    let toks = [
        cls(1),
        cls(2),
        cls(3),
        cls(2),
        cls(0),
        special_label(0),
        cls(1),
        cls(4),
    ];
    let specials = words(
        &x,
        &toks,
        &[1.0, -1.0, 2.0, 0.5, -2.0, 1.0, 1.0, 3.0],
        &[0.5, 1.0, -1.0, 0.25, 1.0, 1.0, -0.5, 2.0],
    );
    for mode in 0..5u8 {
        for (cname, sel) in [("", 0u8), ("-cap30", 4)] {
            let mut h = tok_header(mode, 8, 17, 0);
            h.softcap = sel;
            add(&format!("specials-mode{mode}{cname}"), h, &specials);
        }
    }
    // Temperatures (`SPECIAL_TEMPS` indices): valid edges, then invalid values.
    let x: Vec<f32> = (0..2 * 9).map(|i| (i % 9) as f32 * 0.75 - 3.0).collect();
    let two = words(&x, &[cls(0), cls(8)], &[1.0, -1.0], &[0.5, 2.0]);
    for (name, idx, mode, offset) in [
        ("min-positive", 6u32, 3u8, 0u8),
        ("max", 9, 1, 0),
        ("1e-3", 10, 4, 0),
        ("1e-3-offset", 10, 1, 1),
        ("1e3", 11, 2, 0),
        ("2^-10-offset", 14, 3, 3),
    ] {
        let mut h = tok_header(mode, 2, 9, 0);
        (h.temp, h.temp_bits, h.offset) = (6, idx, offset);
        add(&format!("temp-{name}-mode{mode}"), h, &two);
    }
    for (name, idx, mode) in [
        ("zero", 0u32, 0u8),
        ("negative", 2, 1),
        ("nan", 3, 3),
        ("inf", 4, 2),
        ("subnormal", 7, 4),
    ] {
        let mut h = tok_header(mode, 2, 9, 0);
        (h.temp, h.temp_bits) = (6, idx);
        add(&format!("temp-{name}-mode{mode}"), h, &two);
    }
    // Soft-caps: 2^-20, 2^29, `SPECIAL_CAPS` edges, then invalid values.
    let x: Vec<f32> = (0..2 * 9).map(|i| (i % 9) as f32 * 3.0 - 12.0).collect();
    let capped = words(&x, &[cls(0), cls(8)], &[1.0, -1.0], &[0.5, 2.0]);
    for (name, sel, b, mode) in [
        ("2^-20", 5u8, 0u32, 3u8),
        ("2^29", 5, 49, 1),
        ("max", 7, 6, 4),
        ("1e-3", 7, 7, 2),
        ("min-positive", 7, 8, 0),
    ] {
        let mut h = tok_header(mode, 2, 9, 0);
        (h.softcap, h.softcap_bits) = (sel, b);
        add(&format!("cap-{name}-mode{mode}"), h, &capped);
    }
    for (name, b, mode) in [
        ("zero", 0u32, 3u8),
        ("inf", 3, 1),
        ("nan", 4, 0),
        ("1e-45", 5, 4),
    ] {
        let mut h = tok_header(mode, 2, 9, 0);
        (h.softcap, h.softcap_bits) = (7, b);
        add(&format!("cap-{name}-mode{mode}"), h, &capped);
    }
    // Masks and 1e3 offsets.
    let x: Vec<f32> = (0..4 * 13).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let four = words(
        &x,
        &[cls(0), cls(12), cls(6), cls(1)],
        &[1.0, 2.0, -1.0, 0.5],
        &[-0.5, 1.0, 0.25, 2.0],
    );
    for (mask, mode) in [(1u8, 3u8), (2, 4), (3, 1)] {
        let mut h = tok_header(mode, 4, 13, 0);
        h.mask = mask;
        add(&format!("mask{mask}-mode{mode}"), h, &four);
    }
    for (offset, mode) in [(1u8, 0u8), (2, 2), (3, 3)] {
        let mut h = tok_header(mode, 4, 13, 0);
        h.offset = offset;
        add(&format!("offset{offset}-mode{mode}"), h, &four);
    }
    // Bad tokens (`label_value`'s specials: 1 `cols`, 2 -1, 3 i64::MIN, 4 a small signed
    // value, 5 u64::MAX, 7 i64::MAX), each as some type wraps it.
    let x = [0.5f32; 10];
    for (k, label, mode) in [
        (1u32, 0u8, 0u8),
        (2, 6, 1),
        (3, 2, 3),
        (4, 1, 4),
        (5, 3, 2),
        (7, 4, 0),
    ] {
        add(
            &format!("bad-token{k}-type{label}-mode{mode}"),
            tok_header(mode, 2, 5, label),
            &words(&x, &[cls(1), special_label(k)], &[1.0; 2], &[1.0; 2]),
        );
    }
    // -100 without an ignore index; the ignore index a real class; i64::MIN as it.
    for (name, ignore, tok, mode) in [
        ("ignore-none", 3u8, special_label(6), 3u8),
        ("ignore-a-class", 7, cls(4), 1),
        ("ignore-i64-min", 6, special_label(0), 4),
    ] {
        let mut h = tok_header(mode, 2, 5, 0);
        h.ignore = ignore;
        add(
            &format!("{name}-mode{mode}"),
            h,
            &words(&x, &[cls(1), tok], &[1.0; 2], &[1.0; 2]),
        );
    }
    // Lengths: each per-row buffer one short or long (`out_len >> 3` picks it), the
    // gradient, the tokens, the logits; zero columns, zero rows; the saved entropy missing
    // and extra.
    let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let lens = words(&x, &[cls(0), cls(3), cls(2)], &[1.0; 3], &[1.0; 3]);
    for (which, mode, delta) in [
        (0u8, 3u8, -1i8),
        (1, 0, 1),
        (2, 4, -1),
        (3, 1, 1),
        (4, 3, -1),
        (5, 2, 1),
        (6, 1, -1),
    ] {
        let mut h = tok_header(mode, 3, 4, 0);
        (h.out_len, h.out_delta) = (which << 3 | 6, delta);
        add(&format!("len{which}-mode{mode}"), h, &lens);
    }
    for mode in [1u8, 3] {
        let mut h = tok_header(mode, 3, 4, 0);
        (h.grad_len, h.grad_delta) = (6, -1);
        add(&format!("grad-short-mode{mode}"), h, &lens);
    }
    let mut h = tok_header(0, 3, 4, 0);
    (h.tokens_len, h.tokens_delta) = (6, 1);
    add("tokens-long-mode0", h, &lens);
    let mut h = tok_header(4, 3, 4, 0);
    (h.logits_len, h.logits_delta) = (6, 1);
    add("logits-not-multiple-mode4", h, &lens);
    let mut h = tok_header(3, 3, 4, 0);
    h.cols = 0;
    add("cols-zero-mode3", h, &lens);
    for mode in [0u8, 2] {
        add(
            &format!("zero-rows-mode{mode}"),
            tok_header(mode, 0, 7, 0),
            &[],
        );
    }
    let mut h = tok_header(1, 3, 4, 0);
    h.outputs = 0b11111; // grads.entropy without the saved entropy
    add("saved-entropy-missing-mode1", h, &lens);
    let mut h = tok_header(2, 3, 4, 0);
    h.outputs = 0b10111; // the saved entropy without grads.entropy
    add(
        "saved-entropy-extra-mode2",
        h,
        &words(&x, &[cls(0), cls(3), cls(2)], &[1.0; 3], &[]),
    );
    // Logits within 4e-34 of each other and an entropy gradient: the reference's f64 `u + H`
    // loses `d - sum p d` there (the tiers are the exact ones; see `token`'s module docs).
    let mut x = [SUB, -0.0, 1e-40, 0.0].repeat(5);
    x[16] = 3.851_860_3e-34;
    for mode in [2u8, 3] {
        let mut h = tok_header(mode, 1, 17, 0);
        h.outputs = 0b1101;
        add(
            &format!("tiny-spread-mode{mode}"),
            h,
            &words(&x[..17], &[cls(0)], &[1.173_198_5e-38], &[2.0]),
        );
    }
    // Long rows, pseudo-random logits, tokens and gradients; one a one-hot spike.
    for (cols, mode, mask) in [
        (4099usize, 3u8, 0u8),
        (4100, 1, 0),
        (257, 4, 0),
        (1000, 0, 0),
        (4100, 3, 2),
    ] {
        let mut h = tok_header(mode, 3, cols, 0);
        h.mask = mask;
        h.fill = Fill {
            mode: 2,
            seed: cols as u32 + mode as u32,
            ..konst(0.0)
        };
        h.xwin = Win {
            center: 2,
            spread: 3,
        };
        h.gwin = Win {
            center: 0,
            spread: 2,
        };
        add(&format!("long{cols}-mode{mode}-mask{mask}"), h, &[]);
    }
}

/// The cut bytes of `ShardHeader::cuts` (`crate::shard::split_vocab`).
fn cut_bytes(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |a, &v| a << 8 | v as u64)
}

fn shard_header(op: u8, rows: u8, cols: usize, shards: usize, cuts: &[u8]) -> ShardHeader {
    ShardHeader {
        op,
        rows,
        cols: crate::shard::cols_sel(cols),
        shards: (shards - 1) as u8,
        cuts: cut_bytes(cuts),
        extras: 3,
        xwin: Win::RAW,
        gwin: Win::RAW,
        fill: konst(0.0),
        ..Default::default()
    }
}

/// Seeds of the `shard` target (`op` 0 token shards, 1 cross-entropy shards, 2 top-k): plain
/// rows split in 1..=6 shards (empty and one-class shards, every merge order kind), options,
/// ignored rows, masks, offsets, NaN/inf rows, the injected errors, bad tokens and options,
/// top-k with ties, `k` past the classes and the invalid `k`, long rows. The data words are
/// the logits, the tokens (`0xE0000000` the ignore index), then `grads.logp` and
/// `grads.entropy` (token shards) or the class weights and row scales (cross-entropy).
fn shard_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: &str, h: ShardHeader, words: &[u32]| {
        for t in 0..2u8 {
            out.push(Seed {
                target: "shard",
                name: format!("{name}-t{t}"),
                bytes: encode_words(&ShardHeader { tier: t, ..h }, words),
            });
        }
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let ign = 0xE000_0000u32;
    let x: Vec<f32> = (0..4 * 17)
        .map(|i| ((i * 37) % 23) as f32 * 0.3 - 3.0)
        .collect();
    let toks = [cls(0), cls(16), cls(5), cls(11)];
    let grads = bits(&[1.0, -0.5, 2.0, 0.25, 0.3, 1.0, -0.7, 2.0]);
    let plain = [bits(&x), toks.to_vec(), grads.clone()].concat();
    // Splits: proportional; one-class and empty shards (abs 1, repeat, classes - 1, 0 and
    // classes); six shards as a tree; one shard.
    let splits: [(&str, usize, &[u8], u32); 5] = [
        ("thirds", 3, &[21, 42], 0),
        (
            "one-class-empty",
            6,
            &[0x41, 0xC0, 0x81, 0x00, 0xBF],
            0x1234_5678,
        ),
        ("six-tree", 6, &[10, 20, 30, 40, 50], 0x8000_0FFF),
        ("whole", 1, &[], 0),
        ("two-tree", 2, &[0x43], 0x8000_0001),
    ];
    for (i, op) in [(0usize, 0u8), (1, 0), (2, 0), (3, 0), (1, 1), (4, 2)] {
        let (name, n, cuts, order) = splits[i];
        {
            let mut h = shard_header(op, 4, 17, n, cuts);
            (h.order, h.top_k) = (order, 4);
            let ce_words = [bits(&x), toks.to_vec()].concat();
            add(
                &format!("plain-{name}-op{op}"),
                h,
                if op == 1 { &ce_words } else { &plain },
            );
        }
    }
    // Token options: temperatures 0.5 and 2, a cap, an ignored row, masks, offsets.
    let two = |h: &mut ShardHeader| (h.shards, h.cuts) = (2, cut_bytes(&[0x45, 0x8A]));
    let tok_ign = [bits(&x), vec![cls(3), ign, cls(9), cls(16)], grads.clone()].concat();
    for (name, temp, tb, cap, mask, offset, op) in [
        ("temp0.5", 3u8, 0u32, 0u8, 0u8, 0u8, 0u8),
        ("temp2-cap30", 3, 1, 4, 0, 0, 0),
        ("mask2-offset2", 3, 2, 0, 2, 2, 2),
        ("mask3-offset3", 0, 0, 0, 3, 3, 0),
        ("cap-2^-3-mask2", 0, 0, 5, 2, 0, 0),
    ] {
        {
            let mut h = shard_header(op, 4, 17, 3, &[]);
            two(&mut h);
            (h.temp, h.temp_bits, h.softcap, h.softcap_bits) = (temp, tb, cap, 17);
            (h.mask, h.offset, h.top_k) = (mask, offset, 63);
            add(&format!("{name}-op{op}"), h, &tok_ign);
        }
    }
    // Special rows: a NaN, +inf, all -inf, -inf at the token, +-1e29, NaN in an ignored row,
    // +-MAX, subnormals (as the token seeds).
    let mut sx = vec![0.25f32; 8 * 17];
    sx[16] = NAN_PAYLOAD;
    sx[17 + 3] = INF;
    sx[34..51].fill(NINF);
    for j in [2, 5, 9] {
        sx[51 + j] = NINF;
    }
    for (j, v) in sx[68..85].iter_mut().enumerate() {
        *v = [1e29, -1e29, 0.0, 3.0][j % 4];
    }
    sx[85..102].fill(NAN);
    for (j, v) in sx[102..119].iter_mut().enumerate() {
        *v = [MAX, -MAX, 0.0][j % 3];
    }
    for (j, v) in sx[119..].iter_mut().enumerate() {
        *v = [SUB, -0.0, 1e-40, 0.0][j % 4];
    }
    let stoks = vec![cls(1), cls(2), cls(3), cls(2), cls(0), ign, cls(1), cls(4)];
    let sg = bits(&[
        1.0, -1.0, 2.0, 0.5, -2.0, 1.0, 1.0, 3.0, 0.5, 1.0, -1.0, 0.25, 1.0, 1.0, -0.5, 2.0,
    ]);
    for (op, cname, cap) in [(0u8, "", 0u8), (0, "-cap30", 4), (1, "", 0), (2, "", 0)] {
        {
            let mut h = shard_header(op, 8, 17, 3, &[0x42, 0x8C]);
            (h.softcap, h.top_k, h.extras) = (cap, 6, if op == 1 { 0 } else { 3 });
            add(
                &format!("specials-op{op}{cname}"),
                h,
                &[bits(&sx), stoks.clone(), sg.clone()].concat(),
            );
        }
    }
    // Injections (a NaN, +inf, -inf, a row of -inf) at word 20 (row 1).
    for (inj, op) in [(4u8, 0u8), (5, 1), (6, 2), (7, 0)] {
        let mut h = shard_header(op, 4, 17, 3, &[0x43, 0x8D]);
        (h.inject, h.inject_pos, h.extras) = (inj, 20, if op == 1 { 0 } else { 3 });
        add(
            &format!("inject{inj}-op{op}"),
            h,
            &[bits(&x), toks.to_vec(), grads.clone()].concat(),
        );
    }
    // Cross-entropy options: weights, smoothing, z-loss, cap, the reductions, scale, row
    // scales, an ignored row, all rows ignored with `AllIgnored::Zero`, smoothing with masks.
    let w: Vec<f32> = (0..17).map(|i| 0.25 + (i % 5) as f32 * 0.5).collect();
    let rs = [0.5f32, -1.0, 2.0, 0.75];
    let ce_words = |t: &[u32]| [bits(&x), t.to_vec(), bits(&w), bits(&rs)].concat();
    for (name, red, sm, zl, cap, sc, mask) in [
        ("mean-weights-smoothing", 0u8, 2u8, 0u8, 0u8, 0u8, 0u8),
        ("sum-zloss-cap", 1, 0, 3, 4, 3, 0),
        ("none-rowscale-smoothing-zloss", 2, 7, 3, 0, 4, 0),
        ("mean-smoothing-mask1", 0, 2, 0, 0, 0, 1),
        ("all-ignored-zero", 16, 2, 0, 0, 0, 0),
    ] {
        let mut h = shard_header(1, 4, 17, 4, &[0x45, 0xC0, 0x8A]);
        (
            h.reduction,
            h.smoothing,
            h.z_loss,
            h.softcap,
            h.scale,
            h.mask,
        ) = (red, sm, zl, cap, sc, mask);
        let t = if name.starts_with("all") {
            vec![ign; 4]
        } else {
            vec![cls(3), ign, cls(9), cls(16)]
        };
        add(&format!("ce-{name}"), h, &ce_words(&t));
    }
    // Errors: states one long and one short, a shard past the vocabulary (and an overflowing
    // offset), a vocabulary over MAX_CLASSES; a bad token (`cols`); an invalid temperature
    // and label smoothing; the invalid top-k.
    for (name, err, es, op) in [
        ("states-long", 5u8, 1u8, 0u8),
        ("states-short", 5, 0x82, 1),
        ("shard-past", 6, 2, 0),
        ("shard-overflow", 6, 0x80, 1),
        ("too-many-classes", 7, 1, 0),
    ] {
        let mut h = shard_header(op, 4, 17, 3, &[0x45, 0x8A]);
        (h.err, h.err_shard, h.extras) = (err, es, if op == 1 { 0 } else { 3 });
        add(&format!("err-{name}-op{op}"), h, &plain);
    }
    let bad_tok = [
        bits(&x),
        vec![cls(1), 0xF100_0000, cls(2), cls(3)],
        grads.clone(),
    ]
    .concat();
    let mut h = shard_header(0, 4, 17, 2, &[0x45]);
    h.label = 1;
    add("bad-token-op0", h, &bad_tok);
    let mut h = shard_header(0, 4, 17, 2, &[0x45]);
    (h.temp, h.temp_bits) = (6, 0);
    add("temp-zero-op0", h, &plain);
    let mut h = shard_header(1, 4, 17, 2, &[0x45]);
    (h.smoothing, h.smoothing_bits, h.extras) = (6, 0, 0);
    add("smoothing-nan-op1", h, &plain);
    let mut h = shard_header(2, 4, 17, 1, &[]);
    h.top_k = 255;
    add("top-k-65-op2", h, &plain);
    // Top-k: ties and k past the classes; one class; long rows.
    let tx: Vec<f32> = (0..3 * 9).map(|i| [1.0, 3.0, 3.0, 0.5][i % 4]).collect();
    for (kk, cap) in [(0u8, 0u8), (8, 4), (19, 0)] {
        let mut h = shard_header(2, 3, 9, 1, &[]);
        (h.top_k, h.softcap) = (kk, cap);
        add(
            &format!("top-k{}-ties-cap{cap}", kk + 1),
            h,
            &[bits(&tx), vec![cls(0), cls(3), cls(8)]].concat(),
        );
    }
    let mut h = shard_header(0, 3, 1, 3, &[0x41, 0xC0]);
    h.top_k = 1;
    add(
        "one-class-op0",
        h,
        &[
            bits(&[0.5, NINF, 2.0]),
            vec![cls(0), ign, cls(0)],
            grads.clone(),
        ]
        .concat(),
    );
    // Long rows: 101 logits cycled (`Fill` mode 0), then the tokens and the rest from the
    // same cycle (finite words in the windows: valid tokens).
    let cyc: Vec<f32> = (0..101)
        .map(|i| ((i * 53) % 97) as f32 * 0.11 - 5.0)
        .collect();
    for (cols, op, mask) in [(3000usize, 0u8, 0u8), (2999, 1, 1), (3000, 2, 0)] {
        let mut h = shard_header(op, 3, cols, 5, &[0x30, 0x7F, 0x81, 0x10]);
        (h.mask, h.top_k, h.extras) = (mask, 63, if op == 1 { 1 } else { 3 });
        h.fill = Fill {
            mode: 0,
            ..konst(0.0)
        };
        h.xwin = Win {
            center: 2,
            spread: 3,
        };
        h.gwin = Win {
            center: 0,
            spread: 2,
        };
        add(&format!("long{cols}-op{op}-mask{mask}"), h, &bits(&cyc));
    }
}
