//! Instruction-set tiers, CPU detection, and the kernel tables.
//!
//! A [`Kernels`] value is a table of row kernels for one tier. The tables exist as statics; the
//! only ways to get one check that the running CPU has the tier's features, so holding a
//! `&Kernels` is the proof that calling its kernels is sound.
//!
//! * [`Kernels::best`]: the fastest tier this CPU supports (detected once, cached).
//! * [`Kernels::for_isa`]: a specific tier, or `None` if the CPU lacks it.
//! * [`Kernels::active`]: what the crate's free functions use: the tier named by the environment
//!   variable `SOFTMAX_KERNELS_ISA` (`scalar`, `portable`, `avx2`, `avx512`) if it is set, else
//!   [`Kernels::best`]. A value that is not a tier name, or names a tier this CPU lacks, makes
//!   every free function return [`Error::BadIsaEnv`] rather than silently running another tier.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// An instruction-set tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// The reference oracle: plain scalar code with f64 arithmetic ([`crate::reference`]).
    Scalar,
    /// `wide`'s vectors: SSE2 on a default x86-64 build, NEON on aarch64, simd128 on wasm;
    /// faster under `-C target-cpu=native`.
    Portable,
    /// AVX2 + FMA, 8 lanes, chosen at run time.
    Avx2,
    /// AVX-512F (with AVX2 and FMA), 16 lanes and masked tails, chosen at run time.
    Avx512,
}

impl Isa {
    /// Every tier the crate knows, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The tier's name as `SOFTMAX_KERNELS_ISA` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU (and this build) can run the tier.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar | Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::arch::x86_64::avx2::Avx2::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::arch::x86_64::avx512::Avx512::new().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// The tiers this CPU can run, slowest first (always starts with `Scalar, Portable`).
    ///
    /// ```
    /// use softmax_kernels::Isa;
    /// let tiers = Isa::available();
    /// assert_eq!(&tiers[..2], &[Isa::Scalar, Isa::Portable]);
    /// ```
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest tier this CPU can run.
    pub fn best() -> Isa {
        Kernels::best().isa
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = Error;

    /// Parses a tier name (`scalar`, `portable`, `avx2`, `avx512`; case-insensitive,
    /// surrounding spaces ignored).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] (`name: "isa"`) for anything else.
    ///
    /// ```
    /// use softmax_kernels::Isa;
    /// assert_eq!(" AVX2 ".parse::<Isa>(), Ok(Isa::Avx2));
    /// assert!("avx9".parse::<Isa>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Isa> {
        let t = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == t)
            .ok_or_else(|| Error::InvalidOption {
                name: "isa",
                value: format!("{s:?}"),
                expected: "a tier name: scalar, portable, avx2 or avx512 (case and surrounding \
                           spaces are ignored)",
            })
    }
}

/// A forward path of the softmax family over `rows x cols` (src, dst, rows, cols, what to
/// compute); `logsumexp` writes one value per row.
pub(crate) type FwdFn =
    unsafe fn(*const f32, *mut f32, usize, usize, crate::arch::generic::softmax::FwdArgs);
/// Backward passes (y, dy, dx, rows, cols, the row strides of y, dy and dx).
pub(crate) type BackwardFn = unsafe fn(*const f32, *const f32, *mut f32, usize, usize, [usize; 3]);
/// Online-softmax chunk state (src, dst or null, n) -> (max, sum).
pub(crate) type ChunkStatsFn = unsafe fn(*const f32, *mut f32, usize) -> (f32, f64);
/// `y *= r` (y, n, r).
pub(crate) type ScaleFn = unsafe fn(*mut f32, usize, f32);
/// `y = (x - m) - ls` (x, y, n, m, ls).
pub(crate) type Sub2Fn = unsafe fn(*const f32, *mut f32, usize, f32, f32);
/// An element-wise map (x, y, n).
pub(crate) type MapFn = unsafe fn(*const f32, *mut f32, usize);

