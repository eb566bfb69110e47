/*
 * softmax_kernels.h - the C interface of softmax-kernels.
 *
 * Hand-vectorized CPU kernels for the classification output layer of a neural network:
 * softmax, log-softmax, logsumexp and their backward passes, fused cross-entropy, per-token
 * log-probabilities and entropy with their gradients (both also over vocabulary shards, with
 * mergeable per-row states), the output layer's updates (rank-1/rank-k, weight and bias
 * gradients, SGD, linear forward/backward), the fused linear cross-entropy (loss and gradients
 * of softmax(A W^T + b) without the logits) and a trainable output layer. Link with
 * libsoftmax_kernels.so or libsoftmax_kernels.a (`pkg-config --cflags --libs softmax_kernels`,
 * or `--static` for the archive).
 *
 * CONVENTIONS (every function)
 *
 *  - Matrices are row-major float arrays. An array argument is a pointer and its length in
 *    ELEMENTS (`const float *x, size_t x_len`); the library checks every length against the
 *    others and never reads or writes past one. A `[rows, cols]` matrix has `rows * cols`
 *    elements; `rows` is taken from the lengths (`rows = x_len / cols`), and zero rows is valid
 *    (nothing is done).
 *  - A NULL pointer with length 0 is an empty array. A NULL pointer with a nonzero length is
 *    SK_NULL_POINTER. A pointer not aligned for its type is SK_MISALIGNED. A length whose byte
 *    size overflows is SK_ERROR_SIZE_OVERFLOW. Optional arrays are "absent" when NULL with
 *    length 0.
 *  - An output may not overlap any other argument (SK_OVERLAP), except where a function says
 *    that it runs in place when the output IS an input (same pointer, same length). This holds
 *    for every output: arrays, and the pointers that receive one value or one struct (loss,
 *    stats, the out-pointer of a create function, the getters' out-pointers). "Any other
 *    argument" includes the options and outputs structs themselves and, for a handle, the
 *    handle's own memory (its struct and the buffers the library owns for it: a layer's
 *    weights, bias and velocities, an optimizer's velocities).
 *  - Handles (sk_output_layer, sk_sgd_optimizer) carry a tag that every function taking one
 *    checks first (one load and compare). A NULL handle is SK_NULL_POINTER and a misaligned one
 *    SK_MISALIGNED, as for any pointer. A pointer to readable memory that is not a live handle
 *    of the right type (zeroed or random memory, a handle of the other type) is SK_BAD_HANDLE,
 *    and nothing is read beyond its first 8 bytes or written. A freed handle is SK_BAD_HANDLE
 *    too, and freeing it again frees nothing (the free function stores an SK_BAD_HANDLE
 *    message), as long as its memory has not been reused: the free functions overwrite the
 *    tag before releasing the memory, but the allocator may hand that memory out again (or
 *    unmap it), so detecting a use after free or a double free is best effort, not a
 *    guarantee; a pointer to unmapped memory still crashes. Using a freed handle remains a
 *    bug (memory checkers report the tag's read as an invalid read).
 *  - Enumerated arguments (`int32_t`) are checked: an unknown value is SK_ERROR_INVALID_OPTION.
 *  - Every function that can fail returns an sk_status. On failure a message naming the
 *    function, the status and the argument at fault is stored for the calling thread
 *    (sk_last_error_message). Every check runs before any output is touched, so a call that
 *    fails with a status other than SK_PANIC has written nothing.
 *  - No function lets a Rust panic cross into C: a panic (a bug) returns SK_PANIC. Memory
 *    exhaustion aborts the process, as in Rust.
 *  - Thread safety: every function may be called from any thread concurrently, except that
 *    one handle (sk_output_layer, sk_sgd_optimizer) must not be used by two threads at once.
 *  - Work runs on the tier chosen by sk_set_isa (default: the fastest the CPU has, or the one
 *    named by the environment variable SOFTMAX_KERNELS_ISA) and on the threads chosen by
 *    sk_set_num_threads (default: one per core). Results are bit-identical for any number of
 *    threads.
 *
 * Status codes common to all array functions (not repeated below): SK_OK, SK_NULL_POINTER,
 * SK_MISALIGNED, SK_ERROR_SIZE_OVERFLOW, SK_OVERLAP, SK_ERROR_BAD_ISA_ENV (no tier forced and
 * SOFTMAX_KERNELS_ISA is unusable), SK_PANIC. Every function that takes a handle can also
 * return SK_BAD_HANDLE (and SK_OVERLAP for an out-pointer into the handle's memory).
 */
#ifndef SOFTMAX_KERNELS_H
#define SOFTMAX_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SOFTMAX_KERNELS_VERSION_MAJOR 0
#define SOFTMAX_KERNELS_VERSION_MINOR 1
#define SOFTMAX_KERNELS_VERSION_PATCH 0

/* ------------------------------------------------------------------------------------------ */
/* Status codes                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* What a call returns. Codes 1-12 are the Rust crate's error variants; 100 and above are the
 * C layer's own. */
typedef enum sk_status {
    SK_OK = 0,
    /* A dimension that must be positive is 0 (for example cols == 0). */
    SK_ERROR_ZERO_DIM = 1,
    /* An array's length is not a whole number of rows (x_len % cols != 0). */
    SK_ERROR_NOT_MULTIPLE = 2,
    /* An array's length differs from the one the other arguments imply. */
    SK_ERROR_LENGTH_MISMATCH = 3,
    /* A size (a product of dimensions, or a length in bytes) overflows. */
    SK_ERROR_SIZE_OVERFLOW = 4,
    /* A class label is neither in 0..cols-1 nor the ignore_index. */
    SK_ERROR_BAD_LABEL = 5,
    /* An option or enumerated argument is outside its domain. */
    SK_ERROR_INVALID_OPTION = 6,
    /* An output the options need was not given (row_loss with SK_REDUCTION_NONE), or a saved
     * value a gradient needs (sk_token_saved.entropy with an entropy gradient). */
    SK_ERROR_MISSING_OUTPUT = 7,
    /* The instruction-set tier asked for cannot run on this CPU. */
    SK_ERROR_ISA_UNAVAILABLE = 8,
    /* SOFTMAX_KERNELS_ISA names no tier, or one this CPU lacks (and no tier is forced). */
    SK_ERROR_BAD_ISA_ENV = 9,
    /* A leading dimension is smaller than the row length (ld < cols). */
    SK_ERROR_LEADING_DIM = 10,
    /* A strided matrix's array holds neither rows*ld nor (rows-1)*ld+cols floats. */
    SK_ERROR_MATRIX_LENGTH = 11,
    /* An optimizer's state belongs to a parameter of another shape (reset it first). */
    SK_ERROR_STATE_SHAPE = 12,
    /* More classes than the kernels support (class indices are 32-bit: at most 4294967295
     * classes in any cross-entropy or token log-prob call or output layer). */
    SK_ERROR_TOO_MANY_CLASSES = 13,
    /* A NULL pointer where an array of nonzero length, a handle or an output is required. */
    SK_NULL_POINTER = 100,
    /* An output overlaps another argument (outside the documented in-place forms). */
    SK_OVERLAP = 101,
    /* A pointer is not aligned for its element type. */
    SK_MISALIGNED = 102,
    /* A panic inside the library was caught at the boundary (a bug: please report it). */
    SK_PANIC = 103,
    /* A handle is not a live handle of its type: freed, not made by its create function, of
     * the other handle type, or overwritten (best effort for freed handles: see CONVENTIONS). */
    SK_BAD_HANDLE = 104,
    /* An error without a code of its own (a newer Rust error variant, or a thread pool that
     * could not be created). The message says what. */
    SK_ERROR_OTHER = 199,
} sk_status;

/* The calling thread's last error message: "function: SK_CODE: what went wrong", or "" if no
 * call on this thread has failed. The string belongs to the library and stays valid until the
 * next call into the library from the same thread; copy it to keep it. Successful calls do not
 * clear it (like errno). Never returns NULL. */
const char *sk_last_error_message(void);

/* Forgets the calling thread's last error message (sk_last_error_message then returns ""). */
void sk_clear_last_error(void);

/* The name of a status code ("SK_OK", "SK_ERROR_ZERO_DIM", ...), or "SK_UNKNOWN_STATUS". A static
 * string; never NULL. */
const char *sk_status_name(int32_t code);

/* The library's version, "MAJOR.MINOR.PATCH". A static string. */
const char *sk_version(void);

/* ------------------------------------------------------------------------------------------ */
/* Instruction-set tiers and threads                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Tier codes. SK_ISA_SCALAR is the f64 reference oracle (slow, exact); SK_ISA_PORTABLE uses
 * SSE2-class vectors; SK_ISA_AVX2 needs AVX2+FMA; SK_ISA_AVX512 needs AVX-512F. */
