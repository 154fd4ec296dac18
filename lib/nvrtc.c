/* nvrtc.c — NVRTC through dlopen, with an on-disk cache. See nvrtc.h. */
#define _GNU_SOURCE /* dladdr */
#include "lib/nvrtc.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the library ------------------------------------------------------- */

/* The few NVRTC types we need, so that building needs no CUDA headers. */
typedef int nvrtcResult; /* NVRTC_SUCCESS = 0 */
typedef struct _nvrtcProgram *nvrtcProgram;

static struct {
  int tried, ok;
  char why[512];
  char cuda_home[1024];
  int major, minor;
  const char *(*GetErrorString)(nvrtcResult);
  nvrtcResult (*Version)(int *, int *);
  nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int, const char *const *,
                               const char *const *);
  nvrtcResult (*DestroyProgram)(nvrtcProgram *);
  nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
  nvrtcResult (*GetPTXSize)(nvrtcProgram, size_t *);
  nvrtcResult (*GetPTX)(nvrtcProgram, char *);
  nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
  nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
  nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
  nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
} nv;

static long compile_count;

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* <home>/include/cuda_bf16.h exists */
static int is_cuda_home(const char *home) {
  char p[1200];
  snprintf(p, sizeof p, "%s/include/cuda_bf16.h", home);
  return file_exists(p);
}

/* The toolkit whose include/ we pass: $PIPEC_CUDA_HOME, else the one the
 * library came from (<home>/lib64/libnvrtc.so), else /usr/local/cuda. */
static void find_cuda_home(void *lib_symbol) {
  const char *env = getenv("PIPEC_CUDA_HOME");
  if (env && *env) {
    snprintf(nv.cuda_home, sizeof nv.cuda_home, "%s", env);
    return;
  }
  Dl_info info;
  if (dladdr(lib_symbol, &info) && info.dli_fname) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", info.dli_fname);
    for (int up = 0; up < 2; up++) { /* strip the file name, then lib64/ */
      char *slash = strrchr(dir, '/');
      if (!slash) break;
      *slash = 0;
    }
    if (dir[0] && is_cuda_home(dir)) {
      snprintf(nv.cuda_home, sizeof nv.cuda_home, "%s", dir);
      return;
    }
  }
  snprintf(nv.cuda_home, sizeof nv.cuda_home, "/usr/local/cuda");
}

static void *open_nvrtc(char *tried, size_t n) {
  static const char *const names[] = {"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"};
  const char *env = getenv("PIPEC_CUDA_HOME");
  const char *dirs[] = {env && *env ? env : NULL, NULL /* the loader's path */, "/usr/local/cuda"};
  size_t used = 0;
  tried[0] = 0;
  for (int d = 0; d < 3; d++) {
    if (d == 0 && !dirs[0]) continue;
    for (int i = 0; i < 3; i++) {
      char path[1200];
      if (dirs[d])
        snprintf(path, sizeof path, "%s/lib64/%s", dirs[d], names[i]);
      else
        snprintf(path, sizeof path, "%s", names[i]);
      void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (h) return h;
      if (used < n) used += (size_t)snprintf(tried + used, n - used, "%s%s", used ? ", " : "", path);
    }
  }
  return NULL;
}

