/* ckpt.c — checkpoints of a training run: save every N steps, resume from
 * the latest, load initial weights (docs/design.md, "Checkpoints"; the
 * file format and the readers are lib/ckpt.h). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/ckpt.h"
#include "lib/files.h"
#include "lib/params.h"
#include "lib/safetensors.h"
#include "lib/xalloc.h"
#include "runtime/stage_int.h"

static ParamShape shape_of(const RtParam *p) { return (ParamShape){p->shard, p->rows, p->cols, p->full_rows, p->full_cols, p->q_rows, p->kv_rows}; }
static float *params_base(PrtCtx *c) { return (float *)(c->arena + c->params_off); }
static float *optim_base(PrtCtx *c, int which) { return (float *)(c->arena + c->optim_off) + (which ? c->floats : 0); }
static int optim_slots(PrtCtx *c) { return !strcmp(c->optimizer, "adamw") ? 2 : c->momentum > 0 ? 1 : 0; }

/* ---- folders ---- */
static int rm_tree(const char *path) { /* a step folder: files, one level */
  DIR *d = opendir(path);
  if (!d) return -1;
  for (struct dirent *e; (e = readdir(d));) {
    char *p = NULL;
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && asprintf(&p, "%s/%s", path, e->d_name) > 0) unlink(p);
    free(p);
  }
  closedir(d);
  return rmdir(path);
}

static int mkdir_p(const char *dir) {
  char *p = xstrdup(dir);
  for (char *q = p + 1; *q; q++)
    if (*q == '/') {
      *q = 0;
      if (mkdir(p, 0755) && errno != EEXIST) return free(p), -1;
      *q = '/';
    }
  int rc = mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
  free(p);
  return rc;
}

/* ---- loading ---- */
/* every parameter of this rank (name + suffix) from s into base */
static int load_into(PrtCtx *c, CkSource *s, const char *suffix, float *base, char *err, size_t errlen) {
  for (int i = 0; i < c->nparams; i++) {
    const RtParam *p = &c->params[i];
    char name[200];
    snprintf(name, sizeof name, "%s%s", p->name, suffix);
    float *full = xcalloc((size_t)(p->full_rows * (p->full_cols ? p->full_cols : 1)), sizeof(float));
    int rc = ck_get(s, name, p->full_rows, p->full_cols, full, err, errlen);
    ParamShape sh = shape_of(p);
    if (!rc) param_shard_copy(&sh, c->tp, c->tp_rank, full, base + p->off);
    free(full);
    if (rc) return -1;
  }
  return 0;
}

int prt_load_weights(PrtCtx *c, const char *path, char *err, size_t errlen) {
  CkSource *s = ck_open(path, err, errlen);
  if (!s) return -1;
  int rc = load_into(c, s, "", params_base(c), err, errlen);
  ck_close(s);
  return rc;
}

/* init or resume; 0, or -1 with the reason in why (every rank reads the same files, so the job stops with one line) */
static int load_start(PrtCtx *c, char *why, size_t n) {
  char err[1024];
  if (!c->resume_dir) {
    if (c->init_path && prt_load_weights(c, c->init_path, err, sizeof err)) return snprintf(why, n, "init: %s", err), -1;
    if (c->init_path && c->env.rank == 0) printf("pipec: initial weights from %s\n", c->init_path);
    return 0;
  }
  CkSource *s = ck_open(c->resume_dir, err, sizeof err);
  if (!s) return snprintf(why, n, "resume: %s", err), -1;
  int rc = -1;
  const char *model = ck_meta(s, "model"), *opt = ck_meta(s, "optimizer"), *st = ck_meta(s, "step");
  char *end = NULL;
  if (ck_kind(s) != CK_PIPEC) snprintf(why, n, "resume: %s is not a pipec checkpoint folder", c->resume_dir);
  else if (strcmp(model, c->model)) snprintf(why, n, "resume: %s is a checkpoint of model '%s', not '%s'", ck_where(s), model, c->model);
  else if (strcmp(opt, c->optimizer)) snprintf(why, n, "resume: %s holds %s state, but this run uses %s", ck_where(s), opt, c->optimizer);
  else if ((c->start_step = strtoll(st, &end, 10)) < 0 || !*st || *end)
    snprintf(why, n, "resume: %s: metadata step '%s' is not a step", ck_where(s), st);
  else if (load_into(c, s, "", params_base(c), err, sizeof err)) snprintf(why, n, "resume: %s", err);
  else {
    static const char *const sfx[] = {".m", ".v"};
    rc = 0;
    for (int k = 0; k < optim_slots(c) && !rc; k++)
      if (load_into(c, s, sfx[k], optim_base(c, k), err, sizeof err)) snprintf(why, n, "resume: %s", err), rc = -1;
  }
  if (!rc && c->env.rank == 0)
    printf("pipec: resumed from %s (step %lld of %lld)\n", ck_where(s), (long long)c->start_step, (long long)c->steps);
  ck_close(s);
  return rc;
}

void prt_ckpt_start(PrtCtx *c) {
  char why[1200] = "";
  prt_stop_if_any(c, load_start(c, why, sizeof why) != 0, why);
  prt_barrier(c->world_group); /* every rank loaded: only then touch the save folder */
  /* a save folder that cannot be written stops the job now, not after its last step */
  if (c->save_dir && c->env.rank == 0 && (mkdir_p(c->save_dir) || access(c->save_dir, W_OK | X_OK)))
    prt_die(c, "cannot write checkpoints into %s: %s", c->save_dir, strerror(errno));
}

