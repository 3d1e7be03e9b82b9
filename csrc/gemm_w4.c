/* lb_gemm_w4a16 / lb_gemm_w4a8: the int4-weight GEMMs' C entries, their per-op ISA choice and
 * the portable blocking frame that calls the per-ISA microkernels (gemm_w4_<isa>.c) through
 * a function pointer, BLIS-style: the frame tiles, threads, forms the per-group activation
 * sums and writes the output; a microkernel only runs one tile through a run of groups.
 *
 * Weights (lowbit.kernels.formats.INT4_PANELS / UINT4_PANELS), packed once in Python:
 *   panel p holds columns [64p, 64p + 64); K runs in blocks of 8; per (p, block q) 256 bytes,
 *   one 32-bit word per column j, two nibbles per byte:
 *     data[p][q][j][b] = n[8q + b][64p + j] | n[8q + b + 4][64p + j] << 4      b = 0..3
 *
 *            j=0                 j=1                      j=63
 *     q=0 [b0 b1 b2 b3]   [b0 b1 b2 b3]    ...     [b0 b1 b2 b3]   <- 256 bytes; one 64-byte
 *                                                                     load = 16 columns
 *          |  low nibbles: K 8q+0..3 (AND 0x0F: one vpdpbusd operand)
 *          |  high nibbles: K 8q+4..7
 *     q=1 [ ...                                               ]
 *
 *   As a 32-bit word, the nibble at bits 4i..4i+3 is K 8q + (i even ? i/2 : 4 + i/2), so
 *   (word >> 4i) & 15 decodes one K value of 16 columns per 512-bit shift.
 *   scales[p][g][j] (float16 or float32) and zeros[p][g][j] (uint8, uint4 only) per group g.
 *
 * Tiling: a task is (panel, chunk of up to CHUNK_ROWS rows); it keeps the chunk's float32
 * output tile c[rows][64] in L1 and walks K in steps of STEP_K values (a 16 KB slice of the
 * panel stays in L1 while every row tile of the chunk reads it). With M <= LB_W4_MR = 8 (the
 * GEMV path of LLM decode) a chunk is a single tile: one microkernel call per panel streams
 * the panel's weights once, decoding each nibble once for all M rows, and the tasks are the
 * panels, so both cores read disjoint parts of the weight stream at memory bandwidth.
 *
 * Edges: K has none (a multiple of the group size, so of 8); M edges are the microkernel's
 * (rows <= LB_W4_MR); N edges the frame's (padded columns, scale 0, are computed and never
 * written back). The microkernel contract is in lowbit.h (lb_w4_tile).
 *
 * Index arithmetic in the frame and the microkernels is 64-bit (int64_t counters): the
 * extension is built with Python's CFLAGS, which include -fwrapv, under which a 32-bit index
 * in an address costs a sign extension at every use (measured at M = 8, one thread: 1.3x the
 * time of the float32 AVX-512 kernel, 1.5x that of the AVX2 one).
 *
 * Activations are packed per tile of LB_W4_MR rows in the weights' nibble order (lowbit.h),
 * in a pass before the compute tasks; rsum[i][g] = sum of row i over group g (float32 sums
 * for w4a16, exact integers for w4a8) feeds the zero-point term. */
#include <stdatomic.h>
#include <string.h>
#include <cpuid.h>

#include "lowbit.h"

#define CHUNK_ROWS (4 * LB_W4_MR)
#define STEP_K 512 /* K values per step when a chunk has several row tiles: 16 KB of panel */

/* gemm_w4a16's "avx512_vnni" variant is its dot-product one: vdpbf16ps (AVX512_BF16) on
 * bfloat16 activations, two products per float32 lane; it runs bfloat16 activations only. */
static const lb_w4_ukernel w4a16_variants[LB_ISA_COUNT] = {
    lb_w4a16_ukernel_portable, lb_w4a16_ukernel_avx2, lb_w4a16_ukernel_avx512,
    lb_w4a16_ukernel_avx512_bf16};
