//! The scalar reference's cross-entropy kernels (f64 arithmetic).

/// The scalar tier's cross-entropy kernels.
pub(crate) static CE: crate::arch::generic::cross_entropy::CeKernels =
    crate::arch::generic::cross_entropy::CeKernels {};
