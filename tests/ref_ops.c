/* ref_ops.c — see ref_ops.h. Written to be obviously right, not fast. */
#include "tests/ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *ref_alloc(long n) {
  double *p = calloc(n > 0 ? (size_t)n : 1, sizeof(double));
  if (!p) abort();
  return p;
}

/* ---- matmul ---- */

void ref_matmul_forward(double *out, const double *inp, const double *w, const double *bias, int N, int C, int OC) {
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double s = bias ? bias[o] : 0.0;
      for (int c = 0; c < C; c++) s += inp[n * C + c] * w[o * C + c];
      out[n * OC + o] = s;
    }
}

void ref_matmul_backward(double *dinp, double *dw, double *dbias, const double *dout, const double *inp,
                         const double *w, int N, int C, int OC) {
  if (dinp)
    for (int n = 0; n < N; n++)
      for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int o = 0; o < OC; o++) s += dout[n * OC + o] * w[o * C + c];
        dinp[n * C + c] = s;
      }
  if (dw)
    for (int o = 0; o < OC; o++)
      for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int n = 0; n < N; n++) s += dout[n * OC + o] * inp[n * C + c];
        dw[o * C + c] = s;
      }
  if (dbias)
    for (int o = 0; o < OC; o++) {
      double s = 0.0;
      for (int n = 0; n < N; n++) s += dout[n * OC + o];
      dbias[o] = s;
    }
}

/* ---- embedding ---- */

void ref_embedding_forward(double *out, const int32_t *tok, const double *wte, const double *wpe, int B, int T, int C) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++)
        out[(b * T + t) * C + c] = wte[tok[b * T + t] * C + c] + (wpe ? wpe[t * C + c] : 0.0);
}

void ref_embedding_backward(double *dwte, double *dwpe, const double *dout, const int32_t *tok, int V, int B, int T,
                            int C) {
  memset(dwte, 0, sizeof(double) * V * C);
  if (dwpe) memset(dwpe, 0, sizeof(double) * T * C);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) {
        dwte[tok[b * T + t] * C + c] += dout[(b * T + t) * C + c];
        if (dwpe) dwpe[t * C + c] += dout[(b * T + t) * C + c];
      }
}

/* ---- layernorm ---- */

void ref_layernorm_forward(double *out, double *mean, double *rstd, const double *inp, const double *w,
                           const double *bias, int N, int C, double eps) {
  for (int n = 0; n < N; n++) {
    const double *x = inp + n * C;
    double m = 0.0, v = 0.0;
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    v /= C;
    double rs = 1.0 / sqrt(v + eps);
    for (int c = 0; c < C; c++) out[n * C + c] = (x[c] - m) * rs * w[c] + (bias ? bias[c] : 0.0);
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = rs;
  }
}

/* norm_j = (x_j - m) rs; d norm_j / d x_i = rs (delta_ij - 1/C - norm_i norm_j / C) */
void ref_layernorm_backward(double *dinp, double *dw, double *dbias, const double *dout, const double *inp,
                            const double *w, int N, int C, double eps) {
  double *norm = ref_alloc(C);
  if (dw) memset(dw, 0, sizeof(double) * C);
  if (dbias) memset(dbias, 0, sizeof(double) * C);
  for (int n = 0; n < N; n++) {
    const double *x = inp + n * C, *d = dout + n * C;
    double m = 0.0, v = 0.0;
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    v /= C;
    double rs = 1.0 / sqrt(v + eps);
    for (int c = 0; c < C; c++) norm[c] = (x[c] - m) * rs;
    for (int i = 0; i < C; i++) {
      double s = 0.0;
      for (int j = 0; j < C; j++) s += d[j] * w[j] * rs * ((i == j) - 1.0 / C - norm[i] * norm[j] / C);
      dinp[n * C + i] = s;
    }
    for (int c = 0; c < C; c++) {
      if (dw) dw[c] += d[c] * norm[c];
      if (dbias) dbias[c] += d[c];
    }
  }
  free(norm);
}

/* ---- rmsnorm ---- */

void ref_rmsnorm_forward(double *out, double *rstd, const double *inp, const double *w, int N, int C, double eps) {
  for (int n = 0; n < N; n++) {
    const double *x = inp + n * C;
    double s = 0.0;
    for (int c = 0; c < C; c++) s += x[c] * x[c];
    double rs = 1.0 / sqrt(s / C + eps);
    for (int c = 0; c < C; c++) out[n * C + c] = x[c] * rs * w[c];
    if (rstd) rstd[n] = rs;
  }
}

/* y_j = x_j rs w_j; d y_j / d x_i = w_j rs (delta_ij - x_i x_j rs^2 / C) */
void ref_rmsnorm_backward(double *dinp, double *dw, const double *dout, const double *inp, const double *w, int N,
                          int C, double eps) {
  if (dw) memset(dw, 0, sizeof(double) * C);
  for (int n = 0; n < N; n++) {
    const double *x = inp + n * C, *d = dout + n * C;
    double s = 0.0;
    for (int c = 0; c < C; c++) s += x[c] * x[c];
    double rs = 1.0 / sqrt(s / C + eps);
    for (int i = 0; i < C; i++) {
      double g = 0.0;
      for (int j = 0; j < C; j++) g += d[j] * w[j] * rs * ((i == j) - x[i] * x[j] * rs * rs / C);
      dinp[n * C + i] = g;
    }
    if (dw)
      for (int c = 0; c < C; c++) dw[c] += d[c] * x[c] * rs;
  }
}

