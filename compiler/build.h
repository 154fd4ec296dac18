/* build.h — `pipec FILE -o DIR`: stage executables, launch, plan and schedule.
 *
 * Contract: build_program() takes a checked Program and the op graph of one
 * tensor-parallel rank (all tp ranks run the same code) and writes DIR (see
 * build.c for the files). Returns 0, or 1 after printing the error. */
#ifndef PIPEC_BUILD_H
#define PIPEC_BUILD_H
#include <stdint.h>

#include "compiler/frontend.h"
#include "compiler/opgraph.h"

typedef struct BuildOptions {
  const char *outdir;
  int emit_llvm, emit_obj, emit_kernels; /* keep DIR/<stage>.ll, DIR/.pipec/<stage>.o, DIR/kernels.* */
  double tflops;                         /* for the schedule's simulated timing */
  int64_t device_memory;                 /* refuse a stage needing more (0: no limit) */
  const char *schedule_csv;              /* --load-schedule: the schedule to compile instead of the generated one */
} BuildOptions;

int build_program(const Program *p, const OpGraph *g, const BuildOptions *bo);

#endif
