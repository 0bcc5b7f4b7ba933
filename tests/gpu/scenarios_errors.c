/* The GPU suite's errors group: the plan check, capacity lengths out of
 * range, ulyssesCommAbort, and (its own run of three ranks) a rank that dies
 * mid-run. The last three run on comms of their own, after the rest: their
 * errors are sticky. */
#include "suite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*------------------------------------------------------------------------
 * The plan check (ulyssesConfig_t.checkPlans, and ULYSSES_CHECK=1 with the
 * config's field left undefined). With P >= 2, rank P-1 makes its plan with
 * one length (or capacity) unlike the others': every rank must get
 * ulyssesErrorPlanMismatch, with a message naming rank P-1, nothing hung and
 * nothing written; then exchanges with agreeing plans on the same comm work
 * and are correct. With P = 1 only the agreeing plans run (they must pass
 * the check).
 *----------------------------------------------------------------------*/

/* Whether the message lists exactly rank as the one differing rank: the
 * library writes the list in parentheses, "(3)". */
static int namesOnlyRank(const char* text, int rank) {
  char listed[24];
  snprintf(listed, sizeof listed, "(%d)", rank);
  return strstr(text, listed) != NULL;
}

/* Rank P-1's plan holds rank 0's slot plus 2 (its own buffers stay right for
 * its plan, so only the check can tell). */
static void expectPlanMismatch(ulyssesComm_t comm, ulyssesOp_t op, int nTensors,
                               const ulyssesLayout_t* layouts, const int64_t* slots, int capacity,
                               uint64_t seed) {
  char label[64];
  snprintf(label, sizeof label, "%s %s", capacity ? "capacity" : "exact", opName(op));
  int64_t mine[MAX_RANKS];
  memcpy(mine, slots, sizeof(int64_t) * (size_t)gRanks);
  if (gRank == gRanks - 1) mine[0] += 2;
  Case c;
  caseInit(&c, nTensors, layouts, mine, mine, capacity);
  int64_t* deviceLength = capacity ? deviceLengthCreate(mine[gRank]) : NULL;
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  const BufferStyle style = {GUARD_BYTES, 0};
  Exchange x;
  exchangePrepare(&x, &c, plan, op, &style, seed);
  char message[512];
  ulyssesResult_t got = exchangeRefused(&x, plan, label, comm, message, sizeof message);
  gChecks += 2;
  if (got != ulyssesErrorPlanMismatch)
    reportFailure(
        "%s: rank %d's plan differs, yet the call returned %s, not "
        "ulyssesErrorPlanMismatch (\"%s\")",
        label, gRanks - 1, ulyssesGetErrorString(got), message);
  else if (!namesOnlyRank(message, gRanks - 1))
    reportFailure("%s: the message \"%s\" does not name rank %d, whose plan differs", label,
                  message, gRanks - 1);
  exchangeFree(&x);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (deviceLength != NULL) CUDA_CHECK(cudaFree(deviceLength));
}

static void runPlanCheckScenario(const Suite* suite, int argument) {
  (void)argument;
  ncclComm_t nccl = suite->nccl;
  setScenario("plan check: comms");
  double started = nowMs();
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.checkPlans = 1;
  ulyssesComm_t byConfig = NULL, byEnvironment = NULL;
  ULY_CHECK(ulyssesCommCreate(&byConfig, nccl, &config));
  char saved[64] = "";
  const char* before = getenv("ULYSSES_CHECK");
  if (before != NULL) snprintf(saved, sizeof saved, "%s", before);
  setenv("ULYSSES_CHECK", "1", 1);
  ULY_CHECK(ulyssesCommCreate(&byEnvironment, nccl, NULL));
  if (before != NULL)
    setenv("ULYSSES_CHECK", saved, 1);
  else
    unsetenv("ULYSSES_CHECK");
  uint64_t seed = mixSeed(3000, 0);

  /* Exact mode, seq->head through ulyssesSeqToHead. */
  const ulyssesLayout_t exact = LAYOUT(2, 6, 4, 2, 1, BSHD);
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = (r + 2) % 3; /* 2, 0, 1, 2, ... */
  if (gRanks >= 2) {
    setScenario("plan check (config.checkPlans = 1): rank %d's lengths differ", gRanks - 1);
    expectPlanMismatch(byConfig, ulyssesOpSeqToHead, 1, &exact, lengths, 0, mixSeed(seed, 1));
  }
  setScenario("plan check (config.checkPlans = 1): agreeing plans");
  Case c;
  caseInit(&c, 1, &exact, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  const BufferStyle dense = {GUARD_BYTES, 0}, nullWhenEmpty = {GUARD_BYTES, 1};
  runCase(&c, plan, mixSeed(seed, 2), &dense, 0, 0, byConfig);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  checkNoAsyncError(byConfig);

  /* Capacity mode, head->seq of two tensors through ulyssesExchangeMulti. */
  const ulyssesLayout_t pair[2] = {LAYOUT(1, 4, 8, 4, 1, SBHD), LAYOUT(2, 3, 2, 2, 3, BSHD)};
  int64_t capacities[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) capacities[r] = lengths[r] + 1 + r % 2;
  if (gRanks >= 2) {
    setScenario("plan check (ULYSSES_CHECK=1): rank %d's capacities differ", gRanks - 1);
    expectPlanMismatch(byEnvironment, ulyssesOpHeadToSeq, 2, pair, capacities, 1,
                       mixSeed(seed, 3));
  }
  setScenario("plan check (ULYSSES_CHECK=1): agreeing plans");
  caseInit(&c, 2, pair, lengths, capacities, 1);
  int64_t* deviceLength = deviceLengthCreate(lengths[gRank]);
  plan = makePlan(&c, deviceLength);
  runCase(&c, plan, mixSeed(seed, 4), &nullWhenEmpty, 1, 1, byEnvironment);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  CUDA_CHECK(cudaFree(deviceLength));
  checkNoAsyncError(byEnvironment);

  CUDA_CHECK(cudaStreamSynchronize(gStream));
  ULY_CHECK(ulyssesCommDestroy(byConfig));
  ULY_CHECK(ulyssesCommDestroy(byEnvironment));
  if (gRank == 0) printf("rank 0: scenario plan check: done in %.0f ms\n", nowMs() - started);
}

/*------------------------------------------------------------------------
 * A capacity-mode length out of range on one rank, on a comm of its own
 * (the error is sticky): every rank must see it, nothing may be written
 * outside the buffers, and the exchange runs with the clamped length (0 for a
 * negative one, the capacity for one above it), which defines the real rows
 * of the inputs and outputs.
 *----------------------------------------------------------------------*/
/* argument: 1 for a negative length, 0 for one above the capacity */
static void runBadLengthScenario(const Suite* suite, int negative) {
  ncclComm_t nccl = suite->nccl;
  ulyssesComm_t mainComm = suite->comm;
  setScenario("capacity length %s (rank %d's)", negative ? "negative" : "above its capacity",
              negative ? 0 : gRanks - 1);
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, NULL));
  const ulyssesLayout_t layout = LAYOUT(2, 5, 3, 4, 1, BSHD);
  int victim = negative ? 0 : gRanks - 1;
  int64_t capacities[MAX_RANKS], clamped[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) {
    capacities[r] = r + 2;
    clamped[r] = r + 1; /* the others: one row of padding per batch entry */
  }
  clamped[victim] = negative ? 0 : capacities[victim];
  int64_t myLength = clamped[gRank];
  if (gRank == victim) myLength = negative ? -3 : capacities[gRank] + 3;
  Case c;
  caseInit(&c, 1, &layout, clamped, capacities, 1);
  int64_t* deviceLength = deviceLengthCreate(myLength);
  ulyssesPlan_t plan = makePlan(&c, deviceLength);
  uint64_t seed = mixSeed(2000, (uint64_t)negative);

  /* The reference, with the clamped lengths. */
  const BufferStyle style = {GUARD_BYTES, 0};
  ulyssesResult_t want = negative ? ulyssesErrorInvalidLength : ulyssesErrorLengthExceedsCapacity;
  const ulyssesOp_t ops[3] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq, ulyssesOpAllGather};
  for (int i = 0; i < 3; i++) {
    ulyssesOp_t op = ops[i];
    char label[96];
    snprintf(label, sizeof label, "%s with a bad length", opName(op));
    exchangeChecked(&c, plan, op, label, &style, mixSeed(seed, 10 + (uint64_t)i), comm);
    ulyssesResult_t asyncError = ulyssesSuccess;
    ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
    gChecks++;
    if (asyncError != want)
      reportFailure("after %s, ulyssesCommGetAsyncError reports %s, not %s", opName(op),
                    ulyssesGetErrorString(asyncError), ulyssesGetErrorString(want));
    /* Handled: cleared, so that the next op has to report it again. */
    CUDA_CHECK(cudaStreamSynchronize(gStream));
    ULY_CHECK(ulyssesCommClearAsyncError(comm));
    ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
    gChecks++;
    if (asyncError != ulyssesSuccess)
      reportFailure("after ulyssesCommClearAsyncError, ulyssesCommGetAsyncError reports %s",
                    ulyssesGetErrorString(asyncError));
  }
  /* Every rank's length in range again: nothing more to report. */
  deviceLengthSet(deviceLength, clamped[gRank]);
  exchangeChecked(&c, plan, ulyssesOpSeqToHead, "seq->head with every length in range", &style,
                  mixSeed(seed, 20), comm);
  checkNoAsyncError(comm);
  checkNoAsyncError(mainComm); /* the other comm's status is its own */
  ULY_CHECK(ulyssesPlanDestroy(plan));
  CUDA_CHECK(cudaFree(deviceLength));
  ULY_CHECK(ulyssesCommDestroy(comm));
  if (gRank == 0) printf("rank 0: scenario %s: done\n", gScenario);
}

