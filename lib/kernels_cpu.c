/* kernels_cpu.c — the CPU side of lib/kernels.h: fp32, OpenMP over rows or
 * (batch, head) pairs, inner loops over contiguous memory that gcc
 * vectorises (`#pragma omp simd`, so -O2 -fopenmp is enough), GEMMs through
 * cblas_sgemm. The plain double-precision references these are tested
 * against live in tests/ref_ops.c (tests/test_kernels.c).
 *
 * Build: cc -O3 -march=native -fopenmp -c lib/kernels_cpu.c; link -lopenblas -lm.
 *
 * Conventions beyond kernels.h:
 *   - elementwise kernels (k_act_*, k_bias_act_forward, k_add, k_mul,
 *     k_accumulate, k_dropout_*, k_scale, k_softmax_*) may run in place:
 *     out may be the same pointer as an input (never a shifted one).
 *   - k_crossentropy_forward_backward may write dlogits over logits.
 *   - sums over rows into parameter gradients (dbias, layernorm's dweight,
 *     dwte, dwpe) are split by column, each column summed in row order by
 *     one thread: race-free, and the same bits for any thread count (so is
 *     attention; the GEMMs are OpenBLAS's).
 *   - GEMMs are split over the OpenMP threads with OpenBLAS at one thread
 *     (see k_sgemm): the kernels set openblas_set_num_threads(1).
 *   - exp() in the softmaxes, attention, cross-entropy, GELU-tanh and SiLU is
 *     k_expf below (branch-free, vectorisable, within 1.1 ulp).
 *   - float compares in hot loops go through integers (k_ford): gcc keeps
 *     float `?:` as branches under its default -ftrapping-math, and a branch
 *     stops the loop from vectorising.
 */
#include "lib/kernels.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */

static void *k_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) abort(); /* out of memory inside a kernel: nothing sensible to return */
  return p;
}

/* Float compares do not vectorise here: with gcc's default -ftrapping-math a
 * `x < y ? a : b` on floats stays a branch and the loop stays scalar. So the
 * hot loops compare floats as integers: k_ford maps a float's bits to an
 * int32 that orders like the float (-0 just below +0, NaNs beyond +-inf);
 * the map is its own inverse. */
static inline __attribute__((always_inline)) int32_t k_ford(float x) {
  int32_t i;
  memcpy(&i, &x, 4);
  return i ^ ((i >> 31) & 0x7fffffff);
}
static inline __attribute__((always_inline)) float k_fromord(int32_t k) {
  int32_t i = k ^ ((k >> 31) & 0x7fffffff);
  float x;
  memcpy(&x, &i, 4);
  return x;
}
/* cond ? a : 0, cond 0 or 1, on the bits */
static inline __attribute__((always_inline)) float k_select(int32_t cond, float a) {
  int32_t i;
  memcpy(&i, &a, 4);
  i &= -cond;
  memcpy(&a, &i, 4);
  return a;
}
#define K_ORD_M86_5 (-1118633985) /* k_ford(-86.5f) */
#define K_ORD_88_3 1118869914     /* k_ford(88.3f) */

/* exp(x), branch-free so that loops calling it vectorise. Cephes' expf:
 * x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7 polynomial, 2^n put
 * into the exponent bits. x is clamped to [-86.5, 88.3] so that 2^n stays a
 * normal float: x < -86.5 gives 0 (exp(-inf) = 0), x >= 88.3 gives 2.0e38
 * (inf never comes out); NaN gives NaN. Error within 1.1 ulp of exp. */
static inline __attribute__((always_inline)) float k_expf(float x) {
  int32_t kx = k_ford(x), xi;
  memcpy(&xi, &x, 4);
  const int32_t above = -(int32_t)(kx >= K_ORD_M86_5); /* 0 where exp(x) underflows */
  kx = kx < K_ORD_M86_5 ? K_ORD_M86_5 : kx;
  kx = kx > K_ORD_88_3 ? K_ORD_88_3 : kx;
  const float xc = k_fromord(kx);
  float z = xc * 1.44269504088896341f + 12582912.0f; /* 1.5*2^23: rounds x/ln2 to an integer */
  uint32_t zi;
  memcpy(&zi, &z, 4);
  float n = z - 12582912.0f;
  float r = xc - n * 0.693359375f;  /* ln2, high part (exact in 9 bits) */
  r = r - n * -2.12194440e-4f;      /* ln2, low part */
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  uint32_t pi;
  memcpy(&pi, &p, 4);
  pi += (zi - 0x4B400000u) << 23; /* zi - bits(1.5*2^23) = n, two's complement */
  int32_t ei = (int32_t)pi & above;
  /* NaN in, NaN out; by masks, as a `?:` here becomes a branch around the float code */
  const int32_t nan = -(int32_t)((xi & 0x7fffffff) > 0x7f800000);
  ei = (ei & ~nan) | (xi & nan);
  float e;
  memcpy(&e, &ei, 4);
  return e;
}

/* max of x[0..n) (n >= 1), a NaN wins */
static inline __attribute__((always_inline)) float k_maxf(const float *restrict x, int n) {
  int32_t m = INT32_MIN;
#pragma omp simd reduction(max : m)
  for (int i = 0; i < n; i++) {
    int32_t k = k_ford(x[i]);
    m = k > m ? k : m;
  }
  return k_fromord(m);
}

static inline __attribute__((always_inline)) float k_sigmoidf(float x) { return 1.0f / (1.0f + k_expf(-x)); }

