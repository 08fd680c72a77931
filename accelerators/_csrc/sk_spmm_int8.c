/*
 * spmm_int8 / spmm_int8_raw: Y = dequant(quant(X) W_q^T) (+ bias, activation, residual,
 * LayerNorm) with W an int8 SparseMatrix. Activations are quantized per token (or per tensor)
 * while they are packed (pack_xq), or arrive already quantized (x_scale; pack_xq_raw); products
 * accumulate exactly in int32 (tile_int8) and are dequantized while the scratch is transposed
 * into Y (unpack_int8). With out_scale the fp32 rows are finished in a staging buffer and
 * quantized per token into an int8 Y, so one layer's INT8 output feeds the next.
 */
#include "sk_py.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const sk_spmm_call *c;
    sk_plan p;
    const float *X;       /* fp32 input, or NULL for int8 input */
    const int8_t *Xq;     /* int8 input: raw (int32 out), or pre-quantized with scales sx (fp32 / int8 out) */
    float *Y;             /* fp32 output */
    int32_t *Yi;          /* raw int32 output */
    int8_t *Yq;           /* int8 output (quantized per token into Yq / Ysc), via fp32 staging */
    float *Ysc;           /* T per-token scales of Yq */
    float *stage;         /* fp32 staging rows: tb * N per thread (token split) or T * N (row split) */
    int per_token;
    int64_t xq_stride;
    uint8_t *xq;
    int32_t *scratch;
    float *amax, *sx, *inv; /* T each */
    int amax_given;         /* amax holds x's ranges already (x_amax): no range pass */
    float *oamax;           /* per-token ranges of the fp32 output (out_amax), or NULL */
} int8_job;

/* Options of spmm_int8 beyond the shared ones. */
typedef struct {
    PyObject *x_scale, *out_scale, *x_amax, *out_amax;
    int per_token, raw;
} int8_opts;

/* tokens per tile: vpdpbusd (vnni) or 16-lane vpmaddubsw (avx512) accumulators fill the register
 * file (128 tokens for 1-row blocks, whose rows are short at 80-90 % sparsity; see _csrc/README.md);
 * AMX tiles (amx, 16x4 blocks) one pass of the schedule's 4 accumulator tiles;
 * avx2 runs 64 tokens of a row per pass of its register tile (2-2.4x faster than 16 at MiniLM and
 * BERT-base shapes, 128 no better); the portable C, 16 */
static int default_tile_int8(int variant, int bh)
{
    /* amx: 4 sub-tiles of 16 tokens, so each weight tile meets 4 activation tiles per load */
    if (variant == V_AMX && bh == SK_TILE_ROWS) return 64;
    if (variant >= V_AVX512) return bh >= 8 ? 32 : bh == 1 ? 128 : 64;
    if (variant == V_AVX2) return 64;
    return 16;
}

/* Yt: fp32 destination row of token t0 (NULL: raw int32 output) */
static void int8_block(const int8_job *J, const sk_tiling *tl, const uint8_t *xq, int32_t *scr, float *Yt,
                       int64_t t0, int64_t nb, int64_t c0, int64_t c1)
{
    const sk_spmm_call *c = J->c;
    const SKMatrix *m = c->m;
    const int64_t N = m->n_out, nq = (m->n_in + 3) / 4, group = J->p.group, lds = J->p.lds;
    const int64_t brpc = SK_ROWS_PER_CHUNK / m->bh;
    for (int64_t g = c0; g < c1; g += group) {
        const int64_t g1 = g + group < c1 ? g + group : c1;
        c->kt->tile_int8(m->bh, m->ptr, m->idx, m->qval, g * brpc, g1 * brpc < m->nbr ? g1 * brpc : m->nbr, xq, tl, nq,
                         scr, lds);
        const int64_t r0 = g * SK_ROWS_PER_CHUNK;
        int64_t nrows = (g1 - g) * SK_ROWS_PER_CHUNK;
        if (nrows > N - r0) nrows = N - r0;
        if (nrows <= 0) continue;
        if (Yt)
            c->kt->unpack_int8(scr, lds, nrows, nb, Yt + r0, N, c->bias ? c->bias + r0 : NULL,
                               c->R ? c->R + t0 * N + r0 : NULL, m->wscale + r0, m->wsum + r0, J->sx + t0, c->act);
        else
            c->kt->unpack_i32(scr, lds, nrows, nb, J->Yi + t0 * N + r0, N, m->wsum + r0);
    }
}

/* Activation scales of tokens [ta, te) (every thread calls it: it holds barriers). Per token:
 * from the token's own range; per tensor: from the largest range of all tokens. */
static void int8_scales(const int8_job *J, int64_t ta, int64_t te)
{
    const int64_t K = J->c->m->n_in, T = J->c->T;
    if (te > ta && !J->amax_given) J->c->kt->rows_amax(J->X, K, K, ta, te, J->amax);
    if (!J->per_token) {
#pragma omp barrier
    }
    float g = 0.0f; /* NaN (a user's x_amax) propagates, as per token: NaN in, NaN out */
    if (!J->per_token)
        for (int64_t t = 0; t < T; t++) g = (J->amax[t] > g || J->amax[t] != J->amax[t]) ? J->amax[t] : g;
    for (int64_t t = ta; t < te; t++) {
        const float a = J->per_token ? J->amax[t] : g;
        /* finite, non-zero range: x_q = rne(x * 127 / amax); otherwise everything maps to 0 (and
         * a non-finite range's outputs to NaN: sk_range_scale) */
        const int ok = a >= SK_RANGE_MIN && a <= SK_RANGE_MAX;
        J->inv[t] = ok ? 127.0f / a : 0.0f;
        J->sx[t] = sk_range_scale(a);
    }
    if (!J->p.token_split) {
#pragma omp barrier
    }
}

/* pack quads [q0, q1) of tokens t0 .. t0 + nb, quantizing fp32 input or copying int8 input */
static void int8_pack(const int8_job *J, const sk_tiling *tl, uint8_t *xq, int64_t t0, int64_t nb, int64_t q0,
                      int64_t q1)
{
    const int64_t K = J->c->m->n_in, nq = (K + 3) / 4;
    if (q1 <= q0) return;
    if (J->X) J->c->kt->pack_xq(J->X + t0 * K, K, nb, K, q0, q1, J->inv + t0, xq, tl, nq);
    else J->c->kt->pack_xq_raw(J->Xq + t0 * K, K, nb, K, q0, q1, xq, tl, nq);
}

