/* The C surface that Python sees. cffi's cdef parses this file, so it holds plain
 * declarations only (no macros, no includes); lowbit.h includes it for the C side. */

typedef struct {
    /* 0: int32 out; 1: requantize to int8/uint8 out; 2: dequantize to float32 out */
    int32_t kind;
    /* requantize: out = clamp(zp + ((sat32(acc + bias) * mult + 2^(shift-1)) >> shift), qmin, qmax) */
    const int32_t *bias;        /* [N] or NULL */
    const int32_t *multiplier;  /* [N], 0 < mult < 2^31 */
    const int32_t *shift;       /* [N], 1 <= shift <= 62 */
    int32_t zero_point;
    int32_t qmin;
    int32_t qmax;
    int32_t out_unsigned;       /* requantize: 1 writes uint8, 0 writes int8 */
    /* dequantize: out = (float)acc * (a_scale[i] * w_scale[j]) + fbias[j] */
    const float *a_scale;       /* [M] */
    const float *w_scale;       /* [N] */
    const float *fbias;         /* [N] or NULL */
} lb_epilogue;

/* CPU features and ISA variants. */
uint64_t lb_cpu_features(void);
const char *lb_feature_name(int bit);
int lb_isa_count(void);
const char *lb_isa_name(int isa);
int lb_isa_supported(int isa);          /* this CPU and OS can run it */
void lb_init(uint32_t disabled_isa_mask);
int lb_isa_usable(int isa);             /* supported and not disabled */
int lb_selected_isa(void);              /* best usable, chosen in lb_init */

/* Threads. */
int lb_set_num_threads(int n);
int lb_get_num_threads(void);

/* C[M,N] = epilogue(sum_k (A[i,k] - a_zero_point) * W[k,j]).
 * a: int8 (a_signed=1) or uint8 [M, K], rows lda bytes apart, unit stride in K.
 * w: packed int8 panels (see gemm_int8_frame.inc); w_colsum[j] = sum_k W[k, j].
 * out: rows ldo elements apart. isa < 0 uses the variant chosen at load.
 * Returns 0, or a negative code for arguments the wrapper should have rejected. */
int lb_gemm_int8(int isa, int64_t m, int64_t n, int64_t k,
                 const void *a, int64_t lda, int32_t a_signed, int32_t a_zero_point,
                 const int8_t *w, const int32_t *w_colsum,
                 const lb_epilogue *ep, void *out, int64_t ldo);

/* Binary (XNOR-Net) GEMM over +-1 values bit-packed along K (see gemm_binary_frame.inc):
 *   dot[i, j] = k - 2 * popcount(a_i XOR w_j) over the k logical bits = sum_k a[i,k] w[k,j];
 *   out: int32 dot when alpha and beta are both NULL, else float32 (dot * beta[i]) * alpha[j]
 *   (a NULL one counts as all ones).
 * a: uint64 [M, ceil(k / 64)], rows lda words apart; bit b of word q is K index 64 q + b.
 * w: packed binary panels (lowbit.kernels.formats.BINARY_PANELS). Bits past k are ignored.
 * out: rows ldo elements apart. isa < 0 runs lb_gemm_binary_selected().
 * Returns 0, or a negative code for arguments the wrapper should have rejected. */
int lb_gemm_binary(int isa, int64_t m, int64_t n, int64_t k, const uint64_t *a, int64_t lda,
                   const uint64_t *w, const float *alpha, const float *beta, void *out,
                   int64_t ldo);
int lb_gemm_binary_supported(int isa);  /* this CPU and OS can run gemm_binary's variant isa */
int lb_gemm_binary_selected(void);      /* best usable gemm_binary variant */
/* Test hook: nonzero makes the portable variant use the baseline popcount routine even on a
 * CPU with POPCNT; returns the previous setting. */
int lb_gemm_binary_force_generic_popcount(int on);

