/* The public entry points of the one-pass exchange (include/ulysses.h, "One
 * pass over NVLink") and the comm's one-pass state. */
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "error.h"
#include "log.h"
#include "one_pass.h"
#include "one_pass_launch.h"

ulyssesResult_t ulyssesOnePassCreate(struct ulyssesComm* comm, int enabled,
                                     int runtimeNcclVersion) {
  struct ulyssesOnePassState* state = calloc(1, sizeof *state);
  if (state == NULL) return ulyssesFail(ulyssesErrorSystemError, "out of host memory for a comm");
  ulyssesOnePassSupport* support = &state->support;
  support->enabled = enabled;
  support->kernelReady = ulyssesOnePassKernelBuilt();
  support->compiledNcclVersion = NCCL_VERSION_CODE;
  support->runtimeNcclVersion = runtimeNcclVersion;
  support->commRanks = comm->nRanks;
  comm->onePass = state;
  /* ncclDevCommCreate is collective: every rank asks, or none. Whether it
   * does depends only on what every rank of a job shares (the setting, the
   * build, the NCCL version, the comm's size), and NCCL's answer on whether
   * the comm supports symmetric memory is the same on every rank. */
  if (ulyssesOnePassCommReason(support) != NULL) return ulyssesSuccess;
  ncclResult_t created =
      ulyssesOnePassDevCommCreate(comm->nccl, comm->nRanks, &state->devComm, &support->lsaRanks);
  if (created != ncclSuccess) {
    /* Not an error: the exchanges take the staged path and say why. */
    ulyssesLog(ULYSSES_LOG_INFO, "one pass: ncclDevCommCreate failed (%s: %s); staged path",
               ncclGetErrorString(created), ncclGetLastError(comm->nccl));
    state->devComm = NULL;
    support->lsaRanks = 0;
    return ulyssesSuccess;
  }
  support->devCommReady = 1;
  ulyssesLog(ULYSSES_LOG_INFO,
             "one pass: NCCL device comm ready, load/store team of %d of %d ranks",
             support->lsaRanks, comm->nRanks);
  return ulyssesSuccess;
}

/* Deregisters and frees one allocation; the first failure is returned. An
 * aborted comm's windows went with it: only the memory is freed then. */
static ulyssesResult_t releaseSymmetric(ncclComm_t nccl, int commAborted, void* ptr, void* window) {
  ncclResult_t deregistered = commAborted || window == NULL
                                  ? ncclSuccess
                                  : ncclCommWindowDeregister(nccl, (ncclWindow_t)window);
  ncclResult_t freed = ncclMemFree(ptr);
  if (deregistered != ncclSuccess)
    return ulyssesFail(ulyssesErrorNcclError, "ncclCommWindowDeregister failed: %s",
                       ncclGetErrorString(deregistered));
  if (freed != ncclSuccess)
    return ulyssesFail(ulyssesErrorNcclError, "ncclMemFree failed: %s", ncclGetErrorString(freed));
  return ulyssesSuccess;
}

ulyssesResult_t ulyssesOnePassDestroy(struct ulyssesComm* comm) {
  struct ulyssesOnePassState* state = comm->onePass;
  if (state == NULL) return ulyssesSuccess;
  int aborted = atomic_load(&comm->aborted);
  ulyssesResult_t result = ulyssesSuccess;
  /* In allocation order, as every rank frees them. */
  while (state->registry.count > 0) {
    int oldest = 0;
    for (int i = 1; i < state->registry.count; i++)
      if (state->registry.buffers[i].serial < state->registry.buffers[oldest].serial) oldest = i;
    void* ptr = (void*)(uintptr_t)state->registry.buffers[oldest].base;
    void* window = NULL;
    ulyssesSymmetricRemove(&state->registry, ptr, &window);
    ulyssesResult_t released = releaseSymmetric(comm->nccl, aborted, ptr, window);
    if (result == ulyssesSuccess) result = released;
  }
  ulyssesSymmetricClear(&state->registry);
  if (state->devComm != NULL && !aborted) {
    ncclResult_t destroyed = ulyssesOnePassDevCommDestroy(comm->nccl, state->devComm);
    if (destroyed != ncclSuccess && result == ulyssesSuccess)
      result = ulyssesFail(ulyssesErrorNcclError, "ncclDevCommDestroy failed: %s",
                           ncclGetErrorString(destroyed));
  } else {
    free(state->devComm); /* the abort took NCCL's side of it */
  }
  free(state);
  comm->onePass = NULL;
  return result;
}

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
    releaseSymmetric(comm->nccl, 0, memory, window);
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
  return releaseSymmetric(comm->nccl, 0, ptr, window);
}

ULYSSES_API ulyssesResult_t ulyssesMemFree(ulyssesComm_t comm, void* ptr) {
  ulyssesClearError();
  ULYSSES_CHECK(ulyssesAcquireComm(comm, 1));
  ulyssesResult_t result = memFree(comm, ptr);
  ulyssesReleaseComm(comm);
  return result;
}

static const char* const opNames[ULYSSES_OP_COUNT] = {"seq->head", "head->seq", "all-gather"};

ulyssesResult_t ulyssesOnePassPath(const struct ulyssesComm* comm, const struct ulyssesPlan* plan,
                                   ulyssesOp_t op, void* const* recvbuffs, int* path,
                                   const char** reason) {
  *path = ulyssesChooseExchangePath(&comm->onePass->support, &comm->onePass->registry, plan, op,
                                    recvbuffs, reason);
  ulyssesLog(ULYSSES_LOG_INFO, "%s: %s path: %s", opNames[op],
             *path == ULYSSES_PATH_ONE_PASS ? "one-pass" : "staged", *reason);
  return ulyssesSuccess;
}

ulyssesResult_t ulyssesOnePassExchange(const struct ulyssesComm* comm,
                                       const struct ulyssesPlan* plan, ulyssesOp_t op,
                                       const void* const* sendbuffs, void* const* recvbuffs,
                                       cudaStream_t stream) {
  const struct ulyssesOnePassState* state = comm->onePass;
  ulyssesOnePassArgs args;
  ulyssesOnePassFill(plan, op, sendbuffs, NULL, NULL, NULL, NULL, &args);
  ulyssesOnePassSync sync;
  void* windows[ULYSSES_KERNEL_MAX_TENSORS] = {NULL};
  ulyssesOnePassFillSync(plan, op, &state->registry, recvbuffs, comm->deviceStatus, &sync, windows);
  return ulyssesCudaCheck(ulyssesLaunchOnePassNccl(&args, &sync, state->devComm, windows, stream),
                          "the one-pass kernel's launch");
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
  int chosen;
  ULYSSES_CHECK(ulyssesOnePassPath(comm, plan, op, recvbuffs, &chosen, &why));
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
