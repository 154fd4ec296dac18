/* generate.c — text generation with a stage program (`launch --generate`).
 *
 * compiler/stagegen.c lowers, next to the training step, a forward for one
 * new token of each beam with a KV cache per attention (pipec_gen and the
 * chunk functions pipec_c<stage>_g) and describes its memory in the
 * manifest (`gen`, `genkv` lines). Here every rank of a pipeline runs
 * pipec_gen position by position: the prompt first (its logits unused),
 * then one position per new token. The last pipeline rank gathers the
 * logits of its tensor-parallel group, its tp rank 0 picks the next token
 * of each beam (greedy, top-k / top-p sampling with a seed, or beam search)
 * and broadcasts the tokens and the beams they extend to the pipeline,
 * whose ranks reorder their caches when beams are reordered. Every dp
 * replica generates the same text; rank 0 prints it.
 *
 * Options after --generate:
 *   --prompt TEXT | --prompt-ids 1,2,3   (default: the infer section's prompt)
 *   --max-new-tokens N   --sampling greedy|top_k:K|top_p:P|beam:N
 *   --temperature X   --seed N   --weights PATH   --tokenizer DIR   --ids
 * The tokenizer (GPT-2's byte-level BPE) is read from DIR, $PIPEC_TOKENIZER
 * or ./tokenizer: encoder.json + vocab.bpe, or vocab.json + merges.txt; for
 * a model of V < 50257 ids, its first V - 256 merges (pipec tokenize
 * --vocab-size V).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/bpe.h"
#include "lib/xalloc.h"
#include "runtime/stage_int.h"
#include "runtime/device.h"

/* defined by the generated program when its model can generate */
void pipec_gen(void *ctx, char *arena, char *gen, int pos) __attribute__((weak));
void pipec_gen_dev(void *ctx, char *arena, char *gen, int pos) __attribute__((weak)); /* on the GPU */

typedef struct Gen {
  int64_t beams, maxt, bytes, logits_off;
  int width;
  int64_t *kv_off, *kv_beam;
  int nkv;
  const char *none; /* why this model cannot generate */
  /* the infer section's defaults */
  int64_t max_new, top_k, seed;
  double top_p, temperature;
  char sampling[16];
  char *prompt, *weights;
  int32_t *cur; /* this position's token of each beam */
} Gen;

static Gen *g_gen;

void prt_gen_tokens(void *ctx, int32_t *dst) {
  PrtCtx *c = ctx;
  if (c->dev) prt_dev_out(c, dst, g_gen->cur, sizeof(int32_t) * (size_t)g_gen->beams, "token ids");
  else memcpy(dst, g_gen->cur, sizeof(int32_t) * (size_t)g_gen->beams);
}

/* beam search moving cache rows: on the GPU, device to device */
static void cache_copy(PrtCtx *c, char *dst, const char *src, size_t n) {
  if (c->dev) prt_dev_copy(c->dev, (uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src, n, "beam search: the caches");
  else memcpy(dst, src, n);
}

static char *unhex(const char *h) {
  if (!strcmp(h, "-")) return NULL;
  size_t n = strlen(h) / 2;
  char *s = xcalloc(n + 1, 1);
  for (size_t i = 0; i < n; i++) {
    unsigned v = 0;
    sscanf(h + 2 * i, "%2x", &v);
    s[i] = (char)v;
  }
  return s;
}

static int parse_gen(Gen *G, const char *manifest) {
  char *copy = xstrdup(manifest), *save = NULL;
  int bad = 0, seen = 0;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (!strncmp(line, "gen none ", 9)) G->none = xstrdup(line + 9), seen = 1;
    else if (!strncmp(line, "gen ", 4))
      bad |= sscanf(line, "gen beams %" SCNd64 " maxt %" SCNd64 " bytes %" SCNd64 " logits %" SCNd64 " width %d", &G->beams, &G->maxt,
                    &G->bytes, &G->logits_off, &G->width) != 5,
          seen = 1;
    else if (!strncmp(line, "genkv ", 6)) {
      G->kv_off = xrealloc(G->kv_off, (size_t)G->nkv + 1, sizeof(int64_t));
      G->kv_beam = xrealloc(G->kv_beam, (size_t)G->nkv + 1, sizeof(int64_t));
      bad |= sscanf(line, "genkv %" SCNd64 " %" SCNd64, &G->kv_off[G->nkv], &G->kv_beam[G->nkv]) != 2;
      G->nkv++;
    } else if (!strncmp(line, "infer ", 6)) {
      char prompt[8192], weights[8192];
      bad |= sscanf(line,
                    "infer max_new_tokens %" SCNd64 " sampling %15s top_k %" SCNd64 " top_p %lf beams %*d temperature %lf seed %" SCNd64
                    " prompt %8191s weights %8191s",
                    &G->max_new, G->sampling, &G->top_k, &G->top_p, &G->temperature, &G->seed, prompt, weights) != 8;
      if (!bad) G->prompt = unhex(prompt), G->weights = unhex(weights);
    }
  }
  free(copy);
  return bad || !seen ? -1 : 0;
}

