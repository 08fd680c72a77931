/*
 * attention: fused multi-head self-attention for inference, one (batch, head) pair per OpenMP
 * work item; the per-head kernel is the variant's attn_head.
 */
#include "sk_py.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const float *qkv;    /* (B, S, 3H) */
    const float *kb;     /* (B, S) additive key bias, or NULL */
    float *out;          /* (B, S, H) */
    int64_t B, S, H, dh;
    int heads;
    int int8;            /* 1: sk_kernels.attn_head_int8 */
    float scale;
} attn_call;

int sk_attention_params(int heads, int64_t H, int64_t S, int int8, double scale, int64_t *dh, float *scale_out)
{
    if (heads < 1 || H % heads != 0) {
        PyErr_Format(PyExc_ValueError, "num_heads must be >= 1 and hidden %lld divisible by num_heads=%d",
                     (long long)H, heads);
        return -1;
    }
    if (int8 && S > SK_ATTN8_MAX_S) {
        PyErr_Format(PyExc_ValueError, "INT8 attention supports at most %d keys (int32 sums), got seq %lld",
                     SK_ATTN8_MAX_S, (long long)S);
        return -1;
    }
    if (int8 && H / heads > SK_ATTN8_MAX_S) { /* q . k sums 127 * 127 * head_dim in int32 */
        PyErr_Format(PyExc_ValueError, "INT8 attention supports head_dim <= %d (int32 sums), got %lld",
                     SK_ATTN8_MAX_S, (long long)(H / heads));
        return -1;
    }
    if (!isfinite(scale) || !isfinite((float)scale)) { /* the kernels take it as a float */
        PyErr_SetString(PyExc_ValueError, "scale must be finite as a float32 (or omitted for 1/sqrt(head_dim))");
        return -1;
    }
    *dh = H / heads;
    *scale_out = scale < 0 ? (float)(1.0 / sqrt((double)(*dh > 0 ? *dh : 1))) : (float)scale;
    return 0;
}

/* shapes, overlaps and scale of an attention call whose buffers are acquired */
static int check_attention(attn_call *a, const Py_buffer *vq, const Py_buffer *vo, const Py_buffer *vk, double scale)
{
    const int64_t H3 = vq->shape[2];
    a->B = vq->shape[0];
    a->S = vq->shape[1];
    a->H = H3 / 3;
    if (H3 % 3 != 0) {
        PyErr_Format(PyExc_ValueError, "qkv: last dimension must be 3 * hidden, got %lld", (long long)H3);
        return -1;
    }
    if (sk_attention_params(a->heads, a->H, a->S, a->int8, scale, &a->dh, &a->scale) < 0) return -1;
    const int64_t odims[3] = {a->B, a->S, a->H}, kdims[2] = {a->B, a->S};
    if (sk_check_shape(vo, "out", 3, odims, NULL) < 0 || (vk && sk_check_shape(vk, "key_bias", 2, kdims, NULL) < 0))
        return -1;
    if (sk_overlap(vq, vo) || (vk && sk_overlap(vk, vo))) {
        PyErr_SetString(PyExc_ValueError, "out must not overlap qkv or key_bias");
        return -1;
    }
    if (vk && sk_check_key_bias(vk) < 0) return -1;
    a->qkv = (const float *)vq->buf;
    a->kb = vk ? (const float *)vk->buf : NULL;
    a->out = (float *)vo->buf;
    return 0;
}

