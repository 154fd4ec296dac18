/* test_store.c — the launcher environment (runtime/env.c) and the TCPStore
 * client and server (runtime/store.c), in one process:
 *
 *   test_store env                      every launcher's variables, their
 *                                       order, the defaults, and the exact
 *                                       error for each bad value
 *   test_store local                    our client against our server on a
 *                                       free port: set/get/add/check, NUL
 *                                       bytes, values of several MiB, a get
 *                                       that times out, many clients in
 *                                       threads, barriers, connect retries
 *   test_store python-client PY SCRIPT  our server against a client written
 *                                       in Python from PyTorch's protocol
 *                                       (tests/runtime/store_client.py);
 *                                       each side reads what the other set
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/env.h"
#include "runtime/store.h"
#include "tests/check.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
  struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

/* n bytes with NULs in them: byte i is ((i % 1279) * 131 + seed * 7) & 255,
 * or 0 where i % 1279 % 5 == 0 (store_client.py makes the same bytes) */
static unsigned char *pattern(size_t n, int seed) {
  unsigned char *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    size_t j = i % 1279;
    p[i] = j % 5 ? (unsigned char)((j * 131 + (size_t)seed * 7) & 0xFF) : 0;
  }
  return p;
}

/* open file descriptors of this process, to see that none leak */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

/* ------------------------------------------------------------ environment */

static const char *launcher_vars[] = {
  "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
  "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_USE_AGENT_STORE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
  "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
  "MPI_LOCALNRANKS", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE",
  "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NODEID", "PIPEC_TIMEOUT",
};

static void clear_env(void) {
  for (size_t i = 0; i < sizeof launcher_vars / sizeof launcher_vars[0]; i++) unsetenv(launcher_vars[i]);
}

/* sets "NAME=VALUE" pairs separated by spaces, after clearing the rest */
static void set_env(const char *assignments) {
  clear_env();
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", assignments);
  for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    char *eq = strchr(tok, '=');
    *eq = 0;
    setenv(tok, eq + 1, 1);
  }
}

static void env_ok(const char *assignments, const char *launcher, int rank, int world, int lrank, int lworld, int agent) {
  set_env(assignments);
  PrtEnv e;
  char err[256] = "";
  int rc = prt_env_read(&e, err, sizeof err);
  CHECK(rc == 0, "[%s] prt_env_read failed: %s", assignments, err);
  if (rc) return;
  CHECK(strcmp(e.launcher, launcher) == 0, "[%s] launcher %s, expected %s", assignments, e.launcher, launcher);
  CHECK(e.rank == rank && e.world == world, "[%s] rank %d of %d, expected %d of %d", assignments, e.rank, e.world, rank,
        world);
  CHECK(e.local_rank == lrank && e.local_world == lworld, "[%s] local %d of %d, expected %d of %d", assignments,
        e.local_rank, e.local_world, lrank, lworld);
  CHECK(e.has_agent_store == agent, "[%s] has_agent_store %d, expected %d", assignments, e.has_agent_store, agent);
}

static void env_err(const char *assignments, const char *expected) {
  set_env(assignments);
  PrtEnv e;
  char err[256] = "";
  int rc = prt_env_read(&e, err, sizeof err);
  CHECK(rc == -1, "[%s] accepted, expected the error '%s'", assignments, expected);
  CHECK(strcmp(err, expected) == 0, "[%s] error '%s', expected '%s'", assignments, err, expected);
}