/* ---- the tokenizer ---- */
static Bpe *load_tokenizer(const char *dir, char *err, size_t errlen) {
  const char *env = getenv("PIPEC_TOKENIZER");
  const char *d = dir ? dir : env && *env ? env : "tokenizer";
  char why[900];
  Bpe *b = bpe_load_dir(d, why, sizeof why);
  if (!b) snprintf(err, errlen, "%s (the tokenizer: --tokenizer DIR or PIPEC_TOKENIZER; or give the prompt as --prompt-ids)", why);
  return b;
}

/* ---- choosing the next tokens ---- */
static double uniform(uint64_t seed, int64_t step) { return (double)(prt_mix64(seed ^ prt_mix64((uint64_t)step + 1)) >> 11) * 0x1.0p-53; }

typedef struct Cand {
  double score;
  int beam;
  int32_t tok;
} Cand;
static int by_score(const void *x, const void *y) { /* best first; ties: lower beam, then lower token */
  const Cand *a = x, *b = y;
  if (a->score != b->score) return a->score < b->score ? 1 : -1;
  if (a->beam != b->beam) return a->beam - b->beam;
  return a->tok - b->tok;
}

/* log-softmax of one row (temperature applied) into lp */
static void log_softmax(double *lp, const float *x, int V, double temp) {
  double m = -DBL_MAX, s = 0;
  for (int v = 0; v < V; v++) lp[v] = x[v] / temp, m = lp[v] > m ? lp[v] : m;
  for (int v = 0; v < V; v++) s += exp(lp[v] - m);
  double l = m + log(s);
  for (int v = 0; v < V; v++) lp[v] -= l;
}

/* the next token of each beam and the beam it extends */
static void choose(const Gen *G, const char *mode, int64_t k_top, double p_top, double temp, uint64_t seed, int64_t step, const float *logits,
                   int V, double *score, int32_t *tok, int32_t *parent, int first) {
  int nb = (int)G->beams;
  double *lp = xcalloc((size_t)V, sizeof(double));
  if (!strcmp(mode, "beam")) {
    Cand *c = xcalloc((size_t)nb * (size_t)V, sizeof(Cand));
    int n = 0;
    for (int b = 0; b < (first ? 1 : nb); b++) {
      log_softmax(lp, logits + (size_t)b * V, V, 1.0);
      for (int v = 0; v < V; v++) c[n++] = (Cand){score[b] + lp[v], b, v};
    }
    qsort(c, (size_t)n, sizeof *c, by_score);
    for (int b = 0; b < nb; b++) tok[b] = c[b].tok, parent[b] = c[b].beam, score[b] = c[b].score;
    free(c);
    free(lp);
    return;
  }
  for (int b = 0; b < nb; b++) {
    const float *x = logits + (size_t)b * V;
    parent[b] = b;
    if (!strcmp(mode, "greedy")) {
      int best = 0;
      for (int v = 1; v < V; v++)
        if (x[v] > x[best]) best = v;
      tok[b] = best;
      continue;
    }
    /* top-k / top-p: the candidates in order of probability, cut, renormalised, sampled */
    log_softmax(lp, x, V, temp);
    Cand *c = xcalloc((size_t)V, sizeof(Cand));
    for (int v = 0; v < V; v++) c[v] = (Cand){lp[v], 0, v};
    qsort(c, (size_t)V, sizeof *c, by_score);
    int keep = V;
    if (!strcmp(mode, "top_k") && k_top < keep) keep = (int)k_top;
    if (!strcmp(mode, "top_p")) {
      double cum = 0;
      for (keep = 0; keep < V && (keep == 0 || cum < p_top); keep++) cum += exp(c[keep].score);
    }
    double tot = 0;
    for (int i = 0; i < keep; i++) tot += exp(c[i].score);
    double u = uniform(seed + (uint64_t)b, step) * tot, acc = 0;
    tok[b] = c[keep - 1].tok;
    for (int i = 0; i < keep; i++)
      if ((acc += exp(c[i].score)) > u) {
        tok[b] = c[i].tok;
        break;
      }
    free(c);
  }
  free(lp);
}

