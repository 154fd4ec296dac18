/* comm.c — the host transport (see comm.h for the contract).
 *
 * Transport. Every pair of ranks has one TCP connection (lower rank accepts,
 * higher rank connects, with a handshake naming both ranks and the job's
 * nonce). For peers on another host it carries everything; for peers on the
 * same host (same hostname or PIPEC_COMM_HOST) whose shared memory could be mapped by every
 * rank of that host, data goes through shared memory and the socket only
 * carries small control frames (wake-ups, abort, bye) and, by existing,
 * tells us when the peer process is gone: the kernel closes a dead
 * process's sockets, so poll() sees the hang-up at once.
 *
 * Shared memory. Each rank of a host creates one POSIX segment (shm_open,
 * sized with posix_fallocate so a full /dev/shm fails at init, not with
 * SIGBUS later) holding: a header with its "sleeping" flag, signal
 * counters per (type, world rank) (each written only by that rank), one
 * byte ring per local peer (single producer = that peer, single consumer =
 * this rank), and a staging area for collectives (written only by this
 * rank, read by the members). Names go through the store; every rank
 * maps its local peers' segments, says so in the store, and the creator
 * unlinks its name as soon as every local peer has said so (before any
 * data moves), so a crash later leaves nothing in /dev/shm.
 *
 * Messages. A byte stream (socket or ring) carries 32-byte frame headers;
 * DATA frames carry a message's bytes (a message is split into frames of at
 * most 256 KiB on sockets so control frames such as ABORT can be slipped
 * in between). Receives are matched by (peer, key) in the order sent: key
 * is the user's tag for point-to-point messages, and a key with the top bit
 * set (group id, operation sequence, phase, step) for collective traffic,
 * so the two never mix. A message whose receive is posted streams straight
 * into the user's buffer; otherwise it goes into a malloc'ed "unexpected"
 * buffer (and a receive posted while such a message is still arriving
 * takes over the rest of it). Sends are eager: a send returns once its
 * bytes are in the socket or ring, and while it waits it keeps reading
 * every peer, so two ranks sending large messages to each other never
 * deadlock.
 *
 * Collectives. prt_allreduce_sum is a direct reduce-scatter + all-gather:
 * the vector is cut into g slices; member i sums slice i, element by
 * element, as ((b_0 + b_1) + b_2) + ... + b_{g-1} in group order, then
 * every member gathers every slice. The same order is used by the
 * shared-memory algorithm (members of one host) and by the message
 * algorithm (any other group: member i sends slice s of its vector to
 * member s, in pieces, then everyone sends its summed slice to everyone),
 * so the result is bitwise the same on every member and on either
 * transport. Both move (g-1)/g of the vector in and out per member. The
 * shared-memory one is a pipeline over chunks held in NSLOT staging slots
 * per rank (stage a chunk, sum one's slice of it from every member's slot,
 * copy the other slices out); every step signals the other members through
 * per-pair counters, which is why ranks must call the collectives of groups
 * they share in the same order. Broadcast (a pipelined chain, or one
 * staging area read by all) and barrier (dissemination, or counters) follow
 * the same split.
 *
 * Zero-copy all-reduce. prt_comm_alloc_shared hands out memfd memory; a
 * peer maps it on first use by opening /proc/<owner pid>/fd/<fd> (init
 * checks, with the segment's own fd, that every local rank can do that for
 * every other: host_zc). An all-reduce of at least PIPEC_COMM_ZC_MIN bytes
 * on a shared-memory group first publishes the buffer's (region, offset)
 * in the rank's segment header; when every member's buffer is shared,
 * member i sums slice i straight from every member's buffer (same order)
 * and writes the sum into every member's buffer, then all wait for all:
 * no staging copy and no reading back of the other slices.
 *
 * Waiting and failures. Every wait runs one loop: move whatever bytes can
 * move on every channel, check the awaited condition, spin briefly, then
 * set the sleeping flag and block in poll() on all sockets for at most
 * 100 ms; a peer that changes shared state this rank may wait on sends a
 * KICK frame when it sees the flag. With more ranks on the host than CPUs,
 * kicks are held back until the kicking rank waits itself (a woken rank
 * would otherwise take the CPU from the rank doing the work just to find
 * one small step ready). A socket that closes
 * without BYE is a lost rank; no progress for timeout_s is a timeout, and
 * the rank to blame is found by following the chain of "who are you
 * waiting for" questions (WAITQ/WAITR frames) to a rank that does not
 * answer. Either way the rank prints one line, sends ABORT (naming the
 * lost rank) to every peer it can reach, and exits with status 1; a rank
 * that receives ABORT prints the same rank, forwards the ABORT and exits.
 */
#define _GNU_SOURCE
#include "runtime/comm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------ */
/* Constants and wire formats                                          */

#define FRAME_MAX (256u << 10)       /* payload per DATA frame on a socket */
#define PIECE_BYTES (256u << 10)     /* message algorithms: bytes per piece */
#define RS_WINDOW 3                  /* reduce-scatter rounds whose receives are posted ahead */
#define SOCK_IBUF (64u << 10)        /* socket read-ahead buffer */
#define SLEEP_MS 100                 /* longest single poll() while waiting */
#define SEG_MAGIC 0x314d4d4f43455050ull /* "PPECOMM1" */
#define HS_MAGIC 0x50434d31u         /* handshake */

enum { F_DATA = 1, F_KICK, F_ABORT, F_BYE, F_WAITQ, F_WAITR };
/* shared-memory signal counters, one per (type, sender) in the receiver's
 * segment: SIG_SYNC for barriers and broadcasts, the others for the stages
 * of the all-reduce pipeline (chunk staged, slice summed, chunk copied out) */
enum { SIG_SYNC, SIG_STAGED, SIG_SUMMED, SIG_COPIED, SIG_ZC, N_SIGTYPE }; /* SIG_ZC: zero-copy buffer published */
#define NSLOT 4 /* all-reduce staging slots per rank */
#define ZC_MIN_DEFAULT (16u << 10)   /* smaller all-reduces do not look for shared buffers */
enum { WHY_LOST = 1, WHY_TIMEOUT, WHY_ABORTED, WHY_EXITED };

typedef struct FrameHdr {
  uint32_t kind, aux;
  uint64_t key, total, len;
} FrameHdr;
_Static_assert(sizeof(FrameHdr) == 32, "frame header is 32 bytes");

typedef struct Hello {
  uint32_t magic, kind; /* kind 1: hello from connector, 2: reply */
  int32_t from, to, world, pad;
  uint64_t nonce; /* the receiver's nonce, as the sender read it from the store */
} Hello;

/* ------------------------------------------------------------------ */
/* Shared memory layout                                                */

typedef struct PadU64 {
  _Alignas(64) _Atomic uint64_t v;
  char pad[56];
} PadU64;

typedef struct SegHdr {
  uint64_t magic, nonce;
  int32_t pid, rank, world, nlocal;
  uint64_t ring_cap, ring_stride, ring_off, stage_cap, stage_off, sig_off, total;
  _Alignas(64) _Atomic uint32_t sleeping; /* 1: blocked in poll(); whoever changes state it may wait on kicks it */
  int32_t seg_fd; /* during init: this segment's fd in the owner, to check that peers can open /proc/<pid>/fd/<fd> */
  /* zero-copy all-reduce: the owner's buffer for the current one (zc_id 0: not in shared memory); written before SIG_ZC */
  _Alignas(64) uint64_t zc_id, zc_size, zc_off;
  int32_t zc_fd;
} SegHdr;

typedef struct RingHdr {
  PadU64 head; /* bytes written, by the producer */
  PadU64 tail; /* bytes read, by the consumer */
} RingHdr;

/* ------------------------------------------------------------------ */
/* Requests, channels, the communicator                                */

typedef struct Req {
  struct Req *next;
  int peer, is_send, complete;
  uint64_t key;
  uint8_t *buf;
  size_t bytes, done, framed;
} Req;

typedef struct Unexp {
  struct Unexp *next;
  uint64_t key;
  size_t total, got;
  uint8_t *buf;
  int complete;
} Unexp;

typedef struct InStream {
  uint8_t hdr[32];
  uint32_t hgot;
  int in_frame; /* 1: reading the payload of fh */
  FrameHdr fh;
  uint64_t left;
  char ctl[1024];
  size_t ctl_got;
} InStream;

/* memory from prt_comm_alloc_shared (own), or a peer's mapped here */
typedef struct ShReg {
  uint8_t *base;
  size_t size;
  uint64_t id;
  int fd;
} ShReg;

typedef struct Chan {
  int fd, shm, closed, bye_rx;
  uint8_t *ib;
  size_t ib_off, ib_len;
  InStream sin, rin; /* parsers: socket stream, ring stream */
  /* shared memory (shm = 1) */
  SegHdr *pseg;               /* the peer's segment */
  RingHdr *rx, *tx;           /* rx: peer -> me (in my segment); tx: me -> peer (in its segment) */
  uint8_t *rxd, *txd;
  uint64_t rxcap, txcap;
  uint64_t sigexp[N_SIGTYPE];      /* collective signals consumed from this peer, by type */
  ShReg *pm;                       /* the peer's shared buffers mapped here */
  int npm, cappm;
  /* incoming message being assembled */
  int in_msg;
  uint64_t in_key;
  size_t in_total, in_got;
  Req *in_req;
  Unexp *in_ux;
  Req *posted, *posted_tail;
  Unexp *ux, *ux_tail;
  /* outgoing */
  Req *sq, *sq_tail;
  int fr_active;
  FrameHdr fr_hdr;
  size_t fr_hoff, fr_plen, fr_poff;
  const uint8_t *fr_pl;
  Req *fr_req;
  uint8_t *co; /* control bytes waiting for the socket */
  size_t co_len, co_off, co_cap;
  /* who-are-you-waiting-for replies */
  int waitr_got;
  int waitr_val;
} Chan;

enum { OP_NONE, OP_INIT, OP_SEND, OP_RECV, OP_ALLREDUCE, OP_BCAST, OP_BARRIER, OP_FINALIZE, OP_POLL };

struct PrtGroup {
  PrtComm *c;
  int n, me, shm;
  int *ranks;
  uint32_t id, seq;
  char desc[160];
};

typedef struct GidCount {
  uint32_t hash, count;
} GidCount;

