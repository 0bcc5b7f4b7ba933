/* The public entry points that touch CUDA or NCCL: validate everything first,
 * then enqueue through the pipeline. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "config.h"
#include "env.h"
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
 * refused instead of reading freed memory. Every call holds a reference to
 * its comm from the lookup to its return; ulyssesCommDestroy unregisters the
 * comm and gives back the registry's reference, and whoever gives back the
 * last one frees it. Destroy does not wait for the calls in flight instead:
 * one of them may be blocked in NCCL (a dead peer) until a watchdog aborts
 * the communicator, and a destroy that waited for it would hang with it. */
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
  if (registered) {
    comm->references = 1;
    liveComms[liveCount++] = comm;
  }
  pthread_mutex_unlock(&registryLock);
  return registered;
}

/* Removes comm and gives back the registry's reference; returns whether it
 * was alive, and in *last whether no call holds it any more. */
static int unregisterComm(struct ulyssesComm* comm, int* last) {
  pthread_mutex_lock(&registryLock);
  int found = 0;
  for (size_t i = 0; i < liveCount && !found; i++)
    if (liveComms[i] == comm) {
      liveComms[i] = liveComms[--liveCount];
      found = 1;
    }
  *last = found && --comm->references == 0;
  pthread_mutex_unlock(&registryLock);
  return found;
}

/* Frees comm and its memory; returns whether CUDA freed it all. */
static int freeComm(struct ulyssesComm* comm) {
  int freed = 0;
  deviceGuard guard;
  if (enterDevice(comm->cudaDevice, &guard) == ulyssesSuccess) {
    freed = ulyssesOnePassDestroy(comm) == ulyssesSuccess;
    freed = cudaFree(comm->lengthScratch) == cudaSuccess && freed;
    freed = cudaFreeHost(comm->hostStatus) == cudaSuccess && freed;
    leaveDevice(&guard);
  }
  pthread_mutex_destroy(&comm->lock);
  free(comm);
  return freed;
}

/* Gives back a call's reference; after a concurrent ulyssesCommDestroy the
 * last call to return frees comm. */
static void releaseComm(struct ulyssesComm* comm) {
  pthread_mutex_lock(&registryLock);
  int last = --comm->references == 0;
  pthread_mutex_unlock(&registryLock);
  if (last && !freeComm(comm))
    ulyssesLog(ULYSSES_LOG_WARN, "freeing the memory of a destroyed comm failed");
}

/* Takes a reference to comm for the call: refused unless comm is live and,
 * without allowAborted, not aborted. */
