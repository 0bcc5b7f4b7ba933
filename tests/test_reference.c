/*
 * Checks the CPU reference of the Ulysses exchanges: both formulations against
 * hand-written bytes, against each other over random shapes, and the head split
 * against its stated properties.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "reference.h"

enum { maxTestRanks = 16 };

typedef void (*exchangeFunction)(const refShape *shape, const void *const *inputs,
                                 void *const *outputs);

typedef struct formulation {
  const char *name;
  exchangeFunction seqToHead;
  exchangeFunction headToSeq;
  exchangeFunction allGather;
} formulation;

static const formulation formulations[] = {
    {"ref", refSeqToHead, refHeadToSeq, refAllGather},
    {"naive", naiveSeqToHead, naiveHeadToSeq, naiveAllGather},
};

/* One buffer per simulated rank; zero-byte buffers stay NULL, as callers of
 * the exchanges may pass them. */
typedef struct rankBuffers {
  int nRanks;
  void *data[maxTestRanks];
  size_t bytes[maxTestRanks];
} rankBuffers;

typedef enum bufferSide { sequenceSide, headSide, gatheredSide } bufferSide;

static size_t sideBytes(const refShape *shape, bufferSide side, int rank)
{
  switch (side) {
  case sequenceSide:
    return refSeqBytes(shape, rank);
  case headSide:
    return refHeadSideBytes(shape, rank);
  case gatheredSide:
    return refGatherBytes(shape);
  }
  return 0;
}

/* Outputs start filled with `poison` so that a byte an exchange forgets to
 * write shows up as a mismatch. */
static rankBuffers allocateBuffers(const refShape *shape, bufferSide side, unsigned char poison)
{
  rankBuffers buffers = {.nRanks = shape->nRanks};
  assert_true(shape->nRanks <= maxTestRanks);
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    buffers.bytes[rank] = sideBytes(shape, side, rank);
    buffers.data[rank] = NULL;
    if (buffers.bytes[rank] > 0) {
      buffers.data[rank] = malloc(buffers.bytes[rank]);
      assert_non_null(buffers.data[rank]);
      memset(buffers.data[rank], poison, buffers.bytes[rank]);
    }
  }
  return buffers;
}

static rankBuffers allocatePatternBuffers(const refShape *shape, bufferSide side, uint64_t seed)
{
  rankBuffers buffers = allocateBuffers(shape, side, 0);
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    if (buffers.bytes[rank] > 0) {
      refFillPattern(buffers.data[rank], buffers.bytes[rank], seed + (uint64_t)rank);
    }
  }
  return buffers;
}

static void freeBuffers(rankBuffers *buffers)
{
  for (int rank = 0; rank < buffers->nRanks; ++rank) {
    free(buffers->data[rank]);
    buffers->data[rank] = NULL;
  }
}

/* The exchanges take read-only inputs; C does not convert void ** to
 * const void *const * on its own. */
typedef struct constBuffers {
  const void *data[maxTestRanks];
} constBuffers;

static constBuffers asInputs(const rankBuffers *buffers)
{
  constBuffers inputs;
  for (int rank = 0; rank < buffers->nRanks; ++rank) {
    inputs.data[rank] = buffers->data[rank];
  }
  return inputs;
}

static void assertBytesEqual(const void *actual, size_t actualBytes, const void *expected,
                             size_t expectedBytes)
{
  assert_int_equal(actualBytes, expectedBytes);
  if (expectedBytes > 0) {
    assert_memory_equal(actual, expected, expectedBytes);
  }
}

static void assertBuffersEqual(const rankBuffers *actual, const rankBuffers *expected)
{
  assert_int_equal(actual->nRanks, expected->nRanks);
  for (int rank = 0; rank < actual->nRanks; ++rank) {
    assertBytesEqual(actual->data[rank], actual->bytes[rank], expected->data[rank],
                     expected->bytes[rank]);
  }
}

/* ---------------------------------------------------------------------------
 * Hand-written cases. Input bytes encode where they came from (rank, position,
 * batch, t, head), so the expected arrays can be read off the contract.
 * ------------------------------------------------------------------------- */

