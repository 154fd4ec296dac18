/* device.c — see device.h. The CUDA driver API, cuBLASLt and NCCL through
 * dlopen/dlsym, with pipec's own declarations of the few types and enum
 * values used (values from CUDA 13.0's cuda.h, cublas_api.h, cublasLt.h,
 * library_types.h and NCCL 2.28's nccl.h; all stable across CUDA 12/13). */
#include "runtime/device.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/store.h"

/* ------------------------------------------------------------ CUDA types */

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef void *CUevent;
typedef uint64_t CUdeviceptr;

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_NO_DEVICE = 100,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
  CU_STREAM_NON_BLOCKING = 0x1,
  CU_EVENT_DISABLE_TIMING = 0x2,
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
  /* CUjit_option */
  CU_JIT_INFO_LOG_BUFFER = 3,
  CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
  CU_JIT_ERROR_LOG_BUFFER = 5,
  CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
  CU_JIT_LOG_VERBOSE = 12,
};

static struct {
  void *lib;
  CUresult (*Init)(unsigned);
  CUresult (*GetErrorName)(CUresult, const char **);
  CUresult (*GetErrorString)(CUresult, const char **);
  CUresult (*DeviceGetCount)(int *);
  CUresult (*DeviceGet)(CUdevice *, int);
  CUresult (*DeviceGetName)(char *, int, CUdevice);
  CUresult (*DeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*DeviceTotalMem)(size_t *, CUdevice);
  CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*DevicePrimaryCtxRelease)(CUdevice);
  CUresult (*CtxSetCurrent)(CUcontext);
  CUresult (*StreamCreate)(CUstream *, unsigned);
  CUresult (*StreamDestroy)(CUstream);
  CUresult (*StreamSynchronize)(CUstream);
  CUresult (*StreamQuery)(CUstream);
  CUresult (*StreamWaitEvent)(CUstream, CUevent, unsigned);
  CUresult (*EventCreate)(CUevent *, unsigned);
  CUresult (*EventDestroy)(CUevent);
  CUresult (*EventRecord)(CUevent, CUstream);
  CUresult (*MemAlloc)(CUdeviceptr *, size_t);
  CUresult (*MemFree)(CUdeviceptr);
  CUresult (*MemGetInfo)(size_t *, size_t *);
  CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*MemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*MemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CUresult (*MemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
  CUresult (*MemHostRegister)(void *, size_t, unsigned);
  CUresult (*MemHostUnregister)(void *);
  CUresult (*ModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **);
  CUresult (*ModuleUnload)(CUmodule);
  CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*FuncSetAttribute)(CUfunction, int, int);
  CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                           void **, void **);
} cu;

typedef struct {
  const char *sym; /* the exported name */
  void **slot;
} Sym;

#define SLOT(f) ((void **)&(f))

static const Sym cu_syms[] = {
    {"cuInit", SLOT(cu.Init)},
    {"cuGetErrorName", SLOT(cu.GetErrorName)},
    {"cuGetErrorString", SLOT(cu.GetErrorString)},
    {"cuDeviceGetCount", SLOT(cu.DeviceGetCount)},
    {"cuDeviceGet", SLOT(cu.DeviceGet)},
    {"cuDeviceGetName", SLOT(cu.DeviceGetName)},
    {"cuDeviceGetAttribute", SLOT(cu.DeviceGetAttribute)},
    {"cuDeviceTotalMem_v2", SLOT(cu.DeviceTotalMem)},
    {"cuDevicePrimaryCtxRetain", SLOT(cu.DevicePrimaryCtxRetain)},
    {"cuDevicePrimaryCtxRelease_v2", SLOT(cu.DevicePrimaryCtxRelease)},
    {"cuCtxSetCurrent", SLOT(cu.CtxSetCurrent)},
    {"cuStreamCreate", SLOT(cu.StreamCreate)},
    {"cuStreamDestroy_v2", SLOT(cu.StreamDestroy)},
    {"cuStreamSynchronize", SLOT(cu.StreamSynchronize)},
    {"cuStreamQuery", SLOT(cu.StreamQuery)},
    {"cuStreamWaitEvent", SLOT(cu.StreamWaitEvent)},
    {"cuEventCreate", SLOT(cu.EventCreate)},
    {"cuEventDestroy_v2", SLOT(cu.EventDestroy)},
    {"cuEventRecord", SLOT(cu.EventRecord)},
    {"cuMemAlloc_v2", SLOT(cu.MemAlloc)},
    {"cuMemFree_v2", SLOT(cu.MemFree)},
    {"cuMemGetInfo_v2", SLOT(cu.MemGetInfo)},
    {"cuMemcpyHtoDAsync_v2", SLOT(cu.MemcpyHtoDAsync)},
    {"cuMemcpyDtoHAsync_v2", SLOT(cu.MemcpyDtoHAsync)},
    {"cuMemcpyDtoDAsync_v2", SLOT(cu.MemcpyDtoDAsync)},
    {"cuMemsetD8Async", SLOT(cu.MemsetD8Async)},
    {"cuMemHostRegister_v2", SLOT(cu.MemHostRegister)},
    {"cuMemHostUnregister", SLOT(cu.MemHostUnregister)},
    {"cuModuleLoadDataEx", SLOT(cu.ModuleLoadDataEx)},
    {"cuModuleUnload", SLOT(cu.ModuleUnload)},
    {"cuModuleGetFunction", SLOT(cu.ModuleGetFunction)},
    {"cuFuncSetAttribute", SLOT(cu.FuncSetAttribute)},
    {"cuLaunchKernel", SLOT(cu.LaunchKernel)},
};

/* ------------------------------------------------------- cuBLASLt types */

typedef int cublasStatus_t;
typedef struct {
  uint64_t data[8];
} LtAlgo; /* cublasLtMatmulAlgo_t */
typedef struct {
  LtAlgo algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
} LtHeuristic; /* cublasLtMatmulHeuristicResult_t */

enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_OP_N = 0,
  CUBLAS_OP_T = 1,
  CUBLAS_COMPUTE_32F = 68,
  CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
  CUBLAS_COMPUTE_32F_FAST_16BF = 75,
  CUDA_R_32F = 0,
  CUDA_R_16BF = 14,
  CUBLASLT_MATMUL_DESC_TRANSA = 3,
  CUBLASLT_MATMUL_DESC_TRANSB = 4,
  CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
  CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
  CUBLASLT_EPILOGUE_DEFAULT = 1,
  CUBLASLT_EPILOGUE_BIAS = 4,
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
};

