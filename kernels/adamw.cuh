/* adamw.cuh — AdamW with decoupled weight decay (k_adamw in
 * lib/kernels.h), step t >= 1:
 *   m = beta1 m + (1 - beta1) g        v = beta2 v + (1 - beta2) g^2
 *   p -= lr * (m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * p)
 * (the same update as PyTorch's AdamW: p *= 1 - lr wd, then the Adam step).
 *
 * Needs before it: common.cuh.
 *
 * Shapes: param, grad (n) of T; m, v (n) fp32 always. master (n, fp32) may
 * be NULL; when given it is the weight that is updated and param receives
 * its rounding to T: bf16 training keeps fp32 master weights, or updates
 * smaller than half a bf16 ulp would be lost.
 */
#ifndef PIPEC_ADAMW_CUH
#define PIPEC_ADAMW_CUH

/* Grid-stride, block 256, grid = min(ceil(n / (256 * V)), 8 * SMs) with
 * V = 16 / sizeof(T): bandwidth bound (five streams per element), so each
 * thread moves 16-byte chunks of param and grad (and 2 x 16 bytes of each
 * fp32 stream for bf16). */
template <typename T>
__device__ void adamw_kernel(T *param, float *master, const T *grad, float *m, float *v, long n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, int t) {
  constexpr int V = vec_width<T>();
  const float bc1 = 1.f - powf(beta1, (float)t), bc2 = 1.f - powf(beta2, (float)t);
  const Chunking ch = chunking_aligned(param, master, grad, m, v);
  for_chunks<V>(n, ch, grid_thread_id(), grid_thread_count(), [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float p[W], g[W], mm[W], vv[W];
    if (master)
      load_f<W>(master + i, p);
    else
      load_f<W>(param + i, p);
    load_f<W>(grad + i, g);
    load_f<W>(m + i, mm);
    load_f<W>(v + i, vv);
#pragma unroll
    for (int k = 0; k < W; k++) {
      mm[k] = beta1 * mm[k] + (1.f - beta1) * g[k];
      vv[k] = beta2 * vv[k] + (1.f - beta2) * g[k] * g[k];
      const float mhat = mm[k] / bc1, vhat = vv[k] / bc2;
      p[k] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p[k]);
    }
    store_f<W>(m + i, mm);
    store_f<W>(v + i, vv);
    if (master) store_f<W>(master + i, p);
    store_f<W>(param + i, p);
  });
}

#define PIPEC_ADAMW_ENTRIES(T, SFX)                                                                                    \
  extern "C" __global__ void pipec_adamw_##SFX(T *param, float *master, const T *grad, float *m, float *v, long n,     \
                                               float lr, float beta1, float beta2, float eps, float weight_decay,      \
                                               int t) {                                                                \
    adamw_kernel<T>(param, master, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, t);                             \
  }

#endif /* PIPEC_ADAMW_CUH */
