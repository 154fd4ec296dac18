/* stagegen.c — see stagegen.h. */
#include "compiler/stagegen.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/cost.h"
#include "compiler/plan.h"
#include "lib/kernels.h"
#include "lib/xalloc.h"

enum { LOC_NONE, LOC_SLOT, LOC_WS };

typedef struct Chunk {
  int stage;        /* index in the pipeline's stages */
  int *fops, nf;    /* forward ops */
  int *iops, ni;    /* phase I */
  int *wops, nw;    /* phase W (without no-op ones) */
  char *loc;        /* per tensor: LOC_* */
  int64_t *off;     /* per tensor: offset in slot or workspace */
  int64_t *aux;     /* per op: offset of its statistics in the slot, -1 */
  int *recv_f, nrf; /* tensors received before F (from stage - 1) */
  int *recv_b, nrb; /* tensors received before B/I (from stage + 1) */
  int *send_f, nsf; /* tensors sent after F (to stage + 1) */
  int *send_b, nsb; /* tensors sent after B/I (to stage - 1) */
  int64_t slot_bytes, ws_bytes;
  int has_loss;
} Chunk;

typedef struct Gen {
  Arena *a;
  const Program *p;
  const OpGraph *g;
  const Pipeline *pl;
  const Schedule *s;
  StageProgram *sp;
  int *chunk_of_op; /* stage of each op */
  int *prod;        /* per tensor: the op that writes it (the graph records forward producers only), -1 for inputs */
  int64_t N, B, T;
  int64_t *poff;    /* per param: offset in floats in the parameter vector, -1 if not on this rank */
  int gen;          /* lowering the generation functions: one token per beam, KV caches */
  int64_t *kv_off;  /* generation: per op, its KV cache's offset in the generation region */
  int64_t maxT;     /* generation: positions a KV cache holds */
  char *err;
  size_t errlen;
  /* gradient buckets (dp > 1): per param its bucket, -1 if none; while
     lowering a backward op (track), the params whose gradient it writes */
  int *bucket_of, *bucket_calls, nbuckets;
  int64_t *bucket_lo, *bucket_hi;
  int track, touched[8], ntouched;
} Gen;