/* token split: this thread's tokens [ta, te), all output rows, no barrier */
static void int8_tokens(const int8_job *J, int tid, int64_t ta, int64_t te, int32_t *scr)
{
    const sk_spmm_call *c = J->c;
    const SKMatrix *m = c->m;
    const int64_t N = m->n_out, nq = (m->n_in + 3) / 4, tb = J->p.tb;
    uint8_t *xq = J->xq + (int64_t)tid * J->xq_stride;
    sk_tiling tl;
    for (int64_t t0 = ta; t0 < te; t0 += tb) {
        const int64_t nb = te - t0 < tb ? te - t0 : tb;
        sk_make_tiling(&tl, nb, J->p.tt, nq * 4);
        int8_pack(J, &tl, xq, t0, nb, 0, nq);
        if (J->Yq) { /* finish the block's fp32 rows while in L2, then quantize them */
            float *st = J->stage + (int64_t)tid * tb * N;
            int8_block(J, &tl, xq, scr, st, t0, nb, 0, m->nchunks);
            sk_apply_ln(c->kt, c->lnp, st, N, 0, nb, NULL);
            c->kt->quant_rows(st, nb, N, J->Yq + t0 * N, J->Ysc + t0);
        } else {
            int8_block(J, &tl, xq, scr, J->Y ? J->Y + t0 * N : NULL, t0, nb, 0, m->nchunks);
            sk_apply_ln(c->kt, c->lnp, J->Y, N, t0, t0 + nb, J->oamax);
        }
    }
}

/* row split: threads pack slices of each shared token block, then compute their row chunks */
static void int8_rows(const int8_job *J, int tid, int nthr, int32_t *scr)
{
    const sk_spmm_call *c = J->c;
    const SKMatrix *m = c->m;
    const int64_t N = m->n_out, nq = (m->n_in + 3) / 4, T = c->T, tb = J->p.tb;
    int64_t c0, c1;
    skm_thread_chunks(m, tid, nthr, &c0, &c1);
    const int64_t q0 = nq * tid / nthr, q1 = nq * (tid + 1) / nthr;
    float *dst = J->Yq ? J->stage : J->Y;
    sk_tiling tl;
    for (int64_t t0 = 0; t0 < T; t0 += tb) {
        const int64_t nb = T - t0 < tb ? T - t0 : tb;
        sk_make_tiling(&tl, nb, J->p.tt, nq * 4);
        int8_pack(J, &tl, J->xq, t0, nb, q0, q1);
#pragma omp barrier
        int8_block(J, &tl, J->xq, scr, dst ? dst + t0 * N : NULL, t0, nb, c0, c1);
#pragma omp barrier
    }
    const int64_t u0 = T * tid / nthr, u1 = T * (tid + 1) / nthr;
    sk_apply_ln(c->kt, c->lnp, dst, N, u0, u1, J->Yq ? NULL : J->oamax);
    if (J->Yq && u1 > u0) c->kt->quant_rows(J->stage + u0 * N, u1 - u0, N, J->Yq + u0 * N, J->Ysc + u0);
}

/* same work sharing as run_fp32 (token split without barriers, or row split) */
static void run_int8(const int8_job *J)
{
    const int64_t T = J->c->T;
#pragma omp parallel num_threads(J->p.nt)
    {
        const int tid = sk_thread_num(), nthr = sk_num_threads();
        int32_t *scr = J->scratch + (int64_t)tid * J->p.group * SK_ROWS_PER_CHUNK * J->p.lds;
        int64_t ta, te;
        if (J->p.token_split) sk_token_range(T, tid, nthr, &ta, &te);
        else {
            ta = T * tid / nthr;
            te = T * (tid + 1) / nthr;
        }
        if (J->X) int8_scales(J, ta, te); /* fp32 input (else: int8 input, scales given or raw) */
        if (J->p.token_split) int8_tokens(J, tid, ta, te, scr);
        else int8_rows(J, tid, nthr, scr);
    }
}

/* x_scale / out_scale: float32 (tokens,); x_scale apart from out (written block by block while later
 * blocks still read their scales); out_scale writable and apart from every other buffer of the call */
static int get_token_scales(sk_spmm_call *c, const int8_opts *q, Py_buffer **vxs, Py_buffer **vos)
{
    if (sk_arg_opt(&c->bufs, q->x_scale, "x_scale", 'f', 1, 0, vxs) < 0 ||
        (*vxs && sk_check_shape(*vxs, "x_scale", 1, &c->T, "tokens") < 0) ||
        sk_arg_opt(&c->bufs, q->out_scale, "out_scale", 'f', 1, 1, vos) < 0 ||
        (*vos && sk_check_shape(*vos, "out_scale", 1, &c->T, "tokens") < 0))
        return -1;
    if (*vos && sk_overlaps_args(*vos, &c->bufs)) {
        PyErr_SetString(PyExc_ValueError, "out_scale must not overlap any other buffer of the call");
        return -1;
    }
    if (*vxs && sk_overlap(*vxs, c->out)) {
        PyErr_SetString(PyExc_ValueError, "x_scale must not overlap out (a buffer the call writes)");
        return -1;
    }
    return 0;
}

/* x_amax (float32 (tokens,), only with a float32 x, apart from what the call writes) and out_amax
 * (writable float32 (tokens,), only with a float32 out, apart from every other buffer of the call:
 * those of a and of others) into J; the two buffers go to a. */
static int get_amax(sk_args *a, const sk_args *others, int8_job *J, PyObject *x_amax, PyObject *out_amax,
                    const Py_buffer *out, const Py_buffer *out_scale, int x_fp32, int out_fp32, int64_t T)
{
    Py_buffer *vxa, *voa;
    if (sk_arg_opt(a, x_amax, "x_amax", 'f', 1, 0, &vxa) < 0 || (vxa && sk_check_shape(vxa, "x_amax", 1, &T, "tokens") < 0) ||
        sk_arg_opt(a, out_amax, "out_amax", 'f', 1, 1, &voa) < 0 ||
        (voa && sk_check_shape(voa, "out_amax", 1, &T, "tokens") < 0))
        return -1;
    if ((vxa && !x_fp32) || (voa && !out_fp32)) {
        PyErr_SetString(PyExc_ValueError, vxa && !x_fp32 ? "x_amax needs a float32 x" : "out_amax needs a float32 out");
        return -1;
    }
    /* x_amax apart from what the call writes; out_amax apart from every other buffer of the call */
    if (vxa && (sk_overlap(vxa, out) || (out_scale && sk_overlap(vxa, out_scale)))) {
        PyErr_SetString(PyExc_ValueError, "x_amax must not overlap out or out_scale (buffers the call writes)");
        return -1;
    }
    if (voa && (sk_overlaps_args(voa, a) || sk_overlaps_args(voa, others))) {
        PyErr_SetString(PyExc_ValueError, "out_amax must not overlap any other buffer of the call");
        return -1;
    }
    if (vxa) {
        J->amax = (float *)vxa->buf; /* read only: amax_given */
        J->amax_given = 1;
    }
    J->oamax = voa ? (float *)voa->buf : NULL;
    return 0;
}

