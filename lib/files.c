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
  const char *p = data;
  int e = 0;
  for (size_t done = 0; done < len && !e;) {
    ssize_t k = write(fd, p + done, len - done);
    if (k < 0 && errno != EINTR) e = errno;
    else if (k > 0) done += (size_t)k;
  }
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
  /* make the rename itself durable */
  char *dir = xstrdup(path), *slash = strrchr(dir, '/');
  if (slash) *(slash == dir ? slash + 1 : slash) = 0;
  int dfd = open(slash ? dir : ".", O_RDONLY);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  free(dir);
  return 0;
}
