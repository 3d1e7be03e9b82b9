/* int8 GEMM, AVX2 variant: exact vpmaddwd on even/odd 16-bit pairs (see gemm_int8_avx512.c).
 * Sixteen ymm registers hold a 4 x 16 sub-tile; the 64-column panel is walked in four
 * 16-column strips, re-reading the (L1-resident) packed A strip each time. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "gemm_int8_apack.h"
#include "lowbit.h"

#define LB_ENTRY lb_gemm_int8_avx2
#define MR 4
#define A_QUAD_BYTES 8
#define A_SIGNED_OFFSET 0
#define pack_a_quad pack_a_quad_i16pairs
#define store_rows lb_store_rows_avx2

static inline __attribute__((always_inline)) void ukernel_rows(const int R, int64_t kq,
                                                               const uint8_t *a0, const int8_t *w0,
                                                               int32_t *c) {
    for (int s = 0; s < 4; ++s) {
        __m256i acc[MR][2];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
        const uint8_t *a = a0;
        const int8_t *w = w0 + 64 * s;
        for (int64_t q = 0; q < kq; ++q, a += 8 * MR, w += 256) {
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)w);
            const __m256i v1 = _mm256_loadu_si256((const __m256i *)(w + 32));
            const __m256i e0 = _mm256_srai_epi16(_mm256_slli_epi16(v0, 8), 8);
            const __m256i o0 = _mm256_srai_epi16(v0, 8);
            const __m256i e1 = _mm256_srai_epi16(_mm256_slli_epi16(v1, 8), 8);
            const __m256i o1 = _mm256_srai_epi16(v1, 8);
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) {
                int32_t pair[2];
                memcpy(pair, a + 8 * i, 8);
                const __m256i ae = _mm256_set1_epi32(pair[0]), ao = _mm256_set1_epi32(pair[1]);
                acc[i][0] = _mm256_add_epi32(
                    acc[i][0], _mm256_add_epi32(_mm256_madd_epi16(e0, ae), _mm256_madd_epi16(o0, ao)));
                acc[i][1] = _mm256_add_epi32(
                    acc[i][1], _mm256_add_epi32(_mm256_madd_epi16(e1, ae), _mm256_madd_epi16(o1, ao)));
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            _mm256_store_si256((__m256i *)(c + 64 * i + 16 * s), acc[i][0]);
            _mm256_store_si256((__m256i *)(c + 64 * i + 16 * s + 8), acc[i][1]);
        }
    }
}

static void ukernel(int mr, int64_t kq, const uint8_t *a, const int8_t *w, int32_t *c) {
    switch (mr) {
        case 1: ukernel_rows(1, kq, a, w, c); break;
        case 2: ukernel_rows(2, kq, a, w, c); break;
        case 3: ukernel_rows(3, kq, a, w, c); break;
        default: ukernel_rows(4, kq, a, w, c); break;
    }
}

#include "gemm_int8_frame.inc"