/* The range [c0, c1) of columns (of C) that thread `tid` of `nt` owns,
 * in blocks of 16 floats so that two threads never share a cache line. */
static void k_col_range(int C, int tid, int nt, int *c0, int *c1) {
  int nblk = (C + 15) / 16;
  int per = nblk / nt, extra = nblk % nt;
  int b0 = tid * per + (tid < extra ? tid : extra);
  int b1 = b0 + per + (tid < extra);
  *c0 = b0 * 16 < C ? b0 * 16 : C;
  *c1 = b1 * 16 < C ? b1 * 16 : C;
}

/* ------------------------------------------------------------------------ */
/* threads and GEMMs
 *
 * One thread pool: every GEMM is split over the OpenMP threads, each slice a
 * single-threaded cblas_sgemm, and OpenBLAS's own pthreads are set to 1.
 * With both pools (OpenMP's workers spin after a parallel region, OpenBLAS's
 * spin after a GEMM) the two fight over the cores: bench/block_bench.c on 2
 * cores ran the GPT-2 block at 62 GFLOP/s that way against 150 with one pool
 * (or with OMP_WAIT_POLICY=passive). So every kernel that calls the BLAS
 * first sets OpenBLAS to one thread if it is not; that setting is
 * process-wide. */

static void k_blas_one_thread(void) {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

void k_set_threads(int n) {
  static int default_omp; /* what the environment chose, seen on the first call */
  if (!default_omp) default_omp = omp_get_max_threads();
  omp_set_num_threads(n > 0 ? n : default_omp);
  openblas_set_num_threads(1); /* the GEMMs use the OpenMP threads (above) */
}

/* Cm (M, Nc) = op(A) (M, K) @ op(B) (K, Nc) + beta Cm, row-major, split over
 * the OpenMP threads along the larger of M and Nc (so that the matrix each
 * thread packs again in full is the smaller one) */
static void k_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int Nc, int K, const float *A, int lda,
                    const float *Bm, int ldb, float beta, float *Cm, int ldc) {
  k_blas_one_thread();
#pragma omp parallel
  {
    int i0, i1;
    if (M >= Nc) { /* rows of Cm and of op(A) */
      k_col_range(M, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
      if (i1 > i0)
        cblas_sgemm(CblasRowMajor, ta, tb, i1 - i0, Nc, K, 1.0f, ta == CblasNoTrans ? A + (size_t)i0 * lda : A + i0,
                    lda, Bm, ldb, beta, Cm + (size_t)i0 * ldc, ldc);
    } else { /* columns of Cm and of op(B) */
      k_col_range(Nc, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
      if (i1 > i0)
        cblas_sgemm(CblasRowMajor, ta, tb, M, i1 - i0, K, 1.0f, A, lda,
                    tb == CblasNoTrans ? Bm + i0 : Bm + (size_t)i0 * ldb, ldb, beta, Cm + i0, ldc);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* matmul: out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC)          */

void k_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
  if (N <= 0 || OC <= 0) return;
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
  }
  if (C <= 0) {
    if (!bias) memset(out, 0, (size_t)N * OC * sizeof(float));
    return;
  }
  k_sgemm(CblasNoTrans, CblasTrans, N, OC, C, inp, C, weight, C, bias ? 1.0f : 0.0f, out, OC);
}

/* dinp (N, C) = dout (N, OC) @ weight (OC, C) */
void k_matmul_backward_input(float *dinp, const float *dout, const float *weight, int N, int C, int OC) {
  if (!dinp || N <= 0 || C <= 0) return;
  if (OC <= 0) {
    memset(dinp, 0, (size_t)N * C * sizeof(float));
    return;
  }
  k_sgemm(CblasNoTrans, CblasNoTrans, N, C, OC, dout, OC, weight, C, 0.0f, dinp, C);
}

/* dweight (OC, C) += dout (N, OC)^T @ inp (N, C); dbias (OC) += column sums of dout */
void k_matmul_backward_weight(float *dweight, float *dbias, const float *dout, const float *inp, int N, int C, int OC) {
  if (N <= 0 || OC <= 0) return;
  if (C > 0) k_sgemm(CblasTrans, CblasNoTrans, OC, C, N, dout, OC, inp, C, 1.0f, dweight, C);
  if (!dbias) return;
#pragma omp parallel
  {
    int o0, o1;
    k_col_range(OC, omp_get_thread_num(), omp_get_num_threads(), &o0, &o1);
    for (int ob = o0; ob < o1; ob += 64) { /* 64 running sums stay in registers */
      int w = o1 - ob < 64 ? o1 - ob : 64;
      float acc[64] = {0};
      for (int n = 0; n < N; n++) {
        const float *restrict d = dout + (size_t)n * OC + ob;
#pragma omp simd
        for (int j = 0; j < w; j++) acc[j] += d[j];
      }
      for (int j = 0; j < w; j++) dbias[ob + j] += acc[j];
    }
  }
}

/* ------------------------------------------------------------------------ */
/* embedding: out (B*T, C) = wte (V, C)[tokens (B*T)] + wpe (T, C)[t]       */

void k_embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int B, int T, int C) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; bt++) {
    float *restrict o = out + (size_t)bt * C;
    const float *restrict e = wte + (size_t)tokens[bt] * C;
    if (wpe) {
      const float *restrict p = wpe + (size_t)(bt % T) * C;
#pragma omp simd
      for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    } else {
      memcpy(o, e, (size_t)C * sizeof(float));
    }
  }
}

