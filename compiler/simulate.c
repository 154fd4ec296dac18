/* simulate.c — validates a schedule and times it.
 *
 * Two passes. The static pass walks every rank's list once and checks what
 * order alone decides: each action's stage runs on that rank, counts per
 * stage equal the microbatches, no action twice, every B/I after its F,
 * every W after its I, every send after the compute that makes it, every
 * send matched by exactly one receive and, in a schedule with
 * communication, every cross-rank input received before use. The dynamic
 * pass executes the ranks in program order with the given costs: sends do
 * not block, a receive waits for its send, a collective for all its ranks;
 * when no rank can move, it reports the wait cycle (deadlock).
 * Errors name the rank, the 1-based step and the action.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lib/schedule.h"

typedef struct Sim {
  const Schedule *s;
  SimResult *res;
  int S, m, lowered;
} Sim;

static void fail(SimResult *r, const char *fmt, ...) {
  if (!r->ok) return; /* keep the first error */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->error, sizeof r->error, fmt, ap);
  va_end(ap);
  r->ok = 0;
}

static const char *fmt_act(Action a, char *buf) {
  action_format(buf, 48, a);
  return buf;
}

static int is_compute(int k) { return k == ACT_F || k == ACT_B || k == ACT_I || k == ACT_W; }

/* ---- static checks ---- */
static void check_static(Sim *X) {
  const Schedule *s = X->s;
  SimResult *R = X->res;
  int S = X->S, m = X->m;
  size_t n = (size_t)S * (size_t)m;
  /* per (stage, mb): how many of each kind, and whether seen so far in rank order */
  int *cnt = calloc(n * ACT_COUNT, sizeof(int));
  char b1[48], b2[48];
  unsigned char *has_bwd = calloc((size_t)S + 1, 1); /* stages with a backward somewhere (forward-only: none) */
  for (int r = 0; r < s->nranks; r++)
    for (int i = 0; i < s->rank[r].n; i++) {
      Action a = s->rank[r].a[i];
      if ((a.kind == ACT_B || a.kind == ACT_I) && a.stage >= 0 && a.stage < S) has_bwd[a.stage] = 1;
    }
  for (int r = 0; r < s->nranks && R->ok; r++) {
    for (int i = 0; i < s->rank[r].n && R->ok; i++) {
      Action a = s->rank[r].a[i];
      if (a.kind == ACT_STEP || a.kind == ACT_TIED_ALLREDUCE) continue;
      if (a.stage < 0 || a.stage >= S) {
        fail(R, "rank %d, step %d (%s): there is no stage %d; stages are 0 to %d", r, i + 1, fmt_act(a, b1), a.stage, S - 1);
        break;
      }
      if (s->stage_rank[a.stage] != r) {
        fail(R, "rank %d, step %d (%s): stage %d runs on rank %d, not on rank %d", r, i + 1, fmt_act(a, b1), a.stage,
             s->stage_rank[a.stage], r);
        break;
      }
      if (a.kind == ACT_REDUCE_GRAD) { /* the stage's gradients are final: every microbatch's B, or W */
        for (int mb = 0; mb < m && R->ok && has_bwd[a.stage]; mb++) {
          size_t k = ((size_t)a.stage * (size_t)m + (size_t)mb) * ACT_COUNT;
          if (cnt[k + ACT_B] || cnt[k + ACT_W]) continue;
          Action need = {cnt[k + ACT_I] ? ACT_W : ACT_B, a.stage, mb};
          fail(R, "rank %d, step %d (%s): comes before %s, whose gradients it reduces", r, i + 1, fmt_act(a, b1), fmt_act(need, b2));
        }
        continue;
      }
      if (a.mb < 0 || a.mb >= m) {
        fail(R, "rank %d, step %d (%s): there is no microbatch %d; microbatches are 0 to %d", r, i + 1, fmt_act(a, b1), a.mb, m - 1);
        break;
      }
      size_t k = ((size_t)a.stage * (size_t)m + (size_t)a.mb) * ACT_COUNT;
      if (cnt[k + (size_t)a.kind]++) {
        fail(R, "rank %d, step %d (%s): runs a second time", r, i + 1, fmt_act(a, b1));
        break;
      }
      Action need = {-1, a.stage, a.mb};
      switch (a.kind) {
      case ACT_B:
      case ACT_I: need.kind = cnt[k + ACT_F] ? -1 : ACT_F; break;
      case ACT_W: need.kind = cnt[k + ACT_I] ? -1 : ACT_I; break;
      case ACT_SEND_F: need.kind = cnt[k + ACT_F] ? -1 : ACT_F; break;
      case ACT_SEND_B: need.kind = cnt[k + ACT_B] || cnt[k + ACT_I] ? -1 : ACT_I; break;
      default: break;
      }
      if (a.kind == ACT_SEND_B && need.kind >= 0 && !cnt[k + ACT_I]) need.kind = ACT_B;
      if (need.kind >= 0) {
        fail(R, "rank %d, step %d (%s): comes before %s, which it needs", r, i + 1, fmt_act(a, b1), fmt_act(need, b2));
        break;
      }
      /* in a schedule with communication, a cross-rank input must be received first */
      if (X->lowered && (a.kind == ACT_F || a.kind == ACT_B || a.kind == ACT_I)) {
        int from = a.kind == ACT_F ? a.stage - 1 : a.stage + 1;
        int recv = a.kind == ACT_F ? ACT_RECV_F : ACT_RECV_B;
        if (from >= 0 && from < S && s->stage_rank[from] != r && !cnt[k + (size_t)recv]) {
          Action rv = {recv, a.stage, a.mb};
          fail(R, "rank %d, step %d (%s): missing receive: %s must come first (stage %d is on rank %d)", r, i + 1,
               fmt_act(a, b1), fmt_act(rv, b2), from, s->stage_rank[from]);
          break;
        }
      }
      if ((a.kind == ACT_RECV_F && (a.stage == 0 || s->stage_rank[a.stage - 1] == r)) ||
          (a.kind == ACT_RECV_B && (a.stage == S - 1 || s->stage_rank[a.stage + 1] == r)) ||
          (a.kind == ACT_SEND_F && (a.stage == S - 1 || s->stage_rank[a.stage + 1] == r)) ||
          (a.kind == ACT_SEND_B && (a.stage == 0 || s->stage_rank[a.stage - 1] == r))) {
        fail(R, "rank %d, step %d (%s): there is no other rank to exchange this with", r, i + 1, fmt_act(a, b1));
        break;
      }
    }
  }
  free(has_bwd);
  /* counts per stage; sends matched by receives */
  int any_bwd = 0;
  for (size_t k = 0; k < n; k++) any_bwd |= cnt[k * ACT_COUNT + ACT_B] | cnt[k * ACT_COUNT + ACT_I];
  for (int st = 0; st < S && R->ok; st++)
    for (int mb = 0; mb < m && R->ok; mb++) {
      size_t k = ((size_t)st * (size_t)m + (size_t)mb) * ACT_COUNT;
      int r = s->stage_rank[st];
      if (!cnt[k + ACT_F])
        fail(R, "rank %d: stage %d never runs the forward of microbatch %d (%dF%d)", r, st, mb, st, mb);
      else if (any_bwd && !cnt[k + ACT_B] && !cnt[k + ACT_I])
        fail(R, "rank %d: stage %d never runs the backward of microbatch %d (%dB%d, or %dI%d and %dW%d)", r, st, mb, st, mb, st, mb, st, mb);
      else if (cnt[k + ACT_B] && (cnt[k + ACT_I] || cnt[k + ACT_W]))
        fail(R, "rank %d: stage %d runs both %dB%d and its I/W halves", r, st, st, mb);
      else if (cnt[k + ACT_I] && !cnt[k + ACT_W])
        fail(R, "rank %d: stage %d never runs %dW%d, the weight gradient after %dI%d", r, st, st, mb, st, mb);
      if (!R->ok || !X->lowered) continue;
      if (st + 1 < S) {
        size_t k2 = ((size_t)(st + 1) * (size_t)m + (size_t)mb) * ACT_COUNT;
        if (cnt[k + ACT_SEND_F] && !cnt[k2 + ACT_RECV_F])
          fail(R, "rank %d: %dSEND_F%d is never received: rank %d has no %dRECV_F%d", r, st, mb, s->stage_rank[st + 1], st + 1, mb);
        else if (!cnt[k + ACT_SEND_F] && cnt[k2 + ACT_RECV_F])
          fail(R, "rank %d: %dRECV_F%d waits for %dSEND_F%d, which rank %d never sends", s->stage_rank[st + 1], st + 1, mb, st, mb, r);
        else if (any_bwd && cnt[k2 + ACT_SEND_B] && !cnt[k + ACT_RECV_B])
          fail(R, "rank %d: %dSEND_B%d is never received: rank %d has no %dRECV_B%d", s->stage_rank[st + 1], st + 1, mb, r, st, mb);
        else if (any_bwd && !cnt[k2 + ACT_SEND_B] && cnt[k + ACT_RECV_B])
          fail(R, "rank %d: %dRECV_B%d waits for %dSEND_B%d, which rank %d never sends", r, st, mb, st + 1, mb, s->stage_rank[st + 1]);
      }
    }
  free(cnt);
}

