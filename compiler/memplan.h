/* memplan.h — the static memory plan of every rank, decided at compile time.
 *
 * Contract: memplan_build() gives each rank of a pipeline one arena and the
 * offset of every buffer in it: parameters, their gradients and optimizer
 * state; one slot of saved activations per microbatch the schedule keeps in
 * flight on that rank (the simulator's peak, so 1F1B plans p - r slots where
 * GPipe plans m); a workspace shared by the forward's and the backward's
 * transient tensors (their lives never overlap across the two passes); and
 * communication buffers for the activations and gradients crossing stage
 * boundaries. At run time a stage allocates exactly `total` bytes once.
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
  int64_t workspace_bytes, comm_bytes;
  int64_t total;
  MemRegion region[6];
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
                       const SimResult *sim);
void memplan_print(FILE *out, const MemPlan *m, const Program *p);
/* "16GiB", "800MiB", "1.5G", "123456": bytes, or -1 */
int64_t memplan_parse_bytes(const char *s);

#endif
