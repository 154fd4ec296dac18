/* params.c — see params.h. */
#include "lib/params.h"

#include <math.h>
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

void param_shard_copy(const ParamShape *p, int tp, int rank, const float *full, float *part) {
  int64_t fc = p->full_cols ? p->full_cols : 1;
  switch (p->shard) {
  case PSHARD_NONE: memcpy(part, full, sizeof(float) * (size_t)(p->full_rows * fc)); break;
  case PSHARD_ROWS: memcpy(part, full + p->rows * rank * fc, sizeof(float) * (size_t)(p->rows * fc)); break;
  case PSHARD_COLS:
    for (int64_t r = 0; r < p->rows; r++) memcpy(part + r * p->cols, full + r * fc + p->cols * rank, sizeof(float) * (size_t)p->cols);
    break;
  case PSHARD_QKV: {
    int64_t q = p->q_rows / tp, kv = p->kv_rows / tp;
    memcpy(part, full + q * rank * fc, sizeof(float) * (size_t)(q * fc));
    memcpy(part + q * fc, full + (p->q_rows + kv * rank) * fc, sizeof(float) * (size_t)(kv * fc));
    memcpy(part + (q + kv) * fc, full + (p->q_rows + p->kv_rows + kv * rank) * fc, sizeof(float) * (size_t)(kv * fc));
    break;
  }
  }
}
