/* Errors that are not bad arguments: a destroyed or aborted comm, ranks
 * whose plans disagree, NCCL errors, non-blocking communicators, device-side
 * length errors, and the logging and configuration behind them. The public
 * entry points run against tests/fake_runtime.c in place of CUDA and NCCL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "error.h"
#include "fake_runtime.h"
#include "log.h"
#include "plan.h"
#include "reference.h"

static const ulyssesLayout_t layout = {
    .size = sizeof(ulyssesLayout_t), .batch = 2, .heads = 4, .headDim = 3, .elementSize = 2, .packed = 1, .order = ulyssesOrderBSHD};

static void expectCode(ulyssesResult_t got, ulyssesResult_t want, const char* words) {
  if (got != want)
    fail_msg("expected %s, got %s (%s)", ulyssesGetErrorString(want), ulyssesGetErrorString(got),
             ulyssesGetLastError());
  if (words != NULL && strstr(ulyssesGetLastError(), words) == NULL)
    fail_msg("the message \"%s\" does not say \"%s\"", ulyssesGetLastError(), words);
}

static ulyssesComm_t createComm(int nRanks, int rank, int checkPlans) {
  fakeReset(nRanks, rank);
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.checkPlans = checkPlans;
  ulyssesComm_t comm = NULL;
  assert_int_equal(ulyssesCommCreate(&comm, fakeComm(), &config), ulyssesSuccess);
  return comm;
}

/* One rank's buffers for a one-tensor plan. */
typedef struct {
  ulyssesPlan_t plan;
  unsigned char *send, *recv, *workspace;
  size_t workspaceBytes;
} call;

static void callSetup(call* c, int nRanks, int rank, const int64_t* lengths, ulyssesOp_t op) {
  assert_int_equal(ulyssesPlanCreateExact(&c->plan, nRanks, rank, lengths, 1, &layout), ulyssesSuccess);
  size_t sendBytes, recvBytes;
  assert_int_equal(ulyssesGetBufferSizes(c->plan, op, 0, &sendBytes, &recvBytes), ulyssesSuccess);
  assert_int_equal(ulyssesGetWorkspaceSize(c->plan, op, &c->workspaceBytes), ulyssesSuccess);
  c->send = malloc(sendBytes + 1);
  c->recv = calloc(recvBytes + 1, 1);
  c->workspace = aligned_alloc(256, c->workspaceBytes / 256 * 256 + 256);
  refFillPattern(c->send, sendBytes, 42);
}

static void callTeardown(call* c) {
  ulyssesPlanDestroy(c->plan);
  free(c->send);
  free(c->recv);
  free(c->workspace);
}

static ulyssesResult_t seqToHead(call* c, ulyssesComm_t comm) {
  return ulyssesSeqToHead(c->plan, c->send, c->recv, c->workspace, c->workspaceBytes, comm, NULL);
}

/*------------------------------------------------------------------------
 * Configuration, logging, results.
 *----------------------------------------------------------------------*/
