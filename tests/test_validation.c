/* Every class of bad input: its own result code, a message naming the
 * argument, nothing enqueued and no byte of any buffer changed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "exchange_run.h"

static const ulyssesLayout_t goodLayout = {
    .size = sizeof(ulyssesLayout_t), .batch = 2, .heads = 8, .headDim = 4, .elementSize = 2, .packed = 1, .order = ulyssesOrderBSHD};
static const int64_t goodLengths[4] = {3, 0, 5, 2};

#define PLAN_SENTINEL ((ulyssesPlan_t)(uintptr_t)0x1234)

static void expectError(ulyssesResult_t got, ulyssesResult_t want, const char* argument) {
  if (got != want)
    fail_msg("expected %s, got %s (%s)", ulyssesGetErrorString(want), ulyssesGetErrorString(got),
             ulyssesGetLastError());
  if (argument != NULL && strstr(ulyssesGetLastError(), argument) == NULL)
    fail_msg("the message \"%s\" does not name %s", ulyssesGetLastError(), argument);
}

static void expectExactPlanError(int nRanks, int rank, const int64_t* lengths, int nTensors,
                                 const ulyssesLayout_t* layouts, ulyssesResult_t want,
                                 const char* argument) {
  ulyssesPlan_t plan = PLAN_SENTINEL;
  expectError(ulyssesPlanCreateExact(&plan, nRanks, rank, lengths, nTensors, layouts), want, argument);
  assert_ptr_equal(plan, PLAN_SENTINEL);
}

static void expectLayoutError(ulyssesLayout_t layout, ulyssesResult_t want, const char* argument) {
  expectExactPlanError(4, 1, goodLengths, 1, &layout, want, argument);
}

static void testPlanArguments(void** state) {
  (void)state;
  expectError(ulyssesPlanCreateExact(NULL, 4, 0, goodLengths, 1, &goodLayout),
              ulyssesErrorNullPointer, "plan");
  expectExactPlanError(0, 0, goodLengths, 1, &goodLayout, ulyssesErrorInvalidArgument, "nRanks");
  expectExactPlanError(4, -1, goodLengths, 1, &goodLayout, ulyssesErrorInvalidArgument, "rank");
  expectExactPlanError(4, 4, goodLengths, 1, &goodLayout, ulyssesErrorInvalidArgument, "rank");
  expectExactPlanError(4, 0, NULL, 1, &goodLayout, ulyssesErrorNullPointer, "lengths");
  expectExactPlanError(4, 0, goodLengths, 0, &goodLayout, ulyssesErrorInvalidArgument, "nTensors");
  expectExactPlanError(4, 0, goodLengths, ULYSSES_MAX_TENSORS + 1, &goodLayout,
                       ulyssesErrorInvalidArgument, "nTensors");
  expectExactPlanError(4, 0, goodLengths, 1, NULL, ulyssesErrorNullPointer, "layouts");
}

/* A caller compiled when ulyssesLayout_t ended at order: its struct is
 * smaller, and the library reads queryHeads and dataType as their defaults. */
typedef struct {
  size_t size;
  int64_t batch, heads, headDim, elementSize;
  int packed;
  ulyssesOrder_t order;
} firstLayout;

/* A caller compiled against a later header with one more field. */
typedef struct {
  ulyssesLayout_t known;
  int64_t later;
} laterLayout;

static void expectSamePlan(ulyssesPlan_t a, ulyssesPlan_t b) {
  for (int op = 0; op < ULYSSES_OP_COUNT; op++) {
    size_t aBytes, bBytes;
    assert_int_equal(ulyssesGetWorkspaceSize(a, (ulyssesOp_t)op, &aBytes), ulyssesSuccess);
    assert_int_equal(ulyssesGetWorkspaceSize(b, (ulyssesOp_t)op, &bBytes), ulyssesSuccess);
    assert_int_equal(aBytes, bBytes);
    assert_int_equal(ulyssesPlanFingerprint(a, (ulyssesOp_t)op),
                     ulyssesPlanFingerprint(b, (ulyssesOp_t)op));
  }
}

