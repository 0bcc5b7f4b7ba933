/* The kernels' index arithmetic, driven exhaustively on the CPU: the head
 * split, the row owner search, the length table's clamping, and that every
 * launch's runs write each destination byte exactly once (two warps writing
 * one byte would be a race on the GPU) and only inside the slots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <math.h>

#include "exchange_run.h"
#include "launch_policy.h"

static void testHeadSplitMatchesReference(void** state) {
  (void)state;
  for (int64_t heads = 1; heads <= 64; heads++)
    for (int nRanks = 1; nRanks <= 16; nRanks++) {
      int64_t lengths[16] = {0};
      refShape shape = {nRanks, lengths, 1, heads, 1, 1, 1, 0};
      for (int r = 0; r < nRanks; r++) {
        assert_int_equal(ulyssesHeadBegin(heads, nRanks, r), refHeadBegin(&shape, r));
        assert_int_equal(ulyssesHeadCount(heads, nRanks, r), refHeadCount(&shape, r));
        for (int64_t h = refHeadBegin(&shape, r); h < refHeadBegin(&shape, r) + refHeadCount(&shape, r); h++)
          assert_int_equal(ulyssesHeadOwner(heads, nRanks, h), r);
      }
    }
}

/* The kv heads each rank gets, against the grouped-query reference, and the
 * prefix sums that place each peer's slice. */
static void testKvHeadMap(void** state) {
  (void)state;
  int64_t lengths[16] = {0};
  for (int64_t queryHeads = 1; queryHeads <= 64; queryHeads++)
    for (int64_t kvHeads = 1; kvHeads <= queryHeads; kvHeads++) {
      if (queryHeads % kvHeads != 0) continue;
      for (int nRanks = 1; nRanks <= 16; nRanks++) {
        refGqaShape shape = {{nRanks, lengths, 1, kvHeads, 1, 2, 1, 0}, queryHeads, REF_FLOAT16};
        int64_t prefix = 0;
        for (int r = 0; r < nRanks; r++) {
          int64_t begin, count = ulyssesPeerHeads(kvHeads, queryHeads, nRanks, r, &begin);
          assert_int_equal(count, refKvCount(&shape, r));
          if (count > 0) assert_int_equal(begin, refKvBegin(&shape, r));
          assert_int_equal(ulyssesPeerHeadPrefix(kvHeads, queryHeads, nRanks, r), prefix);
          prefix += count;
        }
        /* The holders of each kv head: exactly the ranks whose slice has it. */
        for (int64_t head = 0; head < kvHeads; head++) {
          ulyssesHolders holders = ulyssesHeadHolders(kvHeads, queryHeads, nRanks, head);
          assert_int_equal(holders.prefix, ulyssesPeerHeadPrefix(kvHeads, queryHeads, nRanks, holders.first));
          for (int r = 0; r < nRanks; r++) {
            int64_t begin, count = ulyssesPeerHeads(kvHeads, queryHeads, nRanks, r, &begin);
            int holds = count > 0 && head >= begin && head < begin + count;
            if (holds != (r >= holders.first && r <= holders.last))
              fail_msg("Hq %lld, Hkv %lld, P %d: kv head %lld held by rank %d: %d, holders %d .. %d",
                       (long long)queryHeads, (long long)kvHeads, nRanks, (long long)head, r, holds,
                       holders.first, holders.last);
            /* What ulyssesSumChunkAt places the replicas by: a holder after the
             * first starts at this head, one before the last holds it only. */
            if (r > holders.first && r <= holders.last && begin != head)
              fail_msg("Hq %lld, Hkv %lld, P %d: holder %d of kv head %lld begins at %lld",
                       (long long)queryHeads, (long long)kvHeads, nRanks, r, (long long)head,
                       (long long)begin);
            if (r > holders.first && r < holders.last && count != 1)
              fail_msg("Hq %lld, Hkv %lld, P %d: inner holder %d of kv head %lld holds %lld heads",
                       (long long)queryHeads, (long long)kvHeads, nRanks, r, (long long)head,
                       (long long)count);
          }
        }
      }
    }
}

static void testRowOwner(void** state) {
  (void)state;
  uint64_t random = 0x1de0;
  for (int trial = 0; trial < 2000; trial++) {
    int nRanks = 1 + (int)(refRandom(&random) % 16);
    int64_t offsets[17] = {0};
    for (int r = 0; r < nRanks; r++)
      offsets[r + 1] = offsets[r] + (refRandom(&random) % 3 == 0 ? 0 : (int64_t)(refRandom(&random) % 5));
    for (int64_t g = 0; g < offsets[nRanks]; g++) {
      int owner = 0;
      while (!(offsets[owner] <= g && g < offsets[owner + 1])) owner++;
      assert_int_equal(ulyssesRowOwner(offsets, nRanks, g), owner);
    }
  }
}

static void testTableEntryClamps(void** state) {
  (void)state;
  int64_t gathered[3] = {-4, 9, 5};
  ulyssesTableArgs args;
  memset(&args, 0, sizeof args);
  args.mode = ULYSSES_MODE_CAPACITY;
  args.nRanks = 3;
  args.chunkCount = 3;
  args.hostValues[0] = 6;
  args.hostValues[1] = 7;
  args.hostValues[2] = 5;
  args.gatheredLengths = gathered;
  int64_t length, slot;
  assert_int_equal(ulyssesTableEntry(&args, 0, &length, &slot), ULYSSES_STATUS_NEGATIVE_LENGTH);
  assert_int_equal(length, 0);
  assert_int_equal(slot, 6);
  assert_int_equal(ulyssesTableEntry(&args, 1, &length, &slot), ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY);
  assert_int_equal(length, 7);
  assert_int_equal(ulyssesTableEntry(&args, 2, &length, &slot), 0);
  assert_int_equal(length, 5);
  args.mode = ULYSSES_MODE_EXACT;
  args.gatheredLengths = NULL;
  assert_int_equal(ulyssesTableEntry(&args, 1, &length, &slot), 0);
  assert_int_equal(length, 7);
  assert_int_equal(slot, 7);
}

/* A backend that runs the table and keeps the copy launch for inspection. */
typedef struct {
  ulyssesCopyArgs copy;
  int64_t maxRuns;
  int copies;
  int tables;
} captured;