static void test_env(void) {
  /* nothing set: one rank, the defaults */
  PrtEnv e;
  char err[256] = "";
  clear_env();
  CHECK(prt_env_read(&e, err, sizeof err) == 0, "empty environment: %s", err);
  CHECK(strcmp(e.launcher, "single") == 0 && e.rank == 0 && e.world == 1 && e.local_rank == 0 && e.local_world == 1,
        "empty environment: %s rank %d of %d", e.launcher, e.rank, e.world);
  CHECK(strcmp(e.master_addr, "127.0.0.1") == 0 && e.master_port == 29500, "defaults: %s:%d", e.master_addr, e.master_port);
  CHECK(strcmp(e.run_id, "none") == 0 && e.restart == 0 && e.has_agent_store == 0, "defaults: run id %s restart %d agent %d",
        e.run_id, e.restart, e.has_agent_store);
  CHECK(e.timeout_s == 60, "default timeout %g", e.timeout_s);

  /* torchrun, everything it sets */
  set_env("RANK=5 WORLD_SIZE=8 LOCAL_RANK=1 LOCAL_WORLD_SIZE=4 MASTER_ADDR=node7 MASTER_PORT=1234 "
          "TORCHELASTIC_RUN_ID=3f2a-9 TORCHELASTIC_RESTART_COUNT=2 TORCHELASTIC_USE_AGENT_STORE=True PIPEC_TIMEOUT=2.5");
  CHECK(prt_env_read(&e, err, sizeof err) == 0, "torchrun: %s", err);
  CHECK(strcmp(e.launcher, "torchrun") == 0 && e.rank == 5 && e.world == 8 && e.local_rank == 1 && e.local_world == 4,
        "torchrun: %s rank %d of %d local %d of %d", e.launcher, e.rank, e.world, e.local_rank, e.local_world);
  CHECK(strcmp(e.master_addr, "node7") == 0 && e.master_port == 1234, "torchrun: %s:%d", e.master_addr, e.master_port);
  CHECK(strcmp(e.run_id, "3f2a-9") == 0 && e.restart == 2, "torchrun: run id %s restart %d", e.run_id, e.restart);
  CHECK(e.has_agent_store == 1 && e.timeout_s == 2.5, "torchrun: agent %d timeout %g", e.has_agent_store, e.timeout_s);

  /* whether torchrun's agent serves the store */
  env_ok("RANK=0 WORLD_SIZE=2 TORCHELASTIC_RUN_ID=x TORCHELASTIC_USE_AGENT_STORE=False", "torchrun", 0, 2, 0, 2, 0);
  env_ok("RANK=0 WORLD_SIZE=2 TORCHELASTIC_RUN_ID=x", "torchrun", 0, 2, 0, 2, 1);
  env_ok("RANK=1 WORLD_SIZE=2", "torchrun", 1, 2, 1, 2, 0); /* env:// by hand: rank 0 serves */
  env_ok("OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 TORCHELASTIC_RUN_ID=x TORCHELASTIC_USE_AGENT_STORE=True", "openmpi", 1,
         2, 1, 2, 0);

  /* each launcher */
  env_ok("OMPI_COMM_WORLD_RANK=6 OMPI_COMM_WORLD_SIZE=8 OMPI_COMM_WORLD_LOCAL_RANK=2 OMPI_COMM_WORLD_LOCAL_SIZE=4", "openmpi", 6, 8,
         2, 4, 0);
  env_ok("PMI_RANK=3 PMI_SIZE=4 MPI_LOCALRANKID=1 MPI_LOCALNRANKS=2", "mpich", 3, 4, 1, 2, 0);
  env_ok("SLURM_PROCID=9 SLURM_NTASKS=12 SLURM_LOCALID=1 SLURM_NTASKS_PER_NODE=4", "slurm", 9, 12, 1, 4, 0);
  env_ok("SLURM_PROCID=9 SLURM_NTASKS=11 SLURM_LOCALID=1 SLURM_TASKS_PER_NODE=4(x2),3 SLURM_NODEID=2", "slurm", 9, 11, 1, 3, 0);
  env_ok("SLURM_PROCID=5 SLURM_NTASKS=11 SLURM_LOCALID=1 SLURM_STEP_TASKS_PER_NODE=4(x2),3 SLURM_TASKS_PER_NODE=9 SLURM_NODEID=1",
         "slurm", 5, 11, 1, 4, 0);
  /* no per-node variables: one node holds every rank */
  env_ok("OMPI_COMM_WORLD_RANK=3 OMPI_COMM_WORLD_SIZE=4", "openmpi", 3, 4, 3, 4, 0);

  /* the order: torchrun, Open MPI, MPICH, Slurm; an incomplete set is skipped */
  env_ok("RANK=1 WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=3 OMPI_COMM_WORLD_SIZE=4 PMI_RANK=5 PMI_SIZE=6 SLURM_PROCID=7 SLURM_NTASKS=8",
         "torchrun", 1, 2, 1, 2, 0);
  env_ok("OMPI_COMM_WORLD_RANK=3 OMPI_COMM_WORLD_SIZE=4 PMI_RANK=5 PMI_SIZE=6 SLURM_PROCID=7 SLURM_NTASKS=8", "openmpi", 3, 4, 3,
         4, 0);
  env_ok("PMI_RANK=5 PMI_SIZE=6 SLURM_PROCID=7 SLURM_NTASKS=8", "mpich", 5, 6, 5, 6, 0);
  env_ok("RANK=1 OMPI_COMM_WORLD_SIZE=4 SLURM_PROCID=7 SLURM_NTASKS=8", "slurm", 7, 8, 7, 8, 0);
  env_ok("RANK= WORLD_SIZE=4 PMI_RANK=0 PMI_SIZE=1", "mpich", 0, 1, 0, 1, 0); /* empty counts as unset */
  env_ok("RANK=1", "single", 0, 1, 0, 1, 0);

  /* the other variables */
  set_env("MASTER_ADDR=10.1.2.3 MASTER_PORT=65535 PIPEC_TIMEOUT=1e1");
  CHECK(prt_env_read(&e, err, sizeof err) == 0 && strcmp(e.master_addr, "10.1.2.3") == 0 && e.master_port == 65535 &&
            e.timeout_s == 10,
        "MASTER_ADDR/PORT, PIPEC_TIMEOUT: %s:%d %g (%s)", e.master_addr, e.master_port, e.timeout_s, err);
  set_env("PIPEC_TIMEOUT=.25");
  CHECK(prt_env_read(&e, err, sizeof err) == 0 && e.timeout_s == 0.25, "PIPEC_TIMEOUT=.25 gives %g", e.timeout_s);

  /* errors, word for word */
  env_err("RANK=1x WORLD_SIZE=4", "RANK=\"1x\" is not an integer");
  env_err("RANK=1.0 WORLD_SIZE=4", "RANK=\"1.0\" is not an integer");
  env_err("RANK=0x1 WORLD_SIZE=4", "RANK=\"0x1\" is not an integer");
  env_err("RANK=+ WORLD_SIZE=4", "RANK=\"+\" is not an integer");
  env_err("RANK=1 WORLD_SIZE=four", "WORLD_SIZE=\"four\" is not an integer");
  env_err("RANK=4 WORLD_SIZE=4", "RANK=4 is outside [0, 4) (WORLD_SIZE=4)");
  env_err("RANK=-1 WORLD_SIZE=4", "RANK=-1 is outside [0, 4) (WORLD_SIZE=4)");
  env_err("RANK=99999999999 WORLD_SIZE=4", "RANK=\"99999999999\" is out of range [-2147483648, 2147483647]");
  env_err("RANK=0 WORLD_SIZE=0", "WORLD_SIZE=\"0\" is out of range [1, 2147483647]");
  env_err("OMPI_COMM_WORLD_RANK=8 OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_RANK=8 is outside [0, 8) (OMPI_COMM_WORLD_SIZE=8)");
  env_err("OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=8 OMPI_COMM_WORLD_LOCAL_RANK=4 OMPI_COMM_WORLD_LOCAL_SIZE=4",
          "OMPI_COMM_WORLD_LOCAL_RANK=4 is outside [0, 4) (OMPI_COMM_WORLD_LOCAL_SIZE=4)");
  env_err("PMI_RANK=1 PMI_SIZE=2 MPI_LOCALRANKID=x", "MPI_LOCALRANKID=\"x\" is not an integer");
  env_err("SLURM_PROCID=1 SLURM_NTASKS=2 SLURM_NTASKS_PER_NODE=3", "SLURM_NTASKS_PER_NODE=3 is larger than SLURM_NTASKS=2");
  env_err("SLURM_PROCID=1 SLURM_NTASKS=4 SLURM_NTASKS_PER_NODE=2",
          "SLURM_LOCALID is not set although SLURM_NTASKS_PER_NODE=2 differs from SLURM_NTASKS=4");
  env_err("MASTER_PORT=http", "MASTER_PORT=\"http\" is not an integer");
  env_err("MASTER_PORT=0", "MASTER_PORT=\"0\" is out of range [1, 65535]");
  env_err("MASTER_PORT=70000", "MASTER_PORT=\"70000\" is out of range [1, 65535]");
  env_err("RANK=0 WORLD_SIZE=1 TORCHELASTIC_RESTART_COUNT=-1",
          "TORCHELASTIC_RESTART_COUNT=\"-1\" is out of range [0, 2147483647]");
  env_err("PIPEC_TIMEOUT=soon", "PIPEC_TIMEOUT=\"soon\" is not a number of seconds");
  env_err("PIPEC_TIMEOUT=10s", "PIPEC_TIMEOUT=\"10s\" is not a number of seconds");
  env_err("PIPEC_TIMEOUT=inf", "PIPEC_TIMEOUT=\"inf\" is not a number of seconds");
  env_err("PIPEC_TIMEOUT=0", "PIPEC_TIMEOUT=\"0\" must be more than 0 seconds");
  env_err("PIPEC_TIMEOUT=-3", "PIPEC_TIMEOUT=\"-3\" must be more than 0 seconds");
  char longaddr[300];
  memset(longaddr, 'a', sizeof longaddr - 1);
  longaddr[sizeof longaddr - 1] = 0;
  clear_env();
  setenv("MASTER_ADDR", longaddr, 1);
  CHECK(prt_env_read(&e, err, sizeof err) == -1 && strcmp(err, "MASTER_ADDR is longer than 255 characters") == 0,
        "a long MASTER_ADDR: %s", err);
  clear_env();
}

