//! Per-token log-probabilities and entropy, with their gradients: what reinforcement-learning
//! fine-tuning (PPO, GRPO, DPO, KTO) and distillation need from the output layer, without the
//! `[B, C]` log-softmax tensor.
//!
//! For a row `x` of `C` logits, a token `t`, temperature `T` and an optional soft-cap `c`:
//!
//! ```text
//! z    = c tanh(x / c)            (or x without a cap: the model's capping first)
//! z'   = z / T                    (the sampling temperature, applied to every term)
//! lse  = ln sum_k exp(z'_k)
//! logp = z'_t - lse               = log_softmax(z / T)[t]
//! H    = -sum_k p_k ln p_k        (p = softmax(z'))
//! dlogp / dx_k = ([k = t] - p_k) / T             (times 1 - (z_k / c)^2 with a cap)
//! dH    / dx_k = -p_k (ln p_k + H) / T           (likewise)
//! ```
//!
//! The temperature divides every logit before anything else, so `logp` and `H` are those of
//! the distribution the tokens were sampled from (applying it to one term and not the other is
//! a known source of nat-sized errors in RL code).
//!
//! In PyTorch terms, `logp = torch.log_softmax(z / T, -1).gather(-1, t)`,
//! `H = torch.distributions.Categorical(logits=z / T).entropy()`, `lse = torch.logsumexp(z / T,
//! -1)`.
//!
//! Three forms:
//!
//! * [`Kernels::token_logprobs`]: the forward (`logp`, and when asked `H` and `lse`): two
//!   sweeps over each row, one exp per element; the entropy costs one FMA per element, only
//!   when asked for.
//! * [`Kernels::token_logprobs_backward`] (and `_inplace`): the gradient of
//!   `sum_b g_logp[b] logp[b] + g_entropy[b] H[b]` from the forward's saved `lse` (and `H`):
//!   one sweep, one exp per element.
//! * [`Kernels::token_logprobs_fwd_bwd`] (and `_inplace`): both in one call when the upstream
//!   gradients are known before the forward (REINFORCE-style advantages, a fixed entropy bonus):
//!   three sweeps, one exp per element (two with a cap, or with the entropy's gradient in
//!   place).
//!
//! Rows whose token is `ignore_index` have `logp = 0`, `H = 0` and a zero gradient (their `lse`
//! is still reported when asked for). A row holding NaN or `+inf`, or all `-inf`, has NaN
//! outputs and a NaN gradient, as PyTorch's `log_softmax`; without a soft-cap, a `-inf` logit
//! (a masked vocabulary entry) has probability 0 and contributes 0 to `H` and its gradient, and
//! a `-inf` token logit gives `logp = -inf`. (A soft-cap maps `-inf` to `-cap`, a finite
//! logit, as Gemma 2's capping does: mask after capping, or without a cap.) With a cap, `+inf`
//! likewise becomes `cap`.
//!
//! Every output is per row, so results are bit-identical for any number of threads.

use crate::arch::generic::ce::IGNORED;
use crate::arch::generic::token::{TokCall, TokPath, TokRows, ELSEWHERE};
use crate::cross_entropy::{class_of, Label, MAX_CLASSES};
use crate::dispatch::Kernels;
use crate::error::{check_len, rows_of, Error, Result};
use crate::parallel::for_each_row_block;
use crate::shard::RowState;
use crate::view::{nonzero_cols, same_shape, MatMut, MatRef};

/// Tokens converted to kernel classes at a time (on the stack) per row block.
const TOKEN_BATCH: usize = 64;

/// Options of the token log-prob functions. The default is temperature 1, no soft-cap and
/// `ignore_index = -100` (the label padding value of PyTorch and Hugging Face).
///
/// ```
/// use softmax_kernels::TokenLogprobOptions;
/// let o = TokenLogprobOptions::default().temperature(0.7).softcap(30.0).ignore_index(None);
/// assert_eq!((o.temperature, o.softcap, o.ignore_index), (0.7, Some(30.0), None));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct TokenLogprobOptions {
    /// The sampling temperature `T` (finite, `>= f32::MIN_POSITIVE`): every logit is divided
    /// by it (after the soft-cap).
    pub temperature: f32,
    /// Soft-cap the logits first: `z = cap tanh(x / cap)` (finite, `>= f32::MIN_POSITIVE`).
    pub softcap: Option<f32>,
    /// Tokens equal to this value mark rows to skip (logp 0, entropy 0, gradient 0).
    pub ignore_index: Option<i64>,
}

