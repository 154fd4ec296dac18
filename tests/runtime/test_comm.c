/* test_comm.c — comm_ranks: the program every rank of a test job runs to
 * check the host transport (runtime/comm.c) against results it works out
 * by itself.
 *
 *   comm_ranks [all]        point-to-point and collectives, every result
 *                           checked bitwise; prints "comm_ranks: rank R of W ok"
 *   comm_ranks loop DIR     writes DIR/pid.R, then loops (all-reduces,
 *                           send/recv) until the job breaks; DIR/ready.R
 *                           once the loop runs (the failure tests kill or
 *                           stop one rank from outside)
 *   comm_ranks loop-zc DIR  the same, the vectors in prt_comm_alloc_shared memory
 *                           (zero-copy all-reduces, 4 MiB and 64 KiB)
 *   comm_ranks abort        rank 1 calls prt_comm_abort while the others loop
 *   comm_ranks mismatch     rank 0 sends 100 bytes with tag 5, rank 1
 *                           receives 200: a fatal size mismatch
 *   comm_ranks stall-init   (run by one rank, the others run `all`) only
 *                           publishes an address record, as prt_comm_init
 *                           would, then sleeps: the others wait in init
 *                           with their shared memory created
 *
 * The rank, world and store come from the launcher's environment
 * (prt_env_read); rank 0 serves the store unless a torchrun agent does.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/comm.h"
#include "runtime/env.h"
#include "runtime/store.h"

static PrtComm *C;
static int R, W;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
  char msg[600], line[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(line, sizeof line, "comm_ranks: FAIL: %s", msg);
  if (C) prt_comm_abort(C, line);
  fprintf(stderr, "rank %d: %s\n", R, line);
  exit(1);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Element e of rank r's vector for test `seed`: random mantissa, exponents
 * over 2^-12..2^12, so that the order of a sum changes its bits. */
static double gen(int r, uint64_t seed, size_t e) {
  uint64_t u = mix(seed * 0x100000001b3ull ^ ((uint64_t)r << 40) ^ (uint64_t)e);
  double m = (double)(u & 0xffffff) / 16777216.0 - 0.5;
  return ldexp(m, (int)((u >> 24) % 25) - 12);
}

static uint8_t byte_of(int from, uint32_t tag, size_t i) { return (uint8_t)(mix(((uint64_t)from << 32) ^ tag ^ ((uint64_t)(i / 8) << 36)) >> (8 * (i % 8))); }

/* A message's bytes: a function of sender, tag and position, 8 at a time. */
static void fill_msg(uint8_t *b, size_t n, int from, uint32_t tag) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = mix(((uint64_t)from << 32) ^ tag ^ ((uint64_t)(i / 8) << 36));
    memcpy(b + i, &v, 8);
  }
  for (; i < n; i++) b[i] = byte_of(from, tag, i);
}

static void check_msg(const uint8_t *b, size_t n, int from, uint32_t tag, const char *what) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = mix(((uint64_t)from << 32) ^ tag ^ ((uint64_t)(i / 8) << 36));
    if (memcmp(b + i, &v, 8) != 0) break;
  }
  for (; i < n; i++)
    if (b[i] != byte_of(from, tag, i)) fail("%s: byte %zu of the message from rank %d tag %u is wrong", what, i, from, tag);
}

static uint32_t fnv(const void *p, size_t n) {
  const uint8_t *b = p;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
  return h;
}

/* Every member's checksum of the result is the same: one-hot all-reduce. */
static void same_everywhere(PrtGroup *g, uint32_t h, const char *what) {
  int n = prt_group_size(g);
  double *v = calloc((size_t)n, sizeof(double));
  v[prt_group_rank(g)] = (double)h;
  prt_allreduce_sum_f64(g, v, (size_t)n);
  for (int i = 0; i < n; i++)
    if (v[i] != (double)h) fail("%s: member %d's result differs (checksum %.0f, here %u)", what, i, v[i], h);
  free(v);
}

static int orders_differ_checked; /* some test showed a different order gives different bits */