/* input / output pointers by mode: raw (int8 in, int32 out), x_scale (int8 in), out_scale (int8 out) */
static void int8_io(int8_job *J, const int8_opts *q, const Py_buffer *vxs, const Py_buffer *vos)
{
    const sk_spmm_call *c = J->c;
    const int in_q = q->raw || vxs, out_f = !q->raw && !vos;
    J->X = in_q ? NULL : (const float *)c->x->buf;
    J->Xq = in_q ? (const int8_t *)c->x->buf : NULL;
    J->Y = out_f ? (float *)c->out->buf : NULL;
    J->Yi = q->raw ? (int32_t *)c->out->buf : NULL;
    J->Yq = vos ? (int8_t *)c->out->buf : NULL;
    J->Ysc = vos ? (float *)vos->buf : NULL;
    J->per_token = q->per_token;
}

/* x_scale: every entry >= 0 and not +inf (as pack_int8's w_scale), or NaN: the scale out_scale
 * writes for a non-finite token, whose outputs are then NaN. A negative scale would flip the
 * token's sign and an infinite one make inf x 0 = NaN of zeros; -1 with ValueError. */
static int check_x_scale(const float *s, int64_t n)
{
    for (int64_t t = 0; t < n; t++)
        if (s[t] < 0.0f || s[t] > SK_RANGE_MAX) {
            char got[32];
            snprintf(got, sizeof got, "%g", (double)s[t]);
            PyErr_Format(PyExc_ValueError, "x_scale[%lld] must be >= 0 and finite (or NaN for a non-finite token), "
                         "got %s", (long long)t, got);
            return -1;
        }
    return 0;
}

/* whether any of the n int8 values is -128 */
static int has_int8_min(const int8_t *x, int64_t n)
{
    int found = 0;
    for (int64_t i = 0; i < n; i++) found |= x[i] == -128;
    return found;
}

/* Plan, take the scratch buffers, run with the GIL released, give them back. */
static int spmm_int8_run(sk_spmm_call *c, const sk_spmm_opts *o, const int8_opts *q, const Py_buffer *vxs,
                         const Py_buffer *vos)
{
    const SKMatrix *m = c->m;
    int8_job J = {.c = c};
    if (get_amax(&c->bufs, NULL, &J, q->x_amax, q->out_amax, c->out, vos, !q->raw && !vxs, !q->raw && !vos, c->T) < 0)
        return -1;
    /* contents checked after the last acquisition: a buffer export (__buffer__) runs Python code */
    if (vxs && check_x_scale((const float *)vxs->buf, c->T) < 0) return -1;
    if ((q->raw || vxs) && c->kt->int8_no_x_min && has_int8_min((const int8_t *)c->x->buf, c->T * m->n_in)) {
        c->variant = V_SCALAR; /* -128 is outside what this variant's product is exact for: same bits, slower */
        c->kt = sk_variant_tables[V_SCALAR];
    }
    if (c->T == 0 || m->n_out == 0) { /* output rows of width 0: their ranges and scales are 0 */
        if (J.oamax) memset(J.oamax, 0, sizeof(float) * (size_t)c->T);
        if (vos) memset(vos->buf, 0, sizeof(float) * (size_t)c->T);
        return 0;
    }
    const int64_t nq = (m->n_in + 3) / 4, Tp = sk_round_up(c->T, 16);
    /* about 384 KiB of packed activations; sk_plan_make caps it to keep scratch rows short */
    const int64_t auto_tb = (384 * 1024) / (nq * 4 > 0 ? nq * 4 : 1);
    sk_plan_make(&J.p, o, c->split, c->T, default_tile_int8(c->variant, m->bh), auto_tb);
    int8_io(&J, q, vxs, vos);
    J.xq_stride = sk_round_up(nq * 4 * sk_round_up(J.p.tb, SK_TOK_GROUP), 64);
    size_t xq_n = 0, scr_n = 0, sc_n = 0, st_n = 0;
    J.xq = (uint8_t *)sk_ws_take((size_t)(J.xq_stride * (J.p.token_split ? J.p.nt : 1)), &xq_n);
    J.scratch = (int32_t *)sk_ws_take(sizeof(int32_t) * (size_t)(J.p.nt * J.p.group * SK_ROWS_PER_CHUNK * J.p.lds),
                                      &scr_n);
    float *scales = (float *)sk_ws_take(sizeof(float) * (size_t)(3 * Tp), &sc_n);
    if (J.Yq)
        J.stage = (float *)sk_ws_take(sizeof(float) * (size_t)((J.p.token_split ? J.p.nt * J.p.tb : c->T) * m->n_out),
                                      &st_n);
    int rc = 0;
    if (!J.xq || !J.scratch || !scales || (J.Yq && !J.stage)) {
        PyErr_NoMemory();
        rc = -1;
    } else {
        if (!J.amax_given) J.amax = scales;
        J.sx = vxs ? (float *)vxs->buf : scales + Tp; /* read-only when given */
        J.inv = scales + 2 * Tp;
        Py_BEGIN_ALLOW_THREADS
        run_int8(&J);
        Py_END_ALLOW_THREADS
    }
    sk_ws_give(J.xq, xq_n, J.p.nt);
    sk_ws_give(J.scratch, scr_n, J.p.nt);
    sk_ws_give(scales, sc_n, J.p.nt);
    sk_ws_give(J.stage, st_n, J.p.nt);
    return rc;
}

/* The product's row chunks [c0, c1) of one token block (t0, nb tokens, packed in xq) into acc
 * (channel-major, J->p.lds), group by group, each group dequantized, biased and activated in place
 * while in cache (mid_int8; per-token ranges into amid). Shared by ffn_int8 and qkv_attention_int8. */
