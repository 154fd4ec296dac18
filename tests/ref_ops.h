/* ref_ops.h — plain double-precision references of the operations of
 * lib/kernels.h, for tests only: naive loops, full T x Tk score matrices,
 * Jacobians written out where that is the obvious way. Same layouts as
 * kernels.h; every function here WRITES (=) all its outputs, gradients
 * included (the tests add the accumulate-into part themselves). */
#ifndef PIPEC_TESTS_REF_OPS_H
#define PIPEC_TESTS_REF_OPS_H
#include <stdint.h>

#include "lib/kernels.h"

/* out (N, OC) = inp (N, C) @ w (OC, C)^T + bias (OC, may be NULL) */
void ref_matmul_forward(double *out, const double *inp, const double *w, const double *bias, int N, int C, int OC);
/* dinp (N, C), dw (OC, C), dbias (OC) of L = sum(out * dout); any may be NULL */
void ref_matmul_backward(double *dinp, double *dw, double *dbias, const double *dout, const double *inp,
                         const double *w, int N, int C, int OC);

/* out (B*T, C) = wte (V, C)[tok] + wpe (T, C)[t]; wpe may be NULL */
void ref_embedding_forward(double *out, const int32_t *tok, const double *wte, const double *wpe, int B, int T, int C);
/* dwte (V, C), dwpe (T, C, may be NULL) */
void ref_embedding_backward(double *dwte, double *dwpe, const double *dout, const int32_t *tok, int V, int B, int T,
                            int C);

/* layernorm of rows of (N, C); mean, rstd (N); bias may be NULL */
void ref_layernorm_forward(double *out, double *mean, double *rstd, const double *inp, const double *w,
                           const double *bias, int N, int C, double eps);
/* through the Jacobian of each row; dbias may be NULL */
void ref_layernorm_backward(double *dinp, double *dw, double *dbias, const double *dout, const double *inp,
                            const double *w, int N, int C, double eps);

void ref_rmsnorm_forward(double *out, double *rstd, const double *inp, const double *w, int N, int C, double eps);
void ref_rmsnorm_backward(double *dinp, double *dw, const double *dout, const double *inp, const double *w, int N,
                          int C, double eps);

/* the activation and its derivative */
double ref_act(double x, KAct act);
double ref_act_grad(double x, KAct act);

void ref_softmax_forward(double *out, const double *inp, int N, int C);
void ref_softmax_backward(double *dinp, const double *dout, const double *out, int N, int C);

/* attention with kernels.h's strided layouts; lse (B, NH, T) */
void ref_attention_forward(double *out, double *lse, const double *q, const double *k, const double *v,
                           const KAttn *a);
/* dq, dk, dv with the strides of q, k, v; only the head columns are written */
void ref_attention_backward(double *dq, double *dk, double *dv, const double *dout, const double *q, const double *k,
                            const double *v, const KAttn *a);

/* losses (N); dlogits (N, V) = d(scale * sum of losses)/dlogits (may be NULL); targets < 0 ignored */
void ref_crossentropy(double *losses, double *dlogits, const double *logits, const int32_t *targets, int N, int V,
                      double scale);

/* one AdamW step t (PyTorch's torch.optim.AdamW) */
void ref_adamw(double *param, const double *grad, double *m, double *v, long n, double lr, double beta1,
               double beta2, double eps, double weight_decay, int t);

/* Philox-4x32-10 as Random123 defines it */
void ref_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* 1 if dropout keeps element i of a call with (p, seed, offset) — the layout
 * documented in lib/kernels_cpu.c */
int ref_dropout_keep(long i, float p, uint64_t seed, uint64_t offset);

#endif