static int load(void) {
  if (nv.tried) return nv.ok;
  nv.tried = 1;
  const char *off = getenv("PIPEC_NO_NVRTC");
  if (off && *off && strcmp(off, "0") != 0) {
    snprintf(nv.why, sizeof nv.why, "PIPEC_NO_NVRTC is set");
    return 0;
  }
  char tried[400];
  void *h = open_nvrtc(tried, sizeof tried);
  if (!h) {
    snprintf(nv.why, sizeof nv.why, "cannot load libnvrtc (tried %s); set PIPEC_CUDA_HOME to a CUDA toolkit", tried);
    return 0;
  }
#define SYM(field, name)                                                                                               \
  do {                                                                                                                 \
    *(void **)&nv.field = dlsym(h, name);                                                                              \
    if (!nv.field) {                                                                                                   \
      snprintf(nv.why, sizeof nv.why, "libnvrtc has no %s (too old a version?)", name);                                \
      dlclose(h);                                                                                                      \
      return 0;                                                                                                        \
    }                                                                                                                  \
  } while (0)
  SYM(GetErrorString, "nvrtcGetErrorString");
  SYM(Version, "nvrtcVersion");
  SYM(CreateProgram, "nvrtcCreateProgram");
  SYM(DestroyProgram, "nvrtcDestroyProgram");
  SYM(CompileProgram, "nvrtcCompileProgram");
  SYM(GetPTXSize, "nvrtcGetPTXSize");
  SYM(GetPTX, "nvrtcGetPTX");
  SYM(GetCUBINSize, "nvrtcGetCUBINSize");
  SYM(GetCUBIN, "nvrtcGetCUBIN");
  SYM(GetProgramLogSize, "nvrtcGetProgramLogSize");
  SYM(GetProgramLog, "nvrtcGetProgramLog");
#undef SYM
  if (nv.Version(&nv.major, &nv.minor) != 0) {
    snprintf(nv.why, sizeof nv.why, "nvrtcVersion failed");
    dlclose(h);
    return 0;
  }
  find_cuda_home(*(void **)&nv.Version);
  nv.ok = 1;
  return 1;
}

int nvrtc_available(char *why, size_t n) {
  int ok = load();
  if (!ok && why && n) snprintf(why, n, "%s", nv.why);
  return ok;
}

int nvrtc_version(int *major, int *minor) {
  if (!load()) return -1;
  *major = nv.major;
  *minor = nv.minor;
  return 0;
}

long nvrtc_compile_count(void) { return __atomic_load_n(&compile_count, __ATOMIC_RELAXED); }

void nvrtc_output_free(NvrtcOutput *out) {
  free(out->data);
  memset(out, 0, sizeof *out);
}

/* ---- messages ---------------------------------------------------------- */

static void say(char *log, size_t loglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *log, size_t loglen, const char *fmt, ...) {
  if (!log || !loglen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(log, loglen, fmt, ap);
  va_end(ap);
}

/* A growing string; on out-of-memory it stops growing (the log is truncated). */
typedef struct {
  char *s;
  size_t len, cap;
} Buf;

static void buf_add(Buf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = (b->len + n + 1) * 2;
    char *s = realloc(b->s, cap);
    if (!s) return;
    b->s = s;
    b->cap = cap;
  }
  memcpy(b->s + b->len, p, n);
  b->len += n;
  b->s[b->len] = 0;
}

/* Line `line` (1-based) of source, as a pointer and length; NULL if past the end. */
static const char *source_line(const char *source, long line, size_t *len) {
  const char *p = source;
  for (long i = 1; i < line && p; i++) {
    p = strchr(p, '\n');
    if (p) p++;
  }
  if (!p || !*p) return NULL;
  const char *e = strchr(p, '\n');
  *len = e ? (size_t)(e - p) : strlen(p);
  return p;
}

/* NVRTC's log with each "<name>(LINE): error|warning ..." line followed by
 * "  LINE | <source line>" (messages about other files, e.g. cuda_bf16.h,
 * are left alone), plus a hint when cuda_bf16.h could not be found. */
static void annotate_log(const char *raw, const char *name, const char *source, char *log, size_t loglen) {
  if (!log || !loglen) return;
  Buf b = {0};
  size_t name_len = strlen(name);
  const char *p = raw;
  while (*p) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) + 1 : strlen(p);
    buf_add(&b, p, n);
    if (!e) buf_add(&b, "\n", 1);
    if (n > name_len + 1 && !strncmp(p, name, name_len) && p[name_len] == '(') {
      char *end;
      long line = strtol(p + name_len + 1, &end, 10);
      size_t src_len;
      const char *src = source_line(source, line, &src_len);
      if (end[0] == ')' && end[1] == ':' && src) {
        char num[32];
        int k = snprintf(num, sizeof num, "  %ld | ", line);
        buf_add(&b, num, (size_t)k);
        buf_add(&b, src, src_len);
        buf_add(&b, "\n", 1);
      }
    }
    p += n;
  }
  if (strstr(raw, "cuda_bf16.h") && strstr(raw, "open source file")) {
    char hint[1400];
    int k = snprintf(hint, sizeof hint,
                     "HINT: NVRTC found no cuda_bf16.h under %s/include; set PIPEC_CUDA_HOME to a CUDA toolkit\n",
                     nv.cuda_home);
    buf_add(&b, hint, (size_t)k);
  }
  snprintf(log, loglen, "%s", b.s ? b.s : raw);
  free(b.s);
}

