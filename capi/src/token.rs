//! Per-token log-probabilities and entropy with their gradients (`int64_t` or `int32_t`
//! tokens): the forward, the backward from the forward's saved logsumexp (and entropy), and
//! both in one call; the gradient into a separate buffer or in place; options, per-row
//! outputs, upstream gradients and saved values as plain C structs.

use sk::{Kernels, Label, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved};

use crate::args::{
    arg, disjoint, one, one_arg, opt_arg, opt_one, opt_slice, slice, slice_mut, Arg,
};
use crate::runtime::run;
use crate::status::{guard, CError, CResult, SkStatus};

/// `sk_token_options`: the options of every token log-prob function. Fill it with
/// [`sk_token_options_default`] and change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkTokenOptions {
    /// The sampling temperature (finite, `>= FLT_MIN`; default 1).
    pub temperature: f32,
    /// Logit soft-capping `cap > 0` (applied before the temperature), or 0 for none (default).
    pub softcap: f32,
    /// Nonzero (default 1): tokens equal to `ignore_index` mark rows to skip.
    pub has_ignore_index: i32,
    /// The ignored token (default -100).
    pub ignore_index: i64,
}

/// `sk_token_outputs`: the forward's per-row outputs. `logp` is required; `entropy` and `lse`
/// may be NULL (with length 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkTokenOutputs {
    /// Each row's `log p(token)` (`rows` floats).
    pub logp: *mut f32,
    /// The length of `logp`.
    pub logp_len: usize,
    /// Each row's entropy (`rows` floats), or NULL.
    pub entropy: *mut f32,
    /// The length of `entropy`.
    pub entropy_len: usize,
    /// Each row's logsumexp of `z / T` (`rows` floats), or NULL.
    pub lse: *mut f32,
    /// The length of `lse`.
    pub lse_len: usize,
}

/// `sk_token_grads`: the upstream gradients `dL/dlogp` and `dL/dH`, one per row; each may be
/// NULL (with length 0), meaning zero.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkTokenGrads {
    /// `dL/dlogp[r]` (`rows` floats), or NULL.
    pub logp: *const f32,
    /// The length of `logp`.
    pub logp_len: usize,
    /// `dL/dH[r]` (`rows` floats), or NULL.
    pub entropy: *const f32,
    /// The length of `entropy`.
    pub entropy_len: usize,
}

/// `sk_token_saved`: what the backward needs from the forward: each row's `lse` (required)
/// and, when the entropy has an upstream gradient, each row's entropy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkTokenSaved {
    /// The forward's `lse` output (`rows` floats).
    pub lse: *const f32,
    /// The length of `lse`.
    pub lse_len: usize,
    /// The forward's `entropy` output (`rows` floats), or NULL.
    pub entropy: *const f32,
    /// The length of `entropy`.
    pub entropy_len: usize,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<SkTokenOptions>() == 24);
    assert!(std::mem::size_of::<SkTokenOutputs>() == 48);
    assert!(std::mem::size_of::<SkTokenGrads>() == 32);
    assert!(std::mem::size_of::<SkTokenSaved>() == 32);
};

impl Default for SkTokenOptions {
    fn default() -> Self {
        SkTokenOptions {
            temperature: 1.0,
            softcap: 0.0,
            has_ignore_index: 1,
            ignore_index: -100,
        }
    }
}

/// The options behind `p` (NULL: the defaults).
///
/// # Safety
/// `p` is NULL or points to a readable `sk_token_options`.
pub(crate) unsafe fn read_options(p: *const SkTokenOptions) -> CResult<TokenLogprobOptions> {
    let o = if p.is_null() {
        SkTokenOptions::default()
    } else {
        one("opts", p)?;
        // SAFETY: non-NULL and aligned (checked), readable by the caller's contract; every
        // field is valid for any bit pattern (the padding is not read as a value).
        unsafe { p.read() }
    };
    // The options struct is `#[non_exhaustive]`: start from the defaults and set every field
    // the C struct carries. The crate validates the temperature and the cap.
    let opts = TokenLogprobOptions::default()
        .temperature(o.temperature)
        .ignore_index((o.has_ignore_index != 0).then_some(o.ignore_index));
    // 0 means none; anything else is validated by the crate (finite and > 0).
    Ok(if o.softcap != 0.0 {
        opts.softcap(o.softcap)
    } else {
        opts
    })
}

