/* gen_reference.c FILE.pipe IDS N [WEIGHTS] — greedy decoding of FILE's
 * model, from the parameters its stage programs start from (param_init_full,
 * the train section's seed) or from WEIGHTS (a pipec checkpoint, a Hugging
 * Face GPT-2 or an llm.c file: lib/ckpt), by the reference executor (runtime/graph_exec.c): the
 * whole sequence's forward again for every new token, no cache. Prints the
 * N new token ids on one line, for tests/stage/generate.sh to compare with
 * what the stage programs' KV-cache decoding produced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/ckpt.h"
#include "runtime/graph_exec.h"
#include "tests/compile.h"

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: gen_reference FILE.pipe IDS N [WEIGHTS]\n");
    return 2;
  }
  Arena a = {0};
  Program *p = test_compile(&a, argv[1], NULL);
  OpGraph *g = test_graph(&a, p);
  if (!g) return 1;
  int logits = -1;
  for (int i = 0; i < g->nfwd; i++)
    if (g->op[i].kind == OP_XENT) logits = g->op[i].in[0];
  int T = (int)p->seq, n = atoi(argv[3]), len = 0;
  if (logits < 0 || n < 1) return 1;
  int32_t *tok = calloc((size_t)T, sizeof(int32_t)), *tgt = calloc((size_t)T, sizeof(int32_t));
  for (char *s = argv[2]; *s && len < T;) tok[len++] = (int32_t)strtol(s, &s, 10), s += *s == ',';
  if (len + n > T) return 1;
  GraphExec *x = gexec_new(g, 1, T);
  gexec_init_params(x, (uint64_t)p->seed);
  if (argc == 5) {
    char err[1024];
    CkSource *src = ck_open(argv[4], err, sizeof err);
    for (int i = 0; src && i < g->nparam; i++)
      if (ck_get(src, g->param[i].name, g->param[i].rows, g->param[i].cols, x->params + x->param_off[i], err, sizeof err)) {
        ck_close(src);
        src = NULL;
      }
    if (!src) {
      fprintf(stderr, "gen_reference: %s\n", err);
      return 1;
    }
    ck_close(src);
  }
  int V = g->t[logits].width;
  for (int k = 0; k < n; k++, len++) { /* positions after len - 1 do not reach it: causal */
    gexec_forward(x, tok, tgt);
    const float *row = x->val[logits] + (size_t)(len - 1) * V;
    int best = 0;
    for (int v = 1; v < V; v++)
      if (row[v] > row[best]) best = v;
    tok[len] = best;
    printf("%s%d", k ? " " : "", best);
  }
  printf("\n");
  gexec_free(x);
  free(tok), free(tgt);
  arena_free(&a);
  return 0;
}
