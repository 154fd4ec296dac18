/* utf8.h — one UTF-8 decoder for the file formats (lib/bpe.c's tokenizer
 * text and JSON, lib/safetensors.c's header JSON). */
#ifndef PIPEC_UTF8_H
#define PIPEC_UTF8_H
#include <stddef.h>
#include <stdint.h>

/* Decodes one UTF-8 character at s[0..n) (n >= 1): its length, or 0 when the
 * bytes are not a valid sequence (overlong, surrogate, > U+10FFFF,
 * truncated). */
static inline size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned c = s[0];
  if (c < 0x80) return *cp = c, 1;
  size_t len;
  uint32_t v, min;
  if ((c & 0xE0) == 0xC0) len = 2, v = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, v = c & 0x0F, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, v = c & 0x07, min = 0x10000;
  else return 0;
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = v << 6 | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return len;
}

#endif
