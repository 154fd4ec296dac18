/* stage.c — the runtime side of a generated stage program (see stage.h). */
#define _GNU_SOURCE
#include "runtime/stage_int.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/kernels.h"
#include "lib/params.h"
#include "runtime/comm.h"
#include "runtime/device.h"
#include "runtime/kernels_dev.h"
#include "runtime/env.h"
#include "runtime/store.h"

static PrtCtx *g_ctx; /* for messages */

void prt_die(PrtCtx *c, const char *fmt, ...) {
  char b[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  if (c && c->comm) {
    char why[1100];
    snprintf(why, sizeof why, "%s", b);
    prt_comm_abort(c->comm, why);
  }
  fprintf(stderr, "pipec: rank %d: %s\n", c ? c->env.rank : -1, b);
  exit(1);
}

/* this rank's parameter with graph index q, or NULL */
static RtParam *param_at(PrtCtx *c, int q) {
  for (int i = 0; i < c->nparams; i++)
    if (c->params[i].index == q) return &c->params[i];
  return NULL;
}

/* ---- the manifest ---- */
/* a path of the manifest: "-" for none, else with %XX for bytes <= ' ' and '%' */
static char *manifest_path(const char *s) {
  if (!strcmp(s, "-")) return NULL;
  char *o = strdup(s), *d = o;
  for (unsigned x; *s; s++)
    if (*s == '%' && sscanf(s + 1, "%2x", &x) == 1) *d++ = (char)x, s += 2;
    else *d++ = *s;
  *d = 0;
  return o;
}

static void parse_manifest(PrtCtx *c, const char *text) {
  char *copy = strdup(text), *save = NULL;
  int nparams = 0;
  for (const char *q = text; (q = strstr(q, "\nparam ")); q++) nparams++;
  c->params = calloc((size_t)nparams + 1, sizeof *c->params);
  int bad = 0;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char key[32];
    if (sscanf(line, "%31s", key) != 1) continue;
    if (!strcmp(key, "model")) bad |= sscanf(line, "model %127s", c->model) != 1;
    else if (!strcmp(key, "run")) c->generate_only = !strcmp(line, "run generate");
    else if (!strcmp(key, "stage")) bad |= sscanf(line, "stage %d pipeline %d stages %d", &c->stage, &c->pipeline, &c->nstages) != 3;
    else if (!strcmp(key, "world")) {
      bad |= sscanf(line, "world %d tp %d dp %d pp %d", &c->world, &c->tp, &c->dp, &c->pp) != 4;
      if (c->world < 1 || c->world > 1 << 20) bad = 1;
      else {
        c->rk_pipe = calloc((size_t)c->world, sizeof(int));
        c->rk_pp = calloc((size_t)c->world, sizeof(int));
        c->rk_tp = calloc((size_t)c->world, sizeof(int));
      }
    } else if (!strcmp(key, "batch"))
      bad |= sscanf(line, "batch %" SCNd64 " microbatches %" SCNd64 " mbrows %" SCNd64 " seq %" SCNd64 " allmicrobatches %" SCNd64 " vocab %" SCNd64,
                    &c->batch, &c->nmb, &c->mbrows, &c->seq, &c->allmbs, &c->vocab) != 6;
    else if (!strcmp(key, "rank")) {
      int r, k, p, t;
      if (sscanf(line, "rank %d pipeline %d pp %d tp %d", &r, &k, &p, &t) != 4 || r < 0 || r >= c->world) bad = 1;
      else c->rk_pipe[r] = k, c->rk_pp[r] = p, c->rk_tp[r] = t;
    } else if (!strcmp(key, "train"))
      bad |= sscanf(line, "train steps %" SCNd64 " seed %" SCNd64 " lr %lf min_lr %lf warmup %" SCNd64 " schedule %31s clip %lf", &c->steps,
                    &c->seed, &c->lr, &c->min_lr, &c->warmup, c->lr_schedule, &c->clip) != 7;
    else if (!strcmp(key, "optimizer"))
      bad |= sscanf(line, "optimizer %15s beta1 %lf beta2 %lf eps %lf weight_decay %lf momentum %lf", c->optimizer, &c->beta1, &c->beta2,
                    &c->eps, &c->wd, &c->momentum) != 6;
    else if (!strcmp(key, "arena"))
      bad |= sscanf(line,
                    "arena %" SCNd64 " params %" SCNd64 " grads %" SCNd64 " optim %" SCNd64 " slots %" SCNd64 " nslots %d slot_bytes %" SCNd64
                    " ws %" SCNd64 " ws_bytes %" SCNd64 " floats %" SCNd64,
                    &c->total, &c->params_off, &c->grads_off, &c->optim_off, &c->slots_off, &c->nslots, &c->slot_bytes, &c->ws_off,
                    &c->ws_bytes, &c->floats) != 10;
    else if (!strcmp(key, "param")) {
      RtParam *p = &c->params[c->nparams++];
      bad |= sscanf(line, "param %d %159s %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %d %" SCNd64 " %" SCNd64 " %d %d", &p->index,
                    p->name, &p->off, &p->rows, &p->cols, &p->full_rows, &p->full_cols, &p->shard, &p->q_rows, &p->kv_rows, &p->first,
                    &p->tied) != 12;
    } else if (!strcmp(key, "reduce")) {
      int q, pos, j, k, n;
      RtParam *p = sscanf(line, "reduce %d%n", &q, &pos) == 1 ? param_at(c, q) : NULL;
      if (!p || p->reduce) bad = 1;
      else {
        p->reduce = calloc(2 * strlen(line), sizeof(int));
        for (; sscanf(line + pos, " %d/%d%n", &j, &k, &n) == 2; pos += n) p->reduce[2 * p->nreduce] = j, p->reduce[2 * p->nreduce++ + 1] = k;
        bad |= p->nreduce < 1 || line[pos];
        c->templates = 1;
      }
    } else if (!strcmp(key, "data")) {
      char tr[4096], va[4096];
      bad |= sscanf(line, "data train %4095s val %4095s val_every %" SCNd64, tr, va, &c->val_every) != 3;
      c->data_glob = manifest_path(tr), c->val_glob = manifest_path(va);
    } else if (!strcmp(key, "flops_per_token"))
      bad |= sscanf(line, "flops_per_token %lf", &c->flops_per_token) != 1;
    else if (!strcmp(key, "precision")) bad |= sscanf(line, "precision %7s", c->precision) != 1;
    else if (!strcmp(key, "bucket")) {
      int b;
      struct RtBucket x = {0};
      if (sscanf(line, "bucket %d %" SCNd64 " %" SCNd64 " %" SCNd64, &b, &x.lo, &x.n, &x.want) != 4 || b != c->nbuckets || x.lo < 0 || x.n < 0)
        bad = 1;
      else {
        struct RtBucket *nb = realloc(c->buckets, sizeof *nb * (size_t)(b + 1));
        if (!nb) bad = 1;
        else c->buckets = nb, c->buckets[c->nbuckets++] = x;
      }
    } else if (!strcmp(key, "p2p")) {
      c->p2p_nccl = !strcmp(line, "p2p nccl");
      if (!strncmp(line, "p2p host ", 9)) snprintf(c->p2p_why, sizeof c->p2p_why, "%s", line + 9);
    }
    else if (!strcmp(key, "checkpoint"))
      bad |= sscanf(line, "checkpoint every %" SCNd64 " keep %" SCNd64, &c->save_every, &c->keep) != 2;
    else if (!strcmp(key, "save_dir") || !strcmp(key, "init")) /* the rest of the line */
      *(key[0] == 's' ? &c->save_dir : &c->init_path) = strdup(line + strlen(key) + 1);
    else if (!strcmp(key, "holders")) {
      int q, pos;
      RtParam *p = NULL;
      if (sscanf(line, "holders %d%n", &q, &pos) != 1) bad = 1;
      else p = param_at(c, q);
      if (p) {
        p->holders = calloc((size_t)c->pp + 1, sizeof(int));
        for (int r, k; p->nholders <= c->pp && sscanf(line + pos, "%d%n", &r, &k) == 1; pos += k) p->holders[p->nholders++] = r;
      }
    }
  }
  free(copy);
  if (bad || !c->world || !c->total || strncmp(text, "pipec-stage 1\n", 14)) {
    fprintf(stderr, "pipec: this stage binary's manifest is damaged or from another pipec version\n");
    exit(1);
  }
}

