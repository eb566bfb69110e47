//! The `sk_output_layer` handle: an [`OutputLayer`] (weights, bias, SGD optimizer and workspace)
//! bound to the tier current at its creation.

use sk::{CrossEntropyOutputs, Label, OutputLayer};

use crate::args::{
    arg, disjoint, one_arg, opt_arg, opt_one, opt_slice_mut, put, put_required, slice, slice_mut,
    Arg,
};
use crate::cross_entropy::{read_options, read_outputs, SkCeOptions, SkCeOutputs, SkCeStats};
use crate::handle::{free, handle, into_handle, Tagged};
use crate::linear::{read_sgd_options, SkSgdOptions};
use crate::runtime::{in_pool, kernels};
use crate::status::{guard, CResult, SkStatus};

/// The `sk_output_layer` handle: the tag (see [`crate::handle`]), then the layer.
#[repr(C)]
#[derive(Debug)]
pub struct SkOutputLayer {
    tag: u64,
    inner: OutputLayer,
}

// SAFETY: `#[repr(C)]` with the `u64` tag first; set to `LIVE` in `sk_output_layer_create` and
// written afterwards only by `handle::free`.
unsafe impl Tagged for SkOutputLayer {
    const LIVE: u64 = u64::from_be_bytes(*b"sk:layer");
    const C_NAME: &'static str = "sk_output_layer";
}

/// The layer's own memory (the handle's struct, the weights, the bias, the velocities), which
/// no argument may overlap.
fn layer_buffers(h: &SkOutputLayer) -> Vec<Arg> {
    let l = &h.inner;
    let mut v = vec![
        Arg::of_ref("the layer's handle", h),
        Arg::of_slice("the layer's weights", &l.weight),
        Arg::of_slice("the layer's bias", &l.bias),
    ];
    if let Some(b) = l.optimizer().velocity() {
        v.push(Arg::of_slice("the layer's velocity", b));
    }
    if let Some(b) = l.optimizer().bias_velocity() {
        v.push(Arg::of_slice("the layer's bias velocity", b));
    }
    v
}

/// Creates a layer of `classes x inputs` zero weights and zero bias with an SGD optimizer
/// (`opts` NULL: the defaults); `*out` receives the handle (NULL on failure).
///
/// # Safety
/// `opts` NULL or readable; `out` writable for one pointer.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_create(
    inputs: usize,
    classes: usize,
    opts: *const SkSgdOptions,
    out: *mut *mut SkOutputLayer,
) -> SkStatus {
    guard("sk_output_layer_create", || {
        let oa = one_arg("out", out.cast_const())?;
        disjoint(&[&oa], &opt_one("opts", opts)?.iter().collect::<Vec<_>>())?;
        // SAFETY: non-NULL, aligned, overlapping nothing, writable by the caller's contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller's contract.
        let o = unsafe { read_sgd_options(opts)? };
        let inner = OutputLayer::with_kernels(kernels()?, inputs, classes, o)?;
        let h = into_handle(SkOutputLayer {
            tag: SkOutputLayer::LIVE,
            inner,
        });
        // SAFETY: as above.
        unsafe { out.write(h) };
        Ok(())
    })
}

/// Frees a layer (NULL: nothing). Pointers from `sk_output_layer_weights`/`_bias` die with it.
/// A pointer that is not a live layer (freed already, say) frees nothing and leaves an
/// `SK_BAD_HANDLE` message (best effort: see [`crate::handle`]).
///
/// # Safety
/// `layer` is NULL or a live handle from [`sk_output_layer_create`], not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_free(layer: *mut SkOutputLayer) {
    if layer.is_null() {
        return;
    }
    // SAFETY: the caller's contract.
    let _ = guard("sk_output_layer_free", || unsafe { free("layer", layer) });
}

/// Xavier/Glorot-uniform weights from `seed` (deterministic); zero bias.
///
/// # Safety
/// `layer` a live handle.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_init_xavier(
    layer: *mut SkOutputLayer,
    seed: u64,
) -> SkStatus {
    guard("sk_output_layer_init_xavier", || {
        // SAFETY: the caller's contract.
        let l = unsafe { handle("layer", layer)? };
        l.inner.init_xavier(seed);
        Ok(())
    })
}

/// `*inputs` and `*classes` (either may be NULL).
///
/// # Safety
/// `layer` a live handle; `inputs`, `classes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_shape(
    layer: *mut SkOutputLayer,
    inputs: *mut usize,
    classes: *mut usize,
) -> SkStatus {
    guard("sk_output_layer_shape", || {
        // SAFETY: the caller's contract.
        let l = unsafe { handle("layer", layer)? };
        let outs = [opt_one("inputs", inputs)?, opt_one("classes", classes)?];
        let outs: Vec<&Arg> = outs.iter().flatten().collect();
        disjoint(&outs, &layer_buffers(l).iter().collect::<Vec<_>>())?;
        let (d, c) = l.inner.shape();
        // SAFETY: NULL or checked (aligned, overlapping nothing); the caller's contract.
        unsafe {
            put("inputs", inputs, d)?;
            put("classes", classes, c)?;
        }
        Ok(())
    })
}