static void testConfig(void** state) {
  (void)state;
  ulyssesSettings settings;
  assert_int_equal(ulyssesReadConfig(NULL, NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0);
  assert_int_equal(ulyssesReadConfig(NULL, "1", &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 1);
  assert_int_equal(ulyssesReadConfig(NULL, "0", &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0);
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  assert_int_equal(ulyssesReadConfig(&config, "1", &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 1); /* left undefined: the environment decides */
  config.checkPlans = 0;
  assert_int_equal(ulyssesReadConfig(&config, "1", &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0); /* set: it wins */
  config.checkPlans = 2;
  expectCode(ulyssesReadConfig(&config, NULL, &settings), ulyssesErrorInvalidArgument, "checkPlans");
  /* A caller built against the first header, whose config ends before
   * checkPlans: the field is not read. */
  config.checkPlans = 2;
  config.size = offsetof(ulyssesConfig_t, checkPlans);
  assert_int_equal(ulyssesReadConfig(&config, NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0);
  config.size = 4;
  expectCode(ulyssesReadConfig(&config, NULL, &settings), ulyssesErrorInvalidArgument, "size");
  config = (ulyssesConfig_t)ULYSSES_CONFIG_INITIALIZER;
  config.magic = 0;
  expectCode(ulyssesReadConfig(&config, NULL, &settings), ulyssesErrorInvalidArgument,
             "ULYSSES_CONFIG_INITIALIZER");
}

static void testLogLevels(void** state) {
  (void)state;
  assert_int_equal(ulyssesLogLevelFromString(NULL), ULYSSES_LOG_NONE);
  assert_int_equal(ulyssesLogLevelFromString("WARN"), ULYSSES_LOG_WARN);
  assert_int_equal(ulyssesLogLevelFromString("warn"), ULYSSES_LOG_WARN);
  assert_int_equal(ulyssesLogLevelFromString("INFO"), ULYSSES_LOG_INFO);
  assert_int_equal(ulyssesLogLevelFromString("VERSION"), ULYSSES_LOG_NONE);
}

/* With ULYSSES_DEBUG=INFO (set by main before the first call), a plan and an
 * error each print one line with the rank. */
static void testLogLines(void** state) {
  (void)state;
  fflush(stderr);
  int saved = dup(2);
  FILE* capture = tmpfile();
  assert_non_null(capture);
  dup2(fileno(capture), 2);
  ulyssesPlan_t plan = NULL;
  int64_t lengths[3] = {1, 2, 3};
  assert_int_equal(ulyssesPlanCreateExact(&plan, 3, 2, lengths, 1, &layout), ulyssesSuccess);
  ulyssesLayout_t bad = layout;
  bad.packed = 5;
  ulyssesPlan_t unused;
  assert_int_equal(ulyssesPlanCreateExact(&unused, 3, 1, lengths, 1, &bad), ulyssesErrorInvalidArgument);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  ulyssesPlanDestroy(plan);
  char text[2048] = "";
  rewind(capture);
  size_t got = fread(text, 1, sizeof text - 1, capture);
  text[got] = '\0';
  fclose(capture);
  assert_non_null(strstr(text, "ulysses INFO [rank 2] plan: exact mode, 3 rank(s), 1 tensor(s)"));
  assert_non_null(strstr(text, "ulysses WARN [rank 1] ulyssesErrorInvalidArgument: layouts[0].packed is 5"));
}

static void testAsyncResults(void** state) {
  (void)state;
  expectCode(ulyssesAsyncResult(0, ncclSuccess, "x"), ulyssesSuccess, NULL);
  expectCode(ulyssesAsyncResult(0, ncclInProgress, "x"), ulyssesSuccess, NULL);
  expectCode(ulyssesAsyncResult(ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY, ncclSuccess, "x"),
             ulyssesErrorLengthExceedsCapacity, "capacity");
  expectCode(ulyssesAsyncResult(ULYSSES_STATUS_NEGATIVE_LENGTH, ncclRemoteError, "x"),
             ulyssesErrorInvalidLength, "negative");
  expectCode(ulyssesAsyncResult(0, ncclRemoteError, "remote process exited"), ulyssesErrorNcclError,
             "remote process exited");
}

/* Ranks whose plans agree give equal fingerprints; any disagreement that
 * would make their messages differ gives different ones. */
static void testFingerprints(void** state) {
  (void)state;
  int64_t lengths[3] = {4, 0, 2};
  ulyssesPlan_t plans[3];
  for (int r = 0; r < 3; r++)
    assert_int_equal(ulyssesPlanCreateExact(&plans[r], 3, r, lengths, 1, &layout), ulyssesSuccess);
  uint64_t fingerprints[3];
  for (int r = 0; r < 3; r++) fingerprints[r] = ulyssesPlanFingerprint(plans[r], ulyssesOpSeqToHead);
  assert_int_equal(ulyssesCheckFingerprints(fingerprints, 3, ulyssesOpSeqToHead), ulyssesSuccess);
  assert_true(ulyssesPlanFingerprint(plans[0], ulyssesOpHeadToSeq) != fingerprints[0]);

  ulyssesPlan_t other;
  int64_t otherLengths[3] = {4, 1, 2};
  assert_int_equal(ulyssesPlanCreateExact(&other, 3, 2, otherLengths, 1, &layout), ulyssesSuccess);
  fingerprints[2] = ulyssesPlanFingerprint(other, ulyssesOpSeqToHead);
  expectCode(ulyssesCheckFingerprints(fingerprints, 3, ulyssesOpSeqToHead), ulyssesErrorPlanMismatch,
             "(2)");
  ulyssesPlanDestroy(other);
  ulyssesLayout_t otherLayout = layout;
  otherLayout.headDim = 4;
  assert_int_equal(ulyssesPlanCreateExact(&other, 3, 1, lengths, 1, &otherLayout), ulyssesSuccess);
  fingerprints[1] = ulyssesPlanFingerprint(other, ulyssesOpSeqToHead);
  expectCode(ulyssesCheckFingerprints(fingerprints, 3, ulyssesOpSeqToHead), ulyssesErrorPlanMismatch,
             "2 rank(s) (1, 2)");
  ulyssesPlanDestroy(other);
  int64_t deviceLength = 0;
  assert_int_equal(ulyssesPlanCreateCapacity(&other, 3, 0, lengths, &deviceLength, 1, &layout),
                   ulyssesSuccess);
  assert_true(ulyssesPlanFingerprint(other, ulyssesOpSeqToHead) !=
              ulyssesPlanFingerprint(plans[0], ulyssesOpSeqToHead));
  ulyssesPlanDestroy(other);
  for (int r = 0; r < 3; r++) ulyssesPlanDestroy(plans[r]);
}

/*------------------------------------------------------------------------
 * The public entry points on the fake runtime.
 *----------------------------------------------------------------------*/

/* One rank runs a whole exchange through the public API: the result is the
 * reference's. */
static void testOneRankThroughThePublicApi(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(1, 0, 0);
  int64_t lengths[1] = {5};
  for (int op = 0; op < 3; op++) {
    call c;
    callSetup(&c, 1, 0, lengths, (ulyssesOp_t)op);
    assert_int_equal(ulyssesExchangeMulti(c.plan, (ulyssesOp_t)op, 1, (const void* const*)&c.send,
                                          (void* const*)&c.recv, c.workspace, c.workspaceBytes, comm,
                                          NULL),
                     ulyssesSuccess);
    /* With one rank every op is the identity. */
    size_t bytes;
    assert_int_equal(ulyssesGetBufferSizes(c.plan, (ulyssesOp_t)op, 0, &bytes, NULL), ulyssesSuccess);
    assert_memory_equal(c.recv, c.send, bytes);
    callTeardown(&c);
  }
  ulyssesResult_t asyncError = ulyssesErrorCudaError;
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesSuccess);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
}

/* A capacity-mode length above its capacity reaches ulyssesCommGetAsyncError. */
static void testDeviceLengthErrorIsReported(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(1, 0, 0);
  int64_t capacities[1] = {4}, deviceLength = 6;
  ulyssesPlan_t plan;
  assert_int_equal(ulyssesPlanCreateCapacity(&plan, 1, 0, capacities, &deviceLength, 1, &layout),
                   ulyssesSuccess);
  size_t sendBytes, recvBytes, workspaceBytes;
  assert_int_equal(ulyssesGetBufferSizes(plan, ulyssesOpSeqToHead, 0, &sendBytes, &recvBytes), ulyssesSuccess);
  assert_int_equal(ulyssesGetWorkspaceSize(plan, ulyssesOpSeqToHead, &workspaceBytes), ulyssesSuccess);
  unsigned char* send = calloc(sendBytes, 1);
  unsigned char* recv = calloc(recvBytes, 1);
  unsigned char* workspace = aligned_alloc(256, workspaceBytes / 256 * 256 + 256);
  assert_int_equal(ulyssesSeqToHead(plan, send, recv, workspace, workspaceBytes, comm, NULL), ulyssesSuccess);
  ulyssesResult_t asyncError;
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesErrorLengthExceedsCapacity);
  free(send);
  free(recv);
  free(workspace);
  ulyssesPlanDestroy(plan);
  ulyssesCommDestroy(comm);
}

static void testDestroyedCommIsRefused(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(1, 0, 0);
  int64_t lengths[1] = {3};
  call c;
  callSetup(&c, 1, 0, lengths, ulyssesOpSeqToHead);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
  int before = fakeEventCount();
  expectCode(seqToHead(&c, comm), ulyssesErrorInvalidUsage, "destroyed");
  int nRanks;
  expectCode(ulyssesCommCount(comm, &nRanks), ulyssesErrorInvalidUsage, "destroyed");
  expectCode(ulyssesCommDestroy(comm), ulyssesErrorInvalidUsage, "destroyed twice");
  assert_int_equal(fakeEventCount(), before);
  callTeardown(&c);
}

static void testAbortedCommIsRefused(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(1, 0, 0);
  int64_t lengths[1] = {3};
  call c;
  callSetup(&c, 1, 0, lengths, ulyssesOpSeqToHead);
  assert_int_equal(ulyssesCommAbort(comm), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_COMM_ABORT), 1);
  int before = fakeEventCount();
  expectCode(seqToHead(&c, comm), ulyssesErrorInvalidUsage, "aborted");
  expectCode(ulyssesCommAbort(comm), ulyssesErrorInvalidUsage, "aborted");
  assert_int_equal(fakeEventCount(), before);
  ulyssesResult_t asyncError;
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
  callTeardown(&c);
}

/* Two ranks whose plans differ: with the check on, every rank returns
 * ulyssesErrorPlanMismatch before posting a message or launching a kernel. */
static void testPlanCheck(void** state) {
  (void)state;
  int64_t lengths[2] = {3, 2};
  call c;
  ulyssesComm_t comm = createComm(2, 0, 1);
  callSetup(&c, 2, 0, lengths, ulyssesOpSeqToHead);
  uint64_t mine = ulyssesPlanFingerprint(c.plan, ulyssesOpSeqToHead);
  fake.peerAllGatherByte = (unsigned char)~(mine & 0xff); /* rank 1's plan is another */
  expectCode(seqToHead(&c, comm), ulyssesErrorPlanMismatch, "(1)");
  assert_int_equal(fakeCount(FAKE_ALL_GATHER), 1);
  assert_int_equal(fakeCount(FAKE_SYNCHRONIZE), 1);
  assert_int_equal(fakeCount(FAKE_SEND) + fakeCount(FAKE_RECV) + fakeCount(FAKE_COPY_KERNEL), 0);
  ulyssesCommDestroy(comm);
  /* While the stream is captured the check cannot synchronise: skipped. */
  comm = createComm(2, 0, 1);
  fake.capturing = 1;
  fake.peerAllGatherByte = (unsigned char)~(mine & 0xff);
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_SYNCHRONIZE), 0);
  assert_true(fakeCount(FAKE_SEND) > 0);
  ulyssesCommDestroy(comm);
  /* Off: no all-gather, no synchronisation. */
  comm = createComm(2, 0, 0);
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_ALL_GATHER) + fakeCount(FAKE_SYNCHRONIZE), 0);
  ulyssesCommDestroy(comm);
  callTeardown(&c);
}

