/* test_device.c — runtime/device.c without a GPU.
 *
 *   test_device FAKE_DIR        runs every case below in a child process (its
 *                               own binary, re-executed with a chosen
 *                               environment) and checks its exit status,
 *                               stdout and stderr exactly
 *   test_device --case NAME     one case
 *
 * FAKE_DIR holds stand-ins for libcuda.so.1, libcublasLt.so.13 and
 * libnccl.so.2 (fake_lib*.c, host memory), put first on LD_LIBRARY_PATH
 * for the cases that need a "device". Checked here: the one-line CPU
 * fallback for no driver / PIPEC_DEVICE=cpu / cuInit failing / zero
 * devices, device choice, every prt_* function against the fakes (GEMM
 * row-/column-major mapping against a CPU reference for every transpose
 * and dtype, cubin/PTX choice, NCCL non-blocking init with its config,
 * polling, split, groups, the unique id through the store), the exact error
 * lines of failing calls, and that this binary (which calls every prt_*
 * function) loads no CUDA library at startup. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/device.h"
#include "runtime/store.h"
#include "tests/check.h"

extern char **environ;

/* ------------------------------------------------------------- helpers */

static void *fake_sym(const char *lib, const char *sym) {
  void *h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
  void *p = h ? dlsym(h, sym) : NULL;
  if (!p) {
    printf("FAIL: %s has no %s (is the fake loaded?)\n", lib, sym);
    exit(2);
  }
  return p;
}
#define FAKE_LONG(lib, sym) (((long (*)(void))fake_sym(lib, sym))())
#define CUDA_LIB "libcuda.so.1"
#define LT_LIB "libcublasLt.so.13"
#define NCCL_LIB "libnccl.so.2"

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t v) {
  uint32_t u = (uint32_t)v << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* row-major C (m x n) = op(A) op(B) + beta C + bias, in double */
static void ref_gemm(double *C, const float *A, int ta, const float *B, int tb, const float *bias, int m, int n, int k,
                     float beta, const float *C0) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double acc = 0;
      for (int p = 0; p < k; p++) {
        double a = ta ? A[p * m + i] : A[i * k + p];
        double b = tb ? B[j * k + p] : B[p * n + j];
        acc += a * b;
      }
      if (beta != 0.0f) acc += beta * C0[i * n + j];
      if (bias) acc += bias[j];
      C[i * n + j] = acc;
    }
}

static void fill(float *x, int n, int seed) {
  for (int i = 0; i < n; i++) x[i] = (float)(((i * 37 + seed * 11) % 23) - 11) / 8.0f;
}

static uint64_t upload_f32(PrtDevice *d, const float *x, size_t n) {
  uint64_t p = prt_dev_alloc(d, n * sizeof(float), "test buffer");
  prt_dev_upload(d, p, x, n * sizeof(float), "test upload");
  return p;
}
static uint64_t upload_bf16(PrtDevice *d, const float *x, size_t n) {
  uint16_t *h = malloc(n * 2);
  for (size_t i = 0; i < n; i++) h[i] = to_bf16(x[i]);
  uint64_t p = prt_dev_alloc(d, n * 2, "test buffer");
  prt_dev_upload(d, p, h, n * 2, "test upload");
  free(h);
  return p;
}

/* max |got - ref| / max |ref| */
static double rel_err(const float *got, const double *ref, int n) {
  double err = 0, scale = 0;
  for (int i = 0; i < n; i++) {
    err = fmax(err, fabs(got[i] - ref[i]));
    scale = fmax(scale, fabs(ref[i]));
  }
  return err / (scale > 0 ? scale : 1);
}

