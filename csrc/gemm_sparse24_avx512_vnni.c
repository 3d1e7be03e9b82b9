/* 2:4 sparse GEMM microkernel, AVX-512 VNNI, int8: vpermb gathers the activations (uint8
 * operand: int8 activations flipped to a + 128) and vpdpbusd multiplies them with the int8
 * kept values, four products per column lane. Needs AVX512_VBMI for vpermb (the frame
 * gates the variant on it). Body: gemm_sparse24_s8_avx512.inc. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

#define S8_ENTRY lb_s24_s8_ukernel_avx512_vnni
#define S8_MR LB_S24_MR_AVX512_VNNI
#define S8_CONTROLS lb_s24_s8_controls_avx512_vnni
#define S8_VPERMB 1
#define DOT(acc, g, w) _mm512_dpbusd_epi32(acc, g, w)

#include "gemm_sparse24_s8_avx512.inc"
