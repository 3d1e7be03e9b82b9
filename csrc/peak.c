/* Register-resident peak loops: independent accumulator chains, no memory traffic.
 * They measure what the cores can issue (ops/s): the compute ceilings kernels are judged
 * against, one per instruction idiom a kernel variant uses (lowbit.kernels.peak.PEAKS, the
 * roofline's per-ISA ceilings). Each returns the ops done by all pool threads (a MAC counts
 * as 2 ops, a one-bit xnor-popcount MAC too), or 0 when the CPU lacks the instructions. The
 * caller times the call.
 *
 * Each loop is the inner multiply-accumulate idiom of the kernels it bounds, operands in
 * registers, so only issue rates count (lb_peak_<precision>_<variant>):
 *   int8_vnni                vpdpbusd zmm                  gemm_int8, gemm_w4a8 avx512_vnni
 *   int8_avx512_maddwd       vpmaddwd + vpaddd zmm         gemm_int8 avx512 (16-bit pairs)
 *   int8_avx512_maddubs      vpmaddubsw + vpmaddwd + vpaddd zmm   gemm_w4a8 avx512
 *   int8_avx2_maddwd         vpmaddwd + vpaddd ymm         gemm_int8 avx2
 *   int8_avx2_maddubs        vpmaddubsw + vpmaddwd + vpaddd ymm   gemm_w4a8 avx2
 *   int8_sse2_maddwd         movdqa + pmaddwd + paddd xmm  baseline x86-64 (portable C)
 *   fp32_avx512_fma          vfmadd231ps zmm               gemm_w4a16 avx512
 *   fp32_avx2_fma            vfmadd231ps ymm               gemm_w4a16 avx2
 *   fp32_sse2_muladd         movaps + mulps + addps xmm    portable C (no FMA in the baseline)
 *   bf16_avx512_bf16         vdpbf16ps zmm                 gemm_w4a16 on bf16 (avx512_vnni tag)
 *   binary_avx512_vpopcntdq  vpxorq + vpopcntq + vpaddq zmm   gemm_binary avx512
 *   binary_avx2_lut          vpxor, vpsrlw, 2 vpand, 2 vpshufb, 2 vpaddb ymm   gemm_binary avx2
 *   binary_popcnt            mov + xor + popcnt + add r64  gemm_binary portable (POPCNT copy)
 * lb_peak_fp32_fma is the widest FMA of the CPU (avx512, else avx2): the benchmarks' fp32
 * "% of peak".
 *
 * The bodies are inline asm: compiled from intrinsics, GCC copies the destructive
 * accumulators through spare registers and spills one per iteration, which measures the
 * copies, not the unit. */
#include <immintrin.h>
#include <stdatomic.h>

#include "lowbit.h"

#define R8(op, a, b, c, d, e, f, g, h) op(a) op(b) op(c) op(d) op(e) op(f) op(g) op(h)
/* One-instruction idioms: 24 independent chains (zmm0-23) hide a 4-6 cycle latency at up to
 * 4 issues per cycle; operands in zmm30/31. */
#define CHAINS 24
#define CHAIN_OPS(op) R8(op, 0, 1, 2, 3, 4, 5, 6, 7) R8(op, 8, 9, 10, 11, 12, 13, 14, 15) \
    R8(op, 16, 17, 18, 19, 20, 21, 22, 23)
/* The same with sixteen ymm registers: 14 chains, operands in ymm14/15. */
#define YMM_CHAINS 14
#define YMM_OPS(op) R8(op, 0, 1, 2, 3, 4, 5, 6, 7) op(8) op(9) op(10) op(11) op(12) op(13)
/* Idioms with a temporary: chain i accumulates in zmm i through zmm 14 + i (zmm0-27). */
#define PAIR_CHAINS 14
#define PAIR_OPS(op) op(0, 14) op(1, 15) op(2, 16) op(3, 17) op(4, 18) op(5, 19) op(6, 20) \
    op(7, 21) op(8, 22) op(9, 23) op(10, 24) op(11, 25) op(12, 26) op(13, 27)
