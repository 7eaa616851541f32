// Sums over long rows, written once over vector_isa.h's vocabulary and
// included by kernels.c once per instruction set.

/// The sum of x[0:count], in four vector accumulators (the order of the
/// additions differs from a left-to-right loop; the result agrees within
/// rounding).
WF_TARGET float WF_NAME(wf_sum)(const float *x, long count) {
    wf_v s0 = wf_zero(), s1 = wf_zero(), s2 = wf_zero(), s3 = wf_zero();
    long i = 0;
    const wf_mask all = wf_tail_mask(WF_WIDTH);
    for (; i + 4 * WF_WIDTH <= count; i += 4 * WF_WIDTH) {
        s0 = wf_add(s0, wf_load(x + i, all));
        s1 = wf_add(s1, wf_load(x + i + WF_WIDTH, all));
        s2 = wf_add(s2, wf_load(x + i + 2 * WF_WIDTH, all));
        s3 = wf_add(s3, wf_load(x + i + 3 * WF_WIDTH, all));
    }
    for (; i < count; i += WF_WIDTH) s0 = wf_add(s0, wf_load(x + i, wf_tail_mask(count - i)));
    return wf_reduce_add(wf_add(wf_add(s0, s1), wf_add(s2, s3)));
}

/// x[i] += b, then y[i] = x[i], i < count: a bias added to a row in place
/// and the row copied out, in one pass (synthesis's row store).
WF_TARGET void WF_NAME(wf_add_copy)(float *x, float *y, long count, float b) {
    const wf_v bv = wf_set1(b);
    const wf_mask all = wf_tail_mask(WF_WIDTH);
    long i = 0;
    for (; i + WF_WIDTH <= count; i += WF_WIDTH) {
        const wf_v v = wf_add(wf_load(x + i, all), bv);
        wf_store(x + i, all, v);
        wf_store(y + i, all, v);
    }
    if (i < count) {
        const wf_mask m = wf_tail_mask(count - i);
        const wf_v v = wf_add(wf_load(x + i, m), bv);
        wf_store(x + i, m, v);
        wf_store(y + i, m, v);
    }
}
