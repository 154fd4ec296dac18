/* test_nvrtc.c — every kernel header compiles with NVRTC for sm_80, sm_90
 * (cubins) and compute_90 (PTX) with all its entry points, for fp32 and
 * bf16; the on-disk cache hits and misses when it should and survives
 * damaged files; a broken source reports the offending line.
 *
 *   test_nvrtc KERNELS_DIR [OUT_DIR]
 *
 * OUT_DIR, if given, receives every module as <group>.<arch>.cubin|ptx (for
 * tests/gpu/check_kernels.py). Without NVRTC the test prints why and exits
 * 0, unless PIPEC_REQUIRE_NVRTC is set. The compiles run in a few forked
 * workers that fill a fresh cache; the parent then reads everything back
 * through the cache, which must not run NVRTC once.
 */
#define _GNU_SOURCE /* memmem */
#include "lib/nvrtc.h"
#include "tests/check.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* One module: common.cuh, the deps, <name>.cuh, then the entry macros. */
typedef struct Group {
  const char *name;
  const char *dep;        /* a header needed between common.cuh and this one, or NULL */
  const char *entries[6]; /* entry points, without the _f32 / _bf16 suffix */
  const char *untyped[2]; /* entries with no suffix (PIPEC_<NAME>_UNTYPED_ENTRIES), or none */
} Group;

static const Group groups[] = {
    {"activation", NULL, {"act_forward", "act_backward", "bias_act_forward"}, {NULL}},
    {"layernorm",
     NULL,
     {"layernorm_forward", "residual_layernorm_forward", "layernorm_backward_input", "layernorm_backward_params"},
     {NULL}},
    {"rmsnorm", NULL, {"rmsnorm_forward", "rmsnorm_backward_input", "rmsnorm_backward_params"}, {NULL}},
    {"matmul_epilogue",
     "activation.cuh",
     {"matmul_bias_forward", "matmul_bias_act_forward", "matmul_backward_bias", "matmul_bias_act_backward"},
     {NULL}},
    {"elementwise", NULL, {"add", "mul", "accumulate", "scale", "sub", "scale_copy"}, {NULL}},
    {"dropout", NULL, {"dropout_forward", "dropout_backward"}, {NULL}},
    {"softmax", NULL, {"softmax_forward", "softmax_backward"}, {NULL}},
    {"crossentropy", NULL, {"crossentropy_forward_backward"}, {NULL}},
    {"embedding", NULL, {"embedding_forward", "embedding_backward_wte", "embedding_backward_wpe"}, {"positions", "fill_int"}},
    {"adamw", NULL, {"adamw"}, {NULL}},
    {"reduce", NULL, {"sumsq_partial", "colsum_accumulate"}, {"sumsq_finish"}},
    {"attention", NULL, {"attention_forward", "attention_backward_dq", "attention_backward_dkdv"}, {NULL}},
    {"vocab_parallel",
     NULL,
     {"vp_rowmax", "vp_sumexp", "vp_xent_backward", "vp_embedding_forward", "vp_embedding_backward"},
     {"vp_loss"}},
};
enum { NGROUPS = sizeof groups / sizeof groups[0] };

static const char *const archs[] = {"sm_80", "sm_90", "compute_90"};
enum { NARCHS = 3, NJOBS = NGROUPS * NARCHS, LOG_LEN = 1 << 16 };

static const char *const types[] = {"f32", "bf16"};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static char *read_text(const char *dir, const char *file) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    s = NULL;
  }
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

static void append(char **s, size_t *len, const char *add) {
  size_t n = strlen(add);
  *s = realloc(*s, *len + n + 1);
  memcpy(*s + *len, add, n + 1);
  *len += n;
}

