/* test_fake_nccl.c — the fake NCCL (fake_libnccl.c) as a multi-process
 * library: jobs of 2 to 4 forked ranks share a unique id and talk through
 * it as the runtime's ranks do on the CUDA emulator.
 *
 *   test_fake_nccl FAKE_DIR    (FAKE_DIR/libnccl.so.2 is the fake)
 *
 * Checked: world init, a split into two groups by (color, key), all-reduces
 * (exact sums in rank order, bitwise equal on every rank, in place and out
 * of place) on the world and the splits, a ring of grouped send/recv, FIFO
 * order, a middle rank exchanging with both neighbours in one group, a
 * receive of another size and all-reduces of different counts
 * (ncclInvalidUsage on both sides), two ranks that both send first outside
 * a group (they time out naming the peer), a killed peer (ncclRemoteError at
 * once), ranks that exit holding communicators, and that no job leaves a
 * file behind. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/check.h"
#include "tests/runtime/fake_nccl.h"

enum { Uint8 = 1, Float32 = 7 };

static struct {
  int (*GetUniqueId)(UniqueId *);
  int (*InitRankConfig)(void **, int, UniqueId, int, Config *);
  int (*Split)(void *, int, int, void **, Config *);
  int (*GetAsyncError)(void *, int *);
  int (*Finalize)(void *);
  int (*Destroy)(void *);
  int (*Abort)(void *);
  const char *(*GetLastError)(void *);
  int (*AllReduce)(const void *, void *, size_t, int, int, void *, void *);
  int (*Send)(const void *, size_t, int, int, void *, void *);
  int (*Recv)(void *, size_t, int, int, void *, void *);
  int (*GroupStart)(void);
  int (*GroupEnd)(void);
  const char *(*IdDir)(const void *);
} nc;
static void *stream = &nc; /* any non-NULL stream */

static void load(const char *dir) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/libnccl.so.2", dir);
  void *h = dlopen(path, RTLD_NOW);
  if (!h) {
    printf("FAIL: %s\n", dlerror());
    exit(2);
  }
  const char *names[] = {
      "ncclGetUniqueId", "ncclCommInitRankConfig", "ncclCommSplit",    "ncclCommGetAsyncError", "ncclCommFinalize",
      "ncclCommDestroy", "ncclCommAbort",          "ncclGetLastError", "ncclAllReduce",         "ncclSend",
      "ncclRecv",        "ncclGroupStart",         "ncclGroupEnd",     "fake_nccl_id_dir"};
  void **slots = (void **)&nc;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (!(slots[i] = dlsym(h, names[i]))) {
      printf("FAIL: no %s in %s\n", names[i], path);
      exit(2);
    }
}