typedef struct expectedBytes {
  const unsigned char *data; /* NULL when empty */
  size_t bytes;
} expectedBytes;

#define EXPECTED(array) {(array), sizeof(array)}
#define EXPECTED_EMPTY {NULL, 0}

typedef struct handCase {
  refShape shape;
  expectedBytes sequence[maxTestRanks];
  expectedBytes head[maxTestRanks];
  expectedBytes gathered;
} handCase;

static rankBuffers copyOfExpected(const refShape *shape, const expectedBytes *perRank,
                                  bufferSide side)
{
  rankBuffers buffers = allocateBuffers(shape, side, 0);
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    assert_int_equal(buffers.bytes[rank], perRank[rank].bytes);
    if (perRank[rank].bytes > 0) {
      memcpy(buffers.data[rank], perRank[rank].data, perRank[rank].bytes);
    }
  }
  return buffers;
}

static void checkHandCase(const handCase *hand)
{
  const refShape *shape = &hand->shape;
  expectedBytes gatheredPerRank[maxTestRanks];
  for (int rank = 0; rank < shape->nRanks; ++rank) {
    gatheredPerRank[rank] = hand->gathered;
  }
  /* copyOfExpected also checks the ref*Bytes sizes against the literal ones. */
  rankBuffers sequence = copyOfExpected(shape, hand->sequence, sequenceSide);
  rankBuffers head = copyOfExpected(shape, hand->head, headSide);
  rankBuffers gathered = copyOfExpected(shape, gatheredPerRank, gatheredSide);
  const constBuffers sequenceInputs = asInputs(&sequence);
  const constBuffers headInputs = asInputs(&head);

  for (size_t f = 0; f < sizeof formulations / sizeof formulations[0]; ++f) {
    const formulation *exchange = &formulations[f];

    rankBuffers headOut = allocateBuffers(shape, headSide, 0xEE);
    exchange->seqToHead(shape, sequenceInputs.data, headOut.data);
    assertBuffersEqual(&headOut, &head);
    freeBuffers(&headOut);

    rankBuffers sequenceOut = allocateBuffers(shape, sequenceSide, 0xEE);
    exchange->headToSeq(shape, headInputs.data, sequenceOut.data);
    assertBuffersEqual(&sequenceOut, &sequence);
    freeBuffers(&sequenceOut);

    rankBuffers gatheredOut = allocateBuffers(shape, gatheredSide, 0xEE);
    exchange->allGather(shape, sequenceInputs.data, gatheredOut.data);
    assertBuffersEqual(&gatheredOut, &gathered);
    freeBuffers(&gatheredOut);
  }
  freeBuffers(&sequence);
  freeBuffers(&head);
  freeBuffers(&gathered);
}

/* P=2, H=3: rank 0 owns heads {0,1}, rank 1 owns head {2}. Byte = 0x40*r +
 * 0x10*s + h. */
static void testHandUnevenHeadsAndLengths(void **state)
{
  (void)state;
  static const int64_t lengths[] = {1, 2};
  static const unsigned char sequence0[] = {0x00, 0x01, 0x02};
  static const unsigned char sequence1[] = {0x40, 0x41, 0x42, 0x50, 0x51, 0x52};
  static const unsigned char head0[] = {0x00, 0x01, 0x40, 0x41, 0x50, 0x51};
  static const unsigned char head1[] = {0x02, 0x42, 0x52};
  static const unsigned char gathered[] = {0x00, 0x01, 0x02, 0x40, 0x41, 0x42, 0x50, 0x51, 0x52};
  const handCase hand = {
      .shape = {.nRanks = 2, .lengths = lengths, .batch = 1, .heads = 3, .headDim = 1,
                .elementSize = 1, .packed = 1, .sbhd = 0},
      .sequence = {EXPECTED(sequence0), EXPECTED(sequence1)},
      .head = {EXPECTED(head0), EXPECTED(head1)},
      .gathered = EXPECTED(gathered),
  };
  checkHandCase(&hand);
}

