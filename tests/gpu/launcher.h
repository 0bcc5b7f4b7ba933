/* Runs P rank processes of one program, the way the GPU tests and the benches
 * need them: each rank its own process and GPU; where there are fewer GPUs than
 * ranks, the ranks share them in gpu_sharing.h's mode (NCCL's multi-rank-per-GPU
 * P2P from NCCL 2.30, else one host id per rank over loopback sockets). Rank 0
 * hands the ncclUniqueId to the others through a file. */
#ifndef ULYSSES_LAUNCHER_H_
#define ULYSSES_LAUNCHER_H_

#include <nccl.h>

/* Parent side. Starts nRanks copies of `program` with the NULL-terminated
 * `args` (may be NULL) followed by "--rank R --nranks P --id-file F", waits for
 * all of them, and kills every rank once timeoutSeconds have passed. Returns 0
 * when every rank exited with status 0; otherwise prints which rank failed or
 * timed out to stderr and returns 1. */
int launcherRun(const char* program, const char* const* args, int nRanks, int timeoutSeconds);

/* Rank side. */
typedef struct {
  int rank;
  int nRanks;
  int device;          /* the CUDA device this rank uses */
  int deviceCount;     /* the CUDA devices the parent saw: fewer than nRanks, ranks share */
  const char* idFile;
} launcherRank;

/* Fills rank from argv's "--rank R --nranks P --id-file F"; returns 1 when
 * the process is a rank, 0 when it is not (it is the parent). */
int launcherParseRank(int argc, char** argv, launcherRank* rank);

/* Selects the rank's device, exchanges the unique id through the file (rank 0
 * writes it atomically, the others poll for at most timeoutSeconds) and
 * initialises a blocking NCCL communicator (launcherCommInitRank). Returns 0
 * on success, 1 after printing why on stderr. */
int launcherInitComm(const launcherRank* rank, ncclComm_t* comm, int timeoutSeconds);

/* ncclCommInitRank of a blocking communicator, bounded: a helper thread
 * (on `device`) makes it while this one waits at most timeoutSeconds, as a
 * rank count that NCCL refuses on one GPU may hang there. A failure prints
 * on stderr what gpuSharingInitAdvice says for sharedGpu and the sharing mode
 * of this process's environment, and returns 1; a timeout prints the same and
 * ends the process with status 2 (the helper thread is stuck in NCCL). */
int launcherCommInitRank(ncclComm_t* comm, int nRanks, ncclUniqueId id, int rank, int device,
                         int sharedGpu, int timeoutSeconds);

#endif /* ULYSSES_LAUNCHER_H_ */