/// Reads the struct behind `p`, which `one_arg` or `opt_one` accepted.
///
/// # Safety
/// `p` is non-NULL, aligned and points to a readable `T`, one of this module's `repr(C)`
/// structs of pointers, lengths and scalars (valid for any bit pattern; `crate::shard` reads
/// them too).
pub(crate) unsafe fn read_struct<T: Copy>(p: *const T) -> T {
    // SAFETY: the caller's contract.
    unsafe { p.read() }
}

/// What the C call asked for, with the structs behind its arguments.
enum Path {
    /// The forward only: its outputs.
    Forward(*const SkTokenOutputs),
    /// The backward from saved values: the saved values and the upstream gradients (NULL:
    /// none).
    Backward(*const SkTokenSaved, *const SkTokenGrads),
    /// Forward and gradient in one call: the upstream gradients (NULL: none) and the outputs.
    FwdBwd(*const SkTokenGrads, *const SkTokenOutputs),
}

/// The struct a path reads, with its range: the outputs, or the saved values.
#[derive(Clone, Copy)]
enum Read {
    Forward(Arg, SkTokenOutputs),
    FwdBwd(Arg, SkTokenOutputs),
    Backward(Arg, SkTokenSaved),
}

/// The gradient buffer of the backward and fwd_bwd.
enum Dlogits<'a> {
    /// Into a separate buffer.
    Into(&'a [f32], &'a mut [f32]),
    /// Over the logits.
    InPlace(&'a mut [f32]),
}

