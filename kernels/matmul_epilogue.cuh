/* matmul_epilogue.cuh — what follows a GEMM: bias, bias + activation, and
 * their backward (the bias gradient). The GEMMs themselves
 * (out = inp @ weight^T, dinp = dout @ weight, dweight += dout^T @ inp; see
 * k_matmul_* in lib/kernels.h) are cuBLASLt calls made by the runtime, not
 * kernels.
 *
 * Needs before it: common.cuh, activation.cuh. The bias gradient is summed
 * over rows in two stages: the *_backward_bias entries write partial sums,
 * then pipec_colsum_accumulate (reduce.cuh) adds them (+=) into dbias.
 *
 * Shapes: out, pre, dout, dpre (N, OC) of T; bias (OC) of T.
 */
#ifndef PIPEC_MATMUL_EPILOGUE_CUH
#define PIPEC_MATMUL_EPILOGUE_CUH

/* In place on the GEMM's output: pre = out + bias (kept for the backward
 * when pre is not NULL), out = act(out + bias); act = PIPEC_ACT_NONE adds
 * the bias only. Launch as bias_act_forward (activation.cuh): one warp per
 * row, block 256, grid ceil(N / 8). */

/* Stage 1 of dbias += column sums of dout: partials (S, OC) fp32,
 * S = gridDim.y; launch as colsum_partials (common.cuh), then
 * pipec_colsum_accumulate(dbias, partials, S, OC, OC). */
template <typename T> __device__ void matmul_backward_bias(float *partials, const T *dout, int N, int OC) {
  colsum_partials<1>(partials, N, OC, [&](long row, int c, float(&v)[1]) { v[0] = to_float(dout[row * OC + c]); });
}

/* The backward of out = act(pre): dpre (written; may be dout) =
 * dout * act'(pre), and stage 1 of dbias += column sums of dpre (as stored
 * in T), in one pass. Launch as colsum_partials; then
 * pipec_colsum_accumulate(dbias, partials, S, OC, OC). */
template <typename T>
__device__ void matmul_bias_act_backward(T *dpre, float *partials, const T *dout, const T *pre, int N, int OC,
                                         int act) {
  colsum_partials<1>(partials, N, OC, [&](long row, int c, float(&v)[1]) {
    const long i = row * OC + c;
    const float d = round_to<T>(to_float(dout[i]) * act_grad(to_float(pre[i]), act));
    dpre[i] = from_float<T>(d);
    v[0] = d;
  });
}

#define PIPEC_MATMUL_EPILOGUE_ENTRIES(T, SFX)                                                                          \
  extern "C" __global__ void pipec_matmul_bias_forward_##SFX(T *out, const T *bias, int N, int OC) {                   \
    bias_act_forward<T>(out, nullptr, out, bias, N, OC, PIPEC_ACT_NONE);                                               \
  }                                                                                                                    \
  extern "C" __global__ void pipec_matmul_bias_act_forward_##SFX(T *out, T *pre, const T *bias, int N, int OC,         \
                                                                 int act) {                                            \
    bias_act_forward<T>(out, pre, out, bias, N, OC, act);                                                              \
  }                                                                                                                    \
  extern "C" __global__ void pipec_matmul_backward_bias_##SFX(float *partials, const T *dout, int N, int OC) {         \
    matmul_backward_bias<T>(partials, dout, N, OC);                                                                    \
  }                                                                                                                    \
  extern "C" __global__ void pipec_matmul_bias_act_backward_##SFX(T *dpre, float *partials, const T *dout,             \
                                                                  const T *pre, int N, int OC, int act) {              \
    matmul_bias_act_backward<T>(dpre, partials, dout, pre, N, OC, act);                                                \
  }

#endif /* PIPEC_MATMUL_EPILOGUE_CUH */
