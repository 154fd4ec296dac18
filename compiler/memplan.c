/* memplan.c — see memplan.h. */
#include "compiler/memplan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/cost.h"

static int64_t param_values(const OgParam *p) { return p->rows * (p->cols ? p->cols : 1); }

/* The stage (chunk) an op belongs to, from its top-level module. */
static int stage_of(const Pipeline *pl, int top) {
  for (int s = 0; s < pl->nstages; s++)
    if (top >= pl->stages[s].first && top <= pl->stages[s].last) return s;
  return -1;
}

MemPlan *memplan_build(Arena *a, const Program *p, const OpGraph *g, const Pipeline *pl, const Schedule *s,
                       const SimResult *sim) {
  MemPlan *m = arena_alloc(a, sizeof *m);
  m->nranks = s->nranks;
  m->rank = arena_alloc(a, sizeof(RankMemory) * (size_t)s->nranks);
  int64_t N = (int64_t)llround(cost_microbatch_tokens(p));
  m->tokens_per_microbatch = N;
  double elt = cost_act_elt_bytes(p->precision);
  double per_param = cost_bytes_per_param(p->precision, p->optimizer, p->momentum);
  double wgt = !strcmp(p->precision, "bf16") ? 2 + 4 : 4; /* weights (+ fp32 master) */
  double grd = !strcmp(p->precision, "bf16") ? 2 : 4;
  int *stage = arena_alloc(a, sizeof(int) * (size_t)(g->nop + 1));
  for (int i = 0; i < g->nop; i++) stage[i] = stage_of(pl, g->op[i].top);
  /* which forward tensors backward reads: kept for backward */
  unsigned char *saved = arena_alloc(a, (size_t)g->nt + 1);
  for (int i = g->nfwd; i < g->nop; i++)
    for (int k = 0; k < g->op[i].nin; k++) {
      int t = g->op[i].in[k];
      if (g->t[t].producer >= 0 && g->t[t].producer < g->nfwd) saved[t] = 1;
      else if (g->t[t].producer < 0) saved[t] = 1; /* tokens, targets */
    }
  int *last_use = arena_alloc(a, sizeof(int) * (size_t)(g->nt + 1));
  for (int i = 0; i < g->nop; i++)
    for (int k = 0; k < g->op[i].nin; k++) last_use[g->op[i].in[k]] = i;
  for (int r = 0; r < s->nranks; r++) {
    RankMemory *rm = &m->rank[r];
    rm->rank = r;
    /* parameters used by the rank's stages (a tied weight: a copy on each side) */
    unsigned char *used = arena_alloc(a, (size_t)g->nparam + 1);
    int64_t values = 0;
    for (int i = 0; i < g->nop; i++) {
      if (stage[i] < 0 || s->stage_rank[stage[i]] != r) continue;
      int ps[2] = {g->op[i].weight, g->op[i].bias};
      for (int k = 0; k < 2; k++)
        if (ps[k] >= 0 && !used[ps[k]]) used[ps[k]] = 1, values += param_values(&g->param[ps[k]]);
    }
    rm->param_bytes = (int64_t)(values * wgt);
    rm->grad_bytes = (int64_t)(values * grd);
    rm->optim_bytes = (int64_t)(values * per_param) - rm->param_bytes - rm->grad_bytes;
    if (rm->optim_bytes < 0) rm->optim_bytes = 0;
    /* per stage of the rank: saved activations of one microbatch, and the
       transient peak of a forward and of a backward pass */
    int64_t act_max = 0, ws_max = 0, comm = 0;
    for (int st = 0; st < s->nstages; st++) {
      if (s->stage_rank[st] != r) continue;
      int64_t act = 0, live = 0, peak = 0;
      for (int i = 0; i < g->nop; i++) {
        if (stage[i] != st) continue;
        const OgOp *o = &g->op[i];
        if (o->out >= 0) {
          int64_t bytes = N * g->t[o->out].width * (g->t[o->out].is_int ? 4 : (int64_t)elt);
          if (i < g->nfwd && saved[o->out]) act += bytes;
          else {
            live += bytes;
            if (live > peak) peak = live;
          }
        }
        if (i < g->nfwd && (o->kind == OP_LAYERNORM || o->kind == OP_RMSNORM)) act += N * 8; /* mean, rstd (fp32) */
        if (i < g->nfwd && o->kind == OP_ATTENTION) act += N * o->heads * 4;            /* log-sum-exp (fp32) */
        for (int k = 0; k < o->nin; k++) { /* a transient dies at its last read */
          int t = o->in[k];
          if (last_use[t] == i && !(g->t[t].producer >= 0 && g->t[t].producer < g->nfwd && saved[t]) && g->t[t].producer >= 0 &&
              stage[g->t[t].producer] == st)
            live -= N * g->t[t].width * (g->t[t].is_int ? 4 : (int64_t)elt);
        }
        if (i == g->nfwd - 1 || i == g->nop - 1) live = 0; /* a pass ends: its transients are gone */
      }
      /* the activation entering and the gradient leaving the stage */
      int64_t boundary = 0;
      for (int i = 0; i < g->nfwd; i++)
        if (stage[i] == st)
          for (int k = 0; k < g->op[i].nin; k++) {
            int t = g->op[i].in[k], pr = g->t[t].producer;
            if (pr >= 0 && stage[pr] != st && !g->t[t].is_int) {
              boundary = N * g->t[t].width * (int64_t)elt;
              if (saved[t]) act += boundary; /* the received input, kept for backward */
            }
          }
      comm += 2 * boundary * 2; /* activation in and gradient out, double-buffered */
      if (act > act_max) act_max = act;
      if (peak > ws_max) ws_max = peak;
    }
    rm->act_per_microbatch = act_max;
    rm->slots = sim && sim->ok ? sim->peak_inflight[r] : s->nmb;
    rm->workspace_bytes = ws_max;
    rm->comm_bytes = comm;
    /* the arena: regions laid out back to back, 256-byte aligned */
    const char *names[6] = {"parameters", "gradients", "optimizer state", "saved activations", "workspace", "communication"};
    int64_t sizes[6] = {rm->param_bytes, rm->grad_bytes, rm->optim_bytes, rm->act_per_microbatch * rm->slots, rm->workspace_bytes,
                        rm->comm_bytes};
    int64_t off = 0;
    for (int k = 0; k < 6; k++) {
      rm->region[k] = (MemRegion){names[k], off, sizes[k]};
      off += (sizes[k] + 255) / 256 * 256;
    }
    rm->nregion = 6;
    rm->total = off;
  }
  return m;
}

