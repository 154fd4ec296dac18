/* fake_libcuda.c — a stand-in for libcuda.so.1 for tests/runtime/test_device.c:
 * the driver API entry points runtime/device.c resolves, on host memory (a
 * device pointer is a malloc'ed pointer), with one kernel ("vadd": out[i] =
 * a[i] + b[i]). Its behaviour comes from the environment:
 *   FAKE_CUDA_INIT=N      cuInit returns N (e.g. 100, CUDA_ERROR_NO_DEVICE)
 *   FAKE_CUDA_DEVICES=N   device count (default 1)
 *   FAKE_CUDA_SM=XY       compute capability (default 90)
 *   FAKE_CUDA_FAIL=SYM:N  entry point SYM returns N
 * Allocations are 256-byte aligned, as cuMemAlloc's.
 * A module image that starts with "//FAIL" fails to load with a JIT log.
 * fake_cuda_*() let the test look inside. Built only for the tests; it
 * includes no CUDA header. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
#define EXPORT __attribute__((visibility("default")))

static long live_allocs, live_objects, ctx_refs, waits, records, funcattr_calls, last_funcattr;
static char last_image[16];

static int env_int(const char *name, int def) {
  const char *v = getenv(name);
  return v && *v ? atoi(v) : def;
}

/* FAKE_CUDA_FAIL=SYM:N */
static CUresult injected(const char *sym) {
  const char *v = getenv("FAKE_CUDA_FAIL");
  size_t n = strlen(sym);
  if (v && !strncmp(v, sym, n) && v[n] == ':') return atoi(v + n + 1);
  return 0;
}
#define INJECT(sym)                       \
  do {                                    \
    CUresult r_ = injected(sym);          \
    if (r_) return r_;                    \
  } while (0)

#include "cuda_errors.inc"

EXPORT CUresult cuGetErrorName(CUresult e, const char **s) {
  for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
    if (errors[i].code == e) return *s = errors[i].name, 0;
  *s = NULL;
  return 1;
}
EXPORT CUresult cuGetErrorString(CUresult e, const char **s) {
  for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
    if (errors[i].code == e) return *s = errors[i].str, 0;
  *s = NULL;
  return 1;
}

EXPORT CUresult cuInit(unsigned flags) { return flags ? 1 : env_int("FAKE_CUDA_INIT", 0); }
EXPORT CUresult cuDeviceGetCount(int *n) {
  INJECT("cuDeviceGetCount");
  *n = env_int("FAKE_CUDA_DEVICES", 1);
  return 0;
}
EXPORT CUresult cuDeviceGet(int *d, int ordinal) {
  INJECT("cuDeviceGet");
  if (ordinal < 0 || ordinal >= env_int("FAKE_CUDA_DEVICES", 1)) return 101;
  *d = ordinal;
  return 0;
}
EXPORT CUresult cuDeviceGetName(char *name, int len, int dev) {
  snprintf(name, (size_t)len, "Fake GPU %d", dev);
  return 0;
}
EXPORT CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  int sm = env_int("FAKE_CUDA_SM", 90);
  if (attr == 75) *v = sm / 10;
  else if (attr == 76) *v = sm % 10;
  else return 1;
  return 0;
}
EXPORT CUresult cuDeviceTotalMem_v2(size_t *b, int dev) {
  *b = (size_t)80 << 30;
  return 0;
}
static int the_ctx;
EXPORT CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
  INJECT("cuDevicePrimaryCtxRetain");
  *ctx = &the_ctx;
  ctx_refs++;
  return 0;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
  if (ctx_refs <= 0) return 1;
  ctx_refs--;
  return 0;
}
EXPORT CUresult cuCtxSetCurrent(void *ctx) { return ctx == &the_ctx ? 0 : 201; }

static void *object(void) {
  live_objects++;
  return malloc(1);
}
static CUresult object_free(void *p) {
  if (!p) return 1;
  live_objects--;
  free(p);
  return 0;
}
EXPORT CUresult cuStreamCreate(void **s, unsigned flags) {
  INJECT("cuStreamCreate");
  if (flags != 1) return 1; /* pipec's streams are CU_STREAM_NON_BLOCKING */
  *s = object();
  return 0;
}
EXPORT CUresult cuStreamDestroy_v2(void *s) { return object_free(s); }
EXPORT CUresult cuStreamSynchronize(void *s) {
  INJECT("cuStreamSynchronize");
  return s ? 0 : 1;
}
EXPORT CUresult cuStreamQuery(void *s) {
  INJECT("cuStreamQuery");
  return s ? 0 : 1;
}
EXPORT CUresult cuEventCreate(void **e, unsigned flags) {
  *e = object();
  return 0;
}
EXPORT CUresult cuEventDestroy_v2(void *e) { return object_free(e); }
EXPORT CUresult cuEventRecord(void *e, void *s) {
  records++;
  return e && s ? 0 : 1;
}
EXPORT CUresult cuStreamWaitEvent(void *s, void *e, unsigned flags) {
  waits++;
  return e && s && !flags ? 0 : 1;
}

