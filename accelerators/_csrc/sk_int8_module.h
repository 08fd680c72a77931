/* INT8 entry points of the module (included by sk_module.c). */

/* values may be 1-D (nblocks * bh * 4), 2-D (nblocks, bh * 4) or 3-D (nblocks, bh, 4) */
static PyObject *py_pack_int8(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"indptr", "indices", "values", "w_scale", "shape", "block", NULL};
    PyObject *o_ptr, *o_idx, *o_val, *o_sc, *o_shape;
    int bh = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|i:pack_int8", kwlist, &o_ptr, &o_idx, &o_val, &o_sc,
                                     &o_shape, &bh))
        return NULL;
    int64_t n_out, n_in;
    if (parse_shape(o_shape, &n_out, &n_in) < 0) return NULL;
    if (n_in > 65536) {
        PyErr_Format(PyExc_ValueError, "int8 kernels support n_in <= 65536 (int32 accumulation), got %lld",
                     (long long)n_in);
        return NULL;
    }
    if (check_block(bh) < 0) return NULL;
    Py_buffer vp, vi, vv, vs;
    if (get_buffer(o_ptr, &vp, "indptr", 'I', 1, 0) < 0) return NULL;
    if (get_buffer(o_idx, &vi, "indices", 'I', 1, 0) < 0) {
        PyBuffer_Release(&vp);
        return NULL;
    }
    if (get_buffer(o_val, &vv, "values", 'b', -1, 0) < 0) {
        PyBuffer_Release(&vp);
        PyBuffer_Release(&vi);
        return NULL;
    }
    if (get_buffer(o_sc, &vs, "w_scale", 'f', 1, 0) < 0) {
        PyBuffer_Release(&vp);
        PyBuffer_Release(&vi);
        PyBuffer_Release(&vv);
        return NULL;
    }
    SKMatrix *m = skm_new();
    if (!m) goto fail;
    m->dtype = DT_INT8;
    m->n_out = n_out;
    m->n_in = n_in;
    m->bh = bh;
    m->bw = 4;
    m->nbr = (n_out + bh - 1) / bh;
    const int64_t nq = (n_in + 3) / 4;
    if (copy_structure(m, &vp, &vi, nq) < 0) goto fail;
    if (vv.len != m->nnzb * bh * 4) {
        PyErr_Format(PyExc_ValueError, "values: expected %lld int8 (nblocks=%lld x %d rows x 4), got %lld",
                     (long long)(m->nnzb * bh * 4), (long long)m->nnzb, bh, (long long)vv.len);
        goto fail;
    }
    if (vs.shape[0] != n_out) {
        PyErr_Format(PyExc_ValueError, "w_scale: expected length %lld, got %lld", (long long)n_out,
                     (long long)vs.shape[0]);
        goto fail;
    }
    m->qval = (int32_t *)aligned_malloc(sizeof(int32_t) * (size_t)(m->nnzb * bh));
    m->wscale = (float *)aligned_malloc(sizeof(float) * (size_t)(n_out > 0 ? n_out : 1));
    m->wsum = (int32_t *)aligned_malloc(sizeof(int32_t) * (size_t)(m->nbr * bh > 0 ? m->nbr * bh : 1));
    if (!m->qval || !m->wscale || !m->wsum) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(m->qval, vv.buf, (size_t)(m->nnzb * bh * 4));
    memcpy(m->wscale, vs.buf, sizeof(float) * (size_t)n_out);
    for (int64_t i = 0; i < n_out; i++) {
        if (!(m->wscale[i] >= 0.0f) || m->wscale[i] == (float)INFINITY) {
            PyErr_Format(PyExc_ValueError, "w_scale[%lld] must be finite and >= 0", (long long)i);
            goto fail;
        }
    }
    if (sort_rows(m, m->qval, bh, sizeof(int32_t)) < 0) goto fail;
    for (int64_t br = 0; br < m->nbr; br++) {
        for (int b = 0; b < bh; b++) {
            int32_t s = 0;
            for (int64_t j = m->ptr[br]; j < m->ptr[br + 1]; j++) {
                const int8_t *wb = (const int8_t *)(m->qval + j * bh + b);
                s += wb[0] + wb[1] + wb[2] + wb[3];
            }
            m->wsum[br * bh + b] = 128 * s;
        }
    }
    if (skm_compute_chunks(m) < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    PyBuffer_Release(&vp);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&vv);
    PyBuffer_Release(&vs);
    return (PyObject *)m;
fail:
    Py_XDECREF(m);
    PyBuffer_Release(&vp);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&vv);
    PyBuffer_Release(&vs);
    return NULL;
}

