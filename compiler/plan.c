/* plan.c — the rank plan (plan.h): which rank runs which stages, and the
 * tp, dp, pp and tied-embedding groups, as text and as plan.json.
 *
 * Nothing is stored per rank: a Layout maps (pipeline, pp rank, tp rank) to
 * a rank and back, and every group list is enumerated from its leaders (the
 * members whose coordinate along the group's axis is 0), which come out
 * sorted by first rank without a sort.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/plan.h"
#include "lib/files.h"

enum { AX_TP, AX_DP, AX_PP };

typedef struct Layout {
  const Program *p;
  Arena *A;
  int grid;           /* 1: every pipeline has the same stages, ranks by p->order */
  int tp, dp, pp, v;  /* grid: pp ranks per pipeline, v chunks per rank; templates: v = 1 */
  int zbv;            /* chunks in a V rather than a loop */
  int64_t world;
  int64_t stride[3];  /* grid: rank stride of tp, dp, pp */
  int64_t *base;      /* templates: first rank of each pipeline, npipes + 1 entries */
  int64_t *scratch;   /* room for the largest group */
} Layout;

/* A module others tie to, the modules tied to it, and the groups it makes. */
typedef struct Tie {
  int owner, nusers, *users;
  int ngroups;
  int64_t **groups; /* sorted; each: member count, then the ranks */
} Tie;

typedef struct Ties {
  Tie *t;
  int n;
  int64_t **all; /* the union of the ties' groups, sorted, unique */
  int nall;
} Ties;

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err && errlen) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

static int same_stages(const Pipeline *a, const Pipeline *b) {
  if (a->stages == b->stages) return a->nstages == b->nstages;
  if (a->nstages != b->nstages) return 0;
  for (int s = 0; s < a->nstages; s++)
    if (a->stages[s].first != b->stages[s].first || a->stages[s].last != b->stages[s].last) return 0;
  return 1;
}

static int layout_init(Layout *L, const Program *p, Arena *A, char *err, size_t errlen) {
  memset(L, 0, sizeof *L);
  L->p = p, L->A = A;
  if (!p || !p->pipes || p->npipes < 1 || p->nmods < 1 || p->tp < 1) return fail(err, errlen, "the program has no pipelines");
  for (int k = 0; k < p->npipes; k++) {
    const Pipeline *pl = &p->pipes[k];
    int ok = pl->nstages >= 1 && pl->stages && pl->stages[0].first == 0 && pl->stages[pl->nstages - 1].last == p->nmods - 1;
    for (int s = 0; ok && s < pl->nstages; s++)
      ok = pl->stages[s].first <= pl->stages[s].last && (!s || pl->stages[s].first == pl->stages[s - 1].last + 1);
    if (!ok) return fail(err, errlen, "pipeline %d does not cover modules 0 .. %d with contiguous stages", k, p->nmods - 1);
  }
  L->grid = plan_is_grid(p);
  L->tp = p->tp, L->dp = p->npipes, L->v = p->virtual_stages > 1 ? p->virtual_stages : 1;
  int64_t maxg = p->tp > p->npipes ? p->tp : p->npipes;
  if (L->grid) {
    int ns = p->pipes[0].nstages;
    if (ns % L->v) return fail(err, errlen, "%d stages do not split into virtual = %d chunks per rank", ns, L->v);
    L->pp = ns / L->v;
    if (p->pp != L->pp || p->dp != L->dp)
      return fail(err, errlen, "the program says pp %d, dp %d, but has %d pipelines of %d stages (virtual %d)", p->pp, p->dp,
                  p->npipes, ns, L->v);
    L->zbv = p->schedule == SCHED_ZBV;
    const int64_t size[3] = {L->tp, L->dp, L->pp};
    int64_t stride = 1;
    int seen = 0;
    for (int i = 0; i < 3; i++) {
      int ax = p->order[i] == 't' ? AX_TP : p->order[i] == 'd' ? AX_DP : p->order[i] == 'p' ? AX_PP : -1;
      if (ax < 0 || (seen & (1 << ax))) return fail(err, errlen, "order does not name tp, dp and pp once each");
      seen |= 1 << ax;
      L->stride[ax] = stride;
      stride *= size[ax];
    }
    L->world = stride;
    if (L->pp > maxg) maxg = L->pp;
  } else {
    if (L->v != 1) return fail(err, errlen, "virtual = %d with pipelines of different shapes", L->v);
    L->base = arena_alloc(A, sizeof(int64_t) * (size_t)(p->npipes + 1));
    for (int k = 0; k < p->npipes; k++) {
      L->base[k + 1] = L->base[k] + (int64_t)p->pipes[k].nstages * p->tp;
      if (p->pipes[k].nstages > L->pp) L->pp = p->pipes[k].nstages;
    }
    L->world = L->base[p->npipes];
    if (L->pp > maxg) maxg = L->pp;
  }
  if (L->world != p->world)
    return fail(err, errlen, "the program says world %d, but its layout needs %lld ranks", p->world, (long long)L->world);
  L->scratch = arena_alloc(A, sizeof(int64_t) * (size_t)(maxg + 1));
  return 0;
}

