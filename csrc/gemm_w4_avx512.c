/* int4-weight GEMM microkernels, AVX-512 (F/BW/DQ/VL). Contract: csrc/lowbit.h (lb_w4_tile);
 * layout and nibble order: csrc/gemm_w4.c.
 *
 * gemm_w4a16: the 32-bit word of a column holds 8 nibbles of one K block, so per K block and
 * 16 columns one 64-byte load, then for each nibble position i a shift (vpsrld 4i) and a
 * 16-entry table lookup vpermps, which reads only the low 4 bits of each lane: nibble ->
 * float (n - 8 for int4, so no zero-point term; n for uint4, whose zero point is applied to
 * the group sum as s (sum x n - z sum x)). Then one FMA per row with x[r][K] broadcast from
 * the packed activations (one pointer, constant offsets).
 * The tile is R rows x SV vectors of 16 columns of float32 accumulators per group, flushed
 * into c with the group's scale:
 *
 *        w: K block q, 16 columns per vector         x: row r, K 8q + KPOS[i]
 *     +-------+-------+-------+-------+
 *     | v0    | v1    | v2    | v3    |  -> vpsrld 4i, vpermps -> 16 floats each
 *     +-------+-------+-------+-------+
 *   r0  acc    acc     acc     acc      += x[r0][k] * w
 *   ..
 *
 * Rows 1..4: one strip of SV = 4 vectors (64 columns); 5..8: two strips of 2 (at most 16
 * accumulators, each nibble position's decode shared by R rows and the broadcast of x by 2
 * vectors). A single row splits its accumulators by nibble parity (8 independent FMA chains
 * hide the FMA latency). Measured on Zen 5: the vpermps decode, not the FMAs, bounds the
 * GEMV (M = 1) rate; at M = 8 the FMAs do (one thread, best of 30 calls on a shared
 * machine: 95% of the fp32_avx512_fma peak loop, 83% with four strips of 1).
 *
 * gemm_w4a8: gemm_w4a8_avx512.inc with vpmaddubsw (u8 nibble x s8 activation pairs; at most
 * 2 * 15 * 128 per pair, so never saturating) and vpmaddwd by ones. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

/* Software prefetch distance into the weight stream (bytes ahead). */
#ifndef W4_PF_DIST
#define W4_PF_DIST 4096
#endif

#include "gemm_w4_avx512.h"

static inline __attribute__((always_inline)) void w4a16_rows(const int R, const int SV,
                                                             const int ZP,
                                                             const lb_w4_tile *t) {
    const int SPLIT = R == 1;
    const __m512 lut = ZP ? _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
                          : _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    const int64_t gb = t->group_blocks;
    for (int64_t gg = 0; gg < t->groups; ++gg) {
        const uint8_t *wg = t->w + gg * gb * 256;
        const float *xg = (const float *)t->a + gg * gb * 8 * R; /* packed: [b][i][r] */
        for (int v0 = 0; v0 < 4; v0 += SV) {
            __m512 acc[LB_W4_MR][4], acc2[4];
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
                for (int v = 0; v < SV; ++v) acc[r][v] = _mm512_setzero_ps();
#pragma GCC unroll 4
            for (int v = 0; v < SV; ++v) acc2[v] = _mm512_setzero_ps();
            /* unrolled by 2: the GEMV (one row) runs 2-4% faster than rolled (Zen 5) */
#pragma GCC unroll 2
            for (int64_t b = 0; b < gb; ++b) {
                if (v0 == 0) prefetch_block(wg + b * 256);
                __m512i wv[4];
#pragma GCC unroll 4
                for (int v = 0; v < SV; ++v)
                    wv[v] = _mm512_load_si512(wg + b * 256 + 64 * (v0 + v));
#pragma GCC unroll 8
                for (int i = 0; i < 8; ++i) {
                    __m512 d[4];
#pragma GCC unroll 4
                    for (int v = 0; v < SV; ++v)
                        d[v] = _mm512_permutexvar_ps(i ? _mm512_srli_epi32(wv[v], 4 * i) : wv[v],
                                                     lut);
#pragma GCC unroll 8
                    for (int r = 0; r < R; ++r) {
                        const __m512 xb = _mm512_set1_ps(xg[(8 * b + i) * R + r]);
#pragma GCC unroll 4
                        for (int v = 0; v < SV; ++v) {
                            if (SPLIT && (i & 1))
                                acc2[v] = _mm512_fmadd_ps(xb, d[v], acc2[v]);
                            else
                                acc[r][v] = _mm512_fmadd_ps(xb, d[v], acc[r][v]);
                        }
                    }
                }
            }
            W4A16_STORE_GROUP(R, SV, SPLIT, ZP, t, gg, v0, acc, acc2);
        }
    }
}

void lb_w4a16_ukernel_avx512(const lb_w4_tile *t) {
    if (t->zeros) {
        W4A16_ROW_CASES(w4a16_rows, 2, 2, 1, t)
    } else {
        W4A16_ROW_CASES(w4a16_rows, 2, 2, 0, t)
    }
}

/* gemm_w4a8 without VNNI: two vpmaddubsw (exact int16), summed (|sum| <= 4 * 15 * 128),
 * then vpmaddwd by ones into int32. */
static inline __attribute__((always_inline)) __m512i dot_maddubs(__m512i acc, __m512i lo,
                                                                 __m512i hi, __m512i a0,
                                                                 __m512i a1) {
    const __m512i p = _mm512_add_epi16(_mm512_maddubs_epi16(lo, a0), _mm512_maddubs_epi16(hi, a1));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_set1_epi16(1)));
}

#define W4A8_ENTRY lb_w4a8_ukernel_avx512
#define DOT dot_maddubs
#define PREFETCH_BLOCK prefetch_block

#include "gemm_w4a8_avx512.inc"
