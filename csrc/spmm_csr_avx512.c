/* spmm_csr, AVX-512 (F/BW/DQ/VL) row kernels. Contract and layout: spmm_csr.h.
 *
 * int8: entries taken in pairs (a quad is two). Per 32 columns, the pair's x rows a and b
 * are sign-extended to int16 (vpmovsxbw) and interleaved (vpunpck{l,h}wd) so that each
 * int32 lane holds (a[j], b[j]); vpmaddwd with the broadcast pair (v0, v1) gives
 * a[j] v0 + b[j] v1 exactly (|.| <= 2 * 128 * 128), added in int32 (wrapping). The unpacks
 * work within 128-bit lanes, so lane L of the "lo" accumulator holds columns 8 L .. 8 L + 3
 * and of "hi" 8 L + 4 .. 8 L + 7; two block shuffles per 16 columns restore the order at the
 * end of the row. A strip is 128 columns (4 x 32: 8 accumulators); tails use masked loads.
 *
 * float32: per entry, the value broadcast times 8 vectors of 16 columns of its x row, FMA
 * into 8 accumulators (a strip of 128 columns); tails use masked loads and stores. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
#include <immintrin.h>
#include <string.h>

#include "spmm_csr.h"

#define NB 128 /* columns per strip, both dtypes */

/* int8: C chunks of 32 columns from b0, chunk ch masked by m[ch] when TAIL. */
static inline __attribute__((always_inline)) void s8_strip(const int C, const int TAIL,
                                                           const lb_spmm_csr_call *c,
                                                           int64_t i, int64_t b0,
                                                           const __mmask32 *m) {
    const lb_csr_weights *w = c->w;
    const int64_t p0 = w->row_ptr[i], p1 = w->row_ptr[i + 1];
    const int8_t *vals = (const int8_t *)w->values;
    const int32_t *idx = w->col_idx;
    const int8_t *x = (const int8_t *)c->x + b0;
    const int64_t ldx = c->ldx;
    __m512i lo[4], hi[4];
#pragma GCC unroll 4
    for (int ch = 0; ch < C; ++ch) lo[ch] = hi[ch] = _mm512_setzero_si512();
    for (int64_t p = p0; p < p1; p += 2) {
        /* the pair (v0, v1) as two int16 in one int32 lane */
        const uint32_t pair = (uint16_t)(int16_t)vals[p] | (uint32_t)(uint16_t)(int16_t)vals[p + 1] << 16;
        const __m512i wv = _mm512_set1_epi32((int32_t)pair);
        const int8_t *xa = x + idx[p] * ldx, *xb = x + idx[p + 1] * ldx;
        if (p + LB_CSR_PF < p1) {
            lb_csr_prefetch(x + idx[p + LB_CSR_PF] * ldx, (C + 1) / 2);
            lb_csr_prefetch(x + idx[p + LB_CSR_PF + 1] * ldx, (C + 1) / 2);
        }
#pragma GCC unroll 4
        for (int ch = 0; ch < C; ++ch) {
            __m256i a8, b8;
            if (TAIL) {
                a8 = _mm256_maskz_loadu_epi8(m[ch], xa + 32 * ch);
                b8 = _mm256_maskz_loadu_epi8(m[ch], xb + 32 * ch);
            } else {
                a8 = _mm256_loadu_si256((const __m256i *)(xa + 32 * ch));
                b8 = _mm256_loadu_si256((const __m256i *)(xb + 32 * ch));
            }
            const __m512i a = _mm512_cvtepi8_epi16(a8), b = _mm512_cvtepi8_epi16(b8);
            lo[ch] = _mm512_add_epi32(lo[ch], _mm512_madd_epi16(_mm512_unpacklo_epi16(a, b), wv));
            hi[ch] = _mm512_add_epi32(hi[ch], _mm512_madd_epi16(_mm512_unpackhi_epi16(a, b), wv));
        }
    }
    int32_t *o = (int32_t *)c->out + i * c->ldo + b0;
#pragma GCC unroll 4
    for (int ch = 0; ch < C; ++ch) {
        /* [lo.L0 lo.L1 hi.L0 hi.L1] -> blocks 0 2 1 3: columns 0..15 of the chunk */
        const __m512i u0 = _mm512_shuffle_i32x4(lo[ch], hi[ch], 0x44);
        const __m512i u1 = _mm512_shuffle_i32x4(lo[ch], hi[ch], 0xEE);
        const __m512i v0 = _mm512_shuffle_i32x4(u0, u0, 0xD8);
        const __m512i v1 = _mm512_shuffle_i32x4(u1, u1, 0xD8);
        if (TAIL) {
            _mm512_mask_storeu_epi32(o + 32 * ch, (__mmask16)m[ch], v0);
            _mm512_mask_storeu_epi32(o + 32 * ch + 16, (__mmask16)(m[ch] >> 16), v1);
        } else {
            _mm512_storeu_si512(o + 32 * ch, v0);
            _mm512_storeu_si512(o + 32 * ch + 16, v1);
        }
    }
}

