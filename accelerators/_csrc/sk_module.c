/*
 * accelerators._sparse_kernels: sparse x dense matrix products for CPU inference.
 *
 * This file holds the module itself: which ISA variants exist and which one runs (chosen at
 * import from the CPU, or forced by SPARSEBENCH_KERNEL_VARIANT; per call with variant=), the
 * method table and the module's init. The entry points live with their seams (see sk_py.h).
 */
#include "sk_py.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int64_t sk_l2_bytes = 1 << 20;

/* the per-core L2 size (sysconf; 1 MiB where the C library does not say) */
static void detect_l2(void)
{
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long b = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (b >= 64 * 1024 && b <= (1L << 30)) sk_l2_bytes = b;
#endif
}

/* ------------------------------------------------------------------------------------
 * Variants
 * ---------------------------------------------------------------------------------- */
static const char *const variant_names[V_COUNT] = {"scalar", "avx2", "avx512", "vnni", "amx"};
const sk_kernels *sk_variant_tables[V_COUNT];
#ifdef SK_HAVE_X86
static sk_kernels avx512_kernels; /* AVX2's table with AVX-512's fp32 entries: see detect_variants */
#endif
#ifdef SK_HAVE_AMX
static sk_kernels amx_kernels;    /* vnni's table with the AMX product for 16x4 blocks */
#endif
static int variant_compiled[V_COUNT];
static int variant_supported[V_COUNT];
static int current_variant = V_SCALAR;

#ifdef SK_HAVE_AMX
#include <errno.h>
#include <sys/syscall.h>
/* Linux hands a process AMX's 8 KiB of tile state only on request (arch_prctl
 * ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, kernel 5.16+); without it a tile instruction faults.
 * Asked the first time amx is chosen, not at import: once granted, every later sigaltstack of the
 * process must hold the larger signal frame. 0 = granted, else the errno of the refusal. */
static int amx_request(void)
{
    static int state = -1; /* -1: not asked yet (the GIL serialises the callers) */
    if (state < 0) {
#if defined(__linux__) && defined(SYS_arch_prctl)
        state = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0 ? 0 : errno;
#else
        state = ENOSYS;
#endif
    }
    return state;
}
#endif

static void detect_variants(void)
{
    sk_variant_tables[V_SCALAR] = &sk_kernels_scalar;
    variant_compiled[V_SCALAR] = 1;
    variant_supported[V_SCALAR] = 1;
#ifdef SK_HAVE_X86
    sk_variant_tables[V_AVX2] = &sk_kernels_avx2;
    /* AVX-512 without VNNI (e.g. Skylake-SP): AVX2's table with AVX-512's fp32 entries and its
     * 512-bit vpmaddubsw INT8 product (the rest of the int8 path stays AVX2's); AVX2's functions are
     * static to their translation unit, so the table is put together here. Same arithmetic, same bits. */
    avx512_kernels = sk_kernels_avx2;
#define SK_TAKE_AVX512(entry) avx512_kernels.entry = sk_kernels_avx512.entry;
    SK_TAKE_AVX512(name) SK_TAKE_AVX512(tile_fp32) SK_TAKE_AVX512(pack_x) SK_TAKE_AVX512(unpack_y)
    SK_TAKE_AVX512(attn_head) SK_TAKE_AVX512(layer_norm) SK_TAKE_AVX512(tile_int8)
#undef SK_TAKE_AVX512
    sk_variant_tables[V_AVX512] = &avx512_kernels;
    sk_variant_tables[V_VNNI] = &sk_kernels_vnni;
    variant_compiled[V_AVX2] = variant_compiled[V_AVX512] = variant_compiled[V_VNNI] = 1;
#ifdef SK_HAVE_AMX
    amx_kernels = sk_kernels_vnni;
    amx_kernels.name = "amx";
    amx_kernels.tile_int8 = sk_amx_tile_int8;
    sk_variant_tables[V_AMX] = &amx_kernels;
    variant_compiled[V_AMX] = 1;
#endif
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    int vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    variant_supported[V_AVX2] = avx2;
    variant_supported[V_AVX512] = avx512;
    variant_supported[V_VNNI] = vnni;
#ifdef SK_HAVE_AMX
    variant_supported[V_AMX] = vnni && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8");
#endif
#endif
}