impl Default for TokenLogprobOptions {
    fn default() -> Self {
        TokenLogprobOptions {
            temperature: 1.0,
            softcap: None,
            ignore_index: Some(-100),
        }
    }
}

impl TokenLogprobOptions {
    /// Sets [`TokenLogprobOptions::temperature`].
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }

    /// Sets [`TokenLogprobOptions::softcap`].
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }

    /// Sets [`TokenLogprobOptions::ignore_index`] (`None`: every token must be a class).
    pub fn ignore_index(mut self, i: Option<i64>) -> Self {
        self.ignore_index = i;
        self
    }

    /// [`TokenLogprobOptions::validate`] for the other modules.
    pub(crate) fn validate_pub(&self) -> Result<()> {
        self.validate()
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, value: f32, expected| {
            Err(Error::InvalidOption {
                name,
                value: value.to_string(),
                expected,
            })
        };
        // (NaN fails the comparisons too.)
        let t = self.temperature;
        if !(t >= f32::MIN_POSITIVE && t.is_finite()) {
            return bad(
                "temperature",
                t,
                "finite and >= f32::MIN_POSITIVE (1.2e-38)",
            );
        }
        if let Some(cap) = self.softcap {
            if !(cap >= f32::MIN_POSITIVE && cap.is_finite()) {
                return bad("softcap", cap, "finite and >= f32::MIN_POSITIVE (1.2e-38)");
            }
        }
        Ok(())
    }
}

/// The forward's per-row outputs: `logp` always, the entropy and the logsumexp (of `z / T`)
/// when given. Each holds one entry per row.
///
/// ```
/// use softmax_kernels::TokenLogprobOutputs;
/// let (mut lp, mut h) = ([0.0f32; 4], [0.0f32; 4]);
/// let out = TokenLogprobOutputs::new(&mut lp).entropy(&mut h);
/// assert!(out.lse.is_none());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct TokenLogprobOutputs<'a> {
    /// `log p(token)` of each row.
    pub logp: &'a mut [f32],
    /// The entropy of each row's distribution.
    pub entropy: Option<&'a mut [f32]>,
    /// `ln sum exp(z / T)` of each row: what [`TokenSaved::lse`] takes.
    pub lse: Option<&'a mut [f32]>,
    /// The `k` most probable classes of each row (`k = len / rows`, `1..=`[`MAX_TOP_K`]):
    /// their log-probabilities, most probable first, and their class indices (`k` entries
    /// per row in both; see [`TokenLogprobOutputs::top_k`]).
    pub top_k: Option<(&'a mut [f32], &'a mut [u32])>,
}

/// The largest `k` of [`TokenLogprobOutputs::top_k`] (the teacher format of distillation
/// losses keeps up to 64 per token).
pub const MAX_TOP_K: usize = 64;

impl<'a> TokenLogprobOutputs<'a> {
    /// `logp` alone.
    pub fn new(logp: &'a mut [f32]) -> Self {
        TokenLogprobOutputs {
            logp,
            entropy: None,
            lse: None,
            top_k: None,
        }
    }

    /// Also the entropy.
    pub fn entropy(mut self, h: &'a mut [f32]) -> Self {
        self.entropy = Some(h);
        self
    }

    /// Also the logsumexp.
    pub fn lse(mut self, lse: &'a mut [f32]) -> Self {
        self.lse = Some(lse);
        self
    }

    /// Also the top `k` classes of each row: `logp` and `index` hold `rows * k` entries, row
    /// after row, most probable first (ties: the smaller class index first). One more read
    /// of each row, compared a block at a time against the row's current `k`-th value. A row
    /// of fewer than `k` classes, and an ignored row, fills the rest with `-inf` and index
    /// `u32::MAX`; a NaN row (as `logp`) has NaN log-probabilities.
    ///
    /// ```
    /// use softmax_kernels::{token_logprobs, TokenLogprobOptions, TokenLogprobOutputs};
    /// let z = [0.0f32, 3.0, 1.0, 3.0];
    /// let (mut lp, mut top, mut idx) = ([0.0f32], [0.0f32; 2], [0u32; 2]);
    /// token_logprobs(&z, &[2i64], 4, &TokenLogprobOptions::default(),
    ///                TokenLogprobOutputs::new(&mut lp).top_k(&mut top, &mut idx)).unwrap();
    /// assert_eq!(idx, [1, 3]);
    /// assert_eq!(top[0], top[1]);
    /// ```
    pub fn top_k(mut self, logp: &'a mut [f32], index: &'a mut [u32]) -> Self {
        self.top_k = Some((logp, index));
        self
    }
}

