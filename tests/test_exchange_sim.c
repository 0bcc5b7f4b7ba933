/* The whole exchange pipeline on the CPU: plans, the NCCL call sequence and
 * every kernel's per-thread function, for P simulated ranks, against the CPU
 * reference, byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "exchange_run.h"

static const ulyssesOp_t allOps[] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq, ulyssesOpAllGather};

static void runRandomExchanges(int capacityMode, uint64_t seed, int scenarios) {
  uint64_t random = seed;
  for (int i = 0; i < scenarios; i++) {
    scenario s;
    randomScenario(&s, &random, HARNESS_MAX_RANKS, capacityMode);
    for (int k = 0; k < 3; k++) {
      exchangeRun run;
      exchangeSetup(&run, &s, allOps[k], seed + (uint64_t)i);
      exchangeExecute(&run);
      exchangeCheck(&run, s.lengths);
      for (int r = 0; r < s.nRanks; r++) assert_int_equal(run.status[r], 0);
      exchangeTeardown(&run);
    }
  }
}

static void testExactExchangesMatchReference(void** state) {
  (void)state;
  runRandomExchanges(0, 0x5eed0001, 250);
}

static void testCapacityExchangesMatchReference(void** state) {
  (void)state;
  runRandomExchanges(1, 0x5eed0002, 250);
}

/* seq -> head then head -> seq on the same plan gives back the input. */
static void testRoundTrip(void** state) {
  (void)state;
  uint64_t random = 0x5eed0003;
  for (int i = 0; i < 100; i++) {
    scenario s;
    randomScenario(&s, &random, HARNESS_MAX_RANKS, i % 2);
    exchangeRun forward, backward;
    exchangeSetup(&forward, &s, ulyssesOpSeqToHead, (uint64_t)i);
    exchangeExecute(&forward);
    exchangeSetup(&backward, &s, ulyssesOpHeadToSeq, (uint64_t)i + 1);
    for (int r = 0; r < s.nRanks; r++)
      for (int t = 0; t < s.nTensors; t++) {
        assert_int_equal(backward.send[r][t].bytes, forward.recv[r][t].bytes);
        memcpy(backward.send[r][t].data, forward.recv[r][t].data, forward.recv[r][t].bytes);
      }
    exchangeExecute(&backward);
    exchangeCheck(&backward, s.lengths);
    /* The identity, except for kv heads that several ranks share: their
     * replicas come back summed. */
    for (int r = 0; r < s.nRanks; r++)
      for (int t = 0; t < s.nTensors; t++) {
        if (ulyssesPlanSide(forward.plans[r], ulyssesOpHeadToSeq, t, ULYSSES_RECV).kind ==
            ULYSSES_COPY_HEAD_SUM)
          continue;
        sideRows rows = exchangeSideRows(&forward, t, r, 1, s.lengths);
        expectSameRealRows(&rows, backward.recv[r][t].data, forward.send[r][t].data, "round trip");
      }
    exchangeTeardown(&forward);
    exchangeTeardown(&backward);
  }
}

static scenario singleTensor(int nRanks, int capacityMode, int64_t batch, int64_t heads,
                             ulyssesOrder_t order) {
  scenario s;
  memset(&s, 0, sizeof s);
  s.nRanks = nRanks;
  s.capacityMode = capacityMode;
  s.nTensors = 1;
  for (int r = 0; r < nRanks; r++) {
    s.lengths[r] = r + 1;
    s.capacities[r] = r + 3;
  }
  s.layouts[0] = (ulyssesLayout_t){.size = sizeof(ulyssesLayout_t), .batch = batch, .heads = heads, .headDim = 4, .elementSize = 2, .packed = 1, .order = order};
  return s;
}

/* Counts the kernel launches and the messages rank posts in one exchange,
 * then checks its result. */
