/* files.c — see files.h. */
#include "lib/files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/xalloc.h"

/* The pieces into a temporary file beside path (its name in tmp), fsync,
   rename, folder fsync. 0; or -1 with errno and *step naming what failed
   ("create", "write", "fsync", "close", "rename", or "folder" when only the
   folder's fsync did, after the rename); -2 when fail_after (>= 0) bytes
   were written (a test's simulated failure). Nothing is left behind on a
   failure before the rename. */
static int write_pieces(const char *path, const FilePiece *p, size_t n, long long fail_after, const char **step, char *tmp,
                        size_t tmplen) {
  snprintf(tmp, tmplen, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) return *step = "create", -1;
  (void)fchmod(fd, 0644);
  int rc = 0;
  long long written = 0;
  *step = "write";
  for (size_t i = 0; i < n && !rc; i++) {
    size_t len = p[i].len;
    if (fail_after >= 0 && written + (long long)len > fail_after) len = (size_t)(fail_after - written), rc = -2;
    if (file_write_all(fd, p[i].data, len)) rc = -1;
    written += (long long)len;
  }
  int e = rc == -2 ? EIO : errno;
  if (!rc && fsync(fd)) rc = -1, e = errno, *step = "fsync";
  if (close(fd) && !rc) rc = -1, e = errno, *step = "close";
  if (!rc && rename(tmp, path)) rc = -1, e = errno, *step = "rename";
  if (rc) {
    unlink(tmp);
    errno = e;
    return rc;
  }
  if (file_fsync_dir(path)) return *step = "folder", -1;
  return 0;
}

int file_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
  size_t n = strlen(path) + 16;
  char *tmp = xcalloc(n, 1);
  const char *step;
  FilePiece one = {data, len};
  int rc = write_pieces(path, &one, 1, -1, &step, tmp, n);
  if (rc && !strcmp(step, "create")) errf(err, errlen, "cannot create a temporary file beside %s: %s", path, strerror(errno));
  else if (rc && strcmp(step, "folder")) errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
  else rc = 0; /* the folder's fsync makes the rename durable; the file itself is complete either way */
  free(tmp);
  return rc;
}

int file_write_pieces(const char *path, const FilePiece *p, size_t n, long long fail_after, char *err, size_t errlen) {
  size_t len = strlen(path) + 16;
  char *tmp = xcalloc(len, 1);
  const char *step;
  int rc = write_pieces(path, p, n, fail_after, &step, tmp, len);
  if (rc == -2) errf(err, errlen, "%s: write failed: simulated write failure", path);
  else if (rc && !strcmp(step, "create")) errf(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
  else if (rc && !strcmp(step, "folder")) errf(err, errlen, "%s: written, but syncing its directory failed: %s", path, strerror(errno));
  else if (rc) errf(err, errlen, "%s: %s of %s failed: %s", path, step, tmp, strerror(errno));
  free(tmp);
  return rc ? -1 : 0;
}

int file_write_all(int fd, const void *data, size_t n) {
  const char *s = data;
  while (n) {
    ssize_t k = write(fd, s, n > (1u << 30) ? (1u << 30) : n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    s += k, n -= (size_t)k;
  }
  return 0;
}

int file_fsync_dir(const char *path) {
  char *dir = xstrdup(path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) slash[1] = 0;
  else if (slash) *slash = 0;
  else strcpy(dir, ".");
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

char *file_read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t n = 0, cap = 1 << 16;
  char *b = xcalloc(cap + 1, 1);
  for (size_t k; (k = fread(b + n, 1, cap - n, f)) > 0;)
    if ((n += k) == cap) b = xrealloc(b, (cap *= 2) + 1, 1);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(b);
    errno = EIO;
    return NULL;
  }
  b[n] = 0;
  if (len) *len = n;
  return b;
}
