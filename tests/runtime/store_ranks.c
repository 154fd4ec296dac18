/* store_ranks.c — what each rank of a multi-process store test runs, under
 * torchrun (tests/launch/torchrun.py), mpirun or srun:
 *
 *   store_ranks [--leave R]
 *
 * It reads who it is with prt_env_read, opens the store (rank 0 serves it
 * unless torchrun's agent does), sets "rank<r>" to bytes of its own (NULs
 * included, a different length per rank), ADDs r+1 to a shared sum, meets
 * the others at barrier "ready", reads and checks every other rank's bytes
 * and the sum, meets them at barrier "done", and prints one line:
 *   store_ranks: rank 3 of 8 (openmpi, local 3 of 8, store of rank 0): 7 keys and the sum 36 checked
 * Any failure prints "store_ranks: rank R of W: <error>" and exits 1.
 * --leave R: rank R exits at once (0) without touching the store, so the
 * others' barrier times out naming it (set PIPEC_TIMEOUT low for that). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/env.h"
#include "runtime/store.h"

static unsigned char *rank_bytes(int r, size_t *len) {
  *len = 1000 + 4099 * (size_t)r;
  unsigned char *p = malloc(*len);
  for (size_t i = 0; i < *len; i++) p[i] = i % 7 == 3 ? 0 : (unsigned char)(i * 31 + (size_t)r * 17 + 1);
  return p;
}

int main(int argc, char **argv) {
  int leave = -1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--leave") == 0 && i + 1 < argc) leave = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: store_ranks [--leave RANK]\n");
      return 2;
    }
  }
  PrtEnv e;
  char err[1024];
  if (prt_env_read(&e, err, sizeof err) != 0) {
    printf("store_ranks: %s\n", err);
    return 2;
  }
  if (e.rank == leave) {
    printf("store_ranks: rank %d of %d leaves without touching the store\n", e.rank, e.world);
    return 0;
  }

  int serve = e.rank == 0 && !e.has_agent_store;
  PrtStore *s = prt_store_open(e.master_addr, e.master_port, serve, e.timeout_s, err, sizeof err);
  if (!s) {
    printf("store_ranks: rank %d of %d: %s\n", e.rank, e.world, err);
    return 1;
  }
  char prefix[200], key[300];
  snprintf(prefix, sizeof prefix, "pipec/%s/%d", e.run_id, e.restart);

  size_t len;
  unsigned char *mine = rank_bytes(e.rank, &len);
  snprintf(key, sizeof key, "%s/rank%d", prefix, e.rank);
  int ok = prt_store_set(s, key, mine, len, err, sizeof err) == 0;
  free(mine);
  snprintf(key, sizeof key, "%s/sum", prefix);
  int64_t sum = 0;
  ok = ok && prt_store_add(s, key, e.rank + 1, &sum, err, sizeof err) == 0;
  ok = ok && prt_store_barrier(s, prefix, "ready", e.rank, e.world, e.timeout_s, err, sizeof err) == 0;

  int checked = 0;
  for (int r = 0; ok && r < e.world; r++) {
    if (r == e.rank) continue;
    size_t want_len, got_len = 0;
    unsigned char *want = rank_bytes(r, &want_len);
    snprintf(key, sizeof key, "%s/rank%d", prefix, r);
    unsigned char *got = prt_store_get(s, key, &got_len, e.timeout_s, err, sizeof err);
    if (!got) ok = 0;
    else if (got_len != want_len || memcmp(got, want, want_len) != 0) {
      snprintf(err, sizeof err, "rank %d's value is wrong (%zu bytes, expected %zu)", r, got_len, want_len);
      ok = 0;
    } else
      checked++;
    free(got);
    free(want);
  }
  long long want_sum = (long long)e.world * (e.world + 1) / 2;
  if (ok) {
    snprintf(key, sizeof key, "%s/sum", prefix);
    char *v = prt_store_get(s, key, NULL, e.timeout_s, err, sizeof err);
    if (!v) ok = 0;
    else if (atoll(v) != want_sum) {
      snprintf(err, sizeof err, "the sum is %s, expected %lld", v, want_sum);
      ok = 0;
    }
    free(v);
  }
  ok = ok && prt_store_barrier(s, prefix, "done", e.rank, e.world, e.timeout_s, err, sizeof err) == 0;
  prt_store_close(s);
  if (!ok) {
    printf("store_ranks: rank %d of %d: %s\n", e.rank, e.world, err);
    return 1;
  }
  printf("store_ranks: rank %d of %d (%s, local %d of %d, %s): %d keys and the sum %lld checked\n", e.rank, e.world,
         e.launcher, e.local_rank, e.local_world, e.has_agent_store ? "agent's store" : "store of rank 0", checked, want_sum);
  return 0;
}
