/* kernels_dev.h — the device versions of the CPU kernels of lib/kernels.h,
 * for stage programs whose arena lives in GPU memory.
 *
 * For every k_X of lib/kernels.h (except k_set_threads) there is a d_X with the same C signature and the
 * same semantics (what is accumulated, what is written, which arguments may
 * alias or be NULL), whose pointer arguments are device addresses (a
 * CUdeviceptr cast to float * or int32_t *). d_X enqueues the CUDA kernels
 * of the kernels/ headers (the library entry points pipec_<op>_f32 and the untyped
 * ones, as PIPEC_<LAYER>_ENTRIES(float, f32) and
 * PIPEC_<LAYER>_UNTYPED_ENTRIES() define them), the GEMMs (cuBLASLt, fp32),
 * copies and memsets on the device's compute stream through
 * runtime/device.h, with the launch geometry each header's comments give.
 * Nothing waits on the host except d_sumsq, which returns a number: it
 * reduces on the device and downloads one double.
 *
 * Results match the CPU kernels to rounding (sums in another order), except
 * where a kernel's comment says otherwise: the embedding gradients of
 * tokens are accumulated with atomics (their order, so their last bits,
 * varies run to run).
 */
#ifndef PIPEC_RT_KERNELS_DEV_H
#define PIPEC_RT_KERNELS_DEV_H
#include <stdint.h>

#include "lib/kernels.h"
#include "runtime/device.h"

/* The device and the loaded kernel library every d_X uses (process-global:
 * one device per process). Scratch (column-sum and sum-of-squares
 * partials, attention's delta) is allocated on first use and grown, never
 * per call; prt_dev_kernels_bind(NULL, NULL) frees it (call it before
 * prt_device_close; binding another device forgets it instead). */
void prt_dev_kernels_bind(PrtDevice *d, PrtModule *lib);
/* The caller's name for what is running (a stage and .pipe module, e.g.
 * "stage 1 layers.3.attn"): every launch's `what`, which error lines
 * print, is "<what>: d_X" from then on, or just "d_X" when what is NULL or
 * empty. The text is copied. */
void prt_dev_kernels_what(const char *what);
/* The GEMMs' arithmetic: PRT_GEMM_F32 (the default) or PRT_GEMM_TF32 /
 * PRT_GEMM_F32_FAST_BF16 (fp32 storage, the tensor cores' rounding of the
 * inputs). */
void prt_dev_kernels_gemm(int dtype);

void d_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
void d_matmul_backward_input(float *dinp, const float *dout, const float *weight, int N, int C, int OC);
void d_matmul_backward_weight(float *dweight, float *dbias, const float *dout, const float *inp, int N, int C, int OC);

void d_embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int B, int T, int C);
void d_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int B, int T, int C);

void d_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias,
                         int N, int C, float eps);
void d_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, const float *mean, const float *rstd, int N, int C);
void d_residual_layernorm_forward(float *resid_out, float *out, float *mean, float *rstd, const float *a, const float *b,
                                  const float *weight, const float *bias, int N, int C, float eps);

void d_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
void d_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                        const float *rstd, int N, int C);

void d_act_forward(float *out, const float *inp, long n, KAct act);
void d_act_backward(float *dinp, const float *dout, const float *inp, long n, KAct act);
void d_bias_act_forward(float *out, const float *inp, const float *bias, int N, int C, KAct act);
void d_add(float *out, const float *a, const float *b, long n);
void d_mul(float *out, const float *a, const float *b, long n);
void d_accumulate(float *dst, const float *src, long n);

void d_dropout_forward(float *out, const float *inp, long n, float p, uint64_t seed, uint64_t offset);
void d_dropout_backward(float *dinp, const float *dout, long n, float p, uint64_t seed, uint64_t offset);

void d_softmax_forward(float *out, const float *inp, int N, int C);
void d_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C);

/* head size at most 128 (PIPEC_ATTN_MAX_HS of kernels/attention.cuh) */
void d_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const KAttn *a);
void d_attention_decode(float *out, float *lse, const float *q, const float *k, const float *v, float *kv, int pos, const KAttn *a);
void d_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                          const float *q, const float *k, const float *v, const KAttn *a);

void d_crossentropy_forward_backward(float *losses, float *dlogits, const float *logits, const int32_t *targets, int N,
                                     int V, float dloss_scale);

void d_sub(float *out, const float *a, const float *b, long n);
void d_copy(float *out, const float *inp, long n);
void d_scale_copy(float *out, const float *inp, long n, float s);
void d_positions(int32_t *out, int N, int T);
void d_positions_at(int32_t *out, int N, int pos);
void d_bias_add(float *out, const float *inp, const float *bias, int N, int C);
void d_bias_backward(float *dbias, const float *dout, int N, int C);

void d_vp_embedding_forward(float *out, const int32_t *ids, const float *W, int N, int C, int64_t r0, int64_t rows);
void d_vp_embedding_backward(float *dW, const float *dout, const int32_t *ids, int N, int C, int64_t r0, int64_t rows);
void d_vp_rowmax(float *rowmax, const float *logits, int N, int V);
void d_vp_sumexp(float *st, const float *logits, const int32_t *targets, const float *M, int N, int V, int64_t v0);
void d_vp_xent_forward(float *losses, const int32_t *targets, const float *M, const float *S, int N);
void d_vp_xent_backward(float *dlogits, const float *logits, const int32_t *targets, const float *M, const float *S, int N,
                        int V, int64_t v0, float scale);

void d_adamw(float *param, const float *grad, float *m, float *v, long n, float lr, float beta1, float beta2, float eps,
             float weight_decay, int t);
/* waits for the compute stream (the result is downloaded) */
double d_sumsq(const float *x, long n);
void d_scale(float *x, long n, float s);

#endif
