/* lb_gemm_sparse24_s8 / lb_gemm_sparse24_f32: the 2:4 sparse GEMM's C entries, its per-ISA
 * choice and the portable frame that calls the per-ISA microkernels (gemm_sparse24_<isa>.c)
 * through a function pointer, BLIS-style: the frame tiles, threads, packs the activations
 * when K has a partial block and writes the output (int8: through the fused epilogue store
 * shared with gemm_int8, epilogue_store.h, which also adds the activation-offset
 * correction); a microkernel runs one row tile through one 64-column panel. Contract:
 * lowbit.h (lb_s24_tile).
 *
 * Weights (lowbit.kernels.format_sparse24.SPARSE24_PANELS), packed once in Python: panels of
 * 64 columns, K in blocks b of 32 (8 groups of 4, 16 kept values u = 2 g + t per column),
 * a block split in 4 steps s of 2 groups (kept u = 4 s + r, r = 0..3):
 *
 *   int8:    w[p][b][s][j][r]   = kept value 4 s + r of column j      1024 bytes per block
 *   float32: w[p][b][u][j]                                            4096 bytes per block
 *   meta[p][b][j]: uint32, bits 8 r + 2 s .. + 1 = index (0..3) in its group of kept 4 s + r
 *
 *        step s: int8, 256 bytes                     meta word of column j (one per block)
 *          j=0          j=1            j=63          bit 31       23       15        7     0
 *     s=0 [r0 r1 r2 r3][r0 r1 r2 r3]...[r0 .. r3]       [s3s2s1s0][s3s2s1s0][s3s2s1s0][s3s2s1s0]
 *     s=1 [ ...                               ]            r=3       r=2       r=1       r=0
 *           one 64-byte load = 16 columns x 4 kept: one vpdpbusd operand
 *
 *   (word >> 2 s) & 0x03030303 holds the indices of step s, one per byte; with 4 added to
 *   bytes 2, 3 (the second group of the step) it is the vpshufb control that gathers, from
 *   the 8 activations of the step broadcast to every 128-bit lane, the 4 that meet a column's
 *   4 kept values (the same shift for every column: no per-column work); with 8 s more, the
 *   vpermb control into the block's 32 activations (gemm_sparse24_s8_avx512.inc). float32
 *   kernels take (word >> (8 r + 2 s)) & 3 plus 4 (g mod 4) as the vpermps index into a
 *   16-float window of 4 groups.
 *
 * Activations: read in place when K is a multiple of 32; otherwise packed per tile of R
 * rows and per K block, rows interleaved, zero past K (lowbit.h), in a pass before the
 * compute tasks (one parallel phase more, a copy of A). For int8 the bytes are flipped (XOR
 * 0x80: by the microkernel in place, while packing otherwise) where the variant's operand
 * type (S8_OPERAND_UNSIGNED) differs from the activations', so a byte reads as a + delta
 * (delta = +128, -128 or 0); the frame adds -(delta + a_zero_point) * col_sum[j] to every
 * result of column j, exact mod 2^32.
 *
 * Tiling: a task is (panel, chunk of row tiles); the panel (1280 bytes per block for int8)
 * stays in L2 while the tiles of the chunk stream it; a tile's accumulators stay in
 * registers over the whole K. When a chunk has several tiles, the int8 AVX-512 variants get
 * the panel's gather controls expanded once (S8_CONTROLS, 1024 bytes a block, in a buffer
 * per thread) instead of per tile: measured 1.22x against 1.10x dense int8 at
 * 128x4096x4096 and 1024x1024x1024 (one thread). With M <= MR (the GEMV of decode) the
 * tasks are the panels, each streaming its compact panel once (controls expanded in
 * registers), both cores reading disjoint parts of the weights. */
#include <stdatomic.h>
#include <string.h>

#include "epilogue_store.h"
#include "lowbit.h"

/* Row-tile height and int8 operand type per ISA (portable, avx2, avx512, avx512_vnni);
 * a NULL microkernel means no such variant (float32 has no VNNI one). */
static const lb_s24_ukernel s8_variants[LB_ISA_COUNT] = {
    lb_s24_s8_ukernel_portable, lb_s24_s8_ukernel_avx2, lb_s24_s8_ukernel_avx512,
    lb_s24_s8_ukernel_avx512_vnni};
