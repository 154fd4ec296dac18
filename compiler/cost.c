/* cost.c — the cost model of modules and stages, and pipec
 * --explain-partition. The formulas are in cost.h; each case below says
 * what it counts.
 *
 * FLOPs come from module_flops_per_token() (check.c), per module. Bytes of
 * activations come from a walk of the forward bodies: every tensor gets an
 * id and a width (its last dimension, 0 when unknown or when it holds token
 * indices), module calls and operations record which tensors they keep for
 * backward, and a tensor kept twice by one module (or on one stage) counts
 * once.
 */
#include <stdlib.h>
#include <string.h>

#include "compiler/cost.h"

/* ---- bytes per parameter and per element ---- */

static int is_bf16(const char *precision) { return precision && !strcmp(precision, "bf16"); }

double cost_act_elt_bytes(const char *precision) { return is_bf16(precision) ? 2.0 : 4.0; }

double cost_bytes_per_param(const char *precision, const char *optimizer, double momentum) {
  /* fp32: weights 4 + grads 4; bf16: weights 2 + grads 2 + fp32 master 4 */
  double b = is_bf16(precision) ? 2.0 + 2.0 + 4.0 : 4.0 + 4.0;
  if (!optimizer || strcmp(optimizer, "sgd")) b += 8.0; /* adamw: m and v in fp32 */
  else if (momentum > 0) b += 4.0;                      /* sgd: the momentum buffer */
  return b;
}

/* ---- FLOPs ---- */

static double bwd_flops_per_token(const Module *m, int64_t T) {
  if (m->prim == PRIM_NONE) {
    double f = 0;
    for (int i = 0; i < m->nkids; i++) f += bwd_flops_per_token(m->kids[i], T);
    return f;
  }
  double f = module_flops_per_token(m, T);
  /* matmuls: input gradient and weight gradient, each as costly as forward */
  if (m->prim == PRIM_LINEAR || m->prim == PRIM_ATTENTION) return 2.0 * f;
  /* layernorm, rmsnorm, embedding (gradient scatter); 0 for the rest */
  return f;
}

/* ---- activations kept for backward: the forward walk ---- */

typedef struct Tensor {
  int64_t width; /* elements per token; 0: unknown, or token indices */
  int id;        /* -1 for a scalar */
  int scalar;    /* a number or a hyper-parameter, not a tensor */
} Tensor;

typedef struct Kept {
  int id, owner; /* owner: top-level module (index into Program.mods) keeping it */
  double bytes;  /* per token */
} Kept;

typedef struct Walk {
  double elt;       /* bytes of one activation element */
  int64_t ce_width; /* logits width when the loss's input width is unknown */
  int owner;        /* the top-level module being walked (or called last) */
  int next_id;
  Kept *kept;
  int nkept, cap;
} Walk;

typedef struct Local {
  const char *name;
  Tensor t;
} Local;

typedef struct Frame {
  Walk *W;
  Module *const *kids; /* modules callable in this forward */
  int nkids;
  int toplevel;        /* the model's forward: calls set Walk.owner */
  Local *locals;
  int nlocals;
} Frame;

static const Tensor SCALAR = {0, -1, 1};

static Tensor fresh(Walk *W, int64_t width) {
  Tensor t = {width, W->next_id++, 0};
  return t;
}

static void keep_id(Walk *W, int id, double bytes) {
  if (bytes <= 0 || id < 0) return;
  if (W->nkept == W->cap) {
    W->cap = W->cap ? 2 * W->cap : 64;
    Kept *k = realloc(W->kept, sizeof *k * (size_t)W->cap);
    if (!k) {
      fputs("pipec: out of memory in the cost model\n", stderr);
      exit(3);
    }
    W->kept = k;
  }
  W->kept[W->nkept].id = id;
  W->kept[W->nkept].owner = W->owner;
  W->kept[W->nkept].bytes = bytes;
  W->nkept++;
}

/* Keep tensor t at `width` elements of elt bytes (width: t's own when 0). */
static void keep(Walk *W, Tensor t, int64_t width) {
  if (t.scalar) return;
  keep_id(W, t.id, (double)(width ? width : t.width) * W->elt);
}

/* Something backward needs that no other tensor of the walk is (q, k, v,
 * statistics, masks): `bytes` per token under a new id. */
static void keep_new(Walk *W, double bytes) { keep_id(W, W->next_id++, bytes); }

