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
  int64_t* lengthScratch; /* device: nRanks + 1 entries for ulyssesGatherLengthsHost */
};

typedef struct {
  struct ulyssesComm* comm; /* NULL for the local stages, which call no NCCL */
  cudaStream_t stream;
} ulyssesCudaContext;

/* The library's backend over context. */
ulyssesBackend ulyssesCudaBackend(ulyssesCudaContext* context);

ulyssesResult_t ulyssesCudaCheck(cudaError_t error, const char* what);

#endif /* ULYSSES_COMM_H_ */