static int launchesAndSendsOf(const scenario* s, ulyssesOp_t op, int rank, int* sends) {
  exchangeRun run;
  exchangeSetup(&run, s, op, 7);
  ulyssesCall call = exchangeCallOf(&run, rank);
  ulyssesBackend backend = simBackendOf(run.world, rank);
  assert_int_equal(ulyssesEnqueueExchange(&call, &backend), ulyssesSuccess);
  int launches = simCountLaunches(run.world, rank);
  *sends = simCountSends(run.world, rank);
  exchangeTeardown(&run);
  /* The same exchange on every rank, executed and checked. */
  exchangeSetup(&run, s, op, 7);
  exchangeExecute(&run);
  exchangeCheck(&run, s->lengths);
  exchangeTeardown(&run);
  return launches;
}

static int launchesOf(const scenario* s, ulyssesOp_t op, int rank) {
  int sends;
  return launchesAndSendsOf(s, op, rank, &sends);
}

static int sendsOf(const scenario* s, ulyssesOp_t op, int rank) {
  int sends;
  launchesAndSendsOf(s, op, rank, &sends);
  return sends;
}

/* Tensors that both sides copy travel in one message per peer (every length
 * here is above 0, so every rank sends to each of the 4 ranks): alike ones
 * always, others where their heads are whole 16-byte words and a head sum's
 * replicas stay a fixed stride apart; where a side is the caller's buffer,
 * one message per tensor. */
static void testOneMessagePerPeer(void** state) {
  (void)state;
  for (int capacityMode = 0; capacityMode < 2; capacityMode++) {
    scenario s = singleTensor(4, capacityMode, 2, 8, ulyssesOrderBSHD);
    s.nTensors = 3;
    s.layouts[2] = s.layouts[1] = s.layouts[0];
    for (int rank = 0; rank < 4; rank++) {
      assert_int_equal(sendsOf(&s, ulyssesOpSeqToHead, rank), 4);
      assert_int_equal(sendsOf(&s, ulyssesOpHeadToSeq, rank), 4);
      /* The all-gather sends the caller's buffer as it is. */
      assert_int_equal(sendsOf(&s, ulyssesOpAllGather, rank), 12);
    }
    /* q, then k and v of grouped-query attention: with 8-byte heads, two
     * groups, k and v's replicas summed from one region on the way back;
     * with 128-byte heads, one group (q, k, v) each way. */
    s.layouts[1].heads = s.layouts[2].heads = 2;
    s.layouts[1].queryHeads = s.layouts[2].queryHeads = 8;
    s.layouts[1].dataType = s.layouts[2].dataType = ulyssesTypeBfloat16;
    assert_int_equal(sendsOf(&s, ulyssesOpSeqToHead, 1), 8);
    assert_int_equal(sendsOf(&s, ulyssesOpHeadToSeq, 1), 8);
    for (int t = 0; t < 3; t++) s.layouts[t].headDim = 64;
    for (int rank = 0; rank < 4; rank++) {
      assert_int_equal(sendsOf(&s, ulyssesOpSeqToHead, rank), 4);
      assert_int_equal(sendsOf(&s, ulyssesOpHeadToSeq, rank), 4);
    }
    /* One kv head that every rank reads: on the way back ranks 1 and 2 hold
     * it between its first and last holders, their replicas a fixed stride
     * apart with q's segments among them; with q's 6 heads split 2, 2, 1, 1
     * that stride would not be fixed, so the head sum keeps a group of its
     * own. (On the way there every rank takes k and v whole: they are sent
     * from the caller's buffers, a message each.) */
    s.layouts[1].heads = s.layouts[2].heads = 1;
    s.layouts[1].queryHeads = s.layouts[2].queryHeads = 4;
    assert_int_equal(sendsOf(&s, ulyssesOpSeqToHead, 3), 12);
    assert_int_equal(sendsOf(&s, ulyssesOpHeadToSeq, 3), 4);
    s.layouts[0].heads = 6;
    assert_int_equal(sendsOf(&s, ulyssesOpHeadToSeq, 3), 8);
    /* Plain tensors of three shapes, 128-byte heads: one group each way. */
    s.layouts[1] = s.layouts[2] = s.layouts[0];
    s.layouts[1].heads = 6;
    s.layouts[2].batch = 3;
    s.layouts[2].packed = 3;
    assert_int_equal(sendsOf(&s, ulyssesOpSeqToHead, 2), 4);
    assert_int_equal(sendsOf(&s, ulyssesOpHeadToSeq, 2), 4);
  }
  /* Exact mode, sequence first: seq -> head receives in place. */
  scenario sequenceFirst = singleTensor(4, 0, 2, 8, ulyssesOrderSBHD);
  sequenceFirst.nTensors = 3;
  sequenceFirst.layouts[2] = sequenceFirst.layouts[1] = sequenceFirst.layouts[0];
  assert_int_equal(sendsOf(&sequenceFirst, ulyssesOpSeqToHead, 0), 12);
  assert_int_equal(sendsOf(&sequenceFirst, ulyssesOpHeadToSeq, 0), 12);
}

