//! Checking C arrays and turning them into slices.
//!
//! An array argument is a pointer and a length in elements. [`arg`] checks it without reading
//! it (NULL with a nonzero length, alignment, a byte size that fits `isize` and does not wrap
//! the address space) and describes its byte range; [`one_arg`] and [`opt_one`] do the same for
//! a pointer to one value (an out-value such as `loss` or `stats`, an options or outputs
//! struct, the out-pointer of a `create`), and [`Arg::of_ref`] for a handle's own struct;
//! [`disjoint`] checks that outputs, arrays and single values alike, overlap nothing else;
//! [`slice()`] and [`slice_mut()`] then build the slices.

use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use sk::Error;

use crate::status::{CError, CResult};

/// A checked array argument: its name and byte range.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    /// The argument's name (as the header spells it).
    pub name: &'static str,
    /// The first byte's address.
    pub addr: usize,
    /// The length in bytes (0 for an empty array).
    pub bytes: usize,
}

impl Arg {
    /// Whether the two byte ranges share a byte.
    pub fn overlaps(&self, other: &Arg) -> bool {
        self.bytes > 0
            && other.bytes > 0
            && self.addr < other.addr + other.bytes
            && other.addr < self.addr + self.bytes
    }

    /// The range of a Rust slice (for buffers the library owns, such as a layer's weights).
    pub fn of_slice<T>(name: &'static str, s: &[T]) -> Arg {
        Arg {
            name,
            addr: s.as_ptr() as usize,
            bytes: std::mem::size_of_val(s),
        }
    }

    /// The range of a value the library owns (a handle's own struct).
    pub fn of_ref<T>(name: &'static str, r: &T) -> Arg {
        Arg {
            name,
            addr: r as *const T as usize,
            bytes: size_of::<T>(),
        }
    }
}

/// Checks the array `p[0..len]` without reading it: NULL only with `len == 0`, aligned for
/// `T`, `len * size_of::<T>()` at most `isize::MAX` and not wrapping the address space.
///
/// # Errors
/// [`CError::Null`], [`CError::Misaligned`], [`Error::SizeOverflow`].
pub fn arg<T>(name: &'static str, p: *const T, len: usize) -> CResult<Arg> {
    if len == 0 {
        return Ok(Arg {
            name,
            addr: p as usize,
            bytes: 0,
        });
    }
    if p.is_null() {
        return Err(CError::Null {
            arg: name,
            len: Some(len),
        });
    }
    let bytes = len
        .checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .filter(|&b| (p as usize).checked_add(b).is_some())
        .ok_or(CError::Kernel(Error::SizeOverflow { arg: name }))?;
    if !p.is_aligned() {
        return Err(CError::Misaligned {
            arg: name,
            align: align_of::<T>(),
        });
    }
    Ok(Arg {
        name,
        addr: p as usize,
        bytes,
    })
}

/// Checks an optional array: `None` for NULL with length 0, else as [`arg`].
///
/// # Errors
/// As [`arg`] (NULL with a nonzero length is [`CError::Null`]).
pub fn opt_arg<T>(name: &'static str, p: *const T, len: usize) -> CResult<Option<Arg>> {
    if p.is_null() && len == 0 {
        Ok(None)
    } else {
        arg(name, p, len).map(Some)
    }
}

/// Checks that no output overlaps any other argument (outputs included).
///
/// # Errors
/// [`CError::Overlap`] naming the first pair found.
pub fn disjoint(outputs: &[&Arg], inputs: &[&Arg]) -> CResult<()> {
    for (i, o) in outputs.iter().enumerate() {
        for other in outputs[i + 1..].iter().chain(inputs.iter()) {
            if o.overlaps(other) {
                return Err(CError::Overlap {
                    out: o.name,
                    other: other.name,
                });
            }
        }
    }
    Ok(())
}

/// Checks a non-NULL, aligned pointer to one `T` (a handle, an options struct, an out-value).
///
/// # Errors
/// [`CError::Null`] (with no length), [`CError::Misaligned`].
pub fn one<T>(name: &'static str, p: *const T) -> CResult<()> {
    if p.is_null() {
        return Err(CError::Null {
            arg: name,
            len: None,
        });
    }
    if !p.is_aligned() {
        return Err(CError::Misaligned {
            arg: name,
            align: align_of::<T>(),
        });
    }
    Ok(())
}

/// Checks a required pointer to one `T` as [`one`] does, and describes its byte range (so that
/// [`disjoint`] can check it: an out-value or a struct argument is an argument like an array).
///
/// # Errors
/// [`CError::Null`] (with no length), [`CError::Misaligned`], [`Error::SizeOverflow`] (a
/// pointer so close to the end of the address space that the value would wrap it).
pub fn one_arg<T>(name: &'static str, p: *const T) -> CResult<Arg> {
    one(name, p)?;
    arg(name, p, 1)
}

/// Checks an optional pointer to one `T`: `None` for NULL, else as [`one_arg`].
///
/// # Errors
/// As [`one_arg`] (except that NULL is accepted).
pub fn opt_one<T>(name: &'static str, p: *const T) -> CResult<Option<Arg>> {
    if p.is_null() {
        Ok(None)
    } else {
        one_arg(name, p).map(Some)
    }
}

