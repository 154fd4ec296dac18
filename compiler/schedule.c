/* schedule.c — the schedules pipec offers, as compute-only action lists per
 * rank (lib/schedule.h), following their published definitions:
 *
 *   gpipe         all forwards, then all backwards (Huang et al., PyTorch ScheduleGPipe)
 *   1f1b          min(p-r-1, m) warm-up forwards, then one forward / one
 *                 backward, then the remaining backwards (PipeDream-Flush,
 *                 Megatron-LM, PyTorch Schedule1F1B)
 *   interleaved   Megatron-LM's interleaved 1F1B over v chunks per rank,
 *                 chunk c of rank r = stage c*p + r; needs m % p == 0
 *   looped_bfs    each chunk's forwards for all microbatches, chunk after
 *                 chunk; backwards in reverse (PyTorch ScheduleLoopedBFS)
 *   zb1p          zero bubble with one chunk (ZB-H1, Qi et al. 2023): B split
 *                 into I and W; W fills the time a rank would wait
 *   zbv           zero bubble on a V: rank r holds stages r and 2p-1-r
 *   forward_only  inference: forwards only
 *
 * The zero-bubble orders come from a list scheduler run at unit costs
 * (F = I = W = 1): a free rank takes a ready I first, else a ready F while
 * its in-flight microbatches (forward done, W not yet) stay within 1F1B's
 * bound, else a pending W. So peak memory equals 1F1B's, as in ZB-H1.
 */
#include <stdlib.h>
#include <string.h>

#include "compiler/frontend.h"
#include "lib/schedule.h"

static void push(Schedule *s, int kind, int stage, int mb) { schedule_push(s, s->stage_rank[stage], (Action){kind, stage, mb}); }

static void gen_gpipe(Schedule *s) {
  for (int st = 0; st < s->nstages; st++) {
    for (int mb = 0; mb < s->nmb; mb++) push(s, ACT_F, st, mb);
    for (int mb = 0; mb < s->nmb; mb++) push(s, ACT_B, st, mb);
  }
}

static void gen_1f1b(Schedule *s) {
  int p = s->nranks, m = s->nmb;
  for (int r = 0; r < p; r++) {
    int w = p - r - 1 < m ? p - r - 1 : m;
    for (int i = 0; i < w; i++) push(s, ACT_F, r, i);
    for (int i = 0; i < m - w; i++) {
      push(s, ACT_F, r, w + i);
      push(s, ACT_B, r, i);
    }
    for (int i = m - w; i < m; i++) push(s, ACT_B, r, i);
  }
}

/* Megatron-LM's interleaved schedule (forward_backward_pipelining_with_interleaving). */
static void gen_interleaved(Schedule *s, int v) {
  int p = s->nranks, m = s->nmb, total = m * v;
  for (int r = 0; r < p; r++) {
    int warm = (p - r - 1) * 2 + (v - 1) * p;
    if (warm > total) warm = total;
#define CHUNK(k, fwd) ((fwd) ? ((k) % (p * v)) / p : v - 1 - ((k) % (p * v)) / p)
#define MBID(k) (((k) / (p * v)) * p + (k) % p)
    for (int k = 0; k < warm; k++) push(s, ACT_F, CHUNK(k, 1) * p + r, MBID(k));
    for (int i = 0; i < total - warm; i++) {
      int k = warm + i;
      push(s, ACT_F, CHUNK(k, 1) * p + r, MBID(k));
      push(s, ACT_B, CHUNK(i, 0) * p + r, MBID(i));
    }
    for (int k = total - warm; k < total; k++) push(s, ACT_B, CHUNK(k, 0) * p + r, MBID(k));
#undef CHUNK
#undef MBID
  }
}

static void gen_looped_bfs(Schedule *s, int v) {
  int p = s->nranks, m = s->nmb;
  for (int r = 0; r < p; r++) {
    for (int c = 0; c < v; c++)
      for (int mb = 0; mb < m; mb++) push(s, ACT_F, c * p + r, mb);
    for (int c = v - 1; c >= 0; c--)
      for (int mb = m - 1; mb >= 0; mb--) push(s, ACT_B, c * p + r, mb);
  }
}

static void gen_forward_only(Schedule *s, int v) {
  int p = s->nranks, m = s->nmb;
  for (int r = 0; r < p; r++)
    for (int c = 0; c < v; c++)
      for (int mb = 0; mb < m; mb++) push(s, ACT_F, c * p + r, mb);
}

