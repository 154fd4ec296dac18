/* stage.h — what a generated stage program calls (compiler/stagegen.c
 * lowers to these, compiler/llvmgen.c emits the calls).
 *
 * Contract: the generated main() is
 *     return prt_stage_main(argc, argv, pipec_manifest, pipec_step);
 * prt_stage_main reads the manifest (the compiled plan: ranks, parameters,
 * arena layout, training settings), finds this process's rank from the
 * launcher's environment, joins the others (store, host transport),
 * allocates the planned arena once, initialises the parameters, and calls
 * pipec_step once per training step. When the stage has validation data,
 * it also calls pipec_eval(ctx, arena) (the rank's forward actions alone;
 * generated next to pipec_step and found by name: a weak symbol of the
 * runtime) with training off: prt_dropout_forward is then the identity and
 * prt_load_tokens/prt_load_targets read the validation data. pipec_step,
 * pipec_eval and the chunk functions they call touch memory only inside
 * the arena and call only the kernels of lib/kernels.h and the prt_*
 * functions below, whose first argument is the context (void * in the
 * generated code).
 *
 * Options of a stage binary (and of launch, which passes them on):
 *   --steps N        train N steps instead of the compiled number
 *   --log-every N    print a line every N steps (default 1; step 1 and the last always)
 *   --data GLOB      train on these token files (llm.c's or headerless; "-": synthetic)
 *   --val-data GLOB  validate on these ("-": none)
 *   --val-every N    validate every N steps (and before the first, after the last)
 * Step line (rank 0): step, loss, learning rate, gradient norm, ms, tokens/s,
 * MFU (docs/design.md); a progress bar on stderr when stdout and stderr are
 * terminals.
 * Environment: PIPEC_TIMEOUT (seconds, default 60), PIPEC_THREADS (kernel
 * threads per rank; default: the cores divided by the local ranks).
 */
#ifndef PIPEC_RT_STAGE_H
#define PIPEC_RT_STAGE_H
#include <stdint.h>

typedef struct PrtCtx PrtCtx;
typedef void (*PrtStepFn)(void *ctx, char *arena);

int prt_stage_main(int argc, char **argv, const char *manifest, PrtStepFn step);
int prt_launch_main(int argc, char **argv, const char *table, const void *unused);

/* data */
void prt_load_tokens(void *ctx, int mb, int32_t *dst);
void prt_load_targets(void *ctx, int mb, int32_t *dst);
/* ops that need the rank or the step */
void prt_vp_embedding_forward(void *ctx, float *out, const int32_t *ids, const float *W, int N, int C, int64_t rows);
void prt_vp_embedding_backward(void *ctx, float *dW, const float *dout, const int32_t *ids, int N, int C, int64_t rows);
void prt_vp_sumexp(void *ctx, float *st, const float *logits, const int32_t *targets, const float *M, int N, int V);
void prt_vp_xent_backward(void *ctx, float *dlogits, const float *logits, const int32_t *targets, const float *M, const float *S,
                          int N, int V);
void prt_xent_backward(void *ctx, float *losses, float *dlogits, const float *logits, const int32_t *targets, int N, int V);
void prt_dropout_forward(void *ctx, float *out, const float *inp, long n, float p, int op, int mb);
void prt_dropout_backward(void *ctx, float *dinp, const float *dout, long n, float p, int op, int mb);
void prt_loss_add(void *ctx, const float *losses, const int32_t *targets, int N);
/* communication */
void prt_tp_allreduce(void *ctx, float *buf, long n, int op); /* op 0 sum, 1 max */
void prt_pp_group(void *ctx, int begin); /* 1 before a run of sends and receives, 0 after: one NCCL group */
void prt_pp_send(void *ctx, int pp_peer, int tag, const void *buf, long bytes);
void prt_pp_recv(void *ctx, int pp_peer, int tag, void *buf, long bytes);
void prt_dp_allreduce(void *ctx, float *grads, long n);
void prt_grad_ready(void *ctx, int bucket); /* after each backward op that writes a gradient bucket (dp > 1) */
void prt_tied_allreduce(void *ctx, int param, float *grads, long n);
void prt_grad_allreduce(void *ctx, int param, float *grads, long n); /* templates: per parameter group */
void prt_optimizer_step(void *ctx);

#endif