/// `p[0..len]` as a slice (empty for `len == 0`, whatever `p` is).
///
/// # Safety
/// [`arg`] accepted `(p, len)`, and the caller guarantees that `p[0..len]` is initialized,
/// readable memory that no one writes while the slice lives (the C caller's contract, together
/// with [`disjoint`] for this call's own outputs).
pub unsafe fn slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: `arg` checked non-NULL, alignment and a byte size within `isize::MAX` that does
    // not wrap; the caller guarantees validity and the absence of writers.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// `p[0..len]` as a mutable slice (empty for `len == 0`, whatever `p` is).
///
/// # Safety
/// As [`slice()`], and in addition no other reference to any of these bytes exists while the
/// slice lives (checked for this call's arguments by [`disjoint`]).
pub unsafe fn slice_mut<'a, T>(p: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        // SAFETY: a dangling, aligned pointer is valid for an empty slice.
        return unsafe { std::slice::from_raw_parts_mut(NonNull::<T>::dangling().as_ptr(), 0) };
    }
    // SAFETY: as in `slice`, plus uniqueness from the caller.
    unsafe { std::slice::from_raw_parts_mut(p, len) }
}

/// An optional input array as a slice.
///
/// # Safety
/// As [`slice()`], when `a` is `Some`.
pub unsafe fn opt_slice<'a, T>(a: Option<Arg>, p: *const T, len: usize) -> Option<&'a [T]> {
    // SAFETY: forwarded to the caller.
    a.map(|_| unsafe { slice(p, len) })
}

/// An optional output array as a mutable slice.
///
/// # Safety
/// As [`slice_mut()`], when `a` is `Some`.
pub unsafe fn opt_slice_mut<'a, T>(a: Option<Arg>, p: *mut T, len: usize) -> Option<&'a mut [T]> {
    // SAFETY: forwarded to the caller.
    a.map(|_| unsafe { slice_mut(p, len) })
}

/// Writes `v` to the out-pointer `p` if it is not NULL.
///
/// # Safety
/// `p` is NULL or valid for writing one `T`.
pub unsafe fn put<T>(name: &'static str, p: *mut T, v: T) -> CResult<()> {
    if p.is_null() {
        return Ok(());
    }
    one(name, p.cast_const())?;
    // SAFETY: non-NULL and aligned (checked); valid for writes by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Writes `v` to the required out-pointer `p`.
///
/// # Safety
/// `p` is NULL (an error) or valid for writing one `T`.
pub unsafe fn put_required<T>(name: &'static str, p: *mut T, v: T) -> CResult<()> {
    one(name, p.cast_const())?;
    // SAFETY: non-NULL and aligned (checked); valid for writes by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::SkStatus;

    #[test]
    fn checks() {
        let v = [1.0f32; 4];
        assert!(arg("x", v.as_ptr(), 4).is_ok());
        assert!(arg::<f32>("x", std::ptr::null(), 0).is_ok());
        assert_eq!(
            arg::<f32>("x", std::ptr::null(), 3).unwrap_err().status(),
            SkStatus::NullPointer
        );
        assert_eq!(
            arg("x", v.as_ptr(), usize::MAX / 2).unwrap_err().status(),
            SkStatus::SizeOverflow
        );
        let mis = (v.as_ptr() as usize + 1) as *const f32;
        assert_eq!(arg("x", mis, 1).unwrap_err().status(), SkStatus::Misaligned);
        let a = arg("a", v.as_ptr(), 2).unwrap();
        let b = arg("b", v[1..].as_ptr(), 2).unwrap();
        let c = arg("c", v[2..].as_ptr(), 2).unwrap();
        assert!(a.overlaps(&b) && !a.overlaps(&c));
        assert_eq!(
            disjoint(&[&a], &[&b]).unwrap_err().status(),
            SkStatus::Overlap
        );
        assert!(disjoint(&[&a], &[&c]).is_ok());
    }

    /// A pointer to one value (`loss`, `stats`) is a range like an array, so that `disjoint`
    /// refuses it over another argument: the audit's `loss = &grad[0]`.
    #[test]
    fn single_values_are_ranges() {
        let g = [0.0f32; 6];
        let ga = arg("grad", g.as_ptr(), 6).unwrap();
        let loss = one_arg("loss", &g[0] as *const f32).unwrap();
        assert_eq!((loss.addr, loss.bytes), (g.as_ptr() as usize, 4));
        let e = disjoint(&[&ga, &loss], &[]).unwrap_err();
        assert_eq!(e.status(), SkStatus::Overlap);
        assert!(
            e.message().contains("`grad` overlaps `loss`"),
            "{}",
            e.message()
        );
        // Just past the end: disjoint.
        let after = one_arg("loss", g[5..].as_ptr().wrapping_add(1)).unwrap();
        assert!(disjoint(&[&ga, &after], &[]).is_ok());
        // A stats struct at the start of a float buffer.
        let st = [0.0f64; 8];
        let sa = opt_one(
            "stats",
            st.as_ptr().cast::<crate::cross_entropy::SkCeStats>(),
        )
        .unwrap()
        .unwrap();
        let fa = arg("da", st.as_ptr().cast::<f32>(), 16).unwrap();
        assert_eq!(sa.bytes, 40);
        assert!(sa.overlaps(&fa));
        assert!(opt_one::<f32>("loss", std::ptr::null()).unwrap().is_none());
        assert_eq!(
            one_arg::<f32>("loss", std::ptr::null())
                .unwrap_err()
                .status(),
            SkStatus::NullPointer
        );
        let mis = (st.as_ptr() as usize + 4) as *const crate::cross_entropy::SkCeStats;
        assert_eq!(
            opt_one("stats", mis).unwrap_err().status(),
            SkStatus::Misaligned
        );
    }
}
