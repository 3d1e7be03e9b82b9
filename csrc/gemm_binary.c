/* lb_gemm_binary: the C entry of the binary GEMM and its own ISA choice.
 *
 * ISA tags are per operation: gemm_binary has no VNNI variant, and its "avx512" variant is
 * the VPOPCNTDQ one, so it needs the "avx512" ISA's features (AVX512F/BW/DQ/VL) plus
 * AVX512_VPOPCNTDQ; LOWBIT_DISABLE_ISA=avx512 disables it like the int8 one. */
#include <stdint.h>

#include "lowbit.h"

static const lb_gemm_binary_fn variants[LB_ISA_COUNT] = {
    lb_gemm_binary_portable, lb_gemm_binary_avx2, lb_gemm_binary_avx512, NULL};

int lb_binary_generic_popcount;

int lb_gemm_binary_force_generic_popcount(int on) {
    int before = lb_binary_generic_popcount;
    lb_binary_generic_popcount = on != 0;
    return before;
}

int lb_gemm_binary_supported(int isa) {
    if (isa < 0 || isa >= LB_ISA_COUNT || !variants[isa] || !lb_isa_supported(isa)) return 0;
    if (isa == LB_ISA_AVX512) return (int)(lb_cpu_features() >> LB_FEAT_AVX512_VPOPCNTDQ & 1);
    return 1;
}

int lb_gemm_binary_selected(void) {
    for (int isa = LB_ISA_COUNT - 1; isa > LB_ISA_PORTABLE; --isa)
        if (lb_gemm_binary_supported(isa) && lb_isa_usable(isa)) return isa;
    return LB_ISA_PORTABLE;
}

int lb_gemm_binary(int isa, int64_t m, int64_t n, int64_t k, const uint64_t *a, int64_t lda,
                   const uint64_t *w, const float *alpha, const float *beta, void *out,
                   int64_t ldo) {
    if (isa < 0) isa = lb_gemm_binary_selected();
    if (!lb_gemm_binary_supported(isa)) return LB_EISA;
    if (m < 0 || n <= 0 || k <= 0 || k > INT32_MAX || lda < (k + 63) / 64 || ldo < n || !a ||
        !w || !out)
        return LB_EINVAL;
    if (m == 0) return LB_OK;
    return variants[isa](m, n, k, a, lda, w, alpha, beta, out, ldo);
}
