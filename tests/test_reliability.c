/* Errors that are not bad arguments: a destroyed or aborted comm, ranks
 * whose plans disagree, NCCL errors, late failures, non-blocking
 * communicators, device-side length errors and their clearing, graph
 * capture, and the logging and configuration behind them; a comm destroyed
 * or aborted from another thread during a call; and several ranks, each a
 * thread, exchanging through the public API. The public entry points run
 * against tests/fake_runtime.c in place of CUDA and NCCL. */
#include <pthread.h>
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
#include "env.h"
#include "error.h"
#include "fake_runtime.h"
#include "log.h"
#include "plan.h"
#include "reference.h"

/* A result no call returns: what a job holds until its thread has run. */
#define ulyssesErrorInternalForTest ulyssesNumResults

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
  size_t sendBytes, recvBytes, workspaceBytes;
} call;

enum { SEND_GUARD = 0xa5, RECV_GUARD = 0x5a };

/* c->plan's buffers for op. */
static void callBuffers(call* c, ulyssesOp_t op) {
  assert_int_equal(ulyssesGetBufferSizes(c->plan, op, 0, &c->sendBytes, &c->recvBytes),
                   ulyssesSuccess);
  assert_int_equal(ulyssesGetWorkspaceSize(c->plan, op, &c->workspaceBytes), ulyssesSuccess);
  /* One guard byte after each buffer, which no call may write. */
  c->send = malloc(c->sendBytes + 1);
  c->recv = calloc(c->recvBytes + 1, 1);
  c->workspace = aligned_alloc(256, c->workspaceBytes / 256 * 256 + 256);
  refFillPattern(c->send, c->sendBytes, 42);
  c->send[c->sendBytes] = SEND_GUARD;
  c->recv[c->recvBytes] = RECV_GUARD;
}