/* One GEMM on the device against the reference. */
static double gemm_case(PrtDevice *d, int ta, int tb, int with_bias, float beta, int m, int n, int k, int dtype,
                        int seed) {
  float *A = malloc(sizeof(float) * m * k), *B = malloc(sizeof(float) * k * n), *C0 = malloc(sizeof(float) * m * n);
  float bias[64], *got = malloc(sizeof(float) * m * n);
  double *ref = malloc(sizeof(double) * m * n);
  fill(A, m * k, seed), fill(B, k * n, seed + 1), fill(C0, m * n, seed + 2), fill(bias, n, seed + 3);
  int in_bf16 = dtype >= PRT_GEMM_BF16, out_bf16 = dtype == PRT_GEMM_BF16;
  if (in_bf16) { /* the reference sees what the device sees */
    for (int i = 0; i < m * k; i++) A[i] = from_bf16(to_bf16(A[i]));
    for (int i = 0; i < k * n; i++) B[i] = from_bf16(to_bf16(B[i]));
  }
  if (out_bf16) {
    for (int i = 0; i < m * n; i++) C0[i] = from_bf16(to_bf16(C0[i]));
    for (int i = 0; i < n; i++) bias[i] = from_bf16(to_bf16(bias[i]));
  }
  uint64_t a = in_bf16 ? upload_bf16(d, A, (size_t)m * k) : upload_f32(d, A, (size_t)m * k);
  uint64_t b = in_bf16 ? upload_bf16(d, B, (size_t)k * n) : upload_f32(d, B, (size_t)k * n);
  uint64_t c = out_bf16 ? upload_bf16(d, C0, (size_t)m * n) : upload_f32(d, C0, (size_t)m * n);
  uint64_t bi = !with_bias ? 0 : out_bf16 ? upload_bf16(d, bias, (size_t)n) : upload_f32(d, bias, (size_t)n);
  if (ta == 0 && tb == 1 && beta == 0.0f) prt_gemm(d, c, a, b, bi, m, n, k, dtype, "test gemm");
  else prt_gemm_ex(d, c, a, ta, b, tb, bi, m, n, k, beta, dtype, "test gemm");
  if (out_bf16) {
    uint16_t *h = malloc((size_t)m * n * 2);
    prt_dev_download(d, h, c, (size_t)m * n * 2, "test download");
    for (int i = 0; i < m * n; i++) got[i] = from_bf16(h[i]);
    free(h);
  } else prt_dev_download(d, got, c, sizeof(float) * m * n, "test download");
  ref_gemm(ref, A, ta, B, tb, with_bias ? bias : NULL, m, n, k, beta, C0);
  double e = rel_err(got, ref, m * n);
  prt_dev_free(d, a), prt_dev_free(d, b), prt_dev_free(d, c), prt_dev_free(d, bi);
  free(A), free(B), free(C0), free(got), free(ref);
  return e;
}

static const char fake_cubin[] = "\177ELF fake cubin";
static const char fake_ptx[] = ".version 7.0\n.target sm_80\n// fake vadd\n";

static PrtDevice *open_or_die(void) {
  char why[256];
  PrtDevice *d = prt_device_open(3, 5, why, sizeof why);
  if (!d) {
    printf("FAIL: no (fake) device: %s\n", why);
    exit(2);
  }
  return d;
}

/* --------------------------------------------------------------- cases */

static int case_open(void) { /* world rank 3, local rank 5 unless TEST_LOCAL_RANK says */
  char why[512] = "unset";
  const char *lr = getenv("TEST_LOCAL_RANK");
  PrtDevice *d = prt_device_open(3, lr ? atoi(lr) : 5, why, sizeof why);
  printf("device=%s sm=%d why=%s\n", d ? prt_device_name(d) : "NULL", prt_device_sm(d), why);
  printf("libcuda loaded: %s\n", dlopen(CUDA_LIB, RTLD_NOW | RTLD_NOLOAD) ? "yes" : "no");
  prt_device_close(d);
  return 0;
}

