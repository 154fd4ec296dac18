/* dropout.cuh — dropout with a counter-based RNG, forward and backward
 * (k_dropout_* in lib/kernels.h).
 *
 * Needs before it: common.cuh.
 *
 * The mask is a pure function of (seed, offset, i), the same on CPU and
 * GPU, so the backward recomputes it instead of storing it:
 *   Philox-4x32-10 (Salmon et al., SC'11; Random123's philox4x32_R(10))
 *   counter = (lo32(offset + i/4), hi32(offset + i/4), 0, 0)
 *   key     = (lo32(seed), hi32(seed))
 *   word    = output word i % 4
 *   keep element i  iff  word >= (uint32)(p * 2^32), kept values scaled by
 *   1 / (1 - p) (in float); p <= 0 keeps everything unscaled, p >= 1 drops
 *   everything (out = 0).
 * This is k_dropout_* in lib/kernels_cpu.c bit for bit. p * 2^32 is exact
 * in float (a power-of-two scale), so the threshold does not depend on how
 * the product is computed.
 */
#ifndef PIPEC_DROPOUT_CUH
#define PIPEC_DROPOUT_CUH

/* Philox-4x32-10: ten rounds, the key bumped between rounds */
__device__ __forceinline__ uint4 philox4x32_10(uint4 ctr, uint2 key) {
#pragma unroll
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      key.x += 0x9E3779B9u;
      key.y += 0xBB67AE85u;
    }
    const unsigned hi0 = __umulhi(0xD2511F53u, ctr.x), lo0 = 0xD2511F53u * ctr.x;
    const unsigned hi1 = __umulhi(0xCD9E8D57u, ctr.z), lo1 = 0xCD9E8D57u * ctr.z;
    ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
  }
  return ctr;
}

__device__ __forceinline__ uint4 dropout_words(unsigned long long seed, unsigned long long offset, long group) {
  const unsigned long long c = offset + (unsigned long long)group;
  return philox4x32_10(make_uint4((unsigned)c, (unsigned)(c >> 32), 0u, 0u),
                       make_uint2((unsigned)seed, (unsigned)(seed >> 32)));
}

/* out = inp * mask / (1 - p); the backward is the same map applied to dout
 * (the mask of element i does not depend on the data). Launch: grid-stride,
 * block 256, grid = min(ceil(n / (256 * V)), 8 * SMs), V = 16 / sizeof(T):
 * each thread takes 16-byte chunks, whole groups of four (one Philox call
 * per four elements), and ten rounds of integer multiplies per group are
 * cheap next to the memory traffic. Chunks start at multiples of V (no
 * head), so a group never straddles two chunks; out may be inp. */
template <typename T>
__device__ void dropout_kernel(T *out, const T *inp, long n, float p, unsigned long long seed,
                               unsigned long long offset) {
  constexpr int V = vec_width<T>();
  const bool drop_all = !(p < 1.f), keep_all = !(p > 0.f);
  const unsigned threshold = drop_all || keep_all ? 0u : (unsigned)(p * 4294967296.0f);
  const float scale = drop_all ? 0.f : keep_all ? 1.f : 1.f / (1.f - p);
  for_chunks<V>(n, chunking_aligned(out, inp), grid_thread_id(), grid_thread_count(), [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(inp + i, x);
    uint4 r = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const long e = i + k;
      if (k == 0 || e % 4 == 0) r = dropout_words(seed, offset, e / 4);
      const int j = (int)(e % 4);
      const unsigned word = j == 0 ? r.x : j == 1 ? r.y : j == 2 ? r.z : r.w;
      x[k] = (!drop_all && word >= threshold) ? x[k] * scale : 0.f;
    }
    store_f<W>(out + i, x);
  });
}

#define PIPEC_DROPOUT_ENTRIES(T, SFX)                                                                                  \
  extern "C" __global__ void pipec_dropout_forward_##SFX(T *out, const T *inp, long n, float p,                        \
                                                         unsigned long long seed, unsigned long long offset) {         \
    dropout_kernel<T>(out, inp, n, p, seed, offset);                                                                   \
  }                                                                                                                    \
  extern "C" __global__ void pipec_dropout_backward_##SFX(T *dinp, const T *dout, long n, float p,                     \
                                                          unsigned long long seed, unsigned long long offset) {        \
    dropout_kernel<T>(dinp, dout, n, p, seed, offset);                                                                 \
  }

#endif /* PIPEC_DROPOUT_CUH */
