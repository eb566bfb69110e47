//! Status codes, the per-thread last error message, and the panic guard of every entry point.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use sk::Error;

/// The status every fallible entry point returns (`sk_status` in the header). Codes 1 to 12 are
/// the variants of the crate's [`Error`]; codes from 100 are the C layer's own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkStatus {
    /// Success.
    Ok = 0,
    /// [`Error::ZeroDim`]: a dimension that must be positive is 0 (for example `cols == 0`).
    ZeroDim = 1,
    /// [`Error::NotMultiple`]: an array's length is not a whole number of rows.
    NotMultiple = 2,
    /// [`Error::LengthMismatch`]: an array's length differs from what the others imply.
    LengthMismatch = 3,
    /// [`Error::SizeOverflow`]: a size does not fit in memory (a product overflows).
    SizeOverflow = 4,
    /// [`Error::BadLabel`]: a class label outside `0..cols` that is not the ignore_index.
    BadLabel = 5,
    /// [`Error::InvalidOption`]: an option (or enumerated argument) out of its domain.
    InvalidOption = 6,
    /// [`Error::MissingOutput`]: an output the options need was not given.
    MissingOutput = 7,
    /// [`Error::IsaUnavailable`]: the tier asked for cannot run on this CPU.
    IsaUnavailable = 8,
    /// [`Error::BadIsaEnv`]: `SOFTMAX_KERNELS_ISA` is set to something unusable.
    BadIsaEnv = 9,
    /// [`Error::LeadingDim`]: a leading dimension smaller than the row length.
    LeadingDim = 10,
    /// [`Error::MatrixLength`]: a strided matrix's array has the wrong length.
    MatrixLength = 11,
    /// [`Error::StateShape`]: an optimizer's state belongs to a parameter of another shape.
    StateShape = 12,
    /// [`Error::TooManyClasses`]: more classes than the kernels support (`MAX_CLASSES`).
    TooManyClasses = 13,
    /// A NULL pointer where an array of nonzero length, a handle or an output is required.
    NullPointer = 100,
    /// An output overlaps another argument (and the function does not allow that aliasing).
    Overlap = 101,
    /// A pointer is not aligned for its element type.
    Misaligned = 102,
    /// A panic was caught at the boundary (a bug; the message holds the panic's text).
    Panic = 103,
    /// A handle argument is not a live handle of its type: freed, never made by its `create`
    /// function, of the other handle type, or overwritten (detected by the handle's tag; best
    /// effort for freed memory).
    BadHandle = 104,
    /// An error the C layer has no code for (a newer variant of the `#[non_exhaustive]`
    /// [`Error`], or a failure to create a thread pool).
    Other = 199,
}

impl SkStatus {
    /// Every status, in code order.
    pub const ALL: [SkStatus; 20] = [
        SkStatus::Ok,
        SkStatus::ZeroDim,
        SkStatus::NotMultiple,
        SkStatus::LengthMismatch,
        SkStatus::SizeOverflow,
        SkStatus::BadLabel,
        SkStatus::InvalidOption,
        SkStatus::MissingOutput,
        SkStatus::IsaUnavailable,
        SkStatus::BadIsaEnv,
        SkStatus::LeadingDim,
        SkStatus::MatrixLength,
        SkStatus::StateShape,
        SkStatus::TooManyClasses,
        SkStatus::NullPointer,
        SkStatus::Overlap,
        SkStatus::Misaligned,
        SkStatus::Panic,
        SkStatus::BadHandle,
        SkStatus::Other,
    ];

