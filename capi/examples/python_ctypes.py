#!/usr/bin/env python3
"""Calls libsoftmax_kernels.so from Python with ctypes and checks it against numpy.

Usage: python3 capi/examples/python_ctypes.py [path/to/libsoftmax_kernels.so]
(default: $SOFTMAX_KERNELS_LIB, else target/release/libsoftmax_kernels.so of this repository).

Every array crosses the boundary as a pointer plus its length in elements, exactly as in C;
the library checks the lengths, so a wrong shape is a status code, never a crash.
"""
import ctypes as C
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "target", "release", "libsoftmax_kernels.so")
path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SOFTMAX_KERNELS_LIB", DEFAULT)
lib = C.CDLL(os.path.abspath(path))

F32P = C.POINTER(C.c_float)
I64P = C.POINTER(C.c_int64)
U32P = C.POINTER(C.c_uint32)
SIZE = C.c_size_t
STATUS = C.c_int  # sk_status is a C enum: int-sized

SK_OK, SK_ERROR_ZERO_DIM, SK_ERROR_BAD_LABEL, SK_ERROR_LENGTH_MISMATCH = 0, 1, 5, 3
SK_REDUCTION_MEAN, SK_REDUCTION_SUM, SK_REDUCTION_NONE = 0, 1, 2


class CeOptions(C.Structure):
    """sk_ce_options (field order and types as in softmax_kernels.h)."""
    _fields_ = [
        ("reduction", C.c_int32),
        ("all_ignored", C.c_int32),
        ("has_ignore_index", C.c_int32),
        ("label_smoothing", C.c_float),
        ("ignore_index", C.c_int64),
        ("z_loss", C.c_float),
        ("softcap", C.c_float),
        ("scale", C.c_float),
        ("weight", F32P),
        ("weight_len", SIZE),
        ("row_scale", F32P),
        ("row_scale_len", SIZE),
    ]


class CeOutputs(C.Structure):
    """sk_ce_outputs."""
    _fields_ = [
        ("row_loss", F32P), ("row_loss_len", SIZE),
        ("lse", F32P), ("lse_len", SIZE),
        ("argmax", U32P), ("argmax_len", SIZE),
    ]


class CeStats(C.Structure):
    """sk_ce_stats."""
    _fields_ = [
        ("loss_f64", C.c_double), ("denominator", C.c_double),
        ("rows_used", SIZE), ("correct", SIZE),
        ("loss", C.c_float), ("has_correct", C.c_int32),
    ]


class TokenOptions(C.Structure):
    """sk_token_options."""
    _fields_ = [
        ("temperature", C.c_float), ("softcap", C.c_float),
        ("has_ignore_index", C.c_int32), ("ignore_index", C.c_int64),
    ]


class TokenOutputs(C.Structure):
    """sk_token_outputs."""
    _fields_ = [
        ("logp", F32P), ("logp_len", SIZE),
        ("entropy", F32P), ("entropy_len", SIZE),
        ("lse", F32P), ("lse_len", SIZE),
    ]


class TokenGrads(C.Structure):
    """sk_token_grads."""
    _fields_ = [("logp", F32P), ("logp_len", SIZE), ("entropy", F32P), ("entropy_len", SIZE)]


class TokenSaved(C.Structure):
    """sk_token_saved."""
    _fields_ = [("lse", F32P), ("lse_len", SIZE), ("entropy", F32P), ("entropy_len", SIZE)]


class RowState(C.Structure):
    """sk_row_state: eight doubles, so a [rows] array of them is a [rows, 8] float64 array."""
    _fields_ = [("max", C.c_double), ("sum", C.c_double), ("dot", C.c_double),
                ("target", C.c_double), ("has_target", C.c_double), ("wdot", C.c_double),
                ("wsum", C.c_double), ("target_weight", C.c_double)]


