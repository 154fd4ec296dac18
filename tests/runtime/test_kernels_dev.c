/* test_kernels_dev.c — every d_X of runtime/kernels_dev.c against its CPU
 * twin k_X of lib/kernels.h, on the CUDA emulator.
 *
 *   test_kernels_dev EMU_DIR
 *
 * EMU_DIR holds the emulator as libcuda.so.1 (tests/gpu/emulator: the
 * kernels of the kernels/ headers compiled as C++ and run on the CPU, one fiber
 * per CUDA thread) next to the fake cuBLASLt (GEMMs on host memory,
 * accumulated in double) and NCCL. The test re-executes itself with EMU_DIR
 * first on LD_LIBRARY_PATH and PIPEC_DEVICE=cuda, opens the device through
 * prt_device_open, loads a module from a dummy PTX (the emulator ignores
 * images) and binds the d_ kernels to it. Then, for every d_X, it runs d_X
 * on the device and k_X on the host on the same random inputs and compares
 * what each wrote: max |d - k| / max |k| <= 1e-5 (a reference that is all
 * zeros fails: no check passes with a stub). Outputs start as NaN on the
 * device (a value left unwritten shows); gradients that accumulate start
 * from the same nonzero values on both sides. Sizes are small and odd (the
 * emulator is slow, and odd sizes take the kernels' element-by-element
 * heads and tails), attention is causal and not, with grouped-query heads
 * and a packed qkv buffer, targets include ignored (-1) rows.
 *
 * The emulator's fibers are ucontexts; they run under ASan (which
 * intercepts swapcontext and warns once that it supports it only in part)
 * because the emulator itself is built without the sanitizers. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/kernels.h"
#include "runtime/device.h"
#include "runtime/kernels_dev.h"
#include "tests/check.h"

#define TOL 1e-5

static PrtDevice *D;

/* ------------------------------------------------------------- buffers */

static uint64_t live[256];
static int nlive;

static void *dev_alloc(size_t bytes) {
  uint64_t p = prt_dev_alloc(D, bytes, "test buffer");
  if (nlive == (int)(sizeof live / sizeof *live)) {
    printf("FAIL: too many test buffers\n");
    exit(2);
  }
  live[nlive++] = p;
  return (void *)(uintptr_t)p;
}
static void dev_free_all(void) {
  prt_dev_sync(D, "test");
  for (int i = 0; i < nlive; i++) prt_dev_free(D, live[i]);
  nlive = 0;
}
/* a device copy of host data */
static void *dev_up(const void *h, size_t bytes) {
  void *p = dev_alloc(bytes);
  prt_dev_upload(D, (uint64_t)(uintptr_t)p, h, bytes, "test upload");
  return p;
}
static float *dev_f(const float *h, size_t n) { return dev_up(h, n * sizeof(float)); }
static int32_t *dev_i(const int32_t *h, size_t n) { return dev_up(h, n * sizeof(int32_t)); }
/* an output: NaN until written */
static float *dev_nan(size_t n) {
  float *p = dev_alloc(n * sizeof(float));
  prt_dev_memset(D, (uint64_t)(uintptr_t)p, 0xff, n * sizeof(float), "test NaN fill");
  return p;
}
/* ------------------------------------------------------------- data */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd_u32(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() >> 8) / 16777216.0f; }

static float *host_bufs[256];
static int nhost;
static float *hmalloc(size_t bytes) {
  float *p = malloc(bytes + 1);
  if (nhost < 256) host_bufs[nhost++] = p;
  return p;
}
static void hfree_all(void) {
  for (int i = 0; i < nhost; i++) free(host_bufs[i]);
  nhost = 0;
}
static float *rnd(size_t n, float lo, float hi) {
  float *x = hmalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) x[i] = rnd_f(lo, hi);
  return x;
}
static float *dup_f(const float *x, size_t n) {
  float *y = hmalloc(n * sizeof(float));
  memcpy(y, x, n * sizeof(float));
  return y;
}
static int32_t *rnd_ids(size_t n, int lo, int hi) { /* in [lo, hi) */
  int32_t *x = (int32_t *)hmalloc(n * sizeof(int32_t));
  for (size_t i = 0; i < n; i++) x[i] = lo + (int32_t)(rnd_u32() % (uint32_t)(hi - lo));
  return x;
}

static void end_case(void) {
  dev_free_all();
  hfree_all();
}

/* ------------------------------------------------------------- checks */

/* max |got - ref| / max |ref| over the finite ref values; non-finite ref
 * values must be matched exactly; an all-zero ref fails */
static void compare(const char *name, const float *got, const float *ref, size_t n) {
  double err = 0, scale = 0;
  size_t bad_nonfinite = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(ref[i])) {
      if (!(isnan(ref[i]) ? isnan(got[i]) : got[i] == ref[i])) bad_nonfinite++;
      continue;
    }
    scale = fmax(scale, fabs(ref[i]));
    double e = fabs((double)got[i] - (double)ref[i]);
    err = isnan(e) ? INFINITY : fmax(err, e);
  }
  double rel = scale > 0 ? err / scale : INFINITY;
  int ok = scale > 0 && rel <= TOL && !bad_nonfinite;
  if (ok) printf("ok   %-58s max rel err %9.3g\n", name, rel);
  CHECK(ok, "%s: max rel err %g (bound %g), %zu non-finite mismatches, max |ref| %g%s", name, rel, TOL, bad_nonfinite,
        scale, scale > 0 ? "" : " (the reference is all zeros)");
}
/* the device buffer dptr (n floats) against ref */
static void compare_dev(const char *name, const float *dptr, const float *ref, size_t n) {
  float *h = malloc(n * sizeof(float) + 1);
  prt_dev_download(D, h, (uint64_t)(uintptr_t)dptr, n * sizeof(float), "test download");
  compare(name, h, ref, n);
  free(h);
}
#define COMPARE compare_dev

