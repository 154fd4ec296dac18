/* test_tokfile.c — lib/tokfile: llm.c and headerless files, every refusal
 * with its exact message, sharded globs in sorted order, the loader's
 * batch order (data-parallel split disjoint and covering, epochs) and
 * bitwise resume from a saved position, atomic writes.
 *
 * usage: test_tokfile SCRATCH   (a fresh SCRATCH/tok-XXXXXX is used) */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/tokfile.h"
#include "tests/check.h"

static char scratch[4096];

static const char *in_scratch(const char *name) {
  static char buf[4][8192];
  static int k;
  char *p = buf[k++ & 3];
  snprintf(p, sizeof buf[0], "%s/%s", scratch, name);
  return p;
}

static void write_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (len) fwrite(data, 1, len, f);
  fclose(f);
}

/* an llm.c header with the given fields, then ntok tokens 0, 1, 2, ... */
static void write_llmc(const char *path, int32_t magic, int32_t version, int32_t count, size_t ntok) {
  size_t len = TOK_HEADER_BYTES + 2 * ntok;
  unsigned char *b = calloc(1, len);
  int32_t h[3] = {magic, version, count};
  memcpy(b, h, sizeof h);
  for (size_t i = 0; i < ntok; i++) {
    uint16_t t = (uint16_t)i;
    memcpy(b + TOK_HEADER_BYTES + 2 * i, &t, 2);
  }
  write_bytes(path, b, len);
  free(b);
}

static void expect_open_error(int line, const char *path, TokFormat fmt, const char *want_after_path) {
  TokFile f;
  char err[512] = "", want[8400];
  snprintf(want, sizeof want, "%s%s", path, want_after_path);
  int rc = tok_open(&f, path, fmt, err, sizeof err);
  if (!rc || strcmp(err, want)) {
    check_failed++;
    printf("FAIL line %d:\n  want: %s\n  got:  %s\n", line, want, rc ? err : "(opened)");
  } else
    check_passed++;
  if (!rc) tok_close(&f);
}
#define OPEN_ERROR(path, fmt, want) expect_open_error(__LINE__, path, fmt, want)