static void testLayoutSizes(void** state) {
  (void)state;
  ulyssesPlan_t current = NULL, plan = NULL;
  assert_int_equal(ulyssesPlanCreateExact(&current, 4, 1, goodLengths, 1, &goodLayout),
                   ulyssesSuccess);

  firstLayout first[2];
  for (int t = 0; t < 2; t++)
    first[t] = (firstLayout){sizeof(firstLayout), goodLayout.batch,       goodLayout.heads,
                             goodLayout.headDim,  goodLayout.elementSize, goodLayout.packed,
                             goodLayout.order};
  assert_int_equal(sizeof(firstLayout), ULYSSES_LAYOUT_SIZE_MIN);
  assert_int_equal(
      ulyssesPlanCreateExact(&plan, 4, 1, goodLengths, 1, (const ulyssesLayout_t*)first),
      ulyssesSuccess);
  expectSamePlan(plan, current);
  ulyssesPlanDestroy(plan);
  /* Two small entries: the second is read at the caller's stride, not ours. */
  first[1].heads = 5;
  ulyssesLayout_t pair[2] = {goodLayout, goodLayout};
  pair[1].heads = 5;
  ulyssesPlan_t currentPair = NULL;
  assert_int_equal(ulyssesPlanCreateExact(&currentPair, 4, 1, goodLengths, 2, pair),
                   ulyssesSuccess);
  assert_int_equal(
      ulyssesPlanCreateExact(&plan, 4, 1, goodLengths, 2, (const ulyssesLayout_t*)first),
      ulyssesSuccess);
  expectSamePlan(plan, currentPair);
  ulyssesPlanDestroy(plan);
  ulyssesPlanDestroy(currentPair);

  laterLayout later[2] = {{goodLayout, 0}, {goodLayout, 0}};
  later[0].known.size = later[1].known.size = sizeof(laterLayout);
  assert_int_equal(
      ulyssesPlanCreateExact(&plan, 4, 1, goodLengths, 2, (const ulyssesLayout_t*)later),
      ulyssesSuccess);
  ulyssesPlanDestroy(plan);
  later[1].later = 7; /* a later field this library cannot honour */
  expectExactPlanError(4, 1, goodLengths, 2, (const ulyssesLayout_t*)later, ulyssesErrorUnsupported,
                       "layouts[1]");

  ulyssesLayout_t l = goodLayout;
  l.size = 0;
  expectLayoutError(l, ulyssesErrorInvalidArgument, "layouts[0].size");
  l.size = ULYSSES_LAYOUT_SIZE_MIN - sizeof(int64_t);
  expectLayoutError(l, ulyssesErrorInvalidArgument, "layouts[0].size");
  l.size = sizeof(ulyssesLayout_t) + 4;
  expectLayoutError(l, ulyssesErrorInvalidArgument, "layouts[0].size");
  pair[1] = goodLayout;
  pair[1].size = ULYSSES_LAYOUT_SIZE_MIN;
  expectExactPlanError(4, 1, goodLengths, 2, pair, ulyssesErrorInvalidArgument, "layouts[1].size");
  ulyssesPlanDestroy(current);
}

static void testSegmentSizes(void** state) {
  (void)state;
  ulyssesPlan_t plan = NULL;
  assert_int_equal(ulyssesPlanCreateExact(&plan, 4, 1, goodLengths, 1, &goodLayout),
                   ulyssesSuccess);
  ulyssesSegment_t current[4];
  current[0].size = sizeof current[0];
  assert_int_equal(ulyssesGetSegments(plan, ulyssesOpSeqToHead, 0, 1, current), ulyssesSuccess);
  /* A later caller's larger entries: the known fields at its stride, the
   * rest zeroed, every entry's size set. */
  struct {
    ulyssesSegment_t known;
    uint64_t later;
  } later[4];
  memset(later, 0xab, sizeof later);
  later[0].known.size = sizeof later[0];
  assert_int_equal(ulyssesGetSegments(plan, ulyssesOpSeqToHead, 0, 1, &later[0].known),
                   ulyssesSuccess);
  for (int p = 0; p < 4; p++) {
    assert_int_equal(later[p].known.size, sizeof later[0]);
    assert_int_equal(later[p].known.place, current[p].place);
    assert_int_equal(later[p].known.offset, current[p].offset);
    assert_int_equal(later[p].known.bytes, current[p].bytes);
    assert_int_equal(later[p].later, 0);
  }
  ulyssesSegment_t bad[4];
  memset(bad, 0xcd, sizeof bad);
  bad[0].size = 0;
  expectError(ulyssesGetSegments(plan, ulyssesOpSeqToHead, 0, 1, bad), ulyssesErrorInvalidArgument,
              "segments[0].size");
  bad[0].size = sizeof bad[0] - sizeof(size_t);
  expectError(ulyssesGetSegments(plan, ulyssesOpSeqToHead, 0, 1, bad), ulyssesErrorInvalidArgument,
              "segments[0].size");
  assert_int_equal(bad[1].size, 0xcdcdcdcdcdcdcdcdull); /* nothing written */
  ulyssesPlanDestroy(plan);
}

