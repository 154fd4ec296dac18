/* test_schedule.c — every schedule over the grid p = 1..16, m = p..64:
 * valid under simulation; GPipe's and 1F1B's bubble equals (p-1)/(m+p-1)
 * to 1e-9 with equal stage costs; 1F1B holds at most p - stage microbatches
 * in flight and GPipe m; interleaved with v chunks equals
 * (p-1)/(v*m+p-1) (m a multiple of p); ZB1P is below 1F1B with 1F1B's
 * memory; ZBV and Looped BFS are valid; broken schedules (B before F, a
 * missing receive, a cyclic wait, an unmatched send, a REDUCE_GRAD before
 * the last W) are rejected with the
 * failing rank and step named. GPipe, 1F1B, ZB1P and forward-only also run
 * on rendezvous sends (NCCL's, each run of sends and receives one group),
 * and hand-made schedules that would not are told apart. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/frontend.h"
#include "lib/schedule.h"
#include "tests/check.h"


static SimResult run(int kind, int p, int v, int m, Schedule **out) {
  char err[256];
  Schedule *c = schedule_generate(kind, p, v, m, err, sizeof err);
  SimResult r = {0};
  if (!c) {
    snprintf(r.error, sizeof r.error, "generate: %s", err);
    return r;
  }
  Schedule *s = schedule_lower(c, 2, 1, 1);
  StageCost *cs = malloc(sizeof(StageCost) * (size_t)c->nstages);
  for (int i = 0; i < c->nstages; i++) cs[i] = (StageCost){1.0 / v, 2.0 / v, 1.0 / v, 1.0 / v};
  r = schedule_simulate(s, cs, 0);
  free(cs);
  char why[400];
  if (r.ok && (kind == SCHED_GPIPE || kind == SCHED_1F1B || kind == SCHED_ZB1P || kind == SCHED_FORWARD_ONLY) && !schedule_rendezvous(s, why, sizeof why)) { /* every generated schedule runs on NCCL's point-to-point too */
    snprintf(r.error, sizeof r.error, "%s p=%d v=%d m=%d: not safe on rendezvous sends: %s", schedule_names[kind], p, v, m, why);
    r.ok = 0;
  }
  schedule_free(c);
  if (out) *out = s;
  else schedule_free(s);
  return r;
}

static void grid(void) {
  int n = 0;
  for (int p = 1; p <= 16; p++)
    for (int m = p; m <= 64; m++) {
      double want = (double)(p - 1) / (m + p - 1);
      SimResult g = run(SCHED_GPIPE, p, 1, m, NULL), f = run(SCHED_1F1B, p, 1, m, NULL), z = run(SCHED_ZB1P, p, 1, m, NULL);
      CHECK(g.ok && f.ok && z.ok, "p=%d m=%d invalid: %s %s %s", p, m, g.error, f.error, z.error);
      if (g.ok && f.ok && z.ok) {
        for (int r = 0; r < p; r++) {
          CHECK(fabs(g.bubble[r] - want) < 1e-9, "gpipe p=%d m=%d rank %d bubble %.12f want %.12f", p, m, r, g.bubble[r], want);
          CHECK(fabs(f.bubble[r] - want) < 1e-9, "1f1b p=%d m=%d rank %d bubble %.12f want %.12f", p, m, r, f.bubble[r], want);
          CHECK(f.peak_inflight[r] <= p - r, "1f1b p=%d m=%d rank %d holds %d > %d", p, m, r, f.peak_inflight[r], p - r);
          CHECK(g.peak_inflight[r] == m, "gpipe p=%d m=%d rank %d holds %d, not m", p, m, r, g.peak_inflight[r]);
          CHECK(z.peak_inflight[r] <= p - r, "zb1p p=%d m=%d rank %d holds %d > %d", p, m, r, z.peak_inflight[r], p - r);
        }
        if (p > 1) CHECK(z.step_time < f.step_time - 1e-9, "zb1p p=%d m=%d not below 1f1b: %g vs %g", p, m, z.step_time, f.step_time);
      }
      sim_result_free(&g), sim_result_free(&f), sim_result_free(&z);
      for (int v = 2; v <= 4; v++) {
        SimResult lb = run(SCHED_LOOPED_BFS, p, v, m, NULL);
        CHECK(lb.ok, "looped_bfs p=%d v=%d m=%d: %s", p, v, m, lb.error);
        sim_result_free(&lb);
        if (m % p == 0) {
          SimResult il = run(SCHED_INTERLEAVED, p, v, m, NULL);
          double wv = (double)(p - 1) / (v * m + p - 1);
          CHECK(il.ok, "interleaved p=%d v=%d m=%d: %s", p, v, m, il.error);
          if (il.ok) CHECK(fabs(il.bubble_mean - wv) < 1e-9, "interleaved p=%d v=%d m=%d bubble %.12f want %.12f", p, v, m, il.bubble_mean, wv);
          sim_result_free(&il);
        }
      }
      SimResult zv = run(SCHED_ZBV, p, 2, m, NULL), fo = run(SCHED_FORWARD_ONLY, p, 1, m, NULL);
      CHECK(zv.ok, "zbv p=%d m=%d: %s", p, m, zv.error);
      CHECK(fo.ok, "forward_only p=%d m=%d: %s", p, m, fo.error);
      if (zv.ok)
        for (int r = 0; r < p; r++) CHECK(zv.peak_inflight[r] <= 2 * p, "zbv p=%d m=%d rank %d holds %d chunks", p, m, r, zv.peak_inflight[r]);
      sim_result_free(&zv), sim_result_free(&fo);
      n++;
    }
  printf("grid: %d (p, m) pairs\n", n);
}

