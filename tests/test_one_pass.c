/* The one-pass exchange's per-thread functions (kernels/one_pass_index.h) run
 * on the CPU for every coordinate of a launch on every simulated rank, each
 * rank writing through its table of the peers' output addresses: every
 * destination byte written exactly once by the ranks together, nothing
 * outside the real rows, and the outputs bit-exact against the CPU
 * reference. Also the path choice (src/one_pass.c) and every reason it falls
 * back to the staged path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* cmocka.h needs the headers above. */
#include <cmocka.h>

#include "one_pass_run.h"

/* How the launch is driven: as the fill sets it, or with other chunk sizes
 * and lane counts, which must not change a byte. */
typedef struct {
  int64_t chunkRuns; /* 0: as filled */
  int laneCount;     /* 0: the fill's runLanes */
} launchShape;

static void fillRank(const exchangeRun* run, int r, const lengthTable* table,
                     unsigned char* peerOutputs[][HARNESS_MAX_RANKS], ulyssesOnePassArgs* args) {
  const scenario* s = run->s;
  const void* sendbuffs[ULYSSES_MAX_TENSORS];
  unsigned char* const* tables[ULYSSES_MAX_TENSORS];
  for (int t = 0; t < s->nTensors; t++) {
    sendbuffs[t] = run->send[r][t].data;
    for (int p = 0; p < s->nRanks; p++) peerOutputs[t][p] = run->recv[p][t].data;
    tables[t] = peerOutputs[t];
  }
  ulyssesOnePassFill(run->plans[r], run->op, sendbuffs, tables, args);
  args->lengths = table->lengths;
  args->offsets = table->offsets;
  args->slotOffsets = table->slotOffsets;
}

/* Every rank's launch, every chunk, every lane, in the words the simulated
 * ranks' kernel takes (the launch's common size, or each tensor's own). */
static void runOnePass(const exchangeRun* run, const lengthTable* table, launchShape shape) {
  const scenario* s = run->s;
  for (int r = 0; r < s->nRanks; r++) {
    unsigned char* peerOutputs[ULYSSES_MAX_TENSORS][HARNESS_MAX_RANKS];
    ulyssesOnePassArgs args;
    fillRank(run, r, table, peerOutputs, &args);
    int laneCount = shape.laneCount > 0 ? shape.laneCount : args.runLanes;
    for (int t = 0; t < s->nTensors; t++) {
      if (shape.chunkRuns > 0) args.tensors[t].chunkRuns = shape.chunkRuns;
      for (int64_t chunk = 0; chunk < ulyssesOnePassChunkCount(&args, t); chunk++)
        for (int lane = 0; lane < laneCount; lane++)
          ulyssesOnePassChunkThread(&args, t, chunk, lane, laneCount, args.launchWordBytes);
    }
  }
}

/* The runs of every rank together cover each real byte of every output
 * exactly once and nothing else, and read only inside the inputs. */
static void checkRunsCoverOnce(const exchangeRun* run, const lengthTable* table) {
  const scenario* s = run->s;
  for (int t = 0; t < s->nTensors; t++) {
    unsigned char* counts[HARNESS_MAX_RANKS];
    for (int p = 0; p < s->nRanks; p++) counts[p] = calloc(run->recv[p][t].bytes + 1, 1);
    for (int r = 0; r < s->nRanks; r++) {
      unsigned char* peerOutputs[ULYSSES_MAX_TENSORS][HARNESS_MAX_RANKS];
      ulyssesOnePassArgs args;
      fillRank(run, r, table, peerOutputs, &args);
      for (int64_t i = 0; i < ulyssesOnePassRunCount(&args, t); i++) {
        ulyssesOnePassRun x = ulyssesOnePassRunAt(&args, t, i);
        assert_true(x.bytes >= 0 && x.peer >= 0 && x.peer < s->nRanks);
        if (x.bytes == 0) continue;
        if (x.inputOffset < 0 || (size_t)(x.inputOffset + x.bytes) > run->send[r][t].bytes)
          fail_msg("rank %d, tensor %d, run %lld reads outside its input", r, t, (long long)i);
        if (x.outputOffset < 0 || (size_t)(x.outputOffset + x.bytes) > run->recv[x.peer][t].bytes)
          fail_msg("rank %d, tensor %d, run %lld writes outside rank %d's output", r, t,
                   (long long)i, x.peer);
        for (int64_t k = 0; k < x.bytes; k++) counts[x.peer][x.outputOffset + k]++;
      }
    }
    for (int p = 0; p < s->nRanks; p++) {
      unsigned char* real = onePassRealBytes(run, table, p, t);
      for (size_t k = 0; k < run->recv[p][t].bytes; k++)
        if (counts[p][k] != real[k])
          fail_msg("op %d, rank %d's output of tensor %d, byte %zu: written %d times, expected %d",
                   (int)run->op, p, t, k, counts[p][k], real[k]);
      free(real);
      free(counts[p]);
    }
  }
}

