/* safetensors.c — safetensors reader (mmap + a strict schema-directed JSON
 * parser) and atomic writer. See safetensors.h for the contract. */
#include "lib/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/files.h"
#include "lib/json.h"
#include "lib/utf8.h"
#include "lib/xalloc.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull /* the Rust crate's limit */
#define ST_MAX_DEPTH 64

/* ------------------------------------------------------------ utilities */

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  uint32_t cp;
  return utf8_decode(s, n, &cp);
}

static int utf8_valid(const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t l = utf8_len((const unsigned char *)s + i, n - i);
    if (!l) return 0;
    i += l;
  }
  return 1;
}

/* ---------------------------------------------------------------- dtypes */

static const char *const dtype_names[ST_NDTYPES] = {
  "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16",
  "BF16", "I32", "U32", "F32", "F64", "I64", "U64"};
static const unsigned char dtype_sizes[ST_NDTYPES] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};

const char *st_dtype_name(StDtype dt) { return (unsigned)dt < ST_NDTYPES ? dtype_names[dt] : "?"; }
size_t st_dtype_size(StDtype dt) { return (unsigned)dt < ST_NDTYPES ? dtype_sizes[dt] : 0; }

int st_dtype_parse(const char *name, StDtype *out) {
  for (int i = 0; i < ST_NDTYPES; i++)
    if (!strcmp(name, dtype_names[i])) {
      *out = (StDtype)i;
      return 0;
    }
  return -1;
}

/* ---------------------------------------------------------- conversions */

static uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float st_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t st_f32_to_bf16(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(x >> 16 | 0x0040); /* quiet NaN */
  return (uint16_t)((x + 0x7FFFu + (x >> 16 & 1)) >> 16);
}

float st_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = h >> 10 & 0x1F, m = h & 0x3FF;
  if (e == 0x1F) return u2f(sign | 0x7F800000u | m << 13);
  if (e) return u2f(sign | (e + 112) << 23 | m << 13);
  if (!m) return u2f(sign);
  /* subnormal: m * 2^-24, normalised */
  int shift = 0;
  while (!(m & 0x400)) m <<= 1, shift++;
  return u2f(sign | (uint32_t)(113 - shift) << 23 | (m & 0x3FF) << 13);
}

uint16_t st_f32_to_f16(float f) {
  uint32_t x = f2u(f), sign = x >> 16 & 0x8000;
  x &= 0x7FFFFFFFu;
  if (x > 0x7F800000u) return (uint16_t)(sign | 0x7E00 | (x >> 13 & 0x3FF)); /* NaN */
  if (x >= 0x477FF000u) return (uint16_t)(sign | 0x7C00); /* rounds past 65504: infinity */
  if (x >= 0x38800000u) { /* normal half */
    uint32_t r = (x - 0x38000000u) >> 13, rem = x & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  /* subnormal half (or zero): round mantissa24 * 2^(e-126) */
  uint32_t e = x >> 23, m = (x & 0x7FFFFF) | 0x800000, shift = 126 - e;
  if (shift > 24) return (uint16_t)sign;
  uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (r & 1))) r++;
  return (uint16_t)(sign | r);
}

/* ---------------------------------------------------------------- reader */

typedef struct StMeta {
  char *key, *value;
} StMeta;

struct StFile {
  char *path;
  void *map;         /* st_open's mapping (NULL for st_open_mem) */
  size_t map_len;
  StTensor *t;       /* in data-offset order once open */
  size_t nt;
  StTensor **by_name; /* t sorted by name */
  StMeta *meta;      /* sorted by key */
  size_t nmeta;
};

typedef struct Parser {
  JsonLex lx; /* the header JSON */
  const char *file;
  char *err;
  size_t errlen;
} Parser;

/* Syntax error at the current position, as a file offset (JSON starts at 8). */
__attribute__((format(printf, 2, 3))) static int syntax(Parser *p, const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  errf(p->err, p->errlen, "%s: bad header JSON at file offset %zu: %s", p->file, p->lx.i + 8, what);
  return -1;
}

