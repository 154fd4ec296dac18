/* tokfile.c — token data files (llm.c's layout or headerless uint16) and
 * the data-parallel batch loader. See tokfile.h for the contract. */
#include "lib/tokfile.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/files.h"
#include "lib/xalloc.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tokfile.c assumes a little-endian host"
#endif

/* ------------------------------------------------------------------ files */

void tok_close(TokFile *f) {
  if (!f) return;
  if (f->map) munmap(f->map, f->map_len);
  free(f->path);
  memset(f, 0, sizeof *f);
}

static int check_layout(TokFile *f, const unsigned char *b, size_t len, TokFormat fmt, char *err, size_t errlen) {
  const char *path = f->path;
  int32_t h[3] = {0, 0, 0};
  if (len >= 12) memcpy(h, b, 12);
  if (fmt == TOK_AUTO) fmt = len >= 4 && h[0] == TOK_MAGIC ? TOK_LLMC : TOK_RAW;
  if (fmt == TOK_RAW) {
    if (len % 2) {
      errf(err, errlen, "%s: headerless token file has an odd size (%zu bytes)", path, len);
      return -1;
    }
    f->tokens = (const uint16_t *)b;
    f->ntok = len / 2;
  } else {
    if (len < TOK_HEADER_BYTES) {
      errf(err, errlen, "%s: file is %zu bytes, shorter than the %d-byte llm.c header", path, len, TOK_HEADER_BYTES);
      return -1;
    }
    if (h[0] != TOK_MAGIC) {
      errf(err, errlen, "%s: magic number %d is not %d (llm.c token file)", path, (int)h[0], TOK_MAGIC);
      return -1;
    }
    if (h[1] == 2) {
      errf(err, errlen, "%s: version 2 (uint32 tokens, llm.c's Llama 3 files) is not supported, "
              "only version 1 (uint16)", path);
      return -1;
    }
    if (h[1] != TOK_VERSION) {
      errf(err, errlen, "%s: version %d is not %d", path, (int)h[1], TOK_VERSION);
      return -1;
    }
    uint64_t count = (uint32_t)h[2], want = TOK_HEADER_BYTES + 2 * count;
    if (h[2] < 0 || want != len) {
      errf(err, errlen, "%s: header says %d tokens (%llu bytes) but the file is %zu bytes", path, (int)h[2],
              h[2] < 0 ? 0ull : (unsigned long long)want, len);
      return -1;
    }
    f->tokens = (const uint16_t *)(b + TOK_HEADER_BYTES);
    f->ntok = (size_t)count;
    f->has_header = 1;
  }
  if (!f->ntok) {
    errf(err, errlen, "%s: no tokens", path);
    return -1;
  }
  return 0;
}

int tok_open(TokFile *f, const char *path, TokFormat fmt, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  struct stat sb;
  if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
    errf(err, errlen, "%s: not a regular file", path);
    close(fd);
    return -1;
  }
  f->path = xstrdup(path);
  size_t len = (size_t)sb.st_size;
  if (len) {
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      errf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
      close(fd);
      tok_close(f);
      return -1;
    }
    f->map = map, f->map_len = len;
  }
  close(fd);
  static const uint16_t none[1];
  if (check_layout(f, f->map ? f->map : (const void *)none, len, fmt, err, errlen)) {
    tok_close(f);
    return -1;
  }
  return 0;
}

static int check_range(const TokFile *f, size_t from, size_t n, int vocab, char *err, size_t errlen) {
  for (size_t i = from; i < from + n; i++)
    if (f->tokens[i] >= vocab) {
      errf(err, errlen, "%s: token %u at position %zu (byte %zu) is not below the vocabulary size %d", f->path,
              (unsigned)f->tokens[i], i, (f->has_header ? TOK_HEADER_BYTES : 0) + 2 * i, vocab);
      return -1;
    }
  return 0;
}

int tok_check_vocab(const TokFile *f, int vocab, char *err, size_t errlen) {
  return check_range(f, 0, f->ntok, vocab, err, errlen);
}

int tok_write(const char *path, const uint16_t *tokens, size_t n, int header, char *err, size_t errlen) {
  if (header && n > 0x7FFFFFFF) {
    errf(err, errlen, "%s: %zu tokens do not fit llm.c's int32 count", path, n);
    return -1;
  }
  int32_t h[TOK_HEADER_INTS] = {TOK_MAGIC, TOK_VERSION, (int32_t)n};
  FilePiece p[2] = {{h, header ? sizeof h : 0}, {tokens, 2 * n}};
  return file_write_pieces(path, p, 2, -1, err, errlen);
}

/* ------------------------------------------------------------------ glob */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int tok_glob(const char *pattern, char ***paths, size_t *n, char *err, size_t errlen) {
  glob_t g;
  int rc = glob(pattern, GLOB_NOSORT, NULL, &g);
  if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
    errf(err, errlen, "%s: no file matches", pattern);
    if (!rc) globfree(&g);
    return -1;
  }
  if (rc) {
    errf(err, errlen, "%s: glob failed (%s)", pattern, rc == GLOB_NOSPACE ? "out of memory" : "read error");
    return -1;
  }
  *n = g.gl_pathc;
  *paths = xcalloc(g.gl_pathc, sizeof **paths);
  for (size_t i = 0; i < g.gl_pathc; i++) (*paths)[i] = xstrdup(g.gl_pathv[i]);
  globfree(&g);
  if (*n > 1) qsort(*paths, *n, sizeof **paths, cmp_str);
  return 0;
}

