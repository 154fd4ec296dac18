/* placement.c — the sections after the model: where modules run (split,
 * stages, stage_ids, partition, template), how many ranks (parallel), and
 * how to train or infer. Every check here reports at the user's line and
 * names the numbers that disagree.
 *
 *   split    { layers.4: BEGINNING  layers.8: END }     PyTorch SplitPoint
 *   stages   { 0: [wte, wpe, layers.0 .. layers.5]  1: [layers.6 .. loss] }
 *   stage_ids = [0]*6 + [1]*6                           LiBai, one per layer
 *   partition = auto                                    balance by cost model
 *   template NAME { split { ... }  microbatches = 4 }   Oobleck templates
 */
#include <math.h>
#include <string.h>

#include "compiler/cost.h"
#include "compiler/sema.h"

const char *const schedule_names[] = {"gpipe", "1f1b", "interleaved", "looped_bfs", "zb1p", "zbv", "forward_only"};
enum { NSCHED = 7 };

typedef struct Placement {
  const char *name; /* template name, or NULL */
  Loc loc;          /* the template / the file's first placement entry */
  const Entry *split, *stages, *stage_ids, *partition;
  const Entry *pp_entry, *mb_entry;
  int64_t pp, microbatches;
} Placement;

/* Evaluate `key = value` entries of a section against a list of known keys. */
static void read_keys(Sema *S, const Entry *sec, const char *const *keys, int nkeys, Value **vals, const Entry **where) {
  for (int i = 0; i < nkeys; i++) vals[i] = NULL, where[i] = NULL;
  for (const Entry *e = sec->body; e; e = e->next) {
    if (e->kind != E_ASSIGN) {
      diag_error(S->D, e->loc, "'%s' takes settings of the form 'key = value'%s", sec->name,
                 e->kind == E_LABEL ? arena_printf(S->A, "; write %s = ... instead of %s: ...", e->name, e->name) : "");
      continue;
    }
    int k = 0;
    while (k < nkeys && strcmp(keys[k], e->name)) k++;
    if (k == nkeys) {
      const char *dym = did_you_mean(e->name, keys, nkeys);
      char list[400] = "";
      for (int j = 0; j < nkeys; j++) {
        if (j) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, keys[j], sizeof list - strlen(list) - 1);
      }
      if (dym) diag_error(S->D, e->name_loc, "unknown setting '%s' in %s; did you mean '%s'?", e->name, sec->name, dym);
      else diag_error(S->D, e->name_loc, "unknown setting '%s' in %s; known settings: %s", e->name, sec->name, list);
      continue;
    }
    if (where[k]) {
      diag_error(S->D, e->name_loc, "'%s' is set twice in %s", e->name, sec->name);
      diag_note(S->D, where[k]->name_loc, "first set here");
      continue;
    }
    where[k] = e;
    /* order = tp-dp-pp is read from its syntax, not evaluated */
    vals[k] = strcmp(e->name, "order") ? sema_eval(S, e->value, S->model_scope) : value_new(S, V_SYM, e->value->loc);
  }
}

/* ---- module names in placements ---- */

static int module_index(Sema *S, const char *name, Loc loc, int want_last) {
  Program *P = S->P;
  for (int i = 0; i < P->nmods; i++)
    if (!strcmp(P->mods[i]->path, name)) return i;
  for (int i = 0; i < P->nmods; i++)
    if (P->mods[i]->group && !strcmp(P->mods[i]->group, name)) {
      if (!want_last) return i;
      int j = i;
      while (j + 1 < P->nmods && P->mods[j + 1]->group && !strcmp(P->mods[j + 1]->group, name)) j++;
      return j;
    }
  for (int i = 0; i < P->nmods; i++) {
    size_t n = strlen(P->mods[i]->path);
    if (!strncmp(P->mods[i]->path, name, n) && name[n] == '.') {
      diag_error(S->D, loc, "'%s' is inside '%s'; stages are made of top-level modules, so name '%s'", name, P->mods[i]->path,
                 P->mods[i]->path);
      return -1;
    }
  }
  PtrVec c = {0};
  for (int i = 0; i < P->nmods; i++) {
    ptrvec_push(S->A, &c, (void *)P->mods[i]->path);
    if (P->mods[i]->group) ptrvec_push(S->A, &c, (void *)P->mods[i]->group);
  }
  const char *g = NULL;
  for (int i = 0; i < P->nmods && !g; i++) {
    size_t n = strlen(P->mods[i]->group ? P->mods[i]->group : "");
    if (P->mods[i]->group && !strncmp(name, P->mods[i]->group, n) && name[n] == '.') g = P->mods[i]->group;
  }
  if (g) {
    int cnt = 0;
    for (int i = 0; i < P->nmods; i++) cnt += P->mods[i]->group && !strcmp(P->mods[i]->group, g);
    diag_error(S->D, loc, "no module '%s': '%s' has %d layers, %s.0 to %s.%d", name, g, cnt, g, g, cnt - 1);
  } else
    diag_error(S->D, loc, "no module named '%s' in model '%s'%s", name, P->model_name,
               suggest(name, (const char *const *)c.items, c.len));
  return -1;
}

/* ---- the placements ---- */

static int from_split(Sema *S, const Entry *sec, Stage **out) {
  Program *P = S->P;
  int n = P->nmods, ok = 1;
  Loc *cut = arena_alloc(S->A, sizeof(Loc) * (size_t)(n + 1));
  unsigned char *has = arena_alloc(S->A, (size_t)n + 1);
  static const char *const where[] = {"BEGINNING", "END"};
  for (const Entry *e = sec->body; e; e = e->next) {
    if (e->kind != E_LABEL || e->key_is_int) {
      diag_error(S->D, e->loc, "split takes entries 'module: BEGINNING' or 'module: END'");
      ok = 0;
      continue;
    }
    Value *v = sema_eval(S, e->value, NULL);
    const char *w;
    if (!want_sym(S, v, "split point", where, 2, &w)) {
      ok = 0;
      continue;
    }
    int end = w == where[1];
    int i = module_index(S, e->name, e->name_loc, end);
    if (i < 0) {
      ok = 0;
      continue;
    }
    int at = end ? i + 1 : i; /* the cut falls before module `at` */
    if (at == 0 || at == n) {
      diag_error(S->D, loc_span(e->name_loc, e->value->loc),
                 "split point '%s: %s' leaves the %s stage empty: nothing comes %s '%s'", e->name, w,
                 at == 0 ? "first" : "last", at == 0 ? "before" : "after", e->name);
      ok = 0;
      continue;
    }
    if (!has[at]) cut[at] = loc_span(e->name_loc, e->value->loc);
    has[at] = 1; /* a second cut at the same place collapses into one, as in PyTorch */
  }
  if (!ok) return -1;
  int ns = 1;
  for (int i = 1; i < n; i++) ns += has[i];
  Stage *st = arena_alloc(S->A, sizeof(Stage) * (size_t)ns);
  int k = 0;
  st[0].first = 0, st[0].loc = sec->name_loc;
  for (int i = 1; i < n; i++)
    if (has[i]) {
      st[k].last = i - 1;
      k++;
      st[k].first = i, st[k].loc = cut[i];
    }
  st[k].last = n - 1;
  *out = st;
  return ns;
}

