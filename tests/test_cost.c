/* test_cost.c — the cost model (compiler/cost.h) against numbers worked out
 * by hand for GPT-2 small and two smaller models.
 *
 *   test_cost REPO_ROOT
 *
 * Loads models/gpt2.pipe (and variants of its text with another precision
 * or optimizer), models/examples/llama-tiny.pipe and
 * models/pipelining-tutorial.pipe through pipe_frontend(), and checks
 * FLOPs, parameters, parameter bytes and activation bytes to a relative
 * 1e-9. Prints `N passed, M failed`; exit status 1 on any failure.
 *
 * GPT-2 small (dim 768, 12 heads, mlp 3072, vocab 50257, 1024 positions,
 * T = 1024), per token:
 *   block forward   2*(768*2304 + 768*768 + 2*768*3072)    projections, mlp
 *                 + 4*1024*768/2                           causal attention
 *                 + 2*8*768                                two layernorms
 *                 = 15,740,928
 *   block backward  2x the matmuls and attention, 1x the layernorms
 *                 = 31,469,568
 *   block params    7,087,872; model 124,439,808 (lm_head is tied to wte)
 *   block activations, bf16 (2-byte elements, fp32 statistics):
 *     ln_1 768*2 + 8 = 1544; attn 768*2 + 2304*2 + 768*2 + 12*4 = 7728;
 *     ln_2 1544; c_fc 768*2 = 1536; gelu 3072*2 = 6144; c_proj 6144
 *     = 24,640 (fp32: 49,216)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/cost.h"
#include "compiler/frontend.h"

static int npass, nfail;

static void near(const char *what, double got, double want) {
  double d = got - want, tol = 1e-9 * (want < 0 ? -want : want);
  if (d < 0) d = -d;
  if (d <= tol) {
    npass++;
    return;
  }
  nfail++;
  printf("FAIL %s: got %.17g, want %.17g\n", what, got, want);
}

static void truth(const char *what, int ok) {
  if (ok) npass++;
  else nfail++, printf("FAIL %s\n", what);
}

static char *slurp(const char *path, long *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) {
    fclose(f);
    free(s);
    return NULL;
  }
  fclose(f);
  s[n] = 0;
  *len = n;
  return s;
}

/* root/rel through the front end, its text with `from` replaced by `to`
 * (NULL: as it is). */
static Program *load(Arena *A, const char *root, const char *rel, const char *from, const char *to) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  long len;
  char *text = slurp(path, &len);
  if (!text) {
    printf("FAIL cannot read %s\n", path);
    nfail++;
    return NULL;
  }
  if (from) {
    char *at = strstr(text, from);
    if (!at) {
      printf("FAIL %s does not contain '%s'\n", rel, from);
      nfail++;
      free(text);
      return NULL;
    }
    size_t nf = strlen(from), nt = strlen(to);
    char *t = malloc((size_t)len + nt + 1);
    memcpy(t, text, (size_t)(at - text));
    memcpy(t + (at - text), to, nt);
    strcpy(t + (at - text) + nt, at + nf);
    free(text);
    text = t;
    len = (long)strlen(t);
  }
  Diag d = {.out = stdout};
  const char *dirs[] = {NULL};
  FrontendOptions opt = {.import_dirs = dirs};
  Program *p = pipe_frontend(A, &d, path, arena_strndup(A, text, (size_t)len), len, &opt);
  free(text);
  if (!p) {
    printf("FAIL %s does not check\n", rel);
    nfail++;
  }
  return p;
}

static const Module *mod(const Program *p, const char *path) {
  for (int i = 0; i < p->nmods; i++)
    if (!strcmp(p->mods[i]->path, path)) return p->mods[i];
  printf("FAIL no module %s\n", path);
  nfail++;
  exit(1);
}

static const Module *kid(const Module *m, const char *name) {
  for (int i = 0; i < m->nkids; i++)
    if (!strcmp(m->kids[i]->name, name)) return m->kids[i];
  printf("FAIL %s has no module %s\n", m->path, name);
  nfail++;
  exit(1);
}

/* GPT-2 small, per token */
static const double D = 768, V = 50257, T = 1024;
#define MM (2 * (D * 2304 + D * D + 2 * D * 3072)) /* block matmuls */
#define ATT (4 * T * D / 2)                         /* causal attention */
#define LN (8 * D)                                  /* one layernorm */
#define BLOCK_FWD (MM + ATT + 2 * LN)
#define BLOCK_BWD (2 * (MM + ATT) + 2 * LN)
#define BLOCK_PARAMS 7087872.0

