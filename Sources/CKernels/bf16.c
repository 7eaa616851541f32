// Float32 -> bf16 rounding (see ckernels.h). Round to nearest even on the
// bits: add 0x7FFF plus the lowest kept bit, keep the upper half.
#include "ckernels.h"

#if defined(WF_HAVE_X86_KERNELS)
#include <immintrin.h>

static inline uint16_t wf_round_bf16_scalar(float x) {
    uint32_t v;
    __builtin_memcpy(&v, &x, 4);
    return (uint16_t)((v + 0x7FFFu + ((v >> 16) & 1u)) >> 16);
}

/// The first min(n, 16) lanes (the AVX-512 loops' tail mask).
static inline __mmask16 wf_mask16(long n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

__attribute__((target("avx2")))
void wf_to_bf16_avx2(const float *src, uint16_t *dst, long count) {
    long i = 0;
    const __m256i bias = _mm256_set1_epi32(0x7FFF), lsb = _mm256_set1_epi32(1);
    for (; i + 16 <= count; i += 16) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(src + i + 8));
        v0 = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(v0, bias), _mm256_and_si256(_mm256_srli_epi32(v0, 16), lsb)), 16);
        v1 = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(v1, bias), _mm256_and_si256(_mm256_srli_epi32(v1, 16), lsb)), 16);
        // packus works within 128-bit lanes: [v0 lo, v1 lo, v0 hi, v1 hi]; put them back in order.
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v0, v1), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + i), packed);
    }
    for (; i < count; i++) dst[i] = wf_round_bf16_scalar(src[i]);
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
void wf_to_bf16_avx512(const float *src, uint16_t *dst, long count) {
    const __m512i bias = _mm512_set1_epi32(0x7FFF), lsb = _mm512_set1_epi32(1);
    for (long i = 0; i < count; i += 16) {
        const __mmask16 m = wf_mask16(count - i);
        __m512i v = _mm512_maskz_loadu_epi32(m, src + i);
        v = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(v, bias), _mm512_and_si512(_mm512_srli_epi32(v, 16), lsb)), 16);
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtepi32_epi16(v));
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void wf_to_bf16_avx512bf16(const float *src, uint16_t *dst, long count) {
    for (long i = 0; i < count; i += 16) {
        const __mmask16 m = wf_mask16(count - i);
        const __m256bh r = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)r);
    }
}
#endif