/* ... with two temporaries: zmm i, 10 + i, 20 + i (zmm0-29). */
#define TRIPLE_CHAINS 10
#define TRIPLE_OPS(op) op(0, 10, 20) op(1, 11, 21) op(2, 12, 22) op(3, 13, 23) op(4, 14, 24) \
    op(5, 15, 25) op(6, 16, 26) op(7, 17, 27) op(8, 18, 28) op(9, 19, 29)
/* Sixteen ymm / xmm registers, one temporary: register i through 7 + i, operands in 14/15. */
#define SMALL_CHAINS 7
#define SMALL_OPS(op) op(0, 7) op(1, 8) op(2, 9) op(3, 10) op(4, 11) op(5, 12) op(6, 13)
/* ... two temporaries: ymm i, 4 + i, 8 + i; ymm12-15 hold the operands (and the lookup's
 * table and nibble mask). */
#define SMALL3_CHAINS 4
#define SMALL3_OPS(op) op(0, 4, 8) op(1, 5, 9) op(2, 6, 10) op(3, 7, 11)
/* Scalar popcount: 5 chains (accumulator r8-r12 through rax / rbx / rcx / rdx / rsi),
 * operands in r14/r15; the loop counter takes a register left over. */
#define GPR_CHAINS 5

#define VNNI_OP(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define BF16_OP(i) "vdpbf16ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define FMA512_OP(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define FMA256_OP(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define MADDWD512_OP(a, t) "vpmaddwd %%zmm30, %%zmm31, %%zmm" #t "\n\t" \
    "vpaddd %%zmm" #t ", %%zmm" #a ", %%zmm" #a "\n\t"
#define MADDWD256_OP(a, t) "vpmaddwd %%ymm14, %%ymm15, %%ymm" #t "\n\t" \
    "vpaddd %%ymm" #t ", %%ymm" #a ", %%ymm" #a "\n\t"
#define MADDWD128_OP(a, t) "movdqa %%xmm14, %%xmm" #t "\n\t" "pmaddwd %%xmm15, %%xmm" #t "\n\t" \
    "paddd %%xmm" #t ", %%xmm" #a "\n\t"
/* vpmaddubsw, then vpmaddwd by a ones vector (the operand register here: same timing) */
#define MADDUBS512_OP(a, t, u) "vpmaddubsw %%zmm30, %%zmm31, %%zmm" #t "\n\t"                \
    "vpmaddwd %%zmm" #t ", %%zmm30, %%zmm" #u "\n\t"                                          \
    "vpaddd %%zmm" #u ", %%zmm" #a ", %%zmm" #a "\n\t"
#define MADDUBS256_OP(a, t, u) "vpmaddubsw %%ymm14, %%ymm15, %%ymm" #t "\n\t"                \
    "vpmaddwd %%ymm" #t ", %%ymm14, %%ymm" #u "\n\t"                                          \
    "vpaddd %%ymm" #u ", %%ymm" #a ", %%ymm" #a "\n\t"
#define MULADD128_OP(a, t) "movaps %%xmm14, %%xmm" #t "\n\t" "mulps %%xmm15, %%xmm" #t "\n\t" \
    "addps %%xmm" #t ", %%xmm" #a "\n\t"
#define POPCNT512_OP(a, t) "vpxorq %%zmm30, %%zmm31, %%zmm" #t "\n\t" \
    "vpopcntq %%zmm" #t ", %%zmm" #t "\n\t" "vpaddq %%zmm" #t ", %%zmm" #a ", %%zmm" #a "\n\t"
#define LUT256_OP(a, lo, hi) "vpxor %%ymm12, %%ymm13, %%ymm" #lo "\n\t"                      \
    "vpsrlw $4, %%ymm" #lo ", %%ymm" #hi "\n\t" "vpand %%ymm15, %%ymm" #lo ", %%ymm" #lo "\n\t" \
    "vpand %%ymm15, %%ymm" #hi ", %%ymm" #hi "\n\t"                                           \
    "vpshufb %%ymm" #lo ", %%ymm14, %%ymm" #lo "\n\t"                                         \
    "vpshufb %%ymm" #hi ", %%ymm14, %%ymm" #hi "\n\t"                                         \
    "vpaddb %%ymm" #hi ", %%ymm" #lo ", %%ymm" #lo "\n\t"                                     \
    "vpaddb %%ymm" #lo ", %%ymm" #a ", %%ymm" #a "\n\t"