static ulyssesResult_t captureTable(void* context, const ulyssesTableArgs* args) {
  captured* c = context;
  c->tables++;
  simRunTable(args);
  return ulyssesSuccess;
}

static ulyssesResult_t captureCopy(void* context, const ulyssesCopyArgs* args, int64_t maxRuns) {
  captured* c = context;
  c->copy = *args;
  c->maxRuns = maxRuns;
  c->copies++;
  return ulyssesSuccess;
}

/* The table of more ranks than one launch holds, as the pipeline enqueues it
 * and the kernel's per-thread functions write it: each launch continues the
 * previous one's prefix sums. Capacity mode keeps the real and the slot sums
 * apart (lengths clamped to their capacities), so a carry of the wrong sum
 * shows too. */
static void testTableAcrossChunks(void** state) {
  (void)state;
  enum { RANKS = 3 * ULYSSES_TABLE_CHUNK + 5 };
  static int64_t lengths[RANKS], capacities[RANKS], clamped[RANKS];
  uint64_t random = 7;
  ulyssesLayout_t layout = {.size = sizeof(ulyssesLayout_t), .batch = 1, .heads = RANKS, .headDim = 1, .elementSize = 1, .packed = 1,
                            .order = ulyssesOrderBSHD};
  for (int capacityMode = 0; capacityMode <= 1; capacityMode++) {
    for (int r = 0; r < RANKS; r++) {
      lengths[r] = (int64_t)(refRandom(&random) % 9);
      capacities[r] = capacityMode ? (int64_t)(refRandom(&random) % 9) : lengths[r];
      clamped[r] = lengths[r] < capacities[r] ? lengths[r] : capacities[r];
    }
    ulyssesPlan_t plan;
    int64_t deviceLength = 0;
    assert_int_equal(capacityMode ? ulyssesPlanCreateCapacity(&plan, RANKS, 1, capacities,
                                                              &deviceLength, 1, &layout)
                                  : ulyssesPlanCreateExact(&plan, RANKS, 1, lengths, 1, &layout),
                     ulyssesSuccess);
    ulyssesWorkspaceLayout workspaceLayout;
    ulyssesPlanWorkspace(plan, ulyssesOpSeqToHead, &workspaceLayout);
    unsigned char* workspace = calloc(workspaceLayout.totalBytes, 1);
    unsigned char user[8 * RANKS];
    const void* buffers[1] = {user};
    uint32_t status = 0;
    captured c;
    memset(&c, 0, sizeof c);
    ulyssesBackend backend = {.context = &c, .launchTable = captureTable, .launchCopy = captureCopy};
    ulyssesCall call = {.plan = plan,
                        .op = ulyssesOpSeqToHead,
                        .nTensors = 1,
                        .sendbuffs = buffers,
                        .workspace = workspace,
                        .deviceLengths = capacityMode ? lengths : NULL,
                        .deviceStatus = &status};
    assert_int_equal(ulyssesRunStage(&call, ULYSSES_SEND, &backend), ulyssesSuccess);
    assert_int_equal(c.tables, (RANKS + ULYSSES_TABLE_CHUNK - 1) / ULYSSES_TABLE_CHUNK);
    const int64_t* tableLengths = (const int64_t*)(workspace + workspaceLayout.lengthsOffset);
    const int64_t* offsets = (const int64_t*)(workspace + workspaceLayout.offsetsOffset);
    const int64_t* slotOffsets = (const int64_t*)(workspace + workspaceLayout.slotOffsetsOffset);
    int64_t sum = 0, slotSum = 0;
    for (int r = 0; r < RANKS; r++) {
      if (offsets[r] != sum || slotOffsets[r] != slotSum || tableLengths[r] != clamped[r])
        fail_msg("capacity mode %d, rank %d: offset %lld, slot offset %lld, length %lld; "
                 "expected %lld, %lld, %lld", capacityMode, r, (long long)offsets[r],
                 (long long)slotOffsets[r], (long long)tableLengths[r], (long long)sum,
                 (long long)slotSum, (long long)clamped[r]);
      sum += clamped[r];
      slotSum += capacities[r];
    }
    assert_int_equal(offsets[RANKS], sum);
    assert_int_equal(slotOffsets[RANKS], slotSum);
    assert_int_equal(status, capacityMode ? ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY : 0);
    free(workspace);
    ulyssesPlanDestroy(plan);
  }
}

/* Rank's stage on side through the pipeline, its copy launch kept in *c. */
static void captureStage(const exchangeRun* run, int rank, ulyssesSide side, captured* c) {
  const scenario* s = run->s;
  memset(c, 0, sizeof *c);
  ulyssesBackend backend = {.context = c, .launchTable = captureTable, .launchCopy = captureCopy};
  const void* buffers[ULYSSES_MAX_TENSORS];
  for (int t = 0; t < s->nTensors; t++)
    buffers[t] = side == ULYSSES_SEND ? (const void*)run->send[rank][t].data : run->recv[rank][t].data;
  ulyssesCall call = {.plan = run->plans[rank],
                      .op = run->op,
                      .nTensors = s->nTensors,
                      .sendbuffs = buffers,
                      .recvbuffs = (void* const*)buffers,
                      .workspace = run->workspace[rank].data,
                      .deviceLengths = s->capacityMode ? s->lengths : NULL};
  assert_int_equal(ulyssesRunStage(&call, side, &backend), ulyssesSuccess);
}

/* check on both sides of every rank of `scenarios` random scenarios, each op. */
static void forEachStage(uint64_t seed, int scenarios,
                         void (*check)(const exchangeRun* run, int rank, ulyssesSide side)) {
  static const ulyssesOp_t ops[] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq, ulyssesOpAllGather};
  uint64_t random = seed;
  for (int i = 0; i < scenarios; i++) {
    scenario s;
    randomScenario(&s, &random, HARNESS_MAX_RANKS, i % 2);
    for (int k = 0; k < 3; k++) {
      exchangeRun run;
      exchangeSetup(&run, &s, ops[k], (uint64_t)i);
      for (int r = 0; r < s.nRanks; r++) {
        check(&run, r, ULYSSES_SEND);
        check(&run, r, ULYSSES_RECV);
      }
      exchangeTeardown(&run);
    }
  }
}

