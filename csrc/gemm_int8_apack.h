/* A-packing rules shared by the int8 GEMM variants (see gemm_int8_frame.inc). */
#ifndef LOWBIT_GEMM_INT8_APACK_H
#define LOWBIT_GEMM_INT8_APACK_H

#include <stdint.h>
#include <string.h>

/* u8 quad for u8 x s8 dot products (VNNI): int8 activations are shifted to unsigned by
 * flipping the sign bit (a + 128); the frame subtracts 128 * colsum afterwards. */
static inline void pack_a_quad_u8(uint8_t *dst, const uint8_t *src, int nvalid, int a_signed) {
    uint8_t q[4] = {0, 0, 0, 0};
    memcpy(q, src, (size_t)nvalid);
    uint32_t v;
    memcpy(&v, q, 4);
    if (a_signed) v ^= 0x80808080u;
    memcpy(dst, &v, 4);
}

/* int16 pairs for exact 16-bit multiply-add (vpmaddwd): two 32-bit words per quad,
 * word 0 = (a0, a2), word 1 = (a1, a3), each value sign- or zero-extended to 16 bits.
 * Matches weights split into even bytes (r0, r2) and odd bytes (r1, r3) of a 32-bit lane. */
static inline void pack_a_quad_i16pairs(uint8_t *dst, const uint8_t *src, int nvalid,
                                        int a_signed) {
    uint16_t v[4] = {0, 0, 0, 0};
    for (int r = 0; r < nvalid; ++r)
        v[r] = a_signed ? (uint16_t)(int16_t)(int8_t)src[r] : (uint16_t)src[r];
    uint32_t words[2] = {(uint32_t)v[0] | ((uint32_t)v[2] << 16),
                         (uint32_t)v[1] | ((uint32_t)v[3] << 16)};
    memcpy(dst, words, 8);
}

#endif