/* Where the layout makes a peer's block contiguous, data goes straight from
 * or into the caller's buffer: no kernel for that side. */
static void testSkippedPasses(void** state) {
  (void)state;
  /* Exact, batch 1: seq -> head is a pack (received in place), head -> seq
   * an unpack (sent from place), all-gather launches nothing; an exact plan
   * of few ranks carries its length table in the copy's parameters, so no
   * table kernel either. */
  scenario batchOne = singleTensor(4, 0, 1, 8, ulyssesOrderBSHD);
  assert_int_equal(launchesOf(&batchOne, ulyssesOpSeqToHead, 1), 1);
  assert_int_equal(launchesOf(&batchOne, ulyssesOpHeadToSeq, 1), 1);
  assert_int_equal(launchesOf(&batchOne, ulyssesOpAllGather, 1), 0);
  /* SBHD with batch 2: the same. */
  scenario sequenceFirst = singleTensor(4, 0, 2, 8, ulyssesOrderSBHD);
  assert_int_equal(launchesOf(&sequenceFirst, ulyssesOpSeqToHead, 2), 1);
  assert_int_equal(launchesOf(&sequenceFirst, ulyssesOpAllGather, 2), 0);
  /* BSHD with batch 2: both sides copy. */
  scenario batchTwo = singleTensor(4, 0, 2, 8, ulyssesOrderBSHD);
  assert_int_equal(launchesOf(&batchTwo, ulyssesOpSeqToHead, 0), 2);
  assert_int_equal(launchesOf(&batchTwo, ulyssesOpAllGather, 0), 1);
  /* One rank: nothing to copy at all; capacity mode still checks lengths. */
  scenario alone = singleTensor(1, 0, 2, 8, ulyssesOrderBSHD);
  assert_int_equal(launchesOf(&alone, ulyssesOpSeqToHead, 0), 0);
  scenario aloneCapacity = singleTensor(1, 1, 2, 8, ulyssesOrderBSHD);
  assert_int_equal(launchesOf(&aloneCapacity, ulyssesOpSeqToHead, 0), 1);
  /* One head: rank 0 takes it whole, the send side is the input itself. */
  scenario oneHead = singleTensor(3, 0, 1, 1, ulyssesOrderBSHD);
  assert_int_equal(launchesOf(&oneHead, ulyssesOpSeqToHead, 0), 0);
  /* Capacity mode, batch 1: peers' rows land at device-known offsets, so the
   * receive side goes through the workspace. */
  scenario capacityBatchOne = singleTensor(4, 1, 1, 8, ulyssesOrderBSHD);
  assert_int_equal(launchesOf(&capacityBatchOne, ulyssesOpSeqToHead, 3), 3);
}

/* The local stages alone launch nothing where their copy is skipped, except
 * capacity mode's length check. */
