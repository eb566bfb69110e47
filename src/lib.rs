//! # softmax-kernels
//!
//! Hand-vectorized CPU kernels for the classification output layer of a neural network:
//!
//! ```text
//! p = softmax(z)           p_k = exp(z_k - lse(z)),  lse(z) = m + ln sum_j exp(z_j - m),  m = max_j z_j
//! log_softmax(z)           z_k - lse(z)
//! logsumexp(z)             lse(z), one value per row
//! softmax backward         dx = y * (dy - <dy, y>)
//! log_softmax backward     dx = dy - exp(y) * sum(dy)
//! ```
//!
//! Data is row-major `[rows, cols]` f32 in a slice of `rows * cols` floats, with the row length
//! `cols` passed alongside (BLAS style). Every function checks its arguments and returns
//! [`Result`]; none panics on bad input.
//!
//! ```
//! let logits = [1.0f32, 2.0, 3.0, /* row 2 */ 0.0, 0.0, 0.0];
//! let mut probs = [0.0f32; 6];
//! softmax_kernels::softmax(&logits, &mut probs, 3)?;
//! assert!((probs[3] - 1.0 / 3.0).abs() < 1e-7);
//! # Ok::<(), softmax_kernels::Error>(())
//! ```
//!
//! ## Tiers
//!
//! | [`Isa`]      | built on                    | chosen                         | lanes |
//! |--------------|-----------------------------|--------------------------------|-------|
//! | `Scalar`     | plain Rust, f64 arithmetic  | never by default: the oracle   | 1     |
//! | `Portable`   | `wide` (SSE2/NEON/simd128)  | when nothing below is present  | 8     |
//! | `Avx2`       | `std::arch`, AVX2 + FMA     | at run time                    | 8     |
//! | `Avx512`     | `std::arch`, AVX-512F       | at run time                    | 16    |
//!
//! The free functions use [`Kernels::active`]: the fastest tier the CPU supports, or the one
//! named by the environment variable `SOFTMAX_KERNELS_ISA=scalar|portable|avx2|avx512`. A value
//! that is not a tier, or a tier the CPU lacks, makes the free functions return
//! [`Error::BadIsaEnv`]. [`Kernels::for_isa`] gives any available tier's table, whose methods
//! mirror the free functions. [`reference`](mod@reference) is the scalar oracle.
//!
//! Work is split across the caller's current rayon pool in row blocks of about 64 KiB (small
//! calls run inline); rows of [`tuning::ONLINE_MIN_COLS`] classes and more are processed in L1-sized
//! chunks with an online `(max, sum)` merge, split across threads when there are fewer rows
//! than threads. **Results are bit-identical for any number of threads.**
//!
//! ## Numerical contract (every tier)
//!
//! * **exp**: the SIMD tiers' exp (the one inside the kernels, [`Kernels::exp_nonpos`]) is
//!   within 2 ULP of the correctly rounded result for every f32 in `[-87.33654, 0]`
//!   (exhaustively tested). Below that `exp` is subnormal, and the test allows the subnormal
//!   result within 2 ULP or exactly 0: the portable and avx2 tiers give the subnormal result
//!   down to `-87.68311` (measured: at most 1 ULP off) and exactly 0 from `-87.68312` on
//!   (including `-inf`); the avx512 tier rounds subnormal results with `vscalefps`, down to
//!   about `-103.97` (by its code; not yet measured on an AVX-512 machine). [`Kernels::exp`] gives the subnormal results down to `-103.97`. The
//!   scalar tier computes in f64 and rounds once: correctly rounded everywhere.
//! * **softmax**: each output `p >= 1e-30` is within a relative error of
//!   `1e-6 + 2^-23 |z - max|` of the f64 result (the second term is the rounding of `z - max`
//!   to f32, which no f32 kernel avoids), for rows of up to 128256 classes and beyond: sums are
//!   accumulated in f32 lanes over short blocks and in f64 across blocks. Each row sums to 1
//!   within `cols * 2^-24`.
//! * **log_softmax**: within `2e-6 * max(1, |v|)` of the f64 result `v`.
//! * **logsumexp**: within `1e-6 * max(1, |lse|)` (relative, absolute near zero).
//! * **Special values** (as PyTorch): a NaN anywhere in a row makes the row's outputs NaN; `-inf`
//!   logits get probability 0 and log-probability `-inf`; a `+inf` logit makes softmax and
//!   log_softmax NaN (`inf - inf`) and logsumexp `+inf`; a row of all `-inf` gives NaN from
//!   softmax and log_softmax, or probability 0 / log-probability `-inf` under
//!   [`MaskedRows::Zero`], and `-inf` from logsumexp. Huge finite logits (`±1e30`, `f32::MAX`)
//!   never overflow.
//! * The backward passes are plain products and sums (dot products accumulated as above); NaN
//!   and infinities propagate by IEEE rules.
//!
//! ## Output-layer updates ([`linear`])
//!
//! `W` is `[C, D]` (classes x features) with a leading dimension, described by
//! [`MatrixLayout`]; batches are `delta = p - y` `[B, C]` and activations `a` `[B, D]`.
//! [`rank1_update`] (`W += alpha x y^T`) and [`rank_k_update`] (`W += alpha delta^T A`) stream
//! `W` once; [`weight_grad`] (`dW = beta dW + alpha delta^T A`) uses the streaming rank-k kernel
//! for small batches and single-threaded `matrixmultiply` sgemm tiles spread over rayon above;
//! [`bias_grad`], [`sgd_step`] (one GEMM with `beta = 1` on `W`), [`Sgd`] (PyTorch's SGD with
//! momentum, dampening, Nesterov and weight decay), [`linear_forward`] (`Z = A W^T + b`) and
//! [`linear_backward_input`] (`dA = delta W`). GEMM-like results are within
//! `(k + 3) 2^-23 sum |terms|` of the exact value and bit-identical for any thread count.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod arch;
#[cfg(feature = "candle")]
pub mod candle;
pub mod cross_entropy;
pub mod dispatch;
pub mod error;
pub mod layer;
pub mod linear;
pub mod linear_ce;
pub mod linear_token;
mod ln;
#[cfg(feature = "ndarray")]
pub mod ndarray;
mod parallel;
pub mod reference;
pub mod shard;
pub mod softmax;
pub mod token;
pub mod tuning;
pub mod view;

