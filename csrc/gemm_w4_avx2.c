/* int4-weight GEMM microkernels, AVX2 (+ FMA, F16C). Contract: csrc/lowbit.h (lb_w4_tile);
 * layout and nibble order: csrc/gemm_w4.c.
 *
 * A ymm register holds 8 columns, so a 64-column panel is 8 vectors; the tile is R rows x SV
 * vectors, SV = 8, 4, 2, 1 for R = 1, 2, 3-4, 5-8 (at most 8 accumulators of 16 registers).
 * gemm_w4a16: AVX2 has no 16-entry float lookup, so a nibble is decoded as
 * cvtdq2ps((word >> 4i) & 15) = n and the zero point (8 for int4) applied to the group sum,
 * s (sum x n - z sum x), with the frame's group sums (it computes them for this variant).
 * gemm_w4a8: lo = word & 0x0F, hi = (word >> 4) & 0x0F, two vpmaddubsw (u8 nibble x s8
 * activation, exact in int16), summed, vpmaddwd by ones into int32; then the exact integer
 * group sum minus z * rsum, scaled into the output tile. */
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

static inline __attribute__((always_inline)) __m256 scale8(const lb_w4_tile *t, int64_t gg,
                                                           int col) {
    if (t->scale_f16)
        return _mm256_cvtph_ps(
            _mm_loadu_si128((const __m128i *)((const uint16_t *)t->scales + gg * 64 + col)));
    return _mm256_loadu_ps((const float *)t->scales + gg * 64 + col);
}

static inline __attribute__((always_inline)) __m256 zero8(const lb_w4_tile *t, int64_t gg,
                                                          int col) {
    if (!t->zeros) return _mm256_set1_ps(8.0f);
    return _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(t->zeros + gg * 64 + col))));
}

/* c[r][col..col+7] += s * (acc - z * rsum[r]) */
static inline __attribute__((always_inline)) void flush(const int R, const lb_w4_tile *t,
                                                        int64_t gg, int col, const __m256 *acc) {
    const __m256 s = scale8(t, gg, col), z = zero8(t, gg, col);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        const __m256 sum = _mm256_fnmadd_ps(z, _mm256_set1_ps(t->rsum[r * t->rsum_ld + gg]),
                                            acc[r]);
        float *c = t->c + r * 64 + col;
        _mm256_store_ps(c, _mm256_fmadd_ps(s, sum, _mm256_load_ps(c)));
    }
}

static inline __attribute__((always_inline)) void w4a16_rows(const int R, const int SV,
                                                             const lb_w4_tile *t) {
    const __m256i mask = _mm256_set1_epi32(15);
    const int64_t gb = t->group_blocks;
    for (int64_t gg = 0; gg < t->groups; ++gg) {
        const uint8_t *wg = t->w + gg * gb * 256;
        const float *xg = (const float *)t->a + gg * gb * 8 * R; /* packed: [b][i][r] */
        for (int v0 = 0; v0 < 8; v0 += SV) {
            __m256 acc[8][LB_W4_MR];
#pragma GCC unroll 8
            for (int v = 0; v < SV; ++v)
#pragma GCC unroll 8
                for (int r = 0; r < R; ++r) acc[v][r] = _mm256_setzero_ps();
            for (int64_t b = 0; b < gb; ++b) {
                const __m256i *wb = (const __m256i *)(const void *)(wg + b * 256) + v0;
#pragma GCC unroll 8
                for (int i = 0; i < 8; ++i) {
                    __m256 xb[LB_W4_MR];
#pragma GCC unroll 8
                    for (int r = 0; r < R; ++r) xb[r] = _mm256_set1_ps(xg[(8 * b + i) * R + r]);
#pragma GCC unroll 8
                    for (int v = 0; v < SV; ++v) {
                        const __m256i wv = _mm256_load_si256(wb + v);
                        const __m256 d = _mm256_cvtepi32_ps(
                            _mm256_and_si256(i ? _mm256_srli_epi32(wv, 4 * i) : wv, mask));
#pragma GCC unroll 8
                        for (int r = 0; r < R; ++r)
                            acc[v][r] = _mm256_fmadd_ps(xb[r], d, acc[v][r]);
                    }
                }
            }
#pragma GCC unroll 8
            for (int v = 0; v < SV; ++v) flush(R, t, gg, 8 * (v0 + v), acc[v]);
        }
    }
}

void lb_w4a16_ukernel_avx2(const lb_w4_tile *t) {
    switch (t->rows) {
        case 1: w4a16_rows(1, 8, t); break;
        case 2: w4a16_rows(2, 4, t); break;
        case 3: w4a16_rows(3, 2, t); break;
        case 4: w4a16_rows(4, 2, t); break;
        case 5: w4a16_rows(5, 1, t); break;
        case 6: w4a16_rows(6, 1, t); break;
        case 7: w4a16_rows(7, 1, t); break;
        default: w4a16_rows(8, 1, t); break;
    }
}

static inline __attribute__((always_inline)) void w4a8_rows(const int R, const int SV,
                                                            const lb_w4_tile *t) {
    const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const int64_t gb = t->group_blocks;
    for (int64_t gg = 0; gg < t->groups; ++gg) {
        const uint8_t *wg = t->w + gg * gb * 256;
        const int32_t *ag = (const int32_t *)t->a + gg * gb * 2 * R; /* packed: [b][h][r] */
        for (int v0 = 0; v0 < 8; v0 += SV) {
            __m256i acc[8][LB_W4_MR];
#pragma GCC unroll 8
            for (int v = 0; v < SV; ++v)
#pragma GCC unroll 8
                for (int r = 0; r < R; ++r) acc[v][r] = _mm256_setzero_si256();
            for (int64_t b = 0; b < gb; ++b) {
                const __m256i *wb = (const __m256i *)(const void *)(wg + b * 256) + v0;
#pragma GCC unroll 8
                for (int v = 0; v < SV; ++v) {
                    const __m256i wv = _mm256_load_si256(wb + v);
                    const __m256i lo = _mm256_and_si256(wv, low);
                    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low);
#pragma GCC unroll 8
                    for (int r = 0; r < R; ++r) {
                        const __m256i p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, _mm256_set1_epi32(ag[2 * b * R + r])),
                            _mm256_maddubs_epi16(hi, _mm256_set1_epi32(ag[(2 * b + 1) * R + r])));
                        acc[v][r] = _mm256_add_epi32(acc[v][r], _mm256_madd_epi16(p, ones));
                    }
                }
            }
#pragma GCC unroll 8
            for (int v = 0; v < SV; ++v) {
                __m256 accf[LB_W4_MR];
#pragma GCC unroll 8
                for (int r = 0; r < R; ++r) accf[r] = _mm256_cvtepi32_ps(acc[v][r]);
                flush(R, t, gg, 8 * (v0 + v), accf);
            }
        }
    }
}

void lb_w4a8_ukernel_avx2(const lb_w4_tile *t) {
    switch (t->rows) {
        case 1: w4a8_rows(1, 4, t); break;
        case 2: w4a8_rows(2, 4, t); break;
        case 3: w4a8_rows(3, 2, t); break;
        case 4: w4a8_rows(4, 2, t); break;
        case 5: w4a8_rows(5, 1, t); break;
        case 6: w4a8_rows(6, 1, t); break;
        case 7: w4a8_rows(7, 1, t); break;
        default: w4a8_rows(8, 1, t); break;
    }
}