struct PrtComm {
  int me, world;
  double timeout;
  Chan *ch;            /* world entries; ch[me] unused */
  struct pollfd *pfd;  /* world - 1 entries */
  int *pfd_peer;
  int npfd, ntcp;      /* ntcp: peers whose data goes over TCP */
  SegHdr *seg;         /* my segment (NULL: no shared memory) */
  size_t seg_size;
  char shm_name[96];
  int host_shm;
  int host_zc, seg_fd;   /* host_zc: every local rank can map every other's memfds */
  size_t zc_min;
  ShReg *regs;           /* from prt_comm_alloc_shared */
  int nregs, capregs;
  uint64_t next_reg;
  /* the operation in progress, for messages */
  int op, op_peer, op_root;
  uint64_t op_tag;
  const PrtGroup *op_group;
  int waiting_for;
  int dying, in_wait;
  PrtGroup *world_group;
  GidCount *gids;
  int ngids, capgids;
  uint8_t *scratch;
  size_t scratch_cap;
  double spin_s;
  int defer_kicks, n_kick_pending;
  char *kick_pending; /* [world] */
  int *kick_list;
  /* PIPEC_COMM_STATS=1: counters printed by prt_comm_finalize */
  int stats;
  uint64_t n_sleep, n_sleep_full, n_kick_tx, n_kick_rx, n_yield, n_ux, ux_bytes, n_zc, n_zc_fallback;
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

#define NT_MIN_TOTAL (4u << 20) /* collectives this large write results with non-temporal stores */
static int g_nt_copy = -1;

static int nt_for(size_t total_bytes) {
  if (g_nt_copy < 0) {
    const char *e = getenv("PIPEC_COMM_NT");
    g_nt_copy = e && *e ? atoi(e) != 0 : 1;
  }
  return g_nt_copy && total_bytes >= NT_MIN_TOTAL;
}

/* memcpy for results going to the user's buffer. nt: with SSE2,
 * non-temporal stores, for large collectives: no read of the destination
 * lines and no eviction of the staging slots that the other ranks read
 * (the copy is bound by memory bandwidth, and a buffer this large is not in
 * cache when the caller reads it anyway). */
static void copy_out(void *dst, const void *src, size_t n, int nt) {
#if defined(__SSE2__)
  if (nt && n >= 4096) {
    uint8_t *d = dst;
    const uint8_t *s = src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    memcpy(d, s, head);
    d += head, s += head, n -= head;
    size_t body = n & ~(size_t)63;
    for (size_t i = 0; i < body; i += 64) {
      __m128i a = _mm_loadu_si128((const __m128i *)(s + i)), b = _mm_loadu_si128((const __m128i *)(s + i + 16)),
              c = _mm_loadu_si128((const __m128i *)(s + i + 32)), e = _mm_loadu_si128((const __m128i *)(s + i + 48));
      _mm_stream_si128((__m128i *)(d + i), a);
      _mm_stream_si128((__m128i *)(d + i + 16), b);
      _mm_stream_si128((__m128i *)(d + i + 32), c);
      _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    memcpy(d + body, s + body, n - body);
    return;
  }
#else
  (void)nt;
#endif
  memcpy(dst, src, n);
}

/* ------------------------------------------------------------------ */
/* Describing the current operation                                   */

static void group_desc(char *out, size_t len, const int *ranks, int n) {
  size_t o = 0;
  o += (size_t)snprintf(out + o, len - o, "[");
  int show = n <= 16 ? n : 8;
  for (int i = 0; i < show && o < len; i++) o += (size_t)snprintf(out + o, len - o, "%s%d", i ? ", " : "", ranks[i]);
  if (show < n && o < len) o += (size_t)snprintf(out + o, len - o, ", ... (%d ranks)", n);
  if (o < len) snprintf(out + o, len - o, "]");
}

static void op_desc(const PrtComm *c, char *out, size_t len) {
  switch (c->op) {
  case OP_INIT: snprintf(out, len, "init"); break;
  case OP_SEND: snprintf(out, len, "send to rank %d tag %llu", c->op_peer, (unsigned long long)c->op_tag); break;
  case OP_RECV: snprintf(out, len, "recv from rank %d tag %llu", c->op_peer, (unsigned long long)c->op_tag); break;
  case OP_ALLREDUCE: snprintf(out, len, "allreduce over %s", c->op_group->desc); break;
  case OP_BCAST:
    snprintf(out, len, "broadcast from rank %d over %s", c->op_group->ranks[c->op_root], c->op_group->desc);
    break;
  case OP_BARRIER: snprintf(out, len, "barrier over %s", c->op_group->desc); break;
  case OP_FINALIZE: snprintf(out, len, "finalize"); break;
  case OP_POLL: snprintf(out, len, "a wait on the GPU"); break;
  default: snprintf(out, len, "no communication"); break;
  }
}

/* ------------------------------------------------------------------ */
/* Socket output                                                       */

static void ctl_queue(Chan *ch, uint32_t kind, uint32_t aux, uint64_t key, uint64_t total, const void *pl, size_t plen) {
  if (ch->closed || ch->fd < 0) return;
  size_t need = sizeof(FrameHdr) + plen;
  if (ch->co_off == ch->co_len) ch->co_off = ch->co_len = 0;
  if (ch->co_len + need > ch->co_cap) {
    if (ch->co_off > 0) {
      memmove(ch->co, ch->co + ch->co_off, ch->co_len - ch->co_off);
      ch->co_len -= ch->co_off;
      ch->co_off = 0;
    }
    if (ch->co_len + need > ch->co_cap) {
      size_t cap = ch->co_cap ? ch->co_cap : 256;
      while (cap < ch->co_len + need) cap *= 2;
      uint8_t *p = realloc(ch->co, cap);
      if (!p) return; /* out of memory: drop a control frame; the peer's timeout still works */
      ch->co = p;
      ch->co_cap = cap;
    }
  }
  FrameHdr h = {kind, aux, key, total, plen};
  memcpy(ch->co + ch->co_len, &h, sizeof h);
  if (plen) memcpy(ch->co + ch->co_len + sizeof h, pl, plen);
  ch->co_len += need;
}

/* 1: wrote something, 0: would block, -1: the connection is gone. */
static int sock_send(int fd, const struct iovec *iov, int n, size_t *wrote) {
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = (struct iovec *)iov;
  m.msg_iovlen = (size_t)n;
  for (;;) {
    ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) {
      *wrote = (size_t)r;
      return r > 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *wrote = 0;
      return 0;
    }
    *wrote = 0;
    return -1;
  }
}

static void chan_lost(PrtComm *c, int peer);

/* Writes what it can to the socket: the data frame in progress, then
 * control frames, then new data frames (TCP peers only). Returns bytes moved. */
static size_t sock_out(PrtComm *c, int peer) {
  Chan *ch = &c->ch[peer];
  size_t moved = 0;
  if (ch->closed) return 0;
  for (;;) {
    if (ch->fr_active && !ch->shm) {
      struct iovec iov[2];
      int n = 0;
      if (ch->fr_hoff < sizeof(FrameHdr)) {
        iov[n].iov_base = (uint8_t *)&ch->fr_hdr + ch->fr_hoff;
        iov[n++].iov_len = sizeof(FrameHdr) - ch->fr_hoff;
      }
      if (ch->fr_poff < ch->fr_plen) {
        iov[n].iov_base = (void *)(ch->fr_pl + ch->fr_poff);
        iov[n++].iov_len = ch->fr_plen - ch->fr_poff;
      }
      size_t w = 0;
      int r = n ? sock_send(ch->fd, iov, n, &w) : 1;
      if (r < 0) {
        chan_lost(c, peer);
        return moved;
      }
      size_t h = min_sz(w, sizeof(FrameHdr) - ch->fr_hoff);
      ch->fr_hoff += h;
      ch->fr_poff += w - h;
      if (w > h) ch->fr_req->done += w - h;
      moved += w;
      if (ch->fr_hoff == sizeof(FrameHdr) && ch->fr_poff == ch->fr_plen) {
        ch->fr_active = 0;
        Req *q = ch->fr_req;
        if (q->framed == q->bytes) {
          q->complete = 1;
          ch->sq = q->next;
          if (!ch->sq) ch->sq_tail = NULL;
        }
        continue;
      }
      return moved;
    }
    if (ch->co_off < ch->co_len) {
      struct iovec iov = {ch->co + ch->co_off, ch->co_len - ch->co_off};
      size_t w = 0;
      int r = sock_send(ch->fd, &iov, 1, &w);
      if (r < 0) {
        chan_lost(c, peer);
        return moved;
      }
      ch->co_off += w;
      moved += w;
      if (ch->co_off < ch->co_len) return moved;
      ch->co_off = ch->co_len = 0;
      continue;
    }
    if (!ch->shm && ch->sq) {
      Req *q = ch->sq;
      size_t len = min_sz(FRAME_MAX, q->bytes - q->framed);
      ch->fr_hdr = (FrameHdr){F_DATA, 0, q->key, q->bytes, len};
      ch->fr_hoff = 0;
      ch->fr_pl = q->buf + q->framed;
      ch->fr_plen = len;
      ch->fr_poff = 0;
      ch->fr_req = q;
      q->framed += len;
      ch->fr_active = 1;
      continue;
    }
    return moved;
  }
}

static void send_ctl(PrtComm *c, int peer, uint32_t kind, uint32_t aux, uint64_t key, uint64_t total, const void *pl,
                     size_t plen) {
  Chan *ch = &c->ch[peer];
  if (ch->closed) return;
  ctl_queue(ch, kind, aux, key, total, pl, plen);
  sock_out(c, peer);
}

/* The peer may be asleep in poll() waiting for what we just changed in
 * shared memory: wake it with a KICK frame. */
static void kick_now(PrtComm *c, int peer) {
  Chan *ch = &c->ch[peer];
  if (atomic_load(&ch->pseg->sleeping) && atomic_exchange(&ch->pseg->sleeping, 0)) {
    c->n_kick_tx++;
    send_ctl(c, peer, F_KICK, 0, 0, 0, NULL, 0);
  }
}

/* With more ranks on this host than CPUs, a woken peer would take the CPU
 * from this rank to do one small step; instead the kicks wait until this
 * rank is about to wait itself or returns from the operation (flush_kicks).
 * Checking the flag later is still after our change, so no wake-up is lost. */
static void kick(PrtComm *c, int peer) {
  if (!c->defer_kicks) {
    kick_now(c, peer);
    return;
  }
  if (!c->kick_pending[peer]) {
    c->kick_pending[peer] = 1;
    c->kick_list[c->n_kick_pending++] = peer;
  }
}

static void flush_kicks(PrtComm *c) {
  int n = c->n_kick_pending;
  c->n_kick_pending = 0;
  for (int i = 0; i < n; i++) {
    int p = c->kick_list[i];
    c->kick_pending[p] = 0;
    kick_now(c, p);
  }
}

/* ------------------------------------------------------------------ */
/* Rings                                                               */

static size_t ring_write(RingHdr *r, uint8_t *d, uint64_t cap, const void *src, size_t n) {
  uint64_t head = atomic_load_explicit(&r->head.v, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&r->tail.v, memory_order_acquire);
  uint64_t room = cap - (head - tail);
  if (n > room) n = (size_t)room;
  if (!n) return 0;
  size_t off = (size_t)(head & (cap - 1)), first = min_sz(n, (size_t)cap - off);
  memcpy(d + off, src, first);
  if (n > first) memcpy(d, (const uint8_t *)src + first, n - first);
  atomic_store(&r->head.v, head + n); /* seq_cst: ordered before our read of the reader's sleeping flag */
  return n;
}

static size_t ring_read(RingHdr *r, const uint8_t *d, uint64_t cap, void *dst, size_t n) {
  uint64_t tail = atomic_load_explicit(&r->tail.v, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&r->head.v, memory_order_acquire);
  uint64_t avail = head - tail;
  if (n > avail) n = (size_t)avail;
  if (!n) return 0;
  size_t off = (size_t)(tail & (cap - 1)), first = min_sz(n, (size_t)cap - off);
  memcpy(dst, d + off, first);
  if (n > first) memcpy((uint8_t *)dst + first, d, n - first);
  atomic_store(&r->tail.v, tail + n);
  return n;
}

static int ring_readable(const RingHdr *r) {
  return atomic_load_explicit(&r->head.v, memory_order_acquire) != atomic_load_explicit(&r->tail.v, memory_order_relaxed);
}

/* Writes send-queue frames into the peer's ring. Returns bytes moved. */
static size_t ring_out(PrtComm *c, int peer) {
  Chan *ch = &c->ch[peer];
  size_t moved = 0;
  while (ch->sq) {
    if (!ch->fr_active) {
      Req *q = ch->sq;
      ch->fr_hdr = (FrameHdr){F_DATA, 0, q->key, q->bytes, q->bytes};
      ch->fr_hoff = 0;
      ch->fr_pl = q->buf;
      ch->fr_plen = q->bytes;
      ch->fr_poff = 0;
      ch->fr_req = q;
      q->framed = q->bytes;
      ch->fr_active = 1;
    }
    size_t w = 0;
    if (ch->fr_hoff < sizeof(FrameHdr)) {
      w = ring_write(ch->tx, ch->txd, ch->txcap, (uint8_t *)&ch->fr_hdr + ch->fr_hoff, sizeof(FrameHdr) - ch->fr_hoff);
      ch->fr_hoff += w;
      moved += w;
      if (ch->fr_hoff < sizeof(FrameHdr)) break;
    }
    if (ch->fr_poff < ch->fr_plen) {
      w = ring_write(ch->tx, ch->txd, ch->txcap, ch->fr_pl + ch->fr_poff, ch->fr_plen - ch->fr_poff);
      ch->fr_poff += w;
      ch->fr_req->done += w;
      moved += w;
      if (ch->fr_poff < ch->fr_plen) break;
    }
    ch->fr_active = 0;
    ch->fr_req->complete = 1;
    ch->sq = ch->sq->next;
    if (!ch->sq) ch->sq_tail = NULL;
  }
  if (moved) kick(c, peer);
  return moved;
}

/* ------------------------------------------------------------------ */
/* Fatal errors                                                        */

static void write_line(const char *s) {
  size_t n = strlen(s), o = 0;
  while (o < n) {
    ssize_t w = write(2, s + o, n - o);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    o += (size_t)w;
  }
}

/* Best effort: finish the data frame in progress on each socket, queue the
 * ABORT frame, and push everything out within a short deadline. */
static void broadcast_abort(PrtComm *c, int why, int lost, int origin, const char *text, int skip1, int skip2) {
  size_t tl = strlen(text);
  if (tl > 900) tl = 900;
  for (int p = 0; p < c->world; p++) {
    if (p == c->me || p == skip1 || p == skip2 || c->ch[p].closed) continue;
    /* no new data frames: cut the send queue to the frame being written */
    Chan *ch = &c->ch[p];
    if (!ch->shm) {
      if (ch->fr_active) {
        ch->fr_req->framed = ch->fr_req->bytes;
        ch->fr_req->next = NULL;
        ch->sq = ch->sq_tail = ch->fr_req;
      } else {
        ch->sq = ch->sq_tail = NULL;
      }
    }
    ctl_queue(ch, F_ABORT, (uint32_t)why, (uint64_t)lost, (uint64_t)origin, text, tl);
  }
  double end = now_s() + 1.0;
  for (;;) {
    int pending = 0;
    for (int p = 0; p < c->world; p++) {
      if (p == c->me || c->ch[p].closed) continue;
      Chan *ch = &c->ch[p];
      sock_out(c, p);
      if (!ch->closed && ((ch->fr_active && !ch->shm) || ch->co_off < ch->co_len)) pending = 1;
    }
    if (!pending || now_s() > end) break;
    struct pollfd pf[64];
    int n = 0;
    for (int p = 0; p < c->world && n < 64; p++) {
      Chan *ch = &c->ch[p];
      if (p == c->me || ch->closed) continue;
      if ((ch->fr_active && !ch->shm) || ch->co_off < ch->co_len) pf[n++] = (struct pollfd){ch->fd, POLLOUT, 0};
    }
    if (n) poll(pf, (nfds_t)n, 20);
  }
  /* FIN after the ABORT frame; unread input is discarded. */
  for (int p = 0; p < c->world; p++)
    if (p != c->me && c->ch[p].fd >= 0 && !c->ch[p].closed) shutdown(c->ch[p].fd, SHUT_WR);
}

static _Noreturn void die(PrtComm *c, int why, int lost, int origin, const char *text) {
  if (c->dying) _exit(1);
  c->dying = 1;
  char opd[256], line[1400];
  op_desc(c, opd, sizeof opd);
  int local = origin == c->me;
  switch (why) {
  case WHY_LOST:
    if (local)
      snprintf(line, sizeof line, "pipec: rank %d: lost rank %d (connection closed) during %s\n", c->me, lost, opd);
    else
      snprintf(line, sizeof line, "pipec: rank %d: lost rank %d (connection closed, seen by rank %d) during %s\n", c->me,
               lost, origin, opd);
    break;
  case WHY_EXITED:
    if (local)
      snprintf(line, sizeof line, "pipec: rank %d: lost rank %d (it finished and closed the connection) during %s\n",
               c->me, lost, opd);
    else
      snprintf(line, sizeof line, "pipec: rank %d: lost rank %d (it finished early, seen by rank %d) during %s\n", c->me,
               lost, origin, opd);
    break;
  case WHY_TIMEOUT:
    if (local)
      snprintf(line, sizeof line, "pipec: rank %d: timed out after %s s waiting for rank %d during %s\n", c->me, text,
               lost, opd);
    else
      snprintf(line, sizeof line, "pipec: rank %d: lost rank %d (rank %d timed out after %s s waiting for it) during %s\n",
               c->me, lost, origin, text, opd);
    break;
  default:
    if (local)
      snprintf(line, sizeof line, "pipec: rank %d: %s\n", c->me, text);
    else
      snprintf(line, sizeof line, "pipec: rank %d: lost rank %d (it aborted: %s) during %s\n", c->me, lost, text, opd);
    break;
  }
  write_line(line);
  broadcast_abort(c, why, lost, origin, text, lost, origin == c->me ? -1 : origin);
  exit(1);
}

static _Noreturn void die_error(PrtComm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void die_error(PrtComm *c, const char *fmt, ...) {
  char text[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  die(c, WHY_ABORTED, c->me, c->me, text);
}

/* The socket to peer is gone (EOF, reset, write error). */
static void chan_lost(PrtComm *c, int peer) {
  Chan *ch = &c->ch[peer];
  if (ch->closed) return;
  ch->closed = 1;
  for (int i = 0; i < c->npfd; i++)
    if (c->pfd_peer[i] == peer) c->pfd[i].fd = -1;
  if (!ch->bye_rx && !c->dying) die(c, WHY_LOST, peer, c->me, "");
  /* after BYE the peer finished cleanly: only an error if we wait for it */
}

/* ------------------------------------------------------------------ */
/* Input                                                               */

static void msg_begin(PrtComm *c, int peer, uint64_t key, size_t total);

/* Reads up to want bytes of the stream into dst: >0 bytes, 0 nothing now,
 * -1 the socket closed. */
static ssize_t in_read(PrtComm *c, int peer, int ring, void *dst, size_t want) {
  Chan *ch = &c->ch[peer];
  if (ring) return (ssize_t)ring_read(ch->rx, ch->rxd, ch->rxcap, dst, want);
  if (ch->ib_off < ch->ib_len) {
    size_t n = min_sz(want, ch->ib_len - ch->ib_off);
    memcpy(dst, ch->ib + ch->ib_off, n);
    ch->ib_off += n;
    return (ssize_t)n;
  }
  if (ch->closed) return 0;
  int direct = want >= 16384;
  for (;;) {
    ssize_t r = recv(ch->fd, direct ? dst : (void *)ch->ib, direct ? want : SOCK_IBUF, MSG_DONTWAIT);
    if (r > 0) {
      if (direct) return r;
      ch->ib_off = 0;
      ch->ib_len = (size_t)r;
      size_t n = min_sz(want, (size_t)r);
      memcpy(dst, ch->ib, n);
      ch->ib_off = n;
      return (ssize_t)n;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return -1;
  }
}

static void msg_finish(Chan *ch) {
  if (ch->in_req) {
    ch->in_req->done = ch->in_total;
    ch->in_req->complete = 1;
  } else if (ch->in_ux) {
    ch->in_ux->got = ch->in_total;
    ch->in_ux->complete = 1;
  }
  ch->in_msg = 0;
  ch->in_req = NULL;
  ch->in_ux = NULL;
}

static void handle_ctl(PrtComm *c, int peer, const FrameHdr *h, const char *pl, size_t plen) {
  Chan *ch = &c->ch[peer];
  switch (h->kind) {
  case F_KICK: c->n_kick_rx++; break;
  case F_BYE: ch->bye_rx = 1; break;
  case F_WAITQ: send_ctl(c, peer, F_WAITR, 0, (uint64_t)(c->in_wait ? c->waiting_for + 1 : 0), 0, NULL, 0); break;
  case F_WAITR:
    ch->waitr_got = 1;
    ch->waitr_val = (int)h->key - 1;
    break;
  case F_ABORT: {
    char text[1000];
    size_t n = min_sz(plen, sizeof text - 1);
    memcpy(text, pl, n);
    text[n] = 0;
    int lost = (int)h->key, origin = (int)h->total;
    if (lost < 0 || lost >= c->world) lost = peer;
    if (origin < 0 || origin >= c->world) origin = peer;
    die(c, (int)h->aux, lost, origin, text);
  }
  default: die_error(c, "protocol error: unknown frame kind %u from rank %d", h->kind, peer);
  }
}

/* Parses the stream (socket or ring) of one peer as far as its bytes go.
 * Returns bytes consumed. */
static size_t stream_in(PrtComm *c, int peer, int ring) {
  Chan *ch = &c->ch[peer];
  InStream *st = ring ? &ch->rin : &ch->sin;
  size_t moved = 0;
  for (;;) {
    if (!st->in_frame) {
      ssize_t r = in_read(c, peer, ring, st->hdr + st->hgot, sizeof(FrameHdr) - st->hgot);
      if (r < 0) {
        chan_lost(c, peer);
        return moved;
      }
      if (r == 0) return moved;
      moved += (size_t)r;
      st->hgot += (uint32_t)r;
      if (st->hgot < sizeof(FrameHdr)) continue;
      st->hgot = 0;
      memcpy(&st->fh, st->hdr, sizeof(FrameHdr));
      st->left = st->fh.len;
      st->ctl_got = 0;
      if (st->fh.kind == F_DATA) {
        if (ch->shm && !ring) die_error(c, "protocol error: data on the control socket of rank %d", peer);
        if (!ch->in_msg) {
          msg_begin(c, peer, st->fh.key, (size_t)st->fh.total);
        } else if (ch->in_key != st->fh.key) {
          die_error(c, "protocol error: interleaved messages from rank %d", peer);
        }
        if (st->fh.len > ch->in_total - ch->in_got) die_error(c, "protocol error: frame overruns its message from rank %d", peer);
        if (ch->in_got == ch->in_total) msg_finish(ch); /* zero-length message */
      } else if (ring) {
        die_error(c, "protocol error: control frame in the ring of rank %d", peer);
      }
      st->in_frame = 1;
      if (st->left > 0) continue;
    }
    if (st->left > 0) {
      ssize_t r;
      if (st->fh.kind == F_DATA) {
        uint8_t *dst = ch->in_req ? ch->in_req->buf : ch->in_ux->buf;
        r = in_read(c, peer, ring, dst + ch->in_got, (size_t)st->left);
        if (r > 0) {
          ch->in_got += (size_t)r;
          if (ch->in_req) ch->in_req->done = ch->in_got;
          if (ch->in_ux) ch->in_ux->got = ch->in_got;
        }
      } else {
        char sink[256];
        size_t room = sizeof st->ctl - st->ctl_got;
        if (room > 0)
          r = in_read(c, peer, ring, st->ctl + st->ctl_got, min_sz(room, (size_t)st->left));
        else
          r = in_read(c, peer, ring, sink, min_sz(sizeof sink, (size_t)st->left));
        if (r > 0 && room > 0) st->ctl_got += (size_t)r;
      }
      if (r < 0) {
        chan_lost(c, peer);
        return moved;
      }
      if (r == 0) return moved;
      moved += (size_t)r;
      st->left -= (uint64_t)r;
      if (st->left > 0) continue;
    }
    /* frame complete */
    st->in_frame = 0;
    if (st->fh.kind == F_DATA) {
      if (ch->in_msg && ch->in_got == ch->in_total) msg_finish(ch);
    } else {
      handle_ctl(c, peer, &st->fh, st->ctl, st->ctl_got);
    }
  }
}

static void size_mismatch(PrtComm *c, int peer, uint64_t key, size_t sent, size_t want) {
  if (key >> 63)
    die_error(c,
              "size mismatch in a collective: rank %d sent %zu bytes, this rank expects %zu (the members called it with "
              "different sizes?) during allreduce/broadcast",
              peer, sent, want);
  die_error(c, "size mismatch: rank %d sent %zu bytes with tag %llu but the matching recv on rank %d expects %zu bytes",
            peer, sent, (unsigned long long)key, c->me, want);
}

static void msg_begin(PrtComm *c, int peer, uint64_t key, size_t total) {
  Chan *ch = &c->ch[peer];
  ch->in_msg = 1;
  ch->in_key = key;
  ch->in_total = total;
  ch->in_got = 0;
  ch->in_req = NULL;
  ch->in_ux = NULL;
  for (Req *q = ch->posted, *prev = NULL; q; prev = q, q = q->next) {
    if (q->key != key) continue;
    if (q->bytes != total) size_mismatch(c, peer, key, total, q->bytes);
    if (prev)
      prev->next = q->next;
    else
      ch->posted = q->next;
    if (ch->posted_tail == q) ch->posted_tail = prev;
    q->next = NULL;
    ch->in_req = q;
    return;
  }
  Unexp *u = calloc(1, sizeof *u);
  if (u) u->buf = malloc(total ? total : 1);
  if (!u || !u->buf) die_error(c, "out of memory buffering a %zu-byte message from rank %d", total, peer);
  u->key = key;
  u->total = total;
  c->n_ux++;
  c->ux_bytes += total;
  if (ch->ux_tail)
    ch->ux_tail->next = u;
  else
    ch->ux = u;
  ch->ux_tail = u;
  ch->in_ux = u;
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */

static size_t progress_shm(PrtComm *c) {
  size_t moved = 0;
  if (!c->host_shm) return 0;
  for (int p = 0; p < c->world; p++) {
    Chan *ch = &c->ch[p];
    if (!ch->shm) continue;
    if (ch->sq) moved += ring_out(c, p);
    if (ring_readable(ch->rx)) {
      size_t m = stream_in(c, p, 1);
      if (m) kick(c, p); /* it may be waiting for room in this ring */
      moved += m;
    }
  }
  return moved;
}

static void update_poll_events(PrtComm *c) {
  for (int i = 0; i < c->npfd; i++) {
    Chan *ch = &c->ch[c->pfd_peer[i]];
    if (ch->closed) {
      c->pfd[i].fd = -1;
      continue;
    }
    short ev = POLLIN | POLLRDHUP;
    if (ch->co_off < ch->co_len || (!ch->shm && (ch->fr_active || ch->sq))) ev |= POLLOUT;
    c->pfd[i].events = ev;
  }
}

/* poll() the sockets (ms: 0 or a timeout) and handle what is ready. */
static size_t progress_sockets(PrtComm *c, int ms) {
  size_t moved = 0;
  if (!c->npfd) {
    if (ms > 0) poll(NULL, 0, ms);
    return 0;
  }
  update_poll_events(c);
  int r = poll(c->pfd, (nfds_t)c->npfd, ms);
  if (r <= 0) return 0;
  for (int i = 0; i < c->npfd; i++) {
    short re = c->pfd[i].revents;
    if (!re || c->pfd[i].fd < 0) continue;
    int p = c->pfd_peer[i];
    if (re & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) moved += stream_in(c, p, 0);
    if ((re & POLLOUT) && !c->ch[p].closed) moved += sock_out(c, p);
    /* a hang-up with nothing left to read: stream_in saw EOF already */
  }
  return moved;
}

/* ------------------------------------------------------------------ */
/* The wait loop                                                       */

typedef struct Wait {
  Req **reqs;
  int nreq;
  const int *sig_peers; /* world ranks */
  const uint64_t *sig_target;
  int nsig, sig_type;
  int bye_all;
  /* or any condition: 1 when done, else *blame and growing *prog */
  int (*ready)(PrtComm *c, void *arg, uint64_t *prog, int *blame);
  void *arg;
} Wait;

static PadU64 *sig_slot(const SegHdr *s, int type, int from) {
  return &((PadU64 *)((uint8_t *)s + s->sig_off))[(size_t)type * (size_t)s->world + (size_t)from];
}

static uint64_t sig_get(const PrtComm *c, int type, int from) {
  return atomic_load_explicit(&sig_slot(c->seg, type, from)->v, memory_order_acquire);
}

/* 1 when done; else *blame is the rank waited for and *prog grows with progress. */
static int wait_check(PrtComm *c, const Wait *w, uint64_t *prog, int *blame) {
  uint64_t pg = 0;
  int done = 1;
  *blame = -1;
  if (w->ready) {
    done = w->ready(c, w->arg, prog, blame);
    if (!done && *blame >= 0 && c->ch[*blame].closed) die(c, WHY_EXITED, *blame, c->me, "");
    return done;
  }
  for (int i = 0; i < w->nreq; i++) {
    Req *q = w->reqs[i];
    pg += q->done + (uint64_t)q->complete;
    if (!q->complete) {
      if (done) *blame = q->peer;
      done = 0;
      if (c->ch[q->peer].closed) die(c, WHY_EXITED, q->peer, c->me, "");
    }
  }
  for (int i = 0; i < w->nsig; i++) {
    int p = w->sig_peers[i];
    uint64_t v = sig_get(c, w->sig_type, p);
    pg += v;
    if (v < w->sig_target[i]) {
      if (done) *blame = p;
      done = 0;
      if (c->ch[p].closed) die(c, WHY_EXITED, p, c->me, "");
    }
  }
  if (w->bye_all) {
    for (int p = 0; p < c->world; p++) {
      if (p == c->me) continue;
      if (c->ch[p].bye_rx) {
        pg++;
        continue;
      }
      if (done) *blame = p;
      done = 0;
    }
  }
  *prog = pg;
  return done;
}

/* Follows "rank K waits for rank J" until a rank that does not answer (or
 * a cycle). Returns the rank to blame, or -2 if the wait completed meanwhile. */
static int resolve_blame(PrtComm *c, const Wait *w, int k) {
  char *seen = calloc((size_t)c->world, 1);
  if (!seen) return k;
  double qwait = c->timeout / 4;
  if (qwait > 2.0) qwait = 2.0;
  if (qwait < 0.3) qwait = 0.3;
  for (;;) {
    if (k < 0 || k == c->me || seen[k] || c->ch[k].closed) break;
    seen[k] = 1;
    Chan *ch = &c->ch[k];
    ch->waitr_got = 0;
    send_ctl(c, k, F_WAITQ, 0, 0, 0, NULL, 0);
    double end = now_s() + qwait;
    while (!ch->waitr_got && now_s() < end) {
      uint64_t pg;
      int b;
      progress_shm(c);
      progress_sockets(c, 5);
      if (wait_check(c, w, &pg, &b)) {
        free(seen);
        return -2;
      }
    }
    if (!ch->waitr_got) break;          /* no answer: it is the one stuck */
    int next = ch->waitr_val;
    if (next < 0 || next == c->me || seen[next]) break; /* not in a wait, or waits for us */
    k = next;
  }
  free(seen);
  return k;
}

static void wait_for(PrtComm *c, const Wait *w) {
  uint64_t prog = 0, last = 0;
  int blame = -1;
  if (wait_check(c, w, &last, &blame)) return;
  c->in_wait = 1;
  c->waiting_for = blame;
  double t_last = now_s(), spin_until = t_last + c->spin_s;
  unsigned iter = 0;
  for (;;) {
    iter++;
    size_t moved = progress_shm(c);
    if (c->ntcp > 0 || (iter & 63) == 0) moved += progress_sockets(c, 0);
    if (wait_check(c, w, &prog, &blame)) break;
    c->waiting_for = blame;
    double t = now_s();
    if (prog != last) {
      last = prog;
      t_last = t;
    }
    if (moved || t == t_last) spin_until = t + c->spin_s;
    if (t - t_last >= c->timeout) {
      int k = resolve_blame(c, w, blame);
      if (k == -2) break;
      char n[32];
      snprintf(n, sizeof n, "%g", c->timeout);
      die(c, WHY_TIMEOUT, k, c->me, n);
    }
    if (t < spin_until) {
      if (!moved) {
        sched_yield();
        c->n_yield++;
      }
      continue;
    }
    int ms = (int)((c->timeout - (t - t_last)) * 1000) + 1;
    if (ms > SLEEP_MS) ms = SLEEP_MS;
    flush_kicks(c);
    if (c->seg) atomic_store(&c->seg->sleeping, 1);
    moved = progress_shm(c);
    if (!moved && !wait_check(c, w, &prog, &blame) && prog == last) {
      double ts = now_s();
      c->n_sleep++;
      moved = progress_sockets(c, ms);
      if (now_s() - ts >= ms * 1e-3 * 0.9) c->n_sleep_full++;
    }
    if (c->seg) atomic_store(&c->seg->sleeping, 0);
    if (moved) spin_until = now_s() + c->spin_s;
  }
  c->in_wait = 0;
  c->waiting_for = -1;
}

static void op_end(PrtComm *c) {
  flush_kicks(c);
  c->op = OP_NONE;
}

static void wait_reqs(PrtComm *c, Req **reqs, int n) {
  Wait w = {.reqs = reqs, .nreq = n};
  wait_for(c, &w);
}

/* ------------------------------------------------------------------ */
/* Posting                                                             */

static void post_send(PrtComm *c, Req *q, int peer, uint64_t key, const void *buf, size_t bytes) {
  memset(q, 0, sizeof *q);
  q->peer = peer;
  q->is_send = 1;
  q->key = key;
  q->buf = (uint8_t *)buf;
  q->bytes = bytes;
  Chan *ch = &c->ch[peer];
  if (ch->closed) die(c, ch->bye_rx ? WHY_EXITED : WHY_LOST, peer, c->me, "");
  if (ch->sq_tail)
    ch->sq_tail->next = q;
  else
    ch->sq = q;
  ch->sq_tail = q;
  if (ch->shm)
    ring_out(c, peer);
  else
    sock_out(c, peer);
}

static void post_recv(PrtComm *c, Req *q, int peer, uint64_t key, void *buf, size_t bytes) {
  memset(q, 0, sizeof *q);
  q->peer = peer;
  q->key = key;
  q->buf = buf;
  q->bytes = bytes;
  Chan *ch = &c->ch[peer];
  for (Unexp *u = ch->ux, *prev = NULL; u; prev = u, u = u->next) {
    if (u->key != key) continue;
    if (u->total != bytes) size_mismatch(c, peer, key, u->total, bytes);
    if (prev)
      prev->next = u->next;
    else
      ch->ux = u->next;
    if (ch->ux_tail == u) ch->ux_tail = prev;
    if (bytes) memcpy(buf, u->buf, u->got);
    q->done = u->got;
    if (u->complete) {
      q->complete = 1;
    } else {
      /* still arriving: the rest goes straight into the user's buffer */
      ch->in_ux = NULL;
      ch->in_req = q;
    }
    free(u->buf);
    free(u);
    return;
  }
  if (ch->posted_tail)
    ch->posted_tail->next = q;
  else
    ch->posted = q;
  ch->posted_tail = q;
}

static void check_peer(PrtComm *c, int peer, const char *what) {
  if (peer < 0 || peer >= c->world || peer == c->me)
    die_error(c, "%s: bad peer rank %d (this is rank %d of %d)", what, peer, c->me, c->world);
}

void prt_send(PrtComm *c, int peer, uint32_t tag, const void *buf, size_t bytes) {
  check_peer(c, peer, "prt_send");
  c->op = OP_SEND;
  c->op_peer = peer;
  c->op_tag = tag;
  Req q, *qp = &q;
  post_send(c, &q, peer, tag, buf, bytes);
  wait_reqs(c, &qp, 1);
  op_end(c);
}

void prt_recv(PrtComm *c, int peer, uint32_t tag, void *buf, size_t bytes) {
  check_peer(c, peer, "prt_recv");
  c->op = OP_RECV;
  c->op_peer = peer;
  c->op_tag = tag;
  Req q, *qp = &q;
  post_recv(c, &q, peer, tag, buf, bytes);
  wait_reqs(c, &qp, 1);
  op_end(c);
}

/* ------------------------------------------------------------------ */
/* Groups                                                              */

PrtGroup *prt_group_new(PrtComm *c, const int *ranks, int n) {
  if (n <= 0) die_error(c, "prt_group_new: empty group");
  int me = -1;
  for (int i = 0; i < n; i++) {
    if (ranks[i] < 0 || ranks[i] >= c->world) die_error(c, "prt_group_new: rank %d is not in [0, %d)", ranks[i], c->world);
    for (int j = 0; j < i; j++)
      if (ranks[j] == ranks[i]) die_error(c, "prt_group_new: rank %d listed twice", ranks[i]);
    if (ranks[i] == c->me) me = i;
  }
  if (me < 0) die_error(c, "prt_group_new: this rank (%d) is not in the group", c->me);
  PrtGroup *g = calloc(1, sizeof *g);
  int *r = malloc(sizeof(int) * (size_t)n);
  if (!g || !r) die_error(c, "out of memory");
  memcpy(r, ranks, sizeof(int) * (size_t)n);
  g->c = c;
  g->n = n;
  g->me = me;
  g->ranks = r;
  uint32_t h = 2166136261u;
  for (int i = 0; i < n; i++)
    for (int b = 0; b < 4; b++) h = (h ^ (uint32_t)((ranks[i] >> (8 * b)) & 0xff)) * 16777619u;
  /* the k-th group created with the same list gets its own id */
  uint32_t count = 0;
  for (int i = 0; i < c->ngids; i++)
    if (c->gids[i].hash == h) count = ++c->gids[i].count;
  if (count == 0) {
    if (c->ngids == c->capgids) {
      int cap = c->capgids ? 2 * c->capgids : 16;
      GidCount *p = realloc(c->gids, sizeof *p * (size_t)cap);
      if (!p) die_error(c, "out of memory");
      c->gids = p;
      c->capgids = cap;
    }
    c->gids[c->ngids++] = (GidCount){h, 0};
  }
  g->id = ((h ^ (count * 0x9e3779b9u)) & 0x7fffffffu);
  int shm = c->host_shm && n > 1;
  for (int i = 0; i < n && shm; i++)
    if (ranks[i] != c->me && !c->ch[ranks[i]].shm) shm = 0;
  g->shm = shm;
  group_desc(g->desc, sizeof g->desc, ranks, n);
  return g;
}

int prt_group_size(const PrtGroup *g) { return g->n; }
int prt_group_rank(const PrtGroup *g) { return g->me; }

void prt_group_free(PrtGroup *g) {
  if (!g) return;
  free(g->ranks);
  free(g);
}

static uint64_t coll_key(const PrtGroup *g, unsigned phase, unsigned step) {
  return (1ull << 63) | ((uint64_t)g->id << 32) | ((uint64_t)(g->seq & 0xfff) << 20) | ((uint64_t)(phase & 0xf) << 16) |
         (uint64_t)(step & 0xffff);
}

static void *scratch(PrtComm *c, size_t bytes) {
  if (bytes > c->scratch_cap) {
    free(c->scratch);
    c->scratch = malloc(bytes);
    if (!c->scratch) die_error(c, "out of memory (%zu bytes of scratch)", bytes);
    c->scratch_cap = bytes;
  }
  return c->scratch;
}

/* dst1[i] (and dst2[i]) = ((src[0][i] + src[1][i]) + ...) + src[g-1][i],
 * each addition rounded to the element type. dst1 may be one of the
 * sources (each block is summed into t before anything is written). */
#define SUM_BLOCK 1024
#define DEFINE_SUM(NAME, T)                                                                                            \
  static void NAME(T *dst1, T *dst2, const T *const *src, int g, size_t len, int nt) {                               \
    T t[SUM_BLOCK];                                                                                                    \
    for (size_t o = 0; o < len; o += SUM_BLOCK) {                                                                      \
      size_t m = min_sz(SUM_BLOCK, len - o);                                                                           \
      const T *a = src[0] + o, *b = g > 1 ? src[1] + o : NULL, *c = g > 2 ? src[2] + o : NULL,                      \
              *d = g > 3 ? src[3] + o : NULL;                                                                          \
      if (g >= 4)                                                                                                      \
        for (size_t i = 0; i < m; i++) t[i] = ((a[i] + b[i]) + c[i]) + d[i];                                           \
      else if (g == 3)                                                                                                 \
        for (size_t i = 0; i < m; i++) t[i] = (a[i] + b[i]) + c[i];                                                    \
      else if (g == 2)                                                                                                 \
        for (size_t i = 0; i < m; i++) t[i] = a[i] + b[i];                                                             \
      else                                                                                                             \
        memcpy(t, a, m * sizeof(T));                                                                                   \
      int j = 4;                                                                                                       \
      for (; j + 3 <= g; j += 3) {                                                                                     \
        const T *x = src[j] + o, *y = src[j + 1] + o, *z = src[j + 2] + o;                                             \
        for (size_t i = 0; i < m; i++) t[i] = ((t[i] + x[i]) + y[i]) + z[i];                                           \
      }                                                                                                                \
      for (; j < g; j++) {                                                                                             \
        const T *x = src[j] + o;                                                                                       \
        for (size_t i = 0; i < m; i++) t[i] += x[i];                                                                   \
      }                                                                                                                \
      copy_out(dst1 + o, t, m * sizeof(T), nt);                                                                        \
      if (dst2) memcpy(dst2 + o, t, m * sizeof(T));                                                                    \
    }                                                                                                                  \
  }
DEFINE_SUM(sum_f32, float)
DEFINE_SUM(sum_f64, double)

static void sum_any(size_t esz, void *dst1, void *dst2, const void *const *src, int g, size_t len, int nt) {
  if (esz == sizeof(float))
    sum_f32(dst1, dst2, (const float *const *)src, g, len, nt);
  else
    sum_f64(dst1, dst2, (const double *const *)src, g, len, nt);
}

/* ---- shared-memory collectives ---- */

static uint8_t *stage_base(const SegHdr *s) { return (uint8_t *)s + s->stage_off; }

static SegHdr *seg_of(PrtComm *c, int rank) { return rank == c->me ? c->seg : c->ch[rank].pseg; }

/* Signals every other member once (type). */
static void shm_signal_all(PrtGroup *g, int type) {
  PrtComm *c = g->c;
  for (int i = 0; i < g->n; i++) {
    int p = g->ranks[i];
    if (p == c->me) continue;
    atomic_fetch_add(&sig_slot(c->ch[p].pseg, type, c->me)->v, 1);
    kick(c, p);
  }
}

/* Waits for one more signal (type) from each rank in peers (world ranks). */
static void shm_expect(PrtComm *c, const int *peers, int n, int type) {
  uint64_t tgt_s[16];
  uint64_t *tgt = n <= 16 ? tgt_s : malloc(sizeof(uint64_t) * (size_t)n);
  if (!tgt) die_error(c, "out of memory");
  for (int i = 0; i < n; i++) tgt[i] = ++c->ch[peers[i]].sigexp[type];
  Wait w = {.sig_peers = peers, .sig_target = tgt, .nsig = n, .sig_type = type};
  wait_for(c, &w);
  if (tgt != tgt_s) free(tgt);
}

typedef struct Others {
  int n;
  int *r;
  int s[16];
} Others;

static void others_of(const PrtGroup *g, Others *o) {
  o->r = g->n - 1 <= 16 ? o->s : malloc(sizeof(int) * (size_t)g->n);
  if (!o->r) die_error(g->c, "out of memory");
  o->n = 0;
  for (int i = 0; i < g->n; i++)
    if (i != g->me) o->r[o->n++] = g->ranks[i];
}

static void others_free(Others *o) {
  if (o->r != o->s) free(o->r);
}

/* Staging bytes every member has (segments may differ when /dev/shm was tight). */
static size_t group_stage_bytes(const PrtGroup *g) {
  size_t cap = (size_t)g->c->seg->stage_cap;
  for (int i = 0; i < g->n; i++) cap = min_sz(cap, (size_t)seg_of(g->c, g->ranks[i])->stage_cap);
  return cap;
}

/* The all-reduce as a pipeline over chunks of the vector. For chunk k,
 * in slot k % NSLOT of each member's staging area:
 *   stage (k):  copy the chunk, except this member's own slice, into the slot
 *   sum (k):    once every member staged k: sum this member's slice from
 *               every member's slot (its own from the vector) in group
 *               order; the result goes to the vector and the slot
 *   copy (k):   once every member summed k: copy the other slices out of
 *               their owners' slots into the vector
 * A slot is staged again (chunk k + NSLOT) once every member copied chunk k
 * out. Each step signals the other members (per-pair counters by type);
 * whenever a rank runs it does every step that is ready, so with more ranks
 * than cores a rank that gets the CPU moves several chunks at once. */
typedef struct ArPipe {
  PrtGroup *g;
  int n_oth;
  const int *oth;  /* the other members, world ranks */
  uint64_t *base;  /* [type - SIG_STAGED][other]: counter values at the start */
  size_t nch, k1, k2, k3; /* chunks; next to stage, to sum, to copy */
} ArPipe;

/* min over the other members of (signals of type since the start); *who: the first one at the minimum */
static uint64_t pipe_min(const ArPipe *a, int type, int *who) {
  uint64_t m = UINT64_MAX;
  for (int i = 0; i < a->n_oth; i++) {
    uint64_t v = sig_get(a->g->c, type, a->oth[i]) - a->base[(size_t)(type - SIG_STAGED) * (size_t)a->n_oth + (size_t)i];
    if (v < m) {
      m = v;
      *who = a->oth[i];
    }
  }
  return m;
}

static int pipe_ready(PrtComm *c, void *arg, uint64_t *prog, int *blame) {
  ArPipe *a = arg;
  int w1 = -1, w2 = -1, w3 = -1;
  uint64_t st = pipe_min(a, SIG_STAGED, &w1), su = pipe_min(a, SIG_SUMMED, &w2), co = pipe_min(a, SIG_COPIED, &w3);
  *prog = st + su + co;
  if (a->k2 < a->k1 && st > a->k2) return 1;
  if (a->k3 < a->k2 && su > a->k3) return 1;
  if (a->k1 < a->nch && (a->k1 < NSLOT || co > a->k1 - NSLOT)) return 1;
  if (a->k3 == a->nch && co >= a->nch) return 1;
  /* blame whoever holds up the oldest unfinished step */
  *blame = a->k3 < a->k2 ? w2 : a->k2 < a->k1 ? w1 : w3;
  return 0;
}

static void shm_allreduce(PrtGroup *g, void *vbuf, size_t n, size_t esz) {
  PrtComm *c = g->c;
  int G = g->n, me = g->me;
  uint8_t *b = vbuf;
  size_t slot_bytes = group_stage_bytes(g) / NSLOT;
  size_t E = slot_bytes / esz;
  int nt = nt_for(n * esz);
  Others o;
  others_of(g, &o);
  const void *src_s[16];
  uint8_t *pst_s[16];
  uint64_t base_s[3 * 16];
  const void **src = G <= 16 ? src_s : malloc(sizeof(void *) * (size_t)G);
  uint8_t **pst = G <= 16 ? pst_s : malloc(sizeof(uint8_t *) * (size_t)G);
  uint64_t *base = G <= 17 ? base_s : malloc(sizeof(uint64_t) * 3 * (size_t)G);
  if (!src || !pst || !base) die_error(c, "out of memory");
  for (int j = 0; j < G; j++) pst[j] = stage_base(seg_of(c, g->ranks[j]));
  ArPipe a = {g, o.n, o.r, base, (n + E - 1) / E, 0, 0, 0};
  /* base[type-1][i]: signals of that type already consumed from other i */
  for (int t = 0; t < 3; t++)
    for (int i = 0; i < o.n; i++) base[(size_t)t * (size_t)o.n + (size_t)i] = c->ch[o.r[i]].sigexp[SIG_STAGED + t];
  Wait w = {.ready = pipe_ready, .arg = &a};
#define CHUNK(k, c0, m) size_t c0 = (k) * E, m = min_sz(E, n - c0)
#define SLOT(j, k) (pst[j] + ((k) % NSLOT) * slot_bytes)
  for (;;) {
    int did = 0, who = -1;
    /* sum every chunk all members have staged */
    if (a.k2 < a.k1 && pipe_min(&a, SIG_STAGED, &who) > a.k2) {
      CHUNK(a.k2, c0, m);
      size_t lo = m * (size_t)me / (size_t)G, hi = m * (size_t)(me + 1) / (size_t)G;
      uint8_t *mine = b + (c0 + lo) * esz;
      for (int j = 0; j < G; j++) src[j] = j == me ? (const void *)mine : (const void *)(SLOT(j, a.k2) + lo * esz);
      sum_any(esz, mine, SLOT(me, a.k2) + lo * esz, src, G, hi - lo, nt);
      shm_signal_all(g, SIG_SUMMED);
      a.k2++;
      did = 1;
    }
    /* copy out every chunk all members have summed */
    if (a.k3 < a.k2 && pipe_min(&a, SIG_SUMMED, &who) > a.k3) {
      CHUNK(a.k3, c0, m);
      for (int d = 1; d < G; d++) {
        int j = (me + d) % G;
        size_t jl = m * (size_t)j / (size_t)G, jh = m * (size_t)(j + 1) / (size_t)G;
        copy_out(b + (c0 + jl) * esz, SLOT(j, a.k3) + jl * esz, (jh - jl) * esz, nt);
      }
      shm_signal_all(g, SIG_COPIED);
      a.k3++;
      did = 1;
    }
    /* stage the next chunk once its slot is free everywhere */
    if (a.k1 < a.nch && (a.k1 < NSLOT || pipe_min(&a, SIG_COPIED, &who) > a.k1 - NSLOT)) {
      CHUNK(a.k1, c0, m);
      size_t lo = m * (size_t)me / (size_t)G, hi = m * (size_t)(me + 1) / (size_t)G;
      uint8_t *slot = SLOT(me, a.k1), *bk = b + c0 * esz;
      memcpy(slot, bk, lo * esz); /* every slice but this member's own (only it reads that one) */
      memcpy(slot + hi * esz, bk + hi * esz, (m - hi) * esz);
      shm_signal_all(g, SIG_STAGED);
      a.k1++;
      did = 1;
    }
    if (a.k3 == a.nch && pipe_min(&a, SIG_COPIED, &who) >= a.nch) break; /* nobody reads our slots any more */
    if (!did) wait_for(c, &w);
  }
#undef CHUNK
#undef SLOT
#if defined(__SSE2__)
  _mm_sfence(); /* the non-temporal stores are ordered before anything after the call */
#endif
  for (int i = 0; i < o.n; i++)
    for (int t = SIG_STAGED; t <= SIG_COPIED; t++) c->ch[o.r[i]].sigexp[t] += a.nch;
  if (src != src_s) free(src);
  if (pst != pst_s) free(pst);
  if (base != base_s) free(base);
  others_free(&o);
}

/* ---- zero-copy all-reduce (buffers from prt_comm_alloc_shared) ---- */

static ShReg *own_region(PrtComm *c, const void *p, size_t bytes) {
  for (int i = 0; i < c->nregs; i++) {
    ShReg *r = &c->regs[i];
    if (r->fd >= 0 && (const uint8_t *)p >= r->base && (size_t)((const uint8_t *)p - r->base) + bytes <= r->size) return r;
  }
  return NULL;
}

/* The buffer rank p published for the current all-reduce, mapped here (once per region). */
static uint8_t *peer_buffer(PrtComm *c, int p, size_t bytes) {
  Chan *ch = &c->ch[p];
  SegHdr *s = ch->pseg;
  uint64_t id = s->zc_id, size = s->zc_size, off = s->zc_off;
  int fd = s->zc_fd;
  if (off > size || bytes > size - off) die_error(c, "rank %d published a shared buffer of %llu bytes at offset %llu for %zu bytes", p,
                                                  (unsigned long long)size, (unsigned long long)off, bytes);
  for (int i = 0; i < ch->npm; i++)
    if (ch->pm[i].id == id) return ch->pm[i].base + off;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)s->pid, fd);
  int f = open(path, O_RDWR | O_CLOEXEC);
  struct stat st;
  void *m = MAP_FAILED;
  if (f >= 0 && fstat(f, &st) == 0 && (uint64_t)st.st_size >= size)
    m = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
  int e = errno;
  if (f >= 0) close(f);
  if (m == MAP_FAILED) die_error(c, "cannot map rank %d's shared buffer (%s, %llu bytes): %s", p, path, (unsigned long long)size, strerror(e));
  if (ch->npm == ch->cappm) {
    int cap = ch->cappm ? 2 * ch->cappm : 4;
    ShReg *q = realloc(ch->pm, sizeof *q * (size_t)cap);
    if (!q) die_error(c, "out of memory");
    ch->pm = q, ch->cappm = cap;
  }
  ch->pm[ch->npm++] = (ShReg){m, (size_t)size, id, -1};
  return (uint8_t *)m + off;
}

/* 1) Every member publishes where its buffer lies in its shared memory
 * (SIG_ZC, which also releases the buffer's contents); 0 is returned, on
 * every member alike, when one member's is not shared (the caller stages
 * it). 2) Member `me` sums its slice (the slices of shm_allreduce's
 * single chunk) in group order straight from every member's buffer into
 * its own, block by block, and copies each summed block into the other
 * members' buffers (non-temporal stores for large vectors). Nobody else
 * reads or writes slice `me` of any buffer meanwhile, so this needs no
 * synchronisation. 3) It signals SIG_SUMMED and returns once every member
 * has (every slice of this buffer is written). Each member reads and
 * writes the vector's size once: one memcpy's worth. */
#define ZC_BLOCK (16u << 10) /* bytes summed before they are copied to the others (stay in L1; 8-64 KiB measured alike) */
static int zc_allreduce(PrtGroup *g, void *vbuf, size_t n, size_t esz) {
  PrtComm *c = g->c;
  int G = g->n, me = g->me;
  uint8_t *b = vbuf;
  ShReg *r = own_region(c, vbuf, n * esz);
  SegHdr *s = c->seg;
  s->zc_id = r ? r->id : 0, s->zc_size = r ? r->size : 0, s->zc_off = r ? (uint64_t)(b - r->base) : 0, s->zc_fd = r ? r->fd : -1;
  Others o;
  others_of(g, &o);
  shm_signal_all(g, SIG_ZC);
  shm_expect(c, o.r, o.n, SIG_ZC);
  int all = r != NULL;
  for (int i = 0; i < o.n; i++) all &= seg_of(c, o.r[i])->zc_id != 0;
  if (!all) {
    c->n_zc_fallback++;
    others_free(&o);
    return 0;
  }
  uint8_t *bs_s[16];
  const void *src_s[16];
  uint8_t **bs = G <= 16 ? bs_s : malloc(sizeof(void *) * (size_t)G);
  const void **src = G <= 16 ? src_s : malloc(sizeof(void *) * (size_t)G);
  if (!bs || !src) die_error(c, "out of memory");
  for (int j = 0; j < G; j++) bs[j] = j == me ? b : peer_buffer(c, g->ranks[j], n * esz);
  int nt = nt_for(n * esz);
  size_t lo = n * (size_t)me / (size_t)G, hi = n * (size_t)(me + 1) / (size_t)G, E = ZC_BLOCK / esz;
  for (size_t c0 = lo; c0 < hi; c0 += E) {
    size_t m = min_sz(E, hi - c0);
    for (int j = 0; j < G; j++) src[j] = bs[j] + c0 * esz;
    sum_any(esz, b + c0 * esz, NULL, src, G, m, 0);
    for (int d = 1; d < G; d++) copy_out(bs[(me + d) % G] + c0 * esz, b + c0 * esz, m * esz, nt);
  }
#if defined(__SSE2__)
  _mm_sfence(); /* the non-temporal stores into the others' buffers before the signal */
#endif
  shm_signal_all(g, SIG_SUMMED);
  shm_expect(c, o.r, o.n, SIG_SUMMED);
  c->n_zc++;
  if (bs != bs_s) free(bs);
  if (src != src_s) free(src);
  others_free(&o);
  return 1;
}

void *prt_comm_alloc_shared(PrtComm *c, size_t bytes) {
  if (!c) return NULL;
  size_t size = (bytes + 4095) & ~(size_t)4095;
  if (!size) size = 4096;
  if (c->nregs == c->capregs) {
    int cap = c->capregs ? 2 * c->capregs : 4;
    ShReg *q = realloc(c->regs, sizeof *q * (size_t)cap);
    if (!q) return NULL;
    c->regs = q, c->capregs = cap;
  }
  /* a memfd (peers open it as /proc/<pid>/fd/<fd>); anonymous memory where there is none */
  int fd = memfd_create("pipec-shared", MFD_CLOEXEC);
  void *p = MAP_FAILED;
  if (fd >= 0 && ftruncate(fd, (off_t)size) == 0) p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    if (fd >= 0) close(fd);
    fd = -1;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
  }
  c->regs[c->nregs++] = (ShReg){p, size, ++c->next_reg, fd};
  return p;
}

void prt_comm_free_shared(PrtComm *c, void *p) {
  if (!c || !p) return;
  for (int i = 0; i < c->nregs; i++)
    if (c->regs[i].base == p) {
      munmap(p, c->regs[i].size);
      if (c->regs[i].fd >= 0) close(c->regs[i].fd);
      c->regs[i] = c->regs[--c->nregs];
      return;
    }
  die_error(c, "prt_comm_free_shared: %p is not from prt_comm_alloc_shared", p);
}

static void shm_broadcast(PrtGroup *g, int root, void *vbuf, size_t bytes) {
  PrtComm *c = g->c;
  uint8_t *b = vbuf;
  size_t E = group_stage_bytes(g) / 2;
  int rootw = g->ranks[root];
  int nt = nt_for(bytes);
  Others o;
  others_of(g, &o);
  size_t k = 0;
  if (g->me == root) {
    for (size_t c0 = 0; c0 < bytes; c0 += E, k++) {
      if (k >= 2) shm_expect(c, o.r, o.n, SIG_SYNC); /* everyone has copied chunk k-2 out of this slot */
      memcpy(stage_base(c->seg) + (k & 1) * E, b + c0, min_sz(E, bytes - c0));
      shm_signal_all(g, SIG_SYNC);
    }
    for (size_t i = k >= 2 ? k - 2 : 0; i < k; i++) shm_expect(c, o.r, o.n, SIG_SYNC);
  } else {
    SegHdr *rs = seg_of(c, rootw);
    for (size_t c0 = 0; c0 < bytes; c0 += E, k++) {
      shm_expect(c, &rootw, 1, SIG_SYNC);
      copy_out(b + c0, stage_base(rs) + (k & 1) * E, min_sz(E, bytes - c0), nt);
      atomic_fetch_add(&sig_slot(rs, SIG_SYNC, c->me)->v, 1);
      kick(c, rootw);
    }
#if defined(__SSE2__)
    _mm_sfence();
#endif
  }
  others_free(&o);
}

static void shm_barrier(PrtGroup *g) {
  Others o;
  others_of(g, &o);
  shm_signal_all(g, SIG_SYNC);
  shm_expect(g->c, o.r, o.n, SIG_SYNC);
  others_free(&o);
}

/* ---- message collectives (any group) ---- */

static void msg_allreduce(PrtGroup *g, void *vbuf, size_t n, size_t esz) {
  PrtComm *c = g->c;
  int G = g->n, me = g->me;
  uint8_t *b = vbuf;
  size_t P = PIECE_BYTES / esz;
  size_t seg_lo[G + 1];
  for (int s = 0; s <= G; s++) seg_lo[s] = n * (size_t)s / (size_t)G;
  size_t maxseg = 0;
  for (int s = 0; s < G; s++) maxseg = seg_lo[s + 1] - seg_lo[s] > maxseg ? seg_lo[s + 1] - seg_lo[s] : maxseg;
  size_t rounds = (maxseg + P - 1) / P;
  size_t mylen = seg_lo[me + 1] - seg_lo[me];
  uint8_t *tmp = scratch(c, RS_WINDOW * (size_t)G * P * esz);
  Req *rq = calloc((size_t)G * (2 + 2 * rounds) + 2, sizeof(Req));
  Req **wl = calloc((size_t)G * (2 + 2 * rounds) + 2, sizeof(Req *));
  if (!rq || !wl) die_error(c, "out of memory");
  int nrq = 0;
  /* piece c of segment s: [seg_lo[s] + c*P, min(seg_hi, +P)) */
#define PIECE_LEN(s, r) (seg_lo[(s) + 1] - seg_lo[(s)] > (r) * P ? min_sz(P, seg_lo[(s) + 1] - seg_lo[(s)] - (r) * P) : 0)
  Req **recv_of = calloc((size_t)G * RS_WINDOW, sizeof(Req *)); /* [round % RS_WINDOW][member] */
  if (!recv_of) die_error(c, "out of memory");
  /* The all-gather receives go straight into the other members' slices, so
   * post them first: member j sends its summed slice only after it has
   * received every member's pieces of that slice, i.e. after our sends from
   * that region have completed. */
  for (int d = 1; d < G; d++) {
    int j = (me - d + G) % G;
    size_t len = seg_lo[j + 1] - seg_lo[j];
    if (len) post_recv(c, &rq[nrq++], g->ranks[j], coll_key(g, 2, 0), b + seg_lo[j] * esz, len * esz);
  }
  /* Receives are posted RS_WINDOW rounds ahead (peers run up to about two
   * rounds ahead of us; a piece whose receive is not posted yet would be
   * buffered and copied once more). Round r's pieces land in tmp slot r % RS_WINDOW. */
#define TMP(r, j) (tmp + (((r) % RS_WINDOW) * (size_t)G + (size_t)(j)) * P * esz)
  for (size_t r = 0; r < rounds + RS_WINDOW; r++) {
    size_t pr = r; /* post receives of round pr */
    if (pr < rounds && PIECE_LEN(me, pr) > 0)
      for (int j = 0; j < G; j++) {
        if (j == me) continue;
        Req *q = &rq[nrq++];
        post_recv(c, q, g->ranks[j], coll_key(g, 1, (unsigned)pr), TMP(pr, j), PIECE_LEN(me, pr) * esz);
        recv_of[(pr % RS_WINDOW) * (size_t)G + (size_t)j] = q;
      }
    if (r + 1 < RS_WINDOW) continue; /* fill the window first */
    size_t sr = r + 1 - RS_WINDOW; /* the round to send and sum */
    if (sr >= rounds) continue;
    for (int d = 1; d < G; d++) {
      int s = (me + d) % G;
      size_t len = PIECE_LEN(s, sr);
      if (!len) continue;
      post_send(c, &rq[nrq++], g->ranks[s], coll_key(g, 1, (unsigned)sr), b + (seg_lo[s] + sr * P) * esz, len * esz);
    }
    size_t len = PIECE_LEN(me, sr);
    if (!len) continue;
    int nw = 0;
    for (int j = 0; j < G; j++)
      if (j != me) wl[nw++] = recv_of[(sr % RS_WINDOW) * (size_t)G + (size_t)j];
    wait_reqs(c, wl, nw);
    const void *src[G];
    uint8_t *mine = b + (seg_lo[me] + sr * P) * esz;
    for (int j = 0; j < G; j++) src[j] = j == me ? (const void *)mine : (const void *)TMP(sr, j);
    sum_any(esz, mine, NULL, src, G, len, 0);
  }
#undef TMP
  /* all-gather: this member's summed segment to everyone */
  for (int d = 1; d < G; d++) {
    int s = (me + d) % G;
    if (mylen) post_send(c, &rq[nrq++], g->ranks[s], coll_key(g, 2, 0), b + seg_lo[me] * esz, mylen * esz);
  }
#undef PIECE_LEN
  for (int i = 0; i < nrq; i++) wl[i] = &rq[i];
  wait_reqs(c, wl, nrq);
  free(recv_of);
  free(wl);
  free(rq);
}

static void msg_broadcast(PrtGroup *g, int root, void *vbuf, size_t bytes) {
  PrtComm *c = g->c;
  int G = g->n;
  int pos = (g->me - root + G) % G;
  int prev = pos > 0 ? g->ranks[(g->me - 1 + G) % G] : -1;
  int next = pos + 1 < G ? g->ranks[(g->me + 1) % G] : -1;
  size_t np = (bytes + PIECE_BYTES - 1) / PIECE_BYTES;
  uint8_t *b = vbuf;
  Req *rr = calloc(np + 1, sizeof(Req)), *sr = calloc(np + 1, sizeof(Req));
  Req **wl = calloc(np + 1, sizeof(Req *));
  if (!rr || !sr || !wl) die_error(c, "out of memory");
  if (prev >= 0)
    for (size_t i = 0; i < np; i++)
      post_recv(c, &rr[i], prev, coll_key(g, 3, (unsigned)i), b + i * PIECE_BYTES, min_sz(PIECE_BYTES, bytes - i * PIECE_BYTES));
  for (size_t i = 0; i < np; i++) {
    if (prev >= 0) {
      Req *q = &rr[i];
      wait_reqs(c, &q, 1);
    }
    if (next >= 0)
      post_send(c, &sr[i], next, coll_key(g, 3, (unsigned)i), b + i * PIECE_BYTES, min_sz(PIECE_BYTES, bytes - i * PIECE_BYTES));
  }
  if (next >= 0) {
    for (size_t i = 0; i < np; i++) wl[i] = &sr[i];
    wait_reqs(c, wl, (int)np);
  }
  free(wl);
  free(sr);
  free(rr);
}

static void msg_barrier(PrtGroup *g) {
  PrtComm *c = g->c;
  int G = g->n;
  unsigned step = 0;
  for (int d = 1; d < G; d *= 2, step++) {
    Req q[2];
    Req *wl[2] = {&q[0], &q[1]};
    post_recv(c, &q[0], g->ranks[(g->me - d + G) % G], coll_key(g, 4, step), NULL, 0);
    post_send(c, &q[1], g->ranks[(g->me + d) % G], coll_key(g, 4, step), NULL, 0);
    wait_reqs(c, wl, 2);
  }
}

static void begin_coll(PrtGroup *g, int op) {
  PrtComm *c = g->c;
  c->op = op;
  c->op_group = g;
  g->seq++;
}

static void allreduce(PrtGroup *g, void *buf, size_t n, size_t esz) {
  if (g->n == 1 || n == 0) return;
  begin_coll(g, OP_ALLREDUCE);
  if (g->shm) {
    if (!(g->c->host_zc && n * esz >= g->c->zc_min && zc_allreduce(g, buf, n, esz))) shm_allreduce(g, buf, n, esz);
  } else
    msg_allreduce(g, buf, n, esz);
  op_end(g->c);
}

void prt_allreduce_sum(PrtGroup *g, float *buf, size_t n) { allreduce(g, buf, n, sizeof(float)); }
void prt_allreduce_sum_f64(PrtGroup *g, double *buf, size_t n) { allreduce(g, buf, n, sizeof(double)); }

void prt_broadcast(PrtGroup *g, int root, void *buf, size_t bytes) {
  if (root < 0 || root >= g->n) die_error(g->c, "prt_broadcast: root %d is not in [0, %d)", root, g->n);
  if (g->n == 1 || bytes == 0) return;
  begin_coll(g, OP_BCAST);
  g->c->op_root = root;
  if (g->shm)
    shm_broadcast(g, root, buf, bytes);
  else
    msg_broadcast(g, root, buf, bytes);
  op_end(g->c);
}

void prt_barrier(PrtGroup *g) {
  if (g->n == 1) return;
  begin_coll(g, OP_BARRIER);
  if (g->shm)
    shm_barrier(g);
  else
    msg_barrier(g);
  op_end(g->c);
}

/* ------------------------------------------------------------------ */
/* Init                                                                */

typedef struct PeerAddr {
  char host[256];
  int port, pid;
  uint64_t nonce;
  char ips[512];
} PeerAddr;

static int set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static uint64_t make_nonce(void) {
  uint64_t v = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) v = 0;
    close(fd);
  }
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  v ^= ((uint64_t)getpid() << 32) ^ (uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 20);
  return v ? v : 1;
}

