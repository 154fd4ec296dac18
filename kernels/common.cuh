/* common.cuh — what every CUDA kernel header of pipec builds on.
 *
 * How the kernels become a module. The headers in kernels/ hold templates
 * and one macro each, PIPEC_<LAYER>_ENTRIES(T, SFX), that defines the
 * layer's extern "C" entry points pipec_<op>_<SFX> for element type T. A
 * translation unit is this file, then the layer headers (each names what it
 * needs before it), then one line per header and type:
 *
 *     PIPEC_LAYERNORM_ENTRIES(float, f32)
 *     PIPEC_LAYERNORM_ENTRIES(__nv_bfloat16, bf16)
 *
 * The caller concatenates the text (pipec embeds it; nothing is read from
 * the source tree at run time) and compiles it with NVRTC (lib/nvrtc.h);
 * the runtime finds each entry with cuModuleGetFunction. No #include of our
 * own: only <cuda_bf16.h>, from the CUDA toolkit.
 *
 * Element types. T is float, or __nv_bfloat16 for storage with every sum,
 * product and statistic in fp32; a value is rounded to T (round to nearest
 * even) only when it is stored. Statistics (mean, rstd, lse, delta, losses)
 * and optimizer state are always fp32. Layouts and semantics are those of
 * the CPU kernels in lib/kernels.h, unless an entry's comment says
 * otherwise.
 *
 * Vector access. Loops over rows and arrays go through for_chunks(): 16
 * bytes at a time (4 floats, 8 bf16) where every pointer involved is
 * 16-byte aligned after the same number of leading elements, one element at
 * a time for that head, the tail, and pointers that do not line up.
 *
 * Launches. Every block size is a multiple of 32 (whole warps: the warp
 * reductions use all 32 lanes). Each entry's comment gives the grid and
 * block the runtime should use and why.
 */
#ifndef PIPEC_COMMON_CUH
#define PIPEC_COMMON_CUH
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

#define PIPEC_FULL_MASK 0xffffffffu
/* NVRTC has no <math.h>: +infinity spelled out */
#define PIPEC_INF __int_as_float(0x7f800000)

/* ---- element conversion ---------------------------------------------- */

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16_rn(x); }

/* x as a later kernel will read it back after storing it as T */
template <typename T> __device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

/* ---- 16-byte chunks ---------------------------------------------------- */

/* elements of T in one 16-byte access */
template <typename T> __host__ __device__ constexpr int vec_width() { return 16 / (int)sizeof(T); }

/* Load W consecutive elements of p as floats. When W elements fill whole
 * 16-byte words, p must be 16-byte aligned and the load is W*sizeof(T)/16
 * 16-byte accesses; otherwise (W = 1, the tail) element by element. */
