/* params.c — see params.h. */
#include "lib/params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint64_t mix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return ((double)(mix(s) >> 11) + 0.5) / 9007199254740992.0; }

void param_init_full(float *w, const char *name, int64_t full_rows, int64_t full_cols, int index, uint64_t seed) {
  int64_t n = full_rows * (full_cols ? full_cols : 1);
  size_t len = strlen(name);
  int is_bias = len >= 4 && !strcmp(name + len - 4, "bias");
  if (!full_cols) {
    for (int64_t k = 0; k < n; k++) w[k] = is_bias ? 0.0f : 1.0f;
    return;
  }
  uint64_t s = seed ^ (0x51ED270B27A3Bull * (uint64_t)(index + 1));
  for (int64_t k = 0; k < n; k++) {
    double u1 = unif(&s), u2 = unif(&s);
    w[k] = (float)(0.02 * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
  }
}

/* one loop for both directions: to_full copies part -> full, else full -> part */
static void shard_move(const ParamShape *p, int tp, int rank, float *full, float *part, int to_full) {
#define MOVE(f, q, n) (to_full ? memcpy((f), (q), sizeof(float) * (size_t)(n)) : memcpy((q), (f), sizeof(float) * (size_t)(n)))
  int64_t fc = p->full_cols ? p->full_cols : 1;
  switch (p->shard) {
  case PSHARD_NONE: MOVE(full, part, p->full_rows * fc); break;
  case PSHARD_ROWS: MOVE(full + p->rows * rank * fc, part, p->rows * fc); break;
  case PSHARD_COLS:
    for (int64_t r = 0; r < p->rows; r++) MOVE(full + r * fc + p->cols * rank, part + r * p->cols, p->cols);
    break;
  case PSHARD_QKV: {
    int64_t q = p->q_rows / tp, kv = p->kv_rows / tp;
    MOVE(full + q * rank * fc, part, q * fc);
    MOVE(full + (p->q_rows + kv * rank) * fc, part + q * fc, kv * fc);
    MOVE(full + (p->q_rows + p->kv_rows + kv * rank) * fc, part + (q + kv) * fc, kv * fc);
    break;
  }
  }
#undef MOVE
}

void param_shard_copy(const ParamShape *p, int tp, int rank, const float *full, float *part) {
  shard_move(p, tp, rank, (float *)full, part, 0);
}
void param_shard_merge(const ParamShape *p, int tp, int rank, const float *part, float *full) {
  shard_move(p, tp, rank, full, (float *)part, 1);
}

const char *param_hf_name(const char *name, char *buf, size_t n, int *conv1d) {
  static const char *const conv[] = {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"};
  int layer, pos = 0;
  *conv1d = 0;
  if (sscanf(name, "layers.%d.%n", &layer, &pos) == 1 && pos > 0) {
    snprintf(buf, n, "h.%d.%s", layer, name + pos);
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof conv / sizeof *conv; i++)
      if (len > strlen(conv[i]) && !strcmp(name + len - strlen(conv[i]), conv[i])) *conv1d = 1;
  } else snprintf(buf, n, "%s", name);
  return buf;
}
