/* 2:4 sparse GEMM microkernels, AVX2 (+ FMA for float32). Contract: lowbit.h (lb_s24_tile);
 * layout: gemm_sparse24.c.
 *
 * A ymm register holds 8 columns, so the 64-column panel is walked in 4 strips of 16 columns
 * (2 vectors), re-reading the tile's (L1-resident) activations for each strip; rows <= 4
 * keep 8 accumulators of the 16 registers.
 * int8: vpshufb gathers each column's 4 activations of a step from the step's 8 broadcast to
 * both 128-bit lanes (control ((word >> 2 s) & 0x03030303) | 0x04040000), then even and odd
 * bytes, sign-extended to 16 bits, are multiplied by vpmaddwd (exact, int8 operand).
 * float32: vpermps gathers from the 8 floats of a step (index ((word >> (8 r + 2 s)) & 3) |
 * 4 (r / 2)), then one FMA per row. */
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

#define STRIP 16 /* columns per strip */

static inline __attribute__((always_inline)) __m256i sext_even(__m256i x) {
    return _mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8);
}

static inline __attribute__((always_inline)) void s8_rows(const int R, const lb_s24_tile *t) {
    const __m256i two_bits = _mm256_set1_epi32(0x03030303);
    const __m256i second_group = _mm256_set1_epi32(0x04040000);
    const __m256i flip = _mm256_set1_epi32((int)t->a_flip);
    for (int strip = 0; strip < LB_S24_NR / STRIP; ++strip) {
        __m256i acc[LB_S24_MR_AVX2][2];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
        const int8_t *w = (const int8_t *)t->w + 4 * STRIP * strip;
        const uint32_t *meta = t->meta + STRIP * strip;
        const uint8_t *a = t->a;
        for (int64_t b = 0; b < t->blocks; ++b, w += 1024, meta += LB_S24_NR, a += t->a_block) {
#pragma GCC unroll 1
            for (int s = 0; s < 4; ++s) {
                /* vector by vector: one control and one weight pair live at a time (with the
                 * step loop unrolled GCC hoists all steps' controls and spills) */
#pragma GCC unroll 2
                for (int v = 0; v < 2; ++v) {
                    const __m256i words = _mm256_loadu_si256((const __m256i *)(meta + 8 * v));
                    const __m256i idx = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srl_epi32(words, _mm_cvtsi32_si128(2 * s)),
                                         two_bits),
                        second_group);
                    const __m256i wv = _mm256_loadu_si256((const __m256i *)(w + 256 * s + 32 * v));
                    const __m256i we = sext_even(wv), wo = _mm256_srai_epi16(wv, 8);
#pragma GCC unroll 4
                    for (int r = 0; r < R; ++r) {
                        int64_t a8;
                        memcpy(&a8, a + r * t->a_row + 8 * s, 8);
                        const __m256i g = _mm256_shuffle_epi8(
                            _mm256_xor_si256(_mm256_set1_epi64x(a8), flip), idx);
                        acc[r][v] = _mm256_add_epi32(
                            acc[r][v], _mm256_add_epi32(_mm256_madd_epi16(sext_even(g), we),
                                                        _mm256_madd_epi16(_mm256_srai_epi16(g, 8),
                                                                          wo)));
                    }
                }
            }
        }
        int32_t *c = (int32_t *)t->c + STRIP * strip;
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            _mm256_store_si256((__m256i *)(c + LB_S24_NR * r), acc[r][0]);
            _mm256_store_si256((__m256i *)(c + LB_S24_NR * r + 8), acc[r][1]);
        }
    }
}

void lb_s24_s8_ukernel_avx2(const lb_s24_tile *t) {
    switch (t->rows) {
        case 1: s8_rows(1, t); break;
        case 2: s8_rows(2, t); break;
        case 3: s8_rows(3, t); break;
        default: s8_rows(LB_S24_MR_AVX2, t); break;
    }
}

static inline __attribute__((always_inline)) void f32_rows(const int R, const lb_s24_tile *t) {
    const __m256i two_bits = _mm256_set1_epi32(3);
    for (int strip = 0; strip < LB_S24_NR / STRIP; ++strip) {
        __m256 acc[LB_S24_MR_AVX2][2];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        const float *w = (const float *)t->w + STRIP * strip;
        const uint32_t *meta = t->meta + STRIP * strip;
        const float *a = t->a;
        for (int64_t b = 0; b < t->blocks; ++b, w += 1024, meta += LB_S24_NR, a += t->a_block) {
#pragma GCC unroll 1
            for (int u = 0; u < 16; ++u) {
                const int s = u >> 2, r = u & 3;
                const __m128i shift = _mm_cvtsi32_si128(8 * r + 2 * s);
                const __m256i second_group = _mm256_set1_epi32(4 * (r >> 1));
#pragma GCC unroll 2
                for (int v = 0; v < 2; ++v) {
                    const __m256i words = _mm256_loadu_si256((const __m256i *)(meta + 8 * v));
                    const __m256i idx = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srl_epi32(words, shift), two_bits), second_group);
                    const __m256 wv = _mm256_loadu_ps(w + LB_S24_NR * u + 8 * v);
#pragma GCC unroll 4
                    for (int i = 0; i < R; ++i)
                        acc[i][v] = _mm256_fmadd_ps(
                            _mm256_permutevar8x32_ps(_mm256_loadu_ps(a + i * t->a_row + 8 * s),
                                                     idx),
                            wv, acc[i][v]);
                }
            }
        }
        float *c = (float *)t->c + STRIP * strip;
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            _mm256_store_ps(c + LB_S24_NR * i, acc[i][0]);
            _mm256_store_ps(c + LB_S24_NR * i + 8, acc[i][1]);
        }
    }
}

void lb_s24_f32_ukernel_avx2(const lb_s24_tile *t) {
    switch (t->rows) {
        case 1: f32_rows(1, t); break;
        case 2: f32_rows(2, t); break;
        case 3: f32_rows(3, t); break;
        default: f32_rows(LB_S24_MR_AVX2, t); break;
    }
}
