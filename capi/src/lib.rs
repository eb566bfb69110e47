//! # softmax-kernels-capi
//!
//! The C ABI of [`softmax-kernels`](sk): `libsoftmax_kernels.so` and `libsoftmax_kernels.a`,
//! declared by the hand-written header `include/softmax_kernels.h` (which is the reference for
//! C users: every function's shapes and status codes are documented there).
//!
//! Conventions of every entry point:
//!
//! * Arrays are passed as a pointer and a length in elements (`const float *x, size_t x_len`),
//!   so that every size error of the Rust crate is reachable from C and reported instead of
//!   read past. A NULL pointer with length 0 is an empty array; a NULL pointer with a nonzero
//!   length is `SK_NULL_POINTER`; a misaligned pointer is `SK_MISALIGNED`; a length whose size
//!   in bytes does not fit `isize` is `SK_ERROR_SIZE_OVERFLOW`.
//! * An output may not overlap any other argument (`SK_OVERLAP`), except where a function
//!   documents in-place use (it then takes identical pointers and lengths). Pointers to one
//!   value (`loss`, `stats`, the getters' and `create`'s out-pointers) are outputs too, the
//!   options and outputs structs are arguments, and a handle's own memory (its struct, and the
//!   buffers it owns) counts as an argument of every call that takes the handle.
//! * Handles carry a tag, checked on every call (one load and compare; see [`handle`]): a
//!   pointer that is not a live handle of its type is `SK_BAD_HANDLE` (best effort for freed
//!   handles).
//! * Enumerated arguments arrive as `int32_t` and are validated (`SK_ERROR_INVALID_OPTION`),
//!   never transmuted into Rust enums.
//! * Every entry point runs inside `std::panic::catch_unwind`: a panic becomes `SK_PANIC`, never
//!   an unwind across the C boundary. Every failure stores a message for the calling thread
//!   ([`runtime::sk_last_error_message`]).
//! * Calls run on the tier chosen by `sk_set_isa` (default: the crate's `Kernels::active()`,
//!   which honours `SOFTMAX_KERNELS_ISA`) and inside the thread pool chosen by
//!   `sk_set_num_threads` (default: rayon's global pool).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
#![warn(missing_docs)]

pub mod args;
pub mod cross_entropy;
pub mod handle;
pub mod layer;
pub mod linear;
pub mod linear_ce;
pub mod runtime;
pub mod shard;
pub mod shard_ce;
pub mod softmax;
pub mod status;
pub mod token;

pub use status::SkStatus;