/* B=2 in both orders, same logical data. Byte = 0x40*r + 0x10*s + 4*b + h. */
static void testHandBatchTwoSequenceFirst(void **state)
{
  (void)state;
  static const int64_t lengths[] = {2, 1};
  /* SBHD: [L_r, B, 1, 2, 1] */
  static const unsigned char sequence0[] = {0x00, 0x01, 0x04, 0x05, 0x10, 0x11, 0x14, 0x15};
  static const unsigned char sequence1[] = {0x40, 0x41, 0x44, 0x45};
  /* SBHD: [Ltot=3, B, 1, 1, 1] */
  static const unsigned char head0[] = {0x00, 0x04, 0x10, 0x14, 0x40, 0x44};
  static const unsigned char head1[] = {0x01, 0x05, 0x11, 0x15, 0x41, 0x45};
  static const unsigned char gathered[] = {0x00, 0x01, 0x04, 0x05, 0x10, 0x11,
                                           0x14, 0x15, 0x40, 0x41, 0x44, 0x45};
  const handCase hand = {
      .shape = {.nRanks = 2, .lengths = lengths, .batch = 2, .heads = 2, .headDim = 1,
                .elementSize = 1, .packed = 1, .sbhd = 1},
      .sequence = {EXPECTED(sequence0), EXPECTED(sequence1)},
      .head = {EXPECTED(head0), EXPECTED(head1)},
      .gathered = EXPECTED(gathered),
  };
  checkHandCase(&hand);
}

static void testHandBatchTwoBatchFirst(void **state)
{
  (void)state;
  static const int64_t lengths[] = {2, 1};
  /* BSHD: [B, L_r, 1, 2, 1] */
  static const unsigned char sequence0[] = {0x00, 0x01, 0x10, 0x11, 0x04, 0x05, 0x14, 0x15};
  static const unsigned char sequence1[] = {0x40, 0x41, 0x44, 0x45};
  /* BSHD: [B, Ltot=3, 1, 1, 1] */
  static const unsigned char head0[] = {0x00, 0x10, 0x40, 0x04, 0x14, 0x44};
  static const unsigned char head1[] = {0x01, 0x11, 0x41, 0x05, 0x15, 0x45};
  static const unsigned char gathered[] = {0x00, 0x01, 0x10, 0x11, 0x40, 0x41,
                                           0x04, 0x05, 0x14, 0x15, 0x44, 0x45};
  const handCase hand = {
      .shape = {.nRanks = 2, .lengths = lengths, .batch = 2, .heads = 2, .headDim = 1,
                .elementSize = 1, .packed = 1, .sbhd = 0},
      .sequence = {EXPECTED(sequence0), EXPECTED(sequence1)},
      .head = {EXPECTED(head0), EXPECTED(head1)},
      .gathered = EXPECTED(gathered),
  };
  checkHandCase(&hand);
}

/* Packed q/k/v with uneven lengths (the seed forbids this; the contract
 * allows it). Byte = 0x40*r + 0x10*s + 4*t + h. */
static void testHandPackedUnevenLengths(void **state)
{
  (void)state;
  static const int64_t lengths[] = {2, 1};
  /* [B=1, L_r, 3, 2, 1] */
  static const unsigned char sequence0[] = {0x00, 0x01, 0x04, 0x05, 0x08, 0x09,
                                            0x10, 0x11, 0x14, 0x15, 0x18, 0x19};
  static const unsigned char sequence1[] = {0x40, 0x41, 0x44, 0x45, 0x48, 0x49};
  /* [B=1, Ltot=3, 3, 1, 1] */
  static const unsigned char head0[] = {0x00, 0x04, 0x08, 0x10, 0x14, 0x18, 0x40, 0x44, 0x48};
  static const unsigned char head1[] = {0x01, 0x05, 0x09, 0x11, 0x15, 0x19, 0x41, 0x45, 0x49};
  static const unsigned char gathered[] = {0x00, 0x01, 0x04, 0x05, 0x08, 0x09, 0x10, 0x11, 0x14,
                                           0x15, 0x18, 0x19, 0x40, 0x41, 0x44, 0x45, 0x48, 0x49};
  const handCase hand = {
      .shape = {.nRanks = 2, .lengths = lengths, .batch = 1, .heads = 2, .headDim = 1,
                .elementSize = 1, .packed = 3, .sbhd = 0},
      .sequence = {EXPECTED(sequence0), EXPECTED(sequence1)},
      .head = {EXPECTED(head0), EXPECTED(head1)},
      .gathered = EXPECTED(gathered),
  };
  checkHandCase(&hand);
}

