/* gemm_w4a16 microkernel for bfloat16 activations, AVX-512 BF16 (registered as gemm_w4a16's
 * "avx512_vnni" variant: its dot-product one). Contract: csrc/lowbit.h (lb_w4_tile).
 *
 * vdpbf16ps adds two bfloat16 products to each float32 lane, so a column's 32-bit word of 8
 * nibbles is decoded as 16-bit halves: vpsrlw 4t, then vpermw with a 32-entry table (two
 * copies of the 16 nibble values as bfloat16, so the index bit above the nibble does not
 * matter) gives per lane the pair (v at K KPOS[t], v at K KPOS[t + 4]); the frame packed
 * the activations as the matching bfloat16 pairs. Per K block of 8 and 16 columns: 3 shifts,
 * 4 vpermw and 4 vdpbf16ps per row, against 7, 8 and 8 FMAs in the float32 kernel.
 *
 * Numerics: the weight values n - 8 (int4) or n (uint4) and the activations are exact in
 * bfloat16 and their products exact in float32; vdpbf16ps rounds to nearest even, treats
 * subnormal inputs as zero and flushes subnormal results (ref.int4_tolerance covers this;
 * every variant counts subnormal bfloat16 activations as zero).
 *
 * Tiles: rows 1..6 one strip of 4 vectors (up to 24 accumulators: 5 and 6 rows ran 15% and
 * 8% faster than as two strips of 2), 7..8 two strips of 2; one row splits its accumulators
 * by pair parity. At M = 8 the vdpbf16ps issue bounds the rate (one thread: about 90% of the
 * bf16_avx512_bf16 peak loop; with the operands in L1 the per-group scale FMAs, one per 16
 * vdpbf16ps, cost about 6% and the vpermw decode, one per 8, about 1-2%). */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

#ifndef W4_PF_DIST
#define W4_PF_DIST 2048
#endif

#include "gemm_w4_avx512.h"



/* bfloat16 bits of the small integer v (exact: |v| <= 15). */
static inline uint16_t bf16_of(int v) {
    float f = (float)v;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)(bits >> 16);
}

static inline __attribute__((always_inline)) void rows_bf16(const int R, const int SV,
                                                            const int ZP, const lb_w4_tile *t) {
    const int SPLIT = R == 1;
    uint16_t table[32];
    for (int e = 0; e < 32; ++e) table[e] = bf16_of((e & 15) - (ZP ? 0 : 8));
    const __m512i lut = _mm512_loadu_si512(table);
    const int64_t gb = t->group_blocks;
    for (int64_t gg = 0; gg < t->groups; ++gg) {
        const uint8_t *wg = t->w + gg * gb * 256;
        const int32_t *xg = (const int32_t *)t->a + gg * gb * 4 * R; /* packed: [b][t][r] */
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
#pragma GCC unroll 4
                for (int p = 0; p < 4; ++p) {
                    __m512i d[4];
#pragma GCC unroll 4
                    for (int v = 0; v < SV; ++v)
                        d[v] = _mm512_permutexvar_epi16(
                            p ? _mm512_srli_epi16(wv[v], 4 * p) : wv[v], lut);
#pragma GCC unroll 8
                    for (int r = 0; r < R; ++r) {
                        const __m512i xb = _mm512_set1_epi32(xg[(4 * b + p) * R + r]);
#pragma GCC unroll 4
                        for (int v = 0; v < SV; ++v) {
                            if (SPLIT && (p & 1))
                                acc2[v] = _mm512_dpbf16_ps(acc2[v], (__m512bh)d[v], (__m512bh)xb);
                            else
                                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)d[v],
                                                             (__m512bh)xb);
                        }
                    }
                }
            }
            W4A16_STORE_GROUP(R, SV, SPLIT, ZP, t, gg, v0, acc, acc2);
        }
    }
}

void lb_w4a16_ukernel_avx512_bf16(const lb_w4_tile *t) {
    if (t->zeros) {
        W4A16_ROW_CASES(rows_bf16, 4, 2, 1, t)
    } else {
        W4A16_ROW_CASES(rows_bf16, 4, 2, 0, t)
    }
}