/// The upstream gradients of a backward: `dL/dlogp[b]` and `dL/dH[b]`, one entry per row
/// (`None`: zero).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenGrads<'a> {
    /// `dL/dlogp[b]`.
    pub logp: Option<&'a [f32]>,
    /// `dL/dH[b]`.
    pub entropy: Option<&'a [f32]>,
}

/// What the backward needs from the forward: each row's `lse` ([`TokenLogprobOutputs::lse`])
/// and, when the entropy has an upstream gradient, its entropy. Both must come from a forward
/// over the same logits and options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenSaved<'a> {
    /// The forward's [`TokenLogprobOutputs::lse`].
    pub lse: &'a [f32],
    /// The forward's [`TokenLogprobOutputs::entropy`].
    pub entropy: Option<&'a [f32]>,
}

/// A vocabulary shard of a call: its first class, the global class count, and its states
/// (`states_len` of them: written by the forward, read by the backward).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardArgs {
    pub offset: usize,
    pub classes: usize,
    pub states: *mut RowState,
    pub states_len: usize,
}

/// The logits argument of the shared body.
pub(crate) enum TokLogits<'a> {
    Read(&'a [f32]),
    Grad(&'a [f32], &'a mut [f32]),
    InPlace(&'a mut [f32]),
    /// A strided view, and the gradient's (its own stride) or none.
    Strided(MatRef<'a>, Option<MatMut<'a>>),
    StridedInPlace(MatMut<'a>),
}

/// The rows of a call, shared by the tasks that compute parts of it.
struct SyncTok<'a>(TokRows<'a>);

// SAFETY: the tasks read the pointers' addresses only to cut disjoint runs of rows
// (`TokRows::run`); each run reads and writes its own rows and per-row entries.
unsafe impl Sync for SyncTok<'_> {}

/// The `k` of the top-k output (0 for none), checked: both slices of `rows * k` entries,
/// `1 <= k <= MAX_TOP_K`.
pub(crate) fn top_k_of(out: Option<&TokenLogprobOutputs<'_>>, rows: usize) -> Result<usize> {
    let Some((v, i)) = out.and_then(|o| o.top_k.as_ref()) else {
        return Ok(0);
    };
    check_len("top_k index", i.len(), v.len())?;
    if rows == 0 {
        check_len("top_k logp", v.len(), 0)?;
        return Ok(1);
    }
    let k = v.len() / rows;
    if !(1..=MAX_TOP_K).contains(&k) || v.len() % rows != 0 {
        return Err(Error::InvalidOption {
            name: "top_k",
            value: format!("{} entries for {rows} rows", v.len()),
            expected: "k entries per row, 1 <= k <= 64",
        });
    }
    Ok(k)
}

fn ptr_of(o: &mut Option<&mut [f32]>) -> *mut f32 {
    o.as_mut().map_or(std::ptr::null_mut(), |s| s.as_mut_ptr())
}

fn cptr_of(o: Option<&[f32]>) -> *const f32 {
    o.map_or(std::ptr::null(), |s| s.as_ptr())
}

impl Kernels {
    /// The shared body: validates everything before any write, then runs `path` over the rows.
    #[allow(clippy::too_many_arguments)]
    fn token_call<L: Label>(
        &self,
        logits: TokLogits<'_>,
        tokens: &[L],
        cols: usize,
        opts: &TokenLogprobOptions,
        path: TokPath,
        out: Option<TokenLogprobOutputs<'_>>,
        saved: Option<TokenSaved<'_>>,
        grads: TokenGrads<'_>,
    ) -> Result<()> {
        self.token_call_sharded(logits, tokens, cols, opts, path, out, saved, grads, None)
    }

    /// [`Kernels::token_call`] for a vocabulary shard (`shard`: its class offset, the global
    /// class count and its states) or the whole vocabulary (`None`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn token_call_sharded<L: Label>(
        &self,
        logits: TokLogits<'_>,
        tokens: &[L],
        cols: usize,
        opts: &TokenLogprobOptions,
        path: TokPath,
        mut out: Option<TokenLogprobOutputs<'_>>,
        saved: Option<TokenSaved<'_>>,
        grads: TokenGrads<'_>,
        shard: Option<ShardArgs>,
    ) -> Result<()> {
        // (logits, gradient or null, rows, cols, their strides)
        let (x, grad, rows, cols, ldx, ldg) = match logits {
            TokLogits::Read(x) => {
                let rows = rows_of("logits", x.len(), cols)?;
                (x.as_ptr(), std::ptr::null_mut(), rows, cols, cols, cols)
            }
            TokLogits::Grad(x, g) => {
                let rows = rows_of("logits", x.len(), cols)?;
                check_len("dlogits", g.len(), x.len())?;
                (x.as_ptr(), g.as_mut_ptr(), rows, cols, cols, cols)
            }
            TokLogits::InPlace(x) => {
                let rows = rows_of("logits", x.len(), cols)?;
                (x.as_ptr(), x.as_mut_ptr(), rows, cols, cols, cols)
            }
            TokLogits::Strided(x, g) => {
                let xr = x.raw();
                nonzero_cols(xr)?;
                let (gp, ldg) = match g {
                    Some(mut g) => {
                        let gr = g.raw();
                        same_shape("dlogits", xr, gr)?;
                        (gr.ptr, gr.ld)
                    }
                    None => (std::ptr::null_mut(), xr.cols),
                };
                (xr.ptr.cast_const(), gp, xr.rows, xr.cols, xr.ld, ldg)
            }
            TokLogits::StridedInPlace(mut x) => {
                let xr = x.raw();
                nonzero_cols(xr)?;
                (xr.ptr.cast_const(), xr.ptr, xr.rows, xr.cols, xr.ld, xr.ld)
            }
        };
        if cols > MAX_CLASSES {
            return Err(Error::TooManyClasses {
                classes: cols,
                max: MAX_CLASSES,
            });
        }
        opts.validate()?;
        check_len("tokens", tokens.len(), rows)?;
        if let Some(o) = &out {
            check_len("logp", o.logp.len(), rows)?;
            if let Some(h) = &o.entropy {
                check_len("entropy", h.len(), rows)?;
            }
            if let Some(l) = &o.lse {
                check_len("lse", l.len(), rows)?;
            }
        }
        let k = top_k_of(out.as_ref(), rows)?;
        if let Some(g) = grads.logp {
            check_len("grads.logp", g.len(), rows)?;
        }
        if let Some(g) = grads.entropy {
            check_len("grads.entropy", g.len(), rows)?;
        }
        if let Some(s) = &saved {
            check_len("saved.lse", s.lse.len(), rows)?;
            match s.entropy {
                Some(h) => check_len("saved.entropy", h.len(), rows)?,
                None if grads.entropy.is_some() => {
                    return Err(Error::MissingOutput {
                        arg: "saved.entropy",
                        reason: "the entropy's upstream gradient needs the forward's entropy",
                    })
                }
                None => {}
            }
        }
        let classes = shard.map_or(cols, |s| s.classes);
        if let Some(sh) = shard {
            // (The plain backward path of a shard reads no states.)
            if path != TokPath::Backward {
                check_len("states", sh.states_len, rows)?;
            }
        }
        for (r, &l) in tokens.iter().enumerate() {
            if let Err(label) = class_of(l, classes, opts.ignore_index) {
                return Err(Error::BadLabel {
                    row: r,
                    label,
                    classes,
                });
            }
        }
        if rows == 0 {
            return Ok(());
        }
        let entropy = match path {
            // (A shard's states always carry the entropy's `dot`.)
            TokPath::Forward => {
                shard.is_some()
                    || grads.entropy.is_some() && !grad.is_null()
                    || out.as_ref().is_some_and(|o| o.entropy.is_some())
            }
            TokPath::Backward | TokPath::ShardBackward => grads.entropy.is_some(),
        };
        let call = TokCall {
            cols,
            inv_t: 1.0 / opts.temperature,
            cap: opts.softcap.unwrap_or(0.0),
            entropy,
            keep: shard.is_some() && path == TokPath::Forward,
        };
        let (logp, ent, lse) = match &mut out {
            Some(o) => (
                o.logp.as_mut_ptr(),
                ptr_of(&mut o.entropy),
                ptr_of(&mut o.lse),
            ),
            None => (
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        };
        let (top_val, top_idx) = match out.as_mut().and_then(|o| o.top_k.as_mut()) {
            Some((v, i)) => (v.as_mut_ptr(), i.as_mut_ptr()),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        let all = SyncTok(TokRows {
            call: &call,
            x,
            ldx,
            grad,
            ldg,
            rows,
            tokens: std::ptr::null(),
            logp,
            entropy: ent,
            lse,
            g_logp: cptr_of(grads.logp),
            g_entropy: cptr_of(grads.entropy),
            saved_lse: cptr_of(saved.map(|s| s.lse)),
            saved_entropy: cptr_of(saved.and_then(|s| s.entropy)),
            states: shard.map_or(std::ptr::null_mut(), |s| s.states),
            top_k: k,
            top_val,
            top_idx,
        });
        let all = &all;
        let entry = self.tok.entry(path);
        let ignore = opts.ignore_index.map(|i| i as i128);
        // This shard's classes (the whole vocabulary without a shard).
        let (lo, hi) = match shard {
            Some(s) => (s.offset as i128, (s.offset + cols) as i128),
            None => (0, cols as i128),
        };
        for_each_row_block(rows, cols, |block| {
            let mut classes = [0u32; TOKEN_BATCH];
            let mut r0 = block.start;
            while r0 < block.end {
                let n = (block.end - r0).min(TOKEN_BATCH);
                for (c, l) in classes[..n].iter_mut().zip(&tokens[r0..r0 + n]) {
                    let v = l.to_i128();
                    // Validated above: anything but the ignored token is in `0..cols`, and
                    // `cols <= MAX_CLASSES` fits a u32.
                    *c = if ignore == Some(v) {
                        IGNORED
                    } else if (lo..hi).contains(&v) {
                        (v - lo) as u32
                    } else {
                        ELSEWHERE
                    };
                }
                // SAFETY: rows `r0 .. r0 + n` lie inside the logits (and the gradient, equal
                // to the logits in place, else a separate slice or view of the same shape;
                // the views were checked when made) and belong to this task alone; every per-row slice holds `rows` entries (checked
                // above; `saved.lse` is present on the backward path, `saved.entropy` when the
                // entropy's gradient is); `classes` holds `n` validated tokens.
                unsafe { entry(&all.0.run(r0, n, classes.as_ptr())) };
                r0 += n;
            }
        });
        Ok(())
    }

    /// Per-token log-probabilities (and, when asked, entropies and logsumexps) of `logits`
    /// (`[rows, cols]`, row-major) at `tokens` (one per row); see the [module
    /// docs](crate::token) for the formulas.
    ///
    /// # Errors
    /// [`Error::ZeroDim`], [`Error::NotMultiple`] for the shape; [`Error::LengthMismatch`] for
    /// `tokens` and the outputs; [`Error::BadLabel`] for a token outside `0..cols` that is not
    /// the `ignore_index`; [`Error::InvalidOption`] for a temperature or soft-cap outside its
    /// domain; [`Error::TooManyClasses`]. Nothing is written on an error.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, TokenLogprobOptions, TokenLogprobOutputs};
    /// let k = Kernels::best();
    /// // Two rows of four classes: uniform, then one class far ahead.
    /// let z = [0.0f32, 0.0, 0.0, 0.0, 30.0, 0.0, 0.0, 0.0];
    /// let (mut lp, mut h) = ([0.0f32; 2], [0.0f32; 2]);
    /// let opts = TokenLogprobOptions::default();
    /// k.token_logprobs(&z, &[2i64, 0], 4, &opts,
    ///                  TokenLogprobOutputs::new(&mut lp).entropy(&mut h)).unwrap();
    /// assert!((lp[0] + 4f32.ln()).abs() < 1e-6 && (h[0] - 4f32.ln()).abs() < 1e-6);
    /// assert!(lp[1].abs() < 1e-6 && h[1].abs() < 1e-6);
    /// ```
    pub fn token_logprobs<L: Label>(
        &self,
        logits: &[f32],
        tokens: &[L],
        cols: usize,
        opts: &TokenLogprobOptions,
        out: TokenLogprobOutputs<'_>,
    ) -> Result<()> {
        self.token_call(
            TokLogits::Read(logits),
            tokens,
            cols,
            opts,
            TokPath::Forward,
            Some(out),
            None,
            TokenGrads::default(),
        )
    }

    /// The gradient `dlogits` (same shape as `logits`) of `sum_b grads.logp[b] logp[b] +
    /// grads.entropy[b] H[b]`, from the forward's saved `lse` (and entropy, when
    /// `grads.entropy` is given). One sweep over the logits.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs`]; [`Error::LengthMismatch`] for `dlogits`, `saved` and
    /// `grads`; [`Error::MissingOutput`] (`saved.entropy`) when `grads.entropy` is given
    /// without the saved entropy.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs,
    ///                       TokenSaved};
    /// let k = Kernels::best();
    /// let opts = TokenLogprobOptions::default();
    /// let z = [0.0f32, 0.0];
    /// let (mut lp, mut lse) = ([0.0f32], [0.0f32]);
    /// k.token_logprobs(&z, &[1u32], 2, &opts, TokenLogprobOutputs::new(&mut lp).lse(&mut lse))
    ///     .unwrap();
    /// let mut dz = [0.0f32; 2];
    /// let grads = TokenGrads { logp: Some(&[1.0]), entropy: None };
    /// let saved = TokenSaved { lse: &lse, entropy: None };
    /// k.token_logprobs_backward(&z, &[1u32], 2, &opts, saved, grads, &mut dz).unwrap();
    /// // d logp_1 / dz = onehot(1) - softmax(z) = [-0.5, 0.5]
    /// assert_eq!(dz, [-0.5, 0.5]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn token_logprobs_backward<L: Label>(
        &self,
        logits: &[f32],
        tokens: &[L],
        cols: usize,
        opts: &TokenLogprobOptions,
        saved: TokenSaved<'_>,
        grads: TokenGrads<'_>,
        dlogits: &mut [f32],
    ) -> Result<()> {
        self.token_call(
            TokLogits::Grad(logits, dlogits),
            tokens,
            cols,
            opts,
            TokPath::Backward,
            None,
            Some(saved),
            grads,
        )
    }

    /// [`Kernels::token_logprobs_backward`] with the gradient written over the logits.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs_backward`].
    pub fn token_logprobs_backward_inplace<L: Label>(
        &self,
        logits: &mut [f32],
        tokens: &[L],
        cols: usize,
        opts: &TokenLogprobOptions,
        saved: TokenSaved<'_>,
        grads: TokenGrads<'_>,
    ) -> Result<()> {
        self.token_call(
            TokLogits::InPlace(logits),
            tokens,
            cols,
            opts,
            TokPath::Backward,
            None,
            Some(saved),
            grads,
        )
    }

    /// The forward ([`Kernels::token_logprobs`]) and the gradient into `dlogits` in one call,
    /// for upstream gradients known before the forward: three sweeps per row and one exp per
    /// element, where the forward and a separate backward take four sweeps and two exps.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs`]; [`Error::LengthMismatch`] for `dlogits` and `grads`.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs};
    /// let k = Kernels::best();
    /// let (mut lp, mut dz) = ([0.0f32], [0.0f32; 2]);
    /// // Temperature 2: d logp / dz = (onehot - p) / 2.
    /// let opts = TokenLogprobOptions::default().temperature(2.0);
    /// let grads = TokenGrads { logp: Some(&[1.0]), entropy: None };
    /// k.token_logprobs_fwd_bwd(&[0.0f32, 0.0], &[0i64], 2, &opts, grads,
    ///                          TokenLogprobOutputs::new(&mut lp), &mut dz).unwrap();
    /// assert!((lp[0] + 2f32.ln()).abs() < 1e-6);
    /// assert_eq!(dz, [0.25, -0.25]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn token_logprobs_fwd_bwd<L: Label>(
        &self,
        logits: &[f32],
        tokens: &[L],
        cols: usize,
        opts: &TokenLogprobOptions,
        grads: TokenGrads<'_>,
        out: TokenLogprobOutputs<'_>,
        dlogits: &mut [f32],
    ) -> Result<()> {
        self.token_call(
            TokLogits::Grad(logits, dlogits),
            tokens,
            cols,
            opts,
            TokPath::Forward,
            Some(out),
            None,
            grads,
        )
    }

    /// [`Kernels::token_logprobs_fwd_bwd`] with the gradient written over the logits.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs_fwd_bwd`].
    pub fn token_logprobs_fwd_bwd_inplace<L: Label>(
        &self,
        logits: &mut [f32],
        tokens: &[L],
        cols: usize,
        opts: &TokenLogprobOptions,
        grads: TokenGrads<'_>,
        out: TokenLogprobOutputs<'_>,
    ) -> Result<()> {
        self.token_call(
            TokLogits::InPlace(logits),
            tokens,
            cols,
            opts,
            TokPath::Forward,
            Some(out),
            None,
            grads,
        )
    }
}