/* P=3 > H=2: rank 2 owns no heads, rank 1 holds an empty slice, E=2.
 * Element v = 0x20*r + 8*s + h is stored as bytes {v, 0x80|v}. */
static void testHandMoreRanksThanHeads(void **state)
{
  (void)state;
  static const int64_t lengths[] = {1, 0, 2};
  static const unsigned char sequence0[] = {0x00, 0x80, 0x01, 0x81};
  static const unsigned char sequence2[] = {0x40, 0xC0, 0x41, 0xC1, 0x48, 0xC8, 0x49, 0xC9};
  static const unsigned char head0[] = {0x00, 0x80, 0x40, 0xC0, 0x48, 0xC8};
  static const unsigned char head1[] = {0x01, 0x81, 0x41, 0xC1, 0x49, 0xC9};
  static const unsigned char gathered[] = {0x00, 0x80, 0x01, 0x81, 0x40, 0xC0,
                                           0x41, 0xC1, 0x48, 0xC8, 0x49, 0xC9};
  const handCase hand = {
      .shape = {.nRanks = 3, .lengths = lengths, .batch = 1, .heads = 2, .headDim = 1,
                .elementSize = 2, .packed = 1, .sbhd = 0},
      .sequence = {EXPECTED(sequence0), EXPECTED_EMPTY, EXPECTED(sequence2)},
      .head = {EXPECTED(head0), EXPECTED(head1), EXPECTED_EMPTY},
      .gathered = EXPECTED(gathered),
  };
  checkHandCase(&hand);
}

/* Every buffer is empty (and NULL): the exchanges must not touch any. */
static void testHandAllSlicesEmpty(void **state)
{
  (void)state;
  static const int64_t lengths[] = {0, 0, 0, 0};
  const handCase hand = {
      .shape = {.nRanks = 4, .lengths = lengths, .batch = 2, .heads = 6, .headDim = 3,
                .elementSize = 4, .packed = 3, .sbhd = 1},
      .sequence = {EXPECTED_EMPTY, EXPECTED_EMPTY, EXPECTED_EMPTY, EXPECTED_EMPTY},
      .head = {EXPECTED_EMPTY, EXPECTED_EMPTY, EXPECTED_EMPTY, EXPECTED_EMPTY},
      .gathered = EXPECTED_EMPTY,
  };
  checkHandCase(&hand);
}

static void testLengthsAndOffsets(void **state)
{
  (void)state;
  static const int64_t lengths[] = {3, 0, 5, 1};
  const refShape shape = {.nRanks = 4, .lengths = lengths, .batch = 2, .heads = 5, .headDim = 3,
                          .elementSize = 2, .packed = 3, .sbhd = 0};
  assert_int_equal(refTotalLength(&shape), 9);
  assert_int_equal(refOffset(&shape, 0), 0);
  assert_int_equal(refOffset(&shape, 1), 3);
  assert_int_equal(refOffset(&shape, 2), 3);
  assert_int_equal(refOffset(&shape, 3), 8);
  assert_int_equal(refOffset(&shape, 4), 9);
  /* H=5 over P=4: counts {2,1,1,1}. */
  assert_int_equal(refSeqBytes(&shape, 2), 2 * 5 * 3 * 5 * 3 * 2);
  assert_int_equal(refSeqBytes(&shape, 1), 0);
  assert_int_equal(refHeadSideBytes(&shape, 0), 2 * 9 * 3 * 2 * 3 * 2);
  assert_int_equal(refHeadSideBytes(&shape, 3), 2 * 9 * 3 * 1 * 3 * 2);
  assert_int_equal(refGatherBytes(&shape), 2 * 9 * 3 * 5 * 3 * 2);
}

