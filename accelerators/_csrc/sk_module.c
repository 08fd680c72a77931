/*
 * accelerators._sparse_kernels: sparse x dense matrix products for CPU inference.
 *
 * Python API (see the module docstring below): pack_csr / pack_bsr build an immutable,
 * validated SparseMatrix (the weights are copied); spmm(mat, x, out, ...) computes
 * out = x @ W.T (+ bias) with OpenMP threads and the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "sk_common.h"

/* ------------------------------------------------------------------------------------
 * Variants
 * ---------------------------------------------------------------------------------- */
enum { V_SCALAR = 0, V_AVX2 = 1, V_AVX512 = 2, V_VNNI = 3, V_COUNT = 4 };
static const char *const variant_names[V_COUNT] = {"scalar", "avx2", "avx512", "vnni"};
static const sk_kernels *variant_tables[V_COUNT];
static int variant_compiled[V_COUNT];
static int variant_supported[V_COUNT];
static int current_variant = V_SCALAR;

static void detect_variants(void)
{
    variant_tables[V_SCALAR] = &sk_kernels_scalar;
    variant_compiled[V_SCALAR] = 1;
    variant_supported[V_SCALAR] = 1;
#ifdef SK_HAVE_X86
    variant_tables[V_AVX2] = &sk_kernels_avx2;
    variant_tables[V_AVX512] = &sk_kernels_avx512;
    variant_tables[V_VNNI] = &sk_kernels_vnni;
    variant_compiled[V_AVX2] = variant_compiled[V_AVX512] = variant_compiled[V_VNNI] = 1;
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    int vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    variant_supported[V_AVX2] = avx2;
    variant_supported[V_AVX512] = avx512;
    variant_supported[V_VNNI] = vnni;
#endif
}

static int best_variant(void)
{
    for (int v = V_COUNT - 1; v >= 0; v--)
        if (variant_compiled[v] && variant_supported[v]) return v;
    return V_SCALAR;
}

/* Parse a variant name; returns index or -1 with a Python exception set. */
static int parse_variant(const char *name, PyObject *exc_type)
{
    for (int v = 0; v < V_COUNT; v++) {
        if (strcmp(name, variant_names[v]) == 0) {
            if (!variant_compiled[v]) {
                PyErr_Format(exc_type, "kernel variant '%s' was not compiled into this build", name);
                return -1;
            }
            if (!variant_supported[v]) {
                PyErr_Format(exc_type, "kernel variant '%s' is not supported by this CPU", name);
                return -1;
            }
            return v;
        }
    }
    PyErr_Format(exc_type, "unknown kernel variant '%s' (valid: scalar, avx2, avx512, vnni)", name);
    return -1;
}

/* variant kwarg: None -> current; str -> parsed (ValueError). */
static int variant_from_obj(PyObject *obj)
{
    if (obj == NULL || obj == Py_None) return current_variant;
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "variant must be a str or None");
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
    return parse_variant(s, PyExc_ValueError);
}

/* ------------------------------------------------------------------------------------
 * Buffer helpers
 * ---------------------------------------------------------------------------------- */
/* kind: 'f' float32, 'I' signed integer (4 or 8 bytes), 'b' int8, 'i' int32 */
static char buffer_kind(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    while (*f == '@' || *f == '=' || *f == '<') f++;
    if (f[0] == '\0' || f[1] != '\0') return '?';
    switch (f[0]) {
    case 'f': return v->itemsize == 4 ? 'f' : '?';
    case 'b': return v->itemsize == 1 ? 'b' : '?';
    case 'i': case 'l': case 'q':
        if (v->itemsize == 4) return 'i';
        if (v->itemsize == 8) return 'q';
        return '?';
    default: return '?';
    }
}

static const char *kind_name(char k)
{
    switch (k) {
    case 'f': return "float32";
    case 'b': return "int8";
    case 'i': return "int32";
    case 'q': return "int64";
    case 'I': return "int32 or int64";
    default: return "?";
    }
}

/* Acquire a C-contiguous buffer of the given kind ('f', 'b', 'i', 'q', or 'I' = int32|int64)
 * and ndim (or 0 = any of 1, 2). Sets a TypeError/ValueError and returns -1 on failure. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *name, char kind, int ndim, int writable)
{
    if (obj == NULL || obj == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s: expected a buffer, got None", name);
        return -1;
    }
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        if (writable && PyObject_GetBuffer(obj, view, PyBUF_STRIDES | PyBUF_FORMAT) == 0) {
            PyBuffer_Release(view);
            PyErr_Format(PyExc_ValueError, "%s: buffer is read-only", name);
            return -1;
        }
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "%s: expected an object exporting the buffer protocol (numpy array, "
                     "memoryview, tensor.numpy()), got %.200s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    char k = buffer_kind(view);
    int ok = (kind == 'I') ? (k == 'i' || k == 'q') : (k == kind);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s: expected dtype %s, got buffer format '%s' (itemsize %zd)",
                     name, kind_name(kind), view->format ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (ndim > 0 ? view->ndim != ndim : (ndim == 0 ? (view->ndim != 1 && view->ndim != 2)
                                                   : (view->ndim < 1 || view->ndim > 3))) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d-dimensional buffer, got %d dimensions", name,
                     ndim > 0 ? ndim : 1, view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s: buffer must be C-contiguous", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int64_t load_int(const Py_buffer *v, char k, int64_t i)
{
    return k == 'i' ? (int64_t)((const int32_t *)v->buf)[i] : ((const int64_t *)v->buf)[i];
}

/* Grow-only cache of scratch buffers, reused across calls so large packed-activation buffers
 * are not mmap'ed and page-faulted on every call. Taken / returned while holding the GIL;
 * concurrent calls from several Python threads simply allocate extra buffers. */
#define SK_WS_SLOTS 8
typedef struct { void *p; size_t n; } sk_ws;
static sk_ws ws_cache[SK_WS_SLOTS];

static void *aligned_malloc(size_t bytes);