static void callSetup(call* c, int nRanks, int rank, const int64_t* lengths, ulyssesOp_t op) {
  assert_int_equal(ulyssesPlanCreateExact(&c->plan, nRanks, rank, lengths, 1, &layout), ulyssesSuccess);
  callBuffers(c, op);
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

static ulyssesResult_t headToSeq(call* c, ulyssesComm_t comm) {
  return ulyssesHeadToSeq(c->plan, c->send, c->recv, c->workspace, c->workspaceBytes, comm, NULL);
}

/*------------------------------------------------------------------------
 * Configuration, logging, results.
 *----------------------------------------------------------------------*/
static void testConfig(void** state) {
  (void)state;
  ulyssesSettings settings;
  assert_int_equal(ulyssesReadConfig(NULL, NULL, NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0);
  assert_int_equal(ulyssesReadConfig(NULL, "1", NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 1);
  assert_int_equal(ulyssesReadConfig(NULL, "0", NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0);
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  assert_int_equal(ulyssesReadConfig(&config, "1", NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 1); /* left undefined: the environment decides */
  config.checkPlans = 0;
  assert_int_equal(ulyssesReadConfig(&config, "1", NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0); /* set: it wins */
  config.checkPlans = 2;
  expectCode(ulyssesReadConfig(&config, NULL, NULL, &settings), ulyssesErrorInvalidArgument, "checkPlans");
  /* A caller built against the first header, whose config ends before
   * checkPlans: the field is not read. */
  config.checkPlans = 2;
  config.size = offsetof(ulyssesConfig_t, checkPlans);
  assert_int_equal(ulyssesReadConfig(&config, NULL, NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 0);
  /* onePass likewise: the environment's, the config's where set, not read
   * from a config that ends before it (a header without the field). */
  config = (ulyssesConfig_t)ULYSSES_CONFIG_INITIALIZER;
  assert_int_equal(ulyssesReadConfig(&config, NULL, "1", &settings), ulyssesSuccess);
  assert_int_equal(settings.onePass, 1);
  config.onePass = 0;
  assert_int_equal(ulyssesReadConfig(&config, NULL, "1", &settings), ulyssesSuccess);
  assert_int_equal(settings.onePass, 0);
  config.onePass = -1;
  expectCode(ulyssesReadConfig(&config, NULL, NULL, &settings), ulyssesErrorInvalidArgument, "onePass");
  config.size = offsetof(ulyssesConfig_t, onePass);
  assert_int_equal(ulyssesReadConfig(&config, NULL, "1", &settings), ulyssesSuccess);
  assert_int_equal(settings.onePass, 1);
  config.size = 4;
  expectCode(ulyssesReadConfig(&config, NULL, NULL, &settings), ulyssesErrorInvalidArgument, "size");
  config = (ulyssesConfig_t)ULYSSES_CONFIG_INITIALIZER;
  config.magic = 0;
  expectCode(ulyssesReadConfig(&config, NULL, NULL, &settings), ulyssesErrorInvalidArgument,
             "ULYSSES_CONFIG_INITIALIZER");
}

/* Each variable's name, and its default where unset: the check and one pass
 * off, the log silent. */
static void testEnvironmentSettings(void** state) {
  (void)state;
  static const char* const names[ULYSSES_ENV_COUNT] = {"ULYSSES_DEBUG", "ULYSSES_CHECK",
                                                        "ULYSSES_ONE_PASS", "ULYSSES_COPY_ORDER"};
  static const char* const defaults[ULYSSES_ENV_COUNT] = {NULL, "0", "0", "peers"};
  for (int i = 0; i < ULYSSES_ENV_COUNT; i++) {
    ulyssesEnvSetting setting = (ulyssesEnvSetting)i;
    assert_string_equal(ulyssesEnvName(setting), names[i]);
    const char* saved = getenv(names[i]);
    char kept[64] = "";
    if (saved != NULL) snprintf(kept, sizeof kept, "%s", saved);
    unsetenv(names[i]);
    const char* unset = ulyssesEnvValue(setting);
    if (setting == ULYSSES_ENV_DEBUG)
      assert_int_equal(ulyssesLogLevelFromString(unset), ULYSSES_LOG_NONE);
    else
      assert_string_equal(unset, defaults[i]);
    setenv(names[i], "1", 1);
    assert_string_equal(ulyssesEnvValue(setting), "1");
    if (saved != NULL)
      setenv(names[i], kept, 1);
    else
      unsetenv(names[i]);
  }
}

static void testLogLevels(void** state) {
  (void)state;
  assert_int_equal(ulyssesLogLevelFromString(NULL), ULYSSES_LOG_NONE);
  assert_int_equal(ulyssesLogLevelFromString("WARN"), ULYSSES_LOG_WARN);
  assert_int_equal(ulyssesLogLevelFromString("warn"), ULYSSES_LOG_WARN);
  assert_int_equal(ulyssesLogLevelFromString("INFO"), ULYSSES_LOG_INFO);
  assert_int_equal(ulyssesLogLevelFromString("VERSION"), ULYSSES_LOG_NONE);
}

/* Standard error into a temporary file, from captureStart to captureEnd,
 * which returns what was written (at most size - 1 bytes). */
typedef struct {
  int saved;
  FILE* file;
} stderrCapture;

static stderrCapture captureStart(void) {
  fflush(stderr);
  stderrCapture capture = {dup(2), tmpfile()};
  assert_non_null(capture.file);
  dup2(fileno(capture.file), 2);
  return capture;
}

static void captureEnd(stderrCapture* capture, char* text, size_t size) {
  fflush(stderr);
  dup2(capture->saved, 2);
  close(capture->saved);
  rewind(capture->file);
  size_t got = fread(text, 1, size - 1, capture->file);
  text[got] = '\0';
  fclose(capture->file);
}

/* With ULYSSES_DEBUG=INFO (set by main before the first call), a plan and an
 * error each print one line with the rank. */
static void testLogLines(void** state) {
  (void)state;
  stderrCapture capture = captureStart();
  ulyssesPlan_t plan = NULL;
  int64_t lengths[3] = {1, 2, 3};
  assert_int_equal(ulyssesPlanCreateExact(&plan, 3, 2, lengths, 1, &layout), ulyssesSuccess);
  ulyssesLayout_t bad = layout;
  bad.packed = 5;
  ulyssesPlan_t unused;
  assert_int_equal(ulyssesPlanCreateExact(&unused, 3, 1, lengths, 1, &bad), ulyssesErrorInvalidArgument);
  char text[2048];
  captureEnd(&capture, text, sizeof text);
  ulyssesPlanDestroy(plan);
  assert_non_null(strstr(text, "ulysses INFO [rank 2] plan: exact mode, 3 rank(s), 1 tensor(s)"));
  assert_non_null(strstr(text, "ulysses WARN [rank 1] ulyssesErrorInvalidArgument: layouts[0].packed is 5"));
}

static void testAsyncResults(void** state) {
  (void)state;
  expectCode(ulyssesAsyncResult(0, ncclSuccess, "x"), ulyssesSuccess, NULL);
  expectCode(ulyssesAsyncResult(0, ncclInProgress, "x"), ulyssesSuccess, NULL);
  expectCode(ulyssesAsyncResult(ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY, ncclSuccess, "x"),
             ulyssesErrorLengthExceedsCapacity, "capacity");
  expectCode(ulyssesAsyncResult(ULYSSES_STATUS_NEGATIVE_LENGTH, ncclSuccess, "x"),
             ulyssesErrorInvalidLength, "negative");
  /* NCCL's error wins, and the message names the device's too. */
  expectCode(ulyssesAsyncResult(ULYSSES_STATUS_NEGATIVE_LENGTH, ncclRemoteError, "remote exited"),
             ulyssesErrorNcclError,
             "remote exited; on the device, also: a capacity-mode length was negative");
  expectCode(ulyssesAsyncResult(ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY, ncclSystemError, "x"),
             ulyssesErrorNcclError, "above its capacity");
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
  /* NCCL is still asked: its later error wins, and both are named. */
  int polls = fakeCount(FAKE_ASYNC_POLL);
  fake.asyncError = ncclRemoteError;
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  expectCode(asyncError, ulyssesErrorNcclError, "above its capacity");
  assert_int_equal(fakeCount(FAKE_ASYNC_POLL), polls + 1);
  fake.asyncError = ncclSuccess;
  /* Cleared once handled: gone, until a kernel finds a bad length again. */
  assert_int_equal(ulyssesCommClearAsyncError(comm), ulyssesSuccess);
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesSuccess);
  deviceLength = 4;
  assert_int_equal(ulyssesSeqToHead(plan, send, recv, workspace, workspaceBytes, comm, NULL),
                   ulyssesSuccess);
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesSuccess);
  deviceLength = -1;
  assert_int_equal(ulyssesSeqToHead(plan, send, recv, workspace, workspaceBytes, comm, NULL),
                   ulyssesSuccess);
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesErrorInvalidLength);
  expectCode(ulyssesCommClearAsyncError(NULL), ulyssesErrorNullPointer, "comm");
  free(send);
  free(recv);
  free(workspace);
  ulyssesPlanDestroy(plan);
  ulyssesCommDestroy(comm);
}

/* A watchdog polls: an asynchronous error is described by every poll that
 * reports it (ulyssesGetLastError) but logged once, when first reported;
 * a poll that reports none leaves an empty message. */
static void testAsyncErrorIsLoggedOnce(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(1, 0, 0);
  int64_t capacities[1] = {4}, deviceLength = 6;
  call c;
  assert_int_equal(ulyssesPlanCreateCapacity(&c.plan, 1, 0, capacities, &deviceLength, 1, &layout),
                   ulyssesSuccess);
  callBuffers(&c, ulyssesOpSeqToHead);
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  ulyssesResult_t asyncError;
  stderrCapture capture = captureStart();
  for (int poll = 0; poll < 3; poll++) {
    assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
    expectCode(asyncError, ulyssesErrorLengthExceedsCapacity, "above its capacity");
  }
  char text[2048];
  captureEnd(&capture, text, sizeof text);
  const char* line = "WARN [rank 0] asynchronous error: ulyssesErrorLengthExceedsCapacity";
  const char* first = strstr(text, line);
  if (first == NULL || strstr(first + 1, line) != NULL)
    fail_msg("expected one \"%s\" in \"%s\"", line, text);
  assert_int_equal(ulyssesCommClearAsyncError(comm), ulyssesSuccess);
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesSuccess);
  assert_string_equal(ulyssesGetLastError(), "");
  callTeardown(&c);
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
  /* The watchdog aborts because NCCL reports a dead peer. */
  fake.asyncError = ncclRemoteError;
  assert_int_equal(ulyssesCommAbort(comm), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_COMM_ABORT), 1);
  int before = fakeEventCount();
  expectCode(seqToHead(&c, comm), ulyssesErrorInvalidUsage, "aborted");
  expectCode(ulyssesCommAbort(comm), ulyssesErrorInvalidUsage, "aborted");
  int64_t hostLengths[1];
  expectCode(ulyssesGatherLengthsHost(3, hostLengths, comm, NULL), ulyssesErrorInvalidUsage,
             "aborted");
  assert_int_equal(fakeEventCount(), before);
  /* The freed NCCL communicator is not asked again (the fake would answer
   * ncclSuccess now), yet the error it gave before the abort stays visible. */
  fake.asyncError = ncclSuccess;
  ulyssesResult_t asyncError = ulyssesSuccess;
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesErrorNcclError);
  assert_non_null(strstr(ulyssesGetLastError(), "fake NCCL error"));
  assert_int_equal(fakeEventCount(), before);
  assert_int_equal(fakeViolations(), 0);
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
  /* Waited in relaxed capture mode (another thread's global-mode capture
   * survives it), and the thread's mode put back. */
  assert_int_equal(fake.globalModeSyncs, 0);
  assert_true(fakeCaptureModeIsGlobal());
  assert_int_equal(fakeCount(FAKE_SEND) + fakeCount(FAKE_RECV) + fakeCount(FAKE_COPY_KERNEL), 0);
  ulyssesCommDestroy(comm);
  /* While the stream is captured the check cannot synchronise: a plan that
   * never passed it on this comm is refused before anything is enqueued... */
  comm = createComm(2, 0, 1);
  fake.capturing = 1;
  int before = fakeEventCount();
  expectCode(seqToHead(&c, comm), ulyssesErrorInvalidUsage, "once eagerly");
  assert_int_equal(fakeEventCount(), before);
  /* ...one that passed it eagerly (the ranks agree) is captured unchecked... */
  fake.capturing = 0;
  fake.peersEcho = 1;
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_SYNCHRONIZE), 1);
  fakeReset(2, 0);
  fake.capturing = 1;
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_SYNCHRONIZE) + fakeCount(FAKE_ALL_GATHER), 0);
  assert_true(fakeCount(FAKE_SEND) > 0);
  /* ...but not its other op, nor the same plan on a comm that never checked it. */
  expectCode(ulyssesHeadToSeq(c.plan, c.send, c.recv, c.workspace, c.workspaceBytes, comm, NULL),
             ulyssesErrorInvalidUsage, "once eagerly");
  /* Once the other op has passed too (buffers of its sizes), the comm
   * remembers both. */
  call h;
  callSetup(&h, 2, 0, lengths, ulyssesOpHeadToSeq);
  fake.capturing = 0;
  fake.peersEcho = 1;
  assert_int_equal(headToSeq(&h, comm), ulyssesSuccess);
  fake.capturing = 1;
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  assert_int_equal(headToSeq(&h, comm), ulyssesSuccess);
  callTeardown(&h);
  ulyssesCommDestroy(comm);
  comm = createComm(2, 0, 1);
  fake.capturing = 1;
  expectCode(seqToHead(&c, comm), ulyssesErrorInvalidUsage, "once eagerly");
  ulyssesCommDestroy(comm);
  /* Off: no all-gather, no synchronisation. */
  comm = createComm(2, 0, 0);
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_ALL_GATHER) + fakeCount(FAKE_SYNCHRONIZE), 0);
  ulyssesCommDestroy(comm);
  callTeardown(&c);
}

