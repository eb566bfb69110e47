//! The top-k classes of a row: a floor from group maxima, a blocked scan, a min-heap.

use super::*;

/// The top-k candidates of a row: a min-heap of at most `k` entries whose root is the entry to
/// displace first (the smallest value; indices arrive in increasing order, so an equal value
/// never displaces it: the smaller index wins ties). NaN never enters.
pub(crate) struct TopK<'a> {
    z: &'a mut [f64; MAX_TOP_K],
    idx: &'a mut [u32; MAX_TOP_K],
    len: usize,
    k: usize,
}

impl<'a> TopK<'a> {
    pub(crate) fn new(
        z: &'a mut [f64; MAX_TOP_K],
        idx: &'a mut [u32; MAX_TOP_K],
        k: usize,
    ) -> Self {
        TopK { z, idx, len: 0, k }
    }

    /// The value a candidate must exceed once `k` are held (`-inf` before).
    #[inline(always)]
    pub(crate) fn threshold(&self) -> f64 {
        if self.len < self.k {
            f64::NEG_INFINITY
        } else {
            self.z[0]
        }
    }

    /// Whether `a` is to be displaced before `b` (heap order).
    #[inline(always)]
    fn worse(&self, a: usize, b: usize) -> bool {
        self.z[a] < self.z[b] || (self.z[a] == self.z[b] && self.idx[a] > self.idx[b])
    }

    /// Offers `(v, i)`.
    #[inline(always)]
    pub(crate) fn offer(&mut self, v: f64, i: u32) {
        if v.is_nan() {
            return;
        }
        if self.len < self.k {
            // Sift up.
            let mut p = self.len;
            self.z[p] = v;
            self.idx[p] = i;
            self.len += 1;
            while p > 0 {
                let q = (p - 1) / 2;
                if !self.worse(p, q) {
                    break;
                }
                self.z.swap(p, q);
                self.idx.swap(p, q);
                p = q;
            }
            return;
        }
        if v <= self.z[0] {
            return;
        }
        // Replace the root, sift down.
        self.z[0] = v;
        self.idx[0] = i;
        let mut p = 0;
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut m = p;
            if l < self.len && self.worse(l, m) {
                m = l;
            }
            if r < self.len && self.worse(r, m) {
                m = r;
            }
            if m == p {
                break;
            }
            self.z.swap(p, m);
            self.idx.swap(p, m);
            p = m;
        }
    }

    /// Sorts the held entries, largest first (the smaller index first on ties); returns how
    /// many.
    pub(crate) fn finish(self) -> usize {
        let n = self.len;
        let mut pairs: [(f64, u32); MAX_TOP_K] = [(0.0, 0); MAX_TOP_K];
        for (q, p) in pairs[..n].iter_mut().enumerate() {
            *p = (self.z[q], self.idx[q]);
        }
        pairs[..n].sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (q, p) in pairs[..n].iter().enumerate() {
            self.z[q] = p.0;
            self.idx[q] = p.1;
        }
        n
    }
}