static void compare_i32(const char *name, const int32_t *dp, const int32_t *ref, size_t n) {
  int32_t *h = malloc(n * sizeof(int32_t) + 1);
  prt_dev_download(D, h, (uint64_t)(uintptr_t)dp, n * sizeof(int32_t), "test download");
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += h[i] != ref[i];
  if (!bad) printf("ok   %-58s exact\n", name);
  CHECK(!bad, "%s: %zu of %zu values differ", name, bad, n);
  free(h);
}

/* ------------------------------------------------------------- cases */

static void case_matmul(void) {
  const int N = 37, C = 45, OC = 29;
  float *inp = rnd((size_t)N * C, -1, 1), *w = rnd((size_t)OC * C, -1, 1), *bias = rnd(OC, -1, 1);
  float *dinp_d = dev_f(inp, (size_t)N * C), *dw_d = dev_f(w, (size_t)OC * C), *db_d = dev_f(bias, OC);
  for (int with_bias = 0; with_bias < 2; with_bias++) {
    float *ref = hmalloc(sizeof(float) * N * OC);
    k_matmul_forward(ref, inp, w, with_bias ? bias : NULL, N, C, OC);
    float *out = dev_nan((size_t)N * OC);
    d_matmul_forward(out, dinp_d, dw_d, with_bias ? db_d : NULL, N, C, OC);
    COMPARE(with_bias ? "matmul_forward (bias)" : "matmul_forward (no bias)", out, ref, (size_t)N * OC);
  }
  float *dout = rnd((size_t)N * OC, -1, 1), *dout_d = dev_f(dout, (size_t)N * OC);
  float *ref = hmalloc(sizeof(float) * N * C);
  k_matmul_backward_input(ref, dout, w, N, C, OC);
  float *dinp = dev_nan((size_t)N * C);
  d_matmul_backward_input(dinp, dout_d, dw_d, N, C, OC);
  COMPARE("matmul_backward_input", dinp, ref, (size_t)N * C);
  d_matmul_backward_input(NULL, dout_d, dw_d, N, C, OC); /* skipped, no crash */

  /* gradients accumulate onto nonzero values */
  float *gw = rnd((size_t)OC * C, -1, 1), *gb = rnd(OC, -1, 1);
  float *gw_d = dev_f(gw, (size_t)OC * C), *gb_d = dev_f(gb, OC), *gw2_d = dev_f(gw, (size_t)OC * C);
  k_matmul_backward_weight(gw, gb, dout, inp, N, C, OC);
  d_matmul_backward_weight(gw_d, gb_d, dout_d, dinp_d, N, C, OC);
  COMPARE("matmul_backward_weight dweight (+=)", gw_d, gw, (size_t)OC * C);
  COMPARE("matmul_backward_weight dbias (+=)", gb_d, gb, OC);
  d_matmul_backward_weight(gw2_d, NULL, dout_d, dinp_d, N, C, OC);
  COMPARE("matmul_backward_weight dweight, no dbias", gw2_d, gw, (size_t)OC * C);
  end_case();
}

static void case_embedding(void) {
  const int B = 3, T = 7, C = 37, V = 11, BT = B * T;
  float *wte = rnd((size_t)V * C, -1, 1), *wpe = rnd((size_t)T * C, -1, 1);
  int32_t *tok = rnd_ids(BT, 0, V);
  float *wte_d = dev_f(wte, (size_t)V * C), *wpe_d = dev_f(wpe, (size_t)T * C);
  int32_t *tok_d = dev_i(tok, BT);
  for (int with_wpe = 0; with_wpe < 2; with_wpe++) {
    float *ref = hmalloc(sizeof(float) * BT * C), *out = dev_nan((size_t)BT * C);
    k_embedding_forward(ref, tok, wte, with_wpe ? wpe : NULL, B, T, C);
    d_embedding_forward(out, tok_d, wte_d, with_wpe ? wpe_d : NULL, B, T, C);
    COMPARE(with_wpe ? "embedding_forward (wte + wpe)" : "embedding_forward (wte only)", out, ref, (size_t)BT * C);
  }
  float *dout = rnd((size_t)BT * C, -1, 1), *dout_d = dev_f(dout, (size_t)BT * C);
  float *dwte = rnd((size_t)V * C, -1, 1), *dwpe = rnd((size_t)T * C, -1, 1);
  float *dwte_d = dev_f(dwte, (size_t)V * C), *dwpe_d = dev_f(dwpe, (size_t)T * C);
  float *dwte2 = dup_f(dwte, (size_t)V * C), *dwte2_d = dev_f(dwte, (size_t)V * C);
  k_embedding_backward(dwte, dwpe, dout, tok, B, T, C);
  d_embedding_backward(dwte_d, dwpe_d, dout_d, tok_d, B, T, C);
  COMPARE("embedding_backward dwte (+=, repeated tokens)", dwte_d, dwte, (size_t)V * C);
  COMPARE("embedding_backward dwpe (+=)", dwpe_d, dwpe, (size_t)T * C);
  k_embedding_backward(dwte2, NULL, dout, tok, B, T, C);
  d_embedding_backward(dwte2_d, NULL, dout_d, tok_d, B, T, C);
  COMPARE("embedding_backward dwte, no dwpe", dwte2_d, dwte2, (size_t)V * C);

  const int N = 50;
  int32_t *pos = (int32_t *)hmalloc(sizeof(int32_t) * N), *pos_d = dev_alloc(sizeof(int32_t) * N);
  k_positions(pos, N, T);
  d_positions(pos_d, N, T);
  compare_i32("positions", pos_d, pos, N);
  k_positions_at(pos, N, 13);
  d_positions_at(pos_d, N, 13);
  compare_i32("positions_at", pos_d, pos, N);
  end_case();
}

