/* value.c — evaluating expressions to Values, and typed reads of them.
 *
 * Arithmetic is exact on int64 (overflow is an error, never wraps), floats
 * are doubles; int / int gives an int when it divides exactly. Lists concat
 * with + and repeat with *, so LiBai's `[0]*6 + [1]*7` works. A name that
 * no scope binds evaluates to a symbol (BEGINNING, gelu_tanh, 1f1b, auto);
 * whoever reads it decides whether that symbol is allowed.
 */
#include <math.h>
#include <string.h>

#include "compiler/sema.h"

enum { MAX_LIST = 1 << 20 };

Value *value_new(Sema *S, ValueKind k, Loc loc) {
  Value *v = arena_alloc(S->A, sizeof *v);
  v->kind = k;
  v->loc = loc;
  return v;
}

const char *value_kind_name(const Value *v) {
  switch (v->kind) {
  case V_INT: return "an integer";
  case V_FLOAT: return "a number";
  case V_BOOL: return "true/false";
  case V_STR: return "a string";
  case V_SYM: return "a name";
  case V_LIST: return "a list";
  case V_TUPLE: return "a tuple";
  case V_CALL: return "a call";
  case V_EVERY: return "an 'every' clause";
  case V_RANGE: return "a range";
  }
  return "a value";
}

void value_print(FILE *out, const Value *v) {
  switch (v->kind) {
  case V_INT: fprintf(out, "%lld", (long long)v->i); break;
  case V_FLOAT: fprintf(out, "%.17g", v->f); break;
  case V_BOOL: fputs(v->i ? "true" : "false", out); break;
  case V_STR:
    fputc('"', out);
    for (int i = 0; i < v->slen; i++) {
      unsigned char c = (unsigned char)v->s[i];
      if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
      else if (c == '\n') fputs("\\n", out);
      else if (c < 0x20 || c == 0x7f) fprintf(out, "\\x%02x", c);
      else fputc(c, out);
    }
    fputc('"', out);
    break;
  case V_SYM: fputs(v->s, out); break;
  case V_LIST:
  case V_TUPLE:
  case V_CALL:
    if (v->kind == V_CALL) fputs(v->s, out);
    fputc(v->kind == V_LIST ? '[' : '(', out);
    for (int i = 0; i < v->n; i++) {
      if (i) fputs(", ", out);
      if (v->keys && v->keys[i]) fprintf(out, "%s = ", v->keys[i]);
      value_print(out, v->items[i]);
    }
    fputc(v->kind == V_LIST ? ']' : ')', out);
    break;
  case V_EVERY:
    value_print(out, v->items[0]);
    fputs(" every ", out);
    value_print(out, v->items[1]);
    break;
  case V_RANGE:
    value_print(out, v->items[0]);
    fputs(" .. ", out);
    value_print(out, v->items[1]);
    break;
  }
}

Binding *scope_find(Scope *sc, const char *name) {
  for (; sc; sc = sc->parent)
    for (Binding *b = sc->vals; b; b = b->next)
      if (!strcmp(b->name, name)) return b;
  return NULL;
}

void scope_bind(Sema *S, Scope *sc, const char *name, Value *v, Loc loc, int is_param) {
  Binding *b = arena_alloc(S->A, sizeof *b);
  b->name = name;
  b->v = v;
  b->loc = loc;
  b->is_param = is_param;
  b->next = sc->vals;
  sc->vals = b;
}

void sema_unknown_name(Sema *S, const Value *sym, Scope *sc, const char *const *extra, int nextra) {
  PtrVec c = {0};
  for (Scope *s = sc; s; s = s->parent)
    for (Binding *b = s->vals; b; b = b->next) ptrvec_push(S->A, &c, (void *)b->name);
  for (int i = 0; i < nextra; i++) ptrvec_push(S->A, &c, (void *)extra[i]);
  diag_error(S->D, sym->loc, "unknown name '%s'%s", sym->s, suggest(sym->s, (const char *const *)c.items, c.len));
}

static Value *num_result(Sema *S, Loc loc, double f) {
  Value *r = value_new(S, V_FLOAT, loc);
  r->f = f;
  if (!isfinite(f)) {
    diag_error(S->D, loc, "arithmetic result is not a finite number");
    return NULL;
  }
  return r;
}

