/* stagegen.h — one pipeline rank's program, lowered from the op graph and
 * the schedule IR to straight-line calls with every buffer at a fixed
 * offset of one arena. compiler/llvmgen.c turns it into machine code.
 *
 * Contract: stage_lower() takes the (tensor-parallel rank's) op graph, the
 * pipeline, its lowered schedule and a pipeline rank, and returns
 *  - the arena layout: parameters, gradients, optimizer state (one float
 *    vector each, parameters ordered so that each REDUCE_GRAD reduces one
 *    contiguous range), `nslots` activation slots (a slot holds what one
 *    microbatch of one chunk keeps from its forward to its backward: the
 *    received input, token ids, tensors the backward reads, norm and
 *    attention statistics, and, when the schedule splits I from W, what W
 *    reads from I), and a workspace where the transient tensors of one pass
 *    are packed by lifetime (a tensor never shares bytes with one alive at
 *    the same time). Slots are assigned at compile time by walking the
 *    rank's actions: a chunk-microbatch takes the lowest free slot at its
 *    first RECV_F/F and frees it after its B (or W). So `total` is exactly
 *    what the stage allocates at run time, once.
 *  - functions: for each chunk c of the rank, pipec_c<c>_f, _i and _w
 *    (forward; backward for the inputs; for the weights), each a list of
 *    calls (ctx, arena, slot, mb), and pipec_step: the rank's actions as
 *    calls (receive, chunk function, send, reduce, step).
 *  - the manifest: a text the runtime reads at start (rank table, params,
 *    layout, training settings, each pipeline's microbatches). With
 *    pipelines of different shapes (templates; `pipeline` picks one) the
 *    manifest names each parameter's gradient group (`reduce q j/k ...`:
 *    every pipeline j, rank k holding it) and pipec_step sums the gradients
 *    per group, runs of parameters in parameter order, before STEP (in
 *    place of REDUCE_GRAD and TIED_ALLREDUCE).
 * Errors (a tensor crossing non-adjacent stages, an unsupported layout)
 * return NULL with a message in err.
 */
#ifndef PIPEC_STAGEGEN_H
#define PIPEC_STAGEGEN_H
#include <stddef.h>
#include <stdint.h>

#include "compiler/frontend.h"
#include "compiler/opgraph.h"
#include "lib/arena.h"
#include "lib/schedule.h"

/* argument kinds, as letters of a callee's signature:
 *   p  pointer: arena (+ slot when base is SB_SLOT) + offset bytes
 *   c  the runtime context        m  the microbatch (the function's mb)
 *   i  int32   l  int64   f  float
 *   k  pointer to a constant int32 array (SArg.v indexes StageProgram.consts) */
typedef enum { SB_ARENA, SB_SLOT } SBase;
typedef struct SArg {
  char kind;
  SBase base;
  int64_t v;
  double f;
} SArg;

typedef struct SCall {
  const char *fn;  /* "k_matmul_forward" */
  const char *sig; /* "pppp iii" without the space: one letter per argument */
  SArg *arg;
  int narg;
  const char *what; /* the .pipe module, for readable IR */
} SCall;

typedef struct SFunc {
  const char *name; /* "pipec_c0_f", "pipec_step" */
  int is_step;      /* (ctx, arena) instead of (ctx, arena, slot, mb) */
  SCall *call;
  int ncall, cap;
} SFunc;

typedef struct SConst {
  int32_t v[16];
  int n;
} SConst;

typedef struct StageProgram {
  int pp_rank;
  int nchunks;       /* chunks (stages) this rank runs */
  int64_t param_floats;
  int64_t params_off, grads_off, optim_off, optim_floats;
  int64_t slots_off, slot_bytes, ws_off, ws_bytes;
  int nslots;
  int64_t total;
  SFunc *func;
  int nfunc;
  SConst *consts;
  int nconst;
  char *manifest;
} StageProgram;

/* world_tp_graphs: unused for now (every tp rank runs the same code; the
 * vocabulary offsets come from the runtime's tp rank). */
StageProgram *stage_lower(Arena *a, const Program *p, const OpGraph *g, int pipeline, const Schedule *s, int pp_rank,
                          char *err, size_t errlen);

#endif
