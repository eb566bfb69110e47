//! The machine-limit loops: copy, read (sum) and register-only FMA, with `std::arch` intrinsics
//! chosen at run time (AVX-512F, AVX2 + FMA, SSE2), and portable fallbacks elsewhere.

use std::hint::black_box;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Independent accumulators of the FMA loops: more than latency x throughput (4 x 2 on Zen 4),
/// so the loop is throughput-bound.
pub const FMA_ACCS: usize = 12;

/// FMA-loop trips per call.
pub const FMA_TRIPS: u64 = 4096;

/// Which vector width the copy/read loops use on this CPU.
pub fn simd_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") {
            return "avx2";
        }
        "sse2"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "portable"
    }
}

/// `dst.copy_from_slice(src)`: the C library's memcpy (which may use non-temporal stores for
/// large arrays).
pub fn copy_memcpy(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
}

/// A copy with plain (temporal) vector loads and stores of the widest vectors, as the crate's
/// kernels store. `src.len() == dst.len()`.
pub fn copy_simd(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected at run time.
            unsafe { copy_avx512(src, dst) };
        } else if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected at run time.
            unsafe { copy_avx2(src, dst) };
        } else {
            copy_sse2(src, dst);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn copy_avx512(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: `i + 64 <= n`, so the 64 floats at `i` are in both slices; they are distinct
        // slices (one shared, one unique borrow).
        unsafe {
            let a = _mm512_loadu_ps(s.add(i));
            let b = _mm512_loadu_ps(s.add(i + 16));
            let c = _mm512_loadu_ps(s.add(i + 32));
            let e = _mm512_loadu_ps(s.add(i + 48));
            _mm512_storeu_ps(d.add(i), a);
            _mm512_storeu_ps(d.add(i + 16), b);
            _mm512_storeu_ps(d.add(i + 32), c);
            _mm512_storeu_ps(d.add(i + 48), e);
        }
        i += 64;
    }
    dst[i..n].copy_from_slice(&src[i..n]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn copy_avx2(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`: in bounds of both (distinct) slices.
        unsafe {
            let a = _mm256_loadu_ps(s.add(i));
            let b = _mm256_loadu_ps(s.add(i + 8));
            let c = _mm256_loadu_ps(s.add(i + 16));
            let e = _mm256_loadu_ps(s.add(i + 24));
            _mm256_storeu_ps(d.add(i), a);
            _mm256_storeu_ps(d.add(i + 8), b);
            _mm256_storeu_ps(d.add(i + 16), c);
            _mm256_storeu_ps(d.add(i + 24), e);
        }
        i += 32;
    }
    dst[i..n].copy_from_slice(&src[i..n]);
}

#[cfg(target_arch = "x86_64")]
fn copy_sse2(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`: in bounds of both (distinct) slices; SSE2 is part of x86-64.
        unsafe {
            let a = _mm_loadu_ps(s.add(i));
            let b = _mm_loadu_ps(s.add(i + 4));
            let c = _mm_loadu_ps(s.add(i + 8));
            let e = _mm_loadu_ps(s.add(i + 12));
            _mm_storeu_ps(d.add(i), a);
            _mm_storeu_ps(d.add(i + 4), b);
            _mm_storeu_ps(d.add(i + 8), c);
            _mm_storeu_ps(d.add(i + 12), e);
        }
        i += 16;
    }
    dst[i..n].copy_from_slice(&src[i..n]);
}

/// `x[i] += c` in place with the widest vectors (a read-modify-write stream, as the rank-1
/// update and the SGD step do to W). Pass a `c` the compiler cannot see (`black_box(0.0)`).
pub fn rmw_add(x: &mut [f32], c: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { rmw_avx512(x, c) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected at run time.
            return unsafe { rmw_avx2(x, c) };
        }
    }
    x.iter_mut().for_each(|v| *v += c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rmw_avx512(x: &mut [f32], c: f32) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let vc = _mm512_set1_ps(c);
    let mut i = 0;
    while i + 64 <= n {
        for k in 0..4 {
            // SAFETY: `i + 16 k + 16 <= i + 64 <= n`: in bounds of `x`.
            unsafe {
                let q = p.add(i + 16 * k);
                _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), vc));
            }
        }
        i += 64;
    }
    x[i..].iter_mut().for_each(|v| *v += c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rmw_avx2(x: &mut [f32], c: f32) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let vc = _mm256_set1_ps(c);
    let mut i = 0;
    while i + 32 <= n {
        for k in 0..4 {
            // SAFETY: `i + 8 k + 8 <= i + 32 <= n`: in bounds of `x`.
            unsafe {
                let q = p.add(i + 8 * k);
                _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), vc));
            }
        }
        i += 32;
    }
    x[i..].iter_mut().for_each(|v| *v += c);
}