static void testStagesSkipLikeTheExchange(void** state) {
  (void)state;
  for (int capacityMode = 0; capacityMode < 2; capacityMode++) {
    scenario s = singleTensor(4, capacityMode, 1, 8, ulyssesOrderBSHD);
    exchangeRun run;
    exchangeSetup(&run, &s, ulyssesOpSeqToHead, 9);
    ulyssesCall call = exchangeStageCallOf(&run, 2, s.lengths);
    ulyssesBackend backend = simBackendOf(run.world, 2);
    assert_int_equal(ulyssesEnqueueStage(&call, ULYSSES_RECV, &backend), ulyssesSuccess);
    /* Exact mode, batch 1: received in place, nothing to unpack. Capacity
     * mode: the rows' places are known on the device only: table + unpack. */
    assert_int_equal(simCountCalls(run.world, 2), capacityMode ? 2 : 0);
    exchangeTeardown(&run);
  }
}

/* Common shapes of grouped-query attention: (Hq, Hkv, P). q (plain)
 * and k, v (kv heads) move in one call each way, against the reference, with
 * uneven lengths and zeros, in both modes and orders. */
static void testNamedGroupedQueryShapes(void** state) {
  (void)state;
  static const int64_t shapes[][3] = {{32, 8, 16}, {28, 4, 8}, {28, 4, 3}, {8, 1, 4}, {8, 2, 1}};
  static const ulyssesDataType_t types[] = {ulyssesTypeBfloat16, ulyssesTypeFloat16, ulyssesTypeFloat32};
  for (int i = 0; i < 5; i++)
    for (int variant = 0; variant < 8; variant++) {
      scenario s;
      memset(&s, 0, sizeof s);
      s.nRanks = (int)shapes[i][2];
      s.capacityMode = variant % 2;
      s.nTensors = 3;
      for (int r = 0; r < s.nRanks; r++) {
        s.lengths[r] = r % 3 == 1 ? 0 : 1 + (r * 5 + i) % 4;
        s.capacities[r] = s.lengths[r] + r % 2;
      }
      ulyssesDataType_t type = types[(i + variant) % 3];
      for (int t = 0; t < 3; t++) {
        ulyssesLayout_t* layout = &s.layouts[t];
        layout->size = sizeof *layout;
        layout->batch = 2;
        layout->heads = t == 0 ? shapes[i][0] : shapes[i][1];
        layout->queryHeads = t == 0 ? 0 : shapes[i][0];
        /* 3: words narrower than an element; 64: up to 16-byte words. */
        layout->headDim = variant < 4 ? 3 : 64;
        layout->dataType = type;
        layout->elementSize = type == ulyssesTypeFloat32 ? 4 : 2;
        layout->packed = 1;
        layout->order = variant / 2 % 2 ? ulyssesOrderSBHD : ulyssesOrderBSHD;
      }
      for (int k = 0; k < 2; k++) {
        exchangeRun run;
        exchangeSetup(&run, &s, allOps[k], (uint64_t)(i * 8 + variant));
        exchangeExecute(&run);
        exchangeCheck(&run, s.lengths);
        exchangeTeardown(&run);
      }
    }
}

/* Where every kv head goes to exactly one rank, the kv exchange is the plain
 * one: the same kernels, nothing summed. */
static void testUnsharedKvHeadsArePlain(void** state) {
  (void)state;
  scenario s = singleTensor(2, 0, 2, 2, ulyssesOrderBSHD);
  s.layouts[0].queryHeads = 8; /* 4 query heads per kv head, 4 per rank */
  exchangeRun run;
  exchangeSetup(&run, &s, ulyssesOpHeadToSeq, 3);
  assert_int_equal(ulyssesPlanSide(run.plans[1], ulyssesOpHeadToSeq, 0, ULYSSES_RECV).kind,
                   ULYSSES_COPY_HEAD_SLICE);
  exchangeTeardown(&run);
  scenario plain = singleTensor(2, 0, 2, 2, ulyssesOrderBSHD);
  assert_int_equal(launchesOf(&s, ulyssesOpHeadToSeq, 1), launchesOf(&plain, ulyssesOpHeadToSeq, 1));
  assert_int_equal(launchesOf(&s, ulyssesOpSeqToHead, 1), launchesOf(&plain, ulyssesOpSeqToHead, 1));
}

