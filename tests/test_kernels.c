/* test_kernels.c — lib/kernels_cpu.c against the double-precision reference
 * tests/ref_ops.c, op by op.
 *
 *   cc -std=gnu11 -O2 -fopenmp -I. tests/test_kernels.c tests/ref_ops.c lib/kernels_cpu.c -lopenblas -lm
 *
 * For each op: random inputs of odd sizes (B=2, T=37, C=48, NH=4 so HS=12,
 * OC=53, V=97, N=B*T=74), outputs filled with NaN before the call, then
 *   written  no NaN left in any output the op must write;
 *   fwd      the fp32 kernel against the double reference (same fp32 inputs);
 *   bwd      the kernel's gradients against the reference's analytic ones
 *            (accumulated gradients start from random values, so += is
 *            checked too);
 *   fd       the reference's analytic gradients, and the kernel's, against
 *            central differences (step 1e-6, in double) of
 *            L = sum(out * G) for a random G, at up to FD_SAMPLES elements of
 *            each input.
 * The error of an array a against the reference b (printed, and required
 * below 1e-5) is
 *   err = max_i |a_i - b_i| / max(|b_i|, rms(b))
 * i.e. relative per element, except that an element much smaller than the
 * array's RMS (a sum that cancelled to ~0) is measured against the RMS; fp32
 * arithmetic cannot give such an element more relative accuracy. The column
 * `floor1e-3` prints the stricter max_i |a_i - b_i| / max(|b_i|, 1e-3) for
 * information only.
 * Prints one line per check and `N passed, M failed`; exit status 1 on any
 * failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/kernels.h"
#include "tests/check.h"
#include "tests/ref_ops.h"

enum { B = 2, T = 37, C = 48, NH = 4, HS = 12, OC = 53, V = 97, N = B * T };
#define TOL 1e-5
#define FD_STEP 1e-6
#define FD_SAMPLES 24

/* ------------------------------------------------------------------------ */
/* random numbers, buffers                                                  */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint32_t rnd_u32(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static float rnd_f(void) { return (float)(rnd_u32() >> 8) * (2.0f / 16777216.0f) - 1.0f; } /* [-1, 1) */

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "test_kernels: out of memory\n");
    exit(2);
  }
  return p;
}
static float *nan_new(long n) { /* an output buffer, NaN everywhere */
  float *p = xmalloc(sizeof(float) * (size_t)n);
  for (long i = 0; i < n; i++) p[i] = NAN;
  return p;
}
static float *rnd_new(long n, float scale, float shift) { /* scale * U[-1,1) + shift */
  float *p = xmalloc(sizeof(float) * (size_t)n);
  for (long i = 0; i < n; i++) p[i] = scale * rnd_f() + shift;
  return p;
}
static double *dbl(const float *x, long n) { /* a double copy */
  double *p = xmalloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  for (long i = 0; i < n; i++) p[i] = x[i];
  return p;
}
static double *dnew(long n) { /* zeros */
  double *p = xmalloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  memset(p, 0, sizeof(double) * (size_t)(n > 0 ? n : 1));
  return p;
}
static long nan_count(const float *x, long n) {
  long k = 0;
  for (long i = 0; i < n; i++) k += isnan(x[i]) != 0;
  return k;
}

/* ------------------------------------------------------------------------ */
/* errors and reporting                                                     */

static double rms(const double *b, long rows, long cols, long stride) {
  double s = 0.0;
  for (long r = 0; r < rows; r++)
    for (long c = 0; c < cols; c++) s += b[r * stride + c] * b[r * stride + c];
  return sqrt(s / (double)(rows * cols > 0 ? rows * cols : 1));
}

/* err of rows x cols of a against b, both with row stride `stride`; *floor3
 * receives the same with the 1e-3 floor */
static double err_s(const float *a, const double *b, long rows, long cols, long stride, double *floor3) {
  double r = rms(b, rows, cols, stride), e = 0.0, e3 = 0.0;
  if (r == 0.0) r = 1e-30;
  for (long i = 0; i < rows; i++)
    for (long c = 0; c < cols; c++) {
      double d = fabs((double)a[i * stride + c] - b[i * stride + c]), m = fabs(b[i * stride + c]);
      if (d != d) d = INFINITY;
      double x = d / (m > r ? m : r), x3 = d / (m > 1e-3 ? m : 1e-3);
      e = x > e ? x : e;
      e3 = x3 > e3 ? x3 : e3;
    }
  if (floor3) *floor3 = e3;
  return e;
}

static void report(const char *op, const char *what, double err, double floor3) {
  if (floor3 >= 0) printf("  %-40s %-14s err %.2e   floor1e-3 %.2e\n", op, what, err, floor3);
  else printf("  %-40s %-14s err %.2e\n", op, what, err);
  CHECK(err < TOL, "%s, %s: error %.3e, over %.0e", op, what, err, TOL);
}

/* compare a (n) with b (n) and report */
static void cmp(const char *op, const char *what, const float *a, const double *b, long n) {
  double e3, e = err_s(a, b, 1, n, n, &e3);
  report(op, what, e, e3);
}
/* compare a - a0 (kernel accumulated into a0) with b */
static void cmp_acc(const char *op, const char *what, const float *a, const float *a0, const double *b, long n) {
  double *want = dnew(n);
  for (long i = 0; i < n; i++) want[i] = (double)a0[i] + b[i];
  cmp(op, what, a, want, n);
  free(want);
}
static void written(const char *op, const char *what, const float *x, long n) {
  long k = nan_count(x, n);
  CHECK(k == 0, "%s: %ld of %ld elements of %s not written (NaN)", op, k, n, what);
}

/* ------------------------------------------------------------------------ */
/* finite differences                                                       */

/* An op under finite differences: fwd() fills out (nout) from the inputs it
 * holds (doubles the check perturbs in place); L = sum(out * G). */
typedef struct FD {
  void (*fwd)(struct FD *f);
  double *out;
  const double *G;
  long nout;
} FD;

static double fd_loss(FD *f) {
  f->fwd(f);
  long double s = 0.0L;
  for (long i = 0; i < f->nout; i++) s += (long double)f->out[i] * f->G[i];
  return (double)s;
}

/* dL/dx by central differences at up to FD_SAMPLES elements of x (n), against
 * the reference's analytic gradient gref and the kernel's gk (as doubles;
 * NULL to skip); reports both, as max |g_i - fd_i| / max(|fd_i|, rms(gref)) */