/* The plan check covers the path too: with the same plan, a rank taking one
 * pass while its peer stages gets ulyssesErrorPlanMismatch. The peer's
 * fingerprint here is the plan's own, as the staged path gives it. */
static void testPlanCheckComparesThePath(void** state) {
  (void)state;
  int64_t lengths[2] = {3, 2};
  fakeReset(2, 0);
  fake.onePassKernelBuilt = 1;
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.checkPlans = 1;
  config.onePass = 1;
  ulyssesComm_t comm = NULL;
  assert_int_equal(ulyssesCommCreate(&comm, fakeComm(), &config), ulyssesSuccess);
  call c;
  callSetup(&c, 2, 0, lengths, ulyssesOpSeqToHead);
  uint64_t staged = ulyssesPlanFingerprint(c.plan, ulyssesOpSeqToHead);
  fake.peerAllGatherBytes = &staged;
  void* windowed = NULL;
  assert_int_equal(ulyssesMemAlloc(comm, c.recvBytes, &windowed), ulyssesSuccess);
  ulyssesPath_t path;
  assert_int_equal(ulyssesGetExchangePath(c.plan, ulyssesOpSeqToHead, 1, &windowed, comm, &path,
                                          NULL),
                   ulyssesSuccess);
  assert_int_equal(path, ulyssesPathOnePass);
  expectCode(ulyssesSeqToHead(c.plan, c.send, windowed, c.workspace, c.workspaceBytes, comm, NULL),
             ulyssesErrorPlanMismatch, "(1)");
  assert_int_equal(fakeCount(FAKE_ONE_PASS_KERNEL), 0);
  /* The same plan on the staged path agrees with the peer. */
  assert_int_equal(seqToHead(&c, comm), ulyssesSuccess);
  assert_int_equal(ulyssesMemFree(comm, windowed), ulyssesSuccess);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
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

/* A failure after the pack was enqueued (armed in the fake by the caller):
 * code, with words in its message, after copyLaunches copy launches, the
 * group that was started still ended; and what a late failure may leave
 * (the workspace and recvbuff written), never sendbuff or a byte outside
 * the caller's buffers. */
static void expectLateFailure(call* c, ulyssesComm_t comm, ulyssesResult_t code, const char* words,
                              int copyLaunches) {
  unsigned char* sent = malloc(c->sendBytes);
  memcpy(sent, c->send, c->sendBytes);
  expectCode(seqToHead(c, comm), code, words);
  assert_int_equal(fakeCount(FAKE_COPY_KERNEL), copyLaunches);
  assert_int_equal(fakeCount(FAKE_GROUP_START), 1);
  assert_int_equal(fakeCount(FAKE_GROUP_END), 1);
  assert_memory_equal(c->send, sent, c->sendBytes);
  assert_int_equal(c->send[c->sendBytes], SEND_GUARD);
  assert_int_equal(c->recv[c->recvBytes], RECV_GUARD);
  free(sent);
}

/* An NCCL error names the call and NCCL's message. */
static void testNcclErrorClosesTheGroup(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(2, 0, 0);
  int64_t lengths[2] = {3, 2};
  call c;
  callSetup(&c, 2, 0, lengths, ulyssesOpSeqToHead);
  fake.failNextSend = ncclRemoteError;
  /* The pack ran; no unpack after the error. */
  expectLateFailure(&c, comm, ulyssesErrorNcclError,
                    "ncclSend failed: fake NCCL error (the fake's last error)", 1);
  fake.asyncError = ncclRemoteError;
  ulyssesResult_t asyncError;
  assert_int_equal(ulyssesCommGetAsyncError(comm, &asyncError), ulyssesSuccess);
  assert_int_equal(asyncError, ulyssesErrorNcclError);
  callTeardown(&c);
  ulyssesCommDestroy(comm);
}

/* A launch that fails after the pack and the group were enqueued:
 * ulyssesErrorCudaError, naming the launch. */
static void testLateCudaErrorStaysInTheBuffers(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(2, 0, 0);
  int64_t lengths[2] = {3, 2};
  call c;
  callSetup(&c, 2, 0, lengths, ulyssesOpSeqToHead);
  fake.failCopyLaunch = 2; /* the unpack */
  expectLateFailure(&c, comm, ulyssesErrorCudaError, "the unpack kernel launch failed", 2);
  callTeardown(&c);
  ulyssesCommDestroy(comm);
}

/* ulyssesGatherLengthsHost waits for its stream: under capture it is
 * refused before anything is enqueued, and hostLengths is not written. */
static void testGatherLengthsHostRefusesCapture(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(2, 1, 0);
  fake.capturing = 1;
  int64_t hostLengths[2] = {-7, -7};
  int before = fakeEventCount();
  expectCode(ulyssesGatherLengthsHost(5, hostLengths, comm, NULL), ulyssesErrorInvalidUsage,
             "being captured");
  assert_int_equal(fakeEventCount(), before);
  assert_int_equal(hostLengths[0], -7);
  assert_int_equal(hostLengths[1], -7);
  fake.capturing = 0;
  fake.peerAllGatherByte = 0;
  assert_int_equal(ulyssesGatherLengthsHost(5, hostLengths, comm, NULL), ulyssesSuccess);
  assert_int_equal(hostLengths[0], 0);
  assert_int_equal(hostLengths[1], 5);
  assert_int_equal(fakeCount(FAKE_SYNCHRONIZE), 1);
  assert_int_equal(fake.globalModeSyncs, 0);
  assert_true(fakeCaptureModeIsGlobal());
  ulyssesCommDestroy(comm);
}

/*------------------------------------------------------------------------
 * Threads.
 *----------------------------------------------------------------------*/
typedef struct {
  call* c;
  ulyssesComm_t comm;
  ulyssesResult_t result;
} seqToHeadJob;

static void* runSeqToHead(void* argument) {
  seqToHeadJob* job = argument;
  job->result = seqToHead(job->c, job->comm);
  return NULL;
}

typedef struct {
  ulyssesComm_t comm;
  ulyssesResult_t result, asyncError;
} commJob;

static void* runGetAsyncError(void* argument) {
  commJob* job = argument;
  job->result = ulyssesCommGetAsyncError(job->comm, &job->asyncError);
  return NULL;
}

static void* runAbort(void* argument) {
  commJob* job = argument;
  job->result = ulyssesCommAbort(job->comm);
  return NULL;
}

/* ulyssesCommDestroy while another thread is inside an exchange on the comm
 * (held in the capacity all-gather): destroy returns at once, new calls are
 * refused, and the exchange finishes on memory that is still its own (the
 * sanitizer build would report a use after free, and the fake a call on a
 * communicator that is not one). */
static void testDestroyWhileACallIsInProgress(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(1, 0, 0);
  int64_t capacities[1] = {3}, deviceLength = 3;
  call c;
  assert_int_equal(ulyssesPlanCreateCapacity(&c.plan, 1, 0, capacities, &deviceLength, 1, &layout),
                   ulyssesSuccess);
  assert_int_equal(ulyssesGetBufferSizes(c.plan, ulyssesOpSeqToHead, 0, &c.sendBytes, &c.recvBytes),
                   ulyssesSuccess);
  assert_int_equal(ulyssesGetWorkspaceSize(c.plan, ulyssesOpSeqToHead, &c.workspaceBytes),
                   ulyssesSuccess);
  c.send = malloc(c.sendBytes);
  c.recv = calloc(c.recvBytes, 1);
  c.workspace = aligned_alloc(256, c.workspaceBytes / 256 * 256 + 256);
  refFillPattern(c.send, c.sendBytes, 7);
  fakeGateArm(FAKE_ALL_GATHER);
  seqToHeadJob job = {&c, comm, ulyssesErrorInternalForTest};
  pthread_t thread;
  assert_int_equal(pthread_create(&thread, NULL, runSeqToHead, &job), 0);
  fakeGateWaitHeld();
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
  int nRanks;
  expectCode(ulyssesCommCount(comm, &nRanks), ulyssesErrorInvalidUsage, "destroyed");
  expectCode(ulyssesCommDestroy(comm), ulyssesErrorInvalidUsage, "destroyed twice");
  fakeGateOpen();
  assert_int_equal(pthread_join(thread, NULL), 0);
  assert_int_equal(job.result, ulyssesSuccess);
  assert_memory_equal(c.recv, c.send, c.sendBytes); /* one rank: the identity */
  assert_true(fakeCount(FAKE_SEND) > 0);
  assert_int_equal(fakeViolations(), 0);
  callTeardown(&c);
}

/* A watchdog aborts while another thread polls ulyssesCommGetAsyncError
 * (held inside ncclCommGetAsyncError): ncclCommAbort must wait until the
 * poll has left the NCCL communicator it frees. */
static void testAbortWaitsForAnAsyncErrorPoll(void** state) {
  (void)state;
  ulyssesComm_t comm = createComm(2, 1, 0);
  fakeGateArm(FAKE_ASYNC_POLL);
  commJob poll = {comm, ulyssesErrorInternalForTest, ulyssesErrorInternalForTest};
  commJob abort = poll;
  pthread_t poller, aborter;
  assert_int_equal(pthread_create(&poller, NULL, runGetAsyncError, &poll), 0);
  fakeGateWaitHeld();
  assert_int_equal(pthread_create(&aborter, NULL, runAbort, &abort), 0);
  /* Time for the abort to reach ncclCommAbort, were nothing holding it. */
  usleep(100 * 1000);
  fakeGateOpen();
  assert_int_equal(pthread_join(poller, NULL), 0);
  assert_int_equal(pthread_join(aborter, NULL), 0);
  assert_int_equal(poll.result, ulyssesSuccess);
  assert_int_equal(poll.asyncError, ulyssesSuccess);
  assert_int_equal(abort.result, ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_COMM_ABORT), 1);
  assert_int_equal(fakeViolations(), 0);
  assert_int_equal(ulyssesCommDestroy(comm), ulyssesSuccess);
}

