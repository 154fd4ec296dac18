/* env.c — who this process is, read from the launcher's environment (see
 * env.h for the contract: which launcher's variables win, the defaults, and
 * what counts as an error). */
#include "runtime/env.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A variable that is unset or empty counts as absent (as torch does). */
static const char *env_get(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* Strict integer: optional sign, decimal digits, nothing else (no spaces,
 * no "0x", no "1.0"). Writes a one-line error naming the variable. */
static int parse_int(const char *name, const char *v, long lo, long hi, int *out, char *err, size_t errlen) {
  const char *p = v;
  if (*p == '+' || *p == '-') p++;
  if (*p < '0' || *p > '9') {
    snprintf(err, errlen, "%s=\"%s\" is not an integer", name, v);
    return -1;
  }
  for (; *p; p++)
    if (*p < '0' || *p > '9') {
      snprintf(err, errlen, "%s=\"%s\" is not an integer", name, v);
      return -1;
    }
  errno = 0;
  long x = strtol(v, NULL, 10);
  if (errno == ERANGE || x < lo || x > hi) {
    snprintf(err, errlen, "%s=\"%s\" is out of range [%ld, %ld]", name, v, lo, hi);
    return -1;
  }
  *out = (int)x;
  return 0;
}

/* Reads an optional integer variable: 0 absent (out untouched), 1 read, -1 bad. */
static int opt_int(const char *name, long lo, long hi, int *out, char *err, size_t errlen) {
  const char *v = env_get(name);
  if (!v) return 0;
  return parse_int(name, v, lo, hi, out, err, errlen) < 0 ? -1 : 1;
}

/* Slurm's per-node task counts when --ntasks-per-node was not given:
 * SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE look like "4(x2),3",
 * indexed by SLURM_NODEID. Returns the count for this node, or 0 when the
 * variables are absent or not in that form. */
static int slurm_tasks_on_node(void) {
  const char *list = env_get("SLURM_STEP_TASKS_PER_NODE");
  if (!list) list = env_get("SLURM_TASKS_PER_NODE");
  const char *node_s = env_get("SLURM_NODEID");
  if (!list || !node_s) return 0;
  char *end;
  long node = strtol(node_s, &end, 10);
  if (*end || node < 0) return 0;
  const char *p = list;
  while (*p) {
    long n = strtol(p, &end, 10), reps = 1;
    if (end == p || n <= 0 || n > INT_MAX) return 0;
    p = end;
    if (p[0] == '(' && p[1] == 'x') {
      reps = strtol(p + 2, &end, 10);
      if (end == p + 2 || *end != ')' || reps <= 0) return 0;
      p = end + 1;
    }
    if (node < reps) return (int)n;
    node -= reps;
    if (*p == ',') p++;
    else if (*p) return 0;
  }
  return 0;
}

typedef struct Launcher {
  const char *name, *rank, *world, *local_rank, *local_world;
} Launcher;

static const Launcher launchers[] = {
  {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
  {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
  {"mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
  {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
};

int prt_env_read(PrtEnv *e, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  e->rank = 0, e->world = 1, e->local_rank = 0, e->local_world = 1;
  e->launcher = "single";
  const Launcher *L = NULL;
  for (size_t i = 0; i < sizeof launchers / sizeof launchers[0]; i++)
    if (env_get(launchers[i].rank) && env_get(launchers[i].world)) {
      L = &launchers[i];
      break;
    }

  if (L) {
    e->launcher = L->name;
    if (opt_int(L->world, 1, INT_MAX, &e->world, err, errlen) < 0) return -1;
    if (opt_int(L->rank, INT_MIN, INT_MAX, &e->rank, err, errlen) < 0) return -1;
    if (e->rank < 0 || e->rank >= e->world) {
      snprintf(err, errlen, "%s=%d is outside [0, %d) (%s=%d)", L->rank, e->rank, e->world, L->world, e->world);
      return -1;
    }
    /* without per-node variables: as if every rank were on this node */
    e->local_rank = e->rank, e->local_world = e->world;
    int r = opt_int(L->local_world, 1, INT_MAX, &e->local_world, err, errlen);
    if (r < 0) return -1;
    if (r == 0 && strcmp(L->name, "slurm") == 0) {
      int n = slurm_tasks_on_node();
      if (n > 0) e->local_world = n;
    }
    if (e->local_world > e->world) {
      snprintf(err, errlen, "%s=%d is larger than %s=%d", L->local_world, e->local_world, L->world, e->world);
      return -1;
    }
    r = opt_int(L->local_rank, INT_MIN, INT_MAX, &e->local_rank, err, errlen);
    if (r < 0) return -1;
    if (r == 0 && e->local_world != e->world) {
      snprintf(err, errlen, "%s is not set although %s=%d differs from %s=%d", L->local_rank, L->local_world,
               e->local_world, L->world, e->world);
      return -1;
    }
    if (e->local_rank < 0 || e->local_rank >= e->local_world) {
      snprintf(err, errlen, "%s=%d is outside [0, %d) (%s=%d)", L->local_rank, e->local_rank, e->local_world,
               L->local_world, e->local_world);
      return -1;
    }
  }

  const char *addr = env_get("MASTER_ADDR");
  if (!addr) addr = "127.0.0.1";
  if (strlen(addr) >= sizeof e->master_addr) {
    snprintf(err, errlen, "MASTER_ADDR is longer than %zu characters", sizeof e->master_addr - 1);
    return -1;
  }
  strcpy(e->master_addr, addr);
  e->master_port = 29500;
  if (opt_int("MASTER_PORT", 1, 65535, &e->master_port, err, errlen) < 0) return -1;

  const char *run_id = env_get("TORCHELASTIC_RUN_ID");
  if (run_id && strlen(run_id) >= sizeof e->run_id) {
    snprintf(err, errlen, "TORCHELASTIC_RUN_ID is longer than %zu characters", sizeof e->run_id - 1);
    return -1;
  }
  strcpy(e->run_id, run_id ? run_id : "none");
  if (opt_int("TORCHELASTIC_RESTART_COUNT", 0, INT_MAX, &e->restart, err, errlen) < 0) return -1;

  /* torchrun's agent serves the store when it says so; versions that do not
   * set TORCHELASTIC_USE_AGENT_STORE always did when they set a run id */
  if (L && strcmp(L->name, "torchrun") == 0) {
    const char *use = getenv("TORCHELASTIC_USE_AGENT_STORE");
    e->has_agent_store = use ? strcmp(use, "True") == 0 : run_id != NULL;
  }

  e->timeout_s = 60;
  const char *t = env_get("PIPEC_TIMEOUT");
  if (t) {
    char *end;
    errno = 0;
    double x = strtod(t, &end);
    if (end == t || *end || strspn(t, "0123456789.eE+-") != strlen(t) || !isfinite(x)) {
      snprintf(err, errlen, "PIPEC_TIMEOUT=\"%s\" is not a number of seconds", t);
      return -1;
    }
    if (!(x > 0)) {
      snprintf(err, errlen, "PIPEC_TIMEOUT=\"%s\" must be more than 0 seconds", t);
      return -1;
    }
    e->timeout_s = x;
  }
  return 0;
}