void k_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int B, int T, int C) {
#pragma omp parallel
  {
    /* dwte: a token may repeat, so split by column, not by row */
    int c0, c1;
    k_col_range(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
    for (int bt = 0; bt < B * T; bt++) {
      float *restrict g = dwte + (size_t)tokens[bt] * C;
      const float *restrict d = dout + (size_t)bt * C;
#pragma omp simd
      for (int c = c0; c < c1; c++) g[c] += d[c];
    }
    if (dwpe) {
#pragma omp for schedule(static)
      for (int t = 0; t < T; t++) {
        float *restrict g = dwpe + (size_t)t * C;
        for (int b = 0; b < B; b++) {
          const float *restrict d = dout + ((size_t)b * T + t) * C;
#pragma omp simd
          for (int c = 0; c < C; c++) g[c] += d[c];
        }
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* layernorm over rows of (N, C): out = (x - mean) * rstd * weight + bias   */

/* one row: two passes (mean, then variance of x - mean), float lanes */
static inline void k_layernorm_row(float *restrict o, float *mean, float *rstd, const float *restrict x,
                                   const float *restrict w, const float *restrict b, int C, float eps) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int c = 0; c < C; c++) s += x[c];
  float m = s / (float)C;
  float v = 0.0f;
#pragma omp simd reduction(+ : v)
  for (int c = 0; c < C; c++) {
    float d = x[c] - m;
    v += d * d;
  }
  float rs = 1.0f / sqrtf(v / (float)C + eps);
  if (b) {
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * rs * w[c] + b[c];
  } else {
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * rs * w[c];
  }
  *mean = m;
  *rstd = rs;
}

void k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias,
                         int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++)
    k_layernorm_row(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, weight, bias, C, eps);
}

void k_residual_layernorm_forward(float *resid_out, float *out, float *mean, float *rstd, const float *a, const float *b,
                                  const float *weight, const float *bias, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float *restrict r = resid_out + (size_t)n * C;
    const float *restrict x = a + (size_t)n * C, *restrict y = b + (size_t)n * C;
#pragma omp simd
    for (int c = 0; c < C; c++) r[c] = x[c] + y[c];
    k_layernorm_row(out + (size_t)n * C, mean + n, rstd + n, r, weight, bias, C, eps);
  }
}

/* dinp = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * weight;
 * dweight += sum_n dout * norm; dbias += sum_n dout */
void k_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, const float *mean, const float *rstd, int N, int C) {
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int n = 0; n < N; n++) {
      const float *restrict d = dout + (size_t)n * C, *restrict x = inp + (size_t)n * C;
      const float *restrict w = weight;
      float *restrict g = dinp + (size_t)n * C;
      float m = mean[n], rs = rstd[n];
      float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
      for (int c = 0; c < C; c++) {
        float dn = d[c] * w[c];
        s1 += dn;
        s2 += dn * (x[c] - m);
      }
      s1 /= (float)C;
      s2 = s2 * rs / (float)C; /* mean(dnorm * norm) */
#pragma omp simd
      for (int c = 0; c < C; c++) g[c] = rs * (d[c] * w[c] - s1 - (x[c] - m) * rs * s2);
    }
    /* parameter gradients by column blocks (reads dout, inp a second time) */
    int c0, c1;
    k_col_range(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
    for (int cb = c0; cb < c1; cb += 64) {
      int w = c1 - cb < 64 ? c1 - cb : 64;
      float aw[64] = {0}, ab[64] = {0};
      for (int n = 0; n < N; n++) {
        const float *restrict d = dout + (size_t)n * C + cb, *restrict x = inp + (size_t)n * C + cb;
        float m = mean[n], rs = rstd[n];
#pragma omp simd
        for (int j = 0; j < w; j++) {
          ab[j] += d[j];
          aw[j] += d[j] * (x[j] - m) * rs;
        }
      }
      for (int j = 0; j < w; j++) dweight[cb + j] += aw[j];
      if (dbias)
        for (int j = 0; j < w; j++) dbias[cb + j] += ab[j];
    }
  }
}

/* ------------------------------------------------------------------------ */
/* rmsnorm: out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps)        */

void k_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *restrict x = inp + (size_t)n * C, *restrict w = weight;
    float *restrict o = out + (size_t)n * C;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += x[c] * x[c];
    float rs = 1.0f / sqrtf(s / (float)C + eps);
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = x[c] * rs * w[c];
    rstd[n] = rs;
  }
}

/* dinp = rstd * (dout*w - x * rstd^2 * mean(dout*w*x)); dweight += sum_n dout * x * rstd */
void k_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                        const float *rstd, int N, int C) {
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int n = 0; n < N; n++) {
      const float *restrict d = dout + (size_t)n * C, *restrict x = inp + (size_t)n * C, *restrict w = weight;
      float *restrict g = dinp + (size_t)n * C;
      float rs = rstd[n], s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int c = 0; c < C; c++) s += d[c] * w[c] * x[c];
      float k = rs * rs * s / (float)C;
