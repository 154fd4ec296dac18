/* test_safetensors.c — lib/safetensors: round trip, the Rust crate's own
 * byte vectors, a file written by Python (make_safetensors.py), every
 * refusal with its exact message, atomic writes, bf16/f16 conversions.
 *
 * usage: test_safetensors DIR   (DIR holds make_safetensors.py's output;
 * scratch files go to a fresh DIR/st-XXXXXX, removed at the end) */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/safetensors.h"
#include "tests/check.h"

static char scratch[4096];

static char *path_in(const char *dir, const char *name) {
  static char buf[4][8192];
  static int k;
  char *p = buf[k++ & 3];
  snprintf(p, sizeof buf[0], "%s/%s", dir, name);
  return p;
}

static unsigned char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)n + 1);
  *len = fread(b, 1, (size_t)n, f);
  fclose(f);
  return b;
}

static void write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  fwrite(data, 1, len, f);
  fclose(f);
}

/* ------------------------------------------------------------ round trip */

static void test_round_trip(void) {
  char err[512];
  float a[6] = {1, -2, 3.5f, 0, 1e-20f, -7};
  uint16_t bf[3] = {st_f32_to_bf16(1.0f), st_f32_to_bf16(-3.0f), st_f32_to_bf16(0.1f)};
  int64_t i64[2] = {-5, INT64_MAX};
  uint8_t u8[3] = {1, 2, 3};
  uint8_t bools[2] = {1, 0};
  double f64[1] = {3.141592653589793};
  float scalar = 42;
  int64_t sh_a[2] = {2, 3}, sh_bf[1] = {3}, sh_i64[1] = {2}, sh_u8[3] = {1, 3, 1}, sh_b[1] = {2}, sh_f64[1] = {1},
          sh_empty[2] = {4, 0};
  StWriter *w = st_writer_new();
  CHECK(!st_writer_add(w, "wte.weight", ST_F32, 2, sh_a, a, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "h.0.ln_1.weight", ST_BF16, 1, sh_bf, bf, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "step", ST_I64, 1, sh_i64, i64, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "bytes", ST_U8, 3, sh_u8, u8, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "mask", ST_BOOL, 1, sh_b, bools, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "pi", ST_F64, 1, sh_f64, f64, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "scalar", ST_F32, 0, NULL, &scalar, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "empty", ST_F32, 2, sh_empty, NULL, err, sizeof err), "add: %s", err);
  CHECK(!st_writer_add(w, "a \"quoted\"\n\x01 name \xc3\xa9", ST_U8, 1, sh_u8, u8, err, sizeof err), "add: %s", err);
  /* refusals */
  CHECK(st_writer_add(w, "step", ST_I64, 1, sh_i64, i64, err, sizeof err) && !strcmp(err, "tensor 'step' added twice"),
        "dup: %s", err);
  CHECK(st_writer_add(w, "__metadata__", ST_U8, 1, sh_u8, u8, err, sizeof err), "reserved name accepted");
  CHECK(st_writer_add(w, "bad\xff", ST_U8, 1, sh_u8, u8, err, sizeof err), "non-UTF-8 name accepted");
  int64_t neg[1] = {-1};
  CHECK(st_writer_add(w, "neg", ST_U8, 1, neg, u8, err, sizeof err) && !strcmp(err, "tensor 'neg': negative dimension -1"),
        "neg: %s", err);
  CHECK(st_writer_add(w, "nodata", ST_U8, 1, sh_u8, NULL, err, sizeof err), "NULL data accepted");
  CHECK(!st_writer_set_meta(w, "format", "pt", err, sizeof err), "meta");
  CHECK(!st_writer_set_meta(w, "a_key", "v\"\\\n", err, sizeof err), "meta");
  CHECK(!st_writer_set_meta(w, "format", "pipec", err, sizeof err), "meta replace");
  const char *path = path_in(scratch, "rt.safetensors");
  CHECK(!st_writer_write(w, path, err, sizeof err), "write: %s", err);
  st_writer_free(w);

  StFile *f = st_open(path, err, sizeof err);
  CHECK(f != NULL, "open: %s", err);
  if (!f) return;
  CHECK(st_count(f) == 9, "count %zu", st_count(f));
  /* data order: descending dtype (I64 F64 F32 BF16 U8 BOOL), then name */
  const char *order[] = {"step", "pi", "empty", "scalar", "wte.weight", "h.0.ln_1.weight",
                         "a \"quoted\"\n\x01 name \xc3\xa9", "bytes", "mask"};
  for (size_t i = 0; i < 9; i++) {
    const StTensor *t = st_tensor_at(f, i);
    CHECK(t && !strcmp(t->name, order[i]), "order %zu: %s", i, t ? t->name : "?");
    if (t) CHECK((uintptr_t)t->data % st_dtype_size(t->dtype) == 0, "%s unaligned", t->name);
  }
  const StTensor *t = st_find(f, "wte.weight");
  CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nbytes == 24 &&
            !memcmp(t->data, a, 24),
        "wte.weight");
  t = st_find(f, "h.0.ln_1.weight");
  CHECK(t && t->dtype == ST_BF16 && !memcmp(t->data, bf, 6), "bf16");
  float conv[6];
  CHECK(t && !st_tensor_to_f32(f, t, conv, err, sizeof err) && conv[0] == 1.0f && conv[1] == -3.0f &&
            fabsf(conv[2] - 0.1f) < 1e-3f,
        "bf16 to f32");
  t = st_find(f, "step");
  CHECK(t && t->dtype == ST_I64 && !memcmp(t->data, i64, 16), "i64");
  CHECK(t && st_tensor_to_f32(f, t, conv, err, sizeof err) &&
            !strcmp(err + strlen(err) - strlen("tensor 'step': dtype I64 is not a floating-point type (F32, F16, BF16, F64)"),
                    "tensor 'step': dtype I64 is not a floating-point type (F32, F16, BF16, F64)"),
        "i64 to f32: %s", err);
  t = st_find(f, "bytes");
  CHECK(t && t->ndim == 3 && st_numel(t) == 3 && !memcmp(t->data, u8, 3), "u8");
  t = st_find(f, "mask");
  CHECK(t && t->dtype == ST_BOOL && !memcmp(t->data, bools, 2), "bool");
  t = st_find(f, "pi");
  CHECK(t && !st_tensor_to_f32(f, t, conv, err, sizeof err) && conv[0] == 3.14159265f, "f64");
  t = st_find(f, "scalar");
  CHECK(t && t->ndim == 0 && st_numel(t) == 1 && !memcmp(t->data, &scalar, 4), "scalar");
  t = st_find(f, "empty");
  CHECK(t && t->nbytes == 0 && st_numel(t) == 0, "empty");
  CHECK(st_find(f, "a \"quoted\"\n\x01 name \xc3\xa9") != NULL, "escaped name");
  CHECK(st_find(f, "nope") == NULL, "absent");
  CHECK(st_meta_count(f) == 2 && !strcmp(st_meta_key(f, 0), "a_key") && !strcmp(st_meta_value(f, 0), "v\"\\\n"),
        "meta 0");
  CHECK(st_meta_get(f, "format") && !strcmp(st_meta_get(f, "format"), "pipec"), "meta replaced");
  st_close(f);

  /* writing the same again gives the same bytes */
  size_t n1, n2;
  unsigned char *b1 = read_all(path, &n1);
  w = st_writer_new();
  CHECK(!st_writer_add(w, "mask", ST_BOOL, 1, sh_b, bools, err, sizeof err), "add");
  CHECK(!st_writer_add(w, "wte.weight", ST_F32, 2, sh_a, a, err, sizeof err), "add");
  CHECK(!st_writer_write(w, path, err, sizeof err), "rewrite: %s", err);
  st_writer_free(w);
  w = st_writer_new();
  CHECK(!st_writer_add(w, "wte.weight", ST_F32, 2, sh_a, a, err, sizeof err), "add");
  CHECK(!st_writer_add(w, "mask", ST_BOOL, 1, sh_b, bools, err, sizeof err), "add");
  const char *path2 = path_in(scratch, "rt2.safetensors");
  CHECK(!st_writer_write(w, path2, err, sizeof err), "write: %s", err);
  st_writer_free(w);
  unsigned char *c1 = read_all(path, &n1), *c2 = read_all(path2, &n2);
  CHECK(c1 && c2 && n1 == n2 && !memcmp(c1, c2, n1), "insertion order changes the bytes");
  free(b1), free(c1), free(c2);
}