static int peek(Parser *p) { return json_peek(&p->lx); }

static int expect(Parser *p, int c, const char *what) {
  if (peek(p) != c) return syntax(p, "expected %s", what);
  p->lx.i++;
  return 0;
}

static size_t put_utf8(char *d, unsigned cp) {
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

/* A JSON string at the current position, decoded into a malloc'ed
 * NUL-terminated UTF-8 string (U+0000 refused). */
typedef struct Utf8Out {
  Parser *p;
  char *d;
  size_t k;
} Utf8Out;
static int put_cp(void *arg, uint32_t cp) {
  Utf8Out *o = arg;
  if (!cp) return snprintf(o->p->lx.why, sizeof o->p->lx.why, "\\u0000 in a string"), -1;
  o->k += put_utf8(o->d + o->k, cp);
  return 0;
}
static int parse_string(Parser *p, char **out) {
  if (peek(p) != '"') return syntax(p, "expected a string");
  Utf8Out o = {p, xcalloc(json_string_bound(&p->lx), 1), 0};
  if (json_string(&p->lx, put_cp, &o)) {
    free(o.d);
    return syntax(p, "%s", p->lx.why);
  }
  o.d[o.k] = 0;
  *out = o.d;
  return 0;
}

/* A JSON number. 0 and *out for a non-negative integer, 1 for another
 * valid number (negative, fraction, exponent), -1 on a syntax error. */
static int parse_number(Parser *p, uint64_t *out) {
  json_peek(&p->lx);
  size_t i = p->lx.i;
  int neg = 0, frac = 0, over = 0;
  uint64_t v = 0;
  if (i < p->lx.n && p->lx.s[i] == '-') neg = 1, i++;
  if (i >= p->lx.n || p->lx.s[i] < '0' || p->lx.s[i] > '9') return syntax(p, "expected a number");
  if (p->lx.s[i] == '0' && i + 1 < p->lx.n && p->lx.s[i + 1] >= '0' && p->lx.s[i + 1] <= '9') {
    p->lx.i = i;
    return syntax(p, "leading zero in a number");
  }
  while (i < p->lx.n && p->lx.s[i] >= '0' && p->lx.s[i] <= '9') {
    unsigned dgt = (unsigned)(p->lx.s[i++] - '0');
    if (v > (UINT64_MAX - dgt) / 10) over = 1;
    else v = v * 10 + dgt;
  }
  if (i < p->lx.n && p->lx.s[i] == '.') {
    frac = 1, i++;
    if (i >= p->lx.n || p->lx.s[i] < '0' || p->lx.s[i] > '9') return p->lx.i = i, syntax(p, "expected a digit after '.'");
    while (i < p->lx.n && p->lx.s[i] >= '0' && p->lx.s[i] <= '9') i++;
  }
  if (i < p->lx.n && (p->lx.s[i] == 'e' || p->lx.s[i] == 'E')) {
    frac = 1, i++;
    if (i < p->lx.n && (p->lx.s[i] == '+' || p->lx.s[i] == '-')) i++;
    if (i >= p->lx.n || p->lx.s[i] < '0' || p->lx.s[i] > '9') return p->lx.i = i, syntax(p, "expected a digit in the exponent");
    while (i < p->lx.n && p->lx.s[i] >= '0' && p->lx.s[i] <= '9') i++;
  }
  if (!neg && !frac && over) return syntax(p, "integer too large");
  p->lx.i = i;
  *out = v;
  return neg || frac ? 1 : 0;
}

/* An array of non-negative integers into v[0..max); *n gets the count
 * (max + 1 when there were more). 0, 1 when some element is not such an
 * integer (schema error for the caller), -1 on a syntax error. */
static int parse_uint_array(Parser *p, uint64_t *v, int max, int *n) {
  *n = 0;
  if (peek(p) != '[') return 1;
  p->lx.i++;
  int bad = 0;
  if (peek(p) == ']') return p->lx.i++, 0;
  for (;;) {
    int c = peek(p);
    if (c != '-' && (c < '0' || c > '9')) return 1;
    uint64_t x = 0;
    int r = parse_number(p, &x);
    if (r < 0) return -1;
    if (r) bad = 1;
    if (*n < max) v[*n] = x;
    if (*n <= max) (*n)++;
    c = peek(p);
    if (c == ',') {
      p->lx.i++;
      continue;
    }
    if (c == ']') {
      p->lx.i++;
      return bad;
    }
    return syntax(p, "expected ',' or ']'");
  }
}

/* a tensor entry while parsing, before the layout is checked */
typedef struct Entry {
  StTensor t;
  size_t header_index;
} Entry;

static int parse_tensor(Parser *p, char *name, StTensor *t) {
  const char *file = p->file;
  if (peek(p) != '{') {
    errf(p->err, p->errlen, "%s: tensor '%s': expected an object with dtype, shape and data_offsets", file, name);
    return -1;
  }
  p->lx.i++;
  int have_dtype = 0, have_shape = 0, have_offsets = 0;
  if (peek(p) == '}') p->lx.i++;
  else
    for (;;) {
      char *key;
      if (parse_string(p, &key)) return -1;
      if (expect(p, ':', "':' after a key")) return free(key), -1;
      int rc = 0;
      if (!strcmp(key, "dtype")) {
        char *dt;
        if (have_dtype) rc = -2;
        else if (peek(p) != '"') {
          errf(p->err, p->errlen, "%s: tensor '%s': dtype must be a string", file, name);
          rc = -1;
        } else if (parse_string(p, &dt)) rc = -1;
        else {
          if (st_dtype_parse(dt, &t->dtype)) {
            errf(p->err, p->errlen, "%s: tensor '%s': unknown dtype '%s'", file, name, dt);
            rc = -1;
          }
          free(dt);
        }
        have_dtype = 1;
      } else if (!strcmp(key, "shape")) {
        uint64_t dims[ST_MAX_DIMS];
        int nd;
        if (have_shape) rc = -2;
        else if ((rc = parse_uint_array(p, dims, ST_MAX_DIMS, &nd)) > 0) {
          errf(p->err, p->errlen, "%s: tensor '%s': shape must be an array of non-negative integers", file, name);
          rc = -1;
        } else if (rc == 0 && nd > ST_MAX_DIMS) {
          errf(p->err, p->errlen, "%s: tensor '%s': shape has more than %d dimensions", file, name, ST_MAX_DIMS);
          rc = -1;
        } else if (rc == 0) {
          for (int k = 0; k < nd && !rc; k++) {
            if (dims[k] > (uint64_t)INT64_MAX) {
              errf(p->err, p->errlen, "%s: tensor '%s': dimension %llu is too large", file, name,
                     (unsigned long long)dims[k]);
              rc = -1;
            }
            t->shape[k] = (int64_t)dims[k];
          }
          t->ndim = nd;
        }
        have_shape = 1;
      } else if (!strcmp(key, "data_offsets")) {
        uint64_t off[2];
        int no;
        if (have_offsets) rc = -2;
        else if ((rc = parse_uint_array(p, off, 2, &no)) > 0 || (rc == 0 && (no != 2 || off[0] > off[1]))) {
          errf(p->err, p->errlen, "%s: tensor '%s': data_offsets must be [begin, end] with begin <= end",
                 file, name);
          rc = -1;
        } else if (rc == 0) {
          t->begin = off[0], t->end = off[1];
        }
        have_offsets = 1;
      } else {
        errf(p->err, p->errlen, "%s: tensor '%s': unknown key '%s'", file, name, key);
        rc = -1;
      }
      if (rc == -2) {
        errf(p->err, p->errlen, "%s: tensor '%s': '%s' appears twice", file, name, key);
        rc = -1;
      }
      free(key);
      if (rc) return -1;
      int c = peek(p);
      if (c == ',') {
        p->lx.i++;
        continue;
      }
      if (c == '}') {
        p->lx.i++;
        break;
      }
      return syntax(p, "expected ',' or '}'");
    }
  const char *missing = !have_dtype ? "dtype" : !have_shape ? "shape" : !have_offsets ? "data_offsets" : NULL;
  if (missing) {
    errf(p->err, p->errlen, "%s: tensor '%s': missing '%s'", file, name, missing);
    return -1;
  }
  return 0;
}

static int parse_metadata(Parser *p, StFile *f) {
  if (peek(p) != '{') {
    errf(p->err, p->errlen, "%s: __metadata__ must be an object of strings", p->file);
    return -1;
  }
  p->lx.i++;
  if (peek(p) == '}') return p->lx.i++, 0;
  size_t cap = 0;
  for (;;) {
    char *key, *value;
    if (parse_string(p, &key)) return -1;
    if (expect(p, ':', "':' after a key")) return free(key), -1;
    if (peek(p) != '"') {
      errf(p->err, p->errlen, "%s: __metadata__ '%s' must have a string value", p->file, key);
      free(key);
      return -1;
    }
    if (parse_string(p, &value)) return free(key), -1;
    if (f->nmeta == cap) f->meta = xrealloc(f->meta, cap = cap ? 2 * cap : 8, sizeof *f->meta);
    f->meta[f->nmeta++] = (StMeta){key, value};
    int c = peek(p);
    if (c == ',') {
      p->lx.i++;
      continue;
    }
    if (c == '}') return p->lx.i++, 0;
    return syntax(p, "expected ',' or '}'");
  }
}

static int cmp_meta(const void *a, const void *b) {
  return strcmp(((const StMeta *)a)->key, ((const StMeta *)b)->key);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }
static int cmp_by_name(const void *a, const void *b) {
  return strcmp((*(StTensor *const *)a)->name, (*(StTensor *const *)b)->name);
}
static int cmp_entry_offset(const void *a, const void *b) {
  const Entry *x = a, *y = b;
  if (x->t.begin != y->t.begin) return x->t.begin < y->t.begin ? -1 : 1;
  if (x->t.end != y->t.end) return x->t.end < y->t.end ? -1 : 1;
  return x->header_index < y->header_index ? -1 : x->header_index > y->header_index;
}

static void shape_str(const StTensor *t, char *buf, size_t len) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, len - k, "[");
  for (int d = 0; d < t->ndim && k < len; d++)
    k += (size_t)snprintf(buf + k, len - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
  if (k < len) snprintf(buf + k, len - k, "]");
}