static ulyssesResult_t acquireComm(struct ulyssesComm* comm, int allowAborted) {
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  pthread_mutex_lock(&registryLock);
  int alive = 0;
  for (size_t i = 0; i < liveCount && !alive; i++) alive = liveComms[i] == comm;
  if (alive) comm->references++;
  pthread_mutex_unlock(&registryLock);
  if (!alive)
    return ulyssesFail(ulyssesErrorInvalidUsage,
                       "comm %p is not a live ulyssesComm_t: it was destroyed, or never created",
                       (const void*)comm);
  ulyssesLogSetRank(comm->rank);
  if (!allowAborted && atomic_load(&comm->aborted)) {
    releaseComm(comm);
    return ulyssesFail(ulyssesErrorInvalidUsage, "comm was aborted (ulyssesCommAbort)");
  }
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommCreate(ulyssesComm_t* comm, ncclComm_t ncclComm,
                                              const ulyssesConfig_t* config) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "comm is NULL");
  if (ncclComm == NULL) return ulyssesFail(ulyssesErrorNullPointer, "ncclComm is NULL");
  ulyssesSettings settings;
  ULYSSES_CHECK(ulyssesReadConfig(config, ulyssesEnvValue(ULYSSES_ENV_CHECK),
                                  ulyssesEnvValue(ULYSSES_ENV_ONE_PASS), &settings));
  int ncclVersion = 0;
  if (ncclGetVersion(&ncclVersion) != ncclSuccess || ncclVersion < MIN_NCCL_VERSION)
    return ulyssesFail(ulyssesErrorUnsupported,
                       "the loaded NCCL is version %d; ulysses needs >= %d", ncclVersion,
                       MIN_NCCL_VERSION);
  struct ulyssesComm* c = calloc(1, sizeof *c);
  if (c == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory for a comm");
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    free(c);
    return ulyssesFail(ulyssesErrorSystemError, "pthread_mutex_init failed for a comm");
  }
  c->nccl = ncclComm;
  c->checkPlans = settings.checkPlans;
  atomic_init(&c->aborted, 0);
  ulyssesResult_t result = ulyssesSuccess;
  /* A non-blocking communicator may still be initialising. */
  ncclResult_t state = ncclSuccess;
  if (ncclCommGetAsyncError(ncclComm, &state) != ncclSuccess) state = ncclInvalidArgument;
  ULYSSES_CHECK_GOTO(ulyssesNcclCheck(state, ncclComm, "the NCCL communicator's initialisation"),
                     result, failed);
  if (ncclCommCount(ncclComm, &c->nRanks) != ncclSuccess ||
      ncclCommUserRank(ncclComm, &c->rank) != ncclSuccess ||
      ncclCommCuDevice(ncclComm, &c->cudaDevice) != ncclSuccess) {
    result = ulyssesFail(ulyssesErrorNcclError, "ncclComm could not be queried: %s",
                         ncclGetLastError(ncclComm));
    goto failed;
  }
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
  ULYSSES_CHECK_GOTO(ulyssesOnePassCreate(c, settings.onePass, ncclVersion), result, restore);
  leaveDevice(&guard);
  if (!registerComm(c)) {
    ulyssesOnePassDestroy(c);
    cudaFree(c->lengthScratch);
    cudaFreeHost(c->hostStatus);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return ulyssesFail(ulyssesErrorSystemError, "out of host memory registering a comm");
  }
  ulyssesLogSetRank(c->rank);
  ulyssesLog(ULYSSES_LOG_INFO,
             "comm: rank %d of %d on CUDA device %d, NCCL %d loaded (built against %d), plan "
             "check %s",
             c->rank, c->nRanks, c->cudaDevice, ncclVersion, NCCL_VERSION_CODE,
             c->checkPlans ? "on" : "off");
  *comm = c;
  return ulyssesSuccess;
restore:
  leaveDevice(&guard);
failed:
  ulyssesOnePassDestroy(c);
  if (c->hostStatus != NULL) cudaFreeHost(c->hostStatus);
  pthread_mutex_destroy(&c->lock);
  free(c);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommDestroy(ulyssesComm_t comm) {
  ulyssesClearError();
  if (comm == NULL) return ulyssesSuccess;
  int last = 0;
  if (!unregisterComm(comm, &last))
    return ulyssesFail(ulyssesErrorInvalidUsage,
                       "comm %p is not a live ulyssesComm_t: destroyed twice, or never created",
                       (const void*)comm);
  if (!last) {
    ulyssesLog(ULYSSES_LOG_INFO,
               "comm destroyed while calls on it are in progress: the last to "
               "return frees it");
    return ulyssesSuccess;
  }
  if (!freeComm(comm))
    return ulyssesFail(ulyssesErrorCudaError, "freeing the comm's memory failed");
  return ulyssesSuccess;
}

