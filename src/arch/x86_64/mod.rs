//! The hand-written x86-64 tiers, chosen at run time.
pub(crate) mod avx2;
pub(crate) mod avx512;