#define POPCNT64_OP(a, t) "mov %%r14, %%" #t "\n\t" "xor %%r15, %%" #t "\n\t" \
    "popcnt %%" #t ", %%" #t "\n\t" "add %%" #t ", %%" #a "\n\t"

#define ZERO_ZMM(i) "vpxord %%zmm" #i ", %%zmm" #i ", %%zmm" #i "\n\t"
#define ZERO_YMM(i) "vpxor %%ymm" #i ", %%ymm" #i ", %%ymm" #i "\n\t"
#define ZERO_XMM(i) "pxor %%xmm" #i ", %%xmm" #i "\n\t"
#define ZERO_ZMM_ACC(a, ...) ZERO_ZMM(a)
#define ZERO_YMM_ACC(a, ...) ZERO_YMM(a)
#define ZERO_XMM_ACC(a, ...) ZERO_XMM(a)
#define ONES_ZMM(i) "vpternlogd $0xff, %%zmm" #i ", %%zmm" #i ", %%zmm" #i "\n\t"
#define ONES_YMM(i) "vpcmpeqd %%ymm" #i ", %%ymm" #i ", %%ymm" #i "\n\t"
#define ONES_XMM(i) "pcmpeqd %%xmm" #i ", %%xmm" #i "\n\t"

#define CLOBBER_XMM16 "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#define CLOBBER_ZMM CLOBBER_XMM16, "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", \
    "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31"

/* The iterations are claimed in chunks from a shared counter, as the kernels claim their
 * tiles: when another process takes a core for a while, the other threads run more chunks,
 * so the loop measures what the kernels can get, not the slowest thread. */
typedef struct {
    int64_t total, chunk; /* iterations in all, per claim */
    atomic_llong next;    /* iterations claimed so far */
} peak_ctx;

/* One peak loop: `pre` in C, then per claimed chunk the register set-up and `n` rounds of
 * independent ops, all in asm. */
#define PEAK_TASK(name, isa, pre, prologue, body, ...)                                       \
    __attribute__((target(isa))) static void name(void *vctx, int tid) {                   \
        (void)tid;                                                                          \
        peak_ctx *p = vctx;                                                                 \
        pre;                                                                                \
        for (;;) {                                                                          \
            int64_t start = atomic_fetch_add_explicit(&p->next, p->chunk,                  \
                                                      memory_order_relaxed);               \
            if (start >= p->total) break;                                                   \
            int64_t n = p->total - start < p->chunk ? p->total - start : p->chunk;          \
            __asm__ volatile(prologue "1:\n\t" body "dec %0\n\tjnz 1b\n\t"                \
                             : "+r"(n) : : __VA_ARGS__, "cc");                              \
        }                                                                                   \
    }

/* Legacy-SSE code after AVX code with dirty upper halves pays a state transition on some
 * Intel cores; a peak loop measures the instructions, so the SSE loops start clean. */
__attribute__((target("avx"))) static void zero_upper(void) { _mm256_zeroupper(); }
#define CLEAN_UPPER                                                                         \
    if (lb_cpu_features() >> LB_FEAT_AVX & 1) zero_upper()

/* Operands: the integer loops multiply all-ones registers (u8 255 x s8 -1, or -1 x -1 in
 * 16-bit pairs) and xor all ones with zero (popcount 64 per word); the float loops multiply
 * zeros, so their chains stay exactly 0 (no denormals, no overflow) however long they run.
 * The nibble lookup's table and mask contents do not change its timing; it leaves out the
 * kernel's vpsadbw fold of the byte counts (two instructions per 31 steps of 8, under 1%). */