/* ---- compiling --------------------------------------------------------- */

/* "sm_80", "sm_90a", "compute_90": 1 for PTX, 0 for a cubin, -1 if malformed */
static int arch_kind(const char *arch) {
  const char *digits;
  int ptx;
  if (!strncmp(arch, "sm_", 3))
    digits = arch + 3, ptx = 0;
  else if (!strncmp(arch, "compute_", 8))
    digits = arch + 8, ptx = 1;
  else
    return -1;
  const char *p = digits;
  while (*p >= '0' && *p <= '9') p++;
  if (p == digits || p - digits > 4) return -1;
  if (*p >= 'a' && *p <= 'z') p++; /* sm_90a, sm_100f */
  return *p ? -1 : ptx;
}

/* The full option list (fixed ones, then the caller's); opts[] gets
 * pointers into storage. Returns the count, or -1 if there are too many. */
enum { MAX_OPTS = 64 };
static int build_options(const char *arch, const char *const *extra, const char *opts[MAX_OPTS], char arch_opt[64],
                         char inc_opt[1100]) {
  int n = 0;
  snprintf(arch_opt, 64, "--gpu-architecture=%s", arch);
  snprintf(inc_opt, 1100, "-I%s/include", nv.cuda_home);
  opts[n++] = arch_opt;
  opts[n++] = "-default-device";
  opts[n++] = "-std=c++17";
  opts[n++] = inc_opt;
  for (int i = 0; extra && extra[i]; i++) {
    if (n == MAX_OPTS) return -1;
    opts[n++] = extra[i];
  }
  return n;
}

int nvrtc_compile(const char *name, const char *source, const char *arch, const char *const *extra_opts,
                  NvrtcOutput *out, char *log, size_t loglen) {
  memset(out, 0, sizeof *out);
  say(log, loglen, "%s", "");
  if (!load()) {
    say(log, loglen, "nvrtc not available: %s", nv.why);
    return -2;
  }
  int ptx = arch_kind(arch);
  if (ptx < 0) {
    say(log, loglen, "bad GPU architecture '%s'; expected sm_NN (a cubin) or compute_NN (PTX), e.g. sm_90", arch);
    return -2;
  }
  const char *opts[MAX_OPTS];
  char arch_opt[64], inc_opt[1100];
  int nopts = build_options(arch, extra_opts, opts, arch_opt, inc_opt);
  if (nopts < 0) {
    say(log, loglen, "too many NVRTC options (at most %d)", MAX_OPTS);
    return -2;
  }

  nvrtcProgram prog;
  nvrtcResult r = nv.CreateProgram(&prog, source, name, 0, NULL, NULL);
  if (r != 0) {
    say(log, loglen, "nvrtcCreateProgram: %s", nv.GetErrorString(r));
    return -2;
  }
  __atomic_fetch_add(&compile_count, 1, __ATOMIC_RELAXED);
  nvrtcResult cr = nv.CompileProgram(prog, nopts, opts);

  size_t raw_len = 0;
  char *raw = NULL;
  if (nv.GetProgramLogSize(prog, &raw_len) == 0 && raw_len > 0 && (raw = malloc(raw_len + 1))) {
    if (nv.GetProgramLog(prog, raw) != 0) raw[0] = 0;
    raw[raw_len] = 0;
  }
  int rc = 0;
  if (cr != 0) {
    if (raw && raw[0])
      annotate_log(raw, name, source, log, loglen);
    else
      say(log, loglen, "nvrtcCompileProgram: %s", nv.GetErrorString(cr));
    rc = cr == 6 /* NVRTC_ERROR_COMPILATION */ ? -1 : -2;
  } else {
    if (raw && raw[0]) annotate_log(raw, name, source, log, loglen);
    size_t size = 0;
    r = ptx ? nv.GetPTXSize(prog, &size) : nv.GetCUBINSize(prog, &size);
    unsigned char *data = r == 0 ? malloc(size + 1) : NULL;
    if (r == 0 && data) r = ptx ? nv.GetPTX(prog, (char *)data) : nv.GetCUBIN(prog, (char *)data);
    if (r != 0 || !data) {
      say(log, loglen, "reading the %s: %s", ptx ? "PTX" : "cubin", data ? nv.GetErrorString(r) : "out of memory");
      free(data);
      rc = -2;
    } else {
      if (ptx && size > 0 && data[size - 1] == 0) size--; /* NVRTC counts the PTX's NUL */
      data[size] = 0;
      out->data = data;
      out->size = size;
      out->is_ptx = ptx;
    }
  }
  free(raw);
  nv.DestroyProgram(&prog);
  return rc;
}

