/* report.c — see report.h. */
#include "compiler/report.h"

#include <stdlib.h>
#include <string.h>

#include "compiler/cost.h"
#include "lib/files.h"
#include "lib/schedule_io.h"

static int tied_across(const Program *p, const Pipeline *pl) {
  for (int i = pl->stages[pl->nstages - 1].first; i <= pl->stages[pl->nstages - 1].last; i++)
    if (p->mods[i]->tie && pl->nstages > 1) return 1;
  return 0;
}

static double tokens_per_microbatch(const Program *p) {
  int64_t parts = 0;
  for (int i = 0; i < p->npipes; i++) parts += p->pipes[i].microbatches;
  double seqs = parts ? (double)p->batch / (double)parts : 1;
  return seqs * (double)p->seq;
}

void report_stage_costs(const Program *p, const Pipeline *pl, double tflops, StageCost *out) {
  StageCostSummary *sc = calloc((size_t)pl->nstages, sizeof *sc);
  cost_stages(p, pl, sc);
  /* a stage's FLOPs are shared by its tp ranks */
  double tok = tokens_per_microbatch(p), ms_per_flop = 1e3 / (tflops * 1e12) / (p->tp > 0 ? p->tp : 1);
  for (int s = 0; s < pl->nstages; s++) {
    double f = sc[s].fwd_flops * tok * ms_per_flop, b = sc[s].bwd_flops * tok * ms_per_flop;
    out[s] = (StageCost){f, b, b / 2, b / 2};
  }
  free(sc);
}

static int schedule_kind(const Program *p) { return p->has_train || !p->has_infer ? (int)p->schedule : SCHED_FORWARD_ONLY; }

Schedule *report_build(const Program *p, const Pipeline *pl, double tflops, SimResult *sim, char *err, size_t errlen) {
  int v = p->virtual_stages > 0 ? p->virtual_stages : 1, pp = pl->nstages / v;
  Schedule *c = schedule_generate(schedule_kind(p), pp, v, pl->microbatches, err, errlen);
  if (!c) return NULL;
  Schedule *s = schedule_lower(c, p->dp, tied_across(p, pl), p->has_train || !p->has_infer);
  schedule_free(c);
  StageCost *cs = calloc((size_t)pl->nstages, sizeof *cs);
  report_stage_costs(p, pl, tflops, cs);
  *sim = schedule_simulate(s, cs, 0);
  free(cs);
  return s;
}


/* The schedule in a CSV file (PyTorch's layout) for pipeline pl, checked
   against the generated one's shape, lowered (a compute-only file gets its
   communication) and validated by simulation; NULL after printing why. */
Schedule *report_load_csv(const Program *p, const Pipeline *pl, double tflops, const char *csv, const Schedule *shape, SimResult *sim) {
  char err[512] = "";
  size_t len;
  char *text = file_read_all(csv, &len);
  if (!text) {
    fprintf(stderr, "pipec: error: cannot read schedule '%s'\n", csv);
    sim_result_free(sim);
    return NULL;
  }
  Schedule *in = schedule_read_csv(text, len, shape->nstages, shape->nmb, shape->stage_rank, err, sizeof err);
  free(text);
  if (!in) {
    fprintf(stderr, "%s: error: %s\n", csv, err);
    sim_result_free(sim);
    return NULL;
  }
  int has_comm = 0;
  for (int r = 0; r < in->nranks; r++)
    for (int k = 0; k < in->rank[r].n; k++) has_comm |= in->rank[r].a[k].kind >= ACT_SEND_F;
  StageCost *cs = calloc((size_t)pl->nstages, sizeof *cs);
  report_stage_costs(p, pl, tflops, cs);
  sim_result_free(sim);
  /* A compute-only file (PyTorch's compute_only format) is validated as
     written, so the steps named are the file's; then it gets its
     communication. A file with communication is taken as it is. */
  *sim = schedule_simulate(in, cs, 0);
  if (sim->ok && !has_comm) {
    Schedule *low = schedule_lower(in, p->dp, tied_across(p, pl), p->has_train || !p->has_infer);
    schedule_free(in);
    in = low;
    sim_result_free(sim);
    *sim = schedule_simulate(in, cs, 0);
  }
  free(cs);
  if (!sim->ok) {
    fprintf(stderr, "%s: error: invalid schedule: %s\n", csv, sim->error);
    schedule_free(in), sim_result_free(sim);
    return NULL;
  }
  return in;
}

