/* simt.h — a small SIMT emulator, so that the kernels in kernels/*.cuh can
 * run on a CPU (tests/gpu/emulator/libcuda.cpp). Every CUDA thread of a
 * block is a ucontext fiber; __syncthreads and the warp shuffles are the
 * only points where a fiber yields, and they act as barriers (a block
 * barrier, or one among the 32 lanes of a warp). Blocks run one after
 * another, so __shared__ variables can be plain statics. This checks the
 * kernels' logic (indexing, masking, reductions, the online softmax), not
 * the GPU compiler or real concurrency; a shuffle that not all 32 lanes
 * reach, or a barrier some threads skip, stops it with "deadlock". */
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ucontext.h>
#include <vector>
using std::max;
using std::min;

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __shared__ static /* `extern __shared__` is rewritten to `extern` by build.sh */
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct uint4 {
  unsigned x, y, z, w;
};
struct uint2 {
  unsigned x, y;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, 4);
  return f;
}
inline void __trap() {
  fprintf(stderr, "emulator: __trap\n");
  abort();
}
inline float atomicAdd(float *p, float v) { /* fibers never interleave inside it */
  float old = *p;
  *p += v;
  return old;
}

enum { RUNNING, AT_SYNC, AT_SHFL, DONE };
struct Fiber {
  ucontext_t ctx;
  dim3 tidx;
  int state;
  unsigned long long in, out; /* a shuffle's value in and out */
  int src;                    /* the lane it reads */
  char *stack;
};
/* the fibers of the largest block so far, reused; their stacks are freed
 * with the library (at exit, before a leak checker looks) */
struct Fibers : std::vector<Fiber> {
  ~Fibers() {
    for (Fiber &f : *this) free(f.stack);
  }
};
inline Fiber *emu_cur;
inline Fibers emu_fibers;
inline ucontext_t emu_sched;
inline dim3 emu_block_idx, emu_block_dim, emu_grid_dim;
inline std::function<void()> emu_kernel;

#define threadIdx (emu_cur->tidx)
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim

inline void emu_yield(int state) {
  emu_cur->state = state;
  swapcontext(&emu_cur->ctx, &emu_sched);
}
inline void __syncthreads() { emu_yield(AT_SYNC); }
template <typename V> V emu_shuffle(V v, int src) {
  static_assert(sizeof(V) <= 8, "shuffles move at most 8 bytes");
  emu_cur->in = 0;
  memcpy(&emu_cur->in, &v, sizeof v);
  emu_cur->src = src & 31;
  emu_yield(AT_SHFL);
  V out;
  memcpy(&out, &emu_cur->out, sizeof out);
  return out;
}
inline int emu_lane() {
  return (int)((emu_cur->tidx.x + emu_cur->tidx.y * emu_block_dim.x) % 32); /* blocks are whole warps */
}
template <typename V> V __shfl_xor_sync(unsigned, V v, int o) { return emu_shuffle(v, emu_lane() ^ o); }
template <typename V> V __shfl_sync(unsigned, V v, int j) { return emu_shuffle(v, j); }

inline void emu_fiber_main() {
  emu_kernel();
  emu_yield(DONE);
}

/* Run every thread of the current block to the end. */
inline void emu_run_block() {
  const int n = (int)(emu_block_dim.x * emu_block_dim.y * emu_block_dim.z);
  const size_t stack = 128 * 1024;
  if (n % 32) {
    fprintf(stderr, "emulator: a block of %d threads is not whole warps\n", n);
    abort();
  }
  while ((int)emu_fibers.size() < n) {
    emu_fibers.emplace_back();
    emu_fibers.back().stack = (char *)malloc(stack);
  }
  for (int i = 0; i < n; i++) {
    Fiber &f = emu_fibers[i];
    f.tidx.x = i % emu_block_dim.x;
    f.tidx.y = i / emu_block_dim.x % emu_block_dim.y;
    f.tidx.z = i / (emu_block_dim.x * emu_block_dim.y);
    f.state = RUNNING;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = stack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, emu_fiber_main, 0);
  }
  for (;;) {
    for (int i = 0; i < n; i++) {
      if (emu_fibers[i].state != RUNNING) continue;
      emu_cur = &emu_fibers[i];
      swapcontext(&emu_sched, &emu_cur->ctx);
    }
    /* every fiber waits now: release a warp whose 32 lanes all shuffle, else the block at a barrier */
    bool released = false, all_done = true, all_sync = true;
    for (int w = 0; w < n / 32; w++) {
      Fiber *lanes = &emu_fibers[w * 32];
      bool all = true;
      for (int l = 0; l < 32; l++) all = all && lanes[l].state == AT_SHFL;
      if (!all) continue;
      for (int l = 0; l < 32; l++) lanes[l].out = lanes[lanes[l].src].in;
      for (int l = 0; l < 32; l++) lanes[l].state = RUNNING;
      released = true;
    }
    if (released) continue;
    for (int i = 0; i < n; i++) {
      all_done = all_done && emu_fibers[i].state == DONE;
      all_sync = all_sync && (emu_fibers[i].state == AT_SYNC || emu_fibers[i].state == DONE);
    }
    if (all_done) return;
    if (!all_sync) {
      fprintf(stderr, "emulator: deadlock in block (%u,%u,%u)\n", emu_block_idx.x, emu_block_idx.y, emu_block_idx.z);
      abort();
    }
    for (int i = 0; i < n; i++)
      if (emu_fibers[i].state == AT_SYNC) emu_fibers[i].state = RUNNING;
  }
}

inline void emu_launch(dim3 grid, dim3 block, std::function<void()> kernel) {
  emu_grid_dim = grid;
  emu_block_dim = block;
  emu_kernel = std::move(kernel);
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        emu_block_idx = dim3{x, y, z};
        emu_run_block();
      }
}
