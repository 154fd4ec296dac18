/* softmax.cuh — softmax over the last dim of (N, C), forward and backward
 * (k_softmax_* in lib/kernels.h).
 *
 * Needs before it: common.cuh.
 *
 * One block per row, block 256, grid N: rows here are long (vocabulary
 * sized, tens of thousands of elements), so a whole block streams a row
 * with 16-byte loads and combines its partial results through shared
 * memory; for rows of a few hundred elements most of the block idles, but
 * those softmaxes are inside attention, which has its own kernel.
 * -inf inputs (masked) get probability 0.
 */
#ifndef PIPEC_SOFTMAX_CUH
#define PIPEC_SOFTMAX_CUH

/* out = exp(inp - max) / sum: one online pass for max and sum (the row is
 * read twice in all, not three times), then the write; out may be inp. */
template <typename T> __device__ void softmax_forward(T *out, const T *inp, int N, int C) {
  constexpr int V = vec_width<T>();
  const long row = blockIdx.x;
  if (row >= N) return; /* the whole block */
  const T *x_row = inp + row * C;
  T *y_row = out + row * C;
  const Chunking ch = chunking(y_row, x_row);

  OnlineSoftmax sm;
  for_chunks<V>(C, ch, threadIdx.x, blockDim.x, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(x_row + i, x);
#pragma unroll
    for (int k = 0; k < W; k++) sm.add(x[k]);
  });
  sm.block_combine();
  const float inv_sum = 1.f / sm.s;

  for_chunks<V>(C, ch, threadIdx.x, blockDim.x, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(x_row + i, x);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = expf(x[k] - sm.m) * inv_sum;
    store_f<W>(y_row + i, x);
  });
}

/* dinp (written) = out * (dout - sum(dout * out)); dinp may be dout. */
template <typename T> __device__ void softmax_backward(T *dinp, const T *dout, const T *out, int N, int C) {
  constexpr int V = vec_width<T>();
  const long row = blockIdx.x;
  if (row >= N) return;
  const T *dy_row = dout + row * C, *y_row = out + row * C;
  T *dx_row = dinp + row * C;
  const Chunking ch = chunking(dx_row, dy_row, y_row);

  float dot = 0.f;
  for_chunks<V>(C, ch, threadIdx.x, blockDim.x, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float dy[W], y[W];
    load_f<W>(dy_row + i, dy);
    load_f<W>(y_row + i, y);
#pragma unroll
    for (int k = 0; k < W; k++) dot += dy[k] * y[k];
  });
  dot = block_reduce(dot, OpSum());

  for_chunks<V>(C, ch, threadIdx.x, blockDim.x, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float dy[W], y[W];
    load_f<W>(dy_row + i, dy);
    load_f<W>(y_row + i, y);
#pragma unroll
    for (int k = 0; k < W; k++) dy[k] = y[k] * (dy[k] - dot);
    store_f<W>(dx_row + i, dy);
  });
}

#define PIPEC_SOFTMAX_ENTRIES(T, SFX)                                                                                  \
  extern "C" __global__ void pipec_softmax_forward_##SFX(T *out, const T *inp, int N, int C) {                         \
    softmax_forward<T>(out, inp, N, C);                                                                                \
  }                                                                                                                    \
  extern "C" __global__ void pipec_softmax_backward_##SFX(T *dinp, const T *dout, const T *out, int N, int C) {        \
    softmax_backward<T>(dinp, dout, out, N, C);                                                                        \
  }

#endif /* PIPEC_SOFTMAX_CUH */
