/*
 * Packing: pack_csr / pack_bsr / pack_int8 validate a user's sparse weight once and copy it into
 * a SparseMatrix (blocks sorted by column in every block row, fp32 CSR optionally re-laid out in
 * column panels, int8 row sums for the activation offset), so spmm never re-checks it.
 */
#include "sk_py.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int parse_shape(PyObject *shape, int64_t *n_out, int64_t *n_in)
{
    long long a, b;
    if (!PyTuple_Check(shape) && !PyList_Check(shape)) {
        PyErr_SetString(PyExc_TypeError, "shape must be a tuple (n_out, n_in)");
        return -1;
    }
    PyObject *t = PySequence_Tuple(shape);
    if (!t) return -1;
    int ok = PyArg_ParseTuple(t, "LL;shape must be a pair of ints (n_out, n_in)", &a, &b);
    Py_DECREF(t);
    if (!ok) return sk_parse_failed();
    if (a < 0 || b < 0) {
        PyErr_SetString(PyExc_ValueError, "shape entries must be >= 0");
        return -1;
    }
    if (a > INT32_MAX || b > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "shape entries must be < 2**31");
        return -1;
    }
    *n_out = a;
    *n_in = b;
    return 0;
}

static int check_block(int bh, int dtype)
{
    if (dtype == DT_INT8 && bh == SK_TILE_ROWS) return 0;
    if (bh != 1 && bh != 2 && bh != 4 && bh != 8) {
        PyErr_Format(PyExc_ValueError, "block rows must be 1, 2, 4 or 8%s, got %d",
                     dtype == DT_INT8 ? " (int8: or 16)" : "", bh);
        return -1;
    }
    return 0;
}

/* Validate indptr/indices (any int kind) and copy into m->ptr / m->idx. n_cols = bound for idx. */
static int copy_structure(SKMatrix *m, const Py_buffer *vp, const Py_buffer *vi, int64_t n_cols)
{
    const char kp = sk_buffer_kind(vp), ki = sk_buffer_kind(vi);
    if (vp->shape[0] != m->nbr + 1) {
        PyErr_Format(PyExc_ValueError, "indptr: expected length %lld (block rows + 1), got %lld",
                     (long long)(m->nbr + 1), (long long)vp->shape[0]);
        return -1;
    }
    const int64_t nnzb = vi->shape[0];
    m->nnzb = nnzb;
    m->ptr = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m->nbr + 1));
    m->idx = (int32_t *)sk_aligned_malloc(sizeof(int32_t) * (size_t)(nnzb + 1)); /* + 1: never 0 bytes */
    if (!m->ptr || !m->idx) {
        PyErr_NoMemory();
        return -1;
    }
    for (int64_t r = 0; r <= m->nbr; r++) {
        int64_t p = sk_load_int(vp, kp, r);
        if (r == 0 && p != 0) {
            PyErr_Format(PyExc_ValueError, "indptr[0] must be 0, got %lld", (long long)p);
            return -1;
        }
        if (r > 0 && p < m->ptr[r - 1]) {
            PyErr_Format(PyExc_ValueError, "indptr must be non-decreasing (indptr[%lld]=%lld < indptr[%lld]=%lld)",
                         (long long)r, (long long)p, (long long)(r - 1), (long long)m->ptr[r - 1]);
            return -1;
        }
        m->ptr[r] = p;
    }
    if (m->ptr[m->nbr] != nnzb) {
        PyErr_Format(PyExc_ValueError, "indptr[-1]=%lld must equal len(indices)=%lld",
                     (long long)m->ptr[m->nbr], (long long)nnzb);
        return -1;
    }
    for (int64_t j = 0; j < nnzb; j++) {
        int64_t c = sk_load_int(vi, ki, j);
        if (c < 0 || c >= n_cols) {
            PyErr_Format(PyExc_ValueError, "indices[%lld]=%lld out of range [0, %lld)", (long long)j,
                         (long long)c, (long long)n_cols);
            return -1;
        }
        m->idx[j] = (int32_t)c;
    }
    return 0;
}

/* A new matrix of `dtype` whose block structure is copied from indptr / indices (fp32: blocks of
 * bh rows x 1 column; int8: bh rows x 4 columns). NULL with an exception set. */
