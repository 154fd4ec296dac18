/* test_tp.c — tensor parallelism gives the same numbers as one rank: each
 * model is sharded over tp ranks (Megatron column/row linears, attention by
 * heads; vocabulary-parallel embedding, head and cross-entropy when the
 * vocabulary divides by tp), the ranks run op by op in one process with their all-reduces done
 * in memory, and the loss and every parameter gradient (this rank's part of
 * the full one) must match the single-rank run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/frontend.h"
#include "compiler/opgraph.h"
#include "runtime/graph_exec.h"
#include "tests/check.h"
#include "tests/compile.h"

static const char *models[][2] = {
  {"gpt2",
   "import \"nn\"\n"
   "model g { vocab = 64  context = 16  dim = 32  heads = 4  depth = 2\n"
   "  wte = embedding(vocab, dim)  wpe = embedding(context, dim)\n"
   "  layers = [depth] transformer_block(dim, heads)\n"
   "  ln_f = layernorm(dim)  lm_head = linear(dim, vocab, bias = false, tie = wte)  loss = cross_entropy() }\n"},
  {"tutorial",
   "import \"nn\"\n"
   "model t { vocab = 52  dim = 16  heads = 4\n"
   "  tok = embedding(vocab, dim)  layers = [2] decoder_layer(dim, heads, ff = 40, dropout = 0.0)\n"
   "  norm = layernorm(dim)  output = linear(dim, vocab)  loss = cross_entropy()\n"
   "  forward(tokens, targets) { h = tok(tokens)  h = layers(h, h)  return loss(output(norm(h)), targets) } }\n"},
  {"gpt2-odd-vocab",
   "import \"nn\"\n"
   "model g { vocab = 61  context = 16  dim = 32  heads = 4  depth = 1\n"
   "  wte = embedding(vocab, dim)  wpe = embedding(context, dim)\n"
   "  layers = [depth] transformer_block(dim, heads)\n"
   "  ln_f = layernorm(dim)  lm_head = linear(dim, vocab, bias = false, tie = wte)  loss = cross_entropy() }\n"},
  {"llama",
   "import \"nn\"\n"
   "model l { vocab = 46  dim = 16  heads = 4\n"
   "  tok = embedding(vocab, dim)  layers = [2] llama_block(dim, heads, kv_heads = 2, hidden = 24)\n"
   "  norm = rmsnorm(dim)  output = linear(dim, vocab, bias = false)  loss = cross_entropy() }\n"},
};

typedef struct Group {
  GraphExec **x;
  int tp;
} Group;

/* lockstep: all ranks run op i, then the next; an all-reduce sums the ranks' outputs */
static void run_ops(Group *grp, int from, int to, int phase) {
  const OpGraph *g = grp->x[0]->g;
  for (int i = from; i < to; i++) {
    if (phase >= 0 && (int)g->op[i].phase != phase) continue;
    for (int r = 0; r < grp->tp; r++) gexec_run_op(grp->x[r], i);
    if (g->op[i].kind == OP_ALLREDUCE) {
      long n = (long)grp->x[0]->N * g->t[g->op[i].out].width;
      int max = g->op[i].scalar == 1; /* the vocabulary-parallel softmax's max */
      for (long k = 0; k < n; k++) {
        double s = max ? -INFINITY : 0;
        for (int r = 0; r < grp->tp; r++) {
          double v = grp->x[r]->val[grp->x[r]->g->op[i].out][k];
          s = max ? fmax(s, v) : s + v;
        }
        for (int r = 0; r < grp->tp; r++) grp->x[r]->val[grp->x[r]->g->op[i].out][k] = (float)s;
      }
    }
  }
}