static void check_allreduce_f32(PrtGroup *g, const int *ranks, size_t n, uint64_t seed, const char *what) {
  int G = prt_group_size(g), me = prt_group_rank(g);
  /* odd sizes use a buffer that is not 16-byte aligned */
  float *mem = malloc((n + 1) * sizeof(float)), *x = mem + (n & 1);
  for (size_t e = 0; e < n; e++) x[e] = (float)gen(ranks[me], seed, e);
  prt_allreduce_sum(g, x, n);
  size_t differ = 0;
  for (size_t e = 0; e < n; e++) {
    float s = (float)gen(ranks[0], seed, e), rev = (float)gen(ranks[G - 1], seed, e);
    for (int i = 1; i < G; i++) s += (float)gen(ranks[i], seed, e);
    for (int i = G - 2; i >= 0; i--) rev += (float)gen(ranks[i], seed, e);
    if (memcmp(&s, &x[e], sizeof s) != 0)
      fail("%s (n=%zu, f32): element %zu is %.9g, expected %.9g (sum in group order)", what, n, e, (double)x[e], (double)s);
    differ += memcmp(&s, &rev, sizeof s) != 0;
  }
  if (differ) orders_differ_checked = 1;
  same_everywhere(g, fnv(x, n * sizeof(float)), what);
  free(mem);
}

static void check_allreduce_f64(PrtGroup *g, const int *ranks, size_t n, uint64_t seed, const char *what) {
  int G = prt_group_size(g), me = prt_group_rank(g);
  double *x = malloc((n ? n : 1) * sizeof(double));
  for (size_t e = 0; e < n; e++) x[e] = gen(ranks[me], seed, e) * (1.0 + 1e-9 * (double)e);
  prt_allreduce_sum_f64(g, x, n);
  for (size_t e = 0; e < n; e++) {
    double s = gen(ranks[0], seed, e) * (1.0 + 1e-9 * (double)e);
    for (int i = 1; i < G; i++) s += gen(ranks[i], seed, e) * (1.0 + 1e-9 * (double)e);
    if (memcmp(&s, &x[e], sizeof s) != 0)
      fail("%s (n=%zu, f64): element %zu is %.17g, expected %.17g", what, n, e, x[e], s);
  }
  same_everywhere(g, fnv(x, n * sizeof(double)), what);
  free(x);
}

static void check_broadcast(PrtGroup *g, const int *ranks, int root, size_t n, const char *what) {
  uint8_t *b = malloc(n ? n : 1);
  if (prt_group_rank(g) == root)
    fill_msg(b, n, ranks[root], (uint32_t)n);
  else
    memset(b, 0xAB, n);
  prt_broadcast(g, root, b, n);
  check_msg(b, n, ranks[root], (uint32_t)n, what);
  free(b);
}

/* Zero-copy all-reduce: x lies in `shared` (prt_comm_alloc_shared) at
 * byte offset off on members whose bit in `shared_mask` is set (group
 * index), in malloc'd memory on the others (then every member stages it).
 * The result must be the group-order sum, equal bit for bit to the staged
 * path's on a malloc'd copy of the same input, and the same on every member. */
static void check_zc_f32(PrtGroup *g, const int *ranks, uint8_t *shared, size_t off, size_t n, uint64_t seed, unsigned shared_mask,
                         const char *what) {
  int G = prt_group_size(g), me = prt_group_rank(g);
  float *x = (shared_mask >> me) & 1 ? (float *)(shared + off) : malloc((n ? n : 1) * sizeof(float));
  float *y = malloc((n ? n : 1) * sizeof(float));
  for (size_t e = 0; e < n; e++) x[e] = y[e] = (float)gen(ranks[me], seed, e);
  prt_allreduce_sum(g, x, n);
  prt_allreduce_sum(g, y, n); /* the staged path */
  for (size_t e = 0; e < n; e++) {
    float s = (float)gen(ranks[0], seed, e);
    for (int i = 1; i < G; i++) s += (float)gen(ranks[i], seed, e);
    if (memcmp(&s, &x[e], sizeof s) != 0)
      fail("%s (n=%zu, zero-copy f32): element %zu is %.9g, expected %.9g (sum in group order)", what, n, e, (double)x[e], (double)s);
  }
  if (n && memcmp(x, y, n * sizeof(float)) != 0) fail("%s (n=%zu): zero-copy and staged results differ", what, n);
  same_everywhere(g, fnv(x, n * sizeof(float)), what);
  if (!((shared_mask >> me) & 1)) free(x);
  free(y);
}

