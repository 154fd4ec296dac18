/* check.c — blocks and the model: declarations, sizes, forward bodies.
 *
 * A model or block body holds `name = value` hyper-parameters, `name =
 * kind(args)` module declarations, `name = [count] kind(args)` repeated
 * modules, and at most one forward(...) { ... }. Values and modules live in
 * two namespaces, so GPT-2's block can have both a parameter `mlp` (the
 * hidden width) and a sub-module `mlp` (named as in Hugging Face's files).
 * A body without forward applies its modules in order; the model's default
 * forward sums its leading embeddings (tokens, then positions) and applies
 * the rest in order, the loss last.
 */
#include <string.h>

#include "compiler/sema.h"

enum { MAX_MODULES = 200000, MAX_REPEAT = 100000, MAX_DEPTH = 24 };

/* ---- primitives ---- */

typedef struct PrimSpec {
  const char *name;
  PrimKind kind;
  int nreq;                 /* leading required parameters */
  const char *params[7];
} PrimSpec;

static const PrimSpec prims[] = {
  {"embedding", PRIM_EMBEDDING, 2, {"num", "dim"}},
  {"linear", PRIM_LINEAR, 2, {"in", "out", "bias", "tie"}},
  {"layernorm", PRIM_LAYERNORM, 1, {"dim", "eps", "bias"}},
  {"rmsnorm", PRIM_RMSNORM, 1, {"dim", "eps"}},
  {"attention", PRIM_ATTENTION, 2, {"dim", "heads", "causal", "bias", "dropout", "kv_heads"}},
  {"dropout", PRIM_DROPOUT, 0, {"p"}},
  {"gelu", PRIM_ACTIVATION, 0, {0}},
  {"gelu_tanh", PRIM_ACTIVATION, 0, {0}},
  {"relu", PRIM_ACTIVATION, 0, {0}},
  {"silu", PRIM_ACTIVATION, 0, {0}},
  {"cross_entropy", PRIM_CROSS_ENTROPY, 0, {"ignore_index", "label_smoothing"}},
};
enum { NPRIMS = sizeof prims / sizeof prims[0] };

/* Operations a forward body may call directly, with their tensor arity. */
static const struct { const char *name; int arity; } fops[] = {
  {"gelu", 1}, {"gelu_tanh", 1}, {"relu", 1}, {"silu", 1}, {"softmax", 1},
  {"add", 2}, {"mul", 2}, {"dropout", 2}, {"positions", 1},
};
enum { NFOPS = sizeof fops / sizeof fops[0] };

static const PrimSpec *find_prim(const char *name) {
  for (int i = 0; i < NPRIMS; i++)
    if (!strcmp(prims[i].name, name)) return &prims[i];
  return NULL;
}
int sema_is_prim(const char *name) { return find_prim(name) != NULL; }

static int find_fop(const char *name) {
  for (int i = 0; i < NFOPS; i++)
    if (!strcmp(fops[i].name, name)) return i;
  return -1;
}

const BlockDef *sema_find_block(Sema *S, const char *name) {
  for (int i = 0; i < S->blocks.len; i++) {
    const BlockDef *b = S->blocks.items[i];
    if (!strcmp(b->name, name)) return b;
  }
  return NULL;
}

int sema_reported_once(Sema *S, Loc loc) {
  for (int i = 0; i < S->reported.len; i++) {
    const Loc *l = S->reported.items[i];
    if (l->file == loc.file && l->line == loc.line && l->col == loc.col) return 0;
  }
  Loc *l = arena_alloc(S->A, sizeof *l);
  *l = loc;
  ptrvec_push(S->A, &S->reported, l);
  return 1;
}

/* Match a call's arguments to parameter names: positional first, then by
 * keyword. out[i] is NULL for a parameter not given. */
static int bind_call(Sema *S, const Value *call, const char *what, const char *const *names, int np, Value **out) {
  int ok = 1, pos = 0;
  for (int i = 0; i < np; i++) out[i] = NULL;
  for (int i = 0; i < call->n; i++) {
    const char *key = call->keys ? call->keys[i] : NULL;
    if (!key) {
      if (pos >= np) {
        diag_error(S->D, call->items[i]->loc, "%s takes at most %d argument%s, got %d", what, np, np == 1 ? "" : "s", call->n);
        return 0;
      }
      out[pos++] = call->items[i];
      continue;
    }
    int j = 0;
    while (j < np && strcmp(names[j], key)) j++;
    if (j == np) {
      const char *dym = did_you_mean(key, names, np);
      char list[256] = "";
      for (int k = 0; k < np; k++) {
        if (k) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, names[k], sizeof list - strlen(list) - 1);
      }
      Loc kl = call->key_locs ? call->key_locs[i] : call->items[i]->loc;
      if (dym)
        diag_error(S->D, kl, "%s has no parameter '%s'; did you mean '%s'?", what, key, dym);
      else
        diag_error(S->D, kl, "%s has no parameter '%s'%s%s", what, key, np ? "; its parameters are " : "; it takes no arguments", list);
      ok = 0;
      continue;
    }
    if (out[j]) {
      diag_error(S->D, call->key_locs ? call->key_locs[i] : call->items[i]->loc, "%s: parameter '%s' is given twice", what, key);
      ok = 0;
      continue;
    }
    out[j] = call->items[i];
  }
  return ok;
}