/* A segment holds batch entries of equal size whose real bytes lead
 * (batch first), or its real bytes lead the whole (sequence first). */
static int segmentByteIsReal(int sequenceFirst, int64_t batch, size_t segmentBytes,
                             size_t realBytes, size_t byte) {
  if (sequenceFirst) return byte < realBytes;
  return byte % (segmentBytes / (size_t)batch) < realBytes / (size_t)batch;
}

static int64_t headBytesOf(const scenario* s, int t) {
  return s->layouts[t].headDim * s->layouts[t].elementSize;
}

/* Tensor t's chunks (not a head sum's), in the order a->rowTiles gives: they
 * take every run exactly once, and a chunk is swept exactly when its runs
 * lie at the strides of a sweep inside one piece: the sweep never moves a run
 * to the wrong place, and is never missed (it is the fast path). */
static void checkChunks(const ulyssesCopyArgs* a, int t, int64_t headBytes, int rank) {
  const ulyssesCopyTensor* x = &a->tensors[t];
  int64_t runs = ulyssesCopyRunCount(a, t);
  unsigned char* taken = calloc((size_t)runs + 1, 1);
  for (int64_t chunk = 0; chunk < ulyssesCopyChunkCount(a, t); chunk++) {
    ulyssesRun first;
    int64_t count, userStride;
    int64_t firstRun = ulyssesChunkFirstRun(a, t, chunk, &count);
    assert_true(count >= 1 && count <= x->chunkRuns && firstRun >= 0 && firstRun + count <= runs);
    for (int64_t k = 0; k < count; k++) taken[firstRun + k]++;
    int sweep = ulyssesChunkSweep(a, t, firstRun, count, &first, &userStride);
    int strided = count > 1;
    ulyssesRun r0 = ulyssesCopyRunAt(a, t, firstRun);
    int64_t stride = x->kind == ULYSSES_COPY_HEAD_SLICE ? x->heads * headBytes : r0.bytes;
    for (int64_t k = 1; k < count && strided; k++) {
      ulyssesRun r = ulyssesCopyRunAt(a, t, firstRun + k);
      strided = r.piece == r0.piece && r.bytes == r0.bytes &&
                r.userOffset == r0.userOffset + k * stride &&
                r.segmentOffset == r0.segmentOffset + k * r0.bytes;
    }
    if (sweep != strided)
      fail_msg("rank %d tensor %d chunk %lld of %lld runs (row tiles %d): sweep %d, runs at the "
               "strides %d", rank, t, (long long)chunk, (long long)count, a->rowTiles, sweep,
               strided);
  }
  for (int64_t i = 0; i < runs; i++)
    if (taken[i] != 1)
      fail_msg("rank %d tensor %d (row tiles %d): run %lld in %d chunks", rank, t, a->rowTiles,
               (long long)i, taken[i]);
  free(taken);
}

static void checkCoverage(const exchangeRun* run, int rank, ulyssesSide side) {
  const scenario* s = run->s;
  captured c;
  captureStage(run, rank, side, &c);
  if (c.copies == 0) return;
  const ulyssesCopyArgs* a = &c.copy;
  for (int t = 0; t < s->nTensors; t++) {
    const ulyssesCopyTensor* x = &a->tensors[t];
    ulyssesSideShape shape = ulyssesPlanSide(run->plans[rank], run->op, t, side);
    assert_int_equal(x->active, !shape.direct);
    if (!x->active) continue;
    int64_t runs = ulyssesCopyRunCount(a, t);
    assert_true(runs <= c.maxRuns);
    const int64_t* slots = s->capacityMode ? s->capacities : s->lengths;
    size_t userBytes = exchangeBufferBytes(s, run->op, t, rank, side == ULYSSES_SEND, slots);
    sideRows rows = exchangeSideRows(run, t, rank, side == ULYSSES_SEND, s->lengths);
    /* Its message group's region (src/plan.h): every member's segments. */
    size_t regionBytes = 0;
    for (int m = x->groupFirst; m < x->groupFirst + x->groupSize; m++)
      for (int p = 0; p < s->nRanks; p++)
        regionBytes += ulyssesPlanSegment(run->plans[rank], run->op, m, side, p).bytes;
    unsigned char* userHits = calloc(userBytes + 1, 1);
    unsigned char* segmentHits = calloc(regionBytes + 1, 1);
    for (int64_t i = 0; i < runs; i++) {
      ulyssesRun r = ulyssesCopyRunAt(a, t, i);
      assert_int_equal(r.bytes % x->wordBytes, 0);
      assert_int_equal(((uintptr_t)x->user + (uintptr_t)r.userOffset) % (uintptr_t)x->wordBytes, 0);
      assert_int_equal(((uintptr_t)x->segments + (uintptr_t)r.segmentOffset) % (uintptr_t)x->wordBytes, 0);
      assert_true(r.userOffset >= 0 && (size_t)(r.userOffset + r.bytes) <= userBytes);
      assert_true(r.segmentOffset >= 0 && (size_t)(r.segmentOffset + r.bytes) <= regionBytes);
      for (int64_t b = 0; b < r.bytes; b++) {
        userHits[r.userOffset + b]++;
        segmentHits[r.segmentOffset + b]++;
      }
    }
    if (x->kind != ULYSSES_COPY_HEAD_SUM)
      for (int rowTiles = 0; rowTiles < 2; rowTiles++) {
        ulyssesCopyArgs ordered = *a;
        ordered.rowTiles = rowTiles;
        checkChunks(&ordered, t, headBytesOf(s, t), rank);
      }
    /* The user side's real rows are covered once (a pack reads a kv head
     * once for every peer that needs it), its padding never. */
    const ulyssesLayout_t* layout = &s->layouts[t];
    int64_t headBytes = layout->headDim * layout->elementSize;
    int64_t rowHeads = (int64_t)rows.rowBytes / headBytes / layout->packed;
    unsigned char* realBytes = calloc(userBytes + 1, 1);
    for (int64_t i = 0; i < rows.batch * rows.realRows; i++)
      for (int64_t h = 0; h < (int64_t)rows.rowBytes / headBytes; h++) {
        unsigned char readers = 1;
        if (x->kind == ULYSSES_COPY_HEAD_SLICE) {
          readers = 0;
          for (int p = 0; p < s->nRanks; p++) {
            int64_t begin, count = ulyssesPeerHeads(layout->heads, layout->queryHeads, s->nRanks, p, &begin);
            readers += h % rowHeads >= begin && h % rowHeads < begin + count;
          }
        }
        memset(realBytes + rowOffset(&rows, i) + h * headBytes, readers, (size_t)headBytes);
      }
    for (size_t b = 0; b < userBytes; b++)
      if (userHits[b] != realBytes[b])
        fail_msg("rank %d tensor %d: user byte %zu moved %d times, expected %d", rank, t, b,
                 userHits[b], realBytes[b]);
    free(realBytes);
    /* Each segment's real rows are covered exactly once; padding never. (A
     * head sum reads its segments in ulyssesSumChunkThread: the exchange tests
     * check it against the reference.) */
    for (int p = 0; p < s->nRanks && x->kind != ULYSSES_COPY_HEAD_SUM; p++) {
      ulyssesSegment_t segment = ulyssesPlanSegment(run->plans[rank], run->op, t, side, p);
      const refShape tensorShape = shapeOf(s, t, s->lengths);
      int64_t begin;
      int64_t segmentRealBytes =
          x->kind == ULYSSES_COPY_HEAD_SLICE
              ? tensorShape.batch * s->lengths[rank] * tensorShape.packed *
                    ulyssesPeerHeads(layout->heads, layout->queryHeads, s->nRanks, p, &begin) * headBytes
              : tensorShape.batch * s->lengths[p] * tensorShape.packed * shape.rowHeads * headBytes;
      for (size_t b = 0; b < segment.bytes; b++) {
        int want = segmentByteIsReal(tensorShape.sbhd, tensorShape.batch, segment.bytes,
                                     (size_t)segmentRealBytes, b);
        if (segmentHits[segment.offset + b] != want)
          fail_msg("rank %d tensor %d peer %d: segment byte %zu moved %d times, expected %d", rank,
                   t, p, b, segmentHits[segment.offset + b], want);
        segmentHits[segment.offset + b] = 0;
      }
    }
    /* Nothing of the region outside its own segments (the other members'). */
    for (size_t b = 0; b < regionBytes && x->kind != ULYSSES_COPY_HEAD_SUM; b++)
      if (segmentHits[b] != 0)
        fail_msg("rank %d tensor %d: region byte %zu, outside its segments, moved %d times", rank,
                 t, b, segmentHits[b]);
    free(userHits);
    free(segmentHits);
  }
}