typedef struct {
    const SKMatrix *m;
    const sk_kernels *kt;
    const float *X;       /* fp32 input, or NULL for int8 input */
    const int8_t *Xq;     /* int8 input: raw (int32 out), or pre-quantized with scales sx (fp32 / int8 out) */
    int64_t T;
    float *Y;             /* fp32 output */
    int32_t *Yi;          /* raw int32 output */
    int8_t *Yq;           /* int8 output (quantized per token into Yq / Ysc), via fp32 staging */
    float *Ysc;           /* T per-token scales of Yq */
    float *stage;         /* fp32 staging rows: tb * N per thread (token split) or T * N (row split) */
    const float *bias;
    const float *R;       /* residual added in the output pass, or NULL */
    const sk_ln *ln;      /* LayerNorm epilogue, or NULL */
    int per_token;
    int nt;
    int64_t tt, tb, lds, group;
    int token_split;
    int act;
    int64_t xq_stride;
    uint8_t *xq;
    int32_t *scratch;
    float *amax, *sx, *inv; /* T each */
} int8_job;

/* Yt: fp32 destination row of token t0 (NULL: raw int32 output) */
static void int8_block(const int8_job *J, const sk_tiling *tl, const uint8_t *xq, int32_t *scr, float *Yt,
                       int64_t t0, int64_t nb, int64_t c0, int64_t c1)
{
    const SKMatrix *m = J->m;
    const int64_t N = m->n_out, nq = (m->n_in + 3) / 4;
    const int64_t brpc = SK_ROWS_PER_CHUNK / m->bh;
    for (int64_t g = c0; g < c1; g += J->group) {
        const int64_t g1 = g + J->group < c1 ? g + J->group : c1;
        for (int64_t c = g; c < g1; c++) {
            const int64_t br0 = c * brpc;
            const int64_t br1 = br0 + brpc < m->nbr ? br0 + brpc : m->nbr;
            J->kt->tile_int8(m->bh, m->ptr, m->idx, m->qval, br0, br1, xq, tl, nq,
                             scr + (c - g) * SK_ROWS_PER_CHUNK * J->lds, J->lds);
        }
        const int64_t r0 = g * SK_ROWS_PER_CHUNK;
        int64_t nrows = (g1 - g) * SK_ROWS_PER_CHUNK;
        if (nrows > N - r0) nrows = N - r0;
        if (nrows <= 0) continue;
        if (Yt)
            J->kt->unpack_int8(scr, J->lds, nrows, nb, Yt + r0, N, J->bias ? J->bias + r0 : NULL,
                               J->R ? J->R + t0 * N + r0 : NULL, m->wscale + r0, m->wsum + r0, J->sx + t0, J->act);
        else
            J->kt->unpack_i32(scr, J->lds, nrows, nb, J->Yi + t0 * N + r0, N, m->wsum + r0);
    }
}