static int case_all(void) {
  char why[256];
  PrtDevice *d = prt_device_open(3, 5, why, sizeof why);
  CHECK(d != NULL, "device opens on the fake driver");
  if (!d) return check_summary();
  CHECK(!strcmp(why, "Fake GPU 0 (sm_90), device 0 of 1"), "why = '%s'", why);
  CHECK(!strcmp(prt_device_name(d), "Fake GPU 0 (sm_90)"), "name '%s'", prt_device_name(d));
  CHECK(prt_device_sm(d) == 90, "sm %d", prt_device_sm(d));
  CHECK(prt_device_memory(d) == (size_t)80 << 30, "memory %zu", prt_device_memory(d));

  /* memory round trip */
  float x[100], y[100], z[100];
  fill(x, 100, 1), fill(y, 100, 2);
  uint64_t px = upload_f32(d, x, 100), py = upload_f32(d, y, 100);
  uint64_t pz = prt_dev_alloc(d, sizeof z, "z");
  memset(z, 0, sizeof z);
  prt_dev_download(d, z, px, sizeof z, "round trip");
  CHECK(!memcmp(x, z, sizeof z), "upload/download round trip");
  uint64_t p0 = prt_dev_alloc(d, 0, "empty");
  CHECK(p0 != 0, "a 0-byte allocation is a real pointer");
  prt_dev_free(d, p0);
  prt_dev_free(d, 0);

  /* modules: which image the driver got */
  const char *(*last_image)(void) = (const char *(*)(void))fake_sym(CUDA_LIB, "fake_cuda_last_image");
  PrtModule *m = prt_module_load(d, fake_cubin, sizeof fake_cubin, 90, fake_ptx, "vadd module");
  CHECK(!strcmp(last_image(), "cubin"), "sm_90 cubin on sm_90: %s", last_image());
  PrtModule *m2 = prt_module_load(d, fake_cubin, sizeof fake_cubin, 80, fake_ptx, "vadd module");
  CHECK(!strcmp(last_image(), "ptx"), "sm_80 cubin on sm_90 takes the PTX: %s", last_image());
  prt_module_load(d, fake_cubin, sizeof fake_cubin, 100, fake_ptx, "vadd module");
  CHECK(!strcmp(last_image(), "ptx"), "sm_100 cubin on sm_90 takes the PTX: %s", last_image());
  prt_module_load(d, NULL, 0, 0, fake_ptx, "vadd module");
  CHECK(!strcmp(last_image(), "ptx"), "no cubin: PTX: %s", last_image());

  int n = 100;
  void *args[] = {&pz, &px, &py, &n};
  prt_launch(d, m, "vadd", 4, 32, 0, args, "vadd");
  prt_dev_sync(d, "vadd");
  prt_dev_download(d, z, pz, sizeof z, "vadd result");
  int ok = 1;
  for (int i = 0; i < 100; i++) ok &= z[i] == x[i] + y[i];
  CHECK(ok, "vadd through prt_launch");
  CHECK(FAKE_LONG(CUDA_LIB, "fake_cuda_funcattr") == 0, "no shared-memory opt-in for 0 bytes");
  prt_launch(d, m2, "vadd", 4, 32, 65536, args, "vadd with 64 KiB");
  CHECK(FAKE_LONG(CUDA_LIB, "fake_cuda_funcattr") == 65536, "64 KiB of dynamic shared memory opted into: %ld",
        FAKE_LONG(CUDA_LIB, "fake_cuda_funcattr"));

  /* GEMMs: every transpose and dtype, shapes with m, n, k all different */
  double e;
  e = gemm_case(d, 0, 1, 1, 0.0f, 4, 3, 5, PRT_GEMM_F32, 1);
  CHECK(e < 1e-6, "prt_gemm fp32 + bias (4x3, k 5): rel err %g", e);
  e = gemm_case(d, 0, 1, 0, 0.0f, 3, 7, 2, PRT_GEMM_F32, 2);
  CHECK(e < 1e-6, "prt_gemm fp32 (3x7, k 2): rel err %g", e);
  e = gemm_case(d, 0, 0, 0, 0.0f, 4, 5, 3, PRT_GEMM_F32, 3);
  CHECK(e < 1e-6, "dinp = dout @ W (transa 0, transb 0): rel err %g", e);
  e = gemm_case(d, 1, 0, 0, 1.0f, 3, 5, 4, PRT_GEMM_F32, 4);
  CHECK(e < 1e-6, "dW += dout^T @ inp (transa 1, transb 0, beta 1): rel err %g", e);
  e = gemm_case(d, 1, 1, 1, 0.5f, 6, 2, 3, PRT_GEMM_F32, 5);
  CHECK(e < 1e-6, "transa 1, transb 1, beta 0.5, bias: rel err %g", e);
  e = gemm_case(d, 0, 1, 1, 0.0f, 4, 3, 5, PRT_GEMM_TF32, 6);
  CHECK(e < 2e-3, "tf32: rel err %g", e);
  CHECK(FAKE_LONG(LT_LIB, "fake_lt_last_compute") == 77, "tf32 asks for CUBLAS_COMPUTE_32F_FAST_TF32: %ld",
        FAKE_LONG(LT_LIB, "fake_lt_last_compute"));
  e = gemm_case(d, 0, 1, 1, 0.0f, 4, 3, 5, PRT_GEMM_BF16, 7);
  CHECK(e < 1e-2, "bf16: rel err %g", e);
  CHECK(FAKE_LONG(LT_LIB, "fake_lt_last_compute") == 68, "bf16 accumulates in CUBLAS_COMPUTE_32F: %ld",
        FAKE_LONG(LT_LIB, "fake_lt_last_compute"));
  e = gemm_case(d, 1, 0, 0, 1.0f, 3, 5, 4, PRT_GEMM_BF16_F32OUT, 8);
  CHECK(e < 1e-6, "bf16 inputs, fp32 C (dW += ...): rel err %g", e);
  unsigned long long ws = ((unsigned long long (*)(void))fake_sym(LT_LIB, "fake_lt_last_workspace"))();
  CHECK(ws == 32ull << 20, "32 MiB workspace offered: %llu", ws);
  /* plans are cached: the same shape again asks for no new heuristic */
  long h0 = FAKE_LONG(LT_LIB, "fake_lt_heuristics"), mm0 = FAKE_LONG(LT_LIB, "fake_lt_matmuls");
  e = gemm_case(d, 0, 1, 1, 0.0f, 4, 3, 5, PRT_GEMM_F32, 9);
  CHECK(e < 1e-6, "cached plan: rel err %g", e);
  CHECK(FAKE_LONG(LT_LIB, "fake_lt_heuristics") == h0, "cached plan: no new heuristic");
  CHECK(FAKE_LONG(LT_LIB, "fake_lt_matmuls") == mm0 + 1, "cached plan: one more matmul");
  /* a misaligned A: its own plan, with the alignment told to cuBLASLt */
  {
    float A[20], B[15], bias[3];
    double ref[12];
    float got[12];
    fill(A, 20, 11), fill(B, 15, 12), fill(bias, 3, 13);
    uint64_t a = prt_dev_alloc(d, sizeof A + 4, "misaligned A");
    prt_dev_upload(d, a + 4, A, sizeof A, "misaligned A");
    uint64_t b = upload_f32(d, B, 15), bi = upload_f32(d, bias, 3), c = prt_dev_alloc(d, sizeof got, "C");
    prt_gemm(d, c, a + 4, b, bi, 4, 3, 5, PRT_GEMM_F32, "misaligned");
    prt_dev_download(d, got, c, sizeof got, "C");
    ref_gemm(ref, A, 0, B, 1, bias, 4, 3, 5, 0.0f, NULL);
    CHECK(rel_err(got, ref, 12) < 1e-6, "misaligned A: rel err %g", rel_err(got, ref, 12));
    CHECK(FAKE_LONG(LT_LIB, "fake_lt_heuristics") == h0 + 1, "misaligned A: a new plan");
    unsigned (*align)(int) = (unsigned (*)(int))fake_sym(LT_LIB, "fake_lt_last_align");
    CHECK(align(1) == 4 && align(0) == 256, "alignment of cuBLASLt's B (our A) 4, A (our B) 256: %u %u", align(1),
          align(0));
    prt_dev_free(d, a), prt_dev_free(d, b), prt_dev_free(d, bi), prt_dev_free(d, c);
  }

  /* NCCL on one rank, no store needed */
  PrtNccl *w = prt_nccl_init(d, NULL, "test", 0, 1, 10.0);
  CHECK(w != NULL, "NCCL world of one");
  const char *(*last_id)(void) = (const char *(*)(void))fake_sym(NCCL_LIB, "fake_nccl_last_id");
  CHECK(!strcmp(last_id(), "fake-nccl-id-42"), "rank 0's unique id reached init: '%s'", last_id());
  long waits0 = FAKE_LONG(CUDA_LIB, "fake_cuda_waits");
  prt_nccl_allreduce(w, px, 100, "grads");
  CHECK(FAKE_LONG(NCCL_LIB, "fake_nccl_last_count") == 100, "all-reduce of 100 floats");
  CHECK(FAKE_LONG(CUDA_LIB, "fake_cuda_waits") == waits0 + 2, "all-reduce ordered after and before compute: %ld waits",
        FAKE_LONG(CUDA_LIB, "fake_cuda_waits") - waits0);
  prt_dev_download(d, z, px, sizeof z, "all-reduced");
  CHECK(!memcmp(x, z, sizeof z), "all-reduce over one rank leaves the data");
  prt_nccl_group_start(w);
  prt_nccl_send(w, 0, px, 64, "send to self");
  prt_nccl_recv(w, 0, pz, 64, "recv from self");
  prt_nccl_group_end(w, "self exchange");
  CHECK(FAKE_LONG(CUDA_LIB, "fake_cuda_waits") == waits0 + 4, "a group is ordered once: %ld waits",
        FAKE_LONG(CUDA_LIB, "fake_cuda_waits") - waits0);
  prt_dev_download(d, z, pz, 64, "received");
  CHECK(!memcmp(x, z, 64), "send/recv in a group");
  PrtNccl *g = prt_nccl_split(w, 0, 0);
  CHECK(g != NULL, "split with color 0");
  PrtNccl *none = prt_nccl_split(w, -1, 0);
  CHECK(none == NULL, "split with no color");
  prt_nccl_allreduce(g, py, 10, "on the split");
  CHECK(FAKE_LONG(NCCL_LIB, "fake_nccl_last_count") == 10, "all-reduce on the split communicator");
  prt_nccl_free(g);
  prt_nccl_free(none);
  prt_nccl_free(w);
  CHECK(FAKE_LONG(NCCL_LIB, "fake_nccl_live") == 0, "every communicator destroyed");

  prt_dev_free(d, px), prt_dev_free(d, py), prt_dev_free(d, pz);
  prt_device_close(d);
  CHECK(FAKE_LONG(CUDA_LIB, "fake_cuda_live") == 0, "close frees memory, streams, events, modules, the context (%ld left)",
        FAKE_LONG(CUDA_LIB, "fake_cuda_live"));
  CHECK(FAKE_LONG(LT_LIB, "fake_lt_live") == 0, "close frees cuBLASLt's objects (%ld left)",
        FAKE_LONG(LT_LIB, "fake_lt_live"));
  return check_summary();
}

