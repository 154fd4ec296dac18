/* schedule_io.h — schedules in and out: plain text, PyTorch's CSV, a
 * terminal grid and an SVG Gantt chart (lib/schedule.h holds the IR).
 *
 * CSV is torch.distributed.pipelining's layout (_dump_csv / _load_csv):
 * csv.writer rows, row index = rank, one action string per cell, e.g.
 *     0F0,0F1,0F2,0B0,0F3,0B1,0B2,0B3
 *     1F0,1B0,1F1,1B1,1F2,1B2,1F3,1B3
 * Rows end in "\r\n" as Python's csv module writes them; the reader takes
 * "\n", "\r\n" or "\r".
 */
#ifndef PIPEC_SCHEDULE_IO_H
#define PIPEC_SCHEDULE_IO_H
#include <stddef.h>
#include <stdio.h>

#include "lib/schedule.h"

/* Readable form, one line per rank:
 *     # pipec schedule: 2 ranks, 2 stages, 4 microbatches
 *     # stage -> rank: 0->0 1->1
 *     rank 0: 0F0 0SEND_F0 0F1 ...
 *     rank 1: 1RECV_F0 1F0 ...                                          */
void schedule_print_text(FILE *out, const Schedule *s);

/* PyTorch's CSV: one row per rank, the action strings comma-separated,
 * nothing else (no header). A rank without actions is an empty row. */
void schedule_write_csv(FILE *out, const Schedule *s);

/* Reads PyTorch-layout CSV (text, len bytes; need not be NUL-terminated).
 * Row r holds rank r's actions in order. Accepted: "\r\n", "\n" or "\r"
 * line ends, a UTF-8 byte-order mark, cells in double quotes ("" inside
 * quotes is a quote), spaces around a cell, empty cells (idle slots of a
 * compute-only PyTorch schedule; skipped), trailing commas, blank lines at
 * the end. A blank line before the last row is a rank with no actions.
 *
 * stage_rank (nstages entries, from the compiled plan): the rows must
 * number the ranks it implies (highest rank + 1) and every action must sit
 * on its stage's row. stage_rank NULL: ranks = rows, and each stage's rank
 * is the row its actions are on (all on one row). nstages <= 0 or nmb <= 0
 * (only with stage_rank NULL for nstages) take the highest stage or
 * microbatch seen + 1.
 *
 * Returns a new schedule, or NULL with a message in err. Rows and columns
 * in messages count from 1 (as an editor or a spreadsheet shows them):
 *     row 2, column 3: '1X0' is not an action (expected e.g. 0F1, 1SEND_F1)
 *     row 1, column 5: '4F0': there is no stage 4; stages are 0 to 3
 *     row 1, column 2: '0F9': there is no microbatch 9; microbatches are 0 to 7
 *     row 1, column 4: '1F0': stage 1 runs on rank 1 (row 2), not on rank 0
 *     row 2, column 1: '0B0': stage 0 is already on row 1; a stage runs on one rank
 *     the schedule has 3 rows, but the plan has 4 ranks (one row per rank)
 *     stage 2 is on no row, so its rank is unknown
 *     row 3, column 2: a quoted cell is not closed
 *     the schedule is empty
 * Only the form is checked here; schedule_simulate() checks the order. */
Schedule *schedule_read_csv(const char *text, size_t len, int nstages, int nmb, const int *stage_rank, char *err,
                            size_t errlen);

/* A time x rank grid for the terminal. Columns are time slots: one per
 * quantum (the shortest compute time) when every compute action starts and
 * ends on that quantum, else one per distinct start time of a compute
 * action (then not to scale). A cell shows the action starting there (F3,
 * B3, I3, W3; 2F3 with the stage on a rank holding several stages), '-'
 * while it continues and '.' when idle. Each rank's row ends with its
 * bubble fraction and peak in-flight, the grid with the step time. Lines
 * stay within 200 characters: long grids wrap into blocks of columns.
 * r NULL or not ok: the compute actions in order, untimed. color = 1: ANSI
 * colours per stage (F in the stage's colour, B/I on it, W dim). */
void schedule_print_grid(FILE *out, const Schedule *s, const SimResult *r, int color);

/* A standalone SVG 1.1 Gantt chart: x = time, a row per rank, a rect per
 * compute action coloured by stage (F light, B full, I dark, W hatched),
 * labelled ("0F3") where the label fits, each with a <title> tooltip;
 * bubbles are the empty lane; time axis, legend, title (NULL: "pipec
 * schedule") and a summary line: step time, mean bubble, peak in-flight per
 * rank. Returns 0, or -1 (nothing written) when r is NULL or not ok or
 * its rank count differs, or -1 when writing failed. */
int schedule_write_svg(FILE *out, const Schedule *s, const SimResult *r, const char *title);

#endif