/* A schedule from text rows, for the broken cases. */
static Schedule *from_rows(int nranks, int nstages, int nmb, const char *const *rows) {
  int *sr = malloc(sizeof(int) * (size_t)nstages);
  placement_fill(sr, nranks, nstages, PLACE_LOOP);
  Schedule *s = schedule_new(nranks, nstages, nmb, sr);
  free(sr);
  for (int r = 0; r < nranks; r++) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", rows[r]);
    for (char *t = strtok(buf, " "); t; t = strtok(NULL, " ")) {
      Action a;
      if (action_parse(t, &a) == 0) schedule_push(s, r, a);
      else printf("bad test action %s\n", t);
    }
  }
  return s;
}

static void expect_error(const char *name, int nranks, int nstages, int nmb, const char *const *rows, const char *want) {
  Schedule *s = from_rows(nranks, nstages, nmb, rows);
  SimResult r = schedule_simulate(s, NULL, 0);
  CHECK(!r.ok && strstr(r.error, want), "%s: want error containing \"%s\", got %s \"%s\"", name, want, r.ok ? "ok" : "error", r.error);
  sim_result_free(&r);
  schedule_free(s);
}

static void broken(void) {
  const char *good[] = {"0F0 0SEND_F0 0RECV_B0 0B0", "1RECV_F0 1F0 1B0 1SEND_B0"};
  Schedule *s = from_rows(2, 2, 1, good);
  SimResult r = schedule_simulate(s, NULL, 0);
  CHECK(r.ok && fabs(r.step_time - 6) < 1e-12, "hand-made good schedule: %s, step %g", r.error, r.step_time);
  sim_result_free(&r);
  schedule_free(s);

  const char *b_before_f[] = {"0B0 0F0 0SEND_F0 0RECV_B0", "1RECV_F0 1F0 1B0 1SEND_B0"};
  expect_error("B before F", 2, 2, 1, b_before_f, "rank 0, step 1 (0B0): comes before 0F0");
  const char *missing_recv[] = {"0F0 0SEND_F0 0RECV_B0 0B0", "1F0 1B0 1SEND_B0"};
  expect_error("missing receive", 2, 2, 1, missing_recv, "rank 1, step 1 (1F0): missing receive: 1RECV_F0 must come first");
  const char *cyclic[] = {"0RECV_B0 0F0 0SEND_F0 0B0", "1RECV_F0 1F0 1B0 1SEND_B0"};
  expect_error("cyclic wait", 2, 2, 1, cyclic, "deadlock (cyclic wait): rank 0 at step 1 (0RECV_B0) waits for rank 1 at step 1 (1RECV_F0) waits for rank 0");
  const char *unmatched[] = {"0F0 0SEND_F0 0SEND_F0 0RECV_B0 0B0", "1RECV_F0 1F0 1B0 1SEND_B0"};
  expect_error("send twice", 2, 2, 1, unmatched, "rank 0, step 3 (0SEND_F0): runs a second time");
  const char *never_received[] = {"0F0 0SEND_F0 0B0", "1F0 1B0"};
  expect_error("no receive for the gradient", 2, 2, 1, never_received,
               "rank 0, step 3 (0B0): missing receive: 0RECV_B0 must come first (stage 1 is on rank 1)");
  const char *missing_mb[] = {"0F0 0B0", "1F0 1B0"};
  expect_error("count", 2, 2, 2, missing_mb, "stage 0 never runs the forward of microbatch 1 (0F1)");
  const char *wrong_rank[] = {"0F0 1F0 0B0", "1B0"};
  expect_error("wrong rank", 2, 2, 1, wrong_rank, "rank 0, step 2 (1F0): stage 1 runs on rank 1, not on rank 0");
  const char *early_reduce[] = {"0F0 0F1 0I0 0W0 0I1 0REDUCE_GRAD 0W1"};
  expect_error("REDUCE_GRAD before the last W", 1, 1, 2, early_reduce, "rank 0, step 6 (0REDUCE_GRAD): comes before 0W1, whose gradients it reduces");
  const char *w_before_i[] = {"0F0 0W0 0I0"};
  expect_error("W before I", 1, 1, 1, w_before_i, "rank 0, step 2 (0W0): comes before 0I0");
}

