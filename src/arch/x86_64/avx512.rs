//! The AVX-512 tier: [`Simd`] for `__m512` (16 lanes), masked loads and stores for the tails.
//! Needs AVX-512F (plus AVX2 and FMA, which every AVX-512 CPU has and which are detected too).

use core::arch::x86_64::*;

use crate::arch::vector::Simd;

/// Token proving the CPU has AVX-512F, AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token, if this CPU has the features.
    #[allow(dead_code)]
    pub(crate) fn new() -> Option<Self> {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            Some(Avx512(()))
        } else {
            None
        }
    }

    /// The token, unchecked.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX2 and FMA.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx512(())
    }
}

/// The mask of the low `n` lanes (`n < 16`).
#[inline(always)]
fn low_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

// SAFETY (for every `unsafe` block in this impl that only calls arithmetic intrinsics): a value
// of `Avx512` exists only when the CPU has AVX-512F, AVX2 and FMA (see `new` and
// `new_unchecked`), so the intrinsics' feature requirements hold; they touch no memory.
impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn clamp(self, v: __m512, lo: __m512, hi: __m512) -> __m512 {
        // vmaxps/vminps return the second operand when either is NaN, so NaN in `v` survives.
        // SAFETY: see the note above the impl.
        unsafe { _mm512_min_ps(hi, _mm512_max_ps(lo, v)) }
    }
    #[inline(always)]
    fn floor_at(self, v: __m512, lo: __m512) -> __m512 {
        // vmaxps returns its second operand when either is NaN, so a NaN `v` survives.
        // SAFETY: see the note above the impl.
        unsafe { _mm512_max_ps(lo, v) }
    }
    #[inline(always)]
    fn shl23(self, v: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(v))) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe {
            let i = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(i))
        }
    }
    #[inline(always)]
    fn round(self, v: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m512) -> f32 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512) -> f32 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_reduce_max_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats at `p`; the token, the features.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats at `p`; the token, the features.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> __m512 {
        debug_assert!(n > 0 && n < 16);
        // SAFETY: a masked load touches only the `n` lanes in the mask (masked-off lanes do
        // not fault), and the caller guarantees `p .. p + n` is readable.
        unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), low_mask(n), p) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: __m512) {
        debug_assert!(n > 0 && n < 16);
        // SAFETY: a masked store writes only the `n` lanes in the mask, and the caller
        // guarantees `p .. p + n` is writable.
        unsafe { _mm512_mask_storeu_ps(p, low_mask(n), v) }
    }
}

crate::arch::stamp_tier!(crate::dispatch::Isa::Avx512, "avx512f,avx2,fma", Avx512);
