/* The library's communicator and its backend: the NCCL calls and kernel
 * launches of the pipeline, on the caller's stream and the comm's device. */
#ifndef ULYSSES_COMM_H_
#define ULYSSES_COMM_H_

#include <pthread.h>
#include <stdatomic.h>

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
  struct ulyssesOnePassState* onePass; /* src/one_pass.h */
};

typedef struct {
  struct ulyssesComm* comm; /* NULL for the local stages, which call no NCCL */
  cudaStream_t stream;
} ulyssesCudaContext;

/* The library's backend over context. */
ulyssesBackend ulyssesCudaBackend(ulyssesCudaContext* context);

ulyssesResult_t ulyssesCudaCheck(cudaError_t error, const char* what);

/* An NCCL call's result as the library reports it; for a non-blocking
 * communicator first waits, on the host, until NCCL has finished enqueuing
 * (ncclInProgress), so that what follows on the stream comes after NCCL's work. */
ulyssesResult_t ulyssesNcclCheck(ncclResult_t result, ncclComm_t comm, const char* what);

/* For the entry points of other files, as src/api.c's own: a call takes a
 * reference to a live comm (refused if aborted, unless allowAborted) and
 * gives it back when it returns, so that a concurrent ulyssesCommDestroy
 * frees nothing in use. */
ulyssesResult_t ulyssesAcquireComm(struct ulyssesComm* comm, int allowAborted);
void ulyssesReleaseComm(struct ulyssesComm* comm);

#endif /* ULYSSES_COMM_H_ */
