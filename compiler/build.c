/* build.c — `pipec FILE -o DIR`: the directory a user launches.
 *
 * Writes DIR/plan.json, DIR/schedule.txt, one executable per pipeline rank
 * (DIR/<model>-stage<k>), or, when pipelines differ in shape (templates),
 * one per pipeline j and pipeline rank k (DIR/<model>-p<j>-stage<k>), and
 * DIR/launch. Each stage is lowered
 * (compiler/stagegen.c), emitted and compiled through LLVM
 * (compiler/llvmgen.c) and linked with the runtime. A stage whose inputs
 * (its lowered program, the embedded kernels, the runtime library and
 * pipec itself) hash to what DIR/.pipec/<binary>.hash says is not rebuilt.
 */
#include "compiler/build.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compiler/kernels_emit.h"
#include "compiler/llvmgen.h"
#include "compiler/plan.h"
#include "compiler/report.h"
#include "compiler/stagegen.h"
#include "lib/files.h"
#include "lib/schedule_io.h"
#include "pipec_rtconfig.h"
#include "version.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int mkdirs(const char *path) {
  char b[4096];
  snprintf(b, sizeof b, "%s", path);
  for (char *q = b + 1; *q; q++)
    if (*q == '/') {
      *q = 0;
      if (mkdir(b, 0755) && errno != EEXIST) return -1;
      *q = '/';
    }
  return mkdir(b, 0755) && errno != EEXIST ? -1 : 0;
}

/* FNV-1a, 64 bits */
static uint64_t fnv(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}
static uint64_t fnv_str(uint64_t h, const char *s) { return fnv(h, s, strlen(s) + 1); }

static uint64_t stage_hash(const StageProgram *sp, const Blob *blobs, int nblobs) {
  uint64_t h = 0xCBF29CE484222325ull;
  h = fnv_str(h, PIPEC_VERSION);
  h = fnv_str(h, PIPEC_RT_LIBS);
  h = fnv_str(h, getenv("PIPEC_RT_LIBS") ? getenv("PIPEC_RT_LIBS") : "");
  /* the runtime library and pipec itself: size and time of change */
  const char *files[2] = {PIPEC_RT_LIB_FILE, "/proc/self/exe"};
  for (int i = 0; i < 2; i++) {
    struct stat st;
    if (!stat(files[i], &st)) h = fnv(h, &st.st_size, sizeof st.st_size), h = fnv(h, &st.st_mtim, sizeof st.st_mtim);
  }
  h = fnv_str(h, sp->manifest);
  for (int i = 0; i < sp->nfunc; i++) {
    const SFunc *f = &sp->func[i];
    h = fnv_str(h, f->name);
    for (int k = 0; k < f->ncall; k++) {
      h = fnv_str(h, f->call[k].fn);
      for (int q = 0; q < f->call[k].narg; q++) {
        const SArg *a = &f->call[k].arg[q];
        h = fnv(h, &a->kind, 1), h = fnv(h, &a->base, sizeof a->base), h = fnv(h, &a->v, sizeof a->v), h = fnv(h, &a->f, sizeof a->f);
      }
    }
  }
  for (int i = 0; i < sp->nconst; i++) h = fnv(h, sp->consts[i].v, sizeof sp->consts[i].v);
  for (int i = 0; i < nblobs; i++) h = fnv_str(h, blobs[i].name), h = fnv(h, blobs[i].data, blobs[i].len);
  return h;
}

static int read_hash(const char *path, uint64_t *h) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  unsigned long long v;
  int ok = fscanf(f, "%llx", &v) == 1;
  fclose(f);
  *h = v;
  return ok ? 0 : -1;
}

static int exists(const char *path) { return access(path, X_OK) == 0; }

typedef struct BuildStats {
  double t_kernels;
  int nkernels, have_nvrtc, rebuilt;
} BuildStats;

/* Lowers, compiles and links DIR/<bin>, the program of rank k of pipeline
 * `pipeline` (schedule s), unless DIR/.pipec/<bin>.hash says it is fresh. */
