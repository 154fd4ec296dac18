/* diag.h — source files and diagnostics.
 *
 * Contract: every message pipec prints about a user's input goes through
 * here and has the form
 *
 *   FILE:LINE:COL: error: WHAT IS WRONG; WHAT WOULD BE RIGHT
 *       12 |   ln_f = layrnorm(dim)
 *          |          ^~~~~~~~
 *
 * (gcc/clang layout, so editors and CI log parsers pick it up). Errors are
 * counted, never fatal: passes keep going and report everything they find.
 * A Loc with no file prints as "pipec: error: ...".
 */
#ifndef PIPEC_DIAG_H
#define PIPEC_DIAG_H
#include <stdio.h>

typedef struct SrcFile {
  const char *path; /* as the user wrote it, or "<nn>" for built-in files */
  const char *text; /* NUL-terminated contents */
  long len;
} SrcFile;

typedef struct Loc {
  const SrcFile *file;
  int line, col; /* 1-based; col counts bytes */
  int len;       /* columns the caret underlines (>= 1) */
} Loc;

typedef struct Diag {
  FILE *out;     /* where messages go (stderr; /dev/null when fuzzing) */
  int errors;
  int max_errors; /* stop printing (but keep counting) after this many; 0 = no limit */
  const SrcFile *last_file; /* file of the latest error (NULL: none, or no file) */
} Diag;

void diag_error(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_note(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Loc spanning from a to the end of b (same line), else a. */
Loc loc_span(Loc a, Loc b);

/* The closest of n candidate names to `name` by edit distance, or NULL when
 * none is close enough to be a plausible typo. */
const char *did_you_mean(const char *name, const char *const *cands, int n);

/* ", did you mean 'x'?" or "" — a suffix for messages. Result is static. */
const char *suggest(const char *name, const char *const *cands, int n);

#endif
