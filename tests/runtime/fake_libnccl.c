/* fake_libnccl.c — a stand-in for libnccl.so.2 for tests/runtime/test_device.c
 * and the CUDA emulator (tests/gpu/emulator), on host memory, non-blocking
 * like the real library: init, split, collectives and group ends return
 * ncclInProgress and ncclCommGetAsyncError reports ncclInProgress a few
 * times before ncclSuccess. The config must be exactly NCCL_CONFIG_INITIALIZER
 * of NCCL 2.28 with blocking = 0.
 *
 * Ranks are processes on one machine that really communicate. The unique id
 * is "fake-nccl-id-42", a NUL, then a directory name (created when first
 * used); each communicator has a subdirectory there ("w" for the world,
 * "w.<split number>.<color>" for a split) holding messages, each a file
 * written under a temporary name and renamed (atomic), polled with short
 * sleeps. The work is done when a call (or the group end) returns, as the
 * emulator runs the next kernel at once; blocking waits are bounded by
 * FAKE_NCCL_TIMEOUT seconds (default 120, then ncclSystemError) and end at
 * once with ncclRemoteError when the awaited peer process is gone.
 *   ncclAllReduce (float32 sum): every rank sends its data to every other
 *     and sums all in rank order, so the results are bitwise identical;
 *     in a group it runs at the call (its messages never wait to be taken).
 *   ncclSend/ncclRecv: rendezvous; a send is done when the receiver took
 *     it (a receive of another size is ncclInvalidUsage on both sides).
 *     Outside a group a call blocks until matched, so two ranks that both
 *     send first deadlock as with NCCL; ncclGroupEnd posts the group's sends,
 *     completes its receives, then waits for its sends to be taken. FIFO
 *     per (communicator, sender, receiver).
 *   ncclCommSplit: all-gather of (color, key, pid) over the parent.
 *   ncclCommFinalize: a barrier of the ranks that joined; the last rank out
 *     of ncclCommDestroy removes the communicator's files and directory.
 *   Init only writes the rank's pid file, it does not wait for the others
 *   as NCCL's does (test_device inits rank 0 of 2 alone and frees it):
 *   ranks meet at their first collective or message.
 * Environment:
 *   FAKE_NCCL_HANG=1      communicators never finish initialising
 *   FAKE_NCCL_FAIL=SYM:N  SYM returns N (and sets the last error)
 *   FAKE_NCCL_TIMEOUT=S   the bound of blocking waits
 * ncclCommAbort writes "fake-nccl: ncclCommAbort" to stderr.
 * fake_nccl_*() let the test look inside. Includes no CUDA/NCCL header
 * (fake_nccl.h has the few types). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fake_nccl.h"

#define EXPORT __attribute__((visibility("default")))

/* the id: this tag (what test_device reads back as a C string), its NUL,
 * then the job's directory */
#define ID_TAG "fake-nccl-id-42"
#define ID_DIR (sizeof ID_TAG)

typedef struct Comm {
  struct Comm *next; /* in the list of those this process holds */
  int polls;         /* ncclInProgress answers left */
  int color;
  int rank, nranks;
  int world;         /* made by init: a rank without a pid file has not joined yet */
  int nsplits;       /* splits of this communicator so far (names the children) */
  long colls;        /* collectives so far: the same sequence on every rank */
  long *sent, *rcvd; /* point-to-point messages so far, per peer */
  pid_t *pids;       /* per rank; 0 while unknown */
  ncclResult_t error;
  char dir[128];       /* the job's directory from the unique id ("" if none) */
  char path[PATH_MAX]; /* this communicator's directory */
} Comm;

static long live, allreduces, polls_total, last_count = -1;
static char last_error[256];
static char last_id[128];
static int in_group;
enum { MAX_OPS = 64 };
static struct {
  Comm *c;
  int send, peer;
  void *buf;
  size_t bytes;
  long seq;
} ops[MAX_OPS];
static int nops;
static Comm *group_comm; /* the last communicator used in the open group */

