//! Fuzz target `shard`: the vocabulary-sharded token log-probs and cross-entropy against the
//! unsharded calls, and the top-k output, one tier against the scalar reference; see
//! `fuzz_common::shard`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_common::run_or_panic("shard", fuzz_common::shard::check, data);
});
