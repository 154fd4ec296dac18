/* kernels_dev.c — see kernels_dev.h. Each d_X is its CPU twin's semantics
 * spelled as launches of the fp32 entry points of the kernels/ headers, with the
 * geometry their comments give. Grid sizes that only spread work (the
 * grid-stride kernels, the column-sum split) assume an H100-sized GPU
 * (DEV_SMS); correctness never depends on them. */
#include "runtime/kernels_dev.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the generated device code calls d_X with k_X's signature (compiler/llvmgen.c): keep them the same */
#define SAME_SIGNATURE(x) \
  _Static_assert(__builtin_types_compatible_p(__typeof__(k_##x), __typeof__(d_##x)), "d_" #x " must have k_" #x "'s signature");
SAME_SIGNATURE(matmul_forward)
SAME_SIGNATURE(matmul_backward_input)
SAME_SIGNATURE(matmul_backward_weight)
SAME_SIGNATURE(embedding_forward)
SAME_SIGNATURE(embedding_backward)
SAME_SIGNATURE(layernorm_forward)
SAME_SIGNATURE(layernorm_backward)
SAME_SIGNATURE(residual_layernorm_forward)
SAME_SIGNATURE(rmsnorm_forward)
SAME_SIGNATURE(rmsnorm_backward)
SAME_SIGNATURE(act_forward)
SAME_SIGNATURE(act_backward)
SAME_SIGNATURE(bias_act_forward)
SAME_SIGNATURE(add)
SAME_SIGNATURE(mul)
SAME_SIGNATURE(accumulate)
SAME_SIGNATURE(dropout_forward)
SAME_SIGNATURE(dropout_backward)
SAME_SIGNATURE(softmax_forward)
SAME_SIGNATURE(softmax_backward)
SAME_SIGNATURE(attention_forward)
SAME_SIGNATURE(attention_decode)
SAME_SIGNATURE(attention_backward)
SAME_SIGNATURE(crossentropy_forward_backward)
SAME_SIGNATURE(sub)
SAME_SIGNATURE(copy)
SAME_SIGNATURE(scale_copy)
SAME_SIGNATURE(positions)
SAME_SIGNATURE(positions_at)
SAME_SIGNATURE(bias_add)
SAME_SIGNATURE(bias_backward)
SAME_SIGNATURE(vp_embedding_forward)
SAME_SIGNATURE(vp_embedding_backward)
SAME_SIGNATURE(vp_rowmax)
SAME_SIGNATURE(vp_sumexp)
SAME_SIGNATURE(vp_xent_forward)
SAME_SIGNATURE(vp_xent_backward)
SAME_SIGNATURE(adamw)
SAME_SIGNATURE(sumsq)
SAME_SIGNATURE(scale)

#define DEV_SMS 132     /* streaming multiprocessors assumed when sizing grids */
#define COLSUM_ROWS 16  /* blockDim.y of the column-sum stage 1: block (32, 16) */
#define ATTN_MAX_HS 128 /* PIPEC_ATTN_MAX_HS of kernels/attention.cuh */
#define ACT_NONE (-1)   /* PIPEC_ACT_NONE of kernels/activation.cuh: bias only */

typedef struct {
  uint64_t ptr;
  size_t cap;
} Scratch;

static struct {
  PrtDevice *d;
  PrtModule *m;
  char what[256];             /* the caller's, or "" */
  Scratch part, sumsq, delta; /* column-sum partials, sum-of-squares partials, attention's delta */
  int gemm;                   /* the GEMMs' PRT_GEMM_* (fp32 storage either way) */
} g;

void prt_dev_kernels_gemm(int dtype) { g.gemm = dtype; }

/* ------------------------------------------------------------- binding */

static void scratch_free(Scratch *s) {
  if (s->ptr && g.d) prt_dev_free(g.d, s->ptr);
  s->ptr = 0, s->cap = 0;
}

void prt_dev_kernels_bind(PrtDevice *d, PrtModule *lib) {
  if (!d && g.d) { /* unbind: free the scratch once the work queued on it is done */
    prt_dev_sync(g.d, "d_ kernels unbind");
    scratch_free(&g.part), scratch_free(&g.sumsq), scratch_free(&g.delta);
  } else if (d != g.d) { /* another device: the old one's scratch is forgotten (it may be closed) */
    memset(&g.part, 0, sizeof g.part), memset(&g.sumsq, 0, sizeof g.sumsq), memset(&g.delta, 0, sizeof g.delta);
  }
  g.d = d;
  g.m = lib;
}

void prt_dev_kernels_what(const char *what) { snprintf(g.what, sizeof g.what, "%s", what ? what : ""); }

/* "<what>: op" (in a buffer reused by the next call) */
static const char *what_of(const char *op) {
  static char w[320];
  if (g.what[0]) snprintf(w, sizeof w, "%s: %s", g.what, op);
  else snprintf(w, sizeof w, "%s", op);
  return w;
}

static void fail(const char *op, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(const char *op, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fflush(stdout);
  fprintf(stderr, "pipec: %s: %s\n", what_of(op), msg);
  exit(1);
}

static PrtDevice *dev(const char *op) {
  if (!g.d || !g.m) fail(op, "no device kernels bound (prt_dev_kernels_bind)");
  return g.d;
}

/* at least `bytes` of scratch; grown (never shrunk) by replacing the buffer
 * once the work queued on it is done */
static uint64_t scratch(Scratch *s, size_t bytes, const char *op) {
  if (bytes > s->cap) {
    if (s->ptr) {
      prt_dev_sync(g.d, what_of(op));
      prt_dev_free(g.d, s->ptr);
    }
    size_t cap = s->cap * 2 > bytes ? s->cap * 2 : bytes;
    char w[384];
    snprintf(w, sizeof w, "%s: scratch", what_of(op));
    s->ptr = prt_dev_alloc(g.d, cap, w);
    s->cap = cap;
  }
  return s->ptr;
}

#define DPTR(p) ((uint64_t)(uintptr_t)(p))
#define ARGS(...) ((void *[]){__VA_ARGS__})

static void launch(const char *op, const char *kernel, unsigned grid, unsigned block, void **args) {
  prt_launch(dev(op), g.m, kernel, grid, block, 0, args, what_of(op));
}

static void launch3(const char *op, const char *kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                    unsigned shmem, void **args) {
  prt_launch_3d(dev(op), g.m, kernel, gx, gy, gz, bx, by, shmem, args, what_of(op));
}

/* ------------------------------------------------------------- geometry */

/* grid-stride over n floats, block 256, 16 bytes (4 floats) a thread:
 * min(ceil(n / 1024), cap * SMs) */
static unsigned grid_stride(long n, int per_sm) {
  long gr = (n + 1023) / 1024, cap = (long)per_sm * DEV_SMS;
  return (unsigned)(gr < 1 ? 1 : gr > cap ? cap : gr);
}

/* one warp per row, block 256 = 8 rows */
static unsigned warp_rows(int N) { return (unsigned)((N + 7) / 8); }

/* Rows of the column-sum partials: enough (32, 16) blocks to fill the GPU
 * twice over, no more than there are row groups, and few enough (tens) for
 * pipec_colsum_accumulate's one thread per column. */
static int colsum_split(int N, int C) {
  long tiles = (C + 31) / 32, s = (2 * DEV_SMS + tiles - 1) / tiles, groups = (N + COLSUM_ROWS - 1) / COLSUM_ROWS;
  if (s > groups) s = groups;
  if (s > 64) s = 64;
  return (int)(s < 1 ? 1 : s);
}

/* Column sums over N rows of K values per column, in two stages:
 * `kernel`(partials, rest...) writes partials (S, K, C) (colsum_partials of
 * common.cuh; its arguments after the partials are `rest`, nrest of them),
 * then dst[k] (C) += the S rows of values k, for each dst[k] not NULL. */
static void colsum(const char *op, const char *kernel, void **rest, int nrest, int N, int C, int K, float **dst) {
  if (N <= 0 || C <= 0) return;
  int S = colsum_split(N, C);
  float *part = (float *)(uintptr_t)scratch(&g.part, sizeof(float) * (size_t)S * K * C, op);
  void *args[12];
  args[0] = &part;
  for (int i = 0; i < nrest; i++) args[1 + i] = rest[i];
  launch3(op, kernel, (unsigned)((C + 31) / 32), (unsigned)S, 1, 32, COLSUM_ROWS, 0, args);
  long ld = (long)K * C;
  for (int k = 0; k < K; k++) {
    if (!dst[k]) continue;
    float *p = part + (size_t)k * C;
    launch(op, "pipec_colsum_accumulate_f32", (unsigned)((C + 255) / 256), 256, ARGS(&dst[k], &p, &S, &C, &ld));
  }
}

/* ------------------------------------------------------------- GEMMs */

void d_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
  const char *op = "d_matmul_forward";
  PrtDevice *d = dev(op);
  if (N <= 0 || OC <= 0) return;
  if (C <= 0) { /* out = bias, or 0 */
    prt_dev_memset(d, DPTR(out), 0, sizeof(float) * (size_t)N * OC, what_of(op));
    if (bias) launch(op, "pipec_matmul_bias_forward_f32", warp_rows(N), 256, ARGS(&out, &bias, &N, &OC));
    return;
  }
  prt_gemm(d, DPTR(out), DPTR(inp), DPTR(weight), DPTR(bias), N, OC, C, g.gemm, what_of(op));
}

void d_matmul_backward_input(float *dinp, const float *dout, const float *weight, int N, int C, int OC) {
  const char *op = "d_matmul_backward_input";
  PrtDevice *d = dev(op);
  if (!dinp || N <= 0 || C <= 0) return;
  if (OC <= 0) {
    prt_dev_memset(d, DPTR(dinp), 0, sizeof(float) * (size_t)N * C, what_of(op));
    return;
  }
  /* dinp (N x C) = dout (N x OC) @ weight (OC x C) */
  prt_gemm_ex(d, DPTR(dinp), DPTR(dout), 0, DPTR(weight), 0, 0, N, C, OC, 0.0f, g.gemm, what_of(op));
}

void d_matmul_backward_weight(float *dweight, float *dbias, const float *dout, const float *inp, int N, int C, int OC) {
  const char *op = "d_matmul_backward_weight";
  PrtDevice *d = dev(op);
  if (N <= 0 || OC <= 0) return;
  /* dweight (OC x C) += dout^T (dout stored N x OC) @ inp (N x C) */
  if (C > 0)
    prt_gemm_ex(d, DPTR(dweight), DPTR(dout), 1, DPTR(inp), 0, 0, OC, C, N, 1.0f, g.gemm, what_of(op));
  if (dbias) colsum(op, "pipec_matmul_backward_bias_f32", ARGS(&dout, &N, &OC), 3, N, OC, 1, (float *[]){dbias});
}

/* ------------------------------------------------------------- embedding */

void d_embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int B, int T, int C) {
  const char *op = "d_embedding_forward";
  dev(op);
  if (B * T <= 0 || C <= 0) return;
  launch(op, "pipec_embedding_forward_f32", warp_rows(B * T), 256, ARGS(&out, &tokens, &wte, &wpe, &B, &T, &C));
}

void d_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int B, int T, int C) {
  const char *op = "d_embedding_backward";
  dev(op);
  if (B * T <= 0 || C <= 0) return;
  launch(op, "pipec_embedding_backward_wte_f32", warp_rows(B * T), 256, ARGS(&dwte, &dout, &tokens, &B, &T, &C));
  if (dwpe)
    launch(op, "pipec_embedding_backward_wpe_f32", grid_stride((long)T * C, 8), 256, ARGS(&dwpe, &dout, &B, &T, &C));
}

/* ------------------------------------------------------------- norms */

void d_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias,
                         int N, int C, float eps) {
  const char *op = "d_layernorm_forward";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_layernorm_forward_f32", warp_rows(N), 256,
         ARGS(&out, &mean, &rstd, &inp, &weight, &bias, &N, &C, &eps));
}

