/* opgraph.c — forward expansion with width inference, then autodiff.
 * See opgraph.h for the contract. */
#include "compiler/opgraph.h"
#include "lib/params.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "compiler/sema.h"
#include "lib/kernels.h"

const char *const op_names[OP_KIND_COUNT] = {
  "positions", "embedding", "matmul", "layernorm", "rmsnorm", "attention", "act", "add", "sub", "mul", "scale",
  "dropout", "softmax", "cross_entropy", "cross_entropy_bwd", "matmul_bwd_x", "matmul_bwd_w", "embedding_bwd",
  "norm_bwd_x", "norm_bwd_w", "attention_bwd", "act_bwd", "dropout_bwd", "softmax_bwd", "tp_enter", "allreduce",
  "bias", "bias_bwd", "vp_rowmax", "vp_sumexp",
};

static const char *const act_names_k[] = {"gelu_tanh", "gelu", "relu", "silu"};

typedef struct B {
  Arena *A;
  Diag *D;
  const Program *P;
  PtrVec t, op, param; /* OgTensor*, OgOp*, OgParam* */
  int top;             /* current top-level module index */
  int errors;
} B;

/* A value in a forward: a tensor, or a scalar. */
typedef struct Val {
  int t; /* tensor id, -1 for a scalar, -2 for an error already reported */
  double s;
} Val;

typedef struct Local {
  const char *name;
  Val v;
} Local;

typedef struct Env {
  Local *l;
  int n, cap;
} Env;

static void env_set(B *b, Env *e, const char *name, Val v) {
  for (int i = e->n - 1; i >= 0; i--)
    if (!strcmp(e->l[i].name, name)) {
      e->l[i].v = v;
      return;
    }
  if (e->n == e->cap) {
    int cap = e->cap ? e->cap * 2 : 8;
    Local *l = arena_alloc(b->A, sizeof(Local) * (size_t)cap);
    if (e->n) memcpy(l, e->l, sizeof(Local) * (size_t)e->n);
    e->l = l, e->cap = cap;
  }
  e->l[e->n++] = (Local){name, v};
}

static int tensor(B *b, int width, int is_int, const char *what) {
  OgTensor *t = arena_alloc(b->A, sizeof *t);
  t->width = width, t->is_int = is_int, t->producer = -1, t->what = what;
  ptrvec_push(b->A, &b->t, t);
  return b->t.len - 1;
}
static OgTensor *T(B *b, int id) { return b->t.items[id]; }

static OgOp *emit(B *b, OpKind k, OpPhase ph, int out, Loc loc, const Module *m) {
  OgOp *o = arena_alloc(b->A, sizeof *o);
  o->kind = k, o->phase = ph, o->out = out, o->out2 = -1, o->weight = o->bias = -1, o->loc = loc, o->mod = m;
  o->top = b->top, o->fwd = -1;
  ptrvec_push(b->A, &b->op, o);
  if (out >= 0 && ph == PHASE_F) T(b, out)->producer = b->op.len - 1;
  return o;
}

static int param(B *b, const Module *m, const char *suffix, int64_t rows, int64_t cols) {
  const char *name = arena_printf(b->A, "%s.%s", m->path, suffix);
  for (int i = 0; i < b->param.len; i++)
    if (!strcmp(((OgParam *)b->param.items[i])->name, name)) return i;
  OgParam *p = arena_alloc(b->A, sizeof *p);
  p->name = name, p->rows = rows, p->cols = cols, p->mod = m;
  ptrvec_push(b->A, &b->param, p);
  return b->param.len - 1;
}