static void fd_check(const char *op, const char *what, FD *f, double *x, long n, const double *gref, const double *gk) {
  double r = rms(gref, 1, n, n), eref = 0.0, ek = 0.0;
  if (r == 0.0) r = 1e-30;
  int ns = n <= FD_SAMPLES ? (int)n : FD_SAMPLES;
  for (int s = 0; s < ns; s++) {
    long i = n <= FD_SAMPLES ? s : (long)(rnd_u32() % (uint32_t)n);
    double x0 = x[i];
    x[i] = x0 + FD_STEP;
    double lp = fd_loss(f);
    x[i] = x0 - FD_STEP;
    double lm = fd_loss(f);
    x[i] = x0;
    double fd = (lp - lm) / (2.0 * FD_STEP), m = fabs(fd) > r ? fabs(fd) : r;
    double e1 = fabs(gref[i] - fd) / m;
    eref = e1 > eref ? e1 : eref;
    if (gk) {
      double e2 = fabs(gk[i] - fd) / m;
      ek = e2 > ek ? e2 : ek;
    }
  }
  char w[64];
  snprintf(w, sizeof w, "fd %s ref", what);
  report(op, w, eref, -1);
  if (gk) {
    snprintf(w, sizeof w, "fd %s kernel", what);
    report(op, w, ek, -1);
  }
}

/* kernel gradient as doubles: g - g0 (g0 may be NULL: g itself) */
static double *kgrad(const float *g, const float *g0, long n) {
  double *d = dnew(n);
  for (long i = 0; i < n; i++) d[i] = (double)g[i] - (g0 ? (double)g0[i] : 0.0);
  return d;
}

/* ------------------------------------------------------------------------ */
/* matmul                                                                   */

typedef struct {
  FD fd;
  double *inp, *w, *bias;
} MatmulFD;
static void matmul_fwd(FD *f) {
  MatmulFD *m = (MatmulFD *)f;
  ref_matmul_forward(f->out, m->inp, m->w, m->bias, N, C, OC);
}

static void test_matmul(int with_bias) {
  const char *op = with_bias ? "matmul +bias" : "matmul no bias";
  float *inp = rnd_new(N * C, 1, 0), *w = rnd_new(OC * C, 1, 0), *bias = with_bias ? rnd_new(OC, 1, 0) : NULL;
  float *out = nan_new(N * OC);
  k_matmul_forward(out, inp, w, bias, N, C, OC);
  written(op, "out", out, N * OC);
  double *inp_d = dbl(inp, N * C), *w_d = dbl(w, OC * C), *bias_d = bias ? dbl(bias, OC) : NULL, *out_d = dnew(N * OC);
  ref_matmul_forward(out_d, inp_d, w_d, bias_d, N, C, OC);
  cmp(op, "fwd out", out, out_d, N * OC);

  float *dout = rnd_new(N * OC, 1, 0), *dinp = nan_new(N * C);
  float *dw0 = rnd_new(OC * C, 1, 0), *db0 = rnd_new(OC, 1, 0), *dw = xmalloc(sizeof(float) * OC * C),
        *db = xmalloc(sizeof(float) * OC);
  memcpy(dw, dw0, sizeof(float) * OC * C);
  memcpy(db, db0, sizeof(float) * OC);
  k_matmul_backward_input(dinp, dout, w, N, C, OC);
  k_matmul_backward_weight(dw, with_bias ? db : NULL, dout, inp, N, C, OC);
  k_matmul_backward_input(NULL, dout, w, N, C, OC); /* NULL dinp: nothing */
  written(op, "dinp", dinp, N * C);
  double *dout_d = dbl(dout, N * OC), *dinp_d = dnew(N * C), *dw_d = dnew(OC * C), *db_d = dnew(OC);
  ref_matmul_backward(dinp_d, dw_d, db_d, dout_d, inp_d, w_d, N, C, OC);
  cmp(op, "bwd dinp", dinp, dinp_d, N * C);
  cmp_acc(op, "bwd dweight+=", dw, dw0, dw_d, OC * C);
  if (with_bias) cmp_acc(op, "bwd dbias+=", db, db0, db_d, OC);
  else CHECK(memcmp(db, db0, sizeof(float) * OC) == 0, "%s: dbias touched", op);

  MatmulFD m = {{matmul_fwd, dnew(N * OC), dout_d, N * OC}, inp_d, w_d, bias_d};
  double *gk_in = kgrad(dinp, NULL, N * C), *gk_w = kgrad(dw, dw0, OC * C), *gk_b = kgrad(db, db0, OC);
  fd_check(op, "dinp", &m.fd, inp_d, N * C, dinp_d, gk_in);
  fd_check(op, "dweight", &m.fd, w_d, OC * C, dw_d, gk_w);
  if (with_bias) fd_check(op, "dbias", &m.fd, bias_d, OC, db_d, gk_b);
  free(m.fd.out), free(gk_in), free(gk_w), free(gk_b);
  free(inp), free(w), free(bias), free(out), free(inp_d), free(w_d), free(bias_d), free(out_d);
  free(dout), free(dinp), free(dw0), free(db0), free(dw), free(db), free(dout_d), free(dinp_d), free(dw_d), free(db_d);
}

/* ------------------------------------------------------------------------ */
/* embedding                                                                */

typedef struct {
  FD fd;
  const int32_t *tok;
  double *wte, *wpe;
} EmbFD;
static void emb_fwd(FD *f) {
  EmbFD *e = (EmbFD *)f;
  ref_embedding_forward(f->out, e->tok, e->wte, e->wpe, B, T, C);
}