static void missing_arg(Sema *S, const Value *call, const char *what, const char *param) {
  diag_error(S->D, call->loc, "%s is missing its argument '%s'", what, param);
}

static Module *instantiate(Sema *S, const char *local, const char *path, const Value *call, Loc decl, const char *group, int gi, Scope *sc);

static void build_prim(Sema *S, Module *m, const PrimSpec *ps, const Value *call, Scope *sc) {
  Value *a[8];
  int np = 0;
  while (np < 7 && ps->params[np]) np++;
  const char *what = arena_printf(S->A, "%s()", ps->name);
  if (!bind_call(S, call, what, ps->params, np, a)) return;
  for (int i = 0; i < ps->nreq; i++)
    if (!a[i]) {
      missing_arg(S, call, what, ps->params[i]);
      return;
    }
  const int64_t BIG = (int64_t)1 << 40;
  m->prim = ps->kind;
  m->bias = 1;
  switch (ps->kind) {
  case PRIM_EMBEDDING:
    want_int(S, a[0], "embedding size", 1, BIG, &m->num, sc);
    want_int(S, a[1], "embedding width", 1, BIG, &m->dim, sc);
    m->nparams = m->num * m->dim;
    break;
  case PRIM_LINEAR:
    want_int(S, a[0], "linear input width", 1, BIG, &m->in, sc);
    want_int(S, a[1], "linear output width", 1, BIG, &m->out, sc);
    if (a[2]) want_bool(S, a[2], "bias", &m->bias);
    if (a[3]) {
      if (a[3]->kind != V_SYM) diag_error(S->D, a[3]->loc, "tie must name a module declared beside this one, as in tie = wte");
      else m->tie_name = a[3]->s, m->tie_loc = a[3]->loc;
    }
    m->nparams = (m->tie_name ? 0 : m->in * m->out) + (m->bias ? m->out : 0);
    break;
  case PRIM_LAYERNORM:
  case PRIM_RMSNORM:
    want_int(S, a[0], "normalized width", 1, BIG, &m->dim, sc);
    m->eps = ps->kind == PRIM_LAYERNORM ? 1e-5 : 1e-6;
    if (a[1]) want_float(S, a[1], "eps", 0, 1, 1, &m->eps, sc);
    if (ps->kind == PRIM_LAYERNORM && a[2]) want_bool(S, a[2], "bias", &m->bias);
    if (ps->kind == PRIM_RMSNORM) m->bias = 0;
    m->nparams = m->dim * (m->bias ? 2 : 1);
    break;
  case PRIM_ATTENTION: {
    int ok = want_int(S, a[0], "attention width", 1, BIG, &m->dim, sc);
    ok &= want_int(S, a[1], "attention heads", 1, BIG, &m->heads, sc);
    m->causal = 1;
    if (a[2]) want_bool(S, a[2], "causal", &m->causal);
    if (a[3]) want_bool(S, a[3], "bias", &m->bias);
    if (a[4]) want_float(S, a[4], "dropout", 0, 0.999999, 0, &m->p, sc);
    m->kv_heads = m->heads;
    if (a[5]) ok &= want_int(S, a[5], "kv_heads", 1, BIG, &m->kv_heads, sc);
    if (!ok) break;
    if (m->dim % m->heads) {
      diag_error(S->D, a[1]->loc, "attention width %lld does not divide into %lld heads; choose heads that divide the width",
                 (long long)m->dim, (long long)m->heads);
      break;
    }
    if (m->heads % m->kv_heads) {
      diag_error(S->D, a[5]->loc, "kv_heads %lld must divide heads %lld", (long long)m->kv_heads, (long long)m->heads);
      break;
    }
    int64_t kv = m->dim / m->heads * m->kv_heads, qkv = m->dim + 2 * kv;
    m->nparams = qkv * m->dim + m->dim * m->dim + (m->bias ? qkv + m->dim : 0);
    break;
  }
  case PRIM_DROPOUT:
    m->p = 0.1;
    if (a[0]) want_float(S, a[0], "dropout probability", 0, 0.999999, 0, &m->p, sc);
    break;
  case PRIM_ACTIVATION:
    m->act = ps->name;
    break;
  case PRIM_CROSS_ENTROPY: {
    int64_t ii = -1;
    if (a[0]) want_int(S, a[0], "ignore_index", INT64_MIN + 1, INT64_MAX, &ii, sc);
    if (a[1]) want_float(S, a[1], "label_smoothing", 0, 1, 0, &m->p, sc);
    m->num = ii;
    break;
  }
  case PRIM_NONE: break;
  }
}

