/* Binary GEMM, AVX2 variant: popcount by nibble lookup (vpshufb on the low and high nibbles
 * of every byte), byte counts summed into int64 lanes with vpsadbw.
 * Tile 4 x 32, walked in four strips of 8 columns (2 ymm of 4 words): 8 byte-count
 * accumulators + 2 weight vectors + the lookup table and nibble mask fill the 16 ymm
 * registers. A byte count grows by at most 8 per word, so the byte accumulators are folded
 * into the int64 sums (vpsadbw) every BLOCK = 31 words (31 * 8 = 248 <= 255). The A strip
 * of a tile (4 rows x K bits) is re-read per strip from L1. */
#pragma GCC target("avx2")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

#define LB_ENTRY lb_gemm_binary_avx2
#define MR 4
#define BLOCK 31

static inline uint64_t load_word(const uint64_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline __attribute__((always_inline)) __m256i popcnt_bytes(__m256i x, __m256i lut,
                                                                  __m256i low) {
    const __m256i lo = _mm256_and_si256(x, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* Byte counts of word q of rows i < R against the strip's 8 columns. */
static inline __attribute__((always_inline)) void step(const int R, __m256i b[MR][2],
                                                       const uint64_t *a, int64_t lda,
                                                       int64_t q, const uint64_t *wq,
                                                       __m256i lut, __m256i low) {
    const __m256i w0 = _mm256_load_si256((const __m256i *)wq);
    const __m256i w1 = _mm256_load_si256((const __m256i *)(wq + 4));
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
        const __m256i ai = _mm256_set1_epi64x((long long)load_word(a + i * lda + q));
        b[i][0] = _mm256_add_epi8(b[i][0], popcnt_bytes(_mm256_xor_si256(ai, w0), lut, low));
        b[i][1] = _mm256_add_epi8(b[i][1], popcnt_bytes(_mm256_xor_si256(ai, w1), lut, low));
    }
}

static inline __attribute__((always_inline)) void fold(const int R, __m256i sum[MR][2],
                                                       __m256i b[MR][2]) {
    const __m256i zero = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < 2; ++v) {
            sum[i][v] = _mm256_add_epi64(sum[i][v], _mm256_sad_epu8(b[i][v], zero));
            b[i][v] = zero;
        }
}

static inline __attribute__((always_inline)) void ukernel_rows(const int R, int64_t kw,
                                                               const uint64_t *a, int64_t lda,
                                                               const uint64_t *w, int32_t *c) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    for (int s = 0; s < LB_B_NR; s += 8) {
        __m256i sum[MR][2], b[MR][2];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i)
            sum[i][0] = sum[i][1] = b[i][0] = b[i][1] = _mm256_setzero_si256();
        const uint64_t *ws = w + s;
        for (int64_t q0 = 0; q0 < kw; q0 += BLOCK) {
            const int64_t q1 = q0 + BLOCK < kw ? q0 + BLOCK : kw;
            for (int64_t q = q0; q < q1; ++q) step(R, b, a, lda, q, ws + q * LB_B_NR, lut, low);
            fold(R, sum, b);
        }
        /* Counts are at most K < 2^31: keep the low dword of each int64 lane. */
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i)
            for (int v = 0; v < 2; ++v)
                _mm_store_si128((__m128i *)(c + LB_B_NR * i + s + 4 * v),
                                _mm256_castsi256_si128(
                                    _mm256_permutevar8x32_epi32(sum[i][v], low_dwords)));
    }
}

static void ukernel(int mr, int64_t kw, const uint64_t *a, int64_t lda, const uint64_t *w,
                    int32_t *c) {
    switch (mr) {
        case 1: ukernel_rows(1, kw, a, lda, w, c); break;
        case 2: ukernel_rows(2, kw, a, lda, w, c); break;
        case 3: ukernel_rows(3, kw, a, lda, w, c); break;
        default: ukernel_rows(4, kw, a, lda, w, c); break;
    }
}

#include "gemm_binary_frame.inc"