/// The sum of `x` with the widest vectors and independent accumulators (a read stream).
pub fn read_sum(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { sum_avx512(x) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected at run time.
            return unsafe { sum_avx2(x) };
        }
    }
    sum_lanes(x)
}

/// A plain lane-wise sum the compiler vectorizes (SSE2 on a default x86-64 build).
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let chunks = x.chunks_exact(32);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_avx512(x: &[f32]) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 8];
    let mut i = 0;
    while i + 128 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 16 k + 16 <= i + 128 <= n`: in bounds.
            *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(p.add(i + 16 * k)) });
        }
        i += 128;
    }
    let mut t = acc[0];
    for a in &acc[1..] {
        t = _mm512_add_ps(t, *a);
    }
    _mm512_reduce_add_ps(t) + sum_lanes(&x[i..])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(x: &[f32]) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 8 k + 8 <= i + 64 <= n`: in bounds.
            *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(p.add(i + 8 * k)) });
        }
        i += 64;
    }
    let mut t = acc[0];
    for a in &acc[1..] {
        t = _mm256_add_ps(t, *a);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), t) };
    lanes.iter().sum::<f32>() + sum_lanes(&x[i..])
}

/// Flops of one [`fma_peak`] call on a tier with `lanes` f32 lanes (2 per lane per FMA, or per
/// multiply + add on the portable tier).
pub fn fma_flops_per_call(lanes: usize) -> f64 {
    (FMA_TRIPS * FMA_ACCS as u64 * lanes as u64 * 2) as f64
}

/// A register-only multiply-add loop of [`FMA_TRIPS`] trips over [`FMA_ACCS`] independent
/// accumulators of `lanes` floats. Returns `Some((lanes, loop))` for the tiers it knows and
/// this CPU runs (`"avx512"`: 16 lanes of `vfmadd`, `"avx2"`: 8 lanes of `vfmadd`,
/// `"portable"`: a plain `a * b + c` loop over `FMA_ACCS * 4` floats that the compiler
/// vectorizes for the build's baseline, 4-lane SSE2 on x86-64, with separate multiply and add).
pub fn fma_peak(tier: &str) -> Option<(usize, fn() -> f32)> {
    match tier {
        "portable" => Some((4, fma_portable as fn() -> f32)),
        #[cfg(target_arch = "x86_64")]
        "avx2" if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
            Some((8, || {
                // SAFETY: AVX2 and FMA were detected before this function was handed out.
                unsafe { fma_avx2() }
            }))
        }
        #[cfg(target_arch = "x86_64")]
        "avx512" if is_x86_feature_detected!("avx512f") => Some((16, || {
            // SAFETY: AVX-512F was detected before this function was handed out.
            unsafe { fma_avx512() }
        })),
        _ => None,
    }
}

/// `a = a * m + c` over `FMA_ACCS * 4` floats (`FMA_ACCS` SSE2 vectors), `FMA_TRIPS` times.
fn fma_portable() -> f32 {
    let m = black_box(0.999_999f32);
    let c = black_box(1e-7f32);
    let mut acc = [0.0f32; FMA_ACCS * 4];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = black_box(i as f32 * 1e-3);
    }
    for _ in 0..FMA_TRIPS {
        for a in acc.iter_mut() {
            *a = *a * m + c;
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2() -> f32 {
    let m = _mm256_set1_ps(black_box(0.999_999));
    let c = _mm256_set1_ps(black_box(1e-7));
    let mut acc = [_mm256_setzero_ps(); FMA_ACCS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(black_box(i as f32 * 1e-3));
    }
    for _ in 0..FMA_TRIPS {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut t = acc[0];
    for a in &acc[1..] {
        t = _mm256_add_ps(t, *a);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), t) };
    lanes.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512() -> f32 {
    let m = _mm512_set1_ps(black_box(0.999_999));
    let c = _mm512_set1_ps(black_box(1e-7));
    let mut acc = [_mm512_setzero_ps(); FMA_ACCS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_set1_ps(black_box(i as f32 * 1e-3));
    }
    for _ in 0..FMA_TRIPS {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    let mut t = acc[0];
    for a in &acc[1..] {
        t = _mm512_add_ps(t, *a);
    }
    _mm512_reduce_add_ps(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_compute() {
        let x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        assert_eq!(read_sum(&x), 499_500.0);
        let mut y = vec![0.0; 1000];
        copy_simd(&x, &mut y);
        assert_eq!(x, y);
        rmw_add(&mut y, 1.0);
        assert!(y.iter().zip(&x).all(|(a, b)| *a == b + 1.0));
        for t in ["portable", "avx2", "avx512"] {
            if let Some((lanes, f)) = fma_peak(t) {
                assert!(lanes >= 4);
                let v = f();
                assert!(v.is_finite() && v > 0.0, "{t}: {v}");
            }
        }
    }
}