static Value *binop(Sema *S, const Node *n, Value *a, Value *b, Scope *sc) {
  Loc loc = n->loc;
  int op = n->op;
  if (op == 'R') {
    Value *r = value_new(S, V_RANGE, a->loc);
    r->items = arena_alloc(S->A, 2 * sizeof(Value *));
    r->items[0] = a, r->items[1] = b, r->n = 2;
    return r;
  }
  /* A name nobody bound, used in arithmetic, is almost surely a typo. */
  if (a->kind == V_SYM || b->kind == V_SYM) {
    sema_unknown_name(S, a->kind == V_SYM ? a : b, sc, NULL, 0);
    return NULL;
  }
  if (a->kind == V_INT && b->kind == V_INT) {
    int64_t x = a->i, y = b->i, r = 0;
    int ovf = 0;
    switch (op) {
    case '+': ovf = __builtin_add_overflow(x, y, &r); break;
    case '-': ovf = __builtin_sub_overflow(x, y, &r); break;
    case '*': ovf = __builtin_mul_overflow(x, y, &r); break;
    case '/':
    case '%':
      if (y == 0) {
        diag_error(S->D, loc, "division by zero");
        return NULL;
      }
      if (x == INT64_MIN && y == -1) { ovf = 1; break; }
      if (op == '%') { r = x % y; break; }
      if (x % y) return num_result(S, loc, (double)x / (double)y);
      r = x / y;
      break;
    }
    if (ovf) {
      diag_error(S->D, loc, "integer overflow: %lld %c %lld does not fit in 64 bits", (long long)x, op, (long long)y);
      return NULL;
    }
    Value *v = value_new(S, V_INT, a->loc);
    v->i = r;
    return v;
  }
  int an = a->kind == V_INT || a->kind == V_FLOAT, bn = b->kind == V_INT || b->kind == V_FLOAT;
  if (an && bn) {
    double x = a->kind == V_INT ? (double)a->i : a->f, y = b->kind == V_INT ? (double)b->i : b->f;
    switch (op) {
    case '+': return num_result(S, a->loc, x + y);
    case '-': return num_result(S, a->loc, x - y);
    case '*': return num_result(S, a->loc, x * y);
    case '/':
      if (y == 0) {
        diag_error(S->D, loc, "division by zero");
        return NULL;
      }
      return num_result(S, a->loc, x / y);
    case '%':
      diag_error(S->D, loc, "'%%' needs two integers");
      return NULL;
    }
  }
  if (op == '+' && a->kind == b->kind && (a->kind == V_LIST || a->kind == V_STR)) {
    Value *v = value_new(S, a->kind, a->loc);
    if (a->kind == V_STR) {
      char *s = arena_alloc(S->A, (size_t)a->slen + (size_t)b->slen + 1);
      memcpy(s, a->s, (size_t)a->slen);
      memcpy(s + a->slen, b->s, (size_t)b->slen);
      v->s = s, v->slen = a->slen + b->slen;
      return v;
    }
    if ((int64_t)a->n + b->n > MAX_LIST) {
      diag_error(S->D, loc, "list is too long (over %d elements)", MAX_LIST);
      return NULL;
    }
    v->n = a->n + b->n;
    v->items = arena_alloc(S->A, sizeof(Value *) * (size_t)(v->n + 1));
    memcpy(v->items, a->items, sizeof(Value *) * (size_t)a->n);
    memcpy(v->items + a->n, b->items, sizeof(Value *) * (size_t)b->n);
    return v;
  }
  if (op == '*' && ((a->kind == V_LIST && b->kind == V_INT) || (a->kind == V_INT && b->kind == V_LIST))) {
    const Value *l = a->kind == V_LIST ? a : b;
    int64_t k = a->kind == V_INT ? a->i : b->i;
    if (k < 0 || (l->n && k > MAX_LIST / l->n)) {
      diag_error(S->D, loc, k < 0 ? "cannot repeat a list a negative number of times" : "list is too long (over %d elements)", MAX_LIST);
      return NULL;
    }
    Value *v = value_new(S, V_LIST, l->loc);
    v->n = (int)(l->n * k);
    v->items = arena_alloc(S->A, sizeof(Value *) * (size_t)(v->n + 1));
    for (int64_t r = 0; r < k; r++) memcpy(v->items + r * l->n, l->items, sizeof(Value *) * (size_t)l->n);
    return v;
  }
  diag_error(S->D, loc, "cannot apply '%c' to %s and %s", op, value_kind_name(a), value_kind_name(b));
  return NULL;
}

