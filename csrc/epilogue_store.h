/* The fused epilogue store shared by the int8 and 2:4 GEMM frames (gemm_int8_frame.inc,
 * gemm_sparse24.c): a tile of int32 accumulators -> the output lb_epilogue asks for.
 *
 * Contract of lb_store_rows_<isa>(s, c, rows, row0, col0, nr): for i < rows and j < nr,
 *     out[row0 + i][col0 + j] = epilogue(row0 + i, col0 + j, c[64 i + j] + corr[col0 + j])
 * with the addition wrapping mod 2^32 and epilogue as lowbit_api.h defines it (kind 0: int32;
 * 1: requantize to int8 / uint8; 2: dequantize to float32). c is a 64-column tile (LB_W_NR
 * and LB_S24_NR); its columns >= nr may be read, never matter. Nothing past column nr of the
 * output, and nothing of the per-column vectors past N, is touched.
 *
 * Variants: portable is the scalar definition (the C reference tier). avx2 (8 columns a
 * vector) and avx512 (16) compute the same integers bit for bit: the saturating bias add in
 * 32-bit lanes, the fixed-point product, its rounding, shift and clamp in 64-bit lanes (even
 * and odd columns separately, vpmuldq), then a narrowing to bytes; and the same float32
 * operations in the same order (the build passes -ffp-contract=off). Column tails use masked
 * loads and stores. The SIMD variants carry per-function target attributes, so any
 * translation unit may include this header: the int8 frame calls the one its ISA file names
 * (store_rows), the 2:4 frame picks one per ISA from a table. */
#ifndef LOWBIT_EPILOGUE_STORE_H
#define LOWBIT_EPILOGUE_STORE_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "lowbit.h"

typedef struct {
    const lb_epilogue *ep;
    const int32_t *corr; /* [N]: added to every accumulator of column j */
    void *out;           /* rows ldo elements apart, elements of the epilogue's output type */
    int64_t ldo;
} lb_store;

typedef void (*lb_store_fn)(const lb_store *s, const int32_t *c, int rows, int64_t row0,
                            int64_t col0, int nr);

/* The arguments an epilogue reads are present (the C entries check before any work). */
static inline int lb_epilogue_ok(const lb_epilogue *ep) {
    if (!ep) return 0;
    switch (ep->kind) {
        case 0: return 1;
        case 1: return ep->multiplier && ep->shift;
        case 2: return ep->a_scale && ep->w_scale;
        default: return 0;
    }
}

static inline int32_t lb_wrap_add(int32_t x, int32_t y) {
    return (int32_t)((uint32_t)x + (uint32_t)y);
}

/* --- portable: the scalar definition -------------------------------------------------- */

static inline void lb_store_rows_portable(const lb_store *s, const int32_t *c, int rows,
                                          int64_t row0, int64_t col0, int nr) {
    const lb_epilogue *ep = s->ep;
    const int32_t *corr = s->corr + col0;
    for (int i = 0; i < rows; ++i) {
        const int32_t *ci = c + 64 * i;
        const int64_t row = row0 + i;
        if (ep->kind == 0) {
            int32_t *o = (int32_t *)s->out + row * s->ldo + col0;
            for (int j = 0; j < nr; ++j) o[j] = lb_wrap_add(ci[j], corr[j]);
        } else if (ep->kind == 1) {
            const int32_t *mult = ep->multiplier + col0, *shift = ep->shift + col0;
            const int32_t *bias = ep->bias ? ep->bias + col0 : NULL;
            int8_t *o8 = (int8_t *)s->out + row * s->ldo + col0;
            uint8_t *ou8 = (uint8_t *)s->out + row * s->ldo + col0;
            for (int j = 0; j < nr; ++j) {
                int64_t v = (int64_t)lb_wrap_add(ci[j], corr[j]) + (bias ? bias[j] : 0);
                v = v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v);
                int64_t r = (v * mult[j] + ((int64_t)1 << (shift[j] - 1))) >> shift[j];
                r += ep->zero_point;
                r = r < ep->qmin ? ep->qmin : (r > ep->qmax ? ep->qmax : r);
                if (ep->out_unsigned)
                    ou8[j] = (uint8_t)r;
                else
                    o8[j] = (int8_t)r;
            }
        } else {
            const float *ws = ep->w_scale + col0;
            const float as = ep->a_scale[row];
            float *of = (float *)s->out + row * s->ldo + col0;
            if (ep->fbias) {
                const float *fb = ep->fbias + col0;
                for (int j = 0; j < nr; ++j)
                    of[j] = (float)lb_wrap_add(ci[j], corr[j]) * (as * ws[j]) + fb[j];
            } else {
                for (int j = 0; j < nr; ++j)
                    of[j] = (float)lb_wrap_add(ci[j], corr[j]) * (as * ws[j]);
            }
        }
    }
}

