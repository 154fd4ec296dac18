/* pipe.y — grammar of the .pipe language (bison, pure, LALR(1)).
 *
 * The grammar builds the tree of compiler/ast.h and nothing else; meaning
 * (which keys a section takes, what a name refers to) is compiler/check.c's.
 * Each rule's grammar line is written as a comment above its action.
 */
%define api.pure full
%define api.prefix {pipe_yy}
%define api.location.type {Loc}
%define parse.error custom
%define parse.lac full
%locations
%param {void *scanner}
%parse-param {struct LexState *ls}

%code requires {
#include <stdint.h>
#include "../compiler/ast.h"
struct LexState;
typedef struct { Entry *head, *tail; } EntryList;
typedef struct { Node *head, *tail; } NodeList;
typedef struct { Param *head, *tail; } ParamList;
}

%code provides {
int pipe_yylex(PIPE_YYSTYPE *lval, Loc *lloc, void *scanner);
}

%code {
#include <string.h>
#include "lexstate.h"
#ifndef YYSTYPE
#define YYSTYPE PIPE_YYSTYPE
#endif
#ifndef YYLTYPE
#define YYLTYPE Loc
#endif
#include "pipe.lex.h"

#define YYLLOC_DEFAULT(Cur, Rhs, N)                 \
  do {                                              \
    if (N) (Cur) = loc_span(YYRHSLOC(Rhs, 1), YYRHSLOC(Rhs, N)); \
    else { (Cur) = YYRHSLOC(Rhs, 0); (Cur).len = 1; } \
  } while (0)

static Node *mk(struct LexState *ls, NodeKind k, Loc loc) {
  Node *n = arena_alloc(ls->arena, sizeof *n);
  n->kind = k;
  n->loc = loc;
  return n;
}
static Node *bin(struct LexState *ls, int op, Node *a, Node *b, Loc oploc) {
  Node *n = mk(ls, N_BINOP, oploc);
  n->op = op, n->a = a, n->b = b;
  return n;
}
static Entry *ent(struct LexState *ls, EntryKind k, Loc loc) {
  Entry *e = arena_alloc(ls->arena, sizeof *e);
  e->kind = k;
  e->loc = loc;
  e->name_loc = loc;
  return e;
}
static NodeList nl1(Node *n) { NodeList l = {n, n}; return l; }
static NodeList nladd(NodeList l, Node *n) {
  if (!l.head) return nl1(n);
  l.tail->next = n;
  l.tail = n;
  return l;
}
static void pipe_yyerror(Loc *loc, void *scanner, struct LexState *ls, const char *msg) {
  (void)scanner;
  diag_error(ls->diag, *loc, "%s", msg);
  ls->syntax_errors++;
}
}

%union {
  int64_t ival;
  double fval;
  const char *str;
  Node *node;
  NodeList nodes;
  Entry *entry;
  EntryList entries;
  Param *param;
  ParamList params;
}

%token <str> NAME "name" CALLNAME "call" STRING "string"
%token <ival> INT "integer"
%token <fval> FLOAT "number"
%token IMPORT "'import'" BLOCK "'block'" MODEL "'model'" FORWARD "'forward'"
%token RETURN "'return'" TRUE "'true'" FALSE "'false'" EVERY "'every'" DOTDOT "'..'"

%type <entries> entries
%type <entry> entry
%type <node> expr primary call
%type <nodes> exprs args arglist
%type <node> arg
%type <params> params paramlist
%type <param> param

%left EVERY
%nonassoc DOTDOT
%left '+' '-'
%left '*' '/' '%'
%precedence NEG

%%

/* file: entries */
file: entries { ls->root = $1.head; }
    ;

/* entries: { entry } */
entries: %empty          { $$.head = $$.tail = NULL; }
       | entries entry   { $$ = $1; if (!$$.head) $$.head = $2; else $$.tail->next = $2; $$.tail = $2; }
       | entries error   { $$ = $1; }
       ;

