//! The scalar reference's linear kernels: each output element computed in f64 from the f32
//! inputs and rounded to f32 once. Straightforward loops, never optimized for speed.

use crate::arch::generic::linear::{
    ColSums, Gemm, LinearKernels, Rank1, RankK, SgdParams, SgdSlices,
};

/// The scalar tier's linear kernels.
pub(crate) static LINEAR: LinearKernels = LinearKernels {
    rank1,
    rank_k,
    col_sums,
    sgd_update,
    gemm,
    // The oracle always computes the weight gradient as f64 dot products, never through sgemm.
    rank_k_max: usize::MAX,
    stream: None,
};

/// `W[r, j] += alpha x[r] y[j]`, in f64.
///
/// # Safety
/// As `generic::linear::rank1_rows`.
unsafe fn rank1(p: &Rank1) {
    for r in 0..p.rows {
        for j in 0..p.cols {
            // SAFETY: `r < rows`, `j < cols`: inside the caller's ranges.
            unsafe {
                let w = p.w.add(r * p.ld + j);
                let prod = p.alpha as f64 * *p.x.add(r) as f64 * *p.y.add(j) as f64;
                *w = (*w as f64 + prod) as f32;
            }
        }
    }
}

/// `W[r, j] = beta W[r, j] + alpha sum_i delta[i, r] a[i, j]`, in f64 (W not read when
/// `beta == 0`).
///
/// # Safety
/// As `generic::linear::rank_k_rows`.
unsafe fn rank_k(p: &RankK) {
    for r in 0..p.rows {
        for j in 0..p.cols {
            // SAFETY: `r < rows`, `j < cols`, `i < k`: inside the caller's ranges.
            unsafe {
                let dot: f64 = (0..p.k)
                    .map(|i| *p.delta.add(i * p.ldd + r) as f64 * *p.a.add(i * p.lda + j) as f64)
                    .sum();
                let w = p.w.add(r * p.ld + j);
                let v = p.alpha as f64 * dot;
                *w = if p.beta == 0.0 {
                    v as f32
                } else {
                    (v + p.beta as f64 * *w as f64) as f32
                };
            }
        }
    }
}

/// `out[j] = beta out[j] + alpha sum_r x[r, j]`, in f64.
///
/// # Safety
/// As `generic::linear::col_sums`.
unsafe fn col_sums(p: &ColSums) {
    for j in 0..p.cols {
        // SAFETY: `r < rows`, `j < cols`: inside the caller's ranges.
        unsafe {
            let sum: f64 = (0..p.rows).map(|r| *p.x.add(r * p.ldx + j) as f64).sum();
            let o = p.out.add(j);
            let v = p.alpha as f64 * sum;
            *o = if p.beta == 0.0 {
                v as f32
            } else {
                (v + p.beta as f64 * *o as f64) as f32
            };
        }
    }
}

/// `torch.optim.SGD`'s element update (see `generic::linear::sgd_update`), each stored value
/// computed in f64 and rounded once.
///
/// # Safety
/// As `generic::linear::sgd_update`.
unsafe fn sgd_update(x: &SgdSlices, q: &SgdParams) {
    for i in 0..x.n {
        // SAFETY: `i < n`: inside the caller's ranges (`buf` only when momentum is on).
        unsafe {
            let wp = x.w.add(i);
            let w = *wp as f64;
            let mut d = *x.g.add(i) as f64;
            if q.weight_decay != 0.0 {
                d += q.weight_decay as f64 * w;
            }
            if q.momentum != 0.0 {
                let bp = x.buf.add(i);
                let b = if q.first {
                    d
                } else {
                    q.momentum as f64 * *bp as f64 + (1.0 - q.dampening as f64) * d
                };
                *bp = b as f32;
                d = if q.nesterov {
                    d + q.momentum as f64 * b
                } else {
                    b
                };
            }
            *wp = (w - q.lr as f64 * d) as f32;
        }
    }
}

/// `C = alpha A B + beta C` with f64 dot products (C not read when `beta == 0`).
///
/// # Safety
/// The pointers and strides of `g` describe valid matrices, as `generic::linear::sgemm`.
unsafe fn gemm(g: &Gemm) {
    let at = |p: *const f32, i: usize, rs: isize, j: usize, cs: isize| {
        // SAFETY: `(i, j)` is inside the matrix the caller described.
        unsafe { p.offset(i as isize * rs + j as isize * cs) }
    };
    for i in 0..g.m {
        for j in 0..g.n {
            // SAFETY: `i < m`, `j < n`, `l < k`: inside the caller's matrices.
            unsafe {
                let dot: f64 = (0..g.k)
                    .map(|l| {
                        *at(g.a, i, g.rsa, l, g.csa) as f64 * *at(g.b, l, g.rsb, j, g.csb) as f64
                    })
                    .sum();
                let c = at(g.c, i, g.rsc, j, g.csc) as *mut f32;
                let v = g.alpha as f64 * dot;
                *c = if g.beta == 0.0 {
                    v as f32
                } else {
                    (v + g.beta as f64 * *c as f64) as f32
                };
            }
        }
    }
}
