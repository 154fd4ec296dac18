/* files.h — writing a whole file so that a crash or a full disk never
 * leaves a half-written one: the bytes go to a temporary file beside it,
 * which is flushed and fsync'ed, renamed over the destination, and the
 * folder fsync'ed. On error nothing is left behind and an existing file is
 * untouched.
 */
#ifndef PIPEC_FILES_H
#define PIPEC_FILES_H
#include <stddef.h>

/* 0, or -1 with "cannot write PATH: REASON" in err. */
int file_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

/* The same for a file made of pieces, written one after the other. Errors
 * name the file and the step: "PATH: cannot create TMP: REASON",
 * "PATH: write|fsync|close|rename of TMP failed: REASON", "PATH: written,
 * but syncing its directory failed: REASON". fail_after >= 0 (tests only)
 * makes the write fail after that many bytes ("PATH: write failed:
 * simulated write failure"); pass -1. */
typedef struct FilePiece {
  const void *data;
  size_t len;
} FilePiece;
int file_write_pieces(const char *path, const FilePiece *p, size_t n, long long fail_after, char *err, size_t errlen);

/* write(2) all n bytes (EINTR and short writes retried); 0, or -1 with errno. */
int file_write_all(int fd, const void *data, size_t n);
/* fsync the folder holding path, so a rename into it is durable; 0 or -1. */
int file_fsync_dir(const char *path);
/* The whole of path, NUL-terminated (*len bytes without the NUL; len may be
 * NULL), or NULL with errno. Free it. */
char *file_read_all(const char *path, size_t *len);

#endif