/* --- AVX-512 (F, BW, DQ, VL): 16 columns a vector ------------------------------------- */

#define LB_AVX512_STORE __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

/* a + b saturated to int32: on overflow (a and b of one sign, the sum of the other) the
 * bound of a's sign, (a >> 31) ^ INT32_MAX. */
static inline LB_AVX512_STORE __m512i lb_adds_epi32_avx512(__m512i a, __m512i b) {
    const __m512i s = _mm512_add_epi32(a, b);
    const __mmask16 over = _mm512_movepi32_mask(
        _mm512_and_si512(_mm512_xor_si512(a, s), _mm512_xor_si512(b, s)));
    const __m512i bound = _mm512_xor_si512(_mm512_srai_epi32(a, 31),
                                           _mm512_set1_epi32(INT32_MAX));
    return _mm512_mask_mov_epi32(s, over, bound);
}

/* clamp(zp + ((v * mult + 2^(shift - 1)) >> shift), qmin, qmax) on the 64-bit lanes: v and
 * mult in the low 32 bits of each lane (vpmuldq), rnd = 2^(shift - 1), shift zero-extended. */
static inline LB_AVX512_STORE __m512i lb_requant_epi64_avx512(
    __m512i v, __m512i mult, __m512i rnd, __m512i shift, __m512i zp, __m512i qmin,
    __m512i qmax) {
    const __m512i r = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, mult), rnd), shift);
    return _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(r, zp), qmin), qmax);
}

