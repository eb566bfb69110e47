//! Tagged handles: `sk_output_layer` and `sk_sgd_optimizer`.
//!
//! A handle is a `Box` of a `#[repr(C)]` struct whose first field is a 64-bit tag: the type's
//! own [`Tagged::LIVE`] value while the handle is live. Every entry point that takes a handle
//! checks it with [`handle`] (NULL, alignment, then one load and compare of the tag) before it
//! touches anything else, so a garbage pointer to readable memory, a handle of the other type,
//! or (usually) a freed handle is `SK_BAD_HANDLE` rather than undefined behaviour. [`free`]
//! checks the tag the same way, overwrites it with [`DEAD`] and only then releases the memory,
//! so a second free of the same pointer is refused while the allocation has not been reused.
//!
//! This is best effort, not a guarantee: reading the tag of a freed handle reads freed memory
//! (the allocator may have handed it out again, or unmapped it), and a pointer to unreadable
//! memory still crashes. What the tag does guarantee is that no pointer whose first eight
//! bytes do not hold the live tag of the right type is ever used as a handle.

use crate::args::one;
use crate::status::{CError, CResult};

/// The tag a handle holds from its release on (allocators may overwrite it).
pub(crate) const DEAD: u64 = u64::from_be_bytes(*b"sk:freed");

/// A handle type: a `#[repr(C)]` struct whose first field is the `u64` tag.
///
/// # Safety
/// Implementors are `#[repr(C)]` with a `u64` first field, set to [`Tagged::LIVE`] when the
/// value is built and written afterwards only by [`free`].
pub(crate) unsafe trait Tagged: Sized {
    /// The tag of a live handle of this type (distinct for each type, never [`DEAD`]).
    const LIVE: u64;
    /// The C type's name, for messages.
    const C_NAME: &'static str;
}

/// Moves `v` (whose tag is [`Tagged::LIVE`]) to the heap and returns the handle.
pub(crate) fn into_handle<T: Tagged>(v: T) -> *mut T {
    let h = Box::into_raw(Box::new(v));
    // SAFETY: `h` is a fresh, live box; by `Tagged`'s contract its first field is the tag.
    debug_assert_eq!(unsafe { h.cast::<u64>().read() }, T::LIVE);
    h
}

/// Checks the handle `p` (non-NULL, aligned, tag [`Tagged::LIVE`]).
///
/// # Safety
/// `p` is NULL, or its first 8 bytes are readable (true of a live handle; for anything else
/// the check is best effort: see the module's documentation).
///
/// # Errors
/// [`CError::Null`], [`CError::Misaligned`], [`CError::BadHandle`].
unsafe fn check<T: Tagged>(name: &'static str, p: *mut T) -> CResult<()> {
    one(name, p.cast_const())?;
    // SAFETY: non-NULL, aligned for `T` (so for `u64`, the first field's type and `T`'s
    // alignment divisor); readable by the caller's contract. One load.
    let tag = unsafe { p.cast::<u64>().read() };
    if tag != T::LIVE {
        return Err(CError::BadHandle {
            arg: name,
            ty: T::C_NAME,
        });
    }
    Ok(())
}

/// The object behind a handle, after [`check`].
///
/// # Safety
/// `p` is NULL, a live handle of type `T` from this library, or (best effort, see the module's
/// documentation) a pointer whose first 8 bytes are readable; a live handle is not used by
/// another thread during the call.
///
/// # Errors
/// [`CError::Null`], [`CError::Misaligned`], [`CError::BadHandle`].
pub(crate) unsafe fn handle<'a, T: Tagged>(name: &'static str, p: *mut T) -> CResult<&'a mut T> {
    // SAFETY: the caller's contract.
    unsafe { check(name, p)? };
    // SAFETY: non-NULL, aligned and tagged live: a live `Box<T>` made by `into_handle`
    // (a foreign object that happens to carry the tag is the documented limit); unshared by
    // the caller's contract.
    Ok(unsafe { &mut *p })
}

/// Releases a handle: checks it, overwrites its tag with [`DEAD`], frees it.
///
/// # Safety
/// As [`handle`]; the handle is not used by another thread during or after the call.
///
/// # Errors
/// As [`handle`] (NULL is the caller's business: the `free` entry points accept it).
pub(crate) unsafe fn free<T: Tagged>(name: &'static str, p: *mut T) -> CResult<()> {
    // SAFETY: the caller's contract.
    unsafe { check(name, p)? };
    // SAFETY: a live handle (checked): its first 8 bytes are the tag. Volatile, so that the
    // store is not removed as dead before the deallocation.
    unsafe { p.cast::<u64>().write_volatile(DEAD) };
    // SAFETY: a live `Box<T>` made by `into_handle`, released once (its tag is no longer
    // live, so a second `free` of this pointer stops at `check` while the memory is not
    // reused).
    drop(unsafe { Box::from_raw(p) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::SkStatus;

    #[repr(C)]
    #[derive(Debug)]
    struct Thing {
        tag: u64,
        v: Vec<u32>,
    }

    // SAFETY: `#[repr(C)]`, the tag first, set only at construction.
    unsafe impl Tagged for Thing {
        const LIVE: u64 = u64::from_be_bytes(*b"sk:thing");
        const C_NAME: &'static str = "thing";
    }

    #[test]
    fn tags_are_checked() {
        let h = into_handle(Thing {
            tag: Thing::LIVE,
            v: vec![1, 2],
        });
        // SAFETY: a live handle.
        assert_eq!(unsafe { handle("h", h) }.unwrap().v, [1, 2]);
        let mut zeros = [0u64; 8];
        let z = zeros.as_mut_ptr().cast::<Thing>();
        // SAFETY: readable memory (64 bytes).
        let e = unsafe { handle("h", z) }.unwrap_err();
        assert_eq!(e.status(), SkStatus::BadHandle);
        assert!(e.message().contains("not a live thing"), "{}", e.message());
        // SAFETY: as above; nothing is freed.
        let e = unsafe { free("h", z) }.unwrap_err();
        assert_eq!(e.status(), SkStatus::BadHandle);
        assert_eq!(zeros, [0; 8]);
        // SAFETY: NULL is checked first.
        let e = unsafe { handle::<Thing>("h", std::ptr::null_mut()) }.unwrap_err();
        assert_eq!(e.status(), SkStatus::NullPointer);
        // SAFETY: a live handle, released once.
        unsafe { free("h", h) }.unwrap();
    }
}