void d_residual_layernorm_forward(float *resid_out, float *out, float *mean, float *rstd, const float *a, const float *b,
                                  const float *weight, const float *bias, int N, int C, float eps) {
  const char *op = "d_residual_layernorm_forward";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_residual_layernorm_forward_f32", warp_rows(N), 256,
         ARGS(&resid_out, &out, &mean, &rstd, &a, &b, &weight, &bias, &N, &C, &eps));
}

/* The parameter gradients are summed before dinp is written (so dinp may
 * even be dout here, which k_layernorm_backward does not allow). */
void d_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, const float *mean, const float *rstd, int N, int C) {
  const char *op = "d_layernorm_backward";
  dev(op);
  if (N <= 0 || C <= 0) return;
  colsum(op, "pipec_layernorm_backward_params_f32", ARGS(&dout, &inp, &mean, &rstd, &N, &C), 6, N, C, 2,
         (float *[]){dweight, dbias});
  launch(op, "pipec_layernorm_backward_input_f32", warp_rows(N), 256,
         ARGS(&dinp, &dout, &inp, &weight, &mean, &rstd, &N, &C));
}

void d_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
  const char *op = "d_rmsnorm_forward";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_rmsnorm_forward_f32", warp_rows(N), 256, ARGS(&out, &rstd, &inp, &weight, &N, &C, &eps));
}