static void int8_rows_mid(const int8_job *J, const sk_tiling *tl, const uint8_t *xq, int32_t *acc, int64_t t0,
                          int64_t nb, int64_t c0, int64_t c1, int act, float *amid)
{
    const sk_spmm_call *c = J->c;
    const SKMatrix *m = c->m;
    const sk_kernels *kt = c->kt;
    const int64_t N = m->n_out, nq = (m->n_in + 3) / 4, lds = J->p.lds, brpc = SK_ROWS_PER_CHUNK / m->bh;
    for (int64_t g = c0; g < c1; g += J->p.group) {
        const int64_t g1 = g + J->p.group < c1 ? g + J->p.group : c1;
        kt->tile_int8(m->bh, m->ptr, m->idx, m->qval, g * brpc, g1 * brpc < m->nbr ? g1 * brpc : m->nbr, xq, tl, nq,
                      acc + g * SK_ROWS_PER_CHUNK * lds, lds);
        const int64_t r0 = g * SK_ROWS_PER_CHUNK;
        int64_t nrows = (g1 - g) * SK_ROWS_PER_CHUNK;
        if (nrows > N - r0) nrows = N - r0;
        if (nrows > 0) /* while the group's rows are in cache */
            kt->mid_int8(acc + r0 * lds, lds, nrows, nb, c->bias ? c->bias + r0 : NULL, m->wscale + r0, m->wsum + r0,
                         J->sx + t0, act, amid);
    }
}

/* ---- ffn_int8: two products with the intermediate kept channel-major ----------------------
 * Per token block: x quantized and packed (as spmm_int8), the first product's accumulators for
 * all n_mid rows kept (group by group: dequantize + bias + activation in place, per-token ranges as
 * vertical maxima: mid_int8), the intermediate quantized per token straight into the second
 * product's packed layout (pack_mid), the second product's output pass (bias, residual) and
 * LayerNorm as spmm_int8. The same values as spmm_int8(..., out_scale) followed by
 * spmm_int8(..., x_scale): no transposes, staging rows or packing of the intermediate between. */
typedef struct {
    int8_job in, out;  /* in: X, amax / sx / inv of x, xq; out: Y, sx / inv of the intermediate, xq, scratch */
    int32_t *mid;      /* per thread: the first product's rows (nchunks * 16) x lds */
    int64_t mid_stride;
    float *amid;       /* T: per-token range of the intermediate */
} ffn_job;

static void ffn_tokens(const ffn_job *F, int tid, int64_t ta, int64_t te)
{
    const int8_job *A = &F->in, *B = &F->out;
    const sk_spmm_call *c1 = A->c, *c2 = B->c;
    const SKMatrix *m1 = c1->m, *m2 = c2->m;
    const sk_kernels *kt = c1->kt;
    const int64_t nq1 = (m1->n_in + 3) / 4, nq2 = (m2->n_in + 3) / 4, N1 = m1->n_out, N2 = m2->n_out;
    const int64_t tb = A->p.tb, lds = A->p.lds;
    uint8_t *xq1 = A->xq + (int64_t)tid * A->xq_stride, *xq2 = B->xq + (int64_t)tid * B->xq_stride;
    int32_t *mid = F->mid + (int64_t)tid * F->mid_stride;
    int32_t *scr2 = B->scratch + (int64_t)tid * B->p.group * SK_ROWS_PER_CHUNK * lds;
    sk_tiling tl1, tl2;
    for (int64_t t0 = ta; t0 < te; t0 += tb) {
        const int64_t nb = te - t0 < tb ? te - t0 : tb;
        sk_make_tiling(&tl1, nb, A->p.tt, nq1 * 4);
        int8_pack(A, &tl1, xq1, t0, nb, 0, nq1);
        for (int64_t t = t0; t < t0 + nb; t++) F->amid[t] = 0.0f;
        int8_rows_mid(A, &tl1, xq1, mid, t0, nb, 0, m1->nchunks, c1->act, F->amid + t0);
        for (int64_t t = t0; t < t0 + nb; t++) { /* quant_rows' scales */
            const float a = F->amid[t];
            const int ok = a >= SK_RANGE_MIN && a <= SK_RANGE_MAX;
            B->inv[t] = ok ? 127.0f / a : 0.0f;
            B->sx[t] = sk_range_scale(a);
        }
        sk_make_tiling(&tl2, nb, B->p.tt, nq2 * 4);
        kt->pack_mid((const float *)mid, lds, N1, nb, B->inv + t0, xq2, &tl2);
        int8_block(B, &tl2, xq2, scr2, B->Y + t0 * N2, t0, nb, 0, m2->nchunks);
        sk_apply_ln(kt, c2->lnp, B->Y, N2, t0, t0 + nb, B->oamax);
    }
}

static void run_ffn(const ffn_job *F)
{
    const int64_t T = F->in.c->T;
#pragma omp parallel num_threads(F->in.p.nt)
    {
        const int tid = sk_thread_num(), nthr = sk_num_threads();
        int64_t ta, te;
        sk_token_range(T, tid, nthr, &ta, &te);
        int8_scales(&F->in, ta, te); /* per token, token split: no barrier */
        ffn_tokens(F, tid, ta, te);
    }
}