static SKMatrix *new_packed(int dtype, int64_t n_out, int64_t n_in, int bh, const Py_buffer *vp,
                            const Py_buffer *vi)
{
    SKMatrix *m = skm_new();
    if (!m) return NULL;
    m->dtype = dtype;
    m->n_out = n_out;
    m->n_in = n_in;
    m->bh = bh;
    m->bw = dtype == DT_FP32 ? 1 : 4;
    m->nbr = (n_out + bh - 1) / bh;
    if (copy_structure(m, vp, vi, dtype == DT_FP32 ? n_in : (n_in + 3) / 4) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* Stable sort of the n column indices at idx into perm (perm[j] = original position). */
static void sort_perm(const int32_t *idx, int64_t n, int64_t *perm)
{
    for (int64_t j = 0; j < n; j++) perm[j] = j;
    if (n > 64) {
        /* long rows: shell sort keyed on (column, original position), which keeps it stable */
        for (int64_t gap = n / 2; gap > 0; gap /= 2)
            for (int64_t i = gap; i < n; i++) {
                int64_t t = perm[i], jj = i;
                while (jj >= gap) {
                    int64_t q = perm[jj - gap];
                    if (idx[q] > idx[t] || (idx[q] == idx[t] && q > t)) {
                        perm[jj] = q;
                        jj -= gap;
                    } else break;
                }
                perm[jj] = t;
            }
        return;
    }
    for (int64_t i = 1; i < n; i++) { /* insertion sort (stable) */
        int64_t t = perm[i], jj = i;
        while (jj > 0 && idx[perm[jj - 1]] > idx[t]) {
            perm[jj] = perm[jj - 1];
            jj--;
        }
        perm[jj] = t;
    }
}

static int row_sorted(const int32_t *idx, int64_t n)
{
    for (int64_t j = 1; j < n; j++)
        if (idx[j] < idx[j - 1]) return 0;
    return 1;
}

/* Sort the blocks of every block row by column (stable; values follow). `vals_per` values of
 * `vsize` bytes per block. Returns -1 (MemoryError set) on allocation failure. */
static int sort_rows(SKMatrix *m, void *vals, int vals_per, size_t vsize)
{
    int64_t maxlen = 0;
    int unsorted = 0;
    for (int64_t r = 0; r < m->nbr; r++) {
        const int64_t a = m->ptr[r], n = m->ptr[r + 1] - a;
        if (n > maxlen) maxlen = n;
        unsorted = unsorted || !row_sorted(m->idx + a, n);
    }
    if (!unsorted) return 0;
    const size_t bsz = vsize * (size_t)vals_per;
    int32_t *ti = (int32_t *)malloc(sizeof(int32_t) * (size_t)(maxlen + 1));
    char *tv = (char *)malloc(bsz * (size_t)(maxlen + 1));
    int64_t *perm = (int64_t *)malloc(sizeof(int64_t) * (size_t)(maxlen + 1));
    if (!ti || !tv || !perm) {
        free(ti); free(tv); free(perm);
        PyErr_NoMemory();
        return -1;
    }
    char *v = (char *)vals;
    for (int64_t r = 0; r < m->nbr; r++) {
        const int64_t a = m->ptr[r], n = m->ptr[r + 1] - a;
        if (row_sorted(m->idx + a, n)) continue;
        sort_perm(m->idx + a, n, perm);
        for (int64_t j = 0; j < n; j++) {
            ti[j] = m->idx[a + perm[j]];
            memcpy(tv + (size_t)j * bsz, v + (size_t)(a + perm[j]) * bsz, bsz);
        }
        memcpy(m->idx + a, ti, sizeof(int32_t) * (size_t)n);
        memcpy(v + (size_t)a * bsz, tv, bsz * (size_t)n);
    }
    free(ti);
    free(tv);
    free(perm);
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Column panels (see sk_segs in sk_common.h)
 * ---------------------------------------------------------------------------------- */
typedef struct {
    int64_t np, panel; /* panels, input columns per panel */
    int64_t gbr;       /* block rows per group */
    int64_t *beg, *len; /* per block row of the group and panel: first block, block count */
    int64_t *cnt;      /* histogram of segment lengths (all zero between panels) */
    int64_t s, nz;     /* segments and blocks emitted so far */
} panel_work;

/* segments: every block row in panel 0 (even empty), non-empty ones in the other panels */
static int64_t count_segments(const SKMatrix *m, int64_t np, int64_t panel)
{
    int64_t nseg = 0;
    for (int64_t r = 0; r < m->nbr; r++) {
        int64_t j = m->ptr[r];
        for (int64_t p = 0; p < np; p++) {
            const int64_t j0 = j, lim = (p + 1) * panel;
            while (j < m->ptr[r + 1] && m->idx[j] < lim) j++;
            nseg += (p == 0 || j > j0);
        }
    }
    return nseg;
}

/* per block row of [r0, r1): where each panel's blocks begin and how many there are */
static void row_panels(const SKMatrix *m, panel_work *w, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        int64_t j = m->ptr[r];
        for (int64_t p = 0; p < w->np; p++) {
            const int64_t k = (r - r0) * (w->np + 1) + p, lim = (p + 1) * w->panel;
            w->beg[k] = j;
            while (j < m->ptr[r + 1] && m->idx[j] < lim) j++;
            w->len[k] = j - w->beg[k];
        }
    }
}

/* Panel p of block rows [r0, r1): one segment per row, by length ascending then row ascending
 * (counting sort), blocks copied in that order; empty segments only in panel 0. */
static void emit_panel(SKMatrix *m, panel_work *w, int64_t p, int64_t r0, int64_t r1)
{
    const int bh = m->bh;
    int64_t maxl = 0;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t l = w->len[(r - r0) * (w->np + 1) + p];
        w->cnt[l]++;
        if (l > maxl) maxl = l;
    }
    for (int64_t l = 0; l <= maxl; l++) {
        if (!w->cnt[l]) continue;
        w->cnt[l] = 0;
        if (l == 0 && p > 0) continue;
        for (int64_t r = r0; r < r1; r++) {
            const int64_t k = (r - r0) * (w->np + 1) + p;
            if (w->len[k] != l) continue;
            m->sg_row[w->s] = (int32_t)(r - r0);
            m->sg_start[w->s] = w->nz;
            memcpy(m->sg_idx + w->nz, m->idx + w->beg[k], sizeof(int32_t) * (size_t)l);
            memcpy(m->sg_val + w->nz * bh, m->val + w->beg[k] * bh, sizeof(float) * (size_t)(l * bh));
            w->nz += l;
            w->s++;
        }
    }
}

/* Column-panel segments of an fp32 matrix: for each group of SK_PANEL_GROUP_ROWS rows and each
 * panel of `panel` input columns. panel <= 0 or >= n_in: none. -1 with an exception set. */
static int compute_panels(SKMatrix *m, int64_t panel)
{
    m->npan = 1;
    m->panel = 0;
    if (panel <= 0 || panel >= m->n_in || m->dtype != DT_FP32) return 0;
    panel_work w = {.np = (m->n_in + panel - 1) / panel, .panel = panel, .gbr = SK_PANEL_GROUP_ROWS / m->bh};
    if (w.np > 4096) {
        PyErr_SetString(PyExc_ValueError, "panel too small (more than 4096 panels)");
        return -1;
    }
    const int64_t ng = (m->nbr + w.gbr - 1) / w.gbr, nseg = count_segments(m, w.np, panel);
    /* a segment is at most a whole block row, which repeated indices can make longer than n_in */
    int64_t maxrow = 0;
    for (int64_t r = 0; r < m->nbr; r++)
        if (m->ptr[r + 1] - m->ptr[r] > maxrow) maxrow = m->ptr[r + 1] - m->ptr[r];
    w.cnt = (int64_t *)calloc((size_t)(maxrow + 1), sizeof(int64_t));
    w.len = (int64_t *)malloc(sizeof(int64_t) * (size_t)(w.gbr * (w.np + 1)));
    w.beg = (int64_t *)malloc(sizeof(int64_t) * (size_t)(w.gbr * (w.np + 1)));
    m->sg_ptr = (int64_t *)malloc(sizeof(int64_t) * (size_t)(ng * w.np + 1));
    m->sg_row = (int32_t *)malloc(sizeof(int32_t) * (size_t)(nseg > 0 ? nseg : 1));
    m->sg_start = (int64_t *)malloc(sizeof(int64_t) * (size_t)(nseg + 1));
    m->sg_idx = (int32_t *)sk_aligned_malloc(sizeof(int32_t) * (size_t)(m->nnzb + 1));
    m->sg_val = (float *)sk_aligned_malloc(sizeof(float) * (size_t)(m->nnzb * m->bh + 16));
    const int ok = w.cnt && w.len && w.beg && m->sg_ptr && m->sg_row && m->sg_start && m->sg_idx && m->sg_val;
    for (int64_t g = 0; ok && g < ng; g++) {
        const int64_t r0 = g * w.gbr, r1 = r0 + w.gbr < m->nbr ? r0 + w.gbr : m->nbr;
        row_panels(m, &w, r0, r1);
        for (int64_t p = 0; p < w.np; p++) {
            m->sg_ptr[g * w.np + p] = w.s;
            emit_panel(m, &w, p, r0, r1);
        }
    }
    free(w.cnt);
    free(w.len);
    free(w.beg);
    if (!ok) {
        PyErr_NoMemory();
        return -1;
    }
    m->sg_ptr[ng * w.np] = w.s;
    m->sg_start[w.s] = w.nz;
    m->npan = (int)w.np;
    m->panel = panel;
    return 0;
}

/* Default panel width for CSR: the narrower of 128 / 256 input columns that gives >= 8 non-zeros
 * per row and panel on average (a 64-token slice of the packed activations for 128 columns is
 * 32 KiB and stays in L1); none when neither does (fewer non-zeros per segment than the segment
 * overhead repays), when there would be fewer than 2 or more than 4096 panels, and for blocks (a 4x1 block already
 * reuses each activation load 4 times). */
static int64_t auto_panel(const SKMatrix *m)
{
    if (m->bh != 1 || m->nbr == 0) return 0;
    for (int64_t P = 128; P <= 256; P *= 2) {
        const double per_seg = (double)m->nnzb / (double)m->nbr * (double)P / (double)m->n_in;
        /* compute_panels refuses more than 4096 panels: very wide rows get none */
        if (m->n_in >= 2 * P && (m->n_in + P - 1) / P <= 4096 && per_seg >= 8.0) return P;
    }
    return 0;
}

/* values: (nblocks, bh) or flat nblocks * bh float32, copied into m->val */
static int copy_fp32_values(SKMatrix *m, const Py_buffer *vv)
{
    const int bh = m->bh;
    const int shape_ok = vv->ndim == 1 ? vv->shape[0] == m->nnzb * bh : (vv->shape[0] == m->nnzb && vv->shape[1] == bh);
    if (!shape_ok) {
        /* sk_arg (ndim 0) admits only 1-D and 2-D values: one format each, since a single format
         * with an optional second number printed "(49)" as "(490)" */
        if (vv->ndim == 1)
            PyErr_Format(PyExc_ValueError,
                         "values: expected %lld floats (nblocks=%lld x block rows=%d), got shape (%lld)",
                         (long long)(m->nnzb * bh), (long long)m->nnzb, bh, (long long)vv->shape[0]);
        else
            PyErr_Format(PyExc_ValueError,
                         "values: expected %lld floats (nblocks=%lld x block rows=%d), got shape (%lld, %lld)",
                         (long long)(m->nnzb * bh), (long long)m->nnzb, bh, (long long)vv->shape[0],
                         (long long)vv->shape[1]);
        return -1;
    }
    m->val = (float *)sk_aligned_malloc(sizeof(float) * (size_t)(m->nnzb * bh));
    if (!m->val) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(m->val, vv->buf, sizeof(float) * (size_t)(m->nnzb * bh));
    return 0;
}

/* after the values are copied: sort each row, lay out column panels (panel < 0: auto_panel),
 * estimate the work per chunk */
static int finish_fp32(SKMatrix *m, int64_t panel)
{
    if (sort_rows(m, m->val, m->bh, sizeof(float)) < 0) return -1;
    if (compute_panels(m, panel < 0 ? auto_panel(m) : panel) < 0) return -1;
    return skm_compute_chunks(m);
}

/* release the arguments; return the matrix when ok, else drop it (NULL, exception set) */
static PyObject *pack_done(sk_args *A, SKMatrix *m, int ok)
{
    sk_args_release(A);
    if (ok) return (PyObject *)m;
    Py_XDECREF(m);
    return NULL;
}

static PyObject *pack_fp32(PyObject *o_ptr, PyObject *o_idx, PyObject *o_val, PyObject *o_shape, int bh,
                           int64_t panel)
{
    int64_t n_out, n_in;
    if (parse_shape(o_shape, &n_out, &n_in) < 0 || check_block(bh, DT_FP32) < 0) return NULL;
    sk_args A = {.n = 0};
    SKMatrix *m = NULL;
    Py_buffer *vp, *vi, *vv;
    const int ok = (vp = sk_arg(&A, o_ptr, "indptr", 'I', 1, 0)) && (vi = sk_arg(&A, o_idx, "indices", 'I', 1, 0)) &&
                   (vv = sk_arg(&A, o_val, "values", 'f', 0, 0)) &&
                   (m = new_packed(DT_FP32, n_out, n_in, bh, vp, vi)) && copy_fp32_values(m, vv) == 0 &&
                   finish_fp32(m, panel) == 0;
    return pack_done(&A, m, ok);
}

PyObject *sk_py_pack_csr(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"indptr", "indices", "values", "shape", "panel", NULL};
    PyObject *a, *b, *c, *s;
    long long panel = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|L:pack_csr", kwlist, &a, &b, &c, &s, &panel)) {
        sk_parse_failed();
        return NULL;
    }
    return pack_fp32(a, b, c, s, 1, panel);
}

