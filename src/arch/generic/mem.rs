//! Memory helpers of the generic kernels: loads and stores of up to one vector (full or
//! partial, never touching a float past the count), and a prefetch hint.

use crate::arch::vector::Simd;

/// Loads `m` floats (`m == LANES` for a full vector, else a partial load filled with 0).
///
/// # Safety
/// `p .. p + m` valid for reads; `0 < m <= LANES`.
#[inline(always)]
pub(crate) unsafe fn load_n<S: Simd, const TAIL: bool>(s: S, p: *const f32, m: usize) -> S::V {
    // SAFETY: forwarded: `m` floats at `p` are readable.
    unsafe {
        if TAIL {
            s.load_partial(p, m, 0.0)
        } else {
            s.load(p)
        }
    }
}

/// Stores `m` floats (`m == LANES` for a full vector, else a partial store).
///
/// # Safety
/// `p .. p + m` valid for writes; `0 < m <= LANES`.
#[inline(always)]
pub(crate) unsafe fn store_n<S: Simd, const TAIL: bool>(s: S, p: *mut f32, m: usize, v: S::V) {
    // SAFETY: forwarded: `m` floats at `p` are writable.
    unsafe {
        if TAIL {
            s.store_partial(p, m, v)
        } else {
            s.store(p, v)
        }
    }
}

/// Loads `k` floats at `p`, a full vector when `k == LANES`, else a partial load filled with 0
/// (the choice made at run time: for callers whose count is not known at compile time).
///
/// # Safety
/// `p .. p + k` valid for reads, `0 < k <= LANES`.
#[inline(always)]
pub(crate) unsafe fn load_upto<S: Simd>(s: S, p: *const f32, k: usize) -> S::V {
    // SAFETY: forwarded; a full load only when `k == LANES`.
    unsafe {
        if k == S::LANES {
            load_n::<S, false>(s, p, k)
        } else {
            load_n::<S, true>(s, p, k)
        }
    }
}

/// Stores the low `k` lanes of `v` to `p`, a full store when `k == LANES` (chosen at run time).
///
/// # Safety
/// `p .. p + k` valid for writes, `0 < k <= LANES`.
#[inline(always)]
pub(crate) unsafe fn store_upto<S: Simd>(s: S, p: *mut f32, k: usize, v: S::V) {
    // SAFETY: forwarded; a full store only when `k == LANES`.
    unsafe {
        if k == S::LANES {
            store_n::<S, false>(s, p, k, v)
        } else {
            store_n::<S, true>(s, p, k, v)
        }
    }
}

/// Hints the CPU to fetch the cache line holding `p` into L2. Never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht1` reads nothing architecturally and never faults, on any address;
    // SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