static void test_zero_copy(PrtGroup *world, const int *wr) {
  size_t cap = 24u << 20;
  uint8_t *sh = prt_comm_alloc_shared(C, cap);
  if (!sh) fail("prt_comm_alloc_shared(%zu) failed", cap);
  for (size_t i = 0; i < cap; i += 4096)
    if (sh[i]) fail("prt_comm_alloc_shared: byte %zu is not zero", i);
  /* odd sizes: 0, smaller than the group, not divisible by it, several blocks; odd offsets in the region */
  size_t sizes[] = {0, 1, 2, 3, (size_t)W - 1, (size_t)W, (size_t)W + 1, 1000, 4099, 65537, (1u << 20) + 3, (3u << 20) + 17};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    check_zc_f32(world, wr, sh, 4 * (i * 1031 % 4096), sizes[i], 900 + i, ~0u, "zero-copy world allreduce");
  /* f64 in shared memory */
  double *d = (double *)(sh + (8u << 20));
  size_t nd = 200007;
  for (size_t e = 0; e < nd; e++) d[e] = gen(R, 950, e);
  prt_allreduce_sum_f64(world, d, nd);
  for (size_t e = 0; e < nd; e++) {
    double s = gen(0, 950, e);
    for (int i = 1; i < W; i++) s += gen(i, 950, e);
    if (memcmp(&s, &d[e], sizeof s) != 0) fail("zero-copy world allreduce (f64): element %zu is %.17g, expected %.17g", e, d[e], s);
  }
  /* one member's buffer is not shared: everyone stages, same result */
  check_zc_f32(world, wr, sh, 0, 100003, 960, ~1u, "allreduce with rank 0's buffer private");
  /* groups that are subsets of the world: pairs, strided, the world reversed; several buffers in one region */
  int tp[2], ntp = 0, dp[256], ndp = 0, rev[256];
  for (int r = R & ~1; r <= (R | 1) && r < W; r++) tp[ntp++] = r;
  for (int r = R % 2; r < W && ndp < 256; r += 2) dp[ndp++] = r;
  for (int i = 0; i < W && i < 256; i++) rev[i] = W - 1 - i;
  PrtGroup *gtp = prt_group_new(C, tp, ntp), *gdp = prt_group_new(C, dp, ndp), *grev = prt_group_new(C, rev, W < 256 ? W : 256);
  for (int it = 0; it < 2; it++) {
    check_zc_f32(gtp, tp, sh, 4096, 30011 + (size_t)it, 970 + (uint64_t)it, ~0u, "zero-copy tp allreduce");
    check_zc_f32(gdp, dp, sh, 1u << 20, 250001, 975 + (uint64_t)it, ~0u, "zero-copy dp allreduce");
    check_zc_f32(grev, rev, sh, 12, (size_t)W + 2, 980 + (uint64_t)it, ~0u, "zero-copy reversed-world allreduce");
  }
  /* back to back on the same buffer, no barrier between; the next input is
   * written from the end (the last slice, which the last member writes
   * into this buffer): nobody may read or write a buffer once its call returned */
  float *v = (float *)(sh + (16u << 20));
  for (int it = 0; it < 304; it++) {
    uint64_t seed = 1000 + (uint64_t)it;
    size_t nv = it < 4 ? (1u << 20) + 7 : 3001 + (size_t)it % 7;
    for (size_t e = nv; e-- > 0;) v[e] = (float)gen(R, seed, e);
    prt_allreduce_sum(world, v, nv);
    for (size_t e = 0; e < nv; e += 1 + e % 7) {
      float s = (float)gen(0, seed, e);
      for (int i = 1; i < W; i++) s += (float)gen(i, seed, e);
      if (memcmp(&s, &v[e], sizeof s) != 0)
        fail("zero-copy back-to-back allreduce %d: element %zu is %.9g, expected %.9g", it, e, (double)v[e], (double)s);
    }
  }
  prt_group_free(gtp);
  prt_group_free(gdp);
  prt_group_free(grev);
  prt_comm_free_shared(C, sh);
}

/* ---------------------------------------------------------------- tests */

