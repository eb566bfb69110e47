//! The library's global settings (the forced tier, the thread pool), their C entry points, and
//! the error-reporting entry points.

use std::ffi::c_char;
use std::sync::{Arc, RwLock};

use rayon::ThreadPool;
use sk::{Error, Isa, Kernels};

use crate::status::{self, guard, guard_value, CError, CResult, SkStatus};

/// `SK_ISA_AUTO`: no forced tier.
pub const ISA_AUTO: i32 = -1;

/// What every call runs on.
struct Config {
    /// The tier forced by `sk_set_isa`, or `None` for `Kernels::active()`.
    kernels: Option<&'static Kernels>,
    /// The pool made by `sk_set_num_threads(n > 0)`, or `None` for rayon's global pool.
    pool: Option<Arc<ThreadPool>>,
}

static CONFIG: RwLock<Config> = RwLock::new(Config {
    kernels: None,
    pool: None,
});

fn read_config() -> (Option<&'static Kernels>, Option<Arc<ThreadPool>>) {
    // Nothing panics while the lock is held, but a poisoned lock is still usable.
    let c = CONFIG.read().unwrap_or_else(|e| e.into_inner());
    (c.kernels, c.pool.clone())
}

fn write_config<R>(f: impl FnOnce(&mut Config) -> R) -> R {
    let mut c = CONFIG.write().unwrap_or_else(|e| e.into_inner());
    f(&mut c)
}

/// The tier calls run on now: the forced one, else `Kernels::active()`.
pub(crate) fn kernels() -> CResult<&'static Kernels> {
    match read_config().0 {
        Some(k) => Ok(k),
        None => Ok(Kernels::active()?),
    }
}

/// Runs `f` inside the configured pool (or on the calling thread, which then uses rayon's
/// global pool).
pub(crate) fn in_pool<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    match read_config().1 {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Runs `f` with the current tier inside the configured pool.
pub(crate) fn run<R, F>(f: F) -> CResult<R>
where
    F: FnOnce(&'static Kernels) -> CResult<R> + Send,
    R: Send,
{
    let k = kernels()?;
    in_pool(move || f(k))
}

/// The C code of a tier (`SK_ISA_SCALAR` = 0 ... `SK_ISA_AVX512` = 3).
pub fn isa_code(isa: Isa) -> i32 {
    match isa {
        Isa::Scalar => 0,
        Isa::Portable => 1,
        Isa::Avx2 => 2,
        Isa::Avx512 => 3,
    }
}

/// The tier of a C code, if it is one.
pub fn isa_of_code(code: i32) -> Option<Isa> {
    Isa::ALL.into_iter().find(|&i| isa_code(i) == code)
}

/// The tier calls run on now (`SK_ISA_*`), or -1 if none can run because
/// `SOFTMAX_KERNELS_ISA` is set to something unusable and no tier is forced (the message is
/// then stored for `sk_last_error_message`).
#[no_mangle]
pub extern "C" fn sk_active_isa() -> i32 {
    guard_value("sk_active_isa", -1, || match kernels() {
        Ok(k) => isa_code(k.isa()),
        Err(e) => {
            status::set_last_error(format!(
                "sk_active_isa: {}: {}",
                e.status().name(),
                e.message()
            ));
            -1
        }
    })
}

/// The tiers this CPU can run, as a bitmask: bit `SK_ISA_x` is set when tier `x` is available.
#[no_mangle]
pub extern "C" fn sk_available_isas() -> u32 {
    guard_value("sk_available_isas", 0, || {
        Isa::available()
            .into_iter()
            .fold(0u32, |m, i| m | 1 << isa_code(i))
    })
}

/// The name of a tier code (`"scalar"`, `"portable"`, `"avx2"`, `"avx512"`, `"auto"` for
/// `SK_ISA_AUTO`), or `"unknown"`. A static string.
#[no_mangle]
pub extern "C" fn sk_isa_name(isa: i32) -> *const c_char {
    let s: &'static str = match isa {
        ISA_AUTO => "auto\0",
        0 => "scalar\0",
        1 => "portable\0",
        2 => "avx2\0",
        3 => "avx512\0",
        _ => "unknown\0",
    };
    s.as_ptr().cast()
}

/// Forces the tier of every later call (`SK_ISA_AUTO` returns to the default).
#[no_mangle]
pub extern "C" fn sk_set_isa(isa: i32) -> SkStatus {
    guard("sk_set_isa", || {
        let k = if isa == ISA_AUTO {
            None
        } else {
            let Some(i) = isa_of_code(isa) else {
                return Err(CError::Kernel(Error::InvalidOption {
                    name: "isa",
                    value: isa.to_string(),
                    expected: "SK_ISA_AUTO (-1), SK_ISA_SCALAR (0), SK_ISA_PORTABLE (1), \
                               SK_ISA_AVX2 (2) or SK_ISA_AVX512 (3)",
                }));
            };
            Some(Kernels::try_for_isa(i)?)
        };
        write_config(|c| c.kernels = k);
        Ok(())
    })
}

/// Runs later calls on a pool of `n` threads (`n == 0`: rayon's global pool).
#[no_mangle]
pub extern "C" fn sk_set_num_threads(n: usize) -> SkStatus {
    guard("sk_set_num_threads", || {
        let pool = if n == 0 {
            None
        } else {
            if n > rayon::max_num_threads() {
                return Err(CError::Kernel(Error::InvalidOption {
                    name: "n",
                    value: n.to_string(),
                    expected: "at most rayon::max_num_threads() threads",
                }));
            }
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("sk-worker-{i}"))
                .build()
                .map_err(|e| CError::Other(format!("cannot create a pool of {n} threads: {e}")))?;
            Some(Arc::new(p))
        };
        // The old pool (if any) is dropped once the calls running in it finish; its threads
        // then exit.
        let old = write_config(|c| std::mem::replace(&mut c.pool, pool));
        drop(old);
        Ok(())
    })
}

