/* test_autodiff.c — the op graph's backward against finite differences of
 * its own forward, on whole small models run by the CPU executor: for every
 * parameter tensor, the directional derivative of the loss along the
 * computed gradient, (L(w + e d) - L(w - e d)) / 2e with d = g / |g|, must
 * equal |g|; and along a random direction r, it must equal g . r. A wrong
 * gradient anywhere in a tensor breaks one of the two. Models: a GPT-2
 * (tied head, GELU, causal attention), PyTorch's tutorial decoder (post-norm,
 * ReLU, cross-attention, dropout 0.1), a LLaMA block (RMSNorm, SiLU, a
 * product, grouped-query attention). */
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
   "model g { vocab = 61  context = 16  dim = 24  heads = 4  depth = 2\n"
   "  wte = embedding(vocab, dim)  wpe = embedding(context, dim)\n"
   "  layers = [depth] transformer_block(dim, heads)\n"
   "  ln_f = layernorm(dim)  lm_head = linear(dim, vocab, bias = false, tie = wte)  loss = cross_entropy() }\n"},
  {"tutorial",
   "import \"nn\"\n"
   "model t { vocab = 53  dim = 16  heads = 2\n"
   "  tok = embedding(vocab, dim)  layers = [2] decoder_layer(dim, heads, ff = 40, dropout = 0.1)\n"
   "  norm = layernorm(dim)  output = linear(dim, vocab)  loss = cross_entropy()\n"
   "  forward(tokens, targets) { h = tok(tokens)  h = layers(h, h)  return loss(output(norm(h)), targets) } }\n"},
  {"llama",
   "import \"nn\"\n"
   "model l { vocab = 47  dim = 16  heads = 4\n"
   "  tok = embedding(vocab, dim)  layers = [2] llama_block(dim, heads, kv_heads = 2, hidden = 24)\n"
   "  norm = rmsnorm(dim)  output = linear(dim, vocab, bias = false)  loss = cross_entropy() }\n"},
};

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}
static double u(void) { return (double)(next() >> 11) / 9007199254740992.0; }

static double loss_at(GraphExec *x, const int32_t *tok, const int32_t *tgt) { return gexec_forward(x, tok, tgt); }

int main(void) {
  for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
    Arena a = {0};
    OpGraph *g = test_graph(&a, test_compile(&a, models[mi][0], models[mi][1]));
    CHECK(g != NULL, "%s compiles", models[mi][0]);
    if (!g) continue;
    int B = 2, T = 7;
    GraphExec *x = gexec_new(g, B, T);
    gexec_init_params(x, 42);
    /* larger weights than GPT-2's 0.02, so every path carries signal */
    for (int64_t k = 0; k < x->nparams; k++) x->params[k] *= 3;
    int32_t tok[14], tgt[14];
    int V = g->t[g->op[g->nfwd - 1].in[0]].width;
    for (int k = 0; k < B * T; k++) tok[k] = (int32_t)(next() % (uint64_t)V), tgt[k] = (int32_t)(next() % (uint64_t)V);
    tgt[3] = -1; /* an ignored position */
    double L0 = loss_at(x, tok, tgt);
    gexec_backward(x);
    CHECK(isfinite(L0) && L0 > 0, "%s: loss %g", models[mi][0], L0);
    int tensors = 0;
    for (int pi = 0; pi < g->nparam; pi++) {
      int64_t n = x->param_off[pi + 1] - x->param_off[pi];
      float *w = x->params + x->param_off[pi], *gr = x->grads + x->param_off[pi];
      double norm = 0;
      for (int64_t k = 0; k < n; k++) norm += (double)gr[k] * gr[k];
      norm = sqrt(norm);
      float *save = malloc(sizeof(float) * (size_t)n);
      double *dir = malloc(sizeof(double) * (size_t)n);
      memcpy(save, w, sizeof(float) * (size_t)n);
      for (int trial = 0; trial < 2; trial++) {
        double want = 0, dn = 0;
        for (int64_t k = 0; k < n; k++) {
          dir[k] = trial == 0 ? (norm > 0 ? gr[k] / norm : 0) : u() - 0.5;
          dn += dir[k] * dir[k];
        }
        if (trial == 1)
          for (int64_t k = 0; k < n; k++) dir[k] /= sqrt(dn);
        for (int64_t k = 0; k < n; k++) want += gr[k] * dir[k];
        if (trial == 0 && norm == 0) continue;
        double eps = 2e-3, fd;
        for (int64_t k = 0; k < n; k++) w[k] = (float)(save[k] + eps * dir[k]);
        double Lp = loss_at(x, tok, tgt);
        for (int64_t k = 0; k < n; k++) w[k] = (float)(save[k] - eps * dir[k]);
        double Lm = loss_at(x, tok, tgt);
        memcpy(w, save, sizeof(float) * (size_t)n);
        fd = (Lp - Lm) / (2 * eps);
        double tol = 5e-3 * fabs(want) + 1e-3; /* fp32 forward: ~1e-6 noise in L over 2e */
        CHECK(fabs(fd - want) <= tol, "%s %s (%s direction): finite difference %.6g, gradient says %.6g", models[mi][0],
              g->param[pi].name, trial ? "random" : "gradient", fd, want);
      }
      tensors++;
      free(save), free(dir);
    }
    printf("%s: loss %.5f, %d parameter tensors checked\n", models[mi][0], L0, tensors);
    gexec_free(x);
    arena_free(&a);
  }
  return check_summary();
}
