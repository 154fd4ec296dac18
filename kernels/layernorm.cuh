/* layernorm.cuh — LayerNorm over the last dim, forward and backward, and
 * the fused residual add + LayerNorm (k_layernorm_*,
 * k_residual_layernorm_forward in lib/kernels.h).
 *
 * Needs before it: common.cuh. The weight and bias gradients are summed
 * over rows in two stages: pipec_layernorm_backward_params writes partial
 * sums, then pipec_colsum_accumulate (reduce.cuh) adds them (+=) into
 * dweight and dbias.
 *
 * Shapes: inp, out, resid (N, C) of T; weight, bias (C) of T; mean, rstd
 * (N) fp32.
 */
#ifndef PIPEC_LAYERNORM_CUH
#define PIPEC_LAYERNORM_CUH

/* One warp per row: a row of a few thousand elements is a few 16-byte
 * loads per lane, the row statistics need only warp shuffles (no shared
 * memory, no block barriers), and rows are independent. Launch: block 256
 * (8 rows: enough warps per SM to hide the latency of three passes over
 * the row while a short N leaves few idle warps in the last block), grid
 * ceil(N / 8). */

/* out = layernorm(x) * weight + bias with x = a, or with b given,
 * x = a + b rounded to T and stored to resid_out (resid_out may be a).
 * mean and rstd may be NULL (inference). */
template <typename T>
__device__ void layernorm_forward(T *out, float *mean, float *rstd, T *resid_out, const T *a, const T *b,
                                  const T *weight, const T *bias, int N, int C, float eps) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32;
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return; /* the whole warp: no block barriers below */
  const T *xa = a + row * C;
  const T *xb = b ? b + row * C : nullptr;
  T *xr = b ? resid_out + row * C : nullptr;
  T *o = out + row * C;

  /* pass 1: the input row (the residual sum, stored as T) and its sum */
  float sum = 0.f;
  for_chunks<V>(C, chunking(xa, xb, xr), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(xa + i, x);
    if (xb) {
      float y[W];
      load_f<W>(xb + i, y);
#pragma unroll
      for (int k = 0; k < W; k++) x[k] = round_to<T>(x[k] + y[k]);
      store_f<W>(xr + i, x);
    }
#pragma unroll
    for (int k = 0; k < W; k++) sum += x[k];
  });
  const T *x_row = xb ? xr : xa; /* this lane reads back only what it wrote */
  const float m = warp_sum(sum) / C;

  /* pass 2: variance around the mean (no cancellation for rows far from 0) */
  float var = 0.f;
  for_chunks<V>(C, chunking(x_row), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(x_row + i, x);
#pragma unroll
    for (int k = 0; k < W; k++) var += (x[k] - m) * (x[k] - m);
  });
  const float s = 1.0f / sqrtf(warp_sum(var) / C + eps);

  /* pass 3: normalise, scale, shift */
  for_chunks<V>(C, chunking(o, x_row, weight, bias), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], g[W], bb[W];
    load_f<W>(x_row + i, x);
    load_f<W>(weight + i, g);
    load_f_or_zero<W>(bias ? bias + i : nullptr, bb);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = (x[k] - m) * s * g[k] + bb[k];
    store_f<W>(o + i, x);
  });
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = s;
  }
}

/* dinp (written) = rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
 * with xhat = (inp - mean) * rstd and dnorm = dout * weight. Same launch as
 * the forward. */
template <typename T>
__device__ void layernorm_backward_input(T *dinp, const T *dout, const T *inp, const T *weight, const float *mean,
                                         const float *rstd, int N, int C) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32;
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const T *x_row = inp + row * C, *dy_row = dout + row * C;
  T *dx_row = dinp + row * C;
  const float m = mean[row], s = rstd[row];

  float sum_dn = 0.f, sum_dn_xhat = 0.f;
  for_chunks<V>(C, chunking(x_row, dy_row, weight), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], dy[W], g[W];
    load_f<W>(x_row + i, x);
    load_f<W>(dy_row + i, dy);
    load_f<W>(weight + i, g);
#pragma unroll
    for (int k = 0; k < W; k++) {
      float dn = dy[k] * g[k];
      sum_dn += dn;
      sum_dn_xhat += dn * (x[k] - m) * s;
    }
  });
  const float mean_dn = warp_sum(sum_dn) / C, mean_dn_xhat = warp_sum(sum_dn_xhat) / C;

  for_chunks<V>(C, chunking(dx_row, x_row, dy_row, weight), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], dy[W], g[W];
    load_f<W>(x_row + i, x);
    load_f<W>(dy_row + i, dy);
    load_f<W>(weight + i, g);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = s * (dy[k] * g[k] - mean_dn - (x[k] - m) * s * mean_dn_xhat);
    store_f<W>(dx_row + i, x);
  });
}

/* Stage 1 of dweight += sum over rows of dout * xhat and dbias += sum of
 * dout: partials (S, 2, C) fp32, S = gridDim.y; launch as colsum_partials
 * (common.cuh). Then pipec_colsum_accumulate(dweight, partials, S, C, 2C)
 * and, with a bias, pipec_colsum_accumulate(dbias, partials + C, S, C, 2C). */
template <typename T>
__device__ void layernorm_backward_params(float *partials, const T *dout, const T *inp, const float *mean,
                                          const float *rstd, int N, int C) {
  colsum_partials<2>(partials, N, C, [&](long row, int c, float(&v)[2]) {
    const float dy = to_float(dout[row * C + c]);
    v[0] = dy * (to_float(inp[row * C + c]) - mean[row]) * rstd[row];
    v[1] = dy;
  });
}

#define PIPEC_LAYERNORM_ENTRIES(T, SFX)                                                                                \
  extern "C" __global__ void pipec_layernorm_forward_##SFX(T *out, float *mean, float *rstd, const T *inp,             \
                                                           const T *weight, const T *bias, int N, int C, float eps) {  \
    layernorm_forward<T>(out, mean, rstd, nullptr, inp, nullptr, weight, bias, N, C, eps);                             \
  }                                                                                                                    \
  extern "C" __global__ void pipec_residual_layernorm_forward_##SFX(T *resid_out, T *out, float *mean, float *rstd,    \
                                                                    const T *a, const T *b, const T *weight,           \
                                                                    const T *bias, int N, int C, float eps) {          \
    layernorm_forward<T>(out, mean, rstd, resid_out, a, b, weight, bias, N, C, eps);                                   \
  }                                                                                                                    \
  extern "C" __global__ void pipec_layernorm_backward_input_##SFX(                                                     \
      T *dinp, const T *dout, const T *inp, const T *weight, const float *mean, const float *rstd, int N, int C) {     \
    layernorm_backward_input<T>(dinp, dout, inp, weight, mean, rstd, N, C);                                            \
  }                                                                                                                    \
  extern "C" __global__ void pipec_layernorm_backward_params_##SFX(                                                    \
      float *partials, const T *dout, const T *inp, const float *mean, const float *rstd, int N, int C) {              \
    layernorm_backward_params<T>(partials, dout, inp, mean, rstd, N, C);                                               \
  }

#endif /* PIPEC_LAYERNORM_CUH */
