/* report.h — the schedule of a checked Program, shown to the user before
 * anything runs: the IR per rank, its simulation with the cost model
 * (step time, bubble and peak in-flight microbatches per rank), CSV export
 * and import, the terminal grid and the SVG chart.
 *
 * Contract: report_schedules() builds one schedule per distinct pipeline
 * (replicas share one), lowers it, validates it by simulation, and writes
 * what `opt` asks for. A schedule read from CSV replaces the generated one
 * after the same validation. Returns 0, or 1 after printing an error.
 */
#ifndef PIPEC_REPORT_H
#define PIPEC_REPORT_H
#include <stdio.h>

#include "compiler/frontend.h"
#include "lib/schedule.h"

typedef struct ReportOptions {
  int dump;               /* print the IR and the simulation summary */
  int grid;               /* print the time x rank grid */
  int color;              /* ANSI colours in the grid */
  const char *csv_out;    /* write PyTorch-layout CSV here */
  const char *csv_in;     /* read the schedule from this CSV instead */
  const char *svg_out;    /* write the Gantt chart here */
  double tflops;          /* sustained TFLOP/s per rank for the time estimate */
} ReportOptions;

int report_schedules(FILE *out, const Program *p, const ReportOptions *opt);

/* Stage costs of one pipeline in milliseconds per microbatch at `tflops`. */
void report_stage_costs(const Program *p, const Pipeline *pl, double tflops, StageCost *out);

/* Builds, lowers and simulates the schedule of pipeline `pl`. The caller
 * frees both with schedule_free / sim_result_free. Returns NULL and fills
 * err when the schedule cannot be built. */
Schedule *report_build(const Program *p, const Pipeline *pl, double tflops, SimResult *sim, char *err, size_t errlen);
/* --load-schedule: the CSV's schedule for pipeline pl, shaped like `shape`
   (report_build's), lowered and validated; NULL after printing the error.
   *sim is replaced by the loaded schedule's simulation (freed on failure). */
Schedule *report_load_csv(const Program *p, const Pipeline *pl, double tflops, const char *csv, const Schedule *shape, SimResult *sim);

#endif