void tok_glob_free(char **paths, size_t n) {
  for (size_t i = 0; i < n; i++) free(paths[i]);
  free(paths);
}

/* ---------------------------------------------------------------- loader */

struct TokLoader {
  TokFile *shard;
  size_t nshards;
  uint64_t *first; /* first[s]: global index of shard s's first batch; first[nshards] = G */
  uint64_t BT, steps;
  int B, T, rank, nranks, vocab;
  TokPos pos;
  uint64_t fingerprint;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
  return h;
}

void tok_loader_close(TokLoader *L) {
  if (!L) return;
  for (size_t i = 0; i < L->nshards; i++) tok_close(&L->shard[i]);
  free(L->shard);
  free(L->first);
  free(L);
}

TokLoader *tok_loader_open(const char *pattern, TokFormat fmt, int B, int T, int rank, int nranks, int vocab,
                           char *err, size_t errlen) {
  if (B < 1 || T < 1 || nranks < 1 || rank < 0 || rank >= nranks || vocab < 0) {
    errf(err, errlen, "%s: bad loader arguments B=%d T=%d rank=%d of %d vocab=%d", pattern, B, T, rank, nranks,
            vocab);
    return NULL;
  }
  char **paths;
  size_t n;
  if (tok_glob(pattern, &paths, &n, err, errlen)) return NULL;
  TokLoader *L = xcalloc(1, sizeof *L);
  L->shard = xcalloc(n, sizeof *L->shard);
  L->first = xcalloc(n + 1, sizeof *L->first);
  L->B = B, L->T = T, L->rank = rank, L->nranks = nranks, L->vocab = vocab;
  L->BT = (uint64_t)B * (uint64_t)T;
  uint64_t h = 1469598103934665603ull;
  int64_t shape[3] = {B, T, nranks};
  h = fnv(h, shape, sizeof shape);
  for (size_t i = 0; i < n; i++) {
    if (tok_open(&L->shard[i], paths[i], fmt, err, errlen)) {
      tok_glob_free(paths, n);
      tok_loader_close(L);
      return NULL;
    }
    L->nshards = i + 1;
    uint64_t nt = L->shard[i].ntok;
    L->first[i + 1] = L->first[i] + (nt - 1) / L->BT;
    const char *base = strrchr(paths[i], '/');
    base = base ? base + 1 : paths[i];
    h = fnv(fnv(h, base, strlen(base) + 1), &nt, sizeof nt);
  }
  tok_glob_free(paths, n);
  L->fingerprint = h ? h : 1;
  uint64_t G = L->first[L->nshards];
  L->steps = G / (uint64_t)nranks;
  if (!L->steps) {
    errf(err, errlen,
            "%s: %zu shard%s %llu batches of %d x %d+1 tokens, fewer than the %d data-parallel replicas", pattern,
            L->nshards, L->nshards == 1 ? " holds" : "s hold", (unsigned long long)G, B, T, nranks);
    tok_loader_close(L);
    return NULL;
  }
  L->pos.fingerprint = L->fingerprint;
  return L;
}

int tok_loader_locate(const TokLoader *L, uint64_t g, size_t *shard, uint64_t *first_token) {
  if (g >= L->first[L->nshards]) return -1;
  size_t lo = 0, hi = L->nshards; /* the last s with first[s] <= g: it holds g, past shards without batches */
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (L->first[mid] <= g) lo = mid;
    else hi = mid;
  }
  *shard = lo;
  *first_token = (g - L->first[lo]) * L->BT;
  return 0;
}

int tok_loader_next(TokLoader *L, int32_t *inputs, int32_t *targets, char *err, size_t errlen) {
  uint64_t g = L->pos.step * (uint64_t)L->nranks + (uint64_t)L->rank;
  size_t s = 0;
  uint64_t at = 0;
  tok_loader_locate(L, g, &s, &at); /* g < S*D <= G: always found */
  const TokFile *f = &L->shard[s];
  if (L->vocab && check_range(f, (size_t)at, (size_t)L->BT + 1, L->vocab, err, errlen)) return -1;
  const uint16_t *t = f->tokens + at;
  for (uint64_t i = 0; i < L->BT; i++) {
    inputs[i] = t[i];
    targets[i] = t[i + 1];
  }
  if (++L->pos.step == L->steps) L->pos.step = 0, L->pos.epoch++;
  return 0;
}

TokPos tok_loader_tell(const TokLoader *L) { return L->pos; }

int tok_loader_seek(TokLoader *L, TokPos pos, char *err, size_t errlen) {
  if (pos.fingerprint != L->fingerprint) {
    errf(err, errlen, "data position was saved for other shards or another batch shape (B=%d, T=%d, %d replicas)",
            L->B, L->T, L->nranks);
    return -1;
  }
  if (pos.step >= L->steps) {
    errf(err, errlen, "data position step %llu is beyond the %llu steps of an epoch", (unsigned long long)pos.step,
            (unsigned long long)L->steps);
    return -1;
  }
  L->pos = pos;
  return 0;
}

uint64_t tok_loader_steps_per_epoch(const TokLoader *L) { return L->steps; }
uint64_t tok_loader_batches(const TokLoader *L) { return L->first[L->nshards]; }
size_t tok_loader_shard_count(const TokLoader *L) { return L->nshards; }
const TokFile *tok_loader_shard(const TokLoader *L, size_t i) { return i < L->nshards ? &L->shard[i] : NULL; }
