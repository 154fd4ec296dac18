/* store.c — a key-value store speaking PyTorch's c10d TCPStore wire protocol
 * (see store.h): the client every rank uses, and the server that rank 0 runs
 * in a background thread when no torchrun agent serves one.
 *
 * The protocol, as PyTorch's TCPStore client and its libuv server speak it:
 * a query is a u8 type then its arguments; integers are little-endian; a
 * key or value is a u64 length then its bytes. A connection opens with
 * VALIDATE (u32 0x3C85F7CE, no reply) and, from newer clients, PING (u32
 * nonce, echoed back). WAIT answers one byte (STOP_WAITING) once every key
 * exists; a client that gives up sends CANCEL_WAIT and reads WAIT_CANCELED
 * (after a STOP_WAITING that crossed it on the wire). GET of a missing key
 * answers an empty value, so clients WAIT first. ADD keeps the number as
 * decimal text. The server answers every query type of the libuv server. */
#define _GNU_SOURCE
#include "runtime/store.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
  Q_VALIDATE, Q_SET, Q_COMPARE_SET, Q_GET, Q_ADD, Q_CHECK, Q_WAIT, Q_GETNUMKEYS, Q_DELETE_KEY, Q_APPEND,
  Q_MULTI_GET, Q_MULTI_SET, Q_CANCEL_WAIT, Q_PING, Q_QUEUE_PUSH, Q_QUEUE_POP, Q_QUEUE_LEN, Q_LIST_KEYS, Q_BARRIER
};
enum { CHECK_READY = 0, CHECK_NOT_READY = 1 };
enum { WAIT_STOP = 0, WAIT_CANCELED = 1 };
#define STORE_MAGIC 0x3C85F7CEu
/* PyTorch's libuv server closes the connection on anything larger; both
 * our client and our server keep to the same limits. */
#define MAX_KEY 8192u
#define MAX_VALUE (8u << 20)
#define MAX_KEYS (128u * 1024)

/* ---------------------------------------------------------------- common */

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fprintf(stderr, "pipec: out of memory (%zu bytes) in the store\n", n);
    exit(3);
  }
  return q;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* milliseconds to the deadline for poll(), rounded up; 0 when past */
static int ms_left(double deadline) {
  double left = deadline - now_s();
  if (left <= 0) return 0;
  if (left > 1e6) return 1000000000;
  return (int)(left * 1000) + 1;
}

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&t, NULL);
}

typedef struct Buf {
  uint8_t *p;
  size_t n, cap;
} Buf;