static const char *human(char *b, double x) {
  cost_format_bytes(b, 32, x);
  return b;
}

void memplan_print(FILE *out, const MemPlan *m, const Program *p) {
  char b[6][32];
  fprintf(out, "memory plan (%s, %s, %lld tokens per microbatch, per tensor-parallel rank):\n", p->precision,
          schedule_names[p->schedule], (long long)m->tokens_per_microbatch);
  fprintf(out, "  rank  %-12s %-12s %-16s %-24s %-12s %-12s\n", "parameters", "gradients", "optimizer", "activations", "workspace",
          "total");
  for (int r = 0; r < m->nranks; r++) {
    const RankMemory *rm = &m->rank[r];
    char acts[64];
    snprintf(acts, sizeof acts, "%s x %d", human(b[3], (double)rm->act_per_microbatch), rm->slots);
    fprintf(out, "  %4d  %-12s %-12s %-16s %-24s %-12s %-12s\n", r, human(b[0], (double)rm->param_bytes),
            human(b[1], (double)rm->grad_bytes), human(b[2], (double)rm->optim_bytes), acts,
            human(b[4], (double)rm->workspace_bytes), human(b[5], (double)rm->total));
  }
}

int64_t memplan_parse_bytes(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || !(v > 0)) return -1;
  double mul = 1;
  if (*end == 'K' || *end == 'k') mul = 1024, end++;
  else if (*end == 'M') mul = 1024.0 * 1024, end++;
  else if (*end == 'G') mul = 1024.0 * 1024 * 1024, end++;
  else if (*end == 'T') mul = 1024.0 * 1024 * 1024 * 1024, end++;
  if (mul > 1 && *end == 'i') end++;
  if (*end == 'B') end++;
  if (*end) return -1;
  return (int64_t)(v * mul);
}