static void test_p2p_tags(void) {
  if (W < 2) return;
  int next = (R + 1) % W, prev = (R - 1 + W) % W;
  enum { T = 30 };
  uint8_t *out[T];
  size_t sz[T];
  for (int t = 0; t < T; t++) {
    /* sizes differ by tag and sender; some span several 256 KiB frames; tag 3 is empty */
    sz[t] = t == 3 ? 0 : (size_t)((t * 7919 + R * 131) % 5000) + (t % 7 == 0 ? 300000 : 0) + 1;
    out[t] = malloc(sz[t] ? sz[t] : 1);
    fill_msg(out[t], sz[t], R, (uint32_t)t);
    prt_send(C, next, (uint32_t)t, out[t], sz[t]);
  }
  /* several messages with one tag arrive in the order sent */
  for (uint32_t k = 0; k < 10; k++) {
    size_t n = 8 + k * 1000;
    uint8_t *b = malloc(n);
    fill_msg(b, n, R, 1000 + k);
    memcpy(b, &k, sizeof k);
    prt_send(C, next, 999, b, n);
    free(b);
  }
  /* receive out of order */
  for (int k = 0; k < T; k++) {
    int t = (k * 17 + 5) % T;
    size_t n = (size_t)((t * 7919 + prev * 131) % 5000) + (t % 7 == 0 ? 300000 : 0) + 1;
    if (t == 3) n = 0;
    uint8_t *b = malloc(n ? n : 1);
    prt_recv(C, prev, (uint32_t)t, b, n);
    check_msg(b, n, prev, (uint32_t)t, "p2p ring, tags out of order");
    free(b);
  }
  for (uint32_t k = 0; k < 10; k++) {
    size_t n = 8 + k * 1000;
    uint8_t *b = malloc(n);
    prt_recv(C, prev, 999, b, n);
    uint32_t got;
    memcpy(&got, b, sizeof got);
    if (got != k) fail("p2p: messages with one tag out of order: got #%u, expected #%u", got, k);
    for (size_t i = 8; i < n; i++)
      if (b[i] != byte_of(prev, 1000 + k, i)) fail("p2p same tag: byte %zu of message #%u is wrong", i, k);
    free(b);
  }
  for (int t = 0; t < T; t++) free(out[t]);
}

static void test_p2p_all_to_all(void) {
  for (int d = 1; d < W; d++) {
    int to = (R + d) % W;
    size_t n = 1000 + (size_t)R * 37;
    uint8_t *b = malloc(n);
    fill_msg(b, n, R, 2000 + (uint32_t)R);
    prt_send(C, to, 2000 + (uint32_t)R, b, n);
    free(b);
  }
  for (int d = W - 1; d >= 1; d--) {
    int from = (R + d) % W;
    size_t n = 1000 + (size_t)from * 37;
    uint8_t *b = malloc(n);
    prt_recv(C, from, 2000 + (uint32_t)from, b, n);
    check_msg(b, n, from, 2000 + (uint32_t)from, "all-to-all");
    free(b);
  }
}

/* Both ranks of a pair send a large message at the same time. */
static void exchange(int partner, size_t n, uint32_t tag, const char *what) {
  uint8_t *s = malloc(n), *r = malloc(n);
  fill_msg(s, n, R, tag);
  memset(r, 0, n);
  prt_send(C, partner, tag, s, n);
  prt_recv(C, partner, tag, r, n);
  check_msg(r, n, partner, tag, what);
  free(s);
  free(r);
}

static void test_large_exchange(void) {
  int p = R ^ 1;
  if (p < W) exchange(p, 32u << 20, 77, "simultaneous 32 MiB exchange");
  if (W >= 4 && W % 2 == 0) exchange((R + W / 2) % W, (8u << 20) + 3, 78, "simultaneous 8 MiB exchange");
}

static void test_world_allreduce(PrtGroup *world, const int *wr) {
  /* sizes around the group size, several staging chunks, and past 4 MiB (results written with non-temporal stores) */
  size_t sizes[] = {0, 1, 2, 3, (size_t)W - 1, (size_t)W, (size_t)W + 1, 1000, 4099, 65537, 262144 * 2 + 3, 3 * 262144 + 17,
                    (5u << 18) + 3};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) check_allreduce_f32(world, wr, sizes[i], 100 + i, "world allreduce");
  size_t dsz[] = {0, 1, 5, 100003, 200007, (5u << 17) + 1};
  for (size_t i = 0; i < sizeof dsz / sizeof dsz[0]; i++) check_allreduce_f64(world, wr, dsz[i], 200 + i, "world allreduce");
}

