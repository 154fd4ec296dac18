/* device_check.c — runtime/device.c on a real GPU: driver, cuBLASLt, NCCL.
 * See tests/gpu/README-device.md. Without a GPU it prints "SKIP: no GPU
 * (...)" and exits 77 (ctest: SKIP_RETURN_CODE 77).
 *
 *   device_check                 every check below, PTX only
 *   device_check CUBIN SM        also loads CUBIN (the vadd kernel compiled
 *                                for sm_SM: device_check --ptx > vadd.ptx;
 *                                ptxas -arch=sm_90 vadd.ptx -o vadd.cubin)
 *   device_check --ptx           prints the PTX of the vadd kernel
 *
 * Checks: memory round trip; GEMMs (fp32, tf32, bf16, bf16 -> fp32; every
 * transpose form) against a double-precision CPU reference by the max
 * relative error (max |gpu - ref| / max |ref|); the PTX kernel, JIT-compiled
 * by the driver, with and without > 48 KiB of dynamic shared memory; NCCL
 * on one rank (all-reduce, send/recv to itself, split). Prints timings of a
 * 4096^3 GEMM per dtype for information. Exit 0 when every check passes. */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/device.h"

/* out[i] = a[i] + b[i] for i < n; one thread per element, 1-D grid */
static const char vadd_ptx[] =
    ".version 7.0\n"
    ".target sm_80\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry vadd(\n"
    "\t.param .u64 vadd_out,\n"
    "\t.param .u64 vadd_a,\n"
    "\t.param .u64 vadd_b,\n"
    "\t.param .u32 vadd_n\n"
    ")\n"
    "{\n"
    "\t.reg .pred %p<2>;\n"
    "\t.reg .b32 %r<6>;\n"
    "\t.reg .f32 %f<4>;\n"
    "\t.reg .b64 %rd<11>;\n"
    "\n"
    "\tld.param.u64 %rd1, [vadd_out];\n"
    "\tld.param.u64 %rd2, [vadd_a];\n"
    "\tld.param.u64 %rd3, [vadd_b];\n"
    "\tld.param.u32 %r1, [vadd_n];\n"
    "\tmov.u32 %r2, %ctaid.x;\n"
    "\tmov.u32 %r3, %ntid.x;\n"
    "\tmov.u32 %r4, %tid.x;\n"
    "\tmad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "\tsetp.ge.s32 %p1, %r5, %r1;\n"
    "\t@%p1 bra $L__done;\n"
    "\tcvta.to.global.u64 %rd4, %rd1;\n"
    "\tcvta.to.global.u64 %rd5, %rd2;\n"
    "\tcvta.to.global.u64 %rd6, %rd3;\n"
    "\tmul.wide.s32 %rd7, %r5, 4;\n"
    "\tadd.s64 %rd8, %rd5, %rd7;\n"
    "\tadd.s64 %rd9, %rd6, %rd7;\n"
    "\tadd.s64 %rd10, %rd4, %rd7;\n"
    "\tld.global.f32 %f1, [%rd8];\n"
    "\tld.global.f32 %f2, [%rd9];\n"
    "\tadd.f32 %f3, %f1, %f2;\n"
    "\tst.global.f32 [%rd10], %f3;\n"
    "$L__done:\n"
    "\tret;\n"
    "}\n";

