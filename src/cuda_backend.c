#include <sched.h>

#include "comm.h"
#include "error.h"
#include "ulysses_launch.h"

ulyssesResult_t ulyssesCudaCheck(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return ulyssesSuccess;
  return ulyssesFail(ulyssesErrorCudaError, "%s failed: %s (%s)", what, cudaGetErrorName(error),
                     cudaGetErrorString(error));
}

ulyssesResult_t ulyssesNcclCheck(ncclResult_t result, ncclComm_t comm, const char* what) {
  while (result == ncclInProgress) {
    sched_yield();
    if (ncclCommGetAsyncError(comm, &result) != ncclSuccess) result = ncclInternalError;
  }
  if (result == ncclSuccess) return ulyssesSuccess;
  return ulyssesFail(ulyssesErrorNcclError, "%s failed: %s (%s)", what, ncclGetErrorString(result),
                     ncclGetLastError(comm));
}

static ulyssesResult_t cudaAllGather(void* context, const void* sendbuff, void* recvbuff,
                                     size_t bytes) {
  ulyssesCudaContext* c = context;
  return ulyssesNcclCheck(
      ncclAllGather(sendbuff, recvbuff, bytes, ncclUint8, c->comm->nccl, c->stream), c->comm->nccl,
      "ncclAllGather");
}

static ulyssesResult_t cudaGroupStart(void* context) {
  ulyssesCudaContext* c = context;
  return ulyssesNcclCheck(ncclGroupStart(), c->comm->nccl, "ncclGroupStart");
}

static ulyssesResult_t cudaGroupEnd(void* context) {
  ulyssesCudaContext* c = context;
  return ulyssesNcclCheck(ncclGroupEnd(), c->comm->nccl, "ncclGroupEnd");
}

static ulyssesResult_t cudaSend(void* context, const void* buff, size_t bytes, int peer) {
  ulyssesCudaContext* c = context;
  return ulyssesNcclCheck(ncclSend(buff, bytes, ncclUint8, peer, c->comm->nccl, c->stream),
                          c->comm->nccl, "ncclSend");
}

static ulyssesResult_t cudaRecv(void* context, void* buff, size_t bytes, int peer) {
  ulyssesCudaContext* c = context;
  return ulyssesNcclCheck(ncclRecv(buff, bytes, ncclUint8, peer, c->comm->nccl, c->stream),
                          c->comm->nccl, "ncclRecv");
}

static ulyssesResult_t cudaLaunchTable(void* context, const ulyssesTableArgs* args) {
  ulyssesCudaContext* c = context;
  return ulyssesCudaCheck(ulyssesLaunchLengthTable(args, c->stream),
                          "the length-table kernel launch");
}

static ulyssesResult_t cudaLaunchCopy(void* context, const ulyssesCopyArgs* args, int64_t maxRuns) {
  ulyssesCudaContext* c = context;
  return ulyssesCudaCheck(ulyssesLaunchCopy(args, maxRuns, c->stream),
                          args->toSegments ? "the pack kernel launch" : "the unpack kernel launch");
}

ulyssesBackend ulyssesCudaBackend(ulyssesCudaContext* context) {
  ulyssesBackend backend = {context,  cudaAllGather, cudaGroupStart,  cudaGroupEnd,
                            cudaSend, cudaRecv,      cudaLaunchTable, cudaLaunchCopy};
  return backend;
}