static const lb_w4_ukernel w4a8_variants[LB_ISA_COUNT] = {
    lb_w4a8_ukernel_portable, lb_w4a8_ukernel_avx2, lb_w4a8_ukernel_avx512,
    lb_w4a8_ukernel_avx512_vnni};

/* Variants of gemm_w4a16 that apply the int4 zero point 8 through the group sums too. */
static const int w4a16_needs_rsum[LB_ISA_COUNT] = {0, 1, 0, 0};

/* F16C (vcvtph2ps on ymm) is not one of lb_cpu_features' bits; the AVX2 variants need it. */
static int have_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
}

/* Per-op ISA tags reuse the int8 names: "avx2" also needs FMA and F16C, "avx512" is the
 * avx512 ISA's feature set; gemm_w4a16's "avx512_vnni" needs the avx512 ISA's features and
 * AVX512_BF16 (not VNNI: its products are bfloat16). */
static int supported(const lb_w4_ukernel *variants, int isa) {
    if (isa < 0 || isa >= LB_ISA_COUNT || !variants[isa]) return 0;
    if (variants == w4a16_variants && isa == LB_ISA_AVX512_VNNI)
        return lb_isa_supported(LB_ISA_AVX512) &&
               (int)(lb_cpu_features() >> LB_FEAT_AVX512_BF16 & 1);
    if (!lb_isa_supported(isa)) return 0;
    if (isa == LB_ISA_AVX2)
        return (int)(lb_cpu_features() >> LB_FEAT_FMA & 1) && have_f16c();
    return 1;
}

static int selected(const lb_w4_ukernel *variants, int top) {
    for (int isa = top; isa > LB_ISA_PORTABLE; --isa)
        if (supported(variants, isa) && lb_isa_usable(isa)) return isa;
    return LB_ISA_PORTABLE;
}

int lb_gemm_w4a16_supported(int isa) { return supported(w4a16_variants, isa); }
int lb_gemm_w4a16_selected(int32_t x_bf16) {
    return selected(w4a16_variants, x_bf16 ? LB_ISA_AVX512_VNNI : LB_ISA_AVX512);
}
int lb_gemm_w4a8_supported(int isa) { return supported(w4a8_variants, isa); }
int lb_gemm_w4a8_selected(void) { return selected(w4a8_variants, LB_ISA_COUNT - 1); }

typedef struct {
    lb_w4_ukernel uk;
    int64_t m, lda, ldo, ngroups, group_size, kblocks, tiles;
    const uint8_t *a; /* bytes */
    size_t a_elem;    /* bytes per input activation: 4 (float32), 2 (bfloat16), 1 (int8) */
    int a_kind;       /* packed form, below */
    const float *a_scale;
    const lb_w4_weights *w;
    size_t scale_bytes;
    float *out;
    uint8_t *apack;   /* per tile: K * LB_W4_MR * 4 bytes (float32 or int32 units) */
    float *rsum;      /* [m][ngroups] or NULL */
    int64_t n_panels, m_chunks, rows_per_chunk, n_tasks, step_groups;
    atomic_llong next;
} w4_ctx;

/* Packed activation forms (lowbit.h, lb_w4_tile) and their 4-byte units per K value. */
enum { A_F32 = 0, A_BF16_AS_F32 = 1, A_BF16_PAIRS = 2, A_INT8 = 3 };
static const int UNITS_PER_8K[4] = {8, 8, 4, 2};

/* 4-byte units per tile: K / 8 blocks of R <= LB_W4_MR rows */
#define TILE_UNITS(g) ((g)->kblocks * UNITS_PER_8K[(g)->a_kind] * LB_W4_MR)

static inline float act_f32(const w4_ctx *g, const uint8_t *row, int64_t k) {
    if (g->a_elem == 4) return ((const float *)(const void *)row)[k];
    return lb_bf16_to_f32(((const uint16_t *)(const void *)row)[k]);
}

