/* frontend.h — from .pipe text to a checked Program.
 *
 * Contract: pipe_frontend() reads a file (and what it imports), parses it,
 * resolves every name, evaluates every hyper-parameter, expands repeated
 * modules, places modules on stages and checks the parallel, train and infer
 * settings. Every problem is reported through Diag at its source location;
 * the function never exits, never asserts, and returns NULL when there was
 * any error. All memory is in the Arena the caller passes and frees.
 *
 * The Program is what the later passes (partition refinement, schedule,
 * kernels, codegen) consume: an ordered list of named top-level modules
 * (layers expanded to layers.0 ... layers.N-1), each a tree of primitive
 * modules with evaluated sizes, the pipelines with their stages, and the
 * parallel/train/infer settings with defaults filled in.
 */
#ifndef PIPEC_FRONTEND_H
#define PIPEC_FRONTEND_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "compiler/ast.h"
#include "lib/arena.h"
#include "lib/diag.h"

/* ---- values: the result of evaluating an expression ---- */
typedef enum { V_INT, V_FLOAT, V_BOOL, V_STR, V_SYM, V_LIST, V_TUPLE, V_CALL, V_EVERY, V_RANGE } ValueKind;

typedef struct Value {
  ValueKind kind;
  Loc loc;
  int64_t i;          /* V_INT, V_BOOL */
  double f;           /* V_FLOAT */
  const char *s;      /* V_STR text, V_SYM name, V_CALL callee */
  int slen;           /* V_STR length */
  struct Value **items; /* V_LIST, V_TUPLE, V_CALL (args), V_EVERY {what, every}, V_RANGE {from, to} */
  const char **keys;  /* V_CALL: keyword of each arg, NULL for positional */
  Loc *key_locs;      /* V_CALL: where each keyword is written */
  int n;
} Value;

/* ---- the standard library embedded in the binary ---- */
typedef struct PipeStdlibFile {
  const char *name, *text;
  long len;
} PipeStdlibFile;
extern const PipeStdlibFile pipe_stdlib[];
extern const PipeStdlibFile pipe_cuda_headers[]; /* the .cuh files of kernels/ */

/* ---- modules ---- */
typedef enum {
  PRIM_NONE = 0, /* a block written in the language */
  PRIM_EMBEDDING,     /* embedding(num, dim)               weight (num, dim) */
  PRIM_LINEAR,        /* linear(in, out, bias, tie)        weight (out, in), bias (out) */
  PRIM_LAYERNORM,     /* layernorm(dim, eps, bias)         weight (dim), bias (dim) */
  PRIM_RMSNORM,       /* rmsnorm(dim, eps)                 weight (dim) */
  PRIM_ATTENTION,     /* attention(dim, heads, causal, bias, dropout, kv_heads)
                         qkv (dim + 2*kv_dim, dim), proj (dim, dim), biases */
  PRIM_DROPOUT,       /* dropout(p) */
  PRIM_ACTIVATION,    /* gelu(), gelu_tanh(), relu(), silu() as modules */
  PRIM_CROSS_ENTROPY, /* cross_entropy(ignore_index, label_smoothing) */
} PrimKind;

typedef struct BlockDef {
  const char *name;
  Loc loc;
  const Entry *entry; /* E_BLOCK, its params and body */
} BlockDef;

typedef struct Module {
  const char *name;  /* local name: "ln_1", or "3" inside a repeated group */
  const char *path;  /* full path: "layers.3.ln_1" */
  const char *kind;  /* "layernorm", "transformer_block" */
  PrimKind prim;
  const BlockDef *block; /* when prim == PRIM_NONE */
  Loc loc;               /* the declaration */
  const char *group;     /* "layers" for layers.3, else NULL */
  int group_index;
  /* primitive sizes (unused ones 0) */
  int64_t num, dim, in, out, heads, kv_heads;
  int bias, causal;
  double eps, p;
  const char *act; /* PRIM_ACTIVATION: gelu | gelu_tanh | relu | silu */
  struct Module *tie; /* linear tied to an embedding's weight */
  const char *tie_name;
  Loc tie_loc;
  int role;           /* top-level modules: ROLE_* bits from the model's forward */
  const Entry *forward; /* the block's forward (E_FORWARD), synthesized if absent */
  const struct Scope *values; /* the block's hyper-parameters, as this instance evaluated them */
  struct Module **kids;
  int nkids;
  int64_t nparams;  /* parameters owned (a tied weight counts once, at its owner) */
} Module;

enum { ROLE_INPUT = 1, ROLE_HEAD = 2, ROLE_LOSS = 4 };

/* Forward FLOPs per token of a module at sequence length T (cost model). */
double module_flops_per_token(const Module *m, int64_t T);

/* ---- placement ---- */
typedef struct Stage {
  int first, last; /* indices into Program.mods, inclusive */
  Loc loc;         /* where the user defined this stage (split point, list) */
} Stage;

typedef struct Pipeline {
  const char *template_name; /* NULL without templates */
  int nstages;
  Stage *stages;
  int microbatches;
  Loc loc;
} Pipeline;

typedef enum { SCHED_GPIPE, SCHED_1F1B, SCHED_INTERLEAVED, SCHED_LOOPED_BFS, SCHED_ZB1P, SCHED_ZBV, SCHED_FORWARD_ONLY } ScheduleKind;
extern const char *const schedule_names[];

typedef struct Program {
  const char *model_name;
  Loc model_loc;
  Module **mods; /* ordered top-level modules, groups expanded */
  int nmods;
  int64_t nparams;
  const Entry *forward; /* the model's forward, explicit or synthesized */
  const struct Scope *values; /* the model's hyper-parameters */

  /* parallel */
  int tp, dp, pp, virtual_stages;
  int world;      /* ranks the plan needs */
  char order[3];  /* fastest first: 't','d','p' */
  Pipeline *pipes;
  int npipes;

  /* train (has_train = 0 when the file has no train section) */
  int has_train;
  int64_t batch, seq, steps, seed, log_every, val_every, save_every, keep;
  int microbatches; /* per pipeline, without templates */
  ScheduleKind schedule;
  const char *optimizer; /* adamw | sgd */
  double lr, beta1, beta2, opt_eps, weight_decay, momentum, grad_clip, min_lr;
  const char *lr_schedule; /* constant | cosine | linear */
  int64_t warmup;
  const char *precision; /* fp32 | bf16 */
  const char *data, *val_data, *init, *save_dir;

  /* infer */
  int has_infer;
  const char *prompt, *weights, *sampling;
  int64_t max_new_tokens, top_k, beams, infer_seed;
  double top_p, temperature;
} Program;

typedef struct FrontendOptions {
  int world_size; /* --world-size, 0 = from the file */
  const char *const *import_dirs; /* NULL-terminated; searched after the file's own folder */
} FrontendOptions;

/* Read `path` (or, when text != NULL, use text as its contents). */
Program *pipe_frontend(Arena *arena, Diag *diag, const char *path, const char *text, long len,
                       const FrontendOptions *opt);

/* The compute-only schedule of one pipeline (lib/schedule.h); NULL with a
 * message in err when the combination is not defined. kind: ScheduleKind. */
struct Schedule *schedule_generate(int kind, int pp, int virt, int nmb, char *err, size_t errlen);

/* Print the checked program: modules, parameters, stages, settings. */
void program_dump(FILE *out, const Program *p);

#endif