/* take a buffer of at least `bytes` (GIL held) */
static void *ws_take(size_t bytes, size_t *got)
{
    int best = -1;
    for (int i = 0; i < SK_WS_SLOTS; i++)
        if (ws_cache[i].p && ws_cache[i].n >= bytes && (best < 0 || ws_cache[i].n < ws_cache[best].n)) best = i;
    if (best >= 0) {
        void *p = ws_cache[best].p;
        *got = ws_cache[best].n;
        ws_cache[best].p = NULL;
        ws_cache[best].n = 0;
        return p;
    }
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 4095) & ~(size_t)4095;
    *got = bytes;
    return aligned_malloc(bytes);
}

/* give a buffer back (GIL held); keeps the larger buffers */
static void ws_give(void *p, size_t n)
{
    if (!p) return;
    int slot = -1;
    for (int i = 0; i < SK_WS_SLOTS; i++)
        if (!ws_cache[i].p) { slot = i; break; }
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < SK_WS_SLOTS; i++)
            if (ws_cache[i].n < ws_cache[slot].n) slot = i;
        if (ws_cache[slot].n >= n) { free(p); return; }
        free(ws_cache[slot].p);
    }
    ws_cache[slot].p = p;
    ws_cache[slot].n = n;
}

static void *aligned_malloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

/* ------------------------------------------------------------------------------------
 * SparseMatrix object
 * ---------------------------------------------------------------------------------- */
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
    int32_t *wsum;    /* int8: per output row sum of int8 weights (n_out padded to nbr*bh) */
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

static void skm_dealloc(SKMatrix *m)
{
    free(m->ptr);
    free(m->idx);
    free(m->val);
    free(m->qval);
    free(m->wscale);
    free(m->wsum);
    free(m->cwork);
    free(m->sg_ptr);
    free(m->sg_row);
    free(m->sg_start);
    free(m->sg_idx);
    free(m->sg_val);
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

static PyTypeObject SKMatrixType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "accelerators._sparse_kernels.SparseMatrix",
    .tp_basicsize = sizeof(SKMatrix),
    .tp_dealloc = (destructor)skm_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Immutable packed sparse weight (made by pack_csr, pack_bsr or pack_int8); "
              "the arrays are private copies, validated once.",
    .tp_getset = skm_getset,
};

static SKMatrix *skm_new(void)
{
    SKMatrix *m = PyObject_New(SKMatrix, &SKMatrixType);
    if (!m) return NULL;
    m->dtype = DT_FP32;
    m->n_out = m->n_in = 0;
    m->bh = m->bw = 1;
    m->nbr = m->nnzb = 0;
    m->ptr = NULL;
    m->idx = NULL;
    m->val = NULL;
    m->qval = NULL;
    m->wscale = NULL;
    m->wsum = NULL;
    m->nchunks = 0;
    m->cwork = NULL;
    m->npan = 1;
    m->panel = 0;
    m->sg_ptr = NULL;
    m->sg_row = NULL;
    m->sg_start = NULL;
    m->sg_idx = NULL;
    m->sg_val = NULL;
    return m;
}

/* work estimate per 16-row chunk: multiply-adds per token plus a per-row overhead */
static int skm_compute_chunks(SKMatrix *m)
{
    const int64_t rows_padded = m->nbr * m->bh;
    m->nchunks = (rows_padded + SK_ROWS_PER_CHUNK - 1) / SK_ROWS_PER_CHUNK;
    m->cwork = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m->nchunks + 1));
    if (!m->cwork) return -1;
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
    if (!ok) return -1;
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

/* Validate indptr/indices (any int kind) and copy into m->ptr / m->idx. n_cols = bound for idx. */
static int copy_structure(SKMatrix *m, Py_buffer *vp, Py_buffer *vi, int64_t n_cols)
{
    const char kp = buffer_kind(vp), ki = buffer_kind(vi);
    if (vp->shape[0] != m->nbr + 1) {
        PyErr_Format(PyExc_ValueError, "indptr: expected length %lld (block rows + 1), got %lld",
                     (long long)(m->nbr + 1), (long long)vp->shape[0]);
        return -1;
    }
    const int64_t nnzb = vi->shape[0];
    m->nnzb = nnzb;
    m->ptr = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m->nbr + 1));
    m->idx = (int32_t *)aligned_malloc(sizeof(int32_t) * (size_t)(nnzb + 1)); /* + 1: never 0 bytes */
    if (!m->ptr || !m->idx) {
        PyErr_NoMemory();
        return -1;
    }
    for (int64_t r = 0; r <= m->nbr; r++) {
        int64_t p = load_int(vp, kp, r);
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
        int64_t c = load_int(vi, ki, j);
        if (c < 0 || c >= n_cols) {
            PyErr_Format(PyExc_ValueError, "indices[%lld]=%lld out of range [0, %lld)", (long long)j,
                         (long long)c, (long long)n_cols);
            return -1;
        }
        m->idx[j] = (int32_t)c;
    }
    return 0;
}

/* Sort the blocks of every block row by column (stable; values follow). `vals_per` values of
 * `vsize` bytes per block. Returns -1 (MemoryError set) on allocation failure. */