PyObject *sk_py_pack_bsr(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"indptr", "indices", "values", "shape", "block", "panel", NULL};
    PyObject *a, *b, *c, *s;
    int bh = 4;
    long long panel = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|iL:pack_bsr", kwlist, &a, &b, &c, &s, &bh, &panel)) {
        sk_parse_failed();
        return NULL;
    }
    return pack_fp32(a, b, c, s, bh, panel);
}

/* ------------------------------------------------------------------------------------
 * INT8
 * ---------------------------------------------------------------------------------- */
/* int8 values (nblocks * bh * 4 bytes, any of the accepted layouts) and per-row scales */
static int copy_int8_values(SKMatrix *m, const Py_buffer *vv, const Py_buffer *vs)
{
    const int bh = m->bh;
    const int64_t n_out = m->n_out;
    if (vv->len != m->nnzb * bh * 4) {
        PyErr_Format(PyExc_ValueError, "values: expected %lld int8 (nblocks=%lld x %d rows x 4), got %lld",
                     (long long)(m->nnzb * bh * 4), (long long)m->nnzb, bh, (long long)vv->len);
        return -1;
    }
    /* 2-D and 3-D values must have the block's shape, not only its size */
    const int shape_ok = vv->ndim <= 1 || (vv->ndim == 2 && vv->shape[0] == m->nnzb && vv->shape[1] == bh * 4) ||
                         (vv->ndim == 3 && vv->shape[0] == m->nnzb && vv->shape[1] == bh && vv->shape[2] == 4);
    if (!shape_ok) {
        char got[96];
        sk_format_shape(got, sizeof got, vv);
        PyErr_Format(PyExc_ValueError, "values: expected shape (%lld,), (%lld, %d) or (%lld, %d, 4) (nblocks, block "
                     "rows x 4 columns), got %s", (long long)(m->nnzb * bh * 4), (long long)m->nnzb,
                     bh * 4, (long long)m->nnzb, bh, got);
        return -1;
    }
    if (sk_check_shape(vs, "w_scale", 1, &n_out, NULL) < 0) return -1;
    m->qval = (int32_t *)sk_aligned_malloc(sizeof(int32_t) * (size_t)(m->nnzb * bh));
    m->wscale = (float *)sk_aligned_malloc(sizeof(float) * (size_t)(n_out > 0 ? n_out : 1));
    m->wsum = (int32_t *)sk_aligned_malloc(sizeof(int32_t) * (size_t)(m->nbr * bh > 0 ? m->nbr * bh : 1));
    if (!m->qval || !m->wscale || !m->wsum) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(m->qval, vv->buf, (size_t)(m->nnzb * bh * 4));
    memcpy(m->wscale, vs->buf, sizeof(float) * (size_t)n_out);
    for (int64_t i = 0; i < n_out; i++) {
        if (!(m->wscale[i] >= 0.0f) || m->wscale[i] == (float)INFINITY) {
            PyErr_Format(PyExc_ValueError, "w_scale[%lld] must be finite and >= 0", (long long)i);
            return -1;
        }
    }
    return 0;
}