static const char *fmt_time(char *buf, double ms) {
  if (ms >= 100) snprintf(buf, 32, "%.1f ms", ms);
  else if (ms >= 0.1) snprintf(buf, 32, "%.3f ms", ms);
  else snprintf(buf, 32, "%.2f us", ms * 1e3);
  return buf;
}

static void summary(FILE *out, const Schedule *s, const SimResult *r, const char *what, double tflops) {
  char b1[32];
  fprintf(out, "# simulated %s at %g TFLOP/s per rank: step %s, mean bubble %.1f%%\n", what, tflops, fmt_time(b1, r->step_time),
          100 * r->bubble_mean);
  for (int k = 0; k < s->nranks; k++)
    fprintf(out, "#   rank %d: busy %s, bubble %.1f%%, peak in-flight %d microbatch%s\n", k, fmt_time(b1, r->busy[k]),
            100 * r->bubble[k], r->peak_inflight[k], r->peak_inflight[k] == 1 ? "" : "es");
  if (s->nranks < 2) return;
  char why[400];
  if (schedule_rendezvous(s, why, sizeof why))
    fprintf(out, "# on GPUs: each run of SEND/RECV is one NCCL group (checked: never waits forever on rendezvous sends)\n");
  else
    fprintf(out, "# on GPUs: SEND/RECV through the host transport, since on NCCL's rendezvous sends %s\n", why);
}

int report_schedules(FILE *out, const Program *p, const ReportOptions *opt) {
  int status = 0;
  for (int i = 0; i < p->npipes && !status; i++) {
    const Pipeline *pl = &p->pipes[i];
    if (i && pl->stages == p->pipes[i - 1].stages) continue; /* a replica */
    char err[512] = "";
    SimResult sim = {0};
    Schedule *s = report_build(p, pl, opt->tflops, &sim, err, sizeof err);
    if (!s) {
      fprintf(stderr, "pipec: error: %s\n", err);
      return 1;
    }
    const char *what = "with the cost model";
    if (opt->csv_in) {
      Schedule *in = report_load_csv(p, pl, opt->tflops, opt->csv_in, s, &sim);
      schedule_free(s);
      if (!in) return 1;
      s = in;
      what = "schedule from CSV";
    } else if (!sim.ok) {
      fprintf(stderr, "pipec: internal error: the generated %s schedule is invalid: %s\n", schedule_names[p->schedule], sim.error);
      schedule_free(s), sim_result_free(&sim);
      return 1;
    }
    if (pl->template_name) fprintf(out, "# pipeline template %s\n", pl->template_name);
    if (opt->dump) {
      schedule_print_text(out, s);
      summary(out, s, &sim, what, opt->tflops);
    }
    if (opt->grid) schedule_print_grid(out, s, &sim, opt->color);
    const char *suffix = pl->template_name && p->npipes > 1 ? pl->template_name : NULL;
    if (opt->csv_out || opt->svg_out) {
      for (int k = 0; k < 2; k++) {
        const char *path = k ? opt->svg_out : opt->csv_out;
        if (!path) continue;
        char buf[1024];
        if (suffix) { /* one file per template: name.TEMPLATE.ext */
          const char *dot = strrchr(path, '.');
          snprintf(buf, sizeof buf, "%.*s.%s%s", dot ? (int)(dot - path) : (int)strlen(path), path, suffix, dot ? dot : "");
          path = buf;
        }
        FILE *f = fopen(path, "w");
        if (!f) {
          fprintf(stderr, "pipec: error: cannot write '%s'\n", path);
          status = 1;
          break;
        }
        if (k) {
          char title[256];
          snprintf(title, sizeof title, "%s: %s, %d ranks, %d microbatches", p->model_name, schedule_names[p->schedule], s->nranks, s->nmb);
          schedule_write_svg(f, s, &sim, title);
        } else
          schedule_write_csv(f, s);
        if (fclose(f)) {
          fprintf(stderr, "pipec: error: cannot write '%s'\n", path);
          status = 1;
        }
      }
    }
    schedule_free(s);
    sim_result_free(&sim);
  }
  return status;
}