static Value **eval_list(Sema *S, const Node *kids, Scope *sc, int *n, const char ***keys, Loc **klocs, int *ok) {
  int k = node_count(kids);
  Value **items = arena_alloc(S->A, sizeof(Value *) * (size_t)(k + 1));
  const char **ks = keys ? arena_alloc(S->A, sizeof(char *) * (size_t)(k + 1)) : NULL;
  Loc *kl = keys ? arena_alloc(S->A, sizeof(Loc) * (size_t)(k + 1)) : NULL;
  int i = 0;
  for (const Node *c = kids; c; c = c->next, i++) {
    const Node *e = c;
    if (c->kind == N_KWARG) {
      if (ks) {
        for (int j = 0; j < i; j++)
          if (ks[j] && !strcmp(ks[j], c->str)) {
            diag_error(S->D, c->loc, "argument '%s' is given twice", c->str);
            *ok = 0;
          }
        ks[i] = c->str;
        kl[i] = c->loc;
      }
      e = c->a;
    } else if (ks) {
      for (int j = 0; j < i; j++)
        if (ks[j]) {
          diag_error(S->D, c->loc, "positional argument after keyword argument '%s'; put positional arguments first", ks[j]);
          *ok = 0;
          break;
        }
    }
    items[i] = sema_eval(S, e, sc);
    if (!items[i]) *ok = 0;
  }
  *n = k;
  if (keys) *keys = ks, *klocs = kl;
  return items;
}

Value *sema_eval(Sema *S, const Node *n, Scope *sc) {
  if (!n) return NULL;
  Value *v;
  switch (n->kind) {
  case N_INT:
    v = value_new(S, V_INT, n->loc);
    v->i = n->ival;
    return v;
  case N_FLOAT:
    v = value_new(S, V_FLOAT, n->loc);
    v->f = n->fval;
    return v;
  case N_BOOL:
    v = value_new(S, V_BOOL, n->loc);
    v->i = n->ival;
    return v;
  case N_STR:
    v = value_new(S, V_STR, n->loc);
    v->s = n->str, v->slen = n->slen;
    return v;
  case N_NAME: {
    Binding *b = scope_find(sc, n->str);
    if (b && !b->v) return NULL; /* its definition failed and was reported */
    if (b) {
      v = value_new(S, b->v->kind, n->loc);
      Loc at = v->loc;
      *v = *b->v;
      v->loc = at;
      return v;
    }
    v = value_new(S, V_SYM, n->loc);
    v->s = n->str;
    return v;
  }
  case N_LIST:
  case N_TUPLE:
  case N_CALL: {
    int ok = 1;
    v = value_new(S, n->kind == N_LIST ? V_LIST : n->kind == N_TUPLE ? V_TUPLE : V_CALL, n->loc);
    v->s = n->str;
    v->items = eval_list(S, n->kids, sc, &v->n, n->kind == N_CALL ? &v->keys : NULL, &v->key_locs, &ok);
    return ok ? v : NULL;
  }
  case N_KWARG:
    diag_error(S->D, n->loc, "'%s = ...' is only allowed inside a call's arguments", n->str);
    return NULL;
  case N_NEG: {
    Value *a = sema_eval(S, n->a, sc);
    if (!a) return NULL;
    if (a->kind == V_INT) {
      if (a->i == INT64_MIN) {
        diag_error(S->D, n->loc, "integer overflow in negation");
        return NULL;
      }
      v = value_new(S, V_INT, n->loc);
      v->i = -a->i;
      return v;
    }
    if (a->kind == V_FLOAT) {
      v = value_new(S, V_FLOAT, n->loc);
      v->f = -a->f;
      return v;
    }
    if (a->kind == V_SYM) sema_unknown_name(S, a, sc, NULL, 0);
    else diag_error(S->D, n->loc, "cannot negate %s", value_kind_name(a));
    return NULL;
  }
  case N_BINOP: {
    Value *a = sema_eval(S, n->a, sc), *b = sema_eval(S, n->b, sc);
    if (!a || !b) return NULL;
    return binop(S, n, a, b, sc);
  }
  case N_EVERY: {
    Value *a = sema_eval(S, n->a, sc), *b = sema_eval(S, n->b, sc);
    if (!a || !b) return NULL;
    v = value_new(S, V_EVERY, a->loc);
    v->items = arena_alloc(S->A, 2 * sizeof(Value *));
    v->items[0] = a, v->items[1] = b, v->n = 2;
    return v;
  }
  case N_REPEAT:
    diag_error(S->D, n->loc, "'[count] module(...)' repeats a module and is only allowed as a module declaration in a model or block");
    return NULL;
  }
  return NULL;
}

