/* kernels_emit.c — see kernels_emit.h. */
#define _GNU_SOURCE /* memmem */
#include "compiler/kernels_emit.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/files.h"
#include "lib/nvrtc.h"

static const char *const act_c[] = {"PIPEC_ACT_GELU_TANH", "PIPEC_ACT_GELU_ERF", "PIPEC_ACT_RELU", "PIPEC_ACT_SILU"};

typedef struct F {
  Arena *A;
  const OpGraph *g;
  int *uses;          /* per tensor: ops that read it (forward and backward) */
  int *consumer;      /* per tensor: the last op that read it */
  unsigned char *done;
  PtrVec k;
  int fused_ops;
} F;

static FusedKernel *add(F *f, const char *kind, int op, int library, KSizes z, const char *sigfmt, ...)
    __attribute__((format(printf, 6, 7)));
static FusedKernel *add(F *f, const char *kind, int op, int library, KSizes z, const char *sigfmt, ...) {
  FusedKernel *k = arena_alloc(f->A, sizeof *k);
  char buf[256];
  va_list ap;
  va_start(ap, sigfmt);
  vsnprintf(buf, sizeof buf, sigfmt, ap);
  va_end(ap);
  k->kind = kind, k->first_op = op, k->library = library, k->z = z;
  k->sig = arena_printf(f->A, "%s %s", kind, buf);
  k->ops = arena_alloc(f->A, sizeof(int) * 8);
  k->ops[k->nops++] = op;
  f->done[op] = 1;
  ptrvec_push(f->A, &f->k, k);
  return k;
}
static void cover(F *f, FusedKernel *k, int op) {
  if (k->nops < 8) k->ops[k->nops++] = op;
  f->done[op] = 1;
  f->fused_ops++;
}

static int is_elementwise(const OgOp *o) {
  return o->kind == OP_ACT || o->kind == OP_ADD || o->kind == OP_SUB || o->kind == OP_MUL || o->kind == OP_SCALE;
}

/* The expression of op `i` over chain inputs; inputs are collected in `in`. */
static char *expr_of(F *f, int i, int *in, int *nin, const int *chain, int nchain) {
  const OgOp *o = &f->g->op[i];
  char *x[2] = {0};
  for (int k = 0; k < o->nin && k < 2; k++) {
    int t = o->in[k], prod = -1;
    for (int c = 0; c < nchain; c++)
      if (f->g->op[chain[c]].out == t) prod = chain[c];
    if (prod >= 0) x[k] = expr_of(f, prod, in, nin, chain, nchain);
    else {
      int j = 0;
      while (j < *nin && in[j] != t) j++;
      if (j == *nin) in[(*nin)++] = t;
      x[k] = arena_printf(f->A, "a%d", j);
    }
  }
  switch (o->kind) {
  case OP_ACT: return arena_printf(f->A, "act_forward(%s, %s)", x[0], act_c[o->act]);
  case OP_ADD: return arena_printf(f->A, "(%s + %s)", x[0], x[1]);
  case OP_SUB: return arena_printf(f->A, "(%s - %s)", x[0], x[1]);
  case OP_MUL: return arena_printf(f->A, "(%s * %s)", x[0], x[1]);
  case OP_SCALE: return arena_printf(f->A, "(%s * %.9gf)", x[0], o->scalar);
  default: return arena_strdup(f->A, "0.f");
  }
}

