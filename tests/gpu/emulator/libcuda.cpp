/* libcuda.cpp — the driver API calls tests/gpu/check_kernels.py makes,
 * served on the CPU: "modules" are ignored, functions are the kernels'
 * extern "C" entry points compiled as C++ (kernels.inc, entries.inc from
 * build.sh), launches run on the SIMT emulator (simt.h), device memory is
 * host memory. Only for checking kernel logic without a GPU. */
#include "kernels.inc"

#include <map>
#include <string>
#include <utility>

/* call f with its arguments taken from cuLaunchKernel's kernelParams */
template <typename... A, size_t... I> void emu_call(void (*f)(A...), void **p, std::index_sequence<I...>) {
  f(*static_cast<A *>(p[I])...);
}
template <typename... A> void emu_invoke(void (*f)(A...), void **p) { emu_call(f, p, std::index_sequence_for<A...>{}); }
typedef void (*Invoker)(void **);
#define ENTRY(name) {#name, [](void **p) { emu_invoke(name, p); }},

static const std::map<std::string, Invoker> entries = {
#include "entries.inc"
};

extern "C" {
int cuInit(unsigned) { return 0; }
int cuDeviceGet(int *d, int) { return *d = 0; }
int cuDeviceGetAttribute(int *v, int attr, int) { /* an sm_90 with 4 SMs */
  *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 16 ? 4 : 0;
  return 0;
}
int cuDevicePrimaryCtxRetain(void **ctx, int) {
  *ctx = (void *)1;
  return 0;
}
int cuCtxSetCurrent(void *) { return 0; }
int cuModuleLoadData(void **mod, const void *) {
  *mod = (void *)1;
  return 0;
}
int cuModuleGetFunction(void **fn, void *, const char *name) {
  auto it = entries.find(name);
  if (it == entries.end()) return 500; /* CUDA_ERROR_NOT_FOUND */
  *fn = (void *)it->second;
  return 0;
}
int cuMemAlloc_v2(uint64_t *p, size_t n) {
  *p = (uint64_t)aligned_alloc(256, (n + 255) / 256 * 256);
  return *p ? 0 : 2; /* CUDA_ERROR_OUT_OF_MEMORY */
}
int cuMemFree_v2(uint64_t p) {
  free((void *)p);
  return 0;
}
int cuMemcpyHtoD_v2(uint64_t d, const void *h, size_t n) {
  memcpy((void *)d, h, n);
  return 0;
}
int cuMemcpyDtoH_v2(void *h, uint64_t d, size_t n) {
  memcpy(h, (void *)d, n);
  return 0;
}
int cuFuncSetAttribute(void *, int, int) { return 0; }
int cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned smem, void *, void **params, void **) {
  if (smem > sizeof attn_smem) return 1; /* CUDA_ERROR_INVALID_VALUE */
  emu_launch(dim3{gx, gy, gz}, dim3{bx, by, bz}, [=] { ((Invoker)fn)(params); });
  return 0;
}
int cuCtxSynchronize() { return 0; }
int cuGetErrorString(int, const char **s) {
  *s = "emulator error";
  return 0;
}
}
