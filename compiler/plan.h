/* plan.h — the rank plan: which rank runs which stage(s), and the process
 * groups the runtime builds (pipec --dump-plan, plan.json).
 *
 * Contract: both functions read a checked Program (pipe_frontend's result)
 * and never change it; they allocate in a private Arena (out of memory
 * exits with status 3, as everywhere in pipec) and free it before returning.
 * The plan is a pure function of the Program, so the same file gives the
 * same output byte for byte.
 *
 * Layout. When every pipeline places the same stages (no templates, or one
 * template shape) the ranks form a tp x dp x pp grid laid out by
 * Program.order, fastest first; with the default tp-dp-pp (Megatron's)
 *   rank = tp_rank + dp_rank*TP + pp_rank*TP*DP.
 * With virtual = v > 1 there are pp*v stages (chunks); pipeline rank r holds
 * chunks r, r+pp, r+2pp, ... (loop placement), except under schedule zbv,
 * where it holds r and 2pp-1-r (a V; for larger v the V repeats). The
 * dp_rank is the pipeline's index in Program.pipes.
 * When pipelines differ (Oobleck templates), ranks go pipeline after
 * pipeline in Program.pipes order and, within one, tp fastest then stage:
 *   rank = base(pipeline) + stage*TP + tp_rank,
 * pp_rank is the stage, dp_rank the pipeline; Program.order plays no part.
 *
 * Groups (each a list of ranks; lists sorted by their first rank):
 *   tp    same pipeline and pp rank, by tp rank
 *   dp    grid layout only: same tp and pp rank, by dp rank
 *   pp    same pipeline and tp rank, by pp rank
 *   tied  for each module that others tie to (lm_head tie = wte): the ranks
 *         of one pipeline and tp rank holding it or a module tied to it, when
 *         that is more than one rank (wte and lm_head on the first and last
 *         stage: none when pp = 1, nor under zbv, whose V puts both on pp
 *         rank 0)
 *   per-module dp (templates only): for each top-level module and tp rank,
 *         the ranks holding that module in every pipeline, in pipeline order
 */
#ifndef PIPEC_PLAN_H
#define PIPEC_PLAN_H
#include <stddef.h>
#include <stdio.h>

#include "compiler/frontend.h"

/* The plan as text: a summary line, the layout, one line per rank, then the
 * groups as Python lists (`tp groups: [[0, 1], [2, 3]]`). Returns 0; -1
 * (after a line on stderr) when the Program is not self-consistent. */
int plan_print(FILE *out, const Program *p);

/* The plan as JSON at `path`, written atomically (a temporary file beside
 * it, flushed and fsync'ed, then renamed over it). Returns 0, or -1 with a
 * message in err (nothing is left behind). Keys: model, world, tp, dp, pp
 * (with templates: the longest pipeline),
 * virtual, order ("tp-dp-pp"), layout ("grid" | "templates"), schedule,
 * microbatches (null with differing pipelines), pipelines [{index,
 * template, microbatches, stages [{index, pp_rank, first, last, modules,
 * ranks (by tp rank)}]}], ranks [{rank, pipeline, template, pp_rank,
 * tp_rank, dp_rank, stages}], groups {tp, dp (grid only), pp, tied, ties
 * [{owner, users, groups}], module_dp [{module, groups}] (templates only)}. */
int plan_write_json(const char *path, const Program *p, char *err, size_t errlen);

/* 1 when every pipeline places the same stages (the grid layout: one
 * program per pipeline rank serves every pipeline), 0 with templates of
 * different shapes (one program per pipeline and pipeline rank). */
int plan_is_grid(const Program *p);

/* Each world rank's pipeline (= dp rank in the grid layout), pipeline rank
 * and tp rank (arrays of p->world entries). 0, or -1 with err. */
int plan_rank_table(const Program *p, int *pipeline, int *pp_rank, int *tp_rank, char *err, size_t errlen);

#endif
