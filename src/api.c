/* The public entry points that touch CUDA or NCCL: validate everything first,
 * then enqueue through the pipeline. */
#include <pthread.h>
#include <stdlib.h>

#include "comm.h"
#include "config.h"
#include "error.h"
#include "log.h"
#include "one_pass.h"

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

/* The comms alive in this process, so that a call with a destroyed one is
 * refused instead of reading freed memory. */
static pthread_mutex_t registryLock = PTHREAD_MUTEX_INITIALIZER;
static struct ulyssesComm** liveComms;
static size_t liveCount, liveCapacity;

static int registerComm(struct ulyssesComm* comm) {
  pthread_mutex_lock(&registryLock);
  int registered = 1;
  if (liveCount == liveCapacity) {
    size_t capacity = liveCapacity ? 2 * liveCapacity : 8;
    struct ulyssesComm** grown = realloc(liveComms, capacity * sizeof *grown);
    if (grown == NULL)
      registered = 0;
    else {
      liveComms = grown;
      liveCapacity = capacity;
    }
  }
  if (registered) liveComms[liveCount++] = comm;
  pthread_mutex_unlock(&registryLock);
  return registered;
}

/* Removes comm; returns whether it was alive. */
static int unregisterComm(const struct ulyssesComm* comm) {
  pthread_mutex_lock(&registryLock);
  int found = 0;
  for (size_t i = 0; i < liveCount && !found; i++)
    if (liveComms[i] == comm) {
      liveComms[i] = liveComms[--liveCount];
      found = 1;
    }
  pthread_mutex_unlock(&registryLock);
  return found;
}

static ulyssesResult_t checkComm(const struct ulyssesComm* comm, int allowAborted) {
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  pthread_mutex_lock(&registryLock);
  int alive = 0;
  for (size_t i = 0; i < liveCount && !alive; i++) alive = liveComms[i] == comm;
  pthread_mutex_unlock(&registryLock);
  if (!alive)
    return ulyssesFail(ulyssesErrorInvalidUsage,
                       "comm %p is not a live ulyssesComm_t: it was destroyed, or never created",
                       (const void*)comm);
  ulyssesLogSetRank(comm->rank);
  if (comm->aborted && !allowAborted)
    return ulyssesFail(ulyssesErrorInvalidUsage, "comm was aborted (ulyssesCommAbort)");
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommCreate(ulyssesComm_t* comm, ncclComm_t ncclComm,
                                              const ulyssesConfig_t* config) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (ncclComm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "ncclComm is NULL");
  ulyssesSettings settings;
  ULYSSES_CHECK(ulyssesReadConfig(config, getenv("ULYSSES_CHECK"), &settings));
  int ncclVersion = 0;
  if (ncclGetVersion(&ncclVersion) != ncclSuccess || ncclVersion < MIN_NCCL_VERSION)
    return ulyssesFail(ulyssesErrorUnsupported,
                       "the loaded NCCL is version %d; ulysses needs >= %d", ncclVersion,
                       MIN_NCCL_VERSION);
  struct ulyssesComm* c = calloc(1, sizeof *c);
  if (c == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory for a comm");
  c->nccl = ncclComm;
  c->checkPlans = settings.checkPlans;
  ulyssesResult_t result = ulyssesSuccess;
  /* A non-blocking communicator may still be initialising. */
  ncclResult_t state = ncclSuccess;
  if (ncclCommGetAsyncError(ncclComm, &state) != ncclSuccess) state = ncclInvalidArgument;
  ULYSSES_CHECK_GOTO(ulyssesNcclCheck(state, ncclComm, "the NCCL communicator's initialisation"),
                     result, failed);
  if (ncclCommCount(ncclComm, &c->nRanks) != ncclSuccess ||
      ncclCommUserRank(ncclComm, &c->rank) != ncclSuccess ||
      ncclCommCuDevice(ncclComm, &c->cudaDevice) != ncclSuccess) {
    free(c);
    return ulyssesFail(ulyssesErrorNcclError, "ncclComm could not be queried: %s",
                       ncclGetLastError(ncclComm));
  }
  ULYSSES_CHECK_GOTO(ulyssesOnePassCreate(c, ncclVersion), result, failed);
  deviceGuard guard;
  ULYSSES_CHECK_GOTO(enterDevice(c->cudaDevice, &guard), result, failed);
  ULYSSES_CHECK_GOTO(
      ulyssesCudaCheck(cudaHostAlloc((void**)&c->hostStatus, sizeof(uint32_t), cudaHostAllocMapped),
                       "cudaHostAlloc of the status word"),
      result, restore);
  *c->hostStatus = 0;
  ULYSSES_CHECK_GOTO(
      ulyssesCudaCheck(cudaHostGetDevicePointer((void**)&c->deviceStatus, c->hostStatus, 0),
                       "cudaHostGetDevicePointer of the status word"),
      result, restore);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaMalloc((void**)&c->lengthScratch,
                                                 sizeof(int64_t) * ((size_t)c->nRanks + 1)),
                                      "cudaMalloc of the length scratch"),
                     result, restore);
  leaveDevice(&guard);
  if (!registerComm(c)) {
    ulyssesOnePassDestroy(c);
    cudaFree(c->lengthScratch);
    cudaFreeHost(c->hostStatus);
    free(c);
    return ulyssesFail(ulyssesErrorSystemError, "out of host memory registering a comm");
  }
  ulyssesLogSetRank(c->rank);
  ulyssesLog(ULYSSES_LOG_INFO, "comm: rank %d of %d on CUDA device %d, NCCL %d, plan check %s",
             c->rank, c->nRanks, c->cudaDevice, ncclVersion, c->checkPlans ? "on" : "off");
  *comm = c;
  return ulyssesSuccess;