static void buf_reserve(Buf *b, size_t extra) {
  if (b->cap - b->n >= extra) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->n < extra) cap *= 2;
  b->p = xrealloc(b->p, cap);
  b->cap = cap;
}
static void buf_put(Buf *b, const void *d, size_t n) {
  buf_reserve(b, n);
  if (n) memcpy(b->p + b->n, d, n);
  b->n += n;
}
static void buf_u8(Buf *b, uint8_t v) { buf_put(b, &v, 1); }
static void buf_u32(Buf *b, uint32_t v) {
  uint8_t d[4];
  for (int i = 0; i < 4; i++) d[i] = (uint8_t)(v >> (8 * i));
  buf_put(b, d, 4);
}
static void buf_u64(Buf *b, uint64_t v) {
  uint8_t d[8];
  for (int i = 0; i < 8; i++) d[i] = (uint8_t)(v >> (8 * i));
  buf_put(b, d, 8);
}
static void buf_bytes(Buf *b, const void *d, size_t n) {
  buf_u64(b, n);
  buf_put(b, d, n);
}
static void buf_free(Buf *b) {
  free(b->p);
  b->p = NULL, b->n = b->cap = 0;
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static uint32_t get_u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* ---------------------------------------------------------------- server */

typedef struct Entry {
  struct Entry *next;
  uint8_t *val;
  size_t vlen, klen;
  uint8_t key[];
} Entry;

typedef struct Table {
  Entry **b;
  size_t nb, n;
} Table;

static size_t hash_key(const uint8_t *k, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 1099511628211ull;
  return (size_t)h;
}

static Entry **tab_link(Table *t, const uint8_t *k, size_t kl) {
  if (!t->nb) return NULL;
  Entry **l = &t->b[hash_key(k, kl) & (t->nb - 1)];
  while (*l && ((*l)->klen != kl || memcmp((*l)->key, k, kl) != 0)) l = &(*l)->next;
  return l;
}
static Entry *tab_find(Table *t, const uint8_t *k, size_t kl) {
  Entry **l = tab_link(t, k, kl);
  return l ? *l : NULL;
}
/* the entry for k, created with an empty value when absent */
static Entry *tab_put(Table *t, const uint8_t *k, size_t kl) {
  Entry *e = tab_find(t, k, kl);
  if (e) return e;
  if (t->n >= t->nb) { /* grow to keep chains short */
    size_t nb = t->nb ? 2 * t->nb : 64;
    Entry **b = xrealloc(NULL, nb * sizeof *b);
    memset(b, 0, nb * sizeof *b);
    for (size_t i = 0; i < t->nb; i++)
      for (Entry *x = t->b[i], *nx; x; x = nx) {
        nx = x->next;
        size_t h = hash_key(x->key, x->klen) & (nb - 1);
        x->next = b[h], b[h] = x;
      }
    free(t->b);
    t->b = b, t->nb = nb;
  }
  e = xrealloc(NULL, sizeof *e + kl);
  memcpy(e->key, k, kl);
  e->klen = kl, e->val = NULL, e->vlen = 0;
  size_t h = hash_key(k, kl) & (t->nb - 1);
  e->next = t->b[h], t->b[h] = e;
  t->n++;
  return e;
}
static void tab_setval(Entry *e, const uint8_t *v, size_t n) {
  e->val = xrealloc(e->val, n);
  if (n) memcpy(e->val, v, n);
  e->vlen = n;
}
static int tab_del(Table *t, const uint8_t *k, size_t kl) {
  Entry **l = tab_link(t, k, kl);
  if (!l || !*l) return 0;
  Entry *e = *l;
  *l = e->next;
  free(e->val);
  free(e);
  t->n--;
  return 1;
}
static void tab_free(Table *t) {
  for (size_t i = 0; i < t->nb; i++)
    for (Entry *x = t->b[i], *nx; x; x = nx) {
      nx = x->next;
      free(x->val);
      free(x);
    }
  free(t->b);
  memset(t, 0, sizeof *t);
}

typedef struct QItem {
  struct QItem *next;
  size_t len;
  uint8_t data[];
} QItem;

typedef struct Queue {
  struct Queue *next;
  QItem *head, *tail;
  int64_t n;
  size_t klen;
  uint8_t key[];
} Queue;

typedef struct WaitKey {
  uint8_t *k;
  size_t kl;
} WaitKey;

typedef struct Conn {
  int fd, validated, dead;
  Buf in, out;
  size_t in_off, out_off;
  WaitKey *wk; /* keys this client still waits for (WAIT, BARRIER) */
  int nwk, capwk;
} Conn;

typedef struct Server {
  int lfd, wake_r, wake_w, port;
  pthread_t thread;
  pthread_mutex_t mu; /* guards nconn_shared, which prt_store_close waits on */
  pthread_cond_t cv;
  int nconn_shared;
  Conn **c;
  int nc, capc;
  Table kv;
  Queue *queues;
} Server;

static void conn_put(Conn *c, const void *d, size_t n) {
  if (!c->dead) buf_put(&c->out, d, n);
}
static void conn_u8(Conn *c, uint8_t v) { conn_put(c, &v, 1); }
static void conn_i64(Conn *c, int64_t v) {
  Buf b = {0};
  buf_u64(&b, (uint64_t)v);
  conn_put(c, b.p, b.n);
  buf_free(&b);
}
static void conn_bytes(Conn *c, const uint8_t *d, size_t n) {
  uint8_t h[8];
  for (int i = 0; i < 8; i++) h[i] = (uint8_t)((uint64_t)n >> (8 * i));
  conn_put(c, h, 8);
  conn_put(c, d, n);
}

static void conn_clear_wait(Conn *c) {
  for (int i = 0; i < c->nwk; i++) free(c->wk[i].k);
  c->nwk = 0;
}
static void conn_add_wait(Conn *c, const uint8_t *k, size_t kl) {
  for (int i = 0; i < c->nwk; i++)
    if (c->wk[i].kl == kl && memcmp(c->wk[i].k, k, kl) == 0) return;
  if (c->nwk == c->capwk) {
    c->capwk = c->capwk ? 2 * c->capwk : 4;
    c->wk = xrealloc(c->wk, (size_t)c->capwk * sizeof *c->wk);
  }
  c->wk[c->nwk].k = xrealloc(NULL, kl);
  if (kl) memcpy(c->wk[c->nwk].k, k, kl);
  c->wk[c->nwk++].kl = kl;
}

/* key k now exists: clients waiting only for it get STOP_WAITING (all of
 * them, or the first one for a queue push) */
static void wake_key(Server *sv, const uint8_t *k, size_t kl, int only_one) {
  for (int i = 0; i < sv->nc; i++) {
    Conn *c = sv->c[i];
    if (c->dead) continue;
    for (int j = 0; j < c->nwk; j++) {
      if (c->wk[j].kl != kl || memcmp(c->wk[j].k, k, kl) != 0) continue;
      free(c->wk[j].k);
      c->wk[j] = c->wk[--c->nwk];
      if (c->nwk == 0) {
        conn_u8(c, WAIT_STOP);
        if (only_one) return;
      }
      break;
    }
  }
}

static Queue *queue_find(Server *sv, const uint8_t *k, size_t kl, int create) {
  for (Queue *q = sv->queues; q; q = q->next)
    if (q->klen == kl && memcmp(q->key, k, kl) == 0) return q;
  if (!create) return NULL;
  Queue *q = xrealloc(NULL, sizeof *q + kl);
  memset(q, 0, sizeof *q);
  memcpy(q->key, k, kl);
  q->klen = kl;
  q->next = sv->queues, sv->queues = q;
  return q;
}

static int key_exists(Server *sv, const uint8_t *k, size_t kl) {
  if (tab_find(&sv->kv, k, kl)) return 1;
  Queue *q = queue_find(sv, k, kl, 0);
  return q && q->n > 0;
}

/* stoll-like: leading spaces, a sign, digits; what follows is ignored */
static int parse_i64(const uint8_t *p, size_t n, int64_t *out) {
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n')) i++;
  int neg = 0;
  if (i < n && (p[i] == '+' || p[i] == '-')) neg = p[i++] == '-';
  if (i >= n || p[i] < '0' || p[i] > '9') return -1;
  uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
    if (v > (lim - (uint64_t)(p[i] - '0')) / 10) return -1;
    v = v * 10 + (uint64_t)(p[i] - '0');
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

static void set_i64(Entry *e, int64_t v) {
  char s[32];
  int n = snprintf(s, sizeof s, "%lld", (long long)v);
  tab_setval(e, (const uint8_t *)s, (size_t)n);
}

/* A reader over the unread input of one connection. Each rd_* returns 1
 * with the item, 0 when more bytes must arrive, -1 when the item is over
 * the protocol's limits (the connection is then closed). */
typedef struct Rd {
  const uint8_t *p;
  size_t n, off;
} Rd;

static int rd_take(Rd *r, size_t n, const uint8_t **out) {
  if (r->n - r->off < n) return 0;
  *out = r->p + r->off;
  r->off += n;
  return 1;
}
static int rd_u64(Rd *r, uint64_t *v) {
  const uint8_t *p;
  if (!rd_take(r, 8, &p)) return 0;
  *v = get_u64(p);
  return 1;
}
static int rd_str(Rd *r, size_t max, const uint8_t **p, size_t *len) {
  uint64_t l;
  size_t save = r->off;
  if (!rd_u64(r, &l)) return 0;
  if (l > max) return -1;
  if (!rd_take(r, (size_t)l, p)) {
    r->off = save;
    return 0;
  }
  *len = (size_t)l;
  return 1;
}
#define NEED(x)                      \
  do {                               \
    int need_rc_ = (x);              \
    if (need_rc_ <= 0) return need_rc_; \
  } while (0)

/* Handles one query from the start of c's unread input: 1 done, 0 not all
 * of it has arrived yet (nothing changed), -1 a protocol error. */
static int handle_one(Server *sv, Conn *c) {
  Rd r = {c->in.p + c->in_off, c->in.n - c->in_off, 0};
  const uint8_t *b = NULL, *k = NULL, *v = NULL, *v2 = NULL;
  size_t kl = 0, vl = 0, vl2 = 0;
  uint64_t n;
  NEED(rd_take(&r, 1, &b));
  int q = b[0];
  if (!c->validated && q != Q_VALIDATE) return -1; /* like PyTorch: VALIDATE comes first */
  switch (q) {
  case Q_VALIDATE:
    NEED(rd_take(&r, 4, &b));
    if (get_u32(b) != STORE_MAGIC) return -1;
    c->validated = 1;
    break;
  case Q_PING:
    NEED(rd_take(&r, 4, &b));
    conn_put(c, b, 4);
    break;
  case Q_SET:
  case Q_APPEND:
  case Q_QUEUE_PUSH:
    NEED(rd_str(&r, MAX_KEY, &k, &kl));
    NEED(rd_str(&r, MAX_VALUE, &v, &vl));
    if (q == Q_QUEUE_PUSH) {
      Queue *qu = queue_find(sv, k, kl, 1);
      QItem *it = xrealloc(NULL, sizeof *it + vl);
      it->next = NULL, it->len = vl;
      if (vl) memcpy(it->data, v, vl);
      if (qu->tail) qu->tail->next = it;
      else qu->head = it;
      qu->tail = it, qu->n++;
      wake_key(sv, k, kl, 1);
      break;
    }
    {
      Entry *e = tab_put(&sv->kv, k, kl);
      if (q == Q_SET || !e->vlen) tab_setval(e, v, vl);
      else {
        if (e->vlen + vl > MAX_VALUE) return -1;
        e->val = xrealloc(e->val, e->vlen + vl);
        if (vl) memcpy(e->val + e->vlen, v, vl);
        e->vlen += vl;
      }
    }
    wake_key(sv, k, kl, 0);
    break;
  case Q_COMPARE_SET: {
    NEED(rd_str(&r, MAX_KEY, &k, &kl));
    NEED(rd_str(&r, MAX_VALUE, &v, &vl));
    NEED(rd_str(&r, MAX_VALUE, &v2, &vl2));
    Entry *e = tab_find(&sv->kv, k, kl);
    if (!e && vl == 0) {
      e = tab_put(&sv->kv, k, kl);
      tab_setval(e, v2, vl2);
    } else if (e && e->vlen == vl && (vl == 0 || memcmp(e->val, v, vl) == 0))
      tab_setval(e, v2, vl2);
    if (e) {
      conn_bytes(c, e->val, e->vlen);
      wake_key(sv, k, kl, 0);
    } else
      conn_bytes(c, v, vl); /* absent and not expected empty: PyTorch answers the expected value */
    break;
  }
  case Q_GET:
  case Q_DELETE_KEY:
  case Q_QUEUE_POP:
  case Q_QUEUE_LEN: {
    NEED(rd_str(&r, MAX_KEY, &k, &kl));
    if (q == Q_GET) {
      Entry *e = tab_find(&sv->kv, k, kl);
      conn_bytes(c, e ? e->val : NULL, e ? e->vlen : 0);
    } else if (q == Q_DELETE_KEY)
      conn_i64(c, tab_del(&sv->kv, k, kl));
    else {
      Queue *qu = queue_find(sv, k, kl, 0);
      conn_i64(c, qu ? qu->n : 0);
      if (q == Q_QUEUE_POP && qu && qu->head) {
        QItem *it = qu->head;
        conn_bytes(c, it->data, it->len);
        qu->head = it->next;
        if (!qu->head) qu->tail = NULL;
        qu->n--;
        free(it);
      }
    }
    break;
  }
  case Q_ADD: {
    NEED(rd_str(&r, MAX_KEY, &k, &kl));
    NEED(rd_take(&r, 8, &b));
    int64_t add = (int64_t)get_u64(b), old = 0;
    Entry *e = tab_find(&sv->kv, k, kl);
    if (e && parse_i64(e->val, e->vlen, &old) < 0) return -1; /* not a number: PyTorch drops the client too */
    int64_t sum = (int64_t)((uint64_t)old + (uint64_t)add);
    set_i64(tab_put(&sv->kv, k, kl), sum);
    conn_i64(c, sum);
    wake_key(sv, k, kl, 0);
    break;
  }
  case Q_CHECK:
  case Q_WAIT:
  case Q_MULTI_GET:
  case Q_MULTI_SET: {
    NEED(rd_u64(&r, &n));
    if (n > MAX_KEYS) return -1;
    size_t first = r.off;
    for (uint64_t i = 0; i < n; i++) { /* everything must have arrived before anything changes */
      NEED(rd_str(&r, MAX_KEY, &k, &kl));
      if (q == Q_MULTI_SET) NEED(rd_str(&r, MAX_VALUE, &v, &vl));
    }
    size_t end = r.off;
    r.off = first;
    int all = 1;
    for (uint64_t i = 0; i < n; i++) {
      rd_str(&r, MAX_KEY, &k, &kl);
      if (q == Q_MULTI_SET) {
        rd_str(&r, MAX_VALUE, &v, &vl);
        tab_setval(tab_put(&sv->kv, k, kl), v, vl);
        wake_key(sv, k, kl, 0);
      } else if (q == Q_MULTI_GET) {
        Entry *e = tab_find(&sv->kv, k, kl);
        conn_bytes(c, e ? e->val : NULL, e ? e->vlen : 0);
      } else if (!key_exists(sv, k, kl))
        all = 0;
    }
    r.off = end;
    if (q == Q_CHECK) conn_u8(c, all ? CHECK_READY : CHECK_NOT_READY);
    if (q == Q_WAIT) {
      if (all) conn_u8(c, WAIT_STOP);
      else {
        r.off = first;
        for (uint64_t i = 0; i < n; i++) {
          rd_str(&r, MAX_KEY, &k, &kl);
          if (!key_exists(sv, k, kl)) conn_add_wait(c, k, kl);
        }
        r.off = end;
      }
    }
    break;
  }
  case Q_GETNUMKEYS:
    conn_i64(c, (int64_t)sv->kv.n);
    break;
  case Q_LIST_KEYS:
    conn_i64(c, (int64_t)sv->kv.n);
    for (size_t i = 0; i < sv->kv.nb; i++)
      for (Entry *e = sv->kv.b[i]; e; e = e->next) conn_bytes(c, e->key, e->klen);
    break;
  case Q_CANCEL_WAIT:
    conn_clear_wait(c);
    conn_u8(c, WAIT_CANCELED);
    break;
  case Q_BARRIER: {
    NEED(rd_str(&r, MAX_KEY, &k, &kl));
    NEED(rd_take(&r, 8, &b));
    int64_t world = (int64_t)get_u64(b), count = 0;
    Entry *e = tab_find(&sv->kv, k, kl);
    if (e && parse_i64(e->val, e->vlen, &count) < 0) return -1;
    count++;
    set_i64(tab_put(&sv->kv, k, kl), count);
    if (count >= world) {
      conn_u8(c, WAIT_STOP);
      wake_key(sv, k, kl, 0);
    } else
      conn_add_wait(c, k, kl);
    break;
  }
  default:
    return -1;
  }
  c->in_off += r.off;
  return 1;
}

static void conn_flush(Conn *c) {
  while (!c->dead && c->out_off < c->out.n) {
    ssize_t k = send(c->fd, c->out.p + c->out_off, c->out.n - c->out_off, MSG_NOSIGNAL);
    if (k > 0) c->out_off += (size_t)k;
    else if (k < 0 && errno == EINTR) continue;
    else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    else c->dead = 1;
  }
  if (c->out_off == c->out.n) {
    c->out.n = c->out_off = 0;
    if (c->out.cap > (1u << 20)) buf_free(&c->out); /* do not keep a big answer's buffer */
  }
}

/* reads what is there (up to 4 MiB at a time, so one client cannot starve
 * the others), then answers every complete query */
static void conn_read(Server *sv, Conn *c) {
  int eof = 0;
  size_t got_total = 0;
  while (got_total < (4u << 20)) {
    buf_reserve(&c->in, 64 * 1024);
    ssize_t k = recv(c->fd, c->in.p + c->in.n, c->in.cap - c->in.n, 0);
    if (k > 0) {
      c->in.n += (size_t)k, got_total += (size_t)k;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    eof = 1; /* closed or failed: still answer what came before */
    break;
  }
  int rc;
  while ((rc = handle_one(sv, c)) == 1) {}
  if (rc < 0) c->dead = 1;
  if (c->in_off) {
    memmove(c->in.p, c->in.p + c->in_off, c->in.n - c->in_off);
    c->in.n -= c->in_off, c->in_off = 0;
  }
  if (c->in.n == 0 && c->in.cap > (1u << 20)) buf_free(&c->in); /* nor a big query's */
  if (eof) {
    conn_flush(c);
    c->dead = 1;
  }
}

static void conn_free(Conn *c) {
  close(c->fd);
  buf_free(&c->in);
  buf_free(&c->out);
  conn_clear_wait(c);
  free(c->wk);
  free(c);
}

static void set_nconn(Server *sv) {
  pthread_mutex_lock(&sv->mu);
  sv->nconn_shared = sv->nc;
  pthread_cond_broadcast(&sv->cv);
  pthread_mutex_unlock(&sv->mu);
}

static void accept_all(Server *sv) {
  for (;;) {
    int fd = accept4(sv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) sleep_s(0.01); /* no busy loop */
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn *c = xrealloc(NULL, sizeof *c);
    memset(c, 0, sizeof *c);
    c->fd = fd;
    if (sv->nc == sv->capc) {
      sv->capc = sv->capc ? 2 * sv->capc : 16;
      sv->c = xrealloc(sv->c, (size_t)sv->capc * sizeof *sv->c);
    }
    sv->c[sv->nc++] = c;
  }
}

static void *server_main(void *arg) {
  Server *sv = arg;
  struct pollfd *pf = NULL;
  size_t pcap = 0;
  for (;;) {
    int n = sv->nc;
    if (pcap < (size_t)n + 2) {
      pcap = (size_t)n + 16;
      pf = xrealloc(pf, pcap * sizeof *pf);
    }
    pf[0] = (struct pollfd){.fd = sv->lfd, .events = POLLIN};
    pf[1] = (struct pollfd){.fd = sv->wake_r, .events = POLLIN};
    for (int i = 0; i < n; i++) {
      Conn *c = sv->c[i];
      pf[2 + i] = (struct pollfd){.fd = c->fd, .events = (short)(POLLIN | (c->out_off < c->out.n ? POLLOUT : 0))};
    }
    if (poll(pf, (nfds_t)n + 2, -1) < 0) {
      if (errno != EINTR) sleep_s(0.01);
      continue;
    }
    if (pf[1].revents) break;
    for (int i = 0; i < n; i++) {
      short ev = pf[2 + i].revents;
      if (ev & POLLOUT) conn_flush(sv->c[i]);
      if (ev & (POLLIN | POLLHUP | POLLERR)) conn_read(sv, sv->c[i]);
    }
    if (pf[0].revents & POLLIN) accept_all(sv);
    int kept = 0;
    for (int i = 0; i < sv->nc; i++) {
      Conn *c = sv->c[i];
      conn_flush(c); /* replies, and wake-ups queued by other clients' queries */
      if (c->dead) conn_free(c);
      else sv->c[kept++] = c;
    }
    if (kept != n || sv->nc != n) {
      sv->nc = kept;
      set_nconn(sv);
    }
  }
  free(pf);
  return NULL;
}

static void server_free(Server *sv) {
  for (int i = 0; i < sv->nc; i++) conn_free(sv->c[i]);
  free(sv->c);
  tab_free(&sv->kv);
  for (Queue *q = sv->queues, *nq; q; q = nq) {
    nq = q->next;
    for (QItem *it = q->head, *ni; it; it = ni) {
      ni = it->next;
      free(it);
    }
    free(q);
  }
  if (sv->lfd >= 0) close(sv->lfd);
  if (sv->wake_r >= 0) close(sv->wake_r);
  if (sv->wake_w >= 0) close(sv->wake_w);
  pthread_cond_destroy(&sv->cv);
  pthread_mutex_destroy(&sv->mu);
  free(sv);
}

/* a listening socket on every interface: IPv6 and IPv4 together where the
 * host has IPv6, else IPv4 alone */
static int listen_any(int port, int *bound, char *why, size_t whylen) {
  int one = 1, zero = 0;
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_any};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0) goto bound;
    int e = errno;
    close(fd);
    if (e == EADDRINUSE || e == EACCES) {
      snprintf(why, whylen, "cannot serve on port %d: %s", port, strerror(e));
      return -1;
    }
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(why, whylen, "cannot create a socket: %s", strerror(errno));
    return -1;
  }
  struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&a4, sizeof a4) != 0) {
    snprintf(why, whylen, "cannot serve on port %d: %s", port, strerror(errno));
    close(fd);
    return -1;
  }
