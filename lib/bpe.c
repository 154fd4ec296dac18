/* bpe.c — GPT-2's byte-level BPE tokenizer. See bpe.h for the contract. */
#include "lib/bpe.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/json.h"
#include "lib/utf8.h"
#include "lib/xalloc.h"

#define CACHE_SLOTS 65536 /* encode cache: direct-mapped, pieces up to CACHE_MAX_PIECE bytes */
#define CACHE_MAX_PIECE 256

/* ------------------------------------------------------------ utilities */

static uint64_t hash_bytes(const unsigned char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t k) { /* splitmix64's finaliser */
  k = (k ^ (k >> 30)) * 0xbf58476d1ce4e5b9ull;
  k = (k ^ (k >> 27)) * 0x94d049bb133111ebull;
  return k ^ (k >> 31);
}

static size_t utf8_encode(char *d, uint32_t cp) {
  if (cp < 0x80) return d[0] = (char)cp, 1;
  if (cp < 0x800) return d[0] = (char)(0xC0 | cp >> 6), d[1] = (char)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000) {
    d[0] = (char)(0xE0 | cp >> 12), d[1] = (char)(0x80 | (cp >> 6 & 0x3F)), d[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  d[0] = (char)(0xF0 | cp >> 18), d[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  d[2] = (char)(0x80 | (cp >> 6 & 0x3F)), d[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = xcalloc(cap, 1);
  for (;;) {
    if (n == cap) buf = xrealloc(buf, cap *= 2, 1);
    size_t k = fread(buf + n, 1, cap - n, f);
    n += k;
    if (k == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    errf(err, errlen, "%s: read error", path);
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

/* ------------------------------------------------- GPT-2's byte alphabet */

/* bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the
 * other 68 bytes for U+0100.. in byte order. */
static void init_alphabet(uint32_t b2u[256], int16_t u2b[324]) {
  int n = 0;
  for (int c = 0; c < 324; c++) u2b[c] = -1;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    b2u[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    u2b[b2u[b]] = (int16_t)b;
  }
}

/* -------------------------------------------------------------- the model */

typedef struct Tok {
  char *bytes;
  uint32_t len;
} Tok;

typedef struct MergeSlot {
  uint64_t key;   /* left << 32 | right */
  int32_t rank;   /* -1: empty slot */
  int32_t result;
} MergeSlot;

typedef struct CacheSlot {
  char *key;
  uint32_t klen, nids;
  int32_t *ids;
} CacheSlot;

typedef struct Cand { /* a candidate merge at pos, valid while the symbols are still left, right */
  int32_t rank, pos, left, right, result;
} Cand;

struct Bpe {
  Tok *tok;
  int ntok;
  int32_t *tok_hash; /* open addressing over token bytes: ids, -1 empty */
  uint32_t tok_mask;
  int32_t byte_id[256];
  uint32_t b2u[256]; /* the byte alphabet and its inverse */
  int16_t u2b[324];
  MergeSlot *merge;
  uint32_t merge_mask;
  int nmerges;
  int limit; /* ids in use: ntok, or fewer after bpe_limit_vocab */
  int eot;
  CacheSlot *cache;
  /* encode scratch */
  int32_t *id, *next, *prev, *piece_out;
  Cand *heap, *round;
  size_t scap;
};

/* bytes -> their spelling in the alphabet (for messages), into buf */
static const char *spell(const Bpe *b, const char *s, size_t n, char *buf, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 8 < cap; i++) k += utf8_encode(buf + k, b->b2u[(unsigned char)s[i]]);
  if (n && k + 8 >= cap) k += (size_t)snprintf(buf + k, cap - k, "...");
  buf[k] = 0;
  return buf;
}

int32_t bpe_token_id(const Bpe *b, const char *s, size_t len) {
  for (uint32_t i = (uint32_t)hash_bytes((const unsigned char *)s, len) & b->tok_mask;; i = (i + 1) & b->tok_mask) {
    int32_t id = b->tok_hash[i];
    if (id < 0) return -1;
    if (b->tok[id].len == len && !memcmp(b->tok[id].bytes, s, len)) return id;
  }
}

static void tok_insert(Bpe *b, int32_t id) {
  uint32_t i = (uint32_t)hash_bytes((const unsigned char *)b->tok[id].bytes, b->tok[id].len) & b->tok_mask;
  while (b->tok_hash[i] >= 0) i = (i + 1) & b->tok_mask;
  b->tok_hash[i] = id;
}

static MergeSlot *merge_slot(const Bpe *b, int32_t left, int32_t right) {
  uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
  for (uint32_t i = (uint32_t)hash_pair(key) & b->merge_mask;; i = (i + 1) & b->merge_mask)
    if (b->merge[i].rank < 0 || b->merge[i].key == key) return &b->merge[i];
}

void bpe_free(Bpe *b) {
  if (!b) return;
  for (int i = 0; i < b->ntok; i++) free(b->tok[i].bytes);
  free(b->tok);
  free(b->tok_hash);
  free(b->merge);
  if (b->cache)
    for (size_t i = 0; i < CACHE_SLOTS; i++) free(b->cache[i].key), free(b->cache[i].ids);
  free(b->cache);
  free(b->id), free(b->next), free(b->prev), free(b->piece_out), free(b->heap), free(b->round);
  free(b);
}

int bpe_vocab_size(const Bpe *b) { return b->limit; }
int bpe_merge_count(const Bpe *b) { return b->nmerges; }
int bpe_eot(const Bpe *b) { return b->eot < b->limit ? b->eot : -1; }

int bpe_limit_vocab(Bpe *b, int vocab, char *err, size_t errlen) {
  if (vocab < 256 || vocab > b->ntok) {
    errf(err, errlen, "a vocabulary of %d tokens is not in 256..%d (the bytes .. this tokenizer's size)", vocab, b->ntok);
    return -1;
  }
  for (int i = 0; i < 256; i++)
    if (b->byte_id[i] >= vocab) {
      errf(err, errlen, "the token of byte %d has id %d, not below %d: this vocabulary does not start with the 256 bytes", i,
           (int)b->byte_id[i], vocab);
      return -1;
    }
  b->limit = vocab;
  for (size_t i = 0; i < CACHE_SLOTS; i++) free(b->cache[i].key), free(b->cache[i].ids), b->cache[i] = (CacheSlot){0};
  return 0;
}

const char *bpe_token_bytes(const Bpe *b, int32_t id, size_t *len) {
  if (id < 0 || id >= b->limit) return NULL;
  *len = b->tok[id].len;
  return b->tok[id].bytes;
}

/* --------------------------------------------------------- encoder.json */

typedef struct JParser {
  JsonLex lx;
  const int16_t *u2b;
  const char *file;
  char *err;
  size_t errlen;
} JParser;

__attribute__((format(printf, 2, 3))) static int jfail(JParser *j, const char *fmt, ...) {
  size_t line = 1, col = 1;
  for (size_t k = 0; k < j->lx.i && k < j->lx.n; k++) {
    if (j->lx.s[k] == '\n') line++, col = 1;
    else col++;
  }
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  errf(j->err, j->errlen, "%s:%zu:%zu: %s", j->file, line, col, what);
  return -1;
}

static int jpeek(JParser *j) { return json_peek(&j->lx); }

/* a key's code points, each a byte of GPT-2's byte alphabet */
typedef struct KeyBytes {
  JParser *j;
  char *d;
  uint32_t k;
} KeyBytes;
static int key_byte(void *arg, uint32_t cp) {
  KeyBytes *t = arg;
  if (cp >= 324 || t->j->u2b[cp] < 0) {
    snprintf(t->j->lx.why, sizeof t->j->lx.why, "U+%04X is not in GPT-2's byte alphabet", cp);
    return -1;
  }
  t->d[t->k++] = (char)t->j->u2b[cp];
  return 0;
}

/* A JSON string spelled in the byte alphabet -> its bytes (malloc'ed). */
static int jtoken(JParser *j, char **out, uint32_t *outlen) {
  if (jpeek(j) != '"') return jfail(j, "expected a string");
  KeyBytes t = {j, xcalloc(json_string_bound(&j->lx), 1), 0};
  if (json_string(&j->lx, key_byte, &t)) {
    free(t.d);
    return jfail(j, "%s", j->lx.why);
  }
  *out = t.d;
  *outlen = t.k;
  return 0;
}

typedef struct Pending {
  char *bytes;
  uint32_t len;
  int32_t id;
  size_t pos; /* of the key, for messages */
} Pending;

static int load_encoder(Bpe *b, const char *path, char *err, size_t errlen) {
  size_t len;
  char *text = read_file(path, &len, err, errlen);
  if (!text) return -1;
  JParser j = {{(const unsigned char *)text, len, 0, ""}, b->u2b, path, err, errlen};
  Pending *p = NULL;
  size_t np = 0, cap = 0;
  int rc = -1;
  if (jpeek(&j) != '{') {
    jfail(&j, "expected a JSON object mapping tokens to ids");
    goto out;
  }
  j.lx.i++;
  if (jpeek(&j) == '}') j.lx.i++;
  else
    for (;;) {
      if (np == cap) p = xrealloc(p, cap = cap ? 2 * cap : 1024, sizeof *p);
      Pending *e = &p[np];
      jpeek(&j);
      e->pos = j.lx.i;
      if (jtoken(&j, &e->bytes, &e->len)) goto out;
      np++;
      if (jpeek(&j) != ':') {
        jfail(&j, "expected ':' after a key");
        goto out;
      }
      j.lx.i++;
      int c = jpeek(&j);
      if (c < '0' || c > '9') {
        jfail(&j, "expected a non-negative integer id");
        goto out;
      }
      int64_t v = 0;
      size_t start = j.lx.i;
      while (j.lx.i < j.lx.n && j.lx.s[j.lx.i] >= '0' && j.lx.s[j.lx.i] <= '9') {
        v = v * 10 + (j.lx.s[j.lx.i++] - '0');
        if (v > 0x7FFFFFFF) {
          j.lx.i = start;
          jfail(&j, "id too large");
          goto out;
        }
      }
      int not_int = j.lx.i < j.lx.n && (j.lx.s[j.lx.i] == '.' || j.lx.s[j.lx.i] == 'e' || j.lx.s[j.lx.i] == 'E');
      if (not_int || (j.lx.s[start] == '0' && j.lx.i - start > 1)) {
        j.lx.i = start;
        jfail(&j, "expected a non-negative integer id");
        goto out;
      }
      e->id = (int32_t)v;
      c = jpeek(&j);
      if (c == ',') {
        j.lx.i++;
        continue;
      }
      if (c == '}') {
        j.lx.i++;
        break;
      }
      jfail(&j, "expected ',' or '}'");
      goto out;
    }
  if (jpeek(&j) != -1) {
    jfail(&j, "unexpected text after the JSON object");
    goto out;
  }
  if (!np) {
    errf(err, errlen, "%s: no tokens", path);
    goto out;
  }
  /* ids 0..N-1, each once; keys once each */
  b->ntok = (int)np;
  b->tok = xcalloc(np, sizeof *b->tok);
  uint32_t slots = 1;
  while (slots < 2 * np) slots *= 2;
  b->tok_mask = slots - 1;
  b->tok_hash = xcalloc(slots, sizeof *b->tok_hash);
  memset(b->tok_hash, 0xFF, slots * sizeof *b->tok_hash);
  char s1[128], s2[128];
  for (size_t k = 0; k < np; k++) {
    Pending *e = &p[k];
    j.lx.i = e->pos;
    if (e->id >= (int32_t)np) {
      jfail(&j, "'%s' has id %d, but %zu tokens need ids 0..%zu", spell(b, e->bytes, e->len, s1, sizeof s1), e->id, np,
            np - 1);
      goto out;
    }
    int32_t dup = bpe_token_id(b, e->bytes, e->len);
    if (dup >= 0) {
      jfail(&j, "'%s' appears twice", spell(b, e->bytes, e->len, s1, sizeof s1));
      goto out;
    }
    if (b->tok[e->id].bytes) {
      jfail(&j, "'%s' has id %d, already given to '%s'", spell(b, e->bytes, e->len, s1, sizeof s1), e->id,
            spell(b, b->tok[e->id].bytes, b->tok[e->id].len, s2, sizeof s2));
      goto out;
    }
    b->tok[e->id] = (Tok){e->bytes, e->len};
    e->bytes = NULL;
    tok_insert(b, e->id);
  }
  for (int c = 0; c < 256; c++) {
    char byte = (char)c;
    b->byte_id[c] = bpe_token_id(b, &byte, 1);
    if (b->byte_id[c] < 0) {
      errf(err, errlen, "%s: no token for the byte 0x%02x ('%s')", path, c, spell(b, &byte, 1, s1, sizeof s1));
      goto out;
    }
  }
  b->eot = bpe_token_id(b, "<|endoftext|>", 13);
  rc = 0;
out:
  for (size_t k = 0; k < np; k++) free(p[k].bytes);
  free(p);
  free(text);
  return rc;
}

/* ------------------------------------------------------------ vocab.bpe */

/* one merge token (UTF-8 in the byte alphabet) -> bytes in out */
static int merge_token(const int16_t *u2b, const char *s, size_t n, char *out, size_t *outlen, uint32_t *badcp) {
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t l = utf8_decode((const unsigned char *)s + i, n - i, &cp);
    if (!l) return *badcp = 0xFFFFFFFF, -1;
    if (cp >= 324 || u2b[cp] < 0) return *badcp = cp, -1;
    out[k++] = (char)u2b[cp];
    i += l;
  }
  *outlen = k;
  return 0;
}

static int load_merges(Bpe *b, const char *path, char *err, size_t errlen) {
  size_t len;
  char *text = read_file(path, &len, err, errlen);
  if (!text) return -1;
  /* count lines for the table size */
  size_t lines = 1;
  for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
  uint32_t slots = 1;
  while (slots < 2 * lines) slots *= 2;
  b->merge_mask = slots - 1;
  b->merge = xcalloc(slots, sizeof *b->merge);
  for (uint32_t i = 0; i < slots; i++) b->merge[i].rank = -1;
  char *buf = xcalloc(len + 1, 1), s1[128], s2[128], s3[256];
  int rc = -1, first_merge_line = 1;
  size_t line = 0;
  for (size_t pos = 0; pos < len;) {
    line++;
    size_t end = pos;
    while (end < len && text[end] != '\n') end++;
    size_t next = end < len ? end + 1 : end;
    if (end > pos && text[end - 1] == '\r') end--;
    const char *l = text + pos;
    size_t n = end - pos;
    pos = next;
    if (line == 1 && n && l[0] == '#') { /* "#version: 0.2" */
      first_merge_line = 2;
      continue;
    }
    const char *sp = memchr(l, ' ', n);
    if (!sp || sp == l || sp == l + n - 1 || memchr(sp + 1, ' ', (size_t)(l + n - sp - 1)) || memchr(l, '\t', n)) {
      errf(err, errlen, "%s:%zu: expected two tokens separated by one space", path, line);
      goto out;
    }
    size_t la, lb;
    uint32_t bad;
    if (merge_token(b->u2b, l, (size_t)(sp - l), buf, &la, &bad) ||
        merge_token(b->u2b, sp + 1, (size_t)(l + n - sp - 1), buf + la, &lb, &bad)) {
      if (bad == 0xFFFFFFFF) errf(err, errlen, "%s:%zu: invalid UTF-8", path, line);
      else errf(err, errlen, "%s:%zu: U+%04X is not in GPT-2's byte alphabet", path, line, bad);
      goto out;
    }
    int32_t a = bpe_token_id(b, buf, la), c = bpe_token_id(b, buf + la, lb), r = bpe_token_id(b, buf, la + lb);
    if (a < 0 || c < 0) {
      errf(err, errlen, "%s:%zu: '%s' is not in the vocabulary", path, line,
              a < 0 ? spell(b, buf, la, s1, sizeof s1) : spell(b, buf + la, lb, s1, sizeof s1));
      goto out;
    }
    if (r < 0) {
      errf(err, errlen, "%s:%zu: merging '%s' and '%s' gives '%s', which is not in the vocabulary", path, line,
              spell(b, buf, la, s1, sizeof s1), spell(b, buf + la, lb, s2, sizeof s2),
              spell(b, buf, la + lb, s3, sizeof s3));
      goto out;
    }
    MergeSlot *m = merge_slot(b, a, c);
    if (m->rank >= 0) {
      errf(err, errlen, "%s:%zu: the merge '%s %s' repeats line %d", path, line, spell(b, buf, la, s1, sizeof s1),
              spell(b, buf + la, lb, s2, sizeof s2), m->rank + first_merge_line);
      goto out;
    }
    m->key = (uint64_t)(uint32_t)a << 32 | (uint32_t)c;
    m->rank = b->nmerges++;
    m->result = r;
  }
  rc = 0;
out:
  free(buf);
  free(text);
  return rc;
}

Bpe *bpe_load_dir(const char *dir, char *err, size_t errlen) {
  static const char *const pairs[2][2] = {{"encoder.json", "vocab.bpe"}, {"vocab.json", "merges.txt"}};
  for (int k = 0; k < 2; k++) {
    size_t n = strlen(dir) + 16;
    char *a = xcalloc(n, 1), *m = xcalloc(n, 1);
    snprintf(a, n, "%s/%s", dir, pairs[k][0]), snprintf(m, n, "%s/%s", dir, pairs[k][1]);
    int found = access(a, R_OK) == 0 && access(m, R_OK) == 0;
    Bpe *b = found ? bpe_load(a, m, err, errlen) : NULL;
    free(a), free(m);
    if (found) return b;
  }
  errf(err, errlen, "%s holds neither encoder.json and vocab.bpe nor vocab.json and merges.txt", dir);
  return NULL;
}

Bpe *bpe_load(const char *encoder_json, const char *vocab_bpe, char *err, size_t errlen) {
  Bpe *b = xcalloc(1, sizeof *b);
  init_alphabet(b->b2u, b->u2b);
  b->eot = -1;
  if (load_encoder(b, encoder_json, err, errlen) || load_merges(b, vocab_bpe, err, errlen)) {
    bpe_free(b);
    return NULL;
  }
  b->cache = xcalloc(CACHE_SLOTS, sizeof *b->cache);
  b->limit = b->ntok;
  return b;
}

/* --------------------------------------------------------------- merging */

static int cand_less(const Cand *x, const Cand *y) {
  return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(Cand *h, size_t *n, Cand c) {
  size_t i = (*n)++;
  while (i) {
    size_t up = (i - 1) / 2;
    if (!cand_less(&c, &h[up])) break;
    h[i] = h[up];
    i = up;
  }
  h[i] = c;
}

static Cand heap_pop(Cand *h, size_t *n) {
  Cand top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
    if (!cand_less(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (*n) h[i] = last;
  return top;
}

static void push_pair(Bpe *b, size_t *nh, int32_t pos, int32_t left, int32_t right) {
  const MergeSlot *m = merge_slot(b, left, right);
  if (m->rank >= 0 && m->result < b->limit) heap_push(b->heap, nh, (Cand){m->rank, pos, left, right, m->result});
}

/* BPE of one piece (n bytes): ids into b->piece_out, returns their count.
 * Each round takes the lowest rank among the current pairs and merges all
 * its occurrences left to right (encoder.py's loop); stale heap entries
 * are recognised by their symbols no longer matching. */
static size_t merge_piece(Bpe *b, const unsigned char *s, size_t n) {
  if (n > b->scap) {
    b->scap = n + n / 2 + 16;
    b->id = xrealloc(b->id, b->scap, sizeof *b->id);
    b->next = xrealloc(b->next, b->scap, sizeof *b->next);
    b->prev = xrealloc(b->prev, b->scap, sizeof *b->prev);
    b->piece_out = xrealloc(b->piece_out, b->scap, sizeof *b->piece_out);
    b->heap = xrealloc(b->heap, 3 * b->scap, sizeof *b->heap);
    b->round = xrealloc(b->round, 3 * b->scap, sizeof *b->round);
  }
  int32_t *id = b->id, *next = b->next, *prev = b->prev;
  for (size_t i = 0; i < n; i++) {
    id[i] = b->byte_id[s[i]];
    next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
    prev[i] = (int32_t)i - 1;
  }
  size_t nh = 0;
  for (size_t i = 0; i + 1 < n; i++) push_pair(b, &nh, (int32_t)i, id[i], id[i + 1]);
  while (nh) {
    int32_t rank = b->heap[0].rank;
    size_t nr = 0;
    while (nh && b->heap[0].rank == rank) b->round[nr++] = heap_pop(b->heap, &nh);
    for (size_t k = 0; k < nr; k++) {
      const Cand *c = &b->round[k];
      int32_t p = c->pos, q = next[p];
      if (id[p] != c->left || q < 0 || id[q] != c->right) continue;
      id[p] = c->result;
      id[q] = -1;
      next[p] = next[q];
      if (next[p] >= 0) prev[next[p]] = p;
      if (prev[p] >= 0) push_pair(b, &nh, prev[p], id[prev[p]], id[p]);
      if (next[p] >= 0) push_pair(b, &nh, p, id[p], id[next[p]]);
    }
  }
  size_t k = 0;
  for (int32_t p = 0; p >= 0; p = next[p]) b->piece_out[k++] = id[p];
  return k;
}

typedef struct IdBuf {
  int32_t *v;
  size_t n, cap;
} IdBuf;

static void ids_put(IdBuf *o, const int32_t *v, size_t n) {
  if (o->n + n > o->cap) {
    while (o->n + n > o->cap) o->cap = o->cap ? 2 * o->cap : 256;
    o->v = xrealloc(o->v, o->cap, sizeof *o->v);
  }
  memcpy(o->v + o->n, v, n * sizeof *v);
  o->n += n;
}

static void encode_piece(Bpe *b, const unsigned char *s, size_t n, IdBuf *out) {
  if (n == 1) {
    ids_put(out, &b->byte_id[s[0]], 1);
    return;
  }
  CacheSlot *slot = NULL;
  if (n <= CACHE_MAX_PIECE) {
    slot = &b->cache[hash_bytes(s, n) & (CACHE_SLOTS - 1)];
    if (slot->key && slot->klen == n && !memcmp(slot->key, s, n)) {
      ids_put(out, slot->ids, slot->nids);
      return;
    }
  }
  size_t k = merge_piece(b, s, n);
  ids_put(out, b->piece_out, k);
  if (slot) {
    free(slot->key), free(slot->ids);
    slot->key = xcalloc(n, 1);
    memcpy(slot->key, s, n);
    slot->klen = (uint32_t)n;
    slot->ids = xcalloc(k, sizeof *slot->ids);
    memcpy(slot->ids, b->piece_out, k * sizeof *slot->ids);
    slot->nids = (uint32_t)k;
  }
}

size_t bpe_encode(Bpe *b, const char *text, size_t len, int32_t **ids) {
  IdBuf out = {0};
  for (size_t pos = 0; pos < len;) {
    size_t end = bpe_next_piece(text, len, pos);
    encode_piece(b, (const unsigned char *)text + pos, end - pos, &out);
    pos = end;
  }
  if (!out.v) out.v = xcalloc(1, sizeof *out.v);
  *ids = out.v;
  return out.n;
}

char *bpe_decode(const Bpe *b, const int32_t *ids, size_t n, size_t *len, char *err, size_t errlen) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= b->limit) {
      errf(err, errlen, "token %zu is %d, outside the vocabulary 0..%d", i, (int)ids[i], b->limit - 1);
      return NULL;
    }
    total += b->tok[ids[i]].len;
  }
  char *out = xcalloc(total + 1, 1), *d = out;
  for (size_t i = 0; i < n; i++) {
    memcpy(d, b->tok[ids[i]].bytes, b->tok[ids[i]].len);
    d += b->tok[ids[i]].len;
  }
  *d = 0;
  *len = total;
  return out;
}

/* ------------------------------------------------------ the pre-tokenizer */

/* \p{L} = Lu Ll Lt Lm Lo and \p{N} = Nd Nl No, Unicode 14.0, generated by
 *   python3 -c 'import unicodedata as u; ...category(chr(c)) in (...)'
 * over all code points, merged into inclusive ranges. */
static const uint32_t uni_letter[][2] = {
  {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x2C1},
  {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE}, {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D},
  {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
  {0x48A, 0x52F}, {0x531, 0x556}, {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A},
  {0x66E, 0x66F}, {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF},
  {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA}, {0x7F4, 0x7F5}, {0x7FA, 0x7FA},
  {0x800, 0x815}, {0x81A, 0x81A}, {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858}, {0x860, 0x86A}, {0x870, 0x887},
  {0x889, 0x88E}, {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D}, {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980},
  {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8}, {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD},
  {0x9CE, 0x9CE}, {0x9DC, 0x9DD}, {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A}, {0xA0F, 0xA10},
  {0xA13, 0xA28}, {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E},
  {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3}, {0xAB5, 0xAB9},
  {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C}, {0xB0F, 0xB10}, {0xB13, 0xB28},
  {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39}, {0xB3D, 0xB3D}, {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71},
  {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90}, {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C}, {0xB9E, 0xB9F},
  {0xBA3, 0xBA4}, {0xBA8, 0xBAA}, {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28},
  {0xC2A, 0xC39}, {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5D, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C},
  {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD}, {0xCDD, 0xCDE}, {0xCE0, 0xCE1},
  {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D}, {0xD4E, 0xD4E}, {0xD54, 0xD56},
  {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1}, {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6},
  {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46}, {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3},
  {0xEA5, 0xEA5}, {0xEA7, 0xEB0}, {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF},
  {0xF00, 0xF00}, {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A}, {0x103F, 0x103F},
  {0x1050, 0x1055}, {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066}, {0x106E, 0x1070}, {0x1075, 0x1081},
  {0x108E, 0x108E}, {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD}, {0x10D0, 0x10FA}, {0x10FC, 0x1248},
  {0x124A, 0x124D}, {0x1250, 0x1256}, {0x1258, 0x1258}, {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D},
  {0x1290, 0x12B0}, {0x12B2, 0x12B5}, {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6},
  {0x12D8, 0x1310}, {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
  {0x1401, 0x166C}, {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA}, {0x16F1, 0x16F8}, {0x1700, 0x1711},
  {0x171F, 0x1731}, {0x1740, 0x1751}, {0x1760, 0x176C}, {0x176E, 0x1770}, {0x1780, 0x17B3}, {0x17D7, 0x17D7},
  {0x17DC, 0x17DC}, {0x1820, 0x1878}, {0x1880, 0x1884}, {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5},
  {0x1900, 0x191E}, {0x1950, 0x196D}, {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16},
  {0x1A20, 0x1A54}, {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0}, {0x1BAE, 0x1BAF},
  {0x1BBA, 0x1BE5}, {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D}, {0x1C80, 0x1C88}, {0x1C90, 0x1CBA},
  {0x1CBD, 0x1CBF}, {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3}, {0x1CF5, 0x1CF6}, {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF},
  {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59},
  {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
  {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4},
  {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2102, 0x2102}, {0x2107, 0x2107},
  {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
  {0x212A, 0x212D}, {0x212F, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184},
  {0x2C00, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D},
  {0x2D30, 0x2D67}, {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE}, {0x2DB0, 0x2DB6},
  {0x2DB8, 0x2DBE}, {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6}, {0x2DD8, 0x2DDE}, {0x2E2F, 0x2E2F},
  {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C}, {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA},
  {0x30FC, 0x30FF}, {0x3105, 0x312F}, {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF},
  {0x4E00, 0xA48C}, {0xA4D0, 0xA4FD}, {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E},
  {0xA67F, 0xA69D}, {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1},
  {0xA7D3, 0xA7D3}, {0xA7D5, 0xA7D9}, {0xA7F2, 0xA801}, {0xA803, 0xA805}, {0xA807, 0xA80A}, {0xA80C, 0xA822},
  {0xA840, 0xA873}, {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB}, {0xA8FD, 0xA8FE}, {0xA90A, 0xA925},
  {0xA930, 0xA946}, {0xA960, 0xA97C}, {0xA984, 0xA9B2}, {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF},
  {0xA9FA, 0xA9FE}, {0xAA00, 0xAA28}, {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A},
  {0xAA7E, 0xAAAF}, {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2},
  {0xAADB, 0xAADD}, {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06}, {0xAB09, 0xAB0E}, {0xAB11, 0xAB16},
  {0xAB20, 0xAB26}, {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69}, {0xAB70, 0xABE2}, {0xAC00, 0xD7A3},
  {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17},
  {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28}, {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41},
  {0xFB43, 0xFB44}, {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB},
  {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE}, {0xFFC2, 0xFFC7},
  {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x10000, 0x1000B}, {0x1000D, 0x10026}, {0x10028, 0x1003A},
  {0x1003C, 0x1003D}, {0x1003F, 0x1004D}, {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C},
  {0x102A0, 0x102D0}, {0x10300, 0x1031F}, {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375},
  {0x10380, 0x1039D}, {0x103A0, 0x103C3}, {0x103C8, 0x103CF}, {0x10400, 0x1049D}, {0x104B0, 0x104D3},
  {0x104D8, 0x104FB}, {0x10500, 0x10527}, {0x10530, 0x10563}, {0x10570, 0x1057A}, {0x1057C, 0x1058A},
  {0x1058C, 0x10592}, {0x10594, 0x10595}, {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9},
  {0x105BB, 0x105BC}, {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785},
  {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808}, {0x1080A, 0x10835},
  {0x10837, 0x10838}, {0x1083C, 0x1083C}, {0x1083F, 0x10855}, {0x10860, 0x10876}, {0x10880, 0x1089E},
  {0x108E0, 0x108F2}, {0x108F4, 0x108F5}, {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10980, 0x109B7},
  {0x109BE, 0x109BF}, {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17}, {0x10A19, 0x10A35},
  {0x10A60, 0x10A7C}, {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4}, {0x10B00, 0x10B35},
  {0x10B40, 0x10B55}, {0x10B60, 0x10B72}, {0x10B80, 0x10B91}, {0x10C00, 0x10C48}, {0x10C80, 0x10CB2},
  {0x10CC0, 0x10CF2}, {0x10D00, 0x10D23}, {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10F00, 0x10F1C},
  {0x10F27, 0x10F27}, {0x10F30, 0x10F45}, {0x10F70, 0x10F81}, {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6},
  {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075}, {0x11083, 0x110AF}, {0x110D0, 0x110E8},
  {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147}, {0x11150, 0x11172}, {0x11176, 0x11176},
  {0x11183, 0x111B2}, {0x111C1, 0x111C4}, {0x111DA, 0x111DA}, {0x111DC, 0x111DC}, {0x11200, 0x11211},
  {0x11213, 0x1122B}, {0x11280, 0x11286}, {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D},
  {0x1129F, 0x112A8}, {0x112B0, 0x112DE}, {0x11305, 0x1130C}, {0x1130F, 0x11310}, {0x11313, 0x11328},
  {0x1132A, 0x11330}, {0x11332, 0x11333}, {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350},
  {0x1135D, 0x11361}, {0x11400, 0x11434}, {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF},
  {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB}, {0x11600, 0x1162F},
  {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8}, {0x11700, 0x1171A}, {0x11740, 0x11746},
  {0x11800, 0x1182B}, {0x118A0, 0x118DF}, {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913},
  {0x11915, 0x11916}, {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7},
  {0x119AA, 0x119D0}, {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00}, {0x11A0B, 0x11A32},
  {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89}, {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8},
  {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40}, {0x11C72, 0x11C8F}, {0x11D00, 0x11D06},
  {0x11D08, 0x11D09}, {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68},
  {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399},
  {0x12480, 0x12543}, {0x12F90, 0x12FF0}, {0x13000, 0x1342E}, {0x14400, 0x14646}, {0x16800, 0x16A38},
  {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE}, {0x16AD0, 0x16AED}, {0x16B00, 0x16B2F}, {0x16B40, 0x16B43},
  {0x16B63, 0x16B77}, {0x16B7D, 0x16B8F}, {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A}, {0x16F50, 0x16F50},
  {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1}, {0x16FE3, 0x16FE3}, {0x17000, 0x187F7}, {0x18800, 0x18CD5},
  {0x18D00, 0x18D08}, {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122},
  {0x1B150, 0x1B152}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A}, {0x1BC70, 0x1BC7C},
  {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454}, {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F},
  {0x1D4A2, 0x1D4A2}, {0x1D4A5, 0x1D4A6}, {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB},
  {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514}, {0x1D516, 0x1D51C},
  {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544}, {0x1D546, 0x1D546}, {0x1D54A, 0x1D550},
  {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714},
  {0x1D716, 0x1D734}, {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8},
  {0x1D7AA, 0x1D7C2}, {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D},
  {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD}, {0x1E2C0, 0x1E2EB}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB},
  {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B},
  {0x1EE00, 0x1EE03}, {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27},
  {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42},
  {0x1EE47, 0x1EE47}, {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52},
  {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D},
  {0x1EE5F, 0x1EE5F}, {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72},
  {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B},
  {0x1EEA1, 0x1EEA3}, {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B738},
  {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A},
};
static const uint32_t uni_number[][2] = {
  {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9}, {0x7C0, 0x7C9},
  {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F}, {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xB72, 0xB77},
  {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF}, {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF},
  {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33}, {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C},
  {0x16EE, 0x16F0}, {0x17E0, 0x17E9}, {0x17F0, 0x17F9}, {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA},
  {0x1A80, 0x1A89}, {0x1A90, 0x1A99}, {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59},
  {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249B},
  {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD}, {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A},
  {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF},
  {0xA620, 0xA629}, {0xA6E6, 0xA6EF}, {0xA830, 0xA835}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9},
  {0xA9F0, 0xA9F9}, {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178},
  {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10341, 0x10341}, {0x1034A, 0x1034A},
  {0x103D1, 0x103D5}, {0x104A0, 0x104A9}, {0x10858, 0x1085F}, {0x10879, 0x1087F}, {0x108A7, 0x108AF},
  {0x108FB, 0x108FF}, {0x10916, 0x1091B}, {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF},
  {0x10A40, 0x10A48}, {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F},
  {0x10B78, 0x10B7F}, {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39}, {0x10E60, 0x10E7E},
  {0x10F1D, 0x10F26}, {0x10F51, 0x10F54}, {0x10FC5, 0x10FCB}, {0x11052, 0x1106F}, {0x110F0, 0x110F9},
  {0x11136, 0x1113F}, {0x111D0, 0x111D9}, {0x111E1, 0x111F4}, {0x112F0, 0x112F9}, {0x11450, 0x11459},
  {0x114D0, 0x114D9}, {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x1173B}, {0x118E0, 0x118F2},
  {0x11950, 0x11959}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9}, {0x11FC0, 0x11FD4},
  {0x12400, 0x1246E}, {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x16B5B, 0x16B61},
  {0x16E80, 0x16E96}, {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378}, {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149},
  {0x1E2F0, 0x1E2F9}, {0x1E8C7, 0x1E8CF}, {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF},
  {0x1ECB1, 0x1ECB4}, {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};

enum { C_OTHER, C_SPACE, C_LETTER, C_NUMBER };

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid][0]) hi = mid;
    else if (cp > r[mid][1]) lo = mid + 1;
    else return 1;
  }
  return 0;
}

static int char_class(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return C_LETTER;
    if (cp >= '0' && cp <= '9') return C_NUMBER;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return C_SPACE;
    return C_OTHER;
  }
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
      cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return C_SPACE;
  if (in_ranges(uni_letter, sizeof uni_letter / sizeof uni_letter[0], cp)) return C_LETTER;
  if (in_ranges(uni_number, sizeof uni_number / sizeof uni_number[0], cp)) return C_NUMBER;
  return C_OTHER;
}