/*------------------------------------------------------------------------
 * Several ranks, each a thread with its own comm, through the public API
 * (fake.paired): every pass runs and NCCL's messages really pair up.
 *----------------------------------------------------------------------*/
enum { PAIRED_RANKS = 3, PAIRED_TENSORS = 2 };

static const ulyssesLayout_t pairedLayouts[PAIRED_TENSORS] = {{.size = sizeof(ulyssesLayout_t),
                                                               .batch = 2,
                                                               .heads = 5,
                                                               .headDim = 3,
                                                               .elementSize = 2,
                                                               .packed = 1,
                                                               .order = ulyssesOrderBSHD},
                                                              {.size = sizeof(ulyssesLayout_t),
                                                               .batch = 2,
                                                               .heads = 4,
                                                               .headDim = 2,
                                                               .elementSize = 4,
                                                               .packed = 3,
                                                               .order = ulyssesOrderSBHD}};

typedef struct {
  ulyssesComm_t comm;
  ulyssesPlan_t plan;
  ulyssesOp_t op;
  const void* sendbuffs[PAIRED_TENSORS];
  void* recvbuffs[PAIRED_TENSORS];
  void* workspace;
  size_t workspaceBytes;
  int64_t localLength, hostLengths[PAIRED_RANKS];
  ulyssesResult_t result, asyncError;
  char message[512];
} rankCall;