static void case_layernorm(void) {
  const int N = 41, C = 50;
  const float eps = 1e-5f;
  float *x = rnd((size_t)N * C, -2, 3), *w = rnd(C, 0.5f, 1.5f), *b = rnd(C, -1, 1);
  float *x_d = dev_f(x, (size_t)N * C), *w_d = dev_f(w, C), *b_d = dev_f(b, C);
  float *mean = hmalloc(sizeof(float) * N), *rstd = hmalloc(sizeof(float) * N);
  for (int with_bias = 0; with_bias < 2; with_bias++) {
    float *out = hmalloc(sizeof(float) * N * C);
    k_layernorm_forward(out, mean, rstd, x, w, with_bias ? b : NULL, N, C, eps);
    float *out_d = dev_nan((size_t)N * C), *mean_d = dev_nan(N), *rstd_d = dev_nan(N);
    d_layernorm_forward(out_d, mean_d, rstd_d, x_d, w_d, with_bias ? b_d : NULL, N, C, eps);
    COMPARE(with_bias ? "layernorm_forward out" : "layernorm_forward out (no bias)", out_d, out, (size_t)N * C);
    COMPARE("layernorm_forward mean", mean_d, mean, N);
    COMPARE("layernorm_forward rstd", rstd_d, rstd, N);
  }
  /* backward from the CPU's statistics on both sides */
  float *mean_d = dev_f(mean, N), *rstd_d = dev_f(rstd, N);
  float *dout = rnd((size_t)N * C, -1, 1), *dout_d = dev_f(dout, (size_t)N * C);
  float *dinp = hmalloc(sizeof(float) * N * C), *dinp_d = dev_nan((size_t)N * C);
  float *dw = rnd(C, -1, 1), *db = rnd(C, -1, 1), *dw2 = dup_f(dw, C);
  float *dw_d = dev_f(dw, C), *db_d = dev_f(db, C), *dw2_d = dev_f(dw, C);
  k_layernorm_backward(dinp, dw, db, dout, x, w, mean, rstd, N, C);
  d_layernorm_backward(dinp_d, dw_d, db_d, dout_d, x_d, w_d, mean_d, rstd_d, N, C);
  COMPARE("layernorm_backward dinp", dinp_d, dinp, (size_t)N * C);
  COMPARE("layernorm_backward dweight (+=)", dw_d, dw, C);
  COMPARE("layernorm_backward dbias (+=)", db_d, db, C);
  k_layernorm_backward(dinp, dw2, NULL, dout, x, w, mean, rstd, N, C);
  d_layernorm_backward(dinp_d, dw2_d, NULL, dout_d, x_d, w_d, mean_d, rstd_d, N, C);
  COMPARE("layernorm_backward dweight, no dbias", dw2_d, dw2, C);
  /* in place: dinp is dout */
  float *dout2_d = dev_f(dout, (size_t)N * C), *dw3_d = dev_f(dw2, C);
  k_layernorm_backward(dinp, dw2, NULL, dout, x, w, mean, rstd, N, C);
  d_layernorm_backward(dout2_d, dw3_d, NULL, dout2_d, x_d, w_d, mean_d, rstd_d, N, C);
  COMPARE("layernorm_backward dinp in place (dinp = dout)", dout2_d, dinp, (size_t)N * C);
  COMPARE("layernorm_backward dweight, dinp in place", dw3_d, dw2, C);

  float *a = rnd((size_t)N * C, -1, 1), *a_d = dev_f(a, (size_t)N * C);
  float *resid = hmalloc(sizeof(float) * N * C), *out = hmalloc(sizeof(float) * N * C);
  k_residual_layernorm_forward(resid, out, mean, rstd, a, x, w, b, N, C, eps);
  float *resid_d = dev_nan((size_t)N * C), *out_d = dev_nan((size_t)N * C), *m2_d = dev_nan(N), *r2_d = dev_nan(N);
  d_residual_layernorm_forward(resid_d, out_d, m2_d, r2_d, a_d, x_d, w_d, b_d, N, C, eps);
  COMPARE("residual_layernorm_forward resid_out", resid_d, resid, (size_t)N * C);
  COMPARE("residual_layernorm_forward out", out_d, out, (size_t)N * C);
  COMPARE("residual_layernorm_forward mean", m2_d, mean, N);
  COMPARE("residual_layernorm_forward rstd", r2_d, rstd, N);
  end_case();
}