/// [`TokRowKernels::top_k_row`] over [`Simd`]: blocks of [`TOP_K_BLOCK`] vectors whose maximum
/// does not beat the current `k`-th value (once `k` are held) are skipped with one compare;
/// in the others each vector is compared the same way, and a vector that beats it offers its
/// lanes to the heap ([`TopK`]).
///
/// # Safety
/// `x .. x + n` valid for reads; `1 <= k <= MAX_TOP_K`.
#[inline(always)]
pub(crate) unsafe fn top_k_row<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    n: usize,
    cap: f32,
    k: usize,
    z: &mut [f64; MAX_TOP_K],
    idx: &mut [u32; MAX_TOP_K],
) -> usize {
    let w = S::LANES;
    let (vc, vi) = cap_vecs::<S, CAP>(s, cap);
    let mut top = TopK::new(z, idx, k);
    let mut buf = [0.0f32; 64];
    let mut i = 0;
    // SAFETY: every access is inside `0..n` (the prefilter reads whole vectors of `0..n`; then
    // whole blocks of `TOP_K_BLOCK` vectors while they fit, then single vectors, one partial
    // load); `buf` holds 64 >= LANES floats.
    unsafe {
        let floor = top_k_floor::<S, CAP>(s, x, n, k, vc, vi);
        while i < n {
            let step = if i + TOP_K_BLOCK * w <= n {
                TOP_K_BLOCK * w
            } else {
                (n - i).min(w)
            };
            // Until `k` are held, a candidate must reach the floor; then beat the `k`-th.
            let thr = top.threshold();
            let beats = |v: f32| {
                if thr == f64::NEG_INFINITY {
                    v as f64 >= floor
                } else {
                    v as f64 > thr
                }
            };
            let mut pass = thr == f64::NEG_INFINITY && floor == f64::NEG_INFINITY;
            if !pass {
                let mut m = s.splat(f32::NEG_INFINITY);
                if step == TOP_K_BLOCK * w {
                    // A whole block: two independent maxima over its vectors.
                    let mut m2 = m;
                    for jj in 0..TOP_K_BLOCK / 2 {
                        let p = x.add(i + 2 * jj * w);
                        m = s.max(m, load_z::<S, CAP>(s, p, vc, vi));
                        m2 = s.max(m2, load_z::<S, CAP>(s, p.add(w), vc, vi));
                    }
                    m = s.max(m, m2);
                } else if step == w {
                    m = load_z::<S, CAP>(s, x.add(i), vc, vi);
                } else {
                    m = load_z_part::<S, CAP>(s, x.add(i), step, f32::NEG_INFINITY, vc, vi);
                }
                // (A block holding a NaN may be skipped, with its other values: that row's
                // log-probabilities are all NaN anyway.)
                pass = beats(s.reduce_max(m));
            }
            if pass {
                let mut j = 0;
                while j < step {
                    let kk = (step - j).min(w);
                    let v = if kk == w {
                        load_z::<S, CAP>(s, x.add(i + j), vc, vi)
                    } else {
                        load_z_part::<S, CAP>(s, x.add(i + j), kk, f32::NEG_INFINITY, vc, vi)
                    };
                    // Then vector by vector against the rising threshold.
                    let t = top.threshold();
                    let hit = if t == f64::NEG_INFINITY {
                        floor == f64::NEG_INFINITY || s.reduce_max(v) as f64 >= floor
                    } else {
                        s.reduce_max(v) as f64 > t
                    };
                    if hit {
                        s.store(buf.as_mut_ptr(), v);
                        for (q, &b) in buf[..kk].iter().enumerate() {
                            // (Below the floor a lane cannot be among the top `k`.)
                            if b as f64 >= floor {
                                top.offer(b as f64, (i + j + q) as u32);
                            }
                        }
                    }
                    j += w;
                }
            }
            i += step;
        }
    }
    top.finish()
}

/// Vectors per block of the top-k scan: a block whose maximum does not beat the current `k`-th
/// value costs its loads, maxima and one horizontal maximum.
const TOP_K_BLOCK: usize = 8;

/// The most groups [`top_k_floor`] takes maxima of.
const TOP_K_GROUPS: usize = 256;

/// A lower bound of the `k`-th largest (capped) logit of the row, so that the scan offers
/// the heap only candidates from the start instead of everything until `k` good ones are
/// held: the whole vectors of the row are cut into at most [`TOP_K_GROUPS`] groups, and the
/// `k`-th largest of the groups' maxima is returned. Each group maximum is an element of the
/// row, so `k` elements are at least that large. `-inf` when there are fewer than `k` groups
/// (NaN maxima are left out: such a row's outputs are NaN anyway).
///
/// # Safety
/// `x .. x + n` valid for reads; `1 <= k <= MAX_TOP_K`.
#[inline(always)]
unsafe fn top_k_floor<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    n: usize,
    k: usize,
    vc: S::V,
    vi: S::V,
) -> f64 {
    let w = S::LANES;
    let vecs = n / w;
    if vecs < k {
        return f64::NEG_INFINITY;
    }
    let groups = vecs.min(TOP_K_GROUPS);
    let per = vecs / groups;
    let mut maxima = [f32::NEG_INFINITY; TOP_K_GROUPS];
    // SAFETY: `groups * per <= vecs` whole vectors, inside `0..n`.
    unsafe {
        for (g, slot) in maxima[..groups].iter_mut().enumerate() {
            let p = x.add(g * per * w);
            let mut m = load_z::<S, CAP>(s, p, vc, vi);
            for v in 1..per {
                m = s.max(m, load_z::<S, CAP>(s, p.add(v * w), vc, vi));
            }
            let r = s.reduce_max(m);
            *slot = if r.is_nan() { f32::NEG_INFINITY } else { r };
        }
    }
    let (_, kth, _) = maxima[..groups].select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth as f64
}
