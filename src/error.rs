//! The crate's error type.
//!
//! Every public function checks its arguments before any kernel runs and reports a bad argument
//! as an [`Error`] that names the argument and the sizes involved. No public function panics on
//! bad input.

use std::fmt;

use crate::dispatch::Isa;

/// What went wrong. Every variant names the argument at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A dimension that must be positive is zero (for example `cols == 0`).
    ZeroDim {
        /// The argument's name.
        arg: &'static str,
    },
    /// A slice's length is not a whole number of rows.
    NotMultiple {
        /// The slice's name.
        arg: &'static str,
        /// Its length.
        len: usize,
        /// The row length it must be a multiple of.
        cols: usize,
    },
    /// A slice has a different length from the one the other arguments imply.
    LengthMismatch {
        /// The slice's name.
        arg: &'static str,
        /// The length the other arguments imply.
        expected: usize,
        /// The length the slice has.
        actual: usize,
    },
    /// A product of dimensions does not fit in `usize`.
    SizeOverflow {
        /// The argument whose size overflowed.
        arg: &'static str,
    },
    /// A class label is neither in `0..classes` nor the `ignore_index`.
    BadLabel {
        /// The row (sample) holding it.
        row: usize,
        /// The label.
        label: i128,
        /// The number of classes.
        classes: usize,
    },
    /// An option has a value outside its domain.
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// Its value, as given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// An output that the chosen options need, or a forward result the call reads, was not
    /// given.
    MissingOutput {
        /// The argument's name (an output, or a forward result the call reads, such as
        /// `saved.entropy`).
        arg: &'static str,
        /// Why it is needed.
        reason: &'static str,
    },
    /// The instruction-set tier asked for is not supported by this CPU (or this build), from
    /// [`Kernels::try_for_isa`](crate::Kernels::try_for_isa).
    IsaUnavailable {
        /// The tier asked for.
        isa: Isa,
    },
    /// The environment variable `SOFTMAX_KERNELS_ISA` holds a value that is not a tier name, or
    /// names a tier this CPU cannot run.
    BadIsaEnv {
        /// The variable's value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A matrix's leading dimension (row stride) is smaller than its row length.
    LeadingDim {
        /// The matrix's name.
        arg: &'static str,
        /// The leading dimension given.
        ld: usize,
        /// The row length (columns).
        cols: usize,
    },
    /// A strided matrix's slice has a length that fits neither `rows * ld` nor
    /// `(rows - 1) * ld + cols` (the same without the last row's padding).
    MatrixLength {
        /// The matrix's name.
        arg: &'static str,
        /// Its rows.
        rows: usize,
        /// Its columns.
        cols: usize,
        /// Its leading dimension.
        ld: usize,
        /// The slice's length.
        actual: usize,
    },
    /// A class count above [`MAX_CLASSES`](crate::MAX_CLASSES): class indices (labels,
    /// argmax outputs) are `u32` inside the kernels.
    TooManyClasses {
        /// The class count given.
        classes: usize,
        /// The largest class count supported.
        max: usize,
    },
    /// A matrix's shape differs from the one the other arguments imply (for example a strided
    /// output view with other rows or columns than its input).
    ShapeMismatch {
        /// The matrix's name.
        arg: &'static str,
        /// `[rows, cols]` the other arguments imply.
        expected: (usize, usize),
        /// `[rows, cols]` given.
        actual: (usize, usize),
    },
    /// A framework array whose layout the kernels cannot read without a copy: the elements of
    /// a row must be contiguous (stride 1 along the last axis) and rows must not overlap
    /// (a row stride of at least the row length). Copy it to a standard-layout array first.
    UnsupportedLayout {
        /// The array's name.
        arg: &'static str,
        /// Its strides in elements, outer axis first.
        strides: Vec<isize>,
    },
    /// An optimizer's state (its velocity buffer) belongs to a parameter of another shape.
    StateShape {
        /// The parameter's name.
        arg: &'static str,
        /// `[rows, cols]` of the state.
        expected: (usize, usize),
        /// `[rows, cols]` of the parameter given.
        actual: (usize, usize),
    },
}