static int case_cubin_compat(void) { /* FAKE_CUDA_SM=86 */
  PrtDevice *d = open_or_die();
  const char *(*last_image)(void) = (const char *(*)(void))fake_sym(CUDA_LIB, "fake_cuda_last_image");
  prt_module_load(d, fake_cubin, sizeof fake_cubin, 80, fake_ptx, "m");
  printf("sm_80 cubin on sm_86: %s\n", last_image());
  prt_module_load(d, fake_cubin, sizeof fake_cubin, 89, fake_ptx, "m");
  printf("sm_89 cubin on sm_86: %s\n", last_image());
  prt_device_close(d);
  return 0;
}

static int case_fail_alloc(void) {
  PrtDevice *d = open_or_die();
  prt_dev_alloc(d, 1 << 20, "weights of stage 1");
  return 0;
}

static int case_fail_launch(void) {
  PrtDevice *d = open_or_die();
  PrtModule *m = prt_module_load(d, NULL, 0, 0, fake_ptx, "m");
  uint64_t p = 0;
  int n = 0;
  void *args[] = {&p, &p, &p, &n};
  prt_launch(d, m, "vadd", 2, 128, 0, args, "stage 0 layers.1.mlp");
  return 0;
}

static int case_bad_ptx(void) {
  PrtDevice *d = open_or_die();
  prt_module_load(d, NULL, 0, 0, "//FAIL\n.version 7.0\n", "stage 2 kernels");
  return 0;
}

