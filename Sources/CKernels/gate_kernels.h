// The gate kernels, written once over vector_isa.h's vocabulary and
// included by kernels.c once per instruction set. Each kernel is a function of
// one vector of columns (`*_cols`, given a mask) run on whole vectors, then
// once, masked, on the tail.

/// tanh(a) sigmoid(b) = (e^{2a} - 1) / ((e^{2a} + 1)(1 + e^{-b})): two
/// exponentials and one division. 2a is clamped to [-30, 30] (tanh is +-1
/// in Float32 well before) so the first factor of the denominator stays
/// finite; where e^{-b} overflows, the true value underflows anyway.
static inline WF_TARGET wf_v WF_NAME(wf_gate)(wf_v a, wf_v b) {
    const wf_v one = wf_set1(1.0f);
    const wf_v a2 = wf_min(wf_max(wf_add(a, a), wf_set1(-30.0f)), wf_set1(30.0f));
    const wf_v ea = wf_exp(a2), eb = wf_exp(wf_sub(wf_set1(0.0f), b));
    return wf_div(wf_sub(ea, one), wf_mul(wf_add(ea, one), wf_add(one, eb)));
}

#define WF_FOR_COLUMNS(count, step)                                            \
    long i = 0;                                                                \
    const wf_mask all = wf_tail_mask(WF_WIDTH);                                \
    for (; i + WF_WIDTH <= (count); i += WF_WIDTH) step(i, all);               \
    if (i < (count)) step(i, wf_tail_mask((count) - i));

static inline WF_TARGET void WF_NAME(wf_gate_forward_cols)(const float *y, float *g, long i, long total,
                                                         wf_v ba, wf_v bb, wf_mask m) {
    const wf_v a = wf_add(wf_load(y + i, m), ba);
    const wf_v b = wf_add(wf_load(y + total + i, m), bb);
    wf_store(g + i, m, WF_NAME(wf_gate)(a, b));
}

WF_TARGET void WF_NAME(wf_gate_forward)(const float *y, float *g, long count, long total,
                                        float bias_tanh, float bias_sigmoid) {
    const wf_v ba = wf_set1(bias_tanh), bb = wf_set1(bias_sigmoid);
#define STEP(i, m) WF_NAME(wf_gate_forward_cols)(y, g, i, total, ba, bb, m)
    WF_FOR_COLUMNS(count, STEP)
#undef STEP
}

static inline WF_TARGET void WF_NAME(wf_gate_keeping_cols)(const float *y, float *g, float *kept, long i, long total,
                                                         wf_mask m) {
    const wf_v one = wf_set1(1.0f), two = wf_set1(2.0f);
    const wf_v a = wf_load(y + i, m), b = wf_load(y + total + i, m);
    // tanh a = 1 - 2 / (e^{2a} + 1) (exact at large |a|), sigmoid b = 1 / (1 + e^{-b}).
    const wf_v t = wf_sub(one, wf_div(two, wf_add(wf_exp(wf_add(a, a)), one)));
    const wf_v s = wf_div(one, wf_add(one, wf_exp(wf_sub(wf_set1(0.0f), b))));
    wf_store(kept + i, m, t);
    wf_store(kept + total + i, m, s);
    wf_store(g + i, m, wf_mul(t, s));
}

WF_TARGET void WF_NAME(wf_gate_forward_keeping)(const float *y, float *g, float *kept, long count, long total) {
#define STEP(i, m) WF_NAME(wf_gate_keeping_cols)(y, g, kept, i, total, m)
    WF_FOR_COLUMNS(count, STEP)
#undef STEP
}

static inline WF_TARGET void WF_NAME(wf_gate_backward_cols)(float *kept, const float *dg, long i, long total, wf_mask m) {
    const wf_v one = wf_set1(1.0f);
    const wf_v t = wf_load(kept + i, m), s = wf_load(kept + total + i, m), d = wf_load(dg + i, m);
    const wf_v ds = wf_mul(d, s);
    wf_store(kept + i, m, wf_mul(ds, wf_fnmadd(t, t, one)));
    wf_store(kept + total + i, m, wf_mul(wf_mul(ds, t), wf_sub(one, s)));
}

WF_TARGET void WF_NAME(wf_gate_backward_kept)(float *kept, const float *dg, long count, long total) {
#define STEP(i, m) WF_NAME(wf_gate_backward_cols)(kept, dg, i, total, m)
    WF_FOR_COLUMNS(count, STEP)
#undef STEP
}

/// The gate and its backward in one pass, for training's backward, which
/// needs g (for the out projection's weight gradient) and dy, but not
/// tanh and sigmoid themselves: wf_gate_keeping_cols's t and s, then
/// wf_gate_backward_cols's dy from them, kept in registers instead of
/// written out and read back (the same values, bit for bit).
static inline WF_TARGET void WF_NAME(wf_gate_backward_from_y_cols)(const float *y, const float *dg, float *g, float *dy, long i,
                                                                 long total, wf_mask m) {
    const wf_v one = wf_set1(1.0f), two = wf_set1(2.0f);
    const wf_v a = wf_load(y + i, m), b = wf_load(y + total + i, m);
    const wf_v t = wf_sub(one, wf_div(two, wf_add(wf_exp(wf_add(a, a)), one)));
    const wf_v s = wf_div(one, wf_add(one, wf_exp(wf_sub(wf_set1(0.0f), b))));
    wf_store(g + i, m, wf_mul(t, s));
    const wf_v ds = wf_mul(wf_load(dg + i, m), s);
    wf_store(dy + i, m, wf_mul(ds, wf_fnmadd(t, t, one)));
    wf_store(dy + total + i, m, wf_mul(wf_mul(ds, t), wf_sub(one, s)));
}

WF_TARGET void WF_NAME(wf_gate_backward_from_y)(const float *y, const float *dg, float *g, float *dy, long count, long total) {
#define STEP(i, m) WF_NAME(wf_gate_backward_from_y_cols)(y, dg, g, dy, i, total, m)
    WF_FOR_COLUMNS(count, STEP)
#undef STEP
}

#undef WF_FOR_COLUMNS
