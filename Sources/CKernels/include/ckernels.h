// Elementwise kernels where the instruction set matters: the gated
// activation of the residual layers (two exponentials per element), the
// bias gradients' row sums, and the rounding of Float32 operands to bf16.
// Each comes in an AVX2 + FMA version and an AVX-512 version (compiled for
// those targets with function attributes, so the rest of the program still
// runs on any x86-64-v3 CPU); the Swift side picks one from the CPU's
// features (Sources/WaveFlow/NN/VectorKernels.swift).
// The libm and integer-rounding twins the tests compare them with are Swift.
//
// Layout shared by the gate kernels: y holds the tanh half at y[0:count]
// and the sigmoid half at y[total : total+count] (the caller passes y and g
// already offset to a channel's first element).
#ifndef WAVEFLOW_CKERNELS_H
#define WAVEFLOW_CKERNELS_H

#include <stdint.h>

#if defined(__x86_64__)
#define WF_HAVE_X86_KERNELS 1

/// g[i] = tanh(y[i] + bias_tanh) * sigmoid(y[total + i] + bias_sigmoid), i < count.
void wf_gate_forward_avx2(const float *y, float *g, long count, long total, float bias_tanh, float bias_sigmoid);
void wf_gate_forward_avx512(const float *y, float *g, long count, long total, float bias_tanh, float bias_sigmoid);

/// As wf_gate_forward without biases, also keeping t = tanh(y[i]) in
/// kept[i] and s = sigmoid(y[total + i]) in kept[total + i].
void wf_gate_forward_keeping_avx2(const float *y, float *g, float *kept, long count, long total);
void wf_gate_forward_keeping_avx512(const float *y, float *g, float *kept, long count, long total);

/// In place over kept (t, s as above): kept[i] = dg[i] s (1 - t^2),
/// kept[total + i] = dg[i] t s (1 - s).
void wf_gate_backward_kept_avx2(float *kept, const float *dg, long count, long total);
void wf_gate_backward_kept_avx512(float *kept, const float *dg, long count, long total);

/// Both in one pass without kept: g[i] = t s and dy as wf_gate_backward_kept
/// writes it (dy[i], dy[total + i]), from y and dg; the same values.
void wf_gate_backward_from_y_avx2(const float *y, const float *dg, float *g, float *dy, long count, long total);
void wf_gate_backward_from_y_avx512(const float *y, const float *dg, float *g, float *dy, long count, long total);

/// The sum of x[0:count] (vector accumulators: the additions' order
/// differs from a loop's, the result agrees within rounding).
float wf_sum_avx2(const float *x, long count);
float wf_sum_avx512(const float *x, long count);

/// One Adam step over x[0:count] from gradients g, moments m and v (updated
/// in place): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g g,
/// x -= lr (m / c1) / (sqrt(v / c2) + eps); bit for bit Adam.update's
/// scalar loop (c1, c2: the bias corrections 1 - b1^t, 1 - b2^t).
void wf_adam_avx2(float *x, const float *g, float *m, float *v, long count, float b1, float b2, float c1, float c2,
                  float lr, float eps);
void wf_adam_avx512(float *x, const float *g, float *m, float *v, long count, float b1, float b2, float c1, float c2,
                    float lr, float eps);

/// dst[i] = src[i] rounded to bf16 (round to nearest even; the upper 16
/// bits of the rounded Float32). The integer versions carry NaN payloads
/// as they fall; the AVX-512 BF16 instruction quiets NaNs and flushes
/// denormals to zero — the two agree on every normal number.
void wf_to_bf16_avx2(const float *src, uint16_t *dst, long count);
void wf_to_bf16_avx512(const float *src, uint16_t *dst, long count);
void wf_to_bf16_avx512bf16(const float *src, uint16_t *dst, long count);

/// C [m, n] (row stride ldc) = A[:, kFirst ..< kFirst + segments*segK] B
/// (+ C when accumulate),
/// B being `segments` blocks of segK rows, block s at b[s] (row stride ldb).
/// A [m, kTotal] packed by panels of 6 rows: ap[(p*kTotal + k)*6 + i] =
/// A[6p + i, k], zero past row m. Any m, n >= 1.
void wf_panel_gemm_avx2(const float *ap, long m, long kTotal, long kFirst, const float *const *b, long segments,
                        long segK, long ldb, long n, float *c, long ldc, int accumulate);
void wf_panel_gemm_avx512(const float *ap, long m, long kTotal, long kFirst, const float *const *b, long segments,
                          long segK, long ldb, long n, float *c, long ldc, int accumulate);

/// Winograd F(4, 3) along the width with dilation d, q tiles per residue
/// (Sources/WaveFlow/NN/WidthWinograd.swift documents the layout and holds
/// the Swift twins these equal up to rounding):
/// V [6][channels, q d] of the block j0 ..< j0 + 4 q d of each row channel
/// (zero outside 0 ..< width); split: 4 (q + 2) d values.
void wf_wino_input_avx2(const float *row, long channels, long rowStride, long width, long j0, long d, long q,
                        float *v, long pointStride, long ldv, float *split);
void wf_wino_input_avx512(const float *row, long channels, long rowStride, long width, long j0, long d, long q,
                          float *v, long pointStride, long ldv, float *split);
/// y [rows, n] += the tiles' outputs from M [6][rows, q d]; scratch: 4 q d values.
void wf_wino_output_avx2(const float *m, long pointStride, long ldm, long rows, long d, long q, long n,
                         float *y, long ldy, float *scratch);
void wf_wino_output_avx512(const float *m, long pointStride, long ldm, long rows, long d, long q, long n,
                           float *y, long ldy, float *scratch);
/// dM [6][rows, q d] from dy [rows, n] (the output transform's transpose); scratch: 4 q d values.
void wf_wino_output_grad_avx2(const float *dy, long ldy, long rows, long d, long q, long n,
                              float *dm, long pointStride, long ldm, float *scratch);
void wf_wino_output_grad_avx512(const float *dy, long ldy, long rows, long d, long q, long n,
                                float *dm, long pointStride, long ldm, float *scratch);
/// dx [channels, width] += the input transform's transpose of dV; split:
/// 4 (q + 2) d values, scratch: 6 q d.
void wf_wino_input_grad_avx2(const float *dv, long pointStride, long ldv, long channels, long d, long q,
                             float *dx, long rowStride, long width, long j0, float *split, float *scratch);
void wf_wino_input_grad_avx512(const float *dv, long pointStride, long ldv, long channels, long d, long q,
                               float *dx, long rowStride, long width, long j0, float *split, float *scratch);

#endif

/// The x86-64 level (3 or 4) this build's Swift code was compiled for, which
/// cpu_check.c requires of the CPU at start (Package.swift, WAVEFLOW_MARCH;
/// the default is 3); 0 for x86-64 or x86-64-v2, or another architecture.
int wf_build_required_x86_64_level(void);
/// Whether this CPU has every x86-64-v3 feature (level 3), or v4's (level 4);
/// 0 off x86-64.
int wf_cpu_has_x86_64_level(int level);

/// A hint inside a spin-wait loop (x86 `pause`, ARM `yield`): the core slows
/// the loop down instead of flooding the memory system (WorkerTeam.swift).
static inline void wf_spin_pause(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
#endif