/* ---- activations ---- */

static const double REF_PI = 3.14159265358979323846;

double ref_act(double x, KAct act) {
  switch (act) {
  case K_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / REF_PI) * (x + 0.044715 * x * x * x)));
  case K_GELU_ERF: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
  case K_RELU: return x > 0.0 ? x : 0.0;
  case K_SILU: return x / (1.0 + exp(-x));
  }
  return NAN;
}

double ref_act_grad(double x, KAct act) {
  switch (act) {
  case K_GELU_TANH: {
    double u = sqrt(2.0 / REF_PI) * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * sqrt(2.0 / REF_PI) * (1.0 + 3.0 * 0.044715 * x * x);
  }
  case K_GELU_ERF: return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * REF_PI);
  case K_RELU: return x > 0.0 ? 1.0 : 0.0;
  case K_SILU: {
    double s = 1.0 / (1.0 + exp(-x));
    return s + x * s * (1.0 - s);
  }
  }
  return NAN;
}

/* ---- softmax ---- */

void ref_softmax_forward(double *out, const double *inp, int N, int C) {
  for (int n = 0; n < N; n++) {
    const double *x = inp + n * C;
    double m = -INFINITY, s = 0.0;
    for (int c = 0; c < C; c++) m = x[c] > m ? x[c] : m;
    for (int c = 0; c < C; c++) s += exp(x[c] - m);
    for (int c = 0; c < C; c++) out[n * C + c] = exp(x[c] - m) / s;
  }
}

/* d y_j / d x_i = y_j (delta_ij - y_i) */
void ref_softmax_backward(double *dinp, const double *dout, const double *out, int N, int C) {
  for (int n = 0; n < N; n++) {
    const double *y = out + n * C, *d = dout + n * C;
    for (int i = 0; i < C; i++) {
      double g = 0.0;
      for (int j = 0; j < C; j++) g += d[j] * y[j] * ((i == j) - y[i]);
      dinp[n * C + i] = g;
    }
  }
}

/* ---- attention ---- */

/* P (T, Tk) of head h of batch b: softmax of scaled scores, zero where masked */
static void ref_attention_probs(double *P, const double *q, const double *k, const KAttn *a, int b, int h) {
  int hk = h / (a->NH / a->NH_kv);
  double scale = 1.0 / sqrt((double)a->HS);
  for (int t = 0; t < a->T; t++) {
    double *p = P + t * a->Tk, m = -INFINITY, s = 0.0;
    const double *qt = q + (b * a->T + t) * a->q_stride + h * a->HS;
    for (int j = 0; j < a->Tk; j++) {
      const double *kj = k + (b * a->Tk + j) * a->kv_stride + hk * a->HS;
      double dot = 0.0;
      for (int d = 0; d < a->HS; d++) dot += qt[d] * kj[d];
      p[j] = (a->causal && j > t) ? -INFINITY : dot * scale;
      m = p[j] > m ? p[j] : m;
    }
    for (int j = 0; j < a->Tk; j++) s += (p[j] = exp(p[j] - m));
    for (int j = 0; j < a->Tk; j++) p[j] /= s;
  }
}

void ref_attention_forward(double *out, double *lse, const double *q, const double *k, const double *v,
                           const KAttn *a) {
  double *P = ref_alloc((long)a->T * a->Tk);
  double scale = 1.0 / sqrt((double)a->HS);
  for (int b = 0; b < a->B; b++)
    for (int h = 0; h < a->NH; h++) {
      int hk = h / (a->NH / a->NH_kv);
      ref_attention_probs(P, q, k, a, b, h);
      for (int t = 0; t < a->T; t++) {
        for (int d = 0; d < a->HS; d++) {
          double s = 0.0;
          for (int j = 0; j < a->Tk; j++) s += P[t * a->Tk + j] * v[(b * a->Tk + j) * a->kv_stride + hk * a->HS + d];
          out[(b * a->T + t) * a->out_stride + h * a->HS + d] = s;
        }
        /* lse = log sum_j exp(score_j), straight from the definition */
        const double *qt = q + (b * a->T + t) * a->q_stride + h * a->HS;
        double m = -INFINITY, s = 0.0;
        int nk = a->causal ? t + 1 : a->Tk;
        for (int pass = 0; pass < 2; pass++)
          for (int j = 0; j < nk; j++) {
            const double *kj = k + (b * a->Tk + j) * a->kv_stride + hk * a->HS;
            double dot = 0.0;
            for (int d = 0; d < a->HS; d++) dot += qt[d] * kj[d];
            if (pass == 0) m = dot * scale > m ? dot * scale : m;
            else s += exp(dot * scale - m);
          }
        lse[(b * a->NH + h) * a->T + t] = m + log(s);
      }
    }
  free(P);
}