typedef enum sk_isa {
    SK_ISA_AUTO = -1,
    SK_ISA_SCALAR = 0,
    SK_ISA_PORTABLE = 1,
    SK_ISA_AVX2 = 2,
    SK_ISA_AVX512 = 3,
} sk_isa;

/* The tier later calls run on (an SK_ISA_* code >= 0): the one forced by sk_set_isa, else the
 * one SOFTMAX_KERNELS_ISA names, else the fastest this CPU has. Returns -1 (and stores a
 * message) when no tier is forced and SOFTMAX_KERNELS_ISA is unusable. */
int32_t sk_active_isa(void);

/* The tiers this CPU can run, as a bitmask: bit (1u << SK_ISA_x) is set when tier x is
 * available. SK_ISA_SCALAR and SK_ISA_PORTABLE are always available. */
uint32_t sk_available_isas(void);

/* The name of a tier code: "scalar", "portable", "avx2", "avx512", "auto" (SK_ISA_AUTO) or
 * "unknown". A static string. */
const char *sk_isa_name(int32_t isa);

/* Forces the tier of every later call in the process (all threads); SK_ISA_AUTO goes back to
 * the default. Handles (sk_output_layer, sk_sgd_optimizer) keep the tier they were created on.
 * Returns SK_OK, SK_ERROR_ISA_UNAVAILABLE (a tier this CPU lacks; the setting is unchanged),
 * SK_ERROR_INVALID_OPTION (not a tier code). */
sk_status sk_set_isa(int32_t isa);

/* Runs every later call on a private pool of n worker threads (n == 0: back to the default
 * pool, one thread per core). The previous private pool's threads exit once their calls end.
 * Returns SK_OK, SK_ERROR_INVALID_OPTION (n above the thread library's limit), SK_ERROR_OTHER
 * (the threads could not be created; the setting is unchanged). */
sk_status sk_set_num_threads(size_t n);

/* The number of threads later calls run on. */
size_t sk_num_threads(void);

/* ------------------------------------------------------------------------------------------ */
/* Softmax family                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* What softmax and log_softmax give for a row whose logits are all -inf. */
typedef enum sk_masked_rows {
    SK_MASKED_ROWS_NAN = 0,  /* NaN in every output of the row (PyTorch; the default) */
    SK_MASKED_ROWS_ZERO = 1, /* probabilities 0 / log-probabilities -inf */
} sk_masked_rows;

/* Softmax of each row: y[r,k] = exp(x[r,k] - lse(x[r,:])), lse(z) = m + ln sum exp(z - m).
 * x: [rows, cols] (x_len = rows * cols); y: same length. Runs in place when y == x (same
 * length). Special values as PyTorch: NaN in a row -> NaN row; +inf -> NaN; all -inf -> NaN.
 * Returns SK_ERROR_ZERO_DIM (cols == 0), SK_ERROR_NOT_MULTIPLE (x_len % cols != 0),
 * SK_ERROR_LENGTH_MISMATCH (y_len != x_len), and the common codes. */
sk_status sk_softmax(const float *x, size_t x_len, float *y, size_t y_len, size_t cols);

/* sk_softmax with masked_rows (an sk_masked_rows value) for all -inf rows.
 * Returns as sk_softmax, and SK_ERROR_INVALID_OPTION for a bad masked_rows. */
sk_status sk_softmax_ex(const float *x, size_t x_len, float *y, size_t y_len, size_t cols,
                        int32_t masked_rows);

/* Softmax in place over x ([rows, cols], x_len floats).
 * Returns SK_ERROR_ZERO_DIM, SK_ERROR_NOT_MULTIPLE, and the common codes. */
sk_status sk_softmax_inplace(float *x, size_t x_len, size_t cols);

/* sk_softmax_inplace with masked_rows. Returns as sk_softmax_inplace, and
 * SK_ERROR_INVALID_OPTION. */
sk_status sk_softmax_inplace_ex(float *x, size_t x_len, size_t cols, int32_t masked_rows);

/* Log-softmax of each row: y[r,k] = x[r,k] - lse(x[r,:]). Shapes, in-place rule and status
 * codes as sk_softmax. */
sk_status sk_log_softmax(const float *x, size_t x_len, float *y, size_t y_len, size_t cols);

/* sk_log_softmax with masked_rows (SK_MASKED_ROWS_ZERO gives -inf for all -inf rows). Status
 * codes as sk_softmax_ex. */
sk_status sk_log_softmax_ex(const float *x, size_t x_len, float *y, size_t y_len, size_t cols,
                            int32_t masked_rows);

/* Log-softmax in place. Status codes as sk_softmax_inplace. */
sk_status sk_log_softmax_inplace(float *x, size_t x_len, size_t cols);

/* Log-softmax in place with masked_rows. Status codes as sk_softmax_inplace_ex. */
sk_status sk_log_softmax_inplace_ex(float *x, size_t x_len, size_t cols, int32_t masked_rows);

/* out[r] = ln sum_k exp(x[r,k]), one value per row. x: [rows, cols]; out: rows floats.
 * Returns SK_ERROR_ZERO_DIM, SK_ERROR_NOT_MULTIPLE, SK_ERROR_LENGTH_MISMATCH (out_len != rows),
 * and the common codes. */
sk_status sk_logsumexp(const float *x, size_t x_len, float *out, size_t out_len, size_t cols);

/* Softmax backward: dx = y * (dy - <dy, y>) per row, where y is softmax's output and dy the
 * gradient with respect to it. y, dy, dx: [rows, cols]. dx may not overlap y or dy.
 * Returns SK_ERROR_ZERO_DIM, SK_ERROR_NOT_MULTIPLE (y), SK_ERROR_LENGTH_MISMATCH (dy, dx), and
 * the common codes. */
sk_status sk_softmax_backward(const float *y, size_t y_len, const float *dy, size_t dy_len,
                              float *dx, size_t dx_len, size_t cols);

/* Log-softmax backward: dx = dy - exp(y) * sum(dy) per row, where y is log_softmax's output.
 * Shapes and status codes as sk_softmax_backward. */
sk_status sk_log_softmax_backward(const float *y, size_t y_len, const float *dy, size_t dy_len,
                                  float *dx, size_t dx_len, size_t cols);

/* y[i] = exp(x[i]) with the tier's vectorized exp (within 2 ULP on [-87.33, 88.7]).
 * Returns SK_ERROR_LENGTH_MISMATCH (y_len != x_len), and the common codes. */
sk_status sk_exp(const float *x, size_t x_len, float *y, size_t y_len);

/* ------------------------------------------------------------------------------------------ */
/* Cross-entropy                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* How row losses are combined. */
typedef enum sk_reduction {
    SK_REDUCTION_MEAN = 0, /* weighted mean (PyTorch; the default) */
    SK_REDUCTION_SUM = 1,  /* sum */
    SK_REDUCTION_NONE = 2, /* every row's loss in outputs->row_loss (required); loss = the sum */
} sk_reduction;

/* What a MEAN over a batch whose rows are all ignored gives. */
typedef enum sk_all_ignored {
    SK_ALL_IGNORED_NAN = 0, /* NaN (0 / 0), as PyTorch; the default */
    SK_ALL_IGNORED_ZERO = 1, /* 0 */
} sk_all_ignored;

/* Cross-entropy options. ALWAYS fill with sk_ce_options_default() first, then change fields
 * (a zeroed struct means scale 0 and no ignore_index). Passing NULL for the options means the
 * defaults. Semantics are PyTorch's F.cross_entropy plus z-loss and soft-capping:
 *   loss_r = (1-eps) w_t (lse - z_t) + (eps/C) sum_c w_c (lse - z_c) + z_loss * lse^2
 * with z soft-capped first (z <- softcap * tanh(z / softcap)) when softcap != 0. */
typedef struct sk_ce_options {
    int32_t reduction;        /* an sk_reduction (default SK_REDUCTION_MEAN) */
    int32_t all_ignored;      /* an sk_all_ignored (default SK_ALL_IGNORED_NAN) */
    int32_t has_ignore_index; /* nonzero (default 1): rows labelled ignore_index are skipped */
    float label_smoothing;    /* in [0, 1] (default 0) */
    int64_t ignore_index;     /* the ignored label (default -100) */
    float z_loss;             /* finite, >= 0 (default 0) */
    float softcap;            /* finite, > 0; or 0 for none (default 0) */
    float scale;              /* finite upstream gradient scalar (default 1) */
    const float *weight;      /* per-class weights: cols floats, or NULL (default) */
    size_t weight_len;
    const float *row_scale;   /* per-row upstream gradient: rows floats, or NULL (default);
                                 only with SK_REDUCTION_NONE */
    size_t row_scale_len;
} sk_ce_options;

/* Optional per-row outputs, filled in the same sweeps as the loss. Each array may be NULL
 * (with length 0); a given one must have `rows` entries. */
