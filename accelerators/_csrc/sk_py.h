/*
 * Declarations shared by the translation units that face Python (everything using the CPython
 * API): variant dispatch, argument buffers and scratch memory, the SparseMatrix type, the
 * per-call plan shared by spmm and spmm_int8, the output-pass epilogues, and the entry points
 * listed in the method table of sk_module.c. The kernels themselves only see sk_common.h.
 */
#ifndef SK_PY_H
#define SK_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "sk_common.h"

/* ---- variants (sk_module.c) --------------------------------------------------------- */
enum { V_SCALAR = 0, V_AVX2 = 1, V_AVX512 = 2, V_VNNI = 3, V_AMX = 4, V_COUNT = 5 };
/* kernel table per variant (NULL when not compiled) */
extern const sk_kernels *sk_variant_tables[V_COUNT];
/* variant= argument: None -> the module default; a str -> its index (ValueError when unknown,
 * not compiled or not supported by this CPU). Returns -1 with an exception set. */
int sk_variant_from_obj(PyObject *obj);

/* per-core L2 cache size in bytes, read at import (sk_module.c); sizes the blocks of ffn_int8 */
extern int64_t sk_l2_bytes;

/* ---- argument buffers (sk_buffers.c) -------------------------------------------------
 * Every entry point acquires its buffers into one sk_args and releases them all with one call,
 * whatever failed in between. Kinds: 'f' float32, 'b' int8, 'i' int32, 'q' int64,
 * 'I' int32 or int64. ndim: exact when > 0; 0: 1 or 2; -1: 1 to 3. */
#define SK_MAX_ARGS 12
typedef struct {
    Py_buffer v[SK_MAX_ARGS];
    int n;
} sk_args;

/* Acquire obj as a C-contiguous buffer of `kind` and `ndim` (writable when asked) and record it
 * in a. Returns the view, or NULL with TypeError / ValueError set. */
Py_buffer *sk_arg(sk_args *a, PyObject *obj, const char *name, char kind, int ndim, int writable);
/* sk_arg for an optional argument: None gives *view = NULL. Returns 0, or -1 with an exception. */
int sk_arg_opt(sk_args *a, PyObject *obj, const char *name, char kind, int ndim, int writable, Py_buffer **view);
void sk_args_release(sk_args *a);

#define SK_ANY (-1) /* a dimension sk_check_shape does not constrain */
/* v->shape must equal dims[0..ndim); SK_ANY matches any length. dim_name (or NULL) names the
 * counted dimension in the message: an SK_ANY entry of a shape prints as it, a length is followed
 * by it. Returns 0, or -1 with ValueError "name: expected length N (dim_name), got M" or
 * "name: expected shape (dim_name, N), got (M, K)". */
int sk_check_shape(const Py_buffer *v, const char *name, int ndim, const int64_t *dims, const char *dim_name);
/* "(d0, d1, d2)": v's shape (at most 3 dimensions) into buf, for messages */
void sk_format_shape(char *buf, size_t n, const Py_buffer *v);
/* ValueError unless every float of the C-contiguous key bias v is finite or -inf (a masked key):
 * NaN or +inf would turn every score of its rows into NaN */
int sk_check_key_bias(const Py_buffer *v);
/* the same check on n floats at x (a buffer already acquired) */
int sk_check_key_bias_values(const float *x, int64_t n);
int sk_overlap(const Py_buffer *a, const Py_buffer *b); /* 1 when the memory ranges intersect */
/* 1 when v intersects a buffer of a other than itself (a may be NULL) */
int sk_overlaps_args(const Py_buffer *v, const sk_args *a);
char sk_buffer_kind(const Py_buffer *v);                /* one of the kinds above, or '?' */
int64_t sk_load_int(const Py_buffer *v, char kind, int64_t i);
/* threads= : at most SK_THREADS_PER_PROC per processor OpenMP sees, OMP_THREAD_LIMIT and
 * SK_THREADS_MAX (sk_threads_limit). GNU libgomp exits the process when the OS refuses to create a
 * thread, so counts far above the machine's are refused before any parallel region runs. 4 per
 * processor, not 1: tests and measurements oversubscribe small machines a little (threads=3 on
 * 2 CPUs, threads=2 on a 1-CPU container), which must keep working. */