/* ---------------------------------------------------------------------------
 * Head split properties.
 * ------------------------------------------------------------------------- */

static void testHeadSplitProperties(void **state)
{
  (void)state;
  static const int64_t lengths[maxTestRanks] = {0};
  for (int64_t heads = 1; heads <= 64; ++heads) {
    for (int nRanks = 1; nRanks <= maxTestRanks; ++nRanks) {
      const refShape shape = {.nRanks = nRanks, .lengths = lengths, .batch = 1, .heads = heads,
                              .headDim = 1, .elementSize = 1, .packed = 1, .sbhd = 0};
      int64_t headSum = 0;
      int64_t smallest = heads;
      int64_t largest = 0;
      for (int rank = 0; rank < nRanks; ++rank) {
        const int64_t count = refHeadCount(&shape, rank);
        assert_true(count >= 0);
        if (rank > 0) {
          assert_true(count <= refHeadCount(&shape, rank - 1));
        }
        /* Contiguous: each group starts where the previous one ended. */
        assert_int_equal(refHeadBegin(&shape, rank), headSum);
        headSum += count;
        smallest = count < smallest ? count : smallest;
        largest = count > largest ? count : largest;
        for (int64_t head = refHeadBegin(&shape, rank); head < headSum; ++head) {
          assert_int_equal(refHeadOwner(&shape, head), rank);
        }
      }
      assert_int_equal(headSum, heads);
      assert_int_equal(refHeadBegin(&shape, nRanks), heads);
      assert_true(largest - smallest <= 1);
      if (heads % nRanks == 0) {
        assert_int_equal(smallest, heads / nRanks);
        assert_int_equal(largest, heads / nRanks);
      }
    }
  }
}

/* ---------------------------------------------------------------------------
 * ref against naive over random shapes.
 * ------------------------------------------------------------------------- */

/* Runs one exchange in both formulations on the same inputs and demands
 * identical bytes. The two start from different poison so that a byte both
 * leave unwritten still differs. */
static void checkFormulationsAgree(const refShape *shape, exchangeFunction refExchange,
                                   exchangeFunction naiveExchange, const rankBuffers *inputs,
                                   bufferSide outputSide)
{
  const constBuffers inputData = asInputs(inputs);
  rankBuffers refOut = allocateBuffers(shape, outputSide, 0xA5);
  rankBuffers naiveOut = allocateBuffers(shape, outputSide, 0x5A);
  refExchange(shape, inputData.data, refOut.data);
  naiveExchange(shape, inputData.data, naiveOut.data);
  assertBuffersEqual(&refOut, &naiveOut);
  freeBuffers(&refOut);
  freeBuffers(&naiveOut);
}

static void checkRoundTrip(const refShape *shape, const formulation *exchange,
                           const rankBuffers *sequence)
{
  const constBuffers sequenceInputs = asInputs(sequence);
  rankBuffers head = allocateBuffers(shape, headSide, 0xA5);
  exchange->seqToHead(shape, sequenceInputs.data, head.data);
  const constBuffers headInputs = asInputs(&head);
  rankBuffers back = allocateBuffers(shape, sequenceSide, 0x5A);
  exchange->headToSeq(shape, headInputs.data, back.data);
  assertBuffersEqual(&back, sequence);
  freeBuffers(&head);
  freeBuffers(&back);
}

static void checkRandomShape(const refShape *shape, uint64_t dataSeed)
{
  rankBuffers sequence = allocatePatternBuffers(shape, sequenceSide, dataSeed);
  /* Head-side data drawn independently, so head -> seq is tested on inputs
   * that are not themselves the output of seq -> head. */
  rankBuffers head = allocatePatternBuffers(shape, headSide, dataSeed ^ UINT64_C(0x5EED));

  checkFormulationsAgree(shape, refSeqToHead, naiveSeqToHead, &sequence, headSide);
  checkFormulationsAgree(shape, refHeadToSeq, naiveHeadToSeq, &head, sequenceSide);
  checkFormulationsAgree(shape, refAllGather, naiveAllGather, &sequence, gatheredSide);
  for (size_t f = 0; f < sizeof formulations / sizeof formulations[0]; ++f) {
    checkRoundTrip(shape, &formulations[f], &sequence);
  }
  freeBuffers(&sequence);
  freeBuffers(&head);
}