typedef struct sk_ce_outputs {
    float *row_loss;    /* each row's loss (0 for ignored rows); required by SK_REDUCTION_NONE */
    size_t row_loss_len;
    float *lse;         /* each row's logsumexp of the (capped) logits */
    size_t lse_len;
    uint32_t *argmax;   /* each row's first argmax */
    size_t argmax_len;
} sk_ce_outputs;

/* What a call reports beyond the loss. */
typedef struct sk_ce_stats {
    double loss_f64;     /* the reduced loss in double precision, before rounding */
    double denominator;  /* MEAN's denominator: the target weights of the rows used (class
                            targets) or the number of rows (probability targets) */
    size_t rows_used;    /* rows not ignored */
    size_t correct;      /* rows whose argmax equals their label, when has_correct */
    float loss;          /* the reduced loss (the sum for SK_REDUCTION_NONE) */
    int32_t has_correct; /* 1 for class targets with an argmax output, else 0 */
} sk_ce_stats;

/* Fills *opts with the defaults. Returns SK_OK, SK_NULL_POINTER. */
sk_status sk_ce_options_default(sk_ce_options *opts);

/* Cross-entropy loss of logits ([rows, cols]) against class labels (targets: rows labels),
 * loss only (one read sweep). *loss (if loss is not NULL) receives the reduced loss. opts may be
 * NULL (defaults). Returns SK_ERROR_ZERO_DIM (cols == 0), SK_ERROR_NOT_MULTIPLE (logits_len %
 * cols), SK_ERROR_LENGTH_MISMATCH (targets_len != rows, opts->weight_len != cols,
 * opts->row_scale_len != rows), SK_ERROR_BAD_LABEL (a label outside 0..cols-1 that is not the
 * ignore_index; nothing is written), SK_ERROR_INVALID_OPTION (an option out of its domain, or
 * row_scale without SK_REDUCTION_NONE), SK_ERROR_MISSING_OUTPUT (SK_REDUCTION_NONE: use
 * sk_cross_entropy_ext with a row_loss output), and the common codes. */
sk_status sk_cross_entropy(const float *logits, size_t logits_len, const int64_t *targets,
                           size_t targets_len, size_t cols, const sk_ce_options *opts,
                           float *loss);

/* Loss and its gradient dL/dlogits into grad ([rows, cols], grad_len == logits_len); runs in
 * place when grad == logits. Status codes as sk_cross_entropy, and SK_ERROR_LENGTH_MISMATCH
 * for grad. */
sk_status sk_cross_entropy_fwd_bwd(const float *logits, size_t logits_len,
                                   const int64_t *targets, size_t targets_len, float *grad,
                                   size_t grad_len, size_t cols, const sk_ce_options *opts,
                                   float *loss);

/* Loss and gradient, the gradient written over the logits. Status codes as sk_cross_entropy. */
sk_status sk_cross_entropy_fwd_bwd_inplace(float *logits, size_t logits_len,
                                           const int64_t *targets, size_t targets_len,
                                           size_t cols, const sk_ce_options *opts, float *loss);

/* The general form: grad NULL with grad_len 0 (loss only), a separate [rows, cols] buffer, or
 * logits itself (in place); outputs NULL or per-row outputs; *stats (if stats is not NULL)
 * receives the loss and the counts. Status codes as sk_cross_entropy_fwd_bwd, with
 * SK_ERROR_LENGTH_MISMATCH for a per-row output that does not have rows entries and
 * SK_ERROR_MISSING_OUTPUT for SK_REDUCTION_NONE without outputs->row_loss. */
sk_status sk_cross_entropy_ext(const float *logits, size_t logits_len, const int64_t *targets,
                               size_t targets_len, float *grad, size_t grad_len, size_t cols,
                               const sk_ce_options *opts, const sk_ce_outputs *outputs,
                               sk_ce_stats *stats);

/* The four class-target forms above with int32_t labels. */
sk_status sk_cross_entropy_i32(const float *logits, size_t logits_len, const int32_t *targets,
                               size_t targets_len, size_t cols, const sk_ce_options *opts,
                               float *loss);
sk_status sk_cross_entropy_fwd_bwd_i32(const float *logits, size_t logits_len,
                                       const int32_t *targets, size_t targets_len, float *grad,
                                       size_t grad_len, size_t cols, const sk_ce_options *opts,
                                       float *loss);
sk_status sk_cross_entropy_fwd_bwd_inplace_i32(float *logits, size_t logits_len,
                                               const int32_t *targets, size_t targets_len,
                                               size_t cols, const sk_ce_options *opts,
                                               float *loss);
sk_status sk_cross_entropy_ext_i32(const float *logits, size_t logits_len,
                                   const int32_t *targets, size_t targets_len, float *grad,
                                   size_t grad_len, size_t cols, const sk_ce_options *opts,
                                   const sk_ce_outputs *outputs, sk_ce_stats *stats);

/* Cross-entropy against probability (soft) targets: probs is [rows, cols] like logits
 * (probs_len == logits_len); label smoothing mixes eps/C into them; MEAN divides by rows.
 * Loss only. Status codes as sk_cross_entropy (SK_ERROR_LENGTH_MISMATCH for probs; no
 * SK_ERROR_BAD_LABEL). */
sk_status sk_cross_entropy_probs(const float *logits, size_t logits_len, const float *probs,
                                 size_t probs_len, size_t cols, const sk_ce_options *opts,
                                 float *loss);

/* Probability targets, loss and gradient into grad (in place when grad == logits). */
sk_status sk_cross_entropy_probs_fwd_bwd(const float *logits, size_t logits_len,
                                         const float *probs, size_t probs_len, float *grad,
                                         size_t grad_len, size_t cols,
                                         const sk_ce_options *opts, float *loss);

/* Probability targets, the gradient written over the logits. */
sk_status sk_cross_entropy_probs_fwd_bwd_inplace(float *logits, size_t logits_len,
                                                 const float *probs, size_t probs_len,
                                                 size_t cols, const sk_ce_options *opts,
                                                 float *loss);

/* Probability targets, the general form (as sk_cross_entropy_ext; stats->has_correct is 0). */
sk_status sk_cross_entropy_probs_ext(const float *logits, size_t logits_len, const float *probs,
                                     size_t probs_len, float *grad, size_t grad_len, size_t cols,
                                     const sk_ce_options *opts, const sk_ce_outputs *outputs,
                                     sk_ce_stats *stats);

/* ------------------------------------------------------------------------------------------ */
/* Per-token log-probabilities and entropy (RL fine-tuning, distillation)                      */
/* ------------------------------------------------------------------------------------------ */
/*
 * For a row x of cols logits and its token t (tokens: one per row, rows = logits_len / cols),
 * temperature T and optional soft-cap c, with z = c tanh(x / c) (or x) and p = softmax(z / T):
 *   lse = ln sum_k exp(z_k / T),  logp = z_t / T - lse,  H = -sum_k p_k ln p_k
 *   d logp / dx_k = ([k == t] - p_k) / T,  dH / dx_k = -p_k (ln p_k + H) / T
 * (times 1 - (z_k / c)^2 with a cap). PyTorch: logp = log_softmax(z / T, -1).gather(-1, t),
 * H = Categorical(logits=z / T).entropy(). The gradient is that of
 * sum_r grads->logp[r] logp[r] + grads->entropy[r] H[r]. Rows whose token is the ignore_index
 * have logp = 0, H = 0 and a zero gradient row (their lse is still written). A row holding NaN
 * or +inf, or all -inf, gives NaN outputs and gradient; a -inf logit (a masked entry) has
 * p = 0. Every output is per row: bit-identical for any number of threads.
 */

/* Token log-prob options. ALWAYS fill with sk_token_options_default() first, then change
 * fields (a zeroed struct means temperature 0, an error, and no ignore_index). Passing NULL
 * for the options means the defaults. */
typedef struct sk_token_options {
    float temperature;        /* finite, >= FLT_MIN (default 1); divides every logit */
    float softcap;            /* finite, >= FLT_MIN; or 0 for none (default 0); applied first */
    int32_t has_ignore_index; /* nonzero (default 1): rows whose token is ignore_index are
                                 skipped */
    int64_t ignore_index;     /* the ignored token (default -100) */
} sk_token_options;

/* The forward's per-row outputs (each `rows` floats). logp is required; entropy and lse may be
 * NULL (with length 0). */
typedef struct sk_token_outputs {
    float *logp;        /* each row's log p(token) (0 for ignored rows) */
    size_t logp_len;
    float *entropy;     /* each row's entropy H (0 for ignored rows), or NULL */
    size_t entropy_len;
    float *lse;         /* each row's logsumexp of z / T (what sk_token_saved.lse takes), or
                           NULL */
    size_t lse_len;
} sk_token_outputs;

