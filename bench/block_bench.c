/* block_bench.c — forward + backward of one GPT-2 block on the CPU with the
 * kernels of lib/kernels_cpu.c, against cblas_sgemm alone on the same GEMMs.
 *
 * Build and run (from the repository root):
 *   cc -O3 -march=native -fopenmp -I. bench/block_bench.c lib/kernels_cpu.c -lopenblas -lm -o /tmp/block_bench
 *   /tmp/block_bench [iterations, default 30]
 *
 * The block (B=4, T=64, C=768, NH=12, HS=64, N=B*T=256), as GPT-2:
 *   ln1 = layernorm(x); qkv = ln1 @ Wqkv^T + b (768 -> 2304);
 *   atty = causal attention(qkv), 12 heads; attproj = atty @ Wproj^T + b;
 *   resid2 = x + attproj; ln2 = layernorm(resid2)   (one fused kernel);
 *   fch = ln2 @ Wfc^T + b (768 -> 3072); fch_gelu = gelu_tanh(fch);
 *   fcproj = fch_gelu @ Wfcproj^T + b (3072 -> 768); out = resid2 + fcproj;
 * then the backward of all of it from a random dout (every parameter
 * gradient and dx).
 * FLOPs counted: 2*N*C*OC per matmul forward and twice that backward;
 * attention 4*B*NH*T*T*HS/2 forward (causal: half the T x T scores) and
 * twice that backward; layernorms and elementwise ops count 0.
 * The sgemm rate: the same 12 cblas_sgemm calls (the 4 forward NT GEMMs,
 * 4 NN input-gradient GEMMs, 4 TN weight-gradient GEMMs with beta = 1),
 * timed alone in the same process, each one plain cblas_sgemm with
 * OpenBLAS's own threads (as many as OpenMP has). The kernels instead split
 * each GEMM over the OpenMP threads, OpenBLAS at one thread (see
 * lib/kernels_cpu.c: two spinning thread pools halve the speed).
 * Prints the median and best of the iterations, a per-op breakdown and one
 * markdown table row for bench/RESULTS.md. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/kernels.h"

enum { B = 4, T = 64, C = 768, NH = 12, HS = C / NH, N = B * T };
#define EPS 1e-5f

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *buf(long n) { /* random in [-0.5, 0.5) * scale, deterministic */
  float *p = malloc(sizeof(float) * (size_t)n);
  if (!p) {
    fprintf(stderr, "block_bench: out of memory\n");
    exit(2);
  }
  static uint32_t s = 12345;
  for (long i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f;
  }
  return p;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* ---- the block ---- */

typedef struct {
  /* parameters and their gradients */
  float *ln1w, *ln1b;         /* (C) */
  float *qkvw, *qkvb;         /* (3C, C), (3C) */
  float *projw, *projb;       /* (C, C), (C) */
  float *ln2w, *ln2b;         /* (C) */
  float *fcw, *fcb;           /* (4C, C), (4C) */
  float *fcprojw, *fcprojb;   /* (C, 4C), (C) */
  float *dln1w, *dln1b, *dqkvw, *dqkvb, *dprojw, *dprojb, *dln2w, *dln2b, *dfcw, *dfcb, *dfcprojw, *dfcprojb;
  /* activations */
  float *x;                   /* (N, C) block input */
  float *ln1, *m1, *r1;       /* (N, C), (N), (N) */
  float *qkv;                 /* (N, 3C) */
  float *atty, *lse;          /* (N, C), (B, NH, T) */
  float *attproj, *resid2;    /* (N, C) */
  float *ln2, *m2, *r2;       /* (N, C), (N), (N) */
  float *fch, *fch_gelu;      /* (N, 4C) */
  float *fcproj, *out;        /* (N, C) */
  /* gradients of activations */
  float *dout, *dresid2, *dtmp, *dln2, *datty, *dln1, *dx; /* (N, C) */
  float *dfch_gelu, *dfch;    /* (N, 4C) */
  float *dqkv;                /* (N, 3C) */
} Block;

