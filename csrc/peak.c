/* Register-resident peak loops: independent accumulator chains, no memory traffic.
 * They measure what the cores can issue (ops/s), the ceiling the GEMM is reported against.
 * Each returns the ops done by all pool threads (a MAC counts as 2 ops), or 0 when the CPU
 * lacks the instructions. The caller times the call. */
#include <immintrin.h>
#include <stdatomic.h>

#include "lowbit.h"

/* 16 chains hide a 4-5 cycle latency at 2-4 issues per cycle. */
#define CHAINS 16

typedef struct {
    int64_t iters;
    atomic_llong sink;
    atomic_int ran; /* threads that ran the loop */
} peak_ctx;

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void vnni_task(void *vctx, int tid) {
    (void)tid;
    peak_ctx *p = vctx;
    __m512i acc[CHAINS];
    const __m512i x = _mm512_set1_epi32(0x01010101), y = _mm512_set1_epi32(0x01ff01ff);
    for (int c = 0; c < CHAINS; ++c) acc[c] = _mm512_set1_epi32(c);
    for (int64_t it = 0; it < p->iters; ++it)
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], x, y);
    __m512i s = acc[0];
    for (int c = 1; c < CHAINS; ++c) s = _mm512_add_epi32(s, acc[c]);
    atomic_fetch_add(&p->sink, _mm512_reduce_add_epi32(s));
    atomic_fetch_add(&p->ran, 1);
}

__attribute__((target("avx512f"))) static void fma512_task(void *vctx, int tid) {
    (void)tid;
    peak_ctx *p = vctx;
    __m512 acc[CHAINS];
    const __m512 x = _mm512_set1_ps(1.0f), y = _mm512_set1_ps(1e-7f);
    for (int c = 0; c < CHAINS; ++c) acc[c] = _mm512_set1_ps((float)c);
    for (int64_t it = 0; it < p->iters; ++it)
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; ++c) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
    __m512 s = acc[0];
    for (int c = 1; c < CHAINS; ++c) s = _mm512_add_ps(s, acc[c]);
    atomic_fetch_add(&p->sink, (long long)_mm512_reduce_add_ps(s));
    atomic_fetch_add(&p->ran, 1);
}

__attribute__((target("avx2,fma"))) static void fma256_task(void *vctx, int tid) {
    (void)tid;
    peak_ctx *p = vctx;
    __m256 acc[CHAINS];
    const __m256 x = _mm256_set1_ps(1.0f), y = _mm256_set1_ps(1e-7f);
    for (int c = 0; c < CHAINS; ++c) acc[c] = _mm256_set1_ps((float)c);
    for (int64_t it = 0; it < p->iters; ++it)
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; ++c) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
    __m256 s = acc[0];
    for (int c = 1; c < CHAINS; ++c) s = _mm256_add_ps(s, acc[c]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    atomic_fetch_add(&p->sink, (long long)lanes[0]);
    atomic_fetch_add(&p->ran, 1);
}

static double run(lb_task_fn fn, int64_t iters, double ops_per_iter) {
    peak_ctx p = {.iters = iters};
    atomic_init(&p.sink, 0);
    atomic_init(&p.ran, 0);
    /* Every thread runs the whole loop once (not a shared task queue as in the kernels). */
    lb_parallel(fn, &p);
    return ops_per_iter * (double)iters * atomic_load(&p.ran);
}

double lb_peak_int8_vnni(int64_t iters) {
    uint64_t f = lb_cpu_features();
    if (!(f & (1ull << LB_FEAT_AVX512_VNNI)) || !(f & (1ull << LB_FEAT_AVX512BW))) return 0.0;
    return run(vnni_task, iters, CHAINS * 64.0 * 2.0);
}

double lb_peak_fp32_fma(int64_t iters) {
    uint64_t f = lb_cpu_features();
    if (f & (1ull << LB_FEAT_AVX512F)) return run(fma512_task, iters, CHAINS * 16.0 * 2.0);
    if ((f & (1ull << LB_FEAT_AVX2)) && (f & (1ull << LB_FEAT_FMA)))
        return run(fma256_task, iters, CHAINS * 8.0 * 2.0);
    return 0.0;
}