static void case_rmsnorm(void) {
  const int N = 33, C = 61;
  const float eps = 1e-6f;
  float *x = rnd((size_t)N * C, -2, 2), *w = rnd(C, 0.5f, 1.5f);
  float *x_d = dev_f(x, (size_t)N * C), *w_d = dev_f(w, C);
  float *out = hmalloc(sizeof(float) * N * C), *rstd = hmalloc(sizeof(float) * N);
  k_rmsnorm_forward(out, rstd, x, w, N, C, eps);
  float *out_d = dev_nan((size_t)N * C), *rstd_d = dev_nan(N);
  d_rmsnorm_forward(out_d, rstd_d, x_d, w_d, N, C, eps);
  COMPARE("rmsnorm_forward out", out_d, out, (size_t)N * C);
  COMPARE("rmsnorm_forward rstd", rstd_d, rstd, N);
  float *rs_d = dev_f(rstd, N), *dout = rnd((size_t)N * C, -1, 1), *dout_d = dev_f(dout, (size_t)N * C);
  float *dinp = hmalloc(sizeof(float) * N * C), *dinp_d = dev_nan((size_t)N * C);
  float *dw = rnd(C, -1, 1), *dw_d = dev_f(dw, C);
  k_rmsnorm_backward(dinp, dw, dout, x, w, rstd, N, C);
  d_rmsnorm_backward(dinp_d, dw_d, dout_d, x_d, w_d, rs_d, N, C);
  COMPARE("rmsnorm_backward dinp", dinp_d, dinp, (size_t)N * C);
  COMPARE("rmsnorm_backward dweight (+=)", dw_d, dw, C);
  end_case();
}

static void case_activation(void) {
  static const char *const names[] = {"gelu_tanh", "gelu_erf", "relu", "silu"};
  const long n = 1001;
  const int N = 13, C = 45;
  float *x = rnd(n, -4, 4), *dy = rnd(n, -1, 1), *bias = rnd(C, -1, 1);
  float *x_d = dev_f(x, n), *dy_d = dev_f(dy, n), *bias_d = dev_f(bias, C);
  char name[96];
  for (int act = 0; act < 4; act++) {
    float *ref = hmalloc(sizeof(float) * n), *out = dev_nan(n);
    k_act_forward(ref, x, n, (KAct)act);
    d_act_forward(out, x_d, n, (KAct)act);
    snprintf(name, sizeof name, "act_forward %s", names[act]);
    COMPARE(name, out, ref, n);
    k_act_backward(ref, dy, x, n, (KAct)act);
    d_act_backward(out, dy_d, x_d, n, (KAct)act);
    snprintf(name, sizeof name, "act_backward %s", names[act]);
    COMPARE(name, out, ref, n);
    k_bias_act_forward(ref, x, bias, N, C, (KAct)act);
    d_bias_act_forward(out, x_d, bias_d, N, C, (KAct)act);
    snprintf(name, sizeof name, "bias_act_forward %s", names[act]);
    COMPARE(name, out, ref, (size_t)N * C);
  }
  /* in place */
  float *ref = hmalloc(sizeof(float) * n), *y_d = dev_f(x, n);
  k_act_forward(ref, x, n, K_GELU_TANH);
  d_act_forward(y_d, y_d, n, K_GELU_TANH);
  COMPARE("act_forward in place", y_d, ref, n);
  end_case();
}

static void case_elementwise(void) {
  const long n = 1003;
  const int N = 17, C = 59;
  float *a = rnd(n, -2, 2), *b = rnd(n, -2, 2);
  float *a_d = dev_f(a, n), *b_d = dev_f(b, n);
  float *ref = hmalloc(sizeof(float) * n), *out = dev_nan(n);
  k_add(ref, a, b, n), d_add(out, a_d, b_d, n);
  COMPARE("add", out, ref, n);
  k_mul(ref, a, b, n), d_mul(out, a_d, b_d, n);
  COMPARE("mul", out, ref, n);
  k_sub(ref, a, b, n), d_sub(out, a_d, b_d, n);
  COMPARE("sub", out, ref, n);
  k_scale_copy(ref, a, n, -0.75f), d_scale_copy(out, a_d, n, -0.75f);
  COMPARE("scale_copy", out, ref, n);
  float *c_d = dev_nan(n);
  k_copy(ref, b, n), d_copy(c_d, b_d, n);
  COMPARE("copy", c_d, ref, n);
  d_copy(c_d, c_d, n); /* may alias */
  COMPARE("copy onto itself", c_d, ref, n);
  /* in place: out = a */
  float *acc = dup_f(a, n), *acc_d = dev_f(a, n);
  k_add(acc, acc, b, n), d_add(acc_d, acc_d, b_d, n);
  COMPARE("add in place (out = a)", acc_d, acc, n);
  k_accumulate(acc, b, n), d_accumulate(acc_d, b_d, n);
  COMPARE("accumulate (+=)", acc_d, acc, n);
  k_scale(acc, n, 0.3f), d_scale(acc_d, n, 0.3f);
  COMPARE("scale (in place)", acc_d, acc, n);
  /* an odd start: the vector paths' heads */
  k_add(ref, a + 1, b + 3, n - 3), d_add(out, a_d + 1, b_d + 3, n - 3);
  COMPARE("add, misaligned pointers", out, ref, n - 3);

  float *x = rnd((size_t)N * C, -1, 1), *bias = rnd(C, -1, 1);
  float *x_d = dev_f(x, (size_t)N * C), *bias_d = dev_f(bias, C), *o_d = dev_nan((size_t)N * C);
  float *o = hmalloc(sizeof(float) * N * C);
  k_bias_add(o, x, bias, N, C), d_bias_add(o_d, x_d, bias_d, N, C);
  COMPARE("bias_add", o_d, o, (size_t)N * C);
  k_bias_add(x, x, bias, N, C), d_bias_add(x_d, x_d, bias_d, N, C);
  COMPARE("bias_add in place", x_d, x, (size_t)N * C);
  float *db = rnd(C, -1, 1), *db_d = dev_f(db, C);
  k_bias_backward(db, o, N, C), d_bias_backward(db_d, o_d, N, C);
  COMPARE("bias_backward (+=)", db_d, db, C);
  end_case();
}