static void local_ips(char *out, size_t len) {
  out[0] = 0;
  struct ifaddrs *ifa = NULL;
  if (getifaddrs(&ifa) != 0) return;
  size_t o = 0;
  for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP)) continue;
    char ip[INET_ADDRSTRLEN];
    if (!inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, sizeof ip)) continue;
    if (o + strlen(ip) + 2 >= len) break;
    o += (size_t)snprintf(out + o, len - o, "%s%s", o ? "," : "", ip);
  }
  freeifaddrs(ifa);
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Full read/write with a deadline, on a non-blocking socket. */
static int io_full(int fd, void *buf, size_t n, int writing, double deadline) {
  size_t o = 0;
  while (o < n) {
    ssize_t r = writing ? send(fd, (uint8_t *)buf + o, n - o, MSG_NOSIGNAL) : recv(fd, (uint8_t *)buf + o, n - o, 0);
    if (r > 0) {
      o += (size_t)r;
      continue;
    }
    if (r == 0) return -1;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    double left = deadline - now_s();
    if (left <= 0) return -1;
    struct pollfd p = {fd, writing ? POLLOUT : POLLIN, 0};
    poll(&p, 1, left > 0.1 ? 100 : (int)(left * 1000) + 1);
  }
  return 0;
}

static int connect_to(const char *ip, int port, double deadline) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(ip, NULL, &hints, &res) != 0 || !res) return -1;
    a.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (errno != EINPROGRESS) {
      close(fd);
      return -1;
    }
    double left = deadline - now_s();
    if (left > 5) left = 5;
    struct pollfd p = {fd, POLLOUT, 0};
    int e = 0;
    socklen_t el = sizeof e;
    if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