/* The upstream gradients dL/dlogp and dL/dH (each `rows` floats). Either may be NULL (with
 * length 0): zero. */
typedef struct sk_token_grads {
    const float *logp;    /* dL/dlogp[r], or NULL */
    size_t logp_len;
    const float *entropy; /* dL/dH[r], or NULL; needs sk_token_saved.entropy in a backward */
    size_t entropy_len;
} sk_token_grads;

/* What the backward needs from a forward over the same logits, tokens and options (each `rows`
 * floats): the lse output (required) and, when grads->entropy is given, the entropy output. */
typedef struct sk_token_saved {
    const float *lse;     /* the forward's outputs.lse */
    size_t lse_len;
    const float *entropy; /* the forward's outputs.entropy, or NULL */
    size_t entropy_len;
} sk_token_saved;

/* Fills *opts with the defaults. Returns SK_OK, SK_NULL_POINTER. */
sk_status sk_token_options_default(sk_token_options *opts);

/* Per-token log-probabilities of logits ([rows, cols]) at tokens (rows entries): logp, and H
 * and lse when outputs->entropy / outputs->lse are given (two read sweeps per row). outputs is
 * required; opts may be NULL (defaults). Returns SK_ERROR_ZERO_DIM (cols == 0),
 * SK_ERROR_NOT_MULTIPLE (logits_len % cols), SK_ERROR_LENGTH_MISMATCH (tokens_len or an output
 * length != rows), SK_ERROR_BAD_LABEL (a token outside 0..cols-1 that is not the ignore_index),
 * SK_ERROR_INVALID_OPTION (temperature or softcap out of its domain),
 * SK_ERROR_TOO_MANY_CLASSES, SK_NULL_POINTER (outputs), and the common codes. */
sk_status sk_token_logprobs(const float *logits, size_t logits_len, const int64_t *tokens,
                            size_t tokens_len, size_t cols, const sk_token_options *opts,
                            const sk_token_outputs *outputs);

/* The gradient dlogits ([rows, cols], dlogits_len == logits_len) from the forward's saved lse
 * (and entropy): one sweep per row. Runs in place when dlogits == logits. saved is required;
 * grads NULL means no upstream gradient (dlogits = 0). Status codes as sk_token_logprobs
 * (SK_ERROR_LENGTH_MISMATCH also for dlogits, a grads or a saved array), SK_NULL_POINTER
 * (saved), SK_ERROR_MISSING_OUTPUT (grads->entropy given without saved->entropy). */
sk_status sk_token_logprobs_backward(const float *logits, size_t logits_len,
                                     const int64_t *tokens, size_t tokens_len, float *dlogits,
                                     size_t dlogits_len, size_t cols,
                                     const sk_token_options *opts, const sk_token_saved *saved,
                                     const sk_token_grads *grads);

/* The backward, the gradient written over the logits. Status codes as
 * sk_token_logprobs_backward. */
sk_status sk_token_logprobs_backward_inplace(float *logits, size_t logits_len,
                                             const int64_t *tokens, size_t tokens_len,
                                             size_t cols, const sk_token_options *opts,
                                             const sk_token_saved *saved,
                                             const sk_token_grads *grads);

/* The forward (as sk_token_logprobs) and the gradient into dlogits in one call, for upstream
 * gradients known before the forward (three sweeps per row, one exp per element; the same
 * values as the forward then the backward, up to rounding). Runs in place when
 * dlogits == logits. grads NULL means no upstream gradient (dlogits = 0). Status codes as
 * sk_token_logprobs, and SK_ERROR_LENGTH_MISMATCH for dlogits and the grads arrays. */
sk_status sk_token_logprobs_fwd_bwd(const float *logits, size_t logits_len,
                                    const int64_t *tokens, size_t tokens_len, float *dlogits,
                                    size_t dlogits_len, size_t cols, const sk_token_options *opts,
                                    const sk_token_grads *grads, const sk_token_outputs *outputs);

/* Forward and gradient, the gradient written over the logits. Status codes as
 * sk_token_logprobs_fwd_bwd. */
sk_status sk_token_logprobs_fwd_bwd_inplace(float *logits, size_t logits_len,
                                            const int64_t *tokens, size_t tokens_len,
                                            size_t cols, const sk_token_options *opts,
                                            const sk_token_grads *grads,
                                            const sk_token_outputs *outputs);

/* The five forms above with int32_t tokens. */
sk_status sk_token_logprobs_i32(const float *logits, size_t logits_len, const int32_t *tokens,
                                size_t tokens_len, size_t cols, const sk_token_options *opts,
                                const sk_token_outputs *outputs);
sk_status sk_token_logprobs_backward_i32(const float *logits, size_t logits_len,
                                         const int32_t *tokens, size_t tokens_len,
                                         float *dlogits, size_t dlogits_len, size_t cols,
                                         const sk_token_options *opts,
                                         const sk_token_saved *saved,
                                         const sk_token_grads *grads);
sk_status sk_token_logprobs_backward_inplace_i32(float *logits, size_t logits_len,
                                                 const int32_t *tokens, size_t tokens_len,
                                                 size_t cols, const sk_token_options *opts,
                                                 const sk_token_saved *saved,
                                                 const sk_token_grads *grads);
sk_status sk_token_logprobs_fwd_bwd_i32(const float *logits, size_t logits_len,
                                        const int32_t *tokens, size_t tokens_len,
                                        float *dlogits, size_t dlogits_len, size_t cols,
                                        const sk_token_options *opts,
                                        const sk_token_grads *grads,
                                        const sk_token_outputs *outputs);
sk_status sk_token_logprobs_fwd_bwd_inplace_i32(float *logits, size_t logits_len,
                                                const int32_t *tokens, size_t tokens_len,
                                                size_t cols, const sk_token_options *opts,
                                                const sk_token_grads *grads,
                                                const sk_token_outputs *outputs);

/* ------------------------------------------------------------------------------------------ */
/* Vocabulary-sharded token log-probabilities (tensor / vocabulary parallelism)                */
/* ------------------------------------------------------------------------------------------ */
/*
 * Each process holds the logits of a range of classes (a shard: global classes
 * class_offset .. class_offset + cols - 1 of a vocabulary of `classes`; its logits are
 * [rows, cols], its tokens the GLOBAL tokens of the rows). The pipeline, per step:
 *   1. sk_token_shard_states: each shard's per-row states (sk_row_state, 8 doubles per row)
 *      and, into keep (the shard's gradient buffer, [rows, cols]), what its backward needs;
 *   2. exchange the states: MPI_Allgather of 8 * rows MPI_DOUBLEs, or
 *      torch.distributed.all_gather of a [rows, 8] float64 tensor (the library moves no
 *      bytes; any communication engine does);
 *   3. sk_row_states_merge the gathered states into one array (every shard exactly once);
 *   4. sk_row_states_finalize: every process gets the whole vocabulary's logp, and when asked
 *      H and lse (the same values as sk_token_logprobs, up to rounding);
 *   5. sk_token_shard_backward: each shard's own gradient, into the SAME buffer that step 1
 *      filled as keep (it is read, then overwritten by dlogits), from its own states and the
 *      finalized lse (and H): the columns of sk_token_logprobs_backward's gradient that belong
 *      to the shard (up to rounding). No collective is needed in the backward.
 * Options (temperature, soft-cap, ignore_index) must be the same in every call of a step.
 *
 * Semantics: a state holds, in units of z' = z / T, max = max z' over the range, sum =
 * sum exp(z' - max), dot = sum (z' - max) exp(z' - max), target = the token's z' when the
 * range holds it (else 0) and has_target = 1 when it does (else 0; merged: the count). The
 * merge is commutative bit for bit (a then b gives the bits of b then a), and associative up
 * to f64 rounding (a merge tree's shape moves the result by a few f64 ULP, far below the f32
 * outputs' rounding); a fixed split and order gives fixed bits for any number of threads.
 * sk_row_state_empty() is its identity. NaN and -inf as unsharded: a NaN or +inf logit in any
 * shard makes the row NaN; a shard of only -inf logits contributes nothing; a row that is -inf
 * in every shard is NaN. Rows whose token is the ignore_index have the empty state in every shard,
 * logp = 0, H = 0, a NaN lse (unlike sk_token_logprobs, which writes their lse) and a zero
 * gradient row. A shard of no classes (cols == 0, logits_len == keep_len == 0) is valid: its
 * states are empty. The states are f64 and must be exchanged as such (rounding them to f32
 * loses accuracy).
 */

/* A row's partial reduction over a range of classes (see above). Eight doubles, no padding:
 * an array of `rows` states is 8 * rows doubles. The layout is the Rust crate's RowState. The
 * last three fields carry the vocabulary-sharded cross-entropy (sk_cross_entropy_shard_states,
 * below); the token functions here leave them 0. */
