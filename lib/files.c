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

int file_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
  size_t n = strlen(path);
  char *tmp = xcalloc(n + 16, 1);
  snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    errf(err, errlen, "cannot create a temporary file beside %s: %s", path, strerror(errno));
    free(tmp);
    return -1;
  }
  (void)fchmod(fd, 0644);
  int e = file_write_all(fd, data, len) ? errno : 0;
  if (!e && fsync(fd)) e = errno;
  if (close(fd) && !e) e = errno;
  if (!e && rename(tmp, path)) e = errno;
  if (e) {
    errf(err, errlen, "cannot write %s: %s", path, strerror(e));
    unlink(tmp);
    free(tmp);
    return -1;
  }
  free(tmp);
  (void)file_fsync_dir(path); /* make the rename itself durable */
  return 0;
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
