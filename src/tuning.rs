//! The thresholds the kernels' plans use to choose a path or a chunk size.
//!
//! **Not a stable API.** These values are tuned on the machines the crate is measured on and
//! may change in any release, patch releases included; nothing in the crate's results depends
//! on them beyond which path runs (every path meets the same numerical contract, and the
//! results stay bit-identical for any thread count). They are public so that tests, benches
//! and fuzz targets can aim at the boundaries, and so that a user can see why a call took the
//! path it took.

/// Softmax-family rows with at least this many classes use the chunked online variant (their
/// input and output no longer fit in about half of a 1 MiB L2 cache).
pub const ONLINE_MIN_COLS: usize = 64 * 1024;

/// The chunk length (floats) of the online variant: 16 KiB of input, L1-resident.
pub const ONLINE_CHUNK: usize = 4096;

/// The fused linear cross-entropy's default budget for one chunk of logits: 16 MiB
/// ([`LinearCeOptions::chunk_bytes`](crate::LinearCeOptions::chunk_bytes)).
pub const DEFAULT_CHUNK_BYTES: usize = 16 << 20;

/// Fused linear cross-entropy without streaming GEMMs (or below [`STREAM_MIN_ROWS`] rows):
/// automatic chunking uses whole rows only when the budget holds this many rows (or the whole
/// batch); below, class blocks. Each row chunk streams `W` twice and `dW` once through
/// `matrixmultiply`'s packing, while the class-chunked mode pays one more forward GEMM; whole
/// rows win from about 90 rows per chunk.
pub const ROW_MODE_MIN_ROWS: usize = 96;

/// Fused linear cross-entropy on tiers with streaming GEMMs (AVX2, AVX-512: see
/// [`crate::linear`]): automatic chunking uses whole rows, in chunks of up to 64 rows,
/// whenever the budget holds this many rows (or the whole batch). A row chunk then reads `W`
/// twice and `dW` once straight from memory, which the micro-kernels hide behind their
/// arithmetic from about this many rows.
pub const STREAM_MIN_ROWS: usize = 16;

/// The smallest class block the fused linear cross-entropy's automatic chunking forms (the
/// `dW` GEMM of a block has this many rows), unless `C` is smaller.
pub const CLASS_BLOCK_MIN: usize = 1024;