/* the same order as d_layernorm_backward */
void d_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                        const float *rstd, int N, int C) {
  const char *op = "d_rmsnorm_backward";
  dev(op);
  if (N <= 0 || C <= 0) return;
  colsum(op, "pipec_rmsnorm_backward_params_f32", ARGS(&dout, &inp, &rstd, &N, &C), 5, N, C, 1, (float *[]){dweight});
  launch(op, "pipec_rmsnorm_backward_input_f32", warp_rows(N), 256, ARGS(&dinp, &dout, &inp, &weight, &rstd, &N, &C));
}

/* ------------------------------------------------------------- elementwise */

void d_act_forward(float *out, const float *inp, long n, KAct act) {
  const char *op = "d_act_forward";
  dev(op);
  if (n <= 0) return;
  int a = (int)act;
  launch(op, "pipec_act_forward_f32", grid_stride(n, 8), 256, ARGS(&out, &inp, &n, &a));
}

void d_act_backward(float *dinp, const float *dout, const float *inp, long n, KAct act) {
  const char *op = "d_act_backward";
  dev(op);
  if (n <= 0) return;
  int a = (int)act;
  launch(op, "pipec_act_backward_f32", grid_stride(n, 8), 256, ARGS(&dinp, &dout, &inp, &n, &a));
}