static int case_no_image(void) { /* FAKE_CUDA_SM=80 */
  PrtDevice *d = open_or_die();
  prt_module_load(d, fake_cubin, sizeof fake_cubin, 90, NULL, "stage 2 kernels");
  return 0;
}

static int case_no_function(void) {
  PrtDevice *d = open_or_die();
  PrtModule *m = prt_module_load(d, NULL, 0, 0, fake_ptx, "m");
  prt_launch(d, m, "nope", 1, 1, 0, NULL, "stage 0");
  return 0;
}

static int case_fail_gemm(void) {
  PrtDevice *d = open_or_die();
  uint64_t p = prt_dev_alloc(d, 4096, "buf");
  prt_gemm(d, p, p, p, p, 4, 3, 5, PRT_GEMM_F32, "layers.0.fc");
  return 0;
}

static int case_nccl_hang(void) {
  PrtDevice *d = open_or_die();
  prt_nccl_init(d, NULL, "run", 0, 1, 0.3);
  return 0;
}

static int case_nccl_fail(void) {
  PrtDevice *d = open_or_die();
  PrtNccl *c = prt_nccl_init(d, NULL, "run", 0, 1, 5.0);
  uint64_t p = prt_dev_alloc(d, 64, "buf");
  prt_nccl_allreduce(c, p, 16, "dp grads of stage 1");
  return 0;
}

static int case_nccl_cpu(void) {
  prt_nccl_init(NULL, NULL, "run", 2, 4, 5.0);
  return 0;
}

/* the unique id through the store: as rank 0 (publishes the library's id)
 * and as rank 1 (takes the id rank 0 published) of a world of 2 */
static int case_nccl_store(void) {
  PrtDevice *d = open_or_die();
  char err[256] = "";
  PrtStore *st = prt_store_open("127.0.0.1", 0, 1, 10.0, err, sizeof err);
  CHECK(st != NULL, "store: %s", err);
  if (!st) return check_summary();
  PrtNccl *c0 = prt_nccl_init(d, st, "job0", 0, 2, 10.0);
  size_t len = 0;
  char *id = prt_store_get(st, "job0/nccl-unique-id", &len, 5.0, err, sizeof err);
  CHECK(id && len == 128 && !strcmp(id, "fake-nccl-id-42"), "rank 0 published its id (%zu bytes): %s", len,
        id ? id : err);
  free(id);
  char mine[128];
  memset(mine, 0, sizeof mine);
  snprintf(mine, sizeof mine, "id-from-rank-0");
  CHECK(prt_store_set(st, "job1/nccl-unique-id", mine, sizeof mine, err, sizeof err) == 0, "set: %s", err);
  PrtNccl *c1 = prt_nccl_init(d, st, "job1", 1, 2, 10.0);
  const char *(*last_id)(void) = (const char *(*)(void))fake_sym(NCCL_LIB, "fake_nccl_last_id");
  CHECK(!strcmp(last_id(), "id-from-rank-0"), "rank 1 used rank 0's id: '%s'", last_id());
  prt_nccl_free(c0);
  prt_nccl_free(c1);
  prt_store_close(st);
  prt_device_close(d);
  return check_summary();
}

static int case_nccl_store_timeout(void) {
  PrtDevice *d = open_or_die();
  char err[256] = "";
  PrtStore *st = prt_store_open("127.0.0.1", 0, 1, 10.0, err, sizeof err);
  if (!st) {
    printf("store: %s\n", err);
    return 2;
  }
  prt_nccl_init(d, st, "job9", 1, 2, 0.3); /* rank 0 never publishes */
  return 0;
}