/* 16x4 blocks, sorted: every block row padded to a multiple of 16 blocks (zero weights at the
 * row's last column, so the columns stay sorted) and each group of 16 blocks laid out as one AMX
 * weight tile (sk_qword, sk_common.h) */
static int tile_layout_16x4(SKMatrix *m)
{
    int64_t total = 0;
    for (int64_t br = 0; br < m->nbr; br++) total += (m->ptr[br + 1] - m->ptr[br] + 15) / 16 * 16;
    int64_t *ptr = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m->nbr + 1));
    int32_t *idx = (int32_t *)sk_aligned_malloc(sizeof(int32_t) * (size_t)(total + 1));
    int32_t *qval = (int32_t *)sk_aligned_malloc(sizeof(int32_t) * (size_t)(total * SK_TILE_ROWS + 1));
    if (!ptr || !idx || !qval) {
        free(ptr), free(idx), free(qval);
        PyErr_NoMemory();
        return -1;
    }
    ptr[0] = 0;
    for (int64_t br = 0; br < m->nbr; br++) {
        const int64_t n = m->ptr[br + 1] - m->ptr[br], np = (n + 15) / 16 * 16;
        for (int64_t k = 0; k < np; k++) {
            const int64_t j = ptr[br] + k, src = m->ptr[br] + (k < n ? k : n - 1);
            idx[j] = m->idx[src];
            for (int b = 0; b < SK_TILE_ROWS; b++)
                qval[sk_qword(SK_TILE_ROWS, j, b)] = k < n ? m->qval[src * SK_TILE_ROWS + b] : 0;
        }
        ptr[br + 1] = ptr[br] + np;
    }
    free(m->ptr), free(m->idx), free(m->qval);
    m->ptr = ptr, m->idx = idx, m->qval = qval, m->nnzb = total;
    return 0;
}

