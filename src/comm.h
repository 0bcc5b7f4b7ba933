/* The library's communicator, and what the files that work on it share: its
 * CUDA backend, its device, its references and its one-pass state. */
#ifndef ULYSSES_COMM_H_
#define ULYSSES_COMM_H_

#include <pthread.h>
#include <stdatomic.h>

#include "one_pass.h"
#include "pipeline.h"

/* Plans whose check passed eagerly, remembered so that a capture of the same
 * plan may go ahead without the check's host synchronisation. */
#define ULYSSES_CHECKED_PLANS 64

struct ulyssesComm {
  ncclComm_t nccl;
  int nRanks;
  int rank;
  int cudaDevice;
  /* Pinned, mapped: the host reads it without synchronising. Only the
   * kernels of this comm's one device write it (atomicOr, which is atomic
   * among that device's threads even on a link without host-native atomics);
   * the host only reads it, except in ulyssesCommClearAsyncError, which the
   * caller calls once the kernels that could write it have completed. */
  uint32_t* hostStatus;
  uint32_t* deviceStatus; /* the same word as the kernels address it */
  int64_t* lengthScratch; /* device: nRanks + 1 entries for ulyssesGatherLengthsHost and
                             the plan check */
  int checkPlans;
  /* Read by every call without a lock: a watchdog thread may abort while
   * another thread is inside an exchange. */
  atomic_int aborted;
  /* Held around every use of nccl that may run on another thread than the
   * exchanges (ncclCommGetAsyncError, ncclCommAbort), so that the abort never
   * frees the NCCL communicator under a query; and around checked[] and
   * reportedAsync. Never held across a call that can block. */
  pthread_mutex_t lock;
  ncclResult_t abortedWith; /* NCCL's asynchronous error just before the abort */
  /* What ulyssesCommGetAsyncError last reported: an error is logged once,
   * when it is first reported, not on every poll. */
  ulyssesResult_t reportedAsync;
  uint64_t checked[ULYSSES_CHECKED_PLANS];
  int checkedCount, checkedNext;
  /* The registry's reference while the comm is live, plus one per public call
   * in progress; under the registry's lock. The last release frees. */
  int references;
  struct ulyssesOnePassState* onePass;
};

/* The library's backend for call: NCCL on call->comm (none for the local
 * stages) and the kernels, on call->stream (src/cuda_backend.c). */
ulyssesBackend ulyssesCudaBackend(const ulyssesCall* call);

ulyssesResult_t ulyssesCudaCheck(cudaError_t error, const char* what);

/* An NCCL call's result as the library reports it; for a non-blocking
 * communicator first waits, on the host, until NCCL has finished enqueuing
 * (ncclInProgress), so that what follows on the stream comes after NCCL's work. */
ulyssesResult_t ulyssesNcclCheck(ncclResult_t result, ncclComm_t comm, const char* what);

/* Runs work on the comm's device, as NCCL does, and restores the caller's. */
typedef struct {
  int previous;
  int switched;
} ulyssesDeviceGuard;

ulyssesResult_t ulyssesEnterDevice(int device, ulyssesDeviceGuard* guard);
void ulyssesLeaveDevice(const ulyssesDeviceGuard* guard);

/* For every public entry point on a comm (src/comm.c): a call takes a
 * reference to a live comm (refused if aborted, unless allowAborted) and
 * gives it back when it returns, so that a concurrent ulyssesCommDestroy
 * frees nothing in use. */
ulyssesResult_t ulyssesAcquireComm(struct ulyssesComm* comm, int allowAborted);
void ulyssesReleaseComm(struct ulyssesComm* comm);

/* The comm's one-pass state (src/one_pass_comm.c). At ulyssesCommCreate
 * (collective), after the comm's size is known: what the comm supports;
 * where enabled, the NCCL device comm (its failure only means the staged
 * path). */
ulyssesResult_t ulyssesOnePassCreate(struct ulyssesComm* comm, int enabled, int runtimeNcclVersion);
/* At ulyssesCommDestroy (collective then): frees the symmetric allocations
 * left, in allocation order. comm->onePass may be NULL. */
ulyssesResult_t ulyssesOnePassDestroy(struct ulyssesComm* comm);
/* Deregisters (unless the comm was aborted, which took its windows) and
 * frees one allocation of ulyssesMemAlloc; the first failure is returned. */
ulyssesResult_t ulyssesOnePassRelease(ncclComm_t nccl, int commAborted, void* ptr, void* window);

#endif /* ULYSSES_COMM_H_ */