#pragma omp simd
      for (int c = 0; c < C; c++) g[c] = rs * (d[c] * w[c] - x[c] * k);
    }
    int c0, c1;
    k_col_range(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
    for (int cb = c0; cb < c1; cb += 64) {
      int w = c1 - cb < 64 ? c1 - cb : 64;
      float aw[64] = {0};
      for (int n = 0; n < N; n++) {
        const float *restrict d = dout + (size_t)n * C + cb, *restrict x = inp + (size_t)n * C + cb;
        float rs = rstd[n];
#pragma omp simd
        for (int j = 0; j < w; j++) aw[j] += d[j] * x[j] * rs;
      }
      for (int j = 0; j < w; j++) dweight[cb + j] += aw[j];
    }
  }
}

/* ------------------------------------------------------------------------ */
/* activations                                                              */

#define K_SQRT_2_OVER_PI 0.7978845608028654f
#define K_GELU_C 0.044715f

/* GELU, tanh form: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
 * computed as x * sigmoid(2u) (the same function; no cancellation for x << 0) */
static inline __attribute__((always_inline)) float k_gelu_tanh(float x) {
  float u = K_SQRT_2_OVER_PI * (x + K_GELU_C * x * x * x);
  return x * k_sigmoidf(2.0f * u);
}
/* d/dx: s + x * 2 s (1 - s) du/dx, s = sigmoid(2u), du/dx = sqrt(2/pi) (1 + 3*0.044715 x^2);
 * 1 - s = e s with e = exp(-2u), which keeps its digits when s is near 1 */
static inline __attribute__((always_inline)) float k_gelu_tanh_grad(float x) {
  float u = K_SQRT_2_OVER_PI * (x + K_GELU_C * x * x * x);
  float e = k_expf(-2.0f * u), s = 1.0f / (1.0f + e);
  return s + x * 2.0f * s * (e * s) * K_SQRT_2_OVER_PI * (1.0f + 3.0f * K_GELU_C * x * x);
}
/* GELU, erf form: 0.5 x (1 + erf(x/sqrt2)) = 0.5 x erfc(-x/sqrt2) (accurate for x << 0) */
static inline float k_gelu_erf(float x) { return 0.5f * x * erfcf(-x * 0.7071067811865476f); }
static inline float k_gelu_erf_grad(float x) {
  return 0.5f * erfcf(-x * 0.7071067811865476f) + x * 0.3989422804014327f * k_expf(-0.5f * x * x);
}

void k_act_forward(float *out, const float *inp, long n, KAct act) {
  switch (act) {
  case K_GELU_TANH:
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) out[i] = k_gelu_tanh(inp[i]);
    break;
  case K_GELU_ERF: /* erfcf is libm's, not vectorised */
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) out[i] = k_gelu_erf(inp[i]);
    break;
  case K_RELU:
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) out[i] = k_select(k_ford(inp[i]) > 0, inp[i]);
    break;
  case K_SILU:
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) out[i] = inp[i] * k_sigmoidf(inp[i]);
    break;
  }
}

void k_act_backward(float *dinp, const float *dout, const float *inp, long n, KAct act) {
  switch (act) {
  case K_GELU_TANH:
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) dinp[i] = dout[i] * k_gelu_tanh_grad(inp[i]);
    break;
  case K_GELU_ERF:
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) dinp[i] = dout[i] * k_gelu_erf_grad(inp[i]);
    break;
  case K_RELU:
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) dinp[i] = k_select(k_ford(inp[i]) > 0, dout[i]);
    break;
  case K_SILU:
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) { /* s (1 + x (1 - s)), 1 - s = e s */
      float e = k_expf(-inp[i]), s = 1.0f / (1.0f + e);
      dinp[i] = dout[i] * s * (1.0f + inp[i] * (e * s));
    }
    break;
  }
}

void k_bias_act_forward(float *out, const float *inp, const float *bias, int N, int C, KAct act) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float *o = out + (size_t)n * C;
    const float *x = inp + (size_t)n * C;
    switch (act) {
    case K_GELU_TANH:
#pragma omp simd
      for (int c = 0; c < C; c++) o[c] = k_gelu_tanh(x[c] + bias[c]);
      break;
    case K_GELU_ERF:
      for (int c = 0; c < C; c++) o[c] = k_gelu_erf(x[c] + bias[c]);
      break;
    case K_RELU:
#pragma omp simd
      for (int c = 0; c < C; c++) {
        float y = x[c] + bias[c];
        o[c] = k_select(k_ford(y) > 0, y);
      }
      break;
    case K_SILU:
#pragma omp simd
      for (int c = 0; c < C; c++) {
        float y = x[c] + bias[c];
        o[c] = y * k_sigmoidf(y);
      }
      break;
    }
  }
}