static void case_dropout(void) {
  const long n = 1005;
  const float p = 0.3f;
  const uint64_t seed = 0x0123456789ABCDEFull, offset = 5;
  float *x = rnd(n, -1, 1), *x_d = dev_f(x, n);
  float *ref = hmalloc(sizeof(float) * n), *out = dev_nan(n);
  k_dropout_forward(ref, x, n, p, seed, offset);
  d_dropout_forward(out, x_d, n, p, seed, offset);
  long dropped = 0;
  for (long i = 0; i < n; i++) dropped += ref[i] == 0.0f;
  CHECK(dropped > n / 5 && dropped < n / 2, "dropout drops %ld of %ld with p = %g", dropped, n, p);
  COMPARE("dropout_forward", out, ref, n);
  k_dropout_backward(ref, x, n, p, seed, offset + 1);
  d_dropout_backward(out, x_d, n, p, seed, offset + 1);
  COMPARE("dropout_backward (another offset)", out, ref, n);
  k_dropout_forward(x, x, n, p, seed, offset);
  d_dropout_forward(x_d, x_d, n, p, seed, offset);
  COMPARE("dropout_forward in place", x_d, x, n);
  end_case();
}

static void case_softmax(void) {
  const int N = 9, C = 67;
  float *x = rnd((size_t)N * C, -5, 5);
  x[3] = x[10] = -INFINITY; /* masked */
  float *x_d = dev_f(x, (size_t)N * C), *out_d = dev_nan((size_t)N * C);
  float *out = hmalloc(sizeof(float) * N * C);
  k_softmax_forward(out, x, N, C), d_softmax_forward(out_d, x_d, N, C);
  COMPARE("softmax_forward", out_d, out, (size_t)N * C);
  float *dy = rnd((size_t)N * C, -1, 1), *dy_d = dev_f(dy, (size_t)N * C), *y_d = dev_f(out, (size_t)N * C);
  float *dx = hmalloc(sizeof(float) * N * C), *dx_d = dev_nan((size_t)N * C);
  k_softmax_backward(dx, dy, out, N, C), d_softmax_backward(dx_d, dy_d, y_d, N, C);
  COMPARE("softmax_backward", dx_d, dx, (size_t)N * C);
  d_softmax_forward(x_d, x_d, N, C);
  COMPARE("softmax_forward in place", x_d, out, (size_t)N * C);
  d_softmax_backward(dy_d, dy_d, y_d, N, C);
  COMPARE("softmax_backward in place (dinp = dout)", dy_d, dx, (size_t)N * C);
  end_case();
}

typedef struct {
  int B, T, Tk, NH, NH_kv, HS, causal, packed;
} AttnCase;

