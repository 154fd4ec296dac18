/* stage_int.h — the runtime's own view of a stage program: the context
 * that runtime/stage.c builds from the manifest and the other runtime files
 * (checkpoints, data, generation) share. Not part of the generated code's
 * contract (that is stage.h). */
#ifndef PIPEC_RT_STAGE_INT_H
#define PIPEC_RT_STAGE_INT_H
#include <stddef.h>
#include <stdint.h>

#include "runtime/comm.h"
#include "runtime/env.h"
#include "runtime/stage.h"
#include "runtime/store.h"
#include "lib/tokfile.h"

/* One token stream (runtime/data.c): the files a glob matches, sorted by
 * name and read as one stream, or the synthetic corpus. */
typedef struct PrtTokens {
  TokFile *files;
  size_t nfiles;
  int64_t *first;           /* first[i]: position of file i's first token in the stream */
  const int32_t *synthetic; /* without files */
  int64_t len;
} PrtTokens;

typedef struct RtParam {
  int index;
  char name[160];
  int64_t off, rows, cols, full_rows, full_cols, q_rows, kv_rows;
  int shard, first, tied;
  int *holders, nholders; /* pipeline ranks holding it (tied weights) */
  PrtGroup *tied_group;
  int *reduce, nreduce;   /* templates: the (pipeline, pp rank) pairs holding it, over every pipeline */
  PrtGroup *grad_group;   /* templates: those ranks at this tp rank (shared by parameters with the same ranks) */
} RtParam;

struct PrtCtx {
  PrtEnv env;
  char model[128];
  int stage, pipeline, nstages;
  int world, tp, dp, pp;
  int *rk_pipe, *rk_pp, *rk_tp; /* per world rank */
  int tp_rank, dp_rank;
  int64_t batch, nmb, mbrows, seq, allmbs;
  int64_t mb_base;   /* this pipeline's first microbatch in the global batch (read through prt_global_mb) */
  int templates;     /* pipelines of different shapes: gradients reduced per parameter group */
  int generate_only; /* no train section: the program generates (manifest `run generate`) */
  int64_t steps, seed, warmup;
  double lr, min_lr, clip, beta1, beta2, eps, wd, momentum;
  char lr_schedule[32], optimizer[16], precision[8];
  int64_t total, params_off, grads_off, optim_off, slots_off, slot_bytes, ws_off, ws_bytes, floats;
  int nslots;
  RtParam *params;
  int nparams;
  /* run time */
  char *arena;
  PrtStore *store;
  PrtComm *comm;
  PrtGroup *tp_group, *dp_group, *world_group;
  int step;          /* 1-based, during a step */
  double loss_sum;   /* this step, over this rank's microbatches */
  float loss_scale;  /* 1 / tokens of the global batch */
  double grad_norm, cur_lr;
  int training;      /* 0 in the validation pass: dropout off, tokens from the validation data */
  char *data_glob, *val_glob; /* globs; NULL: synthetic data / no validation */
  int64_t val_every;
  double flops_per_token, peak_flops; /* of the model (6N + 6LCT); the ranks' summed sgemm rate */
  PrtTokens train_tokens, val_tokens;
  float *scratch;    /* 2 x scratch_n floats: the max all-reduce's buffers (one value per row) */
  long scratch_n;
  int64_t vocab;
  /* checkpoints (runtime/ckpt.c): the manifest's settings, options override them */
  char *save_dir, *init_path, *resume_dir; /* NULL: none */
  int64_t save_every, keep, stop_after;    /* save_every 0: at the end only; stop_after 0: run to the end */
  int64_t start_step;                      /* the step a resumed run continues after (0: a fresh run) */
  /* the GPU (runtime/stage_dev.c); dev NULL: the CPU runs the steps on `arena` */
  struct PrtDevice *dev;
  char *darena;                            /* the arena in device memory; `arena` is its host mirror */
  char *dgen, *hgen;                       /* generation's region on the device, and its host mirror */
  int64_t gen_bytes;
  int pinned; /* the host arena is page-locked for the device's copies */
  struct PrtNccl *nccl, *nccl_tp, *nccl_dp; /* NULL: that communication goes through the host transport */
  struct PrtNccl *nccl_pp, *nccl_tied;      /* the pipeline's ranks (by pp rank); the tied weights' holders */
  int p2p_nccl;      /* the manifest: this schedule's sends and receives run on NCCL (grouped by prt_pp_group) */
  char p2p_why[400]; /* else why not */
  int in_pp_group;   /* between prt_pp_group(1) and prt_pp_group(0) */
  int grads_pending; /* a data-parallel all-reduce of gradients runs on the communication stream */
  /* gradient buckets (the manifest's `bucket` lines): floats [lo, lo + n) of
     the gradients, final after `want` prt_grad_ready calls in a step */
  struct RtBucket {
    int64_t lo, n, want, got;
    int started;
  } *buckets;
  int nbuckets;
};