void k_add(float *out, const float *a, const float *b, long n) {
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void k_mul(float *out, const float *a, const float *b, long n) {
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void k_accumulate(float *dst, const float *src, long n) {
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; i++) dst[i] += src[i];
}

/* ------------------------------------------------------------------------ */
/* dropout with Philox-4x32-10 (Salmon et al. 2011, as Random123 and cuRAND)
 *
 * The mask, exactly (the CUDA kernel computes the same bits):
 *   key     = (k0, k1) = (seed & 0xffffffff, seed >> 32)
 *   counter = (c0, c1, c2, c3) = (g & 0xffffffff, g >> 32, 0, 0),
 *             g = offset + i / 4 (64-bit, wraps mod 2^64)
 *   u       = word i % 4 of philox4x32_10(counter, key)
 *   keep i  <=>  (uint64_t)u >= thr, thr = (uint64_t)((double)p * 2^32)
 *             (p <= 0: thr = 0, keeps all; p >= 1: drops all)
 *   out[i]  = keep ? inp[i] * (1.0f / (1.0f - p)) : 0   (scale in float)
 * One call uses counters offset .. offset + ceil(n/4) - 1; the next call
 * should start at an offset past those. Round r (0..9) of philox uses the
 * key bumped r times by (0x9E3779B9, 0xBB67AE85); a round maps
 * (x0,x1,x2,x3) -> (hi(M1*x2)^x1^k0, lo(M1*x2), hi(M0*x0)^x3^k1, lo(M0*x0))
 * with M0 = 0xD2511F53, M1 = 0xCD9E8D57. */

#define K_PHILOX_M0 0xD2511F53u
#define K_PHILOX_M1 0xCD9E8D57u
#define K_PHILOX_W0 0x9E3779B9u
#define K_PHILOX_W1 0xBB67AE85u
#define K_DROP_GROUPS 64 /* philox calls per block: 256 elements */

/* r[4j + w] = word w of philox(g0 + j) for j < ng: r[i] is element i's word */
static void k_philox_block(uint32_t *restrict r, uint64_t g0, int ng, uint32_t k0, uint32_t k1) {
#pragma omp simd
  for (int j = 0; j < ng; j++) {
    uint64_t g = g0 + (uint64_t)j;
    uint32_t x0 = (uint32_t)g, x1 = (uint32_t)(g >> 32), x2 = 0, x3 = 0;
    uint32_t a = k0, b = k1;
    for (int round = 0; round < 10; round++) {
      uint64_t p0 = (uint64_t)K_PHILOX_M0 * x0, p1 = (uint64_t)K_PHILOX_M1 * x2;
      uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ a;
      uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ b;
      x1 = (uint32_t)p1;
      x3 = (uint32_t)p0;
      x0 = y0;
      x2 = y2;
      a += K_PHILOX_W0;
      b += K_PHILOX_W1;
    }
    r[4 * j + 0] = x0;
    r[4 * j + 1] = x1;
    r[4 * j + 2] = x2;
    r[4 * j + 3] = x3;
  }
}

/* out = mask * inp * scale over n; forward and backward are the same map */
static void k_dropout_apply(float *out, const float *inp, long n, float p, uint64_t seed, uint64_t offset) {
  if (p <= 0.0f) {
    if (out != inp) memmove(out, inp, (size_t)n * sizeof(float));
    return;
  }
  if (p >= 1.0f) {
    memset(out, 0, (size_t)n * sizeof(float));
    return;
  }
  const uint32_t thr = (uint32_t)((double)p * 4294967296.0); /* < 2^32 for p < 1 */
  const float scale = 1.0f / (1.0f - p);
  const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  const long blk = 4 * K_DROP_GROUPS;
  const long nblk = (n + blk - 1) / blk;
#pragma omp parallel for schedule(static)
  for (long ib = 0; ib < nblk; ib++) {
    uint32_t r[4 * K_DROP_GROUPS];
    long i0 = ib * blk, w = n - i0 < blk ? n - i0 : blk;
    k_philox_block(r, offset + (uint64_t)(i0 / 4), (int)((w + 3) / 4), k0, k1);
#pragma omp simd
    for (long j = 0; j < w; j++) {
      out[i0 + j] = k_select(r[j] >= thr, inp[i0 + j] * scale);
    }
  }
}

void k_dropout_forward(float *out, const float *inp, long n, float p, uint64_t seed, uint64_t offset) {
  k_dropout_apply(out, inp, n, p, seed, offset);
}

void k_dropout_backward(float *dinp, const float *dout, long n, float p, uint64_t seed, uint64_t offset) {
  k_dropout_apply(dinp, dout, n, p, seed, offset);
}

/* ------------------------------------------------------------------------ */
/* softmax over rows of (N, C)                                              */

void k_softmax_forward(float *out, const float *inp, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *x = inp + (size_t)n * C;
    float *o = out + (size_t)n * C;
    const float m = C > 0 ? k_maxf(x, C) : 0.0f;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) {
      float e = k_expf(x[c] - m);
      o[c] = e;
      s += e;
    }
    float inv = 1.0f / s;
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] *= inv;
  }
}

/* dinp = out * (dout - sum(dout * out)) */
void k_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *d = dout + (size_t)n * C, *y = out + (size_t)n * C;
    float *g = dinp + (size_t)n * C;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += d[c] * y[c];
#pragma omp simd
    for (int c = 0; c < C; c++) g[c] = y[c] * (d[c] - s);
  }
}

/* ------------------------------------------------------------------------ */
/* attention, flash style: query blocks of QB rows against key tiles of KB
 * keys, online softmax; only one QB x KB tile of scores exists at a time.
 * The tile products are single-threaded cblas_sgemm calls on the strided
 * rows, inside the OpenMP tasks. Query row t of head h (batch b):
 *   q_t  = q + (b*T + t)*q_stride + h*HS            (HS)
 *   k_j  = k + (b*Tk + j)*kv_stride + (h/G)*HS      (HS), G = NH/NH_kv, same for v_j
 *   out_t = sum_j softmax_j(q_t . k_j / sqrt(HS)) v_j over j < Tk
 *           (j <= t when causal; causal needs Tk == T)
 *   lse[b, h, t] = log sum_j exp(q_t . k_j / sqrt(HS))                      */

#define K_ATT_KB 64 /* keys per tile */
#define K_ATT_QB 64 /* query rows per block */