static void free_entries(Entry *e, size_t n) {
  for (size_t i = 0; i < n; i++) free((char *)e[i].t.name);
  free(e);
}

/* Parses and checks the whole file image; fills f. */
static int st_parse(StFile *f, const unsigned char *buf, size_t len, char *err, size_t errlen) {
  const char *file = f->path;
  if (len < 8) {
    errf(err, errlen, "%s: file is %zu bytes, too short for the 8-byte header length", file, len);
    return -1;
  }
  uint64_t hlen;
  memcpy(&hlen, buf, 8);
  if (hlen > len - 8) {
    errf(err, errlen, "%s: header length %llu exceeds the file size (%zu bytes)", file, (unsigned long long)hlen,
           len);
    return -1;
  }
  if (hlen > ST_MAX_HEADER) {
    errf(err, errlen, "%s: header length %llu exceeds the limit of %llu bytes", file, (unsigned long long)hlen,
           ST_MAX_HEADER);
    return -1;
  }
  Parser p = {{buf + 8, (size_t)hlen, 0, ""}, file, err, errlen};
  const unsigned char *data = buf + 8 + hlen;
  uint64_t data_len = len - 8 - hlen;

  Entry *e = NULL;
  size_t ne = 0, cap = 0;
  int have_meta = 0;
  if (peek(&p) != '{') {
    if (p.lx.i >= p.lx.n) errf(err, errlen, "%s: header is empty, expected a JSON object", file);
    else errf(err, errlen, "%s: header is not a JSON object", file);
    return -1;
  }
  p.lx.i++;
  if (peek(&p) == '}') p.lx.i++;
  else
    for (;;) {
      char *key;
      if (parse_string(&p, &key)) goto fail;
      if (expect(&p, ':', "':' after a key")) {
        free(key);
        goto fail;
      }
      if (!strcmp(key, "__metadata__")) {
        free(key);
        if (have_meta) {
          errf(err, errlen, "%s: __metadata__ appears twice in the header", file);
          goto fail;
        }
        have_meta = 1;
        if (parse_metadata(&p, f)) goto fail;
      } else {
        if (ne == cap) e = xrealloc(e, cap = cap ? 2 * cap : 16, sizeof *e);
        memset(&e[ne], 0, sizeof e[ne]);
        e[ne].t.name = key;
        e[ne].header_index = ne;
        ne++;
        if (parse_tensor(&p, key, &e[ne - 1].t)) goto fail;
      }
      int c = peek(&p);
      if (c == ',') {
        p.lx.i++;
        continue;
      }
      if (c == '}') {
        p.lx.i++;
        break;
      }
      syntax(&p, "expected ',' or '}'");
      goto fail;
    }
  if (peek(&p) != -1) {
    syntax(&p, "unexpected text after the header object");
    goto fail;
  }

  /* names once each */
  {
    const char **names = xcalloc(ne, sizeof *names);
    for (size_t i = 0; i < ne; i++) names[i] = e[i].t.name;
    if (ne > 1) qsort(names, ne, sizeof *names, cmp_str);
    for (size_t i = 1; i < ne; i++)
      if (!strcmp(names[i], names[i - 1])) {
        errf(err, errlen, "%s: tensor '%s' appears twice in the header", file, names[i]);
        free(names);
        goto fail;
      }
    free(names);
  }
  if (f->nmeta > 1) qsort(f->meta, f->nmeta, sizeof *f->meta, cmp_meta);
  for (size_t i = 1; i < f->nmeta; i++)
    if (!strcmp(f->meta[i].key, f->meta[i - 1].key)) {
      errf(err, errlen, "%s: __metadata__ key '%s' appears twice", file, f->meta[i].key);
      goto fail;
    }
  /* each tensor alone, in header order: byte count, then bounds */
  for (size_t i = 0; i < ne; i++) {
    StTensor *t = &e[i].t;
    uint64_t bytes = st_dtype_size(t->dtype);
    int over = 0;
    for (int d = 0; d < t->ndim; d++) {
      uint64_t dim = (uint64_t)t->shape[d];
      if (dim && bytes > UINT64_MAX / dim) over = 1;
      else bytes *= dim;
    }
    char sh[160];
    shape_str(t, sh, sizeof sh);
    if (over) {
      errf(err, errlen, "%s: tensor '%s': shape %s of %s overflows 64 bits", file, t->name, sh,
             st_dtype_name(t->dtype));
      goto fail;
    }
    if (bytes != t->end - t->begin) {
      errf(err, errlen, "%s: tensor '%s': shape %s of %s is %llu bytes but data_offsets [%llu, %llu] hold %llu", file,
             t->name, sh, st_dtype_name(t->dtype), (unsigned long long)bytes, (unsigned long long)t->begin,
             (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
      goto fail;
    }
    if (t->end > data_len) {
      errf(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] exceed the data region (%llu bytes)", file,
             t->name, (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)data_len);
      goto fail;
    }
  }
  /* in offset order: no overlap, no gap, the region covered */
  if (ne > 1) qsort(e, ne, sizeof *e, cmp_entry_offset);
  uint64_t at = 0;
  for (size_t i = 0; i < ne; i++) {
    StTensor *t = &e[i].t;
    if (t->begin < at) {
      const StTensor *q = &e[i - 1].t;
      errf(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' at [%llu, %llu]", file,
             t->name, (unsigned long long)t->begin, (unsigned long long)t->end, q->name, (unsigned long long)q->begin,
             (unsigned long long)q->end);
      goto fail;
    }
    if (t->begin > at) {
      unsigned long long lo = t->begin, hi = t->end;
      if (i)
        errf(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] leave bytes %llu..%llu unused after tensor '%s'",
               file, t->name, lo, hi, (unsigned long long)at, lo, e[i - 1].t.name);
      else
        errf(err, errlen,
               "%s: tensor '%s': data_offsets [%llu, %llu] leave bytes 0..%llu unused at the start of the data region",
               file, t->name, lo, hi, lo);
      goto fail;
    }
    at = t->end;
  }
  if (at != data_len) {
    errf(err, errlen, "%s: the tensors end at byte %llu of the data region, which is %llu bytes", file,
           (unsigned long long)at, (unsigned long long)data_len);
    goto fail;
  }

  f->t = xcalloc(ne, sizeof *f->t);
  for (size_t i = 0; i < ne; i++) {
    f->t[i] = e[i].t;
    f->t[i].data = data + f->t[i].begin;
    f->t[i].nbytes = (size_t)(f->t[i].end - f->t[i].begin);
  }
  f->nt = ne;
  free(e);
  e = NULL;
  f->by_name = xcalloc(ne, sizeof *f->by_name);
  for (size_t i = 0; i < ne; i++) f->by_name[i] = &f->t[i];
  if (ne > 1) qsort(f->by_name, ne, sizeof *f->by_name, cmp_by_name);
  return 0;
fail:
  free_entries(e, ne);
  return -1;
}

