/* device.h — the GPU, when there is one: the CUDA driver API, cuBLASLt and
 * NCCL, each loaded at run time with dlopen, so one stage binary starts on a
 * machine without a GPU driver (and runs on the CPU there, saying so once).
 *
 * Contract.
 * - prt_device_open(rank, local_rank, why, whylen) dlopens libcuda.so.1.
 *   With no driver, a driver without a usable device (cuInit fails), zero
 *   devices, or PIPEC_DEVICE=cpu it returns NULL after printing, on local
 *   rank 0 only (once per machine), one line to stderr,
 *   "pipec: rank R: <why>; running on the CPU", e.g.
 *     pipec: rank 0: no CUDA driver (libcuda.so.1: cannot open shared object file: No such file or directory); running on the CPU
 *     pipec: rank 0: no usable CUDA device (cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected); running on the CPU
 *     pipec: rank 0: no CUDA device (cuDeviceGetCount: 0 devices); running on the CPU
 *     pipec: rank 0: PIPEC_DEVICE=cpu; running on the CPU
 *   and copies <why> into why (when why is not NULL). PIPEC_DEVICE=cuda
 *   (or gpu) turns each of these into an error instead ("pipec: rank R:
 *   PIPEC_DEVICE=cuda but <why>", exit 1); unset or "auto" is the default;
 *   any other value is an error.
 *   Otherwise it picks device local_rank % count (CUDA_VISIBLE_DEVICES is
 *   honoured by the driver itself), retains its primary context (the one
 *   cuBLASLt and NCCL use too) and makes it current, creates a compute
 *   stream and a communication stream, and writes "NAME (sm_XY), device I
 *   of N" into why.
 * - Every driver, cuBLASLt and NCCL call goes through a check that, on
 *   failure, prints one line and exits 1:
 *     pipec: rank R: CUDA error in <call> (<what>): <ERROR_NAME>: <string>
 *     pipec: rank R: cuBLASLt error in <call> (<what>): <STATUS_NAME>: <string>
 *     pipec: rank R: NCCL error in <call> (<what>): <ncclResult name>: <string> [(<ncclGetLastError>)]
 *   <call> is the API name without its _v2 suffix (cuMemAlloc); <what> is
 *   the caller's (the stage and .pipe module), plus sizes where they help.
 *   A missing cuBLASLt or NCCL library is reported the same way when first
 *   needed (cuBLASLt at the first GEMM, NCCL at prt_nccl_init).
 * - Ordering. Kernels, GEMMs and copies run on the compute stream; NCCL on
 *   the communication stream. Each NCCL operation (a group counts as one)
 *   waits for everything enqueued on the compute stream before it, and
 *   compute work enqueued after it waits for it (CUDA events), so results are
 *   always as if there were one stream. prt_dev_upload/download return when
 *   the copy is done (host memory may be reused at once); prt_dev_sync waits
 *   for both streams.
 * - Kernels: prt_module_load() takes the embedded cubin when the device can
 *   run it (same major architecture, cubin_sm <= device sm; an sm_80 cubin
 *   runs on sm_86), else the PTX (JIT by the driver). A failed load prints
 *   the driver's JIT error log.
 * - NCCL: communicators are created non-blocking (ncclCommInitRankConfig
 *   with blocking = 0) and polled with ncclCommGetAsyncError up to the
 *   timeout (then ncclCommAbort and an error naming the timeout); every
 *   operation that returns ncclInProgress is polled the same way; groups by
 *   ncclCommSplit.
 * The declarations of the dlopen'ed functions are pipec's own (no CUDA
 * headers needed at build time, no CUDA library linked).
 */
#ifndef PIPEC_RT_DEVICE_H
#define PIPEC_RT_DEVICE_H
#include <stddef.h>
#include <stdint.h>

typedef struct PrtDevice PrtDevice;
typedef struct PrtModule PrtModule;
typedef struct PrtNccl PrtNccl;

PrtDevice *prt_device_open(int rank, int local_rank, char *why, size_t whylen);
/* Frees what the device holds (modules, cuBLASLt state, streams) and
 * releases the primary context; NULL is a no-op. */
void prt_device_close(PrtDevice *d);
const char *prt_device_name(const PrtDevice *d); /* "NVIDIA H100 80GB HBM3 (sm_90)" */
int prt_device_sm(const PrtDevice *d);            /* 90 */
int prt_device_count(const PrtDevice *d);         /* the GPUs this process sees */
size_t prt_device_memory(const PrtDevice *d);     /* total bytes */
/* (for d = NULL, the CPU: "CPU", 0, 0) */

/* device memory; an allocation that fails reports the bytes asked for and
 * the device's free/total memory. prt_dev_free(d, 0) is a no-op. */
uint64_t prt_dev_alloc(PrtDevice *d, size_t bytes, const char *what);
void prt_dev_free(PrtDevice *d, uint64_t ptr);
void prt_dev_upload(PrtDevice *d, uint64_t dst, const void *src, size_t bytes, const char *what);
void prt_dev_download(PrtDevice *d, void *dst, uint64_t src, size_t bytes, const char *what);
void prt_dev_sync(PrtDevice *d, const char *what);
/* Every wait above polls the stream; between polls it calls watch(arg)
 * (NULL: none), and a wait longer than timeout_s (<= 0: none, the default)
 * ends the process with one line naming what it waited for. The stage
 * runtime's watch polls the host transport, which ends the process naming
 * a lost rank: a rank waiting on an NCCL operation whose peer died exits
 * instead of spinning forever. */