enum { OP_LN, OP_MATMUL, OP_ATTN, OP_GELU, OP_ADD, OP_COUNT };
static const char *op_name[OP_COUNT] = {"layernorm", "matmul", "attention", "gelu", "add"};
static double op_time[OP_COUNT];
static int timing_ops;

#define TIMED(op, call)                                  \
  do {                                                   \
    double t0_ = timing_ops ? now() : 0.0;               \
    call;                                                \
    if (timing_ops) op_time[op] += now() - t0_;          \
  } while (0)

static void block_forward_backward(Block *k) {
  const KAttn a = {B, T, T, NH, NH, HS, 1, 3 * C, 3 * C, C};
  /* forward */
  TIMED(OP_LN, k_layernorm_forward(k->ln1, k->m1, k->r1, k->x, k->ln1w, k->ln1b, N, C, EPS));
  TIMED(OP_MATMUL, k_matmul_forward(k->qkv, k->ln1, k->qkvw, k->qkvb, N, C, 3 * C));
  TIMED(OP_ATTN, k_attention_forward(k->atty, k->lse, k->qkv, k->qkv + C, k->qkv + 2 * C, &a));
  TIMED(OP_MATMUL, k_matmul_forward(k->attproj, k->atty, k->projw, k->projb, N, C, C));
  TIMED(OP_LN, k_residual_layernorm_forward(k->resid2, k->ln2, k->m2, k->r2, k->x, k->attproj, k->ln2w, k->ln2b, N, C,
                                            EPS));
  TIMED(OP_MATMUL, k_matmul_forward(k->fch, k->ln2, k->fcw, k->fcb, N, C, 4 * C));
  TIMED(OP_GELU, k_act_forward(k->fch_gelu, k->fch, (long)N * 4 * C, K_GELU_TANH));
  TIMED(OP_MATMUL, k_matmul_forward(k->fcproj, k->fch_gelu, k->fcprojw, k->fcprojb, N, 4 * C, C));
  TIMED(OP_ADD, k_add(k->out, k->resid2, k->fcproj, (long)N * C));
  /* backward: out = resid2 + fcproj */
  TIMED(OP_MATMUL, k_matmul_backward_weight(k->dfcprojw, k->dfcprojb, k->dout, k->fch_gelu, N, 4 * C, C));
  TIMED(OP_MATMUL, k_matmul_backward_input(k->dfch_gelu, k->dout, k->fcprojw, N, 4 * C, C));
  TIMED(OP_GELU, k_act_backward(k->dfch, k->dfch_gelu, k->fch, (long)N * 4 * C, K_GELU_TANH));
  TIMED(OP_MATMUL, k_matmul_backward_weight(k->dfcw, k->dfcb, k->dfch, k->ln2, N, C, 4 * C));
  TIMED(OP_MATMUL, k_matmul_backward_input(k->dln2, k->dfch, k->fcw, N, C, 4 * C));
  TIMED(OP_LN, k_layernorm_backward(k->dtmp, k->dln2w, k->dln2b, k->dln2, k->resid2, k->ln2w, k->m2, k->r2, N, C));
  TIMED(OP_ADD, k_add(k->dresid2, k->dout, k->dtmp, (long)N * C));
  /* resid2 = x + attproj */
  TIMED(OP_MATMUL, k_matmul_backward_weight(k->dprojw, k->dprojb, k->dresid2, k->atty, N, C, C));
  TIMED(OP_MATMUL, k_matmul_backward_input(k->datty, k->dresid2, k->projw, N, C, C));
  TIMED(OP_ATTN, k_attention_backward(k->dqkv, k->dqkv + C, k->dqkv + 2 * C, k->datty, k->atty, k->lse, k->qkv,
                                      k->qkv + C, k->qkv + 2 * C, &a));
  TIMED(OP_MATMUL, k_matmul_backward_weight(k->dqkvw, k->dqkvb, k->dqkv, k->ln1, N, C, 3 * C));
  TIMED(OP_MATMUL, k_matmul_backward_input(k->dln1, k->dqkv, k->qkvw, N, C, 3 * C));
  TIMED(OP_LN, k_layernorm_backward(k->dtmp, k->dln1w, k->dln1b, k->dln1, k->x, k->ln1w, k->m1, k->r1, N, C));
  TIMED(OP_ADD, k_add(k->dx, k->dresid2, k->dtmp, (long)N * C));
}