static void test_embedding(int with_wpe) {
  const char *op = with_wpe ? "embedding wte+wpe" : "embedding wte only";
  int32_t tok[N];
  for (int i = 0; i < N; i++) tok[i] = (int32_t)(rnd_u32() % V);
  tok[5] = tok[40] = tok[60] = 7; /* repeated tokens: their gradients add up */
  float *wte = rnd_new(V * C, 1, 0), *wpe = with_wpe ? rnd_new(T * C, 1, 0) : NULL, *out = nan_new(N * C);
  k_embedding_forward(out, tok, wte, wpe, B, T, C);
  written(op, "out", out, N * C);
  double *wte_d = dbl(wte, V * C), *wpe_d = wpe ? dbl(wpe, T * C) : NULL, *out_d = dnew(N * C);
  ref_embedding_forward(out_d, tok, wte_d, wpe_d, B, T, C);
  cmp(op, "fwd out", out, out_d, N * C);

  float *dout = rnd_new(N * C, 1, 0), *dwte0 = rnd_new(V * C, 1, 0), *dwpe0 = rnd_new(T * C, 1, 0);
  float *dwte = xmalloc(sizeof(float) * V * C), *dwpe = xmalloc(sizeof(float) * T * C);
  memcpy(dwte, dwte0, sizeof(float) * V * C);
  memcpy(dwpe, dwpe0, sizeof(float) * T * C);
  k_embedding_backward(dwte, with_wpe ? dwpe : NULL, dout, tok, B, T, C);
  double *dout_d = dbl(dout, N * C), *dwte_d = dnew(V * C), *dwpe_d = dnew(T * C);
  ref_embedding_backward(dwte_d, with_wpe ? dwpe_d : NULL, dout_d, tok, V, B, T, C);
  cmp_acc(op, "bwd dwte+=", dwte, dwte0, dwte_d, V * C);
  if (with_wpe) cmp_acc(op, "bwd dwpe+=", dwpe, dwpe0, dwpe_d, T * C);

  EmbFD e = {{emb_fwd, dnew(N * C), dout_d, N * C}, tok, wte_d, wpe_d};
  double *gk = kgrad(dwte, dwte0, V * C), *gkp = kgrad(dwpe, dwpe0, T * C);
  fd_check(op, "dwte", &e.fd, wte_d, V * C, dwte_d, gk);
  if (with_wpe) fd_check(op, "dwpe", &e.fd, wpe_d, T * C, dwpe_d, gkp);
  free(e.fd.out), free(gk), free(gkp);
  free(wte), free(wpe), free(out), free(wte_d), free(wpe_d), free(out_d), free(dout), free(dwte0), free(dwpe0);
  free(dwte), free(dwpe), free(dout_d), free(dwte_d), free(dwpe_d);
}

/* ------------------------------------------------------------------------ */
/* layernorm, residual + layernorm, rmsnorm                                 */

#define EPS 1e-5f

typedef struct {
  FD fd;
  double *inp, *w, *b;
  int rms;
} NormFD;
static void norm_fwd(FD *f) {
  NormFD *m = (NormFD *)f;
  if (m->rms) ref_rmsnorm_forward(f->out, NULL, m->inp, m->w, N, C, EPS);
  else ref_layernorm_forward(f->out, NULL, NULL, m->inp, m->w, m->b, N, C, EPS);
}

static void test_layernorm(int with_bias) {
  const char *op = with_bias ? "layernorm +bias" : "layernorm no bias";
  float *inp = rnd_new(N * C, 2.0f, 0.7f), *w = rnd_new(C, 0.3f, 1.0f), *b = with_bias ? rnd_new(C, 1, 0) : NULL;
  float *out = nan_new(N * C), *mean = nan_new(N), *rstd = nan_new(N);
  k_layernorm_forward(out, mean, rstd, inp, w, b, N, C, EPS);
  written(op, "out", out, N * C);
  written(op, "mean", mean, N);
  written(op, "rstd", rstd, N);
  double *inp_d = dbl(inp, N * C), *w_d = dbl(w, C), *b_d = b ? dbl(b, C) : NULL;
  double *out_d = dnew(N * C), *mean_d = dnew(N), *rstd_d = dnew(N);
  ref_layernorm_forward(out_d, mean_d, rstd_d, inp_d, w_d, b_d, N, C, EPS);
  cmp(op, "fwd out", out, out_d, N * C);
  cmp(op, "fwd mean", mean, mean_d, N);
  cmp(op, "fwd rstd", rstd, rstd_d, N);

  float *dout = rnd_new(N * C, 1, 0), *dinp = nan_new(N * C), *dw0 = rnd_new(C, 1, 0), *db0 = rnd_new(C, 1, 0);
  float *dw = xmalloc(sizeof(float) * C), *db = xmalloc(sizeof(float) * C);
  memcpy(dw, dw0, sizeof(float) * C);
  memcpy(db, db0, sizeof(float) * C);
  k_layernorm_backward(dinp, dw, with_bias ? db : NULL, dout, inp, w, mean, rstd, N, C);
  written(op, "dinp", dinp, N * C);
  double *dout_d = dbl(dout, N * C), *dinp_d = dnew(N * C), *dw_d = dnew(C), *db_d = dnew(C);
  ref_layernorm_backward(dinp_d, dw_d, db_d, dout_d, inp_d, w_d, N, C, EPS);
  cmp(op, "bwd dinp", dinp, dinp_d, N * C);
  cmp_acc(op, "bwd dweight+=", dw, dw0, dw_d, C);
  if (with_bias) cmp_acc(op, "bwd dbias+=", db, db0, db_d, C);

  NormFD m = {{norm_fwd, dnew(N * C), dout_d, N * C}, inp_d, w_d, b_d, 0};
  double *gk_in = kgrad(dinp, NULL, N * C), *gk_w = kgrad(dw, dw0, C), *gk_b = kgrad(db, db0, C);
  fd_check(op, "dinp", &m.fd, inp_d, N * C, dinp_d, gk_in);
  fd_check(op, "dweight", &m.fd, w_d, C, dw_d, gk_w);
  if (with_bias) fd_check(op, "dbias", &m.fd, b_d, C, db_d, gk_b);

  /* determinism across thread counts (no BLAS here) */
  if (with_bias) {
    float *dinp1 = nan_new(N * C), *dw1 = xmalloc(sizeof(float) * C), *db1 = xmalloc(sizeof(float) * C);
    memcpy(dw1, dw0, sizeof(float) * C);
    memcpy(db1, db0, sizeof(float) * C);
    k_set_threads(1);
    k_layernorm_backward(dinp1, dw1, db1, dout, inp, w, mean, rstd, N, C);
    k_set_threads(0);
    CHECK(memcmp(dinp1, dinp, sizeof(float) * N * C) == 0 && memcmp(dw1, dw, sizeof(float) * C) == 0 &&
              memcmp(db1, db, sizeof(float) * C) == 0,
          "%s: backward differs between 1 thread and the default", op);
    free(dinp1), free(dw1), free(db1);
  }
  free(m.fd.out), free(gk_in), free(gk_w), free(gk_b);
  free(inp), free(w), free(b), free(out), free(mean), free(rstd), free(inp_d), free(w_d), free(b_d), free(out_d);
  free(mean_d), free(rstd_d), free(dout), free(dinp), free(dw0), free(db0), free(dw), free(db), free(dout_d);
  free(dinp_d), free(dw_d), free(db_d);
}

