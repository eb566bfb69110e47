//! Fuzz target `softmax`: one tier against the scalar reference; see `fuzz_common::softmax`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_common::run_or_panic("softmax", fuzz_common::softmax::check, data);
});