void st_close(StFile *f) {
  if (!f) return;
  for (size_t i = 0; i < f->nt; i++) free((char *)f->t[i].name);
  free(f->t);
  free(f->by_name);
  for (size_t i = 0; i < f->nmeta; i++) free(f->meta[i].key), free(f->meta[i].value);
  free(f->meta);
  if (f->map) munmap(f->map, f->map_len);
  free(f->path);
  free(f);
}

StFile *st_open_mem(const void *buf, size_t len, const char *name, char *err, size_t errlen) {
  StFile *f = xcalloc(1, sizeof *f);
  f->path = xstrdup(name);
  if (st_parse(f, buf, len, err, errlen)) {
    st_close(f);
    return NULL;
  }
  return f;
}

StFile *st_open(const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
    errf(err, errlen, "%s: not a regular file", path);
    close(fd);
    return NULL;
  }
  size_t len = (size_t)sb.st_size;
  void *map = NULL;
  if (len) {
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      errf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
      close(fd);
      return NULL;
    }
  }
  close(fd);
  StFile *f = xcalloc(1, sizeof *f);
  f->path = xstrdup(path);
  f->map = map, f->map_len = len;
  static const unsigned char empty[1];
  if (st_parse(f, map ? map : (void *)empty, len, err, errlen)) {
    st_close(f);
    return NULL;
  }
  return f;
}