static void testCopiesCoverEveryByteOnce(void** state) {
  (void)state;
  forEachStage(0xc0ffee, 300, checkCoverage);
}

/* Whether two layouts give the same segments: the same shape. */
static int sameShape(const ulyssesLayout_t* a, const ulyssesLayout_t* b) {
  return a->batch == b->batch && a->heads == b->heads && a->headDim == b->headDim &&
         a->elementSize == b->elementSize && a->packed == b->packed && a->order == b->order &&
         a->queryHeads == b->queryHeads;
}

static void testWorkspaceLayout(void** state) {
  (void)state;
  static const ulyssesOp_t ops[] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq, ulyssesOpAllGather};
  uint64_t random = 0xbeef;
  for (int i = 0; i < 500; i++) {
    scenario s;
    randomScenario(&s, &random, HARNESS_MAX_RANKS, i % 2);
    ulyssesPlan_t plan;
    int64_t deviceLength = 0;
    int rank = i % s.nRanks;
    assert_int_equal(s.capacityMode ? ulyssesPlanCreateCapacity(&plan, s.nRanks, rank, s.capacities,
                                                                &deviceLength, s.nTensors, s.layouts)
                                    : ulyssesPlanCreateExact(&plan, s.nRanks, rank, s.lengths,
                                                             s.nTensors, s.layouts),
                     ulyssesSuccess);
    for (int k = 0; k < 3; k++) {
      ulyssesWorkspaceLayout layout;
      ulyssesPlanWorkspace(plan, ops[k], &layout);
      size_t size;
      assert_int_equal(ulyssesGetWorkspaceSize(plan, ops[k], &size), ulyssesSuccess);
      assert_int_equal(size, layout.totalBytes);
      size_t tableEnd = layout.needTable ? (4 * (size_t)s.nRanks + 2) * sizeof(int64_t) : 0;
      if (s.capacityMode) assert_true(layout.needTable);
      size_t cursor = tableEnd;
      int anyCopy = 0;
      for (int side = 0; side < 2; side++)
        for (int t = 0; t < s.nTensors; t++) {
          if (ulyssesPlanSide(plan, ops[k], t, (ulyssesSide)side).direct) continue;
          anyCopy = 1;
          /* A message group shares a region (tensors of one shape in a
           * row always do), its segments peer by peer, each peer's in
           * tensor order, back to back. */
          int first = t - plan->ops[ops[k]].groupIndex[t];
          int last = first + plan->ops[ops[k]].groupSize[t] - 1;
          if (t > 0 && sameShape(&s.layouts[t - 1], &s.layouts[t])) assert_true(first < t);
          if (first < t) assert_int_equal(layout.regionOffset[side][t], layout.regionOffset[side][first]);
          size_t begin = layout.regionOffset[side][t];
          assert_int_equal(begin % ULYSSES_REGION_ALIGNMENT, 0);
          if (first == t) assert_true(begin >= cursor);
          size_t expected = 0;
          for (int p = 0; p < s.nRanks; p++)
            for (int m = first; m <= last; m++) {
              ulyssesSegment_t segment = ulyssesPlanSegment(plan, ops[k], m, (ulyssesSide)side, p);
              assert_int_equal(segment.place, ulyssesSegmentInWorkspace);
              if (m == t) assert_int_equal(segment.offset, expected);
              expected += segment.bytes;
            }
          if (first == t) cursor = begin + expected;
        }
      assert_true(cursor <= layout.totalBytes);
      /* Exact plans of few ranks carry the table in the copy's parameters. */
      int inlineTable = !s.capacityMode && s.nRanks <= ULYSSES_INLINE_TABLE_RANKS;
      assert_int_equal(layout.needTable, s.capacityMode || (anyCopy && !inlineTable));
      if (!anyCopy && !s.capacityMode) assert_int_equal(layout.totalBytes, 0);
    }
    ulyssesPlanDestroy(plan);
  }
}

