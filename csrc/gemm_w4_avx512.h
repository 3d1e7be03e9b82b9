/* Pieces shared by the AVX-512 int4 microkernels (gemm_w4_avx512.c, gemm_w4_avx512_bf16.c,
 * gemm_w4_avx512_vnni.c). Include after the file's #pragma GCC target and after defining
 * W4_PF_DIST (software prefetch distance into the weight stream, bytes). */
#ifndef LOWBIT_GEMM_W4_AVX512_H
#define LOWBIT_GEMM_W4_AVX512_H

#include <immintrin.h>

#include "lowbit.h"

/* Prefetch the 256-byte K block W4_PF_DIST bytes ahead: the hardware prefetchers stop at
 * 4 KB page boundaries, which a DRAM-bound GEMV crosses every 16 blocks. Prefetches never
 * fault, so running past the panel is harmless. */
static inline __attribute__((always_inline)) void prefetch_block(const uint8_t *wb) {
    _mm_prefetch((const char *)(wb + W4_PF_DIST), _MM_HINT_T0);
    _mm_prefetch((const char *)(wb + W4_PF_DIST + 64), _MM_HINT_T0);
    _mm_prefetch((const char *)(wb + W4_PF_DIST + 128), _MM_HINT_T0);
    _mm_prefetch((const char *)(wb + W4_PF_DIST + 192), _MM_HINT_T0);
}

/* The 16 float32 scales of group gg for columns 16v .. 16v + 15 (stored fp16 or fp32). */
static inline __attribute__((always_inline)) __m512 scale16(const lb_w4_tile *t, int64_t gg,
                                                            int v) {
    if (t->scale_f16)
        return _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)((const uint16_t *)t->scales + gg * 64 + 16 * v)));
    return _mm512_loadu_ps((const float *)t->scales + gg * 64 + 16 * v);
}

/* End of one group for vectors v0 .. v0 + SV - 1 of a w4a16 tile: subtract the zero point
 * times the activation row sum (uint4), scale, and add into the float32 tile c. acc[r][v]
 * holds the group's dot products; with SPLIT, acc2[v] holds the second half of row 0's. */
#define W4A16_STORE_GROUP(R, SV, SPLIT, ZP, t, gg, v0, acc, acc2)                            \
    do {                                                                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < (SV); ++v) {                           \
            const int col = 16 * ((v0) + v);                                               \
            const __m512 s = scale16((t), (gg), (v0) + v);                                 \
            __m512 z = _mm512_setzero_ps();                                                \
            if (ZP)                                                                        \
                z = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(                               \
                    _mm_loadu_si128((const __m128i *)((t)->zeros + (gg) * 64 + col))));     \
            _Pragma("GCC unroll 8") for (int r = 0; r < (R); ++r) {                        \
                __m512 sum = (SPLIT) ? _mm512_add_ps(acc[r][v], acc2[v]) : acc[r][v];      \
                if (ZP)                                                                    \
                    sum = _mm512_fnmadd_ps(                                                \
                        z, _mm512_set1_ps((t)->rsum[r * (t)->rsum_ld + (gg)]), sum);       \
                float *c = (t)->c + r * 64 + col;                                          \
                _mm512_store_ps(c, _mm512_fmadd_ps(s, sum, _mm512_load_ps(c)));            \
            }                                                                              \
        }                                                                                  \
    } while (0)

/* Dispatch t->rows (1..8) to ROWS(R, SV, ZP, t): rows 1..4 one strip of 4 vectors, rows 5..6
 * strips of SV_MID vectors, rows 7..8 strips of SV_WIDE (register budget: R * SV accumulators
 * plus the decoded vectors of one nibble position in 32 zmm registers). */
#define W4A16_ROW_CASES(ROWS, SV_MID, SV_WIDE, ZP, t)          \
    switch ((t)->rows) {                                       \
        case 1: ROWS(1, 4, ZP, t); break;                      \
        case 2: ROWS(2, 4, ZP, t); break;                      \
        case 3: ROWS(3, 4, ZP, t); break;                      \
        case 4: ROWS(4, 4, ZP, t); break;                      \
        case 5: ROWS(5, SV_MID, ZP, t); break;                 \
        case 6: ROWS(6, SV_MID, ZP, t); break;                 \
        case 7: ROWS(7, SV_WIDE, ZP, t); break;                \
        default: ROWS(8, SV_WIDE, ZP, t); break;               \
    }

#endif