static void test_subgroups(PrtGroup *world, const int *wr) {
  /* tp-like pairs, dp-like strided groups, the world in reverse order */
  int tp[2], ntp = 0, dp[256], ndp = 0, rev[256];
  for (int r = R & ~1; r <= (R | 1) && r < W; r++) tp[ntp++] = r;
  for (int r = R % 2; r < W && ndp < 256; r += 2) dp[ndp++] = r;
  for (int i = 0; i < W && i < 256; i++) rev[i] = W - 1 - i;
  PrtGroup *gtp = prt_group_new(C, tp, ntp), *gdp = prt_group_new(C, dp, ndp), *grev = prt_group_new(C, rev, W < 256 ? W : 256);
  PrtGroup *gworld2 = prt_group_new(C, wr, W); /* a second group with the same list */
  int self[1] = {R};
  PrtGroup *gself = prt_group_new(C, self, 1);
  /* a message left unreceived across the collectives must not mix with them */
  if (W > 1) {
    uint8_t b[100];
    fill_msg(b, sizeof b, R, 4242);
    prt_send(C, (R + 1) % W, 4242, b, sizeof b);
  }
  for (int it = 0; it < 3; it++) {
    check_allreduce_f32(gtp, tp, 10007 + (size_t)it, 300 + (uint64_t)it, "tp allreduce");
    check_allreduce_f32(gdp, dp, 50001, 400 + (uint64_t)it, "dp allreduce");
    check_broadcast(gdp, dp, it % ndp, 70001 + (size_t)it, "dp broadcast");
    check_allreduce_f32(grev, rev, 777 + (size_t)it * 1000, 500 + (uint64_t)it, "reversed-world allreduce");
    check_allreduce_f64(gtp, tp, 3, 600 + (uint64_t)it, "tp allreduce");
    check_allreduce_f32(gworld2, wr, 1234, 700 + (uint64_t)it, "second world group allreduce");
    check_allreduce_f32(gself, self, 99, 800, "group of one");
    prt_barrier(world);
  }
  if (W > 1) {
    uint8_t b[100];
    int from = (R - 1 + W) % W;
    prt_recv(C, from, 4242, b, sizeof b);
    check_msg(b, sizeof b, from, 4242, "p2p message across collectives");
  }
  prt_group_free(gtp);
  prt_group_free(gdp);
  prt_group_free(grev);
  prt_group_free(gworld2);
  prt_group_free(gself);
}

static void test_broadcast(PrtGroup *world, const int *wr) {
  for (int root = 0; root < W; root++) {
    check_broadcast(world, wr, root, 0, "broadcast");
    check_broadcast(world, wr, root, 1, "broadcast");
    check_broadcast(world, wr, root, 12345 + (size_t)root, "broadcast");
  }
  check_broadcast(world, wr, W - 1, (5u << 20) + 5, "large broadcast");
}

static void test_barrier(PrtGroup *world) {
  prt_barrier(world);
  double t0 = now_s();
  if (R == 0) usleep(300000);
  prt_barrier(world);
  double dt = now_s() - t0;
  if (R != 0 && dt < 0.2) fail("barrier returned after %.3f s although rank 0 arrived 0.3 s late", dt);
}

/* ---------------------------------------------------------------- modes */

static void mode_loop(const char *dir, int abort_rank, int zc) {
  char path[1024];
  if (dir) {
    snprintf(path, sizeof path, "%s/pid.%d", dir, R);
    FILE *f = fopen(path, "w");
    if (f) {
      fprintf(f, "%d\n", (int)getpid());
      fclose(f);
    }
  }
  int all[1024];
  for (int i = 0; i < W && i < 1024; i++) all[i] = i;
  int tp[2], ntp = 0;
  for (int r = R & ~1; r <= (R | 1) && r < W; r++) tp[ntp++] = r;
  PrtGroup *world = prt_group_new(C, all, W), *gtp = prt_group_new(C, tp, ntp);
  size_t nbig = zc ? 1u << 20 : 16384;
  float *v = zc ? prt_comm_alloc_shared(C, nbig * sizeof(float)) : calloc(nbig, sizeof(float));
  uint8_t msg[4096];
  for (long it = 0;; it++) {
    prt_allreduce_sum(world, v, nbig);
    if (W > 1) {
      prt_send(C, (R + 1) % W, (uint32_t)(it & 0xffff), msg, sizeof msg);
      prt_recv(C, (R - 1 + W) % W, (uint32_t)(it & 0xffff), msg, sizeof msg);
    }
    prt_allreduce_sum(gtp, v, zc ? 16384 : 1000);
    if (it == 20 && dir) {
      snprintf(path, sizeof path, "%s/ready.%d", dir, R);
      FILE *f = fopen(path, "w");
      if (f) fclose(f);
    }
    if (abort_rank == R && it == 30) prt_comm_abort(C, "comm_ranks: abort requested by the test");
    usleep(1000);
  }
}