/* ---- ops that need the rank or the step ---- */
/* (on a GPU, c->dev, the pointers are device addresses and d_X replaces k_X) */
#define KD(c, name) ((c)->dev ? d_##name : k_##name)
void prt_vp_embedding_forward(void *ctx, float *out, const int32_t *ids, const float *W, int N, int C, int64_t rows) {
  PrtCtx *c = ctx;
  KD(c, vp_embedding_forward)(out, ids, W, N, C, rows * c->tp_rank, rows);
}
void prt_vp_embedding_backward(void *ctx, float *dW, const float *dout, const int32_t *ids, int N, int C, int64_t rows) {
  PrtCtx *c = ctx;
  KD(c, vp_embedding_backward)(dW, dout, ids, N, C, rows * c->tp_rank, rows);
}
void prt_vp_sumexp(void *ctx, float *st, const float *logits, const int32_t *targets, const float *M, int N, int V) {
  PrtCtx *c = ctx;
  KD(c, vp_sumexp)(st, logits, targets, M, N, V, (int64_t)V * c->tp_rank);
}
void prt_vp_xent_backward(void *ctx, float *dlogits, const float *logits, const int32_t *targets, const float *M, const float *S,
                          int N, int V) {
  PrtCtx *c = ctx;
  KD(c, vp_xent_backward)(dlogits, logits, targets, M, S, N, V, (int64_t)V * c->tp_rank, c->loss_scale);
}
void prt_xent_backward(void *ctx, float *losses, float *dlogits, const float *logits, const int32_t *targets, int N, int V) {
  PrtCtx *c = ctx;
  KD(c, crossentropy_forward_backward)(losses, dlogits, logits, targets, N, V, c->loss_scale);
}
static uint64_t dropout_seed(PrtCtx *c, int mb) {
  return prt_mix64((uint64_t)c->seed ^ prt_mix64((uint64_t)c->step << 20 ^ (uint64_t)(c->mb_base + mb)));
}
void prt_dropout_forward(void *ctx, float *out, const float *inp, long n, float p, int op, int mb) {
  PrtCtx *c = ctx;
  if (!c->training) { /* validation: the identity */
    if (out != inp) KD(c, copy)(out, inp, n);
    return;
  }
  KD(c, dropout_forward)(out, inp, n, p, dropout_seed(ctx, mb), (uint64_t)op << 32);
}
void prt_dropout_backward(void *ctx, float *dinp, const float *dout, long n, float p, int op, int mb) {
  PrtCtx *c = ctx;
  KD(c, dropout_backward)(dinp, dout, n, p, dropout_seed(ctx, mb), (uint64_t)op << 32);
}
void prt_loss_add(void *ctx, const float *losses, const int32_t *targets, int N) {
  PrtCtx *c = ctx;
  if (c->dev) { /* the N losses and targets, to the host */
    losses = prt_dev_in(c, losses, (size_t)N * 4, "the loss");
    targets = prt_dev_in(c, targets, (size_t)N * 4, "the loss");
  }
  double s = 0;
  for (int r = 0; r < N; r++)
    if (targets[r] >= 0) s += losses[r];
  c->loss_sum += s;
}