/* The version says which header a config came from; a newer one's larger
 * config is read as far as this library knows it. */
static void testConfigVersion(void** state) {
  (void)state;
  ulyssesSettings settings;
  ulyssesConfig_t config = ULYSSES_CONFIG_INITIALIZER;
  config.version = 0;
  expectError(ulyssesReadConfig(&config, NULL, NULL, &settings), ulyssesErrorInvalidArgument,
              "config->version");
  struct {
    ulyssesConfig_t known;
    int later;
  } newer = {ULYSSES_CONFIG_INITIALIZER, 5};
  newer.known.size = sizeof newer;
  newer.known.version = ULYSSES_VERSION_CODE + 1;
  newer.known.checkPlans = 1;
  assert_int_equal(ulyssesReadConfig(&newer.known, NULL, NULL, &settings), ulyssesSuccess);
  assert_int_equal(settings.checkPlans, 1);
}

static void testLengths(void** state) {
  (void)state;
  int64_t negative[4] = {3, -1, 5, 2};
  expectExactPlanError(4, 0, negative, 1, &goodLayout, ulyssesErrorInvalidLength, "lengths[1]");
  int64_t tooLong[4] = {3, 0, ULYSSES_MAX_LENGTH + 1, 2};
  expectExactPlanError(4, 0, tooLong, 1, &goodLayout, ulyssesErrorInvalidLength, "lengths[2]");
  int64_t longest[4] = {ULYSSES_MAX_LENGTH, 0, 0, 0};
  ulyssesLayout_t small = {
      .size = sizeof(ulyssesLayout_t), .batch = 1, .heads = 1, .headDim = 1, .elementSize = 1, .packed = 1, .order = ulyssesOrderBSHD};
  ulyssesPlan_t plan = NULL;
  assert_int_equal(ulyssesPlanCreateExact(&plan, 4, 0, longest, 1, &small), ulyssesSuccess);
  ulyssesPlanDestroy(plan);

  int64_t deviceLength = 0;
  int64_t negativeCapacity[4] = {3, 0, -2, 2};
  plan = PLAN_SENTINEL;
  expectError(ulyssesPlanCreateCapacity(&plan, 4, 0, negativeCapacity, &deviceLength, 1, &goodLayout),
              ulyssesErrorInvalidLength, "capacities[2]");
  expectError(ulyssesPlanCreateCapacity(&plan, 4, 0, goodLengths, NULL, 1, &goodLayout),
              ulyssesErrorNullPointer, "deviceLocalLength");
  int64_t storage[2] = {0, 0};
  const int64_t* misaligned = (const int64_t*)(const void*)((const char*)storage + 4);
  expectError(ulyssesPlanCreateCapacity(&plan, 4, 0, goodLengths, misaligned, 1, &goodLayout),
              ulyssesErrorMisalignedPointer, "deviceLocalLength");
  assert_ptr_equal(plan, PLAN_SENTINEL);
}