/* keys of the tile starting at j0 (kn of them) that query row t sees */
static inline int k_att_seen(const KAttn *a, int t, int j0, int kn) {
  if (!a->causal) return kn;
  int n = t + 1 - j0;
  return n < 0 ? 0 : n < kn ? n : kn;
}

void k_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const KAttn *a) {
  const int B = a->B, T = a->T, Tk = a->Tk, NH = a->NH, HS = a->HS, G = a->NH / a->NH_kv;
  const float scale = 1.0f / sqrtf((float)HS);
  const int nqb = (T + K_ATT_QB - 1) / K_ATT_QB;
  k_blas_one_thread();
#pragma omp parallel
  {
    float *S = k_malloc(sizeof(float) * K_ATT_QB * K_ATT_KB); /* (QB, KB) scores, then probabilities */
    float *acc = k_malloc(sizeof(float) * K_ATT_QB * HS);     /* (QB, HS) unnormalised out */
    float m[K_ATT_QB], l[K_ATT_QB];                          /* running max and sum per row */
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < NH; h++)
        for (int qb = 0; qb < nqb; qb++) {
          const int t0 = qb * K_ATT_QB, qn = T - t0 < K_ATT_QB ? T - t0 : K_ATT_QB;
          const int kend = a->causal ? (t0 + qn < Tk ? t0 + qn : Tk) : Tk; /* keys this block sees */
          const float *qblk = q + ((size_t)b * T + t0) * a->q_stride + (size_t)h * HS;
          const float *kbase = k + (size_t)b * Tk * a->kv_stride + (size_t)(h / G) * HS;
          const float *vbase = v + (size_t)b * Tk * a->kv_stride + (size_t)(h / G) * HS;
          for (int i = 0; i < qn; i++) m[i] = -FLT_MAX, l[i] = 0.0f;
          memset(acc, 0, sizeof(float) * (size_t)qn * HS);
          for (int j0 = 0; j0 < kend; j0 += K_ATT_KB) {
            const int kn = kend - j0 < K_ATT_KB ? kend - j0 : K_ATT_KB;
            /* S (qn, kn) = scale * Q (qn, HS) @ K (kn, HS)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qn, kn, HS, scale, qblk, a->q_stride,
                        kbase + (size_t)j0 * a->kv_stride, a->kv_stride, 0.0f, S, K_ATT_KB);
            for (int i = 0; i < qn; i++) {
              float *restrict s = S + i * K_ATT_KB;
              const int jn = k_att_seen(a, t0 + i, j0, kn);
              if (jn == 0) {
                memset(s, 0, sizeof(float) * kn);
                continue;
              }
              float mt = k_maxf(s, jn);
              mt = mt > m[i] ? mt : m[i];
              const float corr = k_expf(m[i] - mt);
              float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
              for (int j = 0; j < kn; j++) {
                s[j] = k_select(j < jn, k_expf(s[j] - mt));
                sum += s[j];
              }
              l[i] = l[i] * corr + sum;
              m[i] = mt;
              float *restrict ai = acc + (size_t)i * HS;
#pragma omp simd
              for (int d = 0; d < HS; d++) ai[d] *= corr;
            }
            /* acc (qn, HS) += P (qn, kn) @ V (kn, HS) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qn, HS, kn, 1.0f, S, K_ATT_KB,
                        vbase + (size_t)j0 * a->kv_stride, a->kv_stride, 1.0f, acc, HS);
          }
          for (int i = 0; i < qn; i++) {
            float *restrict o = out + ((size_t)b * T + t0 + i) * a->out_stride + (size_t)h * HS;
            const float *restrict ai = acc + (size_t)i * HS;
            const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f; /* no keys: out = 0 */
#pragma omp simd
            for (int d = 0; d < HS; d++) o[d] = ai[d] * inv;
            lse[((size_t)b * NH + h) * T + t0 + i] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
          }
        }
    free(S);
    free(acc);
  }
}

/* Backward, recomputing P = exp(S - lse) tile by tile:
 *   D_t = dout_t . out_t;  dP = dO V^T;  dS = P * (dP - D_t)
 *   dQ = scale dS K;  dK = scale dS^T Q;  dV = P^T dO
 * One task per (b, kv head): it owns dk, dv of that kv head (summed over its
 * G query heads in local buffers) and dq of those G heads, so nothing is
 * shared and the result does not depend on the thread count; the
 * parallelism is B * NH_kv tasks. */