/* ---- communication ---- */
int prt_world_rank(PrtCtx *c, int pipeline, int pp, int tp) {
  for (int r = 0; r < c->world; r++)
    if (c->rk_pipe[r] == pipeline && c->rk_pp[r] == pp && c->rk_tp[r] == tp) return r;
  prt_die(c, "no rank runs pipeline %d, pipeline rank %d, tp rank %d (damaged manifest)", pipeline, pp, tp);
}

/* On a GPU, a collective runs through NCCL when the group has a
   communicator (nc), else through the host transport: the buffer goes to
   the host, the host operation runs, the result comes back (ranks sharing a
   GPU, which NCCL refuses, and groups NCCL has no communicator for). */
#define dev_in(c, buf, bytes, what) ((float *)prt_dev_in(c, buf, bytes, what))
#define dev_out prt_dev_out
static void allreduce_sum(PrtCtx *c, PrtGroup *g, PrtNccl *nc, float *buf, long n, const char *what) {
  if (!c->dev) return prt_allreduce_sum(g, buf, (size_t)n);
  if (nc) return prt_nccl_allreduce(nc, (uint64_t)(uintptr_t)buf, (size_t)n, what);
  float *h = dev_in(c, buf, sizeof(float) * (size_t)n, what);
  prt_allreduce_sum(g, h, (size_t)n);
  dev_out(c, buf, h, sizeof(float) * (size_t)n, what);
}

void prt_tp_allreduce(void *ctx, float *buf, long n, int op) {
  PrtCtx *c = ctx;
  if (c->tp <= 1) return;
  if (op == 0) return allreduce_sum(c, c->tp_group, c->nccl_tp, buf, n, "tensor-parallel all-reduce");
  /* max: every member's values in turn, the same order everywhere */
  if (n > c->scratch_n) prt_die(c, "a max all-reduce of %ld values is larger than its buffer (%ld)", n, c->scratch_n);
  float *dbuf = buf;
  if (c->dev) buf = dev_in(c, dbuf, sizeof(float) * (size_t)n, "tensor-parallel max all-reduce");
  float *tmp = c->scratch, *mine = c->scratch + n;
  memcpy(mine, buf, sizeof(float) * (size_t)n);
  for (int k = 0; k < prt_group_size(c->tp_group); k++) {
    if (k == prt_group_rank(c->tp_group)) memcpy(tmp, mine, sizeof(float) * (size_t)n);
    prt_broadcast(c->tp_group, k, tmp, sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) buf[i] = k == 0 ? tmp[i] : fmaxf(buf[i], tmp[i]);
  }
  if (c->dev) dev_out(c, dbuf, buf, sizeof(float) * (size_t)n, "tensor-parallel max all-reduce");
}

/* Activations and their gradients between pipeline neighbours. On GPUs with
   NCCL, the sends and receives of one prt_pp_group run as one NCCL group on
   the pipeline's communicator (peer = pp rank): NCCL's sends complete only
   once their receive is posted, and the compiler emits groups only for
   schedules it proved never wait forever that way (schedule_rendezvous).
   Otherwise (the CPU, ranks sharing a GPU, other schedules, generation's
   calls outside groups) the host transport's eager queues carry them. */
void prt_pp_group(void *ctx, int begin) {
  PrtCtx *c = ctx;
  c->in_pp_group = begin;
  if (!c->nccl_pp) return;
  char w[200];
  snprintf(w, sizeof w, "%s stage %d: a group of pipeline sends and receives", c->model, c->stage);
  if (begin) prt_nccl_group_start(c->nccl_pp);
  else prt_nccl_group_end(c->nccl_pp, w);
}
static const char *pp_what(PrtCtx *c, char *w, size_t n, const char *dir, int pp_peer, long bytes) {
  snprintf(w, n, "%s stage %d: pipeline %s pp rank %d, %ld bytes", c->model, c->stage, dir, pp_peer, bytes);
  return w;
}
void prt_pp_send(void *ctx, int pp_peer, int tag, const void *buf, long bytes) {
  PrtCtx *c = ctx;
  char w[256];
  if (c->nccl_pp && c->in_pp_group)
    return prt_nccl_send(c->nccl_pp, pp_peer, (uint64_t)(uintptr_t)buf, (size_t)bytes, pp_what(c, w, sizeof w, "send to", pp_peer, bytes));
  if (c->dev) buf = dev_in(c, buf, (size_t)bytes, "pipeline send");
  prt_send(c->comm, prt_world_rank(c, c->pipeline, pp_peer, c->tp_rank), (uint32_t)tag, buf, (size_t)bytes);
}
void prt_pp_recv(void *ctx, int pp_peer, int tag, void *buf, long bytes) {
  PrtCtx *c = ctx;
  char w[256];
  if (c->nccl_pp && c->in_pp_group)
    return prt_nccl_recv(c->nccl_pp, pp_peer, (uint64_t)(uintptr_t)buf, (size_t)bytes, pp_what(c, w, sizeof w, "receive from", pp_peer, bytes));
  void *dst = c->dev ? prt_dev_mirror(c, buf, (size_t)bytes) : buf;
  prt_recv(c->comm, prt_world_rank(c, c->pipeline, pp_peer, c->tp_rank), (uint32_t)tag, dst, (size_t)bytes);
  if (c->dev) dev_out(c, buf, dst, (size_t)bytes, "pipeline receive");
}
/* On NCCL each gradient bucket's all-reduce starts on the communication
   stream at the bucket's last write (prt_grad_ready) and the compute stream
   goes on with the backward; whatever reads gradients joins the streams first. */