static Config config(void) {
  Config c;
  memset(&c, 0, sizeof c);
  c.size = sizeof c, c.magic = 0xcafebeef, c.version = 22809, c.blocking = 0;
  c.cgaClusterSize = c.minCTAs = c.maxCTAs = c.splitShare = c.trafficClass = INT_MIN;
  c.collnetEnable = c.CTAPolicy = c.shrinkShare = c.nvlsCTAs = c.nChannelsPerNetPeer = c.nvlinkCentricSched = INT_MIN;
  return c;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* a call that may answer ncclInProgress, then polled to the end */
static int done(void *comm, int r) {
  while (r == InProgress && comm) {
    int state = InProgress;
    if (nc.GetAsyncError(comm, &state)) return -1;
    r = state;
  }
  return r;
}

static void *init(UniqueId id, int rank, int n) {
  Config cfg = config();
  void *c = NULL;
  int r = done(NULL, nc.InitRankConfig(&c, n, id, rank, &cfg));
  r = done(c, r);
  CHECK(r == 0 && c, "rank %d of %d: init: %d %s", rank, n, r, nc.GetLastError(NULL));
  return c;
}
static void finish(void *c, const char *what) {
  int r = done(c, nc.Finalize(c));
  CHECK(r == 0, "%s: finalize: %d %s", what, r, nc.GetLastError(c));
  CHECK(nc.Destroy(c) == 0, "%s: destroy", what);
}

/* ------------------------------------------------------------ the jobs */

enum { N = 64 };
static float *shared; /* [rank][what][N], written by the ranks, read by the parent */
#define OUT(rank, what) (shared + ((size_t)(rank)*4 + (what)) * N)

static float value(int rank, int i) { return 0.1f * (float)(rank + 1) + 1e-3f * (float)i + 1e-7f * (float)(rank * i); }

/* the all-reduce over rank r's group (its parity) in the group's rank
 * order: by key -rank, the highest old rank first */
static float group_sum(int r, int n, int i) {
  int top = (n - 1) % 2 == r % 2 ? n - 1 : n - 2;
  float s = value(top, i);
  for (int q = top - 2; q >= 0; q -= 2) s += value(q, i);
  return s;
}

static void world_job(int rank, int n, UniqueId id, void *arg) {
  void *w = init(id, rank, n);
  if (!w) return;
  Config cfg = config();
  float x[N], y[N];
  for (int i = 0; i < N; i++) x[i] = value(rank, i);
  /* out of place on the world */
  int r = done(w, nc.AllReduce(x, OUT(rank, 0), N, Float32, 0, w, stream));
  CHECK(r == 0, "rank %d: world all-reduce: %d %s", rank, r, nc.GetLastError(w));
  /* two groups: even and odd ranks, keys reversing the order */
  void *g = NULL;
  r = done(w, nc.Split(w, rank % 2, -rank, &g, &cfg));
  r = r ? r : done(g, InProgress);
  CHECK(r == 0 && g, "rank %d: split: %d %s", rank, r, nc.GetLastError(w));
  memcpy(y, x, sizeof y);
  r = done(g, nc.AllReduce(y, y, N, Float32, 0, g, stream)); /* in place */
  CHECK(r == 0, "rank %d: group all-reduce: %d %s", rank, r, nc.GetLastError(g));
  memcpy(OUT(rank, 1), y, sizeof y);
  /* the group's ranks are ordered by key (-rank): its rank 0, the highest
   * old rank, sends that to its rank 1 */
  int top = (n - 1) % 2 == rank % 2 ? n - 1 : n - 2, grank = (top - rank) / 2, from = -1;
  if (top >= 2) {
    r = grank == 0   ? nc.Send(&top, sizeof top, Uint8, 1, g, stream)
        : grank == 1 ? nc.Recv(&from, sizeof from, Uint8, 0, g, stream)
                     : 0;
    r = done(g, r);
    CHECK(r == 0 && (grank != 1 || from == top), "rank %d: group rank %d got %d from group rank 0, not %d: %d %s", rank,
          grank, from, top, r, nc.GetLastError(g));
  }
  void *none = (void *)1;
  r = done(w, nc.Split(w, rank == 0 ? -1 : 7, 0, &none, &cfg));
  CHECK(r == 0 && (rank == 0) == (none == NULL), "rank %d: split with NCCL_SPLIT_NOCOLOR: %d %p", rank, r, none);

  /* a ring: send to next, receive from previous, twice (FIFO), one group */
  int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  float a[N], b[N], ra[N], rb[N];
  for (int i = 0; i < N; i++) a[i] = (float)(rank * 1000 + i), b[i] = -a[i];
  nc.GroupStart();
  nc.Send(a, sizeof a, Uint8, next, w, stream);
  nc.Recv(ra, sizeof ra, Uint8, prev, w, stream);
  nc.Send(b, sizeof b, Uint8, next, w, stream);
  nc.Recv(rb, sizeof rb, Uint8, prev, w, stream);
  r = done(w, nc.GroupEnd());
  CHECK(r == 0, "rank %d: ring: %d %s", rank, r, nc.GetLastError(w));
  int ok = 1;
  for (int i = 0; i < N; i++) ok &= ra[i] == (float)(prev * 1000 + i) && rb[i] == -ra[i];
  CHECK(ok, "rank %d: ring data from rank %d in order", rank, prev);

  /* a line 0 - 1 - ... - n-1 as pipeline stages: the middle ranks send to
   * and receive from both neighbours in one group */
  float fromprev[N] = {0}, fromnext[N] = {0};
  nc.GroupStart();
  if (rank > 0) nc.Send(a, sizeof a, Uint8, rank - 1, w, stream);
  if (rank < n - 1) nc.Send(b, sizeof b, Uint8, rank + 1, w, stream);
  if (rank > 0) nc.Recv(fromprev, sizeof fromprev, Uint8, rank - 1, w, stream);
  if (rank < n - 1) nc.Recv(fromnext, sizeof fromnext, Uint8, rank + 1, w, stream);
  r = done(w, nc.GroupEnd());
  CHECK(r == 0, "rank %d: neighbours: %d %s", rank, r, nc.GetLastError(w));
  ok = 1;
  for (int i = 0; i < N; i++)
    ok &= (rank == 0 || fromprev[i] == -(float)((rank - 1) * 1000 + i)) &&
          (rank == n - 1 || fromnext[i] == (float)((rank + 1) * 1000 + i));
  CHECK(ok, "rank %d: data from both neighbours", rank);

  if (none) finish(none, "the color 7 split");
  finish(g, "group");
  /* finalize is a barrier: the others wait for the last rank */
  if (rank == n - 1) nanosleep(&(struct timespec){0, 300000000}, NULL);
  double t0 = now_s();
  finish(w, "world");
  CHECK(rank == n - 1 || now_s() - t0 > 0.2, "rank %d: finalize waited %.3f s for rank %d", rank, now_s() - t0, n - 1);
}

/* r is the error `code` with the last error `want`; then the rank aborts */
static void expect_error(void *w, int rank, int r, int code, const char *want, const char *what) {
  CHECK(r == code && !strcmp(nc.GetLastError(w), want), "rank %d: %s: %d '%s'", rank, what, r, nc.GetLastError(w));
  nc.Abort(w);
}

static void mismatch_job(int rank, int n, UniqueId id, void *arg) {
  void *w = init(id, rank, n);
  char buf[32] = "";
  if (!w) return;
  expect_error(w, rank, rank == 0 ? nc.Send(buf, 16, Uint8, 1, w, stream) : nc.Recv(buf, 32, Uint8, 0, w, stream),
               InvalidUsage,
               rank == 0 ? "fake: rank 0 sent 16 bytes to rank 1, which posted a receive of 32 bytes (ncclSend)"
                         : "fake: rank 1 posted a receive of 32 bytes from rank 0, which sent 16 (ncclRecv)",
               "sizes differ");
}

static void count_job(int rank, int n, UniqueId id, void *arg) {
  void *w = init(id, rank, n);
  float x[8] = {0};
  char want[128];
  if (!w) return;
  snprintf(want, sizeof want,
           "fake: rank %d: collective 0 is ncclAllReduce of %d here but ncclAllReduce of %d on rank %d", rank,
           4 + 4 * rank, 8 - 4 * rank, 1 - rank);
  expect_error(w, rank, nc.AllReduce(x, x, 4 + 4 * (size_t)rank, Float32, 0, w, stream), InvalidUsage, want,
               "all-reduce counts differ");
}

static void crossing_job(int rank, int n, UniqueId id, void *arg) {
  void *w = init(id, rank, n);
  char buf[8] = "", want[128];
  if (!w) return;
  snprintf(want, sizeof want, "fake: rank %d waited 1 s for rank %d (ncclSend)", rank, 1 - rank);
  /* both send first, outside a group */
  expect_error(w, rank, nc.Send(buf, sizeof buf, Uint8, 1 - rank, w, stream), SystemError, want, "crossing sends");
}

/* a failing rank dies (exit) holding its communicators: the last one out
 * still removes the files */
static void exit_job(int rank, int n, UniqueId id, void *arg) {
  void *w = init(id, rank, n);
  float x[4] = {1, 2, 3, 4};
  if (!w) return;
  int r = done(w, nc.AllReduce(x, x, 4, Float32, 0, w, stream));
  CHECK(r == 0 && x[3] == 4.0f * (float)n, "rank %d: all-reduce: %d %g", rank, r, x[3]);
  fflush(stdout);
  exit(check_failed ? 1 : 0);
}

/* arg: shared memory for rank 1's pid */
static void killed_job(int rank, int n, UniqueId id, void *arg) {
  void *w = init(id, rank, n);
  volatile int *pid1 = arg;
  char buf[8], want[128];
  if (!w) return;
  if (rank == 1) *pid1 = (int)getpid(), raise(SIGKILL); /* joined, then gone */
  double t0 = now_s();
  int r = nc.Recv(buf, sizeof buf, Uint8, 1, w, stream);
  snprintf(want, sizeof want, "fake: rank 1 (pid %d) is gone", *pid1);
  CHECK(now_s() - t0 < 5, "a gone peer is seen at once, not at the timeout");
  expect_error(w, rank, r, RemoteError, want, "killed peer");
}

static int exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* forks n ranks running fn(rank, n, id, arg) with a fresh unique id; every
 * rank must pass (or be killed by itself), and no file may be left */
static void job(const char *what, int n, void (*fn)(int, int, UniqueId, void *), void *arg) {
  UniqueId id;
  pid_t pid[8];
  CHECK(nc.GetUniqueId(&id) == 0, "%s: unique id", what);
  fflush(stdout);
  for (int r = 0; r < n; r++)
    if ((pid[r] = fork()) == 0) {
      check_passed = check_failed = 0; /* this rank's own */
      fn(r, n, id, arg);
      fflush(stdout);
      _exit(check_failed ? 1 : 0);
    }
  int failed = 0;
  for (int r = 0; r < n; r++) {
    int st = 0;
    waitpid(pid[r], &st, 0);
    failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  }
  CHECK(failed == 0, "%s: %d of %d ranks failed", what, failed, n);
  const char *dir = nc.IdDir(&id);
  CHECK(!exists(dir), "%s: no file left in %s", what, dir);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (exists(dir) && system(cmd)) printf("could not remove %s\n", dir);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_fake_nccl FAKE_DIR\n");
    return 2;
  }
  load(argv[1]);
  shared = mmap(NULL, sizeof(float) * (4 * 4 * N + 1), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return 2;

  setenv("FAKE_NCCL_TIMEOUT", "10", 1); /* a bug that deadlocks fails in seconds */
  for (int n = 2; n <= 4; n++) {
    char what[32];
    snprintf(what, sizeof what, "%d ranks", n);
    memset(shared, 0, sizeof(float) * 4 * 4 * N);
    job(what, n, world_job, NULL);
    /* the world: rank order; the groups (even, odd ranks) */
    int same = 1, exact = 1;
    for (int i = 0; i < N; i++) {
      float s = value(0, i);
      for (int r = 1; r < n; r++) s += value(r, i);
      for (int r = 0; r < n; r++) {
        exact &= !memcmp(&OUT(r, 0)[i], &s, sizeof s);
        same &= !memcmp(&OUT(r, 0)[i], &OUT(0, 0)[i], sizeof s);
        float gk = group_sum(r, n, i);
        exact &= !memcmp(&OUT(r, 1)[i], &gk, sizeof gk);
      }
    }
    CHECK(exact, "%d ranks: all-reduce sums in rank order, exactly", n);
    CHECK(same, "%d ranks: all-reduce bitwise equal on every rank", n);
  }
  job("a receive of another size", 2, mismatch_job, NULL);
  job("all-reduces of different counts", 2, count_job, NULL);
  job("ranks that exit without freeing", 3, exit_job, NULL);
  setenv("FAKE_NCCL_TIMEOUT", "1", 1);
  job("crossing sends outside a group", 2, crossing_job, NULL);
  setenv("FAKE_NCCL_TIMEOUT", "30", 1);
  job("a killed peer", 2, killed_job, (int *)(shared + 4 * 4 * N));
  return check_summary();
}
