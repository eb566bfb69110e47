//! The candle ops (feature `candle`) against candle-nn's own (`softmax_last_dim`,
//! `log_softmax`, `loss::cross_entropy`): forward values and gradients through candle's
//! autograd (`Var`, `backward`), on contiguous tensors, on the last position of a `[B, T, V]`
//! tensor (strided rows, no copy), on a middle-axis `narrow` and a transpose (gathered), and
//! with special values. Run with `cargo test --release --features candle-nn --test candle`.

#![cfg(feature = "candle-nn")]

use candle_core::{DType, Device, IndexOp, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use softmax_kernels::candle as skc;
use softmax_kernels::{CrossEntropyOptions, Reduction};

type R = candle_core::Result<()>;

fn random(g: &mut StdRng, dims: &[usize], scale: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| g.gen_range(-scale..scale)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Element-wise `|a - b| <= abs + rel |b|`, NaN matching NaN.
fn close(a: &Tensor, b: &Tensor, abs: f32, rel: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= abs + rel * y.abs();
        assert!(ok, "{what}: entry {i}: ours {x:e}, candle-nn {y:e}");
    }
}

/// The gradient of `sum_r w_r CE_r` in f64: `w_r (softmax(x_r) - onehot(t_r))`, as f32.
fn exact_grad(x: &Tensor, labels: &[u32], w: &[f32]) -> Tensor {
    let (rows, cols) = x.dims2().unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut g = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let row = &xs[r * cols..(r + 1) * cols];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for c in 0..cols {
            let p = (row[c] as f64 - m).exp() / s;
            let y = if labels[r] as usize == c { 1.0 } else { 0.0 };
            g[r * cols + c] = (w[r] as f64 * (p - y)) as f32;
        }
    }
    Tensor::from_vec(g, (rows, cols), &Device::Cpu).unwrap()
}

/// The gradient of `sum w * softmax(x)` (or `log_softmax`) in f64: `p (w - <w, p>)`, or
/// `w - p sum(w)`, as f32.
fn exact_softmax_grad(x: &Tensor, w: &Tensor, log: bool) -> Tensor {
    let (rows, cols) = x.dims2().unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ws = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut g = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let (row, wr) = (&xs[r * cols..(r + 1) * cols], &ws[r * cols..(r + 1) * cols]);
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let p: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp() / s).collect();
        let dot: f64 = p.iter().zip(wr).map(|(p, &w)| p * w as f64).sum();
        let sw: f64 = wr.iter().map(|&w| w as f64).sum();
        for c in 0..cols {
            g[r * cols + c] = if log {
                wr[c] as f64 - p[c] * sw
            } else {
                p[c] * (wr[c] as f64 - dot)
            } as f32;
        }
    }
    Tensor::from_vec(g, (rows, cols), &Device::Cpu).unwrap()
}

/// softmax and log_softmax of each row in f64, rounded to f32.
fn exact_forward(x: &Tensor) -> (Tensor, Tensor) {
    let (rows, cols) = x.dims2().unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (mut p, mut lp) = (vec![0.0f32; rows * cols], vec![0.0f32; rows * cols]);
    for r in 0..rows {
        let row = &xs[r * cols..(r + 1) * cols];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for c in 0..cols {
            let d = row[c] as f64 - m;
            p[r * cols + c] = (d.exp() / s) as f32;
            lp[r * cols + c] = (d - s.ln()) as f32;
        }
    }
    let t = |v| Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
    (t(p), t(lp))
}

/// `close` with the absolute tolerance a fraction `frac` of `b`'s largest magnitude: for
/// candle-nn's gradients, whose error grows with the class count (at 32000 classes an entry
/// of its cross-entropy gradient can be 1% off, from exp(log_softmax) in f32 and a max whose
/// gradient cancels only approximately), while ours are held to f64 separately.
fn close_scaled(a: &Tensor, b: &Tensor, frac: f32, what: &str) {
    let m = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    close(a, b, frac * m, 0.0, what);
}

const SHAPES: [(usize, usize); 4] = [(1, 10), (64, 10), (256, 1000), (8, 32000)];