static void attention_one(const AttnCase *c) {
  const int Cq = c->NH * c->HS, Ckv = c->NH_kv * c->HS;
  KAttn a = {c->B, c->T, c->Tk, c->NH, c->NH_kv, c->HS, c->causal, Cq, Ckv, Cq};
  size_t nq, nkv; /* elements of the q and of the k (= v) buffers */
  float *q, *k, *v, *q_d, *k_d, *v_d, *qkv = NULL, *qkv_d = NULL;
  if (c->packed) { /* rows q | k | v (T = Tk) */
    a.q_stride = a.kv_stride = Cq + 2 * Ckv;
    nq = nkv = (size_t)c->B * c->T * a.q_stride;
    qkv = rnd(nq, -1.5f, 1.5f);
    qkv_d = dev_f(qkv, nq);
    q = qkv, k = qkv + Cq, v = qkv + Cq + Ckv;
    q_d = qkv_d, k_d = qkv_d + Cq, v_d = qkv_d + Cq + Ckv;
  } else {
    nq = (size_t)c->B * c->T * Cq, nkv = (size_t)c->B * c->Tk * Ckv;
    q = rnd(nq, -1.5f, 1.5f), k = rnd(nkv, -1.5f, 1.5f), v = rnd(nkv, -1.5f, 1.5f);
    q_d = dev_f(q, nq), k_d = dev_f(k, nkv), v_d = dev_f(v, nkv);
  }
  const size_t nout = (size_t)c->B * c->T * Cq, nlse = (size_t)c->B * c->NH * c->T;
  char tag[96], name[160];
  snprintf(tag, sizeof tag, "B%d T%d Tk%d NH%d/%d HS%d%s%s", c->B, c->T, c->Tk, c->NH, c->NH_kv, c->HS,
           c->causal ? " causal" : "", c->packed ? " packed" : "");
  float *out = hmalloc(sizeof(float) * nout), *lse = hmalloc(sizeof(float) * nlse);
  k_attention_forward(out, lse, q, k, v, &a);
  float *out_d = dev_nan(nout), *lse_d = dev_nan(nlse);
  d_attention_forward(out_d, lse_d, q_d, k_d, v_d, &a);
  snprintf(name, sizeof name, "attention_forward out %s", tag);
  COMPARE(name, out_d, out, nout);
  snprintf(name, sizeof name, "attention_forward lse %s", tag);
  COMPARE(name, lse_d, lse, nlse);

  /* backward from the CPU's out and lse on both sides */
  float *dout = rnd(nout, -1, 1), *dout_d = dev_f(dout, nout), *o_d = dev_f(out, nout), *l_d = dev_f(lse, nlse);
  float *dq, *dk, *dv, *dq_d, *dk_d, *dv_d;
  if (c->packed) {
    float *g = hmalloc(sizeof(float) * nq), *g_d = dev_nan(nq);
    dq = g, dk = g + Cq, dv = g + Cq + Ckv;
    dq_d = g_d, dk_d = g_d + Cq, dv_d = g_d + Cq + Ckv;
    k_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, &a);
    d_attention_backward(dq_d, dk_d, dv_d, dout_d, o_d, l_d, q_d, k_d, v_d, &a);
    snprintf(name, sizeof name, "attention_backward dqkv %s", tag);
    COMPARE(name, g_d, g, nq);
  } else {
    dq = hmalloc(sizeof(float) * nq), dk = hmalloc(sizeof(float) * nkv), dv = hmalloc(sizeof(float) * nkv);
    dq_d = dev_nan(nq), dk_d = dev_nan(nkv), dv_d = dev_nan(nkv);
    k_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, &a);
    d_attention_backward(dq_d, dk_d, dv_d, dout_d, o_d, l_d, q_d, k_d, v_d, &a);
    snprintf(name, sizeof name, "attention_backward dq %s", tag);
    COMPARE(name, dq_d, dq, nq);
    snprintf(name, sizeof name, "attention_backward dk %s", tag);
    COMPARE(name, dk_d, dk, nkv);
    snprintf(name, sizeof name, "attention_backward dv %s", tag);
    COMPARE(name, dv_d, dv, nkv);
  }
  end_case();
}

static void case_attention(void) {
  static const AttnCase cases[] = {
      {2, 19, 19, 4, 2, 16, 1, 1}, /* causal, GQA, packed qkv */
      {1, 21, 21, 3, 3, 12, 0, 0}, /* not causal, separate buffers */
      {1, 35, 35, 4, 1, 8, 1, 0},  /* causal, one kv head for four, two key tiles */
      {2, 9, 23, 2, 2, 20, 0, 0},  /* not causal, more keys than queries */
      {1, 67, 67, 2, 1, 64, 1, 1}, /* causal, three key tiles, two dims per lane, packed */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) attention_one(&cases[i]);
}

/* one decoding step per position with a KV cache of Tk positions, 3 beams, GQA:
   the output and the cache (keys and values appended at pos) */
static void case_attention_decode(void) {
  const int B = 3, NH = 4, NH_kv = 2, HS = 16, Tk = 9, kvw = NH_kv * HS, C = NH * HS, qs = C + 2 * kvw;
  KAttn a = {B, 1, Tk, NH, NH_kv, HS, 1, qs, qs, C};
  size_t ncache = (size_t)B * 2 * Tk * kvw;
  float *cache = rnd(ncache, -1, 1), *cache_d = dev_f(cache, ncache);
  float *out = hmalloc(sizeof(float) * B * C), *lse = hmalloc(sizeof(float) * B * NH);
  float *out_d = dev_nan((size_t)B * C), *lse_d = dev_nan((size_t)B * NH);
  for (int pos = 0; pos < Tk; pos += 4) {
    float *qkv = rnd((size_t)B * qs, -1, 1), *qkv_d = dev_f(qkv, (size_t)B * qs);
    k_attention_decode(out, lse, qkv, qkv + C, qkv + C + kvw, cache, pos, &a);
    d_attention_decode(out_d, lse_d, qkv_d, qkv_d + C, qkv_d + C + kvw, cache_d, pos, &a);
    char name[64];
    snprintf(name, sizeof name, "attention_decode out, pos %d", pos);
    COMPARE(name, out_d, out, (size_t)B * C);
    snprintf(name, sizeof name, "attention_decode cache, pos %d", pos);
    COMPARE(name, cache_d, cache, ncache);
  }
  end_case();
}