/// `Result<T, Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroDim { arg } => write!(f, "`{arg}` is 0; it must be at least 1"),
            Error::NotMultiple { arg, len, cols } => write!(
                f,
                "`{arg}` has length {len}, which is not a multiple of cols = {cols}"
            ),
            Error::LengthMismatch {
                arg,
                expected,
                actual,
            } => write!(
                f,
                "`{arg}` has length {actual}, but the other arguments need length {expected}"
            ),
            Error::SizeOverflow { arg } => {
                write!(f, "the size of `{arg}` overflows usize")
            }
            Error::BadLabel {
                row,
                label,
                classes,
            } => write!(
                f,
                "row {row} has label {label}, which is neither a class in 0..{classes} \
                 nor the ignore_index"
            ),
            Error::InvalidOption {
                name,
                value,
                expected,
            } => write!(
                f,
                "option `{name}` = {value} is invalid: it must be {expected}"
            ),
            Error::MissingOutput { arg, reason } => {
                write!(f, "`{arg}` must be given: {reason}")
            }
            Error::IsaUnavailable { isa } => write!(
                f,
                "the `{isa}` tier is not available on this CPU (it runs {})",
                available_tiers()
            ),
            Error::BadIsaEnv { value, reason } => write!(
                f,
                "SOFTMAX_KERNELS_ISA={value:?} is rejected: {reason} (this CPU runs {}; \
                 names are case-insensitive, and an empty value means unset)",
                available_tiers()
            ),
            Error::LeadingDim { arg, ld, cols } => write!(
                f,
                "`{arg}` has leading dimension {ld}, less than its row length {cols}"
            ),
            Error::MatrixLength {
                arg,
                rows,
                cols,
                ld,
                actual,
            } => write!(
                f,
                "`{arg}` has length {actual}, but a [{rows}, {cols}] matrix with leading \
                 dimension {ld} needs {} floats ({} without the last row's padding)",
                rows.saturating_mul(*ld),
                if *rows == 0 {
                    0
                } else {
                    (rows - 1).saturating_mul(*ld).saturating_add(*cols)
                }
            ),
            Error::TooManyClasses { classes, max } => write!(
                f,
                "{classes} classes is more than the {max} the kernels support \
                 (class indices are u32)"
            ),
            Error::ShapeMismatch {
                arg,
                expected,
                actual,
            } => write!(
                f,
                "`{arg}` is [{}, {}], but the other arguments need [{}, {}]",
                actual.0, actual.1, expected.0, expected.1
            ),
            Error::UnsupportedLayout { arg, strides } => write!(
                f,
                "`{arg}` has strides {strides:?} (in elements): the kernels need each row \
                 contiguous (stride 1 along the last axis) and a row stride of at least the \
                 row length; copy it to a standard-layout array first"
            ),
            Error::StateShape {
                arg,
                expected,
                actual,
            } => write!(
                f,
                "`{arg}` is [{}, {}], but the optimizer's state was built for [{}, {}] \
                 (call reset() to start over)",
                actual.0, actual.1, expected.0, expected.1
            ),
        }
    }
}

impl std::error::Error for Error {}

/// The tiers this CPU runs, as a list for messages: `scalar, portable, avx2`.
fn available_tiers() -> String {
    let names: Vec<&str> = Isa::available().into_iter().map(Isa::name).collect();
    names.join(", ")
}

/// Checks a `[rows, cols]` matrix stored in `len` floats and returns `rows`.
pub(crate) fn rows_of(arg: &'static str, len: usize, cols: usize) -> Result<usize> {
    if cols == 0 {
        return Err(Error::ZeroDim { arg: "cols" });
    }
    if !len.is_multiple_of(cols) {
        return Err(Error::NotMultiple { arg, len, cols });
    }
    Ok(len / cols)
}

/// Checks that slice `arg` has exactly `expected` elements.
pub(crate) fn check_len(arg: &'static str, actual: usize, expected: usize) -> Result<()> {
    if actual != expected {
        return Err(Error::LengthMismatch {
            arg,
            expected,
            actual,
        });
    }
    Ok(())
}