/* The Rust crate's unit tests (safetensors/src/tensor.rs: test_serialization,
 * test_empty, test_serialization_forced_alignement): byte-for-byte. */
static void test_crate_vectors(void) {
  static const unsigned char ser[] = {
    64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
    116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
    58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
    101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
    0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
  static const unsigned char aligned[] = {
    72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116,
    121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
    91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
    115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32,
    32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
    160, 64};
  static const unsigned char empty[] = {8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32};
  static const unsigned char empty_meta[] = {
    40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
    95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
    116, 34, 125, 125, 32, 32, 32, 32, 32};
  float data[6] = {0, 1, 2, 3, 4, 5};
  int64_t s3[3] = {1, 2, 3}, s4[4] = {1, 1, 2, 3};
  char err[512];
  struct {
    const char *name;
    int ndim;
    const int64_t *shape;
    const char *meta;
    const unsigned char *want;
    size_t len;
  } cases[] = {
    {"attn.0", 3, s3, NULL, ser, sizeof ser},
    {"attn0", 4, s4, NULL, aligned, sizeof aligned},
    {NULL, 0, NULL, NULL, empty, sizeof empty},
    {NULL, 0, NULL, "pt", empty_meta, sizeof empty_meta},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    StWriter *w = st_writer_new();
    if (cases[i].name) st_writer_add(w, cases[i].name, ST_F32, cases[i].ndim, cases[i].shape, data, err, sizeof err);
    if (cases[i].meta) st_writer_set_meta(w, "framework", cases[i].meta, err, sizeof err);
    const char *path = path_in(scratch, "crate.safetensors");
    CHECK(!st_writer_write(w, path, err, sizeof err), "write: %s", err);
    st_writer_free(w);
    size_t n;
    unsigned char *got = read_all(path, &n);
    CHECK(got && n == cases[i].len && !memcmp(got, cases[i].want, n), "crate vector %zu differs", i);
    free(got);
    StFile *f = st_open_mem(cases[i].want, cases[i].len, "crate", err, sizeof err);
    CHECK(f != NULL, "crate vector %zu: %s", i, err);
    st_close(f);
  }
}

/* ----------------------------------------------------- the Python file */

static void check_python_file(const char *path) {
  char err[512];
  StFile *f = st_open(path, err, sizeof err);
  CHECK(f != NULL, "%s", err);
  if (!f) return;
  CHECK(st_count(f) == 10, "count %zu", st_count(f));
  /* data-offset order is the order Python wrote the data in */
  const StTensor *t0 = st_tensor_at(f, 0), *t1 = st_tensor_at(f, 1);
  CHECK(!strcmp(t0->name, "e.u8") && !strcmp(t1->name, "a.f32"), "offset order %s %s", t0->name, t1->name);
  float v[12];
  const StTensor *t = st_find(f, "a.f32");
  CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "a.f32 shape");
  if (t && !st_tensor_to_f32(f, t, v, err, sizeof err))
    for (int i = 0; i < 6; i++) CHECK(v[i] == i * 0.5f - 1.0f, "a.f32[%d] = %g", i, v[i]);
  t = st_find(f, "b.bf16");
  float bf_want[5] = {1.0f, -2.5f, 0.15625f, 65536.0f, -0.0f};
  CHECK(t && t->dtype == ST_BF16 && t->ndim == 1 && t->shape[0] == 5, "b.bf16 shape");
  if (t && !st_tensor_to_f32(f, t, v, err, sizeof err))
    for (int i = 0; i < 5; i++)
      CHECK(v[i] == bf_want[i] && signbit(v[i]) == signbit(bf_want[i]), "b.bf16[%d] = %g", i, v[i]);
  t = st_find(f, "c.i64");
  int64_t i64[3];
  CHECK(t && t->dtype == ST_I64 && t->nbytes == 24, "c.i64");
  if (t) {
    memcpy(i64, t->data, 24);
    CHECK(i64[0] == -1 && i64[1] == (int64_t)1 << 40 && i64[2] == 7, "c.i64 values");
  }
  t = st_find(f, "d.f16");
  float f16_want[4] = {0.5f, -1.25f, 65504.0f, 5.9604644775390625e-08f};
  if (t && !st_tensor_to_f32(f, t, v, err, sizeof err))
    for (int i = 0; i < 4; i++) CHECK(v[i] == f16_want[i], "d.f16[%d] = %g", i, v[i]);
  t = st_find(f, "e.u8");
  CHECK(t && t->nbytes == 5 && !memcmp(t->data, "\x00\x01\x7f\x80\xff", 5), "e.u8");
  t = st_find(f, "scalar");
  CHECK(t && t->ndim == 0 && !st_tensor_to_f32(f, t, v, err, sizeof err) && v[0] == 3.25f, "scalar");
  t = st_find(f, "empty");
  CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 3 && t->nbytes == 0, "empty");
  t = st_find(f, "h.0.attn.c_attn.weight");
  if (t && !st_tensor_to_f32(f, t, v, err, sizeof err))
    for (int i = 0; i < 12; i++) CHECK(v[i] == (float)i, "weight[%d]", i);
  t = st_find(f, "\xc3\xbcn\xc3\xaf/c\xc3\xb4" "d\xc3\xa9 \"q\"\\");
  CHECK(t && t->nbytes == 1 && ((const unsigned char *)t->data)[0] == 9, "unicode name (\\u escapes)");
  t = st_find(f, "emoji\xf0\x9f\x98\x80");
  CHECK(t && ((const unsigned char *)t->data)[0] == 8, "emoji name (surrogate pair)");
  CHECK(st_meta_count(f) == 2, "meta count");
  const char *note = st_meta_get(f, "note");
  CHECK(note && !strcmp(note, "line1\nline2 \"q\" \xc3\xa9\t\xe2\x82\xac"), "meta note '%s'", note ? note : "");
  CHECK(st_meta_get(f, "format") && !strcmp(st_meta_get(f, "format"), "pt"), "meta format");
  st_close(f);
}

