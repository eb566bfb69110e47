//! The scalar reference's linear kernels (f64 arithmetic).

/// The scalar tier's linear kernels.
pub(crate) static LINEAR: crate::arch::generic::linear::LinearKernels =
    crate::arch::generic::linear::LinearKernels {};
