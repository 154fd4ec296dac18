/* dump.c — the checked program as text (pipec --dump-model). */
#include <string.h>

#include "compiler/cost.h"
#include "compiler/frontend.h"

static void dump_module(FILE *out, const Module *m, int depth) {
  fprintf(out, "%*s%-*s %-18s", 2 * depth + 2, "", 28 - 2 * depth, m->name, m->kind);
  switch (m->prim) {
  case PRIM_EMBEDDING: fprintf(out, " (%lld, %lld)", (long long)m->num, (long long)m->dim); break;
  case PRIM_LINEAR:
    fprintf(out, " %lld -> %lld%s", (long long)m->in, (long long)m->out, m->bias ? "" : " no bias");
    if (m->tie) fprintf(out, ", tied to %s", m->tie->path);
    break;
  case PRIM_LAYERNORM:
  case PRIM_RMSNORM: fprintf(out, " %lld eps %g", (long long)m->dim, m->eps); break;
  case PRIM_ATTENTION:
    fprintf(out, " %lld, %lld heads%s%s", (long long)m->dim, (long long)m->heads, m->causal ? ", causal" : "",
            m->kv_heads != m->heads ? ", grouped kv" : "");
    break;
  case PRIM_DROPOUT: fprintf(out, " p %g", m->p); break;
  default: break;
  }
  fprintf(out, "  %lld params\n", (long long)m->nparams);
  for (int i = 0; i < m->nkids; i++) dump_module(out, m->kids[i], depth + 1);
}

void program_dump(FILE *out, const Program *p) {
  char buf[32];
  cost_format_count(buf, sizeof buf, (double)p->nparams);
  fprintf(out, "model %s: %lld parameters (%s), %d top-level modules\n", p->model_name, (long long)p->nparams, buf, p->nmods);
  for (int i = 0; i < p->nmods; i++) dump_module(out, p->mods[i], 0);
  fprintf(out, "parallel: tp %d, dp %d, pp %d, virtual %d, order %c%c-%c%c-%c%c, world %d ranks\n", p->tp, p->dp, p->pp,
          p->virtual_stages, p->order[0], 'p', p->order[1], 'p', p->order[2], 'p', p->world);
  for (int k = 0; k < p->npipes; k++) {
    const Pipeline *pl = &p->pipes[k];
    if (k && pl->stages == p->pipes[k - 1].stages) continue; /* replicas share one placement */
    int reps = 1;
    while (k + reps < p->npipes && p->pipes[k + reps].stages == pl->stages) reps++;
    fprintf(out, "pipeline %d%s%s%s: %d stage%s, %d microbatch%s", k, pl->template_name ? " (template " : "",
            pl->template_name ? pl->template_name : "", pl->template_name ? ")" : "", pl->nstages, pl->nstages == 1 ? "" : "s",
            pl->microbatches, pl->microbatches == 1 ? "" : "es");
    if (reps > 1) fprintf(out, ", x%d data-parallel replicas", reps);
    fputc('\n', out);
    for (int s = 0; s < pl->nstages; s++) {
      int64_t params = 0;
      for (int i = pl->stages[s].first; i <= pl->stages[s].last; i++) params += p->mods[i]->nparams;
      cost_format_count(buf, sizeof buf, (double)params);
      fprintf(out, "  stage %d: %s", s, p->mods[pl->stages[s].first]->path);
      if (pl->stages[s].last > pl->stages[s].first) fprintf(out, " .. %s", p->mods[pl->stages[s].last]->path);
      fprintf(out, " (%d modules, %s params)\n", pl->stages[s].last - pl->stages[s].first + 1, buf);
    }
  }
  if (p->has_train)
    fprintf(out, "train: batch %lld, microbatches %d%s, seq %lld, schedule %s, %s lr %g, %s, steps %lld, %s\n",
            (long long)p->batch, p->microbatches ? p->microbatches : p->pipes[0].microbatches,
            p->microbatches ? "" : " (per template)", (long long)p->seq, schedule_names[p->schedule], p->optimizer, p->lr,
            p->lr_schedule, (long long)p->steps, p->precision);
  if (p->has_infer)
    fprintf(out, "infer: %s, max_new_tokens %lld, temperature %g\n", p->sampling, (long long)p->max_new_tokens, p->temperature);
}