template <int W, typename T> __device__ __forceinline__ void load_f(const T *p, float (&f)[W]) {
  if constexpr ((W * sizeof(T)) % 16 == 0) {
    constexpr int per = 16 / (int)sizeof(T);
#pragma unroll
    for (int j = 0; j < W / per; j++) {
      int4 raw = reinterpret_cast<const int4 *>(p)[j];
      const T *e = reinterpret_cast<const T *>(&raw);
#pragma unroll
      for (int k = 0; k < per; k++) f[j * per + k] = to_float(e[k]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < W; k++) f[k] = to_float(p[k]);
  }
}

/* load_f, or zeros when p is NULL (an optional bias) */
template <int W, typename T> __device__ __forceinline__ void load_f_or_zero(const T *p, float (&f)[W]) {
  if (p) {
    load_f<W>(p, f);
  } else {
#pragma unroll
    for (int k = 0; k < W; k++) f[k] = 0.f;
  }
}

/* Store W floats to p as T, with the alignment rule of load_f. */
template <int W, typename T> __device__ __forceinline__ void store_f(T *p, const float (&f)[W]) {
  if constexpr ((W * sizeof(T)) % 16 == 0) {
    constexpr int per = 16 / (int)sizeof(T);
#pragma unroll
    for (int j = 0; j < W / per; j++) {
      int4 raw;
      T *e = reinterpret_cast<T *>(&raw);
#pragma unroll
      for (int k = 0; k < per; k++) e[k] = from_float<T>(f[j * per + k]);
      reinterpret_cast<int4 *>(p)[j] = raw;
    }
  } else {
#pragma unroll
    for (int k = 0; k < W; k++) p[k] = from_float<T>(f[k]);
  }
}

/* How to walk n elements starting at some pointers: `head` single elements
 * first, then 16-byte chunks, which are aligned for every pointer when
 * `vec` holds. */
struct Chunking {
  bool vec;
  int head;
};

template <typename P> __device__ __forceinline__ bool aligned_after(const P *p, int head) {
  return p == nullptr || (((unsigned long long)(p + head)) & 15) == 0;
}

/* Chunking for arrays walked in step from p0, p1, ... (NULL ones are
 * skipped): the head is what takes p0 to a 16-byte boundary, and the
 * vector path is taken only if that same head aligns all the others. */
template <typename T, typename... P> __device__ __forceinline__ Chunking chunking(const T *p0, const P *...ps) {
  int head = (int)(((16 - ((unsigned long long)p0 & 15)) & 15) / sizeof(T));
  bool ok = aligned_after(p0, head) && (aligned_after(ps, head) && ...);
  return Chunking{ok, head};
}

/* Chunking with no head: every pointer 16-byte aligned (flat arrays whose
 * chunk boundaries matter, e.g. dropout's groups of four). */
template <typename... P> __device__ __forceinline__ Chunking chunking_aligned(const P *...ps) {
  return Chunking{(aligned_after(ps, 0) && ...), 0};
}

template <int W> struct Width { static constexpr int value = W; };

/* Visit [0, n) in chunks dealt round-robin to worker `id` of `count`
 * (a lane of a warp, a thread of a block, or a thread of the grid):
 * f(i, Width<1>{}) for the head, f(i, Width<V>{}) for the 16-byte chunks,
 * f(i, Width<1>{}) for the tail; everything element by element when
 * !ch.vec. Inside f, `constexpr int W = decltype(w)::value;` is the width.
 * A worker always gets the same indices for the same arguments, so a
 * thread may read back what it wrote in an earlier walk. */
template <int V, typename F> __device__ __forceinline__ void for_chunks(long n, Chunking ch, long id, long count, F f) {
  long head = ch.vec ? (ch.head < n ? ch.head : n) : n;
  for (long i = id; i < head; i += count) f(i, Width<1>{});
  long nv = (n - head) / V;
  for (long c = id; c < nv; c += count) f(head + c * V, Width<V>{});
  for (long i = head + nv * V + id; i < n; i += count) f(i, Width<1>{});
}

__device__ __forceinline__ long grid_thread_id() { return (long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long grid_thread_count() { return (long)gridDim.x * blockDim.x; }

/* out[i] = f(a[i]) over n elements, grid-stride, 16 bytes at a time where
 * the pointers line up; out may be a. */
template <typename T, typename F> __device__ void map1(T *out, const T *a, long n, F f) {
  constexpr int V = vec_width<T>();
  for_chunks<V>(n, chunking(out, a), grid_thread_id(), grid_thread_count(), [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W];
    load_f<W>(a + i, x);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = f(x[k]);
    store_f<W>(out + i, x);
  });
}

/* out[i] = f(a[i], b[i]); out may be a or b. */
template <typename T, typename F> __device__ void map2(T *out, const T *a, const T *b, long n, F f) {
  constexpr int V = vec_width<T>();
  for_chunks<V>(n, chunking(out, a, b), grid_thread_id(), grid_thread_count(), [&](long i, auto w) {
    constexpr int W = decltype(w)::value;
    float x[W], y[W];
    load_f<W>(a + i, x);
    load_f<W>(b + i, y);
#pragma unroll
    for (int k = 0; k < W; k++) x[k] = f(x[k], y[k]);
    store_f<W>(out + i, x);
  });
}

/* ---- reductions -------------------------------------------------------- */

struct OpSum {
  template <typename R> __device__ R operator()(R a, R b) const { return a + b; }
};
struct OpMax {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename R, typename Op> __device__ __forceinline__ R warp_reduce(R x, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(PIPEC_FULL_MASK, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) { return warp_reduce(x, OpSum()); }
__device__ __forceinline__ float warp_max(float x) { return warp_reduce(x, OpMax()); }

/* Reduce over the whole block (blockDim.x a multiple of 32, blockDim.y =
 * 1); every thread gets the result. Warp totals are combined in warp
 * order, so the result is the same every run. Safe to call repeatedly. */
template <typename R, typename Op> __device__ R block_reduce(R x, Op op) {
  __shared__ R warp_total[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  x = warp_reduce(x, op);
  __syncthreads(); /* an earlier call may still be reading warp_total */
  if (lane == 0) warp_total[warp] = x;
  __syncthreads();
  R r = warp_total[0];
  for (int w = 1; w < nwarps; w++) r = op(r, warp_total[w]);
  return r;
}

/* Column sums over N rows, stage 1 of 2 (deterministic, no atomics).
 * Launch: grid (ceil(C/32), S), block (32, R) with R <= 32, e.g. (32, 16).
 * Block (bx, by) walks columns c = 32*bx + threadIdx.x over the rows
 * by*R + threadIdx.y, step S*R (each warp reads 32 consecutive elements
 * of one row: coalesced), and writes the K sums of f's values to
 * partials[by*K*C + k*C + c], i.e. partials is (S, K, C) floats. Stage 2
 * is pipec_colsum_accumulate (reduce.cuh): it adds the S partial rows into
 * the gradient. Pick S so that ceil(C/32)*S fills the GPU (2-4 blocks per
 * SM). f(row, c, float (&v)[K]) gives element (row, c)'s K values. */
template <int K, typename F> __device__ void colsum_partials(float *partials, int N, int C, F f) {
  __shared__ float part[K][32][32]; /* [k][threadIdx.y][threadIdx.x] */
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  float acc[K];
#pragma unroll
  for (int k = 0; k < K; k++) acc[k] = 0.f;
  if (c < C) {
    for (long row = (long)blockIdx.y * blockDim.y + ty; row < N; row += (long)gridDim.y * blockDim.y) {
      float v[K];
      f(row, c, v);
#pragma unroll
      for (int k = 0; k < K; k++) acc[k] += v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < K; k++) part[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty == 0 && c < C) {
#pragma unroll
    for (int k = 0; k < K; k++) {
      float s = 0.f;
      for (int y = 0; y < (int)blockDim.y; y++) s += part[k][y][tx];
      partials[(long)blockIdx.y * K * C + (long)k * C + c] = s;
    }
  }
}

/* ---- online softmax ---------------------------------------------------- */

/* Running max m and sum s of exp(x - m) over the values seen so far
 * (Milakov & Gimelshein, "Online normalizer calculation for softmax").
 * -inf inputs (masked) contribute nothing. */
struct OnlineSoftmax {
  float m = -PIPEC_INF, s = 0.f;
  __device__ void add(float x) {
    if (x > m) {
      s = s * expf(m - x) + 1.f; /* m = -inf: s is 0 and expf gives 0 */
      m = x;
    } else if (m != -PIPEC_INF) {
      s += expf(x - m);
    }
  }
  /* combine over the block: every thread gets the row's max and sum */
  __device__ void block_combine() {
    float M = block_reduce(m, OpMax());
    float part = (m == -PIPEC_INF) ? 0.f : s * expf(m - M);
    s = block_reduce(part, OpSum());
    m = M;
  }
};

#endif /* PIPEC_COMMON_CUH */