/* One scenario and op, every launch shape; deviceLengths (capacity mode: the
 * raw lengths the ranks publish, NULL for s->lengths) and the status bits
 * the table must report. Returns 0 where the op needs the head sum. */
static int checkOnePass(const scenario* s, ulyssesOp_t op, uint64_t seed,
                        const int64_t* deviceLengths, uint32_t expectedStatus) {
  static const launchShape shapes[] = {{0, 0}, {1, 1}, {5, 3}, {64, 32}};
  for (size_t v = 0; v < sizeof shapes / sizeof shapes[0]; v++) {
    exchangeRun run;
    exchangeSetup(&run, s, op, seed);
    if (onePassNeedsHeadSum(&run)) {
      exchangeTeardown(&run);
      return 0;
    }
    if (deviceLengths != NULL)
      memcpy(run.deviceLengths, deviceLengths, sizeof(int64_t) * (size_t)s->nRanks);
    for (int p = 0; p < s->nRanks; p++)
      for (int t = 0; t < s->nTensors; t++)
        memset(run.recv[p][t].data, ONE_PASS_UNTOUCHED, run.recv[p][t].bytes);
    lengthTable table;
    onePassBuildTable(&run, &table);
    assert_int_equal(table.status, expectedStatus);
    if (v == 0) checkRunsCoverOnce(&run, &table);
    runOnePass(&run, &table, shapes[v]);
    exchangeCheck(&run, table.lengths);
    onePassCheckPadding(&run, &table);
    exchangeTeardown(&run);
  }
  return 1;
}

static void setLengths(scenario* s, int nRanks, const int64_t* lengths, int slack) {
  s->nRanks = nRanks;
  for (int r = 0; r < nRanks; r++) {
    s->lengths[r] = lengths[r];
    s->capacities[r] = lengths[r] + (slack ? r % 3 : 0);
  }
}

/* Uneven and zero lengths, P = 2 .. 16, batch 1 and 2, both orders, packed,
 * several tensors, kv heads replicated over ranks, both modes. */
static void testOnePassMatchesReference(void** state) {
  (void)state;
  static const int64_t lengths[16] = {3, 0, 5, 1, 0, 7, 2, 4, 1, 6, 0, 3, 2, 5, 1, 2};
  static const int rankCounts[] = {2, 3, 4, 8, 16};
  int checked = 0;
  for (size_t n = 0; n < sizeof rankCounts / sizeof rankCounts[0]; n++)
    for (int capacityMode = 0; capacityMode <= 1; capacityMode++)
      for (int64_t batch = 1; batch <= 2; batch++)
        for (int order = 0; order <= 1; order++) {
          scenario s;
          memset(&s, 0, sizeof s);
          int nRanks = rankCounts[n];
          setLengths(&s, nRanks, lengths, 1);
          s.capacityMode = capacityMode;
          ulyssesOrder_t o = order ? ulyssesOrderSBHD : ulyssesOrderBSHD;
          s.nTensors = 4;
          s.layouts[0] = onePassLayout(batch, 2 * nRanks + 1, 3, 2, 1, o); /* uneven head split */
          s.layouts[1] = onePassLayout(batch, nRanks, 2, 4, 3, o);         /* packed q/k/v */
          s.layouts[2] = onePassKvLayout(batch, 1, 2 * nRanks, 4, o); /* one kv head, every rank */
          s.layouts[3] = onePassLayout(batch, 1, 5, 1, 1, o);         /* fewer heads than ranks */
          for (int op = 0; op < ULYSSES_OP_COUNT; op++)
            checked += checkOnePass(&s, (ulyssesOp_t)op, (uint64_t)(n * 97 + (size_t)op), NULL, 0);
          /* head -> seq without the shared kv tensor takes one pass too. */
          s.nTensors = 2;
          s.layouts[1] =
              onePassKvLayout(batch, nRanks, 2 * nRanks, 4, o); /* one kv head per rank */
          checked += checkOnePass(&s, ulyssesOpHeadToSeq, (uint64_t)n, NULL, 0);
        }
  /* Every (P, mode, batch, order): seq -> head, all-gather, plain head -> seq. */
  assert_int_equal(checked, 5 * 2 * 2 * 2 * 3);
}