typedef struct sk_row_state {
    double max;        /* max z' over the range (-INFINITY: empty or all -inf); a NaN or +inf
                          logit makes max, or sum and dot (by tier), NaN */
    double sum;        /* sum exp(z' - max) */
    double dot;        /* sum (z' - max) exp(z' - max) */
    double target;     /* the token's z' when the range holds it, else 0 */
    double has_target; /* 1 when the range holds the token, else 0 (merged: the count) */
    double wdot;       /* cross-entropy: sum w_c (z_c - max) with label smoothing, else 0 */
    double wsum;       /* cross-entropy: sum w_c over the range (0 in token states) */
    double target_weight; /* cross-entropy: w_t when the range holds the target, else 0 */
} sk_row_state;

/* The state of an empty range: max = -INFINITY, the other fields 0; the identity of the merge
 * (to start an accumulator, or as the identity of a custom MPI reduction). Cannot fail. */
sk_row_state sk_row_state_empty(void);

/* The per-row states of a shard's logits ([rows, cols], rows = tokens_len; global classes
 * class_offset .. class_offset + cols - 1 of `classes`) into states (rows entries), and into
 * keep (keep_len == logits_len) what sk_token_shard_backward reads from its dlogits: pass the
 * same buffer there, unchanged. Two read sweeps, one exp per element. opts may be NULL
 * (defaults). Returns SK_ERROR_INVALID_OPTION (the shard leaves the vocabulary:
 * class_offset + cols > classes; or temperature or softcap out of its domain),
 * SK_ERROR_NOT_MULTIPLE (logits_len % cols), SK_ERROR_LENGTH_MISMATCH (tokens_len, states_len
 * or keep_len; with cols == 0, a nonzero logits_len or keep_len), SK_ERROR_BAD_LABEL (a token
 * outside 0..classes-1 that is not the ignore_index), SK_ERROR_TOO_MANY_CLASSES (classes), and
 * the common codes. */
sk_status sk_token_shard_states(const float *logits, size_t logits_len, const int64_t *tokens,
                                size_t tokens_len, float *keep, size_t keep_len, size_t cols,
                                size_t class_offset, size_t classes,
                                const sk_token_options *opts, sk_row_state *states,
                                size_t states_len);

/* Merges other into acc, row by row (acc[r] = merge(acc[r], other[r])). Commutative: merging
 * b into a gives the bits of merging a into b. acc and other must not overlap. Returns
 * SK_ERROR_LENGTH_MISMATCH (other_len != acc_len), SK_NULL_POINTER, SK_MISALIGNED,
 * SK_OVERLAP, SK_ERROR_SIZE_OVERFLOW, SK_PANIC. */
sk_status sk_row_states_merge(sk_row_state *acc, size_t acc_len, const sk_row_state *other,
                              size_t other_len);

/* The whole vocabulary's per-row outputs from states merged over every shard (rows =
 * states_len): logp, and H and lse when outputs->entropy / outputs->lse are given (lse and H
 * are what sk_token_shard_backward takes as saved). outputs is required; opts may be NULL
 * (defaults; only its ignore_index is used here, the temperature and cap are in the states).
 * Returns SK_ERROR_INVALID_OPTION (a row that is not ignored holds its token other than
 * exactly once: a shard is missing or was merged twice), SK_ERROR_LENGTH_MISMATCH (tokens_len
 * or an output length != states_len), SK_ERROR_BAD_LABEL (a token outside 0..classes-1 that
 * is not the ignore_index), SK_NULL_POINTER (outputs), and the common codes. */
sk_status sk_row_states_finalize(const sk_row_state *states, size_t states_len,
                                 const int64_t *tokens, size_t tokens_len, size_t classes,
                                 const sk_token_options *opts, const sk_token_outputs *outputs);

/* A shard's gradient of sum_r grads->logp[r] logp[r] + grads->entropy[r] H[r] (the whole
 * vocabulary's logp and H) with respect to its logits, into dlogits ([rows, cols],
 * dlogits_len == logits_len), which on entry holds what sk_token_shard_states wrote to its
 * keep for the same logits, tokens, shard and options (it is the same buffer). states are this
 * shard's own (NOT the merged ones), saved the finalized lse (and H, required when
 * grads->entropy is given). One sweep, no exp (with a soft-cap, one exp per element). saved is
 * required; grads NULL means no upstream gradient (dlogits = 0). Status codes as
 * sk_token_shard_states (SK_ERROR_LENGTH_MISMATCH also for dlogits, a saved or a grads array),
 * SK_NULL_POINTER (saved), SK_ERROR_MISSING_OUTPUT (grads->entropy without saved->entropy).
 * A failed call leaves dlogits (the kept values) as it was. */
sk_status sk_token_shard_backward(const float *logits, size_t logits_len, const int64_t *tokens,
                                  size_t tokens_len, float *dlogits, size_t dlogits_len,
                                  size_t cols, size_t class_offset, size_t classes,
                                  const sk_token_options *opts, const sk_row_state *states,
                                  size_t states_len, const sk_token_saved *saved,
                                  const sk_token_grads *grads);

/* The three forms above that take tokens, with int32_t tokens. */
sk_status sk_token_shard_states_i32(const float *logits, size_t logits_len,
                                    const int32_t *tokens, size_t tokens_len, float *keep,
                                    size_t keep_len, size_t cols, size_t class_offset,
                                    size_t classes, const sk_token_options *opts,
                                    sk_row_state *states, size_t states_len);
sk_status sk_row_states_finalize_i32(const sk_row_state *states, size_t states_len,
                                     const int32_t *tokens, size_t tokens_len, size_t classes,
                                     const sk_token_options *opts,
                                     const sk_token_outputs *outputs);
sk_status sk_token_shard_backward_i32(const float *logits, size_t logits_len,
                                      const int32_t *tokens, size_t tokens_len, float *dlogits,
                                      size_t dlogits_len, size_t cols, size_t class_offset,
                                      size_t classes, const sk_token_options *opts,
                                      const sk_row_state *states, size_t states_len,
                                      const sk_token_saved *saved,
                                      const sk_token_grads *grads);

/* ------------------------------------------------------------------------------------------ */
/* Vocabulary-sharded cross-entropy (tensor / vocabulary parallelism)                          */
/* ------------------------------------------------------------------------------------------ */
/*
 * The loss and gradient of sk_cross_entropy_ext (class targets) when each process holds the
 * logits of a shard of the vocabulary (global classes class_offset .. class_offset + cols - 1
 * of `classes`; its logits are [rows, cols], its targets the GLOBAL class of each row), with
 * the same sk_row_state as the token shards above. The pipeline, per step:
 *   1. sk_cross_entropy_shard_states: each shard's per-row states and, into keep (the shard's
 *      gradient buffer, [rows, cols]), what its backward needs; one exp per element;
 *   2. exchange the states: MPI_Allgather of 8 * rows MPI_DOUBLEs, or
 *      torch.distributed.all_gather of a [rows, 8] float64 tensor (the library moves no
 *      bytes);
 *   3. sk_row_states_merge the gathered states into one array (every shard exactly once);
 *   4. sk_ce_states_finalize: every process gets the whole vocabulary's loss (reduced as
 *      opts->reduction says), and when asked each row's loss and lse and an sk_ce_stats;
 *   5. sk_cross_entropy_shard_backward: each shard's own gradient columns, into the SAME
 *      buffer that step 1 filled as keep (it is read, then overwritten by dlogits), from the
 *      shard's own states and the merged ones: the columns of sk_cross_entropy_ext's gradient
 *      that belong to the shard (up to rounding). No exp (with a soft-cap, one per element), no
 *      collective.
 *
 * Options: one sk_ce_options for every call of a step, EXCEPT opts->weight: in steps 1 and 5
 * it is THIS shard's class weights (cols floats, weight_len == cols; NULL for none), in step 4
 * it is not read (the states carry the weight sums and the target weights; any weight_len is
 * accepted there). Every other option shards: ignore_index, label smoothing (PyTorch's
 * formula over the whole vocabulary: eps / classes), z-loss, soft-cap, the reductions (MEAN
 * divides by the sum of the target weights of the rows used), all_ignored, scale and
 * row_scale (SK_REDUCTION_NONE only, rows floats; used by the backward). The results equal the
 * unsharded call's up to the f64 rounding of the merge (the loss) and the f32 rounding of the
 * gradient. Rows whose target is the ignore_index have the empty state in every shard, loss 0,
 * a NaN lse (unlike sk_cross_entropy_ext, which writes their lse) and a zero gradient row. A
 * shard of no classes (cols == 0, logits_len == keep_len == dlogits_len == 0) is valid: its
 * states are empty but for wsum (0). No argmax is available from states. A NaN or +inf logit
 * in any shard makes the row (and a MEAN or SUM loss) NaN, as unsharded.
 */

