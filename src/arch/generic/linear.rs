//! The output-layer update kernels (rank-1 / rank-k updates, column sums, ...), written once over
//! [`crate::arch::vector::Simd`] and stamped per tier by [`stamp_linear!`].

/// One tier's table of linear-algebra row kernels.
pub(crate) struct LinearKernels {}

/// Stamps the linear kernels out for one tier (called by `stamp_tier!` with the tier's
/// `#[target_feature]` attributes and token type) and defines its `LINEAR` table.
macro_rules! stamp_linear {
    ([$(#[$attr:meta])*], $token:ty) => {
        /// This tier's linear kernels.
        pub(crate) static LINEAR: $crate::arch::generic::linear::LinearKernels =
            $crate::arch::generic::linear::LinearKernels {};
    };
}
pub(crate) use stamp_linear;