static const struct {
  const char *name;
  int (*fn)(void);
} cases[] = {
    {"open", case_open},
    {"all", case_all},
    {"cubin-compat", case_cubin_compat},
    {"fail-alloc", case_fail_alloc},
    {"fail-launch", case_fail_launch},
    {"bad-ptx", case_bad_ptx},
    {"no-image", case_no_image},
    {"no-function", case_no_function},
    {"fail-gemm", case_fail_gemm},
    {"nccl-hang", case_nccl_hang},
    {"nccl-fail", case_nccl_fail},
    {"nccl-cpu", case_nccl_cpu},
    {"nccl-store", case_nccl_store},
    {"nccl-store-timeout", case_nccl_store_timeout},
};

/* -------------------------------------------------------- orchestrator */

typedef struct {
  int status; /* exit status, or 128 + signal */
  char out[16384], err[16384];
} Run;

static void slurp(int fd, char *buf, size_t len) {
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, buf, len - 1);
  buf[n > 0 ? n : 0] = 0;
  close(fd);
}

/* Runs `self --case name` with the current environment minus the variables
 * the cases control, plus `extra` (NULL-terminated "K=V"). */
static Run *run(const char *self, const char *name, const char *fake_dir, const char *const *extra) {
  static Run r;
  memset(&r, 0, sizeof r);
  const char *envp[256];
  int ne = 0;
  for (char **e = environ; *e && ne < 200; e++)
    if (strncmp(*e, "LD_LIBRARY_PATH=", 16) && strncmp(*e, "PIPEC_DEVICE=", 13) && strncmp(*e, "FAKE_", 5) &&
        strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21))
      envp[ne++] = *e;
  static char ldpath[4096];
  if (fake_dir) {
    snprintf(ldpath, sizeof ldpath, "LD_LIBRARY_PATH=%s", fake_dir);
    envp[ne++] = ldpath;
  }
  for (int i = 0; extra && extra[i]; i++) envp[ne++] = extra[i];
  envp[ne] = NULL;
  char out_t[] = "/tmp/pipec-test-device-XXXXXX", err_t[] = "/tmp/pipec-test-device-XXXXXX";
  int fo = mkstemp(out_t), fe = mkstemp(err_t);
  if (fo < 0 || fe < 0) {
    perror("mkstemp");
    exit(2);
  }
  unlink(out_t), unlink(err_t);
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fo, 1), dup2(fe, 2);
    char *argv[] = {(char *)self, "--case", (char *)name, NULL};
    execve(self, argv, (char **)envp);
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  slurp(fo, r.out, sizeof r.out);
  slurp(fe, r.err, sizeof r.err);
  return &r;
}

static int loaded_cb(struct dl_phdr_info *info, size_t size, void *data) {
  const char *n = info->dlpi_name ? info->dlpi_name : "";
  if (strstr(n, "libcuda") || strstr(n, "libnccl") || strstr(n, "libcublas") || strstr(n, "libcudart")) {
    printf("FAIL: %s is loaded at startup\n", n);
    ++*(int *)data;
  }
  return 0;
}

