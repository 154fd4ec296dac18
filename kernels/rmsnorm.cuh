/* rmsnorm.cuh — RMSNorm over the last dim, forward and backward
 * (k_rmsnorm_* in lib/kernels.h): out = inp * rstd * weight with
 * rstd = 1 / sqrt(mean(inp^2) + eps).
 *
 * Needs before it: common.cuh. The weight gradient is summed over rows in
 * two stages: pipec_rmsnorm_backward_params writes partial sums, then
 * pipec_colsum_accumulate (reduce.cuh) adds them (+=) into dweight.
 *
 * Shapes: inp, out (N, C) of T; weight (C) of T; rstd (N) fp32.
 */
#ifndef PIPEC_RMSNORM_CUH
#define PIPEC_RMSNORM_CUH

/* One warp per row, block 256 = 8 rows, grid ceil(N / 8): the same reasons
 * as layernorm.cuh (shuffle-only statistics, two passes over a row that a
 * warp covers in a few 16-byte loads per lane). rstd may be NULL. */
template <typename T>
__device__ void rmsnorm_forward(T *out, float *rstd, const T *inp, const T *weight, int N, int C, float eps) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32;
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const T *x_row = inp + row * C;
  T *o = out + row * C;

  float sumsq = 0.f;
  for_chunks<V>(C, chunking(x_row), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(x_row + i, x);
#pragma unroll
    for (int k = 0; k < W; k++) sumsq += x[k] * x[k];
  });
  const float s = 1.0f / sqrtf(warp_sum(sumsq) / C + eps);

  for_chunks<V>(C, chunking(o, x_row, weight), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], g[W];
    load_f<W>(x_row + i, x);
    load_f<W>(weight + i, g);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = x[k] * s * g[k];
    store_f<W>(o + i, x);
  });
  if (lane == 0 && rstd) rstd[row] = s;
}

/* dinp (written) = rstd * (dnorm - xhat * mean(dnorm * xhat)) with
 * xhat = inp * rstd and dnorm = dout * weight. Same launch as the forward. */
template <typename T>
__device__ void rmsnorm_backward_input(T *dinp, const T *dout, const T *inp, const T *weight, const float *rstd, int N,
                                       int C) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32;
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const T *x_row = inp + row * C, *dy_row = dout + row * C;
  T *dx_row = dinp + row * C;
  const float s = rstd[row];

  float sum_dn_xhat = 0.f;
  for_chunks<V>(C, chunking(x_row, dy_row, weight), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], dy[W], g[W];
    load_f<W>(x_row + i, x);
    load_f<W>(dy_row + i, dy);
    load_f<W>(weight + i, g);
#pragma unroll
    for (int k = 0; k < W; k++) sum_dn_xhat += dy[k] * g[k] * x[k] * s;
  });
  const float mean_dn_xhat = warp_sum(sum_dn_xhat) / C;

  for_chunks<V>(C, chunking(dx_row, x_row, dy_row, weight), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], dy[W], g[W];
    load_f<W>(x_row + i, x);
    load_f<W>(dy_row + i, dy);
    load_f<W>(weight + i, g);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = s * (dy[k] * g[k] - x[k] * s * mean_dn_xhat);
    store_f<W>(dx_row + i, x);
  });
}

/* Stage 1 of dweight += sum over rows of dout * xhat: partials (S, C) fp32,
 * S = gridDim.y; launch as colsum_partials (common.cuh), then
 * pipec_colsum_accumulate(dweight, partials, S, C, C). */
template <typename T>
__device__ void rmsnorm_backward_params(float *partials, const T *dout, const T *inp, const float *rstd, int N, int C) {
  colsum_partials<1>(partials, N, C, [&](long row, int c, float(&v)[1]) {
    v[0] = to_float(dout[row * C + c]) * to_float(inp[row * C + c]) * rstd[row];
  });
}

#define PIPEC_RMSNORM_ENTRIES(T, SFX)                                                                                  \
  extern "C" __global__ void pipec_rmsnorm_forward_##SFX(T *out, float *rstd, const T *inp, const T *weight, int N,    \
                                                         int C, float eps) {                                           \
    rmsnorm_forward<T>(out, rstd, inp, weight, N, C, eps);                                                             \
  }                                                                                                                    \
  extern "C" __global__ void pipec_rmsnorm_backward_input_##SFX(T *dinp, const T *dout, const T *inp, const T *weight, \
                                                                const float *rstd, int N, int C) {                     \
    rmsnorm_backward_input<T>(dinp, dout, inp, weight, rstd, N, C);                                                    \
  }                                                                                                                    \
  extern "C" __global__ void pipec_rmsnorm_backward_params_##SFX(float *partials, const T *dout, const T *inp,         \
                                                                 const float *rstd, int N, int C) {                    \
    rmsnorm_backward_params<T>(partials, dout, inp, rstd, N, C);                                                       \
  }

#endif /* PIPEC_RMSNORM_CUH */