/* the same GEMMs, cblas_sgemm alone: {rows, in, out} of the four linears */
static const int gemm_shape[4][2] = {{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}};

static void gemms_only(Block *k) {
  const float *inp[4] = {k->ln1, k->atty, k->ln2, k->fch_gelu};
  const float *w[4] = {k->qkvw, k->projw, k->fcw, k->fcprojw};
  float *outp[4] = {k->qkv, k->attproj, k->fch, k->fcproj};
  float *dw[4] = {k->dqkvw, k->dprojw, k->dfcw, k->dfcprojw};
  float *dinp[4] = {k->dln1, k->datty, k->dln2, k->dfch_gelu};
  const float *dout[4] = {k->dqkv, k->dresid2, k->dfch, k->dout};
  for (int g = 0; g < 4; g++) { /* forward: out (N, OC) = inp (N, Ci) @ w (OC, Ci)^T */
    int Ci = gemm_shape[g][0], OC = gemm_shape[g][1];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, Ci, 1.0f, inp[g], Ci, w[g], Ci, 0.0f, outp[g], OC);
  }
  for (int g = 3; g >= 0; g--) { /* backward: dinp = dout @ w; dw += dout^T @ inp */
    int Ci = gemm_shape[g][0], OC = gemm_shape[g][1];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, Ci, N, 1.0f, dout[g], OC, inp[g], Ci, 1.0f, dw[g], Ci);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Ci, OC, 1.0f, dout[g], OC, w[g], Ci, 0.0f, dinp[g], Ci);
  }
}

