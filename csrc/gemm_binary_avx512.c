/* Binary GEMM, AVX-512 VPOPCNTDQ variant: vpxorq + vpopcntq + vpaddq per 8 columns x 64 bits.
 * Tile 6 x 32: 24 zmm accumulators (8 int64 counts each), 4 weight vectors per word q and
 * one broadcast A word per row (see gemm_binary_frame.inc). Requires AVX512F/BW/DQ/VL (the
 * "avx512" ISA) plus AVX512_VPOPCNTDQ; lb_gemm_binary checks both before calling. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

#define LB_ENTRY lb_gemm_binary_avx512
#define MR 6

static inline uint64_t load_word(const uint64_t *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* A may be any 8-byte-strided buffer; no alignment assumed */
    return v;
}

static inline __attribute__((always_inline)) void ukernel_rows(const int R, int64_t kw,
                                                               const uint64_t *a, int64_t lda,
                                                               const uint64_t *w, int32_t *c) {
    __m512i acc[MR][4];
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_si512();
    for (int64_t q = 0; q < kw; ++q, w += LB_B_NR) {
        const __m512i w0 = _mm512_load_si512(w), w1 = _mm512_load_si512(w + 8);
        const __m512i w2 = _mm512_load_si512(w + 16), w3 = _mm512_load_si512(w + 24);
#pragma GCC unroll 6
        for (int i = 0; i < R; ++i) {
            const __m512i ai = _mm512_set1_epi64((long long)load_word(a + i * lda + q));
            acc[i][0] = _mm512_add_epi64(acc[i][0], _mm512_popcnt_epi64(_mm512_xor_si512(ai, w0)));
            acc[i][1] = _mm512_add_epi64(acc[i][1], _mm512_popcnt_epi64(_mm512_xor_si512(ai, w1)));
            acc[i][2] = _mm512_add_epi64(acc[i][2], _mm512_popcnt_epi64(_mm512_xor_si512(ai, w2)));
            acc[i][3] = _mm512_add_epi64(acc[i][3], _mm512_popcnt_epi64(_mm512_xor_si512(ai, w3)));
        }
    }
    /* Counts are at most K < 2^31: narrow the int64 lanes to int32. */
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v)
            _mm256_store_si256((__m256i *)(c + LB_B_NR * i + 8 * v),
                               _mm512_cvtepi64_epi32(acc[i][v]));
}

static void ukernel(int mr, int64_t kw, const uint64_t *a, int64_t lda, const uint64_t *w,
                    int32_t *c) {
    switch (mr) {
        case 1: ukernel_rows(1, kw, a, lda, w, c); break;
        case 2: ukernel_rows(2, kw, a, lda, w, c); break;
        case 3: ukernel_rows(3, kw, a, lda, w, c); break;
        case 4: ukernel_rows(4, kw, a, lda, w, c); break;
        case 5: ukernel_rows(5, kw, a, lda, w, c); break;
        default: ukernel_rows(6, kw, a, lda, w, c); break;
    }
}

#include "gemm_binary_frame.inc"
