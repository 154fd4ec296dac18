/* sgemm.c — the BLAS's sgemm rate on this machine, one thread and every core:
 * cblas_sgemm (row-major, C = A B) of N x N x N floats, one warm-up call, then
 * the best and median of REPS calls, for 1 OpenBLAS thread and for THREADS
 * (default: the online cores). The stage programs measure their peak the
 * same way on 512^3 (runtime/stage.c, sgemm_rate), which bench/run-all.sh
 * reports next to this.
 *
 *   cc -O2 bench/sgemm.c -lopenblas -o /tmp/sgemm && /tmp/sgemm [N=512] [REPS=10] [THREADS]
 *
 * Prints the BLAS's build ("blas CONFIG") and one line per thread count:
 * "sgemm N threads T best_gflops median_gflops". */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 512, reps = argc > 2 ? atoi(argv[2]) : 10;
  int all = argc > 3 ? atoi(argv[3]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 16 || n > 8192 || reps < 1 || reps > 1000 || all < 1) {
    fprintf(stderr, "usage: sgemm [N in 16..8192] [REPS in 1..1000] [THREADS >= 1]\n");
    return 2;
  }
  float *a = malloc(sizeof(float) * 3 * (size_t)n * (size_t)n);
  double *t = malloc(sizeof(double) * (size_t)reps);
  if (!a || !t) {
    fprintf(stderr, "sgemm: out of memory for N = %d\n", n);
    return 2;
  }
  for (size_t i = 0; i < 3 * (size_t)n * (size_t)n; i++) a[i] = (float)(i % 7) * 0.01f;
  float *b = a + (size_t)n * n, *c = b + (size_t)n * n;
  printf("blas %s\n", openblas_get_config());
  int counts[2] = {1, all};
  for (int k = 0; k < (all > 1 ? 2 : 1); k++) {
    openblas_set_num_threads(counts[k]);
    for (int r = -1; r < reps; r++) {
      double t0 = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
      if (r >= 0) t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp);
    double fl = 2.0 * n * n * n;
    printf("sgemm %d threads %d %.1f %.1f\n", n, counts[k], fl / t[0] / 1e9, fl / t[(reps - 1) / 2] / 1e9);
  }
  free(a), free(t);
  return 0;
}