bound:
  if (listen(fd, SOMAXCONN) != 0) {
    snprintf(why, whylen, "cannot listen on port %d: %s", port, strerror(errno));
    close(fd);
    return -1;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

static Server *server_start(int port, char *why, size_t whylen) {
  Server *sv = xrealloc(NULL, sizeof *sv);
  memset(sv, 0, sizeof *sv);
  sv->wake_r = sv->wake_w = -1;
  pthread_mutex_init(&sv->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&sv->cv, &ca);
  pthread_condattr_destroy(&ca);
  sv->lfd = listen_any(port, &sv->port, why, whylen);
  if (sv->lfd < 0) {
    server_free(sv);
    return NULL;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    snprintf(why, whylen, "cannot create a pipe: %s", strerror(errno));
    server_free(sv);
    return NULL;
  }
  sv->wake_r = p[0], sv->wake_w = p[1];
  /* the server thread takes no signals: they stay with the program's threads */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&sv->thread, NULL, server_main, sv);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(why, whylen, "cannot start the server thread: %s", strerror(rc));
    server_free(sv);
    return NULL;
  }
  return sv;
}

/* serves until every client has gone (or timeout_s), then stops */
static void server_stop(Server *sv, double timeout_s) {
  double deadline = now_s() + timeout_s;
  pthread_mutex_lock(&sv->mu);
  while (sv->nconn_shared > 0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double left = deadline - ((double)t.tv_sec + (double)t.tv_nsec * 1e-9);
    if (left <= 0) break;
    if (left > 0.1) left = 0.1; /* recheck often: a client may go between signals */
    long ns = t.tv_nsec + (long)(left * 1e9);
    t.tv_sec += ns / 1000000000L, t.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(&sv->cv, &sv->mu, &t);
  }
  pthread_mutex_unlock(&sv->mu);
  ssize_t w;
  do w = write(sv->wake_w, "x", 1);
  while (w < 0 && errno == EINTR);
  pthread_join(sv->thread, NULL);
  server_free(sv);
}