#define EXPECT_RUN(r, want_status, want_err)                                                                           \
  do {                                                                                                                 \
    CHECK((r)->status == (want_status), "%s: exit status %d, expected %d; stderr:\n%s", case_name, (r)->status,       \
          (want_status), (r)->err);                                                                                    \
    CHECK(!strcmp((r)->err, (want_err)), "%s: stderr\n  got:      %s  expected: %s", case_name, (r)->err, (want_err)); \
  } while (0)

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--case")) {
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
      if (!strcmp(cases[i].name, argv[2])) return cases[i].fn();
    fprintf(stderr, "no case %s\n", argv[2]);
    return 2;
  }
  if (argc != 2) {
    fprintf(stderr, "usage: test_device FAKE_DIR | --case NAME\n");
    return 2;
  }
  const char *fake = argv[1];

  /* this binary calls every prt_* function, yet no CUDA library is loaded */
  int bad = 0;
  dl_iterate_phdr(loaded_cb, &bad);
  CHECK(bad == 0, "no CUDA library among the loaded objects");

  char self[4096];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  if (sl <= 0) return 2;
  self[sl] = 0;
  const char *case_name;
  Run *r;

  /* no driver at all: only where this machine has none */
  case_name = "no driver";
  r = run(self, "open", NULL, (const char *[]){"TEST_LOCAL_RANK=0", NULL});
  if (strstr(r->err, "no CUDA driver")) {
    EXPECT_RUN(r, 0,
               "pipec: rank 3: no CUDA driver (libcuda.so.1: cannot open shared object file: No such file or "
               "directory); running on the CPU\n");
    CHECK(!strcmp(r->out, "device=NULL sm=0 why=no CUDA driver (libcuda.so.1: cannot open shared object file: No such "
                          "file or directory)\nlibcuda loaded: no\n"),
          "no driver: stdout %s", r->out);
  } else {
    printf("note: this machine has a CUDA driver; the no-driver line is checked only without one\n");
  }

  case_name = "PIPEC_DEVICE=cpu";
  r = run(self, "open", fake, (const char *[]){"PIPEC_DEVICE=cpu", "TEST_LOCAL_RANK=0", NULL});
  EXPECT_RUN(r, 0, "pipec: rank 3: PIPEC_DEVICE=cpu; running on the CPU\n");
  case_name = "the CPU line once per machine: local rank 5 stays quiet";
  r = run(self, "open", fake, (const char *[]){"PIPEC_DEVICE=cpu", NULL});
  EXPECT_RUN(r, 0, "");
  case_name = "PIPEC_DEVICE=cpu";
  CHECK(!strcmp(r->out, "device=NULL sm=0 why=PIPEC_DEVICE=cpu\nlibcuda loaded: no\n"), "cpu: stdout %s", r->out);

  case_name = "cuInit fails";
  r = run(self, "open", fake, (const char *[]){"FAKE_CUDA_INIT=100", "TEST_LOCAL_RANK=0", NULL});
  EXPECT_RUN(r, 0,
             "pipec: rank 3: no usable CUDA device (cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is "
             "detected); running on the CPU\n");
  CHECK(strstr(r->out, "device=NULL sm=0 why=no usable CUDA device (cuInit: CUDA_ERROR_NO_DEVICE") == r->out,
        "cuInit: stdout %s", r->out);

  case_name = "cuInit fails with an unnamed code";
  r = run(self, "open", fake, (const char *[]){"FAKE_CUDA_INIT=12345", "TEST_LOCAL_RANK=0", NULL});
  EXPECT_RUN(r, 0, "pipec: rank 3: no usable CUDA device (cuInit: CUDA error 12345: unknown error); running on the CPU\n");

  case_name = "zero devices";
  r = run(self, "open", fake, (const char *[]){"FAKE_CUDA_DEVICES=0", "TEST_LOCAL_RANK=0", NULL});
  EXPECT_RUN(r, 0, "pipec: rank 3: no CUDA device (cuDeviceGetCount: 0 devices); running on the CPU\n");

  case_name = "PIPEC_DEVICE=cuda without a device";
  r = run(self, "open", fake, (const char *[]){"PIPEC_DEVICE=cuda", "FAKE_CUDA_INIT=100", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: PIPEC_DEVICE=cuda but no usable CUDA device (cuInit: CUDA_ERROR_NO_DEVICE: no "
             "CUDA-capable device is detected)\n");

  case_name = "PIPEC_DEVICE=bogus";
  r = run(self, "open", fake, (const char *[]){"PIPEC_DEVICE=bogus", NULL});
  EXPECT_RUN(r, 1, "pipec: rank 3: PIPEC_DEVICE=bogus: expected auto, cpu or cuda\n");

  case_name = "local rank 5 of 2 devices";
  r = run(self, "open", fake, (const char *[]){"FAKE_CUDA_DEVICES=2", "FAKE_CUDA_SM=80", NULL});
  EXPECT_RUN(r, 0, "");
  CHECK(!strcmp(r->out, "device=Fake GPU 1 (sm_80) sm=80 why=Fake GPU 1 (sm_80), device 1 of 2\nlibcuda loaded: yes\n"),
        "device choice: stdout %s", r->out);

  case_name = "PIPEC_DEVICE=cuda with a device";
  r = run(self, "open", fake, (const char *[]){"PIPEC_DEVICE=cuda", NULL});
  EXPECT_RUN(r, 0, "");

  case_name = "every prt_* function";
  r = run(self, "all", fake, NULL);
  EXPECT_RUN(r, 0, "");
  CHECK(strstr(r->out, " 0 failed\n") != NULL, "all:\n%s", r->out);
  printf("all: %s", r->out);

  case_name = "cubin compatibility";
  r = run(self, "cubin-compat", fake, (const char *[]){"FAKE_CUDA_SM=86", NULL});
  EXPECT_RUN(r, 0, "");
  CHECK(!strcmp(r->out, "sm_80 cubin on sm_86: cubin\nsm_89 cubin on sm_86: ptx\n"), "cubin compat: %s", r->out);

  case_name = "cuMemAlloc fails";
  r = run(self, "fail-alloc", fake, (const char *[]){"FAKE_CUDA_FAIL=cuMemAlloc_v2:2", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: CUDA error in cuMemAlloc (weights of stage 1: 1048576 bytes; 3221225472 of 85899345920 "
             "bytes free): CUDA_ERROR_OUT_OF_MEMORY: out of memory\n");

  case_name = "cuLaunchKernel fails";
  r = run(self, "fail-launch", fake, (const char *[]){"FAKE_CUDA_FAIL=cuLaunchKernel:719", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: CUDA error in cuLaunchKernel (stage 0 layers.1.mlp: kernel vadd, grid 2, block 128, "
             "shmem 0): CUDA_ERROR_LAUNCH_FAILED: unspecified launch failure\n");

  case_name = "cuStreamCreate fails at open";
  r = run(self, "open", fake, (const char *[]){"FAKE_CUDA_FAIL=cuStreamCreate:999", NULL});
  EXPECT_RUN(r, 1, "pipec: rank 3: CUDA error in cuStreamCreate (compute stream): CUDA_ERROR_UNKNOWN: unknown error\n");

  case_name = "bad PTX";
  r = run(self, "bad-ptx", fake, NULL);
  EXPECT_RUN(r, 1,
             "pipec: rank 3: CUDA error in cuModuleLoadDataEx (stage 2 kernels, PTX for a sm_90 device): "
             "CUDA_ERROR_INVALID_PTX: a PTX JIT compilation failed\nfake ptxas: line 3: syntax error\n");

  case_name = "no image";
  r = run(self, "no-image", fake, (const char *[]){"FAKE_CUDA_SM=80", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: CUDA error in cuModuleLoadDataEx (stage 2 kernels: no image for sm_80 (sm_90 cubin, no "
             "PTX)): CUDA_ERROR_NO_BINARY_FOR_GPU: no kernel image is available for execution on the device\n");

  case_name = "no such kernel";
  r = run(self, "no-function", fake, NULL);
  EXPECT_RUN(r, 1,
             "pipec: rank 3: CUDA error in cuModuleGetFunction (stage 0: kernel nope): CUDA_ERROR_NOT_FOUND: named "
             "symbol not found\n");

  case_name = "cublasLtMatmul fails";
  r = run(self, "fail-gemm", fake, (const char *[]){"FAKE_LT_FAIL=cublasLtMatmul:13", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: cuBLASLt error in cublasLtMatmul (layers.0.fc: C(4x3) = A(4x5) @ B^T(5x3) + bias, "
             "fp32): CUBLAS_STATUS_EXECUTION_FAILED: the GPU program failed to execute\n");

  case_name = "cublasLtCreate fails";
  r = run(self, "fail-gemm", fake, (const char *[]){"FAKE_LT_FAIL=cublasLtCreate:7", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: cuBLASLt error in cublasLtCreate (layers.0.fc: C(4x3) = A(4x5) @ B^T(5x3) + bias, "
             "fp32): CUBLAS_STATUS_INVALID_VALUE: an invalid value was used as an argument\n");

  case_name = "NCCL init never completes";
  r = run(self, "nccl-hang", fake, (const char *[]){"FAKE_NCCL_HANG=1", NULL});
  EXPECT_RUN(r, 1,
             "fake-nccl: ncclCommAbort\npipec: rank 3: NCCL error in ncclCommInitRankConfig (world communicator, "
             "rank 0 of 1): not done within 0.3 s: another rank is missing or stuck; communicator aborted\n");

  case_name = "ncclAllReduce fails";
  r = run(self, "nccl-fail", fake, (const char *[]){"FAKE_NCCL_FAIL=ncclAllReduce:2", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: NCCL error in ncclAllReduce (dp grads of stage 1): ncclSystemError: unhandled system "
             "error (run with NCCL_DEBUG=INFO for details) (fake: ncclAllReduce failed)\n");

  case_name = "NCCL init fails";
  r = run(self, "nccl-fail", fake, (const char *[]){"FAKE_NCCL_FAIL=ncclCommInitRankConfig:4", NULL});
  EXPECT_RUN(r, 1,
             "pipec: rank 3: NCCL error in ncclCommInitRankConfig (world communicator, rank 0 of 1): "
             "ncclInvalidArgument: invalid argument (run with NCCL_DEBUG=WARN for details) (fake: "
             "ncclCommInitRankConfig failed)\n");

  case_name = "NCCL on a CPU rank";
  r = run(self, "nccl-cpu", fake, NULL);
  EXPECT_RUN(r, 1,
             "pipec: rank 2: NCCL error in ncclCommInitRankConfig (world communicator, rank 2 of 4): this rank has "
             "no GPU (NCCL needs one)\n");

  case_name = "NCCL unique id through the store";
  r = run(self, "nccl-store", fake, NULL);
  EXPECT_RUN(r, 0, "");
  CHECK(strstr(r->out, " 0 failed\n") != NULL, "nccl-store:\n%s", r->out);

  case_name = "NCCL unique id never published";
  r = run(self, "nccl-store-timeout", fake, NULL);
  CHECK(r->status == 1, "%s: exit status %d; stderr:\n%s", case_name, r->status, r->err);
  CHECK(strstr(r->err, "pipec: rank 3: NCCL error in ncclCommInitRankConfig (world communicator, rank 1 of 2): getting "
                       "the unique id 'job9/nccl-unique-id': ") == r->err,
        "%s: stderr %s", case_name, r->err);

  return check_summary();
}
