/* activation.cuh — GELU (tanh and erf forms), ReLU, SiLU, forward and
 * backward, and the fused bias + activation (k_act_*, k_bias_act_forward in
 * lib/kernels.h).
 *
 * Needs before it: common.cuh.
 *
 * `act` is an int with the values of KAct in lib/kernels.h, plus one of
 * ours for the matmul epilogue: the identity.
 */
#ifndef PIPEC_ACTIVATION_CUH
#define PIPEC_ACTIVATION_CUH

#define PIPEC_ACT_GELU_TANH 0 /* K_GELU_TANH */
#define PIPEC_ACT_GELU_ERF 1  /* K_GELU_ERF */
#define PIPEC_ACT_RELU 2      /* K_RELU */
#define PIPEC_ACT_SILU 3      /* K_SILU */
#define PIPEC_ACT_NONE (-1)   /* identity: bias only */

#define PIPEC_SQRT_2_OVER_PI 0.7978845608028654f
#define PIPEC_INV_SQRT_2 0.7071067811865476f
#define PIPEC_INV_SQRT_2PI 0.3989422804014327f

/* The same forms as lib/kernels_cpu.c: GELU-tanh as x * sigmoid(2u), GELU-erf
 * through erfc, so neither loses its digits to cancellation for x << 0. */
__device__ __forceinline__ float act_forward(float x, int act) {
  switch (act) {
  case PIPEC_ACT_GELU_TANH: {
    const float u = PIPEC_SQRT_2_OVER_PI * (x + 0.044715f * x * x * x); /* 0.5 (1 + tanh u) = sigmoid(2u) */
    return x / (1.f + expf(-2.f * u));
  }
  case PIPEC_ACT_GELU_ERF: return 0.5f * x * erfcf(-x * PIPEC_INV_SQRT_2);
  case PIPEC_ACT_RELU: return x > 0.f ? x : 0.f;
  case PIPEC_ACT_SILU: return x / (1.f + expf(-x));
  default: return x;
  }
}

/* d act(x) / dx */
__device__ __forceinline__ float act_grad(float x, int act) {
  switch (act) {
  case PIPEC_ACT_GELU_TANH: {
    /* s + x * 2 s (1 - s) du/dx with s = sigmoid(2u) and 1 - s = e s, e = exp(-2u) */
    const float u = PIPEC_SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
    const float e = expf(-2.f * u), s = 1.f / (1.f + e);
    return s + x * 2.f * s * (e * s) * PIPEC_SQRT_2_OVER_PI * (1.f + 3.f * 0.044715f * x * x);
  }
  case PIPEC_ACT_GELU_ERF: return 0.5f * erfcf(-x * PIPEC_INV_SQRT_2) + x * PIPEC_INV_SQRT_2PI * expf(-0.5f * x * x);
  case PIPEC_ACT_RELU: return x > 0.f ? 1.f : 0.f;
  case PIPEC_ACT_SILU: {
    const float sg = 1.f / (1.f + expf(-x));
    return sg * (1.f + x * (1.f - sg));
  }
  default: return 1.f;
  }
}

/* Elementwise over n elements: grid-stride, block 256 (memory bound: any
 * multiple of 128 keeps the SMs full; 256 is the usual sweet spot between
 * warps per block and blocks per SM), grid = min(ceil(n / (256 * V)), 8 *
 * SMs) with V = 16 / sizeof(T). out may be inp; dinp may be dout. */
template <typename T> __device__ void act_forward_kernel(T *out, const T *inp, long n, int act) {
  map1(out, inp, n, [=](float x) { return act_forward(x, act); });
}

template <typename T> __device__ void act_backward_kernel(T *dinp, const T *dout, const T *inp, long n, int act) {
  map2(dinp, dout, inp, n, [=](float dy, float x) { return dy * act_grad(x, act); });
}

/* out = act(inp + bias) over (N, C), and pre = inp + bias (rounded to T)
 * when pre is not NULL. out, pre and inp may be the same buffer. One warp
 * per row, block 256 = 8 rows, grid ceil(N / 8): a row is a few 16-byte
 * chunks per lane and the bias stays in L1 across the block's rows. */
template <typename T>
__device__ void bias_act_forward(T *out, T *pre, const T *inp, const T *bias, int N, int C, int act) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32;
  const long row = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const T *x_row = inp + row * C;
  T *o = out + row * C;
  T *p = pre ? pre + row * C : nullptr;
  for_chunks<V>(C, chunking(o, p, x_row, bias), lane, 32, [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], b[W];
    load_f<W>(x_row + i, x);
    load_f_or_zero<W>(bias ? bias + i : nullptr, b);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = round_to<T>(x[k] + b[k]);
    if (p) store_f<W>(p + i, x);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = act_forward(x[k], act);
    store_f<W>(o + i, x);
  });
}

#define PIPEC_ACTIVATION_ENTRIES(T, SFX)                                                                               \
  extern "C" __global__ void pipec_act_forward_##SFX(T *out, const T *inp, long n, int act) {                          \
    act_forward_kernel<T>(out, inp, n, act);                                                                           \
  }                                                                                                                    \
  extern "C" __global__ void pipec_act_backward_##SFX(T *dinp, const T *dout, const T *inp, long n, int act) {         \
    act_backward_kernel<T>(dinp, dout, inp, n, act);                                                                   \
  }                                                                                                                    \
  extern "C" __global__ void pipec_bias_act_forward_##SFX(T *out, const T *inp, const T *bias, int N, int C,           \
                                                          int act) {                                                   \
    bias_act_forward<T>(out, nullptr, inp, bias, N, C, act);                                                           \
  }

#endif /* PIPEC_ACTIVATION_CUH */