pub use dispatch::{Isa, Kernels, ISA_ENV};
pub use error::{Error, Result};
pub use softmax::{
    log_softmax, log_softmax_backward, log_softmax_inplace, log_softmax_inplace_with,
    log_softmax_with, logsumexp, softmax, softmax_backward, softmax_inplace, softmax_inplace_with,
    softmax_with, MaskedRows, SoftmaxOptions,
};
pub use softmax::{
    log_softmax_backward_strided, log_softmax_strided, log_softmax_strided_inplace,
    logsumexp_strided, softmax_backward_strided, softmax_strided, softmax_strided_inplace,
};
// Re-exports of the cross-entropy family (crate::cross_entropy).
pub use cross_entropy::{
    cross_entropy, cross_entropy_fwd_bwd, cross_entropy_fwd_bwd_inplace, cross_entropy_probs,
    cross_entropy_probs_fwd_bwd, cross_entropy_probs_fwd_bwd_inplace, cross_entropy_with,
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Label, Logits,
    Reduction, StridedLogits, StridedTargets, Targets, MAX_CLASSES,
};
// The old name, kept for one release.
#[allow(deprecated)]
pub use cross_entropy::cross_entropy_ext;
// Re-exports of the output-layer family (crate::linear).
pub use layer::OutputLayer;
pub use linear::{
    bias_grad, linear_backward_input, linear_forward, rank1_update, rank_k_update, sgd_step,
    weight_grad, MatrixLayout, Sgd, SgdOptions,
};
pub use linear_ce::{linear_cross_entropy, LinearCeOptions, LinearCeOutputs};
pub use linear_token::{LinearTokenGrads, LinearTokenOptions};
pub use shard::{finalize_ce_states, finalize_states, merge_states, RowState, Shard};
pub use token::{
    token_logprobs, token_logprobs_backward, token_logprobs_backward_inplace,
    token_logprobs_fwd_bwd, token_logprobs_fwd_bwd_inplace, TokenGrads, TokenLogprobOptions,
    TokenLogprobOutputs, TokenSaved,
};
pub use view::{MatMut, MatRef};

/// The README's Rust examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
