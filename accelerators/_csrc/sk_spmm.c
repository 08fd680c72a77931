/*
 * What spmm and spmm_int8 share: checking the options, acquiring x / out / bias and the
 * epilogue buffers (one acquisition helper for both), and the plan of a call (register tile,
 * token block, scratch stride, unpack group, how threads share the work).
 */
#include "sk_py.h"
#include <stdlib.h>
#include <string.h>

/* the text of an option: NULL (no exception) when o is not a str or holds a NUL character, which
 * strcmp would stop at ("gelu\0junk" must not pass as "gelu") */
static const char *option_text(PyObject *o)
{
    Py_ssize_t n = 0;
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &n) : NULL;
    if (s == NULL || (size_t)n != strlen(s)) {
        PyErr_Clear(); /* a str that cannot be encoded: the caller's ValueError names the choices */
        return NULL;
    }
    return s;
}

/* split: 0 auto, 1 rows, 2 tokens */
static int parse_split(PyObject *o, int *split)
{
    if (o == NULL || o == Py_None) {
        *split = 0;
        return 0;
    }
    const char *s = option_text(o);
    if (s && strcmp(s, "auto") == 0) *split = 0;
    else if (s && strcmp(s, "rows") == 0) *split = 1;
    else if (s && strcmp(s, "tokens") == 0) *split = 2;
    else {
        PyErr_SetString(PyExc_ValueError, "split must be 'auto', 'rows' or 'tokens'");
        return -1;
    }
    return 0;
}

static int parse_activation(PyObject *o, int *act)
{
    if (o == NULL || o == Py_None) {
        *act = SK_ACT_NONE;
        return 0;
    }
    const char *s = option_text(o);
    if (s && strcmp(s, "none") == 0) *act = SK_ACT_NONE;
    else if (s && strcmp(s, "gelu") == 0) *act = SK_ACT_GELU;
    else {
        PyErr_SetString(PyExc_ValueError, "activation must be None, 'none' or 'gelu'");
        return -1;
    }
    return 0;
}

/* The options that need no buffer: split, activation, the matrix (type and dtype), threads,
 * variant, tile and token block. -1 with a Python exception set on any bad one. */
static int check_options(sk_spmm_call *c, const sk_spmm_opts *o, int want_dtype, const char *dtype_msg)
{
    if (parse_split(o->split, &c->split) < 0 || parse_activation(o->activation, &c->act) < 0) return -1;
    if (!PyObject_TypeCheck(o->mat, &SKMatrixType)) {
        PyErr_Format(PyExc_TypeError, "mat: expected a SparseMatrix, got %.200s", Py_TYPE(o->mat)->tp_name);
        return -1;
    }
    c->m = (SKMatrix *)o->mat;
    if (c->m->dtype != want_dtype) {
        PyErr_SetString(PyExc_TypeError, dtype_msg);
        return -1;
    }
    if (sk_check_threads(o->threads) < 0 || (c->variant = sk_variant_from_obj(o->variant)) < 0) return -1;
    c->kt = sk_variant_tables[c->variant];
    if (o->tile != 0 && (o->tile < 16 || o->tile > 256 || (o->tile & (o->tile - 1)) != 0)) {
        PyErr_Format(PyExc_ValueError, "tile must be 0 (auto) or a power of two in [16, 256], got %d", o->tile);
        return -1;
    }
    if (o->token_block < 0) {
        PyErr_SetString(PyExc_ValueError, "token_block must be >= 0");
        return -1;
    }
    return 0;
}