static int64_t randomBelow(uint64_t *state, int64_t bound)
{
  return (int64_t)(refRandom(state) % (uint64_t)bound);
}

static void testRandomShapesAgree(void **state)
{
  (void)state;
  static const int64_t elementSizes[] = {1, 2, 4, 8};
  enum { trialCount = 600 };
  uint64_t random = UINT64_C(20240611);
  for (int trial = 0; trial < trialCount; ++trial) {
    int64_t lengths[maxTestRanks];
    const int nRanks = 1 + (int)randomBelow(&random, maxTestRanks);
    for (int rank = 0; rank < nRanks; ++rank) {
      /* A quarter of the slices empty, the rest uneven. */
      lengths[rank] = randomBelow(&random, 4) == 0 ? 0 : 1 + randomBelow(&random, 5);
    }
    /* Half the trials split heads evenly; the rest pick any count, which
     * includes H < P and uneven splits. */
    const int64_t heads = randomBelow(&random, 2) == 0
                              ? nRanks * (1 + randomBelow(&random, 2))
                              : 1 + randomBelow(&random, 2 * nRanks + 3);
    /* Order, packing and element size cycle with the trial number so every
     * combination is covered whatever the random stream does. */
    const refShape shape = {
        .nRanks = nRanks,
        .lengths = lengths,
        .batch = 1 + randomBelow(&random, 3),
        .heads = heads,
        .headDim = 1 + randomBelow(&random, 4),
        .elementSize = elementSizes[(trial >> 2) % 4],
        .packed = (trial >> 1) % 2 == 0 ? 1 : 3,
        .sbhd = trial % 2,
    };
    checkRandomShape(&shape, UINT64_C(1000) + (uint64_t)trial * maxTestRanks);
  }
}

/* ---------------------------------------------------------------------------
 * Test data generator.
 * ------------------------------------------------------------------------- */

static void testPatternIsDeterministic(void **state)
{
  (void)state;
  uint64_t random = 0;
  /* The published first splitmix64 output for seed 0. */
  assert_int_equal(refRandom(&random), UINT64_C(0xE220A8397B1DCDAF));

  unsigned char first[29];
  unsigned char second[29];
  refFillPattern(first, sizeof first, 7);
  refFillPattern(second, sizeof second, 7);
  assert_memory_equal(first, second, sizeof first);
  refFillPattern(second, sizeof second, 8);
  assert_memory_not_equal(first, second, sizeof first);

  /* A shorter fill is a prefix of a longer one from the same seed. */
  refFillPattern(second, 5, 7);
  assert_memory_equal(first, second, 5);

  /* Little-endian words, whatever the host. */
  uint64_t patternState = 7;
  const uint64_t firstWord = refRandom(&patternState);
  for (unsigned byte = 0; byte < 8; ++byte) {
    assert_int_equal(first[byte], (unsigned char)(firstWord >> (8 * byte)));
  }

  refFillPattern(NULL, 0, 7);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(testHandUnevenHeadsAndLengths),
      cmocka_unit_test(testHandBatchTwoSequenceFirst),
      cmocka_unit_test(testHandBatchTwoBatchFirst),
      cmocka_unit_test(testHandPackedUnevenLengths),
      cmocka_unit_test(testHandMoreRanksThanHeads),
      cmocka_unit_test(testHandAllSlicesEmpty),
      cmocka_unit_test(testLengthsAndOffsets),
      cmocka_unit_test(testHeadSplitProperties),
      cmocka_unit_test(testRandomShapesAgree),
      cmocka_unit_test(testPatternIsDeterministic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