static void test_gpt2_modules(const Program *p) {
  near("gpt2 parameters", (double)p->nparams, 124439808);
  const Module *b = mod(p, "layers.0");
  ModuleCost c = cost_module(b, 1024, "bf16");
  near("block fwd = 2*(768*2304+768*768+2*768*3072) + 4*1024*768/2 + 2*8*768", c.fwd_flops, BLOCK_FWD);
  near("block fwd literal", c.fwd_flops, 15740928);
  near("block bwd", c.bwd_flops, BLOCK_BWD);
  near("block bwd literal", c.bwd_flops, 31469568);
  near("block params", (double)c.params, BLOCK_PARAMS);
  near("block param bytes (16/param)", c.param_bytes, 16 * BLOCK_PARAMS);
  near("block act bf16", c.act_bytes, 24640);
  near("block act fp32", cost_module(b, 1024, "fp32").act_bytes, 49216);
  near("block fwd at T=512", cost_module(b, 512, "bf16").fwd_flops, MM + 4 * 512 * D / 2 + 2 * LN);

  ModuleCost a = cost_module(kid(b, "attn"), 1024, "bf16");
  near("attn fwd", a.fwd_flops, 2 * D * 2304 + 2 * D * D + ATT);
  near("attn bwd", a.bwd_flops, 2 * (2 * D * 2304 + 2 * D * D + ATT));
  near("attn params", (double)a.params, D * 2304 + 2304 + D * D + D);
  near("attn act: x + qkv + out (bf16) + lse (12 fp32)", a.act_bytes, D * 2 + 3 * D * 2 + D * 2 + 12 * 4);
  ModuleCost l = cost_module(kid(b, "ln_1"), 1024, "bf16");
  near("ln_1 fwd", l.fwd_flops, LN);
  near("ln_1 bwd (1x)", l.bwd_flops, LN);
  near("ln_1 act: x + mean, rstd", l.act_bytes, D * 2 + 8);
  const Module *mlp = kid(b, "mlp");
  near("mlp act: c_fc in + gelu in + c_proj in", cost_module(mlp, 1024, "bf16").act_bytes, D * 2 + 4 * D * 2 + 4 * D * 2);
  near("c_fc act", cost_module(kid(mlp, "c_fc"), 1024, "bf16").act_bytes, D * 2);
  near("c_proj act", cost_module(kid(mlp, "c_proj"), 1024, "bf16").act_bytes, 4 * D * 2);
  near("mlp fwd", cost_module(mlp, 1024, "bf16").fwd_flops, 2 * 2 * D * 3072);

  ModuleCost h = cost_module(mod(p, "lm_head"), 1024, "bf16");
  near("lm_head (tied) params", (double)h.params, 0);
  near("lm_head (tied) param bytes", h.param_bytes, 0);
  near("lm_head fwd", h.fwd_flops, 2 * D * V);
  near("lm_head bwd", h.bwd_flops, 4 * D * V);
  near("lm_head act", h.act_bytes, D * 2);
  ModuleCost e = cost_module(mod(p, "wte"), 1024, "bf16");
  near("wte params", (double)e.params, V * D);
  near("wte param bytes", e.param_bytes, 16 * V * D);
  near("wte fwd", e.fwd_flops, D);
  near("wte bwd", e.bwd_flops, D);
  near("wte act", e.act_bytes, 0);
  ModuleCost x = cost_module(mod(p, "loss"), 1024, "bf16");
  near("loss alone: no width, no act", x.act_bytes, 0);
  near("loss fwd", x.fwd_flops + x.bwd_flops, 0);
}

/* split { layers.4: BEGINNING  layers.8: BEGINNING }: [wte .. layers.3],
 * [layers.4 .. layers.7], [layers.8 .. loss] */