static void testLayouts(void** state) {
  (void)state;
  ulyssesLayout_t l;
  l = goodLayout; l.batch = 0; expectLayoutError(l, ulyssesErrorInvalidArgument, "batch");
  l = goodLayout; l.heads = 0; expectLayoutError(l, ulyssesErrorInvalidArgument, "heads");
  /* The kernels split heads in 32 bits. */
  l = goodLayout; l.heads = (int64_t)INT32_MAX + 1; expectLayoutError(l, ulyssesErrorInvalidArgument, "heads is 2147483648");
  l = goodLayout; l.headDim = -3; expectLayoutError(l, ulyssesErrorInvalidArgument, "headDim");
  l = goodLayout; l.packed = 2; expectLayoutError(l, ulyssesErrorInvalidArgument, "packed");
  l = goodLayout; l.order = (ulyssesOrder_t)7; expectLayoutError(l, ulyssesErrorInvalidArgument, "order");
  static const int64_t badElementSizes[] = {0, 3, 6, 12, 32, -2};
  for (size_t i = 0; i < sizeof badElementSizes / sizeof badElementSizes[0]; i++) {
    l = goodLayout;
    l.elementSize = badElementSizes[i];
    expectLayoutError(l, ulyssesErrorUnsupportedElementSize, "elementSize");
  }
  /* Grouped-query attention's kv tensors. */
  l = goodLayout; l.queryHeads = -8; expectLayoutError(l, ulyssesErrorInvalidArgument, "queryHeads");
  l = goodLayout; l.queryHeads = 12; expectLayoutError(l, ulyssesErrorHeadGroupMismatch, "queryHeads");
  l = goodLayout; l.queryHeads = 4; expectLayoutError(l, ulyssesErrorHeadGroupMismatch, "queryHeads");
  l = goodLayout; l.queryHeads = (int64_t)1 << 31; expectLayoutError(l, ulyssesErrorInvalidArgument, "queryHeads is 2147483648");
  l = goodLayout; l.queryHeads = (int64_t)1 << 40; expectLayoutError(l, ulyssesErrorInvalidArgument, "2^31 - 1");
  /* The most heads and query heads the kernels split are accepted. */
  ulyssesPlan_t plan = NULL;
  l = goodLayout; l.heads = INT32_MAX; l.headDim = 1;
  assert_int_equal(ulyssesPlanCreateExact(&plan, 4, 1, goodLengths, 1, &l), ulyssesSuccess);
  ulyssesPlanDestroy(plan);
  l = goodLayout; l.heads = 1; l.queryHeads = INT32_MAX; l.dataType = ulyssesTypeFloat16;
  assert_int_equal(ulyssesPlanCreateExact(&plan, 4, 1, goodLengths, 1, &l), ulyssesSuccess);
  ulyssesPlanDestroy(plan);
  l = goodLayout; l.dataType = (ulyssesDataType_t)9; expectLayoutError(l, ulyssesErrorInvalidArgument, "dataType");
  l = goodLayout; l.dataType = ulyssesTypeFloat32; expectLayoutError(l, ulyssesErrorUnsupportedElementSize, "dataType");
  l = goodLayout; l.elementSize = 4; l.dataType = ulyssesTypeBfloat16;
  expectLayoutError(l, ulyssesErrorUnsupportedElementSize, "dataType");
  /* The second tensor is named when it is the bad one. */
  ulyssesLayout_t pair[2] = {goodLayout, goodLayout};
  pair[1].packed = 0;
  expectExactPlanError(4, 1, goodLengths, 2, pair, ulyssesErrorInvalidArgument, "layouts[1]");
}

static void testSizeOverflow(void** state) {
  (void)state;
  ulyssesLayout_t l;
  l = goodLayout; l.headDim = INT64_MAX / 2; expectLayoutError(l, ulyssesErrorSizeOverflow, "headDim");
  l = goodLayout; l.heads = INT32_MAX; l.packed = 3; l.headDim = INT64_MAX / 4;
  expectLayoutError(l, ulyssesErrorSizeOverflow, "packed * heads * headDim");
  l = goodLayout; l.batch = INT64_MAX / 4; expectLayoutError(l, ulyssesErrorSizeOverflow, "batch");
  l = goodLayout; l.elementSize = 16; l.headDim = INT64_MAX / 8; expectLayoutError(l, ulyssesErrorSizeOverflow, "layouts[0]");
  /* Each product fits, the tensor does not fit the 2^56 bytes addressed. */
  l = goodLayout; l.heads = (int64_t)1 << 30; l.headDim = (int64_t)1 << 21;
  expectLayoutError(l, ulyssesErrorSizeOverflow, "2^56");
}