/* What rank r sends to p is, byte count for byte count, what p expects from r. */
static void testSegmentsAgreeAcrossRanks(void** state) {
  (void)state;
  static const ulyssesOp_t ops[] = {ulyssesOpSeqToHead, ulyssesOpHeadToSeq, ulyssesOpAllGather};
  uint64_t random = 0xfeed;
  for (int i = 0; i < 300; i++) {
    scenario s;
    randomScenario(&s, &random, HARNESS_MAX_RANKS, i % 2);
    ulyssesPlan_t plans[HARNESS_MAX_RANKS];
    int64_t deviceLength = 0;
    for (int r = 0; r < s.nRanks; r++)
      assert_int_equal(s.capacityMode ? ulyssesPlanCreateCapacity(&plans[r], s.nRanks, r, s.capacities,
                                                                  &deviceLength, s.nTensors, s.layouts)
                                      : ulyssesPlanCreateExact(&plans[r], s.nRanks, r, s.lengths,
                                                               s.nTensors, s.layouts),
                       ulyssesSuccess);
    for (int k = 0; k < 3; k++)
      for (int t = 0; t < s.nTensors; t++)
        for (int r = 0; r < s.nRanks; r++)
          for (int p = 0; p < s.nRanks; p++)
            assert_int_equal(ulyssesPlanSegment(plans[r], ops[k], t, ULYSSES_SEND, p).bytes,
                             ulyssesPlanSegment(plans[p], ops[k], t, ULYSSES_RECV, r).bytes);
    for (int r = 0; r < s.nRanks; r++) ulyssesPlanDestroy(plans[r]);
  }
}

static void testWordBytes(void** state) {
  (void)state;
  assert_int_equal(ulyssesWordBytes(256, (void*)(uintptr_t)0x1000, (void*)(uintptr_t)0x2000), 16);
  assert_int_equal(ulyssesWordBytes(24, (void*)(uintptr_t)0x1000, (void*)(uintptr_t)0x2000), 8);
  assert_int_equal(ulyssesWordBytes(256, (void*)(uintptr_t)0x1004, (void*)(uintptr_t)0x2000), 4);
  assert_int_equal(ulyssesWordBytes(256, (void*)(uintptr_t)0x1000, (void*)(uintptr_t)0x2002), 2);
  assert_int_equal(ulyssesWordBytes(3, (void*)(uintptr_t)0x1000, (void*)(uintptr_t)0x2000), 1);
  assert_int_equal(ulyssesWordBytes(256, NULL, (void*)(uintptr_t)0x2001), 1);
}

static uint32_t bitsOf(float value) {
  uint32_t bits;
  memcpy(&bits, &value, 4);
  return bits;
}

static float floatOf(uint32_t bits) {
  float value;
  memcpy(&value, &bits, 4);
  return value;
}

/* Every binary16 value widens exactly as the compiler's _Float16 does. */
static void testHalfToFloatIsExact(void** state) {
  (void)state;
  for (uint32_t half = 0; half <= 0xffffu; half++) {
    uint16_t bits16 = (uint16_t)half;
    _Float16 h;
    memcpy(&h, &bits16, 2);
    float want = (float)h, got = ulyssesHalfToFloat(half);
    if (want != want) {
      assert_true(got != got);
      continue;
    }
    if (bitsOf(got) != bitsOf(want)) fail_msg("half 0x%04x: 0x%08x, expected 0x%08x", half, bitsOf(got), bitsOf(want));
  }
}

/* Narrowing rounds to nearest even, as the compiler's conversion does: at
 * every half, at every midpoint between neighbours and one float ulp on
 * either side, and at random floats of every magnitude. */
static void checkNarrowing(float value) {
  _Float16 h = (_Float16)value;
  uint16_t want;
  memcpy(&want, &h, 2);
  uint32_t got = ulyssesFloatToHalf(value);
  if (got != want) fail_msg("float 0x%08x (%g): half 0x%04x, expected 0x%04x", bitsOf(value), (double)value, got, want);
}

static void testFloatToHalfRoundsToNearestEven(void** state) {
  (void)state;
  for (uint32_t half = 0; half < 0x7bffu; half++)
    for (uint32_t sign = 0; sign <= 0x8000u; sign += 0x8000u) {
      float low = ulyssesHalfToFloat(half | sign), high = ulyssesHalfToFloat((half + 1) | sign);
      float middle = (low + high) / 2; /* exact: halves have 11 significant bits */
      checkNarrowing(low);
      checkNarrowing(middle);
      checkNarrowing(floatOf(bitsOf(middle) + 1));
      checkNarrowing(floatOf(bitsOf(middle) - 1));
    }
  uint64_t random = 0x7e57;
  for (int i = 0; i < 2000000; i++) {
    float value = floatOf((uint32_t)refRandom(&random));
    if (value == value) checkNarrowing(value);
  }
  checkNarrowing(65504.0f);
  checkNarrowing(65519.996f);
  checkNarrowing(65520.0f);
  checkNarrowing(1e30f);
  checkNarrowing(-1e-30f);
  assert_int_equal(ulyssesFloatToHalf(floatOf(0x7fc00001u)), 0x7e00u);
}

/* bfloat16 keeps the top 16 bits, rounded to nearest even. */
static void testFloatToBfloat16RoundsToNearestEven(void** state) {
  (void)state;
  uint64_t random = 0xbf16;
  for (int i = 0; i < 2000000; i++) {
    uint32_t bits = (uint32_t)refRandom(&random);
    float value = floatOf(bits);
    if (value != value) {
      assert_int_equal(ulyssesFloatToBfloat16(value), 0x7fc0u);
      continue;
    }
    uint32_t truncated = bits >> 16;
    double low = (double)floatOf(truncated << 16), high = (double)floatOf((truncated + 1) << 16);
    /* Past the largest finite bfloat16 the next step up is 2^128: infinity. */
    if (((truncated + 1) & 0x7fffu) == 0x7f80u) high = copysign(ldexp(1.0, 128), (double)value);
    double distanceLow = fabs((double)value - low), distanceHigh = fabs(high - (double)value);
    uint32_t want = distanceLow < distanceHigh || (distanceLow == distanceHigh && (truncated & 1u) == 0)
                        ? truncated : truncated + 1;
    assert_int_equal(ulyssesFloatToBfloat16(value), want);
  }
}