impl Kernels {
    /// [`Kernels::token_logprobs`] over the rows of a strided view (rows `ld` floats apart:
    /// the last position of a `[B, T, V]` tensor is `B` rows of `V`, `T * V` apart), without a
    /// copy; the floats between rows are never read.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs`] ([`Error::ZeroDim`] for a view of no columns).
    ///
    /// ```
    /// use softmax_kernels::{Kernels, MatRef, TokenLogprobOptions, TokenLogprobOutputs};
    /// // Two rows of 3 logits, 5 floats apart (the last 2 of each row are another tensor's).
    /// let buf = [0.0f32, 0.0, 0.0, 9.0, 9.0, 1.0, 1.0, 1.0, 9.0, 9.0];
    /// let z = MatRef::new(&buf, 2, 3, 5)?;
    /// let mut lp = [0.0f32; 2];
    /// Kernels::best().token_logprobs_strided(z, &[2u32, 0], &TokenLogprobOptions::default(),
    ///                                        TokenLogprobOutputs::new(&mut lp))?;
    /// assert!((lp[0] + 3f32.ln()).abs() < 1e-6 && (lp[1] + 3f32.ln()).abs() < 1e-6);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    pub fn token_logprobs_strided<L: Label>(
        &self,
        logits: MatRef<'_>,
        tokens: &[L],
        opts: &TokenLogprobOptions,
        out: TokenLogprobOutputs<'_>,
    ) -> Result<()> {
        let cols = logits.cols();
        self.token_call(
            TokLogits::Strided(logits, None),
            tokens,
            cols,
            opts,
            TokPath::Forward,
            Some(out),
            None,
            TokenGrads::default(),
        )
    }

    /// [`Kernels::token_logprobs_backward`] over strided views (each with its own stride).
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs_backward`]; [`Error::ShapeMismatch`] when `dlogits` has
    /// another shape than `logits`.
    pub fn token_logprobs_backward_strided<L: Label>(
        &self,
        logits: MatRef<'_>,
        tokens: &[L],
        opts: &TokenLogprobOptions,
        saved: TokenSaved<'_>,
        grads: TokenGrads<'_>,
        dlogits: MatMut<'_>,
    ) -> Result<()> {
        let cols = logits.cols();
        self.token_call(
            TokLogits::Strided(logits, Some(dlogits)),
            tokens,
            cols,
            opts,
            TokPath::Backward,
            None,
            Some(saved),
            grads,
        )
    }

    /// [`Kernels::token_logprobs_backward_strided`] with the gradient written over the logits.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs_backward`].
    pub fn token_logprobs_backward_strided_inplace<L: Label>(
        &self,
        logits: MatMut<'_>,
        tokens: &[L],
        opts: &TokenLogprobOptions,
        saved: TokenSaved<'_>,
        grads: TokenGrads<'_>,
    ) -> Result<()> {
        let cols = logits.cols();
        self.token_call(
            TokLogits::StridedInPlace(logits),
            tokens,
            cols,
            opts,
            TokPath::Backward,
            None,
            Some(saved),
            grads,
        )
    }

    /// [`Kernels::token_logprobs_fwd_bwd`] over strided views (each with its own stride).
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs_fwd_bwd`]; [`Error::ShapeMismatch`] when `dlogits` has
    /// another shape than `logits`.
    pub fn token_logprobs_fwd_bwd_strided<L: Label>(
        &self,
        logits: MatRef<'_>,
        tokens: &[L],
        opts: &TokenLogprobOptions,
        grads: TokenGrads<'_>,
        out: TokenLogprobOutputs<'_>,
        dlogits: MatMut<'_>,
    ) -> Result<()> {
        let cols = logits.cols();
        self.token_call(
            TokLogits::Strided(logits, Some(dlogits)),
            tokens,
            cols,
            opts,
            TokPath::Forward,
            Some(out),
            None,
            grads,
        )
    }

    /// [`Kernels::token_logprobs_fwd_bwd_strided`] with the gradient written over the logits.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs_fwd_bwd`].
    pub fn token_logprobs_fwd_bwd_strided_inplace<L: Label>(
        &self,
        logits: MatMut<'_>,
        tokens: &[L],
        opts: &TokenLogprobOptions,
        grads: TokenGrads<'_>,
        out: TokenLogprobOutputs<'_>,
    ) -> Result<()> {
        let cols = logits.cols();
        self.token_call(
            TokLogits::StridedInPlace(logits),
            tokens,
            cols,
            opts,
            TokPath::Forward,
            Some(out),
            None,
            grads,
        )
    }
}

