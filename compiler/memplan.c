/* memplan.c — see memplan.h. The numbers are those of the stage programs'
 * arenas (compiler/stagegen.c): for fp32 the plan is byte for byte what a
 * stage allocates; for bf16 the same layout with 2-byte activations and
 * bf16 weights beside fp32 master weights. */
#include "compiler/memplan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/cost.h"
#include "compiler/stagegen.h"

static int64_t region(int64_t x) { return (x + 255) / 256 * 256; }

MemPlan *memplan_build(Arena *a, const Program *p, const OpGraph *g, const Pipeline *pl, const Schedule *s, const SimResult *sim,
                       char *err, size_t errlen) {
  (void)sim;
  MemPlan *m = arena_alloc(a, sizeof *m);
  m->nranks = s->nranks;
  m->rank = arena_alloc(a, sizeof(RankMemory) * (size_t)s->nranks);
  m->tokens_per_microbatch = (int64_t)llround(cost_microbatch_tokens(p));
  int bf16 = !strcmp(p->precision, "bf16");
  for (int r = 0; r < s->nranks; r++) {
    StageProgram *sp = stage_lower(a, p, g, (int)(pl - p->pipes), s, r, err, errlen);
    if (!sp) return NULL;
    RankMemory *rm = &m->rank[r];
    rm->rank = r;
    int64_t pf = sp->param_floats;
    rm->param_bytes = pf * (bf16 ? 2 + 4 : 4); /* bf16 weights + fp32 master weights */
    rm->grad_bytes = pf * (bf16 ? 2 : 4);
    rm->optim_bytes = sp->optim_floats * 4;
    rm->act_per_microbatch = bf16 ? sp->slot_bytes / 2 : sp->slot_bytes;
    rm->slots = sp->nslots;
    rm->workspace_bytes = bf16 ? sp->ws_bytes / 2 : sp->ws_bytes;
    const char *names[5] = {"parameters", "gradients", "optimizer state", "saved activations", "workspace"};
    int64_t sizes[5] = {rm->param_bytes, rm->grad_bytes, rm->optim_bytes, rm->act_per_microbatch * rm->slots, rm->workspace_bytes};
    int64_t off = 0;
    for (int k = 0; k < 5; k++) {
      rm->region[k] = (MemRegion){names[k], off, sizes[k]};
      off += region(sizes[k]);
    }
    rm->nregion = 5;
    rm->total = off; /* fp32: equal to the stage's arena (sp->total) */
    rm->arena_bytes = sp->total;
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