/* Register-resident peak loops, run on all pool threads; return ops done. */
double lb_peak_int8_vnni(int64_t iters);
double lb_peak_fp32_fma(int64_t iters);
/* The per-ISA ceilings (csrc/peak.c lists the instructions of each); 0 when unsupported. */
double lb_peak_int8_avx512_maddwd(int64_t iters);
double lb_peak_int8_avx512_maddubs(int64_t iters);
double lb_peak_int8_avx2_maddwd(int64_t iters);
double lb_peak_int8_avx2_maddubs(int64_t iters);
double lb_peak_int8_sse2_maddwd(int64_t iters);
double lb_peak_fp32_avx512_fma(int64_t iters);
double lb_peak_fp32_avx2_fma(int64_t iters);
double lb_peak_fp32_sse2_muladd(int64_t iters);
double lb_peak_bf16_avx512_bf16(int64_t iters);
double lb_peak_binary_avx512_vpopcntdq(int64_t iters);
double lb_peak_binary_avx2_lut(int64_t iters);
double lb_peak_binary_popcnt(int64_t iters);

/* Grouped 4-bit weights (lowbit.kernels.formats.INT4_PANELS / UINT4_PANELS): nibble n in
 * [0, 15], value v = n - z with z = 8 (int4) or the group's zero point (uint4); the weight is
 * W[k, j] = v * scale[k / group_size, j]. Layout and nibble order: csrc/gemm_w4.c. */
typedef struct {
    int64_t k, n, group_size;  /* K a multiple of group_size; group_size in {32, 64, 128} */
    const uint8_t *data;       /* [ceil(n/64)][k/8][64][4] nibble bytes */
    const void *scales;        /* [ceil(n/64)][k/group_size][64] float16 or float32 */
    int32_t scale_f16;         /* 1: scales are IEEE binary16, 0: float32 */
    const uint8_t *zeros;      /* [ceil(n/64)][k/group_size][64] zero points (uint4), or
                                  NULL: every zero point is 8 (int4) */
} lb_w4_weights;

/* out[i, j] = sum_k x[i, k] * W[k, j] in float32 (weight-only quantization).
 * x: [M, K] float32 (x_bf16 = 0) or bfloat16 bit patterns (x_bf16 = 1; subnormals count as
 * zero), rows ldx elements apart; out: float32, rows ldo apart. Variant avx512_vnni is the
 * bfloat16 dot-product one (vdpbf16ps): bfloat16 activations only.
 * isa < 0 runs lb_gemm_w4a16_selected(x_bf16). Returns 0 or a negative code. */
int lb_gemm_w4a16(int isa, int64_t m, const void *x, int64_t ldx, int32_t x_bf16,
                  const lb_w4_weights *w, float *out, int64_t ldo);
int lb_gemm_w4a16_supported(int isa);   /* this CPU and OS can run gemm_w4a16's variant isa */
int lb_gemm_w4a16_selected(int32_t x_bf16);  /* best usable variant for these activations */

/* out[i, j] = a_scale[i] * sum_g scale[g, j] * acc_g[i, j], acc_g = sum over k in group g of
 * a[i, k] * v[k, j] (exact int32), the sum over groups in float32.
 * a: int8 [M, K], rows lda bytes apart; a_scale: [M] or NULL (ones); out: float32, rows ldo
 * apart. isa < 0 runs lb_gemm_w4a8_selected(). Returns 0 or a negative code. */
int lb_gemm_w4a8(int isa, int64_t m, const int8_t *a, int64_t lda, const float *a_scale,
                 const lb_w4_weights *w, float *out, int64_t ldo);
int lb_gemm_w4a8_supported(int isa);
int lb_gemm_w4a8_selected(void);

/* STREAM-like read of nbytes (a multiple of 256, buf 64-byte aligned) by all pool threads,
 * passes times, chunks claimed dynamically; returns the bytes read (nbytes * passes). */