restore:
  leaveDevice(&guard);
failed:
  ulyssesOnePassDestroy(c);
  if (c->hostStatus != NULL) cudaFreeHost(c->hostStatus);
  free(c);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommDestroy(ulyssesComm_t comm) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesSuccess;
  if (!unregisterComm(comm))
    return ulyssesFail(ulyssesErrorInvalidUsage,
                       "comm %p is not a live ulyssesComm_t: destroyed twice, or never created",
                       (const void*)comm);
  ulyssesResult_t result = ulyssesSuccess;
  deviceGuard guard;
  if (enterDevice(comm->cudaDevice, &guard) == ulyssesSuccess) {
    result = ulyssesOnePassDestroy(comm);
    if (cudaFree(comm->lengthScratch) != cudaSuccess ||
        cudaFreeHost(comm->hostStatus) != cudaSuccess)
      result = ulyssesFail(ulyssesErrorCudaError, "freeing the comm's memory failed");
    leaveDevice(&guard);
  } else {
    result = ulyssesErrorCudaError;
  }
  free(comm);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommAbort(ulyssesComm_t comm) {
  ulyssesClearError();
  ULYSSES_CHECK(checkComm(comm, 0));
  comm->aborted = 1;
  ulyssesLog(ULYSSES_LOG_WARN, "aborting the NCCL communicator");
  ncclResult_t result = ncclCommAbort(comm->nccl);
  if (result != ncclSuccess)
    return ulyssesFail(ulyssesErrorNcclError, "ncclCommAbort failed: %s",
                       ncclGetErrorString(result));
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommCount(ulyssesComm_t comm, int* nRanks) {
  ulyssesClearError();
  ULYSSES_CHECK(checkComm(comm, 1));
  if (nRanks == NULL) return ulyssesFail(ulyssesErrorNullPointer, "nRanks is NULL");
  *nRanks = comm->nRanks;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommUserRank(ulyssesComm_t comm, int* rank) {
  ulyssesClearError();
  ULYSSES_CHECK(checkComm(comm, 1));
  if (rank == NULL) return ulyssesFail(ulyssesErrorNullPointer, "rank is NULL");
  *rank = comm->rank;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommGetAsyncError(ulyssesComm_t comm,
                                                     ulyssesResult_t* asyncError) {
  ulyssesClearError();
  ULYSSES_CHECK(checkComm(comm, 1));
  if (asyncError == NULL) return ulyssesFail(ulyssesErrorNullPointer, "asyncError is NULL");
  uint32_t status = __atomic_load_n(comm->hostStatus, __ATOMIC_ACQUIRE);
  ncclResult_t ncclAsync = ncclSuccess;
  if (status == 0 && !comm->aborted && ncclCommGetAsyncError(comm->nccl, &ncclAsync) != ncclSuccess)
    ncclAsync = ncclInternalError;
  *asyncError = ulyssesAsyncResult(status, ncclAsync, ncclGetErrorString(ncclAsync));
  return ulyssesSuccess;
}

/* The plan check: every rank all-gathers its plan's fingerprint and compares
 * them on the host before any data moves, so that ranks whose plans disagree
 * all return ulyssesErrorPlanMismatch instead of posting messages of
 * different sizes (a hang) or mixing data. */
static ulyssesResult_t checkPlansAgree(struct ulyssesComm* comm, ulyssesPlan_t plan, ulyssesOp_t op,
                                       cudaStream_t stream, const ulyssesBackend* backend) {
  enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  ULYSSES_CHECK(ulyssesCudaCheck(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing"));
  if (capture != cudaStreamCaptureStatusNone) {
    ulyssesLog(ULYSSES_LOG_INFO, "plan check skipped: the stream is being captured");
    return ulyssesSuccess;
  }
  uint64_t fingerprint = ulyssesPlanFingerprint(plan, op);
  uint64_t* fingerprints = malloc(sizeof(uint64_t) * (size_t)comm->nRanks);
  if (fingerprints == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory");
  ulyssesResult_t result;
  ULYSSES_CHECK_GOTO(
      ulyssesCudaCheck(cudaMemcpyAsync(comm->lengthScratch, &fingerprint, sizeof fingerprint,
                                       cudaMemcpyHostToDevice, stream),
                       "cudaMemcpyAsync of the plan's fingerprint"),
      result, done);
  ULYSSES_CHECK_GOTO(backend->allGather(backend->context, comm->lengthScratch,
                                        comm->lengthScratch + 1, sizeof fingerprint),
                     result, done);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaMemcpyAsync(fingerprints, comm->lengthScratch + 1,
                                                      sizeof(uint64_t) * (size_t)comm->nRanks,
                                                      cudaMemcpyDeviceToHost, stream),
                                      "cudaMemcpyAsync of the fingerprints"),
                     result, done);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaStreamSynchronize(stream), "cudaStreamSynchronize"),
                     result, done);
  result = ulyssesCheckFingerprints(fingerprints, comm->nRanks, op);
done:
  free(fingerprints);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesExchangeMulti(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                                 const void* const* sendbuffs,
                                                 void* const* recvbuffs, void* workspace,
                                                 size_t workspaceSize, ulyssesComm_t comm,
                                                 cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(checkComm(comm, 0));
  ULYSSES_CHECK(ulyssesCheckExchange(plan, comm->nRanks, comm->rank, op, nTensors, sendbuffs,
                                     recvbuffs, workspace, workspaceSize));
  /* The path is chosen (and logged) on every call; until the one-pass kernel
   * exists the choice is always the staged path run below. */
  int path;
  const char* pathReason;
  ULYSSES_CHECK(ulyssesOnePassPath(comm, plan, op, recvbuffs, &path, &pathReason));
  deviceGuard guard;
  ULYSSES_CHECK(enterDevice(comm->cudaDevice, &guard));
  ulyssesCudaContext context = {comm, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  ulyssesResult_t result = ulyssesSuccess;
  if (comm->checkPlans) result = checkPlansAgree(comm, plan, op, stream, &backend);
  if (result == ulyssesSuccess)
    result =
        ulyssesRunExchange(plan, op, sendbuffs, recvbuffs, workspace, comm->deviceStatus, &backend);
  leaveDevice(&guard);
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

ULYSSES_API ulyssesResult_t ulyssesAllGatherLengths(const int64_t* deviceLocalLength,
                                                    int64_t* deviceLengths, ulyssesComm_t comm,
                                                    cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(checkComm(comm, 0));
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
  ULYSSES_CHECK(checkComm(comm, 0));
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
  ULYSSES_CHECK_GOTO(
      ulyssesCudaCheck(cudaMemcpyAsync(comm->lengthScratch, &localLength, sizeof(int64_t),
                                       cudaMemcpyHostToDevice, stream),
                       "cudaMemcpyAsync of the local length"),
      result, done);
  ULYSSES_CHECK_GOTO(
      backend.allGather(backend.context, comm->lengthScratch, gathered, sizeof(int64_t)), result,
      done);
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

ulyssesResult_t ulyssesCheckLiveComm(const struct ulyssesComm* comm, int allowAborted) {
  return checkComm(comm, allowAborted);
}