static void test_files(void) {
  char err[512];
  uint16_t tok[1000];
  for (int i = 0; i < 1000; i++) tok[i] = (uint16_t)(i * 37 % 50257);
  const char *hp = in_scratch("with_header.bin"), *rp = in_scratch("headerless.bin");
  CHECK(!tok_write(hp, tok, 1000, 1, err, sizeof err), "write: %s", err);
  CHECK(!tok_write(rp, tok, 1000, 0, err, sizeof err), "write: %s", err);
  /* the bytes: llm.c's header exactly */
  struct stat sb;
  CHECK(!stat(hp, &sb) && sb.st_size == 1024 + 2000, "header file size");
  CHECK(!stat(rp, &sb) && sb.st_size == 2000, "headerless file size");
  FILE *fp = fopen(hp, "rb");
  int32_t h[256];
  CHECK(fread(h, 4, 256, fp) == 256, "read header");
  fclose(fp);
  int zero = 1;
  for (int i = 3; i < 256; i++) zero &= h[i] == 0;
  CHECK(h[0] == 20240520 && h[1] == 1 && h[2] == 1000 && zero, "header fields");

  TokFile f;
  TokFormat fmts[] = {TOK_AUTO, TOK_LLMC};
  for (int k = 0; k < 2; k++) {
    CHECK(!tok_open(&f, hp, fmts[k], err, sizeof err), "open: %s", err);
    CHECK(f.has_header && f.ntok == 1000 && !memcmp(f.tokens, tok, sizeof tok), "header file content");
    CHECK(!tok_check_vocab(&f, 50257, err, sizeof err), "vocab: %s", err);
    tok_close(&f);
  }
  TokFormat raw[] = {TOK_AUTO, TOK_RAW};
  for (int k = 0; k < 2; k++) {
    CHECK(!tok_open(&f, rp, raw[k], err, sizeof err), "open: %s", err);
    CHECK(!f.has_header && f.ntok == 1000 && !memcmp(f.tokens, tok, sizeof tok), "headerless content");
    tok_close(&f);
  }
  /* told it is headerless, an llm.c file is taken at its word */
  CHECK(!tok_open(&f, hp, TOK_RAW, err, sizeof err) && f.ntok == 512 + 1000 && f.tokens[0] == (20240520 & 0xFFFF),
        "llm.c file read as headerless");
  tok_close(&f);

  /* refusals */
  const char *p = in_scratch("bad.bin");
  write_llmc(p, TOK_MAGIC, 1, 10, 0);
  CHECK(!truncate(p, 100), "truncate");
  OPEN_ERROR(p, TOK_AUTO, ": file is 100 bytes, shorter than the 1024-byte llm.c header");
  write_bytes(p, "", 0);
  OPEN_ERROR(p, TOK_LLMC, ": file is 0 bytes, shorter than the 1024-byte llm.c header");
  OPEN_ERROR(p, TOK_AUTO, ": no tokens");
  write_llmc(p, 12345, 1, 1, 1);
  OPEN_ERROR(p, TOK_LLMC, ": magic number 12345 is not 20240520 (llm.c token file)");
  write_llmc(p, TOK_MAGIC, 3, 1, 1);
  OPEN_ERROR(p, TOK_AUTO, ": version 3 is not 1");
  write_llmc(p, TOK_MAGIC, 2, 1, 2);
  OPEN_ERROR(p, TOK_AUTO, ": version 2 (uint32 tokens, llm.c's Llama 3 files) is not supported, only version 1 (uint16)");
  write_llmc(p, TOK_MAGIC, 1, 1000, 999);
  OPEN_ERROR(p, TOK_AUTO, ": header says 1000 tokens (3024 bytes) but the file is 3022 bytes");
  write_llmc(p, TOK_MAGIC, 1, 10, 11);
  OPEN_ERROR(p, TOK_LLMC, ": header says 10 tokens (1044 bytes) but the file is 1046 bytes");
  write_llmc(p, TOK_MAGIC, 1, -5, 0);
  OPEN_ERROR(p, TOK_LLMC, ": header says -5 tokens (0 bytes) but the file is 1024 bytes");
  write_llmc(p, TOK_MAGIC, 1, 0, 0);
  OPEN_ERROR(p, TOK_LLMC, ": no tokens");
  write_bytes(p, "\1\0\2\0\3", 5);
  OPEN_ERROR(p, TOK_AUTO, ": headerless token file has an odd size (5 bytes)");
  OPEN_ERROR(in_scratch("missing.bin"), TOK_AUTO, ": cannot open: No such file or directory");
  OPEN_ERROR(scratch, TOK_AUTO, ": not a regular file");

  /* tokens out of the vocabulary, named by position and byte offset */
  tok[17] = 60000;
  CHECK(!tok_write(hp, tok, 1000, 1, err, sizeof err) && !tok_write(rp, tok, 1000, 0, err, sizeof err), "write");
  char want[8400];
  CHECK(!tok_open(&f, hp, TOK_AUTO, err, sizeof err), "open");
  snprintf(want, sizeof want, "%s: token 60000 at position 17 (byte 1058) is not below the vocabulary size 50257", hp);
  CHECK(tok_check_vocab(&f, 50257, err, sizeof err) && !strcmp(err, want), "vocab: %s", err);
  CHECK(!tok_check_vocab(&f, 65536, err, sizeof err), "vocab 65536");
  tok_close(&f);
  CHECK(!tok_open(&f, rp, TOK_AUTO, err, sizeof err), "open");
  snprintf(want, sizeof want, "%s: token 60000 at position 17 (byte 34) is not below the vocabulary size 50257", rp);
  CHECK(tok_check_vocab(&f, 50257, err, sizeof err) && !strcmp(err, want), "vocab: %s", err);
  tok_close(&f);
  unlink(hp), unlink(rp), unlink(p);
}

static int count_tmp_files(void) {
  DIR *d = opendir(scratch);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strstr(e->d_name, ".tmp.")) n++;
  closedir(d);
  return n;
}