void d_bias_act_forward(float *out, const float *inp, const float *bias, int N, int C, KAct act) {
  const char *op = "d_bias_act_forward";
  dev(op);
  if (N <= 0) return;
  int a = (int)act;
  launch(op, "pipec_bias_act_forward_f32", warp_rows(N), 256, ARGS(&out, &inp, &bias, &N, &C, &a));
}

static void map2(const char *op, const char *kernel, float *out, const float *a, const float *b, long n) {
  dev(op);
  if (n <= 0) return;
  launch(op, kernel, grid_stride(n, 8), 256, ARGS(&out, &a, &b, &n));
}

void d_add(float *out, const float *a, const float *b, long n) { map2("d_add", "pipec_add_f32", out, a, b, n); }
void d_mul(float *out, const float *a, const float *b, long n) { map2("d_mul", "pipec_mul_f32", out, a, b, n); }
void d_sub(float *out, const float *a, const float *b, long n) { map2("d_sub", "pipec_sub_f32", out, a, b, n); }

void d_accumulate(float *dst, const float *src, long n) {
  const char *op = "d_accumulate";
  dev(op);
  if (n <= 0) return;
  launch(op, "pipec_accumulate_f32", grid_stride(n, 8), 256, ARGS(&dst, &src, &n));
}

void d_scale(float *x, long n, float s) {
  const char *op = "d_scale";
  dev(op);
  if (n <= 0) return;
  launch(op, "pipec_scale_f32", grid_stride(n, 8), 256, ARGS(&x, &n, &s));
}