/* ------------------------------------------------------------ local store */

typedef struct Worker {
  int port, id, n, ok, connected;
  double delay;
  char err[512];
} Worker;

/* one client of many: its own key, a shared counter, a barrier, then every
 * other client's key; ok = 1 when all of that worked */
static void *many_client(void *arg) {
  Worker *w = arg;
  char err[512] = "", key[64];
  PrtStore *s = prt_store_open("127.0.0.1", w->port, 0, 20, err, sizeof err);
  if (!s) {
    snprintf(w->err, sizeof w->err, "%s", err);
    return NULL;
  }
  size_t len = 100 + 977 * (size_t)w->id;
  unsigned char *mine = pattern(len, w->id);
  snprintf(key, sizeof key, "many/t%d", w->id);
  int ok = prt_store_set(s, key, mine, len, err, sizeof err) == 0;
  free(mine);
  int64_t v = 0;
  ok = ok && prt_store_add(s, "many/count", 1, &v, err, sizeof err) == 0;
  ok = ok && prt_store_barrier(s, "test", "many", w->id, w->n, 20, err, sizeof err) == 0;
  for (int j = 0; ok && j < w->n; j++) {
    size_t got = 0, want = 100 + 977 * (size_t)j;
    snprintf(key, sizeof key, "many/t%d", j);
    unsigned char *val = prt_store_get(s, key, &got, 5, err, sizeof err), *exp = pattern(want, j);
    if (!val) ok = 0;
    else if (got != want || memcmp(val, exp, want) != 0) {
      snprintf(err, sizeof err, "client %d read a wrong value for %s", w->id, key);
      ok = 0;
    }
    free(val);
    free(exp);
  }
  /* the same barrier name again: a new round, not the finished one */
  ok = ok && prt_store_barrier(s, "test", "many", w->id, w->n, 20, err, sizeof err) == 0;
  char *count = ok ? prt_store_get(s, "many/count", NULL, 5, err, sizeof err) : NULL;
  if (count && atoi(count) != w->n) {
    snprintf(err, sizeof err, "client %d saw the counter at %s after the barrier", w->id, count);
    ok = 0;
  }
  if (!count) ok = 0;
  free(count);
  prt_store_close(s);
  w->ok = ok;
  snprintf(w->err, sizeof w->err, "%s", err);
  return NULL;
}