static void grads_join(PrtCtx *c) {
  if (c->grads_pending) prt_nccl_join(c->nccl_dp, "data-parallel gradient all-reduce");
  c->grads_pending = 0;
}
static void bucket_start(PrtCtx *c, int b) {
  struct RtBucket *x = &c->buckets[b];
  char w[320];
  snprintf(w, sizeof w, "%s stage %d: data-parallel gradient all-reduce, bucket %d, %lld floats", c->model, c->stage, b, (long long)x->n);
  prt_nccl_allreduce_start(c->nccl_dp, (uint64_t)(uintptr_t)((float *)(c->darena + c->grads_off) + x->lo), (size_t)x->n, w);
  x->started = 1, c->grads_pending = 1;
}
/* the backward wrote gradients of bucket b: at its last write of the step,
   its all-reduce starts (on NCCL; elsewhere REDUCE_GRAD does them all) */
void prt_grad_ready(void *ctx, int b) {
  PrtCtx *c = ctx;
  if (!c->nccl_dp || !c->dev || b < 0 || b >= c->nbuckets) return;
  if (++c->buckets[b].got == c->buckets[b].want) bucket_start(c, b);
}
/* On NCCL the buckets (the compiler cuts every dp > 1 stage's gradients
   into them) have all started by REDUCE_GRAD, but those without writes; one
   that has not saw fewer writes than compiled. */
void prt_dp_allreduce(void *ctx, float *grads, long n) {
  PrtCtx *c = ctx;
  if (c->dp <= 1) return;
  if (!c->dev || !c->nccl_dp) return allreduce_sum(c, c->dp_group, c->nccl_dp, grads, n, "data-parallel gradient all-reduce");
  int64_t lo = (int64_t)(grads - (float *)(c->darena + c->grads_off));
  for (int b = 0; b < c->nbuckets; b++) {
    struct RtBucket *x = &c->buckets[b];
    if (x->lo < lo || x->lo + x->n > lo + n || x->started) continue;
    if (x->want) prt_die(c, "internal error: gradient bucket %d saw %lld of its %lld writes by the end of the stage's backward", b, (long long)x->got, (long long)x->want);
    bucket_start(c, b);
  }
}
/* templates: the gradients of parameters param.. (n floats) summed over every rank holding them */
void prt_grad_allreduce(void *ctx, int param, float *grads, long n) {
  PrtCtx *c = ctx;
  RtParam *p = param_at(c, param);
  if (!p || !p->grad_group) prt_die(c, "parameter %d has no gradient group (damaged manifest)", param);
  grads_join(c);
  allreduce_sum(c, p->grad_group, NULL, grads, n, p->name);
}
void prt_tied_allreduce(void *ctx, int param, float *grads, long n) {
  PrtCtx *c = ctx;
  RtParam *p = param_at(c, param);
  grads_join(c);
  if (p && p->tied_group) allreduce_sum(c, p->tied_group, c->nccl_tied, grads, n, p->name);
}

static double lr_at(PrtCtx *c, int step) {
  double lr = c->lr;
  if (c->warmup > 0 && step <= c->warmup) return lr * step / (double)c->warmup;
  double frac = c->steps > c->warmup ? (double)(step - c->warmup) / (double)(c->steps - c->warmup) : 1;
  if (frac > 1) frac = 1;
  if (!strcmp(c->lr_schedule, "cosine")) return c->min_lr + 0.5 * (lr - c->min_lr) * (1 + cos(M_PI * frac));
  if (!strcmp(c->lr_schedule, "linear")) return lr + (c->min_lr - lr) * frac;
  return lr;
}

/* The parameters `want` picks as ranges of floats [r[k][0], r[k][1]), with
   first[k] the parameter a range starts with. On the CPU one range per
   parameter, in parameter order. On a GPU, where every kernel call is a
   launch and every sum of squares a wait, parameters adjacent in the arena
   (by offset; the 16-float padding between them is zero in every vector)
   share a range where `same` (NULL: any) agrees. Returns the count. */
static int param_ranges(PrtCtx *c, int64_t (*r)[2], int *first, int (*want)(PrtCtx *, const RtParam *),
                        int (*same)(const RtParam *, const RtParam *)) {
  int n = 0, merge = c->dev != NULL;
  int *order = malloc(sizeof(int) * (size_t)(c->nparams + 1));
  if (!order) prt_die(c, "out of memory");
  for (int i = 0; i < c->nparams; i++) order[i] = i;
  for (int i = 1; i < c->nparams && merge; i++) /* by offset (insertion sort: parameters are few and nearly in order) */
    for (int j = i; j > 0 && c->params[order[j - 1]].off > c->params[order[j]].off; j--) {
      int t = order[j];
      order[j] = order[j - 1], order[j - 1] = t;
    }
  for (int k = 0; k < c->nparams; k++) {
    const RtParam *p = &c->params[order[k]];
    if (!want(c, p)) continue;
    int64_t len = p->rows * (p->cols ? p->cols : 1), end = p->off + (merge ? (len + 15) / 16 * 16 : len);
    if (merge && n && r[n - 1][1] == p->off && (!same || same(&c->params[first[n - 1]], p))) r[n - 1][1] = end;
    else r[n][0] = p->off, r[n][1] = end, first[n] = order[k], n++;
  }
  free(order);
  return n;
}
static int counted_in_norm(PrtCtx *c, const RtParam *p) { return p->first && (p->shard != PSHARD_NONE || c->tp_rank == 0); }
static int every_param(PrtCtx *c, const RtParam *p) { return 1; }
static int same_decay(const RtParam *a, const RtParam *b) { return !a->cols == !b->cols; }