/* ---- the cache --------------------------------------------------------- */

/* File layout: "PIPECNV1", then little-endian u64 key, u64 payload size,
 * u64 FNV-1a of the payload, then the payload. */
#define CACHE_MAGIC "PIPECNV2" /* 2: the key ignores comments */
enum { CACHE_HEADER = 32, DIR_LEN = 1024 };

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * FNV_PRIME;
  return h;
}

/* hash a string and its terminating NUL, so ("ab","c") != ("a","bc") */
static uint64_t fnv1a_str(uint64_t h, const char *s) { return fnv1a(h, s, strlen(s) + 1); }

/* The source without its comments (their newlines kept, so line numbers
   agree): pipec's kernel files differ between stages only in comments
   naming the modules that use each kernel, and those share one entry. */
static uint64_t fnv1a_code(uint64_t h, const char *s) {
  char quote = 0;
  for (; *s; s++) {
    if (quote) { /* inside a string or character literal */
      h = fnv1a(h, s, 1);
      if (*s == '\\' && s[1]) h = fnv1a(h, ++s, 1);
      else if (*s == quote) quote = 0;
    } else if (s[0] == '/' && s[1] == '/') {
      while (s[1] && s[1] != '\n') s++;
    } else if (s[0] == '/' && s[1] == '*') {
      for (s += 2; *s && !(s[0] == '*' && s[1] == '/'); s++)
        if (*s == '\n') h = fnv1a(h, s, 1);
      if (!*s) break;
      s++;
    } else {
      if (*s == '"' || *s == '\'') quote = *s;
      h = fnv1a(h, s, 1);
    }
  }
  return fnv1a(h, "", 1);
}