KernelPlan *kernels_fuse(Arena *a, const OpGraph *g, const Program *p) {
  F f = {.A = a, .g = g};
  f.uses = arena_alloc(a, sizeof(int) * (size_t)(g->nt + 1));
  f.consumer = arena_alloc(a, sizeof(int) * (size_t)(g->nt + 1));
  f.done = arena_alloc(a, (size_t)g->nop + 1);
  for (int i = 0; i < g->nop; i++)
    for (int k = 0; k < g->op[i].nin; k++) f.uses[g->op[i].in[k]]++, f.consumer[g->op[i].in[k]] = i;
  const char *prec = p->precision;
  for (int i = 0; i < g->nop; i++) {
    if (f.done[i]) continue;
    const OgOp *o = &g->op[i];
    int w = o->out >= 0 ? g->t[o->out].width : 0;
    FusedKernel *k;
    switch (o->kind) {
    case OP_EMBEDDING: {
      /* tokens -> wte, positions -> wpe, their sum: one kernel */
      int pos = -1, e2 = -1, sum = -1;
      for (int j = i + 1; j < g->nfwd && sum < 0; j++) {
        const OgOp *q = &g->op[j];
        if (q->kind == OP_POSITIONS && q->in[0] == o->in[0]) pos = j;
        else if (pos >= 0 && q->kind == OP_EMBEDDING && q->in[0] == g->op[pos].out && g->t[q->out].width == w) e2 = j;
        else if (e2 >= 0 && q->kind == OP_ADD && ((q->in[0] == o->out && q->in[1] == g->op[e2].out) || (q->in[1] == o->out && q->in[0] == g->op[e2].out)))
          sum = j;
      }
      int fuse = sum >= 0 && f.uses[o->out] == 1 && f.uses[g->op[e2].out] == 1;
      if (o->tp > 1) { /* vocabulary-parallel: this rank's rows; positions stay apart */
        KSizes z = {.C = w, .rows = (int)g->param[o->weight].rows};
        add(&f, "vp_embedding_fwd", i, 0, z, "C=%d rows=%d %s", z.C, z.rows, prec);
        break;
      }
      KSizes z = {.C = w, .wpe = fuse};
      k = add(&f, "embedding_fwd", i, 0, z, "C=%d wpe=%d %s", z.C, z.wpe, prec);
      if (fuse) cover(&f, k, pos), cover(&f, k, e2), cover(&f, k, sum);
      break;
    }
    case OP_POSITIONS: add(&f, "positions", i, 0, (KSizes){0}, "%s", prec); break;
    case OP_MATMUL: {
      add(&f, "gemm", i, 1, (KSizes){0}, "N x %d <- %d", o->rows, (int)g->param[o->weight].cols);
      int c = f.consumer[o->out];
      int act_next = f.uses[o->out] == 2 && g->op[c].kind == OP_ACT_BWD; /* the act and its backward read it */
      int actop = -1;
      for (int j = i + 1; act_next && j < g->nfwd; j++)
        if (g->op[j].kind == OP_ACT && g->op[j].in[0] == o->out) actop = j;
      if (o->bias >= 0 && actop >= 0) {
        KSizes z = {.OC = o->rows, .act = g->op[actop].act};
        k = add(&f, "bias_act_fwd", i, 0, z, "OC=%d act=%d %s", z.OC, z.act, prec);
        f.done[i] = 1;
        cover(&f, k, actop);
        k->ops[0] = actop, k->first_op = i;
      } else if (o->bias >= 0)
        add(&f, "bias_fwd", i, 0, (KSizes){.OC = o->rows}, "OC=%d %s", o->rows, prec);
      break;
    }
    case OP_ADD:
      if (o->phase == PHASE_F) {
        int ln = -1;
        for (int j = i + 1; j < g->nfwd && ln < 0; j++)
          if ((g->op[j].kind == OP_LAYERNORM) && g->op[j].in[0] == o->out) ln = j;
        if (ln >= 0) {
          KSizes z = {.C = w, .eps = g->op[ln].scalar, .bias = g->op[ln].bias >= 0};
          k = add(&f, "residual_layernorm_fwd", ln, 0, z, "C=%d eps=%g bias=%d %s", z.C, z.eps, z.bias, prec);
          f.done[i] = 1;
          cover(&f, k, i);
          break;
        }
      }
      /* fall through: an elementwise chain */
      __attribute__((fallthrough));
    case OP_ACT:
    case OP_SUB:
    case OP_MUL:
    case OP_SCALE: {
      int chain[16], n = 0, cur = i;
      chain[n++] = cur;
      while (n < 16) {
        int t = g->op[cur].out, c = f.consumer[t];
        if (f.uses[t] != 1 || !is_elementwise(&g->op[c]) || g->op[c].phase != g->op[cur].phase || f.done[c]) break;
        if (g->op[c].kind == OP_ADD && g->op[c].phase == PHASE_F) {
          int ln = 0;
          for (int j = c + 1; j < g->nfwd; j++) ln |= g->op[j].kind == OP_LAYERNORM && g->op[j].in[0] == g->op[c].out;
          if (ln) break; /* that add fuses with its layernorm */
        }
        chain[n++] = cur = c;
      }
      int in[16], nin = 0;
      char *e = expr_of(&f, chain[n - 1], in, &nin, chain, n);
      k = add(&f, "elementwise", chain[n - 1], 0, (KSizes){0}, "%s [%d inputs] %s", e, nin, prec);
      k->expr = e, k->ninputs = nin;
      for (int c = 0; c < n - 1; c++) cover(&f, k, chain[c]);
      break;
    }
    case OP_LAYERNORM: add(&f, "layernorm_fwd", i, 0, (KSizes){.C = w, .eps = o->scalar}, "C=%d eps=%g %s", w, o->scalar, prec); break;
    case OP_RMSNORM: add(&f, "rmsnorm_fwd", i, 0, (KSizes){.C = w, .eps = o->scalar}, "C=%d eps=%g %s", w, o->scalar, prec); break;
    case OP_ATTENTION: {
      int d = w, hs = d / o->heads, kv = hs * o->kv_heads, cross = o->nin == 2;
      KSizes z = {.nh = o->heads, .nhkv = o->kv_heads, .hs = hs, .causal = o->causal, .qs = cross ? d : d + 2 * kv,
                  .kvs = cross ? 2 * kv : d + 2 * kv, .os = d};
      add(&f, "attention_fwd", i, 0, z, "NH=%d NH_kv=%d HS=%d causal=%d qs=%d kvs=%d os=%d %s", z.nh, z.nhkv, z.hs, z.causal, z.qs,
          z.kvs, z.os, prec);
      break;
    }
    case OP_SOFTMAX: add(&f, "softmax_fwd", i, 0, (KSizes){.C = w}, "C=%d %s", w, prec); break;
    case OP_DROPOUT: add(&f, "dropout", i, 0, (KSizes){.p = o->scalar}, "p=%g %s", o->scalar, prec); break;
    case OP_XENT: {
      if (o->tp > 1) { /* vocabulary-parallel: the loss, and the gradient later */
        add(&f, "vp_loss", i, 0, (KSizes){0}, "%s", prec);
        break;
      }
      k = add(&f, "crossentropy_fwd_bwd", i, 0, (KSizes){.V = g->t[o->in[0]].width}, "V=%d %s", g->t[o->in[0]].width, prec);
      for (int j = g->nfwd; j < g->nop; j++)
        if (g->op[j].kind == OP_XENT_BWD && g->op[j].fwd == i) cover(&f, k, j);
      break;
    }
    case OP_XENT_BWD:
      if (o->tp > 1) add(&f, "vp_xent_bwd", i, 0, (KSizes){.V = w}, "V=%d %s", w, prec);
      else add(&f, "crossentropy_fwd_bwd", i, 0, (KSizes){.V = w}, "V=%d %s", w, prec);
      break;
    case OP_MATMUL_BWD_X: add(&f, "gemm", i, 1, (KSizes){0}, "N x %d <- %d", (int)g->param[o->weight].cols, o->rows); break;
    case OP_MATMUL_BWD_W:
      add(&f, "gemm", i, 1, (KSizes){0}, "%d x %d <- N", o->rows, (int)g->param[o->weight].cols);
      if (o->bias >= 0) add(&f, "bias_bwd", i, 0, (KSizes){.OC = o->rows}, "OC=%d %s", o->rows, prec);
      break;
    case OP_EMBEDDING_BWD:
      if (o->tp > 1) add(&f, "vp_embedding_bwd", i, 0, (KSizes){.C = (int)g->param[o->weight].cols, .rows = (int)g->param[o->weight].rows}, "C=%d rows=%d %s",
            (int)g->param[o->weight].cols, (int)g->param[o->weight].rows, prec);
      else add(&f, "embedding_bwd", i, 0, (KSizes){.C = (int)g->param[o->weight].cols}, "C=%d %s", (int)g->param[o->weight].cols, prec);
      break;
    case OP_NORM_BWD_X:
    case OP_NORM_BWD_W: {
      int ln = g->op[o->fwd].kind == OP_LAYERNORM;
      add(&f, o->kind == OP_NORM_BWD_X ? (ln ? "layernorm_bwd" : "rmsnorm_bwd") : (ln ? "layernorm_bwd_params" : "rmsnorm_bwd_params"),
          i, 0, (KSizes){.C = g->t[o->in[1]].width}, "C=%d %s", g->t[o->in[1]].width, prec);
      break;
    }
    case OP_ATTENTION_BWD: {
      const OgOp *fo = &g->op[o->fwd];
      int d = g->t[fo->out].width, hs = d / o->heads, kv = hs * o->kv_heads, cross = fo->nin == 2;
      KSizes z = {.nh = o->heads, .nhkv = o->kv_heads, .hs = hs, .causal = o->causal, .qs = cross ? d : d + 2 * kv,
                  .kvs = cross ? 2 * kv : d + 2 * kv, .os = d};
      add(&f, "attention_bwd", i, 0, z, "NH=%d NH_kv=%d HS=%d causal=%d qs=%d kvs=%d os=%d %s", z.nh, z.nhkv, z.hs, z.causal, z.qs,
          z.kvs, z.os, prec);
      break;
    }
    case OP_ACT_BWD: add(&f, "act_bwd", i, 0, (KSizes){.act = o->act}, "act=%d %s", o->act, prec); break;
    case OP_DROPOUT_BWD: add(&f, "dropout", i, 0, (KSizes){.p = o->scalar}, "p=%g %s", o->scalar, prec); break;
    case OP_SOFTMAX_BWD: add(&f, "softmax_bwd", i, 0, (KSizes){.C = w}, "C=%d %s", w, prec); break;
    case OP_TP_ENTER: f.done[i] = 1; break; /* identity */
    case OP_ALLREDUCE: add(&f, "allreduce", i, 1, (KSizes){0}, "%d", w); break;
    case OP_BIAS: add(&f, "bias_fwd", i, 0, (KSizes){.OC = w}, "OC=%d %s", w, prec); break;
    case OP_BIAS_BWD: add(&f, "bias_bwd", i, 0, (KSizes){.OC = g->t[o->in[0]].width}, "OC=%d %s", g->t[o->in[0]].width, prec); break;
    case OP_VP_ROWMAX: add(&f, "vp_rowmax", i, 0, (KSizes){.V = g->t[o->in[0]].width}, "V=%d %s", g->t[o->in[0]].width, prec); break;
    case OP_VP_SUMEXP: add(&f, "vp_sumexp", i, 0, (KSizes){.V = g->t[o->in[0]].width}, "V=%d %s", g->t[o->in[0]].width, prec); break;
    case OP_KIND_COUNT: break;
    }
  }
  KernelPlan *kp = arena_alloc(a, sizeof *kp);
  kp->k = arena_alloc(a, sizeof(FusedKernel) * (size_t)(f.k.len + 1));
  for (int i = 0; i < f.k.len; i++) kp->k[i] = *(FusedKernel *)f.k.items[i];
  kp->n = f.k.len;
  kp->nfused_ops = f.fused_ops;
  return kp;
}