static int passed, failed;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "ok  " : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  ok ? passed++ : failed++;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (float)((rng >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

static uint64_t upload(PrtDevice *d, const float *x, size_t n, int bf16) {
  size_t bytes = n * (bf16 ? 2 : 4);
  uint64_t p = prt_dev_alloc(d, bytes, "device_check buffer");
  if (bf16) {
    uint16_t *h = malloc(bytes);
    for (size_t i = 0; i < n; i++) h[i] = to_bf16(x[i]);
    prt_dev_upload(d, p, h, bytes, "device_check upload");
    free(h);
  } else prt_dev_upload(d, p, x, bytes, "device_check upload");
  return p;
}

static const char *const dtype_name[] = {"fp32", "tf32", "bf16", "bf16->fp32"};

/* row-major C (m x n) = op(A) op(B) + beta C + bias on the GPU and the CPU */
static void gemm_check(PrtDevice *d, int ta, int tb, int bias_on, float beta, int m, int n, int k, int dtype,
                       double tol) {
  size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
  float *A = malloc(na * 4), *B = malloc(nb * 4), *C0 = malloc(nc * 4), *bias = malloc((size_t)n * 4);
  float *got = malloc(nc * 4);
  double *ref = malloc(nc * 8);
  int in16 = dtype >= PRT_GEMM_BF16, out16 = dtype == PRT_GEMM_BF16;
  for (size_t i = 0; i < na; i++) A[i] = in16 ? from_bf16(to_bf16(frand())) : frand();
  for (size_t i = 0; i < nb; i++) B[i] = in16 ? from_bf16(to_bf16(frand())) : frand();
  for (size_t i = 0; i < nc; i++) C0[i] = out16 ? from_bf16(to_bf16(frand())) : frand();
  for (int i = 0; i < n; i++) bias[i] = out16 ? from_bf16(to_bf16(frand())) : frand();
  uint64_t a = upload(d, A, na, in16), b = upload(d, B, nb, in16), c = upload(d, C0, nc, out16);
  uint64_t bi = bias_on ? upload(d, bias, (size_t)n, out16) : 0;
  prt_gemm_ex(d, c, a, ta, b, tb, bi, m, n, k, beta, dtype, "device_check gemm");
  if (out16) {
    uint16_t *h = malloc(nc * 2);
    prt_dev_download(d, h, c, nc * 2, "device_check download");
    for (size_t i = 0; i < nc; i++) got[i] = from_bf16(h[i]);
    free(h);
  } else prt_dev_download(d, got, c, nc * 4, "device_check download");
  double err = 0, scale = 0;
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double acc = 0;
      for (int p = 0; p < k; p++)
        acc += (double)(ta ? A[(size_t)p * m + i] : A[(size_t)i * k + p]) *
               (double)(tb ? B[(size_t)j * k + p] : B[(size_t)p * n + j]);
      if (beta != 0.0f) acc += beta * C0[(size_t)i * n + j];
      if (bias_on) acc += bias[j];
      ref[(size_t)i * n + j] = acc;
      err = fmax(err, fabs(got[(size_t)i * n + j] - acc));
      scale = fmax(scale, fabs(acc));
    }
  double rel = err / (scale > 0 ? scale : 1);
  check(rel <= tol, "gemm %-10s C(%dx%d) = A%s @ B%s (k %d)%s%s: max rel err %.2e (bound %.0e)", dtype_name[dtype], m,
        n, ta ? "^T" : "", tb ? "^T" : "", k, beta != 0.0f ? " + beta C" : "", bias_on ? " + bias" : "", rel, tol);
  prt_dev_free(d, a), prt_dev_free(d, b), prt_dev_free(d, c), prt_dev_free(d, bi);
  free(A), free(B), free(C0), free(bias), free(got), free(ref);
}

static void gemm_timing(PrtDevice *d, int dtype) {
  const int s = 4096;
  size_t el = dtype >= PRT_GEMM_BF16 ? 2 : 4, elc = dtype == PRT_GEMM_BF16 ? 2 : 4;
  uint64_t a = prt_dev_alloc(d, (size_t)s * s * el, "timing A"), b = prt_dev_alloc(d, (size_t)s * s * el, "timing B");
  uint64_t c = prt_dev_alloc(d, (size_t)s * s * elc, "timing C");
  /* zeros are enough for timing: upload once */
  void *z = calloc((size_t)s * s, el > elc ? el : elc);
  prt_dev_upload(d, a, z, (size_t)s * s * el, "timing"), prt_dev_upload(d, b, z, (size_t)s * s * el, "timing");
  free(z);
  prt_gemm(d, c, a, b, 0, s, s, s, dtype, "timing warm-up");
  prt_dev_sync(d, "timing");
  const int reps = 10;
  double t0 = now_s();
  for (int i = 0; i < reps; i++) prt_gemm(d, c, a, b, 0, s, s, s, dtype, "timing");
  prt_dev_sync(d, "timing");
  double t = (now_s() - t0) / reps;
  printf("info gemm %-10s 4096^3: %.3f ms, %.1f TFLOP/s\n", dtype_name[dtype], t * 1e3, 2.0 * s * s * s / t / 1e12);
  prt_dev_free(d, a), prt_dev_free(d, b), prt_dev_free(d, c);
}

static void vadd_check(PrtDevice *d, PrtModule *m, const char *image, unsigned shmem) {
  const int n = 1000003;
  float *x = malloc(n * 4), *y = malloc(n * 4), *z = malloc(n * 4);
  for (int i = 0; i < n; i++) x[i] = frand(), y[i] = frand();
  uint64_t px = upload(d, x, n, 0), py = upload(d, y, n, 0), pz = prt_dev_alloc(d, (size_t)n * 4, "vadd out");
  int nn = n;
  void *args[] = {&pz, &px, &py, &nn};
  prt_launch(d, m, "vadd", (unsigned)((n + 255) / 256), 256, shmem, args, "device_check vadd");
  prt_dev_sync(d, "vadd");
  prt_dev_download(d, z, pz, (size_t)n * 4, "vadd result");
  int bad = 0;
  for (int i = 0; i < n; i++) bad += z[i] != x[i] + y[i];
  check(bad == 0, "vadd from %s, %d elements, %u bytes of dynamic shared memory: %d wrong", image, n, shmem, bad);
  prt_dev_free(d, px), prt_dev_free(d, py), prt_dev_free(d, pz);
  free(x), free(y), free(z);
}

static void *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *buf = malloc(n > 0 ? (size_t)n : 1);
  *len = fread(buf, 1, n > 0 ? (size_t)n : 0, f);
  fclose(f);
  return buf;
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "--ptx")) {
    fputs(vadd_ptx, stdout);
    return 0;
  }
  const char *lr = getenv("LOCAL_RANK");
  char why[512];
  PrtDevice *d = prt_device_open(0, lr ? atoi(lr) : 0, why, sizeof why);
  if (!d) {
    printf("SKIP: no GPU (%s)\n", why);
    return 77;
  }
  printf("device: %s; %.1f GiB\n", why, (double)prt_device_memory(d) / (1 << 30));

  /* memory */
  {
    const size_t n = (size_t)1 << 22;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = frand();
    uint64_t p = upload(d, x, n, 0);
    memset(y, 0, n * 4);
    prt_dev_download(d, y, p, n * 4, "round trip");
    check(!memcmp(x, y, n * 4), "upload/download round trip of %zu MiB", n * 4 >> 20);
    prt_dev_free(d, p);
    free(x), free(y);
  }

  /* GEMMs: forward, backward input, backward weight, both transposed */
  const double tol[] = {1e-5, 5e-3, 2e-2, 5e-3};
  for (int dt = PRT_GEMM_F32; dt <= PRT_GEMM_BF16_F32OUT; dt++) {
    gemm_check(d, 0, 1, 1, 0.0f, 257, 136, 96, dt, tol[dt]);  /* out = inp @ W^T + b */
    gemm_check(d, 0, 0, 0, 0.0f, 257, 96, 136, dt, tol[dt]);  /* dinp = dout @ W */
    gemm_check(d, 1, 0, 0, 1.0f, 136, 96, 257, dt, tol[dt]);  /* dW += dout^T @ inp */
    gemm_check(d, 1, 1, 1, 0.5f, 64, 48, 80, dt, tol[dt]);
    gemm_check(d, 0, 1, 1, 0.0f, 512, 768, 768, dt, tol[dt]); /* a GPT-2 sized projection */
  }
  for (int dt = PRT_GEMM_F32; dt <= PRT_GEMM_BF16; dt++) gemm_timing(d, dt);

  /* kernels */
  PrtModule *m = prt_module_load(d, NULL, 0, 0, vadd_ptx, "device_check PTX");
  vadd_check(d, m, "PTX", 0);
  vadd_check(d, m, "PTX", 64 * 1024);
  if (argc == 3) {
    size_t len = 0;
    void *cubin = read_file(argv[1], &len);
    check(cubin != NULL, "read %s", argv[1]);
    if (cubin) {
      int sm = atoi(argv[2]);
      PrtModule *mc = prt_module_load(d, cubin, len, sm, NULL, "device_check cubin");
      vadd_check(d, mc, argv[1], 0);
      free(cubin);
    }
  }

  /* NCCL on one rank */
  PrtNccl *w = prt_nccl_init(d, NULL, "device_check", 0, 1, 60.0);
  {
    const size_t n = (size_t)1 << 20;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = frand();
    uint64_t p = upload(d, x, n, 0), q = prt_dev_alloc(d, n * 4, "recv");
    prt_nccl_allreduce(w, p, n, "device_check all-reduce");
    prt_dev_download(d, y, p, n * 4, "all-reduced");
    check(!memcmp(x, y, n * 4), "NCCL all-reduce (sum) over 1 rank of %zu floats leaves them", n);
    prt_nccl_group_start(w);
    prt_nccl_send(w, 0, p, n * 4, "send to self");
    prt_nccl_recv(w, 0, q, n * 4, "recv from self");
    prt_nccl_group_end(w, "self exchange");
    prt_dev_download(d, y, q, n * 4, "received");
    check(!memcmp(x, y, n * 4), "NCCL send/recv to itself in a group");
    PrtNccl *g = prt_nccl_split(w, 0, 0);
    PrtNccl *none = prt_nccl_split(w, -1, 0);
    check(g != NULL && none == NULL, "NCCL split: color 0 gives a communicator, no color none");
    if (g) {
      prt_nccl_allreduce(g, p, n, "split all-reduce");
      prt_dev_download(d, y, p, n * 4, "all-reduced");
      check(!memcmp(x, y, n * 4), "NCCL all-reduce on the split communicator");
    }
    prt_nccl_free(g);
    prt_nccl_free(w);
    prt_dev_free(d, p), prt_dev_free(d, q);
    free(x), free(y);
  }

  prt_device_close(d);
  printf("device_check: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}