/* The pipeline rank that runs stage (chunk) c. */
static int stage_pp_rank(const Layout *L, int c) {
  if (!L->grid || L->v == 1) return c;
  int j = c / L->pp, r = c % L->pp;
  return L->zbv && (j & 1) ? L->pp - 1 - r : r;
}

/* The j-th chunk of pipeline rank r (loop: r + j*pp; V: r, 2pp-1-r, ...). */
static int rank_chunk(const Layout *L, int r, int j) {
  return j * L->pp + (L->zbv && (j & 1) ? L->pp - 1 - r : r);
}

static int64_t rank_of(const Layout *L, int k, int r, int t) {
  if (L->grid) return t * L->stride[AX_TP] + k * L->stride[AX_DP] + r * L->stride[AX_PP];
  return L->base[k] + (int64_t)r * L->tp + t;
}

static void coords(const Layout *L, int64_t rank, int *k, int *r, int *t) {
  if (L->grid) {
    *t = (int)(rank / L->stride[AX_TP] % L->tp);
    *k = (int)(rank / L->stride[AX_DP] % L->dp);
    *r = (int)(rank / L->stride[AX_PP] % L->pp);
    return;
  }
  int lo = 0, hi = L->p->npipes - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (L->base[mid] <= rank) lo = mid;
    else hi = mid - 1;
  }
  *k = lo;
  *r = (int)((rank - L->base[lo]) / L->tp);
  *t = (int)((rank - L->base[lo]) % L->tp);
}