static int from_lists(Sema *S, const Entry *sec, Stage **out) {
  Program *P = S->P;
  int n = P->nmods, ns = entry_count(sec->body), ok = 1;
  int *owner = arena_alloc(S->A, sizeof(int) * (size_t)(n + 1));
  Loc *mention = arena_alloc(S->A, sizeof(Loc) * (size_t)(n + 1));
  for (int i = 0; i < n; i++) owner[i] = -1;
  Stage *st = arena_alloc(S->A, sizeof(Stage) * (size_t)(ns + 1));
  int k = 0;
  for (const Entry *e = sec->body; e; e = e->next, k++) {
    st[k].loc = e->name_loc;
    st[k].first = n, st[k].last = -1;
    if (e->kind != E_LABEL || !e->key_is_int) {
      diag_error(S->D, e->loc, "stages takes entries 'ID: [modules]', with IDs 0, 1, 2, ... in order");
      ok = 0;
      continue;
    }
    if (strcmp(e->name, arena_printf(S->A, "%d", k))) {
      diag_error(S->D, e->name_loc, "stage %s is listed where stage %d belongs; list stages 0, 1, 2, ... in order", e->name, k);
      ok = 0;
    }
    if (!e->value || e->value->kind != N_LIST) {
      diag_error(S->D, e->value ? e->value->loc : e->loc, "stage %d needs a list of modules, as in [wte, wpe, layers.0 .. layers.3]", k);
      ok = 0;
      continue;
    }
    if (!e->value->kids) {
      diag_error(S->D, e->value->loc, "stage %d is empty; every stage needs at least one module", k);
      ok = 0;
      continue;
    }
    for (const Node *it = e->value->kids; it; it = it->next) {
      int lo, hi;
      if (it->kind == N_NAME) {
        lo = module_index(S, it->str, it->loc, 0);
        hi = lo >= 0 ? module_index(S, it->str, it->loc, 1) : -1;
      } else if (it->kind == N_BINOP && it->op == 'R' && it->a->kind == N_NAME &&
                 (it->b->kind == N_NAME || it->b->kind == N_INT)) {
        lo = module_index(S, it->a->str, it->a->loc, 0);
        const char *to = it->b->str;
        if (it->b->kind == N_INT) {
          const char *dot = strrchr(it->a->str, '.');
          to = arena_printf(S->A, "%.*s.%lld", dot ? (int)(dot - it->a->str) : 0, it->a->str, (long long)it->b->ival);
        }
        hi = module_index(S, to, it->b->loc, 1);
        if (lo >= 0 && hi >= 0 && hi < lo) {
          diag_error(S->D, it->loc, "range '%s .. %s' runs backwards; write the earlier module first", it->a->str, to);
          lo = -1;
        }
      } else {
        diag_error(S->D, it->loc, "expected a module name or a range such as layers.0 .. layers.3");
        ok = 0;
        continue;
      }
      if (lo < 0 || hi < 0) {
        ok = 0;
        continue;
      }
      for (int i = lo; i <= hi; i++) {
        if (owner[i] >= 0) {
          diag_error(S->D, it->loc, "module '%s' is on stage %d and again on stage %d; place each module on one stage",
                     P->mods[i]->path, owner[i], k);
          diag_note(S->D, mention[i], "first placed here");
          ok = 0;
          break;
        }
        owner[i] = k;
        mention[i] = it->loc;
      }
      if (lo < st[k].first) st[k].first = lo;
      if (hi > st[k].last) st[k].last = hi;
    }
  }
  if (!ok) return -1;
  for (int i = 0; i < n; i++)
    if (owner[i] < 0) {
      int j = i;
      while (j + 1 < n && owner[j + 1] < 0) j++;
      int prev = i > 0 ? owner[i - 1] : 0;
      diag_error(S->D, sec->name_loc, "module%s '%s'%s%s%s on no stage; add %s to stage %d", j > i ? "s" : "", P->mods[i]->path,
                 j > i ? " to '" : "", j > i ? P->mods[j]->path : "", j > i ? "' are" : " is", j > i ? "them" : "it", prev);
      ok = 0;
      i = j;
    }
  if (!ok) return -1;
  for (int i = 1; i < n; i++)
    if (owner[i] < owner[i - 1] || owner[i] > owner[i - 1] + 1) {
      diag_error(S->D, mention[i], "'%s' is on stage %d but '%s', which comes before it, is on stage %d; each stage must hold the modules that follow the previous stage's, in model order",
                 P->mods[i]->path, owner[i], P->mods[i - 1]->path, owner[i - 1]);
      return -1;
    }
  *out = st;
  return ns;
}

static int from_ids(Sema *S, const Entry *e, Stage **out) {
  Program *P = S->P;
  Value *v = sema_eval(S, e->value, S->model_scope);
  if (!v) return -1;
  if (v->kind != V_LIST) {
    diag_error(S->D, v->loc, "stage_ids must be a list of stage numbers, as in [0]*6 + [1]*6");
    return -1;
  }
  int n = P->nmods, nl = 0;
  const char *grp = NULL;
  for (int i = 0; i < n; i++)
    if (P->mods[i]->group) {
      if (grp && strcmp(grp, P->mods[i]->group)) { grp = NULL, nl = -1; break; }
      grp = P->mods[i]->group;
      nl++;
    }
  int per_layer = grp && v->n == nl && nl != n;
  if (v->n != n && !per_layer) {
    if (grp)
      diag_error(S->D, v->loc, "stage_ids has %d entries; give one per layer of '%s' (%d) or one per module (%d)", v->n, grp, nl, n);
    else
      diag_error(S->D, v->loc, "stage_ids has %d entries; give one per module (%d)", v->n, n);
    return -1;
  }
  int *id = arena_alloc(S->A, sizeof(int) * (size_t)(n + 1));
  int j = 0, prev = 0;
  for (int i = 0; i < n; i++) {
    int idx;
    if (!per_layer) idx = i;
    else if (P->mods[i]->group) idx = j++;
    else idx = j == 0 ? 0 : j - 1; /* before the layers: with the first; after: with the last */
    int64_t x;
    if (!want_int(S, v->items[idx], "stage id", 0, 1 << 20, &x, NULL)) return -1;
    if ((i == 0 && x != 0) || x < prev || x > prev + 1) {
      diag_error(S->D, v->items[idx]->loc,
                 "stage_ids must start at 0 and rise by at most 1 from one %s to the next; entry %d is %lld after %d",
                 per_layer ? "layer" : "module", idx, (long long)x, i == 0 ? 0 : prev);
      return -1;
    }
    id[i] = (int)x;
    prev = (int)x;
  }
  int ns = id[n - 1] + 1;
  Stage *st = arena_alloc(S->A, sizeof(Stage) * (size_t)ns);
  for (int i = 0; i < n; i++) {
    if (i == 0 || id[i] != id[i - 1]) st[id[i]].first = i, st[id[i]].loc = e->name_loc;
    st[id[i]].last = i;
  }
  *out = st;
  return ns;
}