void kernels_dump(FILE *out, const KernelPlan *kp, const OpGraph *g, const Program *p) {
  int lib = 0;
  for (int i = 0; i < kp->n; i++) lib += kp->k[i].library;
  fprintf(out, "# %d kernels and %d library GEMMs for %d operations (%d fused into another's kernel)\n", kp->n - lib, lib,
          g->nop, kp->nfused_ops);
  for (int i = 0; i < kp->n; i++) {
    const FusedKernel *k = &kp->k[i];
    const OgOp *o = &g->op[k->first_op];
    fprintf(out, "%-4s %-60s # %s\n", o->phase == PHASE_F ? "F" : o->phase == PHASE_I ? "I" : "W", k->sig,
            o->mod ? o->mod->path : p->mods[o->top]->path);
  }
}

/* ---- CUDA C ---- */

static const char *cname(Arena *a, const char *s) {
  char *r = arena_strdup(a, s);
  for (char *c = r; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))) *c = '_';
  return r;
}

/* the headers of kernels/, each after those it uses */
static const char *const header_order[] = {"common",      "activation", "matmul_epilogue", "layernorm", "rmsnorm",
                                           "attention",   "softmax",    "crossentropy",    "embedding", "dropout",
                                           "elementwise", "reduce",     "adamw",           "vocab_parallel"};