entry:
  /* entry: 'import' STRING */
    IMPORT STRING                              { $$ = ent(ls, E_IMPORT, @1); $$->name = $2; $$->name_loc = @2; }
  /* entry: 'block' NAME '(' params ')' '{' entries '}' */
  | BLOCK CALLNAME '(' params ')' '{' entries '}'
                                               { $$ = ent(ls, E_BLOCK, @1); $$->name = $2; $$->name_loc = @2;
                                                 $$->params = $4.head; $$->body = $7.head; $$->end_loc = @8; }
  /* entry: 'model' NAME '{' entries '}' */
  | MODEL NAME '{' entries '}'                 { $$ = ent(ls, E_MODEL, @1); $$->name = $2; $$->name_loc = @2;
                                                 $$->body = $4.head; $$->end_loc = @5; }
  /* entry: 'forward' '(' params ')' '{' entries '}' */
  | FORWARD '(' params ')' '{' entries '}'     { $$ = ent(ls, E_FORWARD, @1); $$->name = "forward";
                                                 $$->params = $3.head; $$->body = $6.head; $$->end_loc = @7; }
  /* entry: 'return' expr */
  | RETURN expr                                { $$ = ent(ls, E_RETURN, @1); $$->value = $2; }
  /* entry: NAME '=' expr */
  | NAME '=' expr                              { $$ = ent(ls, E_ASSIGN, @1); $$->name = $1; $$->value = $3; }
  /* entry: NAME ':' expr */
  | NAME ':' expr                              { $$ = ent(ls, E_LABEL, @1); $$->name = $1; $$->value = $3; }
  /* entry: INT ':' expr */
  | INT ':' expr                               { $$ = ent(ls, E_LABEL, @1); $$->key_is_int = 1;
                                                 $$->name = arena_printf(ls->arena, "%lld", (long long)$1); $$->value = $3; }
  /* entry: NAME '{' entries '}' */
  | NAME '{' entries '}'                       { $$ = ent(ls, E_SECTION, @1); $$->name = $1; $$->body = $3.head; $$->end_loc = @4; }
  /* entry: NAME NAME '{' entries '}' */
  | NAME NAME '{' entries '}'                  { $$ = ent(ls, E_SECTION, @1); $$->name = $1; $$->label = $2; $$->label_loc = @2;
                                                 $$->body = $4.head; $$->end_loc = @5; }
  ;

/* params: [ param { ',' param } [','] ] */
params: %empty               { $$.head = $$.tail = NULL; }
      | paramlist            { $$ = $1; }
      | paramlist ','        { $$ = $1; }
      ;
paramlist: param             { $$.head = $$.tail = $1; }
         | paramlist ',' param { $$ = $1; $$.tail->next = $3; $$.tail = $3; }
         ;
/* param: NAME [ '=' expr ] */
param: NAME                  { $$ = arena_alloc(ls->arena, sizeof(Param)); $$->name = $1; $$->loc = @1; }
     | NAME '=' expr         { $$ = arena_alloc(ls->arena, sizeof(Param)); $$->name = $1; $$->loc = @1; $$->dflt = $3; }
     ;

expr:
  /* expr: expr 'every' expr */
    expr EVERY expr          { $$ = mk(ls, N_EVERY, @2); $$->a = $1; $$->b = $3; }
  /* expr: expr '..' expr */
  | expr DOTDOT expr         { $$ = bin(ls, 'R', $1, $3, @2); }
  /* expr: expr ('+' | '-' | '*' | '/' | '%') expr */
  | expr '+' expr            { $$ = bin(ls, '+', $1, $3, @2); }
  | expr '-' expr            { $$ = bin(ls, '-', $1, $3, @2); }
  | expr '*' expr            { $$ = bin(ls, '*', $1, $3, @2); }
  | expr '/' expr            { $$ = bin(ls, '/', $1, $3, @2); }
  | expr '%' expr            { $$ = bin(ls, '%', $1, $3, @2); }
  /* expr: '-' expr */
  | '-' expr %prec NEG       { $$ = mk(ls, N_NEG, @1); $$->a = $2; }
  | primary                  { $$ = $1; }
  ;

primary:
  /* primary: INT | FLOAT | STRING | 'true' | 'false' | NAME */
    INT                      { $$ = mk(ls, N_INT, @1); $$->ival = $1; }
  | FLOAT                    { $$ = mk(ls, N_FLOAT, @1); $$->fval = $1; }
  | STRING                   { $$ = mk(ls, N_STR, @1); $$->str = $1; $$->slen = ls->slen; }
  | TRUE                     { $$ = mk(ls, N_BOOL, @1); $$->ival = 1; }
  | FALSE                    { $$ = mk(ls, N_BOOL, @1); $$->ival = 0; }
  | NAME                     { $$ = mk(ls, N_NAME, @1); $$->str = $1; }
  /* primary: call */
  | call                     { $$ = $1; }
  /* primary: '[' expr ']' call          -- a module repeated expr times */
  | '[' expr ']' call        { $$ = mk(ls, N_REPEAT, @1); $$->a = $2; $$->b = $4; }
  /* primary: '[' ']' | '[' expr ']' | '[' exprs [','] ']' */
  | '[' ']'                  { $$ = mk(ls, N_LIST, @1); }
  | '[' expr ']'             { $$ = mk(ls, N_LIST, @1); $$->kids = $2; }
  | '[' expr ',' ']'         { $$ = mk(ls, N_LIST, @1); $$->kids = $2; }
  | '[' expr ',' exprs ']'   { $$ = mk(ls, N_LIST, @1); $2->next = $4.head; $$->kids = $2; }
  | '[' expr ',' exprs ',' ']' { $$ = mk(ls, N_LIST, @1); $2->next = $4.head; $$->kids = $2; }
  /* primary: '(' expr ')' | '(' expr ',' [ exprs ] [','] ')'   -- a tuple */
  | '(' expr ')'             { $$ = $2; }
  | '(' expr ',' ')'         { $$ = mk(ls, N_TUPLE, @1); $$->kids = $2; }
  | '(' expr ',' exprs ')'   { $$ = mk(ls, N_TUPLE, @1); $2->next = $4.head; $$->kids = $2; }
  | '(' expr ',' exprs ',' ')' { $$ = mk(ls, N_TUPLE, @1); $2->next = $4.head; $$->kids = $2; }
  ;