static int fail(Gen *G, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(G->err, G->errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* floats a parameter takes in the parameter vector (16-float aligned) */
static int64_t psize(const OgParam *pp) { return (pp->rows * (pp->cols ? pp->cols : 1) + 15) / 16 * 16; }

static int stage_of(const Pipeline *pl, int top) {
  for (int s = 0; s < pl->nstages; s++)
    if (top >= pl->stages[s].first && top <= pl->stages[s].last) return s;
  return -1;
}

static int64_t tbytes(const Gen *G, int t) { return G->N * G->g->t[t].width * 4; }
static int64_t align64(int64_t x) { return (x + 63) / 64 * 64; }

/* the tensors op i reads, including those its kernel reads beyond in[] */
static int op_reads(const OpGraph *g, int i, int *r) {
  const OgOp *o = &g->op[i];
  int n = 0;
  if (o->kind == OP_NORM_BWD_W) return 0; /* done by NORM_BWD_X */
  for (int k = 0; k < o->nin; k++) r[n++] = o->in[k];
  if (o->kind == OP_ATTENTION_BWD) {
    const OgOp *f = &g->op[o->fwd];
    for (int k = 0; k < f->nin; k++) r[n++] = f->in[k];
    r[n++] = f->out;
  }
  if (o->kind == OP_XENT_BWD) r[n++] = g->op[o->fwd].out;
  return n;
}

static int op_writes(const OpGraph *g, int i, int *w) {
  const OgOp *o = &g->op[i];
  int n = 0;
  if (o->kind == OP_NORM_BWD_W) return 0;
  if (o->out >= 0) w[n++] = o->out;
  if (o->kind == OP_ATTENTION_BWD && o->out2 >= 0) w[n++] = o->out2;
  return n;
}

static int has_aux(const OgOp *o) { return o->kind == OP_LAYERNORM || o->kind == OP_RMSNORM || o->kind == OP_ATTENTION; }
static int64_t aux_bytes(const Gen *G, const OgOp *o) {
  if (o->kind == OP_ATTENTION) return G->B * o->heads * G->T * 4;
  return 2 * G->N * 4; /* mean | rstd */
}

static void push_int(Arena *a, int **v, int *n, int x) {
  for (int k = 0; k < *n; k++)
    if ((*v)[k] == x) return;
  int *nv = arena_alloc(a, sizeof(int) * (size_t)(*n + 1));
  if (*n) memcpy(nv, *v, sizeof(int) * (size_t)*n);
  nv[(*n)++] = x;
  *v = nv;
}

/* ---- workspace packing: tensors with [start, end] in a pass get offsets
   such that two whose lives overlap never share a byte ---- */
typedef struct Live {
  int t;
  int start, end;
  int64_t bytes, off;
} Live;

static int by_size(const void *x, const void *y) {
  const Live *a = x, *b = y;
  if (a->bytes != b->bytes) return a->bytes < b->bytes ? 1 : -1;
  return a->start - b->start;
}

static int64_t pack(Live *l, int n) {
  qsort(l, (size_t)n, sizeof *l, by_size);
  int64_t top = 0;
  for (int i = 0; i < n; i++) {
    int64_t off = 0;
    for (int again = 1; again;) { /* first fit: move past every overlapping placed buffer */
      again = 0;
      for (int j = 0; j < i; j++) {
        if (l[j].end < l[i].start || l[i].end < l[j].start) continue;
        if (off < l[j].off + l[j].bytes && l[j].off < off + l[i].bytes) off = align64(l[j].off + l[j].bytes), again = 1;
      }
    }
    l[i].off = off;
    if (off + l[i].bytes > top) top = off + l[i].bytes;
  }
  return top;
}

/* one pass's workspace: ops in order; tensors placed LOC_WS that this pass
   writes, or receives (in[] external, alive from the start), or sends
   (alive to the end) */
static int64_t pack_pass(Gen *G, Chunk *c, const int *ops, int nops, const int *recv, int nrecv, const int *sent, int nsent) {
  const OpGraph *g = G->g;
  Live *l = arena_alloc(G->a, sizeof(Live) * (size_t)(2 * nops + nrecv + 1));
  int n = 0;
  int *idx = arena_alloc(G->a, sizeof(int) * (size_t)g->nt + 1);
  for (int t = 0; t < g->nt; t++) idx[t] = -1;
  for (int k = 0; k < nrecv; k++)
    if (c->loc[recv[k]] == LOC_WS) idx[recv[k]] = n, l[n++] = (Live){recv[k], -1, -1, tbytes(G, recv[k]), 0};
  for (int q = 0; q < nops; q++) {
    int w[4], r[16];
    int nw = op_writes(g, ops[q], w), nr = op_reads(g, ops[q], r);
    for (int k = 0; k < nw; k++)
      if (c->loc[w[k]] == LOC_WS && idx[w[k]] < 0) idx[w[k]] = n, l[n++] = (Live){w[k], q, q, tbytes(G, w[k]), 0};
    for (int k = 0; k < nr; k++)
      if (idx[r[k]] >= 0 && l[idx[r[k]]].end < q) l[idx[r[k]]].end = q;
  }
  for (int k = 0; k < nsent; k++)
    if (idx[sent[k]] >= 0) l[idx[sent[k]]].end = nops;
  int64_t top = pack(l, n);
  for (int k = 0; k < n; k++) c->off[l[k].t] = l[k].off;
  return top;
}

/* ---- calls ---- */
static SCall *call(Gen *G, SFunc *f, const char *fn, const char *sig, const char *what) {
  if (f->ncall == f->cap) {
    int cap = f->cap ? 2 * f->cap : 64;
    SCall *nc = arena_alloc(G->a, sizeof(SCall) * (size_t)cap);
    if (f->ncall) memcpy(nc, f->call, sizeof(SCall) * (size_t)f->ncall);
    f->call = nc, f->cap = cap;
  }
  SCall *c = &f->call[f->ncall++];
  c->fn = fn, c->sig = sig, c->what = what;
  c->arg = arena_alloc(G->a, sizeof(SArg) * (strlen(sig) + 1));
  c->narg = 0;
  return c;
}
static void A(SCall *c, char kind, SBase base, int64_t v, double f) { c->arg[c->narg++] = (SArg){kind, base, v, f}; }
static void Actx(SCall *c) { A(c, 'c', SB_ARENA, 0, 0); }
static void Amb(SCall *c) { A(c, 'm', SB_ARENA, 0, 0); }
static void Ai(SCall *c, int64_t v) { A(c, 'i', SB_ARENA, v, 0); }
static void Al(SCall *c, int64_t v) { A(c, 'l', SB_ARENA, v, 0); }
static void Af(SCall *c, double v) { A(c, 'f', SB_ARENA, 0, v); }
static void Anull(SCall *c) { A(c, 'p', SB_ARENA, -1, 0); }
/* tensor t of chunk c (+ extra bytes) */
static void At(Gen *G, SCall *cl, const Chunk *c, int t, int64_t extra) {
  if (c->loc[t] == LOC_SLOT) A(cl, 'p', SB_SLOT, c->off[t] + extra, 0);
  else A(cl, 'p', SB_ARENA, G->sp->ws_off + c->off[t] + extra, 0);
}
static void Aaux(SCall *cl, const Chunk *c, int op, int64_t extra) { A(cl, 'p', SB_SLOT, c->aux[op] + extra, 0); }
/* parameter (grads = 1: its gradient), from weight row row0 */
static void Ap(Gen *G, SCall *cl, int param, int row0, int grads) {
  if (param < 0) {
    Anull(cl);
    return;
  }
  const OgParam *pp = &G->g->param[param];
  int64_t base = grads ? G->sp->grads_off : G->sp->params_off;
  if (grads && G->track && G->ntouched < 8) G->touched[G->ntouched++] = param;
  A(cl, 'p', SB_ARENA, base + (G->poff[param] + (int64_t)row0 * (pp->cols ? pp->cols : 1)) * 4, 0);
}
static int Kconst(Gen *G, const KAttn *k) {
  StageProgram *sp = G->sp;
  SConst *nc = arena_alloc(G->a, sizeof(SConst) * (size_t)(sp->nconst + 1));
  if (sp->nconst) memcpy(nc, sp->consts, sizeof(SConst) * (size_t)sp->nconst);
  SConst *x = &nc[sp->nconst];
  int32_t v[10] = {k->B, k->T, k->Tk, k->NH, k->NH_kv, k->HS, k->causal, k->q_stride, k->kv_stride, k->out_stride};
  memcpy(x->v, v, sizeof v), x->n = 10;
  sp->consts = nc;
  return sp->nconst++;
}

static const char *mod_path(const Gen *G, const OgOp *o) { return o->mod ? o->mod->path : G->p->mods[o->top]->path; }

/* one op as calls into the kernels (the same calls runtime/graph_exec.c makes) */
static void lower_op(Gen *G, SFunc *f, const Chunk *c, int i) {
  const OpGraph *g = G->g;
  const OgOp *o = &g->op[i];
  const char *what = mod_path(G, o);
  int N = (int)G->N, w = o->out >= 0 ? g->t[o->out].width : 0;
  int64_t n = G->N * w;
  const OgParam *wp = o->weight >= 0 ? &g->param[o->weight] : NULL;
  SCall *k;
#define T(x) At(G, k, c, (x), 0)
  switch (o->kind) {
  case OP_POSITIONS:
    if (G->gen) k = call(G, f, "k_positions_at", "pim", what), T(o->out), Ai(k, N), Amb(k); /* mb is the position */
    else k = call(G, f, "k_positions", "pii", what), T(o->out), Ai(k, N), Ai(k, G->T);
    break;
  case OP_EMBEDDING:
    if (o->tp > 1) {
      k = call(G, f, "prt_vp_embedding_forward", "cpppiil", what);
      Actx(k), T(o->out), T(o->in[0]), Ap(G, k, o->weight, 0, 0), Ai(k, N), Ai(k, w), Al(k, wp->rows);
    } else {
      k = call(G, f, "k_embedding_forward", "ppppiii", what);
      T(o->out), T(o->in[0]), Ap(G, k, o->weight, 0, 0), Anull(k), Ai(k, G->B), Ai(k, G->T), Ai(k, w);
    }
    break;
  case OP_VP_ROWMAX: k = call(G, f, "k_vp_rowmax", "ppii", what), T(o->out), T(o->in[0]), Ai(k, N), Ai(k, g->t[o->in[0]].width); break;
  case OP_VP_SUMEXP:
    k = call(G, f, "prt_vp_sumexp", "cppppii", what);
    Actx(k), T(o->out), T(o->in[0]), T(o->in[1]), T(o->in[2]), Ai(k, N), Ai(k, g->t[o->in[0]].width);
    break;
  case OP_MATMUL:
    k = call(G, f, "k_matmul_forward", "ppppiii", what);
    T(o->out), T(o->in[0]), Ap(G, k, o->weight, o->row0, 0), Ap(G, k, o->bias, o->row0, 0), Ai(k, N), Ai(k, wp->cols), Ai(k, o->rows);
    break;
  case OP_LAYERNORM:
    k = call(G, f, "k_layernorm_forward", "ppppppiif", what);
    T(o->out), Aaux(k, c, i, 0), Aaux(k, c, i, G->N * 4), T(o->in[0]), Ap(G, k, o->weight, 0, 0), Ap(G, k, o->bias, 0, 0);
    Ai(k, N), Ai(k, w), Af(k, o->scalar);
    break;
  case OP_RMSNORM:
    k = call(G, f, "k_rmsnorm_forward", "ppppiif", what);
    T(o->out), Aaux(k, c, i, G->N * 4), T(o->in[0]), Ap(G, k, o->weight, 0, 0), Ai(k, N), Ai(k, w), Af(k, o->scalar);
    break;
  case OP_ATTENTION: {
    KAttn ka;
    opgraph_attn(g, i, (int)G->B, (int)G->T, &ka);
    int kv = ka.HS * ka.NH_kv;
    k = call(G, f, G->gen ? "k_attention_decode" : "k_attention_forward", G->gen ? "ppppppmk" : "pppppk", what);
    T(o->out), Aaux(k, c, i, 0), T(o->in[0]);
    if (o->nin == 2) At(G, k, c, o->in[1], 0), At(G, k, c, o->in[1], (int64_t)kv * 4);
    else At(G, k, c, o->in[0], (int64_t)w * 4), At(G, k, c, o->in[0], (int64_t)(w + kv) * 4);
    if (G->gen) { /* the cache holds maxT positions: Tk */
      A(k, 'p', SB_SLOT, G->kv_off[i], 0), Amb(k);
      ka.Tk = (int)G->maxT, ka.T = 1, ka.causal = 0;
    }
    A(k, 'k', SB_ARENA, Kconst(G, &ka), 0);
    break;
  }
  case OP_ACT: k = call(G, f, "k_act_forward", "ppli", what), T(o->out), T(o->in[0]), Al(k, n), Ai(k, o->act); break;
  case OP_ADD: k = call(G, f, "k_add", "pppl", what), T(o->out), T(o->in[0]), T(o->in[1]), Al(k, n); break;
  case OP_SUB: k = call(G, f, "k_sub", "pppl", what), T(o->out), T(o->in[0]), T(o->in[1]), Al(k, n); break;
  case OP_MUL: k = call(G, f, "k_mul", "pppl", what), T(o->out), T(o->in[0]), T(o->in[1]), Al(k, n); break;
  case OP_SCALE: k = call(G, f, "k_scale_copy", "pplf", what), T(o->out), T(o->in[0]), Al(k, n), Af(k, o->scalar); break;
  case OP_DROPOUT:
    if (G->gen) { /* off when generating */
      k = call(G, f, "k_copy", "ppl", what), T(o->out), T(o->in[0]), Al(k, n);
      break;
    }
    k = call(G, f, "prt_dropout_forward", "cpplfim", what);
    Actx(k), T(o->out), T(o->in[0]), Al(k, n), Af(k, o->scalar), Ai(k, i), Amb(k);
    break;
  case OP_SOFTMAX: k = call(G, f, "k_softmax_forward", "ppii", what), T(o->out), T(o->in[0]), Ai(k, N), Ai(k, w); break;
  case OP_XENT:
    if (o->tp > 1) {
      k = call(G, f, "k_vp_xent_forward", "ppppi", what);
      T(o->out), T(o->in[1]), T(o->in[2]), T(o->in[3]), Ai(k, N);
    } else {
      k = call(G, f, "k_crossentropy_forward_backward", "ppppiif", what);
      T(o->out), Anull(k), T(o->in[0]), T(o->in[1]), Ai(k, N), Ai(k, g->t[o->in[0]].width), Af(k, 0);
    }
    break;
  case OP_XENT_BWD:
    if (o->tp > 1) {
      k = call(G, f, "prt_vp_xent_backward", "cpppppii", what);
      Actx(k), T(o->out), T(o->in[0]), T(o->in[1]), T(o->in[2]), T(o->in[3]), Ai(k, N), Ai(k, w);
    } else {
      k = call(G, f, "prt_xent_backward", "cppppii", what);
      Actx(k), T(g->op[o->fwd].out), T(o->out), T(o->in[0]), T(o->in[1]), Ai(k, N), Ai(k, w);
    }
    break;
  case OP_MATMUL_BWD_X:
    k = call(G, f, "k_matmul_backward_input", "pppiii", what);
    T(o->out), T(o->in[0]), Ap(G, k, o->weight, o->row0, 0), Ai(k, N), Ai(k, wp->cols), Ai(k, o->rows);
    break;
  case OP_MATMUL_BWD_W:
    k = call(G, f, "k_matmul_backward_weight", "ppppiii", what);
    Ap(G, k, o->weight, o->row0, 1), Ap(G, k, o->bias, o->row0, 1), T(o->in[0]), T(o->in[1]), Ai(k, N), Ai(k, wp->cols), Ai(k, o->rows);
    break;
  case OP_EMBEDDING_BWD:
    if (o->tp > 1) {
      k = call(G, f, "prt_vp_embedding_backward", "cpppiil", what);
      Actx(k), Ap(G, k, o->weight, 0, 1), T(o->in[0]), T(o->in[1]), Ai(k, N), Ai(k, wp->cols), Al(k, wp->rows);
    } else {
      k = call(G, f, "k_embedding_backward", "ppppiii", what);
      Ap(G, k, o->weight, 0, 1), Anull(k), T(o->in[0]), T(o->in[1]), Ai(k, G->B), Ai(k, G->T), Ai(k, wp->cols);
    }
    break;
  case OP_NORM_BWD_X: {
    const OgOp *fo = &g->op[o->fwd];
    if (fo->kind == OP_LAYERNORM) {
      k = call(G, f, "k_layernorm_backward", "ppppppppii", what);
      T(o->out), Ap(G, k, fo->weight, 0, 1), Ap(G, k, fo->bias, 0, 1), T(o->in[0]), T(o->in[1]), Ap(G, k, fo->weight, 0, 0);
      Aaux(k, c, o->fwd, 0), Aaux(k, c, o->fwd, G->N * 4), Ai(k, N), Ai(k, w);
    } else {
      k = call(G, f, "k_rmsnorm_backward", "ppppppii", what);
      T(o->out), Ap(G, k, fo->weight, 0, 1), T(o->in[0]), T(o->in[1]), Ap(G, k, fo->weight, 0, 0), Aaux(k, c, o->fwd, G->N * 4);
      Ai(k, N), Ai(k, w);
    }
    break;
  }
  case OP_NORM_BWD_W: break;
  case OP_ATTENTION_BWD: {
    const OgOp *fo = &g->op[o->fwd];
    KAttn ka;
    opgraph_attn(g, i, (int)G->B, (int)G->T, &ka);
    int d = g->t[fo->out].width, kv = ka.HS * ka.NH_kv;
    k = call(G, f, "k_attention_backward", "pppppppppk", what);
    T(o->out);
    if (fo->nin == 2) At(G, k, c, o->out2, 0), At(G, k, c, o->out2, (int64_t)kv * 4);
    else At(G, k, c, o->out, (int64_t)d * 4), At(G, k, c, o->out, (int64_t)(d + kv) * 4);
    T(o->in[0]), T(fo->out), Aaux(k, c, o->fwd, 0), T(fo->in[0]);
    if (fo->nin == 2) At(G, k, c, fo->in[1], 0), At(G, k, c, fo->in[1], (int64_t)kv * 4);
    else At(G, k, c, fo->in[0], (int64_t)d * 4), At(G, k, c, fo->in[0], (int64_t)(d + kv) * 4);
    A(k, 'k', SB_ARENA, Kconst(G, &ka), 0);
    break;
  }
  case OP_ACT_BWD: k = call(G, f, "k_act_backward", "pppli", what), T(o->out), T(o->in[0]), T(o->in[1]), Al(k, n), Ai(k, o->act); break;
  case OP_DROPOUT_BWD:
    k = call(G, f, "prt_dropout_backward", "cpplfim", what);
    Actx(k), T(o->out), T(o->in[0]), Al(k, n), Af(k, o->scalar), Ai(k, o->fwd), Amb(k);
    break;
  case OP_SOFTMAX_BWD: k = call(G, f, "k_softmax_backward", "pppii", what), T(o->out), T(o->in[0]), T(o->in[1]), Ai(k, N), Ai(k, w); break;
  case OP_TP_ENTER: k = call(G, f, "k_copy", "ppl", what), T(o->out), T(o->in[0]), Al(k, n); break;
  case OP_ALLREDUCE:
    k = call(G, f, "k_copy", "ppl", what), T(o->out), T(o->in[0]), Al(k, n);
    k = call(G, f, "prt_tp_allreduce", "cpli", what), Actx(k), T(o->out), Al(k, n), Ai(k, o->scalar == 1 ? 1 : 0);
    break;
  case OP_BIAS: k = call(G, f, "k_bias_add", "pppii", what), T(o->out), T(o->in[0]), Ap(G, k, o->bias, 0, 0), Ai(k, N), Ai(k, w); break;
  case OP_BIAS_BWD:
    k = call(G, f, "k_bias_backward", "ppii", what), Ap(G, k, o->bias, 0, 1), T(o->in[0]), Ai(k, N), Ai(k, g->t[o->in[0]].width);
    break;
  case OP_KIND_COUNT: break;
  }
#undef T
}

/* a backward op, then prt_grad_ready for each gradient bucket it wrote */
static void lower_bwd_op(Gen *G, SFunc *f, const Chunk *c, int i) {
  G->track = G->bucket_of != NULL, G->ntouched = 0;
  lower_op(G, f, c, i);
  G->track = 0;
  for (int k = 0; k < G->ntouched; k++) {
    int b = G->bucket_of[G->touched[k]], seen = 0;
    for (int e = 0; e < k; e++) seen |= G->bucket_of[G->touched[e]] == b;
    if (b < 0 || seen) continue;
    SCall *cl = call(G, f, "prt_grad_ready", "ci", "gradients");
    Actx(cl), Ai(cl, b);
    G->bucket_calls[b]++;
  }
}

static SFunc *new_func(Gen *G, const char *fmt, int c) {
  StageProgram *sp = G->sp;
  SFunc *f = &sp->func[sp->nfunc++];
  memset(f, 0, sizeof *f);
  char b[64];
  snprintf(b, sizeof b, fmt, c);
  f->name = arena_strdup(G->a, b);
  return f;
}

/* ---- the manifest: what the runtime reads at start ---- */
typedef struct Buf {
  char *s;
  size_t n, cap;
} Buf;
static void bprintf(Buf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k >= 0 && b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return;
    }
    b->cap = b->cap ? 2 * b->cap + (size_t)k : 4096;
    char *ns = realloc(b->s, b->cap);
    if (!ns) exit(3);
    b->s = ns;
  }
}

