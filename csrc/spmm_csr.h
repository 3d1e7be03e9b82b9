/* spmm_csr internals: the row-range kernels every ISA file provides, called by the frame in
 * spmm_csr.c.
 *
 * Weights (lowbit.kernels.format_csr.CSR_ROWS, lb_csr_weights): the entries of row i are
 * p in [row_ptr[i], row_ptr[i + 1]), a multiple of LB_CSR_QUAD, padding (value 0, a valid
 * index) at the end, so a kernel consumes whole quads and never a tail of entries:
 *
 *     values   [ v0 v1 v2 v3 | v4 v5 v6 v7 | ... ]   row i, quad by quad
 *     col_idx  [ c0 c1 c2 c3 | c4 c5 c6 c7 | ... ]
 *                 |  |  |  |
 *                 v  v  v  v     out[i, :] += v0 x[c0, :] + v1 x[c1, :] + v2 x[c2, :] + ...
 *     x [k, b]:  rows c0..c3, each b contiguous elements (ldx apart)
 *
 * Contract of a row-range kernel fn(call, i0, i1): for every row i in [i0, i1) and column c
 * in [0, b), out[i * ldo + c] = sum over the row's entries of values[p] * x[col_idx[p] * ldx
 * + c] (int8: exact modulo 2^32; float32: in float32, any order). b >= 1, and a kernel
 * handles any b (column tails are the kernel's). It writes nothing else. */
#ifndef LOWBIT_SPMM_CSR_H
#define LOWBIT_SPMM_CSR_H

#include "lowbit.h"

#define LB_CSR_QUAD 4

typedef struct {
    const lb_csr_weights *w;
    const void *x;
    int64_t ldx, b;
    void *out;
    int64_t ldo;
} lb_spmm_csr_call;

typedef void (*lb_spmm_csr_rows_fn)(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);

void lb_spmm_csr_rows_s8_portable(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);
void lb_spmm_csr_rows_f32_portable(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);
void lb_spmm_csr_rows_s8_avx2(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);
void lb_spmm_csr_rows_f32_avx2(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);
void lb_spmm_csr_rows_s8_avx512(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);
void lb_spmm_csr_rows_f32_avx512(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);
void lb_spmm_csr_rows_s8_avx512_vnni(const lb_spmm_csr_call *c, int64_t i0, int64_t i1);

/* Software prefetch of the x rows LB_CSR_PF entries ahead (within the row): the rows are
 * random, so no hardware prefetcher sees them coming. Measured on Zen 5 (4096 x 4096 int8
 * weights at 10%, b = 128, x in L2): 18 -> 14.5 cycles per quad for the VNNI kernel; the
 * float32 kernels, whose x rows come from L3, gain about 6%. */
#define LB_CSR_PF 16

static inline __attribute__((always_inline)) void lb_csr_prefetch(const void *x_row, int lines) {
    for (int l = 0; l < lines; ++l) __builtin_prefetch((const char *)x_row + 64 * l, 0, 3);
}

/* int8 columns [c0, c1) of row i, scalar: the column tails of the vector kernels that have
 * no byte-masked loads (AVX2). Exact modulo 2^32. */
static inline void lb_spmm_csr_s8_columns(const lb_spmm_csr_call *c, int64_t i, int64_t c0,
                                          int64_t c1) {
    const lb_csr_weights *w = c->w;
    const int8_t *v = (const int8_t *)w->values, *x = (const int8_t *)c->x;
    int32_t *o = (int32_t *)c->out + i * c->ldo;
    for (int64_t col = c0; col < c1; ++col) {
        uint32_t sum = 0;
        for (int64_t p = w->row_ptr[i]; p < w->row_ptr[i + 1]; ++p)
            sum += (uint32_t)((int32_t)v[p] * (int32_t)x[w->col_idx[p] * c->ldx + col]);
        o[col] = (int32_t)sum;
    }
}

#endif