/// The crate call to make, with its slices.
enum Call<'a> {
    Forward(&'a [f32], TokenLogprobOutputs<'a>),
    Backward(Dlogits<'a>, TokenSaved<'a>, TokenGrads<'a>),
    FwdBwd(Dlogits<'a>, TokenGrads<'a>, TokenLogprobOutputs<'a>),
}

/// The one implementation behind every token log-prob entry point. `dlogits` is the gradient
/// buffer (unused by the forward); the call runs in place when it is the logits' range (same
/// pointer and length).
///
/// # Safety
/// Every pointer is NULL (with length 0 for arrays) or valid for its documented access and
/// length: `logits`, `tokens`, the options, grads and saved structs and their arrays readable,
/// the outputs struct readable and its arrays writable, `dlogits` writable (`logits` too when
/// `dlogits == logits`).
#[allow(clippy::too_many_arguments)]
unsafe fn tok<L: Label>(
    logits: *const f32,
    logits_len: usize,
    tokens: *const L,
    tokens_len: usize,
    dlogits: *mut f32,
    dlogits_len: usize,
    cols: usize,
    opts: *const SkTokenOptions,
    path: Path,
) -> CResult<()> {
    let la = arg("logits", logits, logits_len)?;
    let ta = arg("tokens", tokens, tokens_len)?;
    let opta = opt_one("opts", opts)?;
    // SAFETY: the caller's contract for `opts`.
    let opts = unsafe { read_options(opts)? };
    // The forward and fwd_bwd need the outputs (logp is required), the backward the saved
    // values (lse is required): NULL is SK_NULL_POINTER. The upstream gradients are optional
    // (NULL: none).
    let (read, grads) = match path {
        Path::Forward(o) => {
            let a = one_arg("outputs", o)?;
            // SAFETY: accepted by `one_arg` (non-NULL, aligned); readable by the caller's
            // contract.
            let o = unsafe { read_struct(o) };
            (Read::Forward(a, o), std::ptr::null())
        }
        Path::FwdBwd(g, o) => {
            let a = one_arg("outputs", o)?;
            // SAFETY: as for the forward.
            let o = unsafe { read_struct(o) };
            (Read::FwdBwd(a, o), g)
        }
        Path::Backward(s, g) => {
            let a = one_arg("saved", s)?;
            // SAFETY: as for the forward.
            let s = unsafe { read_struct(s) };
            (Read::Backward(a, s), g)
        }
    };
    let grada = opt_one("grads", grads)?;
    // SAFETY: accepted by `opt_one` when `Some` (non-NULL, aligned); readable by the caller's
    // contract.
    let g = grada.map(|_| unsafe { read_struct(grads) });
    let (o, s, structa) = match read {
        Read::Forward(a, o) | Read::FwdBwd(a, o) => (Some(o), None, a),
        Read::Backward(a, s) => (None, Some(s), a),
    };
    let (lpa, ha, lsa) = match &o {
        Some(o) => (
            Some(arg("logp", o.logp.cast_const(), o.logp_len)?),
            opt_arg("entropy", o.entropy.cast_const(), o.entropy_len)?,
            opt_arg("lse", o.lse.cast_const(), o.lse_len)?,
        ),
        None => (None, None, None),
    };
    let (sla, sha) = match &s {
        Some(s) => (
            Some(arg("saved.lse", s.lse, s.lse_len)?),
            opt_arg("saved.entropy", s.entropy, s.entropy_len)?,
        ),
        None => (None, None),
    };
    let (gla, gha) = match &g {
        Some(g) => (
            opt_arg("grads.logp", g.logp, g.logp_len)?,
            opt_arg("grads.entropy", g.entropy, g.entropy_len)?,
        ),
        None => (None, None),
    };
    let (da, in_place) = match read {
        Read::Forward(..) => (None, false),
        _ => {
            let da = arg("dlogits", dlogits.cast_const(), dlogits_len)?;
            let same =
                dlogits_len > 0 && dlogits.cast_const() == logits && dlogits_len == logits_len;
            (Some(da), same)
        }
    };
    let mut outs: Vec<&Arg> = Vec::with_capacity(4);
    let mut ins: Vec<&Arg> = vec![&ta];
    if !in_place {
        ins.push(&la);
    }
    outs.extend(da.iter().chain(&lpa).chain(&ha).chain(&lsa));
    // The structs are inputs (read before anything is written, but arguments all the same).
    ins.extend(
        sla.iter()
            .chain(&sha)
            .chain(&gla)
            .chain(&gha)
            .chain(&opta)
            .chain([&structa])
            .chain(&grada),
    );
    disjoint(&outs, &ins)?;
    // SAFETY: every range was checked by `arg`/`opt_arg`, the outputs overlap nothing
    // (`disjoint`; in place, `dlogits` is the logits' range and the logits get no shared
    // slice); validity is the caller's contract.
    let (tk, call) = unsafe {
        let tk = slice(tokens, tokens_len);
        let grads = g.map_or(TokenGrads::default(), |g| TokenGrads {
            logp: opt_slice(gla, g.logp, g.logp_len),
            entropy: opt_slice(gha, g.entropy, g.entropy_len),
        });
        let outs_of = |o: SkTokenOutputs| {
            let mut out = TokenLogprobOutputs::new(slice_mut(o.logp, o.logp_len));
            if ha.is_some() {
                out = out.entropy(slice_mut(o.entropy, o.entropy_len));
            }
            if lsa.is_some() {
                out = out.lse(slice_mut(o.lse, o.lse_len));
            }
            out
        };
        let dl = || {
            if in_place {
                Dlogits::InPlace(slice_mut(dlogits, dlogits_len))
            } else {
                Dlogits::Into(slice(logits, logits_len), slice_mut(dlogits, dlogits_len))
            }
        };
        let call = match read {
            Read::Forward(_, o) => Call::Forward(slice(logits, logits_len), outs_of(o)),
            Read::FwdBwd(_, o) => Call::FwdBwd(dl(), grads, outs_of(o)),
            Read::Backward(_, s) => {
                let saved = TokenSaved {
                    lse: slice(s.lse, s.lse_len),
                    entropy: opt_slice(sha, s.entropy, s.entropy_len),
                };
                Call::Backward(dl(), saved, grads)
            }
        };
        (tk, call)
    };
    run(move |k: &'static Kernels| {
        match call {
            Call::Forward(x, out) => k.token_logprobs(x, tk, cols, &opts, out),
            Call::Backward(Dlogits::Into(x, d), saved, grads) => {
                k.token_logprobs_backward(x, tk, cols, &opts, saved, grads, d)
            }
            Call::Backward(Dlogits::InPlace(x), saved, grads) => {
                k.token_logprobs_backward_inplace(x, tk, cols, &opts, saved, grads)
            }
            Call::FwdBwd(Dlogits::Into(x, d), grads, out) => {
                k.token_logprobs_fwd_bwd(x, tk, cols, &opts, grads, out, d)
            }
            Call::FwdBwd(Dlogits::InPlace(x), grads, out) => {
                k.token_logprobs_fwd_bwd_inplace(x, tk, cols, &opts, grads, out)
            }
        }
        .map_err(CError::from)
    })
}