void k_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                          const float *q, const float *k, const float *v, const KAttn *a) {
  const int B = a->B, T = a->T, Tk = a->Tk, NH = a->NH, NHkv = a->NH_kv, HS = a->HS, G = a->NH / a->NH_kv;
  const float scale = 1.0f / sqrtf((float)HS);
  k_blas_one_thread();
#pragma omp parallel
  {
    float *P = k_malloc(sizeof(float) * K_ATT_QB * K_ATT_KB);  /* (QB, KB) */
    float *dS = k_malloc(sizeof(float) * K_ATT_QB * K_ATT_KB); /* (QB, KB) dP, then dS */
    float *dK = k_malloc(sizeof(float) * (size_t)Tk * HS);     /* (Tk, HS) */
    float *dV = k_malloc(sizeof(float) * (size_t)Tk * HS);     /* (Tk, HS) */
    float *D = k_malloc(sizeof(float) * (size_t)T);            /* (T) */
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
      for (int hk = 0; hk < NHkv; hk++) {
        const float *kbase = k + (size_t)b * Tk * a->kv_stride + (size_t)hk * HS;
        const float *vbase = v + (size_t)b * Tk * a->kv_stride + (size_t)hk * HS;
        memset(dK, 0, sizeof(float) * (size_t)Tk * HS);
        memset(dV, 0, sizeof(float) * (size_t)Tk * HS);
        for (int h = hk * G; h < (hk + 1) * G; h++) {
          for (int t = 0; t < T; t++) {
            const size_t row = (size_t)b * T + t;
            const float *restrict dot = dout + row * a->out_stride + (size_t)h * HS;
            const float *restrict ot = out + row * a->out_stride + (size_t)h * HS;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int d = 0; d < HS; d++) s += dot[d] * ot[d];
            D[t] = s;
            memset(dq + row * a->q_stride + (size_t)h * HS, 0, sizeof(float) * HS);
          }
          for (int t0 = 0; t0 < T; t0 += K_ATT_QB) {
            const int qn = T - t0 < K_ATT_QB ? T - t0 : K_ATT_QB;
            const int kend = a->causal ? (t0 + qn < Tk ? t0 + qn : Tk) : Tk;
            const size_t row0 = (size_t)b * T + t0;
            const float *qblk = q + row0 * a->q_stride + (size_t)h * HS;
            const float *doblk = dout + row0 * a->out_stride + (size_t)h * HS;
            float *dqblk = dq + row0 * a->q_stride + (size_t)h * HS;
            const float *L = lse + ((size_t)b * NH + h) * T + t0;
            for (int j0 = 0; j0 < kend; j0 += K_ATT_KB) {
              const int kn = kend - j0 < K_ATT_KB ? kend - j0 : K_ATT_KB;
              const float *ktile = kbase + (size_t)j0 * a->kv_stride, *vtile = vbase + (size_t)j0 * a->kv_stride;
              /* P = scale Q K^T, dS = dO V^T (both (qn, kn)) */
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qn, kn, HS, scale, qblk, a->q_stride, ktile,
                          a->kv_stride, 0.0f, P, K_ATT_KB);
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qn, kn, HS, 1.0f, doblk, a->out_stride, vtile,
                          a->kv_stride, 0.0f, dS, K_ATT_KB);
              for (int i = 0; i < qn; i++) {
                float *restrict p = P + i * K_ATT_KB, *restrict ds = dS + i * K_ATT_KB;
                const int jn = k_att_seen(a, t0 + i, j0, kn);
                const float Li = L[i], Di = D[t0 + i];
#pragma omp simd
                for (int j = 0; j < kn; j++) {
                  p[j] = k_select(j < jn, k_expf(p[j] - Li));
                  ds[j] = p[j] * (ds[j] - Di);
                }
              }
              /* dQ (qn, HS) += scale dS K; dK (kn, HS) += scale dS^T Q; dV (kn, HS) += P^T dO */
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qn, HS, kn, scale, dS, K_ATT_KB, ktile,
                          a->kv_stride, 1.0f, dqblk, a->q_stride);
              cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kn, HS, qn, scale, dS, K_ATT_KB, qblk,
                          a->q_stride, 1.0f, dK + (size_t)j0 * HS, HS);
              cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kn, HS, qn, 1.0f, P, K_ATT_KB, doblk,
                          a->out_stride, 1.0f, dV + (size_t)j0 * HS, HS);
            }
          }
        }
        for (int j = 0; j < Tk; j++) {
          const size_t row = (size_t)b * Tk + j;
          memcpy(dk + row * a->kv_stride + (size_t)hk * HS, dK + (size_t)j * HS, sizeof(float) * HS);
          memcpy(dv + row * a->kv_stride + (size_t)hk * HS, dV + (size_t)j * HS, sizeof(float) * HS);
        }
      }
    free(P);
    free(dS);
    free(dK);
    free(dV);
    free(D);
  }
}

/* ------------------------------------------------------------------------ */
/* fused softmax + cross-entropy over rows of logits (N, V)                 */

void k_crossentropy_forward_backward(float *losses, float *dlogits, const float *logits, const int32_t *targets, int N,
                                     int V, float dloss_scale) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *x = logits + (size_t)n * V;
    const int tg = targets[n];
    if (tg < 0) { /* ignored row */
      losses[n] = 0.0f;
      if (dlogits) memset(dlogits + (size_t)n * V, 0, sizeof(float) * V);
      continue;
    }
    const float m = k_maxf(x, V);
    double s = 0.0; /* V may be 50k terms: sum in double */
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < V; i++) s += (double)k_expf(x[i] - m);
    const float lse = m + (float)log(s);
    losses[n] = lse - x[tg];
    if (dlogits) {
      float *g = dlogits + (size_t)n * V; /* may be x itself: read x[i] before writing g[i] */
      const float xt = x[tg];
#pragma omp simd
      for (int i = 0; i < V; i++) g[i] = k_expf(x[i] - lse) * dloss_scale;
      g[tg] = (k_expf(xt - lse) - 1.0f) * dloss_scale;
    }
  }
}

/* ------------------------------------------------------------------------ */
/* optimizer and utilities                                                  */

