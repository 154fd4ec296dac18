/* fake_libcublaslt.c — a stand-in for libcublasLt.so.13 for
 * tests/runtime/test_device.c: the cuBLASLt entry points runtime/device.c
 * resolves, computing on host memory with cuBLASLt's documented semantics
 * (column-major, D = alpha op(A) op(B) + beta C [+ bias per row of D], C
 * not read when beta is 0, fp32 or bf16 storage, fp32 accumulation, inputs
 * rounded to tf32 under CUBLAS_COMPUTE_32F_FAST_TF32, to bf16 under
 * CUBLAS_COMPUTE_32F_FAST_16BF). The shapes are
 * checked as the real library checks them, so a wrong row-/column-major
 * mapping fails here. FAKE_LT_FAIL=SYM:N makes SYM return status N.
 * fake_lt_*() let the test look inside. Includes no CUDA header. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int cublasStatus_t;
#define EXPORT __attribute__((visibility("default")))

enum { OK = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15 };
enum { R_32F = 0, R_16BF = 14, COMPUTE_32F = 68, COMPUTE_32F_FAST_16BF = 75, COMPUTE_32F_FAST_TF32 = 77 };

typedef struct {
  int compute, scale;
  int32_t ta, tb;
  uint32_t epilogue;
  const void *bias;
} Desc;
typedef struct {
  int type;
  uint64_t rows, cols;
  int64_t ld;
} Layout;
typedef struct {
  uint64_t ws;
  uint32_t align[4];
} Pref;
typedef struct {
  uint64_t data[8];
} Algo;
typedef struct {
  Algo algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
} Heuristic;

static long live, heuristics, matmuls, last_compute = -1;
static uint64_t last_pref_ws;
static uint32_t last_align[4];

static cublasStatus_t injected(const char *sym) {
  const char *v = getenv("FAKE_LT_FAIL");
  size_t n = strlen(sym);
  if (v && !strncmp(v, sym, n) && v[n] == ':') return atoi(v + n + 1);
  return OK;
}
#define INJECT(sym)                       \
  do {                                    \
    cublasStatus_t r_ = injected(sym);    \
    if (r_) return r_;                    \
  } while (0)

static void *object(size_t size) {
  live++;
  return calloc(1, size);
}
static cublasStatus_t object_free(void *p) {
  if (!p) return INVALID_VALUE;
  live--;
  free(p);
  return OK;
}

EXPORT const char *cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
  case 0: return "CUBLAS_STATUS_SUCCESS";
  case 7: return "CUBLAS_STATUS_INVALID_VALUE";
  case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
  case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
  default: return "<unknown>";
  }
}
EXPORT const char *cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
  case 0: return "success";
  case 7: return "an invalid value was used as an argument";
  case 13: return "the GPU program failed to execute";
  case 15: return "the functionality requested is not supported";
  default: return "<unknown>";
  }
}

EXPORT cublasStatus_t cublasLtCreate(void **h) {
  INJECT("cublasLtCreate");
  *h = object(1);
  return OK;
}
EXPORT cublasStatus_t cublasLtDestroy(void *h) { return object_free(h); }

EXPORT cublasStatus_t cublasLtMatmulDescCreate(void **d, int compute, int scale) {
  if (compute != COMPUTE_32F && compute != COMPUTE_32F_FAST_TF32 && compute != COMPUTE_32F_FAST_16BF) return NOT_SUPPORTED;
  if (scale != R_32F) return INVALID_VALUE;
  Desc *x = object(sizeof *x);
  x->compute = compute, x->scale = scale, x->epilogue = 1;
  *d = x;
  return OK;
}
EXPORT cublasStatus_t cublasLtMatmulDescDestroy(void *d) { return object_free(d); }
EXPORT cublasStatus_t cublasLtMatmulDescSetAttribute(void *d, int attr, const void *buf, size_t size) {
  INJECT("cublasLtMatmulDescSetAttribute");
  Desc *x = d;
  switch (attr) {
  case 3: return size == 4 ? (memcpy(&x->ta, buf, 4), OK) : INVALID_VALUE;
  case 4: return size == 4 ? (memcpy(&x->tb, buf, 4), OK) : INVALID_VALUE;
  case 7: return size == 4 ? (memcpy(&x->epilogue, buf, 4), OK) : INVALID_VALUE;
  case 8: return size == sizeof(void *) ? (memcpy(&x->bias, buf, size), OK) : INVALID_VALUE;
  default: return INVALID_VALUE;
  }
}

EXPORT cublasStatus_t cublasLtMatrixLayoutCreate(void **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  if (type != R_32F && type != R_16BF) return NOT_SUPPORTED;
  if (!rows || !cols || ld < (int64_t)rows) return INVALID_VALUE;
  Layout *x = object(sizeof *x);
  x->type = type, x->rows = rows, x->cols = cols, x->ld = ld;
  *l = x;
  return OK;
}
EXPORT cublasStatus_t cublasLtMatrixLayoutDestroy(void *l) { return object_free(l); }

EXPORT cublasStatus_t cublasLtMatmulPreferenceCreate(void **p) {
  *p = object(sizeof(Pref));
  return OK;
}
EXPORT cublasStatus_t cublasLtMatmulPreferenceDestroy(void *p) { return object_free(p); }
EXPORT cublasStatus_t cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *buf, size_t size) {
  Pref *x = p;
  if (attr == 1 && size == 8) return memcpy(&x->ws, buf, 8), OK;
  if (attr >= 5 && attr <= 8 && size == 4) return memcpy(&x->align[attr - 5], buf, 4), OK;
  return INVALID_VALUE;
}

/* the shape rules of cublasLtMatmul */
static cublasStatus_t check(const Desc *x, const Layout *a, const Layout *b, const Layout *c, const Layout *d) {
  uint64_t ar = x->ta ? a->cols : a->rows, ac = x->ta ? a->rows : a->cols;
  uint64_t br = x->tb ? b->cols : b->rows, bc = x->tb ? b->rows : b->cols;
  if (ar != d->rows || bc != d->cols || ac != br) return INVALID_VALUE;
  if (c->rows != d->rows || c->cols != d->cols || c->type != d->type) return INVALID_VALUE;
  if (a->type != b->type) return NOT_SUPPORTED;
  if (a->type == R_32F && d->type != R_32F) return NOT_SUPPORTED;
  if ((x->compute == COMPUTE_32F_FAST_TF32 || x->compute == COMPUTE_32F_FAST_16BF) && a->type != R_32F) return NOT_SUPPORTED;
  if (x->epilogue != 1 && x->epilogue != 4) return NOT_SUPPORTED;
  return OK;
}

