/* libcuda.cpp — a CPU stand-in for libcuda.so.1: "modules" are ignored,
 * functions are the kernels' extern "C" entry points compiled as C++
 * (kernels.inc, entries.inc from build.sh), launches run on the SIMT
 * emulator (simt.h), device memory is host memory. Only for checking
 * kernel logic without a GPU.
 *
 * It serves the calls tests/gpu/check_kernels.py makes (synchronous copies,
 * cuModuleLoadData, cuCtxSynchronize) and every entry point of
 * runtime/device.c's cu_syms table, so that the runtime's device path (and
 * runtime/kernels_dev.c on top of it) runs against it as against a driver:
 * EMU_DEVICES identical devices (default 1; "CUDA emulator", sm_90, 4 SMs)
 * sharing one memory budget and one primary context token (a process uses
 * one of them), streams and events. Every stream executes its work at once (a launch or copy has
 * finished when the call returns), so streams, events and synchronizations
 * only check their arguments. The signatures and return codes are the
 * driver's (as tests/runtime/fake_libcuda.c has them); what a real driver
 * rejects is rejected here too: blocks that are not whole warps or are over
 * 1024 threads, dynamic shared memory over 48 KiB without the opt-in
 * (cuFuncSetAttribute) or over what the emulator has, unknown functions,
 * streams and pointers. cuMemAlloc fills new memory with 0xFF bytes (NaN as
 * floats), so a kernel that leaves part of its output unwritten shows. */
#include "kernels.inc"

#include <unistd.h>

#include <map>
#include <set>
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

typedef int CUresult;
enum {
  OK = 0,
  INVALID_VALUE = 1,
  OUT_OF_MEMORY = 2,
  NOT_INITIALIZED = 3,
  INVALID_DEVICE = 101,
  INVALID_CONTEXT = 201,
  INVALID_HANDLE = 400,
  NOT_FOUND = 500,
};

#include "../../runtime/cuda_errors.inc"

static const size_t total_memory = (size_t)16 << 30;
static const int default_smem = 48 * 1024; /* without the opt-in */

static bool initialised;
static int ctx_token, ctx_refs;
static std::set<void *> streams, events, modules;
static std::map<uint64_t, size_t> allocs; /* device pointer -> bytes */
static size_t allocated;
static std::map<void *, int> smem_optin; /* function -> opted-in dynamic shared memory */

/* [p, p + n) lies inside one allocation */
static bool in_alloc(uint64_t p, size_t n) {
  auto it = allocs.upper_bound(p);
  if (it == allocs.begin()) return false;
  --it;
  return p - it->first + n <= it->second;
}
/* EMU_DEVICES=N: N devices, so that a job with N local ranks gets one each
 * (the runtime uses NCCL only then) */
static int device_count() {
  const char *v = getenv("EMU_DEVICES");
  int n = v && *v ? atoi(v) : 1;
  return n < 1 ? 1 : n;
}
static bool bad_device(int dev) { return dev < 0 || dev >= device_count(); }
static bool stream_ok(void *s) { return s == nullptr || streams.count(s); } /* NULL: the legacy default stream */

