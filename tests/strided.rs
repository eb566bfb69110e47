//! Strided rows (`MatRef` / `MatMut`): every strided function against the contiguous function
//! on the rows copied out, bit for bit, for leading dimensions `cols`, `cols + 1`, `cols + 17`
//! and `2 cols`, on every path's row lengths (short rows, three-pass rows, online rows), with
//! and without the last row's padding in the slice. The padding between rows holds NaN in the
//! inputs (a kernel that read it would change a row's result) and a sentinel in the outputs,
//! which must survive untouched. One test per tier (`per_tier!`).

#[macro_use]
mod common;

use common::rng;
use rand::Rng;
use softmax_kernels::{Error, Kernels, MaskedRows, MatMut, MatRef, SoftmaxOptions};

/// The value every output padding float starts as and must keep.
const SENTINEL: f32 = -12345.5;

/// A `rows x cols` matrix with stride `ld` in a buffer whose padding holds `pad`: the buffer,
/// and whether it keeps the last row's padding.
fn strided(dense: &[f32], rows: usize, cols: usize, ld: usize, pad: f32, full: bool) -> Vec<f32> {
    let len = if full || rows == 0 {
        rows * ld
    } else {
        (rows - 1) * ld + cols
    };
    let mut v = vec![pad; len];
    for r in 0..rows {
        v[r * ld..r * ld + cols].copy_from_slice(&dense[r * cols..(r + 1) * cols]);
    }
    v
}

/// The rows of a strided buffer copied out, and a check that its padding is still `pad`.
fn rows_of(v: &[f32], rows: usize, cols: usize, ld: usize, pad: f32, what: &str) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for (i, x) in v.iter().enumerate() {
        if i % ld < cols {
            out.push(*x);
        } else {
            assert_eq!(
                x.to_bits(),
                pad.to_bits(),
                "{what}: padding float {i} was written"
            );
        }
    }
    assert_eq!(out.len(), rows * cols);
    out
}

fn same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "{what}: entry {i}: strided {x:e} ({:#x}), contiguous {y:e} ({:#x})",
            x.to_bits(),
            y.to_bits()
        );
    }
}

fn logits(g: &mut rand::rngs::StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..rows * cols)
        .map(|_| g.gen_range(-10.0f32..10.0))
        .collect();
    // Special rows: a masked entry, a fully masked row, a huge logit.
    for r in 0..rows {
        let row = &mut x[r * cols..(r + 1) * cols];
        match r % 5 {
            1 => row[g.gen_range(0..cols)] = f32::NEG_INFINITY,
            2 if r == 2 => row.iter_mut().for_each(|v| *v = f32::NEG_INFINITY),
            3 => row[g.gen_range(0..cols)] = 90.0,
            _ => {}
        }
    }
    x
}

fn shapes() -> Vec<(usize, usize)> {
    let mut s = Vec::new();
    for cols in [1, 3, 8, 10, 16, 17, 31, 32, 33, 64, 65, 100, 1000] {
        for rows in [0, 1, 2, 3, 5, 9, 70] {
            s.push((rows, cols));
        }
    }
    let online = softmax_kernels::tuning::ONLINE_MIN_COLS + 5;
    s.push((1, online));
    s.push((3, online));
    s
}

fn lds(cols: usize) -> [usize; 4] {
    [cols, cols + 1, cols + 17, 2 * cols]
}