static struct {
  void *lib;
  const char *soname;
  cublasStatus_t (*Create)(void **);
  cublasStatus_t (*Destroy)(void *);
  const char *(*GetStatusName)(cublasStatus_t);
  const char *(*GetStatusString)(cublasStatus_t);
  cublasStatus_t (*MatmulDescCreate)(void **, int, int);
  cublasStatus_t (*MatmulDescDestroy)(void *);
  cublasStatus_t (*MatmulDescSetAttribute)(void *, int, const void *, size_t);
  cublasStatus_t (*MatrixLayoutCreate)(void **, int, uint64_t, uint64_t, int64_t);
  cublasStatus_t (*MatrixLayoutDestroy)(void *);
  cublasStatus_t (*MatmulPreferenceCreate)(void **);
  cublasStatus_t (*MatmulPreferenceDestroy)(void *);
  cublasStatus_t (*MatmulPreferenceSetAttribute)(void *, int, const void *, size_t);
  cublasStatus_t (*MatmulAlgoGetHeuristic)(void *, void *, void *, void *, void *, void *, void *, int, LtHeuristic *,
                                           int *);
  cublasStatus_t (*Matmul)(void *, void *, const void *, const void *, void *, const void *, void *, const void *,
                           const void *, void *, void *, void *, const LtAlgo *, void *, size_t, CUstream);
} lt;

static const Sym lt_syms[] = {
    {"cublasLtCreate", SLOT(lt.Create)},
    {"cublasLtDestroy", SLOT(lt.Destroy)},
    {"cublasLtGetStatusName", SLOT(lt.GetStatusName)},
    {"cublasLtGetStatusString", SLOT(lt.GetStatusString)},
    {"cublasLtMatmulDescCreate", SLOT(lt.MatmulDescCreate)},
    {"cublasLtMatmulDescDestroy", SLOT(lt.MatmulDescDestroy)},
    {"cublasLtMatmulDescSetAttribute", SLOT(lt.MatmulDescSetAttribute)},
    {"cublasLtMatrixLayoutCreate", SLOT(lt.MatrixLayoutCreate)},
    {"cublasLtMatrixLayoutDestroy", SLOT(lt.MatrixLayoutDestroy)},
    {"cublasLtMatmulPreferenceCreate", SLOT(lt.MatmulPreferenceCreate)},
    {"cublasLtMatmulPreferenceDestroy", SLOT(lt.MatmulPreferenceDestroy)},
    {"cublasLtMatmulPreferenceSetAttribute", SLOT(lt.MatmulPreferenceSetAttribute)},
    {"cublasLtMatmulAlgoGetHeuristic", SLOT(lt.MatmulAlgoGetHeuristic)},
    {"cublasLtMatmul", SLOT(lt.Matmul)},
};

/* ----------------------------------------------------------- NCCL types */

typedef int ncclResult_t;
typedef void *ncclComm_t;
typedef struct {
  char internal[128];
} ncclUniqueId;

enum {
  ncclSuccess = 0,
  ncclInProgress = 7,
  ncclUint8 = 1,
  ncclFloat32 = 7,
  ncclSum = 0,
  NCCL_SPLIT_NOCOLOR = -1,
};

/* ncclConfig_t of NCCL 2.28 (ncclConfig_v22800), filled as its
 * NCCL_CONFIG_INITIALIZER does. The library reads the fields up to `size`
 * for the `version` given, so an older NCCL takes it too. */
typedef struct {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char *netName;
  int splitShare;
  int trafficClass;
  const char *commName;
  int collnetEnable;
  int CTAPolicy;
  int shrinkShare;
  int nvlsCTAs;
  int nChannelsPerNetPeer;
  int nvlinkCentricSched;
} NcclConfig;
#if UINTPTR_MAX == 0xffffffffffffffffu
_Static_assert(sizeof(NcclConfig) == 80, "ncclConfig_t of NCCL 2.28 is 80 bytes on LP64");
#endif

#define NCCL_CONFIG_UNDEF_INT INT_MIN
#define NCCL_VERSION_2_28_9 22809 /* NCCL_VERSION(2, 28, 9) */

static void nccl_config_init(NcclConfig *c) {
  memset(c, 0, sizeof *c);
  c->size = sizeof *c;
  c->magic = 0xcafebeef;
  c->version = NCCL_VERSION_2_28_9;
  c->blocking = c->cgaClusterSize = c->minCTAs = c->maxCTAs = NCCL_CONFIG_UNDEF_INT;
  c->netName = NULL;
  c->splitShare = c->trafficClass = NCCL_CONFIG_UNDEF_INT;
  c->commName = NULL;
  c->collnetEnable = c->CTAPolicy = c->shrinkShare = c->nvlsCTAs = NCCL_CONFIG_UNDEF_INT;
  c->nChannelsPerNetPeer = c->nvlinkCentricSched = NCCL_CONFIG_UNDEF_INT;
}

static struct {
  void *lib;
  int version;
  ncclResult_t (*GetVersion)(int *);
  ncclResult_t (*GetUniqueId)(ncclUniqueId *);
  ncclResult_t (*CommInitRankConfig)(ncclComm_t *, int, ncclUniqueId, int, NcclConfig *);
  ncclResult_t (*CommSplit)(ncclComm_t, int, int, ncclComm_t *, NcclConfig *);
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t *);
  ncclResult_t (*CommFinalize)(ncclComm_t);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  const char *(*GetErrorString)(ncclResult_t);
  const char *(*GetLastError)(ncclComm_t);
  ncclResult_t (*AllReduce)(const void *, void *, size_t, int, int, ncclComm_t, CUstream);
  ncclResult_t (*Send)(const void *, size_t, int, int, ncclComm_t, CUstream);
  ncclResult_t (*Recv)(void *, size_t, int, int, ncclComm_t, CUstream);
  ncclResult_t (*GroupStart)(void);
  ncclResult_t (*GroupEnd)(void);
} nc;

static const Sym nc_syms[] = {
    {"ncclGetVersion", SLOT(nc.GetVersion)},
    {"ncclGetUniqueId", SLOT(nc.GetUniqueId)},
    {"ncclCommInitRankConfig", SLOT(nc.CommInitRankConfig)},
    {"ncclCommSplit", SLOT(nc.CommSplit)},
    {"ncclCommGetAsyncError", SLOT(nc.CommGetAsyncError)},
    {"ncclCommFinalize", SLOT(nc.CommFinalize)},
    {"ncclCommDestroy", SLOT(nc.CommDestroy)},
    {"ncclCommAbort", SLOT(nc.CommAbort)},
    {"ncclGetErrorString", SLOT(nc.GetErrorString)},
    {"ncclGetLastError", SLOT(nc.GetLastError)},
    {"ncclAllReduce", SLOT(nc.AllReduce)},
    {"ncclSend", SLOT(nc.Send)},
    {"ncclRecv", SLOT(nc.Recv)},
    {"ncclGroupStart", SLOT(nc.GroupStart)},
    {"ncclGroupEnd", SLOT(nc.GroupEnd)},
};

