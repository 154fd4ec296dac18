/* reduce.cuh — reductions that end in a host-visible number or a
 * gradient: the sum of squares for global-norm clipping (k_sumsq in
 * lib/kernels.h) and stage 2 of the column sums (bias, norm weight
 * gradients) whose stage 1 is colsum_partials (common.cuh).
 *
 * Needs before it: common.cuh.
 *
 * Both are deterministic: fixed partition, fixed order, no atomics, so the
 * clipping norm and the gradients are bit-identical run to run.
 */
#ifndef PIPEC_REDUCE_CUH
#define PIPEC_REDUCE_CUH

/* partials[blockIdx.x] = sum of x[i]^2 over this block's share of x, in
 * double (each 16-byte chunk is summed in float first). Grid-stride, block
 * 256, grid G <= 1024, e.g. min(ceil(n / (256 * V)), 4 * SMs): enough
 * blocks to saturate memory, few enough partials for one finishing block.
 * To norm many tensors, give each its own slice of partials and finish
 * them all at once. */
template <typename T> __device__ void sumsq_partial(double *partials, const T *x, long n) {
  constexpr int V = vec_width<T>();
  double acc = 0.0;
  for_chunks<V>(n, chunking(x), grid_thread_id(), grid_thread_count(), [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float v[W];
    load_f<W>(x + i, v);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < W; k++) s += v[k] * v[k];
    acc += s;
  });
  acc = block_reduce(acc, OpSum());
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

/* out[0] (written) = sum of partials[0, n). One block of 1024 threads,
 * grid 1: a few thousand doubles, one block is plenty and keeps the order
 * fixed. */
__device__ void sumsq_finish(double *out, const double *partials, int n) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
  acc = block_reduce(acc, OpSum());
  if (threadIdx.x == 0) out[0] = acc;
}

/* dst[c] += sum over s < S of partials[s * ld + c], for c < C. Grid-stride
 * over columns, block 256, grid ceil(C / 256): one thread per column reads
 * S rows in order (coalesced across the warp); S is small (tens). */
template <typename T> __device__ void colsum_accumulate(T *dst, const float *partials, int S, int C, long ld) {
  for (long c = grid_thread_id(); c < C; c += grid_thread_count()) {
    float s = 0.f;
    for (int k = 0; k < S; k++) s += partials[k * ld + c];
    dst[c] = from_float<T>(to_float(dst[c]) + s);
  }
}

#define PIPEC_REDUCE_ENTRIES(T, SFX)                                                                                   \
  extern "C" __global__ void pipec_sumsq_partial_##SFX(double *partials, const T *x, long n) {                         \
    sumsq_partial<T>(partials, x, n);                                                                                  \
  }                                                                                                                    \
  extern "C" __global__ void pipec_colsum_accumulate_##SFX(T *dst, const float *partials, int S, int C, long ld) {     \
    colsum_accumulate<T>(dst, partials, S, C, ld);                                                                     \
  }

/* entry points that do not depend on the element type: once per module */
#define PIPEC_REDUCE_UNTYPED_ENTRIES()                                                                                 \
  extern "C" __global__ void pipec_sumsq_finish(double *out, const double *partials, int n) {                          \
    sumsq_finish(out, partials, n);                                                                                    \
  }

#endif /* PIPEC_REDUCE_CUH */