static void tune_socket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void seg_sizes(int world, int nlocal, uint64_t ring, uint64_t stage, uint64_t *ring_off, uint64_t *stage_off,
                      uint64_t *sig_off, uint64_t *total) {
  uint64_t o = (sizeof(SegHdr) + 4095) & ~4095ull;
  *sig_off = o;
  o += (uint64_t)N_SIGTYPE * (uint64_t)world * sizeof(PadU64);
  o = (o + 4095) & ~4095ull;
  *ring_off = o;
  o += (uint64_t)nlocal * (sizeof(RingHdr) + ring);
  o = (o + 4095) & ~4095ull;
  *stage_off = o;
  o += stage;
  *total = (o + 4095) & ~4095ull;
}

static uint64_t env_kib(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  char *e;
  unsigned long long x = strtoull(v, &e, 10);
  if (*e || x < 4 || x > (1ull << 22)) return dflt;
  uint64_t b = x << 10, p = 4096;
  while (p * 2 <= b) p *= 2; /* rings are powers of two */
  return p;
}

/* From creating this rank's segment until its name is unlinked (while init
 * waits for the others in the store), a launcher's SIGTERM/SIGINT/SIGHUP
 * would leave the name in /dev/shm: a handler unlinks it (unlink(2) is
 * async-signal-safe), puts the previous disposition back and re-raises. */