/* same work sharing as run_fp32 (token split without barriers, or row split) */
static void run_int8(int8_job *J)
{
    const SKMatrix *m = J->m;
    const int64_t K = m->n_in, T = J->T;
    const int64_t nq = (K + 3) / 4;
#pragma omp parallel num_threads(J->nt)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nthr = omp_get_num_threads();
#else
        const int tid = 0, nthr = 1;
#endif
        sk_tiling tl;
        int32_t *scr = J->scratch + (int64_t)tid * J->group * SK_ROWS_PER_CHUNK * J->lds;
        int64_t ta, tb_;
        if (J->token_split) token_range(T, tid, nthr, &ta, &tb_);
        else {
            ta = T * tid / nthr;
            tb_ = T * (tid + 1) / nthr;
        }
        if (J->X) { /* fp32 input (else: int8 input, scales given or raw) */
            /* per-token ranges of the activations (scales), then inverse scales */
            if (tb_ > ta) J->kt->rows_amax(J->X, K, K, ta, tb_, J->amax);
            if (!J->per_token) {
#pragma omp barrier
            }
            float g = 0.0f;
            if (!J->per_token)
                for (int64_t t = 0; t < T; t++) g = J->amax[t] > g ? J->amax[t] : g;
            for (int64_t t = ta; t < tb_; t++) {
                const float a = J->per_token ? J->amax[t] : g;
                /* finite, non-zero range: x_q = rne(x * 127 / amax); otherwise everything maps to 0 */
                const int ok = a > 0.0f && a <= 3.0e38f;
                J->inv[t] = ok ? 127.0f / a : 0.0f;
                J->sx[t] = ok ? a / 127.0f : 0.0f;
            }
            if (!J->token_split) {
#pragma omp barrier
            }
        }
        if (J->token_split) {
            uint8_t *xq = J->xq + (int64_t)tid * J->xq_stride;
            for (int64_t t0 = ta; t0 < tb_; t0 += J->tb) {
                const int64_t nb = tb_ - t0 < J->tb ? tb_ - t0 : J->tb;
                make_tiling(&tl, nb, J->tt, nq * 4);
                if (nq > 0) {
                    if (J->X) J->kt->pack_xq(J->X + t0 * K, K, nb, K, 0, nq, J->inv + t0, xq, &tl, nq);
                    else J->kt->pack_xq_raw(J->Xq + t0 * K, K, nb, K, 0, nq, xq, &tl, nq);
                }
                if (J->Yq) { /* finish the block's fp32 rows while in L2, then quantize them */
                    float *st = J->stage + (int64_t)tid * J->tb * m->n_out;
                    int8_block(J, &tl, xq, scr, st, t0, nb, 0, m->nchunks);
                    apply_ln(J->kt, J->ln, st, m->n_out, 0, nb);
                    J->kt->quant_rows(st, nb, m->n_out, J->Yq + t0 * m->n_out, J->Ysc + t0);
                } else {
                    int8_block(J, &tl, xq, scr, J->Y ? J->Y + t0 * m->n_out : NULL, t0, nb, 0, m->nchunks);
                    apply_ln(J->kt, J->ln, J->Y, m->n_out, t0, t0 + nb);
                }
            }
        } else {
            int64_t c0, c1;
            thread_chunks(m, tid, nthr, &c0, &c1);
            const int64_t q0 = nq * tid / nthr, q1 = nq * (tid + 1) / nthr;
            for (int64_t t0 = 0; t0 < T; t0 += J->tb) {
                const int64_t nb = T - t0 < J->tb ? T - t0 : J->tb;
                make_tiling(&tl, nb, J->tt, nq * 4);
                if (q1 > q0) {
                    if (J->X) J->kt->pack_xq(J->X + t0 * K, K, nb, K, q0, q1, J->inv + t0, J->xq, &tl, nq);
                    else J->kt->pack_xq_raw(J->Xq + t0 * K, K, nb, K, q0, q1, J->xq, &tl, nq);
                }
#pragma omp barrier
                float *dst = J->Yq ? J->stage : J->Y;
                int8_block(J, &tl, J->xq, scr, dst ? dst + t0 * m->n_out : NULL, t0, nb, c0, c1);
#pragma omp barrier
            }
            const int64_t u0 = T * tid / nthr, u1 = T * (tid + 1) / nthr;
            apply_ln(J->kt, J->ln, J->Yq ? J->stage : J->Y, m->n_out, u0, u1);
            if (J->Yq && u1 > u0)
                J->kt->quant_rows(J->stage + u0 * m->n_out, u1 - u0, m->n_out, J->Yq + u0 * m->n_out, J->Ysc + u0);
        }
    }
}

static int default_tile_int8(int variant, int bh)
{
    if (variant >= V_VNNI) return bh >= 8 ? 32 : 64;
    return 16;
}

/* float32 (T,) per-token scales: 1 when acquired (release it), -1 with an exception set */
static int get_token_scales(PyObject *o, Py_buffer *v, const char *name, int64_t T, int writable)
{
    if (get_buffer(o, v, name, 'f', 1, writable) < 0) return -1;
    if (v->shape[0] != T) {
        PyErr_Format(PyExc_ValueError, "%s: expected length %lld (tokens), got %lld", name, (long long)T,
                     (long long)v->shape[0]);
        PyBuffer_Release(v);
        return -1;
    }
    return 1;
}