/* Templates: the (pipeline/pp rank) pairs, over every pipeline, holding
 * parameter q (an op of its stage reads it: the tied lm_head holds wte),
 * as text ("0/0 1/0 1/1"); the same text on every rank that holds q. */
static char *reduce_group(Gen *G, int q) {
  const Program *p = G->p;
  const OpGraph *g = G->g;
  Buf b = {0};
  bprintf(&b, "%s", "");
  for (int j = 0; j < p->npipes; j++)
    for (int st = 0; st < p->pipes[j].nstages; st++) {
      int held = 0;
      for (int i = 0; i < g->nop && !held; i++)
        held = (g->op[i].weight == q || g->op[i].bias == q) && stage_of(&p->pipes[j], g->op[i].top) == st;
      if (held) bprintf(&b, "%s%d/%d", b.n ? " " : "", j, st);
    }
  char *r = arena_strdup(G->a, b.s);
  free(b.s);
  return r;
}

/* tag of a point-to-point message: direction, receiving stage, microbatch, tensor */
static int64_t msg_tag(int backward, int stage, int mb, int k) {
  return ((int64_t)k << 28) | ((int64_t)backward << 27) | ((int64_t)(stage & 1023) << 17) | (mb & 0x1FFFF);
}

/* ---- generation: pipec_c<stage>_g(ctx, arena, gen, pos) runs the forward
   of a chunk for one new token of each beam (rows = beams), reading and
   extending a KV cache per attention in the generation region `gen` (a
   separate allocation: caches, then one workspace the chunks share), and
   pipec_gen(ctx, arena, gen, pos) runs this rank's chunks in stage order
   with their receives and sends. Only the ops the logits need are lowered
   (no loss). The manifest's `gen` lines give the runtime the region's size,
   the caches (to reorder beams) and where the logits are. ---- */
