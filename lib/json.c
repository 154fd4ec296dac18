/* json.c — see json.h. */
#include "lib/json.h"

#include <stdio.h>

#include "lib/utf8.h"

int json_peek(JsonLex *lx) {
  while (lx->i < lx->n && (lx->s[lx->i] == ' ' || lx->s[lx->i] == '\t' || lx->s[lx->i] == '\n' || lx->s[lx->i] == '\r')) lx->i++;
  return lx->i < lx->n ? lx->s[lx->i] : -1;
}

static int hex4(JsonLex *lx, uint32_t *out) {
  uint32_t v = 0;
  if (lx->n - lx->i < 4) return -1;
  for (int k = 0; k < 4; k++) {
    int c = lx->s[lx->i + k];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
    else return -1;
  }
  lx->i += 4;
  *out = v;
  return 0;
}

#define FAIL(at, ...) return lx->i = (at), snprintf(lx->why, sizeof lx->why, __VA_ARGS__), -1

int json_string(JsonLex *lx, int (*put)(void *arg, uint32_t cp), void *arg) {
  if (json_peek(lx) != '"') FAIL(lx->i, "expected a string");
  lx->i++;
  for (;;) {
    if (lx->i >= lx->n) FAIL(lx->n, "unterminated string");
    size_t at = lx->i;
    uint32_t cp = lx->s[lx->i];
    if (cp == '"') break;
    if (cp < 0x20) FAIL(at, "control character 0x%02x in a string", cp);
    if (cp == '\\') {
      int e = lx->i + 1 < lx->n ? lx->s[lx->i + 1] : -1;
      lx->i += 2;
      switch (e) {
      case '"': cp = '"'; break;
      case '\\': cp = '\\'; break;
      case '/': cp = '/'; break;
      case 'b': cp = '\b'; break;
      case 'f': cp = '\f'; break;
      case 'n': cp = '\n'; break;
      case 'r': cp = '\r'; break;
      case 't': cp = '\t'; break;
      case 'u':
        if (hex4(lx, &cp)) FAIL(at, "\\u needs 4 hex digits");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          uint32_t lo;
          if (lx->n - lx->i < 2 || lx->s[lx->i] != '\\' || lx->s[lx->i + 1] != 'u' || (lx->i += 2, hex4(lx, &lo)) || lo < 0xDC00 ||
              lo > 0xDFFF)
            FAIL(at, "unpaired surrogate \\u%04x", cp);
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF)
          FAIL(at, "unpaired surrogate \\u%04x", cp);
        break;
      case -1: FAIL(lx->n, "unterminated string");
      default: FAIL(at, "invalid escape '\\%c'", e);
      }
    } else {
      size_t l = utf8_decode(lx->s + lx->i, lx->n - lx->i, &cp);
      if (!l) FAIL(at, "invalid UTF-8 in a string");
      lx->i += l;
    }
    if (put(arg, cp)) return lx->i = at, -1;
  }
  lx->i++;
  return 0;
}

size_t json_string_bound(const JsonLex *lx) {
  size_t end = lx->i + 1;
  while (end < lx->n && lx->s[end] != '"') end += lx->s[end] == '\\' ? 2 : 1;
  return end - lx->i + 1;
}