/* ---- typed reads ---- */

int want_int(Sema *S, const Value *v, const char *what, int64_t min, int64_t max, int64_t *out, Scope *sc) {
  if (!v) return 0;
  int64_t x;
  if (v->kind == V_INT) x = v->i;
  else if (v->kind == V_FLOAT && v->f == floor(v->f) && fabs(v->f) <= 9007199254740992.0) x = (int64_t)v->f;
  else if (v->kind == V_SYM && sc) {
    sema_unknown_name(S, v, sc, NULL, 0);
    return 0;
  } else {
    diag_error(S->D, v->loc, "%s must be an integer, not %s", what, value_kind_name(v));
    return 0;
  }
  if (x < min) {
    if (min == 1)
      diag_error(S->D, v->loc, "%s must be at least 1, got %lld", what, (long long)x);
    else
      diag_error(S->D, v->loc, "%s must be at least %lld, got %lld", what, (long long)min, (long long)x);
    return 0;
  }
  if (x > max) {
    diag_error(S->D, v->loc, "%s must be at most %lld, got %lld", what, (long long)max, (long long)x);
    return 0;
  }
  *out = x;
  return 1;
}

int want_float(Sema *S, const Value *v, const char *what, double min, double max, int min_open, double *out, Scope *sc) {
  if (!v) return 0;
  double x;
  if (v->kind == V_INT) x = (double)v->i;
  else if (v->kind == V_FLOAT) x = v->f;
  else if (v->kind == V_SYM && sc) {
    sema_unknown_name(S, v, sc, NULL, 0);
    return 0;
  } else {
    diag_error(S->D, v->loc, "%s must be a number, not %s", what, value_kind_name(v));
    return 0;
  }
  if (min_open ? !(x > min) : !(x >= min)) {
    diag_error(S->D, v->loc, "%s must be %s %g, got %g", what, min_open ? "greater than" : "at least", min, x);
    return 0;
  }
  if (!(x <= max)) {
    diag_error(S->D, v->loc, "%s must be at most %g, got %g", what, max, x);
    return 0;
  }
  *out = x;
  return 1;
}

int want_bool(Sema *S, const Value *v, const char *what, int *out) {
  if (!v) return 0;
  if (v->kind != V_BOOL) {
    diag_error(S->D, v->loc, "%s must be true or false, not %s", what, value_kind_name(v));
    return 0;
  }
  *out = (int)v->i;
  return 1;
}

int want_str(Sema *S, const Value *v, const char *what, const char **out) {
  if (!v) return 0;
  if (v->kind != V_STR) {
    diag_error(S->D, v->loc, "%s must be a string in quotes, not %s", what, value_kind_name(v));
    return 0;
  }
  if ((int)strlen(v->s) != v->slen) {
    diag_error(S->D, v->loc, "%s must not contain a NUL character", what);
    return 0;
  }
  *out = v->s;
  return 1;
}

int want_sym(Sema *S, const Value *v, const char *what, const char *const *choices, int n, const char **out) {
  if (!v) return 0;
  char list[512] = "";
  for (int i = 0; i < n; i++) {
    if (i) strncat(list, i == n - 1 ? " or " : ", ", sizeof list - strlen(list) - 1);
    strncat(list, choices[i], sizeof list - strlen(list) - 1);
  }
  if (v->kind != V_SYM) {
    diag_error(S->D, v->loc, "%s must be one of %s, not %s", what, list, value_kind_name(v));
    return 0;
  }
  for (int i = 0; i < n; i++)
    if (!strcmp(v->s, choices[i])) {
      *out = choices[i];
      return 1;
    }
  const char *dym = did_you_mean(v->s, choices, n);
  if (dym)
    diag_error(S->D, v->loc, "unknown %s '%s'; did you mean '%s'?", what, v->s, dym);
  else
    diag_error(S->D, v->loc, "unknown %s '%s'; expected %s", what, v->s, list);
  return 0;
}