/* Contiguous stages minimising the slowest one: binary search on the
 * bottleneck with a greedy feasibility test, which is exact for contiguous
 * partitions. Costs are forward + backward FLOPs per token from the cost
 * model (compiler/cost.c). Modules that must share the first stage (everything up to the
 * last input embedding) or the last (from the head on) move as one unit. */
static int from_auto(Sema *S, int k, Loc loc, Stage **out) {
  Program *P = S->P;
  int n = P->nmods, head = 0, tail = n - 1;
  for (int i = 0; i < n; i++) {
    if (P->mods[i]->role & ROLE_INPUT) head = i;
    if ((P->mods[i]->role & (ROLE_HEAD | ROLE_LOSS)) && tail == n - 1 && i < tail) tail = i;
  }
  if (tail <= head) tail = head + 1 < n ? head + 1 : n - 1;
  /* units: [0..head], head+1, ..., tail-1, [tail..n-1] */
  int nu = 0;
  int *ufirst = arena_alloc(S->A, sizeof(int) * (size_t)(n + 1));
  double *c = arena_alloc(S->A, sizeof(double) * (size_t)(n + 1)), total = 0, hi = 0;
  int64_t T = P->seq > 0 ? P->seq : 1024;
  for (int i = 0; i < n; i++) {
    if (i == 0 || (i > head && i <= tail)) ufirst[nu++] = i;
    ModuleCost mc = cost_module(P->mods[i], T, P->precision);
    c[nu - 1] += mc.fwd_flops + mc.bwd_flops;
  }
  ufirst[nu] = n;
  if (k > nu) {
    diag_error(S->D, loc, "cannot balance %d stages: the model has %d placeable units (the embeddings share the first stage, the head and loss the last); use at most %d stages",
               k, nu, nu);
    return -1;
  }
  for (int u = 0; u < nu; u++) {
    total += c[u];
    if (c[u] > hi) hi = c[u];
  }
  double lo = hi, up = total;
  for (int it = 0; it < 200 && up - lo > 1e-12 * up; it++) {
    double mid = 0.5 * (lo + up), acc = 0;
    int need = 1;
    for (int u = 0; u < nu; u++) {
      if (acc + c[u] > mid) need++, acc = 0;
      acc += c[u];
    }
    if (need <= k) up = mid;
    else lo = mid;
  }
  int *cut = arena_alloc(S->A, sizeof(int) * (size_t)(k + 1));
  int s = 0;
  if ((double)nu * nu * k <= 2e7) {
    /* Exact DP: among partitions whose slowest stage is optimal (up), the
       one with the smallest sum of squared stage costs, so the other stages
       are balanced too. best[j][u]: first u units on j stages. */
    double *pre = arena_alloc(S->A, sizeof(double) * (size_t)(nu + 1));
    for (int u = 0; u < nu; u++) pre[u + 1] = pre[u] + c[u];
    double lim = up * (1 + 1e-9);
    size_t W = (size_t)nu + 1;
    double *best = arena_alloc(S->A, sizeof(double) * W * (size_t)(k + 1));
    int *from = arena_alloc(S->A, sizeof(int) * W * (size_t)(k + 1));
    for (size_t i = 0; i < W * (size_t)(k + 1); i++) best[i] = 1e300;
    best[0] = 0;
    for (int j = 1; j <= k; j++)
      for (int u = j; u <= nu - (k - j); u++)
        for (int v = u - 1; v >= j - 1; v--) {
          double cost = pre[u] - pre[v];
          if (cost > lim) break;
          double b = best[(size_t)(j - 1) * W + (size_t)v];
          if (b >= 1e300) continue;
          if (b + cost * cost < best[(size_t)j * W + (size_t)u]) {
            best[(size_t)j * W + (size_t)u] = b + cost * cost;
            from[(size_t)j * W + (size_t)u] = v;
          }
        }
    int u = nu;
    for (int j = k; j >= 1; j--) {
      cut[j - 1] = from[(size_t)j * W + (size_t)u];
      u = cut[j - 1];
    }
    s = k - 1;
  } else {
    /* greedy cuts under bottleneck `up`; cut early when the units left are
       only just enough to give every remaining stage one */
    double acc = 0;
    cut[0] = 0;
    for (int u = 0; u < nu; u++) {
      if (u > cut[s] && s + 1 < k && (acc + c[u] > up || nu - u <= k - s - 1)) {
        cut[++s] = u;
        acc = 0;
      }
      acc += c[u];
    }
  }
  Stage *st = arena_alloc(S->A, sizeof(Stage) * (size_t)k);
  for (int i = 0; i <= s; i++) {
    st[i].first = ufirst[cut[i]];
    st[i].last = (i < s ? ufirst[cut[i + 1]] : n) - 1;
    st[i].loc = loc;
  }
  *out = st;
  return s + 1;
}

/* Builds the stages of one placement; wanted = stage count from pp (0 if none). */
static int place(Sema *S, Placement *pl, int wanted, Loc pp_loc, Stage **out) {
  const Entry *given[3] = {pl->split, pl->stages, pl->stage_ids};
  const char *names[3] = {"split", "stages", "stage_ids"};
  const Entry *first = NULL;
  int nforms = 0;
  for (int i = 0; i < 3; i++)
    if (given[i]) {
      if (first) {
        diag_error(S->D, given[i]->loc, "'%s' and '%s' both place modules; keep one", names[i],
                   first == pl->split ? "split" : first == pl->stages ? "stages" : "stage_ids");
        return -1;
      }
      first = given[i], nforms++;
    }
  if (pl->partition) {
    static const char *const modes[] = {"auto"};
    const char *m;
    if (!want_sym(S, sema_eval(S, pl->partition->value, NULL), "partition", modes, 1, &m)) return -1;
    if (first) {
      diag_error(S->D, pl->partition->loc, "'partition = auto' and '%s' both place modules; keep one", first->name);
      return -1;
    }
  }
  int ns;
  if (pl->split) ns = from_split(S, pl->split, out);
  else if (pl->stages) ns = from_lists(S, pl->stages, out);
  else if (pl->stage_ids) ns = from_ids(S, pl->stage_ids, out);
  else return from_auto(S, wanted > 0 ? wanted : 1, pl->partition ? pl->partition->loc : pp_loc, out);
  if (ns > 0 && wanted > 0 && ns != wanted) {
    const char *what = pl->split ? arena_printf(S->A, "%d split point%s %d stages", ns - 1, ns == 2 ? " makes" : "s make", ns)
                                 : arena_printf(S->A, "'%s' places modules on %d stages", first->name, ns);
    int v = S->P->virtual_stages > 1 ? S->P->virtual_stages : 1;
    diag_error(S->D, pp_loc, "pp = %d%s disagrees with the placement: %s", wanted / v,
               v > 1 ? arena_printf(S->A, " with virtual = %d (%d chunks)", v, wanted) : "", what);
    diag_note(S->D, first->name_loc, "the placement is here");
    return -1;
  }
  return ns;
}

