/* spmm_csr, AVX2 row kernels (float32 also FMA). Contract and layout: spmm_csr.h.
 *
 * int8: as the AVX-512 kernel (spmm_csr_avx512.c) on 256-bit registers: entries in pairs,
 * per 16 columns the pair's x rows sign-extended to int16 and interleaved, vpmaddwd with
 * the broadcast pair (v0, v1), added in int32. Lane L of "lo" holds columns 8 L .. 8 L + 3,
 * of "hi" 8 L + 4 .. 8 L + 7; vperm2i128 restores the order. A strip is 64 columns (4 x 16:
 * 8 of the 16 ymm registers accumulate); AVX2 has no byte-masked load, so the last
 * b % 16 columns are summed by the scalar loop of spmm_csr.h.
 *
 * float32: per entry, the value broadcast times 8 vectors of 8 columns, FMA into 8
 * accumulators (a strip of 64 columns); the tail vector uses vmaskmovps. */
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#include <string.h>

#include "spmm_csr.h"

#define NB 64 /* columns per strip, both dtypes */

/* int8: C chunks of 16 columns from b0. */
static inline __attribute__((always_inline)) void s8_strip(const int C,
                                                           const lb_spmm_csr_call *c,
                                                           int64_t i, int64_t b0) {
    const lb_csr_weights *w = c->w;
    const int64_t p0 = w->row_ptr[i], p1 = w->row_ptr[i + 1];
    const int8_t *vals = (const int8_t *)w->values;
    const int32_t *idx = w->col_idx;
    const int8_t *x = (const int8_t *)c->x + b0;
    const int64_t ldx = c->ldx;
    __m256i lo[4], hi[4];
#pragma GCC unroll 4
    for (int ch = 0; ch < C; ++ch) lo[ch] = hi[ch] = _mm256_setzero_si256();
    for (int64_t p = p0; p < p1; p += 2) {
        const uint32_t pair = (uint16_t)(int16_t)vals[p] | (uint32_t)(uint16_t)(int16_t)vals[p + 1] << 16;
        const __m256i wv = _mm256_set1_epi32((int32_t)pair);
        const int8_t *xa = x + idx[p] * ldx, *xb = x + idx[p + 1] * ldx;
        if (p + LB_CSR_PF < p1) {
            lb_csr_prefetch(x + idx[p + LB_CSR_PF] * ldx, (C + 3) / 4);
            lb_csr_prefetch(x + idx[p + LB_CSR_PF + 1] * ldx, (C + 3) / 4);
        }
#pragma GCC unroll 4
        for (int ch = 0; ch < C; ++ch) {
            const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(xa + 16 * ch)));
            const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(xb + 16 * ch)));
            lo[ch] = _mm256_add_epi32(lo[ch], _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), wv));
            hi[ch] = _mm256_add_epi32(hi[ch], _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), wv));
        }
    }
    int32_t *o = (int32_t *)c->out + i * c->ldo + b0;
#pragma GCC unroll 4
    for (int ch = 0; ch < C; ++ch) {
        _mm256_storeu_si256((__m256i *)(o + 16 * ch), _mm256_permute2x128_si256(lo[ch], hi[ch], 0x20));
        _mm256_storeu_si256((__m256i *)(o + 16 * ch + 8), _mm256_permute2x128_si256(lo[ch], hi[ch], 0x31));
    }
}

void lb_spmm_csr_rows_s8_avx2(const lb_spmm_csr_call *c, int64_t i0, int64_t i1) {
    const int64_t full = c->b / NB * NB, vec_end = c->b / 16 * 16;
    const int tail_chunks = (int)((vec_end - full) / 16);
    for (int64_t i = i0; i < i1; ++i) {
        for (int64_t b0 = 0; b0 < full; b0 += NB) s8_strip(4, c, i, b0);
        switch (tail_chunks) {
            case 1: s8_strip(1, c, i, full); break;
            case 2: s8_strip(2, c, i, full); break;
            case 3: s8_strip(3, c, i, full); break;
            default: break;
        }
        if (vec_end < c->b) lb_spmm_csr_s8_columns(c, i, vec_end, c->b);
    }
}

/* float32: V vectors of 8 columns from b0, the last one masked by m when TAIL. */
static inline __attribute__((always_inline)) void f32_strip(const int V, const int TAIL,
                                                            const lb_spmm_csr_call *c,
                                                            int64_t i, int64_t b0, __m256i m) {
    const lb_csr_weights *w = c->w;
    const int64_t p0 = w->row_ptr[i], p1 = w->row_ptr[i + 1];
    const float *vals = (const float *)w->values;
    const int32_t *idx = w->col_idx;
    const float *x = (const float *)c->x + b0;
    const int64_t ldx = c->ldx;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
    for (int64_t p = p0; p < p1; ++p) {
        const __m256 wv = _mm256_broadcast_ss(vals + p);
        const float *xr = x + idx[p] * ldx;
        if (p + LB_CSR_PF < p1) lb_csr_prefetch(x + idx[p + LB_CSR_PF] * ldx, (V + 1) / 2);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
            const __m256 xv = (TAIL && v == V - 1) ? _mm256_maskload_ps(xr + 8 * v, m)
                                                   : _mm256_loadu_ps(xr + 8 * v);
            acc[v] = _mm256_fmadd_ps(wv, xv, acc[v]);
        }
    }
    float *o = (float *)c->out + i * c->ldo + b0;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
        if (TAIL && v == V - 1)
            _mm256_maskstore_ps(o + 8 * v, m, acc[v]);
        else
            _mm256_storeu_ps(o + 8 * v, acc[v]);
    }
}

void lb_spmm_csr_rows_f32_avx2(const lb_spmm_csr_call *c, int64_t i0, int64_t i1) {
    const int64_t full = c->b / NB * NB, tail = c->b - full;
    const int tail_vecs = (int)((tail + 7) / 8);
    const int r = (int)(tail % 8);
    /* lanes j < r (all 8 when r = 0) have the sign bit set: loaded and stored */
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(r ? r : 8),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
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