/* The translation unit of group g: headers, then every entry for fp32 and bf16. */
static char *group_source(const char *dir, const Group *g) {
  char header[128], line[256];
  const char *files[3] = {"common.cuh", g->dep, header};
  snprintf(header, sizeof header, "%s.cuh", g->name);
  char *src = NULL;
  size_t len = 0;
  append(&src, &len, "");
  for (int i = 0; i < 3; i++) {
    if (!files[i]) continue;
    char *text = read_text(dir, files[i]);
    CHECK(text != NULL, "cannot read %s/%s", dir, files[i]);
    if (!text) return src;
    append(&src, &len, text);
    append(&src, &len, "\n");
    free(text);
  }
  char upper[64];
  snprintf(upper, sizeof upper, "%s", g->name);
  for (char *p = upper; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
  snprintf(line, sizeof line, "PIPEC_%s_ENTRIES(float, f32)\nPIPEC_%s_ENTRIES(__nv_bfloat16, bf16)\n", upper, upper);
  append(&src, &len, line);
  if (g->untyped[0]) {
    snprintf(line, sizeof line, "PIPEC_%s_UNTYPED_ENTRIES()\n", upper);
    append(&src, &len, line);
  }
  return src;
}

static void module_name(const Group *g, char *buf, size_t n) { snprintf(buf, n, "%s.cu", g->name); }

/* ---- compiling in workers ---------------------------------------------- */

/* Worker w of nw compiles jobs w, w + nw, ... into the cache; seconds[j]
 * gets each compile's time (shared memory). Returns its failure count. */
static int compile_jobs(char **sources, int w, int nw, double *seconds) {
  char *log = malloc(LOG_LEN);
  for (int j = w; j < NJOBS; j += nw) {
    const Group *g = &groups[j / NARCHS];
    const char *arch = archs[j % NARCHS];
    char name[128];
    module_name(g, name, sizeof name);
    NvrtcOutput out;
    double t0 = now();
    int rc = nvrtc_compile_cached(name, sources[j / NARCHS], arch, NULL, &out, log, LOG_LEN);
    seconds[j] = now() - t0;
    CHECK(rc == 0, "%s for %s: rc %d\n%s", name, arch, rc, log);
    if (rc == 0) CHECK(!log[0], "%s for %s compiled with warnings:\n%s", name, arch, log);
    nvrtc_output_free(&out);
  }
  free(log);
  return check_failed;
}

static int has_entry(const NvrtcOutput *o, const char *entry) {
  char want[160];
  if (o->is_ptx)
    snprintf(want, sizeof want, ".entry %s(", entry);
  else
    snprintf(want, sizeof want, "%s", entry); /* the cubin's symbol table */
  return memmem(o->data, o->size, want, strlen(want) + (o->is_ptx ? 0 : 1)) != NULL;
}

static int count_of(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
  return n;
}

/* The image of group g for arch: an ELF cubin for sm_XX, PTX for
 * compute_XX, with every entry point, and 16-byte loads in the PTX. */
static void check_image(const Group *g, const char *arch, const NvrtcOutput *o) {
  int want_ptx = !strncmp(arch, "compute_", 8);
  CHECK(o->is_ptx == want_ptx, "%s %s: is_ptx %d", g->name, arch, o->is_ptx);
  if (!o->is_ptx) {
    const unsigned char *e = o->data;
    CHECK(o->size > 64 && e[0] == 0x7f && e[1] == 'E' && e[2] == 'L' && e[3] == 'F', "%s %s: not an ELF", g->name,
          arch);
    CHECK(o->size > 64 && (e[18] | e[19] << 8) == 190, "%s %s: ELF machine %d, not EM_CUDA (190)", g->name, arch,
          o->size > 64 ? e[18] | e[19] << 8 : -1);
  } else {
    const char *ptx = (const char *)o->data;
    CHECK(strstr(ptx, ".target sm_90") != NULL, "%s %s: PTX without .target sm_90", g->name, arch);
    CHECK(strstr(ptx, "ld.global.v4.") || strstr(ptx, "ld.global.nc.v4."), "%s: no 16-byte loads in the PTX", g->name);
    int n = 0;
    for (int i = 0; i < 6 && g->entries[i]; i++) n += 2;
    for (int i = 0; i < 2 && g->untyped[i]; i++) n++;
    CHECK(count_of(ptx, ".entry pipec_") == n, "%s: %d entry points in the PTX, the test knows %d", g->name,
          count_of(ptx, ".entry pipec_"), n);
  }
  for (int i = 0; i < 6 && g->entries[i]; i++) {
    for (int t = 0; t < 2; t++) {
      char entry[128];
      snprintf(entry, sizeof entry, "pipec_%s_%s", g->entries[i], types[t]);
      CHECK(has_entry(o, entry), "%s %s: no entry point %s", g->name, arch, entry);
    }
  }
  for (int i = 0; i < 2 && g->untyped[i]; i++) {
    char entry[128];
    snprintf(entry, sizeof entry, "pipec_%s", g->untyped[i]);
    CHECK(has_entry(o, entry), "%s %s: no entry point %s", g->name, arch, entry);
  }
}

static void write_image(const char *dir, const Group *g, const char *arch, const NvrtcOutput *o) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s.%s.%s", dir, g->name, arch, o->is_ptx ? "ptx" : "cubin");
  FILE *f = fopen(path, "wb");
  CHECK(f && fwrite(o->data, 1, o->size, f) == o->size, "cannot write %s", path);
  if (f) fclose(f);
}