static void test_residual_layernorm(void) {
  const char *op = "residual+layernorm";
  float *a = rnd_new(N * C, 1.5f, 0.3f), *bb = rnd_new(N * C, 1.0f, 0.2f), *w = rnd_new(C, 0.3f, 1.0f),
        *bias = rnd_new(C, 1, 0);
  float *resid = nan_new(N * C), *out = nan_new(N * C), *mean = nan_new(N), *rstd = nan_new(N);
  k_residual_layernorm_forward(resid, out, mean, rstd, a, bb, w, bias, N, C, EPS);
  written(op, "resid", resid, N * C);
  written(op, "out", out, N * C);
  written(op, "mean", mean, N);
  written(op, "rstd", rstd, N);
  double *resid_d = dnew(N * C), *w_d = dbl(w, C), *b_d = dbl(bias, C), *out_d = dnew(N * C), *mean_d = dnew(N),
         *rstd_d = dnew(N);
  for (int i = 0; i < N * C; i++) resid_d[i] = (double)a[i] + (double)bb[i];
  ref_layernorm_forward(out_d, mean_d, rstd_d, resid_d, w_d, b_d, N, C, EPS);
  cmp(op, "fwd resid", resid, resid_d, N * C);
  cmp(op, "fwd out", out, out_d, N * C);
  cmp(op, "fwd mean", mean, mean_d, N);
  cmp(op, "fwd rstd", rstd, rstd_d, N);
  free(a), free(bb), free(w), free(bias), free(resid), free(out), free(mean), free(rstd);
  free(resid_d), free(w_d), free(b_d), free(out_d), free(mean_d), free(rstd_d);
}

static void test_rmsnorm(void) {
  const char *op = "rmsnorm";
  float *inp = rnd_new(N * C, 2.0f, 0.4f), *w = rnd_new(C, 0.3f, 1.0f), *out = nan_new(N * C), *rstd = nan_new(N);
  k_rmsnorm_forward(out, rstd, inp, w, N, C, EPS);
  written(op, "out", out, N * C);
  written(op, "rstd", rstd, N);
  double *inp_d = dbl(inp, N * C), *w_d = dbl(w, C), *out_d = dnew(N * C), *rstd_d = dnew(N);
  ref_rmsnorm_forward(out_d, rstd_d, inp_d, w_d, N, C, EPS);
  cmp(op, "fwd out", out, out_d, N * C);
  cmp(op, "fwd rstd", rstd, rstd_d, N);

  float *dout = rnd_new(N * C, 1, 0), *dinp = nan_new(N * C), *dw0 = rnd_new(C, 1, 0), *dw = xmalloc(sizeof(float) * C);
  memcpy(dw, dw0, sizeof(float) * C);
  k_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
  written(op, "dinp", dinp, N * C);
  double *dout_d = dbl(dout, N * C), *dinp_d = dnew(N * C), *dw_d = dnew(C);
  ref_rmsnorm_backward(dinp_d, dw_d, dout_d, inp_d, w_d, N, C, EPS);
  cmp(op, "bwd dinp", dinp, dinp_d, N * C);
  cmp_acc(op, "bwd dweight+=", dw, dw0, dw_d, C);

  NormFD m = {{norm_fwd, dnew(N * C), dout_d, N * C}, inp_d, w_d, NULL, 1};
  double *gk_in = kgrad(dinp, NULL, N * C), *gk_w = kgrad(dw, dw0, C);
  fd_check(op, "dinp", &m.fd, inp_d, N * C, dinp_d, gk_in);
  fd_check(op, "dweight", &m.fd, w_d, C, dw_d, gk_w);
  free(m.fd.out), free(gk_in), free(gk_w);
  free(inp), free(w), free(out), free(rstd), free(inp_d), free(w_d), free(out_d), free(rstd_d), free(dout);
  free(dinp), free(dw0), free(dw), free(dout_d), free(dinp_d), free(dw_d);
}

/* ------------------------------------------------------------------------ */
/* activations, bias + activation, elementwise                              */

static const char *act_name[] = {"gelu tanh", "gelu erf", "relu", "silu"};

typedef struct {
  FD fd;
  double *x;
  KAct act;
} ActFD;
static void act_fwd(FD *f) {
  ActFD *m = (ActFD *)f;
  for (long i = 0; i < f->nout; i++) f->out[i] = ref_act(m->x[i], m->act);
}

static void test_act(KAct act) {
  char op[64];
  snprintf(op, sizeof op, "act %s", act_name[act]);
  const long n = N * C;
  float *x = rnd_new(n, 3.0f, 0.0f), *out = nan_new(n);
  const float tails[] = {-30.0f, -9.0f, -5.0f, -0.0f, 0.0f, 5.0f, 9.0f, 30.0f};
  memcpy(x, tails, sizeof tails);
  k_act_forward(out, x, n, act);
  written(op, "out", out, n);
  double *x_d = dbl(x, n), *out_d = dnew(n), *g_d = dnew(n);
  for (long i = 0; i < n; i++) out_d[i] = ref_act(x_d[i], act);
  cmp(op, "fwd out", out, out_d, n);

  float *dout = rnd_new(n, 1, 0), *dinp = nan_new(n);
  k_act_backward(dinp, dout, x, n, act);
  written(op, "dinp", dinp, n);
  double *dout_d = dbl(dout, n);
  for (long i = 0; i < n; i++) g_d[i] = dout_d[i] * ref_act_grad(x_d[i], act);
  cmp(op, "bwd dinp", dinp, g_d, n);
  ActFD m = {{act_fwd, dnew(n), dout_d, n}, x_d, act};
  double *gk = kgrad(dinp, NULL, n);
  fd_check(op, "dinp", &m.fd, x_d, n, g_d, gk);

  /* in place: out == inp */
  float *y = xmalloc(sizeof(float) * n);
  memcpy(y, x, sizeof(float) * n);
  k_act_forward(y, y, n, act);
  CHECK(memcmp(y, out, sizeof(float) * n) == 0, "%s: in-place forward differs", op);

  /* fused bias + act over (N, C) */
  float *bias = rnd_new(C, 1, 0), *ob = nan_new(n);
  k_bias_act_forward(ob, x, bias, N, C, act);
  snprintf(op, sizeof op, "bias+act %s", act_name[act]);
  written(op, "out", ob, n);
  for (long i = 0; i < n; i++) out_d[i] = ref_act((double)x[i] + (double)bias[i % C], act);
  cmp(op, "fwd out", ob, out_d, n);
  free(m.fd.out), free(gk), free(y), free(bias), free(ob);
  free(x), free(out), free(x_d), free(out_d), free(g_d), free(dout), free(dinp), free(dout_d);
}