static PyObject *spmm_int8_common(PyObject *args, PyObject *kw, int raw)
{
    static char *kwlist[] = {"mat", "x", "out", "bias", "threads", "variant", "per_token", "tile", "token_block",
                             "split", "activation", "residual", "ln_weight", "ln_bias", "ln_eps", "x_scale",
                             "out_scale", NULL};
    static char *kwlist_raw[] = {"mat", "x", "out", "threads", "variant", "tile", "token_block", "split", NULL};
    PyObject *o_m, *o_x, *o_out, *o_bias = Py_None, *o_var = Py_None, *o_split = Py_None, *o_act = Py_None;
    PyObject *o_res = Py_None, *o_lnw = Py_None, *o_lnb = Py_None, *o_xs = Py_None, *o_os = Py_None;
    int threads = 1, tile = 0, tblock = 0, per_token = 1, split = 0, act = 0;
    double ln_eps = 1e-12;
    if (raw) {
        if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|iOiiO:spmm_int8_raw", kwlist_raw, &o_m, &o_x, &o_out,
                                         &threads, &o_var, &tile, &tblock, &o_split))
            return NULL;
    } else {
        if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OiOpiiOOOOOdOO:spmm_int8", kwlist, &o_m, &o_x, &o_out,
                                         &o_bias, &threads, &o_var, &per_token, &tile, &tblock, &o_split, &o_act,
                                         &o_res, &o_lnw, &o_lnb, &ln_eps, &o_xs, &o_os))
            return NULL;
    }
    SKMatrix *m;
    int variant;
    if (check_spmm_args(o_m, DT_INT8, "mat: needs an int8 SparseMatrix (pack_int8); use spmm for fp32", threads, o_var,
                        tile, tblock, o_split, o_act, &m, &variant, &split, &act) < 0)
        return NULL;
    Py_buffer vx, vo, vb, vxs, vos;
    int have_bias = o_bias != Py_None, have_xs = 0, have_os = 0;
    sk_epilogue ep = {.have_res = 0, .have_ln = 0};
    const int in_q = o_xs != Py_None, out_q = o_os != Py_None; /* int8 input with scales / int8 output */
    if (get_buffer(o_x, &vx, "x", (raw || in_q) ? 'b' : 'f', 2, 0) < 0) return NULL;
    if (get_buffer(o_out, &vo, "out", raw ? 'i' : (out_q ? 'b' : 'f'), 2, 1) < 0) {
        PyBuffer_Release(&vx);
        return NULL;
    }
    if (have_bias && get_buffer(o_bias, &vb, "bias", 'f', 1, 0) < 0) {
        PyBuffer_Release(&vx);
        PyBuffer_Release(&vo);
        return NULL;
    }
    PyObject *ret = NULL;
    int8_job J;
    size_t xq_n = 0, scr_n = 0, sc_n = 0, st_n = 0;
    float *scales = NULL;
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
    if (in_q && (have_xs = get_token_scales(o_xs, &vxs, "x_scale", T, 0)) < 0) {
        have_xs = 0;
        goto done;
    }
    if (out_q) {
        if ((have_os = get_token_scales(o_os, &vos, "out_scale", T, 1)) < 0) {
            have_os = 0;
            goto done;
        }
        if (ranges_overlap(&vos, &vo) || ranges_overlap(&vos, &vx) || (have_xs && ranges_overlap(&vos, &vxs))) {
            PyErr_SetString(PyExc_ValueError, "out_scale must not overlap out, x or x_scale");
            goto done;
        }
    }
    if (T > 0 && m->n_out > 0) {
        const int64_t nq = (m->n_in + 3) / 4;
        const int64_t tt = tile ? tile : default_tile_int8(variant, m->bh);
        int64_t tb = tblock;
        if (tb == 0) tb = (384 * 1024) / (nq * 4 > 0 ? nq * 4 : 1);
        /* measured: int8 activations are small, but long scratch rows make the unpack slow */
        if (tb > 128) tb = 128;
        tb = tb / tt * tt;
        if (tb < tt) tb = tt;
        if (tb > 2048) tb = 2048;
        if (tb > round_up(T, SK_TOK_GROUP)) tb = round_up(T, SK_TOK_GROUP);
        J.m = m;
        J.kt = variant_tables[variant];
        J.X = (raw || in_q) ? NULL : (const float *)vx.buf;
        J.Xq = (raw || in_q) ? (const int8_t *)vx.buf : NULL;
        J.T = T;
        J.Y = (raw || out_q) ? NULL : (float *)vo.buf;
        J.Yi = raw ? (int32_t *)vo.buf : NULL;
        J.Yq = out_q ? (int8_t *)vo.buf : NULL;
        J.Ysc = out_q ? (float *)vos.buf : NULL;
        J.bias = have_bias ? (const float *)vb.buf : NULL;
        J.R = ep.have_res ? (const float *)ep.vr.buf : NULL;
        J.ln = ep.have_ln ? &ep.ln : NULL;
        J.per_token = per_token;
        J.nt = threads;
        J.tt = tt;
        J.tb = tb;
        J.lds = round_up(tb, SK_TOK_GROUP) + 16;
        J.group = unpack_group(J.lds);
        J.token_split = use_token_split(split, T, threads);
        J.act = act;
        J.xq_stride = round_up(nq * 4 * round_up(tb, SK_TOK_GROUP), 64);
        J.xq = (uint8_t *)ws_take((size_t)(J.xq_stride * (J.token_split ? threads : 1)), &xq_n);
        J.scratch = (int32_t *)ws_take(sizeof(int32_t) * (size_t)(threads * J.group * SK_ROWS_PER_CHUNK * J.lds),
                                       &scr_n);
        scales = (float *)ws_take(sizeof(float) * (size_t)(3 * round_up(T, 16)), &sc_n);
        if (out_q)
            J.stage = (float *)ws_take(sizeof(float) * (size_t)((J.token_split ? threads * tb : T) * m->n_out),
                                       &st_n);
        if (!J.xq || !J.scratch || !scales || (out_q && !J.stage)) {
            PyErr_NoMemory();
            goto done;
        }
        J.amax = scales;
        J.sx = in_q ? (float *)vxs.buf : scales + round_up(T, 16); /* read-only when given */
        J.inv = scales + 2 * round_up(T, 16);
        Py_BEGIN_ALLOW_THREADS
        run_int8(&J);
        Py_END_ALLOW_THREADS
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    ws_give(J.xq, xq_n);
    ws_give(J.scratch, scr_n);
    ws_give(scales, sc_n);
    ws_give(J.stage, st_n);
    if (have_xs) PyBuffer_Release(&vxs);
    if (have_os) PyBuffer_Release(&vos);
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vo);
    if (have_bias) PyBuffer_Release(&vb);
    epilogue_release(&ep);
    return ret;
}