static void test_atomic(void) {
  char err[512];
  uint16_t tok[4] = {1, 2, 3, 4};
  const char *dir = in_scratch("a-directory");
  mkdir(dir, 0755);
  CHECK(tok_write(dir, tok, 4, 1, err, sizeof err) && strstr(err, ": rename of ") && strstr(err, "Is a directory"),
        "rename onto a directory: %s", err);
  CHECK(count_tmp_files() == 0, "temporary file left behind");
  rmdir(dir);
  CHECK(tok_write(in_scratch("nodir/x.bin"), tok, 4, 1, err, sizeof err) && strstr(err, "nodir/x.bin: cannot create ") &&
            strstr(err, "No such file or directory"),
        "missing directory: %s", err);
  /* replacing an existing file */
  const char *p = in_scratch("replace.bin");
  write_bytes(p, "old", 3);
  CHECK(!tok_write(p, tok, 4, 0, err, sizeof err), "replace: %s", err);
  TokFile f;
  CHECK(!tok_open(&f, p, TOK_AUTO, err, sizeof err) && f.ntok == 4 && f.tokens[3] == 4, "replaced");
  tok_close(&f);
  unlink(p);
}

/* ------------------------------------------------------------- the loader */

/* shards whose tokens are their global index (unique below 65536) */
static const struct {
  const char *name;
  size_t ntok;
  int header;
} shards[] = {
  /* sorted: 000 (100 tokens: 6 batches of 16+1), 001 (17: 1), 002 (16: 0), 010 (50: 3); G = 10 */
  {"shard_002.bin", 16, 0}, {"shard_010.bin", 50, 1}, {"shard_000.bin", 100, 1}, {"shard_001.bin", 17, 0},
};
static const char *sorted_names[] = {"shard_000.bin", "shard_001.bin", "shard_002.bin", "shard_010.bin"};
static const size_t sorted_ntok[] = {100, 17, 16, 50};
enum { B = 2, T = 8, BT = B * T, G = 10 };

static uint16_t token_base(const char *name) { /* global index of a shard's first token */
  size_t base = 0;
  for (int i = 0; i < 4; i++) {
    if (!strcmp(sorted_names[i], name)) break;
    base += sorted_ntok[i];
  }
  return (uint16_t)base;
}

static void make_shards(void) {
  char err[512];
  for (int i = 0; i < 4; i++) {
    uint16_t t[100];
    uint16_t base = token_base(shards[i].name);
    for (size_t k = 0; k < shards[i].ntok; k++) t[k] = (uint16_t)(base + k);
    CHECK(!tok_write(in_scratch(shards[i].name), t, shards[i].ntok, shards[i].header, err, sizeof err), "%s", err);
  }
  write_bytes(in_scratch("other.bin"), "\0\0", 2); /* not matched by the pattern */
}

static void test_glob(void) {
  char err[512], **paths;
  size_t n;
  CHECK(!tok_glob(in_scratch("shard_*.bin"), &paths, &n, err, sizeof err), "glob: %s", err);
  CHECK(n == 4, "glob found %zu", n);
  for (size_t i = 0; i < n && i < 4; i++) CHECK(!strcmp(paths[i], in_scratch(sorted_names[i])), "glob order %zu: %s", i, paths[i]);
  tok_glob_free(paths, n);
  const char *pat = in_scratch("nothing_*.bin");
  char want[8400];
  snprintf(want, sizeof want, "%s: no file matches", pat);
  CHECK(tok_glob(pat, &paths, &n, err, sizeof err) && !strcmp(err, want), "no match: %s", err);
  /* a literal path is a pattern matching itself */
  CHECK(!tok_glob(in_scratch("shard_001.bin"), &paths, &n, err, sizeof err) && n == 1, "literal path");
  tok_glob_free(paths, n);
}

/* The batch that global index g must be: shard and offset by hand. */
static void expected_batch(uint64_t g, int32_t *in, int32_t *tg) {
  static const uint64_t first[] = {0, 6, 7, 7, 10};
  int s = 0;
  while (!(first[s] <= g && g < first[s + 1])) s++;
  uint16_t base = token_base(sorted_names[s]);
  uint64_t off = (g - first[s]) * BT;
  for (int i = 0; i < BT; i++) in[i] = (int32_t)(base + off + (uint64_t)i), tg[i] = in[i] + 1;
}

