//! The lane trait every SIMD tier implements, and over which the algorithms in
//! [`super::generic`] are written once.
//!
//! An implementor is a zero-sized *token*: a value of it can only be made once the CPU is known
//! to have the tier's features (see each tier's `new`), so holding one is the proof that the
//! arithmetic methods, which call `#[target_feature]` intrinsics, are sound. That is why the
//! arithmetic methods are safe and only the memory methods are `unsafe` (they take raw
//! pointers, because the in-place kernels read and write the same buffer).
//!
//! Every method is `#[inline(always)]`: the generic algorithms are compiled inside each tier's
//! `#[target_feature]` entry point, and the intrinsics must be inlined there rather than called
//! across a feature boundary.

/// A SIMD tier's lane type and the operations the generic kernels need.
pub(crate) trait Simd: Copy {
    /// A vector of `LANES` f32.
    type V: Copy;
    /// Lanes per vector.
    const LANES: usize;

    /// All lanes equal to `x`.
    fn splat(self, x: f32) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused where the tier has FMA.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum. With a NaN operand the result is unspecified (one of the two); the
    /// kernels detect NaN rows by other means.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `if a > b { x } else { y }` (ordered: NaN compares false).
    fn select_gt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// `|v|` (clears the sign bit).
    fn abs(self, v: Self::V) -> Self::V;
    /// `|mag|` with the sign bit of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    /// `[0.0, 1.0, 2.0, ..]`, one per lane.
    fn iota(self) -> Self::V;
    /// Lane-wise `min(hi, max(lo, v))`; a NaN lane of `v` stays NaN.
    fn clamp(self, v: Self::V, lo: Self::V, hi: Self::V) -> Self::V;
    /// Lane-wise `max(v, lo)`, keeping NaN lanes of `v` NaN.
    fn floor_at(self, v: Self::V, lo: Self::V) -> Self::V;
    /// Lane-wise `min(v, hi)`, keeping NaN lanes of `v` NaN.
    fn ceil_at(self, v: Self::V, hi: Self::V) -> Self::V;
    /// Reinterprets the low 9 bits of each lane's bit pattern as a biased exponent: returns the
    /// float whose bits are `bits(v) << 23`.
    fn shl23(self, v: Self::V) -> Self::V;
    /// `2^n` for lanes holding integral values `n` in `[-126, 127]`.
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Rounds each lane to the nearest integer (ties to even).
    fn round(self, v: Self::V) -> Self::V;
    /// Sum of all lanes.
    fn reduce_sum(self, v: Self::V) -> f32;
    /// Maximum of all lanes (unspecified which lane wins when NaN is present).
    fn reduce_max(self, v: Self::V) -> f32;

    /// `exp(x)` for `x <= 0`, with the contract of [`crate::arch::generic::exp::exp_nonpos`].
    /// The default is the generic algorithm; a tier may override it with an equivalent
    /// sequence its instruction set runs faster. The exhaustive test checks every tier.
    #[inline(always)]
    fn exp_nonpos(self, x: Self::V) -> Self::V {
        crate::arch::generic::exp::exp_nonpos_generic(self, x)
    }

    /// `v` with `x` subtracted from lane `lane` alone (one f32 subtraction, as a scalar
    /// `v[lane] - x`); `v` unchanged when `lane >= LANES`. The default selects by a window of
    /// a one-hot table (no compare of the lane index with each lane's); a tier may override
    /// it with a cheaper mask.
    #[inline(always)]
    fn sub_lane(self, v: Self::V, lane: usize, x: f32) -> Self::V {
        /// 1.0 at index 16 only: the `LANES` entries from `16 - lane` hold 1.0 in lane `lane`
        /// (`lane < LANES`), none from `16 - min(lane, 16)` when `lane >= LANES`.
        static ONE_HOT: [f32; 32] = {
            let mut t = [0.0f32; 32];
            t[16] = 1.0;
            t
        };
        const { assert!(Self::LANES <= 16) };
        // SAFETY: `16 - min(lane, 16) + LANES <= 32`: the load stays inside the table.
        let w = unsafe { self.load(ONE_HOT.as_ptr().add(16 - lane.min(16))) };
        self.select_gt(w, self.splat(0.5), self.sub(v, self.splat(x)), v)
    }

    /// Loads `LANES` floats from `p` (no alignment needed).
    ///
    /// # Safety
    /// `p .. p + LANES` must be valid for reads.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Stores `LANES` floats to `p` (no alignment needed).
    ///
    /// # Safety
    /// `p .. p + LANES` must be valid for writes.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// Loads the `n` floats at `p` (`0 < n < LANES`) into the low lanes and fills the other lanes
    /// with `fill`. Never touches memory past `p + n`.
    ///
    /// # Safety
    /// `p .. p + n` must be valid for reads.
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> Self::V;
    /// Stores the low `n` lanes (`0 < n < LANES`) to `p .. p + n`. Never touches memory past
    /// `p + n`.
    ///
    /// # Safety
    /// `p .. p + n` must be valid for writes.
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: Self::V);
}