/* after the values are copied: sort each row, then wsum[row] = 128 * sum of the row's int8
 * weights (it removes the +128 offset of the activations), then the work per chunk */
static int finish_int8(SKMatrix *m)
{
    if (sort_rows(m, m->qval, m->bh, sizeof(int32_t)) < 0) return -1;
    const int bh = m->bh;
    for (int64_t br = 0; br < m->nbr; br++) {
        /* the int32 sums are exact up to 65536 / 4 quads of 4 int8 products per row; repeated
         * indices add quads beyond what n_in <= 65536 bounds */
        const int64_t nq = m->ptr[br + 1] - m->ptr[br];
        if (nq > SK_INT8_MAX_ROW_QUADS) {
            PyErr_Format(PyExc_ValueError,
                         "indices: block row %lld has %lld quads (repeated indices count); the int8 kernels' "
                         "int32 accumulation is exact up to %d per row",
                         (long long)br, (long long)nq, SK_INT8_MAX_ROW_QUADS);
            return -1;
        }
    }
    if (bh == SK_TILE_ROWS && tile_layout_16x4(m) < 0) return -1;
    for (int64_t br = 0; br < m->nbr; br++) {
        for (int b = 0; b < bh; b++) {
            int32_t s = 0;
            for (int64_t j = m->ptr[br]; j < m->ptr[br + 1]; j++) {
                const int8_t *wb = (const int8_t *)(m->qval + sk_qword(bh, j, b));
                s += wb[0] + wb[1] + wb[2] + wb[3];
            }
            m->wsum[br * bh + b] = 128 * s;
        }
    }
    return skm_compute_chunks(m);
}