/* arrives at barrier "partial" of a world of 3 (the third never comes) */
static void *partial_client(void *arg) {
  Worker *w = arg;
  char err[512] = "";
  PrtStore *s = prt_store_open("127.0.0.1", w->port, 0, 10, err, sizeof err);
  if (s) {
    w->ok = prt_store_barrier(s, "test", "partial", w->id, 3, 0.5, err, sizeof err) == 0;
    prt_store_close(s);
  }
  snprintf(w->err, sizeof w->err, "%s", err);
  return NULL;
}

/* sets key "late" after w->delay seconds */
static void *late_setter(void *arg) {
  Worker *w = arg;
  char err[512] = "";
  PrtStore *s = prt_store_open("127.0.0.1", w->port, 0, 10, err, sizeof err);
  __atomic_store_n(&w->connected, 1, __ATOMIC_SEQ_CST);
  if (s) {
    sleep_s(w->delay);
    w->ok = prt_store_set(s, "late", "at last", 7, err, sizeof err) == 0;
    prt_store_close(s);
  }
  snprintf(w->err, sizeof w->err, "%s", err);
  return NULL;
}

/* connects before anything serves the port, and must get through */
static void *early_client(void *arg) {
  Worker *w = arg;
  char err[512] = "";
  PrtStore *s = prt_store_open("localhost", w->port, 0, 10, err, sizeof err);
  if (s) {
    char *v = prt_store_get(s, "served", NULL, 5, err, sizeof err);
    w->ok = v && strcmp(v, "yes") == 0;
    free(v);
    prt_store_close(s);
  }
  snprintf(w->err, sizeof w->err, "%s", err);
  return NULL;
}