static char g_shm_path[128];
static const int g_guard_sigs[3] = {SIGTERM, SIGINT, SIGHUP};
static struct sigaction g_guard_old[3];
static int g_guard_on;

static void shm_guard_handler(int sig) {
  if (g_shm_path[0]) unlink(g_shm_path);
  for (int i = 0; i < 3; i++)
    if (g_guard_sigs[i] == sig) sigaction(sig, &g_guard_old[i], NULL);
  raise(sig);
}

static void shm_guard(const char *name) {
  snprintf(g_shm_path, sizeof g_shm_path, "/dev/shm%s", name);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = shm_guard_handler;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 3; i++) sigaction(g_guard_sigs[i], &sa, &g_guard_old[i]);
  g_guard_on = 1;
}

static void shm_unguard(void) {
  if (!g_guard_on) return;
  for (int i = 0; i < 3; i++) sigaction(g_guard_sigs[i], &g_guard_old[i], NULL);
  g_guard_on = 0;
  g_shm_path[0] = 0;
}

static void unlink_segment(PrtComm *c) {
  if (c->shm_name[0]) shm_unlink(c->shm_name);
  c->shm_name[0] = 0;
  shm_unguard();
}

/* Creates and maps this rank's segment; 0 on success. */
static int create_segment(PrtComm *c, int nlocal, uint64_t nonce) {
  uint64_t ring = env_kib("PIPEC_COMM_RING_KB", 1ull << 20), stage = env_kib("PIPEC_COMM_STAGE_KB", 2ull << 20);
  uint64_t ring_off, stage_off, sig_off, total;
  struct statvfs sv;
  double avail = statvfs("/dev/shm", &sv) == 0 ? (double)sv.f_bavail * (double)sv.f_frsize : 1e12;
  for (;;) {
    seg_sizes(c->world, nlocal, ring, stage, &ring_off, &stage_off, &sig_off, &total);
    /* leave room: every local rank makes one, and others use /dev/shm too */
    if ((double)total * nlocal * 2 <= avail || ring <= 65536) break;
    ring /= 2;
    stage /= 2;
  }
  snprintf(c->shm_name, sizeof c->shm_name, "/pipec-%d-r%d-%016llx", (int)getpid(), c->me, (unsigned long long)nonce);
  shm_guard(c->shm_name);
  int fd = shm_open(c->shm_name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    c->shm_name[0] = 0;
    shm_unguard();
    return -1;
  }
  if (ftruncate(fd, (off_t)total) != 0 || posix_fallocate(fd, 0, (off_t)total) != 0) {
    close(fd);
    unlink_segment(c);
    return -1;
  }
  void *p = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    close(fd);
    unlink_segment(c);
    return -1;
  }
  c->seg_fd = fd; /* open until every local peer has checked it can open it through /proc */
  SegHdr *s = p;
  s->seg_fd = fd;
  s->nonce = nonce;
  s->pid = (int32_t)getpid();
  s->rank = c->me;
  s->world = c->world;
  s->nlocal = nlocal;
  s->ring_cap = ring;
  s->ring_stride = sizeof(RingHdr) + ring;
  s->ring_off = ring_off;
  s->stage_cap = stage;
  s->stage_off = stage_off;
  s->sig_off = sig_off;
  s->total = total;
  atomic_store(&s->sleeping, 0);
  atomic_thread_fence(memory_order_seq_cst);
  s->magic = SEG_MAGIC;
  c->seg = s;
  c->seg_size = (size_t)total;
  return 0;
}

