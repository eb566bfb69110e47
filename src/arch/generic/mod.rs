//! The algorithms, written once over [`crate::arch::vector::Simd`] and instantiated per tier by
//! [`crate::arch::stamp_tier!`]. Everything here is `#[inline(always)]` so that it is compiled
//! inside each tier's `#[target_feature]` entry point.
pub(crate) mod ce;
pub(crate) mod exp;
pub(crate) mod gemm_stream;
pub(crate) mod linear;
pub(crate) mod mem;
pub(crate) mod rows;
pub(crate) mod softmax;
pub(crate) mod token;