/*------------------------------------------------------------------------
 * ulyssesCommAbort, last of all: on a communicator of its own (ncclCommSplit
 * of the main one), used once, then aborted on every rank. A later exchange
 * on it is refused with ulyssesErrorInvalidUsage and writes nothing;
 * ulyssesCommDestroy still frees it (NCCL's communicator went with the
 * abort); the main comm still works.
 *----------------------------------------------------------------------*/
static void runAbortScenario(const Suite* suite, int argument) {
  (void)argument;
  ncclComm_t nccl = suite->nccl;
  ulyssesComm_t mainComm = suite->comm;
  setScenario("abort: ncclCommSplit");
  double started = nowMs();
  ncclComm_t split = NULL;
  NCCL_CHECK(ncclCommSplit(nccl, 0, gRank, &split, NULL));
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, split, NULL));
  const ulyssesLayout_t layout = LAYOUT(2, 4, 8, 2, 1, BSHD);
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = r % 3 + 1;
  Case c;
  caseInit(&c, 1, &layout, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  uint64_t seed = mixSeed(5000, 0);
  const BufferStyle style = {GUARD_BYTES, 0};
  Exchange x;
  exchangePrepare(&x, &c, plan, ulyssesOpSeqToHead, &style, seed);

  setScenario("abort: seq->head before the abort");
  exchangeRun(&x, plan, "seq->head on the comm to abort", 0, comm);
  CUDA_CHECK(cudaStreamSynchronize(gStream));

  setScenario("abort: ulyssesCommAbort");
  ulyssesResult_t aborted = ulyssesCommAbort(comm);
  gChecks++;
  if (aborted != ulyssesSuccess)
    reportFailure("ulyssesCommAbort returned %s (%s)", ulyssesGetErrorString(aborted),
                  ulyssesGetLastError());

  /* The aborted NCCL communicator is freed: not asked again; it had no error. */
  setScenario("abort: ulyssesCommGetAsyncError after the abort");
  ulyssesResult_t afterAbort = ulyssesErrorCudaError;
  ULY_CHECK(ulyssesCommGetAsyncError(comm, &afterAbort));
  gChecks++;
  if (afterAbort != ulyssesSuccess)
    reportFailure("after a clean abort, ulyssesCommGetAsyncError reports %s (%s)",
                  ulyssesGetErrorString(afterAbort), ulyssesGetLastError());

  setScenario("abort: seq->head on the aborted comm");
  char message[512];
  ulyssesResult_t refused =
      exchangeRefused(&x, plan, "refused seq->head", comm, message, sizeof message);
  gChecks++;
  if (refused != ulyssesErrorInvalidUsage)
    reportFailure("ulyssesSeqToHead on an aborted comm returned %s, not ulyssesErrorInvalidUsage",
                  ulyssesGetErrorString(refused));

  setScenario("abort: ulyssesCommDestroy of the aborted comm");
  ulyssesResult_t destroyed = ulyssesCommDestroy(comm);
  gChecks++;
  if (destroyed != ulyssesSuccess)
    reportFailure("ulyssesCommDestroy of an aborted comm returned %s (%s)",
                  ulyssesGetErrorString(destroyed), ulyssesGetLastError());

  setScenario("abort: the main comm afterwards");
  exchangeRun(&x, plan, "seq->head on the main comm after the abort", 0, mainComm);
  checkNoAsyncError(mainComm);
  exchangeFree(&x);
  ULY_CHECK(ulyssesPlanDestroy(plan));
  if (gRank == 0) printf("rank 0: scenario abort: done in %.0f ms\n", nowMs() - started);
}