/* Capacity mode with raw lengths above their capacity or negative: clamped
 * as the staged path clamps them, the status bits set, nothing written
 * outside the slots. */
static void testOnePassClampsLengths(void** state) {
  (void)state;
  static const int64_t capacities[8] = {4, 2, 0, 5, 3, 1, 6, 2};
  int64_t raw[8] = {4, 9, 3, -2, 1, 1, 7, 0};
  for (int order = 0; order <= 1; order++) {
    scenario s;
    memset(&s, 0, sizeof s);
    s.nRanks = 8;
    s.capacityMode = 1;
    for (int r = 0; r < 8; r++) {
      s.capacities[r] = capacities[r];
      s.lengths[r] = raw[r] < 0 ? 0 : raw[r] > capacities[r] ? capacities[r] : raw[r];
    }
    ulyssesOrder_t o = order ? ulyssesOrderSBHD : ulyssesOrderBSHD;
    s.nTensors = 2;
    s.layouts[0] = onePassLayout(2, 8, 4, 2, 1, o);
    s.layouts[1] = onePassKvLayout(2, 2, 8, 4, o);
    for (int op = 0; op < ULYSSES_OP_COUNT; op++)
      checkOnePass(&s, (ulyssesOp_t)op, 11, raw,
                   ULYSSES_STATUS_LENGTH_ABOVE_CAPACITY | ULYSSES_STATUS_NEGATIVE_LENGTH);
  }
}

/* Random scenarios (1 to 16 ranks, every element size, misaligned buffers). */
static void testOnePassRandomScenarios(void** state) {
  (void)state;
  uint64_t random = 0x0e1a55;
  for (int trial = 0; trial < 150; trial++) {
    scenario s;
    randomScenario(&s, &random, HARNESS_MAX_RANKS, trial % 2);
    for (int op = 0; op < ULYSSES_OP_COUNT; op++)
      checkOnePass(&s, (ulyssesOp_t)op, (uint64_t)trial, NULL, 0);
  }
}

/*------------------------------------------------------------------------
 * The path choice.
 *----------------------------------------------------------------------*/
typedef struct {
  ulyssesPlan_t plan;
  ulyssesSymmetricRegistry registry;
  ulyssesOnePassSupport support;
  unsigned char* pool; /* stands for one ulyssesMemAlloc allocation */
  size_t poolBytes;
  void* outputs[ULYSSES_MAX_TENSORS];
} pathCase;

/* Four ranks, a plain tensor and a kv tensor whose one head every rank reads;
 * every condition for one pass met, the outputs at the pool's start. */
static void pathSetup(pathCase* c) {
  memset(c, 0, sizeof *c);
  static const int64_t lengths[4] = {3, 0, 2, 5};
  ulyssesLayout_t layouts[2] = {onePassLayout(1, 8, 4, 2, 1, ulyssesOrderBSHD),
                                onePassKvLayout(1, 1, 8, 4, ulyssesOrderBSHD)};
  assert_int_equal(ulyssesPlanCreateExact(&c->plan, 4, 1, lengths, 2, layouts), ulyssesSuccess);
  c->poolBytes = 1 << 16;
  c->pool = malloc(c->poolBytes);
  assert_int_equal(ulyssesSymmetricAdd(&c->registry, c->pool, c->poolBytes, (void*)c),
                   ulyssesSuccess);
  c->outputs[0] = c->pool;
  c->outputs[1] = c->pool + c->poolBytes / 2;
  ulyssesOnePassSupport support = {1, 1, 22809, 22809, 1, 4, 4};
  c->support = support;
}

static void pathTeardown(pathCase* c) {
  ulyssesSymmetricClear(&c->registry);
  ulyssesPlanDestroy(c->plan);
  free(c->pool);
}

/* The path op takes, and that its reason contains phrase. */
static void expectPath(const pathCase* c, ulyssesOp_t op, int path, const char* phrase) {
  const char* reason = NULL;
  int chosen =
      ulyssesChooseExchangePath(&c->support, &c->registry, c->plan, op, c->outputs, &reason);
  assert_non_null(reason);
  if (chosen != path || strstr(reason, phrase) == NULL)
    fail_msg("op %d: path %d (\"%s\"), expected path %d saying \"%s\"", (int)op, chosen, reason,
             path, phrase);
}