static int is_module_decl(const Node *n) { return n && (n->kind == N_CALL || n->kind == N_REPEAT); }

static Node *mknode(Sema *S, NodeKind k, Loc loc, const char *str) {
  Node *n = arena_alloc(S->A, sizeof *n);
  n->kind = k, n->loc = loc, n->str = str;
  return n;
}
static Node *mkcall(Sema *S, Loc loc, const char *callee, Node *arg0, Node *arg1) {
  Node *c = mknode(S, N_CALL, loc, callee);
  c->kids = arg0;
  if (arg1) arg0->next = arg1;
  return c;
}

static int module_arity(const Module *m) {
  if (m->prim == PRIM_NONE) return m->forward ? param_count(m->forward->params) : 1;
  if (m->prim == PRIM_CROSS_ENTROPY) return 2;
  return 1;
}
static int module_max_arity(const Module *m) {
  return m->prim == PRIM_ATTENTION ? 2 : module_arity(m);
}

/* ---- forward bodies ---- */

typedef struct Fwd {
  Sema *S;
  Module **kids;       /* modules callable here */
  int nkids;
  const char *const *groups; /* model level: group name of each kid (or NULL) */
  int toplevel;
  Scope *vals;         /* hyper-parameters: scalars, and symbols naming ops (act) */
  PtrVec locals;       /* tensor names: params and assigned */
  unsigned char *used;
  int last_called, order_reported;
  const char *tokens;  /* model level: the first forward parameter */
  int *producer;       /* model level: local index -> module index that produced it */
} Fwd;

static int local_index(Fwd *F, const char *name) {
  for (int i = F->locals.len - 1; i >= 0; i--)
    if (!strcmp(F->locals.items[i], name)) return i;
  return -1;
}

/* Finds callable modules named `name`: one kid, or a whole group. */
static int find_kids(Fwd *F, const char *name, int *first, int *last) {
  for (int i = 0; i < F->nkids; i++) {
    const Module *k = F->kids[i];
    const char *g = F->groups ? F->groups[i] : NULL;
    if (!strcmp(k->name, name)) { *first = *last = i; return 1; }
    if (g && !strcmp(g, name)) {
      int j = i;
      while (j + 1 < F->nkids && F->groups[j + 1] && !strcmp(F->groups[j + 1], g)) j++;
      *first = i, *last = j;
      return 1;
    }
  }
  return 0;
}

static void callable_names(Fwd *F, PtrVec *c) {
  for (int i = 0; i < F->nkids; i++) ptrvec_push(F->S->A, c, (void *)(F->groups && F->groups[i] ? F->groups[i] : F->kids[i]->name));
  for (int i = 0; i < NFOPS; i++) ptrvec_push(F->S->A, c, (void *)fops[i].name);
}

static int check_texpr(Fwd *F, const Node *n, int *prod);

/* Returns 1 when the call's output is a tensor (always) and sets *prod to
 * the module index that produced it at the model level (else -1). */