/* Stops generation for a reason every rank finds alike (the options, the
   prompt, the build): rank 0 says why, once, and every rank exits 1. */
static void vrefuse(const PrtCtx *c, int status, const char *fmt, va_list ap) __attribute__((noreturn));
static void vrefuse(const PrtCtx *c, int status, const char *fmt, va_list ap) {
  if (c->env.rank == 0) {
    fprintf(stderr, "pipec: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    fflush(stderr);
  }
  prt_barrier(c->world_group); /* every rank gets here alike; rank 0's line is out before any exits */
  exit(status);
}
static void refuse(PrtCtx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void refuse(PrtCtx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vrefuse(c, 1, fmt, ap);
}
/* a bad option: as refuse, with the status of a usage error */
static void bad_option(const PrtCtx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void bad_option(const PrtCtx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vrefuse(c, 2, fmt, ap);
}

static int64_t opt_int(const PrtCtx *c, const char *s, const char *what, int64_t lo, int64_t hi) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi) bad_option(c, "%s needs an integer in %lld .. %lld, not '%s'", what, (long long)lo, (long long)hi, s);
  return v;
}

static double opt_float(const PrtCtx *c, const char *s, const char *what, double lo, double hi) {
  char *end;
  double v = strtod(s, &end);
  if (!*s || *end || !(v > lo && v <= hi)) bad_option(c, "%s needs a number in (%g, %g], not '%s'", what, lo, hi, s);
  return v;
}

void prt_generate_usage(const PrtCtx *c, int alone) {
  printf("%s [--prompt TEXT | --prompt-ids 1,2,3] [--max-new-tokens N] [--sampling greedy|top_k:K|top_p:P|beam:N]\n"
         "           [--temperature X] [--seed N] [--weights PATH] [--tokenizer DIR] [--ids]\n"
         "Generation's defaults come from the infer section%s. A stage program of %s made by pipec; start every rank with\n"
         "  torchrun --standalone --nproc-per-node %d --no-python ./launch\n  mpirun -np %d ./launch\n",
         c->generate_only ? "usage: launch [--generate]" : alone ? "usage: launch --generate" : "       launch --generate", c->generate_only ? " (this build has no train section: it only generates)" : "",
         c->model, c->world, c->world);
}

int prt_generate(PrtCtx *c, const char *manifest, int argc, char **argv) {
  Gen G0 = {0}, *G = &G0;
  int me = c->env.rank, say = me == 0;
  if (parse_gen(G, manifest)) refuse(c, "this stage binary's manifest has no generation part (from another pipec version?)");
  if (G->none) refuse(c, "%s cannot generate: %s", c->model, G->none);
  if (!pipec_gen || (c->dev && !pipec_gen_dev)) refuse(c, "this stage binary has no generation code%s", pipec_gen ? " for the GPU" : "");
  const char *prompt = G->prompt, *ids_arg = NULL, *tokdir = NULL, *weights = G->weights;
  char mode[16];
  memcpy(mode, G->sampling, sizeof mode);
  int64_t k_top = G->top_k, max_new = G->max_new, seed = G->seed, nbeams = !strcmp(mode, "beam") ? G->beams : 1;
  double p_top = G->top_p, temp = G->temperature;
  int print_ids = 0;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "--generate")) continue; /* (a generation-only build takes it too) */
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
      if (say) prt_generate_usage(c, 1);
      exit(0);
    }
    if (!strcmp(o, "--ids")) {
      print_ids = 1;
      continue;
    }
    if (!v) bad_option(c, "%s needs a value (try --help)", o);
    i++;
    if (!strcmp(o, "--prompt")) prompt = v;
    else if (!strcmp(o, "--prompt-ids")) ids_arg = v;
    else if (!strcmp(o, "--max-new-tokens")) max_new = opt_int(c, v, o, 1, 1 << 24);
    else if (!strcmp(o, "--temperature")) temp = opt_float(c, v, o, 0, 1e6);
    else if (!strcmp(o, "--seed")) seed = opt_int(c, v, o, 0, INT64_MAX);
    else if (!strcmp(o, "--weights")) weights = v;
    else if (!strcmp(o, "--tokenizer")) tokdir = v;
    else if (!strcmp(o, "--sampling")) {
      const char *colon = strchr(v, ':');
      size_t n = colon ? (size_t)(colon - v) : strlen(v);
      snprintf(mode, sizeof mode, "%.*s", (int)(n < 15 ? n : 15), v);
      nbeams = 1;
      if (!strcmp(mode, "greedy") && !colon) continue;
      if (colon && !strcmp(mode, "top_k")) k_top = opt_int(c, colon + 1, "--sampling top_k:K", 1, 1 << 24);
      else if (colon && !strcmp(mode, "top_p")) p_top = opt_float(c, colon + 1, "--sampling top_p:P", 0, 1);
      else if (colon && !strcmp(mode, "beam")) nbeams = opt_int(c, colon + 1, "--sampling beam:N", 1, 1024);
      else
        bad_option(c, "--sampling takes greedy, top_k:K, top_p:P or beam:N, not '%s'", v);
    } else
      bad_option(c, "unknown generation option '%s' (try --help)", o);
  }
  /* a beam(N) build also samples or decodes greedily (its row 0); other beam counts need another build */
  if (nbeams > 1 && nbeams != G->beams)
    refuse(c, "this build decodes %lld beam%s at a time; recompile with infer { sampling = beam(%lld) } for %lld beams", (long long)G->beams,
           G->beams == 1 ? "" : "s", (long long)nbeams, (long long)nbeams);
  if (weights) {
    char err[1024] = "";
    prt_stop_if_any(c, prt_load_weights(c, weights, err, sizeof err) != 0, err);
  } else if (say)
    fprintf(stderr, "pipec: no weights given (--weights, or infer { weights = ... }); generating from the seed's initial weights\n");

  /* the prompt as token ids */
  char err[1024];
  Bpe *bpe = NULL;
  if (!ids_arg || !print_ids) {
    bpe = load_tokenizer(tokdir, err, sizeof err);
    /* a model with fewer ids than GPT-2 uses GPT-2's BPE with its first vocab - 256 merges (as pipec tokenize --vocab-size) */
    int bad = (!bpe && !ids_arg) || (bpe && bpe_vocab_size(bpe) > c->vocab && bpe_limit_vocab(bpe, (int)c->vocab, err, sizeof err));
    prt_stop_if_any(c, bad, err);
  }
  int32_t *ids = NULL;
  size_t np = 0;
  if (ids_arg) {
    for (const char *q = ids_arg; *q;) {
      char *end;
      long v = strtol(q, &end, 10);
      if (end == q || v < 0 || v >= c->vocab) refuse(c, "--prompt-ids: '%s' is not a list of token ids below %lld", ids_arg, (long long)c->vocab);
      ids = xrealloc(ids, np + 1, sizeof(int32_t)), ids[np++] = (int32_t)v;
      q = *end == ',' ? end + 1 : end;
      if (*end && *end != ',') refuse(c, "--prompt-ids: '%s' is not a comma-separated list", ids_arg);
    }
  } else {
    if (!prompt || !*prompt) refuse(c, "no prompt: give --prompt TEXT or --prompt-ids, or set infer { prompt = \"...\" }");
    np = bpe_encode(bpe, prompt, strlen(prompt), &ids);
    for (size_t i = 0; i < np; i++)
      if (ids[i] >= c->vocab) {
        size_t len;
        const char *t = bpe_token_bytes(bpe, ids[i], &len);
        refuse(c, "the prompt's token %zu ('%.*s', id %d) is outside %s's vocabulary of %lld tokens", i, (int)len, t, ids[i], c->model,
                (long long)c->vocab);
      }
  }
  if (np == 0) refuse(c, "the prompt is empty");
  if ((int64_t)np >= G->maxt) refuse(c, "the prompt has %zu tokens; %s sees at most %lld positions", np, c->model, (long long)G->maxt);
  if ((int64_t)np + max_new > G->maxt) {
    if (say) fprintf(stderr, "pipec: %s sees %lld positions: generating %lld tokens, not %lld\n", c->model, (long long)G->maxt,
                     (long long)(G->maxt - (int64_t)np), (long long)max_new);
    max_new = G->maxt - (int64_t)np;
  }

  /* memory: the caches and workspace, once (on a GPU: there, with this as its host mirror) */
  char *gen = aligned_alloc(64, (size_t)(G->bytes + 63) / 64 * 64);
  if (!gen) prt_die(c, "cannot allocate %lld bytes for generation", (long long)G->bytes);
  memset(gen, 0, (size_t)G->bytes);
  char *dgen = gen;
  if (c->dev) {
    prt_dev_push(c); /* the weights */
    dgen = prt_dev_gen_region(c, gen, G->bytes);
  }
  if (!strcmp(mode, "beam") && nbeams == 1) snprintf(mode, sizeof mode, "greedy"); /* one beam: greedy */
  int nb = (int)G->beams, last = c->stage == c->nstages - 1, beam = !strcmp(mode, "beam");
  int64_t total = (int64_t)np + max_new;
  int32_t *seq = xcalloc((size_t)nb * (size_t)total, sizeof(int32_t)), *seq2 = xcalloc((size_t)nb * (size_t)total, sizeof(int32_t));
  for (int b = 0; b < nb; b++) memcpy(seq + (size_t)b * total, ids, sizeof(int32_t) * np);
  G->cur = xcalloc((size_t)nb, sizeof(int32_t));
  g_gen = G;
  /* the pipeline's ranks; the tokens come from its last pipeline rank's tp rank 0 */
  PrtGroup *pipe = prt_group_where(c, 1, 0, 0);
  int root = prt_group_index_where(c, 1, 0, 0, prt_world_rank(c, c->pipeline, c->nstages - 1, 0));
  int *tp_index = xcalloc((size_t)c->tp, sizeof(int)); /* tp rank t's index in c->tp_group */
  for (int t = 0; t < c->tp; t++) tp_index[t] = prt_group_index_where(c, 1, 1, 0, prt_world_rank(c, c->pipeline, c->stage, t));
  int V = G->width, vp = last && c->tp > 1 && (int64_t)G->width * c->tp == c->vocab; /* vocabulary-parallel logits */
  if (vp) V = G->width * c->tp;
  float *full = last ? xcalloc((size_t)nb * (size_t)V, sizeof(float)) : NULL, *part = vp ? xcalloc((size_t)nb * (size_t)G->width, sizeof(float)) : NULL;
  double *score = xcalloc((size_t)nb, sizeof(double));
  int32_t *msg = xcalloc(2 * (size_t)nb, sizeof(int32_t)); /* tokens, then parents */
  char *tmp = NULL;
  int64_t tmp_n = 0;
  for (int k = 0; k < G->nkv; k++)
    if (G->kv_beam[k] * nb > tmp_n) tmp_n = G->kv_beam[k] * nb;
  if (nb > 1) tmp = xcalloc((size_t)tmp_n, 1);
  uint64_t dtmp = c->dev && nb > 1 ? prt_dev_alloc(c->dev, (size_t)tmp_n, "beam search: a copy of the caches") : 0;
  if (say) {
    if (bpe && !print_ids) {
      char *text = bpe_decode(bpe, ids, np, &(size_t){0}, err, sizeof err);
      printf("%s", text ? text : "");
      free(text);
    } else
      printf("prompt ids:");
    fflush(stdout);
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int64_t produced = 0;
  for (int64_t pos = 0; pos + 1 < total; pos++) {
    for (int b = 0; b < nb; b++) G->cur[b] = seq[(size_t)b * total + pos];
    if (c->dev) pipec_gen_dev(c, c->darena, dgen, (int)pos);
    else pipec_gen(c, c->arena, gen, (int)pos);
    if (pos + 1 < (int64_t)np) continue; /* still reading the prompt */
    if (last) {
      const float *lg = (const float *)(gen + G->logits_off);
      if (c->dev) lg = prt_dev_in(c, dgen + G->logits_off, sizeof(float) * (size_t)nb * G->width, "the logits");
      if (vp) /* each tp rank's slice of the vocabulary in turn */
        for (int t = 0; t < c->tp; t++) {
          if (t == c->tp_rank) memcpy(part, lg, sizeof(float) * (size_t)nb * G->width);
          prt_broadcast(c->tp_group, tp_index[t], part, sizeof(float) * (size_t)nb * G->width);
          for (int b = 0; b < nb; b++) memcpy(full + (size_t)b * V + (size_t)t * G->width, part + (size_t)b * G->width, sizeof(float) * G->width);
        }
      else
        memcpy(full, lg, sizeof(float) * (size_t)nb * V);
      if (c->tp_rank == 0)
        choose(G, mode, k_top, p_top, temp, (uint64_t)seed, pos, full, V, score, msg, msg + nb, pos + 1 == (int64_t)np);
    }
    prt_broadcast(pipe, root, msg, sizeof(int32_t) * 2 * (size_t)nb);
    int moved = 0;
    for (int b = 0; b < nb; b++) moved |= msg[nb + b] != b;
    if (moved) { /* beams continue other beams: their histories and caches follow */
      for (int b = 0; b < nb; b++) memcpy(seq2 + (size_t)b * total, seq + (size_t)msg[nb + b] * total, sizeof(int32_t) * (size_t)(pos + 1));
      memcpy(seq, seq2, sizeof(int32_t) * (size_t)nb * total);
      char *caches = c->dev ? dgen : gen, *copy = c->dev ? (char *)(uintptr_t)dtmp : tmp; /* (device addresses on a GPU) */
      for (int k = 0; k < G->nkv; k++) {
        char *base = caches + G->kv_off[k];
        int64_t half = G->kv_beam[k] / 2, used = half / G->maxt * (pos + 1); /* keys, then values, of positions 0..pos */
        for (int b = 0; b < nb; b++) /* only the positions written so far move */
          for (int h = 0; h < 2; h++) cache_copy(c, copy + b * G->kv_beam[k] + h * half, base + b * G->kv_beam[k] + h * half, (size_t)used);
        for (int b = 0; b < nb; b++)
          for (int h = 0; h < 2; h++)
            cache_copy(c, base + b * G->kv_beam[k] + h * half, copy + msg[nb + b] * G->kv_beam[k] + h * half, (size_t)used);
      }
    }
    for (int b = 0; b < nb; b++) seq[(size_t)b * total + pos + 1] = msg[b];
    produced++;
    if (say && !beam) { /* row 0: greedy and sampling stream their tokens */
      size_t len = 0;
      const char *t = bpe && !print_ids ? bpe_token_bytes(bpe, msg[0], &len) : NULL;
      if (t) fwrite(t, 1, len, stdout);
      else printf(" %d", msg[0]);
      fflush(stdout);
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (say) {
    if (beam) { /* beam search: the best beam, once it is final */
      const int32_t *s = seq + np; /* choose() orders the beams best first */
      if (bpe && !print_ids) {
        char *text = bpe_decode(bpe, s, (size_t)max_new, &(size_t){0}, err, sizeof err);
        printf("%s", text ? text : "");
        free(text);
      } else
        for (int64_t i = 0; i < max_new; i++) printf(" %d", s[i]);
    }
    printf("\n");
    if (print_ids) {
      printf("pipec: generated ids:");
      for (int64_t i = 0; i < max_new; i++) printf(" %d", seq[np + i]);
      printf("\n");
    }
    printf("pipec: %lld tokens in %.2f s (%.1f tokens/s), %s%s\n", (long long)produced, dt, dt > 0 ? (double)produced / dt : 0.0, mode,
           beam ? " (the best beam)" : "");
    fflush(stdout);
  }
  prt_group_free(pipe);
  free(tp_index);
  bpe_free(bpe);
  if (dtmp) prt_dev_free(c->dev, dtmp);
  free(gen), free(seq), free(seq2), free(G->cur), free(full), free(part), free(score), free(msg), free(tmp), free(ids);
  free(G->kv_off), free(G->kv_beam), free(G->prompt), free(G->weights), free((char *)G->none);
  g_gen = NULL;
  return 0;
}
