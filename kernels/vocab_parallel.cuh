/* vocab_parallel.cuh — the vocabulary-parallel token embedding and
 * cross-entropy of tensor parallelism: each rank holds the rows
 * [v0, v0 + V) of the vocabulary; the softmax's max and sums are all-reduced
 * over the tp group between vp_rowmax, vp_sumexp and the loss.
 *
 * Needs before it: common.cuh. One warp per row (a row's slice of the
 * vocabulary is thousands of elements: 32 lanes stride it, warp shuffles
 * reduce it, no block barriers); launch block 256 (8 rows), grid ceil(N/8).
 * The embedding kernels: one thread per element, grid-stride.
 *
 * Shapes: logits, dlogits (N, V) of T; targets (N) int; M (N) fp32 max;
 * S (N, 2) fp32 [sum exp(logit - M), the target's logit or 0]; losses (N).
 */
#ifndef PIPEC_VOCAB_PARALLEL_CUH
#define PIPEC_VOCAB_PARALLEL_CUH

#define PIPEC_VP_ROW                                                    \
  const int lane = threadIdx.x % 32;                                    \
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; \
  if (row >= N) return;

/* Rows are read in 16-byte chunks (for_chunks) where alignment allows. */
template <typename T> __device__ void vp_rowmax(float *M, const T *logits, int N, int V) {
  PIPEC_VP_ROW
  constexpr int VW = vec_width<T>();
  const T *x = logits + row * V;
  float m = -PIPEC_INF;
  for_chunks<VW>(V, chunking(x), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float f[W];
    load_f<W>(x + i, f);
#pragma unroll
    for (int k = 0; k < W; k++) m = fmaxf(m, f[k]);
  });
  m = warp_max(m);
  if (lane == 0) M[row] = m;
}

template <typename T>
__device__ void vp_sumexp(float *S, const T *logits, const int *targets, const float *M, int N, int V, int v0) {
  PIPEC_VP_ROW
  constexpr int VW = vec_width<T>();
  const T *x = logits + row * V;
  const float m = M[row];
  float s = 0.f;
  for_chunks<VW>(V, chunking(x), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float f[W];
    load_f<W>(x + i, f);
#pragma unroll
    for (int k = 0; k < W; k++) s += expf(f[k] - m);
  });
  s = warp_sum(s);
  if (lane == 0) {
    const int t = targets[row] - v0;
    S[2 * row] = s;
    S[2 * row + 1] = t >= 0 && t < V ? to_float(x[t]) : 0.f;
  }
}

__device__ void vp_loss(float *losses, const float *M, const float *S, const int *targets, int N) {
  const long row = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (row < N) losses[row] = targets[row] < 0 ? 0.f : logf(S[2 * row]) + M[row] - S[2 * row + 1];
}

template <typename T>
__device__ void vp_xent_backward(T *dlogits, const T *logits, const int *targets, const float *M, const float *S, int N,
                                 int V, int v0, float scale) {
  PIPEC_VP_ROW
  const int tg = targets[row], t = tg - v0;
  const float m = M[row], inv = 1.f / S[2 * row];
  for (int c = lane; c < V; c += 32) {
    const float p = tg < 0 ? 0.f : expf(to_float(logits[row * V + c]) - m) * inv;
    dlogits[row * V + c] = from_float<T>(tg < 0 ? 0.f : (p - (c == t ? 1.f : 0.f)) * scale);
  }
}

template <typename T>
__device__ void vp_embedding_forward(T *out, const int *tokens, const T *w, long N, int C, int v0, int rows) {
  for (long i = grid_thread_id(); i < N * C; i += grid_thread_count()) {
    const long r = i / C;
    const int c = (int)(i % C), id = tokens[r] - v0;
    out[i] = id >= 0 && id < rows ? w[(long)id * C + c] : from_float<T>(0.f);
  }
}

/* dw += dout scattered by this rank's tokens (atomics: tokens repeat) */
template <typename T>
__device__ void vp_embedding_backward(T *dw, const T *dout, const int *tokens, long N, int C, int v0, int rows) {
  for (long i = grid_thread_id(); i < N * C; i += grid_thread_count()) {
    const long r = i / C;
    const int c = (int)(i % C), id = tokens[r] - v0;
    if (id >= 0 && id < rows) atomicAdd(dw + (long)id * C + c, dout[i]);
  }
}

#define PIPEC_VOCAB_PARALLEL_ENTRIES(T, SFX)                                                                           \
  extern "C" __global__ void pipec_vp_rowmax_##SFX(float *M, const T *logits, int N, int V) {                          \
    vp_rowmax<T>(M, logits, N, V);                                                                                     \
  }                                                                                                                    \
  extern "C" __global__ void pipec_vp_sumexp_##SFX(float *S, const T *logits, const int *targets, const float *M,      \
                                                   int N, int V, int v0) {                                             \
    vp_sumexp<T>(S, logits, targets, M, N, V, v0);                                                                     \
  }                                                                                                                    \
  extern "C" __global__ void pipec_vp_xent_backward_##SFX(T *dlogits, const T *logits, const int *targets,             \
                                                          const float *M, const float *S, int N, int V, int v0,        \
                                                          float scale) {                                               \
    vp_xent_backward<T>(dlogits, logits, targets, M, S, N, V, v0, scale);                                              \
  }                                                                                                                    \
  extern "C" __global__ void pipec_vp_embedding_forward_##SFX(T *out, const int *tokens, const T *w, long N, int C,    \
                                                              int v0, int rows) {                                      \
    vp_embedding_forward<T>(out, tokens, w, N, C, v0, rows);                                                           \
  }                                                                                                                    \
  extern "C" __global__ void pipec_vp_embedding_backward_##SFX(T *dw, const T *dout, const int *tokens, long N, int C, \
                                                               int v0, int rows) {                                     \
    vp_embedding_backward<T>(dw, dout, tokens, N, C, v0, rows);                                                        \
  }

#define PIPEC_VOCAB_PARALLEL_UNTYPED_ENTRIES()                                                                         \
  extern "C" __global__ void pipec_vp_loss(float *losses, const float *M, const float *S, const int *targets, int N) { \
    vp_loss(losses, M, S, targets, N);                                                                                 \
  }

#endif
