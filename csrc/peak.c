/* Register-resident peak loops: independent accumulator chains, no memory traffic.
 * They measure what the cores can issue (ops/s), the ceiling the GEMM is reported against.
 * Each returns the ops done by all pool threads (a MAC counts as 2 ops), or 0 when the CPU
 * lacks the instructions. The caller times the call. */
#include <immintrin.h>
#include <stdatomic.h>

#include "lowbit.h"

/* 24 independent chains hide a 4-5 cycle latency at up to 4 issues per cycle. The loop body
 * is inline asm: compiled from intrinsics, GCC copies the destructive accumulators through
 * spare registers and spills one per iteration, which measures the copies, not the unit. */
#define CHAINS 24
#define R8(op, a, b, c, d, e, f, g, h) op(a) op(b) op(c) op(d) op(e) op(f) op(g) op(h)
#define CHAIN_OPS(op) R8(op, 0, 1, 2, 3, 4, 5, 6, 7) R8(op, 8, 9, 10, 11, 12, 13, 14, 15) \
    R8(op, 16, 17, 18, 19, 20, 21, 22, 23)
#define VNNI_OP(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define FMA512_OP(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define FMA256_OP(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define CLOBBER_ZMM "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", \
    "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm30", "xmm31"

typedef struct {
    int64_t iters;
    atomic_int ran; /* threads that ran the loop */
} peak_ctx;

/* One peak loop: zero the chains, then `iters` rounds of independent ops, all in asm. */
#define PEAK_TASK(name, isa, prologue, body, ...)                                            \
    __attribute__((target(isa))) static void name(void *vctx, int tid) {                   \
        (void)tid;                                                                          \
        peak_ctx *p = vctx;                                                                 \
        int64_t n = p->iters;                                                               \
        __asm__ volatile(prologue "1:\n\t" body "dec %0\n\tjnz 1b\n\t"                    \
                         : "+r"(n) : : __VA_ARGS__, "cc");                                  \
        atomic_fetch_add(&p->ran, 1);                                                       \
    }

#define ZERO_ZMM(i) "vpxord %%zmm" #i ", %%zmm" #i ", %%zmm" #i "\n\t"
#define ZERO_YMM(i) "vpxor %%ymm" #i ", %%ymm" #i ", %%ymm" #i "\n\t"
#define YMM_CHAINS(op) R8(op, 0, 1, 2, 3, 4, 5, 6, 7) op(8) op(9) op(10) op(11) op(12) op(13)
#define FMA256_CHAINS 14 /* sixteen ymm registers: 14 chains and two operands */

/* Operands: zmm30/31 (ymm14/15) all ones for VNNI (u8 255 x s8 -1), zero for FMA, so
 * the FMA chains stay exactly 0 (no denormals, no overflow) however long they run. */
PEAK_TASK(vnni_task, "avx512f,avx512vnni",
          CHAIN_OPS(ZERO_ZMM) "vpternlogd $0xff, %%zmm31, %%zmm31, %%zmm31\n\t"
          "vpternlogd $0xff, %%zmm30, %%zmm30, %%zmm30\n\t",
          CHAIN_OPS(VNNI_OP), CLOBBER_ZMM)
PEAK_TASK(fma512_task, "avx512f",
          CHAIN_OPS(ZERO_ZMM) ZERO_ZMM(30) ZERO_ZMM(31), CHAIN_OPS(FMA512_OP), CLOBBER_ZMM)
PEAK_TASK(fma256_task, "avx2,fma",
          YMM_CHAINS(ZERO_YMM) ZERO_YMM(14) ZERO_YMM(15), YMM_CHAINS(FMA256_OP),
          "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15")

static double run(lb_task_fn fn, int64_t iters, double ops_per_iter) {
    peak_ctx p = {.iters = iters};
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
        return run(fma256_task, iters, FMA256_CHAINS * 8.0 * 2.0);
    return 0.0;
}

/* STREAM-like read bandwidth: every pool thread claims 1 MiB chunks of the buffer from a
 * shared counter and sums them with 64-byte (AVX-512) or 32-byte loads (the sum keeps the
 * loads alive). */
#define BW_CHUNK ((int64_t)1 << 20)

typedef struct {
    const uint8_t *buf;
    int64_t nbytes, chunks;
    atomic_llong next;
    atomic_ullong sink;
} bw_ctx;

/* Software prefetch this far ahead, as the int4 GEMV kernels do (the hardware prefetchers
 * stop at 4 KB pages): without it the loop reads slower than those kernels stream. */
#define BW_PF_DIST 2048

__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, int64_t n) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < n; i += 256) {
        _mm_prefetch((const char *)(p + i + BW_PF_DIST), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + BW_PF_DIST + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + BW_PF_DIST + 128), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + BW_PF_DIST + 192), _MM_HINT_T0);
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(p + i));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(p + i + 64));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(p + i + 128));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(p + i + 192));
    }
    return (uint64_t)_mm512_reduce_add_epi64(
        _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, int64_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < n; i += 128) {
        _mm_prefetch((const char *)(p + i + BW_PF_DIST), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + BW_PF_DIST + 64), _MM_HINT_T0);
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

static uint64_t read_portable(const uint8_t *p, int64_t n) {
    const uint64_t *q = (const uint64_t *)(const void *)p;
    uint64_t s0 = 0, s1 = 0;
    for (int64_t i = 0; i < n / 8; i += 2) {
        s0 += q[i];
        s1 += q[i + 1];
    }
    return s0 + s1;
}

static void bw_task(void *vctx, int tid) {
    (void)tid;
    bw_ctx *g = vctx;
    uint64_t f = lb_cpu_features(), sum = 0;
    for (;;) {
        int64_t c = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (c >= g->chunks) break;
        int64_t off = (c % (g->nbytes / BW_CHUNK + (g->nbytes % BW_CHUNK != 0))) * BW_CHUNK;
        int64_t len = g->nbytes - off < BW_CHUNK ? g->nbytes - off : BW_CHUNK;
        if (f >> LB_FEAT_AVX512F & 1)
            sum += read_avx512(g->buf + off, len);
        else if (f >> LB_FEAT_AVX2 & 1)
            sum += read_avx2(g->buf + off, len);
        else
            sum += read_portable(g->buf + off, len);
    }
    atomic_fetch_add(&g->sink, sum);
}

double lb_read_bandwidth(const void *buf, int64_t nbytes, int64_t passes) {
    if (!buf || nbytes <= 0 || nbytes % 256 || passes < 1 || (uintptr_t)buf % 64) return 0.0;
    bw_ctx g = {.buf = buf, .nbytes = nbytes};
    int64_t per_pass = nbytes / BW_CHUNK + (nbytes % BW_CHUNK != 0);
    g.chunks = per_pass * passes;
    atomic_init(&g.next, 0);
    atomic_init(&g.sink, 0);
    lb_parallel(bw_task, &g);
    __asm__ volatile("" : : "r"(atomic_load(&g.sink)) : "memory");
    return (double)nbytes * (double)passes;
}