/* A non-blocking communicator answers ncclInProgress: the library waits for
 * it on the host before enqueuing the next kernel. */
static void testNonBlockingCommunicator(void** state) {
  (void)state;
  fakeReset(2, 1);
  fake.inProgressPolls = 3;
  ulyssesComm_t comm = NULL;
  assert_int_equal(ulyssesCommCreate(&comm, fakeComm(), NULL), ulyssesSuccess);
  int64_t lengths[2] = {2, 3};
  call c;
  callSetup(&c, 2, 1, lengths, ulyssesOpHeadToSeq);
  int before = fakeEventCount();
  assert_int_equal(ulyssesHeadToSeq(c.plan, c.send, c.recv, c.workspace, c.workspaceBytes, comm, NULL),
                   ulyssesSuccess);
  /* After ncclGroupEnd: three polls in progress, one settled, then the unpack. */
  int groupEnd = -1;
  for (int i = before; i < fakeEventCount(); i++)
    if (fakeEventAt(i) == FAKE_GROUP_END) groupEnd = i;
  assert_true(groupEnd >= 0);
  for (int i = 1; i <= 4; i++) assert_int_equal(fakeEventAt(groupEnd + i), FAKE_ASYNC_POLL);
  assert_int_equal(fakeEventAt(groupEnd + 5), FAKE_COPY_KERNEL);
  callTeardown(&c);
  ulyssesCommDestroy(comm);
}

