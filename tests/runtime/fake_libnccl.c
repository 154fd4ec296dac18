/* fake_libnccl.c — a stand-in for libnccl.so.2 for tests/runtime/test_device.c:
 * the NCCL entry points runtime/device.c resolves, on host memory (any world
 * size initialises; the operations act as on a world of one rank),
 * non-blocking like the real library: init, split, collectives and group
 * ends return ncclInProgress and ncclCommGetAsyncError reports
 * ncclInProgress a few times before ncclSuccess. The config must be exactly NCCL_CONFIG_INITIALIZER of NCCL
 * 2.28 with blocking = 0. Environment:
 *   FAKE_NCCL_HANG=1      communicators never finish initialising
 *   FAKE_NCCL_FAIL=SYM:N  SYM returns N (and sets the last error)
 * ncclCommAbort writes "fake-nccl: ncclCommAbort" to stderr.
 * fake_nccl_*() let the test look inside. Includes no CUDA/NCCL header. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int ncclResult_t;
#define EXPORT __attribute__((visibility("default")))
enum { Success = 0, SystemError = 2, InvalidArgument = 4, InvalidUsage = 5, InProgress = 7 };

typedef struct {
  char internal[128];
} UniqueId;
typedef struct {
  size_t size;
  unsigned int magic, version;
  int blocking, cgaClusterSize, minCTAs, maxCTAs;
  const char *netName;
  int splitShare, trafficClass;
  const char *commName;
  int collnetEnable, CTAPolicy, shrinkShare, nvlsCTAs, nChannelsPerNetPeer, nvlinkCentricSched;
} Config;

typedef struct {
  int polls; /* ncclInProgress answers left */
  int color;
} Comm;

static long live, allreduces, polls_total, last_count = -1;
static char last_error[256];
static char last_id[128];
static int in_group;
static struct {
  const void *src;
  void *dst;
  size_t sbytes, rbytes;
  int has_send, has_recv;
} p2p[16];
static int np2p_send, np2p_recv;
static Comm *group_comm; /* the last communicator used in the open group */

static ncclResult_t injected(const char *sym) {
  const char *v = getenv("FAKE_NCCL_FAIL");
  size_t n = strlen(sym);
  if (v && !strncmp(v, sym, n) && v[n] == ':') {
    snprintf(last_error, sizeof last_error, "fake: %s failed", sym);
    return atoi(v + n + 1);
  }
  return Success;
}
#define INJECT(sym)                     \
  do {                                  \
    ncclResult_t r_ = injected(sym);    \
    if (r_) return r_;                  \
  } while (0)

static int hang(void) {
  const char *v = getenv("FAKE_NCCL_HANG");
  return v && *v == '1';
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
  case 7: return "NCCL operation in progress";
  default: return "unknown result code";
  }
}
EXPORT const char *ncclGetLastError(void *comm) { return last_error; }

EXPORT ncclResult_t ncclGetUniqueId(UniqueId *id) {
  INJECT("ncclGetUniqueId");
  memset(id, 0, sizeof *id);
  snprintf(id->internal, sizeof id->internal, "fake-nccl-id-%d", 42);
  return Success;
}

static int config_ok(const Config *c) {
  const int U = INT_MIN;
  int ok = c && c->size == sizeof(Config) && c->magic == 0xcafebeef && c->version == 22809 && c->blocking == 0 &&
           c->cgaClusterSize == U && c->minCTAs == U && c->maxCTAs == U && !c->netName && c->splitShare == U &&
           c->trafficClass == U && !c->commName && c->collnetEnable == U && c->CTAPolicy == U && c->shrinkShare == U &&
           c->nvlsCTAs == U && c->nChannelsPerNetPeer == U && c->nvlinkCentricSched == U;
  if (!ok) snprintf(last_error, sizeof last_error, "fake: config is not NCCL_CONFIG_INITIALIZER with blocking = 0");
  return ok;
}

static Comm *comm_new(int color) {
  Comm *c = calloc(1, sizeof *c);
  live++;
  c->polls = hang() ? INT_MAX : 3;
  c->color = color;
  return c;
}

