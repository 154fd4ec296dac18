/* main.c — the pipec command line. Exit status: 0 success, 1 errors in the
 * input, 2 usage errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compiler/frontend.h"
#include "version.h"

static void usage(FILE *out) {
  fputs("usage: pipec [options] FILE.pipe\n"
        "\n"
        "Compiles a .pipe model description into one executable per pipeline stage.\n"
        "\n"
        "options:\n"
        "  --check              check the file (syntax, names, sizes, placement, parallel\n"
        "                       and train settings), report every error, and stop\n"
        "  --dump-model         print the checked model: modules, parameters, stages\n"
        "  --world-size N       the number of ranks the job runs on; dp = auto is derived\n"
        "                       from it, and a plan needing another number is an error\n"
        "  --import-dir DIR     also look for imported .pipe files in DIR (repeatable)\n"
        "  --max-errors N       stop printing after N errors (default 50, 0 = all)\n"
        "  -o DIR               write the stage executables to DIR\n"
        "  -h, --help           show this help\n"
        "  --version            show the version\n"
        "\n"
        "examples:\n"
        "  pipec --check models/gpt2.pipe\n"
        "  pipec --dump-model models/gpt2-tiny.pipe\n"
        "\n"
        "Documentation: docs/language.md\n",
        out);
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "pipec: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'pipec --help' for more information.\n");
  return 2;
}

static int parse_count(const char *s, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 0 || v > 1 << 24) return 0;
  *out = (int)v;
  return 1;
}

int main(int argc, char **argv) {
  const char *file = NULL, *outdir = NULL;
  int check = 0, dump = 0, max_errors = 50;
  FrontendOptions opt = {0};
  const char *dirs[argc + 1];
  int ndirs = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    const char *eq = strchr(a, '=');
    char key[64] = "";
    if (!strncmp(a, "--", 2) && eq && eq - a < 63) {
      memcpy(key, a, (size_t)(eq - a));
      key[eq - a] = 0;
      val = eq + 1;
      a = key;
    }
#define NEED_VALUE()                                                           \
  do {                                                                         \
    if (!val) {                                                                \
      if (i + 1 >= argc) return usage_error("option '%s' needs a value", a);   \
      val = argv[++i];                                                         \
    }                                                                          \
  } while (0)
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--version")) {
      printf("pipec %s\n", PIPEC_VERSION);
      return 0;
    } else if (!strcmp(a, "--check")) check = 1;
    else if (!strcmp(a, "--dump-model")) dump = 1;
    else if (!strcmp(a, "--world-size")) {
      NEED_VALUE();
      if (!parse_count(val, &opt.world_size) || opt.world_size < 1) return usage_error("--world-size needs a positive integer, not '%s'", val);
    } else if (!strcmp(a, "--max-errors")) {
      NEED_VALUE();
      if (!parse_count(val, &max_errors)) return usage_error("--max-errors needs a non-negative integer, not '%s'", val);
    } else if (!strcmp(a, "--import-dir")) {
      NEED_VALUE();
      dirs[ndirs++] = val;
    } else if (!strcmp(a, "-o")) {
      NEED_VALUE();
      outdir = val;
    } else if (a[0] == '-' && a[1]) {
      return usage_error("unknown option '%s'", a);
    } else if (file) {
      return usage_error("one input file at a time; got a second, '%s'", a);
    } else
      file = a;
  }
  if (!file) return usage_error("%s", "no input file");
  dirs[ndirs] = NULL;
  opt.import_dirs = dirs;

  Arena arena = {0};
  Diag diag = {.out = stderr, .max_errors = max_errors};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  Program *p = pipe_frontend(&arena, &diag, file, NULL, 0, &opt);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int status = 0;
  if (!p) {
    fprintf(stderr, "pipec: %d error%s in %s\n", diag.errors, diag.errors == 1 ? "" : "s", file);
    status = 1;
  } else if (dump) {
    program_dump(stdout, p);
  } else if (check) {
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("%s: ok (model %s, %lld parameters, %d ranks: dp %d x tp %d x pp %d; checked in %.1f ms)\n", file, p->model_name,
           (long long)p->nparams, p->world, p->dp, p->tp, p->pp, ms);
  } else {
    (void)outdir;
    fprintf(stderr, "pipec: %s checks out, but this build of pipec has no code generator yet; "
                    "use --check or --dump-model\n", file);
    status = 2;
  }
  arena_free(&arena);
  return status;
}