static int check_call(Fwd *F, const Node *n, int *prod) {
  Sema *S = F->S;
  int first, last, nargs = node_count(n->kids);
  *prod = -1;
  for (const Node *a = n->kids; a; a = a->next)
    if (a->kind == N_KWARG) {
      diag_error(S->D, a->loc, "modules and operations in a forward take tensors by position; '%s = ...' is not allowed here", a->str);
      return 0;
    }
  if (find_kids(F, n->str, &first, &last)) {
    Module *m = F->kids[first];
    int lo = module_arity(m), hi = module_max_arity(m);
    if (nargs < lo || nargs > hi) {
      if (lo == hi)
        diag_error(S->D, n->loc, "'%s' takes %d input%s, got %d", n->str, lo, lo == 1 ? "" : "s", nargs);
      else
        diag_error(S->D, n->loc, "'%s' takes %d or %d inputs, got %d", n->str, lo, hi, nargs);
      return 0;
    }
    int ok = 1;
    for (const Node *a = n->kids; a; a = a->next) {
      int p;
      ok &= check_texpr(F, a, &p);
      if (F->toplevel && F->tokens) {
        int reads = (a->kind == N_NAME && !strcmp(a->str, F->tokens)) ||
                    (a->kind == N_CALL && !strcmp(a->str, "positions") && a->kids && a->kids->kind == N_NAME &&
                     !strcmp(a->kids->str, F->tokens));
        if (reads)
          for (int i = first; i <= last; i++) F->kids[i]->role |= ROLE_INPUT;
      }
      if (F->toplevel && m->prim == PRIM_CROSS_ENTROPY && a == n->kids && p >= 0) F->kids[p]->role |= ROLE_HEAD;
    }
    for (int i = first; i <= last; i++) {
      if (F->used[i] && F->toplevel) {
        diag_error(S->D, n->loc, "'%s' is called twice in the model's forward; a module runs once per step (declare a second one)", F->kids[i]->path);
        return 0;
      }
      F->used[i] = 1;
    }
    if (F->toplevel) {
      if (m->prim == PRIM_CROSS_ENTROPY) m->role |= ROLE_LOSS;
      if (first < F->last_called && !F->order_reported) {
        F->order_reported = 1;
        diag_error(S->D, n->loc, "forward calls '%s' after '%s', but declares it before; declare modules in the order forward runs them, since pipeline stages follow that order",
                   n->str, F->kids[F->last_called]->group ? F->kids[F->last_called]->group : F->kids[F->last_called]->path);
      }
      if (last > F->last_called) F->last_called = last;
      *prod = last;
    }
    return ok;
  }
  /* a hyper-parameter naming an operation: act = gelu_tanh, then act(x) */
  const char *op = n->str;
  Binding *b = scope_find(F->vals, n->str);
  if (b && !b->v) return 0; /* its definition failed and was reported */
  if (b && b->v->kind == V_SYM) op = b->v->s;
  int fi = find_fop(op);
  if (fi < 0) {
    PtrVec c = {0};
    callable_names(F, &c);
    if (b)
      diag_error(S->D, n->loc, "'%s' is %s, not a module or an operation", n->str, value_kind_name(b->v));
    else if (op != n->str)
      diag_error(S->D, n->loc, "'%s' is '%s', which is not an operation%s", n->str, op, suggest(op, (const char *const *)c.items, c.len));
    else
      diag_error(S->D, n->loc, "unknown module or operation '%s'%s", n->str, suggest(n->str, (const char *const *)c.items, c.len));
    return 0;
  }
  if (nargs != fops[fi].arity) {
    diag_error(S->D, n->loc, "%s() takes %d argument%s, got %d", op, fops[fi].arity, fops[fi].arity == 1 ? "" : "s", nargs);
    return 0;
  }
  int ok = 1, p;
  if (!strcmp(op, "dropout")) {
    ok &= check_texpr(F, n->kids, &p);
    double prob;
    ok &= want_float(S, sema_eval(S, n->kids->next, F->vals), "dropout probability", 0, 0.999999, 0, &prob, F->vals);
    return ok;
  }
  for (const Node *a = n->kids; a; a = a->next) ok &= check_texpr(F, a, &p);
  return ok;
}

static int check_texpr(Fwd *F, const Node *n, int *prod) {
  Sema *S = F->S;
  *prod = -1;
  switch (n->kind) {
  case N_NAME: {
    int li = local_index(F, n->str);
    if (li >= 0) {
      if (F->producer) *prod = F->producer[li];
      return 1;
    }
    Binding *b = scope_find(F->vals, n->str);
    if (b && !b->v) return 0;
    if (b && (b->v->kind == V_INT || b->v->kind == V_FLOAT)) return 1; /* a scalar */
    int first, last;
    if (find_kids(F, n->str, &first, &last)) {
      diag_error(S->D, n->loc, "'%s' is a module; call it on a tensor, as in %s(x)", n->str, n->str);
      return 0;
    }
    diag_error(S->D, n->loc, "unknown tensor '%s'%s", n->str,
               suggest(n->str, (const char *const *)F->locals.items, F->locals.len));
    return 0;
  }
  case N_INT:
  case N_FLOAT: return 1;
  case N_CALL: return check_call(F, n, prod);
  case N_BINOP:
    if (n->op == 'R' || n->op == '%') {
      diag_error(S->D, n->loc, "'%s' is not a tensor operation; use + - * /", n->op == 'R' ? ".." : "%");
      return 0;
    } else {
      int p1, p2, ok = check_texpr(F, n->a, &p1);
      ok &= check_texpr(F, n->b, &p2);
      return ok;
    }
  case N_NEG: return check_texpr(F, n->a, prod);
  default:
    diag_error(S->D, n->loc, "a forward computes with tensors, modules and operations; %s is not allowed here",
               n->kind == N_STR ? "a string" : n->kind == N_LIST ? "a list" : n->kind == N_TUPLE ? "a tuple" : "this expression");
    return 0;
  }
}

