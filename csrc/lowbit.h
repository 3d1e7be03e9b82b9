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

/* int4-weight GEMMs (gemm_w4.c): a portable frame calls per-ISA microkernels through these
 * pointers, one call per (row tile of R <= LB_W4_MR rows, run of groups, 64-column panel).
 * Contract, in exact arithmetic: for r < R and j < 64,
 *   c[64 r + j] += sum over gg < groups of  s[gg][j] * (sum over k in group gg of
 *                  A[r][k] * n[k][j]  -  z[gg][j] * rsum[r * rsum_ld + gg])
 * with n the nibbles, s the scales, z the zero points (8 when zeros is NULL) and rsum the
 * activations' sum over each group (given when the frame computed it: always for w4a8, for
 * w4a16 with zero points or when the variant asks; a kernel that decodes v = n - 8 directly
 * needs none). w4a16 sums in float32 in any order; w4a8 forms each group's integer part
 * exactly. The frame packs the activations A of a tile per K block b (8 K values), R rows
 * interleaved, in the nibble order of the weights (KPOS below):
 *   w4a16: a[(8 b + i) R + r] = A[r][8 b + KPOS[i]]                  float32
 *   bf16:  a[(4 b + t) R + r] = A[r][8 b + KPOS[t]] | A[r][8 b + KPOS[t + 4]] << 16
 *                               two bfloat16 (the pair of one vdpbf16ps lane)
 *   w4a8:  a[(2 b + h) R + r] = A[r][8 b + 4 h .. 8 b + 4 h + 3]      four int8 as one int32
 * so each broadcast of the microkernel reads one pointer plus a constant offset. */
#define LB_W4_NR 64
#define LB_W4_MR 8

/* K offset within a block of 8 of the nibble at bits 4i..4i+3 of a weight column word. */
static const int LB_W4_KPOS[8] = {0, 4, 1, 5, 2, 6, 3, 7};

typedef struct {
    int32_t rows, groups, group_blocks; /* group_blocks = group_size / 8 */
    int32_t scale_f16;
    const void *a;          /* packed activations of the tile at the first group */
    const uint8_t *w;       /* panel bytes of the first group: 256 bytes per K block of 8 */
    const void *scales;     /* [groups][64], float16 or float32 */
    const uint8_t *zeros;   /* [groups][64] or NULL */
    const float *rsum;      /* or NULL (w4a16 without zero points) */
    int64_t rsum_ld;
    float *c;               /* [rows][64] */
} lb_w4_tile;
typedef void (*lb_w4_ukernel)(const lb_w4_tile *t);

void lb_w4a16_ukernel_portable(const lb_w4_tile *t);
void lb_w4a16_ukernel_avx2(const lb_w4_tile *t);
void lb_w4a16_ukernel_avx512(const lb_w4_tile *t);
void lb_w4a16_ukernel_avx512_bf16(const lb_w4_tile *t); /* bfloat16 pairs (vdpbf16ps) */
void lb_w4a8_ukernel_portable(const lb_w4_tile *t);
void lb_w4a8_ukernel_avx2(const lb_w4_tile *t);
void lb_w4a8_ukernel_avx512(const lb_w4_tile *t);
void lb_w4a8_ukernel_avx512_vnni(const lb_w4_tile *t);

/* bfloat16 bits -> float32, exact; subnormals (exponent 0) count as zero, as vdpbf16ps
 * reads them, so every gemm_w4a16 variant sees the same values. */
static inline float lb_bf16_to_f32(uint16_t h) {
    uint32_t bits = (h & 0x7f80u) ? (uint32_t)h << 16 : (uint32_t)(h & 0x8000u) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}

/* IEEE binary16 -> float32, exact (software: no F16C needed). */
static inline float lb_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (exp == 0) {
        f = (float)man * 0x1p-24f; /* zero or subnormal: exact */
        __builtin_memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    __builtin_memcpy(&f, &bits, 4);
    return f;
}