static int sort_rows(SKMatrix *m, void *vals, int vals_per, size_t vsize)
{
    int64_t maxlen = 0;
    int unsorted = 0;
    for (int64_t r = 0; r < m->nbr; r++) {
        const int64_t a = m->ptr[r], b = m->ptr[r + 1];
        if (b - a > maxlen) maxlen = b - a;
        for (int64_t j = a + 1; j < b && !unsorted; j++)
            if (m->idx[j] < m->idx[j - 1]) unsorted = 1;
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
        int sorted = 1;
        for (int64_t j = 1; j < n; j++)
            if (m->idx[a + j] < m->idx[a + j - 1]) { sorted = 0; break; }
        if (sorted) continue;
        /* stable insertion sort of a permutation (rows are short: at most n_in blocks) */
        for (int64_t j = 0; j < n; j++) perm[j] = j;
        if (n > 64) {
            /* merge-free fallback: counting by column is overkill; use simple bottom-up shell sort
             * keyed on (column, original position) to stay stable */
            for (int64_t gap = n / 2; gap > 0; gap /= 2)
                for (int64_t i = gap; i < n; i++) {
                    int64_t t = perm[i], jj = i;
                    while (jj >= gap) {
                        int64_t q = perm[jj - gap];
                        if (m->idx[a + q] > m->idx[a + t] || (m->idx[a + q] == m->idx[a + t] && q > t)) {
                            perm[jj] = q;
                            jj -= gap;
                        } else break;
                    }
                    perm[jj] = t;
                }
        } else {
            for (int64_t i = 1; i < n; i++) {
                int64_t t = perm[i], jj = i;
                while (jj > 0 && m->idx[a + perm[jj - 1]] > m->idx[a + t]) {
                    perm[jj] = perm[jj - 1];
                    jj--;
                }
                perm[jj] = t;
            }
        }
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

/* Column-panel segments (see sk_segs): for each group of SK_PANEL_GROUP_ROWS rows and each panel
 * of `panel` input columns, one segment per block row with blocks in that panel (every block row
 * in panel 0, even an empty one, so that panel 0 writes all rows of the group), sorted by length
 * (counting sort, stable). Blocks are copied in segment order. panel <= 0 or >= n_cols: none. */
static int compute_panels(SKMatrix *m, int64_t panel, int64_t n_cols)
{
    m->npan = 1;
    m->panel = 0;
    if (panel <= 0 || panel >= n_cols || m->dtype != DT_FP32) return 0;
    const int64_t np = (n_cols + panel - 1) / panel;
    if (np > 4096) {
        PyErr_SetString(PyExc_ValueError, "panel too small (more than 4096 panels)");
        return -1;
    }
    const int64_t gbr = SK_PANEL_GROUP_ROWS / m->bh; /* block rows per group */
    const int64_t ng = (m->nbr + gbr - 1) / gbr;
    const int bh = m->bh;
    int64_t nseg = 0; /* panel 0: every block row; other panels: non-empty segments */
    int64_t *cnt = (int64_t *)calloc((size_t)(m->n_in + 2), sizeof(int64_t)); /* lengths histogram */
    for (int64_t r = 0; r < m->nbr; r++) {
        int64_t j = m->ptr[r];
        for (int64_t p = 0; p < np; p++) {
            const int64_t j0 = j, lim = (p + 1) * panel;
            while (j < m->ptr[r + 1] && m->idx[j] < lim) j++;
            nseg += (p == 0 || j > j0);
        }
    }
    m->sg_ptr = (int64_t *)malloc(sizeof(int64_t) * (size_t)(ng * np + 1));
    m->sg_row = (int32_t *)malloc(sizeof(int32_t) * (size_t)(nseg > 0 ? nseg : 1));
    m->sg_start = (int64_t *)malloc(sizeof(int64_t) * (size_t)(nseg + 1));
    m->sg_idx = (int32_t *)aligned_malloc(sizeof(int32_t) * (size_t)(m->nnzb + 1));
    m->sg_val = (float *)aligned_malloc(sizeof(float) * (size_t)(m->nnzb * bh + 16));
    int64_t *len = (int64_t *)malloc(sizeof(int64_t) * (size_t)(gbr * (np + 1)));
    int64_t *beg = (int64_t *)malloc(sizeof(int64_t) * (size_t)(gbr * (np + 1)));
    if (!cnt || !m->sg_ptr || !m->sg_row || !m->sg_start || !m->sg_idx || !m->sg_val || !len || !beg) {
        free(cnt);
        free(len);
        free(beg);
        PyErr_NoMemory();
        return -1;
    }
    int64_t s = 0, nz = 0;
    for (int64_t g = 0; g < ng; g++) {
        const int64_t r0 = g * gbr, r1 = r0 + gbr < m->nbr ? r0 + gbr : m->nbr;
        for (int64_t r = r0; r < r1; r++) { /* per row: panel boundaries */
            int64_t j = m->ptr[r];
            for (int64_t p = 0; p < np; p++) {
                beg[(r - r0) * (np + 1) + p] = j;
                const int64_t lim = (p + 1) * panel;
                while (j < m->ptr[r + 1] && m->idx[j] < lim) j++;
                len[(r - r0) * (np + 1) + p] = j - beg[(r - r0) * (np + 1) + p];
            }
        }
        for (int64_t p = 0; p < np; p++) {
            m->sg_ptr[g * np + p] = s;
            int64_t maxl = 0;
            for (int64_t r = r0; r < r1; r++) {
                const int64_t l = len[(r - r0) * (np + 1) + p];
                cnt[l]++;
                if (l > maxl) maxl = l;
            }
            for (int64_t l = 0; l <= maxl; l++) { /* lengths ascending; rows ascending within one */
                if (!cnt[l]) continue;
                cnt[l] = 0;
                if (l == 0 && p > 0) continue;
                for (int64_t r = r0; r < r1; r++) {
                    if (len[(r - r0) * (np + 1) + p] != l) continue;
                    const int64_t j0 = beg[(r - r0) * (np + 1) + p];
                    m->sg_row[s] = (int32_t)(r - r0);
                    m->sg_start[s] = nz;
                    memcpy(m->sg_idx + nz, m->idx + j0, sizeof(int32_t) * (size_t)l);
                    memcpy(m->sg_val + nz * bh, m->val + j0 * bh, sizeof(float) * (size_t)(l * bh));
                    nz += l;
                    s++;
                }
            }
        }
    }
    m->sg_ptr[ng * np] = s;
    m->sg_start[s] = nz;
    free(cnt);
    free(len);
    free(beg);
    m->npan = (int)np;
    m->panel = panel;
    return 0;
}

/* Default panel width for CSR: the narrower of 128 / 256 input columns that gives >= 8 non-zeros
 * per row and panel on average (a 64-token XT slice of a 128-column panel is 32 KiB and stays in
 * L1); none when neither does, when there would be fewer than 2 panels, and for blocks (a 4x1
 * block already reuses each activation load 4 times). Measured on 3072x768, 128 tokens, 2 threads:
 * 80 %: 128 columns 1.22x faster than none, 90 %: 1.14x, 95 %: 256 columns 1.10x, 98 %: none
 * best (2.6 / 5.1 non-zeros per segment). */
static int64_t auto_panel(const SKMatrix *m)
{
    if (m->bh != 1 || m->nbr == 0) return 0;
    for (int64_t P = 128; P <= 256; P *= 2) {
        const double per_seg = (double)m->nnzb / (double)m->nbr * (double)P / (double)m->n_in;
        if (m->n_in >= 2 * P && per_seg >= 8.0) return P;
    }
    return 0;
}

static int check_block(int bh)
{
    if (bh != 1 && bh != 2 && bh != 4 && bh != 8) {
        PyErr_Format(PyExc_ValueError, "block rows must be 1, 2, 4 or 8, got %d", bh);
        return -1;
    }
    return 0;
}

static PyObject *pack_fp32_impl(PyObject *o_ptr, PyObject *o_idx, PyObject *o_val, PyObject *o_shape, int bh,
                                int64_t panel)
{
    int64_t n_out, n_in;
    if (parse_shape(o_shape, &n_out, &n_in) < 0) return NULL;
    if (check_block(bh) < 0) return NULL;
    Py_buffer vp, vi, vv;
    if (get_buffer(o_ptr, &vp, "indptr", 'I', 1, 0) < 0) return NULL;
    if (get_buffer(o_idx, &vi, "indices", 'I', 1, 0) < 0) {
        PyBuffer_Release(&vp);
        return NULL;
    }
    if (get_buffer(o_val, &vv, "values", 'f', 0, 0) < 0) {
        PyBuffer_Release(&vp);
        PyBuffer_Release(&vi);
        return NULL;
    }
    SKMatrix *m = skm_new();
    if (!m) goto fail;
    m->dtype = DT_FP32;
    m->n_out = n_out;
    m->n_in = n_in;
    m->bh = bh;
    m->bw = 1;
    m->nbr = (n_out + bh - 1) / bh;
    if (copy_structure(m, &vp, &vi, n_in) < 0) goto fail;
    {
        int shape_ok = vv.ndim == 1 ? vv.shape[0] == m->nnzb * bh
                                    : (vv.shape[0] == m->nnzb && vv.shape[1] == bh);
        if (!shape_ok) {
            PyErr_Format(PyExc_ValueError,
                         "values: expected %lld floats (nblocks=%lld x block rows=%d), got shape (%lld%s%lld)",
                         (long long)(m->nnzb * bh), (long long)m->nnzb, bh, (long long)vv.shape[0],
                         vv.ndim == 2 ? ", " : "", vv.ndim == 2 ? (long long)vv.shape[1] : 0LL);
            goto fail;
        }
    }
    m->val = (float *)aligned_malloc(sizeof(float) * (size_t)(m->nnzb * bh));
    if (!m->val) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(m->val, vv.buf, sizeof(float) * (size_t)(m->nnzb * bh));
    if (sort_rows(m, m->val, bh, sizeof(float)) < 0) goto fail;
    if (panel < 0) panel = auto_panel(m);
    if (compute_panels(m, panel, n_in) < 0) goto fail;
    if (skm_compute_chunks(m) < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    PyBuffer_Release(&vp);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&vv);
    return (PyObject *)m;
fail:
    Py_XDECREF(m);
    PyBuffer_Release(&vp);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&vv);
    return NULL;
}

static PyObject *py_pack_csr(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"indptr", "indices", "values", "shape", "panel", NULL};
    PyObject *a, *b, *c, *s;
    long long panel = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|L:pack_csr", kwlist, &a, &b, &c, &s, &panel)) return NULL;
    return pack_fp32_impl(a, b, c, s, 1, panel);
}