static void test_elementwise(void) {
  const long n = 10007;
  float *a = rnd_new(n, 2, 0), *b = rnd_new(n, 2, 0), *out = nan_new(n);
  double *want = dnew(n);
  k_add(out, a, b, n);
  written("add", "out", out, n);
  for (long i = 0; i < n; i++) want[i] = (double)a[i] + b[i];
  cmp("add", "fwd out", out, want, n);
  for (long i = 0; i < n; i++) out[i] = NAN;
  k_mul(out, a, b, n);
  written("mul", "out", out, n);
  for (long i = 0; i < n; i++) want[i] = (double)a[i] * b[i];
  cmp("mul", "fwd out", out, want, n);
  memcpy(out, a, sizeof(float) * n);
  k_accumulate(out, b, n);
  for (long i = 0; i < n; i++) want[i] = (double)a[i] + b[i];
  cmp("accumulate", "dst+=src", out, want, n);
  memcpy(out, a, sizeof(float) * n);
  k_add(out, out, b, n); /* in place */
  cmp("add in place", "fwd out", out, want, n);
  free(a), free(b), free(out), free(want);
}

/* ------------------------------------------------------------------------ */
/* dropout                                                                  */

static void test_dropout(void) {
  /* the reference Philox against Random123's known answers */
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6,
       0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
       0x24126ea1}};
  for (int i = 0; i < 3; i++) {
    uint32_t r[4];
    ref_philox4x32_10(kat[i], kat[i] + 4, r);
    CHECK(memcmp(r, kat[i] + 6, sizeof r) == 0, "philox4x32_10 known answer %d", i);
  }

  const long n = 100003;
  const uint64_t seed = 0x123456789abcdefull, offset = 0xfffffffffffffff0ull; /* the counter wraps 2^64 */
  float *x = rnd_new(n, 1, 1.5f); /* never 0, so a 0 out means dropped */
  float *o1 = nan_new(n), *o2 = nan_new(n), *o3 = nan_new(n), *d = rnd_new(n, 1, 1.5f), *g = nan_new(n);
  const float ps[] = {0.1f, 0.5f, 0.9f};
  for (int pi = 0; pi < 3; pi++) {
    const float p = ps[pi], scale = 1.0f / (1.0f - p);
    char op[64];
    snprintf(op, sizeof op, "dropout p=%.1f", p);
    k_dropout_forward(o1, x, n, p, seed, offset);
    k_dropout_forward(o2, x, n, p, seed, offset);
    written(op, "out", o1, n);
    CHECK(memcmp(o1, o2, sizeof(float) * n) == 0, "%s: same seed and offset, different outputs", op);
    long dropped = 0, bad_mask = 0, bad_value = 0;
    for (long i = 0; i < n; i++) {
      int keep = ref_dropout_keep(i, p, seed, offset);
      dropped += o1[i] == 0.0f;
      bad_mask += keep != (o1[i] != 0.0f);
      bad_value += keep && o1[i] != x[i] * scale;
    }
    CHECK(bad_mask == 0, "%s: %ld elements disagree with the reference Philox mask", op, bad_mask);
    CHECK(bad_value == 0, "%s: %ld kept elements are not inp / (1 - p)", op, bad_value);
    double sigma = sqrt((double)n * p * (1.0 - p)), z = ((double)dropped - (double)n * p) / sigma;
    printf("  %-40s %-14s dropped %ld of %ld (z = %+.2f)\n", op, "fraction", dropped, n, z);
    CHECK(fabs(z) < 3.0, "%s: dropped %ld of %ld, %.1f sigma from n*p", op, dropped, n, z);
    /* backward: the same mask */
    k_dropout_backward(g, d, n, p, seed, offset);
    written(op, "dinp", g, n);
    long bad_bwd = 0;
    for (long i = 0; i < n; i++) bad_bwd += g[i] != (o1[i] != 0.0f ? d[i] * scale : 0.0f);
    CHECK(bad_bwd == 0, "%s: backward mask differs from forward at %ld elements", op, bad_bwd);
    /* another offset: another mask */
    k_dropout_forward(o3, x, n, p, seed, offset + (uint64_t)(n + 3) / 4);
    long same = 0;
    for (long i = 0; i < n; i++) same += (o1[i] == 0.0f) == (o3[i] == 0.0f);
    CHECK(same < n - n / 20, "%s: the next offset gives nearly the same mask (%ld of %ld)", op, same, n);
    /* two calls split at a multiple of 4, offsets advanced by n1/4 = one call */
    const long n1 = 4 * 4099;
    k_dropout_forward(o3, x, n1, p, seed, offset);
    k_dropout_forward(o3 + n1, x + n1, n - n1, p, seed, offset + n1 / 4);
    CHECK(memcmp(o1, o3, sizeof(float) * n) == 0, "%s: a split call differs from one call", op);
    /* in place */
    memcpy(o3, x, sizeof(float) * n);
    k_dropout_forward(o3, o3, n, p, seed, offset);
    CHECK(memcmp(o1, o3, sizeof(float) * n) == 0, "%s: in place differs", op);
  }
  k_dropout_forward(o1, x, n, 0.0f, seed, offset);
  CHECK(memcmp(o1, x, sizeof(float) * n) == 0, "dropout p=0 is not the identity");
  k_dropout_forward(o1, x, n, 1.0f, seed, offset);
  CHECK(nan_count(o1, n) == 0 && o1[0] == 0.0f && o1[n - 1] == 0.0f, "dropout p=1 does not drop everything");
  free(x), free(o1), free(o2), free(o3), free(d), free(g);
}

/* ------------------------------------------------------------------------ */
/* softmax                                                                  */

typedef struct {
  FD fd;
  double *x;
} SoftmaxFD;
static void softmax_fwd(FD *f) { ref_softmax_forward(f->out, ((SoftmaxFD *)f)->x, N, C); }