/* 1: /proc/<pid>/fd/<fd> of the owner opens the file behind fd_here for
 * writing (so memfds from prt_comm_alloc_shared can be mapped by peers the
 * same way) */
static int proc_fd_ok(int pid, int fd, int fd_here) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
  int f = open(path, O_RDWR | O_CLOEXEC);
  if (f < 0) return 0;
  struct stat a, b;
  int ok = fstat(f, &a) == 0 && fstat(fd_here, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
  close(f);
  return ok;
}

static SegHdr *map_segment(const char *name, const PeerAddr *pa, int rank, int world, size_t *size, int *zc_ok) {
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return NULL;
  struct stat stt;
  if (fstat(fd, &stt) != 0 || (size_t)stt.st_size < sizeof(SegHdr)) {
    close(fd);
    return NULL;
  }
  void *p = mmap(NULL, (size_t)stt.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    close(fd);
    return NULL;
  }
  SegHdr *s = p;
  if (s->magic != SEG_MAGIC || s->nonce != pa->nonce || s->pid != pa->pid || s->rank != rank || s->world != world ||
      s->total != (uint64_t)stt.st_size) {
    close(fd);
    munmap(p, (size_t)stt.st_size);
    return NULL;
  }
  if (!proc_fd_ok(s->pid, s->seg_fd, fd)) *zc_ok = 0;
  close(fd);
  *size = (size_t)stt.st_size;
  return s;
}