/* A NaN sum is stored as the canonical NaN of each type. */
static void testStoreCanonicalNaN(void** state) {
  (void)state;
  unsigned char out[4];
  float nan = floatOf(0xffc12345u);
  ulyssesStoreFloat(out, nan, ULYSSES_TYPE_FLOAT32);
  assert_int_equal(out[0] | out[1] << 8 | out[2] << 16 | (uint32_t)out[3] << 24, 0x7fc00000u);
  ulyssesStoreFloat(out, nan, ULYSSES_TYPE_FLOAT16);
  assert_int_equal(out[0] | out[1] << 8, 0x7e00);
  ulyssesStoreFloat(out, nan, ULYSSES_TYPE_BFLOAT16);
  assert_int_equal(out[0] | out[1] << 8, 0x7fc0);
  ulyssesStoreFloat(out, -2.5f, ULYSSES_TYPE_BFLOAT16);
  assert_true(ulyssesLoadFloat(out, ULYSSES_TYPE_BFLOAT16) == -2.5f);
}

/* The lanes of a group split a sweep of runs into words,
 * ULYSSES_WORDS_IN_FLIGHT at a time: for every group size, word size, run
 * length and run count, the lanes together copy each byte of every run once,
 * from runs spaced apart to runs back to back, and write nothing else. */
static void testRunsThreadsCopyEachRunOnce(void** state) {
  (void)state;
  enum { MAX_WORDS = 70, MAX_RUNS = 5, GAP = 48, GUARD = 64 };
  static ULYSSES_ALIGNAS(16) unsigned char source[MAX_RUNS * (MAX_WORDS * 16 + GAP) + GUARD];
  static ULYSSES_ALIGNAS(16) unsigned char target[MAX_RUNS * MAX_WORDS * 16 + GUARD];
  for (size_t i = 0; i < sizeof source; i++) source[i] = (unsigned char)(i * 7 + 1);
  for (int wordBytes = 1; wordBytes <= 16; wordBytes *= 2)
    for (int lanes = 1; lanes <= ULYSSES_WARP_LANES; lanes *= 2)
      for (int64_t words = 1; words <= MAX_WORDS; words += words < 20 ? 1 : 17)
        for (int64_t count = 1; count <= MAX_RUNS; count++) {
          int64_t bytes = words * wordBytes, sourceStride = bytes + GAP;
          memset(target, 0, sizeof target);
          ulyssesSweep sweep = {source, sourceStride, target, bytes, count, bytes};
          for (int lane = 0; lane < lanes; lane++)
            ulyssesCopyRunsThread(&sweep, wordBytes, lane, lanes);
          for (int64_t k = 0; k < count; k++)
            if (memcmp(target + k * bytes, source + k * sourceStride, (size_t)bytes) != 0)
              fail_msg("%d lanes, %lld runs of %lld words of %d bytes: run %lld not copied",
                       lanes, (long long)count, (long long)words, wordBytes, (long long)k);
          for (size_t b = (size_t)(count * bytes); b < sizeof target; b++)
            if (target[b] != 0)
              fail_msg("%d lanes, %lld runs of %lld words of %d bytes: byte %zu written", lanes,
                       (long long)count, (long long)words, wordBytes, b);
        }
}

/* The launch rules: the smallest power-of-two group that leaves each lane
 * at most ULYSSES_WORDS_IN_FLIGHT words and, for short runs, reads at least
 * a cache line per round, capped at a warp; chunks as long as the words per
 * lane allow while enough threads get one; long runs keep one run per group. */
static void testLaunchRules(void** state) {
  (void)state;
  for (int wordBytes = 1; wordBytes <= 16; wordBytes *= 2)
    for (int64_t words = 0; words <= 1000; words++) {
      int lanes = ulyssesGroupLanes(words, wordBytes);
      int isShort = words * wordBytes < ULYSSES_SHORT_RUN_BYTES;
      assert_true(lanes >= 1 && lanes <= ULYSSES_WARP_LANES);
      assert_int_equal(lanes & (lanes - 1), 0);
      if (lanes < ULYSSES_WARP_LANES) {
        assert_true((int64_t)lanes * ULYSSES_WORDS_IN_FLIGHT >= words);
        if (isShort) assert_true(lanes * wordBytes >= ULYSSES_LINE_BYTES);
      }
      if (lanes > 1)
        assert_true((int64_t)lanes / 2 * ULYSSES_WORDS_IN_FLIGHT < words ||
                    (isShort && lanes / 2 * wordBytes < ULYSSES_LINE_BYTES));
      for (int64_t runs = 1; runs <= (int64_t)1 << 24; runs *= 5) {
        int64_t chunkRuns = ulyssesChunkRuns(words, wordBytes, runs, lanes);
        int64_t perLane = isShort ? ULYSSES_SHORT_CHUNK_WORDS_PER_LANE : ULYSSES_CHUNK_WORDS_PER_LANE;
        int64_t groups = ULYSSES_FILL_THREADS / lanes;
        assert_true(chunkRuns >= 1);
        if (chunkRuns > 1) {
          assert_true(chunkRuns * words <= lanes * perLane);
          assert_true(runs / chunkRuns >= groups);
          /* The longest chunk that both limits allow. */
          assert_true((chunkRuns + 1) * words > lanes * perLane || runs / (chunkRuns + 1) < groups);
        } else if (words > 0) {
          assert_true(2 * words > lanes * perLane || runs / 2 < groups);
        }
        if (!isShort) assert_int_equal(chunkRuns, 1);
      }
    }
  /* The H200's slowest rows (bench/RESULTS.md): 256-byte runs of 16-byte
   * words, P = 16, 2^20 and 2^16 tokens, 32 heads of 64 bf16. */
  assert_int_equal(ulyssesGroupLanes(16, 16), 8);
  assert_int_equal(ulyssesChunkRuns(16, 16, (int64_t)1 << 20, 8), 16);
  assert_int_equal(ulyssesChunkRuns(16, 16, (int64_t)1 << 16, 8), 2);
  /* 2 KiB runs keep one run per group of 16 lanes. */
  assert_int_equal(ulyssesGroupLanes(128, 16), 16);
  assert_int_equal(ulyssesChunkRuns(128, 16, (int64_t)1 << 20, 16), 1);
}