/* median and best of `iters` timed calls of f */
static void time_it(void (*f)(Block *), Block *k, int iters, double *median, double *best) {
  double *t = malloc(sizeof(double) * (size_t)iters);
  for (int i = 0; i < 3; i++) f(k); /* warm up: pages, thread pools */
  for (int i = 0; i < iters; i++) {
    double t0 = now();
    f(k);
    t[i] = now() - t0;
  }
  qsort(t, (size_t)iters, sizeof(double), cmp_double);
  *median = t[iters / 2];
  *best = t[0];
  free(t);
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 30;
  if (iters < 1) iters = 1;
  Block k;
  k.ln1w = buf(C), k.ln1b = buf(C), k.qkvw = buf(3L * C * C), k.qkvb = buf(3 * C), k.projw = buf((long)C * C);
  k.projb = buf(C), k.ln2w = buf(C), k.ln2b = buf(C), k.fcw = buf(4L * C * C), k.fcb = buf(4 * C);
  k.fcprojw = buf(4L * C * C), k.fcprojb = buf(C);
  for (int i = 0; i < C; i++) k.ln1w[i] += 1.0f, k.ln2w[i] += 1.0f;
  k.dln1w = buf(C), k.dln1b = buf(C), k.dqkvw = buf(3L * C * C), k.dqkvb = buf(3 * C), k.dprojw = buf((long)C * C);
  k.dprojb = buf(C), k.dln2w = buf(C), k.dln2b = buf(C), k.dfcw = buf(4L * C * C), k.dfcb = buf(4 * C);
  k.dfcprojw = buf(4L * C * C), k.dfcprojb = buf(C);
  k.x = buf((long)N * C), k.ln1 = buf((long)N * C), k.m1 = buf(N), k.r1 = buf(N), k.qkv = buf(3L * N * C);
  k.atty = buf((long)N * C), k.lse = buf((long)B * NH * T), k.attproj = buf((long)N * C), k.resid2 = buf((long)N * C);
  k.ln2 = buf((long)N * C), k.m2 = buf(N), k.r2 = buf(N), k.fch = buf(4L * N * C), k.fch_gelu = buf(4L * N * C);
  k.fcproj = buf((long)N * C), k.out = buf((long)N * C);
  k.dout = buf((long)N * C), k.dresid2 = buf((long)N * C), k.dtmp = buf((long)N * C), k.dln2 = buf((long)N * C);
  k.datty = buf((long)N * C), k.dln1 = buf((long)N * C), k.dx = buf((long)N * C);
  k.dfch_gelu = buf(4L * N * C), k.dfch = buf(4L * N * C), k.dqkv = buf(3L * N * C);
  for (long i = 0; i < (long)N * C; i++) k.x[i] *= 20.0f; /* activations of order 1 */

  double mm_fwd = 0.0;
  for (int g = 0; g < 4; g++) mm_fwd += 2.0 * N * gemm_shape[g][0] * gemm_shape[g][1];
  const double att_fwd = 4.0 * B * NH * T * T * HS / 2.0;
  const double flops_block = 3.0 * mm_fwd + 3.0 * att_fwd, flops_gemm = 3.0 * mm_fwd;

  const int nthreads = omp_get_max_threads();
  double blk_med, blk_best, gemm_med, gemm_best;
  time_it(block_forward_backward, &k, iters, &blk_med, &blk_best);
  timing_ops = 1; /* one more pass per iteration, each op timed on its own */
  for (int i = 0; i < iters; i++) block_forward_backward(&k);
  timing_ops = 0;
  /* the reference: plain cblas_sgemm with OpenBLAS's own threads, as many as
   * OpenMP's; last, as OpenBLAS's threads keep spinning after it */
  openblas_set_num_threads(nthreads);
  time_it(gemms_only, &k, iters, &gemm_med, &gemm_best);
  const int blas_threads = openblas_get_num_threads();

  printf("GPT-2 block forward+backward, B=%d T=%d C=%d NH=%d; %d OpenMP threads; %d iterations\n", B, T, C, NH,
         nthreads, iters);
  printf("  block: %.3f GFLOP (GEMMs %.3f, attention %.3f)  median %.2f ms  best %.2f ms  -> %.1f GFLOP/s (best %.1f)\n",
         flops_block * 1e-9, flops_gemm * 1e-9, 3.0 * att_fwd * 1e-9, blk_med * 1e3, blk_best * 1e3,
         flops_block / blk_med * 1e-9, flops_block / blk_best * 1e-9);
  printf("  cblas_sgemm alone, %d OpenBLAS threads (same 12 GEMMs): median %.2f ms  best %.2f ms  -> %.1f GFLOP/s (best %.1f)\n", blas_threads,
         gemm_med * 1e3, gemm_best * 1e3, flops_gemm / gemm_med * 1e-9, flops_gemm / gemm_best * 1e-9);
  printf("  block / sgemm: %.2f (medians), %.2f (bests)\n", gemm_med / blk_med * flops_block / flops_gemm,
         gemm_best / blk_best * flops_block / flops_gemm);
  double total = 0.0;
  for (int o = 0; o < OP_COUNT; o++) total += op_time[o];
  printf("  breakdown (ms per block, timed op by op):");
  for (int o = 0; o < OP_COUNT; o++) printf(" %s %.2f (%.0f%%)", op_name[o], op_time[o] / iters * 1e3, 100.0 * op_time[o] / total);
  printf("\n\n");
  printf("| shape | threads | block ms (median) | block GFLOP/s | sgemm GFLOP/s | block / sgemm |\n");
  printf("|---|---|---|---|---|---|\n");
  printf("| B=%d T=%d C=%d NH=%d | %d | %.2f | %.1f | %.1f | %.2f |\n", B, T, C, NH, nthreads, blk_med * 1e3,
         flops_block / blk_med * 1e-9, flops_gemm / gemm_med * 1e-9, (flops_block / blk_med) / (flops_gemm / gemm_med));
  return 0;
}