static const lb_s24_ukernel f32_variants[LB_ISA_COUNT] = {
    lb_s24_f32_ukernel_portable, lb_s24_f32_ukernel_avx2, lb_s24_f32_ukernel_avx512, NULL};
static const int S8_MR[LB_ISA_COUNT] = {LB_S24_MR_PORTABLE, LB_S24_MR_AVX2, LB_S24_MR_AVX512,
                                         LB_S24_MR_AVX512_VNNI};
static const int F32_MR[LB_ISA_COUNT] = {LB_S24_MR_PORTABLE, LB_S24_MR_AVX2, LB_S24_MR_AVX512, 0};
static const int S8_OPERAND_UNSIGNED[LB_ISA_COUNT] = {0, 0, 0, 1};
/* The int8 epilogue store of each ISA (the avx512 one needs no VNNI). */
static const lb_store_fn S8_STORE[LB_ISA_COUNT] = {lb_store_rows_portable, lb_store_rows_avx2,
                                                    lb_store_rows_avx512, lb_store_rows_avx512};
/* Variants whose microkernel can read a panel's gather controls precomputed (lb_s24_tile). */
typedef void (*lb_s24_controls_fn)(const uint32_t *meta, int64_t blocks, uint8_t *ctl);
static const lb_s24_controls_fn S8_CONTROLS[LB_ISA_COUNT] = {
    NULL, NULL, lb_s24_s8_controls_avx512, lb_s24_s8_controls_avx512_vnni};

/* "avx2" also needs FMA (float32), "avx512_vnni" AVX512_VBMI (vpermb); the other tags are
 * the ISA's feature set. */
int lb_gemm_sparse24_supported(int isa, int32_t f32) {
    const lb_s24_ukernel *variants = f32 ? f32_variants : s8_variants;
    if (isa < 0 || isa >= LB_ISA_COUNT || !variants[isa] || !lb_isa_supported(isa)) return 0;
    if (isa == LB_ISA_AVX2 && f32) return (int)(lb_cpu_features() >> LB_FEAT_FMA & 1);
    if (isa == LB_ISA_AVX512_VNNI) return (int)(lb_cpu_features() >> LB_FEAT_AVX512_VBMI & 1);
    return 1;
}

int lb_gemm_sparse24_selected(int32_t f32) {
    for (int isa = LB_ISA_COUNT - 1; isa > LB_ISA_PORTABLE; --isa)
        if (lb_gemm_sparse24_supported(isa, f32) && lb_isa_usable(isa)) return isa;
    return LB_ISA_PORTABLE;
}

typedef struct {
    lb_s24_ukernel uk;
    lb_s24_controls_fn controls; /* or NULL */
    int mr;
    int64_t m, lda, blocks, tiles;
    size_t elem;            /* bytes per activation: 1 (int8) or 4 (float32) */
    const uint8_t *a;
    uint8_t flip;           /* int8: 0x80 or 0, XORed into every byte (packing or in place) */
    const lb_s24_weights *w;
    lb_store st;            /* output (and int8: epilogue, corr[n] added to column j) */
    lb_store_fn store;      /* int8: the epilogue store; float32: NULL (rows copied) */
    uint8_t *apack;         /* tile t at t * mr * 32 * blocks elements; NULL: in place */
    int64_t n_panels, m_chunks, tiles_per_chunk, n_tasks;
    atomic_llong next;
} s24_ctx;

#define TILE_ELEMS(g) ((size_t)(g)->mr * LB_S24_KB * (size_t)(g)->blocks)

/* One row's K values [k0, k0 + valid) into a 32-element block, zero past valid; int8 flipped. */
static inline void pack_block(const s24_ctx *g, uint8_t *d, const uint8_t *src, int64_t valid) {
    if (g->elem == 1) {
        if (valid == LB_S24_KB) {
            for (int x = 0; x < LB_S24_KB; ++x) d[x] = src[x] ^ g->flip; /* one vector op */
            return;
        }
        for (int64_t x = 0; x < valid; ++x) d[x] = src[x] ^ g->flip;
    } else {
        memcpy(d, src, (size_t)valid * 4);
    }
    memset(d + valid * g->elem, 0, (size_t)(LB_S24_KB - valid) * g->elem);
}