static void check_forward(Sema *S, const Entry *fwd, Module **kids, int nkids, const char *const *groups, Scope *vals,
                          int toplevel, const char *owner) {
  int errors_before = S->D->errors;
  Fwd F = {.S = S, .kids = kids, .nkids = nkids, .groups = groups, .vals = vals, .toplevel = toplevel, .last_called = -1};
  F.used = arena_alloc(S->A, (size_t)nkids + 1);
  int cap = param_count(fwd->params) + entry_count(fwd->body) + 1;
  F.producer = arena_alloc(S->A, sizeof(int) * (size_t)cap);
  for (const Param *p = fwd->params; p; p = p->next) {
    if (p->dflt) diag_error(S->D, p->loc, "forward inputs are tensors and take no default; remove '= ...'");
    if (local_index(&F, p->name) >= 0) diag_error(S->D, p->loc, "forward input '%s' is listed twice", p->name);
    F.producer[F.locals.len] = -1;
    ptrvec_push(S->A, &F.locals, (void *)p->name);
  }
  if (toplevel && fwd->params) F.tokens = fwd->params->name;
  const Entry *ret = NULL;
  for (const Entry *e = fwd->body; e; e = e->next) {
    if (ret) {
      diag_error(S->D, e->loc, "nothing may follow 'return' in a forward");
      break;
    }
    int p;
    if (e->kind == E_ASSIGN) {
      if (check_texpr(&F, e->value, &p)) {
        F.producer[F.locals.len] = p;
        ptrvec_push(S->A, &F.locals, (void *)e->name);
      } else {
        F.producer[F.locals.len] = -1;
        ptrvec_push(S->A, &F.locals, (void *)e->name); /* avoid follow-on errors */
      }
    } else if (e->kind == E_RETURN) {
      check_texpr(&F, e->value, &p);
      ret = e;
    } else {
      diag_error(S->D, e->loc, "a forward holds only 'name = expression' and 'return expression'");
    }
  }
  if (!ret) diag_error(S->D, fwd->end_loc, "forward of '%s' ends without 'return'; return its output", owner);
  if (S->D->errors != errors_before) return; /* a module may look unused only because its call had an error */
  for (int i = 0; i < nkids; i++)
    if (!F.used[i] && sema_reported_once(S, kids[i]->loc))
      diag_error(S->D, kids[i]->loc, "module '%s' is declared but its forward never uses it; call it in forward or remove it",
                 groups && groups[i] ? groups[i] : kids[i]->name);
}

/* forward(x) { x = m1(x) ... return x } for a block without one. */
static Entry *default_block_forward(Sema *S, Module *owner) {
  Entry *f = arena_alloc(S->A, sizeof *f);
  f->kind = E_FORWARD;
  f->loc = f->end_loc = owner->loc;
  f->name = "forward";
  Param *x = arena_alloc(S->A, sizeof *x);
  x->name = "x";
  x->loc = owner->loc;
  f->params = x;
  Entry **tail = &f->body;
  for (int i = 0; i < owner->nkids; i++) {
    Module *k = owner->kids[i];
    if (module_arity(k) != 1) {
      diag_error(S->D, k->loc, "block '%s' has no forward, and '%s' takes %d inputs; write forward(...) to say what it receives",
                 owner->kind, k->name, module_arity(k));
      return NULL;
    }
    Entry *e = arena_alloc(S->A, sizeof *e);
    e->kind = E_ASSIGN, e->loc = e->name_loc = k->loc, e->name = "x";
    e->value = mkcall(S, k->loc, k->name, mknode(S, N_NAME, k->loc, "x"), NULL);
    *tail = e, tail = &e->next;
  }
  Entry *r = arena_alloc(S->A, sizeof *r);
  r->kind = E_RETURN, r->loc = owner->loc, r->value = mknode(S, N_NAME, owner->loc, "x");
  *tail = r;
  return f;
}

