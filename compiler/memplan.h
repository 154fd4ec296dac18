/* memplan.h — the static memory plan of every rank, decided at compile time.
 *
 * Contract: memplan_build() gives each rank of a pipeline one arena and the
 * offset of every buffer in it: parameters, their gradients and optimizer
 * state; one slot of saved activations per microbatch the schedule keeps in
 * flight on that rank (1F1B plans p - r slots where GPipe plans m); a
 * workspace where the transient tensors of a pass are packed by lifetime.
 * The layout is compiler/stagegen.c's, so for fp32 `total` is exactly what
 * the stage program allocates at run time, once (messages between stages
 * are copied by the transport, outside the arena).
 */
#ifndef PIPEC_MEMPLAN_H
#define PIPEC_MEMPLAN_H
#include <stdint.h>
#include <stdio.h>

#include "compiler/frontend.h"
#include "compiler/opgraph.h"
#include "lib/schedule.h"

typedef struct MemRegion {
  const char *name;  /* "parameters", "activations (4 slots)", ... */
  int64_t offset, bytes;
} MemRegion;

typedef struct RankMemory {
  int rank;
  int64_t param_bytes, grad_bytes, optim_bytes;
  int64_t act_per_microbatch; /* saved for backward, one microbatch, the largest of the rank's stages */
  int slots;                  /* microbatches in flight at the peak */
  int64_t workspace_bytes;
  int64_t total;
  int64_t arena_bytes; /* the fp32 stage program's arena (= total for fp32) */
  MemRegion region[5];
  int nregion;
} RankMemory;

typedef struct MemPlan {
  int nranks;
  RankMemory *rank;
  int64_t tokens_per_microbatch;
} MemPlan;

/* g: the (tensor-parallel rank's) op graph; s and sim: the pipeline's
 * lowered schedule and its simulation. */
MemPlan *memplan_build(Arena *a, const Program *p, const OpGraph *g, const Pipeline *pl, const Schedule *s,
                       const SimResult *sim, char *err, size_t errlen);
void memplan_print(FILE *out, const MemPlan *m, const Program *p);
/* "16GiB", "800MiB", "1.5G", "123456": bytes, or -1 */
int64_t memplan_parse_bytes(const char *s);

#endif
