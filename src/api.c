/* The public entry points that touch CUDA or NCCL: validate everything first,
 * then enqueue through the pipeline. */
#include <stdlib.h>

#include "comm.h"
#include "error.h"

#define MIN_NCCL_VERSION 21800

ULYSSES_API ulyssesResult_t ulyssesGetVersion(int* version) {
  ulyssesClearError();
  if (version == NULL) return ulyssesFail(ulyssesErrorNullPointer, "version is NULL");
  *version = ULYSSES_VERSION_CODE;
  return ulyssesSuccess;
}

/* Runs work on the comm's device, as NCCL does, and restores the caller's. */
typedef struct {
  int previous;
  int switched;
} deviceGuard;

static ulyssesResult_t enterDevice(int device, deviceGuard* guard) {
  guard->switched = 0;
  ULYSSES_CHECK(ulyssesCudaCheck(cudaGetDevice(&guard->previous), "cudaGetDevice"));
  if (guard->previous == device) return ulyssesSuccess;
  ULYSSES_CHECK(ulyssesCudaCheck(cudaSetDevice(device), "cudaSetDevice"));
  guard->switched = 1;
  return ulyssesSuccess;
}

static void leaveDevice(const deviceGuard* guard) {
  if (guard->switched) cudaSetDevice(guard->previous);
}

static ulyssesResult_t checkConfig(const ulyssesConfig_t* config) {
  if (config == NULL) return ulyssesSuccess;
  if (config->magic != ULYSSES_CONFIG_MAGIC)
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "config was not initialised with ULYSSES_CONFIG_INITIALIZER (magic 0x%x)",
                       config->magic);
  if (config->size < sizeof(size_t) + 2 * sizeof(unsigned int))
    return ulyssesFail(ulyssesErrorInvalidArgument, "config->size is %zu, too small for any version",
                       config->size);
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommCreate(ulyssesComm_t* comm, ncclComm_t ncclComm,
                                              const ulyssesConfig_t* config) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (ncclComm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "ncclComm is NULL");
  ULYSSES_CHECK(checkConfig(config));
  int ncclVersion = 0;
  if (ncclGetVersion(&ncclVersion) != ncclSuccess || ncclVersion < MIN_NCCL_VERSION)
    return ulyssesFail(ulyssesErrorUnsupported, "the loaded NCCL is version %d; ulysses needs >= %d",
                       ncclVersion, MIN_NCCL_VERSION);
  struct ulyssesComm* c = calloc(1, sizeof *c);
  if (c == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory for a comm");
  c->nccl = ncclComm;
  ulyssesResult_t result = ulyssesSuccess;
  if (ncclCommCount(ncclComm, &c->nRanks) != ncclSuccess ||
      ncclCommUserRank(ncclComm, &c->rank) != ncclSuccess ||
      ncclCommCuDevice(ncclComm, &c->cudaDevice) != ncclSuccess) {
    free(c);
    return ulyssesFail(ulyssesErrorNcclError, "ncclComm could not be queried: %s",
                       ncclGetLastError(ncclComm));
  }
  deviceGuard guard;
  ULYSSES_CHECK_GOTO(enterDevice(c->cudaDevice, &guard), result, failed);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaHostAlloc((void**)&c->hostStatus, sizeof(uint32_t),
                                                    cudaHostAllocMapped),
                                      "cudaHostAlloc of the status word"),
                     result, restore);
  *c->hostStatus = 0;
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaHostGetDevicePointer((void**)&c->deviceStatus,
                                                               c->hostStatus, 0),
                                      "cudaHostGetDevicePointer of the status word"),
                     result, restore);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaMalloc((void**)&c->lengthScratch,
                                                 sizeof(int64_t) * ((size_t)c->nRanks + 1)),
                                      "cudaMalloc of the length scratch"),
                     result, restore);
  leaveDevice(&guard);
  *comm = c;
  return ulyssesSuccess;
restore:
  leaveDevice(&guard);
