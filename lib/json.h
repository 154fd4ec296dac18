/* json.h — the JSON lexing pipec's two JSON readers share: GPT-2's
 * encoder.json (lib/bpe.c) and safetensors headers (lib/safetensors.c).
 * Each reader keeps its own grammar and messages' framing (file:line:col,
 * file offset); the lexing of whitespace and strings, and its error texts,
 * are here.
 *
 * json_string reads the string at lx->i (after whitespace): escapes are
 * resolved (surrogate pairs joined), the raw text must be valid UTF-8 with
 * no control characters, and each code point goes to put(arg, cp) in
 * order. 0 with lx->i after the closing quote; or -1 with lx->why set and
 * lx->i at the fault: the start of the escape or character at fault, the
 * end of the text for an unterminated string. put may refuse a code point
 * by returning -1 after writing lx->why; lx->i is then at that code point.
 */
#ifndef PIPEC_JSON_H
#define PIPEC_JSON_H
#include <stddef.h>
#include <stdint.h>

typedef struct JsonLex {
  const unsigned char *s;
  size_t n, i;
  char why[160];
} JsonLex;

/* the next character after whitespace (lx->i moves to it), or -1 at the end */
int json_peek(JsonLex *lx);
int json_string(JsonLex *lx, int (*put)(void *arg, uint32_t cp), void *arg);
/* bytes enough for the UTF-8 (or fewer bytes per code point) of the string
 * whose quote is at lx->i: decoded text is never longer than its source */
size_t json_string_bound(const JsonLex *lx);

#endif