static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* mkdir -p; 0 on success */
static int make_dirs(const char *path) {
  char p[DIR_LEN];
  snprintf(p, sizeof p, "%s", path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
    *s = '/';
  }
  return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int cache_dir(char *dir, size_t n) {
  const char *env = getenv("PIPEC_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  int k;
  if (env && *env)
    k = snprintf(dir, n, "%s", env);
  else if (xdg && *xdg)
    k = snprintf(dir, n, "%s/pipec/nvrtc", xdg);
  else if (home && *home)
    k = snprintf(dir, n, "%s/.cache/pipec/nvrtc", home);
  else
    return -1;
  return k > 0 && (size_t)k < n ? 0 : -1;
}

static uint64_t cache_key(const char *name, const char *source, const char *arch, const char *const *extra_opts) {
  const char *opts[MAX_OPTS];
  char arch_opt[64], inc_opt[1100], version[32];
  int nopts = build_options(arch, extra_opts, opts, arch_opt, inc_opt);
  snprintf(version, sizeof version, "nvrtc %d.%d", nv.major, nv.minor);
  uint64_t h = fnv1a_str(FNV_OFFSET, CACHE_MAGIC);
  h = fnv1a_str(h, version);
  h = fnv1a_str(h, arch);
  for (int i = 0; i < nopts; i++) h = fnv1a_str(h, opts[i]);
  h = fnv1a(h, &nopts, sizeof nopts); /* the count ends the option list */
  h = fnv1a_str(h, name);
  return fnv1a_code(h, source);
}

/* The cache directory, the file in it for these arguments and its key; 0 on success. */
static int cache_locate(const char *name, const char *source, const char *arch, const char *const *extra_opts,
                        char dir[DIR_LEN], char *path, size_t n, uint64_t *key) {
  int ptx = arch_kind(arch);
  if (!load() || ptx < 0 || cache_dir(dir, DIR_LEN) != 0) return -1;
  *key = cache_key(name, source, arch, extra_opts);
  int k = snprintf(path, n, "%s/%016llx-%s.%s", dir, (unsigned long long)*key, arch, ptx ? "ptx" : "cubin");
  return k > 0 && (size_t)k < n ? 0 : -1;
}

int nvrtc_cache_path(const char *name, const char *source, const char *arch, const char *const *extra_opts, char *path,
                     size_t n) {
  char dir[DIR_LEN];
  uint64_t key;
  return cache_locate(name, source, arch, extra_opts, dir, path, n, &key);
}

/* The cached image for key at path, or 0 if there is none (or it is bad). */
static int cache_read(const char *path, uint64_t key, int ptx, NvrtcOutput *out) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  unsigned char h[CACHE_HEADER];
  int ok = 0;
  if (fread(h, 1, CACHE_HEADER, f) == CACHE_HEADER && !memcmp(h, CACHE_MAGIC, 8) && get_u64(h + 8) == key) {
    uint64_t size = get_u64(h + 16), sum = get_u64(h + 24);
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (uint64_t)st.st_size == CACHE_HEADER + size) {
      unsigned char *data = malloc(size + 1);
      if (data && fread(data, 1, size, f) == size && fnv1a(FNV_OFFSET, data, size) == sum) {
        data[size] = 0;
        out->data = data;
        out->size = size;
        out->is_ptx = ptx;
        out->from_cache = 1;
        ok = 1;
      } else {
        free(data);
      }
    }
  }
  fclose(f);
  return ok;
}

static int write_all(int fd, const void *p, size_t n) {
  const char *s = p;
  while (n > 0) {
    ssize_t k = write(fd, s, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    s += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Write to a temporary file beside path, then rename: concurrent readers
 * (and other pipec processes) see the old file or the whole new one. */
static void cache_write(const char *path, uint64_t key, const NvrtcOutput *out) {
  static int seq;
  char tmp[1300];
  int k =
      snprintf(tmp, sizeof tmp, "%s.%ld.%d.tmp", path, (long)getpid(), __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED));
  if (k < 0 || (size_t)k >= sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) return;
  unsigned char h[CACHE_HEADER];
  memcpy(h, CACHE_MAGIC, 8);
  put_u64(h + 8, key);
  put_u64(h + 16, out->size);
  put_u64(h + 24, fnv1a(FNV_OFFSET, out->data, out->size));
  int ok = write_all(fd, h, sizeof h) == 0 && write_all(fd, out->data, out->size) == 0 && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) unlink(tmp);
}

int nvrtc_compile_cached(const char *name, const char *source, const char *arch, const char *const *extra_opts,
                         NvrtcOutput *out, char *log, size_t loglen) {
  memset(out, 0, sizeof *out);
  char dir[DIR_LEN], path[1200];
  uint64_t key;
  if (cache_locate(name, source, arch, extra_opts, dir, path, sizeof path, &key) != 0 || make_dirs(dir) != 0)
    return nvrtc_compile(name, source, arch, extra_opts, out, log, loglen); /* no cache: just compile */
  say(log, loglen, "%s", "");
  if (cache_read(path, key, arch_kind(arch), out)) return 0;
  int rc = nvrtc_compile(name, source, arch, extra_opts, out, log, loglen);
  if (rc == 0) cache_write(path, key, out);
  return rc;
}
