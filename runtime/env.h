/* env.h — who this process is, from the launcher's environment.
 *
 * Contract: prt_env_read() looks at the variables of the launchers in this
 * order and takes the first that is complete:
 *   torchrun  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
 *             MASTER_PORT, TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT
 *             (the elastic agent serves the TCPStore: has_agent_store = 1
 *             when TORCHELASTIC_USE_AGENT_STORE=True, or, where that is
 *             unset, when TORCHELASTIC_RUN_ID is set; torchrun sets it False
 *             with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 and in older c10d
 *             rendezvous, and then rank 0 serves)
 *   Open MPI  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK,
 *             OMPI_COMM_WORLD_LOCAL_SIZE
 *   MPICH     PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
 *   Slurm     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE
 *   none      rank 0 of 1 ("single")
 * "Complete" means the rank and world variables are set; without the local
 * ones a rank counts as on one node with all others (Slurm: the node's count
 * from SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE and SLURM_NODEID).
 * An empty variable counts as unset.
 * MASTER_ADDR / MASTER_PORT (default 127.0.0.1 and 29500) name the store
 * for every launcher; without an agent rank 0 serves it. PIPEC_TIMEOUT
 * (seconds, default 60) bounds every wait. A variable that is set but not a
 * number, or a rank outside [0, world), is an error (returns -1, err says
 * which variable and value, e.g. 'RANK="1x" is not an integer',
 * 'RANK=8 is outside [0, 8) (WORLD_SIZE=8)').
 */
#ifndef PIPEC_RT_ENV_H
#define PIPEC_RT_ENV_H
#include <stddef.h>

typedef struct PrtEnv {
  int rank, world, local_rank, local_world;
  const char *launcher;   /* "torchrun", "openmpi", "mpich", "slurm", "single" */
  char master_addr[256];
  int master_port;
  char run_id[128];       /* TORCHELASTIC_RUN_ID, else "none" */
  int restart;            /* TORCHELASTIC_RESTART_COUNT, else 0 */
  int has_agent_store;    /* 1: connect as a client only; 0: rank 0 serves */
  double timeout_s;       /* PIPEC_TIMEOUT */
} PrtEnv;

int prt_env_read(PrtEnv *e, char *err, size_t errlen);

#endif
