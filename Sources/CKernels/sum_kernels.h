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
