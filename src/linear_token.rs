//! Fused linear token log-probs: `logp`, entropy and `lse` of `softmax((A W^T + b) / T)` at
//! the given tokens, and the gradients `dA`, `dW`, `db` of
//! `sum_b g_logp[b] logp[b] + g_entropy[b] H[b]`, without ever holding the `[B, C]` logits:
//! what RL fine-tuning (PPO, GRPO, DPO) needs from a language-model head.
//!
//! The batch is worked through in chunks of whole rows, as the row-chunked mode of
//! [`crate::linear_ce`] (the same chunk sizes: at most [`LinearTokenOptions::chunk_bytes`] of
//! logits, whole rows through the streaming GEMMs where the tier has them). For each chunk:
//!
//! ```text
//! forward:   Z_c = A_c W^T + b;  token_logprobs(Z_c)                         (one GEMM)
//! backward:  Z_c = A_c W^T + b;  G_c = token backward from the saved lse, H   (one GEMM)
//!            dA_c = G_c W;  dW += G_c^T A_c;  db += colsum G_c                 (two GEMMs)
//! fwd_bwd:   Z_c = A_c W^T + b;  G_c = token fused forward+backward            (one GEMM)
//!            dA_c, dW, db as above                                             (two GEMMs)
//! ```
//!
//! A vocabulary shard of the layer (the rows of `W` and `b` of a range of classes, on one
//! process of a vocabulary-parallel model) has the same two steps:
//! [`Kernels::linear_token_shard_states`] gives its per-row [`crate::RowState`]s (one GEMM per
//! chunk), which are merged over the shards and finalized ([`crate::shard`]), and
//! [`Kernels::linear_token_shard_backward`] gives the shard's `dW`, `db` and its partial `dA`
//! (summed over the shards by the caller) from the finalized `lse` and entropy.
//!
//! The forward and the backward together recompute the logits (four GEMMs, as the
//! class-chunked linear cross-entropy); [`Kernels::linear_token_logprobs_fwd_bwd`] takes three
//! when the upstream gradients are known before the forward. Memory beyond inputs and outputs:
//! one chunk of logits. Results are bit-identical for any number of threads (chunks are fixed
//! by the shape and options and accumulated in order) and equal the unfused composition
//! (`linear_forward`, the token kernels, `linear_backward_input`, `weight_grad`, `bias_grad`)
//! up to the association of the `dW` and `db` sums by chunk.

use crate::arch::generic::token::TokPath;
use crate::cross_entropy::{class_of, Label};
use crate::dispatch::Kernels;
use crate::error::{check_len, Error, Result};
use crate::linear::MatrixLayout;
use crate::linear_ce::{alloc_chunk, stream_chunk_rows};
use crate::shard::{RowState, Shard};
use crate::token::{
    ShardArgs, TokLogits, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved,
};
use crate::tuning::DEFAULT_CHUNK_BYTES;

/// Options of the fused linear token log-probs: the token options plus the chunking.
///
/// ```
/// use softmax_kernels::{LinearTokenOptions, TokenLogprobOptions};
/// let o = LinearTokenOptions::new(TokenLogprobOptions::default().temperature(0.9))
///     .chunk_rows(32)
///     .accumulate(true);
/// assert_eq!(o.chunk_rows, Some(32));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct LinearTokenOptions {
    /// Temperature, soft-cap and ignore_index, as for [`Kernels::token_logprobs`].
    pub token: TokenLogprobOptions,
    /// Rows per chunk (`>= 1`); `None` sizes it from [`LinearTokenOptions::chunk_bytes`].
    pub chunk_rows: Option<usize>,
    /// The budget in bytes for one chunk of logits (default 16 MiB); at least one row.
    pub chunk_bytes: usize,
    /// Add `dW` and `db` to the buffers' contents instead of overwriting them (`dA` is always
    /// overwritten).
    pub accumulate: bool,
}

impl Default for LinearTokenOptions {
    fn default() -> Self {
        LinearTokenOptions::new(TokenLogprobOptions::default())
    }
}

impl LinearTokenOptions {
    /// The given token options with automatic chunking.
    pub fn new(token: TokenLogprobOptions) -> Self {
        LinearTokenOptions {
            token,
            chunk_rows: None,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            accumulate: false,
        }
    }
    /// Sets the rows per chunk.
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = Some(rows);
        self
    }
    /// Sets the budget for one chunk of logits.
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes;
        self
    }
    /// Sets whether `dW` and `db` accumulate.
    pub fn accumulate(mut self, on: bool) -> Self {
        self.accumulate = on;
        self
    }
}