static int build_stage(const Program *p, const OpGraph *g, const BuildOptions *bo, const KernelPlan *kp, const KernelImages *lib,
                       int pipeline, const Schedule *s, int k, const char *bin, BuildStats *bs) {
  const char *dir = bo->outdir;
  const Pipeline *pl = &p->pipes[pipeline];
  char err[1 << 16], path[4096], obj[4096], ll[4096];
  int status = 0;
  Arena sa = {0};
  StageProgram *sp = stage_lower(&sa, p, g, pipeline, s, k, err, sizeof err);
  if (!sp) {
    fprintf(stderr, "pipec: error: %s\n", err);
    arena_free(&sa);
    return 1;
  }
  snprintf(path, sizeof path, "%s/%s", dir, bin);
  snprintf(obj, sizeof obj, "%s/.pipec/%s.o", dir, bin);
  snprintf(ll, sizeof ll, "%s/%s.ll", dir, bin);
  /* the kernels of this rank's ops, compiled (NVRTC's disk cache makes repeats free) */
  KernelPlan sub = {arena_alloc(&sa, sizeof(FusedKernel) * (size_t)(kp->n + 1)), 0, 0};
  for (int i = 0; i < kp->n; i++) {
    int st = -1;
    for (int q = 0; q < pl->nstages; q++)
      if (g->op[kp->k[i].first_op].top >= pl->stages[q].first && g->op[kp->k[i].first_op].top <= pl->stages[q].last) st = q;
    if (st >= 0 && s->stage_rank[st] == k) sub.k[sub.n++] = kp->k[i];
  }
  KernelImages ki;
  double tk = now();
  if (kernels_compile(&sub, g, p, &ki, err, sizeof err)) {
    fprintf(stderr, "pipec: error: %s\n", err);
    arena_free(&sa);
    return 1;
  }
  bs->t_kernels += now() - tk;
  bs->nkernels += ki.nkernels, bs->have_nvrtc = ki.nimg > 0;
  Blob blobs[8];
  int nblobs = 0;
  blobs[nblobs++] = (Blob){"kernels.cu", (const unsigned char *)ki.source, ki.source_len};
  char names[3][64];
  for (int i = 0; i < ki.nimg; i++) {
    snprintf(names[i], sizeof names[i], "kernels.%s.%s", ki.arch[i], ki.img[i].is_ptx ? "ptx" : "cubin");
    blobs[nblobs++] = (Blob){names[i], ki.img[i].data, ki.img[i].size};
  }
  int nmodel = nblobs; /* the model's own (written by --emit-kernels); then the library the device runs */
  char libnames[3][64];
  for (int i = 0; i < lib->nimg; i++) {
    snprintf(libnames[i], sizeof libnames[i], "library.%s.%s", lib->arch[i], lib->img[i].is_ptx ? "ptx" : "cubin");
    blobs[nblobs++] = (Blob){libnames[i], lib->img[i].data, lib->img[i].size};
  }
  if (bo->emit_kernels) {
    if (!ki.nimg && k == 0 && pipeline == 0) printf("NVRTC is not available (%s): writing the CUDA C only\n", ki.why);
    for (int i = 0; i < nmodel && !status; i++) {
      char kpth[4600];
      snprintf(kpth, sizeof kpth, "%s/%s.%s", dir, bin, blobs[i].name);
      if (file_write_atomic(kpth, blobs[i].data, blobs[i].len, err, sizeof err)) {
        fprintf(stderr, "pipec: error: %s\n", err);
        status = 1;
      } else if (i == 0)
        printf("%s: %d kernels\n", kpth, ki.nkernels);
      else
        printf("%s: %zu bytes, %s in %.2f s\n", kpth, blobs[i].len, ki.img[i - 1].from_cache ? "from the cache" : "compiled",
               ki.seconds[i - 1]);
    }
  }
  char hpath[4200];
  snprintf(hpath, sizeof hpath, "%s/.pipec/%s.hash", dir, bin);
  uint64_t h = stage_hash(sp, blobs, nblobs), old;
  int fresh = !read_hash(hpath, &old) && old == h && exists(path) && (!bo->emit_llvm || access(ll, R_OK) == 0) &&
              (!bo->emit_obj || access(obj, R_OK) == 0);
  if (!fresh && !status) {
    unlink(hpath);
    if (llvmgen_stage(sp, bin, blobs, nblobs, bo->emit_llvm ? ll : NULL, obj, err, sizeof err) ||
        link_executable(obj, path, err, sizeof err)) {
      fprintf(stderr, "pipec: error: %s\n", err);
      status = 1;
    } else {
      char hx[32];
      snprintf(hx, sizeof hx, "%016llx\n", (unsigned long long)h);
      if (file_write_atomic(hpath, hx, strlen(hx), err, sizeof err))
        fprintf(stderr, "pipec: warning: %s; the next build redoes this stage\n", err);
      if (!bo->emit_obj) unlink(obj);
      bs->rebuilt++;
    }
  }
  if (!status) {
    char who[64];
    if (plan_is_grid(p)) snprintf(who, sizeof who, "pipeline rank %d", k);
    else snprintf(who, sizeof who, "pipeline %d rank %d", pipeline, k);
    int calls = 0; /* of the training step: pipec_step and the chunk functions it calls (not eval's or generation's) */
    for (int i = 0; i < sp->nfunc; i++) {
      const char *n = sp->func[i].name;
      size_t l = strlen(n);
      if (strcmp(n, "pipec_gen") && strcmp(n, "pipec_eval") && !(l > 2 && !strcmp(n + l - 2, "_g"))) calls += sp->func[i].ncall;
    }
    char mem[32];
    snprintf(mem, sizeof mem, "%.1f MiB", (double)sp->total / 1048576.0);
    char what[48];
    if (p->has_train) snprintf(what, sizeof what, "%d calls per step", calls);
    else snprintf(what, sizeof what, "generation only");
    printf("  %s/%s: %s, %d chunk%s, %s; memory %s (parameters, gradients, optimizer %.1f MiB; "
           "%d activation slot%s x %.1f KiB; workspace %.1f KiB)%s\n",
           dir, bin, who, sp->nchunks, sp->nchunks == 1 ? "" : "s", what, mem,
           (double)(sp->optim_off + sp->optim_floats * 4) / 1048576.0, sp->nslots, sp->nslots == 1 ? "" : "s",
           (double)sp->slot_bytes / 1024.0, (double)sp->ws_bytes / 1024.0, fresh ? ", unchanged" : "");
    if (bo->device_memory && sp->total > bo->device_memory) {
      fprintf(stderr, "pipec: error: %s needs %.2f GiB, more than --device-memory %.2f GiB\n", who,
              sp->total / 1073741824.0, bo->device_memory / 1073741824.0);
      status = 1;
    }
  }
  kernels_images_free(&ki);
  arena_free(&sa);
  return status;
}

