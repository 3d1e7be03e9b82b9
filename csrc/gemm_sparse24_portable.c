/* 2:4 sparse GEMM microkernels, portable C (baseline x86-64). Contract: lowbit.h
 * (lb_s24_tile); layout: gemm_sparse24.c. Column by column, each kept value's activation is
 * found from its 2-bit index (word >> (8 r + 2 s)) & 3 and multiplied into every row of the
 * tile; int8 sums wrap mod 2^32 like the SIMD variants' (the frame's correction makes the
 * result exact), float32 sums run in K order. */
#include <string.h>

#include "lowbit.h"

/* K offset within its block of kept value u = 4 s + r of the column whose word is `word`. */
static inline int kept_k(uint32_t word, int s, int r) {
    return 8 * s + 4 * (r >> 1) + (int)((word >> (8 * r + 2 * s)) & 3u);
}

void lb_s24_s8_ukernel_portable(const lb_s24_tile *t) {
    const int R = t->rows;
    uint32_t *acc = t->c;
    const uint8_t flip = (uint8_t)t->a_flip;
    memset(acc, 0, (size_t)R * LB_S24_NR * sizeof(uint32_t));
    for (int64_t b = 0; b < t->blocks; ++b) {
        const int8_t *w = (const int8_t *)t->w + b * 1024;
        const uint32_t *meta = t->meta + b * LB_S24_NR;
        const uint8_t *a = (const uint8_t *)t->a + b * t->a_block;
        for (int j = 0; j < LB_S24_NR; ++j) {
            for (int s = 0; s < 4; ++s) {
                for (int r = 0; r < 4; ++r) {
                    const int32_t v = w[256 * s + 4 * j + r];
                    const int kk = kept_k(meta[j], s, r);
                    for (int i = 0; i < R; ++i) /* the int8 operand */
                        acc[LB_S24_NR * i + j] +=
                            (uint32_t)((int8_t)(a[t->a_row * i + kk] ^ flip) * v);
                }
            }
        }
    }
}

void lb_s24_f32_ukernel_portable(const lb_s24_tile *t) {
    const int R = t->rows;
    float *acc = t->c;
    memset(acc, 0, (size_t)R * LB_S24_NR * sizeof(float));
    for (int64_t b = 0; b < t->blocks; ++b) {
        const float *w = (const float *)t->w + b * 1024;
        const uint32_t *meta = t->meta + b * LB_S24_NR;
        const float *a = (const float *)t->a + b * t->a_block;
        for (int j = 0; j < LB_S24_NR; ++j) {
            for (int u = 0; u < 16; ++u) {
                const float v = w[LB_S24_NR * u + j];
                const int kk = kept_k(meta[j], u >> 2, u & 3);
                for (int i = 0; i < R; ++i) acc[LB_S24_NR * i + j] += a[t->a_row * i + kk] * v;
            }
        }
    }
}