failed:
  if (c->hostStatus != NULL) cudaFreeHost(c->hostStatus);
  free(c);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommDestroy(ulyssesComm_t comm) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesSuccess;
  ulyssesResult_t result = ulyssesSuccess;
  deviceGuard guard;
  if (enterDevice(comm->cudaDevice, &guard) == ulyssesSuccess) {
    if (cudaFree(comm->lengthScratch) != cudaSuccess || cudaFreeHost(comm->hostStatus) != cudaSuccess)
      result = ulyssesFail(ulyssesErrorCudaError, "freeing the comm's memory failed");
    leaveDevice(&guard);
  } else {
    result = ulyssesErrorCudaError;
  }
  free(comm);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommCount(ulyssesComm_t comm, int* nRanks) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (nRanks == NULL) return ulyssesFail(ulyssesErrorNullPointer, "nRanks is NULL");
  *nRanks = comm->nRanks;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommUserRank(ulyssesComm_t comm, int* rank) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (rank == NULL) return ulyssesFail(ulyssesErrorNullPointer, "rank is NULL");
  *rank = comm->rank;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommGetAsyncError(ulyssesComm_t comm,
                                                     ulyssesResult_t* asyncError) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (asyncError == NULL) return ulyssesFail(ulyssesErrorNullPointer, "asyncError is NULL");
  uint32_t status = __atomic_load_n(comm->hostStatus, __ATOMIC_ACQUIRE);
  ncclResult_t ncclAsync = ncclSuccess;
  if (status & ULYSSES_DEVICE_LENGTH_ABOVE_CAPACITY) {
    *asyncError = ulyssesFail(ulyssesErrorLengthExceedsCapacity,
                              "a capacity-mode length was above its capacity; it was clamped");
  } else if (status & ULYSSES_DEVICE_NEGATIVE_LENGTH) {
    *asyncError = ulyssesFail(ulyssesErrorInvalidLength,
                              "a capacity-mode length was negative; it was taken as 0");
  } else if (ncclCommGetAsyncError(comm->nccl, &ncclAsync) != ncclSuccess ||
             (ncclAsync != ncclSuccess && ncclAsync != ncclInProgress)) {
    *asyncError = ulyssesFail(ulyssesErrorNcclError, "NCCL reports an asynchronous error: %s",
                              ncclGetErrorString(ncclAsync));
  } else {
    *asyncError = ulyssesSuccess;
  }
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesExchangeMulti(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                                 const void* const* sendbuffs, void* const* recvbuffs,
                                                 void* workspace, size_t workspaceSize,
                                                 ulyssesComm_t comm, cudaStream_t stream) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  deviceGuard guard;
  ULYSSES_CHECK(enterDevice(comm->cudaDevice, &guard));
  ulyssesCudaContext context = {comm, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  ulyssesResult_t result =
      ulyssesExchange(plan, comm->nRanks, comm->rank, op, nTensors, sendbuffs, recvbuffs, workspace,
                      workspaceSize, comm->deviceStatus, &backend);
  leaveDevice(&guard);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesSeqToHead(ulyssesPlan_t plan, const void* sendbuff, void* recvbuff,
                                             void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream) {
  return ulyssesExchangeMulti(plan, ulyssesOpSeqToHead, 1, &sendbuff, &recvbuff, workspace,
                              workspaceSize, comm, stream);
}

ULYSSES_API ulyssesResult_t ulyssesHeadToSeq(ulyssesPlan_t plan, const void* sendbuff, void* recvbuff,
                                             void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream) {
  return ulyssesExchangeMulti(plan, ulyssesOpHeadToSeq, 1, &sendbuff, &recvbuff, workspace,
                              workspaceSize, comm, stream);
}

ULYSSES_API ulyssesResult_t ulyssesAllGather(ulyssesPlan_t plan, const void* sendbuff, void* recvbuff,
                                             void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream) {
  return ulyssesExchangeMulti(plan, ulyssesOpAllGather, 1, &sendbuff, &recvbuff, workspace,
                              workspaceSize, comm, stream);
}

ULYSSES_API ulyssesResult_t ulyssesAllGatherLengths(const int64_t* deviceLocalLength,
                                                    int64_t* deviceLengths, ulyssesComm_t comm,
                                                    cudaStream_t stream) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (deviceLocalLength == NULL)
    return ulyssesFail(ulyssesErrorNullPointer, "deviceLocalLength is NULL");
  if (deviceLengths == NULL) return ulyssesFail(ulyssesErrorNullPointer, "deviceLengths is NULL");
  if ((uintptr_t)deviceLocalLength % sizeof(int64_t) != 0 ||
      (uintptr_t)deviceLengths % sizeof(int64_t) != 0)
    return ulyssesFail(ulyssesErrorMisalignedPointer,
                       "deviceLocalLength and deviceLengths must be 8-byte aligned");
  uintptr_t local = (uintptr_t)deviceLocalLength, all = (uintptr_t)deviceLengths;
  if (local < all + sizeof(int64_t) * (size_t)comm->nRanks && all < local + sizeof(int64_t))
    return ulyssesFail(ulyssesErrorBufferOverlap, "deviceLocalLength lies inside deviceLengths");
  deviceGuard guard;
  ULYSSES_CHECK(enterDevice(comm->cudaDevice, &guard));
  ulyssesCudaContext context = {comm, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  ulyssesResult_t result =
      backend.allGather(backend.context, deviceLocalLength, deviceLengths, sizeof(int64_t));
  leaveDevice(&guard);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesGatherLengthsHost(int64_t localLength, int64_t* hostLengths,
                                                     ulyssesComm_t comm, cudaStream_t stream) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (hostLengths == NULL) return ulyssesFail(ulyssesErrorNullPointer, "hostLengths is NULL");
  if (localLength < 0 || localLength > ULYSSES_MAX_LENGTH)
    return ulyssesFail(ulyssesErrorInvalidLength, "localLength is %lld; it must be in [0, %lld]",
                       (long long)localLength, (long long)ULYSSES_MAX_LENGTH);
  deviceGuard guard;
  ULYSSES_CHECK(enterDevice(comm->cudaDevice, &guard));
  ulyssesCudaContext context = {comm, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  size_t gatheredBytes = sizeof(int64_t) * (size_t)comm->nRanks;
  int64_t* gathered = comm->lengthScratch + 1;
  ulyssesResult_t result;
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaMemcpyAsync(comm->lengthScratch, &localLength,
                                                      sizeof(int64_t), cudaMemcpyHostToDevice,
                                                      stream),
                                      "cudaMemcpyAsync of the local length"),
                     result, done);
  ULYSSES_CHECK_GOTO(backend.allGather(backend.context, comm->lengthScratch, gathered,
                                       sizeof(int64_t)),
                     result, done);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaMemcpyAsync(hostLengths, gathered, gatheredBytes,
                                                      cudaMemcpyDeviceToHost, stream),
                                      "cudaMemcpyAsync of the lengths"),
                     result, done);
  result = ulyssesCudaCheck(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
done:
  leaveDevice(&guard);
  return result;
}