/* A device length above its capacity is clamped, flagged on every rank, and
 * nothing outside the buffers is written. */
static void testCapacityOverflowIsClampedAndReported(void** state) {
  (void)state;
  uint64_t random = 0x5eed0004;
  for (int i = 0; i < 40; i++) {
    scenario s;
    do randomScenario(&s, &random, 8, 1); while (s.nRanks < 2);
    int culprit = i % s.nRanks;
    for (int k = 0; k < 3; k++) {
      exchangeRun run;
      exchangeSetup(&run, &s, allOps[k], (uint64_t)i);
      run.deviceLengths[culprit] = s.capacities[culprit] + 1 + i % 3;
      exchangeExecute(&run);
      for (int r = 0; r < s.nRanks; r++)
        assert_int_equal(run.status[r], ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY);
      int64_t clamped[HARNESS_MAX_RANKS];
      memcpy(clamped, s.lengths, sizeof clamped);
      clamped[culprit] = s.capacities[culprit];
      exchangeCheck(&run, clamped);
      exchangeTeardown(&run);
    }
  }
}

static void testNegativeDeviceLengthIsReported(void** state) {
  (void)state;
  scenario s = singleTensor(3, 1, 2, 6, ulyssesOrderBSHD);
  exchangeRun run;
  exchangeSetup(&run, &s, ulyssesOpSeqToHead, 3);
  run.deviceLengths[1] = -5;
  exchangeExecute(&run);
  for (int r = 0; r < s.nRanks; r++) assert_int_equal(run.status[r], ULYSSES_STATUS_NEGATIVE_LENGTH);
  int64_t clamped[HARNESS_MAX_RANKS];
  memcpy(clamped, s.lengths, sizeof clamped);
  clamped[1] = 0;
  exchangeCheck(&run, clamped);
  exchangeTeardown(&run);
}

/* The recording backend must catch ranks whose plans disagree: that is the
 * hang it exists to find. */
static void testMismatchedPlansAreCaught(void** state) {
  (void)state;
  scenario s = singleTensor(2, 0, 2, 4, ulyssesOrderBSHD);
  exchangeRun run;
  exchangeSetup(&run, &s, ulyssesOpSeqToHead, 5);
  int64_t otherLengths[2] = {s.lengths[0], s.lengths[1] + 1};
  ulyssesPlanDestroy(run.plans[1]);
  assert_int_equal(ulyssesPlanCreateExact(&run.plans[1], 2, 1, otherLengths, 1, s.layouts),
                   ulyssesSuccess);
  size_t bigger;
  assert_int_equal(ulyssesGetWorkspaceSize(run.plans[1], ulyssesOpSeqToHead, &bigger), ulyssesSuccess);
  guardedFree(&run.workspace[1]);
  guardedAlloc(&run.workspace[1], bigger, 0);
  run.workspaceBytes[1] = bigger;
  guardedBuffer biggerBuffers[2];
  guardedAlloc(&biggerBuffers[0], run.send[1][0].bytes * 2, 0);
  guardedAlloc(&biggerBuffers[1], run.recv[1][0].bytes * 2, 0);
  for (int r = 0; r < 2; r++) {
    const void* sendbuffs[1] = {r == 1 ? biggerBuffers[0].data : run.send[r][0].data};
    void* recvbuffs[1] = {r == 1 ? biggerBuffers[1].data : run.recv[r][0].data};
    ulyssesCall call = exchangeCallOf(&run, r);
    call.sendbuffs = sendbuffs;
    call.recvbuffs = recvbuffs;
    call.deviceStatus = NULL;
    ulyssesBackend backend = simBackendOf(run.world, r);
    assert_int_equal(ulyssesEnqueueExchange(&call, &backend), ulyssesSuccess);
  }
  char message[256];
  assert_int_equal(simExecute(run.world, message, sizeof message), 1);
  assert_non_null(strstr(message, "bytes"));
  guardedFree(&biggerBuffers[0]);
  guardedFree(&biggerBuffers[1]);
  exchangeTeardown(&run);
}

