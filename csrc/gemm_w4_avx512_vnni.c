/* int4-weight GEMM microkernel, AVX-512 VNNI: gemm_w4a8 with vpdpbusd (nibbles as the
 * unsigned operand, the int8 activations as the signed one; two per K block of 8).
 * Body: gemm_w4a8_avx512.inc. gemm_w4a16 has no VNNI variant (its products are float). */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
#include <immintrin.h>
#include <string.h>

#include "lowbit.h"

#define W4A8_ENTRY lb_w4a8_ukernel_avx512_vnni
#ifndef W4_PF_DIST
#define W4_PF_DIST 4096
#endif

#include "gemm_w4_avx512.h"

#define PREFETCH_BLOCK prefetch_block
#define DOT(acc, lo, hi, a0, a1) _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc, lo, a0), hi, a1)

#include "gemm_w4a8_avx512.inc"