static void testPathOnePassWhenEverythingQualifies(void** state) {
  (void)state;
  pathCase c;
  pathSetup(&c);
  expectPath(&c, ulyssesOpSeqToHead, ULYSSES_PATH_ONE_PASS, "one pass:");
  expectPath(&c, ulyssesOpAllGather, ULYSSES_PATH_ONE_PASS, "one pass:");
  /* An output that ends exactly where the allocation ends still lies in it. */
  size_t bytes = ulyssesPlanUserBytes(c.plan, ulyssesOpSeqToHead, 1, ULYSSES_RECV);
  c.outputs[1] = c.pool + c.poolBytes - bytes;
  expectPath(&c, ulyssesOpSeqToHead, ULYSSES_PATH_ONE_PASS, "one pass:");
  pathTeardown(&c);
}

/* Each condition broken alone gives its own reason; several broken give the
 * first in the documented order. */
static void testPathFallbackReasons(void** state) {
  (void)state;
  /* Fields: enabled, kernelReady, compiled and runtime NCCL, devCommReady, LSA ranks, ranks. */
  static const struct {
    ulyssesOnePassSupport support;
    const char* phrase;
  } cases[] = {
      {{0, 1, 22809, 22809, 1, 4, 4}, "one pass is off"},
      {{0, 1, 22809, 22809, 1, 2, 4}, "one pass is off"}, /* two broken: the first is said */
      {{1, 0, 22809, 22809, 1, 4, 4}, "no one-pass kernel"},
      {{1, 1, 22703, 22703, 1, 4, 4}, "without the device API"},
      /* Built against 2.28: that release only, newer or older. */
      {{1, 1, 22809, 22900, 1, 4, 4}, "not the 2.28 release"},
      {{1, 1, 22809, 22808, 1, 4, 4}, "not the 2.28 release"},
      /* From 2.29: a loaded NCCL at least the compiled one. */
      {{1, 1, 23203, 23202, 1, 4, 4}, "older than the one"},
      {{1, 1, 22900, 22809, 1, 4, 4}, "older than the one"},
      {{1, 1, 22809, 22809, 1, 1, 1}, "single rank"},
      {{1, 1, 22809, 22809, 0, 4, 4}, "ncclDevCommCreate failed"},
      {{1, 1, 22809, 22809, 1, 2, 4}, "LSA team is smaller"}, /* two nodes of two GPUs */
  };
  pathCase c;
  pathSetup(&c);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    c.support = cases[i].support;
    expectPath(&c, ulyssesOpSeqToHead, ULYSSES_PATH_STAGED, cases[i].phrase);
  }
  pathTeardown(&c);

  /* The versions NCCL runs: 2.28 on itself, from 2.29 anything at least as new. */
  static const int granted[][2] = {{22809, 22809}, {22900, 22900}, {22900, 23203},
                                   {23203, 23203}, {23203, 23300}};
  pathSetup(&c);
  for (size_t i = 0; i < sizeof granted / sizeof granted[0]; i++) {
    c.support.compiledNcclVersion = granted[i][0];
    c.support.runtimeNcclVersion = granted[i][1];
    expectPath(&c, ulyssesOpSeqToHead, ULYSSES_PATH_ONE_PASS, "one pass:");
  }
  pathTeardown(&c);

  pathSetup(&c);
  /* The kv tensor's one head comes back from every rank: summed. */
  expectPath(&c, ulyssesOpHeadToSeq, ULYSSES_PATH_STAGED, "sums their replicas");
  pathTeardown(&c);

  pathSetup(&c);
  unsigned char ordinary[4096];
  c.outputs[1] = ordinary;
  expectPath(&c, ulyssesOpSeqToHead, ULYSSES_PATH_STAGED, "not inside memory from ulyssesMemAlloc");
  /* Straddling the allocation's end is outside it too. */
  size_t bytes = ulyssesPlanUserBytes(c.plan, ulyssesOpSeqToHead, 1, ULYSSES_RECV);
  c.outputs[1] = c.pool + c.poolBytes - bytes + 1;
  expectPath(&c, ulyssesOpSeqToHead, ULYSSES_PATH_STAGED, "not inside memory from ulyssesMemAlloc");
  /* After the allocation is freed its memory no longer qualifies. */
  c.outputs[1] = c.pool;
  void* window = NULL;
  assert_int_equal(ulyssesSymmetricRemove(&c.registry, c.pool, &window), 1);
  assert_ptr_equal(window, &c);
  expectPath(&c, ulyssesOpSeqToHead, ULYSSES_PATH_STAGED, "not inside memory from ulyssesMemAlloc");
  pathTeardown(&c);
}