#define SK_THREADS_PER_PROC 4
#define SK_THREADS_MAX 1024
int sk_threads_limit(void); /* the largest threads= accepted (1 to SK_THREADS_MAX), fixed at import */
int sk_check_threads(int threads); /* 0 in [1, sk_threads_limit()], else -1 with ValueError */
/* PyArg "O&" converter for threads= into an int: TypeError for a bool or a non-integer,
 * ValueError outside [1, sk_threads_limit()] (an int beyond C's range included) */
int sk_threads_arg(PyObject *obj, void *addr);
/* after a failed PyArg_Parse*: OverflowError (an int beyond C's range) re-raised as ValueError; returns -1 */
int sk_parse_failed(void);

/* inside a parallel region: this thread's number and the team's size (0 and 1 without OpenMP) */
static inline int sk_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int sk_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* ---- scratch memory (sk_buffers.c) ----------------------------------------------------
 * 64-byte aligned; free() releases it. The workspace cache keeps up to 8 buffers across calls
 * (taken and given back with the GIL held) so packed activations are not mmap'ed and
 * page-faulted on every call; concurrent calls simply allocate extra buffers. A buffer larger
 * than SK_WS_KEEP_PER_THREAD per thread of the call is freed when given back: the buffers of
 * BERT-sized layers at 128-token blocks are 0.05-1.5 MiB per thread (the largest: the 128 x 3072
 * fp32 staging rows of a BERT-base chained INT8 call; MiniLM's largest, ffn_int8's 1536-row
 * intermediate, 0.84 MiB), while a buffer sized by a call's tokens or sequence (a long input, a
 * forced row split) can be hundreds of MiB and would otherwise stay for the life of the process. */
#define SK_WS_KEEP_PER_THREAD (4u << 20)
void *sk_aligned_malloc(size_t bytes);
void *sk_ws_take(size_t bytes, size_t *got);    /* at least `bytes`; *got = its real size */
void sk_ws_give(void *p, size_t n, int threads); /* NULL is ignored; threads: the call's */
size_t sk_ws_bytes(void);                        /* bytes the cache holds now (workspace_bytes()) */

/* ---- SparseMatrix (sk_matrix.c, filled by sk_pack.c) ---------------------------------- */
enum { DT_FP32 = 0, DT_INT8 = 1 };

typedef struct {
    PyObject_HEAD
    int dtype;
    int64_t n_out, n_in;
    int bh;           /* block height (output rows per block) */
    int bw;           /* block width: 1 for fp32, 4 for int8 (input quads) */
    int64_t nbr;      /* block rows */
    int64_t nnzb;     /* stored blocks */
    int64_t *ptr;     /* nbr + 1 */
    int32_t *idx;     /* nnzb: input column (fp32) or quad index (int8) */
    float *val;       /* fp32: nnzb * bh */
    int32_t *qval;    /* int8: nnzb * bh packed int8x4 words */
    float *wscale;    /* int8: per output row scale (n_out) */
    int32_t *wsum;    /* int8: per output row 128 * sum of int8 weights (n_out padded to nbr*bh) */
    int npan;         /* input-column panels (1 = none) */
    int64_t panel;    /* panel width in input columns (0 = none) */
    /* column-panel segments (sk_segs), when npan > 1: per group of SK_PANEL_GROUP_ROWS rows and
     * panel, segments sorted by length; blocks copied in segment order */
    int64_t *sg_ptr;   /* ngroups * npan + 1 segment offsets */
    int32_t *sg_row;   /* block row within its group, per segment */
    int64_t *sg_start; /* nseg + 1 */
    int32_t *sg_idx;
    float *sg_val;
    int64_t nchunks;  /* 16-row chunks */
    int64_t *cwork;   /* nchunks + 1 prefix sums of work estimate */
} SKMatrix;

