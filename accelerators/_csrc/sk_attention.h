/* Python binding of the fused attention kernel (included by sk_module.c after the helpers). */

static PyObject *py_attention(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"qkv", "out", "num_heads", "scale", "key_bias", "threads", "variant", NULL};
    PyObject *o_qkv, *o_out, *o_kb = Py_None, *o_var = Py_None;
    int num_heads = 0, threads = 1;
    double scale = -1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOi|dOiO:attention", kwlist, &o_qkv, &o_out, &num_heads, &scale,
                                     &o_kb, &threads, &o_var))
        return NULL;
    if (parse_threads(threads) < 0) return NULL;
    const int variant = variant_from_obj(o_var);
    if (variant < 0) return NULL;
    Py_buffer vq, vo, vk;
    int have_kb = o_kb != Py_None;
    if (get_buffer(o_qkv, &vq, "qkv", 'f', 3, 0) < 0) return NULL;
    if (get_buffer(o_out, &vo, "out", 'f', 3, 1) < 0) {
        PyBuffer_Release(&vq);
        return NULL;
    }
    if (have_kb && get_buffer(o_kb, &vk, "key_bias", 'f', 2, 0) < 0) {
        PyBuffer_Release(&vq);
        PyBuffer_Release(&vo);
        return NULL;
    }
    PyObject *ret = NULL;
    float *scr = NULL;
    size_t scr_n = 0;
    const int64_t B = vq.shape[0], S = vq.shape[1], H3 = vq.shape[2], H = H3 / 3;
    if (num_heads < 1) {
        PyErr_Format(PyExc_ValueError, "num_heads must be >= 1, got %d", num_heads);
        goto done;
    }
    if (H3 % 3 != 0 || H % num_heads != 0) {
        PyErr_Format(PyExc_ValueError, "qkv: last dimension must be 3 * hidden with hidden divisible by num_heads=%d, "
                     "got %lld", num_heads, (long long)H3);
        goto done;
    }
    if (vo.shape[0] != B || vo.shape[1] != S || vo.shape[2] != H) {
        PyErr_Format(PyExc_ValueError, "out: expected shape (%lld, %lld, %lld), got (%lld, %lld, %lld)",
                     (long long)B, (long long)S, (long long)H, (long long)vo.shape[0], (long long)vo.shape[1],
                     (long long)vo.shape[2]);
        goto done;
    }
    if (have_kb && (vk.shape[0] != B || vk.shape[1] != S)) {
        PyErr_Format(PyExc_ValueError, "key_bias: expected shape (%lld, %lld), got (%lld, %lld)", (long long)B,
                     (long long)S, (long long)vk.shape[0], (long long)vk.shape[1]);
        goto done;
    }
    if (ranges_overlap(&vq, &vo) || (have_kb && ranges_overlap(&vk, &vo))) {
        PyErr_SetString(PyExc_ValueError, "out must not overlap qkv or key_bias");
        goto done;
    }
    const int64_t dh = H / num_heads;
    const float fscale = scale < 0 ? (float)(1.0 / sqrt((double)(dh > 0 ? dh : 1))) : (float)scale;
    if (!isfinite(scale)) {
        PyErr_SetString(PyExc_ValueError, "scale must be finite (or omitted for 1/sqrt(head_dim))");
        goto done;
    }
    if (B > 0 && S > 0 && dh > 0) {
        const int64_t per = round_up(sk_attn_scratch_floats(S, dh), 16);
        scr = (float *)ws_take(sizeof(float) * (size_t)(per * threads), &scr_n);
        if (!scr) {
            PyErr_NoMemory();
            goto done;
        }
        const sk_kernels *kt = variant_tables[variant];
        const float *Q = (const float *)vq.buf, *KB = have_kb ? (const float *)vk.buf : NULL;
        float *O = (float *)vo.buf;
        const int64_t nwork = B * num_heads;
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t w = 0; w < nwork; w++) {
#ifdef _OPENMP
            float *s = scr + (int64_t)omp_get_thread_num() * per;
#else
            float *s = scr;
#endif
            const int64_t b = w / num_heads, h = w % num_heads;
            const float *base = Q + b * S * H3 + h * dh;
            kt->attn_head(base, base + H, base + 2 * H, H3, S, dh, fscale, KB ? KB + b * S : NULL,
                          O + b * S * H + h * dh, H, s);
        }
        Py_END_ALLOW_THREADS
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    ws_give(scr, scr_n);
    PyBuffer_Release(&vq);
    PyBuffer_Release(&vo);
    if (have_kb) PyBuffer_Release(&vk);
    return ret;
}

#define SK_ATTENTION_METHODS                                                                          \
    {"attention", (PyCFunction)(void (*)(void))py_attention, METH_VARARGS | METH_KEYWORDS,           \
     "attention(qkv, out, num_heads, scale=1/sqrt(head_dim), key_bias=None, threads=1, variant=None)\n\n" \
     "Fused multi-head self-attention (softmax(scale * Q K^T + key_bias) V), fp32, for inference.\n"  \
     "qkv: float32 C-contiguous (batch, seq, 3 * hidden), the q | k | v projections side by side,\n"  \
     "each hidden = num_heads * head_dim with heads contiguous (BERT's layout). out: writable float32\n" \
     "(batch, seq, hidden), heads side by side, not overlapping the inputs. key_bias: None or float32\n" \
     "(batch, seq) added to every query's scores for that key (0 keeps, -inf masks padding); a query\n" \
     "whose keys are all masked gets zeros. exp is a degree-6 polynomial (relative error < 2e-7) in\n" \
     "the AVX-512 variants and libm expf elsewhere (AVX2 uses the portable code). One (batch, head)\n" \
     "pair per OpenMP work item, GIL released. Raises TypeError / ValueError on bad buffers."},
