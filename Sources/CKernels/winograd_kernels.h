// The transforms of Winograd's F(4, 3) along the width (the Swift twins and
// the layout are in Sources/WaveFlow/NN/WidthWinograd.swift), written once
// over vector_isa.h's vocabulary and included by kernels.c once per
// instruction set. Swift's versions ran scalar (the compiler did not
// vectorise them) and spent 10-13% of training and synthesis.
//
// With dilation d a tile holds 4 outputs d columns apart, so each transform
// first splits a row into 4 phases (phase p of group g: the d columns
// (4g + p) d ... (4g + p) d + d - 1) or merges phases back into a row. For
// d = 1 and 2 that is a 4-way de-interleave of floats or of float pairs,
// for d = 4 and 8 a transpose of 128- or 256-bit chunks, all by shuffles;
// from the vector width up, runs of whole vectors (which the input and
// output transforms then read or write in place, without a split).
// Everything between is contiguous vector arithmetic over the tiles.

#ifndef WF_WINO_LOOP
/// body(i, mask) over 0 ..< count: whole vectors with the constant all-lanes
/// mask (plain loads and stores: AVX2's masked moves are slow on AMD), then
/// the tail once, masked.
#define WF_WINO_LOOP(i, count, body)                                           \
    do {                                                                       \
        long i = 0;                                                            \
        for (; i + WF_WIDTH <= (count); i += WF_WIDTH) body(wf_tail_mask(WF_WIDTH)); \
        if (i < (count)) body(wf_tail_mask((count) - i));                      \
    } while (0)
#endif

/// A 4 x 4 transpose of 128-bit chunks (AVX-512) or of 128-bit halves by
/// pairs (AVX2: v[0..3] as two 2 x 2 blocks, see the callers): for d = 4
/// and d = 8 a group's 4 phases are whole chunks.
#if defined(WF_ISA_AVX512)
static inline WF_TARGET void WF_NAME(wf_wino_chunks4)(__m512 v[4]) {
    const __m512 t0 = _mm512_shuffle_f32x4(v[0], v[1], 0x44), t1 = _mm512_shuffle_f32x4(v[0], v[1], 0xEE);
    const __m512 t2 = _mm512_shuffle_f32x4(v[2], v[3], 0x44), t3 = _mm512_shuffle_f32x4(v[2], v[3], 0xEE);
    v[0] = _mm512_shuffle_f32x4(t0, t2, 0x88); v[1] = _mm512_shuffle_f32x4(t0, t2, 0xDD);
    v[2] = _mm512_shuffle_f32x4(t1, t3, 0x88); v[3] = _mm512_shuffle_f32x4(t1, t3, 0xDD);
}
#endif

/// out[p * phase + g * d + rho] = x[(4 g + p) d + rho] for g < groups, rho < d.
static inline WF_TARGET void WF_NAME(wf_wino_split)(const float *x, long d, long groups, float *out, long phase) {
    long g = 0;
    float *o0 = out, *o1 = out + phase, *o2 = out + 2 * phase, *o3 = out + 3 * phase;
#if defined(WF_ISA_AVX512)
    if (d == 1) {
        // Phase p of 16 groups: lanes 0-7 from (a0, a1), lanes 8-15 from (a2, a3).
        const __m512i i0 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        const __m512i one = _mm512_set1_epi32(1);
        const __m512i i1 = _mm512_add_epi32(i0, one), i2 = _mm512_add_epi32(i1, one), i3 = _mm512_add_epi32(i2, one);
        for (; g + 16 <= groups; g += 16) {
            const float *s = x + 4 * g;
            __m512 a0 = _mm512_loadu_ps(s), a1 = _mm512_loadu_ps(s + 16), a2 = _mm512_loadu_ps(s + 32), a3 = _mm512_loadu_ps(s + 48);
            _mm512_storeu_ps(o0 + g, _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(a0, i0, a1), _mm512_permutex2var_ps(a2, i0, a3)));
            _mm512_storeu_ps(o1 + g, _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(a0, i1, a1), _mm512_permutex2var_ps(a2, i1, a3)));
            _mm512_storeu_ps(o2 + g, _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(a0, i2, a1), _mm512_permutex2var_ps(a2, i2, a3)));
            _mm512_storeu_ps(o3 + g, _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(a0, i3, a1), _mm512_permutex2var_ps(a2, i3, a3)));
        }
    } else if (d == 2) {
        // The same on float pairs (as doubles): phase p of 8 groups.
        const __m512i i0 = _mm512_setr_epi64(0, 4, 8, 12, 0, 4, 8, 12);
        const __m512i one = _mm512_set1_epi64(1);
        const __m512i i1 = _mm512_add_epi64(i0, one), i2 = _mm512_add_epi64(i1, one), i3 = _mm512_add_epi64(i2, one);
        for (; g + 8 <= groups; g += 8) {
            const double *s = (const double *)(x + 8 * g);
            __m512d a0 = _mm512_loadu_pd(s), a1 = _mm512_loadu_pd(s + 8), a2 = _mm512_loadu_pd(s + 16), a3 = _mm512_loadu_pd(s + 24);
            _mm512_storeu_pd((double *)(o0 + 2 * g), _mm512_mask_blend_pd(0xF0, _mm512_permutex2var_pd(a0, i0, a1), _mm512_permutex2var_pd(a2, i0, a3)));
            _mm512_storeu_pd((double *)(o1 + 2 * g), _mm512_mask_blend_pd(0xF0, _mm512_permutex2var_pd(a0, i1, a1), _mm512_permutex2var_pd(a2, i1, a3)));
            _mm512_storeu_pd((double *)(o2 + 2 * g), _mm512_mask_blend_pd(0xF0, _mm512_permutex2var_pd(a0, i2, a1), _mm512_permutex2var_pd(a2, i2, a3)));
            _mm512_storeu_pd((double *)(o3 + 2 * g), _mm512_mask_blend_pd(0xF0, _mm512_permutex2var_pd(a0, i3, a1), _mm512_permutex2var_pd(a2, i3, a3)));
        }
    }