static void comm_free(PrtComm *c) {
  if (!c) return;
  if (c->ch) {
    for (int p = 0; p < c->world; p++) {
      Chan *ch = &c->ch[p];
      if (ch->fd >= 0) close(ch->fd);
      if (ch->pseg) munmap(ch->pseg, (size_t)ch->pseg->total);
      for (int i = 0; i < ch->npm; i++) munmap(ch->pm[i].base, ch->pm[i].size);
      free(ch->pm);
      free(ch->ib);
      free(ch->co);
      for (Unexp *u = ch->ux; u;) {
        Unexp *n = u->next;
        free(u->buf);
        free(u);
        u = n;
      }
    }
  }
  unlink_segment(c);
  if (c->seg_fd >= 0) close(c->seg_fd);
  if (c->seg) munmap(c->seg, c->seg_size);
  for (int i = 0; i < c->nregs; i++) {
    munmap(c->regs[i].base, c->regs[i].size);
    if (c->regs[i].fd >= 0) close(c->regs[i].fd);
  }
  free(c->regs);
  prt_group_free(c->world_group);
  free(c->ch);
  free(c->pfd);
  free(c->pfd_peer);
  free(c->gids);
  free(c->kick_pending);
  free(c->kick_list);
  free(c->scratch);
  free(c);
}

static void key_of(char *out, size_t len, const char *prefix, const char *what, int rank) {
  snprintf(out, len, "%s/comm/%s/%d", prefix ? prefix : "", what, rank);
}