/* An NCCL error names the call and NCCL's message, and the group that was
 * started is still ended. */
static void testNcclErrorClosesTheGroup(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(2, 0, 0);
  int64_t lengths[2] = {3, 2};
  call c;
  callSetup(&c, 2, 0, lengths, ulyssesOpSeqToHead);
  fake.failNextSend = ncclRemoteError;
  expectCode(seqToHead(&c, comm), ulyssesErrorNcclError, "ncclSend failed: fake NCCL error (the fake's last error)");
  assert_int_equal(fakeCount(FAKE_GROUP_START), 1);
  assert_int_equal(fakeCount(FAKE_GROUP_END), 1);
  assert_int_equal(fakeCount(FAKE_COPY_KERNEL), 1); /* the pack; no unpack after the error */
  fake.asyncError = ncclRemoteError;
  ulyssesResult_t asyncError;
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesErrorNcclError);
  callTeardown(&c);
  ulyssesCommDestroy(comm);
}

int main(void) {
  /* Read once, at the first log call. */
  setenv("ULYSSES_DEBUG", "INFO", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testConfig),
      cmocka_unit_test(testLogLevels),
      cmocka_unit_test(testLogLines),
      cmocka_unit_test(testAsyncResults),
      cmocka_unit_test(testFingerprints),
      cmocka_unit_test(testOneRankThroughThePublicApi),
      cmocka_unit_test(testDeviceLengthErrorIsReported),
      cmocka_unit_test(testDestroyedCommIsRefused),
      cmocka_unit_test(testAbortedCommIsRefused),
      cmocka_unit_test(testPlanCheck),
      cmocka_unit_test(testNonBlockingCommunicator),
      cmocka_unit_test(testNcclErrorClosesTheGroup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