int sk_spmm_acquire(sk_spmm_call *c, const sk_spmm_opts *o, int want_dtype, const char *dtype_msg, char xk, char ok)
{
    memset(c, 0, sizeof(*c));
    if (check_options(c, o, want_dtype, dtype_msg) < 0) return -1;
    Py_buffer *vb;
    if (!(c->x = sk_arg(&c->bufs, o->x, "x", xk, 2, 0)) || !(c->out = sk_arg(&c->bufs, o->out, "out", ok, 2, 1)) ||
        sk_arg_opt(&c->bufs, o->bias, "bias", 'f', 1, 0, &vb) < 0)
        return -1;
    const SKMatrix *m = c->m;
    c->T = c->x->shape[0];
    const int64_t xdims[2] = {SK_ANY, m->n_in}, odims[2] = {c->T, m->n_out};
    if (sk_check_shape(c->x, "x", 2, xdims, "tokens") < 0 || sk_check_shape(c->out, "out", 2, odims, NULL) < 0 ||
        (vb && sk_check_shape(vb, "bias", 1, &m->n_out, NULL) < 0))
        return -1;
    if (sk_overlap(c->x, c->out) || (vb && sk_overlap(vb, c->out))) {
        PyErr_SetString(PyExc_ValueError, "out must not overlap x or bias");
        return -1;
    }
    c->bias = vb ? (const float *)vb->buf : NULL;
    return sk_epilogue_acquire(c, o);
}

int sk_ffn_acquire(sk_spmm_call *c1, sk_spmm_call *c2, const sk_spmm_opts *o1, const sk_spmm_opts *o2)
{
    memset(c1, 0, sizeof(*c1));
    memset(c2, 0, sizeof(*c2));
    if (check_options(c1, o1, DT_INT8, "mat_in: needs an int8 SparseMatrix (pack_int8)") < 0 ||
        check_options(c2, o2, DT_INT8, "mat_out: needs an int8 SparseMatrix (pack_int8)") < 0)
        return -1;
    const SKMatrix *m1 = c1->m, *m2 = c2->m;
    if (m2->n_in != m1->n_out) {
        PyErr_Format(PyExc_ValueError, "mat_out: expected n_in %lld (mat_in's n_out), got %lld", (long long)m1->n_out,
                     (long long)m2->n_in);
        return -1;
    }
    Py_buffer *vb1, *vb2;
    if (!(c1->x = sk_arg(&c1->bufs, o1->x, "x", 'f', 2, 0)) || !(c2->out = sk_arg(&c1->bufs, o2->out, "out", 'f', 2, 1)) ||
        sk_arg_opt(&c1->bufs, o1->bias, "bias_in", 'f', 1, 0, &vb1) < 0 ||
        sk_arg_opt(&c1->bufs, o2->bias, "bias_out", 'f', 1, 0, &vb2) < 0)
        return -1;
    c1->T = c2->T = c1->x->shape[0];
    const int64_t xdims[2] = {SK_ANY, m1->n_in}, odims[2] = {c1->T, m2->n_out};
    if (sk_check_shape(c1->x, "x", 2, xdims, "tokens") < 0 || sk_check_shape(c2->out, "out", 2, odims, NULL) < 0 ||
        (vb1 && sk_check_shape(vb1, "bias_in", 1, &m1->n_out, NULL) < 0) ||
        (vb2 && sk_check_shape(vb2, "bias_out", 1, &m2->n_out, NULL) < 0))
        return -1;
    if (sk_overlap(c1->x, c2->out) || (vb1 && sk_overlap(vb1, c2->out)) || (vb2 && sk_overlap(vb2, c2->out))) {
        PyErr_SetString(PyExc_ValueError, "out must not overlap x, bias_in or bias_out");
        return -1;
    }
    c1->out = c2->out;
    c2->x = c1->x;
    c1->bias = vb1 ? (const float *)vb1->buf : NULL;
    c2->bias = vb2 ? (const float *)vb2->buf : NULL;
    return sk_epilogue_acquire(c2, o2);
}