/* ---- the cache --------------------------------------------------------- */

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* compile src (named like the elementwise module) through the cache for
 * compute_90; returns how many NVRTC runs it took */
static long cached_runs(const char *src, const char *const *opts, NvrtcOutput *out, int *rc) {
  char log[4096];
  long before = nvrtc_compile_count();
  *rc = nvrtc_compile_cached("elementwise.cu", src, "compute_90", opts, out, log, sizeof log);
  CHECK(*rc == 0, "cache test compile failed: %s", log);
  return nvrtc_compile_count() - before;
}

/* base_src: the elementwise module, already in the cache */
static void test_cache(const char *base_src) {
  NvrtcOutput o;
  int rc;
  char path[1200];
  size_t n = strlen(base_src);
  char *src = malloc(n + 64);
  snprintf(src, n + 64, "%s\n__device__ int pipec_cache_test_changed;\n", base_src);

  /* comments do not count (stages whose kernels differ only in the modules
     their comments name share one entry); code, strings and characters do */
  char p1[1200], p2[1200];
  static const char *const same[][2] = {{"int a; /* x */\nint b; // y\n", "int a; /* other\n */int b; // z\n"},
                                        {"int a;\n", "int a;// /* */\n"}};
  static const char *const differ[][2] = {{"const char *s = \"//a\";\n", "const char *s = \"//b\";\n"},
                                          {"const char *s = \"/*\\\"*/ x\";\n", "const char *s = \"/*\\\"*/ y\";\n"},
                                          {"char c = '/'; int a;\n", "char c = '/'; int b;\n"},
                                          {"int a; /* x */\nint b;\n", "int a; /* x */ int b;\n"}};
  for (int i = 0; i < 2; i++)
    CHECK(nvrtc_cache_path("k.cu", same[i][0], "sm_90", NULL, p1, sizeof p1) == 0 &&
              nvrtc_cache_path("k.cu", same[i][1], "sm_90", NULL, p2, sizeof p2) == 0 && !strcmp(p1, p2),
          "sources differing in comments only must share a cache entry (case %d)", i);
  for (int i = 0; i < 4; i++)
    CHECK(nvrtc_cache_path("k.cu", differ[i][0], "sm_90", NULL, p1, sizeof p1) == 0 &&
              nvrtc_cache_path("k.cu", differ[i][1], "sm_90", NULL, p2, sizeof p2) == 0 && strcmp(p1, p2),
          "sources differing in code, strings or lines must not share a cache entry (case %d)", i);

  CHECK(cached_runs(base_src, NULL, &o, &rc) == 0 && o.from_cache, "the unchanged source must hit");
  nvrtc_output_free(&o);
  double t0 = now();
  CHECK(cached_runs(src, NULL, &o, &rc) == 1 && !o.from_cache, "a changed source must miss");
  double miss = now() - t0;
  size_t size = o.size;
  nvrtc_output_free(&o);
  t0 = now();
  CHECK(cached_runs(src, NULL, &o, &rc) == 0 && o.from_cache && o.size == size, "the same source again must hit");
  double hit = now() - t0;
  nvrtc_output_free(&o);
  printf("cache: miss %.3f s (NVRTC), hit %.4f s\n", miss, hit);

  const char *const opts[] = {"-DPIPEC_TEST_OPTION=1", NULL};
  CHECK(cached_runs(src, opts, &o, &rc) == 1, "another option must miss");
  nvrtc_output_free(&o);
  CHECK(cached_runs(src, opts, &o, &rc) == 0, "the same option again must hit");
  nvrtc_output_free(&o);

  /* a short file, then a flipped payload byte: ignored and rewritten */
  CHECK(nvrtc_cache_path("elementwise.cu", src, "compute_90", NULL, path, sizeof path) == 0, "no cache path");
  long full = file_size(path);
  CHECK(full == 32 + (long)size, "cache file %s is %ld bytes, expected %ld", path, full, 32 + (long)size);
  CHECK(truncate(path, 20) == 0, "cannot truncate %s", path);
  CHECK(cached_runs(src, NULL, &o, &rc) == 1 && rc == 0 && o.size == size, "a short cache file must be recompiled");
  nvrtc_output_free(&o);
  CHECK(file_size(path) == full, "the short cache file was not rewritten");
  FILE *f = fopen(path, "r+b");
  if (f) {
    fseek(f, 32 + (long)size / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 32 + (long)size / 2, SEEK_SET);
    fputc(c ^ 0x55, f);
    fclose(f);
  }
  CHECK(cached_runs(src, NULL, &o, &rc) == 1 && rc == 0, "a corrupt cache file must be recompiled");
  CHECK(rc == 0 && strstr((const char *)o.data, ".entry pipec_") != NULL, "the recompiled PTX lacks its entries");
  nvrtc_output_free(&o);
  CHECK(cached_runs(src, NULL, &o, &rc) == 0 && o.from_cache, "the rewritten file must hit");
  nvrtc_output_free(&o);
  free(src);
}

