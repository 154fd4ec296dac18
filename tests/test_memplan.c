/* test_memplan.c — the static memory plan follows the schedule: GPT-2 small
 * on 4 pipeline ranks with 8 microbatches; 1F1B keeps p - r microbatches'
 * activations on rank r, GPipe all 8, so every rank's plan under 1F1B is
 * smaller by exactly (8 - (4 - r)) x its per-microbatch activations, and
 * everything else in the arena is the same. Regions never overlap. */
#include <string.h>

#include "compiler/frontend.h"
#include "compiler/memplan.h"
#include "compiler/opgraph.h"
#include "compiler/report.h"
#include "tests/check.h"
#include "tests/compile.h"

static MemPlan *plan(Arena *a, const char *path) {
  Program *p = test_compile(a, path, NULL);
  OpGraph *g = test_graph(a, p);
  if (!g) return NULL;
  SimResult sim;
  char err[256];
  Schedule *s = report_build(p, &p->pipes[0], 100, &sim, err, sizeof err);
  MemPlan *m = s ? memplan_build(a, p, g, &p->pipes[0], s, &sim, err, sizeof err) : NULL;
  if (s) schedule_free(s);
  sim_result_free(&sim);
  return m;
}

int main(int argc, char **argv) {
  char pg[1024], pf[1024];
  snprintf(pg, sizeof pg, "%s/tests/schedule/gpipe.pipe", argc > 1 ? argv[1] : ".");
  snprintf(pf, sizeof pf, "%s/tests/schedule/1f1b.pipe", argc > 1 ? argv[1] : ".");
  Arena a = {0};
  MemPlan *g = plan(&a, pg), *f = plan(&a, pf);
  CHECK(g && f, "both plans build");
  if (!g || !f) return check_summary();
  int p = g->nranks, m = 8;
  CHECK(p == 4 && f->nranks == 4, "4 ranks (%d, %d)", p, f->nranks);
  for (int r = 0; r < p && r < f->nranks; r++) {
    const RankMemory *G = &g->rank[r], *F = &f->rank[r];
    CHECK(G->slots == m, "gpipe rank %d keeps %d microbatches, not %d", r, G->slots, m);
    CHECK(F->slots == p - r, "1f1b rank %d keeps %d microbatches, not %d", r, F->slots, p - r);
    CHECK(G->act_per_microbatch == F->act_per_microbatch && G->act_per_microbatch > 0, "rank %d: per-microbatch activations differ",
          r);
    int64_t want = (int64_t)(m - (p - r)) * F->act_per_microbatch;
    int64_t got = G->region[3].bytes - F->region[3].bytes;
    CHECK(got == want, "rank %d: gpipe - 1f1b activations = %lld, want %lld", r, (long long)got, (long long)want);
    CHECK(F->total < G->total, "rank %d: 1f1b total %lld not below gpipe %lld", r, (long long)F->total,
          (long long)G->total);
    for (int k = 0; k < 3; k++) CHECK(G->region[k].bytes == F->region[k].bytes, "rank %d: %s differ", r, G->region[k].name);
    for (int k = 1; k < G->nregion; k++)
      CHECK(G->region[k].offset >= G->region[k - 1].offset + G->region[k - 1].bytes && G->region[k].offset % 256 == 0,
            "rank %d: region %s overlaps or is unaligned", r, G->region[k].name);
    CHECK(G->total >= G->region[G->nregion - 1].offset + G->region[G->nregion - 1].bytes, "rank %d: total too small", r);
    CHECK(G->total == G->arena_bytes && F->total == F->arena_bytes, "rank %d: fp32 plan %lld / %lld is not the stage arena %lld / %lld", r,
          (long long)G->total, (long long)F->total, (long long)G->arena_bytes, (long long)F->arena_bytes);
  }
  arena_free(&a);
  return check_summary();
}