int sk_qkva_acquire(sk_spmm_call *c, const sk_spmm_opts *o, PyObject *key_bias, const float **kb)
{
    memset(c, 0, sizeof(*c));
    if (check_options(c, o, DT_INT8, "mat: needs an int8 SparseMatrix (pack_int8) of the stacked q | k | v") < 0)
        return -1;
    const SKMatrix *m = c->m;
    if (m->n_out % 3 != 0) {
        PyErr_Format(PyExc_ValueError, "mat: n_out must be 3 * hidden (q | k | v stacked), got %lld", (long long)m->n_out);
        return -1;
    }
    Py_buffer *vb, *vk;
    if (!(c->x = sk_arg(&c->bufs, o->x, "x", 'f', 3, 0)) || !(c->out = sk_arg(&c->bufs, o->out, "out", 'f', 3, 1)) ||
        sk_arg_opt(&c->bufs, o->bias, "bias", 'f', 1, 0, &vb) < 0 ||
        sk_arg_opt(&c->bufs, key_bias, "key_bias", 'f', 2, 0, &vk) < 0)
        return -1;
    const int64_t B = c->x->shape[0], S = c->x->shape[1];
    const int64_t xdims[3] = {SK_ANY, SK_ANY, m->n_in}, odims[3] = {B, S, m->n_out / 3}, kdims[2] = {B, S};
    if (sk_check_shape(c->x, "x", 3, xdims, NULL) < 0 || sk_check_shape(c->out, "out", 3, odims, NULL) < 0 ||
        (vb && sk_check_shape(vb, "bias", 1, &m->n_out, NULL) < 0) ||
        (vk && sk_check_shape(vk, "key_bias", 2, kdims, NULL) < 0))
        return -1;
    if (sk_overlap(c->x, c->out) || (vb && sk_overlap(vb, c->out)) || (vk && sk_overlap(vk, c->out))) {
        PyErr_SetString(PyExc_ValueError, "out must not overlap x, bias or key_bias");
        return -1;
    }
    c->T = B * S; /* key_bias's values: checked by the caller once every buffer is acquired */
    c->bias = vb ? (const float *)vb->buf : NULL;
    *kb = vk ? (const float *)vk->buf : NULL;
    return 0;
}

/* chunks per unpack group: scratch of about 160 KiB per thread (L2), at most 16 chunks */
static int64_t unpack_group(int64_t lds)
{
    const char *e = getenv("SPARSEBENCH_UNPACK_GROUP"); /* tuning hook for benchmarks */
    int64_t g = e ? atoll(e) : (160 * 1024) / (SK_ROWS_PER_CHUNK * lds * 4);
    if (g < 1) g = 1;
    if (g > 16) g = 16;
    return g;
}

/* token split when asked, or (auto) with one thread or at least 64 tokens per thread */
static int use_token_split(int split, int64_t T, int threads)
{
    if (split == 1) return 0;
    if (split == 2) return 1;
    return threads == 1 || T >= 64 * (int64_t)threads;
}

void sk_plan_make(sk_plan *p, const sk_spmm_opts *o, int split, int64_t T, int64_t auto_tile, int64_t auto_tb)
{
    const int64_t tt = o->tile ? o->tile : auto_tile;
    int64_t tb = o->token_block ? o->token_block : auto_tb;
    /* more than 128 tokens per block: the scratch rows outgrow L1/L2 and the unpack slows down */
    if (tb > 128) tb = 128;
    tb = tb / tt * tt;
    if (tb < tt) tb = tt;
    if (tb > sk_round_up(T, SK_TOK_GROUP)) tb = sk_round_up(T, SK_TOK_GROUP);
    p->nt = o->threads;
    p->tt = tt;
    p->tb = tb;
    p->lds = sk_round_up(tb, SK_TOK_GROUP) + 16;
    p->group = unpack_group(p->lds);
    p->token_split = use_token_split(split, T, o->threads);
}

void sk_make_tiling(sk_tiling *tl, int64_t nb, int64_t tt, int64_t n_rows)
{
    const int64_t nbp = sk_round_up(nb, SK_TOK_GROUP);
    int64_t t = 0, off = 0;
    tl->ntiles = 0;
    while (t < nbp) {
        int64_t w = tt;
        while (w > nbp - t) w /= 2;
        tl->tiles[tl->ntiles].t0 = t;
        tl->tiles[tl->ntiles].width = w;
        tl->tiles[tl->ntiles].offset = off;
        tl->ntiles++;
        off += w * n_rows;
        t += w;
    }
}

void sk_token_range(int64_t T, int tid, int nthr, int64_t *ta, int64_t *tb)
{
    *ta = (T * tid / nthr) / SK_TOK_GROUP * SK_TOK_GROUP;
    *tb = tid == nthr - 1 ? T : (T * (tid + 1) / nthr) / SK_TOK_GROUP * SK_TOK_GROUP;
}