/// A table of row kernels for one instruction-set tier.
///
/// Get one from [`Kernels::best`], [`Kernels::for_isa`] or [`Kernels::active`]; each of the
/// crate's free functions exists as a method here too, for running a chosen tier.
///
/// ```
/// use softmax_kernels::{Isa, Kernels};
/// for isa in Isa::available() {
///     let k = Kernels::for_isa(isa).unwrap();
///     let mut p = [0.0f32; 2];
///     k.softmax(&[0.0, 2f32.ln()], &mut p, 2).unwrap();
///     assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
/// }
/// ```
pub struct Kernels {
    pub(crate) isa: Isa,
    /// The most classes the `Short` forward path takes.
    pub(crate) short_cols: usize,
    /// The fewest classes the `Online` forward path takes.
    pub(crate) online_min_cols: usize,
    /// The `Short` forward path (`crate::softmax`'s module docs).
    pub(crate) fwd_short: FwdFn,
    /// The `Rows` forward path.
    pub(crate) fwd_rows: FwdFn,
    pub(crate) softmax_backward_rows: BackwardFn,
    pub(crate) log_softmax_backward_rows: BackwardFn,
    pub(crate) chunk_stats: ChunkStatsFn,
    pub(crate) scale: ScaleFn,
    pub(crate) sub2: Sub2Fn,
    pub(crate) exp_nonpos: MapFn,
    pub(crate) exp_full: MapFn,
    /// The output-layer update kernels (`crate::linear`).
    pub(crate) linear: &'static crate::arch::generic::linear::LinearKernels,
    /// The cross-entropy kernels (`crate::cross_entropy`).
    pub(crate) ce: &'static crate::arch::generic::ce::CeKernels,
    /// The token log-prob kernels (`crate::token`).
    pub(crate) tok: &'static crate::arch::generic::token::TokKernels,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

/// The table for `isa`, without checking the CPU.
fn table(isa: Isa) -> Option<&'static Kernels> {
    match isa {
        Isa::Scalar => Some(&crate::reference::KERNELS),
        Isa::Portable => Some(&crate::arch::portable::KERNELS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&crate::arch::x86_64::avx2::KERNELS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(&crate::arch::x86_64::avx512::KERNELS),
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 => None,
    }
}

/// The environment variable that forces the tier of the free functions.
pub const ISA_ENV: &str = "SOFTMAX_KERNELS_ISA";

impl Kernels {
    /// The fastest tier this CPU supports. Detection runs once; later calls are one atomic load.
    pub fn best() -> &'static Kernels {
        static BEST: OnceLock<&'static Kernels> = OnceLock::new();
        BEST.get_or_init(|| {
            let isa = Isa::ALL
                .into_iter()
                .rev()
                .find(|i| i.is_available())
                .unwrap_or(Isa::Scalar);
            table(isa).unwrap_or(&crate::reference::KERNELS)
        })
    }

    /// The table for `isa`, or `None` if this CPU (or build) cannot run it.
    pub fn for_isa(isa: Isa) -> Option<&'static Kernels> {
        if isa.is_available() {
            table(isa)
        } else {
            None
        }
    }

    /// [`Kernels::for_isa`] as a `Result`, for callers that report the missing tier.
    ///
    /// # Errors
    /// [`Error::IsaUnavailable`] if this CPU (or build) cannot run `isa`; its message lists
    /// the tiers it can run.
    ///
    /// ```
    /// use softmax_kernels::{Isa, Kernels};
    /// assert_eq!(Kernels::try_for_isa(Isa::Portable)?.isa(), Isa::Portable);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    pub fn try_for_isa(isa: Isa) -> Result<&'static Kernels> {
        Kernels::for_isa(isa).ok_or(Error::IsaUnavailable { isa })
    }

    /// The table the free functions use: the tier forced by `SOFTMAX_KERNELS_ISA`, else
    /// [`Kernels::best`]. The variable is read once per process. Its value is a tier name in
    /// any case, with surrounding spaces ignored (`" AVX2"` is `avx2`); an empty (or all-space)
    /// value means unset.
    ///
    /// # Errors
    /// [`Error::BadIsaEnv`] when the variable is set to something other than a tier name, or to
    /// a tier this CPU cannot run (the message lists the tiers it can run).
    pub fn active() -> Result<&'static Kernels> {
        static ACTIVE: OnceLock<Result<&'static Kernels>> = OnceLock::new();
        ACTIVE
            .get_or_init(|| match std::env::var(ISA_ENV) {
                Err(std::env::VarError::NotPresent) => Ok(Kernels::best()),
                Err(std::env::VarError::NotUnicode(v)) => Err(Error::BadIsaEnv {
                    value: v.to_string_lossy().into_owned(),
                    reason: "not valid UTF-8",
                }),
                Ok(v) if v.trim().is_empty() => Ok(Kernels::best()),
                Ok(v) => match v.parse::<Isa>() {
                    Err(_) => Err(Error::BadIsaEnv {
                        value: v,
                        reason: "not a tier name",
                    }),
                    Ok(isa) => Kernels::for_isa(isa).ok_or(Error::BadIsaEnv {
                        value: v,
                        reason: "this CPU cannot run that tier",
                    }),
                },
            })
            .clone()
    }

    /// The tier of this table.
    pub fn isa(&self) -> Isa {
        self.isa
    }
}
