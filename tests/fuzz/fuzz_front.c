/* fuzz_front.c — libFuzzer target for the whole front end: lexer, parser,
 * imports of the built-in library, every check, and the op graph with
 * its autodiff. Any crash, leak or
 * sanitizer report is a bug; diagnostics go to /dev/null. */
#include <stdint.h>
#include <stdio.h>

#include "compiler/frontend.h"
#include "compiler/opgraph.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  if (!devnull) devnull = fopen("/dev/null", "w");
  if (size > 1 << 16) return 0;
  Arena arena = {0};
  Diag diag = {.out = devnull, .max_errors = 0};
  FrontendOptions opt = {0};
  Program *p = pipe_frontend(&arena, &diag, "fuzz.pipe", (const char *)data, (long)size, &opt);
  if (p) {
    program_dump(devnull, p);
    OpGraph *g = opgraph_build(&arena, &diag, p);
    if (g) opgraph_dump(devnull, g, p);
  }
  arena_free(&arena);
  return 0;
}