/* Zero-bubble list scheduler at unit costs. */
static int gen_zero_bubble(Schedule *s, char *err, size_t errlen) {
  int S = s->nstages, m = s->nmb, p = s->nranks, v = S / p;
  size_t n = (size_t)S * (size_t)m, per_rank = (size_t)v * (size_t)m;
  long *f_done = malloc(n * sizeof(long)), *i_done = malloc(n * sizeof(long)); /* finish times, -1: not yet */
  int *next_f = calloc((size_t)S, sizeof(int)), *next_i = calloc((size_t)S, sizeof(int));
  int *inflight = calloc((size_t)p, sizeof(int));
  int *wq = malloc((size_t)p * per_rank * sizeof(int)); /* per rank: stage*m+mb of each I, in order */
  int *wq_head = calloc((size_t)p, sizeof(int)), *wq_tail = calloc((size_t)p, sizeof(int));
  for (size_t k = 0; k < n; k++) f_done[k] = i_done[k] = -1;
  long left = (long)n * 3, t = 0;
  int ok = 1, stuck = 0;
  while (left > 0) {
    int progressed = 0;
    for (int r = 0; r < p; r++) {
      int kind = -1, bst = -1, bmb = -1;
      /* 1. a ready I: lowest microbatch, then deepest stage */
      for (int st = S - 1; st >= 0; st--) {
        if (s->stage_rank[st] != r || next_i[st] >= m) continue;
        int mb = next_i[st];
        size_t k = (size_t)st * (size_t)m + (size_t)mb;
        if (f_done[k] < 0 || f_done[k] > t) continue;
        if (st < S - 1 && (i_done[k + (size_t)m] < 0 || i_done[k + (size_t)m] > t)) continue;
        if (kind < 0 || mb < bmb) kind = ACT_I, bst = st, bmb = mb;
      }
      /* 2. a ready F while in-flight chunks stay within 1F1B's bound
            (p - r microbatches; v chunks each on a V) */
      int limit = v == 1 ? p - r : v * p;
      if (kind < 0 && inflight[r] < limit)
        for (int st = S - 1; st >= 0 && kind < 0; st--) {
          if (s->stage_rank[st] != r || next_f[st] >= m) continue;
          int mb = next_f[st];
          if (st > 0) {
            long d = f_done[(size_t)(st - 1) * (size_t)m + (size_t)mb];
            if (d < 0 || d > t) continue;
          }
          kind = ACT_F, bst = st, bmb = mb;
        }
      /* 3. else the oldest pending W */
      if (kind < 0 && wq_head[r] < wq_tail[r]) {
        int code = wq[(size_t)r * per_rank + (size_t)wq_head[r]++];
        kind = ACT_W, bst = code / m, bmb = code % m;
      }
      if (kind < 0) continue;
      size_t k = (size_t)bst * (size_t)m + (size_t)bmb;
      if (kind == ACT_F) {
        f_done[k] = t + 1;
        next_f[bst]++;
        inflight[r]++;
      } else if (kind == ACT_I) {
        i_done[k] = t + 1;
        next_i[bst]++;
        wq[(size_t)r * per_rank + (size_t)wq_tail[r]++] = (int)k;
      }
      if (kind == ACT_W) inflight[r]--; /* W is the last use of the stored activations */
      push(s, kind, bst, bmb);
      progressed = 1;
      left--;
    }
    t++;
    stuck = progressed ? 0 : stuck + 1;
    if (stuck > 2) { /* every unit-cost step frees something; a stall is a bug */
      snprintf(err, errlen, "the zero-bubble scheduler stalled at time %ld with %ld actions left", t, left);
      ok = 0;
      break;
    }
  }
  free(f_done), free(i_done), free(next_f), free(next_i), free(inflight), free(wq), free(wq_head), free(wq_tail);
  return ok;
}

Schedule *schedule_generate(int kind, int pp, int virt, int nmb, char *err, size_t errlen) {
  if (pp < 1 || virt < 1 || nmb < 1) {
    snprintf(err, errlen, "a schedule needs pp, virtual and microbatches of at least 1 (got %d, %d, %d)", pp, virt, nmb);
    return NULL;
  }
  const char *name = schedule_names[kind];
  int multi = kind == SCHED_INTERLEAVED || kind == SCHED_LOOPED_BFS || kind == SCHED_ZBV || kind == SCHED_FORWARD_ONLY;
  if (virt > 1 && !multi) {
    snprintf(err, errlen, "schedule %s runs one chunk per rank, not virtual = %d", name, virt);
    return NULL;
  }
  if (kind == SCHED_ZBV && virt != 2) {
    snprintf(err, errlen, "schedule zbv needs exactly two chunks per rank (virtual = 2), not %d", virt);
    return NULL;
  }
  if (kind == SCHED_INTERLEAVED && nmb % pp) {
    snprintf(err, errlen, "schedule interleaved needs microbatches (%d) to be a multiple of pp (%d)", nmb, pp);
    return NULL;
  }
  if ((kind == SCHED_1F1B || kind == SCHED_ZB1P || kind == SCHED_ZBV) && nmb < pp) {
    snprintf(err, errlen, "schedule %s needs microbatches >= stages (%d < %d)", name, nmb, pp);
    return NULL;
  }
  int S = pp * virt;
  int *sr = malloc(sizeof(int) * (size_t)S);
  placement_fill(sr, pp, S, kind == SCHED_ZBV ? PLACE_V : PLACE_LOOP);
  Schedule *s = schedule_new(pp, S, nmb, sr);
  free(sr);
  switch (kind) {
  case SCHED_GPIPE: gen_gpipe(s); break;
  case SCHED_1F1B: gen_1f1b(s); break;
  case SCHED_INTERLEAVED:
    if (virt == 1) gen_1f1b(s);
    else gen_interleaved(s, virt);
    break;
  case SCHED_LOOPED_BFS: gen_looped_bfs(s, virt); break;
  case SCHED_ZB1P:
  case SCHED_ZBV:
    if (!gen_zero_bubble(s, err, errlen)) {
      schedule_free(s);
      return NULL;
    }
    break;
  case SCHED_FORWARD_ONLY: gen_forward_only(s, virt); break;
  }
  return s;
}
