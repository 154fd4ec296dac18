/* test_partition.c — partition = auto against the alternatives:
 *  - on GPT-2 small over 4 stages (the head makes the last stage heavy),
 *    the simulated 1F1B step of the auto partition beats even layer counts;
 *  - on several models and stage counts, auto's slowest stage equals the
 *    best over every contiguous placement that keeps the embeddings on the
 *    first stage and the head and loss on the last (brute force). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/cost.h"
#include "compiler/frontend.h"
#include "compiler/report.h"
#include "tests/check.h"
#include "tests/compile.h"


static const char *model_fmt =
    "import \"nn\"\n"
    "model m {\n"
    "  vocab = %d   context = 1024   dim = 768   heads = 12   depth = %d\n"
    "  wte = embedding(vocab, dim)   wpe = embedding(context, dim)\n"
    "  layers = [depth] transformer_block(dim, heads)\n"
    "  ln_f = layernorm(dim)\n"
    "  lm_head = linear(dim, vocab, bias = false%s)\n"
    "  loss = cross_entropy()\n"
    "}\n"
    "%s\n"
    "parallel { pp = %d }\n"
    "train { batch = 8   microbatches = 8   seq = 1024   schedule = 1f1b }\n";


static double step_time(const Program *p) {
  SimResult r;
  char err[256];
  Schedule *s = report_build(p, &p->pipes[0], 100, &r, err, sizeof err);
  double t = s && r.ok ? r.step_time : -1;
  if (s) schedule_free(s);
  sim_result_free(&r);
  return t;
}

static double stage_cost(const Program *p, int first, int last) {
  double c = 0;
  for (int i = first; i <= last; i++) {
    ModuleCost mc = cost_module(p->mods[i], p->seq, p->precision);
    c += mc.fwd_flops + mc.bwd_flops;
  }
  return c;
}

/* best bottleneck over all placements of n modules in k stages, cut points
   only after `lo_cut` and before `hi_cut` */
static double brute(const Program *p, int k, int start, int lo_cut, int hi_cut) {
  int n = p->nmods;
  if (k == 1) return stage_cost(p, start, n - 1);
  double best = 1e300;
  for (int end = start; end < n - 1; end++) {
    if (end + 1 <= lo_cut || end + 1 > hi_cut) continue;
    double here = stage_cost(p, start, end), rest = brute(p, k - 1, end + 1, lo_cut, hi_cut);
    double b = here > rest ? here : rest;
    if (b < best) best = b;
  }
  return best;
}

int main(void) {
  char text[2048];
  Arena a = {0};
  /* 1. auto beats even layer counts on the simulated step */
  snprintf(text, sizeof text, model_fmt, 50257, 12, ", tie = wte",
           "split { layers.3: BEGINNING  layers.6: BEGINNING  layers.9: BEGINNING }", 4);
  Program *even = test_compile(&a, "test.pipe", text);
  snprintf(text, sizeof text, model_fmt, 50257, 12, ", tie = wte", "partition = auto", 4);
  Program *autop = test_compile(&a, "test.pipe", text);
  CHECK(even && autop, "models compile");
  if (even && autop) {
    double te = step_time(even), ta = step_time(autop);
    printf("gpt2, 4 stages, 1f1b m=8: even layers %.3f ms, auto %.3f ms\n", te, ta);
    CHECK(ta > 0 && te > 0 && ta < te * 0.9, "auto (%.3f ms) is not clearly faster than even layers (%.3f ms)", ta, te);
  }
  /* 2. auto's bottleneck is the brute-force optimum */
  int vocabs[] = {512, 50257, 8000}, depths[] = {4, 7, 12};
  for (int vi = 0; vi < 3; vi++)
    for (int di = 0; di < 3; di++)
      for (int k = 1; k <= 4; k++) {
        snprintf(text, sizeof text, model_fmt, vocabs[vi], depths[di], vi == 1 ? ", tie = wte" : "", "partition = auto", k);
        Program *p = test_compile(&a, "test.pipe", text);
        CHECK(p != NULL, "vocab %d depth %d pp %d compiles", vocabs[vi], depths[di], k);
        if (!p) continue;
        const Pipeline *pl = &p->pipes[0];
        double worst = 0;
        for (int s = 0; s < pl->nstages; s++) {
          double c = stage_cost(p, pl->stages[s].first, pl->stages[s].last);
          if (c > worst) worst = c;
        }
        /* embeddings (wte, wpe = modules 0, 1) stay on stage 0; lm_head and
           loss (the last two) on the last stage */
        double best = brute(p, k, 0, 2, p->nmods - 2);
        CHECK(pl->nstages == k, "vocab %d depth %d: %d stages, want %d", vocabs[vi], depths[di], pl->nstages, k);
        CHECK(worst <= best * (1 + 1e-9), "vocab %d depth %d pp %d: auto's slowest stage %.6g, best possible %.6g", vocabs[vi],
              depths[di], k, worst, best);
      }
  arena_free(&a);
  return check_summary();
}
