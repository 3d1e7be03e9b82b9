/* lb_spmm_csr: the CSR sparse x dense entry, its per-dtype ISA choice, the threading frame and
 * the portable row kernels. Layout and the row-kernel contract: spmm_csr.h.
 *
 * Threads: the rows are cut into tasks of about equal work, claimed dynamically from the
 * pool (threadpool.c). A row's work is its stored entries plus LB_CSR_ROW_COST for the row
 * itself (reading its pointers, finishing and storing b outputs), so
 *     cost(i) = row_ptr[i] + LB_CSR_ROW_COST * i
 * is the work of rows [0, i), increasing in i, and task t covers the rows i with
 * t * total / tasks <= cost(i) < (t + 1) * total / tasks, found by binary search on claim.
 * A row denser than a task's share is a task of its own (rows are never split). */
#include <stdatomic.h>
#include <string.h>

#include "spmm_csr.h"

#define LB_CSR_ROW_COST 8      /* a row's fixed work, in stored entries */
#define COPY_REUSE 4           /* copy a misaligned x when its rows are used this often */
#define TASKS_PER_THREAD 16    /* dynamic claiming evens out cache misses and uneven rows */
#define SERIAL_MACS (1 << 18)  /* below this many multiply-adds the pool costs more */

/* Per dtype (index f32), per ISA; NULL: no such variant. The int8 AVX-512 VNNI variant is
 * vpdpbusd over quads; float32 has no VNNI variant. */
static const lb_spmm_csr_rows_fn variants[2][LB_ISA_COUNT] = {
    {lb_spmm_csr_rows_s8_portable, lb_spmm_csr_rows_s8_avx2, lb_spmm_csr_rows_s8_avx512,
     lb_spmm_csr_rows_s8_avx512_vnni},
    {lb_spmm_csr_rows_f32_portable, lb_spmm_csr_rows_f32_avx2, lb_spmm_csr_rows_f32_avx512,
     NULL},
};

/* "avx2" also needs FMA for float32 (the int8 one does not use it). */
int lb_spmm_csr_supported(int isa, int32_t f32) {
    if (isa < 0 || isa >= LB_ISA_COUNT || !variants[f32 != 0][isa] || !lb_isa_supported(isa))
        return 0;
    if (f32 && isa == LB_ISA_AVX2) return (int)(lb_cpu_features() >> LB_FEAT_FMA & 1);
    return 1;
}

int lb_spmm_csr_selected(int32_t f32) {
    for (int isa = LB_ISA_COUNT - 1; isa > LB_ISA_PORTABLE; --isa)
        if (lb_spmm_csr_supported(isa, f32) && lb_isa_usable(isa)) return isa;
    return LB_ISA_PORTABLE;
}

/* --- portable row kernels -------------------------------------------------------------------
 * Columns in strips of PORTABLE_NB accumulators; one pass over the strip per quad, so the
 * accumulators are loaded and stored once per four entries (measured on Zen 5: 1.3x (int8)
 * and 1.5x (float32) faster than a pass per entry). Each column sums its entries in order.
 * int8 products are exact in int16 (|v x| <= 2^14: SSE2 multiplies eight at a time), then
 * widened and added in uint32 (wrapping: exact modulo 2^32). GCC vectorizes both loops with
 * the x86-64 baseline, SSE2. */
#define PORTABLE_NB 128

static inline uint32_t mul_s8(int16_t v, int8_t x) { return (uint32_t)(int32_t)(int16_t)(v * x); }

static void quad_s8(uint32_t *restrict acc, const int8_t *const *x, const int8_t *v, int nb) {
    const int8_t *restrict x0 = x[0], *restrict x1 = x[1], *restrict x2 = x[2], *restrict x3 = x[3];
    const int16_t v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3];
    for (int j = 0; j < nb; ++j)
        acc[j] += mul_s8(v0, x0[j]) + mul_s8(v1, x1[j]) + mul_s8(v2, x2[j]) + mul_s8(v3, x3[j]);
}

static void quad_f32(float *restrict acc, const float *const *x, const float *v, int nb) {
    const float *restrict x0 = x[0], *restrict x1 = x[1], *restrict x2 = x[2], *restrict x3 = x[3];
    const float v0 = v[0], v1 = v[1], v2 = v[2], v3 = v[3];
    for (int j = 0; j < nb; ++j)
        acc[j] = (((acc[j] + v0 * x0[j]) + v1 * x1[j]) + v2 * x2[j]) + v3 * x3[j];
}

static inline __attribute__((always_inline)) void portable_rows(const int F32,
                                                                const lb_spmm_csr_call *c,
                                                                int64_t i0, int64_t i1) {
    const lb_csr_weights *w = c->w;
    const size_t elem = F32 ? sizeof(float) : sizeof(int8_t);
    for (int64_t i = i0; i < i1; ++i) {
        const int64_t p0 = w->row_ptr[i], p1 = w->row_ptr[i + 1];
        for (int64_t b0 = 0; b0 < c->b; b0 += PORTABLE_NB) {
            const int nb = (int)(c->b - b0 < PORTABLE_NB ? c->b - b0 : PORTABLE_NB);
            union { uint32_t u[PORTABLE_NB]; float f[PORTABLE_NB]; } acc;
            memset(&acc, 0, sizeof acc);
            for (int64_t p = p0; p < p1; p += LB_CSR_QUAD) {
                const void *xr[LB_CSR_QUAD];
                for (int r = 0; r < LB_CSR_QUAD; ++r)
                    xr[r] = (const char *)c->x + (size_t)(w->col_idx[p + r] * c->ldx + b0) * elem;
                if (F32)
                    quad_f32(acc.f, (const float *const *)xr, (const float *)w->values + p, nb);
                else
                    quad_s8(acc.u, (const int8_t *const *)xr, (const int8_t *)w->values + p, nb);
            }
            /* int32 and float32 outputs: 4 bytes per column either way */
            memcpy((char *)c->out + (size_t)(i * c->ldo + b0) * 4, &acc, (size_t)nb * 4);
        }
    }
}

