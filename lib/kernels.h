/* kernels.h — the CPU kernels of pipec's primitive operations, forward and
 * backward, fp32, multi-threaded (OpenMP) and vectorisable; GEMMs through
 * the BLAS (cblas_sgemm). The CUDA kernels (the .cuh files in kernels/, compiled with
 * NVRTC) implement the same operations with the same layouts, and
 * tests/test_kernels.c checks both against a double-precision reference.
 *
 * Layouts (row-major; B batch, T time, C channels, NH heads, V vocab):
 *   activations (B*T, C); linear weight (OC, C) = [out, in] as llm.c and
 *   PyTorch; qkv (B*T, 3C) with columns q | k | v, head h at h*C/NH.
 * Every backward ACCUMULATES (+=) into parameter gradients (dweight, dbias,
 * dwte, dwpe) and WRITES (=) input gradients, unless its comment says so.
 * Elementwise ops, activations, dropout, scale and softmax may run in place
 * (out == inp); dlogits may be the logits buffer. Parameter-gradient sums
 * are split by column, so results are the same bits for any thread count.
 */
#ifndef PIPEC_KERNELS_H
#define PIPEC_KERNELS_H
#include <stdint.h>

/* out (N, OC) = inp (N, C) @ weight(OC, C)^T + bias (OC) (bias may be NULL) */
void k_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
/* dinp (N, C) = dout @ weight (written; may be NULL to skip) */
void k_matmul_backward_input(float *dinp, const float *dout, const float *weight, int N, int C, int OC);
/* dweight (OC, C) += dout^T @ inp; dbias (OC) += sum over N of dout (dbias may be NULL) */
void k_matmul_backward_weight(float *dweight, float *dbias, const float *dout, const float *inp, int N, int C, int OC);

/* out (B*T, C) = wte[tokens] + wpe[t] (wpe may be NULL: no positions) */
void k_embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int B, int T, int C);
/* dwte += scatter of dout by token; dwpe += sum over B (dwpe may be NULL) */
void k_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int B, int T, int C);

/* layernorm over the last dim; mean, rstd (N) saved for backward; bias may be NULL */
void k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias,
                         int N, int C, float eps);
void k_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, const float *mean, const float *rstd, int N, int C);
/* fused residual add + layernorm: resid_out = a + b, out = layernorm(resid_out) */
void k_residual_layernorm_forward(float *resid_out, float *out, float *mean, float *rstd, const float *a, const float *b,
                                  const float *weight, const float *bias, int N, int C, float eps);

/* rmsnorm: out = inp * rstd * weight, rstd (N) saved */
void k_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
void k_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                        const float *rstd, int N, int C);

/* elementwise, n elements; backward writes dinp = dout * f'(inp) */
typedef enum { K_GELU_TANH, K_GELU_ERF, K_RELU, K_SILU } KAct;
void k_act_forward(float *out, const float *inp, long n, KAct act);
void k_act_backward(float *dinp, const float *dout, const float *inp, long n, KAct act);
/* fused bias + activation over (N, C): out = act(inp + bias); pre-activation not stored */
void k_bias_act_forward(float *out, const float *inp, const float *bias, int N, int C, KAct act);
void k_add(float *out, const float *a, const float *b, long n);        /* out = a + b */
void k_mul(float *out, const float *a, const float *b, long n);        /* out = a * b */
void k_accumulate(float *dst, const float *src, long n);                 /* dst += src */

/* dropout with a counter-based RNG (Philox-4x32-10): element i of a call
 * with (seed, offset) keeps with probability 1-p and scales by 1/(1-p);
 * the same (seed, offset, i) gives the same mask on CPU and GPU. offset
 * counts Philox calls (4 elements each): counter = (lo32(g), hi32(g), 0, 0)
 * with g = offset + i/4, key = (lo32(seed), hi32(seed)), word i%4, keep iff
 * word >= p * 2^32. A following call starts at offset + ceil(n/4). */
void k_dropout_forward(float *out, const float *inp, long n, float p, uint64_t seed, uint64_t offset);
void k_dropout_backward(float *dinp, const float *dout, long n, float p, uint64_t seed, uint64_t offset);

/* softmax over the last dim of (N, C) */
void k_softmax_forward(float *out, const float *inp, int N, int C);
void k_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C);

/* multi-head attention with online softmax (the T x T matrix is never
 * stored): q (B, T, NH, HS), k and v (B, Tk, NH_kv, HS) read from strided
 * rows; out (B*T, C); lse (B, NH, T) log-sum-exp saved for backward.
 * q_stride etc. are the row strides in floats (3C for a packed qkv); dout
 * has out_stride. causal needs Tk == T (query t sees keys 0..t). */