static void pack_tile(const s24_ctx *g, int64_t t) {
    const int64_t i0 = t * g->mr, k = g->w->k;
    const int R = (int)(g->m - i0 < g->mr ? g->m - i0 : g->mr);
    uint8_t *dst = g->apack + t * TILE_ELEMS(g) * g->elem;
    const size_t row_bytes = LB_S24_KB * g->elem;
    for (int r = 0; r < R; ++r) {
        const uint8_t *src = g->a + (size_t)((i0 + r) * g->lda) * g->elem;
        for (int64_t b = 0; b < g->blocks; ++b) {
            const int64_t k0 = b * LB_S24_KB;
            pack_block(g, dst + (size_t)(b * R + r) * row_bytes, src + k0 * g->elem,
                       k - k0 < LB_S24_KB ? k - k0 : LB_S24_KB);
        }
    }
}

static void pack_task(void *vctx, int tid) {
    (void)tid;
    s24_ctx *g = vctx;
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (t >= g->tiles) break;
        pack_tile(g, t);
    }
}

/* ctl: this thread's control buffer (allocated on first use; NULL if that failed, then the
 * microkernel expands the controls itself). */
static void run_task(const s24_ctx *g, int64_t t, void *c, uint8_t **ctl) {
    const lb_s24_weights *w = g->w;
    const int64_t p = t / g->m_chunks, chunk = t % g->m_chunks;
    const int64_t tile1 = (chunk + 1) * g->tiles_per_chunk < g->tiles
                              ? (chunk + 1) * g->tiles_per_chunk : g->tiles;
    const int64_t col0 = p * LB_S24_NR;
    const int nr = (int)(w->n - col0 < LB_S24_NR ? w->n - col0 : LB_S24_NR);
    const size_t block_bytes = w->f32 ? 4096 : 1024;
    lb_s24_tile tl = {.blocks = g->blocks,
                      .w = (const uint8_t *)w->values + (size_t)(p * g->blocks) * block_bytes,
                      .meta = w->meta + p * g->blocks * LB_S24_NR, .c = c};
    const int64_t tile0 = chunk * g->tiles_per_chunk;
    /* Several tiles stream this panel: expand its controls once, not once per tile. */
    if (g->controls && tile1 - tile0 > 1) {
        if (!*ctl) *ctl = lb_aligned_alloc((size_t)g->blocks * 1024);
        if (*ctl) {
            g->controls(tl.meta, g->blocks, *ctl);
            tl.ctl = *ctl;
        }
    }
    for (int64_t tile = tile0; tile < tile1; ++tile) {
        const int64_t row0 = tile * g->mr;
        tl.rows = (int32_t)(g->m - row0 < g->mr ? g->m - row0 : g->mr);
        if (g->apack) {
            tl.a = g->apack + tile * TILE_ELEMS(g) * g->elem;
            tl.a_row = LB_S24_KB;
            tl.a_block = LB_S24_KB * tl.rows;
            tl.a_flip = 0; /* applied while packing */
        } else {
            tl.a = g->a + (size_t)(row0 * g->lda) * g->elem;
            tl.a_row = g->lda;
            tl.a_block = LB_S24_KB;
            tl.a_flip = 0x01010101u * g->flip;
        }
        g->uk(&tl);
        if (g->store) {
            g->store(&g->st, c, tl.rows, row0, col0, nr);
        } else {
            for (int r = 0; r < tl.rows; ++r)
                memcpy((float *)g->st.out + (row0 + r) * g->st.ldo + col0,
                       (const float *)c + LB_S24_NR * r, (size_t)nr * sizeof(float));
        }
    }
}

static void compute_task(void *vctx, int tid) {
    (void)tid;
    s24_ctx *g = vctx;
    int32_t c[LB_S24_MR * LB_S24_NR] __attribute__((aligned(64)));
    uint8_t *ctl = NULL;
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (t >= g->n_tasks) break;
        run_task(g, t, c, &ctl);
    }
    lb_aligned_free(ctl);
}

/* Below this many executed MACs a call runs on the caller alone: waking the pool costs more. */
#define SERIAL_MACS (1 << 18)