/// The parameter gradients of the fused backward, each optional: `dA` (`[B, D]`,
/// overwritten), `dW` (in `W`'s layout, its padding untouched) and `db` (`C` floats).
#[derive(Debug, Default)]
pub struct LinearTokenGrads<'a> {
    /// `dL/dA`.
    pub da: Option<&'a mut [f32]>,
    /// `dL/dW`.
    pub dw: Option<&'a mut [f32]>,
    /// `dL/db`.
    pub db: Option<&'a mut [f32]>,
}

/// What one fused call does per chunk.
enum Mode<'a, 'o> {
    Forward(TokenLogprobOutputs<'o>),
    Backward(TokenSaved<'a>, TokenGrads<'a>),
    FwdBwd(TokenGrads<'a>, TokenLogprobOutputs<'o>),
    /// A vocabulary shard's states (`W` holds the shard's classes).
    ShardStates(Shard, &'o mut [RowState]),
    /// A vocabulary shard's gradients from the whole vocabulary's saved `lse` (and entropy).
    ShardBackward(Shard, TokenSaved<'a>, TokenGrads<'a>),
}

/// Entries `r0 .. r0 + n` of an optional per-row slice.
fn sub(o: Option<&[f32]>, r0: usize, n: usize) -> Option<&[f32]> {
    o.map(|v| &v[r0..r0 + n])
}

/// Entries `r0 .. r0 + n` of an optional per-row output.
fn sub_mut<'s>(o: &'s mut Option<&mut [f32]>, r0: usize, n: usize) -> Option<&'s mut [f32]> {
    o.as_deref_mut().map(|v| &mut v[r0..r0 + n])
}

