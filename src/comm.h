/* The library's communicator and its backend: the NCCL calls and kernel
 * launches of the pipeline, on the caller's stream and the comm's device. */
#ifndef ULYSSES_COMM_H_
#define ULYSSES_COMM_H_

#include "pipeline.h"

struct ulyssesComm {
  ncclComm_t nccl;
  int nRanks;
  int rank;
  int cudaDevice;
  uint32_t* hostStatus;   /* pinned, mapped: read without synchronising */
  uint32_t* deviceStatus; /* the same word as the kernels address it */
  int64_t* lengthScratch; /* device: nRanks + 1 entries for ulyssesGatherLengthsHost and
                             the plan check */
  int checkPlans;
  int aborted;
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

/* checkComm of src/api.c for the entry points of other files: comm is a live
 * ulyssesComm_t (and not aborted, unless allowAborted). */
ulyssesResult_t ulyssesCheckLiveComm(const struct ulyssesComm* comm, int allowAborted);

#endif /* ULYSSES_COMM_H_ */