fn forward(k: &Kernels) {
    let mut g = rng(0x5719_1de0);
    for (rows, cols) in shapes() {
        let x = logits(&mut g, rows, cols);
        for opts in [
            SoftmaxOptions::default(),
            SoftmaxOptions::default().masked_rows(MaskedRows::Zero),
        ] {
            let mut want_p = vec![0.0f32; rows * cols];
            let mut want_l = vec![0.0f32; rows * cols];
            let mut want_lse = vec![0.0f32; rows];
            if rows > 0 {
                k.softmax_with(&x, &mut want_p, cols, opts).unwrap();
                k.log_softmax_with(&x, &mut want_l, cols, opts).unwrap();
                k.logsumexp(&x, &mut want_lse, cols).unwrap();
            }
            for (i, ldx) in lds(cols).into_iter().enumerate() {
                // The output's stride differs from the input's in some cases.
                let ldy = lds(cols)[(i + 1) % 4];
                let full = (rows + cols + i) % 2 == 0;
                let what = format!("{} {rows}x{cols} ldx {ldx} ldy {ldy}", k.isa());
                let xs = strided(&x, rows, cols, ldx, f32::NAN, full);
                let xv = MatRef::new(&xs, rows, cols, ldx).unwrap();
                for log in [false, true] {
                    let mut ys = strided(&vec![0.0; rows * cols], rows, cols, ldy, SENTINEL, !full);
                    let yv = MatMut::new(&mut ys, rows, cols, ldy).unwrap();
                    if log {
                        k.log_softmax_strided(xv, yv, opts).unwrap();
                    } else {
                        k.softmax_strided(xv, yv, opts).unwrap();
                    }
                    let got = rows_of(&ys, rows, cols, ldy, SENTINEL, &what);
                    let want = if log { &want_l } else { &want_p };
                    same_bits(&got, want, &format!("{what} log {log}"));

                    // In place: the input's own stride.
                    let mut zs = strided(&x, rows, cols, ldx, SENTINEL, full);
                    let zv = MatMut::new(&mut zs, rows, cols, ldx).unwrap();
                    if log {
                        k.log_softmax_strided_inplace(zv, opts).unwrap();
                    } else {
                        k.softmax_strided_inplace(zv, opts).unwrap();
                    }
                    let got = rows_of(&zs, rows, cols, ldx, SENTINEL, &what);
                    same_bits(&got, want, &format!("{what} log {log} in place"));
                }
                let mut lse = vec![0.0f32; rows];
                k.logsumexp_strided(xv, &mut lse).unwrap();
                same_bits(&lse, &want_lse, &format!("{what} logsumexp"));
                // The input is untouched.
                same_bits(&xs, &strided(&x, rows, cols, ldx, f32::NAN, full), &what);
            }
        }
    }
}

fn backward(k: &Kernels) {
    let mut g = rng(0xbac4_57de);
    for (rows, cols) in shapes() {
        if rows * cols > 100_000 {
            continue;
        }
        let x = logits(&mut g, rows, cols)
            .iter()
            .map(|v| v.max(-30.0))
            .collect::<Vec<_>>();
        let mut p = vec![0.0f32; rows * cols];
        let mut lp = vec![0.0f32; rows * cols];
        if rows > 0 {
            k.softmax(&x, &mut p, cols).unwrap();
            k.log_softmax(&x, &mut lp, cols).unwrap();
        }
        let dy: Vec<f32> = (0..rows * cols)
            .map(|_| g.gen_range(-1.0f32..1.0))
            .collect();
        for log in [false, true] {
            let y = if log { &lp } else { &p };
            let mut want = vec![0.0f32; rows * cols];
            if rows > 0 {
                if log {
                    k.log_softmax_backward(y, &dy, &mut want, cols).unwrap();
                } else {
                    k.softmax_backward(y, &dy, &mut want, cols).unwrap();
                }
            }
            let l = lds(cols);
            for i in 0..4 {
                let (ly, ldy, ldx) = (l[i], l[(i + 1) % 4], l[(i + 2) % 4]);
                let what = format!(
                    "{} {rows}x{cols} backward log {log} ld {ly} {ldy} {ldx}",
                    k.isa()
                );
                let ys = strided(y, rows, cols, ly, f32::NAN, true);
                let dys = strided(&dy, rows, cols, ldy, f32::NAN, false);
                let mut dxs = strided(&vec![0.0; rows * cols], rows, cols, ldx, SENTINEL, true);
                let (yv, dyv) = (
                    MatRef::new(&ys, rows, cols, ly).unwrap(),
                    MatRef::new(&dys, rows, cols, ldy).unwrap(),
                );
                let dxv = MatMut::new(&mut dxs, rows, cols, ldx).unwrap();
                if log {
                    k.log_softmax_backward_strided(yv, dyv, dxv).unwrap();
                } else {
                    k.softmax_backward_strided(yv, dyv, dxv).unwrap();
                }
                let got = rows_of(&dxs, rows, cols, ldx, SENTINEL, &what);
                same_bits(&got, &want, &what);
            }
        }
    }
}

per_tier!(softmax_forward => forward, softmax_backward => backward);