/* Processes a model or block body: values into `sc`, modules into `out`. */
static const Entry *process_body(Sema *S, const Entry *body, Scope *sc, PtrVec *out, PtrVec *groups, const char *prefix,
                                 int toplevel) {
  const Entry *fwd = NULL;
  for (const Entry *e = body; e; e = e->next) {
    if (e->kind == E_FORWARD) {
      if (fwd) {
        diag_error(S->D, e->loc, "a second forward; a %s has one", toplevel ? "model" : "block");
        diag_note(S->D, fwd->loc, "the first forward is here");
      } else
        fwd = e;
      continue;
    }
    if (e->kind != E_ASSIGN) {
      const char *what = e->kind == E_SECTION ? arena_printf(S->A, "'%s { }'", e->name)
                         : e->kind == E_LABEL ? arena_printf(S->A, "'%s: ...'", e->name)
                         : e->kind == E_RETURN ? "'return' outside forward"
                         : e->kind == E_BLOCK ? "a block definition"
                         : e->kind == E_MODEL ? "a model" : "'import'";
      diag_error(S->D, e->loc, "%s is not allowed in a %s body; it holds 'name = value', 'name = module(...)' and forward(...) { }",
                 what, toplevel ? "model" : "block");
      continue;
    }
    if (strchr(e->name, '.')) {
      diag_error(S->D, e->name_loc, "'%s': names declared here cannot contain '.'; dots join the names of modules inside others", e->name);
      continue;
    }
    if (!is_module_decl(e->value)) {
      Binding *b = NULL;
      for (b = sc->vals; b; b = b->next)
        if (!strcmp(b->name, e->name)) break;
      if (b) {
        diag_error(S->D, e->name_loc, "'%s' is already defined%s", e->name, b->is_param ? " as a parameter of this block" : "");
        diag_note(S->D, b->loc, "'%s' is defined here", e->name);
        continue;
      }
      Value *v = sema_eval(S, e->value, sc);
      if (v && v->kind == V_SYM && find_fop(v->s) < 0 && !find_prim(v->s)) {
        sema_unknown_name(S, v, sc, NULL, 0);
        v = NULL;
      }
      scope_bind(S, sc, e->name, v, e->name_loc, 0); /* NULL: failed, uses stay quiet */
      continue;
    }
    for (int i = 0; i < out->len; i++) {
      const Module *m = out->items[i];
      const char *g = groups->items[i];
      if (!strcmp(g ? g : m->name, e->name)) {
        diag_error(S->D, e->name_loc, "module '%s' is declared twice", e->name);
        diag_note(S->D, m->loc, "the first '%s' is here", e->name);
        goto next;
      }
    }
    if (e->value->kind == N_REPEAT) {
      int64_t count;
      Value *cv = sema_eval(S, e->value->a, sc);
      if (!want_int(S, cv, "repeat count", 1, MAX_REPEAT, &count, sc)) continue;
      Value *call = sema_eval(S, e->value->b, sc);
      if (!call) continue;
      for (int64_t i = 0; i < count && S->budget > 0; i++) {
        const char *local = arena_printf(S->A, "%s.%lld", e->name, (long long)i);
        const char *path = prefix ? arena_printf(S->A, "%s.%s", prefix, local) : local;
        int before = S->D->errors;
        Module *m = instantiate(S, local, path, call, e->name_loc, e->name, (int)i, sc);
        if (S->D->errors != before) {
          /* every layer would repeat the same errors: report the first */
          if (toplevel && S->D->last_file != e->loc.file)
            diag_note(S->D, e->value->b->loc, "in '%s', a %s declared here", path, call->s);
          break;
        }
        if (!m) break;
        ptrvec_push(S->A, out, m);
        ptrvec_push(S->A, groups, (void *)e->name);
      }
    } else {
      Value *call = sema_eval(S, e->value, sc);
      if (!call) continue;
      const char *path = prefix ? arena_printf(S->A, "%s.%s", prefix, e->name) : e->name;
      int before = S->D->errors;
      Module *m = instantiate(S, e->name, path, call, e->name_loc, NULL, 0, sc);
      if (toplevel && S->D->errors != before && S->D->last_file != e->loc.file)
        diag_note(S->D, e->value->loc, "in '%s', a %s declared here", path, call->s);
      if (m) {
        ptrvec_push(S->A, out, m);
        ptrvec_push(S->A, groups, NULL);
      }
    }
  next:;
  }
  return fwd;
}

/* tie = wte: a linear shares the weight of an embedding beside it. */
static void resolve_ties(Sema *S, Module **kids, int n) {
  for (int i = 0; i < n; i++) {
    Module *m = kids[i];
    if (!m->tie_name) continue;
    Module *t = NULL;
    PtrVec names = {0};
    for (int j = 0; j < n; j++) {
      ptrvec_push(S->A, &names, (void *)kids[j]->name);
      if (!strcmp(kids[j]->name, m->tie_name)) t = kids[j];
    }
    if (!t) {
      diag_error(S->D, m->tie_loc, "tie names '%s', which is not a module here%s", m->tie_name,
                 suggest(m->tie_name, (const char *const *)names.items, names.len));
      continue;
    }
    if (t == m || (t->prim != PRIM_EMBEDDING && t->prim != PRIM_LINEAR) || t->tie_name) {
      diag_error(S->D, m->tie_loc, "'%s' cannot be tied to '%s': tie to an embedding or an untied linear", m->name, t->name);
      continue;
    }
    int64_t r = t->prim == PRIM_EMBEDDING ? t->num : t->out, c = t->prim == PRIM_EMBEDDING ? t->dim : t->in;
    if (!r || !c || !m->out || !m->in) continue; /* a size already reported as wrong */
    if (m->out != r || m->in != c) {
      diag_error(S->D, m->tie_loc,
                 "cannot tie '%s' to '%s': its weight is %lld x %lld (out x in) but '%s' is %lld x %lld; the shapes must match",
                 m->name, t->name, (long long)m->out, (long long)m->in, t->name, (long long)r, (long long)c);
      continue;
    }
    m->tie = t;
  }
}