static void test_gpt2_stages(const Program *p, const char *prec, double bpp, const char *tag) {
  double elt = !strcmp(prec, "bf16") ? 2 : 4, blk_act = elt == 2 ? 24640 : 49216;
  char w[160];
  int three = p->npipes >= 1 && p->pipes[0].nstages == 3;
  truth("gpt2: one placement of 3 stages", three);
  if (!three) return;
  StageCostSummary s[3];
  cost_stages(p, &p->pipes[0], s);
  snprintf(w, sizeof w, "%s stage 0 range", tag);
  truth(w, s[0].first == 0 && s[0].last == 5 && s[1].first == 6 && s[1].last == 9 && s[2].first == 10 && s[2].last == 16);
  double p0 = V * D + 1024 * D + 4 * BLOCK_PARAMS, p1 = 4 * BLOCK_PARAMS, p2 = 4 * BLOCK_PARAMS + 2 * D;
  snprintf(w, sizeof w, "%s stage 0 params", tag), near(w, (double)s[0].params, p0);
  snprintf(w, sizeof w, "%s stage 0 params literal", tag), near(w, (double)s[0].params, 67735296);
  snprintf(w, sizeof w, "%s stage 1 params", tag), near(w, (double)s[1].params, p1);
  snprintf(w, sizeof w, "%s stage 2 params", tag), near(w, (double)s[2].params, p2);
  snprintf(w, sizeof w, "%s stages sum to the model", tag), near(w, (double)(s[0].params + s[1].params + s[2].params), 124439808);
  snprintf(w, sizeof w, "%s stage 0 param bytes", tag), near(w, s[0].param_bytes, bpp * p0);
  snprintf(w, sizeof w, "%s stage 2 param bytes", tag), near(w, s[2].param_bytes, bpp * p2);
  snprintf(w, sizeof w, "%s stage 0 fwd", tag), near(w, s[0].fwd_flops, 2 * D + 4 * BLOCK_FWD);
  snprintf(w, sizeof w, "%s stage 0 bwd", tag), near(w, s[0].bwd_flops, 2 * D + 4 * BLOCK_BWD);
  snprintf(w, sizeof w, "%s stage 1 fwd", tag), near(w, s[1].fwd_flops, 4 * BLOCK_FWD);
  snprintf(w, sizeof w, "%s stage 2 fwd", tag), near(w, s[2].fwd_flops, 4 * BLOCK_FWD + LN + 2 * D * V);
  snprintf(w, sizeof w, "%s stage 2 fwd literal", tag), near(w, s[2].fwd_flops, 140164608);
  snprintf(w, sizeof w, "%s stage 2 bwd", tag), near(w, s[2].bwd_flops, 4 * BLOCK_BWD + LN + 4 * D * V);
  snprintf(w, sizeof w, "%s stage 0 act", tag), near(w, s[0].act_bytes_per_token, 4 * blk_act);
  snprintf(w, sizeof w, "%s stage 1 act", tag), near(w, s[1].act_bytes_per_token, 4 * blk_act);
  /* ln_f (input + stats), lm_head (input), loss (logits, vocab wide) */
  snprintf(w, sizeof w, "%s stage 2 act", tag),
      near(w, s[2].act_bytes_per_token, 4 * blk_act + (D * elt + 8) + D * elt + V * elt);
}