static int ffn_int8_run(sk_spmm_call *c1, const sk_spmm_call *c2, const sk_spmm_opts *o1, PyObject *x_amax,
                        PyObject *out_amax)
{
    const SKMatrix *m1 = c1->m, *m2 = c2->m;
    const int64_t T = c1->T, Tp = sk_round_up(T, 16), nq1 = (m1->n_in + 3) / 4, nq2 = (m2->n_in + 3) / 4;
    ffn_job F = {.in = {.c = c1, .per_token = 1}, .out = {.c = c2, .per_token = 1}};
    if (get_amax(&c1->bufs, &c2->bufs, &F.in, x_amax, out_amax, c2->out, NULL, 1, 1, T) < 0) return -1;
    F.out.oamax = F.in.oamax;
    F.in.oamax = NULL;
    if (T == 0 || m2->n_out == 0) { /* output rows of width 0: their ranges are 0 */
        if (F.out.oamax) memset(F.out.oamax, 0, sizeof(float) * (size_t)T);
        return 0;
    }
    /* token split always (each thread needs whole intermediate rows); one token block for both: 128
     * tokens while the block's intermediate rows (n_mid x (tb + 16) int32) take at most half the L2,
     * else 64 with register tiles of at most 64 (measured in the whole model on a 2 MiB-L2 Xeon:
     * 128 faster at 1536 wide, 0.86 MiB; 64 faster at 3072 wide, 1.7 MiB at 128) */
    const int64_t rows = m1->nchunks * SK_ROWS_PER_CHUNK, tb = rows * (128 + 16) * 4 <= sk_l2_bytes / 2 ? 128 : 64;
    const int64_t tt1 = default_tile_int8(c1->variant, m1->bh), tt2 = default_tile_int8(c2->variant, m2->bh);
    sk_plan_make(&F.in.p, o1, 2, T, tt1 < tb ? tt1 : tb, tb);
    sk_plan_make(&F.out.p, o1, 2, T, tt2 < tb ? tt2 : tb, F.in.p.tb);
    F.out.p.tb = F.in.p.tb;
    F.out.p.lds = F.in.p.lds;
    const int64_t nt = F.in.p.nt, tbp = sk_round_up(F.in.p.tb, SK_TOK_GROUP), lds = F.in.p.lds;
    F.in.X = (const float *)c1->x->buf;
    F.out.Y = (float *)c2->out->buf;
    F.in.xq_stride = sk_round_up(nq1 * 4 * tbp, 64);
    F.out.xq_stride = sk_round_up(nq2 * 4 * tbp, 64);
    F.mid_stride = m1->nchunks * SK_ROWS_PER_CHUNK * lds;
    size_t n1 = 0, n2 = 0, n3 = 0, n4 = 0, n5 = 0;
    F.in.xq = (uint8_t *)sk_ws_take((size_t)(F.in.xq_stride * nt), &n1);
    F.out.xq = (uint8_t *)sk_ws_take((size_t)(F.out.xq_stride * nt), &n2);
    F.mid = (int32_t *)sk_ws_take(sizeof(int32_t) * (size_t)(F.mid_stride * nt), &n3);
    F.out.scratch = (int32_t *)sk_ws_take(sizeof(int32_t) * (size_t)(nt * F.out.p.group * SK_ROWS_PER_CHUNK * lds), &n4);
    float *sc = (float *)sk_ws_take(sizeof(float) * (size_t)(6 * Tp), &n5);
    int rc = 0;
    if (!F.in.xq || !F.out.xq || !F.mid || !F.out.scratch || !sc) {
        PyErr_NoMemory();
        rc = -1;
    } else {
        if (!F.in.amax_given) F.in.amax = sc;
        F.in.sx = sc + Tp, F.in.inv = sc + 2 * Tp;
        F.amid = sc + 3 * Tp, F.out.sx = sc + 4 * Tp, F.out.inv = sc + 5 * Tp;
        Py_BEGIN_ALLOW_THREADS
        run_ffn(&F);
        Py_END_ALLOW_THREADS
    }
    sk_ws_give(F.in.xq, n1, (int)nt);
    sk_ws_give(F.out.xq, n2, (int)nt);
    sk_ws_give(F.mid, n3, (int)nt);
    sk_ws_give(F.out.scratch, n4, (int)nt);
    sk_ws_give(sc, n5, (int)nt);
    return rc;
}

PyObject *sk_py_ffn_int8(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"mat_in", "mat_out", "x", "out", "bias_in", "bias_out", "threads", "variant", "tile",
                             "token_block", "activation", "residual", "ln_weight", "ln_bias", "ln_eps", "x_amax",
                             "out_amax", NULL};
    sk_spmm_opts o1 = SK_SPMM_OPTS_INIT, o2 = SK_SPMM_OPTS_INIT;
    PyObject *mat_out = NULL, *out = NULL, *bias_out = Py_None, *x_amax = Py_None, *out_amax = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|OOO&OiiOOOOdOO:ffn_int8", kwlist, &o1.mat, &mat_out, &o1.x, &out,
                                     &o1.bias, &bias_out, sk_threads_arg, &o1.threads, &o1.variant, &o1.tile, &o1.token_block,
                                     &o1.activation, &o2.residual, &o2.ln_weight, &o2.ln_bias, &o2.ln_eps, &x_amax,
                                     &out_amax)) {
        sk_parse_failed();
        return NULL;
    }
    o2.mat = mat_out, o2.out = out, o2.bias = bias_out;
    o2.threads = o1.threads, o2.variant = o1.variant, o2.tile = o1.tile, o2.token_block = o1.token_block;
    sk_spmm_call c1, c2;
    int rc = sk_ffn_acquire(&c1, &c2, &o1, &o2);
    if (rc == 0) rc = ffn_int8_run(&c1, &c2, &o1, x_amax, out_amax);
    sk_args_release(&c1.bufs);
    sk_args_release(&c2.bufs);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

const char sk_doc_ffn_int8[] =
    "ffn_int8(mat_in, mat_out, x, out, bias_in=None, bias_out=None, threads=1, variant=None, tile=0,\n"
    "         token_block=0, activation=None, residual=None, ln_weight=None, ln_bias=None, ln_eps=1e-12,\n"
    "         x_amax=None, out_amax=None)\n\n"
    "A transformer feed-forward block in two INT8 products, with the intermediate never leaving the call:\n"
    "  mid = act(dequant(quant(x) @ W_in_q.T) + bias_in)        x float32 (tokens, n_in), per-token scales\n"
    "  out = LN(dequant(quant(mid) @ W_out_q.T) + bias_out + residual)   out float32 (tokens, n_out)\n"
    "mat_in, mat_out: int8 SparseMatrix (pack_int8) with mat_out's n_in equal to mat_in's n_out;\n"
    "quant() is spmm_int8's per-token rule for both; activation None/'none'/'gelu'; residual float32\n"
    "like out (it may be x itself); ln_weight / ln_bias / ln_eps as spmm. Bit-identical to\n"
    "spmm_int8(mat_in, x, q, bias_in, per_token=True, activation=..., out_scale=s) followed by\n"
    "spmm_int8(mat_out, q, out, bias_out, x_scale=s, residual=..., ln_...) with the same threads,\n"
    "variant and tile. Threads always split the tokens; token_block 0 (auto): 128 tokens while\n"
    "n_mid x 144 int32 take at most half the per-core L2 (read at import), else 64.\n"
    "x_amax / out_amax: the ranges of x given / of out computed, as spmm_int8.\n"
    "GIL released; errors as spmm (ValueError,\n"
    "TypeError), never a crash.";