/* O = P V, P = softmax(S), S = scale Q K^T:
 * dV = P^T dO; dP = dO V^T; dS = P * (dP - rowsum(dP * P)); dQ = scale dS K; dK = scale dS^T Q */
void ref_attention_backward(double *dq, double *dk, double *dv, const double *dout, const double *q, const double *k,
                            const double *v, const KAttn *a) {
  int T = a->T, Tk = a->Tk, HS = a->HS;
  double *P = ref_alloc((long)T * Tk), *dP = ref_alloc((long)T * Tk);
  double scale = 1.0 / sqrt((double)HS);
  for (int b = 0; b < a->B; b++) {
    for (int j = 0; j < Tk; j++)
      for (int d = 0; d < a->NH_kv * HS; d++) {
        dk[(b * Tk + j) * a->kv_stride + d] = 0.0;
        dv[(b * Tk + j) * a->kv_stride + d] = 0.0;
      }
    for (int h = 0; h < a->NH; h++) {
      int hk = h / (a->NH / a->NH_kv);
      ref_attention_probs(P, q, k, a, b, h);
      for (int t = 0; t < T; t++) {
        const double *dot = dout + (b * T + t) * a->out_stride + h * HS;
        double rs = 0.0;
        for (int j = 0; j < Tk; j++) {
          const double *vj = v + (b * Tk + j) * a->kv_stride + hk * HS;
          double s = 0.0;
          for (int d = 0; d < HS; d++) s += dot[d] * vj[d];
          dP[t * Tk + j] = s;
          rs += s * P[t * Tk + j];
        }
        for (int j = 0; j < Tk; j++) dP[t * Tk + j] = P[t * Tk + j] * (dP[t * Tk + j] - rs); /* now dS */
      }
      for (int t = 0; t < T; t++)
        for (int d = 0; d < HS; d++) {
          double s = 0.0;
          for (int j = 0; j < Tk; j++) s += dP[t * Tk + j] * k[(b * Tk + j) * a->kv_stride + hk * HS + d];
          dq[(b * T + t) * a->q_stride + h * HS + d] = scale * s;
        }
      for (int j = 0; j < Tk; j++)
        for (int d = 0; d < HS; d++) {
          double sk = 0.0, sv = 0.0;
          for (int t = 0; t < T; t++) {
            sk += dP[t * Tk + j] * q[(b * T + t) * a->q_stride + h * HS + d];
            sv += P[t * Tk + j] * dout[(b * T + t) * a->out_stride + h * HS + d];
          }
          dk[(b * Tk + j) * a->kv_stride + hk * HS + d] += scale * sk;
          dv[(b * Tk + j) * a->kv_stride + hk * HS + d] += sv;
        }
    }
  }
  free(P);
  free(dP);
}

/* ---- cross-entropy ---- */

void ref_crossentropy(double *losses, double *dlogits, const double *logits, const int32_t *targets, int N, int V,
                      double scale) {
  for (int n = 0; n < N; n++) {
    const double *x = logits + (long)n * V;
    int tg = targets[n];
    if (tg < 0) {
      losses[n] = 0.0;
      if (dlogits)
        for (int i = 0; i < V; i++) dlogits[(long)n * V + i] = 0.0;
      continue;
    }
    double m = -INFINITY, s = 0.0;
    for (int i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < V; i++) s += exp(x[i] - m);
    double lse = m + log(s);
    losses[n] = lse - x[tg];
    if (dlogits)
      for (int i = 0; i < V; i++) dlogits[(long)n * V + i] = (exp(x[i] - lse) - (i == tg)) * scale;
  }
}

/* ---- AdamW ---- */

void ref_adamw(double *param, const double *grad, double *m, double *v, long n, double lr, double beta1,
               double beta2, double eps, double weight_decay, int t) {
  for (long i = 0; i < n; i++) {
    param[i] *= 1.0 - lr * weight_decay; /* torch: p.mul_(1 - lr * wd) first */
    m[i] = beta1 * m[i] + (1.0 - beta1) * grad[i];
    v[i] = beta2 * v[i] + (1.0 - beta2) * grad[i] * grad[i];
    double mhat = m[i] / (1.0 - pow(beta1, t)), vhat = v[i] / (1.0 - pow(beta2, t));
    param[i] -= lr * mhat / (sqrt(vhat) + eps);
  }
}

/* ---- Philox and the dropout mask ---- */

void ref_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]}, k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0, n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1, n3 = (uint32_t)p0;
    c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  memcpy(out, c, sizeof c);
}

int ref_dropout_keep(long i, float p, uint64_t seed, uint64_t offset) {
  if (p <= 0.0f) return 1;
  if (p >= 1.0f) return 0;
  uint64_t g = offset + (uint64_t)(i / 4);
  uint32_t ctr[4] = {(uint32_t)g, (uint32_t)(g >> 32), 0, 0}, key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, r[4];
  ref_philox4x32_10(ctr, key, r);
  return (uint64_t)r[i % 4] >= (uint64_t)((double)p * 4294967296.0);
}
