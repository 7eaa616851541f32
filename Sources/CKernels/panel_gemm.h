// A matrix product for small, repeated shapes, written once over
// vector_isa.h's vocabulary and included by kernels.c once per instruction
// set: C [m, n] = A B where A (weights, fixed for many products) was packed
// once into panels of 6 rows, and B is given as a stack of row segments
// that need not be adjacent in memory (WaveFlow synthesis: the
// Winograd-transformed rows r - 2dh, r - dh and r of a layer's cache;
// training: the same rows of one matrix at three shifts). OpenBLAS packs
// both operands on every call; for products of 64-128 rows by a few hundred
// columns that cost 12% of synthesis.
//
// B is read in place, unless its rows are a multiple of 256 bytes apart:
// then each column panel (2 vectors wide, all K rows) is first copied into
// a contiguous buffer, as the rows would fall into a quarter of L1's sets or
// fewer (at 2048 columns 10% slower in the AVX-512 build, 31% in AVX2's; copying every panel cost 5% of
// synthesis, whose strides avoid this). Register tile: 6 rows by 2 vectors
// (12 accumulators); the column panel stays in L1 while the 6-row panels
// of A stream from L2.


/// One 6 x 2-vector tile of C at column j: rows 6p ... (at most `rows`
/// stored) from A's panel `a` and B's segments at column bj; lanes outside
/// m0 / m1 are neither read nor written.
static inline WF_TARGET void WF_NAME(wf_panel_tile)(const float *a, const float *const *b, long segments, long segK, long ldb,
                                                     long bj, long j, float *c, long ldc, long rows, wf_mask m0, wf_mask m1,
                                                     int accumulate) {
    wf_v c00 = wf_zero(), c01 = wf_zero(), c10 = wf_zero(), c11 = wf_zero(), c20 = wf_zero(), c21 = wf_zero();
    wf_v c30 = wf_zero(), c31 = wf_zero(), c40 = wf_zero(), c41 = wf_zero(), c50 = wf_zero(), c51 = wf_zero();
    if (accumulate) {
        const float *r = c + j;
        c00 = wf_load(r, m0); c01 = wf_load(r + WF_WIDTH, m1);
        if (rows > 1) { r += ldc; c10 = wf_load(r, m0); c11 = wf_load(r + WF_WIDTH, m1); }
        if (rows > 2) { r += ldc; c20 = wf_load(r, m0); c21 = wf_load(r + WF_WIDTH, m1); }
        if (rows > 3) { r += ldc; c30 = wf_load(r, m0); c31 = wf_load(r + WF_WIDTH, m1); }
        if (rows > 4) { r += ldc; c40 = wf_load(r, m0); c41 = wf_load(r + WF_WIDTH, m1); }
        if (rows > 5) { r += ldc; c50 = wf_load(r, m0); c51 = wf_load(r + WF_WIDTH, m1); }
    }
    for (long s = 0; s < segments; s++) {
      const float *bk = b[s] + bj;
      for (long k = 0; k < segK; k++, bk += ldb, a += 6) {
        const wf_v b0 = wf_load(bk, m0), b1 = wf_load(bk + WF_WIDTH, m1);
        wf_v x = wf_set1(a[0]); c00 = wf_fmadd(x, b0, c00); c01 = wf_fmadd(x, b1, c01);
        x = wf_set1(a[1]); c10 = wf_fmadd(x, b0, c10); c11 = wf_fmadd(x, b1, c11);
        x = wf_set1(a[2]); c20 = wf_fmadd(x, b0, c20); c21 = wf_fmadd(x, b1, c21);
        x = wf_set1(a[3]); c30 = wf_fmadd(x, b0, c30); c31 = wf_fmadd(x, b1, c31);
        x = wf_set1(a[4]); c40 = wf_fmadd(x, b0, c40); c41 = wf_fmadd(x, b1, c41);
        x = wf_set1(a[5]); c50 = wf_fmadd(x, b0, c50); c51 = wf_fmadd(x, b1, c51);
      }
    }
    c += j;
    wf_store(c, m0, c00); wf_store(c + WF_WIDTH, m1, c01);
    if (rows > 1) { c += ldc; wf_store(c, m0, c10); wf_store(c + WF_WIDTH, m1, c11); }
    if (rows > 2) { c += ldc; wf_store(c, m0, c20); wf_store(c + WF_WIDTH, m1, c21); }
    if (rows > 3) { c += ldc; wf_store(c, m0, c30); wf_store(c + WF_WIDTH, m1, c31); }
    if (rows > 4) { c += ldc; wf_store(c, m0, c40); wf_store(c + WF_WIDTH, m1, c41); }
    if (rows > 5) { c += ldc; wf_store(c, m0, c50); wf_store(c + WF_WIDTH, m1, c51); }
}

