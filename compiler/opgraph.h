/* opgraph.h — the model as operations on tensors, forward and backward.
 *
 * Contract: opgraph_build() expands the checked Program's forward (blocks
 * inlined, groups unrolled) into a flat list of primitive operations on 2-D
 * tensors of N = B*T rows (token ids are 1 column of int32), inferring every
 * tensor's width and reporting a mismatch at the .pipe expression that
 * causes it. Reverse-mode autodiff then appends the backward, split as the
 * zero-bubble schedules need it: phase I (gradients for the inputs, on the
 * critical path) and phase W (gradients for the weights, which can wait).
 * Each operation remembers its top-level module (for stage slicing) and its
 * module path (for readable kernels and errors).
 */
#ifndef PIPEC_OPGRAPH_H
#define PIPEC_OPGRAPH_H
#include "compiler/frontend.h"

typedef enum {
  /* forward */
  OP_POSITIONS,  /* out[i] = i % T (int) */
  OP_EMBEDDING,  /* out = W[in0] */
  OP_MATMUL,     /* out = in0 @ W[row0:row0+rows]^T + b[row0:...] */
  OP_LAYERNORM,  /* out = ln(in0); saves stats */
  OP_RMSNORM,
  OP_ATTENTION,  /* out (dim) = attention core over in0 = packed q|k|v, or in0 = q and in1 = k|v */
  OP_ACT,        /* out = act(in0) */
  OP_ADD,        /* out = in0 + in1 */
  OP_SUB,        /* out = in0 - in1 */
  OP_MUL,        /* out = in0 * in1 */
  OP_SCALE,      /* out = in0 * scalar */
  OP_DROPOUT,    /* out = dropout(in0, p) */
  OP_SOFTMAX,
  OP_XENT,       /* out (1) = cross-entropy(in0 logits, in1 targets) per row */
  /* backward */
  OP_XENT_BWD,       /* out = dlogits of in0 (logits), in1 (targets) */
  OP_MATMUL_BWD_X,   /* out = in0 (dy) @ W */
  OP_MATMUL_BWD_W,   /* dW += in0^T (dy) @ in1 (x); db += sum dy */
  OP_EMBEDDING_BWD,  /* dW += scatter in0 (dy) by in1 (ids) */
  OP_NORM_BWD_X,     /* out = dx of layernorm/rmsnorm: in0 dy, in1 x */
  OP_NORM_BWD_W,     /* dweight, dbias += from in0 dy, in1 x */
  OP_ATTENTION_BWD,  /* out = d(in1 qkv), from in0 dy; out2 = d(in2 kv) for cross */
  OP_ACT_BWD,        /* out = in0 (dy) * act'(in1 x) */
  OP_DROPOUT_BWD,
  OP_SOFTMAX_BWD,    /* out = from in0 dy and in1 y */
  /* tensor parallel (opgraph_shard) */
  OP_TP_ENTER,       /* out = in0 (Megatron's f: identity forward, all-reduce of the gradient backward) */
  OP_ALLREDUCE,      /* out = sum over the tp group of in0 (g: all-reduce forward, identity backward) */
  OP_BIAS,           /* out = in0 + bias (a row-parallel linear's bias, after its all-reduce) */
  OP_BIAS_BWD,       /* dbias += column sums of in0 (dy) */
  OP_VP_ROWMAX,      /* out (1) = max over this rank's vocabulary slice of in0 (logits) */
  OP_VP_SUMEXP,      /* out (2) = [sum exp(in0 - in2), in0[target] if this rank owns it else 0], in1 targets */
  OP_KIND_COUNT
} OpKind;

typedef enum { PHASE_F, PHASE_I, PHASE_W } OpPhase;

typedef struct OgTensor {
  int width;        /* columns; rows are the microbatch's tokens */
  int is_int;       /* token ids / positions */
  int producer;     /* op index, -1 for inputs */
  const char *what; /* "layers.0.ln_1", "d(layers.0.ln_1)" */
} OgTensor;

/* How a tensor-parallel rank holds a parameter (opgraph_shard). */
typedef enum {
  SHARD_NONE,  /* replicated */
  SHARD_ROWS,  /* rows r*rows .. (r+1)*rows of the full (column-parallel linear, its bias) */
  SHARD_COLS,  /* columns r*cols .. (r+1)*cols (row-parallel linear) */
  SHARD_QKV,   /* a packed q|k|v weight or bias split by heads: this rank's q rows,
                  then its k rows, then its v rows */
} ShardKind;

typedef struct OgParam {
  const char *name; /* "layers.0.attn.c_attn.weight" */
  int64_t rows, cols; /* this rank's shape; cols 0 for a vector */
  const Module *mod;
  ShardKind shard;
  int64_t full_rows, full_cols; /* the whole parameter */
  int64_t q_rows, kv_rows;      /* SHARD_QKV: full q rows, full rows of k (= of v) */
} OgParam;

typedef struct OgOp {
  OpKind kind;
  OpPhase phase;
  int in[4], nin;
  int out, out2;      /* tensors; out2: the second output of cross-attention backward */
  int weight, bias;   /* params, -1 if none */
  int row0, rows;     /* weight rows used by OP_MATMUL (a slice for cross-attention) */
  int act;            /* KAct for OP_ACT */
  double scalar;      /* OP_SCALE factor; dropout p; norm eps */
  int heads, kv_heads, causal;
  int top;            /* index of the top-level module this op belongs to */
  int tp, tp_rank;    /* vocabulary-parallel embedding / cross-entropy: the slice is rank's */
  int fwd;            /* backward ops: the forward op they differentiate */
  const Module *mod;  /* the primitive module, NULL for tensor arithmetic */
  Loc loc;            /* where the .pipe source asks for it */
} OgOp;

typedef struct OpGraph {
  OgTensor *t;
  int nt;
  OgOp *op;
  int nop, nfwd;      /* ops [0, nfwd) are the forward */
  OgParam *param;
  int nparam;
  int tokens, targets, loss, output; /* tensors; -1 if absent. output: the forward's result */
} OpGraph;

/* Builds forward and (when the model has a loss) backward. Errors go to
 * diag at their .pipe location; NULL when there was any. */
OpGraph *opgraph_build(Arena *a, Diag *d, const Program *p);

/* The graph of tensor-parallel rank `rank` of `tp` (Megatron-LM): a linear
 * whose output flows, through elementwise ops and attention only, into
 * another linear is column-parallel (its rows split, attention split by
 * heads) and that other linear row-parallel (its columns split, then an
 * all-reduce, then its bias). When the vocabulary divides by tp, the token
 * embedding, the head and the cross-entropy are vocabulary-parallel (each
 * rank a slice of the vocabulary; the softmax's max and sum all-reduced).
 * Everything else is replicated. The backward
 * is derived again, with the all-reduce of the gradient at each entry into
 * a parallel region. tp == 1 returns g. */
OpGraph *opgraph_shard(Arena *a, const OpGraph *g, int tp, int rank);
/* Copies this rank's part of a full parameter (`full`, the tp=1 layout). */
void opgraph_shard_copy(const OgParam *p, int tp, int rank, const float *full, float *part);
/* The attention geometry of op i (OP_ATTENTION or OP_ATTENTION_BWD) for B
 * sequences of T tokens: heads, head size, strides of the packed q|k|v or
 * the separate q and k|v (cross-attention). */
struct KAttn;
void opgraph_attn(const OpGraph *g, int i, int B, int T, struct KAttn *out);
void opgraph_dump(FILE *out, const OpGraph *g, const Program *p);
extern const char *const op_names[OP_KIND_COUNT];

#endif
