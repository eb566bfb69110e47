//! Running this test binary again in a child process, also where the tests run under a
//! cross-compilation runner (std only).

use std::process::Command;

/// A [`Command`] that runs this test binary again (the tests that need a fresh process: an
/// environment variable read once per process, an abort).
///
/// Under a runner (`.ci/run` tests the aarch64 build with
/// `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"`)
/// the host cannot execute the binary itself, so the child is started through the same
/// runner: the words of `SOFTMAX_KERNELS_TEST_RUNNER` if set, else, in an aarch64 Linux build,
/// those of `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER` (cargo's environment reaches the
/// test process through the runner). Without either, the binary is run directly.
pub fn self_command() -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let runner = std::env::var("SOFTMAX_KERNELS_TEST_RUNNER")
        .ok()
        .or_else(|| {
            if cfg!(all(target_arch = "aarch64", target_os = "linux")) {
                std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER").ok()
            } else {
                None
            }
        })
        .unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}