static int read_full(int fd, unsigned char *p, size_t n) {
  while (n) {
    ssize_t k = recv(fd, p, n, 0);
    if (k <= 0) return -1;
    p += k, n -= (size_t)k;
  }
  return 0;
}

/* A server from before PING (it drops a client that sends one): it closes
 * the first connection after VALIDATE + PING, then on the second expects
 * VALIDATE alone and answers one CHECK with READY. */
static void *old_server(void *arg) {
  Worker *w = arg;
  int lfd = w->id;
  unsigned char b[64];
  int fd = accept(lfd, NULL, NULL);
  int ok = fd >= 0 && read_full(fd, b, 10) == 0 && b[0] == 0 && b[5] == 13;
  if (fd >= 0) close(fd);
  fd = accept(lfd, NULL, NULL);
  /* VALIDATE, then CHECK of one key "k": 1 + 8 + 8 + 1 bytes */
  ok = ok && fd >= 0 && read_full(fd, b, 5) == 0 && b[0] == 0 && read_full(fd, b, 18) == 0 && b[0] == 5 && b[17] == 'k';
  if (ok) ok = send(fd, "\0", 1, MSG_NOSIGNAL) == 1;
  if (fd >= 0) {
    recv(fd, b, 1, 0); /* until the client closes */
    close(fd);
  }
  w->ok = ok;
  return NULL;
}

/* a port nothing listens on right now */
static int unused_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  close(fd);
  return ntohs(a.sin_port);
}