static void case_crossentropy(void) {
  const int N = 13, V = 67;
  const float scale = 1.0f / 11;
  float *x = rnd((size_t)N * V, -4, 4), *x_d = dev_f(x, (size_t)N * V);
  int32_t *t = rnd_ids(N, 0, V);
  t[2] = t[7] = -1;
  int32_t *t_d = dev_i(t, N);
  float *loss = hmalloc(sizeof(float) * N), *dl = hmalloc(sizeof(float) * N * V);
  k_crossentropy_forward_backward(loss, dl, x, t, N, V, scale);
  float *loss_d = dev_nan(N), *dl_d = dev_nan((size_t)N * V);
  d_crossentropy_forward_backward(loss_d, dl_d, x_d, t_d, N, V, scale);
  COMPARE("crossentropy losses (two rows ignored)", loss_d, loss, N);
  COMPARE("crossentropy dlogits", dl_d, dl, (size_t)N * V);
  float *loss2_d = dev_nan(N);
  d_crossentropy_forward_backward(loss2_d, NULL, x_d, t_d, N, V, scale);
  COMPARE("crossentropy losses, no dlogits", loss2_d, loss, N);
  COMPARE("crossentropy logits untouched without dlogits", x_d, x, (size_t)N * V);
  d_crossentropy_forward_backward(loss2_d, x_d, x_d, t_d, N, V, scale);
  COMPARE("crossentropy dlogits in place (dlogits = logits)", x_d, dl, (size_t)N * V);
  end_case();
}

static void case_vocab_parallel(void) {
  const int N = 23, C = 37, V = 29; /* this rank: vocabulary rows [v0, v0 + V) of 0..80 */
  const int64_t v0 = 31;
  float *W = rnd((size_t)V * C, -1, 1), *W_d = dev_f(W, (size_t)V * C);
  int32_t *ids = rnd_ids(N, 0, 80), *ids_d;
  ids[0] = (int32_t)v0, ids[1] = (int32_t)v0 + V - 1, ids[2] = (int32_t)v0 + V; /* both ends, one past */
  ids_d = dev_i(ids, N);
  float *out = hmalloc(sizeof(float) * N * C), *out_d = dev_nan((size_t)N * C);
  k_vp_embedding_forward(out, ids, W, N, C, v0, V);
  d_vp_embedding_forward(out_d, ids_d, W_d, N, C, v0, V);
  COMPARE("vp_embedding_forward", out_d, out, (size_t)N * C);
  float *dout = rnd((size_t)N * C, -1, 1), *dout_d = dev_f(dout, (size_t)N * C);
  float *dW = rnd((size_t)V * C, -1, 1), *dW_d = dev_f(dW, (size_t)V * C);
  k_vp_embedding_backward(dW, dout, ids, N, C, v0, V);
  d_vp_embedding_backward(dW_d, dout_d, ids_d, N, C, v0, V);
  COMPARE("vp_embedding_backward (+=)", dW_d, dW, (size_t)V * C);

  float *logits = rnd((size_t)N * V, -4, 4), *logits_d = dev_f(logits, (size_t)N * V);
  int32_t *t = rnd_ids(N, 0, 80);
  t[3] = -1, t[4] = (int32_t)v0, t[5] = (int32_t)v0 + V - 1;
  int32_t *t_d = dev_i(t, N);
  float *M = hmalloc(sizeof(float) * N), *M_d = dev_nan(N);
  k_vp_rowmax(M, logits, N, V), d_vp_rowmax(M_d, logits_d, N, V);
  COMPARE("vp_rowmax", M_d, M, N);
  for (int r = 0; r < N; r++) M[r] += 0.5f; /* as if another rank's max were larger */
  float *Mg_d = dev_f(M, N);
  float *S = hmalloc(sizeof(float) * 2 * N), *S_d = dev_nan(2 * (size_t)N);
  k_vp_sumexp(S, logits, t, M, N, V, v0), d_vp_sumexp(S_d, logits_d, t_d, Mg_d, N, V, v0);
  COMPARE("vp_sumexp", S_d, S, 2 * (size_t)N);
  for (int r = 0; r < N; r++) S[2 * r] += 1.25f; /* other ranks' sums */
  float *Sg_d = dev_f(S, 2 * (size_t)N);
  float *loss = hmalloc(sizeof(float) * N), *loss_d = dev_nan(N);
  k_vp_xent_forward(loss, t, M, S, N), d_vp_xent_forward(loss_d, t_d, Mg_d, Sg_d, N);
  COMPARE("vp_xent_forward", loss_d, loss, N);
  float *dl = hmalloc(sizeof(float) * N * V), *dl_d = dev_nan((size_t)N * V);
  k_vp_xent_backward(dl, logits, t, M, S, N, V, v0, 0.125f);
  d_vp_xent_backward(dl_d, logits_d, t_d, Mg_d, Sg_d, N, V, v0, 0.125f);
  COMPARE("vp_xent_backward", dl_d, dl, (size_t)N * V);
  d_vp_xent_backward(logits_d, logits_d, t_d, Mg_d, Sg_d, N, V, v0, 0.125f);
  COMPARE("vp_xent_backward in place (dlogits = logits)", logits_d, dl, (size_t)N * V);
  end_case();
}