#[test]
fn softmax_and_log_softmax_match_candle_nn() -> R {
    let mut g = StdRng::seed_from_u64(0xca9d_1e01);
    for (rows, cols) in SHAPES {
        let x = random(&mut g, &[rows, cols], 8.0);
        let what = format!("{rows}x{cols}");
        let (p, lp) = (skc::softmax_last_dim(&x)?, skc::log_softmax_last_dim(&x)?);
        // Against f64: the crate's contract (a few ulp).
        let (ep, elp) = exact_forward(&x);
        close(&p, &ep, 1e-37, 2e-6, &format!("{what} softmax, f64"));
        close(&lp, &elp, 2e-6, 2e-6, &format!("{what} log_softmax, f64"));
        // Against candle-nn, whose f32 sums over 32000 classes drift by about 1e-5.
        let theirs = candle_nn::ops::softmax_last_dim(&x)?;
        close(&p, &theirs, 1e-9, 1e-4, &format!("{what} softmax"));
        let theirs = candle_nn::ops::log_softmax(&x, D::Minus1)?;
        close(&lp, &theirs, 1e-4, 1e-4, &format!("{what} log_softmax"));
        // Gradients of a weighted sum of the outputs.
        let w = random(&mut g, &[rows, cols], 1.0);
        for log in [false, true] {
            let v = Var::from_tensor(&x)?;
            let ours = if log {
                skc::log_softmax_last_dim(v.as_tensor())?
            } else {
                skc::softmax_last_dim(v.as_tensor())?
            };
            let gv = (ours * &w)?.sum_all()?.backward()?;
            let v2 = Var::from_tensor(&x)?;
            let theirs = if log {
                candle_nn::ops::log_softmax(v2.as_tensor(), D::Minus1)?
            } else {
                // (`softmax_last_dim` has no backward in candle-nn; `softmax` does.)
                candle_nn::ops::softmax(v2.as_tensor(), D::Minus1)?
            };
            let gt = (theirs * &w)?.sum_all()?.backward()?;
            // candle-nn's gradients go through separate max, exp, sum and log ops and are off
            // by up to a few 1e-4 relative at 1000 classes; ours are checked against f64.
            close_scaled(
                gv.get(&v).unwrap(),
                gt.get(&v2).unwrap(),
                2e-2,
                &format!("{what} grad log {log}"),
            );
            close(
                gv.get(&v).unwrap(),
                &exact_softmax_grad(&x, &w, log),
                // The backward formulas cancel operands of about |w| <= 1 (`w - p sum(w)`,
                // `w - <w, p>`) in f32: a few ulp of 1.
                1e-6,
                1e-5,
                &format!("{what} grad log {log}, f64"),
            );
        }
    }
    Ok(())
}

#[test]
fn strided_and_gathered_layouts() -> R {
    let mut g = StdRng::seed_from_u64(0x57a1_de55);
    let (b, t, v) = (3, 5, 300);
    let x = random(&mut g, &[b, t, v], 6.0);
    // The last position: rows T * V apart, read in place.
    let last = x.i((.., t - 1, ..))?;
    close(
        &skc::softmax_last_dim(&last)?,
        &candle_nn::ops::softmax_last_dim(&last.contiguous()?)?,
        1e-9,
        2e-6,
        "last position",
    );
    // A middle-axis narrow (rows not equally spaced) and a transpose: gathered first.
    let mid = x.narrow(1, 1, 2)?;
    close(
        &skc::log_softmax_last_dim(&mid)?,
        &candle_nn::ops::log_softmax(&mid.contiguous()?, D::Minus1)?,
        2e-6,
        2e-6,
        "narrow of the middle axis",
    );
    let m = random(&mut g, &[40, 30], 6.0);
    let tr = m.t()?;
    close(
        &skc::softmax_last_dim(&tr)?,
        &candle_nn::ops::softmax_last_dim(&tr.contiguous()?)?,
        1e-9,
        2e-6,
        "transpose",
    );
    // The same bits as the crate's slice function on the copied rows.
    let ours = skc::softmax_last_dim(&last)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let copy = last.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mut want = vec![0.0f32; copy.len()];
    softmax_kernels::softmax(&copy, &mut want, v).unwrap();
    assert_eq!(ours, want);
    // Cross-entropy on the last position, with its gradient.
    let labels = Tensor::new(&[1u32, 299, 7], &Device::Cpu)?;
    let xv = Var::from_tensor(&x)?;
    let loss = skc::cross_entropy(
        &xv.as_tensor().i((.., t - 1, ..))?,
        &labels,
        &CrossEntropyOptions::default(),
    )?;
    let grads = loss.backward()?;
    let xv2 = Var::from_tensor(&x)?;
    let loss2 = candle_nn::loss::cross_entropy(&xv2.as_tensor().i((.., t - 1, ..))?, &labels)?;
    let grads2 = loss2.backward()?;
    close(&loss, &loss2, 1e-6, 1e-5, "last-position loss");
    close(
        grads.get(&xv).unwrap(),
        grads2.get(&xv2).unwrap(),
        1e-7,
        1e-4,
        "last-position gradient",
    );
    Ok(())
}