static ulyssesResult_t abortComm(struct ulyssesComm* comm) {
  pthread_mutex_lock(&comm->lock);
  if (atomic_load(&comm->aborted)) {
    pthread_mutex_unlock(&comm->lock);
    return ulyssesFail(ulyssesErrorInvalidUsage, "comm was aborted (ulyssesCommAbort)");
  }
  /* Kept for ulyssesCommGetAsyncError, which cannot ask the freed
   * communicator afterwards: a watchdog that aborts because of it still sees
   * the error. */
  ncclResult_t before = ncclSuccess;
  if (ncclCommGetAsyncError(comm->nccl, &before) != ncclSuccess) before = ncclInternalError;
  comm->abortedWith = before == ncclInProgress ? ncclSuccess : before;
  atomic_store(&comm->aborted, 1);
  pthread_mutex_unlock(&comm->lock);
  ulyssesLog(ULYSSES_LOG_WARN, "aborting the NCCL communicator");
  ncclResult_t result = ncclCommAbort(comm->nccl);
  if (result != ncclSuccess)
    return ulyssesFail(ulyssesErrorNcclError, "ncclCommAbort failed: %s",
                       ncclGetErrorString(result));
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommAbort(ulyssesComm_t comm) {
  ulyssesClearError();
  ULYSSES_CHECK(acquireComm(comm, 0));
  ulyssesResult_t result = abortComm(comm);
  releaseComm(comm);
  return result;
}

/* One int field of comm (at offset, named name) into *value. */
static ulyssesResult_t readCommInt(ulyssesComm_t comm, size_t offset, int* value,
                                   const char* name) {
  ulyssesClearError();
  ULYSSES_CHECK(acquireComm(comm, 1));
  ulyssesResult_t result = ulyssesSuccess;
  if (value == NULL)
    result = ulyssesFail(ulyssesErrorNullPointer, "%s is NULL", name);
  else
    memcpy(value, (const unsigned char*)comm + offset, sizeof *value);
  releaseComm(comm);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommCount(ulyssesComm_t comm, int* nRanks) {
  return readCommInt(comm, offsetof(struct ulyssesComm, nRanks), nRanks, "nRanks");
}

ULYSSES_API ulyssesResult_t ulyssesCommUserRank(ulyssesComm_t comm, int* rank) {
  return readCommInt(comm, offsetof(struct ulyssesComm, rank), rank, "rank");
}

static ulyssesResult_t asyncErrorOf(struct ulyssesComm* comm, ulyssesResult_t* asyncError) {
  if (asyncError == NULL) return ulyssesFail(ulyssesErrorNullPointer, "asyncError is NULL");
  uint32_t status = __atomic_load_n(comm->hostStatus, __ATOMIC_ACQUIRE);
  ncclResult_t ncclAsync = ncclSuccess;
  pthread_mutex_lock(&comm->lock);
  if (atomic_load(&comm->aborted))
    ncclAsync = comm->abortedWith;
  else if (ncclCommGetAsyncError(comm->nccl, &ncclAsync) != ncclSuccess)
    ncclAsync = ncclInternalError;
  *asyncError = ulyssesAsyncResult(status, ncclAsync, ncclGetErrorString(ncclAsync));
  int firstReport = *asyncError != comm->reportedAsync;
  comm->reportedAsync = *asyncError;
  pthread_mutex_unlock(&comm->lock);
  if (firstReport && *asyncError != ulyssesSuccess)
    ulyssesLog(ULYSSES_LOG_WARN, "asynchronous error: %s: %s", ulyssesGetErrorString(*asyncError),
               ulyssesGetLastError());
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesCommGetAsyncError(ulyssesComm_t comm,
                                                     ulyssesResult_t* asyncError) {
  ulyssesClearError();
  ULYSSES_CHECK(acquireComm(comm, 1));
  ulyssesResult_t result = asyncErrorOf(comm, asyncError);
  releaseComm(comm);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommClearAsyncError(ulyssesComm_t comm) {
  ulyssesClearError();
  ULYSSES_CHECK(acquireComm(comm, 1));
  __atomic_store_n(comm->hostStatus, 0u, __ATOMIC_RELEASE);
  pthread_mutex_lock(&comm->lock);
  comm->reportedAsync = ulyssesSuccess; /* a recurring error is logged again */
  pthread_mutex_unlock(&comm->lock);
  releaseComm(comm);
  return ulyssesSuccess;
}

/* Whether stream is being captured into a CUDA graph, where nothing may wait
 * for it on the host. */
static ulyssesResult_t streamCapturing(cudaStream_t stream, int* capturing) {
  enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  ULYSSES_CHECK(ulyssesCudaCheck(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing"));
  *capturing = capture != cudaStreamCaptureStatusNone;
  return ulyssesSuccess;
}

static int planChecked(struct ulyssesComm* comm, uint64_t fingerprint) {
  pthread_mutex_lock(&comm->lock);
  int found = 0;
  for (int i = 0; i < comm->checkedCount && !found; i++) found = comm->checked[i] == fingerprint;
  pthread_mutex_unlock(&comm->lock);
  return found;
}

/* Every rank remembers the same fingerprints in the same order (they all saw
 * the same all-gathered ones), so they all decide alike under capture. */
static void rememberPlanChecked(struct ulyssesComm* comm, uint64_t fingerprint) {
  if (planChecked(comm, fingerprint)) return;
  pthread_mutex_lock(&comm->lock);
  comm->checked[comm->checkedNext] = fingerprint;
  comm->checkedNext = (comm->checkedNext + 1) % ULYSSES_CHECKED_PLANS;
  if (comm->checkedCount < ULYSSES_CHECKED_PLANS) comm->checkedCount++;
  pthread_mutex_unlock(&comm->lock);
}

/* The plan check and the host length gather copy to pageable host memory and
 * wait for the stream. While another thread captures a graph in
 * cudaStreamCaptureModeGlobal, such calls from this thread would invalidate
 * that capture; this thread's own stream is not being captured (checked
 * before), so, as NCCL does around its own host waits, this thread relaxes
 * its capture mode for them. */
static enum cudaStreamCaptureMode relaxCaptureMode(void) {
  enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&mode);
  return mode;
}

static void restoreCaptureMode(enum cudaStreamCaptureMode mode) {
  cudaThreadExchangeStreamCaptureMode(&mode);
}

/* The plan check: every rank all-gathers its plan's fingerprint and compares
 * them on the host before any data moves, so that ranks whose plans disagree
 * all return ulyssesErrorPlanMismatch instead of posting messages of
 * different sizes (a hang) or mixing data. That waits for the stream, which
 * a capture forbids; but the fingerprint covers everything that sizes the
 * messages, so a plan that passed eagerly on this comm (as NCCL's eager run
 * before a capture does) needs no check when a graph captures it. */
static ulyssesResult_t checkPlansAgree(struct ulyssesComm* comm, const struct ulyssesPlan* plan, ulyssesOp_t op,
                                       int path, cudaStream_t stream,
                                       const ulyssesBackend* backend) {
  /* The path is folded in: a rank taking one pass while another stages
   * would wait at a barrier that the other's messages never reach. */
  uint64_t fingerprint = ulyssesPlanFingerprint(plan, op) ^ (uint64_t)path * 0x9e3779b97f4a7c15u;
  int capturing;
  ULYSSES_CHECK(streamCapturing(stream, &capturing));
  if (capturing) {
    if (!planChecked(comm, fingerprint))
      return ulyssesFail(ulyssesErrorInvalidUsage,
                         "the plan check (ULYSSES_CHECK=1 or config.checkPlans) waits for the "
                         "stream, which cannot happen while it is being captured; run this "
                         "exchange once eagerly with the same plan on this comm first (its check "
                         "then covers the capture), or turn the check off");
    ulyssesLog(ULYSSES_LOG_INFO,
               "plan check: the stream is being captured; this plan passed the "
               "check eagerly before");
    return ulyssesSuccess;
  }
  uint64_t* fingerprints = malloc(sizeof(uint64_t) * (size_t)comm->nRanks);
  if (fingerprints == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory");
  ulyssesResult_t result;
  enum cudaStreamCaptureMode captureMode = relaxCaptureMode();
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
  if (result == ulyssesSuccess) rememberPlanChecked(comm, fingerprint);
done:
  restoreCaptureMode(captureMode);
  free(fingerprints);
  return result;
}

static ulyssesResult_t exchangeOnComm(struct ulyssesComm* comm, const struct ulyssesPlan* plan, ulyssesOp_t op,
                                      int nTensors, const void* const* sendbuffs,
                                      void* const* recvbuffs, void* workspace, size_t workspaceSize,
                                      cudaStream_t stream) {
  ULYSSES_CHECK(ulyssesCheckExchange(plan, comm->nRanks, comm->rank, op, nTensors, sendbuffs,
                                     recvbuffs, workspace, workspaceSize));
  /* The path is chosen (and logged) on every call. */
  int path;
  const char* pathReason;
  ULYSSES_CHECK(ulyssesOnePassPath(comm, plan, op, recvbuffs, &path, &pathReason));
  deviceGuard guard;
  ULYSSES_CHECK(enterDevice(comm->cudaDevice, &guard));
  ulyssesCudaContext context = {comm, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  ulyssesResult_t result = ulyssesSuccess;
  if (comm->checkPlans) result = checkPlansAgree(comm, plan, op, path, stream, &backend);
  if (result == ulyssesSuccess && path == ULYSSES_PATH_ONE_PASS)
    result = ulyssesOnePassExchange(comm, plan, op, sendbuffs, recvbuffs, stream);
  else if (result == ulyssesSuccess)
    result =
        ulyssesRunExchange(plan, op, sendbuffs, recvbuffs, workspace, comm->deviceStatus, &backend);
  leaveDevice(&guard);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesExchangeMulti(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                                 const void* const* sendbuffs,
                                                 void* const* recvbuffs, void* workspace,
                                                 size_t workspaceSize, ulyssesComm_t comm,
                                                 cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(acquireComm(comm, 0));
  ulyssesResult_t result = exchangeOnComm(comm, plan, op, nTensors, sendbuffs, recvbuffs, workspace,
                                          workspaceSize, stream);
  releaseComm(comm);
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
  deviceGuard guard;
  ULYSSES_CHECK(enterDevice(comm->cudaDevice, &guard));
  ulyssesCudaContext context = {comm, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  ulyssesResult_t result =
      backend.allGather(backend.context, deviceLocalLength, deviceLengths, sizeof(int64_t));
  leaveDevice(&guard);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesAllGatherLengths(const int64_t* deviceLocalLength,
                                                    int64_t* deviceLengths, ulyssesComm_t comm,
                                                    cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(acquireComm(comm, 0));
  ulyssesResult_t result = allGatherLengths(comm, deviceLocalLength, deviceLengths, stream);
  releaseComm(comm);
  return result;
}

static ulyssesResult_t gatherLengthsHost(struct ulyssesComm* comm, int64_t localLength,
                                         int64_t* hostLengths, cudaStream_t stream) {
  if (hostLengths == NULL) return ulyssesFail(ulyssesErrorNullPointer, "hostLengths is NULL");
  if (localLength < 0 || localLength > ULYSSES_MAX_LENGTH)
    return ulyssesFail(ulyssesErrorInvalidLength, "localLength is %lld; it must be in [0, %lld]",
                       (long long)localLength, (long long)ULYSSES_MAX_LENGTH);
  int capturing;
  ULYSSES_CHECK(streamCapturing(stream, &capturing));
  if (capturing)
    return ulyssesFail(ulyssesErrorInvalidUsage,
                       "ulyssesGatherLengthsHost waits for the stream, which cannot happen while "
                       "it is being captured; call it before the capture (once per step) or use "
                       "ulyssesAllGatherLengths and a capacity-mode plan in the graph");
  size_t gatheredBytes = sizeof(int64_t) * (size_t)comm->nRanks;
  /* hostLengths is written only once the lengths have arrived. */
  int64_t* arrived = malloc(gatheredBytes);
  if (arrived == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory");
  deviceGuard guard;
  ulyssesResult_t result;
  ULYSSES_CHECK_GOTO(enterDevice(comm->cudaDevice, &guard), result, freeArrived);
  enum cudaStreamCaptureMode captureMode = relaxCaptureMode();
  ulyssesCudaContext context = {comm, stream};
  ulyssesBackend backend = ulyssesCudaBackend(&context);
  int64_t* gathered = comm->lengthScratch + 1;
  ULYSSES_CHECK_GOTO(
      ulyssesCudaCheck(cudaMemcpyAsync(comm->lengthScratch, &localLength, sizeof(int64_t),
                                       cudaMemcpyHostToDevice, stream),
                       "cudaMemcpyAsync of the local length"),
      result, done);
  ULYSSES_CHECK_GOTO(
      backend.allGather(backend.context, comm->lengthScratch, gathered, sizeof(int64_t)), result,
      done);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaMemcpyAsync(arrived, gathered, gatheredBytes,
                                                      cudaMemcpyDeviceToHost, stream),
                                      "cudaMemcpyAsync of the lengths"),
                     result, done);
  ULYSSES_CHECK_GOTO(ulyssesCudaCheck(cudaStreamSynchronize(stream), "cudaStreamSynchronize"),
                     result, done);
  memcpy(hostLengths, arrived, gatheredBytes);
done:
  restoreCaptureMode(captureMode);
  leaveDevice(&guard);
freeArrived:
  free(arrived);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesGatherLengthsHost(int64_t localLength, int64_t* hostLengths,
                                                     ulyssesComm_t comm, cudaStream_t stream) {
  ulyssesClearError();
  ULYSSES_CHECK(acquireComm(comm, 0));
  ulyssesResult_t result = gatherLengthsHost(comm, localLength, hostLengths, stream);
  releaseComm(comm);
  return result;
}

static ulyssesResult_t runStage(const struct ulyssesPlan* plan, ulyssesOp_t op, ulyssesSide side, int nTensors,
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

ulyssesResult_t ulyssesAcquireComm(struct ulyssesComm* comm, int allowAborted) {
  return acquireComm(comm, allowAborted);
}

void ulyssesReleaseComm(struct ulyssesComm* comm) { releaseComm(comm); }