static Module *instantiate(Sema *S, const char *local, const char *path, const Value *call, Loc decl, const char *group, int gi, Scope *outer) {
  if (call->kind != V_CALL) {
    diag_error(S->D, call->loc, "expected a module such as linear(...) or a block, not %s", value_kind_name(call));
    return NULL;
  }
  if (--S->budget < 0) {
    if (S->budget == -1) diag_error(S->D, decl, "the model has more than %d modules; pipec stops expanding here", MAX_MODULES);
    return NULL;
  }
  Module *m = arena_alloc(S->A, sizeof *m);
  m->name = local, m->path = path, m->kind = call->s, m->loc = decl, m->group = group, m->group_index = gi;
  const PrimSpec *ps = find_prim(call->s);
  if (ps) {
    build_prim(S, m, ps, call, outer);
    return m;
  }
  const BlockDef *bd = sema_find_block(S, call->s);
  if (!bd) {
    PtrVec c = {0};
    for (int i = 0; i < NPRIMS; i++) ptrvec_push(S->A, &c, (void *)prims[i].name);
    for (int i = 0; i < S->blocks.len; i++) ptrvec_push(S->A, &c, (void *)((BlockDef *)S->blocks.items[i])->name);
    const char *dym = did_you_mean(call->s, (const char *const *)c.items, c.len);
    if (sema_reported_once(S, call->loc)) {
      if (dym)
        diag_error(S->D, call->loc, "unknown module kind '%s'; did you mean '%s'?", call->s, dym);
      else
        diag_error(S->D, call->loc, "unknown module kind '%s'; define it with 'block %s(...) { }' or import \"nn\"", call->s, call->s);
    }
    return NULL;
  }
  if (S->depth >= MAX_DEPTH) {
    if (sema_reported_once(S, bd->loc))
      diag_error(S->D, bd->loc, "block '%s' contains itself (directly or through other blocks)", bd->name);
    return NULL;
  }
  m->block = bd;
  /* bind parameters left to right; a default may use earlier parameters */
  const Entry *be = bd->entry;
  int np = param_count(be->params);
  const char **names = arena_alloc(S->A, sizeof(char *) * (size_t)(np + 1));
  int i = 0;
  for (const Param *p = be->params; p; p = p->next) names[i++] = p->name;
  Value **args = arena_alloc(S->A, sizeof(Value *) * (size_t)(np + 1));
  const char *what = arena_printf(S->A, "block %s", bd->name);
  if (!bind_call(S, call, what, names, np, args)) return NULL;
  Scope *sc = arena_alloc(S->A, sizeof *sc);
  i = 0;
  int ok = 1;
  for (const Param *p = be->params; p; p = p->next, i++) {
    Value *v = args[i];
    if (!v && p->dflt) v = sema_eval(S, p->dflt, sc);
    else if (!v) {
      missing_arg(S, call, what, p->name);
      ok = 0;
      continue;
    }
    if (!v) {
      ok = 0;
      continue;
    }
    scope_bind(S, sc, p->name, v, p->loc, 1);
  }
  if (!ok) return NULL;
  S->depth++;
  PtrVec kids = {0}, groups = {0};
  const Entry *fwd = process_body(S, be->body, sc, &kids, &groups, path, 0);
  S->depth--;
  m->kids = (Module **)kids.items;
  m->nkids = kids.len;
  resolve_ties(S, m->kids, m->nkids);
  for (int k = 0; k < m->nkids; k++) m->nparams += m->kids[k]->nparams;
  /* a block's forward is checked once, with its first instance's values */
  m->forward = fwd ? fwd : default_block_forward(S, m);
  m->values = sc;
  if (fwd && sema_reported_once(S, fwd->loc))
    check_forward(S, fwd, m->kids, m->nkids, (const char *const *)groups.items, sc, 0, bd->name);
  return m;
}

/* The model's forward when the file gives none: leading embeddings summed
 * (the first reads tokens, the rest positions), then every other module in
 * order, the loss on (logits, targets). */
