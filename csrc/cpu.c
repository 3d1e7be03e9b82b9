/* CPU feature detection (cpuid + xgetbv) and the once-at-load choice of ISA variant. */
#include <cpuid.h>
#include <stdlib.h>

#include "lowbit.h"

static const char *const feature_names[LB_FEAT_COUNT] = {
    "sse2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx512_vpopcntdq", "avx512_bf16", "avx512_bitalg", "avx512_vbmi", "bmi2",
    "popcnt",
};

static const char *const isa_names[LB_ISA_COUNT] = {"portable", "avx2", "avx512", "avx512_vnni"};

/* Features each ISA variant needs. */
static const uint64_t isa_needs[LB_ISA_COUNT] = {
    0,
    1ull << LB_FEAT_AVX2,
    (1ull << LB_FEAT_AVX512F) | (1ull << LB_FEAT_AVX512BW) | (1ull << LB_FEAT_AVX512DQ) |
        (1ull << LB_FEAT_AVX512VL),
    (1ull << LB_FEAT_AVX512F) | (1ull << LB_FEAT_AVX512BW) | (1ull << LB_FEAT_AVX512DQ) |
        (1ull << LB_FEAT_AVX512VL) | (1ull << LB_FEAT_AVX512_VNNI),
};

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static uint64_t detect(void) {
    unsigned a, b, c, d;
    uint64_t f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (d & (1u << 26)) f |= 1ull << LB_FEAT_SSE2;
    if (c & (1u << 23)) f |= 1ull << LB_FEAT_POPCNT;
    /* Wide registers are usable only if the OS saves them: OSXSAVE, then XCR0 bits. */
    int osxsave = (c >> 27) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int ymm_ok = (xcr0 & 0x6) == 0x6;             /* SSE + AVX state */
    int zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;  /* opmask + ZMM_Hi256 + Hi16_ZMM */
    if (ymm_ok && (c & (1u << 28))) f |= 1ull << LB_FEAT_AVX;
    if (ymm_ok && (c & (1u << 12))) f |= 1ull << LB_FEAT_FMA;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    if (ymm_ok && (b & (1u << 5))) f |= 1ull << LB_FEAT_AVX2;
    if (b & (1u << 8)) f |= 1ull << LB_FEAT_BMI2;
    if (zmm_ok) {
        if (b & (1u << 16)) f |= 1ull << LB_FEAT_AVX512F;
        if (b & (1u << 17)) f |= 1ull << LB_FEAT_AVX512DQ;
        if (b & (1u << 30)) f |= 1ull << LB_FEAT_AVX512BW;
        if (b & (1u << 31)) f |= 1ull << LB_FEAT_AVX512VL;
        if (c & (1u << 1)) f |= 1ull << LB_FEAT_AVX512_VBMI;
        if (c & (1u << 11)) f |= 1ull << LB_FEAT_AVX512_VNNI;
        if (c & (1u << 12)) f |= 1ull << LB_FEAT_AVX512_BITALG;
        if (c & (1u << 14)) f |= 1ull << LB_FEAT_AVX512_VPOPCNTDQ;
    }
    unsigned sub_a, sub_b, sub_c, sub_d;
    __cpuid_count(7, 1, sub_a, sub_b, sub_c, sub_d);
    if (ymm_ok && (sub_a & (1u << 4))) f |= 1ull << LB_FEAT_AVX_VNNI;
    if (zmm_ok && (sub_a & (1u << 5))) f |= 1ull << LB_FEAT_AVX512_BF16;
    return f;
}

static uint64_t features;
static int features_known;
static uint32_t disabled_mask;
static int selected_isa;

uint64_t lb_cpu_features(void) {
    if (!features_known) {
        features = detect();
        features_known = 1;
    }
    return features;
}

const char *lb_feature_name(int bit) {
    return (bit >= 0 && bit < LB_FEAT_COUNT) ? feature_names[bit] : NULL;
}

int lb_isa_count(void) { return LB_ISA_COUNT; }

const char *lb_isa_name(int isa) {
    return (isa >= 0 && isa < LB_ISA_COUNT) ? isa_names[isa] : NULL;
}

int lb_isa_supported(int isa) {
    if (isa < 0 || isa >= LB_ISA_COUNT) return 0;
    return (lb_cpu_features() & isa_needs[isa]) == isa_needs[isa];
}

int lb_isa_usable(int isa) {
    /* The portable variant is the floor: it cannot be disabled. */
    if (isa == LB_ISA_PORTABLE) return 1;
    return lb_isa_supported(isa) && !(disabled_mask & (1u << isa));
}

void lb_init(uint32_t disabled) {
    disabled_mask = disabled;
    selected_isa = LB_ISA_PORTABLE;
    for (int isa = LB_ISA_COUNT - 1; isa > LB_ISA_PORTABLE; --isa)
        if (lb_isa_usable(isa)) {
            selected_isa = isa;
            break;
        }
}

int lb_selected_isa(void) { return selected_isa; }

static const lb_gemm_int8_fn gemm_int8_variants[LB_ISA_COUNT] = {
    lb_gemm_int8_portable, lb_gemm_int8_avx2, lb_gemm_int8_avx512, lb_gemm_int8_avx512_vnni};

int lb_gemm_int8(int isa, int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
                 int32_t a_signed, int32_t a_zero_point, const int8_t *w,
                 const int32_t *w_colsum, const lb_epilogue *ep, void *out, int64_t ldo) {
    if (isa < 0) isa = selected_isa;
    if (isa >= LB_ISA_COUNT || !lb_isa_supported(isa)) return LB_EISA;
    if (m < 0 || n <= 0 || k <= 0 || lda < k || ldo < n || !a || !w || !w_colsum || !ep || !out)
        return LB_EINVAL;
    if (ep->kind < 0 || ep->kind > 2) return LB_EINVAL;
    if (m == 0) return LB_OK;
    return gemm_int8_variants[isa](m, n, k, a, lda, a_signed, a_zero_point, w, w_colsum, ep, out,
                                   ldo);
}

void *lb_aligned_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    return p;
}

void lb_aligned_free(void *p) { free(p); }