/* The default: the best supported variant short of amx, which runs only when asked for (by name or
 * SPARSEBENCH_KERNEL_VARIANT) until its tiles have been measured on an AMX CPU; it differs from
 * vnni only in the bsr16x4 product. */
static int best_variant(void)
{
    for (int v = V_COUNT - 1; v >= 0; v--)
        if (v != V_AMX && variant_compiled[v] && variant_supported[v]) return v;
    return V_SCALAR;
}

/* Parse a variant name; returns index or -1 with a Python exception of exc_type set. */
static int parse_variant(const char *name, PyObject *exc_type)
{
    for (int v = 0; v < V_COUNT; v++) {
        if (strcmp(name, variant_names[v]) != 0) continue;
        if (!variant_compiled[v]) {
            PyErr_Format(exc_type, "kernel variant '%s' was not compiled into this build", name);
            return -1;
        }
        if (!variant_supported[v]) {
            PyErr_Format(exc_type, "kernel variant '%s' is not supported by this CPU", name);
            return -1;
        }
#ifdef SK_HAVE_AMX
        const int err = v == V_AMX ? amx_request() : 0;
        if (err) {
            PyErr_Format(exc_type, "kernel variant 'amx': the OS refused this process the AMX tile state "
                                   "(arch_prctl ARCH_REQ_XCOMP_PERM: %s)", strerror(err));
            return -1;
        }
#endif
        return v;
    }
    PyErr_Format(exc_type, "unknown kernel variant '%s' (valid: scalar, avx2, avx512, vnni, amx)", name);
    return -1;
}

int sk_variant_from_obj(PyObject *obj)
{
    if (obj == NULL || obj == Py_None) return current_variant;
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "variant must be a str or None");
        return -1;
    }
    Py_ssize_t n = 0;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
    if (!s) return -1;
    if ((size_t)n != strlen(s)) { /* C reads up to the NUL: "avx2\0junk" would run as avx2 */
        PyErr_SetString(PyExc_ValueError, "variant holds a NUL character");
        return -1;
    }
    return parse_variant(s, PyExc_ValueError);
}

/* The module default from SPARSEBENCH_KERNEL_VARIANT when set (ImportError naming the variable
 * when it is unknown or unsupported), else best_variant(). -1 with an exception. */
static int variant_from_env(void)
{
    const char *env = getenv("SPARSEBENCH_KERNEL_VARIANT");
    if (!env || !env[0]) return best_variant();
    const int v = parse_variant(env, PyExc_ImportError);
    if (v >= 0) return v;
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
    return -1;
}

static PyObject *py_kernel_variant(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(variant_names[current_variant]);
}

