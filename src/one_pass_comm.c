/* The comm's one-pass state: made with the comm (whether it can take one
 * pass, NCCL's device comm), and freed with it (the symmetric allocations
 * left, the device comm). */
#include <stdlib.h>

#include "comm.h"
#include "error.h"
#include "log.h"
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

ulyssesResult_t ulyssesOnePassRelease(ncclComm_t nccl, int commAborted, void* ptr, void* window) {
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
    ulyssesResult_t released = ulyssesOnePassRelease(comm->nccl, aborted, ptr, window);
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