#[test]
fn views_reject_bad_layouts() {
    let v = [0.0f32; 10];
    // ld below the row length.
    assert!(matches!(
        MatRef::new(&v, 2, 5, 4),
        Err(Error::LeadingDim { ld: 4, cols: 5, .. })
    ));
    // Neither rows * ld (12) nor (rows - 1) * ld + cols (11).
    assert!(matches!(
        MatRef::new(&v, 2, 5, 6),
        Err(Error::MatrixLength { actual: 10, .. })
    ));
    // Overflow is an error, not a panic.
    assert!(matches!(
        MatRef::new(&v, usize::MAX, 1, 2),
        Err(Error::SizeOverflow { .. })
    ));
    // Both lengths are accepted.
    assert!(MatRef::new(&v, 2, 4, 5).is_ok()); // 10 = 2 * 5
    assert!(MatRef::new(&v[..9], 2, 4, 5).is_ok()); // 9 = 5 + 4
    assert!(matches!(
        MatRef::dense(&v, 3),
        Err(Error::NotMultiple {
            len: 10,
            cols: 3,
            ..
        })
    ));
    assert!(matches!(MatRef::dense(&v, 0), Err(Error::ZeroDim { .. })));
    let m = MatRef::new(&v, 2, 4, 5).unwrap();
    assert_eq!((m.rows(), m.cols(), m.ld()), (2, 4, 5));
    assert_eq!(m.row(1).map(<[f32]>::len), Some(4));
    assert!(m.row(2).is_none());
}

#[test]
fn strided_calls_reject_bad_shapes() {
    common::note_unavailable_tiers();
    let k = Kernels::best();
    let x = [0.0f32; 12];
    let mut y = [0.0f32; 12];
    let xv = MatRef::new(&x, 3, 4, 4).unwrap();
    let err = k
        .softmax_strided(
            xv,
            MatMut::new(&mut y, 2, 4, 6).unwrap(),
            Default::default(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            arg: "y",
            expected: (3, 4),
            actual: (2, 4)
        }
    );
    assert!(err.to_string().contains("[2, 4]"));
    // Zero columns: the same error as the contiguous functions.
    let e: [f32; 0] = [];
    let zero = MatRef::new(&e, 3, 0, 0).unwrap();
    assert!(matches!(
        k.logsumexp_strided(zero, &mut [0.0; 3]),
        Err(Error::ZeroDim { .. })
    ));
    assert!(matches!(
        k.logsumexp_strided(xv, &mut [0.0; 2]),
        Err(Error::LengthMismatch { arg: "out", .. })
    ));
    let dy = [0.0f32; 12];
    let mut dx = [0.0f32; 12];
    assert!(matches!(
        k.softmax_backward_strided(
            xv,
            MatRef::new(&dy, 4, 3, 3).unwrap(),
            MatMut::new(&mut dx, 3, 4, 4).unwrap()
        ),
        Err(Error::ShapeMismatch { arg: "dy", .. })
    ));
    // The free functions agree.
    let mut y2 = [0.0f32; 12];
    softmax_kernels::softmax_strided(xv, MatMut::dense(&mut y2, 4).unwrap(), Default::default())
        .unwrap();
    assert_eq!(y2, [0.25; 12]);
}

/// What one cross-entropy call produced: the stats' bits, the gradient rows, the per-row
/// outputs.
#[derive(Debug, PartialEq)]
struct CeRun {
    loss: u32,
    loss_f64: u64,
    correct: Option<usize>,
    grad: Vec<u32>,
    row_loss: Vec<u32>,
    lse: Vec<u32>,
    argmax: Vec<u32>,
}

