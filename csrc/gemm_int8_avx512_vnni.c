/* int8 GEMM, AVX-512 VNNI variant: vpdpbusd (u8 x s8, four products summed per int32 lane).
 * Tile 6 x 64: 24 zmm accumulators, 4 weight vectors, broadcasts folded into the FMA. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
#include <immintrin.h>

#include "gemm_int8_apack.h"
#include "lowbit.h"

#define LB_ENTRY lb_gemm_int8_avx512_vnni
#define MR 6
/* W is streamed from L2 once per tile; prefetching 16 quads ahead measured +3-5%. */
#define PF_DIST 4096
#define A_QUAD_BYTES 4
#define A_SIGNED_OFFSET 128
#define pack_a_quad pack_a_quad_u8
#define store_rows lb_store_rows_avx512

/* One body for both A sources: packed tiles (row stride 4, quad stride 4 MR) and rows read
 * in place (row stride lda, quad stride 4), where int8 activations get their sign bit
 * flipped in-register (FLIP) instead of during packing. */
static inline __attribute__((always_inline)) void ukernel_rows(const int R, const int FLIP,
                                                               int64_t kq, const uint8_t *a,
                                                               int64_t rs, int64_t qs,
                                                               const int8_t *w, int32_t *c) {
    __m512i acc[MR][4];
    const __m512i flip = _mm512_set1_epi32((int)0x80808080u);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_si512();
    for (int64_t q = 0; q < kq; ++q, a += qs, w += 256) {
        _mm_prefetch((const char *)(w + PF_DIST), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + PF_DIST + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + PF_DIST + 128), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + PF_DIST + 192), _MM_HINT_T0);
        const __m512i w0 = _mm512_load_si512(w), w1 = _mm512_load_si512(w + 64);
        const __m512i w2 = _mm512_load_si512(w + 128), w3 = _mm512_load_si512(w + 192);
#pragma GCC unroll 6
        for (int i = 0; i < R; ++i) {
            int32_t ai32;
            memcpy(&ai32, a + i * rs, 4);
            __m512i ai = _mm512_set1_epi32(ai32);
            if (FLIP) ai = _mm512_xor_si512(ai, flip);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], ai, w0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], ai, w1);
            acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], ai, w2);
            acc[i][3] = _mm512_dpbusd_epi32(acc[i][3], ai, w3);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) _mm512_store_si512(c + 64 * i + 16 * v, acc[i][v]);
}

#define ROWS_CASES(FLIP, a, rs, qs)                              \
    switch (mr) {                                                \
        case 1: ukernel_rows(1, FLIP, kq, a, rs, qs, w, c); break; \
        case 2: ukernel_rows(2, FLIP, kq, a, rs, qs, w, c); break; \
        case 3: ukernel_rows(3, FLIP, kq, a, rs, qs, w, c); break; \
        case 4: ukernel_rows(4, FLIP, kq, a, rs, qs, w, c); break; \
        case 5: ukernel_rows(5, FLIP, kq, a, rs, qs, w, c); break; \
        default: ukernel_rows(6, FLIP, kq, a, rs, qs, w, c); break; \
    }

static void ukernel(int mr, int64_t kq, const uint8_t *a, const int8_t *w, int32_t *c) {
    ROWS_CASES(0, a, 4, 4 * MR)
}

/* A read in place: rows lda bytes apart; only when K % 4 == 0 (no partial quad to pad). */
#define A_DIRECT 1
static void ukernel_direct(int mr, int64_t kq, const uint8_t *a, int64_t lda, int a_signed,
                           const int8_t *w, int32_t *c) {
    if (a_signed) {
        ROWS_CASES(1, a, lda, 4)
    } else {
        ROWS_CASES(0, a, lda, 4)
    }
}

#include "gemm_int8_frame.inc"
