/* data.c — the tokens a stage program trains and validates on.
 *
 * A token stream is either the shards a glob matches (llm.c token files or
 * headerless uint16 files, lib/tokfile), sorted by name and read as one
 * stream, or, without data, a synthetic corpus. Files are mapped once and
 * checked once at start (layout, at least seq + 2 tokens in all, every id
 * below the vocabulary), so steps do no I/O and cannot fail on data.
 *
 * Order (a pure function of the step, so runs repeat and a resumed run
 * reads what an uninterrupted one would): step s (1-based) trains on the
 * global batch's sequences g = (s - 1) * batch + i, i in [0, batch); global
 * microbatch m holds rows i = m * mbrows .. m * mbrows + mbrows - 1, and
 * sequence g is the seq + 1 tokens from g * seq mod (len - seq - 1)
 * (inputs, and the targets one token later). A replica's local microbatch
 * mb is global microbatch prt_global_mb(c, mb). Validation reads the
 * validation stream's sequences g = i, i in [0, batch): the same fixed
 * batch at every evaluation. */
#define _GNU_SOURCE
#include "runtime/stage_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/tokfile.h"
#include "lib/xalloc.h"

uint64_t prt_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* the synthetic corpus: a fixed random Markov chain (each token has 4 likely
   successors, so a model that learns the table reaches a loss near ln 4) */
static void make_corpus(PrtTokens *d, int64_t vocab) {
  d->len = 1 << 16;
  int32_t *v = xcalloc((size_t)d->len, sizeof *v);
  uint64_t s = 0x5EEDull;
  int32_t t = 0;
  for (int64_t i = 0; i < d->len; i++) {
    v[i] = t;
    uint64_t r = prt_mix64(s += 0x9E3779B97F4A7C15ull);
    t = (int32_t)(prt_mix64((uint64_t)t * 4 + (r & 3)) % (uint64_t)vocab);
  }
  d->synthetic = v;
}

/* an llm.c header whose magic is wrong: version 1 and a count that fits the
   size (else the file is taken as headerless tokens) */
static int looks_like_llmc(const TokFile *f) {
  const int32_t *h = (const int32_t *)f->map;
  return f->map_len >= TOK_HEADER_BYTES && (h[1] == 1 || h[1] == 2) && h[2] > 0 &&
         (size_t)h[2] * 2 + TOK_HEADER_BYTES == f->map_len;
}

int prt_tokens_open(PrtTokens *d, const char *pattern, int64_t vocab, int64_t seq, char *err, size_t errlen) {
  memset(d, 0, sizeof *d);
  if (!pattern) {
    make_corpus(d, vocab);
    return 0;
  }
  char **paths;
  size_t n;
  if (tok_glob(pattern, &paths, &n, err, errlen)) return -1;
  d->files = xcalloc(n, sizeof *d->files);
  d->first = xcalloc(n + 1, sizeof *d->first);
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    TokFile *f = &d->files[i];
    rc = tok_open(f, paths[i], TOK_AUTO, err, errlen);
    if (!rc && !f->has_header && looks_like_llmc(f)) { /* for tok_open's message about the magic */
      tok_close(f);
      rc = tok_open(f, paths[i], TOK_LLMC, err, errlen);
    }
    if (rc) break;
    d->nfiles++;
    rc = tok_check_vocab(f, (int)vocab, err, errlen);
    d->first[i + 1] = d->first[i] + (int64_t)f->ntok;
  }
  d->len = d->first[d->nfiles];
  if (!rc && d->len < seq + 2)
    rc = -1, snprintf(err, errlen, "%s: %lld tokens%s, but a sequence of %lld needs at least %lld", n == 1 ? paths[0] : pattern,
                      (long long)d->len, n == 1 ? "" : " in all its files", (long long)seq, (long long)seq + 2);
  tok_glob_free(paths, n);
  if (rc) prt_tokens_close(d);
  return rc;
}

void prt_tokens_close(PrtTokens *d) {
  for (size_t i = 0; i < d->nfiles; i++) tok_close(&d->files[i]);
  free(d->files), free(d->first), free((void *)d->synthetic);
  memset(d, 0, sizeof *d);
}

/* tokens [pos, pos + n) of the stream (pos + n <= len) */
static void copy_tokens(const PrtTokens *d, int64_t pos, int64_t n, int32_t *dst) {
  if (d->synthetic) {
    memcpy(dst, d->synthetic + pos, sizeof(int32_t) * (size_t)n);
    return;
  }
  size_t lo = 0, hi = d->nfiles; /* the file holding pos: first[lo] <= pos < first[lo + 1] */
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (d->first[mid] <= pos) lo = mid;
    else hi = mid;
  }
  for (size_t f = lo; n > 0; f++) {
    const uint16_t *t = d->files[f].tokens + (pos - d->first[f]);
    int64_t k = d->first[f + 1] - pos < n ? d->first[f + 1] - pos : n;
    for (int64_t i = 0; i < k; i++) dst[i] = t[i];
    dst += k, pos += k, n -= k;
  }
}

int64_t prt_global_mb(const PrtCtx *c, int mb) { return c->mb_base + mb; }

/* the first token of row `row` of local microbatch mb */
static int64_t window(PrtCtx *c, const PrtTokens *d, int mb, int64_t row) {
  int64_t g = prt_global_mb(c, mb) * c->mbrows + row;
  if (c->training) g += (int64_t)(c->step - 1) * c->batch;
  return g * c->seq % (d->len - c->seq - 1);
}

static void load(PrtCtx *c, int mb, int32_t *dst, int64_t shift) {
  const PrtTokens *d = c->training ? &c->train_tokens : &c->val_tokens;
  for (int64_t r = 0; r < c->mbrows; r++) copy_tokens(d, window(c, d, mb, r) + shift, c->seq, dst + r * c->seq);
}
/* (on a GPU, dst is in the device arena: the tokens go through its host mirror) */
static void load_to(PrtCtx *c, int mb, int32_t *dst, int64_t shift) {
  size_t bytes = sizeof(int32_t) * (size_t)(c->mbrows * c->seq);
  int32_t *h = c->dev ? prt_dev_mirror(c, dst, bytes) : dst;
  load(c, mb, h, shift);
  if (c->dev) prt_dev_out(c, dst, h, bytes, "token ids");
}
void prt_load_tokens(void *ctx, int mb, int32_t *dst) { load_to(ctx, mb, dst, 0); }
void prt_load_targets(void *ctx, int mb, int32_t *dst) { load_to(ctx, mb, dst, 1); }
