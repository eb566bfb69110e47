//! Every forward path of the softmax family (`Short`, `Rows`, `Online`) on every row length,
//! through the hidden `Kernels::forward_on_path`: each must meet the contract against the f64
//! oracle (`common::oracle`), and the planned path (`Kernels::softmax_path`) must give the bits
//! of the public functions. Rows hold special values (`-inf`, a fully masked row, huge
//! logits) so each path's special-value rules are exercised.
//!
//! One test per tier, stamped by `common`'s `per_tier!`, so that a failure names its tier; a tier this CPU
//! lacks prints a note and passes.

#[macro_use]
mod common;

use common::oracle;
use common::rng;
use rand::Rng;
use softmax_kernels::softmax::{SoftmaxOp, SoftmaxPath};
use softmax_kernels::{Isa, Kernels, MaskedRows, SoftmaxOptions};

const PATHS: [SoftmaxPath; 3] = [SoftmaxPath::Short, SoftmaxPath::Rows, SoftmaxPath::Online];

fn logits(g: &mut rand::rngs::StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..rows * cols)
        .map(|_| g.gen_range(-8.0f32..8.0))
        .collect();
    for r in 0..rows {
        let row = &mut x[r * cols..(r + 1) * cols];
        match r % 4 {
            1 => row[g.gen_range(0..cols)] = f32::NEG_INFINITY,
            2 if cols > 1 => row[g.gen_range(0..cols)] = 80.0,
            3 if r == 3 => row.iter_mut().for_each(|v| *v = f32::NEG_INFINITY),
            _ => {}
        }
    }
    x
}

fn check_tier(k: &Kernels) {
    let mut g = rng(0x50f7_3a11);
    let mut shapes: Vec<(usize, usize)> = Vec::new();
    for cols in (1..=70).chain([100, 129, 1000, 4097]) {
        shapes.push((5, cols));
    }
    shapes.push((2, 70_000));
    for &(rows, cols) in &shapes {
        let x = logits(&mut g, rows, cols);
        for mz in [false, true] {
            let opts = SoftmaxOptions::default().masked_rows(if mz {
                MaskedRows::Zero
            } else {
                MaskedRows::Nan
            });
            let want_p = oracle::softmax(&x, cols, mz);
            let want_l = oracle::log_softmax(&x, cols, mz);
            let want_s = oracle::logsumexp(&x, cols);
            let planned = k.softmax_path(cols);
            // The public functions (the planned path).
            let mut p = vec![0.0f32; x.len()];
            k.softmax_with(&x, &mut p, cols, opts).unwrap();
            let mut l = vec![0.0f32; x.len()];
            k.log_softmax_with(&x, &mut l, cols, opts).unwrap();
            let mut s = vec![0.0f32; rows];
            k.logsumexp(&x, &mut s, cols).unwrap();
            for path in PATHS {
                let ctx = format!("{} {rows}x{cols} mz {mz} {path:?}", k.isa());
                let mut yp = vec![0.0f32; x.len()];
                k.forward_on_path(path, SoftmaxOp::Softmax, &x, &mut yp, cols, opts)
                    .unwrap();
                oracle::check_softmax(&x, cols, &yp, &want_p, 0.0)
                    .unwrap_or_else(|e| panic!("{ctx} softmax: {e}"));
                let mut yl = vec![0.0f32; x.len()];
                k.forward_on_path(path, SoftmaxOp::LogSoftmax, &x, &mut yl, cols, opts)
                    .unwrap();
                oracle::check_log_softmax(&x, cols, &yl, &want_l, 0.0)
                    .unwrap_or_else(|e| panic!("{ctx} log_softmax: {e}"));
                let mut ys = vec![0.0f32; rows];
                k.forward_on_path(path, SoftmaxOp::LogSumExp, &x, &mut ys, cols, opts)
                    .unwrap();
                oracle::check_logsumexp(&ys, &want_s, 0.0)
                    .unwrap_or_else(|e| panic!("{ctx} logsumexp: {e}"));
                if path == planned {
                    oracle::check_bits(&format!("{ctx} softmax"), &yp, &p).unwrap();
                    oracle::check_bits(&format!("{ctx} log_softmax"), &yl, &l).unwrap();
                    oracle::check_bits(&format!("{ctx} logsumexp"), &ys, &s).unwrap();
                }
            }
        }
    }
    // The plan, as the module docs' table says.
    if k.isa() != Isa::Scalar {
        assert_eq!(k.softmax_path(10), SoftmaxPath::Short);
        assert_eq!(k.softmax_path(1000), SoftmaxPath::Rows);
        assert_eq!(
            k.softmax_path(softmax_kernels::tuning::ONLINE_MIN_COLS),
            SoftmaxPath::Online
        );
        assert_eq!(
            k.softmax_path(softmax_kernels::tuning::ONLINE_MIN_COLS - 1),
            SoftmaxPath::Rows
        );
    }
}

per_tier!(paths => check_tier);