/* The wave is shared by bytes: q of 32 heads and k, v of 8 (a grouped-query
 * call) get 4 : 1 : 1 of it, each active tensor at least one block, none
 * more than its chunks need, the inactive ones none. */
static void testShareWave(void** state) {
  (void)state;
  ulyssesCopyArgs a;
  memset(&a, 0, sizeof a);
  a.nTensors = 4;
  a.runLanes = 8;
  int64_t bytes[4] = {32 << 20, 8 << 20, 8 << 20, 1 << 20};
  for (int t = 0; t < 4; t++) {
    a.tensors[t].active = t != 3;
    a.tensors[t].chunkRuns = 1;
    a.tensors[t].hostRuns = bytes[t] / 256;
    a.tensors[t].hostBytes = bytes[t];
  }
  assert_int_equal(ulyssesShareWave(&a, 264), 176);
  assert_int_equal(a.tensors[0].gridBlocks, 176);
  assert_int_equal(a.tensors[1].gridBlocks, 44);
  assert_int_equal(a.tensors[2].gridBlocks, 44);
  assert_int_equal(a.tensors[3].gridBlocks, 0);
  /* A tiny tensor keeps one block; a short one no more than its chunks need
   * (32 groups of 8 lanes per block). */
  a.tensors[1].hostBytes = 1;
  a.tensors[2].hostRuns = 3 * 32 + 1;
  ulyssesShareWave(&a, 264);
  assert_int_equal(a.tensors[1].gridBlocks, 1);
  assert_int_equal(a.tensors[2].gridBlocks, 4);
  uint64_t random = 0x5a5e;
  for (int trial = 0; trial < 10000; trial++) {
    a.nTensors = 1 + (int)(refRandom(&random) % ULYSSES_KERNEL_MAX_TENSORS);
    a.runLanes = 1 << (refRandom(&random) % 6);
    int64_t wave = 1 + (int64_t)(refRandom(&random) % 1000), sum = 0, active = 0;
    for (int t = 0; t < a.nTensors; t++) {
      ulyssesCopyTensor* x = &a.tensors[t];
      x->active = refRandom(&random) % 4 != 0;
      x->chunkRuns = 1 + (int64_t)(refRandom(&random) % 9);
      x->hostRuns = (int64_t)(refRandom(&random) % 100000);
      x->hostBytes = x->hostRuns * (1 + (int64_t)(refRandom(&random) % 4096));
    }
    int64_t longest = ulyssesShareWave(&a, wave), seen = 0;
    for (int t = 0; t < a.nTensors; t++) {
      const ulyssesCopyTensor* x = &a.tensors[t];
      int64_t chunks = (x->hostRuns + x->chunkRuns - 1) / x->chunkRuns;
      int64_t need = (chunks + ULYSSES_COPY_THREADS / a.runLanes - 1) / (ULYSSES_COPY_THREADS / a.runLanes);
      if (!x->active) {
        assert_int_equal(x->gridBlocks, 0);
        continue;
      }
      assert_true(x->gridBlocks >= 1 && x->gridBlocks <= wave);
      assert_true(x->gridBlocks <= (need > 0 ? need : 1));
      sum += x->gridBlocks;
      active++;
      if (x->gridBlocks > seen) seen = x->gridBlocks;
    }
    assert_int_equal(longest, seen);
    assert_true(sum <= wave + active);
  }
}

/* Every chunk length and group size moves the same bytes as the runs one by
 * one: a launch of rank r's stage is replayed with chunkRuns 1, 2, 3, 7 and 16,
 * every power-of-two group size and both orders of a head slice's chunks,
 * each against a plain copy of every run (ulyssesCopyRunAt, which
 * testCopiesCoverEveryByteOnce checks), so that whatever the launch rules
 * choose, the sweep and the run paths are right. */
static void checkChunkVariants(const exchangeRun* run, int rank, ulyssesSide side) {
  const scenario* s = run->s;
  captured c;
  captureStage(run, rank, side, &c);
  if (c.copies == 0 || c.copy.launchSums) return;
  static const int64_t chunkRuns[] = {1, 2, 3, 7, 16};
  for (int t = 0; t < s->nTensors; t++) {
    ulyssesCopyArgs a = c.copy;
    ulyssesCopyTensor* x = &a.tensors[t];
    if (!x->active) continue;
    const int64_t* slots = s->capacityMode ? s->capacities : s->lengths;
    /* A pack writes into its message group's region (every member's segments). */
    size_t bytes = side == ULYSSES_SEND ? 0 : exchangeBufferBytes(s, run->op, t, rank, 0, slots);
    for (int m = x->groupFirst; m < x->groupFirst + x->groupSize && side == ULYSSES_SEND; m++)
      for (int p = 0; p < s->nRanks; p++)
        bytes += ulyssesPlanSegment(run->plans[rank], run->op, m, side, p).bytes;
    unsigned char* target = side == ULYSSES_SEND ? x->segments : x->user;
    unsigned char* expected = malloc(bytes + 1);
    memset(target, 0x5a, bytes);
    int wordBytes = a.launchWordBytes;
    for (int64_t i = 0; i < ulyssesCopyRunCount(&a, t); i++) {
      ulyssesRun r = ulyssesCopyRunAt(&a, t, i);
      if (r.bytes == 0) continue;
      if (side == ULYSSES_SEND) memcpy(x->segments + r.segmentOffset, x->user + r.userOffset, (size_t)r.bytes);
      else memcpy(x->user + r.userOffset, x->segments + r.segmentOffset, (size_t)r.bytes);
    }
    memcpy(expected, target, bytes);
    for (int k = 0; k < 10; k++)
      for (int lanes = 1; lanes <= ULYSSES_WARP_LANES; lanes *= 2) {
        x->chunkRuns = chunkRuns[k % 5];
        a.rowTiles = k / 5;
        memset(target, 0x5a, bytes);
        for (int64_t chunk = 0; chunk < ulyssesCopyChunkCount(&a, t); chunk++)
          for (int lane = 0; lane < lanes; lane++)
            ulyssesCopyChunkThread(&a, t, chunk, lane, lanes, wordBytes, 0);
        if (memcmp(target, expected, bytes) != 0)
          fail_msg("rank %d tensor %d side %d: %lld runs per chunk, %d lanes, %d-byte words, "
                   "row tiles %d move other bytes than the runs", rank, t, (int)side,
                   (long long)chunkRuns[k % 5], lanes, wordBytes, a.rowTiles);
      }
    free(expected);
  }
}