static void* runRankExchange(void* argument) {
  rankCall* r = argument;
  r->result = ulyssesExchangeMulti(r->plan, r->op, PAIRED_TENSORS, r->sendbuffs, r->recvbuffs,
                                   r->workspace, r->workspaceBytes, r->comm, NULL);
  snprintf(r->message, sizeof r->message, "%s", ulyssesGetLastError());
  if (r->result == ulyssesSuccess) r->result = ulyssesCommGetAsyncError(r->comm, &r->asyncError);
  return NULL;
}

static void* runRankGatherLengths(void* argument) {
  rankCall* r = argument;
  r->result = ulyssesGatherLengthsHost(r->localLength, r->hostLengths, r->comm, NULL);
  snprintf(r->message, sizeof r->message, "%s", ulyssesGetLastError());
  return NULL;
}

static void runRanks(rankCall* calls, void* (*run)(void*)) {
  pthread_t threads[PAIRED_RANKS];
  for (int r = 0; r < PAIRED_RANKS; r++)
    assert_int_equal(pthread_create(&threads[r], NULL, run, &calls[r]), 0);
  for (int r = 0; r < PAIRED_RANKS; r++) assert_int_equal(pthread_join(threads[r], NULL), 0);
  for (int r = 0; r < PAIRED_RANKS; r++)
    if (calls[r].result != ulyssesSuccess)
      fail_msg("rank %d: %s (%s)", r, ulyssesGetErrorString(calls[r].result), calls[r].message);
}

