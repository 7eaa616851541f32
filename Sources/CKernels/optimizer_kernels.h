// The optimizer's pass over every weight, written once over vector_isa.h's
// vocabulary and included by kernels.c once per instruction set.

/// Adam on one vector of values at x (lanes in mask k).
static inline WF_TARGET void WF_NAME(wf_adam_vector)(float *x, const float *g, float *m, float *v, wf_mask k, wf_v b1,
                                                      wf_v b2, wf_v a1, wf_v a2, wf_v c1, wf_v c2, wf_v lr, wf_v eps) {
    const wf_v gi = wf_load(g, k);
    const wf_v mi = wf_add(wf_mul(b1, wf_load(m, k)), wf_mul(a1, gi));
    const wf_v vi = wf_add(wf_mul(b2, wf_load(v, k)), wf_mul(wf_mul(a2, gi), gi));
    wf_store(m, k, mi);
    wf_store(v, k, vi);
    const wf_v step = wf_div(wf_mul(lr, wf_div(mi, c1)), wf_add(wf_sqrt(wf_div(vi, c2)), eps));
    wf_store(x, k, wf_sub(wf_load(x, k), step));
}

/// One Adam step over x[0:count] (see ckernels.h). Each value goes through
/// the same operations, in the same order and each rounded once, as
/// Adam.update's scalar loop (no fused multiply-adds; division and square
/// root are correctly rounded), so the results are bit for bit the same.
WF_TARGET void WF_NAME(wf_adam)(float *x, const float *g, float *m, float *v, long count, float b1, float b2, float c1,
                                float c2, float lr, float eps) {
    const wf_v vb1 = wf_set1(b1), vb2 = wf_set1(b2), va1 = wf_set1(1 - b1), va2 = wf_set1(1 - b2);
    const wf_v vc1 = wf_set1(c1), vc2 = wf_set1(c2), vlr = wf_set1(lr), veps = wf_set1(eps);
    const wf_mask all = wf_tail_mask(WF_WIDTH);
    long i = 0;
    for (; i + WF_WIDTH <= count; i += WF_WIDTH)
        WF_NAME(wf_adam_vector)(x + i, g + i, m + i, v + i, all, vb1, vb2, va1, va2, vc1, vc2, vlr, veps);
    if (i < count)
        WF_NAME(wf_adam_vector)(x + i, g + i, m + i, v + i, wf_tail_mask(count - i), vb1, vb2, va1, va2, vc1, vc2, vlr, veps);
}