static int gen_sort_int(const void *x, const void *y) { return *(const int *)x - *(const int *)y; }

static int lower_gen(Gen *G0, const Chunk *ch, int nc, const int *mine, Buf *m) {
  const OpGraph *g = G0->g;
  Arena *a = G0->a;
  int ns = G0->s->nstages, logits = -1, why = 0;
  for (int i = 0; i < g->nfwd; i++)
    if (g->op[i].kind == OP_XENT) logits = g->op[i].in[0];
  if (g->loss < 0) logits = g->output;
  if (logits < 0 || g->tokens < 0) why = 1;
  for (int i = 0; i < g->nfwd && !why; i++)
    if (g->op[i].kind == OP_ATTENTION && (g->op[i].nin == 2 || !g->op[i].causal)) why = 2;
  if (why) {
    bprintf(m, "gen none %s\n", why == 1 ? "the model has no token input and logits" : "only causal self-attention can be decoded token by token");
    return 0;
  }
  Gen G1 = *G0, *G = &G1;
  G->gen = 1;
  G->B = G->N = !strcmp(G0->p->sampling, "beam") ? G0->p->beams : 1, G->T = 1;
  G->maxT = G0->T;
  for (int i = 0; i < g->nfwd; i++) /* the position embedding's rows, when there is one */
    if (g->op[i].kind == OP_EMBEDDING && g->op[i].weight >= 0 && G0->prod[g->op[i].in[0]] >= 0 &&
        g->op[G0->prod[g->op[i].in[0]]].kind == OP_POSITIONS)
      G->maxT = g->param[g->op[i].weight].full_rows;
  char *need = arena_alloc(a, (size_t)g->nt + 1), *op_need = arena_alloc(a, (size_t)g->nfwd + 1);
  need[logits] = 1;
  for (int i = g->nfwd - 1; i >= 0; i--) {
    if (g->op[i].out < 0 || !need[g->op[i].out]) continue;
    op_need[i] = 1;
    int r[16], nr = op_reads(g, i, r);
    for (int k = 0; k < nr; k++) need[r[k]] = 1;
  }
  G->kv_off = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nop + 1));
  int64_t kv_top = 0, ws_top = 0;
  Chunk *gc = arena_alloc(a, sizeof(Chunk) * (size_t)(nc + 1));
  int **ops = arena_alloc(a, sizeof(int *) * (size_t)(nc + 1)), *nops = arena_alloc(a, sizeof(int) * (size_t)(nc + 1));
  for (int ci = 0; ci < nc; ci++) {
    const Chunk *c = &ch[ci];
    Chunk *x = &gc[ci];
    x->stage = c->stage;
    x->loc = arena_alloc(a, (size_t)g->nt + 1);
    x->off = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nt + 1));
    x->aux = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nop + 1));
    ops[ci] = arena_alloc(a, sizeof(int) * (size_t)(c->nf + 1));
    for (int q = 0; q < c->nf; q++)
      if (op_need[c->fops[q]]) ops[ci][nops[ci]++] = c->fops[q];
    for (int q = 0; q < nops[ci]; q++) {
      int i = ops[ci][q], r[16], nr = op_reads(g, i, r);
      x->loc[g->op[i].out] = LOC_WS;
      for (int k = 0; k < nr; k++) {
        int pr = G->prod[r[k]];
        if (pr >= 0 && G->chunk_of_op[pr] == c->stage) continue;
        if (pr >= 0 && G->chunk_of_op[pr] != c->stage - 1)
          return fail(G, "tensor '%s' goes from stage %d to stage %d; pipec passes tensors only between neighbouring stages",
                      g->t[r[k]].what ? g->t[r[k]].what : "?", G->chunk_of_op[pr], c->stage);
        x->loc[r[k]] = LOC_WS;
        push_int(a, &x->recv_f, &x->nrf, r[k]); /* received, or (pr < 0) the token ids */
      }
    }
    for (int i = 0; i < g->nfwd; i++) { /* what the next chunk reads */
      int st = G->chunk_of_op[i];
      if (!op_need[i] || st == c->stage) continue;
      int r[16], nr = op_reads(g, i, r);
      for (int k = 0; k < nr; k++)
        if (G->prod[r[k]] >= 0 && G->chunk_of_op[G->prod[r[k]]] == c->stage) push_int(a, &x->send_f, &x->nsf, r[k]);
    }
    if (x->loc[logits]) push_int(a, &x->send_f, &x->nsf, logits); /* alive to the end: the runtime reads it */
    qsort(x->recv_f, (size_t)x->nrf, sizeof(int), gen_sort_int);
    qsort(x->send_f, (size_t)x->nsf, sizeof(int), gen_sort_int);
    int64_t top = pack_pass(G, x, ops[ci], nops[ci], x->recv_f, x->nrf, x->send_f, x->nsf);
    for (int q = 0; q < nops[ci]; q++) {
      const OgOp *o = &g->op[ops[ci][q]];
      x->aux[ops[ci][q]] = -1;
      if (has_aux(o)) x->aux[ops[ci][q]] = top, top += align64(aux_bytes(G, o));
      if (o->kind == OP_ATTENTION) {
        KAttn ka;
        opgraph_attn(g, ops[ci][q], 1, 1, &ka);
        G->kv_off[ops[ci][q]] = kv_top;
        int64_t beam_bytes = 2 * G->maxT * ka.NH_kv * ka.HS * 4;
        bprintf(m, "genkv %lld %lld\n", (long long)kv_top, (long long)beam_bytes);
        kv_top += align64(beam_bytes * G->B);
      }
    }
    if (top > ws_top) ws_top = top;
  }
  /* the workspace after the caches: offsets become relative to the region */
  for (int ci = 0; ci < nc; ci++) {
    for (int t = 0; t < g->nt; t++)
      if (gc[ci].loc[t]) gc[ci].loc[t] = LOC_SLOT, gc[ci].off[t] += kv_top;
    for (int q = 0; q < nops[ci]; q++)
      if (gc[ci].aux[ops[ci][q]] >= 0) gc[ci].aux[ops[ci][q]] += kv_top;
  }
  StageProgram *sp = G->sp;
  for (int ci = 0; ci < nc; ci++) {
    Chunk *x = &gc[ci];
    SFunc *f = new_func(G, "pipec_c%d_g", x->stage);
    if (x->loc[g->tokens]) {
      SCall *k = call(G, f, "prt_gen_tokens", "cp", "data");
      Actx(k), At(G, k, x, g->tokens, 0);
    }
    for (int q = 0; q < nops[ci]; q++) lower_op(G, f, x, ops[ci][q]);
  }
  SFunc *f = new_func(G, "pipec_gen", 0);
  for (int st = 0; st < ns; st++) {
    if (mine[st] < 0) continue;
    Chunk *x = &gc[mine[st]];
    for (int q = 0; q < x->nrf; q++) {
      int t = x->recv_f[q];
      if (G->prod[t] < 0) continue;
      SCall *k = call(G, f, "prt_pp_recv", "ciipl", "receive");
      Actx(k), Ai(k, G->s->stage_rank[st - 1]), Ai(k, 0x40000000 | (st & 1023) << 16 | (t & 0xFFFF));
      At(G, k, x, t, 0), Al(k, tbytes(G, t));
    }
    char fn[64];
    snprintf(fn, sizeof fn, "pipec_c%d_g", st);
    SCall *k = call(G, f, arena_strdup(a, fn), "cppi", "compute");
    Actx(k), A(k, 'p', SB_ARENA, 0, 0), A(k, 'p', SB_SLOT, 0, 0), Amb(k);
    for (int q = 0; q < x->nsf; q++) {
      int t = x->send_f[q];
      if (t == logits && st == ns - 1) continue;
      k = call(G, f, "prt_pp_send", "ciipl", "send");
      Actx(k), Ai(k, G->s->stage_rank[st + 1]), Ai(k, 0x40000000 | ((st + 1) & 1023) << 16 | (t & 0xFFFF));
      At(G, k, x, t, 0), Al(k, tbytes(G, t));
    }
  }
  int last = mine[ns - 1] >= 0;
  bprintf(m, "gen beams %lld maxt %lld bytes %lld logits %lld width %d\n", (long long)G->B, (long long)G->maxT,
          (long long)(kv_top + align64(ws_top)), last ? (long long)gc[mine[ns - 1]].off[logits] : -1LL, g->t[logits].width);
  (void)sp;
  return 0;
}