/// [`Kernels::token_logprobs`] on the active tier.
///
/// ```
/// use softmax_kernels::{token_logprobs, TokenLogprobOptions, TokenLogprobOutputs};
/// let mut lp = [0.0f32];
/// // Temperature 0.5 doubles the logits: p = e^2 / (e^2 + 1).
/// let opts = TokenLogprobOptions::default().temperature(0.5);
/// token_logprobs(&[1.0f32, 0.0], &[0i64], 2, &opts, TokenLogprobOutputs::new(&mut lp)).unwrap();
/// let want = 2.0f64 - (2.0f64.exp() + 1.0).ln();
/// assert!((lp[0] as f64 - want).abs() < 1e-6);
/// ```
pub fn token_logprobs<L: Label>(
    logits: &[f32],
    tokens: &[L],
    cols: usize,
    opts: &TokenLogprobOptions,
    out: TokenLogprobOutputs<'_>,
) -> Result<()> {
    Kernels::active()?.token_logprobs(logits, tokens, cols, opts, out)
}

/// [`Kernels::token_logprobs_backward`] on the active tier.
#[allow(clippy::too_many_arguments)]
pub fn token_logprobs_backward<L: Label>(
    logits: &[f32],
    tokens: &[L],
    cols: usize,
    opts: &TokenLogprobOptions,
    saved: TokenSaved<'_>,
    grads: TokenGrads<'_>,
    dlogits: &mut [f32],
) -> Result<()> {
    Kernels::active()?.token_logprobs_backward(logits, tokens, cols, opts, saved, grads, dlogits)
}