#[test]
fn cross_entropy_matches_candle_nn() -> R {
    let mut g = StdRng::seed_from_u64(0xce_ca9d);
    for (rows, cols) in SHAPES {
        let x = random(&mut g, &[rows, cols], 8.0);
        let labels: Vec<u32> = (0..rows).map(|_| g.gen_range(0..cols as u32)).collect();
        let t = Tensor::new(labels.as_slice(), &Device::Cpu)?;
        let what = format!("{rows}x{cols}");
        let v = Var::from_tensor(&x)?;
        let ours = skc::cross_entropy(v.as_tensor(), &t, &CrossEntropyOptions::default())?;
        let go = ours.backward()?;
        let v2 = Var::from_tensor(&x)?;
        let theirs = candle_nn::loss::cross_entropy(v2.as_tensor(), &t)?;
        let gt = theirs.backward()?;
        assert_eq!(ours.dims(), theirs.dims(), "{what}: a scalar loss");
        close(&ours, &theirs, 1e-6, 1e-5, &format!("{what} loss"));
        close_scaled(
            go.get(&v).unwrap(),
            gt.get(&v2).unwrap(),
            2e-2,
            &format!("{what} gradient"),
        );
        let mean_w = vec![1.0 / rows as f32; rows];
        let exact = exact_grad(&x, &labels, &mean_w);
        close(
            go.get(&v).unwrap(),
            &exact,
            1e-10,
            1e-5,
            &format!("{what} gradient, f64"),
        );
        // i64 labels, and a loss scaled before backward (the upstream gradient).
        let t64 = t.to_dtype(DType::I64)?;
        let v3 = Var::from_tensor(&x)?;
        let l3 =
            (skc::cross_entropy(v3.as_tensor(), &t64, &CrossEntropyOptions::default())? * 3.0)?;
        let g3 = l3.backward()?;
        let want = (gt.get(&v2).unwrap() * 3.0)?;
        close_scaled(
            g3.get(&v3).unwrap(),
            &want,
            2e-2,
            &format!("{what} gradient x3"),
        );
        // Per-row losses against candle's log_softmax + gather, and their gradient for one
        // upstream weight per row.
        let v4 = Var::from_tensor(&x)?;
        let per = skc::cross_entropy_per_row(v4.as_tensor(), &t, &CrossEntropyOptions::default())?;
        let v5 = Var::from_tensor(&x)?;
        let ls = candle_nn::ops::log_softmax(v5.as_tensor(), D::Minus1)?;
        let picked = ls.gather(&t.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
        close(&per, &picked, 1e-6, 1e-5, &format!("{what} per row"));
        let wr = random(&mut g, &[rows], 1.0);
        let g4 = (per * &wr)?.sum_all()?.backward()?;
        let g5 = (picked * &wr)?.sum_all()?.backward()?;
        close_scaled(
            g4.get(&v4).unwrap(),
            g5.get(&v5).unwrap(),
            2e-2,
            &format!("{what} per-row gradient"),
        );
        let exact = exact_grad(&x, &labels, &wr.to_vec1::<f32>()?);
        close(
            g4.get(&v4).unwrap(),
            &exact,
            1e-9,
            1e-5,
            &format!("{what} per-row gradient, f64"),
        );
    }
    Ok(())
}

#[test]
fn special_values_and_options() -> R {
    let ninf = f32::NEG_INFINITY;
    let x = Tensor::new(
        &[
            [0.0f32, ninf, 1.0],
            [ninf, ninf, ninf],
            [100.0, 0.0, -100.0],
        ],
        &Device::Cpu,
    )?;
    // Masked entries and a fully masked row, as candle-nn (NaN for the masked row).
    close(
        &skc::softmax_last_dim(&x)?,
        &candle_nn::ops::softmax_last_dim(&x)?,
        1e-9,
        2e-6,
        "special",
    );
    // Options: label smoothing and the ignore index, against the crate's slice function.
    let t = Tensor::new(&[2i64, -100, 0], &Device::Cpu)?;
    let z = Tensor::new(
        &[[0.5f32, 1.0, 2.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]],
        &Device::Cpu,
    )?;
    let o = CrossEntropyOptions::default().label_smoothing(0.1);
    let ours = skc::cross_entropy(&z, &t, &o)?.to_scalar::<f32>()?;
    let flat = z.flatten_all()?.to_vec1::<f32>()?;
    let want = softmax_kernels::cross_entropy(&flat, &[2i64, -100, 0], 3, &o).unwrap();
    assert_eq!(ours.to_bits(), want.to_bits());
    // Errors are candle errors, not panics.
    assert!(skc::cross_entropy(&z, &Tensor::new(&[5i64, 0, 0], &Device::Cpu)?, &o).is_err());
    assert!(skc::softmax_last_dim(&z.to_dtype(DType::F64)?).is_err());
    assert!(skc::cross_entropy(&z, &t.to_dtype(DType::F32)?, &o).is_err());
    let per = skc::cross_entropy_per_row(
        &z,
        &t,
        &CrossEntropyOptions::default().reduction(Reduction::Mean),
    )?;
    assert_eq!(per.dims(), &[3]);
    Ok(())
}

#[test]
fn in_place_ops() -> R {
    let mut g = StdRng::seed_from_u64(0x1ace_ca9d);
    let (b, t, v) = (3, 4, 700);
    let x = random(&mut g, &[b, t, v], 6.0);
    let before = x.flatten_all()?.to_vec1::<f32>()?;
    // The last position, in place: those rows become the softmax, the rest is untouched.
    let want = skc::softmax_last_dim(&x.i((.., t - 1, ..))?)?;
    let last = x.i((.., t - 1, ..))?;
    skc::softmax_last_dim_inplace(&last)?;
    assert_eq!(
        x.i((.., t - 1, ..))?.flatten_all()?.to_vec1::<f32>()?,
        want.flatten_all()?.to_vec1::<f32>()?
    );
    let after = x.flatten_all()?.to_vec1::<f32>()?;
    for (i, (a, o)) in after.iter().zip(&before).enumerate() {
        if (i / v) % t != t - 1 {
            assert_eq!(
                a.to_bits(),
                o.to_bits(),
                "element {i} outside the rows changed"
            );
        }
    }
    // A contiguous tensor, log_softmax.
    let y = random(&mut g, &[5, 33], 6.0);
    let want = skc::log_softmax_last_dim(&y)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let y2 = y.copy()?;
    skc::log_softmax_last_dim_inplace(&y2)?;
    assert_eq!(y2.flatten_all()?.to_vec1::<f32>()?, want);
    // Rows that are not equally spaced, or not contiguous: an error, nothing written.
    let mid = x.narrow(1, 0, 2)?;
    assert!(skc::softmax_last_dim_inplace(&mid).is_err());
    let m = random(&mut g, &[6, 5], 1.0);
    assert!(skc::softmax_last_dim_inplace(&m.t()?).is_err());
    Ok(())
}

#[test]
fn linear_cross_entropy_matches_the_composition() -> R {
    let mut g = StdRng::seed_from_u64(0x11ce_ca9d);
    for (n, c, d) in [(1, 10, 8), (16, 1000, 64), (5, 3000, 33)] {
        let h = random(&mut g, &[n, d], 1.0);
        let w = random(&mut g, &[c, d], 1.0);
        let labels: Vec<u32> = (0..n).map(|_| g.gen_range(0..c as u32)).collect();
        let t = Tensor::new(labels.as_slice(), &Device::Cpu)?;
        let (hv, wv) = (Var::from_tensor(&h)?, Var::from_tensor(&w)?);
        let ours = skc::linear_cross_entropy(
            hv.as_tensor(),
            wv.as_tensor(),
            &t,
            &CrossEntropyOptions::default(),
        )?;
        let go = (&ours * 2.0)?.backward()?;
        let (hv2, wv2) = (Var::from_tensor(&h)?, Var::from_tensor(&w)?);
        let logits = hv2.as_tensor().matmul(&wv2.as_tensor().t()?)?;
        let theirs = candle_nn::loss::cross_entropy(&logits, &t)?;
        let gt = (&theirs * 2.0)?.backward()?;
        let what = format!("{n}x{c}x{d}");
        close(&ours, &theirs, 1e-6, 1e-5, &format!("{what} loss"));
        close_scaled(
            go.get(&hv).unwrap(),
            gt.get(&hv2).unwrap(),
            1e-3,
            &format!("{what} dh"),
        );
        close_scaled(
            go.get(&wv).unwrap(),
            gt.get(&wv2).unwrap(),
            1e-3,
            &format!("{what} dW"),
        );
        // The crate's own fused call gives the same loss bits.
        let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let st = softmax_kernels::Kernels::active()
            .unwrap()
            .linear_cross_entropy(
                &flat(&h),
                &flat(&w),
                softmax_kernels::MatrixLayout::new(c, d),
                None,
                softmax_kernels::Targets::Classes(&labels),
                &softmax_kernels::LinearCeOptions::default(),
                &mut softmax_kernels::LinearCeOutputs::default(),
            )
            .unwrap();
        assert_eq!(
            ours.to_scalar::<f32>()?.to_bits(),
            st.loss.to_bits(),
            "{what}"
        );
    }
    // W as the transpose of a [D, C] tensor is gathered; a strided h (every second row) too.
    let wt = random(&mut g, &[8, 40], 1.0);
    let h = random(&mut g, &[6, 8], 1.0);
    let t = Tensor::new(&[1u32, 39, 0], &Device::Cpu)?;
    let hs = h.i((0..6, ..))?.reshape((3, 2, 8))?.i((.., 0, ..))?;
    let ours = skc::linear_cross_entropy(&hs, &wt.t()?, &t, &CrossEntropyOptions::default())?;
    let theirs = candle_nn::loss::cross_entropy(&hs.contiguous()?.matmul(&wt)?, &t)?;
    close(&ours, &theirs, 1e-6, 1e-5, "gathered layouts");
    Ok(())
}

/// The largest shape of the issue (4096 x 32000, 512 MiB of logits): the forward softmax and
/// the cross-entropy's loss and gradient through autograd against candle-nn's (the f64
/// comparisons of the other tests stop at 8 x 32000: at this size they would hold 1 GiB
/// arrays per operand).
#[test]
fn largest_shape_matches_candle_nn() -> R {
    let (rows, cols) = (4096, 32000);
    let mut g = StdRng::seed_from_u64(0x4096_3200);
    let x = random(&mut g, &[rows, cols], 8.0);
    let p = skc::softmax_last_dim(&x)?;
    let theirs = candle_nn::ops::softmax_last_dim(&x)?;
    close(&p, &theirs, 1e-9, 1e-4, "4096x32000 softmax");
    drop((p, theirs));
    let labels: Vec<u32> = (0..rows).map(|_| g.gen_range(0..cols as u32)).collect();
    let t = Tensor::new(labels.as_slice(), &Device::Cpu)?;
    let v = Var::from_tensor(&x)?;
    let ours = skc::cross_entropy(v.as_tensor(), &t, &CrossEntropyOptions::default())?;
    let go = ours.backward()?;
    let v2 = Var::from_tensor(&x)?;
    let theirs = candle_nn::loss::cross_entropy(v2.as_tensor(), &t)?;
    let gt = theirs.backward()?;
    close(&ours, &theirs, 1e-6, 1e-5, "4096x32000 loss");
    close_scaled(
        go.get(&v).unwrap(),
        gt.get(&v2).unwrap(),
        2e-2,
        "4096x32000 gradient",
    );
    Ok(())
}