/* 2:4 sparse GEMM (gemm_sparse24.c): a portable frame calls per-ISA microkernels through
 * these pointers, one call per (row tile of R <= LB_S24_MR rows, 64-column panel), over all
 * K blocks. Weights: lowbit_api.h lb_s24_weights, layout in gemm_sparse24.c. A microkernel
 * reads row r's K values 32 b .. 32 b + 31 at a + r a_row + b a_block (elements): the
 * activations in place when K is a multiple of 32 (a_row = lda, a_block = 32), else a copy
 * the frame packed per block, rows interleaved and zero-padded past K (a_row = 32,
 * a_block = 32 R). int8 bytes are read as A' = A XOR a_flip, the flip chosen so that A' in
 * the variant's operand type (uint8 for vpdpbusd, int8 for the others) is A
 * plus a constant the frame corrects for with the column sums. Contract, r < R, j < 64:
 *   c[64 r + j] = sum over blocks b, kept values u of A'[r][K(b, u, j)] * v[b][u][j]
 * (int32 wrapping, or float32 in any order), K(b, u, j) = 32 b + 4 g + index, g the group
 * of u. The microkernel writes rows r < R of c only; N edges are the frame's. */
#define LB_S24_NR 64
#define LB_S24_KB 32
/* Row-tile heights: the frame's tiles and the microkernels' row cases agree through these;
 * chosen where the accumulators fit the registers without spills (see the variant files). */
#define LB_S24_MR_PORTABLE 4
#define LB_S24_MR_AVX2 4        /* 16 ymm: 4 rows x 2 vectors of a 16-column strip */
#define LB_S24_MR_AVX512 4      /* int8 with vpmaddwd and float32 */
#define LB_S24_MR_AVX512_VNNI 5
#define LB_S24_MR 8             /* the largest, sizes the frame's accumulator tile */
typedef struct {
    int32_t rows;
    int64_t blocks;
    const void *a;          /* row 0, block 0 of the tile's activations */
    int64_t a_row, a_block; /* elements between rows and between K blocks */
    uint32_t a_flip;        /* int8: 0 or 0x80 in every byte (0x80808080) */
    const void *w;          /* the panel's values: 1024 (int8) or 4096 (float32) bytes a block */
    const uint32_t *meta;   /* the panel's index words: 64 a block */
    const uint8_t *ctl;     /* int8 AVX-512: the panel's gather controls, expanded once per
                               panel by lb_s24_s8_controls_<isa> (1024 bytes a block), or
                               NULL: the microkernel expands them from meta itself */
    void *c;                /* [rows][64] int32 or float32 */
} lb_s24_tile;
typedef void (*lb_s24_ukernel)(const lb_s24_tile *t);

void lb_s24_s8_ukernel_portable(const lb_s24_tile *t);
void lb_s24_s8_ukernel_avx2(const lb_s24_tile *t);
void lb_s24_s8_ukernel_avx512(const lb_s24_tile *t);
void lb_s24_s8_ukernel_avx512_vnni(const lb_s24_tile *t);
/* The gather controls of a panel's blocks (what the microkernel would compute per tile). */
void lb_s24_s8_controls_avx512(const uint32_t *meta, int64_t blocks, uint8_t *ctl);
void lb_s24_s8_controls_avx512_vnni(const uint32_t *meta, int64_t blocks, uint8_t *ctl);
void lb_s24_f32_ukernel_portable(const lb_s24_tile *t);
void lb_s24_f32_ukernel_avx2(const lb_s24_tile *t);
void lb_s24_f32_ukernel_avx512(const lb_s24_tile *t);

void *lb_aligned_alloc(size_t bytes);
void lb_aligned_free(void *p);

/* A reusable 64-byte-aligned scratch buffer (packed activations), so that large calls do
 * not page-fault a fresh allocation every time; concurrent callers get their own. */
void *lb_scratch_acquire(size_t bytes);
void lb_scratch_release(void *p);

#endif