int main(void) {
  for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
    Arena a = {0};
    OpGraph *g = test_graph(&a, test_compile(&a, models[mi][0], models[mi][1]));
    CHECK(g != NULL, "%s compiles", models[mi][0]);
    if (!g) continue;
    int B = 2, T = 7, N = B * T;
    GraphExec *full = gexec_new(g, B, T);
    gexec_init_params(full, 7);
    for (int64_t k = 0; k < full->nparams; k++) full->params[k] *= 3;
    int32_t tok[14], tgt[14];
    for (int k = 0; k < N; k++) tok[k] = (int32_t)((k * 7 + 3) % 41), tgt[k] = (int32_t)((k * 11 + 5) % 41);
    float L = gexec_forward(full, tok, tgt);
    gexec_backward(full);
    for (int tp = 2; tp <= 4; tp *= 2) {
      if (!strcmp(models[mi][0], "llama") && tp > 2) continue; /* kv_heads = 2 */
      Group grp = {calloc((size_t)tp, sizeof(GraphExec *)), tp};
      int sharded = 0;
      for (int r = 0; r < tp; r++) {
        OpGraph *gr = opgraph_shard(&a, g, tp, r);
        grp.x[r] = gexec_new(gr, B, T);
        for (int k = 0; k < gr->nparam; k++) {
          opgraph_shard_copy(&gr->param[k], tp, r, full->params + full->param_off[k], grp.x[r]->params + grp.x[r]->param_off[k]);
          sharded += r == 0 && gr->param[k].shard != SHARD_NONE;
        }
        memcpy(grp.x[r]->ival[gr->tokens], tok, sizeof tok);
        memcpy(grp.x[r]->ival[gr->targets], tgt, sizeof tgt);
      }
      const OpGraph *g0 = grp.x[0]->g;
      run_ops(&grp, 0, g0->nfwd, -1);
      run_ops(&grp, g0->nfwd, g0->nop, PHASE_I);
      run_ops(&grp, g0->nfwd, g0->nop, PHASE_W);
      double Lr = 0;
      int valid = 0;
      for (int k = 0; k < N; k++) Lr += grp.x[0]->val[g0->loss][k], valid++;
      Lr /= valid;
      CHECK(fabs(Lr - L) <= 1e-5 * fabs(L), "%s tp=%d: loss %.7f, one rank %.7f", models[mi][0], tp, Lr, L);
      CHECK(sharded >= 4, "%s tp=%d: only %d parameters sharded", models[mi][0], tp, sharded);
      for (int k = 0; k < g0->nparam; k++)
        if (!strcmp(g0->param[k].name, "wte.weight")) /* vocabulary-parallel exactly when the vocabulary divides */
          CHECK(g0->param[k].shard == (g0->param[k].full_rows % tp ? SHARD_NONE : SHARD_ROWS), "%s tp=%d: wte.weight shard %d",
                models[mi][0], tp, g0->param[k].shard);
      /* gradients: this rank's part of the full gradient */
      double worst = 0;
      const char *worst_name = "";
      for (int r = 0; r < tp; r++) {
        const OpGraph *gr = grp.x[r]->g;
        for (int k = 0; k < gr->nparam; k++) {
          int64_t n = grp.x[r]->param_off[k + 1] - grp.x[r]->param_off[k];
          float *want = malloc(sizeof(float) * (size_t)n);
          opgraph_shard_copy(&gr->param[k], tp, r, full->grads + full->param_off[k], want);
          double scale = 1e-6;
          for (int64_t e = 0; e < n; e++) scale = fmax(scale, fabs(want[e]));
          for (int64_t e = 0; e < n; e++) {
            double err = fabs(grp.x[r]->grads[grp.x[r]->param_off[k] + e] - want[e]) / scale;
            if (err > worst) worst = err, worst_name = gr->param[k].name;
          }
          free(want);
        }
      }
      CHECK(worst < 1e-4, "%s tp=%d: gradient of %s differs by %.3g (relative to its largest entry)", models[mi][0], tp,
            worst_name, worst);
      printf("%s tp=%d: loss %.6f (one rank %.6f), %d parameters sharded, worst gradient difference %.2g\n", models[mi][0], tp,
             Lr, L, sharded, worst);
      for (int r = 0; r < tp; r++) gexec_free(grp.x[r]);
      free(grp.x);
    }
    gexec_free(full);
    arena_free(&a);
  }
  return check_summary();
}
