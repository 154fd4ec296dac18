/* nvrtc.h — compiling CUDA C to cubin or PTX with NVRTC, loaded at run time.
 *
 * Contract: pipec builds and runs without CUDA. libnvrtc is opened with
 * dlopen on first use ($PIPEC_CUDA_HOME/lib64 first when set, then
 * libnvrtc.so, libnvrtc.so.13, libnvrtc.so.12 on the loader's path, then
 * /usr/local/cuda/lib64); nothing here needs a GPU or a driver.
 * PIPEC_NO_NVRTC=1 makes it unavailable (to test the path without CUDA).
 *
 * The caller passes the whole translation unit as text (pipec embeds the
 * headers of kernels/ in its binary; kernels/common.cuh says how a unit is
 * put together), so nothing is read from the source tree at run time.
 * Every compile gets these options, then the caller's extra_opts:
 *   --gpu-architecture=<arch>  "sm_80", "sm_90" (a cubin) or "compute_90"
 *                              (PTX, which the driver compiles for any
 *                              newer GPU)
 *   -default-device  -std=c++17
 *   -I<cuda>/include           for cuda_bf16.h, which NVRTC 13 does not
 *                              build in. <cuda> is $PIPEC_CUDA_HOME, else
 *                              the toolkit libnvrtc was loaded from, else
 *                              /usr/local/cuda.
 * and never --use_fast_math: the kernels are tested against fp32/fp64 CPU
 * references, so expf, tanhf, erff, division and sqrt stay IEEE-accurate
 * and denormals are kept.
 *
 * Return values: 0 success; -1 the source does not compile (log holds
 * NVRTC's log, each "<name>(LINE): error ..." line followed by
 * "  LINE | <that line of the source>"); -2 anything else (no NVRTC, a bad
 * arch, out of memory), with the reason in log.
 *
 * Not thread-safe on the first call (which loads the library): call
 * nvrtc_available() once before compiling from several threads.
 */
#ifndef PIPEC_NVRTC_H
#define PIPEC_NVRTC_H
#include <stddef.h>

typedef struct NvrtcOutput {
  unsigned char *data; /* cubin (an ELF image) or PTX text; always followed by a NUL byte */
  size_t size;         /* bytes, without that NUL */
  int is_ptx;          /* 1 for a compute_XX arch */
  int from_cache;      /* 1 when nvrtc_compile_cached found it on disk */
} NvrtcOutput;

/* 1 if libnvrtc can be loaded (and is loaded now); else 0 with the reason in why. */
int nvrtc_available(char *why, size_t n);
/* NVRTC's version; 0 on success, -1 when it is not available */
int nvrtc_version(int *major, int *minor);

/* Compile source (named `name` in messages, e.g. "layernorm.cu") for arch.
 * extra_opts is NULL or a NULL-terminated list. On success out owns a
 * malloc'd image (free with nvrtc_output_free) and log holds NVRTC's
 * warnings, if any. log may be NULL. */
int nvrtc_compile(const char *name, const char *source, const char *arch, const char *const *extra_opts,
                  NvrtcOutput *out, char *log, size_t loglen);

/* nvrtc_compile through an on-disk cache keyed by a 64-bit FNV-1a hash of
 * (NVRTC version, arch, all options, name, source). The directory is
 * $PIPEC_CACHE_DIR, else $XDG_CACHE_HOME/pipec/nvrtc, else
 * ~/.cache/pipec/nvrtc (created if missing). Files are written to a
 * temporary name and renamed, so readers never see half a file; a file
 * that is short, corrupt or for another key is ignored and rewritten.
 * Failed compiles are not cached. If the cache cannot be used, this is
 * nvrtc_compile. */
int nvrtc_compile_cached(const char *name, const char *source, const char *arch, const char *const *extra_opts,
                         NvrtcOutput *out, char *log, size_t loglen);

/* The file nvrtc_compile_cached uses for these arguments; 0 on success. */
int nvrtc_cache_path(const char *name, const char *source, const char *arch, const char *const *extra_opts, char *path,
                     size_t n);

/* How many times this process has run NVRTC's compiler (cache hits do not count). */
long nvrtc_compile_count(void);

void nvrtc_output_free(NvrtcOutput *out);

#endif
