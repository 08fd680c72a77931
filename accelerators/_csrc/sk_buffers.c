/*
 * Memory at the module's edges: the Python buffers an entry point receives (validated and
 * acquired into one sk_args, released together) and the scratch buffers it computes in
 * (64-byte aligned, cached across calls).
 */
#include "sk_py.h"
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------------------
 * Argument buffers
 * ---------------------------------------------------------------------------------- */
char sk_buffer_kind(const Py_buffer *v)
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

/* Get the buffer of obj; on failure say whether it is read-only or not a buffer at all. */
static int export_buffer(PyObject *obj, Py_buffer *view, const char *name, int writable)
{
    if (obj == NULL || obj == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s: expected a buffer, got None", name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) == 0)
        return 0;
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

/* dtype, dimensions and contiguity of an exported buffer; -1 with an exception set */
static int check_layout(const Py_buffer *view, const char *name, char kind, int ndim)
{
    const char k = sk_buffer_kind(view);
    if (!((kind == 'I') ? (k == 'i' || k == 'q') : (k == kind))) {
        PyErr_Format(PyExc_TypeError, "%s: expected dtype %s, got buffer format '%s' (itemsize %zd)",
                     name, kind_name(kind), view->format ? view->format : "B", view->itemsize);
        return -1;
    }
    if (ndim > 0 && view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d-dimensional buffer, got %d dimensions", name, ndim, view->ndim);
        return -1;
    }
    /* ndim 0 / -1: a range of accepted dimensions, which the message names */
    const int most = ndim == 0 ? 2 : 3;
    if (ndim <= 0 && (view->ndim < 1 || view->ndim > most)) {
        PyErr_Format(PyExc_ValueError, "%s: expected 1 to %d dimensions, got %d", name, most, view->ndim);
        return -1;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s: buffer must be C-contiguous", name);
        return -1;
    }
    return 0;
}

Py_buffer *sk_arg(sk_args *a, PyObject *obj, const char *name, char kind, int ndim, int writable)
{
    if (a->n >= SK_MAX_ARGS) { /* a programming error, not a user's */
        PyErr_SetString(PyExc_SystemError, "sparse kernels: too many buffer arguments");
        return NULL;
    }
    Py_buffer *view = &a->v[a->n];
    if (export_buffer(obj, view, name, writable) < 0) return NULL;
    if (check_layout(view, name, kind, ndim) < 0) {
        PyBuffer_Release(view);
        return NULL;
    }
    a->n++;
    return view;
}

int sk_arg_opt(sk_args *a, PyObject *obj, const char *name, char kind, int ndim, int writable, Py_buffer **view)
{
    *view = NULL;
    if (obj == Py_None) return 0;
    *view = sk_arg(a, obj, name, kind, ndim, writable);
    return *view ? 0 : -1;
}

void sk_args_release(sk_args *a)
{
    while (a->n > 0) PyBuffer_Release(&a->v[--a->n]);
}

/* "(d0, d1, ...)" into buf; SK_ANY entries print as any_name */
static void format_dims(char *buf, size_t n, int ndim, const int64_t *dims, const char *any_name)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++) {
        const char *sep = i ? ", " : "";
        if (dims[i] == SK_ANY) k += (size_t)snprintf(buf + k, n - k, "%s%s", sep, any_name ? any_name : "any");
        else k += (size_t)snprintf(buf + k, n - k, "%s%lld", sep, (long long)dims[i]);
    }
    if (k < n) snprintf(buf + k, n - k, ")");
}

void sk_format_shape(char *buf, size_t n, const Py_buffer *v)
{
    int64_t got[3] = {0, 0, 0};
    for (int i = 0; i < v->ndim && i < 3; i++) got[i] = v->shape[i];
    format_dims(buf, n, v->ndim < 3 ? v->ndim : 3, got, NULL);
}

int sk_check_shape(const Py_buffer *v, const char *name, int ndim, const int64_t *dims, const char *dim_name)
{
    int ok = v->ndim == ndim;
    for (int i = 0; i < ndim && ok; i++) ok = dims[i] == SK_ANY || v->shape[i] == dims[i];
    if (ok) return 0;
    if (ndim == 1 && v->ndim == 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected length %lld%s%s%s, got %lld", name, (long long)dims[0],
                     dim_name ? " (" : "", dim_name ? dim_name : "", dim_name ? ")" : "", (long long)v->shape[0]);
        return -1;
    }
    char want_s[96], got_s[96];
    format_dims(want_s, sizeof want_s, ndim, dims, dim_name);
    sk_format_shape(got_s, sizeof got_s, v);
    PyErr_Format(PyExc_ValueError, "%s: expected shape %s, got %s", name, want_s, got_s);
    return -1;
}

int sk_check_key_bias(const Py_buffer *v)
{
    return sk_check_key_bias_values((const float *)v->buf, (int64_t)(v->len / (Py_ssize_t)sizeof(float)));
}

int sk_check_key_bias_values(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(x[i] <= 3.4028235e38f)) { /* NaN or +inf; -inf masks */
            PyErr_Format(PyExc_ValueError, "key_bias must be finite or -inf (a masked key), got %s at flat index %lld",
                         x[i] != x[i] ? "nan" : "inf", (long long)i);
            return -1;
        }
    return 0;
}