/* The packed activations of R rows (lowbit.h: lb_w4_tile), K block by K block so each block's
 * units are written in one contiguous run. R is a constant in every inlined copy (pack_tile's
 * switch), so the interleave strides fold into the addresses. */
static inline __attribute__((always_inline)) void pack_rows(const w4_ctx *g, const int R,
                                                            const uint8_t *const *rows,
                                                            uint32_t *dst) {
    const int64_t nb = g->kblocks;
    if (g->a_kind == A_F32 || g->a_kind == A_BF16_AS_F32) {
        float *d = (float *)(void *)dst;
        for (int64_t b = 0; b < nb; ++b, d += 8 * R)
            for (int i = 0; i < 8; ++i)
                for (int r = 0; r < R; ++r)
                    d[i * R + r] = act_f32(g, rows[r], 8 * b + LB_W4_KPOS[i]);
    } else if (g->a_kind == A_BF16_PAIRS) {
        for (int64_t b = 0; b < nb; ++b, dst += 4 * R)
            for (int i = 0; i < 4; ++i)
                for (int r = 0; r < R; ++r) {
                    const uint16_t *x = (const uint16_t *)(const void *)rows[r] + 8 * b;
                    dst[i * R + r] =
                        (uint32_t)x[LB_W4_KPOS[i]] | (uint32_t)x[LB_W4_KPOS[i + 4]] << 16;
                }
    } else {
        for (int64_t b = 0; b < nb; ++b, dst += 2 * R)
            for (int h = 0; h < 2; ++h)
                for (int r = 0; r < R; ++r) memcpy(dst + h * R + r, rows[r] + 8 * b + 4 * h, 4);
    }
}

/* Pack tile t (lowbit.h: lb_w4_tile) and, if wanted, its rows' group sums. */
static void pack_tile(const w4_ctx *g, int64_t t) {
    const int64_t i0 = t * LB_W4_MR;
    const int R = (int)(g->m - i0 < LB_W4_MR ? g->m - i0 : LB_W4_MR);
    uint32_t *dst = (uint32_t *)(void *)g->apack + t * TILE_UNITS(g);
    const uint8_t *rows[LB_W4_MR];
    for (int r = 0; r < R; ++r) rows[r] = g->a + (size_t)((i0 + r) * g->lda) * g->a_elem;
    switch (R) {
        case 1: pack_rows(g, 1, rows, dst); break;
        case 2: pack_rows(g, 2, rows, dst); break;
        case 3: pack_rows(g, 3, rows, dst); break;
        case 4: pack_rows(g, 4, rows, dst); break;
        case 5: pack_rows(g, 5, rows, dst); break;
        case 6: pack_rows(g, 6, rows, dst); break;
        case 7: pack_rows(g, 7, rows, dst); break;
        default: pack_rows(g, 8, rows, dst); break;
    }
    if (!g->rsum) return;
    for (int r = 0; r < R; ++r) {
        const uint8_t *row = rows[r];
        float *rs = g->rsum + (i0 + r) * g->ngroups;
        for (int64_t q = 0; q < g->ngroups; ++q) {
            const int64_t k0 = q * g->group_size;
            if (g->a_kind == A_INT8) { /* exact: |sum| <= 128 * 128 */
                const int8_t *ai = (const int8_t *)row + k0;
                int32_t sum = 0;
                for (int64_t k = 0; k < g->group_size; ++k) sum += ai[k];
                rs[q] = (float)sum;
            } else {
                float sum = 0.0f;
                for (int64_t k = 0; k < g->group_size; ++k) sum += act_f32(g, row, k0 + k);
                rs[q] = sum;
            }
        }
    }
}

static void pack_task(void *vctx, int tid) {
    (void)tid;
    w4_ctx *g = vctx;
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (t >= g->tiles) break;
        pack_tile(g, t);
    }
}