static void test_softmax(void) {
  const char *op = "softmax";
  float *x = rnd_new(N * C, 3, 0), *out = nan_new(N * C);
  for (int c = 0; c < C; c++) x[5 * C + c] += 80.0f; /* exp would overflow without the max */
  for (int c = 0; c < 5; c++) x[7 * C + 3 * c] = -INFINITY; /* masked entries: probability 0 */
  k_softmax_forward(out, x, N, C);
  written(op, "out", out, N * C);
  double *x_d = dbl(x, N * C), *out_d = dnew(N * C);
  ref_softmax_forward(out_d, x_d, N, C);
  cmp(op, "fwd out", out, out_d, N * C);
  float *dout = rnd_new(N * C, 1, 0), *dinp = nan_new(N * C);
  k_softmax_backward(dinp, dout, out, N, C);
  written(op, "dinp", dinp, N * C);
  double *dout_d = dbl(dout, N * C), *dinp_d = dnew(N * C);
  ref_softmax_backward(dinp_d, dout_d, out_d, N, C);
  cmp(op, "bwd dinp", dinp, dinp_d, N * C);
  SoftmaxFD m = {{softmax_fwd, dnew(N * C), dout_d, N * C}, x_d};
  double *gk = kgrad(dinp, NULL, N * C);
  fd_check(op, "dinp", &m.fd, x_d, N * C, dinp_d, gk);
  free(m.fd.out), free(gk);
  free(x), free(out), free(x_d), free(out_d), free(dout), free(dinp), free(dout_d), free(dinp_d);
}

/* ------------------------------------------------------------------------ */
/* attention                                                                */

typedef struct {
  const char *name;
  int B, T, Tk, NH, NH_kv, HS, causal;
  int packed;  /* 1: one (B*T, C + 2 Ckv) buffer q | k | v; 0: q (B*T, C) and kv (B*Tk, 2 Ckv) */
  int out_pad; /* out_stride = C + out_pad */
} AttCase;

typedef struct {
  FD fd;
  double *q, *k, *v;
  double *lse;
  const KAttn *a;
} AttFD;
static void att_fwd(FD *f) {
  AttFD *m = (AttFD *)f;
  ref_attention_forward(f->out, m->lse, m->q, m->k, m->v, m->a);
}

static void test_attention(const AttCase *tc) {
  const int Cq = tc->NH * tc->HS, Ckv = tc->NH_kv * tc->HS;
  KAttn a = {tc->B, tc->T, tc->Tk, tc->NH, tc->NH_kv, tc->HS, tc->causal, 0, 0, Cq + tc->out_pad};
  const long nq = (long)tc->B * tc->T, nk = (long)tc->B * tc->Tk;
  long qbuf_n, kvbuf_n; /* floats in the q buffer and the kv buffer (0: kv in the q buffer) */
  if (tc->packed) {
    a.q_stride = a.kv_stride = Cq + 2 * Ckv;
    qbuf_n = nq * a.q_stride;
    kvbuf_n = 0;
  } else {
    a.q_stride = Cq;
    a.kv_stride = 2 * Ckv;
    qbuf_n = nq * Cq;
    kvbuf_n = nk * a.kv_stride;
  }
  float *qb = rnd_new(qbuf_n, 1.5f, 0), *kvb = kvbuf_n ? rnd_new(kvbuf_n, 1.5f, 0) : NULL;
  const float *q = qb, *k = tc->packed ? qb + Cq : kvb, *v = tc->packed ? qb + Cq + Ckv : kvb + Ckv;
  const long out_n = nq * a.out_stride, lse_n = (long)tc->B * tc->NH * tc->T;
  float *out = nan_new(out_n), *lse = nan_new(lse_n);
  for (long r = 0; r < nq; r++)
    for (int c = Cq; c < a.out_stride; c++) out[r * a.out_stride + c] = 12345.0f; /* padding stays */
  k_attention_forward(out, lse, q, k, v, &a);
  char op[96];
  snprintf(op, sizeof op, "attention %s", tc->name);
  written(op, "out", out, out_n);
  written(op, "lse", lse, lse_n);
  long pad_touched = 0;
  for (long r = 0; r < nq; r++)
    for (int c = Cq; c < a.out_stride; c++) pad_touched += out[r * a.out_stride + c] != 12345.0f;
  CHECK(pad_touched == 0, "%s: %ld padding elements of out written", op, pad_touched);

  double *qb_d = dbl(qb, qbuf_n), *kvb_d = kvbuf_n ? dbl(kvb, kvbuf_n) : NULL;
  double *q_d = qb_d, *k_d = tc->packed ? qb_d + Cq : kvb_d, *v_d = tc->packed ? qb_d + Cq + Ckv : kvb_d + Ckv;
  double *out_d = dnew(out_n), *lse_d = dnew(lse_n);
  ref_attention_forward(out_d, lse_d, q_d, k_d, v_d, &a);
  double e3, e = err_s(out, out_d, nq, Cq, a.out_stride, &e3);
  report(op, "fwd out", e, e3);
  cmp(op, "fwd lse", lse, lse_d, lse_n);

  /* backward */
  float *dout = rnd_new(out_n, 1, 0);
  float *dqb = nan_new(qbuf_n), *dkvb = kvbuf_n ? nan_new(kvbuf_n) : NULL;
  float *dq = dqb, *dk = tc->packed ? dqb + Cq : dkvb, *dv = tc->packed ? dqb + Cq + Ckv : dkvb + Ckv;
  k_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, &a);
  written(op, "dq (dqkv)", dqb, qbuf_n);
  if (kvbuf_n) written(op, "dk|dv", dkvb, kvbuf_n);
  double *dout_d = dbl(dout, out_n), *dqb_d = dnew(qbuf_n), *dkvb_d = kvbuf_n ? dnew(kvbuf_n) : NULL;
  double *dq_d = dqb_d, *dk_d = tc->packed ? dqb_d + Cq : dkvb_d, *dv_d = tc->packed ? dqb_d + Cq + Ckv : dkvb_d + Ckv;
  for (long r = 0; r < nq; r++)
    for (int c = Cq; c < a.out_stride; c++) dout_d[r * a.out_stride + c] = 0.0; /* padding is not an output */
  ref_attention_backward(dq_d, dk_d, dv_d, dout_d, q_d, k_d, v_d, &a);
  e = err_s(dq, dq_d, nq, Cq, a.q_stride, &e3);
  report(op, "bwd dq", e, e3);
  e = err_s(dk, dk_d, nk, Ckv, a.kv_stride, &e3);
  report(op, "bwd dk", e, e3);
  e = err_s(dv, dv_d, nk, Ckv, a.kv_stride, &e3);
  report(op, "bwd dv", e, e3);

  /* finite differences over the input buffers (every element is q, k or v) */
  AttFD m = {{att_fwd, dnew(out_n), dout_d, out_n}, q_d, k_d, v_d, dnew(lse_n), &a};
  double *gk = kgrad(dqb, NULL, qbuf_n);
  fd_check(op, tc->packed ? "dqkv" : "dq", &m.fd, qb_d, qbuf_n, dqb_d, gk);
  free(gk);
  if (kvbuf_n) {
    gk = kgrad(dkvb, NULL, kvbuf_n);
    fd_check(op, "dk|dv", &m.fd, kvb_d, kvbuf_n, dkvb_d, gk);
    free(gk);
  }

  /* one thread gives the same bits */
  float *out1 = nan_new(out_n), *lse1 = nan_new(lse_n), *dqb1 = nan_new(qbuf_n), *dkvb1 = kvbuf_n ? nan_new(kvbuf_n) : NULL;
  k_set_threads(1);
  k_attention_forward(out1, lse1, q, k, v, &a);
  k_attention_backward(dqb1, tc->packed ? dqb1 + Cq : dkvb1, tc->packed ? dqb1 + Cq + Ckv : dkvb1 + Ckv, dout, out1,
                       lse1, q, k, v, &a);
  k_set_threads(0);
  int same = 1;
  for (long r = 0; r < nq; r++) same &= memcmp(out1 + r * a.out_stride, out + r * a.out_stride, sizeof(float) * Cq) == 0;
  same &= memcmp(lse1, lse, sizeof(float) * lse_n) == 0 && memcmp(dqb1, dqb, sizeof(float) * qbuf_n) == 0;
  if (kvbuf_n) same &= memcmp(dkvb1, dkvb, sizeof(float) * kvbuf_n) == 0;
  CHECK(same, "%s: results differ between 1 thread and the default", op);

  free(out1), free(lse1), free(dqb1), free(dkvb1);
  free(m.fd.out), free(m.lse);
  free(qb), free(kvb), free(out), free(lse), free(qb_d), free(kvb_d), free(out_d), free(lse_d), free(dout);
  free(dqb), free(dkvb), free(dout_d), free(dqb_d), free(dkvb_d);
}