/* NCCL's point-to-point: a send completes only once its receive is posted; a
   run of consecutive sends and receives is one group */
static void rendezvous(void) {
  struct {
    const char *name, *rows[2];
    int nmb;
    const char *want; /* NULL: safe */
  } cases[] = {
      {"1f1b by hand", {"0F0 0SEND_F0 0RECV_B0 0B0", "1RECV_F0 1F0 1B0 1SEND_B0"}, 1, NULL},
      {"crossing in one group", {"0F0 0F1 0SEND_F0 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1", "1RECV_F0 1F0 1I0 1SEND_B0 1RECV_F1 1W0 1F1 1B1 1SEND_B1"}, 2, NULL},
      {"crossing in two groups",
       {"0F0 0SEND_F0 0F1 0SEND_F1 0F2 0SEND_F2 0RECV_B0 0B0 0RECV_B1 0B1 0RECV_B2 0B2",
        "1RECV_F0 1F0 1I0 1SEND_B0 1W0 1RECV_F1 1F1 1I1 1SEND_B1 1W1 1RECV_F2 1F2 1B2 1SEND_B2"},
       3,
       "rank 0 would wait forever at step 4 (0SEND_F1): its 0SEND_F1 needs 1RECV_F1, which rank 1 never reaches: it waits at step 4 (1SEND_B0)"},
      {"pairs in another order", {"0F0 0F1 0SEND_F0 0SEND_F1", "1RECV_F1 1RECV_F0 1F0 1F1"}, 2,
       "rank 0 issues 0SEND_F1 after 0SEND_F0, but rank 1 issues their partners in the other order"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Schedule *s = from_rows(2, 2, cases[i].nmb, cases[i].rows);
    SimResult r = schedule_simulate(s, NULL, 0);
    char why[400];
    int safe = schedule_rendezvous(s, why, sizeof why);
    CHECK(r.ok, "%s: the eager simulation says %s", cases[i].name, r.error);
    if (!cases[i].want) CHECK(safe, "%s: unsafe on rendezvous sends: %s", cases[i].name, why);
    else CHECK(!safe && !strcmp(why, cases[i].want), "%s: want \"%s\", got %s \"%s\"", cases[i].name, cases[i].want, safe ? "safe" : "unsafe", why);
    sim_result_free(&r);
    schedule_free(s);
  }
}

static void text_form(void) {
  const char *ok[] = {"0F1", "12B3", "2I4", "2W4", "1SEND_F1", "2RECV_F1", "2SEND_B0", "1RECV_B0", "0REDUCE_GRAD", "TIED_ALLREDUCE", "STEP"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    Action a;
    char buf[48];
    int rc = action_parse(ok[i], &a);
    action_format(buf, sizeof buf, a);
    CHECK(rc == 0 && !strcmp(buf, ok[i]), "round trip of %s gave %s", ok[i], rc ? "parse error" : buf);
  }
  const char *bad[] = {"", "F1", "0X1", "0F", "0F1x", "0REDUCE_GRAD1", "1STEP", "0SEND_F", "99999999999F1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    Action a;
    CHECK(action_parse(bad[i], &a) != 0, "'%s' parsed as an action", bad[i]);
  }
}

int main(void) {
  text_form();
  broken();
  rendezvous();
  grid();
  return check_summary();
}