/* A rank whose output is empty (no rows, or no heads) has no window for the
 * others to address it by: every rank falls back, also those whose own
 * output is not empty, since the choice must be the same everywhere. */
static void testPathEmptyOutputFallsBack(void** state) {
  (void)state;
  static const int64_t noRows[4] = {0, 0, 0, 0}, oneEmpty[4] = {3, 0, 2, 1};
  ulyssesLayout_t layout = onePassLayout(1, 8, 4, 2, 1, ulyssesOrderBSHD);
  ulyssesLayout_t fewHeads = onePassLayout(1, 3, 4, 2, 1, ulyssesOrderBSHD);
  ulyssesSymmetricRegistry registry;
  memset(&registry, 0, sizeof registry);
  ulyssesOnePassSupport support = {1, 1, 22809, 22809, 1, 4, 4};
  void* outputs[1] = {NULL};
  const char* reason;
  struct {
    const int64_t* lengths;
    const ulyssesLayout_t* layout;
    ulyssesOp_t op;
  } cases[] = {{noRows, &layout, ulyssesOpSeqToHead},
               {oneEmpty, &layout, ulyssesOpHeadToSeq},
               {oneEmpty, &fewHeads, ulyssesOpSeqToHead}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int rank = 0; rank < 4; rank++) {
      ulyssesPlan_t plan;
      assert_int_equal(ulyssesPlanCreateExact(&plan, 4, rank, cases[i].lengths, 1, cases[i].layout),
                       ulyssesSuccess);
      assert_int_equal(
          ulyssesChooseExchangePath(&support, &registry, plan, cases[i].op, outputs, &reason),
          ULYSSES_PATH_STAGED);
      assert_non_null(strstr(reason, "receives nothing"));
      ulyssesPlanDestroy(plan);
    }
}

/* The registry: overlapping allocations are refused, serials count up (the
 * k-th collective allocation has the same serial on every rank), a removed
 * one is found no more. */
static void testSymmetricRegistry(void** state) {
  (void)state;
  static unsigned char memory[1024];
  ulyssesSymmetricRegistry registry;
  memset(&registry, 0, sizeof registry);
  for (int i = 0; i < 16; i++)
    assert_int_equal(ulyssesSymmetricAdd(&registry, memory + 64 * i, 64, NULL), ulyssesSuccess);
  assert_int_equal(ulyssesSymmetricAdd(&registry, memory + 32, 64, NULL),
                   ulyssesErrorInvalidArgument);
  for (int i = 0; i < 16; i++) {
    const ulyssesSymmetricBuffer* found = ulyssesSymmetricFind(&registry, memory + 64 * i + 8, 56);
    assert_non_null(found);
    assert_int_equal(found->serial, i);
    assert_null(ulyssesSymmetricFind(&registry, memory + 64 * i + 8, 57));
  }
  void* window;
  assert_int_equal(ulyssesSymmetricRemove(&registry, memory + 64, &window), 1);
  assert_int_equal(ulyssesSymmetricRemove(&registry, memory + 64, &window), 0);
  assert_null(ulyssesSymmetricFind(&registry, memory + 64, 1));
  assert_non_null(ulyssesSymmetricFind(&registry, memory + 128, 64));
  /* A huge size never wraps around the address space into a match. */
  assert_null(ulyssesSymmetricFind(&registry, memory + 128, SIZE_MAX));
  ulyssesSymmetricClear(&registry);
  assert_int_equal(registry.count, 0);
}

/* The publish step's reading side: the table from the published lengths
 * (capacity mode, clamped with the staged path's bits) or the host's (exact
 * mode, whatever was published), and the verdict on the outputs'
 * allocations, the same whichever rank reads the slots. */