typedef struct KAttn {
  int B, T, Tk, NH, NH_kv, HS;
  int causal;
  int q_stride, kv_stride, out_stride;
} KAttn;
void k_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const KAttn *a);
/* one decoding step with a KV cache: for each of a->B rows (beams), the
 * new key and value (k, v with a->kv_stride) go to position pos of that
 * row's cache (kv + b * 2 * a->Tk * kvw: keys [Tk][kvw], then values
 * [Tk][kvw], kvw = NH_kv * HS), then the row's query (q, a->q_stride)
 * attends to cache positions 0..pos. a->T must be 1 and pos < a->Tk.
 * lse: a->B * NH floats of scratch. Same arithmetic as k_attention_forward
 * for the last row of a causal sequence of pos + 1 tokens. */
void k_attention_decode(float *out, float *lse, const float *q, const float *k, const float *v, float *kv, int pos, const KAttn *a);
/* dq, dk, dv written with the same strides as q, k, v */
void k_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                          const float *q, const float *k, const float *v, const KAttn *a);

/* fused softmax + cross-entropy over (N, V) logits without materialising
 * probabilities: losses (N) = -log softmax(logits)[target]; if dlogits is
 * not NULL it receives d(mean loss * scale)/dlogits, i.e.
 * (softmax - onehot) * dloss_scale; targets < 0 are ignored (zero loss and
 * gradient) */
void k_crossentropy_forward_backward(float *losses, float *dlogits, const float *logits, const int32_t *targets, int N,
                                     int V, float dloss_scale);

/* ---- small ops the op graph uses around the kernels above ---- */
void k_sub(float *out, const float *a, const float *b, long n);       /* out = a - b */
void k_copy(float *out, const float *inp, long n);                     /* out = inp (may alias) */
void k_scale_copy(float *out, const float *inp, long n, float s);      /* out = inp * s */
void k_positions(int32_t *out, int N, int T);                          /* out[r] = r % T */
void k_positions_at(int32_t *out, int N, int pos);                     /* out[r] = pos */
/* out (N, C) = inp + bias (C), one row-parallel linear's bias after its all-reduce */
void k_bias_add(float *out, const float *inp, const float *bias, int N, int C);
/* dbias (C) += column sums of dout (N, C) */
void k_bias_backward(float *dbias, const float *dout, int N, int C);

/* Vocabulary-parallel embedding and cross-entropy (Megatron): this rank
 * holds rows [r0, r0 + rows) of the vocabulary. */
/* out (N, C) = W[id - r0] for ids this rank holds, else 0 */
void k_vp_embedding_forward(float *out, const int32_t *ids, const float *W, int N, int C, int64_t r0, int64_t rows);
/* dW += rows of dout for ids this rank holds */
void k_vp_embedding_backward(float *dW, const float *dout, const int32_t *ids, int N, int C, int64_t r0, int64_t rows);
/* rowmax (N) = max over this rank's V logits */
void k_vp_rowmax(float *rowmax, const float *logits, int N, int V);
/* st (N, 2) = [sum exp(logit - M), the target's logit if this rank holds it else 0]; M the global row max */
void k_vp_sumexp(float *st, const float *logits, const int32_t *targets, const float *M, int N, int V, int64_t v0);
/* losses (N) from the all-reduced max M and sums S (N, 2); 0 where the target is < 0 */
void k_vp_xent_forward(float *losses, const int32_t *targets, const float *M, const float *S, int N);
/* dlogits (N, V) = (softmax - onehot) * scale for this rank's slice */
void k_vp_xent_backward(float *dlogits, const float *logits, const int32_t *targets, const float *M, const float *S, int N,
                        int V, int64_t v0, float scale);

/* AdamW with decoupled weight decay, step t >= 1 */
void k_adamw(float *param, const float *grad, float *m, float *v, long n, float lr, float beta1, float beta2, float eps,
             float weight_decay, int t);
/* sum of squares of x, in double (for global-norm clipping) */
double k_sumsq(const float *x, long n);
void k_scale(float *x, long n, float s);

/* Threads used by the kernels (OpenMP); 0 = the OpenMP default. GEMMs are
 * split over these threads, each part a single-threaded BLAS call, so the
 * BLAS's own pool stays at 1 thread (two spinning pools fight for cores). */
void k_set_threads(int n);

#endif