/* ---- dynamic run ---- */
SimResult schedule_simulate(const Schedule *s, const StageCost *costs, double comm_time) {
  SimResult R = {.ok = 1, .nranks = s->nranks};
  int p = s->nranks, S = s->nstages, m = s->nmb;
  if (p <= 0 || S <= 0 || m <= 0) {
    snprintf(R.error, sizeof R.error, "a schedule needs at least one rank, stage and microbatch");
    R.ok = 0;
    R.nranks = 0;
    return R;
  }
  Sim X = {.s = s, .res = &R, .S = S, .m = m};
  for (int r = 0; r < p; r++)
    for (int i = 0; i < s->rank[r].n; i++) {
      int k = s->rank[r].a[i].kind;
      X.lowered |= action_is_p2p(k);
    }
  R.busy = calloc((size_t)p, sizeof(double));
  R.bubble = calloc((size_t)p, sizeof(double));
  R.peak_inflight = calloc((size_t)p, sizeof(int));
  R.start = calloc((size_t)p, sizeof(double *));
  R.end = calloc((size_t)p, sizeof(double *));
  for (int r = 0; r < p; r++) {
    R.start[r] = calloc((size_t)s->rank[r].n + 1, sizeof(double));
    R.end[r] = calloc((size_t)s->rank[r].n + 1, sizeof(double));
  }
  check_static(&X);
  if (!R.ok) return R;

  size_t n = (size_t)S * (size_t)m;
  double *f_fin = malloc(n * sizeof(double)), *g_fin = malloc(n * sizeof(double)); /* F done; input grad done */
  double *sendf = malloc(n * sizeof(double)), *sendb = malloc(n * sizeof(double)); /* when sent (data leaves) */
  for (size_t k = 0; k < n; k++) f_fin[k] = g_fin[k] = sendf[k] = sendb[k] = -1;
  int *pc = calloc((size_t)p, sizeof(int)), *inflight = calloc((size_t)p, sizeof(int));
  double *now = calloc((size_t)p, sizeof(double)), *tied_arrive = malloc((size_t)p * sizeof(double));
  for (int r = 0; r < p; r++) tied_arrive[r] = -1;
  int tied_a = s->stage_rank[0], tied_b = s->stage_rank[S - 1];
  int *waits_on = malloc((size_t)p * sizeof(int));
  long left = 0;
  for (int r = 0; r < p; r++) left += s->rank[r].n;
  char b1[48], b2[48];
  while (left > 0) {
    int moved = 0;
    for (int r = 0; r < p; r++) {
      waits_on[r] = -1;
      while (pc[r] < s->rank[r].n) {
        Action a = s->rank[r].a[pc[r]];
        size_t k = a.stage >= 0 && a.mb >= 0 ? (size_t)a.stage * (size_t)m + (size_t)a.mb : 0;
        double ready = now[r], dur = 0;
        int blocked = 0;
        switch (a.kind) {
        case ACT_F:
          if (a.stage > 0) {
            size_t kp = k - (size_t)m;
            if (s->stage_rank[a.stage - 1] == r || !X.lowered) {
              if (f_fin[kp] < 0) blocked = 1, waits_on[r] = s->stage_rank[a.stage - 1];
              else if (f_fin[kp] + (s->stage_rank[a.stage - 1] == r ? 0 : comm_time) > ready)
                ready = f_fin[kp] + (s->stage_rank[a.stage - 1] == r ? 0 : comm_time);
            }
          }
          dur = costs ? costs[a.stage].f : 1;
          break;
        case ACT_B:
        case ACT_I:
          if (a.stage < S - 1) {
            size_t kn = k + (size_t)m;
            if (s->stage_rank[a.stage + 1] == r || !X.lowered) {
              if (g_fin[kn] < 0) blocked = 1, waits_on[r] = s->stage_rank[a.stage + 1];
              else if (g_fin[kn] + (s->stage_rank[a.stage + 1] == r ? 0 : comm_time) > ready)
                ready = g_fin[kn] + (s->stage_rank[a.stage + 1] == r ? 0 : comm_time);
            }
          }
          dur = costs ? (a.kind == ACT_B ? costs[a.stage].b : costs[a.stage].i) : (a.kind == ACT_B ? 2 : 1);
          break;
        case ACT_W: dur = costs ? costs[a.stage].w : 1; break;
        case ACT_SEND_F: sendf[k] = now[r]; break;
        case ACT_SEND_B: sendb[k] = now[r]; break;
        case ACT_RECV_F: {
          size_t kp = k - (size_t)m;
          if (sendf[kp] < 0) blocked = 1, waits_on[r] = s->stage_rank[a.stage - 1];
          else if (sendf[kp] + comm_time > ready) ready = sendf[kp] + comm_time;
          break;
        }
        case ACT_RECV_B: {
          size_t kn = k + (size_t)m;
          if (sendb[kn] < 0) blocked = 1, waits_on[r] = s->stage_rank[a.stage + 1];
          else if (sendb[kn] + comm_time > ready) ready = sendb[kn] + comm_time;
          break;
        }
        case ACT_TIED_ALLREDUCE: {
          if (tied_arrive[r] < 0) tied_arrive[r] = now[r];
          int other = r == tied_a ? tied_b : tied_a;
          if (other != r) {
            if (tied_arrive[other] < 0) blocked = 1, waits_on[r] = other;
            else if (tied_arrive[other] > ready) ready = tied_arrive[other];
          }
          break;
        }
        default: break;
        }
        if (blocked) break;
        R.start[r][pc[r]] = ready;
        R.end[r][pc[r]] = ready + dur;
        now[r] = ready + dur;
        if (is_compute(a.kind)) R.busy[r] += dur;
        if (a.kind == ACT_F) {
          f_fin[k] = now[r];
          if (++inflight[r] > R.peak_inflight[r]) R.peak_inflight[r] = inflight[r];
        }
        if (a.kind == ACT_B || a.kind == ACT_I) g_fin[k] = now[r];
        if (a.kind == ACT_B || a.kind == ACT_W) inflight[r]--;
        pc[r]++;
        left--;
        moved = 1;
      }
    }
    if (!moved) {
      /* deadlock: follow who waits on whom from the first stuck rank */
      int r0 = 0;
      while (r0 < p && pc[r0] >= s->rank[r0].n) r0++;
      char chain[400] = "";
      int r = r0, hops = 0;
      unsigned char *seen = calloc((size_t)p, 1);
      while (r >= 0 && r < p && !seen[r] && hops < 8) {
        seen[r] = 1;
        char part[120];
        snprintf(part, sizeof part, "%srank %d at step %d (%s)", hops ? " waits for " : "", r, pc[r] + 1,
                 pc[r] < s->rank[r].n ? fmt_act(s->rank[r].a[pc[r]], b1) : "done");
        strncat(chain, part, sizeof chain - strlen(chain) - 1);
        r = pc[r] < s->rank[r].n ? waits_on[r] : -1;
        hops++;
      }
      int cyclic = r >= 0 && r < p && seen[r];
      if (cyclic) {
        char part[80];
        snprintf(part, sizeof part, " waits for rank %d", r);
        strncat(chain, part, sizeof chain - strlen(chain) - 1);
      }
      free(seen);
      (void)b2;
      fail(&R, "deadlock%s: %s", cyclic ? " (cyclic wait)" : "", chain);
      break;
    }
  }
  if (R.ok) {
    for (int r = 0; r < p; r++)
      if (now[r] > R.step_time) R.step_time = now[r];
    for (int r = 0; r < p; r++) {
      R.bubble[r] = R.step_time > 0 ? 1.0 - R.busy[r] / R.step_time : 0;
      R.bubble_mean += R.bubble[r] / p;
      if (R.peak_inflight[r] > R.peak_inflight_max) R.peak_inflight_max = R.peak_inflight[r];
    }
  }
  free(f_fin), free(g_fin), free(sendf), free(sendb), free(pc), free(inflight), free(now), free(tied_arrive), free(waits_on);
  return R;
}