/* The cross-entropy states of a shard's logits ([rows, cols], rows = targets_len) into states
 * (rows entries), and into keep (keep_len == logits_len) what sk_cross_entropy_shard_backward
 * reads from its dlogits: pass the same buffer there, unchanged. opts may be NULL (defaults);
 * opts->weight is this shard's cols class weights. Returns SK_ERROR_INVALID_OPTION (the shard
 * leaves the vocabulary: class_offset + cols > classes; or an option out of its domain, or
 * row_scale without SK_REDUCTION_NONE), SK_ERROR_NOT_MULTIPLE (logits_len % cols),
 * SK_ERROR_LENGTH_MISMATCH (targets_len, states_len or keep_len; opts->weight_len != cols,
 * opts->row_scale_len != rows; with cols == 0, a nonzero logits_len or keep_len),
 * SK_ERROR_BAD_LABEL (a target outside 0..classes-1 that is not the ignore_index),
 * SK_ERROR_TOO_MANY_CLASSES (classes), and the common codes. Nothing is written on an error. */
sk_status sk_cross_entropy_shard_states(const float *logits, size_t logits_len,
                                        const int64_t *targets, size_t targets_len, float *keep,
                                        size_t keep_len, size_t cols, size_t class_offset,
                                        size_t classes, const sk_ce_options *opts,
                                        sk_row_state *states, size_t states_len);

/* The whole vocabulary's cross-entropy from states merged over every shard (rows =
 * states_len): *loss (if loss is not NULL) receives the reduced loss (the sum for
 * SK_REDUCTION_NONE), *stats (if stats is not NULL) the loss and the counts (has_correct 0);
 * outputs may be NULL, or give row_loss (required by SK_REDUCTION_NONE; 0 for ignored rows)
 * and lse (NaN for ignored rows); outputs->argmax must be NULL. opts may be NULL (defaults;
 * opts->weight is not read). Returns SK_ERROR_INVALID_OPTION (a row that is not ignored holds
 * its target other than exactly once: a shard is missing or was merged twice; an argmax
 * output; an option out of its domain), SK_ERROR_LENGTH_MISMATCH (targets_len or an output
 * length != states_len, opts->row_scale_len != rows), SK_ERROR_BAD_LABEL (a target outside
 * 0..classes-1 that is not the ignore_index), SK_ERROR_MISSING_OUTPUT (SK_REDUCTION_NONE
 * without outputs->row_loss), SK_ERROR_TOO_MANY_CLASSES (classes), and the common codes.
 * Nothing is written on an error. */
sk_status sk_ce_states_finalize(const sk_row_state *states, size_t states_len,
                                const int64_t *targets, size_t targets_len, size_t classes,
                                const sk_ce_options *opts, const sk_ce_outputs *outputs,
                                sk_ce_stats *stats, float *loss);

/* A shard's cross-entropy gradient dL/dlogits (this shard's columns of sk_cross_entropy_ext's,
 * with its reduction, scale and row_scale) into dlogits ([rows, cols], dlogits_len ==
 * logits_len), which on entry holds what sk_cross_entropy_shard_states wrote to its keep for
 * the same logits, targets, shard and options (it is the same buffer). own are this shard's
 * own states (own_len == rows), merged the states merged over every shard (merged_len ==
 * rows; the array that sk_ce_states_finalize read). opts as sk_cross_entropy_shard_states.
 * Status codes as sk_cross_entropy_shard_states (SK_ERROR_LENGTH_MISMATCH also for dlogits,
 * own and merged), and SK_ERROR_INVALID_OPTION when a row of merged that is not ignored holds
 * its target other than exactly once. A failed call leaves dlogits (the kept values) as it
 * was. */
sk_status sk_cross_entropy_shard_backward(const float *logits, size_t logits_len,
                                          const int64_t *targets, size_t targets_len,
                                          float *dlogits, size_t dlogits_len, size_t cols,
                                          size_t class_offset, size_t classes,
                                          const sk_ce_options *opts, const sk_row_state *own,
                                          size_t own_len, const sk_row_state *merged,
                                          size_t merged_len);

/* The three forms above with int32_t targets. */
sk_status sk_cross_entropy_shard_states_i32(const float *logits, size_t logits_len,
                                            const int32_t *targets, size_t targets_len,
                                            float *keep, size_t keep_len, size_t cols,
                                            size_t class_offset, size_t classes,
                                            const sk_ce_options *opts, sk_row_state *states,
                                            size_t states_len);
sk_status sk_ce_states_finalize_i32(const sk_row_state *states, size_t states_len,
                                    const int32_t *targets, size_t targets_len, size_t classes,
                                    const sk_ce_options *opts, const sk_ce_outputs *outputs,
                                    sk_ce_stats *stats, float *loss);
sk_status sk_cross_entropy_shard_backward_i32(const float *logits, size_t logits_len,
                                              const int32_t *targets, size_t targets_len,
                                              float *dlogits, size_t dlogits_len, size_t cols,
                                              size_t class_offset, size_t classes,
                                              const sk_ce_options *opts,
                                              const sk_row_state *own, size_t own_len,
                                              const sk_row_state *merged, size_t merged_len);

/* ------------------------------------------------------------------------------------------ */
/* Output-layer updates                                                                        */
/* ------------------------------------------------------------------------------------------ */
/*
 * The weight matrix W (and dW) is [rows = C classes, cols = D features], row-major with leading
 * dimension ld >= cols (row r starts at r * ld); its array holds rows*ld floats, or
 * (rows-1)*ld + cols (the last row's padding left out); the padding is never touched. The batch
 * matrices are dense: delta (the output error, p - y) [B, C], activations a [B, D], logits
 * z [B, C]. B is taken from the lengths. Common extra codes for W: SK_ERROR_LEADING_DIM
 * (ld < cols), SK_ERROR_MATRIX_LENGTH (w_len fits neither form), SK_ERROR_SIZE_OVERFLOW.
 */

/* Rank-1 update W += alpha x y^T: W[c,j] += alpha x[c] y[j]. x: C = x_len floats, y: D = y_len
 * floats, w: [C, D] with leading dimension ld. alpha == 0 returns at once. Returns the W codes
 * and the common codes. */
sk_status sk_rank1_update(float alpha, const float *x, size_t x_len, const float *y,
                          size_t y_len, float *w, size_t w_len, size_t ld);

/* Rank-k update W += alpha delta^T A: W[c,:] += alpha sum_i delta[i,c] A[i,:]. delta: [k, rows],
 * a: [k, cols], w: [rows, cols] with ld. Returns the W codes, SK_ERROR_NOT_MULTIPLE (delta_len
 * % rows), SK_ERROR_LENGTH_MISMATCH (a is not [k, cols]), and the common codes. */
sk_status sk_rank_k_update(float alpha, const float *delta, size_t delta_len, const float *a,
                           size_t a_len, float *w, size_t w_len, size_t rows, size_t cols,
                           size_t ld);

/* Weight gradient dW = beta dW + alpha delta^T A. delta: [B, rows], a: [B, cols], dw: [rows,
 * cols] with ld. beta == 0 overwrites dW without reading it. Status codes as sk_rank_k_update. */
sk_status sk_weight_grad(float alpha, const float *delta, size_t delta_len, const float *a,
                         size_t a_len, float beta, float *dw, size_t dw_len, size_t rows,
                         size_t cols, size_t ld);

/* Bias gradient db = beta db + alpha sum_rows delta. delta: [B, C], db: C = db_len floats.
 * Returns SK_ERROR_NOT_MULTIPLE (delta_len % C), SK_ERROR_LENGTH_MISMATCH (C == 0 with a
 * non-empty delta), and the common codes. */
sk_status sk_bias_grad(float alpha, const float *delta, size_t delta_len, float beta, float *db,
                       size_t db_len);

/* Plain SGD step on the output layer: W -= (lr / B) delta^T A and, if bias is given (rows
 * floats; NULL with bias_len 0 for none), bias -= (lr / B) sum_rows delta. delta: [B, rows]
 * per-sample errors, a: [B, cols], w: [rows, cols] with ld. Status codes as sk_rank_k_update,
 * SK_ERROR_LENGTH_MISMATCH (bias_len != rows), SK_ERROR_INVALID_OPTION (lr < 0 or not
 * finite). */
sk_status sk_sgd_step(float lr, const float *delta, size_t delta_len, const float *a,
                      size_t a_len, float *w, size_t w_len, size_t rows, size_t cols, size_t ld,
                      float *bias, size_t bias_len);

/* Linear forward Z = A W^T + b: z[n,c] = sum_j a[n,j] W[c,j] + b[c]. a: [B, cols], w: [rows,
 * cols] with ld, b: rows floats or NULL (b_len 0), z: [B, rows] (overwritten). Returns the W
 * codes, SK_ERROR_NOT_MULTIPLE (a_len % cols), SK_ERROR_LENGTH_MISMATCH (z, b), and the common
 * codes. */
