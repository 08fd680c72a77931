/*
 * The SparseMatrix type: an immutable packed weight (built by sk_pack.c), its read-only
 * attributes, and the work estimate that balances output rows between threads.
 */
#include "sk_py.h"
#include <stdlib.h>

static void skm_dealloc(SKMatrix *m)
{
#define SKM_FREE(a) free(m->a);
    SKM_ARRAYS(SKM_FREE)
#undef SKM_FREE
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *skm_get_shape(SKMatrix *m, void *c)
{
    (void)c;
    return Py_BuildValue("(LL)", (long long)m->n_out, (long long)m->n_in);
}

static PyObject *skm_get_block(SKMatrix *m, void *c)
{
    (void)c;
    return Py_BuildValue("(ii)", m->bh, m->bw);
}

static PyObject *skm_get_nblocks(SKMatrix *m, void *c)
{
    (void)c;
    return PyLong_FromLongLong(m->nnzb);
}

static PyObject *skm_get_nnz_stored(SKMatrix *m, void *c)
{
    (void)c;
    return PyLong_FromLongLong(m->nnzb * m->bh * m->bw);
}

static PyObject *skm_get_dtype(SKMatrix *m, void *c)
{
    (void)c;
    return PyUnicode_FromString(m->dtype == DT_FP32 ? "fp32" : "int8");
}

static PyObject *skm_get_format(SKMatrix *m, void *c)
{
    (void)c;
    if (m->bh == 1 && m->bw == 1) return PyUnicode_FromString("csr");
    return PyUnicode_FromFormat("bsr%dx%d", m->bh, m->bw);
}

static PyObject *skm_get_nbytes(SKMatrix *m, void *c)
{
    (void)c;
    int64_t b = (m->nbr + 1) * 8 + m->nnzb * 4;
    if (m->dtype == DT_FP32) b += m->nnzb * m->bh * 4;
    else b += m->nnzb * m->bh * 4 + m->n_out * 4 + m->nbr * m->bh * 4;
    if (m->npan > 1) { /* column-panel copy */
        const int64_t ng = (m->nbr + SK_PANEL_GROUP_ROWS / m->bh - 1) / (SK_PANEL_GROUP_ROWS / m->bh);
        const int64_t nseg = m->sg_ptr[ng * m->npan];
        b += (ng * m->npan + 1) * 8 + nseg * 12 + 8 + m->nnzb * (4 + 4 * m->bh);
    }
    return PyLong_FromLongLong(b);
}

static PyObject *skm_get_panel(SKMatrix *m, void *c)
{
    (void)c;
    return PyLong_FromLongLong(m->panel);
}

static PyGetSetDef skm_getset[] = {
    {"shape", (getter)skm_get_shape, NULL, "(n_out, n_in) logical shape of W", NULL},
    {"block", (getter)skm_get_block, NULL, "(rows, cols) of one stored block; (1, 1) is CSR", NULL},
    {"nblocks", (getter)skm_get_nblocks, NULL, "number of stored blocks", NULL},
    {"nnz_stored", (getter)skm_get_nnz_stored, NULL, "stored weights including zeros inside blocks", NULL},
    {"dtype", (getter)skm_get_dtype, NULL, "'fp32' or 'int8'", NULL},
    {"format", (getter)skm_get_format, NULL, "'csr' or 'bsr{rows}x{cols}'", NULL},
    {"panel", (getter)skm_get_panel, NULL, "input-column panel width (0 = none)", NULL},
    {"nbytes", (getter)skm_get_nbytes, NULL, "bytes held by the packed arrays", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject SKMatrixType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "accelerators._sparse_kernels.SparseMatrix",
    .tp_basicsize = sizeof(SKMatrix),
    .tp_dealloc = (destructor)skm_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Immutable packed sparse weight (made by pack_csr, pack_bsr or pack_int8); "
              "the arrays are private copies, validated once.",
    .tp_getset = skm_getset,
};

SKMatrix *skm_new(void)
{
    /* tp_alloc zero-fills: every array NULL, every count 0, dtype DT_FP32 */
    SKMatrix *m = (SKMatrix *)SKMatrixType.tp_alloc(&SKMatrixType, 0);
    if (!m) return NULL;
    m->bh = m->bw = 1;
    m->npan = 1;
    return m;
}

int skm_compute_chunks(SKMatrix *m)
{
    const int64_t rows_padded = m->nbr * m->bh;
    m->nchunks = (rows_padded + SK_ROWS_PER_CHUNK - 1) / SK_ROWS_PER_CHUNK;
    m->cwork = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m->nchunks + 1));
    if (!m->cwork) {
        PyErr_NoMemory();
        return -1;
    }
    const int64_t brpc = SK_ROWS_PER_CHUNK / m->bh;
    m->cwork[0] = 0;
    for (int64_t c = 0; c < m->nchunks; c++) {
        int64_t b0 = c * brpc, b1 = b0 + brpc;
        if (b1 > m->nbr) b1 = m->nbr;
        int64_t w = (m->ptr[b1] - m->ptr[b0]) * m->bh + 2 * SK_ROWS_PER_CHUNK;
        m->cwork[c + 1] = m->cwork[c] + w;
    }
    return 0;
}

static int64_t lower_bound(const int64_t *a, int64_t n, int64_t x)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (a[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void skm_thread_chunks(const SKMatrix *m, int tid, int nthr, int64_t *c0, int64_t *c1)
{
    const int64_t total = m->cwork[m->nchunks];
    int64_t lo = lower_bound(m->cwork, m->nchunks + 1, (total * tid + nthr - 1) / nthr);
    int64_t hi = lower_bound(m->cwork, m->nchunks + 1, (total * (tid + 1) + nthr - 1) / nthr);
    if (tid == nthr - 1) hi = m->nchunks;
    if (lo > m->nchunks) lo = m->nchunks;
    if (hi > m->nchunks) hi = m->nchunks;
    *c0 = lo;
    *c1 = hi;
}
