//! The `ndarray` adapter (feature `ndarray`): standard, row-sliced, column-sliced and
//! row-stepped views against the slice functions on the copied rows, bit for bit, with the
//! elements outside the views untouched; transposed, column-strided and reversed views get
//! `Error::UnsupportedLayout`. One test per tier (`per_tier!`).

#![cfg(feature = "ndarray")]

#[macro_use]
mod common;

use common::rng;
use ndarray::{s, Array1, Array2, ArrayView2};
use rand::Rng;
use softmax_kernels::ndarray as nd;
use softmax_kernels::ndarray::{NdLogits, NdTargets};
use softmax_kernels::{CrossEntropyOptions, CrossEntropyOutputs, Error, Kernels, SoftmaxOptions};

const SENTINEL: f32 = -12345.5;

fn bits(a: ArrayView2<'_, f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// A random `[rows, cols]` array.
fn random(g: &mut rand::rngs::StdRng, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| g.gen_range(-8.0f32..8.0))
}

/// The views the adapter must take: (name, the view of `big`).
fn views(big: &Array2<f32>) -> Vec<(&'static str, ArrayView2<'_, f32>)> {
    let (r, c) = big.dim();
    vec![
        ("standard", big.view()),
        ("columns 3..c-2", big.slice(s![.., 3..c - 2])),
        ("rows 1..", big.slice(s![1.., ..])),
        ("every second row", big.slice(s![..;2, 2..])),
        ("one row", big.slice(s![r - 1..r, 1..])),
    ]
}

fn forward(k: &Kernels) {
    let mut g = rng(0x0dda_77a1);
    for (rows, cols) in [(5, 16), (9, 40), (7, 1030), (3, 70_000)] {
        let big = random(&mut g, rows, cols);
        for (name, x) in views(&big) {
            let copy = x.as_standard_layout().to_owned();
            let (xr, xc) = copy.dim();
            let flat = copy.as_slice().unwrap();
            for log in [false, true] {
                let mut want = vec![0.0f32; flat.len()];
                if log {
                    k.log_softmax(flat, &mut want, xc).unwrap();
                } else {
                    k.softmax(flat, &mut want, xc).unwrap();
                }
                let want = Array2::from_shape_vec((xr, xc), want).unwrap();
                // Out of place, into the middle columns of a larger output.
                let mut out = Array2::from_elem((xr, xc + 5), SENTINEL);
                let y = out.slice_mut(s![.., 2..xc + 2]);
                if log {
                    nd::log_softmax(k, x, y, SoftmaxOptions::default()).unwrap();
                } else {
                    nd::softmax(k, x, y, SoftmaxOptions::default()).unwrap();
                }
                let what = format!("{} {name} {rows}x{cols} log {log}", k.isa());
                assert_eq!(
                    bits(out.slice(s![.., 2..xc + 2])),
                    bits(want.view()),
                    "{what}"
                );
                for v in out
                    .slice(s![.., ..2])
                    .iter()
                    .chain(out.slice(s![.., xc + 2..]))
                {
                    assert_eq!(v.to_bits(), SENTINEL.to_bits(), "{what}: outside written");
                }
                // In place over the same view of a copy of `big`: the view holds the result,
                // every element outside it is unchanged.
                let mut b2 = big.clone();
                let (r, c) = big.dim();
                macro_rules! region {
                    ($a:expr, $slice:ident, $view:ident) => {
                        match name {
                            "standard" => $a.$view(),
                            "columns 3..c-2" => $a.$slice(s![.., 3..c - 2]),
                            "rows 1.." => $a.$slice(s![1.., ..]),
                            "every second row" => $a.$slice(s![..;2, 2..]),
                            _ => $a.$slice(s![r - 1..r, 1..]),
                        }
                    };
                }
                let v = region!(b2, slice_mut, view_mut);
                if log {
                    nd::log_softmax_inplace(k, v, SoftmaxOptions::default()).unwrap();
                } else {
                    nd::softmax_inplace(k, v, SoftmaxOptions::default()).unwrap();
                }
                assert_eq!(
                    bits(region!(b2, slice, view)),
                    bits(want.view()),
                    "{what} in place"
                );
                let mut b3 = b2.clone();
                region!(b3, slice_mut, view_mut).assign(&region!(big, slice, view));
                assert_eq!(
                    bits(b3.view()),
                    bits(big.view()),
                    "{what} in place: outside written"
                );
            }
            let mut lse = Array1::<f32>::zeros(xr);
            nd::logsumexp(k, x, lse.view_mut()).unwrap();
            let mut want = vec![0.0f32; xr];
            k.logsumexp(flat, &mut want, xc).unwrap();
            assert_eq!(
                lse.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{} {name} logsumexp",
                k.isa()
            );
        }
    }
}

