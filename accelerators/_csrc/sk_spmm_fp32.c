/*
 * spmm: fp32 Y = X W^T (+ bias, activation, residual, LayerNorm) with W an fp32 SparseMatrix.
 * Per token block: pack X transposed into token tiles (pack_x), multiply 16-row chunks into a
 * row-major scratch (tile_fp32, by column panel when the matrix has them), then transpose the
 * scratch into Y with the epilogue applied (unpack_y) while it is still in L2.
 */
#include "sk_py.h"

typedef struct {
    const sk_spmm_call *c;
    sk_plan p;
    int64_t xt_stride; /* floats between per-thread activation buffers (token split) */
    float *xt;
    float *scratch;
} fp32_job;

/* tokens per register tile: what fills the variant's registers for this block height */
static int default_tile(int variant, int bh)
{
    if (variant >= V_AVX512) return bh >= 8 ? 32 : 64;
    if (variant == V_AVX2) return bh >= 4 ? 16 : 32;
    return 16;
}

/* chunks [c0, c1) for one packed token block (t0, nb tokens): compute and unpack in groups */
static void fp32_block(const fp32_job *J, const sk_tiling *tl, const float *xt, float *scr, int64_t t0,
                       int64_t nb, int64_t c0, int64_t c1)
{
    const sk_spmm_call *c = J->c;
    const SKMatrix *m = c->m;
    const int64_t N = m->n_out, group = J->p.group, lds = J->p.lds;
    const int64_t brpc = SK_ROWS_PER_CHUNK / m->bh;
    float *Y = (float *)c->out->buf;
    /* column panels: whole groups only (token split sweeps all rows; group = 16 chunks) */
    const int panels = m->npan > 1 && group * SK_ROWS_PER_CHUNK == SK_PANEL_GROUP_ROWS && c0 == 0 &&
                       c1 == m->nchunks;
    for (int64_t g = c0; g < c1; g += group) {
        const int64_t g1 = g + group < c1 ? g + group : c1;
        if (panels) {
            const int64_t gi = g / group;
            const sk_segs sg = {m->npan, m->sg_ptr + gi * m->npan, m->sg_row, m->sg_start, m->sg_idx, m->sg_val};
            c->kt->tile_fp32(m->bh, &sg, xt, tl, scr, lds);
        } else {
            for (int64_t ch = g; ch < g1; ch++) {
                const int64_t br0 = ch * brpc;
                const int64_t br1 = br0 + brpc < m->nbr ? br0 + brpc : m->nbr;
                const int64_t sp[2] = {br0, br1};
                const sk_segs sg = {1, sp, NULL, m->ptr, m->idx, m->val};
                c->kt->tile_fp32(m->bh, &sg, xt, tl, scr + (ch - g) * SK_ROWS_PER_CHUNK * lds, lds);
            }
        }
        const int64_t r0 = g * SK_ROWS_PER_CHUNK;
        int64_t nrows = (g1 - g) * SK_ROWS_PER_CHUNK;
        if (nrows > N - r0) nrows = N - r0;
        if (nrows > 0)
            c->kt->unpack_y(scr, lds, nrows, nb, Y + t0 * N + r0, N, c->bias ? c->bias + r0 : NULL,
                            c->R ? c->R + t0 * N + r0 : NULL, c->act);
    }
}

/* the two ways threads share the work: see sk_plan in sk_py.h */
static void run_fp32(const fp32_job *J)
{
    const sk_spmm_call *c = J->c;
    const SKMatrix *m = c->m;
    const int64_t K = m->n_in, T = c->T, tb = J->p.tb;
    const float *X = (const float *)c->x->buf;
    float *Y = (float *)c->out->buf;
#pragma omp parallel num_threads(J->p.nt)
    {
        const int tid = sk_thread_num(), nthr = sk_num_threads();
        sk_tiling tl;
        float *scr = J->scratch + (int64_t)tid * J->p.group * SK_ROWS_PER_CHUNK * J->p.lds;
        if (J->p.token_split) {
            float *xt = J->xt + (int64_t)tid * J->xt_stride;
            int64_t ta, te;
            sk_token_range(T, tid, nthr, &ta, &te);
            for (int64_t t0 = ta; t0 < te; t0 += tb) {
                const int64_t nb = te - t0 < tb ? te - t0 : tb;
                sk_make_tiling(&tl, nb, J->p.tt, K);
                if (K > 0) c->kt->pack_x(X + t0 * K, K, nb, 0, K, xt, &tl, K);
                fp32_block(J, &tl, xt, scr, t0, nb, 0, m->nchunks);
                sk_apply_ln(c->kt, c->lnp, Y, m->n_out, t0, t0 + nb, NULL); /* rows still in L2 */
            }
        } else {
            int64_t c0, c1;
            skm_thread_chunks(m, tid, nthr, &c0, &c1);
            const int64_t k0 = K * tid / nthr, k1 = K * (tid + 1) / nthr;
            for (int64_t t0 = 0; t0 < T; t0 += tb) {
                const int64_t nb = T - t0 < tb ? T - t0 : tb;
                sk_make_tiling(&tl, nb, J->p.tt, K);
                if (k1 > k0) c->kt->pack_x(X + t0 * K, K, nb, k0, k1, J->xt, &tl, K);
#pragma omp barrier
                fp32_block(J, &tl, J->xt, scr, t0, nb, c0, c1);
#pragma omp barrier
            }
            sk_apply_ln(c->kt, c->lnp, Y, m->n_out, T * tid / nthr, T * (tid + 1) / nthr, NULL);
        }
    }
}

