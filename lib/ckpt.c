/* ckpt.c — see ckpt.h. */
#define _GNU_SOURCE
#include "lib/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/params.h"
#include "lib/safetensors.h"
#include "lib/xalloc.h"

#define LLMC_MAGIC 20240326

typedef struct CkFile {
  StFile *f;
  int pp, tp, optim;
} CkFile;

struct CkSource {
  int kind;
  char *where;
  /* pipec */
  CkFile *files;
  int nfiles, tp, pp;
  /* Hugging Face */
  StFile *st;
  /* llm.c */
  const unsigned char *map;
  size_t maplen;
  int32_t hdr[8];
};

static const char *const shard_names[] = {"none", "rows", "cols", "qkv"};

int ck_kind(const CkSource *s) { return s->kind; }
const char *ck_where(const CkSource *s) { return s->where; }
const char *ck_meta(const CkSource *s, const char *key) {
  return s->kind == CK_PIPEC && s->nfiles ? st_meta_get(s->files[0].f, key) : NULL;
}

void ck_close(CkSource *s) {
  if (!s) return;
  for (int i = 0; i < s->nfiles; i++) st_close(s->files[i].f);
  if (s->st) st_close(s->st);
  if (s->map) munmap((void *)s->map, s->maplen);
  free(s->files), free(s->where), free(s);
}

/* n = "step-<s>" exactly: s, else -1 */
static long step_of(const char *n) {
  long s;
  int end = 0;
  if (strncmp(n, "step-", 5) || n[5] < '0' || n[5] > '9' || sscanf(n + 5, "%ld%n", &s, &end) != 1 || n[5 + end]) return -1;
  return s;
}

int ck_find_latest(const char *dir, char *out, size_t n, long *step) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  long best = -1;
  for (struct dirent *e; (e = readdir(d));) {
    long s = step_of(e->d_name);
    struct stat st;
    char *p = NULL;
    if (s > best && asprintf(&p, "%s/%s", dir, e->d_name) > 0 && !stat(p, &st) && S_ISDIR(st.st_mode)) best = s;
    free(p);
  }
  closedir(d);
  if (best < 0) return 0;
  snprintf(out, n, "%s/step-%ld", dir, best);
  *step = best;
  return 1;
}

static long meta_long(StFile *f, const char *key) {
  const char *v = st_meta_get(f, key);
  char *end;
  long x = v ? strtol(v, &end, 10) : -1;
  return v && *v && !*end ? x : -1;
}

