/* crossentropy.cuh — fused softmax + cross-entropy + its gradient over
 * (N, V) logits, with no probabilities stored
 * (k_crossentropy_forward_backward in lib/kernels.h).
 *
 * Needs before it: common.cuh.
 *
 * losses (N, fp32)  = logsumexp(logits[n]) - logits[n][target[n]]
 * dlogits (N, V, T) = (softmax(logits[n]) - onehot(target[n])) * dloss_scale
 *                     (written; skipped when dlogits is NULL)
 * Rows whose target is < 0 (or >= V) are ignored: loss 0, gradient 0.
 * dlogits may be logits: the gradient overwrites the logits in place (the
 * largest activation of a GPT, so this saves a V-wide buffer).
 */
#ifndef PIPEC_CROSSENTROPY_CUH
#define PIPEC_CROSSENTROPY_CUH

/* One block per row, block 512, grid N: a row is the vocabulary (50257 for
 * GPT-2), long enough for 16 warps to each stream many 16-byte chunks; the
 * row is read twice (online max + sum, then the gradient) and written
 * once. */
template <typename T>
__device__ void crossentropy_forward_backward(float *losses, T *dlogits, const T *logits, const int *targets, int N,
                                              int Vn, float dloss_scale) {
  constexpr int V = vec_width<T>();
  const long row = blockIdx.x;
  if (row >= N) return; /* the whole block */
  const T *x_row = logits + row * Vn;
  T *dx_row = dlogits ? dlogits + row * Vn : nullptr;
  const int target = targets[row];
  const bool ignored = target < 0 || target >= Vn;
  const Chunking ch = chunking(x_row, dx_row);

  /* read before any thread may overwrite the row (the barriers in
   * block_combine order this read before every write below) */
  const float x_target = ignored ? 0.f : to_float(x_row[target]);

  OnlineSoftmax sm;
  if (!ignored) {
    for_chunks<V>(Vn, ch, threadIdx.x, blockDim.x, [&](long i, auto w) {
      constexpr int W = decltype(w)::value;
      float x[W];
      load_f<W>(x_row + i, x);
#pragma unroll
      for (int k = 0; k < W; k++) sm.add(x[k]);
    });
  }
  sm.block_combine(); /* every thread takes part (ignored is block-uniform) */
  const float lse = sm.m + logf(sm.s);
  if (threadIdx.x == 0) losses[row] = ignored ? 0.f : lse - x_target;
  if (!dx_row) return;

  for_chunks<V>(Vn, ch, threadIdx.x, blockDim.x, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    if (ignored) {
#pragma unroll
      for (int k = 0; k < W; k++) x[k] = 0.f;
    } else {
      load_f<W>(x_row + i, x);
#pragma unroll
      for (int k = 0; k < W; k++) x[k] = (expf(x[k] - lse) - (i + k == target ? 1.f : 0.f)) * dloss_scale;
    }
    store_f<W>(dx_row + i, x);
  });
}

#define PIPEC_CROSSENTROPY_ENTRIES(T, SFX)                                                                             \
  extern "C" __global__ void pipec_crossentropy_forward_backward_##SFX(                                                \
      float *losses, T *dlogits, const T *logits, const int *targets, int N, int V, float dloss_scale) {               \
    crossentropy_forward_backward<T>(losses, dlogits, logits, targets, N, V, dloss_scale);                             \
  }

#endif /* PIPEC_CROSSENTROPY_CUH */