/* PyTorch's AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * param -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd * param) */
void k_adamw(float *param, const float *grad, float *m, float *v, long n, float lr, float beta1, float beta2, float eps,
             float weight_decay, int t) {
  const float bc1 = (float)(1.0 - pow((double)beta1, t)), bc2 = (float)(1.0 - pow((double)beta2, t));
  const float inv_bc1 = 1.0f / bc1, inv_bc2 = 1.0f / bc2;
  /* not vectorised: sqrtf keeps its errno path without -fno-math-errno
   * (about 20 vs 15.6 GB/s with it, on 2 cores) */
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) {
    const float g = grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi * inv_bc1, vhat = vi * inv_bc2;
    param[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * param[i]);
  }
}

double k_sumsq(const float *x, long n) {
  double s = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
  for (long i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
  return s;
}

void k_scale(float *x, long n, float s) {
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; i++) x[i] *= s;
}

/* ------------------------------------------------------------------------ */
/* small ops around the kernels                                             */

void k_sub(float *out, const float *a, const float *b, long n) {
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; i++) out[i] = a[i] - b[i];
}

void k_copy(float *out, const float *inp, long n) {
  if (out != inp) memmove(out, inp, sizeof(float) * (size_t)n);
}

void k_scale_copy(float *out, const float *inp, long n, float s) {
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; i++) out[i] = inp[i] * s;
}

void k_positions_at(int32_t *out, int N, int pos) {
  for (int r = 0; r < N; r++) out[r] = pos;
}

void k_attention_decode(float *out, float *lse, const float *q, const float *k, const float *v, float *kv, int pos, const KAttn *a) {
  const int kvw = a->NH_kv * a->HS;
  const size_t beam = 2 * (size_t)a->Tk * (size_t)kvw;
  for (int b = 0; b < a->B; b++) {
    float *kc = kv + (size_t)b * beam, *vc = kc + (size_t)a->Tk * kvw;
    memcpy(kc + (size_t)pos * kvw, k + (size_t)b * a->kv_stride, sizeof(float) * (size_t)kvw);
    memcpy(vc + (size_t)pos * kvw, v + (size_t)b * a->kv_stride, sizeof(float) * (size_t)kvw);
    KAttn one = {1, 1, pos + 1, a->NH, a->NH_kv, a->HS, 0, a->q_stride, kvw, a->out_stride};
    k_attention_forward(out + (size_t)b * a->out_stride, lse + (size_t)b * a->NH, q + (size_t)b * a->q_stride, kc, vc, &one);
  }
}

void k_positions(int32_t *out, int N, int T) {
  for (int r = 0; r < N; r++) out[r] = r % T;
}

void k_bias_add(float *out, const float *inp, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    float *o = out + (long)r * C;
    const float *x = inp + (long)r * C;
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = x[c] + bias[c];
  }
}

void k_bias_backward(float *dbias, const float *dout, int N, int C) {
#pragma omp parallel
  {
    int c0, c1;
    k_col_range(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
    for (int r = 0; r < N; r++) {
      const float *d = dout + (long)r * C;
      for (int c = c0; c < c1; c++) dbias[c] += d[c];
    }
  }
}

void k_vp_embedding_forward(float *out, const int32_t *ids, const float *W, int N, int C, int64_t r0, int64_t rows) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    int64_t id = ids[r] - r0;
    if (id >= 0 && id < rows) memcpy(out + (long)r * C, W + id * C, sizeof(float) * (size_t)C);
    else memset(out + (long)r * C, 0, sizeof(float) * (size_t)C);
  }
}

void k_vp_embedding_backward(float *dW, const float *dout, const int32_t *ids, int N, int C, int64_t r0, int64_t rows) {
  /* rows in order, columns split over threads: same bits for any thread count */
#pragma omp parallel
  {
    int c0, c1;
    k_col_range(C, omp_get_thread_num(), omp_get_num_threads(), &c0, &c1);
    for (int r = 0; r < N; r++) {
      int64_t id = ids[r] - r0;
      if (id < 0 || id >= rows) continue;
      const float *d = dout + (long)r * C;
      float *w = dW + id * C;
      for (int c = c0; c < c1; c++) w[c] += d[c];
    }
  }
}

void k_vp_rowmax(float *rowmax, const float *logits, int N, int V) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    float m = -INFINITY;
    const float *x = logits + (long)r * V;
    for (int c = 0; c < V; c++) m = fmaxf(m, x[c]);
    rowmax[r] = m;
  }
}

void k_vp_sumexp(float *st, const float *logits, const int32_t *targets, const float *M, int N, int V, int64_t v0) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    const float *x = logits + (long)r * V;
    double se = 0;
    for (int c = 0; c < V; c++) se += exp((double)x[c] - M[r]);
    int64_t t = targets[r] - v0;
    st[2 * r] = (float)se;
    st[2 * r + 1] = t >= 0 && t < V ? x[t] : 0.0f;
  }
}

void k_vp_xent_forward(float *losses, const int32_t *targets, const float *M, const float *S, int N) {
  for (int r = 0; r < N; r++) losses[r] = targets[r] < 0 ? 0 : logf(S[2 * r]) + M[r] - S[2 * r + 1];
}

void k_vp_xent_backward(float *dlogits, const float *logits, const int32_t *targets, const float *M, const float *S, int N,
                        int V, int64_t v0, float scale) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    int32_t tg = targets[r];
    int64_t t = tg - v0;
    const float *x = logits + (long)r * V;
    float *d = dlogits + (long)r * V;
    for (int c = 0; c < V; c++) {
      float pr = tg < 0 ? 0 : expf(x[c] - M[r]) / S[2 * r];
      d[c] = (pr - (c == t ? 1.0f : 0.0f)) * scale * (tg >= 0);
    }
  }
}