static CkSource *open_pipec(CkSource *s, char *err, size_t errlen) {
  DIR *d = opendir(s->where);
  if (!d) {
    errf(err, errlen, "cannot read the checkpoint folder %s: %s", s->where, strerror(errno));
    return NULL;
  }
  int cap = 0;
  for (struct dirent *e; (e = readdir(d));) {
    int k, t, end = 0, optim = !strncmp(e->d_name, "optim-", 6);
    if (strncmp(e->d_name, optim ? "optim-" : "model-", 6)) continue;
    if (sscanf(e->d_name + 6, "pp%d-tp%d.safetensors%n", &k, &t, &end) != 2 || e->d_name[6 + end] || k < 0 || t < 0) continue;
    char *p = NULL;
    if (asprintf(&p, "%s/%s", s->where, e->d_name) < 0) continue;
    StFile *f = st_open(p, err, errlen);
    free(p);
    if (!f) {
      closedir(d);
      return NULL;
    }
    if (s->nfiles == cap) s->files = xrealloc(s->files, (size_t)(cap = cap * 2 + 8), sizeof *s->files);
    s->files[s->nfiles++] = (CkFile){f, k, t, optim};
  }
  closedir(d);
  if (!s->nfiles) {
    errf(err, errlen, "%s holds no checkpoint files (model-pp<k>-tp<t>.safetensors)", s->where);
    return NULL;
  }
  /* every file: the format, and the same model, step and layout as the first */
  StFile *f0 = s->files[0].f;
  const char *keys[] = {"model", "step", "tp", "pp", "optimizer"};
  for (int i = 0; i < s->nfiles; i++) {
    CkFile *cf = &s->files[i];
    const char *fmt = st_meta_get(cf->f, "format");
    if (!fmt || strcmp(fmt, CK_FORMAT)) {
      errf(err, errlen, "%s: not a pipec checkpoint file (metadata format '%s', expected '%s')", st_path(cf->f), fmt ? fmt : "", CK_FORMAT);
      return NULL;
    }
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
      const char *a = st_meta_get(f0, keys[k]), *b = st_meta_get(cf->f, keys[k]);
      if (!a || !b || strcmp(a, b)) {
        errf(err, errlen, "%s: metadata %s is '%s', but %s has '%s' (files of different checkpoints mixed?)", st_path(cf->f), keys[k],
             b ? b : "(missing)", st_path(f0), a ? a : "(missing)");
        return NULL;
      }
    }
    if (meta_long(cf->f, "pp_rank") != cf->pp || meta_long(cf->f, "tp_rank") != cf->tp) {
      errf(err, errlen, "%s: metadata pp_rank %ld tp_rank %ld do not match the file name", st_path(cf->f), meta_long(cf->f, "pp_rank"),
           meta_long(cf->f, "tp_rank"));
      return NULL;
    }
  }
  s->tp = (int)meta_long(f0, "tp"), s->pp = (int)meta_long(f0, "pp");
  if (s->tp < 1 || s->pp < 1 || s->tp > 65536 || s->pp > 65536) {
    errf(err, errlen, "%s: metadata tp '%s' pp '%s' are not positive counts", st_path(f0), st_meta_get(f0, "tp"), st_meta_get(f0, "pp"));
    return NULL;
  }
  for (int optim = 0; optim < 2; optim++)
    for (int k = 0; k < s->pp; k++)
      for (int t = 0; t < s->tp; t++) {
        int found = 0;
        for (int i = 0; i < s->nfiles; i++) found |= s->files[i].optim == optim && s->files[i].pp == k && s->files[i].tp == t;
        if (!found) {
          errf(err, errlen, "%s: %s-pp%d-tp%d.safetensors is missing (the checkpoint has tp %d x pp %d)", s->where,
               optim ? "optim" : "model", k, t, s->tp, s->pp);
          return NULL;
        }
      }
  for (int i = 0; i < s->nfiles; i++)
    if (s->files[i].pp >= s->pp || s->files[i].tp >= s->tp) {
      errf(err, errlen, "%s: outside the checkpoint's layout tp %d x pp %d", st_path(s->files[i].f), s->tp, s->pp);
      return NULL;
    }
  return s;
}

static CkSource *open_llmc(CkSource *s, int fd, size_t len, char *err, size_t errlen) {
  void *m = len >= 1024 ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  if (m == MAP_FAILED) {
    errf(err, errlen, "%s: truncated llm.c checkpoint (%zu bytes, the header alone is 1024)", s->where, len);
    return NULL;
  }
  s->map = m, s->maplen = len;
  memcpy(s->hdr, m, sizeof s->hdr);
  const int32_t *h = s->hdr;
  if (h[1] != 3) {
    errf(err, errlen, "%s: llm.c checkpoint version %d; only version 3 (fp32) is read", s->where, h[1]);
    return NULL;
  }
  if (h[2] <= 0 || h[3] <= 0 || h[4] <= 0 || h[5] <= 0 || h[6] <= 0 || h[7] < h[3]) {
    errf(err, errlen, "%s: bad llm.c header (maxT %d, V %d, L %d, NH %d, C %d, padded V %d)", s->where, h[2], h[3], h[4], h[5], h[6], h[7]);
    return NULL;
  }
  int64_t T = h[2], L = h[4], C = h[6], Vp = h[7];
  int64_t n = Vp * C + T * C + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C + 4 * C + 4 * C * C + C) + 2 * C;
  if ((uint64_t)len != 1024 + 4 * (uint64_t)n) {
    errf(err, errlen, "%s: %zu bytes, but its header (maxT %d, V %d, L %d, C %d, padded V %d) describes %lld", s->where, len, h[2], h[3],
         h[4], h[6], h[7], (long long)(1024 + 4 * n));
    return NULL;
  }
  return s;
}