static void testChunkVariantsCopyLikeRuns(void** state) {
  (void)state;
  forEachStage(0xc4c4, 80, checkChunkVariants);
}

/* The head sum gives the same bytes whatever the chunk length and the group
 * size: a launch of rank r's unpack with a head sum is replayed, over
 * segments of random bits (NaNs too), with chunkRuns 1, 2, 3, 7 and 16 and
 * every power-of-two group size, each against chunkRuns 1 with one lane (the
 * exchange tests check the launch the pipeline chooses against the
 * reference), so that the rounds, the pairs of replicas, the runs shared
 * between lanes and the chunks split at a batch entry's padding all agree. */
static int sumTensorsChecked, sumChunksRowByRow;

static void checkSumChunkVariants(const exchangeRun* run, int rank, ulyssesSide side) {
  const scenario* s = run->s;
  captured c;
  captureStage(run, rank, side, &c);
  if (c.copies == 0 || !c.copy.launchSums) return;
  static const int64_t chunkRuns[] = {1, 2, 3, 7, 16};
  uint64_t random = 0x5a5a + (uint64_t)rank;
  for (int t = 0; t < s->nTensors; t++) {
    ulyssesCopyArgs a = c.copy;
    ulyssesCopyTensor* x = &a.tensors[t];
    if (!x->active || x->kind != ULYSSES_COPY_HEAD_SUM) continue;
    const int64_t* slots = s->capacityMode ? s->capacities : s->lengths;
    size_t userBytes = exchangeBufferBytes(s, run->op, t, rank, 0, slots), segmentBytes = 0;
    for (int p = 0; p < s->nRanks; p++)
      segmentBytes += ulyssesPlanSegment(run->plans[rank], run->op, t, side, p).bytes;
    /* The wave's share weighs what it reads (every replica) and writes. */
    assert_int_equal(x->hostBytes, (int64_t)(userBytes + segmentBytes));
    for (size_t b = 0; b < segmentBytes; b++) x->segments[b] = (unsigned char)refRandom(&random);
    unsigned char* expected = malloc(userBytes + 1);
    int wordBytes = a.launchWordBytes;
    sumTensorsChecked++;
    x->chunkRuns = 16;
    for (int64_t chunk = 0; chunk < ulyssesCopyChunkCount(&a, t); chunk++) {
      int64_t firstRow = chunk / x->heads * x->chunkRuns, count = ulyssesSumRowParts(&a, x) - firstRow;
      if (count > x->chunkRuns) count = x->chunkRuns;
      sumChunksRowByRow += ulyssesSumRowPart(&a, x, firstRow + count - 1) -
                               ulyssesSumRowPart(&a, x, firstRow) != count - 1;
    }
    x->chunkRuns = 1;
    memset(x->user, 0x5a, userBytes);
    for (int64_t chunk = 0; chunk < ulyssesCopyChunkCount(&a, t); chunk++)
      ulyssesCopyChunkThread(&a, t, chunk, 0, 1, wordBytes, 1);
    memcpy(expected, x->user, userBytes);
    for (int k = 0; k < 5; k++)
      for (int lanes = 1; lanes <= ULYSSES_WARP_LANES; lanes *= 2) {
        x->chunkRuns = chunkRuns[k];
        memset(x->user, 0x5a, userBytes);
        for (int64_t chunk = 0; chunk < ulyssesCopyChunkCount(&a, t); chunk++)
          for (int lane = 0; lane < lanes; lane++)
            ulyssesCopyChunkThread(&a, t, chunk, lane, lanes, wordBytes, 1);
        if (memcmp(x->user, expected, userBytes) != 0)
          fail_msg("rank %d tensor %d: the head sum with %lld runs per chunk and %d lanes "
                   "differs from one run and one lane", rank, t, (long long)chunkRuns[k], lanes);
      }
    free(expected);
  }
}

static void testSumChunkVariants(void** state) {
  (void)state;
  forEachStage(0x5c5c, 120, checkSumChunkVariants);
  /* The scenarios hold head sums, and chunks that cross a batch entry's padding. */
  assert_true(sumTensorsChecked >= 20);
  assert_true(sumChunksRowByRow >= 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testHeadSplitMatchesReference), cmocka_unit_test(testKvHeadMap),
      cmocka_unit_test(testRowOwner), cmocka_unit_test(testRunsThreadsCopyEachRunOnce),
      cmocka_unit_test(testLaunchRules), cmocka_unit_test(testChunkVariantsCopyLikeRuns),
      cmocka_unit_test(testSumChunkVariants),          cmocka_unit_test(testShareWave),
      cmocka_unit_test(testTableEntryClamps),          cmocka_unit_test(testTableAcrossChunks),
      cmocka_unit_test(testCopiesCoverEveryByteOnce),  cmocka_unit_test(testWorkspaceLayout),
      cmocka_unit_test(testSegmentsAgreeAcrossRanks),  cmocka_unit_test(testWordBytes),
      cmocka_unit_test(testHalfToFloatIsExact),        cmocka_unit_test(testFloatToHalfRoundsToNearestEven),
      cmocka_unit_test(testFloatToBfloat16RoundsToNearestEven), cmocka_unit_test(testStoreCanonicalNaN),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