void lb_spmm_csr_rows_s8_avx512(const lb_spmm_csr_call *c, int64_t i0, int64_t i1) {
    const int64_t full = c->b / NB * NB, tail = c->b - full;
    __mmask32 m[4] = {0, 0, 0, 0}; /* byte masks of the tail's chunks of 32 */
    for (int ch = 0; ch < 4; ++ch) {
        const int64_t left = tail - 32 * ch;
        m[ch] = left >= 32 ? ~0u : left > 0 ? ~0u >> (32 - left) : 0;
    }
    const int tail_chunks = (int)((tail + 31) / 32);
    for (int64_t i = i0; i < i1; ++i) {
        for (int64_t b0 = 0; b0 < full; b0 += NB) s8_strip(4, 0, c, i, b0, m);
        switch (tail_chunks) {
            case 1: s8_strip(1, 1, c, i, full, m); break;
            case 2: s8_strip(2, 1, c, i, full, m); break;
            case 3: s8_strip(3, 1, c, i, full, m); break;
            case 4: s8_strip(4, 1, c, i, full, m); break;
            default: break;
        }
    }
}

/* float32: V vectors of 16 columns from b0, the last one masked by m when TAIL. */
static inline __attribute__((always_inline)) void f32_strip(const int V, const int TAIL,
                                                            const lb_spmm_csr_call *c,
                                                            int64_t i, int64_t b0,
                                                            __mmask16 m) {
    const lb_csr_weights *w = c->w;
    const int64_t p0 = w->row_ptr[i], p1 = w->row_ptr[i + 1];
    const float *vals = (const float *)w->values;
    const int32_t *idx = w->col_idx;
    const float *x = (const float *)c->x + b0;
    const int64_t ldx = c->ldx;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t p = p0; p < p1; ++p) {
        const __m512 wv = _mm512_set1_ps(vals[p]);
        const float *xr = x + idx[p] * ldx;
        if (p + LB_CSR_PF < p1) lb_csr_prefetch(x + idx[p + LB_CSR_PF] * ldx, V);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
            const __m512 xv = (TAIL && v == V - 1) ? _mm512_maskz_loadu_ps(m, xr + 16 * v)
                                                   : _mm512_loadu_ps(xr + 16 * v);
            acc[v] = _mm512_fmadd_ps(wv, xv, acc[v]);
        }
    }
    float *o = (float *)c->out + i * c->ldo + b0;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
        if (TAIL && v == V - 1)
            _mm512_mask_storeu_ps(o + 16 * v, m, acc[v]);
        else
            _mm512_storeu_ps(o + 16 * v, acc[v]);
    }
}

void lb_spmm_csr_rows_f32_avx512(const lb_spmm_csr_call *c, int64_t i0, int64_t i1) {
    const int64_t full = c->b / NB * NB, tail = c->b - full;
    const int tail_vecs = (int)((tail + 15) / 16);
    const __mmask16 m = tail % 16 ? (__mmask16)((1u << (tail % 16)) - 1) : (__mmask16)0xFFFF;
    for (int64_t i = i0; i < i1; ++i) {
        for (int64_t b0 = 0; b0 < full; b0 += NB) f32_strip(8, 0, c, i, b0, m);
        switch (tail_vecs) {
            case 1: f32_strip(1, 1, c, i, full, m); break;
            case 2: f32_strip(2, 1, c, i, full, m); break;
            case 3: f32_strip(3, 1, c, i, full, m); break;
            case 4: f32_strip(4, 1, c, i, full, m); break;
            case 5: f32_strip(5, 1, c, i, full, m); break;
            case 6: f32_strip(6, 1, c, i, full, m); break;
            case 7: f32_strip(7, 1, c, i, full, m); break;
            case 8: f32_strip(8, 1, c, i, full, m); break;
            default: break;
        }
    }
}