/* a path in the manifest: "-" for none, bytes <= ' ' and '%' as %XX */
static void manifest_path(Buf *m, const char *s) {
  if (!s || !strcmp(s, "-")) {
    bprintf(m, s ? "%%2D" : "-");
    return;
  }
  for (; *s; s++)
    if ((unsigned char)*s <= ' ' || *s == '%') bprintf(m, "%%%02X", (unsigned char)*s);
    else bprintf(m, "%c", *s);
}

/* training FLOPs per token of the whole model, as llm.c and nanoGPT estimate
   them: 6N (forward and backward of every matmul: N parameters, each counted
   once) + 6 L C T (attention scores and values: L attention layers of width
   C over T positions, forward and backward, halved for the causal mask) */
static double flops_per_token(const Gen *G) {
  double lct = 0;
  for (int i = 0; i < G->g->nfwd; i++) {
    const OgOp *o = &G->g->op[i];
    if (o->kind == OP_ATTENTION) lct += (double)(o->mod ? o->mod->dim : G->g->t[o->out].width) * (double)G->T;
  }
  return 6.0 * (double)G->p->nparams + 6.0 * lct;
}

/* pipec_eval: the rank's forward actions only, microbatch by microbatch and
   chunk by chunk (receive the input, F, send the output), every microbatch
   in slot 0; the last stage's loss is summed by prt_loss_add as in training */
static void lower_eval(Gen *G, Chunk *ch, int nc, int nmb) {
  StageProgram *sp = G->sp;
  const Schedule *s = G->s;
  SFunc *f = new_func(G, "pipec_eval", 0);
  f->is_step = 1;
  for (int mb = 0; mb < nmb; mb++)
    for (int ci = 0; ci < nc; ci++) {
      const Chunk *c = &ch[ci];
      for (int q = 0; q < c->nrf; q++) {
        SCall *cl = call(G, f, "prt_pp_recv", "ciipl", "receive");
        Actx(cl), Ai(cl, s->stage_rank[c->stage - 1]), Ai(cl, msg_tag(0, c->stage, mb, q));
        A(cl, 'p', SB_ARENA, sp->slots_off + c->off[c->recv_f[q]], 0), Al(cl, tbytes(G, c->recv_f[q]));
      }
      char fn[64];
      snprintf(fn, sizeof fn, "pipec_c%d_f", c->stage);
      SCall *cl = call(G, f, arena_strdup(G->a, fn), "cppi", "compute");
      Actx(cl), A(cl, 'p', SB_ARENA, 0, 0), A(cl, 'p', SB_ARENA, sp->slots_off, 0), Ai(cl, mb);
      for (int q = 0; q < c->nsf; q++) {
        int t = c->send_f[q];
        cl = call(G, f, "prt_pp_send", "ciipl", "send");
        Actx(cl), Ai(cl, s->stage_rank[c->stage + 1]), Ai(cl, msg_tag(0, c->stage + 1, mb, q));
        A(cl, 'p', SB_ARENA, c->loc[t] == LOC_SLOT ? sp->slots_off + c->off[t] : sp->ws_off + c->off[t], 0), Al(cl, tbytes(G, t));
      }
    }
}

