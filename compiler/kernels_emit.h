/* kernels_emit.h — fusion of the op graph into kernels, and their CUDA C.
 *
 * Contract: kernels_fuse() groups the operations of an OpGraph into the
 * kernels that will run: GEMMs stay library calls (cuBLASLt / BLAS) with
 * their bias and activation fused into one epilogue kernel; a residual add
 * and the layernorm that reads it become one kernel; the token and position
 * embeddings and their sum one; cross-entropy's forward and its gradient one
 * (probabilities never stored); attention one (online softmax); maximal
 * chains of elementwise operations one generated kernel. Each kernel has a
 * signature (kind and compile-time sizes); kernels_emit_cuda() writes one
 * translation unit: the headers of kernels/ (embedded in pipec) and one
 * readable extern "C" wrapper per distinct signature, its sizes baked in,
 * with a comment naming the .pipe modules and lines that use it.
 */
#ifndef PIPEC_KERNELS_EMIT_H
#define PIPEC_KERNELS_EMIT_H
#include <stdio.h>

#include "compiler/opgraph.h"
#include "lib/nvrtc.h"

/* The compile-time sizes a kernel's wrapper bakes in (0 when unused). */
typedef struct KSizes {
  int C, OC, V, act, rows, wpe, bias;
  int nh, nhkv, hs, causal, qs, kvs, os; /* attention */
  double eps, p;
} KSizes;

typedef struct FusedKernel {
  const char *kind;   /* "layernorm_fwd", "gemm", "elementwise", ... */
  const char *sig;    /* kind + sizes: equal signatures share one wrapper */
  KSizes z;           /* the sizes, as numbers */
  int first_op;       /* the op whose module names it */
  int *ops, nops;     /* ops covered */
  int library;        /* 1: a GEMM, a library call, no kernel */
  char *expr;         /* elementwise: the expression over inputs a0..aK */
  int ninputs;
} FusedKernel;

typedef struct KernelPlan {
  FusedKernel *k;
  int n;
  int nfused_ops;    /* ops that share a kernel with another op */
} KernelPlan;

KernelPlan *kernels_fuse(Arena *a, const OpGraph *g, const Program *p);
/* Returns the number of distinct wrappers written. */
int kernels_emit_cuda(FILE *out, const KernelPlan *kp, const OpGraph *g, const Program *p);
void kernels_dump(FILE *out, const KernelPlan *kp, const OpGraph *g, const Program *p);
/* The model's CUDA C in memory and, when NVRTC loads, its cubins for sm_80
 * and sm_90 and PTX for compute_90 (through NVRTC's disk cache). Without
 * NVRTC nimg is 0 and why says so. 0, or -1 with NVRTC's log in err. */
typedef struct KernelImages {
  char name[200];       /* "MODEL.cu" */
  char *source;
  size_t source_len;
  int nkernels;
  NvrtcOutput img[3];
  const char *arch[3];  /* "sm_80", "sm_90", "compute_90" */
  double seconds[3];
  int nimg;
  char why[256];
} KernelImages;
int kernels_compile(const KernelPlan *kp, const OpGraph *g, const Program *p, KernelImages *out, char *err, size_t errlen);
/* The kernel library (every entry point of kernels/ in fp32: the stage
 * programs compute in fp32 on the GPU), the same for every model: what the
 * stage programs launch on a GPU. nkernels counts the headers instantiated. */
int kernels_library_compile(KernelImages *out, char *err, size_t errlen);
/* The library as a build product of pipec: kernels_library_write compiles
 * it into DIR (library.sm_80.cubin, .sm_90.cubin, .compute_90.ptx and
 * library.key, the hash of the source and targets it was made from; without
 * NVRTC only a key of 0, and err says why). kernels_library_load reads them
 * back when the key matches this pipec's library source: 0, or -1 (then
 * compile it). */
int kernels_library_write(const char *dir, char *err, size_t errlen);
int kernels_library_load(const char *dir, KernelImages *out);
void kernels_images_free(KernelImages *k);

#endif
