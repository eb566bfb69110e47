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
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn select_gt(self, a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b), y, x) }
    }
    #[inline(always)]
    fn abs(self, v: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe {
            let m = _mm512_set1_epi32(0x7FFF_FFFF);
            _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), m))
        }
    }
    #[inline(always)]
    fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe {
            let m = _mm512_set1_epi32(0x7FFF_FFFF);
            // 0xCA = (m & mag) | (!m & sign), a bit-wise select (A = m, B = mag, C = sign).
            _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xCA>(
                m,
                _mm512_castps_si512(mag),
                _mm512_castps_si512(sign),
            ))
        }
    }
    #[inline(always)]
    fn sub_lane(self, v: __m512, lane: usize, x: f32) -> __m512 {
        // A one-bit mask from a shift: no compare.
        let m: __mmask16 = if lane < 16 { 1 << lane } else { 0 };
        // SAFETY: see the note above the impl.
        unsafe { _mm512_mask_sub_ps(v, m, v, _mm512_set1_ps(x)) }
    }
    #[inline(always)]
    fn iota(self) -> __m512 {
        // SAFETY: see the note above the impl.
        unsafe {
            _mm512_setr_ps(
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0,
                15.0,
            )
        }
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
    fn ceil_at(self, v: __m512, hi: __m512) -> __m512 {
        // vminps returns its second operand when either is NaN, so a NaN `v` survives.
        // SAFETY: see the note above the impl.
        unsafe { _mm512_min_ps(hi, v) }
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
    fn exp_nonpos(self, x: __m512) -> __m512 {
        // A 16-entry table variant: x = (N / 16) ln 2 + t, |t| <= ln 2 / 32, with
        // 2^(N mod 16 / 16) from a one-instruction table lookup (vpermps on the low 4 bits of
        // the magic-biased N), exp(t) by a degree-3 polynomial, and 2^floor(N / 16) applied
        // by vscalefps (which also rounds subnormal results and underflows to 0). Constants:
        // the 2^(k/16) table and XNNPACK's lut16-p3 minimax coefficients; ln 2 split hi/lo.
        // Fewer FMA-port operations than the generic degree-5 version; the exhaustive test
        // checks the same 2-ULP bound.
        use crate::arch::generic::exp::{LN2_HI, LN2_LO, LOG2E};
        // SAFETY: see the note above the impl.
        unsafe {
            let table = _mm512_setr_ps(
                f32::from_bits(0x3F80_0000),
                f32::from_bits(0x3F85_AAC3),
                f32::from_bits(0x3F8B_95C2),
                f32::from_bits(0x3F91_C3D3),
                f32::from_bits(0x3F98_37F0),
                f32::from_bits(0x3F9E_F532),
                f32::from_bits(0x3FA5_FED7),
                f32::from_bits(0x3FAD_583F),
                f32::from_bits(0x3FB5_04F3),
                f32::from_bits(0x3FBD_08A4),
                f32::from_bits(0x3FC5_672A),
                f32::from_bits(0x3FCE_248C),
                f32::from_bits(0x3FD7_44FD),
                f32::from_bits(0x3FE0_CCDF),
                f32::from_bits(0x3FEA_C0C7),
                f32::from_bits(0x3FF5_257D),
            );
            let magic = _mm512_set1_ps(f32::from_bits(0x4940_0000)); // 0x1.8p19
                                                                     // -104 keeps -inf from making t NaN; vscalefps takes the result to 0 below.
            let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
            let nb = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), magic);
            let l = _mm512_permutexvar_ps(_mm512_castps_si512(nb), table);
            let n = _mm512_sub_ps(nb, magic);
            let t = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
            let t = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), t);
            let p = _mm512_fmadd_ps(
                _mm512_set1_ps(f32::from_bits(0x3E2A_AACD)), // 0x1.55559Ap-3
                t,
                _mm512_set1_ps(f32::from_bits(0x3F00_010F)), // 0x1.00021Ep-1
            );
            let p = _mm512_mul_ps(p, t);
            let p = _mm512_fmadd_ps(t, p, t);
            let e = _mm512_fmadd_ps(l, p, l);
            _mm512_scalef_ps(e, n)
        }
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