/* values may be 1-D (nblocks * bh * 4), 2-D (nblocks, bh * 4) or 3-D (nblocks, bh, 4) */
PyObject *sk_py_pack_int8(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"indptr", "indices", "values", "w_scale", "shape", "block", NULL};
    PyObject *o_ptr, *o_idx, *o_val, *o_sc, *o_shape;
    int bh = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|i:pack_int8", kwlist, &o_ptr, &o_idx, &o_val, &o_sc,
                                     &o_shape, &bh)) {
        sk_parse_failed();
        return NULL;
    }
    int64_t n_out, n_in;
    if (parse_shape(o_shape, &n_out, &n_in) < 0) return NULL;
    if (n_in > 4 * SK_INT8_MAX_ROW_QUADS) {
        PyErr_Format(PyExc_ValueError, "int8 kernels support n_in <= %d (int32 accumulation), got %lld",
                     4 * SK_INT8_MAX_ROW_QUADS, (long long)n_in);
        return NULL;
    }
    if (check_block(bh, DT_INT8) < 0) return NULL;
    sk_args A = {.n = 0};
    SKMatrix *m = NULL;
    Py_buffer *vp, *vi, *vv, *vs;
    const int ok = (vp = sk_arg(&A, o_ptr, "indptr", 'I', 1, 0)) && (vi = sk_arg(&A, o_idx, "indices", 'I', 1, 0)) &&
                   (vv = sk_arg(&A, o_val, "values", 'b', -1, 0)) && (vs = sk_arg(&A, o_sc, "w_scale", 'f', 1, 0)) &&
                   (m = new_packed(DT_INT8, n_out, n_in, bh, vp, vi)) && copy_int8_values(m, vv, vs) == 0 &&
                   finish_int8(m) == 0;
    return pack_done(&A, m, ok);
}