static void run_task(const w4_ctx *g, int64_t t, float *c) {
    const lb_w4_weights *w = g->w;
    const int64_t p = t / g->m_chunks, chunk = t % g->m_chunks;
    const int64_t r0 = chunk * g->rows_per_chunk;
    const int64_t r1 = r0 + g->rows_per_chunk < g->m ? r0 + g->rows_per_chunk : g->m;
    memset(c, 0, (size_t)(r1 - r0) * LB_W4_NR * sizeof(float));
    lb_w4_tile tl = {.group_blocks = (int32_t)(g->group_size / 8),
                     .scale_f16 = w->scale_f16, .rsum_ld = g->ngroups};
    const int64_t pg = p * g->ngroups; /* first group of panel p in the scale arrays */
    for (int64_t g0 = 0; g0 < g->ngroups; g0 += g->step_groups) {
        const int64_t gc = g0 + g->step_groups < g->ngroups ? g->step_groups : g->ngroups - g0;
        tl.groups = (int32_t)gc;
        tl.w = w->data + (p * g->kblocks + g0 * (g->group_size / 8)) * 256;
        tl.scales = (const char *)w->scales + (size_t)(pg + g0) * LB_W4_NR * g->scale_bytes;
        tl.zeros = w->zeros ? w->zeros + (pg + g0) * LB_W4_NR : NULL;
        for (int64_t i0 = r0; i0 < r1; i0 += LB_W4_MR) {
            tl.rows = (int32_t)(r1 - i0 < LB_W4_MR ? r1 - i0 : LB_W4_MR);
            /* 4-byte units: K block b of the tile starts at 8 b R */
            tl.a = (const uint32_t *)(const void *)g->apack + (i0 / LB_W4_MR) * TILE_UNITS(g) +
                   g0 * g->group_size / 8 * UNITS_PER_8K[g->a_kind] * tl.rows;
            tl.rsum = g->rsum ? g->rsum + i0 * g->ngroups + g0 : NULL;
            tl.c = c + (i0 - r0) * LB_W4_NR;
            g->uk(&tl);
        }
    }
    const int64_t col0 = p * LB_W4_NR;
    const int nr = (int)(w->n - col0 < LB_W4_NR ? w->n - col0 : LB_W4_NR);
    for (int64_t i = r0; i < r1; ++i) {
        const float *ci = c + (i - r0) * LB_W4_NR;
        float *o = g->out + i * g->ldo + col0;
        if (g->a_scale) {
            const float s = g->a_scale[i];
            for (int j = 0; j < nr; ++j) o[j] = ci[j] * s;
        } else {
            memcpy(o, ci, (size_t)nr * sizeof(float));
        }
    }
}

static void w4_task(void *vctx, int tid) {
    (void)tid;
    w4_ctx *g = vctx;
    float c[CHUNK_ROWS * LB_W4_NR] __attribute__((aligned(64)));
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (t >= g->n_tasks) break;
        run_task(g, t, c);
    }
}

/* Below this many MACs a call runs on the caller alone: waking the pool costs more. */
#define SERIAL_MACS (1 << 18)