void prt_device_watch(PrtDevice *d, void (*watch)(void *), void *arg, double timeout_s);
/* on the compute stream, in order with kernels (no wait on the host) */
void prt_dev_copy(PrtDevice *d, uint64_t dst, uint64_t src, size_t bytes, const char *what);
void prt_dev_memset(PrtDevice *d, uint64_t dst, int byte, size_t bytes, const char *what);
/* page-locks host memory (cuMemHostRegister) so copies to and from it run
 * at full speed: 0, or -1 when the driver declines (the memory stays usable,
 * its copies only slower); unregister before freeing it */
int prt_dev_host_register(PrtDevice *d, void *p, size_t bytes);
void prt_dev_host_unregister(PrtDevice *d, void *p);

/* kernels: cubin for `sm` (may be NULL) and PTX fallback (NUL-terminated,
 * may be NULL when the cubin is enough); modules live until
 * prt_device_close. */
PrtModule *prt_module_load(PrtDevice *d, const void *cubin, size_t cubin_len, int cubin_sm, const char *ptx, const char *what);
/* launches kernel `name` with a 1-D grid on the compute stream; args as for
 * cuLaunchKernel (an array of pointers to each argument). Dynamic shared
 * memory over 48 KiB is opted into for the kernel on its first launch. */
void prt_launch(PrtDevice *d, PrtModule *m, const char *name, unsigned grid, unsigned block, unsigned shmem, void **args,
                const char *what);
/* the same with a 2-D grid (grid x grid_y blocks) */
void prt_launch_2d(PrtDevice *d, PrtModule *m, const char *name, unsigned grid, unsigned grid_y, unsigned block, unsigned shmem,
                   void **args, const char *what);
/* the general form: a grid of gx x gy x gz blocks of bx x by threads
 * (attention's (query tiles, heads, batch) grids; the column sums'
 * (32, R) blocks) */
void prt_launch_3d(PrtDevice *d, PrtModule *m, const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                   unsigned by, unsigned shmem, void **args, const char *what);

/* GEMM through cuBLASLt: C (m x n) = A (m x k) @ B^T (n x k) [+ bias (n)],
 * row-major as the CPU's k_matmul_forward; bias 0 = none. dtype: */
enum {
  PRT_GEMM_F32 = 0,        /* A, B, C, bias fp32; fp32 compute */
  PRT_GEMM_TF32 = 1,       /* A, B, C, bias fp32; tf32 tensor cores, fp32 accumulate */
  PRT_GEMM_BF16 = 2,       /* A, B, C, bias bf16; fp32 accumulate */
  PRT_GEMM_BF16_F32OUT = 3, /* A, B bf16; C, bias fp32; fp32 accumulate */
  PRT_GEMM_F32_FAST_BF16 = 4 /* A, B, C, bias fp32; inputs rounded to bf16 for the tensor cores, fp32 accumulate
                                (CUBLAS_COMPUTE_32F_FAST_16BF) */
};
void prt_gemm(PrtDevice *d, uint64_t C, uint64_t A, uint64_t B, uint64_t bias, int m, int n, int k, int dtype, const char *what);
/* The general form, for the backward GEMMs (row-major throughout):
 *   C (m x n) = op(A) (m x k) @ op(B) (k x n) + beta * C [+ bias (n)]
 * A is stored m x k (transa = 0) or k x m (transa = 1); B is stored k x n
 * (transb = 0) or n x k (transb = 1). prt_gemm is transa = 0, transb = 1,
 * beta = 0. dinp = dout @ W: (transa 0, transb 0); dW += dout^T @ inp:
 * (transa 1, transb 0, beta 1). */
void prt_gemm_ex(PrtDevice *d, uint64_t C, uint64_t A, int transa, uint64_t B, int transb, uint64_t bias, int m, int n,
                 int k, float beta, int dtype, const char *what);

/* NCCL: one communicator for the world (unique id through the store under
 * prefix: rank 0 sets "<prefix>/nccl-unique-id", the others get it; st may
 * be NULL when world is 1), split by color/key for groups (every rank of
 * the parent calls prt_nccl_split; color < 0 joins no group and returns
 * NULL); fp32 sum all-reduce in place (n floats), send/recv of bytes. */
struct PrtStore;
PrtNccl *prt_nccl_init(PrtDevice *d, struct PrtStore *st, const char *prefix, int rank, int world, double timeout_s);
PrtNccl *prt_nccl_split(PrtNccl *c, int color, int key);
void prt_nccl_allreduce(PrtNccl *c, uint64_t buf, size_t n, const char *what);
/* The all-reduce on the communication stream (after the compute stream's
 * work so far) without making the compute stream wait for it: the compute
 * goes on until prt_nccl_join, which makes the compute stream wait for
 * everything on the communication stream so far (any communicator's). */
void prt_nccl_allreduce_start(PrtNccl *c, uint64_t buf, size_t n, const char *what);
void prt_nccl_join(PrtNccl *c, const char *what);
void prt_nccl_send(PrtNccl *c, int peer, uint64_t buf, size_t bytes, const char *what);
void prt_nccl_recv(PrtNccl *c, int peer, uint64_t buf, size_t bytes, const char *what);
void prt_nccl_group_start(PrtNccl *c);
void prt_nccl_group_end(PrtNccl *c, const char *what);
/* ncclCommFinalize (polled up to the timeout), then ncclCommDestroy; NULL
 * is a no-op. */
void prt_nccl_free(PrtNccl *c);

#endif