/* One rank's exchange on the recording backend, with buffers to watch. */
typedef struct {
  exchangeRun run;
  scenario s;
  unsigned char* snapshots[2 * ULYSSES_MAX_TENSORS + 1];
} watchedCall;

static void watchedSetup(watchedCall* w, int nTensors) {
  memset(&w->s, 0, sizeof w->s);
  w->s.nRanks = 4;
  w->s.nTensors = nTensors;
  memcpy(w->s.lengths, goodLengths, sizeof goodLengths);
  for (int t = 0; t < nTensors; t++) {
    w->s.layouts[t] = goodLayout;
    w->s.layouts[t].heads = 4 + 4 * t;
  }
  exchangeSetup(&w->run, &w->s, ulyssesOpSeqToHead, 11);
}

/* The call's arguments as the test gives them (plan, op, tensor count, send
 * and receive buffers, workspace and its size); watchedCallRank0 adds the
 * status and the comm. */
#define CALL(...) CALL_(__VA_ARGS__)
#define CALL_(plan_, op_, nTensors_, sendbuffs_, recvbuffs_, workspace_, workspaceSize_)       \
  ((ulyssesCall){.plan = (plan_),                                                             \
                 .op = (op_),                                                                 \
                 .nTensors = (nTensors_),                                                     \
                 .sendbuffs = (sendbuffs_),                                                   \
                 .recvbuffs = (recvbuffs_),                                                   \
                 .workspace = (workspace_),                                                   \
                 .workspaceSize = (workspaceSize_)})

/* call on rank commRank of a simulated comm of commRanks ranks. */
static ulyssesResult_t watchedCallRank0(watchedCall* w, int commRanks, int commRank,
                                        ulyssesCall call) {
  exchangeRun* run = &w->run;
  int n = 0;
  for (int t = 0; t < w->s.nTensors; t++) {
    w->snapshots[n] = malloc(run->recv[0][t].bytes + 1);
    memcpy(w->snapshots[n++], run->recv[0][t].data, run->recv[0][t].bytes);
  }
  w->snapshots[n] = malloc(run->workspaceBytes[0] + 1);
  memcpy(w->snapshots[n], run->workspace[0].data, run->workspaceBytes[0]);
  simComm comm;
  simCommInit(&comm, commRanks, commRank);
  call.deviceStatus = &run->status[0];
  call.comm = &comm.comm;
  ulyssesBackend backend = simBackendOf(run->world, 0);
  return ulyssesEnqueueExchange(&call, &backend);
}

/* Nothing was enqueued and no byte of an output, the workspace or a guard
 * zone changed. */
static void expectUntouched(watchedCall* w) {
  exchangeRun* run = &w->run;
  assert_int_equal(simCountCalls(run->world, 0), 0);
  int n = 0;
  for (int t = 0; t < w->s.nTensors; t++) {
    assert_memory_equal(run->recv[0][t].data, w->snapshots[n], run->recv[0][t].bytes);
    assert_true(guardsIntact(&run->recv[0][t]));
    free(w->snapshots[n++]);
  }
  assert_memory_equal(run->workspace[0].data, w->snapshots[n], run->workspaceBytes[0]);
  assert_true(guardsIntact(&run->workspace[0]));
  free(w->snapshots[n]);
  assert_int_equal(run->status[0], 0);
  exchangeTeardown(run);
}