void prt_optimizer_step(void *ctx) {
  PrtCtx *c = ctx;
  grads_join(c);
  for (int b = 0; b < c->nbuckets; b++) c->buckets[b].got = 0, c->buckets[b].started = 0;
  char *base = c->dev ? c->darena : c->arena;
  float *P = (float *)(base + c->params_off), *Gr = (float *)(base + c->grads_off);
  float *M = (float *)(base + c->optim_off), *V = M + c->floats;
  int64_t(*r)[2] = malloc(sizeof *r * (size_t)(c->nparams + 1));
  int *first = malloc(sizeof(int) * (size_t)(c->nparams + 1));
  if (!r || !first) prt_die(c, "out of memory");
  /* the global gradient norm: each parameter counted once over the world */
  double ss = 0;
  if (c->dp_rank == 0)
    for (int k = 0, n = param_ranges(c, r, first, counted_in_norm, NULL); k < n; k++)
      ss += KD(c, sumsq)(Gr + r[k][0], (long)(r[k][1] - r[k][0]));
  prt_allreduce_sum_f64(c->world_group, &ss, 1);
  c->grad_norm = sqrt(ss);
  if (c->clip > 0 && c->grad_norm > c->clip) KD(c, scale)(Gr, (long)c->floats, (float)(c->clip / (c->grad_norm + 1e-6)));
  c->cur_lr = lr_at(c, c->step);
  if (!strcmp(c->optimizer, "adamw"))
    for (int k = 0, n = param_ranges(c, r, first, every_param, same_decay); k < n; k++) {
      float wd = c->params[first[k]].cols ? (float)c->wd : 0.0f; /* decay matrices and embeddings, not norms and biases */
      KD(c, adamw)(P + r[k][0], Gr + r[k][0], M + r[k][0], V + r[k][0], (long)(r[k][1] - r[k][0]), (float)c->cur_lr, (float)c->beta1,
                   (float)c->beta2, (float)c->eps, wd, c->step);
    }
  else { /* SGD, on the host (on a GPU parameters, gradients and momentum go there and back) */
    size_t bytes = sizeof(float) * (size_t)c->floats;
    if (c->dev) {
      P = prt_dev_in(c, P, bytes, "sgd"), Gr = prt_dev_in(c, Gr, bytes, "sgd");
      if (c->momentum > 0) M = prt_dev_in(c, M, bytes, "sgd");
    }
    for (int i = 0; i < c->nparams; i++) {
      const RtParam *p = &c->params[i];
      long n = (long)(p->rows * (p->cols ? p->cols : 1));
      float wd = p->cols ? (float)c->wd : 0.0f;
      for (long k = 0; k < n; k++) {
        float g = Gr[p->off + k] + wd * P[p->off + k];
        if (c->momentum > 0) g = M[p->off + k] = (float)c->momentum * M[p->off + k] + g;
        P[p->off + k] -= (float)c->cur_lr * g;
      }
    }
    if (c->dev) {
      prt_dev_out(c, c->darena + c->params_off, P, bytes, "sgd");
      if (c->momentum > 0) prt_dev_out(c, c->darena + c->optim_off, M, bytes, "sgd");
    }
  }
  free(r), free(first);
}

/* ---- main ---- */
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* world rank r shares with this rank what the flags ask for (the members of prt_group_where's groups) */
static int same_as_me(const PrtCtx *c, int r, int same_pipe, int same_pp, int same_tp) {
  int me = c->env.rank;
  return (!same_pipe || c->rk_pipe[r] == c->rk_pipe[me]) && (!same_pp || c->rk_pp[r] == c->rk_pp[me]) &&
         (!same_tp || c->rk_tp[r] == c->rk_tp[me]);
}

PrtGroup *prt_group_where(PrtCtx *c, int same_pipe, int same_pp, int same_tp) {
  int *m = calloc((size_t)c->world, sizeof(int)), n = 0;
  for (int r = 0; r < c->world; r++)
    if (same_as_me(c, r, same_pipe, same_pp, same_tp)) m[n++] = r;
  PrtGroup *g = prt_group_new(c->comm, m, n);
  free(m);
  return g;
}

int prt_group_index_where(const PrtCtx *c, int same_pipe, int same_pp, int same_tp, int world_rank) {
  int k = 0;
  for (int r = 0; r < world_rank; r++) k += same_as_me(c, r, same_pipe, same_pp, same_tp);
  return k;
}

/* the first global microbatch of this pipeline: the manifest's `pipelines`
   line lists every pipeline's microbatches, in the order the batch splits */
static int64_t mb_base_of(PrtCtx *c, const char *manifest) {
  const char *l = strstr(manifest, "\npipelines ");
  int64_t base = -1, sum = 0, n;
  int pos = 11, k;
  for (int j = 0; l && sscanf(l + pos, " %" SCNd64 "%n", &n, &k) == 1; j++, pos += k) {
    if (j == c->pipeline && n == c->nmb) base = sum;
    sum += n;
  }
  if (base < 0 || sum != c->allmbs) prt_die(c, "this stage binary's manifest has no microbatch count for pipeline %d (damaged)", c->pipeline);
  return base;
}

static int64_t arg_count(const char *s, const char *what) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || v < 0) {
    fprintf(stderr, "pipec: %s needs a non-negative integer, not '%s'\n", what, s);
    exit(2);
  }
  return v;
}

/* the path of an option ("-": none) */
static char *opt_path(char **dst, const char *s) {
  free(*dst);
  return *dst = strcmp(s, "-") ? strdup(s) : NULL;
}

/* FLOP/s of a 1024^3 sgemm through the kernels (as the matmuls of a step), best of 4 after a warm-up */
static double sgemm_rate(void) {
  enum { n = 1024 };
  float *a = aligned_alloc(64, sizeof(float) * 3 * n * n);
  for (int i = 0; i < 3 * n * n; i++) a[i] = (float)(i % 7) * 0.01f;
  double best = 1e30;
  for (int k = 0; k < 5; k++) {
    double t0 = now();
    k_matmul_forward(a + 2 * n * n, a, a + n * n, NULL, n, n, n);
    double t = now() - t0;
    if (k && t < best) best = t;
  }
  free(a);
  return 2.0 * n * n * n / best;
}

/* the loss summed by prt_loss_add over the world (the ranks that hold the
   loss, once per tp group), per token of the global batch */
static double world_loss(PrtCtx *c) {
  double l = c->tp_rank == 0 ? c->loss_sum : 0;
  prt_allreduce_sum_f64(c->world_group, &l, 1);
  return l / ((double)c->batch * (double)c->seq);
}