/* ------------------------------------------------------------ the state */

typedef struct {
  char *name;
  CUfunction fn;
  unsigned shmem_optin; /* dynamic shared memory the kernel was opted into */
} Kernel;

struct PrtModule {
  PrtModule *next;
  CUmodule mod;
  Kernel *k;
  int nk, capk;
  char image[32]; /* "sm_90 cubin" or "PTX" */
};

typedef struct {
  /* the key */
  int m, n, k, ta, tb, dtype, has_bias;
  unsigned align[4]; /* A, B, C, bias: the pointers' alignment (<= 256) */
  /* cuBLASLt objects */
  void *desc, *la, *lb, *lc;
  LtAlgo algo;
  size_t ws;
  int used;
} GemmPlan;

#define GEMM_PLANS 64
#define GEMM_WORKSPACE ((size_t)32 << 20)

struct PrtDevice {
  int rank, ordinal, count, sm;
  CUdevice dev;
  CUcontext ctx;
  CUstream compute, comm;
  CUevent ev_compute, ev_comm;
  size_t memory;
  char name[320];
  PrtModule *modules;
  void *lt_handle;
  CUdeviceptr workspace;
  GemmPlan plans[GEMM_PLANS];
  int nplans, next_plan;
  /* waits on a stream: the watch (the host transport's liveness) between polls, the timeout */
  void (*watch)(void *);
  void *watch_arg;
  double timeout_s;
};

struct PrtNccl {
  PrtDevice *d;
  ncclComm_t comm;
  int rank, world;
  double timeout_s;
  int in_group;
};

/* ---------------------------------------------------------- diagnostics */

static void die(int rank, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int rank, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fflush(stdout);
  fprintf(stderr, "pipec: rank %d: %s\n", rank, msg);
  exit(1);
}

static const char *nz(const char *what) { return what && *what ? what : "pipec runtime"; }

static void cu_error_text(CUresult r, const char **name, const char **str, char *buf, size_t len) {
  *name = NULL, *str = NULL;
  if (cu.GetErrorName && cu.GetErrorName(r, name) != CUDA_SUCCESS) *name = NULL;
  if (cu.GetErrorString && cu.GetErrorString(r, str) != CUDA_SUCCESS) *str = NULL;
  if (!*name) {
    snprintf(buf, len, "CUDA error %d", r);
    *name = buf;
  }
  if (!*str) *str = "unknown error";
}

/* `call` is the API's name as documented (without _v2) */
static void cu_check(int rank, CUresult r, const char *call, const char *what) {
  if (r == CUDA_SUCCESS) return;
  const char *name, *str;
  char buf[32];
  cu_error_text(r, &name, &str, buf, sizeof buf);
  die(rank, "CUDA error in %s (%s): %s: %s", call, nz(what), name, str);
}
#define CU(d, call, name, what) cu_check((d)->rank, (call), name, what)

static void lt_check(int rank, cublasStatus_t s, const char *call, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  const char *name = lt.GetStatusName ? lt.GetStatusName(s) : NULL;
  const char *str = lt.GetStatusString ? lt.GetStatusString(s) : NULL;
  char buf[32];
  if (!name) snprintf(buf, sizeof buf, "cublasStatus %d", s), name = buf;
  die(rank, "cuBLASLt error in %s (%s): %s: %s", call, nz(what), name, str ? str : "unknown status");
}

static const char *nccl_result_name(ncclResult_t r) {
  static const char *const names[] = {"ncclSuccess",       "ncclUnhandledCudaError", "ncclSystemError",
                                      "ncclInternalError", "ncclInvalidArgument",    "ncclInvalidUsage",
                                      "ncclRemoteError",   "ncclInProgress"};
  return r >= 0 && r < (int)(sizeof names / sizeof *names) ? names[r] : "ncclResult";
}

static void nccl_fail(int rank, ncclResult_t r, ncclComm_t comm, const char *call, const char *what) {
  const char *str = nc.GetErrorString ? nc.GetErrorString(r) : NULL;
  const char *last = nc.GetLastError ? nc.GetLastError(comm) : NULL;
  char name[48];
  if (r >= 0 && r <= ncclInProgress) snprintf(name, sizeof name, "%s", nccl_result_name(r));
  else snprintf(name, sizeof name, "ncclResult %d", r);
  die(rank, "NCCL error in %s (%s): %s: %s%s%s%s", call, nz(what), name, str ? str : "unknown result",
      last && *last ? " (" : "", last && *last ? last : "", last && *last ? ")" : "");
}

/* ------------------------------------------------------------- loading */

/* Resolves every symbol; returns the first missing one's name, or NULL. */
static const char *resolve(void *lib, const Sym *syms, size_t n) {
  for (size_t i = 0; i < n; i++) {
    *syms[i].slot = dlsym(lib, syms[i].sym);
    if (!*syms[i].slot) return syms[i].sym;
  }
  return NULL;
}

static int load_driver(char *why, size_t len) {
  if (cu.lib) return 1;
  dlerror();
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *e = dlerror();
    snprintf(why, len, "no CUDA driver (%s)", e ? e : "libcuda.so.1: cannot be loaded");
    return 0;
  }
  const char *missing = resolve(lib, cu_syms, sizeof cu_syms / sizeof *cu_syms);
  if (missing) {
    snprintf(why, len, "CUDA driver too old (libcuda.so.1 has no %s)", missing);
    memset(&cu, 0, sizeof cu);
    dlclose(lib);
    return 0;
  }
  cu.lib = lib;
  return 1;
}

static void load_cublaslt(int rank, const char *what) {
  if (lt.lib) return;
  static const char *const names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
  char errs[1536] = "";
  size_t used = 0;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    dlerror();
    void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char *e = dlerror();
      int w = snprintf(errs + used, sizeof errs - used, "%s%s", used ? "; " : "", e ? e : names[i]);
      if (w > 0) used = used + (size_t)w < sizeof errs ? used + (size_t)w : sizeof errs - 1;
      continue;
    }
    const char *missing = resolve(lib, lt_syms, sizeof lt_syms / sizeof *lt_syms);
    if (missing) die(rank, "cuBLASLt error in dlopen (%s): %s has no %s", nz(what), names[i], missing);
    lt.lib = lib;
    lt.soname = names[i];
    return;
  }
  die(rank, "cuBLASLt error in dlopen (%s): no cuBLASLt library (%s)", nz(what), errs);
}

