/* arena.h — bump allocator owned by one compilation.
 *
 * Contract: everything the front end allocates (tokens, AST, values, the
 * checked model) comes from one Arena and is released by one arena_free().
 * Allocation never returns NULL: running out of memory is reported on stderr
 * and the process exits with status 3 (there is nothing else a compiler can
 * do), so callers never check.
 */
#ifndef PIPEC_ARENA_H
#define PIPEC_ARENA_H
#include <stddef.h>

typedef struct ArenaChunk ArenaChunk;
typedef struct Arena {
  ArenaChunk *head; /* newest chunk first */
} Arena;

void *arena_alloc(Arena *a, size_t n);             /* zeroed, 16-byte aligned */
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_strdup(Arena *a, const char *s);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(Arena *a);

/* Growable array of pointers that lives in an arena (old storage is simply
 * abandoned to the arena when it grows). */
typedef struct PtrVec {
  void **items;
  int len, cap;
} PtrVec;
void ptrvec_push(Arena *a, PtrVec *v, void *p);

#endif