PEAK_TASK(vnni_task, "avx512f,avx512vnni", (void)0,
          CHAIN_OPS(ZERO_ZMM) ONES_ZMM(30) ONES_ZMM(31), CHAIN_OPS(VNNI_OP), CLOBBER_ZMM)
PEAK_TASK(maddwd512_task, "avx512f,avx512bw", (void)0,
          PAIR_OPS(ZERO_ZMM_ACC) ONES_ZMM(30) ONES_ZMM(31), PAIR_OPS(MADDWD512_OP), CLOBBER_ZMM)
PEAK_TASK(maddubs512_task, "avx512f,avx512bw", (void)0,
          TRIPLE_OPS(ZERO_ZMM_ACC) ONES_ZMM(30) ONES_ZMM(31), TRIPLE_OPS(MADDUBS512_OP),
          CLOBBER_ZMM)
PEAK_TASK(maddwd256_task, "avx2", (void)0,
          SMALL_OPS(ZERO_YMM_ACC) ONES_YMM(14) ONES_YMM(15), SMALL_OPS(MADDWD256_OP),
          CLOBBER_XMM16)
PEAK_TASK(maddubs256_task, "avx2", (void)0,
          SMALL3_OPS(ZERO_YMM_ACC) ONES_YMM(14) ONES_YMM(15), SMALL3_OPS(MADDUBS256_OP),
          CLOBBER_XMM16)
PEAK_TASK(maddwd128_task, "sse2", CLEAN_UPPER,
          SMALL_OPS(ZERO_XMM_ACC) ONES_XMM(14) ONES_XMM(15), SMALL_OPS(MADDWD128_OP),
          CLOBBER_XMM16)
PEAK_TASK(fma512_task, "avx512f", (void)0,
          CHAIN_OPS(ZERO_ZMM) ZERO_ZMM(30) ZERO_ZMM(31), CHAIN_OPS(FMA512_OP), CLOBBER_ZMM)
PEAK_TASK(fma256_task, "avx2,fma", (void)0,
          YMM_OPS(ZERO_YMM) ZERO_YMM(14) ZERO_YMM(15), YMM_OPS(FMA256_OP), CLOBBER_XMM16)
PEAK_TASK(muladd128_task, "sse2", CLEAN_UPPER,
          SMALL_OPS(ZERO_XMM_ACC) ZERO_XMM(14) ZERO_XMM(15), SMALL_OPS(MULADD128_OP),
          CLOBBER_XMM16)
PEAK_TASK(bf16_task, "avx512f,avx512bf16", (void)0,
          CHAIN_OPS(ZERO_ZMM) ZERO_ZMM(30) ZERO_ZMM(31), CHAIN_OPS(BF16_OP), CLOBBER_ZMM)
PEAK_TASK(popcnt512_task, "avx512f,avx512vpopcntdq", (void)0,
          PAIR_OPS(ZERO_ZMM_ACC) ONES_ZMM(30) ZERO_ZMM(31), PAIR_OPS(POPCNT512_OP), CLOBBER_ZMM)
PEAK_TASK(lut256_task, "avx2", (void)0,
          SMALL3_OPS(ZERO_YMM_ACC) ONES_YMM(12) ZERO_YMM(13) ONES_YMM(14) ONES_YMM(15),
          SMALL3_OPS(LUT256_OP), CLOBBER_XMM16)
PEAK_TASK(popcnt64_task, "popcnt", (void)0,
          "mov $-1, %%r14\n\txor %%r15d, %%r15d\n\txor %%r8d, %%r8d\n\txor %%r9d, %%r9d\n\t"
          "xor %%r10d, %%r10d\n\txor %%r11d, %%r11d\n\txor %%r12d, %%r12d\n\t",
          POPCNT64_OP(r8, rax) POPCNT64_OP(r9, rbx) POPCNT64_OP(r10, rcx)
          POPCNT64_OP(r11, rdx) POPCNT64_OP(r12, rsi),
          "rax", "rbx", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "r12", "r14", "r15")

/* iters per pool thread, in all iters * threads claimed in 16 chunks per thread. */
#define CHUNKS_PER_THREAD 16

