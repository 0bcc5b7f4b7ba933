#include "enqueue.h"

#include <stdlib.h>

#include "error.h"
#include "log.h"

static const char* const opNames[ULYSSES_OP_COUNT] = {"seq->head", "head->seq", "all-gather"};

int ulyssesExchangePath(const ulyssesCall* call, const char** reason) {
  const struct ulyssesOnePassState* onePass = call->comm->onePass;
  int path = ulyssesChooseExchangePath(&onePass->support, &onePass->registry, call->plan, call->op,
                                       call->recvbuffs, reason);
  ulyssesLog(ULYSSES_LOG_INFO, "%s: %s path: %s", opNames[call->op],
             path == ULYSSES_PATH_ONE_PASS ? "one-pass" : "staged", *reason);
  return path;
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

/* The plan check: every rank all-gathers its plan's fingerprint and compares
 * them on the host before any data moves, so that ranks whose plans disagree
 * all return ulyssesErrorPlanMismatch instead of posting messages of
 * different sizes (a hang) or mixing data. That waits for the stream, which
 * a capture forbids; but the fingerprint covers everything that sizes the
 * messages, so a plan that passed eagerly on this comm (as NCCL's eager run
 * before a capture does) needs no check when a graph captures it. */
static ulyssesResult_t checkPlansAgree(const ulyssesCall* call, int path,
                                       const ulyssesBackend* backend) {
  struct ulyssesComm* comm = call->comm;
  /* The path is folded in: a rank taking one pass while another stages
   * would wait at a barrier that the other's messages never reach. */
  uint64_t fingerprint =
      ulyssesPlanFingerprint(call->plan, call->op) ^ (uint64_t)path * 0x9e3779b97f4a7c15u;
  int capturing;
  ULYSSES_CHECK(backend->capturing(backend->context, &capturing));
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
  ulyssesResult_t result = backend->gatherToHost(backend->context, &fingerprint, fingerprints);
  if (result == ulyssesSuccess)
    result = ulyssesCheckFingerprints(fingerprints, comm->nRanks, call->op);
  if (result == ulyssesSuccess) rememberPlanChecked(comm, fingerprint);
  free(fingerprints);
  return result;
}

static ulyssesResult_t launchOnePass(const ulyssesCall* call, const ulyssesBackend* backend) {
  ulyssesOnePassArgs args;
  ulyssesOnePassFill(call->plan, call->op, call->sendbuffs, NULL, &args);
  ulyssesOnePassSync sync;
  void* windows[ULYSSES_KERNEL_MAX_TENSORS] = {NULL};
  ulyssesOnePassFillSync(call->plan, call->op, &call->comm->onePass->registry, call->recvbuffs,
                         call->deviceStatus, &sync, windows);
  return backend->launchOnePass(backend->context, &args, &sync, windows);
}

ulyssesResult_t ulyssesEnqueueExchange(const ulyssesCall* call, const ulyssesBackend* backend) {
  if (call->plan == NULL) return ulyssesFail(ulyssesErrorNullPointer, "plan is NULL");
  ulyssesLogSetRank(call->plan->rank);
  ULYSSES_CHECK(ulyssesCheckCommShape(call->plan, call->comm->nRanks, call->comm->rank));
  ULYSSES_CHECK(ulyssesCheckBuffers(call, 1, 1));
  /* The path is chosen (and logged) on every call. */
  const char* pathReason;
  int path = ulyssesExchangePath(call, &pathReason);
  if (call->comm->checkPlans) ULYSSES_CHECK(checkPlansAgree(call, path, backend));
  if (path == ULYSSES_PATH_ONE_PASS) return launchOnePass(call, backend);
  return ulyssesRunExchange(call, backend);
}

ulyssesResult_t ulyssesEnqueueStage(const ulyssesCall* call, ulyssesSide side,
                                    const ulyssesBackend* backend) {
  const struct ulyssesPlan* plan = call->plan;
  if (plan == NULL) return ulyssesFail(ulyssesErrorNullPointer, "plan is NULL");
  if (plan->mode == ULYSSES_MODE_CAPACITY) {
    if (call->deviceLengths == NULL)
      return ulyssesFail(ulyssesErrorNullPointer, "deviceLengths is NULL in capacity mode");
    if (call->deviceStatus == NULL)
      return ulyssesFail(ulyssesErrorNullPointer, "deviceStatus is NULL in capacity mode");
    if ((uintptr_t)call->deviceLengths % sizeof(int64_t) != 0 ||
        (uintptr_t)call->deviceStatus % sizeof(uint32_t) != 0)
      return ulyssesFail(ulyssesErrorMisalignedPointer,
                         "deviceLengths must be 8-byte and deviceStatus 4-byte aligned");
  } else if (call->deviceLengths != NULL || call->deviceStatus != NULL) {
    return ulyssesFail(ulyssesErrorInvalidArgument,
                       "an exact-mode plan takes its lengths from the host: pass NULL "
                       "deviceLengths and deviceStatus");
  }
  ULYSSES_CHECK(ulyssesCheckBuffers(call, side == ULYSSES_SEND, side == ULYSSES_RECV));
  return ulyssesRunStage(call, side, backend);
}
