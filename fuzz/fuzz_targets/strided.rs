//! Fuzz target `strided`: each strided entry point against the contiguous call of the same
//! tier, bit for bit; see `fuzz_common::strided`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_common::run_or_panic("strided", fuzz_common::strided::check, data);
});
