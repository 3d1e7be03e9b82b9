/* 2:4 sparse GEMM microkernel, AVX-512 VNNI, int8: vpdpbusd of the gathered activations
 * (uint8 operand: the frame flips int8 activations to a + 128) and the int8 kept values,
 * four products per column lane. Body: gemm_sparse24_s8_avx512.inc. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

#define S8_ENTRY lb_s24_s8_ukernel_avx512_vnni
#define S8_MR LB_S24_MR_AVX512_VNNI
#define DOT(acc, g, w) _mm512_dpbusd_epi32(acc, g, w)

#include "gemm_sparse24_s8_avx512.inc"