extern "C" {

CUresult cuGetErrorName(CUresult e, const char **s) {
  for (auto &x : errors)
    if (x.code == e) return *s = x.name, OK;
  *s = nullptr;
  return INVALID_VALUE;
}
CUresult cuGetErrorString(CUresult e, const char **s) {
  for (auto &x : errors)
    if (x.code == e) return *s = x.str, OK;
  *s = "emulator error"; /* check_kernels.py prints it whatever the code */
  return INVALID_VALUE;
}

CUresult cuInit(unsigned flags) {
  if (flags) return INVALID_VALUE;
  initialised = true;
  return OK;
}
CUresult cuDeviceGetCount(int *n) {
  if (!initialised) return NOT_INITIALIZED;
  *n = device_count();
  return OK;
}
CUresult cuDeviceGet(int *d, int ordinal) {
  if (!initialised) return NOT_INITIALIZED;
  if (bad_device(ordinal)) return INVALID_DEVICE;
  *d = ordinal;
  return OK;
}
CUresult cuDeviceGetName(char *name, int len, int dev) {
  if (bad_device(dev)) return INVALID_DEVICE;
  if (len <= 0) return INVALID_VALUE;
  snprintf(name, (size_t)len, "CUDA emulator");
  return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) { /* an sm_90 with 4 SMs */
  if (bad_device(dev)) return INVALID_DEVICE;
  *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 16 ? 4 : 0;
  return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *b, int dev) {
  if (bad_device(dev)) return INVALID_DEVICE;
  *b = total_memory;
  return OK;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
  if (!initialised) return NOT_INITIALIZED;
  if (bad_device(dev)) return INVALID_DEVICE;
  *ctx = &ctx_token;
  ctx_refs++;
  return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
  if (bad_device(dev)) return INVALID_DEVICE;
  if (ctx_refs <= 0) return INVALID_CONTEXT;
  ctx_refs--;
  return OK;
}
CUresult cuCtxSetCurrent(void *ctx) { return ctx == &ctx_token || ctx == nullptr ? OK : INVALID_CONTEXT; }
CUresult cuCtxSynchronize() { return OK; }

/* streams and events: handles only (work is done when enqueued) */
static void *handle(std::set<void *> &set) {
  void *h = malloc(1);
  set.insert(h);
  return h;
}
static CUresult handle_free(std::set<void *> &set, void *h) {
  if (!set.erase(h)) return INVALID_HANDLE;
  free(h);
  return OK;
}
CUresult cuStreamCreate(void **s, unsigned flags) {
  if (flags > 1) return INVALID_VALUE; /* CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING */
  *s = handle(streams);
  return OK;
}
CUresult cuStreamDestroy_v2(void *s) { return handle_free(streams, s); }
/* EMU_STREAM_STUCK=1: streams never finish (a kernel or NCCL operation that
   hangs), for the tests of the runtime's waits */
static bool stuck() {
  const char *v = getenv("EMU_STREAM_STUCK");
  return v && *v == '1';
}
CUresult cuStreamSynchronize(void *s) {
  if (!stream_ok(s)) return INVALID_HANDLE;
  while (stuck()) pause();
  return OK;
}
/* device memory is host memory: page-locking changes nothing */
CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned flags) { return p && n && !flags ? OK : INVALID_VALUE; }
CUresult cuMemHostUnregister(void *p) { return p ? OK : INVALID_VALUE; }
CUresult cuStreamQuery(void *s) {
  if (!stream_ok(s)) return INVALID_HANDLE;
  return stuck() ? 600 /* CUDA_ERROR_NOT_READY */ : OK;
}
CUresult cuStreamWaitEvent(void *s, void *e, unsigned flags) {
  return stream_ok(s) && events.count(e) && flags == 0 ? OK : INVALID_HANDLE;
}
CUresult cuEventCreate(void **e, unsigned flags) {
  if (flags > 0xf) return INVALID_VALUE;
  *e = handle(events);
  return OK;
}
CUresult cuEventDestroy_v2(void *e) { return handle_free(events, e); }
CUresult cuEventRecord(void *e, void *s) { return events.count(e) && stream_ok(s) ? OK : INVALID_HANDLE; }