/* ---- qkv_attention_int8: the q / k / v product and INT8 attention in one call -----------
 * Per block of whole sequences (as many as fit in 128 tokens, at least one): x quantized and
 * packed (as spmm_int8), the stacked q | k | v product's accumulators kept channel-major for all
 * 3H rows and dequantized + biased in place (mid_int8, no activation), then every (sequence,
 * head) of the block runs attn_head_int8_cm on those rows. The same values as spmm_int8 into fp32
 * q | k | v rows followed by attention(precision='int8'), without writing the rows out token-major
 * and reading them back through transposes. Threads take whole blocks when there are enough
 * (no barrier), else share each block: slices of the packing, row chunks of the product, heads. */
typedef struct {
    int8_job J;          /* the product: X, amax / sx / inv of x, xq, plan (tb = tokens per block) */
    float *out;          /* (B * S, H) */
    const float *kb;     /* (B, S) additive key bias, or NULL */
    int64_t B, S, H, dh, spb, nblocks; /* spb: sequences per block */
    int heads, coop;     /* coop: all threads share each block */
    float scale;
    int32_t *acc;        /* per thread (or one, coop): the product's rows, nchunks * 16 x lds */
    int64_t acc_stride;
    float *ascr, *amid;  /* per thread: attention head scratch; mid_int8's ranges (not used) */
    int64_t ascr_stride, amid_stride;
    /* |q|, |k|, |v| <= sx_max * wbound + bmax (an exact int32 sum of at most 127 * 127 * n_in):
     * a block whose bound is finite holds no NaN or inf, and skips sk_attn8_nan's pass */
    float wbound, bmax;
} qkva_job;

/* whether the threads sharing a block can each take whole heads: q, k and v rows of every head
 * start on a chunk (and so a block-row) boundary and there is a head for every thread */
static int qkva_head_split(const qkva_job *Q, int nthr)
{
    const SKMatrix *m = Q->J.c->m;
    return Q->heads >= nthr && Q->dh % SK_ROWS_PER_CHUNK == 0 && SK_ROWS_PER_CHUNK % m->bh == 0;
}

/* sequences [s0, s1) as one block, by thread tid of the nthr that share it (nthr 1: alone). Shared
 * blocks: the threads pack slices of the input, then each computes the q, k and v rows of its own
 * heads and runs those heads (no second barrier, and each head reads rows its own core wrote) where
 * qkva_head_split allows, else row chunks balanced by work, a barrier, and heads round robin. */
static void qkva_block(const qkva_job *Q, int tid, int nthr, int64_t s0, int64_t s1, uint8_t *xq, int32_t *acc)
{
    const int8_job *J = &Q->J;
    const SKMatrix *m = J->c->m;
    const int64_t S = Q->S, H = Q->H, dh = Q->dh, t0 = s0 * S, nb = (s1 - s0) * S;
    const int64_t nq = (m->n_in + 3) / 4, lds = J->p.lds;
    float *amid = Q->amid + (int64_t)sk_thread_num() * Q->amid_stride;
    sk_tiling tl;
    sk_make_tiling(&tl, nb, J->p.tt, nq * 4);
    int64_t h0 = 0, h1 = Q->heads, hstep = 1;
    if (nthr > 1) {
        int8_pack(J, &tl, xq, t0, nb, nq * tid / nthr, nq * (tid + 1) / nthr);
#pragma omp barrier
        if (qkva_head_split(Q, nthr)) {
            h0 = Q->heads * tid / nthr, h1 = Q->heads * (tid + 1) / nthr;
            for (int part = 0; part < 3; part++) /* q, k, v rows of heads [h0, h1) */
                int8_rows_mid(J, &tl, xq, acc, t0, nb, (part * H + h0 * dh) / SK_ROWS_PER_CHUNK,
                              (part * H + h1 * dh) / SK_ROWS_PER_CHUNK, SK_ACT_NONE, amid);
        } else {
            int64_t c0, c1;
            skm_thread_chunks(m, tid, nthr, &c0, &c1);
            int8_rows_mid(J, &tl, xq, acc, t0, nb, c0, c1, SK_ACT_NONE, amid);
#pragma omp barrier
            h0 = tid, hstep = nthr;
        }
    } else {
        int8_pack(J, &tl, xq, t0, nb, 0, nq);
        int8_rows_mid(J, &tl, xq, acc, t0, nb, 0, m->nchunks, SK_ACT_NONE, amid);
    }
    float *ascr = Q->ascr + (int64_t)sk_thread_num() * Q->ascr_stride;
    float sx_max = 0.0f; /* NaN (a non-finite token) as +inf */
    for (int64_t t = t0; t < t0 + nb; t++) sx_max = (J->sx[t] > sx_max || J->sx[t] != J->sx[t]) ? J->sx[t] : sx_max;
    const int check = !(sx_max * Q->wbound + Q->bmax <= SK_RANGE_MAX);
    for (int64_t s = 0; s < s1 - s0; s++)
        for (int64_t h = h0; h < h1; h += hstep) {
            const float *qr = (const float *)acc + h * dh * lds + s * S;
            const float *kb = Q->kb ? Q->kb + (s0 + s) * S : NULL;
            float *o = Q->out + (s0 + s) * S * H + h * dh;
            Q->J.c->kt->attn_head_int8_cm(qr, qr + H * lds, qr + 2 * H * lds, lds, S, dh, Q->scale, kb, o, H, ascr);
            if (check) sk_attn8_nan(qr, qr + H * lds, qr + 2 * H * lds, 1, lds, S, dh, kb, o, H);
        }
}

static void run_qkva(const qkva_job *Q)
{
    const int64_t T = Q->J.c->T;
#pragma omp parallel num_threads(Q->J.p.nt)
    {
        const int tid = sk_thread_num(), nthr = sk_num_threads();
        if (Q->coop) {
            int8_scales(&Q->J, T * tid / nthr, T * (tid + 1) / nthr); /* ends with a barrier */
            for (int64_t b = 0; b < Q->nblocks; b++) {
                qkva_block(Q, tid, nthr, b * Q->spb, (b + 1) * Q->spb < Q->B ? (b + 1) * Q->spb : Q->B, Q->J.xq, Q->acc);
                /* with whole heads per thread no barrier follows the product: the next block's
                 * packing must wait until every thread has read this block's input */
                if (b + 1 < Q->nblocks && qkva_head_split(Q, nthr)) {
#pragma omp barrier
                }
            }
        } else {
            const int64_t b0 = Q->nblocks * tid / nthr, b1 = Q->nblocks * (tid + 1) / nthr;
            const int64_t s0 = b0 * Q->spb, s1 = b1 * Q->spb < Q->B ? b1 * Q->spb : Q->B;
            int8_scales(&Q->J, s0 * Q->S, s1 * Q->S); /* per token, token split: no barrier */
            for (int64_t b = b0; b < b1; b++)
                qkva_block(Q, 0, 1, b * Q->spb, (b + 1) * Q->spb < Q->B ? (b + 1) * Q->spb : Q->B,
                           Q->J.xq + (int64_t)tid * Q->J.xq_stride, Q->acc + (int64_t)tid * Q->acc_stride);
        }
    }
}