void d_scale_copy(float *out, const float *inp, long n, float s) {
  const char *op = "d_scale_copy";
  dev(op);
  if (n <= 0) return;
  launch(op, "pipec_scale_copy_f32", grid_stride(n, 8), 256, ARGS(&out, &inp, &n, &s));
}

void d_copy(float *out, const float *inp, long n) {
  const char *op = "d_copy";
  PrtDevice *d = dev(op);
  if (n > 0) prt_dev_copy(d, DPTR(out), DPTR(inp), sizeof(float) * (size_t)n, what_of(op));
}

void d_dropout_forward(float *out, const float *inp, long n, float p, uint64_t seed, uint64_t offset) {
  const char *op = "d_dropout_forward";
  dev(op);
  if (n <= 0) return;
  unsigned long long s = seed, o = offset;
  launch(op, "pipec_dropout_forward_f32", grid_stride(n, 8), 256, ARGS(&out, &inp, &n, &p, &s, &o));
}

void d_dropout_backward(float *dinp, const float *dout, long n, float p, uint64_t seed, uint64_t offset) {
  const char *op = "d_dropout_backward";
  dev(op);
  if (n <= 0) return;
  unsigned long long s = seed, o = offset;
  launch(op, "pipec_dropout_backward_f32", grid_stride(n, 8), 256, ARGS(&dinp, &dout, &n, &p, &s, &o));
}

void d_positions(int32_t *out, int N, int T) {
  const char *op = "d_positions";
  dev(op);
  if (N <= 0) return;
  long gr = (N + 255) / 256;
  launch(op, "pipec_positions", (unsigned)(gr > 8 * DEV_SMS ? 8 * DEV_SMS : gr), 256, ARGS(&out, &N, &T));
}

void d_positions_at(int32_t *out, int N, int pos) {
  const char *op = "d_positions_at";
  dev(op);
  if (N <= 0) return;
  long gr = (N + 255) / 256;
  launch(op, "pipec_fill_int", (unsigned)(gr > 8 * DEV_SMS ? 8 * DEV_SMS : gr), 256, ARGS(&out, &N, &pos));
}

/* pipec_bias_act_forward with the identity: out = inp + bias; out may be inp */
void d_bias_add(float *out, const float *inp, const float *bias, int N, int C) {
  const char *op = "d_bias_add";
  dev(op);
  if (N <= 0) return;
  int a = ACT_NONE;
  launch(op, "pipec_bias_act_forward_f32", warp_rows(N), 256, ARGS(&out, &inp, &bias, &N, &C, &a));
}

void d_bias_backward(float *dbias, const float *dout, int N, int C) {
  const char *op = "d_bias_backward";
  dev(op);
  colsum(op, "pipec_matmul_backward_bias_f32", ARGS(&dout, &N, &C), 3, N, C, 1, (float *[]){dbias});
}

/* ------------------------------------------------------------- softmax, attention, loss */

void d_softmax_forward(float *out, const float *inp, int N, int C) {
  const char *op = "d_softmax_forward";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_softmax_forward_f32", (unsigned)N, 256, ARGS(&out, &inp, &N, &C));
}

void d_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C) {
  const char *op = "d_softmax_backward";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_softmax_backward_f32", (unsigned)N, 256, ARGS(&dinp, &dout, &out, &N, &C));
}

/* KAttn and PipecAttn (kernels/attention.cuh) have the same ten ints, in
 * the same order: the kernels take it by value. */
_Static_assert(sizeof(KAttn) == 10 * sizeof(int), "KAttn is PipecAttn's ten ints");
static KAttn attn_check(const char *op, const KAttn *a) {
  if (a->HS <= 0 || a->HS > ATTN_MAX_HS)
    fail(op, "head size %d: the attention kernels take 1 to %d (PIPEC_ATTN_MAX_HS)", a->HS, ATTN_MAX_HS);
  if (a->NH_kv <= 0 || a->NH % a->NH_kv)
    fail(op, "%d query heads do not split into groups of %d key/value heads", a->NH, a->NH_kv);
  return *a;
}