const char *st_path(const StFile *f) { return f->path; }
size_t st_count(const StFile *f) { return f->nt; }
const StTensor *st_tensor_at(const StFile *f, size_t i) { return i < f->nt ? &f->t[i] : NULL; }

const StTensor *st_find(const StFile *f, const char *name) {
  size_t lo = 0, hi = f->nt;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(f->by_name[mid]->name, name);
    if (!c) return f->by_name[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

int64_t st_numel(const StTensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

size_t st_meta_count(const StFile *f) { return f->nmeta; }
const char *st_meta_key(const StFile *f, size_t i) { return i < f->nmeta ? f->meta[i].key : NULL; }
const char *st_meta_value(const StFile *f, size_t i) { return i < f->nmeta ? f->meta[i].value : NULL; }

const char *st_meta_get(const StFile *f, const char *key) {
  for (size_t i = 0; i < f->nmeta; i++)
    if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
  return NULL;
}

int st_tensor_to_f32(const StFile *f, const StTensor *t, float *out, char *err, size_t errlen) {
  size_t n = (size_t)st_numel(t);
  const unsigned char *src = t->data;
  switch (t->dtype) {
  case ST_F32:
    if (n) memcpy(out, src, n * 4);
    return 0;
  case ST_F16:
  case ST_BF16:
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, src + 2 * i, 2);
      out[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
    }
    return 0;
  case ST_F64:
    for (size_t i = 0; i < n; i++) {
      double v;
      memcpy(&v, src + 8 * i, 8);
      out[i] = (float)v;
    }
    return 0;
  default:
    errf(err, errlen, "%s: tensor '%s': dtype %s is not a floating-point type (F32, F16, BF16, F64)",
           f ? f->path : "?", t->name, st_dtype_name(t->dtype));
    return -1;
  }
}

/* ---------------------------------------------------------------- writer */

typedef struct WTensor {
  char *name;
  StDtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const void *data;
  size_t nbytes;
} WTensor;

struct StWriter {
  WTensor *t;
  size_t nt, cap;
  StMeta *meta;
  size_t nmeta, mcap;
};

static long long fail_after = -1;
void st_test_fail_write_after(long long nbytes) { fail_after = nbytes; }

StWriter *st_writer_new(void) { return xcalloc(1, sizeof(StWriter)); }

void st_writer_free(StWriter *w) {
  if (!w) return;
  for (size_t i = 0; i < w->nt; i++) free(w->t[i].name);
  free(w->t);
  for (size_t i = 0; i < w->nmeta; i++) free(w->meta[i].key), free(w->meta[i].value);
  free(w->meta);
  free(w);
}

int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data,
                  char *err, size_t errlen) {
  if (!name || !*name || !utf8_valid(name) || !strcmp(name, "__metadata__")) {
    errf(err, errlen, "tensor name '%s' is empty, not UTF-8 or reserved", name ? name : "");
    return -1;
  }
  if ((unsigned)dtype >= ST_NDTYPES) {
    errf(err, errlen, "tensor '%s': unknown dtype %d", name, (int)dtype);
    return -1;
  }
  if (ndim < 0 || ndim > ST_MAX_DIMS) {
    errf(err, errlen, "tensor '%s': %d dimensions, expected 0..%d", name, ndim, ST_MAX_DIMS);
    return -1;
  }
  size_t bytes = st_dtype_size(dtype);
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) {
      errf(err, errlen, "tensor '%s': negative dimension %lld", name, (long long)shape[d]);
      return -1;
    }
    if (shape[d] && bytes > SIZE_MAX / (uint64_t)shape[d]) {
      errf(err, errlen, "tensor '%s': shape overflows the address space", name);
      return -1;
    }
    bytes *= (size_t)shape[d];
  }
  if (bytes && !data) {
    errf(err, errlen, "tensor '%s': no data", name);
    return -1;
  }
  for (size_t i = 0; i < w->nt; i++)
    if (!strcmp(w->t[i].name, name)) {
      errf(err, errlen, "tensor '%s' added twice", name);
      return -1;
    }
  if (w->nt == w->cap) w->t = xrealloc(w->t, w->cap = w->cap ? 2 * w->cap : 16, sizeof *w->t);
  WTensor *t = &w->t[w->nt++];
  memset(t, 0, sizeof *t);
  t->name = xstrdup(name);
  t->dtype = dtype;
  t->ndim = ndim;
  for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
  t->data = data;
  t->nbytes = bytes;
  return 0;
}