static void test_explain(const Program *p) {
  FILE *f = tmpfile();
  if (!f) {
    truth("tmpfile", 0);
    return;
  }
  cost_explain_partition(f, p);
  long n = ftell(f);
  rewind(f);
  char *s = calloc(1, (size_t)n + 1);
  if (fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  fclose(f);
  /* slowest / mean = stage 2 / (all / 3), worked out with python3 */
  truth("explain: imbalance 1.58, slowest stage 2", strstr(s, "imbalance (slowest / mean stage fwd+bwd FLOPs): 1.58, slowest stage 2\n") != NULL);
  truth("explain: header", strstr(s, "model gpt2: 124.44M parameters (124439808), seq 1024, precision bf16") != NULL &&
                               strstr(s, "microbatch 4096 tokens") != NULL);
  /* stage 0 fwd: 62,965,248 FLOPs/token x 4096 tokens = 257.91G */
  truth("explain: stage 0 fwd 257.91G", strstr(s, "257.91G") != NULL);
  /* stage 2 activations: 202,154 B/token x 4096 = 789.66 MiB */
  truth("explain: stage 2 activations 789.66 MiB", strstr(s, "789.66 MiB") != NULL);
  free(s);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_cost REPO_ROOT\n");
    return 2;
  }
  const char *root = argv[1];
  Arena A = {0};

  near("bytes/param fp32 adamw", cost_bytes_per_param("fp32", "adamw", 0), 16);
  near("bytes/param bf16 adamw", cost_bytes_per_param("bf16", "adamw", 0), 16);
  near("bytes/param fp32 sgd", cost_bytes_per_param("fp32", "sgd", 0), 8);
  near("bytes/param bf16 sgd momentum", cost_bytes_per_param("bf16", "sgd", 0.9), 12);
  near("element bf16", cost_act_elt_bytes("bf16"), 2);
  near("element fp32", cost_act_elt_bytes("fp32"), 4);

  Program *p = load(&A, root, "models/gpt2.pipe", NULL, NULL);
  if (p) {
    test_gpt2_modules(p);
    near("gpt2 microbatch tokens: 32 / (1 x 8) x 1024", cost_microbatch_tokens(p), 4096);
    test_gpt2_stages(p, "bf16", 16, "gpt2 bf16 adamw");
    test_explain(p);
  }
  p = load(&A, root, "models/gpt2.pipe", "precision = bf16", "precision = fp32");
  if (p) test_gpt2_stages(p, "fp32", 16, "gpt2 fp32 adamw");
  p = load(&A, root, "models/gpt2.pipe", "adamw(lr = 6e-4, betas = (0.9, 0.95), eps = 1e-8, weight_decay = 0.1)",
           "sgd(lr = 6e-4, momentum = 0.9)");
  if (p) test_gpt2_stages(p, "bf16", 12, "gpt2 bf16 sgd momentum");
  p = load(&A, root, "models/gpt2.pipe", "adamw(lr = 6e-4, betas = (0.9, 0.95), eps = 1e-8, weight_decay = 0.1)",
           "sgd(lr = 6e-4)");
  if (p) test_gpt2_stages(p, "bf16", 8, "gpt2 bf16 sgd");

  /* LLaMA block, fp32, dim 128, 8 heads, 2 kv heads (kv_dim 32), hidden
     344: norms 128*4 + 4 each; attention 128*4 + (128 + 64)*4 + 128*4 +
     8*4; w1 128*4 (w3 reads the same tensor: once); silu 344*4; the
     product's two inputs 2*344*4; w2 344*4 */
  p = load(&A, root, "models/examples/llama-tiny.pipe", NULL, NULL);
  if (p)
    near("llama block act (a shared input counts once)", cost_module(mod(p, "layers.0"), 128, "fp32").act_bytes,
         2 * (128 * 4 + 4) + (128 * 4 + 192 * 4 + 128 * 4 + 32) + 128 * 4 + 4 * 344 * 4);

  /* torch's TransformerDecoderLayer, fp32, dim 512, 8 heads, ff 2048:
     self_attn 2048 + 6144 + 2048 + 32; multihead_attn adds the memory,
     2048 more; three norms 2048 + 8; linear1 2048; relu 8192; linear2 8192
     (dropout p is a name there: no mask counted). The tutorial passes the
     embedding output as every layer's memory: each stage keeps it once. */
  p = load(&A, root, "models/pipelining-tutorial.pipe", NULL, NULL);
  if (p) {
    double layer = 10272 + 12320 + 3 * 2056 + 2048 + 8192 + 8192;
    near("decoder layer act", cost_module(mod(p, "layers.0"), 500, "fp32").act_bytes, layer);
    StageCostSummary s[2];
    truth("tutorial: 2 stages", p->pipes[0].nstages == 2);
    if (p->pipes[0].nstages == 2) {
      cost_stages(p, &p->pipes[0], s);
      near("tutorial stage 0 act (memory once)", s[0].act_bytes_per_token, 4 * layer - 4 * 2048);
      near("tutorial stage 1 act (memory once, logits 10000 wide)", s[1].act_bytes_per_token,
           4 * layer - 3 * 2048 + (2048 + 8) + 2048 + 10000 * 4);
      near("tutorial sgd bytes/param", s[0].param_bytes, 8.0 * (double)s[0].params);
    }
  }

  /* templates: batch 12 over 2 + 4 microbatches: 2 sequences of 64 */
  p = load(&A, root, "models/examples/oobleck-templates.pipe", NULL, NULL);
  if (p) near("templates microbatch tokens", cost_microbatch_tokens(p), 128);

  arena_free(&A);
  printf("%d passed, %d failed\n", npass, nfail);
  return nfail ? 1 : 0;
}