void d_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const KAttn *a) {
  const char *op = "d_attention_forward";
  dev(op);
  if (a->B <= 0 || a->T <= 0 || a->NH <= 0) return;
  KAttn pa = attn_check(op, a);
  launch3(op, "pipec_attention_forward_f32", (unsigned)((a->T + 15) / 16), (unsigned)a->NH, (unsigned)a->B, 128, 1,
          (unsigned)((80 * a->HS + 32) * 4), ARGS(&out, &lse, &q, &k, &v, &pa));
}

/* as k_attention_decode: per beam, the new key and value into the cache
   (two copies), then the causal attention of one query over positions
   0..pos of the cache */
void d_attention_decode(float *out, float *lse, const float *q, const float *k, const float *v, float *kv, int pos, const KAttn *a) {
  const char *op = "d_attention_decode";
  dev(op);
  const int kvw = a->NH_kv * a->HS;
  const size_t beam = 2 * (size_t)a->Tk * (size_t)kvw;
  if (a->T != 1 || pos < 0 || pos >= a->Tk) fail(op, "needs T = 1 and 0 <= pos < Tk (T %d, pos %d, Tk %d)", a->T, pos, a->Tk);
  for (int b = 0; b < a->B; b++) {
    float *kc = kv + (size_t)b * beam, *vc = kc + (size_t)a->Tk * kvw;
    prt_dev_copy(g.d, (uint64_t)(uintptr_t)(kc + (size_t)pos * kvw), (uint64_t)(uintptr_t)(k + (size_t)b * a->kv_stride),
                 sizeof(float) * (size_t)kvw, what_of(op));
    prt_dev_copy(g.d, (uint64_t)(uintptr_t)(vc + (size_t)pos * kvw), (uint64_t)(uintptr_t)(v + (size_t)b * a->kv_stride),
                 sizeof(float) * (size_t)kvw, what_of(op));
    KAttn one = {1, 1, pos + 1, a->NH, a->NH_kv, a->HS, 0, a->q_stride, kvw, a->out_stride};
    d_attention_forward(out + (size_t)b * a->out_stride, lse + (size_t)b * a->NH, q + (size_t)b * a->q_stride, kc, vc, &one);
  }
}

/* dq (and delta = rowsum(dout * out), scratch) first, then dk, dv */
void d_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                          const float *q, const float *k, const float *v, const KAttn *a) {
  const char *op = "d_attention_backward";
  dev(op);
  if (a->B <= 0 || a->NH <= 0) return;
  KAttn pa = attn_check(op, a);
  float *delta = (float *)(uintptr_t)scratch(&g.delta, sizeof(float) * ((size_t)a->B * a->NH * a->T + 1), op);
  if (a->T > 0)
    launch3(op, "pipec_attention_backward_dq_f32", (unsigned)((a->T + 7) / 8), (unsigned)a->NH, (unsigned)a->B, 128, 1,
            (unsigned)((80 * a->HS + 64) * 4), ARGS(&dq, &delta, &dout, &out, &lse, &q, &k, &v, &pa));
  if (a->Tk > 0)
    launch3(op, "pipec_attention_backward_dkdv_f32", (unsigned)((a->Tk + 7) / 8), (unsigned)a->NH_kv, (unsigned)a->B,
            128, 1, (unsigned)((80 * a->HS + 128) * 4), ARGS(&dk, &dv, &dout, &lse, &delta, &q, &k, &v, &pa));
}

void d_crossentropy_forward_backward(float *losses, float *dlogits, const float *logits, const int32_t *targets, int N,
                                     int V, float dloss_scale) {
  const char *op = "d_crossentropy_forward_backward";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_crossentropy_forward_backward_f32", (unsigned)N, 512,
         ARGS(&losses, &dlogits, &logits, &targets, &N, &V, &dloss_scale));
}

/* ------------------------------------------------------------- vocabulary parallel */

