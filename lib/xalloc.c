/* xalloc.c — see xalloc.h. */
#include "lib/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t n, size_t size) {
  fprintf(stderr, "pipec: out of memory (%zu x %zu bytes)\n", n, size);
  exit(3);
}

void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) out_of_memory(n, size);
  return p;
}

void *xrealloc(void *p, size_t n, size_t size) {
  p = realloc(p, (n ? n : 1) * (size ? size : 1));
  if (!p) out_of_memory(n, size);
  return p;
}

char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = xcalloc(n, 1);
  memcpy(d, s, n);
  return d;
}

void errf(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}
