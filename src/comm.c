/* The comm: the registry of live comms and their references, creation,
 * destruction, abort, and the asynchronous errors. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "config.h"
#include "env.h"
#include "error.h"
#include "log.h"

#define MIN_NCCL_VERSION 21800

ULYSSES_API ulyssesResult_t ulyssesGetVersion(int* version) {
  ulyssesClearError();
  if (version == NULL) return ulyssesFail(ulyssesErrorNullPointer, "version is NULL");
  *version = ULYSSES_VERSION_CODE;
  return ulyssesSuccess;
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
  ulyssesDeviceGuard guard;
  if (ulyssesEnterDevice(comm->cudaDevice, &guard) == ulyssesSuccess) {
    freed = ulyssesOnePassDestroy(comm) == ulyssesSuccess;
    freed = cudaFree(comm->lengthScratch) == cudaSuccess && freed;
    freed = cudaFreeHost(comm->hostStatus) == cudaSuccess && freed;
    ulyssesLeaveDevice(&guard);
  }
  pthread_mutex_destroy(&comm->lock);
  free(comm);
  return freed;
}

/* Gives back a call's reference; after a concurrent ulyssesCommDestroy the
 * last call to return frees comm. */
void ulyssesReleaseComm(struct ulyssesComm* comm) {
  pthread_mutex_lock(&registryLock);
  int last = --comm->references == 0;
  pthread_mutex_unlock(&registryLock);
  if (last && !freeComm(comm))
    ulyssesLog(ULYSSES_LOG_WARN, "freeing the memory of a destroyed comm failed");
}

/* Takes a reference to comm for the call: refused unless comm is live and,
 * without allowAborted, not aborted. */
ulyssesResult_t ulyssesAcquireComm(struct ulyssesComm* comm, int allowAborted) {
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
    ulyssesReleaseComm(comm);
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
  ulyssesDeviceGuard guard;
  ULYSSES_CHECK_GOTO(ulyssesEnterDevice(c->cudaDevice, &guard), result, failed);
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
  ulyssesLeaveDevice(&guard);
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
  ulyssesLeaveDevice(&guard);
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
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 0));
  ulyssesResult_t result = abortComm(comm);
  ulyssesReleaseComm(comm);
  return result;
}

/* One int field of comm (at offset, named name) into *value. */
static ulyssesResult_t readCommInt(ulyssesComm_t comm, size_t offset, int* value,
                                   const char* name) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 1));
  ulyssesResult_t result = ulyssesSuccess;
  if (value == NULL)
    result = ulyssesFail(ulyssesErrorNullPointer, "%s is NULL", name);
  else
    memcpy(value, (const unsigned char*)comm + offset, sizeof *value);
  ulyssesReleaseComm(comm);
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
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 1));
  ulyssesResult_t result = asyncErrorOf(comm, asyncError);
  ulyssesReleaseComm(comm);
  return result;
}

ULYSSES_API ulyssesResult_t ulyssesCommClearAsyncError(ulyssesComm_t comm) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 1));
  __atomic_store_n(comm->hostStatus, 0u, __ATOMIC_RELEASE);
  pthread_mutex_lock(&comm->lock);
  comm->reportedAsync = ulyssesSuccess; /* a recurring error is logged again */
  pthread_mutex_unlock(&comm->lock);
  ulyssesReleaseComm(comm);
  return ulyssesSuccess;
}
