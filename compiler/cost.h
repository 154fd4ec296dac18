/* cost.h — the cost model: FLOPs, parameter memory and activation memory of
 * a module and of pipeline stages, and the --explain-partition report.
 *
 * Contract: every function reads a checked Program (pipe_frontend's result)
 * or one of its modules and never changes it; scratch memory is malloc'ed
 * and freed before returning. Results are pure functions of the input, so
 * the report is the same byte for byte on every run.
 *
 * FLOPs (per token; 2 FLOPs per multiply-add):
 *   forward    module_flops_per_token() of check.c: linear 2*in*out;
 *              attention 2*dim*(dim + 2*kv_dim) + 2*dim*dim for the
 *              projections plus 4*T*dim for scores and weighted sum, halved
 *              when causal; layernorm/rmsnorm 8*dim; embedding dim; blocks
 *              the sum of their modules. Biases, softmax, activations,
 *              residual adds and dropout count 0.
 *   backward   2x forward for linear and attention (input grad + weight
 *              grad; for the score/value part dQ, dK, dV, dP — flash-style
 *              recomputation of the scores is not counted); 1x forward for
 *              everything else (layernorm, rmsnorm, embedding gradient
 *              scatter; activations, dropout and the loss have forward 0);
 *              blocks the sum of their modules. A tied linear still
 *              computes its weight gradient (into the shared weight).
 *
 * Parameter memory (bytes per parameter, cost_bytes_per_param):
 *   fp32   weights 4 + grads 4                         = 8
 *   bf16   bf16 weights 2 + bf16 grads 2 + fp32 master 4 = 8
 *   + optimizer state: adamw m and v, fp32            + 8  (16 in all)
 *                      sgd with momentum > 0          + 4  (12)
 *                      sgd without momentum           + 0  (8)
 * A tied linear owns no weight (its nparams is 0): the weight and its state
 * count once, at the module it is tied to. When the two sit on different
 * stages the report says so in a `tie:` line (a pipeline keeps a copy of
 * the weight and its gradient there); the table does not count that copy.
 *
 * Activation memory (bytes per token kept from forward for backward; an
 * element is 4 bytes in fp32, 2 in bf16; statistics are fp32 always):
 *   linear          its input: in elements
 *   layernorm       its input (dim) + mean and rstd (2 fp32)
 *   rmsnorm         its input (dim) + rstd (1 fp32): it has no mean
 *   attention       flash-style, T x T never stored: the input of the qkv
 *                   projection (dim; a second input, the memory of cross-
 *                   attention, another dim) + q, k, v (dim + 2*kv_dim) + the
 *                   attention output before the projection (dim) +
 *                   logsumexp (heads fp32). Attention dropout keeps only an
 *                   RNG seed: 0.
 *   gelu etc.       its input, as wide as the tensor it is applied to (for
 *   (module or op)  GPT-2's mlp the c_fc output, 4*dim); softmax its output,
 *                   the same size. A module called with no known width (a
 *                   lone cost_module call) counts 0.
 *   dropout         p > 0: a 1-byte mask per element of its input; p = 0: 0.
 *                   The dropout(x, p) operation of a forward counts its mask
 *                   only when p is written as a number: the front end does
 *                   not keep a block's hyper-parameter values, so a p given
 *                   by name (GPT-2's mlp: dropout(..., dropout)) counts 0.
 *   embedding       nothing (its input is token indices)
 *   cross_entropy   the logits: its input's width (the head's output,
 *                   vocab); a lone cost_module call has no width and counts
 *                   0, cost_stages falls back to the head linear's `out`.
 *   a * b, a / b    (in a forward, both tensors) the inputs backward needs;
 *   mul(a, b)       + - add() positions() keep nothing.
 *   blocks          what their forward keeps: each module call and each
 *                   operation as above, following the tensors through the
 *                   forward (so a module called twice counts twice, and a
 *                   tensor kept by two consumers, like LLaMA's ffn_norm
 *                   output read by w1 and w3, counts once). For GPT-2 this
 *                   is the sum of the modules plus the gelu input.
 * cost_stages walks the model's forward the same way: widths flow from
 * module to module, a tensor kept by several modules of one stage counts
 * once on that stage, and an operation written in the model's forward
 * counts on the stage of the module called before it.
 */
#ifndef PIPEC_COST_H
#define PIPEC_COST_H
#include <stdint.h>
#include <stdio.h>

#include "compiler/frontend.h"

typedef struct ModuleCost {
  double fwd_flops, bwd_flops; /* per token */
  int64_t params;              /* owned (a tied linear owns no weight) */
  double param_bytes;          /* weights + grads + optimizer state (AdamW) */
  double act_bytes;            /* per token, kept for backward */
} ModuleCost;

/* The cost of one module on its own at sequence length `seq`; precision
 * "fp32" or "bf16" (anything else is taken as fp32). param_bytes assumes
 * AdamW; cost_stages uses the Program's optimizer. */
ModuleCost cost_module(const Module *m, int64_t seq, const char *precision);

typedef struct StageCostSummary {
  int first, last;             /* indices into Program.mods, inclusive */
  double fwd_flops, bwd_flops; /* per token */
  int64_t params;
  double param_bytes, act_bytes_per_token;
} StageCostSummary;

/* One entry per stage of `pl` (out has pl->nstages entries), at the
 * Program's seq, precision and optimizer. */
void cost_stages(const Program *p, const Pipeline *pl, StageCostSummary *out);

/* Bytes per parameter for weights, gradients and optimizer state (see the
 * table above); optimizer "adamw" or "sgd". */
double cost_bytes_per_param(const char *precision, const char *optimizer, double momentum);

/* Bytes of one activation element: 2 for bf16, else 4. */
double cost_act_elt_bytes(const char *precision);

/* Tokens in one microbatch: batch / (microbatches summed over all the
 * pipelines) sequences of seq tokens. Without templates that is
 * batch / (dp * microbatches) * seq; with templates the batch is split in
 * proportion to the pipelines' microbatch counts, which gives every
 * microbatch the same size. */
double cost_microbatch_tokens(const Program *p);

/* pipec --explain-partition: a header line (model, parameters, seq,
 * precision, optimizer, microbatch size), then for each distinct placement
 * (once per template; data-parallel replicas are shown once) a table with
 * one row per stage — modules, forward and backward FLOPs per microbatch,
 * parameters, parameter + gradient + optimizer bytes, activation bytes per
 * microbatch — and the imbalance: slowest / mean stage fwd+bwd FLOPs. */
void cost_explain_partition(FILE *out, const Program *p);

/* 5.5 * 2^30 -> "5.50 GiB", 100 -> "100 B" (binary units up to PiB). */
void cost_format_bytes(char *buf, size_t n, double x);

/* 124439808 -> "124.44M", 5000 -> "5.00K", 12 -> "12". */
void cost_format_count(char *buf, size_t n, double x);

#endif
