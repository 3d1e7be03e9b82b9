/* int8 GEMM, AVX-512BW variant (no VNNI): exact 16-bit products with vpmaddwd.
 * vpmaddubsw would be faster but saturates (255 * 127 * 2 > 32767), so it is not used.
 * Each 32-bit weight lane (r0 r1 r2 r3) is split into even (r0, r2) and odd (r1, r3)
 * sign-extended 16-bit pairs, matching the activation's (a0, a2) / (a1, a3) pairs. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
#include <immintrin.h>

#include "gemm_int8_apack.h"
#include "lowbit.h"

#define LB_ENTRY lb_gemm_int8_avx512
#define MR 4
#define A_QUAD_BYTES 8
#define A_SIGNED_OFFSET 0
#define pack_a_quad pack_a_quad_i16pairs
#define store_rows lb_store_rows_avx512

static inline __attribute__((always_inline)) void ukernel_rows(const int R, int64_t kq,
                                                               const uint8_t *a, const int8_t *w,
                                                               int32_t *c) {
    __m512i acc[MR][4];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_si512();
    for (int64_t q = 0; q < kq; ++q, a += 8 * MR, w += 256) {
        __m512i we[4], wo[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
            const __m512i wv = _mm512_load_si512(w + 64 * v);
            we[v] = _mm512_srai_epi16(_mm512_slli_epi16(wv, 8), 8);
            wo[v] = _mm512_srai_epi16(wv, 8);
        }
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            int32_t pair[2];
            memcpy(pair, a + 8 * i, 8);
            const __m512i ae = _mm512_set1_epi32(pair[0]), ao = _mm512_set1_epi32(pair[1]);
#pragma GCC unroll 4
            for (int v = 0; v < 4; ++v)
                acc[i][v] = _mm512_add_epi32(
                    acc[i][v],
                    _mm512_add_epi32(_mm512_madd_epi16(we[v], ae), _mm512_madd_epi16(wo[v], ao)));
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) _mm512_store_si512(c + 64 * i + 16 * v, acc[i][v]);
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
