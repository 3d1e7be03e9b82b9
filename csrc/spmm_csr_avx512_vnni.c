/* spmm_csr, int8, AVX-512 VNNI: one vpdpbusd per 16 columns takes a whole quad of entries.
 * Contract and layout: spmm_csr.h.
 *
 * vpdpbusd adds to each int32 lane the four products of its four unsigned bytes with four
 * signed bytes. A quad's four int8 values (one 32-bit word, broadcast) are the signed
 * operand; the unsigned one is built from the quad's four x rows a, b, c, d by interleaving
 * their bytes so that lane j holds (a[j], b[j], c[j], d[j]):
 *
 *     a: a0 a1 a2 ...      unpack{lo,hi}_epi8(a, b)   -> a0 b0 a1 b1 ...
 *     b: b0 b1 b2 ...      unpack{lo,hi}_epi8(c, d)   -> c0 d0 c1 d1 ...
 *     c, d                 unpack{lo,hi}_epi16 of those -> a0 b0 c0 d0 | a1 b1 c1 d1 | ...
 *
 * x is signed, the operand unsigned: each byte is flipped (x ^ 0x80 = x + 128) and the row's
 * sum times 128 subtracted at the end, sum_p v_p (x_p + 128) - 128 sum_p v_p, in wrapping
 * int32 arithmetic (exact whenever the result fits in int32).
 *
 * The unpacks work within 128-bit lanes, so per 64 columns the four accumulators hold
 * column 16 L + 4 k + j in dword 4 L + j of accumulator k (lane L); a 4 x 4 transpose of
 * 128-bit blocks (vshufi32x4) restores the column order once per row. A strip is 128
 * columns (8 accumulators); a column tail uses masked loads and stores.
 *
 * Measured on Zen 5, one thread, 4096 x 4096 weights at 10%, b = 128 (x in L2), best of
 * many runs on a shared machine: 14 cycles per quad against 21 for the AVX-512 kernel
 * (vpmaddwd on pairs, spmm_csr_avx512.c) and 39 for AVX2; 12 with x in L1 (K = 256), so
 * the instructions (8 loads, 16 unpacks, 8 vpdpbusd per quad), not the x rows, bound it.
 * Dropping the in-register sign flip (4 vpxord per 64 columns) changed nothing measurable,
 * so x is not copied to flip it. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
#include <immintrin.h>
#include <string.h>

#include "spmm_csr.h"

#define NB 128 /* columns per strip: 2 x 64 */