static void mode_mismatch(void) {
  uint8_t b[200];
  memset(b, 1, sizeof b);
  if (R == 0) prt_send(C, 1, 5, b, 100);
  if (R == 1) prt_recv(C, 0, 5, b, 200);
  PrtGroup *g;
  int all[2] = {0, 1};
  g = prt_group_new(C, all, 2);
  prt_barrier(g);
  fail("the size mismatch went unnoticed");
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "all";
  PrtEnv env;
  char err[512];
  if (prt_env_read(&env, err, sizeof err) != 0) {
    fprintf(stderr, "comm_ranks: %s\n", err);
    return 1;
  }
  R = env.rank;
  W = env.world;
  int serve = env.rank == 0 && !env.has_agent_store;
  PrtStore *st = prt_store_open(env.master_addr, env.master_port, serve, env.timeout_s, err, sizeof err);
  if (!st) {
    fprintf(stderr, "comm_ranks: rank %d: store: %s\n", R, err);
    return 1;
  }
  char prefix[300];
  snprintf(prefix, sizeof prefix, "%s/%d", env.run_id, env.restart);
  if (!strcmp(mode, "stall-init")) {
    char key[400], rec[200];
    snprintf(key, sizeof key, "%s/comm/addr/%d", prefix, R);
    int n = snprintf(rec, sizeof rec, "pipec1 %s 1 %d 0000000000000001 -", getenv("PIPEC_COMM_HOST") ? getenv("PIPEC_COMM_HOST") : "stall", (int)getpid());
    if (prt_store_set(st, key, rec, (size_t)n, err, sizeof err) != 0) return 1;
    sleep(60);
    return 1;
  }
  C = prt_comm_init(st, prefix, R, W, env.timeout_s, err, sizeof err);
  if (!C) {
    fprintf(stderr, "comm_ranks: rank %d: %s\n", R, err);
    return 1;
  }
  if (prt_comm_rank(C) != R || prt_comm_world(C) != W) fail("rank/world mismatch");
  if (!strcmp(mode, "loop")) mode_loop(argc > 2 ? argv[2] : NULL, -1, 0);
  if (!strcmp(mode, "loop-zc")) mode_loop(argc > 2 ? argv[2] : NULL, -1, 1);
  if (!strcmp(mode, "abort")) mode_loop(argc > 2 ? argv[2] : NULL, 1, 0);
  if (!strcmp(mode, "mismatch")) mode_mismatch();
  if (strcmp(mode, "all") != 0) fail("unknown mode '%s'", mode);

  int *wr = malloc(sizeof(int) * (size_t)W);
  for (int i = 0; i < W; i++) wr[i] = i;
  PrtGroup *world = prt_group_new(C, wr, W);
  if (prt_group_size(world) != W || prt_group_rank(world) != R) fail("group size/rank");
  double t0 = now_s();
  test_p2p_tags();
  test_p2p_all_to_all();
  double t1 = now_s();
  test_large_exchange();
  double t2 = now_s();
  test_world_allreduce(world, wr);
  test_zero_copy(world, wr);
  double t3 = now_s();
  test_subgroups(world, wr);
  test_broadcast(world, wr);
  test_barrier(world);
  double t4 = now_s();
  if (W >= 3 && !orders_differ_checked) fail("the test data never made the summation order matter");
  prt_group_free(world);
  free(wr);
  if (prt_comm_finalize(C) != 0) {
    fprintf(stderr, "comm_ranks: rank %d: finalize failed\n", R);
    return 1;
  }
  C = NULL;
  prt_store_close(st);
  printf("comm_ranks: rank %d of %d ok (p2p %.2f s, exchange %.2f s, allreduce %.2f s, groups+bcast+barrier %.2f s)\n", R, W,
         t1 - t0, t2 - t1, t3 - t2, t4 - t3);
  return 0;
}
