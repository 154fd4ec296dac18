/* xalloc.h — allocation that never returns NULL, and one-line error
 * messages, for the code outside an Arena (file formats, schedules, the
 * runtime). Out of memory prints "pipec: out of memory (...)" and exits
 * with status 3, as arena_alloc does: there is nothing better to do.
 */
#ifndef PIPEC_XALLOC_H
#define PIPEC_XALLOC_H
#include <stddef.h>

void *xcalloc(size_t n, size_t size);          /* zeroed; n or size 0 gives a valid pointer */
void *xrealloc(void *p, size_t n, size_t size); /* room for n items of size bytes */
char *xstrdup(const char *s);
/* Formats into err (when err is not NULL and errlen > 0). */
void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