/* every (batch, head) pair, GIL released; scratch of sk_attn_scratch_floats per thread */
static int run_attention(const attn_call *a, const sk_kernels *kt, int threads)
{
    if (a->B <= 0 || a->S <= 0 || a->dh <= 0) return 0;
    const int64_t per = sk_round_up(a->int8 ? sk_attn8_scratch_floats(a->S, a->dh)
                                            : sk_attn_scratch_floats(a->S, a->dh), 16);
    void (*head)(const float *, const float *, const float *, int64_t, int64_t, int64_t, float, const float *,
                 float *, int64_t, float *) = a->int8 ? kt->attn_head_int8 : kt->attn_head;
    size_t scr_n = 0;
    float *scr = (float *)sk_ws_take(sizeof(float) * (size_t)(per * threads), &scr_n);
    if (!scr) {
        PyErr_NoMemory();
        return -1;
    }
    const int64_t S = a->S, H = a->H, H3 = 3 * a->H, dh = a->dh, nwork = a->B * a->heads;
    /* int8: which sequences hold NaN or inf (one contiguous pass each); only their heads get
     * sk_attn8_nan's rows */
    unsigned char *bad = a->int8 ? (unsigned char *)calloc((size_t)a->B, 1) : NULL;
    if (a->int8 && !bad) {
        sk_ws_give(scr, scr_n, threads);
        PyErr_NoMemory();
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    if (bad) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t b = 0; b < a->B; b++) bad[b] = (unsigned char)sk_any_nonfinite(a->qkv + b * S * H3, S * H3);
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t w = 0; w < nwork; w++) {
        float *s = scr + (int64_t)sk_thread_num() * per;
        const int64_t b = w / a->heads, h = w % a->heads;
        const float *base = a->qkv + b * S * H3 + h * dh;
        const float *kb = a->kb ? a->kb + b * S : NULL;
        float *o = a->out + b * S * H + h * dh;
        head(base, base + H, base + 2 * H, H3, S, dh, a->scale, kb, o, H, s);
        if (bad && bad[b]) sk_attn8_nan(base, base + H, base + 2 * H, H3, 1, S, dh, kb, o, H);
    }
    Py_END_ALLOW_THREADS
    free(bad);
    sk_ws_give(scr, scr_n, threads);
    return 0;
}

PyObject *sk_py_attention(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"qkv", "out", "num_heads", "scale", "key_bias", "threads", "variant", "precision", NULL};
    PyObject *o_qkv, *o_out, *o_kb = Py_None, *o_var = Py_None;
    const char *precision = "fp32";
    int threads = 1;
    double scale = -1.0;
    attn_call a = {.heads = 0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOi|dOO&Os:attention", kwlist, &o_qkv, &o_out, &a.heads, &scale,
                                     &o_kb, sk_threads_arg, &threads, &o_var, &precision)) {
        sk_parse_failed();
        return NULL;
    }
    if (strcmp(precision, "fp32") != 0 && strcmp(precision, "int8") != 0) {
        PyErr_Format(PyExc_ValueError, "precision must be 'fp32' or 'int8', got '%s'", precision);
        return NULL;
    }
    a.int8 = precision[0] == 'i';
    const int variant = sk_variant_from_obj(o_var);
    if (variant < 0) return NULL;
    sk_args A = {.n = 0};
    Py_buffer *vq, *vo, *vk;
    int rc = -1;
    if ((vq = sk_arg(&A, o_qkv, "qkv", 'f', 3, 0)) && (vo = sk_arg(&A, o_out, "out", 'f', 3, 1)) &&
        sk_arg_opt(&A, o_kb, "key_bias", 'f', 2, 0, &vk) == 0 && check_attention(&a, vq, vo, vk, scale) == 0)
        rc = run_attention(&a, sk_variant_tables[variant], threads);
    sk_args_release(&A);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

const char sk_doc_attention[] =
    "attention(qkv, out, num_heads, scale=1/sqrt(head_dim), key_bias=None, threads=1, variant=None,\n"
    "          precision='fp32')\n\n"
    "Fused multi-head self-attention (softmax(scale * Q K^T + key_bias) V), fp32, for inference.\n"
    "qkv: float32 C-contiguous (batch, seq, 3 * hidden), the q | k | v projections side by side,\n"
    "each hidden = num_heads * head_dim with heads contiguous (BERT's layout). out: writable float32\n"
    "(batch, seq, hidden), heads side by side, not overlapping the inputs. key_bias: None or float32\n"
    "(batch, seq) added to every query's scores for that key (0 keeps, -inf masks padding; NaN and\n"
    "+inf raise ValueError); a query whose keys are all -inf (int8: all <= -10000) gets zeros. exp\n"
    "is a degree-6 polynomial (relative error < 2e-7) in the avx2 and AVX-512 variants and libm expf\n"
    "in the scalar one. One (batch, head)\n"
    "pair per OpenMP work item, GIL released. precision='int8': Q K^T and P V in INT8 with exact\n"
    "int32 sums (vpdpbusd in the vnni variant): q and k quantized per row, v per channel over the\n"
    "unmasked keys (key_bias > -10000: a padded sequence gets the bits it gets alone), the\n"
    "softmax numerators as uint8 rint(255 e), normalised by their integer sum (seq <= 65536); a\n"
    "row with a zero or non-finite range quantizes to 0. Raises TypeError / ValueError on bad buffers.";