/* class and length of the character at pos (an invalid byte: other, 1) */
static int class_at(const unsigned char *s, size_t len, size_t pos, size_t *clen) {
  uint32_t cp;
  size_t l = utf8_decode(s + pos, len - pos, &cp);
  if (!l) return *clen = 1, C_OTHER;
  *clen = l;
  return char_class(cp);
}

size_t bpe_next_piece(const char *text, size_t len, size_t pos) {
  const unsigned char *s = (const unsigned char *)text;
  /* 's 't 're 've 'm 'll 'd */
  if (s[pos] == '\'' && pos + 1 < len) {
    unsigned char c = s[pos + 1];
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return pos + 2;
    if (pos + 2 < len && ((c == 'r' && s[pos + 2] == 'e') || (c == 'v' && s[pos + 2] == 'e') ||
                          (c == 'l' && s[pos + 2] == 'l')))
      return pos + 3;
  }
  size_t l;
  int k = class_at(s, len, pos, &l);
  size_t start = pos;
  if (s[pos] == ' ' && pos + 1 < len) { /* " ?" before a letter, number or other run */
    size_t l1;
    int k1 = class_at(s, len, pos + 1, &l1);
    if (k1 != C_SPACE) k = k1, start = pos + 1, l = l1;
  }
  if (k != C_SPACE) { /* ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ */
    size_t end = start + l;
    while (end < len && class_at(s, len, end, &l) == k) end += l;
    return end;
  }
  /* \s+(?!\S) | \s+ : a run of spaces, less its last one when more follows */
  size_t end = pos, last = pos;
  while (end < len && class_at(s, len, end, &l) == C_SPACE) last = end, end += l;
  if (end < len && last > pos) return last;
  return end;
}
