/* graph_exec.c — see graph_exec.h. */
#include "runtime/graph_exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/kernels.h"
#include "lib/params.h"
#include "lib/xalloc.h"

static int64_t param_values(const OgParam *p) { return p->rows * (p->cols ? p->cols : 1); }

GraphExec *gexec_new(const OpGraph *g, int B, int T) {
  GraphExec *x = xcalloc(1, sizeof *x);
  x->g = g, x->B = B, x->T = T, x->N = B * T;
  x->val = xcalloc((size_t)g->nt, sizeof(float *));
  x->ival = xcalloc((size_t)g->nt, sizeof(int32_t *));
  for (int i = 0; i < g->nt; i++) {
    if (g->t[i].is_int) x->ival[i] = xcalloc((size_t)x->N, sizeof(int32_t));
    else x->val[i] = xcalloc((size_t)x->N * (size_t)g->t[i].width, sizeof(float));
  }
  x->aux = xcalloc((size_t)g->nop, sizeof(float *));
  for (int i = 0; i < g->nfwd; i++) {
    const OgOp *o = &g->op[i];
    if (o->kind == OP_LAYERNORM || o->kind == OP_RMSNORM) x->aux[i] = xcalloc(2 * (size_t)x->N, sizeof(float));
    if (o->kind == OP_ATTENTION) x->aux[i] = xcalloc((size_t)B * (size_t)o->heads * (size_t)T, sizeof(float));
  }
  x->param_off = xcalloc((size_t)g->nparam + 1, sizeof(int64_t));
  for (int i = 0; i < g->nparam; i++) x->param_off[i + 1] = x->param_off[i] + param_values(&g->param[i]);
  x->nparams = x->param_off[g->nparam];
  x->params = xcalloc((size_t)x->nparams, sizeof(float));
  x->grads = xcalloc((size_t)x->nparams, sizeof(float));
  x->seed = 1337;
  return x;
}

void gexec_free(GraphExec *x) {
  if (!x) return;
  for (int i = 0; i < x->g->nt; i++) free(x->val[i]), free(x->ival[i]);
  for (int i = 0; i < x->g->nop; i++) free(x->aux[i]);
  free(x->val), free(x->ival), free(x->aux), free(x->param_off), free(x->params), free(x->grads), free(x);
}

void gexec_init_params(GraphExec *x, uint64_t seed) {
  for (int i = 0; i < x->g->nparam; i++) {
    const OgParam *p = &x->g->param[i];
    param_init_full(x->params + x->param_off[i], p->name, p->rows, p->cols, i, seed);
  }
}

float *gexec_param(GraphExec *x, const char *name, int64_t *count) {
  for (int i = 0; i < x->g->nparam; i++)
    if (!strcmp(x->g->param[i].name, name)) {
      if (count) *count = param_values(&x->g->param[i]);
      return x->params + x->param_off[i];
    }
  return NULL;
}

static float *P(GraphExec *x, int id, int row0, int64_t cols) { return id < 0 ? NULL : x->params + x->param_off[id] + (int64_t)row0 * (cols ? cols : 1); }
static float *G(GraphExec *x, int id, int row0, int64_t cols) { return id < 0 ? NULL : x->grads + x->param_off[id] + (int64_t)row0 * (cols ? cols : 1); }

static KAttn attn_of(const GraphExec *x, const OgOp *o, const OpGraph *g) {
  KAttn a;
  opgraph_attn(g, (int)(o - g->op), x->B, x->T, &a);
  return a;
}

