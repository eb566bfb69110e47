//! Instruction-set tiers. Each algorithm lives once in [`generic`], written over the
//! [`vector::Simd`] lane trait; each tier implements the trait for its vector type and stamps
//! the algorithms out inside its own `#[target_feature]` entry points with [`stamp_tier!`].

pub(crate) mod generic;
pub(crate) mod portable;
pub(crate) mod special;
pub(crate) mod vector;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// Stamps the generic row kernels out for one tier and builds its `KERNELS` table.
///
/// `stamp_tier!(isa, "features", Token)` wraps each kernel in a
/// `#[target_feature(enable = "features")]` entry point; `stamp_tier!(isa, Token)` (portable)
/// adds no attribute. `Token` is the tier's [`vector::Simd`] type; the entry points make it with
/// `Token::new_unchecked()`, which is sound because the `KERNELS` table they are reachable
/// through is only handed out after the tier's features were detected.
macro_rules! stamp_tier {
    ($isa:expr, $features:literal, $token:ty) => {
        $crate::arch::stamp_tier!(@emit $isa, [#[target_feature(enable = $features)]], $token);
    };
    ($isa:expr, $token:ty) => {
        $crate::arch::stamp_tier!(@emit $isa, [], $token);
    };
    (@emit $isa:expr, [$(#[$attr:meta])*], $token:ty) => {
        use $crate::arch::generic::{exp as gexp, rows as grows, softmax as gsm};

        $crate::arch::generic::linear::stamp_linear!([$(#[$attr])*], $token);
        $crate::arch::generic::ce::stamp_ce!([$(#[$attr])*], $token);
        $crate::arch::generic::token::stamp_tok!([$(#[$attr])*], $token);

        /// # Safety
        /// The tier's CPU features; pointer ranges as `generic::softmax::short_path`.
        $(#[$attr])*
        unsafe fn fwd_short(
            x: *const f32,
            y: *mut f32,
            rows: usize,
            cols: usize,
            a: $crate::arch::generic::softmax::FwdArgs,
        ) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { gsm::short_path(<$token>::new_unchecked(), x, y, rows, cols, a) }
        }

        /// # Safety
        /// The tier's CPU features; pointer ranges as `generic::softmax::rows_path`.
        $(#[$attr])*
        unsafe fn fwd_rows(
            x: *const f32,
            y: *mut f32,
            rows: usize,
            cols: usize,
            a: $crate::arch::generic::softmax::FwdArgs,
        ) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { gsm::rows_path(<$token>::new_unchecked(), x, y, rows, cols, a) }
        }

        /// # Safety
        /// The tier's CPU features; pointer ranges as `generic::softmax::softmax_backward_rows`.
        $(#[$attr])*
        unsafe fn softmax_backward_rows(
            y: *const f32,
            dy: *const f32,
            dx: *mut f32,
            rows: usize,
            cols: usize,
            ld: [usize; 3],
        ) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { gsm::softmax_backward_rows(<$token>::new_unchecked(), y, dy, dx, rows, cols, ld) }
        }

        /// # Safety
        /// The tier's CPU features; pointer ranges as
        /// `generic::softmax::log_softmax_backward_rows`.
        $(#[$attr])*
        unsafe fn log_softmax_backward_rows(
            y: *const f32,
            dy: *const f32,
            dx: *mut f32,
            rows: usize,
            cols: usize,
            ld: [usize; 3],
        ) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { gsm::log_softmax_backward_rows(<$token>::new_unchecked(), y, dy, dx, rows, cols, ld) }
        }

        /// # Safety
        /// The tier's CPU features; pointer ranges as `generic::softmax::chunk_stats`.
        $(#[$attr])*
        unsafe fn chunk_stats(x: *const f32, y: *mut f32, n: usize) -> (f32, f64) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { gsm::chunk_stats(<$token>::new_unchecked(), x, y, n) }
        }

        /// # Safety
        /// The tier's CPU features; `y .. y + n` valid for reads and writes.
        $(#[$attr])*
        unsafe fn scale(y: *mut f32, n: usize, r: f32) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { grows::scale(<$token>::new_unchecked(), y, n, r) }
        }

        /// # Safety
        /// The tier's CPU features; pointer ranges as `generic::rows::sub2`.
        $(#[$attr])*
        unsafe fn sub2(x: *const f32, y: *mut f32, n: usize, m: f32, ls: f32) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { grows::sub2(<$token>::new_unchecked(), x, y, n, m, ls) }
        }

        /// # Safety
        /// The tier's CPU features; `x` valid for `n` reads, `y` for `n` writes.
        $(#[$attr])*
        unsafe fn exp_nonpos(x: *const f32, y: *mut f32, n: usize) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { gexp::exp_map::<_, false>(<$token>::new_unchecked(), x, y, n) }
        }

        /// # Safety
        /// The tier's CPU features; `x` valid for `n` reads, `y` for `n` writes.
        $(#[$attr])*
        unsafe fn exp_full(x: *const f32, y: *mut f32, n: usize) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { gexp::exp_map::<_, true>(<$token>::new_unchecked(), x, y, n) }
        }

        /// This tier's kernel table.
        pub(crate) static KERNELS: $crate::dispatch::Kernels = $crate::dispatch::Kernels {
            isa: $isa,
            short_cols: $crate::arch::generic::rows::SHORT_VECS
                * <$token as $crate::arch::vector::Simd>::LANES,
            online_min_cols: $crate::tuning::ONLINE_MIN_COLS,
            fwd_short,
            fwd_rows,
            softmax_backward_rows,
            log_softmax_backward_rows,
            chunk_stats,
            scale,
            sub2,
            exp_nonpos,
            exp_full,
            linear: &LINEAR,
            ce: &CE,
            tok: &TOK,
        };
    };
}
pub(crate) use stamp_tier;