/* every array a SparseMatrix owns: X(member) for each (freed together by the destructor) */
#define SKM_ARRAYS(X) X(ptr) X(idx) X(val) X(qval) X(wscale) X(wsum) X(cwork) X(sg_ptr) X(sg_row) X(sg_start) \
    X(sg_idx) X(sg_val)

extern PyTypeObject SKMatrixType;
SKMatrix *skm_new(void); /* empty fp32 1x1 matrix, all arrays NULL */
/* cwork: per 16-row chunk, multiply-adds per token plus a per-row overhead. -1: MemoryError set. */
int skm_compute_chunks(SKMatrix *m);
/* nnz-balanced chunk range [*c0, *c1) of thread tid of nthr (row split) */
void skm_thread_chunks(const SKMatrix *m, int tid, int nthr, int64_t *c0, int64_t *c1);

/* ---- the plan of one spmm / spmm_int8 call (sk_spmm.c) --------------------------------
 * Two ways to share the work between threads:
 *  token split: each thread packs its own tokens and computes all output rows for them; no
 *    barrier at all, and each thread writes whole rows of Y;
 *  row split (few tokens): threads pack slices of the shared activation block, then compute
 *    nnz-balanced ranges of output rows (two barriers per token block). */
typedef struct {
    int nt;            /* threads */
    int64_t tt;        /* tokens per register tile */
    int64_t tb;        /* tokens per packed block */
    int64_t lds;       /* scratch row stride */
    int64_t group;     /* 16-row chunks whose outputs are unpacked together (token-major) */
    int token_split;
} sk_plan;

/* The Python arguments of one spmm-family call as parsed (defaults: SK_SPMM_OPTS_INIT). */
typedef struct {
    PyObject *mat, *x, *out, *bias, *variant, *split, *activation, *residual, *ln_weight, *ln_bias;
    double ln_eps;
    int threads, tile, token_block;
} sk_spmm_opts;

/* What sk_spmm_acquire checked and acquired from them. */
typedef struct {
    sk_args bufs;        /* every buffer acquired for the call; sk_args_release(&c->bufs) frees them */
    SKMatrix *m;
    const sk_kernels *kt;
    int variant, split, act;
    int64_t T;           /* tokens */
    Py_buffer *x, *out;
    const float *bias;   /* NULL: none */
    const float *R;      /* residual added in the output pass, or NULL */
    sk_ln ln;
    const sk_ln *lnp;    /* &ln when the call has a LayerNorm epilogue, else NULL */
} sk_spmm_call;

#define SK_SPMM_OPTS_INIT {.bias = Py_None, .variant = Py_None, .split = Py_None, .activation = Py_None, \
                           .residual = Py_None, .ln_weight = Py_None, .ln_bias = Py_None, .ln_eps = 1e-12,   \
                           .threads = 1}

/* Check the options and acquire x (kind xk), out (writable, kind ok), bias and the epilogue
 * buffers: shapes, dtypes, overlaps. Returns 0, or -1 with an exception set; either way the
 * caller releases c->bufs. */
int sk_spmm_acquire(sk_spmm_call *c, const sk_spmm_opts *o, int want_dtype, const char *dtype_msg, char xk, char ok);
/* The two products of ffn_int8: o1 (mat_in, x, bias_in, activation) into c1, o2 (mat_out, out,
 * bias_out, residual, LayerNorm) into c2; threads, variant, tile and token block checked in both.
 * c2->x is c1->x and c1->out is c2->out (the intermediate has no buffer). Returns 0, or -1 with an
 * exception set; either way the caller releases c1->bufs and c2->bufs. */
int sk_ffn_acquire(sk_spmm_call *c1, sk_spmm_call *c2, const sk_spmm_opts *o1, const sk_spmm_opts *o2);
/* qkv_attention_int8: o's mat (int8, n_out = 3 * hidden), x float32 (batch, seq, n_in), out
 * writable float32 (batch, seq, hidden), bias (3 * hidden,) and key_bias float32 (batch, seq) or
 * None (*kb NULL) into c (T = batch * seq), shapes and overlaps checked. 0, or -1 with an exception. */
