/* Internal header shared by the C sources of lowbit._native. */
#ifndef LOWBIT_H
#define LOWBIT_H

#include <stddef.h>
#include <stdint.h>

#include "lowbit_api.h"

/* ISA variants, in order of preference (highest last). Python mirrors these names. */
enum { LB_ISA_PORTABLE = 0, LB_ISA_AVX2 = 1, LB_ISA_AVX512 = 2, LB_ISA_AVX512_VNNI = 3, LB_ISA_COUNT = 4 };

/* CPU feature bits reported by lb_cpu_features(); OS register-state support is folded in. */
enum {
    LB_FEAT_SSE2 = 0, LB_FEAT_AVX = 1, LB_FEAT_AVX2 = 2, LB_FEAT_FMA = 3, LB_FEAT_AVX_VNNI = 4,
    LB_FEAT_AVX512F = 5, LB_FEAT_AVX512BW = 6, LB_FEAT_AVX512DQ = 7, LB_FEAT_AVX512VL = 8,
    LB_FEAT_AVX512_VNNI = 9, LB_FEAT_AVX512_VPOPCNTDQ = 10, LB_FEAT_AVX512_BF16 = 11,
    LB_FEAT_AVX512_BITALG = 12, LB_FEAT_AVX512_VBMI = 13, LB_FEAT_BMI2 = 14, LB_FEAT_POPCNT = 15,
    LB_FEAT_COUNT = 16
};

/* Weight panels: NR output columns, K in quads of 4 (see gemm_int8_frame.inc). */
#define LB_W_NR 64
#define LB_W_KQ 4

/* Error codes returned to the wrapper. */
#define LB_OK 0
#define LB_EINVAL (-1)
#define LB_ENOMEM (-2)
#define LB_EISA (-3)

/* Thread pool: run fn(ctx, tid) on every active thread (the caller is tid 0) and wait.
 * Work must be claimed dynamically by the callee, so correctness never depends on how
 * many threads run it; a re-entrant or concurrent call runs serially on the caller. */
typedef void (*lb_task_fn)(void *ctx, int tid);
void lb_parallel(lb_task_fn fn, void *ctx);

/* Per-ISA int8 GEMM entry points (one per gemm_int8_<isa>.c). */
typedef int (*lb_gemm_int8_fn)(int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
                               int32_t a_signed, int32_t a_zero_point, const int8_t *w,
                               const int32_t *w_colsum, const lb_epilogue *ep, void *out,
                               int64_t ldo);
int lb_gemm_int8_portable(int64_t, int64_t, int64_t, const void *, int64_t, int32_t, int32_t,
                          const int8_t *, const int32_t *, const lb_epilogue *, void *, int64_t);
int lb_gemm_int8_avx2(int64_t, int64_t, int64_t, const void *, int64_t, int32_t, int32_t,
                      const int8_t *, const int32_t *, const lb_epilogue *, void *, int64_t);
int lb_gemm_int8_avx512(int64_t, int64_t, int64_t, const void *, int64_t, int32_t, int32_t,
                        const int8_t *, const int32_t *, const lb_epilogue *, void *, int64_t);
int lb_gemm_int8_avx512_vnni(int64_t, int64_t, int64_t, const void *, int64_t, int32_t, int32_t,
                             const int8_t *, const int32_t *, const lb_epilogue *, void *,
                             int64_t);

/* Binary GEMM weight panels: LB_B_NR output columns of 64-bit words (gemm_binary_frame.inc). */
#define LB_B_NR 32

/* Per-ISA binary GEMM entry points (one per gemm_binary_<isa>.c); AVX-512 means VPOPCNTDQ. */
typedef int (*lb_gemm_binary_fn)(int64_t m, int64_t n, int64_t k, const uint64_t *a,
                                 int64_t lda, const uint64_t *w, const float *alpha,
                                 const float *beta, void *out, int64_t ldo);
int lb_gemm_binary_portable(int64_t, int64_t, int64_t, const uint64_t *, int64_t,
                            const uint64_t *, const float *, const float *, void *, int64_t);
int lb_gemm_binary_avx2(int64_t, int64_t, int64_t, const uint64_t *, int64_t, const uint64_t *,
                        const float *, const float *, void *, int64_t);
int lb_gemm_binary_avx512(int64_t, int64_t, int64_t, const uint64_t *, int64_t,
                          const uint64_t *, const float *, const float *, void *, int64_t);
/* The portable variant's popcount flavour (lb_gemm_binary_force_generic_popcount). */
extern int lb_binary_generic_popcount;

void *lb_aligned_alloc(size_t bytes);
void lb_aligned_free(void *p);

/* A reusable 64-byte-aligned scratch buffer (packed activations), so that large calls do
 * not page-fault a fresh allocation every time; concurrent callers get their own. */
void *lb_scratch_acquire(size_t bytes);
void lb_scratch_release(void *p);

#endif