/* ulyssesPack, a transport of the caller's own that follows
 * ulyssesGetSegments, and ulyssesUnpack give the reference's result. */
static void testStagesWithOwnTransport(void** state) {
  (void)state;
  uint64_t random = 0x5eed0005;
  for (int i = 0; i < 120; i++) {
    scenario s;
    randomScenario(&s, &random, 8, i % 2);
    ulyssesOp_t op = allOps[i % 3];
    exchangeRun run;
    exchangeSetup(&run, &s, op, (uint64_t)i);
    for (int r = 0; r < s.nRanks; r++) {
      ulyssesCall call = exchangeStageCallOf(&run, r, s.lengths);
      ulyssesBackend backend = simBackendOf(run.world, r);
      assert_int_equal(ulyssesEnqueueStage(&call, ULYSSES_SEND, &backend), ulyssesSuccess);
    }
    char message[256];
    assert_int_equal(simExecute(run.world, message, sizeof message), 0);
    for (int t = 0; t < s.nTensors; t++)
      for (int r = 0; r < s.nRanks; r++) {
        ulyssesSegment_t sends[HARNESS_MAX_RANKS];
        sends[0].size = sizeof sends[0];
        assert_int_equal(ulyssesGetSegments(run.plans[r], op, t, 1, sends), ulyssesSuccess);
        for (int p = 0; p < s.nRanks; p++) {
          ulyssesSegment_t receives[HARNESS_MAX_RANKS];
          receives[0].size = sizeof receives[0];
          assert_int_equal(ulyssesGetSegments(run.plans[p], op, t, 0, receives), ulyssesSuccess);
          assert_int_equal(sends[p].bytes, receives[r].bytes);
          const unsigned char* from = sends[p].place == ulyssesSegmentInWorkspace
                                          ? run.workspace[r].data : run.send[r][t].data;
          unsigned char* to = receives[r].place == ulyssesSegmentInWorkspace
                                  ? run.workspace[p].data : run.recv[p][t].data;
          if (sends[p].bytes > 0) memcpy(to + receives[r].offset, from + sends[p].offset, sends[p].bytes);
        }
      }
    for (int r = 0; r < s.nRanks; r++) {
      ulyssesCall call = exchangeStageCallOf(&run, r, s.lengths);
      ulyssesBackend backend = simBackendOf(run.world, r);
      assert_int_equal(ulyssesEnqueueStage(&call, ULYSSES_RECV, &backend), ulyssesSuccess);
    }
    assert_int_equal(simExecute(run.world, message, sizeof message), 0);
    exchangeCheck(&run, s.lengths);
    exchangeTeardown(&run);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testExactExchangesMatchReference),
      cmocka_unit_test(testCapacityExchangesMatchReference),
      cmocka_unit_test(testRoundTrip),
      cmocka_unit_test(testSkippedPasses),
      cmocka_unit_test(testOneMessagePerPeer),
      cmocka_unit_test(testStagesSkipLikeTheExchange),
      cmocka_unit_test(testNamedGroupedQueryShapes),
      cmocka_unit_test(testUnsharedKvHeadsArePlain),
      cmocka_unit_test(testCapacityOverflowIsClampedAndReported),
      cmocka_unit_test(testNegativeDeviceLengthIsReported),
      cmocka_unit_test(testMismatchedPlansAreCaught),
      cmocka_unit_test(testStagesWithOwnTransport),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