CkSource *ck_open(const char *path, char *err, size_t errlen) {
  CkSource *s = xcalloc(1, sizeof *s);
  CkSource *ok = NULL;
  struct stat st;
  if (stat(path, &st)) {
    errf(err, errlen, "cannot open %s: %s", path, strerror(errno));
  } else if (S_ISDIR(st.st_mode)) {
    s->kind = CK_PIPEC;
    char *p0 = NULL, latest[4096];
    long step;
    if (asprintf(&p0, "%s/model-pp0-tp0.safetensors", path) > 0 && !access(p0, F_OK)) s->where = xstrdup(path);
    else if (ck_find_latest(path, latest, sizeof latest, &step)) s->where = xstrdup(latest);
    free(p0);
    if (s->where) ok = open_pipec(s, err, errlen);
    else errf(err, errlen, "%s holds no complete checkpoint (no step-<s> folder)", path);
  } else {
    s->where = xstrdup(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int32_t magic = 0;
    if (fd < 0) errf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    else if (pread(fd, &magic, 4, 0) == 4 && magic == LLMC_MAGIC) {
      s->kind = CK_LLMC;
      ok = open_llmc(s, fd, (size_t)st.st_size, err, errlen);
    } else {
      s->kind = CK_HF;
      ok = (s->st = st_open(path, err, errlen)) ? s : NULL;
    }
    if (fd >= 0) close(fd);
  }
  if (!ok) ck_close(s);
  return ok;
}

static void shape_str(char *b, size_t n, int64_t r, int64_t c) {
  if (c) snprintf(b, n, "[%lld, %lld]", (long long)r, (long long)c);
  else snprintf(b, n, "[%lld]", (long long)r);
}

static int get_pipec(CkSource *s, const char *name, int64_t R, int64_t Cc, float *full, char *err, size_t errlen) {
  int optim = strlen(name) > 2 && (!strcmp(name + strlen(name) - 2, ".m") || !strcmp(name + strlen(name) - 2, ".v"));
  char key[400], kind[16], a[64], b[64];
  snprintf(key, sizeof key, "shard:%s", name);
  const char *meta = NULL;
  for (int i = 0; i < s->nfiles && !meta; i++)
    if (s->files[i].optim == optim && st_find(s->files[i].f, name)) meta = st_meta_get(s->files[i].f, key);
  if (!meta) {
    errf(err, errlen, "%s: tensor '%s' is missing", s->where, name);
    return -1;
  }
  long long fr, fc, q, kv;
  int sk = -1;
  if (sscanf(meta, "%15s %lld %lld %lld %lld", kind, &fr, &fc, &q, &kv) == 5)
    for (int k = 0; k < 4; k++)
      if (!strcmp(kind, shard_names[k])) sk = k;
  int64_t tp = sk == PSHARD_NONE ? 1 : s->tp;
  if (sk < 0 || fr < 1 || fc < 0 || (sk == PSHARD_ROWS && fr % tp) || (sk == PSHARD_COLS && (!fc || fc % tp)) ||
      (sk == PSHARD_QKV && (q < 0 || kv < 0 || q % tp || kv % tp || q + 2 * kv != fr))) {
    errf(err, errlen, "%s: tensor '%s': bad metadata '%s' for tp %d", s->where, name, meta, s->tp);
    return -1;
  }
  if (fr != R || fc != Cc) {
    shape_str(a, sizeof a, fr, fc), shape_str(b, sizeof b, R, Cc);
    errf(err, errlen, "%s: tensor '%s' has shape %s, the model needs %s", s->where, name, a, b);
    return -1;
  }
  ParamShape sh = {sk, sk == PSHARD_ROWS ? fr / tp : sk == PSHARD_QKV ? fr / tp : fr, sk == PSHARD_COLS ? fc / tp : fc, fr, fc, q, kv};
  int64_t pn = sh.rows * (sh.cols ? sh.cols : 1);
  float *part = xcalloc((size_t)pn, sizeof(float));
  int rc = 0;
  for (int t = 0; t < tp && !rc; t++) {
    const StTensor *x = NULL;
    const CkFile *cf = NULL;
    for (int i = 0; i < s->nfiles && !x; i++)
      if (s->files[i].optim == optim && s->files[i].tp == t && (x = st_find(s->files[i].f, name))) cf = &s->files[i];
    rc = -1;
    if (!x) errf(err, errlen, "%s: tensor '%s' is missing from every %s-pp*-tp%d file", s->where, name, optim ? "optim" : "model", t);
    else if (x->dtype != ST_F32)
      errf(err, errlen, "%s: tensor '%s' has dtype %s, expected F32", st_path(cf->f), name, st_dtype_name(x->dtype));
    else if (x->ndim != (sh.cols ? 2 : 1) || x->shape[0] != sh.rows || (sh.cols && x->shape[1] != sh.cols)) {
      shape_str(b, sizeof b, sh.rows, sh.cols);
      errf(err, errlen, "%s: tensor '%s' is not the %s shard its metadata '%s' gives for tp %d", st_path(cf->f), name, b, meta, s->tp);
    } else if (!st_tensor_to_f32(cf->f, x, part, err, errlen)) {
      param_shard_merge(&sh, (int)tp, t, part, full);
      rc = 0;
    }
  }
  free(part);
  return rc;
}

static int get_hf(CkSource *s, const char *name, int64_t R, int64_t Cc, float *full, char *err, size_t errlen) {
  char hn[300], pre[320], a[64], b[64];
  int conv;
  param_hf_name(name, hn, sizeof hn, &conv);
  snprintf(pre, sizeof pre, "transformer.%s", hn);
  const StTensor *x = st_find(s->st, hn);
  if (!x) x = st_find(s->st, pre);
  if (!x) {
    errf(err, errlen, "%s: tensor '%s' (pipec '%s') is missing", s->where, hn, name);
    return -1;
  }
  int64_t er = conv ? Cc : R, ec = conv ? R : Cc;
  if (x->ndim != (ec ? 2 : 1) || x->shape[0] != er || (ec && x->shape[1] != ec)) {
    if (x->ndim == 1 || x->ndim == 2) shape_str(a, sizeof a, x->shape[0], x->ndim == 2 ? x->shape[1] : 0);
    else snprintf(a, sizeof a, "of %d dimensions", x->ndim);
    shape_str(b, sizeof b, er, ec);
    errf(err, errlen, "%s: tensor '%s' has shape %s, the model needs %s%s", s->where, x->name, a, b, conv ? " (Conv1D layout [in, out])" : "");
    return -1;
  }
  if (x->dtype != ST_F32 && x->dtype != ST_F16 && x->dtype != ST_BF16 && x->dtype != ST_F64) {
    errf(err, errlen, "%s: tensor '%s' has dtype %s, expected F32 (or F16, BF16, F64)", s->where, x->name, st_dtype_name(x->dtype));
    return -1;
  }
  if (!conv) return st_tensor_to_f32(s->st, x, full, err, errlen);
  float *tmp = xcalloc((size_t)(R * Cc), sizeof(float));
  int rc = st_tensor_to_f32(s->st, x, tmp, err, errlen);
  for (int64_t i = 0; !rc && i < Cc; i++)
    for (int64_t o = 0; o < R; o++) full[o * Cc + i] = tmp[i * R + o];
  free(tmp);
  return rc;
}

static int get_llmc(CkSource *s, const char *name, int64_t R, int64_t Cc, float *full, char *err, size_t errlen) {
  /* llm.c's 16 tensors in file order; per layer (2..13) stacked over L */
  static const char *const suf[16] = {"wte.weight", "wpe.weight", "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                                       "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
                                       "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_f.weight", "ln_f.bias"};
  const int32_t *h = s->hdr;
  int64_t T = h[2], V = h[3], L = h[4], C = h[6], Vp = h[7];
  int64_t rows[16] = {Vp, T, C, C, 3 * C, 3 * C, C, C, C, C, 4 * C, 4 * C, C, C, C, C};
  int64_t cols[16] = {C, C, 0, 0, C, 0, C, 0, 0, 0, C, 0, 4 * C, 0, 0, 0};
  int idx = -1, layer = 0, pos = 0;
  if (sscanf(name, "layers.%d.%n", &layer, &pos) == 1 && pos > 0) {
    for (int k = 2; k < 14; k++)
      if (!strcmp(name + pos, suf[k])) idx = k;
  } else
    for (int k = 0; k < 16; k++)
      if ((k < 2 || k >= 14) && !strcmp(name, suf[k])) idx = k;
  if (idx < 0 || layer < 0 || layer >= L) {
    if (idx >= 0) errf(err, errlen, "%s: tensor '%s' is missing (the llm.c checkpoint has %lld layers)", s->where, name, (long long)L);
    else errf(err, errlen, "%s: tensor '%s' is missing (an llm.c checkpoint holds only GPT-2's tensors)", s->where, name);
    return -1;
  }
  int64_t off = 0;
  for (int k = 0; k < idx; k++) off += rows[k] * (cols[k] ? cols[k] : 1) * (k >= 2 && k < 14 ? L : 1);
  int64_t n1 = rows[idx] * (cols[idx] ? cols[idx] : 1);
  if (idx >= 2 && idx < 14) off += n1 * layer;
  int64_t er = idx == 0 ? V : rows[idx]; /* the first V rows of the padded vocab */
  if (er != R || cols[idx] != Cc) {
    char a[64], b[64];
    shape_str(a, sizeof a, er, cols[idx]), shape_str(b, sizeof b, R, Cc);
    errf(err, errlen, "%s: tensor '%s' has shape %s in the llm.c checkpoint, the model needs %s", s->where, name, a, b);
    return -1;
  }
  memcpy(full, s->map + 1024 + 4 * off, sizeof(float) * (size_t)(R * (Cc ? Cc : 1)));
  return 0;
}

int ck_get(CkSource *s, const char *name, int64_t R, int64_t C, float *full, char *err, size_t errlen) {
  switch (s->kind) {
  case CK_PIPEC: return get_pipec(s, name, R, C, full, err, errlen);
  case CK_HF: return get_hf(s, name, R, C, full, err, errlen);
  default: return get_llmc(s, name, R, C, full, err, errlen);
  }
}

int ck_merge(const char *dir, const char *out, char *err, size_t errlen) {
  CkSource *s = ck_open(dir, err, errlen);
  if (!s) return -1;
  if (s->kind != CK_PIPEC) {
    errf(err, errlen, "%s is not a pipec checkpoint folder (SAVE_DIR or SAVE_DIR/step-<s>)", dir);
    ck_close(s);
    return -1;
  }
  StWriter *w = st_writer_new();
  float **bufs = NULL;
  int nb = 0, rc = st_writer_set_meta(w, "format", "pt", err, errlen);
  for (int i = 0; i < s->nfiles && !rc; i++) {
    if (s->files[i].optim) continue;
    for (size_t k = 0; k < st_count(s->files[i].f) && !rc; k++) {
      const char *name = st_tensor_at(s->files[i].f, k)->name;
      char key[400], kind[16], hn[300];
      long long fr = 0, fc = 0;
      int conv;
      param_hf_name(name, hn, sizeof hn, &conv);
      int seen = 0;
      for (int j = 0; j < i && !seen; j++) seen = !s->files[j].optim && st_find(s->files[j].f, name);
      if (seen) continue;
      snprintf(key, sizeof key, "shard:%s", name);
      const char *meta = st_meta_get(s->files[i].f, key);
      if (!meta || sscanf(meta, "%15s %lld %lld", kind, &fr, &fc) != 3 || fr < 1 || fc < 0 || fr * (fc ? fc : 1) > (1ll << 40)) {
        errf(err, errlen, "%s: tensor '%s': metadata %s is %s", st_path(s->files[i].f), name, key, meta ? "damaged" : "missing");
        rc = -1;
        break;
      }
      bufs = xrealloc(bufs, (size_t)nb + 2, sizeof *bufs);
      float *full = bufs[nb++] = xcalloc((size_t)(fr * (fc ? fc : 1)), sizeof(float));
      if ((rc = ck_get(s, name, fr, fc, full, err, errlen))) break;
      int64_t shape[2] = {fr, fc};
      if (conv && fc) { /* pipec [out, in] -> Conv1D [in, out] */
        float *t = bufs[nb++] = xcalloc((size_t)(fr * fc), sizeof(float));
        for (int64_t o = 0; o < fr; o++)
          for (int64_t in = 0; in < fc; in++) t[in * fr + o] = full[o * fc + in];
        full = t, shape[0] = fc, shape[1] = fr;
      }
      rc = st_writer_add(w, hn, ST_F32, fc ? 2 : 1, shape, full, err, errlen);
    }
  }
  if (!rc) rc = st_writer_write(w, out, err, errlen);
  st_writer_free(w);
  for (int i = 0; i < nb; i++) free(bufs[i]);
  free(bufs);
  ck_close(s);
  return rc;
}