/* onePass: the comms as on a node whose GPUs reach each other by load and
 * store, with config.onePass on (the fake runs the one-pass launch). */
static void pairedCommsWith(ulyssesComm_t* comms, int onePass) {
  fakeReset(PAIRED_RANKS, 0);
  fake.paired = 1;
  fake.onePassKernelBuilt = onePass;
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.onePass = onePass;
  for (int r = 0; r < PAIRED_RANKS; r++)
    assert_int_equal(ulyssesCommCreate(&comms[r], fakeRankComm(r), &config), ulyssesSuccess);
  assert_int_equal(fakeCount(FAKE_DEV_COMM_CREATE), onePass ? PAIRED_RANKS : 0);
}

static void pairedComms(ulyssesComm_t* comms) { pairedCommsWith(comms, 0); }

static refShape pairedShape(int tensor, const int64_t* lengths) {
  const ulyssesLayout_t* l = &pairedLayouts[tensor];
  refShape shape = {PAIRED_RANKS, lengths,        l->batch,  l->heads,
                    l->headDim,   l->elementSize, l->packed, l->order == ulyssesOrderSBHD};
  return shape;
}

/* The largest output of op over the ranks: ulyssesMemAlloc takes the same
 * size on every rank. */
static size_t pairedMaxOutputBytes(const refShape* shape, int op) {
  size_t most = 0;
  for (int r = 0; r < PAIRED_RANKS; r++) {
    size_t bytes = op == ulyssesOpSeqToHead   ? refHeadSideBytes(shape, r)
                   : op == ulyssesOpHeadToSeq ? refSeqBytes(shape, r)
                                              : refGatherBytes(shape);
    if (bytes > most) most = bytes;
  }
  return most;
}

static int pairedSomeLengthZero(const int64_t* lengths) {
  for (int r = 0; r < PAIRED_RANKS; r++)
    if (lengths[r] == 0) return 1;
  return 0;
}

/* Every op of both tensors in one call per rank, exact and capacity mode,
 * against the CPU reference byte for byte. onePass: the outputs in
 * ulyssesMemAlloc memory on comms that have the one-pass path, which every
 * op takes unless a rank receives nothing of a tensor (then the staged
 * path, on every rank). */
