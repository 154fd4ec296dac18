/* safetensors.h — Hugging Face safetensors files, read and written.
 *
 * The format: a u64 little-endian header length N, N bytes of UTF-8 JSON
 *     {"__metadata__": {"k": "v", ...},
 *      "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...}
 * then the data region; offsets are relative to byte 8 + N, tensors are
 * row-major little-endian.
 *
 * Reader contract (st_open, st_open_mem): the file is mapped read-only and
 * everything is checked before st_open returns, as strictly as the Rust
 * `safetensors` crate: the header length fits the file (and 100 MB); the
 * JSON is well-formed (objects, arrays, strings with every escape including
 * \uXXXX surrogate pairs, valid UTF-8, no U+0000; numbers; true/false/null
 * parse but fit nowhere); `__metadata__`, if present, maps strings to
 * strings; every other key is a tensor with exactly dtype, shape (at most
 * ST_MAX_DIMS non-negative integers) and data_offsets [begin, end]; dtype
 * is one of the crate's (BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16 I32
 * U32 F32 F64 I64 U64); end - begin = product(shape) * dtype size; sorted
 * by offset the tensors lie inside the data region, do not overlap, leave
 * no gap and cover it to its end. Duplicate names and unknown keys are
 * refused. Any failure returns NULL and one line in err naming the file and,
 * where there is one, the tensor:
 *     model.safetensors: tensor 'h.0.attn.c_attn.weight': data_offsets
 *     [0, 9000] exceed the data region (8000 bytes)
 * A tensor's data points into the mapping: aligned to its element size
 * when the writer aligned it (this writer and the Python library do), not
 * otherwise; st_tensor_to_f32 copies and converts regardless.
 *
 * Writer contract (StWriter): tensors are laid out as the Rust crate does
 * (descending dtype order of the list above, then by name with strcmp),
 * `__metadata__` first with keys sorted, compact JSON, the header padded
 * with spaces to a multiple of 8, so output for the same input is byte-for-
 * byte deterministic (and equal to the crate's for tensors without
 * metadata). st_writer_write is atomic: it writes "<path>.tmp.<pid>", then
 * fsync, rename over path, fsync of the directory; on any failure before
 * the rename the temporary file is removed and an existing path is left
 * untouched (a failure to sync the directory after it is reported too,
 * with the new file in place).
 *
 * Little-endian hosts only (x86-64, aarch64). Not thread-safe per object;
 * distinct objects may be used from distinct threads.
 */
#ifndef PIPEC_SAFETENSORS_H
#define PIPEC_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

/* In the Rust crate's order (increasing alignment), which the writer uses. */
typedef enum StDtype {
  ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16,
  ST_BF16, ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64, ST_NDTYPES
} StDtype;

const char *st_dtype_name(StDtype dt);         /* "F32"; "?" when out of range */
size_t st_dtype_size(StDtype dt);              /* bytes per element; 0 when out of range */
int st_dtype_parse(const char *name, StDtype *out); /* 0, or -1 when unknown */

#define ST_MAX_DIMS 8

typedef struct StTensor {
  const char *name;             /* NUL-terminated UTF-8 */
  StDtype dtype;
  int ndim;                     /* 0 = scalar */
  int64_t shape[ST_MAX_DIMS];
  uint64_t begin, end;          /* data_offsets, relative to the data region */
  const void *data;             /* end - begin bytes inside the mapping */
  size_t nbytes;                /* end - begin */
} StTensor;

typedef struct StFile StFile;

/* Maps and checks path. NULL on failure with the reason in err. */
StFile *st_open(const char *path, char *err, size_t errlen);
/* The same over len bytes at buf (borrowed: must outlive the StFile);
 * name is what messages call the file. */
StFile *st_open_mem(const void *buf, size_t len, const char *name, char *err, size_t errlen);
void st_close(StFile *f);

const char *st_path(const StFile *f);
size_t st_count(const StFile *f);                         /* tensors */
const StTensor *st_tensor_at(const StFile *f, size_t i);  /* in data-offset order */
const StTensor *st_find(const StFile *f, const char *name); /* NULL when absent */
int64_t st_numel(const StTensor *t);                      /* product of the shape */

size_t st_meta_count(const StFile *f);                    /* __metadata__ entries, keys sorted */
const char *st_meta_key(const StFile *f, size_t i);
const char *st_meta_value(const StFile *f, size_t i);
const char *st_meta_get(const StFile *f, const char *key); /* NULL when absent */

/* Converts a F32, F16, BF16 or F64 tensor's st_numel elements into out.
 * -1 with a message naming the file and tensor for other dtypes. */
int st_tensor_to_f32(const StFile *f, const StTensor *t, float *out, char *err, size_t errlen);

typedef struct StWriter StWriter;

StWriter *st_writer_new(void);
void st_writer_free(StWriter *w);
/* Adds a tensor; name and shape are copied, data (product(shape) * size
 * bytes; NULL allowed when that is 0) is borrowed until st_writer_write.
 * -1 with a message for an empty, non-UTF-8 or repeated name,
 * "__metadata__", ndim outside 0..ST_MAX_DIMS, a negative dimension or an
 * unknown dtype. */
int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                  const void *data, char *err, size_t errlen);
/* Sets a __metadata__ entry (copied; a repeated key replaces the value).
 * -1 when key or value is not UTF-8. */
int st_writer_set_meta(StWriter *w, const char *key, const char *value, char *err, size_t errlen);
/* Writes the file atomically (see above). 0, or -1 with the reason in err. */
int st_writer_write(StWriter *w, const char *path, char *err, size_t errlen);

/* Test hook: the next st_writer_write calls fail with "simulated write
 * failure" once this many bytes are written (< 0, the default: never). */
void st_test_fail_write_after(long long nbytes);

/* bfloat16 and IEEE half, to and from float. Narrowing rounds to nearest,
 * ties to even; overflow gives infinity; NaN stays NaN (quiet, same sign). */
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);

#endif