def declare(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


sk_version = declare("sk_version", C.c_char_p)
sk_status_name = declare("sk_status_name", C.c_char_p, C.c_int32)
sk_last_error_message = declare("sk_last_error_message", C.c_char_p)
sk_softmax = declare("sk_softmax", STATUS, F32P, SIZE, F32P, SIZE, SIZE)
sk_log_softmax = declare("sk_log_softmax", STATUS, F32P, SIZE, F32P, SIZE, SIZE)
sk_ce_options_default = declare("sk_ce_options_default", STATUS, C.POINTER(CeOptions))
sk_cross_entropy_fwd_bwd = declare("sk_cross_entropy_fwd_bwd", STATUS, F32P, SIZE, I64P, SIZE,
                                   F32P, SIZE, SIZE, C.POINTER(CeOptions), C.POINTER(C.c_float))
sk_cross_entropy_ext = declare("sk_cross_entropy_ext", STATUS, F32P, SIZE, I64P, SIZE, F32P, SIZE,
                               SIZE, C.POINTER(CeOptions), C.POINTER(CeOutputs),
                               C.POINTER(CeStats))
sk_token_options_default = declare("sk_token_options_default", STATUS,
                                   C.POINTER(TokenOptions))
sk_token_logprobs_fwd_bwd = declare("sk_token_logprobs_fwd_bwd", STATUS, F32P, SIZE, I64P, SIZE,
                                    F32P, SIZE, SIZE, C.POINTER(TokenOptions),
                                    C.POINTER(TokenGrads), C.POINTER(TokenOutputs))
sk_token_logprobs = declare("sk_token_logprobs", STATUS, F32P, SIZE, I64P, SIZE, SIZE,
                            C.POINTER(TokenOptions), C.POINTER(TokenOutputs))
RSP = C.POINTER(RowState)
sk_token_shard_states = declare("sk_token_shard_states", STATUS, F32P, SIZE, I64P, SIZE, F32P,
                                SIZE, SIZE, SIZE, SIZE, C.POINTER(TokenOptions), RSP, SIZE)
sk_row_states_merge = declare("sk_row_states_merge", STATUS, RSP, SIZE, RSP, SIZE)
sk_row_states_finalize = declare("sk_row_states_finalize", STATUS, RSP, SIZE, I64P, SIZE, SIZE,
                                 C.POINTER(TokenOptions), C.POINTER(TokenOutputs))
sk_token_shard_backward = declare("sk_token_shard_backward", STATUS, F32P, SIZE, I64P, SIZE,
                                  F32P, SIZE, SIZE, SIZE, SIZE, C.POINTER(TokenOptions), RSP,
                                  SIZE, C.POINTER(TokenSaved), C.POINTER(TokenGrads))
sk_cross_entropy_shard_states = declare("sk_cross_entropy_shard_states", STATUS, F32P, SIZE,
                                        I64P, SIZE, F32P, SIZE, SIZE, SIZE, SIZE,
                                        C.POINTER(CeOptions), RSP, SIZE)
sk_ce_states_finalize = declare("sk_ce_states_finalize", STATUS, RSP, SIZE, I64P, SIZE, SIZE,
                                C.POINTER(CeOptions), C.POINTER(CeOutputs), C.POINTER(CeStats),
                                C.POINTER(C.c_float))
sk_cross_entropy_shard_backward = declare("sk_cross_entropy_shard_backward", STATUS, F32P, SIZE,
                                          I64P, SIZE, F32P, SIZE, SIZE, SIZE, SIZE,
                                          C.POINTER(CeOptions), RSP, SIZE, RSP, SIZE)
sk_set_isa = declare("sk_set_isa", STATUS, C.c_int32)
sk_available_isas = declare("sk_available_isas", C.c_uint32)

assert C.sizeof(CeOptions) == 72 and C.sizeof(CeOutputs) == 48 and C.sizeof(CeStats) == 40
assert C.sizeof(TokenOptions) == 24 and C.sizeof(TokenOutputs) == 48
assert C.sizeof(TokenGrads) == 32 and C.sizeof(TokenSaved) == 32 and C.sizeof(RowState) == 64


def ptr(a, t=F32P):
    """A pointer to a C-contiguous array (the caller keeps `a` alive during the call)."""
    assert a.flags["C_CONTIGUOUS"]
    return a.ctypes.data_as(t)


def check(status, what):
    if status != SK_OK:
        raise RuntimeError(f"{what}: {sk_status_name(status).decode()}: "
                           f"{sk_last_error_message().decode()}")


passed = failed = 0


def expect(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAILED: {what}", file=sys.stderr)


# numpy references, in float64.
def np_softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_cross_entropy(z, t, ignore=-100, eps=0.0):
    """PyTorch's F.cross_entropy(z, t, ignore_index=-100, label_smoothing=eps), reduction none,
    and the gradient of the mean."""
    z = z.astype(np.float64)
    rows, cols = z.shape
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    logp = z - lse[:, None]
    used = t != ignore
    tt = np.where(used, t, 0)
    nll = -logp[np.arange(rows), tt]
    smooth = -logp.mean(axis=1)
    loss = np.where(used, (1 - eps) * nll + eps * smooth, 0.0)
    onehot = np.zeros_like(z)
    onehot[np.arange(rows), tt] = 1.0
    target = (1 - eps) * onehot + eps / cols
    grad = np.where(used[:, None], np.exp(logp) - target, 0.0) / used.sum()
    return loss, grad, lse


print(f"libsoftmax_kernels {sk_version().decode()} from {os.path.abspath(path)}")
rng = np.random.default_rng(0)
rows, cols = 64, 10

# Softmax and log-softmax on every tier this CPU has.
x = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
avail = sk_available_isas()
for tier, name in enumerate(["scalar", "portable", "avx2", "avx512"]):
    if not avail & (1 << tier):
        continue
    check(sk_set_isa(tier), "sk_set_isa")
    y = np.empty_like(x)
    check(sk_softmax(ptr(x), x.size, ptr(y), y.size, cols), "sk_softmax")
    err = np.abs(y - np_softmax(x)).max()
    expect(err < 1e-6, f"softmax [{name}] max error {err}")
    check(sk_log_softmax(ptr(x), x.size, ptr(y), y.size, cols), "sk_log_softmax")
    err = np.abs(y - np.log(np_softmax(x))).max()
    expect(err < 1e-5, f"log_softmax [{name}] max error {err}")
    print(f"softmax/log_softmax [{name}]: ok")
check(sk_set_isa(-1), "sk_set_isa(SK_ISA_AUTO)")

# Cross-entropy: mean loss and gradient, with ignored rows and label smoothing.
t = rng.integers(0, cols, rows).astype(np.int64)
t[::7] = -100
for eps in (0.0, 0.1):
    opts = CeOptions()
    check(sk_ce_options_default(C.byref(opts)), "sk_ce_options_default")
    opts.label_smoothing = eps
    grad = np.empty_like(x)
    loss = C.c_float()
    check(sk_cross_entropy_fwd_bwd(ptr(x), x.size, ptr(t, I64P), t.size, ptr(grad), grad.size,
                                   cols, C.byref(opts), C.byref(loss)), "sk_cross_entropy_fwd_bwd")
    ref_loss, ref_grad, ref_lse = np_cross_entropy(x, t, eps=eps)
    mean = ref_loss.sum() / (t != -100).sum()
    expect(abs(loss.value - mean) < 1e-5 * max(1.0, abs(mean)), f"loss eps={eps}: {loss.value} vs {mean}")
    expect(np.abs(grad - ref_grad).max() < 1e-6, f"grad eps={eps}")
    print(f"cross_entropy eps={eps}: loss {loss.value:.6f} (numpy {mean:.6f}): ok")

# Reduction NONE with per-row outputs and stats.
opts = CeOptions()
check(sk_ce_options_default(C.byref(opts)), "sk_ce_options_default")
opts.reduction = SK_REDUCTION_NONE
row_loss = np.empty(rows, np.float32)
lse = np.empty(rows, np.float32)
argmax = np.empty(rows, np.uint32)
outs = CeOutputs(ptr(row_loss), rows, ptr(lse), rows, ptr(argmax, U32P), rows)
stats = CeStats()
check(sk_cross_entropy_ext(ptr(x), x.size, ptr(t, I64P), t.size, None, 0, cols, C.byref(opts),
                           C.byref(outs), C.byref(stats)), "sk_cross_entropy_ext")
ref_loss, _, ref_lse = np_cross_entropy(x, t)
expect(np.abs(row_loss - ref_loss).max() < 1e-5, "row_loss")
expect(np.abs(lse - ref_lse).max() < 1e-5, "lse")
expect(np.array_equal(argmax, x.argmax(axis=1)), "argmax")
used = t != -100
expect(stats.rows_used == used.sum(), "rows_used")
expect(stats.has_correct == 1 and stats.correct == (x.argmax(1) == t)[used].sum(), "correct")
print(f"cross_entropy_ext (none): {stats.rows_used} rows used, {stats.correct} correct: ok")

# Per-token log-probs, entropy and the gradient of sum(g_logp logp + g_h H) at temperature 0.7
# (the RL policy-gradient loss with an entropy bonus), against numpy.
temp = 0.7
tok_opts = TokenOptions()
check(sk_token_options_default(C.byref(tok_opts)), "sk_token_options_default")
tok_opts.temperature = temp
g_logp = rng.standard_normal(rows).astype(np.float32)  # e.g. advantages
g_h = np.full(rows, 0.01, np.float32)                    # entropy bonus
logp, ent, dz = np.empty(rows, np.float32), np.empty(rows, np.float32), np.empty_like(x)
grads = TokenGrads(ptr(g_logp), rows, ptr(g_h), rows)
touts = TokenOutputs(ptr(logp), rows, ptr(ent), rows, None, 0)
check(sk_token_logprobs_fwd_bwd(ptr(x), x.size, ptr(t, I64P), t.size, ptr(dz), dz.size, cols,
                                C.byref(tok_opts), C.byref(grads), C.byref(touts)),
      "sk_token_logprobs_fwd_bwd")
p = np_softmax(x / temp)
used = t != -100
tt = np.where(used, t, 0)
ref_logp = np.where(used, np.log(p[np.arange(rows), tt]), 0.0)
ref_h = np.where(used, -(p * np.log(p)).sum(1), 0.0)
onehot = np.zeros_like(p)
onehot[np.arange(rows), tt] = 1.0
ref_dz = (g_logp[:, None] * (onehot - p)
          - g_h[:, None] * p * (np.log(p) + ref_h[:, None])) / temp
ref_dz[~used] = 0.0
expect(np.abs(logp - ref_logp).max() < 1e-5, "token logp")
expect(np.abs(ent - ref_h).max() < 1e-5, "token entropy")
expect(np.abs(dz - ref_dz).max() < 1e-5, "token gradient")
print(f"token_logprobs_fwd_bwd (T={temp}): mean logp {logp[used].mean():.4f}: ok")

# Vocabulary shards (tensor parallelism): two "ranks" each hold some classes' logits and compute
# their states separately; the states ([rows, 8] float64 each: what torch.distributed.all_gather
# or MPI_Allgather would exchange) are merged and finalized into the whole vocabulary's logp,
# entropy and lse; each rank's backward then gives its own columns of the gradient, into the
# buffer its states call filled (`keep`, then `dlogits`).
split = 4
shards = [(0, np.ascontiguousarray(x[:, :split])), (split, np.ascontiguousarray(x[:, split:]))]
gathered, keeps = [], []
for offset, xs in shards:  # each rank, separately
    states = np.empty((rows, 8), np.float64)
    keep = np.empty_like(xs)
    check(sk_token_shard_states(ptr(xs), xs.size, ptr(t, I64P), t.size, ptr(keep), keep.size,
                                xs.shape[1], offset, cols, C.byref(tok_opts), ptr(states, RSP),
                                rows), "sk_token_shard_states")
    gathered.append(states)
    keeps.append(keep)
# After the all-gather every rank holds `gathered`; it merges (commutatively) and finalizes.
merged = gathered[0].copy()
check(sk_row_states_merge(ptr(merged, RSP), rows, ptr(gathered[1], RSP), rows),
      "sk_row_states_merge")
s_logp, s_ent, s_lse = (np.empty(rows, np.float32) for _ in range(3))
souts = TokenOutputs(ptr(s_logp), rows, ptr(s_ent), rows, ptr(s_lse), rows)
check(sk_row_states_finalize(ptr(merged, RSP), rows, ptr(t, I64P), t.size, cols,
                             C.byref(tok_opts), C.byref(souts)), "sk_row_states_finalize")
# The unsharded call on the whole logits.
u_logp = np.empty(rows, np.float32)
uouts = TokenOutputs(ptr(u_logp), rows, None, 0, None, 0)
check(sk_token_logprobs(ptr(x), x.size, ptr(t, I64P), t.size, cols, C.byref(tok_opts),
                        C.byref(uouts)), "sk_token_logprobs")
expect(np.abs(s_logp - u_logp).max() < 1e-5, "sharded logp vs unsharded")
expect(np.abs(s_ent - ref_h).max() < 1e-5, "sharded entropy")
# Merging in the other order gives the same bits.
other = gathered[1].copy()
check(sk_row_states_merge(ptr(other, RSP), rows, ptr(gathered[0], RSP), rows),
      "sk_row_states_merge")
expect(np.array_equal(merged.view(np.uint64), other.view(np.uint64)), "merge is commutative")
# Each rank's backward, from its own states and kept values and the finalized lse and H.
saved = TokenSaved(ptr(s_lse), rows, ptr(s_ent), rows)
for (offset, xs), states, d in zip(shards, gathered, keeps):
    check(sk_token_shard_backward(ptr(xs), xs.size, ptr(t, I64P), t.size, ptr(d), d.size,
                                  xs.shape[1], offset, cols, C.byref(tok_opts), ptr(states, RSP),
                                  rows, C.byref(saved), C.byref(grads)), "sk_token_shard_backward")
expect(np.abs(np.concatenate(keeps, axis=1) - dz).max() < 1e-5, "sharded gradient")
print(f"token shards (classes 0..{split - 1} | {split}..{cols - 1}): merged logp matches the "
      f"unsharded call: ok")

# Vocabulary-sharded cross-entropy: the same two shards, label smoothing; the states are
# gathered (here: a list) and merged with numpy-held arrays, then finalized and back-propagated.
ce_opts = CeOptions()
check(sk_ce_options_default(C.byref(ce_opts)), "sk_ce_options_default")
ce_opts.label_smoothing = 0.1
gathered, keeps = [], []
for offset, xs in shards:
    states, keep = np.empty((rows, 8), np.float64), np.empty_like(xs)
    check(sk_cross_entropy_shard_states(ptr(xs), xs.size, ptr(t, I64P), t.size, ptr(keep),
                                        keep.size, xs.shape[1], offset, cols, C.byref(ce_opts),
                                        ptr(states, RSP), rows), "sk_cross_entropy_shard_states")
    gathered.append(states)
    keeps.append(keep)
merged = gathered[0].copy()
check(sk_row_states_merge(ptr(merged, RSP), rows, ptr(gathered[1], RSP), rows),
      "sk_row_states_merge")
s_loss = C.c_float()
check(sk_ce_states_finalize(ptr(merged, RSP), rows, ptr(t, I64P), t.size, cols,
                            C.byref(ce_opts), None, None, C.byref(s_loss)),
      "sk_ce_states_finalize")
for (offset, xs), states, d in zip(shards, gathered, keeps):
    check(sk_cross_entropy_shard_backward(ptr(xs), xs.size, ptr(t, I64P), t.size, ptr(d), d.size,
                                          xs.shape[1], offset, cols, C.byref(ce_opts),
                                          ptr(states, RSP), rows, ptr(merged, RSP), rows),
          "sk_cross_entropy_shard_backward")
u_grad, u_loss = np.empty_like(x), C.c_float()
check(sk_cross_entropy_fwd_bwd(ptr(x), x.size, ptr(t, I64P), t.size, ptr(u_grad), u_grad.size,
                               cols, C.byref(ce_opts), C.byref(u_loss)), "sk_cross_entropy_fwd_bwd")
expect(abs(s_loss.value - u_loss.value) <= 1e-5 * abs(u_loss.value), "sharded CE loss")
expect(np.abs(np.concatenate(keeps, axis=1) - u_grad).max() < 1e-6, "sharded CE gradient")
print(f"cross-entropy shards: loss {s_loss.value:.6f} (unsharded {u_loss.value:.6f}): ok")

# Errors are status codes with a message, not crashes.
y = np.empty_like(x)
st = sk_softmax(ptr(x), x.size, ptr(y), y.size, 0)
expect(st == SK_ERROR_ZERO_DIM, "cols == 0")
print(f"cols == 0 -> {sk_status_name(st).decode()}: {sk_last_error_message().decode()}")
st = sk_softmax(ptr(x), x.size, ptr(y), y.size - 1, cols)
expect(st == SK_ERROR_LENGTH_MISMATCH, "length mismatch")
bad = t.copy()
bad[3] = cols
loss = C.c_float()
st = sk_cross_entropy_fwd_bwd(ptr(x), x.size, ptr(bad, I64P), bad.size, ptr(y), y.size, cols,
                              None, C.byref(loss))
expect(st == SK_ERROR_BAD_LABEL, "bad label")
print(f"bad label -> {sk_status_name(st).decode()}: {sk_last_error_message().decode()}")

print(f"python_ctypes: {passed} passed, {failed} failed")
sys.exit(0 if failed == 0 else 1)