/// Fills `opts` with the defaults (temperature 1, no soft-capping, ignore_index -100).
///
/// # Safety
/// `opts` is NULL (an error) or writable for one `sk_token_options`.
#[no_mangle]
pub unsafe extern "C" fn sk_token_options_default(opts: *mut SkTokenOptions) -> SkStatus {
    guard("sk_token_options_default", || {
        // SAFETY: the caller's contract.
        unsafe { crate::args::put_required("opts", opts, SkTokenOptions::default()) }
    })
}

macro_rules! token_fns {
    ($label:ty, $fwd:ident, $bwd:ident, $bwdi:ident, $fb:ident, $fbi:ident) => {
        /// Per-token log-probabilities (and, when asked, entropies and logsumexps).
        ///
        /// # Safety
        /// `logits` and `tokens` readable for their lengths, `opts` NULL or a readable options
        /// struct, `outputs` a readable struct whose arrays are writable.
        #[no_mangle]
        pub unsafe extern "C" fn $fwd(
            logits: *const f32,
            logits_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            cols: usize,
            opts: *const SkTokenOptions,
            outputs: *const SkTokenOutputs,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($fwd), || unsafe {
                tok(
                    logits,
                    logits_len,
                    tokens,
                    tokens_len,
                    std::ptr::null_mut(),
                    0,
                    cols,
                    opts,
                    Path::Forward(outputs),
                )
            })
        }

        /// The gradient of `sum_r grads.logp[r] logp[r] + grads.entropy[r] H[r]` into
        /// `dlogits` from the forward's saved values (in place if `dlogits == logits`).
        ///
        /// # Safety
        /// As the forward, `saved` a readable struct and `grads` NULL or a readable struct
        /// (their arrays readable), `dlogits` writable for `dlogits_len` floats.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $bwd(
            logits: *const f32,
            logits_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            dlogits: *mut f32,
            dlogits_len: usize,
            cols: usize,
            opts: *const SkTokenOptions,
            saved: *const SkTokenSaved,
            grads: *const SkTokenGrads,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($bwd), || unsafe {
                tok(
                    logits,
                    logits_len,
                    tokens,
                    tokens_len,
                    dlogits,
                    dlogits_len,
                    cols,
                    opts,
                    Path::Backward(saved, grads),
                )
            })
        }

        /// The backward with the gradient written over the logits.
        ///
        /// # Safety
        /// As the backward, and `logits` also writable.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $bwdi(
            logits: *mut f32,
            logits_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            cols: usize,
            opts: *const SkTokenOptions,
            saved: *const SkTokenSaved,
            grads: *const SkTokenGrads,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($bwdi), || unsafe {
                tok(
                    logits,
                    logits_len,
                    tokens,
                    tokens_len,
                    logits,
                    logits_len,
                    cols,
                    opts,
                    Path::Backward(saved, grads),
                )
            })
        }

        /// The forward and the gradient into `dlogits` in one call, for upstream gradients
        /// known before the forward (in place if `dlogits == logits`).
        ///
        /// # Safety
        /// As the forward, `grads` NULL or a readable struct (its arrays readable), `dlogits`
        /// writable for `dlogits_len` floats.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $fb(
            logits: *const f32,
            logits_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            dlogits: *mut f32,
            dlogits_len: usize,
            cols: usize,
            opts: *const SkTokenOptions,
            grads: *const SkTokenGrads,
            outputs: *const SkTokenOutputs,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($fb), || unsafe {
                tok(
                    logits,
                    logits_len,
                    tokens,
                    tokens_len,
                    dlogits,
                    dlogits_len,
                    cols,
                    opts,
                    Path::FwdBwd(grads, outputs),
                )
            })
        }

        /// The forward and the gradient, the gradient written over the logits.
        ///
        /// # Safety
        /// As the fwd_bwd form, and `logits` also writable.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $fbi(
            logits: *mut f32,
            logits_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            cols: usize,
            opts: *const SkTokenOptions,
            grads: *const SkTokenGrads,
            outputs: *const SkTokenOutputs,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($fbi), || unsafe {
                tok(
                    logits,
                    logits_len,
                    tokens,
                    tokens_len,
                    logits,
                    logits_len,
                    cols,
                    opts,
                    Path::FwdBwd(grads, outputs),
                )
            })
        }
    };
}