/// The weights (`[classes, inputs]`, row-major) as a library-owned buffer that the caller may
/// read and write between calls: `*weights` and `*len` receive it. Valid until the layer is
/// freed.
///
/// # Safety
/// `layer` a live handle; `weights` and `len` writable.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_weights(
    layer: *mut SkOutputLayer,
    weights: *mut *mut f32,
    len: *mut usize,
) -> SkStatus {
    guard("sk_output_layer_weights", || {
        // SAFETY: the caller's contract.
        let l = unsafe { handle("layer", layer)? };
        let outs = [
            one_arg("weights", weights.cast_const())?,
            one_arg("len", len.cast_const())?,
        ];
        disjoint(
            &[&outs[0], &outs[1]],
            &layer_buffers(l).iter().collect::<Vec<_>>(),
        )?;
        let w = &mut l.inner.weight;
        // SAFETY: checked (aligned, overlapping nothing); writable by the caller's contract.
        unsafe {
            put_required("weights", weights, w.as_mut_ptr())?;
            put_required("len", len, w.len())?;
        }
        Ok(())
    })
}

/// The bias (`classes` floats) as a library-owned buffer, as [`sk_output_layer_weights`].
///
/// # Safety
/// `layer` a live handle; `bias` and `len` writable.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_bias(
    layer: *mut SkOutputLayer,
    bias: *mut *mut f32,
    len: *mut usize,
) -> SkStatus {
    guard("sk_output_layer_bias", || {
        // SAFETY: the caller's contract.
        let l = unsafe { handle("layer", layer)? };
        let outs = [
            one_arg("bias", bias.cast_const())?,
            one_arg("len", len.cast_const())?,
        ];
        disjoint(
            &[&outs[0], &outs[1]],
            &layer_buffers(l).iter().collect::<Vec<_>>(),
        )?;
        let b = &mut l.inner.bias;
        // SAFETY: checked (aligned, overlapping nothing); writable by the caller's contract.
        unsafe {
            put_required("bias", bias, b.as_mut_ptr())?;
            put_required("len", len, b.len())?;
        }
        Ok(())
    })
}

/// The training steps taken, into `*steps`.
///
/// # Safety
/// `layer` a live handle; `steps` writable.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_steps(
    layer: *mut SkOutputLayer,
    steps: *mut u64,
) -> SkStatus {
    guard("sk_output_layer_steps", || {
        // SAFETY: the caller's contract.
        let l = unsafe { handle("layer", layer)? };
        let sa = one_arg("steps", steps.cast_const())?;
        disjoint(&[&sa], &layer_buffers(l).iter().collect::<Vec<_>>())?;
        // SAFETY: checked (aligned, overlapping nothing); the caller's contract.
        unsafe { put_required("steps", steps, l.inner.optimizer().steps()) }
    })
}

/// `z = a W^T + b` for a batch `a` (`[B, inputs]`) into `z` (`[B, classes]`).
///
/// # Safety
/// `layer` a live handle; `a` readable and `z` writable for their lengths.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_forward(
    layer: *mut SkOutputLayer,
    a: *const f32,
    a_len: usize,
    z: *mut f32,
    z_len: usize,
) -> SkStatus {
    guard("sk_output_layer_forward", || {
        // SAFETY: the caller's contract.
        let l = unsafe { handle("layer", layer)? };
        let aa = arg("a", a, a_len)?;
        let za = arg("z", z.cast_const(), z_len)?;
        let bufs = layer_buffers(l);
        let ins: Vec<&Arg> = std::iter::once(&aa).chain(bufs.iter()).collect();
        disjoint(&[&za], &ins)?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (a, z) = unsafe { (slice(a, a_len), slice_mut(z, z_len)) };
        let inner = &l.inner;
        in_pool(move || Ok(inner.forward(a, z)?))
    })
}

/// The predicted class (first argmax of the logits) of each sample of `a` into `out`.
///
/// # Safety
/// `layer` a live handle; `a` readable and `out` writable for their lengths.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_predict(
    layer: *mut SkOutputLayer,
    a: *const f32,
    a_len: usize,
    out: *mut u32,
    out_len: usize,
) -> SkStatus {
    guard("sk_output_layer_predict", || {
        // SAFETY: the caller's contract.
        let l = unsafe { handle("layer", layer)? };
        let aa = arg("a", a, a_len)?;
        let oa = arg("out", out.cast_const(), out_len)?;
        let bufs = layer_buffers(l);
        let ins: Vec<&Arg> = std::iter::once(&aa).chain(bufs.iter()).collect();
        disjoint(&[&oa], &ins)?;
        // SAFETY: checked by `arg` and `disjoint`; `a` does not overlap the layer's buffers;
        // the caller's contract.
        let (a, out) = unsafe { (slice(a, a_len), slice_mut(out, out_len)) };
        let inner = &mut l.inner;
        in_pool(move || Ok(inner.predict(a, out)?))
    })
}