/* ---- saving ---- */
static void write_file(PrtCtx *c, const char *dir, int64_t step, int optim) {
  StWriter *w = st_writer_new();
  char err[1024], v[256], key[300], path[4400];
  int rc = 0;
#define META(k, ...) (snprintf(v, sizeof v, __VA_ARGS__), rc |= st_writer_set_meta(w, k, v, err, sizeof err))
  META("format", "%s", CK_FORMAT), META("model", "%s", c->model), META("step", "%lld", (long long)step), META("tp", "%d", c->tp);
  META("pp", "%d", c->nstages), META("pp_rank", "%d", c->stage), META("tp_rank", "%d", c->tp_rank), META("optimizer", "%s", c->optimizer);
  META("kind", "%s", optim ? "optimizer" : "model");
  META("data_position", "%lld", (long long)step); /* the data windows are a function of the step (runtime/stage.c, window) */
  static const char *const sfx[] = {".m", ".v"}, *const kinds[] = {"none", "rows", "cols", "qkv"};
  for (int i = 0; i < c->nparams && !rc; i++) {
    const RtParam *p = &c->params[i];
    if (!p->first) continue; /* a tied parameter: saved by the lowest pipeline rank holding it */
    int64_t shape[2] = {p->rows, p->cols};
    for (int k = 0; k < (optim ? optim_slots(c) : 1); k++) {
      char name[200];
      snprintf(name, sizeof name, "%s%s", p->name, optim ? sfx[k] : "");
      snprintf(key, sizeof key, "shard:%s", name);
      META(key, "%s %lld %lld %lld %lld", kinds[p->shard & 3], (long long)p->full_rows, (long long)p->full_cols, (long long)p->q_rows,
           (long long)p->kv_rows);
      rc |= st_writer_add(w, name, ST_F32, p->cols ? 2 : 1, shape, (optim ? optim_base(c, k) : params_base(c)) + p->off, err, sizeof err);
    }
  }
#undef META
  snprintf(path, sizeof path, "%s/%s-pp%d-tp%d.safetensors", dir, optim ? "optim" : "model", c->stage, c->tp_rank);
  if (!rc) rc = st_writer_write(w, path, err, sizeof err);
  st_writer_free(w);
  if (rc) prt_die(c, "checkpoint of step %lld: %s", (long long)step, err);
}

static void save(PrtCtx *c, int64_t step) {
  const char *d = c->save_dir;
  char tmp[4200], fin[4200], old[4300];
  snprintf(tmp, sizeof tmp, "%s/step-%lld.tmp", d, (long long)step);
  snprintf(fin, sizeof fin, "%s/step-%lld", d, (long long)step);
  prt_dev_pull(c); /* on a GPU: the parameters and optimizer state to the host arena */
  if (c->env.rank == 0) { /* a fresh temporary folder; leftovers of a crash go */
    if (mkdir_p(d)) prt_die(c, "cannot create the checkpoint folder %s: %s", d, strerror(errno));
    DIR *dd = opendir(d);
    for (struct dirent *e; dd && (e = readdir(dd));) {
      size_t n = strlen(e->d_name);
      char *p = NULL;
      if (!strncmp(e->d_name, "step-", 5) && n > 4 && !strcmp(e->d_name + n - 4, ".tmp") && asprintf(&p, "%s/%s", d, e->d_name) > 0) rm_tree(p);
      free(p);
    }
    if (dd) closedir(dd);
    if (mkdir(tmp, 0755)) prt_die(c, "cannot create %s: %s", tmp, strerror(errno));
  }
  prt_barrier(c->world_group);
  if (c->pipeline == 0) write_file(c, tmp, step, 0), write_file(c, tmp, step, 1);
  prt_barrier(c->world_group);
  if (c->env.rank != 0) return;
  /* publish: one rename; a complete step of the same number (a rerun) is replaced */
  snprintf(old, sizeof old, "%s.old.tmp", fin);
  int had = !rename(fin, old);
  if (rename(tmp, fin)) prt_die(c, "cannot rename %s to %s: %s", tmp, fin, strerror(errno));
  if (file_fsync_dir(fin)) prt_die(c, "cannot sync the folder %s: %s", d, strerror(errno));
  if (had) rm_tree(old);
  /* keep the last K */
  for (;;) {
    DIR *dd = opendir(d);
    long lo = -1;
    int n = 0;
    for (struct dirent *e; dd && (e = readdir(dd));) {
      long s;
      int end = 0;
      if (sscanf(e->d_name, "step-%ld%n", &s, &end) == 1 && !e->d_name[end] && s >= 0) n++, lo = lo < 0 || s < lo ? s : lo;
    }
    if (dd) closedir(dd);
    if (n <= c->keep || lo < 0) break;
    snprintf(old, sizeof old, "%s/step-%ld", d, lo);
    if (rm_tree(old)) break;
  }
  printf("pipec: saved %s\n", fin);
  fflush(stdout);
}

void prt_ckpt_after_step(PrtCtx *c, int64_t s) {
  if (!c->save_dir) return;
  int last = s == c->steps || s == c->stop_after;
  if (last || (c->save_every > 0 && s % c->save_every == 0)) save(c, s);
}