static PyObject *py_pack_bsr(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"indptr", "indices", "values", "shape", "block", "panel", NULL};
    PyObject *a, *b, *c, *s;
    int bh = 4;
    long long panel = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|iL:pack_bsr", kwlist, &a, &b, &c, &s, &bh, &panel)) return NULL;
    return pack_fp32_impl(a, b, c, s, bh, panel);
}

/* ------------------------------------------------------------------------------------
 * Tiling and threading helpers
 * ---------------------------------------------------------------------------------- */
static int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* tiles for a block of nb tokens: full tiles of tt tokens, then the remainder split into
 * power-of-two multiples of 16 tokens; each tile occupies n_rows * width elements. */
static void make_tiling(sk_tiling *tl, int64_t nb, int64_t tt, int64_t n_rows)
{
    const int64_t nbp = round_up(nb, SK_TOK_GROUP);
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

static void thread_chunks(const SKMatrix *m, int tid, int nthr, int64_t *c0, int64_t *c1)
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

static int default_tile(int variant, int bh)
{
    if (variant >= V_AVX512) return bh >= 8 ? 32 : 64;
    if (variant == V_AVX2) return bh >= 4 ? 16 : 32;
    return 16;
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

static int parse_threads(int threads)
{
    if (threads < 1 || threads > 1024) {
        PyErr_Format(PyExc_ValueError, "threads must be in [1, 1024], got %d", threads);
        return -1;
    }
    return 0;
}

/* LayerNorm of tokens [t0, t1) of Y (n_out wide) when the job has one */
static inline void apply_ln(const sk_kernels *kt, const sk_ln *ln, float *Y, int64_t N, int64_t t0, int64_t t1)
{
    if (ln && t1 > t0) kt->layer_norm(Y + t0 * N, t1 - t0, N, ln->gamma, ln->beta, ln->eps);
}

/* ------------------------------------------------------------------------------------
 * fp32 driver
 * ---------------------------------------------------------------------------------- */
typedef struct {
    const SKMatrix *m;
    const sk_kernels *kt;
    const float *X;
    int64_t T;
    float *Y;
    const float *bias;
    const float *R; /* residual added in the output pass, or NULL */
    const sk_ln *ln; /* LayerNorm epilogue, or NULL */
    int nt;
    int64_t tt, tb, lds;
    int64_t group; /* 16-row chunks whose outputs are unpacked together (token-major) */
    int token_split;
    int act;           /* SK_ACT_* epilogue */
    int64_t xt_stride; /* floats between per-thread activation buffers (token split) */
    float *xt;
    float *scratch;
} fp32_job;

/* Token range of thread tid when threads split the tokens (boundaries on 16-token groups). */
static void token_range(int64_t T, int tid, int nthr, int64_t *ta, int64_t *tb)
{
    *ta = (T * tid / nthr) / SK_TOK_GROUP * SK_TOK_GROUP;
    *tb = tid == nthr - 1 ? T : (T * (tid + 1) / nthr) / SK_TOK_GROUP * SK_TOK_GROUP;
}

/* chunks [c0, c1) for one packed token block (t0, nb tokens): compute and unpack in groups */
static void fp32_block(const fp32_job *J, const sk_tiling *tl, const float *xt, float *scr, int64_t t0,
                       int64_t nb, int64_t c0, int64_t c1)
{
    const SKMatrix *m = J->m;
    const int64_t N = m->n_out;
    const int64_t brpc = SK_ROWS_PER_CHUNK / m->bh;
    /* column panels: whole groups only (token split sweeps all rows; group = 16 chunks) */
    const int panels = m->npan > 1 && J->group * SK_ROWS_PER_CHUNK == SK_PANEL_GROUP_ROWS && c0 == 0 &&
                       c1 == m->nchunks;
    for (int64_t g = c0; g < c1; g += J->group) {
        const int64_t g1 = g + J->group < c1 ? g + J->group : c1;
        if (panels) {
            const int64_t gi = g / J->group;
            const sk_segs sg = {m->npan, m->sg_ptr + gi * m->npan, m->sg_row, m->sg_start, m->sg_idx, m->sg_val};
            J->kt->tile_fp32(m->bh, &sg, xt, tl, scr, J->lds);
        } else {
            for (int64_t c = g; c < g1; c++) {
                const int64_t br0 = c * brpc;
                const int64_t br1 = br0 + brpc < m->nbr ? br0 + brpc : m->nbr;
                const int64_t sp[2] = {br0, br1};
                const sk_segs sg = {1, sp, NULL, m->ptr, m->idx, m->val};
                J->kt->tile_fp32(m->bh, &sg, xt, tl, scr + (c - g) * SK_ROWS_PER_CHUNK * J->lds, J->lds);
            }
        }
        const int64_t r0 = g * SK_ROWS_PER_CHUNK;
        int64_t nrows = (g1 - g) * SK_ROWS_PER_CHUNK;
        if (nrows > N - r0) nrows = N - r0;
        if (nrows > 0)
            J->kt->unpack_y(scr, J->lds, nrows, nb, J->Y + t0 * N + r0, N, J->bias ? J->bias + r0 : NULL,
                            J->R ? J->R + t0 * N + r0 : NULL, J->act);
    }
}

/* Two ways to share the work between threads:
 *  token split (T >= 64 per thread): each thread packs its own tokens and computes all output
 *    rows for them; no barrier at all, and each thread writes whole rows of Y;
 *  row split (few tokens): threads pack slices of the shared activation block, then compute
 *    nnz-balanced ranges of output rows (two barriers per token block). */
static void run_fp32(fp32_job *J)
{
    const SKMatrix *m = J->m;
    const int64_t K = m->n_in, T = J->T;
#pragma omp parallel num_threads(J->nt)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nthr = omp_get_num_threads();
#else
        const int tid = 0, nthr = 1;
#endif
        sk_tiling tl;
        float *scr = J->scratch + (int64_t)tid * J->group * SK_ROWS_PER_CHUNK * J->lds;
        if (J->token_split) {
            float *xt = J->xt + (int64_t)tid * J->xt_stride;
            int64_t ta, tb_;
            token_range(T, tid, nthr, &ta, &tb_);
            for (int64_t t0 = ta; t0 < tb_; t0 += J->tb) {
                const int64_t nb = tb_ - t0 < J->tb ? tb_ - t0 : J->tb;
                make_tiling(&tl, nb, J->tt, K);
                if (K > 0) J->kt->pack_x(J->X + t0 * K, K, nb, 0, K, xt, &tl, K);
                fp32_block(J, &tl, xt, scr, t0, nb, 0, m->nchunks);
                apply_ln(J->kt, J->ln, J->Y, m->n_out, t0, t0 + nb); /* rows still in L2 */
            }
        } else {
            int64_t c0, c1;
            thread_chunks(m, tid, nthr, &c0, &c1);
            const int64_t k0 = K * tid / nthr, k1 = K * (tid + 1) / nthr;
            for (int64_t t0 = 0; t0 < T; t0 += J->tb) {
                const int64_t nb = T - t0 < J->tb ? T - t0 : J->tb;
                make_tiling(&tl, nb, J->tt, K);
                if (k1 > k0) J->kt->pack_x(J->X + t0 * K, K, nb, k0, k1, J->xt, &tl, K);
#pragma omp barrier
                fp32_block(J, &tl, J->xt, scr, t0, nb, c0, c1);
#pragma omp barrier
            }
            apply_ln(J->kt, J->ln, J->Y, m->n_out, T * tid / nthr, T * (tid + 1) / nthr);
        }
    }
}

/* split: 0 auto, 1 rows, 2 tokens */
static int parse_split(PyObject *o, int *split)
{
    if (o == NULL || o == Py_None) {
        *split = 0;
        return 0;
    }
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
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
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
    if (s && strcmp(s, "none") == 0) *act = SK_ACT_NONE;
    else if (s && strcmp(s, "gelu") == 0) *act = SK_ACT_GELU;
    else {
        PyErr_SetString(PyExc_ValueError, "activation must be None, 'none' or 'gelu'");
        return -1;
    }
    return 0;
}

static int use_token_split(int split, int64_t T, int threads)
{
    if (split == 1) return 0;
    if (split == 2) return 1;
    return threads == 1 || T >= 64 * (int64_t)threads;
}

static int ranges_overlap(const Py_buffer *a, const Py_buffer *b)
{
    const char *a0 = (const char *)a->buf, *a1 = a0 + a->len;
    const char *b0 = (const char *)b->buf, *b1 = b0 + b->len;
    return a->len > 0 && b->len > 0 && a0 < b1 && b0 < a1;
}

/* Optional LayerNorm epilogue: ln_weight / ln_bias float32 (n_out,), ln_eps finite >= 0.
 * Returns 0 with *have = 0 (no weight), 0 with buffers acquired (*have = 1 weight, 2 weight + bias;
 * release with release_layer_norm), or -1 with an exception set. */
static int get_layer_norm(PyObject *ow, PyObject *ob, double eps, int64_t n_out, Py_buffer *vw, Py_buffer *vb,
                          int *have, sk_ln *ln)
{
    *have = 0;
    if (ow == Py_None) {
        if (ob != Py_None) {
            PyErr_SetString(PyExc_ValueError, "ln_bias needs ln_weight");
            return -1;
        }
        return 0;
    }
    if (!(eps >= 0.0) || !isfinite(eps)) {
        PyErr_Format(PyExc_ValueError, "ln_eps must be finite and >= 0, got %g", eps);
        return -1;
    }
    if (get_buffer(ow, vw, "ln_weight", 'f', 1, 0) < 0) return -1;
    if (vw->shape[0] != n_out) {
        PyErr_Format(PyExc_ValueError, "ln_weight: expected length %lld, got %lld", (long long)n_out,
                     (long long)vw->shape[0]);
        PyBuffer_Release(vw);
        return -1;
    }
    *have = 1;
    if (ob != Py_None) {
        if (get_buffer(ob, vb, "ln_bias", 'f', 1, 0) < 0) {
            PyBuffer_Release(vw);
            *have = 0;
            return -1;
        }
        if (vb->shape[0] != n_out) {
            PyErr_Format(PyExc_ValueError, "ln_bias: expected length %lld, got %lld", (long long)n_out,
                         (long long)vb->shape[0]);
            PyBuffer_Release(vw);
            PyBuffer_Release(vb);
            *have = 0;
            return -1;
        }
        *have = 2;
    }
    ln->gamma = (const float *)vw->buf;
    ln->beta = *have == 2 ? (const float *)vb->buf : NULL;
    ln->eps = (float)eps;
    return 0;
}

static void release_layer_norm(int have, Py_buffer *vw, Py_buffer *vb)
{
    if (have >= 1) PyBuffer_Release(vw);
    if (have == 2) PyBuffer_Release(vb);
}

/* Optional residual buffer (float32, shape (T, n_out), C-contiguous, not overlapping out).
 * Returns 1 when acquired (release it), 0 when o is None, -1 with an exception set. */
static int get_residual(PyObject *o, Py_buffer *v, int64_t T, int64_t n_out, const Py_buffer *vo)
{
    if (o == Py_None) return 0;
    if (get_buffer(o, v, "residual", 'f', 2, 0) < 0) return -1;
    if (v->shape[0] != T || v->shape[1] != n_out) {
        PyErr_Format(PyExc_ValueError, "residual: expected shape (%lld, %lld), got (%lld, %lld)", (long long)T,
                     (long long)n_out, (long long)v->shape[0], (long long)v->shape[1]);
        PyBuffer_Release(v);
        return -1;
    }
    if (ranges_overlap(v, vo)) {
        PyErr_SetString(PyExc_ValueError, "residual must not overlap out");
        PyBuffer_Release(v);
        return -1;
    }
    return 1;
}

/* Output-pass epilogue buffers shared by spmm and spmm_int8: residual and LayerNorm. */
typedef struct {
    Py_buffer vr, vlw, vlb;
    int have_res, have_ln; /* have_ln: 0 none, 1 weight, 2 weight + bias */
    sk_ln ln;
} sk_epilogue;

/* Acquire (and validate) the epilogue arguments; -1 with an exception set (nothing held). */
static int epilogue_acquire(sk_epilogue *e, PyObject *o_res, PyObject *o_lnw, PyObject *o_lnb, double ln_eps,
                            int64_t T, int64_t n_out, const Py_buffer *vo)
{
    e->have_res = e->have_ln = 0;
    const int r = get_residual(o_res, &e->vr, T, n_out, vo);
    if (r < 0) return -1;
    e->have_res = r;
    if (get_layer_norm(o_lnw, o_lnb, ln_eps, n_out, &e->vlw, &e->vlb, &e->have_ln, &e->ln) < 0) {
        if (e->have_res) PyBuffer_Release(&e->vr);
        e->have_res = 0;
        return -1;
    }
    return 0;
}

static void epilogue_release(sk_epilogue *e)
{
    if (e->have_res) PyBuffer_Release(&e->vr);
    release_layer_norm(e->have_ln, &e->vlw, &e->vlb);
    e->have_res = e->have_ln = 0;
}

/* Checks shared by spmm and spmm_int8: matrix type and dtype, threads, variant, tile, token block,
 * split and activation. Returns -1 with a Python exception set on any bad argument. */
static int check_spmm_args(PyObject *o_m, int want_dtype, const char *dtype_msg, int threads, PyObject *o_var,
                           int tile, int tblock, PyObject *o_split, PyObject *o_act, SKMatrix **m_out,
                           int *variant_out, int *split, int *act)
{
    if (parse_split(o_split, split) < 0) return -1;
    if (parse_activation(o_act, act) < 0) return -1;
    if (!PyObject_TypeCheck(o_m, &SKMatrixType)) {
        PyErr_Format(PyExc_TypeError, "mat: expected a SparseMatrix, got %.200s", Py_TYPE(o_m)->tp_name);
        return -1;
    }
    SKMatrix *m = (SKMatrix *)o_m;
    if (m->dtype != want_dtype) {
        PyErr_SetString(PyExc_TypeError, dtype_msg);
        return -1;
    }
    if (parse_threads(threads) < 0) return -1;
    int variant = variant_from_obj(o_var);
    if (variant < 0) return -1;
    if (tile != 0 && (tile < 16 || tile > 256 || (tile & (tile - 1)) != 0)) {
        PyErr_Format(PyExc_ValueError, "tile must be 0 (auto) or a power of two in [16, 256], got %d", tile);
        return -1;
    }
    if (tblock < 0) {
        PyErr_SetString(PyExc_ValueError, "token_block must be >= 0");
        return -1;
    }
    *m_out = m;
    *variant_out = variant;
    return 0;
}

static PyObject *py_spmm(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"mat", "x", "out", "bias", "threads", "variant", "tile", "token_block", "split",
                             "activation", "residual", "ln_weight", "ln_bias", "ln_eps", NULL};
    PyObject *o_m, *o_x, *o_out, *o_bias = Py_None, *o_var = Py_None, *o_split = Py_None, *o_act = Py_None;
    PyObject *o_res = Py_None, *o_lnw = Py_None, *o_lnb = Py_None;
    int threads = 1, tile = 0, tblock = 0, split = 0, act = 0;
    double ln_eps = 1e-12;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OiOiiOOOOOd:spmm", kwlist, &o_m, &o_x, &o_out, &o_bias,
                                     &threads, &o_var, &tile, &tblock, &o_split, &o_act, &o_res, &o_lnw, &o_lnb,
                                     &ln_eps))
        return NULL;
    SKMatrix *m;
    int variant;
    if (check_spmm_args(o_m, DT_FP32, "mat: spmm needs an fp32 SparseMatrix; use spmm_int8 for int8", threads, o_var,
                        tile, tblock, o_split, o_act, &m, &variant, &split, &act) < 0)
        return NULL;
    Py_buffer vx, vo, vb;
    int have_bias = o_bias != Py_None;
    sk_epilogue ep = {.have_res = 0, .have_ln = 0};
    if (get_buffer(o_x, &vx, "x", 'f', 2, 0) < 0) return NULL;
    if (get_buffer(o_out, &vo, "out", 'f', 2, 1) < 0) {
        PyBuffer_Release(&vx);
        return NULL;
    }
    if (have_bias && get_buffer(o_bias, &vb, "bias", 'f', 1, 0) < 0) {
        PyBuffer_Release(&vx);
        PyBuffer_Release(&vo);
        return NULL;
    }
    PyObject *ret = NULL;
    fp32_job J;
    size_t xt_n = 0, scr_n = 0;
    memset(&J, 0, sizeof(J));
    const int64_t T = vx.shape[0];
    if (vx.shape[1] != m->n_in) {
        PyErr_Format(PyExc_ValueError, "x: expected shape (tokens, %lld), got (%lld, %lld)", (long long)m->n_in,
                     (long long)vx.shape[0], (long long)vx.shape[1]);
        goto done;
    }
    if (vo.shape[0] != T || vo.shape[1] != m->n_out) {
        PyErr_Format(PyExc_ValueError, "out: expected shape (%lld, %lld), got (%lld, %lld)", (long long)T,
                     (long long)m->n_out, (long long)vo.shape[0], (long long)vo.shape[1]);
        goto done;
    }
    if (have_bias && vb.shape[0] != m->n_out) {
        PyErr_Format(PyExc_ValueError, "bias: expected length %lld, got %lld", (long long)m->n_out,
                     (long long)vb.shape[0]);
        goto done;
    }
    if (ranges_overlap(&vx, &vo) || (have_bias && ranges_overlap(&vb, &vo))) {
        PyErr_SetString(PyExc_ValueError, "out must not overlap x or bias");
        goto done;
    }
    if (epilogue_acquire(&ep, o_res, o_lnw, o_lnb, ln_eps, T, m->n_out, &vo) < 0) goto done;
    if (T > 0 && m->n_out > 0) {
        const int64_t tt = tile ? tile : default_tile(variant, m->bh);
        int64_t tb = tblock;
        if (tb == 0) {
            /* keep the packed activation block around 384 KiB (L2 resident) */
            const int64_t budget = 384 * 1024 / 4;
            tb = m->n_in > 0 ? budget / m->n_in : 4096;
        }
        /* measured: blocks beyond 128 tokens lose (scratch rows leave L1/L2 sweet spot) */
        if (tb > 128) tb = 128;
        tb = tb / tt * tt;
        if (tb < tt) tb = tt;
        if (tb > 2048) tb = 2048;
        if (tb > round_up(T, SK_TOK_GROUP)) tb = round_up(T, SK_TOK_GROUP);
        J.m = m;
        J.kt = variant_tables[variant];
        J.X = (const float *)vx.buf;
        J.T = T;
        J.Y = (float *)vo.buf;
        J.bias = have_bias ? (const float *)vb.buf : NULL;
        J.R = ep.have_res ? (const float *)ep.vr.buf : NULL;
        J.ln = ep.have_ln ? &ep.ln : NULL;
        J.nt = threads;
        J.tt = tt;
        J.tb = tb;
        J.lds = round_up(tb, SK_TOK_GROUP) + 16;
        J.group = unpack_group(J.lds);
        J.token_split = use_token_split(split, T, threads);
        J.act = act;
        J.xt_stride = round_up(m->n_in * round_up(tb, SK_TOK_GROUP), 16);
        J.xt = (float *)ws_take(sizeof(float) * (size_t)(J.xt_stride * (J.token_split ? threads : 1)), &xt_n);
        J.scratch = (float *)ws_take(sizeof(float) * (size_t)(threads * J.group * SK_ROWS_PER_CHUNK * J.lds), &scr_n);
        if (!J.xt || !J.scratch) {
            PyErr_NoMemory();
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        run_fp32(&J);
        Py_END_ALLOW_THREADS
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    ws_give(J.xt, xt_n);
    ws_give(J.scratch, scr_n);
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vo);
    if (have_bias) PyBuffer_Release(&vb);
    epilogue_release(&ep);
    return ret;
}

