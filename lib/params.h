/* params.h — a parameter's initial values and its tensor-parallel part,
 * shared by the compiler's reference executor and the stage runtime so that
 * every layout (any tp, pp, dp) starts from the same numbers.
 *
 * Init (GPT-2's): matrices and embeddings N(0, 0.02) from a splitmix64 +
 * Box-Muller stream seeded by (seed, index), where index is the parameter's
 * position in the unsharded op graph; vectors: 1 for norm weights, 0 for
 * names ending in "bias". Always generated over the FULL shape; a
 * tensor-parallel rank then copies its part (param_shard_copy).
 */
#ifndef PIPEC_PARAMS_H
#define PIPEC_PARAMS_H
#include <stddef.h>
#include <stdint.h>

/* How a tensor-parallel rank holds a parameter (same values as ShardKind). */
enum { PSHARD_NONE, PSHARD_ROWS, PSHARD_COLS, PSHARD_QKV };

typedef struct ParamShape {
  int shard;                    /* PSHARD_* */
  int64_t rows, cols;           /* this rank's part; cols 0 for a vector */
  int64_t full_rows, full_cols; /* the whole parameter */
  int64_t q_rows, kv_rows;      /* PSHARD_QKV: full rows of q, of k (= of v) */
} ParamShape;

/* full_rows x max(full_cols, 1) values */
void param_init_full(float *w, const char *name, int64_t full_rows, int64_t full_cols, int index, uint64_t seed);
/* this rank's part of `full` */
void param_shard_copy(const ParamShape *s, int tp, int rank, const float *full, float *part);
/* the inverse: writes this rank's part back into `full` (every rank's part
   together fills it; for PSHARD_NONE any one rank's part is the whole) */
void param_shard_merge(const ParamShape *s, int tp, int rank, const float *part, float *full);

/* The Hugging Face GPT-2 name of a pipec parameter (wte.weight, wpe.weight,
   layers.N.X -> h.N.X, ln_f.X, lm_head.weight; other names unchanged) into
   buf; *conv1d = 1 when the file stores it as a Conv1D weight [in, out], the
   transpose of pipec's [out, in] (attn.c_attn, attn.c_proj, mlp.c_fc,
   mlp.c_proj weights). */
const char *param_hf_name(const char *name, char *buf, size_t n, int *conv1d);

#endif