double lb_read_bandwidth(const void *buf, int64_t nbytes, int64_t passes);

/* CSR sparse weights x dense activations (lowbit.kernels.format_csr.CSR_ROWS):
 *   out[i, c] = sum over p in [row_ptr[i], row_ptr[i + 1]) of values[p] * x[col_idx[p], c]
 * Every row holds a multiple of 4 entries (padding: value 0, a valid column index).
 * int8 values and activations (f32 = 0) give exact int32 (wrapping arithmetic: exact
 * whenever the true result fits in int32; the wrapper checks); float32 (f32 = 1) give float32
 * summed in float32. row_sum: int8 only, the sum of each row's values (the VNNI variant's
 * offset correction), else NULL. The struct is built once per packed matrix. */
typedef struct {
    int64_t n_rows, k;
    const int64_t *row_ptr;   /* [n_rows + 1] */
    const int32_t *col_idx;   /* [row_ptr[n_rows]], each in [0, k) */
    const void *values;       /* int8 or float32 [row_ptr[n_rows]] */
    const int32_t *row_sum;   /* [n_rows] (int8) or NULL (float32) */
    int32_t f32;              /* 1: float32 values and activations, 0: int8 */
} lb_csr_weights;

/* x: [k, b] int8 or float32, rows ldx elements apart, unit stride in b; out: [n_rows, b]
 * int32 or float32, rows ldo elements apart. isa < 0 runs lb_spmm_csr_selected(w->f32).
 * Returns 0 or a negative code. */
int lb_spmm_csr(int isa, const lb_csr_weights *w, int64_t b, const void *x, int64_t ldx,
                void *out, int64_t ldo);
int lb_spmm_csr_supported(int isa, int32_t f32);  /* spmm_csr has variant isa for this dtype */
int lb_spmm_csr_selected(int32_t f32);            /* best usable variant for this dtype */

/* 2:4 sparse weights (lowbit.kernels.format_sparse24.SPARSE24_PANELS): per column, every
 * group of 4 K values keeps 2 values and their 2-bit indices. Layout: csrc/gemm_sparse24.c. */
typedef struct {
    int64_t k, n;              /* logical K and N */
    int32_t f32;               /* 1: float32 values, 0: int8 values */
    const void *values;        /* [ceil(n/64)][ceil(k/32)] blocks of 16 x 64 kept values */
    const uint32_t *meta;      /* [ceil(n/64)][ceil(k/32)][64] index words */
    const int32_t *col_sum;    /* int8: [n] sum of column j's kept values; float32: NULL */
} lb_s24_weights;

/* out[i, j] = epilogue(sum over groups g, slots t of (a[i, 4g + idx] - a_zero_point) *
 * v[g, t, j]), the sum exact in int32 (wrapping), the epilogue fused as in lb_gemm_int8.
 * a: int8 (a_signed = 1) or uint8 [M, K], rows lda bytes apart; out: the epilogue's type,
 * rows ldo elements apart. isa < 0 runs lb_gemm_sparse24_selected(0).
 * Returns 0 or a negative code for arguments the wrapper should have rejected. */
int lb_gemm_sparse24_s8(int isa, int64_t m, const void *a, int64_t lda, int32_t a_signed,
                        int32_t a_zero_point, const lb_s24_weights *w, const lb_epilogue *ep,
                        void *out, int64_t ldo);
/* The same for float32 activations x [M, K] (rows ldx apart) and float32 values, summed in
 * float32; out rows ldo apart. isa < 0 runs lb_gemm_sparse24_selected(1). */
int lb_gemm_sparse24_f32(int isa, int64_t m, const float *x, int64_t ldx,
                         const lb_s24_weights *w, float *out, int64_t ldo);
int lb_gemm_sparse24_supported(int isa, int32_t f32);  /* this CPU and OS can run it */
int lb_gemm_sparse24_selected(int32_t f32);            /* best usable variant */