static int run(s24_ctx *g) {
    const lb_s24_weights *w = g->w;
    g->blocks = (w->k + LB_S24_KB - 1) / LB_S24_KB;
    g->tiles = (g->m + g->mr - 1) / g->mr;
    g->apack = NULL;
    if (w->k % LB_S24_KB) { /* a partial last block: pack, zero-padded */
        g->apack = lb_scratch_acquire((size_t)g->tiles * TILE_ELEMS(g) * g->elem);
        if (!g->apack) return LB_ENOMEM;
    }
    const int threads = lb_get_num_threads();
    const int serial = threads <= 1 || g->m * w->n * w->k / 2 < SERIAL_MACS;
    /* Tasks are (panel, chunk of tiles), panel-major so a panel stays in one core's L2; M
     * is split only as far as needed to give every thread about four tasks. */
    g->n_panels = (w->n + LB_S24_NR - 1) / LB_S24_NR;
    const int64_t want = 4 * (int64_t)threads;
    g->m_chunks = g->n_panels >= want ? 1 : (want + g->n_panels - 1) / g->n_panels;
    if (g->m_chunks > g->tiles) g->m_chunks = g->tiles;
    g->tiles_per_chunk = (g->tiles + g->m_chunks - 1) / g->m_chunks;
    g->m_chunks = (g->tiles + g->tiles_per_chunk - 1) / g->tiles_per_chunk;
    g->n_tasks = g->n_panels * g->m_chunks;
    atomic_init(&g->next, 0);
    if (!g->apack)
        ;
    else if (serial || g->m * w->k < (1 << 16))
        pack_task(g, 0);
    else
        lb_parallel(pack_task, g);
    atomic_store(&g->next, 0);
    if (serial)
        compute_task(g, 0);
    else
        lb_parallel(compute_task, g);
    lb_scratch_release(g->apack);
    return LB_OK;
}

static int bad_weights(const lb_s24_weights *w, int32_t f32) {
    return !w || !w->values || !w->meta || w->k <= 0 || w->n <= 0 || w->f32 != f32 ||
           (!f32 && !w->col_sum);
}

int lb_gemm_sparse24_s8(int isa, int64_t m, const void *a, int64_t lda, int32_t a_signed,
                        int32_t a_zero_point, const lb_s24_weights *w, const lb_epilogue *ep,
                        void *out, int64_t ldo) {
    if (isa < 0) isa = lb_gemm_sparse24_selected(0);
    if (!lb_gemm_sparse24_supported(isa, 0)) return LB_EISA;
    if (m < 0 || bad_weights(w, 0) || lda < w->k || ldo < w->n || !a || !out ||
        !lb_epilogue_ok(ep))
        return LB_EINVAL;
    if (m == 0) return LB_OK;
    int32_t *corr = lb_aligned_alloc((size_t)w->n * sizeof(int32_t));
    if (!corr) return LB_ENOMEM;
    /* A packed byte reads as a + delta in the variant's operand type. */
    const int operand_unsigned = S8_OPERAND_UNSIGNED[isa];
    const int flip = operand_unsigned == a_signed;
    const uint32_t delta = !flip ? 0u : a_signed ? 128u : (uint32_t)-128;
    const uint32_t offset = delta + (uint32_t)a_zero_point;
    for (int64_t j = 0; j < w->n; ++j) corr[j] = (int32_t)(0u - offset * (uint32_t)w->col_sum[j]);
    s24_ctx g = {.uk = s8_variants[isa], .controls = S8_CONTROLS[isa], .mr = S8_MR[isa],
                 .m = m, .lda = lda, .elem = 1, .a = a, .flip = flip ? 0x80 : 0, .w = w,
                 .st = {.ep = ep, .corr = corr, .out = out, .ldo = ldo},
                 .store = S8_STORE[isa]};
    int rc = run(&g);
    lb_aligned_free(corr);
    return rc;
}

int lb_gemm_sparse24_f32(int isa, int64_t m, const float *x, int64_t ldx,
                         const lb_s24_weights *w, float *out, int64_t ldo) {
    if (isa < 0) isa = lb_gemm_sparse24_selected(1);
    if (!lb_gemm_sparse24_supported(isa, 1)) return LB_EISA;
    if (m < 0 || bad_weights(w, 1) || ldx < w->k || ldo < w->n || !x || !out) return LB_EINVAL;
    if (m == 0) return LB_OK;
    s24_ctx g = {.uk = f32_variants[isa], .mr = F32_MR[isa], .m = m, .lda = ldx, .elem = 4,
                 .a = (const uint8_t *)x, .w = w, .st = {.out = out, .ldo = ldo}};
    return run(&g);
}