int build_program(const Program *p, const OpGraph *g, const BuildOptions *bo) {
  const char *dir = bo->outdir;
  char err[1 << 16], path[4096], obj[4096];
  double t0 = now();
  if (mkdirs(dir)) {
    fprintf(stderr, "pipec: error: cannot create the output folder '%s': %s\n", dir, strerror(errno));
    return 1;
  }
  snprintf(path, sizeof path, "%s/.pipec", dir);
  if (mkdirs(path)) {
    fprintf(stderr, "pipec: error: cannot create '%s': %s\n", path, strerror(errno));
    return 1;
  }
  if (!p->has_train && !p->has_infer) {
    fprintf(stderr, "pipec: error: %s has neither a train { } nor an infer { } section: nothing for its stage programs to run\n",
            p->model_name);
    return 1;
  }
  /* the plan and the schedule, for the user to read */
  snprintf(path, sizeof path, "%s/plan.json", dir);
  if (plan_write_json(path, p, err, sizeof err)) {
    fprintf(stderr, "pipec: error: %s\n", err);
    return 1;
  }
  /* the schedule of each pipeline shape: one for the grid, one per pipeline with templates */
  int grid = plan_is_grid(p), npl = grid ? 1 : p->npipes, status = 0;
  Schedule **sch = calloc((size_t)npl, sizeof *sch);
  {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    for (int j = 0; j < npl && !status; j++) {
      SimResult sim;
      if (!(sch[j] = report_build(p, &p->pipes[j], bo->tflops, &sim, err, sizeof err))) {
        fprintf(stderr, "pipec: error: %s\n", err);
        status = 1;
        break;
      }
      if (bo->schedule_csv) { /* --load-schedule: the user's schedule instead */
        if (!grid) {
          fprintf(stderr, "pipec: error: --load-schedule gives one schedule, but %s's pipelines have different shapes (templates)\n",
                  p->model_name);
          sim_result_free(&sim);
          status = 1;
          break;
        }
        Schedule *in = report_load_csv(p, &p->pipes[j], bo->tflops, bo->schedule_csv, sch[j], &sim);
        schedule_free(sch[j]);
        if (!(sch[j] = in)) {
          status = 1;
          break;
        }
        printf("pipec: the schedule of %s from %s\n", p->model_name, bo->schedule_csv);
      }
      sim_result_free(&sim);
      if (!grid) fprintf(mem, "# pipeline %d (template %s)\n", j, p->pipes[j].template_name);
      schedule_print_text(mem, sch[j]);
    }
    fclose(mem);
    snprintf(path, sizeof path, "%s/schedule.txt", dir);
    if (!status && file_write_atomic(path, text, len, err, sizeof err)) {
      fprintf(stderr, "pipec: error: %s\n", err);
      status = 1;
    }
    free(text);
  }
  /* the kernels: fused once, each stage embeds those of its own ops */
  Arena ka = {0};
  KernelPlan *kp = status ? NULL : kernels_fuse(&ka, g, p);
  BuildStats bs = {0, 0, 1, 0};
  /* the kernel library, the same for every stage: built with pipec (PIPEC_KERNEL_LIBRARY_DIR, or
     $PIPEC_KERNEL_LIBRARY), else compiled now (NVRTC's cache makes that free after the first time) */
  KernelImages lib = {0};
  double tl = now();
  const char *libdir = getenv("PIPEC_KERNEL_LIBRARY");
  if (!status && kernels_library_load(libdir && *libdir ? libdir : PIPEC_KERNEL_LIBRARY_DIR, &lib) &&
      kernels_library_compile(&lib, err, sizeof err)) {
    fprintf(stderr, "pipec: error: %s\n", err);
    status = 1;
  }
  bs.t_kernels += now() - tl;
  int nbins = 0;
  for (int j = 0; j < npl && !status; j++) nbins += sch[j]->nranks;
  if (!status && grid)
    printf("pipec: %s: %d ranks (dp %d x tp %d x pp %d), schedule %s, %d microbatches\n", p->model_name, p->world, p->dp, p->tp, p->pp,
           schedule_names[p->schedule], sch[0]->nmb);
  else if (!status) {
    printf("pipec: %s: %d ranks (%d pipelines from templates x tp %d), schedule %s, microbatches", p->model_name, p->world, p->npipes, p->tp,
           schedule_names[p->schedule]);
    for (int j = 0; j < npl; j++) printf("%s%d", j ? " + " : " ", sch[j]->nmb);
    printf("\n");
  }
  /* one binary per pipeline rank (grid), or per pipeline and pipeline rank (templates) */
  char **bins = calloc((size_t)nbins + 1, sizeof *bins);
  int *first_bin = calloc((size_t)npl + 1, sizeof(int));
  for (int j = 0, b = 0; j < npl && !status; j++) {
    first_bin[j] = b;
    for (int k = 0; k < sch[j]->nranks && !status; k++, b++) {
      char bin[512];
      if (grid) snprintf(bin, sizeof bin, "%s-stage%d", p->model_name, k);
      else snprintf(bin, sizeof bin, "%s-p%d-stage%d", p->model_name, j, k);
      bins[b] = strdup(bin);
      status = build_stage(p, g, bo, kp, &lib, grid ? 0 : j, sch[j], k, bin, &bs);
    }
  }
  /* launch: world rank -> stage binary */
  if (!status) {
    int *kp_ = calloc((size_t)p->world, sizeof(int)), *rp = calloc((size_t)p->world, sizeof(int)), *tp = calloc((size_t)p->world, sizeof(int));
    const char **by_rank = calloc((size_t)p->world, sizeof *by_rank);
    if (plan_rank_table(p, kp_, rp, tp, err, sizeof err)) {
      fprintf(stderr, "pipec: error: %s\n", err);
      status = 1;
    } else {
      for (int r = 0; r < p->world; r++) by_rank[r] = bins[first_bin[grid ? 0 : kp_[r]] + rp[r]];
      snprintf(path, sizeof path, "%s/launch", dir);
      snprintf(obj, sizeof obj, "%s/.pipec/launch.o", dir);
      if (llvmgen_launch(p->model_name, by_rank, p->world, NULL, obj, err, sizeof err) || link_executable(obj, path, err, sizeof err)) {
        fprintf(stderr, "pipec: error: %s\n", err);
        status = 1;
      }
      unlink(obj);
    }
    free(kp_), free(rp), free(tp), free(by_rank);
  }
  if (!status)
    printf("pipec: wrote %s/ in %.2f s (%d CUDA kernels%s in %.2f s; %d of %d stage%s rebuilt); run it with\n"
           "  torchrun --standalone --nproc-per-node %d --no-python %s/launch\n  mpirun -np %d %s/launch\n",
           dir, now() - t0, bs.nkernels, bs.have_nvrtc ? ", cubin sm_80 sm_90 and PTX" : ", CUDA C only: no NVRTC", bs.t_kernels, bs.rebuilt,
           nbins, nbins == 1 ? "" : "s", p->world, dir, p->world, dir);
  for (int b = 0; b < nbins; b++) free(bins[b]);
  free(bins), free(first_bin);
  kernels_images_free(&lib);
  arena_free(&ka);
  for (int j = 0; j < npl; j++)
    if (sch[j]) schedule_free(sch[j]);
  free(sch);
  return status;
}