static void load_nccl(int rank, const char *what) {
  if (nc.lib) return;
  dlerror();
  void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *e = dlerror();
    die(rank, "NCCL error in dlopen (%s): no NCCL library (%s)", nz(what), e ? e : "libnccl.so.2");
  }
  const char *missing = resolve(lib, nc_syms, sizeof nc_syms / sizeof *nc_syms);
  if (missing)
    die(rank, "NCCL error in dlopen (%s): libnccl.so.2 has no %s (NCCL 2.18 or newer is needed)", nz(what), missing);
  nc.lib = lib;
  if (nc.GetVersion(&nc.version) != ncclSuccess) nc.version = 0;
}

/* ------------------------------------------------------------- devices */

PrtDevice *prt_device_open(int rank, int local_rank, char *why, size_t whylen) {
  const char *mode = getenv("PIPEC_DEVICE");
  int require = 0, cpu = 0;
  if (!mode || !*mode || !strcmp(mode, "auto")) {
  } else if (!strcmp(mode, "cpu")) cpu = 1;
  else if (!strcmp(mode, "cuda") || !strcmp(mode, "gpu")) require = 1;
  else die(rank, "PIPEC_DEVICE=%s: expected auto, cpu or cuda", mode);

  char reason[1024];
  if (cpu) {
    snprintf(reason, sizeof reason, "PIPEC_DEVICE=cpu");
    goto on_cpu;
  }
  if (!load_driver(reason, sizeof reason)) goto on_cpu;
  CUresult r = cu.Init(0);
  if (r != CUDA_SUCCESS) {
    const char *name, *str;
    char buf[32];
    cu_error_text(r, &name, &str, buf, sizeof buf);
    snprintf(reason, sizeof reason, "no usable CUDA device (cuInit: %s: %s)", name, str);
    goto on_cpu;
  }
  int count = 0;
  r = cu.DeviceGetCount(&count);
  if (r != CUDA_SUCCESS) {
    const char *name, *str;
    char buf[32];
    cu_error_text(r, &name, &str, buf, sizeof buf);
    snprintf(reason, sizeof reason, "no usable CUDA device (cuDeviceGetCount: %s: %s)", name, str);
    goto on_cpu;
  }
  if (count <= 0) {
    snprintf(reason, sizeof reason, "no CUDA device (cuDeviceGetCount: 0 devices)");
    goto on_cpu;
  }

  PrtDevice *d = calloc(1, sizeof *d);
  if (!d) die(rank, "out of memory");
  d->rank = rank;
  d->count = count;
  d->ordinal = (local_rank < 0 ? 0 : local_rank) % count;
  char what[64];
  snprintf(what, sizeof what, "device %d of %d", d->ordinal, count);
  CU(d, cu.DeviceGet(&d->dev, d->ordinal), "cuDeviceGet", what);
  char name[256] = "";
  CU(d, cu.DeviceGetName(name, (int)sizeof name - 1, d->dev), "cuDeviceGetName", what);
  int major = 0, minor = 0;
  CU(d, cu.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d->dev), "cuDeviceGetAttribute",
     what);
  CU(d, cu.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d->dev), "cuDeviceGetAttribute",
     what);
  d->sm = major * 10 + minor;
  CU(d, cu.DeviceTotalMem(&d->memory, d->dev), "cuDeviceTotalMem", what);
  snprintf(d->name, sizeof d->name, "%s (sm_%d)", name, d->sm);
  CU(d, cu.DevicePrimaryCtxRetain(&d->ctx, d->dev), "cuDevicePrimaryCtxRetain", what);
  CU(d, cu.CtxSetCurrent(d->ctx), "cuCtxSetCurrent", what);
  CU(d, cu.StreamCreate(&d->compute, CU_STREAM_NON_BLOCKING), "cuStreamCreate", "compute stream");
  CU(d, cu.StreamCreate(&d->comm, CU_STREAM_NON_BLOCKING), "cuStreamCreate", "communication stream");
  CU(d, cu.EventCreate(&d->ev_compute, CU_EVENT_DISABLE_TIMING), "cuEventCreate", "compute stream");
  CU(d, cu.EventCreate(&d->ev_comm, CU_EVENT_DISABLE_TIMING), "cuEventCreate", "communication stream");
  if (why && whylen) snprintf(why, whylen, "%s, device %d of %d", d->name, d->ordinal, count);
  return d;

on_cpu:
  if (why && whylen) snprintf(why, whylen, "%s", reason);
  if (require) die(rank, "PIPEC_DEVICE=%s but %s", mode, reason);
  fflush(stdout);
  if (local_rank == 0) fprintf(stderr, "pipec: rank %d: %s; running on the CPU\n", rank, reason); /* once per machine */
  return NULL;
}

static void gemm_plan_free(GemmPlan *p) {
  if (p->desc) lt.MatmulDescDestroy(p->desc);
  if (p->la) lt.MatrixLayoutDestroy(p->la);
  if (p->lb) lt.MatrixLayoutDestroy(p->lb);
  if (p->lc) lt.MatrixLayoutDestroy(p->lc);
  memset(p, 0, sizeof *p);
}

void prt_device_close(PrtDevice *d) {
  if (!d) return;
  CU(d, cu.CtxSetCurrent(d->ctx), "cuCtxSetCurrent", "device close");
  CU(d, cu.StreamSynchronize(d->compute), "cuStreamSynchronize", "device close");
  CU(d, cu.StreamSynchronize(d->comm), "cuStreamSynchronize", "device close");
  for (int i = 0; i < d->nplans; i++) gemm_plan_free(&d->plans[i]);
  if (d->lt_handle) lt_check(d->rank, lt.Destroy(d->lt_handle), "cublasLtDestroy", "device close");
  if (d->workspace) CU(d, cu.MemFree(d->workspace), "cuMemFree", "cuBLASLt workspace");
  for (PrtModule *m = d->modules, *next; m; m = next) {
    next = m->next;
    CU(d, cu.ModuleUnload(m->mod), "cuModuleUnload", "device close");
    for (int i = 0; i < m->nk; i++) free(m->k[i].name);
    free(m->k);
    free(m);
  }
  CU(d, cu.EventDestroy(d->ev_compute), "cuEventDestroy", "device close");
  CU(d, cu.EventDestroy(d->ev_comm), "cuEventDestroy", "device close");
  CU(d, cu.StreamDestroy(d->compute), "cuStreamDestroy", "device close");
  CU(d, cu.StreamDestroy(d->comm), "cuStreamDestroy", "device close");
  CU(d, cu.DevicePrimaryCtxRelease(d->dev), "cuDevicePrimaryCtxRelease", "device close");
  free(d);
}

