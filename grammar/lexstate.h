/* lexstate.h — state shared by the flex scanner and the bison parser. */
#ifndef PIPEC_LEXSTATE_H
#define PIPEC_LEXSTATE_H
#include "../compiler/ast.h"
#include "../lib/arena.h"
#include "../lib/diag.h"

struct LexState {
  Arena *arena;
  Diag *diag;
  const SrcFile *file;
  int line, col;
  long offset;      /* bytes consumed so far */
  int slen;         /* length of the last string literal */
  Loc comment_loc;  /* start of an open block comment */
  Entry *root;      /* the parse result */
  int syntax_errors;
};

/* Parse one file; returns its entries (possibly partial after errors). */
Entry *pipe_parse_file(Arena *arena, Diag *diag, const SrcFile *file, int *syntax_errors);

#endif