/* Plan, take the scratch buffers, run with the GIL released, give them back. */
static int spmm_fp32_run(const sk_spmm_call *c, const sk_spmm_opts *o)
{
    const SKMatrix *m = c->m;
    if (c->T == 0 || m->n_out == 0) return 0;
    fp32_job J = {.c = c};
    /* packed activation block of about 384 KiB (L2 resident) */
    const int64_t auto_tb = m->n_in > 0 ? (384 * 1024 / 4) / m->n_in : 4096;
    sk_plan_make(&J.p, o, c->split, c->T, default_tile(c->variant, m->bh), auto_tb);
    J.xt_stride = sk_round_up(m->n_in * sk_round_up(J.p.tb, SK_TOK_GROUP), 16);
    size_t xt_n = 0, scr_n = 0;
    J.xt = (float *)sk_ws_take(sizeof(float) * (size_t)(J.xt_stride * (J.p.token_split ? J.p.nt : 1)), &xt_n);
    J.scratch = (float *)sk_ws_take(sizeof(float) * (size_t)(J.p.nt * J.p.group * SK_ROWS_PER_CHUNK * J.p.lds),
                                    &scr_n);
    int rc = 0;
    if (!J.xt || !J.scratch) {
        PyErr_NoMemory();
        rc = -1;
    } else {
        Py_BEGIN_ALLOW_THREADS
        run_fp32(&J);
        Py_END_ALLOW_THREADS
    }
    sk_ws_give(J.xt, xt_n, J.p.nt);
    sk_ws_give(J.scratch, scr_n, J.p.nt);
    return rc;
}

PyObject *sk_py_spmm(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"mat", "x", "out", "bias", "threads", "variant", "tile", "token_block", "split",
                             "activation", "residual", "ln_weight", "ln_bias", "ln_eps", NULL};
    sk_spmm_opts o = SK_SPMM_OPTS_INIT;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OO&OiiOOOOOd:spmm", kwlist, &o.mat, &o.x, &o.out, &o.bias,
                                     sk_threads_arg, &o.threads, &o.variant, &o.tile, &o.token_block, &o.split, &o.activation,
                                     &o.residual, &o.ln_weight, &o.ln_bias, &o.ln_eps)) {
        sk_parse_failed();
        return NULL;
    }
    sk_spmm_call c;
    const int rc = sk_spmm_acquire(&c, &o, DT_FP32, "mat: spmm needs an fp32 SparseMatrix; use spmm_int8 for int8",
                                   'f', 'f') < 0 ? -1 : spmm_fp32_run(&c, &o);
    sk_args_release(&c.bufs);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

const char sk_doc_spmm[] =
    "spmm(mat, x, out, bias=None, threads=1, variant=None, tile=0, token_block=0, split='auto',\n"
    "     activation=None, residual=None, ln_weight=None, ln_bias=None, ln_eps=1e-12) -> None\n\n"
    "out[t, o] = sum_k x[t, k] * W[o, k] (+ bias[o]), i.e. out = x @ W.T + bias.\n"
    "x: float32 C-contiguous (tokens, n_in); out: writable float32 C-contiguous (tokens, n_out),\n"
    "not overlapping x; bias: float32 (n_out,) or None. threads: OpenMP threads,\n"
    "1 to thread_limit() (4 per processor; ValueError beyond, TypeError for a bool).\n"
    "variant: None (module default) or a name from supported_variants(). tile / token_block:\n"
    "tuning knobs (tokens per register tile, power of two 16..256; tokens per packed block), 0 = auto.\n"
    "activation: None/'none', or 'gelu' = exact-form GELU 0.5 x (1 + erf(x / sqrt 2)) applied to the\n"
    "output (libm erff in the scalar variant; in the avx2 and AVX-512 variants Phi(x) is a piecewise\n"
    "cubic and the result within 2e-6 absolute of the exact form).\n"
    "residual: None, or float32 C-contiguous (tokens, n_out) not overlapping out, added after the\n"
    "activation in the same output pass: out = act(x @ W.T + bias) + residual (BERT's skip connection).\n"
    "ln_weight / ln_bias / ln_eps: optional LayerNorm over each output row, applied last (float32 (n_out,)\n"
    "gamma and beta, eps >= 0; biased variance as torch.nn.LayerNorm), while the rows are in cache.\n"
    "split: how threads share work: 'tokens' (each thread its own tokens, no barriers), 'rows'\n"
    "(output rows, for few tokens) or 'auto' (tokens when there are >= 64 per thread).\n"
    "The GIL is released during the computation.";
