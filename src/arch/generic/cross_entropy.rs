//! The fused cross-entropy row kernels, written once over [`crate::arch::vector::Simd`] and
//! stamped per tier by [`stamp_ce!`].

/// One tier's table of cross-entropy row kernels.
pub(crate) struct CeKernels {}

/// Stamps the cross-entropy kernels out for one tier (called by `stamp_tier!`) and defines its
/// `CE` table.
macro_rules! stamp_ce {
    ([$(#[$attr:meta])*], $token:ty) => {
        /// This tier's cross-entropy kernels.
        pub(crate) static CE: $crate::arch::generic::cross_entropy::CeKernels =
            $crate::arch::generic::cross_entropy::CeKernels {};
    };
}
pub(crate) use stamp_ce;
