/* int8 GEMM, portable C variant: baseline x86-64 (SSE2) code the compiler vectorizes.
 * Same packed activations as the AVX2/AVX-512 variants (16-bit even/odd pairs). */
#include "gemm_int8_apack.h"
#include "lowbit.h"

#define LB_ENTRY lb_gemm_int8_portable
#define MR 4
#define A_QUAD_BYTES 8
#define A_SIGNED_OFFSET 0
#define pack_a_quad pack_a_quad_i16pairs
#define store_rows lb_store_rows_portable

static void ukernel(int mr, int64_t kq, const uint8_t *a, const int8_t *w, int32_t *c) {
    uint32_t *acc = (uint32_t *)c; /* wrap-around accumulation, as the SIMD variants do */
    for (int i = 0; i < mr; ++i)
        for (int j = 0; j < 64; ++j) acc[64 * i + j] = 0;
    for (int64_t q = 0; q < kq; ++q, a += 8 * MR, w += 256) {
        for (int i = 0; i < mr; ++i) {
            uint32_t even, odd;
            memcpy(&even, a + 8 * i, 4);
            memcpy(&odd, a + 8 * i + 4, 4);
            const int32_t a0 = (int16_t)(even & 0xffff), a2 = (int16_t)(even >> 16);
            const int32_t a1 = (int16_t)(odd & 0xffff), a3 = (int16_t)(odd >> 16);
            uint32_t *ci = acc + 64 * i;
            for (int j = 0; j < 64; ++j)
                ci[j] += (uint32_t)(a0 * w[4 * j] + a1 * w[4 * j + 1] + a2 * w[4 * j + 2] +
                                    a3 * w[4 * j + 3]);
        }
    }
}

#include "gemm_int8_frame.inc"