/* call: CALLNAME '(' [ arg { ',' arg } [','] ] ')' */
call: CALLNAME '(' args ')'  { $$ = mk(ls, N_CALL, @1); $$->str = $1; $$->kids = $3.head; }
    ;

exprs: expr                  { $$ = nl1($1); }
     | exprs ',' expr        { $$ = nladd($1, $3); }
     ;

args: %empty                 { $$.head = $$.tail = NULL; }
    | arglist                { $$ = $1; }
    | arglist ','            { $$ = $1; }
    ;
arglist: arg                 { $$ = nl1($1); }
       | arglist ',' arg     { $$ = nladd($1, $3); }
       ;
/* arg: expr | NAME '=' expr */
arg: expr                    { $$ = $1; }
   | NAME '=' expr           { $$ = mk(ls, N_KWARG, @1); $$->str = $1; $$->a = $3; }
   ;

%%

static int is_operator(yysymbol_kind_t t) {
  const char *nm = yysymbol_name(t);
  return t == YYSYMBOL_EVERY || t == YYSYMBOL_DOTDOT || !strcmp(nm, "'+'") || !strcmp(nm, "'-'") || !strcmp(nm, "'*'") ||
         !strcmp(nm, "'/'") || !strcmp(nm, "'%'");
}

/* Human names for what the parser wanted, e.g. "expected an expression". */
static int yyreport_syntax_error(const yypcontext_t *ctx, void *scanner, struct LexState *ls) {
  (void)scanner;
  enum { MAXE = 40 };
  yysymbol_kind_t exp[MAXE];
  int n = yypcontext_expected_tokens(ctx, exp, MAXE);
  yysymbol_kind_t got = yypcontext_token(ctx);
  Loc loc = *yypcontext_location(ctx);
  char want[256] = "";
  int expr_start = 0, entry_start = 0, brace = 0, k = 0;
  for (int i = 0; i < n; i++) {
    const char *nm = yysymbol_name(exp[i]);
    expr_start |= exp[i] == YYSYMBOL_INT;
    entry_start |= exp[i] == YYSYMBOL_IMPORT;
    brace |= !strcmp(nm, "'}'");
  }
  if (entry_start)
    snprintf(want, sizeof want, "expected a setting such as 'name = value'%s", brace ? " or '}'" : "");
  else if (expr_start)
    snprintf(want, sizeof want, "expected an expression");
  else {
    /* operators could always continue an expression; name them only when
       nothing else would do */
    int others = 0;
    for (int i = 0; i < n; i++) others += !is_operator(exp[i]) && exp[i] != YYSYMBOL_CALLNAME;
    strcpy(want, "expected ");
    for (int i = 0; i < n; i++) {
      if (exp[i] == YYSYMBOL_CALLNAME || (others && is_operator(exp[i]))) continue;
      int more = 0;
      for (int j = i + 1; j < n; j++) more |= exp[j] != YYSYMBOL_CALLNAME && !(others && is_operator(exp[j]));
      if (k++) strncat(want, more ? ", " : " or ", sizeof want - strlen(want) - 1);
      strncat(want, yysymbol_name(exp[i]), sizeof want - strlen(want) - 1);
    }
  }
  if (!entry_start && !expr_start && k == 0) snprintf(want, sizeof want, "this is not allowed here");
  const char *g = got == YYSYMBOL_YYEOF ? "end of file" : yysymbol_name(got);
  if (got == YYSYMBOL_CALLNAME) g = "name";
  diag_error(ls->diag, loc, "unexpected %s; %s", g, want);
  ls->syntax_errors++;
  return 0;
}

Entry *pipe_parse_file(Arena *arena, Diag *diag, const SrcFile *file, int *syntax_errors) {
  struct LexState ls = {.arena = arena, .diag = diag, .file = file, .line = 1, .col = 1};
  void *scanner;
  pipe_yylex_init_extra(&ls, &scanner);
  void *buf = pipe_yy_scan_bytes(file->text, (int)file->len, scanner);
  int before = diag->errors;
  pipe_yyparse(scanner, &ls);
  pipe_yy_delete_buffer(buf, scanner);
  pipe_yylex_destroy(scanner);
  *syntax_errors = diag->errors - before; /* lexical and syntax errors */
  return ls.root;
}