/* ---------------------------------------------------------------- client */

#define MAX_RECV (1u << 30) /* the largest value we accept from any server */

typedef struct BarrierUse {
  char *name;
  int count;
} BarrierUse;

struct PrtStore {
  int fd; /* -1 once an exchange failed half-way: the stream is out of step */
  int port, use_ping, eof;
  double timeout_s;
  char host[256];
  Server *server;
  pthread_mutex_t mu; /* one exchange at a time on the connection */
  BarrierUse *bars;   /* how often each barrier name was used: repeated uses get new keys */
  int nbars;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* the public functions name the store in front of what went wrong */
static void name_store(const PrtStore *s, char *err, size_t errlen) {
  if (!err || !errlen) return;
  char pre[300];
  int k = snprintf(pre, sizeof pre, "store at %s:%d: ", s->host, s->port);
  size_t n = strlen(err), kk = (size_t)k < errlen - 1 ? (size_t)k : errlen - 1;
  if (n > errlen - 1 - kk) n = errlen - 1 - kk;
  memmove(err + kk, err, n);
  memcpy(err, pre, kk);
  err[kk + n] = 0;
}

static void broken(PrtStore *s) {
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
}

/* Sends all of p before the deadline. 0 ok, -1 failed (connection dropped). */
static int io_send(PrtStore *s, const uint8_t *p, size_t n, double deadline, const char *what, char *err, size_t errlen) {
  while (n) {
    ssize_t k = send(s->fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k, n -= (size_t)k;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pf = {.fd = s->fd, .events = POLLOUT};
      int ms = ms_left(deadline);
      int r = ms ? poll(&pf, 1, ms) : 0;
      if (r > 0 || (r < 0 && errno == EINTR)) continue;
      if (r == 0) seterr(err, errlen, "timed out sending %s", what);
      else seterr(err, errlen, "sending %s: %s", what, strerror(errno));
    } else
      seterr(err, errlen, "sending %s: %s", what, k < 0 ? strerror(errno) : "nothing sent");
    broken(s);
    return -1;
  }
  return 0;
}

/* Receives exactly n bytes before the deadline. 0 ok, -1 failed (s->eof
 * when the server closed), -2 timed out (the connection stays open: the
 * caller decides what that means). */
static int io_recv(PrtStore *s, uint8_t *p, size_t n, double deadline, const char *what, char *err, size_t errlen) {
  s->eof = 0;
  while (n) {
    ssize_t k = recv(s->fd, p, n, 0);
    if (k > 0) {
      p += k, n -= (size_t)k;
      continue;
    }
    if (k == 0) {
      seterr(err, errlen, "connection closed by the server while waiting for %s", what);
      s->eof = 1;
      broken(s);
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      seterr(err, errlen, "receiving %s: %s", what, strerror(errno));
      broken(s);
      return -1;
    }
    struct pollfd pf = {.fd = s->fd, .events = POLLIN};
    int ms = ms_left(deadline);
    int r = ms ? poll(&pf, 1, ms) : 0;
    if (r > 0 || (r < 0 && errno == EINTR)) continue;
    if (r == 0) {
      seterr(err, errlen, "timed out waiting for %s", what);
      return -2;
    }
    seterr(err, errlen, "waiting for %s: %s", what, strerror(errno));
    broken(s);
    return -1;
  }
  return 0;
}

/* a whole reply is due within the store's timeout; a timeout there leaves
 * the stream out of step */
static int reply(PrtStore *s, uint8_t *p, size_t n, const char *what, char *err, size_t errlen) {
  int rc = io_recv(s, p, n, now_s() + s->timeout_s, what, err, errlen);
  if (rc == -2) broken(s);
  return rc < 0 ? -1 : 0;
}

static int send_buf(PrtStore *s, Buf *b, const char *what, char *err, size_t errlen) {
  int rc = io_send(s, b->p, b->n, now_s() + s->timeout_s, what, err, errlen);
  buf_free(b);
  return rc;
}

static int usable(PrtStore *s, char *err, size_t errlen) {
  if (s->fd >= 0) return 1;
  seterr(err, errlen, "the connection was lost after an earlier error");
  return 0;
}

/* One TCP connection to host:port, trying each address; -1 with why. */
static int connect_once(const char *host, int port, double deadline, char *why, size_t whylen) {
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int g = getaddrinfo(host, ps, &hints, &res);
  if (g != 0) {
    seterr(why, whylen, "cannot resolve '%s': %s", host, gai_strerror(g));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      seterr(why, whylen, "socket: %s", strerror(errno));
      continue;
    }
    int e = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      e = errno;
      if (e == EINPROGRESS || e == EINTR) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int ms = ms_left(deadline), r;
        if (ms > 2000) ms = 2000; /* a dropped SYN: try again rather than wait it out */
        do r = poll(&pf, 1, ms);
        while (r < 0 && errno == EINTR);
        socklen_t el = sizeof e;
        if (r == 0) e = ETIMEDOUT;
        else if (r < 0) e = errno;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) e = errno;
      }
    }
    if (e) {
      seterr(why, whylen, "%s", strerror(e));
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

/* VALIDATE, then PING as PyTorch's client does (unless this server closed
 * on a PING before): 0 ok, -1 failed, 1 the server closed after PING. */
static int handshake(PrtStore *s, double deadline, char *why, size_t whylen) {
  static unsigned counter;
  uint32_t nonce = (uint32_t)getpid() ^ (__atomic_add_fetch(&counter, 1u, __ATOMIC_RELAXED) << 20);
  Buf b = {0};
  buf_u8(&b, Q_VALIDATE);
  buf_u32(&b, STORE_MAGIC);
  if (s->use_ping) {
    buf_u8(&b, Q_PING);
    buf_u32(&b, nonce);
  }
  int rc = io_send(s, b.p, b.n, deadline, "the handshake", why, whylen);
  buf_free(&b);
  if (rc < 0 || !s->use_ping) return rc;
  uint8_t r[4];
  rc = io_recv(s, r, 4, deadline, "the answer to PING", why, whylen);
  if (rc < 0) {
    broken(s);
    return s->eof ? 1 : -1;
  }
  if (get_u32(r) != nonce) {
    seterr(why, whylen, "the server answered PING with %u instead of %u: not a TCPStore?", get_u32(r), nonce);
    broken(s);
    return -1;
  }
  return 0;
}

PrtStore *prt_store_open(const char *host, int port, int serve, double timeout_s, char *err, size_t errlen) {
  PrtStore *s = xrealloc(NULL, sizeof *s);
  memset(s, 0, sizeof *s);
  s->fd = -1, s->port = port, s->timeout_s = timeout_s, s->use_ping = 1;
  snprintf(s->host, sizeof s->host, "%s", host && *host ? host : "127.0.0.1");
  pthread_mutex_init(&s->mu, NULL);
  char why[256] = "no answer";
  if (port < 0 || port > 65535 || (!serve && port == 0)) {
    seterr(err, errlen, "%d is not a port to %s", port, serve ? "serve on" : "connect to");
    goto fail;
  }
  const char *connect_host = s->host;
  if (serve) {
    s->server = server_start(port, err, errlen);
    if (!s->server) goto fail;
    s->port = s->server->port;
    connect_host = "127.0.0.1"; /* our own server listens on every interface */
  }
  double deadline = now_s() + timeout_s, delay = 0.01;
  for (;;) {
    s->fd = connect_once(connect_host, s->port, deadline, why, sizeof why);
    if (s->fd >= 0) {
      int hs = handshake(s, deadline, why, sizeof why);
      if (hs == 0) return s;
      if (hs == 1) s->use_ping = 0; /* a server from before PING: try again without it */
    }
    double left = deadline - now_s();
    if (left <= 0) break;
    sleep_s(delay < left ? delay : left);
    delay = delay * 2 < 0.5 ? delay * 2 : 0.5;
  }
  seterr(err, errlen, "cannot connect within %g s: %s", timeout_s, why);
fail:
  name_store(s, err, errlen);
  prt_store_close(s);
  return NULL;
}

int prt_store_port(const PrtStore *s) { return s->port; }

static int check_key(const char *key, char *err, size_t errlen) {
  if (strlen(key) <= MAX_KEY) return 0;
  seterr(err, errlen, "key '%.60s...' is longer than the %u bytes a TCPStore takes", key, MAX_KEY);
  return -1;
}

int prt_store_set(PrtStore *s, const char *key, const void *val, size_t len, char *err, size_t errlen) {
  int rc = -1;
  pthread_mutex_lock(&s->mu);
  if (check_key(key, err, errlen) < 0) goto out;
  if (len > MAX_VALUE) {
    seterr(err, errlen, "value of %zu bytes for key '%s' is over the %u bytes a TCPStore takes", len, key, MAX_VALUE);
    goto out;
  }
  if (usable(s, err, errlen)) {
    Buf b = {0};
    buf_u8(&b, Q_SET);
    buf_bytes(&b, key, strlen(key));
    buf_bytes(&b, val, len);
    rc = send_buf(s, &b, "SET", err, errlen);
  }
out:
  if (rc < 0) name_store(s, err, errlen);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* WAIT for the keys: 1 they exist, 0 timed out (the wait was cancelled and
 * the connection is still good), -1 failed. The caller holds s->mu. */
static int wait_keys(PrtStore *s, const char *const *keys, int n, double timeout_s, char *err, size_t errlen) {
  if (!usable(s, err, errlen)) return -1;
  Buf b = {0};
  buf_u8(&b, Q_WAIT);
  buf_u64(&b, (uint64_t)n);
  for (int i = 0; i < n; i++) buf_bytes(&b, keys[i], strlen(keys[i]));
  if (send_buf(s, &b, "WAIT", err, errlen) < 0) return -1;
  uint8_t r;
  int rc = io_recv(s, &r, 1, now_s() + (timeout_s > 0 ? timeout_s : 0), "the answer to WAIT", err, errlen);
  if (rc == -1) return -1;
  if (rc == 0) {
    if (r == WAIT_STOP) return 1;
    seterr(err, errlen, "unexpected answer %u to WAIT", r);
    broken(s);
    return -1;
  }
  /* timed out: cancel, and skip a STOP_WAITING that crossed the cancel */
  buf_u8(&b, Q_CANCEL_WAIT);
  if (send_buf(s, &b, "CANCEL_WAIT", err, errlen) < 0) return -1;
  if (reply(s, &r, 1, "the answer to CANCEL_WAIT", err, errlen) < 0) return -1;
  if (r == WAIT_STOP && reply(s, &r, 1, "the answer to CANCEL_WAIT", err, errlen) < 0) return -1;
  if (r != WAIT_CANCELED) {
    seterr(err, errlen, "unexpected answer %u to CANCEL_WAIT", r);
    broken(s);
    return -1;
  }
  return 0;
}

void *prt_store_get(PrtStore *s, const char *key, size_t *len, double timeout_s, char *err, size_t errlen) {
  uint8_t *val = NULL;
  pthread_mutex_lock(&s->mu);
  if (check_key(key, err, errlen) < 0) goto out;
  int w = wait_keys(s, &key, 1, timeout_s, err, errlen);
  if (w == 0) seterr(err, errlen, "timed out after %g s waiting for key '%s'", timeout_s, key);
  if (w <= 0) goto out;
  Buf b = {0};
  buf_u8(&b, Q_GET);
  buf_bytes(&b, key, strlen(key));
  uint8_t h[8];
  if (send_buf(s, &b, "GET", err, errlen) < 0 || reply(s, h, 8, "the answer to GET", err, errlen) < 0) goto out;
  uint64_t n = get_u64(h);
  if (n > MAX_RECV) {
    seterr(err, errlen, "the server announced a value of %llu bytes for key '%s'", (unsigned long long)n, key);
    broken(s);
    goto out;
  }
  val = xrealloc(NULL, (size_t)n + 1);
  if (reply(s, val, (size_t)n, "the value of GET", err, errlen) < 0) {
    free(val);
    val = NULL;
    goto out;
  }
  val[n] = 0;
  if (len) *len = (size_t)n;
out:
  if (!val) name_store(s, err, errlen);
  pthread_mutex_unlock(&s->mu);
  return val;
}

int prt_store_add(PrtStore *s, const char *key, int64_t delta, int64_t *out, char *err, size_t errlen) {
  int rc = -1;
  pthread_mutex_lock(&s->mu);
  if (check_key(key, err, errlen) == 0 && usable(s, err, errlen)) {
    Buf b = {0};
    buf_u8(&b, Q_ADD);
    buf_bytes(&b, key, strlen(key));
    buf_u64(&b, (uint64_t)delta);
    uint8_t r[8];
    if (send_buf(s, &b, "ADD", err, errlen) == 0 && reply(s, r, 8, "the answer to ADD", err, errlen) == 0) {
      if (out) *out = (int64_t)get_u64(r);
      rc = 0;
    }
  }
  if (rc < 0) name_store(s, err, errlen);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int prt_store_check(PrtStore *s, const char *const *keys, int n, char *err, size_t errlen) {
  int rc = -1, ok = 1;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < n && ok; i++) ok = check_key(keys[i], err, errlen) == 0;
  if (ok && usable(s, err, errlen)) {
    Buf b = {0};
    buf_u8(&b, Q_CHECK);
    buf_u64(&b, (uint64_t)(n > 0 ? n : 0));
    for (int i = 0; i < n; i++) buf_bytes(&b, keys[i], strlen(keys[i]));
    uint8_t r;
    if (send_buf(s, &b, "CHECK", err, errlen) == 0 && reply(s, &r, 1, "the answer to CHECK", err, errlen) == 0) {
      if (r == CHECK_READY || r == CHECK_NOT_READY) rc = r == CHECK_READY;
      else {
        seterr(err, errlen, "unexpected answer %u to CHECK", r);
        broken(s);
      }
    }
  }
  if (rc < 0) name_store(s, err, errlen);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void prt_store_close(PrtStore *s) {
  if (!s) return;
  if (s->fd >= 0) close(s->fd);
  if (s->server) server_stop(s->server, s->timeout_s);
  for (int i = 0; i < s->nbars; i++) free(s->bars[i].name);
  free(s->bars);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* ---------------------------------------------------------------- barrier */

/* Keys under <prefix>/barrier/<name>/<use>: rank<r> says r arrived, count
 * is ADDed by every rank after that, and the rank that brings count to
 * world sets done, which everyone WAITs for. On a timeout the missing
 * rank<r> keys name the ranks that never came. <use> counts this
 * process's barriers of that name, so a barrier can be used again. */
int prt_store_barrier(PrtStore *s, const char *prefix, const char *name, int rank, int world, double timeout_s, char *err,
                      size_t errlen) {
  double deadline = now_s() + timeout_s;
  if (world < 1 || rank < 0 || rank >= world) {
    seterr(err, errlen, "barrier '%s': rank %d is not in a world of %d", name, rank, world);
    return -1;
  }
  size_t blen = strlen(prefix) + strlen(name) + 64, klen = blen + 32;
  char *base = xrealloc(NULL, blen), *key = xrealloc(NULL, klen);
  pthread_mutex_lock(&s->mu);
  snprintf(base, blen, "%s/barrier/%s", prefix, name);
  int use = -1;
  for (int i = 0; i < s->nbars && use < 0; i++)
    if (strcmp(s->bars[i].name, base) == 0) use = s->bars[i].count++;
  if (use < 0) {
    s->bars = xrealloc(s->bars, (size_t)(s->nbars + 1) * sizeof *s->bars);
    s->bars[s->nbars].name = strdup(base);
    s->bars[s->nbars++].count = 1;
    use = 0;
  }
  pthread_mutex_unlock(&s->mu);
  size_t bl = strlen(base);
  snprintf(base + bl, blen - bl, "/%d", use);

  int rc = -1;
  int64_t count = 0;
  snprintf(key, klen, "%s/rank%d", base, rank);
  if (prt_store_set(s, key, "1", 1, err, errlen) < 0) goto out;
  snprintf(key, klen, "%s/count", base);
  if (prt_store_add(s, key, 1, &count, err, errlen) < 0) goto out;
  if (count > world) {
    seterr(err, errlen, "barrier '%s': %lld arrivals for a world of %d (do the ranks disagree on the world size?)", name,
           (long long)count, world);
    goto out;
  }
  snprintf(key, klen, "%s/done", base);
  if (count == world && prt_store_set(s, key, "1", 1, err, errlen) < 0) goto out;

  pthread_mutex_lock(&s->mu);
  const char *k = key;
  int w = wait_keys(s, &k, 1, deadline - now_s(), err, errlen);
  if (w < 0) name_store(s, err, errlen);
  pthread_mutex_unlock(&s->mu);
  if (w == 1) rc = 0;
  if (w != 0) goto out;

  /* timed out: who never arrived? */
  size_t mcap = 256, mlen = 0;
  char *missing = xrealloc(NULL, mcap);
  missing[0] = 0;
  int nmissing = 0;
  for (int r = 0; r < world; r++) {
    snprintf(key, klen, "%s/rank%d", base, r);
    const char *kr = key;
    int there = prt_store_check(s, &kr, 1, err, errlen);
    if (there < 0) {
      free(missing);
      goto out;
    }
    if (there) continue;
    if (mlen + 32 > mcap) missing = xrealloc(missing, mcap *= 2);
    mlen += (size_t)snprintf(missing + mlen, mcap - mlen, "%s%d", nmissing ? ", " : "", r);
    nmissing++;
  }
  if (nmissing)
    seterr(err, errlen, "%s %s of %d did not arrive at '%s' within %g s", nmissing == 1 ? "rank" : "ranks", missing, world,
           name, timeout_s);
  else
    seterr(err, errlen, "barrier '%s' timed out after %g s although all %d ranks arrived", name, timeout_s, world);
  free(missing);
out:
  free(base);
  free(key);
  return rc;
}