StageProgram *stage_lower(Arena *a, const Program *p, const OpGraph *g, int pipeline, const Schedule *s, int pp_rank, char *err,
                          size_t errlen) {
  Gen G0 = {.a = a, .p = p, .g = g, .pl = &p->pipes[pipeline], .s = s, .err = err, .errlen = errlen}, *G = &G0;
  StageProgram *sp = arena_alloc(a, sizeof *sp);
  G->sp = sp;
  sp->pp_rank = pp_rank;
  int64_t mbs = 0;
  for (int i = 0; i < p->npipes; i++) mbs += p->pipes[i].microbatches;
  if (mbs < 1) mbs = 1;
  G->T = p->seq, G->B = p->batch / mbs, G->N = G->B * G->T;
  if (G->B < 1 || G->B * mbs != p->batch) {
    fail(G, "batch %lld does not divide into %lld microbatches", (long long)p->batch, (long long)mbs);
    return NULL;
  }
  int ns = s->nstages;
  /* pipelines of different shapes: each parameter's gradient is summed over
     every rank (any pipeline, same tp rank) holding it, in parameter order */
  int templates = !plan_is_grid(p);
  G->chunk_of_op = arena_alloc(a, sizeof(int) * (size_t)(g->nop + 1));
  for (int i = 0; i < g->nop; i++) G->chunk_of_op[i] = stage_of(G->pl, g->op[i].top);
  G->prod = arena_alloc(a, sizeof(int) * (size_t)(g->nt + 1));
  for (int t = 0; t < g->nt; t++) G->prod[t] = -1;
  for (int i = 0; i < g->nop; i++) {
    int w[4], nw = op_writes(g, i, w);
    for (int k = 0; k < nw; k++)
      if (G->prod[w[k]] < 0) G->prod[w[k]] = i;
  }

  /* the chunks this rank runs, their ops */
  Chunk *ch = arena_alloc(a, sizeof(Chunk) * (size_t)ns);
  int *mine = arena_alloc(a, sizeof(int) * (size_t)ns); /* stage -> index in ch, or -1 */
  int nc = 0;
  for (int st = 0; st < ns; st++) {
    mine[st] = -1;
    if (s->stage_rank[st] != pp_rank) continue;
    Chunk *c = &ch[nc];
    mine[st] = nc++;
    c->stage = st;
    c->fops = arena_alloc(a, sizeof(int) * (size_t)(g->nop + 1));
    c->iops = arena_alloc(a, sizeof(int) * (size_t)(g->nop + 1));
    c->wops = arena_alloc(a, sizeof(int) * (size_t)(g->nop + 1));
    c->loc = arena_alloc(a, (size_t)g->nt + 1);
    c->off = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nt + 1));
    c->aux = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nop + 1));
    for (int i = 0; i < g->nop; i++) {
      c->aux[i] = -1;
      if (G->chunk_of_op[i] != st) continue;
      const OgOp *o = &g->op[i];
      if (i < g->nfwd) c->fops[c->nf++] = i;
      else if (o->kind == OP_NORM_BWD_W) continue;
      else if (o->phase == PHASE_I) c->iops[c->ni++] = i;
      else c->wops[c->nw++] = i;
      if (o->out == g->loss && g->loss >= 0) c->has_loss = 1;
    }
  }
  sp->nchunks = nc;
  int split_iw = 0;
  const RankActions *ra = &s->rank[pp_rank];
  for (int k = 0; k < ra->n; k++)
    if (ra->a[k].kind == ACT_I || ra->a[k].kind == ACT_W) split_iw = 1;

  /* parameters on this rank, ordered by the REDUCE_GRAD that finishes them */
  G->poff = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nparam + 1));
  int64_t *key = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nparam + 1));
  for (int q = 0; q < g->nparam; q++) G->poff[q] = -1, key[q] = -1;
  int64_t *redpos = arena_alloc(a, sizeof(int64_t) * (size_t)ns);
  for (int st = 0; st < ns; st++) redpos[st] = st;
  for (int k = 0; k < ra->n; k++)
    if (ra->a[k].kind == ACT_REDUCE_GRAD) redpos[ra->a[k].stage] = ns + k;
  for (int i = 0; i < g->nop; i++) {
    int st = G->chunk_of_op[i];
    if (st < 0 || mine[st] < 0) continue;
    const OgOp *o = &g->op[i];
    int ps[2] = {o->weight, o->bias};
    for (int k = 0; k < 2; k++)
      if (ps[k] >= 0 && redpos[st] > key[ps[k]]) key[ps[k]] = redpos[st];
  }
  /* Gradient buckets, for the dp all-reduce to start inside the backward:
     the runs of parameters in arena order with the same REDUCE_GRAD and the
     same top-level module (a layer). Each backward op that writes a
     bucket's gradients is followed by prt_grad_ready(bucket); the bucket is
     final at the last of its calls of the step (calls per microbatch x
     microbatches: the manifest's count), where the runtime starts its
     all-reduce on NCCL. */
  int *top = NULL;
  if (p->dp > 1 && !templates && p->has_train) {
    G->bucket_of = arena_alloc(a, sizeof(int) * (size_t)(g->nparam + 1));
    G->bucket_calls = arena_alloc(a, sizeof(int) * (size_t)(g->nparam + 1));
    G->bucket_lo = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nparam + 1));
    G->bucket_hi = arena_alloc(a, sizeof(int64_t) * (size_t)(g->nparam + 1));
    top = arena_alloc(a, sizeof(int) * (size_t)(g->nparam + 1));
    for (int q = 0; q < g->nparam; q++) G->bucket_of[q] = -1, top[q] = -1;
    for (int i = 0; i < g->nop; i++) /* a parameter's module: its first op's, in graph order */
      for (int k = 0; k < 2; k++) {
        int q = k ? g->op[i].bias : g->op[i].weight;
        if (q >= 0 && top[q] < 0) top[q] = g->op[i].top;
      }
  }
  int64_t pf = 0;
  for (int64_t want = 0, more = 1, prev = -1; more; want++) { /* in key order, then graph order: the arena's */
    more = 0;
    int64_t next = -1;
    for (int q = 0; q < g->nparam; q++)
      if (key[q] >= want && (next < 0 || key[q] < next)) next = key[q];
    if (next < 0) break;
    for (int q = 0; q < g->nparam; q++) {
      if (key[q] != next) continue;
      if (top && (prev < 0 || key[q] != key[prev] || top[q] != top[prev])) G->bucket_lo[G->nbuckets] = pf, G->bucket_calls[G->nbuckets++] = 0;
      G->poff[q] = pf, pf += psize(&g->param[q]);
      if (top) G->bucket_of[q] = G->nbuckets - 1, G->bucket_hi[G->nbuckets - 1] = pf, prev = q;
    }
    want = next, more = 1;
  }
  sp->param_floats = pf;
  char **grp = arena_alloc(a, sizeof(char *) * (size_t)(g->nparam + 1));
  for (int q = 0; templates && q < g->nparam; q++)
    if (G->poff[q] >= 0) grp[q] = reduce_group(G, q);

  /* tensors: who reads what, where they live */
  for (int ci = 0; ci < nc; ci++) {
    Chunk *c = &ch[ci];
    int st = c->stage;
    unsigned char *bwd_reads = arena_alloc(a, (size_t)g->nt + 1), *w_reads = arena_alloc(a, (size_t)g->nt + 1);
    unsigned char *touched = arena_alloc(a, (size_t)g->nt + 1);
    for (int pass = 0; pass < 3; pass++) {
      const int *ops = pass == 0 ? c->fops : pass == 1 ? c->iops : c->wops;
      int nops = pass == 0 ? c->nf : pass == 1 ? c->ni : c->nw;
      for (int q = 0; q < nops; q++) {
        int r[16], nr = op_reads(g, ops[q], r);
        for (int k = 0; k < nr; k++) {
          touched[r[k]] = 1;
          if (pass) bwd_reads[r[k]] = 1;
          if (pass == 2) w_reads[r[k]] = 1;
        }
        int w[4], nw = op_writes(g, ops[q], w);
        for (int k = 0; k < nw; k++) touched[w[k]] = 1;
      }
    }
    for (int t = 0; t < g->nt; t++) {
      if (!touched[t]) continue;
      int pr = G->prod[t], pst = pr >= 0 ? G->chunk_of_op[pr] : -1;
      if (pr < 0) { /* token ids / targets: loaded into the slot */
        c->loc[t] = LOC_SLOT;
        continue;
      }
      if (pst != st) {
        int fwd = pr < g->nfwd;
        if (pst != (fwd ? st - 1 : st + 1))
          return fail(G, "tensor '%s' goes from stage %d to stage %d; pipec passes tensors only between neighbouring stages",
                      g->t[t].what ? g->t[t].what : "?", pst, st), NULL;
        if (fwd) push_int(a, &c->recv_f, &c->nrf, t), c->loc[t] = LOC_SLOT;
        else push_int(a, &c->recv_b, &c->nrb, t), c->loc[t] = split_iw && w_reads[t] ? LOC_SLOT : LOC_WS;
        continue;
      }
      if (pr < g->nfwd) c->loc[t] = bwd_reads[t] || t == g->loss ? LOC_SLOT : LOC_WS;
      else c->loc[t] = split_iw && w_reads[t] ? LOC_SLOT : LOC_WS;
    }
    /* what leaves this chunk */
    for (int i = 0; i < g->nop; i++) {
      int rst = G->chunk_of_op[i];
      if (rst == st || rst < 0) continue;
      int r[16], nr = op_reads(g, i, r);
      for (int k = 0; k < nr; k++) {
        int pr = G->prod[r[k]];
        if (pr < 0 || G->chunk_of_op[pr] != st) continue;
        if (pr < g->nfwd) push_int(a, &c->send_f, &c->nsf, r[k]);
        else push_int(a, &c->send_b, &c->nsb, r[k]);
      }
    }
    /* the slot: saved tensors, then statistics */
    int64_t so = 0;
    for (int t = 0; t < g->nt; t++)
      if (c->loc[t] == LOC_SLOT) c->off[t] = so, so += align64(tbytes(G, t));
    for (int q = 0; q < c->nf; q++)
      if (has_aux(&g->op[c->fops[q]])) c->aux[c->fops[q]] = so, so += align64(aux_bytes(G, &g->op[c->fops[q]]));
    c->slot_bytes = so;
    /* the workspace, pass by pass */
    int64_t ws = pack_pass(G, c, c->fops, c->nf, NULL, 0, c->send_f, c->nsf);
    int64_t wb;
    if (split_iw) {
      wb = pack_pass(G, c, c->iops, c->ni, c->recv_b, c->nrb, c->send_b, c->nsb);
      int64_t ww = pack_pass(G, c, c->wops, c->nw, NULL, 0, NULL, 0);
      if (ww > wb) wb = ww;
    } else {
      int *bops = arena_alloc(a, sizeof(int) * (size_t)(c->ni + c->nw + 1));
      memcpy(bops, c->iops, sizeof(int) * (size_t)c->ni);
      memcpy(bops + c->ni, c->wops, sizeof(int) * (size_t)c->nw);
      wb = pack_pass(G, c, bops, c->ni + c->nw, c->recv_b, c->nrb, c->send_b, c->nsb);
    }
    c->ws_bytes = ws > wb ? ws : wb;
  }

  /* slots: walk the actions */
  int nmb = s->nmb;
  int *slot_of = arena_alloc(a, sizeof(int) * (size_t)(ns * nmb + 1));
  for (int k = 0; k < ns * nmb; k++) slot_of[k] = -1;
  int *busy = arena_alloc(a, sizeof(int) * (size_t)(ns * nmb + 2));
  int nslots = 0;
  int64_t slot_bytes = 0, ws_bytes = 0;
  for (int ci = 0; ci < nc; ci++) {
    if (ch[ci].slot_bytes > slot_bytes) slot_bytes = ch[ci].slot_bytes;
    if (ch[ci].ws_bytes > ws_bytes) ws_bytes = ch[ci].ws_bytes;
  }
  int *act_slot = arena_alloc(a, sizeof(int) * (size_t)(ra->n + 1));
  for (int k = 0; k < ra->n; k++) {
    Action x = ra->a[k];
    act_slot[k] = -1;
    if (x.mb < 0 || x.stage < 0) continue;
    int id = x.stage * nmb + x.mb;
    if (slot_of[id] < 0 && (x.kind == ACT_F || x.kind == ACT_RECV_F)) {
      int sl = 0;
      while (busy[sl]) sl++;
      busy[sl] = 1, slot_of[id] = sl;
      if (sl + 1 > nslots) nslots = sl + 1;
    }
    act_slot[k] = slot_of[id];
    if ((x.kind == ACT_B || x.kind == ACT_W) && slot_of[id] >= 0) busy[slot_of[id]] = 0, slot_of[id] = -1;
  }
  /* the arena (a model without a train section only generates: parameters alone) */
  int train = p->has_train;
  if (!train) nslots = 0, slot_bytes = 0, ws_bytes = 0;
  sp->nslots = nslots;
  sp->slot_bytes = align64(slot_bytes);
  int optim_per = !train ? 0 : !strcmp(p->optimizer, "adamw") ? 2 : p->momentum > 0 ? 1 : 0;
  sp->optim_floats = pf * optim_per;
  int64_t off = 0; /* regions 256-byte aligned */
