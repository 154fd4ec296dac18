/* elementwise.cuh — add, subtract, multiply, accumulate, scale over n
 * elements (k_add, k_sub, k_mul, k_accumulate, k_scale, k_scale_copy in
 * lib/kernels.h).
 *
 * Needs before it: common.cuh.
 *
 * Launch: grid-stride, block 256, grid = min(ceil(n / (256 * V)), 8 * SMs)
 * with V = 16 / sizeof(T). These are pure bandwidth: each thread moves
 * 16-byte chunks, 256 threads per block lets 8 blocks share an SM, and a
 * grid capped at a few waves avoids launching millions of tiny blocks for
 * large n. Outputs may alias inputs.
 */
#ifndef PIPEC_ELEMENTWISE_CUH
#define PIPEC_ELEMENTWISE_CUH

#define PIPEC_ELEMENTWISE_ENTRIES(T, SFX)                                                                              \
  /* out = a + b */                                                                                                    \
  extern "C" __global__ void pipec_add_##SFX(T *out, const T *a, const T *b, long n) {                                 \
    map2(out, a, b, n, [](float x, float y) { return x + y; });                                                        \
  }                                                                                                                    \
  /* out = a * b */                                                                                                    \
  extern "C" __global__ void pipec_mul_##SFX(T *out, const T *a, const T *b, long n) {                                 \
    map2(out, a, b, n, [](float x, float y) { return x * y; });                                                        \
  }                                                                                                                    \
  /* dst += src */                                                                                                     \
  extern "C" __global__ void pipec_accumulate_##SFX(T *dst, const T *src, long n) {                                    \
    map2(dst, dst, src, n, [](float x, float y) { return x + y; });                                                    \
  }                                                                                                                    \
  /* x *= s */                                                                                                         \
  extern "C" __global__ void pipec_scale_##SFX(T *x, long n, float s) {                                                \
    map1(x, x, n, [=](float v) { return v * s; });                                                                     \
  }                                                                                                                    \
  /* out = a - b */                                                                                                    \
  extern "C" __global__ void pipec_sub_##SFX(T *out, const T *a, const T *b, long n) {                                 \
    map2(out, a, b, n, [](float x, float y) { return x - y; });                                                        \
  }                                                                                                                    \
  /* out = inp * s */                                                                                                  \
  extern "C" __global__ void pipec_scale_copy_##SFX(T *out, const T *inp, long n, float s) {                           \
    map1(out, inp, n, [=](float v) { return v * s; });                                                                 \
  }

#endif /* PIPEC_ELEMENTWISE_CUH */