/* First stage reads the tokens, last holds head and loss. */
static void check_roles(Sema *S, const Pipeline *pl) {
  Program *P = S->P;
  const char *in = pl->template_name ? arena_printf(S->A, " of template '%s'", pl->template_name) : "";
  for (int s = 0; s < pl->nstages; s++)
    for (int i = pl->stages[s].first; i <= pl->stages[s].last; i++) {
      const Module *m = P->mods[i];
      if ((m->role & ROLE_INPUT) && s != 0)
        diag_error(S->D, pl->stages[s].loc, "'%s' reads the input tokens but lands on stage %d%s; the first stage must hold every input embedding",
                   m->path, s, in);
      if ((m->role & (ROLE_HEAD | ROLE_LOSS)) && s != pl->nstages - 1)
        diag_error(S->D, pl->stages[s + 1].loc, "the %s '%s' lands on stage %d%s; the last stage (%d) must hold the head and the loss",
                   (m->role & ROLE_LOSS) ? "loss" : "head", m->path, s, in, pl->nstages - 1);
    }
}

/* ---- tensor parallel divisibility, reported once per declaration ---- */
static void check_tp(Sema *S, const Module *m, int tp, int toplevel) {
  if (m->prim == PRIM_ATTENTION) {
    if (m->heads % tp || m->kv_heads % tp) {
      if (sema_reported_once(S, m->loc))
        diag_error(S->D, m->loc, "tp = %d does not divide the %lld %sheads of '%s'; choose a tp that divides %lld", tp,
                   (long long)(m->heads % tp ? m->heads : m->kv_heads), m->heads % tp ? "" : "key/value ", m->path,
                   (long long)(m->heads % tp ? m->heads : m->kv_heads));
    }
  } else if (m->prim == PRIM_LINEAR && !toplevel) {
    int64_t bad = m->out % tp ? m->out : m->in % tp ? m->in : 0;
    if (bad && sema_reported_once(S, m->loc))
      diag_error(S->D, m->loc, "tp = %d does not divide width %lld of '%s'; tensor parallel splits it across ranks", tp,
                 (long long)bad, m->path);
  }
  for (int i = 0; i < m->nkids; i++) check_tp(S, m->kids[i], tp, 0);
}

static int64_t max_positions(const Program *P) {
  for (int i = 0; i < P->nmods; i++) {
    const Module *m = P->mods[i];
    if (m->prim == PRIM_EMBEDDING && (m->role & ROLE_INPUT) && i > 0 && P->mods[0]->prim == PRIM_EMBEDDING) return m->num;
  }
  return 0;
}

/* ---- the sections ---- */

/* A setting that is a name or a call of one (greedy, top_k(40), adamw(...)):
 * returns the chosen name, or NULL after reporting. */
static const char *want_choice(Sema *S, const Value *o, const char *what, const char *const *choices, int n, const char *usage) {
  if (o->kind != V_CALL && o->kind != V_SYM) {
    diag_error(S->D, o->loc, "%s must be %s, not %s", what, usage, value_kind_name(o));
    return NULL;
  }
  Value name = *o;
  name.kind = V_SYM;
  const char *r;
  return want_sym(S, &name, what, choices, n, &r) ? r : NULL;
}

static const char *const top_sections[] = {"split", "stages", "parallel", "train", "infer", "template"};
static const char *const top_keys[] = {"stage_ids", "partition"};

static void read_template(Sema *S, const Entry *t, Placement *pl) {
  pl->name = t->label;
  pl->loc = t->label_loc;
  static const char *const keys[] = {"microbatches", "pp", "stage_ids", "partition"};
  static const char *const secs[] = {"split", "stages"};
  for (const Entry *e = t->body; e; e = e->next) {
    if (e->kind == E_SECTION && !e->label) {
      if (!strcmp(e->name, "split") || !strcmp(e->name, "stages")) {
        const Entry **slot = !strcmp(e->name, "split") ? &pl->split : &pl->stages;
        if (*slot) diag_error(S->D, e->loc, "'%s' appears twice in template '%s'", e->name, t->label);
        *slot = e;
      } else
        diag_error(S->D, e->name_loc, "unknown section '%s' in a template%s", e->name, suggest(e->name, secs, 2));
      continue;
    }
    if (e->kind != E_ASSIGN) {
      diag_error(S->D, e->loc, "a template holds split { }, stages { }, stage_ids, partition, pp and microbatches");
      continue;
    }
    int k = 0;
    while (k < 4 && strcmp(keys[k], e->name)) k++;
    if (k == 4) {
      diag_error(S->D, e->name_loc, "unknown setting '%s' in template '%s'%s", e->name, t->label, suggest(e->name, keys, 4));
      continue;
    }
    const Entry **slot = k == 0 ? &pl->mb_entry : k == 1 ? &pl->pp_entry : k == 2 ? &pl->stage_ids : &pl->partition;
    if (*slot) {
      diag_error(S->D, e->name_loc, "'%s' is set twice in template '%s'", e->name, t->label);
      continue;
    }
    *slot = e;
  }
  if (pl->mb_entry)
    want_int(S, sema_eval(S, pl->mb_entry->value, S->model_scope), "microbatches", 1, 1 << 20, &pl->microbatches, S->model_scope);
  else
    diag_error(S->D, t->label_loc, "template '%s' has no microbatch count; add microbatches = N", t->label);
  if (pl->pp_entry) want_int(S, sema_eval(S, pl->pp_entry->value, S->model_scope), "pp", 1, 1 << 16, &pl->pp, S->model_scope);
}

static int same_stages(const Pipeline *a, const Pipeline *b) {
  if (a->nstages != b->nstages) return 0;
  for (int i = 0; i < a->nstages; i++)
    if (a->stages[i].first != b->stages[i].first || a->stages[i].last != b->stages[i].last) return 0;
  return 1;
}