static void testExchangeArguments(void** state) {
  (void)state;
  watchedCall w;
  const void* sendbuffs[2];
  void* recvbuffs[2];
#define BUFFERS()                                                      \
  do {                                                                 \
    for (int t = 0; t < w.s.nTensors; t++) {                           \
      sendbuffs[t] = w.run.send[0][t].data;                            \
      recvbuffs[t] = w.run.recv[0][t].data;                            \
    }                                                                  \
  } while (0)
#define WORKSPACE w.run.workspace[0].data, w.run.workspaceBytes[0]

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 0, CALL(NULL, ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorNullPointer, "plan");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 3, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorCommMismatch, "comm");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 2, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorCommMismatch, "rank");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], (ulyssesOp_t)3, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorInvalidArgument, "op");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 1, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorLayoutMismatch, "plan");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, NULL, recvbuffs, WORKSPACE)),
              ulyssesErrorNullPointer, "sendbuffs");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  recvbuffs[1] = NULL;
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorNullPointer, "recvbuff of tensor 1");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, NULL, w.run.workspaceBytes[0])),
              ulyssesErrorNullPointer, "workspace");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, w.run.workspace[0].data + 8, w.run.workspaceBytes[0] - 8)),
              ulyssesErrorMisalignedPointer, "workspace");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, w.run.workspace[0].data, w.run.workspaceBytes[0] - 1)),
              ulyssesErrorWorkspaceTooSmall, "workspaceSize");
  expectUntouched(&w);

  /* An output overlapping an input, another output, or the workspace. */
  watchedSetup(&w, 2); BUFFERS();
  sendbuffs[0] = w.run.recv[0][0].data + 1;
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorBufferOverlap, "overlaps");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  recvbuffs[1] = w.run.recv[0][0].data + 2;
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorBufferOverlap, "overlaps");
  expectUntouched(&w);

  watchedSetup(&w, 2); BUFFERS();
  recvbuffs[0] = w.run.workspace[0].data + 16;
  expectError(watchedCallRank0(&w, 4, 0, CALL(w.run.plans[0], ulyssesOpSeqToHead, 2, sendbuffs, recvbuffs, WORKSPACE)),
              ulyssesErrorBufferOverlap, "workspace");
  expectUntouched(&w);
}

/* head -> seq sums the replicas of kv heads that several ranks share: an
 * opaque element type cannot be summed, and is refused before anything is
 * enqueued. seq -> head, which only copies, takes it. */
static void testSharedKvHeadsNeedAFloatType(void** state) {
  (void)state;
  scenario s;
  memset(&s, 0, sizeof s);
  s.nRanks = 4;
  s.nTensors = 1;
  memcpy(s.lengths, goodLengths, sizeof goodLengths);
  s.layouts[0] = goodLayout;
  s.layouts[0].heads = 2;
  s.layouts[0].queryHeads = 8; /* 4 query heads per kv head, 2 per rank */
  for (int op = ulyssesOpSeqToHead; op <= ulyssesOpHeadToSeq; op++) {
    exchangeRun run;
    exchangeSetup(&run, &s, (ulyssesOp_t)op, 13);
    ulyssesCall call = exchangeCallOf(&run, 0);
    ulyssesBackend backend = simBackendOf(run.world, 0);
    ulyssesResult_t result = ulyssesEnqueueExchange(&call, &backend);
    if (op == ulyssesOpSeqToHead) {
      assert_int_equal(result, ulyssesSuccess);
    } else {
      expectError(result, ulyssesErrorUnsupportedElementSize, "dataType");
      assert_int_equal(simCountCalls(run.world, 0), 0);
    }
    exchangeTeardown(&run);
  }
}

/* Inputs may overlap each other (they are only read), and a zero-byte buffer
 * may be NULL. */
static void testHarmlessInputs(void** state) {
  (void)state;
  scenario s;
  memset(&s, 0, sizeof s);
  s.nRanks = 2;
  s.nTensors = 2;
  s.lengths[0] = 0;
  s.lengths[1] = 3;
  s.layouts[0] = goodLayout;
  s.layouts[1] = goodLayout;
  exchangeRun run;
  exchangeSetup(&run, &s, ulyssesOpSeqToHead, 12);
  /* Rank 0 holds no rows: its inputs have zero bytes. Both tensors read the
   * same (empty) input. */
  const void* sendbuffs[2] = {NULL, NULL};
  ulyssesCall call = exchangeCallOf(&run, 0);
  call.sendbuffs = sendbuffs;
  call.deviceStatus = NULL;
  ulyssesBackend backend = simBackendOf(run.world, 0);
  assert_int_equal(ulyssesEnqueueExchange(&call, &backend), ulyssesSuccess);
  assert_true(simCountCalls(run.world, 0) > 0);
  exchangeTeardown(&run);
  /* Rank 0 holds rows now, and both tensors read them from one buffer. */
  s.lengths[0] = 2;
  exchangeSetup(&run, &s, ulyssesOpSeqToHead, 13);
  const void* sharedInput[2] = {run.send[0][0].data, run.send[0][0].data};
  call = exchangeCallOf(&run, 0);
  call.sendbuffs = sharedInput;
  call.deviceStatus = NULL;
  backend = simBackendOf(run.world, 0);
  assert_int_equal(ulyssesEnqueueExchange(&call, &backend), ulyssesSuccess);
  exchangeTeardown(&run);
}