/* the generated forward-only pass over the validation batch (compiler/stagegen.c); weak: binaries
   of an older pipec have none */
extern void pipec_eval(void *ctx, char *arena) __attribute__((weak));
extern void pipec_eval_dev(void *ctx, char *arena) __attribute__((weak));
extern void pipec_step_dev(void *ctx, char *arena) __attribute__((weak)); /* the device variants */

static void validate_and_log(PrtCtx *c, int64_t s, int logger) {
  double t0 = now();
  c->training = 0, c->loss_sum = 0;
  if (c->dev) pipec_eval_dev(c, c->darena);
  else pipec_eval(c, c->arena);
  c->training = 1;
  double v = world_loss(c);
  if (logger) printf("val  %4lld/%lld | val loss %.6f | %.1f ms\n", (long long)s, (long long)c->steps, v, (now() - t0) * 1e3);
  fflush(stdout);
}

/* see stage_int.h */
void prt_stop_if_any(PrtCtx *c, int failed, const char *why) {
  double f[2] = {failed && c->env.rank == 0, failed != 0};
  prt_allreduce_sum_f64(c->world_group, f, 2);
  if (f[1] == 0) return;
  if (failed && (c->env.rank == 0 || f[0] == 0)) fprintf(stderr, "pipec: rank %d: %s\n", c->env.rank, why);
  fflush(stderr);
  prt_barrier(c->world_group); /* the line is out before any rank exits (a launcher kills the others at the first exit) */
  exit(1);
}

/* the end of a run: leave the job, free what the context holds */
static void ctx_free(PrtCtx *c) {
  prt_comm_finalize(c->comm);
  for (int i = 0; i < c->nparams; i++) {
    RtParam *p = &c->params[i];
    if (p->tied_group) prt_group_free(p->tied_group);
    int shared = 0;
    for (int e = 0; e < i; e++) shared |= c->params[e].grad_group == p->grad_group;
    if (p->grad_group && !shared) prt_group_free(p->grad_group);
    free(p->holders), free(p->reduce);
  }
  prt_group_free(c->world_group), prt_group_free(c->tp_group), prt_group_free(c->dp_group);
  prt_store_close(c->store);
  prt_tokens_close(&c->train_tokens), prt_tokens_close(&c->val_tokens);
  free(c->data_glob), free(c->val_glob), free(c->save_dir), free(c->init_path);
  free(c->scratch), free(c->params), free(c->buckets), free(c->rk_pipe), free(c->rk_pp), free(c->rk_tp), free(c); /* the arena: prt_comm_finalize */
  g_ctx = NULL;
}