void sema_check_sections(Sema *S) {
  Program *P = S->P;
  const Entry *sec[6] = {0}, *key[2] = {0};
  PtrVec templates = {0};
  for (int i = 0; i < S->top.len; i++) {
    const Entry *e = S->top.items[i];
    if (e->kind == E_SECTION) {
      int k = 0;
      while (k < 6 && strcmp(top_sections[k], e->name)) k++;
      if (k == 6) {
        diag_error(S->D, e->name_loc, "unknown section '%s'%s", e->name, suggest(e->name, top_sections, 6));
        continue;
      }
      if (k == 5) {
        if (!e->label) {
          diag_error(S->D, e->name_loc, "a template needs a name: template NAME { ... }");
          continue;
        }
        for (int j = 0; j < templates.len; j++)
          if (!strcmp(((Entry *)templates.items[j])->label, e->label)) {
            diag_error(S->D, e->label_loc, "template '%s' is defined twice", e->label);
            goto next;
          }
        ptrvec_push(S->A, &templates, (void *)e);
        continue;
      }
      if (e->label) {
        diag_error(S->D, e->label_loc, "'%s' takes no name; write %s { ... }", e->name, e->name);
        continue;
      }
      if (sec[k]) {
        diag_error(S->D, e->name_loc, "section '%s' appears twice; merge them into one", e->name);
        diag_note(S->D, sec[k]->name_loc, "the first '%s' is here", e->name);
        continue;
      }
      sec[k] = e;
    } else if (e->kind == E_ASSIGN) {
      int k = 0;
      while (k < 2 && strcmp(top_keys[k], e->name)) k++;
      if (k == 2) {
        diag_error(S->D, e->name_loc, "unknown setting '%s' at the top level%s; settings belong in parallel { }, train { } or infer { }",
                   e->name, suggest(e->name, top_keys, 2));
        continue;
      }
      if (key[k]) {
        diag_error(S->D, e->name_loc, "'%s' is set twice", e->name);
        continue;
      }
      key[k] = e;
    } else {
      diag_error(S->D, e->loc, "expected a section such as parallel { ... } here");
    }
  next:;
  }

  /* parallel */
  static const char *const pkeys[] = {"tp", "pp", "dp", "world", "order", "virtual", "pipelines"};
  Value *pv[7];
  const Entry *pw[7];
  Entry empty_par = {.kind = E_SECTION, .name = "parallel"};
  read_keys(S, sec[2] ? sec[2] : &empty_par, pkeys, 7, pv, pw);
  int64_t tp = 1, pp = 0, dp = 0, world = S->opt && S->opt->world_size ? S->opt->world_size : 0, virt = 1;
  int dp_auto = 1;
  if (pw[0]) want_int(S, pv[0], "tp", 1, 1 << 16, &tp, S->model_scope);
  if (pw[1]) want_int(S, pv[1], "pp", 1, 1 << 16, &pp, S->model_scope);
  if (pw[2] && pv[2]) {
    if (pv[2]->kind == V_SYM && !strcmp(pv[2]->s, "auto")) dp_auto = 1;
    else if (want_int(S, pv[2], "dp", 1, 1 << 20, &dp, S->model_scope)) dp_auto = 0;
  }
  if (pw[3]) {
    int64_t fw = 0;
    if (want_int(S, pv[3], "world", 1, 1 << 24, &fw, S->model_scope)) {
      if (world && world != fw)
        diag_error(S->D, pv[3]->loc, "world = %lld here, but --world-size %lld on the command line; make them agree or drop one",
                   (long long)fw, (long long)world);
      world = fw;
    }
  }
  if (pw[5]) want_int(S, pv[5], "virtual", 1, 64, &virt, S->model_scope);
  P->tp = (int)tp, P->virtual_stages = (int)virt;
  P->order[0] = 't', P->order[1] = 'd', P->order[2] = 'p';
  if (pw[4] && pv[4]) {
    /* order = tp-dp-pp parses as a subtraction of three names */
    const Node *o = pw[4]->value;
    const char *parts[3] = {0};
    int np = 0, okord = 1;
    if (o->kind == N_STR) {
      char buf[64];
      snprintf(buf, sizeof buf, "%s", o->str);
      for (char *t = strtok(buf, "-"); t && okord; t = strtok(NULL, "-"))
        np < 3 ? (void)(parts[np++] = arena_strdup(S->A, t)) : (void)(okord = 0);
    } else {
      while (o->kind == N_BINOP && o->op == '-' && np < 2) {
        if (o->b->kind != N_NAME) { okord = 0; break; }
        parts[2 - np++] = o->b->str;
        o = o->a;
      }
      if (o->kind == N_NAME && np == 2) parts[0] = o->str, np = 3;
      else okord = 0;
    }
    int seen = 0;
    for (int i = 0; okord && i < 3; i++) {
      int bit = !parts[i] ? 0 : !strcmp(parts[i], "tp") ? 1 : !strcmp(parts[i], "dp") ? 2 : !strcmp(parts[i], "pp") ? 4 : 0;
      if (!bit || (seen & bit)) okord = 0;
      seen |= bit;
      if (okord) P->order[i] = parts[i][0];
    }
    if (!okord || np != 3)
      diag_error(S->D, pw[4]->value->loc, "order must name tp, dp and pp once each, fastest first, as in order = tp-dp-pp");
  }

  /* train: read early, the auto partition's cost model wants seq */
  static const char *const tkeys[] = {"batch", "microbatches", "seq", "schedule", "optimizer", "lr_schedule", "grad_clip",
                                      "steps", "precision", "data", "val_data", "val_every", "init", "save", "keep", "seed",
                                      "log_every"};
  enum { NT = sizeof tkeys / sizeof tkeys[0] };
  Value *tv[NT];
  const Entry *tw[NT];
  P->has_train = sec[3] != NULL;
  P->schedule = SCHED_1F1B;
  P->batch = 8, P->microbatches = 0, P->steps = 10, P->seed = 1337, P->log_every = 1, P->keep = 3;
  P->optimizer = "adamw", P->lr = 3e-4, P->beta1 = 0.9, P->beta2 = 0.999, P->opt_eps = 1e-8, P->weight_decay = 0.0;
  P->lr_schedule = "constant", P->precision = "fp32";
  int64_t max_pos = max_positions(P);
  P->seq = max_pos ? max_pos : 1024;
  Entry empty_train = {.kind = E_SECTION, .name = "train"};
  read_keys(S, sec[3] ? sec[3] : &empty_train, tkeys, NT, tv, tw);
  int64_t mb = 0;
  if (tw[0]) want_int(S, tv[0], "batch", 1, (int64_t)1 << 40, &P->batch, S->model_scope);
  if (tw[1] && want_int(S, tv[1], "microbatches", 1, 1 << 20, &mb, S->model_scope)) P->microbatches = (int)mb;
  if (tw[2] && want_int(S, tv[2], "seq", 1, (int64_t)1 << 30, &P->seq, S->model_scope) && max_pos && P->seq > max_pos)
    diag_error(S->D, tv[2]->loc, "seq %lld is longer than the model's %lld positions; use seq <= %lld", (long long)P->seq,
               (long long)max_pos, (long long)max_pos);
  if (tw[3]) {
    const char *sname;
    if (want_sym(S, tv[3], "schedule", schedule_names, NSCHED, &sname))
      for (int i = 0; i < NSCHED; i++)
        if (sname == schedule_names[i]) P->schedule = (ScheduleKind)i;
    if (P->schedule == SCHED_FORWARD_ONLY)
      diag_error(S->D, tv[3]->loc, "forward_only runs no backward and cannot train; it is the schedule of infer { }");
  }
  if (tw[4] && tv[4]) {
    static const char *const opts[] = {"adamw", "sgd"};
    Value *o = tv[4];
    const char *on = want_choice(S, o, "optimizer", opts, 2, "adamw(...) or sgd(...)");
    if (on) {
      P->optimizer = on;
      int adam = on == opts[0];
      static const char *const an[] = {"lr", "betas", "eps", "weight_decay"};
      static const char *const sn[] = {"lr", "momentum", "weight_decay"};
      Value *a[4] = {0};
      const char *const *names = adam ? an : sn;
      int nn = adam ? 4 : 3;
      Value call = *o;
      if (o->kind == V_SYM) call.n = 0;
      for (int i = 0; i < call.n; i++) {
        const char *k = call.keys ? call.keys[i] : NULL;
        int j = 0;
        if (!k) j = i;
        else
          while (j < nn && strcmp(names[j], k)) j++;
        if (j >= nn) {
          if (k) {
            const char *dym = did_you_mean(k, names, nn);
            diag_error(S->D, call.key_locs[i], "%s() has no parameter '%s'; %s%s%s", on, k, dym ? "did you mean '" : "its parameters are ",
                       dym ? dym : adam ? "lr, betas, eps, weight_decay" : "lr, momentum, weight_decay", dym ? "'?" : "");
          }
          else diag_error(S->D, call.items[i]->loc, "%s() takes at most %d arguments", on, nn);
          continue;
        }
        if (a[j]) {
          diag_error(S->D, k ? call.key_locs[i] : call.items[i]->loc, "%s(): '%s' is given twice", on, names[j]);
          continue;
        }
        a[j] = call.items[i];
      }
      if (a[0]) want_float(S, a[0], "learning rate", 0, 10, 1, &P->lr, S->model_scope);
      if (adam) {
        if (a[1]) {
          if (a[1]->kind != V_TUPLE || a[1]->n != 2)
            diag_error(S->D, a[1]->loc, "betas must be a pair, as in betas = (0.9, 0.95)");
          else {
            want_float(S, a[1]->items[0], "beta1", 0, 0.999999999, 0, &P->beta1, S->model_scope);
            want_float(S, a[1]->items[1], "beta2", 0, 0.999999999, 0, &P->beta2, S->model_scope);
          }
        }
        if (a[2]) want_float(S, a[2], "eps", 0, 1, 1, &P->opt_eps, S->model_scope);
        if (a[3]) want_float(S, a[3], "weight_decay", 0, 10, 0, &P->weight_decay, S->model_scope);
      } else {
        if (a[1]) want_float(S, a[1], "momentum", 0, 0.999999999, 0, &P->momentum, S->model_scope);
        if (a[2]) want_float(S, a[2], "weight_decay", 0, 10, 0, &P->weight_decay, S->model_scope);
      }
    }
  }
  if (tw[5] && tv[5]) {
    static const char *const ls[] = {"constant", "cosine", "linear"};
    Value *o = tv[5];
    const char *ln = want_choice(S, o, "lr_schedule", ls, 3, "constant, cosine(warmup = N) or linear(warmup = N)");
    if (ln) {
      P->lr_schedule = ln;
      for (int i = 0; o->kind == V_CALL && i < o->n; i++) {
        const char *k = o->keys && o->keys[i] ? o->keys[i] : i == 0 ? "warmup" : i == 1 ? "min_lr" : NULL;
        if (k && !strcmp(k, "warmup")) want_int(S, o->items[i], "warmup", 0, (int64_t)1 << 40, &P->warmup, S->model_scope);
        else if (k && !strcmp(k, "min_lr")) want_float(S, o->items[i], "min_lr", 0, 10, 0, &P->min_lr, S->model_scope);
        else {
          static const char *const lk[] = {"warmup", "min_lr"};
          diag_error(S->D, o->items[i]->loc, "%s() takes warmup and min_lr%s", ln, k ? suggest(k, lk, 2) : "");
        }
      }
    }
  }
  if (tw[6]) want_float(S, tv[6], "grad_clip", 0, 1e30, 0, &P->grad_clip, S->model_scope);
  if (tw[7]) want_int(S, tv[7], "steps", 1, (int64_t)1 << 40, &P->steps, S->model_scope);
  if (tw[8]) {
    static const char *const pr[] = {"fp32", "tf32", "bf16"};
    want_sym(S, tv[8], "precision", pr, 3, &P->precision);
  }
  if (tw[9]) want_str(S, tv[9], "data", &P->data);
  if (tw[10]) want_str(S, tv[10], "val_data", &P->val_data);
  if (tw[11]) want_int(S, tv[11], "val_every", 1, (int64_t)1 << 40, &P->val_every, S->model_scope);
  if (tw[12]) want_str(S, tv[12], "init", &P->init);
  if (tw[13] && tv[13]) {
    Value *v = tv[13];
    if (v->kind == V_EVERY) {
      want_str(S, v->items[0], "save", &P->save_dir);
      want_int(S, v->items[1], "save interval", 1, (int64_t)1 << 40, &P->save_every, S->model_scope);
    } else if (want_str(S, v, "save", &P->save_dir)) {
      P->save_every = 0; /* at the end only */
    }
  }
  if (tw[14]) want_int(S, tv[14], "keep", 1, 1 << 20, &P->keep, S->model_scope);
  if (tw[15]) want_int(S, tv[15], "seed", 0, INT64_MAX, &P->seed, S->model_scope);
  if (tw[16]) want_int(S, tv[16], "log_every", 1, (int64_t)1 << 40, &P->log_every, S->model_scope);

  /* infer */
  static const char *const ikeys[] = {"prompt", "max_new_tokens", "sampling", "temperature", "seed", "weights", "schedule"};
  Value *iv[7];
  const Entry *iw[7];
  P->has_infer = sec[4] != NULL;
  P->max_new_tokens = 32, P->sampling = "greedy", P->temperature = 1.0, P->infer_seed = 1337, P->top_k = 0, P->top_p = 1.0, P->beams = 1;
  Entry empty_infer = {.kind = E_SECTION, .name = "infer"};
  read_keys(S, sec[4] ? sec[4] : &empty_infer, ikeys, 7, iv, iw);
  if (iw[0]) want_str(S, iv[0], "prompt", &P->prompt);
  if (iw[1]) want_int(S, iv[1], "max_new_tokens", 1, 1 << 24, &P->max_new_tokens, S->model_scope);
  if (iw[2] && iv[2]) {
    static const char *const sm[] = {"greedy", "top_k", "top_p", "beam"};
    Value *o = iv[2];
    const char *sn = want_choice(S, o, "sampling", sm, 4, "greedy, top_k(K), top_p(P) or beam(N)");
    if (sn) {
      P->sampling = sn;
      int want_args = sn == sm[0] ? 0 : 1;
      int nargs = o->kind == V_CALL ? o->n : 0;
      if (nargs != want_args)
        diag_error(S->D, o->loc, "%s takes %s", sn, want_args ? "one argument, as in top_k(40), top_p(0.9), beam(3)" : "no arguments");
      else if (sn == sm[1]) want_int(S, o->items[0], "top_k", 1, 1 << 24, &P->top_k, S->model_scope);
      else if (sn == sm[2]) want_float(S, o->items[0], "top_p", 0, 1, 1, &P->top_p, S->model_scope);
      else if (sn == sm[3]) want_int(S, o->items[0], "beams", 1, 1024, &P->beams, S->model_scope);
    }
  }
  if (iw[3]) want_float(S, iv[3], "temperature", 0, 1e6, 1, &P->temperature, S->model_scope);
  if (iw[4]) want_int(S, iv[4], "seed", 0, INT64_MAX, &P->infer_seed, S->model_scope);
  if (iw[5]) want_str(S, iv[5], "weights", &P->weights);
  if (iw[6]) {
    static const char *const fo[] = {"forward_only"};
    const char *x;
    int training = 0;
    for (int i = 0; i < NSCHED - 1 && iv[6] && iv[6]->kind == V_SYM; i++) training |= !strcmp(iv[6]->s, schedule_names[i]);
    if (training)
      diag_error(S->D, iv[6]->loc, "infer runs schedule forward_only; '%s' is a training schedule", iv[6]->s);
    else
      want_sym(S, iv[6], "schedule", fo, 1, &x);
  }
  if (!P->has_train && P->has_infer) P->schedule = SCHED_FORWARD_ONLY;
  if (S->D->errors) return;

  /* placement and pipelines */
  Loc ploc = pw[1] ? pw[1]->value->loc : sec[2] ? sec[2]->name_loc : P->model_loc;
  if (templates.len) {
    const Entry *top_place[4] = {sec[0], sec[1], key[0], key[1]};
    for (int i = 0; i < 4; i++)
      if (top_place[i]) {
        diag_error(S->D, top_place[i]->name_loc, "with templates, '%s' belongs inside each template", top_place[i]->name);
        return;
      }
    if (pw[1]) {
      diag_error(S->D, pw[1]->name_loc, "with templates, each template sets its own stages; remove pp from parallel");
      return;
    }
    if (tw[1]) {
      diag_error(S->D, tw[1]->name_loc, "with templates, each template sets its own microbatches; remove it from train");
      return;
    }
    if (virt > 1) {
      diag_error(S->D, pw[5]->name_loc, "virtual stages are not supported with templates; remove virtual");
      return;
    }
    if (pw[4]) {
      diag_error(S->D, pw[4]->name_loc, "with templates, pipec fixes the rank layout (see --dump-plan); remove order");
      return;
    }
    Placement *tpl = arena_alloc(S->A, sizeof(Placement) * (size_t)templates.len);
    Pipeline *tpipe = arena_alloc(S->A, sizeof(Pipeline) * (size_t)templates.len);
    for (int i = 0; i < templates.len; i++) {
      read_template(S, templates.items[i], &tpl[i]);
      Loc at = tpl[i].pp_entry ? tpl[i].pp_entry->value->loc : tpl[i].loc;
      int ns = place(S, &tpl[i], (int)tpl[i].pp, at, &tpipe[i].stages);
      tpipe[i].nstages = ns;
      tpipe[i].template_name = tpl[i].name;
      tpipe[i].microbatches = (int)tpl[i].microbatches;
      tpipe[i].loc = tpl[i].loc;
    }
    if (S->D->errors) return;
    for (int i = 0; i < templates.len; i++)
      for (int j = 0; j < i; j++)
        if (same_stages(&tpipe[i], &tpipe[j]) && tpipe[i].microbatches != tpipe[j].microbatches) {
          diag_error(S->D, tpl[i].mb_entry->value->loc,
                     "templates '%s' and '%s' place the same stages but have %d and %d microbatches; equal templates must share one count",
                     tpl[j].name, tpl[i].name, tpipe[j].microbatches, tpipe[i].microbatches);
        }
    /* which templates run: parallel { pipelines = [a, b, b] }, else each once */
    PtrVec use = {0};
    if (pw[6] && pv[6]) {
      if (pv[6]->kind != V_LIST || !pv[6]->n) {
        diag_error(S->D, pv[6]->loc, "pipelines must be a list of template names, as in [small, big, big]");
        return;
      }
      const char **tn = arena_alloc(S->A, sizeof(char *) * (size_t)templates.len);
      for (int i = 0; i < templates.len; i++) tn[i] = tpl[i].name;
      for (int k = 0; k < pv[6]->n; k++) {
        const char *nm;
        if (!want_sym(S, pv[6]->items[k], "template", tn, templates.len, &nm)) continue;
        for (int i = 0; i < templates.len; i++)
          if (tn[i] == nm) ptrvec_push(S->A, &use, &tpipe[i]);
      }
    } else
      for (int i = 0; i < templates.len; i++) ptrvec_push(S->A, &use, &tpipe[i]);
    if (S->D->errors) return;
    P->npipes = use.len;
    P->pipes = arena_alloc(S->A, sizeof(Pipeline) * (size_t)use.len);
    int64_t ranks = 0, mbsum = 0;
    for (int i = 0; i < use.len; i++) {
      P->pipes[i] = *(Pipeline *)use.items[i];
      ranks += (int64_t)P->pipes[i].nstages * tp;
      mbsum += P->pipes[i].microbatches;
      if (P->pipes[i].nstages > P->pp) P->pp = P->pipes[i].nstages;
    }
    if (!dp_auto && dp != use.len) {
      diag_error(S->D, pv[2]->loc, "dp = %lld but %d pipelines are instantiated from templates; remove dp or make them agree",
                 (long long)dp, use.len);
      return;
    }
    if (ranks > (1 << 24)) {
      diag_error(S->D, sec[2] ? sec[2]->name_loc : P->model_loc, "the templates need %lld ranks; pipec plans at most 16777216",
                 (long long)ranks);
      return;
    }
    P->dp = use.len;
    P->world = (int)ranks;
    if (world && world != ranks) {
      const Loc wl = pw[3] ? pv[3]->loc : sec[2] ? sec[2]->name_loc : P->model_loc;
      diag_error(S->D, wl, "world size %lld does not match the plan, which needs %lld ranks (the sum over %d pipelines of stages x tp %lld)",
                 (long long)world, (long long)ranks, use.len, (long long)tp);
      return;
    }
    if (P->has_train && P->batch % mbsum)
      diag_error(S->D, tw[0] ? tv[0]->loc : sec[3] ? sec[3]->name_loc : P->model_loc,
                 "batch %lld does not split into the pipelines' %lld microbatches in all; use a multiple of %lld",
                 (long long)P->batch, (long long)mbsum, (long long)mbsum);
  } else {
    if (pw[6]) {
      diag_error(S->D, pw[6]->name_loc, "pipelines lists templates, and this file defines none; add template NAME { ... }");
      return;
    }
    Placement pl = {.split = sec[0], .stages = sec[1], .stage_ids = key[0], .partition = key[1]};
    int wanted = pp ? (int)(pp * virt) : 0;
    if (!pl.split && !pl.stages && !pl.stage_ids && !pl.partition && !wanted) wanted = 1;
    Pipeline one = {0};
    one.nstages = place(S, &pl, wanted, ploc, &one.stages);
    if (one.nstages < 0) return;
    if (one.nstages % virt) {
      diag_error(S->D, pw[5]->value->loc, "virtual = %lld needs the stage count (%d) to be a multiple of it", (long long)virt, one.nstages);
      return;
    }
    P->pp = one.nstages / (int)virt;
    int64_t per = tp * P->pp;
    if (dp_auto) {
      if (world && world % per) {
        diag_error(S->D, pw[3] ? pv[3]->loc : P->model_loc,
                   "world size %lld does not divide by tp x pp = %lld x %d = %lld, so dp = auto has no whole value",
                   (long long)world, (long long)tp, P->pp, (long long)per);
        return;
      }
      dp = world ? world / per : 1;
    } else if (world && world != dp * per) {
      diag_error(S->D, pw[3] ? pv[3]->loc : pv[2]->loc,
                 "world size %lld does not match the plan: dp %lld x tp %lld x pp %d = %lld ranks", (long long)world,
                 (long long)dp, (long long)tp, P->pp, (long long)(dp * per));
      return;
    }
    if (dp * per > (1 << 24)) {
      diag_error(S->D, sec[2] ? sec[2]->name_loc : P->model_loc,
                 "the plan needs dp %lld x tp %lld x pp %d = %lld ranks; pipec plans at most 16777216", (long long)dp,
                 (long long)tp, P->pp, (long long)(dp * per));
      return;
    }
    P->dp = (int)dp;
    P->world = (int)(dp * per);
    if (!P->microbatches) P->microbatches = P->pp;
    one.microbatches = P->microbatches;
    P->npipes = (int)dp;
    P->pipes = arena_alloc(S->A, sizeof(Pipeline) * (size_t)dp);
    for (int i = 0; i < dp; i++) P->pipes[i] = one;
    int64_t parts = dp * P->microbatches;
    if (P->has_train && P->batch % parts)
      diag_error(S->D, tw[0] ? tv[0]->loc : sec[3] ? sec[3]->name_loc : P->model_loc,
                 "batch %lld does not divide by dp x microbatches = %lld x %d = %lld; use a batch that is a multiple of %lld",
                 (long long)P->batch, (long long)dp, P->microbatches, (long long)parts, (long long)parts);
  }
  if (S->D->errors) return;
  check_roles(S, &P->pipes[0]);
  for (int i = 1; i < P->npipes; i++)
    if (P->pipes[i].template_name != P->pipes[i - 1].template_name) check_roles(S, &P->pipes[i]);
  if (tp > 1)
    for (int i = 0; i < P->nmods; i++) check_tp(S, P->mods[i], (int)tp, 1);

  /* schedule constraints (PyTorch / Megatron definitions) */
  if (!P->has_train) return;
  Loc sl = tw[3] ? tv[3]->loc : sec[3] ? sec[3]->name_loc : P->model_loc;
  const char *sn = schedule_names[P->schedule];
  if (templates.len && (P->schedule == SCHED_INTERLEAVED || P->schedule == SCHED_ZBV || P->schedule == SCHED_LOOPED_BFS)) {
    diag_error(S->D, sl, "schedule %s needs one pipeline shape; with templates use gpipe, 1f1b or zb1p", sn);
    return;
  }
  int multi = P->schedule == SCHED_INTERLEAVED || P->schedule == SCHED_ZBV || P->schedule == SCHED_LOOPED_BFS;
  if (virt > 1 && !multi) {
    diag_error(S->D, pw[5]->value->loc, "virtual = %lld places several chunks per rank, which schedule %s does not run; use interleaved, looped_bfs or zbv",
               (long long)virt, sn);
    return;
  }
  if ((P->schedule == SCHED_INTERLEAVED || P->schedule == SCHED_LOOPED_BFS) && virt < 2 && P->pp > 1) {
    diag_error(S->D, sl, "schedule %s needs virtual >= 2 in parallel { } (several model chunks per rank)", sn);
    return;
  }
  if (P->schedule == SCHED_ZBV && virt != 2) {
    diag_error(S->D, sl, "schedule zbv places exactly two chunks per rank in a V; set virtual = 2 in parallel { }");
    return;
  }
  for (int i = 0; i < P->npipes; i++) {
    const Pipeline *pl = &P->pipes[i];
    int ns = pl->nstages / (int)virt, m = pl->microbatches;
    const char *in = pl->template_name ? arena_printf(S->A, " in template '%s'", pl->template_name) : "";
    if ((P->schedule == SCHED_1F1B || P->schedule == SCHED_ZB1P || P->schedule == SCHED_ZBV) && m < ns) {
      diag_error(S->D, sl, "schedule %s needs microbatches >= stages, but has %d microbatches for %d stages%s; raise microbatches to at least %d",
                 sn, m, ns, in, ns);
      return;
    }
    if (P->schedule == SCHED_INTERLEAVED && m % ns) {
      diag_error(S->D, sl, "schedule interleaved needs microbatches to be a multiple of pp, but has %d microbatches and pp = %d", m, ns);
      return;
    }
  }
}