void lb_spmm_csr_rows_s8_portable(const lb_spmm_csr_call *c, int64_t i0, int64_t i1) {
    portable_rows(0, c, i0, i1);
}

void lb_spmm_csr_rows_f32_portable(const lb_spmm_csr_call *c, int64_t i0, int64_t i1) {
    portable_rows(1, c, i0, i1);
}

/* --- the frame ------------------------------------------------------------------------------ */

typedef struct {
    lb_spmm_csr_rows_fn fn;
    lb_spmm_csr_call call;
    int64_t tasks, total;
    atomic_llong next;
} csr_ctx;

/* The first row i with cost(i) >= target (n_rows if none). */
static int64_t first_row_at(const int64_t *row_ptr, int64_t n_rows, int64_t target) {
    int64_t lo = 0, hi = n_rows;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (row_ptr[mid] + LB_CSR_ROW_COST * mid < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void csr_task(void *vctx, int tid) {
    (void)tid;
    csr_ctx *g = vctx;
    const lb_csr_weights *w = g->call.w;
    for (;;) {
        const int64_t t = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (t >= g->tasks) break;
        /* boundaries in 128-bit arithmetic: total * tasks may exceed 2^63 */
        const int64_t lo = (int64_t)((__int128)g->total * t / g->tasks);
        const int64_t hi = (int64_t)((__int128)g->total * (t + 1) / g->tasks);
        const int64_t i0 = first_row_at(w->row_ptr, w->n_rows, lo);
        const int64_t i1 = t + 1 == g->tasks ? w->n_rows : first_row_at(w->row_ptr, w->n_rows, hi);
        if (i0 < i1) g->fn(&g->call, i0, i1);
    }
}

int lb_spmm_csr(int isa, const lb_csr_weights *w, int64_t b, const void *x, int64_t ldx,
                void *out, int64_t ldo) {
    if (!w) return LB_EINVAL;
    const int f32 = w->f32 != 0;
    if (isa < 0) isa = lb_spmm_csr_selected(f32);
    if (!lb_spmm_csr_supported(isa, f32)) return LB_EISA;
    if (w->n_rows < 0 || w->k <= 0 || b < 0 || !w->row_ptr || ldx < b || ldo < b || !x || !out)
        return LB_EINVAL;
    if (!f32 && !w->row_sum) return LB_EINVAL;
    if (w->n_rows == 0 || b == 0) return LB_OK;
    const int64_t stored = w->row_ptr[w->n_rows];
    if (stored < 0 || stored % LB_CSR_QUAD || (stored && (!w->col_idx || !w->values)))
        return LB_EINVAL;
    /* x rows that do not start on a cache line cost the vector kernels about 1.5x (a row of
     * 128 int8 then spans three lines and every 64-byte load is split; measured on Zen 5 with
     * numpy's 16-byte-aligned arrays, 4096 x 4096 at 10%, b = 128). Such an x is copied to
     * a scratch buffer with rows on cache lines: rows of at least a line and at least
     * COPY_REUSE stored entries per row of x. Measured (one thread, b = 128): copied, a
     * misaligned x runs within about 10% of an aligned one from 10% down to 0.1% density;
     * not copied, 15-50% slower. */
    const size_t elem = f32 ? sizeof(float) : sizeof(int8_t);
    void *xcopy = NULL;
    if (isa != LB_ISA_PORTABLE && (size_t)b * elem >= 64 && stored >= COPY_REUSE * w->k &&
        (((uintptr_t)x | (uintptr_t)ldx * elem) & 63)) {
        const int64_t ldp = (int64_t)(((size_t)b * elem + 63) / 64 * 64 / elem);
        xcopy = lb_scratch_acquire((size_t)(w->k * ldp) * elem);
        if (xcopy) { /* else run on x as it is */
            for (int64_t r = 0; r < w->k; ++r)
                memcpy((char *)xcopy + (size_t)(r * ldp) * elem,
                       (const char *)x + (size_t)(r * ldx) * elem, (size_t)b * elem);
            x = xcopy;
            ldx = ldp;
        }
    }
    csr_ctx g = {.fn = variants[f32][isa],
                 .call = {.w = w, .x = x, .ldx = ldx, .b = b, .out = out, .ldo = ldo},
                 .total = stored + LB_CSR_ROW_COST * w->n_rows};
    const int threads = lb_get_num_threads();
    if (threads <= 1 || (double)stored * (double)b < SERIAL_MACS) {
        g.fn(&g.call, 0, w->n_rows);
    } else {
        g.tasks = (int64_t)threads * TASKS_PER_THREAD;
        if (g.tasks > w->n_rows) g.tasks = w->n_rows;
        atomic_init(&g.next, 0);
        lb_parallel(csr_task, &g);
    }
    lb_scratch_release(xcopy);
    return LB_OK;
}
