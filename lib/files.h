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

/* write(2) all n bytes (EINTR and short writes retried); 0, or -1 with errno. */
int file_write_all(int fd, const void *data, size_t n);
/* fsync the folder holding path, so a rename into it is durable; 0 or -1. */
int file_fsync_dir(const char *path);

#endif