static int cmp_kept(const void *a, const void *b) {
  const Kept *x = a, *y = b;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Bytes per token kept by owners first..last, each tensor once. */
static double kept_bytes(const Walk *W, int first, int last) {
  int n = 0;
  Kept *k = malloc(sizeof *k * (size_t)(W->nkept + 1));
  if (!k) {
    fputs("pipec: out of memory in the cost model\n", stderr);
    exit(3);
  }
  for (int i = 0; i < W->nkept; i++)
    if (W->kept[i].owner >= first && W->kept[i].owner <= last) k[n++] = W->kept[i];
  qsort(k, (size_t)n, sizeof *k, cmp_kept);
  double sum = 0;
  for (int i = 0; i < n;) {
    double mx = k[i].bytes;
    int j = i + 1;
    for (; j < n && k[j].id == k[i].id; j++)
      if (k[j].bytes > mx) mx = k[j].bytes;
    sum += mx;
    i = j;
  }
  free(k);
  return sum;
}

static Tensor walk_forward(Walk *W, const Entry *fwd, Module *const *kids, int nkids, int toplevel, const Tensor *args,
                           int nargs);

static int module_inputs(const Module *m) {
  if (m->prim == PRIM_NONE) return m->forward ? param_count(m->forward->params) : 1;
  return m->prim == PRIM_CROSS_ENTROPY ? 2 : 1;
}

/* A call of module m on args; returns its output. */
static Tensor call_module(Walk *W, const Module *m, const Tensor *args, int nargs) {
  Tensor none = {0, -1, 0}, x = nargs > 0 ? args[0] : none;
  switch (m->prim) {
  case PRIM_LINEAR:
    /* the input, for the weight gradient: in elements */
    keep(W, x, m->in);
    return fresh(W, m->out);
  case PRIM_LAYERNORM:
    /* the input (dim) and per-token mean and rstd in fp32 */
    keep(W, x, m->dim);
    keep_new(W, 2 * 4.0);
    return fresh(W, m->dim);
  case PRIM_RMSNORM:
    /* the input (dim) and per-token rstd in fp32 */
    keep(W, x, m->dim);
    keep_new(W, 4.0);
    return fresh(W, m->dim);
  case PRIM_ATTENTION: {
    /* flash-style: the qkv projection's input (dim; the memory of cross-
       attention is a second input, dim), q, k, v (dim + 2*kv_dim), the
       output before the projection (dim), logsumexp (heads, fp32) */
    int64_t kv = m->dim / m->heads * m->kv_heads;
    keep(W, x, m->dim);
    if (nargs > 1) keep(W, args[1], m->dim);
    keep_new(W, (double)(m->dim + 2 * kv) * W->elt);
    keep_new(W, (double)m->dim * W->elt);
    keep_new(W, (double)m->heads * 4.0);
    return fresh(W, m->dim);
  }
  case PRIM_EMBEDDING:
    /* nothing: the input is token indices */
    return fresh(W, m->dim);
  case PRIM_ACTIVATION:
    /* the input, as wide as the tensor it gets (0 when unknown) */
    keep(W, x, 0);
    return fresh(W, x.width);
  case PRIM_DROPOUT:
    /* a 1-byte mask per element when p > 0 */
    if (m->p > 0) keep_new(W, (double)x.width);
    return fresh(W, x.width);
  case PRIM_CROSS_ENTROPY:
    /* the logits: the input's width, else the head's output */
    keep(W, x, x.width ? x.width : W->ce_width);
    return fresh(W, 0);
  case PRIM_NONE:
    if (m->forward) return walk_forward(W, m->forward, m->kids, m->nkids, 0, args, nargs);
    return fresh(W, 0);
  }
  return fresh(W, 0);
}

/* Modules called `name` here: one, or a repeated group in order. */
static int find_kids(const Frame *F, const char *name, int *first, int *last) {
  for (int i = 0; i < F->nkids; i++) {
    const Module *k = F->kids[i];
    if (!strcmp(k->name, name)) {
      *first = *last = i;
      return 1;
    }
    if (k->group && !strcmp(k->group, name)) {
      int j = i;
      while (j + 1 < F->nkids && F->kids[j + 1]->group && !strcmp(F->kids[j + 1]->group, name)) j++;
      *first = i, *last = j;
      return 1;
    }
  }
  return 0;
}

static Tensor eval(Frame *F, const Node *n);

static Tensor elementwise(Walk *W, Tensor a, Tensor b) {
  if (a.scalar && b.scalar) return SCALAR;
  return fresh(W, a.width > b.width ? a.width : b.width);
}

static Tensor eval_call(Frame *F, const Node *n) {
  Walk *W = F->W;
  int na = node_count(n->kids);
  Tensor *a = malloc(sizeof *a * (size_t)(na + 1));
  if (!a) {
    fputs("pipec: out of memory in the cost model\n", stderr);
    exit(3);
  }
  int i = 0;
  for (const Node *k = n->kids; k; k = k->next) a[i++] = eval(F, k);
  Tensor out = SCALAR, x = na > 0 ? a[0] : SCALAR, y = na > 1 ? a[1] : SCALAR;
  const char *op = n->str;
  int first, last;
  if (find_kids(F, op, &first, &last)) {
    /* a group runs its modules in turn: the first input is chained, any
       others (a decoder's memory) go to every module */
    for (int k = first; k <= last; k++) {
      if (F->toplevel) W->owner = k;
      out = call_module(W, F->kids[k], a, na);
      if (na) a[0] = out;
    }
  } else if (!strcmp(op, "softmax")) {
    /* backward needs its output */
    out = x.scalar ? SCALAR : fresh(W, x.width);
    keep(W, out, 0);
  } else if (!strcmp(op, "add")) {
    out = elementwise(W, x, y); /* keeps nothing */
  } else if (!strcmp(op, "mul")) {
    /* each input's gradient needs the other input */
    if (!x.scalar && !y.scalar) keep(W, x, 0), keep(W, y, 0);
    out = elementwise(W, x, y);
  } else if (!strcmp(op, "dropout")) {
    /* a 1-byte mask per element when p > 0; p only known when a number */
    const Node *p = n->kids ? n->kids->next : NULL;
    double prob = !p ? 0 : p->kind == N_FLOAT ? p->fval : p->kind == N_INT ? (double)p->ival : 0;
    if (prob > 0 && !x.scalar) keep_new(W, (double)x.width);
    out = x.scalar ? SCALAR : fresh(W, x.width);
  } else if (!strcmp(op, "positions")) {
    out = fresh(W, 0); /* token indices */
  } else if (na == 1) {
    /* gelu, gelu_tanh, relu, silu, or a hyper-parameter naming one (act =
       gelu_tanh, then act(x)): backward needs the input */
    keep(W, x, 0);
    out = x.scalar ? SCALAR : fresh(W, x.width);
  } else {
    /* a hyper-parameter naming a two-input operation: taken as add */
    out = elementwise(W, x, y);
  }
  free(a);
  return out;
}

static Tensor eval(Frame *F, const Node *n) {
  Walk *W = F->W;
  switch (n->kind) {
  case N_NAME:
    for (int i = F->nlocals - 1; i >= 0; i--)
      if (!strcmp(F->locals[i].name, n->str)) return F->locals[i].t;
    return SCALAR; /* a scalar hyper-parameter */
  case N_CALL: return eval_call(F, n);
  case N_NEG: {
    Tensor a = eval(F, n->a);
    return a.scalar ? a : fresh(W, a.width); /* keeps nothing */
  }
  case N_BINOP: {
    Tensor a = eval(F, n->a), b = eval(F, n->b);
    if (n->op == '*' && !a.scalar && !b.scalar) keep(W, a, 0), keep(W, b, 0); /* da = g*b, db = g*a */
    if (n->op == '/' && !b.scalar) {                                            /* da = g/b, db = -g*a/b^2 */
      keep(W, b, 0);
      if (!a.scalar) keep(W, a, 0);
    }
    return elementwise(W, a, b); /* + and - keep nothing */
  }
  default: return SCALAR; /* a number */
  }
}

static Tensor walk_forward(Walk *W, const Entry *fwd, Module *const *kids, int nkids, int toplevel, const Tensor *args,
                           int nargs) {
  int cap = param_count(fwd->params) + entry_count(fwd->body) + 1;
  Frame F = {.W = W, .kids = kids, .nkids = nkids, .toplevel = toplevel};
  F.locals = malloc(sizeof *F.locals * (size_t)cap);
  if (!F.locals) {
    fputs("pipec: out of memory in the cost model\n", stderr);
    exit(3);
  }
  int i = 0;
  for (const Param *p = fwd->params; p; p = p->next, i++) {
    F.locals[F.nlocals].name = p->name;
    F.locals[F.nlocals++].t = i < nargs ? args[i] : fresh(W, 0);
  }
  Tensor ret = fresh(W, 0);
  for (const Entry *e = fwd->body; e; e = e->next) {
    if (e->kind == E_ASSIGN) {
      Tensor t = eval(&F, e->value);
      F.locals[F.nlocals].name = e->name;
      F.locals[F.nlocals++].t = t;
    } else if (e->kind == E_RETURN) {
      ret = eval(&F, e->value);
      break;
    }
  }
  free(F.locals);
  return ret;
}

/* ---- modules ---- */

ModuleCost cost_module(const Module *m, int64_t seq, const char *precision) {
  ModuleCost c = {0};
  c.fwd_flops = module_flops_per_token(m, seq);
  c.bwd_flops = bwd_flops_per_token(m, seq);
  c.params = m->nparams;
  c.param_bytes = (double)m->nparams * cost_bytes_per_param(precision, "adamw", 0);
  Walk W = {.elt = cost_act_elt_bytes(precision)};
  int na = module_inputs(m);
  Tensor *args = malloc(sizeof *args * (size_t)(na + 1));
  if (!args) {
    fputs("pipec: out of memory in the cost model\n", stderr);
    exit(3);
  }
  for (int i = 0; i < na; i++) args[i] = fresh(&W, 0); /* widths unknown on its own */
  call_module(&W, m, args, na);
  c.act_bytes = kept_bytes(&W, 0, 0);
  free(args);
  free(W.kept);
  return c;
}

/* ---- stages ---- */

static int64_t head_width(const Program *p) {
  for (int i = 0; i < p->nmods; i++)
    if ((p->mods[i]->role & ROLE_HEAD) && p->mods[i]->prim == PRIM_LINEAR) return p->mods[i]->out;
  return 0;
}

void cost_stages(const Program *p, const Pipeline *pl, StageCostSummary *out) {
  int64_t T = p->seq;
  double bpp = cost_bytes_per_param(p->precision, p->optimizer, p->momentum);
  Walk W = {.elt = cost_act_elt_bytes(p->precision), .ce_width = head_width(p)};
  if (p->forward) {
    int na = param_count(p->forward->params);
    Tensor *args = malloc(sizeof *args * (size_t)(na + 1));
    if (!args) {
      fputs("pipec: out of memory in the cost model\n", stderr);
      exit(3);
    }
    for (int i = 0; i < na; i++) args[i] = fresh(&W, 0); /* tokens, targets: indices */
    walk_forward(&W, p->forward, p->mods, p->nmods, 1, args, na);
    free(args);
  } else {
    /* no forward (never after checking): each module on its own */
    for (int i = 0; i < p->nmods; i++) {
      W.owner = i;
      int na = module_inputs(p->mods[i]);
      Tensor a[2] = {fresh(&W, 0), fresh(&W, 0)};
      if (p->mods[i]->prim != PRIM_NONE) call_module(&W, p->mods[i], a, na);
      else keep_new(&W, cost_module(p->mods[i], T, p->precision).act_bytes);
    }
  }
  for (int s = 0; s < pl->nstages; s++) {
    StageCostSummary *o = &out[s];
    memset(o, 0, sizeof *o);
    o->first = pl->stages[s].first;
    o->last = pl->stages[s].last;
    for (int i = o->first; i <= o->last; i++) {
      const Module *m = p->mods[i];
      o->fwd_flops += module_flops_per_token(m, T);
      o->bwd_flops += bwd_flops_per_token(m, T);
      o->params += m->nparams;
    }
    o->param_bytes = (double)o->params * bpp;
    o->act_bytes_per_token = kept_bytes(&W, o->first, o->last);
  }
  free(W.kept);
}

double cost_microbatch_tokens(const Program *p) {
  int64_t mbs = 0;
  for (int i = 0; i < p->npipes; i++) mbs += p->pipes[i].microbatches;
  if (mbs <= 0) mbs = 1;
  return (double)p->batch / (double)mbs * (double)p->seq;
}

/* ---- --explain-partition ---- */

void cost_format_count(char *b, size_t n, double x) {
  const char *u = "";
  if (x >= 1e9) x /= 1e9, u = "B";
  else if (x >= 1e6) x /= 1e6, u = "M";
  else if (x >= 1e3) x /= 1e3, u = "K";
  snprintf(b, n, *u ? "%.2f%s" : "%.0f%s", x, u);
}

static void fmt_flops(char *b, size_t n, double x) {
  const char *u = "";
  if (x >= 1e15) x /= 1e15, u = "P";
  else if (x >= 1e12) x /= 1e12, u = "T";
  else if (x >= 1e9) x /= 1e9, u = "G";
  else if (x >= 1e6) x /= 1e6, u = "M";
  else if (x >= 1e3) x /= 1e3, u = "K";
  snprintf(b, n, *u ? "%.2f%s" : "%.0f%s", x, u);
}

void cost_format_bytes(char *b, size_t n, double x) {
  static const char *const u[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (x < 1024) {
    snprintf(b, n, "%.0f B", x);
    return;
  }
  int k = -1;
  while (x >= 1024 && k < 4) x /= 1024, k++;
  snprintf(b, n, "%.2f %s", x, u[k]);
}

/* An integer without decimals, anything else with two. */
static void fmt_num(char *b, size_t n, double x) {
  if (x == (double)(int64_t)x) snprintf(b, n, "%lld", (long long)x);
  else snprintf(b, n, "%.2f", x);
}

/* The pipeline rank holding stage s (plan.h): without virtual stages the
 * stage itself; with v > 1, loop placement (s mod pp), or a V under zbv. */
static int stage_rank(const Program *p, const Pipeline *pl, int s) {
  if (pl->template_name || p->virtual_stages <= 1 || p->pp <= 0) return s;
  int block = s / p->pp, within = s % p->pp;
  if (p->schedule == SCHED_ZBV && block % 2) return p->pp - 1 - within;
  return within;
}

static int stage_of(const Pipeline *pl, int mod) {
  for (int s = 0; s < pl->nstages; s++)
    if (mod >= pl->stages[s].first && mod <= pl->stages[s].last) return s;
  return -1;
}

static int mod_index(const Program *p, const Module *m) {
  for (int i = 0; i < p->nmods; i++)
    if (p->mods[i] == m) return i;
  return -1;
}

enum { NCOL = 8, CELL = 160 };

static void explain_pipeline(FILE *out, const Program *p, int k, int reps, double tokens) {
  const Pipeline *pl = &p->pipes[k];
  int ns = pl->nstages;
  StageCostSummary *st = malloc(sizeof *st * (size_t)(ns + 1));
  char(*cell)[NCOL][CELL] = malloc(sizeof *cell * (size_t)(ns + 1));
  if (!st || !cell) {
    fputs("pipec: out of memory in the cost model\n", stderr);
    exit(3);
  }
  cost_stages(p, pl, st);

  fprintf(out, "pipeline %d%s%s%s: %d stage%s, %d microbatch%s", k, pl->template_name ? " (template " : "",
          pl->template_name ? pl->template_name : "", pl->template_name ? ")" : "", ns, ns == 1 ? "" : "s",
          pl->microbatches, pl->microbatches == 1 ? "" : "es");
  if (reps > 1) fprintf(out, ", x%d data-parallel replicas", reps);
  fputc('\n', out);

  static const char *const head[NCOL] = {"stage", "modules", "count", "fwd FLOP/mb", "bwd FLOP/mb",
                                         "params", "params+grads+opt", "activations/mb"};
  for (int c = 0; c < NCOL; c++) snprintf(cell[0][c], CELL, "%s", head[c]);
  double total = 0, worst = -1;
  int slowest = 0;
  for (int s = 0; s < ns; s++) {
    const StageCostSummary *o = &st[s];
    char(*r)[CELL] = cell[s + 1];
    snprintf(r[0], CELL, "%d", s);
    if (o->last > o->first)
      snprintf(r[1], CELL, "%s .. %s", p->mods[o->first]->path, p->mods[o->last]->path);
    else
      snprintf(r[1], CELL, "%s", p->mods[o->first]->path);
    snprintf(r[2], CELL, "%d", o->last - o->first + 1);
    fmt_flops(r[3], CELL, o->fwd_flops * tokens);
    fmt_flops(r[4], CELL, o->bwd_flops * tokens);
    cost_format_count(r[5], CELL, (double)o->params);
    cost_format_bytes(r[6], CELL, o->param_bytes);
    cost_format_bytes(r[7], CELL, o->act_bytes_per_token * tokens);
    double f = o->fwd_flops + o->bwd_flops;
    total += f;
    if (f > worst) worst = f, slowest = s;
  }
  int w[NCOL] = {0};
  for (int s = 0; s <= ns; s++)
    for (int c = 0; c < NCOL; c++) {
      int len = (int)strlen(cell[s][c]);
      if (len > w[c]) w[c] = len;
    }
  for (int s = 0; s <= ns; s++) {
    fputs("  ", out);
    for (int c = 0; c < NCOL; c++) {
      int left = c == 1; /* the module names; numbers to the right */
      if (c) fputs("  ", out);
      if (c == NCOL - 1) fprintf(out, "%*s", w[c], cell[s][c]);
      else fprintf(out, left ? "%-*s" : "%*s", w[c], cell[s][c]);
    }
    fputc('\n', out);
  }
  double mean = total / ns;
  fprintf(out, "  imbalance (slowest / mean stage fwd+bwd FLOPs): %.2f, slowest stage %d\n", mean > 0 ? worst / mean : 1.0,
          slowest);

  /* interleaved stages: what each rank carries */
  if (!pl->template_name && p->virtual_stages > 1 && p->pp > 1) {
    double *rk = calloc((size_t)p->pp, sizeof *rk);
    if (!rk) {
      fputs("pipec: out of memory in the cost model\n", stderr);
      exit(3);
    }
    for (int s = 0; s < ns; s++) {
      int r = stage_rank(p, pl, s);
      if (r >= 0 && r < p->pp) rk[r] += st[s].fwd_flops + st[s].bwd_flops;
    }
    double rworst = -1;
    int rslow = 0;
    for (int r = 0; r < p->pp; r++)
      if (rk[r] > rworst) rworst = rk[r], rslow = r;
    double rmean = total / p->pp;
    fprintf(out, "  per rank (%d stages each, %s placement): imbalance %.2f, slowest rank %d\n", p->virtual_stages,
            p->schedule == SCHED_ZBV ? "V" : "loop", rmean > 0 ? rworst / rmean : 1.0, rslow);
    free(rk);
  }

  /* tied weights across stages: the user's stage holds a copy */
  for (int i = 0; i < p->nmods; i++) {
    const Module *m = p->mods[i];
    if (m->prim != PRIM_LINEAR || !m->tie) continue;
    int t = mod_index(p, m->tie), si = stage_of(pl, i), stt = stage_of(pl, t);
    if (t < 0 || si < 0 || stt < 0 || stage_rank(p, pl, si) == stage_rank(p, pl, stt)) continue;
    char b[CELL];
    cost_format_bytes(b, sizeof b, (double)m->in * (double)m->out * 2.0 * cost_act_elt_bytes(p->precision));
    fprintf(out, "  tie: %s (stage %d) uses the weight of %s (stage %d); stage %d also holds a copy and its gradient, %s, not counted above\n",
            m->path, si, m->tie->path, stt, si, b);
  }
  free(cell);
  free(st);
}

void cost_explain_partition(FILE *out, const Program *p) {
  char pc[32], bs[32], tk[32], sq[32];
  cost_format_count(pc, sizeof pc, (double)p->nparams);
  double tokens = cost_microbatch_tokens(p);
  int64_t mbs = 0;
  for (int i = 0; i < p->npipes; i++) mbs += p->pipes[i].microbatches;
  fmt_num(tk, sizeof tk, tokens);
  fmt_num(sq, sizeof sq, p->seq > 0 ? tokens / (double)p->seq : 0);
  fmt_num(bs, sizeof bs, cost_bytes_per_param(p->precision, p->optimizer, p->momentum));
  fprintf(out, "model %s: %s parameters (%lld), seq %lld, precision %s, optimizer %s (%s bytes/parameter), microbatch %s tokens (%s sequences: batch %lld / %lld microbatches%s)\n",
          p->model_name, pc, (long long)p->nparams, (long long)p->seq, p->precision, p->optimizer, bs, tk, sq,
          (long long)p->batch, (long long)mbs, p->has_train ? "" : "; defaults, no train section");
  if (p->tp > 1)
    fprintf(out, "tp %d: a stage's FLOPs and bytes are for its %d tensor-parallel ranks together\n", p->tp, p->tp);
  for (int k = 0; k < p->npipes; k++) {
    const Pipeline *pl = &p->pipes[k];
    int seen = 0, reps = 0;
    for (int j = 0; j < k; j++)
      if (p->pipes[j].stages == pl->stages) seen = 1;
    if (seen) continue; /* replicas share one placement */
    for (int j = k; j < p->npipes; j++)
      if (p->pipes[j].stages == pl->stages) reps++;
    explain_pipeline(out, p, k, reps, tokens);
  }
}