int sk_overlap(const Py_buffer *a, const Py_buffer *b)
{
    const char *a0 = (const char *)a->buf, *a1 = a0 + a->len;
    const char *b0 = (const char *)b->buf, *b1 = b0 + b->len;
    return a->len > 0 && b->len > 0 && a0 < b1 && b0 < a1;
}

int sk_overlaps_args(const Py_buffer *v, const sk_args *a)
{
    for (int i = 0; a && i < a->n; i++)
        if (&a->v[i] != v && sk_overlap(&a->v[i], v)) return 1;
    return 0;
}

int64_t sk_load_int(const Py_buffer *v, char kind, int64_t i)
{
    return kind == 'i' ? (int64_t)((const int32_t *)v->buf)[i] : ((const int64_t *)v->buf)[i];
}

int sk_parse_failed(void)
{
    /* the module's rule is ValueError for a bad value: an int argument too large for its C type is one */
    if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyObject *msg = value ? PyObject_Str(value) : NULL;
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        if (msg) {
            PyErr_SetObject(PyExc_ValueError, msg);
            Py_DECREF(msg);
        } else {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "an integer argument is out of range");
        }
    }
    return -1;
}

int sk_threads_limit(void)
{
#ifdef _OPENMP
    /* libgomp exits the process ("Thread creation failed") when the OS refuses a thread, so a
     * count is refused up front above what the machine can sensibly run: SK_THREADS_PER_PROC per
     * processor (oversubscription for tests and measurements on small machines, never hundreds)
     * and never above OMP_THREAD_LIMIT. Computed once (first call, with the GIL held):
     * omp_get_num_procs() asks the kernel for the affinity mask, about 1 us, too much for every
     * kernel call of a small layer. */
    static int cached = 0;
    if (cached == 0) {
        long lim = (long)SK_THREADS_PER_PROC * (long)omp_get_num_procs();
        const int tl = omp_get_thread_limit();
        if (tl < lim) lim = tl;
        if (lim > SK_THREADS_MAX) lim = SK_THREADS_MAX;
        cached = lim < 1 ? 1 : (int)lim;
    }
    return cached;
#else
    return SK_THREADS_MAX; /* no OpenMP: threads is ignored, no thread is ever created */
#endif
}

/* ValueError naming the limit and where it comes from; `got` is the value as the caller wrote it */
static int threads_out_of_range(PyObject *got)
{
#ifdef _OPENMP
    PyErr_Format(PyExc_ValueError,
                 "threads must be in [1, %d], got %S (thread_limit(): %d per processor OpenMP sees, at most "
                 "OMP_THREAD_LIMIT and %d)",
                 sk_threads_limit(), got, SK_THREADS_PER_PROC, SK_THREADS_MAX);
#else
    PyErr_Format(PyExc_ValueError, "threads must be in [1, %d], got %S", sk_threads_limit(), got);
#endif
    return -1;
}

int sk_check_threads(int threads)
{
    if (threads >= 1 && threads <= sk_threads_limit()) return 0;
    PyObject *v = PyLong_FromLong(threads);
    if (v) {
        threads_out_of_range(v);
        Py_DECREF(v);
    }
    return -1;
}

int sk_threads_arg(PyObject *obj, void *addr)
{
    /* a bool is an int to Python but not a thread count: threads=True is a mistake, not 1 */
    if (PyBool_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "threads: expected an int, got bool");
        return 0;
    }
    PyObject *idx = PyNumber_Index(obj); /* int, numpy integer; TypeError for float or str */
    if (!idx) return 0;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) return 0;
    if (overflow || v < 1 || v > sk_threads_limit()) {
        threads_out_of_range(obj);
        return 0;
    }
    *(int *)addr = (int)v;
    return 1;
}

/* ------------------------------------------------------------------------------------
 * Scratch memory
 * ---------------------------------------------------------------------------------- */
void *sk_aligned_malloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

#define SK_WS_SLOTS 8
typedef struct {
    void *p;
    size_t n;
} sk_ws;
static sk_ws ws_cache[SK_WS_SLOTS];

void *sk_ws_take(size_t bytes, size_t *got)
{
    int best = -1; /* the smallest cached buffer that is large enough */
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
    return sk_aligned_malloc(bytes);
}

/* Keeps the larger buffers: a full cache drops its smallest one for a larger newcomer. A buffer
 * above SK_WS_KEEP_PER_THREAD per thread of the call is freed instead: such a buffer grew with the
 * call's tokens or sequence length (a transient large input), and keeping it would hold that
 * memory for the life of the process. */
void sk_ws_give(void *p, size_t n, int threads)
{
    if (!p) return;
    if (n > (size_t)SK_WS_KEEP_PER_THREAD * (size_t)(threads > 1 ? threads : 1)) {
        free(p);
        return;
    }
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

size_t sk_ws_bytes(void)
{
    size_t total = 0;
    for (int i = 0; i < SK_WS_SLOTS; i++) total += ws_cache[i].p ? ws_cache[i].n : 0;
    return total;
}