/* A broken line at the end of a real unit: -1, NVRTC's error, then the line. */
static void test_broken(const char *kernels_dir) {
  char *common = read_text(kernels_dir, "common.cuh");
  CHECK(common != NULL, "cannot read common.cuh");
  if (!common) return;
  const char *bad = "__device__ float pipec_broken(float x) { return x + no_such_name; }";
  size_t n = strlen(common) + strlen(bad) + 2;
  char *src = malloc(n);
  snprintf(src, n, "%s%s\n", common, bad);
  int line = 1 + count_of(common, "\n");
  char *log = malloc(LOG_LEN), want_err[128], want_src[256];
  NvrtcOutput o;

  long before = nvrtc_compile_count();
  int rc = nvrtc_compile_cached("broken.cu", src, "sm_90", NULL, &o, log, LOG_LEN);
  CHECK(rc == -1 && o.data == NULL, "a broken source must give -1, got %d", rc);
  snprintf(want_err, sizeof want_err, "broken.cu(%d): error", line);
  snprintf(want_src, sizeof want_src, "\n  %d | %s\n", line, bad);
  char *err = strstr(log, want_err);
  CHECK(err && strstr(err, "no_such_name"), "log lacks \"%s ... no_such_name\":\n%s", want_err, log);
  CHECK(err && strstr(err, want_src), "log lacks the offending line \"%s\":\n%s", want_src + 1, log);
  rc = nvrtc_compile_cached("broken.cu", src, "sm_90", NULL, &o, log, LOG_LEN);
  CHECK(rc == -1 && nvrtc_compile_count() - before == 2, "a failed compile must not be cached");

  rc = nvrtc_compile("bad-arch.cu", "", "sm_xx", NULL, &o, log, LOG_LEN);
  CHECK(rc == -2 && strstr(log, "sm_xx"), "a bad arch must give -2 and name it, got %d: %s", rc, log);
  free(log);
  free(src);
  free(common);
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s KERNELS_DIR [OUT_DIR]\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  char why[512];
  if (!nvrtc_available(why, sizeof why)) {
    printf("nvrtc not available: %s\n", why);
    if (getenv("PIPEC_REQUIRE_NVRTC")) {
      CHECK(0, "PIPEC_REQUIRE_NVRTC is set, so a missing NVRTC is a failure");
      return check_summary();
    }
    printf("skipped (set PIPEC_REQUIRE_NVRTC=1 to make this a failure)\n");
    return 0;
  }
  int major, minor;
  nvrtc_version(&major, &minor);
  printf("NVRTC %d.%d\n", major, minor);

  /* a fresh cache, two levels down (the cache creates its directories) */
  const char *tmpdir = getenv("TMPDIR");
  char top[1024], cache[1100];
  snprintf(top, sizeof top, "%s/pipec-nvrtc-test-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
  CHECK(mkdtemp(top) != NULL, "mkdtemp %s failed", top);
  snprintf(cache, sizeof cache, "%s/cache", top);
  setenv("PIPEC_CACHE_DIR", cache, 1);

  char *sources[NGROUPS];
  for (int g = 0; g < NGROUPS; g++) sources[g] = group_source(argv[1], &groups[g]);
  if (check_failed) return check_summary();

  /* compile everything in workers (NVRTC is single-threaded and slow) */
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int nw = ncpu < 1 ? 1 : ncpu > 6 ? 6 : (int)ncpu;
  double *seconds = mmap(NULL, sizeof(double) * NJOBS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(seconds != MAP_FAILED, "mmap failed");
  if (seconds == MAP_FAILED) return check_summary();
  double t0 = now();
  pid_t pids[6];
  for (int w = 0; w < nw; w++) {
    fflush(stdout);
    pids[w] = fork();
    if (pids[w] == 0) {
      int failed = compile_jobs(sources, w, nw, seconds);
      fflush(stdout);
      _exit(failed > 100 ? 100 : failed);
    }
    CHECK(pids[w] > 0, "fork failed");
  }
  for (int w = 0; w < nw; w++) {
    int status = 0;
    if (pids[w] > 0) waitpid(pids[w], &status, 0);
    CHECK(pids[w] > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker %d: %d failures", w,
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  double wall = now() - t0;

  printf("%-16s", "compile seconds");
  for (int a = 0; a < NARCHS; a++) printf(" %10s", archs[a]);
  printf("\n");
  double total[NARCHS] = {0};
  for (int g = 0; g < NGROUPS; g++) {
    printf("%-16s", groups[g].name);
    for (int a = 0; a < NARCHS; a++) {
      printf(" %10.2f", seconds[g * NARCHS + a]);
      total[a] += seconds[g * NARCHS + a];
    }
    printf("\n");
  }
  printf("%-16s", "total");
  for (int a = 0; a < NARCHS; a++) printf(" %10.2f", total[a]);
  printf("\n%d workers, %.1f s wall\n", nw, wall);

  /* everything again: all from the cache, no NVRTC run, and checked */
  long before = nvrtc_compile_count();
  t0 = now();
  for (int j = 0; j < NJOBS; j++) {
    const Group *g = &groups[j / NARCHS];
    const char *arch = archs[j % NARCHS];
    char name[128], log[4096];
    module_name(g, name, sizeof name);
    NvrtcOutput o;
    int rc = nvrtc_compile_cached(name, sources[j / NARCHS], arch, NULL, &o, log, sizeof log);
    CHECK(rc == 0 && o.from_cache, "%s %s: not a cache hit (rc %d) %s", g->name, arch, rc, log);
    if (rc != 0) continue;
    check_image(g, arch, &o);
    if (argc > 2) write_image(argv[2], g, arch, &o);
    nvrtc_output_free(&o);
  }
  CHECK(nvrtc_compile_count() == before, "reading back %d modules ran NVRTC %ld times", NJOBS,
        nvrtc_compile_count() - before);
  printf("%d modules read back from the cache in %.3f s\n", NJOBS, now() - t0);

  test_cache(sources[4] /* elementwise: the quickest to compile */);
  test_broken(argv[1]);

  for (int g = 0; g < NGROUPS; g++) free(sources[g]);
  munmap(seconds, sizeof(double) * NJOBS);
  remove_dir(cache);
  rmdir(top);
  return check_summary();
}