static void test_loader(void) {
  char err[512];
  char pat[8192];
  snprintf(pat, sizeof pat, "%s", in_scratch("shard_*.bin"));
  int32_t in[BT], tg[BT], want_in[BT], want_tg[BT];
  for (int D = 1; D <= 10; D++) {
    int seen[G] = {0};
    uint64_t S = G / D;
    for (int d = 0; d < D; d++) {
      TokLoader *L = tok_loader_open(pat, TOK_AUTO, B, T, d, D, 50257, err, sizeof err);
      CHECK(L != NULL, "open D=%d: %s", D, err);
      if (!L) return;
      CHECK(tok_loader_batches(L) == G && tok_loader_steps_per_epoch(L) == S && tok_loader_shard_count(L) == 4,
            "D=%d: %llu batches, %llu steps", D, (unsigned long long)tok_loader_batches(L),
            (unsigned long long)tok_loader_steps_per_epoch(L));
      for (uint64_t k = 0; k < 2 * S + 1; k++) { /* two epochs and a step */
        TokPos pos = tok_loader_tell(L);
        CHECK(pos.epoch == k / S && pos.step == k % S, "D=%d d=%d position at %llu", D, d, (unsigned long long)k);
        CHECK(!tok_loader_next(L, in, tg, err, sizeof err), "next: %s", err);
        uint64_t g = (k % S) * (uint64_t)D + (uint64_t)d;
        expected_batch(g, want_in, want_tg);
        CHECK(!memcmp(in, want_in, sizeof in) && !memcmp(tg, want_tg, sizeof tg), "D=%d d=%d step %llu is not batch %llu",
              D, d, (unsigned long long)k, (unsigned long long)g);
        if (k < S) seen[g]++;
      }
      tok_loader_close(L);
    }
    /* disjoint and covering batches 0 .. S*D-1; the rest skipped */
    int ok = 1;
    for (int g = 0; g < G; g++) ok &= seen[g] == ((uint64_t)g < S * (uint64_t)D ? 1 : 0);
    CHECK(ok, "D=%d: replicas' batches not disjoint and covering", D);
  }

  /* save and restore: the same batches, bitwise, across an epoch boundary */
  TokLoader *L = tok_loader_open(pat, TOK_AUTO, B, T, 1, 3, 0, err, sizeof err);
  CHECK(L != NULL, "open: %s", err);
  if (!L) return;
  for (int k = 0; k < 2; k++) tok_loader_next(L, in, tg, err, sizeof err);
  TokPos saved = tok_loader_tell(L);
  int32_t a_in[7][BT], a_tg[7][BT], b_in[7][BT], b_tg[7][BT];
  for (int k = 0; k < 7; k++) tok_loader_next(L, a_in[k], a_tg[k], err, sizeof err);
  TokLoader *L2 = tok_loader_open(pat, TOK_AUTO, B, T, 1, 3, 0, err, sizeof err);
  CHECK(!tok_loader_seek(L2, saved, err, sizeof err), "seek: %s", err);
  for (int k = 0; k < 7; k++) tok_loader_next(L2, b_in[k], b_tg[k], err, sizeof err);
  CHECK(!memcmp(a_in, b_in, sizeof a_in) && !memcmp(a_tg, b_tg, sizeof a_tg), "resume differs");
  CHECK(tok_loader_tell(L).epoch == tok_loader_tell(L2).epoch && tok_loader_tell(L).step == tok_loader_tell(L2).step,
        "positions differ after resume");
  CHECK(!tok_loader_seek(L, saved, err, sizeof err), "seek back: %s", err);
  tok_loader_next(L, in, tg, err, sizeof err);
  CHECK(!memcmp(in, a_in[0], sizeof in), "seek back on the same loader");
  TokPos beyond = saved;
  beyond.step = 3;
  CHECK(tok_loader_seek(L, beyond, err, sizeof err) &&
            !strcmp(err, "data position step 3 is beyond the 3 steps of an epoch"),
        "beyond: %s", err);
  tok_loader_close(L2);
  /* a position from another batch shape or other data is refused */
  L2 = tok_loader_open(pat, TOK_AUTO, B, T / 2, 1, 3, 0, err, sizeof err);
  CHECK(L2 && tok_loader_seek(L2, saved, err, sizeof err) &&
            !strcmp(err, "data position was saved for other shards or another batch shape (B=2, T=4, 3 replicas)"),
        "other shape: %s", err);
  tok_loader_close(L2);
  L2 = tok_loader_open(in_scratch("shard_00*.bin"), TOK_AUTO, B, T, 1, 3, 0, err, sizeof err);
  CHECK(L2 && tok_loader_seek(L2, saved, err, sizeof err), "other shards accepted");
  tok_loader_close(L2);
  tok_loader_close(L);

  /* refusals */
  char want[8400];
  L = tok_loader_open(pat, TOK_AUTO, B, T, 0, 11, 0, err, sizeof err);
  snprintf(want, sizeof want, "%s: 4 shards hold 10 batches of 2 x 8+1 tokens, fewer than the 11 data-parallel replicas",
           pat);
  CHECK(!L && !strcmp(err, want), "too many replicas: %s", err);
  L = tok_loader_open(in_scratch("shard_002.bin"), TOK_AUTO, B, T, 0, 1, 0, err, sizeof err);
  snprintf(want, sizeof want, "%s: 1 shard holds 0 batches of 2 x 8+1 tokens, fewer than the 1 data-parallel replicas",
           in_scratch("shard_002.bin"));
  CHECK(!L && !strcmp(err, want), "too small: %s", err);
  L = tok_loader_open(pat, TOK_AUTO, B, T, 3, 3, 0, err, sizeof err);
  snprintf(want, sizeof want, "%s: bad loader arguments B=2 T=8 rank=3 of 3 vocab=0", pat);
  CHECK(!L && !strcmp(err, want), "bad rank: %s", err);
  L = tok_loader_open(in_scratch("none_*.bin"), TOK_AUTO, B, T, 0, 1, 0, err, sizeof err);
  CHECK(!L && strstr(err, "none_*.bin: no file matches"), "no shards: %s", err);
  /* a bad shard among good ones */
  write_llmc(in_scratch("shard_005.bin"), TOK_MAGIC, 1, 99, 3);
  L = tok_loader_open(pat, TOK_AUTO, B, T, 0, 1, 0, err, sizeof err);
  snprintf(want, sizeof want, "%s: header says 99 tokens (1222 bytes) but the file is 1030 bytes", in_scratch("shard_005.bin"));
  CHECK(!L && !strcmp(err, want), "bad shard: %s", err);
  unlink(in_scratch("shard_005.bin"));
  /* the vocabulary is checked batch by batch; the position stays */
  L = tok_loader_open(pat, TOK_AUTO, B, T, 0, 1, 110, err, sizeof err);
  CHECK(L != NULL, "open: %s", err);
  if (L) {
    for (int k = 0; k < 6; k++) CHECK(!tok_loader_next(L, in, tg, err, sizeof err), "next %d: %s", k, err);
    /* batch 6 is shard_001's tokens 100..116: 110 is out */
    snprintf(want, sizeof want, "%s: token 110 at position 10 (byte 20) is not below the vocabulary size 110",
             in_scratch("shard_001.bin"));
    CHECK(tok_loader_next(L, in, tg, err, sizeof err) && !strcmp(err, want), "vocab in loader: %s", err);
    CHECK(tok_loader_tell(L).step == 6, "position moved on error");
    tok_loader_close(L);
  }
}

static void rm_scratch(void) {
  DIR *d = opendir(scratch);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(in_scratch(e->d_name));
  closedir(d);
  rmdir(scratch);
}

int main(int argc, char **argv) {
  snprintf(scratch, sizeof scratch, "%s/tok-XXXXXX", argc > 1 ? argv[1] : ".");
  if (!mkdtemp(scratch)) {
    printf("FAIL: cannot create a scratch directory: %s\n", strerror(errno));
    return 1;
  }
  test_files();
  test_atomic();
  make_shards();
  test_glob();
  test_loader();
  rm_scratch();
  return check_summary();
}