sk_status sk_linear_forward(const float *a, size_t a_len, const float *w, size_t w_len,
                            size_t rows, size_t cols, size_t ld, const float *b, size_t b_len,
                            float *z, size_t z_len);

/* Linear backward to the input dA = delta W: da[n,j] = sum_c delta[n,c] W[c,j]. delta: [B,
 * rows], w: [rows, cols] with ld, da: [B, cols] (overwritten). Status codes as
 * sk_linear_forward (delta for a, da for z). */
sk_status sk_linear_backward_input(const float *delta, size_t delta_len, const float *w,
                                   size_t w_len, size_t rows, size_t cols, size_t ld, float *da,
                                   size_t da_len);

/* ------------------------------------------------------------------------------------------ */
/* Fused linear cross-entropy: loss and gradients of softmax(A W^T + b) without the logits     */
/* ------------------------------------------------------------------------------------------ */
/*
 * The cross-entropy of the logits Z = A W^T + b (z[n,c] = sum_j a[n,j] W[c,j] + b[c]) and, if
 * asked, its gradients dA = G W, dW = G^T A and db = sum_rows G (G = dL/dZ), computed in chunks
 * of rows (and, for many classes, blocks of classes in two passes) so that the [B, C] logits
 * never exist in memory. The loss, the reduction, the gradients' scale and every sk_ce_options
 * field mean what they mean for sk_cross_entropy_ext on Z; the results equal the unfused
 * composition (sk_linear_forward, sk_cross_entropy_ext, sk_linear_backward_input,
 * sk_weight_grad, sk_bias_grad) up to float rounding, and are bit-identical for any number of
 * threads.
 */

/* Chunking and accumulation. ALWAYS fill with sk_linear_ce_options_default() first (it writes
 * all zeros: the defaults); passing NULL means the defaults. */
typedef struct sk_linear_ce_options {
    size_t chunk_rows;    /* rows per chunk; 0: automatic (from chunk_bytes; the default) */
    size_t chunk_classes; /* classes per block; a value below the class count selects the
                             two-pass class-chunked mode (class labels only); 0: automatic:
                             whole rows if chunk_rows is given or the budget holds at least
                             min(B, 96) rows of logits (probability targets: always), else
                             class blocks of at least min(C, 1024) classes */
    size_t chunk_bytes;   /* budget in bytes for one chunk of logits; 0: 16 MiB (default) */
    int32_t accumulate;   /* nonzero: dw and db are added to (as PyTorch accumulates .grad);
                             0 (default): overwritten. da is always overwritten. */
} sk_linear_ce_options;

/* Fills *opts with the defaults (all zeros). Returns SK_OK, SK_NULL_POINTER. */
sk_status sk_linear_ce_options_default(sk_linear_ce_options *opts);

/* Fused linear cross-entropy against class labels.
 *   a:       [B, cols] activations (B = a_len / cols; when cols == 0, B = targets_len)
 *   w:       [rows, cols] weights with leading dimension ld (rows = C classes, cols = D)
 *   bias:    rows floats, or NULL with bias_len 0 for none
 *   targets: B labels in 0..rows-1 or opts->ignore_index
 *   opts:    cross-entropy options (NULL: the defaults); lce_opts: chunking (NULL: defaults)
 *   da:      [B, cols] gradient dL/da, or NULL with da_len 0 (not computed)
 *   dw:      dL/dW in w's layout ([rows, cols] with ld; dw_len rows*ld or (rows-1)*ld+cols;
 *            the padding is never touched), or NULL with dw_len 0
 *   db:      rows floats dL/db, or NULL with db_len 0
 *   outputs: per-row loss / logsumexp / argmax (NULL: none); row_loss required by
 *            SK_REDUCTION_NONE
 *   stats:   receives the loss and the counts (NULL: not written)
 * With no gradient asked for, the call computes the loss only. No output may overlap another
 * argument.
 * Returns SK_ERROR_ZERO_DIM (rows == 0), the W codes (for w and dw), SK_ERROR_NOT_MULTIPLE
 * (a_len % cols), SK_ERROR_LENGTH_MISMATCH (a, bias, targets, da, db, a per-row output,
 * opts->weight_len, opts->row_scale_len), SK_ERROR_BAD_LABEL (nothing is written),
 * SK_ERROR_INVALID_OPTION (an sk_ce_options field out of its domain), SK_ERROR_MISSING_OUTPUT
 * (SK_REDUCTION_NONE without outputs->row_loss), SK_ERROR_SIZE_OVERFLOW (also: a chunk of
 * logits that cannot be allocated), and the common codes. */
sk_status sk_linear_cross_entropy(const float *a, size_t a_len, const float *w, size_t w_len,
                                  size_t rows, size_t cols, size_t ld, const float *bias,
                                  size_t bias_len, const int64_t *targets, size_t targets_len,
                                  const sk_ce_options *opts,
                                  const sk_linear_ce_options *lce_opts, float *da,
                                  size_t da_len, float *dw, size_t dw_len, float *db,
                                  size_t db_len, const sk_ce_outputs *outputs,
                                  sk_ce_stats *stats);

/* sk_linear_cross_entropy against probability (soft) targets: probs is [B, rows]
 * (probs_len == B * rows; when cols == 0, B = probs_len / rows); MEAN divides by B;
 * stats->has_correct is 0. Class blocks need class labels: lce_opts->chunk_classes below rows
 * returns SK_ERROR_INVALID_OPTION (automatic chunking gives probability targets whole rows,
 * at least one per chunk, whatever chunk_bytes). Status codes as sk_linear_cross_entropy (no
 * SK_ERROR_BAD_LABEL; SK_ERROR_NOT_MULTIPLE for probs when cols == 0). */
sk_status sk_linear_cross_entropy_probs(const float *a, size_t a_len, const float *w,
                                        size_t w_len, size_t rows, size_t cols, size_t ld,
                                        const float *bias, size_t bias_len, const float *probs,
                                        size_t probs_len, const sk_ce_options *opts,
                                        const sk_linear_ce_options *lce_opts, float *da,
                                        size_t da_len, float *dw, size_t dw_len, float *db,
                                        size_t db_len, const sk_ce_outputs *outputs,
                                        sk_ce_stats *stats);

/* ------------------------------------------------------------------------------------------ */
/* SGD optimizer (torch.optim.SGD: momentum, dampening, weight decay, Nesterov)                */
/* ------------------------------------------------------------------------------------------ */

/* Optimizer options. Fill with sk_sgd_options_default() first. */
typedef struct sk_sgd_options {
    float lr;           /* learning rate, finite, >= 0 (default 1e-3) */
    float momentum;     /* finite, >= 0 (default 0: no velocity buffer) */
    float dampening;    /* finite (default 0) */
    float weight_decay; /* finite, >= 0 (default 0) */
    int32_t nesterov;   /* nonzero: Nesterov momentum (needs momentum > 0, dampening 0) */
} sk_sgd_options;

/* An opaque optimizer with its velocity buffers, bound to the tier current at its creation. */
typedef struct sk_sgd_optimizer sk_sgd_optimizer;

/* Fills *opts with PyTorch's defaults. Returns SK_OK, SK_NULL_POINTER. */
sk_status sk_sgd_options_default(sk_sgd_options *opts);

/* Creates an optimizer (opts NULL: the defaults); *out receives it, or NULL on failure (except
 * when out itself is unusable: NULL, misaligned, or overlapping *opts, SK_OVERLAP; *out is then
 * not written). Free it with sk_sgd_optimizer_free. Returns SK_OK, SK_NULL_POINTER (out),
 * SK_MISALIGNED, SK_OVERLAP, SK_ERROR_INVALID_OPTION, SK_ERROR_BAD_ISA_ENV, SK_PANIC. */
sk_status sk_sgd_optimizer_create(const sk_sgd_options *opts, sk_sgd_optimizer **out);

/* Frees an optimizer; NULL does nothing. A pointer that is not a live optimizer (one already
 * freed, while its memory is not reused; see CONVENTIONS) frees nothing and stores an
 * SK_BAD_HANDLE message. */
void sk_sgd_optimizer_free(sk_sgd_optimizer *opt);

/* One step from the batch error: grad = (1/B) delta^T A for W and (1/B) sum_rows delta for the
 * bias (if given), then the torch.optim.SGD update. Arguments as sk_sgd_step. Status codes as
 * sk_sgd_step, SK_NULL_POINTER (opt), SK_BAD_HANDLE, SK_ERROR_STATE_SHAPE (W or bias of
 * another shape than the state's). */