PrtComm *prt_comm_init(PrtStore *st, const char *prefix, int rank, int world, double timeout_s, char *err, size_t errlen) {
  if (world < 1 || rank < 0 || rank >= world) {
    set_err(err, errlen, "prt_comm_init: rank %d of %d is not valid", rank, world);
    return NULL;
  }
  signal(SIGPIPE, SIG_IGN);
  PrtComm *c = calloc(1, sizeof *c);
  if (!c) {
    set_err(err, errlen, "out of memory");
    return NULL;
  }
  c->me = rank;
  c->world = world;
  c->timeout = timeout_s > 0 ? timeout_s : 60;
  c->waiting_for = -1;
  c->seg_fd = -1;
  c->op = OP_INIT;
  {
    const char *sv = getenv("PIPEC_COMM_STATS");
    c->stats = sv && !strcmp(sv, "1");
  }
  c->ch = calloc((size_t)world, sizeof(Chan));
  c->kick_pending = calloc((size_t)world, 1);
  c->kick_list = calloc((size_t)world, sizeof(int));
  if (!c->ch || !c->kick_pending || !c->kick_list) {
    free(c->kick_pending);
    free(c->kick_list);
    free(c);
    set_err(err, errlen, "out of memory");
    return NULL;
  }
  for (int p = 0; p < world; p++) c->ch[p].fd = -1;
  int lfd = -1;
  PeerAddr *pa = NULL;
  int *lidx = NULL;
  char key[512];
  double deadline = now_s() + c->timeout;
  if (world == 1) goto done;
  if (!st) {
    set_err(err, errlen, "prt_comm_init: no store");
    goto fail;
  }
  {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)world + 64 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  /* 1. listen, publish how to reach this rank */
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in la;
  memset(&la, 0, sizeof la);
  la.sin_family = AF_INET;
  la.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t lal = sizeof la;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, sizeof la) != 0 || listen(lfd, world + 16) != 0 ||
      getsockname(lfd, (struct sockaddr *)&la, &lal) != 0) {
    set_err(err, errlen, "rank %d: cannot listen on a TCP port: %s", rank, strerror(errno));
    goto fail;
  }
  set_nonblock(lfd);
  uint64_t nonce = make_nonce();
  char host[256] = "";
  const char *host_env = getenv("PIPEC_COMM_HOST");
  if (host_env && *host_env)
    snprintf(host, sizeof host, "%s", host_env);
  else if (gethostname(host, sizeof host - 1) != 0 || !host[0])
    snprintf(host, sizeof host, "localhost");
  for (char *q = host; *q; q++)
    if (*q == ' ' || *q == '\n') *q = '_';
  char ips[512], rec[1024];
  local_ips(ips, sizeof ips);
  int rl = snprintf(rec, sizeof rec, "pipec1 %s %d %d %016llx %s", host, ntohs(la.sin_port), (int)getpid(),
                    (unsigned long long)nonce, ips[0] ? ips : "-");
  key_of(key, sizeof key, prefix, "addr", rank);
  if (prt_store_set(st, key, rec, (size_t)rl, err, errlen) != 0) goto fail;
  pa = calloc((size_t)world, sizeof *pa);
  lidx = calloc((size_t)world, sizeof *lidx);
  if (!pa || !lidx) {
    set_err(err, errlen, "out of memory");
    goto fail;
  }
  for (int p = 0; p < world; p++) {
    key_of(key, sizeof key, prefix, "addr", p);
    size_t len = 0;
    char *v = prt_store_get(st, key, &len, c->timeout, err, errlen);
    if (!v) goto fail;
    unsigned long long nn = 0;
    if (sscanf(v, "pipec1 %255s %d %d %llx %511s", pa[p].host, &pa[p].port, &pa[p].pid, &nn, pa[p].ips) != 5) {
      set_err(err, errlen, "rank %d: bad address record for rank %d: '%s'", rank, p, v);
      free(v);
      goto fail;
    }
    pa[p].nonce = nn;
    free(v);
  }
  /* 2. shared memory among the ranks of this host */
  int nlocal = 0;
  for (int p = 0; p < world; p++) lidx[p] = strcmp(pa[p].host, host) == 0 ? nlocal++ : -1;
  {
    /* more ranks here than CPUs to run them: wake-ups wait until the waker
     * waits itself (see kick). Spinning yields the CPU (sched_yield), which
     * measured better than sleeping at once even when oversubscribed. */
    cpu_set_t cs;
    int ncpu = sched_getaffinity(0, sizeof cs, &cs) == 0 ? CPU_COUNT(&cs) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int oversub = ncpu > 0 && nlocal > ncpu;
    const char *sp = getenv("PIPEC_COMM_SPIN_US"), *dk = getenv("PIPEC_COMM_DEFER_KICKS");
    c->spin_s = (sp && *sp ? atof(sp) : 50) * 1e-6;
    c->defer_kicks = dk && *dk ? atoi(dk) != 0 : oversub;
    const char *zm = getenv("PIPEC_COMM_ZC_MIN");
    c->zc_min = zm && *zm ? (size_t)strtoull(zm, NULL, 10) : ZC_MIN_DEFAULT;
  }
  if (nlocal > 1) {
    const char *noshm = getenv("PIPEC_COMM_SHM");
    int want = !(noshm && strcmp(noshm, "0") == 0);
    if (want) create_segment(c, nlocal, nonce);
    key_of(key, sizeof key, prefix, "shm", rank);
    const char *nm = c->seg ? c->shm_name : "-";
    if (prt_store_set(st, key, nm, strlen(nm), err, errlen) != 0) goto fail;
    int ok = c->seg != NULL;
    const char *zce = getenv("PIPEC_COMM_ZC");
    int zc_ok = !(zce && strcmp(zce, "0") == 0);
    for (int p = 0; p < world; p++) {
      if (p == rank || lidx[p] < 0) continue;
      key_of(key, sizeof key, prefix, "shm", p);
      size_t len = 0;
      char *v = prt_store_get(st, key, &len, c->timeout, err, errlen);
      if (!v) goto fail;
      size_t sz = 0;
      SegHdr *s = strcmp(v, "-") ? map_segment(v, &pa[p], p, world, &sz, &zc_ok) : NULL;
      free(v);
      if (!s) {
        ok = 0;
        continue;
      }
      c->ch[p].pseg = s;
    }
    key_of(key, sizeof key, prefix, "shmok", rank);
    char okv[3] = {ok ? '1' : '0', ok && zc_ok ? '1' : '0', 0};
    if (prt_store_set(st, key, okv, 2, err, errlen) != 0) goto fail;
    int all = ok, all_zc = ok && zc_ok;
    for (int p = 0; p < world; p++) {
      if (p == rank || lidx[p] < 0) continue;
      key_of(key, sizeof key, prefix, "shmok", p);
      size_t len = 0;
      char *v = prt_store_get(st, key, &len, c->timeout, err, errlen);
      if (!v) goto fail;
      if (v[0] != '1') all = 0;
      if (v[0] != '1' || v[1] != '1') all_zc = 0;
      free(v);
    }
    /* every local peer has checked /proc/<pid>/fd/<seg_fd> */
    if (c->seg_fd >= 0) close(c->seg_fd);
    c->seg_fd = -1;
    /* every local peer has mapped this segment (or given up): no name left behind */
    unlink_segment(c);
    if (all) {
      c->host_shm = 1;
      c->host_zc = all_zc;
      for (int p = 0; p < world; p++) {
        if (p == rank || lidx[p] < 0) continue;
        Chan *ch = &c->ch[p];
        ch->shm = 1;
        ch->rx = (RingHdr *)((uint8_t *)c->seg + c->seg->ring_off + (size_t)lidx[p] * c->seg->ring_stride);
        ch->rxd = (uint8_t *)(ch->rx + 1);
        ch->rxcap = c->seg->ring_cap;
        ch->tx = (RingHdr *)((uint8_t *)ch->pseg + ch->pseg->ring_off + (size_t)lidx[rank] * ch->pseg->ring_stride);
        ch->txd = (uint8_t *)(ch->tx + 1);
        ch->txcap = ch->pseg->ring_cap;
      }
    } else {
      for (int p = 0; p < world; p++)
        if (c->ch[p].pseg) {
          munmap(c->ch[p].pseg, (size_t)c->ch[p].pseg->total);
          c->ch[p].pseg = NULL;
        }
      if (c->seg) munmap(c->seg, c->seg_size);
      c->seg = NULL;
    }
  }
  /* 3. the TCP mesh: connect to every lower rank, accept every higher one */
  for (int p = 0; p < rank; p++) {
    int fd = -1;
    char base[1100], cand[1100];
    /* same host: loopback first; then the peer's interface addresses, then its name */
    snprintf(base, sizeof base, "%s%s,%s", lidx[p] >= 0 ? "127.0.0.1," : "", strcmp(pa[p].ips, "-") ? pa[p].ips : "",
             pa[p].host);
    while (fd < 0 && now_s() < deadline) {
      memcpy(cand, base, sizeof cand);
      char *save = NULL;
      for (char *ip = strtok_r(cand, ",", &save); ip && fd < 0; ip = strtok_r(NULL, ",", &save))
        if (*ip) fd = connect_to(ip, pa[p].port, deadline);
      if (fd < 0) usleep(50000);
    }
    if (fd < 0) {
      set_err(err, errlen, "rank %d: cannot connect to rank %d (%s port %d, addresses %s) within %g s", rank, p, pa[p].host,
              pa[p].port, pa[p].ips, c->timeout);
      goto fail;
    }
    c->ch[p].fd = fd;
    Hello h = {HS_MAGIC, 1, rank, p, world, 0, pa[p].nonce};
    if (io_full(fd, &h, sizeof h, 1, deadline) != 0) {
      set_err(err, errlen, "rank %d: handshake with rank %d failed", rank, p);
      goto fail;
    }
  }
  for (int got = 0; got < world - 1 - rank;) {
    double left = deadline - now_s();
    if (left <= 0) {
      char miss[256];
      size_t o = 0;
      miss[0] = 0;
      for (int p = rank + 1; p < world && o < sizeof miss - 16; p++)
        if (c->ch[p].fd < 0) o += (size_t)snprintf(miss + o, sizeof miss - o, "%s%d", o ? ", " : "", p);
      set_err(err, errlen, "rank %d: ranks %s did not connect within %g s", rank, miss, c->timeout);
      goto fail;
    }
    struct pollfd pf = {lfd, POLLIN, 0};
    if (poll(&pf, 1, left > 0.2 ? 200 : (int)(left * 1000) + 1) <= 0) continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    Hello h;
    double hd = now_s() + 5 < deadline ? now_s() + 5 : deadline;
    if (io_full(fd, &h, sizeof h, 0, hd) != 0 || h.magic != HS_MAGIC || h.kind != 1 || h.to != rank || h.world != world ||
        h.nonce != nonce || h.from <= rank || h.from >= world || c->ch[h.from].fd >= 0) {
      close(fd); /* a stranger, or a stale connection: ignore it */
      continue;
    }
    Hello r = {HS_MAGIC, 2, rank, h.from, world, 0, pa[h.from].nonce};
    if (io_full(fd, &r, sizeof r, 1, deadline) != 0) {
      close(fd);
      continue;
    }
    c->ch[h.from].fd = fd;
    got++;
  }
  for (int p = 0; p < rank; p++) {
    Hello h;
    set_nonblock(c->ch[p].fd);
    if (io_full(c->ch[p].fd, &h, sizeof h, 0, deadline) != 0 || h.magic != HS_MAGIC || h.kind != 2 || h.from != p ||
        h.to != rank || h.nonce != nonce) {
      set_err(err, errlen, "rank %d: no handshake reply from rank %d within %g s", rank, p, c->timeout);
      goto fail;
    }
  }
  close(lfd);
  lfd = -1;
  c->pfd = calloc((size_t)world, sizeof(struct pollfd));
  c->pfd_peer = calloc((size_t)world, sizeof(int));
  if (!c->pfd || !c->pfd_peer) {
    set_err(err, errlen, "out of memory");
    goto fail;
  }
  for (int p = 0; p < world; p++) {
    if (p == rank) continue;
    Chan *ch = &c->ch[p];
    set_nonblock(ch->fd);
    tune_socket(ch->fd);
    ch->ib = malloc(SOCK_IBUF);
    if (!ch->ib) {
      set_err(err, errlen, "out of memory");
      goto fail;
    }
    if (!ch->shm) c->ntcp++;
    c->pfd[c->npfd] = (struct pollfd){ch->fd, POLLIN | POLLRDHUP, 0};
    c->pfd_peer[c->npfd++] = p;
  }
done:
  free(pa);
  free(lidx);
  {
    int *all = malloc(sizeof(int) * (size_t)world);
    if (!all) {
      set_err(err, errlen, "out of memory");
      comm_free(c);
      return NULL;
    }
    for (int p = 0; p < world; p++) all[p] = p;
    c->world_group = prt_group_new(c, all, world);
    free(all);
  }
  c->op = OP_NONE;
  return c;
fail:
  if (lfd >= 0) close(lfd);
  free(pa);
  free(lidx);
  comm_free(c);
  return NULL;
}

int prt_comm_rank(const PrtComm *c) { return c->me; }
int prt_comm_world(const PrtComm *c) { return c->world; }

int prt_comm_finalize(PrtComm *c) {
  if (!c) return -1;
  prt_barrier(c->world_group);
  if (c->stats) {
    char shm[256];
    size_t o = 0;
    shm[0] = 0;
    for (int p = 0; p < c->world && o + 12 < sizeof shm; p++)
      if (p != c->me && c->ch[p].shm) o += (size_t)snprintf(shm + o, sizeof shm - o, "%s%d", o ? "," : "", p);
    fprintf(stderr,
            "pipec: rank %d: comm stats: shared memory with [%s], TCP with %d; %llu sleeps (%llu ran out), %llu yields, kicks "
            "%llu sent %llu received, %llu messages (%.1f MiB) arrived before their receive; %llu zero-copy all-reduces, %llu "
            "looked for shared buffers in vain\n",
            c->me, shm, c->ntcp, (unsigned long long)c->n_sleep, (unsigned long long)c->n_sleep_full,
            (unsigned long long)c->n_yield, (unsigned long long)c->n_kick_tx, (unsigned long long)c->n_kick_rx,
            (unsigned long long)c->n_ux, (double)c->ux_bytes / 1048576.0, (unsigned long long)c->n_zc,
            (unsigned long long)c->n_zc_fallback);
  }
  c->op = OP_FINALIZE;
  for (int p = 0; p < c->world; p++)
    if (p != c->me) send_ctl(c, p, F_BYE, 0, 0, 0, NULL, 0);
  /* wait for every peer's BYE: after it nobody sends anything, so closing
   * cannot cut off data in flight (and a peer's close is not a loss) */
  Wait w = {.bye_all = 1};
  wait_for(c, &w);
  for (int p = 0; p < c->world; p++) {
    Chan *ch = &c->ch[p];
    if (p == c->me || ch->closed) continue;
    /* flush anything still queued (the BYE itself) */
    double end = now_s() + 1.0;
    while (ch->co_off < ch->co_len && !ch->closed && now_s() < end) {
      struct pollfd pf = {ch->fd, POLLOUT, 0};
      poll(&pf, 1, 10);
      sock_out(c, p);
    }
    shutdown(ch->fd, SHUT_WR);
  }
  comm_free(c);
  return 0;
}

void prt_comm_poll(PrtComm *c) {
  if (!c || c->world == 1) return;
  int op = c->op;
  c->op = OP_POLL;
  progress_shm(c);
  progress_sockets(c, 0);
  c->op = op;
}

void prt_comm_abort(PrtComm *c, const char *why) {
  if (!c) {
    char line[1100];
    snprintf(line, sizeof line, "pipec: %s\n", why ? why : "aborted");
    write_line(line);
    exit(1);
  }
  die(c, WHY_ABORTED, c->me, c->me, why ? why : "aborted");
}
