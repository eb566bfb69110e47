//! The AVX2 tier: [`Simd`] for `__m256` (8 lanes) with FMA; `vmaskmovps` for the tails.

use core::arch::x86_64::*;

use crate::arch::vector::Simd;

/// Token proving the CPU has AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// The token, if this CPU has the features.
    #[allow(dead_code)]
    pub(crate) fn new() -> Option<Self> {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Some(Avx2(()))
        } else {
            None
        }
    }

    /// The token, unchecked.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx2(())
    }
}

/// All-ones in the low `n` 32-bit lanes (`n < 8`).
#[inline(always)]
fn low_mask(n: usize) -> __m256i {
    // SAFETY: only called from methods of `Avx2`, whose existence proves AVX2.
    unsafe {
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), iota)
    }
}

// SAFETY (for every `unsafe` block in this impl that only calls arithmetic intrinsics): a value
// of `Avx2` exists only when the CPU has AVX2 and FMA (see `new` and `new_unchecked`), so the
// intrinsics' feature requirements hold; they touch no memory.
impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn select_gt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)) }
    }
    #[inline(always)]
    fn abs(self, v: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), v) }
    }
    #[inline(always)]
    fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe {
            let sm = _mm256_set1_ps(-0.0);
            _mm256_or_ps(_mm256_andnot_ps(sm, mag), _mm256_and_ps(sm, sign))
        }
    }
    #[inline(always)]
    fn iota(self) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0) }
    }
    #[inline(always)]
    fn clamp(self, v: __m256, lo: __m256, hi: __m256) -> __m256 {
        // vmaxps/vminps return the second operand when either is NaN, so NaN in `v` survives.
        // SAFETY: see the note above the impl.
        unsafe { _mm256_min_ps(hi, _mm256_max_ps(lo, v)) }
    }
    #[inline(always)]
    fn floor_at(self, v: __m256, lo: __m256) -> __m256 {
        // vmaxps returns its second operand when either is NaN, so a NaN `v` survives.
        // SAFETY: see the note above the impl.
        unsafe { _mm256_max_ps(lo, v) }
    }
    #[inline(always)]
    fn ceil_at(self, v: __m256, hi: __m256) -> __m256 {
        // vminps returns its second operand when either is NaN, so a NaN `v` survives.
        // SAFETY: see the note above the impl.
        unsafe { _mm256_min_ps(hi, v) }
    }
    #[inline(always)]
    fn shl23(self, v: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(v))) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe {
            let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
        }
    }
    #[inline(always)]
    fn round(self, v: __m256) -> __m256 {
        // SAFETY: see the note above the impl.
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m256) -> f32 {
        // SAFETY: see the note above the impl.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256) -> f32 {
        // SAFETY: see the note above the impl.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats at `p`; the token, the features.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats at `p`; the token, the features.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> __m256 {
        debug_assert!(n > 0 && n < 8);
        // SAFETY: `vmaskmovps` reads only the lanes whose mask bit is set (masked-off lanes
        // never fault), and the caller guarantees `p .. p + n` is readable.
        unsafe {
            let m = low_mask(n);
            let v = _mm256_maskload_ps(p, m);
            _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: __m256) {
        debug_assert!(n > 0 && n < 8);
        // SAFETY: `vmaskmovps` writes only the lanes whose mask bit is set, and the caller
        // guarantees `p .. p + n` is writable.
        unsafe { _mm256_maskstore_ps(p, low_mask(n), v) }
    }
}

crate::arch::stamp_tier!(crate::dispatch::Isa::Avx2, "avx2,fma", Avx2);
