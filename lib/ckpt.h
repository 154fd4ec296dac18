/* ckpt.h — pipec checkpoints and the weight files a model loads from,
 * shared by the stage runtime (init, resume) and `pipec merge`.
 *
 * A pipec checkpoint (docs/design.md, "Checkpoints"): SAVE_DIR/step-<s>/
 * holds model-pp<k>-tp<t>.safetensors and optim-pp<k>-tp<t>.safetensors per
 * (pipeline rank k, tp rank t): F32 tensors named by the pipec parameter
 * name (optimizer state: <name>.m, <name>.v), this tp rank's shard. The
 * __metadata__ has format "pipec-checkpoint-1", model, step, tp, pp,
 * pp_rank, tp_rank, optimizer, and per tensor "shard:<tensor>" =
 * "<none|rows|cols|qkv> <full_rows> <full_cols> <q_rows> <kv_rows>", all a
 * reader needs to put the whole tensor back together in any layout.
 */
#ifndef PIPEC_CKPT_H
#define PIPEC_CKPT_H
#include <stddef.h>
#include <stdint.h>

#define CK_FORMAT "pipec-checkpoint-1"

enum { CK_PIPEC, CK_HF, CK_LLMC };

typedef struct CkSource CkSource;

/* path: a pipec checkpoint folder (SAVE_DIR: its highest complete step-<s>;
 * or a step-<s> folder itself), an llm.c checkpoint (magic 20240326,
 * version 3 = fp32), or a safetensors file with Hugging Face GPT-2 names
 * (with or without "transformer.", Conv1D weights [in, out]). Everything
 * is checked; NULL with one line in err naming the file. */
CkSource *ck_open(const char *path, char *err, size_t errlen);
void ck_close(CkSource *s);
int ck_kind(const CkSource *s);
const char *ck_where(const CkSource *s); /* the file or the step folder read */
/* a pipec checkpoint's metadata (model, step, optimizer, tp, pp); NULL otherwise */
const char *ck_meta(const CkSource *s, const char *key);

/* The whole parameter `name` (pipec name; "<name>.m" / ".v" for optimizer
 * state, pipec checkpoints only), full_rows x max(full_cols, 1) floats, in
 * pipec's layout ([out, in] weights). -1 with a message naming the file and
 * the tensor when it is missing or its shape or dtype is wrong. */
int ck_get(CkSource *s, const char *name, int64_t full_rows, int64_t full_cols, float *full, char *err, size_t errlen);

/* The highest complete step-<s> folder in dir (leftover step-<s>.tmp are
 * not complete): 1 with its path in out and s in *step, 0 when none. */
int ck_find_latest(const char *dir, char *out, size_t n, long *step);

/* pipec merge: the checkpoint (a SAVE_DIR or a step-<s> folder) as one
 * Hugging Face GPT-2 safetensors file, written atomically; out is not
 * touched on any error. 0, or -1 with the reason. */
int ck_merge(const char *dir, const char *out, char *err, size_t errlen);

#endif