/* ------------------------------------------------------------- refusals */

/* a file image: u64 length + header + data bytes */
static unsigned char *image(const char *header, size_t data_len, size_t *len) {
  size_t h = strlen(header);
  *len = 8 + h + data_len;
  unsigned char *b = calloc(1, *len);
  uint64_t n = h;
  memcpy(b, &n, 8);
  memcpy(b + 8, header, h);
  return b;
}

static void refuse(int line, const char *header, size_t data_len, const char *want) {
  char err[512] = "";
  size_t len;
  unsigned char *b = image(header, data_len, &len);
  StFile *f = st_open_mem(b, len, "model.safetensors", err, sizeof err);
  if (f || strcmp(err, want)) {
    check_failed++;
    printf("FAIL line %d: header %s\n  want: %s\n  got:  %s\n", line, header, want, f ? "(accepted)" : err);
  } else
    check_passed++;
  st_close(f);
  free(b);
}
#define REFUSE(h, n, want) refuse(__LINE__, h, n, want)

static void test_refusals(void) {
  char err[512];
  /* the file itself */
  StFile *f = st_open_mem("\x05\0\0\0\0", 5, "model.safetensors", err, sizeof err);
  CHECK(!f && !strcmp(err, "model.safetensors: file is 5 bytes, too short for the 8-byte header length"), "%s", err);
  unsigned char big[100] = {0xE8, 0x03};
  f = st_open_mem(big, sizeof big, "model.safetensors", err, sizeof err);
  CHECK(!f && !strcmp(err, "model.safetensors: header length 1000 exceeds the file size (100 bytes)"), "%s", err);
  unsigned char huge[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  f = st_open_mem(huge, sizeof huge, "model.safetensors", err, sizeof err);
  CHECK(!f && !strcmp(err, "model.safetensors: header length 18446744073709551615 exceeds the file size (16 bytes)"),
        "%s", err);
  f = st_open(path_in(scratch, "does-not-exist.safetensors"), err, sizeof err);
  CHECK(!f && strstr(err, "does-not-exist.safetensors: cannot open: No such file or directory"), "%s", err);
  f = st_open(scratch, err, sizeof err);
  CHECK(!f && strstr(err, ": not a regular file"), "%s", err);

  /* a truncated file on disk: the last tensor runs past the end */
  {
    float x[6] = {0};
    int64_t sh[1] = {6};
    StWriter *w = st_writer_new();
    st_writer_add(w, "h.0.attn.c_attn.weight", ST_F32, 1, sh, x, err, sizeof err);
    const char *path = path_in(scratch, "trunc.safetensors");
    CHECK(!st_writer_write(w, path, err, sizeof err), "write: %s", err);
    st_writer_free(w);
    CHECK(!truncate(path, 8 + 80 + 20), "truncate");
    f = st_open(path, err, sizeof err);
    char want[8400];
    snprintf(want, sizeof want,
             "%s: tensor 'h.0.attn.c_attn.weight': data_offsets [0, 24] exceed the data region (20 bytes)", path);
    CHECK(!f && !strcmp(err, want), "truncated: %s", err);
    CHECK(!truncate(path, 6), "truncate");
    f = st_open(path, err, sizeof err);
    snprintf(want, sizeof want, "%s: file is 6 bytes, too short for the 8-byte header length", path);
    CHECK(!f && !strcmp(err, want), "truncated: %s", err);
    CHECK(!truncate(path, 0), "truncate");
    f = st_open(path, err, sizeof err);
    snprintf(want, sizeof want, "%s: file is 0 bytes, too short for the 8-byte header length", path);
    CHECK(!f && !strcmp(err, want), "empty file: %s", err);
  }

  /* JSON syntax (file offsets count the 8-byte length) */
  REFUSE("", 0, "model.safetensors: header is empty, expected a JSON object");
  REFUSE("[]", 0, "model.safetensors: header is not a JSON object");
  REFUSE("{\"a\" {}}", 0, "model.safetensors: bad header JSON at file offset 13: expected ':' after a key");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}", 1,
         "model.safetensors: bad header JSON at file offset 61: expected a string");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", 1,
         "model.safetensors: bad header JSON at file offset 62: unexpected text after the header object");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}", 1,
         "model.safetensors: bad header JSON at file offset 60: expected ',' or '}'");
  REFUSE("{\"a\\q\":1}", 0, "model.safetensors: bad header JSON at file offset 11: invalid escape '\\q'");
  REFUSE("{\"abc", 0, "model.safetensors: bad header JSON at file offset 13: unterminated string");
  REFUSE("{\"a\xff\":1}", 0, "model.safetensors: bad header JSON at file offset 11: invalid UTF-8 in a string");
  REFUSE("{\"a\xc0\x80\":1}", 0, "model.safetensors: bad header JSON at file offset 11: invalid UTF-8 in a string");
  REFUSE("{\"a\nb\":1}", 0, "model.safetensors: bad header JSON at file offset 11: control character 0x0a in a string");
  REFUSE("{\"\\ud800x\":1}", 0, "model.safetensors: bad header JSON at file offset 10: unpaired surrogate \\ud800");
  REFUSE("{\"\\udc00\":1}", 0, "model.safetensors: bad header JSON at file offset 10: unpaired surrogate \\udc00");
  REFUSE("{\"\\u12g4\":1}", 0, "model.safetensors: bad header JSON at file offset 10: \\u needs 4 hex digits");
  REFUSE("{\"a\\u0000\":1}", 0, "model.safetensors: bad header JSON at file offset 11: \\u0000 in a string");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", 1,
         "model.safetensors: bad header JSON at file offset 36: leading zero in a number");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,],\"data_offsets\":[0,1]}}", 1,
         "model.safetensors: tensor 'a': shape must be an array of non-negative integers");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 1,
         "model.safetensors: bad header JSON at file offset 57: integer too large");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1] \"data_offsets\":[0,1]}}", 1,
         "model.safetensors: bad header JSON at file offset 39: expected ',' or '}'");

  /* schema */
  REFUSE("{\"a\":[1]}", 0, "model.safetensors: tensor 'a': expected an object with dtype, shape and data_offsets");
  REFUSE("{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16,
         "model.safetensors: tensor 'a': unknown dtype 'F128'");
  REFUSE("{\"a\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,16]}}", 16,
         "model.safetensors: tensor 'a': dtype must be a string");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":1}}", 1,
         "model.safetensors: tensor 'a': unknown key 'extra'");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "model.safetensors: tensor 'a': missing 'shape'");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         "model.safetensors: tensor 'a': 'dtype' appears twice");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1,
         "model.safetensors: tensor 'a': shape must be an array of non-negative integers");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1,
         "model.safetensors: tensor 'a': shape must be an array of non-negative integers");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":\"1\",\"data_offsets\":[0,1]}}", 1,
         "model.safetensors: tensor 'a': shape must be an array of non-negative integers");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         "model.safetensors: tensor 'a': shape has more than 8 dimensions");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1,
         "model.safetensors: tensor 'a': data_offsets must be [begin, end] with begin <= end");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1,
         "model.safetensors: tensor 'a': data_offsets must be [begin, end] with begin <= end");
  REFUSE("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
         "model.safetensors: tensor 'a': shape [2, 3] of F32 is 24 bytes but data_offsets [0, 20] hold 20");
  REFUSE("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
         "model.safetensors: tensor 'a': shape [4294967296, 4294967296] of F32 overflows 64 bits");
  REFUSE("{\"h.0.attn.c_attn.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 12,
         "model.safetensors: tensor 'h.0.attn.c_attn.weight': data_offsets [8, 16] exceed the data region (12 bytes)");
  REFUSE("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "model.safetensors: tensor 'b': data_offsets [4, 12] overlap tensor 'a' at [0, 8]");
  REFUSE("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
         16, "model.safetensors: tensor 'b': data_offsets [12, 16] leave bytes 8..12 unused after tensor 'a'");
  REFUSE("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
         "model.safetensors: tensor 'b': data_offsets [4, 8] leave bytes 0..4 unused at the start of the data region");
  REFUSE("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 10,
         "model.safetensors: the tensors end at byte 8 of the data region, which is 10 bytes");
  REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
         2, "model.safetensors: tensor 'a' appears twice in the header");
  REFUSE("{\"__metadata__\":{\"k\":1}}", 0, "model.safetensors: __metadata__ 'k' must have a string value");
  REFUSE("{\"__metadata__\":[]}", 0, "model.safetensors: __metadata__ must be an object of strings");
  REFUSE("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "model.safetensors: __metadata__ key 'k' appears twice");
  REFUSE("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "model.safetensors: __metadata__ appears twice in the header");

  /* accepted: whitespace everywhere, empty metadata, zero-size tensors, all dtypes */
  const char *ok = " \t\r\n{ \"__metadata__\" : { } , \"z\" : { \"shape\" : [ 0 ] , \"dtype\" : \"F64\" , "
                   "\"data_offsets\" : [ 0 , 0 ] } , \"b\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[0,1]},"
                   "\"c\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[1,2]},"
                   "\"d\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[2,10]},"
                   "\"e\":{\"dtype\":\"I16\",\"shape\":[1,1],\"data_offsets\":[10,12]},"
                   "\"f\\/\\b\\f\\n\\r\\t\\u00e9\\u20AC\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[12,16]}}   ";
  size_t len;
  unsigned char *b = image(ok, 16, &len);
  f = st_open_mem(b, len, "ok", err, sizeof err);
  CHECK(f && st_count(f) == 6 && st_find(f, "f/\b\f\n\r\t\xc3\xa9\xe2\x82\xac") && st_meta_count(f) == 0,
        "lenient whitespace: %s", f ? "wrong content" : err);
  if (f) CHECK(!strcmp(st_tensor_at(f, 0)->name, "z"), "zero-size tensor first at offset 0");
  st_close(f);
  free(b);
}

/* --------------------------------------------------------- atomic write */

static int count_tmp_files(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strstr(e->d_name, ".tmp.")) n++;
  closedir(d);
  return n;
}