void sim_result_free(SimResult *r) {
  free(r->busy);
  free(r->bubble);
  free(r->peak_inflight);
  for (int i = 0; r->start && i < r->nranks; i++) {
    free(r->start[i]);
    free(r->end[i]);
  }
  free(r->start);
  free(r->end);
  memset(r, 0, sizeof *r);
}

/* ---- rendezvous: the lowered schedule on NCCL's point-to-point ---- */

/* the rank and action that a send or receive pairs with */
static Action p2p_peer(const Schedule *s, Action a, int *peer_rank) {
  int bwd = a.kind == ACT_SEND_B || a.kind == ACT_RECV_B, send = a.kind == ACT_SEND_F || a.kind == ACT_SEND_B;
  Action b = {send ? (bwd ? ACT_RECV_B : ACT_RECV_F) : (bwd ? ACT_SEND_B : ACT_SEND_F), a.stage + (bwd == send ? -1 : 1), a.mb};
  *peer_rank = b.stage >= 0 && b.stage < s->nstages ? s->stage_rank[b.stage] : -1;
  return b;
}

int schedule_rendezvous(const Schedule *s, char *why, size_t whylen) {
  int p = s->nranks, ok = 1;
  char b1[48], b2[48], b3[48];
  if (whylen) *why = 0;
  int **at = calloc((size_t)p, sizeof(int *)), **gstart = calloc((size_t)p, sizeof(int *));
  int *pc = calloc((size_t)p, sizeof(int)), *tied_at = calloc((size_t)p, sizeof(int));
  for (int r = 0; r < p; r++) {
    int n = s->rank[r].n;
    at[r] = malloc(sizeof(int) * (size_t)(n + 1)), gstart[r] = malloc(sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) /* a run of consecutive sends and receives is one group */
      gstart[r][i] = action_is_p2p(s->rank[r].a[i].kind) ? (i && action_is_p2p(s->rank[r].a[i - 1].kind) ? gstart[r][i - 1] : i) : -1;
  }
  /* where each send's receive is (by kind, stage and microbatch); NCCL pairs
     the operations between two ranks in the order they are issued (it has no
     tags), so both sides must keep one order */
  size_t nk = (size_t)s->nstages * (size_t)s->nmb;
  int *where = malloc(sizeof(int) * 4 * nk), *last = malloc(sizeof(int) * 4 * (size_t)p); /* [peer, send]: partner, own step */
  for (size_t k = 0; k < 4 * nk; k++) where[k] = -1;
#define KEY(a) ((size_t)((a).kind - ACT_SEND_F) * nk + (size_t)(a).stage * (size_t)s->nmb + (size_t)(a).mb)
  for (int r = 0; r < p; r++)
    for (int i = 0; i < s->rank[r].n; i++) {
      Action a = s->rank[r].a[i];
      if (action_is_p2p(a.kind) && a.stage >= 0 && a.stage < s->nstages && a.mb >= 0 && a.mb < s->nmb) where[KEY(a)] = i;
    }
  for (int r = 0; r < p && ok; r++) {
    for (int k = 0; k < 4 * p; k++) last[k] = -1;
    for (int i = 0; i < s->rank[r].n && ok; i++) {
      Action a = s->rank[r].a[i];
      at[r][i] = -1;
      if (!action_is_p2p(a.kind)) continue;
      int q, send = a.kind == ACT_SEND_F || a.kind == ACT_SEND_B;
      Action b = p2p_peer(s, a, &q);
      if (q >= 0 && b.mb >= 0 && b.mb < s->nmb) at[r][i] = where[KEY(b)];
      if (at[r][i] < 0) {
        snprintf(why, whylen, "rank %d step %d (%s) has no matching %s on rank %d", r, i + 1, fmt_act(a, b1), fmt_act(b, b2), q);
        ok = 0;
      } else if (at[r][i] < last[2 * q + send]) {
        snprintf(why, whylen, "rank %d issues %s after %s, but rank %d issues their partners in the other order", r,
                 fmt_act(a, b1), fmt_act(s->rank[r].a[last[2 * p + 2 * q + send]], b2), q);
        ok = 0;
      } else
        last[2 * q + send] = at[r][i], last[2 * p + 2 * q + send] = i;
    }
  }
#undef KEY
  free(where), free(last);
  /* run it: a group completes once every partner of its operations is posted
     (the partner's rank has reached the partner's group); TIED_ALLREDUCE waits
     for the other tied rank's */
  int tied_a = s->stage_rank[0], tied_b = s->stage_rank[s->nstages - 1];
  for (int r = 0; r < p; r++) tied_at[r] = -1;
  for (int moved = 1; ok && moved;) {
    moved = 0;
    for (int r = 0; r < p; r++)
      while (pc[r] < s->rank[r].n) {
        int i = pc[r];
        Action a = s->rank[r].a[i];
        if (a.kind == ACT_TIED_ALLREDUCE) {
          int other = r == tied_a ? tied_b : tied_a;
          tied_at[r] = i;
          if (other != r && (tied_at[other] < 0 || pc[other] < tied_at[other])) break;
        } else if (action_is_p2p(a.kind)) {
          int end = i, ready = 1;
          while (end < s->rank[r].n && gstart[r][end] == i) end++;
          for (int j = i; j < end && ready; j++) {
            int q;
            p2p_peer(s, s->rank[r].a[j], &q);
            ready = pc[q] >= gstart[q][at[r][j]];
          }
          if (!ready) break;
          pc[r] = end, moved = 1;
          continue;
        }
        pc[r]++, moved = 1;
      }
  }
  for (int r = 0; r < p && ok; r++)
    if (pc[r] < s->rank[r].n) {
      Action a = s->rank[r].a[pc[r]];
      snprintf(why, whylen, "rank %d would wait forever at step %d (%s)", r, pc[r] + 1, fmt_act(a, b1));
      if (action_is_p2p(a.kind))
        for (int j = pc[r]; j < s->rank[r].n && gstart[r][j] == pc[r]; j++) {
          int q;
          Action b = p2p_peer(s, s->rank[r].a[j], &q);
          if (pc[q] >= gstart[q][at[r][j]]) continue;
          size_t len = strlen(why);
          snprintf(why + len, whylen - len, ": its %s needs %s, which rank %d never reaches: it waits at step %d (%s)",
                   fmt_act(s->rank[r].a[j], b1), fmt_act(b, b2), q, pc[q] + 1, fmt_act(s->rank[q].a[pc[q]], b3));
          break;
        }
      ok = 0;
    }
  for (int r = 0; r < p; r++) free(at[r]), free(gstart[r]);
  free(at), free(gstart), free(pc), free(tied_at);
  return ok;
}