const char *prt_device_name(const PrtDevice *d) { return d ? d->name : "CPU"; }
int prt_device_sm(const PrtDevice *d) { return d ? d->sm : 0; }
int prt_device_count(const PrtDevice *d) { return d ? d->count : 0; }
size_t prt_device_memory(const PrtDevice *d) { return d ? d->memory : 0; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void prt_device_watch(PrtDevice *d, void (*watch)(void *), void *arg, double timeout_s) {
  d->watch = watch, d->watch_arg = arg, d->timeout_s = timeout_s;
}

/* Waits for stream s by polling (cuStreamQuery), not cuStreamSynchronize:
 * between polls the watch runs (it ends the process when a peer rank is
 * lost: an NCCL operation whose peer died never finishes), and a wait
 * longer than the timeout ends it naming what it waited for. */
static void stream_wait(PrtDevice *d, CUstream s, const char *what) {
  CUresult r = cu.StreamQuery(s);
  if (r == CUDA_SUCCESS) return;
  double t0 = now_s();
  long sleep_ns = 2000;
  for (;;) {
    if (r != CUDA_ERROR_NOT_READY) CU(d, r, "cuStreamQuery", what);
    if (d->watch) d->watch(d->watch_arg);
    if (d->timeout_s > 0 && now_s() - t0 > d->timeout_s)
      die(d->rank, "the GPU did not finish %s within %g s (a kernel or an NCCL operation is stuck; PIPEC_TIMEOUT sets the limit)",
          nz(what), d->timeout_s);
    struct timespec ts = {0, sleep_ns};
    nanosleep(&ts, NULL);
    if (sleep_ns < 200000) sleep_ns *= 2;
    r = cu.StreamQuery(s);
    if (r == CUDA_SUCCESS) return;
  }
}

/* --------------------------------------------------------------- memory */

uint64_t prt_dev_alloc(PrtDevice *d, size_t bytes, const char *what) {
  CUdeviceptr p = 0;
  CUresult r = cu.MemAlloc(&p, bytes ? bytes : 1);
  if (r != CUDA_SUCCESS) {
    size_t free_b = 0, total_b = 0;
    char w[512];
    if (cu.MemGetInfo(&free_b, &total_b) == CUDA_SUCCESS)
      snprintf(w, sizeof w, "%s: %zu bytes; %zu of %zu bytes free", nz(what), bytes, free_b, total_b);
    else snprintf(w, sizeof w, "%s: %zu bytes", nz(what), bytes);
    cu_check(d->rank, r, "cuMemAlloc", w);
  }
  return p;
}

void prt_dev_free(PrtDevice *d, uint64_t ptr) {
  if (ptr) CU(d, cu.MemFree(ptr), "cuMemFree", "device free");
}

void prt_dev_upload(PrtDevice *d, uint64_t dst, const void *src, size_t bytes, const char *what) {
  if (!bytes) return;
  CU(d, cu.MemcpyHtoDAsync(dst, src, bytes, d->compute), "cuMemcpyHtoDAsync", what);
  stream_wait(d, d->compute, what);
}

void prt_dev_download(PrtDevice *d, void *dst, uint64_t src, size_t bytes, const char *what) {
  if (!bytes) return;
  CU(d, cu.MemcpyDtoHAsync(dst, src, bytes, d->compute), "cuMemcpyDtoHAsync", what);
  stream_wait(d, d->compute, what);
}

void prt_dev_copy(PrtDevice *d, uint64_t dst, uint64_t src, size_t bytes, const char *what) {
  if (bytes && dst != src) CU(d, cu.MemcpyDtoDAsync(dst, src, bytes, d->compute), "cuMemcpyDtoDAsync", what);
}

int prt_dev_host_register(PrtDevice *d, void *p, size_t bytes) {
  return bytes && cu.MemHostRegister(p, bytes, 0) == CUDA_SUCCESS ? 0 : -1;
}

void prt_dev_host_unregister(PrtDevice *d, void *p) {
  if (p) CU(d, cu.MemHostUnregister(p), "cuMemHostUnregister", "host memory");
}

void prt_dev_memset(PrtDevice *d, uint64_t dst, int byte, size_t bytes, const char *what) {
  if (bytes) CU(d, cu.MemsetD8Async(dst, (unsigned char)byte, bytes, d->compute), "cuMemsetD8Async", what);
}

void prt_dev_sync(PrtDevice *d, const char *what) {
  stream_wait(d, d->compute, what);
  stream_wait(d, d->comm, what);
}

/* -------------------------------------------------------------- kernels */

/* Prints the JIT log under the error line, then exits. */
static void module_fail(PrtDevice *d, CUresult r, const char *image, const char *what, const char *log) {
  const char *name, *str;
  char buf[32], w[512];
  cu_error_text(r, &name, &str, buf, sizeof buf);
  snprintf(w, sizeof w, "%s, %s for a sm_%d device", nz(what), image, d->sm);
  fflush(stdout);
  fprintf(stderr, "pipec: rank %d: CUDA error in cuModuleLoadDataEx (%s): %s: %s\n", d->rank, w, name, str);
  if (log && *log) {
    size_t n = strlen(log);
    fprintf(stderr, "%s%s", log, log[n - 1] == '\n' ? "" : "\n");
  }
  exit(1);
}

static CUresult module_try(CUmodule *mod, const void *image, char *log, size_t loglen) {
  int opts[3] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, CU_JIT_LOG_VERBOSE};
  void *vals[3] = {log, (void *)(uintptr_t)loglen, (void *)(uintptr_t)0};
  log[0] = 0;
  CUresult r = cu.ModuleLoadDataEx(mod, image, 3, opts, vals);
  log[loglen - 1] = 0;
  return r;
}

PrtModule *prt_module_load(PrtDevice *d, const void *cubin, size_t cubin_len, int cubin_sm, const char *ptx,
                           const char *what) {
  static char log[16384];
  CUmodule mod = NULL;
  const char *image = NULL;
  /* a cubin runs on its own architecture and on later minor versions of it */
  int cubin_ok = cubin && cubin_len && cubin_sm > 0 && cubin_sm / 10 == d->sm / 10 && cubin_sm <= d->sm;
  CUresult r = CUDA_SUCCESS;
  char cubin_name[32];
  snprintf(cubin_name, sizeof cubin_name, "sm_%d cubin", cubin_sm);
  if (cubin_ok) {
    r = module_try(&mod, cubin, log, sizeof log);
    if (r == CUDA_SUCCESS) image = cubin_name;
    else if (!ptx) module_fail(d, r, cubin_name, what, log);
  }
  if (!image) {
    if (!ptx) {
      char w[512];
      snprintf(w, sizeof w, "%s: no image for sm_%d (%s, no PTX)", nz(what), d->sm,
               cubin ? cubin_name : "no cubin");
      die(d->rank, "CUDA error in cuModuleLoadDataEx (%s): CUDA_ERROR_NO_BINARY_FOR_GPU: no kernel image is available "
                   "for execution on the device",
          w);
    }
    r = module_try(&mod, ptx, log, sizeof log);
    if (r != CUDA_SUCCESS) module_fail(d, r, "PTX", what, log);
    image = "PTX";
  }
  PrtModule *m = calloc(1, sizeof *m);
  if (!m) die(d->rank, "out of memory");
  m->mod = mod;
  snprintf(m->image, sizeof m->image, "%s", image);
  m->next = d->modules;
  d->modules = m;
  return m;
}