static void test_atomic(void) {
  char err[512];
  float x[256];
  for (int i = 0; i < 256; i++) x[i] = (float)i;
  int64_t sh[1] = {256};
  StWriter *w = st_writer_new();
  st_writer_add(w, "x", ST_F32, 1, sh, x, err, sizeof err);
  const char *path = path_in(scratch, "atomic.safetensors");
  write_file(path, "OLD CONTENT", 11);

  /* a failure in the middle of the data */
  st_test_fail_write_after(300);
  int rc = st_writer_write(w, path, err, sizeof err);
  st_test_fail_write_after(-1);
  char want[8400];
  snprintf(want, sizeof want, "%s: write failed: simulated write failure", path);
  CHECK(rc == -1 && !strcmp(err, want), "simulated failure: %s", err);
  size_t n;
  unsigned char *b = read_all(path, &n);
  CHECK(b && n == 11 && !memcmp(b, "OLD CONTENT", 11), "destination changed by a failed write");
  free(b);
  CHECK(count_tmp_files(scratch) == 0, "temporary file left behind");

  /* a failure before anything is written */
  st_test_fail_write_after(0);
  rc = st_writer_write(w, path, err, sizeof err);
  st_test_fail_write_after(-1);
  b = read_all(path, &n);
  CHECK(rc == -1 && b && n == 11, "failure at byte 0");
  free(b);
  CHECK(count_tmp_files(scratch) == 0, "temporary file left behind");

  /* the destination is a directory: rename fails, nothing is left */
  const char *dirdest = path_in(scratch, "a-directory");
  mkdir(dirdest, 0755);
  rc = st_writer_write(w, dirdest, err, sizeof err);
  CHECK(rc == -1 && strstr(err, ": rename of ") && strstr(err, "Is a directory"), "rename onto a directory: %s", err);
  CHECK(count_tmp_files(scratch) == 0, "temporary file left behind after rename failure");
  rmdir(dirdest);

  /* the directory does not exist */
  rc = st_writer_write(w, path_in(scratch, "no-such-dir/x.safetensors"), err, sizeof err);
  CHECK(rc == -1 && strstr(err, "no-such-dir/x.safetensors: cannot create ") && strstr(err, "No such file or directory"),
        "missing directory: %s", err);

  /* a read-only directory (root ignores permissions: skipped there) */
  if (geteuid() != 0) {
    const char *ro = path_in(scratch, "ro");
    mkdir(ro, 0755);
    char dest[8400];
    snprintf(dest, sizeof dest, "%s/m.safetensors", ro);
    write_file(dest, "OLD", 3);
    chmod(ro, 0555);
    rc = st_writer_write(w, dest, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "Permission denied"), "read-only directory: %s", err);
    b = read_all(dest, &n);
    CHECK(b && n == 3 && !memcmp(b, "OLD", 3), "destination changed in a read-only directory");
    free(b);
    chmod(ro, 0755);
    unlink(dest);
    rmdir(ro);
  }

  /* and then it works, replacing the old file */
  CHECK(!st_writer_write(w, path, err, sizeof err), "write: %s", err);
  StFile *f = st_open(path, err, sizeof err);
  CHECK(f && st_find(f, "x") && !memcmp(st_find(f, "x")->data, x, sizeof x), "replaced: %s", f ? "" : err);
  st_close(f);
  st_writer_free(w);
}

