/* int4-weight GEMM microkernels, portable C (baseline x86-64; the column loops are written so
 * GCC vectorizes them with SSE2). Contract: csrc/lowbit.h (lb_w4_tile), layout: gemm_w4.c.
 *
 * Per group and row: 64 column accumulators; each K block's 64 words are decoded nibble
 * position by nibble position, (word >> 4i) & 15, against the packed activation of that
 * position (already in the nibble order, lowbit.h). w4a16 subtracts the zero
 * point 8 of int4 weights in the decode (no activation sums needed) and uses the split form
 * s (sum x n - z sum x) for uint4; w4a8 sums exact int32 products and applies the zero point
 * to the group sum exactly (all values below 2^24 in float). */
#include <string.h>

#include "lowbit.h"

static void load_scales(const lb_w4_tile *t, int64_t gg, float *s) {
    if (t->scale_f16) {
        const uint16_t *h = (const uint16_t *)t->scales + gg * LB_W4_NR;
        for (int j = 0; j < LB_W4_NR; ++j) s[j] = lb_f16_to_f32(h[j]);
    } else {
        memcpy(s, (const float *)t->scales + gg * LB_W4_NR, LB_W4_NR * sizeof(float));
    }
}

/* acc[j] += sum over nibble positions i of xs[i] * (n_ij - bias): one column loop with
 * constant shifts, which GCC vectorizes (SSE2). */
static void axpy_block(float *restrict acc, const uint32_t *restrict words,
                       const float *restrict xs, float bias) {
    for (int j = 0; j < LB_W4_NR; ++j) {
        const uint32_t w = words[j];
        float sum = 0.0f;
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) sum += xs[i] * ((float)(int32_t)((w >> (4 * i)) & 15u) - bias);
        acc[j] += sum;
    }
}

/* acc[j] += sum over i of as[i] * n_ij, exact in int32 */
static void madd_block(int32_t *restrict acc, const uint32_t *restrict words,
                       const int32_t *restrict as) {
    for (int j = 0; j < LB_W4_NR; ++j) {
        const uint32_t w = words[j];
        int32_t sum = 0;
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) sum += as[i] * (int32_t)((w >> (4 * i)) & 15u);
        acc[j] += sum;
    }
}

static inline void load_words(const uint8_t *wb, uint32_t *words) {
    memcpy(words, wb, LB_W4_NR * 4); /* little-endian: byte b is bits 8b..8b+7 */
}

void lb_w4a16_ukernel_portable(const lb_w4_tile *t) {
    const int zp = t->zeros != NULL;
    const float bias = zp ? 0.0f : 8.0f; /* int4: v = n - 8 decoded directly */
    for (int64_t gg = 0; gg < t->groups; ++gg) {
        float s[LB_W4_NR], zf[LB_W4_NR];
        load_scales(t, gg, s);
        if (zp)
            for (int j = 0; j < LB_W4_NR; ++j) zf[j] = (float)t->zeros[gg * LB_W4_NR + j];
        const uint8_t *wg = t->w + gg * t->group_blocks * 256;
        const int R = t->rows;
        for (int r = 0; r < R; ++r) {
            const float *x = (const float *)t->a + gg * t->group_blocks * 8 * R + r;
            float acc[LB_W4_NR] = {0};
            for (int64_t b = 0; b < t->group_blocks; ++b) {
                uint32_t words[LB_W4_NR];
                load_words(wg + b * 256, words);
                float xs[8];
                for (int i = 0; i < 8; ++i) xs[i] = x[(8 * b + i) * R];
                axpy_block(acc, words, xs, bias);
            }
            float *c = t->c + r * LB_W4_NR;
            if (zp) {
                const float rs = t->rsum[r * t->rsum_ld + gg];
                for (int j = 0; j < LB_W4_NR; ++j) c[j] += s[j] * (acc[j] - zf[j] * rs);
            } else {
                for (int j = 0; j < LB_W4_NR; ++j) c[j] += s[j] * acc[j];
            }
        }
    }
}

void lb_w4a8_ukernel_portable(const lb_w4_tile *t) {
    for (int64_t gg = 0; gg < t->groups; ++gg) {
        float s[LB_W4_NR], zf[LB_W4_NR];
        load_scales(t, gg, s);
        for (int j = 0; j < LB_W4_NR; ++j)
            zf[j] = t->zeros ? (float)t->zeros[gg * LB_W4_NR + j] : 8.0f;
        const uint8_t *wg = t->w + gg * t->group_blocks * 256;
        const int R = t->rows;
        for (int r = 0; r < R; ++r) {
            const uint32_t *ap = (const uint32_t *)t->a + gg * t->group_blocks * 2 * R + r;
            int32_t acc[LB_W4_NR] = {0};
            for (int64_t b = 0; b < t->group_blocks; ++b) {
                uint32_t words[LB_W4_NR];
                load_words(wg + b * 256, words);
                int8_t a8[8]; /* K 8b .. 8b + 7 */
                memcpy(a8, ap + 2 * b * R, 4);
                memcpy(a8 + 4, ap + (2 * b + 1) * R, 4);
                int32_t as[8];
                for (int i = 0; i < 8; ++i) as[i] = a8[LB_W4_KPOS[i]];
                madd_block(acc, words, as);
            }
            /* sum a n - z sum a: integers below 2^24, so exact in float32 */
            const float rs = t->rsum[r * t->rsum_ld + gg];
            float *c = t->c + r * LB_W4_NR;
            for (int j = 0; j < LB_W4_NR; ++j) c[j] += s[j] * ((float)acc[j] - zf[j] * rs);
        }
    }
}
