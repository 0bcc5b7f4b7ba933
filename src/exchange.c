/* The public exchange entry points and the length exchanges: each takes a
 * reference to its comm, fills one ulyssesCall, and runs it on the comm's
 * device through src/enqueue.c with the CUDA backend. */
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "enqueue.h"
#include "error.h"

/* call on its comm's device, through the one function behind the exchanges. */
static ulyssesResult_t exchangeOnDevice(const ulyssesCall* call) {
  ulyssesDeviceGuard guard;
  ULYSSES_CHECK(ulyssesEnterDevice(call->comm->cudaDevice, &guard));
  ulyssesBackend backend = ulyssesCudaBackend(call);
  ulyssesResult_t result = ulyssesEnqueueExchange(call, &backend);
  ulyssesLeaveDevice(&guard);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesExchangeMulti(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                                 const void* const* sendbuffs,
                                                 void* const* recvbuffs, void* workspace,
                                                 size_t workspaceSize, ulyssesComm_t comm,
                                                 cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 0));
  ulyssesCall call = {.plan = plan,
                      .op = op,
                      .nTensors = nTensors,
                      .sendbuffs = sendbuffs,
                      .recvbuffs = recvbuffs,
                      .workspace = workspace,
                      .workspaceSize = workspaceSize,
                      .deviceStatus = comm->deviceStatus,
                      .comm = comm,
                      .stream = stream};
  ulyssesResult_t result = exchangeOnDevice(&call);
  ulyssesReleaseComm(comm);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesSeqToHead(ulyssesPlan_t plan, const void* sendbuff,
                                             void* recvbuff, void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream) {
  return ulyssesExchangeMulti(plan, ulyssesOpSeqToHead, 1, &sendbuff, &recvbuff, workspace,
                              workspaceSize, comm, stream);
}

ULYSSES_API ulyssesResult_t ulyssesHeadToSeq(ulyssesPlan_t plan, const void* sendbuff,
                                             void* recvbuff, void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream) {
  return ulyssesExchangeMulti(plan, ulyssesOpHeadToSeq, 1, &sendbuff, &recvbuff, workspace,
                              workspaceSize, comm, stream);
}

ULYSSES_API ulyssesResult_t ulyssesAllGather(ulyssesPlan_t plan, const void* sendbuff,
                                             void* recvbuff, void* workspace, size_t workspaceSize,
                                             ulyssesComm_t comm, cudaStream_t stream) {
  return ulyssesExchangeMulti(plan, ulyssesOpAllGather, 1, &sendbuff, &recvbuff, workspace,
                              workspaceSize, comm, stream);
}

static ulyssesResult_t allGatherLengths(struct ulyssesComm* comm, const int64_t* deviceLocalLength,
                                        int64_t* deviceLengths, cudaStream_t stream) {
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
  ulyssesDeviceGuard guard;
  ULYSSES_CHECK(ulyssesEnterDevice(comm->cudaDevice, &guard));
  ulyssesCall call = {.comm = comm, .stream = stream};
  ulyssesBackend backend = ulyssesCudaBackend(&call);
  ulyssesResult_t result =
      backend.allGather(backend.context, deviceLocalLength, deviceLengths, sizeof(int64_t));
  ulyssesLeaveDevice(&guard);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesAllGatherLengths(const int64_t* deviceLocalLength,
                                                    int64_t* deviceLengths, ulyssesComm_t comm,
                                                    cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 0));
  ulyssesResult_t result = allGatherLengths(comm, deviceLocalLength, deviceLengths, stream);
  ulyssesReleaseComm(comm);
  return result;
}

static ulyssesResult_t gatherLengthsHost(struct ulyssesComm* comm, int64_t localLength,
                                         int64_t* hostLengths, cudaStream_t stream) {
  if (hostLengths == NULL) return ulyssesFail(ulyssesErrorNullPointer, "hostLengths is NULL");
  if (localLength < 0 || localLength > ULYSSES_MAX_LENGTH)
    return ulyssesFail(ulyssesErrorInvalidLength, "localLength is %lld; it must be in [0, %lld]",
                       (long long)localLength, (long long)ULYSSES_MAX_LENGTH);
  ulyssesCall call = {.comm = comm, .stream = stream};
  ulyssesBackend backend = ulyssesCudaBackend(&call);
  int capturing;
  ULYSSES_CHECK(backend.capturing(backend.context, &capturing));
  if (capturing)
    return ulyssesFail(ulyssesErrorInvalidUsage,
                       "ulyssesGatherLengthsHost waits for the stream, which cannot happen while "
                       "it is being captured; call it before the capture (once per step) or use "
                       "ulyssesAllGatherLengths and a capacity-mode plan in the graph");
  ulyssesDeviceGuard guard;
  ULYSSES_CHECK(ulyssesEnterDevice(comm->cudaDevice, &guard));
  ulyssesResult_t result = backend.gatherToHost(backend.context, &localLength, hostLengths);
  ulyssesLeaveDevice(&guard);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesGatherLengthsHost(int64_t localLength, int64_t* hostLengths,
                                                     ulyssesComm_t comm, cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 0));
  ulyssesResult_t result = gatherLengthsHost(comm, localLength, hostLengths, stream);
  ulyssesReleaseComm(comm);
  return result;
}

/* The local stages call no NCCL: their call has no comm. */
static ulyssesResult_t stageOnStream(const ulyssesCall* call, ulyssesSide side) {
  ulyssesClearError();
  ulyssesBackend backend = ulyssesCudaBackend(call);
  return ulyssesEnqueueStage(call, side, &backend);
}

ULYSSES_API ulyssesResult_t ulyssesPack(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                        const void* const* sendbuffs, const int64_t* deviceLengths,
                                        uint32_t* deviceStatus, void* workspace,
                                        size_t workspaceSize, cudaStream_t stream) {
  ulyssesCall call = {.plan = plan,
                      .op = op,
                      .nTensors = nTensors,
                      .sendbuffs = sendbuffs,
                      .workspace = workspace,
                      .workspaceSize = workspaceSize,
                      .deviceLengths = deviceLengths,
                      .deviceStatus = deviceStatus,
                      .stream = stream};
  return stageOnStream(&call, ULYSSES_SEND);
}

ULYSSES_API ulyssesResult_t ulyssesUnpack(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                          void* const* recvbuffs, const int64_t* deviceLengths,
                                          uint32_t* deviceStatus, void* workspace,
                                          size_t workspaceSize, cudaStream_t stream) {
  ulyssesCall call = {.plan = plan,
                      .op = op,
                      .nTensors = nTensors,
                      .recvbuffs = recvbuffs,
                      .workspace = workspace,
                      .workspaceSize = workspaceSize,
                      .deviceLengths = deviceLengths,
                      .deviceStatus = deviceStatus,
                      .stream = stream};
  return stageOnStream(&call, ULYSSES_RECV);
}