#else
    if (d == 1 || d == 2) {
        // A 4 x 4 transpose of doubles (d = 2: float pairs; d = 1: after
        // pairing each 8-float load's groups phase by phase).
        const __m256i pair = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        const long step = d == 1 ? 8 : 4; // groups per 4 loads
        for (; g + step <= groups; g += step) {
            const float *s = x + 4 * d * g;
            __m256 f0 = _mm256_loadu_ps(s), f1 = _mm256_loadu_ps(s + 8), f2 = _mm256_loadu_ps(s + 16), f3 = _mm256_loadu_ps(s + 24);
            if (d == 1) {
                f0 = _mm256_permutevar8x32_ps(f0, pair); f1 = _mm256_permutevar8x32_ps(f1, pair);
                f2 = _mm256_permutevar8x32_ps(f2, pair); f3 = _mm256_permutevar8x32_ps(f3, pair);
            }
            __m256d a0 = _mm256_castps_pd(f0), a1 = _mm256_castps_pd(f1), a2 = _mm256_castps_pd(f2), a3 = _mm256_castps_pd(f3);
            __m256d t0 = _mm256_unpacklo_pd(a0, a1), t1 = _mm256_unpackhi_pd(a0, a1);
            __m256d t2 = _mm256_unpacklo_pd(a2, a3), t3 = _mm256_unpackhi_pd(a2, a3);
            _mm256_storeu_pd((double *)(o0 + d * g), _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd((double *)(o1 + d * g), _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd((double *)(o2 + d * g), _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd((double *)(o3 + d * g), _mm256_permute2f128_pd(t1, t3, 0x31));
        }
    }
#endif
#if defined(WF_ISA_AVX512)
    if (d == 4) {
        // 4 groups: their 16-float vectors transposed by 4-float chunks.
        for (; g + 4 <= groups; g += 4) {
            __m512 v[4] = { _mm512_loadu_ps(x + 16 * g), _mm512_loadu_ps(x + 16 * g + 16), _mm512_loadu_ps(x + 16 * g + 32),
                            _mm512_loadu_ps(x + 16 * g + 48) };
            WF_NAME(wf_wino_chunks4)(v);
            _mm512_storeu_ps(o0 + 4 * g, v[0]); _mm512_storeu_ps(o1 + 4 * g, v[1]);
            _mm512_storeu_ps(o2 + 4 * g, v[2]); _mm512_storeu_ps(o3 + 4 * g, v[3]);
        }
    } else if (d == 8) {
        // 2 groups: (p0 p1)(p2 p3) of each into 8-float halves.
        for (; g + 2 <= groups; g += 2) {
            const float *s = x + 32 * g;
            const __m512 a0 = _mm512_loadu_ps(s), a1 = _mm512_loadu_ps(s + 16), a2 = _mm512_loadu_ps(s + 32), a3 = _mm512_loadu_ps(s + 48);
            _mm512_storeu_ps(o0 + 8 * g, _mm512_shuffle_f32x4(a0, a2, 0x44)); _mm512_storeu_ps(o1 + 8 * g, _mm512_shuffle_f32x4(a0, a2, 0xEE));
            _mm512_storeu_ps(o2 + 8 * g, _mm512_shuffle_f32x4(a1, a3, 0x44)); _mm512_storeu_ps(o3 + 8 * g, _mm512_shuffle_f32x4(a1, a3, 0xEE));
        }
    }
#else
    if (d == 4) {
        // 2 groups: (p0 p1)(p2 p3) of each into 4-float halves.
        for (; g + 2 <= groups; g += 2) {
            const float *s = x + 16 * g;
            const __m256 a0 = _mm256_loadu_ps(s), a1 = _mm256_loadu_ps(s + 8), a2 = _mm256_loadu_ps(s + 16), a3 = _mm256_loadu_ps(s + 24);
            _mm256_storeu_ps(o0 + 4 * g, _mm256_permute2f128_ps(a0, a2, 0x20)); _mm256_storeu_ps(o1 + 4 * g, _mm256_permute2f128_ps(a0, a2, 0x31));
            _mm256_storeu_ps(o2 + 4 * g, _mm256_permute2f128_ps(a1, a3, 0x20)); _mm256_storeu_ps(o3 + 4 * g, _mm256_permute2f128_ps(a1, a3, 0x31));
        }
    }
#endif
    if (d % WF_WIDTH == 0) {
        // Runs of whole vectors.
        for (; g < groups; g++) {
            const float *s = x + 4 * d * g;
            for (long rho = 0; rho < d; rho += WF_WIDTH) {
                const wf_mask m = wf_tail_mask(WF_WIDTH);
                wf_store(o0 + g * d + rho, m, wf_load(s + rho, m));
                wf_store(o1 + g * d + rho, m, wf_load(s + d + rho, m));
                wf_store(o2 + g * d + rho, m, wf_load(s + 2 * d + rho, m));
                wf_store(o3 + g * d + rho, m, wf_load(s + 3 * d + rho, m));
            }
        }
    }
    for (; g < groups; g++)
        for (long p = 0; p < 4; p++)
            for (long rho = 0; rho < d; rho++) out[p * phase + g * d + rho] = x[(4 * g + p) * d + rho];
}

/// y[(4 g + p) d + rho] += in[p * phase + g * d + rho] for g < groups, rho < d
/// (the transpose of wf_wino_split).
static inline WF_TARGET void WF_NAME(wf_wino_merge_add)(const float *in, long phase, long d, long groups, float *y) {
    long g = 0;
    const float *i0p = in, *i1p = in + phase, *i2p = in + 2 * phase, *i3p = in + 3 * phase;
#if defined(WF_ISA_AVX512)
    if (d == 1) {
        // Output vector r (groups 4r ... 4r + 3), lane e: phase e % 4, group 4r + e / 4.
        __m512i ia[4], ib[4];
        for (int r = 0; r < 4; r++) {
            int a[16], b[16];
            for (int e = 0; e < 16; e++) {
                a[e] = (e % 4 == 1 ? 16 : 0) + 4 * r + e / 4;
                b[e] = (e % 4 == 3 ? 16 : 0) + 4 * r + e / 4;
            }
            ia[r] = _mm512_loadu_si512(a); ib[r] = _mm512_loadu_si512(b);
        }
        for (; g + 16 <= groups; g += 16) {
            __m512 p0 = _mm512_loadu_ps(i0p + g), p1 = _mm512_loadu_ps(i1p + g), p2 = _mm512_loadu_ps(i2p + g), p3 = _mm512_loadu_ps(i3p + g);
            float *dst = y + 4 * g;
            for (int r = 0; r < 4; r++) {
                __m512 v = _mm512_mask_blend_ps(0xCCCC, _mm512_permutex2var_ps(p0, ia[r], p1), _mm512_permutex2var_ps(p2, ib[r], p3));
                _mm512_storeu_ps(dst + 16 * r, _mm512_add_ps(_mm512_loadu_ps(dst + 16 * r), v));
            }
        }
    } else if (d == 2) {
        // On float pairs: output vector r (groups 2r, 2r + 1), lane e: phase e % 4, group 2r + e / 4.
        __m512i ia[4], ib[4];
        for (int r = 0; r < 4; r++) {
            long long a[8], b[8];
            for (int e = 0; e < 8; e++) {
                a[e] = (e % 4 == 1 ? 8 : 0) + 2 * r + e / 4;
                b[e] = (e % 4 == 3 ? 8 : 0) + 2 * r + e / 4;
            }
            ia[r] = _mm512_loadu_si512(a); ib[r] = _mm512_loadu_si512(b);
        }
        for (; g + 8 <= groups; g += 8) {
            __m512d p0 = _mm512_loadu_pd((const double *)(i0p + 2 * g)), p1 = _mm512_loadu_pd((const double *)(i1p + 2 * g));
            __m512d p2 = _mm512_loadu_pd((const double *)(i2p + 2 * g)), p3 = _mm512_loadu_pd((const double *)(i3p + 2 * g));
            float *dst = y + 8 * g;
            for (int r = 0; r < 4; r++) {
                __m512 v = _mm512_castpd_ps(_mm512_mask_blend_pd(0xCC, _mm512_permutex2var_pd(p0, ia[r], p1), _mm512_permutex2var_pd(p2, ib[r], p3)));
                _mm512_storeu_ps(dst + 16 * r, _mm512_add_ps(_mm512_loadu_ps(dst + 16 * r), v));
            }
        }
    }
#else
    if (d == 1 || d == 2) {
        // The split's 4 x 4 transpose of doubles is its own inverse; d = 1
        // then undoes the pairing.
        const __m256i unpair = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        const long step = d == 1 ? 8 : 4;
        for (; g + step <= groups; g += step) {
            __m256d a0 = _mm256_loadu_pd((const double *)(i0p + d * g)), a1 = _mm256_loadu_pd((const double *)(i1p + d * g));
            __m256d a2 = _mm256_loadu_pd((const double *)(i2p + d * g)), a3 = _mm256_loadu_pd((const double *)(i3p + d * g));
            __m256d t0 = _mm256_unpacklo_pd(a0, a1), t1 = _mm256_unpackhi_pd(a0, a1);
            __m256d t2 = _mm256_unpacklo_pd(a2, a3), t3 = _mm256_unpackhi_pd(a2, a3);
            __m256 f[4] = {
                _mm256_castpd_ps(_mm256_permute2f128_pd(t0, t2, 0x20)), _mm256_castpd_ps(_mm256_permute2f128_pd(t1, t3, 0x20)),
                _mm256_castpd_ps(_mm256_permute2f128_pd(t0, t2, 0x31)), _mm256_castpd_ps(_mm256_permute2f128_pd(t1, t3, 0x31)),
            };
            float *dst = y + 4 * d * g;
            for (int r = 0; r < 4; r++) {
                __m256 v = d == 1 ? _mm256_permutevar8x32_ps(f[r], unpair) : f[r];
                _mm256_storeu_ps(dst + 8 * r, _mm256_add_ps(_mm256_loadu_ps(dst + 8 * r), v));
            }
        }
    }
#endif
#if defined(WF_ISA_AVX512)
    if (d == 4) {
        for (; g + 4 <= groups; g += 4) {
            __m512 v[4] = { _mm512_loadu_ps(i0p + 4 * g), _mm512_loadu_ps(i1p + 4 * g), _mm512_loadu_ps(i2p + 4 * g),
                            _mm512_loadu_ps(i3p + 4 * g) };
            WF_NAME(wf_wino_chunks4)(v);
            float *dst = y + 16 * g;
            for (int r = 0; r < 4; r++) _mm512_storeu_ps(dst + 16 * r, _mm512_add_ps(_mm512_loadu_ps(dst + 16 * r), v[r]));
        }
    } else if (d == 8) {
        for (; g + 2 <= groups; g += 2) {
            const __m512 p0 = _mm512_loadu_ps(i0p + 8 * g), p1 = _mm512_loadu_ps(i1p + 8 * g);
            const __m512 p2 = _mm512_loadu_ps(i2p + 8 * g), p3 = _mm512_loadu_ps(i3p + 8 * g);
            const __m512 v[4] = { _mm512_shuffle_f32x4(p0, p1, 0x44), _mm512_shuffle_f32x4(p2, p3, 0x44),
                                  _mm512_shuffle_f32x4(p0, p1, 0xEE), _mm512_shuffle_f32x4(p2, p3, 0xEE) };
            float *dst = y + 32 * g;
            for (int r = 0; r < 4; r++) _mm512_storeu_ps(dst + 16 * r, _mm512_add_ps(_mm512_loadu_ps(dst + 16 * r), v[r]));
        }
    }
#else
    if (d == 4) {
        for (; g + 2 <= groups; g += 2) {
            const __m256 p0 = _mm256_loadu_ps(i0p + 4 * g), p1 = _mm256_loadu_ps(i1p + 4 * g);
            const __m256 p2 = _mm256_loadu_ps(i2p + 4 * g), p3 = _mm256_loadu_ps(i3p + 4 * g);
            const __m256 v[4] = { _mm256_permute2f128_ps(p0, p1, 0x20), _mm256_permute2f128_ps(p2, p3, 0x20),
                                  _mm256_permute2f128_ps(p0, p1, 0x31), _mm256_permute2f128_ps(p2, p3, 0x31) };
            float *dst = y + 16 * g;
            for (int r = 0; r < 4; r++) _mm256_storeu_ps(dst + 8 * r, _mm256_add_ps(_mm256_loadu_ps(dst + 8 * r), v[r]));
        }
    }
#endif
    if (d % WF_WIDTH == 0) {
        for (; g < groups; g++) {
            float *dst = y + 4 * d * g;
            for (long rho = 0; rho < d; rho += WF_WIDTH) {
                const wf_mask m = wf_tail_mask(WF_WIDTH);
                wf_store(dst + rho, m, wf_add(wf_load(dst + rho, m), wf_load(i0p + g * d + rho, m)));
                wf_store(dst + d + rho, m, wf_add(wf_load(dst + d + rho, m), wf_load(i1p + g * d + rho, m)));
                wf_store(dst + 2 * d + rho, m, wf_add(wf_load(dst + 2 * d + rho, m), wf_load(i2p + g * d + rho, m)));
                wf_store(dst + 3 * d + rho, m, wf_add(wf_load(dst + 3 * d + rho, m), wf_load(i3p + g * d + rho, m)));
            }
        }
    }
    for (; g < groups; g++)
        for (long p = 0; p < 4; p++)
            for (long rho = 0; rho < d; rho++) y[(4 * g + p) * d + rho] += in[p * phase + g * d + rho];
}

/// The groups qq = 0 ... Q + 1 of a block's phases (group qq: columns
/// j0 + 4 (qq - 1) d ... j0 + 4 qq d - 1) that lie wholly inside 0 ..< width:
/// [*lo, *hi).
static inline void WF_NAME(wf_wino_inner_groups)(long j0, long d, long q, long width, long *lo, long *hi) {
    long a = 1 - (j0 >= 0 ? j0 / (4 * d) : -((-j0 + 4 * d - 1) / (4 * d)));
    if (a < 0) a = 0;
    long b = width - j0 >= 0 ? (width - j0) / (4 * d) + 1 : 0;
    if (b > q + 2) b = q + 2;
    if (b < a) b = a;
    *lo = a; *hi = b;
}

/// V of one vector of tiles t from their 6 inputs x0 ... x5.
static inline WF_TARGET void WF_NAME(wf_wino_input_math)(wf_v x0, wf_v x1, wf_v x2, wf_v x3, wf_v x4, wf_v x5,
                                                        long t, float *out, long pointStride, wf_mask m) {
    const wf_v four = wf_set1(4.0f), five = wf_set1(5.0f), two = wf_set1(2.0f);
    wf_store(out + t, m, wf_add(wf_fnmadd(five, x2, wf_mul(four, x0)), x4));
    wf_store(out + pointStride + t, m, wf_fnmadd(four, wf_add(x1, x2), wf_add(x3, x4)));
    wf_store(out + 2 * pointStride + t, m, wf_fmadd(four, wf_sub(x1, x2), wf_sub(x4, x3)));
    wf_store(out + 3 * pointStride + t, m, wf_fmadd(two, wf_sub(x3, x1), wf_sub(x4, x2)));
    wf_store(out + 4 * pointStride + t, m, wf_fmadd(two, wf_sub(x1, x3), wf_sub(x4, x2)));
    wf_store(out + 5 * pointStride + t, m, wf_add(wf_fnmadd(five, x3, wf_mul(four, x1)), x5));
}

/// One vector of tiles t of the input transform: V from the phases.
static inline WF_TARGET void WF_NAME(wf_wino_input_cols)(const float *p0, const float *p1, const float *p2, const float *p3,
                                                        long d, long t, float *out, long pointStride, wf_mask m) {
    // d0 = phase 3 at t, d1 ... d4 = phases 0 ... 3 at t + d, d5 = phase 0 at t + 2d.
    WF_NAME(wf_wino_input_math)(wf_load(p3 + t, m), wf_load(p0 + t + d, m), wf_load(p1 + t + d, m), wf_load(p2 + t + d, m),
                                wf_load(p3 + t + d, m), wf_load(p0 + t + 2 * d, m), t, out, pointStride, m);
}

/// wf_wino_input for d a multiple of the vector width: each tile's 6 runs
/// of inputs are whole vectors, read straight from the row (through a
/// zero-padded copy for the tiles at its edges), no phase split.
static inline WF_TARGET void WF_NAME(wf_wino_input_runs)(const float *row, long channels, long rowStride, long width, long j0,
                                                        long d, long q, float *v, long pointStride, long ldv) {
    const wf_mask all = wf_tail_mask(WF_WIDTH);
    float edge[6 * WF_WIDTH];
    for (long c = 0; c < channels; c++) {
        const float *src = row + c * rowStride;
        float *out = v + c * ldv;
        for (long g = 0; g < q; g++) {
            const long base = j0 + (4 * g - 1) * d; // input 0's first column
            const int inside = base >= 0 && base + 6 * d <= width;
            for (long rho = 0; rho < d; rho += WF_WIDTH) {
                const float *x = src + base + rho;
                long stride = d;
                if (!inside) {
                    for (long i = 0; i < 6; i++)
                        for (long l = 0; l < WF_WIDTH; l++) {
                            const long j = base + i * d + rho + l;
                            edge[i * WF_WIDTH + l] = j >= 0 && j < width ? src[j] : 0.0f;
                        }
                    x = edge; stride = WF_WIDTH;
                }
                WF_NAME(wf_wino_input_math)(wf_load(x, all), wf_load(x + stride, all), wf_load(x + 2 * stride, all),
                                            wf_load(x + 3 * stride, all), wf_load(x + 4 * stride, all), wf_load(x + 5 * stride, all),
                                            g * d + rho, out, pointStride, all);
            }
        }
    }
}

WF_TARGET void WF_NAME(wf_wino_input)(const float *row, long channels, long rowStride, long width, long j0, long d, long q,
                                      float *v, long pointStride, long ldv, float *split) {
    if (d % WF_WIDTH == 0) {
        WF_NAME(wf_wino_input_runs)(row, channels, rowStride, width, j0, d, q, v, pointStride, ldv);
        return;
    }
    const long nt = q * d, phase = (q + 2) * d;
    long lo, hi;
    WF_NAME(wf_wino_inner_groups)(j0, d, q, width, &lo, &hi);
    for (long c = 0; c < channels; c++) {
        const float *src = row + c * rowStride;
        for (long qq = 0; qq < q + 2; qq++) {
            if (qq == lo && hi > lo) { qq = hi - 1; continue; }
            const long start = j0 + 4 * (qq - 1) * d;
            if (start + 4 * d <= 0 || start >= width) { // wholly outside the row: zeros
                for (long p = 0; p < 4; p++)
                    for (long rho = 0; rho < d; rho++) split[p * phase + qq * d + rho] = 0.0f;
                continue;
            }
            for (long p = 0; p < 4; p++)
                for (long rho = 0; rho < d; rho++) {
                    const long j = start + p * d + rho;
                    split[p * phase + qq * d + rho] = j >= 0 && j < width ? src[j] : 0.0f;
                }
        }
        if (hi > lo) WF_NAME(wf_wino_split)(src + j0 + 4 * (lo - 1) * d, d, hi - lo, split + lo * d, phase);
        const float *p0 = split, *p1 = split + phase, *p2 = split + 2 * phase, *p3 = split + 3 * phase;
        float *out = v + c * ldv;
#define BODY(m) WF_NAME(wf_wino_input_cols)(p0, p1, p2, p3, d, t, out, pointStride, m)
        WF_WINO_LOOP(t, nt, BODY);
#undef BODY
    }
}

/// One vector of tiles t of the output transform: the 4 outputs y0 ... y3.
static inline WF_TARGET void WF_NAME(wf_wino_output_cols)(const float *m0, long pointStride, long t, wf_v y[4], wf_mask k) {
    const wf_v two = wf_set1(2.0f), four = wf_set1(4.0f), eight = wf_set1(8.0f);
    const wf_v v1 = wf_load(m0 + pointStride + t, k), v2 = wf_load(m0 + 2 * pointStride + t, k);
    const wf_v v3 = wf_load(m0 + 3 * pointStride + t, k), v4 = wf_load(m0 + 4 * pointStride + t, k);
    const wf_v a = wf_add(v1, v2), b = wf_sub(v1, v2), e = wf_add(v3, v4), f = wf_sub(v3, v4);
    y[0] = wf_add(wf_add(wf_load(m0 + t, k), a), e);
    y[1] = wf_fmadd(two, f, b);
    y[2] = wf_fmadd(four, e, a);
    y[3] = wf_add(wf_fmadd(eight, f, b), wf_load(m0 + 5 * pointStride + t, k));
}

static inline WF_TARGET void WF_NAME(wf_wino_output_scratch)(const float *m0, long pointStride, long t, float *scratch, long nt, wf_mask k) {
    wf_v y[4];
    WF_NAME(wf_wino_output_cols)(m0, pointStride, t, y, k);
    for (int p = 0; p < 4; p++) wf_store(scratch + p * nt + t, k, y[p]);
}

WF_TARGET void WF_NAME(wf_wino_output)(const float *mm, long pointStride, long ldm, long rows, long d, long q, long n,
                                       float *y, long ldy, float *scratch) {
    const long nt = q * d;
    long full = n / (4 * d);
    if (full > q) full = q;
    const wf_mask all = wf_tail_mask(WF_WIDTH);
    for (long o = 0; o < rows; o++) {
        const float *m0 = mm + o * ldm;
        float *dst = y + o * ldy;
        if (d % WF_WIDTH == 0) {
            // Runs of whole vectors: each tile's 4 outputs straight into y, no scratch.
            for (long g = 0; g < q; g++)
                for (long rho = 0; rho < d; rho += WF_WIDTH) {
                    wf_v out[4];
                    WF_NAME(wf_wino_output_cols)(m0, pointStride, g * d + rho, out, all);
                    for (long p = 0; p < 4; p++) {
                        const long j = (4 * g + p) * d + rho, left = n - j; // columns of the block from j on
                        if (left <= 0) break;
                        const wf_mask kp = left >= WF_WIDTH ? all : wf_tail_mask(left);
                        wf_store(dst + j, kp, wf_add(wf_load(dst + j, kp), out[p]));
                    }
                }
            continue;
        }
#define BODY(k) WF_NAME(wf_wino_output_scratch)(m0, pointStride, t, scratch, nt, k)
        WF_WINO_LOOP(t, nt, BODY);
#undef BODY
        WF_NAME(wf_wino_merge_add)(scratch, nt, d, full, dst);
        for (long g = full; g < q; g++)
            for (long p = 0; p < 4; p++)
                for (long rho = 0; rho < d; rho++) {
                    const long j = (4 * g + p) * d + rho;
                    if (j < n) dst[j] += scratch[p * nt + g * d + rho];
                }
    }
}

/// One vector of tiles t of the output transform's transpose: dM from the
/// gradients a0 ... a3 of the tiles' 4 outputs.
static inline WF_TARGET void WF_NAME(wf_wino_output_grad_math)(wf_v a0, wf_v a1, wf_v a2, wf_v a3, long t, float *m0, long pointStride,
                                                             wf_mask k) {
    const wf_v two = wf_set1(2.0f), four = wf_set1(4.0f), eight = wf_set1(8.0f);
    const wf_v a = wf_add(a0, a2), b = wf_add(a1, a3), e = wf_fmadd(four, a2, a0), f = wf_fmadd(eight, a3, wf_mul(two, a1));
    wf_store(m0 + t, k, a0);
    wf_store(m0 + pointStride + t, k, wf_add(a, b));
    wf_store(m0 + 2 * pointStride + t, k, wf_sub(a, b));
    wf_store(m0 + 3 * pointStride + t, k, wf_add(e, f));
    wf_store(m0 + 4 * pointStride + t, k, wf_sub(e, f));
    wf_store(m0 + 5 * pointStride + t, k, a3);
}

/// wf_wino_output_grad_math on y0 ... y3 split into scratch (phase p at scratch + p nt).
static inline WF_TARGET void WF_NAME(wf_wino_output_grad_cols)(const float *scratch, long nt, long t, float *m0, long pointStride, wf_mask k) {
    WF_NAME(wf_wino_output_grad_math)(wf_load(scratch + t, k), wf_load(scratch + nt + t, k), wf_load(scratch + 2 * nt + t, k),
                                      wf_load(scratch + 3 * nt + t, k), t, m0, pointStride, k);
}

WF_TARGET void WF_NAME(wf_wino_output_grad)(const float *dy, long ldy, long rows, long d, long q, long n,
                                            float *dm, long pointStride, long ldm, float *scratch) {
    const long nt = q * d;
    long full = n / (4 * d);
    if (full > q) full = q;
    const wf_mask all = wf_tail_mask(WF_WIDTH);
    for (long o = 0; o < rows; o++) {
        const float *src = dy + o * ldy;
        if (d % WF_WIDTH == 0) {
            // Runs of whole vectors: each tile's 4 output gradients read straight from dy (zero past n), no split.
            float *m0 = dm + o * ldm;
            for (long g = 0; g < q; g++)
                for (long rho = 0; rho < d; rho += WF_WIDTH) {
                    wf_v a[4];
                    for (long p = 0; p < 4; p++) {
                        const long j = (4 * g + p) * d + rho, left = n - j; // columns of the block from j on
                        a[p] = left <= 0 ? wf_zero() : wf_load(src + j, left >= WF_WIDTH ? all : wf_tail_mask(left));
                    }
                    WF_NAME(wf_wino_output_grad_math)(a[0], a[1], a[2], a[3], g * d + rho, m0, pointStride, all);
                }
            continue;
        }
        WF_NAME(wf_wino_split)(src, d, full, scratch, nt);
        for (long g = full; g < q; g++)
            for (long p = 0; p < 4; p++)
                for (long rho = 0; rho < d; rho++) {
                    const long j = (4 * g + p) * d + rho;
                    scratch[p * nt + g * d + rho] = j < n ? src[j] : 0.0f;
                }
        float *m0 = dm + o * ldm;
#define BODY(k) WF_NAME(wf_wino_output_grad_cols)(scratch, nt, t, m0, pointStride, k)
        WF_WINO_LOOP(t, nt, BODY);
#undef BODY
    }
}

/// One vector of tiles t of the input transform's transpose: the gradient
/// of each tile's 6 inputs (B times dV) into gi[0 ... 5].
static inline WF_TARGET void WF_NAME(wf_wino_input_grad_math)(const float *v0, long pointStride, long t, wf_v gi[6], wf_mask k) {
    const wf_v two = wf_set1(2.0f), four = wf_set1(4.0f), five = wf_set1(5.0f);
    const wf_v a0 = wf_load(v0 + t, k), a1 = wf_load(v0 + pointStride + t, k), a2 = wf_load(v0 + 2 * pointStride + t, k);
    const wf_v a3 = wf_load(v0 + 3 * pointStride + t, k), a4 = wf_load(v0 + 4 * pointStride + t, k);
    const wf_v a5 = wf_load(v0 + 5 * pointStride + t, k);
    const wf_v s12 = wf_add(a1, a2), s34 = wf_add(a3, a4);
    gi[0] = wf_mul(four, a0);
    gi[1] = wf_fmadd(four, wf_add(wf_sub(a2, a1), a5), wf_mul(two, wf_sub(a4, a3)));
    gi[2] = wf_sub(wf_fnmadd(four, s12, wf_mul(wf_set1(-5.0f), a0)), s34);
    gi[3] = wf_fnmadd(five, a5, wf_fmadd(two, wf_sub(a3, a4), wf_sub(a1, a2)));
    gi[4] = wf_add(wf_add(a0, s12), s34);
    gi[5] = a5;
}

/// wf_wino_input_grad_math into g[6][nt].
static inline WF_TARGET void WF_NAME(wf_wino_input_grad_cols)(const float *v0, long pointStride, long t, float *g, long nt, wf_mask k) {
    wf_v gi[6];
    WF_NAME(wf_wino_input_grad_math)(v0, pointStride, t, gi, k);
    for (int i = 0; i < 6; i++) wf_store(g + i * nt + t, k, gi[i]);
}

/// dst[i] += src[i], i < count.
static inline WF_TARGET void WF_NAME(wf_wino_add)(float *dst, const float *src, long count) {
#define BODY(m) wf_store(dst + i, m, wf_add(wf_load(dst + i, m), wf_load(src + i, m)))
    WF_WINO_LOOP(i, count, BODY);
#undef BODY
}

WF_TARGET void WF_NAME(wf_wino_input_grad)(const float *dv, long pointStride, long ldv, long channels, long d, long q,
                                           float *dx, long rowStride, long width, long j0, float *split, float *scratch) {
    if (d % WF_WIDTH == 0) {
        // Runs of whole vectors: each tile's 6 input gradients added straight onto the row, no phases.
        const wf_mask all = wf_tail_mask(WF_WIDTH);
        for (long c = 0; c < channels; c++) {
            const float *v0 = dv + c * ldv;
            float *dst = dx + c * rowStride;
            for (long g = 0; g < q; g++) {
                const long base = j0 + (4 * g - 1) * d; // input 0's first column
                const int inside = base >= 0 && base + 6 * d <= width;
                for (long rho = 0; rho < d; rho += WF_WIDTH) {
                    wf_v gi[6];
                    WF_NAME(wf_wino_input_grad_math)(v0, pointStride, g * d + rho, gi, all);
                    for (long i = 0; i < 6; i++) {
                        const long j = base + i * d + rho;
                        if (inside) {
                            wf_store(dst + j, all, wf_add(wf_load(dst + j, all), gi[i]));
                            continue;
                        }
                        float lanes[WF_WIDTH];
                        wf_store(lanes, all, gi[i]);
                        for (long l = 0; l < WF_WIDTH; l++)
                            if (j + l >= 0 && j + l < width) dst[j + l] += lanes[l];
                    }
                }
            }
        }
        return;
    }
    const long nt = q * d, phase = (q + 2) * d;
    long lo, hi;
    WF_NAME(wf_wino_inner_groups)(j0, d, q, width, &lo, &hi);
    float *g0 = scratch, *g1 = scratch + nt, *g2 = scratch + 2 * nt, *g3 = scratch + 3 * nt, *g4 = scratch + 4 * nt, *g5 = scratch + 5 * nt;
    for (long c = 0; c < channels; c++) {
        const float *v0 = dv + c * ldv;
#define BODY(k) WF_NAME(wf_wino_input_grad_cols)(v0, pointStride, t, scratch, nt, k)
        WF_WINO_LOOP(t, nt, BODY);
#undef BODY
        // Onto the phases (input 0: phase 3 at t; 1 ... 4: phases 0 ... 3 at t + d; 5: phase 0 at t + 2d).
#define BODY(m) wf_store(split + i, m, wf_zero())
        WF_WINO_LOOP(i, 4 * phase, BODY);
#undef BODY
        float *p0 = split, *p1 = split + phase, *p2 = split + 2 * phase, *p3 = split + 3 * phase;
        WF_NAME(wf_wino_add)(p3, g0, nt);
        WF_NAME(wf_wino_add)(p0 + d, g1, nt);
        WF_NAME(wf_wino_add)(p1 + d, g2, nt);
        WF_NAME(wf_wino_add)(p2 + d, g3, nt);
        WF_NAME(wf_wino_add)(p3 + d, g4, nt);
        WF_NAME(wf_wino_add)(p0 + 2 * d, g5, nt);
        // Phases back onto the row, inside 0 ..< width.
        float *dst = dx + c * rowStride;
        if (hi > lo) WF_NAME(wf_wino_merge_add)(split + lo * d, phase, d, hi - lo, dst + j0 + 4 * (lo - 1) * d);
        for (long qq = 0; qq < q + 2; qq++) {
            if (qq == lo && hi > lo) { qq = hi - 1; continue; }
            const long start = j0 + 4 * (qq - 1) * d;
            if (start + 4 * d <= 0 || start >= width) continue; // wholly outside the row
            for (long p = 0; p < 4; p++)
                for (long rho = 0; rho < d; rho++) {
                    const long j = start + p * d + rho;
                    if (j >= 0 && j < width) dst[j] += split[p * phase + qq * d + rho];
                }
        }
    }
}
