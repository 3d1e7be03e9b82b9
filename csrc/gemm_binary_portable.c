/* Binary GEMM, portable C variant: scalar xor + popcount, built for baseline x86-64.
 *
 * __builtin_popcountll on baseline x86-64 (no -mpopcnt) is libgcc's __popcountdi2, a
 * table/bit-trick routine of a dozen instructions. Nearly every x86-64 CPU since 2008 has
 * the POPCNT instruction, so the same body is also compiled into a function with
 * target("popcnt") and chosen when cpuid reports POPCNT (one load and branch per tile);
 * lb_gemm_binary_force_generic_popcount(1) forces the baseline routine (tests).
 *
 * Tile 4 x 32, walked in strips of STRIP columns: 4 x STRIP accumulators, STRIP weight
 * words and one A word per row live in general registers. */
#include <string.h>

#include "lowbit.h"

#define LB_ENTRY lb_gemm_binary_portable
#define MR 4
#define STRIP 2

static inline uint64_t load_word(const uint64_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Word q of rows i < R against columns s .. s + STRIP - 1. */
static inline __attribute__((always_inline)) void step(const int R, uint64_t acc[MR][STRIP],
                                                       const uint64_t *a, int64_t lda,
                                                       int64_t q, const uint64_t *wq) {
    uint64_t wv[STRIP];
    for (int j = 0; j < STRIP; ++j) wv[j] = wq[j];
    for (int i = 0; i < R; ++i) {
        const uint64_t ai = load_word(a + i * lda + q);
        for (int j = 0; j < STRIP; ++j) acc[i][j] += (uint64_t)__builtin_popcountll(ai ^ wv[j]);
    }
}

static inline __attribute__((always_inline)) void body(const int R, int64_t kw,
                                                       const uint64_t *a, int64_t lda,
                                                       const uint64_t *w, int32_t *c) {
    for (int s = 0; s < LB_B_NR; s += STRIP) {
        uint64_t acc[MR][STRIP] = {{0}};
        const uint64_t *ws = w + s;
        for (int64_t q = 0; q < kw; ++q) step(R, acc, a, lda, q, ws + q * LB_B_NR);
        for (int i = 0; i < R; ++i)
            for (int j = 0; j < STRIP; ++j) c[LB_B_NR * i + s + j] = (int32_t)acc[i][j];
    }
}

#define ROWS_CASES                                          \
    switch (mr) {                                           \
        case 1: body(1, kw, a, lda, w, c); break;     \
        case 2: body(2, kw, a, lda, w, c); break;     \
        case 3: body(3, kw, a, lda, w, c); break;     \
        default: body(4, kw, a, lda, w, c); break;    \
    }

__attribute__((target("popcnt"))) static void ukernel_popcnt(int mr, int64_t kw,
                                                             const uint64_t *a, int64_t lda,
                                                             const uint64_t *w, int32_t *c) {
    ROWS_CASES
}

static void ukernel_generic(int mr, int64_t kw, const uint64_t *a, int64_t lda,
                            const uint64_t *w, int32_t *c) {
    ROWS_CASES
}

static void ukernel(int mr, int64_t kw, const uint64_t *a, int64_t lda, const uint64_t *w,
                    int32_t *c) {
    if (!lb_binary_generic_popcount && (lb_cpu_features() >> LB_FEAT_POPCNT & 1))
        ukernel_popcnt(mr, kw, a, lda, w, c);
    else
        ukernel_generic(mr, kw, a, lda, w, c);
}

#include "gemm_binary_frame.inc"