static Kernel *kernel_get(PrtDevice *d, PrtModule *m, const char *name, const char *what) {
  for (int i = 0; i < m->nk; i++)
    if (!strcmp(m->k[i].name, name)) return &m->k[i];
  if (m->nk == m->capk) {
    int cap = m->capk ? 2 * m->capk : 16;
    Kernel *k = realloc(m->k, (size_t)cap * sizeof *k);
    if (!k) die(d->rank, "out of memory");
    m->k = k, m->capk = cap;
  }
  Kernel *k = &m->k[m->nk];
  memset(k, 0, sizeof *k);
  char w[512];
  snprintf(w, sizeof w, "%s: kernel %s", nz(what), name);
  CU(d, cu.ModuleGetFunction(&k->fn, m->mod, name), "cuModuleGetFunction", w);
  k->name = strdup(name);
  if (!k->name) die(d->rank, "out of memory");
  m->nk++;
  return k;
}

void prt_launch_3d(PrtDevice *d, PrtModule *m, const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                   unsigned by, unsigned shmem, void **args, const char *what) {
  Kernel *k = kernel_get(d, m, name, what);
  char w[512];
  if (shmem > 48 * 1024 && shmem > k->shmem_optin) {
    snprintf(w, sizeof w, "%s: kernel %s, %u bytes of dynamic shared memory", nz(what), name, shmem);
    CU(d, cu.FuncSetAttribute(k->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)shmem),
       "cuFuncSetAttribute", w);
    k->shmem_optin = shmem;
  }
  CUresult r = cu.LaunchKernel(k->fn, gx, gy, gz, bx, by, 1, shmem, d->compute, args, NULL);
  if (r != CUDA_SUCCESS) {
    char g[48] = "", b[24] = ""; /* only the dimensions that are not 1 */
    if (gz != 1) snprintf(g, sizeof g, " x %u x %u", gy, gz);
    else if (gy != 1) snprintf(g, sizeof g, " x %u", gy);
    if (by != 1) snprintf(b, sizeof b, " x %u", by);
    snprintf(w, sizeof w, "%s: kernel %s, grid %u%s, block %u%s, shmem %u", nz(what), name, gx, g, bx, b, shmem);
    cu_check(d->rank, r, "cuLaunchKernel", w);
  }
}

void prt_launch_2d(PrtDevice *d, PrtModule *m, const char *name, unsigned grid, unsigned grid_y, unsigned block,
                   unsigned shmem, void **args, const char *what) {
  prt_launch_3d(d, m, name, grid, grid_y, 1, block, 1, shmem, args, what);
}

void prt_launch(PrtDevice *d, PrtModule *m, const char *name, unsigned grid, unsigned block, unsigned shmem, void **args,
                const char *what) {
  prt_launch_2d(d, m, name, grid, 1, block, shmem, args, what);
}

/* ---------------------------------------------------------------- GEMMs */

static unsigned ptr_align(uint64_t p) {
  if (!p) return 256;
  unsigned a = 1;
  while (a < 256 && !(p & a)) a <<= 1;
  return a;
}

static const char *const dtype_names[] = {"fp32", "tf32", "bf16", "bf16->fp32", "fp32 (bf16 tensor cores)"};

static GemmPlan *gemm_plan(PrtDevice *d, int m, int n, int k, int ta, int tb, int dtype, uint64_t A, uint64_t B,
                           uint64_t C, uint64_t bias, const char *w) {
  unsigned align[4] = {ptr_align(A), ptr_align(B), ptr_align(C), ptr_align(bias)};
  int has_bias = bias != 0;
  for (int i = 0; i < d->nplans; i++) {
    GemmPlan *p = &d->plans[i];
    if (p->m == m && p->n == n && p->k == k && p->ta == ta && p->tb == tb && p->dtype == dtype &&
        p->has_bias == has_bias && !memcmp(p->align, align, sizeof align))
      return p;
  }
  if (!d->lt_handle) {
    lt_check(d->rank, lt.Create(&d->lt_handle), "cublasLtCreate", w);
    char ww[768];
    snprintf(ww, sizeof ww, "%s: cuBLASLt workspace", nz(w));
    d->workspace = prt_dev_alloc(d, GEMM_WORKSPACE, ww);
  }
  GemmPlan *p;
  if (d->nplans < GEMM_PLANS) p = &d->plans[d->nplans++];
  else {
    p = &d->plans[d->next_plan];
    d->next_plan = (d->next_plan + 1) % GEMM_PLANS;
    gemm_plan_free(p);
  }
  p->m = m, p->n = n, p->k = k, p->ta = ta, p->tb = tb, p->dtype = dtype, p->has_bias = has_bias;
  memcpy(p->align, align, sizeof align);

  int in_type = dtype == PRT_GEMM_BF16 || dtype == PRT_GEMM_BF16_F32OUT ? CUDA_R_16BF : CUDA_R_32F;
  int out_type = dtype == PRT_GEMM_BF16 ? CUDA_R_16BF : CUDA_R_32F;
  int compute = dtype == PRT_GEMM_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                : dtype == PRT_GEMM_F32_FAST_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
  const int rank = d->rank;
  /* Row-major C (m x n) is column-major C^T (n x m, ld n), and
   *   C^T = op(B)^T (n x k) @ op(A)^T (k x m),
   * so cuBLASLt's "A" is our B and its "B" is our A. Row-major B stored
   * n x k (tb) is column-major k x n (ld k): transposed to give n x k;
   * stored k x n (!tb) is column-major n x k (ld n) as it is. Likewise our
   * A stored m x k (!ta) is column-major k x m (ld k), used as it is;
   * stored k x m (ta) is column-major m x k (ld m), transposed. */
  int32_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  int32_t opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  lt_check(rank, lt.MatmulDescCreate(&p->desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate", w);
  lt_check(rank, lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa),
           "cublasLtMatmulDescSetAttribute", w);
  lt_check(rank, lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb),
           "cublasLtMatmulDescSetAttribute", w);
  uint32_t epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  lt_check(rank, lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
           "cublasLtMatmulDescSetAttribute", w);
  if (has_bias) {
    const void *bp = (const void *)(uintptr_t)bias; /* its alignment guides the heuristic */
    lt_check(rank, lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp),
             "cublasLtMatmulDescSetAttribute", w);
  }
  /* rows x cols of each column-major layout; ld = rows (packed) */
  const uint64_t a_rows = (uint64_t)(tb ? k : n), a_cols = (uint64_t)(tb ? n : k);
  const uint64_t b_rows = (uint64_t)(ta ? m : k), b_cols = (uint64_t)(ta ? k : m);
  lt_check(rank, lt.MatrixLayoutCreate(&p->la, in_type, a_rows, a_cols, (int64_t)a_rows), "cublasLtMatrixLayoutCreate",
           w);
  lt_check(rank, lt.MatrixLayoutCreate(&p->lb, in_type, b_rows, b_cols, (int64_t)b_rows), "cublasLtMatrixLayoutCreate",
           w);
  lt_check(rank, lt.MatrixLayoutCreate(&p->lc, out_type, (uint64_t)n, (uint64_t)m, n), "cublasLtMatrixLayoutCreate", w);

  void *pref = NULL;
  lt_check(rank, lt.MatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate", w);
  uint64_t ws = GEMM_WORKSPACE;
  lt_check(rank, lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
           "cublasLtMatmulPreferenceSetAttribute", w);
  /* cuBLASLt's "A" is our B, its "B" our A; C and D are both our C */
  uint32_t al[4] = {align[1], align[0], align[2], align[2]};
  static const int al_attr[4] = {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                 CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; i++)
    lt_check(rank, lt.MatmulPreferenceSetAttribute(pref, al_attr[i], &al[i], sizeof al[i]),
             "cublasLtMatmulPreferenceSetAttribute", w);
  LtHeuristic h;
  memset(&h, 0, sizeof h);
  int found = 0;
  lt_check(rank, lt.MatmulAlgoGetHeuristic(d->lt_handle, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &h, &found),
           "cublasLtMatmulAlgoGetHeuristic", w);
  lt_check(rank, lt.MatmulPreferenceDestroy(pref), "cublasLtMatmulPreferenceDestroy", w);
  if (found < 1 || h.state != CUBLAS_STATUS_SUCCESS)
    die(rank, "cuBLASLt error in cublasLtMatmulAlgoGetHeuristic (%s): CUBLAS_STATUS_NOT_SUPPORTED: no algorithm for "
              "this GEMM",
        nz(w));
  p->algo = h.algo;
  p->ws = h.workspaceSize;
  return p;
}