static ulyssesResult_t runStage(ulyssesPlan_t plan, ulyssesOp_t op, ulyssesSide side, int nTensors,
                                const void* const* buffers, const int64_t* deviceLengths,
                                uint32_t* deviceStatus, void* workspace, size_t workspaceSize,
                                cudaStream_t stream) {
  ulyssesClearError();
  ulyssesCudaContext context = {NULL, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  return ulyssesStage(plan, op, side, nTensors, buffers, deviceLengths, deviceStatus, workspace,
                      workspaceSize, &backend);
}

ULYSSES_API ulyssesResult_t ulyssesPack(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                        const void* const* sendbuffs, const int64_t* deviceLengths,
                                        uint32_t* deviceStatus, void* workspace,
                                        size_t workspaceSize, cudaStream_t stream) {
  return runStage(plan, op, ULYSSES_SEND, nTensors, sendbuffs, deviceLengths, deviceStatus,
                  workspace, workspaceSize, stream);
}

ULYSSES_API ulyssesResult_t ulyssesUnpack(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                          void* const* recvbuffs, const int64_t* deviceLengths,
                                          uint32_t* deviceStatus, void* workspace,
                                          size_t workspaceSize, cudaStream_t stream) {
  return runStage(plan, op, ULYSSES_RECV, nTensors, (const void* const*)recvbuffs, deviceLengths,
                  deviceStatus, workspace, workspaceSize, stream);
}