static void checkRanksThroughThePublicApi(int onePass, const int64_t* givenLengths) {
  ulyssesComm_t comms[PAIRED_RANKS];
  pairedCommsWith(comms, onePass);
  int64_t lengths[PAIRED_RANKS];
  memcpy(lengths, givenLengths, sizeof lengths);
  /* The one synchronising length exchange, first. */
  rankCall calls[PAIRED_RANKS];
  memset(calls, 0, sizeof calls);
  for (int r = 0; r < PAIRED_RANKS; r++) {
    calls[r].comm = comms[r];
    calls[r].localLength = lengths[r];
  }
  runRanks(calls, runRankGatherLengths);
  for (int r = 0; r < PAIRED_RANKS; r++)
    assert_memory_equal(calls[r].hostLengths, lengths, sizeof lengths);

  int64_t deviceLengths[PAIRED_RANKS];
  memcpy(deviceLengths, lengths, sizeof lengths);
  for (int capacity = 0; capacity <= 1; capacity++)
    for (int op = 0; op < 3; op++) {
      unsigned char* allocations[PAIRED_TENSORS][PAIRED_RANKS];
      unsigned char *inputs[PAIRED_TENSORS][PAIRED_RANKS], *outputs[PAIRED_TENSORS][PAIRED_RANKS],
          *expected[PAIRED_TENSORS][PAIRED_RANKS];
      for (int r = 0; r < PAIRED_RANKS; r++) {
        rankCall* call = &calls[r];
        memset(call, 0, sizeof *call);
        call->comm = comms[r];
        call->op = (ulyssesOp_t)op;
        /* Capacities equal to the lengths: the buffers are exact mode's. */
        if (capacity)
          assert_int_equal(
              ulyssesPlanCreateCapacity(&call->plan, PAIRED_RANKS, r, lengths, &deviceLengths[r],
                                        PAIRED_TENSORS, pairedLayouts),
              ulyssesSuccess);
        else
          assert_int_equal(ulyssesPlanCreateExact(&call->plan, PAIRED_RANKS, r, lengths,
                                                  PAIRED_TENSORS, pairedLayouts),
                           ulyssesSuccess);
        assert_int_equal(ulyssesGetWorkspaceSize(call->plan, call->op, &call->workspaceBytes),
                         ulyssesSuccess);
        call->workspace = aligned_alloc(256, call->workspaceBytes / 256 * 256 + 256);
      }
      for (int t = 0; t < PAIRED_TENSORS; t++) {
        refShape shape = pairedShape(t, lengths);
        for (int r = 0; r < PAIRED_RANKS; r++) {
          size_t inBytes =
              op == ulyssesOpHeadToSeq ? refHeadSideBytes(&shape, r) : refSeqBytes(&shape, r);
          size_t outBytes = op == ulyssesOpSeqToHead   ? refHeadSideBytes(&shape, r)
                            : op == ulyssesOpHeadToSeq ? refSeqBytes(&shape, r)
                                                       : refGatherBytes(&shape);
          size_t sendBytes, recvBytes;
          assert_int_equal(
              ulyssesGetBufferSizes(calls[r].plan, (ulyssesOp_t)op, t, &sendBytes, &recvBytes),
              ulyssesSuccess);
          assert_int_equal(sendBytes, inBytes);
          assert_int_equal(recvBytes, outBytes);
          inputs[t][r] = malloc(inBytes + 1);
          refFillPattern(inputs[t][r], inBytes,
                         1000u * (unsigned)op + 10u * (unsigned)t + (unsigned)r);
          if (onePass) {
            /* Collective: the same size on every rank, and the same order.
             * Each rank's output lies at its own offset in it, which the
             * others learn only from its published slot. */
            assert_int_equal(ulyssesMemAlloc(comms[r], pairedMaxOutputBytes(&shape, op) + 65,
                                             (void**)&allocations[t][r]),
                             ulyssesSuccess);
            outputs[t][r] = allocations[t][r] + 16 * r;
          } else {
            outputs[t][r] = malloc(outBytes + 1);
          }
          memset(outputs[t][r], 0xee, outBytes + 1);
          expected[t][r] = malloc(outBytes + 1);
          calls[r].sendbuffs[t] = inputs[t][r];
          calls[r].recvbuffs[t] = outputs[t][r];
        }
        void (*reference)(const refShape*, const void* const*, void* const*) =
            op == ulyssesOpSeqToHead   ? refSeqToHead
            : op == ulyssesOpHeadToSeq ? refHeadToSeq
                                       : refAllGather;
        reference(&shape, (const void* const*)inputs[t], (void* const*)expected[t]);
      }
      int expectOnePass = onePass && (op != ulyssesOpHeadToSeq || !pairedSomeLengthZero(lengths));
      for (int r = 0; r < PAIRED_RANKS; r++) {
        ulyssesPath_t path;
        const char* reason;
        assert_int_equal(ulyssesGetExchangePath(calls[r].plan, calls[r].op, PAIRED_TENSORS,
                                                calls[r].recvbuffs, comms[r], &path, &reason),
                         ulyssesSuccess);
        if ((int)path != expectOnePass)
          fail_msg("rank %d, op %d: path %d: %s", r, op, path, reason);
      }
      int copiesBefore = fakeCount(FAKE_COPY_KERNEL), sendsBefore = fakeCount(FAKE_SEND);
      int onePassBefore = fakeCount(FAKE_ONE_PASS_KERNEL);
      runRanks(calls, runRankExchange);
      if (expectOnePass) {
        /* One launch per rank and nothing else: no pack, no message. */
        assert_int_equal(fakeCount(FAKE_ONE_PASS_KERNEL), onePassBefore + PAIRED_RANKS);
        assert_int_equal(fakeCount(FAKE_COPY_KERNEL), copiesBefore);
        assert_int_equal(fakeCount(FAKE_SEND), sendsBefore);
      } else {
        /* Both tensors are shaped so that every op packs or unpacks. */
        assert_true(fakeCount(FAKE_COPY_KERNEL) > copiesBefore);
        assert_int_equal(fakeCount(FAKE_ONE_PASS_KERNEL), onePassBefore);
      }
      for (int t = 0; t < PAIRED_TENSORS; t++) {
        refShape shape = pairedShape(t, lengths);
        for (int r = 0; r < PAIRED_RANKS; r++) {
          size_t outBytes = op == ulyssesOpSeqToHead   ? refHeadSideBytes(&shape, r)
                            : op == ulyssesOpHeadToSeq ? refSeqBytes(&shape, r)
                                                       : refGatherBytes(&shape);
          if (outBytes > 0 && memcmp(outputs[t][r], expected[t][r], outBytes) != 0)
            fail_msg("%s mode, op %d, tensor %d, rank %d: the output differs from the reference",
                     capacity ? "capacity" : "exact", op, t, r);
          assert_int_equal(outputs[t][r][outBytes], 0xee);
          free(inputs[t][r]);
          if (onePass)
            assert_int_equal(ulyssesMemFree(comms[r], allocations[t][r]), ulyssesSuccess);
          else
            free(outputs[t][r]);
          free(expected[t][r]);
        }
      }
      for (int r = 0; r < PAIRED_RANKS; r++) {
        assert_int_equal(calls[r].asyncError, ulyssesSuccess);
        ulyssesPlanDestroy(calls[r].plan);
        free(calls[r].workspace);
      }
    }
  assert_true(fakeCount(FAKE_SEND) > 0 || onePass);
  for (int r = 0; r < PAIRED_RANKS; r++)
    assert_int_equal(ulyssesCommDestroy(comms[r]), ulyssesSuccess);
  assert_int_equal(fakeViolations(), 0);
  assert_int_equal(fake.liveWindows, 0);
  assert_int_equal(fake.liveDevComms, 0);
}

static void testRanksThroughThePublicApi(void** state) {
  (void)state;
  static const int64_t lengths[PAIRED_RANKS] = {3, 0, 2};
  checkRanksThroughThePublicApi(0, lengths);
}

