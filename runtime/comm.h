/* comm.h — the host transport: point-to-point messages and collectives
 * between the ranks of a job, for CPU ranks and for ranks that share one
 * GPU (NCCL refuses two ranks per GPU). Implemented in comm.c.
 *
 * Contract.
 * - prt_comm_init() is collective over the world: every rank publishes how
 *   to reach it through the store (keys under `prefix`, which must be new
 *   for every communicator, e.g. "<run id>/<restart>"), then connects to
 *   its peers: one TCP connection per pair. Ranks on the same host (same
 *   hostname, or same PIPEC_COMM_HOST) move data through POSIX shared
 *   memory when every rank of that host could map it, others through TCP;
 *   both give bitwise the same results. The shared-memory names are
 *   unlinked before init returns, so nothing is left in /dev/shm. On error
 *   it returns NULL with a message in err (after at most about timeout_s).
 *   world == 1 needs no store (st may be NULL).
 * - Messages are matched by (peer, tag) in the order sent; a send never
 *   waits for the receiver to post its receive (it is buffered eagerly), so
 *   two ranks sending to each other at once never deadlock, and a schedule
 *   the simulator accepts (sends do not block) runs as simulated. A send
 *   returns once its bytes are handed over (socket or shared ring); while
 *   any call waits it keeps receiving from every peer. Sending to oneself
 *   is an error. A receive whose size differs from the matching send is a
 *   fatal error naming both sizes, the peer and the tag.
 * - Collectives run on a group (an ordered subset of world ranks that every
 *   member creates with the same list; lists created more than once must
 *   be created in the same order by every member). Every member calls each
 *   collective with the same sizes and root, and ranks that share several
 *   groups call their collectives in the same order (as with NCCL).
 *   Collective traffic never mixes with point-to-point messages or with
 *   other groups'. prt_allreduce_sum gives bitwise identical results on
 *   every member, on either transport: element i of the result is
 *   ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{n-1}[i], x_k being the vector
 *   of the group's k-th member, every addition rounded to float (double for
 *   _f64). Each member sends and receives about (n-1)/n of the buffer twice
 *   (a direct reduce-scatter then all-gather). n == 0 and groups of one
 *   return at once.
 * - Failures: every wait polls for peers that have gone (connection closed,
 *   process dead) and ends after timeout_s without progress. Then the call
 *   prints one line, "pipec: rank R: lost rank K (...) during OP" or
 *   "pipec: rank R: timed out after 60 s waiting for rank K during OP", and
 *   exits the process with status 1 (after telling the peers it can still
 *   reach, so they too name K). On a timeout K is the rank at the end of
 *   the chain of waits (the one that does not answer), not merely the one
 *   this rank waited for. A peer that finished cleanly (prt_comm_finalize)
 *   is not lost unless someone still waits for it. Nothing returns into a
 *   broken job. SIGPIPE is ignored from prt_comm_init on.
 * - One thread per process calls these functions (not thread-safe).
 *
 * Environment (tuning and tests; the defaults suit most machines):
 *   PIPEC_COMM_SHM=0        TCP even between ranks of one host
 *   PIPEC_COMM_HOST=name    the host name this rank reports (default: gethostname)
 *   PIPEC_COMM_RING_KB      shared-memory ring per peer (default 1024)
 *   PIPEC_COMM_STAGE_KB     shared-memory staging per rank for collectives (default 2048)
 *   PIPEC_COMM_SPIN_US      spin (yielding the CPU) before sleeping in poll() (default 50)
 *   PIPEC_COMM_DEFER_KICKS  1: wake sleeping peers only when about to wait
 *                           (default: 1 with more ranks than CPUs)
 *   PIPEC_COMM_NT=0         large collectives write results with ordinary stores
 *                           (default: non-temporal stores from 4 MiB up)
 *   PIPEC_COMM_ZC=0         no zero-copy all-reduce (buffers from prt_comm_alloc_shared
 *                           are then staged like any other)
 *   PIPEC_COMM_ZC_MIN       smallest all-reduce in bytes that looks for shared
 *                           buffers (default 16384; 0: every one, for tests)
 *   PIPEC_COMM_STATS=1      prt_comm_finalize prints transport counters
 */
#ifndef PIPEC_RT_COMM_H
#define PIPEC_RT_COMM_H
#include <stddef.h>
#include <stdint.h>

#include "runtime/store.h"

typedef struct PrtComm PrtComm;
typedef struct PrtGroup PrtGroup;

PrtComm *prt_comm_init(PrtStore *st, const char *prefix, int rank, int world, double timeout_s, char *err, size_t errlen);
int prt_comm_rank(const PrtComm *c);
int prt_comm_world(const PrtComm *c);
/* Ends the job cleanly: a barrier over the world, then every rank says BYE
 * and waits for everyone's BYE before closing (so no close is mistaken for
 * a crash), then frees c. 0, or -1 for c == NULL. */
int prt_comm_finalize(PrtComm *c);

/* peer: a world rank other than this one; any tag; bytes may be 0. */
void prt_send(PrtComm *c, int peer, uint32_t tag, const void *buf, size_t bytes);
void prt_recv(PrtComm *c, int peer, uint32_t tag, void *buf, size_t bytes);

/* ranks: distinct world ranks in group order; this rank must be one of
 * them. Local: no communication. */
PrtGroup *prt_group_new(PrtComm *c, const int *ranks, int n);
int prt_group_size(const PrtGroup *g);
int prt_group_rank(const PrtGroup *g); /* this rank's index in the group */
void prt_group_free(PrtGroup *g);
void prt_allreduce_sum(PrtGroup *g, float *buf, size_t n);
void prt_allreduce_sum_f64(PrtGroup *g, double *buf, size_t n);
void prt_broadcast(PrtGroup *g, int root, void *buf, size_t bytes); /* root: group index */
void prt_barrier(PrtGroup *g);

/* Memory that the other ranks of this host can map: zeroed, page-aligned,
 * `bytes` long (a memfd, mapped by peers through /proc/<pid>/fd when they
 * first need it; no name in /dev/shm). Not collective. NULL when it cannot
 * be had. An all-reduce whose buffer lies in such memory on every member of
 * a group whose members all share memory (see prt_comm_init) runs zero-copy:
 * each member sums its slice of the vector straight from the others'
 * buffers and writes the sum into all of them (same result, bit for bit, as
 * the staged path); otherwise the all-reduce stages the buffer as usual.
 * The memory stays valid until prt_comm_free_shared or prt_comm_finalize. */
void *prt_comm_alloc_shared(PrtComm *c, size_t bytes);
void prt_comm_free_shared(PrtComm *c, void *p); /* p: from prt_comm_alloc_shared, or NULL */

/* Moves what is ready to move and checks the peers without waiting: ends
 * the process as a wait would ("lost rank K") when a peer has gone. For
 * code that waits on something else (the GPU) between transport calls. */
void prt_comm_poll(PrtComm *c);

/* Aborts the job from this rank: tells every reachable peer that `why`,
 * then exits(1). Used by the runtime for errors that are not comm errors
 * (a bad file on one rank) so the others do not wait out the timeout. */
void prt_comm_abort(PrtComm *c, const char *why);

#endif
