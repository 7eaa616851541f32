// The panel product kernel (Sources/CKernels/panel_gemm.h) against OpenBLAS's
// sgemm on one shape, one thread: GFLOP/s of each build (AVX-512, AVX2) and
// of cblas_sgemm on the same operands. Not run by CI. Build and run:
//
//   clang -O2 -ISources/CKernels/include -ISources/CKernels scripts/bench-panel-kernel.c \
//       Sources/CKernels/kernels.c -lopenblas -lm -o /tmp/bench-panel
//   OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell /tmp/bench-panel M K N LDB SEGMENTS
//
// C [M, N] = A [M, K] B, B given as SEGMENTS blocks of K / SEGMENTS rows with
// row stride LDB (>= N). The AVX-512 build needs a CPU with AVX-512.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
#include "ckernels.h"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: %s M K N LDB SEGMENTS\n", argv[0]); return 2; }
    long m = atol(argv[1]), k = atol(argv[2]), n = atol(argv[3]), ld = atol(argv[4]), segs = atol(argv[5]);
    if (m < 1 || k < 1 || n < 1 || ld < n || segs < 1 || k % segs) { fprintf(stderr, "bad sizes\n"); return 2; }
    long segK = k / segs;
    float *a = malloc(sizeof(float) * m * k), *ap = calloc((m + 5) / 6 * k * 6, sizeof(float));
    float *b = malloc(sizeof(float) * k * ld), *c = malloc(sizeof(float) * m * ld);
    for (long i = 0; i < m * k; i++) a[i] = rand() / (float)RAND_MAX;
    for (long i = 0; i < k * ld; i++) b[i] = rand() / (float)RAND_MAX;
    for (long r = 0; r < m; r++) for (long kk = 0; kk < k; kk++) ap[((r / 6) * k + kk) * 6 + r % 6] = a[r * k + kk];
    const float **bs = malloc(sizeof(float *) * segs);
    for (long s = 0; s < segs; s++) bs[s] = b + s * segK * ld;
    const int reps = (int)(2e10 / (2.0 * m * n * k)) + 1;
    const char *names[] = { "panel AVX-512", "panel AVX2", "OpenBLAS" };
    for (int v = 0; v < 3; v++) {
        double t0 = now();
        for (int i = 0; i < reps; i++) {
            if (v == 0) wf_panel_gemm_avx512(ap, m, k, 0, bs, segs, segK, ld, n, c, ld, 0);
            else if (v == 1) wf_panel_gemm_avx2(ap, m, k, 0, bs, segs, segK, ld, n, c, ld, 0);
            else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1, a, k, b, ld, 0, c, ld);
        }
        printf("%-14s %.1f GFLOP/s\n", names[v], 2.0 * m * n * k * reps / (now() - t0) / 1e9);
    }
    return 0;
}