/* decoding with a KV cache, one position at a time, gives each row of the
   causal attention over the whole sequence (packed q|k|v, B rows as beams) */
static void test_attention_decode(int Bb, int Tn, int nh, int nkv, int hs) {
  const int Cq = nh * hs, Ckv = nkv * hs, stride = Cq + 2 * Ckv;
  KAttn a = {Bb, Tn, Tn, nh, nkv, hs, 1, stride, stride, Cq};
  float *qkv = rnd_new((long)Bb * Tn * stride, 1.5f, 0), *full = nan_new((long)Bb * Tn * Cq), *lse = nan_new((long)Bb * nh * Tn);
  k_attention_forward(full, lse, qkv, qkv + Cq, qkv + Cq + Ckv, &a);
  /* the decoder sees row (b, t) of every beam at step t: gather them */
  float *step = nan_new((long)Bb * stride), *out = nan_new((long)Bb * Cq), *kv = nan_new(2L * Bb * Tn * Ckv), *l2 = nan_new((long)Bb * nh);
  KAttn d = {Bb, 1, Tn, nh, nkv, hs, 0, stride, stride, Cq};
  double worst = 0;
  for (int t = 0; t < Tn; t++) {
    for (int b = 0; b < Bb; b++) memcpy(step + (long)b * stride, qkv + ((long)b * Tn + t) * stride, sizeof(float) * stride);
    k_attention_decode(out, l2, step, step + Cq, step + Cq + Ckv, kv, t, &d);
    for (int b = 0; b < Bb; b++)
      for (int c = 0; c < Cq; c++) {
        double e = fabs((double)out[(long)b * Cq + c] - full[((long)b * Tn + t) * Cq + c]);
        if (e > worst) worst = e;
      }
  }
  CHECK(worst < 1e-5, "attention decode (B %d, T %d, NH %d, NH_kv %d): worst difference to the causal forward %.3g", Bb, Tn, nh, nkv, worst);
  printf("  attention decode B=%d T=%d NH=%d NH_kv=%d: worst |decode - causal| %.2g\n", Bb, Tn, nh, nkv, worst);
  free(qkv), free(full), free(lse), free(step), free(out), free(kv), free(l2);
}

/* ------------------------------------------------------------------------ */
/* cross-entropy                                                            */

typedef struct {
  FD fd;
  double *logits;
  const int32_t *targets;
  int n, v;
  double scale;
} CeFD;
static void ce_fwd(FD *f) { /* out = losses * scale, G = 1: L = scale * sum of losses */
  CeFD *m = (CeFD *)f;
  ref_crossentropy(f->out, NULL, m->logits, m->targets, m->n, m->v, m->scale);
  for (int i = 0; i < m->n; i++) f->out[i] *= m->scale;
}

