//! Fuzz target `token`: token log-probs, entropy and their gradients, one tier against the
//! scalar reference; see `fuzz_common::token`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_common::run_or_panic("token", fuzz_common::token::check, data);
});