int st_writer_set_meta(StWriter *w, const char *key, const char *value, char *err, size_t errlen) {
  if (!key || !value || !utf8_valid(key) || !utf8_valid(value)) {
    errf(err, errlen, "__metadata__ key or value is missing or not UTF-8");
    return -1;
  }
  for (size_t i = 0; i < w->nmeta; i++)
    if (!strcmp(w->meta[i].key, key)) {
      free(w->meta[i].value);
      w->meta[i].value = xstrdup(value);
      return 0;
    }
  if (w->nmeta == w->mcap) w->meta = xrealloc(w->meta, w->mcap = w->mcap ? 2 * w->mcap : 8, sizeof *w->meta);
  w->meta[w->nmeta++] = (StMeta){xstrdup(key), xstrdup(value)};
  return 0;
}

typedef struct Buf {
  char *s;
  size_t n, cap;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    while (b->n + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 256;
    b->s = xrealloc(b->s, b->cap, 1);
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}

__attribute__((format(printf, 2, 3))) static void buf_printf(Buf *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  buf_put(b, tmp, (size_t)n);
}

/* a JSON string as serde_json writes it */
static void buf_json_string(Buf *b, const char *s) {
  buf_put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    switch (c) {
    case '"': buf_put(b, "\\\"", 2); break;
    case '\\': buf_put(b, "\\\\", 2); break;
    case '\b': buf_put(b, "\\b", 2); break;
    case '\f': buf_put(b, "\\f", 2); break;
    case '\n': buf_put(b, "\\n", 2); break;
    case '\r': buf_put(b, "\\r", 2); break;
    case '\t': buf_put(b, "\\t", 2); break;
    default:
      if (c < 0x20) buf_printf(b, "\\u%04x", c);
      else buf_put(b, (const char *)&c, 1);
    }
  }
  buf_put(b, "\"", 1);
}

