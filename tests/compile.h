/* compile.h — the C tests' way to compile a .pipe text: front end, then the
 * op graph (diagnostics to stderr). Returns NULL after any error. */
#ifndef PIPEC_TESTS_COMPILE_H
#define PIPEC_TESTS_COMPILE_H
#include <stdio.h>
#include <string.h>

#include "compiler/frontend.h"
#include "compiler/opgraph.h"

static inline Program *test_compile(Arena *a, const char *name, const char *text) {
  Diag d = {.out = stderr};
  FrontendOptions fo = {0};
  return pipe_frontend(a, &d, name, text, text ? (long)strlen(text) : 0, &fo);
}

static inline OpGraph *test_graph(Arena *a, const Program *p) {
  Diag d = {.out = stderr};
  return p ? opgraph_build(a, &d, p) : NULL;
}

#endif
