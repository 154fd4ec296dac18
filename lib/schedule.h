/* schedule.h — the schedule IR: what every rank of one pipeline does in
 * one training (or inference) step, in order.
 *
 * Notation is PyTorch's torch.distributed.pipelining, so users can read
 * and exchange schedules:  [stage][ACTION][microbatch]
 *   0F1        stage 0, forward of microbatch 1
 *   3B0        stage 3, full backward of microbatch 0
 *   2I4 / 2W4  the two halves of a backward: gradient for the input (I),
 *              then for the weights (W) — zero-bubble schedules part them
 *   1SEND_F1   stage 1 sends microbatch 1's activation to stage 2
 *   2RECV_F1   stage 2 receives it
 *   2SEND_B0   stage 2 sends microbatch 0's input gradient to stage 1
 *   1RECV_B0   stage 1 receives it
 *   0REDUCE_GRAD  stage 0's gradients reduced over data parallel
 * plus two of pipec's own, without stage or microbatch:
 *   TIED_ALLREDUCE  the tied weights' gradients summed over the tied group
 *                   (first and last stage share wte)
 *   STEP            the optimizer step
 *
 * Contract: the generators (compiler/schedule.c) emit compute-only lists;
 * schedule_lower() inserts the communication; schedule_simulate() validates
 * any schedule (generated or read from CSV) and times it. This header is
 * shared with the runtime, which executes the same actions.
 */
#ifndef PIPEC_SCHEDULE_H
#define PIPEC_SCHEDULE_H
#include <stddef.h>
#include <stdio.h>

typedef enum {
  ACT_F, ACT_B, ACT_I, ACT_W,
  ACT_SEND_F, ACT_RECV_F, ACT_SEND_B, ACT_RECV_B,
  ACT_REDUCE_GRAD, ACT_TIED_ALLREDUCE, ACT_STEP,
  ACT_COUNT
} ActKind;

extern const char *const act_names[ACT_COUNT]; /* "F", "B", ..., "STEP" */

typedef struct Action {
  int kind;  /* ActKind */
  int stage; /* -1 for TIED_ALLREDUCE and STEP */
  int mb;    /* -1 for REDUCE_GRAD, TIED_ALLREDUCE and STEP */
} Action;

typedef struct RankActions {
  Action *a;
  int n, cap;
} RankActions;

typedef enum { PLACE_LOOP, PLACE_V } StagePlacement;

typedef struct Schedule {
  int nranks;        /* ranks of the pipeline (pp) */
  int nstages;       /* stages (model chunks): nranks x virtual */
  int nmb;           /* microbatches per step */
  int *stage_rank;   /* stage -> rank that runs it */
  RankActions *rank; /* per rank, in order */
} Schedule;

/* stage -> rank for `nstages` chunks over `nranks` ranks. loop: s % p;
 * V (two chunks per rank): s < p ? s : 2p-1-s. */
void placement_fill(int *stage_rank, int nranks, int nstages, StagePlacement how);

Schedule *schedule_new(int nranks, int nstages, int nmb, const int *stage_rank);
void schedule_free(Schedule *s);
void schedule_push(Schedule *s, int rank, Action a);

/* SEND_F, RECV_F, SEND_B or RECV_B: a message between pipeline neighbours */
int action_is_p2p(int kind);

/* "0F1", "1SEND_F1", "STEP". Returns the length written (snprintf-like). */
int action_format(char *buf, size_t n, Action a);
/* Parses one action; returns 0 on success, -1 if `text` is not an action. */
int action_parse(const char *text, Action *out);

/* Adds SEND/RECV around every F and B/I whose neighbour stage is on
 * another rank (the receive just before its use, the send just after the
 * producer), then REDUCE_GRAD per stage when dp > 1, TIED_ALLREDUCE when
 * tied weights span ranks, and STEP. Compute order is unchanged. */
Schedule *schedule_lower(const Schedule *compute, int dp, int tied_first_last, int optimizer_step);

/* ---- simulation: validation and timing ---- */
typedef struct StageCost {
  double f, b, i, w; /* time of one microbatch's F, B, I, W on that stage */
} StageCost;

typedef struct SimResult {
  int nranks;
  int ok;               /* 0: invalid; `error` says where */
  char error[512];
  double step_time;     /* finish of the last action */
  double *busy;         /* per rank: compute time */
  double *bubble;       /* per rank: idle fraction of step_time */
  double bubble_mean;   /* mean over ranks */
  int *peak_inflight;   /* per rank: most microbatch-chunks whose activations are held */
  int peak_inflight_max;
  double **start, **end; /* per rank, per action: when it ran (valid when ok) */
} SimResult;

/* Runs the schedule: each rank executes its actions in order, an action
 * starts when its rank is free and its inputs are there (sends do not
 * block; a receive waits for its send; comm_time is added per transfer).
 * Checks: every F before its B/I on the stage, I before W, counts per
 * stage equal nmb, each send matched by exactly one receive, no deadlock.
 * costs has nstages entries; NULL means F=1, B=2, I=1, W=1 everywhere. */
SimResult schedule_simulate(const Schedule *s, const StageCost *costs, double comm_time);
void sim_result_free(SimResult *r);

/* Whether the lowered schedule runs on rendezvous point-to-point (NCCL's
 * send/recv: a send completes only once its receive is posted) when each
 * run of consecutive SEND/RECV actions of a rank is one NCCL group: the
 * operations between two ranks pair in issue order on both sides, and no
 * rank waits forever. 1, or 0 with the reason in why. */
int schedule_rendezvous(const Schedule *s, char *why, size_t whylen);

#endif
