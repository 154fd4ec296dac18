/* embedding.cuh — token + position embedding, forward and backward
 * (k_embedding_* in lib/kernels.h).
 *
 * Needs before it: common.cuh.
 *
 * Shapes: tokens (B, T) int32; wte (vocab, C), wpe (context, C), out and
 * dout (B*T, C), all T. wpe / dwpe may be NULL (no positions).
 */
#ifndef PIPEC_EMBEDDING_CUH
#define PIPEC_EMBEDDING_CUH

/* out[b, t] = wte[tokens[b, t]] + wpe[t]. One warp per output row, block
 * 256 = 8 rows, grid ceil(B*T / 8): each row is a gather of one table row,
 * a few 16-byte chunks per lane. */
template <typename T>
__device__ void embedding_forward(T *out, const int *tokens, const T *wte, const T *wpe, int B, int Tn, int C) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32;
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= (long)B * Tn) return;
  const T *e = wte + (long)tokens[row] * C;
  const T *p = wpe ? wpe + (row % Tn) * C : nullptr;
  T *o = out + row * C;
  for_chunks<V>(C, chunking(o, e, p), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], y[W];
    load_f<W>(e + i, x);
    load_f_or_zero<W>(p ? p + i : nullptr, y);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] += y[k];
    store_f<W>(o + i, x);
  });
}

__device__ __forceinline__ void atomic_add_f(float *p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add_f(bf16 *p, float v) { atomicAdd(p, __float2bfloat16_rn(v)); }

/* dwte[tokens[b, t]] += dout[b, t] with atomics: the same token may occur
 * many times in a batch, and sorting tokens to avoid atomics costs more
 * than the contention for natural text. Not bit-reproducible: the order of
 * the additions varies (and with bf16 each addition rounds to bf16). One
 * warp per row of dout, block 256, grid ceil(B*T / 8); the loads of dout
 * are 16 bytes, the atomics one element each. */
template <typename T>
__device__ void embedding_backward_wte(T *dwte, const T *dout, const int *tokens, int B, int Tn, int C) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32;
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= (long)B * Tn) return;
  T *d = dwte + (long)tokens[row] * C;
  const T *g = dout + row * C;
  for_chunks<V>(C, chunking(g), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(g + i, x);
#pragma unroll
    for (int k = 0; k < W; k++) atomic_add_f(d + i + k, x[k]);
  });
}

/* dwpe[t] += sum over b of dout[b, t], without atomics (each element has
 * one owner, so the result is the same every run). Grid-stride over the
 * T*C elements, block 256, grid = min(ceil(T*C / (256 * V)), 8 * SMs);
 * consecutive threads take consecutive columns, so every read of dout is
 * coalesced. */
template <typename T> __device__ void embedding_backward_wpe(T *dwpe, const T *dout, int B, int Tn, int C) {
  constexpr int V = vec_width<T>();
  const long n = (long)Tn * C;
  /* dout + b*n must stay aligned for every b: n a multiple of V */
  Chunking ch = chunking_aligned(dwpe, dout);
  ch.vec = ch.vec && n % V == 0;
  for_chunks<V>(n, ch, grid_thread_id(), grid_thread_count(), [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float acc[W], x[W];
    load_f<W>(dwpe + i, acc);
    for (int b = 0; b < B; b++) {
      load_f<W>(dout + b * n + i, x);
#pragma unroll
      for (int k = 0; k < W; k++) acc[k] += x[k];
    }
    store_f<W>(dwpe + i, acc);
  });
}

#define PIPEC_EMBEDDING_ENTRIES(T, SFX)                                                                                \
  extern "C" __global__ void pipec_embedding_forward_##SFX(T *out, const int *tokens, const T *wte, const T *wpe,      \
                                                           int B, int Tn, int C) {                                     \
    embedding_forward<T>(out, tokens, wte, wpe, B, Tn, C);                                                             \
  }                                                                                                                    \
  extern "C" __global__ void pipec_embedding_backward_wte_##SFX(T *dwte, const T *dout, const int *tokens, int B,      \
                                                                int Tn, int C) {                                       \
    embedding_backward_wte<T>(dwte, dout, tokens, B, Tn, C);                                                           \
  }                                                                                                                    \
  extern "C" __global__ void pipec_embedding_backward_wpe_##SFX(T *dwpe, const T *dout, int B, int Tn, int C) {        \
    embedding_backward_wpe<T>(dwpe, dout, B, Tn, C);                                                                   \
  }

/* out[r] = r % Tn for r < N: the position ids of N rows of sequences of
 * Tn tokens (k_positions), for a position embedding looked up like the
 * tokens'. Grid-stride, block 256, grid = min(ceil(N / 256), 8 * SMs). */
__device__ void positions_kernel(int *out, int N, int Tn) {
  for (long r = grid_thread_id(); r < N; r += grid_thread_count()) out[r] = (int)(r % Tn);
}

/* out[r] = v for r < N: the position ids of N rows decoding one position
 * (k_positions_at). Launch as positions_kernel. */
__device__ void fill_int_kernel(int *out, int N, int v) {
  for (long r = grid_thread_id(); r < N; r += grid_thread_count()) out[r] = v;
}

/* entry points that do not depend on the element type: once per module */
#define PIPEC_EMBEDDING_UNTYPED_ENTRIES()                                                                              \
  extern "C" __global__ void pipec_positions(int *out, int N, int Tn) { positions_kernel(out, N, Tn); }                 \
  extern "C" __global__ void pipec_fill_int(int *out, int N, int v) { fill_int_kernel(out, N, v); }

#endif /* PIPEC_EMBEDDING_CUH */