static int qkva_run(sk_spmm_call *c, const sk_spmm_opts *o, qkva_job *Q, PyObject *x_amax)
{
    const SKMatrix *m = c->m;
    int8_job *J = &Q->J;
    J->c = c;
    J->per_token = 1;
    if (get_amax(&c->bufs, NULL, J, x_amax, Py_None, c->out, NULL, 1, 1, c->T) < 0) return -1;
    /* contents checked after the last acquisition: a buffer export (__buffer__) runs Python code */
    if (Q->kb && sk_check_key_bias_values(Q->kb, c->T) < 0) return -1;
    float sw_max = 0.0f;
    for (int64_t o = 0; o < m->n_out; o++) sw_max = m->wscale[o] > sw_max ? m->wscale[o] : sw_max; /* finite: pack */
    Q->wbound = 127.0f * 127.0f * (float)m->n_in * sw_max;
    Q->bmax = 0.0f;
    for (int64_t o = 0; c->bias && o < m->n_out; o++) {
        const float b = fabsf(c->bias[o]);
        Q->bmax = (b > Q->bmax || b != b) ? b : Q->bmax;
    }
    if (c->T == 0 || Q->H == 0) return 0;
    const int64_t T = c->T, Tp = sk_round_up(T, 16), nq = (m->n_in + 3) / 4;
    Q->spb = Q->S <= 128 ? 128 / Q->S : 1;
    if (Q->spb > Q->B) Q->spb = Q->B;
    Q->nblocks = (Q->B + Q->spb - 1) / Q->spb;
    const int64_t nb = Q->spb * Q->S, nt = o->threads;
    /* whole blocks per thread when they divide evenly or are many, else every block shared */
    Q->coop = nt > 1 && !(Q->nblocks % nt == 0 || Q->nblocks >= 4 * nt);
    /* a block is a whole sequence at most: wider register tiles for long ones, so that its tiling
     * stays within SK_MAX_TILES (seq <= SK_ATTN8_MAX_S: at most 256 tiles of 256 tokens, plus tails) */
    int64_t tt = default_tile_int8(c->variant, m->bh);
    while (tt < 256 && sk_round_up(nb, SK_TOK_GROUP) / tt + 8 > SK_MAX_TILES) tt *= 2;
    sk_plan_make(&J->p, o, 2, T, tt, nb);
    J->p.tt = tt;
    J->p.tb = nb; /* whole sequences, even past 128 tokens: the heads need every key */
    J->p.lds = sk_round_up(nb, SK_TOK_GROUP) + 16;
    J->p.token_split = !Q->coop;
    J->X = (const float *)c->x->buf;
    const int64_t copies = Q->coop ? 1 : nt;
    J->xq_stride = sk_round_up(nq * 4 * sk_round_up(nb, SK_TOK_GROUP), 64);
    Q->acc_stride = m->nchunks * SK_ROWS_PER_CHUNK * J->p.lds;
    Q->ascr_stride = sk_round_up(sk_attn8_scratch_floats(Q->S, Q->dh), 16);
    Q->amid_stride = sk_round_up(nb, 16);
    size_t n1 = 0, n2 = 0, n3 = 0, n4 = 0;
    J->xq = (uint8_t *)sk_ws_take((size_t)(J->xq_stride * copies), &n1);
    Q->acc = (int32_t *)sk_ws_take(sizeof(int32_t) * (size_t)(Q->acc_stride * copies), &n2);
    Q->ascr = (float *)sk_ws_take(sizeof(float) * (size_t)((Q->ascr_stride + Q->amid_stride) * nt), &n3);
    float *sc = (float *)sk_ws_take(sizeof(float) * (size_t)(3 * Tp), &n4);
    int rc = 0;
    if (!J->xq || !Q->acc || !Q->ascr || !sc) {
        PyErr_NoMemory();
        rc = -1;
    } else {
        Q->amid = Q->ascr + Q->ascr_stride * nt;
        memset(Q->amid, 0, sizeof(float) * (size_t)(Q->amid_stride * nt));
        if (!J->amax_given) J->amax = sc;
        J->sx = sc + Tp, J->inv = sc + 2 * Tp;
        Py_BEGIN_ALLOW_THREADS
        run_qkva(Q);
        Py_END_ALLOW_THREADS
    }
    sk_ws_give(J->xq, n1, (int)nt);
    sk_ws_give(Q->acc, n2, (int)nt);
    sk_ws_give(Q->ascr, n3, (int)nt);
    sk_ws_give(sc, n4, (int)nt);
    return rc;
}

PyObject *sk_py_qkv_attention_int8(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"mat", "x", "out", "num_heads", "bias", "scale", "key_bias", "threads", "variant",
                             "x_amax", NULL};
    sk_spmm_opts o = SK_SPMM_OPTS_INIT;
    PyObject *key_bias = Py_None, *x_amax = Py_None;
    double scale = -1.0;
    qkva_job Q;
    memset(&Q, 0, sizeof(Q));
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOi|OdOO&OO:qkv_attention_int8", kwlist, &o.mat, &o.x, &o.out,
                                     &Q.heads, &o.bias, &scale, &key_bias, sk_threads_arg, &o.threads, &o.variant, &x_amax)) {
        sk_parse_failed();
        return NULL;
    }
    sk_spmm_call c;
    int rc = sk_qkva_acquire(&c, &o, key_bias, &Q.kb);
    if (rc == 0) {
        Q.B = c.x->shape[0], Q.S = c.x->shape[1], Q.H = c.m->n_out / 3;
        Q.out = (float *)c.out->buf;
        rc = sk_attention_params(Q.heads, Q.H, Q.S, 1, scale, &Q.dh, &Q.scale);
    }
    if (rc == 0) rc = qkva_run(&c, &o, &Q, x_amax);
    sk_args_release(&c.bufs);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