static int run(lb_w4_ukernel uk, int64_t m, const void *a, size_t a_elem, int a_kind,
               int64_t lda, const float *a_scale, const lb_w4_weights *w, float *out,
               int64_t ldo, int want_rsum) {
    w4_ctx g = {.uk = uk, .m = m, .lda = lda, .ldo = ldo, .ngroups = w->k / w->group_size,
                .group_size = w->group_size, .kblocks = w->k / 8, .a = a, .a_elem = a_elem,
                .a_kind = a_kind,
                .a_scale = a_scale, .w = w, .scale_bytes = w->scale_f16 ? 2 : 4, .out = out};
    g.tiles = (m + LB_W4_MR - 1) / LB_W4_MR;
    g.apack = lb_scratch_acquire((size_t)(g.tiles * TILE_UNITS(&g)) * 4);
    g.rsum = want_rsum ? lb_aligned_alloc((size_t)(m * g.ngroups) * sizeof(float)) : NULL;
    if (!g.apack || (want_rsum && !g.rsum)) {
        lb_scratch_release(g.apack);
        lb_aligned_free(g.rsum);
        return LB_ENOMEM;
    }
    int threads = lb_get_num_threads();
    int serial = threads <= 1 || m * w->n * w->k < SERIAL_MACS;
    g.n_panels = (w->n + LB_W4_NR - 1) / LB_W4_NR;
    /* Chunks of whole row tiles: at most CHUNK_ROWS rows, fewer when the panels alone give
     * the threads less than about four tasks each. */
    int64_t tiles_per_chunk = CHUNK_ROWS / LB_W4_MR;
    int64_t want = 4 * (int64_t)threads;
    if (g.n_panels * ((g.tiles + tiles_per_chunk - 1) / tiles_per_chunk) < want) {
        int64_t chunks = (want + g.n_panels - 1) / g.n_panels;
        tiles_per_chunk = (g.tiles + chunks - 1) / chunks;
        if (tiles_per_chunk < 1) tiles_per_chunk = 1;
    }
    if (tiles_per_chunk > g.tiles) tiles_per_chunk = g.tiles;
    g.rows_per_chunk = tiles_per_chunk * LB_W4_MR;
    g.m_chunks = (m + g.rows_per_chunk - 1) / g.rows_per_chunk;
    g.n_tasks = g.n_panels * g.m_chunks;
    /* One row tile: nothing to reuse, so one call streams the whole panel. */
    g.step_groups = tiles_per_chunk == 1 ? g.ngroups
                                         : (STEP_K / w->group_size ? STEP_K / w->group_size : 1);
    atomic_init(&g.next, 0);
    if (serial || m * w->k < (1 << 16))
        pack_task(&g, 0);
    else
        lb_parallel(pack_task, &g);
    atomic_store(&g.next, 0);
    if (serial)
        w4_task(&g, 0);
    else
        lb_parallel(w4_task, &g);
    lb_scratch_release(g.apack);
    lb_aligned_free(g.rsum);
    return LB_OK;
}

static int bad_weights(const lb_w4_weights *w) {
    if (!w || !w->data || !w->scales) return 1;
    if (w->group_size != 32 && w->group_size != 64 && w->group_size != 128) return 1;
    return w->k <= 0 || w->n <= 0 || w->k % w->group_size != 0;
}

int lb_gemm_w4a16(int isa, int64_t m, const void *x, int64_t ldx, int32_t x_bf16,
                  const lb_w4_weights *w, float *out, int64_t ldo) {
    if (isa < 0) isa = lb_gemm_w4a16_selected(x_bf16);
    if (!lb_gemm_w4a16_supported(isa)) return LB_EISA;
    if (m < 0 || bad_weights(w) || ldx < w->k || ldo < w->n || !x || !out) return LB_EINVAL;
    if (isa == LB_ISA_AVX512_VNNI && !x_bf16) return LB_EINVAL; /* bfloat16 pairs only */
    if (m == 0) return LB_OK;
    int kind = !x_bf16 ? A_F32 : isa == LB_ISA_AVX512_VNNI ? A_BF16_PAIRS : A_BF16_AS_F32;
    return run(w4a16_variants[isa], m, x, x_bf16 ? 2 : 4, kind, ldx, NULL, w, out, ldo,
               w->zeros != NULL || w4a16_needs_rsum[isa]);
}

int lb_gemm_w4a8(int isa, int64_t m, const int8_t *a, int64_t lda, const float *a_scale,
                 const lb_w4_weights *w, float *out, int64_t ldo) {
    if (isa < 0) isa = lb_gemm_w4a8_selected();
    if (!lb_gemm_w4a8_supported(isa)) return LB_EISA;
    if (m < 0 || bad_weights(w) || lda < w->k || ldo < w->n || !a || !out) return LB_EINVAL;
    if (m == 0) return LB_OK;
    return run(w4a8_variants[isa], m, a, 1, A_INT8, lda, a_scale, w, out, ldo, 1);
}