/* ------------------------------------------------------------------------------------
 * Variant API
 * ---------------------------------------------------------------------------------- */
static PyObject *py_kernel_variant(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(variant_names[current_variant]);
}

static PyObject *variant_list(const int *flags, int need_supported)
{
    PyObject *l = PyList_New(0);
    if (!l) return NULL;
    for (int v = 0; v < V_COUNT; v++) {
        if (!flags[v]) continue;
        if (need_supported && !variant_supported[v]) continue;
        PyObject *s = PyUnicode_FromString(variant_names[v]);
        if (!s || PyList_Append(l, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(s);
    }
    return l;
}

static PyObject *py_compiled_variants(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return variant_list(variant_compiled, 0);
}

static PyObject *py_supported_variants(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return variant_list(variant_compiled, 1);
}

static PyObject *py_set_kernel_variant(PyObject *self, PyObject *arg)
{
    (void)self;
    int v;
    if (arg == Py_None) v = best_variant();
    else v = variant_from_obj(arg);
    if (v < 0) return NULL;
    int old = current_variant;
    current_variant = v;
    return PyUnicode_FromString(variant_names[old]);
}

static PyObject *py_max_threads(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
#ifdef _OPENMP
    return PyLong_FromLong(omp_get_num_procs());
#else
    return PyLong_FromLong(1);
#endif
}

#include "sk_int8_module.h"
#include "sk_attention.h"

static PyMethodDef methods[] = {
    {"pack_csr", (PyCFunction)(void (*)(void))py_pack_csr, METH_VARARGS | METH_KEYWORDS,
     "pack_csr(indptr, indices, values, shape, panel=-1) -> SparseMatrix\n\n"
     "Validate and copy a CSR fp32 weight W of shape (n_out, n_in).\n"
     "panel: input columns per column panel (-1: chosen from the density, 0: none). With panels, a\n"
     "group of 256 rows sweeps each panel's slice of the activations while it is in L1, row\n"
     "segments sorted by length; used when threads split the tokens.\n"
     "indptr: int32/int64, length n_out + 1, indptr[0] == 0, non-decreasing, indptr[-1] == nnz.\n"
     "indices: int32/int64, length nnz, each in [0, n_in). values: float32, length nnz.\n"
     "Raises TypeError (wrong dtype / not a buffer) or ValueError (shape, contiguity, bounds)."},
    {"pack_bsr", (PyCFunction)(void (*)(void))py_pack_bsr, METH_VARARGS | METH_KEYWORDS,
     "pack_bsr(indptr, indices, values, shape, block=4, panel=-1) -> SparseMatrix\n\n"
     "Validate and copy a block-row fp32 weight: blocks of `block` consecutive output rows x 1\n"
     "input column (block in 1, 2, 4, 8). indptr over ceil(n_out / block) block rows; indices:\n"
     "input column of each block; values: float32 (nblocks, block) or flat, block-major.\n"
     "Rows past n_out in the last block are ignored. panel as pack_csr (default: none for blocks).\n"
     "Errors as pack_csr."},
    {"spmm", (PyCFunction)(void (*)(void))py_spmm, METH_VARARGS | METH_KEYWORDS,
     "spmm(mat, x, out, bias=None, threads=1, variant=None, tile=0, token_block=0, split='auto',\n"
     "     activation=None, residual=None, ln_weight=None, ln_bias=None, ln_eps=1e-12) -> None\n\n"
     "out[t, o] = sum_k x[t, k] * W[o, k] (+ bias[o]), i.e. out = x @ W.T + bias.\n"
     "x: float32 C-contiguous (tokens, n_in); out: writable float32 C-contiguous (tokens, n_out),\n"
     "not overlapping x; bias: float32 (n_out,) or None. threads: OpenMP threads (>= 1).\n"
     "variant: None (module default) or a name from supported_variants(). tile / token_block:\n"
     "tuning knobs (tokens per register tile, power of two 16..256; tokens per packed block), 0 = auto.\n"
     "activation: None/'none', or 'gelu' = exact-form GELU 0.5 x (1 + erf(x / sqrt 2)) applied to the\n"
     "output (erf approximated to 1.5e-7 absolute in the AVX-512 variants, libm erff elsewhere).\n"
     "residual: None, or float32 C-contiguous (tokens, n_out) not overlapping out, added after the\n"
     "activation in the same output pass: out = act(x @ W.T + bias) + residual (BERT's skip connection).\n"
     "ln_weight / ln_bias / ln_eps: optional LayerNorm over each output row, applied last (float32 (n_out,)\n"
     "gamma and beta, eps >= 0; biased variance as torch.nn.LayerNorm), while the rows are in cache.\n"
     "split: how threads share work: 'tokens' (each thread its own tokens, no barriers), 'rows'\n"
     "(output rows, for few tokens) or 'auto' (tokens when there are >= 64 per thread).\n"
     "The GIL is released during the computation."},
    {"kernel_variant", py_kernel_variant, METH_NOARGS, "kernel_variant() -> str: the default variant in use."},
    {"compiled_variants", py_compiled_variants, METH_NOARGS,
     "compiled_variants() -> list[str]: variants compiled into this build."},
    {"supported_variants", py_supported_variants, METH_NOARGS,
     "supported_variants() -> list[str]: compiled variants this CPU can run."},
    {"set_kernel_variant", py_set_kernel_variant, METH_O,
     "set_kernel_variant(name) -> str: set the default variant (None = best supported); returns\n"
     "the previous one. Raises ValueError for unknown, uncompiled or unsupported names."},
    {"max_threads", py_max_threads, METH_NOARGS, "max_threads() -> int: processors OpenMP sees."},
    SK_INT8_METHODS
    SK_ATTENTION_METHODS
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "accelerators._sparse_kernels",
    "Sparse weight x dense activation kernels (Y = X W^T + b) for CPU inference.\n\n"
    "Weights are packed once (pack_csr, pack_bsr, pack_int8) into validated private copies;\n"
    "spmm / spmm_int8 run with an explicit OpenMP thread count and the GIL released.\n"
    "The ISA variant (scalar, avx2, avx512, vnni) is chosen at import: the best one the CPU\n"
    "supports, or the one named by the environment variable SPARSEBENCH_KERNEL_VARIANT (an\n"
    "unknown or unsupported name raises ImportError). Query with kernel_variant(),\n"
    "compiled_variants(), supported_variants(); change with set_kernel_variant(name) or the\n"
    "per-call variant= argument.",
    -1,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sparse_kernels(void)
{
    detect_variants();
    current_variant = best_variant();
    const char *env = getenv("SPARSEBENCH_KERNEL_VARIANT");
    if (env && env[0]) {
        int v = parse_variant(env, PyExc_ImportError);
        if (v < 0) {
            PyObject *t, *val, *tb;
            PyErr_Fetch(&t, &val, &tb);
            PyObject *msg = PyUnicode_FromFormat("SPARSEBENCH_KERNEL_VARIANT=%s: %S", env, val ? val : Py_None);
            Py_XDECREF(t);
            Py_XDECREF(val);
            Py_XDECREF(tb);
            if (msg) {
                PyErr_SetObject(PyExc_ImportError, msg);
                Py_DECREF(msg);
            }
            return NULL;
        }
        current_variant = v;
    }
    if (PyType_Ready(&SKMatrixType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&moduledef);
    if (!mod) return NULL;
    Py_INCREF(&SKMatrixType);
    if (PyModule_AddObject(mod, "SparseMatrix", (PyObject *)&SKMatrixType) < 0) {
        Py_DECREF(&SKMatrixType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
