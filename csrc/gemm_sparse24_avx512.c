/* 2:4 sparse GEMM microkernels, AVX-512 (F, BW, DQ, VL). Contract: lowbit.h (lb_s24_tile);
 * layout: gemm_sparse24.c.
 *
 * int8 (body: gemm_sparse24_s8_avx512.inc): without VNNI, the gathered activations (int8
 * operand) and kept values are split into their even and odd bytes sign-extended to 16 bits
 * and multiplied by vpmaddwd (exact: |a w| <= 2^14, two per 32-bit lane).
 * float32: per kept value u = 4 s + r and 16 columns, vpermps gathers each column's
 * activation from the 16-float window of the block's groups 4 h .. 4 h + 3 (h = s / 2) with
 * the index ((word >> (8 r + 2 s)) & 3) | 4 (g mod 4), g = 2 s + r / 2 (one vpsrld and one
 * vpternlogd, shared by the tile's rows), then one FMA per row. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

static inline __attribute__((always_inline)) __m512i dot_madd(__m512i acc, __m512i g,
                                                              __m512i w) {
    const __m512i ge = _mm512_srai_epi16(_mm512_slli_epi16(g, 8), 8);
    const __m512i we = _mm512_srai_epi16(_mm512_slli_epi16(w, 8), 8);
    const __m512i go = _mm512_srai_epi16(g, 8), wo = _mm512_srai_epi16(w, 8);
    return _mm512_add_epi32(acc, _mm512_add_epi32(_mm512_madd_epi16(ge, we),
                                                  _mm512_madd_epi16(go, wo)));
}

#define S8_ENTRY lb_s24_s8_ukernel_avx512
#define S8_MR LB_S24_MR_AVX512
#define S8_CONTROLS lb_s24_s8_controls_avx512
#define S8_VPERMB 0 /* vpshufb: AVX512BW only, so CPUs without VBMI get this variant */
#define DOT(acc, g, w) dot_madd(acc, g, w)

#include "gemm_sparse24_s8_avx512.inc"

static inline __attribute__((always_inline)) void f32_rows(const int R, const lb_s24_tile *t) {
    __m512 acc[LB_S24_MR_AVX512][4];
    const __m512i two_bits = _mm512_set1_epi32(3);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
    const float *w = t->w;
    const uint32_t *meta = t->meta;
    const float *a = t->a;
    for (int64_t b = 0; b < t->blocks; ++b, w += 1024, meta += LB_S24_NR, a += t->a_block) {
        /* Rolled (variable shifts): unrolled, GCC hoists all 16 controls and spills. */
#pragma GCC unroll 1
        for (int u = 0; u < 16; ++u) {
            const int s = u >> 2, r = u & 3, g = 2 * s + (r >> 1);
            const char *pw = (const char *)(w + S24_PF_BLOCKS * 1024 + 64 * u);
            _mm_prefetch(pw, _MM_HINT_T0);
            _mm_prefetch(pw + 64, _MM_HINT_T0);
            _mm_prefetch(pw + 128, _MM_HINT_T0);
            _mm_prefetch(pw + 192, _MM_HINT_T0);
            if (r == 0)
                _mm_prefetch((const char *)(meta + S24_PF_BLOCKS * LB_S24_NR + 16 * s),
                             _MM_HINT_T0);
            const __m128i shift = _mm_cvtsi32_si128(8 * r + 2 * s);
            const __m512i window_pos = _mm512_set1_epi32(4 * (g & 3));
            const float *win = a + 16 * (g >> 2);
#pragma GCC unroll 4
            for (int v = 0; v < 4; ++v) {
                const __m512i idx = _mm512_ternarylogic_epi32(
                    _mm512_srl_epi32(_mm512_load_si512(meta + 16 * v), shift), two_bits,
                    window_pos, 0xEA); /* (x & 3) | window_pos */
                const __m512 wv = _mm512_load_ps(w + 64 * u + 16 * v);
#pragma GCC unroll 8
                for (int i = 0; i < R; ++i)
                    acc[i][v] = _mm512_fmadd_ps(
                        _mm512_permutexvar_ps(idx, _mm512_loadu_ps(win + i * t->a_row)), wv,
                        acc[i][v]);
            }
        }
    }
    float *c = t->c;
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) _mm512_store_ps(c + LB_S24_NR * i + 16 * v, acc[i][v]);
}

void lb_s24_f32_ukernel_avx512(const lb_s24_tile *t) {
    switch (t->rows) {
        case 1: f32_rows(1, t); break;
        case 2: f32_rows(2, t); break;
        case 3: f32_rows(3, t); break;
        default: f32_rows(LB_S24_MR_AVX512, t); break;
    }
}