int sk_qkva_acquire(sk_spmm_call *c, const sk_spmm_opts *o, PyObject *key_bias, const float **kb);
/* Fill p for T tokens: tile (0 = auto_tile), token block (0 = auto_tb, then clamped), scratch
 * stride, unpack group and the way threads share the work. */
void sk_plan_make(sk_plan *p, const sk_spmm_opts *o, int split, int64_t T, int64_t auto_tile, int64_t auto_tb);
/* tiles for a block of nb tokens: full tiles of tt tokens, then the remainder split into
 * power-of-two multiples of 16 tokens; each tile occupies n_rows * width elements. */
void sk_make_tiling(sk_tiling *tl, int64_t nb, int64_t tt, int64_t n_rows);
/* Token range of thread tid when threads split the tokens (boundaries on 16-token groups). */
void sk_token_range(int64_t T, int tid, int nthr, int64_t *ta, int64_t *tb);
static inline int64_t sk_round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* LayerNorm of tokens [t0, t1) of Y (N wide) when the call has one (rows still in cache); with
 * amax (else NULL), the per-token ranges of the finished rows into amax[t0 .. t1) */
static inline void sk_apply_ln(const sk_kernels *kt, const sk_ln *ln, float *Y, int64_t N, int64_t t0, int64_t t1,
                               float *amax)
{
    if (t1 <= t0) return;
    if (ln) kt->layer_norm(Y + t0 * N, t1 - t0, N, ln->gamma, ln->beta, ln->eps, amax ? amax + t0 : NULL);
    else if (amax) kt->rows_amax(Y, N, N, t0, t1, amax);
}

/* ---- output-pass epilogues (sk_epilogue.c) ------------------------------------------- */
/* Optional residual (float32 (T, n_out), not overlapping out) and LayerNorm (ln_weight / ln_bias
 * float32 (n_out,), ln_eps finite >= 0) into c->R / c->lnp; buffers go to c->bufs. */
int sk_epilogue_acquire(sk_spmm_call *c, const sk_spmm_opts *o);

/* ---- entry points (one translation unit each) and their docstrings ------------------- */
PyObject *sk_py_pack_csr(PyObject *self, PyObject *args, PyObject *kw);  /* sk_pack.c */
PyObject *sk_py_pack_bsr(PyObject *self, PyObject *args, PyObject *kw);
PyObject *sk_py_pack_int8(PyObject *self, PyObject *args, PyObject *kw);
PyObject *sk_py_spmm(PyObject *self, PyObject *args, PyObject *kw);      /* sk_spmm_fp32.c */
PyObject *sk_py_spmm_int8(PyObject *self, PyObject *args, PyObject *kw); /* sk_spmm_int8.c */
PyObject *sk_py_spmm_int8_raw(PyObject *self, PyObject *args, PyObject *kw);
/* attention's num_heads (>= 1, dividing hidden H), seq S (<= SK_ATTN8_MAX_S when int8) and scale
 * (finite; negative: 1/sqrt(head_dim)) into *dh and *scale_out (sk_attention.c): 0, or -1 with ValueError */
int sk_attention_params(int heads, int64_t H, int64_t S, int int8, double scale, int64_t *dh, float *scale_out);
PyObject *sk_py_ffn_int8(PyObject *self, PyObject *args, PyObject *kw);
PyObject *sk_py_qkv_attention_int8(PyObject *self, PyObject *args, PyObject *kw);
PyObject *sk_py_attention(PyObject *self, PyObject *args, PyObject *kw); /* sk_attention.c */
extern const char sk_doc_pack_csr[], sk_doc_pack_bsr[], sk_doc_pack_int8[], sk_doc_spmm[], sk_doc_spmm_int8[],
    sk_doc_spmm_int8_raw[], sk_doc_ffn_int8[], sk_doc_attention[],
    sk_doc_qkv_attention_int8[];

#endif