EXPORT CUresult cuMemAlloc_v2(uint64_t *p, size_t n) {
  INJECT("cuMemAlloc_v2");
  void *m = NULL;
  if (posix_memalign(&m, 256, n ? n : 1)) return 2; /* as cuMemAlloc: 256-byte aligned */
  memset(m, 0xA5, n); /* device memory is not zeroed */
  live_allocs++;
  *p = (uint64_t)(uintptr_t)m;
  return 0;
}
EXPORT CUresult cuMemFree_v2(uint64_t p) {
  if (!p) return 1;
  live_allocs--;
  free((void *)(uintptr_t)p);
  return 0;
}
EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b) {
  *free_b = (size_t)3 << 30;
  *total_b = (size_t)80 << 30;
  return 0;
}
EXPORT CUresult cuMemcpyHtoDAsync_v2(uint64_t d, const void *h, size_t n, void *s) {
  INJECT("cuMemcpyHtoDAsync_v2");
  if (!s) return 1;
  memcpy((void *)(uintptr_t)d, h, n);
  return 0;
}
EXPORT CUresult cuMemcpyDtoHAsync_v2(void *h, uint64_t d, size_t n, void *s) {
  if (!s) return 1;
  memcpy(h, (const void *)(uintptr_t)d, n);
  return 0;
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t h, size_t n, void *s) {
  if (!s) return 1;
  memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)h, n);
  return 0;
}
EXPORT CUresult cuMemsetD8Async(uint64_t d, unsigned char v, size_t n, void *s) {
  if (!s) return 1;
  memset((void *)(uintptr_t)d, v, n);
  return 0;
}

EXPORT CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned flags) {
  INJECT("cuMemHostRegister_v2");
  return p && n && !flags ? 0 : 1;
}
EXPORT CUresult cuMemHostUnregister(void *p) { return p ? 0 : 1; }

EXPORT CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned nopt, int *opts, void **vals) {
  const char *img = image;
  char *log = NULL;
  size_t loglen = 0;
  for (unsigned i = 0; i < nopt; i++) {
    if (opts[i] == 5) log = vals[i];                            /* CU_JIT_ERROR_LOG_BUFFER */
    if (opts[i] == 6) loglen = (size_t)(uintptr_t)vals[i];      /* ..._SIZE_BYTES */
  }
  if (!strncmp(img, "//FAIL", 6)) {
    if (log && loglen) snprintf(log, loglen, "fake ptxas: line 3: syntax error");
    return 218;
  }
  snprintf(last_image, sizeof last_image, "%s", !memcmp(img, "\177ELF", 4) ? "cubin" : "ptx");
  *mod = object();
  return 0;
}
EXPORT CUresult cuModuleUnload(void *m) { return object_free(m); }

static void vadd(unsigned threads, void **args) {
  float *out = (float *)(uintptr_t) * (uint64_t *)args[0];
  const float *a = (const float *)(uintptr_t) * (uint64_t *)args[1];
  const float *b = (const float *)(uintptr_t) * (uint64_t *)args[2];
  int n = *(int *)args[3];
  for (unsigned i = 0; i < threads && (int)i < n; i++) out[i] = a[i] + b[i];
}
EXPORT CUresult cuModuleGetFunction(void **fn, void *mod, const char *name) {
  if (!mod) return 400;
  if (strcmp(name, "vadd")) return 500;
  *fn = (void *)vadd;
  return 0;
}
EXPORT CUresult cuFuncSetAttribute(void *fn, int attr, int value) {
  funcattr_calls++;
  last_funcattr = attr == 8 ? value : -1;
  return 0;
}
EXPORT CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shmem, void *stream, void **args, void **extra) {
  INJECT("cuLaunchKernel");
  if (!stream || extra || gy != 1 || gz != 1 || by != 1 || bz != 1) return 1;
  if (fn != (void *)vadd) return 1;
  vadd(gx * bx, args);
  return 0;
}

/* for the test */
EXPORT long fake_cuda_live(void) { return live_allocs + live_objects + ctx_refs; }
EXPORT long fake_cuda_waits(void) { return waits; }
EXPORT long fake_cuda_records(void) { return records; }
EXPORT long fake_cuda_funcattr(void) { return funcattr_calls ? last_funcattr : 0; }
EXPORT const char *fake_cuda_last_image(void) { return last_image; }