void prt_gemm_ex(PrtDevice *d, uint64_t C, uint64_t A, int transa, uint64_t B, int transb, uint64_t bias, int m, int n,
                 int k, float beta, int dtype, const char *what) {
  char w[640];
  snprintf(w, sizeof w, "%s: C(%dx%d) = A%s(%dx%d) @ B%s(%dx%d)%s%s, %s", nz(what), m, n, transa ? "^T" : "", m, k,
           transb ? "^T" : "", k, n, beta != 0.0f ? " + beta*C" : "", bias ? " + bias" : "",
           dtype >= 0 && dtype <= PRT_GEMM_F32_FAST_BF16 ? dtype_names[dtype] : "?");
  if (dtype < PRT_GEMM_F32 || dtype > PRT_GEMM_F32_FAST_BF16)
    die(d->rank, "cuBLASLt error in prt_gemm (%s): unknown dtype %d", w, dtype);
  if (m < 0 || n < 0 || k <= 0)
    die(d->rank, "cuBLASLt error in prt_gemm (%s): CUBLAS_STATUS_INVALID_VALUE: invalid shape", w);
  if (m == 0 || n == 0) return;
  load_cublaslt(d->rank, w);
  GemmPlan *p = gemm_plan(d, m, n, k, !!transa, !!transb, dtype, A, B, C, bias, w);
  if (bias) {
    const void *bp = (const void *)(uintptr_t)bias;
    lt_check(d->rank, lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp),
             "cublasLtMatmulDescSetAttribute", w);
  }
  const float alpha = 1.0f;
  const void *a = (const void *)(uintptr_t)B, *b = (const void *)(uintptr_t)A;
  void *c = (void *)(uintptr_t)C, *ws = (void *)(uintptr_t)d->workspace;
  lt_check(d->rank,
           lt.Matmul(d->lt_handle, p->desc, &alpha, a, p->la, b, p->lb, &beta, c, p->lc, c, p->lc, &p->algo, ws, p->ws,
                     d->compute),
           "cublasLtMatmul", w);
}

void prt_gemm(PrtDevice *d, uint64_t C, uint64_t A, uint64_t B, uint64_t bias, int m, int n, int k, int dtype,
              const char *what) {
  prt_gemm_ex(d, C, A, 0, B, 1, bias, m, n, k, 0.0f, dtype, what);
}

/* ----------------------------------------------------------------- NCCL */

/* Polls comm until it is no longer in progress; dies on an error, aborts
 * the communicator and dies on the timeout. */
static void nccl_wait(int rank, ncclComm_t comm, double timeout_s, const char *call, const char *what) {
  double t0 = now_s();
  long sleep_ns = 10000;
  for (;;) {
    ncclResult_t state = ncclInProgress;
    ncclResult_t r = nc.CommGetAsyncError(comm, &state);
    if (r != ncclSuccess) nccl_fail(rank, r, comm, "ncclCommGetAsyncError", what);
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) nccl_fail(rank, state, comm, call, what);
    if (now_s() - t0 > timeout_s) {
      nc.CommAbort(comm);
      die(rank, "NCCL error in %s (%s): not done within %g s: another rank is missing or stuck; communicator aborted",
          call, nz(what), timeout_s);
    }
    struct timespec ts = {0, sleep_ns};
    nanosleep(&ts, NULL);
    if (sleep_ns < 1000000) sleep_ns *= 2;
  }
}

static void nccl_result(PrtNccl *c, ncclResult_t r, const char *call, const char *what) {
  if (r == ncclSuccess) return;
  if (r == ncclInProgress) {
    if (!c->in_group) nccl_wait(c->d->rank, c->comm, c->timeout_s, call, what);
    return;
  }
  nccl_fail(c->d->rank, r, c->comm, call, what);
}

/* comm stream waits for the compute stream's work so far */
static void comm_after_compute(PrtDevice *d, const char *what) {
  CU(d, cu.EventRecord(d->ev_compute, d->compute), "cuEventRecord", what);
  CU(d, cu.StreamWaitEvent(d->comm, d->ev_compute, 0), "cuStreamWaitEvent", what);
}

/* compute stream waits for the comm stream's work so far */
static void compute_after_comm(PrtDevice *d, const char *what) {
  CU(d, cu.EventRecord(d->ev_comm, d->comm), "cuEventRecord", what);
  CU(d, cu.StreamWaitEvent(d->compute, d->ev_comm, 0), "cuStreamWaitEvent", what);
}