const char sk_doc_pack_csr[] =
    "pack_csr(indptr, indices, values, shape, panel=-1) -> SparseMatrix\n\n"
    "Validate and copy a CSR fp32 weight W of shape (n_out, n_in).\n"
    "panel: input columns per column panel (-1: chosen from the density, 0: none). With panels, a\n"
    "group of 256 rows sweeps each panel's slice of the activations while it is in L1, row\n"
    "segments sorted by length; used when threads split the tokens.\n"
    "indptr: int32/int64, length n_out + 1, indptr[0] == 0, non-decreasing, indptr[-1] == nnz.\n"
    "indices: int32/int64, length nnz, each in [0, n_in). values: float32, length nnz.\n"
    "Raises TypeError (wrong dtype / not a buffer) or ValueError (shape, contiguity, bounds).";

const char sk_doc_pack_bsr[] =
    "pack_bsr(indptr, indices, values, shape, block=4, panel=-1) -> SparseMatrix\n\n"
    "Validate and copy a block-row fp32 weight: blocks of `block` consecutive output rows x 1\n"
    "input column (block in 1, 2, 4, 8). indptr over ceil(n_out / block) block rows; indices:\n"
    "input column of each block; values: float32 (nblocks, block) or flat, block-major.\n"
    "Rows past n_out in the last block are ignored. panel as pack_csr (default: none for blocks).\n"
    "Errors as pack_csr.";

const char sk_doc_pack_int8[] =
    "pack_int8(indptr, indices, values, w_scale, shape, block=1) -> SparseMatrix\n\n"
    "Validate and copy an INT8 weight stored as blocks of `block` output rows x 4 input columns\n"
    "(quads; block in 1, 2, 4, 8, 16). indptr over ceil(n_out / block) block rows; indices: quad number\n"
    "in [0, ceil(n_in / 4)); values: int8, nblocks * block * 4 entries laid out (block, row, col);\n"
    "block 16 (the AMX tile format): each block row is stored padded with zero blocks to a multiple\n"
    "of 16 blocks (nblocks counts them);\n"
    "w_scale: float32 (n_out,), finite >= 0, per-output-channel scale (W ~= w_scale[o] * W_q[o]).\n"
    "n_in <= 65536. Raises TypeError / ValueError like pack_csr.";