/// [`Kernels::token_logprobs_backward_inplace`] on the active tier.
pub fn token_logprobs_backward_inplace<L: Label>(
    logits: &mut [f32],
    tokens: &[L],
    cols: usize,
    opts: &TokenLogprobOptions,
    saved: TokenSaved<'_>,
    grads: TokenGrads<'_>,
) -> Result<()> {
    Kernels::active()?.token_logprobs_backward_inplace(logits, tokens, cols, opts, saved, grads)
}

/// [`Kernels::token_logprobs_fwd_bwd`] on the active tier.
#[allow(clippy::too_many_arguments)]
pub fn token_logprobs_fwd_bwd<L: Label>(
    logits: &[f32],
    tokens: &[L],
    cols: usize,
    opts: &TokenLogprobOptions,
    grads: TokenGrads<'_>,
    out: TokenLogprobOutputs<'_>,
    dlogits: &mut [f32],
) -> Result<()> {
    Kernels::active()?.token_logprobs_fwd_bwd(logits, tokens, cols, opts, grads, out, dlogits)
}

/// [`Kernels::token_logprobs_fwd_bwd_inplace`] on the active tier.
pub fn token_logprobs_fwd_bwd_inplace<L: Label>(
    logits: &mut [f32],
    tokens: &[L],
    cols: usize,
    opts: &TokenLogprobOptions,
    grads: TokenGrads<'_>,
    out: TokenLogprobOutputs<'_>,
) -> Result<()> {
    Kernels::active()?.token_logprobs_fwd_bwd_inplace(logits, tokens, cols, opts, grads, out)
}