int prt_stage_main(int argc, char **argv, const char *manifest, PrtStepFn step) {
  PrtCtx *c = calloc(1, sizeof *c);
  g_ctx = c;
  parse_manifest(c, manifest);
  int64_t log_every = 1;
  int gen_argc = 0;
  char **gen_argv = NULL;
  if (c->generate_only) { /* a model without a train section: every option is generation's */
    gen_argc = argc, gen_argv = argv;
    for (int i = 1; i < argc; i++)
      if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return prt_generate_usage(c, 1), 0;
  }
  for (int i = 1; i < argc && !c->generate_only; i++) {
    if (!strcmp(argv[i], "--generate")) { /* the options after it are generation's */
      gen_argc = argc - i, gen_argv = argv + i;
      break;
    } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) c->steps = arg_count(argv[++i], "--steps");
    else if (!strcmp(argv[i], "--log-every") && i + 1 < argc) log_every = arg_count(argv[++i], "--log-every");
    else if (!strcmp(argv[i], "--data") && i + 1 < argc) opt_path(&c->data_glob, argv[++i]);
    else if (!strcmp(argv[i], "--val-data") && i + 1 < argc) opt_path(&c->val_glob, argv[++i]);
    else if (!strcmp(argv[i], "--val-every") && i + 1 < argc) c->val_every = arg_count(argv[++i], "--val-every");
    else if (!strcmp(argv[i], "--init") && i + 1 < argc) opt_path(&c->init_path, argv[++i]);
    else if (!strcmp(argv[i], "--save") && i + 1 < argc) opt_path(&c->save_dir, argv[++i]);
    else if (!strcmp(argv[i], "--save-every") && i + 1 < argc) c->save_every = arg_count(argv[++i], "--save-every");
    else if (!strcmp(argv[i], "--keep") && i + 1 < argc) c->keep = arg_count(argv[++i], "--keep");
    else if (!strcmp(argv[i], "--stop-after") && i + 1 < argc) c->stop_after = arg_count(argv[++i], "--stop-after");
    else if (!strcmp(argv[i], "--resume")) c->resume_dir = i + 1 < argc && strncmp(argv[i + 1], "--", 2) ? argv[++i] : "";
    else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: %s [--steps N] [--log-every N] [--data GLOB] [--val-data GLOB] [--val-every N]\n"
             "       [--init PATH] [--resume [DIR]] [--save DIR] [--save-every N] [--keep K] [--stop-after N]\n"
             "--init: weights from a pipec checkpoint folder, a Hugging Face GPT-2 model.safetensors or an llm.c .bin;\n"
             "--resume: continue from the latest checkpoint in DIR (default: the save folder); --stop-after N: end after\n"
             "step N (saving it when there is a save folder), the learning-rate schedule unchanged.\n",
             argv[0]);
      prt_generate_usage(c, 0);
      return 0;
    } else {
      fprintf(stderr, "pipec: unknown option '%s' (try --help)\n", argv[i]);
      return 2;
    }
  }
  if (c->resume_dir && !*c->resume_dir && !(c->resume_dir = c->save_dir)) {
    fprintf(stderr, "pipec: --resume needs a folder: %s has no save = in its train section (--resume DIR)\n", c->model);
    return 2;
  }
  char err[512];
  if (prt_env_read(&c->env, err, sizeof err)) {
    fprintf(stderr, "pipec: %s\n", err);
    return 1;
  }
  int me = c->env.rank;
  char layout[96];
  if (c->templates) snprintf(layout, sizeof layout, "%d pipelines from templates x tp %d", c->dp, c->tp);
  else snprintf(layout, sizeof layout, "dp %d x tp %d x pp %d", c->dp, c->tp, c->pp);
  if (c->env.world != c->world) {
    if (me == 0)
      fprintf(stderr, "pipec: %s was compiled for %d ranks (%s), but the launcher started %d (%s); "
                      "launch %d ranks or recompile with --world-size %d\n",
              c->model, c->world, layout, c->env.world, c->env.launcher, c->world, c->env.world);
    return 1;
  }
  if (c->rk_pp[me] != c->stage || (c->templates && c->rk_pipe[me] != c->pipeline)) {
    char runs[48] = "", prog[48] = ""; /* with templates, programs differ by pipeline too */
    if (c->templates) snprintf(runs, sizeof runs, " %d", c->rk_pipe[me]), snprintf(prog, sizeof prog, " %d", c->pipeline);
    fprintf(stderr, "pipec: rank %d runs pipeline%s rank %d, but this is the program of pipeline%s rank %d (%s); start the job with the launch program\n",
            me, runs, c->rk_pp[me], prog, c->stage, argv[0]);
    return 1;
  }
  c->pipeline = c->rk_pipe[me], c->tp_rank = c->rk_tp[me], c->dp_rank = c->rk_pipe[me];
  c->mb_base = mb_base_of(c, manifest);
  char prefix[300];
  snprintf(prefix, sizeof prefix, "pipec/%s/%d/", c->env.run_id, c->env.restart);
  c->store = prt_store_open(c->env.master_addr, c->env.master_port, me == 0 && !c->env.has_agent_store, c->env.timeout_s, err, sizeof err);
  if (!c->store) {
    fprintf(stderr, "pipec: rank %d: %s\n", me, err);
    return 1;
  }
  c->comm = prt_comm_init(c->store, prefix, me, c->world, c->env.timeout_s, err, sizeof err);
  if (!c->comm) {
    fprintf(stderr, "pipec: rank %d: %s\n", me, err);
    return 1;
  }
  c->world_group = prt_group_where(c, 0, 0, 0);
  c->tp_group = prt_group_where(c, 1, 1, 0);
  c->dp_group = prt_group_where(c, 0, 1, 1);
  /* templates: one group per list of ranks holding a parameter, made in parameter order on every rank */
  for (int i = 0; i < c->nparams; i++) {
    RtParam *p = &c->params[i];
    if (!p->nreduce) continue;
    int *m = calloc((size_t)p->nreduce, sizeof(int)), mine = 0;
    for (int k = 0; k < p->nreduce; k++) {
      m[k] = prt_world_rank(c, p->reduce[2 * k], p->reduce[2 * k + 1], c->tp_rank);
      mine |= m[k] == me;
    }
    if (!mine) prt_die(c, "parameter %s: its gradient group does not name this rank (damaged manifest)", p->name);
    for (int e = 0; e < i && !p->grad_group; e++)
      if (c->params[e].nreduce == p->nreduce && !memcmp(c->params[e].reduce, p->reduce, sizeof(int) * 2 * (size_t)p->nreduce))
        p->grad_group = c->params[e].grad_group;
    if (!p->grad_group) p->grad_group = prt_group_new(c->comm, m, p->nreduce);
    free(m);
  }
  for (int i = 0; i < c->nparams; i++) {
    RtParam *p = &c->params[i];
    if (p->nholders < 2 || c->templates) continue;
    int *m = calloc((size_t)p->nholders, sizeof(int));
    for (int k = 0; k < p->nholders; k++) m[k] = prt_world_rank(c, c->pipeline, p->holders[k], c->tp_rank);
    p->tied_group = prt_group_new(c->comm, m, p->nholders);
    free(m);
  }
  /* the device: a GPU when every rank has one, else the CPU */
  prt_dev_start(c, prefix, gen_argv != NULL);
  const char *th = getenv("PIPEC_THREADS");
  long cores = sysconf(_SC_NPROCESSORS_ONLN), threads = th ? atol(th) : cores / (c->env.local_world > 0 ? c->env.local_world : 1);
  k_set_threads(threads < 1 ? 1 : (int)threads);

  /* the arena: the planned bytes, once, zeroed and page-aligned, in memory
   * the other ranks of this host can map (all-reduces on it run zero-copy) */
  struct mallinfo2 m0 = mallinfo2();
  c->arena = prt_comm_alloc_shared(c->comm, (size_t)c->total);
  if (!c->arena) prt_die(c, "cannot allocate the planned %lld bytes", (long long)c->total);
  for (int i = 0; i < c->nparams; i++) {
    RtParam *p = &c->params[i];
    int64_t full = p->full_rows * (p->full_cols ? p->full_cols : 1);
    float *w = malloc(sizeof(float) * (size_t)full);
    param_init_full(w, p->name, p->full_rows, p->full_cols, p->index, (uint64_t)c->seed);
    ParamShape sh = {p->shard, p->rows, p->cols, p->full_rows, p->full_cols, p->q_rows, p->kv_rows};
    param_shard_copy(&sh, c->tp, c->tp_rank, w, (float *)(c->arena + c->params_off) + p->off);
    free(w);
  }
  if (gen_argv) {
    int rc = prt_generate(c, manifest, gen_argc, gen_argv);
    prt_dev_end(c);
    ctx_free(c);
    return rc;
  }
  /* the data, checked once; the peak: every rank's sgemm rate, measured at the same time */
  if (c->vocab <= 0) c->vocab = 256; /* a model without token ids: any range */
  prt_stop_if_any(c, prt_tokens_open(&c->train_tokens, c->data_glob, c->vocab, c->seq, err, sizeof err) ||
                     (c->val_glob && prt_tokens_open(&c->val_tokens, c->val_glob, c->vocab, c->seq, err, sizeof err)),
              err);
  if (c->val_glob && !pipec_eval) prt_die(c, "%s has no validation pass (built by an older pipec); rebuild it to use validation data", argv[0]);
  c->training = 1;
  /* the peak for MFU: each machine's sgemm rate on all its cores, measured by its local rank 0 alone
     (the other ranks wait), summed over the machines */
  prt_barrier(c->world_group);
  c->peak_flops = 0;
  if (c->dev) /* on GPUs: each GPU's GEMM rate, measured by the first rank on it */
    c->peak_flops = c->env.local_rank < prt_device_count(c->dev) ? prt_dev_gemm_rate(c) : 0;
  else if (c->env.local_rank == 0) {
    k_set_threads((int)(cores < 1 ? 1 : cores));
    c->peak_flops = sgemm_rate();
    k_set_threads(threads < 1 ? 1 : (int)threads);
  }
  prt_allreduce_sum_f64(c->world_group, &c->peak_flops, 1);
  if (c->keep < 1) c->keep = 1;
  prt_ckpt_start(c);
  prt_dev_push(c);
  c->scratch_n = (long)(c->mbrows * c->seq);
  c->scratch = malloc(sizeof(float) * 2 * (size_t)c->scratch_n);
  c->loss_scale = (float)(1.0 / ((double)c->batch * (double)c->seq));
  int logger = me == 0, bar = logger && isatty(1) && isatty(2);
  if (logger)
    printf("pipec: %s, %d rank%s (%s), %lld steps of %lld sequences x %lld tokens; rank 0 arena %lld bytes\n"
           "pipec: data %s (%lld tokens)%s%s; peak %.1f GFLOP/s (%s)\n",
           c->model, c->world, c->world == 1 ? "" : "s", layout, (long long)c->steps, (long long)c->batch, (long long)c->seq, (long long)c->total,
           c->data_glob ? c->data_glob : "synthetic", (long long)c->train_tokens.len, c->val_glob ? ", validation " : "",
           c->val_glob ? c->val_glob : "", c->peak_flops / 1e9,
           c->dev ? "the GEMM rate of each GPU, as the steps run their GEMMs" : "sgemm on all cores of each machine");
  if (logger && strcmp(c->precision, "fp32"))
    printf("pipec: precision %s is for the GPU; these stage programs run on the CPU and compute in fp32\n", c->precision);
  fflush(stdout);
  size_t heap_before = 0, heap_growth = 0;
  double t_all = now();
  if (c->val_glob) validate_and_log(c, c->start_step, logger); /* before training (and the transport's queues reach their size) */
  for (int64_t s = c->start_step + 1; s <= c->steps && (!c->stop_after || s <= c->stop_after); s++) {
    c->step = (int)s;
    c->loss_sum = 0;
    if (c->dev) prt_dev_memset(c->dev, (uint64_t)(uintptr_t)(c->darena + c->grads_off), 0, sizeof(float) * (size_t)c->floats, "gradients");
    else memset(c->arena + c->grads_off, 0, sizeof(float) * (size_t)c->floats);
    if (s == c->start_step + 3) heap_before = mallinfo2().uordblks; /* after the transport's queues reach their size */
    double t0 = now();
    if (c->dev) {
      pipec_step_dev(c, c->darena);
      prt_dev_sync(c->dev, "the step");
    } else
      step(c, c->arena);
    double dt = now() - t0;
    if (s >= c->start_step + 3) {
      size_t h = mallinfo2().uordblks;
      if (h > heap_before && h - heap_before > heap_growth) heap_growth = h - heap_before;
    }
    double l = world_loss(c), tokens = (double)c->batch * (double)c->seq;
    if (logger && (s % (log_every ? log_every : 1) == 0 || s == 1 || s == c->steps)) {
      if (bar) fputs("\r\033[K", stderr);
      printf("step %4lld/%lld | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s | MFU %.2f%%\n", (long long)s, (long long)c->steps, l,
             c->cur_lr, c->grad_norm, dt * 1e3, tokens / dt, 100 * c->flops_per_token * tokens / dt / c->peak_flops);
      fflush(stdout);
    }
    size_t h_out = mallinfo2().uordblks; /* what validation and saving keep is not the steps' */
    if (c->val_glob && ((c->val_every && s % c->val_every == 0) || s == c->steps)) {
      if (bar) fputs("\r\033[K", stderr);
      validate_and_log(c, s, logger);
    }
    if (bar) { /* one line on stderr, redrawn each step */
      int w = 30, k = (int)(w * s / c->steps);
      double left = (now() - t_all) / (double)s * (double)(c->steps - s);
      fprintf(stderr, "\r[%.*s%*s] step %lld/%lld, %.0f s left ", k, "##############################", w - k, "", (long long)s,
              (long long)c->steps, left);
      fflush(stderr);
    }
    prt_ckpt_after_step(c, s);
    size_t h_back = mallinfo2().uordblks;
    if (heap_before && h_back > h_out) heap_before += h_back - h_out;
  }
  prt_dev_end(c);
  prt_comm_free_shared(c->comm, c->arena); /* no peer reads it once the last all-reduce has returned */
  c->arena = NULL;
  if (bar) fputs("\r\033[K", stderr);
  if (logger) {
    struct mallinfo2 m1 = mallinfo2();
    (void)m0, (void)m1;
    printf("pipec: done in %.2f s; arena %lld bytes as planned, heap growth during steps %lld..%lld: %zu bytes\n", now() - t_all,
           (long long)c->total, (long long)c->start_step + 3, (long long)c->steps, heap_growth);
  }
  ctx_free(c);
  return 0;
}