static Entry *default_model_forward(Sema *S, Module **mods, int n, Loc at) {
  Entry *f = arena_alloc(S->A, sizeof *f);
  f->kind = E_FORWARD, f->loc = f->end_loc = at, f->name = "forward";
  Param *tok = arena_alloc(S->A, sizeof *tok), *tgt = arena_alloc(S->A, sizeof *tgt);
  tok->name = "tokens", tgt->name = "targets", tok->loc = tgt->loc = at;
  tok->next = tgt;
  f->params = tok;
  Entry **tail = &f->body;
  Node *sum = NULL;
  int i = 0;
  for (; i < n && mods[i]->prim == PRIM_EMBEDDING; i++) {
    Node *in = mknode(S, N_NAME, mods[i]->loc, "tokens");
    if (i > 0) in = mkcall(S, mods[i]->loc, "positions", in, NULL);
    Node *c = mkcall(S, mods[i]->loc, mods[i]->name, in, NULL);
    if (!sum) sum = c;
    else {
      Node *b = mknode(S, N_BINOP, mods[i]->loc, NULL);
      b->op = '+', b->a = sum, b->b = c;
      sum = b;
    }
  }
  if (!sum) sum = mknode(S, N_NAME, at, "tokens");
  Entry *e = arena_alloc(S->A, sizeof *e);
  e->kind = E_ASSIGN, e->loc = at, e->name = "x", e->value = sum;
  *tail = e, tail = &e->next;
  Node *ret = mknode(S, N_NAME, at, "x");
  for (; i < n; i++) {
    Module *m = mods[i];
    const char *callee = m->group ? m->group : m->name;
    if (m->group) {
      while (i + 1 < n && mods[i + 1]->group && !strcmp(mods[i + 1]->group, m->group)) i++;
    }
    if (m->prim == PRIM_CROSS_ENTROPY) {
      ret = mkcall(S, m->loc, callee, mknode(S, N_NAME, m->loc, "x"), mknode(S, N_NAME, m->loc, "targets"));
      continue;
    }
    int ar = module_arity(m);
    Node *args = mknode(S, N_NAME, m->loc, "x"), *t = args;
    for (int k = 1; k < ar; k++) t = t->next = mknode(S, N_NAME, m->loc, "x");
    Entry *s = arena_alloc(S->A, sizeof *s);
    s->kind = E_ASSIGN, s->loc = m->loc, s->name = "x", s->value = mkcall(S, m->loc, callee, args, NULL);
    *tail = s, tail = &s->next;
  }
  Entry *r = arena_alloc(S->A, sizeof *r);
  r->kind = E_RETURN, r->loc = at, r->value = ret;
  *tail = r;
  return f;
}

double module_flops_per_token(const Module *m, int64_t T) {
  double f = 0;
  switch (m->prim) {
  case PRIM_LINEAR: f = 2.0 * (double)m->in * (double)m->out; break;
  case PRIM_ATTENTION: {
    double d = (double)m->dim, kv = d / (double)m->heads * (double)m->kv_heads;
    f = 2.0 * d * (d + 2 * kv) + 2.0 * d * d;              /* qkv and output projections */
    f += 4.0 * (double)T * d * (m->causal ? 0.5 : 1.0);     /* scores and weighted sum */
    break;
  }
  case PRIM_LAYERNORM:
  case PRIM_RMSNORM: f = 8.0 * (double)m->dim; break;
  case PRIM_EMBEDDING: f = (double)m->dim; break;
  case PRIM_CROSS_ENTROPY: f = 0; break;
  default: break;
  }
  for (int i = 0; i < m->nkids; i++) f += module_flops_per_token(m->kids[i], T);
  return f;
}

void sema_check_model(Sema *S) {
  const Entry *me = S->model;
  Program *P = S->P;
  P->model_name = me->name;
  P->model_loc = me->name_loc;
  S->model_scope = arena_alloc(S->A, sizeof(Scope));
  PtrVec mods = {0}, groups = {0};
  const Entry *fwd = process_body(S, me->body, S->model_scope, &mods, &groups, NULL, 1);
  P->mods = (Module **)mods.items;
  P->nmods = mods.len;
  resolve_ties(S, P->mods, P->nmods);
  for (int i = 0; i < P->nmods; i++) P->nparams += P->mods[i]->nparams;
  if (!P->nmods) {
    diag_error(S->D, me->name_loc, "model '%s' declares no modules; add some, as in wte = embedding(vocab, dim)", me->name);
    return;
  }
  int errs = S->D->errors;
  P->forward = fwd ? fwd : default_model_forward(S, P->mods, P->nmods, me->end_loc);
  P->values = S->model_scope;
  if (S->D->errors != errs) return;
  check_forward(S, P->forward, P->mods, P->nmods, (const char *const *)groups.items, S->model_scope, 1, me->name);
  int nloss = 0;
  for (int i = 0; i < P->nmods; i++)
    if (P->mods[i]->prim == PRIM_CROSS_ENTROPY) {
      if (++nloss == 2) diag_error(S->D, P->mods[i]->loc, "a model has one loss; '%s' is a second", P->mods[i]->name);
      else if (i != P->nmods - 1)
        diag_error(S->D, P->mods[i]->loc, "the loss '%s' must be the last module of the model", P->mods[i]->name);
    }
}
