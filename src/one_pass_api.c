/* The public entry points of the one-pass exchange (include/ulysses.h, "One
 * pass over NVLink"): the symmetric allocations and the path query. */

#include "comm.h"
#include "enqueue.h"
#include "error.h"
#include "log.h"

static ulyssesResult_t memAlloc(struct ulyssesComm* comm, size_t size, void** ptr) {
  if (ptr == NULL) return ulyssesFail(ulyssesErrorNullPointer, "ptr is NULL");
  if (size == 0)
    return ulyssesFail(ulyssesErrorInvalidArgument, "size is 0; an allocation needs a byte");
  void* memory = NULL;
  ncclResult_t allocated = ncclMemAlloc(&memory, size);
  if (allocated != ncclSuccess)
    return ulyssesFail(ulyssesErrorNcclError, "ncclMemAlloc of %zu bytes failed: %s", size,
                       ncclGetErrorString(allocated));
  /* A window only where an exchange can use one: NCCL refuses symmetric
   * windows on a comm without symmetric support (seen on the one-GPU socket
   * setup: invalid usage), where the memory is still good for the staged
   * path. Whether the device comm is ready is the same on every rank, so
   * every rank registers (collectively) or none does. */
  ncclWindow_t window = NULL;
  if (comm->onePass->support.devCommReady) {
    ncclResult_t registered =
        ncclCommWindowRegister(comm->nccl, memory, size, &window, NCCL_WIN_COLL_SYMMETRIC);
    if (registered != ncclSuccess) {
      ncclMemFree(memory);
      return ulyssesFail(ulyssesErrorNcclError,
                         "ncclCommWindowRegister of %zu bytes as a symmetric window failed: %s",
                         size, ncclGetErrorString(registered));
    }
  }
  ulyssesResult_t recorded = ulyssesSymmetricAdd(&comm->onePass->registry, memory, size, window);
  if (recorded != ulyssesSuccess) {
    ulyssesOnePassRelease(comm->nccl, 0, memory, window);
    return recorded;
  }
  ulyssesLog(
      ULYSSES_LOG_INFO, "ulyssesMemAlloc: %zu bytes at %p%s", size, memory,
      window != NULL ? ", a symmetric window" : ", no window (no one-pass path on this comm)");
  *ptr = memory;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesMemAlloc(ulyssesComm_t comm, size_t size, void** ptr) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 0));
  ulyssesResult_t result = memAlloc(comm, size, ptr);
  ulyssesReleaseComm(comm);
  return result;
}

static ulyssesResult_t memFree(struct ulyssesComm* comm, void* ptr) {
  if (ptr == NULL) return ulyssesSuccess;
  void* window = NULL;
  if (!ulyssesSymmetricRemove(&comm->onePass->registry, ptr, &window))
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "ptr %p is not an allocation of ulyssesMemAlloc on this comm", ptr);
  return ulyssesOnePassRelease(comm->nccl, 0, ptr, window);
}

ULYSSES_API ulyssesResult_t ulyssesMemFree(ulyssesComm_t comm, void* ptr) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 1));
  ulyssesResult_t result = memFree(comm, ptr);
  ulyssesReleaseComm(comm);
  return result;
}

static ulyssesResult_t getExchangePath(const struct ulyssesPlan* plan, ulyssesOp_t op, int nTensors,
                                       void* const* recvbuffs, struct ulyssesComm* comm,
                                       ulyssesPath_t* path, const char** reason) {
  if (path == NULL) return ulyssesFail(ulyssesErrorNullPointer, "path is NULL");
  if (plan == NULL) return ulyssesFail(ulyssesErrorNullPointer, "plan is NULL");
  if (!ulyssesOpIsValid((int)op))
    return ulyssesFail(ulyssesErrorInvalidArgument, "op is %d, not a ulyssesOp_t", (int)op);
  ULYSSES_CHECK(ulyssesCheckCommShape(plan, comm->nRanks, comm->rank));
  if (nTensors != plan->nTensors)
    return ulyssesFail(ulyssesErrorLayoutMismatch, "nTensors is %d; the plan has %d", nTensors,
                       plan->nTensors);
  if (recvbuffs == NULL) return ulyssesFail(ulyssesErrorNullPointer, "recvbuffs is NULL");
  for (int t = 0; t < nTensors; t++)
    if (recvbuffs[t] == NULL && ulyssesPlanUserBytes(plan, op, t, ULYSSES_RECV) > 0)
      return ulyssesFail(ulyssesErrorNullPointer, "recvbuffs[%d] is NULL", t);
  const char* why;
  ulyssesCall call = {.plan = plan, .op = op, .nTensors = nTensors, .recvbuffs = recvbuffs,
                      .comm = comm};
  int chosen = ulyssesExchangePath(&call, &why);
  *path = chosen == ULYSSES_PATH_ONE_PASS ? ulyssesPathOnePass : ulyssesPathStaged;
  if (reason != NULL) *reason = why;
  return ulyssesSuccess;
}

ULYSSES_API ulyssesResult_t ulyssesGetExchangePath(ulyssesPlan_t plan, ulyssesOp_t op, int nTensors,
                                                   void* const* recvbuffs, ulyssesComm_t comm,
                                                   ulyssesPath_t* path, const char** reason) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 0));
  ulyssesResult_t result = getExchangePath(plan, op, nTensors, recvbuffs, comm, path, reason);
  ulyssesReleaseComm(comm);
  return result;
}