static double run(lb_task_fn fn, int64_t iters, double ops_per_iter) {
    const int64_t threads = lb_get_num_threads();
    peak_ctx p = {.total = iters * threads};
    p.chunk = (p.total + threads * CHUNKS_PER_THREAD - 1) / (threads * CHUNKS_PER_THREAD);
    atomic_init(&p.next, 0);
    lb_parallel(fn, &p);
    return ops_per_iter * (double)p.total;
}

static int has(int feature) { return (int)(lb_cpu_features() >> feature & 1); }

/* Ops of one iteration of one thread: chains x MACs per chain step x 2. */
double lb_peak_int8_vnni(int64_t iters) {
    if (!has(LB_FEAT_AVX512_VNNI) || !has(LB_FEAT_AVX512BW)) return 0.0;
    return run(vnni_task, iters, CHAINS * 64.0 * 2.0);
}

double lb_peak_int8_avx512_maddwd(int64_t iters) {
    if (!has(LB_FEAT_AVX512F) || !has(LB_FEAT_AVX512BW)) return 0.0;
    return run(maddwd512_task, iters, PAIR_CHAINS * 32.0 * 2.0);
}

double lb_peak_int8_avx512_maddubs(int64_t iters) {
    if (!has(LB_FEAT_AVX512F) || !has(LB_FEAT_AVX512BW)) return 0.0;
    return run(maddubs512_task, iters, TRIPLE_CHAINS * 64.0 * 2.0);
}

double lb_peak_int8_avx2_maddwd(int64_t iters) {
    return has(LB_FEAT_AVX2) ? run(maddwd256_task, iters, SMALL_CHAINS * 16.0 * 2.0) : 0.0;
}

double lb_peak_int8_avx2_maddubs(int64_t iters) {
    return has(LB_FEAT_AVX2) ? run(maddubs256_task, iters, SMALL3_CHAINS * 32.0 * 2.0) : 0.0;
}

double lb_peak_int8_sse2_maddwd(int64_t iters) {
    return run(maddwd128_task, iters, SMALL_CHAINS * 8.0 * 2.0);
}

double lb_peak_fp32_avx512_fma(int64_t iters) {
    return has(LB_FEAT_AVX512F) ? run(fma512_task, iters, CHAINS * 16.0 * 2.0) : 0.0;
}

double lb_peak_fp32_avx2_fma(int64_t iters) {
    if (!has(LB_FEAT_AVX2) || !has(LB_FEAT_FMA)) return 0.0;
    return run(fma256_task, iters, YMM_CHAINS * 8.0 * 2.0);
}

double lb_peak_fp32_sse2_muladd(int64_t iters) {
    return run(muladd128_task, iters, SMALL_CHAINS * 4.0 * 2.0);
}

double lb_peak_fp32_fma(int64_t iters) {
    return has(LB_FEAT_AVX512F) ? lb_peak_fp32_avx512_fma(iters) : lb_peak_fp32_avx2_fma(iters);
}

double lb_peak_bf16_avx512_bf16(int64_t iters) {
    if (!has(LB_FEAT_AVX512F) || !has(LB_FEAT_AVX512_BF16)) return 0.0;
    return run(bf16_task, iters, CHAINS * 32.0 * 2.0);
}

double lb_peak_binary_avx512_vpopcntdq(int64_t iters) {
    if (!has(LB_FEAT_AVX512F) || !has(LB_FEAT_AVX512_VPOPCNTDQ)) return 0.0;
    return run(popcnt512_task, iters, PAIR_CHAINS * 512.0 * 2.0);
}

double lb_peak_binary_avx2_lut(int64_t iters) {
    return has(LB_FEAT_AVX2) ? run(lut256_task, iters, SMALL3_CHAINS * 256.0 * 2.0) : 0.0;
}

double lb_peak_binary_popcnt(int64_t iters) {
    return has(LB_FEAT_POPCNT) ? run(popcnt64_task, iters, GPR_CHAINS * 64.0 * 2.0) : 0.0;
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