/* ---------------------------------------------------------- conversions */

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void test_conversions(void) {
  /* bf16: exact, ties to even, carries, overflow, NaN, subnormals */
  struct {
    uint32_t in;
    uint16_t out;
  } bf[] = {
    {0x3F800000, 0x3F80}, {0x3F808000, 0x3F80}, {0x3F818000, 0x3F82}, {0x3F808001, 0x3F81},
    {0x3F80FFFF, 0x3F81}, {0xBF808000, 0xBF80}, {0x7F7FFFFF, 0x7F80}, {0x7F800000, 0x7F80},
    {0xFF800000, 0xFF80}, {0x00000001, 0x0000}, {0x00008000, 0x0000}, {0x00018000, 0x0002},
    {0x80000000, 0x8000}, {0x3FFFFFFF, 0x4000},
  };
  for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++)
    CHECK(st_f32_to_bf16(from_bits(bf[i].in)) == bf[i].out, "bf16(%08x) = %04x, want %04x", bf[i].in,
          st_f32_to_bf16(from_bits(bf[i].in)), bf[i].out);
  uint16_t nan = st_f32_to_bf16(from_bits(0x7F800001));
  CHECK((nan & 0x7F80) == 0x7F80 && (nan & 0x7F), "bf16 NaN stays NaN: %04x", nan);
  CHECK(st_f32_to_bf16(from_bits(0xFFC00000)) == 0xFFC0, "bf16 -qNaN");
  for (uint32_t h = 0; h < 0x10000; h++) {
    float f = st_bf16_to_f32((uint16_t)h);
    if (isnan(f)) continue;
    if (st_f32_to_bf16(f) != h) {
      CHECK(0, "bf16 round trip %04x", h);
      break;
    }
  }
  /* f16 */
  struct {
    float in;
    uint16_t out;
  } hf[] = {
    {1.0f, 0x3C00}, {-2.0f, 0xC000}, {65504.0f, 0x7BFF}, {65519.99f, 0x7BFF}, {65520.0f, 0x7C00},
    {1e9f, 0x7C00}, {0.0f, 0x0000}, {-0.0f, 0x8000}, {5.9604644775390625e-08f, 0x0001},
    {2.98023223876953125e-08f, 0x0000} /* half of the smallest: ties to even (0) */,
    {8.94069671630859375e-08f, 0x0002} /* 1.5 ulp: ties to even (2) */, {6.103515625e-05f, 0x0400},
    {6.097555160522461e-05f, 0x03FF}, {1.0009765625f, 0x3C01}, {1.00048828125f, 0x3C00} /* tie, even */,
    {1.00146484375f, 0x3C02} /* tie, even */,
  };
  for (size_t i = 0; i < sizeof hf / sizeof hf[0]; i++)
    CHECK(st_f32_to_f16(hf[i].in) == hf[i].out, "f16(%.10g) = %04x, want %04x", hf[i].in, st_f32_to_f16(hf[i].in),
          hf[i].out);
  CHECK(isnan(st_f16_to_f32(st_f32_to_f16(NAN))), "f16 NaN");
  CHECK(st_f16_to_f32(0x0001) == 5.9604644775390625e-08f && st_f16_to_f32(0x7BFF) == 65504.0f &&
            isinf(st_f16_to_f32(0xFC00)) && st_f16_to_f32(0xFC00) < 0 && st_f16_to_f32(0x3555) == 0.333251953125f,
        "f16 to f32");
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000; h++) {
    float f = st_f16_to_f32((uint16_t)h);
    if (isnan(f)) continue;
    if (st_f32_to_f16(f) != h) bad++;
    /* one f32 ulp further from zero is still nearest to h */
    uint32_t u = bits(f);
    if (!isinf(f) && (u & 0x7FFFFFFF) && st_f32_to_f16(from_bits(u + 1)) != h) bad++;
  }
  CHECK(bad == 0, "f16 round trip: %d mismatches", bad);
}

static void rm_scratch(void) {
  DIR *d = opendir(scratch);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(path_in(scratch, e->d_name));
  closedir(d);
  rmdir(scratch);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  snprintf(scratch, sizeof scratch, "%s/st-XXXXXX", dir);
  if (!mkdtemp(scratch)) {
    printf("FAIL: cannot create a scratch directory in %s: %s\n", dir, strerror(errno));
    return 1;
  }
  test_round_trip();
  test_crate_vectors();
  test_refusals();
  test_atomic();
  test_conversions();
  char py[4096];
  snprintf(py, sizeof py, "%s/py_model.safetensors", dir);
  if (access(py, R_OK)) {
    printf("FAIL: %s missing: run tests/runtime/make_safetensors.py %s first\n", py, dir);
    check_failed++;
  } else {
    check_python_file(py);
    snprintf(py, sizeof py, "%s/py_unaligned.safetensors", dir);
    check_python_file(py);
  }
  rm_scratch();
  return check_summary();
}
