/* How the ranks of one host talk to NCCL when there are more ranks than
 * GPUs, for the rank launcher (launcher.c) and ulysses_perf's launch modes
 * (bench/driver_rank.c). Pure: no CUDA, no NCCL call, tested on the CPU.
 *
 * From NCCL 2.30, NCCL_MULTI_RANK_GPU_ENABLE=1 lets ranks of one comm share
 * a GPU: one host, P2P between the ranks, every rank in the load/store team.
 * Before, each rank must look like its own host (NCCL_HOSTID) and the ranks
 * talk over loopback sockets. The user's setting of
 * NCCL_MULTI_RANK_GPU_ENABLE decides where it is set. */
#ifndef ULYSSES_GPU_SHARING_H_
#define ULYSSES_GPU_SHARING_H_

#include <stddef.h>

typedef enum {
  GPU_SHARING_P2P,     /* NCCL's multi-rank-per-GPU mode */
  GPU_SHARING_SOCKETS, /* one host id per rank, loopback sockets */
} gpuSharingMode;

/* The first NCCL with the multi-rank-per-GPU mode. */
#define GPU_SHARING_P2P_NCCL 23000

/* The mode for a loaded NCCL of loadedNcclVersion (ncclGetVersion) and the
 * user's NCCL_MULTI_RANK_GPU_ENABLE (NULL: unset). why, when not NULL, gets
 * a static phrase saying what decided. */
gpuSharingMode gpuSharingChoose(int loadedNcclVersion, const char* multiRankSetting,
                                const char** why);

typedef struct {
  const char* name;
  char value[32];
  int overridesUser; /* set even where the user has set it */
} gpuSharingVariable;

#define GPU_SHARING_MAX_VARIABLES 8

/* The environment rank needs in mode: fills out (GPU_SHARING_MAX_VARIABLES
 * entries) and returns how many. NCCL_HOSTID is always among them in socket
 * mode, overriding the user's (the mode needs a host per rank). */
int gpuSharingVariables(gpuSharingMode mode, int rank, gpuSharingVariable* out);

/* "P2P (NCCL_MULTI_RANK_GPU_ENABLE=1)" or "loopback sockets, one host id per rank". */
const char* gpuSharingName(gpuSharingMode mode);

/* The message for an NCCL communicator of nRanks ranks that did not come up:
 * ncclError is NCCL's error (its name and last error), or NULL when the init
 * gave no answer within timeoutSeconds. Names the rank count, whether ranks
 * share a GPU and in which mode, and what to try. Writes at most size bytes
 * of out, always terminated. */
void gpuSharingInitAdvice(char* out, size_t size, int nRanks, int sharedGpu, gpuSharingMode mode,
                          const char* ncclError, int timeoutSeconds);

#endif /* ULYSSES_GPU_SHARING_H_ */