/* Columns [b0, b0 + 64 H) of row i (H = 1 or 2 halves of 64), masked by m[h] when TAIL. */
static inline __attribute__((always_inline)) void strip(const int H, const int TAIL,
                                                        const lb_spmm_csr_call *c, int64_t i,
                                                        int64_t b0, const __mmask64 *m) {
    const lb_csr_weights *w = c->w;
    const int64_t p0 = w->row_ptr[i], p1 = w->row_ptr[i + 1];
    const int8_t *vals = (const int8_t *)w->values;
    const int32_t *idx = w->col_idx;
    const int8_t *x = (const int8_t *)c->x + b0;
    const int64_t ldx = c->ldx;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i acc[2][4];
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h)
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) acc[h][k] = _mm512_setzero_si512();
    for (int64_t p = p0; p < p1; p += 4) {
        int32_t wq;
        memcpy(&wq, vals + p, 4);
        const __m512i wv = _mm512_set1_epi32(wq);
        const int8_t *xa = x + idx[p] * ldx, *xb = x + idx[p + 1] * ldx;
        const int8_t *xc = x + idx[p + 2] * ldx, *xd = x + idx[p + 3] * ldx;
        if (p + LB_CSR_PF < p1)
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) lb_csr_prefetch(x + idx[p + LB_CSR_PF + r] * ldx, H);
#pragma GCC unroll 2
        for (int h = 0; h < H; ++h) {
            __m512i a, b, cc, d;
            if (TAIL) {
                a = _mm512_maskz_loadu_epi8(m[h], xa + 64 * h);
                b = _mm512_maskz_loadu_epi8(m[h], xb + 64 * h);
                cc = _mm512_maskz_loadu_epi8(m[h], xc + 64 * h);
                d = _mm512_maskz_loadu_epi8(m[h], xd + 64 * h);
            } else {
                a = _mm512_loadu_si512(xa + 64 * h);
                b = _mm512_loadu_si512(xb + 64 * h);
                cc = _mm512_loadu_si512(xc + 64 * h);
                d = _mm512_loadu_si512(xd + 64 * h);
            }
            const __m512i ab_lo = _mm512_unpacklo_epi8(a, b), ab_hi = _mm512_unpackhi_epi8(a, b);
            const __m512i cd_lo = _mm512_unpacklo_epi8(cc, d), cd_hi = _mm512_unpackhi_epi8(cc, d);
            const __m512i q0 = _mm512_xor_si512(_mm512_unpacklo_epi16(ab_lo, cd_lo), flip);
            const __m512i q1 = _mm512_xor_si512(_mm512_unpackhi_epi16(ab_lo, cd_lo), flip);
            const __m512i q2 = _mm512_xor_si512(_mm512_unpacklo_epi16(ab_hi, cd_hi), flip);
            const __m512i q3 = _mm512_xor_si512(_mm512_unpackhi_epi16(ab_hi, cd_hi), flip);
            acc[h][0] = _mm512_dpbusd_epi32(acc[h][0], q0, wv);
            acc[h][1] = _mm512_dpbusd_epi32(acc[h][1], q1, wv);
            acc[h][2] = _mm512_dpbusd_epi32(acc[h][2], q2, wv);
            acc[h][3] = _mm512_dpbusd_epi32(acc[h][3], q3, wv);
        }
    }
    const __m512i corr = _mm512_set1_epi32((int32_t)((uint32_t)w->row_sum[i] << 7));
    int32_t *o = (int32_t *)c->out + i * c->ldo + b0;
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h) {
        /* 4 x 4 transpose of 128-bit blocks: r[L] = lane L of acc[h][0..3] */
        const __m512i t0 = _mm512_shuffle_i32x4(acc[h][0], acc[h][1], 0x44);
        const __m512i t1 = _mm512_shuffle_i32x4(acc[h][2], acc[h][3], 0x44);
        const __m512i t2 = _mm512_shuffle_i32x4(acc[h][0], acc[h][1], 0xEE);
        const __m512i t3 = _mm512_shuffle_i32x4(acc[h][2], acc[h][3], 0xEE);
        __m512i r[4];
        r[0] = _mm512_shuffle_i32x4(t0, t1, 0x88);
        r[1] = _mm512_shuffle_i32x4(t0, t1, 0xDD);
        r[2] = _mm512_shuffle_i32x4(t2, t3, 0x88);
        r[3] = _mm512_shuffle_i32x4(t2, t3, 0xDD);
#pragma GCC unroll 4
        for (int L = 0; L < 4; ++L) {
            const __m512i v = _mm512_sub_epi32(r[L], corr);
            if (TAIL) /* 16 bits of the byte mask per 16 columns */
                _mm512_mask_storeu_epi32(o + 64 * h + 16 * L, (__mmask16)(m[h] >> (16 * L)), v);
            else
                _mm512_storeu_si512(o + 64 * h + 16 * L, v);
        }
    }
}

void lb_spmm_csr_rows_s8_avx512_vnni(const lb_spmm_csr_call *c, int64_t i0, int64_t i1) {
    const int64_t full = c->b / NB * NB, tail = c->b - full;
    __mmask64 m[2] = {~0ull, 0}; /* byte masks of the tail's two halves */
    if (tail > 64)
        m[1] = ~0ull >> (128 - tail);
    else if (tail)
        m[0] = ~0ull >> (64 - tail);
    for (int64_t i = i0; i < i1; ++i) {
        for (int64_t b0 = 0; b0 < full; b0 += NB) strip(2, 0, c, i, b0, m);
        if (tail > 64) strip(2, 1, c, i, full, m);
        else if (tail) strip(1, 1, c, i, full, m);
    }
}