/// The first field and entry where two runs differ.
fn first_difference(a: &CeRun, b: &CeRun) -> String {
    let scalars = [
        ("loss", a.loss as u64, b.loss as u64),
        ("loss_f64", a.loss_f64, b.loss_f64),
    ];
    for (name, x, y) in scalars {
        if x != y {
            return format!("{name}: {x:#x} vs {y:#x}");
        }
    }
    if a.correct != b.correct {
        return format!("correct: {:?} vs {:?}", a.correct, b.correct);
    }
    for (name, x, y) in [
        ("grad", &a.grad, &b.grad),
        ("row_loss", &a.row_loss, &b.row_loss),
        ("lse", &a.lse, &b.lse),
        ("argmax", &a.argmax, &b.argmax),
    ] {
        if x.len() != y.len() {
            return format!("{name}: {} vs {} entries", x.len(), y.len());
        }
        if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i]) {
            return format!("{name}[{i}]: {:#x} vs {:#x}", x[i], y[i]);
        }
    }
    "nothing".to_string()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The cross-entropy sweep: for each shape, option set, target kind and logits mode (loss
/// only, gradient buffer, in place), the strided call against the contiguous call on the
/// same rows, bit for bit; padding of the logits NaN, of the gradient a sentinel that must
/// survive.
fn cross_entropy(k: &Kernels) {
    use softmax_kernels::{
        CrossEntropyOptions, CrossEntropyOutputs, Logits, Reduction, StridedLogits, StridedTargets,
        Targets,
    };
    let mut g = rng(0xce57_81de);
    let mut shapes = Vec::new();
    for cols in [1, 2, 10, 16, 17, 33, 64, 65, 100, 1000] {
        for rows in [1, 2, 3, 5, 70] {
            shapes.push((rows, cols));
        }
    }
    shapes.push((3, 32000));
    for (rows, cols) in shapes {
        let x = logits(&mut g, rows, cols);
        let labels: Vec<i64> = (0..rows)
            .map(|r| {
                if r % 7 == 4 {
                    -100
                } else {
                    g.gen_range(0..cols as i64)
                }
            })
            .collect();
        let mut probs: Vec<f32> = (0..rows * cols).map(|_| g.gen_range(0.0f32..1.0)).collect();
        for r in 0..rows {
            let s: f32 = probs[r * cols..(r + 1) * cols].iter().sum();
            probs[r * cols..(r + 1) * cols]
                .iter_mut()
                .for_each(|v| *v /= s);
        }
        let weight: Vec<f32> = (0..cols).map(|_| g.gen_range(0.5f32..2.0)).collect();
        let row_scale: Vec<f32> = (0..rows).map(|_| g.gen_range(0.5f32..2.0)).collect();
        let d = CrossEntropyOptions::default();
        let option_sets = [
            (d, false),
            (d, true),
            (d.reduction(Reduction::None).row_scale(&row_scale), true),
            (d.weight(&weight).label_smoothing(0.1), false),
            (d.z_loss(1e-3).softcap(8.0), true),
            (d.reduction(Reduction::Sum).scale(0.5), false),
        ];
        for (si, (opts, outs)) in option_sets.iter().enumerate() {
            for probs_targets in [false, true] {
                if probs_targets && (opts.weight.is_some() || opts.label_smoothing > 0.0) {
                    // (Weights and smoothing with probabilities are covered elsewhere; the
                    // stride is what this test is about.)
                    continue;
                }
                for mode in 0..3 {
                    // The contiguous call.
                    let run = |layout: Option<(usize, usize, usize, bool)>| -> CeRun {
                        let (mut rl, mut lse, mut am) =
                            (vec![0.0f32; rows], vec![0.0f32; rows], vec![0u32; rows]);
                        let mut out = if *outs {
                            CrossEntropyOutputs {
                                row_loss: Some(&mut rl),
                                lse: Some(&mut lse),
                                argmax: Some(&mut am),
                            }
                        } else {
                            CrossEntropyOutputs::default()
                        };
                        let (st, grad) = match layout {
                            None => {
                                let mut xc = x.clone();
                                let mut gc = vec![0.0f32; rows * cols];
                                let logits = match mode {
                                    0 => Logits::Read(&xc),
                                    1 => Logits::Grad(&xc, &mut gc),
                                    _ => Logits::InPlace(&mut xc),
                                };
                                let t = if probs_targets {
                                    Targets::Probs(&probs)
                                } else {
                                    Targets::Classes(&labels)
                                };
                                let st = k.cross_entropy_with(logits, t, cols, opts, &mut out);
                                let grad = match mode {
                                    0 => Vec::new(),
                                    1 => gc,
                                    _ => xc,
                                };
                                (st.unwrap(), grad)
                            }
                            Some((ldx, ldg, ldy, full)) => {
                                let mut xs = strided(&x, rows, cols, ldx, f32::NAN, full);
                                let mut gs = strided(
                                    &vec![0.0; rows * cols],
                                    rows,
                                    cols,
                                    ldg,
                                    SENTINEL,
                                    !full,
                                );
                                let ys = strided(&probs, rows, cols, ldy, f32::NAN, full);
                                let yv = MatRef::new(&ys, rows, cols, ldy).unwrap();
                                let t = if probs_targets {
                                    StridedTargets::Probs(yv)
                                } else {
                                    StridedTargets::Classes(&labels)
                                };
                                let st = match mode {
                                    0 => {
                                        let xv = MatRef::new(&xs, rows, cols, ldx).unwrap();
                                        k.cross_entropy_strided(
                                            StridedLogits::Read(xv),
                                            t,
                                            opts,
                                            &mut out,
                                        )
                                    }
                                    1 => {
                                        let xv = MatRef::new(&xs, rows, cols, ldx).unwrap();
                                        let gv = MatMut::new(&mut gs, rows, cols, ldg).unwrap();
                                        k.cross_entropy_strided(
                                            StridedLogits::Grad(xv, gv),
                                            t,
                                            opts,
                                            &mut out,
                                        )
                                    }
                                    _ => {
                                        // In place the logits' padding is a sentinel too.
                                        xs = strided(&x, rows, cols, ldx, SENTINEL, full);
                                        let xv = MatMut::new(&mut xs, rows, cols, ldx).unwrap();
                                        k.cross_entropy_strided(
                                            StridedLogits::InPlace(xv),
                                            t,
                                            opts,
                                            &mut out,
                                        )
                                    }
                                }
                                .unwrap();
                                let what = format!("{} CE {rows}x{cols} mode {mode}", k.isa());
                                let grad = match mode {
                                    0 => {
                                        same_bits(
                                            &xs,
                                            &strided(&x, rows, cols, ldx, f32::NAN, full),
                                            &what,
                                        );
                                        Vec::new()
                                    }
                                    1 => rows_of(&gs, rows, cols, ldg, SENTINEL, &what),
                                    _ => rows_of(&xs, rows, cols, ldx, SENTINEL, &what),
                                };
                                (st, grad)
                            }
                        };
                        CeRun {
                            loss: st.loss.to_bits(),
                            loss_f64: st.loss_f64.to_bits(),
                            correct: st.correct,
                            grad: bits(&grad),
                            row_loss: if *outs { bits(&rl) } else { Vec::new() },
                            lse: if *outs { bits(&lse) } else { Vec::new() },
                            argmax: if *outs { am } else { Vec::new() },
                        }
                    };
                    let want = run(None);
                    for (i, ldx) in lds(cols).into_iter().enumerate() {
                        let l = lds(cols);
                        let (ldg, ldy) = (l[(i + 1) % 4], l[(i + 2) % 4]);
                        let full = (rows + i + mode) % 2 == 0;
                        let got = run(Some((ldx, ldg, ldy, full)));
                        if got != want {
                            panic!(
                                "{} CE {rows}x{cols} options {si} probs {probs_targets} mode {mode} \
                                 ld {ldx}/{ldg}/{ldy}: strided != contiguous: {}",
                                k.isa(),
                                first_difference(&got, &want)
                            );
                        }
                    }
                }
            }
        }
    }
}

per_tier!(cross_entropy_rows => cross_entropy);

#[test]
fn strided_cross_entropy_rejects_bad_shapes() {
    use softmax_kernels::{
        CrossEntropyOptions, CrossEntropyOutputs, StridedLogits, StridedTargets,
    };
    let k = Kernels::best();
    let x = [0.0f32; 12];
    let mut gbuf = [0.0f32; 12];
    let xv = MatRef::new(&x, 3, 4, 4).unwrap();
    let d = CrossEntropyOptions::default();
    let err = k
        .cross_entropy_strided(
            StridedLogits::Grad(xv, MatMut::new(&mut gbuf, 3, 3, 4).unwrap()),
            StridedTargets::Classes(&[0i64, 1, 2]),
            &d,
            &mut CrossEntropyOutputs::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { arg: "grad", .. }),
        "{err:?}"
    );
    let y = [0.25f32; 8];
    let err = k
        .cross_entropy_strided(
            StridedLogits::Read(xv),
            StridedTargets::<i64>::Probs(MatRef::new(&y, 2, 4, 4).unwrap()),
            &d,
            &mut CrossEntropyOutputs::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { arg: "targets", .. }),
        "{err:?}"
    );
    // Labels: the row count is the logits view's.
    let err = k
        .cross_entropy_strided(
            StridedLogits::Read(xv),
            StridedTargets::Classes(&[0i64, 1]),
            &d,
            &mut CrossEntropyOutputs::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::LengthMismatch { arg: "targets", .. }),
        "{err:?}"
    );
    let err = k
        .cross_entropy_strided(
            StridedLogits::Read(xv),
            StridedTargets::Classes(&[0i64, 1, 4]),
            &d,
            &mut CrossEntropyOutputs::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::BadLabel { row: 2, .. }), "{err:?}");
}
