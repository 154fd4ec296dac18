/* stage_dev.c — a stage program on a GPU (see stage_int.h): the device,
 * the kernel library embedded in the binary, the device arena and its host
 * mirror, NCCL's communicators. */
#include "runtime/stage_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/device.h"
#include "runtime/kernels_dev.h"

/* what the generated code holds (compiler/llvmgen.c); weak, so that programs
   without them (the runtime's own tests) link */
typedef struct {
  const char *name;
  const unsigned char *data;
  uint64_t len;
} PrtBlob;
extern const PrtBlob pipec_blobs[] __attribute__((weak));
extern const int pipec_nblobs __attribute__((weak));
extern void pipec_step_dev(void *ctx, char *arena) __attribute__((weak));
extern void pipec_gen_dev(void *ctx, char *arena, char *gen, int pos) __attribute__((weak));

static const PrtBlob *blob(const char *name) {
  for (int i = 0; pipec_blobs && &pipec_nblobs && i < pipec_nblobs; i++)
    if (!strcmp(pipec_blobs[i].name, name)) return &pipec_blobs[i];
  return NULL;
}

/* between polls of a stream: a lost peer ends this rank too (NCCL would wait for it forever) */
static void watch(void *ctx) { prt_comm_poll(((PrtCtx *)ctx)->comm); }

