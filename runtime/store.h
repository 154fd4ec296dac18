/* store.h — a key-value store speaking PyTorch's TCPStore wire protocol
 * (c10d), as client and as server.
 *
 * Under torchrun the elastic agent already serves a TCPStore at
 * MASTER_ADDR:MASTER_PORT; the ranks are its clients. Under mpirun/Slurm
 * rank 0 serves the same protocol from a background thread and is also a
 * client of itself. Wire format: little-endian; a string or value is a u64
 * length then its bytes; every connection starts with VALIDATE (u8 0, u32
 * 0x3C85F7CE, no answer) and then, as PyTorch's own client does, PING (u8
 * 13, u32 nonce, echoed back). Queries used: SET (1), GET (3), ADD (4),
 * CHECK (5), WAIT (6), CANCEL_WAIT (12). The server answers every query of
 * PyTorch's libuv server (also COMPARE_SET, GETNUMKEYS, DELETE_KEY, APPEND,
 * MULTI_GET/SET, QUEUE_PUSH/POP/LEN, LIST_KEYS, BARRIER), so a
 * torch.distributed.TCPStore client can use it too. Keys are at most 8 KiB
 * and values at most 8 MiB, PyTorch's server's limits.
 *
 * Errors never hang: every wait ends after timeout_s with -1 / NULL and a
 * one-line message in err naming the store and what was waited for. One
 * PrtStore may be shared by threads; its queries then take turns.
 */
#ifndef PIPEC_RT_STORE_H
#define PIPEC_RT_STORE_H
#include <stddef.h>
#include <stdint.h>

typedef struct PrtStore PrtStore;

/* serve = 1: start a server on host:port (bound to all interfaces; port 0
 * picks a free port, see prt_store_port) in a background thread, then
 * connect to it. serve = 0: connect, retrying until timeout_s (the server
 * may start later than the client). */
PrtStore *prt_store_open(const char *host, int port, int serve, double timeout_s, char *err, size_t errlen);
int prt_store_port(const PrtStore *s); /* the port actually served or connected to */
int prt_store_set(PrtStore *s, const char *key, const void *val, size_t len, char *err, size_t errlen);
/* Waits until key exists (up to timeout_s), then returns a malloc'ed copy
 * of its value (len bytes; a NUL is appended, not counted). */
void *prt_store_get(PrtStore *s, const char *key, size_t *len, double timeout_s, char *err, size_t errlen);
/* Atomically adds delta to the integer stored at key (absent = 0) and
 * returns the new value into *out. */
int prt_store_add(PrtStore *s, const char *key, int64_t delta, int64_t *out, char *err, size_t errlen);
/* 1 when every key exists, 0 when not, -1 on a broken connection. */
int prt_store_check(PrtStore *s, const char *const *keys, int n, char *err, size_t errlen);
/* Closes the connection. On the serving store it then keeps serving until
 * every other client has closed its connection (at most timeout_s), so call
 * it after a final barrier; then the server thread ends and all is freed. */
void prt_store_close(PrtStore *s);

/* Every rank of `world` arrives at `name`, then all continue. Keys are
 * prefixed with prefix (run id and restart count): <prefix>/barrier/<name>/
 * <n>/{rank<r>,count,done}, n counting this process's uses of the name, so
 * a name can be used again. On timeout the error names the ranks that
 * never arrived: "ranks 3, 5 of 8 did not arrive at 'init' within 60 s"
 * ("rank 3 of 8 ..." for one). */
int prt_store_barrier(PrtStore *s, const char *prefix, const char *name, int rank, int world, double timeout_s, char *err,
                      size_t errlen);

#endif
