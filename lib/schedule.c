/* schedule.c — the schedule IR's building blocks: names, placement,
 * construction, text form, and lowering (inserting communication). */
#include "lib/schedule.h"

#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"

const char *const act_names[ACT_COUNT] = {"F", "B", "I", "W", "SEND_F", "RECV_F", "SEND_B", "RECV_B",
                                          "REDUCE_GRAD", "TIED_ALLREDUCE", "STEP"};

int action_is_p2p(int kind) { return kind == ACT_SEND_F || kind == ACT_RECV_F || kind == ACT_SEND_B || kind == ACT_RECV_B; }

void placement_fill(int *stage_rank, int nranks, int nstages, StagePlacement how) {
  for (int s = 0; s < nstages; s++) {
    if (how == PLACE_V) {
      int lap = s / nranks, pos = s % nranks;
      stage_rank[s] = lap % 2 == 0 ? pos : nranks - 1 - pos;
    } else
      stage_rank[s] = s % nranks;
  }
}

Schedule *schedule_new(int nranks, int nstages, int nmb, const int *stage_rank) {
  Schedule *s = xcalloc(1, sizeof *s);
  s->nranks = nranks, s->nstages = nstages, s->nmb = nmb;
  s->stage_rank = xcalloc((size_t)nstages, sizeof(int));
  if (stage_rank) memcpy(s->stage_rank, stage_rank, sizeof(int) * (size_t)nstages);
  s->rank = xcalloc((size_t)nranks, sizeof(RankActions));
  return s;
}

void schedule_free(Schedule *s) {
  if (!s) return;
  for (int r = 0; r < s->nranks; r++) free(s->rank[r].a);
  free(s->rank);
  free(s->stage_rank);
  free(s);
}

void schedule_push(Schedule *s, int rank, Action a) {
  RankActions *ra = &s->rank[rank];
  if (ra->n == ra->cap) {
    ra->cap = ra->cap ? ra->cap * 2 : 16;
    ra->a = xrealloc(ra->a, (size_t)ra->cap, sizeof(Action));
  }
  ra->a[ra->n++] = a;
}

int action_format(char *buf, size_t n, Action a) {
  if (a.kind < 0 || a.kind >= ACT_COUNT) return snprintf(buf, n, "?");
  if (a.kind == ACT_TIED_ALLREDUCE || a.kind == ACT_STEP) return snprintf(buf, n, "%s", act_names[a.kind]);
  if (a.kind == ACT_REDUCE_GRAD) return snprintf(buf, n, "%d%s", a.stage, act_names[a.kind]);
  return snprintf(buf, n, "%d%s%d", a.stage, act_names[a.kind], a.mb);
}

int action_parse(const char *text, Action *out) {
  const char *p = text;
  if (!strcmp(p, "TIED_ALLREDUCE") || !strcmp(p, "STEP")) {
    *out = (Action){p[0] == 'S' ? ACT_STEP : ACT_TIED_ALLREDUCE, -1, -1};
    return 0;
  }
  if (*p < '0' || *p > '9') return -1;
  long stage = 0;
  for (; *p >= '0' && *p <= '9'; p++)
    if ((stage = stage * 10 + (*p - '0')) > 1 << 24) return -1;
  int kind = -1;
  size_t best = 0;
  for (int k = 0; k < ACT_COUNT; k++) {
    size_t l = strlen(act_names[k]);
    if (l > best && !strncmp(p, act_names[k], l)) kind = k, best = l;
  }
  if (kind < 0 || kind == ACT_TIED_ALLREDUCE || kind == ACT_STEP) return -1;
  p += best;
  long mb = -1;
  if (kind == ACT_REDUCE_GRAD) {
    if (*p) return -1;
  } else {
    if (*p < '0' || *p > '9') return -1;
    for (mb = 0; *p >= '0' && *p <= '9'; p++)
      if ((mb = mb * 10 + (*p - '0')) > 1 << 24) return -1;
    if (*p) return -1;
  }
  *out = (Action){kind, (int)stage, (int)mb};
  return 0;
}

Schedule *schedule_lower(const Schedule *c, int dp, int tied_first_last, int optimizer_step) {
  Schedule *s = schedule_new(c->nranks, c->nstages, c->nmb, c->stage_rank);
  for (int r = 0; r < c->nranks; r++) {
    for (int i = 0; i < c->rank[r].n; i++) {
      Action a = c->rank[r].a[i];
      int st = a.stage;
      int is_f = a.kind == ACT_F, is_b = a.kind == ACT_B || a.kind == ACT_I;
      /* receive just before the compute that needs it */
      if (is_f && st > 0 && c->stage_rank[st - 1] != r) schedule_push(s, r, (Action){ACT_RECV_F, st, a.mb});
      if (is_b && st < c->nstages - 1 && c->stage_rank[st + 1] != r) schedule_push(s, r, (Action){ACT_RECV_B, st, a.mb});
      schedule_push(s, r, a);
      /* send just after the compute that makes it */
      if (is_f && st < c->nstages - 1 && c->stage_rank[st + 1] != r) schedule_push(s, r, (Action){ACT_SEND_F, st, a.mb});
      if (is_b && st > 0 && c->stage_rank[st - 1] != r) schedule_push(s, r, (Action){ACT_SEND_B, st, a.mb});
    }
    if (optimizer_step) {
      if (dp > 1)
        for (int st = 0; st < c->nstages; st++)
          if (c->stage_rank[st] == r) schedule_push(s, r, (Action){ACT_REDUCE_GRAD, st, -1});
      if (tied_first_last && c->stage_rank[0] != c->stage_rank[c->nstages - 1] &&
          (r == c->stage_rank[0] || r == c->stage_rank[c->nstages - 1]))
        schedule_push(s, r, (Action){ACT_TIED_ALLREDUCE, -1, -1});
      schedule_push(s, r, (Action){ACT_STEP, -1, -1});
    }
  }
  return s;
}
