/* check.h — the assertion macro of pipec's C tests. CHECK(cond, fmt, ...)
 * counts a pass or prints the failure with its line (the first 40); end a
 * test with `return check_summary();`, which prints "N passed, M failed". */
#ifndef PIPEC_TESTS_CHECK_H
#define PIPEC_TESTS_CHECK_H
#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (cond) check_passed++;                              \
    else if (++check_failed <= 40) {                       \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
      printf(__VA_ARGS__);                                 \
      printf("\n");                                        \
    }                                                      \
  } while (0)

static inline int check_summary(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  return check_failed != 0;
}

#endif