#define REGION(x) (((x) + 255) / 256 * 256)
  sp->params_off = off, off += REGION(pf * 4);
  sp->grads_off = off, off += REGION(train ? pf * 4 : 0);
  sp->optim_off = off, off += REGION(sp->optim_floats * 4);
  sp->slots_off = off, off += REGION(sp->slot_bytes * nslots);
  sp->ws_off = off, sp->ws_bytes = align64(ws_bytes), off += REGION(sp->ws_bytes);
#undef REGION
  sp->total = off;

  /* functions */
  sp->func = arena_alloc(a, sizeof(SFunc) * (size_t)(4 * nc + 3)); /* f, i, w, g per chunk; step, eval, gen */
  for (int ci = 0; ci < nc && train; ci++) {
    Chunk *c = &ch[ci];
    SFunc *f = new_func(G, "pipec_c%d_f", c->stage);
    for (int t = 0; t < g->nt; t++) /* token ids and targets come from the data */
      if (c->loc[t] == LOC_SLOT && G->prod[t] < 0) {
        SCall *k = call(G, f, t == g->targets ? "prt_load_targets" : "prt_load_tokens", "cmp", "data");
        Actx(k), Amb(k), At(G, k, c, t, 0);
      }
    for (int q = 0; q < c->nf; q++) lower_op(G, f, c, c->fops[q]);
    if (c->has_loss && g->targets >= 0) {
      SCall *k = call(G, f, "prt_loss_add", "cppi", "loss");
      Actx(k), At(G, k, c, g->loss, 0), At(G, k, c, g->targets, 0), Ai(k, G->N);
    }
    f = new_func(G, "pipec_c%d_i", c->stage);
    for (int q = 0; q < c->ni; q++) lower_bwd_op(G, f, c, c->iops[q]);
    f = new_func(G, "pipec_c%d_w", c->stage);
    for (int q = 0; q < c->nw; q++) lower_bwd_op(G, f, c, c->wops[q]);
  }
  SFunc *step = new_func(G, "pipec_step", 0); /* empty without a train section */
  step->is_step = 1;
  /* On GPUs the pipeline's sends and receives go through NCCL, whose sends
     complete only once the receive is posted: each run of consecutive
     SEND/RECV actions is one NCCL group (prt_pp_group), when the schedule is
     proven not to wait forever that way; else the host transport's eager
     queues carry them (the runtime says which, from the manifest) */
  char p2p_why[400];
  int p2p = schedule_rendezvous(s, p2p_why, sizeof p2p_why);
  for (int k = 0; k < ra->n && train; k++) {
    Action x = ra->a[k];
    Chunk *c = x.stage >= 0 && mine[x.stage] >= 0 ? &ch[mine[x.stage]] : NULL;
    int64_t slot = act_slot[k] >= 0 ? sp->slots_off + (int64_t)act_slot[k] * sp->slot_bytes : 0;
    char fn[64];
    SCall *cl;
    /* a tensor's address from the step function: the arena plus its slot */
#define TENSOR(t) (c->loc[t] == LOC_SLOT ? slot + c->off[t] : sp->ws_off + c->off[t])
    switch (x.kind) {
    case ACT_F:
    case ACT_I:
    case ACT_W:
    case ACT_B:
      for (int part = 0; part < 2; part++) {
        const char *suffix = x.kind == ACT_F ? "f" : x.kind == ACT_W ? "w" : x.kind == ACT_I ? "i" : part ? "w" : "i";
        if (part && x.kind != ACT_B) break;
        snprintf(fn, sizeof fn, "pipec_c%d_%s", x.stage, suffix);
        cl = call(G, step, arena_strdup(a, fn), "cppi", "compute");
        Actx(cl), A(cl, 'p', SB_ARENA, 0, 0), A(cl, 'p', SB_ARENA, slot, 0), Ai(cl, x.mb);
      }
      break;
    case ACT_SEND_F:
    case ACT_RECV_F:
    case ACT_SEND_B:
    case ACT_RECV_B: {
      int send = x.kind == ACT_SEND_F || x.kind == ACT_SEND_B, bwd = x.kind == ACT_SEND_B || x.kind == ACT_RECV_B;
      const int *ts = x.kind == ACT_SEND_F ? c->send_f : x.kind == ACT_RECV_F ? c->recv_f : x.kind == ACT_SEND_B ? c->send_b : c->recv_b;
      int nt = x.kind == ACT_SEND_F ? c->nsf : x.kind == ACT_RECV_F ? c->nrf : x.kind == ACT_SEND_B ? c->nsb : c->nrb;
      int peer_stage = x.stage + (bwd ? -1 : 1) * (send ? 1 : -1);
      int receiver = send ? peer_stage : x.stage;
      if (p2p && (k == 0 || !action_is_p2p(ra->a[k - 1].kind))) cl = call(G, step, "prt_pp_group", "ci", "send/receive group"), Actx(cl), Ai(cl, 1);
      for (int q = 0; q < nt; q++) {
        cl = call(G, step, send ? "prt_pp_send" : "prt_pp_recv", "ciipl", send ? "send" : "receive");
        Actx(cl), Ai(cl, s->stage_rank[peer_stage]), Ai(cl, msg_tag(bwd, receiver, x.mb, q));
        A(cl, 'p', SB_ARENA, TENSOR(ts[q]), 0), Al(cl, tbytes(G, ts[q]));
      }
      if (p2p && (k + 1 == ra->n || !action_is_p2p(ra->a[k + 1].kind))) cl = call(G, step, "prt_pp_group", "ci", "send/receive group"), Actx(cl), Ai(cl, 0);
      break;
    }
    case ACT_REDUCE_GRAD: {
      if (templates) break; /* done before STEP */
      int64_t lo = -1, hi = -1; /* the parameters REDUCE_GRAD(stage) finishes: one range */
      for (int q = 0; q < g->nparam; q++)
        if (G->poff[q] >= 0 && key[q] == ns + k) {
          int64_t e = G->poff[q] + g->param[q].rows * (g->param[q].cols ? g->param[q].cols : 1);
          if (lo < 0 || G->poff[q] < lo) lo = G->poff[q];
          if (e > hi) hi = e;
        }
      if (lo < 0) break;
      cl = call(G, step, "prt_dp_allreduce", "cpl", "gradients");
      Actx(cl), A(cl, 'p', SB_ARENA, sp->grads_off + lo * 4, 0), Al(cl, hi - lo);
      break;
    }
    case ACT_TIED_ALLREDUCE:
      for (int q = 0; !templates && q < g->nparam; q++) {
        if (G->poff[q] < 0) continue;
        int ranks = 0, other = 0;
        for (int i = 0; i < g->nop; i++) {
          const OgOp *o = &g->op[i];
          if ((o->weight == q || o->bias == q) && G->chunk_of_op[i] >= 0) {
            int r = s->stage_rank[G->chunk_of_op[i]];
            ranks |= 1, other |= r != pp_rank;
          }
        }
        if (!ranks || !other) continue;
        cl = call(G, step, "prt_tied_allreduce", "cipl", "tied weights");
        Actx(cl), Ai(cl, q), Ap(G, cl, q, 0, 1), Al(cl, g->param[q].rows * (g->param[q].cols ? g->param[q].cols : 1));
      }
      break;
    case ACT_STEP:
      /* templates: one all-reduce per run of parameters (in parameter order,
         contiguous here) with the same group; every holder sees the same runs */
      for (int q = 0; templates && q < g->nparam; q++) {
        if (G->poff[q] < 0) continue;
        int e = q;
        while (e + 1 < g->nparam && G->poff[e + 1] >= 0 && !strcmp(grp[e + 1], grp[q])) {
          if (G->poff[e + 1] != G->poff[e] + psize(&g->param[e]))
            return fail(G, "parameters %d and %d are not adjacent on pipeline %d rank %d (internal)", e, e + 1, pipeline, pp_rank), NULL;
          e++;
        }
        cl = call(G, step, "prt_grad_allreduce", "cipl", "gradients");
        Actx(cl), Ai(cl, q), Ap(G, cl, q, 0, 1), Al(cl, G->poff[e] + psize(&g->param[e]) - G->poff[q]);
        q = e;
      }
      cl = call(G, step, "prt_optimizer_step", "c", "optimizer"), Actx(cl);
      break;
    }
#undef TENSOR
  }

  if (train) lower_eval(G, ch, nc, nmb);

  /* the manifest */
  Buf m = {0};
  const Pipeline *pl = G->pl;
  bprintf(&m, "pipec-stage 1\nmodel %s\nrun %s\n", p->model_name, train ? "train" : "generate");
  bprintf(&m, "stage %d pipeline %d stages %d\n", pp_rank, pipeline, s->nranks);
  bprintf(&m, "world %d tp %d dp %d pp %d\n", p->world, p->tp, p->dp, p->pp);
  bprintf(&m, "precision %s\n", p->precision ? p->precision : "fp32");
  for (int b = 0; b < G->nbuckets; b++)
    bprintf(&m, "bucket %d %lld %lld %lld\n", b, (long long)G->bucket_lo[b], (long long)(G->bucket_hi[b] - G->bucket_lo[b]),
            (long long)G->bucket_calls[b] * nmb);
  if (p2p) bprintf(&m, "p2p nccl\n");
  else bprintf(&m, "p2p host %s\n", p2p_why); /* one line: schedule_rendezvous writes none */
  int64_t vocab = 0; /* the rows of the embedding that reads the token ids: the data's range */
  for (int i = 0; i < g->nfwd; i++)
    if (g->op[i].kind == OP_EMBEDDING && g->op[i].in[0] == g->tokens && g->op[i].weight >= 0) vocab = g->param[g->op[i].weight].full_rows;
  bprintf(&m, "batch %lld microbatches %d mbrows %lld seq %lld allmicrobatches %lld vocab %lld\n", (long long)p->batch, nmb, (long long)G->B,
          (long long)p->seq, (long long)mbs, (long long)vocab);
  bprintf(&m, "pipelines"); /* each pipeline's microbatches: the global batch splits in this order */
  for (int j = 0; j < p->npipes; j++) bprintf(&m, " %d", p->pipes[j].microbatches);
  bprintf(&m, "\n");
  {
    int *kp = arena_alloc(a, sizeof(int) * (size_t)p->world), *rp = arena_alloc(a, sizeof(int) * (size_t)p->world);
    int *tp = arena_alloc(a, sizeof(int) * (size_t)p->world);
    if (plan_rank_table(p, kp, rp, tp, err, errlen)) return NULL;
    for (int r = 0; r < p->world; r++) bprintf(&m, "rank %d pipeline %d pp %d tp %d\n", r, kp[r], rp[r], tp[r]);
  }
  bprintf(&m, "train steps %lld seed %lld lr %.17g min_lr %.17g warmup %lld schedule %s clip %.17g\n", (long long)p->steps,
          (long long)p->seed, p->lr, p->min_lr, (long long)p->warmup, p->lr_schedule ? p->lr_schedule : "constant", p->grad_clip);
  { /* generation defaults (the infer section); strings in hex, so any text fits on the line */
    const char *str[2] = {p->prompt, p->weights};
    bprintf(&m, "infer max_new_tokens %lld sampling %s top_k %lld top_p %.17g beams %lld temperature %.17g seed %lld", (long long)p->max_new_tokens,
            p->sampling, (long long)p->top_k, p->top_p, (long long)p->beams, p->temperature, (long long)p->infer_seed);
    for (int k = 0; k < 2; k++) {
      bprintf(&m, k ? " weights " : " prompt ");
      if (!str[k] || !*str[k]) bprintf(&m, "-");
      for (const unsigned char *q = (const unsigned char *)str[k]; q && *q; q++) bprintf(&m, "%02x", *q);
    }
    bprintf(&m, "\n");
  }
  bprintf(&m, "optimizer %s beta1 %.17g beta2 %.17g eps %.17g weight_decay %.17g momentum %.17g\n", p->optimizer, p->beta1, p->beta2,
          p->opt_eps, p->weight_decay, p->momentum);
  bprintf(&m, "data train ");
  manifest_path(&m, p->data);
  bprintf(&m, " val ");
  manifest_path(&m, p->val_data);
  bprintf(&m, " val_every %lld\nflops_per_token %.17g\n", (long long)p->val_every, flops_per_token(G));
  bprintf(&m, "checkpoint every %lld keep %lld\n", (long long)p->save_every, (long long)p->keep);
  for (int k = 0; k < 2; k++) { /* paths: the rest of their line */
    const char *path = k ? p->init : p->save_dir;
    if (path && strchr(path, '\n')) {
      errf(err, errlen, "the %s path '%s' holds a line break, which a stage program cannot be given", k ? "init" : "save", path);
      return NULL;
    }
    if (path) bprintf(&m, "%s %s\n", k ? "init" : "save_dir", path);
  }
  bprintf(&m, "arena %lld params %lld grads %lld optim %lld slots %lld nslots %d slot_bytes %lld ws %lld ws_bytes %lld floats %lld\n",
          (long long)sp->total, (long long)sp->params_off, (long long)sp->grads_off, (long long)sp->optim_off, (long long)sp->slots_off,
          sp->nslots, (long long)sp->slot_bytes, (long long)sp->ws_off, (long long)sp->ws_bytes, (long long)pf);
  for (int q = 0; q < g->nparam; q++) {
    const OgParam *pp = &g->param[q];
    if (G->poff[q] < 0) continue;
    /* counted in the gradient norm once: by the lowest pp rank holding it, and by tp rank 0 when replicated */
    int first = 1;
    for (int i = 0; i < g->nop; i++)
      if ((g->op[i].weight == q || g->op[i].bias == q) && G->chunk_of_op[i] >= 0 && s->stage_rank[G->chunk_of_op[i]] < pp_rank) first = 0;
    int tied = 0;
    for (int i = 0; i < g->nop; i++)
      if ((g->op[i].weight == q || g->op[i].bias == q) && G->chunk_of_op[i] >= 0 && s->stage_rank[G->chunk_of_op[i]] != pp_rank) tied = 1;
    bprintf(&m, "param %d %s %lld %lld %lld %lld %lld %d %lld %lld %d %d\n", q, pp->name, (long long)G->poff[q], (long long)pp->rows,
            (long long)pp->cols, (long long)pp->full_rows, (long long)pp->full_cols, (int)pp->shard, (long long)pp->q_rows,
            (long long)pp->kv_rows, first, tied);
  }
  (void)pl;
  for (int q = 0; q < g->nparam; q++) { /* the pipeline ranks holding a parameter, when more than this one */
    if (G->poff[q] < 0) continue;
    char *held = arena_alloc(a, (size_t)s->nranks + 1);
    int other = 0;
    for (int i = 0; i < g->nop; i++)
      if ((g->op[i].weight == q || g->op[i].bias == q) && G->chunk_of_op[i] >= 0) {
        int r = s->stage_rank[G->chunk_of_op[i]];
        held[r] = 1;
        other |= r != pp_rank;
      }
    if (!other) continue;
    bprintf(&m, "holders %d", q);
    for (int r = 0; r < s->nranks; r++)
      if (held[r]) bprintf(&m, " %d", r);
    bprintf(&m, "\n");
  }
  for (int q = 0; templates && q < g->nparam; q++)
    if (G->poff[q] >= 0) bprintf(&m, "reduce %d %s\n", q, grp[q]);
  if (lower_gen(G, ch, nc, mine, &m)) {
    free(m.s);
    return NULL;
  }
  bprintf(&m, "end\n");
  sp->manifest = arena_strdup(a, m.s);
  free(m.s);
  return sp;
}