static void test_local(void) {
  char err[512] = "", want[512];
  int fds_before = open_fds();
  PrtStore *srv = prt_store_open("127.0.0.1", 0, 1, 10, err, sizeof err);
  CHECK(srv != NULL, "serving on port 0: %s", err);
  if (!srv) return;
  int port = prt_store_port(srv);
  CHECK(port > 0 && port < 65536, "served port %d", port);
  PrtStore *c = prt_store_open("127.0.0.1", port, 0, 10, err, sizeof err);
  CHECK(c != NULL, "client: %s", err);
  if (!c) {
    prt_store_close(srv);
    return;
  }

  /* set / get, with NUL bytes, empty values and an appended NUL */
  CHECK(prt_store_set(srv, "k1", "a\0b", 3, err, sizeof err) == 0, "set k1: %s", err);
  size_t len = 99;
  char *v = prt_store_get(c, "k1", &len, 5, err, sizeof err);
  CHECK(v && len == 3 && memcmp(v, "a\0b", 4) == 0, "get k1 from another client: len %zu (%s)", len, err);
  free(v);
  CHECK(prt_store_set(c, "empty", "", 0, err, sizeof err) == 0, "set empty: %s", err);
  v = prt_store_get(srv, "empty", &len, 5, err, sizeof err);
  CHECK(v && len == 0 && v[0] == 0, "an empty value: %s", err);
  free(v);
  CHECK(prt_store_set(c, "k1", "new", 3, err, sizeof err) == 0, "overwrite k1: %s", err);
  v = prt_store_get(c, "k1", &len, 5, err, sizeof err);
  CHECK(v && len == 3 && strcmp(v, "new") == 0, "k1 overwritten: %s", v ? v : err);
  free(v);

  /* add */
  int64_t n = 0;
  CHECK(prt_store_add(c, "ctr", 5, &n, err, sizeof err) == 0 && n == 5, "add to a new key: %lld (%s)", (long long)n, err);
  CHECK(prt_store_add(srv, "ctr", -7, &n, err, sizeof err) == 0 && n == -2, "add -7: %lld (%s)", (long long)n, err);
  CHECK(prt_store_add(c, "ctr", 0, &n, err, sizeof err) == 0 && n == -2, "add 0 reads: %lld", (long long)n);
  v = prt_store_get(c, "ctr", &len, 5, err, sizeof err);
  CHECK(v && strcmp(v, "-2") == 0, "the counter is decimal text: %s", v ? v : err);
  free(v);

  /* check */
  const char *both[] = {"k1", "ctr"}, *some[] = {"k1", "absent"};
  CHECK(prt_store_check(c, both, 2, err, sizeof err) == 1, "check of present keys");
  CHECK(prt_store_check(c, some, 2, err, sizeof err) == 0, "check with a missing key");
  CHECK(prt_store_check(c, both, 0, err, sizeof err) == 1, "check of no keys");

  /* a missing key times out, with the message, and the connection survives */
  double t0 = now_s();
  v = prt_store_get(c, "nope", &len, 0.3, err, sizeof err);
  double dt = now_s() - t0;
  snprintf(want, sizeof want, "store at 127.0.0.1:%d: timed out after 0.3 s waiting for key 'nope'", port);
  CHECK(v == NULL && strcmp(err, want) == 0, "get of a missing key: '%s', expected '%s'", err, want);
  CHECK(dt >= 0.29 && dt < 2.5, "the get waited %.2f s for a 0.3 s timeout", dt);
  v = prt_store_get(c, "k1", &len, 5, err, sizeof err);
  CHECK(v && strcmp(v, "new") == 0, "the client works after a timed-out get: %s", v ? v : err);
  free(v);

  /* a get that waits for another client's set */
  Worker lw = {.port = port, .delay = 0.3};
  pthread_t th;
  pthread_create(&th, NULL, late_setter, &lw);
  t0 = now_s();
  v = prt_store_get(c, "late", &len, 10, err, sizeof err);
  dt = now_s() - t0;
  pthread_join(th, NULL);
  CHECK(lw.ok, "late setter: %s", lw.err);
  CHECK(v && strcmp(v, "at last") == 0 && dt > 0.2, "a get waits for the set (%.2f s): %s", dt, v ? v : err);
  free(v);

  /* values of several MiB, and one over PyTorch's 8 MiB limit */
  size_t big = 7u << 20;
  unsigned char *p = pattern(big, 4);
  CHECK(prt_store_set(c, "big", p, big, err, sizeof err) == 0, "set 7 MiB: %s", err);
  v = prt_store_get(srv, "big", &len, 10, err, sizeof err);
  CHECK(v && len == big && memcmp(v, p, big) == 0, "get 7 MiB: len %zu (%s)", len, err);
  free(v);
  free(p);
  p = pattern((8u << 20) + 1, 0);
  snprintf(want, sizeof want,
           "store at 127.0.0.1:%d: value of 8388609 bytes for key 'huge' is over the 8388608 bytes a TCPStore takes", port);
  CHECK(prt_store_set(c, "huge", p, (8u << 20) + 1, err, sizeof err) == -1 && strcmp(err, want) == 0,
        "a value over 8 MiB: '%s'", err);
  free(p);

  /* many clients at once, each in its own thread, meeting at barriers */
  enum { NT = 16 };
  Worker w[NT];
  pthread_t t[NT];
  for (int i = 0; i < NT; i++) {
    w[i] = (Worker){.port = port, .id = i, .n = NT};
    pthread_create(&t[i], NULL, many_client, &w[i]);
  }
  for (int i = 0; i < NT; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < NT; i++) CHECK(w[i].ok, "client %d of %d: %s", i, NT, w[i].err);

  /* a barrier where rank 2 of 3 never comes */
  Worker pw[2];
  pthread_t pt[2];
  t0 = now_s();
  for (int i = 0; i < 2; i++) {
    pw[i] = (Worker){.port = port, .id = i};
    pthread_create(&pt[i], NULL, partial_client, &pw[i]);
  }
  for (int i = 0; i < 2; i++) pthread_join(pt[i], NULL);
  dt = now_s() - t0;
  for (int i = 0; i < 2; i++)
    CHECK(!pw[i].ok && strcmp(pw[i].err, "rank 2 of 3 did not arrive at 'partial' within 0.5 s") == 0,
          "barrier without rank 2: '%s'", pw[i].err);
  CHECK(dt < 5, "the barrier timeout took %.2f s", dt);

  /* garbage on a raw connection: the server drops that client only */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "raw connect");
  CHECK(send(fd, "GET / HTTP/1.0\r\n\r\n", 18, MSG_NOSIGNAL) == 18, "raw send");
  char junk;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  CHECK(recv(fd, &junk, 1, 0) == 0, "the server closes a connection that does not VALIDATE");
  close(fd);
  v = prt_store_get(c, "k1", &len, 5, err, sizeof err);
  CHECK(v && strcmp(v, "new") == 0, "the store works after a bad client: %s", v ? v : err);
  free(v);

  /* serving a port already served */
  PrtStore *dup = prt_store_open("127.0.0.1", port, 1, 1, err, sizeof err);
  snprintf(want, sizeof want, "store at 127.0.0.1:%d: cannot serve on port %d: Address already in use", port, port);
  CHECK(dup == NULL && strcmp(err, want) == 0, "serving a busy port: '%s'", err);
  prt_store_close(dup);

  /* closing the server waits for the last client to go */
  Worker cw = {.port = port, .delay = 0.4};
  prt_store_close(c);
  pthread_create(&th, NULL, late_setter, &cw); /* connects, sets after 0.4 s, leaves */
  while (!__atomic_load_n(&cw.connected, __ATOMIC_SEQ_CST)) sleep_s(0.001);
  t0 = now_s();
  prt_store_close(srv);
  dt = now_s() - t0;
  pthread_join(th, NULL);
  CHECK(cw.ok, "a client still working while the server closes: %s", cw.err);
  CHECK(dt > 0.3 && dt < 5, "closing the server waited %.2f s for its last client", dt);

  /* nothing listens: a clear error within the timeout */
  int free_port = unused_port();
  t0 = now_s();
  c = prt_store_open("127.0.0.1", free_port, 0, 0.5, err, sizeof err);
  dt = now_s() - t0;
  snprintf(want, sizeof want, "store at 127.0.0.1:%d: cannot connect within 0.5 s: Connection refused", free_port);
  CHECK(c == NULL && strcmp(err, want) == 0, "connecting to nothing: '%s'", err);
  CHECK(dt >= 0.45 && dt < 3, "gave up connecting after %.2f s", dt);

  /* a client that starts first keeps trying until the server comes */
  Worker ew = {.port = unused_port()};
  pthread_create(&th, NULL, early_client, &ew);
  sleep_s(0.4);
  srv = prt_store_open("127.0.0.1", ew.port, 1, 10, err, sizeof err);
  CHECK(srv != NULL, "serving a chosen port: %s", err);
  if (srv) CHECK(prt_store_set(srv, "served", "yes", 3, err, sizeof err) == 0, "set served: %s", err);
  pthread_join(th, NULL);
  CHECK(ew.ok, "a client started before the server: %s", ew.err);

  prt_store_close(srv);

  /* a server that goes away: errors, not hangs */
  srv = prt_store_open("127.0.0.1", 0, 1, 0.5, err, sizeof err);
  CHECK(srv != NULL, "serving: %s", err);
  if (srv) {
    c = prt_store_open("127.0.0.1", prt_store_port(srv), 0, 5, err, sizeof err);
    CHECK(c != NULL, "client: %s", err);
    t0 = now_s();
    prt_store_close(srv); /* gives up on c after 0.5 s */
    dt = now_s() - t0;
    CHECK(dt >= 0.45 && dt < 3, "closing the server gave up on a lingering client after %.2f s", dt);
    if (c) {
      v = prt_store_get(c, "k1", &len, 1, err, sizeof err);
      CHECK(v == NULL && strstr(err, "store at 127.0.0.1:") == err, "get from a stopped server: '%s'", err);
      CHECK(prt_store_set(c, "x", "1", 1, err, sizeof err) == -1 &&
                strstr(err, "the connection was lost after an earlier error") != NULL,
            "set after the loss: '%s'", err);
      prt_store_close(c);
    }
  }

  /* a server that drops clients sending PING: connect again without it */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t ll = sizeof la;
  bind(lfd, (struct sockaddr *)&la, sizeof la);
  listen(lfd, 4);
  getsockname(lfd, (struct sockaddr *)&la, &ll);
  Worker ow = {.id = lfd};
  pthread_create(&th, NULL, old_server, &ow);
  c = prt_store_open("127.0.0.1", ntohs(la.sin_port), 0, 5, err, sizeof err);
  CHECK(c != NULL, "connecting to a server from before PING: %s", err);
  const char *kk[] = {"k"};
  if (c) CHECK(prt_store_check(c, kk, 1, err, sizeof err) == 1, "check on the old server: %s", err);
  prt_store_close(c);
  pthread_join(th, NULL);
  close(lfd);
  CHECK(ow.ok, "the old server saw VALIDATE + PING, then VALIDATE alone and a CHECK");

  CHECK(open_fds() == fds_before, "%d file descriptors open after the tests, %d before", open_fds(), fds_before);
}