/* The stage of pipeline pl that holds top-level module i. */
static int module_stage(const Pipeline *pl, int i) {
  int lo = 0, hi = pl->nstages - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (pl->stages[mid].first <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* ---- groups ---- */

/* The members of the group of family ax that `leader` leads, into m; -1 when
 * leader is not the group's first member. */
static int group_members(const Layout *L, int ax, int64_t leader, int64_t *m) {
  if (L->grid) {
    const int size = ax == AX_TP ? L->tp : ax == AX_DP ? L->dp : L->pp;
    if (leader / L->stride[ax] % size) return -1;
    for (int i = 0; i < size; i++) m[i] = leader + i * L->stride[ax];
    return size;
  }
  int k, r, t;
  coords(L, leader, &k, &r, &t);
  if (ax == AX_TP) {
    if (t) return -1;
    for (int i = 0; i < L->tp; i++) m[i] = leader + i;
    return L->tp;
  }
  if (ax != AX_PP || r) return -1;
  for (int s = 0; s < L->p->pipes[k].nstages; s++) m[s] = leader + (int64_t)s * L->tp;
  return L->p->pipes[k].nstages;
}

static void put_ranks(FILE *out, const int64_t *m, int n) {
  fputc('[', out);
  for (int i = 0; i < n; i++) fprintf(out, "%s%lld", i ? ", " : "", (long long)m[i]);
  fputc(']', out);
}

/* A group list as a Python (and JSON) list of lists. */
static void put_family(FILE *out, const Layout *L, int ax) {
  fputc('[', out);
  int any = 0;
  for (int64_t rank = 0; rank < L->world; rank++) {
    int n = group_members(L, ax, rank, L->scratch);
    if (n < 0) continue;
    if (any++) fputs(", ", out);
    put_ranks(out, L->scratch, n);
  }
  fputc(']', out);
}

static void put_groups(FILE *out, int64_t *const *g, int n) {
  fputc('[', out);
  for (int i = 0; i < n; i++) {
    if (i) fputs(", ", out);
    put_ranks(out, g[i] + 1, (int)g[i][0]);
  }
  fputc(']', out);
}

/* ---- tied weights ---- */

static int subtree_has(const Module *m, const Module *x) {
  if (m == x) return 1;
  for (int i = 0; i < m->nkids; i++)
    if (subtree_has(m->kids[i], x)) return 1;
  return 0;
}

/* The top-level module whose tree holds x, or -1. */
static int top_of(const Program *p, const Module *x) {
  for (int j = 0; j < p->nmods; j++)
    if (p->mods[j] == x) return j;
  for (int j = 0; j < p->nmods; j++)
    if (subtree_has(p->mods[j], x)) return j;
  return -1;
}

typedef struct Pairs {
  int (*a)[2];
  int n, cap;
} Pairs;

static void collect_ties(const Program *p, Arena *A, int top, const Module *m, Pairs *pr) {
  if (m->tie && !subtree_has(p->mods[top], m->tie)) {
    int o = top_of(p, m->tie);
    if (o >= 0) {
      if (pr->n == pr->cap) {
        int cap = pr->cap ? 2 * pr->cap : 8;
        int(*a)[2] = arena_alloc(A, sizeof *a * (size_t)cap);
        if (pr->n) memcpy(a, pr->a, sizeof *a * (size_t)pr->n);
        pr->a = a, pr->cap = cap;
      }
      pr->a[pr->n][0] = o, pr->a[pr->n][1] = top, pr->n++;
    }
  }
  for (int i = 0; i < m->nkids; i++) collect_ties(p, A, top, m->kids[i], pr);
}

static int cmp_pair(const void *x, const void *y) {
  const int *a = x, *b = y;
  return a[0] != b[0] ? (a[0] > b[0]) - (a[0] < b[0]) : (a[1] > b[1]) - (a[1] < b[1]);
}

static int cmp_int(const void *x, const void *y) {
  int a = *(const int *)x, b = *(const int *)y;
  return (a > b) - (a < b);
}

static int cmp_group(const void *x, const void *y) {
  const int64_t *a = *(int64_t *const *)x, *b = *(int64_t *const *)y;
  for (int64_t i = 1; i <= a[0] && i <= b[0]; i++)
    if (a[i] != b[i]) return (a[i] > b[i]) - (a[i] < b[i]);
  return (a[0] > b[0]) - (a[0] < b[0]);
}

static void find_ties(const Layout *L, Ties *T) {
  const Program *p = L->p;
  Arena *A = L->A;
  memset(T, 0, sizeof *T);
  Pairs pr = {0};
  for (int i = 0; i < p->nmods; i++) collect_ties(p, A, i, p->mods[i], &pr);
  if (!pr.n) return;
  qsort(pr.a, (size_t)pr.n, sizeof *pr.a, cmp_pair);
  T->t = arena_alloc(A, sizeof(Tie) * (size_t)pr.n);
  int total = 0;
  for (int i = 0; i < pr.n;) {
    Tie *t = &T->t[T->n++];
    t->owner = pr.a[i][0];
    t->users = arena_alloc(A, sizeof(int) * (size_t)pr.n);
    for (; i < pr.n && pr.a[i][0] == t->owner; i++)
      if (!t->nusers || t->users[t->nusers - 1] != pr.a[i][1]) t->users[t->nusers++] = pr.a[i][1];
    /* per pipeline: the distinct pipeline ranks holding the owner or a user */
    int *held = arena_alloc(A, sizeof(int) * (size_t)(t->nusers + 1));
    t->groups = arena_alloc(A, sizeof(int64_t *) * (size_t)p->npipes * (size_t)L->tp);
    for (int k = 0; k < p->npipes; k++) {
      const Pipeline *pl = &p->pipes[k];
      int nh = 0;
      held[nh++] = stage_pp_rank(L, module_stage(pl, t->owner));
      for (int u = 0; u < t->nusers; u++) held[nh++] = stage_pp_rank(L, module_stage(pl, t->users[u]));
      qsort(held, (size_t)nh, sizeof *held, cmp_int);
      int nu = 1;
      for (int j = 1; j < nh; j++)
        if (held[j] != held[nu - 1]) held[nu++] = held[j];
      if (nu < 2) continue;
      for (int tr = 0; tr < L->tp; tr++) {
        int64_t *g = arena_alloc(A, sizeof(int64_t) * (size_t)(nu + 1));
        g[0] = nu;
        for (int j = 0; j < nu; j++) g[j + 1] = rank_of(L, k, held[j], tr);
        t->groups[t->ngroups++] = g;
      }
    }
    qsort(t->groups, (size_t)t->ngroups, sizeof *t->groups, cmp_group);
    total += t->ngroups;
  }
  T->all = arena_alloc(A, sizeof(int64_t *) * (size_t)(total + 1));
  for (int i = 0; i < T->n; i++)
    for (int j = 0; j < T->t[i].ngroups; j++) T->all[T->nall++] = T->t[i].groups[j];
  qsort(T->all, (size_t)T->nall, sizeof *T->all, cmp_group);
  int nu = 0;
  for (int i = 0; i < T->nall; i++)
    if (!nu || cmp_group(&T->all[i], &T->all[nu - 1])) T->all[nu++] = T->all[i];
  T->nall = nu;
}

/* ---- per-module dp groups (templates) ---- */

/* For top-level module i: the ranks holding it in every pipeline, at tp rank t. */
static void module_dp_group(const Layout *L, int i, int t, int64_t *m) {
  for (int k = 0; k < L->p->npipes; k++) m[k] = rank_of(L, k, module_stage(&L->p->pipes[k], i), t);
}

static void put_module_dp(FILE *out, const Layout *L, int i) {
  fputc('[', out);
  for (int t = 0; t < L->tp; t++) {
    if (t) fputs(", ", out);
    module_dp_group(L, i, t, L->scratch);
    put_ranks(out, L->scratch, L->p->npipes);
  }
  fputc(']', out);
}

/* Modules i and i-1 are on one stage in every pipeline. */
static int same_place(const Program *p, int i) {
  for (int k = 0; k < p->npipes; k++)
    if (module_stage(&p->pipes[k], i) != module_stage(&p->pipes[k], i - 1)) return 0;
  return 1;
}

/* ---- text ---- */

static const char *const axis_names[3] = {"tp", "dp", "pp"};

static int axis_of(char c) { return c == 't' ? AX_TP : c == 'd' ? AX_DP : AX_PP; }

static void put_stage_span(FILE *out, const Program *p, const Stage *st) {
  fprintf(out, "[%s", p->mods[st->first]->path);
  if (st->last > st->first) fprintf(out, " .. %s", p->mods[st->last]->path);
  fputc(']', out);
}

int plan_print(FILE *out, const Program *p) {
  Arena A = {0};
  Layout L;
  char err[256];
  if (layout_init(&L, p, &A, err, sizeof err)) {
    fprintf(stderr, "pipec: cannot lay out the ranks: %s\n", err);
    arena_free(&A);
    return -1;
  }
  Ties T;
  find_ties(&L, &T);
  const char *sched = schedule_names[p->schedule];
  if (L.grid) {
    fprintf(out, "plan for model %s: %lld rank%s = tp %d x dp %d x pp %d", p->model_name, (long long)L.world,
            L.world == 1 ? "" : "s", L.tp, L.dp, L.pp);
    if (L.v > 1) fprintf(out, ", virtual %d (%d stages)", L.v, L.v * L.pp);
    fprintf(out, ", schedule %s, %d microbatch%s\n", sched, p->pipes[0].microbatches, p->pipes[0].microbatches == 1 ? "" : "es");
    fprintf(out, "layout: order %s-%s-%s, rank =", axis_names[axis_of(p->order[0])], axis_names[axis_of(p->order[1])],
            axis_names[axis_of(p->order[2])]);
    for (int i = 0; i < 3; i++) {
      int ax = axis_of(p->order[i]);
      fprintf(out, "%s", i ? " +" : "");
      if (L.stride[ax] != 1) fprintf(out, " %lld*%s_rank", (long long)L.stride[ax], axis_names[ax]);
      else fprintf(out, " %s_rank", axis_names[ax]);
    }
    fputc('\n', out);
    if (L.v > 1) {
      fprintf(out, "chunks: pp rank r runs stages r");
      for (int j = 1; j < L.v; j++) {
        if (L.zbv && (j & 1)) fprintf(out, ", %d-r", (j + 1) * L.pp - 1);
        else fprintf(out, ", %d+r", j * L.pp);
      }
      fprintf(out, " (%s placement)\n", L.zbv ? "V" : "loop");
    }
  } else {
    fprintf(out, "plan for model %s: %lld rank%s = %d pipelines from templates x tp %d, schedule %s\n", p->model_name,
            (long long)L.world, L.world == 1 ? "" : "s", p->npipes, L.tp, sched);
    fprintf(out, "layout: pipeline after pipeline, rank = first rank of the pipeline + ");
    if (L.tp > 1) fprintf(out, "%d*pp_rank + tp_rank\n", L.tp);
    else fprintf(out, "pp_rank + tp_rank\n");
    for (int k = 0; k < p->npipes; k++) {
      const Pipeline *pl = &p->pipes[k];
      fprintf(out, "pipeline %d", k);
      if (pl->template_name) fprintf(out, " (template %s)", pl->template_name);
      fprintf(out, ": ranks %lld .. %lld, %d stage%s, %d microbatch%s\n", (long long)L.base[k], (long long)L.base[k + 1] - 1,
              pl->nstages, pl->nstages == 1 ? "" : "s", pl->microbatches, pl->microbatches == 1 ? "" : "es");
    }
  }
  for (int64_t rank = 0; rank < L.world; rank++) {
    int k, r, t;
    coords(&L, rank, &k, &r, &t);
    const Pipeline *pl = &p->pipes[k];
    fprintf(out, "rank %lld: pipeline %d", (long long)rank, k);
    if (pl->template_name) fprintf(out, " (template %s)", pl->template_name);
    int n = L.grid ? L.v : 1;
    fprintf(out, ", pp %d, tp %d, dp %d, stage%s ", r, t, k, n == 1 ? "" : "s");
    for (int j = 0; j < n; j++) {
      int c = L.grid ? rank_chunk(&L, r, j) : r;
      fprintf(out, "%s%d ", j ? ", " : "", c);
      put_stage_span(out, p, &pl->stages[c]);
    }
    fputc('\n', out);
  }
  fputs("tp groups: ", out);
  put_family(out, &L, AX_TP);
  if (L.grid) {
    fputs("\ndp groups: ", out);
    put_family(out, &L, AX_DP);
  }
  fputs("\npp groups: ", out);
  put_family(out, &L, AX_PP);
  fputs("\ntied groups: ", out);
  put_groups(out, T.all, T.nall);
  fputc('\n', out);
  if (!L.grid) {
    fputs("dp groups per module:\n", out);
    for (int i = 0; i < p->nmods;) {
      int j = i + 1;
      while (j < p->nmods && same_place(p, j)) j++;
      fprintf(out, "  %s", p->mods[i]->path);
      if (j - 1 > i) fprintf(out, " .. %s", p->mods[j - 1]->path);
      fputs(": ", out);
      put_module_dp(out, &L, i);
      fputc('\n', out);
      i = j;
    }
  }
  arena_free(&A);
  return 0;
}

/* ---- JSON ---- */

static void json_str(FILE *out, const char *s) {
  if (!s) {
    fputs("null", out);
    return;
  }
  fputc('"', out);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    switch (*c) {
    case '"': fputs("\\\"", out); break;
    case '\\': fputs("\\\\", out); break;
    case '\n': fputs("\\n", out); break;
    case '\t': fputs("\\t", out); break;
    case '\r': fputs("\\r", out); break;
    default:
      if (*c < 0x20 || *c == 0x7f) fprintf(out, "\\u%04x", *c);
      else fputc(*c, out);
    }
  }
  fputc('"', out);
}

static void json_plan(FILE *out, const Layout *L, const Ties *T) {
  const Program *p = L->p;
  fputs("{\n  \"model\": ", out);
  json_str(out, p->model_name);
  fprintf(out, ",\n  \"world\": %lld,\n  \"tp\": %d,\n  \"dp\": %d,\n  \"pp\": %d,\n  \"virtual\": %d,\n", (long long)L->world, L->tp,
          L->dp, L->pp, L->v);
  fprintf(out, "  \"order\": \"%s-%s-%s\",\n", axis_names[axis_of(p->order[0])], axis_names[axis_of(p->order[1])],
          axis_names[axis_of(p->order[2])]);
  fprintf(out, "  \"layout\": \"%s\",\n  \"schedule\": ", L->grid ? "grid" : "templates");
  json_str(out, schedule_names[p->schedule]);
  if (L->grid) fprintf(out, ",\n  \"microbatches\": %d,\n", p->pipes[0].microbatches);
  else fputs(",\n  \"microbatches\": null,\n", out);

  fputs("  \"pipelines\": [", out);
  for (int k = 0; k < p->npipes; k++) {
    const Pipeline *pl = &p->pipes[k];
    fprintf(out, "%s\n    {\"index\": %d, \"template\": ", k ? "," : "", k);
    json_str(out, pl->template_name);
    fprintf(out, ", \"microbatches\": %d, \"stages\": [", pl->microbatches);
    for (int s = 0; s < pl->nstages; s++) {
      const Stage *st = &pl->stages[s];
      int r = stage_pp_rank(L, s);
      fprintf(out, "%s\n      {\"index\": %d, \"pp_rank\": %d, \"first\": ", s ? "," : "", s, r);
      json_str(out, p->mods[st->first]->path);
      fputs(", \"last\": ", out);
      json_str(out, p->mods[st->last]->path);
      fputs(", \"modules\": [", out);
      for (int i = st->first; i <= st->last; i++) {
        if (i > st->first) fputs(", ", out);
        json_str(out, p->mods[i]->path);
      }
      fputs("], \"ranks\": [", out);
      for (int t = 0; t < L->tp; t++) fprintf(out, "%s%lld", t ? ", " : "", (long long)rank_of(L, k, r, t));
      fputs("]}", out);
    }
    fputs("\n    ]}", out);
  }
  fputs("\n  ],\n  \"ranks\": [", out);
  for (int64_t rank = 0; rank < L->world; rank++) {
    int k, r, t;
    coords(L, rank, &k, &r, &t);
    fprintf(out, "%s\n    {\"rank\": %lld, \"pipeline\": %d, \"template\": ", rank ? "," : "", (long long)rank, k);
    json_str(out, p->pipes[k].template_name);
    fprintf(out, ", \"pp_rank\": %d, \"tp_rank\": %d, \"dp_rank\": %d, \"stages\": [", r, t, k);
    int n = L->grid ? L->v : 1;
    for (int j = 0; j < n; j++) fprintf(out, "%s%d", j ? ", " : "", L->grid ? rank_chunk(L, r, j) : r);
    fputs("]}", out);
  }
  fputs("\n  ],\n  \"groups\": {\n    \"tp\": ", out);
  put_family(out, L, AX_TP);
  if (L->grid) {
    fputs(",\n    \"dp\": ", out);
    put_family(out, L, AX_DP);
  }
  fputs(",\n    \"pp\": ", out);
  put_family(out, L, AX_PP);
  fputs(",\n    \"tied\": ", out);
  put_groups(out, T->all, T->nall);
  fputs(",\n    \"ties\": [", out);
  for (int i = 0; i < T->n; i++) {
    const Tie *t = &T->t[i];
    fprintf(out, "%s\n      {\"owner\": ", i ? "," : "");
    json_str(out, p->mods[t->owner]->path);
    fputs(", \"users\": [", out);
    for (int u = 0; u < t->nusers; u++) {
      if (u) fputs(", ", out);
      json_str(out, p->mods[t->users[u]]->path);
    }
    fputs("], \"groups\": ", out);
    put_groups(out, t->groups, t->ngroups);
    fputc('}', out);
  }
  fputs(T->n ? "\n    ]" : "]", out);
  if (!L->grid) {
    fputs(",\n    \"module_dp\": [", out);
    for (int i = 0; i < p->nmods; i++) {
      fprintf(out, "%s\n      {\"module\": ", i ? "," : "");
      json_str(out, p->mods[i]->path);
      fputs(", \"groups\": ", out);
      put_module_dp(out, L, i);
      fputc('}', out);
    }
    fputs("\n    ]", out);
  }
  fputs("\n  }\n}\n", out);
}

int plan_write_json(const char *path, const Program *p, char *err, size_t errlen) {
  Arena A = {0};
  Layout L;
  if (layout_init(&L, p, &A, err, errlen)) {
    arena_free(&A);
    return -1;
  }
  Ties T;
  find_ties(&L, &T);
  char *json = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&json, &len);
  json_plan(f, &L, &T);
  fclose(f);
  int rc = file_write_atomic(path, json, len, err, errlen);
  free(json);
  arena_free(&A);
  return rc;
}

int plan_is_grid(const Program *p) {
  for (int k = 1; k < p->npipes; k++)
    if (!same_stages(&p->pipes[0], &p->pipes[k])) return 0;
  return 1;
}

int plan_rank_table(const Program *p, int *pipeline, int *pp_rank, int *tp_rank, char *err, size_t errlen) {
  Arena A = {0};
  Layout L;
  if (layout_init(&L, p, &A, err, errlen)) {
    arena_free(&A);
    return -1;
  }
  for (int64_t r = 0; r < L.world; r++) coords(&L, r, &pipeline[r], &pp_rank[r], &tp_rank[r]);
  arena_free(&A);
  return 0;
}
