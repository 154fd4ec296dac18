/* sema.h — internals shared by the checking passes (value.c, check.c,
 * placement.c). Not part of the front end's contract: see frontend.h. */
#ifndef PIPEC_SEMA_H
#define PIPEC_SEMA_H
#include "compiler/frontend.h"

/* Names visible while evaluating an expression: hyper-parameters and block
 * parameters (values), innermost scope first. */
typedef struct Binding {
  const char *name;
  Value *v;
  Loc loc;
  int is_param;
  struct Binding *next;
} Binding;

typedef struct Scope {
  Binding *vals;
  struct Scope *parent;
} Scope;

typedef struct Sema {
  Arena *A;
  Diag *D;
  Program *P;
  const FrontendOptions *opt;
  PtrVec blocks;      /* BlockDef* from every loaded file */
  PtrVec top;         /* Entry* top-level entries other than blocks/imports, all files */
  const Entry *model;
  Scope *model_scope;
  int budget;         /* module instances left before "model too large" */
  int depth;          /* block nesting, to catch a block that uses itself */
  PtrVec reported;    /* Loc* of declarations already reported (dedupe per layer) */
} Sema;

/* value.c */
Value *sema_eval(Sema *S, const Node *n, Scope *sc);
Value *value_new(Sema *S, ValueKind k, Loc loc);
const char *value_kind_name(const Value *v);
void value_print(FILE *out, const Value *v);
Binding *scope_find(Scope *sc, const char *name);
void scope_bind(Sema *S, Scope *sc, const char *name, Value *v, Loc loc, int is_param);
/* Report an unbound name with the closest visible name as a suggestion. */
void sema_unknown_name(Sema *S, const Value *sym, Scope *sc, const char *const *extra, int nextra);
/* Typed reads; each reports its own error (naming `what`) and returns 0 on failure. */
int want_int(Sema *S, const Value *v, const char *what, int64_t min, int64_t max, int64_t *out, Scope *sc);
int want_float(Sema *S, const Value *v, const char *what, double min, double max, int min_open, double *out, Scope *sc);
int want_bool(Sema *S, const Value *v, const char *what, int *out);
int want_str(Sema *S, const Value *v, const char *what, const char **out);
int want_sym(Sema *S, const Value *v, const char *what, const char *const *choices, int n, const char **out);

/* check.c */
int sema_is_prim(const char *name);
const BlockDef *sema_find_block(Sema *S, const char *name);
void sema_check_model(Sema *S);
int sema_reported_once(Sema *S, Loc loc);

/* placement.c */
void sema_check_sections(Sema *S);

#endif
