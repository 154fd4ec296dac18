/* ast.h — the syntax tree of a .pipe file, as the parser leaves it.
 *
 * Contract: the grammar (grammar/pipe.y) builds only these structures and
 * decides nothing about meaning; compiler/check.c gives them meaning. Every
 * node keeps the source location of its first token so any later pass can
 * point at it. Lists are linked through `next`. All memory is in the
 * compilation's arena.
 *
 * A file is a list of entries. An entry is one of
 *   import "nn"                          E_IMPORT   (str)
 *   block NAME(params) { entries }       E_BLOCK    (name, params, body)
 *   model NAME { entries }               E_MODEL    (name, body)
 *   forward(params) { entries }          E_FORWARD  (params, body)
 *   return EXPR                          E_RETURN   (value)
 *   KEY = EXPR                           E_ASSIGN   (name, value)
 *   KEY: EXPR   (KEY a name or integer)  E_LABEL    (name, value)
 *   NAME { entries }                     E_SECTION  (name, body)
 *   NAME LABEL { entries }               E_SECTION  (name, label, body)
 */
#ifndef PIPEC_AST_H
#define PIPEC_AST_H
#include <stdint.h>

#include "../lib/diag.h"

typedef enum {
  N_INT,    /* ival */
  N_FLOAT,  /* fval */
  N_STR,    /* str (escapes already decoded), slen */
  N_BOOL,   /* ival 0/1 */
  N_NAME,   /* str: identifier, possibly dotted (layers.4.attn) */
  N_LIST,   /* [a, b, ...]: kids */
  N_TUPLE,  /* (a, b, ...): kids */
  N_CALL,   /* str(kids...): callee name; keyword args are N_KWARG kids */
  N_KWARG,  /* str = a */
  N_BINOP,  /* a op b, op one of + - * / % and 'R' for `..` */
  N_NEG,    /* -a */
  N_REPEAT, /* [a] b: a module repeated a times, b an N_CALL */
  N_EVERY,  /* a every b (save = "ckpt/" every 250) */
} NodeKind;

typedef struct Node {
  NodeKind kind;
  Loc loc;
  int op;
  int64_t ival;
  double fval;
  const char *str;
  int slen;
  struct Node *a, *b;
  struct Node *kids; /* first child; siblings through next */
  struct Node *next;
} Node;

typedef struct Param {
  const char *name;
  Loc loc;
  Node *dflt; /* NULL when required */
  struct Param *next;
} Param;

typedef enum { E_IMPORT, E_BLOCK, E_MODEL, E_FORWARD, E_RETURN, E_ASSIGN, E_LABEL, E_SECTION } EntryKind;

typedef struct Entry {
  EntryKind kind;
  Loc loc;        /* of the first token */
  Loc name_loc;   /* of the key / name */
  const char *name;
  const char *label;  /* E_SECTION with a label: template small { } */
  Loc label_loc;
  int key_is_int;     /* E_LABEL keyed by an integer: 0: [...] */
  Node *value;
  Param *params;
  struct Entry *body;
  Loc end_loc;        /* closing brace of a body */
  struct Entry *next;
} Entry;

int node_count(const Node *n);
int entry_count(const Entry *e);
int param_count(const Param *p);

#endif