void prt_dev_start(PrtCtx *c, const char *prefix, int gen) {
  char why[512];
  int me = c->env.rank;
  PrtDevice *d = prt_device_open(me, c->env.local_rank, why, sizeof why);
  /* the tied weights' holders, as pipeline ranks; one NCCL communicator
     serves them when all of this rank's tied parameters have the same
     holders (and every rank's do, so that each communicator is exactly one
     set: disjoint sets, named by their first holder) */
  const RtParam *tied = NULL;
  int mixed = 0;
  for (int i = 0; i < c->nparams && !c->templates; i++) {
    const RtParam *p = &c->params[i];
    if (p->nholders < 2) continue;
    if (!tied) tied = p;
    else mixed |= p->nholders != tied->nholders || memcmp(p->holders, tied->holders, sizeof(int) * (size_t)p->nholders);
  }
  /* every rank on a GPU, or none: [ranks with one, ranks whose machine has
     more ranks than GPUs, ranks whose tied weights have several holder sets] */
  double on[3] = {d != NULL, d && c->env.local_world > prt_device_count(d), mixed};
  prt_allreduce_sum_f64(c->world_group, on, 3);
  int code = gen ? pipec_gen_dev != NULL : pipec_step_dev != NULL; /* the device variant of what runs */
  if (on[0] > 0 && (on[0] < c->world || !code)) {
    if (me == 0 && !code)
      fprintf(stderr, "pipec: this stage program has no device code (built by an older pipec); running on the CPU\n");
    else if (me == 0)
      fprintf(stderr, "pipec: %d of %d ranks have a GPU; every rank runs on the CPU (set PIPEC_DEVICE=cuda to require one)\n",
              (int)on[0], c->world);
    prt_device_close(d);
    return;
  }
  if (!d) return; /* no rank has one: prt_device_open said why, once per machine */
  /* the kernel library: the cubin of the device's architecture, else the PTX */
  int sm = prt_device_sm(d), csm = sm >= 90 ? 90 : 80;
  char name[64];
  snprintf(name, sizeof name, "library.sm_%d.cubin", csm);
  const PrtBlob *cub = sm >= 80 ? blob(name) : NULL, *ptx = blob("library.compute_90.ptx");
  if (!cub && !ptx)
    prt_die(c, "this stage program embeds no CUDA kernels (pipec was built without NVRTC); set PIPEC_DEVICE=cpu to run it on the CPU");
  char *ptxz = NULL;
  if (ptx) { /* NUL-terminated for the driver */
    ptxz = malloc(ptx->len + 1);
    if (!ptxz) prt_die(c, "out of memory");
    memcpy(ptxz, ptx->data, ptx->len), ptxz[ptx->len] = 0;
  }
  char what[200];
  snprintf(what, sizeof what, "%s stage %d: the kernel library", c->model, c->stage);
  PrtModule *m = prt_module_load(d, cub ? cub->data : NULL, cub ? cub->len : 0, cub ? csm : 0, ptxz, what);
  free(ptxz);
  prt_dev_kernels_bind(d, m);
  snprintf(what, sizeof what, "%s stage %d", c->model, c->stage);
  prt_dev_kernels_what(what);
  snprintf(what, sizeof what, "%s stage %d: the arena (the plan's %lld bytes)", c->model, c->stage, (long long)c->total);
  c->darena = (char *)(uintptr_t)prt_dev_alloc(d, (size_t)c->total, what);
  c->dev = d;
  prt_device_watch(d, watch, c, c->env.timeout_s);
  c->pinned = 0; /* the host mirror is page-locked once the runtime has it (prt_dev_push) */
  /* NCCL when each GPU has one rank (it refuses two); tp and dp groups by split */
  int nccl = on[1] == 0; /* (one rank too: the job's communicator exists, as it would with more) */
  if (nccl) { /* (every rank makes every split, in this order) */
    c->nccl = prt_nccl_init(d, c->store, prefix, me, c->world, c->env.timeout_s);
    if (c->tp > 1) c->nccl_tp = prt_nccl_split(c->nccl, c->rk_pipe[me] * 4096 + c->rk_pp[me], me);
    if (c->dp > 1 && !c->templates) c->nccl_dp = prt_nccl_split(c->nccl, c->rk_pp[me] * 4096 + c->rk_tp[me], me);
    if (c->pp > 1) /* a pipeline's ranks at one tp rank, numbered by pp rank (NCCL's peers are pp ranks);
                      every rank of a pipeline has its schedule, so they agree on p2p_nccl */
      c->nccl_pp = prt_nccl_split(c->nccl, c->p2p_nccl ? c->rk_pipe[me] * 4096 + c->rk_tp[me] : -1, c->rk_pp[me]);
    if (c->pp > 1 && !c->templates) {
      int color = -1;
      if (tied && !on[2]) {
        int first = tied->holders[0];
        for (int k = 1; k < tied->nholders; k++) first = tied->holders[k] < first ? tied->holders[k] : first;
        color = (c->rk_pipe[me] * c->tp + c->rk_tp[me]) * 4096 + first;
      }
      c->nccl_tied = prt_nccl_split(c->nccl, color, c->rk_pp[me]);
    }
  }
  if (me == 0) {
    fprintf(stderr, "pipec: rank 0: %s; the stage programs %s on the GPU", why, gen ? "generate" : "run");
    if (nccl && c->world == 1) fprintf(stderr, ", NCCL communicator of 1 rank");
    else if (nccl && c->pp > 1 && gen) fprintf(stderr, ", NCCL for all-reduces; the pipeline's sends and receives through the host transport (generation)");
    else if (nccl && c->pp > 1 && c->p2p_nccl) fprintf(stderr, ", NCCL for all-reduces and the pipeline's sends and receives");
    else if (nccl && c->pp > 1)
      fprintf(stderr, ", NCCL for all-reduces; the pipeline's sends and receives through the host transport (on NCCL's rendezvous sends this schedule would wait forever: %s)",
              c->p2p_why);
    else if (nccl) fprintf(stderr, ", NCCL for all-reduces");
    else if (c->world > 1) fprintf(stderr, ", communicating through the host transport (ranks share a GPU, which NCCL refuses)");
    fprintf(stderr, "\n");
  }
  /* bf16 / tf32: the GEMMs on the tensor cores (inputs rounded to bf16 or
     tf32, fp32 accumulation and storage) */
  int bf16 = !strcmp(c->precision, "bf16"), tf32 = !strcmp(c->precision, "tf32");
  prt_dev_kernels_gemm(bf16 ? PRT_GEMM_F32_FAST_BF16 : tf32 ? PRT_GEMM_TF32 : PRT_GEMM_F32);
  if ((bf16 || tf32) && me == 0)
    printf("pipec: precision %s: GEMMs on the %s tensor cores; activations, weights and the other kernels in fp32\n", c->precision,
           c->precision);
}

/* FLOP/s of this rank's GPU: the best of 4 timed fp32 GEMMs (n^3) after a
   warm-up, n = 4096, or 512 where that one already takes over 10 ms (an
   emulated device) */
double prt_dev_gemm_rate(PrtCtx *c) {
  double best = 0;
  for (int n = 512; n <= 4096; n *= 8) {
    uint64_t a = prt_dev_alloc(c->dev, sizeof(float) * 3 * (size_t)n * (size_t)n, "the GEMM rate measurement");
    prt_dev_memset(c->dev, a, 0, sizeof(float) * 3 * (size_t)n * (size_t)n, "the GEMM rate measurement");
    float *A = (float *)(uintptr_t)a, *B = A + (size_t)n * n, *C = B + (size_t)n * n;
    double t_best = 1e30;
    for (int k = 0; k < 5; k++) {
      prt_dev_sync(c->dev, "the GEMM rate measurement");
      struct timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      d_matmul_forward(C, A, B, NULL, n, n, n);
      prt_dev_sync(c->dev, "the GEMM rate measurement");
      clock_gettime(CLOCK_MONOTONIC, &t1);
      double t = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
      if (k && t < t_best) t_best = t;
    }
    prt_dev_free(c->dev, a);
    best = 2.0 * n * n * n / t_best;
    if (t_best > 0.01) break;
  }
  return best;
}