static void case_optimizer(void) {
  const long n = 1007;
  float *p = rnd(n, -1, 1), *gr = rnd(n, -1, 1), *m = rnd(n, -0.1f, 0.1f), *v = rnd(n, 0, 0.1f);
  float *p_d = dev_f(p, n), *g_d = dev_f(gr, n), *m_d = dev_f(m, n), *v_d = dev_f(v, n);
  for (int t = 1; t <= 3; t++) {
    k_adamw(p, gr, m, v, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
    d_adamw(p_d, g_d, m_d, v_d, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
  }
  COMPARE("adamw param (3 steps)", p_d, p, n);
  COMPARE("adamw m", m_d, m, n);
  COMPARE("adamw v", v_d, v, n);

  const long big = 10007; /* up to 10 partial blocks */
  float *x = rnd(big, -2, 2), *x_d = dev_f(x, big);
  for (long len = 1; len <= big; len = len * 9 + 4) {
    double want = k_sumsq(x, len), got = d_sumsq(x_d, len);
    double rel = fabs(got - want) / want;
    if (rel <= TOL) printf("ok   sumsq n=%-52ld rel err %9.3g\n", len, rel);
    CHECK(rel <= TOL && want > 0, "sumsq of %ld: %.17g, the CPU's %.17g", len, got, want);
  }
  CHECK(d_sumsq(x_d, 0) == 0.0, "sumsq of nothing");
  end_case();
}

/* A failing call names the caller's what and the op: this binary again
 * (a fresh process, as a forked one would confuse the leak checker), as
 * `--what`, which opens the device and calls d_attention_forward with a head
 * size the kernels do not take. */
static int what_child(void) {
  char why[512];
  D = prt_device_open(0, 0, why, sizeof why);
  prt_dev_kernels_bind(D, prt_module_load(D, NULL, 0, 0, "// no PTX\n", "kernels"));
  prt_dev_kernels_what("stage 1 layers.0.attn");
  KAttn a = {1, 4, 4, 2, 2, 200, 1, 400, 400, 400};
  d_attention_forward(NULL, NULL, NULL, NULL, NULL, &a);
  return 0;
}

static void case_what(void) {
  int fd[2];
  char self[4096];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  CHECK(sl > 0 && !pipe(fd), "readlink, pipe");
  if (sl <= 0) return;
  self[sl] = 0;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[1], 2);
    close(fd[0]);
    execl(self, self, "--what", (char *)NULL);
    _exit(127);
  }
  close(fd[1]);
  char err[1024] = "";
  ssize_t got = 0, r;
  while ((r = read(fd[0], err + got, sizeof err - 1 - (size_t)got)) > 0) got += r;
  err[got > 0 ? got : 0] = 0;
  close(fd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  const char *want = "pipec: stage 1 layers.0.attn: d_attention_forward: head size 200: the attention kernels take 1 "
                     "to 128 (PIPEC_ATTN_MAX_HS)\n";
  int ok = WIFEXITED(st) && WEXITSTATUS(st) == 1 && !strcmp(err, want);
  if (ok) printf("ok   error line names the caller's what and the op\n");
  CHECK(ok, "error line (exit status %d)\n  got:      %s  expected: %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1, err,
        want);
}

/* ------------------------------------------------------------- main */

static int run_all(void) {
  char why[512];
  D = prt_device_open(0, 0, why, sizeof why);
  CHECK(D != NULL, "no device: %s", why);
  if (!D) return check_summary();
  printf("device: %s\n", why);
  CHECK(strstr(prt_device_name(D), "CUDA emulator") != NULL, "not the emulator: %s", prt_device_name(D));
  PrtModule *m = prt_module_load(D, NULL, 0, 0, "// no PTX: the emulator has the kernels compiled in\n", "kernels");
  prt_dev_kernels_bind(D, m);
  struct {
    const char *name;
    void (*fn)(void);
  } cases[] = {
      {"matmul", case_matmul},         {"embedding", case_embedding},
      {"layernorm", case_layernorm},   {"rmsnorm", case_rmsnorm},
      {"activation", case_activation}, {"elementwise", case_elementwise},
      {"dropout", case_dropout},       {"softmax", case_softmax},
      {"attention", case_attention},   {"attention_decode", case_attention_decode},
      {"crossentropy", case_crossentropy},
      {"vocab_parallel", case_vocab_parallel}, {"optimizer", case_optimizer},
      {"what", case_what},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cases[i].fn();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("     (%s: %.2f s)\n", cases[i].name, s);
  }
  prt_dev_kernels_bind(NULL, NULL);
  prt_device_close(D);
  return check_summary();
}

int main(int argc, char **argv) {
  if (getenv("PIPEC_TEST_KERNELS_DEV_CHILD")) return argc == 2 && !strcmp(argv[1], "--what") ? what_child() : run_all();
  if (argc != 2) {
    fprintf(stderr, "usage: test_kernels_dev EMU_DIR (the CUDA emulator's libcuda.so.1)\n");
    return 2;
  }
  /* again, with the emulator where the dynamic loader looks first */
  char ld[8192];
  const char *old = getenv("LD_LIBRARY_PATH");
  snprintf(ld, sizeof ld, "%s%s%s", argv[1], old && *old ? ":" : "", old && *old ? old : "");
  setenv("LD_LIBRARY_PATH", ld, 1);
  setenv("PIPEC_DEVICE", "cuda", 1); /* no fallback to the CPU */
  setenv("PIPEC_TEST_KERNELS_DEV_CHILD", "1", 1);
  unsetenv("CUDA_VISIBLE_DEVICES");
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    perror("readlink /proc/self/exe");
    return 2;
  }
  self[n] = 0;
  execv(self, argv);
  perror("execv");
  return 2;
}