/*------------------------------------------------------------------------
 * A rank that dies mid-run (--rank-failure): every rank runs seq->head
 * exchanges; before the 20th the last rank exits at once, without NCCL's
 * teardown, as a killed process does (its sockets close). The others must
 * notice through ulyssesCommGetAsyncError while they wait for the exchange
 * it never joined, abort with ulyssesCommAbort and leave within
 * FAILURE_NOTICE_SECONDS: exit 0 when they did, 1 when they saw no error in
 * time (a hang the watchdog could not end).
 *----------------------------------------------------------------------*/
enum { FAILURE_ITERATION = 20 };

static void runRankFailure(const Suite* suite, int argument) {
  (void)argument;
  ncclComm_t nccl = suite->nccl;
  setScenario("rank failure: set-up");
  ulyssesComm_t comm = NULL;
  ULY_CHECK(ulyssesCommCreate(&comm, nccl, NULL));
  const ulyssesLayout_t layout = LAYOUT(2, 4, 64, 2, 1, BSHD);
  int64_t lengths[MAX_RANKS];
  for (int r = 0; r < gRanks; r++) lengths[r] = 64 + r;
  Case c;
  caseInit(&c, 1, &layout, lengths, lengths, 0);
  ulyssesPlan_t plan = makePlan(&c, NULL);
  DevBuf send, recv, ws;
  size_t wsBytes = 0;
  ULY_CHECK(ulyssesGetWorkspaceSize(plan, ulyssesOpSeqToHead, &wsBytes));
  bufCreate(&send, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 1), GUARD_BYTES, 0, 0);
  bufCreate(&recv, planBytes(plan, &c, ulyssesOpSeqToHead, 0, 0), GUARD_BYTES, 0, OUTPUT_FILL);
  bufCreate(&ws, wsBytes, GUARD_BYTES, 1, WORKSPACE_FILL);
  for (int i = 0;; i++) {
    setScenario("rank failure: exchange %d", i);
    if (i == FAILURE_ITERATION && gRank == gRanks - 1) {
      printf("rank %d: exiting without teardown before exchange %d\n", gRank, i);
      fflush(stdout);
      _exit(0);
    }
    const ExchangeCall call = {plan, ulyssesOpSeqToHead, 1, 0, &send, &recv, &ws};
    ULY_CHECK(enqueueExchangeOn(&call, comm, gStream));
    /* A watchdog's wait: the stream, or an asynchronous error. */
    double waitStarted = nowMs();
    for (;;) {
      cudaError_t query = cudaStreamQuery(gStream);
      if (query == cudaSuccess) break;
      if (query != cudaErrorNotReady) {
        printf("rank %d: cudaStreamQuery: %s\n", gRank, cudaGetErrorString(query));
        fflush(stdout);
        _exit(1);
      }
      ulyssesResult_t asyncError = ulyssesSuccess;
      ULY_CHECK(ulyssesCommGetAsyncError(comm, &asyncError));
      if (asyncError != ulyssesSuccess) {
        printf("rank %d: exchange %d: %s (%s) after %.1f s; aborting\n", gRank, i,
               ulyssesGetErrorString(asyncError), ulyssesGetLastError(),
               (nowMs() - waitStarted) * 1e-3);
        ulyssesResult_t aborted = ulyssesCommAbort(comm);
        printf("rank %d: ulyssesCommAbort: %s\n", gRank, ulyssesGetErrorString(aborted));
        fflush(stdout);
        /* NCCL's communicator went with the abort; the process leaves
         * without waiting for a stream that may hold the cancelled work. */
        _exit(aborted == ulyssesSuccess && i == FAILURE_ITERATION ? 0 : 1);
      }
      if (nowMs() - waitStarted > FAILURE_NOTICE_SECONDS * 1e3) {
        printf("rank %d: exchange %d: no error and no completion after %d s\n", gRank, i,
               FAILURE_NOTICE_SECONDS);
        fflush(stdout);
        ulyssesCommAbort(comm);
        _exit(1);
      }
      usleep(1000);
    }
  }
}


void addErrorScenarios(ScenarioList* list) {
  scenarioAdd(list, "errors", runPlanCheckScenario, 0, 0, "plan-check");
  scenarioAdd(list, "errors", runBadLengthScenario, 1, 0, "bad-length-negative");
  scenarioAdd(list, "errors", runBadLengthScenario, 0, 0, "bad-length-above-capacity");
  scenarioAdd(list, "errors", runAbortScenario, 0, 0, "abort");
  scenarioAdd(list, "errors", runRankFailure, 0, FAILURE_RANKS, "rank-failure");
}