/* memory */
CUresult cuMemAlloc_v2(uint64_t *p, size_t n) {
  if (!n) return INVALID_VALUE;
  if (allocated + n > total_memory) return OUT_OF_MEMORY;
  void *m = aligned_alloc(256, (n + 255) / 256 * 256); /* 256-byte aligned, as cuMemAlloc's */
  if (!m) return OUT_OF_MEMORY;
  memset(m, 0xff, n);
  *p = (uint64_t)(uintptr_t)m;
  allocs[*p] = n;
  allocated += n;
  return OK;
}
CUresult cuMemFree_v2(uint64_t p) {
  auto it = allocs.find(p);
  if (it == allocs.end()) return INVALID_VALUE;
  allocated -= it->second;
  allocs.erase(it);
  free((void *)(uintptr_t)p);
  return OK;
}
CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b) {
  *free_b = total_memory - allocated;
  *total_b = total_memory;
  return OK;
}
CUresult cuMemcpyHtoD_v2(uint64_t d, const void *h, size_t n) {
  if (n && !in_alloc(d, n)) return INVALID_VALUE;
  memcpy((void *)(uintptr_t)d, h, n);
  return OK;
}
CUresult cuMemcpyDtoH_v2(void *h, uint64_t d, size_t n) {
  if (n && !in_alloc(d, n)) return INVALID_VALUE;
  memcpy(h, (const void *)(uintptr_t)d, n);
  return OK;
}
CUresult cuMemcpyHtoDAsync_v2(uint64_t d, const void *h, size_t n, void *s) {
  return stream_ok(s) ? cuMemcpyHtoD_v2(d, h, n) : INVALID_HANDLE;
}
CUresult cuMemcpyDtoHAsync_v2(void *h, uint64_t d, size_t n, void *s) {
  return stream_ok(s) ? cuMemcpyDtoH_v2(h, d, n) : INVALID_HANDLE;
}
CUresult cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t src, size_t n, void *s) {
  if (!stream_ok(s)) return INVALID_HANDLE;
  if (n && (!in_alloc(d, n) || !in_alloc(src, n))) return INVALID_VALUE;
  memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)src, n);
  return OK;
}
CUresult cuMemsetD8Async(uint64_t d, unsigned char v, size_t n, void *s) {
  if (!stream_ok(s)) return INVALID_HANDLE;
  if (n && !in_alloc(d, n)) return INVALID_VALUE;
  memset((void *)(uintptr_t)d, v, n);
  return OK;
}

/* modules: any image loads (the kernels are compiled in); the JIT options
 * are accepted and the error log left empty */
CUresult cuModuleLoadData(void **mod, const void *image) {
  if (!image) return INVALID_VALUE;
  *mod = handle(modules);
  return OK;
}
CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned nopt, int *opts, void **vals) {
  if (nopt && (!opts || !vals)) return INVALID_VALUE;
  return cuModuleLoadData(mod, image);
}
CUresult cuModuleUnload(void *mod) { return handle_free(modules, mod); }
CUresult cuModuleGetFunction(void **fn, void *mod, const char *name) {
  if (!modules.count(mod)) return INVALID_HANDLE;
  auto it = entries.find(name);
  if (it == entries.end()) return NOT_FOUND;
  *fn = (void *)it->second;
  return OK;
}
CUresult cuFuncSetAttribute(void *fn, int attr, int value) {
  if (attr == 8) { /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
    if (value < 0 || (size_t)value > sizeof attn_smem) return INVALID_VALUE;
    smem_optin[fn] = value;
  }
  return OK;
}

CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, void *stream, void **params, void **extra) {
  if (!stream_ok(stream)) return INVALID_HANDLE;
  const char *name = nullptr;
  for (auto &e : entries)
    if ((void *)e.second == fn) name = e.first.c_str();
  if (!name) return INVALID_HANDLE;
  /* EMU_CUDA_FAIL=KERNEL:N: launches of KERNEL return N (for tests of the error lines) */
  if (const char *f = getenv("EMU_CUDA_FAIL")) {
    size_t n = strlen(name);
    if (!strncmp(f, name, n) && f[n] == ':') return atoi(f + n + 1);
  }
  if (extra || !gx || !gy || !gz || !bx || !by || !bz || gy > 65535 || gz > 65535) return INVALID_VALUE;
  const unsigned long threads = (unsigned long)bx * by * bz;
  if (threads > 1024 || threads % 32 || bz > 64) return INVALID_VALUE; /* the emulator runs whole warps only */
  auto o = smem_optin.find(fn);
  const unsigned limit = o != smem_optin.end() && o->second > default_smem ? (unsigned)o->second : default_smem;
  if (smem > limit || smem > sizeof attn_smem) return INVALID_VALUE;
  emu_launch(dim3{gx, gy, gz}, dim3{bx, by, bz}, [=] { ((Invoker)fn)(params); });
  return OK;
}
}
