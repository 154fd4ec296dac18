/* allreduce.c — all-reduce bandwidth of the host transport (runtime/comm.c)
 * against memcpy, in one run.
 *
 * Every rank of the job (launched by bench/allreduce.sh with mpirun) sums a
 * float vector (default 64 MiB) over the world group, several times; rank 0
 * also times memcpy of the same number of bytes (between two malloc'd
 * buffers) in the same process while the others wait. The vector comes
 * from prt_comm_alloc_shared, as the stage programs' arenas do (zero-copy
 * all-reduce between local ranks; PIPEC_COMM_ZC=0 stages it instead).
 * Prints one markdown table row:
 *
 *   | ranks | MiB | transport | allreduce ms (median, best) | algbw GB/s | busbw GB/s | memcpy GB/s | busbw / memcpy | CPU ms per rank |
 *
 * algbw = bytes / time, busbw = algbw * 2(n-1)/n (as nccl-tests), both from
 * the median time; CPU ms per rank is the mean CPU time (user + system)
 * each rank spent per all-reduce (with more ranks than cores, the wall
 * time is at least ranks * CPU / cores); the result is checked against the
 * expected sum.
 *
 *   allreduce [MiB] [reps]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "runtime/comm.h"
#include "runtime/env.h"
#include "runtime/store.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec + ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec) * 1e-6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64;
  int reps = argc > 2 ? atoi(argv[2]) : 10;
  if (reps < 1) reps = 1;
  PrtEnv env;
  char err[512];
  if (prt_env_read(&env, err, sizeof err) != 0) {
    fprintf(stderr, "allreduce: %s\n", err);
    return 1;
  }
  PrtStore *st = prt_store_open(env.master_addr, env.master_port, env.rank == 0 && !env.has_agent_store, env.timeout_s, err, sizeof err);
  if (!st) {
    fprintf(stderr, "allreduce: rank %d: store: %s\n", env.rank, err);
    return 1;
  }
  char prefix[300];
  snprintf(prefix, sizeof prefix, "%s/%d/bench", env.run_id, env.restart);
  PrtComm *c = prt_comm_init(st, prefix, env.rank, env.world, env.timeout_s, err, sizeof err);
  if (!c) {
    fprintf(stderr, "allreduce: rank %d: %s\n", env.rank, err);
    return 1;
  }
  int n = env.world, me = env.rank;
  int *ranks = malloc(sizeof(int) * (size_t)n);
  for (int i = 0; i < n; i++) ranks[i] = i;
  PrtGroup *g = prt_group_new(c, ranks, n);
  size_t bytes = mib << 20, count = bytes / sizeof(float);
  float *buf = prt_comm_alloc_shared(c, bytes), *src = malloc(bytes), *mc = malloc(bytes);
  if (!buf || !src || !mc) {
    fprintf(stderr, "allreduce: rank %d: cannot allocate 3 x %zu MiB\n", me, mib);
    return 1;
  }
  for (size_t i = 0; i < count; i++) src[i] = (float)((i + (size_t)me) % 7);

  /* memcpy on rank 0, in this process, while the others wait */
  double mc_best = 1e30;
  if (me == 0) {
    memcpy(mc, src, bytes); /* touch every page first */
    for (int r = 0; r < 5; r++) {
      double t = now_s();
      memcpy(mc, src, bytes);
      t = now_s() - t;
      if (t < mc_best) mc_best = t;
    }
  }
  prt_barrier(g);

  double *times = malloc(sizeof(double) * (size_t)(reps + 2));
  int bad = 0;
  double cpu = 0;
  for (int r = 0; r < reps + 2; r++) {
    memcpy(buf, src, bytes);
    prt_barrier(g);
    double t = now_s(), u = cpu_s();
    prt_allreduce_sum(g, buf, count);
    t = now_s() - t;
    if (r >= 2) cpu += cpu_s() - u;
    times[r] = t;
    if (r == 0) {
      /* every element: sum over ranks of (i + rank) % 7, exact in float */
      for (size_t i = 0; i < count; i += 4097) {
        float want = 0;
        for (int k = 0; k < n; k++) want += (float)((i + (size_t)k) % 7);
        if (buf[i] != want) bad = 1;
      }
    }
  }
  /* the slowest rank's time counts: take the maximum over ranks per repetition */
  double *all = calloc((size_t)n * (size_t)(reps + 2), sizeof(double));
  memcpy(all + (size_t)me * (size_t)(reps + 2), times, sizeof(double) * (size_t)(reps + 2));
  prt_allreduce_sum_f64(g, all, (size_t)n * (size_t)(reps + 2));
  double badsum = bad;
  prt_allreduce_sum_f64(g, &badsum, 1);
  cpu /= reps;
  prt_allreduce_sum_f64(g, &cpu, 1); /* CPU seconds of all ranks per all-reduce */
  if (me == 0) {
    double *tr = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
      tr[r] = 0;
      for (int k = 0; k < n; k++)
        if (all[(size_t)k * (size_t)(reps + 2) + (size_t)r + 2] > tr[r]) tr[r] = all[(size_t)k * (size_t)(reps + 2) + (size_t)r + 2];
    }
    qsort(tr, (size_t)reps, sizeof(double), cmp_d);
    double med = tr[reps / 2], best = tr[0];
    double algbw = (double)bytes / med / 1e9, busbw = algbw * 2.0 * (n - 1) / n, mcbw = (double)bytes / mc_best / 1e9;
    const char *shm = getenv("PIPEC_COMM_SHM"), *zc = getenv("PIPEC_COMM_ZC");
    printf("| %d | %zu | %s | %.2f (%.2f) | %.2f | %.2f | %.2f | %.2f | %.2f |%s\n", n, mib,
           shm && !strcmp(shm, "0") ? "tcp" : zc && !strcmp(zc, "0") ? "shm staged" : "shm zero-copy", med * 1e3, best * 1e3, algbw, busbw, mcbw, busbw / mcbw,
           cpu / n * 1e3, badsum ? " WRONG RESULT" : "");
    free(tr);
  }
  free(all);
  free(times);
  prt_comm_free_shared(c, buf);
  free(src);
  free(mc);
  prt_group_free(g);
  free(ranks);
  int rc = prt_comm_finalize(c);
  prt_store_close(st);
  return rc || badsum ? 1 : 0;
}
