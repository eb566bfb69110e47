//! The portable tier: [`Simd`] for `wide::f32x8`.
//!
//! `wide` chooses its instructions when the crate is compiled (SSE2 on a default x86-64 build,
//! AVX/FMA under `-C target-cpu=native`, NEON on aarch64, simd128 on wasm), so this tier runs on
//! every CPU and needs no feature check. Tails go through a stack buffer.

use wide::{f32x8, i32x8, CmpGt};

use crate::arch::vector::Simd;

/// Token for the portable tier (always available).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Portable {
    /// The token (the portable tier needs no CPU check).
    ///
    /// # Safety
    /// None: `unsafe` only to match the other tiers' constructors used by `stamp_tier!`.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Portable
    }
}

#[inline(always)]
fn to_bits(v: f32x8) -> i32x8 {
    bytemuck::cast(v)
}

#[inline(always)]
fn from_bits(v: i32x8) -> f32x8 {
    bytemuck::cast(v)
}

impl Simd for Portable {
    type V = f32x8;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn fma(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_max(b)
    }
    #[inline(always)]
    fn div(self, a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    fn select_gt(self, a: f32x8, b: f32x8, x: f32x8, y: f32x8) -> f32x8 {
        a.cmp_gt(b).blend(x, y)
    }
    #[inline(always)]
    fn abs(self, v: f32x8) -> f32x8 {
        v.abs()
    }
    #[inline(always)]
    fn copysign(self, mag: f32x8, sign: f32x8) -> f32x8 {
        mag.abs().copysign(sign)
    }
    #[inline(always)]
    fn iota(self) -> f32x8 {
        f32x8::from([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    }
    #[inline(always)]
    fn clamp(self, v: f32x8, lo: f32x8, hi: f32x8) -> f32x8 {
        let c = v.fast_max(lo).fast_min(hi);
        // Keep NaN lanes NaN whatever the backend's max/min do with them.
        v.is_nan().blend(v, c)
    }
    #[inline(always)]
    fn floor_at(self, v: f32x8, lo: f32x8) -> f32x8 {
        // On x86 `fast_max` is `maxps(lo, v)`, which returns its second operand when either is
        // NaN, so a NaN `v` survives. Elsewhere, keep NaN lanes explicitly.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            lo.fast_max(v)
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        {
            v.is_nan().blend(v, v.fast_max(lo))
        }
    }
    #[inline(always)]
    fn ceil_at(self, v: f32x8, hi: f32x8) -> f32x8 {
        // As `floor_at`: `minps(hi, v)` returns its second operand when either is NaN.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            hi.fast_min(v)
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        {
            v.is_nan().blend(v, v.fast_min(hi))
        }
    }
    #[inline(always)]
    fn shl23(self, v: f32x8) -> f32x8 {
        from_bits(to_bits(v) << 23)
    }
    #[inline(always)]
    fn pow2i(self, n: f32x8) -> f32x8 {
        from_bits((n.round_int() + i32x8::splat(127)) << 23)
    }
    #[inline(always)]
    fn round(self, v: f32x8) -> f32x8 {
        v.round()
    }
    #[inline(always)]
    fn reduce_sum(self, v: f32x8) -> f32 {
        let a = v.to_array();
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
    }
    #[inline(always)]
    fn reduce_max(self, v: f32x8) -> f32 {
        let a = v.to_array();
        a.iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable floats at `p`; `read_unaligned` needs no
        // alignment.
        f32x8::from(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32x8) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v.to_array()) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> f32x8 {
        debug_assert!(n > 0 && n < 8);
        let mut buf = [fill; 8];
        // SAFETY: the caller guarantees `p .. p + n` is readable; `buf` has room for 8 > n.
        unsafe { core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n) };
        f32x8::from(buf)
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: f32x8) {
        debug_assert!(n > 0 && n < 8);
        let buf = v.to_array();
        // SAFETY: the caller guarantees `p .. p + n` is writable; `buf` holds 8 > n floats.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), p, n) };
    }
}

crate::arch::stamp_tier!(crate::dispatch::Isa::Portable, Portable);