/* ------------------------------------------------------ python client */

static void test_python_client(const char *python, const char *script) {
  char err[512] = "";
  PrtStore *s = prt_store_open("127.0.0.1", 0, 1, 30, err, sizeof err);
  CHECK(s != NULL, "serving: %s", err);
  if (!s) return;
  int port = prt_store_port(s);
  unsigned char *p = pattern(3u << 20, 1);
  int64_t n = 0;
  CHECK(prt_store_set(s, "c/hello", "from C\0with a NUL", 17, err, sizeof err) == 0, "set c/hello: %s", err);
  CHECK(prt_store_set(s, "c/big", p, 3u << 20, err, sizeof err) == 0, "set c/big: %s", err);
  CHECK(prt_store_add(s, "c/counter", 42, &n, err, sizeof err) == 0 && n == 42, "add c/counter: %s", err);
  free(p);

  char ports[16];
  snprintf(ports, sizeof ports, "%d", port);
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    execlp(python, python, script, "--port", ports, "--c-keys", (char *)NULL);
    fprintf(stderr, "test_store: cannot run %s: %s\n", python, strerror(errno));
    _exit(127);
  }
  int status = 0;
  double t0 = now_s();
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (now_s() - t0 > 120) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      CHECK(0, "store_client.py ran for more than 120 s");
      break;
    }
    sleep_s(0.02);
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "store_client.py failed (status %d)", status);

  /* what the Python client left */
  size_t len = 0;
  char *v = prt_store_get(s, "py/done", &len, 1, err, sizeof err);
  CHECK(v != NULL, "py/done: %s", err);
  free(v);
  v = prt_store_get(s, "py/hello", &len, 1, err, sizeof err);
  CHECK(v && len == 13 && memcmp(v, "from Python\0!", 13) == 0, "py/hello: len %zu (%s)", len, err);
  free(v);
  p = pattern(5u << 20, 2);
  v = prt_store_get(s, "py/big", &len, 1, err, sizeof err);
  CHECK(v && len == (5u << 20) && memcmp(v, p, len) == 0, "py/big: len %zu (%s)", len, err);
  free(v);
  free(p);
  v = prt_store_get(s, "c/counter", &len, 1, err, sizeof err);
  CHECK(v && strcmp(v, "142") == 0, "c/counter after the Python ADD: %s", v ? v : err);
  free(v);
  prt_store_close(s);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "env") == 0) test_env();
  else if (argc >= 2 && strcmp(argv[1], "local") == 0) test_local();
  else if (argc >= 4 && strcmp(argv[1], "python-client") == 0) test_python_client(argv[2], argv[3]);
  else {
    fprintf(stderr, "usage: test_store env | local | python-client PYTHON store_client.py\n");
    return 2;
  }
  return check_summary();
}
