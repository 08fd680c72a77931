/*
 * Output-pass epilogues of spmm / spmm_int8 beyond bias and activation: a residual added while
 * the output is written (BERT's skip connection) and a LayerNorm over each finished output row
 * while it is still in cache. The kernels apply them (unpack_y / unpack_int8 take the residual,
 * layer_norm runs per token block); this file checks and acquires their arguments.
 */
#include "sk_py.h"
#include <math.h>

/* Optional residual buffer (float32, shape (T, n_out), C-contiguous, not overlapping out). */
static int get_residual(sk_spmm_call *c, PyObject *o)
{
    Py_buffer *v;
    if (sk_arg_opt(&c->bufs, o, "residual", 'f', 2, 0, &v) < 0) return -1;
    if (!v) return 0;
    const int64_t dims[2] = {c->T, c->m->n_out};
    if (sk_check_shape(v, "residual", 2, dims, NULL) < 0) return -1;
    if (sk_overlap(v, c->out)) {
        PyErr_SetString(PyExc_ValueError, "residual must not overlap out");
        return -1;
    }
    c->R = (const float *)v->buf;
    return 0;
}

/* Optional LayerNorm: ln_weight / ln_bias float32 (n_out,), ln_bias only with ln_weight,
 * ln_eps finite >= 0. */
static int get_layer_norm(sk_spmm_call *c, PyObject *ow, PyObject *ob, double eps)
{
    if (ow == Py_None) {
        if (ob != Py_None) {
            PyErr_SetString(PyExc_ValueError, "ln_bias needs ln_weight");
            return -1;
        }
        return 0;
    }
    if (!(eps >= 0.0) || !isfinite((float)eps)) { /* the kernels take it as a float */
        char msg[96]; /* PyErr_Format has no %g */
        snprintf(msg, sizeof msg, "ln_eps must be finite as a float32 and >= 0, got %g", eps);
        PyErr_SetString(PyExc_ValueError, msg);
        return -1;
    }
    const int64_t *n_out = &c->m->n_out;
    Py_buffer *vw, *vb;
    if (!(vw = sk_arg(&c->bufs, ow, "ln_weight", 'f', 1, 0)) || sk_check_shape(vw, "ln_weight", 1, n_out, NULL) < 0 ||
        sk_arg_opt(&c->bufs, ob, "ln_bias", 'f', 1, 0, &vb) < 0 ||
        (vb && sk_check_shape(vb, "ln_bias", 1, n_out, NULL) < 0))
        return -1;
    /* the LayerNorm reads gamma and beta while it rewrites each finished row of out */
    if (sk_overlap(vw, c->out) || (vb && sk_overlap(vb, c->out))) {
        PyErr_SetString(PyExc_ValueError, "ln_weight and ln_bias must not overlap out");
        return -1;
    }
    c->ln.gamma = (const float *)vw->buf;
    c->ln.beta = vb ? (const float *)vb->buf : NULL;
    c->ln.eps = (float)eps;
    c->lnp = &c->ln;
    return 0;
}

int sk_epilogue_acquire(sk_spmm_call *c, const sk_spmm_opts *o)
{
    if (get_residual(c, o->residual) < 0) return -1;
    return get_layer_norm(c, o->ln_weight, o->ln_bias, o->ln_eps);
}