static void err(B *b, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void err(B *b, Loc loc, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  diag_error(b->D, loc, "%s", msg);
  b->errors++;
}

static int want_width(B *b, Val v, int w, Loc loc, const Module *m) {
  if (v.t < 0) {
    if (v.t == -1) err(b, loc, "'%s' needs a tensor here, not a number", m->path);
    return 0;
  }
  OgTensor *t = T(b, v.t);
  if (t->is_int) {
    err(b, loc, "'%s' reads activations, but gets token ids", m->path);
    return 0;
  }
  if (t->width != w) {
    const OgOp *src = t->producer >= 0 ? b->op.items[t->producer] : NULL;
    if (src && src->mod)
      err(b, loc, "'%s' expects inputs of width %d, but gets width %d from '%s'", m->path, w, t->width, src->mod->path);
    else
      err(b, loc, "'%s' expects inputs of width %d, but gets width %d", m->path, w, t->width);
    return 0;
  }
  return 1;
}

static Val eval(B *b, const Node *n, Env *env, Module **kids, int nkids, const Scope *vals, int model_level);

/* out = x @ W[row0 : row0+rows]^T + b[...], W a (wrows, in) parameter of m */
static Val matmul(B *b, Val x, const Module *m, const char *wname, const char *bname, int wrows, int row0, int rows, int in, Loc loc) {
  int out = tensor(b, rows, 0, m->path);
  OgOp *o = emit(b, OP_MATMUL, PHASE_F, out, loc, m);
  o->in[0] = x.t, o->nin = 1, o->row0 = row0, o->rows = rows;
  o->weight = param(b, m, wname, wrows, in);
  if (bname) o->bias = param(b, m, bname, wrows, 0);
  return (Val){out, 0};
}

/* A primitive module applied to its inputs. */
static Val apply_prim(B *b, const Module *m, Val *a, int na, Loc loc) {
  switch (m->prim) {
  case PRIM_EMBEDDING: {
    if (a[0].t < 0 || !T(b, a[0].t)->is_int) {
      if (a[0].t != -2) err(b, loc, "embedding '%s' reads token ids or positions, not activations", m->path);
      return (Val){-2, 0};
    }
    int out = tensor(b, (int)m->dim, 0, m->path);
    OgOp *o = emit(b, OP_EMBEDDING, PHASE_F, out, loc, m);
    o->in[0] = a[0].t, o->nin = 1, o->weight = param(b, m, "weight", m->num, m->dim);
    return (Val){out, 0};
  }
  case PRIM_LINEAR: {
    if (!want_width(b, a[0], (int)m->in, loc, m)) return (Val){-2, 0};
    const Module *owner = m->tie ? m->tie : m;
    int out = tensor(b, (int)m->out, 0, m->path);
    OgOp *o = emit(b, OP_MATMUL, PHASE_F, out, loc, m);
    o->in[0] = a[0].t, o->nin = 1, o->row0 = 0, o->rows = (int)m->out;
    o->weight = param(b, owner, "weight", m->out, m->in);
    if (m->bias) o->bias = param(b, m, "bias", m->out, 0);
    return (Val){out, 0};
  }
  case PRIM_LAYERNORM:
  case PRIM_RMSNORM: {
    if (!want_width(b, a[0], (int)m->dim, loc, m)) return (Val){-2, 0};
    int out = tensor(b, (int)m->dim, 0, m->path);
    OgOp *o = emit(b, m->prim == PRIM_LAYERNORM ? OP_LAYERNORM : OP_RMSNORM, PHASE_F, out, loc, m);
    o->in[0] = a[0].t, o->nin = 1, o->scalar = m->eps, o->weight = param(b, m, "weight", m->dim, 0);
    if (m->bias) o->bias = param(b, m, "bias", m->dim, 0);
    return (Val){out, 0};
  }
  case PRIM_ATTENTION: {
    int d = (int)m->dim, kv = (int)(m->dim / m->heads * m->kv_heads);
    if (!want_width(b, a[0], d, loc, m) || (na > 1 && !want_width(b, a[1], d, loc, m))) return (Val){-2, 0};
    OgOp *o;
    int core = tensor(b, d, 0, arena_printf(b->A, "%s.core", m->path));
    if (na == 1) {
      Val qkv = matmul(b, a[0], m, "c_attn.weight", m->bias ? "c_attn.bias" : NULL, d + 2 * kv, 0, d + 2 * kv, d, loc);
      o = emit(b, OP_ATTENTION, PHASE_F, core, loc, m);
      o->in[0] = qkv.t, o->nin = 1;
    } else { /* cross: q from x, k|v from memory, one packed weight as torch's in_proj */
      Val q = matmul(b, a[0], m, "c_attn.weight", m->bias ? "c_attn.bias" : NULL, d + 2 * kv, 0, d, d, loc);
      Val kvv = matmul(b, a[1], m, "c_attn.weight", m->bias ? "c_attn.bias" : NULL, d + 2 * kv, d, 2 * kv, d, loc);
      o = emit(b, OP_ATTENTION, PHASE_F, core, loc, m);
      o->in[0] = q.t, o->in[1] = kvv.t, o->nin = 2;
    }
    o->heads = (int)m->heads, o->kv_heads = (int)m->kv_heads, o->causal = m->causal;
    Val cv = {core, 0};
    return matmul(b, cv, m, "c_proj.weight", m->bias ? "c_proj.bias" : NULL, d, 0, d, d, loc);
  }
  case PRIM_DROPOUT:
  case PRIM_ACTIVATION: {
    if (a[0].t < 0) return (Val){-2, 0};
    if (m->prim == PRIM_DROPOUT && m->p == 0) return a[0]; /* the identity */
    int out = tensor(b, T(b, a[0].t)->width, 0, m->path);
    OgOp *o = emit(b, m->prim == PRIM_DROPOUT ? OP_DROPOUT : OP_ACT, PHASE_F, out, loc, m);
    o->in[0] = a[0].t, o->nin = 1, o->scalar = m->p;
    for (int i = 0; m->act && i < 4; i++)
      if (!strcmp(m->act, act_names_k[i])) o->act = i;
    return (Val){out, 0};
  }
  case PRIM_CROSS_ENTROPY: {
    if (a[0].t < 0 || a[1].t < 0) return (Val){-2, 0};
    if (T(b, a[0].t)->is_int || !T(b, a[1].t)->is_int) {
      err(b, loc, "'%s' takes (logits, targets): activations first, then the target token ids", m->path);
      return (Val){-2, 0};
    }
    /* the kernels skip negative targets and smooth nothing: refuse what they would get wrong */
    if (m->p > 0) {
      err(b, loc, "'%s': label_smoothing = %g is not supported by pipec's kernels yet; remove it (0 is the default)", m->path, m->p);
      return (Val){-2, 0};
    }
    if (m->num >= 0) {
      err(b, loc, "'%s': ignore_index = %lld: pipec ignores the negative target ids (such as -1 or -100) only", m->path, (long long)m->num);
      return (Val){-2, 0};
    }
    int out = tensor(b, 1, 0, m->path);
    OgOp *o = emit(b, OP_XENT, PHASE_F, out, loc, m);
    o->in[0] = a[0].t, o->in[1] = a[1].t, o->nin = 2;
    return (Val){out, 0};
  }
  case PRIM_NONE: break;
  }
  return (Val){-2, 0};
}

static Val apply_block(B *b, const Module *m, Val *a, int na, Loc loc);

static Val apply_module(B *b, const Module *m, Val *a, int na, Loc loc) {
  return m->prim == PRIM_NONE ? apply_block(b, m, a, na, loc) : apply_prim(b, m, a, na, loc);
}

/* Runs a forward body; returns what it returns. */
static Val run_forward(B *b, const Entry *fwd, Env *env, Module **kids, int nkids, const Scope *vals, int model_level) {
  for (const Entry *e = fwd->body; e; e = e->next) {
    Val v = eval(b, e->value, env, kids, nkids, vals, model_level);
    if (e->kind == E_RETURN) return v;
    env_set(b, env, e->name, v);
  }
  return (Val){-2, 0};
}

static Val apply_block(B *b, const Module *m, Val *a, int na, Loc loc) {
  Env env = {0};
  int i = 0;
  for (const Param *p = m->forward->params; p && i < na; p = p->next, i++) env_set(b, &env, p->name, a[i]);
  (void)loc;
  return run_forward(b, m->forward, &env, m->kids, m->nkids, m->values, 0);
}

static Val elementwise(B *b, OpKind k, Val x, Val y, Loc loc) {
  if (x.t == -2 || y.t == -2) return (Val){-2, 0};
  if (x.t == -1 && y.t == -1) {
    double r = k == OP_ADD ? x.s + y.s : k == OP_SUB ? x.s - y.s : x.s * y.s;
    return (Val){-1, r};
  }
  if (k == OP_MUL && (x.t == -1 || y.t == -1)) { /* tensor * number */
    Val t = x.t == -1 ? y : x;
    double s = x.t == -1 ? x.s : y.s;
    int out = tensor(b, T(b, t.t)->width, 0, "scale");
    OgOp *o = emit(b, OP_SCALE, PHASE_F, out, loc, NULL);
    o->in[0] = t.t, o->nin = 1, o->scalar = s;
    return (Val){out, 0};
  }
  if (x.t == -1 || y.t == -1) {
    err(b, loc, "adding a number to a tensor is not an operation pipec has; use a module (such as linear with bias)");
    return (Val){-2, 0};
  }
  OgTensor *tx = T(b, x.t), *ty = T(b, y.t);
  if (tx->is_int || ty->is_int) {
    err(b, loc, "token ids cannot take part in arithmetic; embed them first");
    return (Val){-2, 0};
  }
  if (tx->width != ty->width) {
    err(b, loc, "%s of tensors of different widths, %d and %d", k == OP_MUL ? "product" : k == OP_SUB ? "difference" : "sum",
        tx->width, ty->width);
    return (Val){-2, 0};
  }
  int out = tensor(b, tx->width, 0, op_names[k]);
  OgOp *o = emit(b, k, PHASE_F, out, loc, NULL);
  o->in[0] = x.t, o->in[1] = y.t, o->nin = 2;
  return (Val){out, 0};
}

static int find_kid(Module **kids, int nkids, const char *name, int model_level, int *last) {
  for (int i = 0; i < nkids; i++) {
    if (!strcmp(kids[i]->name, name)) return *last = i, i;
    if (model_level && kids[i]->group && !strcmp(kids[i]->group, name)) {
      int j = i;
      while (j + 1 < nkids && kids[j + 1]->group && !strcmp(kids[j + 1]->group, name)) j++;
      *last = j;
      return i;
    }
  }
  return -1;
}

static Val eval(B *b, const Node *n, Env *env, Module **kids, int nkids, const Scope *vals, int model_level) {
  switch (n->kind) {
  case N_INT: return (Val){-1, (double)n->ival};
  case N_FLOAT: return (Val){-1, n->fval};
  case N_NAME: {
    for (int i = env->n - 1; i >= 0; i--)
      if (!strcmp(env->l[i].name, n->str)) return env->l[i].v;
    Binding *bd = scope_find((Scope *)vals, n->str);
    if (bd && bd->v && bd->v->kind == V_INT) return (Val){-1, (double)bd->v->i};
    if (bd && bd->v && bd->v->kind == V_FLOAT) return (Val){-1, bd->v->f};
    return (Val){-2, 0}; /* the checker reported it */
  }
  case N_NEG: {
    Val x = eval(b, n->a, env, kids, nkids, vals, model_level);
    return elementwise(b, OP_MUL, x, (Val){-1, -1}, n->loc);
  }
  case N_BINOP: {
    Val x = eval(b, n->a, env, kids, nkids, vals, model_level), y = eval(b, n->b, env, kids, nkids, vals, model_level);
    if (n->op == '/' && y.t == -1 && y.s != 0) return elementwise(b, OP_MUL, x, (Val){-1, 1 / y.s}, n->loc);
    if (n->op == '/') {
      err(b, n->loc, "division by a tensor is not an operation pipec has");
      return (Val){-2, 0};
    }
    return elementwise(b, n->op == '+' ? OP_ADD : n->op == '-' ? OP_SUB : OP_MUL, x, y, n->loc);
  }
  case N_CALL: {
    Val a[4];
    int na = 0;
    for (const Node *c = n->kids; c && na < 4; c = c->next) a[na++] = eval(b, c, env, kids, nkids, vals, model_level);
    for (int i = 0; i < na; i++)
      if (a[i].t == -2) return a[i];
    int last, first = find_kid(kids, nkids, n->str, model_level, &last);
    if (first >= 0) {
      Val cur = a[0];
      for (int i = first; i <= last; i++) {
        if (model_level) b->top = i;
        Val args[4];
        for (int k = 0; k < na; k++) /* group: arguments naming the first one follow the running value */
          args[k] = k > 0 && n->kids->kind == N_NAME && node_count(n->kids) > k && a[k].t == a[0].t ? cur : a[k];
        args[0] = cur;
        cur = apply_module(b, kids[i], args, na, n->loc);
        if (cur.t == -2) return cur;
      }
      return cur;
    }
    const char *op = n->str;
    Binding *bd = scope_find((Scope *)vals, n->str);
    if (bd && bd->v && bd->v->kind == V_SYM) op = bd->v->s;
    if (!strcmp(op, "add") || !strcmp(op, "mul")) return elementwise(b, op[0] == 'a' ? OP_ADD : OP_MUL, a[0], a[1], n->loc);
    if (a[0].t < 0) {
      err(b, n->loc, "%s() needs a tensor", op);
      return (Val){-2, 0};
    }
    OgTensor *x = T(b, a[0].t);
    if (!strcmp(op, "positions")) {
      if (!x->is_int) {
        err(b, n->loc, "positions() takes the token ids");
        return (Val){-2, 0};
      }
      int out = tensor(b, 1, 1, "positions");
      OgOp *o = emit(b, OP_POSITIONS, PHASE_F, out, n->loc, NULL);
      o->in[0] = a[0].t, o->nin = 1;
      return (Val){out, 0};
    }
    if (x->is_int) {
      err(b, n->loc, "%s() reads activations, not token ids", op);
      return (Val){-2, 0};
    }
    int out = tensor(b, x->width, 0, op);
    OgOp *o;
    if (!strcmp(op, "softmax")) o = emit(b, OP_SOFTMAX, PHASE_F, out, n->loc, NULL);
    else if (!strcmp(op, "dropout")) {
      double pr = na > 1 && a[1].t == -1 ? a[1].s : 0;
      if (pr == 0) return a[0]; /* the identity */
      o = emit(b, OP_DROPOUT, PHASE_F, out, n->loc, NULL);
      o->scalar = pr;
    } else {
      o = emit(b, OP_ACT, PHASE_F, out, n->loc, NULL);
      for (int i = 0; i < 4; i++)
        if (!strcmp(op, act_names_k[i])) o->act = i;
    }
    o->in[0] = a[0].t, o->nin = 1;
    return (Val){out, 0};
  }
  default: return (Val){-2, 0};
  }
}

/* ---- autodiff ---- */

typedef struct G {
  B *b;
  int *grad; /* per forward tensor: its gradient tensor, -1 none */
} G;

static void add_grad(G *g, int t, int dt, Loc loc) {
  if (g->grad[t] < 0) {
    g->grad[t] = dt;
    return;
  }
  int out = tensor(g->b, T(g->b, t)->width, 0, "grad sum");
  OgOp *o = emit(g->b, OP_ADD, PHASE_I, out, loc, NULL);
  o->in[0] = g->grad[t], o->in[1] = dt, o->nin = 2;
  g->grad[t] = out;
}

static int dtensor(B *b, int like) {
  return tensor(b, T(b, like)->width, 0, arena_printf(b->A, "d(%s)", T(b, like)->what));
}

static void backward(B *b, int nfwd, int loss) {
  G g = {b, arena_alloc(b->A, sizeof(int) * (size_t)(b->t.len + 1))};
  int nt0 = b->t.len;
  for (int i = 0; i < nt0; i++) g.grad[i] = -1;
  for (int i = nfwd - 1; i >= 0; i--) {
    OgOp *f = b->op.items[i];
    b->top = f->top;
    if (f->kind == OP_XENT) {
      if (f->out != loss) continue;
      int d = dtensor(b, f->in[0]);
      OgOp *o = emit(b, OP_XENT_BWD, PHASE_I, d, f->loc, f->mod);
      o->in[0] = f->in[0], o->in[1] = f->in[1], o->nin = f->nin, o->fwd = i;
      o->in[2] = f->in[2], o->in[3] = f->in[3], o->tp = f->tp, o->tp_rank = f->tp_rank;
      add_grad(&g, f->in[0], d, f->loc);
      continue;
    }
    int dy = f->out >= 0 && f->out < nt0 ? g.grad[f->out] : -1;
    if (dy < 0) continue; /* nothing flows back through it */
    OgOp *o;
    switch (f->kind) {
    case OP_MATMUL: {
      if (!T(b, f->in[0])->is_int) {
        int d = dtensor(b, f->in[0]);
        o = emit(b, OP_MATMUL_BWD_X, PHASE_I, d, f->loc, f->mod);
        o->in[0] = dy, o->nin = 1, o->weight = f->weight, o->row0 = f->row0, o->rows = f->rows, o->fwd = i;
        add_grad(&g, f->in[0], d, f->loc);
      }
      o = emit(b, OP_MATMUL_BWD_W, PHASE_W, -1, f->loc, f->mod);
      o->in[0] = dy, o->in[1] = f->in[0], o->nin = 2, o->weight = f->weight, o->bias = f->bias, o->row0 = f->row0,
      o->rows = f->rows, o->fwd = i;
      break;
    }
    case OP_EMBEDDING:
      o = emit(b, OP_EMBEDDING_BWD, PHASE_W, -1, f->loc, f->mod);
      o->in[0] = dy, o->in[1] = f->in[0], o->nin = 2, o->weight = f->weight, o->fwd = i;
      o->tp = f->tp, o->tp_rank = f->tp_rank;
      break;
    case OP_LAYERNORM:
    case OP_RMSNORM: {
      int d = dtensor(b, f->in[0]);
      o = emit(b, OP_NORM_BWD_X, PHASE_I, d, f->loc, f->mod);
      o->in[0] = dy, o->in[1] = f->in[0], o->nin = 2, o->weight = f->weight, o->fwd = i;
      add_grad(&g, f->in[0], d, f->loc);
      o = emit(b, OP_NORM_BWD_W, PHASE_W, -1, f->loc, f->mod);
      o->in[0] = dy, o->in[1] = f->in[0], o->nin = 2, o->weight = f->weight, o->bias = f->bias, o->fwd = i;
      break;
    }
    case OP_ATTENTION: {
      int d = dtensor(b, f->in[0]);
      o = emit(b, OP_ATTENTION_BWD, PHASE_I, d, f->loc, f->mod);
      o->in[0] = dy, o->in[1] = f->in[0], o->nin = 2, o->fwd = i;
      o->heads = f->heads, o->kv_heads = f->kv_heads, o->causal = f->causal;
      if (f->nin == 2) {
        o->in[2] = f->in[1], o->nin = 3, o->out2 = dtensor(b, f->in[1]);
        add_grad(&g, f->in[1], o->out2, f->loc);
      }
      add_grad(&g, f->in[0], d, f->loc);
      break;
    }
    case OP_ACT:
    case OP_DROPOUT:
    case OP_SOFTMAX: {
      int d = dtensor(b, f->in[0]);
      OpKind k = f->kind == OP_ACT ? OP_ACT_BWD : f->kind == OP_DROPOUT ? OP_DROPOUT_BWD : OP_SOFTMAX_BWD;
      o = emit(b, k, PHASE_I, d, f->loc, f->mod);
      o->in[0] = dy, o->in[1] = f->kind == OP_SOFTMAX ? f->out : f->in[0], o->nin = 2, o->act = f->act, o->scalar = f->scalar, o->fwd = i;
      add_grad(&g, f->in[0], d, f->loc);
      break;
    }
    case OP_ADD:
    case OP_SUB:
      add_grad(&g, f->in[0], dy, f->loc);
      if (f->kind == OP_ADD) add_grad(&g, f->in[1], dy, f->loc);
      else {
        int d = dtensor(b, f->in[1]);
        o = emit(b, OP_SCALE, PHASE_I, d, f->loc, NULL);
        o->in[0] = dy, o->nin = 1, o->scalar = -1, o->fwd = i;
        add_grad(&g, f->in[1], d, f->loc);
      }
      break;
    case OP_MUL:
      for (int k = 0; k < 2; k++) {
        int d = dtensor(b, f->in[k]);
        o = emit(b, OP_MUL, PHASE_I, d, f->loc, NULL);
        o->in[0] = dy, o->in[1] = f->in[1 - k], o->nin = 2, o->fwd = i;
        add_grad(&g, f->in[k], d, f->loc);
      }
      break;
    case OP_SCALE: {
      int d = dtensor(b, f->in[0]);
      o = emit(b, OP_SCALE, PHASE_I, d, f->loc, NULL);
      o->in[0] = dy, o->nin = 1, o->scalar = f->scalar, o->fwd = i;
      add_grad(&g, f->in[0], d, f->loc);
      break;
    }
    case OP_TP_ENTER: { /* f: the gradient is summed over the tp group */
      int d = dtensor(b, f->in[0]);
      o = emit(b, OP_ALLREDUCE, PHASE_I, d, f->loc, f->mod);
      o->in[0] = dy, o->nin = 1, o->fwd = i;
      add_grad(&g, f->in[0], d, f->loc);
      break;
    }
    case OP_ALLREDUCE: /* g: identity backward */
      add_grad(&g, f->in[0], dy, f->loc);
      break;
    case OP_BIAS:
      add_grad(&g, f->in[0], dy, f->loc);
      o = emit(b, OP_BIAS_BWD, PHASE_W, -1, f->loc, f->mod);
      o->in[0] = dy, o->nin = 1, o->bias = f->bias, o->fwd = i;
      break;
    default: break;
    }
  }
}

static OpGraph *finish(B *b, OpGraph *g, int nfwd) {
  Arena *a = b->A;
  g->t = arena_alloc(a, sizeof(OgTensor) * (size_t)(b->t.len + 1));
  for (int k = 0; k < b->t.len; k++) g->t[k] = *(OgTensor *)b->t.items[k];
  g->nt = b->t.len;
  g->op = arena_alloc(a, sizeof(OgOp) * (size_t)(b->op.len + 1));
  for (int k = 0; k < b->op.len; k++) g->op[k] = *(OgOp *)b->op.items[k];
  g->nop = b->op.len, g->nfwd = nfwd;
  g->param = arena_alloc(a, sizeof(OgParam) * (size_t)(b->param.len + 1));
  for (int k = 0; k < b->param.len; k++) g->param[k] = *(OgParam *)b->param.items[k];
  g->nparam = b->param.len;
  return g;
}

OpGraph *opgraph_build(Arena *a, Diag *d, const Program *p) {
  B b = {.A = a, .D = d, .P = p};
  Env env = {0};
  OpGraph *g = arena_alloc(a, sizeof *g);
  g->tokens = g->targets = g->loss = g->output = -1;
  int i = 0;
  for (const Param *pr = p->forward->params; pr; pr = pr->next, i++) {
    int t = tensor(&b, 1, 1, pr->name);
    if (i == 0) g->tokens = t;
    if (i == 1) g->targets = t;
    env_set(&b, &env, pr->name, (Val){t, 0});
  }
  Val out = run_forward(&b, p->forward, &env, p->mods, p->nmods, p->values, 1);
  if (b.errors || out.t < 0) {
    if (!b.errors) diag_error(d, p->forward->end_loc, "the model's forward must return a tensor");
    return NULL;
  }
  g->output = out.t;
  int nfwd = b.op.len;
  const OgOp *last = nfwd ? b.op.items[nfwd - 1] : NULL;
  if (last && last->kind == OP_XENT && last->out == out.t) {
    g->loss = out.t;
    backward(&b, nfwd, out.t);
  }
  for (int k = 0; k < b.param.len; k++) {
    OgParam *pp = b.param.items[k];
    pp->full_rows = pp->rows, pp->full_cols = pp->cols;
  }
  return finish(&b, g, nfwd);
}

void opgraph_dump(FILE *out, const OpGraph *g, const Program *p) {
  int64_t total = 0;
  for (int i = 0; i < g->nparam; i++) total += g->param[i].rows * (g->param[i].cols ? g->param[i].cols : 1);
  int64_t full = 0, sharded = 0;
  for (int i = 0; i < g->nparam; i++) {
    full += g->param[i].full_rows * (g->param[i].full_cols ? g->param[i].full_cols : 1);
    sharded += g->param[i].shard != SHARD_NONE;
  }
  fprintf(out, "# %d parameter tensors (%lld values), %d tensors, %d forward and %d backward operations\n", g->nparam,
          (long long)full, g->nt, g->nfwd, g->nop - g->nfwd);
  if (sharded)
    fprintf(out, "# tensor-parallel rank 0 of %d: %d parameters sharded, %lld values held by this rank\n",
            p->tp, (int)sharded, (long long)total);
  static const char *const phase[] = {"forward", "backward: input gradients (I)", "backward: weight gradients (W)"};
  for (int ph = 0; ph < 3; ph++) {
    fprintf(out, "%s:\n", phase[ph]);
    for (int i = 0; i < g->nop; i++) {
      const OgOp *o = &g->op[i];
      if ((int)o->phase != ph) continue;
      fprintf(out, "  ");
      if (o->out >= 0) fprintf(out, "t%d[%d%s]", o->out, g->t[o->out].width, g->t[o->out].is_int ? " int" : "");
      if (o->out2 >= 0) fprintf(out, ", t%d[%d]", o->out2, g->t[o->out2].width);
      if (o->out >= 0) fprintf(out, " = ");
      fprintf(out, "%s", op_names[o->kind]);
      if (o->kind == OP_ACT || o->kind == OP_ACT_BWD) fprintf(out, ".%s", act_names_k[o->act]);
      fputc('(', out);
      for (int k = 0; k < o->nin; k++) fprintf(out, "%st%d", k ? ", " : "", o->in[k]);
      if (o->weight >= 0) fprintf(out, ", %s", g->param[o->weight].name);
      if (o->kind == OP_MATMUL || o->kind == OP_MATMUL_BWD_X || o->kind == OP_MATMUL_BWD_W)
        if (o->rows != g->param[o->weight].rows) fprintf(out, "[%d:%d]", o->row0, o->row0 + o->rows);
      if (o->bias >= 0) fprintf(out, ", %s", g->param[o->bias].name);
      if (o->kind == OP_SCALE || o->kind == OP_DROPOUT || o->kind == OP_DROPOUT_BWD) fprintf(out, ", %g", o->scalar);
      if (o->kind == OP_ATTENTION || o->kind == OP_ATTENTION_BWD)
        fprintf(out, ", heads %d%s", o->heads, o->causal ? ", causal" : "");
      fprintf(out, ")");
      const char *where = o->mod ? o->mod->path : p->mods[o->top]->path;
      fprintf(out, "    # %s\n", where);
    }
  }
}

/* ---- tensor parallel ---- */

enum { R_REP, R_COL, R_ROW, R_SHARD };

static int is_region_op(OpKind k) {
  return k == OP_ACT || k == OP_MUL || k == OP_ADD || k == OP_SUB || k == OP_SCALE || k == OP_DROPOUT || k == OP_ATTENTION;
}

/* Can matmul i (reading a replicated tensor) be column-parallel? Its output
 * must reach linears only through region ops whose other inputs are also
 * outputs of such matmuls. Marks what it finds in role[]. */
static int column_ok(const OpGraph *g, int i, int *role, int **readers, int *nreaders) {
  int stack[256], sp = 0, ok = 1, rows = 0;
  stack[sp++] = g->op[i].out;
  while (sp && ok) {
    int t = stack[--sp];
    for (int r = 0; r < nreaders[t] && ok; r++) {
      int c = readers[t][r];
      if (c >= g->nfwd) continue; /* backward reads: not part of the forward shape */
      const OgOp *o = &g->op[c];
      if (o->kind == OP_MATMUL) {
        if (o->row0 != 0 || o->rows != g->param[o->weight].rows || g->param[o->weight].mod->tie) ok = 0;
        else role[c] = R_ROW, rows++;
        continue;
      }
      if (!is_region_op(o->kind)) { ok = 0; break; }
      for (int k = 0; k < o->nin; k++) {
        int u = o->in[k], pr = g->t[u].producer;
        if (u == t || pr < 0) continue;
        int from_col = g->op[pr].kind == OP_MATMUL || role[pr] == R_SHARD;
        if (!from_col) ok = 0;
      }
      if (role[c] != R_SHARD) {
        role[c] = R_SHARD;
        if (sp < 255) stack[sp++] = o->out;
        else ok = 0;
      }
    }
  }
  return ok && rows > 0;
}

void opgraph_attn(const OpGraph *g, int i, int nb, int nt, KAttn *out) {
  const OgOp *o = &g->op[i];
  int d = o->kind == OP_ATTENTION_BWD ? g->t[g->op[o->fwd].out].width : g->t[o->out].width;
  int hs = d / o->heads, kv = hs * o->kv_heads;
  int cross = o->kind == OP_ATTENTION ? o->nin == 2 : o->nin == 3;
  *out = (KAttn){.B = nb, .T = nt, .Tk = nt, .NH = o->heads, .NH_kv = o->kv_heads, .HS = hs, .causal = o->causal,
                 .q_stride = cross ? d : d + 2 * kv, .kv_stride = cross ? 2 * kv : d + 2 * kv, .out_stride = d};
}

void opgraph_shard_copy(const OgParam *p, int tp, int rank, const float *full, float *part) {
  ParamShape sh = {(int)p->shard, p->rows, p->cols, p->full_rows, p->full_cols, p->q_rows, p->kv_rows};
  param_shard_copy(&sh, tp, rank, full, part);
}

OpGraph *opgraph_shard(Arena *a, const OpGraph *g, int tp, int rank) {
  if (tp <= 1) return (OpGraph *)g;
  int nf = g->nfwd;
  int *role = arena_alloc(a, sizeof(int) * (size_t)(g->nop + 1));
  int *nreaders = arena_alloc(a, sizeof(int) * (size_t)(g->nt + 1));
  int **readers = arena_alloc(a, sizeof(int *) * (size_t)(g->nt + 1));
  for (int i = 0; i < g->nop; i++)
    for (int k = 0; k < g->op[i].nin; k++) nreaders[g->op[i].in[k]]++;
  for (int t = 0; t < g->nt; t++) readers[t] = arena_alloc(a, sizeof(int) * (size_t)(nreaders[t] + 1)), nreaders[t] = 0;
  for (int i = 0; i < g->nop; i++)
    for (int k = 0; k < g->op[i].nin; k++) {
      int t = g->op[i].in[k];
      readers[t][nreaders[t]++] = i;
    }
  /* classify: a matmul reading a replicated tensor whose output reaches linears through a region */
  for (int i = 0; i < nf; i++) {
    const OgOp *o = &g->op[i];
    if (o->kind != OP_MATMUL || role[i] != R_REP) continue;
    int pr = g->t[o->in[0]].producer;
    if (pr >= 0 && (role[pr] == R_SHARD || role[pr] == R_COL)) continue;
    if (g->param[o->weight].mod->tie || o->mod->tie) continue;
    int *trial = arena_alloc(a, sizeof(int) * (size_t)(g->nop + 1));
    memcpy(trial, role, sizeof(int) * (size_t)g->nop);
    if (column_ok(g, i, trial, readers, nreaders)) {
      trial[i] = R_COL;
      /* every matmul feeding the region's ops must be column-parallel too */
      memcpy(role, trial, sizeof(int) * (size_t)g->nop);
    }
  }
  /* vocabulary parallel: the head feeding the loss, when the vocabulary divides by tp */
  int vp_head = -1, vp_xent = -1;
  if (g->loss >= 0) {
    int x = g->t[g->loss].producer;
    int h = x >= 0 && g->op[x].kind == OP_XENT ? g->t[g->op[x].in[0]].producer : -1;
    if (h >= 0 && g->op[h].kind == OP_MATMUL && g->op[h].row0 == 0 && g->param[g->op[h].weight].rows % tp == 0 &&
        g->op[h].rows == g->param[g->op[h].weight].rows)
      vp_head = h, vp_xent = x, role[h] = R_COL;
  }
  for (int i = 0; i < nf; i++) /* matmuls producing region inputs */
    if (g->op[i].kind == OP_MATMUL && role[i] == R_REP)
      for (int r = 0; r < nreaders[g->op[i].out]; r++)
        if (role[readers[g->op[i].out][r]] == R_SHARD) role[i] = R_COL;
  /* rebuild the forward */
  B b = {.A = a};
  int *remap = arena_alloc(a, sizeof(int) * (size_t)(g->nt + 1)), *entered = arena_alloc(a, sizeof(int) * (size_t)(g->nt + 1));
  for (int t = 0; t < g->nt; t++) remap[t] = entered[t] = -1;
  for (int t = 0; t < g->nt; t++) {
    const OgTensor *ot = &g->t[t];
    if (ot->producer < 0 && (t == g->tokens || t == g->targets)) remap[t] = tensor(&b, ot->width, ot->is_int, ot->what);
  }
  for (int k = 0; k < g->nparam; k++) {
    OgParam *pp = arena_alloc(a, sizeof *pp);
    *pp = g->param[k];
    ptrvec_push(a, &b.param, pp);
  }
#define PARAM(id) ((OgParam *)b.param.items[id])
  for (int i = 0; i < nf; i++) {
    const OgOp *o = &g->op[i];
    b.top = o->top;
    OgOp *n = emit(&b, o->kind, PHASE_F, -1, o->loc, o->mod);
    *n = *o;
    n->fwd = -1;
    for (int k = 0; k < o->nin; k++) n->in[k] = remap[o->in[k]];
    int w = g->t[o->out].width;
    if (role[i] == R_COL) {
      int src = o->in[0];
      if (entered[src] < 0) { /* enter the parallel region: identity now, all-reduce of the gradient later */
        b.op.len--; /* put the entry before this matmul */
        entered[src] = tensor(&b, g->t[src].width, 0, g->t[src].what);
        OgOp *e = emit(&b, OP_TP_ENTER, PHASE_F, entered[src], o->loc, o->mod);
        e->in[0] = remap[src], e->nin = 1;
        ptrvec_push(a, &b.op, n);
      }
      n->in[0] = entered[src];
      OgParam *wp = PARAM(o->weight);
      int qkv = o->mod && o->mod->prim == PRIM_ATTENTION && strstr(wp->name, "c_attn");
      int64_t d = qkv ? o->mod->dim : 0, kv = qkv ? o->mod->dim / o->mod->heads * o->mod->kv_heads : 0;
      if (qkv) {
        wp->shard = SHARD_QKV, wp->q_rows = d, wp->kv_rows = kv, wp->rows = (d + 2 * kv) / tp;
        n->row0 = o->row0 == 0 ? 0 : (int)(d / tp);
        n->rows = o->rows / tp;
        if (o->bias >= 0) {
          OgParam *bp = PARAM(o->bias);
          bp->shard = SHARD_QKV, bp->q_rows = d, bp->kv_rows = kv, bp->rows = (d + 2 * kv) / tp;
        }
      } else {
        wp->shard = SHARD_ROWS, wp->rows = wp->full_rows / tp;
        n->rows = o->rows / tp;
        if (o->bias >= 0) PARAM(o->bias)->shard = SHARD_ROWS, PARAM(o->bias)->rows = PARAM(o->bias)->full_rows / tp;
      }
      n->out = tensor(&b, w / tp, 0, g->t[o->out].what);
    } else if (role[i] == R_ROW) {
      OgParam *wp = PARAM(o->weight);
      wp->shard = SHARD_COLS, wp->cols = wp->full_cols / tp;
      n->bias = -1;
      int part = tensor(&b, w, 0, g->t[o->out].what);
      n->out = part;
      int sum = tensor(&b, w, 0, g->t[o->out].what);
      OgOp *ar = emit(&b, OP_ALLREDUCE, PHASE_F, sum, o->loc, o->mod);
      ar->in[0] = part, ar->nin = 1;
      int fin = sum;
      if (o->bias >= 0) {
        fin = tensor(&b, w, 0, g->t[o->out].what);
        OgOp *bo = emit(&b, OP_BIAS, PHASE_F, fin, o->loc, o->mod);
        bo->in[0] = sum, bo->nin = 1, bo->bias = o->bias;
      }
      remap[o->out] = fin;
      T(&b, part)->producer = b.op.len - (o->bias >= 0 ? 3 : 2);
      continue;
    } else if (i == vp_xent) { /* the softmax's max and sum over all ranks' slices */
      int logits = remap[o->in[0]], vs = T(&b, logits)->width;
      b.op.len--;
      int m = tensor(&b, 1, 0, "vocab max");
      OgOp *q = emit(&b, OP_VP_ROWMAX, PHASE_F, m, o->loc, o->mod);
      q->in[0] = logits, q->nin = 1;
      int M = tensor(&b, 1, 0, "vocab max");
      q = emit(&b, OP_ALLREDUCE, PHASE_F, M, o->loc, o->mod);
      q->in[0] = m, q->nin = 1, q->scalar = 1; /* max */
      int st = tensor(&b, 2, 0, "vocab sums");
      q = emit(&b, OP_VP_SUMEXP, PHASE_F, st, o->loc, o->mod);
      q->in[0] = logits, q->in[1] = remap[o->in[1]], q->in[2] = M, q->nin = 3, q->tp = tp, q->tp_rank = rank;
      int S = tensor(&b, 2, 0, "vocab sums");
      q = emit(&b, OP_ALLREDUCE, PHASE_F, S, o->loc, o->mod);
      q->in[0] = st, q->nin = 1;
      ptrvec_push(a, &b.op, n);
      n->in[2] = M, n->in[3] = S, n->nin = 4, n->tp = tp, n->tp_rank = rank;
      (void)vs;
      n->out = tensor(&b, 1, 0, g->t[o->out].what);
    } else if (o->kind == OP_EMBEDDING && vp_head >= 0 && o->weight == g->op[vp_head].weight) {
      /* the tied token embedding: this rank's vocabulary rows, then the sum over ranks */
      int part = tensor(&b, w, 0, g->t[o->out].what);
      n->out = part, n->tp = tp, n->tp_rank = rank;
      int sum = tensor(&b, w, 0, g->t[o->out].what);
      OgOp *ar = emit(&b, OP_ALLREDUCE, PHASE_F, sum, o->loc, o->mod);
      ar->in[0] = part, ar->nin = 1;
      remap[o->out] = sum;
      continue;
    } else if (role[i] == R_SHARD) {
      n->out = tensor(&b, w / tp, 0, g->t[o->out].what);
      if (o->kind == OP_ATTENTION) n->heads = o->heads / tp, n->kv_heads = o->kv_heads / tp;
    } else
      n->out = o->out >= 0 ? tensor(&b, w, g->t[o->out].is_int, g->t[o->out].what) : -1;
    if (n->out >= 0) T(&b, n->out)->producer = b.op.len - 1;
    remap[o->out] = n->out;
  }
#undef PARAM
  /* fix producers (entries were inserted before their matmuls) */
  for (int i = 0; i < b.op.len; i++) {
    OgOp *o = b.op.items[i];
    if (o->out >= 0) T(&b, o->out)->producer = i;
  }
  OpGraph *r = arena_alloc(a, sizeof *r);
  *r = (OpGraph){.tokens = remap[g->tokens >= 0 ? g->tokens : 0], .targets = g->targets >= 0 ? remap[g->targets] : -1,
                 .loss = g->loss >= 0 ? remap[g->loss] : -1, .output = remap[g->output]};
  int nfwd = b.op.len;
  if (r->loss >= 0) backward(&b, nfwd, r->loss);
  (void)rank;
  return finish(&b, r, nfwd);
}