const char sk_doc_qkv_attention_int8[] =
    "qkv_attention_int8(mat, x, out, num_heads, bias=None, scale=1/sqrt(head_dim), key_bias=None, threads=1,\n"
    "                   variant=None, x_amax=None)\n\n"
    "Self-attention's q / k / v product and INT8 attention in one call, for inference:\n"
    "  qkv = dequant(quant(x) @ W_q.T) + bias        (spmm_int8, per-token activation scales)\n"
    "  out = attention(qkv, num_heads, scale, key_bias, precision='int8')\n"
    "mat: int8 SparseMatrix (pack_int8) of q | k | v stacked, n_out = 3 * hidden; x: float32 C-contiguous\n"
    "(batch, seq, n_in); out: writable float32 (batch, seq, hidden), heads side by side, apart from\n"
    "the inputs; bias: float32 (3 * hidden,) or None; key_bias: float32 (batch, seq) or None, as\n"
    "attention; x_amax: float32 (batch * seq,), max |x| per token already known, as spmm_int8.\n"
    "Bit-identical to spmm_int8(mat, x2d, qkv, bias, x_amax=...) followed by attention(qkv, out,\n"
    "num_heads, scale, key_bias, precision='int8') with the same variant, for any threads: the\n"
    "product's rows stay channel-major and go straight into each head's INT8 layouts. seq <= 65536;\n"
    "a negative scale means the default.\n"
    "GIL released; ValueError / TypeError on bad input, never a crash.";

static PyObject *spmm_int8_entry(PyObject *args, PyObject *kw, int raw)
{
    static char *kwlist[] = {"mat", "x", "out", "bias", "threads", "variant", "per_token", "tile", "token_block",
                             "split", "activation", "residual", "ln_weight", "ln_bias", "ln_eps", "x_scale",
                             "out_scale", "x_amax", "out_amax", NULL};
    static char *kwlist_raw[] = {"mat", "x", "out", "threads", "variant", "tile", "token_block", "split", NULL};
    sk_spmm_opts o = SK_SPMM_OPTS_INIT;
    int8_opts q = {.x_scale = Py_None, .out_scale = Py_None, .x_amax = Py_None, .out_amax = Py_None, .per_token = 1,
                   .raw = raw};
    if (raw ? !PyArg_ParseTupleAndKeywords(args, kw, "OOO|O&OiiO:spmm_int8_raw", kwlist_raw, &o.mat, &o.x, &o.out,
                                           sk_threads_arg, &o.threads, &o.variant, &o.tile, &o.token_block, &o.split)
            : !PyArg_ParseTupleAndKeywords(args, kw, "OOO|OO&OpiiOOOOOdOOOO:spmm_int8", kwlist, &o.mat, &o.x, &o.out,
                                           &o.bias, sk_threads_arg, &o.threads, &o.variant, &q.per_token, &o.tile, &o.token_block,
                                           &o.split, &o.activation, &o.residual, &o.ln_weight, &o.ln_bias,
                                           &o.ln_eps, &q.x_scale, &q.out_scale, &q.x_amax, &q.out_amax)) {
        sk_parse_failed();
        return NULL;
    }
    const char xk = (raw || q.x_scale != Py_None) ? 'b' : 'f';
    const char ok = raw ? 'i' : (q.out_scale != Py_None ? 'b' : 'f');
    sk_spmm_call c;
    Py_buffer *vxs = NULL, *vos = NULL;
    int rc = sk_spmm_acquire(&c, &o, DT_INT8, "mat: needs an int8 SparseMatrix (pack_int8); use spmm for fp32", xk, ok);
    if (rc == 0) rc = get_token_scales(&c, &q, &vxs, &vos);
    if (rc == 0) rc = spmm_int8_run(&c, &o, &q, vxs, vos);
    sk_args_release(&c.bufs);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

PyObject *sk_py_spmm_int8(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    return spmm_int8_entry(args, kw, 0);
}

PyObject *sk_py_spmm_int8_raw(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    return spmm_int8_entry(args, kw, 1);
}

const char sk_doc_spmm_int8[] =
    "spmm_int8(mat, x, out, bias=None, threads=1, variant=None, per_token=True, tile=0, token_block=0,\n"
    "          split='auto', activation=None, residual=None, ln_weight=None, ln_bias=None, ln_eps=1e-12,\n"
    "          x_scale=None, out_scale=None)\n\n"
    "out = dequant(quant(x) @ W_q.T) + bias with x float32 (tokens, n_in), out float32 (tokens, n_out).\n"
    "Activations are quantized symmetrically per token (per_token=False: one scale for the whole x):\n"
    "x_q = clamp(rint(x * (127 / amax)), -127, 127); products accumulate exactly in int32; then\n"
    "out[t, o] = acc * (amax_t / 127) * w_scale[o] + bias[o]. Rows with amax 0 (or below 3.8e-37) give\n"
    "bias; a row holding NaN or inf gives NaN (per_token=False: every row); any finite amax up to\n"
    "float32's max is quantized (the outputs may overflow to +-inf).\n"
    "activation, residual and the LayerNorm epilogue as in spmm.\n"
    "x_scale: float32 (tokens,) -> x is int8 (tokens, n_in), already quantized (x ~= x_scale[t] * x_q),\n"
    "per_token ignored; x_scale entries >= 0 and finite, or NaN (out_scale's mark of a non-finite\n"
    "token: NaN outputs), else ValueError. out_scale: writable float32 (tokens,) -> out is int8 (tokens, n_out): the fp32\n"
    "result (after the epilogues) quantized per token by the same rule, scale in out_scale, so one\n"
    "layer's INT8 output feeds the next layer without an fp32 round trip through memory.\n"
    "x_amax: float32 (tokens,), max |x| per token (NaN as +inf) of a float32 x, known already (the\n"
    "out_amax of the call that wrote x): the range pass over x is skipped; a NaN entry gives NaN\n"
    "outputs for its token (per_token=False: for every token); a wrong range gives wrong\n"
    "quantization, never a crash. out_amax: writable float32 (tokens,) -> the same ranges of the\n"
    "float32 out (after the epilogues), computed while each row is still in cache.\n"
    "GIL released; errors as spmm.";

const char sk_doc_spmm_int8_raw[] =
    "spmm_int8_raw(mat, x, out, threads=1, variant=None, tile=0, token_block=0, split='auto') -> None\n\n"
    "Exact integer product out = x @ W_q.T for int8 x (tokens, n_in) into int32 out (tokens, n_out)\n"
    "(the accumulation the int8 path uses, without scales or bias; for testing and reuse).";