impl Kernels {
    /// Fused linear token log-probs, forward: `logp` (and when asked the entropy and `lse`)
    /// of `Z = A W^T + b` at `tokens`, without the `[B, C]` logits. `a` is `[B, D]`, `w` is
    /// `layout` = `[C, D]` with its leading dimension, `bias` `C` floats.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `C == 0`; the layout errors of [`Kernels::linear_forward`];
    /// [`Error::NotMultiple`] / [`Error::LengthMismatch`] for `a`, `bias`, `tokens` and the
    /// outputs; what [`Kernels::token_logprobs`] reports (tokens, options);
    /// [`Error::InvalidOption`] for a zero chunk size; [`Error::SizeOverflow`] when the
    /// chunk cannot be allocated. Nothing is written on an error.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, LinearTokenOptions, MatrixLayout, TokenLogprobOutputs};
    /// let k = Kernels::best();
    /// let a = [1.0f32, 0.0, /* sample 2 */ 0.0, 1.0]; // [B = 2, D = 2]
    /// let w = [0.0f32; 6]; // [C = 3, D = 2]: all logits 0
    /// let (mut lp, mut h) = ([0.0f32; 2], [0.0f32; 2]);
    /// k.linear_token_logprobs(&a, &w, MatrixLayout::new(3, 2), None, &[0i64, 2],
    ///                         &LinearTokenOptions::default(),
    ///                         TokenLogprobOutputs::new(&mut lp).entropy(&mut h))?;
    /// assert!((lp[0] + 3f32.ln()).abs() < 1e-6 && (h[1] - 3f32.ln()).abs() < 1e-6);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn linear_token_logprobs<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        tokens: &[L],
        opts: &LinearTokenOptions,
        out: TokenLogprobOutputs<'_>,
    ) -> Result<()> {
        self.linear_token(
            a,
            w,
            layout,
            bias,
            tokens,
            opts,
            Mode::Forward(out),
            &mut LinearTokenGrads::default(),
        )
    }

    /// Fused linear token log-probs, backward: `dA`, `dW`, `db` (those asked for in `out`) of
    /// `sum_b grads.logp[b] logp[b] + grads.entropy[b] H[b]`, from the forward's saved `lse`
    /// (and entropy, with an entropy gradient). Recomputes each chunk's logits (one GEMM).
    ///
    /// # Errors
    /// As [`Kernels::linear_token_logprobs`]; the lengths of `saved`, `grads`, `da`, `db` and
    /// `dw`'s layout; [`Error::MissingOutput`] (`saved.entropy`) as
    /// [`Kernels::token_logprobs_backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn linear_token_logprobs_backward<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        tokens: &[L],
        opts: &LinearTokenOptions,
        saved: TokenSaved<'_>,
        grads: TokenGrads<'_>,
        out: &mut LinearTokenGrads<'_>,
    ) -> Result<()> {
        self.linear_token(
            a,
            w,
            layout,
            bias,
            tokens,
            opts,
            Mode::Backward(saved, grads),
            out,
        )
    }

    /// The forward ([`Kernels::linear_token_logprobs`]) and the parameter gradients in one
    /// call, for upstream gradients known before the forward: three GEMMs per chunk, as the
    /// fused linear cross-entropy.
    ///
    /// # Errors
    /// As [`Kernels::linear_token_logprobs`] and [`Kernels::linear_token_logprobs_backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn linear_token_logprobs_fwd_bwd<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        tokens: &[L],
        opts: &LinearTokenOptions,
        grads: TokenGrads<'_>,
        out: TokenLogprobOutputs<'_>,
        g: &mut LinearTokenGrads<'_>,
    ) -> Result<()> {
        self.linear_token(
            a,
            w,
            layout,
            bias,
            tokens,
            opts,
            Mode::FwdBwd(grads, out),
            g,
        )
    }

    /// The states ([`RowState`]) of a vocabulary shard of the output layer, without its
    /// logits: `w` (`layout` = `[c, D]`) and `bias` (`c` floats) hold the rows of global
    /// classes `shard.offset .. shard.offset + c` of a vocabulary of `shard.classes`,
    /// `tokens` the global tokens. Merge the states of every shard ([`crate::merge_states`],
    /// one all-gather), finalize them ([`crate::finalize_states`]) into `logp`, entropy and
    /// `lse`, and run [`Kernels::linear_token_shard_backward`] on each shard. One GEMM per
    /// chunk, as [`Kernels::linear_token_logprobs`]; a shard of no classes gives
    /// [`RowState::EMPTY`].
    ///
    /// # Errors
    /// As [`Kernels::linear_token_logprobs`] (the tokens against `shard.classes`);
    /// [`Error::InvalidOption`] (`shard`) when the classes leave the vocabulary;
    /// [`Error::LengthMismatch`] for `states` (one per row).
    ///
    /// ```
    /// use softmax_kernels::{finalize_states, merge_states, Kernels, LinearTokenOptions,
    ///                       MatrixLayout, RowState, Shard, TokenLogprobOutputs};
    /// let k = Kernels::best();
    /// let a = [1.0f32, 2.0]; // one row, D = 2
    /// let w = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6]; // C = 3 classes
    /// let tokens = [1i64];
    /// let o = LinearTokenOptions::default();
    /// // Classes 0..1 on one process, 1..3 on another.
    /// let (mut s0, mut s1) = ([RowState::EMPTY], [RowState::EMPTY]);
    /// k.linear_token_shard_states(&a, &w[..2], MatrixLayout::new(1, 2), None,
    ///                             Shard::new(0, 3), &tokens, &o, &mut s0)?;
    /// k.linear_token_shard_states(&a, &w[2..], MatrixLayout::new(2, 2), None,
    ///                             Shard::new(1, 3), &tokens, &o, &mut s1)?;
    /// merge_states(&mut s0, &s1)?;
    /// let mut lp = [0.0f32];
    /// finalize_states(&s0, &tokens, 3, &o.token, TokenLogprobOutputs::new(&mut lp))?;
    /// // Logits 0.5, 1.1, 1.7: log p(1) = 1.1 - ln(e^0.5 + e^1.1 + e^1.7).
    /// let want = 1.1 - (0.5f64.exp() + 1.1f64.exp() + 1.7f64.exp()).ln();
    /// assert!((lp[0] as f64 - want).abs() < 1e-6);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn linear_token_shard_states<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        shard: Shard,
        tokens: &[L],
        opts: &LinearTokenOptions,
        states: &mut [RowState],
    ) -> Result<()> {
        self.linear_token(
            a,
            w,
            layout,
            bias,
            tokens,
            opts,
            Mode::ShardStates(shard, states),
            &mut LinearTokenGrads::default(),
        )
    }

    /// A vocabulary shard's part of the fused backward: this shard's `dW` and `db` (its
    /// classes' rows) and its partial `dA`, from the whole vocabulary's finalized
    /// `saved.lse` (and entropy, with an entropy gradient) of [`crate::finalize_states`].
    /// The partial `dA` of every shard must be summed (one all-reduce) into the layer's `dA`;
    /// `dW` and `db` are the shard's own. Recomputes the shard's logits per chunk (one GEMM,
    /// then two for `dA` and `dW`). A shard of no classes writes a zero `dA`.
    ///
    /// # Errors
    /// As [`Kernels::linear_token_logprobs_backward`] (the tokens against `shard.classes`);
    /// [`Error::InvalidOption`] (`shard`).
    #[allow(clippy::too_many_arguments)]
    pub fn linear_token_shard_backward<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        shard: Shard,
        tokens: &[L],
        opts: &LinearTokenOptions,
        saved: TokenSaved<'_>,
        grads: TokenGrads<'_>,
        out: &mut LinearTokenGrads<'_>,
    ) -> Result<()> {
        self.linear_token(
            a,
            w,
            layout,
            bias,
            tokens,
            opts,
            Mode::ShardBackward(shard, saved, grads),
            out,
        )
    }

    /// The shared body: every check first, then the chunks.
    #[allow(clippy::too_many_arguments)]
    fn linear_token<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        tokens: &[L],
        opts: &LinearTokenOptions,
        mut mode: Mode<'_, '_>,
        g: &mut LinearTokenGrads<'_>,
    ) -> Result<()> {
        let MatrixLayout {
            rows: c, cols: d, ..
        } = layout;
        // The vocabulary the tokens index: a shard's classes are `c` of `shard.classes`.
        let shard = match &mode {
            Mode::ShardStates(sh, _) | Mode::ShardBackward(sh, _, _) => Some(*sh),
            _ => None,
        };
        if let Some(sh) = shard {
            sh.check(c)?;
        } else if c == 0 {
            return Err(Error::ZeroDim {
                arg: "w rows (classes)",
            });
        }
        let classes = shard.map_or(c, |sh| sh.classes);
        layout.check("w", w.len())?;
        let b = if d == 0 {
            tokens.len()
        } else {
            crate::error::rows_of("a", a.len(), d)?
        };
        check_len("a", a.len(), b * d)?;
        check_len("tokens", tokens.len(), b)?;
        if let Some(bias) = bias {
            check_len("bias", bias.len(), c)?;
        }
        opts.token.validate_pub()?;
        if opts.chunk_rows == Some(0) || opts.chunk_bytes == 0 {
            return Err(Error::InvalidOption {
                name: if opts.chunk_rows == Some(0) {
                    "chunk_rows"
                } else {
                    "chunk_bytes"
                },
                value: "0".into(),
                expected: ">= 1",
            });
        }
        let want_grad = !matches!(mode, Mode::Forward(_) | Mode::ShardStates(..));
        if want_grad {
            if let Some(da) = g.da.as_deref() {
                check_len("da", da.len(), a.len())?;
            }
            if let Some(dw) = g.dw.as_deref() {
                layout.check("dw", dw.len())?;
            }
            if let Some(db) = g.db.as_deref() {
                check_len("db", db.len(), c)?;
            }
        }
        let (out, saved, grads) = match &mut mode {
            Mode::Forward(o) => (Some(o), None, TokenGrads::default()),
            Mode::Backward(s, gr) | Mode::ShardBackward(_, s, gr) => (None, Some(*s), *gr),
            Mode::FwdBwd(gr, o) => (Some(o), None, *gr),
            Mode::ShardStates(_, st) => {
                check_len("states", st.len(), b)?;
                (None, None, TokenGrads::default())
            }
        };
        if let Some(o) = &out {
            crate::token::top_k_of(Some(o), b)?;
            check_len("logp", o.logp.len(), b)?;
            if let Some(h) = &o.entropy {
                check_len("entropy", h.len(), b)?;
            }
            if let Some(l) = &o.lse {
                check_len("lse", l.len(), b)?;
            }
        }
        if let Some(v) = grads.logp {
            check_len("grads.logp", v.len(), b)?;
        }
        if let Some(v) = grads.entropy {
            check_len("grads.entropy", v.len(), b)?;
        }
        if let Some(s) = &saved {
            check_len("saved.lse", s.lse.len(), b)?;
            match s.entropy {
                Some(h) => check_len("saved.entropy", h.len(), b)?,
                None if grads.entropy.is_some() => {
                    return Err(Error::MissingOutput {
                        arg: "saved.entropy",
                        reason: "the entropy's upstream gradient needs the forward's entropy",
                    })
                }
                None => {}
            }
        }
        for (r, &l) in tokens.iter().enumerate() {
            if let Err(label) = class_of(l, classes, opts.token.ignore_index) {
                return Err(Error::BadLabel {
                    row: r,
                    label,
                    classes,
                });
            }
        }
        if c == 0 {
            // A shard of no classes: empty states, no contribution to `dA`.
            match &mut mode {
                Mode::ShardStates(_, st) => st.fill(RowState::EMPTY),
                _ => {
                    if let Some(da) = g.da.as_deref_mut() {
                        da.fill(0.0);
                    }
                }
            }
            return Ok(());
        }
        // Chunks of whole rows, as the row-chunked fused linear cross-entropy.
        let b1 = b.max(1);
        let bc = match opts.chunk_rows {
            Some(r) => r.min(b1),
            None => {
                let fit = (opts.chunk_bytes / 4).max(1) / c;
                let stream = self.linear.stream.map(|st| st.max_rows);
                stream_chunk_rows(fit, b1, stream).unwrap_or(fit.clamp(1, b1))
            }
        };
        let beta = |first: bool| if first && !opts.accumulate { 0.0 } else { 1.0 };
        if b == 0 {
            if want_grad {
                if let Some(dw) = g.dw.as_deref_mut() {
                    self.weight_grad(1.0, &[], &[], beta(true), dw, layout)?;
                }
                if let Some(db) = g.db.as_deref_mut() {
                    self.bias_grad(1.0, &[], beta(true), db)?;
                }
            }
            return Ok(());
        }
        let mut z = alloc_chunk(bc.min(b), c)?;
        let o = &opts.token;
        let mut r0 = 0;
        while r0 < b {
            let n = bc.min(b - r0);
            let zc = &mut z[..n * c];
            let ac = &a[r0 * d..(r0 + n) * d];
            let tc = &tokens[r0..r0 + n];
            self.linear_forward(ac, w, layout, bias, zc)?;
            let gc = TokenGrads {
                logp: sub(grads.logp, r0, n),
                entropy: sub(grads.entropy, r0, n),
            };
            match &mut mode {
                Mode::Forward(out) | Mode::FwdBwd(_, out) => {
                    let k = out.top_k.as_ref().map_or(0, |(v, _)| v.len() / b);
                    let oc = TokenLogprobOutputs {
                        logp: &mut out.logp[r0..r0 + n],
                        entropy: sub_mut(&mut out.entropy, r0, n),
                        lse: sub_mut(&mut out.lse, r0, n),
                        top_k: out.top_k.as_mut().map(|(v, i)| {
                            (&mut v[r0 * k..(r0 + n) * k], &mut i[r0 * k..(r0 + n) * k])
                        }),
                    };
                    if want_grad {
                        self.token_logprobs_fwd_bwd_inplace(zc, tc, c, o, gc, oc)?;
                    } else {
                        self.token_logprobs(zc, tc, c, o, oc)?;
                    }
                }
                Mode::Backward(s, _) => {
                    let sc = TokenSaved {
                        lse: &s.lse[r0..r0 + n],
                        entropy: sub(s.entropy, r0, n),
                    };
                    self.token_logprobs_backward_inplace(zc, tc, c, o, sc, gc)?;
                }
                Mode::ShardStates(sh, st) => {
                    let st = &mut st[r0..r0 + n];
                    let args = ShardArgs {
                        offset: sh.offset,
                        classes: sh.classes,
                        states: st.as_mut_ptr(),
                        states_len: st.len(),
                    };
                    self.token_call_sharded(
                        TokLogits::Read(zc),
                        tc,
                        c,
                        o,
                        TokPath::Forward,
                        None,
                        None,
                        TokenGrads::default(),
                        Some(args),
                    )?;
                }
                Mode::ShardBackward(sh, s, _) => {
                    let sc = TokenSaved {
                        lse: &s.lse[r0..r0 + n],
                        entropy: sub(s.entropy, r0, n),
                    };
                    // The plain backward from the whole vocabulary's `lse` (and entropy),
                    // with the tokens of other shards mapped to none of this shard's classes.
                    let args = ShardArgs {
                        offset: sh.offset,
                        classes: sh.classes,
                        states: std::ptr::null_mut(),
                        states_len: 0,
                    };
                    self.token_call_sharded(
                        TokLogits::InPlace(zc),
                        tc,
                        c,
                        o,
                        TokPath::Backward,
                        None,
                        Some(sc),
                        gc,
                        Some(args),
                    )?;
                }
            }
            if want_grad {
                let zc = &*zc;
                if let Some(da) = g.da.as_deref_mut() {
                    self.linear_backward_input(zc, w, layout, &mut da[r0 * d..(r0 + n) * d])?;
                }
                if let Some(dw) = g.dw.as_deref_mut() {
                    self.weight_grad(1.0, zc, ac, beta(r0 == 0), dw, layout)?;
                }
                if let Some(db) = g.db.as_deref_mut() {
                    self.bias_grad(1.0, zc, beta(r0 == 0), db)?;
                }
            }
            r0 += n;
        }
        Ok(())
    }
}