void d_vp_embedding_forward(float *out, const int32_t *ids, const float *W, int N, int C, int64_t r0, int64_t rows) {
  const char *op = "d_vp_embedding_forward";
  dev(op);
  if (N <= 0 || C <= 0) return;
  long n = N;
  int v0 = (int)r0, nr = (int)rows;
  long gr = ((long)N * C + 255) / 256;
  launch(op, "pipec_vp_embedding_forward_f32", (unsigned)(gr > 8 * DEV_SMS ? 8 * DEV_SMS : gr), 256,
         ARGS(&out, &ids, &W, &n, &C, &v0, &nr));
}

void d_vp_embedding_backward(float *dW, const float *dout, const int32_t *ids, int N, int C, int64_t r0, int64_t rows) {
  const char *op = "d_vp_embedding_backward";
  dev(op);
  if (N <= 0 || C <= 0) return;
  long n = N;
  int v0 = (int)r0, nr = (int)rows;
  long gr = ((long)N * C + 255) / 256;
  launch(op, "pipec_vp_embedding_backward_f32", (unsigned)(gr > 8 * DEV_SMS ? 8 * DEV_SMS : gr), 256,
         ARGS(&dW, &dout, &ids, &n, &C, &v0, &nr));
}

void d_vp_rowmax(float *rowmax, const float *logits, int N, int V) {
  const char *op = "d_vp_rowmax";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_vp_rowmax_f32", warp_rows(N), 256, ARGS(&rowmax, &logits, &N, &V));
}

void d_vp_sumexp(float *st, const float *logits, const int32_t *targets, const float *M, int N, int V, int64_t v0) {
  const char *op = "d_vp_sumexp";
  dev(op);
  if (N <= 0) return;
  int o = (int)v0;
  launch(op, "pipec_vp_sumexp_f32", warp_rows(N), 256, ARGS(&st, &logits, &targets, &M, &N, &V, &o));
}

/* pipec_vp_loss: one thread per row */
void d_vp_xent_forward(float *losses, const int32_t *targets, const float *M, const float *S, int N) {
  const char *op = "d_vp_xent_forward";
  dev(op);
  if (N <= 0) return;
  launch(op, "pipec_vp_loss", (unsigned)((N + 255) / 256), 256, ARGS(&losses, &M, &S, &targets, &N));
}

void d_vp_xent_backward(float *dlogits, const float *logits, const int32_t *targets, const float *M, const float *S, int N,
                        int V, int64_t v0, float scale) {
  const char *op = "d_vp_xent_backward";
  dev(op);
  if (N <= 0) return;
  int o = (int)v0;
  launch(op, "pipec_vp_xent_backward_f32", warp_rows(N), 256,
         ARGS(&dlogits, &logits, &targets, &M, &S, &N, &V, &o, &scale));
}

/* ------------------------------------------------------------- optimizer */

/* fp32 parameters are their own master weights: master = NULL */
void d_adamw(float *param, const float *grad, float *m, float *v, long n, float lr, float beta1, float beta2, float eps,
             float weight_decay, int t) {
  const char *op = "d_adamw";
  dev(op);
  if (n <= 0) return;
  float *master = NULL;
  launch(op, "pipec_adamw_f32", grid_stride(n, 8), 256,
         ARGS(&param, &master, &grad, &m, &v, &n, &lr, &beta1, &beta2, &eps, &weight_decay, &t));
}

/* partial sums per block (grid <= 4 * SMs, at most 1024), one finishing
 * block, then the one double down to the host */
double d_sumsq(const float *x, long n) {
  const char *op = "d_sumsq";
  PrtDevice *d = dev(op);
  if (n <= 0) return 0.0;
  int G = (int)grid_stride(n, 4);
  if (G > 1024) G = 1024;
  double *part = (double *)(uintptr_t)scratch(&g.sumsq, sizeof(double) * ((size_t)G + 1), op);
  double *out = part + G;
  launch(op, "pipec_sumsq_partial_f32", (unsigned)G, 256, ARGS(&part, &x, &n));
  launch(op, "pipec_sumsq_finish", 1, 1024, ARGS(&out, &part, &G));
  double r = 0.0;
  prt_dev_download(d, &r, DPTR(out), sizeof r, what_of(op));
  return r;
}