/* a message's header; p2p messages use bytes only */
typedef struct {
  uint64_t bytes, count;
  int32_t kind, pid;
} Header;
enum { ALLREDUCE = 1, SPLIT = 2 };
static const char *kind_name(int k) { return k == ALLREDUCE ? "ncclAllReduce" : k == SPLIT ? "ncclCommSplit" : "?"; }

static ncclResult_t fail(Comm *c, ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ncclResult_t fail(Comm *c, ncclResult_t r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  if (c) c->error = r;
  return r;
}

static ncclResult_t injected(const char *sym) {
  const char *v = getenv("FAKE_NCCL_FAIL");
  size_t n = strlen(sym);
  if (v && !strncmp(v, sym, n) && v[n] == ':') return fail(NULL, atoi(v + n + 1), "fake: %s failed", sym);
  return Success;
}
#define INJECT(sym)                                                                                                    \
  do {                                                                                                                 \
    ncclResult_t r_ = injected(sym);                                                                                   \
    if (r_) return r_;                                                                                                 \
  } while (0)

static int hang(void) {
  const char *v = getenv("FAKE_NCCL_HANG");
  return v && *v == '1';
}
static double timeout_s(void) {
  const char *v = getenv("FAKE_NCCL_TIMEOUT");
  return v && *v ? atof(v) : 120.0;
}
static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ------------------------------------------------------------ files */

static void file_name(const Comm *c, char *out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void file_name(const Comm *c, char *out, const char *fmt, ...) {
  int n = snprintf(out, PATH_MAX, "%s/", c->path);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out + n, (size_t)(PATH_MAX - n), fmt, ap);
  va_end(ap);
}
static int exists(const char *f) { return access(f, F_OK) == 0; }

static int write_all(int fd, const void *p, size_t n) {
  for (const char *s = p; n;) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    s += w, n -= (size_t)w;
  }
  return 0;
}
static int read_all(int fd, void *p, size_t n) {
  for (char *s = p; n;) {
    ssize_t r = read(fd, s, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    s += r, n -= (size_t)r;
  }
  return 0;
}

/* writes head and data as `name` in c's directory (made if missing: the
 * last rank out of an earlier use may have removed it), atomically */
static ncclResult_t put(Comm *c, const char *name, const void *head, size_t hn, const void *data, size_t n) {
  static unsigned seq;
  if (!c->dir[0])
    return fail(c, InvalidUsage, "fake: rank %d of %d: the unique id names no directory", c->rank, c->nranks);
  char tmp[PATH_MAX], dst[PATH_MAX];
  file_name(c, tmp, ".t.%d.%u", (int)getpid(), seq++);
  file_name(c, dst, "%s", name);
  int fd = -1;
  for (int tries = 0; fd < 0 && tries < 3; tries++) {
    if (mkdir(c->dir, 0700) && errno != EEXIST) break;
    if (mkdir(c->path, 0700) && errno != EEXIST) break;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
  }
  if (fd < 0) return fail(c, SystemError, "fake: creating %s: %s", tmp, strerror(errno));
  int bad = write_all(fd, head, hn) || write_all(fd, data, n);
  if (close(fd) || bad || rename(tmp, dst)) {
    int e = errno;
    unlink(tmp);
    return fail(c, SystemError, "fake: writing %s: %s", dst, strerror(e));
  }
  return Success;
}

/* the pid of `rank`, from the split that made c or the world's pid files */
static pid_t pid_of(Comm *c, int rank) {
  if (!c->pids[rank] && c->world) {
    char f[PATH_MAX];
    file_name(c, f, "pid.%d", rank);
    FILE *p = fopen(f, "r");
    int v = 0;
    if (p && fscanf(p, "%d", &v) == 1) c->pids[rank] = v;
    if (p) fclose(p);
  }
  return c->pids[rank];
}
static int joined(Comm *c, int rank) { return pid_of(c, rank) != 0; }

/* a process that is gone: no such pid, or a zombie nobody reaped yet */
static int gone(pid_t pid) {
  if (kill(pid, 0) && errno == ESRCH) return 1;
  char f[64], buf[512];
  snprintf(f, sizeof f, "/proc/%d/stat", (int)pid);
  FILE *p = fopen(f, "r");
  if (!p) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, p);
  fclose(p);
  buf[n] = 0;
  const char *s = strrchr(buf, ')');
  return s && s[1] == ' ' && (s[2] == 'Z' || s[2] == 'X');
}