/* names of the compiled variants (need_supported: only those this CPU runs) */
static PyObject *variant_list(int need_supported)
{
    PyObject *l = PyList_New(0);
    if (!l) return NULL;
    for (int v = 0; v < V_COUNT; v++) {
        if (!variant_compiled[v] || (need_supported && !variant_supported[v])) continue;
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
    return variant_list(0);
}

static PyObject *py_supported_variants(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return variant_list(1);
}

/* what a call's variant= does with the name, without a call: amx's permission request included */
static PyObject *py_check_variant(PyObject *self, PyObject *arg)
{
    (void)self;
    const int v = sk_variant_from_obj(arg);
    if (v < 0) return NULL;
    return PyUnicode_FromString(variant_names[v]);
}

static PyObject *py_set_kernel_variant(PyObject *self, PyObject *arg)
{
    (void)self;
    const int v = arg == Py_None ? best_variant() : sk_variant_from_obj(arg);
    if (v < 0) return NULL;
    const int old = current_variant;
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

/* the largest threads= a call accepts now (sk_threads_limit) */
static PyObject *py_thread_limit(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(sk_threads_limit());
}

/* what a call's threads=n does with n, without a call: the one check SparseLinear shares */
static PyObject *py_check_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    int n = 0;
    if (!sk_threads_arg(arg, &n)) return NULL;
    return PyLong_FromLong(n);
}

/* bytes the workspace cache holds between calls (sk_ws_bytes) */
static PyObject *py_workspace_bytes(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromSize_t(sk_ws_bytes());
}

/* ------------------------------------------------------------------------------------
 * Module
 * ---------------------------------------------------------------------------------- */
#define SK_KW_METHOD(name, fn, doc) {name, (PyCFunction)(void (*)(void))fn, METH_VARARGS | METH_KEYWORDS, doc}

static PyMethodDef methods[] = {
    SK_KW_METHOD("pack_csr", sk_py_pack_csr, sk_doc_pack_csr),
    SK_KW_METHOD("pack_bsr", sk_py_pack_bsr, sk_doc_pack_bsr),
    SK_KW_METHOD("pack_int8", sk_py_pack_int8, sk_doc_pack_int8),
    SK_KW_METHOD("spmm", sk_py_spmm, sk_doc_spmm),
    SK_KW_METHOD("spmm_int8", sk_py_spmm_int8, sk_doc_spmm_int8),
    SK_KW_METHOD("spmm_int8_raw", sk_py_spmm_int8_raw, sk_doc_spmm_int8_raw),
    SK_KW_METHOD("ffn_int8", sk_py_ffn_int8, sk_doc_ffn_int8),
    SK_KW_METHOD("qkv_attention_int8", sk_py_qkv_attention_int8, sk_doc_qkv_attention_int8),
    SK_KW_METHOD("attention", sk_py_attention, sk_doc_attention),
    {"kernel_variant", py_kernel_variant, METH_NOARGS, "kernel_variant() -> str: the default variant in use."},
    {"compiled_variants", py_compiled_variants, METH_NOARGS,
     "compiled_variants() -> list[str]: variants compiled into this build."},
    {"supported_variants", py_supported_variants, METH_NOARGS,
     "supported_variants() -> list[str]: compiled variants this CPU can run."},
    {"check_variant", py_check_variant, METH_O,
     "check_variant(name) -> str: the variant a call's variant=name runs (None: the default); raises\n"
     "ValueError, as that call would, for an unknown, uncompiled or unsupported name, or when the OS\n"
     "refuses amx its tile state (asked here the first time)."},
    {"set_kernel_variant", py_set_kernel_variant, METH_O,
     "set_kernel_variant(name) -> str: set the default variant (None = the best supported short of\n"
     "amx, which is opt-in); returns\n"
     "the previous one. Raises ValueError for unknown, uncompiled or unsupported names."},
    {"max_threads", py_max_threads, METH_NOARGS, "max_threads() -> int: processors OpenMP sees."},
    {"thread_limit", py_thread_limit, METH_NOARGS,
     "thread_limit() -> int: the largest threads= a call accepts: 4 per processor OpenMP sees\n"
     "(max_threads()), at most OMP_THREAD_LIMIT and 1024 (1024 in a build without OpenMP)."},
    {"check_threads", py_check_threads, METH_O,
     "check_threads(n) -> int: n, checked as a call's threads=n is: TypeError for a bool or a\n"
     "non-integer, ValueError outside [1, thread_limit()]."},
    {"workspace_bytes", py_workspace_bytes, METH_NOARGS,
     "workspace_bytes() -> int: bytes of scratch buffers cached between calls (at most 8 buffers,\n"
     "each at most 4 MiB per thread of the call that used it; larger ones are freed after the call)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "accelerators._sparse_kernels",
    "Sparse weight x dense activation kernels (Y = X W^T + b) for CPU inference.\n\n"
    "Weights are packed once (pack_csr, pack_bsr, pack_int8) into validated private copies;\n"
    "spmm / spmm_int8 run with an explicit OpenMP thread count and the GIL released.\n"
    "The ISA variant (scalar, avx2, avx512, vnni, amx) is chosen at import: the best one the CPU\n"
    "supports short of amx (opt-in: AMX tiles for bsr16x4), or the one named by the environment\n"
    "variable SPARSEBENCH_KERNEL_VARIANT (an\n"
    "unknown or unsupported name raises ImportError). Query with kernel_variant(),\n"
    "compiled_variants(), supported_variants(); change with set_kernel_variant(name) or the\n"
    "per-call variant= argument.",
    -1,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sparse_kernels(void)
{
    (void)sk_threads_limit(); /* fixed at import: the processors OpenMP sees then */
    detect_variants();
    detect_l2();
    const int v = variant_from_env();
    if (v < 0) return NULL;
    current_variant = v;
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