/// The one implementation of the training steps.
///
/// # Safety
/// `layer` a live handle; every pointer NULL (with length 0) or valid for its documented
/// access and length.
#[allow(clippy::too_many_arguments)]
unsafe fn train<L: Label>(
    layer: *mut SkOutputLayer,
    a: *const f32,
    a_len: usize,
    targets: *const L,
    targets_len: usize,
    lr: f32,
    opts: *const SkCeOptions,
    outputs: *const SkCeOutputs,
    da: *mut f32,
    da_len: usize,
    stats: *mut SkCeStats,
    loss: *mut f32,
) -> CResult<()> {
    // SAFETY: the caller's contract.
    let l = unsafe { handle("layer", layer)? };
    let lossa = opt_one("loss", loss.cast_const())?;
    let statsa = opt_one("stats", stats.cast_const())?;
    let opta = opt_one("opts", opts)?;
    let outa = opt_one("outputs", outputs)?;
    let aa = arg("a", a, a_len)?;
    let ta = arg("targets", targets, targets_len)?;
    let daa = opt_arg("da", da.cast_const(), da_len)?;
    // SAFETY: the caller's contract.
    let (ce, wa, ra) = unsafe { read_options(opts)? };
    // SAFETY: the caller's contract.
    let (o, [rla, lsa, ama]) = unsafe { read_outputs(outputs)? };
    // The step writes the layer's handle, weights, bias and velocities: they count as outputs,
    // as do the out-values `loss` and `stats`; the options and outputs structs are inputs.
    let bufs = layer_buffers(l);
    let outs: Vec<&Arg> = daa
        .iter()
        .chain(&rla)
        .chain(&lsa)
        .chain(&ama)
        .chain(&lossa)
        .chain(&statsa)
        .chain(&bufs)
        .collect();
    let ins: Vec<&Arg> = [&aa, &ta]
        .into_iter()
        .chain(&wa)
        .chain(&ra)
        .chain(&opta)
        .chain(&outa)
        .collect();
    disjoint(&outs, &ins)?;
    // SAFETY: every range checked by `arg`/`opt_arg` and `disjoint` (no output, the layer's
    // own buffers included, overlaps anything); validity is the caller's contract.
    let (a, t, da, mut co) = unsafe {
        (
            slice(a, a_len),
            slice(targets, targets_len),
            opt_slice_mut(daa, da, da_len),
            CrossEntropyOutputs {
                row_loss: opt_slice_mut(rla, o.row_loss, o.row_loss_len),
                lse: opt_slice_mut(lsa, o.lse, o.lse_len),
                argmax: opt_slice_mut(ama, o.argmax, o.argmax_len),
            },
        )
    };
    let inner = &mut l.inner;
    let st = in_pool(move || inner.train_step_with(a, t, lr, &ce, &mut co, da))?;
    // SAFETY: NULL or checked above (aligned, overlapping nothing); writable by the caller's
    // contract.
    unsafe {
        put("loss", loss, st.loss)?;
        put("stats", stats, SkCeStats::from(st))?;
    }
    Ok(())
}

/// One training step (forward, mean cross-entropy, SGD update) on a batch `a` (`[B, inputs]`)
/// with `int64_t` labels; `*loss` (if not NULL) receives the mean loss before the update.
///
/// # Safety
/// `layer` a live handle; `a`, `targets` readable for their lengths; `loss` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_train_step(
    layer: *mut SkOutputLayer,
    a: *const f32,
    a_len: usize,
    targets: *const i64,
    targets_len: usize,
    lr: f32,
    loss: *mut f32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_output_layer_train_step", || unsafe {
        train(
            layer,
            a,
            a_len,
            targets,
            targets_len,
            lr,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            loss,
        )
    })
}

/// [`sk_output_layer_train_step`] with `int32_t` labels.
///
/// # Safety
/// As [`sk_output_layer_train_step`].
#[no_mangle]
pub unsafe extern "C" fn sk_output_layer_train_step_i32(
    layer: *mut SkOutputLayer,
    a: *const f32,
    a_len: usize,
    targets: *const i32,
    targets_len: usize,
    lr: f32,
    loss: *mut f32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_output_layer_train_step_i32", || unsafe {
        train(
            layer,
            a,
            a_len,
            targets,
            targets_len,
            lr,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            loss,
        )
    })
}

/// A training step with cross-entropy options, per-row outputs, `da = dL/da` (`[B, inputs]`,
/// or NULL) and stats.
///
/// # Safety
/// As [`sk_output_layer_train_step`]; `opts`, `outputs` NULL or readable (their arrays
/// readable / writable); `da` NULL (length 0) or writable; `stats` NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn sk_output_layer_train_step_ext(
    layer: *mut SkOutputLayer,
    a: *const f32,
    a_len: usize,
    targets: *const i64,
    targets_len: usize,
    lr: f32,
    opts: *const SkCeOptions,
    outputs: *const SkCeOutputs,
    da: *mut f32,
    da_len: usize,
    stats: *mut SkCeStats,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_output_layer_train_step_ext", || unsafe {
        train(
            layer,
            a,
            a_len,
            targets,
            targets_len,
            lr,
            opts,
            outputs,
            da,
            da_len,
            stats,
            std::ptr::null_mut(),
        )
    })
}