/* polls until ready(c, peer, file), bounded by the timeout and peer's life */
typedef int (*Ready)(Comm *c, int peer, const char *file);
static int ready_exists(Comm *c, int peer, const char *f) { return exists(f); }
static int ready_absent(Comm *c, int peer, const char *f) { return !exists(f); }
static int ready_fin(Comm *c, int peer, const char *f) { return exists(f) || (c->world && !joined(c, peer)); }

static ncclResult_t wait_for(Comm *c, int peer, const char *op, Ready ready, const char *file) {
  double t0 = now_s(), limit = timeout_s(), checked = t0;
  long ns = 20000;
  while (!ready(c, peer, file)) {
    double t = now_s();
    if (t - t0 > limit)
      return fail(c, SystemError, "fake: rank %d waited %g s for rank %d (%s)", c->rank, limit, peer, op);
    if (t - checked > 0.02 && peer != c->rank) {
      checked = t;
      pid_t pid = pid_of(c, peer);
      if (pid && gone(pid)) return fail(c, RemoteError, "fake: rank %d (pid %d) is gone", peer, (int)pid);
    }
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
    if (ns < 2000000) ns *= 2;
  }
  return Success;
}

/* removes every file of c's directory, the directory, and the job's
 * directory once no other communicator's is left there */
static void remove_all(Comm *c) {
  DIR *d = opendir(c->path);
  if (d) {
    struct dirent *e;
    char f[PATH_MAX];
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) file_name(c, f, "%s", e->d_name), unlink(f);
    closedir(d);
  }
  rmdir(c->path);
  rmdir(c->dir);
}

/* This rank is done with c: it writes out.RANK, and the last rank out
 * (every rank that joined is out or gone) removes c's directory. */
static void leave(Comm *c) {
  int last = 1;
  if (c->nranks > 1 && c->dir[0]) {
    char name[32], f[PATH_MAX];
    snprintf(name, sizeof name, "out.%d", c->rank);
    put(c, name, "", 0, NULL, 0);
    for (int p = 0; p < c->nranks && last; p++) {
      file_name(c, f, "out.%d", p);
      last = exists(f) || !joined(c, p) || (p != c->rank && gone(pid_of(c, p)));
    }
  }
  if (last && c->dir[0]) remove_all(c);
}

/* the communicators this process holds: a rank that exits without
 * destroying them (the runtime dies on an error) still leaves them, so
 * that the last process of a failed job removes the files too */
static struct Comm *held;
static void leave_held(void) {
  for (Comm *c = held; c; c = c->next)
    if (c->pids[c->rank] == getpid()) leave(c); /* not in a forked child */
}

/* ------------------------------------------------------- communicators */

static int config_ok(const Config *c) {
  const int U = INT_MIN;
  int ok = c && c->size == sizeof(Config) && c->magic == 0xcafebeef && c->version == 22809 && c->blocking == 0 &&
           c->cgaClusterSize == U && c->minCTAs == U && c->maxCTAs == U && !c->netName && c->splitShare == U &&
           c->trafficClass == U && !c->commName && c->collnetEnable == U && c->CTAPolicy == U && c->shrinkShare == U &&
           c->nvlsCTAs == U && c->nChannelsPerNetPeer == U && c->nvlinkCentricSched == U;
  if (!ok) fail(NULL, InvalidArgument, "fake: config is not NCCL_CONFIG_INITIALIZER with blocking = 0");
  return ok;
}