/* Stops this rank (and, through the transport, every other) with one line. */
void prt_die(PrtCtx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
uint64_t prt_mix64(uint64_t z);
/* A check every rank makes alike (the data files, the checkpoint to load):
   when any rank failed, every rank exits 1 and the reason is printed once
   (rank 0's; a rank that failed where rank 0 did not prints its own).
   Collective: every rank of the world calls it. */
void prt_stop_if_any(PrtCtx *c, int failed, const char *why);
/* The world rank that runs (pipeline, pipeline rank, tp rank). */
int prt_world_rank(PrtCtx *c, int pipeline, int pp, int tp);
/* The group of the ranks that share this rank's pipeline / pipeline rank /
   tp rank as the flags ask, in world-rank order (collective among them), and
   the index in such a group of one of its members. */
PrtGroup *prt_group_where(PrtCtx *c, int same_pipe, int same_pp, int same_tp);
int prt_group_index_where(const PrtCtx *c, int same_pipe, int same_pp, int same_tp, int world_rank);
/* `launch --generate ...`: generation with this stage program (generate.c);
   argv[0] is "--generate", the options follow. */
int prt_generate(PrtCtx *c, const char *manifest, int argc, char **argv);
void prt_generate_usage(const PrtCtx *c, int alone); /* its part of --help (alone: the whole usage), on stdout */
/* runtime/data.c: opens and checks pattern's files (NULL: the synthetic
 * corpus); 0, or -1 with one line naming the file in err */
int prt_tokens_open(PrtTokens *d, const char *pattern, int64_t vocab, int64_t seq, char *err, size_t errlen);
void prt_tokens_close(PrtTokens *d);
/* the global microbatch that local microbatch mb of this replica is */
int64_t prt_global_mb(const PrtCtx *c, int mb);

/* Checkpoints (runtime/ckpt.c). prt_load_weights fills this rank's
 * parameter shards in the arena from a pipec checkpoint folder (its latest
 * step), a Hugging Face GPT-2 safetensors file or an llm.c checkpoint; 0, or
 * -1 with a message naming the file and tensor. */
int prt_load_weights(PrtCtx *c, const char *path, char *err, size_t errlen);
/* After parameter init: resume (c->resume_dir) or load c->init_path; dies on errors. */
void prt_ckpt_start(PrtCtx *c);
/* After step s: saves when the settings ask for it (collective over the world). */
void prt_ckpt_after_step(PrtCtx *c, int64_t s);

/* runtime/stage_dev.c: the stage program on a GPU. prt_dev_start opens the
 * device on every rank or on none (collective; a rank without one, or
 * PIPEC_DEVICE=cpu, keeps all on the CPU), loads the kernel library embedded
 * in the binary, allocates the device arena and, when every GPU has one
 * rank, NCCL's communicators; it prints one line. The host arena stays, as
 * the device arena's mirror: parameters are initialised and checkpoints
 * read and written there (prt_dev_push / prt_dev_pull move them), and data
 * crossing the host (the host transport, token ids, losses) passes through
 * the mirror of the device bytes it belongs to, so no buffer is allocated
 * per call. */
void prt_dev_start(PrtCtx *c, const char *prefix, int generating);
void prt_dev_push(PrtCtx *c); /* the whole host arena to the device */
void prt_dev_pull(PrtCtx *c); /* parameters and optimizer state to the host */
void prt_dev_end(PrtCtx *c);
double prt_dev_gemm_rate(PrtCtx *c); /* this rank's GPU, FLOP/s of fp32 GEMMs */
void prt_dev_op(void *ctx, const char *module); /* called by the generated device code: the module that runs */
void *prt_dev_mirror(PrtCtx *c, const void *dev_ptr, size_t bytes); /* the host mirror of device arena (or generation) bytes */
char *prt_dev_gen_region(PrtCtx *c, char *host, int64_t bytes); /* generation's region on the device, zeroed; host: its mirror */
void *prt_dev_in(PrtCtx *c, const void *dev_ptr, size_t bytes, const char *what); /* downloaded into the mirror */
void prt_dev_out(PrtCtx *c, void *dev_ptr, const void *host, size_t bytes, const char *what); /* uploaded */

#endif