static void test_crossentropy(int rows, int vocab, float spread) {
  char op[64];
  snprintf(op, sizeof op, "crossentropy N=%d V=%d", rows, vocab);
  const long n = (long)rows * vocab;
  float *logits = rnd_new(n, spread, 0), *losses = nan_new(rows), *dl = nan_new(n);
  logits[1] = logits[vocab + 2] = -INFINITY; /* masked logits: probability 0 */
  int32_t *tg = xmalloc(sizeof(int32_t) * rows);
  int valid = 0;
  for (int i = 0; i < rows; i++) {
    tg[i] = (i % 17 == 3) ? -1 : (int32_t)(rnd_u32() % (uint32_t)vocab); /* some ignored */
    valid += tg[i] >= 0;
  }
  const float scale = 1.0f / (float)valid;
  k_crossentropy_forward_backward(losses, dl, logits, tg, rows, vocab, scale);
  written(op, "losses", losses, rows);
  written(op, "dlogits", dl, n);
  double *logits_d = dbl(logits, n), *losses_d = dnew(rows), *dl_d = dnew(n);
  ref_crossentropy(losses_d, dl_d, logits_d, tg, rows, vocab, scale);
  cmp(op, "fwd losses", losses, losses_d, rows);
  cmp(op, "bwd dlogits", dl, dl_d, n);
  int ignored_ok = 1;
  for (int i = 0; i < rows; i++)
    if (tg[i] < 0) {
      ignored_ok &= losses[i] == 0.0f;
      for (int j = 0; j < vocab; j++) ignored_ok &= dl[(long)i * vocab + j] == 0.0f;
    }
  CHECK(ignored_ok, "%s: an ignored target has a loss or a gradient", op);

  double *ones = dnew(rows);
  for (int i = 0; i < rows; i++) ones[i] = 1.0;
  CeFD m = {{ce_fwd, dnew(rows), ones, rows}, logits_d, tg, rows, vocab, scale};
  double *gk = kgrad(dl, NULL, n);
  fd_check(op, "dlogits", &m.fd, logits_d, n, dl_d, gk);

  /* losses only, and dlogits written over the logits */
  float *l2 = nan_new(rows), *inplace = xmalloc(sizeof(float) * n);
  k_crossentropy_forward_backward(l2, NULL, logits, tg, rows, vocab, scale);
  CHECK(memcmp(l2, losses, sizeof(float) * rows) == 0, "%s: losses differ without dlogits", op);
  memcpy(inplace, logits, sizeof(float) * n);
  k_crossentropy_forward_backward(l2, inplace, inplace, tg, rows, vocab, scale);
  cmp(op, "in-place dlogits", inplace, dl_d, n);
  free(l2), free(inplace), free(ones), free(m.fd.out), free(gk);
  free(logits), free(losses), free(dl), free(tg), free(logits_d), free(losses_d), free(dl_d);
}

/* ------------------------------------------------------------------------ */
/* adamw, sumsq, scale                                                      */

static void test_adamw(void) {
  const char *op = "adamw (3 steps)";
  const long n = 1001;
  const float lr = 0.05f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  float *p = rnd_new(n, 1, 0), *m = xmalloc(sizeof(float) * n), *v = xmalloc(sizeof(float) * n), *p_prev = xmalloc(sizeof(float) * n);
  memset(m, 0, sizeof(float) * n);
  memset(v, 0, sizeof(float) * n);
  double *p_d = dbl(p, n), *m_d = dnew(n), *v_d = dnew(n), *delta_d = dnew(n);
  for (int t = 1; t <= 3; t++) {
    float *g = rnd_new(n, 1, 0);
    g[0] = 0.0f; /* a zero gradient: only the decay and the momentum move it */
    double *g_d = dbl(g, n);
    memcpy(p_prev, p, sizeof(float) * n);
    k_adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t);
    /* the reference steps from the kernel's state, so each step is checked alone */
    double *pp = dbl(p_prev, n);
    memcpy(p_d, pp, sizeof(double) * n);
    ref_adamw(p_d, g_d, m_d, v_d, n, lr, b1, b2, eps, wd, t);
    for (long i = 0; i < n; i++) delta_d[i] = p_d[i] - pp[i];
    if (t == 3) {
      cmp(op, "param", p, p_d, n);
      cmp(op, "m", m, m_d, n);
      cmp(op, "v", v, v_d, n);
      double *delta_k = kgrad(p, p_prev, n);
      double e = 0.0, r = rms(delta_d, 1, n, n);
      for (long i = 0; i < n; i++) {
        double x = fabs(delta_k[i] - delta_d[i]) / (fabs(delta_d[i]) > r ? fabs(delta_d[i]) : r);
        e = x > e ? x : e;
      }
      report(op, "update", e, -1);
      free(delta_k);
    }
    for (long i = 0; i < n; i++) m_d[i] = m[i], v_d[i] = v[i];
    free(g), free(g_d), free(pp);
  }
  free(p), free(m), free(v), free(p_prev), free(p_d), free(m_d), free(v_d), free(delta_d);
}

static void test_sumsq_scale(void) {
  const long n = 100003;
  float *x = rnd_new(n, 3, 0.5f);
  double want = 0.0;
  for (long i = 0; i < n; i++) want += (double)x[i] * x[i];
  double got = k_sumsq(x, n);
  report("sumsq", "sum", fabs(got - want) / want, -1);
  double *w = dnew(n);
  for (long i = 0; i < n; i++) w[i] = (double)x[i] * 0.37;
  k_scale(x, n, 0.37f);
  cmp("scale", "x*=s", x, w, n);
  free(x), free(w);
}

/* ------------------------------------------------------------------------ */

int main(void) {
  printf("test_kernels: fp32 kernels vs double reference (err < %.0e)\n", TOL);
  test_matmul(1);
  test_matmul(0);
  test_embedding(1);
  test_embedding(0);
  test_layernorm(1);
  test_layernorm(0);
  test_residual_layernorm();
  test_rmsnorm();
  for (int a = K_GELU_TANH; a <= K_SILU; a++) test_act((KAct)a);
  test_elementwise();
  test_dropout();
  test_softmax();
  static const AttCase att[] = {
      {"causal NH_kv=NH packed qkv", B, T, T, NH, NH, HS, 1, 1, 0},
      {"causal NH_kv=NH/2 packed", B, T, T, NH, NH / 2, HS, 1, 1, 0},
      {"non-causal self NH_kv=NH", B, T, T, NH, NH, HS, 0, 1, 0},
      {"cross Tk=23 NH_kv=NH", B, T, 23, NH, NH, HS, 0, 0, 0},
      {"cross Tk=23 NH_kv=NH/2 out pad", B, T, 23, NH, NH / 2, HS, 0, 0, 5},
      {"causal T=150 (3 tiles) NH_kv=1", 1, 150, 150, 2, 1, 8, 1, 1, 0},
      {"cross T=70 Tk=130 (tiles)", 1, 70, 130, 2, 2, 8, 0, 0, 3},
  };
  for (size_t i = 0; i < sizeof att / sizeof att[0]; i++) test_attention(&att[i]);
  test_attention_decode(3, 70, 4, 4, 8);
  test_attention_decode(2, 20, 4, 2, 16);
  test_crossentropy(N, V, 4.0f);
  test_crossentropy(3, 50257, 8.0f);
  test_adamw();
  test_sumsq_scale();
  return check_summary();
}