enum { NHEADERS = sizeof header_order / sizeof header_order[0] };
static const char *header_text(const char *name, size_t *len) {
  for (int i = 0; pipe_cuda_headers[i].name; i++)
    if (!strcmp(pipe_cuda_headers[i].name, name)) return *len = pipe_cuda_headers[i].len, pipe_cuda_headers[i].text;
  return *len = 0, NULL;
}
static void write_headers(FILE *out) {
  for (int h = 0; h < NHEADERS; h++) {
    size_t len;
    const char *t = header_text(header_order[h], &len);
    if (t) fprintf(out, "%.*s\n", (int)len, t);
  }
}

int kernels_emit_cuda(FILE *out, const KernelPlan *kp, const OpGraph *g, const Program *p) {
  Arena a = {0};
  const char *T = !strcmp(p->precision, "bf16") ? "bf16" : "float";
  fprintf(out, "/* CUDA kernels of model '%s' (%s), generated by pipec from %s.\n"
               " * One extern \"C\" wrapper per distinct kernel, its sizes compiled in; the\n"
               " * comment above each names the .pipe modules that run it. GEMMs are\n"
               " * cuBLASLt calls made by the runtime and have no kernel here. */\n\n",
          p->model_name, p->precision, p->model_loc.file ? p->model_loc.file->path : "?");
  write_headers(out);
  fprintf(out, "/* ---- model %s ---- */\n\n", p->model_name);
  int n = 0;
  for (int i = 0; i < kp->n; i++) {
    const FusedKernel *k = &kp->k[i];
    if (k->library) continue;
    int first = 1;
    for (int j = 0; j < i; j++)
      if (!kp->k[j].library && !strcmp(kp->k[j].sig, k->sig)) first = 0;
    if (!first) continue;
    /* who runs it */
    fprintf(out, "/* %s\n *   used by:", k->sig);
    int users = 0;
    for (int j = i; j < kp->n; j++) {
      if (strcmp(kp->k[j].sig, k->sig)) continue;
      const OgOp *o = &g->op[kp->k[j].first_op];
      if (users++ < 6) {
        const Loc *l = &o->loc;
        fprintf(out, " %s (%s:%d)", o->mod ? o->mod->path : p->mods[o->top]->path, l->file ? l->file->path : "?", l->line);
      }
    }
    if (users > 6) fprintf(out, " and %d more", users - 6);
    fprintf(out, " */\n");
    const char *name = arena_printf(&a, "pipec_%s_k%d_%s", cname(&a, p->model_name), n, k->kind);
    const KSizes *z = &k->z;
    const int C = z->C, OC = z->OC, V = z->V, act = z->act, nh = z->nh, nhkv = z->nhkv, hs = z->hs, causal = z->causal;
    const int qs = z->qs, kvs = z->kvs, os = z->os, wpe = z->wpe, bias = z->bias, rows = z->rows;
    const float eps = (float)z->eps;
    if (!strcmp(k->kind, "embedding_fwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *out, const int *tokens, const %s *wte, const %s *wpe, int B, int Tn) {\n"
                   "  embedding_forward<%s>(out, tokens, wte, %s, B, Tn, %d);\n}\n\n", name, T, T, T, T, wpe ? "wpe" : "nullptr", C);
    else if (!strcmp(k->kind, "vp_rowmax"))
      fprintf(out, "extern \"C\" __global__ void %s(float *M, const %s *logits, int N) {\n  vp_rowmax<%s>(M, logits, N, %d);\n}\n\n",
              name, T, T, V);
    else if (!strcmp(k->kind, "vp_sumexp"))
      fprintf(out, "extern \"C\" __global__ void %s(float *S, const %s *logits, const int *targets, const float *M, int N, int v0) {\n"
                   "  vp_sumexp<%s>(S, logits, targets, M, N, %d, v0);\n}\n\n", name, T, T, V);
    else if (!strcmp(k->kind, "vp_loss"))
      fprintf(out, "extern \"C\" __global__ void %s(float *losses, const float *M, const float *S, const int *targets, int N) {\n"
                   "  vp_loss(losses, M, S, targets, N);\n}\n\n", name);
    else if (!strcmp(k->kind, "vp_xent_bwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *dlogits, const %s *logits, const int *targets, const float *M, const float *S,\n"
                   "    int N, int v0, float scale) {\n  vp_xent_backward<%s>(dlogits, logits, targets, M, S, N, %d, v0, scale);\n}\n\n",
              name, T, T, T, V);
    else if (!strcmp(k->kind, "vp_embedding_fwd") || !strcmp(k->kind, "vp_embedding_bwd")) {
      if (!strcmp(k->kind, "vp_embedding_fwd"))
        fprintf(out, "extern \"C\" __global__ void %s(%s *out, const int *tokens, const %s *w, long N, int v0) {\n"
                     "  vp_embedding_forward<%s>(out, tokens, w, N, %d, v0, %d);\n}\n\n", name, T, T, T, C, rows);
      else
        fprintf(out, "extern \"C\" __global__ void %s(%s *dw, const %s *dout, const int *tokens, long N, int v0) {\n"
                     "  vp_embedding_backward<%s>(dw, dout, tokens, N, %d, v0, %d);\n}\n\n", name, T, T, T, C, rows);
    } else if (!strcmp(k->kind, "positions"))
      fprintf(out, "/* positions are computed where they are used (embedding_fwd) */\n\n");
    else if (!strcmp(k->kind, "bias_fwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *out, const %s *bias, int N) {\n"
                   "  bias_act_forward<%s>(out, nullptr, out, bias, N, %d, PIPEC_ACT_NONE);\n}\n\n", name, T, T, T, OC);
    else if (!strcmp(k->kind, "bias_act_fwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *out, %s *pre, const %s *bias, int N) {\n"
                   "  bias_act_forward<%s>(out, pre, out, bias, N, %d, %s);\n}\n\n", name, T, T, T, T, OC, act_c[act]);
    else if (!strcmp(k->kind, "layernorm_fwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *out, float *mean, float *rstd, const %s *inp, const %s *weight, const %s *bias, int N) {\n"
                   "  layernorm_forward<%s>(out, mean, rstd, nullptr, inp, nullptr, weight, bias, N, %d, %.9gf);\n}\n\n",
              name, T, T, T, T, T, C, eps);
    else if (!strcmp(k->kind, "residual_layernorm_fwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *resid, %s *out, float *mean, float *rstd, const %s *a, const %s *b,\n"
                   "    const %s *weight, const %s *bias, int N) {\n"
                   "  layernorm_forward<%s>(out, mean, rstd, resid, a, b, weight, %s, N, %d, %.9gf);\n}\n\n",
              name, T, T, T, T, T, T, T, bias ? "bias" : "nullptr", C, eps);
    else if (!strcmp(k->kind, "rmsnorm_fwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *out, float *rstd, const %s *inp, const %s *weight, int N) {\n"
                   "  rmsnorm_forward<%s>(out, rstd, inp, weight, N, %d, %.9gf);\n}\n\n", name, T, T, T, T, C, eps);
    else if (!strcmp(k->kind, "attention_fwd"))
      fprintf(out, "extern \"C\" __global__ void __launch_bounds__(128, 4) %s(%s *out, float *lse, const %s *q, const %s *k, const %s *v,\n"
                   "    int B, int Tn, int Tk) {\n"
                   "  PipecAttn a = {B, Tn, Tk, %d, %d, %d, %d, %d, %d, %d};\n"
                   "  attention_forward<%s>(out, lse, q, k, v, a);\n}\n\n",
              name, T, T, T, T, nh, nhkv, hs, causal, qs, kvs, os, T);
    else if (!strcmp(k->kind, "attention_bwd"))
      fprintf(out, "extern \"C\" __global__ void __launch_bounds__(128, 4) %s_dq(%s *dq, float *delta, const %s *dout, const %s *out,\n"
                   "    const float *lse, const %s *q, const %s *k, const %s *v, int B, int Tn, int Tk) {\n"
                   "  PipecAttn a = {B, Tn, Tk, %d, %d, %d, %d, %d, %d, %d};\n"
                   "  attention_backward_dq<%s>(dq, delta, dout, out, lse, q, k, v, a);\n}\n"
                   "extern \"C\" __global__ void __launch_bounds__(128, 4) %s_dkdv(%s *dk, %s *dv, const %s *dout, const float *lse,\n"
                   "    const float *delta, const %s *q, const %s *k, const %s *v, int B, int Tn, int Tk) {\n"
                   "  PipecAttn a = {B, Tn, Tk, %d, %d, %d, %d, %d, %d, %d};\n"
                   "  attention_backward_dkdv<%s>(dk, dv, dout, lse, delta, q, k, v, a);\n}\n\n",
              name, T, T, T, T, T, T, nh, nhkv, hs, causal, qs, kvs, os, T, name, T, T, T, T, T, T, nh, nhkv, hs, causal, qs, kvs,
              os, T);
    else if (!strcmp(k->kind, "softmax_fwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *out, const %s *inp, int N) {\n  softmax_forward<%s>(out, inp, N, %d);\n}\n\n",
              name, T, T, T, C);
    else if (!strcmp(k->kind, "softmax_bwd")) {
      fprintf(out, "extern \"C\" __global__ void %s(%s *dinp, const %s *dout, const %s *out, int N) {\n"
                   "  softmax_backward<%s>(dinp, dout, out, N, %d);\n}\n\n", name, T, T, T, T, C);
    } else if (!strcmp(k->kind, "crossentropy_fwd_bwd"))
      fprintf(out, "extern \"C\" __global__ void %s(float *losses, %s *dlogits, const %s *logits, const int *targets, int N, float scale) {\n"
                   "  crossentropy_forward_backward<%s>(losses, dlogits, logits, targets, N, %d, scale);\n}\n\n", name, T, T, T, V);
    else if (!strcmp(k->kind, "dropout"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *out, const %s *inp, long n, unsigned long long seed, unsigned long long offset) {\n"
                   "  dropout_kernel<%s>(out, inp, n, %.9gf, seed, offset);\n}\n\n", name, T, T, T, z->p);
    else if (!strcmp(k->kind, "elementwise")) {
      fprintf(out, "extern \"C\" __global__ void %s(%s *out", name, T);
      for (int j = 0; j < k->ninputs; j++) fprintf(out, ", const %s *a%d_", T, j);
      fprintf(out, ", long n) {\n  for (long i = grid_thread_id(); i < n; i += grid_thread_count()) {\n    ");
      for (int j = 0; j < k->ninputs; j++) fprintf(out, "const float a%d = to_float(a%d_[i]); ", j, j);
      fprintf(out, "\n    out[i] = from_float<%s>(%s);\n  }\n}\n\n", T, k->expr);
    } else if (!strcmp(k->kind, "bias_bwd"))
      fprintf(out, "extern \"C\" __global__ void %s(float *partials, const %s *dout, int N) {\n"
                   "  matmul_backward_bias<%s>(partials, dout, N, %d);\n}\n\n", name, T, T, OC);
    else if (!strcmp(k->kind, "embedding_bwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *dwte, const %s *dout, const int *tokens, int B, int Tn) {\n"
                   "  embedding_backward_wte<%s>(dwte, dout, tokens, B, Tn, %d);\n}\n\n", name, T, T, T, C);
    else if (!strcmp(k->kind, "layernorm_bwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *dinp, const %s *dout, const %s *inp, const %s *weight, const float *mean,\n"
                   "    const float *rstd, int N) {\n  layernorm_backward_input<%s>(dinp, dout, inp, weight, mean, rstd, N, %d);\n}\n\n",
              name, T, T, T, T, T, C);
    else if (!strcmp(k->kind, "layernorm_bwd_params"))
      fprintf(out, "extern \"C\" __global__ void %s(float *partials, const %s *dout, const %s *inp, const float *mean, const float *rstd, int N) {\n"
                   "  layernorm_backward_params<%s>(partials, dout, inp, mean, rstd, N, %d);\n}\n\n", name, T, T, T, C);
    else if (!strcmp(k->kind, "rmsnorm_bwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *dinp, const %s *dout, const %s *inp, const %s *weight, const float *rstd, int N) {\n"
                   "  rmsnorm_backward_input<%s>(dinp, dout, inp, weight, rstd, N, %d);\n}\n\n", name, T, T, T, T, T, C);
    else if (!strcmp(k->kind, "rmsnorm_bwd_params"))
      fprintf(out, "extern \"C\" __global__ void %s(float *partials, const %s *dout, const %s *inp, const float *rstd, int N) {\n"
                   "  rmsnorm_backward_params<%s>(partials, dout, inp, rstd, N, %d);\n}\n\n", name, T, T, T, C);
    else if (!strcmp(k->kind, "act_bwd"))
      fprintf(out, "extern \"C\" __global__ void %s(%s *dinp, const %s *dout, const %s *inp, long n) {\n"
                   "  act_backward_kernel<%s>(dinp, dout, inp, n, %s);\n}\n\n", name, T, T, T, T, act_c[act]);
    else
      fprintf(out, "/* %s: no kernel */\n\n", k->kind);
    n++;
  }
  fprintf(out, "/* ---- every model: the optimizer and gradient clipping ---- */\n"
               "PIPEC_ADAMW_ENTRIES(%s, %s)\nPIPEC_REDUCE_ENTRIES(%s, %s)\nPIPEC_REDUCE_UNTYPED_ENTRIES()\n", T,
          !strcmp(T, "bf16") ? "bf16" : "f32", T, !strcmp(T, "bf16") ? "bf16" : "f32");
  arena_free(&a);
  return n;
}

typedef struct ArchJob {
  KernelImages *out;
  const char *arch;
  int i, rc;
  char log[1 << 14];
} ArchJob;

static void *compile_arch(void *arg) {
  ArchJob *j = arg;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  j->rc = nvrtc_compile_cached(j->out->name, j->out->source, j->arch, NULL, &j->out->img[j->i], j->log, sizeof j->log);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  j->out->seconds[j->i] = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  return NULL;
}

/* NVRTC: out->source for the three targets at once, one thread each (NVRTC
   is loaded first, so this is safe); without NVRTC nimg stays 0 */
static int compile_images(KernelImages *out, char *err, size_t errlen) {
  if (!nvrtc_available(out->why, sizeof out->why)) return 0;
  static const char *const archs[] = {"sm_80", "sm_90", "compute_90"};
  ArchJob jobs[3];
  pthread_t th[3];
  int started[3] = {0};
  for (int i = 0; i < 3; i++) {
    jobs[i] = (ArchJob){out, archs[i], i, 0, {0}};
    started[i] = !pthread_create(&th[i], NULL, compile_arch, &jobs[i]);
    if (!started[i]) compile_arch(&jobs[i]);
  }
  int bad = -1;
  for (int i = 0; i < 3; i++) {
    if (started[i]) pthread_join(th[i], NULL);
    out->arch[i] = archs[i];
    if (jobs[i].rc && bad < 0) bad = i;
  }
  out->nimg = 3;
  if (bad >= 0) {
    snprintf(err, errlen, "NVRTC could not compile %s for %s:\n%s", out->name, archs[bad], jobs[bad].log);
    kernels_images_free(out);
    return -1;
  }
  return 0;
}

int kernels_compile(const KernelPlan *kp, const OpGraph *g, const Program *p, KernelImages *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  FILE *mem = open_memstream(&out->source, &out->source_len);
  out->nkernels = kernels_emit_cuda(mem, kp, g, p);
  fclose(mem);
  snprintf(out->name, sizeof out->name, "%s.cu", p->model_name);
  return compile_images(out, err, errlen);
}

/* the library's CUDA C into out->source */
static void library_source(KernelImages *out) {
  memset(out, 0, sizeof *out);
  FILE *mem = open_memstream(&out->source, &out->source_len);
  fprintf(mem, "/* pipec's kernel library: every entry point of kernels/ in fp32; the same\n"
               " * for every model (the stage programs' device kernels). */\n\n");
  write_headers(mem);
  for (int h = 1; h < NHEADERS; h++) { /* common has no entry points */
    char up[64], mac[96];
    int n = 0;
    for (const char *c = header_order[h]; *c && n < 62; c++) up[n++] = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
    up[n] = 0;
    size_t len;
    const char *t = header_text(header_order[h], &len);
    snprintf(mac, sizeof mac, "PIPEC_%s_ENTRIES(", up);
    if (t && memmem(t, len, mac, strlen(mac))) {
      fprintf(mem, "%sfloat, f32)\n", mac);
      out->nkernels++;
    }
    snprintf(mac, sizeof mac, "PIPEC_%s_UNTYPED_ENTRIES(", up);
    if (t && memmem(t, len, mac, strlen(mac))) fprintf(mem, "%s)\n", mac);
  }
  fclose(mem);
  snprintf(out->name, sizeof out->name, "pipec-library.cu");
}

/* the key of a library build: its source and the targets (FNV-1a, 64 bits) */
static unsigned long long library_key(const KernelImages *k) {
  unsigned long long h = 1469598103934665603ull;
  for (size_t i = 0; i < k->source_len; i++) h = (h ^ (unsigned char)k->source[i]) * 1099511628211ull;
  for (const char *a = "sm_80 sm_90 compute_90"; *a; a++) h = (h ^ (unsigned char)*a) * 1099511628211ull;
  return h;
}

static const char *const lib_archs[3] = {"sm_80", "sm_90", "compute_90"};
static void lib_path(char *p, size_t n, const char *dir, int i) {
  snprintf(p, n, "%s/library.%s.%s", dir, lib_archs[i], i == 2 ? "ptx" : "cubin");
}

int kernels_library_compile(KernelImages *out, char *err, size_t errlen) {
  library_source(out);
  return compile_images(out, err, errlen);
}

int kernels_library_load(const char *dir, KernelImages *out) {
  library_source(out);
  char p[4200];
  snprintf(p, sizeof p, "%s/library.key", dir);
  char *key = file_read_all(p, NULL);
  unsigned long long want = library_key(out), have = key ? strtoull(key, NULL, 16) : 0;
  free(key);
  if (have != want) {
    kernels_images_free(out);
    return -1;
  }
  for (int i = 0; i < 3; i++) {
    lib_path(p, sizeof p, dir, i);
    size_t len;
    char *b = file_read_all(p, &len);
    if (!b || !len) {
      free(b);
      kernels_images_free(out);
      return -1;
    }
    out->img[i] = (NvrtcOutput){(unsigned char *)b, len, i == 2, 1};
    out->arch[i] = lib_archs[i];
    out->nimg = i + 1;
  }
  return 0;
}

int kernels_library_write(const char *dir, char *err, size_t errlen) {
  KernelImages k;
  if (kernels_library_compile(&k, err, errlen)) return -1;
  char p[4200];
  int rc = 0;
  for (int i = 0; i < k.nimg && !rc; i++) {
    lib_path(p, sizeof p, dir, i);
    rc = file_write_atomic(p, k.img[i].data, k.img[i].size, err, errlen);
  }
  if (!rc) { /* the key last: it vouches for the images */
    char key[32];
    snprintf(key, sizeof key, "%016llx\n", k.nimg ? library_key(&k) : 0ull);
    snprintf(p, sizeof p, "%s/library.key", dir);
    rc = file_write_atomic(p, key, strlen(key), err, errlen);
  }
  if (!rc && !k.nimg) snprintf(err, errlen, "%s", k.why);
  kernels_images_free(&k);
  return rc ? -1 : 0;
}

void kernels_images_free(KernelImages *k) {
  for (int i = 0; i < k->nimg; i++) nvrtc_output_free(&k->img[i]);
  free(k->source);
  memset(k, 0, sizeof *k);
}