/* call's pack with plan, deviceLengths and deviceStatus. */
static ulyssesResult_t stageWith(ulyssesCall* call, ulyssesPlan_t plan, const int64_t* deviceLengths,
                                 uint32_t* deviceStatus, const ulyssesBackend* backend) {
  call->plan = plan;
  call->deviceLengths = deviceLengths;
  call->deviceStatus = deviceStatus;
  return ulyssesEnqueueStage(call, ULYSSES_SEND, backend);
}

static void testStageArguments(void** state) {
  (void)state;
  int64_t deviceLength = 3, deviceLengths[4] = {3, 0, 5, 2};
  uint32_t status = 0;
  ulyssesPlan_t capacity = NULL, exact = NULL;
  assert_int_equal(ulyssesPlanCreateCapacity(&capacity, 4, 0, goodLengths, &deviceLength, 1, &goodLayout),
                   ulyssesSuccess);
  assert_int_equal(ulyssesPlanCreateExact(&exact, 4, 0, goodLengths, 1, &goodLayout), ulyssesSuccess);
  size_t bytes;
  assert_int_equal(ulyssesGetWorkspaceSize(capacity, ulyssesOpSeqToHead, &bytes), ulyssesSuccess);
  unsigned char* workspace = aligned_alloc(256, (bytes + 255) / 256 * 256);
  unsigned char* input = calloc(1, 4096);
  const void* sendbuffs[1] = {input};
  simWorld* world = simCreate(4);
  ulyssesBackend backend = simBackendOf(world, 0);
  ulyssesCall call = {.op = ulyssesOpSeqToHead,
                      .nTensors = 1,
                      .sendbuffs = sendbuffs,
                      .workspace = workspace,
                      .workspaceSize = bytes};
  expectError(stageWith(&call, capacity, NULL, &status, &backend),
              ulyssesErrorNullPointer, "deviceLengths");
  expectError(stageWith(&call, capacity, deviceLengths, NULL, &backend),
              ulyssesErrorNullPointer, "deviceStatus");
  expectError(stageWith(&call, capacity, (const int64_t*)(const void*)((const char*)deviceLengths + 2), &status, &backend),
              ulyssesErrorMisalignedPointer, "deviceLengths");
  expectError(stageWith(&call, exact, deviceLengths, NULL, &backend),
              ulyssesErrorInvalidArgument, "exact");
  expectError(stageWith(&call, NULL, NULL, NULL, &backend),
              ulyssesErrorNullPointer, "plan");
  assert_int_equal(simCountCalls(world, 0), 0);
  assert_int_equal(status, 0);
  simDestroy(world);
  free(input);
  free(workspace);
  ulyssesPlanDestroy(capacity);
  ulyssesPlanDestroy(exact);
}