EXPORT cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void *h, void *desc, void *a, void *b, void *c, void *d, void *pref,
                                                     int requested, Heuristic *res, int *count) {
  INJECT("cublasLtMatmulAlgoGetHeuristic");
  heuristics++;
  *count = 0;
  if (!h || requested < 1) return INVALID_VALUE;
  cublasStatus_t s = check(desc, a, b, c, d);
  if (s) return s;
  const Pref *p = pref;
  last_pref_ws = p->ws;
  memcpy(last_align, p->align, sizeof last_align);
  memset(res, 0, sizeof *res);
  res->algo.data[0] = 0xA160;
  res->workspaceSize = p->ws < 4096 ? p->ws : 4096;
  res->state = OK;
  res->wavesCount = 1.0f;
  *count = 1;
  last_compute = ((Desc *)desc)->compute;
  return OK;
}

static float bf16_to_f(uint16_t v) {
  uint32_t u = (uint32_t)v << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint16_t f_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
static float tf32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0xFFF + ((u >> 13) & 1);
  u &= ~0x1FFFu;
  memcpy(&f, &u, 4);
  return f;
}
static float load(const void *p, int type, uint64_t i) {
  return type == R_16BF ? bf16_to_f(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
static void store(void *p, int type, uint64_t i, float v) {
  if (type == R_16BF) ((uint16_t *)p)[i] = f_to_bf16(v);
  else ((float *)p)[i] = v;
}

EXPORT cublasStatus_t cublasLtMatmul(void *h, void *desc, const void *alpha, const void *A, void *la, const void *B,
                                     void *lb, const void *beta, const void *C, void *lc, void *D, void *ld,
                                     const Algo *algo, void *ws, size_t wssize, void *stream) {
  INJECT("cublasLtMatmul");
  const Desc *x = desc;
  const Layout *a = la, *b = lb, *c = lc, *d = ld;
  if (!h || !stream || !algo || algo->data[0] != 0xA160) return INVALID_VALUE;
  if (wssize && !ws) return INVALID_VALUE;
  cublasStatus_t s = check(x, a, b, c, d);
  if (s) return s;
  if (x->epilogue == 4 && !x->bias) return INVALID_VALUE;
  matmuls++;
  const float al = *(const float *)alpha, be = *(const float *)beta;
  const uint64_t K = x->ta ? a->rows : a->cols;
  for (uint64_t j = 0; j < d->cols; j++)
    for (uint64_t i = 0; i < d->rows; i++) {
      double acc = 0;
      for (uint64_t p = 0; p < K; p++) {
        float av = load(A, a->type, x->ta ? p + i * (uint64_t)a->ld : i + p * (uint64_t)a->ld);
        float bv = load(B, b->type, x->tb ? j + p * (uint64_t)b->ld : p + j * (uint64_t)b->ld);
        if (x->compute == COMPUTE_32F_FAST_TF32) av = tf32(av), bv = tf32(bv);
        if (x->compute == COMPUTE_32F_FAST_16BF) av = bf16_to_f(f_to_bf16(av)), bv = bf16_to_f(f_to_bf16(bv));
        acc += (double)av * (double)bv;
      }
      float v = al * (float)acc;
      if (be != 0.0f) v += be * load(C, c->type, i + j * (uint64_t)c->ld);
      if (x->epilogue == 4) v += load(x->bias, d->type, i);
      store(D, d->type, i + j * (uint64_t)d->ld, v);
    }
  return OK;
}

/* for the test */
EXPORT long fake_lt_live(void) { return live; }
EXPORT long fake_lt_heuristics(void) { return heuristics; }
EXPORT long fake_lt_matmuls(void) { return matmuls; }
EXPORT long fake_lt_last_compute(void) { return last_compute; }
EXPORT unsigned long long fake_lt_last_workspace(void) { return last_pref_ws; }
EXPORT unsigned fake_lt_last_align(int i) { return i >= 0 && i < 4 ? last_align[i] : 0; }