PrtNccl *prt_nccl_init(PrtDevice *d, struct PrtStore *st, const char *prefix, int rank, int world, double timeout_s) {
  char w[512];
  snprintf(w, sizeof w, "world communicator, rank %d of %d", rank, world);
  const int me = d ? d->rank : rank; /* messages name the process's rank, as the device's do */
  if (!d) die(me, "NCCL error in ncclCommInitRankConfig (%s): this rank has no GPU (NCCL needs one)", w);
  if (world < 1 || rank < 0 || rank >= world)
    die(me, "NCCL error in ncclCommInitRankConfig (%s): invalid rank", w);
  load_nccl(me, w);
  if (timeout_s <= 0) timeout_s = 60;
  CU(d, cu.CtxSetCurrent(d->ctx), "cuCtxSetCurrent", w);

  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  char key[512], err[512];
  snprintf(key, sizeof key, "%s/nccl-unique-id", prefix ? prefix : "");
  if (rank == 0) {
    ncclResult_t r = nc.GetUniqueId(&id);
    if (r != ncclSuccess) nccl_fail(me, r, NULL, "ncclGetUniqueId", w);
    if (world > 1) {
      if (!st) die(me, "NCCL error in ncclGetUniqueId (%s): no store to share the unique id through", w);
      if (prt_store_set(st, key, &id, sizeof id, err, sizeof err) != 0)
        die(me, "NCCL error in ncclGetUniqueId (%s): publishing it as '%s': %s", w, key, err);
    }
  } else {
    if (!st) die(me, "NCCL error in ncclCommInitRankConfig (%s): no store to get the unique id from", w);
    size_t len = 0;
    void *v = prt_store_get(st, key, &len, timeout_s, err, sizeof err);
    if (!v) die(me, "NCCL error in ncclCommInitRankConfig (%s): getting the unique id '%s': %s", w, key, err);
    if (len != sizeof id) {
      free(v);
      die(me, "NCCL error in ncclCommInitRankConfig (%s): unique id '%s' has %zu bytes, expected %zu", w, key, len,
          sizeof id);
    }
    memcpy(&id, v, sizeof id);
    free(v);
  }

  PrtNccl *c = calloc(1, sizeof *c);
  if (!c) die(me, "out of memory");
  c->d = d, c->rank = rank, c->world = world, c->timeout_s = timeout_s;
  NcclConfig cfg;
  nccl_config_init(&cfg);
  cfg.blocking = 0;
  ncclResult_t r = nc.CommInitRankConfig(&c->comm, world, id, rank, &cfg);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (c->comm) nc.CommAbort(c->comm);
    nccl_fail(me, r, NULL, "ncclCommInitRankConfig", w);
  }
  nccl_wait(me, c->comm, timeout_s, "ncclCommInitRankConfig", w);
  return c;
}

PrtNccl *prt_nccl_split(PrtNccl *c, int color, int key) {
  char w[256];
  snprintf(w, sizeof w, "split of rank %d of %d, color %d, key %d", c->rank, c->world, color, key);
  NcclConfig cfg;
  nccl_config_init(&cfg);
  cfg.blocking = 0;
  ncclComm_t comm = NULL;
  ncclResult_t r = nc.CommSplit(c->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &comm, &cfg);
  if (r != ncclSuccess && r != ncclInProgress) nccl_fail(c->d->rank, r, c->comm, "ncclCommSplit", w);
  /* the parent is busy until the split is done, for every rank */
  nccl_wait(c->d->rank, c->comm, c->timeout_s, "ncclCommSplit", w);
  if (color < 0 || !comm) return NULL;
  nccl_wait(c->d->rank, comm, c->timeout_s, "ncclCommSplit", w);
  PrtNccl *g = calloc(1, sizeof *g);
  if (!g) die(c->d->rank, "out of memory");
  *g = *c;
  g->comm = comm;
  g->in_group = 0;
  g->rank = -1, g->world = -1; /* NCCL knows; not needed here */
  return g;
}

void prt_nccl_allreduce_start(PrtNccl *c, uint64_t buf, size_t n, const char *what) {
  if (!n) return;
  if (!c->in_group) comm_after_compute(c->d, what);
  void *p = (void *)(uintptr_t)buf;
  nccl_result(c, nc.AllReduce(p, p, n, ncclFloat32, ncclSum, c->comm, c->d->comm), "ncclAllReduce", what);
}

void prt_nccl_join(PrtNccl *c, const char *what) { compute_after_comm(c->d, what); }

void prt_nccl_allreduce(PrtNccl *c, uint64_t buf, size_t n, const char *what) {
  prt_nccl_allreduce_start(c, buf, n, what);
  if (n && !c->in_group) prt_nccl_join(c, what);
}

void prt_nccl_send(PrtNccl *c, int peer, uint64_t buf, size_t bytes, const char *what) {
  if (!c->in_group) comm_after_compute(c->d, what);
  nccl_result(c, nc.Send((const void *)(uintptr_t)buf, bytes, ncclUint8, peer, c->comm, c->d->comm), "ncclSend", what);
  if (!c->in_group) compute_after_comm(c->d, what);
}

void prt_nccl_recv(PrtNccl *c, int peer, uint64_t buf, size_t bytes, const char *what) {
  if (!c->in_group) comm_after_compute(c->d, what);
  nccl_result(c, nc.Recv((void *)(uintptr_t)buf, bytes, ncclUint8, peer, c->comm, c->d->comm), "ncclRecv", what);
  if (!c->in_group) compute_after_comm(c->d, what);
}

void prt_nccl_group_start(PrtNccl *c) {
  comm_after_compute(c->d, "NCCL group");
  ncclResult_t r = nc.GroupStart();
  if (r != ncclSuccess) nccl_fail(c->d->rank, r, c->comm, "ncclGroupStart", "NCCL group");
  c->in_group = 1;
}

void prt_nccl_group_end(PrtNccl *c, const char *what) {
  c->in_group = 0;
  nccl_result(c, nc.GroupEnd(), "ncclGroupEnd", what);
  compute_after_comm(c->d, what);
}

void prt_nccl_free(PrtNccl *c) {
  if (!c) return;
  int rank = c->d->rank;
  ncclResult_t r = nc.CommFinalize(c->comm);
  if (r != ncclSuccess && r != ncclInProgress) nccl_fail(rank, r, c->comm, "ncclCommFinalize", "communicator free");
  nccl_wait(rank, c->comm, c->timeout_s, "ncclCommFinalize", "communicator free");
  r = nc.CommDestroy(c->comm);
  if (r != ncclSuccess) nccl_fail(rank, r, NULL, "ncclCommDestroy", "communicator free");
  free(c);
}