/* the device variant's calls, when the .pipe module changes: error lines of
   the kernels that follow name it ("gpt2 stage 1 layers.5.attn: d_X: ...") */
void prt_dev_op(void *ctx, const char *module) {
  PrtCtx *c = ctx;
  char what[300];
  snprintf(what, sizeof what, "%s stage %d %s", c->model, c->stage, module);
  prt_dev_kernels_what(what);
}

void *prt_dev_mirror(PrtCtx *c, const void *p, size_t bytes) {
  const char *q = p;
  if (q >= c->darena && q + bytes <= c->darena + c->total) return c->arena + (q - c->darena);
  if (c->dgen && q >= c->dgen && q + bytes <= c->dgen + c->gen_bytes) return c->hgen + (q - c->dgen);
  prt_die(c, "internal error: %zu bytes at device address %p are outside the arena", bytes, p);
}

char *prt_dev_gen_region(PrtCtx *c, char *host, int64_t bytes) {
  char what[200];
  snprintf(what, sizeof what, "%s stage %d: generation's caches (%lld bytes)", c->model, c->stage, (long long)bytes);
  c->dgen = (char *)(uintptr_t)prt_dev_alloc(c->dev, (size_t)bytes, what);
  prt_dev_memset(c->dev, (uint64_t)(uintptr_t)c->dgen, 0, (size_t)bytes, what);
  c->hgen = host, c->gen_bytes = bytes;
  return c->dgen;
}

void *prt_dev_in(PrtCtx *c, const void *p, size_t bytes, const char *what) {
  void *h = prt_dev_mirror(c, p, bytes);
  prt_dev_download(c->dev, h, (uint64_t)(uintptr_t)p, bytes, what);
  return h;
}

void prt_dev_out(PrtCtx *c, void *p, const void *h, size_t bytes, const char *what) {
  prt_dev_mirror(c, p, bytes);
  prt_dev_upload(c->dev, (uint64_t)(uintptr_t)p, h, bytes, what);
}

void prt_dev_push(PrtCtx *c) {
  if (c->dev && !c->pinned) /* copies through the mirror at full speed; without it they still work, slower */
    c->pinned = !prt_dev_host_register(c->dev, c->arena, (size_t)c->total);
  if (c->dev) prt_dev_upload(c->dev, (uint64_t)(uintptr_t)c->darena, c->arena, (size_t)c->total, "the arena to the GPU");
}

void prt_dev_pull(PrtCtx *c) {
  if (!c->dev) return;
  prt_dev_download(c->dev, c->arena + c->params_off, (uint64_t)(uintptr_t)(c->darena + c->params_off),
                   sizeof(float) * (size_t)c->floats, "the parameters to the host");
  size_t optim = sizeof(float) * (size_t)c->floats * (strcmp(c->optimizer, "adamw") ? 1 : 2);
  if (c->optim_off + (int64_t)optim <= c->total)
    prt_dev_download(c->dev, c->arena + c->optim_off, (uint64_t)(uintptr_t)(c->darena + c->optim_off), optim,
                     "the optimizer state to the host");
}

void prt_dev_end(PrtCtx *c) {
  if (!c->dev) return;
  prt_dev_sync(c->dev, "the end of the run");
  if (c->pinned) prt_dev_host_unregister(c->dev, c->arena);
  c->pinned = 0;
  prt_nccl_free(c->nccl_tp), prt_nccl_free(c->nccl_dp), prt_nccl_free(c->nccl_pp), prt_nccl_free(c->nccl_tied);
  prt_nccl_free(c->nccl);
  prt_dev_free(c->dev, (uint64_t)(uintptr_t)c->darena);
  prt_dev_free(c->dev, (uint64_t)(uintptr_t)c->dgen);
  prt_dev_kernels_bind(NULL, NULL);
  prt_device_close(c->dev);
  c->dev = NULL, c->darena = c->dgen = c->hgen = NULL, c->nccl = c->nccl_tp = c->nccl_dp = c->nccl_pp = c->nccl_tied = NULL;
}
