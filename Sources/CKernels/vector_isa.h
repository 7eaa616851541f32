// One vector instruction set as a small vocabulary, so that each kernel is
// written once (gate_kernels.h, sum_kernels.h) and compiled per target:
// before including a kernel file, define WF_ISA_AVX2 or WF_ISA_AVX512 and
// include this header. Tails shorter than a vector go through masked loads
// and stores (AVX2: vmaskmov; AVX-512: mask registers); with the constant
// all-lanes mask the compiler emits plain loads and stores.
#include <immintrin.h>

// Every name below is a macro, undefined here first, so the header can be
// included once per instruction set in one file.
#undef WF_TARGET
#undef WF_WIDTH
#undef WF_NAME
#undef wf_v
#undef wf_mask
#undef wf_tail_mask
#undef wf_load
#undef wf_store
#undef wf_set1
#undef wf_add
#undef wf_sub
#undef wf_mul
#undef wf_div
#undef wf_sqrt
#undef wf_fmadd
#undef wf_fnmadd
#undef wf_min
#undef wf_max
#undef wf_round
#undef wf_scale2n
#undef WF_EXP_NEEDS_CLAMP
#undef wf_exp
#undef wf_reduce_add
#undef wf_zero

#if defined(WF_ISA_AVX512)
#define WF_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define WF_WIDTH 16
#define WF_NAME(name) name##_avx512
#define wf_v __m512
#define wf_mask __mmask16
static inline WF_TARGET wf_mask wf_tail_mask_avx512(long n) {
    return n >= 16 ? (wf_mask)0xFFFF : (wf_mask)((1u << n) - 1);
}
#define wf_tail_mask wf_tail_mask_avx512
#define wf_load(p, m) _mm512_maskz_loadu_ps((m), (p))
#define wf_store(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define wf_set1 _mm512_set1_ps
#define wf_add _mm512_add_ps
#define wf_sub _mm512_sub_ps
#define wf_mul _mm512_mul_ps
#define wf_div _mm512_div_ps
#define wf_sqrt _mm512_sqrt_ps
#define wf_fmadd _mm512_fmadd_ps
#define wf_fnmadd _mm512_fnmadd_ps
#define wf_min _mm512_min_ps
#define wf_max _mm512_max_ps
#define wf_round(x) _mm512_roundscale_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/// e * 2^n for integral n, saturating to 0 and infinity (no clamp needed).
#define wf_scale2n(e, n) _mm512_scalef_ps((e), (n))
#define WF_EXP_NEEDS_CLAMP 0
#define wf_reduce_add _mm512_reduce_add_ps
#define wf_zero _mm512_setzero_ps

#elif defined(WF_ISA_AVX2)
#define WF_TARGET __attribute__((target("avx2,fma")))
#define WF_WIDTH 8
#define WF_NAME(name) name##_avx2
#define wf_v __m256
#define wf_mask __m256i
static inline WF_TARGET wf_mask wf_tail_mask_avx2(long n) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), lanes);
}
#define wf_tail_mask wf_tail_mask_avx2
#define wf_load(p, m) _mm256_maskload_ps((p), (m))
#define wf_store(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define wf_set1 _mm256_set1_ps
#define wf_add _mm256_add_ps
#define wf_sub _mm256_sub_ps
#define wf_mul _mm256_mul_ps
#define wf_div _mm256_div_ps
#define wf_sqrt _mm256_sqrt_ps
#define wf_fmadd _mm256_fmadd_ps
#define wf_fnmadd _mm256_fnmadd_ps
#define wf_min _mm256_min_ps
#define wf_max _mm256_max_ps
#define wf_round(x) _mm256_round_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/// e * 2^n for integral n in [-126, 127] (the caller clamps x), through the exponent bits.
#define wf_scale2n(e, n) _mm256_mul_ps((e), _mm256_castsi256_ps(_mm256_slli_epi32( \
    _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23)))
#define WF_EXP_NEEDS_CLAMP 1
static inline WF_TARGET float wf_reduce_add_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define wf_reduce_add wf_reduce_add_avx2
#define wf_zero _mm256_setzero_ps

#else
#error "define WF_ISA_AVX2 or WF_ISA_AVX512 before including vector_isa.h"
#endif

/// e^x, relative error about 2e-7 (Cephes expf: x = n ln2 + r with ln 2 in
/// two parts, e^r by a degree-5 polynomial, 2^n from the exponent). The
/// same constants as FastMath.exp in Swift.
#define wf_exp WF_NAME(wf_exp)
static inline WF_TARGET wf_v wf_exp(wf_v x) {
#if WF_EXP_NEEDS_CLAMP
    x = wf_min(wf_max(x, wf_set1(-87.3f)), wf_set1(88.3f));
#endif
    const wf_v n = wf_round(wf_mul(x, wf_set1(1.44269504f)));
    wf_v r = wf_fnmadd(n, wf_set1(0.693359375f), x);
    r = wf_fnmadd(n, wf_set1(-2.12194440e-4f), r);
    wf_v p = wf_set1(1.9875691500e-4f);
    p = wf_fmadd(p, r, wf_set1(1.3981999507e-3f));
    p = wf_fmadd(p, r, wf_set1(8.3334519073e-3f));
    p = wf_fmadd(p, r, wf_set1(4.1665795894e-2f));
    p = wf_fmadd(p, r, wf_set1(1.6666665459e-1f));
    p = wf_fmadd(p, r, wf_set1(5.0000001201e-1f));
    const wf_v e = wf_add(wf_fmadd(wf_mul(p, r), r, r), wf_set1(1.0f));
    return wf_scale2n(e, n);
}
