/* tokfile.h — token data files and the training data loader.
 *
 * Files: llm.c's layout — a header of 256 little-endian int32 (magic
 * 20240520, version 1, token count, the rest 0), then count uint16 tokens —
 * or headerless: the whole file is uint16 tokens. TOK_AUTO takes a file as
 * llm.c's when its first int32 is the magic, else as headerless (a
 * headerless file cannot start with the magic unless its first token is
 * 54216, beyond GPT-2's vocabulary). tok_open checks: llm.c files are at
 * least the 1024-byte header, have the magic and version 1, and a count
 * that matches the file size exactly; headerless files have an even size;
 * both hold at least one token. Errors are one line naming the file (and
 * the position for a token out of the vocabulary):
 *     train_000.bin: header says 1000 tokens (3024 bytes) but the file is 3000 bytes
 *     train_000.bin: token 60000 at position 17 (byte 1058) is not below the vocabulary size 50257
 * Files are mapped read-only. tok_write writes either layout atomically
 * ("<path>.tmp.<pid>", fsync, rename, fsync of the directory; on a
 * failure before the rename the temporary is removed and an existing path
 * left untouched).
 *
 * The loader reads the shards a glob(3) pattern matches, sorted by name
 * (strcmp), in batches of B rows of T+1 tokens (inputs and next-token
 * targets) for data-parallel replica d of D. The order, fixed and
 * reproducible:
 *   - shard s holds floor((ntok_s - 1) / (B*T)) batches; its batch j is the
 *     B*T + 1 tokens from token j*B*T (consecutive batches share one token,
 *     as llm.c's loader; row b is tokens [j*B*T + b*T, ... + T]). Leftover
 *     tokens at a shard's end are not used; batches never span shards.
 *   - batches are numbered globally, shard 0's first: g = 0 .. G-1.
 *   - an epoch is S = floor(G / D) steps; at step k (0 <= k < S) replica d
 *     reads global batch k*D + d. The last G - S*D batches are skipped so
 *     every replica takes the same number of steps; the replicas' batches
 *     in an epoch are disjoint and cover batches 0 .. S*D-1.
 *   - after step S-1 the next epoch starts again at batch 0 (no shuffling:
 *     every epoch reads the same batches in the same order).
 * The position (epoch, step) is the same on every replica. tok_loader_tell
 * saves it with a fingerprint of the data and batch shape (B, T, D, each
 * shard's file name and token count); tok_loader_seek restores it, after
 * which the next batches are bitwise those that followed the save, and
 * refuses a position saved for other data or another shape.
 *
 * Little-endian hosts only. A TokLoader is not thread-safe.
 */
#ifndef PIPEC_TOKFILE_H
#define PIPEC_TOKFILE_H
#include <stddef.h>
#include <stdint.h>

#define TOK_MAGIC 20240520
#define TOK_VERSION 1
#define TOK_HEADER_INTS 256
#define TOK_HEADER_BYTES (TOK_HEADER_INTS * 4)

typedef enum TokFormat { TOK_AUTO, TOK_LLMC, TOK_RAW } TokFormat;

typedef struct TokFile {
  char *path;
  const uint16_t *tokens; /* ntok tokens, inside the mapping */
  size_t ntok;
  int has_header;         /* llm.c layout */
  void *map;
  size_t map_len;
} TokFile;

/* Maps and checks path. 0, or -1 with the reason in err (f is then empty). */
int tok_open(TokFile *f, const char *path, TokFormat fmt, char *err, size_t errlen);
void tok_close(TokFile *f);
/* -1 with the first token >= vocab named by position. */
int tok_check_vocab(const TokFile *f, int vocab, char *err, size_t errlen);
/* Writes n tokens, llm.c's layout when header is nonzero (n < 2^31),
 * else headerless; atomic. 0, or -1 with the reason. */
int tok_write(const char *path, const uint16_t *tokens, size_t n, int header, char *err, size_t errlen);

/* The files pattern matches, sorted by strcmp: 0 with *paths (free with
 * tok_glob_free), or -1 ("PATTERN: no file matches"). */
int tok_glob(const char *pattern, char ***paths, size_t *n, char *err, size_t errlen);
void tok_glob_free(char **paths, size_t n);

typedef struct TokPos {
  uint64_t epoch, step;
  uint64_t fingerprint; /* of the shards and B, T, D; set by tok_loader_tell */
} TokPos;

typedef struct TokLoader TokLoader;

/* Opens every shard pattern matches. vocab > 0: each batch's tokens are
 * checked against it as they are read. rank in 0..nranks-1. NULL with the
 * reason when a shard is bad, the arguments are out of range, or the
 * shards hold fewer batches than there are replicas. */
TokLoader *tok_loader_open(const char *pattern, TokFormat fmt, int B, int T, int rank, int nranks, int vocab,
                           char *err, size_t errlen);
void tok_loader_close(TokLoader *L);
/* The next batch: inputs[b*T + t] and targets[b*T + t] (targets are the
 * inputs shifted by one token), B*T entries each; then advances. 0, or -1
 * with the reason (a token out of the vocabulary; the position is then
 * not advanced). */
int tok_loader_next(TokLoader *L, int32_t *inputs, int32_t *targets, char *err, size_t errlen);
TokPos tok_loader_tell(const TokLoader *L);
/* 0, or -1 when pos is from other data or shape, or step is beyond an epoch. */
int tok_loader_seek(TokLoader *L, TokPos pos, char *err, size_t errlen);
uint64_t tok_loader_steps_per_epoch(const TokLoader *L); /* S */
uint64_t tok_loader_batches(const TokLoader *L);         /* G, over all shards */
size_t tok_loader_shard_count(const TokLoader *L);
const TokFile *tok_loader_shard(const TokLoader *L, size_t i);
/* Where global batch g comes from: its shard and first token. -1 if g >= G. */
int tok_loader_locate(const TokLoader *L, uint64_t g, size_t *shard, uint64_t *first_token);

#endif