    /// The constant's name in the header, NUL-terminated.
    pub const fn name_nul(self) -> &'static str {
        match self {
            SkStatus::Ok => "SK_OK\0",
            SkStatus::ZeroDim => "SK_ERROR_ZERO_DIM\0",
            SkStatus::NotMultiple => "SK_ERROR_NOT_MULTIPLE\0",
            SkStatus::LengthMismatch => "SK_ERROR_LENGTH_MISMATCH\0",
            SkStatus::SizeOverflow => "SK_ERROR_SIZE_OVERFLOW\0",
            SkStatus::BadLabel => "SK_ERROR_BAD_LABEL\0",
            SkStatus::InvalidOption => "SK_ERROR_INVALID_OPTION\0",
            SkStatus::MissingOutput => "SK_ERROR_MISSING_OUTPUT\0",
            SkStatus::IsaUnavailable => "SK_ERROR_ISA_UNAVAILABLE\0",
            SkStatus::BadIsaEnv => "SK_ERROR_BAD_ISA_ENV\0",
            SkStatus::LeadingDim => "SK_ERROR_LEADING_DIM\0",
            SkStatus::MatrixLength => "SK_ERROR_MATRIX_LENGTH\0",
            SkStatus::StateShape => "SK_ERROR_STATE_SHAPE\0",
            SkStatus::TooManyClasses => "SK_ERROR_TOO_MANY_CLASSES\0",
            SkStatus::NullPointer => "SK_NULL_POINTER\0",
            SkStatus::Overlap => "SK_OVERLAP\0",
            SkStatus::Misaligned => "SK_MISALIGNED\0",
            SkStatus::Panic => "SK_PANIC\0",
            SkStatus::BadHandle => "SK_BAD_HANDLE\0",
            SkStatus::Other => "SK_ERROR_OTHER\0",
        }
    }

    /// The constant's name in the header.
    pub fn name(self) -> &'static str {
        let n = self.name_nul();
        &n[..n.len() - 1]
    }

    /// The status of a crate error; variants this layer does not know map to
    /// [`SkStatus::Other`].
    pub fn of_error(e: &Error) -> SkStatus {
        match e {
            Error::ZeroDim { .. } => SkStatus::ZeroDim,
            Error::NotMultiple { .. } => SkStatus::NotMultiple,
            Error::LengthMismatch { .. } => SkStatus::LengthMismatch,
            Error::SizeOverflow { .. } => SkStatus::SizeOverflow,
            Error::BadLabel { .. } => SkStatus::BadLabel,
            Error::InvalidOption { .. } => SkStatus::InvalidOption,
            Error::MissingOutput { .. } => SkStatus::MissingOutput,
            Error::IsaUnavailable { .. } => SkStatus::IsaUnavailable,
            Error::BadIsaEnv { .. } => SkStatus::BadIsaEnv,
            Error::LeadingDim { .. } => SkStatus::LeadingDim,
            Error::MatrixLength { .. } => SkStatus::MatrixLength,
            Error::StateShape { .. } => SkStatus::StateShape,
            Error::TooManyClasses { .. } => SkStatus::TooManyClasses,
            _ => SkStatus::Other,
        }
    }
}

/// An error of the C layer: a crate error or one of the boundary's own.
#[derive(Debug)]
pub enum CError {
    /// An error of the Rust crate.
    Kernel(Error),
    /// A NULL pointer for argument `arg` of length `len` (`None`: a handle or a required
    /// out-pointer).
    Null {
        /// The argument.
        arg: &'static str,
        /// Its length, for arrays.
        len: Option<usize>,
    },
    /// Output `out` overlaps argument `other`.
    Overlap {
        /// The output.
        out: &'static str,
        /// The argument it overlaps.
        other: &'static str,
    },
    /// `arg` is not aligned to `align` bytes.
    Misaligned {
        /// The argument.
        arg: &'static str,
        /// The alignment its type needs.
        align: usize,
    },
    /// The handle `arg` is not a live handle of type `ty`.
    BadHandle {
        /// The argument.
        arg: &'static str,
        /// The handle's C type.
        ty: &'static str,
    },
    /// A caught panic, with its message.
    Panic(String),
    /// Anything else, with a message.
    Other(String),
}

impl From<Error> for CError {
    fn from(e: Error) -> Self {
        CError::Kernel(e)
    }
}

impl CError {
    /// The status code.
    pub fn status(&self) -> SkStatus {
        match self {
            CError::Kernel(e) => SkStatus::of_error(e),
            CError::Null { .. } => SkStatus::NullPointer,
            CError::Overlap { .. } => SkStatus::Overlap,
            CError::Misaligned { .. } => SkStatus::Misaligned,
            CError::BadHandle { .. } => SkStatus::BadHandle,
            CError::Panic(_) => SkStatus::Panic,
            CError::Other(_) => SkStatus::Other,
        }
    }

    /// The message (without the function name).
    pub fn message(&self) -> String {
        match self {
            CError::Kernel(e) => e.to_string(),
            CError::Null { arg, len: Some(n) } => {
                format!("`{arg}` is NULL but its length is {n} (NULL is only valid with length 0)")
            }
            CError::Null { arg, len: None } => format!("`{arg}` is NULL"),
            CError::Overlap { out, other } => format!(
                "the output `{out}` overlaps `{other}` (outputs must not overlap other \
                 arguments, except the documented in-place forms)"
            ),
            CError::Misaligned { arg, align } => {
                format!("`{arg}` is not aligned to {align} bytes")
            }
            CError::BadHandle { arg, ty } => format!(
                "`{arg}` is not a live {ty} (already freed, not made by {ty}_create, or \
                 overwritten)"
            ),
            CError::Panic(m) => format!("panic caught at the C boundary: {m}"),
            CError::Other(m) => m.clone(),
        }
    }
}