static inline LB_AVX512_STORE void lb_store_rows_avx512(const lb_store *s, const int32_t *c,
                                                        int rows, int64_t row0, int64_t col0,
                                                        int nr) {
    const lb_epilogue *ep = s->ep;
    for (int j = 0; j < nr; j += 16) {
        const __mmask16 k = (__mmask16)(nr - j >= 16 ? 0xffffu : (1u << (nr - j)) - 1u);
        const int64_t col = col0 + j;
        const __m512i corr = _mm512_maskz_loadu_epi32(k, s->corr + col);
        if (ep->kind == 0) {
            for (int i = 0; i < rows; ++i)
                _mm512_mask_storeu_epi32((int32_t *)s->out + (row0 + i) * s->ldo + col, k,
                                         _mm512_add_epi32(_mm512_loadu_si512(c + 64 * i + j),
                                                          corr));
        } else if (ep->kind == 1) {
            const __m512i one = _mm512_set1_epi64(1), low = _mm512_set1_epi64(0xffffffff);
            const __m512i zp = _mm512_set1_epi64(ep->zero_point);
            const __m512i qmin = _mm512_set1_epi64(ep->qmin), qmax = _mm512_set1_epi64(ep->qmax);
            const __m512i bias = ep->bias ? _mm512_maskz_loadu_epi32(k, ep->bias + col)
                                          : _mm512_setzero_si512();
            const __m512i mult = _mm512_maskz_loadu_epi32(k, ep->multiplier + col);
            const __m512i shift = _mm512_maskz_loadu_epi32(k, ep->shift + col);
            const __m512i mult_odd = _mm512_srli_epi64(mult, 32);
            const __m512i sh_even = _mm512_and_si512(shift, low);
            const __m512i sh_odd = _mm512_srli_epi64(shift, 32);
            /* masked-off columns have shift 0: a count of -1 shifts the 1 out (no UB) */
            const __m512i rnd_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(sh_even, one));
            const __m512i rnd_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(sh_odd, one));
            for (int i = 0; i < rows; ++i) {
                const __m512i v = lb_adds_epi32_avx512(
                    _mm512_add_epi32(_mm512_loadu_si512(c + 64 * i + j), corr), bias);
                const __m512i even = lb_requant_epi64_avx512(v, mult, rnd_even, sh_even, zp,
                                                             qmin, qmax);
                const __m512i odd = lb_requant_epi64_avx512(_mm512_srli_epi64(v, 32), mult_odd,
                                                            rnd_odd, sh_odd, zp, qmin, qmax);
                /* in [qmin, qmax]: the low byte of each int32 is the int8 or uint8 result */
                const __m512i both = _mm512_mask_blend_epi32(0xaaaa, even,
                                                             _mm512_slli_epi64(odd, 32));
                _mm_mask_storeu_epi8((int8_t *)s->out + (row0 + i) * s->ldo + col, k,
                                     _mm512_cvtepi32_epi8(both));
            }
        } else {
            const __m512 ws = _mm512_maskz_loadu_ps(k, ep->w_scale + col);
            const __m512 fb = ep->fbias ? _mm512_maskz_loadu_ps(k, ep->fbias + col)
                                        : _mm512_setzero_ps();
            for (int i = 0; i < rows; ++i) {
                const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(ep->a_scale[row0 + i]), ws);
                const __m512i v = _mm512_add_epi32(_mm512_loadu_si512(c + 64 * i + j), corr);
                __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(v), scale);
                if (ep->fbias) y = _mm512_add_ps(y, fb); /* no + 0: it would turn -0 into +0 */
                _mm512_mask_storeu_ps((float *)s->out + (row0 + i) * s->ldo + col, k, y);
            }
        }
    }
}

/* --- AVX2: 8 columns a vector ----------------------------------------------------------- */

#define LB_AVX2_STORE __attribute__((target("avx2")))

static inline LB_AVX2_STORE __m256i lb_adds_epi32_avx2(__m256i a, __m256i b) {
    const __m256i s = _mm256_add_epi32(a, b);
    const __m256i over = _mm256_and_si256(_mm256_xor_si256(a, s), _mm256_xor_si256(b, s));
    const __m256i bound = _mm256_xor_si256(_mm256_srai_epi32(a, 31),
                                           _mm256_set1_epi32(INT32_MAX));
    /* blendv_ps picks by the sign bit of each lane of `over` */
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(s),
                                                _mm256_castsi256_ps(bound),
                                                _mm256_castsi256_ps(over)));
}

/* AVX2 has no 64-bit arithmetic shift, min or max: x >> n = ~(~x >>> n) for x < 0. */
static inline LB_AVX2_STORE __m256i lb_srav_epi64_avx2(__m256i x, __m256i n) {
    const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
    return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(x, sign), n), sign);
}

static inline LB_AVX2_STORE __m256i lb_requant_epi64_avx2(__m256i v, __m256i mult, __m256i rnd,
                                                          __m256i shift, __m256i zp,
                                                          __m256i qmin, __m256i qmax) {
    __m256i r = lb_srav_epi64_avx2(_mm256_add_epi64(_mm256_mul_epi32(v, mult), rnd), shift);
    r = _mm256_add_epi64(r, zp);
    r = _mm256_blendv_epi8(r, qmin, _mm256_cmpgt_epi64(qmin, r));
    return _mm256_blendv_epi8(r, qmax, _mm256_cmpgt_epi64(r, qmax));
}