static void testResolveFromPublishedSlots(void** state) {
  (void)state;
  ulyssesOnePassSync sync;
  memset(&sync, 0, sizeof sync);
  sync.capacityMode = 1;
  int64_t capacities[4] = {4, 2, 0, 3};
  memcpy(sync.slotLengths, capacities, sizeof capacities);
  ulyssesOnePassSlot slots[4];
  memset(slots, 0, sizeof slots);
  int64_t published[4] = {4, 1, 0, 2};
  for (int p = 0; p < 4; p++) {
    slots[p].length = published[p];
    slots[p].serials[0] = 7;
    slots[p].serials[1] = 9;
    slots[p].offsets[0] = 64 * (uint64_t)p;
  }
  int64_t lengths[4], offsets[5], slotOffsets[5];
  assert_int_equal(ulyssesOnePassResolve(&sync, 4, 2, slots, lengths, offsets, slotOffsets), 0);
  int64_t expectLengths[4] = {4, 1, 0, 2}, expectOffsets[5] = {0, 4, 5, 5, 7},
          expectSlots[5] = {0, 4, 6, 6, 9};
  assert_memory_equal(lengths, expectLengths, sizeof lengths);
  assert_memory_equal(offsets, expectOffsets, sizeof offsets);
  assert_memory_equal(slotOffsets, expectSlots, sizeof slotOffsets);
  /* Above its capacity, and negative: clamped, with the bits. */
  slots[1].length = 3;
  slots[3].length = -1;
  assert_int_equal(ulyssesOnePassResolve(&sync, 4, 2, slots, lengths, offsets, slotOffsets),
                   ULYSSES_KERNEL_STATUS_ABOVE_CAPACITY | ULYSSES_KERNEL_STATUS_NEGATIVE_LENGTH);
  assert_int_equal(lengths[1], 2);
  assert_int_equal(lengths[3], 0);
  assert_int_equal(offsets[4], 6);
  /* Exact mode: the host's lengths, whatever a slot says. */
  sync.capacityMode = 0;
  assert_int_equal(ulyssesOnePassResolve(&sync, 4, 2, slots, lengths, offsets, slotOffsets), 0);
  assert_memory_equal(lengths, capacities, sizeof lengths);
  /* One rank's output of tensor 1 in another allocation: every rank (they
   * all read these slots) gets the bit; tensors past nTensors are not read. */
  slots[2].serials[1] = 8;
  assert_int_equal(ulyssesOnePassResolve(&sync, 4, 2, slots, lengths, offsets, slotOffsets),
                   ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS);
  assert_int_equal(ulyssesOnePassResolve(&sync, 4, 1, slots, lengths, offsets, slotOffsets), 0);
  slots[0].serials[1] = 8;
  slots[2].serials[1] = 9;
  assert_int_equal(ulyssesOnePassResolve(&sync, 4, 2, slots, lengths, offsets, slotOffsets),
                   ULYSSES_KERNEL_STATUS_ONE_PASS_OUTPUTS);
}

/* The peers' output addresses narrow the word size the host chose. */
static void testNarrowWordsToThePeersAddresses(void** state) {
  (void)state;
  ulyssesOnePassArgs args;
  memset(&args, 0, sizeof args);
  args.nRanks = 3;
  args.nTensors = 2;
  unsigned char* peers[2][3] = {{(unsigned char*)(uintptr_t)0x1000, (unsigned char*)(uintptr_t)0x2010,
                                 (unsigned char*)(uintptr_t)0x3000},
                                {(unsigned char*)(uintptr_t)0x1000, (unsigned char*)(uintptr_t)0x2004,
                                 (unsigned char*)(uintptr_t)0x3002}};
  for (int t = 0; t < 2; t++) {
    args.tensors[t].input = (const unsigned char*)(uintptr_t)0x8000;
    args.tensors[t].headBytes = 256;
    args.tensors[t].wordBytes = 16;
    args.tensors[t].peerOutputs = peers[t];
  }
  ulyssesOnePassNarrowWords(&args);
  assert_int_equal(args.tensors[0].wordBytes, 16);
  assert_int_equal(args.tensors[1].wordBytes, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testOnePassMatchesReference),
      cmocka_unit_test(testOnePassClampsLengths),
      cmocka_unit_test(testOnePassRandomScenarios),
      cmocka_unit_test(testPathOnePassWhenEverythingQualifies),
      cmocka_unit_test(testPathFallbackReasons),
      cmocka_unit_test(testPathEmptyOutputFallsBack),
      cmocka_unit_test(testSymmetricRegistry),
      cmocka_unit_test(testResolveFromPublishedSlots),
      cmocka_unit_test(testNarrowWordsToThePeersAddresses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
