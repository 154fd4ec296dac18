/* graph_exec.h — runs an OpGraph on the CPU kernels (lib/kernels.h): the
 * forward of a microbatch, its loss, and the backward into parameter
 * gradients. It is the CPU path's reference executor: the generated stage
 * programs call the same kernels in the same order.
 *
 * Contract: gexec_new() allocates every tensor of the graph for a
 * microbatch of B sequences of T tokens, plus parameters and gradients, all
 * zero. Parameters live in one allocation (`params`, gradients in `grads`),
 * parameter i at offset param_off[i], in the graph's parameter order.
 */
#ifndef PIPEC_GRAPH_EXEC_H
#define PIPEC_GRAPH_EXEC_H
#include <stdint.h>

#include "compiler/opgraph.h"

typedef struct GraphExec GraphExec;
struct GraphExec {
  const OpGraph *g;
  int B, T, N;
  float **val;        /* per tensor (N x width), NULL for int tensors */
  int32_t **ival;     /* per int tensor (N) */
  float **aux;        /* per op: saved statistics (mean|rstd, lse) */
  float *params, *grads;
  int64_t *param_off, nparams;
  uint64_t seed;      /* dropout */
  float loss;         /* mean over the rows with a target */
  /* OP_ALLREDUCE: sums `buf` (n floats, the output of op `op`) over the
     tensor-parallel group; NULL with tp = 1 */
  void (*allreduce)(void *ctx, struct GraphExec *x, int op, float *buf, long n);
  void *allreduce_ctx;
};

GraphExec *gexec_new(const OpGraph *g, int B, int T);
void gexec_free(GraphExec *x);
/* Fills parameters as GPT-2 initialises them: N(0, 0.02) for matrices and
 * embeddings, 1 for norm weights, 0 for biases (deterministic from seed). */
void gexec_init_params(GraphExec *x, uint64_t seed);
/* Runs the forward ops; returns the mean loss (or 0 without a loss). */
float gexec_forward(GraphExec *x, const int32_t *tokens, const int32_t *targets);
/* Runs the backward ops (I then W); gradients are accumulated into grads. */
void gexec_backward(GraphExec *x);
/* Runs one op (for callers that interleave ranks op by op). */
void gexec_run_op(GraphExec *x, int i);
/* A parameter by name, or NULL. */
float *gexec_param(GraphExec *x, const char *name, int64_t *count);

#endif