static void run(GraphExec *x, int i, const int32_t *tokens, const int32_t *targets) {
  const OpGraph *g = x->g;
  const OgOp *o = &g->op[i];
  int N = x->N;
  float *out = o->out >= 0 ? x->val[o->out] : NULL;
  float *in0 = o->nin > 0 ? x->val[o->in[0]] : NULL, *in1 = o->nin > 1 ? x->val[o->in[1]] : NULL;
  int w = o->out >= 0 ? g->t[o->out].width : 0;
  long n = (long)N * w;
  const OgParam *wp = o->weight >= 0 ? &g->param[o->weight] : NULL;
  (void)tokens, (void)targets;
  switch (o->kind) {
  case OP_POSITIONS: k_positions(x->ival[o->out], N, x->T); break;
  case OP_EMBEDDING:
    if (o->tp > 1) { /* vocabulary-parallel: this rank's rows, zeros for the others' tokens */
      k_vp_embedding_forward(out, x->ival[o->in[0]], P(x, o->weight, 0, 0), N, w, wp->rows * o->tp_rank, wp->rows);
      break;
    }
    k_embedding_forward(out, x->ival[o->in[0]], P(x, o->weight, 0, 0), NULL, x->B, x->T, w);
    break;
  case OP_VP_ROWMAX: k_vp_rowmax(out, in0, N, g->t[o->in[0]].width); break;
  case OP_VP_SUMEXP: {
    int V = g->t[o->in[0]].width;
    k_vp_sumexp(out, in0, x->ival[o->in[1]], x->val[o->in[2]], N, V, (int64_t)V * o->tp_rank);
    break;
  }
  case OP_MATMUL:
    k_matmul_forward(out, in0, P(x, o->weight, o->row0, wp->cols), P(x, o->bias, o->row0, 0), N, (int)wp->cols, o->rows);
    break;
  case OP_LAYERNORM:
    k_layernorm_forward(out, x->aux[i], x->aux[i] + N, in0, P(x, o->weight, 0, 0), P(x, o->bias, 0, 0), N, w, (float)o->scalar);
    break;
  case OP_RMSNORM:
    k_rmsnorm_forward(out, x->aux[i] + N, in0, P(x, o->weight, 0, 0), N, w, (float)o->scalar);
    break;
  case OP_ATTENTION: {
    KAttn a = attn_of(x, o, g);
    int kv = a.HS * a.NH_kv;
    const float *q = in0, *k = o->nin == 2 ? in1 : in0 + w, *v = o->nin == 2 ? in1 + kv : in0 + w + kv;
    k_attention_forward(out, x->aux[i], q, k, v, &a);
    break;
  }
  case OP_ACT: k_act_forward(out, in0, n, (KAct)o->act); break;
  case OP_ADD: k_add(out, in0, in1, n); break;
  case OP_SUB: k_sub(out, in0, in1, n); break;
  case OP_MUL: k_mul(out, in0, in1, n); break;
  case OP_SCALE: k_scale_copy(out, in0, n, (float)o->scalar); break;
  case OP_DROPOUT: k_dropout_forward(out, in0, n, (float)o->scalar, x->seed, (uint64_t)i << 32); break;
  case OP_SOFTMAX: k_softmax_forward(out, in0, N, w); break;
  case OP_XENT: {
    int V = g->t[o->in[0]].width;
    if (o->tp > 1) { /* vocabulary-parallel: from the all-reduced max and sums */
      k_vp_xent_forward(out, x->ival[o->in[1]], x->val[o->in[2]], x->val[o->in[3]], N);
      break;
    }
    k_crossentropy_forward_backward(out, NULL, in0, x->ival[o->in[1]], N, V, 0);
    break;
  }
  case OP_XENT_BWD: {
    float *losses = x->val[g->op[o->fwd].out];
    int valid = 0;
    for (int r = 0; r < N; r++) valid += x->ival[o->in[1]][r] >= 0;
    float scale = valid ? 1.0f / (float)valid : 0;
    if (o->tp > 1) {
      k_vp_xent_backward(out, in0, x->ival[o->in[1]], x->val[o->in[2]], x->val[o->in[3]], N, w, (int64_t)w * o->tp_rank, scale);
      break;
    }
    k_crossentropy_forward_backward(losses, out, in0, x->ival[o->in[1]], N, w, scale);
    break;
  }
  case OP_MATMUL_BWD_X:
    k_matmul_backward_input(out, in0, P(x, o->weight, o->row0, wp->cols), N, (int)wp->cols, o->rows);
    break;
  case OP_MATMUL_BWD_W:
    k_matmul_backward_weight(G(x, o->weight, o->row0, wp->cols), G(x, o->bias, o->row0, 0), in0, in1, N, (int)wp->cols, o->rows);
    break;
  case OP_EMBEDDING_BWD:
    if (o->tp > 1) {
      k_vp_embedding_backward(G(x, o->weight, 0, 0), in0, x->ival[o->in[1]], N, (int)wp->cols, wp->rows * o->tp_rank, wp->rows);
      break;
    }
    k_embedding_backward(G(x, o->weight, 0, 0), NULL, in0, x->ival[o->in[1]], x->B, x->T, (int)wp->cols);
    break;
  case OP_NORM_BWD_X: {
    /* one kernel gives the input and the parameter gradients; phase W then
       has nothing left to do for norms */
    const OgOp *f = &g->op[o->fwd];
    float *aux = x->aux[o->fwd];
    if (f->kind == OP_LAYERNORM)
      k_layernorm_backward(out, G(x, f->weight, 0, 0), G(x, f->bias, 0, 0), in0, in1, P(x, f->weight, 0, 0), aux, aux + N, N, w);
    else
      k_rmsnorm_backward(out, G(x, f->weight, 0, 0), in0, in1, P(x, f->weight, 0, 0), aux + N, N, w);
    break;
  }
  case OP_NORM_BWD_W: break; /* done with NORM_BWD_X */
  case OP_ATTENTION_BWD: {
    const OgOp *f = &g->op[o->fwd];
    KAttn a = attn_of(x, o, g);
    int d = g->t[f->out].width, kv = a.HS * a.NH_kv;
    const float *q = x->val[f->in[0]];
    const float *k = f->nin == 2 ? x->val[f->in[1]] : q + d, *v = f->nin == 2 ? x->val[f->in[1]] + kv : q + d + kv;
    float *dq = out, *dk = f->nin == 2 ? x->val[o->out2] : out + d, *dv = f->nin == 2 ? x->val[o->out2] + kv : out + d + kv;
    k_attention_backward(dq, dk, dv, in0, x->val[f->out], x->aux[o->fwd], q, k, v, &a);
    break;
  }
  case OP_ACT_BWD: k_act_backward(out, in0, in1, n, (KAct)o->act); break;
  case OP_DROPOUT_BWD: k_dropout_backward(out, in0, n, (float)o->scalar, x->seed, (uint64_t)o->fwd << 32); break;
  case OP_SOFTMAX_BWD: k_softmax_backward(out, in0, in1, N, w); break;
  case OP_TP_ENTER: k_copy(out, in0, n); break;
  case OP_ALLREDUCE:
    k_copy(out, in0, n);
    if (x->allreduce) x->allreduce(x->allreduce_ctx, x, i, out, n);
    break;
  case OP_BIAS: k_bias_add(out, in0, P(x, o->bias, 0, 0), N, w); break;
  case OP_BIAS_BWD: k_bias_backward(G(x, o->bias, 0, 0), in0, N, g->t[o->in[0]].width); break;
  case OP_KIND_COUNT: break;
  }
}

void gexec_run_op(GraphExec *x, int i) { run(x, i, NULL, NULL); }

float gexec_forward(GraphExec *x, const int32_t *tokens, const int32_t *targets) {
  const OpGraph *g = x->g;
  if (g->tokens >= 0) memcpy(x->ival[g->tokens], tokens, sizeof(int32_t) * (size_t)x->N);
  if (g->targets >= 0 && targets) memcpy(x->ival[g->targets], targets, sizeof(int32_t) * (size_t)x->N);
  for (int i = 0; i < g->nfwd; i++) run(x, i, tokens, targets);
  x->loss = 0;
  if (g->loss >= 0) {
    double s = 0;
    int valid = 0;
    for (int r = 0; r < x->N; r++)
      if (!targets || targets[r] >= 0) s += x->val[g->loss][r], valid++;
    x->loss = valid ? (float)(s / valid) : 0;
  }
  return x->loss;
}

void gexec_backward(GraphExec *x) {
  const OpGraph *g = x->g;
  for (int ph = PHASE_I; ph <= PHASE_W; ph++)
    for (int i = g->nfwd; i < g->nop; i++)
      if ((int)g->op[i].phase == ph) run(x, i, NULL, NULL);
}