/* The one-pass path end to end on the CPU: the path choice, the publish
 * step's slots, the table and the peers' outputs resolved from them, and
 * the kernel's per-thread stores, byte for byte against the reference;
 * with a zero length, head -> seq falls back to the staged path. */
static void testRanksInOnePass(void** state) {
  (void)state;
  static const int64_t lengths[PAIRED_RANKS] = {3, 1, 2}, withZero[PAIRED_RANKS] = {3, 0, 2};
  checkRanksThroughThePublicApi(1, lengths);
  checkRanksThroughThePublicApi(1, withZero);
  assert_true(fakeCount(FAKE_SEND) > 0);
}

/* One rank's capacity-mode length above its capacity: every rank's kernels
 * see it (the lengths are all-gathered), every rank reports it, and each
 * rank's clear forgets it; NCCL's error still wins over it. */
static void testRanksSeeOneRanksBadLength(void** state) {
  (void)state;
  ulyssesComm_t comms[PAIRED_RANKS];
  pairedComms(comms);
  int64_t capacities[PAIRED_RANKS] = {3, 1, 2}, deviceLengths[PAIRED_RANKS] = {3, 4, 2};
  rankCall calls[PAIRED_RANKS];
  memset(calls, 0, sizeof calls);
  unsigned char *inputs[PAIRED_RANKS][PAIRED_TENSORS], *outputs[PAIRED_RANKS][PAIRED_TENSORS];
  for (int r = 0; r < PAIRED_RANKS; r++) {
    rankCall* call = &calls[r];
    call->comm = comms[r];
    call->op = ulyssesOpSeqToHead;
    assert_int_equal(ulyssesPlanCreateCapacity(&call->plan, PAIRED_RANKS, r, capacities,
                                               &deviceLengths[r], PAIRED_TENSORS, pairedLayouts),
                     ulyssesSuccess);
    assert_int_equal(ulyssesGetWorkspaceSize(call->plan, call->op, &call->workspaceBytes),
                     ulyssesSuccess);
    call->workspace = aligned_alloc(256, call->workspaceBytes / 256 * 256 + 256);
    for (int t = 0; t < PAIRED_TENSORS; t++) {
      size_t sendBytes, recvBytes;
      assert_int_equal(ulyssesGetBufferSizes(call->plan, call->op, t, &sendBytes, &recvBytes),
                       ulyssesSuccess);
      inputs[r][t] = calloc(sendBytes, 1);
      outputs[r][t] = calloc(recvBytes, 1);
      call->sendbuffs[t] = inputs[r][t];
      call->recvbuffs[t] = outputs[r][t];
    }
  }
  runRanks(calls, runRankExchange);
  for (int r = 0; r < PAIRED_RANKS; r++)
    assert_int_equal(calls[r].asyncError, ulyssesErrorLengthExceedsCapacity);
  fake.asyncError = ncclRemoteError;
  for (int r = 0; r < PAIRED_RANKS; r++) {
    ulyssesResult_t asyncError;
    assert_int_equal(ulyssesCommGetAsyncError(comms[r], &asyncError), ulyssesSuccess);
    expectCode(asyncError, ulyssesErrorNcclError, "above its capacity");
  }
  fake.asyncError = ncclSuccess;
  for (int r = 0; r < PAIRED_RANKS; r++)
    assert_int_equal(ulyssesCommClearAsyncError(comms[r]), ulyssesSuccess);
  deviceLengths[1] = 1;
  runRanks(calls, runRankExchange);
  for (int r = 0; r < PAIRED_RANKS; r++) assert_int_equal(calls[r].asyncError, ulyssesSuccess);
  for (int r = 0; r < PAIRED_RANKS; r++) {
    for (int t = 0; t < PAIRED_TENSORS; t++) {
      free(inputs[r][t]);
      free(outputs[r][t]);
    }
    free(calls[r].workspace);
    ulyssesPlanDestroy(calls[r].plan);
    assert_int_equal(ulyssesCommDestroy(comms[r]), ulyssesSuccess);
  }
  assert_int_equal(fakeViolations(), 0);
}

int main(void) {
  /* Read once, at the first log call. */
  setenv("ULYSSES_DEBUG", "INFO", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testConfig),
      cmocka_unit_test(testEnvironmentSettings),
      cmocka_unit_test(testLogLevels),
      cmocka_unit_test(testLogLines),
      cmocka_unit_test(testAsyncResults),
      cmocka_unit_test(testFingerprints),
      cmocka_unit_test(testOneRankThroughThePublicApi),
      cmocka_unit_test(testDeviceLengthErrorIsReported),
      cmocka_unit_test(testAsyncErrorIsLoggedOnce),
      cmocka_unit_test(testDestroyedCommIsRefused),
      cmocka_unit_test(testAbortedCommIsRefused),
      cmocka_unit_test(testPlanCheck),
      cmocka_unit_test(testPlanCheckComparesThePath),
      cmocka_unit_test(testNonBlockingCommunicator),
      cmocka_unit_test(testNcclErrorClosesTheGroup),
      cmocka_unit_test(testLateCudaErrorStaysInTheBuffers),
      cmocka_unit_test(testGatherLengthsHostRefusesCapture),
      cmocka_unit_test(testDestroyWhileACallIsInProgress),
      cmocka_unit_test(testAbortWaitsForAnAsyncErrorPoll),
      cmocka_unit_test(testRanksThroughThePublicApi),
      cmocka_unit_test(testRanksInOnePass),
      cmocka_unit_test(testRanksSeeOneRanksBadLength),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