static inline LB_AVX2_STORE void lb_store_rows_avx2(const lb_store *s, const int32_t *c,
                                                    int rows, int64_t row0, int64_t col0,
                                                    int nr) {
    const lb_epilogue *ep = s->ep;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int j = 0; j < nr; j += 8) {
        const int cnt = nr - j < 8 ? nr - j : 8;
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), lane);
        const int64_t col = col0 + j;
        const __m256i corr = _mm256_maskload_epi32(s->corr + col, k);
        if (ep->kind == 0) {
            for (int i = 0; i < rows; ++i)
                _mm256_maskstore_epi32((int32_t *)s->out + (row0 + i) * s->ldo + col, k,
                                       _mm256_add_epi32(
                                           _mm256_loadu_si256((const __m256i *)(c + 64 * i + j)),
                                           corr));
        } else if (ep->kind == 1) {
            const __m256i one = _mm256_set1_epi64x(1), low = _mm256_set1_epi64x(0xffffffff);
            const __m256i zp = _mm256_set1_epi64x(ep->zero_point);
            const __m256i qmin = _mm256_set1_epi64x(ep->qmin);
            const __m256i qmax = _mm256_set1_epi64x(ep->qmax);
            const __m256i bias = ep->bias ? _mm256_maskload_epi32(ep->bias + col, k)
                                          : _mm256_setzero_si256();
            const __m256i mult = _mm256_maskload_epi32(ep->multiplier + col, k);
            const __m256i shift = _mm256_maskload_epi32(ep->shift + col, k);
            const __m256i mult_odd = _mm256_srli_epi64(mult, 32);
            const __m256i sh_even = _mm256_and_si256(shift, low);
            const __m256i sh_odd = _mm256_srli_epi64(shift, 32);
            const __m256i rnd_even = _mm256_sllv_epi64(one, _mm256_sub_epi64(sh_even, one));
            const __m256i rnd_odd = _mm256_sllv_epi64(one, _mm256_sub_epi64(sh_odd, one));
            /* bytes 0, 4, 8, 12 of each 128-bit half: the low byte of each int32 */
            const __m128i low_bytes = _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1,
                                                    -1, -1, -1, -1, -1);
            for (int i = 0; i < rows; ++i) {
                const __m256i v = lb_adds_epi32_avx2(
                    _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(c + 64 * i + j)),
                                     corr),
                    bias);
                const __m256i even = lb_requant_epi64_avx2(v, mult, rnd_even, sh_even, zp, qmin,
                                                           qmax);
                const __m256i odd = lb_requant_epi64_avx2(_mm256_srli_epi64(v, 32), mult_odd,
                                                          rnd_odd, sh_odd, zp, qmin, qmax);
                const __m256i both = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xaa);
                const __m128i lo = _mm_shuffle_epi8(_mm256_castsi256_si128(both), low_bytes);
                const __m128i hi = _mm_shuffle_epi8(_mm256_extracti128_si256(both, 1), low_bytes);
                int8_t *o = (int8_t *)s->out + (row0 + i) * s->ldo + col;
                const __m128i bytes = _mm_unpacklo_epi32(lo, hi);
                if (cnt == 8) {
                    _mm_storel_epi64((__m128i *)o, bytes);
                } else {
                    const uint64_t b = (uint64_t)_mm_cvtsi128_si64(bytes);
                    memcpy(o, &b, (size_t)cnt);
                }
            }
        } else {
            const __m256 ws = _mm256_maskload_ps(ep->w_scale + col, k);
            const __m256 fb = ep->fbias ? _mm256_maskload_ps(ep->fbias + col, k)
                                        : _mm256_setzero_ps();
            for (int i = 0; i < rows; ++i) {
                const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(ep->a_scale[row0 + i]), ws);
                const __m256i v = _mm256_add_epi32(
                    _mm256_loadu_si256((const __m256i *)(c + 64 * i + j)), corr);
                __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(v), scale);
                if (ep->fbias) y = _mm256_add_ps(y, fb);
                _mm256_maskstore_ps((float *)s->out + (row0 + i) * s->ldo + col, k, y);
            }
        }
    }
}

#endif