static PyObject *py_spmm_int8(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    return spmm_int8_common(args, kw, 0);
}

static PyObject *py_spmm_int8_raw(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    return spmm_int8_common(args, kw, 1);
}

#define SK_INT8_METHODS                                                                              \
    {"pack_int8", (PyCFunction)(void (*)(void))py_pack_int8, METH_VARARGS | METH_KEYWORDS,             \
     "pack_int8(indptr, indices, values, w_scale, shape, block=1) -> SparseMatrix\n\n"                 \
     "Validate and copy an INT8 weight stored as blocks of `block` output rows x 4 input columns\n"     \
     "(quads; block in 1, 2, 4, 8). indptr over ceil(n_out / block) block rows; indices: quad number\n" \
     "in [0, ceil(n_in / 4)); values: int8, nblocks * block * 4 entries laid out (block, row, col);\n"  \
     "w_scale: float32 (n_out,), finite >= 0, per-output-channel scale (W ~= w_scale[o] * W_q[o]).\n"   \
     "n_in <= 65536. Raises TypeError / ValueError like pack_csr."},                                   \
    {"spmm_int8", (PyCFunction)(void (*)(void))py_spmm_int8, METH_VARARGS | METH_KEYWORDS,             \
     "spmm_int8(mat, x, out, bias=None, threads=1, variant=None, per_token=True, tile=0, token_block=0,\n" \
     "          split='auto', activation=None, residual=None, ln_weight=None, ln_bias=None, ln_eps=1e-12,\n" \
     "          x_scale=None, out_scale=None)\n\n"                                                    \
     "out = dequant(quant(x) @ W_q.T) + bias with x float32 (tokens, n_in), out float32 (tokens, n_out).\n" \
     "Activations are quantized symmetrically per token (per_token=False: one scale for the whole x):\n" \
     "x_q = clamp(rint(x * (127 / amax)), -127, 127); products accumulate exactly in int32; then\n"     \
     "out[t, o] = acc * (amax_t / 127) * w_scale[o] + bias[o]. Rows with amax 0 (or non-finite) give bias.\n" \
     "activation, residual and the LayerNorm epilogue as in spmm.\n"                                    \
     "x_scale: float32 (tokens,) -> x is int8 (tokens, n_in), already quantized (x ~= x_scale[t] * x_q),\n" \
     "per_token ignored. out_scale: writable float32 (tokens,) -> out is int8 (tokens, n_out): the fp32\n" \
     "result (after the epilogues) quantized per token by the same rule, scale in out_scale, so one\n"  \
     "layer's INT8 output feeds the next layer without an fp32 round trip through memory.\n"          \
     "GIL released; errors as spmm."},                                                                  \
    {"spmm_int8_raw", (PyCFunction)(void (*)(void))py_spmm_int8_raw, METH_VARARGS | METH_KEYWORDS,     \
     "spmm_int8_raw(mat, x, out, threads=1, variant=None, tile=0, token_block=0, split='auto') -> None\n\n" \
     "Exact integer product out = x @ W_q.T for int8 x (tokens, n_in) into int32 out (tokens, n_out)\n" \
     "(the accumulation the int8 path uses, without scales or bias; for testing and reuse)."},