/// The number of threads calls run on now.
#[no_mangle]
pub extern "C" fn sk_num_threads() -> usize {
    guard_value("sk_num_threads", 0, || in_pool(rayon::current_num_threads))
}

/// The calling thread's last error message (`""` if none): a NUL-terminated string owned by the
/// library, valid until the next call into the library from the same thread.
#[no_mangle]
pub extern "C" fn sk_last_error_message() -> *const c_char {
    status::last_error_ptr()
}

/// Forgets the calling thread's last error message.
#[no_mangle]
pub extern "C" fn sk_clear_last_error() {
    status::clear_last_error();
}

/// The name of a status code (`"SK_OK"`, `"SK_ERROR_ZERO_DIM"`, ...), or
/// `"SK_UNKNOWN_STATUS"`. A static string.
#[no_mangle]
pub extern "C" fn sk_status_name(code: i32) -> *const c_char {
    SkStatus::ALL
        .into_iter()
        .find(|&s| s as i32 == code)
        .map_or("SK_UNKNOWN_STATUS\0", SkStatus::name_nul)
        .as_ptr()
        .cast()
}

/// The library's version (`"0.1.0"`). A static string.
#[no_mangle]
pub extern "C" fn sk_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Test hook: panics inside the guard (in the configured pool) and returns `SK_PANIC`.
#[no_mangle]
pub extern "C" fn sk_debug_panic() -> SkStatus {
    guard("sk_debug_panic", || {
        in_pool(|| -> CResult<()> { panic!("sk_debug_panic: a deliberate panic") })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_codes_roundtrip() {
        for i in Isa::ALL {
            assert_eq!(isa_of_code(isa_code(i)), Some(i));
        }
        assert_eq!(isa_of_code(7), None);
        assert_eq!(sk_available_isas() & 0b11, 0b11);
    }

    #[test]
    fn header_isa_codes() {
        let h = crate::status::tests::header_enum("sk_isa");
        assert_eq!(h[0], ("SK_ISA_AUTO".to_string(), ISA_AUTO));
        for (i, (name, v)) in Isa::ALL.iter().zip(&h[1..]) {
            assert_eq!(name, &format!("SK_ISA_{}", i.name().to_uppercase()));
            assert_eq!(*v, isa_code(*i));
        }
        assert_eq!(h.len(), 5);
    }

    #[test]
    fn debug_panic_is_caught() {
        assert_eq!(sk_debug_panic(), SkStatus::Panic);
    }
}