static Comm *comm_new(int color, int rank, int nranks, const char *dir, const char *name) {
  Comm *c = calloc(1, sizeof *c);
  c->sent = calloc((size_t)nranks, sizeof *c->sent);
  c->rcvd = calloc((size_t)nranks, sizeof *c->rcvd);
  c->pids = calloc((size_t)nranks, sizeof *c->pids);
  if (!c->sent || !c->rcvd || !c->pids) abort();
  live++;
  static int registered;
  if (!registered) registered = 1, atexit(leave_held);
  c->next = held, held = c;
  c->polls = hang() ? INT_MAX : 3;
  c->color = color, c->rank = rank, c->nranks = nranks;
  c->pids[rank] = getpid();
  snprintf(c->dir, sizeof c->dir, "%s", dir);
  snprintf(c->path, sizeof c->path, "%s/%s", dir, name);
  return c;
}
static void comm_free(Comm *c) {
  live--;
  for (Comm **p = &held; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  free(c->sent), free(c->rcvd), free(c->pids), free(c);
}

EXPORT ncclResult_t ncclGetVersion(int *v) {
  *v = 22809;
  return Success;
}
EXPORT const char *ncclGetErrorString(ncclResult_t r) {
  switch (r) {
  case 0: return "no error";
  case 2: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
  case 4: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
  case 5: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
  case 6: return "remote process exited or there was a network error";
  case 7: return "NCCL operation in progress";
  default: return "unknown result code";
  }
}
EXPORT const char *ncclGetLastError(void *comm) { return last_error; }

EXPORT ncclResult_t ncclGetUniqueId(UniqueId *id) {
  static unsigned counter;
  INJECT("ncclGetUniqueId");
  memset(id, 0, sizeof *id);
  memcpy(id->internal, ID_TAG, sizeof ID_TAG);
  const char *t = getenv("TMPDIR");
  if (!t || !*t || strlen(t) > 64) t = "/tmp";
  snprintf(id->internal + ID_DIR, sizeof id->internal - ID_DIR, "%s/fake-nccl-%d-%ld-%u", t, (int)getpid(),
           (long)time(NULL), counter++);
  return Success;
}

EXPORT ncclResult_t ncclCommInitRankConfig(void **comm, int nranks, UniqueId id, int rank, Config *cfg) {
  INJECT("ncclCommInitRankConfig");
  if (!config_ok(cfg)) return InvalidArgument;
  if (nranks < 1 || rank < 0 || rank >= nranks) return fail(NULL, InvalidArgument, "fake: rank %d of %d", rank, nranks);
  memcpy(last_id, id.internal, sizeof last_id);
  id.internal[sizeof id.internal - 1] = 0;
  const char *dir = memcmp(id.internal, ID_TAG, sizeof ID_TAG) ? "" : id.internal + ID_DIR;
  Comm *c = comm_new(0, rank, nranks, dir, "w");
  c->world = 1;
  if (nranks > 1 && *dir) { /* joins: peers learn this rank's pid */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    char name[32];
    snprintf(name, sizeof name, "pid.%d", rank);
    ncclResult_t r = put(c, name, pid, (size_t)n, NULL, 0);
    if (r) {
      comm_free(c);
      return r;
    }
  }
  *comm = c;
  return InProgress;
}

/* A collective's exchange: sends `mine` to every other rank, then calls
 * take() with every rank's data in rank order (mine for this rank). */
static ncclResult_t exchange(Comm *c, int kind, size_t count, const void *mine, size_t bytes,
                             void (*take)(void *arg, int rank, const void *data), void *arg) {
  long k = c->colls++;
  Header h = {bytes, count, kind, (int32_t)getpid()};
  char name[96], f[PATH_MAX];
  for (int p = 0; p < c->nranks; p++) {
    if (p == c->rank) continue;
    snprintf(name, sizeof name, "g.%ld.%d.%d", k, c->rank, p);
    ncclResult_t r = put(c, name, &h, sizeof h, mine, bytes);
    if (r) return r;
  }
  void *buf = malloc(bytes ? bytes : 1);
  ncclResult_t r = buf ? Success : fail(c, SystemError, "fake: out of memory");
  for (int p = 0; p < c->nranks && !r; p++) {
    if (p == c->rank) {
      take(arg, p, mine);
      continue;
    }
    file_name(c, f, "g.%ld.%d.%d", k, p, c->rank);
    if ((r = wait_for(c, p, kind_name(kind), ready_exists, f))) break;
    Header ph;
    int fd = open(f, O_RDONLY);
    int bad = fd < 0 || read_all(fd, &ph, sizeof ph);
    if (!bad && (ph.kind != kind || ph.count != count))
      r = fail(c, InvalidUsage, "fake: rank %d: collective %ld is %s of %zu here but %s of %llu on rank %d", c->rank, k,
               kind_name(kind), count, kind_name(ph.kind), (unsigned long long)ph.count, p);
    else if (bad || read_all(fd, buf, bytes))
      r = fail(c, SystemError, "fake: reading %s: %s", f, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(f);
    if (!r) take(arg, p, buf);
  }
  free(buf);
  return r;
}

typedef struct {
  int *color, *key;
  pid_t *pid;
} SplitInfo;
static void take_split(void *arg, int rank, const void *data) {
  SplitInfo *s = arg;
  const int *v = data;
  s->color[rank] = v[0], s->key[rank] = v[1], s->pid[rank] = v[2];
}

/* old rank p's rank in its color: order by (key, old rank) */
static int split_rank(const SplitInfo *s, int n, int p) {
  int r = 0;
  for (int o = 0; o < n; o++)
    r += s->color[o] == s->color[p] && (s->key[o] < s->key[p] || (s->key[o] == s->key[p] && o < p));
  return r;
}

EXPORT ncclResult_t ncclCommSplit(void *comm, int color, int key, void **newcomm, Config *cfg) {
  INJECT("ncclCommSplit");
  Comm *c = comm;
  if (!c) return InvalidArgument;
  if (!config_ok(cfg)) return InvalidArgument;
  c->polls = 1;
  int n = c->nranks;
  SplitInfo s = {calloc((size_t)n, sizeof(int)), calloc((size_t)n, sizeof(int)), calloc((size_t)n, sizeof(pid_t))};
  if (!s.color || !s.key || !s.pid) abort();
  int mine[3] = {color, key, (int)getpid()};
  ncclResult_t res = n > 1 ? exchange(c, SPLIT, 3, mine, sizeof mine, take_split, &s) : Success;
  if (n == 1) take_split(&s, 0, mine);
  int split = c->nsplits++;
  *newcomm = NULL;
  if (!res && color != -1) {
    int nr = 0;
    for (int p = 0; p < n; p++) nr += s.color[p] == color;
    char name[PATH_MAX];
    snprintf(name, sizeof name, "%s.%d.%d", strrchr(c->path, '/') + 1, split, color);
    Comm *g = comm_new(color, split_rank(&s, n, c->rank), nr, c->dir, name);
    for (int p = 0; p < n; p++)
      if (s.color[p] == color) g->pids[split_rank(&s, n, p)] = s.pid[p];
    *newcomm = g;
  }
  free(s.color), free(s.key), free(s.pid);
  return res ? res : InProgress;
}
EXPORT ncclResult_t ncclCommGetAsyncError(void *comm, ncclResult_t *state) {
  Comm *c = comm;
  if (!c) return InvalidArgument;
  polls_total++;
  if (c->error)
    *state = c->error;
  else if (c->polls > 0) {
    if (c->polls != INT_MAX) c->polls--;
    *state = InProgress;
  } else
    *state = Success;
  return Success;
}
/* writes fin.RANK and waits for the fin file of every rank that joined */
EXPORT ncclResult_t ncclCommFinalize(void *comm) {
  Comm *c = comm;
  if (!c) return InvalidArgument;
  c->polls = 2;
  if (c->nranks > 1 && c->dir[0]) {
    char name[32], f[PATH_MAX];
    snprintf(name, sizeof name, "fin.%d", c->rank);
    ncclResult_t r = put(c, name, "", 0, NULL, 0);
    for (int p = 0; p < c->nranks && !r; p++) {
      file_name(c, f, "fin.%d", p);
      r = wait_for(c, p, "ncclCommFinalize", ready_fin, f);
    }
    if (r) return r;
  }
  return InProgress;
}
EXPORT ncclResult_t ncclCommDestroy(void *comm) {
  Comm *c = comm;
  if (!c) return InvalidArgument;
  if (c->polls) return InvalidUsage; /* not finalized */
  leave(c);
  comm_free(c);
  return Success;
}
EXPORT ncclResult_t ncclCommAbort(void *comm) {
  fprintf(stderr, "fake-nccl: ncclCommAbort\n");
  if (comm) leave(comm), comm_free(comm);
  return Success;
}

/* ---------------------------------------------------------- operations */

typedef struct {
  float *acc;
  size_t n;
} Sum;
static void take_sum(void *arg, int rank, const void *data) {
  Sum *s = arg;
  const float *x = data;
  if (rank == 0)
    memcpy(s->acc, x, s->n * sizeof(float));
  else
    for (size_t i = 0; i < s->n; i++) s->acc[i] += x[i];
}

EXPORT ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, int type, int op, void *comm,
                                  void *stream) {
  INJECT("ncclAllReduce");
  Comm *c = comm;
  if (!c || !stream || type != 7 || op != 0) return InvalidArgument;
  allreduces++;
  last_count = (long)count;
  if (c->nranks > 1 && count) {
    /* into a buffer of its own: recv may be send, which the exchange reads */
    Sum s = {malloc(count * sizeof(float)), count};
    if (!s.acc) return fail(c, SystemError, "fake: out of memory");
    ncclResult_t r = exchange(c, ALLREDUCE, count, send, count * sizeof(float), take_sum, &s);
    if (!r) memcpy(recv, s.acc, count * sizeof(float));
    free(s.acc);
    if (r) return r;
  } else if (send != recv)
    memcpy(recv, send, count * sizeof(float));
  if (in_group)
    group_comm = c;
  else
    c->polls = 2;
  return in_group ? Success : InProgress;
}
EXPORT ncclResult_t ncclGroupStart(void) {
  in_group++;
  return Success;
}

static size_t type_size(int t) {
  static const size_t sizes[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2}; /* ncclInt8 .. ncclBfloat16 */
  return t >= 0 && t < (int)(sizeof sizes / sizeof *sizes) ? sizes[t] : 0;
}

static void p2p_name(char *name, int from, int to, long seq) { snprintf(name, 96, "p.%d.%d.%ld", from, to, seq); }

/* posts a send: the message file p.FROM.TO.SEQ */
static ncclResult_t send_post(Comm *c, int peer, const void *buf, size_t bytes, long seq) {
  char name[96];
  p2p_name(name, c->rank, peer, seq);
  Header h = {bytes, 0, 0, (int32_t)getpid()};
  return put(c, name, &h, sizeof h, buf, bytes);
}
/* a send is done when the receiver removed its file; a receiver that
 * wanted another size leaves x.FROM.TO.SEQ with its size */
static ncclResult_t send_wait(Comm *c, int peer, size_t bytes, long seq) {
  char name[96], f[PATH_MAX];
  p2p_name(name, c->rank, peer, seq);
  file_name(c, f, "%s", name);
  ncclResult_t r = wait_for(c, peer, "ncclSend", ready_absent, f);
  if (r) return r;
  file_name(c, f, "x%s", name + 1);
  FILE *x = fopen(f, "r");
  if (!x) return Success;
  unsigned long long want = 0;
  if (fscanf(x, "%llu", &want) != 1) want = 0;
  fclose(x);
  unlink(f);
  return fail(c, InvalidUsage,
              "fake: rank %d sent %zu bytes to rank %d, which posted a receive of %llu bytes (ncclSend)", c->rank,
              bytes, peer, want);
}
static ncclResult_t recv_take(Comm *c, int peer, void *buf, size_t bytes, long seq) {
  char name[96], f[PATH_MAX];
  p2p_name(name, peer, c->rank, seq);
  file_name(c, f, "%s", name);
  ncclResult_t r = wait_for(c, peer, "ncclRecv", ready_exists, f);
  if (r) return r;
  Header h;
  int fd = open(f, O_RDONLY);
  if (fd < 0 || read_all(fd, &h, sizeof h))
    r = fail(c, SystemError, "fake: reading %s: %s", f, strerror(errno));
  else if (h.bytes != bytes) {
    char size[32];
    int n = snprintf(size, sizeof size, "%zu\n", bytes);
    name[0] = 'x';
    put(c, name, size, (size_t)n, NULL, 0); /* before the message goes: the sender looks for it then */
    r = fail(c, InvalidUsage, "fake: rank %d posted a receive of %zu bytes from rank %d, which sent %llu (ncclRecv)",
             c->rank, bytes, peer, (unsigned long long)h.bytes);
  } else if (read_all(fd, buf, bytes))
    r = fail(c, SystemError, "fake: reading %s: %s", f, strerror(errno));
  if (fd >= 0) close(fd);
  unlink(f);
  return r;
}

static ncclResult_t p2p(int send, void *buf, size_t count, int type, int peer, void *comm, void *stream) {
  Comm *c = comm;
  size_t bytes = count * type_size(type);
  if (!c || !stream || !type_size(type) || peer < 0 || peer >= c->nranks)
    return fail(c, InvalidArgument, "fake: %s to rank %d of %d", send ? "ncclSend" : "ncclRecv", peer,
                c ? c->nranks : 0);
  long seq = send ? c->sent[peer]++ : c->rcvd[peer]++;
  if (!in_group) {
    ncclResult_t r = send ? send_post(c, peer, buf, bytes, seq) : recv_take(c, peer, buf, bytes, seq);
    if (!r && send) r = send_wait(c, peer, bytes, seq);
    if (r) return r;
    c->polls = 2;
    return InProgress;
  }
  if (nops >= MAX_OPS) return fail(c, InvalidUsage, "fake: more than %d operations in a group", MAX_OPS);
  ops[nops].c = c, ops[nops].send = send, ops[nops].peer = peer, ops[nops].buf = buf, ops[nops].bytes = bytes;
  ops[nops++].seq = seq;
  group_comm = c;
  return Success;
}
EXPORT ncclResult_t ncclSend(const void *buf, size_t count, int type, int peer, void *comm, void *stream) {
  INJECT("ncclSend");
  return p2p(1, (void *)buf, count, type, peer, comm, stream);
}
EXPORT ncclResult_t ncclRecv(void *buf, size_t count, int type, int peer, void *comm, void *stream) {
  INJECT("ncclRecv");
  return p2p(0, buf, count, type, peer, comm, stream);
}

/* posts every send, completes every receive, then waits for the sends */
EXPORT ncclResult_t ncclGroupEnd(void) {
  if (in_group <= 0) return InvalidUsage;
  if (--in_group) return Success;
  ncclResult_t r = Success;
  for (int pass = 0; pass < 3; pass++)
    for (int i = 0; i < nops && !r; i++) {
      if (pass == 0 && ops[i].send) r = send_post(ops[i].c, ops[i].peer, ops[i].buf, ops[i].bytes, ops[i].seq);
      if (pass == 1 && !ops[i].send) r = recv_take(ops[i].c, ops[i].peer, ops[i].buf, ops[i].bytes, ops[i].seq);
      if (pass == 2 && ops[i].send) r = send_wait(ops[i].c, ops[i].peer, ops[i].bytes, ops[i].seq);
    }
  nops = 0;
  Comm *c = group_comm;
  group_comm = NULL;
  if (r) return r;
  if (!c) return Success;
  c->polls = 2; /* non-blocking: the group completes later */
  return InProgress;
}

/* for the test */
EXPORT long fake_nccl_live(void) { return live; }
EXPORT long fake_nccl_allreduces(void) { return allreduces; }
EXPORT long fake_nccl_last_count(void) { return last_count; }
EXPORT long fake_nccl_polls(void) { return polls_total; }
EXPORT const char *fake_nccl_last_id(void) { return last_id; }
/* the directory a unique id names (for the test's check that none is left) */
EXPORT const char *fake_nccl_id_dir(const void *id) { return (const char *)id + ID_DIR; }