static void testQueries(void** state) {
  (void)state;
  ulyssesPlan_t plan = NULL;
  assert_int_equal(ulyssesPlanCreateExact(&plan, 4, 0, goodLengths, 1, &goodLayout), ulyssesSuccess);
  size_t bytes = 77;
  expectError(ulyssesGetWorkspaceSize(NULL, ulyssesOpSeqToHead, &bytes), ulyssesErrorNullPointer, "plan");
  expectError(ulyssesGetWorkspaceSize(plan, ulyssesOpSeqToHead, NULL), ulyssesErrorNullPointer,
              "workspaceSize");
  expectError(ulyssesGetWorkspaceSize(plan, (ulyssesOp_t)-1, &bytes), ulyssesErrorInvalidArgument, "op");
  assert_int_equal(bytes, 77);
  ulyssesSegment_t segments[4];
  expectError(ulyssesGetSegments(plan, ulyssesOpSeqToHead, 1, 1, segments),
              ulyssesErrorInvalidArgument, "tensor");
  expectError(ulyssesGetSegments(plan, ulyssesOpSeqToHead, 0, 1, NULL), ulyssesErrorNullPointer,
              "segments");
  size_t sendBytes = 5, recvBytes = 6;
  expectError(ulyssesGetBufferSizes(NULL, ulyssesOpSeqToHead, 0, &sendBytes, &recvBytes),
              ulyssesErrorNullPointer, "plan");
  expectError(ulyssesGetBufferSizes(plan, (ulyssesOp_t)9, 0, &sendBytes, &recvBytes),
              ulyssesErrorInvalidArgument, "op");
  expectError(ulyssesGetBufferSizes(plan, ulyssesOpSeqToHead, -1, &sendBytes, &recvBytes),
              ulyssesErrorInvalidArgument, "tensor");
  assert_int_equal(sendBytes, 5);
  assert_int_equal(recvBytes, 6);
  /* Rank 0 of {3, 0, 5, 2}, batch 2, 8 heads of 4 two-byte elements: its
   * sequence side is 2 * 3 rows of 64 bytes, its head side 2 * 10 rows of
   * 2 heads. */
  assert_int_equal(ulyssesGetBufferSizes(plan, ulyssesOpSeqToHead, 0, &sendBytes, &recvBytes), ulyssesSuccess);
  assert_int_equal(sendBytes, 2 * 3 * 64);
  assert_int_equal(recvBytes, 2 * 10 * 16);
  assert_int_equal(ulyssesGetBufferSizes(plan, ulyssesOpAllGather, 0, NULL, &recvBytes), ulyssesSuccess);
  assert_int_equal(recvBytes, 2 * 10 * 64);
  assert_int_equal(ulyssesPlanDestroy(NULL), ulyssesSuccess);
  ulyssesPlanDestroy(plan);

  /* Every code has its own name; an unknown one is said to be unknown. */
  for (int i = 0; i < ulyssesNumResults; i++) {
    const char* name = ulyssesGetErrorString((ulyssesResult_t)i);
    assert_non_null(name);
    assert_true(strncmp(name, "ulysses", 7) == 0);
    for (int j = 0; j < i; j++) assert_string_not_equal(name, ulyssesGetErrorString((ulyssesResult_t)j));
  }
  assert_non_null(strstr(ulyssesGetErrorString(ulyssesNumResults), "unknown"));
  assert_non_null(strstr(ulyssesGetErrorString((ulyssesResult_t)-1), "unknown"));
}

/* A successful call clears the thread's message. */
static void testLastErrorIsCleared(void** state) {
  (void)state;
  expectExactPlanError(0, 0, goodLengths, 1, &goodLayout, ulyssesErrorInvalidArgument, "nRanks");
  assert_true(strlen(ulyssesGetLastError()) > 0);
  ulyssesPlan_t plan = NULL;
  assert_int_equal(ulyssesPlanCreateExact(&plan, 4, 0, goodLengths, 1, &goodLayout), ulyssesSuccess);
  assert_string_equal(ulyssesGetLastError(), "");
  ulyssesPlanDestroy(plan);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testPlanArguments),     cmocka_unit_test(testLengths),
      cmocka_unit_test(testLayouts),           cmocka_unit_test(testSizeOverflow),
      cmocka_unit_test(testExchangeArguments), cmocka_unit_test(testHarmlessInputs),
      cmocka_unit_test(testSharedKvHeadsNeedAFloatType),
      cmocka_unit_test(testStageArguments),    cmocka_unit_test(testQueries),
      cmocka_unit_test(testLastErrorIsCleared),
      cmocka_unit_test(testLayoutSizes),       cmocka_unit_test(testSegmentSizes),
      cmocka_unit_test(testConfigVersion),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