sk_status sk_sgd_optimizer_step(sk_sgd_optimizer *opt, const float *delta, size_t delta_len,
                                const float *a, size_t a_len, float *w, size_t w_len,
                                size_t rows, size_t cols, size_t ld, float *bias,
                                size_t bias_len);

/* One step of W ([rows, cols] with ld) with a dense [rows, cols] gradient you computed. Returns
 * the W codes, SK_ERROR_LENGTH_MISMATCH (grad), SK_ERROR_STATE_SHAPE, SK_NULL_POINTER,
 * SK_BAD_HANDLE, and the common codes. */
sk_status sk_sgd_optimizer_apply_grad(sk_sgd_optimizer *opt, float *w, size_t w_len, size_t rows,
                                      size_t cols, size_t ld, const float *grad,
                                      size_t grad_len);

/* One step of a bias with a gradient you computed (grad_len == bias_len). Returns
 * SK_ERROR_LENGTH_MISMATCH, SK_ERROR_STATE_SHAPE, SK_NULL_POINTER, SK_BAD_HANDLE, and the
 * common codes. */
sk_status sk_sgd_optimizer_apply_bias_grad(sk_sgd_optimizer *opt, float *bias, size_t bias_len,
                                           const float *grad, size_t grad_len);

/* Changes the learning rate, keeping the state. Returns SK_OK, SK_NULL_POINTER,
 * SK_BAD_HANDLE, SK_ERROR_INVALID_OPTION. */
sk_status sk_sgd_optimizer_set_lr(sk_sgd_optimizer *opt, float lr);

/* Forgets the state (velocities, shape, step count). Returns SK_OK, SK_NULL_POINTER,
 * SK_BAD_HANDLE. */
sk_status sk_sgd_optimizer_reset(sk_sgd_optimizer *opt);

/* *steps receives the steps taken since creation or the last reset. Returns SK_OK,
 * SK_NULL_POINTER, SK_MISALIGNED, SK_BAD_HANDLE, SK_OVERLAP (steps in the optimizer's
 * memory). */
sk_status sk_sgd_optimizer_steps(sk_sgd_optimizer *opt, uint64_t *steps);

/* *velocity and *len receive W's velocity buffer (dense [rows, cols], owned by the optimizer,
 * valid until its next call) once a momentum step has run, else NULL and 0. Returns SK_OK,
 * SK_NULL_POINTER, SK_MISALIGNED, SK_BAD_HANDLE, SK_OVERLAP (velocity and len overlapping each
 * other or the optimizer's memory). */
sk_status sk_sgd_optimizer_velocity(sk_sgd_optimizer *opt, const float **velocity, size_t *len);

/* ------------------------------------------------------------------------------------------ */
/* Output layer: z = W a + b, softmax cross-entropy, SGD - one call per batch                  */
/* ------------------------------------------------------------------------------------------ */

/* An opaque output layer: weights [classes, inputs], bias [classes], an SGD optimizer and a
 * workspace, bound to the tier current at its creation. */
typedef struct sk_output_layer sk_output_layer;

/* Creates a layer with zero weights and bias (opts NULL: sk_sgd_options defaults; train_step's
 * lr replaces opts->lr). *out receives it, or NULL on failure (except when out itself is
 * unusable: NULL, misaligned, or overlapping *opts, SK_OVERLAP; *out is then not written).
 * Returns SK_OK, SK_NULL_POINTER (out), SK_MISALIGNED, SK_OVERLAP, SK_ERROR_ZERO_DIM (inputs or
 * classes 0), SK_ERROR_SIZE_OVERFLOW, SK_ERROR_INVALID_OPTION, SK_ERROR_BAD_ISA_ENV,
 * SK_PANIC. */
sk_status sk_output_layer_create(size_t inputs, size_t classes, const sk_sgd_options *opts,
                                 sk_output_layer **out);

/* Frees a layer (and the buffers sk_output_layer_weights/_bias gave); NULL does nothing. A
 * pointer that is not a live layer (one already freed, while its memory is not reused; see
 * CONVENTIONS) frees nothing and stores an SK_BAD_HANDLE message. */
void sk_output_layer_free(sk_output_layer *layer);

/* Xavier/Glorot-uniform weights U(-r, r), r = sqrt(6 / (inputs + classes)), from seed
 * (deterministic); zero bias. Returns SK_OK, SK_NULL_POINTER, SK_BAD_HANDLE. */
sk_status sk_output_layer_init_xavier(sk_output_layer *layer, uint64_t seed);

/* *inputs and *classes (either may be NULL) receive the shape. Returns SK_OK, SK_NULL_POINTER,
 * SK_MISALIGNED, SK_BAD_HANDLE, SK_OVERLAP (inputs and classes overlapping each other or the
 * layer's memory). */
sk_status sk_output_layer_shape(sk_output_layer *layer, size_t *inputs, size_t *classes);

/* *weights and *len receive the weight buffer ([classes, inputs] row-major, len = classes *
 * inputs), owned by the layer: read or write it between calls; valid until the layer is freed.
 * Returns SK_OK, SK_NULL_POINTER, SK_MISALIGNED, SK_BAD_HANDLE, SK_OVERLAP (weights and len
 * overlapping each other or the layer's memory). */
sk_status sk_output_layer_weights(sk_output_layer *layer, float **weights, size_t *len);

/* *bias and *len receive the bias buffer (classes floats), as sk_output_layer_weights. */
sk_status sk_output_layer_bias(sk_output_layer *layer, float **bias, size_t *len);

/* *steps receives the training steps taken. Returns SK_OK, SK_NULL_POINTER, SK_MISALIGNED,
 * SK_BAD_HANDLE, SK_OVERLAP (steps in the layer's memory). */
sk_status sk_output_layer_steps(sk_output_layer *layer, uint64_t *steps);

/* z = a W^T + b for a batch a ([B, inputs]) into z ([B, classes]). Returns SK_ERROR_NOT_MULTIPLE
 * (a_len % inputs), SK_ERROR_LENGTH_MISMATCH (z), SK_NULL_POINTER (layer), SK_BAD_HANDLE, and
 * the common codes. */
sk_status sk_output_layer_forward(sk_output_layer *layer, const float *a, size_t a_len, float *z,
                                  size_t z_len);

/* The predicted class (first argmax of the logits) of each sample of a ([B, inputs]) into out
 * (B entries). Returns SK_ERROR_NOT_MULTIPLE, SK_ERROR_LENGTH_MISMATCH (out_len != B),
 * SK_NULL_POINTER (layer), SK_BAD_HANDLE, and the common codes. */
sk_status sk_output_layer_predict(sk_output_layer *layer, const float *a, size_t a_len,
                                  uint32_t *out, size_t out_len);

/* One training step on a batch a ([B, inputs]) with labels targets (B entries) and learning
 * rate lr: forward, mean cross-entropy (ignore_index -100) with its gradient, SGD update of W
 * and b. *loss (if loss is not NULL) receives the batch's mean loss before the update. On an
 * error the layer is unchanged. Returns SK_ERROR_NOT_MULTIPLE, SK_ERROR_LENGTH_MISMATCH
 * (targets_len != B), SK_ERROR_BAD_LABEL, SK_ERROR_INVALID_OPTION (lr < 0 or not finite),
 * SK_NULL_POINTER (layer), SK_BAD_HANDLE, and the common codes. */
sk_status sk_output_layer_train_step(sk_output_layer *layer, const float *a, size_t a_len,
                                     const int64_t *targets, size_t targets_len, float lr,
                                     float *loss);

/* sk_output_layer_train_step with int32_t labels. */
sk_status sk_output_layer_train_step_i32(sk_output_layer *layer, const float *a, size_t a_len,
                                         const int32_t *targets, size_t targets_len, float lr,
                                         float *loss);

/* A training step with cross-entropy options (opts NULL: defaults; reduction MEAN or SUM), per-
 * row outputs (outputs NULL: none; argmax gives stats->correct, the batch accuracy), da =
 * dL/da ([B, inputs], computed with the weights before the update, or NULL with da_len 0) for
 * the layers below, and stats (NULL: none). Status codes as sk_output_layer_train_step and
 * sk_cross_entropy_ext; SK_ERROR_INVALID_OPTION for SK_REDUCTION_NONE. */
sk_status sk_output_layer_train_step_ext(sk_output_layer *layer, const float *a, size_t a_len,
                                         const int64_t *targets, size_t targets_len, float lr,
                                         const sk_ce_options *opts, const sk_ce_outputs *outputs,
                                         float *da, size_t da_len, sk_ce_stats *stats);

/* ------------------------------------------------------------------------------------------ */
/* Testing hook                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* For tests of the boundary only: panics inside the library on purpose and returns SK_PANIC
 * (the panic is caught; a message is printed to stderr by Rust's panic hook and stored for
 * sk_last_error_message). */
sk_status sk_debug_panic(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SOFTMAX_KERNELS_H */