/// As wf_panel_tile for a tail of at most one vector (mask m0), read in
/// place: 6 accumulators, half the multiply-adds of a 2-vector tile.
static inline WF_TARGET void WF_NAME(wf_panel_tile1)(const float *a, const float *const *b, long segments, long segK, long ldb,
                                                      long j, float *c, long ldc, long rows, wf_mask m0, int accumulate) {
    wf_v c0 = wf_zero(), c1 = wf_zero(), c2 = wf_zero(), c3 = wf_zero(), c4 = wf_zero(), c5 = wf_zero();
    if (accumulate) {
        const float *r = c + j;
        c0 = wf_load(r, m0);
        if (rows > 1) { r += ldc; c1 = wf_load(r, m0); }
        if (rows > 2) { r += ldc; c2 = wf_load(r, m0); }
        if (rows > 3) { r += ldc; c3 = wf_load(r, m0); }
        if (rows > 4) { r += ldc; c4 = wf_load(r, m0); }
        if (rows > 5) { r += ldc; c5 = wf_load(r, m0); }
    }
    for (long s = 0; s < segments; s++) {
        const float *bk = b[s] + j;
        for (long k = 0; k < segK; k++, bk += ldb, a += 6) {
            const wf_v b0 = wf_load(bk, m0);
            c0 = wf_fmadd(wf_set1(a[0]), b0, c0);
            c1 = wf_fmadd(wf_set1(a[1]), b0, c1);
            c2 = wf_fmadd(wf_set1(a[2]), b0, c2);
            c3 = wf_fmadd(wf_set1(a[3]), b0, c3);
            c4 = wf_fmadd(wf_set1(a[4]), b0, c4);
            c5 = wf_fmadd(wf_set1(a[5]), b0, c5);
        }
    }
    c += j;
    wf_store(c, m0, c0);
    if (rows > 1) { c += ldc; wf_store(c, m0, c1); }
    if (rows > 2) { c += ldc; wf_store(c, m0, c2); }
    if (rows > 3) { c += ldc; wf_store(c, m0, c3); }
    if (rows > 4) { c += ldc; wf_store(c, m0, c4); }
    if (rows > 5) { c += ldc; wf_store(c, m0, c5); }
}

WF_TARGET void WF_NAME(wf_panel_gemm)(const float *ap, long m, long kTotal, long kFirst,
                                      const float *const *b, long segments, long segK, long ldb,
                                      long n, float *c, long ldc, int accumulate) {
    const long panels = (m + 5) / 6, kCount = segments * segK;
    const wf_mask all = wf_tail_mask(WF_WIDTH);
    // Rows 256 bytes apart or a multiple of that share a quarter of L1's sets or fewer.
    const int pack = ldb % 64 == 0;
    float *bp = pack ? (float *)aligned_alloc(64, (size_t)(kCount * 2 * WF_WIDTH * sizeof(float))) : 0;
    if (pack && !bp) abort();
    const float *packed[1] = { bp };
    for (long j = 0; j < n; j += 2 * WF_WIDTH) {
        const long left = n - j;
        const wf_mask m0 = wf_tail_mask(left), m1 = wf_tail_mask(left > WF_WIDTH ? left - WF_WIDTH : 0);
        if (pack) {
            // The column panel of every segment, contiguous (zero past n).
            float *dst = bp;
            for (long s = 0; s < segments; s++) {
                const float *src = b[s] + j;
                for (long k = 0; k < segK; k++, src += ldb, dst += 2 * WF_WIDTH) {
                    wf_store(dst, all, wf_load(src, m0));
                    wf_store(dst + WF_WIDTH, all, wf_load(src + WF_WIDTH, m1));
                }
            }
        }
        for (long p = 0; p < panels; p++) {
            const float *a = ap + (p * kTotal + kFirst) * 6;
            if (pack) {
                // (The copy is zero past n; C is not: the tail tile's stores keep their masks.)
                if (left >= 2 * WF_WIDTH)
                    WF_NAME(wf_panel_tile)(a, packed, 1, kCount, 2 * WF_WIDTH, 0, j, c + p * 6 * ldc, ldc, m - p * 6, all, all, accumulate);
                else
                    WF_NAME(wf_panel_tile)(a, packed, 1, kCount, 2 * WF_WIDTH, 0, j, c + p * 6 * ldc, ldc, m - p * 6, m0, m1, accumulate);
            } else if (left >= 2 * WF_WIDTH) {
                WF_NAME(wf_panel_tile)(a, b, segments, segK, ldb, j, j, c + p * 6 * ldc, ldc, m - p * 6, all, all, accumulate);
            } else if (left > WF_WIDTH) {
                WF_NAME(wf_panel_tile)(a, b, segments, segK, ldb, j, j, c + p * 6 * ldc, ldc, m - p * 6, m0, m1, accumulate);
            } else {
                WF_NAME(wf_panel_tile1)(a, b, segments, segK, ldb, j, c + p * 6 * ldc, ldc, m - p * 6, m0, accumulate);
            }
        }
    }
    free(bp);
}