static int cmp_wtensor(const void *a, const void *b) {
  const WTensor *x = a, *y = b;
  if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* write(2) all of n bytes, counting toward the test hook */
int st_writer_write(StWriter *w, const char *path, char *err, size_t errlen) {
  if (w->nt > 1) qsort(w->t, w->nt, sizeof *w->t, cmp_wtensor);
  if (w->nmeta > 1) qsort(w->meta, w->nmeta, sizeof *w->meta, cmp_meta);
  Buf h = {0};
  buf_put(&h, "{", 1);
  if (w->nmeta) {
    buf_put(&h, "\"__metadata__\":{", 16);
    for (size_t i = 0; i < w->nmeta; i++) {
      if (i) buf_put(&h, ",", 1);
      buf_json_string(&h, w->meta[i].key);
      buf_put(&h, ":", 1);
      buf_json_string(&h, w->meta[i].value);
    }
    buf_put(&h, "}", 1);
  }
  uint64_t off = 0;
  for (size_t i = 0; i < w->nt; i++) {
    const WTensor *t = &w->t[i];
    if (i || w->nmeta) buf_put(&h, ",", 1);
    buf_json_string(&h, t->name);
    buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++) buf_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
    buf_printf(&h, "],\"data_offsets\":[%llu,", (unsigned long long)off);
    off += t->nbytes;
    buf_printf(&h, "%llu]}", (unsigned long long)off);
  }
  buf_put(&h, "}", 1);
  while (h.n % 8) buf_put(&h, " ", 1);

  uint64_t hlen = h.n;
  FilePiece *p = xcalloc(w->nt + 2, sizeof *p);
  size_t np = 0;
  p[np++] = (FilePiece){&hlen, 8};
  p[np++] = (FilePiece){h.s, h.n};
  for (size_t i = 0; i < w->nt; i++)
    if (w->t[i].nbytes) p[np++] = (FilePiece){w->t[i].data, w->t[i].nbytes};
  int rc = file_write_pieces(path, p, np, fail_after, err, errlen);
  free(p);
  free(h.s);
  return rc;
}