EXPORT ncclResult_t ncclCommInitRankConfig(void **comm, int nranks, UniqueId id, int rank, Config *cfg) {
  INJECT("ncclCommInitRankConfig");
  if (!config_ok(cfg)) return InvalidArgument;
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    snprintf(last_error, sizeof last_error, "fake: rank %d of %d", rank, nranks);
    return InvalidArgument;
  }
  memcpy(last_id, id.internal, sizeof last_id);
  *comm = comm_new(0);
  return InProgress;
}
EXPORT ncclResult_t ncclCommSplit(void *comm, int color, int key, void **newcomm, Config *cfg) {
  INJECT("ncclCommSplit");
  if (!comm) return InvalidArgument;
  if (!config_ok(cfg)) return InvalidArgument;
  ((Comm *)comm)->polls = 1;
  *newcomm = color == -1 ? NULL : comm_new(color);
  return InProgress;
}
EXPORT ncclResult_t ncclCommGetAsyncError(void *comm, ncclResult_t *state) {
  Comm *c = comm;
  if (!c) return InvalidArgument;
  polls_total++;
  if (c->polls > 0) {
    if (c->polls != INT_MAX) c->polls--;
    *state = InProgress;
  } else *state = Success;
  return Success;
}
EXPORT ncclResult_t ncclCommFinalize(void *comm) {
  if (!comm) return InvalidArgument;
  ((Comm *)comm)->polls = 2;
  return InProgress;
}
EXPORT ncclResult_t ncclCommDestroy(void *comm) {
  if (!comm) return InvalidArgument;
  if (((Comm *)comm)->polls) return InvalidUsage; /* not finalized */
  live--;
  free(comm);
  return Success;
}
EXPORT ncclResult_t ncclCommAbort(void *comm) {
  fprintf(stderr, "fake-nccl: ncclCommAbort\n");
  if (comm) live--, free(comm);
  return Success;
}

EXPORT ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, int type, int op, void *comm, void *stream) {
  INJECT("ncclAllReduce");
  if (!comm || !stream || type != 7 || op != 0) return InvalidArgument;
  if (send != recv) memcpy(recv, send, count * sizeof(float));
  if (in_group) group_comm = comm;
  allreduces++;
  last_count = (long)count;
  if (!in_group) ((Comm *)comm)->polls = 2;
  return in_group ? Success : InProgress;
}
EXPORT ncclResult_t ncclGroupStart(void) {
  in_group++;
  return Success;
}
EXPORT ncclResult_t ncclSend(const void *buf, size_t count, int type, int peer, void *comm, void *stream) {
  INJECT("ncclSend");
  if (!in_group || peer != 0 || type != 1 || !stream || np2p_send >= 16) return InvalidUsage;
  group_comm = comm;
  p2p[np2p_send].src = buf, p2p[np2p_send].sbytes = count, p2p[np2p_send].has_send = 1;
  np2p_send++;
  return Success;
}
EXPORT ncclResult_t ncclRecv(void *buf, size_t count, int type, int peer, void *comm, void *stream) {
  INJECT("ncclRecv");
  if (!in_group || peer != 0 || type != 1 || !stream || np2p_recv >= 16) return InvalidUsage;
  group_comm = comm;
  p2p[np2p_recv].dst = buf, p2p[np2p_recv].rbytes = count, p2p[np2p_recv].has_recv = 1;
  np2p_recv++;
  return Success;
}
EXPORT ncclResult_t ncclGroupEnd(void) {
  if (in_group <= 0) return InvalidUsage;
  if (--in_group) return Success;
  if (np2p_send != np2p_recv) return InvalidUsage;
  for (int i = 0; i < np2p_send; i++) {
    if (p2p[i].sbytes != p2p[i].rbytes) return InvalidUsage;
    memcpy(p2p[i].dst, p2p[i].src, p2p[i].sbytes);
  }
  np2p_send = np2p_recv = 0;
  memset(p2p, 0, sizeof p2p);
  if (!group_comm) return Success;
  group_comm->polls = 2; /* non-blocking: the group completes later */
  group_comm = NULL;
  return InProgress;
}

/* for the test */
EXPORT long fake_nccl_live(void) { return live; }
EXPORT long fake_nccl_allreduces(void) { return allreduces; }
EXPORT long fake_nccl_last_count(void) { return last_count; }
EXPORT long fake_nccl_polls(void) { return polls_total; }
EXPORT const char *fake_nccl_last_id(void) { return last_id; }