/// The C layer's result type.
pub type CResult<T> = Result<T, CError>;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Stores `msg` as the calling thread's last error message.
pub(crate) fn set_last_error(msg: String) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; the message is then dropped.
    let _ = LAST_ERROR.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = Some(c);
        }
    });
}

/// Forgets the calling thread's last error message.
pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = None;
        }
    });
}

/// The calling thread's last error message as a C string, or `""`.
pub(crate) fn last_error_ptr() -> *const c_char {
    const EMPTY: &str = "\0";
    LAST_ERROR
        .try_with(|l| match l.try_borrow() {
            Ok(slot) => slot.as_ref().map(|c| c.as_ptr()),
            Err(_) => None,
        })
        .ok()
        .flatten()
        .unwrap_or(EMPTY.as_ptr().cast())
}

/// The text of a panic payload.
fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}

/// Runs `f`, catching any panic, and turns its outcome into a status; on failure stores the
/// message (prefixed with `func`, the entry point's name) for the calling thread. Successful
/// calls leave the last message as it was (like `errno`).
pub(crate) fn guard<F>(func: &'static str, f: F) -> SkStatus
where
    F: FnOnce() -> CResult<()>,
{
    let err = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return SkStatus::Ok,
        Ok(Err(e)) => e,
        Err(payload) => {
            let text = panic_text(&*payload);
            // Dropping a payload can itself panic; that second payload is forgotten.
            if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            CError::Panic(text)
        }
    };
    let status = err.status();
    // Formatting the message cannot panic for these types, but the boundary stays closed
    // even if it did.
    let msg = catch_unwind(AssertUnwindSafe(|| {
        format!("{func}: {}: {}", status.name(), err.message())
    }))
    .unwrap_or_else(|_| format!("{func}: {}", status.name()));
    set_last_error(msg);
    status
}

/// Runs `f` (an entry point that returns a value rather than a status) catching any panic;
/// a panic gives `fallback` and stores the message.
pub(crate) fn guard_value<T, F>(func: &'static str, fallback: T, f: F) -> T
where
    F: FnOnce() -> T,
{
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let text = panic_text(&*payload);
            if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            set_last_error(format!(
                "{func}: SK_PANIC: panic caught at the C boundary: {text}"
            ));
            fallback
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `NAME = VALUE` pairs of the header's `typedef enum NAME { ... } NAME;` block.
    pub(crate) fn header_enum(name: &str) -> Vec<(String, i32)> {
        let h = include_str!("../include/softmax_kernels.h");
        let start = h
            .find(&format!("typedef enum {name} {{"))
            .unwrap_or_else(|| panic!("no enum {name}"));
        let end = start + h[start..].find(&format!("}} {name};")).unwrap();
        h[start..end]
            .lines()
            .skip(1)
            .filter_map(|l| {
                let l = l.trim();
                let (n, rest) = l.split_once(" = ")?;
                let v = rest.split(',').next()?.trim().parse().ok()?;
                Some((n.to_string(), v))
            })
            .collect()
    }

    /// The header's `sk_status` enum lists exactly these names and values.
    #[test]
    fn header_matches_status_codes() {
        let rust: Vec<(String, i32)> = SkStatus::ALL
            .iter()
            .map(|&s| (s.name().to_string(), s as i32))
            .collect();
        assert_eq!(header_enum("sk_status"), rust);
    }

    #[test]
    fn guard_catches_panics_and_sets_message() {
        let st = guard("test_fn", || panic!("boom"));
        assert_eq!(st, SkStatus::Panic);
        // SAFETY: the pointer is the thread's live CString (or a static "").
        let msg = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        let msg = msg.to_str().unwrap();
        assert!(msg.contains("test_fn") && msg.contains("boom"), "{msg}");
        assert_eq!(guard("ok", || Ok(())), SkStatus::Ok);
    }

    #[test]
    fn unknown_errors_map_to_other() {
        assert_eq!(
            SkStatus::of_error(&Error::ZeroDim { arg: "cols" }),
            SkStatus::ZeroDim
        );
        assert_eq!(CError::Other("x".into()).status(), SkStatus::Other);
    }
}