token_fns!(
    i64,
    sk_token_logprobs,
    sk_token_logprobs_backward,
    sk_token_logprobs_backward_inplace,
    sk_token_logprobs_fwd_bwd,
    sk_token_logprobs_fwd_bwd_inplace
);
token_fns!(
    i32,
    sk_token_logprobs_i32,
    sk_token_logprobs_backward_i32,
    sk_token_logprobs_backward_inplace_i32,
    sk_token_logprobs_fwd_bwd_i32,
    sk_token_logprobs_fwd_bwd_inplace_i32
);

#[cfg(test)]
mod tests {
    use super::*;

    /// NULL options and `sk_token_options_default` both mean the crate's defaults, and the C
    /// fields map onto the crate's (softcap 0: none; has_ignore_index 0: none).
    #[test]
    fn options_map_onto_the_crate() {
        // SAFETY: NULL, then a live local struct.
        unsafe {
            assert_eq!(
                read_options(std::ptr::null()).unwrap(),
                TokenLogprobOptions::default()
            );
            let mut c = SkTokenOptions {
                temperature: 0.0,
                softcap: 1.0,
                has_ignore_index: 0,
                ignore_index: 3,
            };
            assert_eq!(sk_token_options_default(&mut c), SkStatus::Ok);
            assert_eq!(read_options(&c).unwrap(), TokenLogprobOptions::default());
            c.temperature = 0.5;
            c.softcap = 30.0;
            c.has_ignore_index = 0;
            assert_eq!(
                read_options(&c).unwrap(),
                TokenLogprobOptions::default()
                    .temperature(0.5)
                    .softcap(30.0)
                    .ignore_index(None)
            );
            assert_eq!(
                sk_token_options_default(std::ptr::null_mut()),
                SkStatus::NullPointer
            );
        }
    }

    /// The backward with an entropy gradient and no saved entropy is the crate's
    /// `MissingOutput`, before anything is written.
    #[test]
    fn missing_saved_entropy() {
        let z = [0.0f32; 4];
        let t = [0i64, 1];
        let (lse, g) = ([2f32.ln(); 2], [1.0f32; 2]);
        let mut d = [7.0f32; 4];
        let saved = SkTokenSaved {
            lse: lse.as_ptr(),
            lse_len: 2,
            entropy: std::ptr::null(),
            entropy_len: 0,
        };
        let grads = SkTokenGrads {
            logp: std::ptr::null(),
            logp_len: 0,
            entropy: g.as_ptr(),
            entropy_len: 2,
        };
        // SAFETY: every pointer is a live local array of its length.
        let st = unsafe {
            sk_token_logprobs_backward(
                z.as_ptr(),
                4,
                t.as_ptr(),
                2,
                d.as_mut_ptr(),
                4,
                2,
                std::ptr::null(),
                &saved,
                &grads,
            )
        };
        assert_eq!(st, SkStatus::MissingOutput);
        assert_eq!(d, [7.0; 4]);
    }
}