fn cross_entropy(k: &Kernels) {
    let mut g = rng(0xce0d_da77);
    for (rows, cols) in [(6, 12), (9, 40), (5, 1030)] {
        let big = random(&mut g, rows, cols);
        for (name, x) in views(&big) {
            let copy = x.as_standard_layout().to_owned();
            let (xr, xc) = copy.dim();
            let labels: Array1<i64> = (0..xr).map(|_| g.gen_range(0..xc as i64)).collect();
            let opts = CrossEntropyOptions::default().label_smoothing(0.05);
            let mut want_g = vec![0.0f32; xr * xc];
            let want = k
                .cross_entropy_fwd_bwd(
                    copy.as_slice().unwrap(),
                    labels.as_slice().unwrap(),
                    &mut want_g,
                    xc,
                    &opts,
                )
                .unwrap();
            let mut out = Array2::from_elem((xr, xc + 3), SENTINEL);
            let loss = nd::cross_entropy_fwd_bwd(
                k,
                x,
                labels.view(),
                out.slice_mut(s![.., 1..xc + 1]),
                &opts,
            )
            .unwrap();
            let what = format!("{} CE {name} {rows}x{cols}", k.isa());
            assert_eq!(loss.to_bits(), want.to_bits(), "{what}: loss");
            let want_g = Array2::from_shape_vec((xr, xc), want_g).unwrap();
            assert_eq!(
                bits(out.slice(s![.., 1..xc + 1])),
                bits(want_g.view()),
                "{what}: gradient"
            );
            assert!(
                out.column(0)
                    .iter()
                    .all(|v| v.to_bits() == SENTINEL.to_bits()),
                "{what}"
            );
            // Loss only, and probability targets (standard layout).
            let l2 = nd::cross_entropy(k, x, labels.view(), &opts).unwrap();
            assert_eq!(l2.to_bits(), want.to_bits(), "{what}: loss only");
            let probs = Array2::from_shape_fn((xr, xc), |(_, j)| if j == 0 { 1.0f32 } else { 0.0 });
            let st = nd::cross_entropy_with(
                k,
                NdLogits::Read(x),
                NdTargets::<i64>::Probs(probs.view()),
                &CrossEntropyOptions::default(),
                &mut CrossEntropyOutputs::default(),
            )
            .unwrap();
            let zeros: Vec<i64> = vec![0; xr];
            let by_label = k
                .cross_entropy(
                    copy.as_slice().unwrap(),
                    &zeros,
                    xc,
                    &CrossEntropyOptions::default(),
                )
                .unwrap();
            assert!(
                (st.loss - by_label).abs() <= 1e-5 * by_label.abs().max(1.0),
                "{what}: probs"
            );
        }
    }
}

per_tier!(ndarray_forward => forward, ndarray_cross_entropy => cross_entropy);

#[test]
fn unsupported_layouts_are_errors() {
    common::note_unavailable_tiers();
    let k = Kernels::best();
    let a = Array2::from_shape_fn((4, 6), |(i, j)| (i + j) as f32);
    let mut y = Array2::<f32>::zeros((6, 4));
    let o = SoftmaxOptions::default();
    // Transposed: rows are not contiguous.
    let e = nd::softmax(k, a.t(), y.view_mut(), o).unwrap_err();
    assert_eq!(
        e,
        Error::UnsupportedLayout {
            arg: "x",
            strides: vec![1, 6]
        }
    );
    assert!(
        e.to_string().contains("as_standard_layout") || e.to_string().contains("standard-layout")
    );
    // Every second column.
    let mut y2 = Array2::<f32>::zeros((4, 3));
    assert!(matches!(
        nd::softmax(k, a.slice(s![.., ..;2]), y2.view_mut(), o),
        Err(Error::UnsupportedLayout { arg: "x", .. })
    ));
    // Reversed rows (negative stride).
    let mut y3 = Array2::<f32>::zeros((4, 6));
    assert!(matches!(
        nd::softmax(k, a.slice(s![..;-1, ..]), y3.view_mut(), o),
        Err(Error::UnsupportedLayout { arg: "x", .. })
    ));
    // A transposed output.
    let mut yt = Array2::<f32>::zeros((6, 4));
    assert!(matches!(
        nd::softmax(k, a.view(), yt.view_mut().reversed_axes(), o),
        Err(Error::UnsupportedLayout { arg: "y", .. })
    ));
    // Shapes must agree.
    assert!(matches!(
        nd::softmax(k, a.view(), y.view_mut(), o),
        Err(Error::ShapeMismatch { arg: "y", .. })
    ));
    // Labels must be contiguous.
    let labels = Array1::from(vec![0i64, 9, 1, 9, 2, 9, 3, 9]);
    assert!(matches!(
        nd::cross_entropy(
            k,
            a.view(),
            labels.slice(s![..;2]),
            &CrossEntropyOptions::default()
        ),
        Err(Error::UnsupportedLayout { arg: "targets", .. })
    ));
    // A broadcast (zero-stride) row view is refused too.
    let row = Array1::from(vec![1.0f32, 2.0, 3.0]);
    let b = row.broadcast((4, 3)).unwrap();
    let mut yb = Array2::<f32>::zeros((4, 3));
    assert!(matches!(
        nd::softmax(k, b, yb.view_mut(), o),
        Err(Error::UnsupportedLayout { arg: "x", .. })
    ));
}
